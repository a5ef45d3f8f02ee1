# sluice.verify between two real servers (issue 18): the datamart compared
# with live at one exact source position.  Zero differences on an equal
# copy (after catching up a backlog); rows changed, deleted and added by
# hand in the mart, a changed TOASTed value, a duplicated row of a keyless
# table; values swapped between rows and between columns, a null against
# an empty string; no false difference while live is written during verifications;
# renamed contract columns and widened types; names with quotes, spaces and
# capitals; a paused pipeline with a backlog refused; a non-superuser
# operator, a reader who sees nothing; statement_timeout leaves nothing;
# columns hashed by value (each type's hash function) and from their text.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2), note text);
ALTER TABLE app.acct ALTER COLUMN note SET STORAGE EXTERNAL;
INSERT INTO app.acct SELECT g, 'owner ' || g, g * 10,
  CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 300) ELSE 'n' || g END
  FROM generate_series(1, 3000) g;
CREATE TABLE app.nokey (x int, y text);
ALTER TABLE app.nokey REPLICA IDENTITY FULL;
INSERT INTO app.nokey SELECT g % 40, 'y' || (g % 40) FROM generate_series(1, 100) g;
CREATE TABLE app."Odd ""Name"" T" ("Key Col" int, "key" text, "Value's" text, PRIMARY KEY ("Key Col", "key"));
INSERT INTO app."Odd ""Name"" T" SELECT g, 'k' || (g % 3), 'v''' || g FROM generate_series(1, 200) g;
CREATE TABLE app.busy (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO app.busy SELECT g, g FROM generate_series(1, 500) g;
CREATE TABLE app.wide (id int PRIMARY KEY, amount int, price numeric(8,2), at timestamp, label varchar(10));
INSERT INTO app.wide SELECT g, g * 1000, g / 3.0, '2026-01-01 10:00'::timestamp + g * interval '1 hour', 'l' || g
  FROM generate_series(1, 300) g;
CREATE TABLE app."Typed Ü" (id bigint PRIMARY KEY, s smallint, n numeric, t text, vc varchar(20), tz timestamptz,
  ts timestamp, d date, tm time, u uuid, b bool, "by" bytea, f float8, iv interval, j jsonb);
INSERT INTO app."Typed Ü" SELECT g, g % 300, g * 1.5, 't' || g || ' ü', 'v' || g,
  '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute 0.000001 second',
  '2026-01-01 10:00'::timestamp + g * interval '1 second', '2026-01-01'::date + g, '00:00'::time + g * interval '1 second',
  md5(g::text)::uuid, g % 2 = 0, decode(md5(g::text), 'hex'), CASE WHEN g % 7 = 0 THEN 0 ELSE g / 7.0 END,
  g * interval '1 hour', jsonb_build_object('g', g, 'x', g * 0.5)
  FROM generate_series(1, 400) g;
UPDATE app."Typed Ü" SET tz = NULL, u = NULL, n = NULL WHERE id % 50 = 0;
});
mart_source($mart, $live, 'live');

# --- roles: etl owns the pipelines, ops operates them, bi only reads ---
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE ops LOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO ops;
SET ROLE etl;
SELECT sluice.create_pipeline('v', 'live', ARRAY['app.acct', 'app.nokey', 'app."Odd ""Name"" T"', 'app.busy'],
                              target_schema => 'Mart "V"');
SELECT sluice.keep_history('v');
-- declared contract: wider types than live's
CREATE SCHEMA w;
CREATE TABLE w.wide (id int PRIMARY KEY, amount bigint, price numeric(12,2), at timestamptz, label text);
SELECT sluice.create_pipeline('w', 'live', ARRAY['app.wide'], target_schema => 'w', adopt_tables => true);
SELECT sluice.create_pipeline('t', 'live', ARRAY['app."Typed Ü"'], target_schema => 'typed');
RESET ROLE;
SELECT sluice.create_webhook('hook', 'http://127.0.0.1:9/hook', ARRAY['verification']);
});

my $acct = '"Mart ""V"""."acct"';
my $odd  = '"Mart ""V"""."Odd ""Name"" T"';

# Verify as ops; return "table:rows_compared:differences" lines.
sub verify
{
	my ($pipeline, $extra) = @_;
	$extra //= '';
	return $mart->safe_psql('postgres', qq{SET ROLE ops;
SELECT target_table || ':' || rows_compared || ':' || differences
  FROM sluice.verify('$pipeline'$extra) ORDER BY target_table});
}

# --- 1. an equal copy, after a backlog the verification applies ---
$live->safe_psql('postgres', q{
UPDATE app.acct SET balance = balance + 1 WHERE id % 10 = 0;
DELETE FROM app.acct WHERE id BETWEEN 2990 AND 3000;
INSERT INTO app.nokey VALUES (1, 'y1');
UPDATE app.wide SET amount = amount + 1 WHERE id < 10;
});
my $runs_before = $mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = 'v'");
is(verify('v'), join("\n", 'Odd "Name" T:200:0', 'acct:2989:0', 'busy:500:0', 'nokey:101:0'),
	'an equal copy: zero differences, every row compared');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = 'v'"), $runs_before + 1,
	'bringing the datamart to the position is a recorded refresh');
# live and mart equal on live's columns (history adds _sluice_version)
sub acct_sum
{
	my ($node, $tab, $owner) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) || ':' || md5(string_agg(r::text, '|' ORDER BY r.id)) FROM (SELECT id, $owner, balance, note FROM $tab) r");
}
is(acct_sum($mart, $acct, 'owner'), acct_sum($live, 'app.acct', 'owner'), 'verify caught up: acct equals live');
is(verify('w'), 'wide:300:0', 'widened types (int -> bigint, numeric, timestamp -> timestamptz, varchar -> text): zero differences');
my $vsn_lsn = $mart->safe_psql('postgres',
	"SELECT bool_and(at_lsn = (SELECT end_lsn FROM sluice.runs WHERE pipeline = 'v' ORDER BY run_id DESC LIMIT 1)) FROM sluice.verifications WHERE pipeline = 'v'");
is($vsn_lsn, 't', 'the verification is at the position the datamart was brought to');
ok($mart->safe_psql('postgres', "SELECT min(ranges) FROM sluice.verifications") > 0, 'buckets compared are counted');

# --- 2. differences made by hand in the mart ---
$mart->safe_psql('postgres', qq{
UPDATE $acct SET owner = 'hacked' WHERE id = 10;
DELETE FROM $acct WHERE id = 20;
INSERT INTO $acct (id, owner, balance, note, _sluice_version) SELECT 99999, 'extra', 1, 'x', _sluice_version FROM $acct WHERE id = 1;
UPDATE $acct SET note = note || 'z' WHERE id = 100;   -- a TOASTed value
INSERT INTO "Mart ""V""".nokey VALUES (5, 'y5');     -- a duplicated row
DELETE FROM "Mart ""V""".nokey WHERE ctid = (SELECT min(ctid) FROM "Mart ""V""".nokey WHERE x = 7);
UPDATE $odd SET "Value's" = 'changed' WHERE "Key Col" = 7;
});
is(verify('v'), join("\n", 'Odd "Name" T:200:1', 'acct:2989:4', 'busy:500:0', 'nokey:101:2'),
	'differences found in every table');
is($mart->safe_psql('postgres', q{SELECT string_agg((k->>'kind') || ' ' || (k->'key'->>'id'), ', ' ORDER BY (k->'key'->>'id')::int)
  FROM sluice.verifications v, jsonb_array_elements(v.keys) k
 WHERE v.verification_id = (SELECT max(verification_id) FROM sluice.verifications WHERE target_table = 'acct')}),
	'different 10, missing 20, different 100, extra 99999', 'acct: each differing key with its kind');
is($mart->safe_psql('postgres', q{SELECT string_agg((k->>'kind') || ' ' || (k->'key')::text || ' x' || (k->>'count'), ', ' ORDER BY k->>'kind')
  FROM sluice.verifications v, jsonb_array_elements(v.keys) k
 WHERE v.verification_id = (SELECT max(verification_id) FROM sluice.verifications WHERE target_table = 'nokey')}),
	'extra {"x": "5", "y": "y5"} x1, missing {"x": "7", "y": "y7"} x1', 'keyless: a multiset, whole rows as keys');
is($mart->safe_psql('postgres', q{SELECT keys FROM sluice.verifications
 WHERE verification_id = (SELECT max(verification_id) FROM sluice.verifications WHERE target_table = 'Odd "Name" T')}),
	q{[{"key": {"key": "k1", "Key Col": "7"}, "kind": "different"}]}, 'quoted names: the key by its datamart column names');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT count(*) FROM sluice.verify('v', ARRAY['"Mart ""V"""."acct"'::regclass], max_keys => 2) WHERE jsonb_array_length(keys) = 2 AND differences = 4}),
	'1', 'tables and max_keys arguments: one table, keys capped, all counted');

# events queued for the webhook
ok($mart->safe_psql('postgres', "SELECT count(*) FROM sluice._outbox WHERE event = 'verification' AND pipeline = 'v' AND (body->>'differences')::int = 7") >= 1,
	'a verification event is queued with the number of differences');

# --- 3. repair: the differing keys re-copied, as a version ---
$live->safe_psql('postgres', "UPDATE app.acct SET note = 'n1 again' WHERE id = 1");   # a backlog too
is($mart->safe_psql('postgres', q{SET ROLE ops;
SELECT string_agg(target_table || ':' || differences || ':' || rows_deleted || ':' || rows_inserted, ' ' ORDER BY target_table)
  FROM sluice.repair('v')}),
	'Odd "Name" T:1:1:1 acct:4:3:3 busy:0:0:0 nokey:2:1:1', 'repair deletes and re-copies only the differing keys');
my $repair_run = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'v' AND kind = 'repair'");
ok($repair_run > 0, 'the repair is a version');
is($mart->safe_psql('postgres', qq{SELECT string_agg(id || ':' || owner, ',' ORDER BY id) FROM "Mart ""V""_history".acct WHERE _sluice_superseded = $repair_run}),
	'10:hacked,100:owner 100,99999:extra', 'the history table keeps the rows the repair replaced');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM $acct WHERE _sluice_version = $repair_run}), '3', 'the re-copied rows carry the repair\'s version');
is($mart->safe_psql('postgres', qq{SELECT owner FROM "Mart ""V""".acct_at($repair_run - 1) WHERE id = 10}), 'hacked',
	'time travel before the repair still reads what the datamart had');
is(acct_sum($mart, $acct, 'owner'), acct_sum($live, 'app.acct', 'owner'), 'after repair: acct equals live');
same_tables($live, $mart, [['app.nokey', '"Mart ""V""".nokey']], 'after repair');
is($mart->safe_psql('postgres', qq{SELECT count(*) || ':' || md5(string_agg(r::text, '|' ORDER BY r::text COLLATE "C")) FROM (SELECT "Key Col", "key", "Value's" FROM $odd) r}),
	$live->safe_psql('postgres', q{SELECT count(*) || ':' || md5(string_agg(r::text, '|' ORDER BY r::text COLLATE "C")) FROM (SELECT "Key Col", "key", "Value's" FROM app."Odd ""Name"" T") r}),
	'after repair: the quoted table equals live');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT count(*) FROM sluice.repair('v') WHERE run_id IS NULL AND differences = 0}), '4',
	'a second repair finds nothing and records no run');
is(verify('v'), join("\n", 'Odd "Name" T:200:0', 'acct:2989:0', 'busy:500:0', 'nokey:101:0'), 'after repair: re-verify reports zero differences');

# --- 3b. what the per-column hashes must still tell apart ---
# values swapped between two rows, between two columns of a row, and an
# empty string against a null: each changes no count and no multiset of
# column values, only which row or column holds them
$live->safe_psql('postgres', "UPDATE app.acct SET note = '' WHERE id = 41");
$mart->safe_psql('postgres', qq{
UPDATE $acct m SET owner = o.owner FROM (SELECT id, owner FROM $acct WHERE id IN (30, 31)) o
 WHERE m.id IN (30, 31) AND o.id = 61 - m.id;
UPDATE $acct SET owner = note, note = owner WHERE id = 50;
});
is($mart->safe_psql('postgres', q{SET ROLE ops;
SELECT differences || ' ' || (SELECT string_agg((k->>'kind') || ' ' || (k->'key'->>'id'), ', ' ORDER BY (k->'key'->>'id')::int)
                                FROM jsonb_array_elements(keys) k)
  FROM sluice.verify('v', ARRAY['"Mart ""V"""."acct"'::regclass])}),
	'3 different 30, different 31, different 50', 'values swapped between rows and between columns are found');
$mart->safe_psql('postgres', qq{UPDATE $acct SET note = NULL WHERE id = 41});
is($mart->safe_psql('postgres', q{SET ROLE ops;
SELECT differences FROM sluice.verify('v', ARRAY['"Mart ""V"""."acct"'::regclass])}), '4', 'a null where live has an empty string is found');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT differences || ':' || rows_inserted FROM sluice.repair('v', ARRAY['"Mart ""V"""."acct"'::regclass])}),
	'4:4', 'repaired');
is(verify('v', ", ARRAY['$acct'::regclass]"), 'acct:2989:0', 'and equal again');

# --- 3c. columns hashed by value (their type's hash function) or from their text ---
# every type hashed by value, and those hashed from their text, changed in
# one row each by hand: a numeric's scale alone, a microsecond, a byte, a
# float's -0 against 0, '1 day' against '24 hours', a null
my $typed = '"typed"."Typed Ü"';
$live->safe_psql('postgres', "ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf()");
is(verify('t'), 'Typed Ü:400:0', 'typed columns: an equal copy, zero differences');
my $livelog = slurp_file($live->logfile);
like($livelog, qr/pg_catalog\.timestamp_hash_extended\(\(CAST\(tz AS pg_catalog\."timestamp"\)\), 6\)/,
	'live hashes a timestamptz by value, as a timestamp');
like($livelog, qr/pg_catalog\.timestamp_hash_extended\(\(ts\), 7\)/, '... a timestamp by value');
like($livelog, qr/pg_catalog\.uuid_hash_extended\(\(u\), 10\)/, '... a uuid by value');
like($livelog, qr/pg_catalog\.hashtextextended\(\(t\) COLLATE pg_catalog\."C", 4\)/, '... a text by value, byte-wise');
like($livelog, qr/pg_catalog\.hashtextextended\(\(iv\)::pg_catalog\.text COLLATE pg_catalog\."C", 14\)/, '... an interval from its text');
like($livelog, qr/pg_catalog\.hashtextextended\(\(n\)::pg_catalog\.text COLLATE pg_catalog\."C", 3\)/, '... a numeric from its text (its scale too)');
$live->safe_psql('postgres', "ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()");
$mart->safe_psql('postgres', qq{
UPDATE $typed SET n = 1.50 WHERE id = 1;
UPDATE $typed SET s = s + 1 WHERE id = 2;
UPDATE $typed SET t = 't3 Ü' WHERE id = 3;
UPDATE $typed SET vc = 'v4 ' WHERE id = 4;
UPDATE $typed SET tz = tz + interval '1 microsecond' WHERE id = 5;
UPDATE $typed SET ts = ts - interval '1 microsecond' WHERE id = 6;
UPDATE $typed SET d = d + 1 WHERE id = 7;
UPDATE $typed SET tm = tm + interval '1 microsecond' WHERE id = 8;
UPDATE $typed SET u = md5('x')::uuid WHERE id = 9;
UPDATE $typed SET b = NOT b WHERE id = 10;
UPDATE $typed SET "by" = "by" || '\\x00'::bytea WHERE id = 11;
UPDATE $typed SET f = '-0' WHERE id = 14;
UPDATE $typed SET iv = interval '1 day' WHERE id = 24;
UPDATE $typed SET j = jsonb_build_object('g', 15, 'x', 7.50) WHERE id = 15;
UPDATE $typed SET tz = NULL WHERE id = 16;
UPDATE $typed SET u = u WHERE id = 17;
});
is($mart->safe_psql('postgres', q{SET ROLE ops;
SELECT differences || ' ' || (SELECT string_agg(k->'key'->>'id', ',' ORDER BY (k->'key'->>'id')::int) FROM jsonb_array_elements(keys) k)
  FROM sluice.verify('t')}),
	'15 1,2,3,4,5,6,7,8,9,10,11,14,15,16,24', 'each changed value is found, a numeric\'s scale alone too');
is($mart->safe_psql('postgres', q{SET ROLE ops; SELECT differences || ':' || rows_inserted FROM sluice.repair('t')}), '15:15', 'repaired');
is(verify('t'), 'Typed Ü:400:0', 'and equal again');

# --- 4. live written during verifications: no false difference ---
my $bg = $live->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/writing/, q{\echo writing
DO $$
BEGIN
  FOR i IN 1..1000000 LOOP
    UPDATE app.busy SET v = v + 1 WHERE id = 1 + i % 500;
    INSERT INTO app.busy VALUES (1000 + i, i);
    IF i % 3 = 0 THEN DELETE FROM app.busy WHERE id = 1000 + i - 1; END IF;
    COMMIT;
    EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'stop_busy');
  END LOOP;
END $$;
});
my $false = 0;
my $verifs = 0;
my $last_lsn = '0/0';
for my $i (1 .. 4)
{
	my $r = $mart->safe_psql('postgres', q{SET ROLE ops;
SELECT differences || ' ' || rows_compared || ' ' || at_lsn FROM sluice.verify('v', ARRAY['"Mart ""V"""."busy"'::regclass])});
	my ($d, $rows, $lsn) = split / /, $r;
	$false += $d;
	$verifs++ if $rows > 500;
	$last_lsn = $lsn;
}
is($false, 0, 'four verifications while live writes: no false difference');
ok($verifs >= 3, "the verifications saw live grow ($verifs of 4)");
$live->safe_psql('postgres', "SET application_name = 'stop_busy'; SELECT pg_sleep(0.5)");
$live->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE 'DO%busy%' AND state <> 'idle' AND pid <> pg_backend_pid()")
  or die 'the writing loop did not stop';
$bg->quit;

# --- 5. a renamed column: paused with a backlog, then mapped ---
$live->safe_psql('postgres', q{
ALTER TABLE app.acct RENAME COLUMN owner TO holder;
UPDATE app.acct SET holder = holder || '!' WHERE id <= 5;
});
my ($ret, $out, $err) = $mart->psql('postgres', "SET ROLE ops; SELECT * FROM sluice.refresh('v')");
like($err, qr/paused/, 'the rename pauses the pipeline');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE ops; SELECT * FROM sluice.verify('v')");
like($err, qr/pipeline "v" is paused with changes it has not applied/, 'verify refuses a paused pipeline with a backlog');
like($err, qr/HINT:  Fix the cause, call sluice.resume\('v'\)/, '... with a hint');
$mart->safe_psql('postgres', qq{SET ROLE ops;
SELECT sluice.map_column('$acct', 'owner', 'holder');
SELECT sluice.resume('v');
SELECT * FROM sluice.refresh('v');
});
is(verify('v', ", ARRAY['$acct'::regclass]"), 'acct:2989:0', 'renamed contract column (owner fed by holder): zero differences');
$mart->safe_psql('postgres', "UPDATE $acct SET owner = 'x' WHERE id = 3");
is($mart->safe_psql('postgres', "SET ROLE ops; SELECT keys FROM sluice.verify('v', ARRAY['$acct'::regclass])"),
	'[{"key": {"id": "3"}, "kind": "different"}]', 'a difference in the renamed column is found');
$mart->safe_psql('postgres', "UPDATE $acct SET owner = 'owner 3!' WHERE id = 3");

# --- 6. statement_timeout in the middle leaves nothing ---
$live->safe_psql('postgres', "UPDATE app.acct SET balance = 0 WHERE id = 1");
my $before = acct_sum($mart, $acct, 'owner');
my $nv = $mart->safe_psql('postgres', "SELECT count(*) FROM sluice.verifications");
my $nr = $mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs");
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE ops; SET statement_timeout = '2s'; SELECT * FROM sluice.verify('v', rows_per_second => 100)");
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout cancels a throttled verification');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.verifications"), $nv, 'no verification recorded');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs"), $nr, 'its catch-up rolled back');
is(acct_sum($mart, $acct, 'owner'), $before, 'the datamart is as before');
ok($live->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'sluice_verify%'"),
	'no temporary slot left on live');
ok($live->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE state <> 'idle' AND (query LIKE '%md5%' OR query LIKE '%hash%extended%') AND pid <> pg_backend_pid()"),
	'no verification query left running on live');
is(verify('v', ", ARRAY['$acct'::regclass]"), 'acct:2989:0', 'the next verification works');

# --- 7. throttled: the rate holds ---
my $t0 = time;
is(verify('v', ", ARRAY['$odd'::regclass], rows_per_second => 400"), 'Odd "Name" T:200:0', 'a throttled verification');
ok(time - $t0 >= 0.4, 'it took at least rows / rate');

# --- 8. who may ---
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT count(*) FROM sluice.verifications"), '0', 'a reader sees no verification');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT * FROM sluice.verify('v')");
like($err, qr/permission denied for function verify/, 'a reader cannot verify');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT * FROM sluice._verification");
like($err, qr/permission denied for table _verification/, 'nor read the private table');
ok($mart->safe_psql('postgres', "SET ROLE ops; SELECT count(*) FROM sluice.verifications") > 0, 'an operator sees its pipelines\' verifications');

# retention: the last verification of each table stays
is($mart->safe_psql('postgres', "SET ROLE ops; SELECT sluice.purge_verifications('0 seconds') > 0"), 't', 'purge_verifications deletes old verifications');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.verifications WHERE pipeline = 'v'"), '4', '... keeping the last of each table');

# --- 9. clear errors ---
($ret, $out, $err) = $mart->psql('postgres', "SELECT * FROM sluice.verify('nope')");
like($err, qr/pipeline "nope" does not exist/, 'unknown pipeline');
($ret, $out, $err) = $mart->psql('postgres', "SELECT * FROM sluice.verify('v', ARRAY['w.wide'::regclass])");
like($err, qr/table "w.wide" is not in pipeline "v"/, 'a table of another pipeline');
like($err, qr/HINT:  sluice.pipeline_tables lists/, '... with a hint');
($ret, $out, $err) = $mart->psql('postgres', "SELECT * FROM sluice.verify('v', rows_per_second => -1)");
like($err, qr/rows_per_second must not be negative/, 'a negative rate');

done_testing();
