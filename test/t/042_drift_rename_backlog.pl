# A rename on the source with writes before and after it in one backlog
# (issue 16): after sluice.map_column the contract still knows the name the
# source column had, so rows sent before the rename apply too (before, the
# contract flip-flopped between the two names and never applied).  Two
# renames of one column in one backlog, and a rename next to an unrelated
# new column under evolve.  Live and datamart compared by checksum.
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
CREATE TABLE app.t (id int PRIMARY KEY, name text, v int);
INSERT INTO app.t SELECT g, 'n' || g, g FROM generate_series(1, 30) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('d', 'live', ARRAY['app.t'])");

sub cs
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ($sql) t");
}
sub refresh
{
	my ($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('d')");
	return ($out, $err);
}

# --- one rename, writes on both sides of it ---
$live->safe_psql('postgres', q{
INSERT INTO app.t VALUES (31, 'before the rename', 31);
UPDATE app.t SET name = 'updated before' WHERE id = 1;
ALTER TABLE app.t RENAME COLUMN name TO title;
INSERT INTO app.t VALUES (32, 'after the rename', 32);
UPDATE app.t SET title = 'updated after' WHERE id IN (2, 31);
});
my ($out, $err) = refresh();
is($out, 'paused', 'a rename pauses');
like($err, qr/sluice\.map_column\('d\.t', 'name', <new name>\)/, 'the hint names map_column');
$mart->safe_psql('postgres', "SELECT sluice.map_column('d.t', 'name', 'title')");
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'the mixed backlog applies after map_column');
is(cs($mart, 'SELECT id, name, v FROM d.t'), cs($live, 'SELECT id, title, v FROM app.t'), 'live and datamart equal');

# --- two renames of one column in one backlog ---
$live->safe_psql('postgres', q{
UPDATE app.t SET title = 'r1' WHERE id = 3;
ALTER TABLE app.t RENAME COLUMN title TO label;
INSERT INTO app.t VALUES (33, 'as label', 33);
ALTER TABLE app.t RENAME COLUMN label TO caption;
INSERT INTO app.t VALUES (34, 'as caption', 34);
UPDATE app.t SET caption = 'r2' WHERE id = 33;
});
($out, $err) = refresh();
is($out, 'paused', 'the first rename pauses');
$mart->safe_psql('postgres', "SELECT sluice.map_column('d.t', 'name', 'label')");
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'paused', 'the second one too, further on');
$mart->safe_psql('postgres', "SELECT sluice.map_column('d.t', 'name', 'caption')");
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'then the whole backlog applies');
is(cs($mart, 'SELECT id, name, v FROM d.t'), cs($live, 'SELECT id, caption, v FROM app.t'), 'live and datamart equal');
is($mart->safe_psql('postgres', "SELECT string_agg(action, ',' ORDER BY event_id) FROM sluice.drift_events"),
	'paused,mapped,paused,mapped,paused,mapped', 'each mapping recorded');

# --- a rename and a new column in one backlog, under evolve ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.t', 'evolve')");
$live->safe_psql('postgres', q{
UPDATE app.t SET v = -v WHERE id <= 5;
ALTER TABLE app.t RENAME COLUMN v TO qty;
UPDATE app.t SET qty = 0 WHERE id = 6;
ALTER TABLE app.t ADD COLUMN extra text;
INSERT INTO app.t VALUES (35, 'c', 35, 'x');
});
($out, $err) = refresh();
is($out, 'paused', 'the rename pauses under evolve too');
$mart->safe_psql('postgres', "SELECT sluice.map_column('d.t', 'v', 'qty')");
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies, the new column added');
is(cs($mart, 'SELECT id, name, v, extra FROM d.t'), cs($live, 'SELECT id, caption, qty, extra FROM app.t'), 'live and datamart equal');

done_testing();
