/*
 * src/sql/95_snapshot.sql -- tables copied in chunks while the pipeline
 * streams (issue 19)
 *
 * _copy and its row security, the copy_progress view, resnapshot,
 * add_table and copy_chunk (C, src/snapshot.c), the copy_tables procedure, what an
 * operator is granted for them (_snapshot_operator_grants, called by
 * _operator_grants), and their privileges.  After 70_security.sql: its
 * policy uses _operates.
 */
-------------------------------------------------------------------------------
-- Chunked copies: a table copied again (sluice.resnapshot), added to a
-- running pipeline (sluice.add_table) or created empty by create_pipeline
-- (pg_sluice.initial_copy), in key ranges,
-- each committed with the stream up to the chunk's watermark
-- (src/snapshot.c).  One row per table, kept when the copy has finished.
-------------------------------------------------------------------------------

CREATE TABLE sluice._copy (
    pipeline_id    integer NOT NULL,
    source_schema  text NOT NULL,
    source_table   text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('resnapshot', 'add_table', 'initial_copy')),
    chunk_rows     integer NOT NULL CHECK (chunk_rows > 0),
    frontier       text[],
    chunks_done    integer NOT NULL DEFAULT 0,
    rows_copied    bigint NOT NULL DEFAULT 0,
    rows_estimate  bigint,
    restarts       integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_chunk_at  timestamptz,
    finished_at    timestamptz,
    PRIMARY KEY (pipeline_id, source_schema, source_table),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
COMMENT ON TABLE sluice._copy IS
  'Private: tables copied in chunks (sluice.resnapshot, sluice.add_table) and how far each copy is; frontier is the last key copied, as the source''s text of each key column.';
SELECT pg_catalog.pg_extension_config_dump('sluice._copy', '');
ALTER TABLE sluice._copy ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._copy
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.copy_progress AS
SELECT p.name AS pipeline,
       t.target_schema,
       t.target_table,
       c.kind,
       CASE WHEN c.finished_at IS NOT NULL THEN 'finished' ELSE 'copying' END AS state,
       c.chunk_rows,
       c.chunks_done,
       CASE WHEN c.finished_at IS NOT NULL THEN c.chunks_done
            ELSE GREATEST(c.chunks_done + 1,
                          ceil(c.rows_estimate::numeric / c.chunk_rows)::integer) END AS chunks_total,
       c.rows_copied,
       c.rows_estimate,
       CASE WHEN c.last_chunk_at > c.started_at
            THEN round(c.rows_copied / extract(epoch FROM c.last_chunk_at - c.started_at))::bigint
       END AS rows_per_second,
       CASE WHEN c.finished_at IS NOT NULL THEN interval '0'
            WHEN c.last_chunk_at > c.started_at AND c.rows_copied > 0 AND c.rows_estimate IS NOT NULL
            THEN GREATEST(c.rows_estimate - c.rows_copied, 0)
                 * ((c.last_chunk_at - c.started_at) / c.rows_copied)
       END AS eta,
       c.restarts,
       c.started_at,
       c.last_chunk_at,
       c.finished_at
  FROM sluice._copy c
  JOIN sluice._pipeline p USING (pipeline_id)
  JOIN sluice._pipeline_table t USING (pipeline_id, source_schema, source_table)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.copy_progress IS
  'Tables copied in chunks (sluice.resnapshot, sluice.add_table) and how far each copy is, for a dashboard to poll; each role sees the pipelines it may operate.';
COMMENT ON COLUMN sluice.copy_progress.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.copy_progress.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.copy_progress.target_table IS 'Datamart table being copied.';
COMMENT ON COLUMN sluice.copy_progress.kind IS 'Why it is copied: resnapshot (sluice.resnapshot), add_table (sluice.add_table) or initial_copy (sluice.create_pipeline with pg_sluice.initial_copy chunked or auto).';
COMMENT ON COLUMN sluice.copy_progress.state IS 'copying, or finished.';
COMMENT ON COLUMN sluice.copy_progress.chunk_rows IS 'Rows per chunk: each chunk is one local transaction.';
COMMENT ON COLUMN sluice.copy_progress.chunks_done IS 'Chunks committed; a crash or a cancel repeats at most the chunk in progress.';
COMMENT ON COLUMN sluice.copy_progress.chunks_total IS 'Chunks the copy takes, estimated from the source''s row estimate (pg_class.reltuples) when the first chunk was copied; exact once finished.';
COMMENT ON COLUMN sluice.copy_progress.rows_copied IS 'Rows copied by the committed chunks.';
COMMENT ON COLUMN sluice.copy_progress.rows_estimate IS 'The source''s row estimate for the table when the first chunk was copied (NULL before, or when the source has none).';
COMMENT ON COLUMN sluice.copy_progress.rows_per_second IS 'Rows copied per second since the copy started, up to the last chunk.';
COMMENT ON COLUMN sluice.copy_progress.eta IS 'Time left at that rate for the estimated rows left (0 once finished; NULL before the first chunk).';
COMMENT ON COLUMN sluice.copy_progress.restarts IS 'Times the copy started over from the first key because the source table was truncated during it.';
COMMENT ON COLUMN sluice.copy_progress.started_at IS 'When the copy was asked for.';
COMMENT ON COLUMN sluice.copy_progress.last_chunk_at IS 'When the last chunk committed.';
COMMENT ON COLUMN sluice.copy_progress.finished_at IS 'When the last chunk committed, the copy complete (NULL while copying).';

CREATE FUNCTION sluice.resnapshot(pipeline text, "table" regclass, chunk_rows integer DEFAULT 100000)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_resnapshot'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.resnapshot(text, regclass, integer) IS
  'Copies a datamart table of a pipeline again from its source table, in chunks of chunk_rows keys, while the pipeline''s other tables go on; its rows stay readable until their chunk replaces them. Background copy workers (pg_sluice.copy_workers) copy the chunks once the transaction commits; with none, CALL sluice.copy_tables(pipeline) (or sluice.copy_chunk). sluice.copy_progress shows how far it is. The table needs a primary key.';

CREATE FUNCTION sluice.add_table(pipeline text, "table" text, chunk_rows integer DEFAULT 100000)
RETURNS regclass
AS 'MODULE_PATHNAME', 'sluice_add_table'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.add_table(text, text, integer) IS
  'Adds a source table (schema.table) to a pipeline while it streams: the table joins the pipeline''s publication on the source (when pg_sluice created it), its datamart table is created empty in the pipeline''s target schema and filled in chunks of chunk_rows keys by background copy workers (pg_sluice.copy_workers) once the transaction commits, or with none by CALL sluice.copy_tables(pipeline); the other tables go on. Returns the datamart table. The table needs a primary key.';

CREATE FUNCTION sluice.copy_chunk(pipeline text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_copy_chunk'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.copy_chunk(text) IS
  'Copies one chunk of the pipeline''s tables being copied (one whose copier stopped, else the next) in the caller''s transaction; a pipeline refreshed on demand is then refreshed up to the chunk''s watermark (a streaming one''s worker applies the stream). Returns false when no chunk was left to copy (every copy is then finished, or waits for the stream). The source''s role needs EXECUTE on pg_logical_emit_message.';

-- a procedure: each chunk commits before the next starts (no SET clause:
-- a procedure with one cannot commit; it sets search_path itself).  While
-- background copy workers (99_copy.sql, src/copyworker.c) copy the
-- pipeline's chunks it waits for them instead, with a notice every 5 s.
-- A notice leaves out the rate and the time left while they are unknown
-- (before the first chunk, or a source table with no row estimate).
CREATE PROCEDURE sluice.copy_tables(pipeline text, max_chunks integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
  n integer := 0;
  r record;
  said timestamptz := pg_catalog.clock_timestamp();
BEGIN
  -- workers started by the commit that asked for the copy may not run yet
  FOR i IN 1 .. 20 LOOP
    EXIT WHEN sluice._copy_workers_running(pipeline)
           OR pg_catalog.current_setting('pg_sluice.copy_workers', true) OPERATOR(pg_catalog.=) '0'
           OR NOT EXISTS (SELECT FROM sluice.copy_progress c
                           WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                             AND c.state OPERATOR(pg_catalog.=) 'copying');
    PERFORM pg_catalog.pg_sleep(0.1);
  END LOOP;
  LOOP
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    EXIT WHEN max_chunks IS NOT NULL AND n >= max_chunks;
    IF sluice._copy_workers_running(pipeline) THEN
      -- the workers copy: wait for the end of every copy of the pipeline
      EXIT WHEN NOT EXISTS (SELECT FROM sluice.copy_progress c
                             WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                               AND c.state OPERATOR(pg_catalog.=) 'copying');
      IF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) said OPERATOR(pg_catalog.>) interval '5 s' THEN
        said := pg_catalog.clock_timestamp();
        FOR r IN SELECT * FROM sluice.copy_progress c
                  WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
                    AND c.state OPERATOR(pg_catalog.=) 'copying'
        LOOP
          RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows% (background copy workers)',
            pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
            r.chunks_done, r.chunks_total, r.rows_copied,
            pg_catalog.concat(CASE WHEN r.rows_per_second IS NULL THEN '' ELSE pg_catalog.format(', %s rows/s', r.rows_per_second) END,
                              CASE WHEN r.eta IS NULL THEN '' ELSE pg_catalog.format(', %s left', r.eta) END);
        END LOOP;
      END IF;
      PERFORM pg_catalog.pg_sleep(0.1);
      COMMIT;
      CONTINUE;
    END IF;
    EXIT WHEN NOT sluice.copy_chunk(pipeline);
    n := n OPERATOR(pg_catalog.+) 1;
    FOR r IN SELECT * FROM sluice.copy_progress c
              WHERE c.pipeline OPERATOR(pg_catalog.=) copy_tables.pipeline
              ORDER BY c.last_chunk_at DESC NULLS LAST LIMIT 1
    LOOP
      RAISE NOTICE 'pipeline "%": table %.%: % of % chunks, % rows%',
        pipeline, pg_catalog.quote_ident(r.target_schema), pg_catalog.quote_ident(r.target_table),
        r.chunks_done, r.chunks_total, r.rows_copied,
        pg_catalog.concat(CASE WHEN r.rows_per_second IS NULL THEN '' ELSE pg_catalog.format(', %s rows/s', r.rows_per_second) END,
                          CASE WHEN r.eta IS NULL THEN '' ELSE pg_catalog.format(', %s left', r.eta) END);
    END LOOP;
    COMMIT;
  END LOOP;
END
$$;
COMMENT ON PROCEDURE sluice.copy_tables(text, integer) IS
  'Copies the chunks of the pipeline''s tables being copied, committing after each (at most max_chunks when given), with a progress notice per chunk; CALL it again after a crash or a cancel: it resumes after the last committed chunk. While background copy workers (pg_sluice.copy_workers) copy them, it waits until every copy of the pipeline has finished. Call it outside a transaction block.';

-- operators copy the pipelines they operate: _operator_grants (grant_operator,
-- revoke_operator) gives and takes this too
CREATE FUNCTION sluice._snapshot_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.resnapshot(text, regclass, integer), sluice.add_table(text, text, integer), sluice.copy_chunk(text) %s %s',
                 verb, to_from, grantee);
  EXECUTE format('%s EXECUTE ON PROCEDURE sluice.copy_tables(text, integer) %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._snapshot_operator_grants(regrole, text) IS 'Private: what an operator is granted for chunked copies.';

REVOKE ALL ON FUNCTION sluice.resnapshot(text, regclass, integer), sluice.add_table(text, text, integer), sluice.copy_chunk(text),
    sluice._snapshot_operator_grants(regrole, text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE sluice.copy_tables(text, integer) FROM PUBLIC;
REVOKE ALL ON sluice._copy FROM PUBLIC;
GRANT SELECT ON sluice.copy_progress TO PUBLIC;
