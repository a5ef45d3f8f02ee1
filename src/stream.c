/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  A slot's changes as a stream of pgoutput messages, decoded on the
 *	  source through the SQL interface and read over transport.c.
 *
 * NOTES
 *	  What this file owns.  The decoding query and its framing.  A batch reads
 *	  the slot through the SQL interface:
 *
 *		COPY (SELECT data
 *				FROM pg_logical_slot_peek_binary_changes(slot, upto, NULL,
 *					 'proto_version', '2', 'streaming', 'on',
 *					 'publication_names', pub))
 *		  TO STDOUT (FORMAT binary)
 *
 *	  over a normal libpq connection.  It yields exactly the messages the
 *	  walsender would send (the pgoutput plugin runs either way), and "peek"
 *	  consumes nothing: the slot only moves when a later batch tells it the
 *	  position the datamart has durably committed (see origin.c).  upto is a
 *	  position captured when the batch starts (refresh.c), so a batch always
 *	  ends, even while the source keeps writing.  A big backlog comes in two
 *	  parts, the second decoded on a second connection, from a temporary copy
 *	  of the slot moved to the split point, while the first is applied; if no
 *	  second slot can be had, the second part is decoded after the first and
 *	  the transactions the first delivered are skipped (skip_before).
 *	  stream_next unwraps the binary COPY (header, one bytea field per row,
 *	  trailer) and hands apply one message at a time.
 *
 *	  Streaming.  With 'streaming' on, live decodes within its own
 *	  logical_decoding_work_mem (pg_sluice sets nothing unless
 *	  pg_sluice.source_decoding_work_mem says so) and sends a bigger
 *	  transaction in stream blocks while decoding it, as its walsender does
 *	  for a subscription with streaming on; apply spools them here on the
 *	  datamart (streamfile.c) until STREAM COMMIT.  Before, live held up to
 *	  256MB of a transaction and spilled the rest to its own disk, and one
 *	  1,000,000-row transaction cost it 406 MB (two parts) against its
 *	  walsender's 91 MB for a native subscription; now 90.4 MB against 91.3
 *	  (one part, within live's setting less 1MB: refresh.c,
 *	  refresh_decoding_mem; bench/run.sh scenario 3).  Each call is a decoding
 *	  session of its own: a transaction streamed but not committed by upto
 *	  comes again from its start in the next one, so the files are dropped
 *	  at the end (stream_end).  Of a refresh in two parts, only the second
 *	  streams.  Workers' bounded batches (max_messages) and the spool keep
 *	  protocol 1 (see stream_begin).
 *
 *	  What it never does.  Parse a pgoutput message (apply.c does), commit, or
 *	  move the slot (refresh.c advances it to the origin's progress).  It is
 *	  the transport layer's one protocol; transport.c underneath stays generic
 *	  libpq, used by every module.
 *
 *	  Rejected.  The walsender stream (START_REPLICATION) for refreshes: the
 *	  walsender flushes its socket once per change, and a 1,000-transaction
 *	  backlog reached the client in 3.15 s through it against 1.02 s this way
 *	  (measured on PostgreSQL 15, 1,000 transactions of 1,000 rows).
 *	  Continuous workers use it (walstream.c): for them what counts is the
 *	  time from a commit to its apply, and the SQL interface can only be
 *	  polled.
 *	  pg_logical_slot_get_binary_changes: it consumes, so a crash between
 *	  decoding and the datamart's commit would lose changes.  Selecting the
 *	  lsn and xid columns too: two send functions per row on the source, for
 *	  nothing apply needs.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/stream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"

static const char copy_signature[11] = "PGCOPY\n\377\r\n\0";

static int32
read_int32(const char **p, const char *end)
{
	uint32		v;

	if (end - *p < 4)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg_internal("truncated COPY row from source")));
	memcpy(&v, *p, 4);
	*p += 4;
	return (int32) pg_ntoh32(v);
}

/*
 * The query that decodes a slot's changes up to upto (whole transactions:
 * the source stops at the first commit record ending at or past it), at
 * most max_messages of them when > 0.  Only the messages: the lsn and xid
 * columns would cost the source two send functions a row, and the messages
 * carry what apply needs.  COPY takes no parameters: the slot name is a
 * literal, the publication an identifier inside a literal, both quoted.
 *
 * The function puts its whole output in a tuplestore before COPY sends any
 * of it, in memory up to the session's work_mem and in a temporary file
 * beyond: live's work_mem (4MB by default, often far more) would be memory
 * pg_sluice holds on live on top of the decoding's own.  So work_mem is set
 * to its floor for this statement only (set_config local to the
 * statement's transaction, evaluated first: the function's arguments
 * depend on it), and the output goes to the temporary file at once, as any
 * output above 4MB already did.
 */
static char *
peek_sql(SluicePipeline *pipe, const char *slot, XLogRecPtr upto,
		 int64 max_messages, bool binary, bool streaming)
{
	char		lsnbuf[32];
	char		nchanges[32];
	char		pubs[NAMEDATALEN * 2 + 3];

	snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(upto));
	if (max_messages > 0)
		snprintf(nchanges, sizeof(nchanges), INT64_FORMAT, max_messages);
	else
		strcpy(nchanges, "NULL");
	snprintf(pubs, sizeof(pubs), "%s", quote_identifier(pipe->publication));
	return psprintf("COPY (SELECT c.data "
					"  FROM (SELECT pg_catalog.set_config('work_mem', '64kB', true) AS w) AS m, "
					"       LATERAL pg_catalog.pg_logical_slot_peek_binary_changes("
					"%s, CASE WHEN m.w IS NOT NULL THEN %s::pg_catalog.pg_lsn END, %s, "
					"'proto_version', %s, 'publication_names', %s%s) AS c) "
					"TO STDOUT (FORMAT binary)",
					quote_literal_cstr(slot), quote_literal_cstr(lsnbuf), nchanges,
					streaming ? "'2', 'streaming', 'on'" : "'1'",
					quote_literal_cstr(pubs), binary ? ", 'binary', 'true'" : "");
}

/*
 * Start decoding the slot's changes up to upto_lsn (at most max_messages
 * of them when > 0) on sc.  With sc2, the changes come in two parts split
 * at split_lsn, the second decoded on sc2 at the same time as the first
 * (see refresh_inner): sc2 copies the slot into a temporary one, moves the
 * copy to split_lsn and decodes from there to upto_lsn, while sc decodes up
 * to split_lsn.  Each part holds the transactions whose commit record
 * starts on its side of split_lsn.  The second is sent first: the source
 * starts on it at once.
 */
void
stream_begin(SluiceStream *ss, SluicePipeline *pipe, SluiceConn *sc,
			 SluiceConn *sc2, XLogRecPtr split_lsn, XLogRecPtr upto_lsn,
			 int64 max_messages, bool binary, bool streaming)
{
	memset(ss, 0, sizeof(*ss));
	ss->pipe = pipe;
	ss->sc = sc;
	ss->sc2 = sc2;
	ss->cur = sc;
	ss->split_lsn = split_lsn;
	ss->upto_lsn = upto_lsn;
	ss->binary = binary;
	ss->skip_before = InvalidXLogRecPtr;
	if (sc == NULL)
	{
		/* no connection: a paused pipeline's spool (spool.c) */
		ss->spool = spool_open(pipe, binary);
		return;
	}

	/*
	 * With streaming (a whole refresh, apply_stream), the source streams a
	 * transaction bigger than its logical_decoding_work_mem while decoding
	 * it, as a walsender does for a subscription with streaming on: the
	 * source's memory stays within that setting, and the datamart spools the
	 * transaction (streamfile.c) until its STREAM COMMIT.  Without it, the
	 * source's reorder buffer spills the transaction to its disk and reads
	 * it back at the commit record.  A batch bounded by max_messages keeps
	 * protocol 1: the source counts stream blocks as changes, and a
	 * streamed transaction longer than the bound would end every batch
	 * before its commit, for good.  So does the spool (spool.c), which keeps
	 * messages across drains and could not tell a transaction streamed
	 * twice from two.  The files belong to this stream: a set another
	 * stream holds (a pool worker's) is put aside until stream_end.
	 */
	ss->streaming = streaming && max_messages <= 0 && PQserverVersion(sc->conn) >= 140000;
	if (ss->streaming)
	{
		ss->saved_files = streamfile_save();
		ss->files_saved = true;
	}
	if (sc2 != NULL)
	{
		char	   *tmp = psprintf("sluice_split_%d_%lx", MyProcPid,
								   (unsigned long) GetCurrentTimestamp());
		char	   *split = psprintf("%X/%X", LSN_FORMAT_ARGS(split_lsn));

		/* (refresh.c set its logical_decoding_work_mem) */
		transport_send(sc2,
					   psprintf("SELECT 1 FROM pg_catalog.pg_copy_logical_replication_slot(%s, %s, true); "
								"SELECT 1 FROM pg_catalog.pg_replication_slot_advance(%s, %s); %s",
								quote_literal_cstr(pipe->slot_name), quote_literal_cstr(tmp),
								quote_literal_cstr(tmp), quote_literal_cstr(split),
								peek_sql(pipe, tmp, upto_lsn, 0, binary, ss->streaming)),
					   "decode the second part of the slot's changes");
		/*
		 * The first part does not stream: a transaction it would stream
		 * commits past the split (the second part sends it whole), so its
		 * blocks would cross the wire to be dropped; unstreamed, live
		 * spills it within its logical_decoding_work_mem and sends nothing.
		 */
		transport_copy_start(sc, peek_sql(pipe, pipe->slot_name, split_lsn, 0, binary, false),
							 "decode the slot's changes");
	}
	else
		transport_copy_start(sc, peek_sql(pipe, pipe->slot_name, upto_lsn, max_messages, binary, ss->streaming),
							 "decode the slot's changes");
}

/*
 * The next pgoutput message of the stream, in *msg (its data stays valid
 * until the next call), or false at its end.  The binary COPY framing
 * (header, one bytea field per row, trailer) is unwrapped here.  When the
 * second part could not be decoded on its own connection, it is decoded on
 * the first after it, from the slot: ss->skip_before is then split_lsn, and
 * the transactions committed before it, which the first part delivered
 * already, come again (the consumer skips them).
 */
bool
stream_next(SluiceStream *ss, StringInfo msg)
{
	if (ss->spool != NULL)
	{
		if (!spool_next(ss->spool, msg))
			return false;
		ss->messages++;
		return true;
	}
	for (;;)
	{
		SluicePipeline *pipe = ss->pipe;
		char	   *buf;
		int			len = transport_copy_next(ss->cur, &buf, "send the slot's changes");
		const char *p;
		const char *end;
		int16		nfields;

		if (len < 0 && ss->cur == ss->sc && ss->sc2 != NULL)
		{
			/* first part done: on to the second */
			char	   *err = transport_copy_await(ss->sc2, "decode the second part of the slot's changes");

			ereport(DEBUG1,
					(errmsg_internal("pipeline \"%s\": first part done after " INT64_FORMAT " messages",
									 pipe->name, ss->messages)));
			if (err == NULL)
				ss->cur = ss->sc2;
			else
			{
				/*
				 * No second slot (max_replication_slots, say): decode the
				 * rest here, after the first part, skipping what it held.
				 */
				ereport(LOG,
						(errmsg("pipeline \"%s\" could not decode the second part of its refresh on a second connection; decoding it after the first",
								pipe->name),
						 errdetail("Source \"%s\" said: %s", pipe->source_name, err)));
				ss->skip_before = ss->split_lsn;
				transport_copy_start(ss->sc, peek_sql(pipe, pipe->slot_name, ss->upto_lsn, 0, ss->binary, ss->streaming),
									 "decode the slot's changes");
			}
			ss->sc2 = NULL;
			ss->header_done = false;

			/* (the first part streamed nothing: no file to drop) */
			continue;
		}
		if (len < 0)
		{
			stream_end(ss);
			return false;
		}
		p = buf;
		end = buf + len;
		if (!ss->header_done)
		{
			int32		extlen;

			if (len < 19 || memcmp(p, copy_signature, 11) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg_internal("bad binary COPY header from source")));
			p += 11;
			(void) read_int32(&p, end);
			extlen = read_int32(&p, end);
			p += extlen;
			ss->header_done = true;
			if (p >= end)
				continue;
		}
		if (end - p < 2)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg_internal("truncated COPY row from source")));
		nfields = (int16) pg_ntoh16(*(uint16 *) p);
		p += 2;
		if (nfields == -1)
			continue;			/* trailer */
		if (nfields != 1)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg_internal("unexpected COPY row with %d fields", nfields)));
		msg->len = read_int32(&p, end);
		if (msg->len < 1 || end - p < msg->len)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg_internal("truncated pgoutput message from source")));
		msg->data = (char *) p;
		msg->maxlen = msg->len;
		msg->cursor = 0;
		ss->messages++;
		return true;
	}
}

/*
 * The stream is over (or failed): a streamed transaction it left without
 * its commit (one still in progress at upto) is dropped, to come again
 * from its start in the next refresh, and a set of files put aside by
 * stream_begin is current again.  Idempotent.
 */
void
stream_end(SluiceStream *ss)
{
	if (!ss->files_saved)
		return;
	ss->files_saved = false;
	streamfile_reset();
	streamfile_restore(ss->saved_files);
	ss->saved_files = NULL;
}
