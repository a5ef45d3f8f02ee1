# A column dropped on the source, each way forward driven to completion
# (issue 16): sluice.drop_column keeps the datamart column (its default in
# new rows) or drops it from the contract and the table; evolve and ignore
# keep it by themselves; map_column refuses NULL and '' with a hint naming
# drop_column.  Every backlog has writes before and after the drop, and
# live and datamart are compared by checksum after every step.
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
CREATE TABLE app.t (id int PRIMARY KEY, v text, gone text, label text NOT NULL, extra int);
INSERT INTO app.t SELECT g, 'v' || g, 'g' || g, 'l' || g, g FROM generate_series(1, 40) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('d', 'live', ARRAY['app.t'])");
$mart->safe_psql('postgres', "SELECT sluice.keep_history('d')");

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
sub version { $mart->safe_psql('postgres', "SELECT DISTINCT contract_version FROM sluice.contracts") }

# --- freeze: a dropped column pauses; the hint names drop_column ---
$live->safe_psql('postgres', q{
INSERT INTO app.t VALUES (41, 'v41', 'g41 before the drop', 'l41', 41);
UPDATE app.t SET gone = 'updated before the drop' WHERE id = 1;
ALTER TABLE app.t DROP COLUMN gone;
INSERT INTO app.t VALUES (42, 'v42', 'l42', 42);
UPDATE app.t SET v = 'after the drop' WHERE id IN (2, 41);
DELETE FROM app.t WHERE id = 3;
});
my ($out, $err) = refresh();
is($out, 'paused', 'freeze: a dropped source column pauses');
like($err, qr/Source column "gone" \(feeding "gone"\) is no longer sent\./, 'saying which');
like($err, qr/call sluice\.drop_column\('d\.t', 'gone'\); to drop it, sluice\.drop_column\('d\.t', 'gone', keep => false\)/,
	'the hint names drop_column');
my $v = version();
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.map_column('d.t', 'gone', NULL)");
like($err, qr/source column must be named.*sluice\.drop_column\('d\.t', 'gone'\)/s, 'map_column(..., NULL) refused, pointing to drop_column');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.map_column('d.t', 'gone', '')");
like($err, qr/source column must be named/, "map_column(..., '') refused");
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.map_column(NULL, 'gone', 'x')");
like($err, qr/sluice\.map_column needs a table and a column, not NULL/, 'map_column(NULL, ...) refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.drop_column('d.t', NULL)");
like($err, qr/sluice\.drop_column needs a table and a column, not NULL/, 'drop_column of NULL refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.drop_column('d.t', 'nope')");
like($err, qr/column "nope" is not in the contract of d\.t/, 'drop_column of an unknown column refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.drop_column('d.t', 'id')");
like($err, qr/column "id" of d\.t is part of the key.*Restore the column on the source/s, 'drop_column of a key column refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.drop_column('d.t', 'gone', NULL)");
like($err, qr/keep must be true or false/, 'drop_column with keep NULL refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.drop_column('pg_class', 'relname')");
like($err, qr/table pg_class is not fed by a pg_sluice pipeline/, 'drop_column of a table pg_sluice does not feed');
is(version(), $v, 'no contract version recorded by refusals');

# keep: the DBA gives the column a default for the rows to come
$mart->safe_psql('postgres', "ALTER TABLE d.t ALTER COLUMN gone SET DEFAULT 'n/a'");
is($mart->safe_psql('postgres', "SELECT sluice.drop_column('d.t', 'gone')"), $v + 1, 'drop_column: a new contract version');
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies after drop_column');
is(cs($mart, 'SELECT id, v, label, extra FROM d.t'), cs($live, 'SELECT id, v, label, extra FROM app.t'),
	'live and datamart equal on the columns live still has');
is($mart->safe_psql('postgres', "SELECT string_agg(id || '=' || coalesce(gone, 'NULL'), ',' ORDER BY id) FROM d.t WHERE id IN (1, 2, 41, 42)"),
	'1=updated before the drop,2=g2,41=g41 before the drop,42=n/a',
	'rows written before the drop keep their values, new rows get the default');
is($mart->safe_psql('postgres', "SELECT string_agg(change || ' ' || column_name || ' ' || (after->>'source_dropped') || ' ' || action, ';') FROM sluice.contract_diff('d.t', $v, $v + 1)"),
	'changed gone true kept', 'contract_diff shows the column kept');
$live->safe_psql('postgres', "INSERT INTO app.t VALUES (43, 'v43', 'l43', 43)");
($out, $err) = refresh();
is($out, 'succeeded', 'later refreshes apply');
is($mart->safe_psql('postgres', "SELECT gone FROM d.t WHERE id = 43"), 'n/a', 'and keep the default');

# --- evolve: a dropped NOT NULL column is kept by itself, NULL from then on ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.t', 'evolve')");
$live->safe_psql('postgres', q{
INSERT INTO app.t VALUES (44, 'v44', 'l44 before', 44);
ALTER TABLE app.t DROP COLUMN label;
INSERT INTO app.t VALUES (45, 'v45', 45);
UPDATE app.t SET v = 'after label' WHERE id = 44;
});
($out, $err) = refresh();
is($out, 'succeeded', 'evolve keeps a dropped column without pausing');
is(cs($mart, 'SELECT id, v, extra FROM d.t'), cs($live, 'SELECT id, v, extra FROM app.t'), 'live and datamart equal');
is($mart->safe_psql('postgres', "SELECT string_agg(id || '=' || coalesce(label, 'NULL'), ',' ORDER BY id) FROM d.t WHERE id IN (44, 45)"),
	'44=l44 before,45=NULL', 'label kept, NULL in new rows (its NOT NULL dropped)');
is($mart->safe_psql('postgres', "SELECT action || ': ' || detail FROM sluice.drift_events ORDER BY event_id DESC LIMIT 1"),
	'kept: source column dropped; the datamart column stays and is fed nothing from now on: label', 'kept event');

# --- keep => false: the column leaves the contract, the table and its history ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.t', 'freeze')");
$live->safe_psql('postgres', q{
UPDATE app.t SET extra = -1 WHERE id = 4;
INSERT INTO app.t VALUES (46, 'v46', 46);
ALTER TABLE app.t DROP COLUMN extra;
INSERT INTO app.t VALUES (47, 'v47');
UPDATE app.t SET v = 'after extra' WHERE id IN (4, 46);
});
($out, $err) = refresh();
is($out, 'paused', 'freeze pauses again');
$v = version();
is($mart->safe_psql('postgres', "SELECT sluice.drop_column('d.t', 'extra', keep => false)"), $v + 1, 'drop_column keep => false');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_attribute WHERE attrelid IN ('d.t'::regclass, 'd_history.t'::regclass) AND attname = 'extra' AND NOT attisdropped"),
	'0', 'gone from the table and its history');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.contracts WHERE column_name = 'extra'"), '0', 'and from the contract');
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies, rows sent before the drop included');
is(cs($mart, 'SELECT id, v FROM d.t'), cs($live, 'SELECT id, v FROM app.t'), 'live and datamart equal');
is($mart->safe_psql('postgres', "SELECT string_agg(change || ' ' || column_name || ' ' || action, ';') FROM sluice.contract_diff('d.t', $v, $v + 1)"),
	'removed extra dropped', 'contract_diff shows the column dropped');

# --- history and time travel still read ---
is($mart->safe_psql('postgres', "SELECT count(*) FROM d.t_at((SELECT max(version) FROM sluice.versions WHERE pipeline = 'd'))"),
	$live->safe_psql('postgres', "SELECT count(*) FROM app.t"), 'time travel to the last version');
is($mart->safe_psql('postgres', "SELECT count(*) > 0 FROM d_history.t"), 't', 'superseded rows kept');

done_testing();
