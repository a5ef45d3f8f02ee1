# Hostile review of session 11 (session 12): each case a bug found by
# attacking a refresh over the SQL decoding interface with live streaming
# big transactions (pgoutput protocol 2, 'streaming' on: stream.c,
# streamfile.c, apply.c's apply_spooled) as its harshest users would, that
# failed before its fix.
#  1. A streamed transaction skipped by sluice.resume(skip_xid) (an error
#     expectation paused the pipeline on one of its rows): the RELATION
#     message live sent inside its stream was dropped with its changes,
#     pgoutput counted the relation as announced at the STREAM COMMIT, and
#     the next transaction of the table failed on "change for relation ...
#     arrived before its RELATION message", the skip kept for the next try:
#     the pipeline had no way forward (every refresh failed the same way).
#     Over the SQL interface and over the walsender.
#  2. A big transaction on live that changed no table of the pipeline (a
#     load into another table) arrives streamed, as empty blocks (pgoutput
#     sends STREAM START whatever the transaction changed): the refresh
#     counted it as a transaction it applied, ran the set expectations for
#     it, and a walsender worker would record a run and announce it.  Sent
#     whole it would not have come at all.  (Leaving it out, the refresh
#     still moves the slot past it at once, as for no message at all.)
#  3. snapshot.c: a key of one of live's enums (text in the datamart) copied
#     in chunks: live refused every chunk ("collations are not supported by
#     type"), its ranges bounded with COLLATE "C", and the copy never
#     finished; its labels, not in the enum's order, with capitals,
#     non-ASCII and a quote, keys moved across chunks while it copies.
#  4. snapshot.c: a key of a composite type copied in chunks: live refused
#     every chunk after the first ("input of anonymous composite types is
#     not implemented": its bounds were untyped literals, which the record
#     comparison takes for anonymous records), and the copy never finished.
#  5. snapshot.c: a key of a composite type with a text attribute sorts by
#     its database's default collation (no COLLATE "C" can be put on it):
#     from a live database whose default collation is ICU's "en" into a
#     datamart in C, live cut the chunks in one order and the datamart
#     placed the stream's changes in them in the other, and updates of
#     copied rows were dropped as if their chunk were still to come.  Such
#     a key is copied in chunks only when both databases sort alike:
#     refused before anything is created, auto copies it in the snapshot.
#  6. (no bug found) a refresh cancelled by statement_timeout or
#     pg_cancel_backend, or its backend terminated, in the middle of a
#     streamed transaction: the next refresh applies it exactly once.
#  7. The datamart's temp_file_limit counts the files a streamed transaction
#     is spooled to, also one still in progress on live: the refresh failed
#     on FileWrite's bare "temporary file size exceeds temp_file_limit",
#     which names neither the spool nor a way out; it says both now.
# Names with quotes, spaces, capitals and non-ASCII; a non-superuser
# operator; a column named like apply's internal aliases.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SluiceTest;

my $live = new_live('live', conf => "logical_decoding_work_mem = 64kB\n");
my $mart = new_mart('mart', conf => "pg_sluice.refresh_transport = sql\npg_sluice.heartbeat_interval = 1\n");

$live->safe_psql('postgres', q{
CREATE SCHEMA "Src Ö";
CREATE TABLE "Src Ö"."Skip 'T'" (id bigint PRIMARY KEY, v text, "new" text);
INSERT INTO "Src Ö"."Skip 'T'" SELECT g, 'seed ' || g, 'n' FROM generate_series(1, 100) g;
CREATE TABLE "Src Ö"."Other" (id bigint PRIMARY KEY, v text);
INSERT INTO "Src Ö"."Other" VALUES (1, 'one');
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE "Øps 'op'" LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO "Øps 'op'";
SET ROLE etl;
SELECT sluice.create_pipeline('skip_p', 'live', ARRAY['"Src Ö"."Skip ''T''"', '"Src Ö"."Other"'], target_schema => 'Mart Ö');
});
my $op = q{SET ROLE "Øps 'op'"; };
my $pl = q{'skip_p'};
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = $pl");
my ($ret, $out, $err);

sub mart_count
{
	my ($cond) = @_;
	return $mart->safe_psql('postgres', qq{SELECT count(*) FROM "Mart Ö"."Skip 'T'" WHERE $cond});
}

# --- 1. a streamed transaction skipped at resume ----------------------------
my $nn = $mart->safe_psql('postgres',
	qq{${op}SELECT sluice.expect_column_values_to_not_be_null('"Mart Ö"."Skip ''T''"', 'new', severity => 'error')});
my $round = 0;
foreach my $transport ('sql', 'walsender')
{
	$round++;
	my $set = "SET pg_sluice.refresh_transport = $transport; ";
	($ret, $out, $err) = $mart->psql('postgres', "$op$set SELECT status FROM sluice.refresh($pl)");
	is($out, 'succeeded', "$transport: nothing pending before the streamed transaction") or diag($err);
	my $base = $round * 100000;
	# the first transaction of the refresh touching the table is the big one
	my $xid = $live->safe_psql('postgres', qq{
BEGIN;
INSERT INTO "Src Ö"."Skip 'T'" SELECT g, 'skipped ' || g, CASE WHEN g = $base + 2500 THEN NULL ELSE 'n' END
  FROM generate_series($base + 1, $base + 5000) g;
SELECT pg_current_xact_id();
COMMIT;});
	$live->safe_psql('postgres', qq{INSERT INTO "Src Ö"."Skip 'T'" VALUES ($base + 9001, 'after', 'n')});
	$live->safe_psql('postgres', qq{UPDATE "Src Ö"."Skip 'T'" SET v = 'touched $round' WHERE id BETWEEN 1 AND 10});
	($ret, $out, $err) = $mart->psql('postgres', "$op$set SELECT status FROM sluice.refresh($pl)");
	is($out, 'paused', "$transport: the NULL in the streamed transaction pauses the pipeline");
	like($err, qr/by source transaction $xid/, "$transport: naming the streamed transaction");
	$mart->safe_psql('postgres', "${op}SELECT sluice.resume($pl, skip_xid => '$xid')");
	($ret, $out, $err) = $mart->psql('postgres', "$op$set SELECT status || ':' || transactions FROM sluice.refresh($pl)");
	is($ret, 0, "$transport: the refresh after the skip succeeds") or diag($err);
	is($out, 'succeeded:2', "$transport: it applies the two transactions after the skipped one");
	is(mart_count("v LIKE 'skipped%'"), '0', "$transport: nothing of the skipped transaction");
	is(mart_count("id = $base + 9001"), '1', "$transport: the next transaction of the table is there");
	is(mart_count("v = 'touched $round'"), '10', "$transport: and the one after it");
	is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = $pl AND skipped_xid = '$xid'"),
		'1', "$transport: the skip is recorded");
	is(checksum($mart, q{"Mart Ö"."Skip 'T'"}),
		checksum($live, qq{(SELECT * FROM "Src Ö"."Skip 'T'" WHERE v NOT LIKE 'skipped%') }),
		"$transport: the datamart equals live but for the skipped transaction");
}

# --- 2. a big transaction of another table: empty blocks ------------------
$live->safe_psql('postgres', q{CREATE TABLE "Src Ö"."Elsewhere" (id bigint PRIMARY KEY, v text)});
foreach my $transport ('sql', 'walsender')
{
	my $set = "SET pg_sluice.refresh_transport = $transport; ";
	$mart->safe_psql('postgres', "$op$set SELECT sluice.refresh($pl)");
	my $streamed = $live->safe_psql('postgres',
		"SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name LIKE 'sluice%'");
	$live->safe_psql('postgres',
		q{INSERT INTO "Src Ö"."Elsewhere" SELECT g, repeat('e', 50) FROM generate_series(1, 5000) g ON CONFLICT (id) DO UPDATE SET v = 'again'});
	my ($st, $end) = split /\|/, $mart->safe_psql('postgres',
		"$op$set SELECT status || ':' || transactions, end_lsn FROM sluice.refresh($pl)");
	is($st, 'succeeded:0', "$transport: a big transaction of a table of no pipeline is no transaction of the refresh");
	# nothing of ours came: the heartbeat moves the slot there at once
	is($live->safe_psql('postgres', "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'"),
		't', "$transport: and the slot is at its end") if $transport eq 'sql';
	ok($live->poll_query_until('postgres',
		"SELECT coalesce(sum(stream_txns), 0) > $streamed FROM pg_stat_replication_slots WHERE slot_name LIKE 'sluice%'"),
		"$transport: live streamed it");
	$live->safe_psql('postgres', q{
BEGIN;
INSERT INTO "Src Ö"."Elsewhere" SELECT g, repeat('f', 50) FROM generate_series(10001, 15000) g;
INSERT INTO "Src Ö"."Skip 'T'" VALUES (-1, 'with a big other', 'n') ON CONFLICT (id) DO UPDATE SET v = 'again';
COMMIT;});
	is($mart->safe_psql('postgres', "$op$set SELECT status || ':' || transactions FROM sluice.refresh($pl)"),
		'succeeded:1', "$transport: one that changed a table of it too is one");
	$live->safe_psql('postgres', q{DELETE FROM "Src Ö"."Elsewhere" WHERE id > 10000});
}
is(checksum($mart, q{"Mart Ö"."Skip 'T'"}),
	checksum($live, qq{(SELECT * FROM "Src Ö"."Skip 'T'" WHERE v NOT LIKE 'skipped%') }),
	'the datamart equals live but for the skipped transactions');

# --- 3. a chunked copy of a table whose key is one of live's enums -----------
$live->safe_psql('postgres', q{
CREATE TYPE "Src Ö"."Stimmung" AS ENUM ('zornig', 'Ärger', 'b''q', 'apple', 'Zürich', 'Apple');
CREATE TABLE "Src Ö"."Enum Key" ("Laune" "Src Ö"."Stimmung", n int, v text, PRIMARY KEY ("Laune", n));
INSERT INTO "Src Ö"."Enum Key"
  SELECT (enum_range(NULL::"Src Ö"."Stimmung"))[1 + g % 6], g, 'v' || g FROM generate_series(1, 3000) g;
});
my $cp = q{SET pg_sluice.copy_workers = 0; SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 400; };
($ret, $out, $err) = $mart->psql('postgres',
	qq{$op$cp SELECT sluice.create_pipeline('enum_k', 'live', ARRAY['"Src Ö"."Enum Key"'], target_schema => 'Mart E')});
is($ret, 0, 'a pipeline whose table has an enum key, copied in chunks') or diag($err);
($ret, $out, $err) = $mart->psql('postgres', qq{$op$cp CALL sluice.copy_tables('enum_k', max_chunks => 3)});
is($ret, 0, 'its first chunks are copied') or diag($err);
$live->safe_psql('postgres', q{
UPDATE "Src Ö"."Enum Key" SET "Laune" = 'Apple' WHERE n % 10 = 0;
UPDATE "Src Ö"."Enum Key" SET "Laune" = 'zornig', v = 'moved' WHERE n % 10 = 5;
DELETE FROM "Src Ö"."Enum Key" WHERE n % 17 = 0;
INSERT INTO "Src Ö"."Enum Key" SELECT 'Ärger', g, 'new' FROM generate_series(3001, 3100) g;
});
($ret, $out, $err) = $mart->psql('postgres', qq{$op$cp CALL sluice.copy_tables('enum_k')});
is($ret, 0, 'the copy finishes') or diag($err);
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._copy c JOIN sluice._pipeline p USING (pipeline_id)
 WHERE p.name = 'enum_k' AND c.finished_at IS NULL}), '0', 'nothing left to copy');
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('enum_k')});
same_tables($live, $mart, [[q{"Src Ö"."Enum Key"}, q{"Mart E"."Enum Key"}]], 'enum key copied in chunks');

# --- 4. a chunked copy of a table whose key is a composite type ------------
$live->safe_psql('postgres', q{
CREATE TYPE public."Paar" AS ("Wort" text, n int);
CREATE TABLE "Src Ö"."Paare" (k public."Paar" PRIMARY KEY, v text);
INSERT INTO "Src Ö"."Paare"
  SELECT ROW(CASE WHEN g % 3 = 0 THEN upper(left(md5(g::text), 3)) ELSE left(md5(g::text), 3) END, g)::public."Paar", 'v' || g
    FROM generate_series(1, 3000) g;
});
$mart->safe_psql('postgres', q{CREATE TYPE public."Paar" AS ("Wort" text, n int)});
$cp = q{SET pg_sluice.copy_workers = 0; SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 300; };
($ret, $out, $err) = $mart->psql('postgres',
	qq{$op$cp SELECT sluice.create_pipeline('paare_same', 'live', ARRAY['"Src Ö"."Paare"'], target_schema => 'Mart S')});
is($ret, 0, 'a pipeline whose table has a composite key, copied in chunks') or diag($err);
($ret, $out, $err) = $mart->psql('postgres', qq{$op$cp CALL sluice.copy_tables('paare_same', max_chunks => 3)});
is($ret, 0, 'its first chunks are copied') or diag($err);
$live->safe_psql('postgres', q{
UPDATE "Src Ö"."Paare" SET v = 'changed ' || (k)."n";
DELETE FROM "Src Ö"."Paare" WHERE (k)."n" % 11 = 0;
INSERT INTO "Src Ö"."Paare"
  SELECT ROW(CASE WHEN g % 2 = 0 THEN upper(left(md5(g::text), 3)) ELSE left(md5(g::text), 3) END, g)::public."Paar", 'new'
    FROM generate_series(3001, 3300) g;
});
($ret, $out, $err) = $mart->psql('postgres', qq{$op$cp CALL sluice.copy_tables('paare_same')});
is($ret, 0, 'the copy finishes') or diag($err);
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._copy c JOIN sluice._pipeline p USING (pipeline_id)
 WHERE p.name = 'paare_same' AND c.finished_at IS NULL}), '0', 'nothing left to copy');
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('paare_same')});
same_tables($live, $mart, [[q{"Src Ö"."Paare"}, q{"Mart S"."Paare"}]], 'composite key copied in chunks');

# --- 5. a composite key sorted by live's default collation, not ours -------
SKIP:
{
	skip 'no ICU on live', 5
	  unless $live->safe_psql('postgres', "SELECT count(*) > 0 FROM pg_collation WHERE collprovider = 'i'") eq 't';
	$live->safe_psql('postgres',
		q{CREATE DATABASE "İcu" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en'});
	$live->safe_psql('İcu', q{
CREATE SCHEMA app;
CREATE TYPE public."Paar" AS ("Wort" text, n int);
CREATE TABLE app."Paare" (k public."Paar" PRIMARY KEY, v text);
INSERT INTO app."Paare"
  SELECT ROW(CASE WHEN g % 3 = 0 THEN upper(left(md5(g::text), 3)) ELSE left(md5(g::text), 3) END, g)::public."Paar", 'v' || g
    FROM generate_series(1, 3000) g;
ANALYZE app."Paare";
});
	mart_source($mart, $live, 'live_icu', 'İcu');
	my $chunked = q{SET pg_sluice.copy_workers = 0; SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 300; };
	($ret, $out, $err) = $mart->psql('postgres',
		qq{$op$chunked SELECT sluice.create_pipeline('paare_c', 'live_icu', ARRAY['app."Paare"'], target_schema => 'Mart C')});
	isnt($ret, 0, 'a chunked copy of a key sorted by another default collation is refused');
	like($err, qr/the key of table "app.Paare" sorts by the default collation, which source "live_icu" does not share with this database/,
		'saying why');
	my $auto = q{SET pg_sluice.copy_workers = 0; SET pg_sluice.initial_copy = auto; SET pg_sluice.initial_copy_chunked_above = 100; SET pg_sluice.initial_copy_chunk_rows = 300; };
	($ret, $out, $err) = $mart->psql('postgres',
		qq{$op$auto SELECT sluice.create_pipeline('paare', 'live_icu', ARRAY['app."Paare"'], target_schema => 'Mart P')});
	is($ret, 0, 'auto creates the pipeline') or diag($err);
	$mart->psql('postgres', qq{$op$auto CALL sluice.copy_tables('paare', max_chunks => 3)});
	$live->safe_psql('İcu', q{
UPDATE app."Paare" SET v = 'changed ' || (k)."n";
DELETE FROM app."Paare" WHERE (k)."n" % 11 = 0;
INSERT INTO app."Paare"
  SELECT ROW(CASE WHEN g % 2 = 0 THEN upper(left(md5(g::text), 3)) ELSE left(md5(g::text), 3) END, g)::public."Paar", 'new'
    FROM generate_series(3001, 3300) g;
});
	($ret, $out, $err) = $mart->psql('postgres', qq{$op$auto CALL sluice.copy_tables('paare')});
	is($ret, 0, 'nothing fails') or diag($err);
	$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('paare')});
	is(checksum($mart, q{"Mart P"."Paare"}), checksum($live, q{app."Paare"}, 'İcu'),
		'the datamart equals live (the table was copied in the snapshot)');
}

# --- 6. a refresh cancelled, or its backend terminated, in a streamed transaction
$live->safe_psql('postgres', q{CREATE TABLE "Src Ö"."Held" (id bigint PRIMARY KEY, v text)});
$mart->safe_psql('postgres', qq{${op}SET pg_sluice.copy_workers = 0; SELECT sluice.add_table('skip_p', '"Src Ö"."Held"', 1000)});
$mart->safe_psql('postgres', qq{${op}SET pg_sluice.copy_workers = 0; CALL sluice.copy_tables('skip_p')});
$mart->safe_psql('postgres', q{
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.id % 100000 = 15000 AND current_setting('hold.active', true) = 'yes' THEN PERFORM pg_sleep(30); END IF; RETURN NEW; END $$;
CREATE TRIGGER hold BEFORE INSERT ON "Mart Ö"."Held" FOR EACH ROW EXECUTE FUNCTION public.hold();
ALTER TABLE "Mart Ö"."Held" ENABLE ALWAYS TRIGGER hold;
GRANT EXECUTE ON FUNCTION public.hold() TO PUBLIC;});
my $base6 = 0;
foreach my $how ('statement_timeout', 'pg_terminate_backend', 'pg_cancel_backend')
{
	$live->safe_psql('postgres', qq{
INSERT INTO "Src Ö"."Held" SELECT $base6 + g, 'held ' || g FROM generate_series(1, 20000) g});
	$live->safe_psql('postgres', q{INSERT INTO "Src Ö"."Skip 'T'" VALUES (-2, 'after held', 'n') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v || now()::text});
	my $hold = q{SET hold.active = 'yes'; };
	if ($how eq 'statement_timeout')
	{
		($ret, $out, $err) = $mart->psql('postgres', qq{$op${hold}SET statement_timeout = '2s'; SELECT sluice.refresh('skip_p')});
		like($err, qr/canceling statement due to statement timeout/, "$how: the refresh is cancelled in the streamed transaction");
	}
	else
	{
		my $bg = $mart->background_psql('postgres', on_error_stop => 0);
		$bg->query_until(qr/started/, qq{$op$hold\\echo started\nSELECT sluice.refresh('skip_p');\n});
		ok($mart->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'sluice.refresh'"),
			"$how: the refresh is in the middle of the streamed transaction");
		$mart->safe_psql('postgres', "SELECT $how(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'sluice.refresh'");
		eval { $bg->quit };
	}
	($ret, $out, $err) = $mart->psql('postgres', qq{${op}SELECT status || ':' || transactions FROM sluice.refresh('skip_p')});
	is($ret, 0, "$how: the next refresh succeeds") or diag($err);
	is($out, 'succeeded:2', "$how: it applies both transactions");
	is(checksum($mart, q{"Mart Ö"."Held"}), checksum($live, q{"Src Ö"."Held"}), "$how: exactly once");
	$live->safe_psql('postgres', q{DELETE FROM "Src Ö"."Held"});
	$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('skip_p')});
	$base6 += 100000;
}

# --- 7. temp_file_limit and a streamed transaction still in progress -------
my $big = $live->background_psql('postgres');
$big->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Skip 'T'" SELECT g, repeat('t', 200), 'n' FROM generate_series(500001, 520000) g});
$live->safe_psql('postgres', q{INSERT INTO "Src Ö"."Skip 'T'" VALUES (-3, 'small', 'n')});
($ret, $out, $err) = $mart->psql('postgres', "SET temp_file_limit = '1MB'; ${op}SELECT sluice.refresh($pl)");
like($err, qr/temporary file size exceeds temp_file_limit/, "the datamart's temp_file_limit stops the refresh");
like($err, qr/HINT:  Raise temp_file_limit for the role that refreshes, or have an administrator set pg_sluice.source_decoding_work_mem/,
	'with the ways forward');
$big->query_safe('COMMIT');
$big->quit;
is($mart->safe_psql('postgres', "${op}SELECT status || ':' || transactions FROM sluice.refresh($pl)"), 'succeeded:2',
	'without the limit the refresh applies both');
is(checksum($mart, q{"Mart Ö"."Skip 'T'"}),
	checksum($live, qq{(SELECT * FROM "Src Ö"."Skip 'T'" WHERE v NOT LIKE 'skipped%') }),
	'the datamart equals live but for the skipped transactions');

done_testing();
