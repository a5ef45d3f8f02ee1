# Initial copy and incremental refresh between two real servers:
# every supported type, INSERT/UPDATE/DELETE/TRUNCATE, key changes, NULLs,
# unchanged TOASTed values, multi-table transactions, tables without a key.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN short_text AS varchar(20);
CREATE SCHEMA app;
CREATE TABLE app.everything (
    id        bigint PRIMARY KEY,
    i2        smallint,
    i4        integer,
    num       numeric(12,3),
    r4        real,
    r8        double precision,
    t         text,
    vc        varchar(30),
    ch        char(5),
    b         boolean,
    d         date,
    tm        time,
    ts        timestamp,
    tstz      timestamptz NOT NULL DEFAULT now(),
    iv        interval,
    u         uuid,
    jb        jsonb,
    js        json,
    by        bytea,
    ia        integer[],
    ta        text[],
    m         mood,
    ma        mood[],
    p         posint,
    st        short_text,
    big       text
);
-- big values stay out of line and uncompressed: pgoutput sends them as 'unchanged'
ALTER TABLE app.everything ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE app.parent (pid int PRIMARY KEY, name text NOT NULL);
CREATE TABLE app.child (cid int PRIMARY KEY, pid int REFERENCES app.parent, note text);
CREATE TABLE app.nokey_full (a int, b text);
ALTER TABLE app.nokey_full REPLICA IDENTITY FULL;
CREATE TABLE app.by_index (code text NOT NULL, n int);
CREATE UNIQUE INDEX by_index_code ON app.by_index (code);
ALTER TABLE app.by_index REPLICA IDENTITY USING INDEX by_index_code;
CREATE TABLE app.composite (a int, b text, v text, PRIMARY KEY (a, b));

INSERT INTO app.everything
SELECT g, g % 100, g * 7, g * 1.125, g / 3.0, g / 7.0, 'text ' || g, 'vc' || g, 'c' || (g % 10),
       g % 2 = 0, date '2024-01-01' + g, time '08:00' + g * interval '1 minute',
       timestamp '2024-01-01 00:00' + g * interval '1 hour', now() - g * interval '1 day',
       g * interval '90 seconds', md5(g::text)::uuid, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)),
       json_build_object('g', g), decode(md5(g::text), 'hex'), ARRAY[g, g + 1, NULL], ARRAY['x' || g, 'y'],
       (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, ARRAY['ok', 'happy']::mood[], g, 'st' || g,
       CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 400) ELSE 'small' END
  FROM generate_series(1, 2000) g;
INSERT INTO app.everything (id) VALUES (0);  -- all NULLs but the key
INSERT INTO app.parent SELECT g, 'parent ' || g FROM generate_series(1, 50) g;
INSERT INTO app.child SELECT g, 1 + g % 50, 'note ' || g FROM generate_series(1, 500) g;
INSERT INTO app.nokey_full SELECT g % 20, 'row ' || g FROM generate_series(1, 100) g;
INSERT INTO app.by_index SELECT 'code' || g, g FROM generate_series(1, 100) g;
INSERT INTO app.composite SELECT g, 'k' || g, 'v' FROM generate_series(1, 100) g;
});

mart_source($mart, $live, 'live');
my $tables = "ARRAY['app.everything', 'app.parent', 'app.child', 'app.nokey_full', 'app.by_index', 'app.composite']";
my $res = $mart->safe_psql('postgres',
	"SELECT kind, rows_inserted, end_lsn IS NOT NULL FROM sluice.create_pipeline('p1', 'live', $tables, target_schema => 'mart')");
is($res, 'initial_copy|2851|t', 'initial copy summary');

my @pairs = map { ["app.$_", "mart.$_"] } qw(everything parent child nokey_full by_index composite);
same_tables($live, $mart, \@pairs, 'after initial copy');

# Contract of the created tables: types mapped by the documented rule, keys kept.
is($mart->safe_psql('postgres', q{
SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN '!' ELSE '' END, ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = 'mart.everything'::regclass AND attnum > 0}),
	'id bigint!, i2 smallint, i4 integer, num numeric(12,3), r4 real, r8 double precision, t text, vc character varying(30), '
	. 'ch character(5), b boolean, d date, tm time without time zone, ts timestamp without time zone, '
	. 'tstz timestamp with time zone!, iv interval, u uuid, jb jsonb, js json, by bytea, ia integer[], ta text[], '
	. 'm text, ma text[], p integer, st character varying(20), big text',
	'enums become text, domains their base type, the rest is kept');
is($mart->safe_psql('postgres', q{
SELECT string_agg(target_table || '=' || array_to_string(key_columns, '+') || '/' || replica_identity, ' ' ORDER BY target_table)
  FROM sluice.pipeline_tables}),
	'by_index=code/index child=cid/default composite=a+b/default everything=id/default nokey_full=/full parent=pid/default',
	'keys recorded');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_index WHERE indrelid = 'mart.composite'::regclass AND indisprimary"),
	'1', 'composite primary key built after the load');

# A second pipeline over built-in types only receives changes in binary;
# the source table has a dropped column, which pgoutput never sends.
$live->safe_psql('postgres', q{
CREATE TABLE app.plain (LIKE app.everything INCLUDING DEFAULTS);
ALTER TABLE app.plain ADD PRIMARY KEY (id);
ALTER TABLE app.plain DROP COLUMN m, DROP COLUMN ma, DROP COLUMN p, DROP COLUMN st;
ALTER TABLE app.plain ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO app.plain SELECT id, i2, i4, num, r4, r8, t, vc, ch, b, d, tm, ts, tstz, iv, u, jb, js, by, ia, ta, big
  FROM app.everything;
});
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('p2', 'live', ARRAY['app.plain'], target_schema => 'mart2')");
is($mart->safe_psql('postgres', "SELECT string_agg(name || '=' || binary_transfer, ' ' ORDER BY name) FROM sluice.pipelines"),
	'p1=false p2=true', 'binary transfer only where every column has a built-in type');
push @pairs, ['app.plain', 'mart2.plain'];

# A refresh with nothing new applies nothing.
is($mart->safe_psql('postgres', "SELECT transactions, rows_inserted FROM sluice.refresh('p1')"), '0|0', 'empty refresh');

# A mixed batch of changes.
$live->safe_psql('postgres', q{
INSERT INTO app.everything (id, t, m, big) SELECT g, 'new ' || g, 'happy', repeat('z', 5000) FROM generate_series(3001, 3100) g;
UPDATE app.everything SET t = 'updated', num = NULL, ia = ARRAY[]::int[] WHERE id BETWEEN 1 AND 100;
-- unchanged TOASTed value: only a small column changes
UPDATE app.everything SET i4 = -1 WHERE id IN (50, 100, 150, 3001);
-- primary key change
UPDATE app.everything SET id = id + 100000 WHERE id IN (7, 8, 9);
DELETE FROM app.everything WHERE id BETWEEN 200 AND 299;
UPDATE app.everything SET jb = jb || '{"x": [1, 2, 3]}', m = 'sad', ma = ARRAY['sad']::mood[] WHERE id % 97 = 0;
BEGIN;
  INSERT INTO app.parent VALUES (51, 'new parent');
  INSERT INTO app.child VALUES (501, 51, 'child of new parent');
  UPDATE app.child SET pid = 51 WHERE cid <= 10;
  DELETE FROM app.child WHERE cid BETWEEN 400 AND 410;
  UPDATE app.parent SET name = 'renamed' WHERE pid = 2;
COMMIT;
UPDATE app.nokey_full SET b = 'changed' WHERE a = 3;
DELETE FROM app.nokey_full WHERE a = 4;
INSERT INTO app.nokey_full VALUES (NULL, NULL);
UPDATE app.by_index SET code = 'renamed' || n WHERE n <= 5;
UPDATE app.by_index SET n = -n WHERE n BETWEEN 6 AND 10;
DELETE FROM app.by_index WHERE n BETWEEN 90 AND 100;
UPDATE app.composite SET b = 'changed', v = 'w' WHERE a <= 10;
TRUNCATE app.composite;
INSERT INTO app.composite VALUES (1, 'after truncate', 'v');
INSERT INTO app.plain (id, t, big) SELECT g, 'new ' || g, repeat('z', 5000) FROM generate_series(3001, 3100) g;
UPDATE app.plain SET t = 'updated', num = NULL, ia = ARRAY[]::int[], jb = jb || '{"x": 1}' WHERE id BETWEEN 1 AND 100;
UPDATE app.plain SET i4 = -1 WHERE id IN (50, 100, 150, 3001);
UPDATE app.plain SET id = id + 100000 WHERE id IN (7, 8, 9);
DELETE FROM app.plain WHERE id BETWEEN 200 AND 299;
});
is($mart->safe_psql('postgres', "SELECT rows_inserted, rows_updated, rows_deleted FROM sluice.refresh('p2')"),
	'100|107|100', 'binary refresh summary');
is($mart->safe_psql('postgres', "SELECT length(big), i4 FROM mart2.plain WHERE id = 150"), '12800|-1',
	'unchanged TOASTed value kept in binary mode');
$res = $mart->safe_psql('postgres',
	"SELECT transactions, rows_inserted, rows_updated, rows_deleted, tables_truncated, end_lsn > start_lsn FROM sluice.refresh('p1')");
is($res, '16|104|165|127|1|t', 'refresh summary counts every change');
same_tables($live, $mart, \@pairs, 'after refresh');

# Unchanged TOAST values survived.
is($mart->safe_psql('postgres', "SELECT length(big), i4 FROM mart.everything WHERE id = 150"), '12800|-1',
	'unchanged TOASTed value kept');

# Runs are recorded; positions only move forward.
is($mart->safe_psql('postgres', q{
SELECT string_agg(kind || ':' || transactions, ',' ORDER BY run_id) FROM sluice.runs WHERE pipeline = 'p1'}),
	'initial_copy:0,refresh:0,refresh:16', 'runs recorded');
is($mart->safe_psql('postgres', q{
SELECT bool_and(end_lsn >= coalesce(start_lsn, '0/0')) FROM sluice.runs}), 't', 'LSN ranges move forward');

# The slot on live follows the datamart's committed position (told at the next refresh).
$mart->safe_psql('postgres', "SELECT sluice.refresh('p1')");
my $mart_lsn = $mart->safe_psql('postgres', "SELECT last_end_lsn FROM sluice.pipelines WHERE name = 'p1'");
my $slot_lsn = $live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sluice_p1'");
ok($live->safe_psql('postgres', "SELECT '$slot_lsn'::pg_lsn <= '$mart_lsn'::pg_lsn") eq 't', 'slot never ahead of the datamart');

# Refresh in an explicit transaction that rolls back: nothing applied, next refresh applies it once.
$live->safe_psql('postgres', "INSERT INTO app.parent VALUES (60, 'rolled back once')");
$mart->safe_psql('postgres', "BEGIN; SELECT sluice.refresh('p1'); ROLLBACK;");
is($mart->safe_psql('postgres', "SELECT count(*) FROM mart.parent WHERE pid = 60"), '0', 'rolled back refresh applied nothing');
# Two refreshes in one transaction continue from where the first stopped.
$live->safe_psql('postgres', "INSERT INTO app.parent VALUES (61, 'second')");
$res = $mart->safe_psql('postgres', "BEGIN; SELECT transactions FROM sluice.refresh('p1'); SELECT transactions FROM sluice.refresh('p1'); COMMIT;");
is($res, "2\n0", 'second refresh in the same transaction applies nothing twice');
same_tables($live, $mart, \@pairs, 'after rolled back and doubled refreshes');

# Changes to tables outside the pipeline are ignored, and the slot still advances past them.
$live->safe_psql('postgres', "CREATE TABLE app.other (id int primary key); INSERT INTO app.other SELECT generate_series(1, 100)");
is($mart->safe_psql('postgres', "SELECT transactions FROM sluice.refresh('p1')"), '0', 'unpublished tables are not applied');

# drop_pipeline removes the slot and the publication it created on live.
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('p1')");
$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('p2', drop_tables => true)");
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots"), '0', 'slot dropped on live');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_publication"), '0', 'publication dropped on live');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_replication_origin"), '0', 'origin dropped');
is($mart->safe_psql('postgres', "SELECT count(*) FROM mart.parent"), '53', 'tables are kept by default');

# Encodings: a LATIN1 live database feeds a UTF8 datamart database; text is
# converted on the way (in COPY and in pgoutput), never stored as foreign bytes.
$live->safe_psql('postgres', "CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$live->safe_psql('latin', q{
CREATE TABLE t (id int PRIMARY KEY, s text, v varchar(20));
INSERT INTO t VALUES (1, 'caf' || chr(233) || ' cr' || chr(232) || 'me', chr(255));
});
$mart->safe_psql('postgres', "CREATE DATABASE utf ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$mart->safe_psql('utf', 'CREATE EXTENSION pg_sluice');
my $latin_conn = $live->connstr('latin');
$mart->safe_psql('utf', "SELECT sluice.create_source('latin', \$\$$latin_conn\$\$)");
$mart->safe_psql('utf', "SELECT sluice.create_pipeline('pl', 'latin', ARRAY['public.t'], target_schema => 'm')");
$live->safe_psql('latin', "INSERT INTO t VALUES (2, 'na' || chr(239) || 've', 'x' || chr(252))");
$mart->safe_psql('utf', "SELECT sluice.refresh('pl')");
is($mart->safe_psql('utf', q{
SELECT string_agg(id || ':' || encode(convert_to(s, 'UTF8'), 'hex') || ':' || encode(convert_to(v, 'UTF8'), 'hex'), ' ' ORDER BY id) FROM m.t}),
	'1:636166c3a9206372c3a86d65:c3bf 2:6e61c3af7665:78c3bc', 'LATIN1 source text arrives as UTF8');
$mart->safe_psql('utf', "SELECT sluice.drop_pipeline('pl')");

done_testing();
