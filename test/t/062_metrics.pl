# Metrics for operations teams (issue 18): sluice.metrics in Prometheus
# terms, readable by pg_monitor, and monitoring/postgres_exporter.yaml served
# by Debian's prometheus-postgres-exporter, scraped over HTTP.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(usleep);
use SluiceTest;

my $exporter = '/usr/bin/prometheus-postgres-exporter';
BAIL_OUT("$exporter is missing: scripts/setup.sh installs prometheus-postgres-exporter") unless -x $exporter;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, status text, amount numeric);
CREATE TABLE app."Line Items" (id int PRIMARY KEY, qty int);
INSERT INTO app.orders SELECT g, 'new', g FROM generate_series(1, 10) g;
INSERT INTO app."Line Items" SELECT g, g FROM generate_series(1, 4) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('sales', 'live', ARRAY['app.orders']);
SELECT sluice.create_pipeline('units', 'live', ARRAY['app."Line Items"'], target_schema => 'Units Mart');
SELECT sluice.expect_column_values_to_be_in_set('sales.orders', 'status', ARRAY['new', 'paid'], severity => 'quarantine');
SELECT sluice.expect_column_values_to_be_between('"Units Mart"."Line Items"', 'qty', '0', '100');
CREATE ROLE prometheus LOGIN IN ROLE pg_monitor;
CREATE ROLE nosy LOGIN;
});

# a refresh that applies, quarantines two rows, and one that pauses on an error expectation
$live->safe_psql('postgres', q{
INSERT INTO app.orders VALUES (11, 'lost', 1), (12, 'lost', 2), (13, 'paid', 3);
UPDATE app.orders SET status = 'paid' WHERE id <= 3;
DELETE FROM app.orders WHERE id = 10;
INSERT INTO app."Line Items" VALUES (5, 1000);
});
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('sales')"), 'succeeded', 'sales refreshed');
is($mart->safe_psql('postgres', q{SELECT status FROM sluice.refresh('units')}), 'paused',
	'the other pipeline pauses on its error expectation');

my $row = $mart->safe_psql('postgres', q{
SELECT concat_ws(' ', mode, paused, failing, runs_total, runs_failed_total, runs_paused_total,
                 rows_inserted_total, rows_updated_total, rows_deleted_total, rows_missing_total,
                 expectation_failures_total, expectations_failing, quarantine_rows,
                 last_success_timestamp_seconds > 0, staleness_seconds >= 0, lag_bytes >= 0,
                 retained_wal_bytes > 0, retained_wal_warning)
  FROM sluice.metrics WHERE pipeline = 'sales'}, extra_params => [ '-U', 'prometheus' ]);
# runs: the initial copy (10 rows inserted) and the refresh (3 inserted, of
# which 2 quarantined: 1; 3 updated, 1 deleted)
is($row, 'scheduled 0 0 2 0 0 11 3 1 0 2 1 2 t t t t 0', 'sluice.metrics for the healthy pipeline, as pg_monitor');
is($mart->safe_psql('postgres', q{SELECT paused || ' ' || runs_paused_total || ' ' || expectations_failing
  FROM sluice.metrics WHERE pipeline = 'units'}, extra_params => [ '-U', 'prometheus' ]),
	'1 1 1', 'the paused pipeline is paused, with its failing expectation');
my ($ret, $out, $err) = $mart->psql('postgres', 'SELECT * FROM sluice.metrics', extra_params => [ '-U', 'nosy' ]);
like($err, qr/permission denied for view metrics/, 'a role outside pg_monitor cannot read the metrics');

# --- the exporter, with the shipped queries file, scraped over HTTP ---
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $queries = ($ENV{TESTDIR} // ".") . "/monitoring/postgres_exporter.yaml";
ok(-f $queries, 'the queries file is shipped');
my $dsn = sprintf('host=%s port=%d user=prometheus dbname=postgres sslmode=disable',
	$mart->host, $mart->port);
my $log = "$PostgreSQL::Test::Utils::tmp_check/exporter.log";
my $pid = fork();
die "fork: $!" unless defined $pid;
if ($pid == 0)
{
	$ENV{DATA_SOURCE_NAME} = $dsn;
	open(STDOUT, '>', $log) or die;
	open(STDERR, '>&', \*STDOUT) or die;
	exec($exporter, "--web.listen-address=127.0.0.1:$port", "--extend.query-path=$queries",
		'--disable-settings-metrics') or die "exec: $!";
}

my $http = HTTP::Tiny->new(timeout => 10);
my $body;
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	my $r = $http->get("http://127.0.0.1:$port/metrics");
	if ($r->{success} && $r->{content} =~ /^pg_sluice_runs_total/m)
	{
		$body = $r->{content};
		last;
	}
	usleep(200_000);
}
kill 'TERM', $pid;
waitpid($pid, 0);
ok(defined $body, 'the exporter serves pg_sluice metrics') or diag(slurp_file($log));
$body //= '';

sub metric
{
	my ($name, $pipeline) = @_;
	(my $label = $pipeline) =~ s/(["\\])/\\$1/g;
	return $1 if $body =~ /^pg_sluice_\Q$name\E\{[^}]*pipeline="\Q$label\E"[^}]*\} (\S+)$/m;
	return undef;
}

is(metric('rows_inserted_total', 'sales'), '11', 'pg_sluice_rows_inserted_total{pipeline="sales"}');
is(metric('quarantine_rows', 'sales'), '2', 'pg_sluice_quarantine_rows');
is(metric('expectation_failures_total', 'sales'), '2', 'pg_sluice_expectation_failures_total');
is(metric('paused', 'sales'), '0', 'pg_sluice_paused for a running pipeline');
is(metric('paused', 'units'), '1', 'pg_sluice_paused for the paused one');
like(metric('retained_wal_bytes', 'sales') // '', qr/^\d+(\.\d+)?(e\+\d+)?$/, 'pg_sluice_retained_wal_bytes');
like($body, qr/^# TYPE pg_sluice_runs_total counter$/m, 'counters are typed as counters');
like($body, qr/^# TYPE pg_sluice_lag_bytes gauge$/m, 'gauges as gauges');
unlike(slurp_file($log), qr/level=error/, 'the exporter logged no error');

done_testing();
