-- Every drift and contract function refuses bad input with a clear error:
-- the right SQLSTATE, a message naming what is wrong, a hint naming a step
-- that helps, and nothing changed (no contract version, no drift event, no
-- published interface).  Run as a non-superuser operator of the pipeline.
BEGIN;
SELECT plan(62);

-- the hint of the error a statement raises
CREATE FUNCTION pg_temp.hint_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  h text;
BEGIN
  EXECUTE sql;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END
$$;
GRANT EXECUTE ON FUNCTION pg_temp.hint_of(text) TO PUBLIC;

-- tap_owner owns the pipeline and its table; tap_op operates it; stranger
-- operates other pipelines only; nobody has no pg_sluice rights at all
CREATE ROLE tap_owner;
CREATE ROLE tap_op;
CREATE ROLE stranger;
CREATE ROLE nobody;
GRANT CREATE ON DATABASE postgres TO tap_owner;
SELECT sluice.grant_operator('tap_owner');
SELECT sluice.grant_operator('tap_op');
SELECT sluice.grant_operator('stranger');
GRANT tap_owner TO tap_op;
SELECT sluice.alter_pipeline_owner('tap', 'tap_owner');
ALTER TABLE tap.accounts OWNER TO tap_owner;
GRANT USAGE ON SCHEMA tap TO tap_owner, stranger, nobody;

CREATE TEMP TABLE before_state AS
SELECT (SELECT contract_version FROM sluice._pipeline_table WHERE target_table = 'accounts') AS version,
       (SELECT count(*) FROM sluice._drift_event) AS events,
       (SELECT count(*) FROM sluice._contract_column) AS columns;
GRANT SELECT ON before_state TO PUBLIC;

SET ROLE tap_op;

-- set_drift_policy
SELECT throws_ok($$SELECT sluice.set_drift_policy(NULL, 'evolve')$$, '22004',
    'sluice.set_drift_policy needs target, not NULL', 'set_drift_policy: NULL table');
SELECT throws_ok($$SELECT sluice.set_drift_policy('tap.accounts', NULL)$$, '22004',
    'sluice.set_drift_policy needs policy, not NULL', 'set_drift_policy: NULL policy (not a silent NULL)');
SELECT matches(pg_temp.hint_of($$SELECT sluice.set_drift_policy('tap.accounts', NULL)$$), 'freeze, evolve or ignore',
    'set_drift_policy: the hint names the policies');
SELECT throws_ok($$SELECT sluice.set_drift_policy('tap.accounts', '')$$, '22023',
    'unknown drift policy ""', 'set_drift_policy: empty policy');
SELECT throws_ok($$SELECT sluice.set_drift_policy('pg_class', 'evolve')$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'set_drift_policy: a table pg_sluice does not feed');
SELECT matches(pg_temp.hint_of($$SELECT sluice.set_drift_policy('pg_class', 'evolve')$$), 'sluice\.pipeline_tables',
    'set_drift_policy: the hint names sluice.pipeline_tables');
SELECT throws_ok($$SELECT sluice.set_drift_policy('tap.nope', 'evolve')$$, '42P01',
    'relation "tap.nope" does not exist', 'set_drift_policy: an unknown table');

-- map_column
SELECT throws_ok($$SELECT sluice.map_column(NULL, 'name', 'x')$$, '22004',
    'sluice.map_column needs a table and a column, not NULL', 'map_column: NULL table');
SELECT throws_ok($$SELECT sluice.map_column('tap.accounts', NULL, 'x')$$, '22004',
    'sluice.map_column needs a table and a column, not NULL', 'map_column: NULL column');
SELECT throws_ok($$SELECT sluice.map_column('tap.accounts', 'nope', 'x')$$, '42703',
    'column "nope" is not in the contract of tap.accounts', 'map_column: unknown column');
SELECT throws_ok($$SELECT sluice.map_column('tap.accounts', '', 'x')$$, '42703',
    'column "" is not in the contract of tap.accounts', 'map_column: empty column name');
SELECT throws_ok($$SELECT sluice.map_column('tap.accounts', 'name', NULL)$$, '22004',
    'source column must be named', 'map_column: NULL source column');
SELECT throws_ok($$SELECT sluice.map_column('tap.accounts', 'name', '')$$, '22023',
    'source column must be named', 'map_column: empty source column');
SELECT matches(pg_temp.hint_of($$SELECT sluice.map_column('tap.accounts', 'name', '')$$), 'sluice\.drop_column',
    'map_column: the hint names drop_column');
SELECT throws_ok($$SELECT sluice.map_column('pg_class', 'relname', 'x')$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'map_column: a table pg_sluice does not feed');

-- drop_column
SELECT throws_ok($$SELECT sluice.drop_column(NULL, 'name')$$, '22004',
    'sluice.drop_column needs a table and a column, not NULL', 'drop_column: NULL table');
SELECT throws_ok($$SELECT sluice.drop_column('tap.accounts', NULL)$$, '22004',
    'sluice.drop_column needs a table and a column, not NULL', 'drop_column: NULL column');
SELECT throws_ok($$SELECT sluice.drop_column('tap.accounts', 'nope')$$, '42703',
    'column "nope" is not in the contract of tap.accounts', 'drop_column: unknown column');
SELECT throws_ok($$SELECT sluice.drop_column('tap.accounts', '')$$, '42703',
    'column "" is not in the contract of tap.accounts', 'drop_column: empty column name');
SELECT matches(pg_temp.hint_of($$SELECT sluice.drop_column('tap.accounts', 'nope')$$), 'sluice\.contracts',
    'drop_column: the hint names sluice.contracts');
SELECT throws_ok($$SELECT sluice.drop_column('tap.accounts', 'name', NULL)$$, '22004',
    'keep must be true or false', 'drop_column: NULL keep');
SELECT throws_ok($$SELECT sluice.drop_column('tap.accounts', 'id')$$, '55000',
    'column "id" of tap.accounts is part of the key', 'drop_column: a key column');
SELECT throws_ok($$SELECT sluice.drop_column('pg_class', 'relname')$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'drop_column: a table pg_sluice does not feed');

-- accept_type_change
SELECT throws_ok($$SELECT sluice.accept_type_change(NULL, 'balance', 'numeric')$$, '22004',
    'sluice.accept_type_change needs a table and a column, not NULL', 'accept_type_change: NULL table');
SELECT throws_ok($$SELECT sluice.accept_type_change('tap.accounts', NULL, 'numeric')$$, '22004',
    'sluice.accept_type_change needs a table and a column, not NULL', 'accept_type_change: NULL column');
SELECT throws_ok($$SELECT sluice.accept_type_change('tap.accounts', 'balance', NULL)$$, '22004',
    'new_type must name a type', 'accept_type_change: NULL type');
SELECT throws_ok($$SELECT sluice.accept_type_change('tap.accounts', 'balance', '')$$, '22023',
    'new_type must name a type', 'accept_type_change: empty type');
SELECT matches(pg_temp.hint_of($$SELECT sluice.accept_type_change('tap.accounts', 'balance', '')$$), 'bigint',
    'accept_type_change: the hint shows a type name');
SELECT throws_ok($$SELECT sluice.accept_type_change('tap.accounts', 'nope', 'numeric')$$, '42703',
    'column "nope" is not in the contract of tap.accounts', 'accept_type_change: unknown column');
SELECT throws_ok($$SELECT sluice.accept_type_change('tap.accounts', 'balance', 'no_such_type')$$, '42704',
    'type "no_such_type" does not exist', 'accept_type_change: unknown type');
SELECT throws_ok($$SELECT sluice.accept_type_change('pg_class', 'relname', 'text')$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'accept_type_change: a table pg_sluice does not feed');

-- contract_diff
SELECT throws_ok($$SELECT * FROM sluice.contract_diff(NULL, 1, 1)$$, '22004',
    'sluice.contract_diff needs target, not NULL', 'contract_diff: NULL table (not an empty answer)');
SELECT throws_ok($$SELECT * FROM sluice.contract_diff('tap.accounts', NULL, NULL)$$, '22004',
    'sluice.contract_diff needs from_version and to_version, not NULL', 'contract_diff: NULL versions');
SELECT throws_ok($$SELECT * FROM sluice.contract_diff('tap.accounts', 0, 1)$$, '22023',
    'no contract versions 0 to 1 for tap.accounts', 'contract_diff: unknown version');
SELECT throws_ok($$SELECT * FROM sluice.contract_diff('pg_class', 1, 1)$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'contract_diff: a table pg_sluice does not feed');

-- publish_contract
SELECT throws_ok($$SELECT sluice.publish_contract(NULL, 'api')$$, '22004',
    'sluice.publish_contract needs target, not NULL', 'publish_contract: NULL table');
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', NULL)$$, '22004',
    'sluice.publish_contract needs schema, not NULL', 'publish_contract: NULL schema');
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', '')$$, '22023',
    'schema must be named', 'publish_contract: empty schema');
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', 'api', 99)$$, '22023',
    'table tap.accounts has no contract version 99', 'publish_contract: unknown version');
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', 'api', 0)$$, '22023',
    'table tap.accounts has no contract version 0', 'publish_contract: version 0');
SELECT throws_ok($$SELECT sluice.publish_contract('pg_class', 'api')$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'publish_contract: a table pg_sluice does not feed');
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', 'tap')$$, '42P07',
    'relation tap.accounts already exists', 'publish_contract: the name is taken');
SELECT is(sluice.publish_contract('tap.accounts', 'api')::text, 'api.accounts', 'publish_contract works');
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', 'api')$$, '42710',
    'api.accounts already publishes contract version 1 of tap.accounts', 'publish_contract: twice in one schema');
SELECT matches(pg_temp.hint_of($$SELECT sluice.publish_contract('tap.accounts', 'api')$$), 'its own schema',
    'publish_contract: the hint says to use another schema');

-- unpublish_contract
SELECT throws_ok($$SELECT sluice.unpublish_contract(NULL, 'api')$$, '22004',
    'sluice.unpublish_contract needs target, not NULL', 'unpublish_contract: NULL table');
SELECT throws_ok($$SELECT sluice.unpublish_contract('tap.accounts', NULL)$$, '22004',
    'sluice.unpublish_contract needs schema, not NULL', 'unpublish_contract: NULL schema');
SELECT throws_ok($$SELECT sluice.unpublish_contract('tap.accounts', 'nowhere')$$, '42704',
    'no contract of tap.accounts is published in schema "nowhere"', 'unpublish_contract: nothing published there');
SELECT throws_ok($$SELECT sluice.unpublish_contract('tap.accounts', '')$$, '42704',
    'no contract of tap.accounts is published in schema ""', 'unpublish_contract: empty schema');
SELECT matches(pg_temp.hint_of($$SELECT sluice.unpublish_contract('tap.accounts', 'nowhere')$$), 'sluice\.published_contracts',
    'unpublish_contract: the hint names sluice.published_contracts');
SELECT throws_ok($$SELECT sluice.unpublish_contract('pg_class', 'api')$$, '42704',
    'table pg_class is not fed by a pg_sluice pipeline', 'unpublish_contract: a table pg_sluice does not feed');

-- an expectation that would no longer bind: the change is refused, naming it
SELECT sluice.expect_column_values_to_not_be_null('tap.accounts', 'tags', 'warn');
SELECT throws_ok($$SELECT sluice.drop_column('tap.accounts', 'tags', keep => false)$$, '2BP01',
    'expectation "expect_column_values_to_not_be_null_tags_accounts" of tap.accounts does not fit the new contract of tap.accounts',
    'drop_column refused: an expectation reads the column');
SELECT matches(pg_temp.hint_of($$SELECT sluice.drop_column('tap.accounts', 'tags', keep => false)$$),
    'sluice\.drop_expectation\(''tap\.accounts'', ''expect_column_values_to_not_be_null_tags_accounts''\)',
    'the hint names the drop_expectation call');
SELECT is((SELECT count(*) FROM pg_attribute WHERE attrelid = 'tap.accounts'::regclass AND attname = 'tags' AND NOT attisdropped),
    1::bigint, 'the column is still there');

-- another operator sees none of it; a role without pg_sluice rights may not call
RESET ROLE;
SET ROLE stranger;
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', 'api2')$$, '42704',
    'table tap.accounts is not fed by a pg_sluice pipeline', 'another operator cannot publish this pipeline''s table');
SELECT is((SELECT count(*) FROM sluice.published_contracts), 0::bigint, 'nor see its interfaces');
RESET ROLE;
SET ROLE nobody;
SELECT throws_ok($$SELECT sluice.publish_contract('tap.accounts', 'api2')$$, '42501',
    'permission denied for function publish_contract', 'a role that is not an operator may not publish');
SELECT throws_ok($$SELECT sluice.unpublish_contract('tap.accounts', 'api')$$, '42501',
    'permission denied for function unpublish_contract', 'nor unpublish');
RESET ROLE;

-- nothing changed by all the refusals
SELECT is((SELECT contract_version FROM sluice._pipeline_table WHERE target_table = 'accounts'),
    (SELECT version FROM before_state), 'no contract version recorded');
SELECT is((SELECT count(*) FROM sluice._drift_event), (SELECT events FROM before_state), 'no drift event recorded');
SELECT is((SELECT count(*) FROM sluice._contract_column), (SELECT columns FROM before_state), 'no contract column recorded');
SELECT is((SELECT string_agg(schema_name || '.' || view_name || ' v' || contract_version, ',') FROM sluice._published_contract),
    'api.accounts v1', 'only the interface published on purpose');

SELECT * FROM finish();
ROLLBACK;
