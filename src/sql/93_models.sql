/*
 * src/sql/93_models.sql -- models: tables defined by a query over pipeline
 * tables and other models, maintained in the transaction of each batch that
 * changes their inputs (issue 20; src/model.c).
 *
 * The catalog (_model, _model_input, _model_version, _model_expectation,
 * _run_model) and its row security, _model_bind and _model_analyze (C),
 * _model_columns, _model_inputs, _model_depths, _model_row, _model_table,
 * _model_fill, _model_keep_history (versions), _model_drop_table,
 * _models_after_write (release_quarantined and repair call it),
 * _model_refill_downstream, create_model, alter_model,
 * drop_model, rebuild_model, expect_model, drop_model_expectation, the views
 * models, model_versions and model_runs, what an operator is granted for
 * them (_model_operator_grants, called by _operator_grants) and their
 * privileges.  After 70_security.sql (its policies use _operates) and
 * 80_interfaces.sql (_require_arguments).
 */

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
