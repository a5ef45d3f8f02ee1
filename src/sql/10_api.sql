/*
 * src/sql/10_api.sql -- sources and pipelines: the operating API.
 *
 * sluice.version(), sources (create/alter/drop, conninfo masking),
 * create_pipeline, refresh, start, stop, the worker status, resume,
 * alter_pipeline, purge_runs and drop_pipeline.
 */

-------------------------------------------------------------------------------
-- Functions
-------------------------------------------------------------------------------

CREATE FUNCTION sluice.version()
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_version'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice.version() IS
  'Version of the loaded pg_sluice library.';

CREATE FUNCTION sluice._mask_conninfo(conninfo text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_mask_conninfo'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice._mask_conninfo(text) IS
  'Private: a connection string with its password replaced by ********.';

CREATE FUNCTION sluice.create_source(name text, conninfo text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_create_source'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.create_source(text, text) IS
  'Declares a live server to read from. The connection string is validated, never echoed, and stored where only the owner can read it.';

CREATE FUNCTION sluice.alter_source(name text, conninfo text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_alter_source'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.alter_source(text, text) IS
  'Replaces the connection string of a source (for example after a password rotation).';

CREATE FUNCTION sluice.drop_source(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_drop_source'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.drop_source(text) IS
  'Forgets a source that no pipeline uses.';

CREATE FUNCTION sluice.create_pipeline(
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
COMMENT ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) IS
  'Creates a pipeline: publication (unless an existing one is named) and slot on the source, tables in the datamart, and the initial copy of every table in one consistent snapshot.';

CREATE FUNCTION sluice.refresh(pipeline text)
RETURNS sluice.refresh_result
AS 'MODULE_PATHNAME', 'sluice_refresh'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.refresh(text) IS
  'Applies every change committed on the source up to the moment the call started, exactly once, and returns a summary.';

CREATE FUNCTION sluice.start(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_start'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.start(text) IS
  'Streams the pipeline continuously with a background worker (needs pg_sluice in shared_preload_libraries); survives restarts. Returns false if it already streamed.';

CREATE FUNCTION sluice.stop(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_stop'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.stop(text) IS
  'Stops continuous streaming: the worker exits (a batch in progress rolls back and is applied later), then sluice.refresh() works again. Returns false if it did not stream.';

CREATE FUNCTION sluice._worker_status(
    OUT pipeline_id integer, OUT pid integer, OUT wanted boolean, OUT failures integer,
    OUT started_at timestamptz, OUT last_batch_at timestamptz, OUT measured_at timestamptz,
    OUT source_flush_lsn pg_lsn, OUT applied_lsn pg_lsn, OUT slot_restart_lsn pg_lsn,
    OUT last_source_commit timestamptz, OUT rows_per_second double precision,
    OUT last_error text, OUT next_retry_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'sluice_worker_status'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION sluice._worker_status() IS
  'Private: what the continuous workers of this database report (shared memory); read sluice.status.';

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

CREATE FUNCTION sluice.resume(pipeline text, skip_xid xid DEFAULT NULL)
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
COMMENT ON FUNCTION sluice.resume(text, xid) IS
  'Lets a paused pipeline apply again, after the contract or the expectation was fixed: the changes it stopped at are applied by the next refresh or batch. With skip_xid, that source transaction is skipped once (recorded in sluice.runs.skipped_xid).';

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

CREATE FUNCTION sluice.purge_runs(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  WITH purged AS (
    DELETE FROM sluice._run r
     WHERE r.finished_at < now() - older_than
       AND r.run_id <> (SELECT max(l.run_id) FROM sluice._run l
                         WHERE l.pipeline_id = r.pipeline_id AND l.status = 'succeeded')
    RETURNING 1)
  SELECT count(*) FROM purged;
END;
COMMENT ON FUNCTION sluice.purge_runs(interval) IS
  'Deletes runs finished longer ago than older_than, keeping each pipeline''s last successful run; returns how many were deleted. Schedule it with pg_cron.';

CREATE FUNCTION sluice.drop_pipeline(
    pipeline    text,
    drop_tables boolean DEFAULT false,
    force       boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_drop_pipeline'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.drop_pipeline(text, boolean, boolean) IS
  'Drops a pipeline: its slot (and the publication it created) on the source, its replication origin, optionally its datamart tables. force drops locally even when the source is unreachable.';
