/*-------------------------------------------------------------------------
 *
 * pg_sluice.h
 *	  Declarations shared by the pg_sluice modules.
 *
 * Vocabulary (also in README.md):
 *	source		a live PostgreSQL server pg_sluice reads from (conninfo)
 *	pipeline	one source, one publication, one logical replication slot
 *				(pgoutput), one replication origin, a set of tables copied
 *				into a target schema of the datamart
 *	run			one initial copy or refresh of a pipeline; it commits as a
 *				whole together with the source position it reached
 *	batch		the changes one run applies, in one local transaction
 *	contract	per datamart table: its columns (name, type, nullable, key),
 *				the source column feeding each, and a drift policy (freeze,
 *				evolve, ignore); versioned, one version per change
 *	drift		a source table that no longer matches its contract, seen
 *				in a RELATION message before any of its rows is applied
 *	expectation	a named data-quality check on a table with a severity:
 *				error (the batch rolls back and the pipeline pauses), warn
 *				(recorded), quarantine (the failing row is held back)
 *	quarantine	the rows quarantine expectations held back, with their
 *				key, until released, discarded or superseded by a later
 *				change of the same key on the source
 *	version		one committed run (its run id); with keep_history the rows
 *				it replaced or deleted go to the history tables, stamped
 *				[version they were written, version that superseded them)
 *	divergence	an update or delete that found no row in the datamart
 *
 * Declarations are grouped by the file that defines them, in the order
 * data flows: the catalog and the roles first (everyone uses them), then
 * the source side (transport, stream, creation), the apply side (apply,
 * contract, expect, origin), refresh, the workers and the notifier.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/pg_sluice.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_SLUICE_H
#define PG_SLUICE_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "nodes/pg_list.h"
#include "lib/stringinfo.h"
#include "utils/palloc.h"
#include "utils/relcache.h"

/* GUCs (pg_sluice.c) */
extern int	sluice_connect_timeout;
extern int	sluice_source_decoding_work_mem;
extern int	sluice_split_decoding_min;
extern int	sluice_refresh_walsender_min;
extern int	sluice_max_workers;
extern int	sluice_max_pipelines;
extern int	sluice_naptime;
extern int	sluice_batch_size;
extern int	sluice_batch_time;
extern int	sluice_max_retained_wal;
extern int	sluice_http_timeout;
extern int	sluice_http_max_attempts;
extern int	sluice_http_retry_base;
extern int	sluice_http_max_page;
extern int	sluice_quarantine_alert;
extern int	sluice_worker_transport;
extern int	sluice_refresh_transport;

/* pg_sluice.worker_transport, pg_sluice.refresh_transport (also auto) */
#define SLUICE_TRANSPORT_WALSENDER	0
#define SLUICE_TRANSPORT_SQL		1
#define SLUICE_TRANSPORT_AUTO		2
extern int	sluice_model_max_keys;

/* ---------- catalog.c: the words as pg_sluice's own tables hold them ---------- */

/* A pipeline, as its catalog rows describe it (catalog_pipeline). */
typedef struct SluicePipeline
{
	int			pipeline_id;
	char	   *name;
	char	   *source_name;
	char	   *conninfo;
	char	   *publication;
	bool		publication_owned;
	char	   *slot_name;
	char	   *origin_name;
	char	   *target_schema;
	Oid			owner;			/* role that owns it: its tables' code runs as it */
	bool		binary;			/* pgoutput binary transfer is safe */
	bool		continuous;		/* streamed by a background worker */
	char	   *paused_reason;	/* NULL unless paused (schema drift) */
	TransactionId skip_xid;		/* source transaction to skip once, or 0 */
	bool		keep_history;	/* versions: superseded rows are kept */
	bool		strict;			/* a missing row pauses instead of being
								 * skipped and counted */
	int64		version;		/* version (run id) the batch writes, or 0 */
	bool		http;			/* its source is an HTTP JSON API (httpapply.c) */
	List	   *tables;			/* list of SluiceTable * */
} SluicePipeline;

/* A column of a contract. */
typedef struct SluiceColumn
{
	char	   *name;			/* datamart column */
	char	   *source_column;	/* source column feeding it, or NULL */
	char	   *data_type;
	bool		not_null;
	bool		is_key;
	Oid			source_type;	/* type OID on the source, as pgoutput sends */
	bool		source_dropped; /* dropped on the source: fed nothing when
								 * not sent (sluice.drop_column) */
	List	   *prior_types;	/* oid: earlier source types still accepted
								 * (sluice.accept_type_change) */
	List	   *prior_sources;	/* String: names the source column had before
								 * a rename (sluice.map_column) */
} SluiceColumn;

/* An expectation declared on a table. */
typedef struct SluiceExpectation
{
	int			expectation_id;
	char	   *name;
	char	   *kind;
	char		severity;		/* 'e'rror, 'w'arn, 'q'uarantine */
	char	   *predicate;		/* row expectation: bound expression tree
								 * (nodeToString of an Expr over the row) */
	char	   *check;			/* set expectation: bound query tree
								 * (nodeToString of a Query) run per batch */
} SluiceExpectation;

/* A table of a pipeline: its contract (current version) and expectations. */
typedef struct SluiceTable
{
	char	   *source_schema;
	char	   *source_table;
	char	   *target_schema;
	char	   *target_table;
	char	   *drift_policy;	/* freeze, evolve or ignore */
	int			contract_version;
	List	   *columns;		/* SluiceColumn *, the current contract */
	List	   *ignored;		/* String: source columns left out */
	List	   *expectations;	/* SluiceExpectation * */
	Oid			source_relid;	/* the table's oid on live (identity.c), 0 unknown */
	List	   *prior_names;	/* String: names it had on live before a
								 * rename, schema.table quoted (identity.c) */
	char	   *name_seen;		/* a name its changes arrived under that
								 * paused the pipeline, or NULL */
	bool		name_confirmed; /* this batch's look at live found it under
								 * the recorded name */
} SluiceTable;

extern Datum catalog_name_datum(const char *s);
extern char *catalog_source_conninfo(const char *source);
extern SluicePipeline *catalog_pipeline(const char *name, bool lock);
extern SluicePipeline *catalog_pipeline_by_id(int pipeline_id, bool lock);
extern SluicePipeline *catalog_pipeline_operated(int pipeline_id, const char *action);
extern int64 catalog_insert_run(int64 run_id, int pipeline_id, const char *kind,
								TimestampTz started, XLogRecPtr start_lsn,
								XLogRecPtr end_lsn, int64 xacts, int64 ins,
								int64 upd, int64 del, int64 trunc,
								TimestampTz last_commit);
extern void catalog_require_postgres(SluicePipeline *pipe, const char *verb);
extern void catalog_insert_run_table(int64 run_id, const char *target_schema,
									 const char *target_table, int64 ins, int64 upd,
									 int64 del);
extern void catalog_run_paused(int64 run_id, const char *reason);
extern void catalog_run_skipped(int pipeline_id, int64 run_id, TransactionId xid);
extern void catalog_run_source_position(int64 run_id, XLogRecPtr flush_lsn,
										XLogRecPtr restart_lsn);

/* SPI as the current user, for the SQL entry points' own statements */
extern void sluice_spi_exec(const char *sql, int nargs, Oid *types, Datum *args,
							int expected);
extern bool sluice_spi_exists(const char *sql, const char *arg);

/* ---------- jsonout.c: small JSON objects as text (jsonb's spacing) ---------- */

extern void sluice_json_begin(StringInfo buf);
extern void sluice_json_string(StringInfo buf, const char *key, const char *value);
extern void sluice_json_raw(StringInfo buf, const char *key, const char *json);
extern void sluice_json_end(StringInfo buf);

/* ---------- security.c: who pg_sluice acts as ---------- */

typedef struct SluiceUser
{
	Oid			userid;
	int			sec_context;
} SluiceUser;

extern Oid	sluice_catalog_owner(void);
extern void sluice_become_catalog(SluiceUser *save);
extern void sluice_become_owner(SluicePipeline *pipe, SluiceUser *save);
extern void sluice_restore_user(SluiceUser *save);
extern int	sluice_catalog_exec(const char *sql, int nargs, Oid *types, Datum *args,
								const char *nulls, bool read_only, long count);
extern void sluice_check_operator(SluicePipeline *pipe, const char *action);

/* ---------- spiplan.c: kept plans of pg_sluice's own catalog statements ---------- */

extern int	sluice_spi_kept(const char *sql, int nargs, Oid *types, Datum *args,
							const char *nulls, bool read_only, long count);
extern void sluice_fix_search_path(void);

/* ---------- transport.c: libpq to the source, every wait interruptible ---------- */

typedef struct SluiceConn
{
	PGconn	   *conn;			/* libpq connection (malloc'd by libpq) */
	char	   *source;			/* source name, for messages */
	char	   *password;		/* password to scrub from messages, or NULL */
	char	   *copybuf;		/* last COPY row from libpq (malloc'd by libpq,
								 * freed by the next read or the close) */
	bool		persistent;		/* survives commits (workers); closed on abort */
	bool		parked;			/* persistent, and survives aborts too: a pool
								 * worker's, of a pipeline it is not serving */
	struct SluiceConn **owner_ref;	/* set to NULL when the connection is
									 * closed (by an abort, say), or NULL */
	TimestampTz identity_at;	/* persistent: when refresh last looked at
								 * its tables' identity (identity.c) */
} SluiceConn;

extern SluiceConn *transport_connect(const char *source, const char *conninfo,
									 bool replication);
extern SluiceConn *transport_try_connect(const char *source, const char *conninfo);
/*
 * relation.c: the apply's stepping key lookup lets go of the pins it holds
 * between rows; every wait on the network calls it first, so that no
 * VACUUM of a datamart table waits on a refresh waiting for its source.
 */
extern void relmap_step_release(void);

extern void transport_close(SluiceConn *sc);
extern XLogRecPtr transport_parse_lsn(const char *s);
extern void transport_abandon(SluiceConn *sc);
extern PGresult *transport_exec(SluiceConn *sc, const char *sql,
								int nparams, const char *const *params,
								ExecStatusType expected, const char *what);
extern void transport_command(SluiceConn *sc, const char *sql, const char *what);
extern char *transport_try_value(SluiceConn *sc, const char *sql, const char *what);
extern void transport_copy_start(SluiceConn *sc, const char *sql, const char *what);
extern void transport_send(SluiceConn *sc, const char *sql, const char *what);
extern char *transport_copy_await(SluiceConn *sc, const char *what);
extern int	transport_copy_next(SluiceConn *sc, char **buf, const char *what);
extern void transport_copy_both_start(SluiceConn *sc, const char *sql, const char *what);
extern int	transport_copy_try_next(SluiceConn *sc, char **buf, const char *what);
extern bool transport_wait_readable(SluiceConn *sc, long timeout_ms);
extern bool transport_over_unix_socket(SluiceConn *sc);
extern void transport_copy_put(SluiceConn *sc, const char *data, int len, const char *what);
extern bool transport_copy_end(SluiceConn *sc, long timeout_ms);
extern char *transport_mask_conninfo(const char *conninfo);
extern void transport_check_conninfo(const char *conninfo);

/* ---------- stream.c: a slot's changes as pgoutput messages, what apply consumes ---------- */

typedef struct SluiceStream
{
	SluicePipeline *pipe;
	SluiceConn *sc;				/* first (or only) part */
	SluiceConn *sc2;			/* second part, until the first ends; or NULL */
	SluiceConn *cur;			/* the connection being read */
	XLogRecPtr	split_lsn;
	XLogRecPtr	upto_lsn;
	bool		binary;			/* pgoutput sends binary values */
	bool		header_done;	/* the current COPY's header was read */
	XLogRecPtr	skip_before;	/* transactions committed before it were
								 * delivered already (the second part decoded
								 * after the first), or 0 */
	int64		messages;		/* messages delivered */
	struct SpoolReader *spool;	/* reading the spool instead (spool.c), or NULL */
	bool		streaming;		/* the source streams big transactions */
	bool		files_saved;	/* saved_files holds the files set aside */
	struct StreamFiles *saved_files;	/* another stream's files, or NULL */
} SluiceStream;

extern void stream_begin(SluiceStream *ss, SluicePipeline *pipe, SluiceConn *sc,
						 SluiceConn *sc2, XLogRecPtr split_lsn, XLogRecPtr upto_lsn,
						 int64 max_messages, bool binary, bool streaming);
extern bool stream_next(SluiceStream *ss, StringInfo msg);
extern void stream_end(SluiceStream *ss);

/* ---------- walstream.c: the walsender transport (continuous workers) ---------- */

/* A local commit awaiting its WAL flush before its source end is reported. */
typedef struct WalStreamCommit
{
	XLogRecPtr	local_end;
	XLogRecPtr	remote_end;
} WalStreamCommit;

typedef struct WalStream
{
	SluiceConn *sc;				/* replication connection, in CopyBoth;
								 * NULL once closed (by an abort, say) */
	bool		binary;
	XLogRecPtr	received;		/* walsender position: all before it was
								 * read */
	XLogRecPtr	durable;		/* source position durably applied */
	XLogRecPtr	reported;		/* flush position last reported */
	TimestampTz last_status;	/* last standby status update */
	bool		in_batch;		/* a batch is applying: report nothing read */
	WalStreamCommit *pending;	/* local commits not yet flushed, in order */
	int			npending;
	int			maxpending;
	char	   *held;			/* a message walstream_wait read, for the
								 * next batch */
	int			held_len;
	int64		messages;
	struct HTAB *relations;		/* relid -> its last RELATION message */
	MemoryContext relcxt;
	struct WaitEventSet *wes;	/* latch, socket, postmaster: made once for
								 * walstream_await, not per wait */
	TimestampTz asked_at;		/* last walstream_ask_position */
} WalStream;

extern WalStream *walstream_open(SluicePipeline *pipe, XLogRecPtr start, bool binary);
extern WalStream *walstream_open_mem(SluicePipeline *pipe, XLogRecPtr start, bool binary,
									 int work_mem_kb);
extern void walstream_close(WalStream *ws, bool polite);
extern bool walstream_next(WalStream *ws, StringInfo msg, bool wait);
extern bool walstream_wait(WalStream *ws);
extern void walstream_committed(WalStream *ws, XLogRecPtr local_end, XLogRecPtr remote_end);
extern void walstream_feedback(WalStream *ws, bool force);
extern void walstream_tick(WalStream *ws);
extern bool walstream_poll(WalStream *ws);
extern void walstream_await(WalStream *ws, long timeout_ms);
extern void walstream_ask_position(WalStream *ws);
extern bool walstream_confirm_and_close(WalStream *ws, XLogRecPtr lsn);
/* called during long applies (worker.c's pool lets go of other streams) */
typedef void (*walstream_busy_hook_type) (WalStream *ws);
extern PGDLLIMPORT walstream_busy_hook_type walstream_busy_hook;
extern void walstream_remember_relation(WalStream *ws, const char *body, int len);
extern bool walstream_recall_relation(WalStream *ws, uint32 relid, StringInfo msg);

/* ---------- streamfile.c: streamed transactions kept until their end ---------- */

extern void streamfile_reset(void);
typedef struct StreamFiles StreamFiles;
extern StreamFiles *streamfile_save(void);
extern void streamfile_restore(StreamFiles *sf);
extern void streamfile_start(TransactionId xid, bool first_segment);
extern void streamfile_stop(void);
extern bool streamfile_in_block(void);
extern int	streamfile_count(void);
extern void streamfile_write(TransactionId subxid, char action, const char *body, int len);
extern void streamfile_abort(TransactionId xid, TransactionId subxid);
extern int64 streamfile_replay_begin(TransactionId xid);
extern bool streamfile_replay_next(TransactionId xid, StringInfo buf);
extern void streamfile_drop(TransactionId xid);

/* ---------- api.c: SQL-callable entry points (PG_FUNCTION_INFO_V1 only) ---------- */

/* ---------- source.c: the source's catalog, read and written at creation and drop ---------- */

/* A source table as described by the source, before anything is created. */
typedef struct SourceTable
{
	char	   *schema;
	char	   *name;
	char	   *target;			/* datamart table name */
	char		replident;		/* d, f, i (n is refused) */
	bool		partitioned;	/* a partitioned table: published via its root */
	List	   *ancestors;		/* a partition: String "schema.name" of each */
	List	   *keys;			/* String column names */
	bool		key_deferrable; /* the source's key is DEFERRABLE */
	List	   *columns;		/* String column names */
	List	   *types;			/* String datamart type names */
	List	   *notnull;		/* int: 1 when NOT NULL */
	List	   *srctypes;		/* oid: type on the source, as pgoutput sends it */
	bool		binary_safe;	/* every column's binary form is the same here:
								 * the initial copy can be binary */
	bool		stream_binary;	/* pgoutput's binary mode can send every column
								 * (a type without a send function goes as text) */
	Oid			adopted;		/* existing datamart table it feeds, or 0 */
	List	   *ignored;		/* String: source columns the datamart table lacks */
	Oid			relid;			/* its oid on the source */
} SourceTable;

extern SourceTable *source_describe_table(SluiceConn *sc, const char *spec);
extern void source_check(SluiceConn *sc, const char *slot_name);
extern bool source_check_publication(SluiceConn *sc, const char *source,
									 const char *publication, bool given,
									 List *tables);
extern bool source_drop_slot(SluiceConn *sc, const char *slot);
extern void source_drop(SluiceConn *sc, const char *slot, const char *publication);

/* ---------- pipeline.c: creating a pipeline, dropping its datamart objects ---------- */

/* A pipeline create_pipeline validated, and what creating it made. */
typedef struct NewPipeline
{
	char	   *name;
	char	   *source;
	char	   *conninfo;
	char	   *target_schema;
	char	   *publication;
	bool		publication_owned;	/* pg_sluice creates it (and drops it) */
	char	   *slot_name;
	char	   *origin_name;
	List	   *tables;			/* SourceTable * */
	TimestampTz started;
	/* set by pipeline_create */
	int			pipeline_id;
	XLogRecPtr	consistent;		/* the slot's consistent point */
	int64		copied;			/* rows of the initial copy */
	int64		run_id;			/* the initial copy's run */
	List	   *chunked;		/* SourceTable *: left empty, copied in chunks */
} NewPipeline;

extern void pipeline_check_target(SourceTable *t, const char *target_schema, bool adopt);
extern void pipeline_create(NewPipeline *np, SluiceConn *sc);
extern void pipeline_drop_tables(SluicePipeline *pipe);
extern Oid	pipeline_add_table(SluicePipeline *pipe, SluiceConn *sc, SourceTable *t);
extern bool pipeline_key_deferrable(SourceTable *t);
extern void pipeline_build_key(const char *schema, const char *table, List *keys, bool deferrable);
extern void pipeline_build_key_online(const char *schema, const char *table, List *keys, bool deferrable);

/* ---------- snapshot.c: the initial copy in chunks ---------- */

extern void snapshot_init(void);
extern List *snapshot_initial_plan(SluiceConn *sc, const char *source_name, List *tables);
extern void snapshot_record_initial(int pipeline_id, SourceTable *t);
extern void snapshot_key_for_apply(SluicePipeline *pipe, SluiceTable *t);
extern bool snapshot_copy_under_way(int pipeline_id, const char *schema, const char *table);
extern void snapshot_copy_resume(int pipeline_id);
extern int	snapshot_initial_chunk_rows(void);

/* the copy workers' steps, each in its own transactions (copyworker.c runs them) */
typedef enum CopyStep
{
	COPY_STEP_COPIED,			/* a chunk copied: there may be more */
	COPY_STEP_BUSY,				/* nothing to claim, other workers copy */
	COPY_STEP_ALL_COPIED,		/* every range copied, the stream to pass them */
	COPY_STEP_GONE				/* nothing to copy (finished, dropped, paused) */
} CopyStep;
extern CopyStep snapshot_copy_step(int pipeline_id, MemoryContext cxt);
extern bool snapshot_copy_finish(int pipeline_id);
extern bool snapshot_retire_streamed(int pipeline_id);

/* ---------- copyworker.c: background copy workers ---------- */

extern void copyworker_init(void);
extern int	copyworker_count(void);
extern void copyworker_launch(int pipeline_id);
extern void copyworker_ensure(int pipeline_id);
extern bool copyworker_running(int pipeline_id);
extern void snapshot_worker_step(int pipeline_id);

/* ---------- copy.c: the initial copy, in the slot's exported snapshot ---------- */

extern int64 copy_table(SluiceConn *sc, const char *src_schema,
						const char *src_table, bool partitioned,
						List *columns, Oid target_relid, bool binary,
						const char *where, List *src_columns,
						const char *progress);

/* ---------- apply.c: pgoutput messages applied to the datamart (a batch) ---------- */

/*
 * Why a batch pauses the pipeline (schema drift, an error-severity
 * expectation, a missing row under strict): whoever raises the error fills
 * it in (in TopMemoryContext) and hangs it on the batch's ApplyStats.pause
 * just before; refresh.c records it once the batch rolled back.
 */
typedef struct SluiceDrift
{
	bool		is_expectation; /* an error-severity expectation, not drift */
	bool		is_divergence;	/* a missing row under strict, not drift */
	char	   *source_schema;
	char	   *source_table;
	char	   *policy;
	char	   *detail;
	char	   *source_columns;	/* jsonb text: after */
	char	   *contract_columns;	/* jsonb text: before */
	int			contract_version;
	TransactionId xid;
	XLogRecPtr	lsn;
	char	   *name_seen;		/* a rename under policy freeze: the name
								 * the table's changes arrived under, quoted
								 * (recorded with the pause), or NULL */
} SluiceDrift;

/* What a batch did. */
typedef struct ApplyStats
{
	int64		transactions;
	int64		inserted;
	int64		updated;
	int64		deleted;
	int64		truncated;
	int64		skipped_transactions;	/* already applied before */
	int64		quarantined;	/* rows held back by expectations */
	int64		missing;		/* updates and deletes that found no row
								 * (divergence), skipped */
	TransactionId skipped_xid;	/* the skip_xid transaction, when met */
	XLogRecPtr	last_end_lsn;	/* end of the last applied transaction */
	TimestampTz last_commit_time;
	int64		messages;		/* pgoutput messages received */
	bool		stopped_early;	/* stopped at a commit past max_ms */
	SluiceDrift *pause;			/* set just before the ERROR that pauses the
								 * pipeline, else NULL */
} ApplyStats;

extern void apply_stream(SluicePipeline *pipe, SluiceConn *sc, SluiceConn *sc2,
						 XLogRecPtr start_lsn, XLogRecPtr split_lsn,
						 XLogRecPtr upto_lsn, int64 max_messages, int max_ms,
						 ApplyStats *stats);

extern bool apply_use_binary(SluicePipeline *pipe);
extern void apply_walstream(SluicePipeline *pipe, struct WalStream *ws,
							XLogRecPtr start_lsn, int64 max_messages, int max_ms,
							ApplyStats *stats);
extern void apply_walstream_upto(SluicePipeline *pipe, struct WalStream *ws,
								 XLogRecPtr start_lsn, XLogRecPtr upto_lsn,
								 ApplyStats *stats);

/*
 * relation.c and quarantine.c export only to the apply family, and
 * version.c all but one function: see apply_internal.h.
 */

/* ---------- version.c: row versions and history (the rest in apply_internal.h) ---------- */

extern char *version_history_schema(const char *target_schema);

/* ---------- contract.c: contracts, drift and drift events ---------- */

extern void contract_record_first(SourceTable *t, const char *target_schema, Datum *targs);
extern SluiceDrift *drift_new(SluiceTable *t, const char *detail, const char *source_columns,
							   const char *contract_columns);
extern void contract_record_drift(SluicePipeline *pipe, const SluiceDrift *d,
								  const char *action, const char *table);

/* identity.c */
extern void identity_record(int pipeline_id, const char *schema, const char *table, Oid relid);
extern SluiceDrift *identity_check(SluicePipeline *pipe, SluiceConn *sc, char **message, char **hint);
extern char *identity_qualified(const char *schema, const char *table);
extern int	identity_accept_rename(SluicePipeline *pipe);
typedef enum IdentityChunk
{
	IDENTITY_SAME,				/* live's table is the one being copied */
	IDENTITY_RESTART,			/* created again: the caller starts the copy over */
	IDENTITY_RESTARTED			/* created again, another chunk started it over */
} IdentityChunk;
extern IdentityChunk identity_chunk_start(SluicePipeline *pipe, SluiceConn *sc, SluiceTable *t);

/* ---------- expect.c: expectations (row ones compiled, set ones run per batch) ---------- */

typedef struct ExpectResult
{
	int			expectation_id;
	char	   *name;
	char		severity;
	int64		evaluated;
	int64		failed;
	char	   *observed;
	StringInfoData sample;		/* JSON values, comma-separated */
	int			nsample;
} ExpectResult;

/* Rows written per table in a run (for sluice.versions). */
typedef struct TableCount
{
	char	   *target_schema;
	char	   *target_table;
	int64		inserted;
	int64		updated;
	int64		deleted;
	int64		truncated;
	int64		missing;		/* updates and deletes that found no row */
	StringInfoData missing_keys;	/* up to 5 of them, JSON objects,
									 * comma-separated (data NULL: none) */
	int			nmissing_keys;
} TableCount;

extern List *sluice_results;
extern TableCount *table_count(const char *schema, const char *table);
extern void table_counts_record(int64 run_id);
extern struct Expr *expect_bind_predicate(Relation rel, SluiceExpectation *e);
extern void expect_results_reset(void);
extern ExpectResult *expect_result(SluiceExpectation *e);
extern void expect_add_sample(ExpectResult *r, const char *json);
extern void expect_run_set_checks(SluicePipeline *pipe, SluiceDrift **pause);
extern void expect_pause(SluicePipeline *pipe, SluiceTable *t, SluiceExpectation *e,
						 const char *detail, SluiceDrift **pause) pg_attribute_noreturn();
extern void expect_record_results(int64 run_id);
extern struct HeapTupleData *expect_run_check(SluiceExpectation *e, struct TupleDescData **desc);

/* ---------- origin.c: exactly-once bookkeeping ---------- */

extern void origin_init(void);
extern void origin_session_begin(const char *origin_name);
extern XLogRecPtr origin_session_progress(void);
extern XLogRecPtr origin_session_applied(void);
extern void origin_session_set(XLogRecPtr lsn, TimestampTz committime);
extern XLogRecPtr origin_progress(const char *origin_name, bool flush);
extern bool origin_session_durable(void);

/* ---------- refresh.c: one bounded pull-and-apply, shared by both modes ---------- */

typedef struct RefreshResult
{
	ApplyStats	stats;
	XLogRecPtr	start_lsn;		/* position the batch started from */
	XLogRecPtr	end_lsn;		/* position the datamart is consistent with */
	XLogRecPtr	source_flush_lsn;	/* source's flushed WAL at the start */
	XLogRecPtr	slot_restart_lsn;	/* oldest WAL the slot keeps on the source */
	bool		complete;		/* reached source_flush_lsn */
	bool		conn_closed;	/* the connection was abandoned mid-stream */
	bool		paused;			/* schema drift paused the pipeline: nothing
								 * was applied */
	int64		run_id;			/* reserved for the batch (history), or 0 */
	char	   *paused_reason;
	bool		ws_refresh;		/* read through the walsender: the slot moves
								 * when the transaction commits */
} RefreshResult;

extern void refresh_pipeline(SluicePipeline *pipe, SluiceConn *sc,
							 int64 max_messages, int max_ms,
							 RefreshResult *r);
extern PGresult *refresh_describe_slot(SluicePipeline *pipe, SluiceConn *sc, const char *what);
extern void refresh_slot_gone(SluicePipeline *pipe) pg_attribute_noreturn();
extern void refresh_pipeline_ws(SluicePipeline *pipe, struct WalStream *ws,
								int64 max_messages, int max_ms, RefreshResult *r);
extern void refresh_pipeline_upto(SluicePipeline *pipe, SluiceConn *sc,
								  int64 max_messages, int max_ms,
								  XLogRecPtr bound, RefreshResult *r);
extern void refresh_reserve_version(SluicePipeline *pipe, RefreshResult *r);
extern void refresh_pause(SluicePipeline *pipe, RefreshResult *r, SluiceDrift *d, int sqlerrcode,
						  const char *message, const char *hint);
extern void refresh_become_owner(SluicePipeline *pipe, SluiceUser *save);
extern int64 refresh_record_run(SluicePipeline *pipe, const char *kind,
								TimestampTz started, RefreshResult *r);

/* ---------- httpapply.c: an HTTP pipeline's refresh, through the apply family ---------- */

extern void http_refresh(SluicePipeline *pipe, RefreshResult *r);

/* ---------- spool.c: a paused pipeline's changes kept here, so live's slot moves ---------- */

extern int	sluice_spool_limit;

typedef struct SpoolReader SpoolReader;

/* What a drain did. */
typedef struct SpoolResult
{
	int64		transactions;	/* source transactions spooled */
	int64		bytes;			/* message bytes spooled */
	int64		spool_bytes;	/* the spool's size after it */
	XLogRecPtr	drained_upto;	/* the spool holds every change before it */
	bool		full;			/* stopped at pg_sluice.spool_limit */
	bool		conn_closed;	/* the connection was abandoned mid-stream */
	XLogRecPtr	source_flush_lsn;
	XLogRecPtr	slot_restart_lsn;
} SpoolResult;

extern void spool_init(void);
extern void spool_drain(SluicePipeline *pipe, SluiceConn *sc, SpoolResult *res);
extern bool spool_pending(SluicePipeline *pipe);
extern XLogRecPtr spool_apply(SluicePipeline *pipe, XLogRecPtr origin_lsn, ApplyStats *stats);
extern SpoolReader *spool_open(SluicePipeline *pipe, bool binary);
extern bool spool_next(SpoolReader *sr, StringInfo msg);

/* ---------- slotwatch.c: heartbeat, the move after a commit, slot_lag ---------- */

extern int	sluice_heartbeat_interval;

extern void slotwatch_init(void);
extern void slotwatch_advance(SluicePipeline *pipe, SluiceConn *sc, XLogRecPtr lsn);
extern void slotwatch_heartbeat(SluicePipeline *pipe, SluiceConn *sc, XLogRecPtr lsn);
extern void slotwatch_move_after_commit(SluicePipeline *pipe);
extern void slotwatch_lag(SluicePipeline *pipe, XLogRecPtr source_lsn, XLogRecPtr restart_lsn,
						  bool record);

/* ---------- launcher.c: continuous mode's launcher and shared state ---------- */

extern void worker_shmem_init(void);
extern bool worker_stop_pipeline(Oid dboid, int pipeline_id, int timeout_ms);

/* ---------- worker.c: a pipeline's (or the notifier's) background worker ---------- */

extern bool worker_still_wanted(void);
extern void worker_xact_begin(void);
extern void worker_xact_commit(void);

/* ---------- notify.c: alerts and lineage over HTTP, the notifier ---------- */

extern void outbox_emit(const char *pipeline, const char *event, const char *json);
extern void outbox_emit_run(int64 run_id, int64 quarantined);
extern int	notifier_run_once(bool reclaim);
extern void notifier_main(MemoryContext cxt);

/* ---------- payload.c: event payloads (jansson) ---------- */

extern char *payload_build(const char *kind, const char *event, const char *pipeline, int64 id,
						   const char *body_text, const char *namespace, const char *when, bool slack);
extern char **payload_header_lines(const char *headers);
extern void payload_free_lines(char **lines);

/* ---------- model.c: models, maintained at the end of each batch ---------- */

typedef struct ModelInput ModelInput;
struct TupleTableSlot;

extern void model_batch_reset(void);
extern ModelInput *model_input_open(Relation rel);
extern void model_note_row(ModelInput *mi, struct TupleTableSlot *slot);
extern void model_note_truncate(ModelInput *mi);
extern void model_maintain(SluicePipeline *pipe, SluiceDrift **pause);
extern void model_record_results(int64 run_id);
extern void model_after_write(const char *schema, const char *table);
extern char *model_readers(Oid relid, const char *column);

/* ---------- interface.c: published contract versions follow the contract ---------- */

extern void interface_before_alter(SluiceTable *t);
extern void interface_contract_settled(SluicePipeline *pipe, SluiceTable *t);

#endif							/* PG_SLUICE_H */
