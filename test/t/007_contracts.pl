# Contracts and schema drift between two real servers: the live table is
# ALTERed in the middle of a backlog, for each drift policy (freeze, evolve,
# ignore), plus a rename mapped with sluice.map_column and a type change.
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
CREATE TABLE app.items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
CREATE TABLE app.other (id int PRIMARY KEY, v text);
INSERT INTO app.items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 100) g;
INSERT INTO app.other SELECT g, 'v' || g FROM generate_series(1, 10) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('d', 'live', ARRAY['app.items', 'app.other'])");

is($mart->safe_psql('postgres', q{
SELECT string_agg(column_name || ':' || source_column || ':' || data_type || ':' || not_null || ':' || is_key, ' ' ORDER BY position)
  FROM sluice.contracts WHERE target_table = 'items'}),
	'id:id:integer:true:true name:name:text:true:false price:price:numeric(10,2):false:false',
	'contract version 1 generated from the source');
is($mart->safe_psql('postgres', "SELECT DISTINCT drift_policy || '/' || contract_version FROM sluice.contracts"),
	'freeze/1', 'default policy freeze');

sub mart_items { $mart->safe_psql('postgres', "SELECT count(*) || ':' || coalesce(sum(id), 0) FROM d.items") }
sub refresh_status
{
	my ($ret, $out, $err) = $mart->psql('postgres', "SELECT status, transactions FROM sluice.refresh('d')");
	return ($out, $err);
}

# --- freeze: a column added mid-stream pauses the pipeline, nothing applied ---
$live->safe_psql('postgres', q{
INSERT INTO app.other VALUES (11, 'before the ALTER');
INSERT INTO app.items VALUES (101, 'before', 1);
ALTER TABLE app.items ADD COLUMN color text;
INSERT INTO app.items VALUES (102, 'after', 2, 'red');
});
my $before = mart_items();
my ($ret, $out, $err);
($out, $err) = refresh_status();
is($out, 'paused|0', 'refresh reports paused and applies nothing');
like($err, qr/WARNING:  pipeline "d" paused: source table "app.items" drifted from its contract/, 'with a warning');
like($err, qr/New source column "color", not in the contract \(policy freeze\)/, 'saying why');
is(mart_items(), $before, 'no row of the batch applied');
is($mart->safe_psql('postgres', "SELECT count(*) FROM d.other WHERE id = 11"), '0',
	'not even rows of other tables before the drift');
is($mart->safe_psql('postgres', "SELECT state || ':' || (paused_reason LIKE '%color%') FROM sluice.status WHERE pipeline = 'd'"),
	'paused:true', 'status says paused, and why');
is($mart->safe_psql('postgres', "SELECT action || ':' || policy || ':' || source_table || ':' || (source_columns @> '[{\"name\": \"color\"}]') FROM sluice.drift_events"),
	'paused:freeze:items:true', 'drift event recorded with the source columns');
is($mart->safe_psql('postgres', "SELECT jsonb_path_query_array(contract_columns, '\$[*].name')::text || ' -> ' || jsonb_path_query_array(source_columns, '\$[*].name')::text FROM sluice.drift_events"),
	'["id", "name", "price"] -> ["id", "name", "price", "color"]', 'before and after');
is($mart->safe_psql('postgres', "SELECT status FROM sluice.runs WHERE pipeline = 'd' ORDER BY run_id DESC LIMIT 1"),
	'paused', 'paused run logged');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.refresh('d')");
like($err, qr/pipeline "d" is paused.*sluice\.resume\('d'\)/s, 'a paused pipeline refuses to refresh');

# --- evolve: the column is added to the datamart, a new contract version ---
is($mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.items', 'evolve')"), 'freeze', 'set_drift_policy returns the old policy');
is($mart->safe_psql('postgres', "SELECT sluice.resume('d')"), 't', 'resume');
($out, $err) = refresh_status();
is($out, 'succeeded|3', 'the same backlog applies after the fix');
same_tables($live, $mart, [['app.items', 'd.items'], ['app.other', 'd.other']], 'after evolve');
is($mart->safe_psql('postgres', "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'd.items'::regclass AND attname = 'color'"),
	'text', 'column added');
is($mart->safe_psql('postgres', "SELECT string_agg(change || ':' || column_name, ' ') FROM sluice.contract_diff('d.items', 1, 2)"),
	'added:color', 'contract_diff');
is($mart->safe_psql('postgres', "SELECT string_agg(action, ',' ORDER BY event_id) FROM sluice.drift_events"),
	'paused,evolved', 'evolution recorded');

# --- ignore: new source columns are left out, recorded once ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.items', 'ignore')");
$live->safe_psql('postgres', q{
INSERT INTO app.items VALUES (103, 'before ignore', 3, 'blue');
ALTER TABLE app.items ADD COLUMN secret text;
INSERT INTO app.items VALUES (104, 'after ignore', 4, 'green', 'do not copy');
UPDATE app.items SET secret = 'hidden', price = 9 WHERE id <= 10;
});
($out, $err) = refresh_status();
is($out, 'succeeded|3', 'ignore applies the rows');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_attribute WHERE attrelid = 'd.items'::regclass AND attname = 'secret'"),
	'0', 'the new column is not in the datamart');
is(checksum($mart, 'd.items'), $live->safe_psql('postgres',
	"SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")) FROM (SELECT id, name, price, color FROM app.items) t"),
	'the other columns match live');
$live->safe_psql('postgres', "INSERT INTO app.items VALUES (105, 'again', 5, 'x', 'y')");
refresh_status();
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.drift_events WHERE action = 'ignored'"), '1',
	'an ignored column is recorded once');
is($mart->safe_psql('postgres', "SELECT DISTINCT array_to_string(ignored_source_columns, ',') FROM sluice.contracts WHERE target_table = 'items'"),
	'secret', 'and stays left out of the contract');

# --- rename on the source: pauses, then map_column keeps feeding the same column ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.items', 'freeze')");
$live->safe_psql('postgres', q{
ALTER TABLE app.items RENAME COLUMN name TO title;
UPDATE app.items SET title = 'renamed ' || id WHERE id <= 5;
});
($out, $err) = refresh_status();
is($out, 'paused|0', 'a rename pauses');
like($err, qr/Source column "name" \(feeding "name"\) is no longer sent; if it was renamed to one of "title", call sluice.map_column\('d.items', 'name', <new name>\)/,
	'with the mapping to call');
is($mart->safe_psql('postgres', "SELECT sluice.map_column('d.items', 'name', 'title')"), '3', 'map_column: contract version 3');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.map_column('d.items', 'nope', 'title')");
like($err, qr/column "nope" is not in the contract of d.items/, 'map_column of an unknown column');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.map_column('d.items', 'color', 'title')");
like($err, qr/source column "title" already feeds column "name" of d.items/, 'map_column of a taken source column');
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh_status();
is($out, 'succeeded|1', 'applied after mapping');
is($mart->safe_psql('postgres', "SELECT string_agg(name, ',' ORDER BY id) FROM d.items WHERE id <= 5"),
	'renamed 1,renamed 2,renamed 3,renamed 4,renamed 5', 'the renamed source column feeds the same datamart column');
is($mart->safe_psql('postgres', "SELECT string_agg(change || ':' || column_name || ':' || (after->>'source_column'), ' ') FROM sluice.contract_diff('d.items', 2, 3)"),
	'changed:name:title', 'contract_diff shows the mapping');

# --- a type change pauses under every policy ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.items', 'evolve')");
$live->safe_psql('postgres', "ALTER TABLE app.items ALTER COLUMN price TYPE float8; UPDATE app.items SET price = 0.5 WHERE id = 1");
($out, $err) = refresh_status();
is($out, 'paused|0', 'a type change pauses even under evolve');
like($err, qr/Column "price" changed type on the source \(now double precision, the contract expects numeric\(10,2\)\)/, 'saying which');

# --- a contract declared before the first copy: the datamart table is the user's design ---
$live->safe_psql('postgres', q{
CREATE TABLE app.people (id int PRIMARY KEY, name text, age int, salary numeric(12,2), notes text);
INSERT INTO app.people SELECT g, 'person ' || g, 20 + g % 50, g * 1000, 'private ' || g FROM generate_series(1, 100) g;
});
$mart->safe_psql('postgres', q{
CREATE SCHEMA hr;
-- a subset of the columns, a cast (int -> bigint, numeric -> float8), a constraint of its own
CREATE TABLE hr.people (id int PRIMARY KEY, name text NOT NULL, age bigint CHECK (age < 150), salary float8);
});
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_pipeline('h', 'live', ARRAY['app.people'], target_schema => 'hr')");
like($err, qr/table "hr.people" already exists in the datamart.*adopt_tables => true/s, 'an existing table is not taken silently');
is($mart->safe_psql('postgres', "SELECT rows_inserted FROM sluice.create_pipeline('h', 'live', ARRAY['app.people'], target_schema => 'hr', adopt_tables => true)"),
	'100', 'adopted: initial copy into the declared table');
is($mart->safe_psql('postgres', q{
SELECT string_agg(column_name || ':' || data_type, ' ' ORDER BY position) || ' / ' || min(array_to_string(ignored_source_columns, ','))
  FROM sluice.contracts WHERE target_table = 'people'}),
	'id:integer name:text age:bigint salary:double precision / notes', 'the contract is the declared table; notes left out');
is($mart->safe_psql('postgres', "SELECT binary_transfer FROM sluice.pipelines WHERE name = 'h'"), 'f', 'casts disable binary transfer');
$live->safe_psql('postgres', "UPDATE app.people SET age = age + 1, salary = salary * 1.1, notes = 'x' WHERE id <= 10; INSERT INTO app.people VALUES (101, 'new', 30, 50000.50, 'n'); DELETE FROM app.people WHERE id = 100");
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_inserted || ':' || rows_updated || ':' || rows_deleted FROM sluice.refresh('h')"),
	'succeeded:1:10:1', 'changes flow into the declared table');
is($mart->safe_psql('postgres', "SELECT count(*) || ':' || sum(age) || ':' || sum(salary) FROM hr.people"),
	$live->safe_psql('postgres', "SELECT count(*) || ':' || sum(age) || ':' || sum(salary)::float8 FROM app.people"), 'same data, converted');
$mart->safe_psql('postgres', "CREATE TABLE hr.extra (id int PRIMARY KEY, name text, bonus int)");
$live->safe_psql('postgres', "CREATE TABLE app.extra (id int PRIMARY KEY, name text)");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_pipeline('h2', 'live', ARRAY['app.extra'], target_schema => 'hr', adopt_tables => true)");
like($err, qr/column "bonus" of datamart table "hr.extra" has no source column of that name/, 'an adopted column must be fed');
$mart->safe_psql('postgres', "DROP TABLE hr.extra; CREATE TABLE hr.extra (id int, name text)");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_pipeline('h2', 'live', ARRAY['app.extra'], target_schema => 'hr', adopt_tables => true)");
like($err, qr/datamart table "hr.extra" needs a primary key on the source's key/, 'an adopted table needs the key');
$mart->safe_psql('postgres', "DROP TABLE hr.extra; CREATE TABLE hr.extra (id int PRIMARY KEY, name text); INSERT INTO hr.extra VALUES (1, 'x')");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_pipeline('h2', 'live', ARRAY['app.extra'], target_schema => 'hr', adopt_tables => true)");
like($err, qr/datamart table "hr.extra" is not empty/, 'an adopted table must be empty');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_h2'"), '0', 'nothing left on live');

# --- bad input ---
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.set_drift_policy('d.items', 'sometimes')");
like($err, qr/unknown drift policy "sometimes"/, 'unknown policy');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.set_drift_policy('pg_class', 'ignore')");
like($err, qr/table pg_class is not fed by a pg_sluice pipeline/, 'not a pg_sluice table');
(undef, undef, $err) = $mart->psql('postgres', "SELECT * FROM sluice.contract_diff('d.items', 1, 9)");
like($err, qr/no contract versions 1 to 9/, 'contract_diff of unknown versions');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.resume('nope')");
like($err, qr/pipeline "nope" does not exist/, 'resume of an unknown pipeline');

done_testing();
