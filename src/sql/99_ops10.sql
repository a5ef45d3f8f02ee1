/*
 * src/sql/99_ops10.sql -- copy workers that keep failing back off (issue 19)
 *
 * _copy_failure (the failures in a row of a pipeline's copy workers, and
 * when they try again: src/copyworker.c writes it) and the copy_failures
 * view.  After 99_copy.sql; sluice.status reads the view through
 * sluice._copy_state (30_views.sql).
 */
-------------------------------------------------------------------------------
-- A copy worker whose chunk fails records it here and exits; the next one
-- waits until next_attempt_at: 5 s after the first failure, doubling up to
-- 5 minutes.  A chunk copied by a worker, or a copy asked for again
-- (resnapshot, add_table), removes the row.
-------------------------------------------------------------------------------

CREATE TABLE sluice._copy_failure (
    pipeline_id      integer PRIMARY KEY REFERENCES sluice._pipeline ON DELETE CASCADE,
    failures         integer NOT NULL CHECK (failures > 0),
    last_error       text NOT NULL,
    failed_at        timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL
);
COMMENT ON TABLE sluice._copy_failure IS
  'Private: the failures in a row of the copy workers of a pipeline, the last error and when they try again (src/copyworker.c).';
SELECT pg_catalog.pg_extension_config_dump('sluice._copy_failure', '');
ALTER TABLE sluice._copy_failure ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._copy_failure
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.copy_failures AS
SELECT p.name AS pipeline,
       f.failures,
       CASE WHEN sluice._error_shown(p.pipeline_id, p.owner::oid, CURRENT_USER) THEN f.last_error
            ELSE 'an error (shown to the pipeline''s operators and to roles that can read all its tables)'
       END AS last_error,
       f.failed_at,
       f.next_attempt_at
  FROM sluice._copy_failure f
  JOIN sluice._pipeline p USING (pipeline_id);
COMMENT ON VIEW sluice.copy_failures IS
  'Pipelines whose background copy workers failed to copy a chunk, and when they try again (5 s after the first failure, doubling up to 5 minutes); a chunk copied removes the row.';
COMMENT ON COLUMN sluice.copy_failures.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.copy_failures.failures IS 'Failed attempts in a row.';
COMMENT ON COLUMN sluice.copy_failures.last_error IS 'Why the last attempt failed; the text only to the pipeline''s operators and to roles that can read all its tables.';
COMMENT ON COLUMN sluice.copy_failures.failed_at IS 'When the last attempt failed.';
COMMENT ON COLUMN sluice.copy_failures.next_attempt_at IS 'When a copy worker tries again; sluice.copy_chunk(pipeline) tries at once in the caller''s session, and the workers go on as soon as a chunk is copied.';

REVOKE ALL ON sluice._copy_failure FROM PUBLIC;
GRANT SELECT ON sluice.copy_failures TO PUBLIC;
