# Runs the pgTAP behaviour tests (test/pgtap/*.sql) with pg_prove against a
# real datamart whose pipeline "tap" reads a real live server.  The tests
# change live through dblink and check what a refresh does.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE TYPE public.status AS ENUM ('active', 'closed');
CREATE TABLE public.accounts (id int PRIMARY KEY, name text NOT NULL, status public.status, balance numeric(12,2), tags text[]);
INSERT INTO public.accounts SELECT g, 'account ' || g, 'active', g * 10, ARRAY['t' || g] FROM generate_series(1, 100) g;
});
mart_source($mart, $live, 'live');
my $conn = $live->connstr('postgres');
$mart->safe_psql('postgres', qq{
CREATE EXTENSION pgtap;
CREATE EXTENSION dblink;
CREATE TABLE public.tap_config (live text NOT NULL);
INSERT INTO public.tap_config VALUES (\$\$$conn\$\$);
SELECT sluice.create_pipeline('tap', 'live', ARRAY['public.accounts']);
});

my @files = sort glob('test/pgtap/*.sql');
ok(@files > 0, 'pgTAP files found');
foreach my $f (@files)
{
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(['pg_prove', '--verbose', '-h', $mart->host, '-p', $mart->port, '-d', 'postgres', $f],
		'>', \$stdout, '2>', \$stderr);
	ok($ok, "pg_prove $f") or diag("$stdout\n$stderr");
	note($stdout);
}
done_testing();
