# Divergence (issue 15, item 2): an update or delete that finds no row in
# the datamart, with or without a quarantine expectation on the table, is
# never turned into an insert nor ignored silently: it is skipped and
# counted per run and table (sluice.runs, sluice.status), raises a
# divergence event and a WARNING, and pauses a strict pipeline.
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
CREATE TABLE app.t (id int PRIMARY KEY, v text);
CREATE TABLE app.q (id int PRIMARY KEY, status text);
CREATE TABLE app.k (a int, b text);
ALTER TABLE app.k REPLICA IDENTITY FULL;
INSERT INTO app.t SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO app.q SELECT g, 'new' FROM generate_series(1, 10) g;
INSERT INTO app.k SELECT g, 'b' || g FROM generate_series(1, 5) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('v', 'live', ARRAY['app.t', 'app.q', 'app.k']);
SELECT sluice.expect_column_values_to_be_in_set('v.q', 'status', ARRAY['new', 'paid'], severity => 'quarantine');
SELECT sluice.create_webhook('ops', 'http://127.0.0.1:9/hook');
CREATE ROLE reader LOGIN;
});

# --- with a quarantine expectation, an update of a missing row became an insert ---
$mart->safe_psql('postgres', "DELETE FROM v.q WHERE id = 2");
$live->safe_psql('postgres', "UPDATE app.q SET status = 'paid' WHERE id = 2");
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT status || ':' || rows_updated FROM sluice.refresh('v')");
is($out, 'succeeded:0', 'with a quarantine expectation, the update of a missing row is not applied');
like($err, qr/WARNING:  pipeline "v": 1 update or delete found no row in the datamart/, 'but warned about');
is($mart->safe_psql('postgres', "SELECT count(*) FROM v.q WHERE id = 2"), '0', 'it did not become an insert');

# the datamart loses rows behind pg_sluice's back
$mart->safe_psql('postgres', q{
DELETE FROM v.t WHERE id IN (1, 2);
DELETE FROM v.q WHERE id = 1;
DELETE FROM v.k WHERE a = 1;
});
$live->safe_psql('postgres', q{
UPDATE app.t SET v = 'changed' WHERE id IN (1, 3);
DELETE FROM app.t WHERE id = 2;
UPDATE app.q SET status = 'paid' WHERE id = 1;
UPDATE app.k SET b = 'changed' WHERE a = 1;
INSERT INTO app.t VALUES (11, 'new row');
});
($ret, $out, $err) = $mart->psql('postgres',
	"SELECT status || ':' || rows_inserted || ':' || rows_updated || ':' || rows_deleted FROM sluice.refresh('v')");
is($out, 'succeeded:1:1:0', 'the refresh applies what it can (not strict)');
like($err, qr/WARNING:  pipeline "v": 4 updates or deletes found no row in the datamart/, 'and warns about the rest');
is($mart->safe_psql('postgres', "SELECT count(*) FROM v.t WHERE id IN (1, 2)"), '0',
	'an update of a missing row does not become an insert');
is($mart->safe_psql('postgres', "SELECT count(*) FROM v.q WHERE id = 1"), '0',
	'not even on a table with a quarantine expectation');
is($mart->safe_psql('postgres', "SELECT v FROM v.t WHERE id = 3"), 'changed', 'the other update applied');
is($mart->safe_psql('postgres', q{
SELECT rows_missing || ' ' || missing_by_table::text FROM sluice.runs WHERE pipeline = 'v' ORDER BY run_id DESC LIMIT 1}),
	'4 {"v.k": 1, "v.q": 1, "v.t": 2}', 'sluice.runs counts them per table');
like($mart->safe_psql('postgres', q{
SELECT rt.missing_keys::text FROM sluice._run_table rt WHERE rt.target_table = 't' AND rt.rows_missing > 0}),
	qr/^\[\{"key": \{"id": "1"\}, "change": "update", "source_xid": \d+\}, \{"key": \{"id": "2"\}, "change": "delete", "source_xid": \d+\}\]$/,
	'with their keys');
is($mart->safe_psql('postgres', q{
SELECT rt.missing_keys->0->>'key' FROM sluice._run_table rt WHERE rt.target_table = 'k' AND rt.rows_missing > 0}),
	'{"a": "1", "b": "b1"}', 'a table without a key is keyed by all its columns');
is($mart->safe_psql('postgres', "SELECT rows_missing || ':' || (last_missing_at IS NOT NULL) || ':' || strict FROM sluice.status WHERE pipeline = 'v'"),
	'5:true:false', 'sluice.status shows the divergence (both runs)');
is($mart->safe_psql('postgres', q{
SELECT body->>'rows_missing' || ':' || jsonb_array_length(body->'tables') || ':' || (body->>'summary')
  FROM sluice.events WHERE event = 'divergence' ORDER BY event_id DESC LIMIT 1}),
	'4:3:4 update(s) or delete(s) found no row in the datamart in run '
	  . $mart->safe_psql('postgres', "SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'v'") . ' and were skipped',
	'a divergence event is queued');
is($mart->safe_psql('postgres', q{SET ROLE reader; SELECT rows_missing FROM sluice.status WHERE pipeline = 'v'}), '5',
	'a reader sees the count');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE reader; SELECT missing_keys FROM sluice._run_table});
like($err, qr/permission denied/, 'but not the keys');

# --- strict: the same pauses, nothing is applied, resume after the repair ---
is($mart->safe_psql('postgres', "SELECT sluice.alter_pipeline('v', strict => true)"), 't', 'strict on');
is($mart->safe_psql('postgres', "SELECT sluice.alter_pipeline('v')"), 't', 'unchanged without an argument');
$mart->safe_psql('postgres', "DELETE FROM v.t WHERE id = 4");
$live->safe_psql('postgres', q{
INSERT INTO app.t VALUES (12, 'before');
UPDATE app.t SET v = 'strict' WHERE id = 4;
});
my $before = checksum($mart, 'v.t');
($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('v')");
is($out, 'paused', 'a strict pipeline pauses');
like($err, qr/WARNING:  pipeline "v" paused: row to update is missing from datamart table "v.t"/, 'saying why');
like($err, qr/DETAIL:  Source transaction \d+ updates a row of "app.t" which datamart table "v.t" does not have\./,
	'and where (the key stays out of the pause reason, which every role can read)');
like($err, qr/sluice.alter_pipeline\('v', strict => false\)/, 'with the way out');
is(checksum($mart, 'v.t'), $before, 'nothing of the batch applied');
is($mart->safe_psql('postgres', "SELECT state || ':' || rows_missing FROM sluice.status WHERE pipeline = 'v'"), 'paused:5',
	'paused, and nothing counted as skipped');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.events WHERE event = 'pipeline_paused'"), '1',
	'the pause raises an event');
# the repair: the row comes back (as live had it before), then resume
$mart->safe_psql('postgres', "INSERT INTO v.t VALUES (4, 'v4')");
$mart->safe_psql('postgres', "SELECT sluice.resume('v')");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('v')"), 'succeeded', 'applied after the repair');
is($mart->safe_psql('postgres', "SELECT v FROM v.t WHERE id = 4"), 'strict', 'the update arrived');

# --- strict off: the skipped row is counted; resync of the lost rows ---
$mart->safe_psql('postgres', "SELECT sluice.alter_pipeline('v', strict => false)");
$mart->safe_psql('postgres', q{
INSERT INTO v.t VALUES (1, 'changed');
INSERT INTO v.q VALUES (1, 'paid'), (2, 'paid');
INSERT INTO v.k VALUES (1, 'changed');
});
same_tables($live, $mart, [['app.t', 'v.t'], ['app.q', 'v.q'], ['app.k', 'v.k']], 'after the repair');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.alter_pipeline('nope', strict => true)");
like($err, qr/pipeline "nope" does not exist/, 'unknown pipeline');
done_testing();
