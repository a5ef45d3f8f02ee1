/*
 * src/sql/40_expectations.sql -- expectations and quarantine.
 *
 * The predicate helpers and compiler (_compile_predicate, _compile_check,
 * _exec_as_owner), _expectation_sql (the text of each kind),
 * add_expectation, drop_expectation, the
 * expect_* wrappers (Great Expectations names), release_quarantined and
 * discard_quarantined.
 */

-------------------------------------------------------------------------------
-- Expectations (Great Expectations names; see README for the dbt mapping)
-------------------------------------------------------------------------------

CREATE FUNCTION sluice._length_between(s text, lo bigint, hi bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_length_between'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice._length_between(text, bigint, bigint) IS
  'Private: lo <= length(s) <= hi, counted once; the predicate of expect_column_value_lengths_to_be_between.';

CREATE FUNCTION sluice._regex_match(s text, pattern text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_regex_match'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice._regex_match(text, text) IS
  'Private: s ~ pattern; row expectations call it for ~ and !~. Simple patterns (characters, bracket expressions, quantifiers, ^ and $) are matched without PostgreSQL''s regex engine, many times faster; the rest are passed to it.';

CREATE FUNCTION sluice._regex_is_simple(pattern text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_regex_is_simple'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice._regex_is_simple(text) IS
  'Private: whether sluice._regex_match matches this pattern itself (in a deterministic collation) rather than through PostgreSQL''s regex engine.';

CREATE FUNCTION sluice._changed_here(xid)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_changed_here'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION sluice._changed_here(xid) IS
  'Private: true when a row version (its xmin) was written by the current transaction: set expectations look at what the batch changed.';

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

CREATE FUNCTION sluice.add_expectation(
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

CREATE FUNCTION sluice.drop_expectation(target regclass, name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
BEGIN
  t := sluice._contract_table(target, true);
  DELETE FROM sluice._expectation e
   WHERE (e.pipeline_id, e.source_schema, e.source_table) = (t.pipeline_id, t.source_schema, t.source_table)
     AND e.name = drop_expectation.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'expectation "%" does not exist on %', name, target USING ERRCODE = 'undefined_object',
      HINT = 'sluice.expectations lists them.';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.drop_expectation(regclass, text) IS 'Removes an expectation (its past results go with it).';

CREATE FUNCTION sluice.expect_column_values_to_not_be_null(target regclass, column_name name, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_not_be_null', ARRAY[column_name], '{}', severity);
CREATE FUNCTION sluice.expect_column_values_to_be_null(target regclass, column_name name, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_be_null', ARRAY[column_name], '{}', severity);
CREATE FUNCTION sluice.expect_column_values_to_not_be_in_set(target regclass, column_name name, value_set text[], severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_not_be_in_set', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('value_set', pg_catalog.to_jsonb(value_set)), severity);
CREATE FUNCTION sluice.expect_column_values_to_not_match_regex(target regclass, column_name name, regex text, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_not_match_regex', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('regex', regex), severity);
CREATE FUNCTION sluice.expect_column_values_to_match_like_pattern(target regclass, column_name name, like_pattern text, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_match_like_pattern', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('like_pattern', like_pattern), severity);
CREATE FUNCTION sluice.expect_column_value_lengths_to_equal(target regclass, column_name name, value integer, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_value_lengths_to_equal', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('value', value), severity);
CREATE FUNCTION sluice.expect_column_values_to_be_unique(target regclass, column_names name[], severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_be_unique', column_names, '{}', severity);
CREATE FUNCTION sluice.expect_column_values_to_be_in_set(target regclass, column_name name, value_set text[], severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_be_in_set', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('value_set', pg_catalog.to_jsonb(value_set)), severity);
-- min_value and max_value take any type (10, 2.5, '2020-01-01', now() - '1 day'::interval):
-- they are stored as text and cast to the column's type when the expectation is bound.
CREATE FUNCTION sluice.expect_column_values_to_be_between(target regclass, column_name name,
    min_value anycompatible, max_value anycompatible,
    strict_min boolean DEFAULT false, strict_max boolean DEFAULT false, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
-- a quoted body: a polymorphic SQL function cannot have a standard one
AS $$SELECT sluice.add_expectation(target, 'expect_column_values_to_be_between', ARRAY[column_name],
    pg_catalog.jsonb_build_object('min_value', min_value::pg_catalog.text, 'max_value', max_value::pg_catalog.text,
                                  'strict_min', strict_min, 'strict_max', strict_max), severity)$$;
CREATE FUNCTION sluice.expect_column_values_to_match_regex(target regclass, column_name name, regex text, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_match_regex', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('regex', regex), severity);
CREATE FUNCTION sluice.expect_column_value_lengths_to_be_between(target regclass, column_name name, min_value integer, max_value integer, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_value_lengths_to_be_between', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('min_value', min_value, 'max_value', max_value), severity);
CREATE FUNCTION sluice.expect_table_row_count_to_be_between(target regclass, min_value bigint, max_value bigint, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_table_row_count_to_be_between', '{}',
                              pg_catalog.jsonb_build_object('min_value', min_value, 'max_value', max_value), severity);
CREATE FUNCTION sluice.expect_column_values_to_be_in_table(target regclass, column_name name, other_table regclass, other_column name, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_values_to_be_in_table', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('table', other_table::text, 'column', other_column), severity);
CREATE FUNCTION sluice.expect_column_max_to_be_fresh(target regclass, column_name name, max_age interval, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_column_max_to_be_fresh', ARRAY[column_name],
                              pg_catalog.jsonb_build_object('max_age', max_age), severity);
CREATE FUNCTION sluice.expect_row_to_satisfy(target regclass, predicate text, severity text DEFAULT 'error')
RETURNS text LANGUAGE sql VOLATILE
RETURN sluice.add_expectation(target, 'expect_row_to_satisfy', '{}',
                              pg_catalog.jsonb_build_object('predicate', predicate), severity);

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
  -- written outside a batch: the models that read the table are rebuilt
  PERFORM sluice._models_after_write(target::regclass);
  UPDATE sluice._quarantine SET status = 'released', resolved_at = now(), row_data = newrow
   WHERE _quarantine.quarantine_id = release_quarantined.quarantine_id;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.release_quarantined(bigint, jsonb, boolean) IS
  'Writes a held row into its datamart table (as stored, or merged with a correction that gives the columns it changes), replacing the row with the same key; marks it released. A row superseded by a later change of its key is refused unless force.';

CREATE FUNCTION sluice.discard_quarantined(quarantine_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE sluice._quarantine SET status = 'discarded', resolved_at = now()
   WHERE _quarantine.quarantine_id = discard_quarantined.quarantine_id AND status = 'held';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no held quarantined row %', quarantine_id USING ERRCODE = 'undefined_object';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.discard_quarantined(bigint) IS 'Marks a held row discarded: it never reaches the datamart.';
