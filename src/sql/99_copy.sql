/*
 * src/sql/99_copy.sql -- chunks copied in parallel by background workers
 * (issue 19)
 *
 * _copy_range (the ranges of the tables being copied: claimed, copied
 * with their snapshot and watermark), the copy_chunks view (which worker
 * copies what), _copy_workers_running (C, src/copyworker.c; for
 * sluice.copy_tables, 95_snapshot.sql).  After 95_snapshot.sql: its rows
 * belong to a row of sluice._copy.
 */
-------------------------------------------------------------------------------
-- The claimed ranges of a table copied in chunks (src/snapshot.c): each
-- chunk claims the chunk_rows keys after the last claimed range, commits
-- the claim, copies the range in one snapshot of the source, and records
-- that snapshot and a watermark written after it.  The stream applies a
-- change to a key of a copied range only when the range's snapshot did not
-- see its transaction; once it has passed the watermark the range goes and
-- sluice._copy.frontier moves over it.
-------------------------------------------------------------------------------

CREATE TABLE sluice._copy_range (
    pipeline_id    integer NOT NULL,
    source_schema  text NOT NULL,
    source_table   text NOT NULL,
    chunk          integer NOT NULL CHECK (chunk > 0),
    lo             text[],
    hi             text[],
    state          text NOT NULL CHECK (state IN ('claimed', 'copied')),
    snapshot       text,
    watermark      pg_lsn,
    rows           bigint,
    worker_pid     integer,
    claimed_at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    copied_at      timestamptz,
    PRIMARY KEY (pipeline_id, source_schema, source_table, chunk),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._copy ON DELETE CASCADE,
    CHECK (state = 'claimed' OR (snapshot IS NOT NULL AND watermark IS NOT NULL))
);
COMMENT ON TABLE sluice._copy_range IS
  'Private: the claimed ranges of each table copied in chunks, in key order (chunk); lo is exclusive, hi inclusive (NULL: to the end), as the source''s text of each key column; snapshot (pg_current_snapshot) and watermark once copied.';
SELECT pg_catalog.pg_extension_config_dump('sluice._copy_range', '');
ALTER TABLE sluice._copy_range ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._copy_range
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.copy_chunks AS
SELECT p.name AS pipeline,
       t.target_schema,
       t.target_table,
       r.chunk,
       r.state,
       r.lo AS after_key,
       r.hi AS up_to_key,
       r.rows,
       r.worker_pid,
       r.claimed_at,
       r.copied_at
  FROM sluice._copy_range r
  JOIN sluice._pipeline p USING (pipeline_id)
  JOIN sluice._pipeline_table t USING (pipeline_id, source_schema, source_table)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.copy_chunks IS
  'The chunks of the tables being copied that are claimed or copied but not yet passed by the stream, and which process copies or copied each; each role sees the pipelines it may operate.';
COMMENT ON COLUMN sluice.copy_chunks.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.copy_chunks.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.copy_chunks.target_table IS 'Datamart table being copied.';
COMMENT ON COLUMN sluice.copy_chunks.chunk IS 'Number of the chunk, in key order.';
COMMENT ON COLUMN sluice.copy_chunks.state IS 'claimed (being copied, or to copy again after its copier stopped) or copied (committed; the stream applies what its snapshot did not see until it passes the chunk''s watermark, then the row goes).';
COMMENT ON COLUMN sluice.copy_chunks.after_key IS 'The chunk holds the keys above this one (the source''s text of each key column; NULL: from the first key).';
COMMENT ON COLUMN sluice.copy_chunks.up_to_key IS 'The chunk holds the keys up to this one (NULL: to the last key).';
COMMENT ON COLUMN sluice.copy_chunks.rows IS 'Rows copied (NULL while claimed).';
COMMENT ON COLUMN sluice.copy_chunks.worker_pid IS 'Process that claimed it, then the one that copied it (a copy worker, or the session of sluice.copy_chunk).';
COMMENT ON COLUMN sluice.copy_chunks.claimed_at IS 'When it was claimed.';
COMMENT ON COLUMN sluice.copy_chunks.copied_at IS 'When its copy committed.';

CREATE FUNCTION sluice._copy_workers_running(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_copy_workers_running'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice._copy_workers_running(text) IS
  'Private: does a background copy worker of the pipeline run (sluice.copy_tables then waits for them)?';

REVOKE ALL ON sluice._copy_range FROM PUBLIC;
GRANT SELECT ON sluice.copy_chunks TO PUBLIC;
