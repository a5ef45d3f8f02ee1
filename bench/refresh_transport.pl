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
my $live = new_live('live', conf => $conf);
my $mart = new_mart('mart', conf => $conf . ($ENV{DEBUG} ? "log_min_messages = debug1\n" : ""));
$live->safe_psql('postgres', q{CREATE SCHEMA bench;
CREATE TABLE bench.t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('ps', 'live', ARRAY['bench.t'], target_schema => 'ss')");
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('pw', 'live', ARRAY['bench.t'], target_schema => 'sw')");

sub gen { my ($lo, $hi) = @_; return "INSERT INTO bench.t SELECT g, (g % 100000)::int, md5(g::text), "
	. "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', round(g * 1.37, 2) FROM generate_series($lo, $hi) g"; }
sub timed_refresh
{
	my ($p, $tr) = @_;
	my $t = time;
	my $r = $mart->safe_psql('postgres', "SET pg_sluice.refresh_transport = $tr; "
		. "SELECT transactions || ' ' || (rows_inserted + rows_updated + rows_deleted) FROM sluice.refresh('$p')");
	return (time - $t, $r);
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
		my ($t, $r) = timed_refresh($p, $tr);
		ok($r =~ /^\d+ \d+$/ && $r !~ / 0$/, "$k $tr: applied ($r)");
		my ($t2, $r2) = timed_refresh($p, $tr);
		is($r2, '0 0', "$k $tr: the next refresh has nothing");
		$t{$tr} = [$t, $t2];
	}
	is(checksum($mart, 'ss.t'), checksum($live, 'bench.t'), "$k: sql copy equals live");
	is(checksum($mart, 'sw.t'), checksum($live, 'bench.t'), "$k: walsender copy equals live");
	diag(sprintf("%s %s (%s of WAL): refresh sql %.3f s, walsender %.3f s (sql/walsender %.2f); next refresh sql %.3f s, walsender %.3f s",
		$k, $label, $wal, $t{sql}[0], $t{walsender}[0], $t{sql}[0] / $t{walsender}[0], $t{sql}[1], $t{walsender}[1]));
}
done_testing();
