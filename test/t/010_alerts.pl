# Alerts and lineage over real HTTP: a receiver on loopback (this script)
# records what the notifier worker posts: signed webhooks, OpenLineage
# RunEvents with schema and data-quality facets, retries on 500, giving up
# on an unreachable endpoint without slowing the refresh, bad input.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Digest::SHA qw(hmac_sha256_hex);
use Time::HiRes qw(time usleep);
use SluiceTest;

# --- the receiver: one request per line in a log file ---
my $log = PostgreSQL::Test::Utils::tempdir() . '/requests.log';
my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
  or die "cannot listen: $!";
my $port = $server->sockport;
my $pid = fork();
die "fork: $!" unless defined $pid;
if ($pid == 0)
{
	my %seen;
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
		my $status = ($path eq '/flaky' && $n <= 2) ? 500 : 200;
		open(my $f, '>>', $log) or die;
		print $f encode_json({ path => $path, n => $n, status => $status, headers => \%h, body => $body }), "\n";
		close $f;
		print $c "HTTP/1.1 $status X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
		close $c;
	}
	exit 0;
}
END { kill 'TERM', $pid if $pid; }

sub requests
{
	my ($path) = @_;
	return () unless -f $log;
	open(my $f, '<', $log) or die;
	my @r = grep { $_->{path} eq $path } map { decode_json($_) } <$f>;
	close $f;
	return @r;
}
sub wait_requests
{
	my ($path, $n) = @_;
	my $t0 = time;
	while (scalar(requests($path)) < $n && time - $t0 < $PostgreSQL::Test::Utils::timeout_default) { usleep(50_000); }
	my @r = requests($path);
	cmp_ok(scalar(@r), '>=', $n, "at least $n requests received on $path");
	return @r;
}

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 16
pg_sluice.naptime = 50ms
pg_sluice.http_retry_base = 100ms
pg_sluice.http_max_attempts = 3
pg_sluice.http_timeout = 2s
});
$live->safe_psql('postgres', "CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 10) g");
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('a', 'live', ARRAY['public.t'])");
$mart->safe_psql('postgres', "SELECT sluice.expect_column_values_to_not_be_null('a.t', 'v', severity => 'warn')");

my ($ret, $out, $err);
# --- bad input: clear errors, nothing changed ---
my $base = "http://127.0.0.1:$port";
my @bad = (
	["SELECT sluice.create_webhook('w', 'ftp://127.0.0.1/x')", qr/unsupported URL scheme "ftp"/],
	["SELECT sluice.create_webhook('w', 'not a url')", qr/ERROR:  invalid URL\nDETAIL:  .*not repeated/],
	["SELECT sluice.create_webhook('w', '$base/ok', ARRAY['refresh_exploded'])", qr/unknown event "refresh_exploded"/],
	["SELECT sluice.create_webhook('w', '$base/ok', headers => jsonb_build_object('X-A', E'a\\r\\nX-Injected: 1'))", qr/invalid HTTP header "X-A"/],
	["SELECT sluice.create_webhook('w', '$base/ok', headers => '{\"Bad Name\": \"x\"}')", qr/invalid HTTP header "Bad Name"/],
	["SELECT sluice.create_webhook('w', '$base/ok', format => 'xml')", qr/unknown format "xml"/],
	["SELECT sluice.create_lineage_endpoint('w', '$base/ol', namespace => '')", qr/namespace must not be empty/],
);
foreach my $b (@bad)
{
	($ret, $out, $err) = $mart->psql('postgres', $b->[0]);
	like($err, $b->[1], "refused: $b->[0]");
}
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice._destination"), '0', 'nothing created by bad input');

# --- destinations ---
$mart->safe_psql('postgres', qq{
SELECT sluice.create_webhook('hook', '$base/ok', headers => '{"X-Team": "data"}', secret => 's3cr3t');
SELECT sluice.create_webhook('flaky', '$base/flaky', ARRAY['refresh_completed']);
SELECT sluice.create_webhook('slack', '$base/slack', ARRAY['pipeline_paused'], format => 'slack');
SELECT sluice.create_webhook('down', 'http://127.0.0.1:1/', ARRAY['refresh_completed']);
SELECT sluice.create_lineage_endpoint('ol', '$base/lineage', 'school', api_key => 'k3y');
});
is($mart->safe_psql('postgres', "SELECT string_agg(name || ':' || signed || ':' || coalesce(array_to_string(header_names, ','), ''), ' ' ORDER BY name) FROM sluice.destinations"),
	'down:false: flaky:false: hook:true:X-Team ol:true: slack:false:', 'destinations listed without secrets');
unlike($mart->safe_psql('postgres', "SELECT string_agg(d::text, ' ') FROM sluice.destinations d"), qr/s3cr3t|k3y/, 'no secret in the view');

# --- a refresh: events are queued in its transaction, delivered after ---
$live->safe_psql('postgres', "INSERT INTO public.t VALUES (11, 'eleven'), (12, NULL)");
my $t0 = time;
is($mart->safe_psql('postgres', "SELECT rows_inserted FROM sluice.refresh('a')"), '2', 'refresh');
my $refresh_s = time - $t0;
ok($refresh_s < 1.5, sprintf("the refresh does not wait for HTTP (%.3f s, one destination unreachable)", $refresh_s));

my @hook = wait_requests('/ok', 3);
my ($done) = grep { decode_json($_->{body})->{event} eq 'refresh_completed' } @hook;
ok($done, 'webhook received refresh_completed');
my $payload = decode_json($done->{body});
is($payload->{pipeline} . ':' . $payload->{data}{rows_inserted} . ':' . $payload->{data}{kind}, 'a:2:refresh', 'payload: pipeline and counts');
is($done->{headers}{'x-sluice-signature'}, 'sha256=' . hmac_sha256_hex($done->{body}, 's3cr3t'), 'HMAC-SHA256 signature of the body');
is($done->{headers}{'x-team'}, 'data', 'extra header sent');
ok((grep { decode_json($_->{body})->{event} eq 'expectation_failed' } @hook), 'expectation failures are announced');

my @ol = wait_requests('/lineage', 2);
my @ev = map { decode_json($_->{body}) } @ol;
my ($start) = grep { $_->{eventType} eq 'START' && $_->{run}{runId} } @ev;
my ($complete) = grep { $_->{eventType} eq 'COMPLETE' && $start && $_->{run}{runId} eq $start->{run}{runId} } @ev;
ok($start && $complete, 'OpenLineage START and COMPLETE of the same run');
is($complete->{job}{namespace} . ' ' . $complete->{job}{name}, 'school pg_sluice.a', 'job');
like($complete->{inputs}[0]{namespace}, qr{^postgres://}, 'input dataset namespace');
is($complete->{inputs}[0]{name} . ' -> ' . $complete->{outputs}[0]{name}, 'postgres.public.t -> postgres.a.t', 'live table in, datamart table out');
is(join(',', map { $_->{name} . ':' . $_->{type} } @{ $complete->{outputs}[0]{facets}{schema}{fields} }), 'id:integer,v:text',
	'schema facet from the contract');
is(join(',', map { $_->{assertion} . ':' . ($_->{success} ? 'true' : 'false') . ':' . $_->{column} } @{ $complete->{outputs}[0]{facets}{dataQualityAssertions}{assertions} }),
	'expect_column_values_to_not_be_null:false:v', 'data-quality assertions facet');
ok($complete->{eventTime} && $complete->{producer} && $complete->{schemaURL} =~ /RunEvent/, 'eventTime, producer, schemaURL');
is($ol[0]{headers}{authorization}, 'Bearer k3y', 'api key as a Bearer token');

# --- retries: 500 twice, then delivered ---
ok($mart->poll_query_until('postgres', "SELECT status FROM sluice.events WHERE destination = 'flaky'", 'sent'),
	'flaky delivered');
is($mart->safe_psql('postgres', "SELECT attempts || ':' || status FROM sluice.events WHERE destination = 'flaky'"), '3:sent', 'retried until delivered');
is($mart->safe_psql('postgres', "SELECT string_agg(coalesce(http_status::text, '-'), ',' ORDER BY attempt) FROM sluice._delivery JOIN sluice._outbox USING (event_id) WHERE destination = 'flaky'"),
	'500,500,200', 'every attempt recorded');

# --- unreachable: given up after the configured attempts, the reason visible ---
ok($mart->poll_query_until('postgres', "SELECT status FROM sluice.events WHERE destination = 'down'", 'failed'),
	'down given up');
like($mart->safe_psql('postgres', "SELECT attempts || ':' || last_error FROM sluice.events WHERE destination = 'down'"),
	qr/^3:.*(connect|Connection refused)/i, 'gave up after 3 attempts, saying why');

# --- a pause is announced, and survives the rollback of the paused batch ---
$live->safe_psql('postgres', "ALTER TABLE public.t ADD COLUMN extra int; INSERT INTO public.t VALUES (13, 'x', 1)");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('a')"), 'paused', 'drift pauses');
my @slack = wait_requests('/slack', 1);
like(decode_json($slack[0]{body})->{text}, qr/^\[pg_sluice\] a: pipeline_paused - paused: source table "public.t" drifted/, 'Slack text body');
my @drift;
for (1 .. 200)
{
	@drift = grep { decode_json($_->{body})->{event} eq 'contract_drift' } requests('/ok');
	last if @drift;
	usleep(100_000);
}
ok(@drift, 'contract drift announced');
my @fail;
for (1 .. 200)
{
	@fail = grep { $_->{eventType} eq 'FAIL' } map { decode_json($_->{body}) } requests('/lineage');
	last if @fail;
	usleep(100_000);
}
ok(@fail, 'OpenLineage FAIL for the paused run');

# a failed refresh (live down) is announced although it rolls back
$live->stop('fast');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.resume('a'); SELECT sluice.set_drift_policy('a.t', 'evolve'); SELECT sluice.refresh('a')");
like($err, qr/could not connect|connection/i, 'refresh fails with live down');
my @failed;
for (1 .. 200)
{
	@failed = grep { my $j = decode_json($_->{body}); $j->{event} eq 'refresh_failed' && !defined $j->{data}{run_id} } requests('/ok');
	last if @failed;
	usleep(100_000);
}
ok(@failed, 'its refresh_failed event survived the rollback and was delivered');
$live->start;

# after a datamart restart the notifier is back (resume worker)
$mart->restart;
my $seen = scalar(grep { decode_json($_->{body})->{event} eq 'refresh_completed' } requests('/ok'));
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('a')"), 'succeeded', 'refresh after restart');
my $now = $seen;
for (1 .. 300)
{
	$now = scalar(grep { decode_json($_->{body})->{event} eq 'refresh_completed' } requests('/ok'));
	last if $now > $seen;
	usleep(100_000);
}
ok($now > $seen, 'the notifier delivers again after a restart');

# dropping a destination drops its queue
$mart->safe_psql('postgres', "SELECT sluice.drop_destination('down')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.events WHERE destination = 'down'"), '0', 'drop_destination');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.drop_destination('down')");
like($err, qr/destination "down" does not exist/, 'unknown destination');

done_testing();
