/*
 * src/sql/20_contracts.sql -- data contracts and schema drift.
 *
 * The contract helpers (_contract_table, _contract_json, _contract_changed,
 * _alter_target, _type_name, _one_expression, _contract_column_of),
 * set_drift_policy, map_column, drop_column, accept_type_change (with
 * their REVOKE) and contract_diff.
 */

CREATE FUNCTION sluice._contract_table(target regclass, lock boolean DEFAULT false,
    OUT pipeline_id integer, OUT source_schema text, OUT source_table text,
    OUT contract_version integer)
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  SELECT pt.pipeline_id, pt.source_schema, pt.source_table, pt.contract_version
    INTO pipeline_id, source_schema, source_table, contract_version
    FROM sluice._pipeline_table pt
    JOIN pg_class c ON c.relname = pt.target_table
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = pt.target_schema
   WHERE c.oid = target;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'table % is not fed by a pg_sluice pipeline', target USING ERRCODE = 'undefined_object',
      HINT = 'sluice.pipeline_tables lists the datamart tables pg_sluice feeds.';
  END IF;
  IF lock THEN
    -- a refresh or worker batch of the pipeline holds this row while it applies
    PERFORM 1 FROM sluice._pipeline p WHERE p.pipeline_id = _contract_table.pipeline_id FOR UPDATE;
  END IF;
END
$$;

CREATE FUNCTION sluice.set_drift_policy(target regclass, policy text)
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
COMMENT ON FUNCTION sluice.set_drift_policy(regclass, text) IS
  'Sets what happens when the source table''s columns change (freeze, evolve or ignore); returns the previous policy.';

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

CREATE FUNCTION sluice.map_column(target regclass, column_name name, source_column text)
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
COMMENT ON FUNCTION sluice.map_column(regclass, name, text) IS
  'Feeds a datamart column from a (renamed) source column; records and returns a new contract version.';

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

REVOKE ALL ON FUNCTION sluice.drop_column(regclass, name, boolean), sluice.accept_type_change(regclass, name, text, text),
  sluice._contract_changed(regclass, text, text), sluice._alter_target(regclass, text),
  sluice._contract_column_of(regclass, name, text), sluice._type_name(text), sluice._one_expression(text),
  sluice._contract_json(integer, text, text, integer) FROM PUBLIC;

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
