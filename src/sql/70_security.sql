/*
 * src/sql/70_security.sql -- roles, row security and privileges.
 *
 * _operates and alter_pipeline_owner, row security policies on the catalog,
 * _operator_grants, grant_operator, revoke_operator, and the script's GRANTs
 * and REVOKEs (but those standing next to their objects: _source and
 * _destination in 00_catalog.sql, drop_column and accept_type_change in
 * 20_contracts.sql).  Last, so that every object it names exists.
 */

CREATE FUNCTION sluice._operates(owner oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  -- (a role dropped since reads as no one's: pg_has_role would raise)
  SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = owner)
              THEN pg_has_role(owner, 'USAGE') ELSE false END
$$;
COMMENT ON FUNCTION sluice._operates(oid) IS
  'Private: the current role has the privileges of this pipeline owner (row security of the catalog).';

CREATE FUNCTION sluice.alter_pipeline_owner(pipeline text, new_owner regrole)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
    RAISE EXCEPTION 'permission denied to change the owner of pipeline "%"', pipeline
      USING ERRCODE = 'insufficient_privilege', HINT = 'Only a superuser may give a pipeline to another role.';
  END IF;
  UPDATE sluice._pipeline p SET owner = new_owner WHERE p.name = pipeline;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'pipeline "%" does not exist', pipeline USING ERRCODE = 'undefined_object',
      HINT = 'sluice.pipelines lists the existing pipelines.';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.alter_pipeline_owner(text, regrole) IS
  'Gives a pipeline to another role (superusers only): its expectations, triggers and schema changes then run as that role, which must be able to write the pipeline''s tables (ALTER TABLE ... OWNER TO, or REASSIGN OWNED).';

-------------------------------------------------------------------------------
-- Privileges.
--
-- Three kinds of roles (README, "Roles and privileges"):
--   the extension owner (a superuser) declares sources and destinations,
--   the only secrets, kept in tables no one else can read;
--   a pipeline's owner (the role that created it) and every role with its
--   privileges (GRANT owner TO operator) operate it: refresh, start, stop,
--   resume, expectations, quarantine, drift policy, history and tags.
--   sluice.grant_operator(role) gives a role the EXECUTE and catalog rights
--   for that; row security keeps each role to its own pipelines' rows, and
--   column privileges keep it from rewriting what names slots, origins and
--   tables.
--   readers: the public views, and every read function (<t>_at, <t>_at_time,
--   tag views, sluice.diff) on the tables they can SELECT.
-------------------------------------------------------------------------------

ALTER TABLE sluice._pipeline ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._pipeline USING (sluice._operates(owner::oid));
ALTER TABLE sluice._pipeline_table ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._pipeline_table
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));
ALTER TABLE sluice._contract_column ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._contract_column
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));
ALTER TABLE sluice._drift_event ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._drift_event
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));
ALTER TABLE sluice._expectation ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._expectation
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));
ALTER TABLE sluice._quarantine ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._quarantine
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));
ALTER TABLE sluice._run ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._run
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));
ALTER TABLE sluice._expectation_result ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._expectation_result
  USING (run_id IN (SELECT r.run_id FROM sluice._run r));
ALTER TABLE sluice._run_table ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._run_table
  USING (run_id IN (SELECT r.run_id FROM sluice._run r));
ALTER TABLE sluice._tag ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._tag
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE FUNCTION sluice._operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
  stmt text;
BEGIN
  FOREACH stmt IN ARRAY ARRAY[
    'EXECUTE ON FUNCTION sluice.refresh(text), sluice.start(text), sluice.stop(text), sluice.resume(text, xid),
       sluice.add_expectation(regclass, text, name[], jsonb, text, text), sluice.drop_expectation(regclass, text),
       sluice.expect_column_values_to_not_be_null(regclass, name, text),
       sluice.expect_column_values_to_be_null(regclass, name, text),
       sluice.expect_column_values_to_not_be_in_set(regclass, name, text[], text),
       sluice.expect_column_values_to_not_match_regex(regclass, name, text, text),
       sluice.expect_column_values_to_match_like_pattern(regclass, name, text, text),
       sluice.expect_column_value_lengths_to_equal(regclass, name, integer, text),
       sluice.expect_column_values_to_be_unique(regclass, name[], text),
       sluice.expect_column_values_to_be_in_set(regclass, name, text[], text),
       sluice.expect_column_values_to_be_between(regclass, name, anycompatible, anycompatible, boolean, boolean, text),
       sluice.expect_column_values_to_match_regex(regclass, name, text, text),
       sluice.expect_column_value_lengths_to_be_between(regclass, name, integer, integer, text),
       sluice.expect_table_row_count_to_be_between(regclass, bigint, bigint, text),
       sluice.expect_column_values_to_be_in_table(regclass, name, regclass, name, text),
       sluice.expect_column_max_to_be_fresh(regclass, name, interval, text),
       sluice.expect_row_to_satisfy(regclass, text, text),
       sluice.release_quarantined(bigint, jsonb, boolean), sluice.discard_quarantined(bigint),
       sluice._release_version(integer, name, name, boolean), sluice.alter_pipeline(text, boolean), sluice._compile_predicate(regclass, text), sluice._compile_check(regclass, text),
       sluice._exec_as_owner(integer, text, jsonb), sluice._contract_table(regclass, boolean), sluice.set_drift_policy(regclass, text),
       sluice.map_column(regclass, name, text), sluice.keep_history(text), sluice.tag(text, text, bigint),
       sluice.untag(text, text), sluice.purge_history(text, integer, interval), sluice.purge_runs(interval),
       sluice.drop_column(regclass, name, boolean), sluice.accept_type_change(regclass, name, text, text),
       sluice._contract_changed(regclass, text, text), sluice._alter_target(regclass, text),
       sluice._contract_column_of(regclass, name, text), sluice._type_name(text), sluice._one_expression(text),
       sluice._contract_json(integer, text, text, integer)',
    -- pg_sluice's own bookkeeping (runs, results, quarantine, drift events,
    -- worker state) is written by its C code as the extension owner; an
    -- operator writes only what its SQL functions change, row security
    -- keeping it to its own pipelines
    'SELECT ON sluice._pipeline, sluice._pipeline_table, sluice._contract_column, sluice._drift_event,
       sluice._expectation, sluice._quarantine, sluice._run, sluice._expectation_result, sluice._run_table,
       sluice._tag, sluice.quarantine',
    'UPDATE (paused_reason, paused_at, skip_xid, keep_history, history_from, strict) ON sluice._pipeline',
    'UPDATE (drift_policy, contract_version, ignored_columns) ON sluice._pipeline_table',
    'INSERT ON sluice._contract_column, sluice._tag, sluice._drift_event',
    'INSERT (pipeline_id, source_schema, source_table, name, kind, column_names, args, severity,
             predicate, check_sql, predicate_tree, check_tree) ON sluice._expectation',
    'UPDATE (history_purged) ON sluice._run',
    'UPDATE (status, resolved_at, row_data) ON sluice._quarantine',
    'DELETE ON sluice._expectation, sluice._run, sluice._tag',
    'EXECUTE ON FUNCTION sluice._announce_failure(text, jsonb)'] LOOP
    EXECUTE format('%s %s %s %s', verb, stmt, to_from, grantee);
  END LOOP;
  PERFORM sluice._interface_grants(grantee, verb);
  PERFORM sluice._verify_operator_grants(grantee, verb);
  PERFORM sluice._model_operator_grants(grantee, verb);
  PERFORM sluice._snapshot_operator_grants(grantee, verb);
  PERFORM sluice._spool_operator_grants(grantee, verb);
  PERFORM sluice._rename_operator_grants(grantee, verb);
END
$$;
COMMENT ON FUNCTION sluice._operator_grants(regrole, text) IS 'Private: what an operator is granted.';

CREATE FUNCTION sluice.grant_operator(role regrole)
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT sluice._operator_grants(role, 'GRANT');
END;
COMMENT ON FUNCTION sluice.grant_operator(regrole) IS
  'Lets a role own and operate pipelines: refresh, start, stop, resume, expectations, quarantine, drift policy, history and tags, on the pipelines whose owner''s privileges it has. It never reads a source''s or destination''s secret.';

CREATE FUNCTION sluice.revoke_operator(role regrole)
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT sluice._operator_grants(role, 'REVOKE');
END;
COMMENT ON FUNCTION sluice.revoke_operator(regrole) IS 'Takes back what sluice.grant_operator gave.';

REVOKE ALL ON FUNCTION sluice.create_source(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.alter_source(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.drop_source(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.refresh(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.drop_pipeline(text, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.start(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.stop(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.purge_runs(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.resume(text, xid) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.alter_pipeline(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.create_webhook(text, text, text[], jsonb, text, text),
    sluice.create_lineage_endpoint(text, text, text, text), sluice.drop_destination(text),
    sluice._emit(text, text, jsonb), sluice._notifier_wanted(), sluice._emit_run(bigint, bigint),
    sluice._conninfo_part(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.keep_history(text), sluice.tag(text, text, bigint), sluice.untag(text, text),
    sluice.purge_history(text, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice._contract_table(regclass, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.set_drift_policy(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.map_column(regclass, name, text) FROM PUBLIC;
REVOKE ALL ON sluice._pipeline, sluice._pipeline_table, sluice._run, sluice._contract_column,
    sluice._drift_event, sluice._expectation, sluice._quarantine, sluice._expectation_result, sluice._tag, sluice._run_table, sluice._outbox, sluice._delivery FROM PUBLIC;
REVOKE ALL ON sluice.destinations, sluice.events FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.add_expectation(regclass, text, name[], jsonb, text, text),
    sluice.drop_expectation(regclass, text),
    sluice.expect_column_values_to_not_be_null(regclass, name, text),
    sluice.expect_column_values_to_be_null(regclass, name, text),
    sluice.expect_column_values_to_not_be_in_set(regclass, name, text[], text),
    sluice.expect_column_values_to_not_match_regex(regclass, name, text, text),
    sluice.expect_column_values_to_match_like_pattern(regclass, name, text, text),
    sluice.expect_column_value_lengths_to_equal(regclass, name, integer, text),
    sluice.expect_column_values_to_be_unique(regclass, name[], text),
    sluice.expect_column_values_to_be_in_set(regclass, name, text[], text),
    sluice.expect_column_values_to_be_between(regclass, name, anycompatible, anycompatible, boolean, boolean, text),
    sluice.expect_column_values_to_match_regex(regclass, name, text, text),
    sluice.expect_column_value_lengths_to_be_between(regclass, name, integer, integer, text),
    sluice.expect_table_row_count_to_be_between(regclass, bigint, bigint, text),
    sluice.expect_column_values_to_be_in_table(regclass, name, regclass, name, text),
    sluice.expect_column_max_to_be_fresh(regclass, name, interval, text),
    sluice.expect_row_to_satisfy(regclass, text, text),
    sluice.release_quarantined(bigint, jsonb, boolean), sluice.discard_quarantined(bigint),
    sluice._release_version(integer, name, name, boolean), sluice._compile_predicate(regclass, text), sluice._compile_check(regclass, text),
    sluice._exec_as_owner(integer, text, jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA sluice TO PUBLIC;
GRANT SELECT ON sluice.pipelines, sluice.pipeline_tables, sluice.runs, sluice.status,
    sluice.contracts, sluice.drift_events, sluice.expectations, sluice.quality, sluice.versions, sluice.tags TO PUBLIC;
REVOKE ALL ON sluice.quarantine FROM PUBLIC;
REVOKE ALL ON sluice.sources FROM PUBLIC;
-- metrics: for monitoring agents (prometheus-postgres-exporter) in pg_monitor
REVOKE ALL ON sluice.metrics FROM PUBLIC;
GRANT SELECT ON sluice.metrics TO pg_monitor;
REVOKE ALL ON FUNCTION sluice._operator_grants(regrole, text), sluice.grant_operator(regrole),
    sluice.revoke_operator(regrole), sluice.alter_pipeline_owner(text, regrole),
    sluice._announce_failure(text, jsonb) FROM PUBLIC;
-- what BI readers call, through <t>_at, <t>_at_time, tag views and diff:
-- they reveal versions, never rows (those are read with the reader's rights)
REVOKE ALL ON FUNCTION sluice._version_ok(integer, bigint), sluice._version_check(integer, bigint),
    sluice._version_at(integer, timestamptz), sluice._history_of(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sluice._version_ok(integer, bigint), sluice._version_check(integer, bigint),
    sluice._version_at(integer, timestamptz), sluice._history_of(regclass) TO PUBLIC;
