# Datamart keys that take whatever live can: a source whose key is
# DEFERRABLE (identity FULL, since a deferrable key cannot be the replica
# identity) or whose identity is FULL gets a DEFERRABLE INITIALLY DEFERRED
# primary key in the datamart, checked when the batch commits.  Keys swapped
# in one statement (UPDATE t SET id = 11 - id) or over several statements of
# one transaction apply; while a swap is half applied two rows share a key,
# so such tables find their row by key and the rest of the old row.  A
# deferred key that a batch would really break still fails it, at commit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "shared_preload_libraries = 'pg_sluice'\npg_sluice.naptime = 50ms\n");

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
-- identity FULL with a (non-deferrable) primary key
CREATE TABLE app.full_pk (id int PRIMARY KEY, v text);
ALTER TABLE app.full_pk REPLICA IDENTITY FULL;
-- a deferrable primary key (checked at the end of each statement)
CREATE TABLE app.def_pk (id int PRIMARY KEY DEFERRABLE, v text);
ALTER TABLE app.def_pk REPLICA IDENTITY FULL;
-- a deferred compound primary key (checked at commit)
CREATE TABLE app.deferred (a int, b text, n int, PRIMARY KEY (b, a) DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE app.deferred REPLICA IDENTITY FULL;
-- identity FULL with a unique key but no primary key
CREATE TABLE app.full_uq (id int NOT NULL UNIQUE DEFERRABLE, v text);
ALTER TABLE app.full_uq REPLICA IDENTITY FULL;
-- a plain key keeps an immediate key
CREATE TABLE app.plain (id int PRIMARY KEY, v text);
INSERT INTO app.full_pk SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.def_pk SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.deferred SELECT g, 'k' || (g % 2), g FROM generate_series(1, 10) g;
INSERT INTO app.full_uq SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.plain SELECT g, 'v' || g FROM generate_series(1, 10) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('p', 'live', ARRAY['app.full_pk', 'app.def_pk', 'app.deferred', 'app.full_uq', 'app.plain'],
                              target_schema => 'm')});
my @pairs = map { ["app.$_", "m.$_"] } qw(full_pk def_pk deferred full_uq plain);

is($mart->safe_psql('postgres', q{
SELECT string_agg(conrelid::regclass || ':' || condeferrable || '/' || condeferred, ' ' ORDER BY conrelid::regclass::text)
  FROM pg_constraint WHERE contype = 'p' AND connamespace = 'm'::regnamespace}),
	'm.def_pk:true/true m.deferred:true/true m.full_pk:true/true m.plain:false/false',
	'deferred primary keys where live may defer or identifies rows by all columns');

sub refresh
{
	my ($label) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_updated, rows_deleted FROM sluice.refresh('p')");
	is($ret, 0, "$label: refresh succeeds") or diag($err);
	return $out;
}

# --- key swaps in one statement ---
$live->safe_psql('postgres', q{
UPDATE app.def_pk SET id = 11 - id;
UPDATE app.full_uq SET id = 11 - id;
});
refresh('swap in one statement');
same_tables($live, $mart, \@pairs, 'swap in one statement');

# --- swaps over several statements of one transaction, then more changes to
#     the rows sharing a key in between, deletes and re-inserts ---
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.deferred SET a = a + 1 WHERE b = 'k0';
UPDATE app.deferred SET n = n * 100 WHERE b = 'k0' AND a = 5;
UPDATE app.deferred SET a = 1 WHERE b = 'k0' AND a = 11;
UPDATE app.full_pk SET id = id + 100 WHERE id = 3;
UPDATE app.full_pk SET id = 3 WHERE id = 4;
UPDATE app.full_pk SET id = 4 WHERE id = 103;
DELETE FROM app.deferred WHERE a = 3 AND b = 'k1';
INSERT INTO app.deferred VALUES (3, 'k1', -3);
COMMIT;
BEGIN;
SET CONSTRAINTS ALL DEFERRED;
UPDATE app.def_pk SET id = 2 WHERE id = 1;
UPDATE app.def_pk SET v = 'first of two' WHERE id = 2 AND v = 'v10';
UPDATE app.def_pk SET id = 1, v = 'second' WHERE id = 2 AND v = 'v9';
DELETE FROM app.def_pk WHERE id = 5;
INSERT INTO app.def_pk VALUES (5, 'again');
COMMIT;
});
refresh('swap over a transaction');
same_tables($live, $mart, \@pairs, 'swap over a transaction');

# --- the same through a streaming worker ---
$mart->safe_psql('postgres', "SELECT sluice.start('p')");
$live->safe_psql('postgres', q{
UPDATE app.def_pk SET id = 11 - id;
UPDATE app.full_uq SET id = 11 - id, v = v || '.';
BEGIN;
UPDATE app.deferred SET a = -a;
UPDATE app.deferred SET a = -a, n = n + 1;
COMMIT;
});
wait_same_tables($live, $mart, \@pairs, 'streamed swaps');
$mart->safe_psql('postgres', "SELECT sluice.stop('p')");

# --- a batch that really breaks a deferred key fails at commit, nothing applied ---
$mart->safe_psql('postgres', "INSERT INTO m.def_pk VALUES (100, 'by hand')");
$live->safe_psql('postgres', "INSERT INTO app.def_pk VALUES (100, 'from live'); UPDATE app.plain SET v = 'x'");
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
isnt($ret, 0, 'a batch breaking a deferred key fails');
like($err, qr/duplicate key value violates unique constraint/, 'at commit, with the unique violation');
is($mart->safe_psql('postgres', "SELECT count(*) FROM m.plain WHERE v = 'x'"), '0', 'nothing of the batch applied');
$mart->safe_psql('postgres', "DELETE FROM m.def_pk WHERE id = 100");
refresh('after the fix');
same_tables($live, $mart, \@pairs, 'after the fix');

done_testing();
