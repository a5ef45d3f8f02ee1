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
-- (70_security.sql: grant_operator, revoke_operator) gives and takes this too
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
