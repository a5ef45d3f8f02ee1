# Bad input against real servers: every case gets a clear error, changes
# nothing on either server, and never shows a password.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');
my $replica_live = new_live('physical_only', wal_level => 'replica');

$live->safe_psql('postgres', q{
CREATE TABLE public.items (id int PRIMARY KEY, v text);
CREATE TABLE public.nokey (a int, b text);
CREATE TABLE public.secret_table (id int PRIMARY KEY);
CREATE VIEW public.items_view AS SELECT * FROM public.items;
CREATE TYPE public.pair AS (a int, b int);
CREATE TABLE public.odd_type (id int PRIMARY KEY, p public.pair);
INSERT INTO public.items SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE ROLE norepl LOGIN;
GRANT SELECT ON public.items TO norepl;
CREATE ROLE repl_noselect LOGIN REPLICATION;
GRANT SELECT ON public.items TO repl_noselect;
CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'Corr3ct-H0rse';
});
# password authentication for pwuser over the unix socket
my $hba = $live->data_dir . '/pg_hba.conf';
my $orig = PostgreSQL::Test::Utils::slurp_file($hba);
open(my $fh, '>', $hba) or die;
print $fh "local all pwuser scram-sha-256\n$orig";
close $fh;
$live->reload;

my $base = $live->connstr('postgres');
$mart->safe_psql('postgres', qq{
SELECT sluice.create_source('live', \$\$$base\$\$);
SELECT sluice.create_source('physical', \$\$@{[ $replica_live->connstr('postgres') ]}\$\$);
SELECT sluice.create_source('norepl', \$\$$base user=norepl\$\$);
SELECT sluice.create_source('noselect', \$\$$base user=repl_noselect\$\$);
SELECT sluice.create_source('wrongpw', \$\$$base user=pwuser password=Wr0ng-Batt3ry\$\$);
SELECT sluice.create_source('rightpw', \$\$$base user=pwuser password=Corr3ct-H0rse\$\$);
SELECT sluice.create_source('down', 'host=127.0.0.1 port=1 dbname=x password=Down-S3cret');
});

# Returns (sqlstate and message) of a statement expected to fail.
sub fails
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, "fails: $sql");
	return $err;
}

sub nothing_changed
{
	my ($label) = @_;
	is($mart->safe_psql('postgres', 'SELECT count(*) FROM sluice._pipeline'), '0', "$label: no pipeline recorded");
	is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_namespace WHERE nspname = 'p'"), '0', "$label: no schema created");
	is($live->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '0', "$label: no slot left on live");
	is($live->safe_psql('postgres', 'SELECT count(*) FROM pg_publication'), '0', "$label: no publication left on live");
}

my $err;

$err = fails("SELECT sluice.create_pipeline('p', 'physical', ARRAY['public.items'])");
like($err, qr/55000: source "physical" is not configured for logical replication/, 'wal_level=replica refused');
like($err, qr/Its wal_level is "replica"/, 'detail names the wal_level');
like($err, qr/Set wal_level = logical on the source/, 'hint says what to do');
nothing_changed('wal_level');

$err = fails("SELECT sluice.create_pipeline('p', 'wrongpw', ARRAY['public.items'])");
like($err, qr/08006: could not connect to source "wrongpw"/, 'wrong password: clear error');
like($err, qr/password authentication failed for user "pwuser"/, 'the reason is given');
unlike($err, qr/Wr0ng-Batt3ry/, 'the password is not in the error');
nothing_changed('wrong password');

$err = fails("SELECT sluice.create_pipeline('p', 'down', ARRAY['public.items'])");
like($err, qr/could not connect to source "down"/, 'unreachable source');
unlike($err, qr/Down-S3cret/, 'no password either');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items', 'public.missing'])");
like($err, qr/42P01: table "public.missing" does not exist on source "live"/, 'missing table');
nothing_changed('missing table');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items_view'])");
like($err, qr/42809: "public.items_view" on source "live" is not a plain table/, 'a view is refused');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['nokey'])");
like($err, qr/55000: table "public.nokey" on source "live" has no primary key/, 'no key refused');
like($err, qr/REPLICA IDENTITY FULL/, 'hint names replica identity full');
nothing_changed('no key');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.odd_type'])");
like($err, qr/42704: type public.pair of column "p" of source table "public.odd_type" does not exist in the datamart/,
	'unknown type refused before anything is created');
nothing_changed('unknown type');

$err = fails("SELECT sluice.create_pipeline('p', 'norepl', ARRAY['public.items'])");
like($err, qr/42501: role "norepl" on source "norepl" may not create replication slots/, 'role without REPLICATION');
like($err, qr/ALTER ROLE norepl REPLICATION/, 'hint gives the command');
nothing_changed('no replication privilege');

$err = fails("SELECT sluice.create_pipeline('p', 'noselect', ARRAY['public.items', 'public.secret_table'])");
like($err, qr/42501: permission denied to read table "public.secret_table" on source "noselect"/, 'role without SELECT');
nothing_changed('no select privilege');

# The role may read but not create the publication (it owns no table): the
# error comes from live, and nothing is left behind.
$err = fails("SELECT sluice.create_pipeline('p', 'noselect', ARRAY['public.items'])");
like($err, qr/source "noselect" refused to create the publication: permission denied/,
	'publication creation refused by live is reported');
nothing_changed('publication refused');

# Slot name taken.
$live->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('taken', 'pgoutput')");
$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items'], slot_name => 'taken')");
like($err, qr/42710: replication slot "taken" already exists on source "live"/, 'slot name taken');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_publication"), '0', 'slot taken: no publication left');
$live->safe_psql('postgres', "SELECT pg_drop_replication_slot('taken')");

# Named publication that lacks a table.
$live->safe_psql('postgres', "CREATE PUBLICATION mine FOR TABLE public.secret_table");
$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items'], publication => 'mine')");
like($err, qr/55000: publication "mine" on source "live" does not include table "public.items"/, 'publication lacks table');
like($err, qr/ALTER PUBLICATION mine ADD TABLE public.items/, 'hint gives the command');
$live->safe_psql('postgres', "DROP PUBLICATION mine");
nothing_changed('publication lacks table');

# Target table in the way.
$mart->safe_psql('postgres', "CREATE SCHEMA p; CREATE TABLE p.items (x int)");
$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items'])");
like($err, qr/42P07: table "p.items" already exists in the datamart/, 'target table in the way');
$mart->safe_psql('postgres', "DROP SCHEMA p CASCADE");
nothing_changed('target exists');

# A correct password works, and then the pipeline name is taken.
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('p', 'rightpw', ARRAY['public.items'])");
is($mart->safe_psql('postgres', "SELECT count(*) FROM p.items"), '10', 'password source works');
$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items'])");
like($err, qr/42710: pipeline "p" already exists/, 'duplicate pipeline');
$err = fails("SELECT sluice.drop_source('rightpw')");
like($err, qr/2BP01: source "rightpw" is used by a pipeline/, 'source in use cannot be dropped');

# The password is never visible to non-owners, and the pipeline views never show it.
unlike($mart->safe_psql('postgres', "SELECT * FROM sluice.sources"), qr/Corr3ct-H0rse|Wr0ng-Batt3ry/, 'sources view masks');
unlike($mart->safe_psql('postgres', "SELECT * FROM sluice.pipelines"), qr/Corr3ct-H0rse/, 'pipelines view has no secret');

# Refresh after the slot vanished on live: clear error.
$live->safe_psql('postgres', "SELECT pg_drop_replication_slot('sluice_p')");
$err = fails("SELECT sluice.refresh('p')");
like($err, qr/55000: replication slot "sluice_p" of pipeline "p" no longer exists on source "rightpw"/, 'slot gone');
# drop_pipeline copes with the missing slot
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('p', drop_tables => true)");
nothing_changed('dropped');

# drop_pipeline with live down: refused unless force.
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('p', 'live', ARRAY['public.items'])");
$mart->safe_psql('postgres', "SELECT sluice.alter_source('live', 'host=127.0.0.1 port=1 dbname=x')");
$err = fails("SELECT sluice.drop_pipeline('p')");
like($err, qr/could not connect to source "live"/, 'drop with live unreachable refused');
like($err, qr/force => true/, 'hint offers force');
my ($ret, $out, $stderr) = $mart->psql('postgres', "SELECT sluice.drop_pipeline('p', drop_tables => true, force => true)");
is($ret, 0, 'forced drop works');
like($stderr, qr/replication slot "sluice_p" was left on source "live"/, 'forced drop warns about the slot');
$live->safe_psql('postgres', "SELECT pg_drop_replication_slot('sluice_p'); DROP PUBLICATION sluice_p;");
nothing_changed('forced drop');

# No password reached the datamart's log through pg_sluice's own messages.
my $log = PostgreSQL::Test::Utils::slurp_file($mart->logfile);
# (the statements declaring the sources are the test's own SQL, logged by log_statement)
my @lines = grep { !/sluice\.(create|alter)_source/ } split /\n/, $log;
unlike(join("\n", @lines), qr/Corr3ct-H0rse|Wr0ng-Batt3ry|Down-S3cret/, 'no password in the server log');

done_testing();
