/*-------------------------------------------------------------------------
 *
 * refresh.c
 *	  One bounded pull-and-apply of a pipeline: what sluice.refresh() does
 *	  once, and what a continuous worker does in a loop.
 *
 * NOTES
 *	  What this file owns.  A batch from start to recorded run.  The source's
 *	  flushed WAL position is read first; everything committed before it is
 *	  decoded (stream.c) and applied (apply.c) in the caller's transaction, as
 *	  the pipeline's owner, in a subtransaction.  The slot is only told
 *	  positions the datamart has durably committed: at the start of each batch
 *	  it is advanced to the replication origin's progress, which the previous
 *	  batch committed atomically with its data.  Whether a big backlog is
 *	  decoded in two parts at once is decided here.  Models over what the
 *	  batch changed are maintained (model.c), then set expectations run,
 *	  after the batch's rows are written and before it commits.  When the
 *	  batch must pause the pipeline (drift, an error-severity expectation, a
 *	  missing row under strict), the error carries a SluiceDrift in the
 *	  batch's ApplyStats: the subtransaction rolls back, and the pause, its
 *	  drift event and its alert are recorded in the caller's transaction,
 *	  where they survive.  refresh_record_run writes the run, its expectation
 *	  results, per-table counts, divergence and events.
 *
 *	  An HTTP pipeline (no slot, no connection) runs http_refresh
 *	  (httpapply.c) in the same subtransaction, with the same pause, run and
 *	  event handling.
 *
 *	  A refresh may read its backlog over the walsender instead
 *	  (pg_sluice.refresh_transport = walsender, or auto with
 *	  pg_sluice.refresh_walsender_min set, for a backlog that large from a
 *	  source reached over TCP: refresh_by_walsender; refresh_by_stream): a
 *	  replication connection streams from the origin's position until the
 *	  walsender has passed the refresh's end, and stays open until the
 *	  caller's transaction ends; its commit callback flushes the commit and
 *	  confirms the position to the walsender, so the slot moves at the commit
 *	  with nothing decoded again (an abort just closes it).  Before it
 *	  starts, the slot's restart position is brought up to its confirmed
 *	  one by pg_replication_slot_advance, which decodes that stretch in
 *	  fast-forward mode: the walsender would queue every change of it again.
 *
 *	  A continuous worker's batch over the walsender transport
 *	  (refresh_pipeline_ws) is the same but for the source side: it applies
 *	  what the open stream has delivered (apply_walstream) and never moves
 *	  the slot (the worker's status updates do, walstream.c).  A refresh
 *	  (or a drain, spool.c, through refresh_describe_slot)
 *	  that finds the slot held (a worker stopped a moment ago leaves its
 *	  walsender behind briefly) waits up to 5 s for it.
 *
 *	  What it never does.  Parse or apply a message, or write the decoding
 *	  query.
 *
 *	  Rejected.  Advancing the slot at the end of the batch, before its commit
 *	  is durable: a crash in between would lose changes on the source side.
 *	  Pausing from inside the batch's transaction: the rollback would take the
 *	  pause along.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/refresh.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"

/* how long a refresh waits for a stopped worker's walsender to free the slot */
#define SLOT_RELEASE_WAIT_MS 5000

/*
 * A refresh over the walsender keeps its stream open until its transaction
 * ends: at commit the position it applied is confirmed to the walsender
 * (the slot moves there), at abort the stream just closes.  One at a time:
 * a second refresh in the same transaction closes the first one's stream
 * unconfirmed (the slot then moves at the next refresh).
 */
static WalStream *refresh_ws = NULL;
static XLogRecPtr refresh_ws_lsn = InvalidXLogRecPtr;
static SubTransactionId refresh_ws_subid = InvalidSubTransactionId;
static bool refresh_ws_callback = false;

static void refresh_ws_drop(void);

/*
 * The refresh's writes live in the subtransaction that called it: when that
 * one (or one above it) rolls back, a PL/pgSQL exception block say, and the
 * transaction still commits, the position must not be confirmed.
 */
static void
refresh_ws_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	if (refresh_ws == NULL || refresh_ws_subid == InvalidSubTransactionId)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB && mySubid == refresh_ws_subid)
		refresh_ws_subid = parentSubid;
	else if (event == SUBXACT_EVENT_ABORT_SUB && mySubid <= refresh_ws_subid)
	{
		refresh_ws_lsn = InvalidXLogRecPtr;
		refresh_ws_subid = InvalidSubTransactionId;
	}
}

static void
refresh_ws_xact_callback(XactEvent event, void *arg)
{
	WalStream  *ws = refresh_ws;
	XLogRecPtr	lsn = refresh_ws_lsn;

	if (ws == NULL ||
		(event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		 event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		 event != XACT_EVENT_PREPARE))
		return;
	refresh_ws = NULL;
	refresh_ws_lsn = InvalidXLogRecPtr;
	refresh_ws_subid = InvalidSubTransactionId;
	if (event != XACT_EVENT_COMMIT)
		lsn = InvalidXLogRecPtr;
	else if (!XLogRecPtrIsInvalid(lsn) && XactLastCommitEnd > GetFlushRecPtr(NULL))
	{
		/* confirm only what is on this server's disk (an asynchronous commit) */
		XLogFlush(XactLastCommitEnd);
	}
	(void) walstream_confirm_and_close(ws, lsn);
}

/* Close a refresh's stream now, unconfirmed (a pause, a second refresh). */
static void
refresh_ws_drop(void)
{
	WalStream  *ws = refresh_ws;

	refresh_ws = NULL;
	refresh_ws_lsn = InvalidXLogRecPtr;
	refresh_ws_subid = InvalidSubTransactionId;
	if (ws != NULL)
		walstream_close(ws, true);	/* waits (up to 1 s) for the slot to be let go */
}


/*
 * Which transport a refresh of this backlog (start..upto on the source,
 * read over sc) takes: pg_sluice.refresh_transport, and for auto the rule
 * measured on bench scenarios 2a-2d (bench/refresh_transport.pl, README,
 * Performance, "Refresh over the walsender"): by default
 * (pg_sluice.refresh_walsender_min = -1) the SQL interface for every
 * backlog.  Since the SQL refresh streams big transactions (stream.c) and
 * leaves a restart point after a big backlog (refresh_restart_point), the
 * walsender's two gains are gone (live's memory, the slot's move), and its
 * cost stays: the walsender writes to its socket once per message.  At
 * 1,000,000 rows over TCP (69-380 MB of WAL) the SQL refresh took 0.33 to
 * 0.59 of the walsender's time and a third of its CPU on the 2-core AMD
 * machine of 2026-12-04, and 0.98-1.19 of it (median of 3-4 runs) on the
 * earlier Intel one; below 100,000 rows the walsender's fixed cost (a
 * replication connection, START_REPLICATION, asking where it is) is not
 * paid back either.  An administrator who measures otherwise sets a
 * threshold (0: every backlog over TCP); over a Unix socket, where each of
 * the walsender's writes per message is a socket buffer of its own, auto
 * never takes it.
 */
static bool
refresh_by_walsender(SluiceConn *sc, XLogRecPtr start, XLogRecPtr upto)
{
	if (sluice_refresh_transport == SLUICE_TRANSPORT_WALSENDER)
		return true;
	if (sluice_refresh_transport == SLUICE_TRANSPORT_SQL)
		return false;
	return sluice_refresh_walsender_min >= 0 &&
		upto > start && upto - start >= (uint64) sluice_refresh_walsender_min * 1024 &&
		!transport_over_unix_socket(sc);
}

/*
 * The memory live may use to decode this refresh: its own
 * logical_decoding_work_mem, as for a native subscription, less
 * SESSION_OVERHEAD_KB, or pg_sluice.source_decoding_work_mem when an
 * administrator set it; set on every refresh (a connection may carry an
 * earlier refresh's value).  A session decoding through the SQL function
 * holds a little more of its own than a walsender does (the function, its
 * COPY: 0.5 MB at a 1,000,000-row transaction, 91.8 MB against the
 * walsender's 91.3 MB, bench/run.sh scenario 3, 2026-12-04), so it gets
 * live's setting less that, and live spends no more on a pg_sluice refresh
 * than on a native subscription's walsender.  A refresh decoded in two
 * parts (sc2) gives each a quarter, so that the two backends together hold
 * no more than one would: what a decoding backend holds beyond its
 * logical_decoding_work_mem (its caches, the changes' bookkeeping) comes
 * twice.  With halves, one 1,000,000-row transaction cost live 99 MB in the
 * two backends against the walsender's 91 MB.
 */
#define SESSION_OVERHEAD_KB 1024

static void
refresh_decoding_mem(SluiceConn *sc, SluiceConn *sc2)
{
	int			kb = sluice_source_decoding_work_mem;
	char	   *set;

	if (kb == 0)
	{
		char	   *v = transport_try_value(sc,
											"SELECT reset_val FROM pg_catalog.pg_settings "
											" WHERE name = 'logical_decoding_work_mem'",
											"read live's logical_decoding_work_mem");

		kb = v != NULL ? atoi(v) : 0;
		if (kb <= 0)
			kb = 65536;			/* PostgreSQL's default */
		if (sc2 == NULL)
			kb = Max(64, kb - SESSION_OVERHEAD_KB);
	}
	if (sc2 != NULL)
		kb = Max(64, kb / 4);
	set = psprintf("SET logical_decoding_work_mem = '%dkB'", kb);
	transport_command(sc, set, "set logical_decoding_work_mem");
	if (sc2 != NULL)
		transport_command(sc2, set, "set logical_decoding_work_mem");
	pfree(set);
}

/*
 * A big backlog gets a restart point after it.  A logical slot's restart
 * position moves only to where live logged its running transactions (a
 * standby snapshot: bgwriter logs one every 15 s while live writes, a
 * checkpoint does too), so when none was logged between a backlog's last
 * commit and the refresh's end, the slot mover's advance cannot take the
 * restart position past the backlog, and the next refresh decodes all of
 * it again (0.4-1.4 s after a 1,000,000-row backlog: bench/slot_move.pl).
 * pg_log_standby_snapshot() comes with PostgreSQL 16; on 15, creating a
 * logical slot logs one (ReplicationSlotReserveWal), with the REPLICATION
 * right the source role has already.  So for a backlog of
 * RESTART_POINT_MIN or more, a temporary slot is created and dropped on
 * live before the refresh marks its end, when live has two slots free (one
 * stays for whoever else needs one meanwhile).  Its creation waits for the
 * transactions running on live to end; lock_timeout bounds that wait (a
 * long transaction would hold the restart position back anyway), and
 * statement_timeout the whole, and any failure (no free slot, a timeout)
 * only leaves the next refresh to decode the backlog again, as before.  Nothing is written on live but the
 * standby snapshot record, and nothing of live's own waits on it.
 */
#define RESTART_POINT_MIN (16 * 1024 * 1024)

static void
refresh_restart_point(SluicePipeline *pipe, SluiceConn *sc)
{
	char	   *want;
	char	   *tmp;
	char	   *made;
	SluiceConn *rc;

	want = transport_try_value(sc,
							   psprintf("SELECT pg_catalog.pg_current_wal_insert_lsn() - s.confirmed_flush_lsn >= %d "
										"   AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots) + 1 "
										"       < pg_catalog.current_setting('max_replication_slots')::int "
										"  FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = %s",
										RESTART_POINT_MIN, quote_literal_cstr(pipe->slot_name)),
							   "size the backlog");
	if (want == NULL || strcmp(want, "t") != 0)
		return;

	/*
	 * On a connection of its own, closed after: the slot's decoding context
	 * would leave its memory to the session that decodes the refresh next.
	 */
	rc = transport_try_connect(pipe->source_name, pipe->conninfo);
	if (rc == NULL)
		return;
	tmp = psprintf("sluice_restart_%d_%lx", MyProcPid, (unsigned long) GetCurrentTimestamp());
	transport_command(rc, "SET lock_timeout = '100ms'", "bound the wait for a restart point");
	transport_command(rc, "SET statement_timeout = '2s'", "bound the wait for a restart point");
	made = transport_try_value(rc,
							   psprintf("SELECT 1 FROM pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput', true)",
										quote_literal_cstr(tmp)),
							   "log a restart point");
	if (made != NULL)
		(void) transport_try_value(rc,
								   psprintf("SELECT 1 FROM pg_catalog.pg_drop_replication_slot(%s)",
											quote_literal_cstr(tmp)),
								   "drop the restart point's slot");
	transport_close(rc);
	ereport(DEBUG1,
			(errmsg_internal("pipeline \"%s\": %s a restart point on source \"%s\"",
							 pipe->name, made != NULL ? "logged" : "could not log",
							 pipe->source_name)));
}

/*
 * Whether a big backlog is worth decoding in two parts: not when live ran
 * fewer than SPLIT_MIN_XACTS writing transactions since the slot's restart
 * position (its catalog_xmin, against live's next transaction id), so that
 * one transaction is likely most of it.  Such a transaction spans the split:
 * the first part decodes its first half for nothing, the second decodes
 * all of it again and, unable to stream before the split, spills that half
 * to live's disk first.  Measured (one 1,000,000-row transaction, 178 MB of
 * WAL, SQL refresh, two runs each, 2026-12-04): 4.1-4.2 s in two parts
 * against 2.5-3.3 s in one; 1,000 transactions of 1,000 rows: 2.4-2.8 s in
 * two parts against 3.1 s in one.  Transaction ids count the whole of
 * live, so a busy live keeps the split, as before.  Anything unknown keeps
 * it too.
 */
#define SPLIT_MIN_XACTS 16

static bool
refresh_split_worth(SluicePipeline *pipe, SluiceConn *sc)
{
	char	   *v = transport_try_value(sc,
										psprintf("SELECT (pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint "
												 "        - s.catalog_xmin::text::bigint) %% 4294967296 "
												 "  FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = %s",
												 quote_literal_cstr(pipe->slot_name)),
										"count the backlog's transactions");
	int64		xacts;

	if (v == NULL)
		return true;
	xacts = strtoi64(v, NULL, 10);
	if (xacts >= SPLIT_MIN_XACTS)
		return true;
	ereport(DEBUG1,
			(errmsg_internal("pipeline \"%s\" decodes its backlog in one part: %lld transactions on source \"%s\" since the slot's restart position",
							 pipe->name, (long long) xacts, pipe->source_name)));
	return false;
}

/*
 * The pipeline's slot is gone from the source: nothing can say what changed
 * since the last refresh (refresh and verify both look for it).
 */
void
refresh_slot_gone(SluicePipeline *pipe)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("replication slot \"%s\" of pipeline \"%s\" no longer exists on source \"%s\"",
					pipe->slot_name, pipe->name, pipe->source_name),
			 errhint("The source forgot what changed since the last refresh: drop the pipeline with sluice.drop_pipeline(force => true) and create it again.")));
}

/*
 * The pipeline's slot as live describes it (flush position, confirmed_flush_lsn,
 * active_pid, restart_lsn), once no process reads it: a worker that just
 * stopped, or just closed its stream after a failed batch, leaves its
 * walsender behind for a moment (walstream.c), so this waits up to
 * SLOT_RELEASE_WAIT_MS for it to go.  Refreshes and drains (spool.c) read
 * the slot over SQL and start here.  what names the step for the hint.
 */
PGresult *
refresh_describe_slot(SluicePipeline *pipe, SluiceConn *sc, const char *what)
{
	const char *params[1];
	PGresult   *res;
	int			tries;

	params[0] = pipe->slot_name;
	for (tries = 0;; tries++)
	{
		res = transport_exec(sc,
							 "SELECT pg_catalog.pg_current_wal_flush_lsn(), confirmed_flush_lsn, active_pid, restart_lsn "
							 "  FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
							 1, params, PGRES_TUPLES_OK, "describe the replication slot");
		if (PQntuples(res) == 0)
			refresh_slot_gone(pipe);
		if (PQgetisnull(res, 0, 2) || tries * 50 >= SLOT_RELEASE_WAIT_MS)
			break;
		PQclear(res);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (!PQgetisnull(res, 0, 2))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("replication slot \"%s\" of pipeline \"%s\" is in use on source \"%s\"",
						pipe->slot_name, pipe->name, pipe->source_name),
				 errdetail("Process %s on the source is reading it.", PQgetvalue(res, 0, 2)),
				 errhint("Wait for it to finish, or stop it, and %s again.", what)));
	return res;
}

/*
 * Every table of the pipeline is still the table it copied (identity.c):
 * else the refresh pauses before it applies anything.  A worker polling
 * over the SQL interface (a persistent connection) looks at most every
 * IDENTITY_LOOK_MS, as a walsender worker does with its slot look: a query
 * on live per poll would cost more than the poll.  A re-created table's
 * changes are caught in between by their RELATION message
 * (identity_relation); only a drop is seen up to that late.
 */
#define IDENTITY_LOOK_MS 5000

static void
refresh_check_identity(SluicePipeline *pipe, SluiceConn *sc, RefreshResult *r)
{
	char	   *message = NULL;
	char	   *hint = NULL;
	SluiceDrift *d;

	if (sc->persistent)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (sc->identity_at != 0 &&
			!TimestampDifferenceExceeds(sc->identity_at, now, IDENTITY_LOOK_MS))
			return;
		sc->identity_at = now;
	}
	d = identity_check(pipe, sc, &message, &hint);
	if (d == NULL)
		return;
	r->stats.pause = d;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s", message),
			 errdetail("%s", d->detail),
			 errhint("%s", hint)));
}

/*
 * Versioned rows carry the run id the batch will commit as: reserve it
 * (pipelines that keep history).
 */
void
refresh_reserve_version(SluicePipeline *pipe, RefreshResult *r)
{
	bool		isnull;

	pipe->version = 0;
	if (!pipe->keep_history)
		return;
	if (sluice_catalog_exec("SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('sluice._run', 'run_id'))",
							0, NULL, NULL, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not reserve a version");
	pipe->version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	r->run_id = pipe->version;
}

/*
 * Whatever can run code a user wrote (expectations, triggers and keys on
 * the datamart tables, schema evolution, models) runs as the pipeline's
 * owner in a security-restricted operation (security.c).  An error restores
 * the user when refresh_pipeline's subtransaction aborts.
 *
 * Every constraint is immediate for the batch: deferred keys (pipeline.c's
 * create_target_key) and any deferred trigger on a datamart table are
 * checked when the batch's one query ends (apply_finish), as the owner, when
 * the batch holds whole source transactions.  PostgreSQL queues no deferred
 * trigger inside the security-restricted operation, and one left for commit
 * would run with the rights of whoever commits.  Set before the switch: what
 * the caller's own transaction had pending fires now, as the caller.  Every
 * kind of batch (SQL stream, walsender stream, HTTP pull) starts so.
 */
void
refresh_become_owner(SluicePipeline *pipe, SluiceUser *save)
{
	ConstraintsSetStmt *cs = makeNode(ConstraintsSetStmt);

	cs->constraints = NIL;
	cs->deferred = false;
	AfterTriggerSetState(cs);
	sluice_become_owner(pipe, save);
}

/*
 * A refresh's backlog read through the walsender: START_REPLICATION from
 * start (the origin's position, or the slot's when it is ahead), apply
 * until the walsender has decoded past upto (apply_walstream_upto), in the
 * caller's transaction, as the owner, with models and set expectations.
 * The stream stays open until the transaction ends: its commit confirms
 * end_lsn to the walsender (refresh_ws_xact_callback), so the slot moves
 * there without the advance (a second decoding of the backlog from the
 * slot's restart position) that the SQL interface needs.
 */
static void
refresh_by_stream(SluicePipeline *pipe, XLogRecPtr start, XLogRecPtr upto,
				  RefreshResult *r)
{
	SluiceUser	owner_save;
	WalStream  *ws;
	TimestampTz opened = GetCurrentTimestamp();

	r->start_lsn = start;
	refresh_reserve_version(pipe, r);
	if (!refresh_ws_callback)
	{
		RegisterXactCallback(refresh_ws_xact_callback, NULL);
		RegisterSubXactCallback(refresh_ws_subxact_callback, NULL);
		refresh_ws_callback = true;
	}
	ws = walstream_open_mem(pipe, start, apply_use_binary(pipe), sluice_source_decoding_work_mem);
	ws->in_batch = true;		/* report nothing read as flushed */
	refresh_ws = ws;
	ereport(DEBUG1,
			(errmsg_internal("pipeline \"%s\" refreshes %X/%X..%X/%X over the walsender",
							 pipe->name, LSN_FORMAT_ARGS(start), LSN_FORMAT_ARGS(upto))));

	refresh_become_owner(pipe, &owner_save);
	apply_walstream_upto(pipe, ws, start, upto, &r->stats);
	ereport(DEBUG1,
			(errmsg_internal("pipeline \"%s\" read " INT64_FORMAT " messages over the walsender in %ld ms",
							 pipe->name, r->stats.messages,
							 (long) TimestampDifferenceMilliseconds(opened, GetCurrentTimestamp()))));
	if (r->stats.transactions > 0)
	{
		model_maintain(pipe, &r->stats.pause);
		expect_run_set_checks(pipe, &r->stats.pause);
	}
	sluice_restore_user(&owner_save);

	r->complete = true;
	r->end_lsn = Max(Max(upto, r->stats.last_end_lsn), start);
	origin_session_set(r->end_lsn, r->stats.last_commit_time);
	r->ws_refresh = true;
}

/*
 * Pull and apply the pipeline's changes committed on the source up to now.
 *
 * max_messages > 0 bounds the batch (in pgoutput messages, whole source
 * transactions); max_ms > 0 ends it at the first source commit past that
 * time.  r->complete tells whether the batch reached the source's flush
 * position.  The caller holds the pipeline's row lock and an SPI connection;
 * sc is an open (non-replication) connection to the source.  When the batch
 * stopped early, sc has been closed: r->stats.stopped_early.
 */
static void
refresh_inner(SluicePipeline *pipe, SluiceConn *sc, int64 max_messages,
			  int max_ms, XLogRecPtr bound, RefreshResult *r)
{
	XLogRecPtr	start_lsn;
	XLogRecPtr	upto;
	XLogRecPtr	marked = InvalidXLogRecPtr;
	XLogRecPtr	confirmed;
	XLogRecPtr	split = InvalidXLogRecPtr;
	SluiceConn *sc2 = NULL;
	PGresult   *res;
	const char *params[2];
	char		lsnbuf[32];
	SluiceUser	owner_save;
	XLogRecPtr	origin_lsn;
	bool		durable;
	bool		spooled;

	/* an earlier refresh of this transaction still streams: let it go */
	refresh_ws_drop();
	origin_session_begin(pipe->origin_name);
	start_lsn = origin_session_progress();
	origin_lsn = start_lsn;
	durable = origin_session_durable();

	/*
	 * A refresh first marks its end in the source's WAL: a transactional
	 * logical message (pgoutput leaves it out: we do not ask for messages),
	 * committed with a local flush (our session sets synchronous_commit =
	 * local: flushed on live, never waiting for live's synchronous standbys).
	 * That commit flushes every WAL record before the mark, so decoding up to
	 * the mark never waits, and it includes every transaction committed
	 * before the refresh began, even those committed asynchronously and not
	 * yet flushed.  Decoding up to the flush position instead can stop in
	 * the middle of a record the WAL writer flushed only in part (it flushes
	 * whole pages), and wait up to wal_writer_delay for the rest.  (An empty
	 * transaction with only an xid does not do: PostgreSQL commits it
	 * without flushing.)  A role that may not call the function (asked
	 * first: a permission error would land in live's log at every refresh)
	 * or a failure leaves the flush position.  Workers skip it: they poll often and would write
	 * a transaction each time.
	 */
	if (max_messages <= 0 && XLogRecPtrIsInvalid(bound))
	{
		char	   *may = transport_try_value(sc,
											  "SELECT pg_catalog.has_function_privilege("
											  "'pg_catalog.pg_logical_emit_message(boolean, text, text)', 'EXECUTE')",
											  "check the right to mark the WAL");
		char	   *mark = NULL;

		/* before the mark, so that the slot's restart position may pass the backlog */
		refresh_restart_point(pipe, sc);
		if (may != NULL && strcmp(may, "t") == 0)
			mark = transport_try_value(sc,
									   "SELECT pg_catalog.pg_logical_emit_message(true, 'pg_sluice', 'refresh')",
									   "mark the end of the refresh");
		if (mark != NULL)
			marked = transport_parse_lsn(mark);
	}

	res = refresh_describe_slot(pipe, sc, "run the refresh");
	params[0] = pipe->slot_name;
	upto = transport_parse_lsn(PQgetvalue(res, 0, 0));
	if (!XLogRecPtrIsInvalid(marked) && marked < upto)
		upto = marked;
	/* a verification brings the datamart to exactly its position (verify.c) */
	if (!XLogRecPtrIsInvalid(bound))
	{
		if (bound > upto)
			elog(ERROR, "position %X/%X is not flushed on source \"%s\"",
				 LSN_FORMAT_ARGS(bound), pipe->source_name);
		upto = bound;
	}
	confirmed = PQgetisnull(res, 0, 1) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(res, 0, 1));
	r->slot_restart_lsn = PQgetisnull(res, 0, 3) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(res, 0, 3));
	r->source_flush_lsn = upto;
	PQclear(res);
	refresh_check_identity(pipe, sc, r);

	/* what a drain kept while the pipeline was paused goes first (spool.c) */
	spooled = spool_pending(pipe);

	/*
	 * A whole refresh may read its backlog through the walsender instead
	 * (refresh_by_stream): it starts at the origin's position itself, and
	 * the slot moves when the refresh commits, so no advance here.  Not
	 * with a spool to apply, nor for a bounded batch.
	 */
	if (max_messages <= 0 && XLogRecPtrIsInvalid(bound) && !spooled &&
		Max(start_lsn, confirmed) < upto &&
		refresh_by_walsender(sc, Max(start_lsn, confirmed), upto))
	{
		XLogRecPtr	from = Max(start_lsn, confirmed);

		/*
		 * The walsender decodes from the slot's restart position, which a
		 * commit's confirmation only moves to the first point where live
		 * logged its running transactions after the stream started: the
		 * last backlog would be decoded again, in full (its changes queued
		 * and then dropped).  pg_replication_slot_advance decodes that
		 * stretch in fast-forward mode (no change is queued) and moves the
		 * restart position along, so the stream starts near from.
		 */
		if (!XLogRecPtrIsInvalid(r->slot_restart_lsn) && r->slot_restart_lsn < from)
		{
			snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(from));
			params[1] = lsnbuf;
			PQclear(transport_exec(sc, "SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn)",
								   2, params, PGRES_TUPLES_OK, "advance the replication slot"));
		}
		refresh_by_stream(pipe, from, upto, r);
		return;
	}

	/* Tell the source what the datamart durably has (see origin.c). */
	if (start_lsn > confirmed && start_lsn <= upto)
	{
		snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(start_lsn));
		params[1] = lsnbuf;
		PQclear(transport_exec(sc, "SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn)",
							   2, params, PGRES_TUPLES_OK, "advance the replication slot"));
		confirmed = start_lsn;

		/*
		 * That advance took the restart position only to its first
		 * candidate (core holds one while it decodes); a second one, to the
		 * position now confirmed, takes the restart point the last refresh
		 * left after its backlog (refresh_restart_point), so the decoding
		 * below starts there instead of reading that backlog again (the
		 * slot mover does the same when it comes first).  A fast-forward
		 * advance reads WAL at a quarter of the cost of decoding it.
		 */
		if (!XLogRecPtrIsInvalid(r->slot_restart_lsn) &&
			start_lsn - r->slot_restart_lsn >= RESTART_POINT_MIN)
			PQclear(transport_exec(sc, "SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn)",
								   2, params, PGRES_TUPLES_OK, "advance the replication slot"));
	}
	if (start_lsn < confirmed)
		start_lsn = confirmed;
	r->start_lsn = start_lsn;

	if (start_lsn >= upto && !spooled)
	{
		/* nothing committed since: skip the decoding round trip */
		r->end_lsn = start_lsn;
		r->complete = true;
		return;
	}

	refresh_reserve_version(pipe, r);

	/*
	 * A big backlog is decoded in two parts at once.  The SQL decoding
	 * functions return nothing until they have decoded their whole range,
	 * so with one part the datamart waits for all of it before applying a
	 * row.  With two, a second connection decodes the second half (from a
	 * temporary copy of the slot, moved to the split point; the real slot is
	 * only read) while this one decodes the first; the first half is then
	 * applied while the second finishes.  The second decoder reads the
	 * first half's WAL too (without output), so it only pays off for large
	 * backlogs of many transactions; one transaction bigger than the split
	 * gains nothing, and costs more since the second part streams (below).
	 * Workers keep to one part: their batches are small.
	 */
	if (max_messages <= 0 && sluice_split_decoding_min > 0 &&
		upto - start_lsn >= (uint64) sluice_split_decoding_min * 1024 &&
		refresh_split_worth(pipe, sc))
	{
		/* refused (max_connections): one part, as below the threshold */
		sc2 = transport_try_connect(pipe->source_name, pipe->conninfo);
		if (sc2 != NULL)
		{
			split = start_lsn + (upto - start_lsn) / 2;
			ereport(DEBUG1,
					(errmsg_internal("pipeline \"%s\" decodes %X/%X..%X/%X in two parts, split at %X/%X",
									 pipe->name, LSN_FORMAT_ARGS(start_lsn), LSN_FORMAT_ARGS(upto),
									 LSN_FORMAT_ARGS(split))));
		}
	}
	refresh_decoding_mem(sc, sc2);

	refresh_become_owner(pipe, &owner_save);
	if (spooled)
	{
		/* the slot goes on from the drained position, past what it repeats */
		start_lsn = Max(start_lsn, spool_apply(pipe, origin_lsn, &r->stats));
		origin_session_set(start_lsn, r->stats.last_commit_time);
		r->stats.messages = 0;
	}
	if (start_lsn < upto)
		apply_stream(pipe, sc, sc2, start_lsn, split, upto, max_messages, max_ms, &r->stats);
	if (sc2 != NULL)
		transport_close(sc2);

	/* models over what the batch changed, then set expectations, before it commits */
	if (r->stats.transactions > 0)
	{
		model_maintain(pipe, &r->stats.pause);
		expect_run_set_checks(pipe, &r->stats.pause);
	}
	sluice_restore_user(&owner_save);
	if (r->stats.stopped_early)
	{
		/* the source is still sending: cancel and close */
		transport_abandon(sc);
		r->conn_closed = true;
	}

	r->complete = !r->stats.stopped_early &&
		(max_messages <= 0 || r->stats.messages < max_messages);

	/*
	 * A complete batch decoded every transaction whose commit record starts
	 * before upto, so the datamart is consistent with upto even when none
	 * of them touched our tables: moving the origin there lets the slot free
	 * WAL on the source.  A partial one is consistent with its last commit.
	 */
	if (r->complete)
		r->end_lsn = Max(Max(upto, r->stats.last_end_lsn), start_lsn);
	else
		r->end_lsn = Max(r->stats.last_end_lsn, start_lsn);
	origin_session_set(r->end_lsn, r->stats.last_commit_time);

	/*
	 * Heartbeat: nothing at all came for our tables up to end_lsn, so the
	 * slot may forget it now, even though this batch commits no position
	 * (slotwatch.c).  Nothing: no transaction began, applied or skipped.
	 * Messages may have come all the same: the empty stream blocks of a big
	 * transaction of other tables (apply.c leaves it out), the blocks of
	 * one still in progress at upto (it comes whole again, from its start,
	 * which the slot's restart position keeps).
	 */
	if (r->complete && r->stats.transactions == 0 && r->stats.skipped_transactions == 0 &&
		!TransactionIdIsValid(r->stats.skipped_xid) &&
		!spooled && durable && r->end_lsn > confirmed)
		slotwatch_heartbeat(pipe, sc, r->end_lsn);
}

/*
 * A worker's batch over the walsender transport (walstream.c): apply what
 * the walsender has sent, up to max_messages or max_ms, in the caller's
 * transaction, as the owner, with the set expectations.  The origin moves
 * to the end of the last source transaction applied; the slot moves later,
 * by the worker's status updates, once this commit is on disk.
 */
static void
refresh_ws_inner(SluicePipeline *pipe, WalStream *ws, int64 max_messages,
				 int max_ms, RefreshResult *r)
{
	XLogRecPtr	start_lsn;
	SluiceUser	owner_save;

	origin_session_begin(pipe->origin_name);
	start_lsn = origin_session_applied();
	r->start_lsn = start_lsn;

	refresh_reserve_version(pipe, r);

	refresh_become_owner(pipe, &owner_save);
	ws->in_batch = true;
	apply_walstream(pipe, ws, start_lsn, max_messages, max_ms, &r->stats);
	/* models over what the batch changed, then set expectations (as refresh_inner) */
	if (r->stats.transactions > 0)
	{
		model_maintain(pipe, &r->stats.pause);
		expect_run_set_checks(pipe, &r->stats.pause);
	}
	sluice_restore_user(&owner_save);

	r->complete = !r->stats.stopped_early;
	r->end_lsn = Max(r->stats.last_end_lsn, start_lsn);
	r->source_flush_lsn = Max(ws->received, r->end_lsn);
	if (r->end_lsn > start_lsn)
		origin_session_set(r->end_lsn, r->stats.last_commit_time);
}

static void refresh_guarded(SluicePipeline *pipe, SluiceConn *sc, WalStream *ws,
							int64 max_messages, int max_ms, XLogRecPtr bound,
							RefreshResult *r);

/*
 * A continuous worker's batch over the walsender transport, pausing the
 * pipeline on drift as refresh_pipeline does.  On a pause r->paused is
 * set (r->conn_closed is not: there is no normal connection to abandon):
 * the caller closes the stream, as what it read is rolled back, and opens
 * a new one from the origin's position.
 */
void
refresh_pipeline_ws(SluicePipeline *pipe, WalStream *ws, int64 max_messages,
					int max_ms, RefreshResult *r)
{
	refresh_guarded(pipe, NULL, ws, max_messages, max_ms, InvalidXLogRecPtr, r);
}

static void refresh_record_pause(SluicePipeline *pipe, RefreshResult *r);
static void refresh_record_divergence(SluicePipeline *pipe, int64 run_id, int64 missing);

/*
 * Pull and apply, pausing the pipeline on schema drift.
 *
 * The batch runs in a subtransaction: when contract.c meets drift its policy
 * cannot absorb, the subtransaction rolls back (nothing of the batch stays,
 * the origin does not move), and the pause and the drift event are recorded
 * in the caller's transaction, so they survive.  Any other error propagates.
 * See refresh_inner for the rest.
 */
void
refresh_pipeline(SluicePipeline *pipe, SluiceConn *sc, int64 max_messages,
				 int max_ms, RefreshResult *r)
{
	refresh_pipeline_upto(pipe, sc, max_messages, max_ms, InvalidXLogRecPtr, r);
}

/*
 * The same, ending at bound exactly when it is valid (a source position
 * already flushed there) instead of at the source's flush position.
 */
void
refresh_pipeline_upto(SluicePipeline *pipe, SluiceConn *sc, int64 max_messages,
					  int max_ms, XLogRecPtr bound, RefreshResult *r)
{
	refresh_guarded(pipe, sc, NULL, max_messages, max_ms, bound, r);
}

static void
refresh_guarded(SluicePipeline *pipe, SluiceConn *sc, WalStream *ws,
				int64 max_messages, int max_ms, XLogRecPtr bound,
				RefreshResult *r)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	memset(r, 0, sizeof(*r));
	expect_results_reset();
	model_batch_reset();
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		if (pipe->http)
			http_refresh(pipe, r);	/* an HTTP source: no slot, no sc */
		else if (ws != NULL)
			refresh_ws_inner(pipe, ws, max_messages, max_ms, r);
		else
			refresh_inner(pipe, sc, max_messages, max_ms, bound, r);
		ReleaseCurrentSubTransaction();
		/* a refresh over the walsender: its commit moves the slot there */
		if (r->ws_refresh && refresh_ws != NULL)
		{
			refresh_ws_lsn = r->end_lsn;
			refresh_ws_subid = GetCurrentSubTransactionId();
		}
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		SluiceDrift *d = r->stats.pause;
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		/* any other error: the subtransaction is gone, pass it on */
		if (d == NULL)
			ReThrowError(edata);

		/* a refresh over the walsender read past what rolled back */
		if (ws == NULL)
			refresh_ws_drop();
		if (!r->conn_closed && sc != NULL)
		{
			/* the stream read past what rolled back: start it again */
			if (sc != NULL)
				transport_abandon(sc);
			r->conn_closed = true;
		}
		memset(&r->stats, 0, sizeof(r->stats));
		r->end_lsn = r->start_lsn;
		r->run_id = 0;
		r->complete = true;
		refresh_pause(pipe, r, d, edata->sqlerrcode, edata->message, edata->hint);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * The pipeline pauses on d (drift, an expectation, a divergence), in the
 * caller's transaction: r says so, the pause and the drift are recorded,
 * and a WARNING with message and hint tells the caller.  r's batch, if it
 * applied anything, stays (a worker's look at live after its batch).
 */
void
refresh_pause(SluicePipeline *pipe, RefreshResult *r, SluiceDrift *d, int sqlerrcode,
			  const char *message, const char *hint)
{
	r->paused = true;
	r->paused_reason = psprintf("%s: %s", message, d->detail);
	refresh_record_pause(pipe, r);
	if (!d->is_expectation && !d->is_divergence)
		contract_record_drift(pipe, d, "paused",
							  psprintf("%s.%s", d->source_schema, d->source_table));
	if (d->name_seen != NULL)
	{
		/* a rename under freeze: the name sluice.accept_rename accepts (identity.c) */
		Oid			types[4] = {INT4OID, TEXTOID, TEXTOID, TEXTOID};
		Datum		args[4];

		args[0] = Int32GetDatum(pipe->pipeline_id);
		args[1] = CStringGetTextDatum(d->source_schema);
		args[2] = CStringGetTextDatum(d->source_table);
		args[3] = CStringGetTextDatum(d->name_seen);
		if (sluice_catalog_exec("UPDATE sluice._pipeline_table SET source_name_seen = $4 "
								" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
								4, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the name the source table was seen under");
	}
	ereport(WARNING,
			(errcode(sqlerrcode),
			 errmsg("pipeline \"%s\" paused: %s", pipe->name, message),
			 errdetail("%s", d->detail),
			 errhint("%s", hint ? hint : "")));
}

/* Mark the pipeline paused, in the caller's transaction. */
static void
refresh_record_pause(SluicePipeline *pipe, RefreshResult *r)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		args[2];

	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(r->paused_reason);
	if (sluice_catalog_exec("UPDATE sluice._pipeline SET paused_reason = $2, paused_at = pg_catalog.now() "
							  " WHERE pipeline_id = $1", 2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the pause");
}

/*
 * Record a finished batch in the caller's transaction: the run (its id
 * reserved when the batch wrote versioned rows), the source position, a
 * pause or a skipped transaction, expectation results, per-table counts,
 * and the events that announce it.  Returns the run id.
 */
int64
refresh_record_run(SluicePipeline *pipe, const char *kind, TimestampTz started,
				   RefreshResult *r)
{
	int64		run_id;

	run_id = catalog_insert_run(r->run_id, pipe->pipeline_id, kind, started, r->start_lsn,
								r->end_lsn, r->stats.transactions, r->stats.inserted,
								r->stats.updated, r->stats.deleted, r->stats.truncated,
								r->stats.last_commit_time);
	catalog_run_source_position(run_id, r->source_flush_lsn, r->slot_restart_lsn);
	slotwatch_lag(pipe, r->source_flush_lsn, r->slot_restart_lsn, true);
	if (r->paused)
		catalog_run_paused(run_id, r->paused_reason);
	if (TransactionIdIsValid(r->stats.skipped_xid))
		catalog_run_skipped(pipe->pipeline_id, run_id, r->stats.skipped_xid);
	expect_record_results(run_id);
	model_record_results(run_id);
	table_counts_record(run_id);
	outbox_emit_run(run_id, r->stats.quarantined > sluice_quarantine_alert ? r->stats.quarantined : 0);
	if (r->stats.missing > 0)
		refresh_record_divergence(pipe, run_id, r->stats.missing);
	return run_id;
}

/*
 * Updates and deletes of the run found no row in the datamart and were
 * skipped (quarantine.c; a strict pipeline pauses instead): count them on the
 * run and the pipeline, queue a divergence event and warn.  The per-table
 * counts and keys are in sluice._run_table (table_counts_record).
 */
static void
refresh_record_divergence(SluicePipeline *pipe, int64 run_id, int64 missing)
{
	Oid			types[3] = {INT8OID, INT8OID, INT4OID};
	Datum		args[3];
	Oid			etypes[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		eargs[3];

	args[0] = Int64GetDatum(run_id);
	args[1] = Int64GetDatum(missing);
	args[2] = Int32GetDatum(pipe->pipeline_id);
	if (sluice_catalog_exec("UPDATE sluice._run SET rows_missing = $2 WHERE run_id = $1",
							  3, types, args, NULL, false, 0) != SPI_OK_UPDATE ||
		sluice_catalog_exec("UPDATE sluice._pipeline SET rows_missing = rows_missing + $2, "
							  "       last_missing_at = pg_catalog.now() WHERE pipeline_id = $3",
							  3, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the divergence");
	eargs[0] = CStringGetTextDatum(pipe->name);
	eargs[1] = Int64GetDatum(run_id);
	eargs[2] = Int64GetDatum(missing);
	if (sluice_catalog_exec("SELECT sluice._emit($1, 'divergence', pg_catalog.jsonb_build_object("
							  "  'run_id', $2, 'rows_missing', $3, "
							  "  'tables', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
							  "                'table', rt.target_schema || '.' || rt.target_table, "
							  "                'rows_missing', rt.rows_missing, 'keys', rt.missing_keys) "
							  "              ORDER BY rt.target_schema, rt.target_table) "
							  "               FROM sluice._run_table rt WHERE rt.run_id = $2 AND rt.rows_missing > 0), "
							  "  'summary', pg_catalog.format('%s update(s) or delete(s) found no row in the datamart in run %s and were skipped', $3, $2)))",
							  3, etypes, eargs, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not queue the divergence event");
	ereport(WARNING,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("pipeline \"%s\": %lld %s found no row in the datamart",
					pipe->name, (long long) missing,
					missing == 1 ? "update or delete" : "updates or deletes"),
			 errdetail("They were skipped: the datamart lacks rows the source has (run " INT64_FORMAT "; sluice.runs.missing_by_table counts them per table, the divergence event lists their keys).",
					   run_id),
			 errhint("Restore the missing rows or rebuild the pipeline. sluice.alter_pipeline('%s', strict => true) pauses the pipeline at the next one instead.",
					 pipe->name)));
}
