# bench/spread_10m.pl -- where the time of a refresh after 1% of a big table
# was updated goes (issue 17: "1% of 10,000,000 rows updated: refresh >= 30x
# faster than the faster of pg_dump | psql and pg_dump -Fc | pg_restore").
# Table bench.big as in run.sh's scenario 7, SPREAD_ROWS rows (default
# 10,000,000), copied by sluice.create_pipeline.  Then RUNS rounds (default
# 2): one transaction on live updates 1% of the rows spread over every page
# (id % 100 = k: a, b, d), CHECKPOINT on both, and sluice.refresh, timed,
# with perf record (user space, -g) of the datamart backend running it and of
# live's backend decoding for it when PERF=1 (reports in tmp_check).  The
# datamart's WAL written by the refresh and the refresh's transport
# (pg_sluice.refresh_transport, from the comma-separated REFRESH_TRANSPORT
# taken in turn, default sql,walsender) and the refresh session's
# wal_compression (WAL_COMPRESSION, likewise, default off) are shown.
# Not a test suite (CI does not run it): run it through the TAP harness, as
# the pgsluice user, after make install:
#
#   make tapcheck PROVE_TESTS=bench/spread_10m.pl PROVE_FLAGS=--verbose
#
# (on a shared box: /tmp/rt.sh NAME WORKTREE bench/spread_10m.pl).  About
# 4 GB of disk at 10,000,000 rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $N = $ENV{SPREAD_ROWS} // 10000000;
my $RUNS = $ENV{RUNS} // 2;
my $PERF = $ENV{PERF} // 0;
my $conf = "shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 1d\n";
my ($live, $mart) = big_pipeline($conf, $N);
$mart->safe_psql('postgres', "SELECT * FROM sluice.refresh('b')");

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my @tr = split /,/, ($ENV{REFRESH_TRANSPORT} // 'sql,walsender');
for my $run (1 .. $RUNS)
{
	my $k = $run;
	my $tr = $tr[($run - 1) % @tr];
	my @wc = split /,/, ($ENV{WAL_COMPRESSION} // 'off');
	my $wc = $wc[($run - 1) % @wc];
	my $w0 = $live->safe_psql('postgres', "SELECT pg_current_wal_lsn()");
	my $t0 = time;
	$live->safe_psql('postgres', "UPDATE bench.big SET a = a + 1, b = md5(b), d = d + 1 WHERE id % 100 = $k");
	diag(sprintf("run %d: update on live %.2f s, %s of WAL", $run, time - $t0,
		$live->safe_psql('postgres', "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$w0'))")));
	$live->safe_psql('postgres', "CHECKPOINT");
	$mart->safe_psql('postgres', "CHECKPOINT");
	my $m0 = $mart->safe_psql('postgres', "SELECT pg_current_wal_lsn()");
	my $out = "$tmp/spread_$run.out";
	my $cmd = "PGAPPNAME=spreadref PGOPTIONS='-c pg_sluice.refresh_transport=$tr -c wal_compression=$wc' psql -XAtq -h " . $mart->host . " -p " . $mart->port
	  . " -d postgres -c 'SELECT pg_sleep(1)' -c \"SELECT transactions || ' ' || rows_updated FROM sluice.refresh('b')\" > $out 2>&1";
	my $pid = fork();
	if ($pid == 0) { exec('sh', '-c', $cmd); }
	my ($mpid, $lpid, @perf);
	for (1 .. 200)
	{
		$mpid = $mart->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE application_name = 'spreadref'");
		last if $mpid;
		usleep(10_000);
	}
	if ($PERF && $mpid)
	{
		my $p = fork();
		if ($p == 0) { exec('perf', 'record', '-q', '-e', 'cycles:u', '-g', '-F', '999', '-p', $mpid, '-o', "$tmp/perf_mart_$run.data"); }
		push @perf, $p;
	}
	my $started = 0;
	# the refresh starts after the sleep: time from its start
	for (1 .. 2000)
	{
		my $q = $mart->safe_psql('postgres', "SELECT query FROM pg_stat_activity WHERE pid = $mpid");
		if ($q =~ /sluice.refresh/) { $started = time; last; }
		usleep(1_000);
	}
	if ($PERF)
	{
		for (1 .. 500)
		{
			$lpid = $live->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('walsender', 'client backend') AND pid <> pg_backend_pid() AND (query ~* 'peek|replication' OR backend_type = 'walsender') LIMIT 1");
			last if $lpid;
			usleep(5_000);
		}
		if ($lpid)
		{
			my $p = fork();
			if ($p == 0) { exec('perf', 'record', '-q', '-e', 'cycles:u', '-g', '-F', '999', '-p', $lpid, '-o', "$tmp/perf_live_$run.data"); }
			push @perf, $p;
		}
	}
	# what the datamart backend waits for, sampled until the refresh ends
	my %wait;
	while (waitpid($pid, 1) == 0)
	{
		my $w = $mart->safe_psql('postgres', "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity WHERE pid = $mpid");
		$wait{$w}++ if $w;
		usleep(10_000);
	}
	my $t = time - $started;
	diag("run $run: datamart backend samples: " . join(', ', map { "$_=$wait{$_}" } sort { $wait{$b} <=> $wait{$a} } keys %wait));
	kill 'INT', @perf;
	waitpid($_, 0) for @perf;
	$? = 0;
	my $r = slurp_file($out) =~ s/\n$//r;
	like($r, qr/^1 \d+$/m, "run $run: one transaction refreshed");
	diag(sprintf("run %d: refresh (%s, wal_compression %s) %.2f s (%s); datamart WAL %s", $run, $tr, $wc, $t, $r,
		$mart->safe_psql('postgres', "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$m0'))")));
	$t0 = time;
	$mart->safe_psql('postgres', "SELECT * FROM sluice.refresh('b')");
	diag(sprintf("run %d: next refresh %.3f s", $run, time - $t0));
	is(checksum($mart, 'sb.big'), checksum($live, 'bench.big'), "run $run: equal") if $ENV{CHECK};
	$live->safe_psql('postgres', "VACUUM ANALYZE bench.big");
	$mart->safe_psql('postgres', "VACUUM ANALYZE sb.big");
}
done_testing();
