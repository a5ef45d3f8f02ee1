/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  Is the datamart exactly live?  Compare a pipeline's datamart tables
 *	  with the source at one exact source position (sluice.verify).
 *
 * NOTES
 *	  One exact position.  A comparison of two servers that both change
 *	  means nothing unless both are read as of the same source position.
 *	  verify creates a temporary logical slot on the source with an exported
 *	  snapshot (CREATE_REPLICATION_SLOT ... TEMPORARY LOGICAL pgoutput
 *	  (SNAPSHOT 'export')), as the initial copy does with its permanent one.
 *	  Its consistent point L splits the source's history in two: the
 *	  exported snapshot sees exactly the transactions whose commit record
 *	  comes before L, and decoding any slot up to L (the SQL decoding
 *	  functions' upto_lsn, which stop after the record ending at L; no record
 *	  straddles L, the end of the record that made the slot consistent)
 *	  yields exactly the same transactions.  So verify
 *	    1. creates the temporary slot and imports its snapshot into a
 *	       REPEATABLE READ READ ONLY transaction on a second connection,
 *	       then drops the slot (closing its connection: the imported
 *	       snapshot lives on in the importing transaction);
 *	    2. takes the pipeline's lock, the row lock a refresh takes, so no
 *	       refresh or drop runs until the verification's transaction ends;
 *	    3. brings the datamart to exactly L: a refresh bounded at L
 *	       (refresh_pipeline_upto), recorded as a run like any refresh,
 *	       committing with the verification.  The datamart cannot be past L:
 *	       it only ever reaches positions flushed before the slot was
 *	       created, unless a refresh slipped in between steps 1 and 2; then
 *	       step 1 is done again, now under the lock.  A paused pipeline
 *	       cannot apply: verify goes on only when nothing of its
 *	       publication was committed between its position and L;
 *	    4. reads both sides: the datamart in this transaction (which holds
 *	       the changes of step 3), the source in the imported snapshot.
 *	  Writes on the source go on meanwhile and change nothing: the snapshot
 *	  does not see them, and the datamart stops at L.  On the source,
 *	  verify only reads (ACCESS SHARE locks, the snapshot's xmin, and the
 *	  temporary slot for the instant of step 1).
 *
 *	  Rejected: comparing at "now" on both sides (never the same now),
 *	  locking the source tables (live's writes must never wait for us), and
 *	  pausing the slot while reading the source under READ COMMITTED (each
 *	  query would see another state).
 *
 *	  Hashing.  Each side computes the same SQL over the same text: for each
 *	  row the text form of ROW(contract columns) and of ROW(key columns)
 *	  (every column for a table without a key), hashed with md5, the key's
 *	  hash bucketing the row and the row's hash summed per bucket.  Columns
 *	  are named through the contract (datamart name here, source name
 *	  there); a column whose datamart type differs from the source's (a
 *	  declared widening, sluice.accept_type_change) is cast on the source to
 *	  the datamart's type first when that is a built-in type, so both sides
 *	  print the same text.  Both sessions print with the same settings
 *	  (TimeZone UTC, DateStyle ISO, IntervalStyle postgres,
 *	  extra_float_digits 3, bytea_output hex).  Only (bucket, count, sum,
 *	  sum) rows cross the wire.
 *
 *	  Buckets, not key ranges.  A range of keys ("id between 1 and 1000")
 *	  holds the same rows on both sides only if both sides order keys the
 *	  same way, and text keys are ordered by collations, which differ from
 *	  server to server (and COLLATE "C" would keep the source from using its
 *	  index anyway).  A bucket (the key's hash modulo M) holds the same keys
 *	  everywhere.  The per-bucket aggregate is a sum, so it does not depend
 *	  on the order of the rows either, and it compares multisets: for a
 *	  table without a key, a duplicated row adds its hash twice.  Bisection:
 *	  the buckets that differ (count or sums) are split, bucket b of modulus
 *	  M into b + i * M of modulus M * F, and only those children are
 *	  computed (a scan of each side, filtered on the parents), until the
 *	  differing buckets are small; then their rows' (key hash, row hash,
 *	  key) are streamed from both sides through cursors in key-hash order
 *	  and merged here: a key only on the source is missing in the mart, one
 *	  only in the mart is extra, one on both with another row hash is
 *	  different.  The cost is one scan of each side when they are equal,
 *	  plus one per level of bisection when they are not; the two sides scan
 *	  at the same time (the source's aggregate is read as a COPY while the
 *	  datamart computes its own).  Measured on the 2-core test machine,
 *	  1,000,000 rows of five columns: 6.4 s when equal (pg_dump -t of the
 *	  table alone: 0.9-1.8 s), 21 s with 110 differing rows (two levels of
 *	  bisection and the rows of the differing buckets), repair 24 s.
 *
 *	  Rejected: shipping every row's (key, hash) and merging here (the
 *	  wire would carry a row per row); hashtextextended instead of md5
 *	  (about twice as cheap, but its result depends on the byte order of
 *	  the server); ranges of keys (see above).
 *
 *	  Memory is bounded: the buckets of one level (at most 65536 are asked
 *	  for), batches of 1000 rows of the leaf cursors, and at most max_keys
 *	  differing keys kept for the report (all are counted).
 *
 *	  Roles: the caller must be allowed to operate the pipeline; the
 *	  source's connection string is read as the extension owner; the
 *	  datamart tables are read as the pipeline's owner in a
 *	  security-restricted operation (a policy or a function in a view of
 *	  the owner's never runs with a superuser caller's rights); the results
 *	  are written as the extension owner (security.c).
 *
 *	  Throttling: rows_per_second > 0 holds the average rate of source rows
 *	  read, by sleeping between the queries and cursor batches on the
 *	  source.  Each aggregate is one query, so the rate is not held within
 *	  one scan.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/verify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"

PG_FUNCTION_INFO_V1(sluice_verify);
PG_FUNCTION_INFO_V1(sluice_repair);

#define VERIFY_MAX_BUCKETS	65536	/* buckets one level may ask for */
#define VERIFY_LEAF_ROWS	64		/* rows per bucket listed key by key */
#define VERIFY_FETCH		1000	/* rows per cursor batch */
#define VERIFY_ATTEMPTS		3		/* slots created when refreshes race */

/* One contract column, as each side names it. */
typedef struct VerifyColumn
{
	char	   *name;			/* datamart name */
	char	   *mart_expr;		/* quoted datamart column */
	char	   *live_expr;		/* source column, cast when widened */
	bool		is_key;
	Oid			typid;			/* datamart type (repair's inserts) */
	int32		typmod;
} VerifyColumn;

/* A bucket that differs: its number and the larger side's row count. */
typedef struct VerifyBucket
{
	int64		bucket;
	int64		rows;
} VerifyBucket;

/* The comparison of one table. */
typedef struct VerifyTable
{
	SluiceTable *t;
	Oid			relid;			/* datamart table */
	List	   *columns;		/* VerifyColumn * */
	bool		keyless;
	char	   *live_rel;		/* [ONLY] schema.table on the source */
	char	   *mart_rel;		/* [ONLY] schema.table here */
	char	   *live_inner;		/* SELECT kh, rh, kj on the source */
	char	   *mart_inner;		/* the same here */
	int64		rows_live;
	int64		rows_mart;
	int64		ranges;			/* buckets compared, all levels */
	int64		differences;
	int			nkeys;			/* entries in keys */
	StringInfoData keys;		/* JSON objects, comma-separated */
	/* the pending entry (a run of equal rows of a keyless table) */
	const char *pend_kind;
	char	   *pend_rh;
	char	   *pend_key;
	int64		pend_count;
	/* repair (sluice.repair): the differing keys are re-copied */
	bool		repair;
	int64		version;		/* _sluice_version of the copied rows, or 0 */
	char	   *live_key_row;	/* key columns, source side */
	char	   *mart_key_row;	/* key columns, datamart side */
	char	   *live_cols;		/* contract columns, source side */
	char	   *mart_table;		/* schema.table here, without ONLY */
	char	   *hist_table;		/* its history table, or NULL */
	char	   *all_cols;		/* every column of the datamart table */
	SPIPlanPtr	insert_plan;	/* INSERT of one row from the source */
	int			nbatch;			/* differing keys waiting */
	char	  **batch_kh;		/* their key hashes */
	const char **batch_kind;
	int64		rows_deleted;
	int64		rows_inserted;
	MemoryContext cxt;			/* what lives as long as the comparison */
	MemoryContext flushcxt;		/* one repair batch, reset after it */
} VerifyTable;

#define REPAIR_BATCH 1000

/* Average rate limit on source rows read. */
typedef struct VerifyThrottle
{
	int			rate;			/* rows per second, 0: none */
	TimestampTz start;
	int64		rows;
} VerifyThrottle;

/* One side of the leaf merge: a cursor read in batches. */
typedef struct LeafStream
{
	bool		live;
	SluiceConn *sc;				/* source side */
	PGresult   *res;			/* its current batch */
	Portal		portal;			/* datamart side */
	SPITupleTable *tt;			/* its current batch */
	uint64		n;				/* rows in the batch */
	uint64		pos;			/* current row */
	bool		done;
	VerifyThrottle *throttle;
} LeafStream;

static void verify_position(const char *name, SluicePipeline **pipep,
							XLogRecPtr *at, SluiceConn **snapp);
static bool verify_catch_up(SluicePipeline *pipe, XLogRecPtr at, TimestampTz started);
static void verify_check_backlog(SluicePipeline *pipe, XLogRecPtr from, XLogRecPtr at);
static VerifyTable *verify_prepare(SluicePipeline *pipe, SluiceTable *t, SluiceConn *snap);
static void verify_compare(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th, int max_keys);
static VerifyBucket *verify_level(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
								  int64 modulus, int64 parent_modulus,
								  VerifyBucket *parents, int nparents, int *ndiff);
static void verify_leaf(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
						int64 modulus, VerifyBucket *buckets, int nbuckets, int max_keys);
static void verify_throttle(VerifyThrottle *th, int64 rows);
static void verify_set_output_settings(void);
static void repair_prepare(VerifyTable *vt, SluicePipeline *pipe);
static void repair_flush(VerifyTable *vt);

/* The connection whose transaction holds the source's snapshot. */
static SluiceConn *repair_snap = NULL;

/* ---------- helpers ---------- */

/* An int8 made of 60 bits of an md5 in hex, from character start. */
static char *
hex60(const char *expr, int start)
{
	return psprintf("(('x' OPERATOR(pg_catalog.||) pg_catalog.substr(%s, %d, 15))::pg_catalog.bit(60))::pg_catalog.int8",
					expr, start);
}

/* Is the type one of pg_catalog's (so the source has it too)? */
static bool
type_is_builtin(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	bool		result;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	result = ((Form_pg_type) GETSTRUCT(tup))->typnamespace == PG_CATALOG_NAMESPACE;
	ReleaseSysCache(tup);
	return result;
}

/* '{1,2,3}'::pg_catalog.int8[] of the buckets' numbers (ours: no quoting). */
static char *
bucket_array(VerifyBucket *b, int n)
{
	StringInfoData s;
	int			i;

	initStringInfo(&s);
	appendStringInfoString(&s, "'{");
	for (i = 0; i < n; i++)
		appendStringInfo(&s, "%s" INT64_FORMAT, i ? "," : "", b[i].bucket);
	appendStringInfoString(&s, "}'::pg_catalog.int8[]");
	return s.data;
}

/*
 * Sleep so that the source rows read so far, plus rows, stay within the
 * rate; interruptible.
 */
static void
verify_throttle(VerifyThrottle *th, int64 rows)
{
	th->rows += rows;
	if (th->rate <= 0)
		return;
	for (;;)
	{
		TimestampTz due = th->start + (TimestampTz) ((double) th->rows * USECS_PER_SEC / th->rate);
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), due);

		CHECK_FOR_INTERRUPTS();
		if (ms <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(ms, 1000L), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	CHECK_FOR_INTERRUPTS();
}

/*
 * Print values here as the source session prints them (see NOTES).  Set
 * for the rest of the transaction's current GUC nest level; the caller
 * undoes it with AtEOXact_GUC.
 */
static void
verify_set_output_settings(void)
{
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("DateStyle", "ISO", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("IntervalStyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "3", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("bytea_output", "hex", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* ---------- the position ---------- */

/*
 * Open the source's snapshot at a fresh exact position and lock the
 * pipeline, with the datamart at or before that position (see NOTES, steps
 * 1 and 2).  Returns the locked pipeline, the position and the connection
 * whose transaction holds the snapshot.
 */
static void
verify_position(const char *name, SluicePipeline **pipep, XLogRecPtr *at,
				SluiceConn **snapp)
{
	int			attempt;

	for (attempt = 1;; attempt++)
	{
		SluicePipeline *pipe = *pipep;
		SluiceConn *repl;
		SluiceConn *snap;
		PGresult   *res;
		char	   *slot;
		char	   *snapshot;
		XLogRecPtr	consistent;
		XLogRecPtr	progress;

		slot = psprintf("sluice_verify_%d_%d_%d", pipe->pipeline_id, MyProcPid, attempt);
		repl = transport_connect(pipe->source_name, pipe->conninfo, true);
		res = transport_exec(repl,
							 psprintf("CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')",
									  quote_identifier(slot)),
							 0, NULL, PGRES_TUPLES_OK, "create a temporary replication slot for the verification");
		consistent = transport_parse_lsn(PQgetvalue(res, 0, 1));
		snapshot = pstrdup(PQgetvalue(res, 0, 2));
		PQclear(res);

		snap = transport_connect(pipe->source_name, pipe->conninfo, false);
		transport_command(snap, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
						  "start the verification's transaction");
		transport_command(snap, psprintf("SET TRANSACTION SNAPSHOT %s", quote_literal_cstr(snapshot)),
						  "import the verification's snapshot");
		transport_command(snap, "SET LOCAL TimeZone = 'UTC'", "set the time zone");
		transport_command(snap, "SET LOCAL bytea_output = 'hex'", "set bytea_output");
		/* the snapshot lives on in snap's transaction; the slot goes */
		transport_close(repl);

		pipe = catalog_pipeline(name, true);
		sluice_check_operator(pipe, "verify");
		if (pipe->continuous)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("pipeline \"%s\" is streaming continuously", name),
					 errdetail("A background worker applies its changes, so the datamart cannot be held at one source position."),
					 errhint("Stop it with sluice.stop('%s'), verify, then start it again with sluice.start('%s').",
							 name, name)));
		origin_session_begin(pipe->origin_name);
		progress = origin_session_progress();
		*pipep = pipe;
		if (progress <= consistent)
		{
			*at = consistent;
			*snapp = snap;
			return;
		}
		/* a refresh committed past our position before we had the lock */
		transport_close(snap);
		if (attempt >= VERIFY_ATTEMPTS)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("the datamart of pipeline \"%s\" kept moving past the verification's source position", name),
					 errdetail("It is at %X/%X, the source's snapshot at %X/%X.",
							   LSN_FORMAT_ARGS(progress), LSN_FORMAT_ARGS(consistent)),
					 errhint("Run the verification again.")));
	}
}

/*
 * A paused pipeline cannot apply: verify only if nothing of its
 * publication was committed between the datamart's position and at.
 * Tells the slot first what the datamart durably has, as a refresh does.
 */
static void
verify_check_backlog(SluicePipeline *pipe, XLogRecPtr from, XLogRecPtr at)
{
	SluiceConn *sc = transport_connect(pipe->source_name, pipe->conninfo, false);
	PGresult   *res;
	const char *params[4];
	char		frombuf[32];
	char		atbuf[32];
	XLogRecPtr	confirmed;
	int64		pending;

	snprintf(frombuf, sizeof(frombuf), "%X/%X", LSN_FORMAT_ARGS(from));
	snprintf(atbuf, sizeof(atbuf), "%X/%X", LSN_FORMAT_ARGS(at));
	params[0] = pipe->slot_name;
	res = transport_exec(sc, "SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
						 1, params, PGRES_TUPLES_OK, "describe the replication slot");
	if (PQntuples(res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" of pipeline \"%s\" no longer exists on source \"%s\"",
						pipe->slot_name, pipe->name, pipe->source_name),
				 errhint("The source forgot what changed since the last refresh: drop the pipeline with sluice.drop_pipeline(force => true) and create it again.")));
	confirmed = PQgetisnull(res, 0, 0) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (from > confirmed)
	{
		params[1] = frombuf;
		PQclear(transport_exec(sc, "SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn)",
							   2, params, PGRES_TUPLES_OK, "advance the replication slot"));
	}
	params[1] = atbuf;
	params[2] = quote_identifier(pipe->publication);
	res = transport_exec(sc,
						 "SELECT pg_catalog.count(*) FROM pg_catalog.pg_logical_slot_peek_binary_changes("
						 "$1, $2::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $3)",
						 3, params, PGRES_TUPLES_OK, "look for changes the paused pipeline has not applied");
	pending = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	transport_close(sc);
	if (pending > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" is paused with changes it has not applied", pipe->name),
				 errdetail("It paused because: %s. The source committed changes of its tables between %X/%X and the verification's position %X/%X.",
						   pipe->paused_reason, LSN_FORMAT_ARGS(from), LSN_FORMAT_ARGS(at)),
				 errhint("Fix the cause, call sluice.resume('%s') and sluice.refresh('%s'), then verify again.",
						 pipe->name, pipe->name)));
}

/*
 * Bring the datamart to exactly at (see NOTES, step 3).  Returns false when
 * the pipeline paused on the way (recorded as its refresh's run).
 */
static bool
verify_catch_up(SluicePipeline *pipe, XLogRecPtr at, TimestampTz started)
{
	XLogRecPtr	progress = origin_session_progress();
	SluiceConn *sc;
	RefreshResult r;

	if (progress >= at)
		return true;
	if (pipe->paused_reason != NULL)
	{
		verify_check_backlog(pipe, progress, at);
		return true;
	}
	sc = transport_connect(pipe->source_name, pipe->conninfo, false);
	refresh_pipeline_upto(pipe, sc, 0, 0, at, &r);
	if (!r.conn_closed)
		transport_close(sc);
	if (r.paused)
	{
		(void) refresh_record_run(pipe, "refresh", started, &r);
		return false;
	}
	if (r.end_lsn != at)
		elog(ERROR, "the datamart reached %X/%X instead of %X/%X",
			 LSN_FORMAT_ARGS(r.end_lsn), LSN_FORMAT_ARGS(at));
	if (r.end_lsn > r.start_lsn || r.stats.transactions > 0)
		(void) refresh_record_run(pipe, "refresh", started, &r);
	CommandCounterIncrement();
	return true;
}

/* ---------- one table ---------- */

/*
 * Describe one table for the comparison: its contract columns as each side
 * names them, casts for widened types, the two base queries.
 */
static VerifyTable *
verify_prepare(SluicePipeline *pipe, SluiceTable *t, SluiceConn *snap)
{
	VerifyTable *vt = palloc0(sizeof(VerifyTable));
	const char *params[2] = {t->source_schema, t->source_table};
	PGresult   *res;
	ListCell   *lc;
	bool		partitioned = false;
	Oid			nsp;
	StringInfoData key;
	StringInfoData row;
	StringInfoData names;
	StringInfoData vals;
	bool		first;
	int			nkey = 0;

	vt->t = t;
	vt->cxt = CurrentMemoryContext;
	initStringInfo(&vt->keys);
	nsp = get_namespace_oid(t->target_schema, true);
	vt->relid = OidIsValid(nsp) ? get_relname_relid(t->target_table, nsp) : InvalidOid;
	if (!OidIsValid(vt->relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("datamart table \"%s.%s\" of pipeline \"%s\" does not exist",
						t->target_schema, t->target_table, pipe->name),
				 errhint("Drop the pipeline with sluice.drop_pipeline() and create it again.")));

	res = transport_exec(snap,
						 "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), c.relkind "
						 "  FROM pg_catalog.pg_class c "
						 "  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
						 "  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid "
						 "   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped "
						 " WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2",
						 2, params, PGRES_TUPLES_OK, "describe the source table");
	if (PQntuples(res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("source table \"%s.%s\" of pipeline \"%s\" does not exist on source \"%s\"",
						t->source_schema, t->source_table, pipe->name, pipe->source_name),
				 errhint("Remove the table from the datamart's comparison with the tables argument, or create the pipeline again.")));
	partitioned = PQgetvalue(res, 0, 2)[0] == 'p';

	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		VerifyColumn *vc;
		AttrNumber	attno;
		Oid			typid;
		int32		typmod;
		Oid			collid;
		char	   *mart_type;
		const char *live_type = NULL;
		int			i;

		/* a column the source no longer feeds has nothing to compare */
		if (c->source_column == NULL || c->source_dropped)
			continue;
		for (i = 0; i < PQntuples(res); i++)
			if (strcmp(PQgetvalue(res, i, 0), c->source_column) == 0)
				live_type = PQgetvalue(res, i, 1);
		if (live_type == NULL)
			continue;
		attno = get_attnum(vt->relid, c->name);
		if (attno == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of datamart table \"%s.%s\" does not exist",
							c->name, t->target_schema, t->target_table),
					 errdetail("The contract of the table has it."),
					 errhint("Restore the column, or drop it from the contract with sluice.drop_column().")));
		get_atttypetypmodcoll(vt->relid, attno, &typid, &typmod, &collid);
		mart_type = format_type_extended(typid, typmod, FORMAT_TYPE_TYPEMOD_GIVEN);

		vc = palloc0(sizeof(VerifyColumn));
		vc->name = c->name;
		vc->is_key = c->is_key;
		vc->mart_expr = pstrdup(quote_identifier(c->name));
		vc->typid = typid;
		vc->typmod = typmod;
		vc->live_expr = pstrdup(quote_identifier(c->source_column));
		/* a widened column: print the source's value as the datamart's type */
		if (strcmp(mart_type, live_type) != 0 && type_is_builtin(typid))
			vc->live_expr = psprintf("CAST(%s AS %s)", vc->live_expr,
									 format_type_extended(typid, typmod,
														  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
		if (vc->is_key)
			nkey++;
		vt->columns = lappend(vt->columns, vc);
	}
	PQclear(res);
	if (vt->columns == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("datamart table \"%s.%s\" has no column fed by the source to compare",
						t->target_schema, t->target_table)));
	vt->keyless = (nkey == 0);

	vt->live_rel = psprintf("%s%s.%s", partitioned ? "" : "ONLY ",
							quote_identifier(t->source_schema), quote_identifier(t->source_table));
	vt->mart_rel = psprintf("%s%s.%s",
							get_rel_relkind(vt->relid) == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
							quote_identifier(t->target_schema), quote_identifier(t->target_table));

	for (int side = 0; side < 2; side++)
	{
		bool		live = (side == 0);

		initStringInfo(&key);
		initStringInfo(&row);
		initStringInfo(&names);
		initStringInfo(&vals);
		first = true;
		foreach(lc, vt->columns)
		{
			VerifyColumn *vc = lfirst(lc);
			const char *e = live ? vc->live_expr : vc->mart_expr;

			appendStringInfo(&row, "%s%s", row.len ? ", " : "", e);
			if (vt->keyless || vc->is_key)
			{
				appendStringInfo(&key, "%s%s", key.len ? ", " : "", e);
				appendStringInfo(&names, "%s%s", first ? "" : ", ", quote_literal_cstr(vc->name));
				appendStringInfo(&vals, "%s(%s)::pg_catalog.text", first ? "" : ", ", e);
				first = false;
			}
		}
		*(live ? &vt->live_key_row : &vt->mart_key_row) = pstrdup(key.data);
		if (live)
			vt->live_cols = pstrdup(row.data);
		*(live ? &vt->live_inner : &vt->mart_inner) =
			psprintf("SELECT pg_catalog.md5((ROW(%s))::pg_catalog.text) AS kh, "
					 "pg_catalog.md5((ROW(%s))::pg_catalog.text) AS rh, "
					 "(pg_catalog.json_object(ARRAY[%s]::pg_catalog.text[], ARRAY[%s]::pg_catalog.text[]))::pg_catalog.text AS kj "
					 "FROM %s",
					 key.data, row.data, names.data, vals.data,
					 live ? vt->live_rel : vt->mart_rel);
	}
	return vt;
}

/*
 * Compute the buckets of one level on both sides and return those that
 * differ.  modulus: this level's; parents (of parent_modulus) restrict the
 * rows to theirs, all rows when NULL.  The first level also counts the
 * rows of each side.
 */
static VerifyBucket *
verify_level(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
			 int64 modulus, int64 parent_modulus, VerifyBucket *parents,
			 int nparents, int *ndiff)
{
	char	   *filter = "";
	char	   *sql[2];
	char	  **lval[4];		/* the source's rows: b, count, sum, sum */
	int			lmax = 64;
	char	   *err;
	char	   *buf;
	int			len;
	SPITupleTable *mt;
	uint64		nm;
	int			nl;
	int			i = 0;
	uint64		j = 0;
	VerifyBucket *diff;
	int			maxdiff;
	int			n = 0;
	int64		live_rows = 0;
	MemoryContext rowcxt;
	MemoryContext outer;

	if (parents != NULL)
		filter = psprintf(" WHERE (x.h OPERATOR(pg_catalog.%%) " INT64_FORMAT ") OPERATOR(pg_catalog.=) ANY (%s)",
						  parent_modulus, bucket_array(parents, nparents));
	/*
	 * OFFSET 0 keeps the row's hash a column computed once: pulled up, its
	 * expression would be computed again for each of the two sums.
	 */
	for (int side = 0; side < 2; side++)
		sql[side] = psprintf("SELECT x.h OPERATOR(pg_catalog.%%) " INT64_FORMAT " AS b, pg_catalog.count(*), "
							 "pg_catalog.sum(x.r1), pg_catalog.sum(x.r2) "
							 "FROM (SELECT %s AS h, %s AS r1, %s AS r2 FROM (%s OFFSET 0) y) x%s "
							 "GROUP BY 1 ORDER BY 1",
							 modulus, hex60("y.kh", 1), hex60("y.rh", 1), hex60("y.rh", 16),
							 side == 0 ? vt->live_inner : vt->mart_inner, filter);

	/* the source computes its buckets while the datamart computes its own */
	transport_send(snap, psprintf("COPY (%s) TO STDOUT", sql[0]), "compute the verification's hashes");
	if (SPI_execute(sql[1], false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not compute the datamart's hashes");
	mt = SPI_tuptable;
	nm = SPI_processed;
	err = transport_copy_await(snap, "compute the verification's hashes");
	if (err != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the source refused to compute the verification's hashes of table \"%s.%s\": %s",
						vt->t->source_schema, vt->t->source_table, err)));
	for (int k = 0; k < 4; k++)
		lval[k] = palloc(sizeof(char *) * lmax);
	nl = 0;
	/* rows of four integers, tab-separated: nothing to unescape */
	while ((len = transport_copy_next(snap, &buf, "send the verification's hashes")) >= 0)
	{
		char	   *line = pnstrdup(buf, len);
		char	   *f = line;

		if (nl == lmax)
		{
			lmax *= 2;
			for (int k = 0; k < 4; k++)
				lval[k] = repalloc(lval[k], sizeof(char *) * lmax);
		}
		for (int k = 0; k < 4; k++)
		{
			char	   *end = strpbrk(f, "\t\n");

			if (end != NULL)
				*end = '\0';
			lval[k][nl] = f;
			f = end ? end + 1 : f + strlen(f);
		}
		nl++;
		CHECK_FOR_INTERRUPTS();
	}

	maxdiff = nl + (int) nm;
	diff = palloc(sizeof(VerifyBucket) * Max(maxdiff, 1));
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice verify bucket",
								   ALLOCSET_DEFAULT_SIZES);
	outer = MemoryContextSwitchTo(rowcxt);
	while (i < nl || j < nm)
	{
		int64		bl = i < nl ? strtoll(lval[0][i], NULL, 10) : PG_INT64_MAX;
		int64		bm = j < nm ? strtoll(SPI_getvalue(mt->vals[j], mt->tupdesc, 1), NULL, 10) : PG_INT64_MAX;
		int64		cl = 0;
		int64		cm = 0;
		bool		differs;

		CHECK_FOR_INTERRUPTS();
		if (bl <= bm)
			cl = strtoll(lval[1][i], NULL, 10);
		if (bm <= bl)
			cm = strtoll(SPI_getvalue(mt->vals[j], mt->tupdesc, 2), NULL, 10);
		if (bl == bm)
			differs = cl != cm ||
				strcmp(lval[2][i], SPI_getvalue(mt->vals[j], mt->tupdesc, 3)) != 0 ||
				strcmp(lval[3][i], SPI_getvalue(mt->vals[j], mt->tupdesc, 4)) != 0;
		else
			differs = true;
		vt->ranges++;
		live_rows += cl;
		if (parents == NULL)
		{
			vt->rows_live += cl;
			vt->rows_mart += cm;
		}
		if (differs)
		{
			diff[n].bucket = Min(bl, bm);
			diff[n].rows = Max(cl, cm);
			n++;
		}
		if (bl <= bm)
			i++;
		if (bm <= bl)
			j++;
		MemoryContextReset(rowcxt);
	}
	MemoryContextSwitchTo(outer);
	MemoryContextDelete(rowcxt);
	for (int k = 0; k < nl; k++)
		pfree(lval[0][k]);
	for (int k = 0; k < 4; k++)
		pfree(lval[k]);
	SPI_freetuptable(mt);
	verify_throttle(th, parents == NULL ? live_rows : vt->rows_live);
	*ndiff = n;
	return diff;
}

/* Fetch the next batch of a leaf stream. */
static void
leaf_fetch(LeafStream *s)
{
	if (s->live)
	{
		if (s->res)
			PQclear(s->res);
		s->res = NULL;
		s->res = transport_exec(s->sc, psprintf("FETCH FORWARD %d FROM sluice_verify", VERIFY_FETCH),
								0, NULL, PGRES_TUPLES_OK, "read the differing rows");
		s->n = PQntuples(s->res);
		verify_throttle(s->throttle, (int64) s->n);
	}
	else
	{
		if (s->tt)
			SPI_freetuptable(s->tt);
		SPI_cursor_fetch(s->portal, true, VERIFY_FETCH);
		s->tt = SPI_tuptable;
		s->n = SPI_processed;
	}
	s->pos = 0;
	s->done = (s->n == 0);
}

/* Column col (0: key hash, 1: row hash, 2: key as JSON) of the current row. */
static char *
leaf_value(LeafStream *s, int col)
{
	if (s->live)
		return PQgetvalue(s->res, (int) s->pos, col);
	return SPI_getvalue(s->tt->vals[s->pos], s->tt->tupdesc, col + 1);
}

static void
leaf_next(LeafStream *s)
{
	if (++s->pos >= s->n)
		leaf_fetch(s);
}

/* Write the pending difference, if any. */
static void
flush_difference(VerifyTable *vt, int max_keys)
{
	if (vt->pend_kind == NULL)
		return;
	if (vt->nkeys < max_keys)
	{
		if (vt->nkeys > 0)
			appendStringInfoString(&vt->keys, ", ");
		appendStringInfoString(&vt->keys, "{\"kind\": ");
		escape_json(&vt->keys, vt->pend_kind);
		appendStringInfo(&vt->keys, ", \"key\": %s", vt->pend_key);
		if (vt->keyless)
			appendStringInfo(&vt->keys, ", \"count\": " INT64_FORMAT, vt->pend_count);
		appendStringInfoChar(&vt->keys, '}');
		vt->nkeys++;
	}
	pfree(vt->pend_rh);
	pfree(vt->pend_key);
	vt->pend_kind = NULL;
}

/*
 * Count a difference; equal rows of a keyless table missing or extra
 * several times make one entry with their count.
 */
static void
add_difference(VerifyTable *vt, const char *kind, const char *kh, const char *rh,
			   const char *key, int max_keys)
{
	MemoryContext old = MemoryContextSwitchTo(vt->cxt);

	vt->differences++;
	if (vt->repair)
	{
		vt->batch_kh[vt->nbatch] = pstrdup(kh);
		vt->batch_kind[vt->nbatch] = kind;
		if (++vt->nbatch == REPAIR_BATCH)
			repair_flush(vt);
	}
	if (vt->pend_kind != NULL && vt->keyless &&
		strcmp(vt->pend_kind, kind) == 0 && strcmp(vt->pend_rh, rh) == 0)
		vt->pend_count++;
	else
	{
		flush_difference(vt, max_keys);
		vt->pend_kind = kind;
		vt->pend_rh = pstrdup(rh);
		vt->pend_key = pstrdup(key);
		vt->pend_count = 1;
	}
	MemoryContextSwitchTo(old);
}

/*
 * List the rows of the differing buckets on both sides, in key-hash order,
 * and merge them: missing (only on the source), extra (only here),
 * different (another row hash).
 */
static void
verify_leaf(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
			int64 modulus, VerifyBucket *buckets, int nbuckets, int max_keys)
{
	char	   *sql[2];
	LeafStream	l;
	LeafStream	m;
	SPIPlanPtr	plan;
	MemoryContext rowcxt;
	MemoryContext outer;

	for (int side = 0; side < 2; side++)
		sql[side] = psprintf("SELECT y.kh, y.rh, y.kj FROM (%s) y "
							 "WHERE (%s OPERATOR(pg_catalog.%%) " INT64_FORMAT ") OPERATOR(pg_catalog.=) ANY (%s) "
							 "ORDER BY y.kh COLLATE pg_catalog.\"C\", y.rh COLLATE pg_catalog.\"C\"",
							 side == 0 ? vt->live_inner : vt->mart_inner,
							 hex60("y.kh", 1), modulus, bucket_array(buckets, nbuckets));

	memset(&l, 0, sizeof(l));
	memset(&m, 0, sizeof(m));
	l.live = true;
	l.sc = snap;
	l.throttle = th;
	transport_command(snap, psprintf("DECLARE sluice_verify NO SCROLL CURSOR FOR %s", sql[0]),
					  "read the differing rows");
	plan = SPI_prepare(sql[1], 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare the datamart's rows: %s", SPI_result_code_string(SPI_result));
	m.portal = SPI_cursor_open(NULL, plan, NULL, NULL, false);
	leaf_fetch(&l);
	leaf_fetch(&m);

	/* what one row of the merge allocates (SPI_getvalue) goes at its end */
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice verify row",
								   ALLOCSET_DEFAULT_SIZES);
	outer = MemoryContextSwitchTo(rowcxt);
	while (!l.done || !m.done)
	{
		int			c;

		MemoryContextReset(rowcxt);
		CHECK_FOR_INTERRUPTS();
		if (l.done)
			c = 1;
		else if (m.done)
			c = -1;
		else
		{
			c = strcmp(leaf_value(&l, 0), leaf_value(&m, 0));
			/* a keyless table's key is its row: equal rows match one to one */
			if (c == 0 && vt->keyless)
				c = strcmp(leaf_value(&l, 1), leaf_value(&m, 1));
		}
		if (c == 0)
		{
			if (strcmp(leaf_value(&l, 1), leaf_value(&m, 1)) != 0)
				add_difference(vt, "different", leaf_value(&l, 0), leaf_value(&l, 1), leaf_value(&l, 2), max_keys);
			leaf_next(&l);
			leaf_next(&m);
		}
		else if (c < 0)
		{
			add_difference(vt, "missing", leaf_value(&l, 0), leaf_value(&l, 1), leaf_value(&l, 2), max_keys);
			leaf_next(&l);
		}
		else
		{
			add_difference(vt, "extra", leaf_value(&m, 0), leaf_value(&m, 1), leaf_value(&m, 2), max_keys);
			leaf_next(&m);
		}
	}
	MemoryContextSwitchTo(outer);
	MemoryContextDelete(rowcxt);
	flush_difference(vt, max_keys);
	if (vt->repair)
		repair_flush(vt);
	if (l.res)
		PQclear(l.res);
	if (m.tt)
		SPI_freetuptable(m.tt);
	SPI_cursor_close(m.portal);
	SPI_freeplan(plan);
	transport_command(snap, "CLOSE sluice_verify", "close the cursor of differing rows");
}

/*
 * Compare one table: buckets, bisection of those that differ, then their
 * rows (see NOTES).
 */
static void
verify_compare(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th, int max_keys)
{
	HeapTuple	tup;
	double		reltuples = 0;
	int64		modulus;
	VerifyBucket *diff;
	int			ndiff;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(vt->relid));
	if (HeapTupleIsValid(tup))
	{
		reltuples = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
		ReleaseSysCache(tup);
	}
	/* about a thousand rows a bucket, 16 to 4096 buckets */
	modulus = (int64) Max(reltuples, 0) / 1024;
	modulus = Min(Max(modulus, 16), 4096);

	diff = verify_level(vt, snap, th, modulus, 0, NULL, 0, &ndiff);
	while (ndiff > 0)
	{
		int64		maxrows = 0;
		int64		fanout;
		int			k;

		for (k = 0; k < ndiff; k++)
			maxrows = Max(maxrows, diff[k].rows);
		fanout = Min((maxrows + VERIFY_LEAF_ROWS - 1) / VERIFY_LEAF_ROWS,
					 VERIFY_MAX_BUCKETS / ndiff);
		if (maxrows <= VERIFY_LEAF_ROWS || fanout < 2 ||
			modulus > (INT64CONST(1) << 59) / fanout)
		{
			verify_leaf(vt, snap, th, modulus, diff, ndiff, max_keys);
			break;
		}
		diff = verify_level(vt, snap, th, modulus * fanout, modulus, diff, ndiff, &ndiff);
		modulus *= fanout;
	}
}

/* ---------- repair ---------- */

/*
 * Ready a table for repair: its history table, every column (for the
 * history rows), the INSERT of one row from the source.
 */
static void
repair_prepare(VerifyTable *vt, SluicePipeline *pipe)
{
	SluiceTable *t = vt->t;
	bool		has_version = get_attnum(vt->relid, "_sluice_version") != InvalidAttrNumber;
	Oid			hnsp = get_namespace_oid(psprintf("%s_history", t->target_schema), true);
	Oid		   *types;
	Oid			args[1];
	Datum		vals[1];
	StringInfoData cols;
	StringInfoData params;
	ListCell   *lc;
	int			n = 0;

	vt->repair = true;
	vt->version = has_version ? pipe->version : 0;
	vt->mart_table = psprintf("%s.%s", quote_identifier(t->target_schema), quote_identifier(t->target_table));
	if (has_version && OidIsValid(hnsp) && OidIsValid(get_relname_relid(t->target_table, hnsp)))
		vt->hist_table = psprintf("%s.%s", quote_identifier(psprintf("%s_history", t->target_schema)),
								  quote_identifier(t->target_table));
	vt->batch_kh = palloc(sizeof(char *) * REPAIR_BATCH);
	vt->batch_kind = palloc(sizeof(char *) * REPAIR_BATCH);

	args[0] = OIDOID;
	vals[0] = ObjectIdGetDatum(vt->relid);
	if (SPI_execute_with_args("SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) "
							  "  FROM pg_catalog.pg_attribute a "
							  " WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 "
							  "   AND NOT a.attisdropped",
							  1, args, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the columns of the datamart table");
	vt->all_cols = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	types = palloc(sizeof(Oid) * (list_length(vt->columns) + 1));
	initStringInfo(&cols);
	initStringInfo(&params);
	foreach(lc, vt->columns)
	{
		VerifyColumn *vc = lfirst(lc);

		types[n++] = vc->typid;
		appendStringInfo(&cols, "%s%s", n > 1 ? ", " : "", vc->mart_expr);
		appendStringInfo(&params, "%s$%d", n > 1 ? ", " : "", n);
	}
	if (vt->version > 0)
	{
		types[n++] = INT8OID;
		appendStringInfo(&cols, ", _sluice_version");
		appendStringInfo(&params, ", $%d", n);
	}
	vt->insert_plan = SPI_prepare(psprintf("INSERT INTO %s (%s) VALUES (%s)", vt->mart_table, cols.data, params.data),
								  n, types);
	if (vt->insert_plan == NULL)
		elog(ERROR, "could not prepare the repair's insert: %s", SPI_result_code_string(SPI_result));
}

/* Insert the source's rows of res (the contract's columns) here. */
static void
repair_insert_rows(VerifyTable *vt, PGresult *res)
{
	int			ncols = list_length(vt->columns);
	Datum	   *values = palloc(sizeof(Datum) * (ncols + 1));
	char	   *nulls = palloc(ncols + 2);
	int			i;

	memset(nulls, ' ', ncols + 1);
	nulls[ncols + 1] = '\0';
	for (i = 0; i < PQntuples(res); i++)
	{
		ListCell   *lc;
		int			j = 0;

		CHECK_FOR_INTERRUPTS();
		foreach(lc, vt->columns)
		{
			VerifyColumn *vc = lfirst(lc);
			Oid			infunc;
			Oid			ioparam;

			if (PQgetisnull(res, i, j))
			{
				values[j] = (Datum) 0;
				nulls[j] = 'n';
			}
			else
			{
				getTypeInputInfo(vc->typid, &infunc, &ioparam);
				values[j] = OidInputFunctionCall(infunc, PQgetvalue(res, i, j), ioparam, vc->typmod);
				nulls[j] = ' ';
			}
			j++;
		}
		values[ncols] = Int64GetDatum(vt->version);
		if (SPI_execute_plan(vt->insert_plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert a repaired row");
		vt->rows_inserted++;
	}
}

/*
 * Re-copy the waiting differing keys: delete them here (their rows go to
 * the history table, superseded by the repair's version), then insert the
 * source's rows of those keys, read in the verification's snapshot.  A
 * table without a key: each extra row deletes one copy, each missing row
 * inserts one.
 */
static void
repair_flush(VerifyTable *vt)
{
	SluiceConn *snap = repair_snap;
	int			i;
	MemoryContext old;

	if (vt->nbatch == 0)
		return;
	if (vt->flushcxt == NULL)
		vt->flushcxt = AllocSetContextCreate(vt->cxt, "pg_sluice repair batch",
											 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(vt->flushcxt);
	if (!vt->keyless)
	{
		StringInfoData arr;
		Oid			types[2] = {TEXTARRAYOID, INT8OID};
		Datum		args[2];
		const char *params[1];
		PGresult   *res;
		int			rc;

		initStringInfo(&arr);
		appendStringInfoChar(&arr, '{');
		for (i = 0; i < vt->nbatch; i++)
			appendStringInfo(&arr, "%s%s", i ? "," : "", vt->batch_kh[i]);
		appendStringInfoChar(&arr, '}');
		/* a text[] parameter: a text one cast in the query would be parsed per row */
		{
			Datum	   *elems = palloc(sizeof(Datum) * vt->nbatch);

			for (i = 0; i < vt->nbatch; i++)
				elems[i] = CStringGetTextDatum(vt->batch_kh[i]);
			args[0] = PointerGetDatum(construct_array(elems, vt->nbatch, TEXTOID, -1, false, TYPALIGN_INT));
		}
		args[1] = Int64GetDatum(vt->version);
		if (vt->hist_table)
			rc = SPI_execute_with_args(psprintf("WITH d AS (DELETE FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
												"OPERATOR(pg_catalog.=) ANY ($1) RETURNING *) "
												"INSERT INTO %s (%s, _sluice_superseded) SELECT %s, $2 FROM d",
												vt->mart_rel, vt->mart_key_row, vt->hist_table, vt->all_cols, vt->all_cols),
									   2, types, args, NULL, false, 0);
		else
			rc = SPI_execute_with_args(psprintf("DELETE FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
												"OPERATOR(pg_catalog.=) ANY ($1)",
												vt->mart_rel, vt->mart_key_row),
									   1, types, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT && rc != SPI_OK_DELETE)
			elog(ERROR, "could not delete the rows to repair: %s", SPI_result_code_string(rc));
		vt->rows_deleted += SPI_processed;

		params[0] = arr.data;
		res = transport_exec(snap,
							 psprintf("SELECT %s FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
									  "OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
									  vt->live_cols, vt->live_rel, vt->live_key_row),
							 1, params, PGRES_TUPLES_OK, "read the rows to repair");
		repair_insert_rows(vt, res);
		PQclear(res);
	}
	else
	{
		for (i = 0; i < vt->nbatch; i++)
		{
			CHECK_FOR_INTERRUPTS();
			if (strcmp(vt->batch_kind[i], "extra") == 0)
			{
				Oid			types[1] = {TEXTOID};
				Datum		args[1];

				args[0] = CStringGetTextDatum(vt->batch_kh[i]);
				if (SPI_execute_with_args(psprintf("DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) "
												   "(SELECT ctid FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
												   "OPERATOR(pg_catalog.=) $1 LIMIT 1)",
												   vt->mart_rel, vt->mart_rel, vt->mart_key_row),
										  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
					elog(ERROR, "could not delete an extra row");
				vt->rows_deleted += SPI_processed;
			}
			else
			{
				const char *params[1] = {vt->batch_kh[i]};
				PGresult   *res;

				res = transport_exec(snap,
									 psprintf("SELECT %s FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
											  "OPERATOR(pg_catalog.=) $1 LIMIT 1",
											  vt->live_cols, vt->live_rel, vt->live_key_row),
									 1, params, PGRES_TUPLES_OK, "read the rows to repair");
				repair_insert_rows(vt, res);
				PQclear(res);
			}
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(vt->flushcxt);
	for (i = 0; i < vt->nbatch; i++)
		pfree(vt->batch_kh[i]);
	vt->nbatch = 0;
}

/* ---------- entry point ---------- */

/*
 * The pipeline's tables to verify: all of them, or those named (each must
 * be one of its datamart tables).
 */
static List *
verify_tables(SluicePipeline *pipe, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	if (arr == NULL)
		return pipe->tables;
	deconstruct_array(arr, REGCLASSOID, sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no table to verify"),
				 errhint("Pass NULL (the default) to verify every table of pipeline \"%s\".", pipe->name)));
	for (int i = 0; i < n; i++)
	{
		Oid			relid;
		char	   *nsp;
		char	   *rel;
		ListCell   *lc;
		SluiceTable *found = NULL;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("table names must not be null")));
		relid = DatumGetObjectId(elems[i]);
		nsp = get_namespace_name(get_rel_namespace(relid));
		rel = get_rel_name(relid);
		if (nsp == NULL || rel == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation with OID %u does not exist", relid)));
		foreach(lc, pipe->tables)
		{
			SluiceTable *t = lfirst(lc);

			if (strcmp(t->target_schema, nsp) == 0 && strcmp(t->target_table, rel) == 0)
				found = t;
		}
		if (found == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("table \"%s.%s\" is not in pipeline \"%s\"", nsp, rel, pipe->name),
					 errhint("sluice.pipeline_tables lists the datamart tables of each pipeline.")));
		if (!list_member_ptr(result, found))
			result = lappend(result, found);
	}
	return result;
}

/*
 * sluice.verify(pipeline, tables, rows_per_second, max_keys): compare the
 * pipeline's datamart tables with the source at one exact source position,
 * record and return one row per table.
 *
 * sluice.repair(pipeline, tables, rows_per_second): the same comparison,
 * re-copying each differing key from the source's snapshot, all in this
 * transaction; recorded as a run of kind repair (a version).
 */
static Datum
verify_run(FunctionCallInfo fcinfo, bool repair)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	ArrayType  *arr;
	int			rate;
	int			max_keys;
	SluicePipeline *pipe;
	List	   *tables;
	List	   *results = NIL;
	ListCell   *lc;
	SluiceConn *snap = NULL;
	XLogRecPtr	at = InvalidXLogRecPtr;
	TimestampTz started = GetCurrentTimestamp();
	VerifyThrottle th;
	SluiceUser	save;
	int			nestlevel;
	StringInfoData ev;
	int64		total_diff = 0;
	int64		total_del = 0;
	int64		total_ins = 0;
	int64		run_id = 0;
	char		atbuf[32];
	const char *verb = repair ? "repair" : "verify";

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	arr = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);
	rate = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);
	max_keys = repair ? 0 : (PG_ARGISNULL(3) ? 1000 : PG_GETARG_INT32(3));
	if (rate < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rows_per_second must not be negative"),
				 errhint("Pass 0 or NULL for no limit.")));
	if (max_keys < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_keys must not be negative")));

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();

	/* who may, and which tables, before anything touches the source */
	pipe = catalog_pipeline(name, false);
	sluice_check_operator(pipe, verb);
	tables = verify_tables(pipe, arr);

	verify_position(name, &pipe, &at, &snap);
	/* the lock re-read the pipeline: its tables again, from that read */
	tables = verify_tables(pipe, arr);
	if (!verify_catch_up(pipe, at, started))
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" paused while the datamart was brought to the source position: nothing was compared", name),
				 errhint("sluice.drift_events has the details; resume the pipeline, then call sluice.%s('%s') again.",
						 verb, name)));
		transport_close(snap);
		SPI_finish();
		return (Datum) 0;
	}
	if (repair)
	{
		bool		isnull;

		/* the repaired rows carry the repair's run id as their version */
		if (sluice_catalog_exec("SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('sluice._run', 'run_id'))",
								0, NULL, NULL, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not reserve a version");
		run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		pipe->version = run_id;
		repair_snap = snap;
	}

	memset(&th, 0, sizeof(th));
	th.rate = rate;
	th.start = GetCurrentTimestamp();

	nestlevel = NewGUCNestLevel();
	verify_set_output_settings();
	foreach(lc, tables)
	{
		SluiceTable *t = lfirst(lc);
		VerifyTable *vt = verify_prepare(pipe, t, snap);

		if (repair)
			repair_prepare(vt, pipe);
		/* the datamart's tables are read and written as their owner */
		sluice_become_owner(pipe, &save);
		verify_compare(vt, snap, &th, max_keys);
		sluice_restore_user(&save);
		results = lappend(results, vt);
	}
	AtEOXact_GUC(true, nestlevel);
	repair_snap = NULL;
	transport_command(snap, "COMMIT", "end the verification's transaction");
	transport_close(snap);

	snprintf(atbuf, sizeof(atbuf), "%X/%X", LSN_FORMAT_ARGS(at));
	if (repair)
	{
		foreach(lc, results)
		{
			VerifyTable *vt = lfirst(lc);

			total_del += vt->rows_deleted;
			total_ins += vt->rows_inserted;
		}
		if (total_del + total_ins > 0)
		{
			(void) catalog_insert_run(run_id, pipe->pipeline_id, "repair", started, at, at,
									  0, total_ins, 0, total_del, 0, 0);
			foreach(lc, results)
			{
				VerifyTable *vt = lfirst(lc);
				Oid			types[5] = {INT8OID, NAMEOID, NAMEOID, INT8OID, INT8OID};
				Datum		args[5];

				if (vt->rows_deleted + vt->rows_inserted == 0)
					continue;
				args[0] = Int64GetDatum(run_id);
				args[1] = catalog_name_datum(vt->t->target_schema);
				args[2] = catalog_name_datum(vt->t->target_table);
				args[3] = Int64GetDatum(vt->rows_inserted);
				args[4] = Int64GetDatum(vt->rows_deleted);
				if (sluice_catalog_exec("INSERT INTO sluice._run_table (run_id, target_schema, target_table, "
										"  rows_inserted, rows_updated, rows_deleted, truncated) "
										"VALUES ($1, $2, $3, $4, 0, $5, 0)",
										5, types, args, NULL, false, 0) != SPI_OK_INSERT)
					elog(ERROR, "could not record the repair's rows");
			}
			outbox_emit_run(run_id, 0);
		}
		foreach(lc, results)
		{
			VerifyTable *vt = lfirst(lc);
			Datum		values[7];
			bool		nulls[7];

			memset(nulls, 0, sizeof(nulls));
			values[0] = Int64GetDatum(run_id);
			nulls[0] = (total_del + total_ins == 0);
			values[1] = catalog_name_datum(vt->t->target_schema);
			values[2] = catalog_name_datum(vt->t->target_table);
			values[3] = LSNGetDatum(at);
			values[4] = Int64GetDatum(vt->differences);
			values[5] = Int64GetDatum(vt->rows_deleted);
			values[6] = Int64GetDatum(vt->rows_inserted);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		SPI_finish();
		return (Datum) 0;
	}

	/* record, announce, return */
	initStringInfo(&ev);
	appendStringInfo(&ev, "{\"at_lsn\": \"%s\", \"tables\": [", atbuf);
	foreach(lc, results)
	{
		VerifyTable *vt = lfirst(lc);
		Oid			types[12] = {INT4OID, NAMEOID, NAMEOID, LSNOID, TIMESTAMPTZOID, INT8OID,
		INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID, BOOLOID};
		Datum		args[12];
		int64		id;
		bool		isnull;
		Datum		values[8];
		bool		nulls[8];
		char	   *keys = psprintf("[%s]", vt->keys.data);

		args[0] = Int32GetDatum(pipe->pipeline_id);
		args[1] = catalog_name_datum(vt->t->target_schema);
		args[2] = catalog_name_datum(vt->t->target_table);
		args[3] = LSNGetDatum(at);
		args[4] = TimestampTzGetDatum(started);
		args[5] = Int64GetDatum(vt->rows_live);
		args[6] = Int64GetDatum(vt->rows_mart);
		args[7] = Int64GetDatum(Max(vt->rows_live, vt->rows_mart));
		args[8] = Int64GetDatum(vt->ranges);
		args[9] = Int64GetDatum(vt->differences);
		args[10] = CStringGetTextDatum(keys);
		args[11] = BoolGetDatum(vt->keyless);
		if (sluice_catalog_exec("INSERT INTO sluice._verification (pipeline_id, target_schema, target_table, "
								"  at_lsn, started_at, finished_at, rows_live, rows_mart, rows_compared, ranges, "
								"  differences, keys, keyless) "
								"VALUES ($1, $2, $3, $4, $5, pg_catalog.clock_timestamp(), $6, $7, $8, $9, $10, $11::jsonb, $12) "
								"RETURNING verification_id",
								12, types, args, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not record the verification");
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		total_diff += vt->differences;

		appendStringInfo(&ev, "%s{\"verification_id\": " INT64_FORMAT ", \"table\": ",
						 lc == list_head(results) ? "" : ", ", id);
		escape_json(&ev, psprintf("%s.%s", vt->t->target_schema, vt->t->target_table));
		appendStringInfo(&ev, ", \"rows_compared\": " INT64_FORMAT ", \"differences\": " INT64_FORMAT "}",
						 Max(vt->rows_live, vt->rows_mart), vt->differences);

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum(id);
		values[1] = catalog_name_datum(vt->t->target_schema);
		values[2] = catalog_name_datum(vt->t->target_table);
		values[3] = LSNGetDatum(at);
		values[4] = Int64GetDatum(Max(vt->rows_live, vt->rows_mart));
		values[5] = Int64GetDatum(vt->ranges);
		values[6] = Int64GetDatum(vt->differences);
		values[7] = DirectFunctionCall1(jsonb_in, CStringGetDatum(keys));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	appendStringInfo(&ev, "], \"differences\": " INT64_FORMAT ", \"summary\": ", total_diff);
	escape_json(&ev, psprintf("verified %d table(s) at %s: " INT64_FORMAT " difference(s)",
							  list_length(results), atbuf, total_diff));
	appendStringInfoChar(&ev, '}');
	outbox_emit(pipe->name, "verification", ev.data);

	SPI_finish();
	return (Datum) 0;
}

Datum
sluice_verify(PG_FUNCTION_ARGS)
{
	return verify_run(fcinfo, false);
}

Datum
sluice_repair(PG_FUNCTION_ARGS)
{
	return verify_run(fcinfo, true);
}
