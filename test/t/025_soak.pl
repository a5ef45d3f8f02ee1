# Soak test (issue 15, Proof): pgbench's TPC-B-like load on live, a
# pipeline over its four tables (pgbench_history without a key, REPLICA
# IDENTITY FULL), a refresh every few seconds, and kill -9 of the datamart's
# postmaster at random moments, some in the middle of a refresh.  At the
# end every table equals live by checksum (nothing lost, nothing
# duplicated), and the origin's position never moved backwards, not even
# across a crash.
#
# SOAK_SECONDS sets how long pgbench runs (default 40, which keeps CI to
# about a minute), SOAK_RATE its transactions per second (default 400; 0:
# as fast as it can); SOAK_SEED makes the random moments reproducible.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $seconds = $ENV{SOAK_SECONDS} // 40;
my $rate = $ENV{SOAK_RATE} // 400;
my $seed = $ENV{SOAK_SEED} // time();
srand($seed);
note("soak: $seconds seconds, seed $seed");

my $live = new_live('live', conf => "max_connections = 40\n");
my $mart = new_mart('mart', conf => "restart_after_crash = on\n");

$live->command_ok([ 'pgbench', '-i', '-s', '1', '-q', '-h', $live->host, '-p', $live->port, 'postgres' ],
	'pgbench -i on live');
$live->safe_psql('postgres', "ALTER TABLE pgbench_history REPLICA IDENTITY FULL");
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('bench', 'live',
       ARRAY['public.pgbench_accounts', 'public.pgbench_branches', 'public.pgbench_tellers', 'public.pgbench_history'],
       target_schema => 'bench')});
my @pairs = map { [ "public.$_", "bench.$_" ] } qw(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history);
my $origin = $mart->safe_psql('postgres', "SELECT origin_name FROM sluice._pipeline WHERE name = 'bench'");

# the origin's position: it must never move backwards
my $last_lsn = '0/0';
my $backwards = 0;
sub check_origin
{
	my ($when) = @_;
	my $lsn = $mart->safe_psql('postgres',
		"SELECT coalesce(remote_lsn, '0/0') FROM pg_replication_origin_status WHERE external_id = '$origin'");
	$lsn = '0/0' if $lsn eq '';
	my $behind = $mart->safe_psql('postgres', "SELECT '$lsn'::pg_lsn < '$last_lsn'::pg_lsn");
	if ($behind eq 't')
	{
		diag("origin moved backwards $when: $last_lsn -> $lsn");
		$backwards++;
	}
	else
	{
		$last_lsn = $lsn;
	}
}

# a refresh, retried while live still holds the slot for a killed one
my $refreshes = 0;
sub refresh_ok
{
	for my $try (1 .. 120)
	{
		my ($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('bench')");
		if ($ret == 0 && $out eq 'succeeded')
		{
			$refreshes++;
			return 1;
		}
		die "refresh failed: $err" unless $err =~ /is in use on source|lost connection|could not connect/;
		usleep(250_000);
	}
	die "refresh kept failing";
}

# kill -9 of the postmaster, then start again once its children are gone
my $kills = 0;
my $killed_mid_refresh = 0;
sub crash_mart
{
	$mart->kill9;
	$kills++;
	for my $try (1 .. 100)
	{
		# a start refused while the dead postmaster's children still hold
		# its shared memory leaves the stale pid behind: forget it
		$mart->{_pid} = undef;
		return if $mart->start(fail_ok => 1);
		usleep(200_000);
	}
	die "the datamart did not start again after kill -9";
}

my ($bout, $berr) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-j', '1', '-T', $seconds, ($rate > 0 ? ('-R', $rate) : ()),
	  '-h', $live->host, '-p', $live->port, 'postgres' ],
	'>', \$bout, '2>', \$berr);
my $t0 = time();
my $round = 0;
while (time() - $t0 < $seconds)
{
	usleep(int(1_000_000 + rand(2_000_000)));	# a refresh every 1-3 s
	# every third round a crash in the middle of a refresh, every fifth
	# one between two, at random moments
	$round++;
	if ($round % 3 == 2)
	{
		# in the middle of a refresh
		my $h = IPC::Run::start(
			[ 'psql', '-XAtq', '-d', $mart->connstr('postgres'), '-c', "SELECT sluice.refresh('bench')" ],
			'>', \my $o, '2>', \my $e);
		usleep(int(100_000 + rand(900_000)));
		crash_mart();
		$h->finish;
		$killed_mid_refresh++;
		check_origin('after a crash in the middle of a refresh');
	}
	elsif ($round % 5 == 4)
	{
		crash_mart();
		check_origin('after a crash between refreshes');
	}
	else
	{
		refresh_ok();
		check_origin('after a refresh');
	}
}
$pgbench->finish;
my ($tx) = $bout =~ /number of transactions actually processed: (\d+)/;
$tx //= 0;
ok($tx > 0, "pgbench ran ($tx transactions)") or diag($berr);

refresh_ok();
check_origin('after the last refresh');
same_tables($live, $mart, \@pairs, 'after the soak');
is($backwards, 0, 'the origin never moved backwards');
is($mart->safe_psql('postgres', "SELECT count(*) FROM bench.pgbench_history"),
	$live->safe_psql('postgres', "SELECT count(*) FROM public.pgbench_history"),
	'history rows: none lost, none duplicated');
is($mart->safe_psql('postgres', "SELECT rows_missing FROM sluice.status WHERE pipeline = 'bench'"), '0',
	'no divergence was ever met');
diag(sprintf("soak figures: %d s of pgbench (rate %s), %d transactions on live, %d refreshes, %d kill -9 of the datamart "
	  . "(%d in the middle of a refresh), %s history rows, origin at %s, seed %d",
	$seconds, $rate > 0 ? "$rate tps" : 'unlimited', $tx, $refreshes, $kills, $killed_mid_refresh,
	$live->safe_psql('postgres', "SELECT count(*) FROM public.pgbench_history"), $last_lsn, $seed));

done_testing();
