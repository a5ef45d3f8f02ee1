/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  Continuous mode: the launcher background worker, the shared state it
 *	  acts on, and the SQL that starts and stops pipelines.
 *
 * NOTES
 *	  What this file owns.  The wish to stream, which lives in two places: the
 *	  catalog (sluice._pipeline.continuous, durable, per database) and a slot
 *	  in shared memory (what the launcher acts on; pg_sluice.max_pipelines of
 *	  them).  sluice.start() sets both; the launcher assigns every wanted
 *	  slot to one worker of a bounded pool (pg_sluice.max_workers processes,
 *	  worker.c), starting workers as they are needed, and reassigns the
 *	  slots of a worker that dies (the slot of the batch it died in after a
 *	  backoff, the others at once).  After a server restart shared memory is
 *	  empty: the launcher starts a short-lived "resume" worker in every
 *	  database, which re-registers the pipelines its catalog says are
 *	  continuous, and the notifier where events have destinations.
 *	  sluice.stop() takes the wish back and waits until the worker let go of
 *	  the pipeline (its batch rolled back, its stream closed);
 *	  sluice._worker_status() shows the slots and which worker serves each.
 *
 *	  The pool.  A worker is bound to one database and one role (a
 *	  background worker connects once, and a pipeline's batches run as the
 *	  role that started it), so it serves the pipelines of that pair.  A new
 *	  pipeline goes to a worker of its pair with the fewest pipelines, or to
 *	  a new worker while the pool has room and every worker of the pair has
 *	  one already.  A notifier gets a worker of its own.  Fairness: a batch
 *	  is bounded by pg_sluice.batch_size and batch_time, but a big source
 *	  transaction is applied whole, in one local transaction; when a worker
 *	  has been in one batch longer than batch_time, the launcher moves that
 *	  worker's other pipelines to other workers of the pair (or to a new
 *	  one), and the busy worker lets go of their streams from inside its
 *	  long apply (worker.c's busy hook): they are delayed by about one batch
 *	  time, not by the big transaction.  Two fields say who has what: worker
 *	  (the launcher's assignment) and holder (the worker that has the
 *	  pipeline's stream open or is in its batch); a worker serves a pipeline
 *	  only when it is assigned to it and no other worker holds it, so a
 *	  moved pipeline is never applied by two workers at once (the origin and
 *	  the pipeline's row lock would refuse it anyway).
 *
 *	  Balance.  Stops and drops leave workers uneven; every few seconds a
 *	  worker with two pipelines or more than another of its pair gives it
 *	  one (pool_balance), by the same move as for a long batch.  By count,
 *	  not by load: a busy pipeline's batches are bounded (batch_size,
 *	  batch_time) and a worker gives every pipeline with work one batch per
 *	  pass, so a worker's pipelines wait at most one batch of each of the
 *	  others; the long batch that breaks that bound is moved away from.
 *
 *	  Running out.  A worker that cannot start (no background worker slot
 *	  free: max_worker_processes) costs its pipelines no backoff, it is not
 *	  their fault: they go to the workers of their pair there are, and no
 *	  start is tried again for START_RETRY_MS.  A pipeline no worker can take
 *	  (none of its pair, and the pool full of other pairs' workers, or no
 *	  slot to start one) waits and says why, in its slot's last_error
 *	  ('waiting for a pool worker: ...', sluice.status and sluice.workers),
 *	  and sluice.start() warns.  A continuous pipeline without a slot (more
 *	  of them than pg_sluice.max_pipelines after a restart) gets the reason
 *	  in its catalog row from the resume worker.  A worker that exits on an
 *	  error between batches is one that died outside a batch: its pipelines
 *	  go to other workers at once (pg_sluice.test_error_pid makes one, for
 *	  tests).
 *
 *	  Shape.  PostgreSQL's own: one static launcher registered by _PG_init,
 *	  dynamic workers registered with bgw_notify_pid and BGW_NEVER_RESTART,
 *	  restarts decided here, slots, pool and their lock in shared memory
 *	  (worker_internal.h).
 *
 *	  What it never does.  Apply anything or connect to a source: that is the
 *	  workers'.  Signal a pool worker to stop a pipeline other than with a
 *	  query cancel of the batch of that pipeline (sluice.stop): the worker's
 *	  other pipelines go on.
 *
 *	  Rejected.  One worker per pipeline (what 0.1 did): M streaming
 *	  pipelines needed M processes and M backends' memory.  bgw_restart_time
 *	  for the pool workers: the postmaster would restart them blindly,
 *	  without backoff or a status anyone can read.  One worker per database
 *	  applying its pipelines in turn, unbounded: one big transaction would
 *	  delay all the others.  Giving a big transaction a worker of its own: it
 *	  is known to be big only once its apply has started, in the worker that
 *	  holds it; moving the others away is the same decision taken at the
 *	  moment it is known.  Workers switching roles per pipeline (SET ROLE):
 *	  session state would leak between pipelines of different owners.
 *	  Trying a new worker at every look while starts fail (what the pool
 *	  first did): the new pipeline waited for ever beside a worker of its
 *	  pair that could serve it, and backed off as if it had failed.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/launcher.c
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

SluiceShared *sluice_shared = NULL;
int			sluice_test_error_pid = 0;
int			sluice_batch_interval = 0;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PGDLLEXPORT void sluice_launcher_main(Datum arg);
PGDLLEXPORT void sluice_resume_main(Datum arg);

PG_FUNCTION_INFO_V1(sluice_start);
PG_FUNCTION_INFO_V1(sluice_stop);
PG_FUNCTION_INFO_V1(sluice_worker_status);
PG_FUNCTION_INFO_V1(sluice_pool_status);
PG_FUNCTION_INFO_V1(sluice_notifier_wanted);

static bool pool_wait_reason(Oid dboid, Oid roleoid, TimestampTz now, int failed_ms, char *why);

/* ---------- shared memory ---------- */

static Size
shared_size(void)
{
	return add_size(MAXALIGN(add_size(offsetof(SluiceShared, slots),
									  mul_size(sizeof(WorkerSlot), sluice_max_pipelines))),
					mul_size(sizeof(PoolWorker), sluice_max_workers + sluice_max_pipelines));
}

static void
sluice_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("pg_sluice", 1);
}

static void
sluice_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sluice_shared = ShmemInitStruct("pg_sluice", shared_size(), &found);
	if (!found)
	{
		memset(sluice_shared, 0, shared_size());
		sluice_shared->lock = &(GetNamedLWLockTranche("pg_sluice"))->lock;
		sluice_shared->nslots = sluice_max_pipelines;
		/* apply workers (at most max_workers of them) and notifiers */
		sluice_shared->nworkers = sluice_max_workers + sluice_max_pipelines;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init when loaded by shared_preload_libraries: reserve
 * shared memory and register the launcher.
 */
void
worker_shmem_init(void)
{
	BackgroundWorker bgw;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = sluice_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = sluice_shmem_startup;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_sluice");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "sluice_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_sluice launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_sluice launcher");
	RegisterBackgroundWorker(&bgw);

	DefineCustomIntVariable("pg_sluice.batch_interval",
							"Sets how long a pool worker leaves a caught-up stream unread after its batch.",
							"Changes that arrive meanwhile wait in the stream and go in one batch: fewer, larger "
							"batches, less CPU per change with many pipelines, for up to this much more lag. "
							"0: a batch as soon as a change arrives.",
							&sluice_batch_interval,
							0, 0, 10000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.test_error_pid",
							"Tests only: the pool worker with this process id fails between two batches.",
							"It raises an error outside any batch and exits, as on any such error; the "
							"launcher gives its pipelines to other workers.  Superusers only.",
							&sluice_test_error_pid,
							0, 0, INT_MAX,
							PGC_SUSET, GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

static void
require_shared(void)
{
	if (sluice_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("continuous mode needs pg_sluice in shared_preload_libraries"),
				 errdetail("Background workers and their shared state are set up when the server starts."),
				 errhint("Add pg_sluice to shared_preload_libraries in postgresql.conf and restart the server, "
						 "or refresh on a schedule with sluice.refresh() from pg_cron.")));
}

static void
wake_launcher(void)
{
	Latch	   *latch;

	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	latch = sluice_shared->launcher_latch;
	LWLockRelease(sluice_shared->lock);
	if (latch)
		SetLatch(latch);
}

/* The slot of a pipeline, or NULL; caller holds the lock. */
static WorkerSlot *
find_slot(Oid dboid, int pipeline_id)
{
	int			i;

	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];

		if (s->in_use && s->dboid == dboid && s->pipeline_id == pipeline_id)
			return s;
	}
	return NULL;
}

/*
 * Mark a pipeline as wanted; the launcher assigns it to a worker.  Returns
 * false when no slot is free.
 */
static bool
want_pipeline(Oid dboid, int pipeline_id, Oid roleoid, const char *name)
{
	WorkerSlot *s;
	int			i;

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	s = find_slot(dboid, pipeline_id);
	if (s != NULL && s->roleoid != roleoid && pipeline_id != NOTIFIER_ID)
		s->worker = -1;			/* to a worker of its new role */
	for (i = 0; s == NULL && i < sluice_shared->nslots; i++)
	{
		if (!sluice_shared->slots[i].in_use)
		{
			s = &sluice_shared->slots[i];
			memset(s, 0, sizeof(*s));
			s->in_use = true;
			s->dboid = dboid;
			s->pipeline_id = pipeline_id;
			s->worker = -1;
			s->holder = -1;
		}
	}
	if (s != NULL)
	{
		s->wanted = true;
		s->roleoid = roleoid;
		strlcpy(s->pipeline, name, NAMEDATALEN);
		s->failures = 0;
		s->next_start = 0;
	}
	LWLockRelease(sluice_shared->lock);
	return s != NULL;
}

/* Is pool worker w gone (or never was)?  Caller holds the lock. */
static bool
pool_gone(int w)
{
	return w < 0 || !POOL_WORKERS()[w].in_use;
}

/*
 * Stop a pipeline and wait until its worker let go of it (its batch rolled
 * back, its stream closed) and, when it was that worker's last pipeline,
 * until the worker has exited.  A batch of the pipeline in progress is
 * cancelled (a query cancel: the worker's other pipelines go on).  Returns
 * false when that did not happen within timeout_ms.
 */
bool
worker_stop_pipeline(Oid dboid, int pipeline_id, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	TimestampTz cancelled_at = 0;
	int			former = -1;

	if (sluice_shared == NULL)
		return true;
	for (;;)
	{
		WorkerSlot *s;
		PoolWorker *pool = POOL_WORKERS();
		bool		released = true;
		Latch	   *latch = NULL;
		pid_t		cancel_pid = 0;
		pid_t		term_pid = 0;

		LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
		s = find_slot(dboid, pipeline_id);
		if (s != NULL)
		{
			int			w = s->worker >= 0 ? s->worker : s->holder;

			s->wanted = false;
			if (w >= 0)
				former = w;
			if (!pool_gone(s->holder) || !pool_gone(s->worker))
			{
				released = false;
				w = !pool_gone(s->holder) ? s->holder : s->worker;
				latch = pool[w].latch;
				if (pool[w].notifier)
					term_pid = pool[w].pid;
				else if (pool[w].current == (int) (s - sluice_shared->slots))
					cancel_pid = pool[w].pid;
			}
			else
				s->in_use = false;
		}
		/* its worker's last pipeline: the worker exits, wait for that too */
		if (released && former >= 0 && !pool_gone(former))
		{
			int			i;

			for (i = 0; i < sluice_shared->nslots; i++)
				if (sluice_shared->slots[i].in_use && sluice_shared->slots[i].worker == former)
					break;
			if (i == sluice_shared->nslots)
				released = false;
			latch = pool[former].latch;
		}
		LWLockRelease(sluice_shared->lock);
		if (released)
			return true;
		if (latch)
			SetLatch(latch);
		if (term_pid != 0)
			kill(term_pid, SIGTERM);
		/* cancel its batch, again every second if another batch began */
		if (cancel_pid != 0 && TimestampDifferenceExceeds(cancelled_at, GetCurrentTimestamp(), 1000))
		{
			kill(cancel_pid, SIGINT);
			cancelled_at = GetCurrentTimestamp();
		}
		if (GetCurrentTimestamp() >= deadline)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* ---------- SQL: start, stop, status ---------- */

/*
 * sluice._notifier_wanted(): make sure this database's notifier runs
 * (false, with a NOTICE, when pg_sluice is not preloaded).
 */
Datum
sluice_notifier_wanted(PG_FUNCTION_ARGS)
{
	if (sluice_shared == NULL)
	{
		ereport(NOTICE,
				(errmsg("events are queued but not delivered: pg_sluice is not in shared_preload_libraries"),
				 errhint("The notifier is a background worker; add pg_sluice to shared_preload_libraries and restart.")));
		PG_RETURN_BOOL(false);
	}
	if (!want_pipeline(MyDatabaseId, NOTIFIER_ID, GetUserId(), "notifier"))
		ereport(WARNING,
				(errmsg("no free slot for the notifier"),
				 errhint("Raise pg_sluice.max_pipelines and restart the server.")));
	wake_launcher();
	PG_RETURN_BOOL(true);
}

/*
 * sluice.start(pipeline): stream the pipeline continuously.
 */
Datum
sluice_start(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	SluicePipeline *pipe;
	Oid			types[2] = {INT4OID, OIDOID};
	Datum		args[2];
	bool		was;

	require_shared();
	SPI_connect();
	pipe = catalog_pipeline(name, true);
	sluice_check_operator(pipe, "start");
	if (pipe->http)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pipeline \"%s\" reads an HTTP source and cannot stream continuously", name),
				 errdetail("An HTTP API has no change stream; its pipeline is pulled by sluice.refresh()."),
				 errhint("Schedule sluice.refresh('%s') with pg_cron instead.", name)));
	{
		/*
		 * the worker runs as the role that starts it, as a session of that
		 * role would (worker.c's NOTES, "Settings"): a role that cannot log
		 * in has no sessions, and no worker either
		 */
		HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
		bool		canlogin = HeapTupleIsValid(tup) && ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;

		if (HeapTupleIsValid(tup))
			ReleaseSysCache(tup);
		if (!canlogin)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("role \"%s\" cannot log in, and the worker of pipeline \"%s\" would run as it",
							GetUserNameFromId(GetUserId(), false), name),
					 errdetail("A pipeline's worker runs as the role that starts it, as a session of that role would."),
					 errhint("Start it as a role that can log in and has the privileges of the pipeline's owner (for example after RESET ROLE).")));
	}
	was = pipe->continuous;
	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = ObjectIdGetDatum(GetUserId());
	if (sluice_catalog_exec("UPDATE sluice._pipeline SET continuous = true, run_as = $2, "
							  "       last_error = NULL, last_error_at = NULL WHERE pipeline_id = $1",
							  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not mark pipeline continuous");
	if (!want_pipeline(MyDatabaseId, pipe->pipeline_id, GetUserId(), pipe->name))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free slot for pipeline \"%s\" to stream", name),
				 errdetail("%d pipelines already stream continuously on this server.", sluice_max_pipelines),
				 errhint("Stop one with sluice.stop(), or raise pg_sluice.max_pipelines and restart the server.")));
	SPI_finish();
	{
		/* a slot, but maybe no worker to take it: say so now, not only in sluice.status */
		char		why[ERROR_LEN];
		bool		waits;

		LWLockAcquire(sluice_shared->lock, LW_SHARED);
		waits = pool_wait_reason(MyDatabaseId, GetUserId(), GetCurrentTimestamp(), 60000, why);
		LWLockRelease(sluice_shared->lock);
		if (waits)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("pipeline \"%s\" waits for a pool worker", name),
					 errdetail("%s.", why),
					 errhint("It streams once a worker is free (sluice.status says so); raise pg_sluice.max_workers "
							 "or max_worker_processes and restart the server, or stop the pipelines of another "
							 "database or role.")));
	}
	wake_launcher();
	PG_RETURN_BOOL(!was);
}

/*
 * sluice.stop(pipeline): stop streaming.  The worker is stopped first (its
 * batch in progress rolls back and is applied again later), then the
 * catalog is updated.
 */
Datum
sluice_stop(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	SluicePipeline *pipe;
	Oid			types[1] = {INT4OID};
	Datum		args[1];

	PreventInTransactionBlock(true, "sluice.stop()");
	SPI_connect();
	pipe = catalog_pipeline(name, false);
	sluice_check_operator(pipe, "stop");
	if (!worker_stop_pipeline(MyDatabaseId, pipe->pipeline_id, 60000))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("the worker of pipeline \"%s\" did not stop within 60 seconds", name),
				 errhint("Call sluice.stop() again; pg_stat_activity shows the worker.")));
	pipe = catalog_pipeline(name, true);
	args[0] = Int32GetDatum(pipe->pipeline_id);
	if (sluice_catalog_exec("UPDATE sluice._pipeline SET continuous = false WHERE pipeline_id = $1",
							  1, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not mark pipeline stopped");
	SPI_finish();
	PG_RETURN_BOOL(pipe->continuous);
}

/*
 * sluice._worker_status(): what the workers of this database report.
 */
Datum
sluice_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (sluice_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];
		Datum		v[14];
		bool		n[14];

		if (!s->in_use || s->dboid != MyDatabaseId)
			continue;
		memset(n, 0, sizeof(n));
		v[0] = Int32GetDatum(s->pipeline_id);
		v[1] = Int32GetDatum(s->pid);
		n[1] = (s->pid == 0 || pool_gone(s->worker) || POOL_WORKERS()[s->worker].pid != s->pid);
		v[2] = BoolGetDatum(s->wanted);
		v[3] = Int32GetDatum(s->failures);
		v[4] = TimestampTzGetDatum(s->started_at);
		n[4] = (s->started_at == 0 || s->pid == 0);
		v[5] = TimestampTzGetDatum(s->last_batch_at);
		n[5] = (s->last_batch_at == 0);
		v[6] = TimestampTzGetDatum(s->measured_at);
		n[6] = (s->measured_at == 0);
		v[7] = LSNGetDatum(s->source_flush_lsn);
		n[7] = (s->source_flush_lsn == InvalidXLogRecPtr);
		v[8] = LSNGetDatum(s->applied_lsn);
		n[8] = (s->applied_lsn == InvalidXLogRecPtr);
		v[9] = LSNGetDatum(s->slot_restart_lsn);
		n[9] = (s->slot_restart_lsn == InvalidXLogRecPtr);
		v[10] = TimestampTzGetDatum(s->last_source_commit);
		n[10] = (s->last_source_commit == 0);
		v[11] = Float8GetDatum(s->rows_per_sec);
		v[12] = CStringGetTextDatum(s->last_error);
		n[12] = !s->in_error;
		/* a live worker backing off, or the launcher's next start */
		if (s->pid != 0)
		{
			v[13] = TimestampTzGetDatum(s->retry_at);
			n[13] = (s->retry_at == 0);
		}
		else
		{
			v[13] = TimestampTzGetDatum(s->next_start);
			n[13] = (s->next_start == 0);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	LWLockRelease(sluice_shared->lock);
	return (Datum) 0;
}

/*
 * sluice._pool_status(): which pool worker serves each streaming pipeline of
 * this database, and whether it is in a batch of it.
 */
Datum
sluice_pool_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (sluice_shared == NULL)
		return (Datum) 0;

	LWLockAcquire(sluice_shared->lock, LW_SHARED);
	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];
		PoolWorker *pw;
		Datum		v[5];
		bool		n[5];

		if (!s->in_use || s->dboid != MyDatabaseId || s->pipeline_id == NOTIFIER_ID)
			continue;
		memset(n, 0, sizeof(n));
		v[0] = Int32GetDatum(s->pipeline_id);
		if (pool_gone(s->worker))
		{
			n[1] = n[2] = n[4] = true;
			v[3] = BoolGetDatum(false);
		}
		else
		{
			pw = &POOL_WORKERS()[s->worker];
			v[1] = Int32GetDatum(s->worker + 1);
			v[2] = Int32GetDatum(pw->pid);
			n[2] = (pw->pid == 0);
			v[3] = BoolGetDatum(pw->current == i);
			v[4] = TimestampTzGetDatum(pw->busy_since);
			n[4] = (pw->current != i || pw->busy_since == 0);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
	}
	LWLockRelease(sluice_shared->lock);
	return (Datum) 0;
}

/* ---------- launcher ---------- */

static BackgroundWorkerHandle *
start_bgworker(const char *function, const char *name, Oid dboid, Datum arg)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_sluice");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "%s", strcmp(function, "sluice_worker_main") == 0 ?
			 "pg_sluice worker" : "pg_sluice resume");
	bgw.bgw_main_arg = arg;
	memcpy(bgw.bgw_extra, &dboid, sizeof(Oid));
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
		return NULL;
	return handle;
}

/*
 * After a server start: let each database re-register its continuous
 * pipelines.  One short-lived worker per database, one at a time.
 */
static void
resume_databases(void)
{
	List	   *dbs = NIL;
	ListCell   *lc;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			dbs = lappend_oid(dbs, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	foreach(lc, dbs)
	{
		Oid			dboid = lfirst_oid(lc);
		BackgroundWorkerHandle *h;
		pid_t		pid;

		h = start_bgworker("sluice_resume_main", "pg_sluice resume", dboid,
						   ObjectIdGetDatum(dboid));
		if (h == NULL)
		{
			ereport(WARNING,
					(errmsg("pg_sluice launcher could not start a worker to resume continuous pipelines"),
					 errhint("Raise max_worker_processes.")));
			break;
		}
		if (WaitForBackgroundWorkerStartup(h, &pid) == BGWH_STARTED)
			(void) WaitForBackgroundWorkerShutdown(h);
		pfree(h);
	}
	list_free(dbs);
}

long
launcher_backoff_ms(int failures)
{
	long		ms = 1000;

	while (--failures > 0 && ms < MAX_BACKOFF_MS)
		ms *= 2;
	return Min(ms, MAX_BACKOFF_MS);
}

/*
 * Did a worker fail to start (no background worker slot free) less than
 * START_RETRY_MS ago?  Then new pipelines go to the workers there are, and
 * a pipeline no worker can take waits (slot_waits).  Lock held.
 */
#define START_RETRY_MS 1000

static bool
start_failed_within(TimestampTz now, int ms)
{
	return sluice_shared->start_failed_at != 0 &&
		!TimestampDifferenceExceeds(sluice_shared->start_failed_at, now, ms);
}

static bool
start_failed_lately(TimestampTz now)
{
	return start_failed_within(now, START_RETRY_MS);
}

/*
 * Why no worker can take a pipeline of (dboid, roleoid) now, in why
 * (ERROR_LEN bytes); false when one can (or will: a worker of theirs
 * exists).  A worker start that failed less than failed_ms ago counts.
 * Lock held.
 */
static bool
pool_wait_reason(Oid dboid, Oid roleoid, TimestampTz now, int failed_ms, char *why)
{
	PoolWorker *pool = POOL_WORKERS();
	int			napply = 0;
	int			w;

	for (w = 0; w < sluice_shared->nworkers; w++)
	{
		if (!pool[w].in_use || pool[w].notifier)
			continue;
		if (pool[w].dboid == dboid && pool[w].roleoid == roleoid)
			return false;
		napply++;
	}
	if (napply >= sluice_max_workers)
		snprintf(why, ERROR_LEN,
				 "waiting for a pool worker: all pg_sluice.max_workers (%d) serve pipelines of other databases or roles",
				 sluice_max_workers);
	else if (start_failed_within(now, failed_ms))
		snprintf(why, ERROR_LEN,
				 "waiting for a pool worker: no background worker slot is free (max_worker_processes = %d)",
				 max_worker_processes);
	else
		return false;
	return true;
}

/* A wanted pipeline no worker can take: say why, where sluice.status reads it.  Lock held. */
static void
slot_waits(WorkerSlot *s, const char *why, TimestampTz now)
{
	if (!s->waiting || strcmp(s->last_error, why) != 0)
	{
		strlcpy(s->last_error, why, ERROR_LEN);
		s->last_error_at = now;
	}
	s->waiting = true;
	s->in_error = true;
}

/* How many pipeline slots are assigned to pool worker w.  Lock held. */
static int
pool_load(int w)
{
	int			i;
	int			n = 0;

	for (i = 0; i < sluice_shared->nslots; i++)
		if (sluice_shared->slots[i].in_use && sluice_shared->slots[i].worker == w)
			n++;
	return n;
}

/*
 * A pool worker for a pipeline of (dboid, roleoid), other than avoid: the
 * least loaded one not stuck in a long batch, or a new one (*start) while
 * the pool has room and each has a pipeline already.  -1 when none.  Lock
 * held exclusively.
 */
static int
pool_pick(Oid dboid, Oid roleoid, int avoid, TimestampTz now, bool *start)
{
	PoolWorker *pool = POOL_WORKERS();
	int			best = -1;
	int			best_load = INT_MAX;
	int			free_w = -1;
	int			napply = 0;
	int			w;

	*start = false;
	for (w = 0; w < sluice_shared->nworkers; w++)
	{
		PoolWorker *pw = &pool[w];
		int			load;

		if (!pw->in_use)
		{
			if (free_w < 0)
				free_w = w;
			continue;
		}
		if (!pw->notifier)
			napply++;
		if (w == avoid || pw->notifier || pw->dboid != dboid || pw->roleoid != roleoid)
			continue;
		if (pw->busy_since != 0 &&
			TimestampDifferenceExceeds(pw->busy_since, now, sluice_batch_time))
			continue;
		load = pool_load(w);
		if (load < best_load)
		{
			best = w;
			best_load = load;
		}
	}
	if (free_w >= 0 && napply < sluice_max_workers && (best < 0 || best_load > 0) &&
		!start_failed_lately(now))
	{
		PoolWorker *pw = &pool[free_w];

		memset(pw, 0, sizeof(*pw));
		pw->in_use = true;
		pw->dboid = dboid;
		pw->roleoid = roleoid;
		pw->current = -1;
		*start = true;
		return free_w;
	}
	return best;
}

/*
 * Pool worker w is gone: its pipelines go to other workers.  The one it
 * died in the batch of (or all, when it died before reaching its loop)
 * waits a backoff first.  Lock held exclusively.
 */
static void
pool_release(int w, TimestampTz now)
{
	PoolWorker *pw = &POOL_WORKERS()[w];
	int			i;

	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];

		if (!s->in_use || (s->worker != w && s->holder != w))
			continue;
		if (s->wanted && s->worker == w && (pw->current == i || !pw->attached))
		{
			s->failures++;
			s->next_start = TimestampTzPlusMilliseconds(now, launcher_backoff_ms(s->failures));
		}
		if (s->worker == w)
			s->worker = -1;
		if (s->holder == w)
			s->holder = -1;
		s->pid = 0;
	}
	pw->in_use = false;
	pw->pid = 0;
	pw->latch = NULL;
	pw->current = -1;
	pw->busy_since = 0;
}

/*
 * Can pool worker w take a pipeline from another now?  Running, past its
 * start, not in one batch for longer than batch_time.  Lock held.
 */
static bool
pool_can_take(int w, TimestampTz now)
{
	PoolWorker *pw = &POOL_WORKERS()[w];

	return pw->in_use && !pw->notifier && pw->attached && pw->pid != 0 && pw->latch != NULL &&
		(pw->busy_since == 0 || !TimestampDifferenceExceeds(pw->busy_since, now, sluice_batch_time));
}

/*
 * Balance.  A new pipeline goes to the least loaded worker of its database
 * and role, but stops and drops leave the workers uneven (and a worker that
 * died gives all its pipelines to the others at once).  Every REBALANCE_MS,
 * a worker with two pipelines or more than another of its pair gives it
 * one: not the one it is applying, not one backing off (its backoff is the
 * worker's), and one move per look, so that a pipeline's stream is opened
 * again at most once per move and the pool settles.  Lock held
 * exclusively.
 */
#define REBALANCE_MS 5000

static void
pool_balance(TimestampTz now)
{
	static TimestampTz balanced_at = 0;
	PoolWorker *pool = POOL_WORKERS();
	int			w;

	if (!TimestampDifferenceExceeds(balanced_at, now, REBALANCE_MS))
		return;
	balanced_at = now;
	for (w = 0; w < sluice_shared->nworkers; w++)
	{
		int			load;
		int			to = -1;
		int			to_load = INT_MAX;
		int			v;
		int			i;

		if (!pool_can_take(w, now))
			continue;
		load = pool_load(w);
		for (v = 0; v < sluice_shared->nworkers; v++)
		{
			int			l;

			if (v == w || !pool_can_take(v, now) ||
				pool[v].dboid != pool[w].dboid || pool[v].roleoid != pool[w].roleoid)
				continue;
			l = pool_load(v);
			if (l < to_load)
			{
				to = v;
				to_load = l;
			}
		}
		if (to < 0 || load - to_load < 2)
			continue;
		for (i = 0; i < sluice_shared->nslots; i++)
		{
			WorkerSlot *s = &sluice_shared->slots[i];

			if (!s->in_use || !s->wanted || s->worker != w || pool[w].current == i ||
				s->in_error || s->retry_at != 0 || s->pipeline_id == NOTIFIER_ID)
				continue;
			s->worker = to;
			SetLatch(pool[w].latch);	/* lets go of it */
			SetLatch(pool[to].latch);	/* takes it once it is let go of */
			return;
		}
	}
}

/*
 * One look at the slots and the pool: free the slots nobody wants any more,
 * move the other pipelines of a worker stuck in a long batch, assign the
 * wanted ones.  Fills start[] with the workers to start; returns how long
 * to sleep at most.  Lock held exclusively.
 */
static long
pool_schedule(TimestampTz now, bool *start)
{
	PoolWorker *pool = POOL_WORKERS();
	long		wait_ms = 1000;
	int			i;
	int			w;

	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];

		if (s->in_use && !s->wanted && pool_gone(s->holder) && pool_gone(s->worker))
			s->in_use = false;
	}

	/* fairness: a worker in one batch for longer than batch_time keeps no other pipeline */
	for (w = 0; w < sluice_shared->nworkers; w++)
	{
		PoolWorker *pw = &pool[w];

		if (!pw->in_use || pw->notifier || pw->busy_since == 0 ||
			!TimestampDifferenceExceeds(pw->busy_since, now, sluice_batch_time))
			continue;
		for (i = 0; i < sluice_shared->nslots; i++)
		{
			WorkerSlot *s = &sluice_shared->slots[i];
			bool		st;
			int			to;

			if (!s->in_use || !s->wanted || s->worker != w || pw->current == i)
				continue;
			to = pool_pick(s->dboid, s->roleoid, w, now, &st);
			if (to < 0)
				break;			/* nowhere to go */
			s->worker = to;
			if (st)
				start[to] = true;
			else if (pool[to].latch)
				SetLatch(pool[to].latch);
		}
	}

	pool_balance(now);

	for (i = 0; i < sluice_shared->nslots; i++)
	{
		WorkerSlot *s = &sluice_shared->slots[i];

		if (!s->in_use || !s->wanted || !pool_gone(s->worker))
			continue;
		if (s->next_start > now)
		{
			long		secs;
			int			usecs;

			TimestampDifference(now, s->next_start, &secs, &usecs);
			wait_ms = Min(wait_ms, secs * 1000 + usecs / 1000 + 1);
			continue;
		}
		if (s->pipeline_id == NOTIFIER_ID)
		{
			/* a worker of its own (not again at once after a failed start) */
			for (w = 0; w < sluice_shared->nworkers && (pool[w].in_use || start_failed_lately(now)); w++)
				;
			if (w < sluice_shared->nworkers)
			{
				memset(&pool[w], 0, sizeof(PoolWorker));
				pool[w].in_use = true;
				pool[w].notifier = true;
				pool[w].dboid = s->dboid;
				pool[w].roleoid = s->roleoid;
				pool[w].current = -1;
				start[w] = true;
			}
		}
		else
		{
			bool		st;

			w = pool_pick(s->dboid, s->roleoid, -1, now, &st);
			if (w >= 0 && st)
				start[w] = true;
			else if (w >= 0 && pool[w].latch)
				SetLatch(pool[w].latch);
			if (w < 0)
			{
				char		why[ERROR_LEN];

				if (pool_wait_reason(s->dboid, s->roleoid, now, START_RETRY_MS, why))
					slot_waits(s, why, now);
			}
			else if (s->waiting && !st)
			{
				/* a worker has it: the wait is over (a started one says so itself, pool_sync) */
				s->waiting = false;
				s->in_error = false;
				s->last_error[0] = '\0';
			}
		}
		if (w >= 0 && w < sluice_shared->nworkers)
			s->worker = w;
	}
	return wait_ms;
}

void
sluice_launcher_main(Datum arg)
{
	BackgroundWorkerHandle **handles;
	bool	   *start;
	int			nworkers;

	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	sluice_fix_search_path();

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	sluice_shared->launcher_pid = MyProcPid;
	sluice_shared->launcher_latch = MyLatch;
	nworkers = sluice_shared->nworkers;
	LWLockRelease(sluice_shared->lock);

	handles = MemoryContextAllocZero(TopMemoryContext, sizeof(BackgroundWorkerHandle *) * nworkers);
	start = MemoryContextAllocZero(TopMemoryContext, sizeof(bool) * nworkers);
	resume_databases();

	while (!ShutdownRequestPending)
	{
		TimestampTz now = GetCurrentTimestamp();
		PoolWorker *pool = POOL_WORKERS();
		long		wait_ms;
		int			w;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* workers that exited */
		for (w = 0; w < nworkers; w++)
		{
			pid_t		pid;

			if (handles[w] != NULL &&
				GetBackgroundWorkerPid(handles[w], &pid) == BGWH_STOPPED)
			{
				pfree(handles[w]);
				handles[w] = NULL;
				LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
				pool_release(w, now);
				LWLockRelease(sluice_shared->lock);
			}
		}

		memset(start, 0, sizeof(bool) * nworkers);
		LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
		wait_ms = pool_schedule(now, start);
		/* a pool entry without a process (a failed start) is free again */
		for (w = 0; w < nworkers; w++)
			if (pool[w].in_use && handles[w] == NULL && !start[w])
				pool_release(w, now);
		LWLockRelease(sluice_shared->lock);

		for (w = 0; w < nworkers; w++)
		{
			char		name[BGW_MAXLEN];

			if (!start[w])
				continue;
			if (pool[w].notifier)
				snprintf(name, sizeof(name), "pg_sluice notifier");
			else
				snprintf(name, sizeof(name), "pg_sluice worker %d", w + 1);
			handles[w] = start_bgworker("sluice_worker_main", name, pool[w].dboid, Int32GetDatum(w));
			if (handles[w] == NULL)
			{
				int			i;

				/*
				 * No background worker slot free: not the pipelines' fault,
				 * no backoff.  The next look gives them to the workers there
				 * are, or says why they wait (pool_wait_reason).
				 */
				bool		first;

				LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
				first = !start_failed_lately(now);
				sluice_shared->start_failed_at = now;
				for (i = 0; i < sluice_shared->nslots; i++)
				{
					WorkerSlot *s = &sluice_shared->slots[i];

					if (s->in_use && s->worker == w)
						s->worker = -1;
				}
				pool_release(w, now);
				LWLockRelease(sluice_shared->lock);
				if (first)
					ereport(LOG,
							(errmsg("pg_sluice launcher could not start a pool worker: no background worker slot is free"),
							 errhint("Raise max_worker_processes (pg_sluice needs its launcher, pg_sluice.max_workers workers and a notifier per database with destinations) and restart the server.")));
			}
		}

		/* often enough to see a worker stuck in a long batch within a batch time */
		wait_ms = Min(wait_ms, Max(50, sluice_batch_time / 4));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* absorb proc signal barriers (DROP DATABASE waits for every process) */
		CHECK_FOR_INTERRUPTS();
	}

	LWLockAcquire(sluice_shared->lock, LW_EXCLUSIVE);
	sluice_shared->launcher_pid = 0;
	sluice_shared->launcher_latch = NULL;
	LWLockRelease(sluice_shared->lock);
	proc_exit(0);
}

/* ---------- resume: re-register a database's continuous pipelines ---------- */

void
sluice_resume_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	uint64		i;

	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	sluice_fix_search_path();

	worker_xact_begin();
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_sluice'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		/* events to deliver: this database needs its notifier */
		if (SPI_execute("SELECT 1 FROM sluice._destination LIMIT 1", true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1 &&
			!want_pipeline(dboid, NOTIFIER_ID, InvalidOid, "notifier"))
			ereport(WARNING,
					(errmsg("no free slot for the notifier"),
					 errhint("Raise pg_sluice.max_pipelines and restart the server.")));
	}
	else
		goto done;				/* pg_sluice is not installed here */

	if (SPI_execute("SELECT pipeline_id, run_as, name FROM sluice._pipeline "
					" WHERE continuous AND run_as IS NOT NULL ORDER BY pipeline_id",
					true, 0) == SPI_OK_SELECT)
	{
		/* (kept: recording a pipeline that waits runs SPI again) */
		SPITupleTable *tt = SPI_tuptable;
		uint64		n = SPI_processed;

		for (i = 0; i < n; i++)
		{
			bool		isnull;
			int			id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
			Oid			role = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
			char	   *name = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);

			if (!want_pipeline(dboid, id, role, name))
			{
				Oid			types[2] = {INT4OID, TEXTOID};
				Datum		args[2];

				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("pipeline \"%s\" cannot stream: no free slot", name),
						 errdetail("pg_sluice.max_pipelines (%d) pipelines already stream on this server.",
								   sluice_max_pipelines),
						 errhint("Raise pg_sluice.max_pipelines and restart the server, or stop another "
								 "pipeline and call sluice.start() for this one.")));
				/* what sluice.status shows as its last_error */
				args[0] = Int32GetDatum(id);
				args[1] = CStringGetTextDatum(psprintf("waiting: pg_sluice.max_pipelines (%d) reached; stop another "
													   "pipeline and call sluice.start() again, or raise it and restart",
													   sluice_max_pipelines));
				if (sluice_catalog_exec("UPDATE sluice._pipeline SET last_error = $2, last_error_at = now() "
										"WHERE pipeline_id = $1", 2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
					elog(ERROR, "could not record why pipeline \"%s\" waits", name);
			}
		}
	}
done:
	worker_xact_commit();
	proc_exit(0);
}

