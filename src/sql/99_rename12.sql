/*
 * src/sql/99_rename12.sql -- a source table renamed on live (ALTER TABLE
 * ... RENAME TO, ... SET SCHEMA) is followed by its oid (src/identity.c)
 *
 * _pipeline_table.prior_source_names, the keys that follow a new source
 * name (ON UPDATE CASCADE), drift action 'renamed', accept_rename and what
 * an operator is granted for it (_rename_operator_grants, called by
 * _operator_grants, re-created here).  After 99_copy.sql: the keys of
 * _copy and _copy_range follow too.
 */
-------------------------------------------------------------------------------
-- A table renamed on live keeps its oid, which pgoutput sends with every
-- RELATION message: the pipeline's table is found by it first.  Under
-- evolve and ignore the new name is recorded at the next look at live;
-- under freeze the pipeline pauses until sluice.accept_rename records it.
-- The names a table had before stay here, so that the backlog's changes
-- sent under them apply.
-------------------------------------------------------------------------------

ALTER TABLE sluice._pipeline_table
  ADD COLUMN prior_source_names text[] NOT NULL DEFAULT '{}',
  ADD COLUMN source_name_seen text;
COMMENT ON COLUMN sluice._pipeline_table.prior_source_names IS
  'Private: the names the table had on the source before it was renamed there, each as schema.table with both quoted as identifiers; changes the backlog still sends under them apply.';
COMMENT ON COLUMN sluice._pipeline_table.source_name_seen IS
  'Private: a name, other than the recorded one, that changes of the table arrived under and that paused the pipeline (policy freeze); sluice.accept_rename accepts it.';

-- the source name is part of the key of the table's contract, expectations,
-- published contracts, HTTP endpoint and chunked copy: a rename follows there
DO $$
DECLARE
  c record;
BEGIN
  FOR c IN SELECT con.conrelid::regclass AS tbl, con.conname, pg_catalog.pg_get_constraintdef(con.oid) AS def
             FROM pg_catalog.pg_constraint con
            WHERE con.contype = 'f' AND con.confupdtype <> 'c'
              AND con.confrelid IN ('sluice._pipeline_table'::regclass, 'sluice._copy'::regclass)
            ORDER BY con.conname LOOP
    EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s ON UPDATE CASCADE',
                              c.tbl, c.conname, c.conname, c.def);
  END LOOP;
END
$$;

ALTER TABLE sluice._drift_event DROP CONSTRAINT _drift_event_action_check,
  ADD CONSTRAINT _drift_event_action_check CHECK (action IN ('paused', 'evolved', 'ignored', 'widened', 'accepted',
                                                             'kept', 'dropped', 'mapped', 'renamed'));

COMMENT ON COLUMN sluice.drift_events.action IS 'paused (nothing applied, pipeline paused), evolved (columns added), widened (datamart column type widened as on the source), accepted (a new source type the datamart column holds), kept (source column dropped, datamart column kept), dropped (column dropped from the contract and the table), mapped (fed by another source column), renamed (the source table was renamed on live: its new name recorded) or ignored (new columns left out).';

CREATE FUNCTION sluice.accept_rename(pipeline text)
RETURNS integer
AS 'MODULE_PATHNAME', 'sluice_accept_rename'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.accept_rename(text) IS
  'After a source table of the pipeline was renamed on live (policy freeze paused it): records the name live gives the table now, keeping the old one for the backlog; returns how many tables it recorded a name for. Then call sluice.resume(pipeline).';

-- operators accept renames of the pipelines they operate: _operator_grants
-- (grant_operator, revoke_operator) gives and takes this too
CREATE FUNCTION sluice._rename_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.accept_rename(text) %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._rename_operator_grants(regrole, text) IS 'Private: what an operator is granted for renamed source tables.';

REVOKE ALL ON FUNCTION sluice.accept_rename(text), sluice._rename_operator_grants(regrole, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sluice._operator_grants(grantee regrole, verb text)
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
