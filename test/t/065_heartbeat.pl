# Heartbeats and slot_lag (issue 18):
#  1. a continuous pipeline whose table is quiet, on a live server busy with
#     a table outside its publication: the slot moves on, the WAL it keeps
#     stays bounded (without the heartbeat it kept all of it)
#  2. a scheduled pipeline's slot moves right at its refresh when nothing
#     of its tables changed, and right after its commit when it applied
#  3. slot_lag fires once when the WAL kept crosses
#     pg_sluice.max_retained_wal, again only after it went back under; for
#     scheduled pipelines too
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $live = new_live('live', conf => "max_wal_size = 4GB\n");
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 20
pg_sluice.naptime = 100ms
pg_sluice.heartbeat_interval = 1s
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "Quiet Ö";
CREATE TABLE "Quiet Ö"."Q" (id bigint PRIMARY KEY, v text);
INSERT INTO "Quiet Ö"."Q" SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE TABLE public.sched (id bigint PRIMARY KEY, v text);
CREATE TABLE public.busy (id bigint, pad text);
CREATE TABLE public.held (id bigint);
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_webhook('sink', 'http://127.0.0.1:9/sink', ARRAY['slot_lag'])");
$mart->safe_psql('postgres', q{SELECT sluice.create_pipeline('q', 'live', ARRAY['"Quiet Ö"."Q"'])});
$mart->safe_psql('postgres', q{SELECT sluice.create_pipeline('b', 'live', ARRAY['public.sched'])});

sub retained
{
	my ($slot) = @_;
	return $live->safe_psql('postgres',
		"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '$slot'");
}

sub confirmed_lag
{
	my ($slot) = @_;
	return $live->safe_psql('postgres',
		"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '$slot'");
}

sub busy_round
{
	# about 50 MB of WAL, none of it for pipeline q
	$live->safe_psql('postgres', q{INSERT INTO public.busy SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 50000) g; TRUNCATE public.busy});
}

# --- 1. a quiet continuous pipeline on a busy live -------------------------------
is($mart->safe_psql('postgres', "SELECT sluice.start('q')"), 't', 'start q');
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'q'"), 'q runs');
my $start_lsn = $live->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $max_retained = 0;
for my $round (1 .. 12)
{
	busy_round();
	my $r = retained('sluice_q');
	$max_retained = $r if $r > $max_retained;
	note("round $round: slot sluice_q keeps " . int($r / 1048576) . " MB");
	# live logs its running transactions every 15 s: a slot's restart_lsn
	# moves only past one
	usleep(4_000_000);
}
my $written = $live->safe_psql('postgres', "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn')::bigint");
note(sprintf('live wrote %.0f MB; the quiet slot kept at most %.0f MB', $written / 1048576, $max_retained / 1048576));
cmp_ok($written, '>', 550 * 1024 * 1024, 'live wrote more than 550 MB of WAL outside the publication');
cmp_ok($max_retained, '<', 400 * 1024 * 1024, 'the quiet pipeline\'s slot kept well under it throughout');
ok($live->poll_query_until('postgres',
	"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) < 1024 * 1024 FROM pg_replication_slots WHERE slot_name = 'sluice_q'"),
	'the quiet slot\'s confirmed position follows live');
$live->safe_psql('postgres', 'CHECKPOINT');
busy_round();
ok($live->poll_query_until('postgres',
	"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) < 64 * 1024 * 1024 FROM pg_replication_slots WHERE slot_name = 'sluice_q'"),
	'and its restart_lsn once live logged its running transactions');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = 'q' AND kind = 'stream'"), '0',
	'the heartbeats leave no run');
$live->safe_psql('postgres', q{UPDATE "Quiet Ö"."Q" SET v = 'changed' WHERE id = 7});
wait_same_tables($live, $mart, [['"Quiet Ö"."Q"', 'q."Q"']], 'the quiet pipeline still applies its changes');

# --- 2. a scheduled pipeline's slot moves at its refresh ---------------------------
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
busy_round();
my $before = confirmed_lag('sluice_b');
cmp_ok($before, '>', 40 * 1024 * 1024, 'live wrote past the scheduled pipeline\'s slot');
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
cmp_ok(confirmed_lag('sluice_b'), '<', 1024 * 1024, 'a refresh that had nothing to apply moved the slot at once');
# a refresh that applied something: its slot moves right after its commit
$live->safe_psql('postgres', "INSERT INTO public.sched VALUES (1, 'one')");
busy_round();
my $end = $mart->safe_psql('postgres', "SELECT end_lsn FROM sluice.refresh('b')");
ok($live->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'sluice_b'"),
	'the slot moves to the end of the run right after its commit, not at the next refresh');

# --- 3. slot_lag: once per crossing ----------------------------------------------------
$live->safe_psql('postgres', 'CHECKPOINT');
ok($live->poll_query_until('postgres',
	"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) < 16 * 1024 * 1024 FROM pg_replication_slots WHERE slot_name = 'sluice_q'"),
	'(the quiet slot keeps little before the limit is lowered)');
$mart->append_conf('postgresql.conf', "pg_sluice.max_retained_wal = 32MB\n");
$mart->reload;
# a transaction open on live that has written a change holds every logical
# slot's restart_lsn (decoding must be able to read it from its start); one
# that only took an xid does not, and the slots moved at the next
# running-transactions record (every 15 s): the crossing was a race
my $holder = $live->background_psql('postgres');
$holder->query_safe('BEGIN; INSERT INTO public.held VALUES (1);');
busy_round();
ok($mart->poll_query_until('postgres', "SELECT count(*) = 1 FROM sluice.events WHERE pipeline = 'q' AND event = 'slot_lag'"),
	'the continuous pipeline\'s slot crossed the limit: one slot_lag event');
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.events WHERE pipeline = 'b' AND event = 'slot_lag'"), '1',
	'the scheduled pipeline\'s refresh sends one too');
busy_round();
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
sleep 2;
is($mart->safe_psql('postgres', "SELECT string_agg(pipeline || '=' || n, ',' ORDER BY pipeline) FROM "
	. "(SELECT pipeline, count(*) AS n FROM sluice.events WHERE event = 'slot_lag' GROUP BY 1) e"), 'b=1,q=1',
	'no second event while the slots stay over the limit');
is($mart->safe_psql('postgres', "SELECT string_agg(pipeline || '=' || slot_lag, ',' ORDER BY pipeline) FROM sluice.spool"),
	'b=true,q=true', 'sluice.spool shows both over');
# the transaction ends: live releases the WAL, the state clears
$holder->query_safe('COMMIT');
$live->safe_psql('postgres', 'CHECKPOINT');
ok($mart->poll_query_until('postgres', "SELECT NOT slot_lag FROM sluice.spool WHERE pipeline = 'q'"),
	'the continuous pipeline went back under the limit');
my $cleared = 0;
for (1 .. 30)
{
	$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
	last if ($cleared = $mart->safe_psql('postgres', "SELECT NOT slot_lag FROM sluice.spool WHERE pipeline = 'b'") eq 't');
	$live->safe_psql('postgres', 'CHECKPOINT');
	sleep 1;
}
ok($cleared, 'and the scheduled one at a refresh');
# crossing again: a second event each
$holder->query_safe('BEGIN; INSERT INTO public.held VALUES (1);');
busy_round();
ok($mart->poll_query_until('postgres', "SELECT count(*) = 2 FROM sluice.events WHERE pipeline = 'q' AND event = 'slot_lag'"),
	'crossing again sends a second slot_lag event');
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.events WHERE pipeline = 'b' AND event = 'slot_lag'"), '2',
	'for the scheduled pipeline too');
$holder->query_safe('COMMIT');
$holder->quit;
my $logged = () = slurp_file($mart->logfile) =~ /WARNING:  replication slot "sluice_q" keeps \d+ MB of WAL on source "live"/g;
is($logged, 2, 'one WARNING per crossing');

done_testing();
