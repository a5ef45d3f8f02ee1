/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  Is the datamart exactly live?  Compare a pipeline's datamart tables
 *	  with the source at one exact source position (sluice.verify), and
 *	  re-copy what differs (sluice.repair).
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
 *	  The family.  This file owns the exact position (steps 1 to 3), the
 *	  SQL entry points and recording the results: a verification row per
 *	  table and a verification event, or for sluice.repair a run of kind
 *	  repair (a version) with its rows per table.  verify_compare.c compares
 *	  one table at that position (hashing, buckets, bisection, the leaf
 *	  merge); repair.c re-copies the keys it finds differing; they share
 *	  verify_internal.h.  This file never reads a datamart or source table's
 *	  rows itself.  Rejected: the three in one file (over 1,500 lines of
 *	  three concerns), and repair as a second pass after the verification
 *	  (it would need the differing keys kept, unbounded, or a second
 *	  comparison; instead the comparison hands each key over as it finds it).
 *
 *	  Roles: the caller must be allowed to operate the pipeline; the
 *	  source's connection string is read as the extension owner; the
 *	  datamart tables are read as the pipeline's owner in a
 *	  security-restricted operation (a policy or a function in a view of
 *	  the owner's never runs with a superuser caller's rights); the results
 *	  are written as the extension owner (security.c).
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/verify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "verify_internal.h"

PG_FUNCTION_INFO_V1(sluice_verify);
PG_FUNCTION_INFO_V1(sluice_repair);

#define VERIFY_ATTEMPTS		3		/* slots created when refreshes race */

static void verify_position(const char *name, SluicePipeline **pipep,
							XLogRecPtr *at, SluiceConn **snapp);
static bool verify_catch_up(SluicePipeline *pipe, XLogRecPtr at, TimestampTz started);
static void verify_check_backlog(SluicePipeline *pipe, XLogRecPtr from, XLogRecPtr at);

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

	/* what a drain moved into the spool is not applied either (spool.c) */
	if (spool_pending(pipe))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" is paused with changes it has not applied", pipe->name),
				 errdetail("It paused because: %s. Its spool holds the changes drained from its slot since (sluice.spool).",
						   pipe->paused_reason),
				 errhint("Fix the cause, call sluice.resume('%s') and sluice.refresh('%s'), then verify again.",
						 pipe->name, pipe->name)));
	snprintf(frombuf, sizeof(frombuf), "%X/%X", LSN_FORMAT_ARGS(from));
	snprintf(atbuf, sizeof(atbuf), "%X/%X", LSN_FORMAT_ARGS(at));
	params[0] = pipe->slot_name;
	res = transport_exec(sc, "SELECT confirmed_flush_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
						 1, params, PGRES_TUPLES_OK, "describe the replication slot");
	if (PQntuples(res) == 0)
		refresh_slot_gone(pipe);
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
	StringInfoData tablejson;
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
	catalog_require_postgres(pipe, verb);
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
			repair_prepare(vt, pipe, snap);
		/* the datamart's tables are read and written as their owner */
		sluice_become_owner(pipe, &save);
		verify_compare(vt, snap, &th, max_keys);
		sluice_restore_user(&save);
		results = lappend(results, vt);
	}
	AtEOXact_GUC(true, nestlevel);
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

				if (vt->rows_deleted + vt->rows_inserted > 0)
				{
					catalog_insert_run_table(run_id, vt->t->target_schema, vt->t->target_table,
											 vt->rows_inserted, 0, vt->rows_deleted);
					model_after_write(vt->t->target_schema, vt->t->target_table);
				}
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
	initStringInfo(&tablejson);
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

		if (tablejson.len > 0)
			appendStringInfoString(&tablejson, ", ");
		sluice_json_begin(&tablejson);
		sluice_json_raw(&tablejson, "verification_id", psprintf(INT64_FORMAT, id));
		sluice_json_string(&tablejson, "table", psprintf("%s.%s", vt->t->target_schema, vt->t->target_table));
		sluice_json_raw(&tablejson, "rows_compared", psprintf(INT64_FORMAT, Max(vt->rows_live, vt->rows_mart)));
		sluice_json_raw(&tablejson, "differences", psprintf(INT64_FORMAT, vt->differences));
		sluice_json_end(&tablejson);

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
	initStringInfo(&ev);
	sluice_json_begin(&ev);
	sluice_json_string(&ev, "at_lsn", atbuf);
	sluice_json_raw(&ev, "tables", psprintf("[%s]", tablejson.data));
	sluice_json_raw(&ev, "differences", psprintf(INT64_FORMAT, total_diff));
	sluice_json_string(&ev, "summary", psprintf("verified %d table(s) at %s: " INT64_FORMAT " difference(s)",
												 list_length(results), atbuf, total_diff));
	sluice_json_end(&ev);
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
