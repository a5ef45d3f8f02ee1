/*
 * src/sql/98_pool.sql -- the pool of continuous workers (issue 19)
 *
 * _pool_status (C, src/launcher.c) and the workers view: which pool worker
 * serves each streaming pipeline, and whether it is in a batch of it, or
 * why none does (from _worker_status, 10_api.sql), masked as
 * sluice.status.last_error is (_error_shown, 30_views.sql).
 */
-------------------------------------------------------------------------------
-- Continuous pipelines share a bounded pool of workers
-- (pg_sluice.max_workers); sluice.workers says which serves what.
-------------------------------------------------------------------------------

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
       pg_catalog.count(w.worker) OVER (PARTITION BY w.worker) AS worker_pipelines,
       CASE WHEN w.worker IS NOT NULL OR s.last_error IS NULL THEN NULL
            WHEN sluice._error_shown(p.pipeline_id, p.owner::oid, CURRENT_USER) THEN s.last_error
            ELSE 'an error (shown to the pipeline''s operators and to roles that can read all its tables)'
       END AS waiting
  FROM sluice._pool_status() w
  JOIN sluice._pipeline p USING (pipeline_id)
  LEFT JOIN sluice._worker_status() s USING (pipeline_id);
COMMENT ON VIEW sluice.workers IS 'One row per continuously streaming pipeline: the pool worker (pg_sluice.max_workers of them) that serves it.';
COMMENT ON COLUMN sluice.workers.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.workers.worker IS 'Number of the pool worker serving it (1 to pg_sluice.max_workers); null while it waits for one.';
COMMENT ON COLUMN sluice.workers.worker_pid IS 'Process id of that worker (sluice.status.worker_pid).';
COMMENT ON COLUMN sluice.workers.in_batch IS 'The worker is applying a batch of this pipeline now.';
COMMENT ON COLUMN sluice.workers.batch_started_at IS 'When that batch began (a batch longer than pg_sluice.batch_time makes the launcher move the worker''s other pipelines).';
COMMENT ON COLUMN sluice.workers.worker_pipelines IS 'How many streaming pipelines of this database that worker serves.';
COMMENT ON COLUMN sluice.workers.waiting IS 'Why no worker serves it yet, e.g. ''waiting for a pool worker: no background worker slot is free (max_worker_processes = 8)'', or the error it backs off from; null while a worker serves it. As sluice.status.last_error: its text only to the pipeline''s operators and to roles that can read all its tables (an error can carry a value of the failing row), to others that there is one.';

GRANT SELECT ON sluice.workers TO PUBLIC;
