# Two apply fast paths against real servers.
#
# Key lookups (apply.c, find_row_by_key): updates and deletes find their row
# through one index scan per table, kept open for the refresh and rescanned
# for each row, with scan keys built once.  Rows updated again and again,
# keys that change, deletes and re-inserts of a key, a compound key whose
# columns are not in table order, a TRUNCATE in the middle of a refresh, a
# session still writing a row (waited for) and one holding a KEY SHARE lock.
#
# Two-part decoding (refresh.c): a refresh whose backlog is at least
# pg_sluice.split_decoding_min decodes its second half on a second
# connection from a temporary copy of the slot.  Transactions interleaved
# across the split point, one big transaction spanning it, and the fallback
# when the source has no replication slot left.
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
CREATE TABLE app.k (id int PRIMARY KEY, v text, n int);
CREATE TABLE app.k2 (a int, b text, c int, PRIMARY KEY (b, a));
CREATE TABLE app.big (id bigint PRIMARY KEY, v text);
CREATE TABLE app.ts (id int PRIMARY KEY, a timestamptz, b timestamp, c timestamp(0), d timestamptz(2));
INSERT INTO app.k SELECT g, 'v' || g, g FROM generate_series(1, 20000) g;
INSERT INTO app.k2 SELECT g, 'k' || (g % 7), g FROM generate_series(1, 5000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('p', 'live', ARRAY['app.k', 'app.k2', 'app.big', 'app.ts'], target_schema => 'm')});
my @pairs = (['app.k', 'm.k'], ['app.k2', 'm.k2'], ['app.big', 'm.big'], ['app.ts', 'm.ts']);

sub refresh
{
	my ($label, $set) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres',
		($set // '') . "SELECT rows_inserted, rows_updated, rows_deleted FROM sluice.refresh('p')");
	is($ret, 0, "$label: refresh succeeds") or diag($err);
	return wantarray ? ($out, $err) : $out;
}

# --- 0. timestamps: read without timestamp_recv when they have no typmod ---
$live->safe_psql('postgres', q{
INSERT INTO app.ts VALUES
  (1, 'infinity', '-infinity', 'infinity', '-infinity'),
  (2, '4714-11-24 00:00:00+00 BC', '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC'),
  (3, '294276-12-31 23:59:59.999999+00', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59', '294276-12-31 23:59:59.99+00'),
  (4, '2026-11-25 12:34:56.789012+05:30', '2026-11-25 12:34:56.789012', '2026-11-25 12:34:57', '2026-11-25 12:34:56.79+00'),
  (5, NULL, NULL, NULL, NULL);
UPDATE app.ts SET a = a - interval '1 microsecond', d = d - interval '1 second' WHERE id IN (3, 4);
});
refresh('timestamps');
same_tables($live, $mart, [['app.ts', 'm.ts']], 'timestamps at their limits');
is($mart->safe_psql('postgres', "SELECT string_agg(a::text || '|' || b || '|' || c || '|' || d, ',' ORDER BY id) FROM m.ts WHERE id <= 3"),
   $live->safe_psql('postgres', "SELECT string_agg(a::text || '|' || b || '|' || c || '|' || d, ',' ORDER BY id) FROM app.ts WHERE id <= 3"),
   'infinities and the extreme values arrive as they are');

# --- 1. the same rows updated in refresh after refresh ---
# From the second round on, the key index holds entries for row versions
# earlier refreshes made dead: lookups mark them dead as they pass, on the
# same pages the updates insert into.
for my $round (1 .. 3)
{
	$live->safe_psql('postgres', qq{
UPDATE app.k SET v = v || '$round', n = n + 1;
UPDATE app.k SET v = v || 'x' WHERE id % 2 = 0;
UPDATE app.k2 SET c = c + $round WHERE a % 2 = 0;
});
	is(refresh("round $round"), '0|32500|0', "round $round: every update applied");
	same_tables($live, $mart, \@pairs, "round $round");
}

# --- 2. keys that change, deletes and re-inserts, TRUNCATE in between ---
$live->safe_psql('postgres', q{
UPDATE app.k SET id = id + 100000 WHERE id % 3 = 0;
DELETE FROM app.k WHERE id % 5 = 0;
INSERT INTO app.k SELECT g, 'back', 0 FROM generate_series(5, 20000, 5) g;
UPDATE app.k SET n = -n WHERE id % 5 = 0;
DELETE FROM app.k WHERE id > 100000 AND id % 2 = 0;
UPDATE app.k2 SET c = 0 WHERE a % 3 = 0;
TRUNCATE app.k2;
INSERT INTO app.k2 SELECT g, 'k' || (g % 7), -g FROM generate_series(1, 3000) g;
UPDATE app.k2 SET c = 1 WHERE a % 3 = 0;
UPDATE app.k2 SET b = b || 'z' WHERE a % 10 = 0;
DELETE FROM app.k2 WHERE a % 4 = 0;
});
refresh('keys changed');
same_tables($live, $mart, \@pairs, 'keys changed, deleted, re-inserted, truncated');

# --- 3. a datamart session writing a row the refresh must update ---
my $writer = $mart->background_psql('postgres');
$writer->query_safe("BEGIN; UPDATE m.k SET v = 'held' WHERE id = 7;");
$live->safe_psql('postgres', "UPDATE app.k SET v = 'from live' WHERE id IN (1, 7, 8)");
my $bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSELECT rows_updated FROM sluice.refresh('p');\n\\echo done\n");
ok($mart->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE query LIKE '%sluice.refresh%' AND wait_event = 'transactionid'}),
	'the refresh waits for the session writing the row');
# the writer commits: the refresh looks the row up again and updates the
# version the writer left (updating the one it saw would fail)
$writer->query_safe('COMMIT');
$bg->query_until(qr/done/, '');
$bg->quit;
same_tables($live, $mart, [['app.k', 'm.k']], 'after waiting for the writer');

# a KEY SHARE lock (what a foreign key referencing the row takes) does not
# block an update that leaves the key alone
$writer->query_safe("BEGIN; SELECT 1 FROM m.k WHERE id = 2 FOR KEY SHARE;");
$live->safe_psql('postgres', "UPDATE app.k SET v = 'shared' WHERE id = 2");
is(refresh('under KEY SHARE'), '0|1|0', 'update applied under a KEY SHARE lock');
$writer->query_safe('COMMIT');
$writer->quit;
same_tables($live, $mart, [['app.k', 'm.k']], 'after the KEY SHARE lock');

# --- 4. a refresh decoded in two parts ---
# One transaction begins before many small ones and commits after them, so
# it spans the split point; the others fall on both sides of it.
my $split = "SET pg_sluice.split_decoding_min = '64kB'; SET client_min_messages = debug1;\n";
my $long = $live->background_psql('postgres');
$long->query_safe("BEGIN; INSERT INTO app.big SELECT g, 'long' FROM generate_series(1, 5000) g;");
$live->safe_psql('postgres', join('', map { "UPDATE app.k SET n = n + 1 WHERE id % 97 = $_;\n" } 0 .. 96));
$live->safe_psql('postgres', join('', map { "INSERT INTO app.big VALUES (" . (100000 + $_) . ", 'small');\n" } 1 .. 200));
$long->query_safe("INSERT INTO app.big SELECT g, 'long' FROM generate_series(5001, 10000) g; COMMIT;");
$long->quit;
$live->safe_psql('postgres', "DELETE FROM app.big WHERE id % 7 = 0");
my ($out, $err) = refresh('two parts', $split);
like($err, qr/decodes .* in two parts/, 'the refresh decoded in two parts');
like($err, qr/first part done after \d+ messages/, 'it went on with the second part on the second connection');
unlike($err, qr/could not decode the second part/, 'the second part needed no fallback');
same_tables($live, $mart, \@pairs, 'after a refresh in two parts');
# (a temporary slot: live drops it when the backend of the second
# connection exits, after the refresh closed it)
ok($live->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'sluice_split%'"),
	'the temporary slot is gone');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots"), '1', 'only the pipeline\'s slot remains');

# --- 5. no replication slot left on the source: the second part follows the first ---
my $used = $live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots");
$live->safe_psql('postgres', join('', map { "SELECT pg_create_physical_replication_slot('filler_$_');\n" } 1 .. (10 - $used)));
$live->safe_psql('postgres', join('', map { "INSERT INTO app.big VALUES (" . (200000 + $_) . ", 'fallback');\n" } 1 .. 300));
$live->safe_psql('postgres', "UPDATE app.big SET v = v || '!' WHERE id % 3 = 0");
my $logpos = -s $mart->logfile;
($out, $err) = refresh('no slot left', $split);
like($err, qr/decodes .* in two parts/, 'the refresh tried two parts');
ok($mart->wait_for_log(qr/could not decode the second part of its refresh on a second connection; decoding it after the first/, $logpos),
	'the datamart logs the fallback');
same_tables($live, $mart, \@pairs, 'after the fallback');
$live->safe_psql('postgres', join('', map { "SELECT pg_drop_replication_slot('filler_$_');\n" } 1 .. (10 - $used)));

# --- 5b. the source refuses a second connection: one part ---
$live->safe_psql('postgres', q{
CREATE ROLE sl_one LOGIN REPLICATION CONNECTION LIMIT 1;
GRANT USAGE ON SCHEMA app TO sl_one;
GRANT SELECT ON ALL TABLES IN SCHEMA app TO sl_one;
});
my $one_conn = $live->connstr('postgres') . ' user=sl_one';
$mart->safe_psql('postgres', "SELECT sluice.alter_source('live', \$\$$one_conn\$\$)");
$live->safe_psql('postgres', join('', map { "INSERT INTO app.big VALUES (" . (300000 + $_) . ", 'one');\n" } 1 .. 300));
$logpos = -s $mart->logfile;
($out, $err) = refresh('one connection allowed', $split);
unlike($err, qr/decodes .* in two parts/, 'no second connection: one part');
ok($mart->wait_for_log(qr/could not open a second connection to source "live"/, $logpos),
	'the datamart logs the refused connection');
like(slurp_file($mart->logfile, $logpos), qr/too many connections for role "sl_one"/, 'with the source\'s reason');
same_tables($live, $mart, \@pairs, 'with one connection');
$mart->safe_psql('postgres', "SELECT sluice.alter_source('live', \$\$" . $live->connstr('postgres') . "\$\$)");

# --- 5c. TRUNCATE while a session holds an autovacuum's lock on the table ---
# An (auto)vacuum or analyze holds SHARE UPDATE EXCLUSIVE on the table and, at
# its end, updates the table's pg_class row in place, waiting for any
# transaction that updated that row.  The refresh must take its
# ACCESS EXCLUSIVE lock before its TRUNCATE touches pg_class (it used to
# take a lock only when rebuilding the indexes: a deadlock).
my $vac = $mart->background_psql('postgres');
$vac->query_safe('BEGIN; LOCK TABLE m.k2 IN SHARE UPDATE EXCLUSIVE MODE;');
$live->safe_psql('postgres', "TRUNCATE app.k2; INSERT INTO app.k2 VALUES (1, 'a', 1), (2, 'b', 2);");
$bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, "\\echo started\nSELECT rows_inserted, tables_truncated FROM sluice.refresh('p');\n\\echo done\n");
ok($mart->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE query LIKE '%sluice.refresh%' AND wait_event_type = 'Lock' AND wait_event = 'relation'}),
	'the refresh waits for the table lock before it truncates');
$vac->query_safe('ANALYZE m.k2; COMMIT;');
$vac->quit;
my $done = $bg->query_until(qr/done/, '');
like($done, qr/2\|1/, 'the refresh truncated and loaded the table');
$bg->quit;
same_tables($live, $mart, [['app.k2', 'm.k2']], 'after TRUNCATE next to a vacuum');

# --- 6. nothing applied twice: the next refresh finds nothing new ---
is(refresh('after all', $split), '0|0|0', 'the next refresh applies nothing');
same_tables($live, $mart, \@pairs, 'in the end');

done_testing();
