/*-------------------------------------------------------------------------
 *
 * copyworker.c
 *	  The background copy workers: the chunks of the tables a pipeline
 *	  copies (create_pipeline's chunked tables, sluice.add_table,
 *	  sluice.resnapshot), copied by up to pg_sluice.copy_workers processes
 *	  at once, while the pipeline streams or waits for its refreshes.
 *
 * NOTES
 *	  What this file owns.  Starting the workers, and their loop.  A
 *	  function that asks for a copy (copyworker_launch) starts them when its
 *	  transaction commits, as slotwatch.c starts its slot movers: a worker
 *	  started earlier would not see the pipeline.  Each is a dynamic
 *	  background worker of the database, connected as the bootstrap
 *	  superuser and working as the role that asked (it must still operate
 *	  the pipeline; that role's ALTER ROLE ... SET settings never apply, as
 *	  for the pool workers: worker.c's NOTES, "Settings"), holding one of
 *	  the pipeline's pg_sluice.copy_workers slots for its life (a session
 *	  lock: a second worker for the same slot exits at once, so starting
 *	  them again is harmless).  Its loop is snapshot.c's: claim a range,
 *	  commit, copy it, commit; when nothing is left to claim it exits, the
 *	  last one after
 *	  refreshing a pipeline refreshed on demand so that the copies finish
 *	  (snapshot_copy_finish).  A worker that fails exits with 1 and the
 *	  postmaster starts it again 5 s later (bgw_restart_time), also after a
 *	  crash of the datamart's backends; the range it was copying is claimed
 *	  and copied by nobody, and the next worker takes it first.  After a
 *	  restart of the datamart's server the workers are gone: whatever
 *	  applies the pipeline's stream next (a refresh, or the streaming
 *	  worker between its batches, snapshot_worker_step) starts them again.
 *
 *	  Backoff.  A failure that lasts (a privilege taken on live, a
 *	  constraint of the datamart's the rows break) would fail every 5 s for
 *	  ever.  A failing worker records the failure before it exits
 *	  (sluice._copy_failure: failures in a row, the last error, the next
 *	  attempt 5 s after the first failure, doubling up to 5 minutes); a
 *	  worker that starts waits for that next attempt, interruptibly,
 *	  holding its slot, and goes on at once when a chunk was copied since
 *	  the last failure (sluice.copy_chunk in a session, the way forward the
 *	  log's hint names, or another worker) or the row went.  The first
 *	  chunk a worker copies removes the row, and so does a worker that finds
 *	  nothing left to copy.
 *	  sluice.copy_failures shows it, the error's text only to those who see
 *	  the pipeline's run errors (sluice._error_shown), and sluice.status's
 *	  copy column says that the workers wait.  A cancel (pg_cancel_backend)
 *	  is no failure: the worker is started again 5 s later, as before.
 *
 *	  The server's bound.  pg_sluice.copy_workers is any role's setting (an
 *	  operator sets it to 0 to copy in its session): alone it let one
 *	  operator take every background worker slot of the server, and the
 *	  other owners' pipelines waited for a pool worker.  So a worker also
 *	  holds one of the server's pg_sluice.max_copy_workers slots (an
 *	  administrator's setting; session locks of database 0), the launch
 *	  starts no more workers than are free, and a worker that finds none
 *	  (launches racing) exits at once; the pipeline's next refresh, or its
 *	  streaming worker, starts its workers again (snapshot_copy_resume).
 *
 *	  What it never does.  Copy, filter the stream or record progress
 *	  (snapshot.c).  Take shared memory of its own: the slots are locks.
 *
 *	  Rejected.  Backing off inside the process that failed (what is left
 *	  of a failed transaction, a connection to live in an unknown state);
 *	  a growing bgw_restart_time (it is fixed when the worker is
 *	  registered).  Chunks copied by the streaming worker between its batches:
 *	  a chunk of 100,000 rows takes about a second, which every other
 *	  pipeline of that worker would wait for, and it copies one range at a
 *	  time.  A worker per table: one big table, the common case, would get
 *	  one.  Workers started by the launcher: it belongs to the pool and
 *	  serves streaming pipelines only.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/copyworker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"

PGDLLEXPORT void sluice_copy_worker_main(Datum arg);

/* What a worker is started with, besides its pipeline. */
typedef struct CopyWorkerArgs
{
	Oid			dboid;
	Oid			roleoid;
	int			slot;
} CopyWorkerArgs;

/* a worker's slot: the fourth field no SQL advisory lock uses (1, 2) nor snapshot.c (3) */
#define COPY_SLOT_FIELD4 4
#define COPY_SLOTS_MAX 16
/* one of the server's slots (pg_sluice.max_copy_workers): database 0, which no SQL advisory lock names */
#define COPY_SERVER_FIELD4 5
#define COPY_SERVER_SLOTS_MAX 64

/* the wait before the next attempt after failures in a row: 5 s, doubling, at most 5 minutes */
#define COPY_RETRY_FIRST_MS 5000
#define COPY_RETRY_MAX_MS 300000

static int	sluice_copy_workers = 2;
static int	sluice_max_copy_workers = 4;
static List *launches = NIL;	/* pipelines whose workers start at commit */
static bool launch_callback = false;

void
copyworker_init(void)
{
	DefineCustomIntVariable("pg_sluice.copy_workers",
							"Sets how many background workers copy the chunks of one pipeline at once.",
							"create_pipeline (chunked tables), add_table and resnapshot start them when their transaction commits; "
							"each copies one chunk at a time, in its own transactions. 0: no worker, CALL sluice.copy_tables copies "
							"the chunks one after the other.",
							&sluice_copy_workers, 2, 0, COPY_SLOTS_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.max_copy_workers",
							"Sets how many copy workers may run at once on the server, all pipelines together.",
							"pg_sluice.copy_workers, which any role may set, asks for workers of one pipeline; this "
							"administrator's setting bounds how many background worker slots copies take in all. "
							"A copy that finds them all busy is started by its pipeline's next refresh or its streaming worker.",
							&sluice_max_copy_workers, 4, 0, COPY_SERVER_SLOTS_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
}

static void
server_tag(LOCKTAG *tag, int slot)
{
	SET_LOCKTAG_ADVISORY(*tag, InvalidOid, 0, (uint32) slot, COPY_SERVER_FIELD4);
}

/*
 * Take one of the server's pg_sluice.max_copy_workers slots for the life
 * of this process (a session lock); false when every one is held.
 */
static bool
server_slot_take(void)
{
	int			i;

	for (i = 0; i < sluice_max_copy_workers; i++)
	{
		LOCKTAG		tag;

		server_tag(&tag, i);
		if (LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL)
			return true;
	}
	return false;
}

/* How many of the server's slots no copy worker holds now. */
static int
server_slots_free(void)
{
	int			i;
	int			n = 0;

	for (i = 0; i < sluice_max_copy_workers; i++)
	{
		LOCKTAG		tag;

		server_tag(&tag, i);
		if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
			continue;
		LockRelease(&tag, ExclusiveLock, true);
		n++;
	}
	return n;
}

static void
slot_tag(LOCKTAG *tag, int pipeline_id, int slot)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) pipeline_id, (uint32) slot, COPY_SLOT_FIELD4);
}

int
copyworker_count(void)
{
	return sluice_copy_workers;
}

/* Does a copy worker of the pipeline run now? */
bool
copyworker_running(int pipeline_id)
{
	int			i;

	for (i = 0; i < COPY_SLOTS_MAX; i++)
	{
		LOCKTAG		tag;

		slot_tag(&tag, pipeline_id, i);
		if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
			return true;
		LockRelease(&tag, ExclusiveLock, true);
	}
	return false;
}

static void
copyworker_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		int			free_slots = launches != NIL ? server_slots_free() : 0;

		foreach(lc, launches)
		{
			int			pipeline_id = lfirst_int(lc);
			int			i;

			if (free_slots < 1)
			{
				ereport(WARNING,
						(errmsg("no copy worker can start for pipeline %d: the server's %d are busy",
								pipeline_id, sluice_max_copy_workers),
						 errdetail("pg_sluice.max_copy_workers bounds the copy workers of all pipelines together."),
						 errhint("The pipeline's next refresh, or its streaming worker, starts them once some are free; "
								 "CALL sluice.copy_tables copies the chunks in this session meanwhile, or an administrator "
								 "raises pg_sluice.max_copy_workers.")));
				continue;
			}
			for (i = 0; i < sluice_copy_workers && free_slots > 0; i++, free_slots--)
			{
				BackgroundWorker bgw;
				BackgroundWorkerHandle *handle;
				CopyWorkerArgs a;

				memset(&bgw, 0, sizeof(bgw));
				bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
				bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
				bgw.bgw_restart_time = 5;
				snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_sluice");
				snprintf(bgw.bgw_function_name, BGW_MAXLEN, "sluice_copy_worker_main");
				snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_sluice copy worker %d of pipeline %d", i + 1, pipeline_id);
				snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_sluice copy worker");
				bgw.bgw_main_arg = Int32GetDatum(pipeline_id);
				a.dboid = MyDatabaseId;
				a.roleoid = GetUserId();
				a.slot = i;
				memcpy(bgw.bgw_extra, &a, sizeof(a));
				bgw.bgw_notify_pid = 0;
				if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
					ereport(WARNING,
							(errmsg("no free background worker slot to copy the chunks of pipeline %d", pipeline_id),
							 errhint("Raise max_worker_processes, or CALL sluice.copy_tables to copy them in this session.")));
			}
		}
	}
	list_free(launches);
	launches = NIL;
}

/* Start the pipeline's copy workers when this transaction commits. */
void
copyworker_launch(int pipeline_id)
{
	MemoryContext old;

	if (sluice_copy_workers == 0)
		return;
	if (!launch_callback)
	{
		RegisterXactCallback(copyworker_xact_callback, NULL);
		launch_callback = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	launches = list_append_unique_int(launches, pipeline_id);
	MemoryContextSwitchTo(old);
}

/* The pipeline has copies left: start its workers unless some run. */
void
copyworker_ensure(int pipeline_id)
{
	if (sluice_copy_workers > 0 && !list_member_int(launches, pipeline_id) &&
		!copyworker_running(pipeline_id))
		copyworker_launch(pipeline_id);
}

/*
 * Between two batches of a streaming pipeline (worker.c, outside any
 * transaction), at most once a second per pipeline: retire the copied
 * ranges its stream passed and start copy workers for what is left when
 * none runs (after a restart of the server).  An error here is logged,
 * never the batch's.
 */
void
snapshot_worker_step(int pipeline_id)
{
	static int	ids[64];
	static TimestampTz at[64];
	TimestampTz now = GetCurrentTimestamp();
	int			i = pipeline_id % 64;
	MemoryContext cxt = CurrentMemoryContext;

	if (ids[i] == pipeline_id && !TimestampDifferenceExceeds(at[i], now, 1000))
		return;
	ids[i] = pipeline_id;
	at[i] = now;
	PG_TRY();
	{
		if (snapshot_retire_streamed(pipeline_id))
		{
			StartTransactionCommand();
			copyworker_ensure(pipeline_id);
			CommitTransactionCommand();
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

/*
 * Wait until the pipeline's copy workers may try again after failures (see
 * the NOTES, "Backoff"): until the next attempt is due, or at once when the
 * record of the failures goes or a chunk was copied since the last failure
 * (by a session or another worker).  Outside any transaction; a look every
 * second.
 */
static void
backoff_wait(int pipeline_id)
{
	for (;;)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(pipeline_id)};
		TimestampTz next = 0;
		bool		copied = false;
		bool		found;
		long		ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		worker_xact_begin();
		if (sluice_catalog_exec("SELECT f.next_attempt_at, "
								"       EXISTS (SELECT FROM sluice._copy c "
								"                WHERE c.pipeline_id OPERATOR(pg_catalog.=) $1 "
								"                  AND c.last_chunk_at OPERATOR(pg_catalog.>) f.failed_at) "
								"  FROM sluice._copy_failure f WHERE f.pipeline_id OPERATOR(pg_catalog.=) $1",
								1, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the backoff of the copy workers");
		found = SPI_processed == 1;
		if (found)
		{
			bool		isnull;

			next = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			copied = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
		worker_xact_commit();
		if (!found || copied)
			return;				/* no failure, or a chunk copied since: the cause is gone */
		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next);
		if (ms <= 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(ms, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Record a failure of a copy worker of the pipeline (its transaction rolled
 * back) and when the workers try again, and say so in the log with the way
 * forward.
 */
static void
backoff_record(int pipeline_id, const char *message)
{
	Oid			types[4] = {INT4OID, TEXTOID, INT4OID, INT4OID};
	Datum		args[4];
	int32		failures = 0;
	char	   *next = NULL;
	char	   *name = NULL;

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(message != NULL ? message : "unknown error");
	args[2] = Int32GetDatum(COPY_RETRY_FIRST_MS);
	args[3] = Int32GetDatum(COPY_RETRY_MAX_MS);
	worker_xact_begin();
	/* (nothing when the pipeline was dropped meanwhile) */
	if (sluice_catalog_exec("INSERT INTO sluice._copy_failure AS f "
							"       (pipeline_id, failures, last_error, failed_at, next_attempt_at) "
							"SELECT p.pipeline_id, 1, $2, pg_catalog.clock_timestamp(), "
							"       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) "
							"       pg_catalog.make_interval(secs => $3 OPERATOR(pg_catalog./) 1000.0) "
							"  FROM sluice._pipeline p WHERE p.pipeline_id OPERATOR(pg_catalog.=) $1 "
							"ON CONFLICT (pipeline_id) DO UPDATE "
							"   SET failures = f.failures OPERATOR(pg_catalog.+) 1, last_error = $2, "
							"       failed_at = pg_catalog.clock_timestamp(), "
							"       next_attempt_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) "
							"         pg_catalog.make_interval(secs => LEAST($4::float8, $3::float8 OPERATOR(pg_catalog.*) "
							"           (2::float8 OPERATOR(pg_catalog.^) LEAST(f.failures, 30)::float8)) OPERATOR(pg_catalog./) 1000.0) "
							"RETURNING f.failures, pg_catalog.to_char(f.next_attempt_at, 'YYYY-MM-DD HH24:MI:SS TZ'), "
							"          (SELECT p.name FROM sluice._pipeline p WHERE p.pipeline_id OPERATOR(pg_catalog.=) $1)",
							4, types, args, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record the failure of a copy worker");
	if (SPI_processed == 1)
	{
		bool		isnull;

		failures = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		next = MemoryContextStrdup(TopMemoryContext, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
		name = MemoryContextStrdup(TopMemoryContext, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3));
	}
	worker_xact_commit();
	if (name != NULL)
		ereport(LOG,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the copy workers of pipeline \"%s\" failed %d time%s in a row; they try again at %s",
						name, failures, failures == 1 ? "" : "s", next),
				 errdetail("Each failure in a row doubles the wait, from %d seconds up to %d minutes; the error is above and in sluice.copy_failures.",
						   COPY_RETRY_FIRST_MS / 1000, COPY_RETRY_MAX_MS / 60000),
				 errhint("Fix the cause; SELECT sluice.copy_chunk('%s') tries a chunk at once in your session and shows the error, and once a chunk is copied the workers go on.",
						 name)));
}

/* A chunk was copied: the failures in a row are over. */
static void
backoff_reset(int pipeline_id)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(pipeline_id)};

	worker_xact_begin();
	if (sluice_catalog_exec("DELETE FROM sluice._copy_failure WHERE pipeline_id OPERATOR(pg_catalog.=) $1",
							1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not reset the backoff of the copy workers");
	worker_xact_commit();
}

void
sluice_copy_worker_main(Datum arg)
{
	int			pipeline_id = DatumGetInt32(arg);
	CopyWorkerArgs a;
	LOCKTAG		tag;
	MemoryContext cxt;

	memcpy(&a, MyBgworkerEntry->bgw_extra, sizeof(a));
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, StatementCancelHandler);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	/*
	 * Connected as the bootstrap superuser, working as the role that asked:
	 * that role may be NOLOGIN (a pipeline owner role), which a background
	 * worker of PostgreSQL 15 cannot connect as.
	 */
	BackgroundWorkerInitializeConnectionByOid(a.dboid, BOOTSTRAP_SUPERUSERID, 0);
	SetUserIdAndSecContext(a.roleoid, SECURITY_LOCAL_USERID_CHANGE);
	sluice_fix_search_path();
	pgstat_report_appname("pg_sluice copy worker");

	/* one worker per slot: another one holding it does the work */
	slot_tag(&tag, pipeline_id, a.slot);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		proc_exit(0);
	/*
	 * and one of the server's: else the others are busy, and the pipeline's
	 * next refresh or streaming worker starts it again (snapshot_copy_resume)
	 */
	if (!server_slot_take())
	{
		elog(LOG, "copy worker %d of pipeline %d leaves: the server's %d copy workers (pg_sluice.max_copy_workers) are busy",
			 a.slot + 1, pipeline_id, sluice_max_copy_workers);
		proc_exit(0);
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice copy worker", ALLOCSET_DEFAULT_SIZES);
	backoff_wait(pipeline_id);
	PG_TRY();
	{
		bool		reset = true;	/* the first chunk copied ends the failures */

		for (;;)
		{
			CopyStep	step;

			CHECK_FOR_INTERRUPTS();
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
			MemoryContextReset(cxt);
			MemoryContextSwitchTo(cxt);
			step = snapshot_copy_step(pipeline_id, cxt);
			if (step == COPY_STEP_COPIED)
			{
				if (reset)
					backoff_reset(pipeline_id);
				reset = false;
				continue;
			}
			if (step == COPY_STEP_ALL_COPIED)
				(void) snapshot_copy_finish(pipeline_id);
			/* nothing left to copy (copied in a session meanwhile?): no failure waits */
			if (reset && (step == COPY_STEP_ALL_COPIED || step == COPY_STEP_GONE))
				backoff_reset(pipeline_id);
			break;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		/* a cancel is no failure: exit, started again 5 s later */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			PG_RE_THROW();
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		backoff_record(pipeline_id, edata->message);
		proc_exit(1);
	}
	PG_END_TRY();
	/* exit 0: a dynamic worker that ends well is not started again */
	proc_exit(0);
}

PG_FUNCTION_INFO_V1(sluice_copy_workers_running);

/* sluice._copy_workers_running(pipeline), for sluice.copy_tables */
Datum
sluice_copy_workers_running(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	SluicePipeline *pipe;
	bool		running;

	sluice_fix_search_path();
	SPI_connect();
	pipe = catalog_pipeline(name, false);
	sluice_check_operator(pipe, "copy");
	running = copyworker_running(pipe->pipeline_id);
	SPI_finish();
	PG_RETURN_BOOL(running);
}
