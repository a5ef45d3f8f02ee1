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
 *	  What it never does.  Copy, filter the stream or record progress
 *	  (snapshot.c).  Take shared memory of its own: the slots are locks.
 *
 *	  Rejected.  Chunks copied by the streaming worker between its batches:
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

static int	sluice_copy_workers = 2;
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
		foreach(lc, launches)
		{
			int			pipeline_id = lfirst_int(lc);
			int			i;

			for (i = 0; i < sluice_copy_workers; i++)
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

	cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice copy worker", ALLOCSET_DEFAULT_SIZES);
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
			continue;
		if (step == COPY_STEP_ALL_COPIED)
			(void) snapshot_copy_finish(pipeline_id);
		break;
	}
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
