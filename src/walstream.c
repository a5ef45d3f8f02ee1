/*-------------------------------------------------------------------------
 *
 * walstream.c
 *	  A slot's changes as the walsender streams them: a replication
 *	  connection running START_REPLICATION ... LOGICAL, and the standby
 *	  status updates that move the slot.
 *
 * NOTES
 *	  What this file owns.  The second transport, used by continuous
 *	  workers.  A replication connection (replication=database, through
 *	  transport.c) starts
 *
 *		START_REPLICATION SLOT slot LOGICAL origin-position
 *		  (proto_version '2', streaming 'on', publication_names '...'
 *		   [, binary 'true'])
 *
 *	  and keeps it running for the life of the worker.  The walsender pushes
 *	  each change as it decodes it, so a worker waits on the socket
 *	  (WaitLatchOrSocket) and not on a timer: a commit on the source is on
 *	  the datamart about one round trip later.  With streaming 'on' the
 *	  source sends a transaction bigger than its own logical_decoding_work_mem
 *	  while it is in progress (streamfile.c keeps it on the datamart), so the
 *	  source never holds a big transaction whole in memory; this file leaves
 *	  the source's logical_decoding_work_mem as it is, as a subscription
 *	  does (a refresh sets pg_sluice.source_decoding_work_mem when it is not
 *	  0, its default).
 *
 *	  walstream_next unwraps the CopyData messages: 'w' (XLogData) carries
 *	  one pgoutput message, returned to apply.c; 'k' (keepalive) carries the
 *	  walsender's position, and may ask for a reply at once.
 *
 *	  Feedback: the slot only moves by our 'r' messages (standby status
 *	  update), never by pg_replication_slot_advance, and its flush position
 *	  is only ever a source position the datamart has durably committed,
 *	  with its data and the origin (origin.c).  A worker commits its batches
 *	  asynchronously, as a subscription's apply worker does (durability is
 *	  not needed for exactly once: a batch lost by a crash was never
 *	  reported, so the source sends it again), and tells us each commit's
 *	  local end and source end (walstream_committed); a source end is
 *	  reported once the datamart's WAL is flushed past the local end.  When
 *	  nothing is waiting to be flushed and no batch is open, everything the
 *	  walsender sent was applied or had nothing for us, and its position is
 *	  reported (the slot then frees WAL other databases wrote).  Transactions
 *	  still in progress at that point need nothing: the source decodes them
 *	  again from the slot's restart position.
 *
 *	  What it never does.  Parse a pgoutput message (apply.c), commit, or
 *	  write to the catalog.  It never reports a position read from the
 *	  stream as flushed while a batch is open.
 *
 *	  A refresh may use it too (pg_sluice.refresh_transport = walsender,
 *	  or auto for a big backlog from a source reached over TCP: refresh.c):
 *	  walstream_open_mem sets the walsender's logical_decoding_work_mem as
 *	  the SQL transport does, the reader asks the walsender where it is
 *	  (walstream_ask_position: a status update wanting a reply) to know when
 *	  it has passed the refresh's end, and walstream_confirm_and_close, from
 *	  the commit callback, confirms the committed position and ends the
 *	  stream without raising.  The reader drains everything readable at each
 *	  wake-up (walstream_next without waiting, then walstream_await on the
 *	  socket).
 *
 *	  Rejected.  Pausing a refresh's reader so that the socket fills before
 *	  it reads (1 or 3 ms on the latch after the socket turned readable,
 *	  always or only after a drain that found less than 64 kB), which the
 *	  previous reader did (1 ms): slower in the runs of
 *	  bench/refresh_transport.pl that measured it, each against the SQL
 *	  refresh of the same run (1,000,000 rows in one transaction over a
 *	  Unix socket: sql/walsender 0.32 with 1 ms always, 0.78 without; in
 *	  1,000 transactions, 3 ms: 0.24 against 0.75).  The
 *	  walsender writes each message as it decodes it (core's
 *	  WalSndWriteData calls pq_flush_if_writable per message), so a full
 *	  socket does not batch its writes: it blocks (ProcessPendingWrites) and
 *	  then goes on writing one message at a time.  A perf profile of the
 *	  1,000,000-row insert (4.2 s, machine nearly idle) found no ping-pong:
 *	  both processes on a CPU most of the time, the walsender half in the
 *	  kernel writing one message per send(), the datamart backend a third
 *	  in the kernel receiving them; over a Unix socket each send() is a
 *	  socket buffer of its own; over TCP the kernel can coalesce small
 *	  writes (not profiled), and the walsender did better there: auto
 *	  takes it over TCP only.  A bigger SO_RCVBUF: setting
 *	  it turns off Linux's receive buffer autotuning, which already grows
 *	  the buffer as far as tcp_rmem allows.  Synchronous commits of worker
 *	  batches: one WAL flush per source transaction under load, for no gain
 *	  in safety.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/walstream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/latch.h"
#include "utils/wait_event.h"
#include "replication/logicalproto.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"

/* a standby status update at least this often (wal_receiver_status_interval's default) */
#define STATUS_INTERVAL_MS	10000
/* how often to look whether an asynchronous commit has reached the disk */
#define FLUSH_CHECK_MS		50

walstream_busy_hook_type walstream_busy_hook = NULL;

static int64
get_int64(const char *p)
{
	uint64		v;

	memcpy(&v, p, 8);
	return (int64) pg_ntoh64(v);
}

static void
put_int64(char *p, int64 v)
{
	uint64		n = pg_hton64((uint64) v);

	memcpy(p, &n, 8);
}

/*
 * Open a replication connection to the pipeline's source and start
 * streaming its slot from start (the origin's position; 0 lets the source
 * start at the slot's confirmed position).  Spooled transactions of any
 * earlier connection are dropped: the source sends them again.
 */
WalStream *
walstream_open(SluicePipeline *pipe, XLogRecPtr start, bool binary)
{
	return walstream_open_mem(pipe, start, binary, 0);
}

/*
 * The same, with the walsender's logical_decoding_work_mem set to
 * work_mem_kb first (when > 0): a refresh's stream decodes like the SQL
 * transport does (pg_sluice.source_decoding_work_mem, when set), so a
 * transaction below it comes whole after its commit instead of streamed in
 * progress and spooled here.
 */
WalStream *
walstream_open_mem(SluicePipeline *pipe, XLogRecPtr start, bool binary, int work_mem_kb)
{
	WalStream  *ws;
	char		pubs[NAMEDATALEN * 2 + 3];

	streamfile_reset();
	ws = MemoryContextAllocZero(TopMemoryContext, sizeof(WalStream));
	ws->sc = transport_connect(pipe->source_name, pipe->conninfo, true);
	ws->sc->persistent = true;
	ws->sc->owner_ref = &ws->sc;
	if (work_mem_kb > 0)
		transport_command(ws->sc, psprintf("SET logical_decoding_work_mem = '%dkB'", work_mem_kb),
						  "set logical_decoding_work_mem");
	ws->binary = binary;
	ws->received = start;
	ws->last_status = GetCurrentTimestamp();

	snprintf(pubs, sizeof(pubs), "%s", quote_identifier(pipe->publication));
	transport_copy_both_start(ws->sc,
							  psprintf("START_REPLICATION SLOT %s LOGICAL %X/%X "
									   "(proto_version '2', streaming 'on', publication_names %s%s)",
									   quote_identifier(pipe->slot_name), LSN_FORMAT_ARGS(start),
									   quote_literal_cstr(pubs), binary ? ", binary 'true'" : ""),
							  "stream the slot's changes");
	return ws;
}

/*
 * Close the stream and drop its spooled transactions.  Politely (CopyDone,
 * waiting up to a second for the walsender to release the slot) when asked
 * and the connection is healthy; after an error, at once.
 */
void
walstream_close(WalStream *ws, bool polite)
{
	if (ws == NULL)
		return;
	if (ws->sc != NULL)
	{
		if (polite)
		{
			HOLD_INTERRUPTS();
			(void) transport_copy_end(ws->sc, 1000);
			RESUME_INTERRUPTS();
		}
		if (ws->sc != NULL)
			transport_close(ws->sc);
	}
	if (ws->pending)
		pfree(ws->pending);
	if (ws->relcxt)
		MemoryContextDelete(ws->relcxt);
	if (ws->wes)
		FreeWaitEventSet(ws->wes);
	pfree(ws);
	streamfile_reset();
}

/*
 * A batch was committed locally at local_end (XactLastCommitEnd), making
 * the datamart consistent with source position remote_end: report it once
 * the local WAL is flushed that far.
 */
void
walstream_committed(WalStream *ws, XLogRecPtr local_end, XLogRecPtr remote_end)
{
	if (ws->npending > 0 && ws->pending[ws->npending - 1].remote_end >= remote_end)
		return;
	if (ws->npending == ws->maxpending)
	{
		ws->maxpending = Max(16, ws->maxpending * 2);
		ws->pending = ws->pending == NULL ?
			MemoryContextAlloc(TopMemoryContext, ws->maxpending * sizeof(WalStreamCommit)) :
			repalloc(ws->pending, ws->maxpending * sizeof(WalStreamCommit));
	}
	ws->pending[ws->npending].local_end = local_end;
	ws->pending[ws->npending].remote_end = remote_end;
	ws->npending++;
}

/* The source position the datamart has durably applied, as known now. */
static XLogRecPtr
durable_position(WalStream *ws)
{
	XLogRecPtr	flushed = GetFlushRecPtr(NULL);
	int			i = 0;

	while (i < ws->npending && ws->pending[i].local_end <= flushed)
	{
		ws->durable = Max(ws->durable, ws->pending[i].remote_end);
		i++;
	}
	if (i > 0)
	{
		memmove(ws->pending, ws->pending + i, (ws->npending - i) * sizeof(WalStreamCommit));
		ws->npending -= i;
	}
	/* nothing open, nothing unflushed: all the walsender sent is applied */
	if (ws->npending == 0 && !ws->in_batch)
		ws->durable = Max(ws->durable, ws->received);
	return ws->durable;
}

/*
 * Send a standby status update when asked to (force), when the durable
 * position moved, or when STATUS_INTERVAL_MS passed since the last.
 */
void
walstream_feedback(WalStream *ws, bool force)
{
	XLogRecPtr	flush = durable_position(ws);
	TimestampTz now = GetCurrentTimestamp();
	char		msg[1 + 8 * 4 + 1];

	if (!force && flush <= ws->reported &&
		!TimestampDifferenceExceeds(ws->last_status, now, STATUS_INTERVAL_MS))
		return;
	msg[0] = 'r';
	put_int64(msg + 1, Max(ws->received, flush));	/* written */
	put_int64(msg + 9, flush);	/* flushed */
	put_int64(msg + 17, flush); /* applied */
	put_int64(msg + 25, now);
	msg[33] = 0;				/* no reply wanted */
	transport_copy_put(ws->sc, msg, sizeof(msg), "take the datamart's position");
	ws->reported = flush;
	ws->last_status = now;
}

/*
 * Read one CopyData message (held from walstream_wait, or new), without
 * waiting.  Keepalives are handled here.  Returns its length, 0 if none.
 */
static int
read_one(WalStream *ws, char **buf)
{
	for (;;)
	{
		int			len;

		if (ws->held_len > 0)
		{
			len = ws->held_len;
			*buf = ws->held;
			ws->held_len = 0;
			return len;
		}
		len = transport_copy_try_next(ws->sc, buf, "send the slot's changes");
		if (len < 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("source \"%s\" ended the replication stream", ws->sc->source),
					 errhint("The worker reconnects after a backoff; the source's log says why it ended.")));
		if (len == 0)
			return 0;
		if ((*buf)[0] == 'k')
		{
			if (len < 1 + 8 + 8 + 1)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg_internal("truncated keepalive from source")));
			ws->received = Max(ws->received, (XLogRecPtr) get_int64(*buf + 1));
			if ((*buf)[17])
				walstream_feedback(ws, true);
			continue;
		}
		if ((*buf)[0] != 'w' || len < 1 + 8 * 3 + 1)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg_internal("unexpected replication message \"%c\" from source", (*buf)[0])));
		return len;
	}
}

/*
 * The next pgoutput message in *msg (valid until the next call).  With
 * wait, waits for it (interruptibly, answering keepalives and sending
 * status updates on time); without, returns false when none has arrived.
 */
bool
walstream_next(WalStream *ws, StringInfo msg, bool wait)
{
	for (;;)
	{
		char	   *buf;
		int			len = read_one(ws, &buf);

		if (len > 0)
		{
			XLogRecPtr	start = (XLogRecPtr) get_int64(buf + 1);

			ws->received = Max(ws->received, start);
			msg->data = buf + 25;
			msg->len = len - 25;
			msg->maxlen = msg->len;
			msg->cursor = 0;
			ws->messages++;
			if (walstream_busy_hook != NULL && ws->messages % 1000 == 0)
				walstream_busy_hook(ws);
			return true;
		}
		if (!wait)
			return false;
		walstream_feedback(ws, false);
		(void) transport_wait_readable(ws->sc, STATUS_INTERVAL_MS);
	}
}

/*
 * Between batches: wait until a change arrives (true: it is held for the
 * next batch), or the latch is set (false: the caller looks at its flags
 * and comes back).  Keepalives are answered and the durable position is
 * reported as the datamart's WAL reaches the disk.
 */
bool
walstream_wait(WalStream *ws)
{
	for (;;)
	{
		char	   *buf;
		int			len;
		bool		readable;

		walstream_feedback(ws, false);
		len = read_one(ws, &buf);
		if (len > 0)
		{
			ws->held = buf;		/* libpq's buffer: kept until the next read */
			ws->held_len = len;
			return true;
		}
		readable = transport_wait_readable(ws->sc, ws->npending > 0 ? FLUSH_CHECK_MS : STATUS_INTERVAL_MS);
		if (!readable && ws->npending == 0)
		{
			/* a timeout or the latch: let the caller look at its flags */
			walstream_feedback(ws, false);
			return false;
		}
	}
}

/*
 * During a long apply (a big streamed transaction's commit): keep the
 * walsender from timing us out, with a status update every
 * STATUS_INTERVAL_MS (it needs no read).
 */
void
walstream_tick(WalStream *ws)
{
	if (ws != NULL && ws->sc != NULL)
		walstream_feedback(ws, false);
	if (walstream_busy_hook != NULL)
		walstream_busy_hook(ws);
}

/*
 * walstream_wait without the wait, for a worker waiting on many streams at
 * once (worker.c): answer keepalives, report what is durable, and hold a
 * change that has arrived for the next batch (true).
 */
bool
walstream_poll(WalStream *ws)
{
	char	   *buf;
	int			len;

	if (ws->held_len > 0)
		return true;
	walstream_feedback(ws, false);
	len = read_one(ws, &buf);
	if (len > 0)
	{
		ws->held = buf;
		ws->held_len = len;
		return true;
	}
	return false;
}

/* A RELATION message kept for the connection's later batches. */
typedef struct KnownRelation
{
	uint32		relid;			/* hash key */
	int			len;
	char	   *msg;			/* the message after its action byte */
} KnownRelation;

/*
 * Keep a RELATION message (the body after its action byte): the walsender
 * sends it once per connection (again only when the relation changes), so
 * later batches map the relation from it.
 */
void
walstream_remember_relation(WalStream *ws, const char *body, int len)
{
	KnownRelation *kr;
	uint32		relid;
	bool		found;

	if (len < 4)
		return;
	memcpy(&relid, body, 4);
	relid = pg_ntoh32(relid);
	if (ws->relations == NULL)
	{
		HASHCTL		ctl;

		ws->relcxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice stream relations",
										   ALLOCSET_SMALL_SIZES);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(KnownRelation);
		ctl.hcxt = ws->relcxt;
		ws->relations = hash_create("pg_sluice stream relations", 16, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	kr = hash_search(ws->relations, &relid, HASH_ENTER, &found);
	if (found)
		pfree(kr->msg);
	kr->msg = MemoryContextAlloc(ws->relcxt, len + 1);
	memcpy(kr->msg, body, len);
	kr->msg[len] = '\0';
	kr->len = len;
}

/* The RELATION message kept for relid, as a StringInfo to read, if any. */
bool
walstream_recall_relation(WalStream *ws, uint32 relid, StringInfo msg)
{
	KnownRelation *kr;

	if (ws->relations == NULL ||
		(kr = hash_search(ws->relations, &relid, HASH_FIND, NULL)) == NULL)
		return false;
	msg->data = kr->msg;
	msg->len = kr->len;
	msg->maxlen = kr->len + 1;
	msg->cursor = 0;
	return true;
}

/*
 * Wait (interruptibly, at most timeout_ms) until the walsender sends
 * something, answering keepalives on time: for a reader that polls with
 * walstream_next(wait = false) and looks at ws->received between messages
 * (a refresh).  The reader drains everything readable
 * before it comes here, so each wake-up takes what piled up meanwhile; it
 * waits on the socket itself, never on a timer first (see the NOTES: a
 * pause to let the socket fill was measured slower).
 */
void
walstream_await(WalStream *ws, long timeout_ms)
{
	WaitEvent	ev;

	walstream_feedback(ws, false);
	if (ws->wes == NULL)
	{
		ws->wes = CreateWaitEventSet(TopMemoryContext, 3);
		AddWaitEventToSet(ws->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(ws->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(ws->wes, WL_SOCKET_READABLE, PQsocket(ws->sc->conn), NULL, NULL);
	}
	relmap_step_release();
	if (WaitEventSetWait(ws->wes, Min(timeout_ms, STATUS_INTERVAL_MS), &ev, 1, PG_WAIT_EXTENSION) == 1 &&
		(ev.events & WL_LATCH_SET))
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Ask the walsender where it is: a standby status update that wants a reply
 * (the durable position only, as always), answered at once by a keepalive
 * carrying the walsender's position, which read_one puts in ws->received.
 * For a reader at a transaction boundary that waits for the walsender to
 * pass a position (a refresh): the walsender's own keepalive while it waits
 * for WAL is not reliable (it skips it while a reply it asked for is due).
 * At most every 10 ms (the caller waits no longer than that for the
 * answer, and asks again).
 */
void
walstream_ask_position(WalStream *ws)
{
	TimestampTz now = GetCurrentTimestamp();
	XLogRecPtr	flush = durable_position(ws);
	char		msg[1 + 8 * 4 + 1];

	if (!TimestampDifferenceExceeds(ws->asked_at, now, 10))
		return;
	msg[0] = 'r';
	put_int64(msg + 1, flush);	/* written */
	put_int64(msg + 9, flush);	/* flushed */
	put_int64(msg + 17, flush); /* applied */
	put_int64(msg + 25, now);
	msg[33] = 1;				/* reply now */
	transport_copy_put(ws->sc, msg, sizeof(msg), "take the datamart's position");
	ws->reported = flush;
	ws->last_status = now;
	ws->asked_at = now;
}

/*
 * The end of a refresh's stream, from its commit callback (refresh.c): tell
 * the walsender that the datamart durably has everything before lsn (the
 * slot moves there, nothing decoded again), end the stream politely and
 * close.  Never raises and waits at most a second (interrupts are held):
 * on any failure the slot simply stays where it was and the next refresh
 * starts from the replication origin's position.  Returns whether the
 * position was sent.
 */
bool
walstream_confirm_and_close(WalStream *ws, XLogRecPtr lsn)
{
	bool		sent = false;

	if (ws == NULL)
		return false;
	if (ws->sc != NULL && ws->sc->conn != NULL && PQstatus(ws->sc->conn) == CONNECTION_OK &&
		!XLogRecPtrIsInvalid(lsn))
	{
		char		msg[1 + 8 * 4 + 1];

		msg[0] = 'r';
		put_int64(msg + 1, lsn);	/* written */
		put_int64(msg + 9, lsn);	/* flushed */
		put_int64(msg + 17, lsn);	/* applied */
		put_int64(msg + 25, GetCurrentTimestamp());
		msg[33] = 0;
		sent = PQputCopyData(ws->sc->conn, msg, sizeof(msg)) > 0;
	}
	walstream_close(ws, sent);
	return sent;
}
