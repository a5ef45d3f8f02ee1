# From a hostile pass (2026-12-04): stepping lookups (relation.c step_find) and write_update's
# unchecked unique entries over odd keys and odd transaction shapes.  After
# every refresh: live == mart (checksums), every index of the datamart
# passes bt_index_parent_check(heapallindexed) and the table verify_heapam;
# at the end no pin/scan leak warning in the log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "autovacuum = off\n");

my $types = q{
CREATE TYPE public.pair AS (a int, b text);
CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
};
$live->safe_psql('postgres', $types);
$mart->safe_psql('postgres', $types . "CREATE EXTENSION amcheck;");

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.num (k numeric PRIMARY KEY, n int, code text UNIQUE);
INSERT INTO app.num SELECT g / 10.0, g, 'c' || g FROM generate_series(-3000, 3000) g;
CREATE TABLE app.neg (k int PRIMARY KEY, n int);
INSERT INTO app.neg SELECT g, g FROM generate_series(-5000, 5000) g;
CREATE TABLE app.u (k uuid PRIMARY KEY, n int);
INSERT INTO app.u SELECT md5(g::text)::uuid, g FROM generate_series(1, 5000) g ORDER BY 1;
CREATE TABLE app.ci (k text COLLATE public.ci PRIMARY KEY, n int);
INSERT INTO app.ci SELECT CASE WHEN g % 3 = 0 THEN 'ABC' ELSE 'abd' END || lpad(g::text, 5, '0'), g FROM generate_series(1, 3000) g;
CREATE TABLE app.pk (k public.pair PRIMARY KEY, n int);
INSERT INTO app.pk SELECT ROW(g / 10, 'x' || (g % 10))::public.pair, g FROM generate_series(1, 3000) g;
CREATE TABLE app.big (id bigint PRIMARY KEY, n int, t text, email text);
INSERT INTO app.big SELECT g, g, repeat('t', 30), 'e' || g FROM generate_series(1, 20000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{SELECT sluice.create_pipeline('p', 'live',
  ARRAY['app.num', 'app.neg', 'app.u', 'app.ci', 'app.pk', 'app.big'], target_schema => 'm')});
# the DBA's own unique index on the datamart (live has none)
$mart->safe_psql('postgres', "CREATE UNIQUE INDEX big_email ON m.big (email); CREATE INDEX big_n ON m.big (n)");

my @pairs = map { ["app.$_", "m.$_"] } qw(num neg u ci pk big);

sub check
{
	my ($name) = @_;
	same_tables($live, $mart, \@pairs, $name);
	indexes_hold_rows($mart, 'm', $name);
	heaps_verify($mart, 'm', $name);
}

sub refresh
{
	my ($name) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_inserted || ' ' || rows_updated || ' ' || rows_deleted FROM sluice.refresh('p')");
	is($ret, 0, "$name: refresh ran") or diag($err);
	check($name);
}

# 1. numeric keys: ascending with negative values, a key rewritten with another
#    scale (equal under btree, other bytes), the unique "code" kept or moved.
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.num SET n = n + 1 WHERE k BETWEEN -200 AND 200;
UPDATE app.num SET k = k::numeric(20,4) WHERE k BETWEEN -50 AND 50;
UPDATE app.num SET n = n + 1, code = code || 'x' WHERE k BETWEEN -60 AND 60;
DELETE FROM app.num WHERE k BETWEEN 10 AND 20 AND n % 2 = 0;
UPDATE app.num SET n = -n WHERE k > 0 AND k < 100;
COMMIT;
});
refresh('numeric');

# 2. negative int keys, descending updates, then ascending over them
$live->safe_psql('postgres', q{
DO $$ DECLARE i int; BEGIN
  FOR i IN REVERSE 4000..-4000 LOOP UPDATE app.neg SET n = n + 1 WHERE k = i; END LOOP;
END $$;
UPDATE app.neg SET n = n * 2;
});
refresh('negative keys, descending then ascending');

# 3. uuid keys in index order, and keys moved onto ones passed and ones ahead
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.u SET n = n + 1;
UPDATE app.u SET k = ('ffffffff' || substr(k::text, 9))::uuid WHERE n % 100 = 0;
UPDATE app.u SET n = n + 1;
COMMIT;
});
refresh('uuid');

# 4. a nondeterministic collation: 'ABC..' and 'abc..' are one key; key
#    rewritten in another case (equal, other bytes) and updated on
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.ci SET n = n + 1;
UPDATE app.ci SET k = upper(k) WHERE n % 7 = 0;
UPDATE app.ci SET k = lower(k) WHERE n % 11 = 0;
UPDATE app.ci SET n = n + 1;
DELETE FROM app.ci WHERE n % 13 = 0;
COMMIT;
});
refresh('nondeterministic collation');

# 5. a composite key
$live->safe_psql('postgres', q{
UPDATE app.pk SET n = n + 1;
DELETE FROM app.pk WHERE n % 5 = 0;
UPDATE app.pk SET k = ROW((k).a, (k).b || 'z')::public.pair WHERE n % 3 = 0;
});
refresh('composite key');

# 6. delete then insert again of the same keys, in one transaction, updated
#    afterwards in ascending order; savepoints rolled back; truncate between
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.big SET n = n + 1 WHERE id <= 2000;
DELETE FROM app.big WHERE id BETWEEN 100 AND 200;
INSERT INTO app.big SELECT g, -g, 'again', 'e' || g FROM generate_series(100, 200) g;
UPDATE app.big SET n = n + 1 WHERE id <= 3000;
SAVEPOINT a;
UPDATE app.big SET n = 0 WHERE id BETWEEN 3000 AND 4000;
DELETE FROM app.big WHERE id BETWEEN 4000 AND 4500;
ROLLBACK TO a;
UPDATE app.big SET n = n + 7 WHERE id BETWEEN 2500 AND 5000;
SAVEPOINT b;
UPDATE app.big SET t = 'b' WHERE id BETWEEN 5000 AND 6000;
RELEASE b;
COMMIT;
});
refresh('delete + insert again, savepoints');

# 7. unique email kept (unchecked entries) and swapped through a free value
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.big SET t = t || '!' WHERE id <= 5000;
UPDATE app.big SET email = 'tmp' WHERE id = 10;
UPDATE app.big SET email = 'e10' WHERE id = 11;
UPDATE app.big SET email = 'e11' WHERE id = 10;
UPDATE app.big SET t = t || '?' WHERE id <= 5000;
UPDATE app.big SET id = id + 100000 WHERE id BETWEEN 20 AND 30;
UPDATE app.big SET t = t || '#' WHERE id > 99999;
COMMIT;
});
refresh('unique email kept and moved');

# 8. a violation of the DBA's unique index in the middle of an ascending run:
#    the batch fails whole, the pins go with it, the next one applies
my $before = checksum($mart, 'm.big');
$live->safe_psql('postgres', "UPDATE app.big SET n = n + 1, email = CASE WHEN id = 3000 THEN 'e3001' ELSE email END WHERE id <= 6000");
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
like($err, qr/duplicate key value violates unique constraint "big_email"/, 'the unique index fails the refresh');
is(checksum($mart, 'm.big'), $before, 'nothing of the failed batch stayed');
$live->safe_psql('postgres', "UPDATE app.big SET email = 'fixed' WHERE id = 3000");
# the same session: refresh after the failure
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p'); SELECT sluice.refresh('p')");
$mart->safe_psql('postgres', "DROP INDEX m.big_email");
refresh('after the failed batch');
$mart->safe_psql('postgres', "CREATE UNIQUE INDEX big_email ON m.big (email)");

# 9. a trigger raising in the middle of an ascending run (in one session,
#    then a refresh in the same session)
$mart->safe_psql('postgres', q{
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN IF NEW.n = -777 THEN RAISE EXCEPTION 'boom at %', NEW.id; END IF; RETURN NEW; END$$;
CREATE TRIGGER boom BEFORE UPDATE ON m.big FOR EACH ROW EXECUTE FUNCTION public.boom();
ALTER TABLE m.big ENABLE ALWAYS TRIGGER boom;
});
$live->safe_psql('postgres', "UPDATE app.big SET n = CASE WHEN id = 4321 THEN -777 ELSE n + 1 END WHERE id <= 8000");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
like($err, qr/boom at 4321/, 'the trigger fails the refresh');
$live->safe_psql('postgres', "UPDATE app.big SET n = 1 WHERE id = 4321");
($ret, $out, $err) = $mart->psql('postgres', q{
DO $$ BEGIN PERFORM sluice.refresh('p'); EXCEPTION WHEN others THEN RAISE NOTICE 'caught %', SQLERRM; END $$;
DROP TRIGGER boom ON m.big;
SELECT rows_updated FROM sluice.refresh('p');
UPDATE m.big SET t = t WHERE id <= 100;
});
is($ret, 0, 'refresh, caught failure, refresh again in one session') or diag($err);
like($err, qr/caught boom at 4321/, 'the failure was caught in the session');
check('after the trigger');

# 10. interleaved transactions on live, each ascending over the same range
my $s1 = $live->background_psql('postgres');
my $s2 = $live->background_psql('postgres');
$s1->query_safe("BEGIN; UPDATE app.big SET n = n + 1 WHERE id BETWEEN 1 AND 3000 AND id % 2 = 0");
$s2->query_safe("BEGIN; UPDATE app.big SET n = n + 1 WHERE id BETWEEN 1 AND 3000 AND id % 2 = 1");
$s1->query_safe("UPDATE app.big SET n = n + 1 WHERE id BETWEEN 3001 AND 6000 AND id % 2 = 0; DELETE FROM app.big WHERE id BETWEEN 6000 AND 6100 AND id % 2 = 0");
$s2->query_safe("UPDATE app.big SET n = n + 1 WHERE id BETWEEN 3001 AND 6000 AND id % 2 = 1; COMMIT");
$s1->query_safe("COMMIT");
$s1->quit; $s2->quit;
refresh('interleaved transactions');

# 11. TRUNCATE in the middle of a transaction with stepping runs around it
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.neg SET n = n + 1 WHERE k BETWEEN -100 AND 100;
TRUNCATE app.neg;
INSERT INTO app.neg SELECT g, g FROM generate_series(-300, 300) g;
UPDATE app.neg SET n = n + 1 WHERE k BETWEEN -100 AND 100;
DELETE FROM app.neg WHERE k BETWEEN 150 AND 250;
COMMIT;
});
refresh('truncate in the middle');

unlike(slurp_file($mart->logfile), qr/buffer refcount leak|resource was not closed|leaked|TRAP|terminated by signal/,
	'no pin or scan left behind, no crash');
done_testing();
