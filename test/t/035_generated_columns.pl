# A STORED generated column is not replicated by pgoutput and cannot be
# named in COPY: it is left out of the datamart table up front and recorded
# in the contract's ignored_source_columns (PostgreSQL 15's own logical
# replication does the same on the sending side), instead of failing late
# inside the initial copy.  A generated column in the key is refused.
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
CREATE TABLE app.gen (id int PRIMARY KEY, price numeric NOT NULL, qty int NOT NULL,
                      total numeric GENERATED ALWAYS AS (price * qty) STORED, note text);
INSERT INTO app.gen (id, price, qty, note) SELECT g, g * 1.5, g, 'n' || g FROM generate_series(1, 50) g;
CREATE TABLE app.genkey (a int NOT NULL, b int GENERATED ALWAYS AS (a * 2) STORED PRIMARY KEY);
});
mart_source($mart, $live, 'live');
my ($ret, $out, $err);

# --- a STORED generated column ---
($ret, $out, $err) = $mart->psql('postgres',
	"SELECT sluice.create_pipeline('g', 'live', ARRAY['app.gen'], target_schema => 'g')");
is($ret, 0, 'a table with a generated column is accepted') or diag($err);
is($mart->safe_psql('postgres', "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'g.gen'::regclass AND attnum > 0"),
	'id,price,qty,note', 'the generated column is left out of the datamart table');
is($mart->safe_psql('postgres', "SELECT DISTINCT ignored_source_columns FROM sluice.contracts WHERE target_schema = 'g'"),
	'{total}', 'and recorded in the contract as ignored');
my $cols = "(SELECT id, price, qty, note FROM %s)";
is(checksum($mart, sprintf($cols, 'g.gen')), checksum($live, sprintf($cols, 'app.gen')), 'initial copy of the other columns');
$live->safe_psql('postgres', q{
UPDATE app.gen SET qty = qty + 1 WHERE id % 4 = 0;
INSERT INTO app.gen (id, price, qty) VALUES (51, 2, 2);
DELETE FROM app.gen WHERE id = 1;
});
($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('g')");
is($ret, 0, 'refresh succeeds') or diag($err);
is($out, 'succeeded', 'without drift');
is(checksum($mart, sprintf($cols, 'g.gen')), checksum($live, sprintf($cols, 'app.gen')), 'after the refresh');

# --- a generated column in the key cannot identify rows ---
($ret, $out, $err) = $mart->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT sluice.create_pipeline('k', 'live', ARRAY['app.genkey'])");
isnt($ret, 0, 'a generated key column is refused');
like($err, qr/0A000: key column "b" of table "app.genkey" on source "live" is a generated column/, 'saying why');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_k'"), '0',
	'nothing created on live');

done_testing();
