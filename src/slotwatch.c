/*-------------------------------------------------------------------------
 *
 * slotwatch.c
 *	  What a pipeline's slot keeps on live: the heartbeat that moves a quiet
 *	  pipeline's slot, the move right after a commit, and the slot_lag event.
 *
 * NOTES
 *	  What this file owns.  Three things that keep live's disk safe.
 *
 *	  The heartbeat.  A pipeline whose published tables are quiet on a busy
 *	  live server decodes nothing: its batches write nothing, so their commit
 *	  carries no replication origin progress (PostgreSQL writes no commit
 *	  record for a transaction without an xid), and the slot, moved only to
 *	  the origin's durable progress, kept every byte of WAL live wrote since
 *	  the last change of ours.  When a batch decoded its whole range and got
 *	  no message at all, the datamart lacks nothing up to the batch's end, so
 *	  the slot is moved there at once (slotwatch_heartbeat), at most every
 *	  pg_sluice.heartbeat_interval.  Only when the batch started from the
 *	  origin's durable progress: a second refresh in one transaction starts
 *	  from a position not committed yet.
 *
 *	  The move after a commit.  slotwatch_advance flushes this server's WAL
 *	  (the commit that recorded a position may be asynchronous) and then
 *	  tells live the position: the worker calls it right after it committed a
 *	  drain (spool.c), instead of waiting for the next one.  sluice.refresh()
 *	  cannot: it returns before its caller commits.  It asks for a move
 *	  (slotwatch_move_after_commit) when its batch applied something; once
 *	  the transaction committed, a short-lived background worker (the slot
 *	  mover) reads the replication origin's durable progress and moves the
 *	  slot there, under the pipeline's row lock (when it is free: a refresh
 *	  or drain holding it moves the slot itself), so a 1.45 GB backlog is
 *	  freed on live right after the run, not at the next one.  A refresh
 *	  over the walsender asks too: it confirms its end at the commit, but
 *	  the walsender moves the slot's restart position only to the one
 *	  candidate it holds (744 MB behind after a 1,000,000-row update), so
 *	  the mover advances a slot confirmed where it is as well (advance_slot
 *	  with restart_too), decoding that part again without output.  After a
 *	  refresh over the SQL interface it advances twice: the advance that
 *	  confirms leaves the restart position where the first candidate was
 *	  (core keeps one while it decodes), the second takes them all.  Registering a
 *	  worker neither waits nor fails the commit: with no free worker slot
 *	  the slot moves at the next refresh, as before.
 *
 *	  slot_lag.  slotwatch_lag compares the WAL the slot keeps (live's flush
 *	  position minus the slot's restart_lsn) with pg_sluice.max_retained_wal.
 *	  The event and a WARNING go out once when it crosses over, and again only
 *	  after it went back under: the crossing is remembered in
 *	  sluice._slot_state, so scheduled, paused and continuous pipelines all
 *	  get one event per crossing, not one per batch or per five minutes.
 *	  A crossing is written at once; a worker writes an unchanged look at
 *	  most once a second per pipeline: a write per batch left, under load
 *	  and while any transaction held the xmin horizon, a chain of dead
 *	  versions of the one row that every batch's read walked.
 *
 *	  What it never does.  Write on live (pg_logical_emit_message would make a
 *	  quiet slot move too, but it is a write on live at every heartbeat), or
 *	  move a slot past a position this datamart has not durably committed or
 *	  does not need.
 *
 *	  Rejected.  Advancing a quiet slot from every idle poll: the advance
 *	  decodes on live from the slot's restart_lsn, so it is paid at most once
 *	  per heartbeat_interval.  Moving the slot from the commit callback
 *	  itself: interrupts are held there, so the wait on live could not be
 *	  interrupted, and an error after the commit cannot be reported.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/slotwatch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog_internal.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"

int			sluice_heartbeat_interval = 10000;	/* ms */

static int	heartbeat_pipeline = 0;
static TimestampTz heartbeat_at = 0;

/*
 * When a worker last wrote its look at a pipeline's slot down, per pipeline
 * (a worker may serve several): it writes it at most every LAG_RECORD_MS
 * while nothing changes, not at every batch.
 */
#define LAG_RECORD_MS 1000
typedef struct LagLook
{
	int			pipeline_id;	/* hash key */
	TimestampTz recorded_at;
} LagLook;
static HTAB *lag_looks = NULL;

/* pipelines whose slot moves once this transaction committed */
static List *moves = NIL;
static bool moves_callback = false;

PGDLLEXPORT void sluice_slot_mover_main(Datum arg);

void
slotwatch_init(void)
{
	DefineCustomIntVariable("pg_sluice.heartbeat_interval",
							"Sets how often the slot of a pipeline whose tables are quiet is moved on live.",
							"A batch that decoded nothing for the pipeline moves its slot to the batch's end, "
							"at most this often, so live frees the WAL other tables write. 0 turns it off.",
							&sluice_heartbeat_interval,
							10000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/*
 * The end of the WAL inserted so far, as XLogFlush takes it.  The insert
 * position sits past the header of a page no record has reached yet when
 * the last record ended at a page boundary; asking XLogFlush for that fails
 * ("xlog flush request ... is not satisfied"), so the page's start it is.
 */
static XLogRecPtr
inserted_end(void)
{
	XLogRecPtr	p = GetXLogInsertRecPtr();

	if (XLogSegmentOffset(p, wal_segment_size) == SizeOfXLogLongPHD)
		return p - SizeOfXLogLongPHD;
	if (p % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return p - SizeOfXLogShortPHD;
	return p;
}

/*
 * Advance the slot to lsn, when it is confirmed before lsn, or with
 * restart_too also when it is confirmed there already but its restart
 * position is behind (the move after a walsender refresh, see
 * sluice_slot_mover_main): the advance decodes from the restart position
 * without output and moves it.
 */
static void
advance_slot(SluicePipeline *pipe, SluiceConn *sc, XLogRecPtr lsn, bool restart_too)
{
	const char *params[2];
	char		lsnbuf[32];

	/* the position was committed here: make sure it is on disk */
	XLogFlush(inserted_end());
	snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(lsn));
	params[0] = pipe->slot_name;
	params[1] = lsnbuf;
	PQclear(transport_exec(sc, restart_too ?
						   "SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn) "
						   "  FROM pg_catalog.pg_replication_slots "
						   " WHERE slot_name = $1 AND confirmed_flush_lsn <= $2::pg_lsn "
						   "   AND restart_lsn < $2::pg_lsn AND active_pid IS NULL" :
						   "SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn) "
						   "  FROM pg_catalog.pg_replication_slots "
						   " WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn AND active_pid IS NULL",
						   2, params, PGRES_TUPLES_OK, "advance the replication slot"));
}

/*
 * Tell live the slot may forget everything before lsn, which this datamart
 * has durably (its commit flushed here first).  The caller holds the
 * pipeline's row lock; sc is idle.
 */
void
slotwatch_advance(SluicePipeline *pipe, SluiceConn *sc, XLogRecPtr lsn)
{
	advance_slot(pipe, sc, lsn, false);
}

/*
 * A batch decoded everything up to lsn and got no message: the slot may
 * move there now (see the NOTES), at most every heartbeat_interval.
 */
void
slotwatch_heartbeat(SluicePipeline *pipe, SluiceConn *sc, XLogRecPtr lsn)
{
	TimestampTz now = GetCurrentTimestamp();

	if (sluice_heartbeat_interval <= 0)
		return;
	if (heartbeat_pipeline == pipe->pipeline_id &&
		!TimestampDifferenceExceeds(heartbeat_at, now, sluice_heartbeat_interval))
		return;
	slotwatch_advance(pipe, sc, lsn);
	heartbeat_pipeline = pipe->pipeline_id;
	heartbeat_at = now;
	ereport(DEBUG1,
			(errmsg_internal("pipeline \"%s\": heartbeat moved slot \"%s\" to %X/%X",
							 pipe->name, pipe->slot_name, LSN_FORMAT_ARGS(lsn))));
}

/*
 * The WAL the slot keeps on live (source_lsn - restart_lsn) against
 * pg_sluice.max_retained_wal: a slot_lag event and a WARNING when it
 * crosses over, nothing while it stays over, and the state cleared when it
 * goes back under.  With record, the look is written down too (what
 * sluice.spool shows); without, the caller's transaction is written to only
 * when the state changes.  The caller is connected to SPI.
 */
void
slotwatch_lag(SluicePipeline *pipe, XLogRecPtr source_lsn, XLogRecPtr restart_lsn,
			  bool record)
{
	Oid			types[4] = {INT4OID, BOOLOID, LSNOID, LSNOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		was_over = false;
	bool		over;
	uint64		retained;
	bool		isnull;

	if (XLogRecPtrIsInvalid(source_lsn) || XLogRecPtrIsInvalid(restart_lsn))
		return;
	retained = source_lsn > restart_lsn ? source_lsn - restart_lsn : 0;
	over = sluice_max_retained_wal > 0 &&
		retained / (1024 * 1024) > (uint64) sluice_max_retained_wal;

	args[0] = Int32GetDatum(pipe->pipeline_id);
	/* not read-only: see a look this transaction already recorded (a worker's batch looks twice) */
	if (sluice_catalog_exec("SELECT lag_over FROM sluice._slot_state WHERE pipeline_id = $1",
							1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the slot's state");
	if (SPI_processed > 0)
		was_over = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	if (over == was_over && !record)
		return;
	if (IsBackgroundWorker)
	{
		TimestampTz now = GetCurrentTimestamp();
		LagLook    *look;
		bool		found;

		if (lag_looks == NULL)
		{
			HASHCTL		ctl;

			memset(&ctl, 0, sizeof(ctl));
			ctl.keysize = sizeof(int);
			ctl.entrysize = sizeof(LagLook);
			lag_looks = hash_create("pg_sluice slot looks", 16, &ctl, HASH_ELEM | HASH_BLOBS);
		}
		look = hash_search(lag_looks, &pipe->pipeline_id, HASH_ENTER, &found);
		/* a crossing is always written; the same state again only now and then */
		if (found && over == was_over &&
			!TimestampDifferenceExceeds(look->recorded_at, now, LAG_RECORD_MS))
			return;
		look->recorded_at = now;
	}
	args[1] = BoolGetDatum(over);
	args[2] = LSNGetDatum(source_lsn);
	args[3] = LSNGetDatum(restart_lsn);
	if (sluice_catalog_exec("INSERT INTO sluice._slot_state AS s (pipeline_id, lag_over, source_lsn, restart_lsn, measured_at) "
							"VALUES ($1, $2, $3, $4, pg_catalog.now()) "
							"ON CONFLICT (pipeline_id) DO UPDATE SET lag_over = $2, source_lsn = $3, "
							"       restart_lsn = $4, measured_at = pg_catalog.now()",
							4, types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the slot's state");

	if (over && !was_over)
	{
		StringInfoData j;
		char	   *summary = psprintf("slot %s keeps %llu MB of WAL on the source", pipe->slot_name,
									   (unsigned long long) (retained / (1024 * 1024)));

		initStringInfo(&j);
		sluice_json_begin(&j);
		sluice_json_string(&j, "slot", pipe->slot_name);
		sluice_json_raw(&j, "retained_bytes", psprintf(UINT64_FORMAT, retained));
		sluice_json_string(&j, "summary", summary);
		sluice_json_end(&j);
		outbox_emit(pipe->name, "slot_lag", j.data);
		ereport(WARNING,
				(errmsg("replication slot \"%s\" keeps %llu MB of WAL on source \"%s\"",
						pipe->slot_name, (unsigned long long) (retained / (1024 * 1024)),
						pipe->source_name),
				 errdetail("pg_sluice.max_retained_wal is %d MB.", sluice_max_retained_wal),
				 errhint("A long transaction on the source, or a pipeline that falls behind, holds WAL; sluice.status shows the lag, and sluice.drain() moves a paused pipeline's slot.")));
	}
}

/*
 * At commit, start a slot mover for each pipeline that asked; at abort,
 * forget them.  Nothing here waits or raises.
 */
static void
slotwatch_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		foreach(lc, moves)
		{
			BackgroundWorker bgw;
			BackgroundWorkerHandle *handle;

			memset(&bgw, 0, sizeof(bgw));
			bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
			bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
			bgw.bgw_restart_time = BGW_NEVER_RESTART;
			snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_sluice");
			snprintf(bgw.bgw_function_name, BGW_MAXLEN, "sluice_slot_mover_main");
			snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_sluice slot mover");
			snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_sluice slot mover");
			bgw.bgw_main_arg = Int32GetDatum(lfirst_int(lc));
			memcpy(bgw.bgw_extra, &MyDatabaseId, sizeof(Oid));
			bgw.bgw_notify_pid = 0;
			if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
				ereport(DEBUG1,
						(errmsg_internal("no free worker slot to move the slot of pipeline %d", lfirst_int(lc))));
		}
	}
	list_free(moves);
	moves = NIL;
}

/*
 * sluice.refresh() applied something: once its transaction commits, move
 * the pipeline's slot to what the datamart durably has (see the NOTES).
 */
void
slotwatch_move_after_commit(SluicePipeline *pipe)
{
	MemoryContext old;

	if (!moves_callback)
	{
		RegisterXactCallback(slotwatch_xact_callback, NULL);
		moves_callback = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	moves = list_append_unique_int(moves, pipe->pipeline_id);
	MemoryContextSwitchTo(old);
}

/* The slot mover: a background worker started by the commit above. */
void
sluice_slot_mover_main(Datum arg)
{
	int			pipeline_id = DatumGetInt32(arg);
	Oid			dboid;
	SluicePipeline *pipe;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	sluice_fix_search_path();
	pgstat_report_appname("pg_sluice slot mover");

	worker_xact_begin();

	/*
	 * The row lock: no refresh, drain or drop of the pipeline uses the slot
	 * meanwhile.  Never waited for: whoever holds it moves the slot itself.
	 */
	{
		Oid			ltypes[1] = {INT4OID};
		Datum		largs[1] = {Int32GetDatum(pipeline_id)};

		if (sluice_catalog_exec("SELECT 1 FROM sluice._pipeline WHERE pipeline_id = $1 FOR UPDATE SKIP LOCKED",
								1, ltypes, largs, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not lock the pipeline");
		pipe = SPI_processed == 1 ? catalog_pipeline_by_id(pipeline_id, false) : NULL;
	}
	if (pipe != NULL && !pipe->continuous)
	{
		XLogRecPtr	lsn = origin_progress(pipe->origin_name, true);

		if (!XLogRecPtrIsInvalid(lsn))
		{
			SluiceConn *sc = transport_connect(pipe->source_name, pipe->conninfo, false);
			const char *params[2];
			char		lsnbuf[32];
			PGresult   *res;
			bool		behind;

			snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(lsn));
			params[0] = pipe->slot_name;
			params[1] = lsnbuf;
			res = transport_exec(sc, "SELECT confirmed_flush_lsn < $2::pg_lsn FROM pg_catalog.pg_replication_slots "
								 " WHERE slot_name = $1",
								 2, params, PGRES_TUPLES_OK, "look at the replication slot");
			behind = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
			PQclear(res);

			/*
			 * Also when the slot is confirmed there already: a refresh over
			 * the walsender confirms at its commit, but the walsender moved
			 * the slot's restart position only as far as the one candidate
			 * it held; the advance decodes the rest, without output, so the
			 * next refresh need not.  An advance that confirms (after a
			 * refresh over the SQL interface) is in the same case: core
			 * keeps one candidate restart position while it decodes, and
			 * takes it when it confirms at the end, so the restart position
			 * stays at the backlog's start; a second advance, to the
			 * position now confirmed, takes each candidate as it passes.
			 * Candidates are where live logged its running transactions
			 * (every 15 s while it writes, and at checkpoints): with none
			 * between the backlog's last commit and the refresh's end, the
			 * restart position cannot pass that transaction, and the next
			 * refresh decodes it again (bench/slot_move.pl).
			 */
			advance_slot(pipe, sc, lsn, true);
			if (behind)
				advance_slot(pipe, sc, lsn, true);
			transport_close(sc);
			ereport(DEBUG1,
					(errmsg_internal("pipeline \"%s\": slot \"%s\" moved to %X/%X after the refresh's commit",
									 pipe->name, pipe->slot_name, LSN_FORMAT_ARGS(lsn))));
		}
	}
	worker_xact_commit();
	proc_exit(0);
}
