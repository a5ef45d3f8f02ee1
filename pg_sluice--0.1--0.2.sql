/* pg_sluice--0.1--0.2.sql -- ALTER EXTENSION pg_sluice UPDATE from 0.1 to 0.2
 *
 * Takes a 0.1 datamart (the script of 0.1 as released: pg_sluice--0.1.sql)
 * to the catalog a fresh CREATE EXTENSION of 0.2 makes, data included.
 * test/t/060_upgrade.pl runs it on a datamart built by the 0.1 library and
 * compares the result, object by object, with a fresh 0.2 install.
 *
 *   1. views are dropped (they are recreated as 0.2 defines them; their
 *      privileges are those of a fresh install), with the functions 0.2
 *      drops or whose signature or result type changes;
 *   2. catalog tables: new columns in 0.2's column order, new and widened
 *      checks, the quarantine ledger's index, comments;
 *   3. functions: new ones created, changed ones replaced (same OID, so
 *      grants made to roles since stay), views recreated;
 *   4. row security, its policies, and the privileges of 0.2;
 *   5. data: expectations' bound trees, quarantine keys (pipeline owners
 *      are set in step 2).
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_sluice UPDATE TO '0.2'" to load this file. \quit

-------------------------------------------------------------------------------
-- 1. What is recreated or goes
-------------------------------------------------------------------------------

DROP VIEW sluice.status, sluice.events, sluice.destinations, sluice.tags, sluice.versions,
    sluice.quarantine, sluice.quality, sluice.expectations, sluice.drift_events, sluice.contracts,
    sluice.runs, sluice.pipeline_tables, sluice.pipelines, sluice.sources;

-- replaced by sluice._history_of and the time-travel functions
DROP FUNCTION sluice._as_of_sql(regclass, bigint);
-- now returns the bound tree (pg_node_tree) instead of void
DROP FUNCTION sluice._compile_predicate(regclass, text);
-- gains force (for superseded entries of the quarantine ledger)
DROP FUNCTION sluice.release_quarantined(bigint, jsonb);
-- returns the source type names and the action that changed each column
DROP FUNCTION sluice.contract_diff(regclass, integer, integer);

-------------------------------------------------------------------------------
-- 2. Catalog tables
-------------------------------------------------------------------------------

-- _pipeline: owner (between history_from and created_at), then strict,
-- rows_missing, last_missing_at at the end.  created_at and created_by are
-- moved after owner (added anew, values copied) so that the columns come
-- in the order of a fresh 0.2 install.
--
-- The owner of a 0.1 pipeline is the role that created it (created_by) if
-- that role still exists, else the extension's owner.
ALTER TABLE sluice._pipeline ADD COLUMN owner regrole;
UPDATE sluice._pipeline p
   SET owner = coalesce((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) p.created_by),
                        (SELECT e.extowner FROM pg_catalog.pg_extension e
                          WHERE e.extname OPERATOR(pg_catalog.=) 'pg_sluice'))::pg_catalog.regrole;
ALTER TABLE sluice._pipeline ALTER COLUMN owner SET DEFAULT CURRENT_USER::text::regrole,
    ALTER COLUMN owner SET NOT NULL;
ALTER TABLE sluice._pipeline RENAME COLUMN created_at TO created_at_0_1;
ALTER TABLE sluice._pipeline RENAME COLUMN created_by TO created_by_0_1;
ALTER TABLE sluice._pipeline
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    ADD COLUMN created_by name NOT NULL DEFAULT CURRENT_USER;
UPDATE sluice._pipeline SET created_at = created_at_0_1, created_by = created_by_0_1;
ALTER TABLE sluice._pipeline DROP COLUMN created_at_0_1, DROP COLUMN created_by_0_1;
ALTER TABLE sluice._pipeline
    ADD COLUMN strict boolean NOT NULL DEFAULT false,
    ADD COLUMN rows_missing bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_missing_at timestamptz;

-- _contract_column: what drift_column, accept_type_change and map_column
-- record (a 0.1 contract has none of it: the defaults are right)
ALTER TABLE sluice._contract_column
    ADD COLUMN source_dropped boolean NOT NULL DEFAULT false,
    ADD COLUMN prior_types oid[] NOT NULL DEFAULT '{}',
    ADD COLUMN prior_sources text[] NOT NULL DEFAULT '{}';

-- _drift_event: the actions of the drift ways forward
ALTER TABLE sluice._drift_event DROP CONSTRAINT _drift_event_action_check,
    ADD CONSTRAINT _drift_event_action_check
        CHECK (action IN ('paused', 'evolved', 'ignored', 'widened', 'accepted', 'kept', 'dropped', 'mapped'));

-- _expectation: the bound trees (filled in step 4), before created_at
ALTER TABLE sluice._expectation RENAME COLUMN created_at TO created_at_0_1;
ALTER TABLE sluice._expectation
    ADD COLUMN predicate_tree pg_node_tree,
    ADD COLUMN check_tree pg_node_tree,
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT pg_catalog.now();
UPDATE sluice._expectation SET created_at = created_at_0_1;
ALTER TABLE sluice._expectation DROP COLUMN created_at_0_1;

-- _quarantine: the ledger (row_key filled in step 4)
ALTER TABLE sluice._quarantine DROP CONSTRAINT _quarantine_status_check,
    ADD CONSTRAINT _quarantine_status_check
        CHECK (status IN ('held', 'released', 'discarded', 'superseded'));
ALTER TABLE sluice._quarantine
    ADD COLUMN row_key jsonb,
    ADD COLUMN superseded_by bigint REFERENCES sluice._quarantine ON DELETE SET NULL,
    ADD COLUMN superseded_how text CHECK (superseded_how IN ('applied', 'quarantined', 'deleted', 'truncated')),
    ADD COLUMN superseded_xid xid,
    ADD COLUMN superseded_lsn pg_lsn;
-- the open entries of a table: the latest state of keys the datamart lacks on purpose
CREATE INDEX ON sluice._quarantine (pipeline_id, target_schema, target_table)
 WHERE status IN ('held', 'discarded') AND superseded_how IS NULL;

-- _run, _run_table: divergence counts
ALTER TABLE sluice._run ADD COLUMN rows_missing bigint NOT NULL DEFAULT 0;
ALTER TABLE sluice._run_table
    ADD COLUMN rows_missing bigint NOT NULL DEFAULT 0,
    ADD COLUMN missing_keys jsonb;

COMMENT ON COLUMN sluice._pipeline.strict IS
  'An update or delete that finds no row in the datamart pauses the pipeline (true) or is skipped and counted (false); sluice.alter_pipeline sets it.';
COMMENT ON COLUMN sluice._pipeline.rows_missing IS
  'Updates and deletes the pipeline skipped since its creation because the datamart had no row for them (divergence).';
COMMENT ON COLUMN sluice._pipeline.last_missing_at IS
  'When the last such update or delete was skipped.';
COMMENT ON TABLE sluice._expectation IS
  'Private: data-quality expectations per datamart table. predicate_tree: row expectations, bound when declared (a boolean expression over the row, every name resolved to an OID); check_tree: set expectations, bound when declared (a query run once per batch). predicate and check_sql keep the text they were bound from, for reading only: it is never executed.';
COMMENT ON TABLE sluice._quarantine IS
  'Private: rows held back by quarantine expectations, with the reason; release or discard them. A ledger of each key''s latest state: a later change of the key on the source supersedes the entry.';
COMMENT ON COLUMN sluice._quarantine.row_key IS
  'Key of the row (its key columns, or every column for a table without a key) as a JSON object of text values.';
COMMENT ON COLUMN sluice._quarantine.superseded_by IS
  'The entry that replaced this one when the later change of the key was quarantined too.';
COMMENT ON COLUMN sluice._quarantine.superseded_how IS
  'How a later change of the key on the source replaced this entry: applied (written to the datamart), quarantined (held again, see superseded_by), deleted, truncated. NULL while the entry is the key''s latest state.';
COMMENT ON COLUMN sluice._quarantine.superseded_xid IS 'Source transaction of that later change.';
COMMENT ON COLUMN sluice._quarantine.superseded_lsn IS 'Commit LSN of that source transaction.';
COMMENT ON COLUMN sluice._run.rows_missing IS
  'Updates and deletes of the run that found no row in the datamart and were skipped (divergence).';
COMMENT ON COLUMN sluice._run_table.rows_missing IS
  'Updates and deletes of the table that found no row in the datamart and were skipped.';
COMMENT ON COLUMN sluice._run_table.missing_keys IS
  'Up to 5 of them: {"change": "update" or "delete", "key": {...}, "source_xid": ...}.';

-------------------------------------------------------------------------------
-- 3. Functions (new, or replaced where they changed) and views, in the order of
--    pg_sluice--0.2.sql
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sluice.create_source(name text, conninfo text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_create_source'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION sluice.alter_source(name text, conninfo text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_alter_source'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION sluice.drop_source(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_drop_source'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION sluice.create_pipeline(
    name          text,
    source        text,
    tables        text[],
    target_schema name DEFAULT NULL,
    publication   text DEFAULT NULL,
    slot_name     text DEFAULT NULL,
    adopt_tables  boolean DEFAULT false)
RETURNS sluice.refresh_result
AS 'MODULE_PATHNAME', 'sluice_create_pipeline'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION sluice.refresh(pipeline text)
RETURNS sluice.refresh_result
AS 'MODULE_PATHNAME', 'sluice_refresh'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION sluice.start(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_start'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION sluice.stop(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_stop'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION sluice.alter_pipeline(pipeline text, strict boolean DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- waits for a refresh or worker batch of the pipeline: the next one sees the change
  was boolean := (sluice._pipeline_row(pipeline)).strict;
BEGIN
  UPDATE sluice._pipeline p SET strict = coalesce(alter_pipeline.strict, p.strict) WHERE p.name = pipeline;
  RETURN coalesce(alter_pipeline.strict, was);
END
$$;

COMMENT ON FUNCTION sluice.alter_pipeline(text, boolean) IS
  'Changes a pipeline''s settings (NULL: unchanged) and returns strict as it now is. strict: an update or delete that finds no row in the datamart pauses the pipeline instead of being skipped and counted.';

CREATE OR REPLACE FUNCTION sluice.drop_pipeline(
    pipeline    text,
    drop_tables boolean DEFAULT false,
    force       boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_drop_pipeline'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION sluice._contract_json(pipeline_id integer, source_schema text, source_table text,
    contract_version integer)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', cc.source_column, 'column', cc.column_name,
           'type', cc.source_type,
           'type_name', CASE WHEN cc.source_type >= 16384 THEN cc.data_type
                             WHEN starts_with(cc.data_type, format_type(cc.source_type, NULL)) THEN cc.data_type
                             ELSE format_type(cc.source_type, NULL) END,
           'data_type', cc.data_type, 'source_dropped', cc.source_dropped) ORDER BY cc.position), '[]')
    FROM sluice._contract_column cc
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (_contract_json.pipeline_id, _contract_json.source_schema, _contract_json.source_table,
            _contract_json.contract_version);
END;

COMMENT ON FUNCTION sluice._contract_json(integer, text, text, integer) IS
  'Private: a contract version''s columns as drift events show them.';

CREATE FUNCTION sluice._contract_changed(target regclass, action text, detail text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
BEGIN
  -- called after a function recorded contract version n + 1 of target
  t := sluice._contract_table(target);
  UPDATE sluice._pipeline_table pt SET contract_version = t.contract_version + 1
   WHERE (pt.pipeline_id, pt.source_schema, pt.source_table) = (t.pipeline_id, t.source_schema, t.source_table);
  INSERT INTO sluice._drift_event (pipeline_id, source_schema, source_table, policy, action, detail,
         contract_version, contract_columns, source_columns)
  SELECT t.pipeline_id, t.source_schema, t.source_table, pt.drift_policy, action, detail,
         t.contract_version + 1,
         sluice._contract_json(t.pipeline_id, t.source_schema, t.source_table, t.contract_version),
         sluice._contract_json(t.pipeline_id, t.source_schema, t.source_table, t.contract_version + 1)
    FROM sluice._pipeline_table pt
   WHERE (pt.pipeline_id, pt.source_schema, pt.source_table) = (t.pipeline_id, t.source_schema, t.source_table);
  PERFORM sluice._contract_settled(target);
  RETURN t.contract_version + 1;
END
$$;

COMMENT ON FUNCTION sluice._contract_changed(regclass, text, text) IS
  'Private: makes the contract version a function just wrote current and records the drift event.';

CREATE FUNCTION sluice._alter_target(target regclass, clause text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  nsp name;
  rel name;
  hist regclass;
  t record;
BEGIN
  -- clause is built by the callers from quoted identifiers and a canonical type name;
  -- run as the pipeline's owner (a USING expression, a rewrite) like every change pg_sluice makes
  t := sluice._contract_table(target);
  SELECT n.nspname, c.relname INTO nsp, rel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = target;
  PERFORM sluice._interfaces_detach(target);
  PERFORM sluice._exec_as_owner(t.pipeline_id, format('ALTER TABLE %I.%I ', nsp, rel) || clause, NULL);
  hist := to_regclass(format('%I.%I', nsp || '_history', rel));
  IF hist IS NOT NULL THEN
    PERFORM sluice._exec_as_owner(t.pipeline_id, format('ALTER TABLE %I.%I ', nsp || '_history', rel) || clause, NULL);
    PERFORM sluice._make_at_functions(target);
  END IF;
END
$$;

COMMENT ON FUNCTION sluice._alter_target(regclass, text) IS
  'Private: alters a datamart table and its history table alike, then rebuilds its time-travel functions.';

CREATE FUNCTION sluice._type_name(type text)
RETURNS text
LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'sluice__type_name';

COMMENT ON FUNCTION sluice._type_name(text) IS 'Private: the canonical name of a type (with its modifier).';

CREATE FUNCTION sluice._one_expression(expression text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'sluice__one_expression';

COMMENT ON FUNCTION sluice._one_expression(text) IS 'Private: checks that a text is one scalar expression.';

CREATE FUNCTION sluice._contract_column_of(target regclass, column_name name, caller text,
    OUT pipeline_id integer, OUT source_schema text, OUT source_table text, OUT contract_version integer,
    OUT source_column text, OUT is_key boolean, OUT source_type oid)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
BEGIN
  IF target IS NULL OR column_name IS NULL THEN
    RAISE EXCEPTION '% needs a table and a column, not NULL', caller USING ERRCODE = 'null_value_not_allowed',
      HINT = 'sluice.contracts lists the tables and columns pg_sluice feeds.';
  END IF;
  t := sluice._contract_table(target, true);
  SELECT t.pipeline_id, t.source_schema, t.source_table, t.contract_version, cc.source_column, cc.is_key, cc.source_type
    INTO pipeline_id, source_schema, source_table, contract_version, source_column, is_key, source_type
    FROM sluice._contract_column cc
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version)
     AND cc.column_name = _contract_column_of.column_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" is not in the contract of %', column_name, target
      USING ERRCODE = 'undefined_column', HINT = 'sluice.contracts lists the contract''s columns.';
  END IF;
END
$$;

COMMENT ON FUNCTION sluice._contract_column_of(regclass, name, text) IS
  'Private: the current contract column a function changes, locked against refreshes; errors for unknown ones.';

CREATE OR REPLACE FUNCTION sluice.map_column(target regclass, column_name name, source_column text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c record;
  other name;
BEGIN
  c := sluice._contract_column_of(target, column_name, 'sluice.map_column');
  IF source_column IS NULL OR source_column = '' THEN
    RAISE EXCEPTION 'source column must be named'
      USING ERRCODE = CASE WHEN source_column IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
      DETAIL = format('sluice.map_column(%L, %L, %L) names no source column to feed "%s".',
                      target, column_name, source_column, column_name),
      HINT = format('If the source column was dropped, call sluice.drop_column(%L, %L) to keep "%s" (NULL from now on), or sluice.drop_column(%L, %L, keep => false) to drop it.',
                    target, column_name, column_name, target, column_name);
  END IF;
  SELECT cc.column_name INTO other FROM sluice._contract_column cc
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (c.pipeline_id, c.source_schema, c.source_table, c.contract_version)
     AND cc.source_column = map_column.source_column AND cc.column_name <> map_column.column_name;
  IF FOUND THEN
    RAISE EXCEPTION 'source column "%" already feeds column "%" of %', source_column, other, target
      USING ERRCODE = 'duplicate_column';
  END IF;
  INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, contract_version, position,
         column_name, source_column, data_type, not_null, is_key, source_type, source_dropped, prior_types,
         prior_sources)
  SELECT cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version + 1, cc.position,
         cc.column_name,
         CASE WHEN cc.column_name = map_column.column_name THEN map_column.source_column ELSE cc.source_column END,
         cc.data_type, cc.not_null, cc.is_key, cc.source_type,
         cc.source_dropped AND cc.column_name <> map_column.column_name, cc.prior_types,
         -- rows of the backlog sent before the rename still carry the old name
         CASE WHEN cc.column_name = map_column.column_name AND cc.source_column IS NOT NULL
                   AND cc.source_column <> map_column.source_column
              THEN array_remove(cc.prior_sources, map_column.source_column) || cc.source_column
              ELSE cc.prior_sources END
    FROM sluice._contract_column cc
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (c.pipeline_id, c.source_schema, c.source_table, c.contract_version);
  RETURN sluice._contract_changed(target, 'mapped',
    format('column "%s" fed by source column "%s" (was "%s")', column_name, source_column, c.source_column));
END
$$;

CREATE FUNCTION sluice.drop_column(target regclass, column_name name, keep boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c record;
BEGIN
  c := sluice._contract_column_of(target, column_name, 'sluice.drop_column');
  IF keep IS NULL THEN
    RAISE EXCEPTION 'keep must be true or false' USING ERRCODE = 'null_value_not_allowed',
      HINT = 'keep => true keeps the datamart column (NULL or its default from now on); keep => false drops it.';
  END IF;
  IF c.is_key THEN
    RAISE EXCEPTION 'column "%" of % is part of the key', column_name, target
      USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = 'Rows are matched on the key, so it must keep being fed.',
      HINT = 'Restore the column on the source, or drop and re-create the pipeline.';
  END IF;
  IF keep THEN
    -- fed nothing once the source stops sending it: a NOT NULL without a default must go
    IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = target AND a.attname = column_name
                  AND a.attnotnull AND NOT a.atthasdef) THEN
      PERFORM sluice._alter_target(target, format('ALTER COLUMN %I DROP NOT NULL', column_name));
    END IF;
  ELSE
    PERFORM sluice._refuse_model_readers(target, column_name, 'drop');
    PERFORM sluice._alter_target(target, format('DROP COLUMN %I', column_name));
    -- rows of the backlog sent before the drop still carry it: leave it out
    UPDATE sluice._pipeline_table pt SET ignored_columns = pt.ignored_columns || c.source_column
     WHERE (pt.pipeline_id, pt.source_schema, pt.source_table) = (c.pipeline_id, c.source_schema, c.source_table)
       AND c.source_column IS NOT NULL AND NOT c.source_column = ANY (pt.ignored_columns);
  END IF;
  INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, contract_version, position,
         column_name, source_column, data_type, not_null, is_key, source_type, source_dropped, prior_types,
         prior_sources)
  SELECT cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version + 1, cc.position,
         cc.column_name, cc.source_column, cc.data_type,
         cc.not_null AND (cc.column_name <> drop_column.column_name OR a.atthasdef), cc.is_key, cc.source_type,
         cc.source_dropped OR cc.column_name = drop_column.column_name, cc.prior_types, cc.prior_sources
    FROM sluice._contract_column cc
    LEFT JOIN pg_attribute a ON a.attrelid = target AND a.attname = cc.column_name
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (c.pipeline_id, c.source_schema, c.source_table, c.contract_version)
     AND (keep OR cc.column_name <> drop_column.column_name);
  RETURN sluice._contract_changed(target, CASE WHEN keep THEN 'kept' ELSE 'dropped' END,
    CASE WHEN keep THEN format('column "%s" kept, fed nothing once the source stops sending "%s"', column_name, c.source_column)
         ELSE format('column "%s" dropped from the contract and the datamart table', column_name) END);
END
$$;

COMMENT ON FUNCTION sluice.drop_column(regclass, name, boolean) IS
  'After a column was dropped on the source: keep => true keeps the datamart column (NULL or its default in new rows, fed while the backlog still sends it), keep => false drops it from the contract and the table; records and returns a new contract version.';

CREATE FUNCTION sluice.accept_type_change(target regclass, column_name name, new_type text,
    using_expression text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c record;
  typ text;
  src oid;
  clause text;
BEGIN
  c := sluice._contract_column_of(target, column_name, 'sluice.accept_type_change');
  PERFORM sluice._refuse_model_readers(target, column_name, 'alter the type of');
  IF new_type IS NULL OR new_type = '' THEN
    RAISE EXCEPTION 'new_type must name a type' USING ERRCODE = CASE WHEN new_type IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
      HINT = 'Name the type the source now sends, as the pause''s detail says, such as ''bigint'' or ''varchar(20)''.';
  END IF;
  typ := sluice._type_name(new_type);
  clause := format('ALTER COLUMN %I TYPE ', column_name) || typ;
  IF using_expression IS NOT NULL THEN
    clause := clause || ' USING (' || sluice._one_expression(using_expression) || ')';
  END IF;
  PERFORM sluice._alter_target(target, clause);
  -- the type as the source sends it: its OID in the pause's drift event (types not built in differ)
  SELECT (e->>'type')::oid INTO src
    FROM sluice._drift_event d, jsonb_array_elements(d.source_columns) e
   WHERE (d.pipeline_id, d.source_schema, d.source_table) = (c.pipeline_id, c.source_schema, c.source_table)
     AND d.action = 'paused' AND e->>'name' = c.source_column
   ORDER BY d.event_id DESC LIMIT 1;
  IF src IS NULL OR (src < 16384 AND src <> typ::regtype::oid) THEN
    src := typ::regtype::oid;
  END IF;
  INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, contract_version, position,
         column_name, source_column, data_type, not_null, is_key, source_type, source_dropped, prior_types,
         prior_sources)
  SELECT cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version + 1, cc.position,
         cc.column_name, cc.source_column,
         CASE WHEN cc.column_name = accept_type_change.column_name THEN format_type(a.atttypid, a.atttypmod)
              ELSE cc.data_type END,
         cc.not_null, cc.is_key,
         CASE WHEN cc.column_name = accept_type_change.column_name THEN src ELSE cc.source_type END,
         cc.source_dropped,
         CASE WHEN cc.column_name = accept_type_change.column_name AND cc.source_type <> src
              THEN cc.prior_types || cc.source_type ELSE cc.prior_types END,
         cc.prior_sources
    FROM sluice._contract_column cc
    LEFT JOIN pg_attribute a ON a.attrelid = target AND a.attname = cc.column_name
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (c.pipeline_id, c.source_schema, c.source_table, c.contract_version);
  RETURN sluice._contract_changed(target, 'accepted',
    format('column "%s" altered to %s%s', column_name, typ,
           CASE WHEN using_expression IS NOT NULL THEN ' using ' || using_expression ELSE '' END));
END
$$;

COMMENT ON FUNCTION sluice.accept_type_change(regclass, name, text, text) IS
  'After a type change on the source: alters the datamart column (and its history table''s) to new_type, with using_expression as the cast when given; rows of the backlog of the old type are still read; records and returns a new contract version.';

CREATE FUNCTION sluice.contract_diff(target regclass, from_version integer, to_version integer,
    OUT change text, OUT column_name name, OUT before jsonb, OUT after jsonb, OUT action text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
BEGIN
  PERFORM sluice._require_arguments('sluice.contract_diff', ARRAY['target', 'from_version', 'to_version'], ARRAY[target IS NULL, from_version IS NULL, to_version IS NULL], 'Name a datamart table pg_sluice feeds (sluice.contracts) and two of its contract versions (sluice.drift_events lists them).');
  t := sluice._contract_table(target);
  IF from_version < 1 OR to_version > t.contract_version OR from_version > to_version THEN
    RAISE EXCEPTION 'no contract versions % to % for %', from_version, to_version, target
      USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('Versions 1 to %s exist.', t.contract_version);
  END IF;
  RETURN QUERY
  WITH v AS (SELECT cc.*, CASE WHEN cc.source_type >= 16384 THEN cc.data_type
                               WHEN starts_with(cc.data_type, format_type(cc.source_type, NULL)) THEN cc.data_type
                               ELSE format_type(cc.source_type, NULL) END AS source_type_name
               FROM sluice._contract_column cc
              WHERE (cc.pipeline_id, cc.source_schema, cc.source_table) = (t.pipeline_id, t.source_schema, t.source_table)),
       a AS (SELECT * FROM v WHERE v.contract_version = from_version),
       b AS (SELECT * FROM v WHERE v.contract_version = to_version)
  SELECT CASE WHEN a.column_name IS NULL THEN 'added'
              WHEN b.column_name IS NULL THEN 'removed'
              ELSE 'changed' END,
         coalesce(a.column_name, b.column_name),
         CASE WHEN a.column_name IS NOT NULL THEN jsonb_build_object('source_column', a.source_column,
              'data_type', a.data_type, 'source_type', a.source_type_name, 'not_null', a.not_null,
              'is_key', a.is_key, 'source_dropped', a.source_dropped) END,
         CASE WHEN b.column_name IS NOT NULL THEN jsonb_build_object('source_column', b.source_column,
              'data_type', b.data_type, 'source_type', b.source_type_name, 'not_null', b.not_null,
              'is_key', b.is_key, 'source_dropped', b.source_dropped) END,
         -- what changed it: the events of the versions in between where this column changed
         (SELECT string_agg(DISTINCT d.action, ', ')
            FROM sluice._drift_event d
           WHERE (d.pipeline_id, d.source_schema, d.source_table) = (t.pipeline_id, t.source_schema, t.source_table)
             AND d.action NOT IN ('paused', 'ignored')
             AND d.contract_version > from_version AND d.contract_version <= to_version
             AND (SELECT row(x.source_column, x.data_type, x.source_type, x.not_null, x.is_key, x.source_dropped)
                    FROM v x WHERE x.contract_version = d.contract_version
                     AND x.column_name = coalesce(a.column_name, b.column_name))
                 IS DISTINCT FROM
                 (SELECT row(x.source_column, x.data_type, x.source_type, x.not_null, x.is_key, x.source_dropped)
                    FROM v x WHERE x.contract_version = d.contract_version - 1
                     AND x.column_name = coalesce(a.column_name, b.column_name)))
    FROM a FULL JOIN b ON a.column_name = b.column_name
   WHERE a.column_name IS NULL OR b.column_name IS NULL
      OR (a.source_column, a.data_type, a.source_type, a.not_null, a.is_key, a.source_dropped) IS DISTINCT FROM
         (b.source_column, b.data_type, b.source_type, b.not_null, b.is_key, b.source_dropped)
   ORDER BY coalesce(b.position, a.position);
END
$$;

COMMENT ON FUNCTION sluice.contract_diff(regclass, integer, integer) IS
  'Columns added, removed or changed between two versions of a table''s contract: source column, datamart and source type names, before and after, and the action that changed each (evolved, widened, accepted, kept, dropped, mapped).';

CREATE VIEW sluice.sources AS
SELECT s.name,
       sluice._mask_conninfo(s.conninfo) AS conninfo,
       s.created_at,
       s.created_by
  FROM sluice._source s;

COMMENT ON VIEW sluice.sources IS 'Live servers pg_sluice reads from (passwords masked).';

COMMENT ON COLUMN sluice.sources.name IS 'Source name.';

COMMENT ON COLUMN sluice.sources.conninfo IS 'Connection string, password replaced by ********.';

COMMENT ON COLUMN sluice.sources.created_at IS 'When the source was declared.';

COMMENT ON COLUMN sluice.sources.created_by IS 'Role that declared it.';

CREATE VIEW sluice.pipelines AS
SELECT p.pipeline_id,
       p.name,
       p.source_name AS source,
       p.target_schema,
       p.publication,
       p.slot_name,
       (SELECT pg_catalog.array_agg(pt.source_schema OPERATOR(pg_catalog.||) '.'
                                   OPERATOR(pg_catalog.||) pt.source_table
                                   ORDER BY pt.source_schema, pt.source_table)
          FROM sluice._pipeline_table pt
         WHERE pt.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id) AS tables,
       p.binary_transfer,
       p.strict,
       r.finished_at AS last_refresh_at,
       r.end_lsn AS last_end_lsn,
       p.created_at
  FROM sluice._pipeline p
  LEFT JOIN LATERAL (SELECT r.finished_at, r.end_lsn
                       FROM sluice._run r
                      WHERE r.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
                      ORDER BY r.run_id DESC LIMIT 1) r ON true;

COMMENT ON VIEW sluice.pipelines IS 'Pipelines: one source, one publication and slot on it, a set of tables copied into a target schema.';

COMMENT ON COLUMN sluice.pipelines.pipeline_id IS 'Pipeline identifier.';

COMMENT ON COLUMN sluice.pipelines.name IS 'Pipeline name.';

COMMENT ON COLUMN sluice.pipelines.source IS 'Source the pipeline reads from.';

COMMENT ON COLUMN sluice.pipelines.target_schema IS 'Datamart schema holding the copied tables.';

COMMENT ON COLUMN sluice.pipelines.publication IS 'Publication on the source.';

COMMENT ON COLUMN sluice.pipelines.binary_transfer IS 'Changes arrive in pgoutput binary format: every column has the same binary form in the datamart, or no send function (pgoutput sends it as text).';

COMMENT ON COLUMN sluice.pipelines.slot_name IS 'Logical replication slot on the source.';

COMMENT ON COLUMN sluice.pipelines.strict IS 'An update or delete that finds no row in the datamart pauses the pipeline (true) or is skipped and counted in sluice.runs.rows_missing (false, the default); set with sluice.alter_pipeline.';

COMMENT ON COLUMN sluice.pipelines.tables IS 'Source tables, schema-qualified.';

COMMENT ON COLUMN sluice.pipelines.last_refresh_at IS 'When the last initial copy or refresh committed.';

COMMENT ON COLUMN sluice.pipelines.last_end_lsn IS 'Source LSN the datamart is consistent with.';

COMMENT ON COLUMN sluice.pipelines.created_at IS 'When the pipeline was created.';

CREATE VIEW sluice.pipeline_tables AS
SELECT p.name AS pipeline,
       pt.source_schema,
       pt.source_table,
       pt.target_schema,
       pt.target_table,
       pt.key_columns,
       pt.replica_identity
  FROM sluice._pipeline_table pt
  JOIN sluice._pipeline p USING (pipeline_id);

COMMENT ON VIEW sluice.pipeline_tables IS 'Which source table feeds which datamart table, and by which key.';

COMMENT ON COLUMN sluice.pipeline_tables.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.pipeline_tables.source_schema IS 'Schema of the table on the source.';

COMMENT ON COLUMN sluice.pipeline_tables.source_table IS 'Table on the source.';

COMMENT ON COLUMN sluice.pipeline_tables.target_schema IS 'Schema of the datamart table.';

COMMENT ON COLUMN sluice.pipeline_tables.target_table IS 'Datamart table.';

COMMENT ON COLUMN sluice.pipeline_tables.key_columns IS 'Columns identifying a row (primary key or replica identity index); empty for REPLICA IDENTITY FULL without a key.';

COMMENT ON COLUMN sluice.pipeline_tables.replica_identity IS 'Replica identity of the source table: default, index or full.';

CREATE VIEW sluice.runs AS
SELECT r.run_id,
       p.name AS pipeline,
       r.kind,
       r.status,
       r.started_at,
       r.finished_at,
       r.finished_at OPERATOR(pg_catalog.-) r.started_at AS duration,
       r.start_lsn,
       r.end_lsn,
       r.transactions,
       r.rows_inserted,
       r.rows_updated,
       r.rows_deleted,
       r.tables_truncated,
       r.last_source_commit,
       r.error,
       r.skipped_xid,
       r.rows_missing,
       (SELECT pg_catalog.jsonb_object_agg(rt.target_schema OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) rt.target_table,
                                          rt.rows_missing)
          FROM sluice._run_table rt
         WHERE rt.run_id OPERATOR(pg_catalog.=) r.run_id AND rt.rows_missing OPERATOR(pg_catalog.>) 0) AS missing_by_table
  FROM sluice._run r
  JOIN sluice._pipeline p USING (pipeline_id);

COMMENT ON VIEW sluice.runs IS 'Initial copies, refreshes and streamed batches (with failed streamed batches), newest last.';

COMMENT ON COLUMN sluice.runs.run_id IS 'Run identifier, increasing.';

COMMENT ON COLUMN sluice.runs.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.runs.kind IS 'initial_copy, refresh (sluice.refresh), stream (a continuous worker''s batch), repair (sluice.repair) or release (sluice.release_quarantined).';

COMMENT ON COLUMN sluice.runs.status IS 'succeeded or failed (a failed batch rolled back and is retried; a failed sluice.refresh() rolls back entirely and leaves no row).';

COMMENT ON COLUMN sluice.runs.started_at IS 'When the run started.';

COMMENT ON COLUMN sluice.runs.finished_at IS 'When the run finished applying (it committed with its transaction).';

COMMENT ON COLUMN sluice.runs.duration IS 'finished_at - started_at.';

COMMENT ON COLUMN sluice.runs.start_lsn IS 'Source LSN the run started from (exclusive).';

COMMENT ON COLUMN sluice.runs.end_lsn IS 'Source LSN the datamart is consistent with after the run.';

COMMENT ON COLUMN sluice.runs.transactions IS 'Source transactions applied.';

COMMENT ON COLUMN sluice.runs.rows_inserted IS 'Rows inserted (initial copy: rows copied).';

COMMENT ON COLUMN sluice.runs.rows_updated IS 'Rows updated.';

COMMENT ON COLUMN sluice.runs.rows_deleted IS 'Rows deleted.';

COMMENT ON COLUMN sluice.runs.tables_truncated IS 'Tables truncated.';

COMMENT ON COLUMN sluice.runs.last_source_commit IS 'Commit time on the source of the last applied transaction.';

COMMENT ON COLUMN sluice.runs.error IS 'Why a failed run failed, or why a paused run paused.';

COMMENT ON COLUMN sluice.runs.skipped_xid IS 'Source transaction this run skipped on purpose (sluice.resume(pipeline, skip_xid)).';

COMMENT ON COLUMN sluice.runs.rows_missing IS 'Updates and deletes that found no row in the datamart (divergence: the datamart lacked a row the source had), skipped and counted; a strict pipeline pauses instead.';

COMMENT ON COLUMN sluice.runs.missing_by_table IS 'rows_missing per datamart table ({"schema.table": n}); the keys (up to 5 per table) are in the divergence event, not here: this view is readable by all.';

CREATE VIEW sluice.contracts AS
SELECT pt.target_schema,
       pt.target_table,
       pt.source_schema,
       pt.source_table,
       pt.drift_policy,
       pt.contract_version,
       pt.ignored_columns AS ignored_source_columns,
       cc.position,
       cc.column_name,
       cc.source_column,
       cc.data_type,
       cc.not_null,
       cc.is_key
  FROM sluice._pipeline_table pt
  JOIN sluice._contract_column cc
    ON (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
       OPERATOR(pg_catalog.=) (pt.pipeline_id, pt.source_schema, pt.source_table, pt.contract_version);

COMMENT ON VIEW sluice.contracts IS 'The current contract of every datamart table pg_sluice feeds: one row per column.';

COMMENT ON COLUMN sluice.contracts.target_schema IS 'Schema of the datamart table.';

COMMENT ON COLUMN sluice.contracts.target_table IS 'Datamart table.';

COMMENT ON COLUMN sluice.contracts.source_schema IS 'Schema of the source table.';

COMMENT ON COLUMN sluice.contracts.source_table IS 'Source table.';

COMMENT ON COLUMN sluice.contracts.drift_policy IS 'freeze, evolve or ignore: what a change of the source table''s columns does.';

COMMENT ON COLUMN sluice.contracts.contract_version IS 'Current contract version (each evolution or mapping adds one).';

COMMENT ON COLUMN sluice.contracts.ignored_source_columns IS 'Source columns left out of the datamart table (generated columns, and columns added on the source under the ignore policy).';

COMMENT ON COLUMN sluice.contracts.position IS 'Column position in the datamart table.';

COMMENT ON COLUMN sluice.contracts.column_name IS 'Datamart column.';

COMMENT ON COLUMN sluice.contracts.source_column IS 'Source column feeding it (differs after a rename on the source, see sluice.map_column).';

COMMENT ON COLUMN sluice.contracts.data_type IS 'Datamart type.';

COMMENT ON COLUMN sluice.contracts.not_null IS 'The datamart column refuses NULL.';

COMMENT ON COLUMN sluice.contracts.is_key IS 'Part of the key rows are matched on.';

CREATE VIEW sluice.drift_events AS
SELECT d.event_id,
       p.name AS pipeline,
       d.source_schema,
       d.source_table,
       d.detected_at,
       d.source_xid,
       d.source_lsn,
       d.policy,
       d.action,
       d.detail,
       d.contract_version,
       d.contract_columns,
       d.source_columns
  FROM sluice._drift_event d
  JOIN sluice._pipeline p USING (pipeline_id);

COMMENT ON VIEW sluice.drift_events IS 'Every change of a source table''s columns pg_sluice detected, and what it did.';

COMMENT ON COLUMN sluice.drift_events.event_id IS 'Event identifier, increasing.';

COMMENT ON COLUMN sluice.drift_events.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.drift_events.source_schema IS 'Schema of the source table.';

COMMENT ON COLUMN sluice.drift_events.source_table IS 'Source table whose columns changed.';

COMMENT ON COLUMN sluice.drift_events.detected_at IS 'When pg_sluice saw the change (the RELATION message, before any row).';

COMMENT ON COLUMN sluice.drift_events.source_xid IS 'Source transaction that first carried the new definition.';

COMMENT ON COLUMN sluice.drift_events.source_lsn IS 'Commit LSN of that source transaction.';

COMMENT ON COLUMN sluice.drift_events.policy IS 'Drift policy in force.';

COMMENT ON COLUMN sluice.drift_events.action IS 'paused (nothing applied, pipeline paused), evolved (columns added), widened (datamart column type widened as on the source), accepted (a new source type the datamart column holds), kept (source column dropped, datamart column kept), dropped (column dropped from the contract and the table), mapped (fed by another source column) or ignored (new columns left out).';

COMMENT ON COLUMN sluice.drift_events.detail IS 'What changed, in words.';

COMMENT ON COLUMN sluice.drift_events.contract_version IS 'Contract version in force after the event.';

COMMENT ON COLUMN sluice.drift_events.contract_columns IS 'Before: the source columns the contract expected (name, datamart column, type OID, type_name, data_type).';

COMMENT ON COLUMN sluice.drift_events.source_columns IS 'After: the source table''s columns as the source now sends them (name, type OID, type_name); for an event a function recorded, the contract''s columns after it.';

CREATE FUNCTION sluice._readable(target_schema name, target_table name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  -- runs as whoever reads the view: views that show values of a table show
  -- them only to roles that can SELECT it
  SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = target_schema AND c.relname = target_table
                    AND has_table_privilege(c.oid, 'SELECT'))
$$;

COMMENT ON FUNCTION sluice._readable(name, name) IS 'Private: the current role can SELECT this datamart table.';

CREATE VIEW sluice.expectations AS
SELECT e.expectation_id, p.name AS pipeline, pt.target_schema, pt.target_table, e.name, e.kind,
       e.column_names, e.args, e.severity, e.created_at
  FROM sluice._expectation e
  JOIN sluice._pipeline p USING (pipeline_id)
  JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table)
 WHERE sluice._readable(pt.target_schema, pt.target_table);

COMMENT ON VIEW sluice.expectations IS 'Declared data-quality expectations (of the tables the current role can read).';

COMMENT ON COLUMN sluice.expectations.expectation_id IS 'Expectation identifier.';

COMMENT ON COLUMN sluice.expectations.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.expectations.target_schema IS 'Schema of the datamart table.';

COMMENT ON COLUMN sluice.expectations.target_table IS 'Datamart table it checks.';

COMMENT ON COLUMN sluice.expectations.name IS 'Expectation name, unique in the pipeline.';

COMMENT ON COLUMN sluice.expectations.kind IS 'Great Expectations name of the check.';

COMMENT ON COLUMN sluice.expectations.column_names IS 'Columns it checks.';

COMMENT ON COLUMN sluice.expectations.args IS 'Its parameters (min_value, max_value, value_set, regex, ...).';

COMMENT ON COLUMN sluice.expectations.severity IS 'error (roll the batch back, pause), warn (apply, record) or quarantine (hold the failing row back).';

COMMENT ON COLUMN sluice.expectations.created_at IS 'When it was declared.';

CREATE VIEW sluice.quality AS
SELECT r.run_id, p.name AS pipeline, pt.target_schema, pt.target_table, e.name AS expectation, e.kind,
       e.column_names, e.severity, r.finished_at, r.status AS run_status,
       er.evaluated, er.failed, er.success, er.observed, er.sample_keys
  FROM sluice._expectation_result er
  JOIN sluice._run r USING (run_id)
  JOIN sluice._expectation e USING (expectation_id)
  JOIN sluice._pipeline p ON p.pipeline_id OPERATOR(pg_catalog.=) e.pipeline_id
  JOIN sluice._pipeline_table pt ON (pt.pipeline_id, pt.source_schema, pt.source_table)
       OPERATOR(pg_catalog.=) (e.pipeline_id, e.source_schema, e.source_table)
 WHERE sluice._readable(pt.target_schema, pt.target_table);

COMMENT ON VIEW sluice.quality IS 'Data-quality history: every expectation''s result in every run, for a BI dashboard (of the tables the current role can read: sample_keys holds their values).';

COMMENT ON COLUMN sluice.quality.run_id IS 'Run (sluice.runs).';

COMMENT ON COLUMN sluice.quality.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.quality.target_schema IS 'Schema of the datamart table.';

COMMENT ON COLUMN sluice.quality.target_table IS 'Datamart table.';

COMMENT ON COLUMN sluice.quality.expectation IS 'Expectation name.';

COMMENT ON COLUMN sluice.quality.kind IS 'Great Expectations name of the check.';

COMMENT ON COLUMN sluice.quality.column_names IS 'Columns checked.';

COMMENT ON COLUMN sluice.quality.severity IS 'error, warn or quarantine.';

COMMENT ON COLUMN sluice.quality.finished_at IS 'When the run finished.';

COMMENT ON COLUMN sluice.quality.run_status IS 'succeeded, or paused when an error-severity expectation failed.';

COMMENT ON COLUMN sluice.quality.evaluated IS 'Rows checked (row expectations: rows written; set expectations: rows the run changed, or 1 for table-level checks).';

COMMENT ON COLUMN sluice.quality.failed IS 'Rows (or values) that failed.';

COMMENT ON COLUMN sluice.quality.success IS 'No failure.';

COMMENT ON COLUMN sluice.quality.observed IS 'Observed value of table-level checks (row count, max).';

COMMENT ON COLUMN sluice.quality.sample_keys IS 'Up to 5 keys (or values) that failed.';

CREATE VIEW sluice.quarantine AS
SELECT q.quarantine_id, p.name AS pipeline, q.target_schema, q.target_table, e.name AS expectation,
       q.change, q.row_data, q.source_xid, q.source_lsn, q.quarantined_at, q.status, q.resolved_at,
       q.row_key, q.superseded_by, q.superseded_how, q.superseded_xid, q.superseded_lsn
  FROM sluice._quarantine q
  JOIN sluice._pipeline p USING (pipeline_id)
  LEFT JOIN sluice._expectation e USING (expectation_id);

ALTER VIEW sluice.quarantine SET (security_invoker = true);

ALTER VIEW sluice.quality SET (security_barrier = true);

ALTER VIEW sluice.expectations SET (security_barrier = true);

COMMENT ON VIEW sluice.quarantine IS 'Rows held back by quarantine expectations (of the pipelines the current role operates); release or discard them.';

COMMENT ON COLUMN sluice.quarantine.quarantine_id IS 'Identifier, for release_quarantined / discard_quarantined.';

COMMENT ON COLUMN sluice.quarantine.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.quarantine.target_schema IS 'Schema of the datamart table.';

COMMENT ON COLUMN sluice.quarantine.target_table IS 'Datamart table the row was for.';

COMMENT ON COLUMN sluice.quarantine.expectation IS 'Expectation the row failed.';

COMMENT ON COLUMN sluice.quarantine.change IS 'insert or update.';

COMMENT ON COLUMN sluice.quarantine.row_data IS 'The row as it would have been written.';

COMMENT ON COLUMN sluice.quarantine.source_xid IS 'Source transaction.';

COMMENT ON COLUMN sluice.quarantine.source_lsn IS 'Commit LSN of the source transaction.';

COMMENT ON COLUMN sluice.quarantine.quarantined_at IS 'When it was held back.';

COMMENT ON COLUMN sluice.quarantine.status IS 'held, released, discarded, or superseded (a later change of the same key on the source replaced it: see superseded_how; releasing it needs force).';

COMMENT ON COLUMN sluice.quarantine.resolved_at IS 'When it was released, discarded or superseded.';

COMMENT ON COLUMN sluice.quarantine.row_key IS 'Key of the row (every column for a table without a key).';

COMMENT ON COLUMN sluice.quarantine.superseded_by IS 'The entry holding the key''s later state, when that was quarantined too.';

COMMENT ON COLUMN sluice.quarantine.superseded_how IS 'applied (the later state was written to the datamart), quarantined (held again: superseded_by), deleted or truncated on the source; NULL while the entry is the key''s latest state.';

COMMENT ON COLUMN sluice.quarantine.superseded_xid IS 'Source transaction of the later change.';

COMMENT ON COLUMN sluice.quarantine.superseded_lsn IS 'Commit LSN of that source transaction.';

CREATE VIEW sluice.versions AS
SELECT r.run_id AS version,
       p.name AS pipeline,
       r.kind,
       r.start_lsn,
       r.end_lsn,
       r.last_source_commit,
       r.finished_at AS committed_at,
       r.transactions,
       r.rows_inserted,
       r.rows_updated,
       r.rows_deleted,
       r.tables_truncated,
       (SELECT count(*) FROM sluice._expectation_result er WHERE er.run_id OPERATOR(pg_catalog.=) r.run_id) AS expectations,
       (SELECT count(*) FROM sluice._expectation_result er
         WHERE er.run_id OPERATOR(pg_catalog.=) r.run_id AND NOT er.success) AS expectations_failed,
       (SELECT pg_catalog.jsonb_object_agg(rt.target_schema OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) rt.target_table,
                 pg_catalog.jsonb_build_object('inserted', rt.rows_inserted, 'updated', rt.rows_updated,
                                               'deleted', rt.rows_deleted, 'truncated', rt.truncated))
          FROM sluice._run_table rt WHERE rt.run_id OPERATOR(pg_catalog.=) r.run_id) AS tables,
       (SELECT pg_catalog.array_agg(tg.name ORDER BY tg.name) FROM sluice._tag tg
         WHERE tg.pipeline_id OPERATOR(pg_catalog.=) r.pipeline_id AND tg.version OPERATOR(pg_catalog.=) r.run_id) AS tags,
       COALESCE(p.keep_history AND r.run_id OPERATOR(pg_catalog.>=) p.history_from AND NOT r.history_purged, false) AS queryable
  FROM sluice._run r
  JOIN sluice._pipeline p USING (pipeline_id)
 WHERE r.status OPERATOR(pg_catalog.=) 'succeeded'
   AND (r.kind OPERATOR(pg_catalog.=) ANY (ARRAY['initial_copy', 'repair', 'release']) OR r.transactions OPERATOR(pg_catalog.>) 0);

COMMENT ON VIEW sluice.versions IS 'Every committed version (initial copy, refresh or streamed batch that applied changes, repair), with its metadata.';

COMMENT ON COLUMN sluice.versions.version IS 'Version number (the run id): <table>_at(version) reads a table as of it.';

COMMENT ON COLUMN sluice.versions.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.versions.kind IS 'initial_copy, refresh, stream, repair or release (of a quarantined row).';

COMMENT ON COLUMN sluice.versions.start_lsn IS 'Source LSN the version starts after.';

COMMENT ON COLUMN sluice.versions.end_lsn IS 'Source LSN the version is consistent with.';

COMMENT ON COLUMN sluice.versions.last_source_commit IS 'Commit time on the source of the last transaction in the version.';

COMMENT ON COLUMN sluice.versions.committed_at IS 'When the version committed in the datamart: <table>_at_time(t) reads the last version committed at t.';

COMMENT ON COLUMN sluice.versions.transactions IS 'Source transactions in the version.';

COMMENT ON COLUMN sluice.versions.rows_inserted IS 'Rows inserted.';

COMMENT ON COLUMN sluice.versions.rows_updated IS 'Rows updated.';

COMMENT ON COLUMN sluice.versions.rows_deleted IS 'Rows deleted.';

COMMENT ON COLUMN sluice.versions.tables_truncated IS 'Tables truncated.';

COMMENT ON COLUMN sluice.versions.tables IS 'Rows written per datamart table: {"schema.table": {"inserted", "updated", "deleted", "truncated"}}.';

COMMENT ON COLUMN sluice.versions.expectations IS 'Expectations evaluated.';

COMMENT ON COLUMN sluice.versions.expectations_failed IS 'Expectations that failed (warn or quarantine: the version still committed).';

COMMENT ON COLUMN sluice.versions.tags IS 'Tags naming this version.';

COMMENT ON COLUMN sluice.versions.queryable IS 'Its history is kept: it can be read with <table>_at, tagged and diffed.';

CREATE VIEW sluice.tags AS
SELECT p.name AS pipeline, tg.name AS tag, tg.version, tg.schema_name, tg.created_at
  FROM sluice._tag tg JOIN sluice._pipeline p USING (pipeline_id);

COMMENT ON VIEW sluice.tags IS 'Named versions and the schema of views exposing each.';

COMMENT ON COLUMN sluice.tags.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.tags.tag IS 'Tag name.';

COMMENT ON COLUMN sluice.tags.version IS 'The version it pins.';

COMMENT ON COLUMN sluice.tags.schema_name IS 'Schema with one view per table at that version (for BI tools).';

COMMENT ON COLUMN sluice.tags.created_at IS 'When it was tagged.';

CREATE VIEW sluice.destinations AS
SELECT d.name, d.kind, d.url, d.events, d.format, d.namespace,
       (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.jsonb_object_keys(d.headers) k) AS header_names,
       d.secret IS NOT NULL AS signed, d.created_at,
       (SELECT count(*) FROM sluice._outbox o WHERE o.destination OPERATOR(pg_catalog.=) d.name AND o.status IN ('pending', 'sending')) AS pending,
       (SELECT count(*) FROM sluice._outbox o WHERE o.destination OPERATOR(pg_catalog.=) d.name AND o.status OPERATOR(pg_catalog.=) 'failed') AS failed
  FROM sluice._destination d;

COMMENT ON VIEW sluice.destinations IS 'Webhooks and OpenLineage endpoints (secrets and header values are never shown).';

COMMENT ON COLUMN sluice.destinations.name IS 'Destination name.';

COMMENT ON COLUMN sluice.destinations.kind IS 'webhook or openlineage.';

COMMENT ON COLUMN sluice.destinations.url IS 'Where events are posted.';

COMMENT ON COLUMN sluice.destinations.events IS 'Events it receives (* for all).';

COMMENT ON COLUMN sluice.destinations.format IS 'json or slack (webhooks).';

COMMENT ON COLUMN sluice.destinations.namespace IS 'OpenLineage job namespace.';

COMMENT ON COLUMN sluice.destinations.header_names IS 'Extra HTTP headers sent (names only).';

COMMENT ON COLUMN sluice.destinations.signed IS 'Requests carry an HMAC-SHA256 signature (webhooks) or a Bearer token (OpenLineage).';

COMMENT ON COLUMN sluice.destinations.created_at IS 'When it was created.';

COMMENT ON COLUMN sluice.destinations.pending IS 'Events waiting to be delivered.';

COMMENT ON COLUMN sluice.destinations.failed IS 'Events given up on.';

CREATE VIEW sluice.events AS
SELECT o.event_id, o.destination, o.pipeline, o.event, o.body, o.created_at, o.status, o.attempts,
       o.next_attempt_at, o.last_error, o.sent_at
  FROM sluice._outbox o;

COMMENT ON VIEW sluice.events IS 'The event outbox: what was sent where, what is pending, and why delivery failed.';

COMMENT ON COLUMN sluice.events.event_id IS 'Event identifier.';

COMMENT ON COLUMN sluice.events.destination IS 'Destination name.';

COMMENT ON COLUMN sluice.events.pipeline IS 'Pipeline the event is about.';

COMMENT ON COLUMN sluice.events.event IS 'Event name.';

COMMENT ON COLUMN sluice.events.body IS 'Event data (the documented payload is built from it when sent).';

COMMENT ON COLUMN sluice.events.created_at IS 'When it happened (committed with what it describes).';

COMMENT ON COLUMN sluice.events.status IS 'pending, sending, sent or failed (given up).';

COMMENT ON COLUMN sluice.events.attempts IS 'Delivery attempts so far.';

COMMENT ON COLUMN sluice.events.next_attempt_at IS 'When the next attempt is due (exponential backoff).';

COMMENT ON COLUMN sluice.events.last_error IS 'Why the last attempt failed.';

COMMENT ON COLUMN sluice.events.sent_at IS 'When it was delivered.';

CREATE VIEW sluice.status AS
WITH w AS (SELECT * FROM sluice._worker_status()),
     limits AS (SELECT pg_catalog.pg_size_bytes(COALESCE(
                         pg_catalog.current_setting('pg_sluice.max_retained_wal', true), '1GB')) AS max_wal)
SELECT p.name AS pipeline,
       CASE WHEN p.continuous THEN 'continuous' ELSE 'scheduled' END AS mode,
       CASE WHEN p.paused_reason IS NOT NULL THEN 'paused'
            WHEN NOT p.continuous THEN 'stopped'
            WHEN w.pipeline_id IS NULL OR w.last_error IS NOT NULL THEN 'error'
            WHEN w.pid IS NULL THEN 'starting'
            ELSE 'running' END AS state,
       CASE WHEN p.continuous THEN COALESCE(w.last_error, p.last_error,
                 CASE WHEN w.pipeline_id IS NULL
                      THEN 'no worker: pg_sluice must be in shared_preload_libraries' END)
       END AS last_error,
       CASE WHEN p.continuous THEN p.last_error_at END AS last_error_at,
       p.paused_reason,
       p.paused_at,
       w.next_retry_at,
       w.pid AS worker_pid,
       ok.run_id AS last_run_id,
       ok.finished_at AS last_success_at,
       pg_catalog.now() OPERATOR(pg_catalog.-) ok.finished_at AS staleness,
       COALESCE(w.applied_lsn, ok.end_lsn) AS applied_lsn,
       COALESCE(w.source_flush_lsn, ok.source_flush_lsn) AS source_lsn,
       GREATEST(0, pg_catalog.pg_wal_lsn_diff(
           COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
           COALESCE(w.applied_lsn, ok.end_lsn)))::bigint AS lag_bytes,
       CASE WHEN COALESCE(w.source_flush_lsn, ok.source_flush_lsn) OPERATOR(pg_catalog.<=)
                 COALESCE(w.applied_lsn, ok.end_lsn) THEN 0
            ELSE pg_catalog.date_part('epoch', COALESCE(w.measured_at, ok.started_at)
                     OPERATOR(pg_catalog.-) COALESCE(w.last_source_commit, ok.last_source_commit))
       END::double precision AS lag_seconds,
       pg_catalog.pg_wal_lsn_diff(COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
                                  COALESCE(w.slot_restart_lsn, ok.slot_restart_lsn))::bigint AS retained_wal_bytes,
       COALESCE(pg_catalog.pg_wal_lsn_diff(COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
                                  COALESCE(w.slot_restart_lsn, ok.slot_restart_lsn))
                           OPERATOR(pg_catalog.>) limits.max_wal AND limits.max_wal OPERATOR(pg_catalog.>) 0, false)
           AS retained_wal_warning,
       COALESCE(w.measured_at, ok.started_at) AS measured_at,
       COALESCE(w.rows_per_second,
           (ok.rows_inserted OPERATOR(pg_catalog.+) ok.rows_updated OPERATOR(pg_catalog.+) ok.rows_deleted)
           OPERATOR(pg_catalog./) NULLIF(pg_catalog.date_part('epoch', ok.finished_at OPERATOR(pg_catalog.-) ok.started_at), 0))
           AS rows_per_second,
       p.rows_missing,
       p.last_missing_at,
       p.strict
  FROM sluice._pipeline p
  CROSS JOIN limits
  LEFT JOIN w ON w.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
  LEFT JOIN LATERAL (SELECT r.* FROM sluice._run r
                      WHERE r.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
                        AND r.status OPERATOR(pg_catalog.=) 'succeeded'
                      ORDER BY r.run_id DESC LIMIT 1) ok ON true;

COMMENT ON VIEW sluice.status IS 'One row per pipeline for DBAs and dashboards: mode, state, freshness, lag and WAL kept on the source.';

COMMENT ON COLUMN sluice.status.pipeline IS 'Pipeline name.';

COMMENT ON COLUMN sluice.status.mode IS 'continuous (a background worker streams it, sluice.start) or scheduled (sluice.refresh on demand or from pg_cron).';

COMMENT ON COLUMN sluice.status.state IS 'paused (see paused_reason); running, starting, error (retrying with backoff: see last_error) for continuous pipelines; stopped for scheduled ones.';

COMMENT ON COLUMN sluice.status.paused_reason IS 'Why the pipeline is paused (schema drift): nothing is applied until sluice.resume().';

COMMENT ON COLUMN sluice.status.paused_at IS 'When the pipeline paused.';

COMMENT ON COLUMN sluice.status.last_error IS 'Why the continuous worker last failed; cleared by its next successful batch.';

COMMENT ON COLUMN sluice.status.last_error_at IS 'When the continuous worker last failed.';

COMMENT ON COLUMN sluice.status.next_retry_at IS 'When a failing worker tries again (backoff doubles up to one minute).';

COMMENT ON COLUMN sluice.status.worker_pid IS 'Process id of the continuous worker, if running.';

COMMENT ON COLUMN sluice.status.last_run_id IS 'Last successful run (sluice.runs).';

COMMENT ON COLUMN sluice.status.last_success_at IS 'When the last successful run committed.';

COMMENT ON COLUMN sluice.status.staleness IS 'Time since the last successful run committed.';

COMMENT ON COLUMN sluice.status.applied_lsn IS 'Source position the datamart is consistent with.';

COMMENT ON COLUMN sluice.status.source_lsn IS 'Source''s flushed WAL position when last measured (measured_at).';

COMMENT ON COLUMN sluice.status.lag_bytes IS 'Source WAL not yet applied, when last measured.';

COMMENT ON COLUMN sluice.status.lag_seconds IS 'Age of the last applied source commit when last measured, if behind; 0 when caught up.';

COMMENT ON COLUMN sluice.status.retained_wal_bytes IS 'WAL the pipeline''s slot keeps on the source, when last measured.';

COMMENT ON COLUMN sluice.status.retained_wal_warning IS 'retained_wal_bytes is past pg_sluice.max_retained_wal: the source''s disk is at risk.';

COMMENT ON COLUMN sluice.status.measured_at IS 'When the source was last looked at (continuous: every batch or naptime; scheduled: at the last refresh).';

COMMENT ON COLUMN sluice.status.rows_per_second IS 'Rows applied per second (continuous: over the last seconds; scheduled: during the last run).';

COMMENT ON COLUMN sluice.status.rows_missing IS 'Updates and deletes skipped since the pipeline was created because the datamart had no row for them: not 0 means the datamart diverged from the source (sluice.runs.missing_by_table says where).';

COMMENT ON COLUMN sluice.status.last_missing_at IS 'When the last such update or delete was skipped.';

COMMENT ON COLUMN sluice.status.strict IS 'A missing row pauses the pipeline instead of being skipped and counted.';

CREATE FUNCTION sluice._compile_predicate(target regclass, predicate text)
RETURNS pg_node_tree
AS 'MODULE_PATHNAME', 'sluice_compile_predicate'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION sluice._compile_predicate(regclass, text) IS
  'Private: a row predicate bound to the table (names resolved in the caller''s search_path), or an error if it is not a valid boolean expression over the table''s columns without subqueries, aggregates or volatile functions.';

CREATE FUNCTION sluice._compile_check(target regclass, query text)
RETURNS pg_node_tree
AS 'MODULE_PATHNAME', 'sluice_compile_check'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION sluice._exec_as_owner(pipeline_id integer, statement text, param jsonb)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_exec_as_owner'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION sluice._exec_as_owner(integer, text, jsonb) IS
  'Private: runs one statement of pg_sluice''s SQL functions as the pipeline''s owner, restricted (the caller must operate the pipeline).';

COMMENT ON FUNCTION sluice._compile_check(regclass, text) IS
  'Private: a set expectation''s query, parsed and analyzed once (names resolved in the caller''s search_path).';

CREATE OR REPLACE FUNCTION sluice.add_expectation(
    target       regclass,
    kind         text,
    column_names name[] DEFAULT '{}',
    args         jsonb DEFAULT '{}',
    severity     text DEFAULT 'error',
    name         text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  cols name[] := coalesce(column_names, '{}');
  c name;
  col name;
  typ text;
  qt text := target::text;
  pred text;
  chk text;
  pred_tree pg_node_tree;
  chk_tree pg_node_tree;
  lo text := args->>'min_value';
  hi text := args->>'max_value';
  smin boolean := coalesce((args->>'strict_min')::boolean, false);
  smax boolean := coalesce((args->>'strict_max')::boolean, false);
  bad boolean;
  ename text;
  row_kinds text[] := ARRAY['expect_column_values_to_not_be_null', 'expect_column_values_to_be_null',
      'expect_column_values_to_be_in_set', 'expect_column_values_to_not_be_in_set',
      'expect_column_values_to_be_between', 'expect_column_values_to_match_regex',
      'expect_column_values_to_not_match_regex', 'expect_column_values_to_match_like_pattern',
      'expect_column_value_lengths_to_be_between', 'expect_column_value_lengths_to_equal',
      'expect_row_to_satisfy'];
  set_kinds text[] := ARRAY['expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between',
      'expect_column_values_to_be_in_table', 'expect_column_max_to_be_fresh'];
  keycols text;
  other regclass;
BEGIN
  IF target IS NULL OR kind IS NULL OR severity IS NULL THEN
    RAISE EXCEPTION 'target, kind and severity must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  t := sluice._contract_table(target, true);
  IF NOT (kind = ANY (row_kinds) OR kind = ANY (set_kinds)) THEN
    RAISE EXCEPTION 'unknown expectation "%"', kind USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Known: ' || array_to_string(row_kinds || set_kinds, ', ') || '.';
  END IF;
  IF severity NOT IN ('error', 'warn', 'quarantine') THEN
    RAISE EXCEPTION 'unknown severity "%"', severity USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use error (roll the batch back and pause), warn (apply and record) or quarantine (hold the failing row back).';
  END IF;
  IF severity = 'quarantine' AND kind = ANY (set_kinds) THEN
    RAISE EXCEPTION '% cannot quarantine rows', kind USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'It checks a set of rows, not one row.', HINT = 'Use severity error or warn.';
  END IF;
  -- every column must be in the contract
  FOREACH c IN ARRAY cols LOOP
    IF NOT EXISTS (SELECT 1 FROM sluice._contract_column cc
                    WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
                          = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version)
                      AND cc.column_name = c) THEN
      RAISE EXCEPTION 'column "%" is not in the contract of %', c, target USING ERRCODE = 'undefined_column',
        HINT = 'sluice.contracts lists the contract''s columns.';
    END IF;
  END LOOP;
  IF kind NOT IN ('expect_table_row_count_to_be_between', 'expect_row_to_satisfy') AND cardinality(cols) = 0 THEN
    RAISE EXCEPTION '% needs a column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF kind NOT IN ('expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between', 'expect_row_to_satisfy')
     AND cardinality(cols) <> 1 THEN
    RAISE EXCEPTION '% takes exactly one column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  col := cols[1];
  IF col IS NOT NULL THEN
    SELECT cc.data_type INTO typ FROM sluice._contract_column cc
     WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
           = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version) AND cc.column_name = col;
  END IF;
  IF kind IN ('expect_column_values_to_be_between', 'expect_column_value_lengths_to_be_between',
              'expect_table_row_count_to_be_between') THEN
    IF lo IS NULL AND hi IS NULL THEN
      RAISE EXCEPTION '% needs min_value or max_value', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lo IS NOT NULL AND hi IS NOT NULL THEN
      EXECUTE format('SELECT %L::%s > %L::%s', lo,
                     CASE WHEN kind = 'expect_column_values_to_be_between' THEN typ ELSE 'bigint' END, hi,
                     CASE WHEN kind = 'expect_column_values_to_be_between' THEN typ ELSE 'bigint' END) INTO bad;
      IF bad THEN
        RAISE EXCEPTION 'min_value % is greater than max_value %', lo, hi USING ERRCODE = 'invalid_parameter_value';
      END IF;
    END IF;
  END IF;

  CASE kind
  WHEN 'expect_column_values_to_not_be_null' THEN
    pred := format('%I IS NOT NULL', col);
  WHEN 'expect_column_values_to_be_null' THEN
    pred := format('%I IS NULL', col);
  WHEN 'expect_column_values_to_be_in_set', 'expect_column_values_to_not_be_in_set' THEN
    IF jsonb_typeof(args->'value_set') IS DISTINCT FROM 'array' THEN
      RAISE EXCEPTION '% needs args value_set, a JSON array', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pred := format('%1$I IS NULL OR %1$I %4$s (%2$L::text[]::%3$s[])', col,
                   ARRAY(SELECT jsonb_array_elements_text(args->'value_set')), typ,
                   CASE WHEN kind = 'expect_column_values_to_be_in_set' THEN '= ANY' ELSE '<> ALL' END);
  WHEN 'expect_column_values_to_be_between' THEN
    pred := format('%1$I IS NULL OR (%2$s AND %3$s)', col,
                   CASE WHEN lo IS NULL THEN 'true' ELSE format('%I %s %L::%s', col, CASE WHEN smin THEN '>' ELSE '>=' END, lo, typ) END,
                   CASE WHEN hi IS NULL THEN 'true' ELSE format('%I %s %L::%s', col, CASE WHEN smax THEN '<' ELSE '<=' END, hi, typ) END);
  WHEN 'expect_column_values_to_match_regex', 'expect_column_values_to_not_match_regex' THEN
    IF args->>'regex' IS NULL THEN
      RAISE EXCEPTION '% needs args regex', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
      PERFORM '' ~ (args->>'regex');
    EXCEPTION WHEN invalid_regular_expression THEN
      RAISE EXCEPTION 'invalid regular expression %', args->>'regex' USING ERRCODE = 'invalid_regular_expression',
        DETAIL = SQLERRM;
    END;
    pred := format('%1$I IS NULL OR %1$I::text %3$s %2$L', col, args->>'regex',
                   CASE WHEN kind = 'expect_column_values_to_match_regex' THEN '~' ELSE '!~' END);
  WHEN 'expect_column_values_to_match_like_pattern' THEN
    IF args->>'like_pattern' IS NULL THEN
      RAISE EXCEPTION '% needs args like_pattern', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- LIKE's one error, raised only when matching reaches it: a trailing escape
    IF length(substring(args->>'like_pattern' FROM '\\*$')) % 2 = 1 THEN
      RAISE EXCEPTION 'invalid LIKE pattern %: it ends with an escape character', args->>'like_pattern'
        USING ERRCODE = 'invalid_escape_sequence', HINT = 'Write \\ for a literal backslash.';
    END IF;
    pred := format('%1$I IS NULL OR %1$I::text LIKE %2$L', col, args->>'like_pattern');
  WHEN 'expect_column_value_lengths_to_equal' THEN
    IF args->>'value' IS NULL OR (args->>'value')::bigint < 0 THEN
      RAISE EXCEPTION '% needs args value, a length of 0 or more', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pred := format('%1$I IS NULL OR sluice._length_between(%1$I::text, %2$s, %2$s)', col, (args->>'value')::bigint);
  WHEN 'expect_column_value_lengths_to_be_between' THEN
    pred := format('%1$I IS NULL OR sluice._length_between(%1$I::text, %2$s, %3$s)', col,
                   coalesce(lo::bigint, 0), coalesce(hi::bigint, 9223372036854775807));
  WHEN 'expect_row_to_satisfy' THEN
    IF args->>'predicate' IS NULL THEN
      RAISE EXCEPTION '% needs args predicate, a boolean SQL expression over the row', kind
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pred := args->>'predicate';
  WHEN 'expect_column_values_to_be_unique' THEN
    keycols := (SELECT string_agg(format('%I', k), ', ') FROM unnest(cols) k);
    chk := format($q$WITH c AS (SELECT t.ctid AS sluice_tid, %1$s FROM %2$s t WHERE sluice._changed_here(t.xmin)),
      bad AS (SELECT DISTINCT %1$s FROM c WHERE (%1$s) IS NOT NULL AND EXISTS (
               SELECT 1 FROM %2$s t2 WHERE (%3$s) = (%4$s) AND t2.ctid <> c.sluice_tid))
      SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM c), NULL::text,
             (SELECT jsonb_agg(to_jsonb(b)) FROM (SELECT * FROM bad LIMIT 5) b)$q$,
      keycols, qt,
      (SELECT string_agg(format('t2.%I', k), ', ') FROM unnest(cols) k),
      (SELECT string_agg(format('c.%I', k), ', ') FROM unnest(cols) k));
  WHEN 'expect_table_row_count_to_be_between' THEN
    chk := format($q$SELECT CASE WHEN n >= %2$s AND n <= %3$s THEN 0 ELSE 1 END::bigint, 1::bigint, n::text, NULL::jsonb
                      FROM (SELECT count(*) AS n FROM %1$s) x$q$,
                  qt, coalesce(lo::bigint::text, '0'), coalesce(hi::bigint::text, '9223372036854775807'));
  WHEN 'expect_column_values_to_be_in_table' THEN
    BEGIN
      other := (args->>'table')::regclass;
    EXCEPTION WHEN OTHERS THEN
      RAISE EXCEPTION 'table "%" does not exist', args->>'table' USING ERRCODE = 'undefined_table';
    END;
    IF other IS NULL OR args->>'column' IS NULL THEN
      RAISE EXCEPTION '% needs args table and column', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = other AND attname = args->>'column' AND NOT attisdropped AND attnum > 0) THEN
      RAISE EXCEPTION 'column "%" does not exist in %', args->>'column', other USING ERRCODE = 'undefined_column';
    END IF;
    chk := format($q$WITH c AS (SELECT t.%1$I AS v FROM %2$s t WHERE sluice._changed_here(t.xmin) AND t.%1$I IS NOT NULL),
      bad AS (SELECT DISTINCT v FROM c WHERE NOT EXISTS (SELECT 1 FROM %3$s o WHERE o.%4$I = c.v))
      SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM c), NULL::text,
             (SELECT jsonb_agg(to_jsonb(b.v)) FROM (SELECT v FROM bad LIMIT 5) b)$q$,
      col, qt, other::text, args->>'column');
  WHEN 'expect_column_max_to_be_fresh' THEN
    IF args->>'max_age' IS NULL THEN
      RAISE EXCEPTION '% needs args max_age, an interval', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM (args->>'max_age')::interval;
    chk := format($q$SELECT CASE WHEN m >= now() - %3$L::interval THEN 0 ELSE 1 END::bigint, 1::bigint, m::text, NULL::jsonb
                      FROM (SELECT max(%1$I) AS m FROM %2$s) x$q$, col, qt, args->>'max_age');
  END CASE;

  -- bound now, in this function's search_path (pg_catalog): a refresh
  -- never parses the text again, so nothing created later in anyone's
  -- search_path can slip into it
  IF pred IS NOT NULL THEN
    pred_tree := sluice._compile_predicate(target, pred);
  ELSE
    chk_tree := sluice._compile_check(target, chk);
    -- the check runs here once, so a broken one fails now, not at refresh
    EXECUTE chk;
  END IF;
  ename := coalesce(name, kind || CASE WHEN cardinality(cols) > 0 THEN '_' || array_to_string(cols, '_') ELSE '' END
                          || '_' || (SELECT pt.target_table FROM sluice._pipeline_table pt
                                      WHERE (pt.pipeline_id, pt.source_schema, pt.source_table)
                                            = (t.pipeline_id, t.source_schema, t.source_table)));
  INSERT INTO sluice._expectation (pipeline_id, source_schema, source_table, name, kind, column_names,
                                   args, severity, predicate, check_sql, predicate_tree, check_tree)
  VALUES (t.pipeline_id, t.source_schema, t.source_table, ename, kind, cols, coalesce(args, '{}'), severity, pred, chk,
          pred_tree, chk_tree);
  RETURN ename;
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'expectation "%" already exists in this pipeline', ename USING ERRCODE = 'duplicate_object',
    HINT = 'Give it another name, or drop the existing one with sluice.drop_expectation().';
END
$$;

-- expect_column_values_to_be_between: bounds of any type (0.1 took text only, so 10 did not resolve)
DROP FUNCTION sluice.expect_column_values_to_be_between(regclass, name, text, text, boolean, boolean, text);
CREATE FUNCTION sluice.expect_column_values_to_be_between(target regclass, column_name name,
    min_value anycompatible, max_value anycompatible,
    strict_min boolean DEFAULT false, strict_max boolean DEFAULT false, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
-- a quoted body: a polymorphic SQL function cannot have a standard one
AS $$SELECT sluice.add_expectation(target, 'expect_column_values_to_be_between', ARRAY[column_name],
    pg_catalog.jsonb_build_object('min_value', min_value::pg_catalog.text, 'max_value', max_value::pg_catalog.text,
                                  'strict_min', strict_min, 'strict_max', strict_max), severity)$$;

CREATE FUNCTION sluice._release_version(pipeline_id integer, target_schema name, target_table name, replaced boolean)
RETURNS bigint
AS 'MODULE_PATHNAME', 'sluice_release_version'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice._release_version(integer, name, name, boolean) IS
  'Private: records the version (a run of kind release) that releasing a quarantined row makes, and returns its number.';

CREATE FUNCTION sluice.release_quarantined(quarantine_id bigint, corrected jsonb DEFAULT NULL,
                                           force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  q record;
  keys text[];
  cols text;
  target text;
  newrow jsonb;
  stamped jsonb;
  keycol text;
  keymatch text;
  versioned boolean;
  hist regclass;
  replaced boolean := false;
  rel_version bigint;
BEGIN
  SELECT * INTO q FROM sluice._quarantine WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no held quarantined row %', quarantine_id USING ERRCODE = 'undefined_object',
      HINT = 'sluice.quarantine lists the held rows.';
  END IF;
  -- a refresh or worker batch of the pipeline holds this row while it applies (and may supersede the entry)
  PERFORM 1 FROM sluice._pipeline p WHERE p.pipeline_id = q.pipeline_id FOR UPDATE;
  SELECT * INTO q FROM sluice._quarantine WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id FOR UPDATE;
  IF q.status = 'superseded' AND NOT coalesce(force, false) THEN
    RAISE EXCEPTION 'quarantined row % is superseded by a later change of its key', quarantine_id
      USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = format('Source transaction %s %s the row with key %s after it was quarantined%s; the datamart already holds the key''s later state, which releasing this row would overwrite.',
                      q.superseded_xid,
                      CASE q.superseded_how WHEN 'applied' THEN 'changed' WHEN 'quarantined' THEN 'changed' ELSE q.superseded_how END,
                      q.row_key,
                      CASE WHEN q.superseded_by IS NOT NULL THEN format(' (held again as quarantined row %s)', q.superseded_by) ELSE '' END),
      HINT = CASE WHEN q.superseded_by IS NOT NULL
                  THEN format('Release the latest entry, sluice.release_quarantined(%s), or pass force => true to write this stale row anyway.', q.superseded_by)
                  ELSE 'Pass force => true to write this stale row anyway.' END;
  END IF;
  IF q.status NOT IN ('held', 'superseded') THEN
    RAISE EXCEPTION 'no held quarantined row %', quarantine_id USING ERRCODE = 'undefined_object',
      HINT = 'sluice.quarantine lists the held rows.';
  END IF;
  target := format('%I.%I', q.target_schema, q.target_table);
  SELECT pt.key_columns INTO keys FROM sluice._pipeline_table pt
   WHERE pt.pipeline_id = q.pipeline_id AND (pt.target_schema, pt.target_table) = (q.target_schema, q.target_table);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'quarantined row % is for table %, which pipeline % does not feed', quarantine_id, target, q.pipeline_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Discard it with sluice.discard_quarantined().';
  END IF;
  -- a correction may give only the columns it changes: the rest come from the stored row
  newrow := q.row_data || coalesce(corrected, '{}');
  FOREACH keycol IN ARRAY coalesce(keys, '{}') LOOP
    IF newrow -> keycol IS DISTINCT FROM q.row_data -> keycol THEN
      RAISE EXCEPTION 'the correction changes key column "%" of quarantined row %', keycol, quarantine_id
        USING ERRCODE = 'invalid_parameter_value',
        DETAIL = format('The row was quarantined with key %s; the source has no row with the corrected key.', q.row_key),
        HINT = 'Correct other columns only; fix the key on the source, and the next refresh applies it.';
    END IF;
  END LOOP;
  SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = target::regclass AND a.attnum > 0 AND NOT a.attisdropped;
  -- the release is a version of its own: the row carries it, not the version
  -- of the batch that held it back, and the row it replaces goes to history
  versioned := EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = target::regclass
                          AND a.attname = '_sluice_version' AND NOT a.attisdropped);
  IF versioned THEN
    hist := to_regclass(format('%I.%I', q.target_schema || '_history', q.target_table));
  END IF;
  IF cardinality(keys) > 0 THEN
    keymatch := (SELECT string_agg(format('t.%1$I = r.%1$I', k), ' AND ') FROM unnest(keys) k);
    replaced := sluice._exec_as_owner(q.pipeline_id,
                  format('SELECT EXISTS (SELECT FROM %1$s t, jsonb_populate_record(NULL::%1$s, $1) r WHERE %2$s)', target, keymatch),
                  newrow)::boolean;
  END IF;
  rel_version := sluice._release_version(q.pipeline_id, q.target_schema, q.target_table, replaced);
  stamped := CASE WHEN versioned THEN newrow || jsonb_build_object('_sluice_version', rel_version) ELSE newrow END;
  IF replaced AND hist IS NOT NULL THEN
    PERFORM sluice._exec_as_owner(q.pipeline_id,
              format('WITH d AS (DELETE FROM %1$s t USING jsonb_populate_record(NULL::%1$s, $1) r WHERE %2$s RETURNING t.*) '
                     'INSERT INTO %3$s (%4$s, _sluice_superseded) SELECT %4$s, %5$s FROM d', target, keymatch, hist, cols, rel_version),
              stamped);
  END IF;
  IF cardinality(keys) > 0 THEN
    PERFORM sluice._exec_as_owner(q.pipeline_id, format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1) ON CONFLICT (%s) DO UPDATE SET (%s) = ROW(%s)',
                   target, target, (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k), cols,
                   (SELECT string_agg(format('EXCLUDED.%I', a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_attribute a WHERE a.attrelid = target::regclass AND a.attnum > 0 AND NOT a.attisdropped)), stamped);
  ELSE
    PERFORM sluice._exec_as_owner(q.pipeline_id, format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1)', target, target), stamped);
  END IF;
  UPDATE sluice._quarantine SET status = 'released', resolved_at = now(), row_data = newrow
   WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id;
  RETURN true;
END
$$;

COMMENT ON FUNCTION sluice.release_quarantined(bigint, jsonb, boolean) IS
  'Writes a held row into its datamart table (as stored, or merged with a correction that gives the columns it changes), replacing the row with the same key; marks it released. A row superseded by a later change of its key is refused unless force.';

CREATE OR REPLACE FUNCTION sluice._version_ok(pipeline_id integer, version bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM sluice._version_check(pipeline_id, version);
  RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION sluice._make_at_functions(target regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $mk$
DECLARE
  t record;
  cols text;
BEGIN
  SELECT pt.* INTO t FROM sluice._pipeline_table pt
    JOIN pg_class c ON c.relname = pt.target_table
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = pt.target_schema
   WHERE c.oid = target;
  SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped;
  -- the bodies are quoted as literals (%L): schema and table names may hold
  -- quotes of either kind
  PERFORM sluice._exec_as_owner(t.pipeline_id, format($f$CREATE OR REPLACE FUNCTION %1$I.%3$I(version bigint) RETURNS SETOF %1$I.%2$I
                    LANGUAGE sql STABLE PARALLEL SAFE AS %4$L$f$,
                 t.target_schema, t.target_table, t.target_table || '_at',
                 format('SELECT %3$s FROM %1$I.%2$I WHERE _sluice_version <= $1 AND sluice._version_ok(%5$s, $1)
                         UNION ALL
                         SELECT %3$s FROM %4$I.%2$I WHERE _sluice_version <= $1 AND _sluice_superseded > $1
                            AND sluice._version_ok(%5$s, $1)',
                        t.target_schema, t.target_table, cols, t.target_schema || '_history', t.pipeline_id)), NULL);
  PERFORM sluice._exec_as_owner(t.pipeline_id, format($f$COMMENT ON FUNCTION %1$I.%2$I(bigint) IS %3$L$f$, t.target_schema, t.target_table || '_at',
                 format('pg_sluice: %I.%I as it was at a version (sluice.versions).', t.target_schema, t.target_table)), NULL);
  PERFORM sluice._exec_as_owner(t.pipeline_id, format($f$CREATE OR REPLACE FUNCTION %1$I.%3$I(at timestamptz) RETURNS SETOF %1$I.%2$I
                    LANGUAGE sql STABLE PARALLEL SAFE AS %4$L$f$,
                 t.target_schema, t.target_table, t.target_table || '_at_time',
                 format('SELECT * FROM %I.%I(sluice._version_at(%s, $1))',
                        t.target_schema, t.target_table || '_at', t.pipeline_id)), NULL);
  PERFORM sluice._exec_as_owner(t.pipeline_id, format($f$COMMENT ON FUNCTION %1$I.%2$I(timestamptz) IS %3$L$f$, t.target_schema, t.target_table || '_at_time',
                 format('pg_sluice: %I.%I as it was at a moment (the last version committed then).', t.target_schema, t.target_table)), NULL);
END
$mk$;

CREATE OR REPLACE FUNCTION sluice.keep_history(pipeline text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $kh$
DECLARE
  p record;
  t record;
  v0 bigint;
  hs name;
BEGIN
  p := sluice._pipeline_row(pipeline);
  IF p.keep_history THEN
    RAISE NOTICE 'pipeline "%" already keeps history from version %', pipeline, p.history_from;
    RETURN p.history_from;
  END IF;
  SELECT max(r.run_id) INTO v0 FROM sluice._run r WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded';
  FOR t IN SELECT * FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id LOOP
    IF cardinality(t.key_columns) = 0 THEN
      -- rows without a key cannot be told apart across versions
      RAISE NOTICE 'table %.% has no key (REPLICA IDENTITY FULL): no history is kept for it', t.target_schema, t.target_table;
      CONTINUE;
    END IF;
    hs := t.target_schema || '_history';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('ALTER TABLE %I.%I ADD COLUMN _sluice_version bigint NOT NULL DEFAULT %s',
                   t.target_schema, t.target_table, v0), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('ALTER TABLE %I.%I ALTER COLUMN _sluice_version DROP DEFAULT', t.target_schema, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON COLUMN %I.%I._sluice_version IS %L', t.target_schema, t.target_table,
                   'pg_sluice: version (sluice.versions) that wrote this row.'), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE SCHEMA IF NOT EXISTS %I', hs), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING COMMENTS)', hs, t.target_table, t.target_schema, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('ALTER TABLE %I.%I ADD COLUMN _sluice_superseded bigint NOT NULL', hs, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON COLUMN %I.%I._sluice_superseded IS %L', hs, t.target_table,
                   'pg_sluice: first version (sluice.versions) in which this row version no longer holds.'), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE INDEX ON %I.%I (_sluice_superseded)', hs, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON TABLE %I.%I IS %L', hs, t.target_table,
                   format('pg_sluice: superseded versions of %I.%I rows, valid for versions [_sluice_version, _sluice_superseded).',
                          t.target_schema, t.target_table)), NULL);
    PERFORM sluice._make_at_functions(format('%I.%I', t.target_schema, t.target_table)::regclass);
  END LOOP;
  UPDATE sluice._pipeline SET keep_history = true, history_from = v0 WHERE pipeline_id = p.pipeline_id;
  RETURN v0;
END
$kh$;

CREATE OR REPLACE FUNCTION sluice._version_check(pipeline_id integer, version bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p record;
  r record;
BEGIN
  SELECT * INTO p FROM sluice._pipeline WHERE _pipeline.pipeline_id = _version_check.pipeline_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'pipeline % does not exist', pipeline_id USING ERRCODE = 'undefined_object';
  END IF;
  IF NOT p.keep_history THEN
    RAISE EXCEPTION 'pipeline "%" keeps no history', p.name USING ERRCODE = 'object_not_in_prerequisite_state',
      HINT = format('Call sluice.keep_history(%L).', p.name);
  END IF;
  SELECT * INTO r FROM sluice._run WHERE run_id = version AND _run.pipeline_id = p.pipeline_id AND status = 'succeeded';
  IF version IS NULL OR NOT FOUND OR version < p.history_from THEN
    RAISE EXCEPTION 'version % of pipeline "%" is not kept', version, p.name USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('History starts at version %s; sluice.versions lists the versions.', p.history_from);
  END IF;
  IF r.history_purged THEN
    RAISE EXCEPTION 'version % of pipeline "%" was purged', version, p.name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'sluice.versions shows which versions can still be read (queryable).';
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION sluice._version_at(pipeline_id integer, at timestamptz)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT max(r.run_id) FROM sluice._run r JOIN sluice._pipeline p USING (pipeline_id)
   WHERE r.pipeline_id = _version_at.pipeline_id AND r.status = 'succeeded'
     AND r.run_id >= p.history_from AND r.finished_at <= at
$$;

CREATE OR REPLACE FUNCTION sluice.tag(pipeline text, name text, version bigint DEFAULT NULL)
RETURNS name
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p record;
  t record;
  v bigint := version;
  sch name;
  cols text;
BEGIN
  p := sluice._pipeline_row(pipeline, false);
  IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,30}$' THEN
    RAISE EXCEPTION 'invalid tag name "%"', name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Lower-case letters, digits and _, starting with a letter or _, at most 31 characters.';
  END IF;
  IF v IS NULL THEN
    SELECT max(r.run_id) INTO v FROM sluice._run r WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded';
  END IF;
  PERFORM sluice._version_check(p.pipeline_id, v);
  sch := p.name || '_' || name;
  IF EXISTS (SELECT 1 FROM sluice._tag tg WHERE tg.pipeline_id = p.pipeline_id AND tg.name = tag.name) THEN
    RAISE EXCEPTION 'tag "%" of pipeline "%" already exists', name, pipeline USING ERRCODE = 'duplicate_object',
      HINT = 'sluice.untag() it first.';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = sch) THEN
    RAISE EXCEPTION 'schema "%" already exists', sch USING ERRCODE = 'duplicate_schema';
  END IF;
  PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE SCHEMA %I', sch), NULL);
  PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON SCHEMA %I IS %L', sch, format('pg_sluice: pipeline %s pinned at version %s (tag %s).', p.name, v, name)), NULL);
  FOR t IN SELECT * FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id
              AND cardinality(pt.key_columns) > 0 LOOP
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
       AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE VIEW %I.%I AS SELECT %s FROM %I.%I(%s)', sch, t.target_table, cols,
                   t.target_schema, t.target_table || '_at', v), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON VIEW %I.%I IS %L', sch, t.target_table,
                   format('%I.%I at version %s (tag %s).', t.target_schema, t.target_table, v, name)), NULL);
    -- BI tools show column comments as descriptions: the table's own
    EXECUTE coalesce((SELECT string_agg(format('COMMENT ON COLUMN %I.%I.%I IS %L', sch, t.target_table, a.attname,
                                               col_description(a.attrelid, a.attnum)), '; ')
                        FROM pg_attribute a
                       WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
                         AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version'
                         AND col_description(a.attrelid, a.attnum) IS NOT NULL), 'SELECT');
  END LOOP;
  INSERT INTO sluice._tag (pipeline_id, name, version, schema_name) VALUES (p.pipeline_id, name, v, sch);
  RETURN sch;
END
$$;

CREATE OR REPLACE FUNCTION sluice.untag(pipeline text, name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tg record;
BEGIN
  SELECT tg2.* INTO tg FROM sluice._tag tg2 JOIN sluice._pipeline p USING (pipeline_id)
   WHERE p.name = pipeline AND tg2.name = untag.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'tag "%" of pipeline "%" does not exist', name, pipeline USING ERRCODE = 'undefined_object';
  END IF;
  PERFORM sluice._exec_as_owner(tg.pipeline_id, format('DROP SCHEMA %I CASCADE', tg.schema_name), NULL);
  DELETE FROM sluice._tag WHERE pipeline_id = tg.pipeline_id AND _tag.name = tg.name;
  RETURN true;
END
$$;

CREATE FUNCTION sluice._history_of(target regclass,
    OUT pipeline_id integer, OUT key_columns text[], OUT at_function text)
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  SELECT pt.pipeline_id, pt.key_columns, format('%I.%I', pt.target_schema, pt.target_table || '_at')
    INTO pipeline_id, key_columns, at_function
    FROM sluice._pipeline_table pt
    JOIN pg_class c ON c.relname = pt.target_table
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = pt.target_schema
   WHERE c.oid = target;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'table % is not fed by a pg_sluice pipeline', target USING ERRCODE = 'undefined_object',
      HINT = 'sluice.pipeline_tables lists the datamart tables pg_sluice feeds.';
  END IF;
END
$$;

COMMENT ON FUNCTION sluice._history_of(regclass) IS
  'Private: the pipeline, key and time-travel function of a datamart table (for sluice.diff, run by readers).';

CREATE OR REPLACE FUNCTION sluice.diff(target regclass, from_version bigint, to_version bigint,
    OUT change text, OUT key jsonb, OUT before jsonb, OUT after jsonb)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  h record;
  keyexpr text;
BEGIN
  -- runs as the caller: it reads the table's versions with the caller's rights
  IF NOT has_table_privilege(target, 'SELECT') THEN
    RAISE EXCEPTION 'permission denied for table %', target USING ERRCODE = 'insufficient_privilege',
      HINT = 'sluice.diff reads the table''s versions: it needs SELECT on the table and its history table.';
  END IF;
  h := sluice._history_of(target);
  PERFORM sluice._version_check(h.pipeline_id, from_version);
  PERFORM sluice._version_check(h.pipeline_id, to_version);
  IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = target AND a.attname = '_sluice_version' AND NOT a.attisdropped) THEN
    RAISE EXCEPTION 'no history is kept for %', target USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = 'Tables without a key keep no history.';
  END IF;
  -- Each side is reduced to (k, j): its key and its row as jsonb, read
  -- through qualified column references only, so no column name (a, b, k,
  -- j, key...) can be mistaken for an alias.
  IF cardinality(h.key_columns) > 0 THEN
    keyexpr := format('jsonb_build_object(%s)',
                      (SELECT string_agg(format('%L, r.%I', k, k), ', ') FROM unnest(h.key_columns) k));
  ELSE
    keyexpr := 'to_jsonb(r.*) - ''_sluice_version''';
  END IF;
  RETURN QUERY EXECUTE format(
    'SELECT CASE WHEN f.k IS NULL THEN ''added'' WHEN t.k IS NULL THEN ''removed'' ELSE ''changed'' END,
            CASE WHEN %5$s THEN coalesce(t.k, f.k) END, f.j, t.j
       FROM (SELECT %1$s AS k, to_jsonb(r.*) - ''_sluice_version'' AS j FROM %2$s(%3$s) r) f
       FULL JOIN (SELECT %1$s AS k, to_jsonb(r.*) - ''_sluice_version'' AS j FROM %2$s(%4$s) r) t ON f.k = t.k
      WHERE f.k IS NULL OR t.k IS NULL OR f.j IS DISTINCT FROM t.j',
    keyexpr, h.at_function, from_version, to_version,
    CASE WHEN cardinality(h.key_columns) > 0 THEN 'true' ELSE 'false' END);
END
$$;

CREATE OR REPLACE FUNCTION sluice.purge_history(pipeline text, keep_last integer DEFAULT NULL, keep_for interval DEFAULT NULL,
    OUT target text, OUT rows_purged bigint, OUT bytes_purged bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p record;
  t record;
  kept bigint[];
  res text;
BEGIN
  p := sluice._pipeline_row(pipeline);
  IF NOT p.keep_history THEN
    RAISE EXCEPTION 'pipeline "%" keeps no history', pipeline USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  IF keep_last IS NULL AND keep_for IS NULL THEN
    RAISE EXCEPTION 'say what to keep: keep_last, keep_for or both' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF keep_last < 1 THEN
    RAISE EXCEPTION 'keep_last must be at least 1' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- kept: the last N, the young, every tagged version, and always the latest
  SELECT array_agg(v.run_id) INTO kept FROM (
    SELECT r.run_id, row_number() OVER (ORDER BY r.run_id DESC) AS n, r.finished_at
      FROM sluice._run r
     WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded' AND r.run_id >= p.history_from
       AND NOT r.history_purged) v
   WHERE v.n = 1 OR v.n <= coalesce(keep_last, 0) OR v.finished_at >= now() - keep_for
      OR v.run_id IN (SELECT tg.version FROM sluice._tag tg WHERE tg.pipeline_id = p.pipeline_id);
  FOR t IN SELECT * FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id
              AND cardinality(pt.key_columns) > 0 LOOP
    target := format('%I.%I', t.target_schema, t.target_table);
    -- as the owner (a trigger on the history table never runs with the caller's rights)
    res := sluice._exec_as_owner(p.pipeline_id,
             format('WITH d AS (DELETE FROM %I.%I h WHERE NOT EXISTS (
                                  SELECT 1 FROM pg_catalog.jsonb_array_elements_text($1) k
                                   WHERE h._sluice_version <= k::bigint AND k::bigint < h._sluice_superseded)
                                RETURNING pg_catalog.pg_column_size(h.*) AS sz)
                     SELECT count(*) || '' '' || coalesce(sum(sz), 0) FROM d', t.target_schema || '_history', t.target_table),
             to_jsonb(kept));
    rows_purged := split_part(res, ' ', 1)::bigint;
    bytes_purged := split_part(res, ' ', 2)::bigint;
    RETURN NEXT;
  END LOOP;
  UPDATE sluice._run r SET history_purged = true
   WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded' AND r.run_id >= p.history_from
     AND NOT (r.run_id = ANY (kept));
END
$$;

CREATE OR REPLACE FUNCTION sluice._event_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['refresh_started', 'refresh_completed', 'refresh_failed', 'pipeline_paused', 'contract_drift',
             'expectation_failed', 'quarantine', 'slot_lag', 'divergence', 'verification'];

CREATE FUNCTION sluice._announce_failure(pipeline text, body jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'sluice_announce_failure'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION sluice._announce_failure(text, jsonb) IS
  'Private: queue the event of a failed refresh (called by sluice.refresh over its own connection, so the event survives the rollback).';

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

-------------------------------------------------------------------------------
-- 4. Row security and privileges (every GRANT and REVOKE of 0.2: the views are
--    new objects, and so are the new functions)
-------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION sluice.drop_column(regclass, name, boolean), sluice.accept_type_change(regclass, name, text, text),
  sluice._contract_changed(regclass, text, text), sluice._alter_target(regclass, text),
  sluice._contract_column_of(regclass, name, text), sluice._type_name(text), sluice._one_expression(text),
  sluice._contract_json(integer, text, text, integer) FROM PUBLIC;
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
REVOKE ALL ON FUNCTION sluice._operator_grants(regrole, text), sluice.grant_operator(regrole),
    sluice.revoke_operator(regrole), sluice.alter_pipeline_owner(text, regrole),
    sluice._announce_failure(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice._version_ok(integer, bigint), sluice._version_check(integer, bigint),
    sluice._version_at(integer, timestamptz), sluice._history_of(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sluice._version_ok(integer, bigint), sluice._version_check(integer, bigint),
    sluice._version_at(integer, timestamptz), sluice._history_of(regclass) TO PUBLIC;

-------------------------------------------------------------------------------
-- 5. Data: expectations' bound trees, quarantine keys
-------------------------------------------------------------------------------

-- (pipeline owners were set in step 2)
CREATE FUNCTION sluice._upgrade_0_1_data()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  e record;
  t record;
  target regclass;
  keys text[];
BEGIN
  -- 0.1 stored an expectation's text and parsed it at every batch; 0.2
  -- binds it once, when declared, with sluice._compile_predicate or
  -- sluice._compile_check in add_expectation's search_path (pg_catalog,
  -- as here).  The text 0.1's add_expectation generated is the text 0.2's
  -- generates, so the trees are those a declaration under 0.2 stores.
  FOR e IN SELECT x.expectation_id, x.name, x.predicate, x.check_sql, pt.target_schema, pt.target_table
             FROM sluice._expectation x
             JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table)
            ORDER BY x.expectation_id LOOP
    target := to_regclass(format('%I.%I', e.target_schema, e.target_table));
    BEGIN
      IF target IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(e.target_schema), quote_ident(e.target_table);
      END IF;
      IF e.predicate IS NOT NULL THEN
        UPDATE sluice._expectation SET predicate_tree = sluice._compile_predicate(target, e.predicate)
         WHERE expectation_id = e.expectation_id;
      ELSE
        UPDATE sluice._expectation SET check_tree = sluice._compile_check(target, e.check_sql)
         WHERE expectation_id = e.expectation_id;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      RAISE EXCEPTION 'expectation "%" of %.% cannot be bound for pg_sluice 0.2: %', e.name,
            quote_ident(e.target_schema), quote_ident(e.target_table), SQLERRM
        USING ERRCODE = 'invalid_object_definition',
              HINT = 'It no longer fits its table (0.1 failed every refresh with it too): drop it with sluice.drop_expectation() and update again.';
    END;
  END LOOP;

  -- The quarantine ledger: each entry's key as 0.2's apply writes it (the
  -- key columns' text values, or every column's for a table without a
  -- key), read from the row as it was held.
  FOR t IN SELECT DISTINCT q.pipeline_id, q.target_schema, q.target_table, pt.key_columns
             FROM sluice._quarantine q
             JOIN sluice._pipeline_table pt
               ON (pt.pipeline_id, pt.target_schema, pt.target_table) = (q.pipeline_id, q.target_schema, q.target_table) LOOP
    target := to_regclass(format('%I.%I', t.target_schema, t.target_table));
    CONTINUE WHEN target IS NULL;
    keys := CASE WHEN cardinality(t.key_columns) > 0 THEN t.key_columns::text[]
                 ELSE ARRAY(SELECT a.attname::text FROM pg_attribute a
                             WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped
                               AND a.attname <> '_sluice_version' ORDER BY a.attnum) END;
    EXECUTE format('UPDATE sluice._quarantine q SET row_key = (SELECT pg_catalog.jsonb_build_object(%s)
                      FROM pg_catalog.jsonb_populate_record(NULL::%s, q.row_data) r)
                     WHERE q.pipeline_id = $1 AND q.target_schema = $2 AND q.target_table = $3',
                   (SELECT string_agg(format('%L, r.%I::text', k, k), ', ') FROM unnest(keys) k), target)
      USING t.pipeline_id, t.target_schema, t.target_table;
  END LOOP;

  -- A key held more than once under 0.1 has several open entries; 0.2
  -- keeps one, the latest: the others are superseded by the next one.
  UPDATE sluice._quarantine q
     SET status = CASE WHEN q.status = 'held' THEN 'superseded' ELSE q.status END,
         resolved_at = CASE WHEN q.status = 'held' THEN now() ELSE q.resolved_at END,
         superseded_by = n.next_id, superseded_how = 'quarantined',
         superseded_xid = n.next_xid, superseded_lsn = n.next_lsn
    FROM (SELECT x.quarantine_id,
                 lead(x.quarantine_id) OVER w AS next_id,
                 lead(x.source_xid) OVER w AS next_xid,
                 lead(x.source_lsn) OVER w AS next_lsn
            FROM sluice._quarantine x
           WHERE x.status IN ('held', 'discarded') AND x.row_key IS NOT NULL
          WINDOW w AS (PARTITION BY x.pipeline_id, x.target_schema, x.target_table, x.row_key
                       ORDER BY x.quarantine_id)) n
   WHERE q.quarantine_id = n.quarantine_id AND n.next_id IS NOT NULL;
END
$$;
SELECT sluice._upgrade_0_1_data();
DROP FUNCTION sluice._upgrade_0_1_data();

-- sluice.metrics (new in 0.2)
-- Metrics in Prometheus terms: one row per pipeline, a column per metric,
-- named as Prometheus names them (base units, _total for counters).  Read by
-- monitoring/postgres_exporter.yaml through prometheus-postgres-exporter.
-- Counters are sums over the runs kept: sluice.purge_runs() lowers them,
-- which Prometheus reads as a counter reset (rate() and increase() handle it).
CREATE VIEW sluice.metrics AS
SELECT s.pipeline,
       s.mode,
       s.state,
       (s.state OPERATOR(pg_catalog.=) 'paused')::int AS paused,
       (s.state OPERATOR(pg_catalog.=) 'error')::int AS failing,
       COALESCE(r.runs, 0) AS runs_total,
       COALESCE(r.runs_failed, 0) AS runs_failed_total,
       COALESCE(r.runs_paused, 0) AS runs_paused_total,
       COALESCE(r.transactions, 0) AS transactions_total,
       COALESCE(r.rows_inserted, 0) AS rows_inserted_total,
       COALESCE(r.rows_updated, 0) AS rows_updated_total,
       COALESCE(r.rows_deleted, 0) AS rows_deleted_total,
       COALESCE(s.rows_missing, 0) AS rows_missing_total,
       pg_catalog.date_part('epoch', s.last_success_at) AS last_success_timestamp_seconds,
       pg_catalog.date_part('epoch', s.staleness) AS staleness_seconds,
       s.lag_bytes,
       s.lag_seconds,
       s.retained_wal_bytes,
       s.retained_wal_warning::int AS retained_wal_warning,
       COALESCE(q.evaluated, 0) AS expectation_rows_evaluated_total,
       COALESCE(q.failed, 0) AS expectation_failures_total,
       COALESCE(f.failing, 0) AS expectations_failing,
       COALESCE(h.held, 0) AS quarantine_rows
  FROM sluice.status s
  JOIN sluice._pipeline p ON p.name OPERATOR(pg_catalog.=) s.pipeline
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) AS runs,
              pg_catalog.count(*) FILTER (WHERE status OPERATOR(pg_catalog.=) 'failed') AS runs_failed,
              pg_catalog.count(*) FILTER (WHERE status OPERATOR(pg_catalog.=) 'paused') AS runs_paused,
              pg_catalog.sum(transactions) AS transactions,
              pg_catalog.sum(rows_inserted) AS rows_inserted,
              pg_catalog.sum(rows_updated) AS rows_updated,
              pg_catalog.sum(rows_deleted) AS rows_deleted
         FROM sluice._run
        WHERE pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id) r ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.sum(er.evaluated) AS evaluated,
              pg_catalog.sum(er.failed) AS failed
         FROM sluice._expectation_result er
         JOIN sluice._expectation e USING (expectation_id)
        WHERE e.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id) q ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) FILTER (WHERE NOT z.success) AS failing
         FROM (SELECT DISTINCT ON (er.expectation_id) er.success
                 FROM sluice._expectation_result er
                 JOIN sluice._expectation e USING (expectation_id)
                WHERE e.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
                ORDER BY er.expectation_id, er.run_id DESC) z) f ON true
  LEFT JOIN LATERAL (
       SELECT pg_catalog.count(*) AS held FROM sluice._quarantine
        WHERE pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
          AND status OPERATOR(pg_catalog.=) 'held') h ON true;
COMMENT ON VIEW sluice.metrics IS 'One row per pipeline, a column per metric in Prometheus terms (monitoring/postgres_exporter.yaml serves it through prometheus-postgres-exporter); readable by pg_monitor.';
COMMENT ON COLUMN sluice.metrics.pipeline IS 'Label: Pipeline name.';
COMMENT ON COLUMN sluice.metrics.mode IS 'Label: continuous (a background worker streams it) or scheduled (sluice.refresh).';
COMMENT ON COLUMN sluice.metrics.state IS 'running, starting, error, paused or stopped (sluice.status.state); not exported (a changing label starts a new series): see paused and failing.';
COMMENT ON COLUMN sluice.metrics.paused IS 'Gauge: 1 if the pipeline is paused (drift or an error expectation) and applies nothing until sluice.resume().';
COMMENT ON COLUMN sluice.metrics.failing IS 'Gauge: 1 if the continuous worker is failing and retrying (sluice.status.last_error).';
COMMENT ON COLUMN sluice.metrics.runs_total IS 'Counter: Runs recorded (initial copies, refreshes, continuous batches).';
COMMENT ON COLUMN sluice.metrics.runs_failed_total IS 'Counter: Runs that failed.';
COMMENT ON COLUMN sluice.metrics.runs_paused_total IS 'Counter: Runs that paused the pipeline.';
COMMENT ON COLUMN sluice.metrics.transactions_total IS 'Counter: Source transactions applied.';
COMMENT ON COLUMN sluice.metrics.rows_inserted_total IS 'Counter: Rows inserted into the datamart.';
COMMENT ON COLUMN sluice.metrics.rows_updated_total IS 'Counter: Rows updated in the datamart.';
COMMENT ON COLUMN sluice.metrics.rows_deleted_total IS 'Counter: Rows deleted from the datamart.';
COMMENT ON COLUMN sluice.metrics.rows_missing_total IS 'Counter: Updates and deletes that found no row in the datamart (divergence from the source).';
COMMENT ON COLUMN sluice.metrics.last_success_timestamp_seconds IS 'Gauge: When the last successful run committed (Unix time).';
COMMENT ON COLUMN sluice.metrics.staleness_seconds IS 'Gauge: Seconds since the last successful run committed.';
COMMENT ON COLUMN sluice.metrics.lag_bytes IS 'Gauge: Source WAL not yet applied, when last measured.';
COMMENT ON COLUMN sluice.metrics.lag_seconds IS 'Gauge: Age of the last applied source commit when last measured, if behind; 0 when caught up.';
COMMENT ON COLUMN sluice.metrics.retained_wal_bytes IS 'Gauge: WAL the pipeline''s replication slot keeps on the source.';
COMMENT ON COLUMN sluice.metrics.retained_wal_warning IS 'Gauge: 1 when retained_wal_bytes is past pg_sluice.max_retained_wal.';
COMMENT ON COLUMN sluice.metrics.expectation_rows_evaluated_total IS 'Counter: Rows (or values) checked by expectations.';
COMMENT ON COLUMN sluice.metrics.expectation_failures_total IS 'Counter: Rows (or values) that failed an expectation.';
COMMENT ON COLUMN sluice.metrics.expectations_failing IS 'Gauge: Expectations whose latest result is a failure.';
COMMENT ON COLUMN sluice.metrics.quarantine_rows IS 'Gauge: Rows held in quarantine (sluice.quarantine, status held).';
REVOKE ALL ON sluice.metrics FROM PUBLIC;
GRANT SELECT ON sluice.metrics TO pg_monitor;

-- set_drift_policy: a NULL argument is an error, not a silent NULL (not STRICT)
CREATE OR REPLACE FUNCTION sluice.set_drift_policy(target regclass, policy text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  old text;
BEGIN
  PERFORM sluice._require_arguments('sluice.set_drift_policy', ARRAY['target', 'policy'], ARRAY[target IS NULL, policy IS NULL], 'Name a datamart table pg_sluice feeds (sluice.contracts) and a policy: freeze, evolve or ignore.');
  IF policy NOT IN ('freeze', 'evolve', 'ignore') THEN
    RAISE EXCEPTION 'unknown drift policy "%"', policy USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'freeze: any incompatible change on the source pauses the pipeline; evolve: new source columns are added to the datamart table; ignore: new source columns are left out.',
      HINT = 'Use freeze, evolve or ignore.';
  END IF;
  t := sluice._contract_table(target, true);
  SELECT pt.drift_policy INTO old FROM sluice._pipeline_table pt
   WHERE (pt.pipeline_id, pt.source_schema, pt.source_table) = (t.pipeline_id, t.source_schema, t.source_table);
  UPDATE sluice._pipeline_table pt SET drift_policy = policy
   WHERE (pt.pipeline_id, pt.source_schema, pt.source_table) = (t.pipeline_id, t.source_schema, t.source_table);
  RETURN old;
END
$$;

-- contract versions published as stable interfaces (new in 0.2)
-------------------------------------------------------------------------------
-- Stable interfaces: a contract version of a datamart table published as a
-- view, kept reading that version's columns and types while the contract
-- moves on; expectations re-bound when the contract changes.
--
-- Readers of an interface need SELECT on the view only (and USAGE on its
-- schema): the view is owned by the pipeline's owner and reads the table
-- with the owner's rights (not security_invoker), so the datamart table
-- itself stays closed to them.  It filters no rows, so security_barrier
-- would protect nothing.  A value written after a column was widened is
-- cast back to the version's type only when that type holds it exactly;
-- otherwise reading it raises an error naming the interface and column
-- (never a silent truncation, rounding or NULL).
-------------------------------------------------------------------------------

CREATE TABLE sluice._published_contract (
    pipeline_id      integer NOT NULL,
    source_schema    text NOT NULL,
    source_table     text NOT NULL,
    contract_version integer NOT NULL,
    schema_name      name NOT NULL,
    view_name        name NOT NULL,
    schema_created   boolean NOT NULL DEFAULT false,
    acl              aclitem[],
    published_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    published_by     name NOT NULL DEFAULT CURRENT_USER,
    PRIMARY KEY (schema_name, view_name),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
CREATE INDEX ON sluice._published_contract (pipeline_id, source_schema, source_table);
COMMENT ON TABLE sluice._published_contract IS
  'Private: contract versions published as views (sluice.publish_contract); acl keeps the grants on a view while it is rebuilt.';
ALTER TABLE sluice._published_contract ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._published_contract
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE FUNCTION sluice._require_arguments(caller text, names text[], missing boolean[], hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  nulls text[] := ARRAY(SELECT n FROM unnest(names, missing) AS a(n, m) WHERE m);
BEGIN
  IF cardinality(nulls) > 0 THEN
    RAISE EXCEPTION '% needs %, not NULL', caller, array_to_string(nulls, ' and ')
      USING ERRCODE = 'null_value_not_allowed',
      HINT = coalesce(hint, 'sluice.contracts lists the tables and columns pg_sluice feeds.');
  END IF;
END
$$;
COMMENT ON FUNCTION sluice._require_arguments(text, text[], boolean[], text) IS
  'Private: an error naming the arguments a function was given as NULL.';

CREATE FUNCTION sluice._does_not_fit(interface text, column_name text, value text, type_name text,
    version integer)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cat "char" := (SELECT t.typcategory FROM pg_type t WHERE t.oid = (SELECT to_regtype(type_name)));
BEGIN
  RAISE EXCEPTION 'column "%" of % cannot show a value as %', column_name, interface, type_name
    USING ERRCODE = CASE cat WHEN 'S' THEN 'string_data_right_truncation'
                             WHEN 'N' THEN 'numeric_value_out_of_range' ELSE 'data_exception' END,
    DETAIL = format('The interface shows contract version %s, where the column is %s; the value %s, written since the column was widened, does not fit it exactly.',
                    version, type_name, CASE WHEN length(value) > 60 THEN left(value, 60) || '...' ELSE value END),
    HINT = 'Read it through an interface of a newer contract version (sluice.publish_contract into another schema).';
END
$$;
COMMENT ON FUNCTION sluice._does_not_fit(text, text, text, text, integer) IS
  'Private: the error a published interface raises for a value its contract version''s type cannot hold exactly.';

CREATE FUNCTION sluice._interface_column(x text, old_type text, cur_type oid, cur_typmod integer,
    label text, column_name name, version integer)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  old_oid oid := old_type::regtype::oid;
  cur text := format_type(cur_type, cur_typmod);
  conv text := x;
  pre text;
  same text;
  err text;
  nm text[];
BEGIN
  -- old_type is a canonical type name recorded by pg_sluice (format_type)
  IF cur = old_type THEN
    RETURN x;
  END IF;
  err := format('sluice._does_not_fit(%L, %L, %s::text, %L, %s)::%s', label, column_name, x, old_type, version, old_type);
  IF old_oid = 'timestamp'::regtype AND cur_type = 'timestamptz'::regtype THEN
    -- evolve read the old values in UTC (apply.c): the exact inverse
    conv := format('(%s AT TIME ZONE ''UTC'')', x);
    cur := 'timestamp without time zone';
  ELSIF NOT (old_oid = cur_type
             OR EXISTS (SELECT 1 FROM pg_cast c WHERE c.castsource = cur_type AND c.casttarget = old_oid)
             OR (SELECT t.typcategory FROM pg_type t WHERE t.oid = old_oid) = 'S'
             OR (SELECT t.typcategory FROM pg_type t WHERE t.oid = cur_type) = 'S') THEN
    conv := format('(%s)::text', x);
    cur := 'text';
  END IF;
  IF old_oid IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
     AND cur_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype,
                      'real'::regtype, 'double precision'::regtype) THEN
    pre := format('%s BETWEEN %s AND %s', conv,
                  CASE old_oid WHEN 'smallint'::regtype THEN '-32768' WHEN 'integer'::regtype THEN '-2147483648'
                               ELSE '-9223372036854775808' END,
                  CASE old_oid WHEN 'smallint'::regtype THEN '32767' WHEN 'integer'::regtype THEN '2147483647'
                               ELSE '9223372036854775807' END);
  ELSIF old_oid = 'numeric'::regtype AND old_type ~ '^numeric\(\d+,\d+\)$' THEN
    nm := regexp_match(old_type, '^numeric\((\d+),(\d+)\)$');
    pre := format('abs(round((%s)::numeric, %s)) < 10::numeric ^ %s', conv, nm[2], nm[1]::int - nm[2]::int);
  END IF;
  -- exact: cast back to the type it is now, it is the same value
  IF (SELECT t.typcategory FROM pg_type t WHERE t.oid = old_oid) = 'S'
     OR NOT EXISTS (SELECT 1 FROM pg_operator o WHERE o.oprname = '=' AND o.oprleft = cur_type AND o.oprright = cur_type)
     OR conv <> x THEN
    same := format('(%1$s)::%2$s::text = (%1$s)::text', conv, old_type);
  ELSE
    same := format('(%1$s)::%2$s::%3$s = %1$s', conv, old_type, cur);
  END IF;
  RETURN format('(CASE WHEN %1$s IS NULL THEN NULL::%2$s %3$s WHEN %4$s THEN (%1$s)::%2$s ELSE %5$s END)::%2$s',
                conv, old_type, CASE WHEN pre IS NOT NULL THEN format('WHEN NOT (%s) THEN %s', pre, err) ELSE '' END,
                same, err);
END
$$;
COMMENT ON FUNCTION sluice._interface_column(text, text, oid, integer, text, name, integer) IS
  'Private: the expression an interface reads a column with, cast back to its contract version''s type where that type holds the value exactly.';

CREATE FUNCTION sluice._build_interface(target regclass, pc sluice._published_contract)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  label text := format('%I.%I', pc.schema_name, pc.view_name);
  tnsp name;
  trel name;
  cols text;
  cur_acl aclitem[];
  g record;
BEGIN
  SELECT n.nspname, c.relname INTO tnsp, trel
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = target;
  -- the columns of that version, matched by attribute number: a column keeps
  -- it through renames and type changes, and a dropped one never returns
  -- (types through sluice._type_name: a canonical name, whatever the catalog row says)
  SELECT string_agg(CASE WHEN a.attnum IS NULL THEN format('NULL::%s AS %I', sluice._type_name(cc.data_type), cc.column_name)
                         ELSE sluice._interface_column(format('t.%I', a.attname), sluice._type_name(cc.data_type), a.atttypid,
                                                       a.atttypmod, label, cc.column_name, pc.contract_version)
                              || format(' AS %I', cc.column_name) END,
                    ', ' ORDER BY cc.position)
    INTO cols
    FROM sluice._contract_column cc
    LEFT JOIN pg_attribute a ON a.attrelid = target AND a.attnum = cc.position AND NOT a.attisdropped
   WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
         = (pc.pipeline_id, pc.source_schema, pc.source_table, pc.contract_version);
  IF cols IS NULL THEN
    RAISE EXCEPTION 'contract version % of % has no columns', pc.contract_version, target
      USING ERRCODE = 'invalid_parameter_value', HINT = 'sluice.contract_diff shows the versions.';
  END IF;
  SELECT c.relacl INTO cur_acl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = pc.schema_name AND c.relname = pc.view_name AND c.relkind = 'v';
  IF FOUND THEN
    pc.acl := cur_acl;
    PERFORM sluice._exec_as_owner(pc.pipeline_id, format('DROP VIEW %I.%I', pc.schema_name, pc.view_name), NULL);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = pc.schema_name) THEN
    PERFORM sluice._exec_as_owner(pc.pipeline_id, format('CREATE SCHEMA %I', pc.schema_name), NULL);
  END IF;
  PERFORM sluice._exec_as_owner(pc.pipeline_id, format('CREATE VIEW %I.%I AS SELECT %s FROM %I.%I t',
                                pc.schema_name, pc.view_name, cols, tnsp, trel), NULL);
  PERFORM sluice._exec_as_owner(pc.pipeline_id, format('COMMENT ON VIEW %I.%I IS %L', pc.schema_name, pc.view_name,
      format('pg_sluice: %I.%I as contract version %s declares it (sluice.published_contracts).',
             tnsp, trel, pc.contract_version)), NULL);
  -- BI tools show column comments as descriptions: the table's own, or what the column is
  FOR g IN SELECT cc.column_name,
                  coalesce(col_description(target, a.attnum),
                           format('%s as contract version %s of %I.%I declares it: %s.', cc.column_name,
                                  pc.contract_version, tnsp, trel, cc.data_type)) AS description
             FROM sluice._contract_column cc
             LEFT JOIN pg_attribute a ON a.attrelid = target AND a.attnum = cc.position AND NOT a.attisdropped
            WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
                  = (pc.pipeline_id, pc.source_schema, pc.source_table, pc.contract_version) LOOP
    PERFORM sluice._exec_as_owner(pc.pipeline_id, format('COMMENT ON COLUMN %I.%I.%I IS %L', pc.schema_name, pc.view_name,
                                  g.column_name, g.description), NULL);
  END LOOP;
  -- the grants it had, given again by its owner
  FOR g IN SELECT x.privilege_type, x.is_grantable,
                  CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS who
             FROM aclexplode(pc.acl) x LEFT JOIN pg_roles r ON r.oid = x.grantee
            WHERE (x.grantee = 0 OR r.oid IS NOT NULL)
              AND x.grantee <> (SELECT p.owner::oid FROM sluice._pipeline p WHERE p.pipeline_id = pc.pipeline_id) LOOP
    PERFORM sluice._exec_as_owner(pc.pipeline_id, format('GRANT %s ON %I.%I TO %s%s', g.privilege_type,
                                  pc.schema_name, pc.view_name, g.who,
                                  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), NULL);
  END LOOP;
  UPDATE sluice._published_contract p SET acl = pc.acl
   WHERE (p.schema_name, p.view_name) = (pc.schema_name, pc.view_name) AND p.acl IS DISTINCT FROM pc.acl;
END
$$;
COMMENT ON FUNCTION sluice._build_interface(regclass, sluice._published_contract) IS
  'Private: (re)creates a published interface''s view as the pipeline owner, keeping its grants.';

CREATE FUNCTION sluice._interfaces_detach(target regclass)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  pc record;
  cnt integer := 0;
BEGIN
  -- before the datamart table is altered (a view pins its columns' types):
  -- the views go, their grants kept; sluice._contract_settled rebuilds them
  t := sluice._contract_table(target);
  FOR pc IN SELECT p.*, c.relacl AS cur_acl
              FROM sluice._published_contract p
              JOIN pg_namespace n ON n.nspname = p.schema_name
              JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.view_name AND c.relkind = 'v'
             WHERE (p.pipeline_id, p.source_schema, p.source_table) = (t.pipeline_id, t.source_schema, t.source_table) LOOP
    UPDATE sluice._published_contract p SET acl = pc.cur_acl
     WHERE (p.schema_name, p.view_name) = (pc.schema_name, pc.view_name);
    PERFORM sluice._exec_as_owner(pc.pipeline_id, format('DROP VIEW %I.%I', pc.schema_name, pc.view_name), NULL);
    cnt := cnt + 1;
  END LOOP;
  RETURN cnt;
END
$$;
COMMENT ON FUNCTION sluice._interfaces_detach(regclass) IS
  'Private: drops the published views of a table about to be altered, keeping their grants for the rebuild.';

CREATE FUNCTION sluice._rebind_expectations(target regclass)
RETURNS TABLE (expectation_id integer, predicate_tree pg_node_tree, check_tree pg_node_tree)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  e record;
  msg text;
BEGIN
  -- each expectation's bound tree, derived again from its stored text
  -- (generated at declaration from the GX arguments, or the user's
  -- predicate) against the table as it is now; compiled as the pipeline's
  -- owner, as a refresh would run it
  t := sluice._contract_table(target);
  FOR e IN SELECT x.expectation_id, x.name, x.pipeline_id, x.predicate, x.check_sql,
                  format('%I.%I', pt.target_schema, pt.target_table) AS etarget
             FROM sluice._expectation x
             JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table)
            WHERE (x.pipeline_id, x.source_schema, x.source_table) = (t.pipeline_id, t.source_schema, t.source_table)
               OR (x.kind = 'expect_column_values_to_be_in_table'
                   AND to_regclass(x.args->>'table') = target)
            ORDER BY x.expectation_id LOOP
    BEGIN
      PERFORM sluice._exec_as_owner(e.pipeline_id,
        'UPDATE sluice._expectation x SET predicate_tree = CASE WHEN x.predicate IS NOT NULL
                THEN sluice._compile_predicate(($1->>''target'')::regclass, x.predicate) END,
                check_tree = CASE WHEN x.check_sql IS NOT NULL
                THEN sluice._compile_check(($1->>''target'')::regclass, x.check_sql) END
          WHERE x.expectation_id = ($1->>''id'')::integer',
        jsonb_build_object('target', e.etarget, 'id', e.expectation_id));
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
      RAISE EXCEPTION 'expectation "%" of % does not fit the new contract of %', e.name, e.etarget, target
        USING ERRCODE = 'dependent_objects_still_exist',
        DETAIL = format('Declared over the contract as it was, it no longer binds: %s.', msg),
        HINT = format('Drop it first with sluice.drop_expectation(%L, %L), make the change, then declare it again for the new contract.',
                      e.etarget, e.name);
    END;
    RETURN QUERY SELECT x.expectation_id, x.predicate_tree, x.check_tree
                   FROM sluice._expectation x WHERE x.expectation_id = e.expectation_id;
  END LOOP;
END
$$;
COMMENT ON FUNCTION sluice._rebind_expectations(regclass) IS
  'Private: binds a table''s expectations (and foreign-key expectations pointing to it) again after its contract changed; an error names the one that no longer fits.';

CREATE FUNCTION sluice._contract_settled(target regclass)
RETURNS TABLE (expectation_id integer, predicate_tree pg_node_tree, check_tree pg_node_tree)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  pc sluice._published_contract;
BEGIN
  -- called once a new contract version of target is current, in the same
  -- transaction: by sluice._contract_changed and by the apply (apply.c)
  t := sluice._contract_table(target);
  FOR pc IN SELECT * FROM sluice._published_contract p
             WHERE (p.pipeline_id, p.source_schema, p.source_table) = (t.pipeline_id, t.source_schema, t.source_table)
             ORDER BY p.schema_name, p.view_name LOOP
    PERFORM sluice._build_interface(target, pc);
  END LOOP;
  RETURN QUERY SELECT * FROM sluice._rebind_expectations(target);
END
$$;
COMMENT ON FUNCTION sluice._contract_settled(regclass) IS
  'Private: after a new contract version: rebuilds the table''s published interfaces and re-binds its expectations; returns the re-bound trees.';

CREATE FUNCTION sluice.publish_contract(target regclass, schema name, version integer DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  v integer;
  pc sluice._published_contract;
  other record;
  vname name;
BEGIN
  PERFORM sluice._require_arguments('sluice.publish_contract', ARRAY['target', 'schema'],
    ARRAY[target IS NULL, schema IS NULL],
    'Name a datamart table pg_sluice feeds (sluice.contracts) and the schema its consumers read, such as ''api_v1''.');
  IF schema = '' THEN
    RAISE EXCEPTION 'schema must be named' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Name the schema the interface''s consumers read, such as ''api_v1''.';
  END IF;
  t := sluice._contract_table(target, true);
  v := coalesce(version, t.contract_version);
  IF v < 1 OR v > t.contract_version THEN
    RAISE EXCEPTION 'table % has no contract version %', target, v USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('Versions 1 to %s exist.', t.contract_version),
      HINT = 'sluice.contract_diff shows what changed between two versions.';
  END IF;
  SELECT pt.target_table INTO vname FROM sluice._pipeline_table pt
   WHERE (pt.pipeline_id, pt.source_schema, pt.source_table) = (t.pipeline_id, t.source_schema, t.source_table);
  SELECT p.*, pt.target_schema, pt.target_table INTO other
    FROM sluice._published_contract p JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table)
   WHERE (p.schema_name, p.view_name) = (schema, vname);
  IF FOUND THEN
    RAISE EXCEPTION '%.% already publishes contract version % of %', quote_ident(schema), quote_ident(vname),
      other.contract_version, format('%I.%I', other.target_schema, other.target_table)
      USING ERRCODE = 'duplicate_object',
      HINT = 'Publish each version into its own schema (such as api_v1, api_v2), or sluice.unpublish_contract it first.';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = schema AND c.relname = vname) THEN
    RAISE EXCEPTION 'relation %.% already exists', quote_ident(schema), quote_ident(vname)
      USING ERRCODE = 'duplicate_table',
      HINT = 'Publish into a schema where the name is free: the interface is named like the table.';
  END IF;
  pc.pipeline_id := t.pipeline_id;
  pc.source_schema := t.source_schema;
  pc.source_table := t.source_table;
  pc.contract_version := v;
  pc.schema_name := schema;
  pc.view_name := vname;
  pc.schema_created := NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = schema);
  pc.published_at := now();
  pc.published_by := current_user;
  INSERT INTO sluice._published_contract SELECT pc.*;
  PERFORM sluice._build_interface(target, pc);
  RETURN format('%I.%I', schema, vname)::regclass;
END
$$;
COMMENT ON FUNCTION sluice.publish_contract(regclass, name, integer) IS
  'Publishes a contract version (default: the current one) of a datamart table as the view <schema>.<table>, with exactly that version''s columns and types, kept valid as the contract changes; returns the view. Readers need SELECT on the view only.';

CREATE FUNCTION sluice._unpublish(pc sluice._published_contract)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM sluice._exec_as_owner(pc.pipeline_id, format('DROP VIEW IF EXISTS %I.%I', pc.schema_name, pc.view_name), NULL);
  DELETE FROM sluice._published_contract p WHERE (p.schema_name, p.view_name) = (pc.schema_name, pc.view_name);
  -- a schema pg_sluice created for interfaces goes with the last of them
  IF pc.schema_created
     AND NOT EXISTS (SELECT 1 FROM sluice._published_contract p WHERE p.schema_name = pc.schema_name)
     AND EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = pc.schema_name)
     AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_namespace n
                        ON d.refclassid = 'pg_namespace'::regclass AND d.refobjid = n.oid
                     WHERE n.nspname = pc.schema_name) THEN
    PERFORM sluice._exec_as_owner(pc.pipeline_id, format('DROP SCHEMA IF EXISTS %I RESTRICT', pc.schema_name), NULL);
  END IF;
END
$$;
COMMENT ON FUNCTION sluice._unpublish(sluice._published_contract) IS
  'Private: drops a published interface''s view (and the schema pg_sluice created for it, once empty).';

CREATE FUNCTION sluice.unpublish_contract(target regclass, schema name)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  pc sluice._published_contract;
BEGIN
  PERFORM sluice._require_arguments('sluice.unpublish_contract', ARRAY['target', 'schema'],
    ARRAY[target IS NULL, schema IS NULL], 'sluice.published_contracts lists the published interfaces.');
  t := sluice._contract_table(target, true);
  SELECT p.* INTO pc FROM sluice._published_contract p
   WHERE (p.pipeline_id, p.source_schema, p.source_table) = (t.pipeline_id, t.source_schema, t.source_table)
     AND p.schema_name = schema;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no contract of % is published in schema "%"', target, schema
      USING ERRCODE = 'undefined_object', HINT = 'sluice.published_contracts lists the published interfaces.';
  END IF;
  PERFORM sluice._unpublish(pc);
  RETURN pc.contract_version;
END
$$;
COMMENT ON FUNCTION sluice.unpublish_contract(regclass, name) IS
  'Drops the interface of a datamart table published in a schema; returns the contract version it showed.';

CREATE FUNCTION sluice._unpublish_pipeline(pipeline_id integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pc sluice._published_contract;
  cnt integer := 0;
BEGIN
  -- sluice.drop_pipeline (api.c): its interfaces go first; one that cannot
  -- be dropped (its owner role is gone) is left with a warning, never in
  -- the way of the drop
  FOR pc IN SELECT * FROM sluice._published_contract p WHERE p.pipeline_id = _unpublish_pipeline.pipeline_id LOOP
    BEGIN
      PERFORM sluice._unpublish(pc);
      cnt := cnt + 1;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'interface %.% was left in place: %', quote_ident(pc.schema_name), quote_ident(pc.view_name), SQLERRM
        USING HINT = 'Drop the view by hand.';
    END;
  END LOOP;
  RETURN cnt;
END
$$;
COMMENT ON FUNCTION sluice._unpublish_pipeline(integer) IS 'Private: drops every interface of a pipeline being dropped.';

CREATE VIEW sluice.published_contracts AS
SELECT pl.name AS pipeline,
       pt.target_schema,
       pt.target_table,
       p.contract_version,
       pt.contract_version AS current_version,
       p.schema_name,
       p.view_name,
       p.published_at,
       p.published_by
  FROM sluice._published_contract p
  JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table)
  JOIN sluice._pipeline pl USING (pipeline_id);
ALTER VIEW sluice.published_contracts SET (security_invoker = true);
COMMENT ON VIEW sluice.published_contracts IS 'Contract versions published as views for consumers (sluice.publish_contract).';
COMMENT ON COLUMN sluice.published_contracts.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.published_contracts.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.published_contracts.target_table IS 'Datamart table.';
COMMENT ON COLUMN sluice.published_contracts.contract_version IS 'Contract version the view shows: its columns, names and types.';
COMMENT ON COLUMN sluice.published_contracts.current_version IS 'Current contract version of the table.';
COMMENT ON COLUMN sluice.published_contracts.schema_name IS 'Schema of the view.';
COMMENT ON COLUMN sluice.published_contracts.view_name IS 'The view, named like the table.';
COMMENT ON COLUMN sluice.published_contracts.published_at IS 'When it was published.';
COMMENT ON COLUMN sluice.published_contracts.published_by IS 'Role that published it.';

CREATE FUNCTION sluice._interface_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
  stmt text;
BEGIN
  -- called by sluice._operator_grants
  FOREACH stmt IN ARRAY ARRAY[
    'EXECUTE ON FUNCTION sluice.publish_contract(regclass, name, integer), sluice.unpublish_contract(regclass, name),
       sluice._require_arguments(text, text[], boolean[], text), sluice._interface_column(text, text, oid, integer, text, name, integer),
       sluice._build_interface(regclass, sluice._published_contract), sluice._interfaces_detach(regclass),
       sluice._rebind_expectations(regclass), sluice._contract_settled(regclass),
       sluice._unpublish(sluice._published_contract), sluice._unpublish_pipeline(integer)',
    'SELECT, INSERT, DELETE ON sluice._published_contract',
    'UPDATE (acl) ON sluice._published_contract',
    'SELECT ON sluice.published_contracts',
    'UPDATE (predicate_tree, check_tree) ON sluice._expectation'] LOOP
    EXECUTE format('%s %s %s %s', verb, stmt, to_from, grantee);
  END LOOP;
END
$$;
COMMENT ON FUNCTION sluice._interface_grants(regrole, text) IS 'Private: what an operator is granted for published interfaces.';

REVOKE ALL ON sluice._published_contract, sluice.published_contracts FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.publish_contract(regclass, name, integer), sluice.unpublish_contract(regclass, name),
    sluice._interface_column(text, text, oid, integer, text, name, integer),
    sluice._build_interface(regclass, sluice._published_contract), sluice._interfaces_detach(regclass),
    sluice._rebind_expectations(regclass), sluice._contract_settled(regclass),
    sluice._unpublish(sluice._published_contract), sluice._unpublish_pipeline(integer),
    sluice._interface_grants(regrole, text) FROM PUBLIC;
-- readers of an interface call it; both only raise
GRANT EXECUTE ON FUNCTION sluice._does_not_fit(text, text, text, text, integer),
    sluice._require_arguments(text, text[], boolean[], text) TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('sluice._published_contract', '');

-- a repair is a run, and a version (new in 0.2)
ALTER TABLE sluice._run DROP CONSTRAINT _run_kind_check;
ALTER TABLE sluice._run ADD CONSTRAINT _run_kind_check
  CHECK (kind IN ('initial_copy', 'refresh', 'stream', 'repair', 'release'));

-- verify and repair (new in 0.2)
-------------------------------------------------------------------------------
-- Verification: is the datamart exactly live?  sluice.verify compares each
-- datamart table of a pipeline with its source table at one exact source
-- position (src/verify.c) and records the result here.
-------------------------------------------------------------------------------

CREATE TABLE sluice._verification (
    verification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id     integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    target_schema   name NOT NULL,
    target_table    name NOT NULL,
    at_lsn          pg_lsn NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    rows_live       bigint NOT NULL,
    rows_mart       bigint NOT NULL,
    rows_compared   bigint NOT NULL,
    ranges          bigint NOT NULL,
    differences     bigint NOT NULL,
    keys            jsonb NOT NULL,
    keyless         boolean NOT NULL
);
CREATE INDEX ON sluice._verification (pipeline_id, verification_id);
CREATE INDEX ON sluice._verification (finished_at);
COMMENT ON TABLE sluice._verification IS
  'Private: one row per datamart table per verification (sluice.verify).';
SELECT pg_catalog.pg_extension_config_dump('sluice._verification', '');
ALTER TABLE sluice._verification ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._verification
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.verifications AS
SELECT v.verification_id,
       p.name AS pipeline,
       v.target_schema,
       v.target_table,
       v.at_lsn,
       v.started_at,
       v.finished_at,
       v.rows_live,
       v.rows_mart,
       v.rows_compared,
       v.ranges,
       v.differences,
       v.keys,
       v.keyless
  FROM sluice._verification v
  JOIN sluice._pipeline p USING (pipeline_id)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.verifications IS
  'Comparisons of datamart tables with their source tables at one source position (sluice.verify), newest last; each role sees the pipelines it may operate (the keys are data).';
COMMENT ON COLUMN sluice.verifications.verification_id IS 'Identifier, increasing.';
COMMENT ON COLUMN sluice.verifications.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.verifications.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.verifications.target_table IS 'Datamart table.';
COMMENT ON COLUMN sluice.verifications.at_lsn IS 'Source position both sides were read at: the source in a snapshot of that position, the datamart brought exactly to it.';
COMMENT ON COLUMN sluice.verifications.started_at IS 'When the verification started.';
COMMENT ON COLUMN sluice.verifications.finished_at IS 'When this table''s comparison was recorded.';
COMMENT ON COLUMN sluice.verifications.rows_live IS 'Rows of the source table at at_lsn.';
COMMENT ON COLUMN sluice.verifications.rows_mart IS 'Rows of the datamart table at at_lsn.';
COMMENT ON COLUMN sluice.verifications.rows_compared IS 'The larger of rows_live and rows_mart.';
COMMENT ON COLUMN sluice.verifications.ranges IS 'Hash buckets compared, over every level of bisection.';
COMMENT ON COLUMN sluice.verifications.differences IS 'Rows that differ: missing in the datamart, extra in the datamart, or different.';
COMMENT ON COLUMN sluice.verifications.keys IS
  'The differing keys (up to max_keys): [{"kind": "missing" | "extra" | "different", "key": {column: text value}}]; for a table without a key the key is the whole row, with "count" (how many times it is missing or extra).';
COMMENT ON COLUMN sluice.verifications.keyless IS 'The table has no key: compared as a multiset of whole rows.';

CREATE FUNCTION sluice.verify(pipeline text, tables regclass[] DEFAULT NULL,
                              rows_per_second integer DEFAULT NULL, max_keys integer DEFAULT 1000)
RETURNS TABLE (verification_id bigint, target_schema name, target_table name, at_lsn pg_lsn,
               rows_compared bigint, ranges bigint, differences bigint, keys jsonb)
AS 'MODULE_PATHNAME', 'sluice_verify'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.verify(text, regclass[], integer, integer) IS
  'Compares the pipeline''s datamart tables (or those listed) with the source at one exact source position, bringing the datamart to it first; returns and records (sluice.verifications) the rows compared and the differing keys per table.';

CREATE FUNCTION sluice.purge_verifications(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  WITH purged AS (
    DELETE FROM sluice._verification v
     WHERE v.finished_at < now() - older_than
       AND v.verification_id <> (SELECT max(l.verification_id) FROM sluice._verification l
                                  WHERE (l.pipeline_id, l.target_schema, l.target_table)
                                        = (v.pipeline_id, v.target_schema, v.target_table))
    RETURNING 1)
  SELECT count(*) FROM purged;
END;
COMMENT ON FUNCTION sluice.purge_verifications(interval) IS
  'Deletes verifications finished longer ago than older_than, keeping the last one of each table; returns how many were deleted. Schedule it with pg_cron.';

CREATE FUNCTION sluice.repair(pipeline text, tables regclass[] DEFAULT NULL,
                              rows_per_second integer DEFAULT NULL)
RETURNS TABLE (run_id bigint, target_schema name, target_table name, at_lsn pg_lsn,
               differences bigint, rows_deleted bigint, rows_inserted bigint)
AS 'MODULE_PATHNAME', 'sluice_repair'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.repair(text, regclass[], integer) IS
  'Compares as sluice.verify does and re-copies every differing key from the source (delete, then insert the source''s row), in one transaction at one exact source position; recorded as a run of kind repair, a version whose history keeps the rows it replaced. run_id is NULL when nothing differed.';

-- operators verify the pipelines they operate: _operator_grants (grant_operator,
-- revoke_operator) gives and takes this too
CREATE FUNCTION sluice._verify_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.verify(text, regclass[], integer, integer), sluice.repair(text, regclass[], integer) %s %s',
                 verb, to_from, grantee);
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.purge_verifications(interval) %s %s', verb, to_from, grantee);
  EXECUTE format('%s SELECT, DELETE ON sluice._verification %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._verify_operator_grants(regrole, text) IS 'Private: what an operator is granted for verifications.';

REVOKE ALL ON FUNCTION sluice.verify(text, regclass[], integer, integer), sluice.repair(text, regclass[], integer),
    sluice.purge_verifications(interval),
    sluice._verify_operator_grants(regrole, text) FROM PUBLIC;
REVOKE ALL ON sluice._verification FROM PUBLIC;
GRANT SELECT ON sluice.verifications TO PUBLIC;

-- one look-up of a pipeline by name, with its errors (new in 0.2)
CREATE FUNCTION sluice._pipeline_row(pipeline text, lock boolean DEFAULT true)
RETURNS sluice._pipeline
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p sluice._pipeline;
BEGIN
  IF pipeline IS NULL THEN
    RAISE EXCEPTION 'pipeline must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF lock THEN
    -- waits for a refresh or worker batch of the pipeline
    SELECT * INTO p FROM sluice._pipeline x WHERE x.name = pipeline FOR UPDATE;
  ELSE
    SELECT * INTO p FROM sluice._pipeline x WHERE x.name = pipeline;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'pipeline "%" does not exist', pipeline USING ERRCODE = 'undefined_object',
      HINT = 'sluice.pipelines lists the existing pipelines.';
  END IF;
  RETURN p;
END
$$;
COMMENT ON FUNCTION sluice._pipeline_row(text, boolean) IS
  'Private: a pipeline''s catalog row by name, locked against refreshes unless lock is false; the errors for a NULL or unknown name.';

-- resume: the look-up above
CREATE OR REPLACE FUNCTION sluice.resume(pipeline text, skip_xid xid DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  reason text := (sluice._pipeline_row(pipeline)).paused_reason;
BEGIN
  IF reason IS NULL THEN
    RAISE NOTICE 'pipeline "%" is not paused', pipeline;
    RETURN false;
  END IF;
  UPDATE sluice._pipeline p SET paused_reason = NULL, paused_at = NULL, skip_xid = resume.skip_xid
   WHERE p.name = pipeline;
  RETURN true;
END
$$;

-- HTTP JSON sources (src/sql/94_http.sql)

CREATE TABLE sluice._http_source (
    name        text PRIMARY KEY REFERENCES sluice._source (name) ON DELETE CASCADE,
    base_url    text NOT NULL,
    auth        text NOT NULL DEFAULT 'none' CHECK (auth IN ('none', 'bearer', 'basic')),
    username    text,
    secret      text,
    headers     jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(headers) = 'object')
);
COMMENT ON TABLE sluice._http_source IS
  'Private: HTTP JSON sources. Holds secrets (bearer tokens, passwords, maybe query parameters of base_url): readable by the extension owner only.';
REVOKE ALL ON sluice._http_source FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('sluice._http_source', '');

CREATE TABLE sluice._http_endpoint (
    pipeline_id    integer NOT NULL,
    source_schema  text NOT NULL,
    source_table   text NOT NULL,
    path           text NOT NULL,
    rows_path      text,
    cursor_kind    text NOT NULL DEFAULT 'none' CHECK (cursor_kind IN ('none', 'since', 'id', 'etag')),
    cursor_param   text,
    cursor_field   text,
    paging         text NOT NULL DEFAULT 'none' CHECK (paging IN ('none', 'link', 'page', 'cursor')),
    page_param     text,
    next_field     text,
    cursor_value   text,
    etag           text,
    pulled_at      timestamptz,
    PRIMARY KEY (pipeline_id, source_schema, source_table),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
COMMENT ON TABLE sluice._http_endpoint IS
  'Private: the endpoint feeding each datamart table of an HTTP pipeline, its pagination and its cursor (moved only by a refresh that committed).';
REVOKE ALL ON sluice._http_endpoint FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('sluice._http_endpoint', '');

CREATE FUNCTION sluice._mask_url(url text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_mask_url'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice._mask_url(text) IS
  'Private: a URL without its user and password, the values of its query parameters replaced by ********.';

CREATE FUNCTION sluice._create_http_source(name text, base_url text, bearer_token text,
                                           username text, password text, headers jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  url text;
BEGIN
  IF name IS NULL OR base_url IS NULL THEN
    RAISE EXCEPTION 'name and base_url must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF name !~ '^[a-z_][a-z0-9_]{0,47}$' THEN
    RAISE EXCEPTION 'invalid source name "%"', name USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'Names are 1 to 48 lower-case letters, digits or underscores, starting with a letter or underscore.';
  END IF;
  url := sluice._check_url(base_url);
  IF url <> sluice._mask_url(url) AND position('@' IN split_part(url, '/', 3)) > 0 THEN
    RAISE EXCEPTION 'base_url must not hold a user or password' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Give them as username => and password => (basic authentication): they are stored apart and never shown.';
  END IF;
  IF bearer_token IS NOT NULL AND (username IS NOT NULL OR password IS NOT NULL) THEN
    RAISE EXCEPTION 'give either bearer_token or username and password, not both' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'An HTTP source authenticates one way.';
  END IF;
  IF (username IS NULL) <> (password IS NULL) THEN
    RAISE EXCEPTION 'basic authentication needs both username and password' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Give username => and password => together.';
  END IF;
  IF headers IS NOT NULL AND (jsonb_typeof(headers) <> 'object' OR EXISTS (
       SELECT 1 FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$')) THEN
    RAISE EXCEPTION 'headers must be a JSON object of header names to string values' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'For example ''{"Accept": "application/json"}''.';
  END IF;
  IF EXISTS (SELECT 1 FROM sluice._source s WHERE s.name = _create_http_source.name) THEN
    RAISE EXCEPTION 'source "%" already exists', name USING ERRCODE = 'duplicate_object',
      HINT = 'Drop it with sluice.drop_source() first, or choose another name.';
  END IF;
  -- conninfo '': a source that is not a PostgreSQL server
  INSERT INTO sluice._source (name, conninfo) VALUES (name, '');
  INSERT INTO sluice._http_source (name, base_url, auth, username, secret, headers)
  VALUES (name, url,
          CASE WHEN bearer_token IS NOT NULL THEN 'bearer' WHEN username IS NOT NULL THEN 'basic' ELSE 'none' END,
          username, coalesce(bearer_token, password), coalesce(headers, '{}'));
  RETURN name;
END
$$;
COMMENT ON FUNCTION sluice._create_http_source(text, text, text, text, text, jsonb) IS
  'Private: the checks and rows of sluice.create_http_source.';
REVOKE ALL ON FUNCTION sluice._create_http_source(text, text, text, text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION sluice.create_http_source(name text, base_url text, bearer_token text DEFAULT NULL,
                                          username text DEFAULT NULL, password text DEFAULT NULL,
                                          headers jsonb DEFAULT '{}')
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_create_http_source'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.create_http_source(text, text, text, text, text, jsonb) IS
  'Declares a REST API returning JSON as a source: its base URL, and a bearer token or a user and password (basic), and extra headers. Secrets are never echoed, and stored where only the owner can read them.';
REVOKE ALL ON FUNCTION sluice.create_http_source(text, text, text, text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION sluice.create_http_pipeline(name text, source text, endpoints jsonb,
                                            target_schema name DEFAULT 'public')
RETURNS sluice.refresh_result
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pid integer;
  ep jsonb;
  col jsonb;
  tbl text;
  typ text;
  typoid oid;
  keys text[];
  ddl text;
  pos integer;
  cur jsonb;
  pag jsonb;
  colnames text[];
  r sluice.refresh_result;
BEGIN
  IF name IS NULL OR source IS NULL OR endpoints IS NULL OR target_schema IS NULL THEN
    RAISE EXCEPTION 'name, source, endpoints and target_schema must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM sluice._http_source h WHERE h.name = source) THEN
    RAISE EXCEPTION 'HTTP source "%" does not exist', source USING ERRCODE = 'undefined_object',
      HINT = 'Declare it with sluice.create_http_source(); sluice.http_sources lists the known ones.';
  END IF;
  IF jsonb_typeof(endpoints) <> 'array' OR jsonb_array_length(endpoints) = 0 THEN
    RAISE EXCEPTION 'endpoints must be a non-empty JSON array of endpoint objects' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'For example ''[{"table": "students", "path": "/students", "key": ["id"], "columns": [{"name": "id", "path": "id", "type": "integer"}]}]''.';
  END IF;
  IF to_regnamespace(quote_ident(target_schema)) IS NULL THEN
    EXECUTE format('CREATE SCHEMA %I', target_schema);
  END IF;
  INSERT INTO sluice._pipeline (name, source_name, publication, publication_owned, slot_name,
                                origin_name, target_schema, consistent_lsn)
  VALUES (name, source, '', false, '', 'pg_sluice_http_' || name, target_schema, '0/0')
  RETURNING pipeline_id INTO pid;
  FOR ep IN SELECT e FROM jsonb_array_elements(endpoints) e LOOP
    tbl := ep->>'table';
    IF jsonb_typeof(ep) <> 'object' OR tbl IS NULL OR ep->>'path' IS NULL
       OR jsonb_typeof(ep->'columns') IS DISTINCT FROM 'array' OR jsonb_array_length(ep->'columns') = 0
       OR jsonb_typeof(ep->'key') IS DISTINCT FROM 'array' OR jsonb_array_length(ep->'key') = 0 THEN
      RAISE EXCEPTION 'endpoint % must have "table", "path", "key" (an array of column names) and "columns" (an array)', ep
        USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Each column is {"name": ..., "path": "a.b", "type": ..., "required": true|false}.';
    END IF;
    IF left(ep->>'path', 1) <> '/' THEN
      RAISE EXCEPTION 'endpoint path "%" must start with /', ep->>'path' USING ERRCODE = 'invalid_parameter_value',
        HINT = 'The path is appended to the source''s base_url.';
    END IF;
    keys := ARRAY(SELECT jsonb_array_elements_text(ep->'key'));
    ddl := '';
    pos := 0;
    colnames := '{}';
    FOR col IN SELECT c FROM jsonb_array_elements(ep->'columns') c LOOP
      pos := pos + 1;
      IF col->>'name' IS NULL OR col->>'path' IS NULL OR col->>'type' IS NULL THEN
        RAISE EXCEPTION 'column % of endpoint "%" must have "name", "path" and "type"', col, tbl
          USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"name": "id", "path": "id", "type": "integer"}.';
      END IF;
      IF col->>'path' !~ '^[^.]+(\.[^.]+)*$' THEN
        RAISE EXCEPTION 'JSON path "%" of column "%" is not a dotted path', col->>'path', col->>'name'
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Write the keys from the row object down, separated by dots: "address.city".';
      END IF;
      typ := sluice._type_name(col->>'type');
      typoid := typ::regtype::oid;
      colnames := colnames || (col->>'name');
      ddl := ddl || CASE WHEN ddl = '' THEN '' ELSE ', ' END || format('%I %s', col->>'name', typ)
             || CASE WHEN (col->>'name') = ANY (keys) OR coalesce((col->>'required')::boolean, false)
                     THEN ' NOT NULL' ELSE '' END;
    END LOOP;
    IF NOT keys <@ colnames THEN
      RAISE EXCEPTION 'key % of endpoint "%" names columns that are not among its columns %', keys, tbl, colnames
        USING ERRCODE = 'invalid_parameter_value', HINT = 'The key lists column names, not JSON paths.';
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (%s, PRIMARY KEY (%s))', target_schema, tbl, ddl,
                   (SELECT string_agg(quote_ident(k), ', ') FROM unnest(keys) k));
    INSERT INTO sluice._pipeline_table (pipeline_id, source_schema, source_table, target_schema, target_table,
                                        key_columns, replica_identity, drift_policy)
    VALUES (pid, source, tbl, target_schema, tbl, keys, 'd', coalesce(ep->>'drift_policy', 'freeze'));
    INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, contract_version, position,
                                         column_name, source_column, data_type, not_null, is_key, source_type)
    SELECT pid, source, tbl, 1, a.attnum, a.attname, c->>'path', format_type(a.atttypid, a.atttypmod),
           a.attnotnull, a.attname::text = ANY (keys), a.atttypid
      FROM jsonb_array_elements(ep->'columns') c
      JOIN pg_attribute a ON a.attrelid = format('%I.%I', target_schema, tbl)::regclass AND a.attname = c->>'name';
    cur := coalesce(ep->'cursor', '{"kind": "none"}');
    pag := coalesce(ep->'pagination', '{"kind": "none"}');
    IF cur->>'kind' IN ('since', 'id') AND (cur->>'param' IS NULL OR cur->>'field' IS NULL) THEN
      RAISE EXCEPTION 'cursor of endpoint "%" needs "param" (the query parameter) and "field" (the JSON path of the rows it follows)', tbl
        USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"kind": "since", "param": "since", "field": "updated_at"}.';
    END IF;
    IF cur->>'field' IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(ep->'columns') c WHERE c->>'path' = cur->>'field') THEN
      RAISE EXCEPTION 'cursor field "%" of endpoint "%" is not the path of one of its columns', cur->>'field', tbl
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Map the field to a column too.';
    END IF;
    IF pag->>'kind' = 'page' AND pag->>'param' IS NULL OR pag->>'kind' = 'cursor' AND (pag->>'param' IS NULL OR pag->>'field' IS NULL) THEN
      RAISE EXCEPTION 'pagination of endpoint "%" needs "param" (and "field" for a cursor token in the body)', tbl
        USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"kind": "cursor", "field": "next", "param": "cursor"}.';
    END IF;
    INSERT INTO sluice._http_endpoint (pipeline_id, source_schema, source_table, path, rows_path, cursor_kind,
                                       cursor_param, cursor_field, paging, page_param, next_field)
    VALUES (pid, source, tbl, ep->>'path', ep->>'rows', coalesce(cur->>'kind', 'none'), cur->>'param', cur->>'field',
            coalesce(pag->>'kind', 'none'), pag->>'param', pag->>'field');
  END LOOP;
  r := sluice.refresh(name);
  r.kind := 'initial_copy';
  RETURN r;
END
$$;
COMMENT ON FUNCTION sluice.create_http_pipeline(text, text, jsonb, name) IS
  'Creates a pipeline from an HTTP source: one datamart table per endpoint, mapped by a declared contract (JSON paths to typed columns, a key), then pulls every endpoint once.';
REVOKE ALL ON FUNCTION sluice.create_http_pipeline(text, text, jsonb, name) FROM PUBLIC;

CREATE VIEW sluice.http_sources AS
SELECT h.name,
       sluice._mask_url(h.base_url) AS base_url,
       h.auth,
       h.username,
       CASE WHEN h.secret IS NOT NULL THEN '********' END AS secret,
       (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.jsonb_object_keys(h.headers) k) AS header_names,
       s.created_at,
       s.created_by
  FROM sluice._http_source h JOIN sluice._source s ON s.name = h.name;
COMMENT ON VIEW sluice.http_sources IS 'HTTP JSON sources (secrets masked).';
COMMENT ON COLUMN sluice.http_sources.name IS 'Source name.';
COMMENT ON COLUMN sluice.http_sources.base_url IS 'Base URL, the values of its query parameters replaced by ********.';
COMMENT ON COLUMN sluice.http_sources.auth IS 'none, bearer or basic.';
COMMENT ON COLUMN sluice.http_sources.username IS 'User of basic authentication.';
COMMENT ON COLUMN sluice.http_sources.secret IS '******** when a token or password is stored; never the secret.';
COMMENT ON COLUMN sluice.http_sources.header_names IS 'Names of the extra headers sent (their values may be secrets: never shown).';
COMMENT ON COLUMN sluice.http_sources.created_at IS 'When the source was declared.';
COMMENT ON COLUMN sluice.http_sources.created_by IS 'Role that declared it.';
REVOKE ALL ON sluice.http_sources FROM PUBLIC;

CREATE VIEW sluice.http_endpoints AS
SELECT p.name AS pipeline,
       e.source_table AS endpoint,
       pt.target_schema,
       pt.target_table,
       e.path,
       e.rows_path,
       e.cursor_kind,
       CASE WHEN e.cursor_kind = 'etag' THEN e.etag ELSE e.cursor_value END AS cursor_value,
       e.paging,
       e.pulled_at
  FROM sluice._http_endpoint e
  JOIN sluice._pipeline p ON p.pipeline_id = e.pipeline_id
  JOIN sluice._pipeline_table pt ON pt.pipeline_id = e.pipeline_id AND pt.source_schema = e.source_schema
                                AND pt.source_table = e.source_table;
COMMENT ON VIEW sluice.http_endpoints IS 'Endpoints of HTTP pipelines, with their cursors.';
COMMENT ON COLUMN sluice.http_endpoints.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.http_endpoints.endpoint IS 'Endpoint name (the datamart table it feeds).';
COMMENT ON COLUMN sluice.http_endpoints.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.http_endpoints.target_table IS 'The datamart table.';
COMMENT ON COLUMN sluice.http_endpoints.path IS 'Path appended to the source''s base URL.';
COMMENT ON COLUMN sluice.http_endpoints.rows_path IS 'Dotted path of the array of rows in a page (NULL: the page is the array).';
COMMENT ON COLUMN sluice.http_endpoints.cursor_kind IS 'none, since (updated_at parameter), id (high-water mark) or etag (If-None-Match).';
COMMENT ON COLUMN sluice.http_endpoints.cursor_value IS 'The cursor the next refresh starts from (the ETag for etag); moved only by a refresh that committed.';
COMMENT ON COLUMN sluice.http_endpoints.paging IS 'none, link (Link: rel="next"), page (page number parameter) or cursor (a token in the body).';
COMMENT ON COLUMN sluice.http_endpoints.pulled_at IS 'When the last committed refresh pulled the endpoint.';
GRANT SELECT ON sluice.http_endpoints TO PUBLIC;

-- OpenLineage: an HTTP pipeline's runs name the API (scheme, host, port) and each endpoint's path
CREATE OR REPLACE FUNCTION sluice._emit_run(run_id bigint, quarantined bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  p record;
  ci text;
  api text;
  body jsonb;
  bad jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sluice._destination) THEN
    RETURN;
  END IF;
  SELECT * INTO r FROM sluice._run WHERE _run.run_id = _emit_run.run_id;
  SELECT * INTO p FROM sluice._pipeline WHERE pipeline_id = r.pipeline_id;
  SELECT conninfo INTO ci FROM sluice._source WHERE name = p.source_name;
  -- an HTTP source (94_http.sql): its scheme, host and port, never a secret
  SELECT substring(sluice._mask_url(h.base_url) FROM '^[a-z]+://[^/?]+') INTO api
    FROM sluice._http_source h WHERE h.name = p.source_name;
  body := jsonb_build_object(
    'run_id', r.run_id,
    'run_uuid', md5(p.name || ':' || p.pipeline_id || ':' || r.run_id)::uuid,
    'job', 'pg_sluice.' || p.name,
    'kind', r.kind, 'status', r.status,
    'started_at', r.started_at, 'finished_at', r.finished_at,
    'start_lsn', r.start_lsn, 'end_lsn', r.end_lsn,
    'transactions', r.transactions, 'rows_inserted', r.rows_inserted, 'rows_updated', r.rows_updated,
    'rows_deleted', r.rows_deleted, 'tables_truncated', r.tables_truncated,
    'error', r.error,
    'summary', format('%s %s: %s transactions, %s inserted, %s updated, %s deleted', r.kind, r.status,
                      r.transactions, r.rows_inserted, r.rows_updated, r.rows_deleted)
                || CASE WHEN r.error IS NOT NULL THEN ' - ' || r.error ELSE '' END,
    'source_namespace', coalesce(api, format('postgres://%s:%s', coalesce(sluice._conninfo_part(ci, 'host'), 'localhost'),
                                             coalesce(sluice._conninfo_part(ci, 'port'), '5432'))),
    'target_namespace', format('postgres://%s:%s', coalesce(host(inet_server_addr()), 'localhost'), current_setting('port')),
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'input', CASE WHEN api IS NULL
                       THEN format('%s.%s.%s', coalesce(sluice._conninfo_part(ci, 'dbname'), 'postgres'), pt.source_schema, pt.source_table)
                       ELSE (SELECT e.path FROM sluice._http_endpoint e
                              WHERE (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table)) END,
         'output', format('%s.%s.%s', current_database(), pt.target_schema, pt.target_table),
         'fields', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', c.column_name, 'type', c.data_type) ORDER BY c.position), '[]')
                      FROM sluice._contract_column c
                     WHERE (c.pipeline_id, c.source_schema, c.source_table, c.contract_version)
                           = (pt.pipeline_id, pt.source_schema, pt.source_table, pt.contract_version)),
         'assertions', (SELECT coalesce(jsonb_agg(jsonb_build_object('assertion', e.kind, 'success', er.success)
                                                  || CASE WHEN cardinality(e.column_names) = 1
                                                          THEN jsonb_build_object('column', e.column_names[1]) ELSE '{}' END
                                                  ORDER BY e.expectation_id), '[]')
                          FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
                         WHERE er.run_id = r.run_id
                           AND (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table))
         ) ORDER BY pt.source_schema, pt.source_table), '[]')
       FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id));
  PERFORM sluice._emit(p.name, 'refresh_started', body);
  PERFORM sluice._emit(p.name, CASE WHEN r.status = 'succeeded' THEN 'refresh_completed' ELSE 'refresh_failed' END, body);
  IF r.status = 'paused' THEN
    PERFORM sluice._emit(p.name, 'pipeline_paused',
      jsonb_build_object('run_id', r.run_id, 'reason', r.error, 'summary', 'paused: ' || r.error));
  END IF;
  SELECT jsonb_agg(jsonb_build_object('expectation', e.name, 'kind', e.kind, 'severity', e.severity,
                                      'evaluated', er.evaluated, 'failed', er.failed, 'sample_keys', er.sample_keys)
                   ORDER BY e.expectation_id)
    INTO bad
    FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
   WHERE er.run_id = r.run_id AND NOT er.success;
  IF bad IS NOT NULL THEN
    PERFORM sluice._emit(p.name, 'expectation_failed',
      jsonb_build_object('run_id', r.run_id, 'failures', bad,
                         'summary', format('%s expectation(s) failed in run %s', jsonb_array_length(bad), r.run_id)));
  END IF;
  IF quarantined > 0 THEN
    PERFORM sluice._emit(p.name, 'quarantine',
      jsonb_build_object('run_id', r.run_id, 'rows', quarantined,
                         'summary', format('%s row(s) quarantined in run %s', quarantined, r.run_id)));
  END IF;
END
$$;

-- models (issue 20): tables defined by a query over pipeline tables and
-- other models, maintained in each batch's transaction (src/sql/93_models.sql,
-- src/model.c).  add_expectation's text generation moves into
-- _expectation_sql, shared with expect_model; _operator_grants calls
-- _model_operator_grants; _emit_run adds the run's models to its events
-- (OpenLineage: their inputs and outputs); tag pins models with history
-- too, and _history_of (sluice.diff) knows models; release_quarantined
-- rebuilds the models of the table it writes.
-- The text of an expectation (Great Expectations names): a row predicate or
-- a set check over target, bound afterwards by the caller (_compile_predicate,
-- _compile_check), never run as text.  add_expectation and expect_model share it.
CREATE FUNCTION sluice._expectation_sql(target regclass, kind text, cols name[], args jsonb, typ text,
    OUT pred text, OUT chk text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  col name := cols[1];
  qt text := target::text;
  lo text := args->>'min_value';
  hi text := args->>'max_value';
  smin boolean := coalesce((args->>'strict_min')::boolean, false);
  smax boolean := coalesce((args->>'strict_max')::boolean, false);
  bad boolean;
  keycols text;
  other regclass;
BEGIN
  IF kind IN ('expect_column_values_to_be_between', 'expect_column_value_lengths_to_be_between',
              'expect_table_row_count_to_be_between') THEN
    IF lo IS NULL AND hi IS NULL THEN
      RAISE EXCEPTION '% needs min_value or max_value', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lo IS NOT NULL AND hi IS NOT NULL THEN
      EXECUTE format('SELECT %L::%s > %L::%s', lo,
                     CASE WHEN kind = 'expect_column_values_to_be_between' THEN typ ELSE 'bigint' END, hi,
                     CASE WHEN kind = 'expect_column_values_to_be_between' THEN typ ELSE 'bigint' END) INTO bad;
      IF bad THEN
        RAISE EXCEPTION 'min_value % is greater than max_value %', lo, hi USING ERRCODE = 'invalid_parameter_value';
      END IF;
    END IF;
  END IF;

  CASE kind
  WHEN 'expect_column_values_to_not_be_null' THEN
    pred := format('%I IS NOT NULL', col);
  WHEN 'expect_column_values_to_be_null' THEN
    pred := format('%I IS NULL', col);
  WHEN 'expect_column_values_to_be_in_set', 'expect_column_values_to_not_be_in_set' THEN
    IF jsonb_typeof(args->'value_set') IS DISTINCT FROM 'array' THEN
      RAISE EXCEPTION '% needs args value_set, a JSON array', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pred := format('%1$I IS NULL OR %1$I %4$s (%2$L::text[]::%3$s[])', col,
                   ARRAY(SELECT jsonb_array_elements_text(args->'value_set')), typ,
                   CASE WHEN kind = 'expect_column_values_to_be_in_set' THEN '= ANY' ELSE '<> ALL' END);
  WHEN 'expect_column_values_to_be_between' THEN
    pred := format('%1$I IS NULL OR (%2$s AND %3$s)', col,
                   CASE WHEN lo IS NULL THEN 'true' ELSE format('%I %s %L::%s', col, CASE WHEN smin THEN '>' ELSE '>=' END, lo, typ) END,
                   CASE WHEN hi IS NULL THEN 'true' ELSE format('%I %s %L::%s', col, CASE WHEN smax THEN '<' ELSE '<=' END, hi, typ) END);
  WHEN 'expect_column_values_to_match_regex', 'expect_column_values_to_not_match_regex' THEN
    IF args->>'regex' IS NULL THEN
      RAISE EXCEPTION '% needs args regex', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
      PERFORM '' ~ (args->>'regex');
    EXCEPTION WHEN invalid_regular_expression THEN
      RAISE EXCEPTION 'invalid regular expression %', args->>'regex' USING ERRCODE = 'invalid_regular_expression',
        DETAIL = SQLERRM;
    END;
    pred := format('%1$I IS NULL OR %1$I::text %3$s %2$L', col, args->>'regex',
                   CASE WHEN kind = 'expect_column_values_to_match_regex' THEN '~' ELSE '!~' END);
  WHEN 'expect_column_values_to_match_like_pattern' THEN
    IF args->>'like_pattern' IS NULL THEN
      RAISE EXCEPTION '% needs args like_pattern', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- LIKE's one error, raised only when matching reaches it: a trailing escape
    IF length(substring(args->>'like_pattern' FROM '\\*$')) % 2 = 1 THEN
      RAISE EXCEPTION 'invalid LIKE pattern %: it ends with an escape character', args->>'like_pattern'
        USING ERRCODE = 'invalid_escape_sequence', HINT = 'Write \\ for a literal backslash.';
    END IF;
    pred := format('%1$I IS NULL OR %1$I::text LIKE %2$L', col, args->>'like_pattern');
  WHEN 'expect_column_value_lengths_to_equal' THEN
    IF args->>'value' IS NULL OR (args->>'value')::bigint < 0 THEN
      RAISE EXCEPTION '% needs args value, a length of 0 or more', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pred := format('%1$I IS NULL OR sluice._length_between(%1$I::text, %2$s, %2$s)', col, (args->>'value')::bigint);
  WHEN 'expect_column_value_lengths_to_be_between' THEN
    pred := format('%1$I IS NULL OR sluice._length_between(%1$I::text, %2$s, %3$s)', col,
                   coalesce(lo::bigint, 0), coalesce(hi::bigint, 9223372036854775807));
  WHEN 'expect_row_to_satisfy' THEN
    IF args->>'predicate' IS NULL THEN
      RAISE EXCEPTION '% needs args predicate, a boolean SQL expression over the row', kind
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    pred := args->>'predicate';
  WHEN 'expect_column_values_to_be_unique' THEN
    keycols := (SELECT string_agg(format('%I', k), ', ') FROM unnest(cols) k);
    chk := format($q$WITH c AS (SELECT t.ctid AS sluice_tid, %1$s FROM %2$s t WHERE sluice._changed_here(t.xmin)),
      bad AS (SELECT DISTINCT %1$s FROM c WHERE (%1$s) IS NOT NULL AND EXISTS (
               SELECT 1 FROM %2$s t2 WHERE (%3$s) = (%4$s) AND t2.ctid <> c.sluice_tid))
      SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM c), NULL::text,
             (SELECT jsonb_agg(to_jsonb(b)) FROM (SELECT * FROM bad LIMIT 5) b)$q$,
      keycols, qt,
      (SELECT string_agg(format('t2.%I', k), ', ') FROM unnest(cols) k),
      (SELECT string_agg(format('c.%I', k), ', ') FROM unnest(cols) k));
  WHEN 'expect_table_row_count_to_be_between' THEN
    chk := format($q$SELECT CASE WHEN n >= %2$s AND n <= %3$s THEN 0 ELSE 1 END::bigint, 1::bigint, n::text, NULL::jsonb
                      FROM (SELECT count(*) AS n FROM %1$s) x$q$,
                  qt, coalesce(lo::bigint::text, '0'), coalesce(hi::bigint::text, '9223372036854775807'));
  WHEN 'expect_column_values_to_be_in_table' THEN
    BEGIN
      other := (args->>'table')::regclass;
    EXCEPTION WHEN OTHERS THEN
      RAISE EXCEPTION 'table "%" does not exist', args->>'table' USING ERRCODE = 'undefined_table';
    END;
    IF other IS NULL OR args->>'column' IS NULL THEN
      RAISE EXCEPTION '% needs args table and column', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = other AND attname = args->>'column' AND NOT attisdropped AND attnum > 0) THEN
      RAISE EXCEPTION 'column "%" does not exist in %', args->>'column', other USING ERRCODE = 'undefined_column';
    END IF;
    chk := format($q$WITH c AS (SELECT t.%1$I AS v FROM %2$s t WHERE sluice._changed_here(t.xmin) AND t.%1$I IS NOT NULL),
      bad AS (SELECT DISTINCT v FROM c WHERE NOT EXISTS (SELECT 1 FROM %3$s o WHERE o.%4$I = c.v))
      SELECT (SELECT count(*) FROM bad), (SELECT count(*) FROM c), NULL::text,
             (SELECT jsonb_agg(to_jsonb(b.v)) FROM (SELECT v FROM bad LIMIT 5) b)$q$,
      col, qt, other::text, args->>'column');
  WHEN 'expect_column_max_to_be_fresh' THEN
    IF args->>'max_age' IS NULL THEN
      RAISE EXCEPTION '% needs args max_age, an interval', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM (args->>'max_age')::interval;
    chk := format($q$SELECT CASE WHEN m >= now() - %3$L::interval THEN 0 ELSE 1 END::bigint, 1::bigint, m::text, NULL::jsonb
                      FROM (SELECT max(%1$I) AS m FROM %2$s) x$q$, col, qt, args->>'max_age');
  END CASE;
END
$$;
COMMENT ON FUNCTION sluice._expectation_sql(regclass, text, name[], jsonb, text) IS
  'Private: the predicate (row expectations) or check query (set expectations) of an expectation, as text to be bound.';

CREATE OR REPLACE FUNCTION sluice.add_expectation(
    target       regclass,
    kind         text,
    column_names name[] DEFAULT '{}',
    args         jsonb DEFAULT '{}',
    severity     text DEFAULT 'error',
    name         text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  cols name[] := coalesce(column_names, '{}');
  c name;
  col name;
  typ text;
  pred text;
  chk text;
  pred_tree pg_node_tree;
  chk_tree pg_node_tree;
  ename text;
  row_kinds text[] := ARRAY['expect_column_values_to_not_be_null', 'expect_column_values_to_be_null',
      'expect_column_values_to_be_in_set', 'expect_column_values_to_not_be_in_set',
      'expect_column_values_to_be_between', 'expect_column_values_to_match_regex',
      'expect_column_values_to_not_match_regex', 'expect_column_values_to_match_like_pattern',
      'expect_column_value_lengths_to_be_between', 'expect_column_value_lengths_to_equal',
      'expect_row_to_satisfy'];
  set_kinds text[] := ARRAY['expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between',
      'expect_column_values_to_be_in_table', 'expect_column_max_to_be_fresh'];
BEGIN
  IF target IS NULL OR kind IS NULL OR severity IS NULL THEN
    RAISE EXCEPTION 'target, kind and severity must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  t := sluice._contract_table(target, true);
  IF NOT (kind = ANY (row_kinds) OR kind = ANY (set_kinds)) THEN
    RAISE EXCEPTION 'unknown expectation "%"', kind USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Known: ' || array_to_string(row_kinds || set_kinds, ', ') || '.';
  END IF;
  IF severity NOT IN ('error', 'warn', 'quarantine') THEN
    RAISE EXCEPTION 'unknown severity "%"', severity USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use error (roll the batch back and pause), warn (apply and record) or quarantine (hold the failing row back).';
  END IF;
  IF severity = 'quarantine' AND kind = ANY (set_kinds) THEN
    RAISE EXCEPTION '% cannot quarantine rows', kind USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'It checks a set of rows, not one row.', HINT = 'Use severity error or warn.';
  END IF;
  -- every column must be in the contract
  FOREACH c IN ARRAY cols LOOP
    IF NOT EXISTS (SELECT 1 FROM sluice._contract_column cc
                    WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
                          = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version)
                      AND cc.column_name = c) THEN
      RAISE EXCEPTION 'column "%" is not in the contract of %', c, target USING ERRCODE = 'undefined_column',
        HINT = 'sluice.contracts lists the contract''s columns.';
    END IF;
  END LOOP;
  IF kind NOT IN ('expect_table_row_count_to_be_between', 'expect_row_to_satisfy') AND cardinality(cols) = 0 THEN
    RAISE EXCEPTION '% needs a column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF kind NOT IN ('expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between', 'expect_row_to_satisfy')
     AND cardinality(cols) <> 1 THEN
    RAISE EXCEPTION '% takes exactly one column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  col := cols[1];
  IF col IS NOT NULL THEN
    SELECT cc.data_type INTO typ FROM sluice._contract_column cc
     WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
           = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version) AND cc.column_name = col;
  END IF;
  SELECT x.pred, x.chk INTO pred, chk FROM sluice._expectation_sql(target, kind, cols, args, typ) x;

  -- bound now, in this function's search_path (pg_catalog): a refresh
  -- never parses the text again, so nothing created later in anyone's
  -- search_path can slip into it
  IF pred IS NOT NULL THEN
    pred_tree := sluice._compile_predicate(target, pred);
  ELSE
    chk_tree := sluice._compile_check(target, chk);
    -- the check runs here once, so a broken one fails now, not at refresh
    EXECUTE chk;
  END IF;
  ename := coalesce(name, kind || CASE WHEN cardinality(cols) > 0 THEN '_' || array_to_string(cols, '_') ELSE '' END
                          || '_' || (SELECT pt.target_table FROM sluice._pipeline_table pt
                                      WHERE (pt.pipeline_id, pt.source_schema, pt.source_table)
                                            = (t.pipeline_id, t.source_schema, t.source_table)));
  INSERT INTO sluice._expectation (pipeline_id, source_schema, source_table, name, kind, column_names,
                                   args, severity, predicate, check_sql, predicate_tree, check_tree)
  VALUES (t.pipeline_id, t.source_schema, t.source_table, ename, kind, cols, coalesce(args, '{}'), severity, pred, chk,
          pred_tree, chk_tree);
  RETURN ename;
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'expectation "%" already exists in this pipeline', ename USING ERRCODE = 'duplicate_object',
    HINT = 'Give it another name, or drop the existing one with sluice.drop_expectation().';
END
$$;
COMMENT ON FUNCTION sluice.add_expectation(regclass, text, name[], jsonb, text, text) IS
  'Declares a data-quality expectation on a datamart table, checked in every refresh''s transaction; returns its name.';

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
END
$$;
COMMENT ON FUNCTION sluice._operator_grants(regrole, text) IS 'Private: what an operator is granted.';

CREATE OR REPLACE FUNCTION sluice._emit_run(run_id bigint, quarantined bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  p record;
  ci text;
  body jsonb;
  bad jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sluice._destination) THEN
    RETURN;
  END IF;
  SELECT * INTO r FROM sluice._run WHERE _run.run_id = _emit_run.run_id;
  SELECT * INTO p FROM sluice._pipeline WHERE pipeline_id = r.pipeline_id;
  SELECT conninfo INTO ci FROM sluice._source WHERE name = p.source_name;
  body := jsonb_build_object(
    'run_id', r.run_id,
    'run_uuid', md5(p.name || ':' || p.pipeline_id || ':' || r.run_id)::uuid,
    'job', 'pg_sluice.' || p.name,
    'kind', r.kind, 'status', r.status,
    'started_at', r.started_at, 'finished_at', r.finished_at,
    'start_lsn', r.start_lsn, 'end_lsn', r.end_lsn,
    'transactions', r.transactions, 'rows_inserted', r.rows_inserted, 'rows_updated', r.rows_updated,
    'rows_deleted', r.rows_deleted, 'tables_truncated', r.tables_truncated,
    'error', r.error,
    'summary', format('%s %s: %s transactions, %s inserted, %s updated, %s deleted', r.kind, r.status,
                      r.transactions, r.rows_inserted, r.rows_updated, r.rows_deleted)
                || CASE WHEN r.error IS NOT NULL THEN ' - ' || r.error ELSE '' END,
    'source_namespace', format('postgres://%s:%s', coalesce(sluice._conninfo_part(ci, 'host'), 'localhost'),
                               coalesce(sluice._conninfo_part(ci, 'port'), '5432')),
    'target_namespace', format('postgres://%s:%s', coalesce(host(inet_server_addr()), 'localhost'), current_setting('port')),
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'input', format('%s.%s.%s', coalesce(sluice._conninfo_part(ci, 'dbname'), 'postgres'), pt.source_schema, pt.source_table),
         'output', format('%s.%s.%s', current_database(), pt.target_schema, pt.target_table),
         'fields', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', c.column_name, 'type', c.data_type) ORDER BY c.position), '[]')
                      FROM sluice._contract_column c
                     WHERE (c.pipeline_id, c.source_schema, c.source_table, c.contract_version)
                           = (pt.pipeline_id, pt.source_schema, pt.source_table, pt.contract_version)),
         'assertions', (SELECT coalesce(jsonb_agg(jsonb_build_object('assertion', e.kind, 'success', er.success)
                                                  || CASE WHEN cardinality(e.column_names) = 1
                                                          THEN jsonb_build_object('column', e.column_names[1]) ELSE '{}' END
                                                  ORDER BY e.expectation_id), '[]')
                          FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
                         WHERE er.run_id = r.run_id
                           AND (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table))
         ) ORDER BY pt.source_schema, pt.source_table), '[]')
       FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id),
    -- the models the run maintained: datamart tables and models in, the model out
    'models', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'output', format('%s.%s.%s', current_database(), n.nspname, c.relname),
         'inputs', (SELECT coalesce(jsonb_agg(format('%s.%s.%s', current_database(), n2.nspname, c2.relname)
                                              ORDER BY n2.nspname, c2.relname), '[]')
                      FROM sluice._model_input i JOIN pg_class c2 ON c2.oid = i.relid
                      JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
                     WHERE i.model_id = m.model_id),
         'fields', (SELECT v.columns FROM sluice._model_version v
                     WHERE v.model_id = m.model_id AND v.version = m.contract_version),
         'maintenance', rm.maintenance) ORDER BY m.depth, m.model_id), '[]')
       FROM sluice._run_model rm JOIN sluice._model m USING (model_id)
       JOIN pg_class c ON c.oid = m.model_table JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE rm.run_id = r.run_id));
  PERFORM sluice._emit(p.name, 'refresh_started', body);
  PERFORM sluice._emit(p.name, CASE WHEN r.status = 'succeeded' THEN 'refresh_completed' ELSE 'refresh_failed' END, body);
  IF r.status = 'paused' THEN
    PERFORM sluice._emit(p.name, 'pipeline_paused',
      jsonb_build_object('run_id', r.run_id, 'reason', r.error, 'summary', 'paused: ' || r.error));
  END IF;
  SELECT jsonb_agg(jsonb_build_object('expectation', e.name, 'kind', e.kind, 'severity', e.severity,
                                      'evaluated', er.evaluated, 'failed', er.failed, 'sample_keys', er.sample_keys)
                   ORDER BY e.expectation_id)
    INTO bad
    FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
   WHERE er.run_id = r.run_id AND NOT er.success;
  IF bad IS NOT NULL THEN
    PERFORM sluice._emit(p.name, 'expectation_failed',
      jsonb_build_object('run_id', r.run_id, 'failures', bad,
                         'summary', format('%s expectation(s) failed in run %s', jsonb_array_length(bad), r.run_id)));
  END IF;
  IF quarantined > 0 THEN
    PERFORM sluice._emit(p.name, 'quarantine',
      jsonb_build_object('run_id', r.run_id, 'rows', quarantined,
                         'summary', format('%s row(s) quarantined in run %s', quarantined, r.run_id)));
  END IF;
END
$$;
COMMENT ON FUNCTION sluice._emit_run(bigint, bigint) IS 'Private: queue the events of a recorded run.';

CREATE OR REPLACE FUNCTION sluice.tag(pipeline text, name text, version bigint DEFAULT NULL)
RETURNS name
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p record;
  t record;
  v bigint := version;
  sch name;
  cols text;
BEGIN
  p := sluice._pipeline_row(pipeline, false);
  IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,30}$' THEN
    RAISE EXCEPTION 'invalid tag name "%"', name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Lower-case letters, digits and _, starting with a letter or _, at most 31 characters.';
  END IF;
  IF v IS NULL THEN
    SELECT max(r.run_id) INTO v FROM sluice._run r WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded';
  END IF;
  PERFORM sluice._version_check(p.pipeline_id, v);
  sch := p.name || '_' || name;
  IF EXISTS (SELECT 1 FROM sluice._tag tg WHERE tg.pipeline_id = p.pipeline_id AND tg.name = tag.name) THEN
    RAISE EXCEPTION 'tag "%" of pipeline "%" already exists', name, pipeline USING ERRCODE = 'duplicate_object',
      HINT = 'sluice.untag() it first.';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = sch) THEN
    RAISE EXCEPTION 'schema "%" already exists', sch USING ERRCODE = 'duplicate_schema';
  END IF;
  PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE SCHEMA %I', sch), NULL);
  PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON SCHEMA %I IS %L', sch, format('pg_sluice: pipeline %s pinned at version %s (tag %s).', p.name, v, name)), NULL);
  FOR t IN SELECT * FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id
              AND cardinality(pt.key_columns) > 0 LOOP
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
       AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE VIEW %I.%I AS SELECT %s FROM %I.%I(%s)', sch, t.target_table, cols,
                   t.target_schema, t.target_table || '_at', v), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON VIEW %I.%I IS %L', sch, t.target_table,
                   format('%I.%I at version %s (tag %s).', t.target_schema, t.target_table, v, name)), NULL);
    -- BI tools show column comments as descriptions: the table's own
    EXECUTE coalesce((SELECT string_agg(format('COMMENT ON COLUMN %I.%I.%I IS %L', sch, t.target_table, a.attname,
                                               col_description(a.attrelid, a.attnum)), '; ')
                        FROM pg_attribute a
                       WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
                         AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version'
                         AND col_description(a.attrelid, a.attnum) IS NOT NULL), 'SELECT');
  END LOOP;
  -- the pipeline's models that keep history (sluice.models), pinned too
  FOR t IN SELECT n.nspname AS target_schema, c.relname AS target_table
             FROM sluice._model m JOIN pg_class c ON c.oid = m.model_table
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE m.pipeline_ids[1] = p.pipeline_id AND m.history LOOP
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
       AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE VIEW %I.%I AS SELECT %s FROM %I.%I(%s)', sch, t.target_table, cols,
                   t.target_schema, t.target_table || '_at', v), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON VIEW %I.%I IS %L', sch, t.target_table,
                   format('Model %I.%I at version %s (tag %s).', t.target_schema, t.target_table, v, name)), NULL);
  END LOOP;
  INSERT INTO sluice._tag (pipeline_id, name, version, schema_name) VALUES (p.pipeline_id, name, v, sch);
  RETURN sch;
END
$$;
COMMENT ON FUNCTION sluice.tag(text, text, bigint) IS
  'Names a version (default: the latest) and exposes it as schema <pipeline>_<tag> with one view per table; tagged versions survive purges. Returns the schema.';

CREATE OR REPLACE FUNCTION sluice._history_of(target regclass,
    OUT pipeline_id integer, OUT key_columns text[], OUT at_function text)
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  SELECT pt.pipeline_id, pt.key_columns, format('%I.%I', pt.target_schema, pt.target_table || '_at')
    INTO pipeline_id, key_columns, at_function
    FROM sluice._pipeline_table pt
    JOIN pg_class c ON c.relname = pt.target_table
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = pt.target_schema
   WHERE c.oid = target;
  IF NOT FOUND THEN
    -- a model: keyed by its unique_key, or its GROUP BY columns
    SELECT m.pipeline_ids[1], coalesce(m.unique_key, m.group_by)::text[],
           format('%I.%I', n.nspname, c.relname || '_at')
      INTO pipeline_id, key_columns, at_function
      FROM sluice._model m JOIN pg_class c ON c.oid = m.model_table JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE m.model_table = target;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'table % is not fed by a pg_sluice pipeline', target USING ERRCODE = 'undefined_object',
      HINT = 'sluice.pipeline_tables lists the datamart tables pg_sluice feeds, sluice.models the models.';
  END IF;
END
$$;
COMMENT ON FUNCTION sluice._history_of(regclass) IS
  'Private: the pipeline, key and time-travel function of a datamart table or model (for sluice.diff, run by readers).';

CREATE OR REPLACE FUNCTION sluice.release_quarantined(quarantine_id bigint, corrected jsonb DEFAULT NULL,
                                           force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  q record;
  keys text[];
  cols text;
  target text;
  newrow jsonb;
  stamped jsonb;
  keycol text;
  keymatch text;
  versioned boolean;
  hist regclass;
  replaced boolean := false;
  rel_version bigint;
BEGIN
  SELECT * INTO q FROM sluice._quarantine WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no held quarantined row %', quarantine_id USING ERRCODE = 'undefined_object',
      HINT = 'sluice.quarantine lists the held rows.';
  END IF;
  -- a refresh or worker batch of the pipeline holds this row while it applies (and may supersede the entry)
  PERFORM 1 FROM sluice._pipeline p WHERE p.pipeline_id = q.pipeline_id FOR UPDATE;
  SELECT * INTO q FROM sluice._quarantine WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id FOR UPDATE;
  IF q.status = 'superseded' AND NOT coalesce(force, false) THEN
    RAISE EXCEPTION 'quarantined row % is superseded by a later change of its key', quarantine_id
      USING ERRCODE = 'object_not_in_prerequisite_state',
      DETAIL = format('Source transaction %s %s the row with key %s after it was quarantined%s; the datamart already holds the key''s later state, which releasing this row would overwrite.',
                      q.superseded_xid,
                      CASE q.superseded_how WHEN 'applied' THEN 'changed' WHEN 'quarantined' THEN 'changed' ELSE q.superseded_how END,
                      q.row_key,
                      CASE WHEN q.superseded_by IS NOT NULL THEN format(' (held again as quarantined row %s)', q.superseded_by) ELSE '' END),
      HINT = CASE WHEN q.superseded_by IS NOT NULL
                  THEN format('Release the latest entry, sluice.release_quarantined(%s), or pass force => true to write this stale row anyway.', q.superseded_by)
                  ELSE 'Pass force => true to write this stale row anyway.' END;
  END IF;
  IF q.status NOT IN ('held', 'superseded') THEN
    RAISE EXCEPTION 'no held quarantined row %', quarantine_id USING ERRCODE = 'undefined_object',
      HINT = 'sluice.quarantine lists the held rows.';
  END IF;
  target := format('%I.%I', q.target_schema, q.target_table);
  SELECT pt.key_columns INTO keys FROM sluice._pipeline_table pt
   WHERE pt.pipeline_id = q.pipeline_id AND (pt.target_schema, pt.target_table) = (q.target_schema, q.target_table);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'quarantined row % is for table %, which pipeline % does not feed', quarantine_id, target, q.pipeline_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Discard it with sluice.discard_quarantined().';
  END IF;
  -- a correction may give only the columns it changes: the rest come from the stored row
  newrow := q.row_data || coalesce(corrected, '{}');
  FOREACH keycol IN ARRAY coalesce(keys, '{}') LOOP
    IF newrow -> keycol IS DISTINCT FROM q.row_data -> keycol THEN
      RAISE EXCEPTION 'the correction changes key column "%" of quarantined row %', keycol, quarantine_id
        USING ERRCODE = 'invalid_parameter_value',
        DETAIL = format('The row was quarantined with key %s; the source has no row with the corrected key.', q.row_key),
        HINT = 'Correct other columns only; fix the key on the source, and the next refresh applies it.';
    END IF;
  END LOOP;
  SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = target::regclass AND a.attnum > 0 AND NOT a.attisdropped;
  -- the release is a version of its own: the row carries it, not the version
  -- of the batch that held it back, and the row it replaces goes to history
  versioned := EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = target::regclass
                          AND a.attname = '_sluice_version' AND NOT a.attisdropped);
  IF versioned THEN
    hist := to_regclass(format('%I.%I', q.target_schema || '_history', q.target_table));
  END IF;
  IF cardinality(keys) > 0 THEN
    keymatch := (SELECT string_agg(format('t.%1$I = r.%1$I', k), ' AND ') FROM unnest(keys) k);
    replaced := sluice._exec_as_owner(q.pipeline_id,
                  format('SELECT EXISTS (SELECT FROM %1$s t, jsonb_populate_record(NULL::%1$s, $1) r WHERE %2$s)', target, keymatch),
                  newrow)::boolean;
  END IF;
  rel_version := sluice._release_version(q.pipeline_id, q.target_schema, q.target_table, replaced);
  stamped := CASE WHEN versioned THEN newrow || jsonb_build_object('_sluice_version', rel_version) ELSE newrow END;
  IF replaced AND hist IS NOT NULL THEN
    PERFORM sluice._exec_as_owner(q.pipeline_id,
              format('WITH d AS (DELETE FROM %1$s t USING jsonb_populate_record(NULL::%1$s, $1) r WHERE %2$s RETURNING t.*) '
                     'INSERT INTO %3$s (%4$s, _sluice_superseded) SELECT %4$s, %5$s FROM d', target, keymatch, hist, cols, rel_version),
              stamped);
  END IF;
  IF cardinality(keys) > 0 THEN
    PERFORM sluice._exec_as_owner(q.pipeline_id, format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1) ON CONFLICT (%s) DO UPDATE SET (%s) = ROW(%s)',
                   target, target, (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k), cols,
                   (SELECT string_agg(format('EXCLUDED.%I', a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_attribute a WHERE a.attrelid = target::regclass AND a.attnum > 0 AND NOT a.attisdropped)), stamped);
  ELSE
    PERFORM sluice._exec_as_owner(q.pipeline_id, format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1)', target, target), stamped);
  END IF;
  -- written outside a batch: the models that read the table are rebuilt
  PERFORM sluice._models_after_write(target::regclass);
  UPDATE sluice._quarantine SET status = 'released', resolved_at = now(), row_data = newrow
   WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.release_quarantined(bigint, jsonb, boolean) IS
  'Writes a held row into its datamart table (as stored, or merged with a correction that gives the columns it changes), replacing the row with the same key; marks it released. A row superseded by a later change of its key is refused unless force.';

-------------------------------------------------------------------------------
-- Catalog
-------------------------------------------------------------------------------

CREATE TABLE sluice._model (
    model_id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE
                     CHECK (name OPERATOR(pg_catalog.~) '^[a-z_][a-z0-9_]{0,47}$'),
    model_table      regclass NOT NULL UNIQUE,
    query_view       regclass NOT NULL UNIQUE,
    owner            regrole NOT NULL,
    pipeline_ids     integer[] NOT NULL,
    unique_key       name[],
    maintenance      text NOT NULL CHECK (maintenance IN ('incremental', 'full')),
    reason           text NOT NULL,
    group_by         name[] NOT NULL DEFAULT '{}',
    depth            integer NOT NULL DEFAULT 0,
    contract_version integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       name NOT NULL DEFAULT CURRENT_USER,
    history          boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE sluice._model IS
  'Private: models. query_view is the model''s query, bound as a view in the private schema <schema>_models (never run as text); depth orders maintenance (0: reads only pipeline tables).';

CREATE TABLE sluice._model_input (
    model_id     integer NOT NULL REFERENCES sluice._model ON DELETE CASCADE,
    relid        regclass NOT NULL,
    pipeline_id  integer REFERENCES sluice._pipeline,
    input_model  integer REFERENCES sluice._model,
    PRIMARY KEY (model_id, relid),
    CHECK ((pipeline_id IS NULL) OPERATOR(pg_catalog.<>) (input_model IS NULL))
);
CREATE INDEX ON sluice._model_input (relid);
CREATE INDEX ON sluice._model_input (input_model);
COMMENT ON TABLE sluice._model_input IS
  'Private: what each model reads: pipeline tables and other models (the edges of the DAG).';

CREATE TABLE sluice._model_version (
    model_id     integer NOT NULL REFERENCES sluice._model ON DELETE CASCADE,
    version      integer NOT NULL,
    columns      jsonb NOT NULL,
    query        text NOT NULL,
    maintenance  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (model_id, version)
);
COMMENT ON TABLE sluice._model_version IS
  'Private: every version of a model''s contract (its result columns) and the query it was bound from (for reading only: never executed).';

CREATE TABLE sluice._model_expectation (
    expectation_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id       integer NOT NULL REFERENCES sluice._model ON DELETE CASCADE,
    name           text NOT NULL,
    kind           text NOT NULL,
    column_names   name[] NOT NULL DEFAULT '{}',
    args           jsonb NOT NULL DEFAULT '{}',
    severity       text NOT NULL CHECK (severity IN ('error', 'warn')),
    check_sql      text NOT NULL,
    check_tree     pg_node_tree NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (model_id, name)
);
COMMENT ON TABLE sluice._model_expectation IS
  'Private: expectations on models, bound when declared (check_tree, a query run after each maintenance); check_sql keeps the text for reading and for binding again to a rebuilt table.';

CREATE TABLE sluice._run_model (
    run_id        bigint NOT NULL REFERENCES sluice._run ON DELETE CASCADE,
    model_id      integer NOT NULL REFERENCES sluice._model ON DELETE CASCADE,
    maintenance   text NOT NULL CHECK (maintenance IN ('incremental', 'full')),
    reason        text,
    groups        bigint NOT NULL,
    rows_deleted  bigint NOT NULL,
    rows_inserted bigint NOT NULL,
    duration      interval NOT NULL,
    expectations  jsonb NOT NULL,
    PRIMARY KEY (run_id, model_id)
);
CREATE INDEX ON sluice._run_model (model_id, run_id);
COMMENT ON TABLE sluice._run_model IS
  'Private: how each run maintained each model.';

SELECT pg_catalog.pg_extension_config_dump('sluice._model', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._model_input', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._model_version', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._model_expectation', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._run_model', '');

ALTER TABLE sluice._model ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._model USING (sluice._operates(owner::oid));
ALTER TABLE sluice._model_input ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._model_input USING (model_id IN (SELECT m.model_id FROM sluice._model m));
ALTER TABLE sluice._model_version ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._model_version USING (model_id IN (SELECT m.model_id FROM sluice._model m));
ALTER TABLE sluice._model_expectation ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._model_expectation USING (model_id IN (SELECT m.model_id FROM sluice._model m));
ALTER TABLE sluice._run_model ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._run_model USING (model_id IN (SELECT m.model_id FROM sluice._model m));

-------------------------------------------------------------------------------
-- Declaration
-------------------------------------------------------------------------------

CREATE FUNCTION sluice._model_bind(pipeline_id integer, schema name, name name, query text, search_schemas name[])
RETURNS void
AS 'MODULE_PATHNAME', 'sluice_model_bind'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice._model_bind(integer, name, name, text, name[]) IS
  'Private: a model''s query, checked to be one SELECT, bound as the view schema.name by the pipeline''s owner (restricted), names resolved in pg_catalog then search_schemas.';

CREATE FUNCTION sluice._model_analyze(view regclass,
    OUT maintenance text, OUT reason text, OUT input regclass, OUT group_by name[])
AS 'MODULE_PATHNAME', 'sluice_model_analyze'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice._model_analyze(regclass) IS
  'Private: whether a model of this view is maintained incrementally (one GROUP BY over one table) or rebuilt, and why.';

CREATE FUNCTION sluice._model_columns(rel regclass)
RETURNS jsonb
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
                            ORDER BY a.attnum), '[]')
    FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$$;
COMMENT ON FUNCTION sluice._model_columns(regclass) IS 'Private: a model''s contract: its columns, names and types, in order.';

CREATE FUNCTION sluice._model_inputs(view regclass, pipeline_ids integer[], model text, owner regrole)
RETURNS TABLE (relid regclass, pipeline_id integer, input_model integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r regclass;
  pid integer;
  mid integer;
  mowner regrole;
BEGIN
  FOR r IN SELECT DISTINCT d.refobjid::regclass FROM pg_depend d
             JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
            WHERE rw.ev_class = view AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> view LOOP
    SELECT pt.pipeline_id INTO pid FROM sluice._pipeline_table pt
      JOIN pg_class c ON c.relname = pt.target_table
      JOIN pg_namespace ns ON ns.oid = c.relnamespace AND ns.nspname = pt.target_schema
     WHERE c.oid = r;
    IF pid = ANY (pipeline_ids) THEN
      relid := r; pipeline_id := pid; input_model := NULL;
      RETURN NEXT;
      CONTINUE;
    END IF;
    SELECT m.model_id, m.owner INTO mid, mowner FROM sluice._model m WHERE m.model_table = r;
    IF mid IS NOT NULL THEN
      IF mowner <> owner THEN
        RAISE EXCEPTION 'model "%" reads model %, which has another owner', model, r
          USING ERRCODE = 'insufficient_privilege',
          HINT = 'A model is maintained as its owner: build it on models of the same owner.';
      END IF;
      relid := r; pipeline_id := NULL; input_model := mid;
      RETURN NEXT;
      CONTINUE;
    END IF;
    RAISE EXCEPTION 'model "%" reads %, which is neither a table of its pipelines nor a model', model, r
      USING ERRCODE = 'invalid_parameter_value',
      DETAIL = CASE WHEN pid IS NOT NULL
                    THEN format('It is a table of pipeline %s, which the model does not name.',
                                (SELECT p.name FROM sluice._pipeline p WHERE p.pipeline_id = pid))
                    ELSE 'A model is maintained when a batch changes what it reads: it may read only tables pg_sluice writes.' END,
      HINT = 'Name every pipeline whose tables the query reads in pipelines, or make the other table a pipeline table or a model first.';
  END LOOP;
END
$$;
COMMENT ON FUNCTION sluice._model_inputs(regclass, integer[], text, regrole) IS
  'Private: what a model''s view reads (pg_depend), each a table of the named pipelines or a model of the same owner, or an error.';

CREATE FUNCTION sluice._model_depths()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- the models form a DAG (cycles are refused): this ends
  LOOP
    UPDATE sluice._model m SET depth = x.d
      FROM (SELECT m2.model_id, coalesce(max(im.depth) + 1, 0) AS d
              FROM sluice._model m2
              LEFT JOIN sluice._model_input i ON i.model_id = m2.model_id AND i.input_model IS NOT NULL
              LEFT JOIN sluice._model im ON im.model_id = i.input_model
             GROUP BY m2.model_id) x
     WHERE x.model_id = m.model_id AND m.depth <> x.d;
    EXIT WHEN NOT FOUND;
  END LOOP;
END
$$;
COMMENT ON FUNCTION sluice._model_depths() IS 'Private: each model''s depth in the DAG (0: reads only pipeline tables), the order batches maintain them in.';

CREATE FUNCTION sluice._model_row(model text)
RETURNS sluice._model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
BEGIN
  IF model IS NULL THEN
    RAISE EXCEPTION 'model must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT * INTO m FROM sluice._model x WHERE x.name = model FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model "%" does not exist', model USING ERRCODE = 'undefined_object',
      HINT = 'sluice.models lists the models.';
  END IF;
  -- waits for the refreshes of its pipelines: none maintains it meanwhile
  PERFORM 1 FROM sluice._pipeline p WHERE p.pipeline_id = ANY (m.pipeline_ids) ORDER BY p.pipeline_id FOR UPDATE;
  RETURN m;
END
$$;
COMMENT ON FUNCTION sluice._model_row(text) IS
  'Private: a model''s catalog row by name, locked with its pipelines against refreshes; the errors for a NULL or unknown name.';

-- The model's table from its view, as the owner: its key or group index.
CREATE FUNCTION sluice._model_table(pipeline_id integer, view regclass, sch name, tbl name,
                                    unique_key name[], group_by name[], maintenance text)
RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  k name;
  t regclass;
BEGIN
  FOREACH k IN ARRAY coalesce(unique_key, '{}') LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = view AND a.attname = k AND a.attnum > 0) THEN
      RAISE EXCEPTION 'unique_key column "%" is not a column of the query''s result', k USING ERRCODE = 'undefined_column',
        HINT = 'Name columns of the result (their names, or their aliases with AS).';
    END IF;
  END LOOP;
  IF to_regclass(format('%I.%I', sch, tbl)) IS NOT NULL THEN
    RAISE EXCEPTION 'relation %.% already exists', quote_ident(sch), quote_ident(tbl) USING ERRCODE = 'duplicate_table',
      HINT = 'Give the model''s table another name (table_name) or schema (schema).';
  END IF;
  PERFORM sluice._exec_as_owner(pipeline_id, format('CREATE TABLE %I.%I AS SELECT * FROM %s WITH NO DATA', sch, tbl, view), NULL);
  t := format('%I.%I', sch, tbl)::regclass;
  IF cardinality(unique_key) > 0 THEN
    PERFORM sluice._exec_as_owner(pipeline_id, format('CREATE UNIQUE INDEX ON %s (%s)', t,
                   (SELECT string_agg(format('%I', x), ', ') FROM unnest(unique_key) x)), NULL);
  ELSIF maintenance = 'incremental' THEN
    -- a batch deletes its touched groups by these columns
    PERFORM sluice._exec_as_owner(pipeline_id, format('CREATE INDEX ON %s (%s)', t,
                   (SELECT string_agg(format('%I', x), ', ') FROM unnest(group_by) x)), NULL);
  END IF;
  RETURN t;
END
$$;
COMMENT ON FUNCTION sluice._model_table(integer, regclass, name, name, name[], name[], text) IS
  'Private: creates a model''s (empty) table from its view, as the pipeline''s owner, with its unique_key or an index on its GROUP BY columns.';

-- Fill a model's table from its view outside a batch (create, alter,
-- rebuild).  With history, as part of the latest version of its pipelines:
-- the rows replaced go to the history table superseded by it.
CREATE FUNCTION sluice._model_fill(model_id integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
  v bigint;
  h text;
BEGIN
  SELECT * INTO m FROM sluice._model x WHERE x.model_id = _model_fill.model_id;
  IF m.history THEN
    SELECT max(r.run_id) INTO v FROM sluice._run r WHERE r.pipeline_id = ANY (m.pipeline_ids) AND r.status = 'succeeded';
    SELECT format('%I.%I', n.nspname || '_history', c.relname) INTO h
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.model_table;
    PERFORM sluice._exec_as_owner(m.pipeline_ids[1],
              format('WITH d AS (DELETE FROM %s RETURNING *) INSERT INTO %s SELECT d.*, %s FROM d', m.model_table, h, v), NULL);
    RETURN sluice._exec_as_owner(m.pipeline_ids[1],
              format('WITH i AS (INSERT INTO %s SELECT v.*, %s FROM %s v RETURNING 1) SELECT count(*) FROM i', m.model_table, v, m.query_view),
              NULL)::bigint;
  END IF;
  PERFORM sluice._exec_as_owner(m.pipeline_ids[1], format('DELETE FROM %s', m.model_table), NULL);
  RETURN sluice._exec_as_owner(m.pipeline_ids[1],
           format('WITH i AS (INSERT INTO %s SELECT * FROM %s RETURNING 1) SELECT count(*) FROM i', m.model_table, m.query_view),
           NULL)::bigint;
END
$$;
COMMENT ON FUNCTION sluice._model_fill(integer) IS
  'Private: rebuilds a model''s table from its view outside a batch (with history: as part of its pipelines'' latest version); returns its rows.';

-- Versions of a model, as sluice.keep_history gives a pipeline's tables:
-- _sluice_version, <schema>_history.<table>, <table>_at(version) and
-- <table>_at_time(timestamptz).
CREATE FUNCTION sluice._model_keep_history(model_id integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $mk$
DECLARE
  m sluice._model;
  pid integer;
  v0 bigint;
  sch name;
  tbl name;
  hs name;
  cols text;
BEGIN
  SELECT * INTO m FROM sluice._model x WHERE x.model_id = _model_keep_history.model_id;
  pid := m.pipeline_ids[1];
  SELECT max(r.run_id) INTO v0 FROM sluice._run r WHERE r.pipeline_id = ANY (m.pipeline_ids) AND r.status = 'succeeded';
  SELECT n.nspname, c.relname INTO sch, tbl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.model_table;
  hs := sch || '_history';
  PERFORM sluice._exec_as_owner(pid, format('ALTER TABLE %s ADD COLUMN _sluice_version bigint NOT NULL DEFAULT %s', m.model_table, v0), NULL);
  PERFORM sluice._exec_as_owner(pid, format('ALTER TABLE %s ALTER COLUMN _sluice_version DROP DEFAULT', m.model_table), NULL);
  PERFORM sluice._exec_as_owner(pid, format('COMMENT ON COLUMN %s._sluice_version IS %L', m.model_table,
                 'pg_sluice: version (sluice.versions) that wrote this row.'), NULL);
  PERFORM sluice._exec_as_owner(pid, format('CREATE SCHEMA IF NOT EXISTS %I', hs), NULL);
  PERFORM sluice._exec_as_owner(pid, format('CREATE TABLE %I.%I (LIKE %s INCLUDING COMMENTS)', hs, tbl, m.model_table), NULL);
  PERFORM sluice._exec_as_owner(pid, format('ALTER TABLE %I.%I ADD COLUMN _sluice_superseded bigint NOT NULL', hs, tbl), NULL);
  PERFORM sluice._exec_as_owner(pid, format('CREATE INDEX ON %I.%I (_sluice_superseded)', hs, tbl), NULL);
  PERFORM sluice._exec_as_owner(pid, format('COMMENT ON TABLE %I.%I IS %L', hs, tbl,
                 format('pg_sluice: superseded versions of the rows of model %s, valid for versions [_sluice_version, _sluice_superseded).', m.name)), NULL);
  SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = m.model_table AND a.attnum > 0 AND NOT a.attisdropped;
  PERFORM sluice._exec_as_owner(pid, format($f$CREATE OR REPLACE FUNCTION %1$I.%3$I(version bigint) RETURNS SETOF %1$I.%2$I
                    LANGUAGE sql STABLE PARALLEL SAFE AS %4$L$f$,
                 sch, tbl, tbl || '_at',
                 format('SELECT %3$s FROM %1$I.%2$I WHERE _sluice_version <= $1 AND sluice._version_ok(%5$s, $1)
                         UNION ALL
                         SELECT %3$s FROM %4$I.%2$I WHERE _sluice_version <= $1 AND _sluice_superseded > $1
                            AND sluice._version_ok(%5$s, $1)',
                        sch, tbl, cols, hs, pid)), NULL);
  PERFORM sluice._exec_as_owner(pid, format($f$COMMENT ON FUNCTION %1$I.%2$I(bigint) IS %3$L$f$, sch, tbl || '_at',
                 format('pg_sluice: model %s as it was at a version (sluice.versions).', m.name)), NULL);
  PERFORM sluice._exec_as_owner(pid, format($f$CREATE OR REPLACE FUNCTION %1$I.%3$I(at timestamptz) RETURNS SETOF %1$I.%2$I
                    LANGUAGE sql STABLE PARALLEL SAFE AS %4$L$f$,
                 sch, tbl, tbl || '_at_time',
                 format('SELECT * FROM %I.%I(sluice._version_at(%s, $1))', sch, tbl || '_at', pid)), NULL);
  PERFORM sluice._exec_as_owner(pid, format($f$COMMENT ON FUNCTION %1$I.%2$I(timestamptz) IS %3$L$f$, sch, tbl || '_at_time',
                 format('pg_sluice: model %s as it was at a moment (the last version committed then).', m.name)), NULL);
  UPDATE sluice._model x SET history = true WHERE x.model_id = m.model_id;
END
$mk$;
COMMENT ON FUNCTION sluice._model_keep_history(integer) IS
  'Private: a model keeps its versions (its pipelines keep history): _sluice_version, its history table, <table>_at(version) and <table>_at_time(timestamptz).';

-- Drop a model's table with its history and time-travel functions.
CREATE FUNCTION sluice._model_drop_table(model_id integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
  sch name;
  tbl name;
BEGIN
  SELECT * INTO m FROM sluice._model x WHERE x.model_id = _model_drop_table.model_id;
  SELECT n.nspname, c.relname INTO sch, tbl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.model_table;
  IF sch IS NULL THEN
    RETURN;
  END IF;
  IF m.history THEN
    PERFORM sluice._exec_as_owner(m.pipeline_ids[1], format('DROP FUNCTION IF EXISTS %I.%I(timestamptz)', sch, tbl || '_at_time'), NULL);
    PERFORM sluice._exec_as_owner(m.pipeline_ids[1], format('DROP FUNCTION IF EXISTS %I.%I(bigint)', sch, tbl || '_at'), NULL);
    PERFORM sluice._exec_as_owner(m.pipeline_ids[1], format('DROP TABLE IF EXISTS %I.%I', sch || '_history', tbl), NULL);
  END IF;
  PERFORM sluice._exec_as_owner(m.pipeline_ids[1], format('DROP TABLE %I.%I', sch, tbl), NULL);
END
$$;
COMMENT ON FUNCTION sluice._model_drop_table(integer) IS 'Private: drops a model''s table, its history table and its time-travel functions.';

-- Rebuild the models that read a model, in dependency order, after it was
-- rebuilt outside a batch (alter_model, rebuild_model).
CREATE FUNCTION sluice._model_refill_downstream(model_id integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d record;
BEGIN
  FOR d IN WITH RECURSIVE down(id) AS (
             SELECT i.model_id FROM sluice._model_input i WHERE i.input_model = _model_refill_downstream.model_id
             UNION SELECT i.model_id FROM sluice._model_input i JOIN down ON i.input_model = down.id)
           SELECT m.* FROM sluice._model m JOIN down ON down.id = m.model_id ORDER BY m.depth, m.model_id LOOP
    PERFORM sluice._model_fill(d.model_id);
  END LOOP;
END
$$;
COMMENT ON FUNCTION sluice._model_refill_downstream(integer) IS
  'Private: rebuilds every model that reads this one, directly or not, in dependency order.';

-- Rows written to a table outside a batch (release_quarantined, repair):
-- the models that read it are rebuilt, and those that read them.
CREATE FUNCTION sluice._models_after_write(target regclass)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d record;
  n integer := 0;
BEGIN
  IF to_regclass('sluice._model') IS NULL THEN
    RETURN 0;
  END IF;
  FOR d IN SELECT m.model_id FROM sluice._model m JOIN sluice._model_input i USING (model_id)
            WHERE i.relid = target ORDER BY m.depth, m.model_id LOOP
    PERFORM sluice._model_fill(d.model_id);
    PERFORM sluice._model_refill_downstream(d.model_id);
    n := n + 1;
  END LOOP;
  RETURN n;
END
$$;
COMMENT ON FUNCTION sluice._models_after_write(regclass) IS
  'Private: rebuilds the models that read a table written outside a batch (release_quarantined, repair), and the models that read those; returns how many read it.';

-- A model's query is a view over the tables it reads, which pins the type
-- of every column it reads: the models reading a column, for messages.
CREATE FUNCTION sluice._models_reading(target regclass, column_name name)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT string_agg(format('"%s"', m.name), ', ' ORDER BY m.name)
    FROM sluice._model m
   WHERE EXISTS (SELECT FROM pg_rewrite r
                   JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                  WHERE r.ev_class = m.query_view AND d.refclassid = 'pg_class'::regclass
                    AND d.refobjid = target AND a.attname = column_name)
$$;
COMMENT ON FUNCTION sluice._models_reading(regclass, name) IS
  'Private: the models whose query reads a column of a table ("a", "b"), or NULL.';

-- accept_type_change and drop_column refuse what a model's query pins,
-- before anything is altered, naming the models (the ALTER's own error
-- names a view in a private schema).
CREATE FUNCTION sluice._refuse_model_readers(target regclass, column_name name, change text)
RETURNS void
LANGUAGE plpgsql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m text := sluice._models_reading(target, column_name);
BEGIN
  IF m IS NOT NULL THEN
    RAISE EXCEPTION 'cannot % column "%" of %: model % reads it', change, column_name, target, m
      USING ERRCODE = 'dependent_objects_still_exist',
      DETAIL = 'A model''s query is a view over the tables it reads, which pins the columns it reads. Nothing was changed.',
      HINT = 'Drop the model with sluice.drop_model(), make the change, then create the model again.';
  END IF;
END
$$;
COMMENT ON FUNCTION sluice._refuse_model_readers(regclass, name, text) IS
  'Private: refuses a change to a column that a model''s query reads, naming the models.';

CREATE FUNCTION sluice.create_model(name text, query text, pipelines text[], unique_key name[] DEFAULT NULL,
                                    schema name DEFAULT NULL, table_name name DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p sluice._pipeline;
  pn text;
  pids integer[] := '{}';
  schemas name[] := '{}';
  own regrole;
  pid integer;
  sch name;
  tbl name;
  qs name;
  v regclass;
  t regclass;
  a record;
  mid integer;
  inputs sluice._model_input[];
BEGIN
  PERFORM sluice._require_arguments('sluice.create_model', ARRAY['name', 'query', 'pipelines'],
    ARRAY[name IS NULL, query IS NULL, coalesce(cardinality(pipelines), 0) = 0],
    'Name the model, give its query (one SELECT) and the pipelines whose tables it reads.');
  IF name !~ '^[a-z_][a-z0-9_]{0,47}$' THEN
    RAISE EXCEPTION 'invalid model name "%"', name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Lower-case letters, digits and _, starting with a letter or _, at most 48 characters; the table may have another name (table_name).';
  END IF;
  IF EXISTS (SELECT 1 FROM sluice._model m WHERE m.name = create_model.name) THEN
    RAISE EXCEPTION 'model "%" already exists', name USING ERRCODE = 'duplicate_object',
      HINT = 'Change its query with sluice.alter_model, or drop it with sluice.drop_model.';
  END IF;
  -- each pipeline locked: no batch commits between the model's first
  -- build and its first maintenance
  FOREACH pn IN ARRAY pipelines LOOP
    p := sluice._pipeline_row(pn);
    IF own IS NULL THEN
      own := p.owner;
      pid := p.pipeline_id;
      sch := coalesce(schema, p.target_schema);
    ELSIF p.owner <> own THEN
      RAISE EXCEPTION 'pipelines "%" and "%" have different owners', pipelines[1], pn USING ERRCODE = 'invalid_parameter_value',
        DETAIL = 'A model is maintained inside its pipelines'' batches, as their owner.',
        HINT = 'Give them one owner first (sluice.alter_pipeline_owner).';
    END IF;
    pids := pids || p.pipeline_id;
    schemas := schemas || p.target_schema;
  END LOOP;
  tbl := coalesce(table_name, name);
  -- the private schema of the queries, the owner's
  qs := sch || '_models';
  IF EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = qs AND n.nspowner <> own::oid) THEN
    RAISE EXCEPTION 'schema "%" belongs to another role than the owner of the pipelines', qs
      USING ERRCODE = 'insufficient_privilege',
      DETAIL = 'pg_sluice keeps the models'' queries of schema ' || quote_ident(sch) || ' there, as views of the owner.',
      HINT = 'Drop or rename that schema, or put the model in another schema (schema).';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = qs) THEN
    PERFORM sluice._exec_as_owner(pid, format('CREATE SCHEMA %I', qs), NULL);
    PERFORM sluice._exec_as_owner(pid, format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', qs), NULL);
    PERFORM sluice._exec_as_owner(pid, format('COMMENT ON SCHEMA %I IS %L', qs,
                   format('pg_sluice: the queries of the models in schema %s, bound as views (private).', sch)), NULL);
  END IF;
  PERFORM sluice._model_bind(pid, qs, name || '_v1', query, schemas);
  v := format('%I.%I', qs, name || '_v1')::regclass;
  a := sluice._model_analyze(v);
  inputs := ARRAY(SELECT ROW(0, i.relid, i.pipeline_id, i.input_model)::sluice._model_input
                    FROM sluice._model_inputs(v, pids, name, own) i);
  IF cardinality(inputs) = 0 THEN
    RAISE EXCEPTION 'model "%" reads no table', name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'A model is a query over the tables of its pipelines (or other models).';
  END IF;
  IF a.maintenance = 'incremental' AND EXISTS (SELECT 1 FROM unnest(inputs) i WHERE i.input_model IS NOT NULL) THEN
    a.maintenance := 'full';
    a.reason := 'it reads a model: only a pipeline table''s batch says which groups changed';
  END IF;
  t := sluice._model_table(pid, v, sch, tbl, unique_key, a.group_by, a.maintenance);
  PERFORM sluice._exec_as_owner(pid, format('INSERT INTO %s SELECT * FROM %s', t, v), NULL);
  PERFORM sluice._exec_as_owner(pid, format('COMMENT ON TABLE %s IS %L', t,
                 format('pg_sluice model %s, maintained (%s) in the refreshes of %s.', name, a.maintenance,
                        array_to_string(pipelines, ', '))), NULL);
  INSERT INTO sluice._model (name, model_table, query_view, owner, pipeline_ids, unique_key, maintenance, reason, group_by)
  VALUES (name, t, v, own, pids, unique_key, a.maintenance, a.reason, a.group_by)
  RETURNING model_id INTO mid;
  INSERT INTO sluice._model_input SELECT mid, i.relid, i.pipeline_id, i.input_model FROM unnest(inputs) i;
  INSERT INTO sluice._model_version (model_id, version, columns, query, maintenance)
  VALUES (mid, 1, sluice._model_columns(t), pg_get_viewdef(v), a.maintenance);
  PERFORM sluice._model_depths();
  -- versions like its pipelines' tables, when they all keep history
  IF NOT EXISTS (SELECT 1 FROM sluice._pipeline x WHERE x.pipeline_id = ANY (pids) AND NOT x.keep_history) THEN
    PERFORM sluice._model_keep_history(mid);
  END IF;
  RETURN a.maintenance;
END
$$;
COMMENT ON FUNCTION sluice.create_model(text, text, text[], name[], name, name) IS
  'Creates a model: a table of the datamart (schema.table_name, by default the first pipeline''s schema and the model''s name) holding the query''s result, maintained in the transaction of every batch of its pipelines that changes what it reads; returns how (incremental or full; sluice.models says why).';

CREATE FUNCTION sluice.alter_model(name text, query text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
  pid integer;
  schemas name[];
  qs name;
  sch name;
  tbl name;
  v regclass;
  t regclass;
  a record;
  inputs sluice._model_input[];
  i sluice._model_input;
  acl aclitem[];
  g record;
  e record;
  nv integer;
BEGIN
  PERFORM sluice._require_arguments('sluice.alter_model', ARRAY['name', 'query'], ARRAY[name IS NULL, query IS NULL],
    'Name the model and give its new query (one SELECT).');
  m := sluice._model_row(name);
  pid := m.pipeline_ids[1];
  nv := m.contract_version + 1;
  schemas := ARRAY(SELECT p.target_schema FROM unnest(m.pipeline_ids) WITH ORDINALITY x(id, n)
                     JOIN sluice._pipeline p ON p.pipeline_id = x.id ORDER BY x.n);
  SELECT n.nspname INTO qs FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.query_view;
  SELECT n.nspname, c.relname INTO sch, tbl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.model_table;
  PERFORM sluice._model_bind(pid, qs, m.name || '_v' || nv, query, schemas);
  v := format('%I.%I', qs, m.name || '_v' || nv)::regclass;
  a := sluice._model_analyze(v);
  inputs := ARRAY(SELECT ROW(m.model_id, x.relid, x.pipeline_id, x.input_model)::sluice._model_input
                    FROM sluice._model_inputs(v, m.pipeline_ids, m.name, m.owner) x);
  IF cardinality(inputs) = 0 THEN
    RAISE EXCEPTION 'model "%" would read no table', name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'A model is a query over the tables of its pipelines (or other models).';
  END IF;
  -- the models form a DAG: refuse an edge that closes a cycle
  FOREACH i IN ARRAY inputs LOOP
    CONTINUE WHEN i.input_model IS NULL;
    IF i.input_model = m.model_id OR EXISTS (
         WITH RECURSIVE up(id) AS (SELECT i.input_model
                                   UNION SELECT mi.input_model FROM sluice._model_input mi JOIN up ON mi.model_id = up.id
                                    WHERE mi.input_model IS NOT NULL)
         SELECT 1 FROM up WHERE up.id = m.model_id) THEN
      RAISE EXCEPTION 'model "%" would read itself through %', name, i.relid USING ERRCODE = 'invalid_recursion',
        DETAIL = 'Models are maintained in dependency order: their dependencies must not form a cycle.',
        HINT = 'Read the pipeline tables that model reads instead, or change that model first.';
    END IF;
  END LOOP;
  IF a.maintenance = 'incremental' AND EXISTS (SELECT 1 FROM unnest(inputs) x WHERE x.input_model IS NOT NULL) THEN
    a.maintenance := 'full';
    a.reason := 'it reads a model: only a pipeline table''s batch says which groups changed';
  END IF;
  IF sluice._model_columns(v) IS DISTINCT FROM sluice._model_columns(m.model_table) THEN
    -- a new contract: a new table, with the old one's grants
    IF EXISTS (SELECT 1 FROM sluice._model_input x WHERE x.input_model = m.model_id) THEN
      RAISE EXCEPTION 'the columns of model "%" would change, and other models read it', name
        USING ERRCODE = 'dependent_objects_still_exist',
        DETAIL = format('Read by: %s.', (SELECT string_agg(mm.name, ', ' ORDER BY mm.name) FROM sluice._model_input x
                                          JOIN sluice._model mm ON mm.model_id = x.model_id WHERE x.input_model = m.model_id)),
        HINT = 'Drop those models first (sluice.drop_model) and create them again after, or keep the columns.';
    END IF;
    SELECT c.relacl INTO acl FROM pg_class c WHERE c.oid = m.model_table;
    -- (its history has the old columns: it goes with the old contract)
    PERFORM sluice._model_drop_table(m.model_id);
    UPDATE sluice._model x SET history = false WHERE x.model_id = m.model_id;
    t := sluice._model_table(pid, v, sch, tbl, m.unique_key, a.group_by, a.maintenance);
    FOR g IN SELECT x.privilege_type, x.grantee FROM aclexplode(acl) x WHERE x.grantee <> m.owner::oid LOOP
      PERFORM sluice._exec_as_owner(pid, format('GRANT %s ON %s TO %s', g.privilege_type, t,
                     CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END), NULL);
    END LOOP;
    -- its expectations bound again to the new table (by their text, built by pg_sluice)
    FOR e IN SELECT * FROM sluice._model_expectation x WHERE x.model_id = m.model_id LOOP
      BEGIN
        -- (the new table has the old one's name: the text fits it)
        UPDATE sluice._model_expectation x SET check_tree = sluice._compile_check(t, e.check_sql)
         WHERE x.expectation_id = e.expectation_id;
      EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'expectation "%" of model "%" does not fit its new columns', e.name, name
          USING ERRCODE = 'invalid_object_definition', DETAIL = SQLERRM,
          HINT = 'Drop it first (sluice.drop_model_expectation), then declare it again.';
      END;
    END LOOP;
  ELSE
    t := m.model_table;
  END IF;
  PERFORM sluice._exec_as_owner(pid, format('DROP VIEW %s', m.query_view), NULL);
  UPDATE sluice._model x SET model_table = t, query_view = v, maintenance = a.maintenance, reason = a.reason,
         group_by = a.group_by, contract_version = nv
   WHERE x.model_id = m.model_id;
  PERFORM sluice._model_fill(m.model_id);
  IF m.history AND t <> m.model_table THEN
    PERFORM sluice._model_keep_history(m.model_id);
  END IF;
  DELETE FROM sluice._model_input x WHERE x.model_id = m.model_id;
  INSERT INTO sluice._model_input SELECT m.model_id, x.relid, x.pipeline_id, x.input_model FROM unnest(inputs) x;
  INSERT INTO sluice._model_version (model_id, version, columns, query, maintenance)
  VALUES (m.model_id, nv, sluice._model_columns(t), pg_get_viewdef(v), a.maintenance);
  PERFORM sluice._model_depths();
  PERFORM sluice._model_refill_downstream(m.model_id);
  RETURN nv;
END
$$;
COMMENT ON FUNCTION sluice.alter_model(text, text) IS
  'Gives a model a new query: bound, checked (no cycle), the table rebuilt (a new table when the columns change), a new contract version; returns it.';

CREATE FUNCTION sluice.drop_model(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
BEGIN
  m := sluice._model_row(name);
  IF EXISTS (SELECT 1 FROM sluice._model_input x WHERE x.input_model = m.model_id) THEN
    RAISE EXCEPTION 'other models read model "%"', name USING ERRCODE = 'dependent_objects_still_exist',
      DETAIL = format('Read by: %s.', (SELECT string_agg(mm.name, ', ' ORDER BY mm.name) FROM sluice._model_input x
                                        JOIN sluice._model mm ON mm.model_id = x.model_id WHERE x.input_model = m.model_id)),
      HINT = 'Drop them first.';
  END IF;
  PERFORM sluice._model_drop_table(m.model_id);
  PERFORM sluice._exec_as_owner(m.pipeline_ids[1], format('DROP VIEW IF EXISTS %s', m.query_view), NULL);
  DELETE FROM sluice._model x WHERE x.model_id = m.model_id;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.drop_model(text) IS 'Drops a model: its table, its query and its catalog rows (runs and expectations included).';

CREATE FUNCTION sluice.rebuild_model(name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
  n bigint;
BEGIN
  m := sluice._model_row(name);
  n := sluice._model_fill(m.model_id);
  PERFORM sluice._model_refill_downstream(m.model_id);
  RETURN n;
END
$$;
COMMENT ON FUNCTION sluice.rebuild_model(text) IS
  'Rebuilds a model (and the models that read it) from its query now (rows written by hand reach it this way; release_quarantined and repair rebuild the models they concern); returns its rows.';

CREATE FUNCTION sluice.expect_model(model text, kind text, column_names name[] DEFAULT '{}', args jsonb DEFAULT '{}',
                                    severity text DEFAULT 'error', name text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
  cols name[] := coalesce(column_names, '{}');
  c name;
  typ text;
  x record;
  chk text;
  tree pg_node_tree;
  ename text;
  t text;
BEGIN
  PERFORM sluice._require_arguments('sluice.expect_model', ARRAY['model', 'kind', 'severity'],
    ARRAY[model IS NULL, kind IS NULL, severity IS NULL], 'sluice.models lists the models.');
  m := sluice._model_row(model);
  t := m.model_table::text;
  IF kind NOT IN ('expect_column_values_to_not_be_null', 'expect_column_values_to_be_null',
      'expect_column_values_to_be_in_set', 'expect_column_values_to_not_be_in_set',
      'expect_column_values_to_be_between', 'expect_column_values_to_match_regex',
      'expect_column_values_to_not_match_regex', 'expect_column_values_to_match_like_pattern',
      'expect_column_value_lengths_to_be_between', 'expect_column_value_lengths_to_equal',
      'expect_row_to_satisfy', 'expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between',
      'expect_column_values_to_be_in_table', 'expect_column_max_to_be_fresh') THEN
    RAISE EXCEPTION 'unknown expectation "%"', kind USING ERRCODE = 'invalid_parameter_value',
      HINT = 'The names of sluice.add_expectation (Great Expectations'' names).';
  END IF;
  IF severity NOT IN ('error', 'warn') THEN
    RAISE EXCEPTION 'severity "%" is not for models', severity USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'A model''s rows are computed from its inputs: none can be held back.',
      HINT = 'Use error (the batch rolls back, its pipeline pauses) or warn (recorded).';
  END IF;
  FOREACH c IN ARRAY cols LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = m.model_table AND a.attname = c
                      AND a.attnum > 0 AND NOT a.attisdropped) THEN
      RAISE EXCEPTION 'column "%" is not a column of model "%"', c, model USING ERRCODE = 'undefined_column',
        HINT = 'sluice.model_versions lists its columns.';
    END IF;
  END LOOP;
  IF kind NOT IN ('expect_table_row_count_to_be_between', 'expect_row_to_satisfy') AND cardinality(cols) = 0 THEN
    RAISE EXCEPTION '% needs a column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF kind NOT IN ('expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between', 'expect_row_to_satisfy')
     AND cardinality(cols) <> 1 THEN
    RAISE EXCEPTION '% takes exactly one column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF cardinality(cols) > 0 THEN
    SELECT format_type(a.atttypid, a.atttypmod) INTO typ FROM pg_attribute a
     WHERE a.attrelid = m.model_table AND a.attname = cols[1];
  END IF;
  SELECT s.pred, s.chk INTO x FROM sluice._expectation_sql(m.model_table, kind, cols, coalesce(args, '{}'), typ) s;
  IF x.pred IS NOT NULL THEN
    -- a row predicate: checked now as one (no subquery, aggregate or volatile function)
    PERFORM sluice._compile_predicate(m.model_table, x.pred);
    -- then counted over the rows the batch wrote to the model
    chk := format($q$SELECT count(*) FILTER (WHERE NOT coalesce((%1$s), true)), count(*), NULL::text,
                            (SELECT jsonb_agg(to_jsonb(b)) FROM (SELECT * FROM %2$s b0
                               WHERE sluice._changed_here(b0.xmin) AND NOT coalesce((%1$s), true) LIMIT 5) b)
                       FROM %2$s t WHERE sluice._changed_here(t.xmin)$q$, x.pred, t);
  ELSE
    chk := x.chk;
  END IF;
  tree := sluice._compile_check(m.model_table, chk);
  -- run once now: a broken check fails here, not in a refresh
  EXECUTE chk;
  ename := coalesce(name, kind || CASE WHEN cardinality(cols) > 0 THEN '_' || array_to_string(cols, '_') ELSE '' END
                          || '_' || m.name);
  IF EXISTS (SELECT 1 FROM sluice._model_expectation e WHERE e.model_id = m.model_id AND e.name = ename) THEN
    RAISE EXCEPTION 'expectation "%" already exists on model "%"', ename, model USING ERRCODE = 'duplicate_object',
      HINT = 'Give it another name, or drop the existing one with sluice.drop_model_expectation().';
  END IF;
  INSERT INTO sluice._model_expectation (model_id, name, kind, column_names, args, severity, check_sql, check_tree)
  VALUES (m.model_id, ename, kind, cols, coalesce(args, '{}'), severity, chk, tree);
  RETURN ename;
END
$$;
COMMENT ON FUNCTION sluice.expect_model(text, text, name[], jsonb, text, text) IS
  'Declares an expectation (the names of sluice.add_expectation) on a model, checked after each maintenance inside the batch: error rolls the whole batch back and pauses the pipeline, warn records; returns its name.';

CREATE FUNCTION sluice.drop_model_expectation(model text, name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m sluice._model;
BEGIN
  m := sluice._model_row(model);
  DELETE FROM sluice._model_expectation e WHERE e.model_id = m.model_id AND e.name = drop_model_expectation.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'expectation "%" does not exist on model "%"', name, model USING ERRCODE = 'undefined_object',
      HINT = 'sluice.models lists each model''s expectations.';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.drop_model_expectation(text, text) IS 'Removes an expectation from a model.';

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

CREATE VIEW sluice.models AS
SELECT m.name,
       m.model_table,
       m.owner,
       ARRAY(SELECT p.name FROM unnest(m.pipeline_ids) WITH ORDINALITY x(id, n)
               JOIN sluice._pipeline p ON p.pipeline_id OPERATOR(pg_catalog.=) x.id ORDER BY x.n) AS pipelines,
       ARRAY(SELECT i.relid::pg_catalog.text FROM sluice._model_input i
              WHERE i.model_id OPERATOR(pg_catalog.=) m.model_id ORDER BY 1) AS reads,
       m.maintenance,
       m.reason,
       m.group_by,
       m.unique_key,
       m.depth,
       m.contract_version,
       m.history,
       pg_catalog.pg_get_viewdef(m.query_view) AS query,
       ARRAY(SELECT e.name FROM sluice._model_expectation e
              WHERE e.model_id OPERATOR(pg_catalog.=) m.model_id ORDER BY e.expectation_id) AS expectations,
       r.run_id AS last_run_id,
       r.maintenance AS last_maintenance,
       r.duration AS last_duration,
       m.created_at
  FROM sluice._model m
  LEFT JOIN LATERAL (SELECT rm.run_id, rm.maintenance, rm.duration FROM sluice._run_model rm
                      WHERE rm.model_id OPERATOR(pg_catalog.=) m.model_id
                      ORDER BY rm.run_id DESC LIMIT 1) r ON true;
COMMENT ON VIEW sluice.models IS
  'Models: tables defined by a query over pipeline tables and other models, maintained in the transaction of each batch that changes what they read.';
COMMENT ON COLUMN sluice.models.name IS 'Model name.';
COMMENT ON COLUMN sluice.models.model_table IS 'The datamart table holding the model''s rows.';
COMMENT ON COLUMN sluice.models.owner IS 'Owner of its pipelines: the model is maintained as this role.';
COMMENT ON COLUMN sluice.models.pipelines IS 'Pipelines whose batches maintain it.';
COMMENT ON COLUMN sluice.models.reads IS 'What its query reads: pipeline tables and models (the edges of the DAG).';
COMMENT ON COLUMN sluice.models.maintenance IS 'incremental: a batch recomputes only the groups its rows touched; full: a batch rebuilds the whole model.';
COMMENT ON COLUMN sluice.models.reason IS 'Why it is maintained that way, decided from the bound query.';
COMMENT ON COLUMN sluice.models.group_by IS 'Incremental: the result columns that are its GROUP BY expressions.';
COMMENT ON COLUMN sluice.models.unique_key IS 'Columns of a unique index on the model''s table (dbt''s unique_key), or NULL.';
COMMENT ON COLUMN sluice.models.depth IS 'Depth in the DAG of models: 0 reads only pipeline tables; batches maintain models by depth.';
COMMENT ON COLUMN sluice.models.contract_version IS 'Version of its contract, one per query (sluice.alter_model).';
COMMENT ON COLUMN sluice.models.history IS 'Its versions are kept (its pipelines keep history): <table>_at(version), <table>_at_time(timestamptz), tags and sluice.diff read it as of a version.';
COMMENT ON COLUMN sluice.models.query IS 'Its query, as PostgreSQL stores it bound (the view''s definition).';
COMMENT ON COLUMN sluice.models.expectations IS 'Names of its expectations (sluice.expect_model).';
COMMENT ON COLUMN sluice.models.last_run_id IS 'Last run that maintained it.';
COMMENT ON COLUMN sluice.models.last_maintenance IS 'How that run maintained it (incremental or full).';
COMMENT ON COLUMN sluice.models.last_duration IS 'How long that maintenance took.';
COMMENT ON COLUMN sluice.models.created_at IS 'When the model was created.';

CREATE VIEW sluice.model_versions AS
SELECT m.name AS model,
       v.version,
       v.columns,
       v.maintenance,
       v.query,
       v.created_at
  FROM sluice._model_version v
  JOIN sluice._model m USING (model_id);
COMMENT ON VIEW sluice.model_versions IS 'Every version of every model''s contract: its result columns and the query it was bound from.';
COMMENT ON COLUMN sluice.model_versions.model IS 'Model name.';
COMMENT ON COLUMN sluice.model_versions.version IS 'Contract version (1 at creation, one more per sluice.alter_model).';
COMMENT ON COLUMN sluice.model_versions.columns IS 'Result columns: [{"name", "type"}], in order.';
COMMENT ON COLUMN sluice.model_versions.maintenance IS 'incremental or full, for that query.';
COMMENT ON COLUMN sluice.model_versions.query IS 'The query, as bound (for reading: never executed).';
COMMENT ON COLUMN sluice.model_versions.created_at IS 'When that version was declared.';

CREATE VIEW sluice.model_runs AS
SELECT rm.run_id,
       m.name AS model,
       p.name AS pipeline,
       r.status,
       r.finished_at,
       rm.maintenance,
       rm.reason,
       rm.groups,
       rm.rows_deleted,
       rm.rows_inserted,
       rm.duration,
       rm.expectations
  FROM sluice._run_model rm
  JOIN sluice._model m USING (model_id)
  JOIN sluice._run r USING (run_id)
  JOIN sluice._pipeline p ON p.pipeline_id OPERATOR(pg_catalog.=) r.pipeline_id
 WHERE sluice._operates(m.owner::oid);
COMMENT ON VIEW sluice.model_runs IS
  'How each run maintained each model, newest last; each role sees the models it may operate (expectation samples are data).';
COMMENT ON COLUMN sluice.model_runs.run_id IS 'The run (sluice.runs) whose batch maintained the model.';
COMMENT ON COLUMN sluice.model_runs.model IS 'Model name.';
COMMENT ON COLUMN sluice.model_runs.pipeline IS 'Pipeline of the run.';
COMMENT ON COLUMN sluice.model_runs.status IS 'Status of the run: a paused run rolled its maintenance back.';
COMMENT ON COLUMN sluice.model_runs.finished_at IS 'When the run finished.';
COMMENT ON COLUMN sluice.model_runs.maintenance IS 'incremental (touched groups recomputed) or full (rebuilt).';
COMMENT ON COLUMN sluice.model_runs.reason IS 'Why the run rebuilt the model in full, or NULL.';
COMMENT ON COLUMN sluice.model_runs.groups IS 'Incremental: the touched values of its GROUP BY expressions.';
COMMENT ON COLUMN sluice.model_runs.rows_deleted IS 'Rows of the model deleted.';
COMMENT ON COLUMN sluice.model_runs.rows_inserted IS 'Rows of the model inserted.';
COMMENT ON COLUMN sluice.model_runs.duration IS 'How long maintaining it took, its expectations excluded.';
COMMENT ON COLUMN sluice.model_runs.expectations IS 'Its expectations'' results: [{"name", "failed", "evaluated", "observed", "sample"}].';

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------

CREATE FUNCTION sluice._model_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
  stmt text;
BEGIN
  -- called by sluice._operator_grants
  FOREACH stmt IN ARRAY ARRAY[
    'EXECUTE ON FUNCTION sluice.create_model(text, text, text[], name[], name, name), sluice.alter_model(text, text),
       sluice.drop_model(text), sluice.rebuild_model(text),
       sluice.expect_model(text, text, name[], jsonb, text, text), sluice.drop_model_expectation(text, text),
       sluice._model_bind(integer, name, name, text, name[]), sluice._model_analyze(regclass),
       sluice._model_columns(regclass), sluice._model_inputs(regclass, integer[], text, regrole),
       sluice._model_depths(), sluice._model_row(text), sluice._model_refill_downstream(integer),
       sluice._model_fill(integer), sluice._model_keep_history(integer), sluice._model_drop_table(integer),
       sluice._models_after_write(regclass), sluice._model_table(integer, regclass, name, name, name[], name[], text),
       sluice._models_reading(regclass, name), sluice._refuse_model_readers(regclass, name, text)',
    'SELECT, INSERT, UPDATE, DELETE ON sluice._model, sluice._model_input, sluice._model_expectation',
    'SELECT, INSERT ON sluice._model_version',
    'SELECT ON sluice._run_model, sluice.model_runs'] LOOP
    EXECUTE format('%s %s %s %s', verb, stmt, to_from, grantee);
  END LOOP;
END
$$;
COMMENT ON FUNCTION sluice._model_operator_grants(regrole, text) IS 'Private: what an operator is granted for models.';

REVOKE ALL ON sluice._model, sluice._model_input, sluice._model_version, sluice._model_expectation,
    sluice._run_model, sluice.model_runs FROM PUBLIC;
REVOKE ALL ON FUNCTION sluice.create_model(text, text, text[], name[], name, name), sluice.alter_model(text, text),
    sluice.drop_model(text), sluice.rebuild_model(text),
    sluice.expect_model(text, text, name[], jsonb, text, text), sluice.drop_model_expectation(text, text),
    sluice._model_bind(integer, name, name, text, name[]), sluice._model_analyze(regclass),
    sluice._model_columns(regclass), sluice._model_inputs(regclass, integer[], text, regrole),
    sluice._model_depths(), sluice._model_row(text), sluice._model_refill_downstream(integer),
    sluice._model_fill(integer), sluice._model_keep_history(integer), sluice._model_drop_table(integer),
    sluice._models_after_write(regclass), sluice._model_table(integer, regclass, name, name, name[], name[], text),
       sluice._models_reading(regclass, name), sluice._refuse_model_readers(regclass, name, text),
    sluice._model_operator_grants(regrole, text) FROM PUBLIC;
GRANT SELECT ON sluice.models, sluice.model_versions TO PUBLIC;

-- chunked copies (issue 19): resnapshot, add_table, copy_chunk, copy_tables, copy_progress
-------------------------------------------------------------------------------
-- Chunked copies: a table copied again (sluice.resnapshot) or added to a
-- running pipeline (sluice.add_table), in key ranges,
-- each committed with the stream up to the chunk's watermark
-- (src/snapshot.c).  One row per table, kept when the copy has finished.
-------------------------------------------------------------------------------

CREATE TABLE sluice._copy (
    pipeline_id    integer NOT NULL,
    source_schema  text NOT NULL,
    source_table   text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('resnapshot', 'add_table')),
    chunk_rows     integer NOT NULL CHECK (chunk_rows > 0),
    frontier       text[],
    chunks_done    integer NOT NULL DEFAULT 0,
    rows_copied    bigint NOT NULL DEFAULT 0,
    rows_estimate  bigint,
    restarts       integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_chunk_at  timestamptz,
    finished_at    timestamptz,
    PRIMARY KEY (pipeline_id, source_schema, source_table),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
COMMENT ON TABLE sluice._copy IS
  'Private: tables copied in chunks (sluice.resnapshot, sluice.add_table) and how far each copy is; frontier is the last key copied, as the source''s text of each key column.';
SELECT pg_catalog.pg_extension_config_dump('sluice._copy', '');
ALTER TABLE sluice._copy ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._copy
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.copy_progress AS
SELECT p.name AS pipeline,
       t.target_schema,
       t.target_table,
       c.kind,
       CASE WHEN c.finished_at IS NOT NULL THEN 'finished' ELSE 'copying' END AS state,
       c.chunk_rows,
       c.chunks_done,
       CASE WHEN c.finished_at IS NOT NULL THEN c.chunks_done
            ELSE GREATEST(c.chunks_done + 1,
                          ceil(c.rows_estimate::numeric / c.chunk_rows)::integer) END AS chunks_total,
       c.rows_copied,
       c.rows_estimate,
       CASE WHEN c.last_chunk_at > c.started_at
            THEN round(c.rows_copied / extract(epoch FROM c.last_chunk_at - c.started_at))::bigint
       END AS rows_per_second,
       CASE WHEN c.finished_at IS NOT NULL THEN interval '0'
            WHEN c.last_chunk_at > c.started_at AND c.rows_copied > 0 AND c.rows_estimate IS NOT NULL
            THEN GREATEST(c.rows_estimate - c.rows_copied, 0)
                 * ((c.last_chunk_at - c.started_at) / c.rows_copied)
       END AS eta,
       c.restarts,
       c.started_at,
       c.last_chunk_at,
       c.finished_at
  FROM sluice._copy c
  JOIN sluice._pipeline p USING (pipeline_id)
  JOIN sluice._pipeline_table t USING (pipeline_id, source_schema, source_table)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.copy_progress IS
  'Tables copied in chunks (sluice.resnapshot, sluice.add_table) and how far each copy is, for a dashboard to poll; each role sees the pipelines it may operate.';
COMMENT ON COLUMN sluice.copy_progress.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.copy_progress.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.copy_progress.target_table IS 'Datamart table being copied.';
COMMENT ON COLUMN sluice.copy_progress.kind IS 'Why it is copied: resnapshot (sluice.resnapshot) or add_table (sluice.add_table).';
COMMENT ON COLUMN sluice.copy_progress.state IS 'copying, or finished.';
COMMENT ON COLUMN sluice.copy_progress.chunk_rows IS 'Rows per chunk: each chunk is one local transaction.';
COMMENT ON COLUMN sluice.copy_progress.chunks_done IS 'Chunks committed; a crash or a cancel repeats at most the chunk in progress.';
COMMENT ON COLUMN sluice.copy_progress.chunks_total IS 'Chunks the copy takes, estimated from the source''s row estimate (pg_class.reltuples) when the first chunk was copied; exact once finished.';
COMMENT ON COLUMN sluice.copy_progress.rows_copied IS 'Rows copied by the committed chunks.';
COMMENT ON COLUMN sluice.copy_progress.rows_estimate IS 'The source''s row estimate for the table when the first chunk was copied (NULL before, or when the source has none).';
COMMENT ON COLUMN sluice.copy_progress.rows_per_second IS 'Rows copied per second since the copy started, up to the last chunk.';
COMMENT ON COLUMN sluice.copy_progress.eta IS 'Time left at that rate for the estimated rows left (0 once finished; NULL before the first chunk).';
COMMENT ON COLUMN sluice.copy_progress.restarts IS 'Times the copy started over from the first key because the source table was truncated during it.';
COMMENT ON COLUMN sluice.copy_progress.started_at IS 'When the copy was asked for.';
COMMENT ON COLUMN sluice.copy_progress.last_chunk_at IS 'When the last chunk committed.';
COMMENT ON COLUMN sluice.copy_progress.finished_at IS 'When the last chunk committed, the copy complete (NULL while copying).';

CREATE FUNCTION sluice.resnapshot(pipeline text, "table" regclass, chunk_rows integer DEFAULT 100000)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_resnapshot'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.resnapshot(text, regclass, integer) IS
  'Copies a datamart table of a pipeline again from its source table, in chunks of chunk_rows keys, while the pipeline''s other tables go on; its rows stay readable until their chunk replaces them. Copy the chunks with CALL sluice.copy_tables(pipeline) (or sluice.copy_chunk); sluice.copy_progress shows how far it is. The table needs a primary key.';

CREATE FUNCTION sluice.add_table(pipeline text, "table" text, chunk_rows integer DEFAULT 100000)
RETURNS regclass
AS 'MODULE_PATHNAME', 'sluice_add_table'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.add_table(text, text, integer) IS
  'Adds a source table (schema.table) to a pipeline while it streams: the table joins the pipeline''s publication on the source (when pg_sluice created it), its datamart table is created empty in the pipeline''s target schema and filled in chunks of chunk_rows keys by CALL sluice.copy_tables(pipeline); the other tables go on. Returns the datamart table. The table needs a primary key.';

CREATE FUNCTION sluice.copy_chunk(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_copy_chunk'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.copy_chunk(text) IS
  'Copies the next chunk of the pipeline''s first table being copied and refreshes the pipeline up to the chunk''s watermark, in the caller''s transaction; returns false when no table is being copied. The source''s role needs EXECUTE on pg_logical_emit_message.';

-- a procedure: each chunk commits before the next starts (no SET clause:
-- a procedure with one cannot commit; it sets search_path itself)
CREATE PROCEDURE sluice.copy_tables(pipeline text, max_chunks integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
  n integer := 0;
  r record;
BEGIN
  LOOP
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    EXIT WHEN max_chunks IS NOT NULL AND n >= max_chunks;
    EXIT WHEN NOT sluice.copy_chunk(pipeline);
    n := n OPERATOR(pg_catalog.+) 1;
    FOR r IN SELECT * FROM sluice.copy_progress c
              WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
              ORDER BY c.last_chunk_at DESC NULLS LAST LIMIT 1
    LOOP
      RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows, % rows/s, % left',
        pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
        r.chunks_done, r.chunks_total, r.rows_copied, r.rows_per_second, r.eta;
    END LOOP;
    COMMIT;
  END LOOP;
END
$$;
COMMENT ON PROCEDURE sluice.copy_tables(text, integer) IS
  'Copies the chunks of the pipeline''s tables being copied, committing after each (at most max_chunks when given), with a progress notice per chunk; CALL it again after a crash or a cancel: it resumes after the last committed chunk. Call it outside a transaction block.';

-- operators copy the pipelines they operate: _operator_grants (grant_operator,
-- revoke_operator) gives and takes this too
CREATE FUNCTION sluice._snapshot_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.resnapshot(text, regclass, integer), sluice.add_table(text, text, integer), sluice.copy_chunk(text) %s %s',
                 verb, to_from, grantee);
  EXECUTE format('%s EXECUTE ON PROCEDURE sluice.copy_tables(text, integer) %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._snapshot_operator_grants(regrole, text) IS 'Private: what an operator is granted for chunked copies.';

REVOKE ALL ON FUNCTION sluice.resnapshot(text, regclass, integer), sluice.add_table(text, text, integer), sluice.copy_chunk(text),
    sluice._snapshot_operator_grants(regrole, text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE sluice.copy_tables(text, integer) FROM PUBLIC;
REVOKE ALL ON sluice._copy FROM PUBLIC;
GRANT SELECT ON sluice.copy_progress TO PUBLIC;

-- operators are granted the chunked copies too
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
       sluice.expect_column_values_to_be_between(regclass, name, text, text, boolean, boolean, text),
       sluice.expect_column_values_to_match_regex(regclass, name, text, text),
       sluice.expect_column_value_lengths_to_be_between(regclass, name, integer, integer, text),
       sluice.expect_table_row_count_to_be_between(regclass, bigint, bigint, text),
       sluice.expect_column_values_to_be_in_table(regclass, name, regclass, name, text),
       sluice.expect_column_max_to_be_fresh(regclass, name, interval, text),
       sluice.expect_row_to_satisfy(regclass, text, text),
       sluice.release_quarantined(bigint, jsonb, boolean), sluice.discard_quarantined(bigint),
       sluice.alter_pipeline(text, boolean), sluice._compile_predicate(regclass, text), sluice._compile_check(regclass, text),
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
  PERFORM sluice._snapshot_operator_grants(grantee, verb);
END
$$;
COMMENT ON FUNCTION sluice._operator_grants(regrole, text) IS 'Private: what an operator is granted.';

-- spool, heartbeat and slot_lag (issue 18): src/sql/92_spool.sql
-------------------------------------------------------------------------------
-- The spool.  While a pipeline cannot apply (paused), its slot's changes are
-- drained here, so the slot on live moves on; the next batch after
-- sluice.resume() applies them first, exactly once, then the slot's.
-------------------------------------------------------------------------------

CREATE TABLE sluice._spool (
    pipeline_id integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    commit_lsn  pg_lsn NOT NULL,
    chunk       integer NOT NULL,
    binary_mode boolean NOT NULL,
    messages    bytea NOT NULL,
    PRIMARY KEY (pipeline_id, commit_lsn, chunk)
);
COMMENT ON TABLE sluice._spool IS
  'Private: a paused pipeline''s changes drained from its slot (sluice.drain, the worker), one source transaction in chunks of pgoutput messages (each preceded by its length, 4 bytes, network order), until the pipeline applies them. Row data: readable by the extension owner only.';
SELECT pg_catalog.pg_extension_config_dump('sluice._spool', '');
ALTER TABLE sluice._spool ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._spool
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE TABLE sluice._slot_state (
    pipeline_id   integer PRIMARY KEY REFERENCES sluice._pipeline ON DELETE CASCADE,
    drained_upto  pg_lsn,
    spool_bytes   bigint NOT NULL DEFAULT 0,
    spool_full_at timestamptz,
    lag_over      boolean NOT NULL DEFAULT false,
    source_lsn    pg_lsn,
    restart_lsn   pg_lsn,
    measured_at   timestamptz
);
COMMENT ON TABLE sluice._slot_state IS
  'Private: per pipeline, what pg_sluice did with its slot on live: the spool''s drained position and size, whether the spool is full, whether the slot_lag event fired and the WAL kept is still past pg_sluice.max_retained_wal, and the last look at the slot.';
SELECT pg_catalog.pg_extension_config_dump('sluice._slot_state', '');
ALTER TABLE sluice._slot_state ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._slot_state
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.spool AS
SELECT p.name AS pipeline,
       (SELECT pg_catalog.count(DISTINCT s.commit_lsn) FROM sluice._spool s
         WHERE s.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id) AS transactions,
       COALESCE(st.spool_bytes, 0) AS bytes,
       st.drained_upto,
       st.spool_full_at,
       COALESCE(st.lag_over, false) AS slot_lag,
       pg_catalog.pg_wal_lsn_diff(st.source_lsn, st.restart_lsn)::bigint AS retained_wal_bytes,
       st.measured_at
  FROM sluice._pipeline p
  LEFT JOIN sluice._slot_state st USING (pipeline_id)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.spool IS
  'One row per pipeline: the changes drained from its slot while it was paused, waiting to be applied (sluice.drain, the worker), and the WAL its slot keeps on live; each role sees the pipelines it may operate.';
COMMENT ON COLUMN sluice.spool.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.spool.transactions IS 'Source transactions in the spool, applied first by the next batch after sluice.resume().';
COMMENT ON COLUMN sluice.spool.bytes IS 'Size of the spooled pgoutput messages; draining stops past pg_sluice.spool_limit (a spool_full event, and the slot keeps the rest on live).';
COMMENT ON COLUMN sluice.spool.drained_upto IS 'Source position the spool holds every change up to (NULL: never drained); the slot on live is moved there once it is committed here.';
COMMENT ON COLUMN sluice.spool.spool_full_at IS 'When draining stopped at pg_sluice.spool_limit, until the spool is applied (NULL: not full).';
COMMENT ON COLUMN sluice.spool.slot_lag IS 'The slot keeps more WAL than pg_sluice.max_retained_wal: a slot_lag event was sent when it crossed, the next one when it crosses again after going back under.';
COMMENT ON COLUMN sluice.spool.retained_wal_bytes IS 'WAL the slot kept on live when last written down: at each refresh, at each drain that spooled something, and when it crossed pg_sluice.max_retained_wal.';
COMMENT ON COLUMN sluice.spool.measured_at IS 'When retained_wal_bytes was written down.';

CREATE FUNCTION sluice.drain(pipeline text)
RETURNS TABLE (transactions bigint, bytes bigint, spool_bytes bigint, drained_upto pg_lsn, spool_full boolean)
AS 'MODULE_PATHNAME', 'sluice_drain'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.drain(text) IS
  'Moves a scheduled pipeline''s pending changes from its slot on live into the datamart''s spool (up to pg_sluice.spool_limit), so live can free its WAL while the pipeline is paused; the next refresh after sluice.resume() applies them first, exactly once. Schedule it with pg_cron next to the refresh; the slot moves at the start of the next drain or refresh.';

-- operators drain the pipelines they operate: _operator_grants (grant_operator,
-- revoke_operator) gives and takes this too
CREATE FUNCTION sluice._spool_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.drain(text) %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._spool_operator_grants(regrole, text) IS 'Private: what an operator is granted for the spool.';

REVOKE ALL ON FUNCTION sluice.drain(text), sluice._spool_operator_grants(regrole, text) FROM PUBLIC;
REVOKE ALL ON sluice._spool, sluice._slot_state FROM PUBLIC;
GRANT SELECT ON sluice.spool TO PUBLIC;

-- spool_full is an event; operators drain
CREATE OR REPLACE FUNCTION sluice._event_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['refresh_started', 'refresh_completed', 'refresh_failed', 'pipeline_paused', 'contract_drift',
             'expectation_failed', 'quarantine', 'slot_lag', 'divergence', 'verification', 'spool_full'];

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
       sluice.expect_column_values_to_be_between(regclass, name, text, text, boolean, boolean, text),
       sluice.expect_column_values_to_match_regex(regclass, name, text, text),
       sluice.expect_column_value_lengths_to_be_between(regclass, name, integer, integer, text),
       sluice.expect_table_row_count_to_be_between(regclass, bigint, bigint, text),
       sluice.expect_column_values_to_be_in_table(regclass, name, regclass, name, text),
       sluice.expect_column_max_to_be_fresh(regclass, name, interval, text),
       sluice.expect_row_to_satisfy(regclass, text, text),
       sluice.release_quarantined(bigint, jsonb, boolean), sluice.discard_quarantined(bigint),
       sluice.alter_pipeline(text, boolean), sluice._compile_predicate(regclass, text), sluice._compile_check(regclass, text),
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
  PERFORM sluice._spool_operator_grants(grantee, verb);
END
$$;
COMMENT ON FUNCTION sluice._operator_grants(regrole, text) IS 'Private: what an operator is granted.';

-- the final definitions of what several of the sections above changed
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
END
$$;

CREATE OR REPLACE FUNCTION sluice._event_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['refresh_started', 'refresh_completed', 'refresh_failed', 'pipeline_paused', 'contract_drift',
             'expectation_failed', 'quarantine', 'slot_lag', 'divergence', 'verification', 'spool_full'];

CREATE OR REPLACE FUNCTION sluice._emit_run(run_id bigint, quarantined bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  p record;
  ci text;
  api text;
  body jsonb;
  bad jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sluice._destination) THEN
    RETURN;
  END IF;
  SELECT * INTO r FROM sluice._run WHERE _run.run_id = _emit_run.run_id;
  SELECT * INTO p FROM sluice._pipeline WHERE pipeline_id = r.pipeline_id;
  SELECT conninfo INTO ci FROM sluice._source WHERE name = p.source_name;
  -- an HTTP source (94_http.sql): its scheme, host and port, never a secret
  SELECT substring(sluice._mask_url(h.base_url) FROM '^[a-z]+://[^/?]+') INTO api
    FROM sluice._http_source h WHERE h.name = p.source_name;
  body := jsonb_build_object(
    'run_id', r.run_id,
    'run_uuid', md5(p.name || ':' || p.pipeline_id || ':' || r.run_id)::uuid,
    'job', 'pg_sluice.' || p.name,
    'kind', r.kind, 'status', r.status,
    'started_at', r.started_at, 'finished_at', r.finished_at,
    'start_lsn', r.start_lsn, 'end_lsn', r.end_lsn,
    'transactions', r.transactions, 'rows_inserted', r.rows_inserted, 'rows_updated', r.rows_updated,
    'rows_deleted', r.rows_deleted, 'tables_truncated', r.tables_truncated,
    'error', r.error,
    'summary', format('%s %s: %s transactions, %s inserted, %s updated, %s deleted', r.kind, r.status,
                      r.transactions, r.rows_inserted, r.rows_updated, r.rows_deleted)
                || CASE WHEN r.error IS NOT NULL THEN ' - ' || r.error ELSE '' END,
    'source_namespace', coalesce(api, format('postgres://%s:%s', coalesce(sluice._conninfo_part(ci, 'host'), 'localhost'),
                                             coalesce(sluice._conninfo_part(ci, 'port'), '5432'))),
    'target_namespace', format('postgres://%s:%s', coalesce(host(inet_server_addr()), 'localhost'), current_setting('port')),
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'input', CASE WHEN api IS NULL
                       THEN format('%s.%s.%s', coalesce(sluice._conninfo_part(ci, 'dbname'), 'postgres'), pt.source_schema, pt.source_table)
                       ELSE (SELECT e.path FROM sluice._http_endpoint e
                              WHERE (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table)) END,
         'output', format('%s.%s.%s', current_database(), pt.target_schema, pt.target_table),
         'fields', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', c.column_name, 'type', c.data_type) ORDER BY c.position), '[]')
                      FROM sluice._contract_column c
                     WHERE (c.pipeline_id, c.source_schema, c.source_table, c.contract_version)
                           = (pt.pipeline_id, pt.source_schema, pt.source_table, pt.contract_version)),
         'assertions', (SELECT coalesce(jsonb_agg(jsonb_build_object('assertion', e.kind, 'success', er.success)
                                                  || CASE WHEN cardinality(e.column_names) = 1
                                                          THEN jsonb_build_object('column', e.column_names[1]) ELSE '{}' END
                                                  ORDER BY e.expectation_id), '[]')
                          FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
                         WHERE er.run_id = r.run_id
                           AND (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table))
         ) ORDER BY pt.source_schema, pt.source_table), '[]')
       FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id),
    -- the models the run maintained: datamart tables and models in, the model out
    'models', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'output', format('%s.%s.%s', current_database(), n.nspname, c.relname),
         'inputs', (SELECT coalesce(jsonb_agg(format('%s.%s.%s', current_database(), n2.nspname, c2.relname)
                                              ORDER BY n2.nspname, c2.relname), '[]')
                      FROM sluice._model_input i JOIN pg_class c2 ON c2.oid = i.relid
                      JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
                     WHERE i.model_id = m.model_id),
         'fields', (SELECT v.columns FROM sluice._model_version v
                     WHERE v.model_id = m.model_id AND v.version = m.contract_version),
         'maintenance', rm.maintenance) ORDER BY m.depth, m.model_id), '[]')
       FROM sluice._run_model rm JOIN sluice._model m USING (model_id)
       JOIN pg_class c ON c.oid = m.model_table JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE rm.run_id = r.run_id));
  PERFORM sluice._emit(p.name, 'refresh_started', body);
  PERFORM sluice._emit(p.name, CASE WHEN r.status = 'succeeded' THEN 'refresh_completed' ELSE 'refresh_failed' END, body);
  IF r.status = 'paused' THEN
    PERFORM sluice._emit(p.name, 'pipeline_paused',
      jsonb_build_object('run_id', r.run_id, 'reason', r.error, 'summary', 'paused: ' || r.error));
  END IF;
  SELECT jsonb_agg(jsonb_build_object('expectation', e.name, 'kind', e.kind, 'severity', e.severity,
                                      'evaluated', er.evaluated, 'failed', er.failed, 'sample_keys', er.sample_keys)
                   ORDER BY e.expectation_id)
    INTO bad
    FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
   WHERE er.run_id = r.run_id AND NOT er.success;
  IF bad IS NOT NULL THEN
    PERFORM sluice._emit(p.name, 'expectation_failed',
      jsonb_build_object('run_id', r.run_id, 'failures', bad,
                         'summary', format('%s expectation(s) failed in run %s', jsonb_array_length(bad), r.run_id)));
  END IF;
  IF quarantined > 0 THEN
    PERFORM sluice._emit(p.name, 'quarantine',
      jsonb_build_object('run_id', r.run_id, 'rows', quarantined,
                         'summary', format('%s row(s) quarantined in run %s', quarantined, r.run_id)));
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION sluice.tag(pipeline text, name text, version bigint DEFAULT NULL)
RETURNS name
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p record;
  t record;
  v bigint := version;
  sch name;
  cols text;
BEGIN
  p := sluice._pipeline_row(pipeline, false);
  IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,30}$' THEN
    RAISE EXCEPTION 'invalid tag name "%"', name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Lower-case letters, digits and _, starting with a letter or _, at most 31 characters.';
  END IF;
  IF v IS NULL THEN
    SELECT max(r.run_id) INTO v FROM sluice._run r WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded';
  END IF;
  PERFORM sluice._version_check(p.pipeline_id, v);
  sch := p.name || '_' || name;
  IF EXISTS (SELECT 1 FROM sluice._tag tg WHERE tg.pipeline_id = p.pipeline_id AND tg.name = tag.name) THEN
    RAISE EXCEPTION 'tag "%" of pipeline "%" already exists', name, pipeline USING ERRCODE = 'duplicate_object',
      HINT = 'sluice.untag() it first.';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = sch) THEN
    RAISE EXCEPTION 'schema "%" already exists', sch USING ERRCODE = 'duplicate_schema';
  END IF;
  PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE SCHEMA %I', sch), NULL);
  PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON SCHEMA %I IS %L', sch, format('pg_sluice: pipeline %s pinned at version %s (tag %s).', p.name, v, name)), NULL);
  FOR t IN SELECT * FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id
              AND cardinality(pt.key_columns) > 0 LOOP
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
       AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE VIEW %I.%I AS SELECT %s FROM %I.%I(%s)', sch, t.target_table, cols,
                   t.target_schema, t.target_table || '_at', v), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON VIEW %I.%I IS %L', sch, t.target_table,
                   format('%I.%I at version %s (tag %s).', t.target_schema, t.target_table, v, name)), NULL);
    -- BI tools show column comments as descriptions: the table's own
    EXECUTE coalesce((SELECT string_agg(format('COMMENT ON COLUMN %I.%I.%I IS %L', sch, t.target_table, a.attname,
                                               col_description(a.attrelid, a.attnum)), '; ')
                        FROM pg_attribute a
                       WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
                         AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version'
                         AND col_description(a.attrelid, a.attnum) IS NOT NULL), 'SELECT');
  END LOOP;
  -- the pipeline's models that keep history (sluice.models), pinned too
  FOR t IN SELECT n.nspname AS target_schema, c.relname AS target_table
             FROM sluice._model m JOIN pg_class c ON c.oid = m.model_table
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE m.pipeline_ids[1] = p.pipeline_id AND m.history LOOP
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a WHERE a.attrelid = format('%I.%I', t.target_schema, t.target_table)::regclass
       AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '_sluice_version';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE VIEW %I.%I AS SELECT %s FROM %I.%I(%s)', sch, t.target_table, cols,
                   t.target_schema, t.target_table || '_at', v), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON VIEW %I.%I IS %L', sch, t.target_table,
                   format('Model %I.%I at version %s (tag %s).', t.target_schema, t.target_table, v, name)), NULL);
  END LOOP;
  INSERT INTO sluice._tag (pipeline_id, name, version, schema_name) VALUES (p.pipeline_id, name, v, sch);
  RETURN sch;
END
$$;

CREATE OR REPLACE FUNCTION sluice.add_expectation(
    target       regclass,
    kind         text,
    column_names name[] DEFAULT '{}',
    args         jsonb DEFAULT '{}',
    severity     text DEFAULT 'error',
    name         text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
  cols name[] := coalesce(column_names, '{}');
  c name;
  col name;
  typ text;
  pred text;
  chk text;
  pred_tree pg_node_tree;
  chk_tree pg_node_tree;
  ename text;
  row_kinds text[] := ARRAY['expect_column_values_to_not_be_null', 'expect_column_values_to_be_null',
      'expect_column_values_to_be_in_set', 'expect_column_values_to_not_be_in_set',
      'expect_column_values_to_be_between', 'expect_column_values_to_match_regex',
      'expect_column_values_to_not_match_regex', 'expect_column_values_to_match_like_pattern',
      'expect_column_value_lengths_to_be_between', 'expect_column_value_lengths_to_equal',
      'expect_row_to_satisfy'];
  set_kinds text[] := ARRAY['expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between',
      'expect_column_values_to_be_in_table', 'expect_column_max_to_be_fresh'];
BEGIN
  IF target IS NULL OR kind IS NULL OR severity IS NULL THEN
    RAISE EXCEPTION 'target, kind and severity must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  t := sluice._contract_table(target, true);
  IF NOT (kind = ANY (row_kinds) OR kind = ANY (set_kinds)) THEN
    RAISE EXCEPTION 'unknown expectation "%"', kind USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Known: ' || array_to_string(row_kinds || set_kinds, ', ') || '.';
  END IF;
  IF severity NOT IN ('error', 'warn', 'quarantine') THEN
    RAISE EXCEPTION 'unknown severity "%"', severity USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use error (roll the batch back and pause), warn (apply and record) or quarantine (hold the failing row back).';
  END IF;
  IF severity = 'quarantine' AND kind = ANY (set_kinds) THEN
    RAISE EXCEPTION '% cannot quarantine rows', kind USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'It checks a set of rows, not one row.', HINT = 'Use severity error or warn.';
  END IF;
  -- every column must be in the contract
  FOREACH c IN ARRAY cols LOOP
    IF NOT EXISTS (SELECT 1 FROM sluice._contract_column cc
                    WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
                          = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version)
                      AND cc.column_name = c) THEN
      RAISE EXCEPTION 'column "%" is not in the contract of %', c, target USING ERRCODE = 'undefined_column',
        HINT = 'sluice.contracts lists the contract''s columns.';
    END IF;
  END LOOP;
  IF kind NOT IN ('expect_table_row_count_to_be_between', 'expect_row_to_satisfy') AND cardinality(cols) = 0 THEN
    RAISE EXCEPTION '% needs a column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF kind NOT IN ('expect_column_values_to_be_unique', 'expect_table_row_count_to_be_between', 'expect_row_to_satisfy')
     AND cardinality(cols) <> 1 THEN
    RAISE EXCEPTION '% takes exactly one column', kind USING ERRCODE = 'invalid_parameter_value';
  END IF;
  col := cols[1];
  IF col IS NOT NULL THEN
    SELECT cc.data_type INTO typ FROM sluice._contract_column cc
     WHERE (cc.pipeline_id, cc.source_schema, cc.source_table, cc.contract_version)
           = (t.pipeline_id, t.source_schema, t.source_table, t.contract_version) AND cc.column_name = col;
  END IF;
  SELECT x.pred, x.chk INTO pred, chk FROM sluice._expectation_sql(target, kind, cols, args, typ) x;

  -- bound now, in this function's search_path (pg_catalog): a refresh
  -- never parses the text again, so nothing created later in anyone's
  -- search_path can slip into it
  IF pred IS NOT NULL THEN
    pred_tree := sluice._compile_predicate(target, pred);
  ELSE
    chk_tree := sluice._compile_check(target, chk);
    -- the check runs here once, so a broken one fails now, not at refresh
    EXECUTE chk;
  END IF;
  ename := coalesce(name, kind || CASE WHEN cardinality(cols) > 0 THEN '_' || array_to_string(cols, '_') ELSE '' END
                          || '_' || (SELECT pt.target_table FROM sluice._pipeline_table pt
                                      WHERE (pt.pipeline_id, pt.source_schema, pt.source_table)
                                            = (t.pipeline_id, t.source_schema, t.source_table)));
  INSERT INTO sluice._expectation (pipeline_id, source_schema, source_table, name, kind, column_names,
                                   args, severity, predicate, check_sql, predicate_tree, check_tree)
  VALUES (t.pipeline_id, t.source_schema, t.source_table, ename, kind, cols, coalesce(args, '{}'), severity, pred, chk,
          pred_tree, chk_tree);
  RETURN ename;
EXCEPTION WHEN unique_violation THEN
  RAISE EXCEPTION 'expectation "%" already exists in this pipeline', ename USING ERRCODE = 'duplicate_object',
    HINT = 'Give it another name, or drop the existing one with sluice.drop_expectation().';
END
$$;


-- the initial copy in chunks, and copy state in sluice.status (issue 19)
ALTER TABLE sluice._copy DROP CONSTRAINT _copy_kind_check,
    ADD CONSTRAINT _copy_kind_check CHECK (kind IN ('resnapshot', 'add_table', 'initial_copy'));
COMMENT ON COLUMN sluice.copy_progress.kind IS 'Why it is copied: resnapshot (sluice.resnapshot), add_table (sluice.add_table) or initial_copy (sluice.create_pipeline with pg_sluice.initial_copy chunked or auto).';
-- What sluice.status says of a pipeline's chunked copies: read from
-- sluice.copy_progress (defined later, src/sql/95_snapshot.sql; PL/pgSQL
-- looks its tables up when called), as the caller, who sees the copies of
-- the pipelines it operates and NULL for the others.
CREATE FUNCTION sluice._copy_state(pipeline text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
BEGIN
  SELECT pg_catalog.count(*) AS tables,
         pg_catalog.sum(c.chunks_done) AS done,
         pg_catalog.sum(c.chunks_total) AS total,
         pg_catalog.sum(c.rows_copied) AS copied,
         pg_catalog.sum(c.rows_estimate) AS estimate,
         pg_catalog.max(c.eta) AS eta
    INTO r
    FROM sluice.copy_progress c
   WHERE c.pipeline OPERATOR(pg_catalog.=) _copy_state.pipeline
     AND c.state OPERATOR(pg_catalog.=) 'copying';
  IF r.tables OPERATOR(pg_catalog.=) 0 THEN
    RETURN NULL;
  END IF;
  RETURN pg_catalog.format('copying %s table%s: chunk %s/%s, %s rows%s%s',
           r.tables, CASE WHEN r.tables OPERATOR(pg_catalog.>) 1 THEN 's' ELSE '' END,
           r.done, r.total, r.copied,
           CASE WHEN r.estimate OPERATOR(pg_catalog.>) 0
                THEN pg_catalog.format(', %s%%', LEAST(100, pg_catalog.floor(
                       100 OPERATOR(pg_catalog.*) r.copied OPERATOR(pg_catalog./) r.estimate::numeric)))
                ELSE '' END,
           CASE WHEN r.eta IS NOT NULL
                THEN pg_catalog.format(', eta %s', pg_catalog.date_trunc('second', r.eta))
                ELSE '' END);
END
$$;
COMMENT ON FUNCTION sluice._copy_state(text) IS 'Private: the copy column of sluice.status.';

CREATE OR REPLACE VIEW sluice.status AS
WITH w AS (SELECT * FROM sluice._worker_status()),
     limits AS (SELECT pg_catalog.pg_size_bytes(COALESCE(
                         pg_catalog.current_setting('pg_sluice.max_retained_wal', true), '1GB')) AS max_wal)
SELECT p.name AS pipeline,
       CASE WHEN p.continuous THEN 'continuous' ELSE 'scheduled' END AS mode,
       CASE WHEN p.paused_reason IS NOT NULL THEN 'paused'
            WHEN NOT p.continuous THEN 'stopped'
            WHEN w.pipeline_id IS NULL OR w.last_error IS NOT NULL THEN 'error'
            WHEN w.pid IS NULL THEN 'starting'
            ELSE 'running' END AS state,
       CASE WHEN p.continuous THEN COALESCE(w.last_error, p.last_error,
                 CASE WHEN w.pipeline_id IS NULL
                      THEN 'no worker: pg_sluice must be in shared_preload_libraries' END)
       END AS last_error,
       CASE WHEN p.continuous THEN p.last_error_at END AS last_error_at,
       p.paused_reason,
       p.paused_at,
       w.next_retry_at,
       w.pid AS worker_pid,
       ok.run_id AS last_run_id,
       ok.finished_at AS last_success_at,
       pg_catalog.now() OPERATOR(pg_catalog.-) ok.finished_at AS staleness,
       COALESCE(w.applied_lsn, ok.end_lsn) AS applied_lsn,
       COALESCE(w.source_flush_lsn, ok.source_flush_lsn) AS source_lsn,
       GREATEST(0, pg_catalog.pg_wal_lsn_diff(
           COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
           COALESCE(w.applied_lsn, ok.end_lsn)))::bigint AS lag_bytes,
       CASE WHEN COALESCE(w.source_flush_lsn, ok.source_flush_lsn) OPERATOR(pg_catalog.<=)
                 COALESCE(w.applied_lsn, ok.end_lsn) THEN 0
            ELSE pg_catalog.date_part('epoch', COALESCE(w.measured_at, ok.started_at)
                     OPERATOR(pg_catalog.-) COALESCE(w.last_source_commit, ok.last_source_commit))
       END::double precision AS lag_seconds,
       pg_catalog.pg_wal_lsn_diff(COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
                                  COALESCE(w.slot_restart_lsn, ok.slot_restart_lsn))::bigint AS retained_wal_bytes,
       COALESCE(pg_catalog.pg_wal_lsn_diff(COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
                                  COALESCE(w.slot_restart_lsn, ok.slot_restart_lsn))
                           OPERATOR(pg_catalog.>) limits.max_wal AND limits.max_wal OPERATOR(pg_catalog.>) 0, false)
           AS retained_wal_warning,
       COALESCE(w.measured_at, ok.started_at) AS measured_at,
       COALESCE(w.rows_per_second,
           (ok.rows_inserted OPERATOR(pg_catalog.+) ok.rows_updated OPERATOR(pg_catalog.+) ok.rows_deleted)
           OPERATOR(pg_catalog./) NULLIF(pg_catalog.date_part('epoch', ok.finished_at OPERATOR(pg_catalog.-) ok.started_at), 0))
           AS rows_per_second,
       p.rows_missing,
       p.last_missing_at,
       p.strict,
       sluice._copy_state(p.name) AS copy
  FROM sluice._pipeline p
  CROSS JOIN limits
  LEFT JOIN w ON w.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
  LEFT JOIN LATERAL (SELECT r.* FROM sluice._run r
                      WHERE r.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
                        AND r.status OPERATOR(pg_catalog.=) 'succeeded'
                      ORDER BY r.run_id DESC LIMIT 1) ok ON true;
COMMENT ON COLUMN sluice.status.copy IS 'The pipeline''s chunked copies in progress (sluice.copy_progress, for the pipelines the caller operates), e.g. ''copying 1 table: chunk 12/40, 1200000 rows, 30%, eta 00:01:10''; NULL when none.';

-- keep_history waits for the chunked copies of the pipeline to finish (issue 19)
CREATE OR REPLACE FUNCTION sluice.keep_history(pipeline text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $kh$
DECLARE
  p record;
  t record;
  v0 bigint;
  hs name;
BEGIN
  p := sluice._pipeline_row(pipeline);
  IF p.keep_history THEN
    RAISE NOTICE 'pipeline "%" already keeps history from version %', pipeline, p.history_from;
    RETURN p.history_from;
  END IF;
  -- a chunk replaces rows without recording the versions they supersede
  -- (src/snapshot.c), so chunked copies finish first
  FOR t IN SELECT c.target_schema, c.target_table FROM sluice.copy_progress c
            WHERE c.pipeline = p.name AND c.state = 'copying' LOOP
    RAISE EXCEPTION 'pipeline "%" is still copying table %.% in chunks', pipeline, t.target_schema, t.target_table
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'A chunk replaces rows without recording the versions they supersede, so history starts once every chunked copy has finished.',
            HINT = format('CALL sluice.copy_tables(%L) to finish the copy (sluice.copy_progress shows how far it is), then keep history.', pipeline);
  END LOOP;
  SELECT max(r.run_id) INTO v0 FROM sluice._run r WHERE r.pipeline_id = p.pipeline_id AND r.status = 'succeeded';
  FOR t IN SELECT * FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id LOOP
    IF cardinality(t.key_columns) = 0 THEN
      -- rows without a key cannot be told apart across versions
      RAISE NOTICE 'table %.% has no key (REPLICA IDENTITY FULL): no history is kept for it', t.target_schema, t.target_table;
      CONTINUE;
    END IF;
    hs := t.target_schema || '_history';
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('ALTER TABLE %I.%I ADD COLUMN _sluice_version bigint NOT NULL DEFAULT %s',
                   t.target_schema, t.target_table, v0), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('ALTER TABLE %I.%I ALTER COLUMN _sluice_version DROP DEFAULT', t.target_schema, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON COLUMN %I.%I._sluice_version IS %L', t.target_schema, t.target_table,
                   'pg_sluice: version (sluice.versions) that wrote this row.'), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE SCHEMA IF NOT EXISTS %I', hs), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING COMMENTS)', hs, t.target_table, t.target_schema, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('ALTER TABLE %I.%I ADD COLUMN _sluice_superseded bigint NOT NULL', hs, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON COLUMN %I.%I._sluice_superseded IS %L', hs, t.target_table,
                   'pg_sluice: first version (sluice.versions) in which this row version no longer holds.'), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('CREATE INDEX ON %I.%I (_sluice_superseded)', hs, t.target_table), NULL);
    PERFORM sluice._exec_as_owner(p.pipeline_id, format('COMMENT ON TABLE %I.%I IS %L', hs, t.target_table,
                   format('pg_sluice: superseded versions of %I.%I rows, valid for versions [_sluice_version, _sluice_superseded).',
                          t.target_schema, t.target_table)), NULL);
    PERFORM sluice._make_at_functions(format('%I.%I', t.target_schema, t.target_table)::regclass);
  END LOOP;
  UPDATE sluice._pipeline SET keep_history = true, history_from = v0 WHERE pipeline_id = p.pipeline_id;
  RETURN v0;
END
$kh$;
-- the pool of continuous workers (issue 19)
CREATE FUNCTION sluice._pool_status(
    OUT pipeline_id integer, OUT worker integer, OUT worker_pid integer,
    OUT in_batch boolean, OUT batch_started_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'sluice_pool_status'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION sluice._pool_status() IS
  'Private: which pool worker serves each streaming pipeline of this database (shared memory); read sluice.workers.';

CREATE VIEW sluice.workers AS
SELECT p.name AS pipeline, w.worker, w.worker_pid, w.in_batch, w.batch_started_at,
       pg_catalog.count(w.worker) OVER (PARTITION BY w.worker) AS worker_pipelines
  FROM sluice._pool_status() w
  JOIN sluice._pipeline p USING (pipeline_id);
COMMENT ON VIEW sluice.workers IS 'One row per continuously streaming pipeline: the pool worker (pg_sluice.max_workers of them) that serves it.';
COMMENT ON COLUMN sluice.workers.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.workers.worker IS 'Number of the pool worker serving it (1 to pg_sluice.max_workers); null while it waits for one.';
COMMENT ON COLUMN sluice.workers.worker_pid IS 'Process id of that worker (sluice.status.worker_pid).';
COMMENT ON COLUMN sluice.workers.in_batch IS 'The worker is applying a batch of this pipeline now.';
COMMENT ON COLUMN sluice.workers.batch_started_at IS 'When that batch began (a batch longer than pg_sluice.batch_time makes the launcher move the worker''s other pipelines).';
COMMENT ON COLUMN sluice.workers.worker_pipelines IS 'How many streaming pipelines of this database that worker serves.';

GRANT SELECT ON sluice.workers TO PUBLIC;
-- hostile review (session 9): sluice.http_endpoints shows a since or id
-- cursor (a value of the table's rows) only to roles that can read the table
CREATE OR REPLACE VIEW sluice.http_endpoints AS
SELECT p.name AS pipeline,
       e.source_table AS endpoint,
       pt.target_schema,
       pt.target_table,
       e.path,
       e.rows_path,
       e.cursor_kind,
       CASE WHEN sluice._readable(pt.target_schema, pt.target_table)
            THEN CASE WHEN e.cursor_kind = 'etag' THEN e.etag ELSE e.cursor_value END
       END AS cursor_value,
       e.paging,
       e.pulled_at
  FROM sluice._http_endpoint e
  JOIN sluice._pipeline p ON p.pipeline_id = e.pipeline_id
  JOIN sluice._pipeline_table pt ON pt.pipeline_id = e.pipeline_id AND pt.source_schema = e.source_schema
                                AND pt.source_table = e.source_table;
COMMENT ON COLUMN sluice.http_endpoints.cursor_value IS 'The cursor the next refresh starts from (the ETag for etag); moved only by a refresh that committed. NULL for a role that cannot SELECT the table: a since or id cursor is a value of its rows.';
-- a source table dropped or created again on live is noticed (identity.c):
-- the oid of each pipeline table on the source, learnt at the next refresh
ALTER TABLE sluice._pipeline_table ADD COLUMN source_relid oid;

-- the pool: why a pipeline waits for a worker (issue 19)
CREATE OR REPLACE VIEW sluice.workers AS
SELECT p.name AS pipeline, w.worker, w.worker_pid, w.in_batch, w.batch_started_at,
       pg_catalog.count(w.worker) OVER (PARTITION BY w.worker) AS worker_pipelines,
       CASE WHEN w.worker IS NULL THEN s.last_error END AS waiting
  FROM sluice._pool_status() w
  JOIN sluice._pipeline p USING (pipeline_id)
  LEFT JOIN sluice._worker_status() s USING (pipeline_id);
COMMENT ON COLUMN sluice.workers.waiting IS 'Why no worker serves it yet, e.g. ''waiting for a pool worker: no background worker slot is free (max_worker_processes = 8)'', or the error it backs off from; null while a worker serves it.';

-- chunks copied in parallel by background copy workers (issue 19)
-------------------------------------------------------------------------------
-- The claimed ranges of a table copied in chunks (src/snapshot.c): each
-- chunk claims the chunk_rows keys after the last claimed range, commits
-- the claim, copies the range in one snapshot of the source, and records
-- that snapshot and a watermark written after it.  The stream applies a
-- change to a key of a copied range only when the range's snapshot did not
-- see its transaction; once it has passed the watermark the range goes and
-- sluice._copy.frontier moves over it.
-------------------------------------------------------------------------------

CREATE TABLE sluice._copy_range (
    pipeline_id    integer NOT NULL,
    source_schema  text NOT NULL,
    source_table   text NOT NULL,
    chunk          integer NOT NULL CHECK (chunk > 0),
    lo             text[],
    hi             text[],
    state          text NOT NULL CHECK (state IN ('claimed', 'copied')),
    snapshot       text,
    watermark      pg_lsn,
    rows           bigint,
    worker_pid     integer,
    claimed_at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    copied_at      timestamptz,
    PRIMARY KEY (pipeline_id, source_schema, source_table, chunk),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._copy ON DELETE CASCADE,
    CHECK (state = 'claimed' OR (snapshot IS NOT NULL AND watermark IS NOT NULL))
);
COMMENT ON TABLE sluice._copy_range IS
  'Private: the claimed ranges of each table copied in chunks, in key order (chunk); lo is exclusive, hi inclusive (NULL: to the end), as the source''s text of each key column; snapshot (pg_current_snapshot) and watermark once copied.';
SELECT pg_catalog.pg_extension_config_dump('sluice._copy_range', '');
ALTER TABLE sluice._copy_range ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._copy_range
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.copy_chunks AS
SELECT p.name AS pipeline,
       t.target_schema,
       t.target_table,
       r.chunk,
       r.state,
       r.lo AS after_key,
       r.hi AS up_to_key,
       r.rows,
       r.worker_pid,
       r.claimed_at,
       r.copied_at
  FROM sluice._copy_range r
  JOIN sluice._pipeline p USING (pipeline_id)
  JOIN sluice._pipeline_table t USING (pipeline_id, source_schema, source_table)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.copy_chunks IS
  'The chunks of the tables being copied that are claimed or copied but not yet passed by the stream, and which process copies or copied each; each role sees the pipelines it may operate.';
COMMENT ON COLUMN sluice.copy_chunks.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.copy_chunks.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.copy_chunks.target_table IS 'Datamart table being copied.';
COMMENT ON COLUMN sluice.copy_chunks.chunk IS 'Number of the chunk, in key order.';
COMMENT ON COLUMN sluice.copy_chunks.state IS 'claimed (being copied, or to copy again after its copier stopped) or copied (committed; the stream applies what its snapshot did not see until it passes the chunk''s watermark, then the row goes).';
COMMENT ON COLUMN sluice.copy_chunks.after_key IS 'The chunk holds the keys above this one (the source''s text of each key column; NULL: from the first key).';
COMMENT ON COLUMN sluice.copy_chunks.up_to_key IS 'The chunk holds the keys up to this one (NULL: to the last key).';
COMMENT ON COLUMN sluice.copy_chunks.rows IS 'Rows copied (NULL while claimed).';
COMMENT ON COLUMN sluice.copy_chunks.worker_pid IS 'Process that claimed it, then the one that copied it (a copy worker, or the session of sluice.copy_chunk).';
COMMENT ON COLUMN sluice.copy_chunks.claimed_at IS 'When it was claimed.';
COMMENT ON COLUMN sluice.copy_chunks.copied_at IS 'When its copy committed.';

CREATE FUNCTION sluice._copy_workers_running(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_copy_workers_running'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice._copy_workers_running(text) IS
  'Private: does a background copy worker of the pipeline run (sluice.copy_tables then waits for them)?';

REVOKE ALL ON sluice._copy_range FROM PUBLIC;
GRANT SELECT ON sluice.copy_chunks TO PUBLIC;

-- a procedure: each chunk commits before the next starts (no SET clause:
-- a procedure with one cannot commit; it sets search_path itself).  While
-- background copy workers (99_copy.sql, src/copyworker.c) copy the
-- pipeline's chunks it waits for them instead, with a notice every 5 s.
CREATE OR REPLACE PROCEDURE sluice.copy_tables(pipeline text, max_chunks integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
  n integer := 0;
  r record;
  said timestamptz := pg_catalog.clock_timestamp();
BEGIN
  -- workers started by the commit that asked for the copy may not run yet
  FOR i IN 1 .. 20 LOOP
    EXIT WHEN sluice._copy_workers_running(pipeline)
           OR pg_catalog.current_setting('pg_sluice.copy_workers', true) OPERATOR(pg_catalog.=) '0'
           OR NOT EXISTS (SELECT FROM sluice.copy_progress c
                           WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                             AND c.state OPERATOR(pg_catalog.=) 'copying');
    PERFORM pg_catalog.pg_sleep(0.1);
  END LOOP;
  LOOP
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    EXIT WHEN max_chunks IS NOT NULL AND n >= max_chunks;
    IF sluice._copy_workers_running(pipeline) THEN
      -- the workers copy: wait for the end of every copy of the pipeline
      EXIT WHEN NOT EXISTS (SELECT FROM sluice.copy_progress c
                             WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                               AND c.state OPERATOR(pg_catalog.=) 'copying');
      IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) said OPERATOR(pg_catalog.>) interval '5 s' THEN
        said := pg_catalog.clock_timestamp();
        FOR r IN SELECT * FROM sluice.copy_progress c
                  WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                    AND c.state OPERATOR(pg_catalog.=) 'copying'
        LOOP
          RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows, % rows/s, % left (background copy workers)',
            pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
            r.chunks_done, r.chunks_total, r.rows_copied, r.rows_per_second, r.eta;
        END LOOP;
      END IF;
      PERFORM pg_catalog.pg_sleep(0.1);
      COMMIT;
      CONTINUE;
    END IF;
    EXIT WHEN NOT sluice.copy_chunk(pipeline);
    n := n OPERATOR(pg_catalog.+) 1;
    FOR r IN SELECT * FROM sluice.copy_progress c
              WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
              ORDER BY c.last_chunk_at DESC NULLS LAST LIMIT 1
    LOOP
      RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows, % rows/s, % left',
        pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
        r.chunks_done, r.chunks_total, r.rows_copied, r.rows_per_second, r.eta;
    END LOOP;
    COMMIT;
  END LOOP;
END
$$;
COMMENT ON PROCEDURE sluice.copy_tables(text, integer) IS
  'Copies the chunks of the pipeline''s tables being copied, committing after each (at most max_chunks when given), with a progress notice per chunk; CALL it again after a crash or a cancel: it resumes after the last committed chunk. While background copy workers (pg_sluice.copy_workers) copy them, it waits until every copy of the pipeline has finished. Call it outside a transaction block.';

COMMENT ON FUNCTION sluice.resnapshot(text, regclass, integer) IS
  'Copies a datamart table of a pipeline again from its source table, in chunks of chunk_rows keys, while the pipeline''s other tables go on; its rows stay readable until their chunk replaces them. Background copy workers (pg_sluice.copy_workers) copy the chunks once the transaction commits; with none, CALL sluice.copy_tables(pipeline) (or sluice.copy_chunk). sluice.copy_progress shows how far it is. The table needs a primary key.';
COMMENT ON FUNCTION sluice.add_table(text, text, integer) IS
  'Adds a source table (schema.table) to a pipeline while it streams: the table joins the pipeline''s publication on the source (when pg_sluice created it), its datamart table is created empty in the pipeline''s target schema and filled in chunks of chunk_rows keys by background copy workers (pg_sluice.copy_workers) once the transaction commits, or with none by CALL sluice.copy_tables(pipeline); the other tables go on. Returns the datamart table. The table needs a primary key.';
COMMENT ON FUNCTION sluice.copy_chunk(text) IS
  'Copies one chunk of the pipeline''s tables being copied (one whose copier stopped, else the next) in the caller''s transaction; a pipeline refreshed on demand is then refreshed up to the chunk''s watermark (a streaming one''s worker applies the stream). Returns false when no chunk was left to copy (every copy is then finished, or waits for the stream). The source''s role needs EXECUTE on pg_logical_emit_message.';
-- an error's text (a value of the failing row) only to the pipeline's
-- operators and to roles that read all its tables (sluice.runs.error,
-- sluice.status.last_error)
CREATE FUNCTION sluice._error_shown(pipeline_id integer, owner oid, who name)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = owner AND pg_has_role(who, r.oid, 'USAGE'))
      OR NOT EXISTS (SELECT 1 FROM sluice._pipeline_table t
                      WHERE t.pipeline_id = _error_shown.pipeline_id
                        AND NOT coalesce(has_table_privilege(who,
                              to_regclass(format('%I.%I', t.target_schema, t.target_table)), 'SELECT'), true))
$$;
COMMENT ON FUNCTION sluice._error_shown(integer, oid, name) IS
  'Private: role who may read the error text of this pipeline''s runs (it has the privileges of the pipeline''s owner, or reads all its tables); the views pass current_user.';

CREATE OR REPLACE VIEW sluice.runs AS
SELECT r.run_id,
       p.name AS pipeline,
       r.kind,
       r.status,
       r.started_at,
       r.finished_at,
       r.finished_at OPERATOR(pg_catalog.-) r.started_at AS duration,
       r.start_lsn,
       r.end_lsn,
       r.transactions,
       r.rows_inserted,
       r.rows_updated,
       r.rows_deleted,
       r.tables_truncated,
       r.last_source_commit,
       CASE WHEN r.error IS NULL THEN NULL
            WHEN sluice._error_shown(p.pipeline_id, p.owner::oid, CURRENT_USER) THEN r.error
            ELSE 'an error (shown to the pipeline''s operators and to roles that can read all its tables)'
       END AS error,
       r.skipped_xid,
       r.rows_missing,
       (SELECT pg_catalog.jsonb_object_agg(rt.target_schema OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) rt.target_table,
                                          rt.rows_missing)
          FROM sluice._run_table rt
         WHERE rt.run_id OPERATOR(pg_catalog.=) r.run_id AND rt.rows_missing OPERATOR(pg_catalog.>) 0) AS missing_by_table
  FROM sluice._run r
  JOIN sluice._pipeline p USING (pipeline_id);

CREATE OR REPLACE VIEW sluice.status AS
WITH w AS (SELECT * FROM sluice._worker_status()),
     limits AS (SELECT pg_catalog.pg_size_bytes(COALESCE(
                         pg_catalog.current_setting('pg_sluice.max_retained_wal', true), '1GB')) AS max_wal)
SELECT p.name AS pipeline,
       CASE WHEN p.continuous THEN 'continuous' ELSE 'scheduled' END AS mode,
       CASE WHEN p.paused_reason IS NOT NULL THEN 'paused'
            WHEN NOT p.continuous THEN 'stopped'
            WHEN w.pipeline_id IS NULL OR w.last_error IS NOT NULL THEN 'error'
            WHEN w.pid IS NULL THEN 'starting'
            ELSE 'running' END AS state,
       CASE WHEN p.continuous THEN COALESCE(
                 CASE WHEN sluice._error_shown(p.pipeline_id, p.owner::oid, CURRENT_USER) THEN COALESCE(w.last_error, p.last_error)
                      WHEN COALESCE(w.last_error, p.last_error) IS NOT NULL
                      THEN 'an error (shown to the pipeline''s operators and to roles that can read all its tables)' END,
                 CASE WHEN w.pipeline_id IS NULL
                      THEN 'no worker: pg_sluice must be in shared_preload_libraries' END)
       END AS last_error,
       CASE WHEN p.continuous THEN p.last_error_at END AS last_error_at,
       p.paused_reason,
       p.paused_at,
       w.next_retry_at,
       w.pid AS worker_pid,
       ok.run_id AS last_run_id,
       ok.finished_at AS last_success_at,
       pg_catalog.now() OPERATOR(pg_catalog.-) ok.finished_at AS staleness,
       COALESCE(w.applied_lsn, ok.end_lsn) AS applied_lsn,
       COALESCE(w.source_flush_lsn, ok.source_flush_lsn) AS source_lsn,
       GREATEST(0, pg_catalog.pg_wal_lsn_diff(
           COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
           COALESCE(w.applied_lsn, ok.end_lsn)))::bigint AS lag_bytes,
       CASE WHEN COALESCE(w.source_flush_lsn, ok.source_flush_lsn) OPERATOR(pg_catalog.<=)
                 COALESCE(w.applied_lsn, ok.end_lsn) THEN 0
            ELSE pg_catalog.date_part('epoch', COALESCE(w.measured_at, ok.started_at)
                     OPERATOR(pg_catalog.-) COALESCE(w.last_source_commit, ok.last_source_commit))
       END::double precision AS lag_seconds,
       pg_catalog.pg_wal_lsn_diff(COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
                                  COALESCE(w.slot_restart_lsn, ok.slot_restart_lsn))::bigint AS retained_wal_bytes,
       COALESCE(pg_catalog.pg_wal_lsn_diff(COALESCE(w.source_flush_lsn, ok.source_flush_lsn),
                                  COALESCE(w.slot_restart_lsn, ok.slot_restart_lsn))
                           OPERATOR(pg_catalog.>) limits.max_wal AND limits.max_wal OPERATOR(pg_catalog.>) 0, false)
           AS retained_wal_warning,
       COALESCE(w.measured_at, ok.started_at) AS measured_at,
       COALESCE(w.rows_per_second,
           (ok.rows_inserted OPERATOR(pg_catalog.+) ok.rows_updated OPERATOR(pg_catalog.+) ok.rows_deleted)
           OPERATOR(pg_catalog./) NULLIF(pg_catalog.date_part('epoch', ok.finished_at OPERATOR(pg_catalog.-) ok.started_at), 0))
           AS rows_per_second,
       p.rows_missing,
       p.last_missing_at,
       p.strict,
       sluice._copy_state(p.name) AS copy
  FROM sluice._pipeline p
  CROSS JOIN limits
  LEFT JOIN w ON w.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
  LEFT JOIN LATERAL (SELECT r.* FROM sluice._run r
                      WHERE r.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id
                        AND r.status OPERATOR(pg_catalog.=) 'succeeded'
                      ORDER BY r.run_id DESC LIMIT 1) ok ON true;

-- copy_tables' notices leave out the rate and the time left while they are
-- unknown instead of printing <NULL> (ops10)
CREATE OR REPLACE PROCEDURE sluice.copy_tables(pipeline text, max_chunks integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
  n integer := 0;
  r record;
  said timestamptz := pg_catalog.clock_timestamp();
BEGIN
  -- workers started by the commit that asked for the copy may not run yet
  FOR i IN 1 .. 20 LOOP
    EXIT WHEN sluice._copy_workers_running(pipeline)
           OR pg_catalog.current_setting('pg_sluice.copy_workers', true) OPERATOR(pg_catalog.=) '0'
           OR NOT EXISTS (SELECT FROM sluice.copy_progress c
                           WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                             AND c.state OPERATOR(pg_catalog.=) 'copying');
    PERFORM pg_catalog.pg_sleep(0.1);
  END LOOP;
  LOOP
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    EXIT WHEN max_chunks IS NOT NULL AND n >= max_chunks;
    IF sluice._copy_workers_running(pipeline) THEN
      -- the workers copy: wait for the end of every copy of the pipeline
      EXIT WHEN NOT EXISTS (SELECT FROM sluice.copy_progress c
                             WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                               AND c.state OPERATOR(pg_catalog.=) 'copying');
      IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) said OPERATOR(pg_catalog.>) interval '5 s' THEN
        said := pg_catalog.clock_timestamp();
        FOR r IN SELECT * FROM sluice.copy_progress c
                  WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                    AND c.state OPERATOR(pg_catalog.=) 'copying'
        LOOP
          RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows% (background copy workers)',
            pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
            r.chunks_done, r.chunks_total, r.rows_copied,
            pg_catalog.concat(CASE WHEN r.rows_per_second IS NULL THEN '' ELSE pg_catalog.format(', %s rows/s', r.rows_per_second) END,
                              CASE WHEN r.eta IS NULL THEN '' ELSE pg_catalog.format(', %s left', r.eta) END);
        END LOOP;
      END IF;
      PERFORM pg_catalog.pg_sleep(0.1);
      COMMIT;
      CONTINUE;
    END IF;
    EXIT WHEN NOT sluice.copy_chunk(pipeline);
    n := n OPERATOR(pg_catalog.+) 1;
    FOR r IN SELECT * FROM sluice.copy_progress c
              WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
              ORDER BY c.last_chunk_at DESC NULLS LAST LIMIT 1
    LOOP
      RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows%',
        pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
        r.chunks_done, r.chunks_total, r.rows_copied,
        pg_catalog.concat(CASE WHEN r.rows_per_second IS NULL THEN '' ELSE pg_catalog.format(', %s rows/s', r.rows_per_second) END,
                          CASE WHEN r.eta IS NULL THEN '' ELSE pg_catalog.format(', %s left', r.eta) END);
    END LOOP;
    COMMIT;
  END LOOP;
END
$$;

-- copy workers that keep failing back off: 5 s doubling up to 5 minutes,
-- shown in sluice.copy_failures and sluice.status.copy (ops10)
-------------------------------------------------------------------------------
-- A copy worker whose chunk fails records it here and exits; the next one
-- waits until next_attempt_at: 5 s after the first failure, doubling up to
-- 5 minutes.  A chunk copied by a worker, or a copy asked for again
-- (resnapshot, add_table), removes the row.
-------------------------------------------------------------------------------

CREATE TABLE sluice._copy_failure (
    pipeline_id      integer PRIMARY KEY REFERENCES sluice._pipeline ON DELETE CASCADE,
    failures         integer NOT NULL CHECK (failures > 0),
    last_error       text NOT NULL,
    failed_at        timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL
);
COMMENT ON TABLE sluice._copy_failure IS
  'Private: the failures in a row of the copy workers of a pipeline, the last error and when they try again (src/copyworker.c).';
SELECT pg_catalog.pg_extension_config_dump('sluice._copy_failure', '');
ALTER TABLE sluice._copy_failure ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._copy_failure
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.copy_failures AS
SELECT p.name AS pipeline,
       f.failures,
       CASE WHEN sluice._error_shown(p.pipeline_id, p.owner::oid, CURRENT_USER) THEN f.last_error
            ELSE 'an error (shown to the pipeline''s operators and to roles that can read all its tables)'
       END AS last_error,
       f.failed_at,
       f.next_attempt_at
  FROM sluice._copy_failure f
  JOIN sluice._pipeline p USING (pipeline_id);
COMMENT ON VIEW sluice.copy_failures IS
  'Pipelines whose background copy workers failed to copy a chunk, and when they try again (5 s after the first failure, doubling up to 5 minutes); a chunk copied removes the row.';
COMMENT ON COLUMN sluice.copy_failures.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.copy_failures.failures IS 'Failed attempts in a row.';
COMMENT ON COLUMN sluice.copy_failures.last_error IS 'Why the last attempt failed; the text only to the pipeline''s operators and to roles that can read all its tables.';
COMMENT ON COLUMN sluice.copy_failures.failed_at IS 'When the last attempt failed.';
COMMENT ON COLUMN sluice.copy_failures.next_attempt_at IS 'When a copy worker tries again; sluice.copy_chunk(pipeline) tries at once in the caller''s session, and the workers go on as soon as a chunk is copied.';

REVOKE ALL ON sluice._copy_failure FROM PUBLIC;
GRANT SELECT ON sluice.copy_failures TO PUBLIC;

CREATE OR REPLACE FUNCTION sluice._copy_state(pipeline text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  f record;
BEGIN
  SELECT pg_catalog.count(*) AS tables,
         pg_catalog.sum(c.chunks_done) AS done,
         pg_catalog.sum(c.chunks_total) AS total,
         pg_catalog.sum(c.rows_copied) AS copied,
         pg_catalog.sum(c.rows_estimate) AS estimate,
         pg_catalog.max(c.eta) AS eta
    INTO r
    FROM sluice.copy_progress c
   WHERE c.pipeline OPERATOR(pg_catalog.=) _copy_state.pipeline
     AND c.state OPERATOR(pg_catalog.=) 'copying';
  IF r.tables OPERATOR(pg_catalog.=) 0 THEN
    RETURN NULL;
  END IF;
  -- copy workers that keep failing wait (sluice.copy_failures, 99_ops10.sql)
  SELECT c.failures, c.next_attempt_at INTO f
    FROM sluice.copy_failures c
   WHERE c.pipeline OPERATOR(pg_catalog.=) _copy_state.pipeline;
  RETURN pg_catalog.format('copying %s table%s: chunk %s/%s, %s rows%s%s%s',
           r.tables, CASE WHEN r.tables OPERATOR(pg_catalog.>) 1 THEN 's' ELSE '' END,
           r.done, r.total, r.copied,
           CASE WHEN r.estimate OPERATOR(pg_catalog.>) 0
                THEN pg_catalog.format(', %s%%', LEAST(100, pg_catalog.floor(
                       100 OPERATOR(pg_catalog.*) r.copied OPERATOR(pg_catalog./) r.estimate::numeric)))
                ELSE '' END,
           CASE WHEN r.eta IS NOT NULL
                THEN pg_catalog.format(', eta %s', pg_catalog.date_trunc('second', r.eta))
                ELSE '' END,
           CASE WHEN f.failures IS NOT NULL
                THEN pg_catalog.format('; copy workers failed %s time%s in a row, next attempt at %s (sluice.copy_failures)',
                       f.failures, CASE WHEN f.failures OPERATOR(pg_catalog.>) 1 THEN 's' ELSE '' END,
                       pg_catalog.date_trunc('second', f.next_attempt_at))
                ELSE '' END);
END
$$;
-- sluice.workers.waiting masked as sluice.status.last_error (hostile review 10)
CREATE OR REPLACE VIEW sluice.workers AS
SELECT p.name AS pipeline, w.worker, w.worker_pid, w.in_batch, w.batch_started_at,
       pg_catalog.count(w.worker) OVER (PARTITION BY w.worker) AS worker_pipelines,
       CASE WHEN w.worker IS NOT NULL OR s.last_error IS NULL THEN NULL
            WHEN sluice._error_shown(p.pipeline_id, p.owner::oid, CURRENT_USER) THEN s.last_error
            ELSE 'an error (shown to the pipeline''s operators and to roles that can read all its tables)'
       END AS waiting
  FROM sluice._pool_status() w
  JOIN sluice._pipeline p USING (pipeline_id)
  LEFT JOIN sluice._worker_status() s USING (pipeline_id);
COMMENT ON COLUMN sluice.workers.waiting IS 'Why no worker serves it yet, e.g. ''waiting for a pool worker: no background worker slot is free (max_worker_processes = 8)'', or the error it backs off from; null while a worker serves it. As sluice.status.last_error: its text only to the pipeline''s operators and to roles that can read all its tables (an error can carry a value of the failing row), to others that there is one.';

-- sluice._error_shown: no error text to a reader that row security keeps from some rows (hostile review 10)
CREATE OR REPLACE FUNCTION sluice._error_shown(pipeline_id integer, owner oid, who name)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = owner AND pg_has_role(who, r.oid, 'USAGE'))
      OR NOT EXISTS (SELECT 1 FROM sluice._pipeline_table t
                       LEFT JOIN pg_class c ON c.oid = to_regclass(format('%I.%I', t.target_schema, t.target_table))
                      WHERE t.pipeline_id = _error_shown.pipeline_id
                        AND c.oid IS NOT NULL
                        AND (NOT has_table_privilege(who, c.oid, 'SELECT')
                             OR (c.relrowsecurity
                                 AND NOT EXISTS (SELECT 1 FROM pg_roles w
                                                  WHERE w.rolname = who AND (w.rolsuper OR w.rolbypassrls))
                                 AND (c.relforcerowsecurity OR NOT pg_has_role(who, c.relowner, 'USAGE')))))
$$;
COMMENT ON FUNCTION sluice._error_shown(integer, oid, name) IS
  'Private: role who may read the error text of this pipeline''s runs (it has the privileges of the pipeline''s owner, or reads every row of all its tables: SELECT, no row security applying to it); the views pass current_user.';

-- sluice._readable: values of a table (sluice.quality, sluice.http_endpoints) not to a reader that row security keeps from some rows (hostile review 10)
CREATE OR REPLACE FUNCTION sluice._readable(target_schema name, target_table name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  -- runs as whoever reads the view: views that show values of a table show
  -- them only to roles that can SELECT every row of it (no row security
  -- applying to them: a sample of failing values spans every row)
  SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = target_schema AND c.relname = target_table
                    AND has_table_privilege(c.oid, 'SELECT')
                    AND (NOT c.relrowsecurity
                         OR EXISTS (SELECT 1 FROM pg_roles w
                                     WHERE w.rolname = current_user AND (w.rolsuper OR w.rolbypassrls))
                         OR (NOT c.relforcerowsecurity AND pg_has_role(c.relowner, 'USAGE'))))
$$;
COMMENT ON FUNCTION sluice._readable(name, name) IS 'Private: the current role can SELECT every row of this datamart table (no row security applies to it).';
-- the lazy key of a chunked copy from empty (issue 19, src/sql/99_copy10.sql)
ALTER TABLE sluice._copy
  ADD COLUMN deferred_key text[],
  ADD COLUMN deferred_key_deferrable boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN sluice._copy.deferred_key IS
  'Private: the datamart key columns, in key order, of a primary key not built yet (the table started empty and is a heap until the stream has a change for a copied range or the copy finishes); NULL once built, or when the table kept its key.';
COMMENT ON COLUMN sluice._copy.deferred_key_deferrable IS
  'Private: the deferred key is built DEFERRABLE INITIALLY DEFERRED (as create_pipeline builds it for a source key that is deferrable or an identity FULL).';
-- a source table renamed on live is followed by its oid, or accepted under freeze (rename12, src/sql/99_rename12.sql)
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
