-- pgTAP: the shape of the SQL API (runs inside pg_regress, TAP as expected output)
SET search_path = public;
CREATE EXTENSION pgtap;
CREATE EXTENSION pg_sluice;
\set ECHO none
\pset format unaligned
\pset tuples_only true
\pset pager off
BEGIN;
SELECT plan(31);
SELECT has_schema('sluice');
SELECT has_function('sluice', 'create_source', ARRAY['text', 'text']);
SELECT has_function('sluice', 'alter_source', ARRAY['text', 'text']);
SELECT has_function('sluice', 'drop_source', ARRAY['text']);
SELECT has_function('sluice', 'create_pipeline', ARRAY['text', 'text', 'text[]', 'name', 'text', 'text', 'boolean']);
SELECT has_function('sluice', 'refresh', ARRAY['text']);
SELECT has_function('sluice', 'drop_pipeline', ARRAY['text', 'boolean', 'boolean']);
SELECT function_returns('sluice', 'refresh', ARRAY['text'], 'sluice.refresh_result');
SELECT function_returns('sluice', 'create_pipeline', ARRAY['text', 'text', 'text[]', 'name', 'text', 'text', 'boolean'], 'sluice.refresh_result');
SELECT volatility_is('sluice', 'refresh', ARRAY['text'], 'volatile');
SELECT has_view('sluice', 'sources', 'sources view');
SELECT has_view('sluice', 'pipelines', 'pipelines view');
SELECT has_view('sluice', 'pipeline_tables', 'pipeline_tables view');
SELECT has_view('sluice', 'runs', 'runs view');
SELECT columns_are('sluice', 'runs', ARRAY['run_id', 'pipeline', 'kind', 'status', 'started_at',
       'finished_at', 'duration', 'start_lsn', 'end_lsn', 'transactions', 'rows_inserted',
       'rows_updated', 'rows_deleted', 'tables_truncated', 'last_source_commit', 'error', 'skipped_xid',
       'rows_missing', 'missing_by_table']);
SELECT has_function('sluice', 'start', ARRAY['text']);
SELECT has_function('sluice', 'stop', ARRAY['text']);
SELECT has_function('sluice', 'purge_runs', ARRAY['interval']);
SELECT has_view('sluice', 'status', 'status view');
SELECT function_privs_are('sluice', 'start', ARRAY['text'], 'public', ARRAY[]::text[], 'start is not public');
SELECT table_privs_are('sluice', 'status', 'public', ARRAY['SELECT'], 'status is readable by all');
SELECT ok((SELECT bool_and(col_description('sluice.status'::regclass, a.attnum) IS NOT NULL)
             FROM pg_attribute a WHERE a.attrelid = 'sluice.status'::regclass AND a.attnum > 0),
          'every status column is commented');
SELECT throws_ok($$SELECT sluice.start('none')$$, '55000',
       'continuous mode needs pg_sluice in shared_preload_libraries', 'start without the preloaded library');
SELECT table_privs_are('sluice', '_source', 'public', ARRAY[]::text[], 'secrets are not public');
SELECT table_privs_are('sluice', 'sources', 'public', ARRAY[]::text[], 'sources view is not public');
SELECT table_privs_are('sluice', 'runs', 'public', ARRAY['SELECT'], 'runs are readable by all');
SELECT function_privs_are('sluice', 'refresh', ARRAY['text'], 'public', ARRAY[]::text[], 'refresh is not public');
SELECT function_privs_are('sluice', 'create_pipeline', ARRAY['text', 'text', 'text[]', 'name', 'text', 'text', 'boolean'],
       'public', ARRAY[]::text[], 'create_pipeline is not public');
SELECT throws_ok($$SELECT sluice.refresh('none')$$, '42704', 'pipeline "none" does not exist', 'unknown pipeline');
SELECT ok((SELECT bool_and(obj_description(c.oid) IS NOT NULL)
             FROM pg_class c WHERE c.relnamespace = 'sluice'::regnamespace
              AND c.relkind IN ('r', 'v')), 'every table and view is commented');
SELECT is((SELECT string_agg(c.relname || '.' || a.attname, ', ')
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
            WHERE c.relnamespace = 'sluice'::regnamespace AND c.relkind = 'v'
              AND col_description(c.oid, a.attnum) IS NULL), NULL, 'every view column is commented');
SELECT * FROM finish();
ROLLBACK;
