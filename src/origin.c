/*-------------------------------------------------------------------------
 *
 * origin.c
 *	  Exactly-once bookkeeping with a replication origin per pipeline.
 *
 * NOTES
 *	  Each pipeline owns a replication origin ("sluice_<name>").  A refresh
 *	  sets the origin up for its session; just before its transaction commits,
 *	  replorigin_session_origin_lsn holds the source LSN the datamart reaches,
 *	  and the commit record carries it: the data and the position commit
 *	  atomically, and crash recovery restores both or neither.
 *
 *	  The source is only told positions read back from the origin with flush =
 *	  true (pg_replication_slot_advance at the start of the next refresh), so
 *	  it never forgets a change the datamart has not durably committed.  A
 *	  worker on the walsender transport tells it the same positions by
 *	  standby status updates instead (walstream.c), each once the local
 *	  commit that carried it is flushed; its new streams start at the
 *	  origin's position (origin_progress), and the source skips what its
 *	  slot confirmed already.  A streamed source transaction is applied at
 *	  its STREAM COMMIT, in one batch, so the origin moves past it with all
 *	  its rows or not at all, as for any other.
 *
 *	  The session is released when the transaction ends, by a transaction
 *	  callback, whatever the outcome.  A second refresh of the same pipeline
 *	  in the same transaction continues from the position that transaction
 *	  already reached (origin_session_progress returns it); a refresh of
 *	  another pipeline in the same transaction is refused, as one session can
 *	  only track one origin.
 *
 *	  origin_session_progress flushes the datamart's WAL up to the commit
 *	  that recorded the position it returns (refresh.c moves the slot there,
 *	  so it must be on disk); origin_session_applied does not, for the
 *	  walsender transport's batches, which only need to know where the last
 *	  one ended (the slot is told durable positions by walstream.c): a flush
 *	  at every batch made each asynchronous commit a synchronous one.
 *
 *	  What it never does.  Talk to the source: refresh.c moves the slot, with
 *	  the position read here.
 *
 *	  Rejected.  Keeping the applied position in a table of pg_sluice's own:
 *	  it would commit with the data too, but the origin also lets the commit
 *	  record carry the source's commit time, and is what PostgreSQL's own
 *	  subscriptions use and its tools show.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/origin.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "replication/origin.h"
#include "utils/memutils.h"

#include "pg_sluice.h"

static RepOriginId xact_origin = InvalidRepOriginId;

/*
 * The positions set in this transaction, each with the subtransaction that
 * set it: a refresh rolled back to a savepoint must not leave its position
 * behind, or the next refresh in the transaction would skip what was rolled
 * back.  Subtransaction ids grow, so aborting subtransaction S undoes every
 * entry set by S or its children (ids >= S).
 */
typedef struct PendingLsn
{
	SubTransactionId subid;
	XLogRecPtr	lsn;
} PendingLsn;

static PendingLsn *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;

static void
origin_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			i;

	if (npending == 0)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < npending; i++)
			if (pending[i].subid >= mySubid)
				pending[i].subid = parentSubid;
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (npending > 0 && pending[npending - 1].subid >= mySubid)
			npending--;
		if (xact_origin != InvalidRepOriginId)
			replorigin_session_origin_lsn =
				npending > 0 ? pending[npending - 1].lsn : InvalidXLogRecPtr;
	}
}

static void
origin_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			npending = 0;
			if (xact_origin != InvalidRepOriginId)
			{
				xact_origin = InvalidRepOriginId;
				replorigin_session_reset();
				replorigin_session_origin = InvalidRepOriginId;
				replorigin_session_origin_lsn = InvalidXLogRecPtr;
				replorigin_session_origin_timestamp = 0;
			}
			break;
		default:
			break;
	}
}

/*
 * Called once from _PG_init.
 */
void
origin_init(void)
{
	RegisterXactCallback(origin_xact_callback, NULL);
	RegisterSubXactCallback(origin_subxact_callback, NULL);
}

/*
 * Attach this transaction to the pipeline's origin.  Raises a clear error
 * when another backend holds it (a continuous worker, or a session that
 * set it up by hand).
 */
void
origin_session_begin(const char *origin_name)
{
	RepOriginId id;

	id = replorigin_by_name(origin_name, true);
	if (id == InvalidRepOriginId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication origin \"%s\" of the pipeline is missing", origin_name),
				 errhint("Drop the pipeline with sluice.drop_pipeline() and create it again.")));

	if (xact_origin == id)
		return;					/* same pipeline again in this transaction */
	if (xact_origin != InvalidRepOriginId ||
		replorigin_session_origin != InvalidRepOriginId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot refresh two pipelines in one transaction"),
				 errhint("Refresh each pipeline in its own transaction.")));

	replorigin_session_setup(id);
	replorigin_session_origin = id;
	xact_origin = id;
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
}

/*
 * The source LSN this datamart has durably applied, or the one this very
 * transaction reached already.
 */
XLogRecPtr
origin_session_progress(void)
{
	if (replorigin_session_origin_lsn != InvalidXLogRecPtr)
		return replorigin_session_origin_lsn;
	return replorigin_session_get_progress(true);
}

/*
 * The same without waiting for it to be on disk: the walsender transport's
 * batches (refresh.c) start from what the last batch committed, durable or
 * not (the slot is told only durable positions, walstream.c), where
 * origin_session_progress would flush the datamart's WAL at every batch and
 * undo the asynchronous commit of the one before.
 */
XLogRecPtr
origin_session_applied(void)
{
	if (replorigin_session_origin_lsn != InvalidXLogRecPtr)
		return replorigin_session_origin_lsn;
	return replorigin_session_get_progress(false);
}

/*
 * Set the position this transaction's commit records.
 */
void
origin_session_set(XLogRecPtr lsn, TimestampTz committime)
{
	Assert(xact_origin != InvalidRepOriginId);
	if (npending == maxpending)
	{
		maxpending = Max(8, maxpending * 2);
		pending = pending == NULL ?
			MemoryContextAlloc(TopMemoryContext, maxpending * sizeof(PendingLsn)) :
			repalloc(pending, maxpending * sizeof(PendingLsn));
	}
	pending[npending].subid = GetCurrentSubTransactionId();
	pending[npending].lsn = lsn;
	npending++;
	replorigin_session_origin_lsn = lsn;
	replorigin_session_origin_timestamp = committime;
}

/*
 * The source position the pipeline's origin holds, outside any session
 * (where a worker's new stream starts), or 0 when it has none.  With flush,
 * the local commit that set it is flushed first, so the position is durable
 * (what may be told to the source's slot: spool.c, slotwatch.c).
 */
XLogRecPtr
origin_progress(const char *origin_name, bool flush)
{
	RepOriginId id = replorigin_by_name(origin_name, true);

	if (id == InvalidRepOriginId)
		return InvalidXLogRecPtr;
	return replorigin_get_progress(id, flush);
}

/*
 * Is the position origin_session_progress returns durable (no batch of this
 * transaction set one yet)?  slotwatch.c moves a slot only to such.
 */
bool
origin_session_durable(void)
{
	return replorigin_session_origin_lsn == InvalidXLogRecPtr;
}
