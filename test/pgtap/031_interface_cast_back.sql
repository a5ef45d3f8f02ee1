-- The cast-back rule of published interfaces (sluice._interface_column):
-- a value of a widened column is shown as the contract version's type only
-- when that type holds it exactly; otherwise reading it is an error
-- (never a truncation, a rounding or a NULL).
BEGIN;
SELECT plan(21);

-- the value as an interface of version type old_type shows it, the column
-- now being of type cur_type
CREATE FUNCTION pg_temp.shown(val text, cur_type text, old_type text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r text;
BEGIN
  EXECUTE format('CREATE TEMP TABLE cb (x %s)', cur_type);
  EXECUTE format('INSERT INTO cb VALUES (%L)', val);
  EXECUTE format('SELECT (%s)::text FROM cb t',
                 (SELECT sluice._interface_column('t.x', sluice._type_name(old_type), a.atttypid, a.atttypmod,
                                                  '"api"."t"', 'x', 1)
                    FROM pg_attribute a WHERE a.attrelid = 'cb'::regclass AND a.attname = 'x')) INTO r;
  DROP TABLE cb;
  RETURN r;
EXCEPTION WHEN OTHERS THEN
  DROP TABLE IF EXISTS cb;
  RAISE;
END
$$;

SELECT is(pg_temp.shown('5', 'bigint', 'integer'), '5', 'bigint -> integer: a value that fits');
SELECT throws_ok($$SELECT pg_temp.shown('3000000000', 'bigint', 'integer')$$, '22003',
    'column "x" of "api"."t" cannot show a value as integer', 'bigint -> integer: beyond integer is an error');
SELECT throws_ok($$SELECT pg_temp.shown('-32769', 'integer', 'smallint')$$, '22003',
    'column "x" of "api"."t" cannot show a value as smallint', 'integer -> smallint: beyond smallint');
SELECT is(pg_temp.shown('7', 'numeric', 'integer'), '7', 'numeric -> integer: a whole number');
SELECT throws_ok($$SELECT pg_temp.shown('2.5', 'numeric', 'integer')$$, '22003',
    'column "x" of "api"."t" cannot show a value as integer', 'numeric -> integer: a fraction is not rounded');
SELECT is(pg_temp.shown('abc', 'varchar(20)', 'varchar(10)'), 'abc', 'varchar(20) -> varchar(10): a short string');
SELECT throws_ok($$SELECT pg_temp.shown('abcdefghijkl', 'varchar(20)', 'varchar(10)')$$, '22001',
    'column "x" of "api"."t" cannot show a value as character varying(10)', 'varchar(20) -> varchar(10): not truncated');
SELECT throws_ok($$SELECT pg_temp.shown('abcdefghijkl', 'text', 'varchar(10)')$$, '22001',
    'column "x" of "api"."t" cannot show a value as character varying(10)', 'text -> varchar(10): not truncated');
SELECT is(pg_temp.shown('123456.78', 'numeric(12,4)', 'numeric(8,2)'), '123456.78', 'numeric(12,4) -> numeric(8,2): fits');
SELECT throws_ok($$SELECT pg_temp.shown('1.125', 'numeric(12,4)', 'numeric(8,2)')$$, '22003',
    'column "x" of "api"."t" cannot show a value as numeric(8,2)', 'numeric(12,4) -> numeric(8,2): not rounded');
SELECT throws_ok($$SELECT pg_temp.shown('999999.999', 'numeric(12,4)', 'numeric(8,2)')$$, '22003',
    'column "x" of "api"."t" cannot show a value as numeric(8,2)', 'numeric(12,4) -> numeric(8,2): rounding up past the precision');
SELECT throws_ok($$SELECT pg_temp.shown('12345678', 'numeric(12,4)', 'numeric(8,2)')$$, '22003',
    'column "x" of "api"."t" cannot show a value as numeric(8,2)', 'numeric(12,4) -> numeric(8,2): too many digits');
SET LOCAL TimeZone = 'Pacific/Auckland';
SELECT is(pg_temp.shown('2026-01-01 10:00:00+00', 'timestamptz', 'timestamp'), '2026-01-01 10:00:00',
    'timestamptz -> timestamp: read in UTC, whatever the session''s zone');
SELECT is(pg_temp.shown('2026-01-01 10:00:00', 'timestamp(6)', 'timestamp(0)'), '2026-01-01 10:00:00',
    'timestamp(6) -> timestamp(0): a whole second');
SELECT throws_ok($$SELECT pg_temp.shown('2026-01-01 10:00:00.5', 'timestamp(6)', 'timestamp(0)')$$, '22000',
    'column "x" of "api"."t" cannot show a value as timestamp(0) without time zone', 'timestamp(6) -> timestamp(0): not rounded');
SELECT is(pg_temp.shown('42', 'text', 'integer'), '42', 'text -> integer: a number');
SELECT throws_ok($$SELECT pg_temp.shown(' 42', 'text', 'integer')$$, '22003',
    'column "x" of "api"."t" cannot show a value as integer', 'text -> integer: a text that would read differently');
SELECT throws_ok($$SELECT pg_temp.shown('forty-two', 'text', 'integer')$$, '22P02', NULL,
    'text -> integer: not a number, the cast''s own error');
SELECT is(pg_temp.shown(NULL, 'bigint', 'integer'), NULL, 'NULL stays NULL');
SELECT is(pg_temp.shown('1', 'bigint', 'bigint'), '1', 'an unchanged type reads the column as it is');
SELECT matches(sluice._interface_column('t.x', 'integer', 'bigint'::regtype, -1, '"api"."t"', 'x', 1),
    '^\(CASE WHEN t\.x IS NULL', 'the expression guards NULL first');

SELECT * FROM finish();
ROLLBACK;
