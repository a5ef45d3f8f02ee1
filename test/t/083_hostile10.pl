# Hostile review of session 9 (session 10): each case a bug found by
# attacking what session 9 added as its users would, that failed before
# its fix.
#  1. sluice.workers.waiting (every role reads it) showed the error a
#     pipeline backs off from as it is, while sluice.status.last_error and
#     sluice.runs.error show it only to the pipeline's operators and to
#     roles that read all its tables: a trigger's RAISE with the failing
#     row's value reached a reader that cannot read the table, between the
#     death of the pipeline's pool worker and its next start.  And a
#     reader with SELECT on a table whose row security hides the failing
#     row from it (a campus reader) read that row in sluice.runs.error.
#  2. identity.c: a table dropped and created again on live without the
#     key column its copy in chunks ranges over (renamed), while it was
#     copied: each chunk failed on "column does not exist" (the copy
#     workers again every 5 s), every refresh succeeded (a copy under way
#     was to start over on the new table), and the datamart kept part of
#     the old table while sluice.status said "copying".  The chunk names
#     it, the refresh pauses, and the way forward is walked.
#  3. snapshot.c: a column dropped on live while its table was copied in
#     chunks: each chunk failed on "column does not exist", every refresh
#     succeeded until live wrote the table, and the drift's way forward
#     (sluice.drop_column, keep) left every chunk failing for good (the
#     copy still read the column).  The chunk names the drift with the way
#     forward, and a kept column gone from live is not copied.
#  4. sluice.quality showed the failing values (sample_keys) of a table to
#     a reader with SELECT on it whose row security hides those rows: the
#     views that show values of a table show them to roles that read every
#     row of it (sluice._readable, as sluice._error_shown in part 1).
#  5. pg_sluice.copy_workers, any role's setting, let one operator take every
#     background worker slot of the server (16 copy workers): the server's
#     pg_sluice.max_copy_workers bounds them all; a copy that could start
#     none goes on at the pipeline's next refresh.
#  6. a text key from a source of another encoding: add_table accepted it
#     and every chunk failed, the error naming the schema as the source;
#     refused before anything is created (add_table, resnapshot, a chunked
#     initial copy), or copied in the snapshot by auto.
# Names with quotes, spaces, capitals and non-ASCII; a non-superuser
# operator; a reader with no SELECT on the datamart tables.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.max_workers = 2
pg_sluice.naptime = 50ms
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "Ün app";
CREATE TABLE "Ün app"."Pay Ö" (id int PRIMARY KEY, v text);
INSERT INTO "Ün app"."Pay Ö" SELECT g, 'ok ' || g FROM generate_series(1, 10) g;
CREATE TABLE "Ün app"."Base" (id int PRIMARY KEY, v text);
INSERT INTO "Ün app"."Base" VALUES (1, 'base');
CREATE TABLE "Ün app"."Big Ö" (id int PRIMARY KEY, "Wert ä" text);
INSERT INTO "Ün app"."Big Ö" SELECT g, 'old ' || g FROM generate_series(1, 300) g;
CREATE TABLE "Ün app".wide (id int PRIMARY KEY, v text, "Gone w" text NOT NULL);
INSERT INTO "Ün app".wide SELECT g, 'v ' || g, 'w ' || g FROM generate_series(1, 300) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE "Øps 'op'" LOGIN;
CREATE ROLE "Rëader" LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO "Øps 'op'";
});
my $op = q{SET ROLE "Øps 'op'"; };
my $reader = q{SET ROLE "Rëader"; };
my ($ret, $out, $err);

# --- 1. sluice.workers.waiting masks an error as sluice.status does ---------
# a trigger of the owner's refuses a row, naming its value, after a pause
# long enough to end its worker in the middle of the batch
$mart->safe_psql('postgres', q{SET ROLE etl;
SELECT sluice.create_pipeline('leak', 'live', ARRAY['"Ün app"."Pay Ö"'], target_schema => 'Leak ö');
CREATE FUNCTION "Leak ö".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.v LIKE 'salary%' THEN
    PERFORM pg_sleep(1.5);
    RAISE EXCEPTION 'refused %', NEW.v;
  END IF;
  RETURN NEW;
END$$;
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON "Leak ö"."Pay Ö" FOR EACH ROW EXECUTE FUNCTION "Leak ö".refuse();
});
$mart->safe_psql('postgres', qq{${op}SELECT sluice.start('leak')});
$mart->safe_psql('postgres', q{GRANT USAGE ON SCHEMA "Leak ö" TO "Rëader"});
$live->safe_psql('postgres', q{UPDATE "Ün app"."Pay Ö" SET v = 'salary 987654' WHERE id = 3});
ok($mart->poll_query_until('postgres',
	q{SELECT count(*) >= 2 FROM sluice.runs WHERE pipeline = 'leak' AND error ~ 'salary 987654'}),
	'the batch fails on the trigger, its error naming the value');
ok($mart->poll_query_until('postgres', q{SELECT in_batch FROM sluice.workers WHERE pipeline = 'leak'}),
	'the worker tries the batch again');
is($mart->safe_psql('postgres',
	q{SELECT count(pg_terminate_backend(worker_pid)) FROM sluice.workers WHERE pipeline = 'leak' AND in_batch}),
	'1', 'its worker ends in the middle of the batch');
# until a worker serves it again, the pipeline waits: what does a reader read?
my $seen = '';
my $deadline = time() + 60;
while ($seen eq '' && time() < $deadline)
{
	$seen = $mart->safe_psql('postgres',
		qq{${reader}SELECT coalesce(waiting, '') FROM sluice.workers WHERE pipeline = 'leak' AND worker IS NULL});
	Time::HiRes::sleep(0.02) if $seen eq '';
}
isnt($seen, '', 'a reader sees the pipeline wait for a worker, with a reason');
unlike($seen, qr/987654/, 'not the value of a row it cannot read');
like($seen, qr/^an error \(shown to the pipeline's operators/, 'it reads that there was an error');
unlike($mart->safe_psql('postgres', qq{${reader}SELECT coalesce(last_error, '') FROM sluice.status WHERE pipeline = 'leak'}),
	qr/987654/, 'as sluice.status says');
like($mart->safe_psql('postgres', qq{${op}SELECT coalesce(last_error, '') FROM sluice.status WHERE pipeline = 'leak'}),
	qr/refused salary 987654/, 'its operator reads the error');
# a campus reader: SELECT on the table, and row security showing it the
# rows of its campus (not row 3): it must not read row 3 in an error either
$mart->safe_psql('postgres', q{SET ROLE etl; ALTER TABLE "Leak ö"."Pay Ö" ENABLE ROW LEVEL SECURITY;
  CREATE POLICY "its campus" ON "Leak ö"."Pay Ö" FOR SELECT TO "Rëader" USING (id <> 3);
  GRANT SELECT ON "Leak ö"."Pay Ö" TO "Rëader"});
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) FROM "Leak ö"."Pay Ö" WHERE id = 3}), '0',
	'row security keeps row 3 from the reader');
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) FROM sluice.runs WHERE pipeline = 'leak' AND error ~ '987654'}),
	'0', 'nor does it read row 3 in sluice.runs.error');
unlike($mart->safe_psql('postgres', qq{${reader}SELECT coalesce(last_error, '') FROM sluice.status WHERE pipeline = 'leak'}),
	qr/987654/, 'nor in sluice.status.last_error');
$mart->safe_psql('postgres', q{SET ROLE etl; ALTER TABLE "Leak ö"."Pay Ö" DISABLE ROW LEVEL SECURITY});
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) > 0 FROM sluice.runs WHERE pipeline = 'leak' AND error ~ '987654'}),
	't', 'once the reader reads every row of the table, it reads the error');
# the owner drops the trigger: the row arrives, nothing else was applied
$mart->safe_psql('postgres', q{SET ROLE etl; DROP TRIGGER refuse ON "Leak ö"."Pay Ö"});
ok($mart->poll_query_until('postgres', q{SELECT v = 'salary 987654' FROM "Leak ö"."Pay Ö" WHERE id = 3}),
	'without the trigger the row arrives');
is(checksum($mart, '"Leak ö"."Pay Ö"'), checksum($live, '"Ün app"."Pay Ö"'), 'the datamart equals live');
$mart->safe_psql('postgres', q{SELECT sluice.stop('leak')});

# --- 2. a table created again without its key while it is copied ----------
# live's table owner drops the table being copied in chunks and creates it
# again with its key column renamed: each chunk failed on "column does not
# exist" (copy workers forever, every 5 s), every refresh succeeded, and
# the datamart kept 100 rows of the old table while sluice.status said
# "copying"
my $cp = q{SET ROLE "Øps 'op'"; SET pg_sluice.copy_workers = 0; };
my $big = q{"Ün app"."Big Ö"};
my $mbig = q{"Stück S"."Big Ö"};
$mart->safe_psql('postgres', q{SET ROLE etl;
SELECT sluice.create_pipeline('stuck', 'live', ARRAY['"Ün app"."Base"'], target_schema => 'Stück S')});
$mart->safe_psql('postgres', qq{${cp}SELECT sluice.add_table('stuck', '$big', 100); SELECT sluice.copy_chunk('stuck')});
is($mart->safe_psql('postgres', "SELECT count(*) FROM $mbig"), '100', 'the first chunk is copied');
$live->safe_psql('postgres', qq{DROP TABLE $big; CREATE TABLE $big ("Id" int PRIMARY KEY, "Wert ä" text);
  INSERT INTO $big SELECT g, 'new ' || g FROM generate_series(1, 300) g});
($ret, $out, $err) = $mart->psql('postgres', qq{${cp}SELECT sluice.copy_chunk('stuck')});
like($err, qr/ERROR:  table "Ün app\.Big Ö" was created again on source "live" without column "id" of the datamart table's key/,
	'the next chunk says the table was created again without its key');
like($err, qr/HINT:  Give the table on live its column "id" back/, 'with the way forward');
($ret, $out, $err) = $mart->psql('postgres', qq{${op}SELECT status FROM sluice.refresh('stuck')});
is($out, 'paused', 'the refresh pauses the pipeline instead of succeeding');
like($err, qr/created again \(oid \d+, was \d+\) without column "id" of the datamart table's key/, 'and says why');
like($mart->safe_psql('postgres', qq{${reader}SELECT paused_reason FROM sluice.status WHERE pipeline = 'stuck'}),
	qr/not the table pipeline "stuck" copied/, 'sluice.status says so to every reader');
# the way forward: the key back on live, copy again
$live->safe_psql('postgres', qq{ALTER TABLE $big RENAME COLUMN "Id" TO id});
$mart->safe_psql('postgres', qq{${cp}SELECT sluice.resnapshot('stuck', '$mbig'); SELECT sluice.resume('stuck')});
$mart->safe_psql('postgres', qq{${cp}CALL sluice.copy_tables('stuck')});
is(checksum($mart, $mbig), checksum($live, $big), 'copied again, the datamart holds the new table');
$live->safe_psql('postgres', qq{UPDATE $big SET "Wert ä" = 'later' WHERE id IN (1, 150, 300); DELETE FROM $big WHERE id = 2});
is($mart->safe_psql('postgres', qq{${op}SELECT status FROM sluice.refresh('stuck')}), 'succeeded', 'its refreshes succeed');
is(checksum($mart, $mbig), checksum($live, $big), 'and the datamart follows it');

# --- 3. a column dropped on live while its table is copied in chunks -------
# each chunk failed on "column does not exist" (as "the initial copy"),
# every refresh succeeded until live wrote the table; then the drift's way
# forward (sluice.drop_column, keep) left every chunk failing the same way,
# for good: the copy read the column the contract keeps fed by nothing
my $wide = q{"Ün app".wide};
my $mwide = q{"Stück S".wide};
$mart->safe_psql('postgres', qq{${cp}SELECT sluice.add_table('stuck', '$wide', 100); SELECT sluice.copy_chunk('stuck')});
$live->safe_psql('postgres', qq{ALTER TABLE $wide DROP COLUMN "Gone w"});
($ret, $out, $err) = $mart->psql('postgres', qq{${cp}SELECT sluice.copy_chunk('stuck')});
like($err, qr/ERROR:  source table "Ün app\.wide" drifted from its contract.*DETAIL:  Column "Gone w" \(feeding "Gone w"\) no longer exists on source "live"/s,
	'a chunk after a column was dropped on live names the drift');
like($err, qr/HINT:  If it was dropped, sluice\.drop_column\('"Stück S"\.wide', 'Gone w'\) keeps "Gone w"/, 'with the way forward, quoted');
($ret, $out, $err) = $mart->psql('postgres', qq{${cp}SELECT sluice.drop_column('"Stück S".wide', 'Gone w')});
is($ret, 0, 'the operator keeps the column, fed by nothing') or diag($err);
($ret, $out, $err) = $mart->psql('postgres', qq{${cp}CALL sluice.copy_tables('stuck')});
is($ret, 0, 'then the copy goes on') or diag($err);
is($mart->safe_psql('postgres', 'SELECT count(*) FROM sluice.copy_progress WHERE pipeline = \'stuck\' AND state <> \'finished\''), '0',
	'and finishes');
is(checksum($mart, "(SELECT id, v FROM $mwide)"), checksum($live, "(SELECT id, v FROM $wide)"), 'the datamart holds live\'s rows');
$live->safe_psql('postgres', qq{UPDATE $wide SET v = 'later' WHERE id IN (5, 250); INSERT INTO $wide VALUES (301, 'new')});
is($mart->safe_psql('postgres', qq{${op}SELECT status FROM sluice.refresh('stuck')}), 'succeeded', 'its refreshes succeed');
is(checksum($mart, "(SELECT id, v FROM $mwide)"), checksum($live, "(SELECT id, v FROM $wide)"), 'and the datamart follows live');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM $mwide WHERE "Gone w" IS NOT NULL}), '100',
	'the kept column holds what the first chunk copied, NULL since');

# --- 4. sluice.quality to a reader that row security keeps from rows -------
# a campus reader has SELECT on the table and a policy showing it its rows
# (id 1); sluice.quality showed it the failing values of the others
my $mbase = q{"Stück S"."Base"};
$mart->safe_psql('postgres', qq{SET ROLE etl; ALTER TABLE $mbase ENABLE ROW LEVEL SECURITY;
  CREATE POLICY "its campus" ON $mbase FOR SELECT TO "Rëader" USING (id = 1);
  GRANT USAGE ON SCHEMA "Stück S" TO "Rëader"; GRANT SELECT ON $mbase TO "Rëader"});
$mart->safe_psql('postgres', qq{${op}SELECT sluice.expect_column_values_to_be_unique('$mbase', ARRAY['v'], 'warn')});
$live->safe_psql('postgres', q{INSERT INTO "Ün app"."Base" VALUES (2, 'salary 4242'), (3, 'salary 4242')});
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('stuck')});
like($mart->safe_psql('postgres', qq{${op}SELECT sample_keys FROM sluice.quality WHERE target_table = 'Base' AND NOT success}),
	qr/4242/, 'the operator reads the failing values in sluice.quality');
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) FROM $mbase WHERE id <> 1}), '0', 'the reader reads only its rows');
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) FROM sluice.quality WHERE target_table = 'Base' AND sample_keys::text ~ '4242'}),
	'0', 'nor the others\' values in sluice.quality');
$mart->safe_psql('postgres', qq{SET ROLE etl; ALTER TABLE $mbase DISABLE ROW LEVEL SECURITY});
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) FROM sluice.quality WHERE target_table = 'Base' AND sample_keys::text ~ '4242'}),
	'1', 'once it reads every row, it reads them there');

# --- 5. one operator cannot take every background worker slot -------------
# pg_sluice.copy_workers is any role's setting: at 16 an operator's add_table
# filled every free background worker slot of the server, and another
# owner's streaming pipeline waited for a pool worker.  The server's
# pg_sluice.max_copy_workers bounds the copy workers of all pipelines.
$live->safe_psql('postgres', q{CREATE TABLE "Ün app"."Many" (id int PRIMARY KEY, v text);
INSERT INTO "Ün app"."Many" SELECT g, 'm ' || g FROM generate_series(1, 20000) g;});
$mart->safe_psql('postgres', q{ALTER SYSTEM SET pg_sluice.max_copy_workers = 1; SELECT pg_reload_conf();});
($ret, $out, $err) = $mart->psql('postgres',
	qq{${op}SET pg_sluice.copy_workers = 16; SELECT sluice.add_table('stuck', '"Ün app"."Many"', 500)});
is($ret, 0, 'the operator asks for 16 copy workers');
my $most = 0;
for (1 .. 30)
{
	my $n = $mart->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_sluice copy worker'});
	$most = $n if $n > $most;
	Time::HiRes::usleep(100_000);
}
cmp_ok($most, '<=', 1, "at most pg_sluice.max_copy_workers copy workers ran ($most)");
cmp_ok($most, '>=', 1, 'and one did');
ok($mart->poll_query_until('postgres', q{SELECT count(*) = 0 FROM sluice.copy_progress WHERE pipeline = 'stuck' AND state = 'copying'}),
	'the copy finishes');
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('stuck')});
is(checksum($mart, q{"Stück S"."Many"}), checksum($live, q{"Ün app"."Many"}), 'and equals live');
$mart->safe_psql('postgres', q{ALTER SYSTEM RESET pg_sluice.max_copy_workers; SELECT pg_reload_conf();});

# a copy that could start no worker (all of the server's busy; here none
# allowed) goes on at the pipeline's next refresh, though no change of its
# table arrives (before, only a batch with a change of it started them)
$live->safe_psql('postgres', q{CREATE TABLE "Ün app"."Still" (id int PRIMARY KEY, v text);
INSERT INTO "Ün app"."Still" SELECT g, 's ' || g FROM generate_series(1, 3000) g;});
$mart->safe_psql('postgres', q{ALTER SYSTEM SET pg_sluice.max_copy_workers = 0; SELECT pg_reload_conf();});
($ret, $out, $err) = $mart->psql('postgres', qq{${op}SELECT sluice.add_table('stuck', '"Ün app"."Still"', 1000)});
like($err, qr/no copy worker can start for pipeline \d+: the server's 0 are busy.*HINT:  The pipeline's next refresh/s,
	'no copy worker could start: a warning says what goes on');
$mart->safe_psql('postgres', q{ALTER SYSTEM RESET pg_sluice.max_copy_workers; SELECT pg_reload_conf();});
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('stuck')});
ok($mart->poll_query_until('postgres', q{SELECT count(*) = 0 FROM sluice.copy_progress WHERE pipeline = 'stuck' AND state = 'copying'}),
	'the next refresh started the copy workers and the copy finished');
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('stuck')});
is(checksum($mart, q{"Stück S"."Still"}), checksum($live, q{"Ün app"."Still"}), 'and equals live');

# --- 6. a text key from a source of another encoding -----------------------
# add_table accepted it, and every chunk failed (the copy workers every 5 s,
# the log only), the error naming the schema as the source; now refused
# before anything is created, or copied in the snapshot by auto
$live->safe_psql('postgres', q{CREATE DATABASE lat ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$live->safe_psql('lat', q{
CREATE SCHEMA "Lat app";
CREATE TABLE "Lat app"."Wort T" (k text PRIMARY KEY, v int);
INSERT INTO "Lat app"."Wort T" SELECT 'w' || g, g FROM generate_series(1, 500) g;
CREATE TABLE "Lat app".zahl (id int PRIMARY KEY, v text);
INSERT INTO "Lat app".zahl SELECT g, 'z' || g FROM generate_series(1, 500) g;
});
mart_source($mart, $live, 'lat1', 'lat');
$mart->safe_psql('postgres', qq{${op}SELECT sluice.create_pipeline('enc', 'lat1', ARRAY['"Lat app".zahl'], target_schema => 'Enc S')});
($ret, $out, $err) = $mart->psql('postgres', qq{${op}SELECT sluice.add_table('enc', '"Lat app"."Wort T"', 100)});
like($err, qr/ERROR:  table "Lat app\.Wort T" has a text key and source "lat1" another encoding than this database \(UTF8\).*HINT:  Put the table in a pipeline of its own created with SET pg_sluice.initial_copy = snapshot/s,
	'add_table refuses a text key from a source of another encoding, naming the source');
is($mart->safe_psql('postgres', q{SELECT to_regclass('"Enc S"."Wort T"') IS NULL}), 't', 'and creates nothing');
($ret, $out, $err) = $mart->psql('postgres', qq{${op}SET pg_sluice.initial_copy = chunked;
SELECT sluice.create_pipeline('enc2', 'lat1', ARRAY['"Lat app"."Wort T"'], target_schema => 'Enc2 S')});
like($err, qr/has a text key and source "lat1" another encoding.*HINT:  SET pg_sluice.initial_copy = auto/s,
	'a chunked initial copy refuses it too');
($ret, $out, $err) = $mart->psql('postgres', qq{${op}SET pg_sluice.initial_copy = auto; SET pg_sluice.initial_copy_chunked_above = 0;
SELECT sluice.create_pipeline('enc2', 'lat1', ARRAY['"Lat app"."Wort T"', '"Lat app".zahl'], target_schema => 'Enc2 S')});
is($ret, 0, 'auto copies it in the snapshot') or diag($err);
is(checksum($mart, q{"Enc2 S"."Wort T"}), checksum($live, q{"Lat app"."Wort T"}, 'lat'), 'and it equals live');
($ret, $out, $err) = $mart->psql('postgres', qq{${op}SELECT sluice.resnapshot('enc2', '"Enc2 S"."Wort T"')});
like($err, qr/has a text key and source "lat1" another encoding.*HINT:  sluice.repair\('enc2'\)/s,
	'resnapshot refuses it, naming the way that works');

done_testing();
