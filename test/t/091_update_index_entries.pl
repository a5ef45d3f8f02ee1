# An update that is not HOT inserts the new row's index entries itself
# (apply.c, write_update): without the unique check when the index's
# columns keep their values, with it when they change.  Every index must
# hold exactly the table's rows afterwards (amcheck, heapallindexed), a
# changed value that collides must still fail and name the table, and the
# tables the path leaves to ExecSimpleRelationUpdate (a partial index, a
# trigger, a deferrable key) must come out the same.
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
CREATE TABLE app.u ("Id" bigint PRIMARY KEY, "Code" text, n int, note text);
CREATE TABLE app.comp (a int, "b c" text, v int, PRIMARY KEY (a, "b c"));
CREATE TABLE app.part (id int PRIMARY KEY, n int, flag bool);
CREATE TABLE app.hot (id int PRIMARY KEY, n int);
INSERT INTO app.u SELECT g, 'c' || g, g, 'x' FROM generate_series(1, 3000) g;
INSERT INTO app.comp SELECT g % 50, 'k é ' || g, g FROM generate_series(1, 2000) g;
INSERT INTO app.part SELECT g, g, g % 2 = 0 FROM generate_series(1, 2000) g;
INSERT INTO app.hot SELECT g, g FROM generate_series(1, 2000) g;
});

mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE EXTENSION amcheck;
SELECT sluice.create_pipeline('p', 'live', ARRAY['app.u', 'app.comp', 'app.part', 'app.hot'],
                              target_schema => 'm')});
# The datamart's own indexes: a unique one on a column the source does not
# keep unique, an expression index, a plain one; a partial index (the
# executor's path); a table with room for HOT updates.
$mart->safe_psql('postgres', q{
CREATE UNIQUE INDEX u_code ON m.u ("Code");
CREATE INDEX u_lower ON m.u (lower(note));
CREATE INDEX u_n ON m.u (n);
CREATE INDEX part_n ON m.part (n) WHERE flag;
ALTER TABLE m.hot SET (fillfactor = 50);
VACUUM FULL m.hot;
});

# 1. Many updates of the same rows in one source transaction, keys kept:
#    each version's entries go in without the unique check.
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.u SET n = n + 1, note = 'y' WHERE "Id" <= 2000;
UPDATE app.u SET n = n + 1 WHERE "Id" <= 1000;
UPDATE app.u SET note = 'Z' || "Id" WHERE "Id" % 7 = 0;
UPDATE app.comp SET v = v * 2;
UPDATE app.part SET n = n + 1, flag = NOT flag WHERE id <= 1500;
UPDATE app.hot SET n = n + 1;
COMMIT;
});
is($mart->safe_psql('postgres', "SELECT rows_updated FROM sluice.refresh('p')"), '8928', 'all updates applied');
same_tables($live, $mart, [['app.u', 'm.u'], ['app.comp', 'm.comp'], ['app.part', 'm.part'], ['app.hot', 'm.hot']],
	'kept keys');
indexes_hold_rows($mart, 'm', 'kept keys');
ok($mart->poll_query_until('postgres', "SELECT n_tup_hot_upd > 0 FROM pg_stat_user_tables WHERE relid = 'm.hot'::regclass"),
	'the table with room took HOT updates');

# 2. Keys and unique values that change: checked, and no false conflict
#    when a value moves from one row to another within the transaction.
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.u SET "Id" = "Id" + 100000 WHERE "Id" BETWEEN 2001 AND 2500;
UPDATE app.u SET "Code" = 'moved' WHERE "Id" = 10;
UPDATE app.u SET "Code" = 'c10' WHERE "Id" = 11;
UPDATE app.comp SET "b c" = "b c" || '!' WHERE a = 3;
COMMIT;
});
is($mart->safe_psql('postgres', "SELECT rows_updated FROM sluice.refresh('p')"), '542', 'changed keys applied');
same_tables($live, $mart, [['app.u', 'm.u'], ['app.comp', 'm.comp']], 'changed keys');
indexes_hold_rows($mart, 'm', 'changed keys');

# 3. A changed value that collides in the datamart's own unique index: the
#    refresh fails, names the index and the table, and keeps nothing.
my $before = checksum($mart, 'm.u');
$live->safe_psql('postgres', q{UPDATE app.u SET "Code" = 'c12', n = -1 WHERE "Id" = 13});
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
isnt($ret, 0, 'a colliding update fails the refresh');
like($err, qr/duplicate key value violates unique constraint "u_code".*applying UPDATE for "app.u"/s,
	'the error names the index and the table');
is(checksum($mart, 'm.u'), $before, 'nothing of the failed batch stayed');
$mart->safe_psql('postgres', "DROP INDEX m.u_code");
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
same_tables($live, $mart, [['app.u', 'm.u']], 'after the DBA drops the index');

# 4. An expression index that is unique: its value is checked whenever the
#    row is updated, since its columns are not compared.
$live->safe_psql('postgres', q{UPDATE app.u SET "Code" = 'c13' WHERE "Id" = 13});
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
$mart->safe_psql('postgres', "CREATE UNIQUE INDEX u_lower_code ON m.u (lower(\"Code\"))");
$live->safe_psql('postgres', q{UPDATE app.u SET "Code" = 'C14' WHERE "Id" = 15});
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('p')");
like($err, qr/duplicate key value violates unique constraint "u_lower_code"/, 'a unique expression index is checked');
$mart->safe_psql('postgres', "DROP INDEX m.u_lower_code");
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");

# 5. A trigger on the datamart table: the executor's path, fired per row.
$mart->safe_psql('postgres', q{
CREATE TABLE public.seen (id bigint);
CREATE FUNCTION public.note_update() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.seen VALUES (NEW."Id"); RETURN NEW; END$$;
CREATE TRIGGER t AFTER UPDATE ON m.u FOR EACH ROW EXECUTE FUNCTION public.note_update();
ALTER TABLE m.u ENABLE ALWAYS TRIGGER t;
});
$live->safe_psql('postgres', q{UPDATE app.u SET n = n + 1 WHERE "Id" <= 100});
$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM public.seen"), '100', 'the trigger fired once per row');
same_tables($live, $mart, [['app.u', 'm.u'], ['app.part', 'm.part']], 'with a trigger');
indexes_hold_rows($mart, 'm', 'with a trigger');

done_testing();
