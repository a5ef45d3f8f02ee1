-- Behaviour of sluice.refresh against a real live server (pipeline "tap",
-- prepared by test/t/004_pgtap.pl).  Changes on live are committed there
-- through dblink; everything done here rolls back at the end.
BEGIN;
SELECT plan(12);

CREATE TEMP VIEW live_accounts AS
SELECT * FROM dblink((SELECT live FROM public.tap_config),
                     'SELECT id, name, status::text, balance, tags FROM public.accounts')
         AS t(id int, name text, status text, balance numeric, tags text[]);

SELECT results_eq('SELECT * FROM tap.accounts ORDER BY id', 'SELECT * FROM live_accounts ORDER BY id',
                  'initial copy equals live');
SELECT col_type_is('tap', 'accounts', 'status', 'text', 'enum column became text');
SELECT col_type_is('tap', 'accounts', 'balance', 'numeric(12,2)', 'typmod kept');
SELECT col_not_null('tap', 'accounts', 'name', 'NOT NULL kept');
SELECT col_is_pk('tap', 'accounts', 'id', 'primary key kept');

SELECT lives_ok($$SELECT dblink_exec((SELECT live FROM public.tap_config), $q$
    BEGIN;
    INSERT INTO public.accounts VALUES (1001, 'new', 'active', 1.5, '{}'), (1002, 'newer', NULL, NULL, NULL);
    UPDATE public.accounts SET status = 'closed', balance = balance - 1 WHERE id <= 10;
    UPDATE public.accounts SET id = 2000 WHERE id = 50;
    DELETE FROM public.accounts WHERE id BETWEEN 90 AND 99;
    COMMIT;$q$)$$, 'changes committed on live');

SELECT results_eq($$SELECT transactions, rows_inserted, rows_updated, rows_deleted FROM sluice.refresh('tap')$$,
                  $$VALUES (1::bigint, 2::bigint, 11::bigint, 10::bigint)$$,
                  'refresh reports what it applied');
SELECT results_eq('SELECT * FROM tap.accounts ORDER BY id', 'SELECT * FROM live_accounts ORDER BY id',
                  'datamart equals live after refresh');
SELECT results_eq($$SELECT transactions FROM sluice.refresh('tap')$$, $$VALUES (0::bigint)$$,
                  'a second refresh in the same transaction applies nothing twice');
SELECT is((SELECT kind FROM sluice.runs WHERE pipeline = 'tap' ORDER BY run_id DESC LIMIT 1), 'refresh',
          'the run is recorded');
SELECT throws_ok($$SELECT sluice.create_pipeline('other', 'live', ARRAY['public.accounts'])$$, '25001',
                 'sluice.create_pipeline() cannot run inside a transaction block',
                 'create_pipeline refuses a transaction block');
SELECT throws_ok($$SELECT sluice.refresh('nope')$$, '42704', 'pipeline "nope" does not exist',
                 'unknown pipeline');

SELECT * FROM finish();
ROLLBACK;
