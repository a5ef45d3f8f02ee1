/*-------------------------------------------------------------------------
 *
 * worker_internal.h
 *	  The shared state of continuous mode, between the launcher
 *	  (launcher.c) and the workers it starts (worker.c).
 *
 * NOTES
 *	  Why a private header.  Only launcher.c and worker.c touch the slots
 *	  (one per streaming pipeline) and the pool (one entry per worker) in
 *	  shared memory, under the lock they hold; everyone else goes through
 *	  worker_stop_pipeline, worker_still_wanted and the SQL functions.  The
 *	  slots hold no process-local pointer: a launcher latch and a lock only,
 *	  both in shared memory.
 *
 *	  Build note.  The Makefile names pg_sluice.h as every object's
 *	  dependency, not this file: after changing it, rebuild from clean (make
 *	  clean).
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/worker_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WORKER_INTERNAL_H
#define WORKER_INTERNAL_H

#include "storage/latch.h"
#include "storage/lwlock.h"

#include "pg_sluice.h"

#define ERROR_LEN 512
#define MAX_BACKOFF_MS 60000

/* One pipeline that streams (or a database's notifier): pg_sluice.max_pipelines of them. */
typedef struct WorkerSlot
{
	bool		in_use;
	bool		wanted;			/* the pipeline should stream */
	Oid			dboid;
	Oid			roleoid;
	int			pipeline_id;
	char		pipeline[NAMEDATALEN];
	int			worker;			/* pool worker it is assigned to, -1 when
								 * none (the launcher's to set) */
	int			holder;			/* pool worker holding its source stream or
								 * in one of its batches, -1 when none (the
								 * workers' to set) */
	pid_t		pid;			/* its pool worker's process, 0 when none */
	int			failures;		/* consecutive failed batches or deaths */
	TimestampTz next_start;		/* launcher: not assigned before */
	TimestampTz started_at;		/* served by its worker since */
	TimestampTz last_batch_at;	/* last committed batch that applied rows */
	TimestampTz measured_at;	/* last look at the source */
	XLogRecPtr	source_flush_lsn;
	XLogRecPtr	applied_lsn;
	XLogRecPtr	slot_restart_lsn;
	TimestampTz last_source_commit;
	double		rows_per_sec;
	int64		rows_applied;	/* since its worker took it */
	bool		in_error;
	char		last_error[ERROR_LEN];
	TimestampTz last_error_at;
	TimestampTz retry_at;		/* backing off after a failed batch: its next
								 * attempt, else 0 */
	bool		waiting;		/* no worker can take it: last_error says why
								 * (the launcher's to set and clear) */
} WorkerSlot;

/* One process of the pool: pg_sluice.max_workers of them. */
typedef struct PoolWorker
{
	bool		in_use;			/* started by the launcher, not yet seen gone */
	bool		notifier;		/* runs a database's notifier, nothing else */
	bool		attached;		/* reached its loop (a death before counts
								 * against all its pipelines) */
	Oid			dboid;			/* it serves pipelines of this database */
	Oid			roleoid;		/* that run as this role */
	pid_t		pid;
	Latch	   *latch;
	int			current;		/* pipeline slot of the batch it runs, -1 */
	TimestampTz busy_since;		/* that batch's start, 0 between batches */
	TimestampTz started_at;
} PoolWorker;

typedef struct SluiceShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;			/* pipelines: slots[] */
	int			nworkers;		/* pool: workers() */
	TimestampTz start_failed_at;	/* the launcher's last failed worker start
									 * (max_worker_processes), else 0 */
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
	/* followed by PoolWorker[nworkers] */
} SluiceShared;

extern SluiceShared *sluice_shared;

/* the pool, after the pipeline slots in the same shared memory */
#define POOL_WORKERS() \
	((PoolWorker *) ((char *) sluice_shared + MAXALIGN(offsetof(SluiceShared, slots) + \
					  sizeof(WorkerSlot) * sluice_shared->nslots)))

#define NOTIFIER_ID 0			/* the slot of a database's notifier */

/* launcher.c */
extern long launcher_backoff_ms(int failures);
extern int	sluice_test_error_pid;
extern int	sluice_batch_interval;

#endif							/* WORKER_INTERNAL_H */
