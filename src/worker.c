/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Continuous mode: the background worker of one running pipeline (or of
 *	  a database's notifier), started by the launcher (launcher.c).
 *
 * NOTES
 *	  What this file owns.  A worker of the pool (launcher.c assigns it
 *	  pipelines of one database and one role; or a database's notifier, then
 *	  notify.c's loop runs instead).  It keeps, per pipeline it serves, what
 *	  0.1 kept per process: the source connections, the rate window, the
 *	  backoff (a PipeRun).  Its loop: take the assignments from shared memory
 *	  (pool_sync), look without waiting at the streams whose socket woke it,
 *	  that just had a batch (libpq may hold what its last read took) or that
 *	  have a local flush to report, and at all of them once a second
 *	  (walstream_poll: keepalives answered, durable positions reported, a
 *	  change that arrived held), then give each pipeline that has work one
 *	  bounded batch, in turn (round robin from where the last pass stopped),
 *	  and when none has work wait on one WaitEventSet: the latch and the
 *	  socket of every stream, with a timeout for the earliest backoff end,
 *	  naptime (SQL transport) or flush check.  A source commit on any of
 *	  them wakes the worker at once.  The set is kept across waits and built
 *	  again only when its sockets change.  A pipeline whose batch caught up
 *	  may rest pg_sluice.batch_interval (0 by default): its socket is left
 *	  out of the wait, and what arrives meanwhile goes in its next batch.
 *	  With many pipelines each change tends to arrive alone and cost a whole
 *	  batch (bench scenario 10: 1.1 changes per batch); a 200 ms rest made
 *	  it 2.3 and halved the workers' CPU per change, for ~80 ms more lag at
 *	  p50.  A rest is never taken after a batch that stopped at
 *	  batch_size or batch_time (a backlog goes on at once).
 *
 *	  A batch is what 0.1's worker did, for one pipeline: one local
 *	  transaction; over the walsender transport (walstream.c) it applies
 *	  what has arrived (refresh_pipeline_ws), then tells the stream the
 *	  local commit's end, and the stream reports the source position to the
 *	  slot once that end is on disk (batches commit asynchronously, as a
 *	  subscription's do).  Over the SQL transport it calls refresh_pipeline()
 *	  and the pipeline naps pg_sluice.naptime when caught up.  The batch
 *	  holds the pipeline's row lock: a manual sluice.refresh() refuses
 *	  continuous pipelines, and sluice.stop() cancels the batch (SIGINT: a
 *	  query cancel, the other pipelines go on) before it touches the row.  An
 *	  error in a batch rolls it back (the replication origin, hence the slot,
 *	  does not move), is recorded in the catalog and the runs log, and that
 *	  pipeline alone backs off (1 s, 2 s, ... one minute, shown as
 *	  next_retry_at); the others go on.  (A stream opened again after a
 *	  failure has delivered nothing at first: a batch that applied nothing
 *	  ends the run of failures only once the stream came past where the
 *	  failed batch was, PipeRun.failed_at.)  The connections of the pipelines
 *	  not in the batch are parked (transport.c): an abort of the batch
 *	  leaves them open.  Each stream keeps its own streamed-transaction files
 *	  (streamfile_save/restore).  A paused pipeline, or one whose batches
 *	  keep failing, drains its slot into the spool (spool.c) and moves the
 *	  slot right after each drain's commit (slotwatch.c).
 *
 *	  Long batches.  A big source transaction is applied in one batch, however
 *	  long.  The launcher then moves this worker's other pipelines to other
 *	  workers; from inside the long apply (walstream's busy hook, every 1000
 *	  messages) this worker lets go of the streams of the pipelines no longer
 *	  assigned to it, so their new worker can open them.  It also answers the
 *	  walsender of the streams it keeps only between batches: a batch longer
 *	  than the source's wal_sender_timeout (60 s) on a worker whose other
 *	  pipelines have nowhere to go costs them a reconnect.
 *
 *	  Settings.  A worker connects as the bootstrap superuser and then takes
 *	  the session authorization of the role that started its pipelines
 *	  (SET SESSION AUTHORIZATION's own path): session_user, current_user
 *	  and pg_stat_activity show that role, as if it had logged in, but the
 *	  role's ALTER ROLE ... SET settings are never read.  Those belong to
 *	  the role, which an operator controls for itself and keeps after being
 *	  removed from the team (revoke_operator, REVOKE owner FROM it): with
 *	  default_transaction_read_only every batch failed, and TimeZone,
 *	  DateStyle, row_security, lock_timeout or a role to SET at connection
 *	  changed how the worker applies changes and what the owner's triggers
 *	  see.  What applies is what the datamart's administrators set: the
 *	  database's settings (ALTER DATABASE ... SET, its owner), every role's
 *	  (ALTER ROLE ALL, a superuser) and the bootstrap superuser's, then the
 *	  worker's own (search_path, synchronous_commit).  The copy workers
 *	  (copyworker.c) connect as the bootstrap superuser too and work as
 *	  the role that asked; the slot movers and the resume workers stay the
 *	  bootstrap superuser.  Rejected: resetting the
 *	  role's settings after a login as it (the values they replaced are
 *	  gone by then, and a role to SET at connection has already acted);
 *	  overriding a list of dangerous settings (any list misses one, and the
 *	  administrators' own choices would be overridden too).
 *
 *	  What it never does.  Decide what it serves (the launcher does; the
 *	  worker only follows pool_sync) or read the source other than through
 *	  refresh.c and walstream.c, but for one look every 5 s at the slot's
 *	  restart_lsn over a normal connection (a walsender does not send it;
 *	  sluice.status shows the WAL the slot keeps).  Serve a pipeline another
 *	  worker holds (WorkerSlot.holder).
 *
 *	  Rejected.  Exiting on an error and letting the launcher restart the
 *	  process: the other pipelines and the connections would be lost at
 *	  every failed batch.  Polling the walsenders on a timer: the lag would
 *	  be the timer's.  A batch per source transaction: a batch takes what
 *	  has arrived, so under load it holds many and costs one commit and one
 *	  run row for all of them.  Serving a pipeline until it is caught up
 *	  before the next: one busy pipeline would hold the others' lag.  A
 *	  thread per pipeline: a backend is single-threaded.  A new WaitEventSet
 *	  per wait and a read of every stream per pass (what the pool first
 *	  did): with 50 pipelines of 20 tables under 500 tps, epoll set-up and
 *	  reads that found nothing were a sixth of the workers' CPU.
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

/* What the worker keeps for one pipeline it serves. */
typedef struct PipeRun
{
	int			slot;			/* its slot in shared memory */
	int			pipeline_id;
	SluiceConn *conn;			/* normal connection, kept across batches */
	WalStream  *ws;				/* walsender transport, kept across batches */
	StreamFiles *files;			/* its streamed transactions, while not
								 * served */
	TimestampTz slot_checked_at;	/* last look at the slot's restart_lsn */
	XLogRecPtr	slot_restart;
	XLogRecPtr	slot_flush;		/* live's flush position at that look: a
								 * quiet stream's own position can stay far
								 * behind it (no keepalive while the worker
								 * keeps answering) */
	TimestampTz window_start;	/* rows per second window */
	int64		window_rows;
	TimestampTz due;			/* no stream open: next batch not before */
	TimestampTz retry_at;		/* backing off: not before */
	TimestampTz rest_until;		/* caught up, pg_sluice.batch_interval: its
								 * stream is not read before */
	int			failures;		/* batches failed in a row */
	XLogRecPtr	failed_at;		/* walsender transport: how far the stream
								 * had come when a batch failed */
	bool		ready;			/* more to apply now */
	bool		readable;		/* its socket woke the last wait: poll it */
	bool		released;		/* let go of (busy hook): dropped at the
								 * next pool_sync */
} PipeRun;

static int	my_worker = -1;		/* our entry in the pool */
static int	my_slot = -1;		/* the notifier's slot (notifier workers) */
static List *runs = NIL;		/* PipeRun *, in TopMemoryContext */
static int	next_turn = 0;		/* round robin: where the next pass starts */
static PipeRun *serving = NULL; /* the run of the batch in progress */
static TimestampTz busy_checked_at = 0;

/*
 * The wait set of pool_wait, kept across waits: built again only when the
 * sockets it waits on changed (a stream opened or closed, a pipeline taken
 * or let go of, a backoff begun or over).  wait_runs/wait_socks say what it
 * was built for; stream_epoch counts the streams opened and closed here, so
 * a socket closed and another opened with the same number is seen too.
 */
static WaitEventSet *wait_set = NULL;
static int	wait_nruns = 0;
static PipeRun **wait_runs = NULL;
static pgsocket *wait_socks = NULL;
static WaitEvent *wait_events = NULL;
static uint64 stream_epoch = 0;
static uint64 wait_epoch = 0;
static TimestampTz polled_all_at = 0;	/* pool_poll's last look at every stream */

/*
 * pool_poll reads the streams whose socket woke the wait, the ones with a
 * local flush to report, and every stream this often (status updates on
 * time, a keepalive that asks for a reply).
 */
#define POLL_ALL_MS 1000

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
	PoolWorker *pw = &POOL_WORKERS()[DatumGetInt32(arg)];
	int			i;

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	if (pw->pid == MyProcPid)
	{
		pw->pid = 0;
		pw->latch = NULL;
		pw->busy_since = 0;
	}
	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];

		if (s->in_use && s->pid == MyProcPid)
			s->pid = 0;
	}
	LWLockRelease(sluice_shared->lock);
	if (sluice_shared->launcher_latch)
		SetLatch(sluice_shared->launcher_latch);
}

/* Does the launcher still want this notifier to run? */
bool
worker_still_wanted(void)
{
	bool		w;
	WorkerSlot *s;

	if (my_slot < 0)
		return false;
	s = &sluice_shared->slots[my_slot];
	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	w = s->in_use && s->wanted && s->worker == my_worker;
	LWLockRelease(sluice_shared->lock);
	return w;
}

/* Park every connection of run (or unpark it: it is served). */
static void
run_park(PipeRun *run, bool parked)
{
	if (run->conn != NULL)
		run->conn->parked = parked;
	if (run->ws != NULL && run->ws->sc != NULL)
		run->ws->sc->parked = parked;
}

/*
 * Every table of the pipeline is still the table it copied (identity.c):
 * over the walsender, a table dropped on live sends nothing more, so the
 * worker looks with its slot look.  What the batch applied stays (changes
 * from before the drop); the pipeline pauses with it.
 */
static void run_close_stream(PipeRun *run, bool polite);

static void
worker_check_identity(SluicePipeline *pipe, PipeRun *run, RefreshResult *r)
{
	char	   *message = NULL;
	char	   *hint = NULL;
	SluiceDrift *d = identity_check(pipe, run->conn, &message, &hint);

	if (d != NULL)
	{
		refresh_pause(pipe, r, d, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, hint);
		/* as after any pause: the next stream starts from the origin */
		run_close_stream(run, true);
	}
}

/*
 * run's normal connection to the source, opened if it is not: kept across
 * batches (persistent) and cleared in run when an abort closes it.
 */
static void
run_connect(PipeRun *run, SluicePipeline *pipe)
{
	if (run->conn != NULL)
		return;
	run->conn = transport_connect(pipe->source_name, pipe->conninfo, false);
	run->conn->persistent = true;
	run->conn->owner_ref = &run->conn;
}

/* Close run's stream, its files with it. */
static void
run_close_stream(PipeRun *run, bool polite)
{
	StreamFiles *cur;

	if (run->ws == NULL)
		return;
	if (run != serving)
	{
		/* its files are not the current ones */
		cur = streamfile_save();
		streamfile_restore(run->files);
		run->files = NULL;
		walstream_close(run->ws, polite);
		streamfile_restore(cur);
	}
	else
		walstream_close(run->ws, polite);
	run->ws = NULL;
	stream_epoch++;
}

/* Close everything run holds, and say so in shared memory. */
static void
run_release(PipeRun *run, bool polite)
{
	WorkerSlot *s = &sluice_shared->slots[run->slot];

	run_close_stream(run, polite);
	if (run->conn != NULL)
		transport_close(run->conn);
	run->conn = NULL;
	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	if (s->holder == my_worker && s->pipeline_id == run->pipeline_id)
		s->holder = -1;
	if (s->worker == my_worker && s->pipeline_id == run->pipeline_id && !s->wanted)
		s->worker = -1;
	if (s->pid == MyProcPid)
		s->pid = 0;
	LWLockRelease(sluice_shared->lock);
	run->released = true;
}

/* Is run's pipeline still ours to serve?  Lock held. */
static bool
run_assigned(PipeRun *run)
{
	WorkerSlot *s = &sluice_shared->slots[run->slot];

	return s->in_use && s->wanted && s->pipeline_id == run->pipeline_id &&
		s->dboid == MyDatabaseId && s->worker == my_worker;
}

/*
 * Follow the launcher: let go of the pipelines no longer assigned to us,
 * take the new ones.  Returns false when nothing is assigned any more (the
 * worker exits).
 */
static bool
pool_sync(void)
{
	List	   *gone = NIL;
	List	   *keep = NIL;
	ListCell   *lc;
	int			i;
	bool		any = false;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);	/* runs lives there */

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	foreach(lc, runs)
	{
		PipeRun    *run = lfirst(lc);

		if (run->released || !run_assigned(run))
			gone = lappend(gone, run);
		else
			keep = lappend(keep, run);
	}
	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];
		bool		have = false;

		/* stopped before we took it: nothing to let go of but the assignment */
		if (s->in_use && !s->wanted && s->worker == my_worker)
			s->worker = -1;
		if (!s->in_use || !s->wanted || s->worker != my_worker)
			continue;
		any = true;
		foreach(lc, keep)
		{
			PipeRun    *run = lfirst(lc);

			if (run->slot == i && run->pipeline_id == s->pipeline_id)
				have = true;
		}
		if (!have)
		{
			PipeRun    *run = MemoryContextAllocZero(TopMemoryContext, sizeof(PipeRun));

			run->slot = i;
			run->pipeline_id = s->pipeline_id;
			run->window_start = GetCurrentTimestamp();
			run->ready = true;
			keep = lappend(keep, run);
			if (s->waiting)
			{
				/* it waited for a worker (launcher.c): no longer */
				s->waiting = false;
				s->in_error = false;
				s->last_error[0] = '\0';
			}
			s->pid = MyProcPid;
			s->started_at = GetCurrentTimestamp();
			s->rows_per_sec = 0;
			s->rows_applied = 0;
		}
	}
	LWLockRelease(sluice_shared->lock);

	foreach(lc, gone)
	{
		PipeRun    *run = lfirst(lc);

		if (!run->released)
			run_release(run, true);
		if (run->files != NULL)
		{
			StreamFiles *cur = streamfile_save();

			streamfile_restore(run->files);
			streamfile_reset();
			streamfile_restore(cur);
		}
		pfree(run);
	}
	list_free(gone);
	list_free(runs);
	runs = keep;
	MemoryContextSwitchTo(old);
	return any || runs != NIL;
}

/*
 * walstream's busy hook, during a long apply: let go of the streams of the
 * pipelines the launcher moved to other workers (at most every 100 ms).
 * Their runs are dropped at the next pool_sync.
 */
static void
pool_busy(WalStream *ws)
{
	ListCell   *lc;
	List	   *moved = NIL;

	if (!TimestampDifferenceExceeds(busy_checked_at, GetCurrentTimestamp(), 100))
		return;
	busy_checked_at = GetCurrentTimestamp();
	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	foreach(lc, runs)
	{
		PipeRun    *run = lfirst(lc);

		if (run != serving && !run->released && !run_assigned(run))
			moved = lappend(moved, run);
	}
	LWLockRelease(sluice_shared->lock);
	foreach(lc, moved)
		run_release((PipeRun *) lfirst(lc), false);
	list_free(moved);
}

/*
 * A paused pipeline's turn, in the transaction pool_batch began: its
 * slot's changes go to the spool (spool.c), and once that is committed the
 * slot is moved on live at once (slotwatch.c).
 */
static void
worker_drain(PipeRun *run, SluicePipeline *pipe)
{
	SpoolResult sr;
	XLogRecPtr	moved_to = InvalidXLogRecPtr;

	pgstat_report_activity(STATE_RUNNING, "pg_sluice: draining a paused pipeline's slot");
	/* the drain reads the slot over SQL: the walsender must let it go */
	run_close_stream(run, true);
	run_connect(run, pipe);
	spool_drain(pipe, run->conn, &sr);
	if (sr.conn_closed)
		run->conn = NULL;
	moved_to = sr.drained_upto; /* (slotwatch_advance never moves it back) */
	worker_xact_commit();
	if (!XLogRecPtrIsInvalid(moved_to))
	{
		worker_xact_begin();
		run_connect(run, pipe);
		slotwatch_advance(pipe, run->conn, moved_to);
		worker_xact_commit();
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * A pipeline whose batches keep failing (not a pause: an error it retries)
 * keeps the slot where it was too: from the SPOOL_AFTER_FAILURES-th failure
 * in a row, it drains between its attempts.  The next batch that succeeds
 * applies the spool first.  Errors here are logged and left for the next
 * attempt.
 */
#define SPOOL_AFTER_FAILURES 3

/*
 * How often a stream's pipeline looks at the WAL its slot keeps on live (a
 * walsender does not say): a batch is due that often even when its tables
 * are quiet, or a quiet pipeline whose slot a long transaction on live holds
 * back would never send its slot_lag event.
 */
#define SLOT_LOOK_MS 5000

static void
worker_drain_failing(PipeRun *run)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		SluicePipeline *pipe;

		worker_xact_begin();
		pipe = catalog_pipeline_by_id(run->pipeline_id, true);
		if (pipe != NULL && pipe->continuous && pipe->paused_reason == NULL)
			worker_drain(run, pipe);
		else
			worker_xact_commit();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		run->conn = NULL;		/* closed by the abort */
	}
	PG_END_TRY();
}

/*
 * One batch of run's pipeline in its own transaction.  Returns true when
 * caught up, sets *done when the pipeline no longer streams.
 */
static bool
pool_batch(PipeRun *run, bool *done)
{
	WorkerSlot *s = &sluice_shared->slots[run->slot];
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

	pipe = catalog_pipeline_by_id(run->pipeline_id, true);
	if (pipe == NULL || !pipe->continuous)
	{
		LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
		if (s->pipeline_id == run->pipeline_id)
			s->wanted = false;
		LWLockRelease(sluice_shared->lock);
		worker_xact_commit();
		*done = true;
		return false;
	}
	/* the role that started the pipeline must still be allowed to */
	sluice_check_operator(pipe, "stream");

	if (pipe->paused_reason)
	{
		/* paused: wait for sluice.resume(), draining the slot meanwhile */
		worker_xact_commit();
		/* the slot must be free for the drain; resume starts from the origin */
		run_close_stream(run, true);
		worker_xact_begin();
		pipe = catalog_pipeline_by_id(run->pipeline_id, true);
		if (pipe != NULL && pipe->paused_reason != NULL)
			worker_drain(run, pipe);
		else
			worker_xact_commit();
		return true;
	}

	run_connect(run, pipe);

	/*
	 * What a drain spooled while the pipeline was paused or failing goes
	 * first, through the SQL transport's batch (refresh_inner applies the
	 * spool, then the slot): the slot's confirmed position is past it, so a
	 * walsender started from the origin would begin after it.
	 */
	if (sluice_worker_transport == SLUICE_TRANSPORT_WALSENDER && !spool_pending(pipe))
	{
		bool		binary = apply_use_binary(pipe);

		if (run->ws != NULL && run->ws->binary != binary)
			run_close_stream(run, true);
		memset(&r, 0, sizeof(r));
		if (run->ws == NULL)
		{
			/*
			 * A new stream (the first, or after a pause or a failure): its
			 * tables are looked at on live first, so that a rename is
			 * recorded (or pauses) before changes of another table created
			 * under the old name arrive (identity.c).
			 */
			worker_check_identity(pipe, run, &r);
		}
		if (run->ws == NULL && !r.paused)
		{
			/*
			 * The walsender of a stream closed in a hurry (a worker that
			 * died, a failed batch) holds the slot a moment longer: wait for
			 * it to go rather than fail this batch on START_REPLICATION.
			 */
			PQclear(refresh_describe_slot(pipe, run->conn, "let the worker try again"));
			run->ws = walstream_open(pipe, origin_progress(pipe->origin_name, false), binary);
			stream_epoch++;
		}
		if (!r.paused)
			refresh_pipeline_ws(pipe, run->ws, sluice_batch_size, sluice_batch_time, &r);
		if (r.conn_closed || r.paused)
		{
			/*
			 * Paused: what the stream delivered rolled back, so the next
			 * stream starts again from the origin.  (refresh_pipeline_ws has
			 * no normal connection to abandon and leaves conn_closed unset:
			 * a stream kept open here went on after the transaction the
			 * pause rolled back, and once resumed applied the rest of it,
			 * its first changes lost.)
			 */
			run_close_stream(run, true);
		}

		/* the WAL the slot keeps, looked at every few seconds */
		if (TimestampDifferenceExceeds(run->slot_checked_at, GetCurrentTimestamp(), SLOT_LOOK_MS))
		{
			const char *params[1] = {pipe->slot_name};
			PGresult   *res = transport_exec(run->conn,
											 "SELECT restart_lsn, pg_catalog.pg_current_wal_flush_lsn() "
											 "  FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
											 1, params, PGRES_TUPLES_OK, "describe the replication slot");

			if (PQntuples(res) == 0)
				refresh_slot_gone(pipe);
			run->slot_restart = PQgetisnull(res, 0, 0) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(res, 0, 0));
			run->slot_flush = transport_parse_lsn(PQgetvalue(res, 0, 1));
			PQclear(res);
			run->slot_checked_at = GetCurrentTimestamp();
			if (!r.paused)
				worker_check_identity(pipe, run, &r);
		}
		r.slot_restart_lsn = run->slot_restart;
	}
	else
	{
		run_close_stream(run, true);
		refresh_pipeline(pipe, run->conn, sluice_batch_size, sluice_batch_time, &r);
		if (r.conn_closed)
			run->conn = NULL;	/* abandoned mid-stream */
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
	streak_over = !(run->failures > 0 && run->ws != NULL && r.stats.transactions == 0 && !r.paused &&
					run->ws->received <= run->failed_at);
	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	had_error = s->in_error;
	LWLockRelease(sluice_shared->lock);
	if (had_error && streak_over)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(run->pipeline_id)};

		if (sluice_catalog_exec("UPDATE sluice._pipeline SET last_error = NULL, last_error_at = NULL "
								"WHERE pipeline_id = $1", 1, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not clear the pipeline's error");
	}

	/* guard the source: a slot_lag event when the WAL kept crosses the limit (a run looked already) */
	if (!recorded)
		slotwatch_lag(pipe, run->ws != NULL ? Max(r.source_flush_lsn, run->slot_flush) : r.source_flush_lsn,
					  r.slot_restart_lsn, false);
	worker_xact_commit();
	if (run->ws != NULL)
	{
		/* reported to the source once this commit is on disk */
		if (r.end_lsn > r.start_lsn)
			walstream_committed(run->ws, XactLastCommitEnd, r.end_lsn);
		run->ws->in_batch = false;
		walstream_feedback(run->ws, false);
	}
	/* table statistics, for autovacuum (at most once a second) */
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	/* what the status view shows */
	{
		TimestampTz now = GetCurrentTimestamp();

		run->window_rows += rows;
		if (streak_over)
		{
			run->failures = 0;
			run->failed_at = InvalidXLogRecPtr;
		}
		LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
		if (s->pipeline_id == run->pipeline_id)
		{
			if (streak_over)
			{
				s->failures = 0;
				s->in_error = false;
				s->retry_at = 0;
			}
			s->measured_at = now;
			s->source_flush_lsn = r.source_flush_lsn;
			/* caught up with the walsender: consistent with all it sent */
			s->applied_lsn = (run->ws != NULL && r.complete) ? r.source_flush_lsn : r.end_lsn;
			s->slot_restart_lsn = r.slot_restart_lsn;
			if (r.stats.last_commit_time != 0)
				s->last_source_commit = r.stats.last_commit_time;
			if (rows > 0)
				s->last_batch_at = now;
			s->rows_applied += rows;
			if (TimestampDifferenceExceeds(run->window_start, now, 5000))
			{
				long		secs;
				int			usecs;
				double		elapsed;

				TimestampDifference(run->window_start, now, &secs, &usecs);
				elapsed = secs + usecs / 1e6;
				s->rows_per_sec = elapsed > 0 ? run->window_rows / elapsed : 0;
				run->window_start = now;
				run->window_rows = 0;
			}
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
							"WHERE pipeline_id = $1", 3, types, args, NULL, false, 0) != SPI_OK_UPDATE ||
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

/*
 * After a failed batch (edata): that pipeline backs off, the failure is
 * recorded; errors while recording are logged, never the worker's end.
 */
static void
run_failed(PipeRun *run, TimestampTz started, ErrorData *edata, MemoryContext cxt)
{
	WorkerSlot *s = &sluice_shared->slots[run->slot];
	const char *msg = edata->message ? edata->message : "unknown error";
	long		wait;
	TimestampTz now = GetCurrentTimestamp();

	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		return;					/* sluice.stop() cancelled it (or a cancel
								 * meant for it hit the next batch) */
	run->failures++;
	wait = launcher_backoff_ms(run->failures);
	run->retry_at = TimestampTzPlusMilliseconds(now, wait);
	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	if (s->pipeline_id == run->pipeline_id)
	{
		s->failures = run->failures;
		s->in_error = true;
		strlcpy(s->last_error, msg, ERROR_LEN);
		s->last_error_at = now;
		s->retry_at = run->retry_at;
	}
	LWLockRelease(sluice_shared->lock);

	PG_TRY();
	{
		record_failure(run->pipeline_id, started, msg);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
	if (run->failures >= SPOOL_AFTER_FAILURES)
		worker_drain_failing(run);
	pgstat_report_stat(false);
}

/*
 * Serve run: one batch, if its pipeline is still ours and no other worker
 * holds it.  Returns whether a batch ran.
 */
static bool
pool_serve(PipeRun *run, MemoryContext cxt)
{
	WorkerSlot *s = &sluice_shared->slots[run->slot];
	PoolWorker *pw = &POOL_WORKERS()[my_worker];
	ErrorData  *volatile edata = NULL;
	volatile bool idle = false;
	volatile bool done = false;
	TimestampTz started = GetCurrentTimestamp();
	bool		ok;
	ListCell   *lc;

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	ok = run_assigned(run) && (s->holder < 0 || s->holder == my_worker);
	if (ok)
	{
		s->holder = my_worker;
		s->pid = MyProcPid;
		pw->current = run->slot;
		pw->busy_since = started;
	}
	LWLockRelease(sluice_shared->lock);
	if (!ok)
	{
		/* its former worker still has it open: look again shortly */
		run->retry_at = TimestampTzPlusMilliseconds(started, 100);
		return false;
	}

	/* the other pipelines' connections survive this batch's abort */
	foreach(lc, runs)
		run_park((PipeRun *) lfirst(lc), lfirst(lc) != run);
	streamfile_restore(run->files);
	run->files = NULL;
	serving = run;

	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		bool		d = false;

		idle = pool_batch(run, &d);
		done = d;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		/* an abort closed them; an error between batches did not */
		if (run->conn != NULL)
			transport_close(run->conn);
		run->conn = NULL;
		if (run->ws != NULL)
		{
			run->failed_at = Max(run->failed_at, run->ws->received);
			walstream_close(run->ws, false);
		}
		run->ws = NULL;
		stream_epoch++;
	}
	PG_END_TRY();

	serving = NULL;
	QueryCancelPending = false; /* a cancel is for a batch, never between */
	run->files = streamfile_save();
	foreach(lc, runs)
		run_park((PipeRun *) lfirst(lc), true);
	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	pw->current = -1;
	pw->busy_since = 0;
	/* without a stream open, nothing to hold between batches */
	if (run->ws == NULL && s->holder == my_worker && s->pipeline_id == run->pipeline_id)
		s->holder = -1;
	LWLockRelease(sluice_shared->lock);

	if (edata != NULL)
	{
		pgstat_report_activity(STATE_IDLE, NULL);
		run_failed(run, started, edata, cxt);
		run->ready = true;		/* after the backoff */
	}
	else if (done)
		run_release(run, true);
	else
	{
		/* a stream: more to take now, or wait for its socket */
		run->ready = !idle;
		/* (what the batch's last read took into libpq's buffer wakes no wait: look once) */
		run->readable = true;
		run->rest_until = (idle && run->ws != NULL && sluice_batch_interval > 0) ?
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sluice_batch_interval) : 0;
		if (run->ws == NULL && idle)
			run->due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sluice_naptime);
	}
	return true;
}

/* Can run have a batch now? */
static bool
run_due(PipeRun *run, TimestampTz now)
{
	if (run->released || run->retry_at > now || run->rest_until > now)
		return false;
	if (run->ready)
		return true;
	return run->ws == NULL && run->due <= now;
}

/* Milliseconds from now to t, at least 0. */
static long
ms_until(TimestampTz now, TimestampTz t)
{
	long		secs;
	int			usecs;

	if (t <= now)
		return 0;
	TimestampDifference(now, t, &secs, &usecs);
	return secs * 1000 + usecs / 1000 + 1;
}

/* The socket pool_wait waits on for run, or PGINVALID_SOCKET. */
static pgsocket
run_socket(PipeRun *run, TimestampTz now)
{
	if (run->released || run->retry_at > now || run->rest_until > now || run->ws == NULL ||
		run->ws->sc == NULL || run->ws->sc->conn == NULL)
		return PGINVALID_SOCKET;
	return PQsocket(run->ws->sc->conn);
}

/* Was the wait set built for the sockets the runs have now? */
static bool
wait_set_current(TimestampTz now)
{
	ListCell   *lc;
	int			i = 0;

	if (wait_set == NULL || wait_epoch != stream_epoch || wait_nruns != list_length(runs))
		return false;
	foreach(lc, runs)
	{
		PipeRun    *run = lfirst(lc);

		if (wait_runs[i] != run || wait_socks[i] != run_socket(run, now))
			return false;
		i++;
	}
	return true;
}

/* (Re)build the wait set: the latch, postmaster death, every stream's socket. */
static void
wait_set_build(TimestampTz now)
{
	ListCell   *lc;
	int			n = list_length(runs);
	int			i = 0;

	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	if (wait_runs != NULL)
	{
		pfree(wait_runs);
		pfree(wait_socks);
		pfree(wait_events);
	}
	wait_set = CreateWaitEventSet(TopMemoryContext, 2 + n);
	wait_runs = MemoryContextAlloc(TopMemoryContext, sizeof(PipeRun *) * (n + 1));
	wait_socks = MemoryContextAlloc(TopMemoryContext, sizeof(pgsocket) * (n + 1));
	wait_events = MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * (n + 2));
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	foreach(lc, runs)
	{
		PipeRun    *run = lfirst(lc);

		wait_runs[i] = run;
		wait_socks[i] = run_socket(run, now);
		if (wait_socks[i] != PGINVALID_SOCKET)
			AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, wait_socks[i], NULL, run);
		i++;
	}
	wait_nruns = n;
	wait_epoch = stream_epoch;
}

/*
 * Nothing to apply: wait for the latch, a change on any stream, the end
 * of a backoff or nap, or a local flush to report.  The streams whose
 * socket woke it are marked readable for pool_poll.
 */
static void
pool_wait(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = 10000;
	ListCell   *lc;
	int			nev;
	int			i;

	foreach(lc, runs)
	{
		PipeRun    *run = lfirst(lc);

		if (run->released)
			continue;
		if (run->retry_at > now || run->rest_until > now)
		{
			timeout = Min(timeout, ms_until(now, Max(run->retry_at, run->rest_until)));
			continue;
		}
		if (run_socket(run, now) != PGINVALID_SOCKET)
		{
			if (run->ws->npending > 0)
				timeout = Min(timeout, 50); /* a local flush to report */
			/* the next look at the slot */
			timeout = Min(timeout, ms_until(now, TimestampTzPlusMilliseconds(run->slot_checked_at, SLOT_LOOK_MS)));
		}
		else if (run->ws == NULL)
			timeout = Min(timeout, ms_until(now, run->due));
	}
	if (!wait_set_current(now))
		wait_set_build(now);
	nev = WaitEventSetWait(wait_set, timeout, wait_events, 2 + wait_nruns, PG_WAIT_EXTENSION);
	for (i = 0; i < nev; i++)
		if ((wait_events[i].events & WL_SOCKET_READABLE) && wait_events[i].user_data != NULL)
			((PipeRun *) wait_events[i].user_data)->readable = true;
	ResetLatch(MyLatch);
}

/*
 * The streams that have something, without waiting: answer them, and hold
 * what arrived.  Only the ones whose socket woke the wait or that have a
 * local flush to report, and every POLL_ALL_MS all of them: a read of a
 * quiet socket is a system call for nothing.
 */
static void
pool_poll(MemoryContext cxt)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		all = TimestampDifferenceExceeds(polled_all_at, now, POLL_ALL_MS);
	ListCell   *lc;

	if (all)
		polled_all_at = now;
	foreach(lc, runs)
	{
		PipeRun    *run = lfirst(lc);
		ErrorData  *volatile edata = NULL;
		bool		look;

		if (run->released || run->ws == NULL || run->ready || run->retry_at > now ||
			run->rest_until > now)
			continue;
		look = run->readable || all || run->ws->npending > 0;
		run->readable = false;
		if (look)
		{
			PG_TRY();
			{
				if (walstream_poll(run->ws))
					run->ready = true;
			}
			PG_CATCH();
			{
				MemoryContextSwitchTo(cxt);
				edata = CopyErrorData();
				EmitErrorReport();
				FlushErrorState();
			}
			PG_END_TRY();
		}
		if (edata == NULL && !run->ready &&
			TimestampDifferenceExceeds(run->slot_checked_at, now, SLOT_LOOK_MS))
			run->ready = true;	/* a batch that looks at the slot */
		if (edata != NULL)
		{
			/* the stream broke between batches: it is opened again */
			run_close_stream(run, false);
			run_failed(run, now, edata, cxt);
			run->ready = true;
			LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
			if (sluice_shared->slots[run->slot].holder == my_worker)
				sluice_shared->slots[run->slot].holder = -1;
			LWLockRelease(sluice_shared->lock);
		}
	}
}

/*
 * Connect to the database as the bootstrap superuser, then take the
 * session authorization of the role that started the pipelines (as SET
 * SESSION AUTHORIZATION would): session_user and current_user are that
 * role, as after a login, but its ALTER ROLE ... SET settings were never
 * read (see the NOTES, "Settings").
 */
static void
worker_connect(Oid dboid, Oid roleoid)
{
	char	   *rolename;

	BackgroundWorkerInitializeConnectionByOid(dboid, BOOTSTRAP_SUPERUSERID, 0);
	if (!OidIsValid(roleoid))
		return;					/* a notifier: the bootstrap superuser, as before */
	StartTransactionCommand();
	rolename = GetUserNameFromId(roleoid, true);
	if (rolename == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that started pool worker %d no longer exists", my_worker + 1),
				 errdetail("A pool worker runs as the role that called sluice.start() for its pipelines."),
				 errhint("Call sluice.start() again for its pipelines as a role that operates them.")));
	SetConfigOption("session_authorization", rolename, PGC_SUSET, PGC_S_OVERRIDE);
	CommitTransactionCommand();
	/* pg_stat_activity.usename: the role, as for a worker that logged in as it */
	pgstat_bestart();
}

void
sluice_worker_main(Datum arg)
{
	PoolWorker *pw;
	Oid			dboid;
	Oid			roleoid;
	bool		notifier;
	MemoryContext worker_cxt;
	int			i;

	my_worker = DatumGetInt32(arg);
	pw = &POOL_WORKERS()[my_worker];
	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	if (!pw->in_use)
	{
		LWLockRelease(sluice_shared->lock);
		proc_exit(0);
	}
	pw->pid = MyProcPid;
	pw->latch = MyLatch;
	pw->current = -1;
	pw->started_at = GetCurrentTimestamp();
	dboid = pw->dboid;
	roleoid = pw->roleoid;
	notifier = pw->notifier;
	for (i = 0; notifier && i < sluice_shared->nslots; i++)
		if (sluice_shared->slots[i].in_use && sluice_shared->slots[i].worker == my_worker)
			my_slot = i;
	LWLockRelease(sluice_shared->lock);
	before_shmem_exit(worker_detach, Int32GetDatum(my_worker));

	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, StatementCancelHandler);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	worker_connect(dboid, roleoid);
	sluice_fix_search_path();
	pgstat_report_appname("pg_sluice worker");

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice worker",
									   ALLOCSET_DEFAULT_SIZES);
	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	pw->attached = true;
	LWLockRelease(sluice_shared->lock);

	if (notifier)
	{
		if (my_slot >= 0)
		{
			LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
			sluice_shared->slots[my_slot].pid = MyProcPid;
			sluice_shared->slots[my_slot].started_at = GetCurrentTimestamp();
			LWLockRelease(sluice_shared->lock);
			notifier_main(worker_cxt);
		}
		proc_exit(0);
	}

	/*
	 * Batches commit asynchronously, as a subscription's apply worker does:
	 * the slot is only told positions whose commit is on disk (walstream.c
	 * waits for the flush; the SQL transport flushes the origin's position
	 * before it advances the slot), so a batch a crash loses comes again.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	walstream_busy_hook = pool_busy;
	for (;;)
	{
		TimestampTz now;
		int			n;
		int			k;
		bool		served = false;

		QueryCancelPending = false; /* (see pool_serve) */
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(worker_cxt);
		if (!pool_sync())
			break;
		/* an error outside any batch ends the worker (tests make one here) */
		if (sluice_test_error_pid != 0 && sluice_test_error_pid == MyProcPid)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("pool worker %d fails between two batches, as pg_sluice.test_error_pid asks", my_worker + 1),
					 errdetail("The launcher gives its pipelines to other workers."),
					 errhint("Reset pg_sluice.test_error_pid: it is for tests.")));
		pool_poll(worker_cxt);

		/* one bounded batch per pipeline with work, in turn */
		now = GetCurrentTimestamp();
		n = list_length(runs);
		for (k = 0; k < n; k++)
		{
			int			idx = (next_turn + k) % n;
			PipeRun    *run = list_nth(runs, idx);

			snapshot_worker_step(run->pipeline_id);
			if (!run_due(run, now))
				continue;
			if (pool_serve(run, worker_cxt))
			{
				served = true;
				MemoryContextReset(worker_cxt);
			}
			next_turn = idx + 1;
			QueryCancelPending = false;
			CHECK_FOR_INTERRUPTS();
			now = GetCurrentTimestamp();
		}
		if (!served)
			pool_wait();
		MemoryContextReset(worker_cxt);
	}
	/* nothing assigned any more: exit (the launcher starts workers as needed) */
	proc_exit(0);
}
