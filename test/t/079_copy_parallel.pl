# Chunks copied by background copy workers (issue 19): create_pipeline with
# pg_sluice.initial_copy = chunked needs no CALL, the pipeline's
# pg_sluice.copy_workers (2) copy its ranges at once while live is written
# (updates, deletes, key changes across chunk boundaries), and
# sluice.copy_progress / sluice.copy_chunks show how far and who; a copy
# worker cancelled mid-chunk is started again and its range copied by the
# next one, and one killed with kill -9 comes back after the postmaster's
# crash restart; kill -9 of the datamart mid-copy, then CALL sluice.copy_tables
# resumes with at most one chunk per worker copied twice; a streaming
# pipeline gets a table with sluice.add_table under write load and the
# workers copy it while the pool worker streams.  A non-superuser operator,
# names with quotes, capitals, spaces and non-ASCII; live and mart compared
# by checksum.
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
restart_after_crash = on
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "Quelle Ü";
CREATE TABLE "Quelle Ü"."Menge ""M""" (id bigint PRIMARY KEY, a int NOT NULL, "Wert b" text);
INSERT INTO "Quelle Ü"."Menge ""M""" SELECT g, g % 13, 'w' || g FROM generate_series(1, 60000) g;
CREATE TABLE "Quelle Ü".strom (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO "Quelle Ü".strom SELECT g, g FROM generate_series(1, 1000) g;
CREATE TABLE "Quelle Ü"."Neu" (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO "Quelle Ü"."Neu" SELECT g, 'n' || g FROM generate_series(1, 30000) g;
VACUUM ANALYZE;
-- small transactions over the whole key range and beyond: updates, deletes,
-- inserts, keys moved across chunks and past the end
CREATE PROCEDURE "Quelle Ü".write_load(n int, tab regclass, top int) LANGUAGE plpgsql AS $$
DECLARE i int; k bigint;
BEGIN
  FOR i IN 1 .. n LOOP
    k := 1 + (i::bigint * 7919) % top;
    CASE i % 5
      WHEN 0 THEN EXECUTE format('UPDATE %s SET id = %s WHERE id = %s AND NOT EXISTS (SELECT FROM %s WHERE id = %s)',
                                 tab, top + i, k, tab, top + i);
      WHEN 1 THEN EXECUTE format('DELETE FROM %s WHERE id = %s', tab, k);
      WHEN 2 THEN EXECUTE format('UPDATE %s SET id = %s WHERE id = %s AND NOT EXISTS (SELECT FROM %s WHERE id = %s)',
                                 tab, (k + top / 2) % top + 1, k, tab, (k + top / 2) % top + 1);
      ELSE EXECUTE format('UPDATE %s SET id = id WHERE id = %s', tab, k);
    END CASE;
    COMMIT;
  END LOOP;
END $$;
});
mart_source($mart, $live, 'live');
$live->safe_psql('postgres', q{ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf();});

$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE ops LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO ops;
});
my $menge = '"Ziel Ö"."Menge ""M"""';
my $menge_live = '"Quelle Ü"."Menge ""M"""';

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
	my ($pipe) = @_;
	return $mart->safe_psql('postgres', qq{SET ROLE ops;
SELECT state || ':' || chunks_done FROM sluice.copy_progress WHERE pipeline = '$pipe'});
}

# --- 1. create_pipeline, no CALL: two workers copy while live is written ---
my $writer = $live->background_psql('postgres', on_error_stop => 1);
$writer->query_until(qr/started/, qq{\\echo started\nCALL "Quelle Ü".write_load(3000, '$menge_live', 60000);\n\\echo written\n});
my ($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE etl; SET client_min_messages = notice;
SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 5000;
SELECT sluice.create_pipeline('teil', 'live', ARRAY['"Quelle Ü"."Menge ""M"""'], target_schema => 'Ziel Ö')});
is($ret, 0, 'create_pipeline with a chunked copy') or diag($err);
like($err, qr/NOTICE:  pipeline "teil": 1 of 1 tables created empty, to be copied in chunks of 5000 rows by 2 background workers.*HINT:  sluice.copy_progress shows how far it is/s,
	'it says the workers copy and where to watch');
# in one statement: the copy may finish right after
ok($mart->poll_query_until('postgres', q{SELECT (SELECT count(DISTINCT worker_pid) >= 2 FROM sluice.copy_chunks WHERE pipeline = 'teil')
   AND (SELECT copy ~ '^copying 1 table: chunk \d+/\d+' FROM sluice.status WHERE pipeline = 'teil')}),
	'two workers copy chunks at once (sluice.copy_chunks), sluice.status shows the copy');
ok($mart->poll_query_until('postgres', q{SELECT state = 'finished' FROM sluice.copy_progress WHERE pipeline = 'teil'}),
	'the copy finished with no CALL (copy_progress polled)');
# the last worker marks the copy finished in its last transaction, then exits
ok($mart->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'pg_sluice copy worker'}),
	'the workers are gone');
$writer->query_until(qr/written/, '');
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('teil')});
same_tables($live, $mart, [[$menge_live, $menge]], 'two workers under writes');
is($mart->safe_psql('postgres', q{SELECT rows_missing FROM sluice._pipeline WHERE name = 'teil'}), '0',
	'no update or delete found its row missing');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._copy_range}), '0', 'no range left');

# --- 2. a copy worker cancelled mid-chunk: started again, its range copied ---
$mart->safe_psql('postgres', q{ALTER SYSTEM SET pg_sluice.copy_workers = 1; SELECT pg_reload_conf();});
$mart->safe_psql('postgres', qq{SET ROLE ops; SET pg_sluice.copy_workers = 1;
SELECT sluice.resnapshot('teil', '$menge', chunk_rows => 4000)});
ok($mart->poll_query_until('postgres', q{SELECT count(*) > 0 FROM sluice.copy_chunks WHERE pipeline = 'teil' AND state = 'copied'}),
	'the worker copies');
my $victim = $mart->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_sluice copy worker'});
ok($victim, "a copy worker runs ($victim)");
$mart->safe_psql('postgres', "SELECT pg_cancel_backend($victim)");
ok($mart->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_sluice copy worker' AND pid <> $victim}),
	'the postmaster started it again');
$live->safe_psql('postgres', qq{CALL "Quelle Ü".write_load(300, '$menge_live', 60000)});
ok($mart->poll_query_until('postgres', q{SELECT state = 'finished' FROM sluice.copy_progress WHERE pipeline = 'teil'}),
	'the copy finished after the cancel');
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('teil')});
same_tables($live, $mart, [[$menge_live, $menge]], 'after a cancelled copy worker');

# kill -9 of a copy worker: the postmaster restarts every backend, and the
# worker (a dynamic worker with a restart time) comes back and finishes
$mart->safe_psql('postgres', qq{SET ROLE ops; SET pg_sluice.copy_workers = 1;
SELECT sluice.resnapshot('teil', '$menge', chunk_rows => 4000)});
ok($mart->poll_query_until('postgres', q{SELECT count(*) > 0 FROM sluice.copy_chunks WHERE pipeline = 'teil' AND state = 'copied'}),
	'the worker copies again');
$victim = $mart->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_sluice copy worker'});
ok($victim, "a copy worker runs ($victim)");
kill 'KILL', $victim;
ok($mart->poll_query_until('postgres', q{SELECT state = 'finished' FROM sluice.copy_progress WHERE pipeline = 'teil'}),
	'the copy finished after kill -9 of its worker, with no CALL');
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('teil')});
same_tables($live, $mart, [[$menge_live, $menge]], 'after kill -9 of a copy worker');

# --- 3. kill -9 of the datamart mid-copy, two workers; CALL copy_tables resumes ---
$mart->safe_psql('postgres', q{ALTER SYSTEM RESET pg_sluice.copy_workers; SELECT pg_reload_conf();});
my $log_from = -s $live->logfile;
$mart->safe_psql('postgres', qq{SET ROLE ops; SELECT sluice.resnapshot('teil', '$menge', chunk_rows => 3000)});
$writer->query_until(qr/started/, qq{\\echo started\nCALL "Quelle Ü".write_load(2000, '$menge_live', 60000);\n\\echo written\n});
ok($mart->poll_query_until('postgres', q{SELECT chunks_done >= 8 FROM sluice.copy_progress WHERE pipeline = 'teil'}),
	'the copy reached about a third');
$mart->kill9;
ok(start_after_kill9($mart), 'datamart restarted after kill -9');
my ($seen, $total) = split /:/, $mart->safe_psql('postgres',
	q{SELECT chunks_done || ':' || chunks_total FROM sluice.copy_progress WHERE pipeline = 'teil'});
cmp_ok($seen, '<', $total, "the kill came before the end ($seen of $total)");
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE ops; SET client_min_messages = notice; CALL sluice.copy_tables('teil')});
is($ret, 0, 'copy_tables resumed the copy') or diag($err);
$writer->query_until(qr/written/, '');
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.refresh('teil')});
is(progress('teil') =~ s/:.*//r, 'finished', 'finished');
my $chunks = $mart->safe_psql('postgres', q{SELECT chunks_done FROM sluice.copy_progress WHERE pipeline = 'teil'});
my $attempts = () = slurp_file($live->logfile, $log_from) =~ /statement: COPY \(SELECT id, a, "Wert b" FROM "Quelle Ü"\./g;
note("kill -9 at chunk $seen: $attempts chunks read from live for $chunks committed");
cmp_ok($attempts - $chunks, '<=', 2, 'at most the chunk in flight of each worker was copied again');
same_tables($live, $mart, [[$menge_live, $menge]], 'after kill -9 of the datamart mid-copy, under writes');
is($mart->safe_psql('postgres', q{SELECT rows_missing FROM sluice._pipeline WHERE name = 'teil'}), '0',
	'still no update or delete found its row missing');

# --- 4. a streaming pipeline gets a table under write load ---
$mart->safe_psql('postgres', q{SET ROLE etl; SELECT sluice.create_pipeline('strom', 'live', ARRAY['"Quelle Ü".strom'], target_schema => 'Ziel Ö')});
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.start('strom')}), 't', 'streaming');
$writer->query_until(qr/started/, q{\echo started
CALL "Quelle Ü".write_load(3000, '"Quelle Ü"."Neu"', 30000);
\echo written
});
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.add_table('strom', '"Quelle Ü"."Neu"', chunk_rows => 3000)}),
	'"Ziel Ö"."Neu"', 'add_table while the pipeline streams');
$live->safe_psql('postgres', q{UPDATE "Quelle Ü".strom SET v = -v WHERE id % 10 = 0});
ok($mart->poll_query_until('postgres', q{SELECT count(*) > 0 FROM sluice.copy_chunks WHERE pipeline = 'strom'}),
	'the workers copy while the pool worker streams');
$writer->query_until(qr/written/, '');
$writer->quit;
wait_same_tables($live, $mart, [['"Quelle Ü"."Neu"', '"Ziel Ö"."Neu"'], ['"Quelle Ü".strom', '"Ziel Ö".strom']],
	'add_table under write load');
ok($mart->poll_query_until('postgres', q{SELECT state = 'finished' FROM sluice.copy_progress WHERE pipeline = 'strom'}),
	'the copy finishes once the stream passed its watermarks');
$mart->safe_psql('postgres', q{SET ROLE ops; SELECT sluice.stop('strom')});

done_testing();
