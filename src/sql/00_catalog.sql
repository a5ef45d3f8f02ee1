/*
 * src/sql/00_catalog.sql -- the catalog: schema comment, private tables, result type.
 *
 * Part of the extension script: make concatenates the parts in src/sql/ in
 * name order into pg_sluice--<default_version>.sql (see src/sql/README.md;
 * no part may hold a slash-star inside a comment: block comments nest).
 * Every catalog change ships its upgrade script, pg_sluice--<released>--
 * <next>.sql, in the same commit (src/sql/README.md).
 * Tables sluice._source .. sluice._tag, their indexes, their
 * pg_extension_config_dump registrations and the type sluice.refresh_result.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_sluice" to load this file. \quit

COMMENT ON SCHEMA sluice IS
  'pg_sluice: incremental, validated, versioned copies of a live PostgreSQL database';

-------------------------------------------------------------------------------
-- Catalog (private tables; read the views below)
-------------------------------------------------------------------------------

CREATE TABLE sluice._source (
    name        text PRIMARY KEY
                CHECK (name OPERATOR(pg_catalog.~) '^[a-z_][a-z0-9_]{0,47}$'),
    conninfo    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by  name NOT NULL DEFAULT CURRENT_USER
);
COMMENT ON TABLE sluice._source IS
  'Private: live servers pg_sluice reads from. Holds connection strings with secrets: readable by the extension owner only.';
REVOKE ALL ON sluice._source FROM PUBLIC;

CREATE TABLE sluice._pipeline (
    pipeline_id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL UNIQUE
                      CHECK (name OPERATOR(pg_catalog.~) '^[a-z_][a-z0-9_]{0,47}$'),
    source_name       text NOT NULL REFERENCES sluice._source (name),
    publication       text NOT NULL,
    publication_owned boolean NOT NULL,
    slot_name         text NOT NULL,
    origin_name       text NOT NULL UNIQUE,
    target_schema     name NOT NULL,
    consistent_lsn    pg_lsn NOT NULL,
    binary_transfer   boolean NOT NULL DEFAULT false,
    continuous        boolean NOT NULL DEFAULT false,
    run_as            oid,
    last_error        text,
    last_error_at     timestamptz,
    paused_reason     text,
    paused_at         timestamptz,
    skip_xid          xid,
    keep_history      boolean NOT NULL DEFAULT false,
    history_from      bigint,
    owner             regrole NOT NULL DEFAULT CURRENT_USER::text::regrole,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by        name NOT NULL DEFAULT CURRENT_USER,
    strict            boolean NOT NULL DEFAULT false,
    rows_missing      bigint NOT NULL DEFAULT 0,
    last_missing_at   timestamptz
);
COMMENT ON TABLE sluice._pipeline IS
  'Private: one row per pipeline (one source, one publication, one slot, one replication origin).';
COMMENT ON COLUMN sluice._pipeline.strict IS
  'An update or delete that finds no row in the datamart pauses the pipeline (true) or is skipped and counted (false); sluice.alter_pipeline sets it.';
COMMENT ON COLUMN sluice._pipeline.rows_missing IS
  'Updates and deletes the pipeline skipped since its creation because the datamart had no row for them (divergence).';
COMMENT ON COLUMN sluice._pipeline.last_missing_at IS
  'When the last such update or delete was skipped.';

CREATE TABLE sluice._pipeline_table (
    pipeline_id      integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    source_schema    text NOT NULL,
    source_table     text NOT NULL,
    target_schema    name NOT NULL,
    target_table     name NOT NULL,
    key_columns      text[] NOT NULL,
    replica_identity text NOT NULL,
    drift_policy     text NOT NULL DEFAULT 'freeze'
                     CHECK (drift_policy IN ('freeze', 'evolve', 'ignore')),
    contract_version integer NOT NULL DEFAULT 1,
    ignored_columns  text[] NOT NULL DEFAULT '{}',
    source_relid     oid,           -- the table's oid on the source (identity.c)
    PRIMARY KEY (pipeline_id, source_schema, source_table),
    UNIQUE (target_schema, target_table)
);
COMMENT ON TABLE sluice._pipeline_table IS
  'Private: source tables of each pipeline and the datamart tables they feed.';

CREATE TABLE sluice._contract_column (
    pipeline_id      integer NOT NULL,
    source_schema    text NOT NULL,
    source_table     text NOT NULL,
    contract_version integer NOT NULL,
    position         integer NOT NULL,
    column_name      name NOT NULL,
    source_column    text,
    data_type        text NOT NULL,
    not_null         boolean NOT NULL,
    is_key           boolean NOT NULL,
    source_type      oid NOT NULL,
    source_dropped   boolean NOT NULL DEFAULT false,
    prior_types      oid[] NOT NULL DEFAULT '{}',
    prior_sources    text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (pipeline_id, source_schema, source_table, contract_version, column_name),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
COMMENT ON TABLE sluice._contract_column IS
  'Private: the columns of every version of every table contract.';

CREATE TABLE sluice._drift_event (
    event_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id      integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    source_schema    text NOT NULL,
    source_table     text NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    source_xid       xid,
    source_lsn       pg_lsn,
    policy           text NOT NULL,
    action           text NOT NULL CHECK (action IN ('paused', 'evolved', 'ignored', 'widened', 'accepted',
                                                     'kept', 'dropped', 'mapped')),
    detail           text NOT NULL,
    contract_version integer NOT NULL,
    contract_columns jsonb NOT NULL,
    source_columns   jsonb NOT NULL
);
CREATE INDEX ON sluice._drift_event (pipeline_id, event_id);
COMMENT ON TABLE sluice._drift_event IS
  'Private: every schema drift detected on a source table, and what pg_sluice did about it.';

CREATE TABLE sluice._expectation (
    expectation_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id      integer NOT NULL,
    source_schema    text NOT NULL,
    source_table     text NOT NULL,
    name             text NOT NULL,
    kind             text NOT NULL,
    column_names     name[] NOT NULL DEFAULT '{}',
    args             jsonb NOT NULL DEFAULT '{}',
    severity         text NOT NULL CHECK (severity IN ('error', 'warn', 'quarantine')),
    predicate        text,
    check_sql        text,
    predicate_tree   pg_node_tree,
    check_tree       pg_node_tree,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (pipeline_id, name),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
COMMENT ON TABLE sluice._expectation IS
  'Private: data-quality expectations per datamart table. predicate_tree: row expectations, bound when declared (a boolean expression over the row, every name resolved to an OID); check_tree: set expectations, bound when declared (a query run once per batch). predicate and check_sql keep the text they were bound from, for reading only: it is never executed.';

CREATE TABLE sluice._quarantine (
    quarantine_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id      integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    expectation_id   integer REFERENCES sluice._expectation ON DELETE SET NULL,
    target_schema    name NOT NULL,
    target_table     name NOT NULL,
    source_xid       xid,
    source_lsn       pg_lsn,
    change           text NOT NULL,
    row_data         jsonb NOT NULL,
    quarantined_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    status           text NOT NULL DEFAULT 'held'
                     CHECK (status IN ('held', 'released', 'discarded', 'superseded')),
    resolved_at      timestamptz,
    row_key          jsonb,
    superseded_by    bigint REFERENCES sluice._quarantine ON DELETE SET NULL,
    superseded_how   text CHECK (superseded_how IN ('applied', 'quarantined', 'deleted', 'truncated')),
    superseded_xid   xid,
    superseded_lsn   pg_lsn
);
CREATE INDEX ON sluice._quarantine (pipeline_id, status);
-- the open entries of a table: the latest state of keys the datamart lacks on purpose
CREATE INDEX ON sluice._quarantine (pipeline_id, target_schema, target_table)
 WHERE status IN ('held', 'discarded') AND superseded_how IS NULL;
COMMENT ON TABLE sluice._quarantine IS
  'Private: rows held back by quarantine expectations, with the reason; release or discard them. A ledger of each key''s latest state: a later change of the key on the source supersedes the entry.';
COMMENT ON COLUMN sluice._quarantine.row_key IS
  'Key of the row (its key columns, or every column for a table without a key) as a JSON object of text values.';
COMMENT ON COLUMN sluice._quarantine.superseded_by IS
  'The entry that replaced this one when the later change of the key was quarantined too.';
COMMENT ON COLUMN sluice._quarantine.superseded_how IS
  'How a later change of the key on the source replaced this entry: applied (written to the datamart), quarantined (held again, see superseded_by), deleted, truncated. NULL while the entry is the key''s latest state.';
COMMENT ON COLUMN sluice._quarantine.superseded_xid IS 'Source transaction of that later change.';
COMMENT ON COLUMN sluice._quarantine.superseded_lsn IS 'Commit LSN of that source transaction.';

CREATE TABLE sluice._run (
    run_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline_id       integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    kind              text NOT NULL CHECK (kind IN ('initial_copy', 'refresh', 'stream', 'repair', 'release')),
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed', 'paused')),
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    start_lsn         pg_lsn,
    end_lsn           pg_lsn,
    transactions      bigint NOT NULL DEFAULT 0,
    rows_inserted     bigint NOT NULL DEFAULT 0,
    rows_updated      bigint NOT NULL DEFAULT 0,
    rows_deleted      bigint NOT NULL DEFAULT 0,
    tables_truncated  bigint NOT NULL DEFAULT 0,
    last_source_commit timestamptz,
    source_flush_lsn  pg_lsn,
    slot_restart_lsn  pg_lsn,
    error             text,
    skipped_xid       xid,
    history_purged    boolean NOT NULL DEFAULT false,
    rows_missing      bigint NOT NULL DEFAULT 0
);
COMMENT ON COLUMN sluice._run.rows_missing IS
  'Updates and deletes of the run that found no row in the datamart and were skipped (divergence).';
CREATE INDEX ON sluice._run (pipeline_id, run_id);
CREATE INDEX ON sluice._run (finished_at);
COMMENT ON TABLE sluice._run IS
  'Private: one row per committed initial copy, refresh or streamed batch, and per failed streamed batch.';

SELECT pg_catalog.pg_extension_config_dump('sluice._source', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._pipeline', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._pipeline_table', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._run', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._contract_column', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._drift_event', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._expectation', '');
SELECT pg_catalog.pg_extension_config_dump('sluice._quarantine', '');

CREATE TABLE sluice._expectation_result (
    run_id           bigint NOT NULL REFERENCES sluice._run ON DELETE CASCADE,
    expectation_id   integer NOT NULL REFERENCES sluice._expectation ON DELETE CASCADE,
    evaluated        bigint NOT NULL,
    failed           bigint NOT NULL,
    success          boolean NOT NULL,
    observed         text,
    sample_keys      jsonb,
    PRIMARY KEY (run_id, expectation_id)
);
CREATE INDEX ON sluice._expectation_result (expectation_id);
COMMENT ON TABLE sluice._expectation_result IS
  'Private: the result of every expectation in every run.';
SELECT pg_catalog.pg_extension_config_dump('sluice._expectation_result', '');


CREATE TABLE sluice._destination (
    name         text PRIMARY KEY CHECK (name OPERATOR(pg_catalog.~) '^[a-z_][a-z0-9_]{0,47}$'),
    kind         text NOT NULL CHECK (kind IN ('webhook', 'openlineage')),
    url          text NOT NULL,
    events       text[] NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    secret       text,
    format       text NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'slack')),
    namespace    text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   name NOT NULL DEFAULT CURRENT_USER
);
COMMENT ON TABLE sluice._destination IS
  'Private: where events go (webhooks, OpenLineage receivers). Holds secrets: readable by the extension owner only.';
REVOKE ALL ON sluice._destination FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('sluice._destination', '');

CREATE TABLE sluice._outbox (
    event_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination     text NOT NULL REFERENCES sluice._destination ON DELETE CASCADE,
    pipeline        text,
    event           text NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    last_error      text,
    sent_at         timestamptz
);
CREATE INDEX ON sluice._outbox (next_attempt_at) WHERE status = 'pending';
COMMENT ON TABLE sluice._outbox IS
  'Private: events written in the same transaction as what they describe; the notifier worker posts them.';
SELECT pg_catalog.pg_extension_config_dump('sluice._outbox', '');

CREATE TABLE sluice._delivery (
    event_id     bigint NOT NULL REFERENCES sluice._outbox ON DELETE CASCADE,
    attempt      integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    duration     interval NOT NULL,
    http_status  integer,
    error        text,
    PRIMARY KEY (event_id, attempt)
);
COMMENT ON TABLE sluice._delivery IS 'Private: every delivery attempt.';
SELECT pg_catalog.pg_extension_config_dump('sluice._delivery', '');

CREATE TABLE sluice._run_table (
    run_id        bigint NOT NULL REFERENCES sluice._run ON DELETE CASCADE,
    target_schema name NOT NULL,
    target_table  name NOT NULL,
    rows_inserted bigint NOT NULL,
    rows_updated  bigint NOT NULL,
    rows_deleted  bigint NOT NULL,
    truncated     bigint NOT NULL,
    rows_missing  bigint NOT NULL DEFAULT 0,
    missing_keys  jsonb,
    PRIMARY KEY (run_id, target_schema, target_table)
);
COMMENT ON TABLE sluice._run_table IS 'Private: rows each run wrote per datamart table.';
COMMENT ON COLUMN sluice._run_table.rows_missing IS
  'Updates and deletes of the table that found no row in the datamart and were skipped.';
COMMENT ON COLUMN sluice._run_table.missing_keys IS
  'Up to 5 of them: {"change": "update" or "delete", "key": {...}, "source_xid": ...}.';
SELECT pg_catalog.pg_extension_config_dump('sluice._run_table', '');

CREATE TABLE sluice._tag (
    pipeline_id  integer NOT NULL REFERENCES sluice._pipeline ON DELETE CASCADE,
    name         text NOT NULL CHECK (name OPERATOR(pg_catalog.~) '^[a-z_][a-z0-9_]{0,30}$'),
    version      bigint NOT NULL,
    schema_name  name NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (pipeline_id, name)
);
COMMENT ON TABLE sluice._tag IS 'Private: named versions, each exposed as a schema of views.';
SELECT pg_catalog.pg_extension_config_dump('sluice._tag', '');

-------------------------------------------------------------------------------
-- Result type
-------------------------------------------------------------------------------

CREATE TYPE sluice.refresh_result AS (
    pipeline          text,
    run_id            bigint,
    kind              text,
    transactions      bigint,
    rows_inserted     bigint,
    rows_updated      bigint,
    rows_deleted      bigint,
    tables_truncated  bigint,
    start_lsn         pg_lsn,
    end_lsn           pg_lsn,
    duration          interval,
    status            text
);
COMMENT ON TYPE sluice.refresh_result IS
  'Summary of one initial copy or refresh: what was applied and the source LSN range it covers.';
