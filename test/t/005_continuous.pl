# Continuous mode between two real servers: background workers stream
# pipelines, survive kill -9 of a worker, a live server that goes away and a
# datamart restart, stop promptly in the middle of a large batch, exclude
# sluice.refresh(), and keep 5 pipelines over 20 tables equal to live while
# pgbench writes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $live = new_live('live', conf => "max_wal_size = 2GB\nmax_connections = 50\n");
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 20
pg_sluice.naptime = 50ms
restart_after_crash = on
max_wal_size = 2GB
});

$live->safe_psql('postgres', q{
CREATE TABLE public.t (id bigint PRIMARY KEY, v text, at timestamptz DEFAULT clock_timestamp());
INSERT INTO public.t (id, v) SELECT g, 'v' || g FROM generate_series(1, 1000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('c', 'live', ARRAY['public.t'])");
my @pairs = (['public.t', 'c.t']);

sub worker_pid
{
	return $mart->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_sluice worker'");
}

sub wait_state
{
	my ($state) = @_;
	ok($mart->poll_query_until('postgres', "SELECT state FROM sluice.status WHERE pipeline = 'c'", $state),
		"pipeline c reaches state $state");
}

# --- start: a worker streams, refresh is refused, status says running ---
is($mart->safe_psql('postgres', "SELECT sluice.start('c')"), 't', 'start');
is($mart->safe_psql('postgres', "SELECT sluice.start('c')"), 'f', 'start again is a no-op');
wait_state('running');
$live->safe_psql('postgres', "INSERT INTO public.t (id, v) SELECT g, 'v' || g FROM generate_series(1001, 2000) g");
$live->safe_psql('postgres', "UPDATE public.t SET v = 'changed' WHERE id % 10 = 0; DELETE FROM public.t WHERE id % 7 = 0");
wait_same_tables($live, $mart, \@pairs, 'streamed');

my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('c')");
like($err, qr/pipeline "c" is streaming continuously/, 'refresh refused while streaming');
like($err, qr/sluice\.stop\('c'\)/, 'with a hint');

ok($mart->poll_query_until('postgres', "SELECT lag_bytes = 0 AND worker_pid IS NOT NULL AND mode = 'continuous' "
	. "AND last_error IS NULL AND NOT retained_wal_warning FROM sluice.status WHERE pipeline = 'c'"),
	'status shows a caught-up worker');
is($mart->safe_psql('postgres', "SELECT count(*) > 0 FROM sluice.runs WHERE pipeline = 'c' AND kind = 'stream' AND status = 'succeeded'"),
	't', 'streamed batches are recorded as runs');

# --- commit-to-visible lag under light load ---
my @lags;
my $lag_timeouts = 0;
for my $i (1 .. 20)
{
	my $id = 100000 + $i;
	my $t0 = time;
	$live->safe_psql('postgres', "INSERT INTO public.t (id, v) VALUES ($id, 'lag')");
	my $t1 = time;
	until ($mart->safe_psql('postgres', "SELECT count(*) FROM c.t WHERE id = $id") eq '1')
	{
		usleep(5_000);
		if (time - $t0 > 30) { $lag_timeouts++; last; }
	}
	push @lags, time - $t1;
}
@lags = sort { $a <=> $b } @lags;
my ($p50, $p99) = ($lags[9], $lags[-1]);
diag(sprintf("commit-to-visible lag over 20 single-row commits: p50 %.0f ms, max %.0f ms (naptime 50ms)", $p50 * 1000, $p99 * 1000));
is($lag_timeouts, 0, 'every single-row commit became visible (none waited 30 s in vain)');
ok($p50 < 1.0, 'changes visible within a second under light load');

# --- kill -9 the worker in the middle of a large batch: exactly once ---
$live->safe_psql('postgres', "INSERT INTO public.t (id, v) SELECT g, 'big ' || g FROM generate_series(200001, 700000) g");
ok($mart->poll_query_until('postgres', "SELECT pg_relation_size('c.t') > 8 * 1024 * 1024"),
	'the worker starts applying the large batch');
my $pid = worker_pid();
ok($pid, 'worker running mid-batch');
kill 'KILL', $pid;
# the postmaster resets shared memory; the launcher comes back and resumes
wait_same_tables($live, $mart, \@pairs, 'after kill -9 of the worker');
isnt(worker_pid(), $pid, 'a new worker took over');
wait_state('running');

# --- the live server goes away: retries with backoff, says why, catches up ---
my $last_run = $mart->safe_psql('postgres', "SELECT coalesce(max(run_id), 0) FROM sluice.runs WHERE pipeline = 'c'");
$live->stop('fast');
wait_state('error');
like($mart->safe_psql('postgres', "SELECT last_error FROM sluice.status WHERE pipeline = 'c'"),
	qr/could not connect|connection|server/i, 'status says why');
# README: a failing batch is retried after 1 s, 2 s, 4 s ... (each failure a
# 'failed' run): the gaps between the first four failures double
ok($mart->poll_query_until('postgres',
	"SELECT count(*) >= 4 FROM sluice.runs WHERE pipeline = 'c' AND status = 'failed' AND run_id > $last_run"),
	'four failed batches recorded while live is down');
my @fail_at = split /\n/, $mart->safe_psql('postgres',
	"SELECT extract(epoch FROM started_at) FROM sluice.runs WHERE pipeline = 'c' AND status = 'failed' "
	. "AND run_id > $last_run ORDER BY run_id LIMIT 4");
my @gaps = map { $fail_at[$_] - $fail_at[$_ - 1] } 1 .. 3;
for my $k (0 .. 2)
{
	my $want = 2**$k;
	ok($gaps[$k] >= 0.95 * $want && $gaps[$k] < $want + 3,
		sprintf('retry %d waits about %d s (%.2f s)', $k + 1, $want, $gaps[$k]));
}
$live->start;
$live->safe_psql('postgres', "INSERT INTO public.t (id, v) SELECT g, 'after outage' FROM generate_series(800001, 801000) g");
wait_same_tables($live, $mart, \@pairs, 'after the live outage');
wait_state('running');
is($mart->safe_psql('postgres', "SELECT last_error IS NULL FROM sluice.status WHERE pipeline = 'c'"), 't',
	'error cleared after recovery');

# --- restart the datamart: the pipeline resumes ---
$mart->restart;
$live->safe_psql('postgres', "INSERT INTO public.t (id, v) SELECT g, 'after restart' FROM generate_series(900001, 901000) g");
wait_same_tables($live, $mart, \@pairs, 'after a datamart restart');
wait_state('running');

# --- stop during a large batch: prompt, and nothing lost ---
$live->safe_psql('postgres', "INSERT INTO public.t (id, v) SELECT g, 'huge ' || g FROM generate_series(1000001, 2000000) g");
my $size = $mart->safe_psql('postgres', "SELECT pg_relation_size('c.t')");
ok($mart->poll_query_until('postgres', "SELECT pg_relation_size('c.t') > $size + 8 * 1024 * 1024"),
	'the worker starts applying the 1,000,000-row batch');
my $t0 = time;
is($mart->safe_psql('postgres', "SELECT sluice.stop('c')"), 't', 'stop');
my $stop_s = time - $t0;
diag(sprintf("sluice.stop during a 1,000,000-row batch returned in %.2f s", $stop_s));
ok($stop_s < 5, 'stop is prompt');
is(worker_pid(), '', 'no worker left');
is($mart->safe_psql('postgres', "SELECT mode || '/' || state FROM sluice.status WHERE pipeline = 'c'"),
	'scheduled/stopped', 'status after stop');
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('c')"), '1',
	'refresh applies the rolled back batch once');
same_tables($live, $mart, \@pairs, 'after stop and refresh');

# --- 5 pipelines over 20 tables while pgbench writes on live ---
my $ddl = '';
for my $i (1 .. 20)
{
	$ddl .= "CREATE TABLE public.w$i (id int PRIMARY KEY, a int, b text);\n"
	  . "INSERT INTO public.w$i SELECT g, g, md5(g::text) FROM generate_series(1, 2000) g;\n";
}
$live->safe_psql('postgres', $ddl);
my @wpairs;
for my $p (1 .. 5)
{
	my @tables = map { 'public.w' . (($p - 1) * 4 + $_) } 1 .. 4;
	my $arr = join(', ', map { "'$_'" } @tables);
	$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('w$p', 'live', ARRAY[$arr])");
	$mart->safe_psql('postgres', "SELECT sluice.start('w$p')");
	push @wpairs, map { my $t = $_; (my $n = $t) =~ s/^public\.//; [$t, "w$p.$n"] } @tables;
}
my $script = PostgreSQL::Test::Utils::tempdir() . '/writes.sql';
PostgreSQL::Test::Utils::append_to_file($script, q{
\set t random(1, 20)
\set id random(1, 4000)
INSERT INTO public.w:t (id, a, b) VALUES (:id, :id, 'new') ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a + 1, b = md5(random()::text);
\set t2 random(1, 20)
\set id2 random(1, 4000)
DELETE FROM public.w:t2 WHERE id = :id2;
BEGIN;
UPDATE public.w:t SET b = 'tx' WHERE id = :id2;
UPDATE public.w:t2 SET a = -a WHERE id = :id;
COMMIT;
});
$live->command_ok(
	[ 'pgbench', '-n', '-M', 'simple', '-c', '4', '-j', '2', '-T', '8', '-f', $script,
	  '-h', $live->host, '-p', $live->port, 'postgres' ],
	'pgbench drove writes on live');
my $changed = $live->safe_psql('postgres', "SELECT " . join(' + ',
	map { "(SELECT count(*) FROM public.w$_ WHERE b IS DISTINCT FROM md5(id::text) OR a <> id)" } 1 .. 20));
ok($changed > 5000, "pgbench changed the tables ($changed rows differ from the initial load)");
wait_same_tables($live, $mart, \@wpairs, 'under pgbench');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.status WHERE state = 'running'"), '5',
	'five workers running');
for my $p (1 .. 5)
{
	$mart->safe_psql('postgres', "SELECT sluice.stop('w$p')");
}

# --- drop a streaming pipeline: the worker goes first ---
$mart->safe_psql('postgres', "SELECT sluice.start('c')");
wait_state('running');
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('c')");
is(worker_pid(), '', 'dropping a streaming pipeline stops its worker');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_c'"), '0',
	'and drops its slot');

# --- bad input ---
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.start('nope')");
like($err, qr/pipeline "nope" does not exist/, 'start of an unknown pipeline');
($ret, $out, $err) = $mart->psql('postgres', "BEGIN; SELECT sluice.stop('w1'); COMMIT;");
like($err, qr/cannot run inside a transaction block/, 'stop refuses a transaction block');

done_testing();
