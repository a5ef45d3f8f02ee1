/*
 * src/sql/30_views.sql -- the public views.
 *
 * sources, pipelines, pipeline_tables, runs, contracts, drift_events,
 * expectations, quarantine, versions, tags, destinations, events, status,
 * each with its column comments.  Their privileges are in 70_security.sql.
 */

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

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

-- An error's text can carry a value of the row that failed (a trigger's
-- RAISE, an input syntax error): shown in sluice.runs and sluice.status to
-- the pipeline's operators and to roles that can read every row of every
-- one of its tables (SELECT, and no row security that applies to them: a
-- campus reader of a table whose policy shows it its campus's rows would
-- read another campus's row in an error).  Definer's rights (the catalog
-- is not the reader's to read), asked for the role the views pass: the
-- one querying them.
CREATE FUNCTION sluice._error_shown(pipeline_id integer, owner oid, who name)
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
-- read with the reader's rights: an operator sees its own pipelines' rows
ALTER VIEW sluice.quarantine SET (security_invoker = true);
-- their filter (sluice._readable) must run before any function a reader
-- adds to the query could see the values it hides
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
COMMENT ON FUNCTION sluice._copy_state(text) IS 'Private: the copy column of sluice.status.';

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
COMMENT ON COLUMN sluice.status.copy IS 'The pipeline''s chunked copies in progress (sluice.copy_progress, for the pipelines the caller operates), e.g. ''copying 1 table: chunk 12/40, 1200000 rows, 30%, eta 00:01:10''; NULL when none.';

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
