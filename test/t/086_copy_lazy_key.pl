# The lazy key of a chunked copy from empty (issue 19, src/snapshot.c "The
# lazy key"): a table created empty by create_pipeline's chunked initial
# copy or by sluice.add_table is a heap while its chunks are copied (each a
# plain COPY); its primary key is built by the first batch that has a
# change for a copied range, or when the copy finishes.  Checked: the key
# absent during the copy and present after; stream changes to a copied
# range under a deferred key (update, delete, key changes across chunk
# boundaries, inserts) applied once the batch built the key; kill -9 of the
# datamart while the key is built (rolled back, built again) and at about
# half of a copy whose key waits (the work repeated counted from live's
# log); a reader reads while the key is built; a non-superuser operator;
# names with quotes, capitals, spaces and non-ASCII.  Live and mart
# compared by checksum.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.naptime = 50ms
pg_sluice.copy_workers = 0
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "Quelle";
CREATE TABLE "Quelle"."Schlüssel ""K""" ("Id Ä" bigint NOT NULL, "Teil" text NOT NULL, v int,
  PRIMARY KEY ("Id Ä", "Teil"));
INSERT INTO "Quelle"."Schlüssel ""K""" SELECT g / 2, 't' || (g % 2), g FROM generate_series(2, 60001) g;
CREATE TABLE "Quelle".later (id int PRIMARY KEY, v text);
INSERT INTO "Quelle".later SELECT g, 'l' || g FROM generate_series(1, 20000) g;
CREATE TABLE "Quelle".noch (id int PRIMARY KEY, v text);
INSERT INTO "Quelle".noch SELECT g, 'n' || g FROM generate_series(1, 12000) g;
CREATE TABLE "Quelle".gross (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO "Quelle".gross SELECT g, g FROM generate_series(1, 400000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE ops LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO ops;
});

my $k = '"Ziel Ö"."Schlüssel ""K"""';
my $kpair = [['"Quelle"."Schlüssel ""K"""', $k]];

# the datamart table's primary key: its columns, or 'none'
sub key_of
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres', qq{
SELECT coalesce((SELECT string_agg(a.attname, ',' ORDER BY k.n)
                   FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(att, n), pg_attribute a
                  WHERE i.indrelid = '$table'::regclass AND i.indisprimary
                    AND a.attrelid = i.indrelid AND a.attnum = k.att), 'none')});
}

sub start_after_kill9
{
	my ($node) = @_;
	for (1 .. 60)
	{
		$node->{_pid} = undef;    # a failed attempt read the stale postmaster.pid
		return 1 if $node->start(fail_ok => 1);
		sleep 1;
	}
	return 0;
}

# --- 1. created empty, without its key, the key recorded as data ---
my ($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl; SET pg_sluice.initial_copy = chunked;
SET pg_sluice.initial_copy_chunk_rows = 10000;
SELECT sluice.create_pipeline('lazy', 'live', ARRAY['"Quelle"."Schlüssel ""K"""'], target_schema => 'Ziel Ö')});
is($ret, 0, 'create_pipeline with a chunked copy') or diag($err);
is(key_of($mart, $k), 'none', 'the table is created without its key');
is($mart->safe_psql('postgres', q{SELECT deferred_key::text FROM sluice._copy}), '{"Id Ä",Teil}',
	'the key to build is recorded, in key order');

# a batch before any chunk: every change skipped, nothing to build
$live->safe_psql('postgres', q{UPDATE "Quelle"."Schlüssel ""K""" SET v = -v WHERE "Id Ä" <= 3});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('lazy')});
is(key_of($mart, $k), 'none', 'a batch with nothing copied builds no key');

# --- 2. chunks without a key: a heap, plain COPY ---
for (1 .. 2)
{
	is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('lazy')}), 't', "chunk $_ copied");
}
is(key_of($mart, $k), 'none', 'still no key: no change for a copied range came');
# a range never copied has no row: no chunk deleted (a DELETE would scan the heap)
# (polled: a session's table statistics may reach pg_stat only when its
# backend exits, after psql got its result; the counters only grow)
ok($mart->poll_query_until('postgres', qq{SELECT coalesce(seq_scan, 0) || ':' || n_tup_del || ':' || n_tup_ins
  FROM pg_stat_user_tables WHERE relid = '$k'::regclass}, '0:0:20000'),
	'the chunks into the heap deleted nothing, scanned nothing');
is($mart->safe_psql('postgres', q{SELECT restarts FROM sluice._copy}), '0', 'the copy never started over');
is($mart->safe_psql('postgres', "SELECT count(*) FROM $k"), '20000', 'two chunks of rows');

# --- 3. changes for the copied ranges: the batch builds the key, then applies them ---
# keys 1..10000 (chunk 1: "Id Ä" 1..5000), 10001..20000 (chunk 2), the rest not copied
$live->safe_psql('postgres', q{
UPDATE "Quelle"."Schlüssel ""K""" SET v = 0 WHERE "Id Ä" BETWEEN 100 AND 120;
DELETE FROM "Quelle"."Schlüssel ""K""" WHERE "Id Ä" BETWEEN 4990 AND 5010;
UPDATE "Quelle"."Schlüssel ""K""" SET "Id Ä" = "Id Ä" + 8000, "Teil" = 'hin' WHERE "Id Ä" BETWEEN 200 AND 210 AND "Teil" = 't0';
UPDATE "Quelle"."Schlüssel ""K""" SET "Id Ä" = "Id Ä" + 100000 WHERE "Id Ä" BETWEEN 300 AND 305;
UPDATE "Quelle"."Schlüssel ""K""" SET "Id Ä" = "Id Ä" - 25000, "Teil" = 'zurück' WHERE "Id Ä" BETWEEN 25500 AND 25505 AND "Teil" = 't0';
INSERT INTO "Quelle"."Schlüssel ""K""" VALUES (0, 'neu', 1), (7000, 't2', 2);
UPDATE "Quelle"."Schlüssel ""K""" SET "Teil" = 'Ü' WHERE "Id Ä" = 9999 AND "Teil" = 't1';
});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('lazy')});
is($ret, 0, 'refresh by an operator with a copied range to change') or diag($err);
is(key_of($mart, $k), 'Id Ä,Teil', 'the batch built the key');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._copy WHERE deferred_key IS NOT NULL}), '0',
	'and recorded it built');
is($mart->safe_psql('postgres', q{SELECT rows_missing FROM sluice._pipeline WHERE name = 'lazy'}), '0',
	'every update and delete found its row');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('lazy')});
is($ret, 0, 'the rest copied with the key') or diag($err);
same_tables($live, $mart, $kpair, 'changes across chunk boundaries under a deferred key');

# --- 4. add_table, no change during its copy: the key is built when the copy finishes ---
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('lazy', '"Quelle".later', 6000)}),
	'"Ziel Ö".later', 'a table added');
is(key_of($mart, '"Ziel Ö".later'), 'none', 'added without its key');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('lazy')}), 't', 'its first chunk');
is(key_of($mart, '"Ziel Ö".later'), 'none', 'no key after a chunk');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('lazy')});
is($ret, 0, 'added table copied') or diag($err);
is($mart->safe_psql('postgres', q{SELECT state FROM sluice.copy_progress WHERE target_table = 'later'}),
	'finished', 'its copy finished');
is(key_of($mart, '"Ziel Ö".later'), 'id', 'the key built at the end');
same_tables($live, $mart, [['"Quelle".later', '"Ziel Ö".later']], 'added table');
$live->safe_psql('postgres', q{UPDATE "Quelle".later SET v = 'x' WHERE id % 100 = 0; DELETE FROM "Quelle".later WHERE id % 333 = 0});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('lazy')});
same_tables($live, $mart, [['"Quelle".later', '"Ziel Ö".later']], 'the stream goes on by the key');

# --- 4b. resnapshot of a table whose copy from empty still runs: the key first ---
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('lazy', '"Quelle".noch', 5000)});
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('lazy')}), 't', 'a chunk of another added table');
is(key_of($mart, '"Ziel Ö".noch'), 'none', 'its key waits');
$live->safe_psql('postgres', q{DELETE FROM "Quelle".noch WHERE id % 7 = 0});
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.resnapshot('lazy', '"Ziel Ö".noch', 4000)}), 't',
	'resnapshot while its key waits');
is(key_of($mart, '"Ziel Ö".noch'), 'id', 'resnapshot built the key first');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('lazy')});
is($ret, 0, 'copied again') or diag($err);
same_tables($live, $mart, [['"Quelle".noch', '"Ziel Ö".noch']], 'resnapshot of a table whose key waited');

# --- 5. kill -9 at half a copy whose key waits, then while the key is built ---
my $log_from = -s $live->logfile;
$mart->safe_psql('postgres', q{SET ROLE etl; SET client_min_messages = warning;
SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 20000;
SELECT sluice.create_pipeline('gross', 'live', ARRAY['"Quelle".gross']);});
my $bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nCALL sluice.copy_tables('gross');\n");
ok($mart->poll_query_until('postgres', q{SELECT chunks_done >= 10 FROM sluice.copy_progress WHERE pipeline = 'gross'}),
	'the copy reached half') or die "the copy did not reach 10 chunks";
$mart->kill9;
eval { $bg->quit };	# its server is gone: psql may not take the \q
ok(start_after_kill9($mart), 'datamart restarted after kill -9 mid-copy');
my $after = $mart->safe_psql('postgres', q{SELECT chunks_done FROM sluice.copy_progress WHERE pipeline = 'gross'});
cmp_ok($after, '<', 20, "the kill came before the end ($after of 20 chunks)");
is(key_of($mart, 'gross.gross'), 'none', 'no key yet');
is($mart->safe_psql('postgres', 'SELECT count(*) FROM gross.gross'), $after * 20000, 'whole chunks only');
$live->poll_query_until('postgres', q{SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = 'sluice_gross'})
  or die "slot stayed busy";
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('gross')});

# a long batch for the copied ranges: the key is built first, then 150,000 updates
$live->safe_psql('postgres', q{UPDATE "Quelle".gross SET v = -v WHERE id <= 150000});
$bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nSELECT sluice.refresh('gross');\n");
ok($mart->poll_query_until('postgres', q{SELECT EXISTS (SELECT FROM pg_locks
   WHERE relation = 'gross.gross'::regclass AND granted AND mode IN ('ShareLock', 'AccessExclusiveLock'))}),
	'the batch is building the key') or die "no key build seen";
$mart->kill9;
eval { $bg->quit };	# its server is gone: psql may not take the \q
ok(start_after_kill9($mart), 'datamart restarted after kill -9 during the key build');
is(key_of($mart, 'gross.gross'), 'none', 'the key build rolled back with its batch');
is($mart->safe_psql('postgres', q{SELECT deferred_key::text FROM sluice._copy c JOIN sluice._pipeline p USING (pipeline_id) WHERE p.name = 'gross'}),
	'{id}', 'still recorded as to build');
$live->poll_query_until('postgres', q{SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = 'sluice_gross'})
  or die "slot stayed busy";
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('gross')});
is($ret, 0, 'copy resumed and finished') or diag($err);
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('gross')});
is(key_of($mart, 'gross.gross'), 'id', 'the key is there after');
my ($chunks, $rows) = split /:/, $mart->safe_psql('postgres',
	q{SELECT chunks_done || ':' || rows_copied FROM sluice.copy_progress WHERE pipeline = 'gross' AND state = 'finished'});
my $attempts = () = slurp_file($live->logfile, $log_from) =~ /statement: COPY \(SELECT id, v FROM "Quelle"\.gross/g;
note("kill -9 at chunk $after of a lazy-key copy: $attempts chunks read from live for $chunks committed");
cmp_ok($attempts - $chunks, '<=', 1, 'at most the chunk in flight was copied again');
same_tables($live, $mart, [['"Quelle".gross', 'gross.gross']], 'after kill -9 mid-copy and during the key build');
is($mart->safe_psql('postgres', q{SELECT rows_missing FROM sluice._pipeline WHERE name = 'gross'}), '0',
	'no update found its row missing');

# --- 6. readers read while the key is built ---
# ADD PRIMARY KEY held an exclusive lock for the whole index build, and a
# BI reader waited for it (a minute at 100,000,000 rows).  An event
# trigger slows each DDL on the table (ddl_command_end, 2 s), and a reader
# with lock_timeout = 300ms tries to read during each: the unique index is
# built under a lock readers pass, the primary key then takes it over.
$live->safe_psql('postgres', q{CREATE TABLE "Quelle".lesen (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO "Quelle".lesen SELECT g, g FROM generate_series(1, 30000) g;});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('lazy', '"Quelle".lesen', 10000);
SELECT sluice.copy_chunk('lazy');});
is(key_of($mart, '"Ziel Ö".lesen'), 'none', 'a chunk copied, the key waits');
$mart->safe_psql('postgres', q{
CREATE ROLE "Lëser" LOGIN;
GRANT USAGE ON SCHEMA "Ziel Ö" TO "Lëser";
GRANT SELECT ON "Ziel Ö".lesen TO "Lëser";
CREATE FUNCTION public.slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE object_identity LIKE '"Ziel Ö".%') THEN
    PERFORM pg_sleep(2);
  END IF;
END $$;
CREATE EVENT TRIGGER slow_ddl ON ddl_command_end EXECUTE FUNCTION public.slow_ddl();
});
$live->safe_psql('postgres', q{UPDATE "Quelle".lesen SET v = -v WHERE id <= 100});
$bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nSELECT sluice.refresh('lazy');\n");
my ($sleeps, $read_in_sleep) = (0, 0);
for (1 .. 200)
{
	my $sleeping = $mart->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'refresh'});
	if ($sleeping eq '1')
	{
		$sleeps++;
		my ($r) = $mart->psql('postgres', q{SET ROLE "Lëser"; SET lock_timeout = '300ms'; SELECT count(*) FROM "Ziel Ö".lesen});
		$read_in_sleep++ if $r == 0;
		# the rest of this sleep
		$mart->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'refresh'})
		  or die "the DDL's sleep did not end";
	}
	last if key_of($mart, '"Ziel Ö".lesen') ne 'none' && $sleeping eq '0';
	usleep(50_000);
}
$bg->quit;
$mart->safe_psql('postgres', q{DROP EVENT TRIGGER slow_ddl});
cmp_ok($sleeps, '>=', 1, "the key's DDL was seen ($sleeps)");
cmp_ok($read_in_sleep, '>=', 1, "a reader read while the key was built ($read_in_sleep of $sleeps)");
is(key_of($mart, '"Ziel Ö".lesen'), 'id', 'and the key is there');

done_testing();
