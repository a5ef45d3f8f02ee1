/*-------------------------------------------------------------------------
 *
 * worker_internal.h
 *	  The shared state of continuous mode, between the launcher
 *	  (launcher.c) and the workers it starts (worker.c).
 *
 * NOTES
 *	  Why a private header.  Only launcher.c and worker.c touch the slots in
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

typedef struct WorkerSlot
{
	bool		in_use;
	bool		wanted;			/* the pipeline should stream */
	Oid			dboid;
	Oid			roleoid;
	int			pipeline_id;
	char		pipeline[NAMEDATALEN];
	pid_t		pid;			/* apply worker, 0 when none */
	int			failures;		/* consecutive failed batches or deaths */
	TimestampTz next_start;		/* launcher: not before */
	TimestampTz started_at;		/* apply worker start */
	TimestampTz last_batch_at;	/* last committed batch that applied rows */
	TimestampTz measured_at;	/* last look at the source */
	XLogRecPtr	source_flush_lsn;
	XLogRecPtr	applied_lsn;
	XLogRecPtr	slot_restart_lsn;
	TimestampTz last_source_commit;
	double		rows_per_sec;
	int64		rows_applied;	/* since the worker started */
	bool		in_error;
	char		last_error[ERROR_LEN];
	TimestampTz last_error_at;
	TimestampTz retry_at;		/* apply worker backing off after a failed
								 * batch: its next attempt, else 0 */
	XLogRecPtr	failed_at;		/* walsender transport: how far the stream
								 * had come when a batch failed */
} WorkerSlot;

typedef struct SluiceShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} SluiceShared;

extern SluiceShared *sluice_shared;

#define NOTIFIER_ID 0			/* the slot of a database's notifier */

/* launcher.c */
extern long launcher_backoff_ms(int failures);

#endif							/* WORKER_INTERNAL_H */
