# ALTER EXTENSION pg_sluice UPDATE from 0.1, for real: a datamart built and
# fed by the 0.1 library, then updated in place by the library under test.
#
# The 0.1 library is built here from 0.1's sources (git archive of the
# commit that released it, which "make upgrade-sources" writes to
# test/upgrade/ in a git clone; scripts/test.sh does).  The datamart server
# runs from a private copy of the PostgreSQL installation (PostgreSQL finds
# share/ and lib/ relative to its binaries) holding 0.1's files; live runs
# from the system's.  Under 0.1: pipelines with history, expectations (row
# predicate, not null, in set, unique), quarantined rows, a tag, a
# destination and its pending events, refreshes with writes in between.
# Then the server stops, the tree's build replaces 0.1's files, and
# ALTER EXTENSION pg_sluice UPDATE.  Checked after it:
#   * the extension's objects are exactly those of a fresh CREATE EXTENSION
#     (test/extension_objects.sql; the diff is printed otherwise): every
#     later catalog change must ship its upgrade script;
#   * the migrated data: owners, bound expectation trees equal to those a
#     declaration stores, quarantine keys;
#   * it goes on working: more writes and refreshes, live and datamart
#     equal, versions made under 0.1 read as before, tags resolve,
#     expectations record results, quarantine entries held under 0.1 are
#     released, discarded, or superseded by a later change of their key.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Copy qw(copy);
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $from = '0.1';
my $top = $ENV{TESTDIR} // '.';
my $tar = "$top/test/upgrade/pg_sluice-$from.tar";
plan skip_all => "no sources of pg_sluice $from ($tar): \"make upgrade-sources\" writes them from git "
  . "(scripts/test.sh does); a tree without .git, such as a PGXN zip, cannot test the upgrade"
  unless -f $tar;

# --- the private installation, with 0.1 ---------------------------------
my $pg_config = 'pg_config';    # the server's (make tapcheck puts its bin first in PATH)
my ($bindir, $sharedir, $pkglibdir) = map {
	my $d = `$pg_config --$_`;
	die "$pg_config --$_ failed" if $?;
	chomp $d;
	$d
} qw(bindir sharedir pkglibdir);
my $instdir = dirname($bindir);    # .../postgresql/15
my $work = PostgreSQL::Test::Utils::tempdir('upgrade');
my $prefix = "$work/pg";

make_path("$work/src", $prefix . dirname($instdir), $prefix . dirname($sharedir));
ok(run_log([ 'tar', '-xf', $tar, '-C', "$work/src" ]), "0.1 sources unpacked from $tar");
ok(run_log([ 'make', '-s', '-j2', '-C', "$work/src", "PG_CONFIG=$bindir/pg_config" ]), 'the 0.1 library builds with PGXS')
  or die 'cannot build 0.1';
ok(run_log([ 'cp', '-a', $instdir, $prefix . dirname($instdir) . '/' ]), "$instdir copied");
ok(run_log([ 'cp', '-a', $sharedir, $prefix . dirname($sharedir) . '/' ]), "$sharedir copied");
unlink glob("$prefix$pkglibdir/pg_sluice.so $prefix$sharedir/extension/pg_sluice*");
ok(run_log([ 'make', '-s', '-C', "$work/src", 'install', "PG_CONFIG=$bindir/pg_config", "DESTDIR=$prefix" ]),
	'the 0.1 build installed into the private installation')
  or die 'cannot install 0.1';
# the copy is relocated: its binaries find its own share/ and lib/
foreach my $what ([ 'sharedir', $sharedir ], [ 'pkglibdir', $pkglibdir ])
{
	my $got = `$prefix$bindir/pg_config --$what->[0]`;
	chomp $got;
	is($got, "$prefix$what->[1]", "the private installation's $what->[0] is its own");
}

my $live = new_live('live');
my $mart = PostgreSQL::Test::Cluster->new('mart', install_path => "$prefix$instdir");
$mart->init;
$mart->start;
is($mart->safe_psql('postgres', "SELECT string_agg(version, ',' ORDER BY version) FROM pg_available_extension_versions WHERE name = 'pg_sluice'"),
	'0.1', 'the private installation offers pg_sluice 0.1 only');
$mart->safe_psql('postgres', 'CREATE EXTENSION pg_sluice');
is($mart->safe_psql('postgres', "SELECT sluice.version() || ' ' || extversion FROM pg_extension WHERE extname = 'pg_sluice'"),
	'0.1 0.1', 'the datamart runs pg_sluice 0.1, library and catalog');
my $boot = $mart->safe_psql('postgres', 'SELECT current_user');

# --- a 0.1 datamart with everything in it ---------------------------------
$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, ref text, customer text, amount numeric(10,2) NOT NULL,
                         status text NOT NULL);
CREATE TABLE app.stock (sku text PRIMARY KEY, qty int NOT NULL, note text);
INSERT INTO app.orders SELECT g, 'r' || g, 'c' || g % 17, g, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]
  FROM generate_series(1, 200) g;
INSERT INTO app.stock SELECT 's' || g, g, 'n' || g FROM generate_series(1, 50) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE alice SUPERUSER;
CREATE ROLE builder SUPERUSER;
SET ROLE alice;
SELECT sluice.create_pipeline('shop', 'live', ARRAY['app.orders']);
SET ROLE builder;
SELECT sluice.create_pipeline('inv', 'live', ARRAY['app.stock']);
RESET ROLE;
SELECT sluice.keep_history('shop');
SELECT sluice.keep_history('inv');
SELECT sluice.expect_row_to_satisfy('shop.orders', 'amount >= 0', severity => 'quarantine');
SELECT sluice.expect_column_values_to_be_in_set('shop.orders', 'status', ARRAY['new', 'paid', 'shipped'], severity => 'quarantine');
SELECT sluice.expect_column_values_to_not_be_null('shop.orders', 'customer', severity => 'warn');
SELECT sluice.expect_column_values_to_be_unique('shop.orders', ARRAY['ref'], severity => 'warn');
SELECT sluice.create_webhook('hook', 'http://127.0.0.1:9/hook');
});

sub refresh_both
{
	my ($label) = @_;
	foreach my $p ('shop', 'inv')
	{
		my ($rc, $out, $err) = $mart->psql('postgres', "SELECT (sluice.refresh('$p')).end_lsn IS NOT NULL");
		is("$rc $out", '0 t', "$label: refresh $p") or diag($err);
	}
}

for my $r (1 .. 3)
{
	my $b = 1000 + 10 * $r;
	$live->safe_psql('postgres', qq{
INSERT INTO app.orders SELECT g, 'r' || g, 'c' || g % 5, g / 10.0, 'new' FROM generate_series($b, $b + 4) g;
INSERT INTO app.orders VALUES (${\(2000 + $r)}, 'neg$r', 'c1', -$r, 'new');          -- held: amount < 0
INSERT INTO app.orders VALUES (${\(2100 + $r)}, 'lost$r', 'c2', $r, 'lost');         -- held: status
INSERT INTO app.orders VALUES (${\(2200 + $r)}, 'r1', NULL, $r, 'paid');             -- warned twice
UPDATE app.orders SET amount = amount + 1 WHERE id % 10 = $r AND id < 1000;
DELETE FROM app.orders WHERE id = 100 + $r;
UPDATE app.stock SET qty = qty + $r WHERE qty % 3 = $r % 3;
INSERT INTO app.stock VALUES ('x$r', $r, NULL);
DELETE FROM app.stock WHERE sku = 's$r';
});
	refresh_both("0.1, round $r");
	$mart->safe_psql('postgres', "SELECT sluice.tag('shop', 'before_upgrade')") if $r == 2;
}
# a key held twice under 0.1 (an insert, then an update that fails again)
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (3000, 'twice', 'c3', -1, 'new')");
refresh_both('0.1, held once');
$live->safe_psql('postgres', "UPDATE app.orders SET amount = -2 WHERE id = 3000");
refresh_both('0.1, held again');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quarantine WHERE row_data->>'id' = '3000' AND status = 'held'"),
	'2', '0.1 holds key 3000 twice');

# what 0.1 answers, to be answered the same after the update
my %at;
foreach my $t ([ 'shop', 'shop.orders' ], [ 'inv', 'inv.stock' ])
{
	my ($p, $tbl) = @$t;
	foreach my $v (split /\n/, $mart->safe_psql('postgres', "SELECT version FROM sluice.versions WHERE pipeline = '$p' AND queryable ORDER BY 1"))
	{
		$at{"${tbl}_at($v)"} = checksum($mart, "${tbl}_at($v)");
	}
}
cmp_ok(scalar(keys %at), '>=', 8, 'versions made under 0.1: ' . scalar(keys %at));
my $tag_schema = $mart->safe_psql('postgres', "SELECT schema_name FROM sluice.tags WHERE tag = 'before_upgrade'");
my $tag_version = $mart->safe_psql('postgres', "SELECT version FROM sluice.tags WHERE tag = 'before_upgrade'");
$at{"$tag_schema.orders"} = checksum($mart, "$tag_schema.orders");
my $held_01 = $mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quarantine WHERE status = 'held'");
is($held_01, '8', '0.1 holds 8 rows');
my $last_run_01 = $mart->safe_psql('postgres', 'SELECT max(run_id) FROM sluice.runs');
cmp_ok($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quality WHERE NOT success"), '>', 0,
	'0.1 recorded failed expectations');
my $events_01 = $mart->safe_psql('postgres', "SELECT count(*) || ':' || md5(string_agg(event_id || event || body::text, ',' ORDER BY event_id)) FROM sluice.events WHERE status = 'pending'");
unlike($events_01, qr/^0:/, '0.1 queued events for the destination');
# the creator of pipeline inv goes: its owner is then the extension's
$mart->safe_psql('postgres', "REASSIGN OWNED BY builder TO \"$boot\"; DROP OWNED BY builder; DROP ROLE builder");

# --- the update -------------------------------------------------------------
$mart->stop;
# the build under test, from the tree (make tapcheck runs after make)
copy("$top/pg_sluice.so", "$prefix$pkglibdir/pg_sluice.so") or die "copy $top/pg_sluice.so: $!";
foreach my $f (glob("$top/pg_sluice.control $top/pg_sluice--*.sql"))
{
	copy($f, "$prefix$sharedir/extension/") or die "copy $f: $!";
}
$mart->start;
is($mart->safe_psql('postgres', "SELECT string_agg(version, ',' ORDER BY version) FROM pg_available_extension_versions WHERE name = 'pg_sluice'"),
	'0.1,0.2', 'the current build offers 0.1 and 0.2');
my ($rc, $out, $err) = $mart->psql('postgres', 'ALTER EXTENSION pg_sluice UPDATE');
is($rc, 0, 'ALTER EXTENSION pg_sluice UPDATE') or diag($err);
is($mart->safe_psql('postgres', "SELECT sluice.version() || ' ' || extversion FROM pg_extension WHERE extname = 'pg_sluice'"),
	'0.2 0.2', 'library and catalog are 0.2');

# --- the catalog is a fresh 0.2's -----------------------------------------
$mart->safe_psql('postgres', 'CREATE DATABASE fresh');
$mart->safe_psql('fresh', 'CREATE EXTENSION pg_sluice');
my $objects = slurp_file("$top/test/extension_objects.sql");
my %cat;
foreach my $db ('postgres', 'fresh')
{
	$cat{$db} = $mart->safe_psql($db, $objects);
	open(my $fh, '>', "$work/objects.$db") or die;
	print $fh $cat{$db}, "\n";
	close $fh;
}
cmp_ok(scalar(split /\n/, $cat{fresh}), '>', 1000, 'extension_objects.sql describes the extension');
ok($cat{postgres} eq $cat{fresh}, 'the updated extension has exactly the objects of a fresh CREATE EXTENSION')
  or diag("diff fresh updated:\n" . `diff -u $work/objects.fresh $work/objects.postgres`);

# --- the data migrated --------------------------------------------------------
is($mart->safe_psql('postgres', q{SELECT string_agg(name || ':' || owner::text, ' ' ORDER BY name) FROM sluice._pipeline}),
	"inv:$boot shop:alice", "owners: the creator (alice), or the extension's owner when the creator is gone");
is($mart->safe_psql('postgres', q{
SELECT count(*) FROM sluice._expectation
 WHERE (predicate IS NULL) <> (predicate_tree IS NULL) OR (check_sql IS NULL) <> (check_tree IS NULL)
    OR (predicate_tree IS NULL) = (check_tree IS NULL)}), '0', 'every expectation has its bound tree');
# the trees are those a declaration under 0.2 stores
$mart->safe_psql('postgres', q{
SELECT sluice.add_expectation('shop.orders', 'expect_row_to_satisfy', '{}', '{"predicate": "amount >= 0"}', 'warn', 'again1');
SELECT sluice.add_expectation('shop.orders', 'expect_column_values_to_be_in_set', ARRAY['status'],
                              '{"value_set": ["new", "paid", "shipped"]}', 'warn', 'again2');
SELECT sluice.add_expectation('shop.orders', 'expect_column_values_to_be_unique', ARRAY['ref'], '{}', 'error', 'again3');});
is($mart->safe_psql('postgres', q{
SELECT string_agg(o.kind || ':' || (o.predicate_tree::text = n.predicate_tree::text OR o.check_tree::text = n.check_tree::text), ' ' ORDER BY o.kind)
  FROM sluice._expectation o JOIN sluice._expectation n ON n.kind = o.kind AND n.expectation_id > o.expectation_id
 WHERE o.kind IN ('expect_row_to_satisfy', 'expect_column_values_to_be_in_set', 'expect_column_values_to_be_unique')}),
	'expect_column_values_to_be_in_set:true expect_column_values_to_be_unique:true expect_row_to_satisfy:true',
	'migrated trees equal those 0.2 binds at declaration');
$mart->safe_psql('postgres', q{SELECT sluice.drop_expectation('shop.orders', 'again' || g) FROM generate_series(1, 3) g});
is($mart->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE row_key = jsonb_build_object('id', row_data->>'id')) || '/' || count(*) FROM sluice._quarantine}),
	'8/8', 'every quarantine entry has its key, as 0.2 writes it');
is($mart->safe_psql('postgres', q{
SELECT string_agg(q.status || ':' || coalesce(q.superseded_how, '-') || ':' || (q.superseded_by IS NOT NULL), ' ' ORDER BY q.quarantine_id)
  FROM sluice.quarantine q WHERE row_data->>'id' = '3000'}),
	'superseded:quarantined:true held:-:false', 'of a key held twice, the first entry is superseded by the second');

is($mart->safe_psql('postgres', "SELECT name || ' ' || kind || ' ' || url FROM sluice.destinations"), 'hook webhook http://127.0.0.1:9/hook',
	'the destination is kept');
is($mart->safe_psql('postgres', "SELECT count(*) || ':' || md5(string_agg(event_id || event || body::text, ',' ORDER BY event_id)) FROM sluice.events WHERE status = 'pending'"),
	$events_01, 'so are its pending events');

# --- what 0.1 made still answers ----------------------------------------------
foreach my $q (sort keys %at)
{
	is(checksum($mart, $q), $at{$q}, "after the update, $q reads as under 0.1");
}
is($mart->safe_psql('postgres', "SELECT version FROM sluice.tags WHERE tag = 'before_upgrade'"), $tag_version,
	'the tag still names its version');

# --- and it goes on -------------------------------------------------------------
$live->safe_psql('postgres', q{
INSERT INTO app.orders SELECT g, 'r' || g, 'c' || g % 7, g / 7.0, 'paid' FROM generate_series(5000, 5019) g;
INSERT INTO app.orders VALUES (5100, 'neg-after', 'c1', -5, 'new');     -- held under 0.2
INSERT INTO app.orders VALUES (5101, 'r2', NULL, 1, 'new');             -- warned
UPDATE app.orders SET amount = 7 WHERE id = 2001;                       -- held under 0.1, now fine
UPDATE app.orders SET amount = amount * 2 WHERE id BETWEEN 20 AND 40;
UPDATE app.orders SET status = 'shipped' WHERE id BETWEEN 1011 AND 1014;
DELETE FROM app.orders WHERE id IN (50, 51, 1021, 5005);
UPDATE app.stock SET qty = qty * 3, note = 'after' WHERE qty < 20;
INSERT INTO app.stock VALUES ('after1', 1, 'a'), ('after2', 2, NULL);
DELETE FROM app.stock WHERE sku IN ('s10', 'x1');
});
refresh_both('0.2, after the update');
is($mart->safe_psql('postgres', "SELECT coalesce(sum(rows_missing), 0) FROM sluice.runs WHERE run_id > $last_run_01"),
	'0', 'no update or delete found its row missing');
# (the datamart's tables have _sluice_version more: history is kept)
sub same_stock
{
	my ($label) = @_;
	is(checksum($mart, '(SELECT sku, qty, note FROM inv.stock) AS'), checksum($live, 'app.stock'),
		"$label: inv.stock equals live app.stock");
}
same_stock('0.2');
is($mart->safe_psql('postgres', q{
SELECT status || ':' || superseded_how FROM sluice.quarantine WHERE row_data->>'id' = '2001'}),
	'superseded:applied', 'the entry held under 0.1 is superseded by the later change of its key, applied');
is($mart->safe_psql('postgres', 'SELECT amount FROM shop.orders WHERE id = 2001'), '7.00', 'which is in the datamart');

sub open_keys
{
	return $mart->safe_psql('postgres', q{
SELECT coalesce(string_agg(row_key->>'id', ',' ORDER BY (row_key->>'id')::int), '0') FROM sluice.quarantine
 WHERE status = 'held' AND superseded_how IS NULL});
}
sub same_but_held
{
	my ($label) = @_;
	my $held = open_keys();
	is(checksum($mart, "(SELECT id, ref, customer, amount, status FROM shop.orders WHERE id NOT IN ($held)) AS"),
		checksum($live, "(SELECT * FROM app.orders WHERE id NOT IN ($held)) AS"),
		"$label: shop.orders equals live but for the held keys ($held)");
}
same_but_held('0.2');
# history across the update: versions of 0.1 unchanged by those of 0.2
# (checked before the release below: sluice.release_quarantined writes the
# held row with the _sluice_version it was held with, 0.1 and 0.2 alike, so
# the released row shows in the versions since then)
foreach my $q (sort grep { /_at\(/ } keys %at)
{
	is(checksum($mart, $q), $at{$q}, "after more versions, $q still reads as under 0.1");
}

# quarantine held under 0.1: release (corrected), discard
my $q2102 = $mart->safe_psql('postgres', "SELECT quarantine_id FROM sluice.quarantine WHERE row_data->>'id' = '2102'");
is($mart->safe_psql('postgres', "SELECT sluice.release_quarantined($q2102, '{\"status\": \"new\"}')"), 't',
	'a row held under 0.1 is released, corrected');
is($mart->safe_psql('postgres', "SELECT status FROM shop.orders WHERE id = 2102"), 'new', 'it is in the datamart');
my $q2103 = $mart->safe_psql('postgres', "SELECT quarantine_id FROM sluice.quarantine WHERE row_data->>'id' = '2103'");
is($mart->safe_psql('postgres', "SELECT sluice.discard_quarantined($q2103)"), 't', 'a row held under 0.1 is discarded');
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'new' WHERE id = 2102; DELETE FROM app.orders WHERE id = 2103");
refresh_both('0.2, after release and discard');
same_stock('0.2, later');
same_but_held('0.2, later');
is(open_keys(), '2002,2003,2101,3000,5100', 'the keys still held');

is($mart->safe_psql('postgres', "SELECT count(DISTINCT expectation) FROM sluice.quality WHERE run_id > $last_run_01 AND pipeline = 'shop'"),
	'4', 'every expectation declared under 0.1 is evaluated under 0.2');
cmp_ok($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quality WHERE run_id > $last_run_01 AND NOT success AND expectation LIKE '%not_be_null%'"), '>', 0,
	'and fails when it should');

# diff and time travel span versions of both
my $v_now = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'shop'");
is($mart->safe_psql('postgres', "SELECT count(*) FILTER (WHERE change = 'removed' AND key->>'id' = '50') FROM sluice.diff('shop.orders', $tag_version, $v_now)"),
	'1', 'sluice.diff spans a version of 0.1 and one of 0.2');
is(checksum($mart, "shop.orders_at($v_now)"), checksum($mart, 'shop.orders'), 'the newest version reads as the table');
$mart->safe_psql('postgres', "SELECT sluice.tag('shop', 'after_upgrade')");
is($mart->safe_psql('postgres', "SELECT string_agg(tag, ' ' ORDER BY tag) FROM sluice.tags"), 'after_upgrade before_upgrade',
	'tags made before and after the update');

$mart->stop;
$live->stop;
done_testing();
