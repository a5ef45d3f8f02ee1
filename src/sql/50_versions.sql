/*
 * src/sql/50_versions.sql -- versions: history, time travel, tags, diff, retention.
 *
 * _version_ok, _make_at_functions, keep_history, _version_check,
 * _version_at, tag, untag, _history_of, diff and purge_history.
 */

-------------------------------------------------------------------------------
-- Versions: history, time travel, tags, diff, retention
-------------------------------------------------------------------------------


CREATE FUNCTION sluice._version_ok(pipeline_id integer, version bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM sluice._version_check(pipeline_id, version);
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice._version_ok(integer, bigint) IS 'Private: true, or an error saying why the version cannot be read.';

-- (Re)creates <table>_at(version) and <table>_at_time(timestamptz): plain SQL
-- functions the planner inlines into the calling query, so "as of" reads
-- stream (and run in parallel) like any UNION ALL of two tables.
CREATE FUNCTION sluice._make_at_functions(target regclass)
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
COMMENT ON FUNCTION sluice._make_at_functions(regclass) IS 'Private: (re)creates a table''s time-travel functions.';

CREATE FUNCTION sluice.keep_history(pipeline text)
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
COMMENT ON FUNCTION sluice.keep_history(text) IS
  'Keeps every version of the pipeline''s tables from now on: adds _sluice_version to each table, a <schema>_history table of superseded rows and the functions <table>_at(version) and <table>_at_time(timestamptz); returns the first version kept.';

CREATE FUNCTION sluice._version_check(pipeline_id integer, version bigint)
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

CREATE FUNCTION sluice._version_at(pipeline_id integer, at timestamptz)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT max(r.run_id) FROM sluice._run r JOIN sluice._pipeline p USING (pipeline_id)
   WHERE r.pipeline_id = _version_at.pipeline_id AND r.status = 'succeeded'
     AND r.run_id >= p.history_from AND r.finished_at <= at
$$;

CREATE FUNCTION sluice.tag(pipeline text, name text, version bigint DEFAULT NULL)
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

CREATE FUNCTION sluice.untag(pipeline text, name text)
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
COMMENT ON FUNCTION sluice.untag(text, text) IS 'Removes a tag and its schema of views.';

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

CREATE FUNCTION sluice.diff(target regclass, from_version bigint, to_version bigint,
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
COMMENT ON FUNCTION sluice.diff(regclass, bigint, bigint) IS
  'Rows added, removed and changed in a table between two versions, with their key and both row images.';

CREATE FUNCTION sluice.purge_history(pipeline text, keep_last integer DEFAULT NULL, keep_for interval DEFAULT NULL,
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
COMMENT ON FUNCTION sluice.purge_history(text, integer, interval) IS
  'Deletes superseded rows no kept version can see (kept: the last keep_last versions, those younger than keep_for, every tagged one, and the latest); reports rows and bytes freed per table. VACUUM returns the space.';
