/*-------------------------------------------------------------------------
 *
 * spool.c
 *	  While a pipeline cannot apply, its slot's changes are drained into the
 *	  datamart, so that live's slot moves on; resume applies them first.
 *
 * NOTES
 *	  Why.  A paused pipeline (drift, an error expectation, a missing row
 *	  under strict) keeps its slot where it was, and live keeps every byte of
 *	  WAL from then on: a weekend pause can fill live's disk.  A datamart must
 *	  never cause that outage.
 *
 *	  What this file owns.  The spool (sluice._spool) and its position
 *	  (sluice._slot_state.drained_upto).  spool_drain decodes the slot with
 *	  the same query and framing as a batch (stream.c), keeps the pgoutput
 *	  messages of each source transaction as they came, in chunks of about
 *	  SPOOL_CHUNK bytes (each message preceded by its length), and records
 *	  the position it drained to, all in the caller's transaction.  Only once
 *	  that is committed and flushed is the slot moved there: by the worker
 *	  right after its commit (slotwatch_advance), and by the next drain or
 *	  refresh otherwise.  A crash between the commit and the advance only
 *	  decodes again what is spooled already: transactions whose commit
 *	  record starts before the drained position are left out, as apply.c
 *	  leaves out those before the replication origin's.  The next batch after
 *	  sluice.resume() (refresh.c) applies the spool first, through apply.c's
 *	  dispatch (stream.c reads the spool instead of the source when it is
 *	  given no connection: spool_open, spool_next), deletes it and sets the
 *	  origin to the drained position in the same transaction, then goes on
 *	  from the slot.  A pause during that apply rolls it all back: the spool
 *	  stays, with the pipeline paused again.
 *
 *	  The limit.  pg_sluice.spool_limit bounds the spool's bytes.  Past it,
 *	  the drain stops at the last whole transaction (a transaction that does
 *	  not fit is not kept), a spool_full event and a WARNING say so once, and
 *	  the slot keeps the rest on live: the old behaviour, which
 *	  max_retained_wal and slot_lag watch.
 *
 *	  What it never does.  Parse a change (apply.c does), write on live, or
 *	  let anyone but the extension owner read the spool: its rows are the
 *	  source's data (row security, no grant).
 *
 *	  Rejected.  Spooling rows already converted to datamart rows: the
 *	  conversion depends on the contract, which the operator is about to
 *	  change to resume (drift); the raw messages go through the contract in
 *	  force when they are applied, exactly as if they came from the slot.
 *	  Applying the spool in several batches: pgoutput sends a RELATION
 *	  message once per decoding session, so a batch starting in the middle of
 *	  a drain would meet changes of relations it was never told about; the
 *	  spool is bounded, and apply streams it chunk by chunk.
 *	  pg_logical_slot_get_binary_changes to drain: it moves the slot before
 *	  the spool is committed.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/spool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "replication/logicalproto.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"

#define SPOOL_CHUNK (1024 * 1024)

int			sluice_spool_limit = 1024 * 1024;	/* kB */

struct SpoolReader
{
	int			pipeline_id;
	bool		binary;
	XLogRecPtr	commit_lsn;		/* key of the chunk read last */
	int32		chunk;
	MemoryContext cxt;
	bytea	   *data;			/* the chunk being read, or NULL */
	int			off;			/* offset of the next message in it */
};

PG_FUNCTION_INFO_V1(sluice_drain);

void
spool_init(void)
{
	DefineCustomIntVariable("pg_sluice.spool_limit",
							"Sets how much of a paused pipeline's changes the datamart keeps, so that live can free its WAL.",
							"While a pipeline is paused, its slot's changes are drained into the datamart up to this size; "
							"past it a spool_full event is sent and the slot keeps the rest on the source. 0 turns spooling off.",
							&sluice_spool_limit,
							1024 * 1024, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);
}

/* What sluice._slot_state says of the spool (zeroes when it has no row). */
static void
spool_state(SluicePipeline *pipe, XLogRecPtr *drained, int64 *bytes, bool *full)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(pipe->pipeline_id)};
	bool		isnull;

	*drained = InvalidXLogRecPtr;
	*bytes = 0;
	*full = false;
	if (sluice_catalog_exec("SELECT drained_upto, spool_bytes, spool_full_at IS NOT NULL "
							"  FROM sluice._slot_state WHERE pipeline_id = $1",
							1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the spool's state");
	if (SPI_processed == 0)
		return;
	*drained = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		*drained = InvalidXLogRecPtr;
	*bytes = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	*full = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
}

static void
spool_set_state(SluicePipeline *pipe, XLogRecPtr drained, int64 bytes, bool full)
{
	Oid			types[4] = {INT4OID, LSNOID, INT8OID, BOOLOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = LSNGetDatum(drained);
	if (XLogRecPtrIsInvalid(drained))
		nulls[1] = 'n';
	args[2] = Int64GetDatum(bytes);
	args[3] = BoolGetDatum(full);
	if (sluice_catalog_exec("INSERT INTO sluice._slot_state AS s (pipeline_id, drained_upto, spool_bytes, spool_full_at) "
							"VALUES ($1, $2, $3, CASE WHEN $4 THEN pg_catalog.now() END) "
							"ON CONFLICT (pipeline_id) DO UPDATE SET drained_upto = $2, spool_bytes = $3, "
							"       spool_full_at = CASE WHEN $4 THEN COALESCE(s.spool_full_at, pg_catalog.now()) END",
							4, types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the spool's state");
}

/* One chunk of a transaction's messages into the spool (buf: a bytea being built). */
static void
spool_write_chunk(SluicePipeline *pipe, XLogRecPtr commit_lsn, int32 chunk, bool binary,
				  StringInfo buf)
{
	Oid			types[5] = {INT4OID, LSNOID, INT4OID, BOOLOID, BYTEAOID};
	Datum		args[5];

	SET_VARSIZE(buf->data, buf->len);
	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = LSNGetDatum(commit_lsn);
	args[2] = Int32GetDatum(chunk);
	args[3] = BoolGetDatum(binary);
	args[4] = PointerGetDatum(buf->data);
	if (sluice_catalog_exec("INSERT INTO sluice._spool (pipeline_id, commit_lsn, chunk, binary_mode, messages) "
							"VALUES ($1, $2, $3, $4, $5)",
							5, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write to the spool");
	resetStringInfo(buf);
	appendBinaryStringInfo(buf, "\0\0\0\0", VARHDRSZ);
}

static void
spool_announce_full(SluicePipeline *pipe, int64 bytes)
{
	StringInfoData j;
	char	   *summary = psprintf("the spool of paused pipeline %s reached pg_sluice.spool_limit (%lld bytes): slot %s keeps the rest on the source",
								   pipe->name, (long long) bytes, pipe->slot_name);

	initStringInfo(&j);
	sluice_json_begin(&j);
	sluice_json_string(&j, "slot", pipe->slot_name);
	sluice_json_raw(&j, "spool_bytes", psprintf(INT64_FORMAT, bytes));
	sluice_json_raw(&j, "spool_limit", psprintf(INT64_FORMAT, (int64) sluice_spool_limit * 1024));
	sluice_json_string(&j, "summary", summary);
	sluice_json_end(&j);
	outbox_emit(pipe->name, "spool_full", j.data);
	ereport(WARNING,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("the spool of pipeline \"%s\" is full", pipe->name),
			 errdetail("It holds %lld bytes, pg_sluice.spool_limit is %d kB; replication slot \"%s\" keeps the rest on source \"%s\".",
					   (long long) bytes, sluice_spool_limit, pipe->slot_name, pipe->source_name),
			 errhint("Resume the pipeline with sluice.resume('%s') so the spool is applied, or raise pg_sluice.spool_limit.",
					 pipe->name)));
}

/*
 * Drain the slot's changes committed on the source up to now into the
 * spool, in the caller's transaction (SPI connected, the pipeline's row
 * locked).  First the slot is told the position drained (or applied)
 * before, which is committed.  sc is an open connection to the source.
 */
void
spool_drain(SluicePipeline *pipe, SluiceConn *sc, SpoolResult *res)
{
	XLogRecPtr	drained;
	int64		bytes;
	bool		full;
	XLogRecPtr	start;
	XLogRecPtr	upto;
	XLogRecPtr	confirmed;
	PGresult   *pres;
	SluiceStream ss;
	StringInfoData msg;
	StringInfoData buf;
	bool		binary;
	bool		in_xact = false;
	bool		skipping = false;
	XLogRecPtr	cur_commit = InvalidXLogRecPtr;
	int32		chunk = 0;
	int64		limit = (int64) sluice_spool_limit * 1024;
	MemoryContext cxt;
	MemoryContext old;

	memset(res, 0, sizeof(*res));
	spool_state(pipe, &drained, &bytes, &full);
	start = Max(drained, origin_progress(pipe->origin_name, true));

	pres = refresh_describe_slot(pipe, sc, "drain");
	upto = transport_parse_lsn(PQgetvalue(pres, 0, 0));
	confirmed = PQgetisnull(pres, 0, 1) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(pres, 0, 1));
	res->source_flush_lsn = upto;
	res->slot_restart_lsn = PQgetisnull(pres, 0, 3) ? InvalidXLogRecPtr : transport_parse_lsn(PQgetvalue(pres, 0, 3));
	PQclear(pres);

	/* what is committed here (spool or origin) the slot may forget */
	if (start > confirmed && start <= upto)
		slotwatch_advance(pipe, sc, start);
	start = Max(start, confirmed);
	res->drained_upto = start;
	res->spool_bytes = bytes;
	res->full = full;
	if (start >= upto || sluice_spool_limit <= 0)
	{
		slotwatch_lag(pipe, res->source_flush_lsn, res->slot_restart_lsn, false);
		return;
	}
	if (bytes >= limit)
	{
		if (!full)
		{
			spool_set_state(pipe, start, bytes, true);
			spool_announce_full(pipe, bytes);
		}
		res->full = true;
		slotwatch_lag(pipe, res->source_flush_lsn, res->slot_restart_lsn, false);
		return;
	}

	/* (set on every drain: a connection may carry an earlier value) */
	transport_command(sc, sluice_source_decoding_work_mem > 0 ?
					  psprintf("SET logical_decoding_work_mem = '%dkB'", sluice_source_decoding_work_mem) :
					  "SET logical_decoding_work_mem TO DEFAULT",
					  "set logical_decoding_work_mem");
	/* as apply would decode it (apply_stream): the spool says which */
	binary = pipe->binary && pg_get_client_encoding() == GetDatabaseEncoding();
	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice spool",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, "\0\0\0\0", VARHDRSZ);
	stream_begin(&ss, pipe, sc, NULL, InvalidXLogRecPtr, upto, 0, binary, false);
	drained = start;
	while (stream_next(&ss, &msg))
	{
		char		action = msg.data[0];
		uint32		len;

		CHECK_FOR_INTERRUPTS();
		if (action == LOGICAL_REP_MSG_BEGIN)
		{
			LogicalRepBeginData begin;

			msg.cursor = 1;
			logicalrep_read_begin(&msg, &begin);
			in_xact = true;
			cur_commit = begin.final_lsn;
			chunk = 0;
			/* spooled (or applied) before a crash kept the slot back */
			skipping = begin.final_lsn < start;
		}
		if (skipping)
		{
			if (action == LOGICAL_REP_MSG_COMMIT)
				in_xact = skipping = false;
			continue;
		}
		len = pg_hton32((uint32) msg.len);
		appendBinaryStringInfo(&buf, (char *) &len, 4);
		appendBinaryStringInfo(&buf, msg.data, msg.len);
		if (action == LOGICAL_REP_MSG_COMMIT)
		{
			LogicalRepCommitData commit;

			msg.cursor = 1;
			logicalrep_read_commit(&msg, &commit);
			bytes += buf.len - VARHDRSZ;
			res->bytes += buf.len - VARHDRSZ;
			spool_write_chunk(pipe, cur_commit, chunk++, binary, &buf);
			drained = commit.end_lsn;
			res->transactions++;
			in_xact = false;
		}
		else if (buf.len >= SPOOL_CHUNK)
		{
			bytes += buf.len - VARHDRSZ;
			res->bytes += buf.len - VARHDRSZ;
			spool_write_chunk(pipe, cur_commit, chunk++, binary, &buf);
		}
		if (bytes + buf.len > limit)
		{
			full = true;
			break;
		}
	}
	MemoryContextSwitchTo(old);

	if (full)
	{
		Oid			types[2] = {INT4OID, LSNOID};
		Datum		args[2];

		/* the source is still sending: cancel and close */
		transport_abandon(sc);
		res->conn_closed = true;
		if (in_xact && chunk > 0)
		{
			/* a transaction is kept whole or not at all */
			args[0] = Int32GetDatum(pipe->pipeline_id);
			args[1] = LSNGetDatum(cur_commit);
			if (sluice_catalog_exec("WITH d AS (DELETE FROM sluice._spool WHERE pipeline_id = $1 AND commit_lsn = $2 "
									"           RETURNING pg_catalog.octet_length(messages) AS n) "
									"SELECT COALESCE(pg_catalog.sum(n), 0)::int8 FROM d",
									2, types, args, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not trim the spool");
			else
			{
				bool		isnull;
				int64		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

				bytes -= n;
				res->bytes -= n;
			}
		}
		spool_set_state(pipe, drained, bytes, true);
		if (!res->full)
			spool_announce_full(pipe, bytes);
		res->full = true;
	}
	else if (res->transactions > 0)
	{
		/* every transaction before upto came: nothing else to keep before it */
		drained = Max(drained, upto);
		spool_set_state(pipe, drained, bytes, false);
	}
	else
	{
		/*
		 * Nothing to keep: the slot may forget everything before upto now,
		 * and no write here records it (the next drain starts from the
		 * slot's position, past the spool's).
		 */
		drained = Max(drained, upto);
		slotwatch_advance(pipe, sc, drained);
	}
	res->drained_upto = drained;
	res->spool_bytes = bytes;
	/* the WAL the slot kept: written down when the drain wrote anyway */
	slotwatch_lag(pipe, res->source_flush_lsn, res->slot_restart_lsn, res->transactions > 0);
	MemoryContextDelete(cxt);
}

/* Does the pipeline have a spool to apply? */
bool
spool_pending(SluicePipeline *pipe)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(pipe->pipeline_id)};

	if (sluice_catalog_exec("SELECT 1 FROM sluice._spool WHERE pipeline_id = $1 LIMIT 1",
							1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the spool");
	return SPI_processed > 0;
}

/*
 * Apply the spool in the caller's batch (refresh.c: the origin session set
 * up, the owner's security-restricted operation begun), skipping the
 * transactions committed before origin_lsn, which were applied; then
 * delete it.  Returns the position the datamart is consistent with: the
 * drained one.
 */
XLogRecPtr
spool_apply(SluicePipeline *pipe, XLogRecPtr origin_lsn, ApplyStats *stats)
{
	XLogRecPtr	drained;
	int64		bytes;
	bool		full;
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(pipe->pipeline_id)};

	spool_state(pipe, &drained, &bytes, &full);
	apply_stream(pipe, NULL, NULL, origin_lsn, InvalidXLogRecPtr, InvalidXLogRecPtr,
				 0, 0, stats);
	if (sluice_catalog_exec("DELETE FROM sluice._spool WHERE pipeline_id = $1",
							1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not empty the spool");
	drained = Max(drained, stats->last_end_lsn);
	spool_set_state(pipe, drained, 0, false);
	ereport(DEBUG1,
			(errmsg_internal("pipeline \"%s\" applied its spool: " INT64_FORMAT " transactions up to %X/%X",
							 pipe->name, stats->transactions, LSN_FORMAT_ARGS(drained))));
	return drained;
}

/*
 * The spool as a stream of messages (stream.c, when apply_stream is given
 * no connection): one chunk read at a time, in the order drained.
 */
SpoolReader *
spool_open(SluicePipeline *pipe, bool binary)
{
	SpoolReader *sr = palloc0(sizeof(SpoolReader));

	sr->pipeline_id = pipe->pipeline_id;
	sr->binary = binary;
	sr->commit_lsn = InvalidXLogRecPtr;
	sr->chunk = -1;
	sr->cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice spool chunk",
									ALLOCSET_DEFAULT_SIZES);
	return sr;
}

static bool
spool_next_chunk(SpoolReader *sr)
{
	Oid			types[3] = {INT4OID, LSNOID, INT4OID};
	Datum		args[3];
	bool		isnull;
	bool		chunk_binary;
	MemoryContext old;
	int			rc;

	args[0] = Int32GetDatum(sr->pipeline_id);
	args[1] = LSNGetDatum(sr->commit_lsn);
	args[2] = Int32GetDatum(sr->chunk);
	MemoryContextReset(sr->cxt);
	sr->data = NULL;
	rc = sluice_catalog_exec("SELECT commit_lsn, chunk, binary_mode, messages FROM sluice._spool "
							 " WHERE pipeline_id = $1 AND (commit_lsn, chunk) > ($2, $3) "
							 " ORDER BY commit_lsn, chunk LIMIT 1",
							 3, types, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the spool");
	if (SPI_processed == 0)
		return false;
	sr->commit_lsn = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	sr->chunk = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	chunk_binary = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (chunk_binary != sr->binary)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the spool of the pipeline was drained with %s values and cannot be applied with %s ones",
						chunk_binary ? "binary" : "text", sr->binary ? "binary" : "text"),
				 errdetail("Binary values are applied only when client_encoding is the database's encoding."),
				 errhint("Refresh the pipeline in a session whose client_encoding is the database's encoding, as the drain's was.")));
	old = MemoryContextSwitchTo(sr->cxt);
	sr->data = DatumGetByteaPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	sr->off = 0;
	return true;
}

bool
spool_next(SpoolReader *sr, StringInfo msg)
{
	for (;;)
	{
		uint32		len;
		const char *p;

		if (sr->data == NULL || sr->off >= (int) VARSIZE_ANY_EXHDR(sr->data))
		{
			if (!spool_next_chunk(sr))
				return false;
			continue;
		}
		p = VARDATA_ANY(sr->data) + sr->off;
		if (VARSIZE_ANY_EXHDR(sr->data) - sr->off < 4)
			elog(ERROR, "truncated spool chunk");
		memcpy(&len, p, 4);
		len = pg_ntoh32(len);
		if (len < 1 || VARSIZE_ANY_EXHDR(sr->data) - sr->off - 4 < len)
			elog(ERROR, "truncated spool chunk");
		msg->data = (char *) p + 4;
		msg->len = len;
		msg->maxlen = len;
		msg->cursor = 0;
		sr->off += 4 + len;
		return true;
	}
}

/*
 * sluice.drain(pipeline): drain a scheduled pipeline's slot into the spool
 * (see spool_drain).  Continuous pipelines drain in their worker.
 */
Datum
sluice_drain(PG_FUNCTION_ARGS)
{
	char	   *name;
	SluicePipeline *pipe;
	SluiceConn *sc;
	SpoolResult sr;
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline must not be NULL"),
				 errhint("sluice.pipelines lists the existing pipelines.")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	SPI_connect();
	pipe = catalog_pipeline(name, true);
	sluice_check_operator(pipe, "drain");
	catalog_require_postgres(pipe, "drain");
	if (pipe->continuous)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("pipeline \"%s\" is streaming continuously", name),
				 errdetail("Its background worker drains its slot itself while it is paused."),
				 errhint("Stop it with sluice.stop('%s') to drain it from pg_cron.", name)));
	sc = transport_connect(pipe->source_name, pipe->conninfo, false);
	spool_drain(pipe, sc, &sr);
	if (!sr.conn_closed)
		transport_close(sc);
	SPI_finish();

	values[0] = Int64GetDatum(sr.transactions);
	values[1] = Int64GetDatum(sr.bytes);
	values[2] = Int64GetDatum(sr.spool_bytes);
	values[3] = LSNGetDatum(sr.drained_upto);
	nulls[3] = XLogRecPtrIsInvalid(sr.drained_upto);
	values[4] = BoolGetDatum(sr.full);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
