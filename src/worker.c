/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Continuous mode: the background worker of one running pipeline (or of
 *	  a database's notifier), started by the launcher (launcher.c).
 *
 * NOTES
 *	  What this file owns.  A pipeline worker loops over batches, one local
 *	  transaction each: over the walsender transport (walstream.c, the
 *	  default, pg_sluice.worker_transport) it keeps one replication
 *	  connection open, applies what has arrived (refresh_pipeline_ws), and
 *	  when caught up waits on that connection's socket, so a source commit
 *	  wakes it at once; after each commit it tells the stream the local
 *	  commit's end, and the stream reports the source position to the slot
 *	  once that end is on disk (batches commit asynchronously, as a
 *	  subscription's do).  Over the SQL transport it calls refresh_pipeline()
 *	  and naps pg_sluice.naptime when caught up.  Either way one batch is
 *	  one local transaction, holding the pipeline's row
 *	  lock for the batch: a manual sluice.refresh() refuses continuous
 *	  pipelines, and sluice.stop() signals the worker before it touches the
 *	  row, so both exclude each other without waiting on a long batch.  An
 *	  error in a batch rolls it back (the replication origin, hence the slot,
 *	  does not move), is recorded in the catalog and the runs log, and the
 *	  batch is retried after a backoff.  (A stream opened again after a
 *	  failure has delivered nothing at first: a batch that applied nothing
 *	  ends the run of failures only once the stream came past where the
 *	  failed batch was, WorkerSlot.failed_at.)  Between batches it reports to its
 *	  shared slot what sluice.status shows (lag, rows per second, last error)
 *	  and warns when the slot holds too much WAL on the source.  A paused
 *	  pipeline's worker, or one whose batches keep failing, drains the slot
 *	  into the spool (spool.c) and moves the slot right after each drain's
 *	  commit (slotwatch.c), so a pause never fills live's disk.  The slot of a
 *	  database's notifier (NOTIFIER_ID) runs notify.c's loop instead.
 *
 *	  What it never does.  Decide whether it should run (the launcher does;
 *	  the worker only asks, worker_still_wanted) or read the source other than
 *	  through refresh.c and walstream.c, but for one look every 5 s at the
 *	  slot's restart_lsn over a normal connection (a walsender does not send
 *	  it; sluice.status shows the WAL the slot keeps).
 *
 *	  Rejected.  Exiting on an error and letting the launcher restart the
 *	  process: the connection to the source and the rate window would be lost
 *	  at every failed batch, for the same backoff.  Polling the walsender on
 *	  a timer: the lag would be the timer's.  A batch per source
 *	  transaction: a batch takes what has arrived, so under load it holds
 *	  many and costs one commit and one run row for all of them.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include <signal.h>
#include <unistd.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "catalog/pg_authid.h"
#include "utils/syscache.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"
#include "worker_internal.h"

PGDLLEXPORT void sluice_worker_main(Datum arg);

static int	my_slot = -1;
static SluiceConn *worker_conn = NULL;	/* kept across batches */
static WalStream *worker_ws = NULL; /* walsender transport, kept across
									 * batches */
static TimestampTz slot_checked_at = 0; /* walsender transport: last look at
										 * the slot's restart_lsn */
static XLogRecPtr slot_restart = InvalidXLogRecPtr;
static TimestampTz window_start = 0;	/* rows per second window */
static int64 window_rows = 0;

/*
 * Start a transaction of a background worker's own, with SPI and a
 * snapshot: the launcher's resume worker, the pipeline workers and the
 * notifier run every step of theirs in one.
 */
void
worker_xact_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

/* Commit what worker_xact_begin started. */
void
worker_xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static void
worker_detach(int code, Datum arg)
{
	WorkerSlot *s = &sluice_shared->slots[DatumGetInt32(arg)];

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	if (s->pid == MyProcPid)
		s->pid = 0;
	LWLockRelease(sluice_shared->lock);
	if (sluice_shared->launcher_latch)
		SetLatch(sluice_shared->launcher_latch);
}

/* Does the launcher still want this worker to run? */
bool
worker_still_wanted(void)
{
	bool		w;

	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	w = sluice_shared->slots[my_slot].in_use && sluice_shared->slots[my_slot].wanted;
	LWLockRelease(sluice_shared->lock);
	return w;
}

/*
 * A paused pipeline's turn, in the transaction worker_batch began: its
 * slot's changes go to the spool (spool.c), and once that is committed the
 * slot is moved on live at once (slotwatch.c).
 */
static void
worker_drain(SluicePipeline *pipe)
{
	SpoolResult sr;
	XLogRecPtr	moved_to = InvalidXLogRecPtr;

	pgstat_report_activity(STATE_RUNNING, "pg_sluice: draining a paused pipeline's slot");
	/* the drain reads the slot over SQL: the walsender must let it go */
	if (worker_ws != NULL)
	{
		walstream_close(worker_ws, true);
		worker_ws = NULL;
	}
	if (worker_conn == NULL)
	{
		worker_conn = transport_connect(pipe->source_name, pipe->conninfo, false);
		worker_conn->persistent = true;
		worker_conn->owner_ref = &worker_conn;
	}
	spool_drain(pipe, worker_conn, &sr);
	if (sr.conn_closed)
		worker_conn = NULL;
	moved_to = sr.drained_upto;	/* (slotwatch_advance never moves it back) */
	worker_xact_commit();
	if (!XLogRecPtrIsInvalid(moved_to))
	{
		worker_xact_begin();
		if (worker_conn == NULL)
		{
			worker_conn = transport_connect(pipe->source_name, pipe->conninfo, false);
			worker_conn->persistent = true;
			worker_conn->owner_ref = &worker_conn;
		}
		slotwatch_advance(pipe, worker_conn, moved_to);
		worker_xact_commit();
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * A worker whose batches keep failing (not a pause: an error it retries)
 * keeps the slot where it was too: from the SPOOL_AFTER_FAILURES-th failure
 * in a row, it drains between its attempts.  The next batch that succeeds
 * applies the spool first.  Errors here are logged and left for the next
 * attempt.
 */
#define SPOOL_AFTER_FAILURES 3

static void
worker_drain_failing(int pipeline_id)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		SluicePipeline *pipe;

		worker_xact_begin();
		pipe = catalog_pipeline_by_id(pipeline_id, true);
		if (pipe != NULL && pipe->continuous && pipe->paused_reason == NULL)
			worker_drain(pipe);
		else
			worker_xact_commit();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		worker_conn = NULL;		/* closed by the abort */
	}
	PG_END_TRY();
}

/*
 * One batch in its own transaction.  Returns true when caught up (the
 * caller naps), sets *done when the pipeline no longer streams.
 */
static bool
worker_batch(int pipeline_id, bool *done)
{
	WorkerSlot *s = &sluice_shared->slots[my_slot];
	SluicePipeline *pipe;
	RefreshResult r;
	TimestampTz started;
	bool		had_error;
	bool		streak_over;
	bool		recorded;
	int64		rows;

	worker_xact_begin();
	pgstat_report_activity(STATE_RUNNING, "pg_sluice: applying a batch");
	started = GetCurrentTimestamp();

	pipe = catalog_pipeline_by_id(pipeline_id, true);
	if (pipe == NULL || !pipe->continuous)
	{
		LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
		s->wanted = false;
		LWLockRelease(sluice_shared->lock);
		worker_xact_commit();
		*done = true;
		return false;
	}
	/* the role that started the worker must still be allowed to */
	sluice_check_operator(pipe, "stream");

	if (pipe->paused_reason)
	{
		/* paused: wait for sluice.resume(), draining the slot meanwhile */
		worker_xact_commit();
		/* the slot must be free for the drain; resume starts from the origin */
		if (worker_ws != NULL)
		{
			walstream_close(worker_ws, true);
			worker_ws = NULL;
		}
		worker_xact_begin();
		pipe = catalog_pipeline_by_id(pipeline_id, true);
		if (pipe != NULL && pipe->paused_reason != NULL)
			worker_drain(pipe);
		else
			worker_xact_commit();
		return true;
	}

	if (worker_conn == NULL)
	{
		worker_conn = transport_connect(pipe->source_name, pipe->conninfo, false);
		worker_conn->persistent = true;
		worker_conn->owner_ref = &worker_conn;
	}
	/*
	 * What a drain spooled while the pipeline was paused or failing goes
	 * first, through the SQL transport's batch (refresh_inner applies the
	 * spool, then the slot): the slot's confirmed position is past it, so a
	 * walsender started from the origin would begin after it.
	 */
	if (sluice_worker_transport == SLUICE_TRANSPORT_WALSENDER && !spool_pending(pipe))
	{
		bool		binary = apply_use_binary(pipe);

		if (worker_ws != NULL && worker_ws->binary != binary)
		{
			walstream_close(worker_ws, true);
			worker_ws = NULL;
		}
		if (worker_ws == NULL)
			worker_ws = walstream_open(pipe, origin_progress(pipe->origin_name, false), binary);
		refresh_pipeline_ws(pipe, worker_ws, sluice_batch_size, sluice_batch_time, &r);
		if (r.conn_closed)
		{
			/* paused: what the stream delivered rolled back */
			walstream_close(worker_ws, true);
			worker_ws = NULL;
		}

		/* the WAL the slot keeps, looked at every few seconds */
		if (TimestampDifferenceExceeds(slot_checked_at, GetCurrentTimestamp(), 5000))
		{
			const char *params[1] = {pipe->slot_name};
			PGresult   *res = transport_exec(worker_conn,
											 "SELECT restart_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
											 1, params, PGRES_TUPLES_OK, "describe the replication slot");

			if (PQntuples(res) == 0)
				refresh_slot_gone(pipe);
			slot_restart = PQgetisnull(res, 0, 0) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(res, 0, 0));
			PQclear(res);
			slot_checked_at = GetCurrentTimestamp();
		}
		r.slot_restart_lsn = slot_restart;
	}
	else
	{
		if (worker_ws != NULL)
		{
			walstream_close(worker_ws, true);
			worker_ws = NULL;
		}
		refresh_pipeline(pipe, worker_conn, sluice_batch_size, sluice_batch_time, &r);
		if (r.conn_closed)
			worker_conn = NULL; /* abandoned mid-stream */
	}

	rows = r.stats.inserted + r.stats.updated + r.stats.deleted;
	/* idle polls leave no run */
	recorded = r.stats.transactions > 0 || r.paused || TransactionIdIsValid(r.stats.skipped_xid);
	if (recorded)
		(void) refresh_record_run(pipe, "stream", started, &r);

	/*
	 * Does this batch end a run of failures?  An SQL batch decoded up to
	 * live's flush position, so yes.  A stream opened again after a failure
	 * starts with nothing arrived yet: a batch that applied nothing proves
	 * nothing until the stream has come past where the failed one was, or
	 * the failing transaction would never count more than one failure (and
	 * the drain after SPOOL_AFTER_FAILURES would never start).
	 */
	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	had_error = s->in_error;
	streak_over = !(had_error && worker_ws != NULL && r.stats.transactions == 0 && !r.paused &&
					worker_ws->received <= s->failed_at);
	LWLockRelease(sluice_shared->lock);
	if (had_error && streak_over)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(pipeline_id)};

		if (sluice_catalog_exec("UPDATE sluice._pipeline SET last_error = NULL, last_error_at = NULL "
								  " WHERE pipeline_id = $1", 1, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not clear the pipeline's error");
	}

	/* guard the source: a slot_lag event when the WAL kept crosses the limit (a run looked already) */
	if (!recorded)
		slotwatch_lag(pipe, r.source_flush_lsn, r.slot_restart_lsn, false);
	worker_xact_commit();
	if (worker_ws != NULL)
	{
		/* reported to the source once this commit is on disk */
		if (r.end_lsn > r.start_lsn)
			walstream_committed(worker_ws, XactLastCommitEnd, r.end_lsn);
		worker_ws->in_batch = false;
		walstream_feedback(worker_ws, false);
	}
	/* table statistics, for autovacuum (at most once a second) */
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	/* what the status view shows */
	{
		TimestampTz now = GetCurrentTimestamp();

		window_rows += rows;
		LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
		if (streak_over)
		{
			s->failures = 0;
			s->in_error = false;
			s->retry_at = 0;
			s->failed_at = InvalidXLogRecPtr;
		}
		s->measured_at = now;
		s->source_flush_lsn = r.source_flush_lsn;
		/* caught up with the walsender: consistent with all it sent */
		s->applied_lsn = (worker_ws != NULL && r.complete) ? r.source_flush_lsn : r.end_lsn;
		s->slot_restart_lsn = r.slot_restart_lsn;
		if (r.stats.last_commit_time != 0)
			s->last_source_commit = r.stats.last_commit_time;
		if (rows > 0)
			s->last_batch_at = now;
		s->rows_applied += rows;
		if (TimestampDifferenceExceeds(window_start, now, 5000))
		{
			long		secs;
			int			usecs;
			double		elapsed;

			TimestampDifference(window_start, now, &secs, &usecs);
			elapsed = secs + usecs / 1e6;
			s->rows_per_sec = elapsed > 0 ? window_rows / elapsed : 0;
			window_start = now;
			window_rows = 0;
		}
		LWLockRelease(sluice_shared->lock);
	}

	return r.complete;
}

/* Record a failed batch: in the catalog (survives restarts) and the runs log. */
static void
record_failure(int pipeline_id, TimestampTz started, const char *message)
{
	Oid			types[3] = {INT4OID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[3];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(message);
	args[2] = TimestampTzGetDatum(started);
	worker_xact_begin();
	if (sluice_catalog_exec("UPDATE sluice._pipeline SET last_error = $2, last_error_at = now() "
							  " WHERE pipeline_id = $1", 3, types, args, NULL, false, 0) != SPI_OK_UPDATE ||
		sluice_catalog_exec("INSERT INTO sluice._run (pipeline_id, kind, status, started_at, finished_at, error) "
							  "SELECT $1, 'stream', 'failed', $3, pg_catalog.clock_timestamp(), $2 "
							  "  FROM sluice._pipeline WHERE pipeline_id = $1",
							  3, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the failed batch");
	/* (as the extension owner: destinations hold secrets; see notify.c) */
	if (sluice_catalog_exec("SELECT sluice._emit_run(max(run_id), 0) FROM sluice._run WHERE pipeline_id = $1",
							1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not queue the failure's events");
	worker_xact_commit();
}

void
sluice_worker_main(Datum arg)
{
	WorkerSlot *s;
	Oid			dboid;
	Oid			roleoid;
	int			pipeline_id;
	MemoryContext worker_cxt;

	my_slot = DatumGetInt32(arg);
	s = &sluice_shared->slots[my_slot];
	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	if (!s->in_use || !s->wanted)
	{
		LWLockRelease(sluice_shared->lock);
		proc_exit(0);
	}
	s->pid = MyProcPid;
	s->started_at = GetCurrentTimestamp();
	s->rows_per_sec = 0;
	dboid = s->dboid;
	roleoid = s->roleoid;
	pipeline_id = s->pipeline_id;
	LWLockRelease(sluice_shared->lock);
	before_shmem_exit(worker_detach, Int32GetDatum(my_slot));

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, roleoid, 0);
	sluice_fix_search_path();
	pgstat_report_appname("pg_sluice worker");

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice worker",
									   ALLOCSET_DEFAULT_SIZES);
	window_start = GetCurrentTimestamp();

	if (pipeline_id == NOTIFIER_ID)
	{
		notifier_main(worker_cxt);
		proc_exit(0);
	}

	/*
	 * Batches commit asynchronously, as a subscription's apply worker does:
	 * the slot is only told positions whose commit is on disk (walstream.c
	 * waits for the flush; the SQL transport flushes the origin's position
	 * before it advances the slot), so a batch a crash loses comes again.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	for (;;)
	{
		volatile bool done = false;
		volatile bool idle = false;
		volatile bool waited = false;
		ErrorData  *volatile edata = NULL;
		TimestampTz started = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!worker_still_wanted())
			break;

		MemoryContextSwitchTo(worker_cxt);
		PG_TRY();
		{
			bool		d = false;

			idle = worker_batch(pipeline_id, &d);
			done = d;
			if (idle && !done && worker_ws != NULL)
			{
				/* caught up: wait on the socket, not on a timer */
				(void) walstream_wait(worker_ws);
				waited = true;
			}
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(worker_cxt);
			edata = CopyErrorData();
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			/* an abort closed them; an error between batches did not */
			if (worker_conn != NULL)
				transport_close(worker_conn);
			worker_conn = NULL;
			if (worker_ws != NULL)
			{
				LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
				s->failed_at = Max(s->failed_at, worker_ws->received);
				LWLockRelease(sluice_shared->lock);
				walstream_close(worker_ws, false);
			}
			worker_ws = NULL;
		}
		PG_END_TRY();

		if (edata != NULL)
		{
			const char *msg = edata->message ? edata->message : "unknown error";
			int			failures;
			long		wait;

			pgstat_report_activity(STATE_IDLE, NULL);
			LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
			failures = ++s->failures;
			s->in_error = true;
			strlcpy(s->last_error, msg, ERROR_LEN);
			s->last_error_at = GetCurrentTimestamp();
			wait = launcher_backoff_ms(failures);
			s->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait);
			s->retry_at = s->next_start;
			LWLockRelease(sluice_shared->lock);

			record_failure(pipeline_id, started, msg);
			if (failures >= SPOOL_AFTER_FAILURES)
				worker_drain_failing(pipeline_id);
			pgstat_report_stat(false);

			/* back off, waking for SIGTERM */
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		else if (done)
			break;
		else if (idle && !waited)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sluice_naptime, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		MemoryContextReset(worker_cxt);
	}
	if (worker_ws != NULL)
		walstream_close(worker_ws, true);
	if (worker_conn != NULL)
		transport_close(worker_conn);
	proc_exit(0);
}
