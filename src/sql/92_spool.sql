/*
 * src/sql/92_spool.sql -- a paused pipeline never fills live's disk (issue 18)
 *
 * _spool (pgoutput messages drained from a paused pipeline's slot, src/spool.c),
 * _slot_state (the spool's drained position, the slot_lag crossing,
 * src/slotwatch.c), their row security, the spool view, drain, what an
 * operator is granted for them (_spool_operator_grants, called by
 * _operator_grants), and their privileges.  After 70_security.sql: the view
 * uses _operates.
 */
-------------------------------------------------------------------------------
-- The spool.  While a pipeline cannot apply (paused), its slot's changes are
-- drained here, so the slot on live moves on; the next batch after
-- sluice.resume() applies them first, exactly once, then the slot's.
-------------------------------------------------------------------------------

CREATE TABLE sluice._spool (
    pipeline_id integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    commit_lsn  pg_lsn NOT NULL,
    chunk       integer NOT NULL,
    binary_mode boolean NOT NULL,
    messages    bytea NOT NULL,
    PRIMARY KEY (pipeline_id, commit_lsn, chunk)
);
COMMENT ON TABLE sluice._spool IS
  'Private: a paused pipeline''s changes drained from its slot (sluice.drain, the worker), one source transaction in chunks of pgoutput messages (each preceded by its length, 4 bytes, network order), until the pipeline applies them. Row data: readable by the extension owner only.';
SELECT pg_catalog.pg_extension_config_dump('sluice._spool', '');
ALTER TABLE sluice._spool ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._spool
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE TABLE sluice._slot_state (
    pipeline_id   integer PRIMARY KEY REFERENCES sluice._pipeline ON DELETE CASCADE,
    drained_upto  pg_lsn,
    spool_bytes   bigint NOT NULL DEFAULT 0,
    spool_full_at timestamptz,
    lag_over      boolean NOT NULL DEFAULT false,
    source_lsn    pg_lsn,
    restart_lsn   pg_lsn,
    measured_at   timestamptz
);
COMMENT ON TABLE sluice._slot_state IS
  'Private: per pipeline, what pg_sluice did with its slot on live: the spool''s drained position and size, whether the spool is full, whether the slot_lag event fired and the WAL kept is still past pg_sluice.max_retained_wal, and the last look at the slot.';
SELECT pg_catalog.pg_extension_config_dump('sluice._slot_state', '');
ALTER TABLE sluice._slot_state ENABLE ROW LEVEL SECURITY;
CREATE POLICY operate ON sluice._slot_state
  USING (pipeline_id IN (SELECT p.pipeline_id FROM sluice._pipeline p));

CREATE VIEW sluice.spool AS
SELECT p.name AS pipeline,
       (SELECT pg_catalog.count(DISTINCT s.commit_lsn) FROM sluice._spool s
         WHERE s.pipeline_id OPERATOR(pg_catalog.=) p.pipeline_id) AS transactions,
       COALESCE(st.spool_bytes, 0) AS bytes,
       st.drained_upto,
       st.spool_full_at,
       COALESCE(st.lag_over, false) AS slot_lag,
       pg_catalog.pg_wal_lsn_diff(st.source_lsn, st.restart_lsn)::bigint AS retained_wal_bytes,
       st.measured_at
  FROM sluice._pipeline p
  LEFT JOIN sluice._slot_state st USING (pipeline_id)
 WHERE sluice._operates(p.owner::oid);
COMMENT ON VIEW sluice.spool IS
  'One row per pipeline: the changes drained from its slot while it was paused, waiting to be applied (sluice.drain, the worker), and the WAL its slot keeps on live; each role sees the pipelines it may operate.';
COMMENT ON COLUMN sluice.spool.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.spool.transactions IS 'Source transactions in the spool, applied first by the next batch after sluice.resume().';
COMMENT ON COLUMN sluice.spool.bytes IS 'Size of the spooled pgoutput messages; draining stops past pg_sluice.spool_limit (a spool_full event, and the slot keeps the rest on live).';
COMMENT ON COLUMN sluice.spool.drained_upto IS 'Source position the spool holds every change up to (NULL: never drained); the slot on live is moved there once it is committed here.';
COMMENT ON COLUMN sluice.spool.spool_full_at IS 'When draining stopped at pg_sluice.spool_limit, until the spool is applied (NULL: not full).';
COMMENT ON COLUMN sluice.spool.slot_lag IS 'The slot keeps more WAL than pg_sluice.max_retained_wal: a slot_lag event was sent when it crossed, the next one when it crosses again after going back under.';
COMMENT ON COLUMN sluice.spool.retained_wal_bytes IS 'WAL the slot kept on live when last written down: at each refresh, at each drain that spooled something, and when it crossed pg_sluice.max_retained_wal.';
COMMENT ON COLUMN sluice.spool.measured_at IS 'When retained_wal_bytes was written down.';

CREATE FUNCTION sluice.drain(pipeline text)
RETURNS TABLE (transactions bigint, bytes bigint, spool_bytes bigint, drained_upto pg_lsn, spool_full boolean)
AS 'MODULE_PATHNAME', 'sluice_drain'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.drain(text) IS
  'Moves a scheduled pipeline''s pending changes from its slot on live into the datamart''s spool (up to pg_sluice.spool_limit), so live can free its WAL while the pipeline is paused; the next refresh after sluice.resume() applies them first, exactly once. Schedule it with pg_cron next to the refresh; the slot moves at the start of the next drain or refresh.';

-- operators drain the pipelines they operate: _operator_grants (grant_operator,
-- revoke_operator) gives and takes this too
CREATE FUNCTION sluice._spool_operator_grants(grantee regrole, verb text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  to_from text := CASE verb WHEN 'GRANT' THEN 'TO' ELSE 'FROM' END;
BEGIN
  EXECUTE format('%s EXECUTE ON FUNCTION sluice.drain(text) %s %s', verb, to_from, grantee);
END
$$;
COMMENT ON FUNCTION sluice._spool_operator_grants(regrole, text) IS 'Private: what an operator is granted for the spool.';

REVOKE ALL ON FUNCTION sluice.drain(text), sluice._spool_operator_grants(regrole, text) FROM PUBLIC;
REVOKE ALL ON sluice._spool, sluice._slot_state FROM PUBLIC;
GRANT SELECT ON sluice.spool TO PUBLIC;
