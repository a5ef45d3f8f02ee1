# Releasing a quarantined row is a version of its own (issue 15 leftover):
# the released row carries the release's version, so <table>_at of the batch
# that held it back does not show it; the row it replaces goes to history;
# the release is listed in sluice.versions and sluice.runs; an operator who
# is not a superuser can release.
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
CREATE TABLE app."Ord ers" (id int PRIMARY KEY, status text, "version" int);
CREATE TABLE app.loose (v int, status text);
ALTER TABLE app.loose REPLICA IDENTITY FULL;
INSERT INTO app."Ord ers" SELECT g, 'new', g FROM generate_series(1, 5) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE ops LOGIN;
GRANT etl TO ops;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('ops');
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
SET ROLE etl;
SELECT sluice.create_pipeline('r', 'live', ARRAY['app."Ord ers"', 'app.loose'], target_schema => 'Mart é');
SELECT sluice.keep_history('r');
SELECT sluice.expect_column_values_to_be_in_set('"Mart é"."Ord ers"', 'status', ARRAY['new', 'paid'], severity => 'quarantine');
SELECT sluice.expect_column_values_to_be_in_set('"Mart é".loose', 'status', ARRAY['new', 'paid'], severity => 'quarantine');
});

sub refresh { return $mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('r')"); }
sub one { return $mart->safe_psql('postgres', $_[0]); }

# v1: a new row and an update, both bad: held back
$live->safe_psql('postgres', q{
INSERT INTO app."Ord ers" VALUES (6, 'bogus', 6);
UPDATE app."Ord ers" SET status = 'weird' WHERE id = 2;
INSERT INTO app.loose VALUES (1, 'odd');
});
is(refresh(), 'succeeded', 'refresh with quarantined rows');
my $v1 = one("SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'");
is(one(q{SELECT count(*) FROM sluice.quarantine WHERE status = 'held'}), '3', 'three rows held');

# the operator (a member of the owner, not a superuser) releases them, corrected
my $q6 = one(q{SELECT quarantine_id FROM sluice.quarantine WHERE row_key->>'id' = '6'});
my $q2 = one(q{SELECT quarantine_id FROM sluice.quarantine WHERE row_key->>'id' = '2'});
my $ql = one(q{SELECT quarantine_id FROM sluice.quarantine WHERE target_table = 'loose'});
is(one(qq{SET ROLE ops; SELECT sluice.release_quarantined($q6, corrected => '{"status": "paid"}')}), 't', 'operator releases a new row');
my $vr6 = one(q{SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'});
is(one(qq{SET ROLE ops; SELECT sluice.release_quarantined($q2, corrected => '{"status": "paid"}')}), 't', 'operator releases an update');
my $vr2 = one(q{SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'});
is(one(qq{SET ROLE ops; SELECT sluice.release_quarantined($ql, corrected => '{"status": "new"}')}), 't', 'operator releases a keyless row');
my $vrl = one(q{SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'});

ok($vr6 > $v1 && $vr2 > $vr6 && $vrl > $vr2, "each release is a new version ($v1 < $vr6 < $vr2 < $vrl)");
is(one(qq{SELECT kind || ':' || rows_inserted || ':' || rows_updated FROM sluice.runs WHERE run_id IN ($vr6, $vr2, $vrl) ORDER BY run_id}),
	"release:1:0\nrelease:0:1\nrelease:1:0", 'runs record the releases');
is(one(qq{SELECT string_agg(kind, ',' ORDER BY version) FROM sluice.versions WHERE version > $v1}), 'release,release,release',
	'sluice.versions lists them');

# the released rows carry the release's version; the batch that held them back does not show them
is(one(q{SELECT string_agg(id || ':' || status || ':' || _sluice_version, ',' ORDER BY id) FROM "Mart é"."Ord ers" WHERE id IN (2, 6)}),
	"2:paid:$vr2,6:paid:$vr6", 'released rows are stamped with the release');
is(one(qq{SELECT count(*) FROM "Mart é"."Ord ers_at"($v1) WHERE id = 6}), '0', 'as of the holding batch: the held new row is absent');
is(one(qq{SELECT status FROM "Mart é"."Ord ers_at"($v1) WHERE id = 2}), 'new', 'as of the holding batch: the old row 2');
is(one(qq{SELECT status FROM "Mart é"."Ord ers_at"($vr6) WHERE id = 2}), 'new', 'as of the first release: still the old row 2');
is(one(qq{SELECT status FROM "Mart é"."Ord ers_at"($vr2) WHERE id = 2}), 'paid', 'as of its release: the released row 2');
is(one(qq{SELECT count(*) FROM "Mart é"."Ord ers_at"($vr6) WHERE id = 6}), '1', 'as of its release: row 6');
is(one(qq{SELECT count(*) || ':' || max(_sluice_superseded) FROM "Mart é_history"."Ord ers" WHERE id = 2}), "1:$vr2",
	'the replaced row went to history, superseded by the release');
# a keyless table keeps no history (no _sluice_version): the row is inserted
is(one(qq{SELECT string_agg(v || ':' || status, ',') FROM "Mart é".loose}), "1:new", 'keyless row released');

# later changes apply on top as usual
$live->safe_psql('postgres', q{UPDATE app."Ord ers" SET status = 'new' WHERE id IN (2, 6)});
is(refresh(), 'succeeded', 'refresh after the releases');
is(one(q{SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM "Mart é"."Ord ers" WHERE id IN (2, 6)}), '2:new,6:new',
	'later source changes replace the released rows');

done_testing();
