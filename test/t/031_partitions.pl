# Partitioned source tables.  A partitioned parent is one datamart table: the
# publication pg_sluice creates publishes through the root
# (publish_via_partition_root), so partitions created on live after the
# pipeline flow with no action, rows moving between partitions arrive as
# updates, and the initial copy reads the parent with COPY (SELECT ...).
# Listing single partitions still works (each its own datamart table), but
# not a partition together with its parent.  An existing publication naming
# a parent must publish through the root.
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
CREATE TABLE app.events (id bigint, at date NOT NULL, kind text, payload jsonb, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE app.events_2026_01 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
-- a partition whose columns are in another order than the parent's
CREATE TABLE app.events_2026_02 (payload jsonb, kind text, at date NOT NULL, id bigint NOT NULL);
ALTER TABLE app.events ATTACH PARTITION app.events_2026_02 FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
-- a sub-partitioned partition
CREATE TABLE app.events_2026_03 PARTITION OF app.events FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')
  PARTITION BY HASH (id);
CREATE TABLE app.events_2026_03_a PARTITION OF app.events_2026_03 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE app.events_2026_03_b PARTITION OF app.events_2026_03 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO app.events SELECT g, date '2026-01-01' + (g % 85), 'k' || (g % 5), jsonb_build_object('g', g)
  FROM generate_series(1, 3000) g;

CREATE TABLE app.logs (id int PRIMARY KEY, msg text) PARTITION BY RANGE (id);
CREATE TABLE app.logs_0 PARTITION OF app.logs FOR VALUES FROM (0) TO (100);
CREATE TABLE app.logs_1 PARTITION OF app.logs FOR VALUES FROM (100) TO (200);
CREATE TABLE app.logs_2 PARTITION OF app.logs FOR VALUES FROM (200) TO (1000);
INSERT INTO app.logs SELECT g, 'm' || g FROM generate_series(1, 300) g;
});
mart_source($mart, $live, 'live');

# --- a parent and its partition together are refused ---
my ($ret, $out, $err) = $mart->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT sluice.create_pipeline('x', 'live', ARRAY['app.logs', 'app.logs_1'])");
isnt($ret, 0, 'a partition listed with its parent is refused');
like($err, qr/22023: table "app.logs_1" is a partition of "app.logs", also listed/, 'saying which');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots"), '0', 'nothing created on live');

# --- a parent: copied whole, new partitions flow ---
$ret = $mart->psql('postgres', "SELECT sluice.create_pipeline('p', 'live', ARRAY['app.events'], target_schema => 'm')");
is($ret, 0, 'a partitioned parent is accepted');
is($live->safe_psql('postgres', "SELECT pubviaroot FROM pg_publication WHERE pubname = 'sluice_p'"), 't',
	'its publication publishes through the root');
is($mart->safe_psql('postgres', "SELECT relkind FROM pg_class WHERE oid = 'm.events'::regclass"), 'r',
	'the datamart table is a plain table');
same_tables($live, $mart, [['app.events', 'm.events']], 'initial copy of every partition');

# --- one listed partition in a second pipeline: still possible ---
$ret = $mart->psql('postgres', "SELECT sluice.create_pipeline('q', 'live', ARRAY['app.logs_1'], target_schema => 'q')");
is($ret, 0, 'a single partition can still be listed');
same_tables($live, $mart, [['app.logs_1', 'q.logs_1']], 'initial copy of one partition');

$live->safe_psql('postgres', q{
CREATE TABLE app.events_2026_04 PARTITION OF app.events FOR VALUES FROM ('2026-04-01') TO ('2026-05-01');
INSERT INTO app.events SELECT g, date '2026-04-01' + (g % 30), 'new', NULL FROM generate_series(3001, 3500) g;
UPDATE app.events SET kind = 'moved', at = at + 31 WHERE id % 10 = 0 AND at < '2026-03-01';
UPDATE app.events SET payload = '{"changed": true}' WHERE id % 7 = 0;
DELETE FROM app.events WHERE id % 11 = 0;
CREATE TABLE app.events_2026_05 (LIKE app.events);
ALTER TABLE app.events ATTACH PARTITION app.events_2026_05 FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
INSERT INTO app.events VALUES (9001, '2026-05-03', 'into the attached one', NULL);
UPDATE app.logs SET msg = msg || '!' WHERE id % 2 = 0;
INSERT INTO app.logs SELECT g, 'n' || g FROM generate_series(301, 330) g;
});

($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_inserted FROM sluice.refresh('p')");
is($ret, 0, 'refresh of the parent succeeds') or diag($err);
is($mart->safe_psql('postgres', "SELECT count(*) FROM m.events WHERE at >= '2026-04-01' AND at < '2026-05-01'"),
	$live->safe_psql('postgres', "SELECT count(*) FROM app.events_2026_04"),
	'rows of a partition created after the pipeline arrived');
is($mart->safe_psql('postgres', "SELECT kind FROM m.events WHERE id = 9001"), 'into the attached one',
	'a row written into a partition attached after the pipeline arrived');
same_tables($live, $mart, [['app.events', 'm.events']], 'after new partitions and rows moving between partitions');

($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_updated FROM sluice.refresh('q')");
is($ret, 0, 'refresh of the single partition succeeds') or diag($err);
same_tables($live, $mart, [['app.logs_1', 'q.logs_1']], 'single partition after changes');

# --- an existing publication naming a parent must publish through the root ---
$live->safe_psql('postgres', "CREATE PUBLICATION mine FOR TABLE app.logs");
($ret, $out, $err) = $mart->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT sluice.create_pipeline('r', 'live', ARRAY['app.logs'], publication => 'mine')");
isnt($ret, 0, 'an existing publication that does not publish through the root is refused');
like($err, qr/55000: publication "mine" on source "live" does not publish partitioned table "app.logs" through its root/,
	'saying why');
like($err, qr/ALTER PUBLICATION mine SET \(publish_via_partition_root = true\)/, 'with the statement that fixes it');
$live->safe_psql('postgres', "ALTER PUBLICATION mine SET (publish_via_partition_root = true)");
$ret = $mart->psql('postgres', "SELECT sluice.create_pipeline('r', 'live', ARRAY['app.logs'], publication => 'mine')");
is($ret, 0, 'accepted once it does');
$live->safe_psql('postgres', "CREATE TABLE app.logs_3 PARTITION OF app.logs FOR VALUES FROM (1000) TO (2000)");
$live->safe_psql('postgres', "UPDATE app.logs SET msg = 'r' WHERE id < 40; INSERT INTO app.logs VALUES (1500, 'new partition')");
($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_updated FROM sluice.refresh('r')");
is($ret, 0, 'refresh through the existing publication succeeds') or diag($err);
same_tables($live, $mart, [['app.logs', 'r.logs']], 'parent through an existing publication');

done_testing();
