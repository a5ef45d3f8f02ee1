# Columns the binary paths cannot carry.
#
# A built-in type without binary I/O (aclitem has no send or receive
# function; so aclitem[] cannot be sent in binary either) makes pg_sluice
# fall back to text where it must: the initial copy of that table is read in
# text (other tables stay binary), and the stream is read in text as soon as
# one column could not be sent in binary.  A column of a type without binary
# I/O that pgoutput sends as text by itself keeps the binary stream for the
# rest.
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
CREATE TABLE app.acl (id int PRIMARY KEY, a aclitem, acls aclitem[], v text);
CREATE TABLE app.scalar_only (id int PRIMARY KEY, a aclitem, n numeric);
CREATE TABLE app.plain (id int PRIMARY KEY, v text, ts timestamptz);
INSERT INTO app.acl SELECT g, 'pg_read_all_data=arwd/pg_monitor', ARRAY['pg_read_all_data=r/pg_monitor', '=r/pg_monitor']::aclitem[], 'v' || g
  FROM generate_series(1, 50) g;
INSERT INTO app.scalar_only SELECT g, 'pg_read_all_data=r/pg_monitor', g / 3.0 FROM generate_series(1, 50) g;
INSERT INTO app.plain SELECT g, 'v' || g, now() FROM generate_series(1, 50) g;
});
mart_source($mart, $live, 'live');

# --- types without binary I/O ---
my ($ret, $out, $err) = $mart->psql('postgres',
	"SELECT sluice.create_pipeline('p', 'live', ARRAY['app.acl', 'app.plain'], target_schema => 'm')");
is($ret, 0, 'a table with aclitem and aclitem[] columns is copied') or diag($err);
is($mart->safe_psql('postgres', "SELECT binary_transfer FROM sluice._pipeline WHERE name = 'p'"), 'f',
	'the stream of a pipeline with an aclitem[] column is read in text');
same_tables($live, $mart, [['app.acl', 'm.acl'], ['app.plain', 'm.plain']], 'initial copy');

($ret, $out, $err) = $mart->psql('postgres',
	"SELECT sluice.create_pipeline('s', 'live', ARRAY['app.scalar_only', 'app.plain'], target_schema => 's')");
is($ret, 0, 'a table with an aclitem column is copied') or diag($err);
is($mart->safe_psql('postgres', "SELECT binary_transfer FROM sluice._pipeline WHERE name = 's'"), 't',
	'a scalar without binary I/O keeps the binary stream (pgoutput sends it as text)');
same_tables($live, $mart, [['app.scalar_only', 's.scalar_only']], 'initial copy, scalar');

$live->safe_psql('postgres', q{
UPDATE app.acl SET acls = acls || 'pg_read_all_data=w/pg_monitor'::aclitem, a = '=r/pg_monitor' WHERE id % 2 = 0;
INSERT INTO app.acl VALUES (51, NULL, '{}', 'new');
UPDATE app.scalar_only SET a = '=arwd/pg_monitor', n = n + 1 WHERE id % 3 = 0;
INSERT INTO app.scalar_only VALUES (51, 'pg_read_all_data=arwdDxt/pg_monitor', 1);
UPDATE app.plain SET v = v || '!' WHERE id < 10;
});
($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_inserted, rows_updated FROM sluice.refresh('p')");
is($ret, 0, 'refresh with aclitem columns succeeds') or diag($err);
is($out, '1|34', 'every change applied');
($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_inserted, rows_updated FROM sluice.refresh('s')");
is($ret, 0, 'binary refresh with an aclitem column succeeds') or diag($err);
same_tables($live, $mart, [['app.acl', 'm.acl'], ['app.plain', 'm.plain'], ['app.scalar_only', 's.scalar_only']],
	'after the refresh');

done_testing();
