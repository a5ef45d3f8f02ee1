# Scheduled mode with a real pg_cron (Debian's postgresql-15-cron, minute
# granularity) on the datamart: a cron job runs sluice.refresh(); while a
# continuous worker streams the same pipeline the job fails cleanly, and
# nothing is applied twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
pg_sluice.naptime = 50ms
});

$live->safe_psql('postgres', q{
CREATE TABLE public.orders (id int PRIMARY KEY, amount numeric, placed timestamptz DEFAULT now());
INSERT INTO public.orders (id, amount) SELECT g, g * 1.5 FROM generate_series(1, 1000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('k', 'live', ARRAY['public.orders'])");
my @pairs = (['public.orders', 'k.orders']);

$mart->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$mart->safe_psql('postgres', q{SELECT cron.schedule('sluice-k', '* * * * *', $$SELECT sluice.refresh('k')$$)});

# --- the scheduled job applies what changed on live ---
$live->safe_psql('postgres', "INSERT INTO public.orders (id, amount) SELECT g, g FROM generate_series(1001, 3000) g; "
	. "UPDATE public.orders SET amount = 0 WHERE id <= 100; DELETE FROM public.orders WHERE id BETWEEN 500 AND 599;");
# a run that began before these changes (a minute boundary in between) does not count
my $changed = $mart->safe_psql('postgres', "SELECT coalesce(max(runid), 0) FROM cron.job_run_details");
ok($mart->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM cron.job_run_details WHERE runid > $changed AND status = 'succeeded'"),
	'the cron job succeeds');
same_tables($live, $mart, \@pairs, 'after a pg_cron refresh');
is($mart->safe_psql('postgres', "SELECT count(*) > 0 FROM sluice.runs WHERE pipeline = 'k' AND kind = 'refresh'"),
	't', 'the cron refresh is in the runs log');
is($mart->safe_psql('postgres', "SELECT mode || '/' || state FROM sluice.status WHERE pipeline = 'k'"),
	'scheduled/stopped', 'status of a scheduled pipeline');

# --- a continuous worker and the cron job exclude each other ---
$mart->safe_psql('postgres', "SELECT sluice.start('k')");
# (read after the start: a run begun before it would still succeed)
my $seen = $mart->safe_psql('postgres', "SELECT max(runid) FROM cron.job_run_details");
$live->safe_psql('postgres', "INSERT INTO public.orders (id, amount) SELECT g, g FROM generate_series(3001, 4000) g");
wait_same_tables($live, $mart, \@pairs, 'streamed by the worker');
ok($mart->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM cron.job_run_details WHERE runid > $seen AND status IN ('succeeded', 'failed')"),
	'the cron job runs again');
like($mart->safe_psql('postgres', "SELECT status || ': ' || return_message FROM cron.job_run_details WHERE runid > $seen ORDER BY runid LIMIT 1"),
	qr/^failed: ERROR: +pipeline "k" is streaming continuously/, 'the cron refresh fails cleanly while the worker streams');
same_tables($live, $mart, \@pairs, 'nothing applied twice');
$mart->safe_psql('postgres', "SELECT sluice.stop('k')");
$mart->safe_psql('postgres', "SELECT cron.unschedule('sluice-k')");

done_testing();
