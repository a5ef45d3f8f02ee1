/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  Read pgoutput messages from the source and apply them to the datamart.
 *
 * NOTES
 *	  Transport.  A refresh reads the slot through the SQL interface:
 *
 *		COPY (SELECT data
 *				FROM pg_logical_slot_peek_binary_changes(slot, upto, NULL,
 *					 'proto_version', '1', 'publication_names', pub))
 *		  TO STDOUT (FORMAT binary)
 *
 *	  over a normal libpq connection.  It yields exactly the messages the
 *	  walsender would send (the pgoutput plugin runs either way), without the
 *	  walsender's per-message socket flushes, and "peek" consumes nothing: the
 *	  slot only moves when a later refresh tells it the position the datamart
 *	  has durably committed (see origin.c).  upto is a position captured
 *	  when the refresh starts (see refresh.c), so a refresh always ends, even
 *	  while the source keeps writing.  A big backlog comes in two parts, the
 *	  second decoded on a second connection while the first is applied (see
 *	  refresh_inner).
 *
 *	  Decoding.  Each row is one pgoutput message; it is parsed with the
 *	  server's own logicalrep_read_* functions (replication/logicalproto.h),
 *	  never by a home-made parser.
 *
 *	  Exactly once.  Source transactions whose commit record starts before
 *	  the origin's position were applied by an earlier refresh whose slot
 *	  advance did not happen yet (a crash between the two): they are skipped.
 *
 *	  Apply.  Relations are opened once per refresh, with their indexes and
 *	  input functions; rows go through the executor's replication helpers
 *	  (ExecSimpleRelationInsert/Update/Delete), so constraints, indexes and
 *	  user triggers behave as for any write.  Updates and deletes find the
 *	  row by the datamart table's primary key (the source's primary key or
 *	  replica identity index) through one index scan kept open for the
 *	  refresh (find_row_by_key), or by all columns for REPLICA IDENTITY FULL
 *	  tables without one (RelationFindReplTupleSeq).  Unchanged TOASTed
 *	  values ('u' columns) keep the datamart's current value.
 *
 *	  Quarantine ledger.  A row a quarantine expectation holds back is an
 *	  entry of sluice._quarantine with its key (row_key); the entries of a
 *	  table that are still the latest state of their key (held, or
 *	  discarded on purpose) are kept in a hash per relation for the refresh.
 *	  Any later change of such a key on the source supersedes the entry:
 *	  written to the datamart ('applied'), held again ('quarantined', the new
 *	  entry named), deleted or truncated; a superseded entry is never
 *	  released by mistake (release_quarantined refuses it without force).
 *	  An update of a key the datamart lacks because it is held is the one
 *	  case where an update becomes an insert (checked again; columns the
 *	  source did not send come from the held row).
 *
 *	  Divergence.  Any other update or delete that finds no row means the
 *	  datamart lost a row the source has.  It is never turned into an
 *	  insert: it is skipped and counted per run and table (refresh.c records
 *	  it, with a divergence event), or, for a strict pipeline, pauses it.
 *
 *	  Memory.  Every message is parsed in a context reset after it, and its
 *	  datums live in the executor's per-tuple context, also reset per
 *	  message: the backend's memory does not grow with the size of a source
 *	  transaction (a 1,000,000-row transaction streams through row by row).
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_attrdef.h"
#include "common/hashfn.h"
#include "commands/tablecmds.h"
#include "commands/trigger.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "replication/logicalproto.h"
#include "utils/array.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "pg_sluice.h"

/* A source relation as announced by a RELATION message, and its target. */
typedef struct ApplyRel
{
	LogicalRepRelId remoteid;	/* hash key: the source's relation OID */
	bool		mapped;			/* one of the pipeline's tables? */
	char	   *nspname;		/* source schema */
	char	   *relname;		/* source table */
	int			remote_natts;
	int		   *attmap;			/* source column i -> target attno - 1 */
	char	  **remote_attnames;
	Relation	rel;			/* target table, open for the whole refresh */
	ResultRelInfo *rri;
	Oid			keyidx;			/* primary key index of the target, or 0 */
	/* lookups by keyidx (see find_row): set up once per relation */
	Relation	keyrel;			/* keyidx, as opened in rri */
	int			nscankeys;
	ScanKeyData *scankeys;		/* equality on each key column; arguments
								 * set per lookup */
	AttrNumber *scanatts;		/* target attno of each key column */
	bool	   *iskey;			/* per target attribute: a key column? */
	IndexScanDesc keyscan;		/* opened at the first lookup */
	SnapshotData dirty;			/* its snapshot: sees in-progress writes */
	bool		matchall;		/* the key is deferred and the source sends
								 * whole old rows: match every column too */
	FmgrInfo   *eqfuncs;		/* matchall: per target attribute, equality
								 * (fn_oid 0: compare the bytes) */
	bool	   *fed;			/* matchall: per target attribute, fed by a
								 * source column */
	TupleTableSlot *newslot;	/* virtual: the tuple to write */
	TupleTableSlot *searchslot; /* virtual: the key to look for */
	TupleTableSlot *localslot;	/* the target's current row */
	FmgrInfo   *infuncs;		/* per target attribute: text input */
	FmgrInfo   *recvfuncs;		/* per target attribute: binary input */
	bool	   *rawts;			/* per target attribute: a timestamp(tz)
								 * without typmod (see fill_slot) */
	Oid		   *ioparams;
	/* source columns whose type differs from their datamart column's */
	bool	   *convert;		/* per source column: parse as the sent type */
	FmgrInfo   *conv_in;		/* per source column: the sent type's input */
	FmgrInfo   *conv_recv;		/* ... and binary input */
	Oid		   *conv_ioparam;
	int32	   *conv_typmod;
	FmgrInfo   *conv_out;		/* ... and output (then the target's input) */
	bool	   *conv_same;		/* the datum needs no conversion (timestamp
								 * read as timestamptz in UTC) */
	/* datamart columns fed by no source column get their default on insert */
	int			ndefaults;
	AttrNumber *defatts;
	ExprState **defexprs;
	EPQState	epqstate;
	SluiceTable *table;			/* its contract and expectations */
	List	   *rowchecks;		/* RowCheck *: compiled row expectations */
	ExprState  *allchecks;		/* all of them ANDed, when more than one */
	bool		has_quarantine; /* some row expectation quarantines */
	int			nkeys;			/* key columns, for failure samples */
	AttrNumber *keyatts;
	/* versions (sluice.keep_history) */
	TableCount *counts;			/* rows written to it in this run */
	AttrNumber	verattno;		/* _sluice_version in the target, or 0 */
	Relation	histrel;		/* <target_schema>_history.<table> */
	ResultRelInfo *histrri;
	TupleTableSlot *histslot;
	int		   *histmap;		/* history attno - 1 -> target attno - 1, -1:
								 * _sluice_superseded */
	/* quarantine ledger (see ledger_init) */
	HTAB	   *held;			/* key text -> HeldEntry: open entries, or
								 * NULL when the table has none and no
								 * quarantine expectation */
	int			nledgerkeys;
	AttrNumber *ledgerkeys;		/* attributes of the ledger key, in jsonb
								 * key order */
	FmgrInfo   *ledgerout;		/* their output functions */
	/* insert runs (see flush_inserts) */
	bool		multi_ok;		/* no triggers or generated columns */
	TupleTableSlot **bufslots;	/* rows waiting for table_multi_insert */
	int			nbuffered;
	Size		bufbytes;
} ApplyRel;

/* An open quarantine entry: the latest state of a key the datamart lacks. */
typedef struct HeldEntry
{
	char	   *key;			/* hash key: the key as jsonb text */
	int64		quarantine_id;
} HeldEntry;

/* A row expectation compiled for one relation and batch. */
typedef struct RowCheck
{
	SluiceExpectation *e;
	ExprState  *state;
	ExpectResult *result;		/* where this run's counts go */
} RowCheck;

typedef struct ApplyState
{
	SluicePipeline *pipe;
	EState	   *estate;
	HTAB	   *rels;			/* LogicalRepRelId -> ApplyRel */
	MemoryContext cxt;			/* lives for the refresh */
	MemoryContext msgcxt;		/* reset after every message */
	XLogRecPtr	start_lsn;		/* origin position: skip what is before */
	bool		in_xact;
	bool		skipping;
	LogicalRepBeginData begin;
	ApplyStats *stats;
	bool		binary;			/* pgoutput sends binary values */
	ApplyRel   *pending;		/* relation with buffered inserts, or NULL */
	List	   *deferred_keys;	/* RangeVar *: deferred keys written to, checked
								 * before the batch ends (see apply_stream) */
	List	   *remote_types;	/* RemoteType *: TYPE messages, for names */
	int32	   *typmods;		/* typmods of the RELATION being handled */
	/* error context */
	char		action;
	ApplyRel   *cur_rel;
	int			cur_att;		/* source column being converted, or -1 */
} ApplyState;

/* A source type announced by a TYPE message (types not built in). */
typedef struct RemoteType
{
	Oid			remoteid;
	char	   *name;			/* schema-qualified, quoted */
} RemoteType;

/* insert runs: at most this many rows, or bytes, wait for one multi-insert */
#define APPLY_MAX_BUFFERED			1000
#define APPLY_MAX_BUFFERED_BYTES	(64 * 1024)

static void apply_dispatch(ApplyState *st, StringInfo s);
static void apply_error_callback(void *arg);
static void init_key_lookups(ApplyState *st, ApplyRel *ar);
static void end_key_lookups(ApplyRel *ar);

/* quarantine ledger and divergence */
static void ledger_init(ApplyState *st, ApplyRel *ar);
static char *ledger_key(ApplyRel *ar, TupleTableSlot *slot);
static int64 ledger_find(ApplyRel *ar, const char *key);
static void ledger_hold(ApplyState *st, ApplyRel *ar, const char *key, int64 quarantine_id);
static void ledger_supersede(ApplyState *st, ApplyRel *ar, const char *key,
							 const char *how, int64 by);
static void ledger_truncated(ApplyState *st, ApplyRel *ar);
static TupleTableSlot *ledger_held_row(ApplyState *st, ApplyRel *ar, int64 quarantine_id);
static void apply_missing_row(ApplyState *st, ApplyRel *ar, const char *change);

/*
 * Error context: say where we were, so any error (a type input function's
 * included) tells the user which table, column and source transaction.
 */
static void
apply_error_callback(void *arg)
{
	ApplyState *st = (ApplyState *) arg;

	/*
	 * Between two messages (st->action is 0) we are waiting for the source:
	 * no message type to name (logicalrep_message_type would say "???").
	 */
	if (st->cur_rel && st->action != 0 && st->cur_att >= 0 && st->cur_att < st->cur_rel->remote_natts)
		errcontext("pipeline \"%s\" applying %s for \"%s.%s\" column \"%s\" in source transaction %u committed at %X/%X",
				   st->pipe->name, logicalrep_message_type(st->action),
				   st->cur_rel->nspname, st->cur_rel->relname,
				   st->cur_rel->remote_attnames[st->cur_att],
				   st->begin.xid, LSN_FORMAT_ARGS(st->begin.final_lsn));
	else if (st->cur_rel && st->action != 0)
		errcontext("pipeline \"%s\" applying %s for \"%s.%s\" in source transaction %u committed at %X/%X",
				   st->pipe->name, logicalrep_message_type(st->action),
				   st->cur_rel->nspname, st->cur_rel->relname,
				   st->begin.xid, LSN_FORMAT_ARGS(st->begin.final_lsn));
	else if (st->in_xact && st->action == 0)
		errcontext("pipeline \"%s\" reading the next change of source transaction %u committed at %X/%X",
				   st->pipe->name, st->begin.xid, LSN_FORMAT_ARGS(st->begin.final_lsn));
	else if (st->in_xact)
		errcontext("pipeline \"%s\" applying %s in source transaction %u committed at %X/%X",
				   st->pipe->name, logicalrep_message_type(st->action),
				   st->begin.xid, LSN_FORMAT_ARGS(st->begin.final_lsn));
	else if (st->action)
		errcontext("pipeline \"%s\" applying %s",
				   st->pipe->name, logicalrep_message_type(st->action));
	else if (st->deferred_keys != NIL)
		errcontext("pipeline \"%s\" checking the deferred keys of the tables it wrote",
				   st->pipe->name);
}

static SluiceTable *
find_pipeline_table(SluicePipeline *pipe, const char *nsp, const char *rel)
{
	ListCell   *lc;

	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);

		if (strcmp(t->source_schema, nsp) == 0 && strcmp(t->source_table, rel) == 0)
			return t;
	}
	return NULL;
}

static void
close_rel(ApplyRel *ar)
{
	if (ar->histrel != NULL)
	{
		ExecCloseIndices(ar->histrri);
		ExecDropSingleTupleTableSlot(ar->histslot);
		table_close(ar->histrel, NoLock);
		ar->histrel = NULL;
	}
	if (ar->rel == NULL)
		return;
	Assert(ar->nbuffered == 0);
	if (ar->bufslots != NULL)
	{
		int			i;

		for (i = 0; i < APPLY_MAX_BUFFERED; i++)
			ExecDropSingleTupleTableSlot(ar->bufslots[i]);
		pfree(ar->bufslots);
		ar->bufslots = NULL;
	}
	end_key_lookups(ar);
	EvalPlanQualEnd(&ar->epqstate);
	ExecCloseIndices(ar->rri);
	ExecDropSingleTupleTableSlot(ar->newslot);
	ExecDropSingleTupleTableSlot(ar->searchslot);
	ExecDropSingleTupleTableSlot(ar->localslot);
	table_close(ar->rel, NoLock);
	ar->rel = NULL;
}

SluiceDrift *sluice_pending_drift = NULL;

/*
 * The typmods of a RELATION message's columns.  logicalrep_read_rel reads
 * and drops them, so they are read here from a copy of the message
 * (proto.c's logicalrep_write_rel/_attrs format).
 */
static int32 *
read_rel_typmods(StringInfo s)
{
	StringInfoData c = *s;		/* a copy: s keeps its cursor */
	int			natts;
	int			i;
	int32	   *mods;

	(void) pq_getmsgint(&c, 4); /* relation id */
	(void) pq_getmsgstring(&c); /* schema */
	(void) pq_getmsgstring(&c); /* name */
	(void) pq_getmsgbyte(&c);	/* replica identity */
	natts = pq_getmsgint(&c, 2);
	mods = palloc(sizeof(int32) * Max(natts, 1));
	for (i = 0; i < natts; i++)
	{
		(void) pq_getmsgbyte(&c);	/* flags */
		(void) pq_getmsgstring(&c); /* name */
		(void) pq_getmsgint(&c, 4); /* type */
		mods[i] = (int32) pq_getmsgint(&c, 4);
	}
	return mods;
}

/*
 * A source type's name: built-in types have the same OID on both servers;
 * others are named by the TYPE message pgoutput sent before the RELATION.
 */
static char *
source_type_name(ApplyState *st, Oid typid, int32 typmod)
{
	ListCell   *lc;

	if (typid < FirstNormalObjectId)
		return format_type_with_typemod(typid, typmod);
	foreach(lc, st->remote_types)
	{
		RemoteType *rt = lfirst(lc);

		if (rt->remoteid == typid)
			return rt->name;
	}
	return psprintf("type %u of the source", typid);
}

/* The source's columns as jsonb text: [{"name": .., "type": oid, "type_name": ..}, ..] */
static char *
columns_json(ApplyState *st, LogicalRepRelation *lr)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < lr->natts; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, "{\"name\": ");
		escape_json(&buf, lr->attnames[i]);
		appendStringInfo(&buf, ", \"type\": %u, \"type_name\": ", lr->atttyps[i]);
		escape_json(&buf, source_type_name(st, lr->atttyps[i], st->typmods ? st->typmods[i] : -1));
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/*
 * The name of the source type a contract column expects: the datamart
 * column's own type when they are the same type (it carries the typmod).
 */
static char *
contract_type_name(ApplyState *st, SluiceColumn *c)
{
	if (c->source_type < FirstNormalObjectId)
	{
		char	   *base = format_type_be(c->source_type);

		return strncmp(c->data_type, base, strlen(base)) == 0 ? c->data_type : base;
	}
	return source_type_name(st, c->source_type, -1);
}

/*
 * The contract's source columns as jsonb text:
 * [{"name": .., "column": .., "type": oid, "type_name": .., "data_type": ..}, ..]
 */
static char *
contract_json(ApplyState *st, SluiceTable *t)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);

		if (c->source_column == NULL)
			continue;
		if (buf.len > 1)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, "{\"name\": ");
		escape_json(&buf, c->source_column);
		appendStringInfoString(&buf, ", \"column\": ");
		escape_json(&buf, c->name);
		appendStringInfo(&buf, ", \"type\": %u, \"type_name\": ", c->source_type);
		escape_json(&buf, contract_type_name(st, c));
		appendStringInfoString(&buf, ", \"data_type\": ");
		escape_json(&buf, c->data_type);
		if (c->source_dropped)
			appendStringInfoString(&buf, ", \"source_dropped\": true");
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/*
 * Schema drift the policy cannot absorb: remember it for refresh.c, which
 * rolls the batch back and pauses the pipeline, then raise.  hint says
 * which function accepts the change.
 */
static void
drift_pause(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr, const char *detail,
			const char *hint)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	SluiceDrift *d = palloc0(sizeof(SluiceDrift));

	d->source_schema = pstrdup(t->source_schema);
	d->source_table = pstrdup(t->source_table);
	d->policy = pstrdup(t->drift_policy);
	d->detail = pstrdup(detail);
	d->source_columns = columns_json(st, lr);
	d->contract_columns = contract_json(st, t);
	d->contract_version = t->contract_version;
	d->xid = st->begin.xid;
	d->lsn = st->begin.final_lsn;
	MemoryContextSwitchTo(old);
	sluice_pending_drift = d;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("source table \"%s.%s\" drifted from its contract", t->source_schema, t->source_table),
			 errdetail("%s", detail),
			 errhint("Nothing was applied and pipeline \"%s\" is paused. %s Then call sluice.resume('%s').",
					 st->pipe->name,
					 hint ? hint : "Fix the contract (sluice.map_column, sluice.set_drift_policy) or the datamart table.",
					 st->pipe->name)));
}

/* Record an absorbed drift event in the batch's transaction. */
static void
record_drift(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr,
			 const char *action, const char *detail)
{
	Oid			types[11] = {INT4OID, TEXTOID, TEXTOID, XIDOID, LSNOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, TEXTOID};
	Datum		args[11];
	int			rc;

	args[10] = CStringGetTextDatum(contract_json(st, t));
	args[0] = Int32GetDatum(st->pipe->pipeline_id);
	args[1] = CStringGetTextDatum(t->source_schema);
	args[2] = CStringGetTextDatum(t->source_table);
	args[3] = TransactionIdGetDatum(st->begin.xid);
	args[4] = LSNGetDatum(st->begin.final_lsn);
	args[5] = CStringGetTextDatum(t->drift_policy);
	args[6] = CStringGetTextDatum(action);
	args[7] = CStringGetTextDatum(detail);
	args[8] = Int32GetDatum(t->contract_version);
	args[9] = CStringGetTextDatum(columns_json(st, lr));
	/* an ignored column is recorded once, not at every refresh */
	rc = sluice_catalog_exec("INSERT INTO sluice._drift_event (pipeline_id, source_schema, source_table, "
							   "  source_xid, source_lsn, policy, action, detail, contract_version, source_columns, "
							   "  contract_columns) "
							   "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb "
							   " WHERE $7 <> 'ignored' OR NOT EXISTS (SELECT 1 FROM sluice._drift_event d "
							   "   WHERE (d.pipeline_id, d.source_schema, d.source_table) = ($1, $2, $3) "
							   "     AND d.source_columns = $10::jsonb)",
							   11, types, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not record drift event: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		StringInfoData j;

		initStringInfo(&j);
		appendStringInfoString(&j, "{\"table\": ");
		escape_json(&j, psprintf("%s.%s", t->target_schema, t->target_table));
		appendStringInfoString(&j, ", \"action\": ");
		escape_json(&j, action);
		appendStringInfoString(&j, ", \"summary\": ");
		escape_json(&j, detail);
		appendStringInfoChar(&j, '}');
		outbox_emit(st->pipe->name, "contract_drift", j.data);
	}
}

/* The datamart table of t, and its history table (InvalidOid: none). */
static Oid
target_relid(SluiceTable *t)
{
	return get_relname_relid(t->target_table, get_namespace_oid(t->target_schema, false));
}

static Oid
history_relid(ApplyState *st, SluiceTable *t)
{
	Oid			nsp;

	if (!st->pipe->keep_history)
		return InvalidOid;
	nsp = get_namespace_oid(psprintf("%s_history", t->target_schema), true);
	return OidIsValid(nsp) ? get_relname_relid(t->target_table, nsp) : InvalidOid;
}

/*
 * Run "ALTER TABLE <target> <clause>" on the datamart table and, when it
 * keeps history, on its history table (clause names only columns both
 * have), then rebuild the time-travel functions, which list the columns.
 */
static void
alter_target(ApplyState *st, SluiceTable *t, const char *clause)
{
	int			rc;

	/* views publishing its contract versions pin its columns (interface.c) */
	interface_before_alter(t);
	rc = SPI_execute(psprintf("ALTER TABLE %s.%s %s", quote_identifier(t->target_schema),
							  quote_identifier(t->target_table), clause), false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "could not alter the datamart table: %s", SPI_result_code_string(rc));
	if (OidIsValid(history_relid(st, t)))
	{
		Oid			rtypes[1] = {REGCLASSOID};
		Datum		rargs[1];

		rc = SPI_execute(psprintf("ALTER TABLE %s.%s %s",
								  quote_identifier(psprintf("%s_history", t->target_schema)),
								  quote_identifier(t->target_table), clause), false, 0);
		if (rc != SPI_OK_UTILITY)
			elog(ERROR, "could not alter the history table: %s", SPI_result_code_string(rc));
		rargs[0] = ObjectIdGetDatum(target_relid(t));
		rc = SPI_execute_with_args("SELECT sluice._make_at_functions($1)", 1, rtypes, rargs,
								   NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not rebuild the time-travel functions: %s", SPI_result_code_string(rc));
	}
}

/*
 * Record a new contract version: the datamart table's columns as they are
 * now, each with what t->columns says of it (source column, key, source
 * type, dropped on the source).  Columns of the table t->columns lacks are
 * fed by the source column of the same name (evolve_contract added them).
 */
static void
contract_new_version(ApplyState *st, SluiceTable *t)
{
	int			n = list_length(t->columns);
	Datum	   *names = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *srcs = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *srcnulls = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *keys = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *typs = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *drops = palloc(sizeof(Datum) * Max(n, 1));
	Oid			types[9] = {INT4OID, TEXTOID, TEXTOID, INT4OID, TEXTARRAYOID, TEXTARRAYOID,
	BOOLARRAYOID, OIDARRAYOID, BOOLARRAYOID};
	Datum		args[9];
	int			dims[1];
	int			lbs[1] = {1};
	int			i = 0;
	int			rc;
	ListCell   *lc;

	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);

		names[i] = CStringGetTextDatum(c->name);
		srcnulls[i] = c->source_column == NULL;
		srcs[i] = c->source_column ? CStringGetTextDatum(c->source_column) : (Datum) 0;
		keys[i] = BoolGetDatum(c->is_key);
		typs[i] = ObjectIdGetDatum(c->source_type);
		drops[i] = BoolGetDatum(c->source_dropped);
		i++;
	}
	dims[0] = n;
	args[0] = Int32GetDatum(st->pipe->pipeline_id);
	args[1] = CStringGetTextDatum(t->source_schema);
	args[2] = CStringGetTextDatum(t->source_table);
	args[3] = Int32GetDatum(t->contract_version);
	args[4] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[5] = PointerGetDatum(construct_md_array(srcs, srcnulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
	args[6] = PointerGetDatum(construct_array(keys, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	args[7] = PointerGetDatum(construct_array(typs, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	args[8] = PointerGetDatum(construct_array(drops, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	rc = sluice_catalog_exec("WITH pt AS (UPDATE sluice._pipeline_table SET contract_version = $4 + 1 "
							   "             WHERE (pipeline_id, source_schema, source_table) = ($1, $2, $3) "
							   "             RETURNING target_schema, target_table) "
							   "INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, "
							   "       contract_version, position, column_name, source_column, data_type, not_null, "
							   "       is_key, source_type, source_dropped, prior_types, prior_sources) "
							   "SELECT $1, $2, $3, $4 + 1, a.attnum, a.attname, "
							   "       CASE WHEN c.name IS NULL THEN a.attname::text ELSE c.src END, "
							   "       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
							   "       coalesce(c.key, false), coalesce(c.typ, a.atttypid), coalesce(c.dropped, false), "
							   "       coalesce(cc.prior_types, '{}'), coalesce(cc.prior_sources, '{}') "
							   "  FROM pt JOIN pg_catalog.pg_namespace n ON n.nspname = pt.target_schema "
							   "  JOIN pg_catalog.pg_class r ON r.relnamespace = n.oid AND r.relname = pt.target_table "
							   "  JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped "
							   "   AND a.attname <> '_sluice_version' "
							   "  LEFT JOIN ROWS FROM (pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
							   "       pg_catalog.unnest($8), pg_catalog.unnest($9)) AS c(name, src, key, typ, dropped) "
							   "    ON c.name = a.attname::text "
							   "  LEFT JOIN sluice._contract_column cc ON (cc.pipeline_id, cc.source_schema, cc.source_table, "
							   "       cc.contract_version, cc.column_name) = ($1, $2, $3, $4, a.attname) ",
							   9, types, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not record the new contract version: %s", SPI_result_code_string(rc));
	t->contract_version++;
	/* the datamart types as recorded */
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		AttrNumber	att = get_attnum(target_relid(t), c->name);
		Oid			typid;
		int32		typmod;
		Oid			coll;

		if (att == InvalidAttrNumber)
			continue;
		get_atttypetypmodcoll(target_relid(t), att, &typid, &typmod, &coll);
		c->data_type = format_type_with_typemod(typid, typmod);
	}
	/* published interfaces and bound expectations follow (interface.c) */
	interface_contract_settled(st->pipe, t);
}

/*
 * Evolve policy: add new source columns of built-in types to the datamart
 * table (nullable) and record a new contract version.
 */
static void
evolve_contract(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr, List *newcols)
{
	StringInfoData ddl;
	StringInfoData what;
	ListCell   *lc;

	initStringInfo(&ddl);
	initStringInfo(&what);
	foreach(lc, newcols)
	{
		int			i = lfirst_int(lc);
		SluiceColumn *c = palloc0(sizeof(SluiceColumn));

		c->name = pstrdup(lr->attnames[i]);
		c->source_column = c->name;
		c->data_type = format_type_with_typemod(lr->atttyps[i], st->typmods[i]);
		c->source_type = lr->atttyps[i];
		appendStringInfo(&ddl, "%sADD COLUMN %s %s", lc == list_head(newcols) ? "" : ", ",
						 quote_identifier(c->name), c->data_type);
		appendStringInfo(&what, "%s%s %s", lc == list_head(newcols) ? "" : ", ",
						 c->name, c->data_type);
		t->columns = lappend(t->columns, c);
	}
	/* the table of superseded rows follows */
	alter_target(st, t, ddl.data);
	contract_new_version(st, t);
	record_drift(st, t, lr, "evolved", psprintf("new source column%s added to the datamart table: %s",
												list_length(newcols) > 1 ? "s" : "", what.data));
}

/* Is the column NOT NULL? */
static bool
attr_not_null(Oid relid, AttrNumber att)
{
	HeapTuple	tp = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(att));
	bool		result = false;

	if (HeapTupleIsValid(tp))
	{
		result = ((Form_pg_attribute) GETSTRUCT(tp))->attnotnull;
		ReleaseSysCache(tp);
	}
	return result;
}

/* numeric typmod parts, as numeric.c decodes them */
#define SLUICE_NUMERIC_PRECISION(m)	((((m) - VARHDRSZ) >> 16) & 0xffff)
#define SLUICE_NUMERIC_SCALE(m)		(((((m) - VARHDRSZ) & 0x7ff) ^ 1024) - 1024)

/*
 * Does every value of type (from, fmod) fit type (to, tmod) unchanged, so
 * that a column of the second type can take the first's values (and its
 * values' text form reads the same)?  These are the safe widenings evolve
 * applies by itself: int2 -> int4 -> int8, varchar(n) -> varchar(m >= n)
 * or text, numeric(p, s) -> numeric with as many digits before and after
 * the point, a time or timestamp precision up, timestamp -> timestamptz
 * (read in UTC, see fill_slot).
 */
static bool
type_fits(Oid from, int32 fmod, Oid to, int32 tmod)
{
	if (from == to)
	{
		if (tmod < 0 || fmod == tmod)
			return true;
		if (fmod < 0)
			return false;
		switch (from)
		{
			case VARCHAROID:
			case TIMESTAMPOID:
			case TIMESTAMPTZOID:
			case TIMEOID:
				return fmod <= tmod;
			case NUMERICOID:
				return SLUICE_NUMERIC_SCALE(fmod) <= SLUICE_NUMERIC_SCALE(tmod) &&
					SLUICE_NUMERIC_PRECISION(fmod) - SLUICE_NUMERIC_SCALE(fmod) <=
					SLUICE_NUMERIC_PRECISION(tmod) - SLUICE_NUMERIC_SCALE(tmod);
			default:
				return false;
		}
	}
	switch (to)
	{
		case INT4OID:
			return from == INT2OID;
		case INT8OID:
			return from == INT2OID || from == INT4OID;
		case NUMERICOID:
			return tmod < 0 && (from == INT2OID || from == INT4OID || from == INT8OID);
		case TEXTOID:
			return from == VARCHAROID;
		case VARCHAROID:
			return tmod < 0 && from == TEXTOID;
		case TIMESTAMPTZOID:
			return from == TIMESTAMPOID && (tmod < 0 || (fmod >= 0 && fmod <= tmod));
		default:
			return false;
	}
}

/*
 * Compare a RELATION message with the table's contract, act by the drift
 * policy, and return for each source column the datamart column it feeds
 * (NULL: left out).  Runs before any row of the relation is applied.
 *
 * A source column whose type changed is fine when its values fit the
 * datamart column (the DBA altered it, sluice.accept_type_change did, or
 * the source narrowed); under evolve a safe widening (type_fits) alters
 * the datamart column; anything else pauses.  A contract column the
 * source no longer sends is fine once dropped (sluice.drop_column); evolve
 * and ignore keep it, fed nothing from then on; freeze pauses.
 */
static char **
check_contract(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr)
{
	char	  **feeds = palloc0(sizeof(char *) * Max(lr->natts, 1));
	List	   *unknown = NIL;
	List	   *by_prior = NIL;	/* columns fed by a name before a rename */
	StringInfoData problems;
	StringInfoData hints;
	StringInfoData names;
	StringInfoData widened;
	StringInfoData accepted;
	StringInfoData kept;
	char	   *qtarget = psprintf("%s.%s", quote_identifier(t->target_schema),
								   quote_identifier(t->target_table));
	Oid			relid = target_relid(t);
	bool		evolve = strcmp(t->drift_policy, "evolve") == 0;
	bool		newversion = false;
	ListCell   *lc;
	int			i;

	initStringInfo(&problems);
	initStringInfo(&hints);
	initStringInfo(&names);
	initStringInfo(&widened);
	initStringInfo(&accepted);
	initStringInfo(&kept);
	for (i = 0; i < lr->natts; i++)
	{
		SluiceColumn *found = NULL;

		foreach(lc, t->columns)
		{
			SluiceColumn *c = lfirst(lc);

			if (c->source_column && strcmp(c->source_column, lr->attnames[i]) == 0)
				found = c;
		}
		if (found == NULL)
		{
			/*
			 * A name the column's source had before a rename (map_column):
			 * rows of the backlog sent before the rename, as long as the
			 * current name is not sent too.
			 */
			foreach(lc, t->columns)
			{
				SluiceColumn *c = lfirst(lc);
				int			k;
				bool		current_sent = false;

				if (c->source_column == NULL ||
					!list_member(c->prior_sources, makeString(lr->attnames[i])))
					continue;
				for (k = 0; k < lr->natts; k++)
					if (strcmp(c->source_column, lr->attnames[k]) == 0)
						current_sent = true;
				if (!current_sent && !list_member_ptr(by_prior, c))
				{
					found = c;
					by_prior = lappend(by_prior, c);
					break;
				}
			}
		}
		if (found == NULL)
		{
			ListCell   *ic;
			bool		ignored = false;

			foreach(ic, t->ignored)
				if (strcmp(strVal(lfirst(ic)), lr->attnames[i]) == 0)
					ignored = true;
			if (ignored)
				continue;		/* left out earlier under the ignore policy */
			unknown = lappend_int(unknown, i);
			appendStringInfo(&names, "%s\"%s\"", names.len ? ", " : "", lr->attnames[i]);
		}
		else
		{
			Oid			soid = lr->atttyps[i];
			int32		smod = st->typmods[i];
			AttrNumber	att = get_attnum(relid, found->name);
			Oid			moid = InvalidOid;
			int32		mmod = -1;
			Oid			coll;

			if (att != InvalidAttrNumber)
				get_atttypetypmodcoll(relid, att, &moid, &mmod, &coll);
			if (att == InvalidAttrNumber)
				feeds[i] = found->name; /* handle_relation says it is missing */
			else if (soid == found->source_type || list_member_oid(found->prior_types, soid))
			{
				/*
				 * The type the contract knows: a different datamart type is
				 * a cast by design (adopted tables, domains, enums); the
				 * same type must still hold the values (a typmod raised).
				 */
				if (soid != moid || type_fits(soid, smod, moid, mmod))
					feeds[i] = found->name;
			}
			else if (soid < FirstNormalObjectId && type_fits(soid, smod, moid, mmod))
			{
				/* the datamart column already holds the new type's values */
				found->source_type = soid;
				newversion = true;
				appendStringInfo(&accepted, "%s%s (now %s, the datamart column is %s)",
								 accepted.len ? ", " : "", found->name,
								 format_type_with_typemod(soid, smod), format_type_with_typemod(moid, mmod));
				feeds[i] = found->name;
			}

			if (feeds[i] == NULL && att != InvalidAttrNumber)
			{
				char	   *now = source_type_name(st, soid, smod);
				char	   *mart = format_type_with_typemod(moid, mmod);
				bool		safe = soid < FirstNormalObjectId && type_fits(moid, mmod, soid, smod);

				if (evolve && safe)
				{
					alter_target(st, t, psprintf("ALTER COLUMN %s TYPE %s%s", quote_identifier(found->name),
												 format_type_with_typemod(soid, smod),
												 moid == TIMESTAMPOID && soid == TIMESTAMPTZOID ?
												 psprintf(" USING %s AT TIME ZONE 'UTC'", quote_identifier(found->name)) : ""));
					found->source_type = soid;
					newversion = true;
					appendStringInfo(&widened, "%s%s %s -> %s", widened.len ? ", " : "",
									 found->name, mart, format_type_with_typemod(soid, smod));
					feeds[i] = found->name;
				}
				else
				{
					appendStringInfo(&problems, "%sColumn \"%s\" changed type on the source (now %s, the contract expects %s).",
									 problems.len ? " " : "", lr->attnames[i], now, mart);
					if (safe)
						appendStringInfo(&hints, "%sA safe widening: call sluice.set_drift_policy('%s', 'evolve'), or sluice.accept_type_change('%s', '%s', '%s').",
										 hints.len ? " " : "", qtarget, qtarget, found->name, now);
					else
						appendStringInfo(&hints, "%sCall sluice.accept_type_change('%s', '%s', '%s', using_expression => <a cast of \"%s\">) to alter the datamart column.",
										 hints.len ? " " : "", qtarget, found->name, now, found->name);
				}
			}
		}
	}
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		bool		sent = false;

		if (c->source_column == NULL || c->source_dropped || list_member_ptr(by_prior, c))
			continue;
		for (i = 0; i < lr->natts; i++)
			if (strcmp(c->source_column, lr->attnames[i]) == 0)
				sent = true;
		if (sent)
			continue;
		if (unknown == NIL && !c->is_key && strcmp(t->drift_policy, "freeze") != 0)
		{
			/* evolve, ignore: the datamart column stays, fed nothing */
			c->source_dropped = true;
			newversion = true;
			appendStringInfo(&kept, "%s%s", kept.len ? ", " : "", c->name);
			continue;
		}
		appendStringInfo(&problems, "%sSource column \"%s\" (feeding \"%s\") is no longer sent%s.",
						 problems.len ? " " : "", c->source_column, c->name,
						 unknown != NIL ? psprintf("; if it was renamed to one of %s, call sluice.map_column('%s', '%s', <new name>)",
												   names.data, qtarget, c->name) : "");
		if (c->is_key)
			appendStringInfo(&hints, "%s\"%s\" is part of the key: restore it on the source, or drop and re-create the pipeline.",
							 hints.len ? " " : "", c->name);
		else
			appendStringInfo(&hints, "%sTo keep \"%s\" (reading NULL or its default from now on) call sluice.drop_column('%s', '%s'); to drop it, sluice.drop_column('%s', '%s', keep => false).",
							 hints.len ? " " : "", c->name, qtarget, c->name, qtarget, c->name);
	}
	if (problems.len > 0)
		drift_pause(st, t, lr, problems.data, hints.data);

	if (kept.len > 0)
	{
		/* fed nothing from now on: a NOT NULL without a default must go */
		foreach(lc, t->columns)
		{
			SluiceColumn *c = lfirst(lc);
			AttrNumber	att;

			if (!c->source_dropped || (att = get_attnum(relid, c->name)) == InvalidAttrNumber)
				continue;
			if (attr_not_null(relid, att) && !OidIsValid(GetAttrDefaultOid(relid, att)))
				alter_target(st, t, psprintf("ALTER COLUMN %s DROP NOT NULL", quote_identifier(c->name)));
		}
	}
	if (newversion)
	{
		contract_new_version(st, t);
		if (widened.len > 0)
			record_drift(st, t, lr, "widened", psprintf("datamart column type widened as on the source: %s", widened.data));
		if (accepted.len > 0)
			record_drift(st, t, lr, "accepted", psprintf("source type changed and the datamart column holds it: %s", accepted.data));
		if (kept.len > 0)
			record_drift(st, t, lr, "kept", psprintf("source column dropped; the datamart column stays and is fed nothing from now on: %s", kept.data));
	}

	if (unknown != NIL)
	{
		if (strcmp(t->drift_policy, "ignore") == 0)
		{
			Oid			types[4] = {INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID};
			Datum		args[4];
			Datum	   *elems = palloc(sizeof(Datum) * list_length(unknown));
			int			n = 0;

			foreach(lc, unknown)
			{
				i = lfirst_int(lc);
				elems[n++] = CStringGetTextDatum(lr->attnames[i]);
				t->ignored = lappend(t->ignored, makeString(pstrdup(lr->attnames[i])));
			}
			args[0] = Int32GetDatum(st->pipe->pipeline_id);
			args[1] = CStringGetTextDatum(t->source_schema);
			args[2] = CStringGetTextDatum(t->source_table);
			args[3] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
			if (sluice_catalog_exec("UPDATE sluice._pipeline_table SET ignored_columns = ignored_columns || $4 "
									  " WHERE (pipeline_id, source_schema, source_table) = ($1, $2, $3)",
									  4, types, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not record ignored columns");
			record_drift(st, t, lr, "ignored",
						 psprintf("new source column%s left out: %s", list_length(unknown) > 1 ? "s" : "", names.data));
		}
		else if (evolve)
		{
			foreach(lc, unknown)
			{
				i = lfirst_int(lc);
				if (lr->atttyps[i] >= FirstNormalObjectId)
					drift_pause(st, t, lr, psprintf("New source column \"%s\" has a type that is not built in (%s); "
													"evolve only adds built-in types.", lr->attnames[i],
													source_type_name(st, lr->atttyps[i], st->typmods[i])),
								"Add the column to the datamart table and the contract by hand.");
				if (get_attnum(relid, lr->attnames[i]) != InvalidAttrNumber)
					drift_pause(st, t, lr, psprintf("New source column \"%s\" collides with a datamart column of the same name "
													"that is not in the contract.", lr->attnames[i]),
								"Rename or drop the datamart column.");
			}
			evolve_contract(st, t, lr, unknown);
			foreach(lc, unknown)
			{
				i = lfirst_int(lc);
				feeds[i] = pstrdup(lr->attnames[i]);
			}
		}
		else
			drift_pause(st, t, lr, psprintf("New source column%s %s, not in the contract (policy freeze).",
											list_length(unknown) > 1 ? "s" : "", names.data),
						psprintf("Call sluice.set_drift_policy('%s', 'evolve') to add %s, or 'ignore' to leave %s out.",
								 qtarget, list_length(unknown) > 1 ? "them" : "it",
								 list_length(unknown) > 1 ? "them" : "it"));
	}
	return feeds;
}

/*
 * RELATION: (re)map a source relation to its target table through the
 * table's contract.  Drift is handled by policy before any row of the
 * relation is applied.
 */
static void
handle_relation(ApplyState *st, StringInfo s)
{
	int32	   *typmods = read_rel_typmods(s);
	LogicalRepRelation *lr = logicalrep_read_rel(s);
	ApplyRel   *ar;
	bool		found;
	SluiceTable *t;
	MemoryContext old;
	TupleDesc	desc;
	int			i;
	char	  **feeds;

	ar = hash_search(st->rels, &lr->remoteid, HASH_ENTER, &found);
	if (found)
		close_rel(ar);

	old = MemoryContextSwitchTo(st->cxt);
	memset(((char *) ar) + sizeof(LogicalRepRelId), 0,
		   sizeof(ApplyRel) - sizeof(LogicalRepRelId));
	ar->nspname = pstrdup(lr->nspname);
	ar->relname = pstrdup(lr->relname);
	ar->remote_natts = lr->natts;
	ar->remote_attnames = palloc(sizeof(char *) * Max(lr->natts, 1));
	for (i = 0; i < lr->natts; i++)
		ar->remote_attnames[i] = pstrdup(lr->attnames[i]);

	t = find_pipeline_table(st->pipe, lr->nspname, lr->relname);
	if (t == NULL)
	{
		/* published but not part of this pipeline: its changes are ignored */
		MemoryContextSwitchTo(old);
		return;
	}
	ar->mapped = true;
	st->cur_rel = ar;

	st->typmods = typmods;
	feeds = check_contract(st, t, lr);
	st->typmods = NULL;

	ar->rel = table_openrv(makeRangeVar(t->target_schema, t->target_table, -1),
						   RowExclusiveLock);
	desc = RelationGetDescr(ar->rel);

	/*
	 * Rows are written below the executor, which would check no privilege:
	 * the pipeline's owner (the current user, security.c) must hold them.
	 */
	if (pg_class_aclmask(RelationGetRelid(ar->rel), GetUserId(),
						 ACL_INSERT | ACL_UPDATE | ACL_DELETE, ACLMASK_ALL) !=
		(ACL_INSERT | ACL_UPDATE | ACL_DELETE))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table \"%s.%s\"", t->target_schema, t->target_table),
				 errdetail("Pipeline \"%s\" writes it as its owner, role \"%s\", which lacks INSERT, UPDATE or DELETE on it.",
						   st->pipe->name, GetUserNameFromId(GetUserId(), false)),
				 errhint("Grant them to that role, or give the table to it with ALTER TABLE ... OWNER TO.")));

	ar->attmap = palloc(sizeof(int) * Max(lr->natts, 1));
	for (i = 0; i < lr->natts; i++)
	{
		int			j;

		ar->attmap[i] = -1;
		if (feeds[i] == NULL)
			continue;			/* left out by the contract */
		for (j = 0; j < desc->natts; j++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, j);

			if (!att->attisdropped && strcmp(NameStr(att->attname), feeds[i]) == 0)
			{
				ar->attmap[i] = j;
				break;
			}
		}
		if (ar->attmap[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("datamart table \"%s.%s\" no longer matches its contract",
							t->target_schema, t->target_table),
					 errdetail("Column \"%s\" of the contract is missing from the table.", feeds[i]),
					 errhint("Do not alter pg_sluice's tables by hand; add the column back. Nothing was applied.")));
	}

	ar->infuncs = palloc0(sizeof(FmgrInfo) * Max(desc->natts, 1));
	ar->recvfuncs = palloc0(sizeof(FmgrInfo) * Max(desc->natts, 1));
	ar->ioparams = palloc0(sizeof(Oid) * Max(desc->natts, 1));
	ar->rawts = palloc0(sizeof(bool) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			func;
		Oid			ioparam;

		if (att->attisdropped)
			continue;
		getTypeInputInfo(att->atttypid, &func, &ar->ioparams[i]);
		fmgr_info_cxt(func, &ar->infuncs[i], st->cxt);
		if (st->binary)
		{
			int16		typlen;
			bool		typbyval;
			char		typalign;
			char		typdelim;

			/*
			 * A type without a receive function (aclitem) is sent as text
			 * even in binary mode: pgoutput does that for a type without a
			 * send function, and here is the same type.
			 */
			get_type_io_data(att->atttypid, IOFunc_receive, &typlen, &typbyval,
							 &typalign, &typdelim, &ioparam, &func);
			if (OidIsValid(func))
				fmgr_info_cxt(func, &ar->recvfuncs[i], st->cxt);
			ar->rawts[i] = att->atttypmod < 0 &&
				(att->atttypid == TIMESTAMPTZOID || att->atttypid == TIMESTAMPOID);
		}
	}

	/*
	 * A source column whose type changed but still fits its datamart column
	 * (see check_contract) is parsed as the type it is sent as, then
	 * converted through its text form: in binary mode the datamart type's
	 * receive function cannot read another type.  timestamp into
	 * timestamptz is read in UTC, as evolve's ALTER TABLE converts it.
	 */
	ar->convert = palloc0(sizeof(bool) * Max(lr->natts, 1));
	ar->conv_in = palloc0(sizeof(FmgrInfo) * Max(lr->natts, 1));
	ar->conv_recv = palloc0(sizeof(FmgrInfo) * Max(lr->natts, 1));
	ar->conv_out = palloc0(sizeof(FmgrInfo) * Max(lr->natts, 1));
	ar->conv_ioparam = palloc0(sizeof(Oid) * Max(lr->natts, 1));
	ar->conv_typmod = palloc0(sizeof(int32) * Max(lr->natts, 1));
	ar->conv_same = palloc0(sizeof(bool) * Max(lr->natts, 1));
	for (i = 0; i < lr->natts; i++)
	{
		Oid			soid = lr->atttyps[i];
		Oid			moid;
		Oid			func;
		bool		isvarlena;

		if (ar->attmap[i] < 0)
			continue;
		moid = TupleDescAttr(desc, ar->attmap[i])->atttypid;
		if (soid >= FirstNormalObjectId || soid == moid ||
			!(st->binary || (soid == TIMESTAMPOID && moid == TIMESTAMPTZOID)))
			continue;
		ar->convert[i] = true;
		ar->conv_typmod[i] = typmods[i];
		ar->conv_same[i] = soid == TIMESTAMPOID && moid == TIMESTAMPTZOID;
		getTypeInputInfo(soid, &func, &ar->conv_ioparam[i]);
		fmgr_info_cxt(func, &ar->conv_in[i], st->cxt);
		getTypeOutputInfo(soid, &func, &isvarlena);
		fmgr_info_cxt(func, &ar->conv_out[i], st->cxt);
		{
			int16		typlen;
			bool		typbyval;
			char		typalign;
			char		typdelim;
			Oid			ioparam;

			get_type_io_data(soid, IOFunc_receive, &typlen, &typbyval,
							 &typalign, &typdelim, &ioparam, &func);
			if (OidIsValid(func))
				fmgr_info_cxt(func, &ar->conv_recv[i], st->cxt);
		}
	}

	/* datamart columns no source column feeds: their default on insert */
	{
		bool	   *fed = palloc0(sizeof(bool) * Max(desc->natts, 1));

		for (i = 0; i < lr->natts; i++)
			if (ar->attmap[i] >= 0)
				fed[ar->attmap[i]] = true;
		ar->defatts = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));
		ar->defexprs = palloc(sizeof(ExprState *) * Max(desc->natts, 1));
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);
			Node	   *defexpr;

			if (fed[i] || att->attisdropped || att->attgenerated ||
				strcmp(NameStr(att->attname), "_sluice_version") == 0)
				continue;
			defexpr = build_column_default(ar->rel, i + 1);
			if (defexpr == NULL)
				continue;
			ar->defatts[ar->ndefaults] = i + 1;
			ar->defexprs[ar->ndefaults++] = ExecInitExpr(expression_planner((Expr *) defexpr), NULL);
		}
	}

	ar->keyidx = RelationGetPrimaryKeyIndex(ar->rel);
	if (!OidIsValid(ar->keyidx))
		ar->keyidx = RelationGetReplicaIndex(ar->rel);

	ar->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(ar->rri, ar->rel, 0, NULL, 0);
	ExecOpenIndices(ar->rri, false);
	init_key_lookups(st, ar);
	if (ar->keyrel != NULL && !ar->keyrel->rd_index->indimmediate)
	{
		Oid			conoid = get_index_constraint(ar->keyidx);

		/*
		 * A deferred key (the source may swap keys, see api.c's
		 * create_target_key): while a source transaction is half applied
		 * two rows may share a key.  The source sends whole old rows under
		 * identity FULL, so the row to change is the one equal to it.
		 */
		if (lr->replident == REPLICA_IDENTITY_FULL)
		{
			ar->matchall = true;
			ar->eqfuncs = palloc0(sizeof(FmgrInfo) * Max(desc->natts, 1));
			ar->fed = palloc0(sizeof(bool) * Max(desc->natts, 1));
			for (i = 0; i < lr->natts; i++)
			{
				int			j = ar->attmap[i];
				TypeCacheEntry *tc;

				if (j < 0)
					continue;
				ar->fed[j] = true;
				tc = lookup_type_cache(TupleDescAttr(desc, j)->atttypid, TYPECACHE_EQ_OPR_FINFO);
				if (OidIsValid(tc->eq_opr_finfo.fn_oid))
					fmgr_info_copy(&ar->eqfuncs[j], &tc->eq_opr_finfo, st->cxt);
			}
		}
		if (OidIsValid(conoid))
			st->deferred_keys = lappend(st->deferred_keys,
										makeRangeVar(get_namespace_name(RelationGetNamespace(ar->rel)),
													 get_constraint_name(conoid), -1));
	}
	ar->multi_ok = ar->rri->ri_TrigDesc == NULL &&
		!(desc->constr && desc->constr->has_generated_stored) &&
		ar->rel->rd_rel->relkind == RELKIND_RELATION;
	ar->newslot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	ar->searchslot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	ar->localslot = MakeSingleTupleTableSlot(desc, table_slot_callbacks(ar->rel));
	EvalPlanQualInit(&ar->epqstate, st->estate, NULL, NIL, -1);

	/* versions: the row's version column and the table of superseded rows */
	if (st->pipe->keep_history &&
		(ar->verattno = get_attnum(RelationGetRelid(ar->rel), "_sluice_version")) != InvalidAttrNumber)
	{
		TupleDesc	hdesc;

		ar->histrel = table_openrv(makeRangeVar(psprintf("%s_history", t->target_schema),
												 t->target_table, -1), RowExclusiveLock);
		hdesc = RelationGetDescr(ar->histrel);
		ar->histmap = palloc(sizeof(int) * Max(hdesc->natts, 1));
		for (i = 0; i < hdesc->natts; i++)
		{
			Form_pg_attribute ha = TupleDescAttr(hdesc, i);

			if (ha->attisdropped)
				ar->histmap[i] = -2;
			else if (strcmp(NameStr(ha->attname), "_sluice_superseded") == 0)
				ar->histmap[i] = -1;
			else
			{
				AttrNumber	a = get_attnum(RelationGetRelid(ar->rel), NameStr(ha->attname));

				if (a == InvalidAttrNumber)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("history table \"%s_history.%s\" has column \"%s\" that \"%s.%s\" lacks",
									t->target_schema, t->target_table, NameStr(ha->attname),
									t->target_schema, t->target_table)));
				ar->histmap[i] = a - 1;
				if (TupleDescAttr(desc, a - 1)->atttypid != ha->atttypid ||
					TupleDescAttr(desc, a - 1)->atttypmod != ha->atttypmod)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("column \"%s\" of history table \"%s_history.%s\" has type %s, the datamart table's has %s",
									NameStr(ha->attname), t->target_schema, t->target_table,
									format_type_with_typemod(ha->atttypid, ha->atttypmod),
									format_type_with_typemod(TupleDescAttr(desc, a - 1)->atttypid,
															 TupleDescAttr(desc, a - 1)->atttypmod)),
							 errdetail("Superseded rows are copied into the history table as they are."),
							 errhint("Alter the history table's column to the same type, or use sluice.accept_type_change, which alters both.")));
			}
		}
		ar->histrri = makeNode(ResultRelInfo);
		InitResultRelInfo(ar->histrri, ar->histrel, 0, NULL, 0);
		ExecOpenIndices(ar->histrri, false);
		ar->histslot = MakeSingleTupleTableSlot(hdesc, &TTSOpsVirtual);
	}
	else
		ar->verattno = InvalidAttrNumber;

	ar->counts = table_count(t->target_schema, t->target_table);

	/* row expectations: compiled once here, evaluated per row in C */
	ar->table = t;
	{
		ListCell   *lc;

		List	   *exprs = NIL;

		foreach(lc, t->expectations)
		{
			SluiceExpectation *e = lfirst(lc);
			RowCheck   *rc;
			Expr	   *expr;

			if (e->predicate == NULL)
				continue;
			rc = palloc0(sizeof(RowCheck));
			rc->e = e;
			expr = expect_bind_predicate(ar->rel, e);
			exprs = lappend(exprs, expr);
			rc->state = ExecPrepareExpr(expr, st->estate);
			rc->result = expect_result(e);
			ar->rowchecks = lappend(ar->rowchecks, rc);
			if (e->severity == 'q')
				ar->has_quarantine = true;
		}
		/* see check_row */
		if (list_length(exprs) > 1)
			ar->allchecks = ExecPrepareExpr(make_andclause(exprs), st->estate);
		ar->keyatts = palloc(sizeof(AttrNumber) * Max(list_length(t->columns), 1));
		foreach(lc, t->columns)
		{
			SluiceColumn *c = lfirst(lc);

			if (c->is_key)
				ar->keyatts[ar->nkeys++] = get_attnum(RelationGetRelid(ar->rel), c->name);
		}
	}
	ledger_init(st, ar);

	st->cur_rel = NULL;
	MemoryContextSwitchTo(old);
}

/* Stamp the row about to be written with the batch's version. */
static inline void
set_version(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot)
{
	if (ar->verattno == InvalidAttrNumber)
		return;
	slot->tts_values[ar->verattno - 1] = Int64GetDatum(st->pipe->version);
	slot->tts_isnull[ar->verattno - 1] = false;
}

/* Keep the row version being replaced or deleted: [its version, this one). */
static void
save_history(ApplyState *st, ApplyRel *ar, TupleTableSlot *old)
{
	TupleDesc	hdesc;
	int			i;

	if (ar->histrel == NULL)
		return;
	hdesc = RelationGetDescr(ar->histrel);
	slot_getallattrs(old);
	ExecClearTuple(ar->histslot);
	for (i = 0; i < hdesc->natts; i++)
	{
		int			m = ar->histmap[i];

		if (m == -1)
		{
			ar->histslot->tts_values[i] = Int64GetDatum(st->pipe->version);
			ar->histslot->tts_isnull[i] = false;
		}
		else if (m < 0)
		{
			ar->histslot->tts_values[i] = (Datum) 0;
			ar->histslot->tts_isnull[i] = true;
		}
		else
		{
			ar->histslot->tts_values[i] = old->tts_values[m];
			ar->histslot->tts_isnull[i] = old->tts_isnull[m];
		}
	}
	ExecStoreVirtualTuple(ar->histslot);
	ExecSimpleRelationInsert(ar->histrri, st->estate, ar->histslot);
}

/* The key of the row in a slot, as a JSON object (for failure samples). */
static char *
row_key_json(ApplyRel *ar, TupleTableSlot *slot)
{
	StringInfoData buf;
	TupleDesc	desc = slot->tts_tupleDescriptor;
	int			i;

	slot_getallattrs(slot);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < ar->nkeys; i++)
	{
		int			j = ar->keyatts[i] - 1;
		Form_pg_attribute att;

		if (j < 0)
			continue;
		att = TupleDescAttr(desc, j);
		if (buf.len > 1)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, NameStr(att->attname));
		appendStringInfoString(&buf, ": ");
		if (slot->tts_isnull[j])
			appendStringInfoString(&buf, "null");
		else
		{
			Oid			out;
			bool		varlena;

			getTypeOutputInfo(att->atttypid, &out, &varlena);
			escape_json(&buf, OidOutputFunctionCall(out, slot->tts_values[j]));
		}
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* ---------- quarantine ledger and divergence ---------- */

static uint32
held_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
held_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* jsonb's order of object keys: shorter first, then bytewise */
static int
ledger_key_cmp(const void *a, const void *b, void *arg)
{
	TupleDesc	desc = (TupleDesc) arg;
	const char *na = NameStr(TupleDescAttr(desc, *(const AttrNumber *) a - 1)->attname);
	const char *nb = NameStr(TupleDescAttr(desc, *(const AttrNumber *) b - 1)->attname);
	size_t		la = strlen(na);
	size_t		lb = strlen(nb);

	if (la != lb)
		return la < lb ? -1 : 1;
	return memcmp(na, nb, la);
}

static void
ledger_create(ApplyState *st, ApplyRel *ar)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(HeldEntry);
	ctl.hash = held_hash;
	ctl.match = held_match;
	ctl.hcxt = st->cxt;
	ar->held = hash_create("pg_sluice quarantine ledger", 64, &ctl,
						   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/*
 * Set up a relation's quarantine ledger: the attributes of its key (the
 * contract's key columns, or every column of a table without a key) and,
 * when the table has quarantine expectations or open entries, the open
 * entries.  Runs in st->cxt, at the table's RELATION message.
 */
static void
ledger_init(ApplyState *st, ApplyRel *ar)
{
	TupleDesc	desc = RelationGetDescr(ar->rel);
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];
	uint64		i;
	int			n = 0;

	ar->ledgerkeys = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));
	for (i = 0; i < ar->nkeys; i++)
		if (ar->keyatts[i] > 0)
			ar->ledgerkeys[n++] = ar->keyatts[i];
	if (n == 0)
	{
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), "_sluice_version") != 0)
				ar->ledgerkeys[n++] = att->attnum;
		}
	}
	qsort_arg(ar->ledgerkeys, n, sizeof(AttrNumber), ledger_key_cmp, desc);
	ar->nledgerkeys = n;
	ar->ledgerout = palloc0(sizeof(FmgrInfo) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		Oid			out;
		bool		varlena;

		getTypeOutputInfo(TupleDescAttr(desc, ar->ledgerkeys[i] - 1)->atttypid, &out, &varlena);
		fmgr_info_cxt(out, &ar->ledgerout[i], st->cxt);
	}

	args[0] = Int32GetDatum(st->pipe->pipeline_id);
	args[1] = CStringGetTextDatum(ar->table->target_schema);
	args[2] = CStringGetTextDatum(ar->table->target_table);
	if (SPI_execute_with_args("SELECT quarantine_id, row_key::text FROM sluice._quarantine "
							  " WHERE pipeline_id = $1 AND target_schema = $2 AND target_table = $3 "
							  "   AND status IN ('held', 'discarded') AND superseded_how IS NULL "
							  "   AND row_key IS NOT NULL",
							  3, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the quarantine ledger");
	ar->held = NULL;
	if (SPI_processed > 0 || ar->has_quarantine)
		ledger_create(st, ar);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		ledger_hold(st, ar, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), id);
	}
}

/*
 * The ledger key of the row in a slot: a JSON object of its key columns'
 * text values, keys in jsonb's order, so that it equals row_key::text.
 */
static char *
ledger_key(ApplyRel *ar, TupleTableSlot *slot)
{
	StringInfoData buf;
	TupleDesc	desc = slot->tts_tupleDescriptor;
	int			i;

	slot_getallattrs(slot);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < ar->nledgerkeys; i++)
	{
		int			j = ar->ledgerkeys[i] - 1;

		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, NameStr(TupleDescAttr(desc, j)->attname));
		appendStringInfoString(&buf, ": ");
		if (slot->tts_isnull[j])
			appendStringInfoString(&buf, "null");
		else
			escape_json(&buf, OutputFunctionCall(&ar->ledgerout[i], slot->tts_values[j]));
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The open quarantine entry of a key, or 0. */
static int64
ledger_find(ApplyRel *ar, const char *key)
{
	HeldEntry  *e;

	if (ar->held == NULL)
		return 0;
	e = hash_search(ar->held, &key, HASH_FIND, NULL);
	return e ? e->quarantine_id : 0;
}

/* Remember an open entry (the key's latest state). */
static void
ledger_hold(ApplyState *st, ApplyRel *ar, const char *key, int64 quarantine_id)
{
	char	   *k = MemoryContextStrdup(st->cxt, key);
	HeldEntry  *e;

	if (ar->held == NULL)
		ledger_create(st, ar);
	e = hash_search(ar->held, &k, HASH_ENTER, NULL);
	e->quarantine_id = quarantine_id;
}

/*
 * A change of the source transaction being applied replaced the latest
 * state of a key: its open entry, if any, is superseded (a held entry can
 * no longer be released without force), recorded with how and the entry
 * that holds the new state (by, or 0).
 */
static void
ledger_supersede(ApplyState *st, ApplyRel *ar, const char *key,
				 const char *how, int64 by)
{
	Oid			types[5] = {INT8OID, INT8OID, TEXTOID, XIDOID, LSNOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int64		id = ledger_find(ar, key);

	if (id == 0)
		return;
	args[0] = Int64GetDatum(id);
	args[1] = Int64GetDatum(by);
	nulls[1] = by ? ' ' : 'n';
	args[2] = CStringGetTextDatum(how);
	args[3] = TransactionIdGetDatum(st->begin.xid);
	args[4] = LSNGetDatum(st->begin.final_lsn);
	if (sluice_catalog_exec("UPDATE sluice._quarantine SET "
							  "  status = CASE WHEN status = 'held' THEN 'superseded' ELSE status END, "
							  "  resolved_at = CASE WHEN status = 'held' THEN pg_catalog.now() ELSE resolved_at END, "
							  "  superseded_by = $2, superseded_how = $3, superseded_xid = $4, superseded_lsn = $5 "
							  " WHERE quarantine_id = $1",
							  5, types, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not supersede a quarantined row");
	(void) hash_search(ar->held, &key, HASH_REMOVE, NULL);
}

/* The source truncated the table: every open entry of it is superseded. */
static void
ledger_truncated(ApplyState *st, ApplyRel *ar)
{
	Oid			types[5] = {INT4OID, TEXTOID, TEXTOID, XIDOID, LSNOID};
	Datum		args[5];

	args[0] = Int32GetDatum(st->pipe->pipeline_id);
	args[1] = CStringGetTextDatum(ar->table->target_schema);
	args[2] = CStringGetTextDatum(ar->table->target_table);
	args[3] = TransactionIdGetDatum(st->begin.xid);
	args[4] = LSNGetDatum(st->begin.final_lsn);
	if (sluice_catalog_exec("UPDATE sluice._quarantine SET "
							  "  status = CASE WHEN status = 'held' THEN 'superseded' ELSE status END, "
							  "  resolved_at = CASE WHEN status = 'held' THEN pg_catalog.now() ELSE resolved_at END, "
							  "  superseded_how = 'truncated', superseded_xid = $4, superseded_lsn = $5 "
							  " WHERE pipeline_id = $1 AND target_schema = $2 AND target_table = $3 "
							  "   AND status IN ('held', 'discarded') AND superseded_how IS NULL",
							  5, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not supersede the truncated table's quarantined rows");
	if (ar->held != NULL)
	{
		hash_destroy(ar->held);
		ar->held = NULL;
		if (ar->has_quarantine)
			ledger_create(st, ar);
	}
}

/*
 * The row an open entry holds, as a tuple of the table in ar->localslot
 * (free here: the row was not found), for the columns an update did not
 * send.
 */
static TupleTableSlot *
ledger_held_row(ApplyState *st, ApplyRel *ar, int64 quarantine_id)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	bool		isnull;
	Datum		d;
	HeapTupleHeader th;
	HeapTupleData tmp;

	args[0] = Int64GetDatum(quarantine_id);
	if (SPI_execute_with_args(psprintf("SELECT pg_catalog.jsonb_populate_record(NULL::%s.%s, row_data) "
									   "  FROM sluice._quarantine WHERE quarantine_id = $1",
									   quote_identifier(ar->table->target_schema),
									   quote_identifier(ar->table->target_table)),
							  1, types, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read quarantined row " INT64_FORMAT, quarantine_id);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	th = DatumGetHeapTupleHeader(d);
	tmp.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tmp.t_self);
	tmp.t_tableOid = RelationGetRelid(ar->rel);
	tmp.t_data = th;
	ExecForceStoreHeapTuple(heap_copytuple(&tmp), ar->localslot, true);
	return ar->localslot;
}

/*
 * An update or delete found no row, and no quarantine entry explains it:
 * the datamart diverged from the source.  Never turned into an insert: a
 * strict pipeline pauses (the batch rolls back, nothing is lost); otherwise
 * the change is skipped and counted per run and table, with up to 5 keys
 * (refresh.c records them and queues a divergence event).
 */
static void
apply_missing_row(ApplyState *st, ApplyRel *ar, const char *change)
{
	char	   *key = ledger_key(ar, ar->searchslot);
	TableCount *c = ar->counts;

	if (st->pipe->strict)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		SluiceDrift *d = palloc0(sizeof(SluiceDrift));

		d->is_divergence = true;
		d->source_schema = pstrdup(ar->table->source_schema);
		d->source_table = pstrdup(ar->table->source_table);
		/* (stored as the pause reason, which every role can read: no key) */
		d->detail = psprintf("Source transaction %u %s a row of \"%s.%s\" which datamart table \"%s.%s\" does not have.",
							 st->begin.xid, strcmp(change, "update") == 0 ? "updates" : "deletes",
							 ar->nspname, ar->relname, ar->table->target_schema, ar->table->target_table);
		MemoryContextSwitchTo(old);
		sluice_pending_drift = d;
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("row to %s is missing from datamart table \"%s.%s\"",
						change, ar->table->target_schema, ar->table->target_table),
				 errdetail("%s Its key is %s.", d->detail, key),
				 errhint("Nothing was applied and pipeline \"%s\" is paused (strict). Restore the row in the datamart, "
						 "or let the pipeline skip and count missing rows with sluice.alter_pipeline('%s', strict => false), "
						 "then call sluice.resume('%s').",
						 st->pipe->name, st->pipe->name, st->pipe->name)));
	}
	st->stats->missing++;
	c->missing++;
	if (c->nmissing_keys < 5)
	{
		MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(c));

		if (c->missing_keys.data == NULL)
			initStringInfo(&c->missing_keys);
		appendStringInfo(&c->missing_keys, "%s{\"change\": \"%s\", \"key\": %s, \"source_xid\": %u}",
						 c->nmissing_keys ? ", " : "", change, key, st->begin.xid);
		c->nmissing_keys++;
		MemoryContextSwitchTo(old);
	}
}

/*
 * Hold a row back: store it with the expectation it failed and its key.
 * The new entry is the key's latest state: it supersedes the key's open
 * entry, and, for an update that moved the key (oldslot: the row's key
 * before it), the old key's.
 */
static void
quarantine_row(ApplyState *st, ApplyRel *ar, SluiceExpectation *e,
			   TupleTableSlot *slot, const char *change, TupleTableSlot *oldslot)
{
	Oid			types[9] = {INT4OID, INT4OID, NAMEOID, NAMEOID, XIDOID, LSNOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[9];
	char	   *key = ledger_key(ar, slot);
	char	   *oldkey = oldslot ? ledger_key(ar, oldslot) : NULL;
	int64		id;
	bool		isnull;
	Datum		row = ExecFetchSlotHeapTupleDatum(slot);

	args[0] = Int32GetDatum(st->pipe->pipeline_id);
	args[1] = Int32GetDatum(e->expectation_id);
	args[2] = catalog_name_datum(ar->table->target_schema);
	args[3] = catalog_name_datum(ar->table->target_table);
	args[4] = TransactionIdGetDatum(st->begin.xid);
	args[5] = LSNGetDatum(st->begin.final_lsn);
	args[6] = CStringGetTextDatum(change);
	args[7] = DirectFunctionCall1(row_to_json, row);
	args[8] = CStringGetTextDatum(key);
	if (sluice_catalog_exec("INSERT INTO sluice._quarantine (pipeline_id, expectation_id, target_schema, "
							  "  target_table, source_xid, source_lsn, change, row_data, row_key) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb) RETURNING quarantine_id",
							  9, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not quarantine a row");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (oldkey != NULL && strcmp(oldkey, key) != 0)
		ledger_supersede(st, ar, oldkey, "quarantined", id);
	ledger_supersede(st, ar, key, "quarantined", id);
	ledger_hold(st, ar, key, id);
}

/*
 * Evaluate the row expectations on the row about to be written.  Returns
 * false when the row must not be written (quarantined); an error-severity
 * failure pauses the pipeline.  oldslot: for an update, the row's key
 * before it (see quarantine_row).
 */
static bool
check_row(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot, const char *change,
		  TupleTableSlot *oldslot)
{
	ListCell   *lc;
	ExprContext *econtext;
	bool		keep = true;

	if (ar->rowchecks == NIL)
		return true;
	econtext = GetPerTupleExprContext(st->estate);
	econtext->ecxt_scantuple = slot;

	/*
	 * Most rows pass every expectation: one evaluation of them all ANDed
	 * settles that (a NULL verdict passes, as for CHECK constraints, and an
	 * AND is false only when one of them is).  Only a row that fails is
	 * checked expectation by expectation, to say which.
	 */
	if (ar->allchecks != NULL)
	{
		bool		isnull;
		Datum		d = ExecEvalExprSwitchContext(ar->allchecks, econtext, &isnull);

		if (isnull || DatumGetBool(d))
		{
			foreach(lc, ar->rowchecks)
				((RowCheck *) lfirst(lc))->result->evaluated++;
			return true;
		}
	}
	foreach(lc, ar->rowchecks)
	{
		RowCheck   *rc = lfirst(lc);
		ExpectResult *r = rc->result;
		bool		isnull;
		Datum		d;

		r->evaluated++;
		d = ExecEvalExprSwitchContext(rc->state, econtext, &isnull);
		if (isnull || DatumGetBool(d))
			continue;
		r->failed++;
		expect_add_sample(r, row_key_json(ar, slot));
		if (rc->e->severity == 'e')
			expect_pause(st->pipe, ar->table, rc->e,
						 psprintf("Expectation \"%s\" failed for a row %s by source transaction %u (sluice.quality has its key).",
								  rc->e->name,
								  strcmp(change, "insert") == 0 ? "inserted" : "updated", st->begin.xid));
		if (rc->e->severity == 'q' && keep)
		{
			quarantine_row(st, ar, rc->e, slot, change, oldslot);
			keep = false;
		}
	}
	return keep;
}

/*
 * Look a relation up for a change message; NULL when its changes are not
 * for this pipeline.
 */
static ApplyRel *
get_rel(ApplyState *st, LogicalRepRelId relid)
{
	ApplyRel   *ar = hash_search(st->rels, &relid, HASH_FIND, NULL);

	if (ar == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg_internal("change for relation %u arrived before its RELATION message", relid)));
	if (!ar->mapped)
		return NULL;
	st->cur_rel = ar;
	return ar;
}

/*
 * Fill a virtual slot from a pgoutput tuple.  With base, columns the source
 * did not send (unchanged TOAST) keep base's values; without it they are an
 * error.
 */
static void
fill_slot(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot,
		  LogicalRepTupleData *tup, TupleTableSlot *base)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	/* a key to look up by keyrel: the other columns are not needed */
	bool		keyonly = slot == ar->searchslot && ar->keyrel != NULL && !ar->matchall;
	int			i;

	ExecClearTuple(slot);
	if (base)
	{
		slot_getallattrs(base);
		memcpy(slot->tts_values, base->tts_values, desc->natts * sizeof(Datum));
		memcpy(slot->tts_isnull, base->tts_isnull, desc->natts * sizeof(bool));
	}
	else
	{
		memset(slot->tts_values, 0, desc->natts * sizeof(Datum));
		memset(slot->tts_isnull, true, desc->natts * sizeof(bool));
	}

	if (tup->ncols != ar->remote_natts)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg_internal("tuple has %d columns, relation has %d",
								 tup->ncols, ar->remote_natts)));

	for (i = 0; i < tup->ncols; i++)
	{
		int			j = ar->attmap[i];

		if (j < 0)
			continue;			/* a source column the contract leaves out */
		if (keyonly && !ar->iskey[j])
			continue;
		st->cur_att = i;
		if (ar->convert[i] && (tup->colstatus[i] == LOGICALREP_COLUMN_TEXT ||
							   tup->colstatus[i] == LOGICALREP_COLUMN_BINARY))
		{
			Datum		v;

			if (tup->colstatus[i] == LOGICALREP_COLUMN_TEXT)
				v = InputFunctionCall(&ar->conv_in[i], tup->colvalues[i].data,
									  ar->conv_ioparam[i], ar->conv_typmod[i]);
			else
			{
				if (!OidIsValid(ar->conv_recv[i].fn_oid))
					ereport(ERROR,
							(errcode(ERRCODE_PROTOCOL_VIOLATION),
							 errmsg_internal("unexpected binary value for column \"%s\"",
											 ar->remote_attnames[i])));
				tup->colvalues[i].cursor = 0;
				v = ReceiveFunctionCall(&ar->conv_recv[i], &tup->colvalues[i],
										ar->conv_ioparam[i], ar->conv_typmod[i]);
			}
			if (!ar->conv_same[i])
				v = InputFunctionCall(&ar->infuncs[j], OutputFunctionCall(&ar->conv_out[i], v),
									  ar->ioparams[j], TupleDescAttr(desc, j)->atttypmod);
			slot->tts_values[j] = v;
			slot->tts_isnull[j] = false;
			continue;
		}
		switch (tup->colstatus[i])
		{
			case LOGICALREP_COLUMN_NULL:
				slot->tts_values[j] = (Datum) 0;
				slot->tts_isnull[j] = true;
				break;
			case LOGICALREP_COLUMN_TEXT:
				slot->tts_values[j] =
					InputFunctionCall(&ar->infuncs[j], tup->colvalues[i].data,
									  ar->ioparams[j],
									  TupleDescAttr(desc, j)->atttypmod);
				slot->tts_isnull[j] = false;
				break;
			case LOGICALREP_COLUMN_BINARY:
				if (!OidIsValid(ar->recvfuncs[j].fn_oid))
					ereport(ERROR,
							(errcode(ERRCODE_PROTOCOL_VIOLATION),
							 errmsg_internal("unexpected binary value for column \"%s\"",
											 ar->remote_attnames[i])));
				/* the same tuple may fill two slots (key, then new row) */
				tup->colvalues[i].cursor = 0;
				if (ar->rawts[j] && tup->colvalues[i].len == sizeof(int64))
				{
					/*
					 * timestamp(tz)_recv checks the range by converting the
					 * value to a date and time: a twentieth of the apply
					 * of a table with one such column.  IS_VALID_TIMESTAMP
					 * is the same check (every valid value converts), and
					 * without a typmod nothing is rounded.
					 */
					int64		ts = pq_getmsgint64(&tup->colvalues[i]);

					if (!TIMESTAMP_NOT_FINITE(ts) && !IS_VALID_TIMESTAMP(ts))
						ereport(ERROR,
								(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
								 errmsg("timestamp out of range")));
					slot->tts_values[j] = Int64GetDatum(ts);
				}
				else
					slot->tts_values[j] =
						ReceiveFunctionCall(&ar->recvfuncs[j], &tup->colvalues[i],
											ar->ioparams[j],
											TupleDescAttr(desc, j)->atttypmod);
				if (tup->colvalues[i].cursor != tup->colvalues[i].len)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
							 errmsg("incorrect binary data format in column \"%s\"",
									ar->remote_attnames[i])));
				slot->tts_isnull[j] = false;
				break;
			case LOGICALREP_COLUMN_UNCHANGED:
				/*
				 * Looking a row up by the new tuple (key unchanged, no old
				 * tuple sent): an unchanged TOASTed value is never part of
				 * the key, leave it NULL.
				 */
				if (base == NULL && slot != ar->searchslot)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("source did not send the value of column \"%s\" of \"%s.%s\"",
									ar->remote_attnames[i], ar->nspname, ar->relname),
							 errdetail("The value is TOASTed and unchanged, and the datamart has no row to take it from."),
							 errhint("Set REPLICA IDENTITY FULL on the source table, or make sure the datamart table was not modified by hand.")));
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg_internal("unexpected column status '%c'", tup->colstatus[i])));
		}
	}
	st->cur_att = -1;
	ExecStoreVirtualTuple(slot);
}

/*
 * Key lookups.  RelationFindReplTupleByIndex, which native apply uses,
 * looks up the key's operators and begins and ends an index scan for every
 * row, and locks the row it finds (a WAL record per row); for a
 * 100,000-row UPDATE on the source that was a third of the apply.  Here the
 * scan keys are built once per relation and one index scan stays open for
 * the refresh, rescanned for each row.  Like RelationFindReplTupleByIndex it
 * reads with a dirty snapshot and waits for a session still writing the
 * row.  It takes no row lock: only pg_sluice writes its tables, and the
 * update or delete that follows waits for any other locker itself (a
 * foreign key's KEY SHARE, say).  Should another session update or delete
 * the row in between, the write fails with "tuple concurrently updated" and
 * the batch is rolled back: nothing is lost.
 */
static void
init_key_lookups(ApplyState *st, ApplyRel *ar)
{
	MemoryContext old;
	Relation	idx = NULL;
	int			natts = RelationGetDescr(ar->rel)->natts;
	int			i;

	ar->keyrel = NULL;
	if (!OidIsValid(ar->keyidx))
		return;
	for (i = 0; i < ar->rri->ri_NumIndices; i++)
		if (RelationGetRelid(ar->rri->ri_IndexRelationDescs[i]) == ar->keyidx)
			idx = ar->rri->ri_IndexRelationDescs[i];
	if (idx == NULL || idx->rd_rel->relam != BTREE_AM_OID)
		return;					/* find_row takes the general path */

	old = MemoryContextSwitchTo(st->cxt);
	if (ar->scankeys == NULL)
	{
		ar->nscankeys = IndexRelationGetNumberOfKeyAttributes(idx);
		ar->scankeys = palloc0(sizeof(ScanKeyData) * ar->nscankeys);
		ar->scanatts = palloc0(sizeof(AttrNumber) * ar->nscankeys);
		ar->iskey = palloc0(sizeof(bool) * Max(natts, 1));
		for (i = 0; i < ar->nscankeys; i++)
		{
			AttrNumber	attno = idx->rd_index->indkey.values[i];
			Oid			optype = idx->rd_opcintype[i];
			Oid			op;

			/* primary keys and replica identity indexes have no expressions */
			if (attno <= 0)
				elog(ERROR, "index \"%s\" has an expression", RelationGetRelationName(idx));
			op = get_opfamily_member(idx->rd_opfamily[i], optype, optype,
									 BTEqualStrategyNumber);
			if (!OidIsValid(op))
				elog(ERROR, "missing operator %d(%u,%u) in opfamily %u",
					 BTEqualStrategyNumber, optype, optype, idx->rd_opfamily[i]);
			ScanKeyInit(&ar->scankeys[i], i + 1, BTEqualStrategyNumber,
						get_opcode(op), (Datum) 0);
			ar->scankeys[i].sk_collation = idx->rd_indcollation[i];
			ar->scanatts[i] = attno;
			ar->iskey[attno - 1] = true;
		}
	}
	ar->keyrel = idx;
	MemoryContextSwitchTo(old);
}

/* End the lookups' index scan: before its index is closed. */
static void
end_key_lookups(ApplyRel *ar)
{
	if (ar->keyscan != NULL)
	{
		index_endscan(ar->keyscan);
		ar->keyscan = NULL;
	}
	ar->keyrel = NULL;
}

/*
 * Leave the index page the lookup stopped on before the row is written, as
 * index_endscan does for RelationFindReplTupleByIndex: the dead entries it
 * passed are marked now, and the scan holds no pin on the page while the
 * write inserts into it.
 */
static void
release_key_position(ApplyRel *ar)
{
	index_rescan(ar->keyscan, ar->scankeys, ar->nscankeys, NULL, 0);
}

/*
 * matchall: is found the row search describes?  Every column the source
 * feeds, with the type's equality (as RelationFindReplTupleSeq does), or
 * byte for byte for a type without one (json, point).
 */
static bool
rows_match(ApplyRel *ar, TupleTableSlot *search, TupleTableSlot *found)
{
	TupleDesc	desc = RelationGetDescr(ar->rel);
	int			j;

	slot_getallattrs(found);
	for (j = 0; j < desc->natts; j++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, j);
		Datum		a = search->tts_values[j];
		Datum		b = found->tts_values[j];

		if (!ar->fed[j])
			continue;
		if (search->tts_isnull[j] || found->tts_isnull[j])
		{
			if (search->tts_isnull[j] != found->tts_isnull[j])
				return false;
			continue;
		}
		if (OidIsValid(ar->eqfuncs[j].fn_oid))
		{
			if (!DatumGetBool(FunctionCall2Coll(&ar->eqfuncs[j], att->attcollation, a, b)))
				return false;
		}
		else if (att->attlen == -1)
		{
			struct varlena *va = PG_DETOAST_DATUM_PACKED(a);
			struct varlena *vb = PG_DETOAST_DATUM_PACKED(b);

			if (VARSIZE_ANY_EXHDR(va) != VARSIZE_ANY_EXHDR(vb) ||
				memcmp(VARDATA_ANY(va), VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(va)) != 0)
				return false;
		}
		else if (!datumIsEqual(a, b, att->attbyval, att->attlen))
			return false;
	}
	return true;
}

static bool
find_row_by_key(ApplyState *st, ApplyRel *ar)
{
	TupleTableSlot *search = ar->searchslot;
	TupleTableSlot *found = ar->localslot;
	MemoryContext old;
	bool		ret = false;
	int			i;

	/*
	 * The scan allocates some of its state lazily (the btree's list of
	 * dead items, for one): it must live as long as the scan.
	 */
	old = MemoryContextSwitchTo(st->cxt);
	if (ar->keyscan == NULL)
	{
		InitDirtySnapshot(ar->dirty);
		ar->keyscan = index_beginscan(ar->rel, ar->keyrel, &ar->dirty,
									  ar->nscankeys, 0);
	}
	for (i = 0; i < ar->nscankeys; i++)
	{
		ScanKey		sk = &ar->scankeys[i];
		int			a = ar->scanatts[i] - 1;

		sk->sk_argument = search->tts_values[a];
		if (search->tts_isnull[a])
			sk->sk_flags |= SK_ISNULL;
		else
			sk->sk_flags &= ~SK_ISNULL;
	}

	for (;;)
	{
		TransactionId xwait = InvalidTransactionId;

		index_rescan(ar->keyscan, ar->scankeys, ar->nscankeys, NULL, 0);

		/*
		 * A unique index: the first row the dirty snapshot sees is it.  A
		 * deferred one may hold two rows with the key in the middle of a
		 * source transaction: the one equal to the old row is it.
		 */
		while ((ret = index_getnext_slot(ar->keyscan, ForwardScanDirection, found)))
		{
			xwait = TransactionIdIsValid(ar->dirty.xmin) ? ar->dirty.xmin : ar->dirty.xmax;
			if (TransactionIdIsValid(xwait))
				break;
			if (!ar->matchall || rows_match(ar, search, found))
				break;
		}
		if (!ret)
			break;

		/* another session is writing the row: wait for it, look again */
		if (!TransactionIdIsValid(xwait))
		{
			ExecMaterializeSlot(found);
			break;
		}
		XactLockTableWait(xwait, NULL, NULL, XLTW_None);
	}
	release_key_position(ar);
	MemoryContextSwitchTo(old);
	return ret;
}

static bool
find_row(ApplyState *st, ApplyRel *ar)
{
	if (ar->keyrel != NULL)
		return find_row_by_key(st, ar);
	if (OidIsValid(ar->keyidx))
		return RelationFindReplTupleByIndex(ar->rel, ar->keyidx, LockTupleExclusive,
											ar->searchslot, ar->localslot);
	return RelationFindReplTupleSeq(ar->rel, LockTupleExclusive,
									ar->searchslot, ar->localslot);
}

static void
end_change(ApplyState *st, ApplyRel *ar)
{
	ExecClearTuple(ar->newslot);
	ExecClearTuple(ar->searchslot);
	ExecClearTuple(ar->localslot);
	ResetPerTupleExprContext(st->estate);
	CommandCounterIncrement();
	st->cur_rel = NULL;
}

/*
 * Insert runs.  Consecutive inserts into one table (a bulk load on the
 * source, a big INSERT ... SELECT) are written like COPY does: rows wait in
 * a small buffer, bounded by APPLY_MAX_BUFFERED rows and
 * APPLY_MAX_BUFFERED_BYTES, then go to the table in one table_multi_insert
 * (one WAL record and one buffer lock per page instead of per row) and to
 * the indexes row by row.  Constraints and row expectations are checked as
 * each row arrives, so errors name the row.  Anything that could see the
 * buffered rows flushes first: any message other than an insert into the
 * same table, the end of each source transaction, the end of the stream.
 * Tables with triggers (foreign keys included) or generated columns take
 * the row-by-row path, where the executor fires and computes them.
 */
static void
flush_inserts(ApplyState *st)
{
	ApplyRel   *ar = st->pending;
	ApplyRel   *save_rel = st->cur_rel;
	char		save_action = st->action;
	int			i;

	if (ar == NULL)
		return;
	st->pending = NULL;
	st->cur_rel = ar;
	st->action = LOGICAL_REP_MSG_INSERT;
	table_multi_insert(ar->rel, ar->bufslots, ar->nbuffered,
					   GetCurrentCommandId(true), 0, NULL);
	for (i = 0; i < ar->nbuffered; i++)
	{
		TupleTableSlot *slot = ar->bufslots[i];

		if (ar->rri->ri_NumIndices > 0)
			list_free(ExecInsertIndexTuples(ar->rri, slot, st->estate,
											false, false, NULL, NIL));
		ExecClearTuple(slot);
		ResetPerTupleExprContext(st->estate);
	}
	ar->nbuffered = 0;
	ar->bufbytes = 0;
	CommandCounterIncrement();
	st->cur_rel = save_rel;
	st->action = save_action;
}

/* Queue the row in ar->newslot for flush_inserts. */
static void
buffer_insert(ApplyState *st, ApplyRel *ar)
{
	TupleTableSlot *slot;

	Assert(st->pending == NULL || st->pending == ar);
	if (ar->bufslots == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);
		int			i;

		ar->bufslots = palloc(sizeof(TupleTableSlot *) * APPLY_MAX_BUFFERED);
		for (i = 0; i < APPLY_MAX_BUFFERED; i++)
			ar->bufslots[i] = table_slot_create(ar->rel, NULL);
		MemoryContextSwitchTo(old);
	}
	if (ar->rel->rd_att->constr)
		ExecConstraints(ar->rri, ar->newslot, st->estate);
	slot = ar->bufslots[ar->nbuffered++];
	ExecCopySlot(slot, ar->newslot);	/* materialized in the slot's memory */
	ar->bufbytes += GetMemoryChunkSpace(ExecFetchSlotHeapTuple(slot, false, NULL));
	st->pending = ar;
	if (ar->nbuffered >= APPLY_MAX_BUFFERED || ar->bufbytes >= APPLY_MAX_BUFFERED_BYTES)
		flush_inserts(st);
}

/*
 * Datamart columns no source column feeds (kept after a drop on the
 * source, or the DBA's own) take their default in an inserted row, as an
 * INSERT that leaves them out would.
 */
static void
fill_defaults(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot)
{
	int			k;

	for (k = 0; k < ar->ndefaults; k++)
	{
		int			a = ar->defatts[k] - 1;

		slot->tts_values[a] = ExecEvalExpr(ar->defexprs[k], GetPerTupleExprContext(st->estate),
										   &slot->tts_isnull[a]);
	}
}

static void
handle_insert(ApplyState *st, StringInfo s)
{
	LogicalRepTupleData newtup;
	LogicalRepRelId relid = logicalrep_read_insert(s, &newtup);
	ApplyRel   *ar;
	MemoryContext old;

	if (st->skipping || (ar = get_rel(st, relid)) == NULL)
		return;
	/* another table's run ends (before this row's datums exist) */
	if (st->pending != NULL && st->pending != ar)
		flush_inserts(st);

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	fill_slot(st, ar, ar->newslot, &newtup, NULL);
	fill_defaults(st, ar, ar->newslot);
	set_version(st, ar, ar->newslot);
	if (check_row(st, ar, ar->newslot, "insert", NULL))
	{
		/* a key held in quarantine comes back (deleted, inserted again) */
		if (ar->held && hash_get_num_entries(ar->held) > 0)
			ledger_supersede(st, ar, ledger_key(ar, ar->newslot), "applied", 0);
		if (ar->multi_ok)
			buffer_insert(st, ar);
		else
			ExecSimpleRelationInsert(ar->rri, st->estate, ar->newslot);
		st->stats->inserted++;
		ar->counts->inserted++;
	}
	else
		st->stats->quarantined++;
	MemoryContextSwitchTo(old);
	if (ar->multi_ok)
	{
		/* nothing written yet: no command to count */
		ExecClearTuple(ar->newslot);
		ResetPerTupleExprContext(st->estate);
		st->cur_rel = NULL;
	}
	else
		end_change(st, ar);
}

static void
handle_update(ApplyState *st, StringInfo s)
{
	LogicalRepTupleData oldtup;
	LogicalRepTupleData newtup;
	bool		has_oldtup;
	LogicalRepRelId relid = logicalrep_read_update(s, &has_oldtup, &oldtup, &newtup);
	ApplyRel   *ar;
	MemoryContext old;

	if (st->skipping || (ar = get_rel(st, relid)) == NULL)
		return;

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	fill_slot(st, ar, ar->searchslot, has_oldtup ? &oldtup : &newtup, NULL);
	if (find_row(st, ar))
	{
		fill_slot(st, ar, ar->newslot, &newtup, ar->localslot);
		set_version(st, ar, ar->newslot);
		if (check_row(st, ar, ar->newslot, "update", ar->searchslot))
		{
			/* the key's quarantined states are out of date now */
			if (ar->held && hash_get_num_entries(ar->held) > 0)
			{
				char	   *newkey = ledger_key(ar, ar->newslot);
				char	   *oldkey = ledger_key(ar, ar->searchslot);

				ledger_supersede(st, ar, newkey, "applied", 0);
				if (strcmp(oldkey, newkey) != 0)
					ledger_supersede(st, ar, oldkey, "applied", 0);
			}
			save_history(st, ar, ar->localslot);
			EvalPlanQualSetSlot(&ar->epqstate, ar->localslot);
			ExecSimpleRelationUpdate(ar->rri, st->estate, &ar->epqstate,
									 ar->localslot, ar->newslot);
			st->stats->updated++;
			ar->counts->updated++;
		}
		else
		{
			st->stats->quarantined++;

			/*
			 * The new row is held; the old one stays, unless the update
			 * moved its key: the source has no row under the old key any
			 * more, so neither may the datamart.
			 */
			if (strcmp(ledger_key(ar, ar->searchslot), ledger_key(ar, ar->newslot)) != 0)
			{
				save_history(st, ar, ar->localslot);
				EvalPlanQualSetSlot(&ar->epqstate, ar->localslot);
				ExecSimpleRelationDelete(ar->rri, st->estate, &ar->epqstate, ar->localslot);
				st->stats->deleted++;
				ar->counts->deleted++;
			}
		}
	}
	else
	{
		char	   *oldkey = ar->held ? ledger_key(ar, ar->searchslot) : NULL;
		int64		qid = oldkey ? ledger_find(ar, oldkey) : 0;

		if (qid != 0)
		{
			/*
			 * The datamart lacks the row because its latest state is held
			 * in quarantine: this update stands for it, checked again, and
			 * is inserted if it passes (the documented release by the
			 * source).  Columns the source did not send (unchanged TOAST)
			 * come from the held row.
			 */
			TupleTableSlot *base = NULL;
			int			i;

			for (i = 0; i < newtup.ncols; i++)
				if (newtup.colstatus[i] == LOGICALREP_COLUMN_UNCHANGED)
					base = ledger_held_row(st, ar, qid);
			fill_slot(st, ar, ar->newslot, &newtup, base);
			set_version(st, ar, ar->newslot);
			if (check_row(st, ar, ar->newslot, "update", ar->searchslot))
			{
				char	   *newkey = ledger_key(ar, ar->newslot);

				ledger_supersede(st, ar, oldkey, "applied", 0);
				if (strcmp(oldkey, newkey) != 0)
					ledger_supersede(st, ar, newkey, "applied", 0);
				ExecSimpleRelationInsert(ar->rri, st->estate, ar->newslot);
				st->stats->updated++;
				ar->counts->updated++;
			}
			else
				st->stats->quarantined++;
		}
		else
			apply_missing_row(st, ar, "update");
	}
	MemoryContextSwitchTo(old);
	end_change(st, ar);
}

static void
handle_delete(ApplyState *st, StringInfo s)
{
	LogicalRepTupleData oldtup;
	LogicalRepRelId relid = logicalrep_read_delete(s, &oldtup);
	ApplyRel   *ar;
	MemoryContext old;

	if (st->skipping || (ar = get_rel(st, relid)) == NULL)
		return;

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	fill_slot(st, ar, ar->searchslot, &oldtup, NULL);
	if (find_row(st, ar))
	{
		if (ar->held && hash_get_num_entries(ar->held) > 0)
			ledger_supersede(st, ar, ledger_key(ar, ar->searchslot), "deleted", 0);
		save_history(st, ar, ar->localslot);
		EvalPlanQualSetSlot(&ar->epqstate, ar->localslot);
		ExecSimpleRelationDelete(ar->rri, st->estate, &ar->epqstate, ar->localslot);
		st->stats->deleted++;
		ar->counts->deleted++;
	}
	else
	{
		char	   *key = ar->held ? ledger_key(ar, ar->searchslot) : NULL;

		/* held in quarantine (or discarded): the delete ends its story */
		if (key != NULL && ledger_find(ar, key) != 0)
			ledger_supersede(st, ar, key, "deleted", 0);
		else
			apply_missing_row(st, ar, "delete");
	}
	MemoryContextSwitchTo(old);
	end_change(st, ar);
}

static void
handle_truncate(ApplyState *st, StringInfo s)
{
	bool		cascade;
	bool		restart_seqs;
	List	   *remote = logicalrep_read_truncate(s, &cascade, &restart_seqs);
	List	   *rels = NIL;
	List	   *relids = NIL;
	List	   *relids_logged = NIL;
	ListCell   *lc;

	if (st->skipping)
		return;

	foreach(lc, remote)
	{
		LogicalRepRelId relid = lfirst_oid(lc);
		ApplyRel   *ar = get_rel(st, relid);

		if (ar == NULL)
			continue;
		rels = lappend(rels, ar->rel);
		relids = lappend_oid(relids, RelationGetRelid(ar->rel));
		if (RelationIsLogicallyLogged(ar->rel))
			relids_logged = lappend_oid(relids_logged, RelationGetRelid(ar->rel));
	}
	st->cur_rel = NULL;
	if (rels == NIL)
		return;

	/*
	 * ExecuteTruncateGuts wants AccessExclusiveLock held: TRUNCATE and
	 * native apply take it before anything else.  Without it, our first
	 * lock conflicting with an autovacuum's would be the SHARE lock of the
	 * index rebuild, asked for after our transaction has updated the table's
	 * pg_class row; the autovacuum, at its end, waits for us to update that
	 * row in place, and we wait for its lock: a deadlock.
	 */
	foreach(lc, relids)
		LockRelationOid(lfirst_oid(lc), AccessExclusiveLock);

	/* versions: every current row is superseded by the truncation */
	foreach(lc, remote)
	{
		ApplyRel   *ar = hash_search(st->rels, &lfirst_oid(lc), HASH_FIND, NULL);

		if (ar && ar->mapped && ar->histrel)
		{
			StringInfoData cols;
			StringInfoData vals;
			TupleDesc	hdesc = RelationGetDescr(ar->histrel);
			int			i;

			initStringInfo(&cols);
			initStringInfo(&vals);
			for (i = 0; i < hdesc->natts; i++)
			{
				Form_pg_attribute ha = TupleDescAttr(hdesc, i);

				if (ha->attisdropped)
					continue;
				appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", quote_identifier(NameStr(ha->attname)));
				if (ar->histmap[i] == -1)
					appendStringInfo(&vals, "%s" INT64_FORMAT, vals.len ? ", " : "", st->pipe->version);
				else
					appendStringInfo(&vals, "%s%s", vals.len ? ", " : "", quote_identifier(NameStr(ha->attname)));
			}
			if (SPI_execute(psprintf("INSERT INTO %s.%s (%s) SELECT %s FROM %s.%s",
									 quote_identifier(get_namespace_name(RelationGetNamespace(ar->histrel))),
									 quote_identifier(RelationGetRelationName(ar->histrel)), cols.data, vals.data,
									 quote_identifier(ar->table->target_schema),
									 quote_identifier(ar->table->target_table)),
							false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not keep the truncated rows' history");
		}
	}

	/*
	 * Truncation rebuilds the indexes, which must not be open: close them
	 * around it.  Sequences of the datamart are its own: never restart them.
	 */
	foreach(lc, remote)
	{
		ApplyRel   *ar = hash_search(st->rels, &lfirst_oid(lc), HASH_FIND, NULL);

		if (ar && ar->mapped)
		{
			end_key_lookups(ar);
			ExecCloseIndices(ar->rri);
		}
	}
	ExecuteTruncateGuts(rels, relids, relids_logged, DROP_RESTRICT, false);
	CommandCounterIncrement();
	foreach(lc, remote)
	{
		ApplyRel   *ar = hash_search(st->rels, &lfirst_oid(lc), HASH_FIND, NULL);

		/*
		 * The index arrays must live as long as the relation, not in the
		 * per-message context we run in.
		 */
		if (ar && ar->mapped)
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			ExecOpenIndices(ar->rri, false);
			MemoryContextSwitchTo(old);
			init_key_lookups(st, ar);
		}
	}
	st->stats->truncated += list_length(rels);
	foreach(lc, remote)
	{
		ApplyRel   *ar = hash_search(st->rels, &lfirst_oid(lc), HASH_FIND, NULL);

		if (ar && ar->mapped)
		{
			ar->counts->truncated++;
			ledger_truncated(st, ar);
		}
	}
}

static void
apply_dispatch(ApplyState *st, StringInfo s)
{
	LogicalRepMsgType action = pq_getmsgbyte(s);

	/* buffered inserts go in before anything that could see them */
	if (action != LOGICAL_REP_MSG_INSERT)
		flush_inserts(st);
	st->action = action;
	switch (action)
	{
		case LOGICAL_REP_MSG_BEGIN:
			logicalrep_read_begin(s, &st->begin);
			st->in_xact = true;
			st->skipping = (st->begin.final_lsn < st->start_lsn);
			if (st->skipping)
				st->stats->skipped_transactions++;
			else if (TransactionIdIsValid(st->pipe->skip_xid) &&
					 st->begin.xid == st->pipe->skip_xid)
			{
				/* sluice.resume(pipeline, skip_xid): skipped once, recorded */
				st->skipping = true;
				st->stats->skipped_xid = st->begin.xid;
			}
			break;
		case LOGICAL_REP_MSG_COMMIT:
			{
				LogicalRepCommitData commit;

				logicalrep_read_commit(s, &commit);
				if (!st->skipping)
				{
					st->stats->transactions++;
					st->stats->last_end_lsn = commit.end_lsn;
					st->stats->last_commit_time = commit.committime;
				}
				st->in_xact = false;
				st->skipping = false;
			}
			break;
		case LOGICAL_REP_MSG_RELATION:
			handle_relation(st, s);
			break;
		case LOGICAL_REP_MSG_INSERT:
			handle_insert(st, s);
			break;
		case LOGICAL_REP_MSG_UPDATE:
			handle_update(st, s);
			break;
		case LOGICAL_REP_MSG_DELETE:
			handle_delete(st, s);
			break;
		case LOGICAL_REP_MSG_TRUNCATE:
			handle_truncate(st, s);
			break;
		case LOGICAL_REP_MSG_TYPE:
			{
				/* types are mapped by name at pipeline creation; kept for names */
				LogicalRepTyp typ;
				MemoryContext old = MemoryContextSwitchTo(st->cxt);
				RemoteType *rt = palloc(sizeof(RemoteType));

				logicalrep_read_typ(s, &typ);
				rt->remoteid = typ.remoteid;
				rt->name = pstrdup(quote_qualified_identifier(typ.nspname, typ.typname));
				st->remote_types = lappend(st->remote_types, rt);
				MemoryContextSwitchTo(old);
			}
			break;
		case LOGICAL_REP_MSG_ORIGIN:
		case LOGICAL_REP_MSG_MESSAGE:
			/* types are mapped by name at pipeline creation; nothing to do */
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg_internal("unexpected pgoutput message type \"%c\"", action)));
	}
	st->action = 0;
}

/* ---------- binary COPY framing of the peek query ---------- */

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
 */
static char *
peek_sql(SluicePipeline *pipe, const char *slot, XLogRecPtr upto,
		 int64 max_messages, bool binary)
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
	return psprintf("COPY (SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes("
					"%s, %s, %s, 'proto_version', '1', 'publication_names', %s%s)) "
					"TO STDOUT (FORMAT binary)",
					quote_literal_cstr(slot), quote_literal_cstr(lsnbuf), nchanges,
					quote_literal_cstr(pubs), binary ? ", 'binary', 'true'" : "");
}

/*
 * Stream the slot's changes up to upto_lsn and apply them.  The caller has
 * set up the origin session and holds the pipeline lock.  With sc2, the
 * changes come in two parts split at split_lsn, the second decoded on sc2
 * at the same time as the first (see refresh_inner).
 */
void
apply_stream(SluicePipeline *pipe, SluiceConn *sc, SluiceConn *sc2,
			 XLogRecPtr start_lsn, XLogRecPtr split_lsn, XLogRecPtr upto_lsn,
			 int64 max_messages, int max_ms, ApplyStats *stats)
{
	TimestampTz started = GetCurrentTimestamp();
	ApplyState	st;
	HASHCTL		ctl;
	SluiceConn *cur;
	bool		binary;
	bool		header_done = false;
	ErrorContextCallback errcb;
	HASH_SEQ_STATUS hs;
	ApplyRel   *ar;

	/*
	 * Binary transfer: when every column's binary form is the same on both
	 * sides (decided at creation), and text receive functions need no
	 * conversion (they convert from the session's client_encoding).
	 */
	binary = pipe->binary && pg_get_client_encoding() == GetDatabaseEncoding();

	memset(&st, 0, sizeof(st));
	st.binary = binary;
	st.pipe = pipe;
	st.stats = stats;
	st.start_lsn = start_lsn;
	st.cur_att = -1;
	st.cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice apply",
								   ALLOCSET_DEFAULT_SIZES);
	st.msgcxt = AllocSetContextCreate(st.cxt, "pg_sluice apply message",
									  ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(ApplyRel);
	ctl.hcxt = st.cxt;
	st.rels = hash_create("pg_sluice relations", 32, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	st.estate = CreateExecutorState();
	AfterTriggerBeginQuery();

	/*
	 * Two parts (see refresh_inner): the second connection copies the slot
	 * into a temporary one, moves the copy to split_lsn and decodes from
	 * there to upto_lsn, while this one decodes up to split_lsn.  Each part
	 * holds the transactions whose commit record starts on its side of
	 * split_lsn.  Sent first: the source starts on it at once.
	 */
	if (sc2 != NULL)
	{
		char	   *tmp = psprintf("sluice_split_%d_%lx", MyProcPid,
								   (unsigned long) GetCurrentTimestamp());
		char	   *split = psprintf("%X/%X", LSN_FORMAT_ARGS(split_lsn));

		transport_send(sc2,
					   psprintf("SET logical_decoding_work_mem = '%dkB'; "
								"SELECT 1 FROM pg_catalog.pg_copy_logical_replication_slot(%s, %s, true); "
								"SELECT 1 FROM pg_catalog.pg_replication_slot_advance(%s, %s); %s",
								sluice_source_decoding_work_mem,
								quote_literal_cstr(pipe->slot_name), quote_literal_cstr(tmp),
								quote_literal_cstr(tmp), quote_literal_cstr(split),
								peek_sql(pipe, tmp, upto_lsn, 0, binary)),
					   "decode the second part of the slot's changes");
		transport_copy_start(sc, peek_sql(pipe, pipe->slot_name, split_lsn, 0, binary),
							 "decode the slot's changes");
	}
	else
		transport_copy_start(sc, peek_sql(pipe, pipe->slot_name, upto_lsn, max_messages, binary),
							 "decode the slot's changes");
	cur = sc;

	errcb.callback = apply_error_callback;
	errcb.arg = &st;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (;;)
	{
		char	   *buf;
		int			len = transport_copy_next(cur, &buf, "send the slot's changes");
		const char *p;
		const char *end;
		int16		nfields;
		StringInfoData msg;

		if (len < 0 && cur == sc && sc2 != NULL)
		{
			/* first part done: on to the second */
			char	   *err = transport_copy_await(sc2, "decode the second part of the slot's changes");

			ereport(DEBUG1,
					(errmsg_internal("pipeline \"%s\": first part done after " INT64_FORMAT " messages",
									 pipe->name, stats->messages)));
			if (err == NULL)
				cur = sc2;
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
				st.start_lsn = Max(st.start_lsn, split_lsn);
				transport_copy_start(sc, peek_sql(pipe, pipe->slot_name, upto_lsn, 0, binary),
									 "decode the slot's changes");
			}
			sc2 = NULL;
			header_done = false;
			continue;
		}
		if (len < 0)
			break;
		p = buf;
		end = buf + len;
		if (!header_done)
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
			header_done = true;
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
		msg.len = read_int32(&p, end);
		if (msg.len < 1 || end - p < msg.len)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg_internal("truncated pgoutput message from source")));
		msg.data = (char *) p;
		msg.maxlen = msg.len;
		msg.cursor = 0;

		{
			MemoryContext old = MemoryContextSwitchTo(st.msgcxt);

			apply_dispatch(&st, &msg);
			MemoryContextSwitchTo(old);
			MemoryContextReset(st.msgcxt);
		}
		stats->messages++;
		CHECK_FOR_INTERRUPTS();

		/* a batch past its time ends at a transaction boundary */
		if (max_ms > 0 && !st.in_xact && msg.data[0] == LOGICAL_REP_MSG_COMMIT &&
			TimestampDifferenceExceeds(started, GetCurrentTimestamp(), max_ms))
		{
			stats->stopped_early = true;
			break;
		}
	}

	flush_inserts(&st);
	error_context_stack = errcb.previous;

	if (st.in_xact)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("source ended the change stream in the middle of transaction %u",
						st.begin.xid),
				 errhint("Nothing was applied; run the refresh again.")));

	/*
	 * After-trigger events (foreign keys and user AFTER triggers of the
	 * datamart tables) fire here, while our relations are still open, as in
	 * core's finish_edata.  The trigger machinery opens a result relation of
	 * its own for each table it fires on (es_trig_target_relations):
	 * ExecCloseResultRelations closes those, or each would be reported as a
	 * relcache reference leak at commit.
	 */
	st.action = 0;
	if (st.deferred_keys != NIL)
	{
		/* the deferred keys' checks fire here: name the pipeline */
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;
	}
	AfterTriggerEndQuery(st.estate);
	if (st.deferred_keys != NIL)
		error_context_stack = errcb.previous;
	hash_seq_init(&hs, st.rels);
	while ((ar = hash_seq_search(&hs)) != NULL)
		close_rel(ar);
	ExecCloseResultRelations(st.estate);
	ExecResetTupleTable(st.estate->es_tupleTable, false);
	FreeExecutorState(st.estate);
	MemoryContextDelete(st.cxt);
}
