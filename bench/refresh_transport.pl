# bench/refresh_transport.pl -- sluice.refresh over the SQL decoding
# functions vs over the walsender (pg_sluice.refresh_transport), on the same
# backlogs, in the same run: two pipelines of the same table (one per
# transport), one backlog, each pipeline refreshed (order alternating), then
# the next (empty) refresh of each, timed: what moving the slot over the
# backlog costs the refresh after it.  Backlogs as run.sh's scenarios 2a-2d,
# TRANSPORT_ROWS rows (default 1,000,000): 2a one transaction inserting them,
# 2b 1000 transactions inserting as many, 2c one UPDATE of the 2a rows, 2d
# one DELETE of the 2b rows.  Every refresh is checked against live.  Not a
# test suite (CI does not run it): through the TAP harness, as the pgsluice
# user, after make install:
#
#   make tapcheck PROVE_TESTS=bench/refresh_transport.pl PROVE_FLAGS=--verbose
#
# (on a shared box: /tmp/rt.sh NAME WORKTREE bench/refresh_transport.pl).
# ONLY=2a|2b runs those backlogs only; TRANSPORT_TCP=1 has the datamart
# reach live over TCP on 127.0.0.1 (a source on another host talks TCP;
# by default the test clusters talk over a Unix socket).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $N = $ENV{TRANSPORT_ROWS} // 1000000;
my $T = 1000;
my $conf = "shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 1d\n";
my $live = new_live('live', conf => $conf . ($ENV{TRANSPORT_TCP} ? "listen_addresses = '127.0.0.1'\n" : ""));
my $mart = new_mart('mart', conf => $conf . ($ENV{DEBUG} ? "log_min_messages = debug1\n" : ""));
$live->safe_psql('postgres', q{CREATE SCHEMA bench;
CREATE TABLE bench.t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);});
if ($ENV{TRANSPORT_TCP})
{
	$live->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n");
	$live->reload;
	my $port = $live->port;
	$mart->safe_psql('postgres', "SELECT sluice.create_source('live', 'host=127.0.0.1 port=$port dbname=postgres')");
}
else
{
	mart_source($mart, $live, 'live');
}
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('ps', 'live', ARRAY['bench.t'], target_schema => 'ss')");
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('pw', 'live', ARRAY['bench.t'], target_schema => 'sw')");

sub gen { my ($lo, $hi) = @_; return "INSERT INTO bench.t SELECT g, (g % 100000)::int, md5(g::text), "
	. "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', round(g * 1.37, 2) FROM generate_series($lo, $hi) g"; }
# CPU seconds of the sessions of both servers that have ended: what their
# postmasters reaped (cutime + cstime): the refresh's backend, live's
# walsender or decoding backends.  Less at the mercy of other load on the
# machine than the wall clock.
sub reaped_cpu
{
	my $cpu = 0;
	for my $node ($live, $mart)
	{
		my @f = split / /, (slurp_file($node->data_dir . '/postmaster.pid') =~ /^(\d+)/ ? slurp_file("/proc/$1/stat") : '');
		$cpu += ($f[15] + $f[16]) / 100;
	}
	return $cpu;
}
sub timed_refresh
{
	my ($p, $tr) = @_;
	my $c = reaped_cpu();
	my $t = time;
	my $r = $mart->safe_psql('postgres', "SET pg_sluice.refresh_transport = $tr; "
		. "SELECT transactions || ' ' || (rows_inserted + rows_updated + rows_deleted) FROM sluice.refresh('$p')");
	$t = time - $t;
	# the walsender ends with the stream, just after the refresh's commit
	$live->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'walsender'")
		or die "a walsender stays";
	return ($t, $r, reaped_cpu() - $c);
}
my $per = $N / $T;
my @backlogs = (
	['2a', "1 txn x $N INSERT", gen(1, $N)],
	['2b', "$T txn x $per INSERT", "DO \$\$ BEGIN FOR i IN 0 .. $T - 1 LOOP "
		. gen("$N + 1 + i * $per", "$N + (i + 1) * $per") . "; COMMIT; END LOOP; END \$\$"],
	['2c', "UPDATE of $N rows", "UPDATE bench.t SET a = a + 1, b = md5(b) WHERE id <= $N"],
	['2d', "DELETE of $N rows", "DELETE FROM bench.t WHERE id > $N"]);
my $i = 0;
for my $b (@backlogs)
{
	my ($k, $label, $sql) = @$b;
	next if $ENV{ONLY} && $k !~ /^(?:$ENV{ONLY})$/;
	my $w0 = $live->safe_psql('postgres', "SELECT pg_current_wal_lsn()");
	$live->safe_psql('postgres', $sql);
	$live->safe_psql('postgres', "CHECKPOINT");
	$mart->safe_psql('postgres', "CHECKPOINT");
	my $wal = $live->safe_psql('postgres', "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$w0'))");
	my %t;
	my @order = $i++ % 2 ? (['pw', 'walsender'], ['ps', 'sql']) : (['ps', 'sql'], ['pw', 'walsender']);
	for my $o (@order)
	{
		my ($p, $tr) = @$o;
		my ($t, $r, $c) = timed_refresh($p, $tr);
		ok($r =~ /^\d+ \d+$/ && $r !~ / 0$/, "$k $tr: applied ($r)");
		# how far the slot's restart position stayed behind the refresh's end:
		# the WAL that moving the slot there decodes again (fast-forward)
		my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = '$p'");
		my $end = $mart->safe_psql('postgres', "SELECT end_lsn FROM sluice.runs WHERE pipeline = '$p' ORDER BY run_id DESC LIMIT 1");
		$t{"gap $tr"} = $live->safe_psql('postgres', "SELECT pg_size_pretty(pg_wal_lsn_diff('$end', restart_lsn)) "
			. "FROM pg_replication_slots WHERE slot_name = '$slot'");
		my ($t2, $r2, $c2) = timed_refresh($p, $tr);
		is($r2, '0 0', "$k $tr: the next refresh has nothing");
		$t{$tr} = [$t, $t2, $c, $c2];
	}
	is(checksum($mart, 'ss.t'), checksum($live, 'bench.t'), "$k: sql copy equals live");
	is(checksum($mart, 'sw.t'), checksum($live, 'bench.t'), "$k: walsender copy equals live");
	my $load = (split / /, slurp_file('/proc/loadavg'))[0];
	diag(sprintf("%s %s (%s of WAL, load %s): refresh sql %.3f s, walsender %.3f s (sql/walsender %.2f); next refresh sql %.3f s, walsender %.3f s; "
		. "CPU of the sessions, refresh + next: sql %.2f + %.2f s, walsender %.2f + %.2f s; "
		. "the slot's restart position after the refresh, behind its end: sql %s, walsender %s",
		$k, $label, $wal, $load, $t{sql}[0], $t{walsender}[0], $t{sql}[0] / $t{walsender}[0], $t{sql}[1], $t{walsender}[1],
		$t{sql}[2], $t{sql}[3], $t{walsender}[2], $t{walsender}[3], $t{'gap sql'}, $t{'gap walsender'}));
}
done_testing();
