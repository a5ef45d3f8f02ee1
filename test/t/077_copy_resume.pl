# The initial copy of create_pipeline in chunks (issue 19): the one-snapshot
# copy for tables under pg_sluice.initial_copy_chunked_above rows; pg_sluice.initial_copy = auto (the default) leaves the tables the source estimates above
# pg_sluice.initial_copy_chunked_above rows empty and CALL sluice.copy_tables
# fills them chunk by chunk while live writes them; kill -9 of the datamart
# at about half of the copy, then the copy resumes after the last committed
# chunk (the work repeated measured from live's log and the catalog);
# sluice.status shows the copy; keep_history waits for it; small and keyless tables keep the
# one-snapshot copy (a notice every million rows); a partitioned table's estimate sums its partitions; a
# continuous pipeline streams with the frontier filter, its chunks copied
# while it streams; chunked refuses a keyless table before creating
# anything; names with quotes, capitals, spaces and non-ASCII; a
# non-superuser operator.  Live and mart compared by checksum.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.naptime = 50ms
pg_sluice.copy_workers = 0
});

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app."Große ""Tabelle""" (id bigint PRIMARY KEY, a int NOT NULL, "Wert b" text);
INSERT INTO app."Große ""Tabelle""" SELECT g, g % 13, 'w' || g FROM generate_series(1, 200000) g;
CREATE TABLE app.small (id int PRIMARY KEY, v text);
INSERT INTO app.small SELECT g, 's' || g FROM generate_series(1, 50) g;
CREATE TABLE app.nokey (x int, y text);
ALTER TABLE app.nokey REPLICA IDENTITY FULL;
INSERT INTO app.nokey VALUES (1, 'a'), (2, 'b');
CREATE TABLE app."Teile" (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE app."Teile 1" PARTITION OF app."Teile" FOR VALUES FROM (1) TO (60001);
CREATE TABLE app."Teile 2" PARTITION OF app."Teile" FOR VALUES FROM (60001) TO (200001);
INSERT INTO app."Teile" SELECT g, 't' || g FROM generate_series(1, 110000) g;
CREATE TABLE app.strom (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO app.strom SELECT g, g FROM generate_series(1, 20000) g;
VACUUM ANALYZE;
-- a writer: small transactions over the whole key range and beyond it
CREATE PROCEDURE app.write_load(n int) LANGUAGE plpgsql AS $$
DECLARE i int; k bigint;
BEGIN
  FOR i IN 1 .. n LOOP
    k := 1 + (i::bigint * 7919) % 210000;
    CASE i % 4
      WHEN 0 THEN UPDATE app."Große ""Tabelle""" SET "Wert b" = "Wert b" || '+' WHERE id = k;
      WHEN 1 THEN DELETE FROM app."Große ""Tabelle""" WHERE id = k;
      WHEN 2 THEN INSERT INTO app."Große ""Tabelle""" VALUES (k, -1, 'neu' || i)
                    ON CONFLICT (id) DO UPDATE SET a = -2;
      ELSE UPDATE app."Große ""Tabelle""" SET id = 300000 + i WHERE id = k;
    END CASE;
    UPDATE app.small SET v = v || '.' WHERE id = 1 + i % 50;
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
GRANT SELECT ON sluice.status TO bi;
});
my $big = '"Ziel ""Ä"""."Große ""Tabelle"""';
my $small = '"Ziel ""Ä"""."small"';
my $nokey = '"Ziel ""Ä"""."nokey"';
my @pairs = (['app."Große ""Tabelle"""', $big], ['app.small', $small], ['app.nokey', $nokey]);

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

# --- 1. chunked refuses a keyless table, before anything is created ---
my ($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl; SET pg_sluice.initial_copy = chunked;
SELECT sluice.create_pipeline('kopie', 'live', ARRAY['app."Große ""Tabelle"""', 'app.nokey'], target_schema => 'Ziel "Ä"')});
like($err, qr/table "app.nokey" on source "live" has no primary key: it cannot be copied in chunks.*HINT:  SET pg_sluice.initial_copy = auto/s,
	'chunked: a keyless table refused with a hint');
is($live->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots}), '0', 'no slot left behind');
is($live->safe_psql('postgres', q{SELECT count(*) FROM pg_publication}), '0', 'no publication left behind');
is($mart->safe_psql('postgres', q{SELECT FROM sluice.version(); SHOW pg_sluice.initial_copy}), 'auto',
	'auto by default: chunks above pg_sluice.initial_copy_chunked_above rows');
($ret, $out, $err) = $mart->psql('postgres', q{SELECT sluice.version(); SET pg_sluice.initial_copy = sometimes});
like($err, qr/invalid value for parameter "pg_sluice.initial_copy".*Available values: auto, snapshot, chunked/s,
	'the setting lists its values');

# --- 2. auto: the big table is created empty, the others copied at once ---
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl; SET pg_sluice.initial_copy = auto;
SET pg_sluice.initial_copy_chunked_above = 100000;
SET pg_sluice.initial_copy_chunk_rows = 10000;
SELECT kind, rows_inserted FROM sluice.create_pipeline('kopie', 'live',
  ARRAY['app."Große ""Tabelle"""', 'app.small', 'app.nokey'], target_schema => 'Ziel "Ä"')});
is($ret, 0, 'create_pipeline with a chunked table') or diag($err);
is($out, 'initial_copy|52', 'the small and keyless tables copied in the snapshot');
like($err, qr/NOTICE:  pipeline "kopie": 1 of 3 tables created empty, to be copied in chunks of 10000 rows.*HINT:  CALL sluice.copy_tables\('kopie'\)/s,
	'create_pipeline says how to copy the rest');
is($mart->safe_psql('postgres', "SELECT count(*) FROM $big"), '0', 'the big table is empty');
same_tables($live, $mart, [['app.small', $small], ['app.nokey', $nokey]], 'one-snapshot tables');
is($mart->safe_psql('postgres', q{SET ROLE ops;
SELECT kind || ':' || state || ':' || chunk_rows || ':' || chunks_done FROM sluice.copy_progress WHERE pipeline = 'kopie'}),
	'initial_copy:copying:10000:0', 'copy_progress shows the pending copy');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT copy FROM sluice.status WHERE pipeline = 'kopie'}),
	'copying 1 table: chunk 0/1, 0 rows', 'sluice.status shows it');
is($mart->safe_psql('postgres', q{SET ROLE bi; SELECT coalesce(copy, 'none') FROM sluice.status WHERE pipeline = 'kopie'}),
	'none', 'a reader who operates nothing sees no copy state');

# history cannot start under a chunked copy: a chunk replaces rows without
# recording the versions they supersede
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SELECT sluice.keep_history('kopie')});
like($err, qr/pipeline "kopie" is still copying table Ziel "Ä".Große "Tabelle" in chunks.*HINT:  CALL sluice.copy_tables\('kopie'\)/s,
	'keep_history refused until the copy has finished, with a hint');

# a refresh before any chunk: changes to keys not copied yet are skipped
$live->safe_psql('postgres', q{UPDATE app."Große ""Tabelle""" SET a = 99 WHERE id <= 5; UPDATE app.small SET v = 'x' WHERE id = 1;});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('kopie')});
is($mart->safe_psql('postgres', "SELECT count(*) FROM $big"), '0', 'a refresh before the chunks adds no row');
same_tables($live, $mart, [['app.small', $small]], 'the other tables go on');

# --- 3. the copy under write load, kill -9 of the datamart at about half ---
my $log_from = -s $live->logfile;
my $writer = $live->background_psql('postgres', on_error_stop => 1);
$writer->query_until(qr/started/, "\\echo started\nCALL app.write_load(6000);\n\\echo done\n");
my $bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSET ROLE ops;\nCALL sluice.copy_tables('kopie');\n");
ok($mart->poll_query_until('postgres', q{SELECT chunks_done >= 10 FROM sluice.copy_progress WHERE pipeline = 'kopie'}),
	'the copy reached half') or die "the copy did not reach 10 chunks";
like($mart->safe_psql('postgres', q{SET ROLE ops; SELECT copy FROM sluice.status WHERE pipeline = 'kopie'}),
	qr{^copying 1 table: chunk \d+/2\d, \d+ rows, \d+%}, 'sluice.status shows chunks, rows and percent');
my $seen = $mart->safe_psql('postgres', q{SELECT chunks_done FROM sluice.copy_progress WHERE pipeline = 'kopie'});
$mart->kill9;
$bg->quit;
ok(start_after_kill9($mart), 'datamart restarted after kill -9');
my ($after, $total, $rows_before) = split /:/, $mart->safe_psql('postgres',
	q{SELECT chunks_done || ':' || chunks_total || ':' || rows_copied FROM sluice.copy_progress WHERE pipeline = 'kopie'});
cmp_ok($after, '>=', $seen, "chunks committed before the kill survive ($after >= $seen of $total)");
cmp_ok($after, '<', $total, 'the kill came before the end');
# a chunk's range is found when it is claimed, its rows read in a later
# snapshot: the writes in between change its count a little
cmp_ok(abs($rows_before - $after * 10000), '<=', $after * 500, "rows committed: whole chunks only ($rows_before in $after chunks)");
$live->poll_query_until('postgres', q{SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = 'sluice_kopie'})
  or die "slot stayed busy";
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SET client_min_messages = notice; CALL sluice.copy_tables('kopie')});
is($ret, 0, 'copy resumed after kill -9') or diag($err);
like($err, qr/NOTICE:  pipeline "kopie": table "Ziel ""Ä"""."Große ""Tabelle""": \d+ of \d+ chunks/, 'progress notices');
$writer->query_until(qr/done/, "");
$writer->quit;
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('kopie')});

# work repeated: chunks read from live but never committed, in rows (each
# chunk's COPY as log_statement logs it, not the STATEMENT line of the error
# that cut one short)
my ($chunks, $rows) = split /:/, $mart->safe_psql('postgres',
	q{SELECT chunks_done || ':' || rows_copied FROM sluice.copy_progress WHERE pipeline = 'kopie' AND state = 'finished'});
my $attempts = () = slurp_file($live->logfile, $log_from) =~ /statement: COPY \(SELECT id, a, "Wert b" FROM app\./g;
my $repeated = ($attempts - $chunks) * 10000;
note("kill -9 at chunk $seen: $attempts chunks read from live for $chunks committed, "
	  . "about $repeated rows copied twice of $rows");
cmp_ok($attempts - $chunks, '<=', 1, 'at most the chunk in flight was copied again');
cmp_ok($repeated, '<=', 0.10 * $rows + 10000, "rows copied twice <= 10% + one chunk ($repeated of $rows)");
same_tables($live, $mart, \@pairs, 'after kill -9 of the datamart mid-copy, under write load');
is($mart->safe_psql('postgres', q{SELECT rows_missing FROM sluice._pipeline WHERE name = 'kopie'}), '0',
	'no update or delete found its row missing');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT coalesce(copy, 'none') FROM sluice.status WHERE pipeline = 'kopie'}),
	'none', 'sluice.status: no copy once finished');

# --- 4. the stream goes on after the copy ---
$live->safe_psql('postgres', q{CALL app.write_load(300)});
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('kopie')});
same_tables($live, $mart, \@pairs, 'refresh after the chunked copy');

is($mart->safe_psql('postgres', q{SET ROLE ops; SET client_min_messages = warning; SELECT sluice.keep_history('kopie') > 0}), 't',
	'keep_history once the copy has finished');

# --- 5. auto on a partitioned table: live's estimate sums its partitions ---
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl; SET pg_sluice.initial_copy = auto;
SET pg_sluice.initial_copy_chunked_above = 100000; SET pg_sluice.initial_copy_chunk_rows = 40000;
SELECT rows_inserted FROM sluice.create_pipeline('teile', 'live', ARRAY['app."Teile"', 'app.small'])});
is($out, '50', 'partitioned table over the threshold left to the chunks') or diag($err);
$live->safe_psql('postgres', q{UPDATE app."Teile" SET v = 'moved' WHERE id = 5; UPDATE app."Teile" SET id = 150000 WHERE id = 7;});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('teile')});
is($ret, 0, 'partitioned table copied in chunks') or diag($err);
is($mart->safe_psql('postgres', q{SELECT chunks_done || ':' || rows_copied FROM sluice.copy_progress WHERE pipeline = 'teile'}),
	'3:110000', 'three chunks of 40000 rows at most');
same_tables($live, $mart, [['app."Teile"', 'teile."Teile"'], ['app.small', 'teile.small']], 'partitioned table copied in chunks');

# --- 6. a continuous pipeline created with a chunked copy: the worker
#        streams with the frontier filter (nothing of the table before its
#        chunks), the chunks are copied while it streams under writes, and
#        it converges ---
$mart->safe_psql('postgres', q{SET ROLE etl; SET client_min_messages = warning;
SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 5000;
SELECT sluice.create_pipeline('fluss', 'live', ARRAY['app.strom']);});
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.start('fluss')}), 't', 'started with its copy pending');
$live->safe_psql('postgres', q{UPDATE app.strom SET v = -v WHERE id % 10 = 0; INSERT INTO app.strom VALUES (30000, 1);});
my $lsn = $live->safe_psql('postgres', q{SELECT pg_current_wal_lsn()});
ok($mart->poll_query_until('postgres', qq{SELECT applied_lsn >= '$lsn' FROM sluice.status WHERE pipeline = 'fluss'}),
	'the worker streamed past the writes');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM fluss.strom}), '0', 'nothing applied to keys no chunk has copied');
my $strom_writer = $live->background_psql('postgres', on_error_stop => 1);
$strom_writer->query_until(qr/started/, q{\echo started
DO $$ BEGIN FOR i IN 1 .. 400 LOOP
  UPDATE app.strom SET v = v + 1 WHERE id = 1 + (i * 4999) % 20000;
  DELETE FROM app.strom WHERE id = 1 + (i * 7001) % 20000;
  UPDATE app.strom SET id = 50000 + i WHERE id = 1 + (i * 3001) % 20000;
  COMMIT; END LOOP; END $$;
\echo written
});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; CALL sluice.copy_tables('fluss')});
is($ret, 0, 'chunks copied while the worker streams') or diag($err);
$strom_writer->query_until(qr/written/, '');
$strom_writer->quit;
$live->safe_psql('postgres', q{UPDATE app.strom SET v = v + 1 WHERE id % 3 = 0; INSERT INTO app.strom VALUES (40000, 4);});
wait_same_tables($live, $mart, [['app.strom', 'fluss.strom']], 'continuous pipeline after its chunked copy under writes');
ok($mart->poll_query_until('postgres', q{SELECT state = 'finished' FROM sluice.copy_progress WHERE pipeline = 'fluss'}),
	'the copy finishes once the stream passed its last watermark');
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.stop('fluss')});

# --- 7. snapshot: no table chunked, whatever its size ---
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl;
SET pg_sluice.initial_copy = snapshot; SET pg_sluice.initial_copy_chunked_above = 0;
SELECT kind || ':' || (rows_inserted > 190000) FROM sluice.create_pipeline('snap', 'live', ARRAY['app."Große ""Tabelle"""'])});
is($out, 'initial_copy:true', 'snapshot copies every row in create_pipeline') or diag($err);
unlike($err, qr/copied in chunks/, 'and says nothing of chunks');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.copy_progress WHERE pipeline = 'snap'}), '0', 'no chunked copy recorded');
same_tables($live, $mart, [['app."Große ""Tabelle"""', 'snap."Große ""Tabelle"""']], 'one-snapshot copy');

# a long one-snapshot copy says how far it is, every million rows
$live->safe_psql('postgres', q{CREATE TABLE app.gross (id int PRIMARY KEY, v int);
INSERT INTO app.gross SELECT g, g FROM generate_series(1, 1100000) g;});
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl; SET client_min_messages = notice;
SELECT rows_inserted FROM sluice.create_pipeline('gross', 'live', ARRAY['app.gross'])});
is($out, '1100000', 'a million-row table copied in the snapshot') or diag($err);
like($err, qr/NOTICE:  pipeline "gross": table 1 of 1, app.gross: 10\d{5} rows copied so far/,
	'with a progress notice past a million rows');
is(scalar(() = $err =~ /rows copied so far/g), 1, 'one notice per million rows');

done_testing();
