# Versions between two real servers.  A property test: random inserts,
# updates (TOASTed values changed and unchanged, key changes), deletes and a
# TRUNCATE on live across many refreshes; for every retained version,
# <table>_at(version) equals the live table captured when that version was
# taken.  Then time travel by timestamp, tags as schemas of views, diff,
# retention, bad input.
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
CREATE TABLE app.acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2), note text);
ALTER TABLE app.acct ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE app.pair (a int, b text, v int, PRIMARY KEY (a, b));
CREATE TABLE app.nokey (x int, y text);
ALTER TABLE app.nokey REPLICA IDENTITY FULL;
INSERT INTO app.nokey SELECT g, 'y' || g FROM generate_series(1, 20) g;
INSERT INTO app.acct SELECT g, 'owner ' || g, g * 10, CASE WHEN g % 20 = 0 THEN repeat(md5(g::text), 300) ELSE 'n' || g END
  FROM generate_series(1, 500) g;
INSERT INTO app.pair SELECT g % 50, 'k' || (g / 50), g FROM generate_series(1, 300) g;
-- snapshots of live at every version, for the comparison
CREATE TABLE public.snap_acct (version bigint, id int, owner text, balance numeric(12,2), note text);
CREATE TABLE public.snap_pair (version bigint, a int, b text, v int);
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('v', 'live', ARRAY['app.acct', 'app.pair', 'app.nokey'])");
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.keep_history('v')");
my $v0 = $out;
like($err, qr/table v.nokey has no key \(REPLICA IDENTITY FULL\): no history is kept for it/, 'keyless tables keep no history');
ok($v0 > 0, "history kept from version $v0");

sub snapshot
{
	my ($v) = @_;
	$live->safe_psql('postgres', "INSERT INTO public.snap_acct SELECT $v, * FROM app.acct; INSERT INTO public.snap_pair SELECT $v, * FROM app.pair");
}
snapshot($v0);

# --- random changes over many refreshes ---
srand(20261125);
my @versions = ($v0);
my $next_id = 10000;
for my $round (1 .. 14)
{
	my @sql;
	for (1 .. 12)
	{
		my $op = int(rand(8));
		my $id = 1 + int(rand(600));
		if ($op == 0) { push @sql, "INSERT INTO app.acct VALUES ($next_id, 'new $next_id', " . int(rand(1000)) . ", 'fresh') ON CONFLICT DO NOTHING"; $next_id++; }
		elsif ($op == 1) { push @sql, "UPDATE app.acct SET balance = balance + " . int(rand(100)) . " WHERE id % 7 = $id % 7 AND id < $id"; }
		elsif ($op == 2) { push @sql, "UPDATE app.acct SET note = repeat(md5(random()::text), 300) WHERE id = $id"; }
		elsif ($op == 3) { push @sql, "UPDATE app.acct SET owner = owner || '+' WHERE id BETWEEN $id AND $id + 30"; }   # unchanged TOAST
		elsif ($op == 4) { push @sql, "UPDATE app.acct SET id = id + 100000 WHERE id = $id"; }                            # key change
		elsif ($op == 5) { push @sql, "DELETE FROM app.acct WHERE id BETWEEN $id AND $id + 5"; }
		elsif ($op == 6) { push @sql, "UPDATE app.pair SET v = v + 1 WHERE a = " . ($id % 50); }
		else { push @sql, "DELETE FROM app.pair WHERE a = " . ($id % 50) . "; INSERT INTO app.pair VALUES (" . ($id % 50) . ", 'k$round', $round) ON CONFLICT DO NOTHING"; }
	}
	push @sql, "UPDATE app.nokey SET y = y || '.' WHERE x % 3 = $round % 3; DELETE FROM app.nokey WHERE x = $round";
	push @sql, "TRUNCATE app.pair; INSERT INTO app.pair SELECT g, 'after truncate', g FROM generate_series(1, 40) g" if $round == 9;
	$live->safe_psql('postgres', join(";\n", @sql));
	my $res = $mart->safe_psql('postgres', "SELECT run_id || ':' || transactions FROM sluice.refresh('v')");
	my ($v, $tx) = split /:/, $res;
	if ($tx > 0) { push @versions, $v; snapshot($v); }
	# an empty refresh makes no version
	if ($round == 5)
	{
		my $empty = $mart->safe_psql('postgres', "SELECT run_id FROM sluice.refresh('v')");
		is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.versions WHERE version = $empty"), '0', 'an empty refresh is not a version');
	}
}
ok(@versions >= 12, scalar(@versions) . ' versions taken');
is($mart->safe_psql('postgres', "SELECT bool_and((SELECT sum((x.value->>'inserted')::bigint + (x.value->>'updated')::bigint + (x.value->>'deleted')::bigint) FROM jsonb_each(tables) x) = rows_inserted + rows_updated + rows_deleted) FROM sluice.versions WHERE pipeline = 'v' AND kind = 'refresh'"),
	't', 'per-table counts add up to the totals');
is($mart->safe_psql('postgres', "SELECT string_agg(version::text, ',' ORDER BY version) FROM sluice.versions WHERE pipeline = 'v' AND queryable"),
	join(',', @versions), 'sluice.versions lists them, all queryable');

sub at_checksum
{
	my ($table, $cols, $v) = @_;
	return $mart->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '-') FROM (SELECT $cols FROM v.${table}_at($v)) t");
}
sub snap_checksum
{
	my ($table, $cols, $v) = @_;
	return $live->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '-') FROM (SELECT $cols FROM public.snap_$table WHERE version = $v) t");
}
my $ok = 1;
foreach my $v (@versions)
{
	for my $t (['acct', 'id, owner, balance, note'], ['pair', 'a, b, v'])
	{
		my ($got, $want) = (at_checksum($t->[0], $t->[1], $v), snap_checksum($t->[0], $t->[1], $v));
		if ($got ne $want) { $ok = 0; diag("version $v $t->[0]: got $got, live had $want"); }
	}
}
ok($ok, 'every version reads exactly as live was when it was taken (' . scalar(@versions) . ' versions x 2 tables)');
is(checksum($mart, 'v.acct'), $mart->safe_psql('postgres',
	"SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")) FROM (SELECT * FROM v.acct_at($versions[-1])) t"),
	'the latest version is the current table');

# history grows only with changed rows
my ($hist_rows, $hist_bytes) = split /\|/, $mart->safe_psql('postgres',
	"SELECT count(*), pg_table_size('v_history.acct') FROM v_history.acct");
my $changes = $mart->safe_psql('postgres', "SELECT sum(rows_updated + rows_deleted) FROM sluice.versions WHERE pipeline = 'v'");
diag("history: $hist_rows superseded rows for $changes updates and deletes, " . int($hist_bytes / ($hist_rows || 1)) . " bytes per row (table size / rows)");
ok($hist_rows <= $changes + 300, 'history holds superseded rows only (plus the truncated ones)');

same_tables($live, $mart, [['app.nokey', 'v.nokey']], 'a keyless table keeps replicating, without history');
($ret, $out, $err) = $mart->psql('postgres', "SELECT count(*) FROM sluice.diff('v.nokey', $v0, $v0)");
like($err, qr/no history is kept for v.nokey/, 'and says so');

# --- as of a time ---
my $mid = $versions[6];
is($mart->safe_psql('postgres', "SELECT count(*) FROM v.acct_at_time((SELECT committed_at FROM sluice.versions WHERE version = $mid))"),
	$live->safe_psql('postgres', "SELECT count(*) FROM public.snap_acct WHERE version = $mid"), 'as of a timestamp');

# --- tags: a schema of plain views for BI ---
is($mart->safe_psql('postgres', "SELECT sluice.tag('v', 'quarter_end', $mid)"), 'v_quarter_end', 'tag returns its schema');
is(checksum($mart, 'v_quarter_end.acct'), snap_checksum('acct', 'id, owner, balance, note', $mid), 'the tag schema shows the tagged version');
is($mart->safe_psql('postgres', "SELECT tags::text FROM sluice.versions WHERE version = $mid"), '{quarter_end}', 'versions shows the tag');
$live->safe_psql('postgres', "UPDATE app.acct SET balance = 0");
$mart->safe_psql('postgres', "SELECT sluice.refresh('v')");
is(checksum($mart, 'v_quarter_end.acct'), snap_checksum('acct', 'id, owner, balance, note', $mid), 'and keeps showing it after more refreshes');
my $last = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'v'");

# --- diff ---
my ($va, $vb) = ($versions[2], $versions[4]);
my $expected = $live->safe_psql('postgres', qq{
SELECT count(*) FILTER (WHERE x.id IS NULL) || ':' || count(*) FILTER (WHERE y.id IS NULL) || ':' ||
       count(*) FILTER (WHERE x.id IS NOT NULL AND y.id IS NOT NULL)
  FROM (SELECT * FROM snap_acct WHERE version = $va) x FULL JOIN (SELECT * FROM snap_acct WHERE version = $vb) y ON x.id = y.id
 WHERE x.id IS NULL OR y.id IS NULL OR (x.owner, x.balance, x.note) IS DISTINCT FROM (y.owner, y.balance, y.note)});
is($mart->safe_psql('postgres', "SELECT count(*) FILTER (WHERE change = 'added') || ':' || count(*) FILTER (WHERE change = 'removed') || ':' || count(*) FILTER (WHERE change = 'changed') FROM sluice.diff('v.acct', $va, $vb)"),
	$expected, "diff $va..$vb: added, removed, changed as in live's snapshots ($expected)");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.diff('v.acct', $vb, $vb)"), '0', 'no difference with itself');
is($mart->safe_psql('postgres', "SELECT key::text FROM sluice.diff('v.acct', $va, $vb) WHERE change = 'changed' ORDER BY (key->>'id')::int LIMIT 1") =~ /^\{"id": \d+\}$/ ? 1 : 0,
	1, 'diff gives each row\'s key');

# --- retention: keep the last 2 versions and the tagged one ---
my $purged = $mart->safe_psql('postgres', "SELECT sum(rows_purged) || ':' || sum(bytes_purged) FROM sluice.purge_history('v', keep_last => 2)");
my ($prows, $pbytes) = split /:/, $purged;
ok($prows > 0 && $pbytes > 0, "purge freed $prows rows, $pbytes bytes");
is($mart->safe_psql('postgres', "SELECT string_agg(version::text, ',' ORDER BY version) FROM sluice.versions WHERE pipeline = 'v' AND queryable"),
	join(',', sort { $a <=> $b } ($mid, $versions[-1], $last)), 'kept: the tagged version and the last two');
is(at_checksum('acct', 'id, owner, balance, note', $mid), snap_checksum('acct', 'id, owner, balance, note', $mid), 'a kept version still reads exactly');
is(at_checksum('acct', 'id, owner, balance, note', $versions[-1]), snap_checksum('acct', 'id, owner, balance, note', $versions[-1]), 'so does the other');
($ret, $out, $err) = $mart->psql('postgres', "SELECT count(*) FROM v.acct_at($versions[1])");
like($err, qr/version $versions[1] of pipeline "v" was purged/, 'a purged version refuses to be read');

# --- untag, bad input ---
$mart->safe_psql('postgres', "SELECT sluice.untag('v', 'quarter_end')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_namespace WHERE nspname = 'v_quarter_end'"), '0', 'untag drops the schema');
($ret, $out, $err) = $mart->psql('postgres', "SELECT count(*) FROM v.acct_at(0)");
like($err, qr/version 0 of pipeline "v" is not kept/, 'a version that was never kept');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.tag('v', 'Bad Name')");
like($err, qr/invalid tag name "Bad Name"/, 'bad tag name');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.tag('v', 'again', 999999)");
like($err, qr/version 999999 of pipeline "v" is not kept/, 'tag of an unknown version');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.purge_history('v')");
like($err, qr/say what to keep/, 'purge needs a rule');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.keep_history('nope')");
like($err, qr/pipeline "nope" does not exist/, 'keep_history of an unknown pipeline');

# drift under evolve keeps the history table in step
$mart->safe_psql('postgres', "SELECT sluice.set_drift_policy('v.acct', 'evolve')");
$live->safe_psql('postgres', "ALTER TABLE app.acct ADD COLUMN tier text; UPDATE app.acct SET tier = 'gold' WHERE id < 50");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('v')"), 'succeeded', 'evolve with history');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_attribute WHERE attrelid = 'v_history.acct'::regclass AND attname = 'tier'"), '1',
	'the history table got the new column');
is($mart->safe_psql('postgres', "SELECT count(*) FROM v.acct_at((SELECT max(version) FROM sluice.versions)) WHERE tier = 'gold'"),
	$live->safe_psql('postgres', "SELECT count(*) FROM app.acct WHERE tier = 'gold'"), 'and reads back');

# as-of reads are inlined into the query: no function scan, a plain UNION ALL
like($mart->safe_psql('postgres', "EXPLAIN SELECT count(*) FROM v.acct_at($versions[-1])"), qr/Append/, 'as-of is inlined (Append of the two tables)');
unlike($mart->safe_psql('postgres', "EXPLAIN SELECT count(*) FROM v.acct_at($versions[-1])"), qr/Function Scan/, 'no function scan');

# dropping the pipeline with its tables takes history, functions and tags along
$mart->safe_psql('postgres', "SELECT sluice.tag('v', 'last')");
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('v', drop_tables => true)");
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_namespace WHERE nspname IN ('v', 'v_history', 'v_last')"), '0',
	'drop_pipeline(drop_tables) removes the tables, history and tag schemas');

done_testing();
