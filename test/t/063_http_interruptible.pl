# Every HTTP wait is interruptible: the notifier posting to an endpoint
# that accepts the connection and never answers (pg_sluice.http_timeout =
# 10 min) ends at once on pg_terminate_backend and on a fast shutdown,
# instead of waiting out the timeout inside libcurl.  Its claimed event is
# handed back and delivered once the endpoint answers.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time usleep);
use SluiceTest;

# an endpoint that takes connections (kernel backlog) and never answers
my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64, ReuseAddr => 1)
  or die "cannot listen: $!";
my $port = $hole->sockport;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 16
pg_sluice.naptime = 50ms
pg_sluice.http_timeout = 10min
});
$live->safe_psql('postgres', "CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t VALUES (1)");
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', qq{
SELECT sluice.create_pipeline('a', 'live', ARRAY['public.t']);
SELECT sluice.create_webhook('hole', 'http://127.0.0.1:$port/hook', ARRAY['refresh_completed']);
});
$live->safe_psql('postgres', "INSERT INTO public.t VALUES (2)");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('a')"), 'succeeded', 'refresh queues an event');

my $posting = q{SELECT pid FROM pg_stat_activity
                 WHERE application_name = 'pg_sluice notifier' AND query = 'pg_sluice: posting an event'};
ok($mart->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($posting) p"),
	'the notifier is posting to the endpoint that never answers')
  or BAIL_OUT('the notifier never started posting');
my $pid = $mart->safe_psql('postgres', $posting);

my $t0 = time;
$mart->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($mart->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
	'the terminated notifier exits');
my $took = time - $t0;
cmp_ok($took, '<', 5, sprintf('pg_terminate_backend ends the HTTP wait at once (%.2f s, timeout 10 min)', $took));

# the launcher starts a new notifier, which hands the claimed event back
# and posts it again: into the same hole
ok($mart->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($posting) p WHERE pid <> $pid"),
	'a new notifier posts the handed-back event');
is($mart->safe_psql('postgres', "SELECT status FROM sluice.events WHERE destination = 'hole'"), 'sending',
	'the event is claimed, not lost');

$t0 = time;
$mart->stop('fast');
$took = time - $t0;
cmp_ok($took, '<', 10, sprintf('a fast shutdown does not wait for the endpoint (%.2f s)', $took));

done_testing();
