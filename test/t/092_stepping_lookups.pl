# Updates and deletes in ascending key order find their rows by stepping
# along the key's index from the last row found (relation.c, step_find),
# not from its root.  Whatever the order, the datamart must end equal to
# live: keys updated twice in one transaction, keys moved ahead of where
# the scan stands, inserts ahead of it, sparse and random orders, text keys
# under a collation, a batch that fails in the middle, a table with a
# trigger, another table's rows in between.  No pin may be left behind
# (the server warns of a buffer leak), and every index holds its rows.
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
CREATE TABLE app.s (id bigint PRIMARY KEY, n int, pad text);
CREATE TABLE app."Other" ("Key" int PRIMARY KEY, v text);
CREATE TABLE app.tk (k text COLLATE "en-US-x-icu" PRIMARY KEY, n int);
INSERT INTO app.s SELECT g, g, repeat('p', 40) FROM generate_series(1, 20000) g;
INSERT INTO app."Other" SELECT g, 'o' FROM generate_series(1, 2000) g;
INSERT INTO app.tk SELECT CASE WHEN g % 2 = 0 THEN 'Key ' ELSE 'key ' END || lpad(g::text, 5, '0'), g
  FROM generate_series(1, 3000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE EXTENSION amcheck;
SELECT sluice.create_pipeline('p', 'live', ARRAY['app.s', 'app."Other"', 'app.tk'], target_schema => 'm')});

sub refresh_same
{
	my ($name, $expect) = @_;
	my $got = $mart->safe_psql('postgres',
		"SELECT rows_inserted || ' ' || rows_updated || ' ' || rows_deleted FROM sluice.refresh('p')");
	is($got, $expect, "$name: rows inserted, updated, deleted") if defined $expect;
	same_tables($live, $mart, [['app.s', 'm.s'], ['app."Other"', 'm."Other"'], ['app.tk', 'm.tk']], $name);
	indexes_hold_rows($mart, 'm', $name);
}

# 1. Ascending updates and deletes, each key once.
$live->safe_psql('postgres', "UPDATE app.s SET n = n + 1 WHERE id <= 15000");
refresh_same('ascending update', '0 15000 0');
$live->safe_psql('postgres', "DELETE FROM app.s WHERE id BETWEEN 5001 AND 9000");
refresh_same('ascending delete', '0 0 4000');

# 2. The same keys twice in one transaction: the second pass finds the
#    versions the first one wrote, after the scan stood past them.
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.s SET n = n + 1 WHERE id <= 3000;
UPDATE app.s SET n = n * 2, pad = 'second' WHERE id <= 3000;
UPDATE app.s SET n = -n WHERE id BETWEEN 1000 AND 1200;
COMMIT;
});
refresh_same('keys updated twice', '0 6201 0');

# 3. Keys moved ahead of where the scan stands, then updated under their
#    new key further on; inserts ahead of it, then their rows updated;
#    another table's rows in between.
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.s SET n = 0 WHERE id BETWEEN 10001 AND 10010;
UPDATE app.s SET id = id + 100000 WHERE id = 10011;
UPDATE app.s SET n = 1 WHERE id BETWEEN 10012 AND 10020;
DELETE FROM app.s WHERE id = 10016;
INSERT INTO app.s VALUES (10016, 16, 'again');
UPDATE app.s SET n = 2 WHERE id BETWEEN 10012 AND 10030;
UPDATE app."Other" SET v = 'x' WHERE "Key" <= 10;
UPDATE app.s SET n = 3 WHERE id BETWEEN 10031 AND 10040;
UPDATE app."Other" SET v = 'y' WHERE "Key" BETWEEN 11 AND 20;
UPDATE app.s SET n = 4 WHERE id BETWEEN 10041 AND 10050;
INSERT INTO app.s VALUES (30000, 0, 'new');
UPDATE app.s SET n = 5 WHERE id BETWEEN 10051 AND 10060 OR id IN (30000, 110011);
COMMIT;
});
refresh_same('moved keys, inserts, another table');

# 4. Rows the datamart lacks (deleted by hand) in the middle of an
#    ascending run: stepping passes their keys and must not take the next
#    row for them; a non-strict pipeline counts them as missing.
$mart->safe_psql('postgres', "SELECT sluice.alter_pipeline('p', strict => false)");
$mart->safe_psql('postgres', "DELETE FROM m.s WHERE id IN (14995, 14996, 14999)");
$live->safe_psql('postgres', "UPDATE app.s SET n = n + 100 WHERE id BETWEEN 14990 AND 15010");
is($mart->safe_psql('postgres', "SELECT rows_updated FROM sluice.refresh('p')"), '18', 'rows present updated');
is($mart->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM m.s WHERE id BETWEEN 14990 AND 15010"),
	$live->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM app.s WHERE id BETWEEN 14990 AND 15010 AND id NOT IN (14995, 14996, 14999)"),
	'no row took a missing row\'s key');
is($mart->safe_psql('postgres', "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM m.s t WHERE id BETWEEN 14990 AND 15010"),
	$live->safe_psql('postgres', "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM app.s t WHERE id BETWEEN 14990 AND 15010 AND id NOT IN (14995, 14996, 14999)"),
	'the rows present carry their own updates');
$live->safe_psql('postgres', "DELETE FROM app.s WHERE id IN (14995, 14996, 14999)");
refresh_same('missing rows deleted on live too');
$mart->safe_psql('postgres', "SELECT sluice.alter_pipeline('p', strict => true)");

# 5. Sparse ascending keys (every 97th: past the stepping's reach) and a
#    random order (a loop on live); the lookups from the root take over.
$live->safe_psql('postgres', "UPDATE app.s SET n = n + 7 WHERE id % 97 = 0");
refresh_same('sparse keys');
$live->safe_psql('postgres', q{
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT id FROM app.s WHERE id > 12000 ORDER BY md5(id::text) LIMIT 3000 LOOP
    UPDATE app.s SET n = n + 1 WHERE id = r.id;
  END LOOP;
  FOR r IN SELECT id FROM app.s WHERE id > 12000 ORDER BY md5(id::text || 'd') LIMIT 500 LOOP
    DELETE FROM app.s WHERE id = r.id;
  END LOOP;
END $$;
});
refresh_same('random order', '0 3000 500');

# 6. A text key under an ICU collation, where byte order is not key order:
#    the rows come in the order live stored them, the index's order decides.
$live->safe_psql('postgres', "UPDATE app.tk SET n = n + 1");
refresh_same('text key, every row', '0 3000 0');
$live->safe_psql('postgres', q{
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT k FROM app.tk ORDER BY k COLLATE "en-US-x-icu" LOOP
    UPDATE app.tk SET n = n + 1 WHERE k = r.k;
  END LOOP;
  DELETE FROM app.tk WHERE n % 5 = 0;
END $$;
});
refresh_same('text key, in collation order');

# 7. A batch failing in the middle of an ascending run (a datamart check
#    constraint): nothing stays, the pins go with it, and once the DBA lifts
#    the constraint the refresh applies everything.
$mart->safe_psql('postgres', "ALTER TABLE m.s ADD CONSTRAINT n_small CHECK (n < 1000000)");
my $before = checksum($mart, 'm.s');
$live->safe_psql('postgres', "UPDATE app.s SET n = CASE WHEN id = 4000 THEN 2000000 ELSE n + 1 END WHERE id <= 12000");
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
like($err, qr/violates check constraint "n_small"/, 'the constraint fails the refresh');
is(checksum($mart, 'm.s'), $before, 'nothing of the failed batch stayed');
$mart->safe_psql('postgres', "ALTER TABLE m.s DROP CONSTRAINT n_small");
refresh_same('after the failed batch');

# 8. A trigger on the datamart table (the executor's update path) with the
#    stepping lookup.
$mart->safe_psql('postgres', q{
CREATE TABLE public.seen (id bigint);
CREATE FUNCTION public.seen_row() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.seen VALUES (OLD.id); RETURN NULL; END$$;
CREATE TRIGGER seen AFTER UPDATE OR DELETE ON m.s FOR EACH ROW EXECUTE FUNCTION public.seen_row();
ALTER TABLE m.s ENABLE ALWAYS TRIGGER seen;
});
$live->safe_psql('postgres', "UPDATE app.s SET n = n + 1 WHERE id <= 2000; DELETE FROM app.s WHERE id BETWEEN 2001 AND 2500");
refresh_same('with a trigger', '0 2000 500');
is($mart->safe_psql('postgres', "SELECT count(*) FROM public.seen"), '2500', 'the trigger saw every row once');

# 9. Live announces the table again in the middle of a batch (an index
#    made on live invalidates what its decoding sent): the relation is
#    reopened, its stepping state made anew, the old one freed.
$live->safe_psql('postgres', q{
UPDATE app.s SET n = n + 1 WHERE id <= 3000;
CREATE INDEX s_n ON app.s (n);
UPDATE app.s SET n = n + 1 WHERE id BETWEEN 2000 AND 6000;
DROP INDEX app.s_n;
UPDATE app.s SET pad = 'again' WHERE id BETWEEN 1 AND 4000;
});
refresh_same('the table announced again within the batch');

unlike(slurp_file($mart->logfile), qr/buffer refcount leak|resource was not closed|leaked/,
	'no pin or scan left behind');

done_testing();
