-- A refresh that rolls back leaves the datamart and its position untouched;
-- the changes arrive with the next refresh, once.
BEGIN;
SELECT plan(5);

SELECT lives_ok($$SELECT dblink_exec((SELECT live FROM public.tap_config),
    'INSERT INTO public.accounts VALUES (3001, ''rolled back'', NULL, NULL, NULL)')$$,
    'insert committed on live');

SAVEPOINT before_refresh;
SELECT ok((SELECT rows_inserted >= 1 FROM sluice.refresh('tap')), 'refresh applies it');
ROLLBACK TO SAVEPOINT before_refresh;
SELECT is((SELECT count(*) FROM tap.accounts WHERE id = 3001), 0::bigint, 'rolled back: not in the datamart');

SELECT ok((SELECT rows_inserted >= 1 FROM sluice.refresh('tap')), 'refresh again applies it');
SELECT is((SELECT count(*) FROM tap.accounts WHERE id = 3001), 1::bigint, 'after the rolled back savepoint, the row arrives once');
SELECT * FROM finish();
ROLLBACK;
