# Runs of inserts are applied with table_multi_insert (apply.c, flush_inserts):
# rows wait in a bounded buffer and go in together.  Everything that could
# see a buffered row must find it written: updates, deletes and re-inserts
# of the same keys in the same source transaction, other tables, TRUNCATE,
# set expectations, the next transaction.  Tables with triggers or
# generated columns keep the row-by-row path; constraint violations still
# name the row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.r1 (id int PRIMARY KEY, v text, n int);
CREATE TABLE app.r2 (id int PRIMARY KEY, v text);
CREATE TABLE app.trig (id int PRIMARY KEY, v text);
CREATE TABLE app.gen (id int PRIMARY KEY, a int);
CREATE TABLE app.chk (id int PRIMARY KEY, n int);
CREATE TABLE app.wide (id int PRIMARY KEY, big text);
ALTER TABLE app.wide ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE app.nokey (a int, b text);
ALTER TABLE app.nokey REPLICA IDENTITY FULL;
});

mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('p', 'live',
    ARRAY['app.r1', 'app.r2', 'app.trig', 'app.gen', 'app.chk', 'app.wide', 'app.nokey'],
    target_schema => 'm')});
# The datamart's own additions: a generated column, a user trigger that
# must fire once per row, a check constraint.
$mart->safe_psql('postgres', q{
ALTER TABLE m.gen ADD COLUMN twice int GENERATED ALWAYS AS (a * 2) STORED;
CREATE TABLE public.audit (id int, op text);
CREATE FUNCTION public.audit_fn() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.audit VALUES (NEW.id, TG_OP); RETURN NEW; END$$;
CREATE TRIGGER audit AFTER INSERT ON m.trig FOR EACH ROW EXECUTE FUNCTION public.audit_fn();
ALTER TABLE m.chk ADD CONSTRAINT chk_n CHECK (n >= 0);
});

my @pairs = map { ["app.$_", "m.$_"] } qw(r1 r2 trig chk wide nokey);

# One source transaction mixing runs with everything that must see them.
$live->safe_psql('postgres', q{
BEGIN;
INSERT INTO app.r1 SELECT g, 'v' || g, g FROM generate_series(1, 2500) g;  -- crosses the 1,000-row flush
UPDATE app.r1 SET v = 'updated' WHERE id IN (3, 999, 1000, 1001, 2500);  -- buffered rows
DELETE FROM app.r1 WHERE id BETWEEN 10 AND 19;
INSERT INTO app.r1 VALUES (10, 'reinserted', -1);                         -- a key deleted in this run
INSERT INTO app.r2 SELECT g, 'r2 ' || g FROM generate_series(1, 300) g;
INSERT INTO app.r1 SELECT g, 'again', g FROM generate_series(2501, 2600) g;
INSERT INTO app.r2 VALUES (301, 'interleaved');
INSERT INTO app.r1 VALUES (2601, 'interleaved', 0);
DELETE FROM app.r1 WHERE id > 2590;
INSERT INTO app.trig SELECT g, 't' || g FROM generate_series(1, 1500) g;
INSERT INTO app.gen SELECT g, g FROM generate_series(1, 1200) g;
INSERT INTO app.chk SELECT g, g FROM generate_series(1, 1500) g;
INSERT INTO app.wide SELECT g, repeat(md5(g::text), 300) FROM generate_series(1, 40) g;  -- 9.6 kB each: the 64 kB bound
INSERT INTO app.nokey SELECT g % 7, 'n' || g FROM generate_series(1, 1100) g;
UPDATE app.nokey SET b = 'changed' WHERE a = 3;
COMMIT;
});
# Many small transactions, each its own run.
$live->safe_psql('postgres', "INSERT INTO app.r2 SELECT g, 'small' FROM generate_series(1000 + $_ * 10, 1009 + $_ * 10) g")
  for 1 .. 30;
my $res = $mart->safe_psql('postgres',
	"SELECT transactions, rows_inserted, rows_updated, rows_deleted FROM sluice.refresh('p')");
is($res, '31|8543|162|21', 'refresh counts every change');
same_tables($live, $mart, \@pairs, 'after insert runs');
is($mart->safe_psql('postgres', "SELECT count(*), sum(twice) = 2 * sum(a) FROM m.gen"), '1200|t',
	'generated column computed for every row');
is($mart->safe_psql('postgres', "SELECT count(*), count(DISTINCT id), min(op) FROM public.audit"), '1500|1500|INSERT',
	'the user trigger fired once per row');

# TRUNCATE and inserts into the same table in one transaction.
$live->safe_psql('postgres', q{
BEGIN;
INSERT INTO app.r2 SELECT g, 'before truncate' FROM generate_series(5000, 5999) g;
TRUNCATE app.r2;
INSERT INTO app.r2 SELECT g, 'after truncate' FROM generate_series(1, 1500) g;
COMMIT;
});
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
same_tables($live, $mart, [["app.r2", "m.r2"]], 'insert, truncate, insert');

# A set expectation sees the rows of the run it checks.
$mart->safe_psql('postgres', "SELECT sluice.expect_column_values_to_be_unique('m.r1', ARRAY['v'], severity => 'warn')");
$live->safe_psql('postgres', "INSERT INTO app.r1 SELECT g, 'dup', g FROM generate_series(3000, 3009) g");
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
is($mart->safe_psql('postgres', q{
SELECT failed > 0 FROM sluice.quality WHERE expectation LIKE 'expect_column_values_to_be_unique%' ORDER BY run_id DESC LIMIT 1}),
	't', 'unique expectation saw the buffered duplicates');

# Quarantine inside a run: held rows skipped, the others written in order.
$mart->safe_psql('postgres', "SELECT sluice.expect_column_values_to_be_between('m.r2', 'id', '0', '100000', severity => 'quarantine')");
$live->safe_psql('postgres', "INSERT INTO app.r2 SELECT CASE WHEN g % 100 = 0 THEN -g ELSE g END, 'q' FROM generate_series(20001, 21500) g");
is($mart->safe_psql('postgres', "SELECT rows_inserted FROM sluice.refresh('p')"), '1485', 'quarantined rows not counted as inserted');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quarantine WHERE status = 'held'"), '15', 'fifteen rows held');
is($mart->safe_psql('postgres', "SELECT count(*) FROM m.r2 WHERE v = 'q'"), '1485', 'the rest written');

# A datamart constraint fails in the middle of a run: the refresh fails,
# names the table and the row, and nothing of the batch stays.
my $before = checksum($mart, 'm.chk');
$live->safe_psql('postgres', "INSERT INTO app.chk SELECT g, CASE WHEN g = 1700 THEN -5 ELSE g END FROM generate_series(1501, 1900) g");
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
isnt($ret, 0, 'refresh fails on a check constraint');
like($err, qr/violates check constraint "chk_n".*Failing row contains \(1700, -5\).*applying INSERT for "app.chk"/s,
	'the error names the constraint, the row and the table');
is(checksum($mart, 'm.chk'), $before, 'nothing of the failed batch stayed');
# A unique violation found while the run is flushed also names the table.
$mart->safe_psql('postgres', "ALTER TABLE m.chk DROP CONSTRAINT chk_n; CREATE UNIQUE INDEX chk_n_unique ON m.chk (n)");
$live->safe_psql('postgres', "INSERT INTO app.chk VALUES (1950, 1951), (1951, 1951)");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
isnt($ret, 0, 'refresh fails on a unique violation');
like($err, qr/duplicate key value violates unique constraint "chk_n_unique".*applying INSERT for "app.chk"/s,
	'the unique violation names the table');
$mart->safe_psql('postgres', "DROP INDEX m.chk_n_unique");
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
same_tables($live, $mart, [["app.chk", "m.chk"]], 'after fixing the datamart');

# Dropping a pipeline that never kept history says nothing about history
# (it used to print two "schema m_history does not exist" notices).
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.drop_pipeline('p', drop_tables => true)");
is($err, '', 'drop_pipeline(drop_tables) is quiet');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_namespace WHERE nspname IN ('m', 'm_history')"), '0',
	'tables and schema dropped');

done_testing();
