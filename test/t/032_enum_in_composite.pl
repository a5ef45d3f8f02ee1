# The type rule inside other types.  Enums become text so that a label added
# on live never breaks the datamart; a composite type (which must exist in
# the datamart) holding an enum, directly, in an array, through a domain or
# in a nested composite, would break it as soon as live adds a label: such a
# datamart type is refused at creation, with the ALTER TYPE that fixes it,
# and once it holds text the new labels flow.  Arrays of domains follow the
# domain rule (the base type's array) instead of being refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

my $types = q{
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok');
CREATE DOMAIN app.posint AS int CHECK (VALUE > 0);
CREATE DOMAIN app.moods AS app.mood[];
CREATE TYPE app.feeling AS (who text, m app.mood);
CREATE TYPE app.wrapped AS (n int, f app.feeling);
CREATE TYPE app.many AS (ms app.moods);
};
$live->safe_psql('postgres', $types . q{
CREATE DOMAIN app.code AS varchar(8) CHECK (VALUE ~ '^[A-Z]+$');
CREATE TABLE app.t (id int PRIMARY KEY, f app.feeling, fs app.feeling[], w app.wrapped, ma app.many,
                    pa app.posint[], ca app.code[], m app.mood);
INSERT INTO app.t SELECT g, ROW('p' || g, 'ok')::app.feeling, ARRAY[ROW('a', 'sad')::app.feeling],
       ROW(g, ROW('q', 'sad'))::app.wrapped, ROW(ARRAY['ok', 'sad']::app.mood[])::app.many,
       ARRAY[g, g + 1]::app.posint[], ARRAY['AB', 'CD']::app.code[], 'ok'
  FROM generate_series(1, 20) g;
});
mart_source($mart, $live, 'live');

# The datamart's types as a user would first declare them: the same as live's.
$mart->safe_psql('postgres', $types);
my ($ret, $out, $err) = $mart->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT sluice.create_pipeline('p', 'live', ARRAY['app.t'], target_schema => 'm')");
isnt($ret, 0, 'a composite holding an enum in the datamart is refused');
like($err, qr/42804: attribute "m" of datamart type app\.feeling holds enum app\.mood/, 'saying which attribute');
like($err, qr/a label added on the source would make every refresh fail/, 'and why');
like($err, qr/ALTER TYPE app\.feeling ALTER ATTRIBUTE m TYPE text/, 'with the statement that fixes it');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots"), '0', 'nothing created on live');

$mart->safe_psql('postgres', "ALTER TYPE app.feeling ALTER ATTRIBUTE m TYPE text");
($ret, $out, $err) = $mart->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT sluice.create_pipeline('p', 'live', ARRAY['app.t'], target_schema => 'm')");
isnt($ret, 0, 'an enum array through a domain in a composite is refused as well');
like($err, qr/attribute "ms" of datamart type app\.many holds enum app\.mood/, 'saying which attribute');
like($err, qr/ALTER TYPE app\.many ALTER ATTRIBUTE ms TYPE text\[\]/, 'with the array statement');

$mart->safe_psql('postgres', "ALTER TYPE app.many ALTER ATTRIBUTE ms TYPE text[]");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_pipeline('p', 'live', ARRAY['app.t'], target_schema => 'm')");
is($ret, 0, 'accepted once the datamart types hold text') or diag($err);
is($mart->safe_psql('postgres', q{
SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ' ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = 'm.t'::regclass AND attnum > 0 AND attname IN ('pa', 'ca', 'm')}),
	'pa:integer[] ca:character varying(8)[] m:text', 'arrays of domains follow the domain rule');
same_tables($live, $mart, [['app.t', 'm.t']], 'initial copy');

# live adds labels and uses them everywhere, in the same backlog
$live->safe_psql('postgres', q{
ALTER TYPE app.mood ADD VALUE 'happy';
ALTER TYPE app.mood ADD VALUE 'furious' BEFORE 'sad';
});
$live->safe_psql('postgres', q{
UPDATE app.t SET f = ROW((f).who, 'happy'), fs = fs || ROW('b', 'furious')::app.feeling,
                 w = ROW((w).n, ROW('q', 'happy')), ma = ROW(ARRAY['happy', 'furious']::app.mood[]),
                 pa = pa || 7, m = 'furious'
 WHERE id % 2 = 0;
INSERT INTO app.t VALUES (21, ROW('new', 'happy'), NULL, NULL, ROW(ARRAY['furious']::app.mood[]), '{1}', '{X}', 'happy');
});
($ret, $out, $err) = $mart->psql('postgres', "SELECT rows_inserted, rows_updated FROM sluice.refresh('p')");
is($ret, 0, 'new labels inside composites do not break the refresh') or diag($err);
is($out, '1|10', 'every change applied');
same_tables($live, $mart, [['app.t', 'm.t']], 'after new labels');

done_testing();
