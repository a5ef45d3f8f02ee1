# A refresh applies everything committed on live before it started, at
# once, even when live has not flushed it yet: a transaction committed with
# synchronous_commit = off, whose WAL the WAL writer flushes whole pages at
# a time.  Before the fix, a refresh decoded up to live's flush position:
# it left that transaction for later and, when the flush position fell in
# the middle of a record, waited for the WAL writer (wal_writer_delay, 10 s
# here) to flush the rest.  The mark that replaced the flush position must
# not wait for live's synchronous standbys either.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $live = new_live('live', conf => "wal_writer_delay = 10s\n");
my $mart = new_mart('mart');

$live->safe_psql('postgres', "CREATE TABLE t (id int PRIMARY KEY, v text)");
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('p', 'live', ARRAY['public.t'], target_schema => 'm')");

for my $round (1 .. 3)
{
	my $lo = $round * 10000;
	$live->safe_psql('postgres', qq{
SET synchronous_commit = off;
INSERT INTO t SELECT g, repeat(md5(g::text), 3) FROM generate_series($lo, $lo + 2999) g;
});
	my $t0 = time();
	my $res = $mart->safe_psql('postgres', "SELECT transactions, rows_inserted FROM sluice.refresh('p')");
	my $elapsed = time() - $t0;
	is($res, '1|3000', "round $round: the asynchronously committed transaction is applied");
	cmp_ok($elapsed, '<', 5, "round $round: the refresh did not wait for the WAL writer");
}

# The mark's commit flushes locally and never waits for live's synchronous
# standbys (here one that does not exist: any commit with synchronous_commit
# = on would wait forever).
$live->safe_psql('postgres', "ALTER SYSTEM SET synchronous_standby_names = 'nobody'; SELECT pg_reload_conf();");
$live->safe_psql('postgres', q{
SET synchronous_commit = local;
INSERT INTO t SELECT g, 'with a synchronous standby configured' FROM generate_series(50000, 50099) g;
});
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT transactions, rows_inserted FROM sluice.refresh('p')", timeout => 30);
is($out, '1|100', 'a refresh does not wait for live\'s synchronous standbys');
$live->safe_psql('postgres', "ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf();");

# A source role that may not call pg_logical_emit_message: the refresh
# falls back to live's flush position (synchronous commits are all there).
$live->safe_psql('postgres', q{
CREATE ROLE sl_repl LOGIN REPLICATION;
REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC;
});
my $repl_conn = $live->connstr('postgres') . ' user=sl_repl';
$mart->safe_psql('postgres', "SELECT sluice.alter_source('live', \$\$$repl_conn\$\$)");
$live->safe_psql('postgres', "INSERT INTO t SELECT g, 'no mark' FROM generate_series(60000, 60009) g");
my $log_at = -s $live->logfile;
is($mart->safe_psql('postgres', "SELECT transactions, rows_inserted FROM sluice.refresh('p')"), '1|10',
	'without the right to write the mark, the refresh reads up to the flush position');
unlike(slurp_file($live->logfile, $log_at), qr/permission denied/, 'and says nothing in live\'s log');
same_tables($live, $mart, [['t', 'm.t']], 'after the refreshes');

# The mark is a transactional logical message that pgoutput leaves out: the
# next refresh sees no transaction.
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('p')"), '0', 'the marks are not transactions');

done_testing();
