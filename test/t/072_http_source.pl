# HTTP JSON sources: a pipeline pulling a real local REST API
# (test/perl/JsonApiServer.pm) into the datamart.  Pagination by Link
# header and by a cursor token in the body, a since-cursor, ETag/304, a 429
# with Retry-After and a 500 retried, a malformed page and a page of the
# wrong shape failing with the URL and the path and nothing applied (the
# cursor unchanged), a slow page past the timeout, a cancel mid-request,
# secrets never shown, drift on a new field, quarantine, and after each of
# several changes on the server the datamart equals the server's data.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use HTTP::Tiny;
use JSON::PP;
use SluiceTest;
use JsonApiServer;

my $token = 's3cr3t-t0ken';
my ($srv, $port) = JsonApiServer::start(token => $token);
END { kill 'TERM', $srv if $srv; }
my $http = HTTP::Tiny->new(keep_alive => 0);
my $json = JSON::PP->new->canonical(1);
my $ctl = "http://127.0.0.1:$port/control";
sub put_ctl
{
	my ($what, $v) = @_;
	my $r = $http->request('PUT', "$ctl/$what", { content => $json->encode($v) });
	die "control $what: $r->{status}" unless $r->{success};
}
sub server_log { return $json->decode($http->get("$ctl/log")->{content}); }
sub clear_log { $http->request('DELETE', "$ctl/log"); }

my %data = (
	students => [
		{ id => 1, name => 'Ada', grade => 90, updated_at => '2026-01-01T10:00:00Z' },
		{ id => 2, name => 'Bob', grade => 70, updated_at => '2026-01-01T11:00:00Z' },
		{ id => 3, name => 'Chloé', grade => 85, updated_at => '2026-01-01T12:00:00Z' },
		{ id => 4, name => "D'Arcy", grade => 60, updated_at => '2026-01-01T13:00:00Z' },
		{ id => 5, name => 'Eve', grade => 99, updated_at => '2026-01-01T14:00:00Z' },
	],
	courses => [
		{ code => 'ALG', title => 'Algebra' },
		{ code => 'BIO', title => 'Biology' },
		{ code => 'CHE', title => 'Chemistry' },
	]);
put_ctl('data', \%data);

my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.http_timeout = 3s
pg_sluice.http_retry_base = 100ms
pg_sluice.http_max_attempts = 3
});
$mart->safe_psql('postgres', q{
CREATE ROLE reader LOGIN;
});

# the secret is in the token and in a query parameter of the base URL
$mart->safe_psql('postgres', qq{
SELECT sluice.create_http_source('api', 'http://127.0.0.1:$port/?api_key=topsecret', bearer_token => '$token');
});
my $endpoints = q{[
 {"table": "Students", "path": "/api/students", "rows": "data", "key": ["id"],
  "columns": [{"name": "id", "path": "id", "type": "integer"},
              {"name": "name", "path": "name", "type": "text", "required": true},
              {"name": "grade", "path": "grade", "type": "integer"},
              {"name": "updated_at", "path": "updated_at", "type": "timestamptz"}],
  "cursor": {"kind": "since", "param": "since", "field": "updated_at"},
  "pagination": {"kind": "link"}},
 {"table": "courses", "path": "/api/courses", "rows": "items", "key": ["code"],
  "columns": [{"name": "code", "path": "code", "type": "text"},
              {"name": "title", "path": "title", "type": "text"}],
  "cursor": {"kind": "etag"},
  "pagination": {"kind": "cursor", "field": "next", "param": "cursor"}}]};
is($mart->safe_psql('postgres', qq{
SELECT rows_inserted FROM sluice.create_http_pipeline('web', 'api', '$endpoints', 'Web Mart')}),
	'8', 'the first pull inserts every row of both endpoints');

sub expected_students
{
	return join(',', map { "$_->{id}|$_->{name}|" . ($_->{grade} // '') }
		sort { $a->{id} <=> $b->{id} } @{ $data{students} });
}
sub mart_students
{
	my $filter = shift // 'true';
	return $mart->safe_psql('postgres', qq{
SELECT string_agg(id || '|' || name || '|' || coalesce(grade::text, ''), ',' ORDER BY id)
  FROM "Web Mart"."Students" WHERE $filter});
}
sub expected_courses { return join(',', map { "$_->{code}|$_->{title}" } sort { $a->{code} cmp $b->{code} } @{ $data{courses} }); }
sub mart_courses { return $mart->safe_psql('postgres', q{SELECT string_agg(code || '|' || title, ',' ORDER BY code) FROM "Web Mart".courses}); }
sub refresh { return $mart->safe_psql('postgres', "SELECT rows_inserted || '/' || rows_updated || '/' || status FROM sluice.refresh('web')"); }
sub cursor { return $mart->safe_psql('postgres', q{SELECT cursor_value FROM sluice.http_endpoints WHERE endpoint = 'Students'}); }

is(mart_students(), expected_students(), 'students equal the server (3 pages by Link header)');
is(mart_courses(), expected_courses(), 'courses equal the server (2 pages by body cursor)');
is(cursor(), '2026-01-01T14:00:00Z', 'the since-cursor is the highest updated_at');

# change 1: an update and an insert; only what changed is pulled
clear_log();
$data{students}[1] = { id => 2, name => 'Bob', grade => 75, updated_at => '2026-01-02T09:00:00Z' };
push @{ $data{students} }, { id => 6, name => 'Fay', grade => 50, updated_at => '2026-01-02T10:00:00Z' };
put_ctl('data', \%data);
is(refresh(), '1/1/succeeded', 'change 1: one insert, one update, nothing applied twice');
is(mart_students(), expected_students(), 'change 1: students equal the server');
my @log = @{ server_log() };
like($log[0]{uri}, qr/since=2026-01-01T14%3A00%3A00Z/i, 'the pull starts from the committed since-cursor');
is(refresh(), '0/0/succeeded', 'a refresh with nothing new on the server applies nothing');
my ($c304) = grep { $_->{uri} =~ m{/api/courses} } @log;
is($c304->{status}, 304, 'unchanged courses: If-None-Match answered 304');
like($mart->safe_psql('postgres', q{SELECT cursor_value FROM sluice.http_endpoints WHERE endpoint = 'courses'}),
	qr/^"[0-9a-f]{32}"$/, 'the ETag is the courses endpoint\'s cursor');
is(mart_courses(), expected_courses(), 'courses still equal the server');

# change 2: a course changes (new ETag), and a 429 then a 500 on the way
clear_log();
$data{courses}[1]{title} = 'Biology II';
push @{ $data{students} }, { id => 7, name => 'Gus', grade => 40, updated_at => '2026-01-03T10:00:00Z' };
put_ctl('data', \%data);
put_ctl('faults', [ { match => '/api/students', kind => '429', times => 1 },
					{ match => '/api/courses', kind => '500', times => 1 } ]);
my $t0 = time;
is(refresh(), '1/1/succeeded', 'change 2: applied once despite a 429 and a 500 (unchanged courses rewrite nothing)');
my $took = time - $t0;
cmp_ok($took, '>=', 1, sprintf('Retry-After: 1 was honoured (%.2f s)', $took));
is(join(',', map { $_->{status} } grep { $_->{uri} =~ m{/api/students} } @{ server_log() }), '429,200',
	'the 429 was retried');
is(join(',', map { $_->{status} } grep { $_->{uri} =~ m{/api/courses} } @{ server_log() }), '500,200,200',
	'the 500 was retried with backoff, then both pages');
is(mart_students(), expected_students(), 'change 2: students equal the server');
is(mart_courses(), expected_courses(), 'change 2: courses equal the server');

# change 3: a malformed second page fails the refresh; nothing applied, cursor kept
my $before = checksum($mart, '"Web Mart"."Students"');
my $cursor_before = cursor();
push @{ $data{students} }, { id => 8, name => 'Hal', grade => 30, updated_at => '2026-01-04T10:00:00Z' },
  { id => 9, name => 'Ivy', grade => 20, updated_at => '2026-01-04T11:00:00Z' },
  { id => 10, name => 'Jo', grade => 10, updated_at => '2026-01-04T12:00:00Z' };
$data{students}[0]{grade} = 91;
$data{students}[0]{updated_at} = '2026-01-04T09:00:00Z';
put_ctl('data', \%data);
put_ctl('faults', [ { match => 'offset=2', kind => 'malformed', times => 1 } ]);
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('web')");
isnt($ret, 0, 'a malformed page fails the refresh');
like($err, qr{the response from http://127\.0\.0\.1:$port/api/students\?(\w+=\*{8}&?){3} is not JSON},
	'the error names the URL, its query values masked');
unlike($err, qr/topsecret|\Q$token\E/, 'no secret in the error');
is(checksum($mart, '"Web Mart"."Students"'), $before, 'nothing of page 1 was applied');
is(cursor(), $cursor_before, 'the cursor did not move');

# a page larger than pg_sluice.http_max_page_size: refused, nothing applied
my $name0 = $data{students}[0]{name};
$data{students}[0]{name} = 'x' x 2000;
put_ctl('data', \%data);
($ret, $out, $err) = $mart->psql('postgres', "SET pg_sluice.http_max_page_size = '1kB'; SELECT sluice.refresh('web')");
like($err, qr{ERROR:  the page at http://127\.0\.0\.1:$port/api/students\S* is larger than pg_sluice\.http_max_page_size \(1 kB\).*HINT:  .*raise pg_sluice\.http_max_page_size}s,
	'a page over the size setting fails the refresh, naming the setting');
is(checksum($mart, '"Web Mart"."Students"'), $before, 'nothing was applied');
is(cursor(), $cursor_before, 'the cursor did not move');
$data{students}[0]{name} = $name0;
put_ctl('data', \%data);

# a page of the wrong shape: the offending path
put_ctl('faults', [ { match => '/api/students', kind => 'shape', times => 1 } ]);
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('web')");
like($err, qr/has the wrong shape: \$\.data is a string, an array of rows was expected/, 'wrong shape: the path');
is(cursor(), $cursor_before, 'the cursor did not move');

# a slow page past pg_sluice.http_timeout (3 s)
put_ctl('faults', [ { match => 'offset=2', kind => 'slow', times => 1 } ]);
$t0 = time;
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('web')");
$took = time - $t0;
like($err, qr/could not fetch .* timed out/i, 'a slow page fails with a timeout');
cmp_ok($took, '<', 15, sprintf('after the timeout (%.2f s)', $took));
is(checksum($mart, '"Web Mart"."Students"'), $before, 'nothing applied after the timeout');

# cancel mid-request: the wait ends at once, whatever the timeout
$mart->append_conf('postgresql.conf', "pg_sluice.http_timeout = 10min\n");
$mart->reload;
put_ctl('faults', [ { match => '/api/students', kind => 'slow', times => 1 } ]);
my $bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSELECT sluice.refresh('web');\n");
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT sluice.refresh%' AND wait_event = 'Extension'"),
	'the refresh waits on the slow endpoint');
$t0 = time;
$mart->safe_psql('postgres', "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT sluice.refresh%' AND pid <> pg_backend_pid()");
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE 'SELECT sluice.refresh%' AND state = 'active' AND pid <> pg_backend_pid()"),
	'the cancelled refresh ends');
$took = time - $t0;
cmp_ok($took, '<', 5, sprintf('pg_cancel_backend ends the HTTP wait at once (%.2f s, timeout 10 min)', $took));
$bg->quit;
$mart->append_conf('postgresql.conf', "pg_sluice.http_timeout = 3s\n");
$mart->reload;
is(cursor(), $cursor_before, 'the cursor did not move');

# the faults are gone: the same refresh applies it all, once
put_ctl('faults', []);
is(refresh(), '3/1/succeeded', 'change 3: three inserts and one update, once');
is(mart_students(), expected_students(), 'change 3: students equal the server');
is(cursor(), '2026-01-04T12:00:00Z', 'the cursor moved with the committed refresh');

# versions: every refresh from now on is a queryable version
$mart->safe_psql('postgres', "SELECT sluice.keep_history('web')");

# drift: a new field under freeze pauses; evolve adds it
push @{ $data{students} }, { id => 11, name => 'Kim', grade => 80, email => 'kim@example.org', updated_at => '2026-01-05T10:00:00Z' };
put_ctl('data', \%data);
like(refresh(), qr{/paused$}, 'a new JSON field pauses the pipeline (policy freeze)');
like($mart->safe_psql('postgres', "SELECT detail FROM sluice.drift_events ORDER BY detected_at DESC LIMIT 1"),
	qr/email/, 'the drift event names the new field');
$mart->safe_psql('postgres', q{SELECT sluice.set_drift_policy('"Web Mart"."Students"', 'evolve'); SELECT sluice.resume('web')});
is(refresh(), '1/0/succeeded', 'under evolve the row is applied');
is($mart->safe_psql('postgres', q{SELECT email FROM "Web Mart"."Students" WHERE id = 11}), 'kim@example.org',
	'the new field became a column');

# expectations and quarantine on HTTP rows
$mart->safe_psql('postgres', q{SELECT sluice.expect_column_values_to_be_between('"Web Mart"."Students"', 'grade', '0', '100', severity => 'quarantine')});
my $v_before = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'web'");
push @{ $data{students} }, { id => 12, name => 'Lou', grade => 150, updated_at => '2026-01-06T10:00:00Z' },
  { id => 13, name => 'Max', grade => 65, updated_at => '2026-01-06T11:00:00Z' };
put_ctl('data', \%data);
is(refresh(), '1/0/succeeded', 'the good row is applied');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.quarantine WHERE row_data->>'id' = '12' AND status = 'held'}), '1',
	'the row failing its expectation is held in quarantine');
my $v_after = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'web'");
is($mart->safe_psql('postgres', qq{SELECT string_agg(change || ' ' || (key->>'id'), ',') FROM sluice.diff('"Web Mart"."Students"', $v_before, $v_after)}),
	'added 13', 'the refresh is a version: diff shows the row it added');
is(mart_students('id <> 12'), join(',', map { "$_->{id}|$_->{name}|$_->{grade}" } grep { $_->{id} != 12 } sort { $a->{id} <=> $b->{id} } @{ $data{students} }),
	'the datamart equals the server but for the quarantined row');

# lineage: the run's event names the API and the endpoint, never a secret
$mart->safe_psql('postgres', "SELECT sluice.create_webhook('hook', 'http://127.0.0.1:$port/hook', ARRAY['refresh_completed'])");
$data{students}[2]{grade} = 86;
$data{students}[2]{updated_at} = '2026-01-07T10:00:00Z';
put_ctl('data', \%data);
is(refresh(), '0/1/succeeded', 'change 6: one update');
is($mart->safe_psql('postgres', q{
SELECT (o.body->>'source_namespace') || ' ' || (t->>'input')
  FROM sluice._outbox o, jsonb_array_elements(o.body->'tables') t
 WHERE o.event = 'refresh_completed' AND (t->>'output') LIKE '%Students' ORDER BY o.event_id DESC LIMIT 1}),
	"http://127.0.0.1:$port /api/students", 'OpenLineage: the namespace is the API, the input the endpoint');
is(mart_students('id <> 12'), join(',', map { "$_->{id}|$_->{name}|$_->{grade}" } grep { $_->{id} != 12 } sort { $a->{id} <=> $b->{id} } @{ $data{students} }),
	'change 6: the datamart equals the server but for the quarantined row');

# secrets: never in a view, an event or a run
is($mart->safe_psql('postgres', "SELECT secret || ' ' || base_url FROM sluice.http_sources"),
	"******** http://127.0.0.1:$port/?api_key=********", 'http_sources masks the token and the query');
($ret, $out, $err) = $mart->psql('postgres', 'SELECT * FROM sluice.http_sources', extra_params => [ '-U', 'reader' ]);
like($err, qr/permission denied/, 'a reader cannot read http_sources');
is($mart->safe_psql('postgres', qq{
SELECT count(*) FROM (SELECT body::text AS t FROM sluice._outbox UNION ALL SELECT r::text FROM sluice.runs r
                      UNION ALL SELECT d::text FROM sluice.drift_events d UNION ALL SELECT e::text FROM sluice.http_endpoints e) x
 WHERE t LIKE '%topsecret%' OR t LIKE '%$token%'}), '0', 'no secret in events, runs, drift events or endpoints');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = 'web' AND status = 'succeeded'"), '8',
	'every successful refresh is a run');

# pg_cron-style scheduling needs nothing else; continuous mode is refused
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.start('web')");
like($err, qr/cannot stream continuously/, 'an HTTP pipeline is refreshed, not streamed');

# what needs a PostgreSQL source is refused with a clear error (verify used to fail in libpq)
for my $call ("SELECT * FROM sluice.verify('web')", "SELECT * FROM sluice.repair('web')", "SELECT sluice.drain('web')",
			  "SELECT sluice.resnapshot('web', '\"Web Mart\".courses')")
{
	($ret, $out, $err) = $mart->psql('postgres', $call);
	like($err, qr/ERROR:  cannot \w[\w ]* pipeline "web": it pulls an HTTP API.*HINT:  Pull the API again with sluice.refresh\('web'\)/s,
		"refused plainly: $call");
}

# a malformed URL is not repeated in the error (it may hold a token)
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_http_source('bad', 'http://[::1/x?token=tok-$token')");
like($err, qr/ERROR:  invalid URL/, 'a malformed base_url is refused');
unlike($err, qr/tok-/, 'and not echoed');

ok($mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('web')") eq 't', 'the pipeline drops');
done_testing();
