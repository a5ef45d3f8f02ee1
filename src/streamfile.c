/*-------------------------------------------------------------------------
 *
 * streamfile.c
 *	  Streamed source transactions, spooled to temporary files on the
 *	  datamart until the source says how they end.
 *
 * NOTES
 *	  What this file owns.  With the walsender transport (walstream.c) the
 *	  source streams a transaction bigger than its logical_decoding_work_mem
 *	  while it is still in progress, in blocks (STREAM START ... STREAM STOP),
 *	  interleaved with other transactions, and later sends STREAM COMMIT or
 *	  STREAM ABORT for it.  Each change of such a block is written here, to a
 *	  temporary file per top-level transaction (a BufFile: 8 kB of memory
 *	  each, whatever the transaction's size), in the form it would have had
 *	  outside a stream (the action byte, then the message without its xid).
 *	  At STREAM COMMIT apply.c reads the file back, message by message, and
 *	  applies it in the batch's local transaction, which commits with the
 *	  replication origin like any other; at STREAM ABORT of the transaction
 *	  the file is dropped.  A subtransaction's abort drops only what it and
 *	  what followed it wrote: the file remembers where each subtransaction's
 *	  first change starts and its logical end moves back there (later writes
 *	  overwrite the rest).  The files outlive the batches (a stream block and
 *	  its commit may fall in different local transactions) but not the
 *	  connection: a new one (streamfile_reset) drops them all, since the source
 *	  decodes every transaction not yet confirmed from its start again.  A
 *	  pool worker serving several streams keeps one set of files per stream
 *	  and makes it current while it serves that stream (streamfile_save,
 *	  streamfile_restore): two pipelines of one source see the same xids.
 *
 *	  What it never does.  Parse a change or apply one (apply.c does), or
 *	  talk to the source.
 *
 *	  Rejected.  Applying a streamed transaction as it arrives, in a
 *	  subtransaction of the batch: the source interleaves streamed
 *	  transactions with each other and with ordinary ones, and the batch's
 *	  local transaction could then only commit when every streamed
 *	  transaction open at the time had ended, holding the origin, the runs
 *	  and the lag of every other transaction hostage to the longest one; two
 *	  interleaved streamed transactions cannot both be open subtransactions
 *	  with the abort of either undoing only its own.  PostgreSQL 15's own
 *	  apply worker spools the same way (apply_spooled_messages).  A shared
 *	  fileset with one file per chunk, as core uses: our files never leave
 *	  this process, and BufFileCreateTemp(interXact) files already outlive
 *	  the transaction that created them.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/streamfile.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "storage/buffile.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "pg_sluice.h"

/* where a subtransaction's first spooled change starts */
typedef struct SpoolSub
{
	TransactionId xid;
	int64		size;			/* logical size of the file before it */
	int			fileno;
	off_t		offset;
} SpoolSub;

typedef struct Spool
{
	TransactionId xid;			/* hash key: the top-level transaction */
	BufFile    *file;
	int64		size;			/* logical size: bytes up to its end */
	int			endfile;		/* physical position of that end */
	off_t		endoff;
	int			nsubs;
	int			maxsubs;
	SpoolSub   *subs;
	TransactionId lastsub;		/* last subtransaction seen (fast path) */
	int64		messages;
	/* replay */
	int64		readpos;
} Spool;

static HTAB *spools = NULL;
static MemoryContext spool_cxt = NULL;
static TransactionId cur_xid = InvalidTransactionId;	/* open stream block */

static void spool_limit_hint(MemoryContext cxt);
static void spool_close(BufFile *file);

/* Drop every spool file: a new connection decodes them all again. */
void
streamfile_reset(void)
{
	if (spools != NULL)
	{
		HASH_SEQ_STATUS hs;
		Spool	   *sp;

		hash_seq_init(&hs, spools);
		while ((sp = hash_seq_search(&hs)) != NULL)
			if (sp->file)
			{
				BufFile    *file = sp->file;

				sp->file = NULL;	/* (closed once, even if this fails) */
				spool_close(file);
			}
	}
	if (spool_cxt != NULL)
		MemoryContextDelete(spool_cxt);
	spool_cxt = NULL;
	spools = NULL;
	cur_xid = InvalidTransactionId;
}

/*
 * A pool worker (worker.c) holds the streams of several pipelines: each has
 * its own set of files, made current while that pipeline is served.
 * streamfile_save takes the current set out (NULL when it has none) and
 * leaves none current; streamfile_restore makes a saved set current again.
 */
typedef struct StreamFiles
{
	HTAB	   *spools;
	MemoryContext cxt;
	TransactionId cur_xid;
} StreamFiles;

StreamFiles *
streamfile_save(void)
{
	StreamFiles *sf;

	if (spools == NULL)
		return NULL;
	sf = MemoryContextAlloc(TopMemoryContext, sizeof(StreamFiles));
	sf->spools = spools;
	sf->cxt = spool_cxt;
	sf->cur_xid = cur_xid;
	spools = NULL;
	spool_cxt = NULL;
	cur_xid = InvalidTransactionId;
	return sf;
}

void
streamfile_restore(StreamFiles *sf)
{
	streamfile_reset();			/* (the current set is empty: nothing to drop) */
	if (sf == NULL)
		return;
	spools = sf->spools;
	spool_cxt = sf->cxt;
	cur_xid = sf->cur_xid;
	pfree(sf);
}

static void
streamfile_setup(void)
{
	HASHCTL		ctl;

	if (spools != NULL)
		return;
	spool_cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice spool",
									  ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(TransactionId);
	ctl.entrysize = sizeof(Spool);
	ctl.hcxt = spool_cxt;
	spools = hash_create("pg_sluice spools", 16, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static Spool *
streamfile_find(TransactionId xid)
{
	if (spools == NULL)
		return NULL;
	return hash_search(spools, &xid, HASH_FIND, NULL);
}

static void
protocol_error(const char *msg, TransactionId xid)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("source sent %s for transaction %u", msg, xid),
			 errdetail("The streamed transaction's earlier changes are not on the datamart."),
			 errhint("The worker reconnects and the source sends the transaction again; report a bug if this repeats.")));
}

/*
 * An error while writing a spool file: temp_file_limit, which counts these
 * files, gets a hint with the ways forward (FileWrite's own message names
 * neither the spool nor a way out); any other error passes as it is.  A
 * transaction still in progress on live is streamed too (and dropped at
 * the refresh's end), so a refresh can hit the limit before the
 * transaction is due.  Called in a PG_CATCH with the context current at
 * its PG_TRY: never returns.
 */
static void
spool_limit_hint(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	if (edata->sqlerrcode != ERRCODE_CONFIGURATION_LIMIT_EXCEEDED || edata->hint != NULL)
	{
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	FlushErrorState();
	if (edata->detail == NULL)
		edata->detail = pstrdup("The datamart spools a transaction live streams while it is in progress (bigger than live's "
							"logical_decoding_work_mem) to temporary files until its commit, and they count against temp_file_limit.");
	edata->hint = pstrdup("Raise temp_file_limit for the role that refreshes, or have an administrator set "
						  "pg_sluice.source_decoding_work_mem above the transaction's size: live then sends it whole at its commit.");
	ReThrowError(edata);
}

/*
 * Close (and delete) a spool file.  BufFileClose writes out its last
 * buffer first, even of a file about to go, so it too can meet
 * temp_file_limit (a transaction still in progress at the refresh's end is
 * dropped so): the same hint.
 */
static void
spool_close(BufFile *file)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		BufFileClose(file);
	}
	PG_CATCH();
	{
		spool_limit_hint(cxt);
	}
	PG_END_TRY();
}

/* STREAM START: changes of xid follow, until STREAM STOP. */
void
streamfile_start(TransactionId xid, bool first_segment)
{
	Spool	   *sp;
	bool		found;

	streamfile_setup();
	if (TransactionIdIsValid(cur_xid))
		protocol_error("STREAM START inside another stream block", xid);
	sp = hash_search(spools, &xid, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext old;

		if (!first_segment)
		{
			hash_search(spools, &xid, HASH_REMOVE, NULL);
			protocol_error("a later part of a streamed transaction whose first part never came", xid);
		}
		memset(((char *) sp) + sizeof(TransactionId), 0, sizeof(Spool) - sizeof(TransactionId));
		old = MemoryContextSwitchTo(spool_cxt);
		sp->file = BufFileCreateTemp(true);
		MemoryContextSwitchTo(old);
		sp->lastsub = xid;
	}
	cur_xid = xid;
}

/* STREAM STOP: the block ends. */
void
streamfile_stop(void)
{
	cur_xid = InvalidTransactionId;
}

/* Inside a stream block? (A batch does not end there.) */
bool
streamfile_in_block(void)
{
	return TransactionIdIsValid(cur_xid);
}

/* How many streamed transactions wait for their end. */
int
streamfile_count(void)
{
	return spools ? (int) hash_get_num_entries(spools) : 0;
}

/*
 * One change of the open block, made by subtransaction subxid (the top
 * transaction's own xid for its own changes): the action byte, then body.
 */
void
streamfile_write(TransactionId subxid, char action, const char *body, int len)
{
	Spool	   *sp = streamfile_find(cur_xid);
	int32		total = len + 1;
	MemoryContext cxt;

	if (sp == NULL)
		protocol_error("a change outside any stream block", subxid);

	/* remember where a subtransaction's first change starts */
	if (subxid != sp->lastsub && subxid != sp->xid)
	{
		int			i;
		bool		known = false;

		for (i = sp->nsubs - 1; i >= 0; i--)
			if (sp->subs[i].xid == subxid)
			{
				known = true;
				break;
			}
		if (!known)
		{
			if (sp->nsubs == sp->maxsubs)
			{
				sp->maxsubs = Max(16, sp->maxsubs * 2);
				sp->subs = sp->subs == NULL ?
					MemoryContextAlloc(spool_cxt, sp->maxsubs * sizeof(SpoolSub)) :
					repalloc(sp->subs, sp->maxsubs * sizeof(SpoolSub));
			}
			sp->subs[sp->nsubs].xid = subxid;
			sp->subs[sp->nsubs].size = sp->size;
			sp->subs[sp->nsubs].fileno = sp->endfile;
			sp->subs[sp->nsubs].offset = sp->endoff;
			sp->nsubs++;
		}
	}
	sp->lastsub = subxid;

	cxt = CurrentMemoryContext;
	PG_TRY();
	{
		if (BufFileSeek(sp->file, sp->endfile, sp->endoff, SEEK_SET) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not seek in the spool file of streamed transaction %u", sp->xid)));
		BufFileWrite(sp->file, &total, sizeof(total));
		BufFileWrite(sp->file, &action, 1);
		BufFileWrite(sp->file, (void *) body, len);
	}
	PG_CATCH();
	{
		spool_limit_hint(cxt);
	}
	PG_END_TRY();
	BufFileTell(sp->file, &sp->endfile, &sp->endoff);
	sp->size += sizeof(total) + total;
	sp->messages++;
}

/*
 * STREAM ABORT: of the whole transaction (subxid == xid): its file goes;
 * of a subtransaction: what it and what followed it wrote goes.
 */
void
streamfile_abort(TransactionId xid, TransactionId subxid)
{
	Spool	   *sp = streamfile_find(xid);
	int			i;

	if (sp == NULL)
		return;					/* nothing of it was spooled */
	if (xid == subxid)
	{
		streamfile_drop(xid);
		return;
	}
	for (i = 0; i < sp->nsubs; i++)
	{
		if (sp->subs[i].xid == subxid)
		{
			sp->size = sp->subs[i].size;
			sp->endfile = sp->subs[i].fileno;
			sp->endoff = sp->subs[i].offset;
			sp->nsubs = i;
			sp->lastsub = InvalidTransactionId;
			return;
		}
	}
	/* the subtransaction changed nothing we were sent */
}

/* Read xid's changes from the start; returns how many there are. */
int64
streamfile_replay_begin(TransactionId xid)
{
	Spool	   *sp = streamfile_find(xid);
	MemoryContext cxt;

	if (sp == NULL)
		protocol_error("STREAM COMMIT of a transaction never streamed", xid);
	cxt = CurrentMemoryContext;
	PG_TRY();
	{
		/* (writes out the last buffer) */
		if (BufFileSeek(sp->file, 0, 0, SEEK_SET) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not seek in the spool file of streamed transaction %u", xid)));
	}
	PG_CATCH();
	{
		spool_limit_hint(cxt);
	}
	PG_END_TRY();
	sp->readpos = 0;
	return sp->messages;
}

/*
 * The next change of xid into buf (reset first), or false at the end.
 */
bool
streamfile_replay_next(TransactionId xid, StringInfo buf)
{
	Spool	   *sp = streamfile_find(xid);
	int32		total;

	Assert(sp != NULL);
	if (sp->readpos >= sp->size)
		return false;
	if (BufFileRead(sp->file, &total, sizeof(total)) != sizeof(total) ||
		total < 1 || sp->readpos + (int64) sizeof(total) + total > sp->size)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("spool file of streamed transaction %u is damaged", xid),
				 errhint("The worker reconnects and the source sends the transaction again.")));
	resetStringInfo(buf);
	enlargeStringInfo(buf, total);
	if (BufFileRead(sp->file, buf->data, total) != (size_t) total)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("spool file of streamed transaction %u is damaged", xid),
				 errhint("The worker reconnects and the source sends the transaction again.")));
	buf->len = total;
	buf->data[total] = '\0';
	buf->cursor = 0;
	sp->readpos += sizeof(total) + total;
	return true;
}

/* The transaction ended (committed and applied, or aborted). */
void
streamfile_drop(TransactionId xid)
{
	Spool	   *sp = streamfile_find(xid);
	BufFile    *file;

	if (sp == NULL)
		return;
	file = sp->file;
	if (sp->subs)
		pfree(sp->subs);
	hash_search(spools, &xid, HASH_REMOVE, NULL);
	if (cur_xid == xid)
		cur_xid = InvalidTransactionId;
	if (file)
		spool_close(file);
}
