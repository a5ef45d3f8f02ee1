# Never breaking live: every source table's replica identity is checked
# before anything is created on live, because a publication that publishes
# updates and deletes makes live's own UPDATE and DELETE of a table without
# a usable replica identity fail ("does not have a replica identity and
# publishes updates").
#
# Refused, with the fix in the hint and nothing created on either server: a
# primary key that is DEFERRABLE (not usable as replica identity), REPLICA
# IDENTITY NOTHING (even with a primary key), a partitioned parent one of
# whose partitions cannot be identified, a partitioned parent without a
# primary key (partitions created later would have no identity).
# Accepted: the same tables once fixed as the hint says.  A plain table with
# inheritance children is published alone (ONLY): the children, which have
# no key, keep accepting updates on live.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.ok (id int PRIMARY KEY, v text);
CREATE TABLE app.defer (id int PRIMARY KEY DEFERRABLE, v text);
CREATE TABLE app.nothing (id int PRIMARY KEY, v text);
ALTER TABLE app.nothing REPLICA IDENTITY NOTHING;
CREATE TABLE app.parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE app.parted_1 PARTITION OF app.parted FOR VALUES FROM (0) TO (100);
CREATE TABLE app.parted_2 PARTITION OF app.parted FOR VALUES FROM (100) TO (200);
ALTER TABLE app.parted_2 REPLICA IDENTITY NOTHING;
CREATE TABLE app.parted_nokey (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE app.parted_nokey_1 PARTITION OF app.parted_nokey FOR VALUES FROM (0) TO (100);
ALTER TABLE app.parted_nokey REPLICA IDENTITY FULL;
ALTER TABLE app.parted_nokey_1 REPLICA IDENTITY FULL;
CREATE TABLE app.base (id int PRIMARY KEY, v text);
CREATE TABLE app.heir (extra text) INHERITS (app.base);
INSERT INTO app.ok SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.defer SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.nothing SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.parted SELECT g, 'v' || g FROM generate_series(1, 150) g;
INSERT INTO app.parted_nokey SELECT g, 'v' || g FROM generate_series(1, 50) g;
INSERT INTO app.base SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.heir SELECT g, 'h' || g, 'x' FROM generate_series(11, 20) g;
});
mart_source($mart, $live, 'live');

sub fails
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, "refused: $sql");
	return $err;
}

# Nothing on live (publication, slot), nothing here, and live's own writes
# to every table still work.
sub live_untouched
{
	my ($label) = @_;
	is($live->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM pg_publication) || '/' || (SELECT count(*) FROM pg_replication_slots)"),
		'0/0', "$label: no publication or slot left on live");
	is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice._pipeline"), '0', "$label: no pipeline recorded");
	my ($ret, $out, $err) = $live->psql('postgres', q{
UPDATE app.defer SET v = v || '.' WHERE id = 1;
DELETE FROM app.nothing WHERE id = 10;
UPDATE app.parted SET v = v || '.' WHERE id IN (1, 150);
UPDATE app.parted_nokey SET v = v || '.' WHERE id = 1;});
	is($ret, 0, "$label: live's own updates and deletes still work") or diag($err);
}

my $err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['app.ok', 'app.defer'])");
like($err, qr/55000: primary key of table "app.defer" on source "live" is deferrable and cannot identify rows/,
	'a deferrable primary key is refused');
like($err, qr/ALTER TABLE app\.defer REPLICA IDENTITY FULL/, 'the hint gives the statement that fixes it');
live_untouched('deferrable key');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['app.nothing'])");
like($err, qr/55000: table "app.nothing" on source "live" has REPLICA IDENTITY NOTHING/, 'identity nothing is refused');
like($err, qr/ALTER TABLE app\.nothing REPLICA IDENTITY DEFAULT/, 'with the statement that fixes it');
live_untouched('identity nothing');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['app.parted'])");
like($err, qr/55000: table "app.parted_2" on source "live" has REPLICA IDENTITY NOTHING/, 'a partition without identity is refused');
like($err, qr/partition of "app.parted"/, 'saying which parent it belongs to');
live_untouched('partition without identity');

$err = fails("SELECT sluice.create_pipeline('p', 'live', ARRAY['app.parted_nokey'])");
like($err, qr/55000: partitioned table "app.parted_nokey" on source "live" has no primary key/,
	'a partitioned table without a primary key is refused');
like($err, qr/[Pp]artitions created later/, 'saying why');
live_untouched('partitioned without key');

# fixed as the hints say: accepted, and live's writes keep working
$live->safe_psql('postgres', q{
ALTER TABLE app.defer REPLICA IDENTITY FULL;
ALTER TABLE app.nothing REPLICA IDENTITY DEFAULT;
ALTER TABLE app.parted_2 REPLICA IDENTITY DEFAULT;
});
$mart->safe_psql('postgres',
	"SELECT sluice.create_pipeline('p', 'live', ARRAY['app.ok', 'app.defer', 'app.nothing', 'app.parted', 'app.base'])");
my ($ret, $out);
($ret, $out, $err) = $live->psql('postgres', q{
UPDATE app.ok SET v = 'u' WHERE id = 1;
UPDATE app.defer SET v = 'u' WHERE id = 2;
DELETE FROM app.nothing WHERE id = 3;
UPDATE app.parted SET v = 'u' WHERE id IN (5, 105);
UPDATE app.heir SET v = 'u' WHERE id = 11;
DELETE FROM app.heir WHERE id = 12;
UPDATE app.base SET v = 'b' WHERE id IN (4, 13);});
is($ret, 0, "live's updates and deletes work with the pipeline in place, inheritance children included") or diag($err);
is($live->safe_psql('postgres', "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_publication_rel JOIN pg_class c ON c.oid = prrelid"),
	'base,defer,nothing,ok,parted', 'only the listed tables are published');
($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_updated, rows_deleted FROM sluice.refresh('p')");
is($ret, 0, 'refresh succeeds') or diag($err);
same_tables($live, $mart,
	[['app.ok', 'p.ok'], ['app.defer', 'p.defer'], ['app.nothing', 'p.nothing'], ['app.parted', 'p.parted'],
	 ['ONLY app.base', 'p.base']], 'after the refresh');

done_testing();
