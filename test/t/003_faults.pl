# Faults between two real servers: the datamart killed with -9 in the middle
# of a 1,000,000-row source transaction, live restarted mid-refresh, cancel
# and statement_timeout mid-refresh, two concurrent refreshes.  After each,
# the next refresh makes the datamart equal to live: nothing lost, nothing
# applied twice.  Also measures the refreshing backend's peak memory.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $live = new_live('live', conf => "max_wal_size = 2GB\n");
my $mart = new_mart('mart', conf => "max_wal_size = 2GB\n");

$live->safe_psql('postgres', q{
CREATE TABLE public.big (id bigint PRIMARY KEY, v text, n numeric, t timestamptz);
CREATE TABLE public.small (id int PRIMARY KEY, v text);
INSERT INTO public.small SELECT g, 'v' || g FROM generate_series(1, 100) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('f', 'live', ARRAY['public.big', 'public.small'])");
my @pairs = (['public.big', 'f.big'], ['public.small', 'f.small']);

sub backlog
{
	my ($from, $n) = @_;
	$live->safe_psql('postgres',
		"INSERT INTO public.big SELECT g, 'value ' || g, g * 1.5, '2026-01-01'::timestamptz + g * interval '1 s' "
		. "FROM generate_series($from, $from + $n - 1) g");
}

sub slot_idle
{
	$live->poll_query_until('postgres',
		"SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = 'sluice_f'")
	  or die "slot stayed busy";
}

# Start a refresh in the background and return once it is applying rows
# (uncommitted rows already extend the target table's file).
sub refresh_in_background
{
	my ($min_bytes, $prefix) = @_;
	my $bg = $mart->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/started/, ($prefix // '') . "\\echo started\nSELECT 'refreshed', transactions FROM sluice.refresh('f');\n");
	$mart->poll_query_until('postgres', "SELECT pg_relation_size('f.big') > $min_bytes")
	  or die "refresh did not start applying";
	return $bg;
}

# --- 1. kill -9 the datamart in the middle of a 1,000,000-row transaction ---
backlog(1, 1_000_000);
my $size_before = $mart->safe_psql('postgres', "SELECT pg_relation_size('f.big')");
my $bg = refresh_in_background($size_before + 8 * 1024 * 1024);
$mart->kill9;
$bg->quit;
# the killed postmaster's children go away on their own; start when we can
my $started = 0;
for (1 .. 60)
{
	$mart->{_pid} = undef;    # a failed attempt read the stale postmaster.pid
	if ($mart->start(fail_ok => 1)) { $started = 1; last; }
	sleep 1;
}
ok($started, 'datamart restarted after kill -9');
is($mart->safe_psql('postgres', "SELECT count(*) FROM f.big"), '0', 'the interrupted refresh left nothing');
slot_idle();

# Measure the refreshing backend's peak RSS while it applies the same
# 1,000,000-row transaction again.
my ($ret, $out, $err) = $mart->psql('postgres', q{
SELECT pg_backend_pid() AS pid \gset
SELECT transactions, rows_inserted FROM sluice.refresh('f');
SELECT :pid;
});
is($ret, 0, 'refresh after the crash succeeds') or diag($err);
my ($summary, $pid) = split /\n/, $out;
is($summary, '1|1000000', 'the whole transaction is applied once');
same_tables($live, $mart, \@pairs, 'after kill -9');

# peak RSS of a fresh backend doing the same, read from /proc while it runs
backlog(1_000_001, 1_000_000);
slot_idle();
my $t0 = time;
$bg = $mart->background_psql('postgres', on_error_stop => 0);
my $bpid = $bg->query_safe("SELECT pg_backend_pid()");
$bg->query_until(qr/started/, "\\echo started\nSELECT transactions FROM sluice.refresh('f');\n\\echo done\n");
my ($hwm, $anon) = (0, 0);
my $finished = 0;
while (time - $t0 < $PostgreSQL::Test::Utils::timeout_default)
{
	open(my $fh, '<', "/proc/$bpid/status") or last;
	while (<$fh>)
	{
		$hwm = $1 if /^VmHWM:\s+(\d+)/;
		$anon = $1 if /^RssAnon:\s+(\d+)/ && $1 > $anon;
	}
	close $fh;
	$bg->{run}->pump_nb;
	if ($bg->{stdout} =~ /done/) { $finished = 1; last; }
	select(undef, undef, undef, 0.05);
}
ok($finished, 'the measured refresh finished in time');
my $secs = time - $t0;
$bg->quit;
# VmHWM counts the shared buffers the backend touched; RssAnon is its own memory.
diag(sprintf("refresh of one 1,000,000-row source transaction: %.1f s (%.0f rows/s), "
	. "backend peak RSS %d MB (private memory, sampled: %d MB)",
	$secs, 1_000_000 / $secs, $hwm / 1024, $anon / 1024));
ok($anon > 0 && $anon < 64 * 1024, "private memory bounded ($anon kB < 64 MB) for a 1,000,000-row transaction");
same_tables($live, $mart, \@pairs, 'after second million');

# --- 2. live restarted in the middle of a refresh ---
backlog(2_000_001, 300_000);
slot_idle();
$size_before = $mart->safe_psql('postgres', "SELECT pg_relation_size('f.big')");
$bg = refresh_in_background($size_before + 4 * 1024 * 1024);
$live->restart;
$bg->quit;
like($bg->{stderr}, qr/lost connection to source "live"|could not receive|server closed the connection|terminating connection/,
	'live restart: clear error') or diag($bg->{stderr});
unlike($bg->{stdout}, qr/refreshed/, 'the interrupted refresh did not complete');
slot_idle();
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('f')"), '1', 'next refresh applies it');
same_tables($live, $mart, \@pairs, 'after live restart');

# --- 3. pg_cancel_backend in the middle of a refresh ---
backlog(2_300_001, 300_000);
slot_idle();
$size_before = $mart->safe_psql('postgres', "SELECT pg_relation_size('f.big')");
$bg = refresh_in_background($size_before + 4 * 1024 * 1024);
$t0 = time;
$mart->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%sluice.refresh%' AND pid <> pg_backend_pid()");
$bg->quit;
my $cancel_secs = time - $t0;
like($bg->{stderr}, qr/canceling statement due to user request/, 'cancel: the refresh stops with the usual error');
ok($cancel_secs < 5, sprintf('cancel is prompt (%.2f s)', $cancel_secs));
slot_idle();
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('f')"), '1', 'next refresh after cancel');
same_tables($live, $mart, \@pairs, 'after cancel');

# --- 4. statement_timeout in the middle of a refresh ---
backlog(2_600_001, 300_000);
slot_idle();
($ret, $out, $err) = $mart->psql('postgres', "SET statement_timeout = '300ms'; SELECT sluice.refresh('f');");
isnt($ret, 0, 'statement_timeout interrupts the refresh');
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout: usual error');
slot_idle();
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('f')"), '1', 'next refresh after timeout');
same_tables($live, $mart, \@pairs, 'after statement_timeout');

# --- 5. two concurrent refreshes of one pipeline: the second waits, then applies nothing twice ---
$live->safe_psql('postgres', "UPDATE public.small SET v = 'concurrent' WHERE id <= 50; DELETE FROM public.small WHERE id > 90");
my $first = $mart->background_psql('postgres');
$first->query_safe("BEGIN");
is($first->query_safe("SELECT transactions FROM sluice.refresh('f')"), '2', 'first refresh applies the changes');
my $second = $mart->background_psql('postgres', on_error_stop => 0);
$second->query_until(qr/waiting/, "\\echo waiting\nSELECT 'second', transactions, rows_updated FROM sluice.refresh('f');\n");
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sluice.refresh%'"),
	'second refresh waits for the first');
$first->query_safe("COMMIT");
$first->quit;
$second->quit;
like($second->{stdout}, qr/second\|0\|0/, 'second refresh applies nothing twice');
same_tables($live, $mart, \@pairs, 'after concurrent refreshes');

# --- 6. refreshing two pipelines in one transaction is refused clearly ---
$live->safe_psql('postgres', "CREATE TABLE public.other (id int PRIMARY KEY)");
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('g', 'live', ARRAY['public.other'])");
($ret, $out, $err) = $mart->psql('postgres', "BEGIN; SELECT sluice.refresh('f'); SELECT sluice.refresh('g'); COMMIT;");
like($err, qr/cannot refresh two pipelines in one transaction/, 'two pipelines in one transaction refused');

is($mart->safe_psql('postgres', "SELECT count(*) FROM f.big"), '2900000', 'all rows arrived exactly once');
done_testing();
