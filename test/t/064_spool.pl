# A paused pipeline never fills live's disk (issue 18): while it is paused
# its slot's changes are drained into the datamart's spool, so live's slot
# moves on; resume applies the spool first, exactly once, then the slot.
#  1. continuous: paused by an error expectation, live writes more than
#     1 GB of WAL; the slot keeps less than the spool limit throughout;
#     resume applies everything (checksums equal)
#  2. scheduled: sluice.drain, a kill -9 of the datamart right after the
#     drain committed (the slot not yet told): exactly once after restart
#  3. spool limit reached: a spool_full event once, the slot kept; resume
#     applies everything
#  4. the spool is no one's to read but the extension owner's
#  5. a continuous pipeline whose batches keep failing drains too
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
pg_sluice.naptime = 50ms
pg_sluice.spool_limit = 512MB
max_wal_size = 2GB
});

$live->safe_psql('postgres', q{
CREATE TABLE public."Ev ents" (id bigint PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
INSERT INTO public."Ev ents" (id, v) SELECT g, 'v' || g FROM generate_series(1, 1000) g;
CREATE TABLE public.s (id bigint PRIMARY KEY, v text);
CREATE TABLE public.churn (id bigint, pad text);
});
mart_source($mart, $live, 'live');
# events are queued for the destinations that want them (port 9 refuses)
$mart->safe_psql('postgres', "SELECT sluice.create_webhook('sink', 'http://127.0.0.1:9/sink', ARRAY['spool_full', 'slot_lag'])");
$mart->safe_psql('postgres', q{SELECT sluice.create_pipeline('c', 'live', ARRAY['public."Ev ents"'])});
$mart->safe_psql('postgres', q{SELECT sluice.create_pipeline('s', 'live', ARRAY['public.s'])});
my $nn = $mart->safe_psql('postgres', q{SELECT sluice.expect_column_values_to_not_be_null('c."Ev ents"', 'v')});
my @pairs = (['public."Ev ents"', 'c."Ev ents"']);

sub retained
{
	my ($slot) = @_;
	return $live->safe_psql('postgres',
		"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '$slot'");
}

# --- 1. continuous, paused, 1 GB of WAL on live --------------------------------
is($mart->safe_psql('postgres', "SELECT sluice.start('c')"), 't', 'start');
$live->safe_psql('postgres', q{UPDATE public."Ev ents" SET n = 1 WHERE id <= 10});
wait_same_tables($live, $mart, \@pairs, 'streaming');

# a NULL breaks the error expectation: the pipeline pauses
$live->safe_psql('postgres', q{INSERT INTO public."Ev ents" (id, v) VALUES (0, NULL)});
ok($mart->poll_query_until('postgres', "SELECT state = 'paused' FROM sluice.status WHERE pipeline = 'c'"),
	'an error expectation paused the pipeline');

# more than 1 GB of WAL, with changes of the pipeline's table in between
my $start_lsn = $live->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $max_retained = 0;
my $t0 = time;
for my $round (1 .. 11)
{
	$live->safe_psql('postgres', qq{
INSERT INTO public."Ev ents" (id, v) SELECT g, 'r$round-' || g FROM generate_series($round * 100000, $round * 100000 + 19999) g;
UPDATE public."Ev ents" SET n = n + 1, v = v || '+' WHERE id BETWEEN 1 AND 1000;
DELETE FROM public."Ev ents" WHERE id BETWEEN $round * 100000 AND $round * 100000 + 99;
});
	$live->safe_psql('postgres', q{INSERT INTO public.churn SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 100000) g; TRUNCATE public.churn});
	my $r = retained('sluice_c');
	note("round $round: the slot keeps " . int($r / 1048576) . " MB");
	# live logs its running transactions every 15 s, and a slot's
	# restart_lsn only moves past such a record: about 100 MB every 12 s
	usleep(11_000_000);
	$max_retained = $r if $r > $max_retained;
}
my $written = $live->safe_psql('postgres', "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start_lsn')::bigint");
note(sprintf('live wrote %.0f MB of WAL in %.1f s; the slot kept at most %.0f MB',
	$written / 1048576, time - $t0, $max_retained / 1048576));
cmp_ok($written, '>=', 1024 * 1024 * 1024, 'live wrote at least 1 GB of WAL while the pipeline was paused');
cmp_ok($max_retained, '<', 512 * 1024 * 1024, 'the slot kept less WAL than the spool limit throughout');
ok($live->poll_query_until('postgres',
	"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) < 16 * 1024 * 1024 FROM pg_replication_slots WHERE slot_name = 'sluice_c'"),
	'the slot follows live while the pipeline is paused');
is($mart->safe_psql('postgres', q{SELECT state FROM sluice.status WHERE pipeline = 'c'}), 'paused', 'still paused');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM c."Ev ents" WHERE id >= 100000}), '0', 'nothing applied while paused');
ok($mart->safe_psql('postgres', q{SELECT transactions >= 30 AND bytes > 0 AND NOT slot_lag AND spool_full_at IS NULL FROM sluice.spool WHERE pipeline = 'c'}) eq 't',
	'sluice.spool shows what was spooled');

# fix the cause, resume: the spool, then the slot
$mart->safe_psql('postgres', qq{SELECT sluice.drop_expectation('c."Ev ents"', '$nn')});
$mart->safe_psql('postgres', "SELECT sluice.resume('c')");
$live->safe_psql('postgres', q{UPDATE public."Ev ents" SET v = 'after resume' WHERE id = 5});
wait_same_tables($live, $mart, \@pairs, 'resumed: the spool and the slot applied');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._spool}), '0', 'the spool is empty once applied');
is($mart->safe_psql('postgres', q{SELECT transactions || ',' || bytes FROM sluice.spool WHERE pipeline = 'c'}), '0,0',
	'sluice.spool says so');
$mart->safe_psql('postgres', "SELECT sluice.stop('c')");

# --- 2. scheduled: drain, kill -9 before the slot is told, exactly once ---------
$live->safe_psql('postgres', q{INSERT INTO public.s SELECT g, 'a' || g FROM generate_series(1, 5000) g});
$mart->safe_psql('postgres', "SELECT sluice.refresh('s')");
my $bad = $mart->safe_psql('postgres', q{SELECT sluice.expect_row_to_satisfy('s.s', $$v <> 'bad'$$)});
$live->safe_psql('postgres', q{INSERT INTO public.s VALUES (0, 'bad')});
$mart->safe_psql('postgres', "SELECT sluice.refresh('s')");
is($mart->safe_psql('postgres', "SELECT state FROM sluice.status WHERE pipeline = 's'"), 'paused', 'pipeline s paused');
for my $i (1 .. 20)
{
	$live->safe_psql('postgres', qq{INSERT INTO public.s SELECT g, 'b' || g FROM generate_series($i * 10000, $i * 10000 + 999) g});
}
my $confirmed_before = $live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sluice_s'");
my $drain = $mart->safe_psql('postgres', "SELECT transactions || ',' || (bytes > 0) || ',' || spool_full FROM sluice.drain('s')");
is($drain, '21,true,false', 'sluice.drain spooled the 21 transactions the pause held back');
is($live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sluice_s'"),
	$confirmed_before, 'the slot is not told before the drain committed');
my ($vret, $vout, $verr) = $mart->psql('postgres', "SELECT * FROM sluice.verify('s')");
like($verr, qr/pipeline "s" is paused with changes it has not applied.*Its spool holds/s,
	'verify refuses a paused pipeline whose spool holds changes');
# the datamart dies with the spool committed and the slot not told yet
$mart->kill9;
my $started = 0;
for (1 .. 60)
{
	$mart->{_pid} = undef;
	if ($mart->start(fail_ok => 1)) { $started = 1; last; }
	sleep 1;
}
ok($started, 'datamart restarted after kill -9');
is($mart->safe_psql('postgres', q{SELECT count(DISTINCT commit_lsn) FROM sluice._spool}), '21', 'the spool survived the crash');
# the next drain tells the slot first, spools nothing twice
$live->safe_psql('postgres', q{INSERT INTO public.s VALUES (-1, 'after the crash')});
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.drain('s')"), '1', 'the next drain spools only the new transaction');
cmp_ok($live->safe_psql('postgres', "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '$confirmed_before') FROM pg_replication_slots WHERE slot_name = 'sluice_s'"),
	'>', 0, 'and told the slot what the first drain committed');
$live->safe_psql('postgres', q{DELETE FROM public.s WHERE id = 0});
$mart->safe_psql('postgres', "SELECT sluice.drop_expectation('s.s', '$bad')");
$mart->safe_psql('postgres', "SELECT sluice.resume('s')");
my $res = $mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('s')");
is($res, 'succeeded', 'the refresh after resume succeeds (no key applied twice)');
same_tables($live, $mart, [['public.s', 's.s']], 'exactly once after a crash between drain and slot advance');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._spool}), '0', 'the spool is empty');

# --- 3. the spool limit ----------------------------------------------------------
$mart->append_conf('postgresql.conf', "pg_sluice.spool_limit = 1MB\n");
$mart->reload;
$bad = $mart->safe_psql('postgres', q{SELECT sluice.expect_row_to_satisfy('s.s', $$v <> 'bad'$$)});
$live->safe_psql('postgres', q{INSERT INTO public.s VALUES (1000000, 'bad')});
$mart->safe_psql('postgres', "SELECT sluice.refresh('s')");
is($mart->safe_psql('postgres', "SELECT state FROM sluice.status WHERE pipeline = 's'"), 'paused', 'paused again');
for my $i (1 .. 6)
{
	$live->safe_psql('postgres', qq{INSERT INTO public.s SELECT g, repeat('x', 200) FROM generate_series(2000000 + $i * 10000, 2000000 + $i * 10000 + 999) g});
}
my $kept = $live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sluice_s'");
$drain = $mart->safe_psql('postgres', "SELECT transactions || ',' || (spool_bytes <= 1024 * 1024) || ',' || spool_full FROM sluice.drain('s')");
like($drain, qr/^[1-6],true,true$/, 'the drain stops at the spool limit, whole transactions only');
$mart->safe_psql('postgres', "SELECT sluice.drain('s')");
$mart->safe_psql('postgres', "SELECT sluice.drain('s')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.events WHERE pipeline = 's' AND event = 'spool_full'"), '1',
	'one spool_full event, however many drains meet the limit');
ok($mart->safe_psql('postgres', "SELECT spool_full_at IS NOT NULL FROM sluice.spool WHERE pipeline = 's'") eq 't',
	'sluice.spool shows it full');
my $behind = $live->safe_psql('postgres',
	"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) > 100000 FROM pg_replication_slots WHERE slot_name = 'sluice_s'");
is($behind, 't', 'past the limit, the slot keeps the rest on live (the old behaviour)');
$live->safe_psql('postgres', q{DELETE FROM public.s WHERE id = 1000000});
$mart->safe_psql('postgres', "SELECT sluice.drop_expectation('s.s', '$bad')");
$mart->safe_psql('postgres', "SELECT sluice.resume('s')");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('s')"), 'succeeded', 'resume and refresh');
same_tables($live, $mart, [['public.s', 's.s']], 'the spool and the rest from the slot');
is($mart->safe_psql('postgres', "SELECT spool_full_at IS NULL AND bytes = 0 FROM sluice.spool WHERE pipeline = 's'"), 't',
	'the spool is no longer full');

# --- 4. who may read the spool ---------------------------------------------------
$mart->safe_psql('postgres', q{
CREATE ROLE "Op érateur" LOGIN;
CREATE ROLE reader LOGIN;
SELECT sluice.grant_operator('"Op érateur"');
});
$live->safe_psql('postgres', q{INSERT INTO public.s VALUES (1000000, 'bad')});
$bad = $mart->safe_psql('postgres', q{SELECT sluice.expect_row_to_satisfy('s.s', $$v <> 'bad'$$)});
$mart->safe_psql('postgres', "SELECT sluice.refresh('s')");
$live->safe_psql('postgres', q{INSERT INTO public.s VALUES (3000000, 'secret value')});
$mart->safe_psql('postgres', "SELECT sluice.drain('s')");
my ($ret, $out, $err) = $mart->psql('postgres', 'SET ROLE reader; SELECT count(*) FROM sluice._spool');
like($err, qr/permission denied for table _spool/, 'a reader cannot read the spool');
($ret, $out, $err) = $mart->psql('postgres', 'SET ROLE "Op érateur"; SELECT count(*) FROM sluice._spool');
like($err, qr/permission denied for table _spool/, 'nor can an operator');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE "Op érateur"; SELECT sluice.drain('s')});
like($err, qr/permission denied to drain pipeline "s"/, 'an operator without the owner\'s privileges cannot drain it');
is($mart->safe_psql('postgres', q{SET ROLE "Op érateur"; SELECT count(*) FROM sluice.spool}), '0',
	'and sees no other role\'s pipeline in sluice.spool');
is($mart->safe_psql('postgres', q{SET ROLE reader; SELECT count(*) FROM sluice.spool}), '0', 'nor does a reader');

# --- 5. a worker whose batches keep failing drains too ---------------------------
$mart->safe_psql('postgres', q{
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.v = 'boom' THEN RAISE EXCEPTION 'boom'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER boom BEFORE INSERT ON c."Ev ents" FOR EACH ROW EXECUTE FUNCTION public.boom();
});
is($mart->safe_psql('postgres', "SELECT sluice.start('c')"), 't', 'start c again');
$live->safe_psql('postgres', q{INSERT INTO public."Ev ents" (id, v) VALUES (-5, 'boom')});
ok($mart->poll_query_until('postgres',
	"SELECT count(*) >= 3 FROM sluice.runs WHERE pipeline = 'c' AND status = 'failed' AND error LIKE '%boom%'"),
	'the worker fails again and again');
for my $i (1 .. 5)
{
	$live->safe_psql('postgres', qq{INSERT INTO public."Ev ents" (id, v) SELECT g, 'f' || g FROM generate_series(5000000 + $i * 1000, 5000000 + $i * 1000 + 99) g});
}
ok($mart->poll_query_until('postgres', q{SELECT transactions >= 6 FROM sluice.spool WHERE pipeline = 'c'}),
	'meanwhile it drains the slot into the spool');
ok($live->poll_query_until('postgres',
	"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) < 1024 * 1024 FROM pg_replication_slots WHERE slot_name = 'sluice_c'"),
	'and the slot follows live');
$mart->safe_psql('postgres', q{DROP TRIGGER boom ON c."Ev ents"});
wait_same_tables($live, $mart, \@pairs, 'the cause gone, the spool and the slot applied');
is($mart->safe_psql('postgres', q{SELECT transactions FROM sluice.spool WHERE pipeline = 'c'}), '0', 'the spool of c is empty');
$mart->safe_psql('postgres', "SELECT sluice.stop('c')");

done_testing();
