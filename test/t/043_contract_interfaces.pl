# Stable interfaces (issue 16): a contract version published as a view
# keeps its columns, names and types while the source drops, renames,
# widens and adds columns under each drift policy, several changes in one
# backlog with writes between them.  After every step live and datamart
# are compared by checksum, and a BI reader who may only read the
# interface's schema gets the same answer from it as live gives in the
# version's terms.  Names hold quotes, capitals, spaces and non-ASCII.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA "App";
CREATE TABLE "App"."Order Lines" (id int PRIMARY KEY, "Qty" int NOT NULL, "note's" varchar(10),
                                  gone text, "old name" text, price numeric(8,2));
INSERT INTO "App"."Order Lines" SELECT g, g, 'n' || g, 'g' || g, 'o' || g, g * 1.5 FROM generate_series(1, 30) g;
});
mart_source($mart, $live, 'live');

# etl owns the pipeline; alice operates it (a member of etl); bi only reads
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE alice LOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
SELECT sluice.grant_operator('alice');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO alice;
SET ROLE etl;
SELECT sluice.create_pipeline('ifc', 'live', ARRAY['"App"."Order Lines"'], target_schema => 'Mart Ö');
SELECT sluice.keep_history('ifc');
});
my $tab = q{"Mart Ö"."Order Lines"};
my $tabl = q{'"Mart Ö"."Order Lines"'};

# expectations over columns that will be widened: they must keep binding
$mart->safe_psql('postgres', qq{
SET ROLE alice;
SELECT sluice.expect_column_values_to_be_between($tabl, 'Qty', '0', NULL, severity => 'error');
SELECT sluice.expect_column_values_to_be_unique($tabl, ARRAY['Qty']::name[], 'warn');
SELECT sluice.expect_column_value_lengths_to_be_between($tabl, 'note''s', 0, 10, 'warn');
});

# alice publishes version 1 into a schema pg_sluice creates; etl's view
is($mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.publish_contract($tabl, 'api v1')}),
	'"api v1"."Order Lines"', 'an operator publishes contract version 1');
$mart->safe_psql('postgres', q{
SET ROLE alice;
GRANT USAGE ON SCHEMA "api v1" TO bi;
GRANT SELECT ON "api v1"."Order Lines" TO bi;
});
is($mart->safe_psql('postgres', q{SELECT pipeline || ' ' || target_table || ' v' || contract_version || ' ' || schema_name || '.' || view_name FROM sluice.published_contracts}),
	'ifc Order Lines v1 api v1.Order Lines', 'sluice.published_contracts shows it');
is($mart->safe_psql('postgres', q{SELECT c.relowner::regrole FROM pg_class c WHERE c.oid = '"api v1"."Order Lines"'::regclass}),
	'etl', 'the view belongs to the pipeline owner');
is($mart->safe_psql('postgres', q{SELECT obj_description('"api v1"."Order Lines"'::regclass, 'pg_class') IS NOT NULL
	AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = '"api v1"."Order Lines"'::regclass AND a.attnum > 0
	                   AND col_description(a.attrelid, a.attnum) IS NULL)}),
	't', 'the view and every column of it have a comment (BI tools show them)');

my $v1_types = q{id integer, Qty integer, note's character varying(10), gone text, old name text, price numeric(8,2)};
sub interface_types
{
	my ($view) = @_;
	return $mart->safe_psql('postgres', qq{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
		FROM pg_attribute WHERE attrelid = '$view'::regclass AND attnum > 0});
}
my $csq = q{SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text COLLATE "C")), '-') FROM (%s) r};
sub as_bi
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', "\\set VERBOSITY verbose\nSET ROLE bi;\n$sql");
	return ($ret, $out, $err);
}
# what version 1 reads on live, in version 1's terms
my $v1_live = q{SELECT id, "Qty", "note's", gone, "old name", price FROM "App"."Order Lines"};
sub check_interface
{
	my ($label) = @_;
	is(interface_types('"api v1"."Order Lines"'), $v1_types, "$label: the v1 interface keeps v1's columns and types");
	my ($ret, $out, $err) = as_bi(sprintf($csq, q{SELECT id, "Qty", "note's", gone, "old name", price FROM "api v1"."Order Lines"}));
	is($ret, 0, "$label: the BI reader reads the v1 interface") or diag($err);
	is($out, $live->safe_psql('postgres', sprintf($csq, $v1_live)), "$label: the v1 interface answers as live does in v1's terms");
}
# live and datamart equal on the columns live has (datamart names)
my ($live_cols, $mart_cols) = (q{id, "Qty", "note's", gone, "old name", price}, q{id, "Qty", "note's", gone, "old name", price});
sub check_same
{
	my ($label) = @_;
	is($mart->safe_psql('postgres', sprintf($csq, "SELECT $mart_cols FROM $tab")),
		$live->safe_psql('postgres', sprintf($csq, qq{SELECT $live_cols FROM "App"."Order Lines"})),
		"$label: live and datamart equal, no row lost");
}
sub refresh
{
	my ($ret, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT status FROM sluice.refresh('ifc')");
	return ($out, $err);
}

my ($out, $err);
($out, $err) = refresh();
check_interface('published');
my ($ret, undef, $err2) = as_bi("SELECT count(*) FROM $tab");
isnt($ret, 0, 'the BI reader cannot read the datamart table itself');
like($err2, qr/permission denied/, '(permission denied)');

# --- freeze: a dropped column, dropped from the datamart too ---
$live->safe_psql('postgres', q{
INSERT INTO "App"."Order Lines" VALUES (31, 31, 'n31', 'g31 before', 'o31', 1.25);
UPDATE "App"."Order Lines" SET gone = 'updated before' WHERE id = 1;
ALTER TABLE "App"."Order Lines" DROP COLUMN gone;
INSERT INTO "App"."Order Lines" VALUES (32, 32, 'n32', 'o32', 2.5);
UPDATE "App"."Order Lines" SET "Qty" = 1000 WHERE id = 2;
DELETE FROM "App"."Order Lines" WHERE id = 3;
});
($out, $err) = refresh();
is($out, 'paused', 'freeze: the drop pauses');
is($mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.drop_column($tabl, 'gone', keep => false)}), '2',
	'drop_column keep => false (the view over the column does not stand in the way)');
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.resume('ifc')");
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies') or diag($err);
$v1_live = q{SELECT id, "Qty", "note's", NULL::text AS gone, "old name", price FROM "App"."Order Lines"};
($live_cols, $mart_cols) = (q{id, "Qty", "note's", "old name", price}, q{id, "Qty", "note's", "old name", price});
check_same('dropped');
check_interface('dropped');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "api v1"."Order Lines" WHERE gone IS NOT NULL}), '0',
	'the dropped column reads NULL');
($ret, $out) = as_bi(q{SELECT has_table_privilege('bi', '"api v1"."Order Lines"', 'SELECT')});
is($out, 't', 'the reader keeps its grant through the rebuild');

# --- freeze: a rename, mapped ---
$live->safe_psql('postgres', q{
UPDATE "App"."Order Lines" SET "old name" = 'before rename' WHERE id = 4;
ALTER TABLE "App"."Order Lines" RENAME COLUMN "old name" TO "new name";
INSERT INTO "App"."Order Lines" VALUES (33, 33, 'n33', 'after rename', 3.75);
UPDATE "App"."Order Lines" SET "new name" = 'renamed' WHERE id = 5;
});
($out, $err) = refresh();
is($out, 'paused', 'freeze: the rename pauses');
$mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.map_column($tabl, 'old name', 'new name'); SELECT sluice.resume('ifc')});
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies after map_column') or diag($err);
$v1_live = q{SELECT id, "Qty", "note's", NULL::text AS gone, "new name" AS "old name", price FROM "App"."Order Lines"};
$live_cols = q{id, "Qty", "note's", "new name", price};
check_same('renamed');
check_interface('renamed');

# --- evolve: widenings and an added column in one backlog, writes between ---
$mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.set_drift_policy($tabl, 'evolve')});
$live->safe_psql('postgres', q{
INSERT INTO "App"."Order Lines" VALUES (34, 34, 'n34', 'r34', 4.5);
ALTER TABLE "App"."Order Lines" ALTER COLUMN "Qty" TYPE bigint;
INSERT INTO "App"."Order Lines" VALUES (35, 35, 'n35', 'r35', 5.5);
UPDATE "App"."Order Lines" SET "Qty" = 2000 WHERE id = 6;
ALTER TABLE "App"."Order Lines" ALTER COLUMN "note's" TYPE varchar(20);
INSERT INTO "App"."Order Lines" VALUES (36, 36, 'n36', 'r36', 6.5);
ALTER TABLE "App"."Order Lines" ADD COLUMN "Added Col" int;
INSERT INTO "App"."Order Lines" VALUES (37, 37, 'n37', 'r37', 7.5, 70);
ALTER TABLE "App"."Order Lines" ALTER COLUMN price TYPE numeric(12,4);
UPDATE "App"."Order Lines" SET price = 9.75, "Added Col" = 7 WHERE id = 7;
DELETE FROM "App"."Order Lines" WHERE id = 8;
});
($out, $err) = refresh();
is($out, 'succeeded', 'evolve: the backlog applies, expectations on widened columns re-bound') or diag($err);
is($mart->safe_psql('postgres', qq{SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY position) FROM sluice.contracts WHERE target_table = 'Order Lines'}),
	q{id integer, Qty bigint, note's character varying(20), old name text, price numeric(12,4), Added Col integer},
	'the contract moved on');
$v1_live = q{SELECT id, "Qty"::int, "note's"::varchar(10), NULL::text AS gone, "new name" AS "old name", price::numeric(8,2) FROM "App"."Order Lines"};
($live_cols, $mart_cols) = (q{id, "Qty", "note's", "new name", price, "Added Col"}, q{id, "Qty", "note's", "old name", price, "Added Col"});
check_same('evolved');
check_interface('evolved');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_attribute WHERE attrelid = '"api v1"."Order Lines"'::regclass AND attname = 'Added Col'}),
	'0', 'the added column is not in the v1 interface');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM sluice.quality WHERE expectation LIKE 'expect_column_values_to_be_between%' AND NOT success}),
	'0', 'the re-bound expectation passed');

# values that do not fit version 1's types exactly: an error, never a truncation
$live->safe_psql('postgres', q{
UPDATE "App"."Order Lines" SET "Qty" = 3000000000 WHERE id = 9;
});
($out, $err) = refresh();
is($out, 'succeeded', 'a value beyond integer applies');
($ret, $out, $err) = as_bi(q{SELECT * FROM "api v1"."Order Lines"});
isnt($ret, 0, 'reading it through the v1 interface fails');
like($err, qr/column "Qty" of "api v1"\."Order Lines" cannot show a value as integer/, 'naming the column and the interface');
like($err, qr/ERROR:  22003: /, 'numeric_value_out_of_range');
like($err, qr/the value 3000000000/, 'and the value');
($ret, $out, $err) = as_bi(q{SELECT "Qty" FROM "api v1"."Order Lines" WHERE id = 10});
is($out, '10', 'rows that fit still read');
$live->safe_psql('postgres', q{
UPDATE "App"."Order Lines" SET "Qty" = 9, "note's" = 'a note of 17 char' WHERE id = 9;
});
refresh();
($ret, $out, $err) = as_bi(q{SELECT * FROM "api v1"."Order Lines"});
like($err, qr/column "note's" of "api v1"\."Order Lines" cannot show a value as character varying\(10\)/, 'a longer string is not truncated');
like($err, qr/ERROR:  22001: /, 'string_data_right_truncation');
$live->safe_psql('postgres', q{
UPDATE "App"."Order Lines" SET "note's" = 'n9', price = 1.125 WHERE id = 9;
});
refresh();
($ret, $out, $err) = as_bi(q{SELECT * FROM "api v1"."Order Lines"});
like($err, qr/column "price" of "api v1"\."Order Lines" cannot show a value as numeric\(8,2\)/, 'a finer number is not rounded');
$live->safe_psql('postgres', q{UPDATE "App"."Order Lines" SET price = 1.25 WHERE id = 9});
refresh();
check_interface('fitting again');

# a second interface, of the current version, next to the first
is($mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.publish_contract($tabl, 'api v2')}),
	'"api v2"."Order Lines"', 'the current version published next to v1');
my $v2 = $mart->safe_psql('postgres', q{SELECT contract_version FROM sluice.published_contracts WHERE schema_name = 'api v2'});
is($v2, $mart->safe_psql('postgres', q{SELECT DISTINCT contract_version FROM sluice.contracts WHERE target_table = 'Order Lines'}),
	'(the current version)');
is(interface_types('"api v2"."Order Lines"'),
	q{id integer, Qty bigint, note's character varying(20), old name text, price numeric(12,4), Added Col integer},
	'with the current types');

# --- freeze again: accept_type_change, the expectation re-bound ---
$mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.set_drift_policy($tabl, 'freeze')});
$live->safe_psql('postgres', q{
INSERT INTO "App"."Order Lines" VALUES (38, 38, 'n38', 'r38', 8.5, 80);
ALTER TABLE "App"."Order Lines" ALTER COLUMN "Qty" TYPE numeric;
INSERT INTO "App"."Order Lines" VALUES (39, 39, 'n39', 'r39', 9.5, 90);
UPDATE "App"."Order Lines" SET "Qty" = 11 WHERE id = 11;
});
($out, $err) = refresh();
is($out, 'paused', 'freeze: a type change pauses');
$mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.accept_type_change($tabl, 'Qty', 'numeric'); SELECT sluice.resume('ifc')});
($out, $err) = refresh();
is($out, 'succeeded', 'the backlog applies after accept_type_change') or diag($err);
check_same('accepted');
check_interface('accepted');
is(interface_types('"api v2"."Order Lines"'),
	q{id integer, Qty bigint, note's character varying(20), old name text, price numeric(12,4), Added Col integer},
	'the v2 interface keeps its types too');
$live->safe_psql('postgres', q{UPDATE "App"."Order Lines" SET "Qty" = 2.5 WHERE id = 12});
refresh();
($ret, $out, $err) = as_bi(q{SELECT * FROM "api v1"."Order Lines"});
like($err, qr/column "Qty" of "api v1"\."Order Lines" cannot show a value as integer/, 'a fraction is not rounded to an integer');
$live->safe_psql('postgres', q{UPDATE "App"."Order Lines" SET "Qty" = 12 WHERE id = 12});
refresh();

# --- ignore: a new column left out, the interface unchanged ---
$mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.set_drift_policy($tabl, 'ignore')});
$live->safe_psql('postgres', q{
INSERT INTO "App"."Order Lines" VALUES (40, 40, 'n40', 'r40', 10.5, 100);
ALTER TABLE "App"."Order Lines" ADD COLUMN "Ignored ""One""" text;
INSERT INTO "App"."Order Lines" VALUES (41, 41, 'n41', 'r41', 11.5, 110, 'x');
UPDATE "App"."Order Lines" SET "new name" = 'after ignore' WHERE id = 13;
});
($out, $err) = refresh();
is($out, 'succeeded', 'ignore: the backlog applies') or diag($err);
check_same('ignored');
check_interface('ignored');

# a view dropped by hand comes back, with its grants, at the next contract change
$mart->safe_psql('postgres', q{DROP VIEW "api v1"."Order Lines"});
$mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.map_column($tabl, 'old name', 'new name')});
check_interface('dropped by hand, rebuilt');

# --- unpublish, and drop_pipeline with an interface still published ---
is($mart->safe_psql('postgres', qq{SET ROLE alice; SELECT sluice.unpublish_contract($tabl, 'api v2')}), $v2, 'unpublish returns the version');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'api v2'}), '0',
	'the view and the schema pg_sluice created for it are gone');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.published_contracts}), '1', 'one interface left');
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('ifc')");
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_class WHERE relname = 'Order Lines' AND relkind = 'v'}), '0',
	'drop_pipeline drops the interfaces');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._published_contract}), '0', 'and their catalog rows');

# drop_tables => true: the interfaces go with the tables, the drop does not fail
$mart->safe_psql('postgres', q{
SET ROLE etl;
SELECT sluice.create_pipeline('ifc2', 'live', ARRAY['"App"."Order Lines"'], target_schema => 'm2');
SELECT sluice.publish_contract('m2."Order Lines"', 'api3');
});
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "api3"."Order Lines"}),
	$live->safe_psql('postgres', q{SELECT count(*) FROM "App"."Order Lines"}), 'a new pipeline, published');
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('ifc2', drop_tables => true)");
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname IN ('api3', 'm2')}), '0',
	'drop_pipeline(drop_tables => true) drops the tables, the interface and its schema');

done_testing();
