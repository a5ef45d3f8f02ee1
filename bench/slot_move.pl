# bench/slot_move.pl -- what the refresh after a backlog pays for the slot.
# One live, one datamart, pipeline p of bench.t (as run.sh's table), the
# SQL refresh transport.  Each round inserts SLOT_ROWS rows (default
# 1,000,000) in one transaction on live, refreshes it, and times the next
# (empty) refresh in three cases:
#  - right behind: the next refresh starts as soon as the first returns;
#  - after the slot mover: 2 s later (the mover, started by the commit, has
#    advanced the slot; see slotwatch.c);
#  - the same, with a CHECKPOINT on live between the backlog's commit and
#    the refresh: live logs its running transactions there, as it does
#    every 15 s while it writes, so the slot's restart position can pass the
#    backlog (what a backlog older than 15 s at its refresh gets).
# Each case starts from a slot that caught up (a CHECKPOINT, empty
# refreshes).  Printed per case: the refresh, how far the slot's restart position is
# behind its confirmed one before the next refresh, the next refresh, and
# the same after it.  Not a test suite (CI does not run it): through the TAP
# harness, as the pgsluice user, after make install:
#
#   make tapcheck PROVE_TESTS=bench/slot_move.pl PROVE_FLAGS=--verbose
#
# (on a shared box: /tmp/rt.sh NAME WORKTREE bench/slot_move.pl).
# SLOT_ROUNDS (default 2) rounds; SLOT_SPLIT=1 keeps the two-part decoding
# (pg_sluice.split_decoding_min, off by default here).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $N = $ENV{SLOT_ROWS} // 1000000;
my $conf = "shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 1d\n";
my $live = new_live('live', conf => $conf);
my $mart = new_mart('mart', conf => $conf . "pg_sluice.refresh_transport = sql\n"
	. ($ENV{SLOT_SPLIT} ? "" : "pg_sluice.split_decoding_min = 0\n"));
$live->safe_psql('postgres', q{CREATE SCHEMA bench;
CREATE TABLE bench.t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('p', 'live', ARRAY['bench.t'])");
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = 'p'");

sub behind
{
	return $live->safe_psql('postgres',
		"SELECT pg_size_pretty(pg_wal_lsn_diff(confirmed_flush_lsn, restart_lsn)) FROM pg_replication_slots WHERE slot_name = '$slot'");
}

my $next = 1;
for my $round (1 .. ($ENV{SLOT_ROUNDS} // 2))
{
	for my $case ('right behind', 'after the slot mover', 'a checkpoint before the refresh, after the mover')
	{
		# each case starts from a slot that caught up: a checkpoint (live
		# logs its running transactions), then empty refreshes
		$live->safe_psql('postgres', "CHECKPOINT");
		$mart->safe_psql('postgres', "SELECT sluice.refresh('p')") for 1 .. 2;
		$live->safe_psql('postgres',
			"INSERT INTO bench.t SELECT g, g % 1000, md5(g::text), now(), g * 1.37 FROM generate_series($next, $next + $N - 1) g");
		$next += $N;
		$live->safe_psql('postgres', "CHECKPOINT") if $case =~ /checkpoint/;
		my $t0 = time;
		$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
		my $t1 = time;
		sleep 2 if $case =~ /mover/;
		my $before = behind();
		my $t2 = time;
		is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('p')"), '0', "$case: the next refresh is empty");
		my $t3 = time;
		diag(sprintf("round %d, %-48s refresh %.2f s; restart %s behind; next refresh %.3f s; then %s behind",
			$round, "$case:", $t1 - $t0, $before, $t3 - $t2, behind()));
		$live->safe_psql('postgres', "CHECKPOINT");
	}
}
is($mart->safe_psql('postgres', 'SELECT count(*) FROM p.t'), $next - 1, 'every row applied once');
done_testing();
