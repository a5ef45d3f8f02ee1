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
extern int	sluice_max_workers;
extern int	sluice_naptime;
extern int	sluice_batch_size;
extern int	sluice_batch_time;
extern int	sluice_max_retained_wal;
extern int	sluice_http_timeout;
extern int	sluice_http_max_attempts;
extern int	sluice_http_retry_base;
extern int	sluice_quarantine_alert;

/* ---------- transport.c: libpq to the source, every wait interruptible ---------- */

typedef struct SluiceConn
{
	PGconn	   *conn;			/* libpq connection (malloc'd by libpq) */
	char	   *source;			/* source name, for messages */
	char	   *password;		/* password to scrub from messages, or NULL */
	char	   *copybuf;		/* last COPY row from libpq (malloc'd by libpq,
								 * freed by the next read or the close) */
	bool		persistent;		/* survives commits (workers); closed on abort */
} SluiceConn;

extern SluiceConn *transport_connect(const char *source, const char *conninfo,
									 bool replication);
extern SluiceConn *transport_try_connect(const char *source, const char *conninfo);
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
extern char *transport_mask_conninfo(const char *conninfo);
extern void transport_check_conninfo(const char *conninfo);

/* ---------- catalog.c: pg_sluice's own tables ---------- */

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
	List	   *tables;			/* list of SluiceTable * */
} SluicePipeline;

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
} SluiceTable;

/*
 * Schema drift that pauses the pipeline: apply.c fills it in just before
 * raising the error, refresh.c records it once the batch rolled back.
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
} SluiceDrift;

extern SluiceDrift *sluice_pending_drift;

extern Datum catalog_name_datum(const char *s);
extern char *catalog_source_conninfo(const char *source);
extern SluicePipeline *catalog_pipeline(const char *name, bool lock);
extern SluicePipeline *catalog_pipeline_by_id(int pipeline_id, bool lock);
extern int64 catalog_insert_run(int64 run_id, int pipeline_id, const char *kind,
								TimestampTz started, XLogRecPtr start_lsn,
								XLogRecPtr end_lsn, int64 xacts, int64 ins,
								int64 upd, int64 del, int64 trunc,
								TimestampTz last_commit);
extern void catalog_run_paused(int64 run_id, const char *reason);
extern void catalog_run_skipped(int pipeline_id, int64 run_id, TransactionId xid);
extern void catalog_run_source_position(int64 run_id, XLogRecPtr flush_lsn,
										XLogRecPtr restart_lsn);

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
extern void sluice_fix_search_path(void);

/* ---------- origin.c: exactly-once bookkeeping ---------- */

extern void origin_init(void);
extern void origin_session_begin(const char *origin_name);
extern XLogRecPtr origin_session_progress(void);
extern void origin_session_set(XLogRecPtr lsn, TimestampTz committime);

/* ---------- apply.c: decode pgoutput and apply it ---------- */

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
} ApplyStats;

extern void apply_stream(SluicePipeline *pipe, SluiceConn *sc, SluiceConn *sc2,
						 XLogRecPtr start_lsn, XLogRecPtr split_lsn,
						 XLogRecPtr upto_lsn, int64 max_messages, int max_ms,
						 ApplyStats *stats);

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
} RefreshResult;

extern void refresh_pipeline(SluicePipeline *pipe, SluiceConn *sc,
							 int64 max_messages, int max_ms,
							 RefreshResult *r);
extern void refresh_pipeline_upto(SluicePipeline *pipe, SluiceConn *sc,
								  int64 max_messages, int max_ms,
								  XLogRecPtr bound, RefreshResult *r);
extern int64 refresh_record_run(SluicePipeline *pipe, const char *kind,
								TimestampTz started, RefreshResult *r);

/* ---------- worker.c: continuous mode ---------- */

extern void worker_shmem_init(void);
extern bool worker_stop_pipeline(Oid dboid, int pipeline_id, int timeout_ms);

/* ---------- expect.c: data-quality expectations ---------- */

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
extern void expect_run_set_checks(SluicePipeline *pipe);
extern void expect_pause(SluicePipeline *pipe, SluiceTable *t, SluiceExpectation *e,
						 const char *detail) pg_attribute_noreturn();
extern void expect_record_results(int64 run_id);

/* ---------- notify.c: alerts and lineage over HTTP ---------- */

extern void outbox_emit(const char *pipeline, const char *event, const char *json);
extern void outbox_emit_run(int64 run_id, int64 quarantined);
extern int	notifier_run_once(bool reclaim);

/* payload.c (jansson) */
extern char *payload_build(const char *kind, const char *event, const char *pipeline, int64 id,
						   const char *body_text, const char *namespace, const char *when, bool slack);
extern char **payload_header_lines(const char *headers);
extern void payload_free_lines(char **lines);

/* ---------- copy.c: initial copy in one exported snapshot ---------- */

extern int64 copy_table(SluiceConn *sc, const char *src_schema,
						const char *src_table, bool partitioned,
						List *columns, Oid target_relid, bool binary);

#endif							/* PG_SLUICE_H */
