/*
 * src/sql/80_interfaces.sql -- contract versions published as stable
 * interfaces for consumers (issue 16).
 *
 * _published_contract and its row security, publish_contract,
 * unpublish_contract, the published_contracts view, the view builder and
 * its cast-back rule, the re-binding of expectations when a contract
 * changes (_contract_settled, called by _contract_changed and by
 * interface.c during apply), and their privileges.  After 70_security.sql:
 * its policy uses _operates.
 */
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
