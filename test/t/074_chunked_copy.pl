# Chunked copies while the pipeline streams (issue 19): sluice.resnapshot,
# sluice.add_table and sluice.copy_tables between two real servers.  A table copied again
# in chunks while live writes it (updates of rows inside the chunk being
# copied, deletes of rows not copied yet, keys moved across chunk
# boundaries both ways, inserts beyond the frontier, a truncation); a table
# added to the running pipeline under write load converges with zero loss;
# the pipeline's other table goes on; kill -9 of the datamart in the middle of
# the copy resumes after the last committed chunk (the work repeated
# measured in the catalog); live restarted in the middle; a composite key
# with text (byte order on both sides), quotes, spaces, capitals and
# non-ASCII; a non-superuser operator, a reader who sees no progress;
# refusals with their hints.  Live and mart compared by checksum.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "pg_sluice.copy_workers = 0\n");

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.big (id int PRIMARY KEY, grp int NOT NULL, v text);
INSERT INTO app.big SELECT g, g % 7, 'v' || g FROM generate_series(1, 20000) g;
CREATE TABLE app."Odd ""Key"" T" ("Städte" text, "n o" int, "Value's" text, PRIMARY KEY ("Städte", "n o"));
INSERT INTO app."Odd ""Key"" T"
  SELECT (ARRAY['Zürich', 'apple', 'Apple', 'éclair', 'b''q', 'a b'])[1 + g % 6], g, 'x' || g
    FROM generate_series(1, 3000) g;
CREATE TABLE app.other (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO app.other SELECT g, g FROM generate_series(1, 100) g;
CREATE TABLE app.fresh (id bigint PRIMARY KEY, a text, b numeric);
INSERT INTO app.fresh SELECT g, 'a' || g, g / 7.0 FROM generate_series(1, 15000) g;
CREATE TABLE app.nokey2 (x int);
CREATE PROCEDURE app.fresh_load(n int) LANGUAGE plpgsql AS $$
DECLARE i int; k int;
BEGIN
  FOR i IN 1 .. n LOOP
    k := 1 + (i * 7919) % 16000;
    CASE i % 4
      WHEN 0 THEN UPDATE app.fresh SET b = b + 1 WHERE id = k;
      WHEN 1 THEN DELETE FROM app.fresh WHERE id = k;
      WHEN 2 THEN INSERT INTO app.fresh VALUES (k, 'ins' || i, i) ON CONFLICT (id) DO UPDATE SET a = 'conf' || i;
      ELSE UPDATE app.fresh SET id = 20000 + i WHERE id = k;
    END CASE;
    UPDATE app.other SET v = v + 1 WHERE id = 1 + i % 100;
    COMMIT;
  END LOOP;
END $$;
CREATE TABLE app.nokey (x int, y text);
ALTER TABLE app.nokey REPLICA IDENTITY FULL;
INSERT INTO app.nokey VALUES (1, 'a');
-- a writer: many small transactions over the whole key range
CREATE PROCEDURE app.write_load(n int, seed float8) LANGUAGE plpgsql AS $$
DECLARE i int; k int;
BEGIN
  PERFORM setseed(seed);
  FOR i IN 1 .. n LOOP
    k := 1 + floor(random() * 24000)::int;
    CASE i % 5
      WHEN 0 THEN UPDATE app.big SET v = v || '+' WHERE id = k;
      WHEN 1 THEN DELETE FROM app.big WHERE id = k;
      WHEN 2 THEN INSERT INTO app.big VALUES (k, 0, 'new' || i) ON CONFLICT (id) DO UPDATE SET v = 'up' || i;
      WHEN 3 THEN UPDATE app.big SET id = 24001 + (i % 9000) WHERE id = k
                    AND NOT EXISTS (SELECT 1 FROM app.big b WHERE b.id = 24001 + (i % 9000));
      ELSE UPDATE app.big SET id = k WHERE id = 24001 + (i % 9000)
                    AND NOT EXISTS (SELECT 1 FROM app.big b WHERE b.id = k);
    END CASE;
    UPDATE app.other SET v = v + 1 WHERE id = 1 + i % 100;
    COMMIT;
  END LOOP;
END $$;
});
mart_source($mart, $live, 'live');

$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE ops LOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO ops;
SET ROLE etl;
SELECT sluice.create_pipeline('c', 'live', ARRAY['app.big', 'app."Odd ""Key"" T"', 'app.other', 'app.nokey'],
                              target_schema => 'Chunk "S"');
});
my $big = '"Chunk ""S"""."big"';
my $odd = '"Chunk ""S"""."Odd ""Key"" T"';
my $other = '"Chunk ""S"""."other"';
my @pairs = (['app.big', $big], ['app."Odd ""Key"" T"', $odd], ['app.other', $other]);

# the killed postmaster's children go away on their own: start when we can
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

sub progress
{
	my ($table) = @_;
	return $mart->safe_psql('postgres', qq{SET ROLE ops;
SELECT state || ':' || chunks_done || ':' || rows_copied FROM sluice.copy_progress
 WHERE pipeline = 'c' AND target_table = '$table'});
}

# --- 1. refusals ---
my ($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.resnapshot('c', '"Chunk ""S"""."nokey"')});
like($err, qr/has no primary key: it cannot be copied in chunks.*HINT:.*one snapshot/s, 'keyless table refused with a hint');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE bi; SELECT sluice.resnapshot('c', '"Chunk ""S"""."big"')});
like($err, qr/permission denied/, 'a reader may not resnapshot');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.resnapshot('c', 'pg_class')});
like($err, qr/is not fed by pipeline "c".*HINT:/s, 'a table of no pipeline refused');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.resnapshot('c', '"Chunk ""S"""."big"', 0)});
like($err, qr/chunk_rows must be at least 1/, 'chunk_rows 0 refused');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('c')}), 'f', 'nothing to copy: false');

# --- 2. the datamart drifted by hand; resnapshot brings it back, in chunks,
#        while live is written between chunks ---
$mart->safe_psql('postgres', qq{
DELETE FROM $big WHERE id % 97 = 0;
UPDATE $big SET v = 'wrong' WHERE id % 89 = 0;
INSERT INTO $big VALUES (50000, 1, 'extra');
DELETE FROM $odd WHERE "n o" % 5 = 0;
});
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$big', chunk_rows => 3000)});
is(progress('big'), 'copying:0:0', 'resnapshot recorded, nothing copied yet');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('c')}), 't', 'first chunk copied');
is(progress('big'), 'copying:1:3000', 'one chunk of 3000 rows committed');
# keys 1..3000 copied; the rest not yet
$live->safe_psql('postgres', q{
UPDATE app.big SET v = 'copied-updated' WHERE id IN (10, 2999);
DELETE FROM app.big WHERE id IN (11, 5000, 19999);     -- copied, next chunk, last chunk
UPDATE app.big SET id = 30001 WHERE id = 12;           -- copied -> beyond the end
UPDATE app.big SET id = 12 WHERE id = 7001;            -- not copied -> the freed copied key 12
UPDATE app.big SET id = 25000 WHERE id = 14;           -- copied -> not copied
UPDATE app.big SET id = 30002 WHERE id = 8000;         -- not copied -> beyond
INSERT INTO app.big VALUES (30003, 1, 'beyond');
UPDATE app.other SET v = -v WHERE id <= 10;
});
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('c')}), 't', 'second chunk copied');
is($mart->safe_psql('postgres', "SELECT v FROM $big WHERE id = 10"), 'copied-updated', 'update of a copied key applied');
is($mart->safe_psql('postgres', "SELECT count(*) FROM $big WHERE id IN (11, 14)"), '0',
	'a deleted and a moved-away copied key are gone');
is($mart->safe_psql('postgres', "SELECT v FROM $big WHERE id = 12"), 'v7001', 'a row moved into the copied region');
same_tables($live, $mart, [['app.other', $other]], 'the other table went on during the copy');

# the rest, with a writer on live during the chunks (rows updated inside the
# chunk being copied)
my $writer = $live->background_psql('postgres', on_error_stop => 1);
$writer->query_until(qr/started/, "\\echo started\nCALL app.write_load(4000, 0.25);\n\\echo done\n");
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SET client_min_messages = notice; CALL sluice.copy_tables('c')});
is($ret, 0, 'copy_tables finished') or diag($err);
like($err, qr/NOTICE:  pipeline "c": table "Chunk ""S""".big: \d+ of \d+ chunks, \d+ rows/, 'progress notices');
$writer->query_until(qr/done/, "");
$writer->quit;
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('c')});
like(progress('big'), qr/^finished:\d+:\d+$/, 'copy finished');
is($mart->safe_psql('postgres', "SELECT count(*) FROM $big WHERE id = 50000"), '0', 'the row added by hand is gone');
same_tables($live, $mart, [['app.big', $big], ['app.other', $other]], 'after resnapshot under write load');
is($mart->safe_psql('postgres', q{SELECT rows_missing FROM sluice._pipeline WHERE name = 'c'}), '0',
	'no update or delete found its row missing');

# --- 3. a composite text key: byte order on both sides ---
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$odd', chunk_rows => 250)});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('c'); SELECT sluice.copy_chunk('c')});
$live->safe_psql('postgres', q{
UPDATE app."Odd ""Key"" T" SET "Städte" = 'Zz' WHERE "n o" % 11 = 0;
UPDATE app."Odd ""Key"" T" SET "Städte" = 'A' WHERE "n o" % 13 = 0 AND "n o" % 11 <> 0;
DELETE FROM app."Odd ""Key"" T" WHERE "n o" % 17 = 0;
INSERT INTO app."Odd ""Key"" T" SELECT 'Ärger', g, 'y' FROM generate_series(1, 50) g;
});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('c')});
is($ret, 0, 'composite key copied') or diag($err);
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('c')});
same_tables($live, $mart, \@pairs, 'after resnapshot of a composite text key');

# --- 3b. a table added to the running pipeline, under write load ---
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('c', 'app.nokey2')});
like($err, qr/has no primary key.*HINT:/s, 'add_table of a keyless table refused with a hint');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('c', 'app.big')});
like($err, qr/already exists in the datamart/, 'add_table of a table already there refused');
$writer = $live->background_psql('postgres', on_error_stop => 1);
$writer->query_until(qr/started/, "\\echo started\nCALL app.fresh_load(3000);\n\\echo done\n");
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('c', 'app.fresh', chunk_rows => 2000)}),
	'"Chunk ""S""".fresh', 'add_table returns the new datamart table');
is($mart->safe_psql('postgres', q{SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = '"Chunk ""S""".fresh'::regclass}),
	'etl', "the new table belongs to the pipeline's owner");
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('c')});
is($ret, 0, 'the added table copied while live writes it') or diag($err);
$writer->query_until(qr/done/, "");
$writer->quit;
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('c')});
push @pairs, ['app.fresh', '"Chunk ""S""".fresh'];
same_tables($live, $mart, \@pairs, 'after add_table under write load');
is($mart->safe_psql('postgres', q{SELECT kind || ':' || state FROM sluice.copy_progress WHERE target_table = 'fresh'}),
	'add_table:finished', 'progress of the added table');

# --- 4. a truncation on live during the copy starts it over ---
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$big', chunk_rows => 5000)});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('c')});
$live->safe_psql('postgres', q{TRUNCATE app.big; INSERT INTO app.big SELECT g, g % 3, 't' || g FROM generate_series(1, 12000) g;});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('c')});
is($ret, 0, 'copy after a truncation') or diag($err);
is($mart->safe_psql('postgres', q{SELECT restarts FROM sluice.copy_progress WHERE target_table = 'big'}), '1',
	'the truncation restarted the copy once');
same_tables($live, $mart, \@pairs, 'after a truncation during the copy');

# --- 4b. a live transaction committed but still waiting for a synchronous
#         standby (invisible to new snapshots) when a chunk starts: the chunk
#         waits for it, or its change above the frontier would be lost ---
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$big', chunk_rows => 3000)});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.copy_chunk('c')});
$live->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_standby_names = 'nobody'; SELECT pg_reload_conf();});
my $stuck = $live->background_psql('postgres', on_error_stop => 0);
$stuck->query_until(qr/started/, "\\echo started\nSET application_name = 'stuck';\nUPDATE app.big SET v = 'waited for' WHERE id = 11999;\n\\echo committed\n");
$live->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'stuck' AND wait_event = 'SyncRep'})
  or die "the update did not wait for the synchronous standby";
my $copier = $mart->background_psql('postgres', on_error_stop => 0);
$copier->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nCALL sluice.copy_tables('c');\n\\echo copied\n");
ok($live->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pg_sluice' AND query LIKE '%SyncRep%'}),
	'the chunk waits for the transaction waiting for its standby');
is($mart->safe_psql('postgres', q{SELECT chunks_done FROM sluice.copy_progress WHERE target_table = 'big'}), '1',
	'no chunk committed meanwhile');
$live->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'stuck'});
$stuck->query_until(qr/committed/, "");
$stuck->quit;
$copier->query_until(qr/copied/, "");
$copier->quit;
$live->safe_psql('postgres', q{ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf();});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('c')});
is($mart->safe_psql('postgres', "SELECT v FROM $big WHERE id = 11999"), 'waited for', 'the change that waited for the standby is there');
same_tables($live, $mart, \@pairs, 'after a transaction waited for a synchronous standby during the copy');

# --- 5. kill -9 of the datamart in the middle of the copy ---
$live->safe_psql('postgres', q{INSERT INTO app.big SELECT g, g % 3, 'k' || g FROM generate_series(12001, 40000) g; ANALYZE app.big;});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('c')});
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$big', chunk_rows => 1000)});
# every chunk attempted is one COPY in live's log (log_statement = all)
my $log_from = -s $live->logfile;
my $bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nCALL sluice.copy_tables('c');\n");
$mart->poll_query_until('postgres', q{SELECT chunks_done >= 20 FROM sluice.copy_progress WHERE target_table = 'big'})
  or die "the copy did not reach 20 chunks";
my $seen = $mart->safe_psql('postgres', q{SELECT chunks_done FROM sluice.copy_progress WHERE target_table = 'big'});
$mart->kill9;
$bg->quit;
ok(start_after_kill9($mart), 'datamart restarted after kill -9');
my ($after, $total) = split /:/, $mart->safe_psql('postgres',
	q{SELECT chunks_done || ':' || chunks_total FROM sluice.copy_progress WHERE target_table = 'big'});
cmp_ok($after, '>=', $seen, "chunks committed before the kill survive ($after >= $seen of $total)");
cmp_ok($after, '<', $total, 'the kill came before the end');
$live->poll_query_until('postgres', q{SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = 'sluice_c'})
  or die "slot stayed busy";
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('c')});
is($ret, 0, 'copy resumed after kill -9') or diag($err);
my ($chunks, $rows) = split /:/, $mart->safe_psql('postgres',
	q{SELECT chunks_done || ':' || rows_copied FROM sluice.copy_progress WHERE target_table = 'big'});
is($rows, '40000', 'rows copied counted once: the interrupted chunk was rolled back whole');
# work repeated: chunks copied from live but never committed (each COPY as
# log_statement logs it, not the STATEMENT line of the error that cut one short)
my $attempts = () = slurp_file($live->logfile, $log_from) =~ /statement: COPY \(SELECT id, grp, v FROM app\.big WHERE/g;
my $repeated = $attempts - $chunks;
note("kill -9 of the datamart: $attempts chunks copied from live for $chunks committed ($repeated repeated)");
cmp_ok($repeated, '<=', 1, "at most the chunk in flight was copied again ($repeated)");
cmp_ok($repeated / $chunks, '<=', 0.10, "repeated work <= 10% ($repeated of $chunks chunks)");
same_tables($live, $mart, \@pairs, 'after kill -9 of the datamart mid-copy');

# --- 6. kill -9 of live in the middle of the copy ---
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$big', chunk_rows => 4000)});
$mart->safe_psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('c', max_chunks => 3)});
is(progress('big'), 'copying:3:12000', 'max_chunks stops after three chunks');
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('c', '$big', chunk_rows => 500)});
$bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nCALL sluice.copy_tables('c');\n\\echo finished\n");
$mart->poll_query_until('postgres', q{SELECT chunks_done >= 10 FROM sluice.copy_progress WHERE target_table = 'big'})
  or die "the copy did not reach 10 chunks";
$live->kill9;
$bg->query_until(qr/finished/, "");
like($bg->{stderr}, qr/ERROR/, 'the copy stopped with an error when live died');
$bg->quit;
ok(start_after_kill9($live), 'live restarted after kill -9');
$seen = $mart->safe_psql('postgres', q{SELECT chunks_done FROM sluice.copy_progress WHERE target_table = 'big'});
cmp_ok($seen, '<', 80, "the copy was cut short ($seen of 81 chunks)");
$live->safe_psql('postgres', q{UPDATE app.big SET v = 'after restart' WHERE id % 1000 = 0});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('c')});
is($ret, 0, 'copy resumed after kill -9 of live') or diag($err);
like(progress('big'), qr/^finished:\d+:40000$/, 'every row copied once');
same_tables($live, $mart, \@pairs, 'after kill -9 of live mid-copy');

# --- 7. who sees the progress ---
is($mart->safe_psql('postgres', q{SET ROLE bi; SELECT count(*) FROM sluice.copy_progress}), '0',
	'a reader sees no progress');
is($mart->safe_psql('postgres', q{SET ROLE ops;
SELECT chunks_total = chunks_done AND rows_per_second > 0 AND eta = interval '0'
  FROM sluice.copy_progress WHERE target_table = 'big'}), 't', 'progress of a finished copy');

done_testing();
