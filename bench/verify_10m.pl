# bench/verify_10m.pl -- sluice.verify of one big table next to pg_dump -t of
# it, both timed in the same run on the same two servers (issue 18's target:
# "verifying 10,000,000 rows takes no longer than a pg_dump of that table; a
# single differing row in 10,000,000 is found").  Table bench.big as in
# run.sh's scenario 7 (id bigint primary key, a int, b text, c timestamptz,
# d numeric) of VERIFY_ROWS rows (default 10,000,000), copied by
# sluice.create_pipeline, VACUUM ANALYZE and CHECKPOINT on both sides.  Then
# RUNS (default 3) rounds, order alternating: sluice.verify (equal: 0
# differences expected) and pg_dump -t bench.big > /dev/null.  Then one row
# is changed by hand in the datamart and RUNS more verifications must each
# find exactly that key.  Not a test suite (CI does not run it): run it
# through the TAP harness, as the pgsluice user, after make install:
#
#   make tapcheck PROVE_TESTS=bench/verify_10m.pl PROVE_FLAGS=--verbose
#
# (on a shared box: /tmp/rt.sh NAME WORKTREE bench/verify_10m.pl).  It needs
# about 4 GB of disk at 10,000,000 rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $N = $ENV{VERIFY_ROWS} // 10000000;
my $RUNS = $ENV{RUNS} // 3;
my $conf = "shared_buffers = 512MB\nmax_wal_size = 8GB\ncheckpoint_timeout = 30min\n";
my ($live, $mart) = big_pipeline($conf, $N);

# both timed the same way: one client process started by system(), its
# start and connection included
my $out = "$PostgreSQL::Test::Utils::tmp_check/verify_10m.out";
sub timed_verify
{
	my $t = time;
	my $ret = system("psql -XAtq -h " . $mart->host . " -p " . $mart->port . " -d postgres -c "
		. "\"SELECT rows_compared || '|' || differences || '|' || ranges || '|' || keys::text FROM sluice.verify('b')\" > $out");
	$t = time - $t;
	die "sluice.verify failed" if $ret != 0;
	return ($t, slurp_file($out) =~ s/\n$//r);
}
sub timed_dump
{
	my $t = time;
	my $ret = system("pg_dump -h " . $live->host . " -p " . $live->port . " -t bench.big postgres > /dev/null");
	$t = time - $t;
	die "pg_dump failed" if $ret != 0;
	return $t;
}
sub fmt { my @v = sort { $a <=> $b } @_; return sprintf("median %.2f s (%.2f-%.2f)", $v[int(@v / 2)], $v[0], $v[-1]); }
sub med { my @v = sort { $a <=> $b } @_; return $v[int(@v / 2)]; }

my (@ver, @dump, @ver1);
for my $run (1 .. $RUNS)
{
	my ($tv, $r, $td);
	if ($run % 2)
	{
		($tv, $r) = timed_verify();
		$td = timed_dump();
	}
	else
	{
		$td = timed_dump();
		($tv, $r) = timed_verify();
	}
	like($r, qr/^$N\|0\|/, "run $run: equal tables, no difference");
	push @ver, $tv;
	push @dump, $td;
	diag(sprintf("run %d: sluice.verify %.2f s, pg_dump -t %.2f s", $run, $tv, $td));
}

# one row changed by hand in the datamart, in the middle of the table
my $k = int($N / 2) + 7;
$mart->safe_psql('postgres', "UPDATE sb.big SET b = 'changed by hand' WHERE id = $k");
for my $run (1 .. $RUNS)
{
	my ($tv, $r) = timed_verify();
	like($r, qr/^$N\|1\|\d+\|\[\{"key": \{"id": "$k"\}, "kind": "different"\}\]$/, "run $run: the one changed row is found");
	push @ver1, $tv;
	diag(sprintf("run %d: sluice.verify with 1 row changed %.2f s (%s)", $run, $tv, $r =~ s/^[^|]*\|//r));
}
diag(sprintf("%d rows: sluice.verify equal %s; pg_dump -t > /dev/null %s; verify/pg_dump %.2f (medians); "
		. "verify with one row changed %s",
	$N, fmt(@ver), fmt(@dump), med(@ver) / med(@dump), fmt(@ver1)));
done_testing();
