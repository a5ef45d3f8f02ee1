# README promises no other suite checked, each against real servers:
#  - workers run as the role that called sluice.start, also after a restart;
#  - sluice.purge_runs deletes old runs and keeps each pipeline's last success;
#  - pg_sluice.quarantine_alert_threshold: a run quarantining more rows than
#    it sends a quarantine event, one at or below it does not;
#  - pg_sluice.max_retained_wal: sluice.status flags the slot, the worker logs
#    one WARNING (not one per poll) and queues a slot_lag event;
#  - pg_terminate_backend and a fast shutdown in the middle of a refresh:
#    prompt, nothing left behind, the next refresh applies it exactly once;
#  - the notifier recovers: a receiver refusing connections, then timing out,
#    then answering 500, then 200 gets every event exactly once, with the
#    retries spaced by the documented doubling backoff.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $retry_base_ms = 300;

# --- HTTP receivers: one request per line in a log file ---
my $log = PostgreSQL::Test::Utils::tempdir() . '/requests.log';
my @receivers;
END { kill 'TERM', @receivers if @receivers; }

# Serve on $port (0: any); $answer->($path, $n) says what the n-th request
# on $path gets: an HTTP status, or 'hang' (read it, keep the connection open
# and never answer).
sub start_receiver
{
	my ($port, $answer) = @_;
	my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 16, ReuseAddr => 1)
	  or die "cannot listen: $!";
	$port = $server->sockport;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my %seen;
		my @held;
		$SIG{PIPE} = 'IGNORE';
		while (my $c = $server->accept)
		{
			my $line = <$c>;
			next unless defined $line;
			my ($method, $path) = split / /, $line;
			my %h;
			while (my $l = <$c>)
			{
				$l =~ s/\r?\n$//;
				last if $l eq '';
				my ($k, $v) = split /:\s*/, $l, 2;
				$h{lc $k} = $v;
			}
			my $body = '';
			read($c, $body, $h{'content-length'} // 0);
			my $n = ++$seen{$path};
			my $status = $answer->($path, $n);
			open(my $f, '>>', $log) or die;
			print $f encode_json({ path => $path, n => $n, status => $status, at => time, headers => \%h, body => $body }), "\n";
			close $f;
			if ($status eq 'hang') { push @held, $c; next; }
			print $c "HTTP/1.1 $status X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
			close $c;
		}
		exit 0;
	}
	close $server;
	push @receivers, $pid;
	return $port;
}

sub requests
{
	my ($path) = @_;
	return () unless -f $log;
	open(my $f, '<', $log) or die;
	my @r = grep { $_->{path} eq $path } map { decode_json($_) } <$f>;
	close $f;
	return @r;
}

my $sink = start_receiver(0, sub { 200 });

my $live = new_live('live', conf => "max_wal_size = 1GB\n");
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 16
pg_sluice.naptime = 50ms
pg_sluice.batch_time = 100ms
pg_sluice.http_retry_base = ${retry_base_ms}ms
pg_sluice.http_max_attempts = 10
pg_sluice.http_timeout = 1s
});
$live->safe_psql('postgres', q{
CREATE TABLE public.w (id int PRIMARY KEY, v text);
CREATE TABLE public.big (id bigint PRIMARY KEY, v text, n numeric);
CREATE TABLE public.q (id int PRIMARY KEY, status text);
CREATE TABLE public.filler (id bigint, pad text);
INSERT INTO public.w SELECT g, 'v' || g FROM generate_series(1, 100) g;
INSERT INTO public.big SELECT g, 'b' || g, g FROM generate_series(1, 1000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', qq{
SELECT sluice.create_webhook('sink', 'http://127.0.0.1:$sink/sink', ARRAY['quarantine', 'slot_lag']);
SELECT sluice.create_pipeline('b', 'live', ARRAY['public.big']);
SELECT sluice.create_pipeline('q', 'live', ARRAY['public.q']);
});

# --- 1. workers run as the role that called sluice.start --------------------
# The README's team setup: etl owns the pipeline, alice (LOGIN) is a member
# and operates it.
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE alice LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO alice;
CREATE TABLE public.seen_by (who name, session_who name);
GRANT INSERT ON public.seen_by TO PUBLIC;
SET ROLE etl;
SELECT sluice.create_pipeline('w', 'live', ARRAY['public.w']);
CREATE FUNCTION w.note_who() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.seen_by VALUES (current_user, session_user); RETURN NEW; END $$;
CREATE TRIGGER note_who AFTER INSERT ON w.w FOR EACH ROW EXECUTE FUNCTION w.note_who();
ALTER TABLE w.w ENABLE ALWAYS TRIGGER note_who;
});
my $superuser = $mart->safe_psql('postgres', 'SELECT current_user');

sub worker_role
{
	my ($pipeline) = @_;
	return $mart->safe_psql('postgres',
		"SELECT a.usename FROM pg_stat_activity a JOIN sluice.status s ON s.worker_pid = a.pid WHERE s.pipeline = '$pipeline'");
}

# alice, without SET ROLE: the worker runs as alice
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.start('w')");
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'w'"),
	'the worker alice started runs');
is(worker_role('w'), 'alice', 'the worker runs as alice, the role that called sluice.start');
$live->safe_psql('postgres', "INSERT INTO public.w VALUES (101, 'by alice')");
wait_same_tables($live, $mart, [['public.w', 'w.w']], 'streamed for alice');
is($mart->safe_psql('postgres', "SELECT string_agg(DISTINCT who || '/' || session_who, ',') FROM public.seen_by"),
	'etl/alice', 'triggers run as the owner (etl) in a session of alice');
is($mart->safe_psql('postgres', "SELECT sluice.stop('w')"), 't', 'alice\'s worker stopped');

# the superuser starts etl's pipeline: the worker runs as the superuser
$mart->safe_psql('postgres', "SELECT sluice.start('w')");
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'w'"),
	'the worker the superuser started runs');
is(worker_role('w'), $superuser, 'the worker runs as the superuser who started it');
$mart->safe_psql('postgres', "SELECT sluice.stop('w')");

# etl itself (SET ROLE etl, as the README's example does for create_pipeline):
# a NOLOGIN role, so its worker could never connect (it used to die at once,
# in a loop, with sluice.status saying "starting"): refused up front
my ($rc_etl, $out_etl, $err_etl) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.start('w')");
like($err_etl, qr/role "etl" cannot log in, and the worker of pipeline "w" would run as it/,
	'a role that cannot log in cannot start a worker, and is told so');
like($err_etl, qr/HINT:  Start it as a role that can log in/, 'with the way out');
$mart->safe_psql('postgres', "SELECT sluice.stop('w')");
# alice again, for the restart checks below
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.start('w')");
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'w'"),
	'alice\'s worker runs again');

# --- 2. purge_runs ---------------------------------------------------------
$live->safe_psql('postgres', "INSERT INTO public.big SELECT g, 'b' || g, g FROM generate_series(1001, 1100) g");
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
$live->safe_psql('postgres', "UPDATE public.big SET v = 'u' WHERE id <= 10");
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
# a paused run after the last success: an expectation that fails
my $v_set = $mart->safe_psql('postgres', "SELECT sluice.expect_column_values_to_not_be_null('b.big', 'v')");
$live->safe_psql('postgres', "UPDATE public.big SET v = NULL WHERE id = 1");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('b')"), 'paused', 'an expectation pauses b');
my $runs_b = $mart->safe_psql('postgres',
	"SELECT string_agg(kind || ':' || status, ',' ORDER BY run_id) FROM sluice.runs WHERE pipeline = 'b'");
is($runs_b, 'initial_copy:succeeded,refresh:succeeded,refresh:succeeded,refresh:paused', 'runs of b before purging');
my $last_ok_b = $mart->safe_psql('postgres', "SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'b' AND status = 'succeeded'");
my $last_ok_q = $mart->safe_psql('postgres', "SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'q'");
my $paused_b = $mart->safe_psql('postgres', "SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'b' AND status = 'paused'");
# a divergence, counted in status: purge_runs never resets it
$mart->safe_psql('postgres', "DELETE FROM b.big WHERE id = 500");
$live->safe_psql('postgres', "UPDATE public.big SET v = 'gone here' WHERE id = 500");

is($mart->safe_psql('postgres', "SELECT sluice.purge_runs('1 hour')"), '0', 'purge_runs: nothing older than an hour');
# age every run of b and q by 40 days, but the paused one only by 10
$mart->safe_psql('postgres', q{
UPDATE sluice._run r SET started_at = started_at - interval '40 days', finished_at = finished_at - interval '40 days'
  FROM sluice._pipeline p WHERE p.pipeline_id = r.pipeline_id AND p.name IN ('b', 'q') AND r.status = 'succeeded';
UPDATE sluice._run r SET started_at = started_at - interval '10 days', finished_at = finished_at - interval '10 days'
  FROM sluice._pipeline p WHERE p.pipeline_id = r.pipeline_id AND p.name = 'b' AND r.status = 'paused';
});
is($mart->safe_psql('postgres', "SELECT sluice.purge_runs('30 days')"), '2',
	'purge_runs(30 days) deletes the two old runs of b that are not its last success');
is($mart->safe_psql('postgres', "SELECT string_agg(run_id || ':' || status, ',' ORDER BY run_id) FROM sluice.runs WHERE pipeline IN ('b', 'q')"),
	join(',', map { "$_->[0]:$_->[1]" } sort { $a->[0] <=> $b->[0] }
		 ([$last_ok_b, 'succeeded'], [$last_ok_q, 'succeeded'], [$paused_b, 'paused'])),
	'each pipeline keeps its last success (q: its initial copy), younger runs stay');
is($mart->safe_psql('postgres', "SELECT sluice.purge_runs('5 days')"), '1', 'purge_runs(5 days) deletes the paused run');
is($mart->safe_psql('postgres', "SELECT string_agg(run_id::text, ',' ORDER BY run_id) FROM sluice.runs WHERE pipeline IN ('b', 'q')"),
	join(',', sort { $a <=> $b } ($last_ok_b, $last_ok_q)), 'only the last successes are left');
is($mart->safe_psql('postgres', "SELECT last_run_id FROM sluice.status WHERE pipeline = 'b'"), $last_ok_b,
	'status still knows the last successful run');
# resume b: the next refresh applies the held changes, and the divergence is counted
$mart->safe_psql('postgres', "SELECT sluice.drop_expectation('b.big', '$v_set'); SELECT sluice.resume('b')");
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_updated FROM sluice.refresh('b')"), 'succeeded:1',
	'b resumes (the update of the missing row is skipped)');
is($mart->safe_psql('postgres', "SELECT rows_missing FROM sluice.status WHERE pipeline = 'b'"), '1', 'divergence counted');
$mart->safe_psql('postgres', q{UPDATE sluice._run SET finished_at = finished_at - interval '1 day'});
$live->safe_psql('postgres', "UPDATE public.big SET v = 'x' WHERE id = 2");
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
ok($mart->safe_psql('postgres', "SELECT sluice.purge_runs('1 hour')") > 0, 'purge_runs deletes the run that counted the divergence');
is($mart->safe_psql('postgres', "SELECT rows_missing FROM sluice.status WHERE pipeline = 'b'"), '1',
	'purge_runs never resets status.rows_missing');
$mart->safe_psql('postgres', "INSERT INTO b.big SELECT * FROM (VALUES (500::bigint, 'gone here', 500::numeric)) v");

# --- 3. quarantine_alert_threshold -----------------------------------------
$mart->safe_psql('postgres', "SELECT sluice.expect_column_values_to_be_in_set('q.q', 'status', ARRAY['ok'], severity => 'quarantine')");
sub quarantine_events
{
	return $mart->safe_psql('postgres',
		"SELECT coalesce(string_agg(body->>'rows', ',' ORDER BY event_id), '') FROM sluice.events WHERE pipeline = 'q' AND event = 'quarantine'");
}
sub quarantine_run
{
	my ($from, $bad, $threshold) = @_;
	$live->safe_psql('postgres',
		"INSERT INTO public.q SELECT g, CASE WHEN g < $from + $bad THEN 'bad' ELSE 'ok' END FROM generate_series($from, $from + 9) g");
	return $mart->safe_psql('postgres',
		(defined $threshold ? "SET pg_sluice.quarantine_alert_threshold = $threshold;\n" : '')
		  . "SELECT rows_inserted FROM sluice.refresh('q')");
}
is(quarantine_run(1, 3, 3), '7', '3 rows quarantined, 7 applied');
is(quarantine_events(), '', 'threshold 3: a run quarantining 3 rows sends no quarantine event');
is(quarantine_run(11, 4, 3), '6', '4 rows quarantined, 6 applied');
is(quarantine_events(), '4', 'threshold 3: a run quarantining 4 rows sends one, with rows = 4');
is(quarantine_run(21, 1), '9', '1 row quarantined');
is(quarantine_events(), '4,1', 'default threshold 0: any quarantined row sends one');
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM sluice.events WHERE pipeline = 'q' AND event = 'quarantine' AND status = 'sent'"),
	'the quarantine events are delivered');
is(scalar(grep { decode_json($_->{body})->{event} eq 'quarantine' } requests('/sink')), 2, 'the receiver got both');

# --- 4. max_retained_wal -----------------------------------------------------
# a transaction held open on live keeps the slots' restart_lsn back while
# live writes WAL elsewhere
is($mart->safe_psql('postgres', "SELECT retained_wal_warning FROM sluice.status WHERE pipeline = 'w'"), 'f',
	'no warning under the default 1GB');
$mart->append_conf('postgresql.conf', "pg_sluice.max_retained_wal = 2MB\n");
$mart->reload;
my $logpos = -s $mart->logfile;
my $holder = $live->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT txid_current();");
$live->safe_psql('postgres', "INSERT INTO public.filler SELECT g, repeat('x', 200) FROM generate_series(1, 40000) g");
$live->safe_psql('postgres', "INSERT INTO public.w VALUES (102, 'past the limit')");
ok($mart->poll_query_until('postgres',
	"SELECT retained_wal_warning AND retained_wal_bytes > 2 * 1024 * 1024 FROM sluice.status WHERE pipeline = 'w'"),
	'sluice.status flags the streaming pipeline\'s slot past max_retained_wal');
ok(eval { $mart->wait_for_log(qr/WARNING:  replication slot "sluice_w" keeps \d+ MB of WAL on source "live"/, $logpos) },
	'the worker logs a WARNING');
ok($mart->poll_query_until('postgres', "SELECT count(*) = 1 FROM sluice.events WHERE pipeline = 'w' AND event = 'slot_lag'"),
	'and queues a slot_lag event');
# more batches and polls while it lasts: no second WARNING within 5 minutes
for my $i (1 .. 5)
{
	$live->safe_psql('postgres', "INSERT INTO public.w VALUES (" . (110 + $i) . ", 'still lagging')");
	usleep(200_000);
}
wait_same_tables($live, $mart, [['public.w', 'w.w']], 'while the slot lags');
my $warnings = () = slurp_file($mart->logfile, $logpos) =~ /replication slot "sluice_w" keeps/g;
is($warnings, 1, 'one WARNING, not one per batch');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.events WHERE pipeline = 'w' AND event = 'slot_lag'"), '1',
	'one slot_lag event');
ok($mart->poll_query_until('postgres', "SELECT status = 'sent' FROM sluice.events WHERE pipeline = 'w' AND event = 'slot_lag'"),
	'the slot_lag event is delivered');
my ($lag) = grep { decode_json($_->{body})->{event} eq 'slot_lag' } requests('/sink');
ok($lag && decode_json($lag->{body})->{data}{slot} eq 'sluice_w' && decode_json($lag->{body})->{data}{retained_bytes} > 2 * 1024 * 1024,
	'the slot_lag event names the slot and the bytes it keeps');
# a scheduled pipeline is flagged from its last refresh
$live->safe_psql('postgres', "UPDATE public.big SET n = n + 1 WHERE id = 3");
$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
is($mart->safe_psql('postgres', "SELECT retained_wal_warning FROM sluice.status WHERE pipeline = 'b'"), 't',
	'a scheduled pipeline is flagged after its refresh');
# the transaction ends: the slots move on, the warnings clear
$holder->query_safe("COMMIT");
$holder->quit;
$live->safe_psql('postgres', "INSERT INTO public.w VALUES (120, 'released'); CHECKPOINT");
$live->safe_psql('postgres', "INSERT INTO public.w VALUES (121, 'released')");
ok($mart->poll_query_until('postgres', "SELECT NOT retained_wal_warning FROM sluice.status WHERE pipeline = 'w'"),
	'the streaming pipeline\'s warning clears once live releases the WAL');
my $cleared = 0;
for (1 .. 5)
{
	$live->safe_psql('postgres', "UPDATE public.big SET n = n + 1 WHERE id = 3");
	$mart->safe_psql('postgres', "SELECT sluice.refresh('b')");
	last if ($cleared = $mart->safe_psql('postgres', "SELECT NOT retained_wal_warning FROM sluice.status WHERE pipeline = 'b'") eq 't');
}
ok($cleared, 'and the scheduled one\'s after its next refreshes');

# --- 5. pg_terminate_backend and a fast shutdown in the middle of a refresh ---
my @pairs = (['public.big', 'b.big']);
sub slot_idle
{
	# (the decoding on live holds the slot while it runs)
	ok($live->poll_query_until('postgres',
		"SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = 'sluice_b'"),
		"$_[0]: the slot is released on live: no decoding left running there");
}
sub refresh_in_background
{
	my $size = $mart->safe_psql('postgres', "SELECT pg_relation_size('b.big')");
	my $bg = $mart->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/started/, "\\echo started\nSELECT 'refreshed', transactions FROM sluice.refresh('b');\n");
	ok($mart->poll_query_until('postgres', "SELECT pg_relation_size('b.big') > $size + 4 * 1024 * 1024"),
		'the refresh is applying rows');
	return $bg;
}
my $origin_q = "SELECT s.remote_lsn FROM pg_replication_origin_status s JOIN sluice._pipeline p ON s.external_id = p.origin_name WHERE p.name = 'b'";
my $rows_before = $mart->safe_psql('postgres', "SELECT count(*) FROM b.big");

$live->safe_psql('postgres', "INSERT INTO public.big SELECT g, 'big ' || g, g FROM generate_series(100001, 400000) g");
my $origin_before = $mart->safe_psql('postgres', $origin_q);
my $bg = refresh_in_background();
my $t0 = time;
is($mart->safe_psql('postgres',
	"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%sluice.refresh(''b'')%' AND pid <> pg_backend_pid()"),
	'1', 'pg_terminate_backend of the refreshing backend');
# read psql's stderr until the error arrives (a \q sent to a psql whose
# connection is gone can fail before the rest of its output is read)
ok(pump_until($bg->{run}, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default), \$bg->{stderr},
		qr/terminating connection due to administrator command/), 'terminate: the usual error')
  or diag("stderr: $bg->{stderr}");
my $term_s = time - $t0;
eval { $bg->quit };	# psql exits non-zero after its backend is killed
unlike($bg->{stdout}, qr/refreshed/, 'terminate: the refresh did not complete');
ok($term_s < 5, sprintf('terminate is prompt (%.2f s)', $term_s));
slot_idle('after terminate');
is($mart->safe_psql('postgres', "SELECT count(*) FROM b.big"), $rows_before, 'terminate: nothing of the refresh is left');
is($mart->safe_psql('postgres', $origin_q), $origin_before, 'terminate: the origin did not move');
is($mart->safe_psql('postgres', "SELECT transactions || ':' || rows_inserted FROM sluice.refresh('b')"), '1:300000',
	'the next refresh applies the transaction once');
same_tables($live, $mart, \@pairs, 'after terminate');

$live->safe_psql('postgres', "INSERT INTO public.big SELECT g, 'big ' || g, g FROM generate_series(400001, 700000) g; "
	. "UPDATE public.big SET v = 'shut' WHERE id <= 100");
$rows_before = $mart->safe_psql('postgres', "SELECT count(*) FROM b.big");
$origin_before = $mart->safe_psql('postgres', $origin_q);
$bg = refresh_in_background();
$t0 = time;
$mart->stop('fast');
my $stop_s = time - $t0;
eval { $bg->quit; };	# its server is gone: psql may not take the \q
ok($stop_s < 10, sprintf('a fast shutdown in the middle of a refresh is prompt (%.2f s)', $stop_s));
unlike($bg->{stdout}, qr/refreshed/, 'shutdown: the refresh did not complete');
$mart->start;
slot_idle('after shutdown');
is($mart->safe_psql('postgres', "SELECT count(*) FROM b.big"), $rows_before, 'shutdown: nothing of the refresh is left');
is($mart->safe_psql('postgres', $origin_q), $origin_before, 'shutdown: the origin did not move');
is($mart->safe_psql('postgres', "SELECT transactions || ':' || rows_inserted || ':' || rows_updated FROM sluice.refresh('b')"),
	'2:300000:100', 'the next refresh applies both transactions once');
same_tables($live, $mart, \@pairs, 'after shutdown');

# the restart kept alice's worker, as alice
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'w'"),
	'after the restart the worker runs again');
is(worker_role('w'), 'alice', 'still as alice');
$live->safe_psql('postgres', "INSERT INTO public.w VALUES (130, 'after restart')");
wait_same_tables($live, $mart, [['public.w', 'w.w']], 'after restart');

# --- 6. the notifier recovers after errors ------------------------------------
# A destination whose port refuses connections at first; then a receiver
# there that times out once, answers 500 once, then 200.
my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1) or die;
my $rec_port = $probe->sockport;
close $probe;
$mart->safe_psql('postgres', "SELECT sluice.create_webhook('rec', 'http://127.0.0.1:$rec_port/rec', ARRAY['refresh_completed'])");
my @ids;
for my $i (1 .. 3)
{
	$live->safe_psql('postgres', "UPDATE public.big SET n = -$i WHERE id = $i");
	push @ids, $mart->safe_psql('postgres', "SELECT run_id FROM sluice.refresh('b')");
}
ok($mart->poll_query_until('postgres',
	"SELECT bool_and(attempts >= 2 AND status = 'pending' AND last_error IS NOT NULL) AND count(*) = 3 FROM sluice.events WHERE destination = 'rec'"),
	'while nothing listens, each event is tried, fails and stays pending');
start_receiver($rec_port, sub { my ($path, $n) = @_; $n == 1 ? 'hang' : $n == 2 ? 500 : 200 });
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM sluice.events WHERE destination = 'rec' AND status = 'sent'"),
	'once the receiver recovers, every event is delivered');
my @got = grep { $_->{status} eq '200' } requests('/rec');
is(join(',', sort map { decode_json($_->{body})->{data}{run_id} } @got), join(',', sort @ids),
	'each event delivered exactly once (one 200 per run)');
is(scalar(requests('/rec')), 5, 'the receiver saw a timeout, a 500 and three deliveries');
like($mart->safe_psql('postgres', "SELECT string_agg(DISTINCT coalesce(http_status::text, 'none') || ':' || (error IS NULL), ',' "
	. "ORDER BY coalesce(http_status::text, 'none') || ':' || (error IS NULL)) "
	. "FROM sluice._delivery JOIN sluice._outbox USING (event_id) WHERE destination = 'rec'"),
	qr/^200:true,500:false,none:false$/, 'refused, timed out and 500 attempts recorded with their errors; 200 without');
like($mart->safe_psql('postgres', "SELECT string_agg(error, ' | ') FROM sluice._delivery JOIN sluice._outbox USING (event_id) "
	. "WHERE destination = 'rec' AND http_status IS NULL"), qr/(?i:refused|connect).*(?i:timed out|timeout)|(?i:timed out|timeout).*(?i:refused|connect)/,
	'the errors say connection refused and timeout');
# backoff: attempt k+1 comes at least retry_base * 2^(k-1) after attempt k
my $gaps = $mart->safe_psql('postgres', qq{
SELECT string_agg(k || ':' || ms, ',' ORDER BY event_id, k) FROM (
  SELECT event_id, attempt - 1 AS k,
         round(extract(epoch FROM attempted_at - lag(attempted_at) OVER (PARTITION BY event_id ORDER BY attempt)) * 1000) AS ms
    FROM sluice._delivery JOIN sluice._outbox USING (event_id) WHERE destination = 'rec') g
 WHERE ms IS NOT NULL});
my @short = grep { my ($k, $ms) = split /:/; $ms < 0.95 * $retry_base_ms * 2**($k - 1) } split /,/, $gaps;
is(scalar(@short), 0, "retries back off, doubling from $retry_base_ms ms (attempt:ms since the previous one: $gaps)");
my ($maxk) = sort { $b <=> $a } map { (split /:/)[0] } split /,/, $gaps;
ok($maxk >= 3, 'at least three retries of one event were observed');

done_testing();
