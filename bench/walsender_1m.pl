# bench/walsender_1m.pl -- the walsender transport next to a native
# subscription (streaming = on), both running at once on one live and one
# datamart: the peak private memory (RssAnon, sampled every 20 ms) of live's
# walsender of each while one transaction of MEM_ROWS (default 1,000,000)
# inserts is decoded and streamed, the time each takes to apply it after its
# commit on live, and the duration of the worker's batches for 100 single-row
# transactions (from sluice.runs).  Not a test suite (CI does not run it): run
# it through the TAP harness, as the pgsluice user, after make install:
#
#   make tapcheck PROVE_TESTS=bench/walsender_1m.pl PROVE_FLAGS=--verbose
#
# (on a shared box: /tmp/runtap.sh WORKTREE bench/walsender_1m.pl).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;
my $N = $ENV{MEM_ROWS} // 1000000;
my $live = new_live('live', conf => "shared_buffers = 256MB\nmax_wal_size = 4GB\n");
my $mart = new_mart('mart', conf => "shared_preload_libraries = 'pg_sluice'\nshared_buffers = 256MB\nmax_wal_size = 4GB\nmax_worker_processes = 16\n");
$live->safe_psql('postgres', q{CREATE TABLE t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);
CREATE PUBLICATION natpub FOR TABLE t;});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('p', 'live', ARRAY['public.t'])");
$mart->safe_psql('postgres', "CREATE DATABASE nat");
$mart->safe_psql('nat', "CREATE TABLE t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric)");
my $conn = $live->connstr('postgres');
$mart->safe_psql('nat', "CREATE SUBSCRIPTION natsub CONNECTION \$\$$conn application_name=natsub\$\$ PUBLICATION natpub WITH (streaming = on)");
$mart->safe_psql('postgres', "SELECT sluice.start('p')");
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'p'"));
ok($live->poll_query_until('postgres', "SELECT count(*) = 2 FROM pg_stat_replication"));
my %pid;
for my $l (split /\n/, $live->safe_psql('postgres', "SELECT application_name, pid FROM pg_stat_replication"))
{
	my ($n, $p) = split /\|/, $l;
	$pid{$n eq 'natsub' ? 'native' : 'sluice'} = $p;
}
diag("walsenders: " . join(', ', map { "$_=$pid{$_}" } sort keys %pid));
sub rss { my ($p) = @_; open my $f, '<', "/proc/$p/status" or return 0; my $a = 0;
	while (<$f>) { $a = $1 if /^RssAnon:\s+(\d+)/; } return $a; }
my %peak = (native => 0, sluice => 0);
my $t0 = time;
$live->safe_psql('postgres', "INSERT INTO t SELECT g, g % 1000, md5(g::text), now(), g * 1.37 FROM generate_series(1, $N) g");
my $t1 = time;
my %done;
while (keys %done < 2 && time - $t1 < 600)
{
	for my $k (keys %pid) { my $a = rss($pid{$k}); $peak{$k} = $a if $a > $peak{$k}; }
	$done{sluice} //= time if $mart->safe_psql('postgres', "SELECT count(*) FROM p.t") == $N;
	$done{native} //= time if $mart->safe_psql('nat', "SELECT count(*) FROM t") == $N;
	usleep(20_000);
}
diag(sprintf("%d-row transaction: live walsender peak RssAnon sluice %.1f MB, native %.1f MB",
	$N, $peak{sluice} / 1024, $peak{native} / 1024));
diag(sprintf("applied after the live commit: sluice %.2f s, native %.2f s (insert on live took %.2f s)",
	($done{sluice} // 0) - $t1, ($done{native} // 0) - $t1, $t1 - $t0));
diag("stream_txns: " . $live->safe_psql('postgres', "SELECT string_agg(slot_name || '=' || stream_txns || '/' || stream_bytes, ', ') FROM pg_stat_replication_slots"));
# per-batch time of small transactions, from the runs the worker records
my $r0 = $mart->safe_psql('postgres', "SELECT coalesce(max(run_id), 0) FROM sluice.runs");
for my $i (1 .. 100)
{
	$live->safe_psql('postgres', "INSERT INTO t VALUES (" . ($N + $i) . ", 1, 'x', now(), 1)");
	usleep(30_000);
}
ok($mart->poll_query_until('postgres', "SELECT count(*) = " . ($N + 100) . " FROM p.t"));
diag("small batches: " . $mart->safe_psql('postgres',
	"SELECT count(*) || ' runs, avg ' || round(avg(extract(epoch FROM finished_at - started_at)) * 1000, 2) || ' ms, p50 ' "
	. "|| round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000)::numeric, 2) || ' ms' "
	. "FROM sluice.runs WHERE run_id > $r0 AND kind = 'stream'"));
ok($done{sluice} && $done{native}, 'both applied the transaction');
done_testing();
