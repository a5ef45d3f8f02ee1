# Type changes on the source, each driven to completion (issue 16): evolve
# applies safe widenings itself (int -> bigint, varchar(n) -> varchar(m) ->
# text, numeric precision up, timestamp -> timestamptz read in UTC) and the
# history table follows; freeze pauses with a hint naming the function that
# accepts the change; any other change pauses with a hint naming
# sluice.accept_type_change, which alters the datamart column with the
# DBA's cast; a datamart column the DBA altered by hand is accepted.  Drift
# events and contract_diff show type names.  Live and datamart are compared
# by checksum after every step.
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
CREATE TABLE app.t (id int PRIMARY KEY, qty int, code varchar(10), amount numeric(10,2),
                    at timestamp, note text, small smallint);
INSERT INTO app.t SELECT g, g * 10, 'c' || g, g * 1.25, '2026-01-01 10:00'::timestamp + g * interval '1 hour',
                         (g * 7)::text, g FROM generate_series(1, 50) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('d', 'live', ARRAY['app.t'])");
$mart->safe_psql('postgres', "SELECT sluice.keep_history('d')");

my $cols = 'id, qty, code, amount, at, note, small';
sub cs
{
	my ($node, $table) = @_;
	return $node->safe_psql('postgres',
		"SET TimeZone = 'UTC'; SELECT count(*) || ':' || md5(string_agg(row($cols)::text, '|' ORDER BY id)) FROM $table");
}
sub same { is(cs($mart, 'd.t'), cs($live, 'app.t'), "$_[0]: live and datamart equal") }
sub refresh
{
	my ($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('d')");
	return ($out, $err);
}
sub mart_type
{
	my ($rel, $col) = @_;
	return $mart->safe_psql('postgres',
		"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '$rel'::regclass AND attname = '$col'");
}
same('initial copy');

# --- freeze: a widening pauses, naming the functions that accept it ---
$live->safe_psql('postgres', q{
UPDATE app.t SET qty = qty + 1 WHERE id <= 5;
ALTER TABLE app.t ALTER COLUMN qty TYPE bigint;
INSERT INTO app.t VALUES (51, 5000000000, 'big', 1, '2026-02-01', '51', 51);
UPDATE app.t SET qty = 6000000000 WHERE id = 6;
});
my ($out, $err) = refresh();
is($out, 'paused', 'freeze: int -> bigint pauses');
like($err, qr/Column "qty" changed type on the source \(now bigint, the contract expects integer\)/, 'detail names both types');
like($err, qr/sluice\.set_drift_policy\('d\.t', 'evolve'\), or sluice\.accept_type_change\('d\.t', 'qty', 'bigint'\)/,
	'hint names the functions that accept it');
is($mart->safe_psql('postgres', q{
SELECT (SELECT e->>'type_name' FROM jsonb_array_elements(contract_columns) e WHERE e->>'name' = 'qty') || ' -> ' ||
       (SELECT e->>'type_name' FROM jsonb_array_elements(source_columns) e WHERE e->>'name' = 'qty')
  FROM sluice.drift_events ORDER BY event_id DESC LIMIT 1}), 'integer -> bigint', 'drift event: type names before and after');
is($mart->safe_psql('postgres', q{
SELECT string_agg(e->>'type_name', ',') FROM sluice.drift_events, jsonb_array_elements(source_columns) e}),
	'integer,bigint,character varying(10),numeric(10,2),timestamp without time zone,text,smallint',
	'every source column with its type name and modifier');

# --- evolve: the same backlog applies, the column and its history widened ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.t', 'evolve')");
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'evolve: the backlog applies');
same('int -> bigint');
is(mart_type('d.t', 'qty') . ' ' . mart_type('d_history.t', 'qty'), 'bigint bigint', 'datamart and history column widened');
is($mart->safe_psql('postgres', "SELECT action || ': ' || detail FROM sluice.drift_events ORDER BY event_id DESC LIMIT 1"),
	'widened: datamart column type widened as on the source: qty integer -> bigint', 'widened event');
is($mart->safe_psql('postgres', q{
SELECT change || ' ' || column_name || ' ' || (before->>'data_type') || ' -> ' || (after->>'data_type') || ' ' ||
       (before->>'source_type') || ' -> ' || (after->>'source_type') || ' ' || action
  FROM sluice.contract_diff('d.t', 1, 2)}), 'changed qty integer -> bigint integer -> bigint widened',
	'contract_diff: type names before and after, and the action');
is($mart->safe_psql('postgres', "SELECT count(*) FROM d_history.t WHERE qty IS NOT NULL"),
	$mart->safe_psql('postgres', "SELECT count(*) FROM d_history.t"), 'history rows kept their values');

# --- several widenings in one backlog, with writes between them ---
$live->safe_psql('postgres', q{
UPDATE app.t SET code = 'x' || id WHERE id <= 3;
ALTER TABLE app.t ALTER COLUMN code TYPE varchar(20);
INSERT INTO app.t VALUES (52, 52, 'twenty chars exactly', 2.5, '2026-03-01 12:00', '52', 52);
ALTER TABLE app.t ALTER COLUMN amount TYPE numeric(14,4);
UPDATE app.t SET amount = 1234567890.1234 WHERE id = 7;
SET TimeZone = 'UTC';
ALTER TABLE app.t ALTER COLUMN at TYPE timestamptz;
INSERT INTO app.t VALUES (53, 53, 'c53', 3, '2026-04-01 08:00+02', '53', 53);
ALTER TABLE app.t ALTER COLUMN small TYPE int;
UPDATE app.t SET small = 100000 WHERE id = 8;
ALTER TABLE app.t ALTER COLUMN code TYPE text;
INSERT INTO app.t VALUES (54, 54, repeat('long ', 20), 4, '2026-05-01', '54', 54);
DELETE FROM app.t WHERE id = 9;
});
($out, $err) = refresh();
is($out, 'succeeded', 'widenings in one backlog apply under evolve');
same('varchar -> varchar(20) -> text, numeric(10,2) -> numeric(14,4), timestamp -> timestamptz, smallint -> int');
is(join(' ', map { mart_type('d.t', $_) } qw(code amount at small)), 'text numeric(14,4) timestamp with time zone integer',
	'datamart types follow');
is(join(' ', map { mart_type('d_history.t', $_) } qw(code amount at small)), 'text numeric(14,4) timestamp with time zone integer',
	'history types follow');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.drift_events WHERE action = 'widened'"), '6', 'one event per widening');

# --- a narrowing on the source: the datamart column still holds the values ---
$live->safe_psql('postgres', q{
ALTER TABLE app.t ALTER COLUMN code TYPE varchar(200);
INSERT INTO app.t VALUES (55, 55, 'narrowed', 5, '2026-06-01', '55', 55);
});
($out, $err) = refresh();
is($out, 'succeeded', 'text -> varchar(200) on the source needs nothing');
same('narrowing');
is(mart_type('d.t', 'code'), 'text', 'the datamart column stays text');

# --- a change no widening covers: paused, accept_type_change with a cast ---
$live->safe_psql('postgres', q{
UPDATE app.t SET note = '1' || note WHERE id <= 4;
ALTER TABLE app.t ALTER COLUMN note TYPE integer USING note::integer;
INSERT INTO app.t VALUES (56, 56, 'c', 6, '2026-07-01', 56, 56);
UPDATE app.t SET note = note + 1000 WHERE id <= 2;
});
($out, $err) = refresh();
is($out, 'paused', 'text -> integer pauses even under evolve');
like($err, qr/Column "note" changed type on the source \(now integer, the contract expects text\)/, 'saying which');
like($err, qr/Call sluice\.accept_type_change\('d\.t', 'note', 'integer', using_expression => <a cast of "note">\)/,
	'the hint names accept_type_change');
my $v = $mart->safe_psql('postgres', "SELECT contract_version FROM sluice.contracts LIMIT 1");
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.accept_type_change('d.t', 'note', '')");
like($err, qr/new_type must name a type/, 'empty type refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.accept_type_change('d.t', 'note', NULL)");
like($err, qr/new_type must name a type/, 'NULL type refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.accept_type_change('d.t', 'note', 'no_such_type')");
like($err, qr/type "no_such_type" does not exist/, 'unknown type refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.accept_type_change('d.t', 'nope', 'integer')");
like($err, qr/column "nope" is not in the contract of d\.t/, 'unknown column refused');
(undef, undef, $err) = $mart->psql('postgres', "SELECT sluice.accept_type_change(NULL, 'note', 'integer')");
like($err, qr/sluice\.accept_type_change needs a table and a column, not NULL/, 'NULL table refused');
(undef, undef, $err) = $mart->psql('postgres',
	"SELECT sluice.accept_type_change('d.t', 'note', 'integer', using_expression => 'note::integer); DROP TABLE d.t; --')");
like($err, qr/using_expression must be one expression/, 'a statement in the expression refused');
is($mart->safe_psql('postgres', "SELECT contract_version FROM sluice.contracts LIMIT 1 "), $v, 'no version recorded by refusals');
is($mart->safe_psql('postgres', "SELECT sluice.accept_type_change('d.t', 'note', 'integer', using_expression => 'note::integer')"),
	$v + 1, 'accept_type_change returns the new contract version');
is(mart_type('d.t', 'note') . ' ' . mart_type('d_history.t', 'note'), 'integer integer', 'column and history altered');
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies, rows of the old type included');
same('text -> integer accepted');
is($mart->safe_psql('postgres', "SELECT string_agg(change || ' ' || column_name || ' ' || (before->>'data_type') || ' -> ' || (after->>'data_type') || ' ' || action, '; ') FROM sluice.contract_diff('d.t', $v, $v + 1)"),
	'changed note text -> integer accepted', 'contract_diff names the action');

# --- freeze, and the DBA altered the datamart column (and history) by hand ---
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('d.t', 'freeze')");
$live->safe_psql('postgres', q{
ALTER TABLE app.t ALTER COLUMN small TYPE bigint;
INSERT INTO app.t VALUES (57, 57, 'c', 7, '2026-08-01', 57, 9000000000);
});
($out, $err) = refresh();
is($out, 'paused', 'freeze: int -> bigint pauses');
$mart->safe_psql('postgres', "ALTER TABLE d.t ALTER COLUMN small TYPE bigint; ALTER TABLE d_history.t ALTER COLUMN small TYPE bigint");
$mart->safe_psql('postgres', "SELECT sluice.resume('d')");
($out, $err) = refresh();
is($out, 'succeeded', 'a datamart column altered by hand is accepted under freeze');
same('altered by hand');
is($mart->safe_psql('postgres', "SELECT action FROM sluice.drift_events ORDER BY event_id DESC LIMIT 1"), 'accepted',
	'recorded as accepted');
is($mart->safe_psql('postgres', "SELECT data_type FROM sluice.contracts WHERE column_name = 'small'"), 'bigint',
	'the contract follows');

# --- the versions still read: time travel over the widened columns ---
is($mart->safe_psql('postgres', "SET TimeZone = 'UTC'; SELECT count(*) || ':' || md5(string_agg(row($cols)::text, '|' ORDER BY id)) FROM d.t_at((SELECT max(version) FROM sluice.versions WHERE pipeline = 'd'))"),
	cs($live, 'app.t'), 'time travel to the last version equals live');

done_testing();
