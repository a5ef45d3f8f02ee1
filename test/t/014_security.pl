# Security, as the harshest users would try it (shared/HOSTILE.md): an
# attacker with CREATE on public shadowing functions a predicate uses; a
# pipeline owner planting code for a superuser's refresh to run; an
# operator reaching for secrets, other pipelines and the catalog; a BI
# reader using every read function; names with quotes, spaces, capitals,
# non-ASCII letters and the words a, b, key, version.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "shared_preload_libraries = 'pg_sluice'\nlog_min_error_statement = error\nlog_statement = none\n");
my $secret = 'S3cr3t-pw-4fq9';

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.acct (id int PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO app.acct SELECT g, g, 'n' || g FROM generate_series(1, 50) g;
CREATE TABLE app."Wéird ""Tab"" 1" ("a" int, "b" text, "key" int, "version" int, "Quote'd col" text,
                                    PRIMARY KEY ("a", "key"));
INSERT INTO app."Wéird ""Tab"" 1" SELECT g, 'b' || g, g % 3, g, 'q''' || g FROM generate_series(1, 30) g;
CREATE TABLE app.other (id int PRIMARY KEY, secret_value text);
INSERT INTO app.other VALUES (1, 'only-for-etl-readers');
});

# live and mart equal on live's columns (history adds _sluice_version)
sub same_rows
{
	my ($ltab, $mtab, $cols, $label) = @_;
	my $q = "SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text COLLATE \"C\")), '-') FROM (SELECT $cols FROM %s) r";
	is($mart->safe_psql('postgres', sprintf($q, $mtab)), $live->safe_psql('postgres', sprintf($q, $ltab)), $label);
}
my $wcols = '"a", "b", "key", "version", "Quote\'d col"';

# --- roles ---------------------------------------------------------------
$mart->safe_psql('postgres', qq{
CREATE ROLE etl NOLOGIN;
CREATE ROLE alice LOGIN;
CREATE ROLE mallory LOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
GRANT CREATE ON SCHEMA public TO mallory;
SELECT sluice.grant_operator('etl');
SELECT sluice.grant_operator('mallory');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO alice;
SELECT sluice.create_source('live', \$\$@{[ $live->connstr('postgres') ]} password=$secret\$\$);
});

# etl creates the pipelines: it owns them and their tables
$mart->safe_psql('postgres', q{
SET ROLE etl;
SELECT sluice.create_pipeline('acme', 'live', ARRAY['app.acct', 'app."Wéird ""Tab"" 1"'], target_schema => 'we"ird''s');
SELECT sluice.create_pipeline('hidden', 'live', ARRAY['app.other'], target_schema => 'hid');
SELECT sluice.keep_history('acme');
});
is($mart->safe_psql('postgres', q{SELECT string_agg(p.name || '=' || p.owner::text, ',' ORDER BY p.name) FROM sluice._pipeline p}),
	'acme=etl,hidden=etl', 'pipelines are owned by the role that created them');

# --- 1. search_path shadowing by a role with CREATE on public -------------
# The predicate round(v) resolves, when declared, to pg_catalog.round; a
# better-matching public.round(integer) created afterwards must never run.
$mart->safe_psql('postgres', q{
SET ROLE alice;
SELECT sluice.expect_row_to_satisfy('"we""ird''s".acct', 'round(v) >= 0', 'warn');
SELECT sluice.expect_column_values_to_be_unique('"we""ird''s".acct', ARRAY['v'], 'warn');
});
$mart->safe_psql('postgres', q{
SET ROLE mallory;
CREATE TABLE public.pwned (who text, at timestamptz DEFAULT now());
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.round(integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  INSERT INTO public.pwned (who) VALUES (current_user);
  EXECUTE 'ALTER ROLE mallory SUPERUSER';
  RETURN $1;
END $$;
CREATE FUNCTION public.to_jsonb(integer) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  INSERT INTO public.pwned (who) VALUES (current_user);
  EXECUTE 'ALTER ROLE mallory SUPERUSER';
  RETURN '1';
END $$;
CREATE FUNCTION public.int4eq_evil(integer, integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  INSERT INTO public.pwned (who) VALUES (current_user);
  RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
});
$live->safe_psql('postgres', "UPDATE app.acct SET v = v + 1 WHERE id <= 10; INSERT INTO app.acct VALUES (51, 51, 'x')");
# a superuser's refresh with the attacker's schema first in its path
$mart->safe_psql('postgres', "SET search_path = public, pg_catalog; SELECT sluice.refresh('acme')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM public.pwned"), '0',
	'no shadowing function ran during a superuser refresh');
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f',
	'the attacker did not become superuser');
is($mart->safe_psql('postgres', q{SELECT sum(evaluated) FROM sluice.quality WHERE expectation LIKE 'expect_row_to_satisfy%'}),
	'11', 'the bound predicate still checked every written row');
like($mart->safe_psql('postgres', q{SELECT predicate_tree::text FROM sluice._expectation WHERE kind = 'expect_row_to_satisfy'}),
	qr/FUNCEXPR/, 'the predicate is stored as a bound expression tree');

# the catalog cannot be fed SQL text or trees from outside
my ($rc, $out, $err) = $mart->psql('postgres',
	q{SET ROLE alice; UPDATE sluice._expectation SET check_sql = 'SELECT 1', predicate = 'true'});
like($err, qr/permission denied for table _expectation/, 'an operator cannot rewrite a stored expectation');
($rc, $out, $err) = $mart->psql('postgres',
	q{SET ROLE alice; INSERT INTO sluice._expectation (pipeline_id, source_schema, source_table, name, kind, severity, predicate_tree)
	  SELECT pipeline_id, 'app', 'acct', 'forged', 'x', 'warn', '{CONST}' FROM sluice._pipeline LIMIT 1});
like($err, qr/cannot accept a value of type pg_node_tree/, 'a tree cannot be typed in');

# --- 2. a pipeline owner's code never runs with a superuser's rights -------
$mart->safe_psql('postgres', q{
SET ROLE etl;
CREATE SCHEMA etlfn;
CREATE FUNCTION etlfn.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE 'ALTER ROLE etl SUPERUSER';
  RETURN NEW;
END $$;
CREATE TRIGGER escalate AFTER INSERT ON "we""ird's".acct FOR EACH ROW EXECUTE FUNCTION etlfn.escalate();
});
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (52, 52, 'y')");
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('acme')");
like($err, qr/must be superuser to alter superuser roles/, "a superuser's refresh runs the owner's trigger as the owner");
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'etl'"), 'f',
	'the owner did not become superuser through a trigger');
$mart->safe_psql('postgres', q{SET ROLE etl; DROP TRIGGER escalate ON "we""ird's".acct});

$mart->safe_psql('postgres', q{
SET ROLE etl;
CREATE FUNCTION etlfn.escalate_now() RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  EXECUTE 'ALTER ROLE etl SUPERUSER';
END $$;
-- an IMMUTABLE wrapper around a volatile function
CREATE FUNCTION etlfn.sneaky(integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM etlfn.escalate_now();
  RETURN true;
END $$;
SELECT sluice.add_expectation('"we""ird''s".acct', 'expect_row_to_satisfy', '{}',
                              '{"predicate": "etlfn.sneaky(v)"}', 'warn', 'sneaky');
});
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (53, 53, 'z')");
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('acme')");
like($err, qr/must be superuser to alter superuser roles/,
	"a superuser's refresh evaluates the owner's predicate as the owner, restricted");
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'etl'"), 'f',
	'the owner did not become superuser through a predicate');
$mart->safe_psql('postgres', q{SET ROLE alice; SELECT sluice.drop_expectation('"we""ird''s".acct', 'sneaky')});

# --- 3. the operator ------------------------------------------------------
my $r = $mart->safe_psql('postgres', "SET ROLE alice; SELECT status FROM sluice.refresh('acme')");
is($r, 'succeeded', 'an operator refreshes the pipelines of the role it was granted');
same_rows('app.acct', '"we""ird\'s".acct', 'id, v, note', 'after the operator refresh: acct equals live');
same_rows('app."Wéird ""Tab"" 1"', '"we""ird\'s"."Wéird ""Tab"" 1"', $wcols, 'and so does the table with hostile names');
for my $sql ("SELECT sluice.stop('acme')", "SELECT sluice.resume('acme')",
	"SELECT sluice.set_drift_policy('\"we\"\"ird''s\".acct', 'evolve')",
	"SELECT sluice.tag('acme', 'release_1')")
{
	($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; $sql");
	is($rc, 0, "operator may: $sql") or diag($err);
}
# not another role's pipeline, not the secrets, not the catalog's wiring
$mart->safe_psql('postgres', q{
CREATE ROLE other_owner NOLOGIN;
SELECT sluice.grant_operator('other_owner');
SELECT sluice.alter_pipeline_owner('hidden', 'other_owner');
ALTER SCHEMA hid OWNER TO other_owner;
ALTER TABLE hid.other OWNER TO other_owner;
});
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT sluice.refresh('hidden')");
like($err, qr/permission denied to refresh pipeline "hidden".*\n.*DETAIL:  Only superusers and roles with the privileges of role "other_owner".*\n.*HINT:  A superuser or the owner can grant it: GRANT other_owner TO alice;/,
	'an operator cannot refresh a pipeline it was not granted, and is told how to get it');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE mallory; SELECT sluice.refresh('acme')");
like($err, qr/permission denied to refresh pipeline "acme"/, 'a role with the grants but not the owner\'s privileges is refused');
for my $sql ("SELECT sluice.start('hidden')", "SELECT sluice.stop('hidden')")
{
	($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; $sql");
	like($err, qr/permission denied to (start|stop) pipeline "hidden"/, "operator refused: $sql");
}
is($mart->safe_psql('postgres', "SET ROLE alice; SELECT count(*) FROM sluice._pipeline WHERE name = 'hidden'"), '0',
	'row security hides other pipelines from the catalog');
is($mart->safe_psql('postgres', "SET ROLE alice; SELECT count(*) FROM sluice.quarantine WHERE pipeline = 'hidden'"), '0',
	'and from the quarantine');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT sluice.resume('hidden')");
like($err, qr/pipeline "hidden" does not exist/, 'resume of a pipeline it does not operate is refused');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; UPDATE sluice._pipeline SET slot_name = 'sluice_hidden', origin_name = 'x' WHERE name = 'acme'");
like($err, qr/permission denied for table _pipeline/, 'an operator cannot rewire its pipeline to another slot or origin');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; UPDATE sluice._pipeline_table SET target_table = 'pg_authid'");
like($err, qr/permission denied for table _pipeline_table/, 'nor point it at another table');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; UPDATE sluice._pipeline SET owner = (SELECT oid FROM pg_roles WHERE rolsuper LIMIT 1)::regrole WHERE name = 'acme'");
like($err, qr/permission denied for table _pipeline/, 'nor give it to a superuser');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; INSERT INTO sluice._pipeline (name, source_name, publication, publication_owned, slot_name, origin_name, target_schema, consistent_lsn) VALUES ('x', 'live', 'p', false, 'sluice_hidden', 'o', 'hid', '0/0')");
like($err, qr/permission denied for table _pipeline/, 'nor create a pipeline row by hand');
for my $sql ("SELECT * FROM sluice._source", "SELECT * FROM sluice.sources", "SELECT * FROM sluice._destination")
{
	($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; $sql");
	like($err, qr/permission denied/, "operator cannot read secrets: $sql");
}

# --- 4. secrets never reach logs, errors or views -------------------------
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.create_source('live', 'host=x password=$secret')");
like($err, qr/source "live" already exists/, 'a failing create_source still says why');
unlike($err, qr/\Q$secret\E/, 'and the error does not echo the password');
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.alter_source('nope', 'host=x password=$secret')");
like($err, qr/source "nope" does not exist/, 'alter_source of an unknown source fails');
my $visible = $mart->safe_psql('postgres', q{
SELECT string_agg(x, '|') FROM (
  SELECT conninfo AS x FROM sluice.sources
  UNION ALL SELECT coalesce(body::text, '') FROM sluice.events
  UNION ALL SELECT coalesce(error, '') FROM sluice.runs
  UNION ALL SELECT coalesce(last_error, '') || coalesce(paused_reason, '') FROM sluice.status) s});
unlike($visible, qr/\Q$secret\E/, 'no view shows the password');
my $log = slurp_file($mart->logfile);
unlike($log, qr/\Q$secret\E/, 'the server log never holds the password');
like($log, qr/source "live" already exists/, '(the log does hold the failure)');

# --- 5. the BI reader -----------------------------------------------------
$mart->safe_psql('postgres', q{
GRANT USAGE ON SCHEMA "we""ird's", "we""ird's_history", acme_release_1 TO bi;
GRANT SELECT ON ALL TABLES IN SCHEMA "we""ird's", "we""ird's_history", acme_release_1 TO bi;
});
my $v = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'acme'");
for my $q ("SELECT count(*) FROM \"we\"\"ird's\".acct_at($v)",
	"SELECT count(*) FROM \"we\"\"ird's\".acct_at_time(now())",
	"SELECT count(*) FROM acme_release_1.acct",
	"SELECT count(*) FROM acme_release_1.\"Wéird \"\"Tab\"\" 1\"",
	"SELECT count(*) FROM sluice.diff('\"we\"\"ird''s\".acct', $v, $v)",
	"SELECT count(*) FROM sluice.diff('\"we\"\"ird''s\".\"Wéird \"\"Tab\"\" 1\"', $v, $v)",
	"SELECT count(*) FROM sluice.versions", "SELECT count(*) FROM sluice.status",
	"SELECT count(*) FROM sluice.quality", "SELECT count(*) FROM sluice.tags")
{
	($rc, $out, $err) = $mart->psql('postgres', "SET ROLE bi; $q");
	is($rc, 0, "reader: $q") or diag($err);
}
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT count(*) FROM \"we\"\"ird's\".acct_at($v)"),
	$mart->safe_psql('postgres', "SELECT count(*) FROM \"we\"\"ird's\".acct"), 'the reader sees the current version through acct_at');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT * FROM sluice.diff('hid.other', 1, 2)");
like($err, qr/permission denied for (schema hid|table other)/, 'diff of a table the reader cannot read is refused');
# quality rows (and their sample values) only for readable tables
$mart->safe_psql('postgres', q{
SET ROLE other_owner;
SELECT sluice.expect_column_values_to_match_regex('hid.other', 'secret_value', '^zzz', 'warn');
});
$live->safe_psql('postgres', "UPDATE app.other SET secret_value = 'leaky-value' WHERE id = 1");
$mart->safe_psql('postgres', "SELECT sluice.refresh('hidden')");
like($mart->safe_psql('postgres', "SELECT sample_keys::text FROM sluice.quality WHERE target_table = 'other'"),
	qr/1/, '(the superuser sees the failing key of hid.other)');
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT count(*) FROM sluice.quality WHERE target_table = 'other'"), '0',
	'the reader sees no quality rows of a table it cannot read');
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT count(*) FROM sluice.expectations WHERE target_table = 'other'"), '0',
	'nor its expectations');
# what a BI metadata sync lists: only readable relations, none of the private catalog
my $listed = $mart->safe_psql('postgres', q{SET ROLE bi;
SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY 1) FROM information_schema.tables
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')});
unlike($listed, qr/sluice\._|hid\.other/, "a reader's metadata sync lists no private table: $listed");
like($listed, qr/we"ird's\.acct/, 'and lists the tables it may read');
# every relation it lists is described (BI tools show comments) and can be sampled
my @rels = split /\n/, $mart->safe_psql('postgres', q{SET ROLE bi;
SELECT format('%I.%I', table_schema, table_name)::regclass::oid || ' ' || format('%I.%I', table_schema, table_name)
  FROM information_schema.tables
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'sluice', 'public')});
ok(@rels >= 6, 'the reader lists the tables, history tables and tag views: ' . scalar(@rels));
for my $line (@rels)
{
	my ($oid, $rel) = split / /, $line, 2;
	is($mart->safe_psql('postgres', "SELECT obj_description($oid, 'pg_class') IS NOT NULL
	    AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = $oid AND a.attnum > 0
	                       AND NOT a.attisdropped AND col_description(a.attrelid, a.attnum) IS NULL)"),
		't', "$rel and every column of it have a comment");
	($rc, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT * FROM $rel LIMIT 5");
	is($rc, 0, "the reader samples $rel") or diag($err);
}

# --- 6. hostile names through every name-taking function ------------------
my $hv = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'acme'");
$live->safe_psql('postgres', q{UPDATE app."Wéird ""Tab"" 1" SET "b" = 'changed', "version" = -1 WHERE "a" <= 3});
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.refresh('acme')");
my $hv2 = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'acme'");
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT string_agg(change || ' ' || key::text, ';' ORDER BY key::text) FROM sluice.diff('\"we\"\"ird''s\".\"Wéird \"\"Tab\"\" 1\"', $hv, $hv2)"),
	'changed {"a": 1, "key": 1};changed {"a": 2, "key": 2};changed {"a": 3, "key": 0}',
	'diff works on a table whose columns are named a, b, key and version');
$mart->safe_psql('postgres', q{SET ROLE alice;
SELECT sluice.expect_column_values_to_not_be_null('"we""ird''s"."Wéird ""Tab"" 1"', 'Quote''d col', 'warn');
SELECT sluice.expect_column_values_to_be_in_set('"we""ird''s"."Wéird ""Tab"" 1"', 'b', ARRAY['it''s', 'changed'], 'warn');
SELECT sluice.expect_column_values_to_be_unique('"we""ird''s"."Wéird ""Tab"" 1"', ARRAY['key', 'version'], 'warn');
});
$live->safe_psql('postgres', q{UPDATE app."Wéird ""Tab"" 1" SET "b" = 'it''s' WHERE "a" = 4});
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.refresh('acme')");
is($mart->safe_psql('postgres', q{SELECT string_agg(expectation || '=' || failed, ',' ORDER BY expectation) FROM sluice.quality
  WHERE target_table = 'Wéird "Tab" 1' AND run_id = (SELECT max(run_id) FROM sluice.quality)}),
	'expect_column_values_to_be_in_set_b_Wéird "Tab" 1=0,expect_column_values_to_be_unique_key_version_Wéird "Tab" 1=0,expect_column_values_to_not_be_null_Quote\'d col_Wéird "Tab" 1=0',
	'expectations over hostile column names run');
same_rows('app."Wéird ""Tab"" 1"', '"we""ird\'s"."Wéird ""Tab"" 1"', $wcols, 'hostile names: equal to live');

# schema evolution with history kept, in a schema whose name holds both quotes
$live->safe_psql('postgres', "ALTER TABLE app.acct ADD COLUMN \"it's new\" text; UPDATE app.acct SET \"it's new\" = 'x' || id WHERE id <= 5");
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.refresh('acme')");
same_rows('app.acct', '"we""ird\'s".acct', 'id, v, note, "it\'s new"', 'a column added on live evolves the table');
my $ev = $mart->safe_psql('postgres', "SELECT max(version) FROM sluice.versions WHERE pipeline = 'acme'");
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT count(*) FROM \"we\"\"ird's\".acct_at($ev) WHERE \"it's new\" IS NOT NULL"),
	'5', 'and its time-travel functions are rebuilt with the new column');

# --- 7. admin functions write the pipeline's tables as its owner ----------
# A superuser releasing a quarantined row or purging history must not run a
# trigger the owner planted with the superuser's rights.
$mart->safe_psql('postgres', q{
SET ROLE alice;
SELECT sluice.expect_column_values_to_be_between('"we""ird''s".acct', 'v', '0', '1000000', severity => 'quarantine');
});
$live->safe_psql('postgres', "INSERT INTO app.acct (id, v, note) VALUES (60, -5, 'negative')");
$mart->safe_psql('postgres', "SELECT sluice.refresh('acme')");
my $qid = $mart->safe_psql('postgres', "SELECT quarantine_id FROM sluice.quarantine WHERE status = 'held' AND row_data->>'id' = '60'");
ok($qid ne '', "the bad row is quarantined ($qid)");
$mart->safe_psql('postgres', q{
SET ROLE etl;
CREATE TRIGGER escalate AFTER INSERT OR UPDATE ON "we""ird's".acct FOR EACH ROW EXECUTE FUNCTION etlfn.escalate();
CREATE TRIGGER escalate AFTER DELETE ON "we""ird's_history".acct FOR EACH ROW EXECUTE FUNCTION etlfn.escalate();
});
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.release_quarantined($qid, '{\"v\": 5}')");
like($err, qr/must be superuser to alter superuser roles/, "a superuser's release_quarantined runs the owner's trigger as the owner");
($rc, $out, $err) = $mart->psql('postgres', "SELECT * FROM sluice.purge_history('acme', keep_last => 1)");
like($err, qr/must be superuser to alter superuser roles/, "a superuser's purge_history runs the owner's trigger as the owner");
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'etl'"), 'f',
	'the owner did not become superuser through release or purge');
$mart->safe_psql('postgres', q{SET ROLE etl; DROP TRIGGER escalate ON "we""ird's".acct; DROP TRIGGER escalate ON "we""ird's_history".acct});
is($mart->safe_psql('postgres', "SELECT sluice.release_quarantined($qid, '{\"v\": 5}')"), 't', 'release works once the trigger is gone');
like($mart->safe_psql('postgres', "SELECT string_agg(rows_purged::text, ',') FROM sluice.purge_history('acme', keep_last => 1)"),
	qr/^\d+(,\d+)*$/, 'and so does purge_history');
# a deferred trigger would fire at commit with the committer's rights: it fires
# at the end of the batch instead, as the owner
$mart->safe_psql('postgres', q{
SET ROLE etl;
CREATE CONSTRAINT TRIGGER escalate_late AFTER INSERT ON "we""ird's".acct
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION etlfn.escalate();
});
$live->safe_psql('postgres', "INSERT INTO app.acct (id, v, note) VALUES (61, 61, 'late')");
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('acme')");
like($err, qr/must be superuser to alter superuser roles/,
	"a deferred trigger of the owner's fires at the end of the batch, as the owner, not at the superuser's commit");
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'etl'"), 'f',
	'the owner did not become superuser through a deferred trigger');
$mart->safe_psql('postgres', q{SET ROLE etl; DROP TRIGGER escalate_late ON "we""ird's".acct});
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('acme')"), 'succeeded', 'the refresh applies once it is gone');

# what tag and keep_history create belongs to the owner
$mart->safe_psql('postgres', "SELECT sluice.tag('acme', 'by_superuser')");
is($mart->safe_psql('postgres', "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'acme_by_superuser'"), 'etl',
	"a superuser's tag creates the owner's schema");

# (not security, but found while packaging: with pg_sluice preloaded, the
# launcher must absorb the barrier DROP DATABASE waits for)
$mart->safe_psql('postgres', 'CREATE DATABASE scratch');
my $timed_out = 0;
($rc, $out, $err) = $mart->psql('postgres', 'DROP DATABASE scratch', timeout => 60, timed_out => \$timed_out);
ok(!$timed_out && $rc == 0, 'DROP DATABASE completes with pg_sluice preloaded') or diag("timed out: $timed_out; $err");

done_testing();
