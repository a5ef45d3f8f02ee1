/*
 * src/sql/90_verify.sql -- is the datamart exactly live? (issue 18)
 *
 * _verification and its row security, the verifications view, verify,
 * repair (C, src/verify.c), purge_verifications, what an operator is
 * granted for them (_verify_operator_grants, called by _operator_grants),
 * and their privileges.  After 70_security.sql: its policy uses _operates.
 */
-------------------------------------------------------------------------------
-- Verification: is the datamart exactly live?  sluice.verify compares each
-- datamart table of a pipeline with its source table at one exact source
-- position (src/verify.c) and records the result here.
-------------------------------------------------------------------------------

CREATE TABLE sluice._verification (
    verification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id     integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    target_schema   name NOT NULL,
    target_table    name NOT NULL,
    at_lsn          pg_lsn NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    rows_live       bigint NOT NULL,
    rows_mart       bigint NOT NULL,
    rows_compared   bigint NOT NULL,
    ranges          bigint NOT NULL,
    differences     bigint NOT NULL,
    keys            jsonb NOT NULL,
    keyless         boolean NOT NULL
);
CREATE INDEX ON sluice._verification (pipeline_id, verification_id);
CREATE INDEX ON sluice._verification (finished_at);
COMMENT ON TABLE sluice._verification IS
  'Private: one row per datamart table per verification (sluice.verify).';
SELECT pg_catalog.pg_extension_config_dump('sluice._verification', '');
ALTER TABLE sluice._verification ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._verification
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.verifications AS
SELECT v.verification_id,
       p.name AS pipeline,
       v.target_schema,
       v.target_table,
       v.at_lsn,
       v.started_at,
       v.finished_at,
       v.rows_live,
       v.rows_mart,
       v.rows_compared,
       v.ranges,
       v.differences,
       v.keys,
       v.keyless
  FROM sluice._verification v
  JOIN sluice._pipeline p USING (pipeline_id)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.verifications IS
  'Comparisons of datamart tables with their source tables at one source position (sluice.verify), newest last; each role sees the pipelines it may operate (the keys are data).';
COMMENT ON COLUMN sluice.verifications.verification_id IS 'Identifier, increasing.';
COMMENT ON COLUMN sluice.verifications.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.verifications.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.verifications.target_table IS 'Datamart table.';
COMMENT ON COLUMN sluice.verifications.at_lsn IS 'Source position both sides were read at: the source in a snapshot of that position, the datamart brought exactly to it.';
COMMENT ON COLUMN sluice.verifications.started_at IS 'When the verification started.';
COMMENT ON COLUMN sluice.verifications.finished_at IS 'When this table''s comparison was recorded.';
COMMENT ON COLUMN sluice.verifications.rows_live IS 'Rows of the source table at at_lsn.';
COMMENT ON COLUMN sluice.verifications.rows_mart IS 'Rows of the datamart table at at_lsn.';
COMMENT ON COLUMN sluice.verifications.rows_compared IS 'The larger of rows_live and rows_mart.';
COMMENT ON COLUMN sluice.verifications.ranges IS 'Hash buckets compared, over every level of bisection.';
COMMENT ON COLUMN sluice.verifications.differences IS 'Rows that differ: missing in the datamart, extra in the datamart, or different.';
COMMENT ON COLUMN sluice.verifications.keys IS
  'The differing keys (up to max_keys): [{"kind": "missing" | "extra" | "different", "key": {column: text value}}]; for a table without a key the key is the whole row, with "count" (how many times it is missing or extra).';
COMMENT ON COLUMN sluice.verifications.keyless IS 'The table has no key: compared as a multiset of whole rows.';

CREATE FUNCTION sluice.verify(pipeline text, tables regclass[] DEFAULT NULL,
                              rows_per_second integer DEFAULT NULL, max_keys integer DEFAULT 1000)
RETURNS TABLE (verification_id bigint, target_schema name, target_table name, at_lsn pg_lsn,
               rows_compared bigint, ranges bigint, differences bigint, keys jsonb)
AS 'MODULE_PATHNAME', 'sluice_verify'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.verify(text, regclass[], integer, integer) IS
  'Compares the pipeline''s datamart tables (or those listed) with the source at one exact source position, bringing the datamart to it first; returns and records (sluice.verifications) the rows compared and the differing keys per table.';

CREATE FUNCTION sluice.purge_verifications(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  WITH purged AS (
    DELETE FROM sluice._verification v
     WHERE v.finished_at < now() - older_than
       AND v.verification_id <> (SELECT max(l.verification_id) FROM sluice._verification l
                                  WHERE (l.pipeline_id, l.target_schema, l.target_table)
                                        = (v.pipeline_id, v.target_schema, v.target_table))
    RETURNING 1)
  SELECT count(*) FROM purged;
END;
COMMENT ON FUNCTION sluice.purge_verifications(interval) IS
  'Deletes verifications finished longer ago than older_than, keeping the last one of each table; returns how many were deleted. Schedule it with pg_cron.';

CREATE FUNCTION sluice.repair(pipeline text, tables regclass[] DEFAULT NULL,
                              rows_per_second integer DEFAULT NULL)
RETURNS TABLE (run_id bigint, target_schema name, target_table name, at_lsn pg_lsn,
               differences bigint, rows_deleted bigint, rows_inserted bigint)
AS 'MODULE_PATHNAME', 'sluice_repair'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.repair(text, regclass[], integer) IS
  'Compares as sluice.verify does and re-copies every differing key from the source (delete, then insert the source''s row), in one transaction at one exact source position; recorded as a run of kind repair, a version whose history keeps the rows it replaced. run_id is NULL when nothing differed.';

-- operators verify the pipelines they operate: _operator_grants (grant_operator,
-- revoke_operator) gives and takes this too
CREATE FUNCTION sluice._verify_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.verify(text, regclass[], integer, integer), sluice.repair(text, regclass[], integer) %s %s',
                 verb, to_from, grantee);
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.purge_verifications(interval) %s %s', verb, to_from, grantee);
  EXECUTE format('%s SELECT, DELETE ON sluice._verification %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._verify_operator_grants(regrole, text) IS 'Private: what an operator is granted for verifications.';

REVOKE ALL ON FUNCTION sluice.verify(text, regclass[], integer, integer), sluice.repair(text, regclass[], integer),
    sluice.purge_verifications(interval),
    sluice._verify_operator_grants(regrole, text) FROM PUBLIC;
REVOKE ALL ON sluice._verification FROM PUBLIC;
GRANT SELECT ON sluice.verifications TO PUBLIC;
