/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  Apply a batch: the pgoutput messages of a slot, dispatched to their
 *	  handlers and written to the datamart.
 *
 * NOTES
 *	  What this file owns.  One batch (apply_stream): its state (ApplyState:
 *	  the executor state, the relations met, the memory contexts), the
 *	  dispatch of each pgoutput message (apply_dispatch) to its handler
 *	  (BEGIN, COMMIT, RELATION, TYPE, INSERT, UPDATE, DELETE, TRUNCATE), the
 *	  insert runs, and the error context that says where an error happened.
 *	  The handlers decide what a change does; the family does the rest:
 *	  relation.c maps a source relation to its datamart table and finds rows,
 *	  contract.c judges a RELATION message against the table's contract,
 *	  quarantine.c checks rows against expectations and keeps the quarantine
 *	  ledger, version.c keeps superseded rows.  The structs they share are in
 *	  apply_internal.h.
 *
 *	  What it never does.  It never writes SQL for the source nor reads its
 *	  bytes: stream.c delivers one pgoutput message at a time and apply parses
 *	  it with the server's own logicalrep_read_* functions
 *	  (replication/logicalproto.h).  It never commits, and never touches the
 *	  slot or the catalog's run rows: refresh.c owns the transaction, the
 *	  replication origin and the run.
 *
 *	  Streamed transactions (the walsender, and a whole refresh over the SQL
 *	  interface: stream.c).  Between STREAM START
 *	  and STREAM STOP the changes of a transaction still in progress on the
 *	  source are spooled (streamfile.c), not applied; STREAM ABORT drops them (or
 *	  a subtransaction's part); STREAM COMMIT applies them then, as one
 *	  source transaction of the batch (apply_spooled).  A walsender announces
 *	  a relation once per connection: its RELATION message is kept by the
 *	  stream and maps the relation again in later batches
 *	  (apply_recall_relation).
 *
 *	  Exactly once.  Source transactions whose commit record starts before the
 *	  origin's position were applied by an earlier batch whose slot advance
 *	  did not happen yet (a crash between the two): they are skipped, as is
 *	  the one transaction sluice.resume(skip_xid) names.
 *
 *	  Apply.  Relations are opened once per batch, with their indexes and
 *	  input functions; rows go through the executor's replication helpers
 *	  (ExecSimpleRelationInsert/Update/Delete), so constraints, indexes and
 *	  user triggers behave as for any write.  Updates and deletes find the row
 *	  by the datamart table's key (relation.c).  Unchanged TOASTed values ('u'
 *	  columns) keep the datamart's current value.  Constraints are immediate
 *	  for the batch; deferred keys and after-triggers fire when the batch's
 *	  one query ends, before the relations close.
 *
 *	  Sources without a change stream.  An HTTP pipeline (httpapply.c) has
 *	  no pgoutput messages: it opens relations with relmap_open and writes
 *	  each row with apply_upsert (an update by key when the row differs,
 *	  nothing when it is the same, else an insert), between apply_begin and
 *	  apply_finish, through the same insert and update bodies.
 *
 *	  Insert runs.  Consecutive inserts into one table are written as COPY
 *	  writes them: buffered (APPLY_MAX_BUFFERED rows or
 *	  APPLY_MAX_BUFFERED_BYTES), then one table_multi_insert, the indexes row
 *	  by row.  Any other message flushes the buffer first, so nothing can see
 *	  a table with rows missing.  Tables with triggers or stored generated
 *	  columns take the row-by-row path, where the executor fires and computes
 *	  them.
 *
 *	  Memory.  Every message is parsed in a context reset after it, and its
 *	  datums live in the executor's per-tuple context, also reset per message:
 *	  the backend's memory does not grow with the size of a source transaction
 *	  (a 1,000,000-row transaction streams through row by row).
 *
 *	  Rejected.  Applying through SQL statements (SPI): a parse and plan per
 *	  change, for the same constraint and trigger behaviour.  A
 *	  function-pointer table of apply strategies, as pglogical has: there is
 *	  one strategy.  One file for the whole apply, as until 0.1: at 3,000
 *	  lines a reader of a handler had to wade through drift policy, ledger SQL
 *	  and COPY framing, and nothing kept apply from writing source SQL.
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
#include "catalog/index.h"
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
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
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
#include "utils/wait_event.h"

#include "pg_sluice.h"
#include "apply_internal.h"

static void apply_dispatch(ApplyState *st, StringInfo s);
static void apply_error_callback(void *arg);

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
 * RELATION: (re)map a source relation to its target table through the
 * table's contract (relation.c).
 */
static void
handle_relation(ApplyState *st, StringInfo s)
{
	int32	   *typmods;
	LogicalRepRelation *lr;

	/*
	 * A walsender announces a relation once per connection, not once per
	 * batch as the SQL interface does: the stream keeps it for the batches
	 * to come (apply_recall_relation).
	 */
	if (st->ws != NULL)
		walstream_remember_relation(st->ws, s->data + s->cursor, s->len - s->cursor);
	typmods = read_rel_typmods(s);
	lr = logicalrep_read_rel(s);
	relmap_open(st, lr, typmods);
}

/*
 * A change for a relation this batch has not met: over the walsender, its
 * RELATION message came in an earlier batch of the same connection; map it
 * again from that message (as the contract stands now).  False when there
 * is none.
 */
bool
apply_recall_relation(ApplyState *st, LogicalRepRelId relid)
{
	StringInfoData m;
	MemoryContext old;

	if (st->ws == NULL || !walstream_recall_relation(st->ws, relid, &m))
		return false;
	old = MemoryContextSwitchTo(st->cxt);
	{
		int32	   *typmods = read_rel_typmods(&m);
		LogicalRepRelation *lr = logicalrep_read_rel(&m);
		ApplyRel   *save_rel = st->cur_rel;
		char		save_action = st->action;

		st->action = LOGICAL_REP_MSG_RELATION;
		relmap_open(st, lr, typmods);
		st->cur_rel = save_rel;
		st->action = save_action;
	}
	MemoryContextSwitchTo(old);
	return true;
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
	/*
	 * Slots are made as the run first needs them: a batch of a few rows
	 * (a continuous worker's, under light load) makes a few, where making
	 * all APPLY_MAX_BUFFERED up front cost more than the rows.
	 */
	if (ar->bufslots == NULL)
		ar->bufslots = MemoryContextAllocZero(st->cxt, sizeof(TupleTableSlot *) * APPLY_MAX_BUFFERED);
	if (ar->bufslots[ar->nbuffered] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		ar->bufslots[ar->nbuffered] = table_slot_create(ar->rel, NULL);
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

/* Delete the row whose key is in ar->searchslot. */
static void
delete_row(ApplyState *st, ApplyRel *ar)
{
	if (relmap_find_row(st, ar))
	{
		if (ar->held && hash_get_num_entries(ar->held) > 0)
			quarantine_supersede(st, ar, quarantine_key(ar, ar->searchslot), "deleted", 0);
		if (ar->models)
			model_note_row(ar->models, ar->localslot);
		version_save(st, ar, ar->localslot);
		EvalPlanQualSetSlot(&ar->epqstate, ar->localslot);
		ExecSimpleRelationDelete(ar->rri, st->estate, &ar->epqstate, ar->localslot);
		st->stats->deleted++;
		ar->counts->deleted++;
	}
	else
	{
		char	   *key = ar->held ? quarantine_key(ar, ar->searchslot) : NULL;

		/* held in quarantine (or discarded): the delete ends its story */
		if (key != NULL && quarantine_find(ar, key) != 0)
			quarantine_supersede(st, ar, key, "deleted", 0);
		else
			quarantine_missing_row(st, ar, "delete");
	}
}

/*
 * An update of a table being copied in chunks (snapshot.c), when its old or
 * new key is one no chunk has copied yet.  Returns false when both keys are
 * copied: the usual path applies it.  Else: neither key copied, nothing to
 * do; only the old one, the row leaves the datamart (its new key's chunk
 * copies it); only the new one, the row is inserted.
 */
static bool
update_copying(ApplyState *st, ApplyRel *ar, LogicalRepTupleData *oldtup,
			   LogicalRepTupleData *newtup)
{
	bool		newkeep;
	bool		oldkeep;
	int			i;

	/* the search slot leaves unchanged TOASTed values NULL: keys only */
	relmap_fill_slot(st, ar, ar->searchslot, newtup, NULL);
	newkeep = snapshot_keep(st, ar, ar->searchslot);
	ExecClearTuple(ar->searchslot);
	relmap_fill_slot(st, ar, ar->searchslot, oldtup ? oldtup : newtup, NULL);
	oldkeep = snapshot_keep(st, ar, ar->searchslot);
	if (oldkeep && newkeep)
	{
		ExecClearTuple(ar->searchslot);
		return false;
	}
	if (oldkeep)
		delete_row(st, ar);
	else if (newkeep)
	{
		for (i = 0; i < newtup->ncols; i++)
			if (newtup->colstatus[i] == LOGICALREP_COLUMN_UNCHANGED)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("an update moved a row of \"%s.%s\" from a key not copied yet to a copied one, without its TOASTed values",
								ar->nspname, ar->relname),
						 errdetail("The table is being copied in chunks; the source sent column \"%s\" as unchanged and the datamart has no row to take it from.",
								   ar->remote_attnames[i]),
						 errhint("Start the table's copy over with sluice.resnapshot(pipeline, table): the update is then skipped and a chunk copies the row.")));
		relmap_fill_slot(st, ar, ar->newslot, newtup, NULL);
		relmap_fill_defaults(st, ar, ar->newslot);
		version_stamp(st, ar, ar->newslot);
		if (quarantine_check_row(st, ar, ar->newslot, "insert", NULL))
		{
			if (ar->models)
				model_note_row(ar->models, ar->newslot);
			ExecSimpleRelationInsert(ar->rri, st->estate, ar->newslot);
			st->stats->inserted++;
			ar->counts->inserted++;
		}
		else
			st->stats->quarantined++;
	}
	return true;
}

/*
 * Write an inserted row: checked, then buffered into an insert run when
 * buffered and the table allows it, else written at once.
 */
static void
insert_tuple(ApplyState *st, ApplyRel *ar, LogicalRepTupleData *newtup, bool buffered)
{
	MemoryContext old;
	bool		multi = buffered && ar->multi_ok;

	/* another table's run ends (before this row's datums exist) */
	if (st->pending != NULL && (st->pending != ar || !multi))
		flush_inserts(st);

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	relmap_fill_slot(st, ar, ar->newslot, newtup, NULL);
	if (ar->copyfilter != NULL && !snapshot_keep(st, ar, ar->newslot))
	{
		/* a key no chunk has copied yet: its chunk will */
		MemoryContextSwitchTo(old);
		ExecClearTuple(ar->newslot);
		ResetPerTupleExprContext(st->estate);
		st->cur_rel = NULL;
		return;
	}
	relmap_fill_defaults(st, ar, ar->newslot);
	version_stamp(st, ar, ar->newslot);
	if (quarantine_check_row(st, ar, ar->newslot, "insert", NULL))
	{
		/* a key held in quarantine comes back (deleted, inserted again) */
		if (ar->held && hash_get_num_entries(ar->held) > 0)
			quarantine_supersede(st, ar, quarantine_key(ar, ar->newslot), "applied", 0);
		if (ar->models)
			model_note_row(ar->models, ar->newslot);
		if (multi)
			buffer_insert(st, ar);
		else
			ExecSimpleRelationInsert(ar->rri, st->estate, ar->newslot);
		st->stats->inserted++;
		ar->counts->inserted++;
	}
	else
		st->stats->quarantined++;
	MemoryContextSwitchTo(old);
	if (multi)
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
handle_insert(ApplyState *st, StringInfo s)
{
	LogicalRepTupleData newtup;
	LogicalRepRelId relid = logicalrep_read_insert(s, &newtup);
	ApplyRel   *ar;

	if (st->skipping || (ar = relmap_get(st, relid)) == NULL)
		return;
	insert_tuple(st, ar, &newtup, true);
}

/*
 * Write the update of ar->localslot to ar->newslot, as
 * ExecSimpleRelationUpdate does, with two differences in the new row's
 * index entries (an update that is not HOT).
 *
 * They are inserted without the unique check when the index's columns keep
 * their values.  That check looks up the key's other entries and reads
 * their rows in the table, and an update that keeps the key cannot make it
 * twice: the only other entry is the old row's, which this update ends.  It
 * was a tenth of the apply of a 100,000-row UPDATE (bench scenario 2c).
 *
 * Only a batch's first UNCHANGED_HINT_MAX such updates of a table tell the
 * index that the entry is a new version of an unchanged key (index_insert's
 * indexUnchanged, which core's executor passes for every one).  With it, a
 * btree leaf page that fills first tries to delete the entries of versions
 * no snapshot can see any more (bottom-up deletion), reading their rows in
 * the table.  The versions a batch supersedes stay visible to others until
 * it commits, and in a batch updating many rows of a table the pages that
 * fill are full of just those: each try fails, and comes again each time
 * the page fills after deduplication made room.  In bench scenario 7 (the
 * newest 1% of 10,000,000 rows updated in one transaction, refreshed three
 * times in a row with a VACUUM between) the failed tries took 0.024, 0.069
 * and then 0.141 s of the datamart backend's CPU (perf), and the refreshes
 * took 0.49-0.67, 0.53-0.55 and 0.59-0.61 s against 0.51-0.56, 0.47-0.49
 * and 0.47-0.49 s without them (two alternating runs of each build); the
 * index came out 0.8% bigger after the three.  A worker's batches of fewer
 * updates keep the hint, and the versions that earlier batches left dead
 * are cleaned up as core's apply does; VACUUM cleans up after a big batch.
 * Test 091's first refresh crosses the limit.
 *
 * Tables with triggers, stored generated columns, partial, exclusion or
 * deferrable unique indexes, and partitions take ExecSimpleRelationUpdate
 * (relmap_open sets update_ok).
 */
#define UNCHANGED_HINT_MAX 1000

static void
write_update(ApplyState *st, ApplyRel *ar)
{
	TupleTableSlot *oldslot = ar->localslot;
	TupleTableSlot *slot = ar->newslot;
	ResultRelInfo *rri = ar->rri;
	bool		unchanged[INDEX_MAX_KEYS];
	bool		update_indexes;
	bool		hint;
	int			i;

	if (!ar->update_ok || rri->ri_NumIndices > INDEX_MAX_KEYS)
	{
		ExecSimpleRelationUpdate(rri, st->estate, &ar->epqstate, oldslot, slot);
		return;
	}
	CheckCmdReplicaIdentity(ar->rel, CMD_UPDATE);
	if (ar->rel->rd_att->constr)
		ExecConstraints(rri, slot, st->estate);

	/* before the update: the old row's values are read from its page */
	slot_getallattrs(oldslot);
	slot_getallattrs(slot);
	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *ii = rri->ri_IndexRelationInfo[i];
		int			k;

		unchanged[i] = ii->ii_Expressions == NIL;
		for (k = 0; unchanged[i] && k < ii->ii_NumIndexAttrs; k++)
		{
			int			a = ii->ii_IndexAttrNumbers[k] - 1;
			Form_pg_attribute att = TupleDescAttr(slot->tts_tupleDescriptor, a);

			if (oldslot->tts_isnull[a] != slot->tts_isnull[a] ||
				(!slot->tts_isnull[a] &&
				 !datumIsEqual(oldslot->tts_values[a], slot->tts_values[a],
							   att->attbyval, att->attlen)))
				unchanged[i] = false;
		}
	}

	simple_table_tuple_update(ar->rel, &oldslot->tts_tid, slot,
							  st->estate->es_snapshot, &update_indexes);
	if (!update_indexes)
		return;					/* a HOT update */
	hint = ar->hinted < UNCHANGED_HINT_MAX;
	if (hint)
		ar->hinted++;

	GetPerTupleExprContext(st->estate)->ecxt_scantuple = slot;
	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		Relation	idx = rri->ri_IndexRelationDescs[i];
		IndexInfo  *ii = rri->ri_IndexRelationInfo[i];
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		if (!ii->ii_ReadyForInserts)
			continue;
		FormIndexDatum(ii, slot, st->estate, values, isnull);
		index_insert(idx, values, isnull, &slot->tts_tid, ar->rel,
					 idx->rd_index->indisunique && !unchanged[i] ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 unchanged[i] && hint, ii);
	}
}

/* Write an updated row, found by oldtup's key (newtup's without oldtup). */
static void
update_tuple(ApplyState *st, ApplyRel *ar, LogicalRepTupleData *oldtup,
			 LogicalRepTupleData *newtup)
{
	MemoryContext old;

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	if (ar->copyfilter != NULL && update_copying(st, ar, oldtup, newtup))
	{
		MemoryContextSwitchTo(old);
		end_change(st, ar);
		return;
	}
	relmap_fill_slot(st, ar, ar->searchslot, oldtup ? oldtup : newtup, NULL);
	if (relmap_find_row(st, ar))
	{
		relmap_fill_slot(st, ar, ar->newslot, newtup, ar->localslot);
		version_stamp(st, ar, ar->newslot);
		if (quarantine_check_row(st, ar, ar->newslot, "update", ar->searchslot))
		{
			/* the key's quarantined states are out of date now */
			if (ar->held && hash_get_num_entries(ar->held) > 0)
			{
				char	   *newkey = quarantine_key(ar, ar->newslot);
				char	   *oldkey = quarantine_key(ar, ar->searchslot);

				quarantine_supersede(st, ar, newkey, "applied", 0);
				if (strcmp(oldkey, newkey) != 0)
					quarantine_supersede(st, ar, oldkey, "applied", 0);
			}
			if (ar->models)
			{
				model_note_row(ar->models, ar->localslot);
				model_note_row(ar->models, ar->newslot);
			}
			version_save(st, ar, ar->localslot);
			EvalPlanQualSetSlot(&ar->epqstate, ar->localslot);
			write_update(st, ar);
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
			if (strcmp(quarantine_key(ar, ar->searchslot), quarantine_key(ar, ar->newslot)) != 0)
			{
				if (ar->models)
					model_note_row(ar->models, ar->localslot);
				version_save(st, ar, ar->localslot);
				EvalPlanQualSetSlot(&ar->epqstate, ar->localslot);
				ExecSimpleRelationDelete(ar->rri, st->estate, &ar->epqstate, ar->localslot);
				st->stats->deleted++;
				ar->counts->deleted++;
			}
		}
	}
	else
	{
		char	   *oldkey = ar->held ? quarantine_key(ar, ar->searchslot) : NULL;
		int64		qid = oldkey ? quarantine_find(ar, oldkey) : 0;

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

			for (i = 0; i < newtup->ncols; i++)
				if (newtup->colstatus[i] == LOGICALREP_COLUMN_UNCHANGED)
					base = quarantine_held_row(st, ar, qid);
			relmap_fill_slot(st, ar, ar->newslot, newtup, base);
			version_stamp(st, ar, ar->newslot);
			if (quarantine_check_row(st, ar, ar->newslot, "update", ar->searchslot))
			{
				char	   *newkey = quarantine_key(ar, ar->newslot);

				quarantine_supersede(st, ar, oldkey, "applied", 0);
				if (strcmp(oldkey, newkey) != 0)
					quarantine_supersede(st, ar, newkey, "applied", 0);
				if (ar->models)
					model_note_row(ar->models, ar->newslot);
				ExecSimpleRelationInsert(ar->rri, st->estate, ar->newslot);
				st->stats->updated++;
				ar->counts->updated++;
			}
			else
				st->stats->quarantined++;
		}
		else
			quarantine_missing_row(st, ar, "update");
	}
	MemoryContextSwitchTo(old);
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

	if (st->skipping || (ar = relmap_get(st, relid)) == NULL)
		return;
	update_tuple(st, ar, has_oldtup ? &oldtup : NULL, &newtup);
}

/*
 * A row by its key, from a source without a change stream (an HTTP API,
 * httpapply.c): an update when the datamart has the key and the row
 * differs, nothing when it is the same (an API sends unchanged rows again:
 * a re-pulled collection, overlapping pages), else an insert, written at
 * once (a later row of the same refresh may carry the key again).  Every
 * check of the insert and update handlers applies.  Returns false when the
 * row was the datamart's already.
 */
bool
apply_upsert(ApplyState *st, ApplyRel *ar, LogicalRepTupleData *newtup)
{
	MemoryContext old;
	bool		found;
	bool		same = false;

	flush_inserts(st);
	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	relmap_fill_slot(st, ar, ar->searchslot, newtup, NULL);
	found = relmap_find_row(st, ar);
	if (found)
	{
		TupleDesc	desc = RelationGetDescr(ar->rel);
		int			i;

		relmap_fill_slot(st, ar, ar->newslot, newtup, ar->localslot);
		slot_getallattrs(ar->localslot);
		same = true;
		for (i = 0; i < desc->natts && same; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped || att->attgenerated || i + 1 == ar->verattno)
				continue;
			if (ar->newslot->tts_isnull[i] != ar->localslot->tts_isnull[i])
				same = false;
			else if (!ar->newslot->tts_isnull[i])
				same = datum_image_eq(ar->newslot->tts_values[i], ar->localslot->tts_values[i],
									  att->attbyval, att->attlen);
		}
	}
	MemoryContextSwitchTo(old);
	ExecClearTuple(ar->newslot);
	ExecClearTuple(ar->searchslot);
	ExecClearTuple(ar->localslot);
	if (same)
	{
		ResetPerTupleExprContext(st->estate);
		return false;
	}
	if (found)
		update_tuple(st, ar, NULL, newtup);
	else
		insert_tuple(st, ar, newtup, false);
	return true;
}

static void
handle_delete(ApplyState *st, StringInfo s)
{
	LogicalRepTupleData oldtup;
	LogicalRepRelId relid = logicalrep_read_delete(s, &oldtup);
	ApplyRel   *ar;
	MemoryContext old;

	if (st->skipping || (ar = relmap_get(st, relid)) == NULL)
		return;

	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(st->estate));
	relmap_fill_slot(st, ar, ar->searchslot, &oldtup, NULL);
	if (ar->copyfilter == NULL || snapshot_keep(st, ar, ar->searchslot))
		delete_row(st, ar);
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
		ApplyRel   *ar = relmap_get(st, relid);

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

		if (ar && ar->mapped)
			version_truncated(st, ar);
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
			relmap_end_key_lookups(ar);
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
			relmap_init_key_lookups(st, ar);
		}
	}
	st->stats->truncated += list_length(rels);
	foreach(lc, remote)
	{
		ApplyRel   *ar = hash_search(st->rels, &lfirst_oid(lc), HASH_FIND, NULL);

		if (ar && ar->mapped)
		{
			ar->counts->truncated++;
			if (ar->models)
				model_note_truncate(ar->models);
			quarantine_truncated(st, ar);
			snapshot_truncated(st, ar);
		}
	}
}

/* A source transaction begins (st->begin is filled in). */
static void
begin_xact(ApplyState *st)
{
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
}

/* ... and commits. */
static void
end_xact(ApplyState *st, LogicalRepCommitData *commit)
{
	if (!st->skipping)
	{
		st->stats->transactions++;
		st->stats->last_end_lsn = commit->end_lsn;
		st->stats->last_commit_time = commit->committime;
	}
	st->in_xact = false;
	st->skipping = false;
}

/*
 * Inside a stream block (walsender transport, streamfile.c), the changes of the
 * transaction in progress carry its (sub)transaction's xid after the
 * action byte.
 */
static bool
is_streamed_change(char action)
{
	switch (action)
	{
		case LOGICAL_REP_MSG_INSERT:
		case LOGICAL_REP_MSG_UPDATE:
		case LOGICAL_REP_MSG_DELETE:
		case LOGICAL_REP_MSG_TRUNCATE:
		case LOGICAL_REP_MSG_RELATION:
		case LOGICAL_REP_MSG_TYPE:
		case LOGICAL_REP_MSG_MESSAGE:
			return true;
		default:
			return false;
	}
}

/*
 * STREAM COMMIT: the streamed transaction's spooled changes, applied now
 * as one source transaction, in the batch's local transaction (which
 * commits with the origin as always), one message at a time in a context
 * reset after each.
 *
 * A skipped transaction (sluice.resume(skip_xid), or one applied before)
 * still has its RELATION and TYPE messages read, as a skipped transaction
 * sent whole has: at STREAM COMMIT pgoutput counts the relations announced
 * inside the stream as sent, and announces them no more to this session (a
 * walsender's connection, a refresh's decoding call).  Dropped with the
 * skipped changes, the next transaction of the table failed on a change
 * "before its RELATION message", the skip staying for the next try: a
 * pipeline with no way forward.
 */
static void
apply_spooled(ApplyState *st, TransactionId xid, LogicalRepCommitData *commit)
{
	int64		n = 0;

	st->begin.final_lsn = commit->commit_lsn;
	st->begin.committime = commit->committime;
	st->begin.xid = xid;
	(void) streamfile_replay_begin(xid);
	if (st->spoolbuf.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		initStringInfo(&st->spoolbuf);
		MemoryContextSwitchTo(old);
	}

	/*
	 * Nothing of ours: live streams every big transaction, whatever it
	 * changed (pgoutput sends STREAM START before it looks at a change), so
	 * a load into a table of no pipeline arrives as empty blocks.  Sent
	 * whole, it would not have come at all (pgoutput leaves out an empty
	 * transaction): it is no transaction of the batch either, which would
	 * count it, run the set expectations and models for it, and a worker
	 * record a run and announce it.
	 */
	if (!streamfile_replay_next(xid, &st->spoolbuf))
	{
		streamfile_drop(xid);
		return;
	}
	begin_xact(st);
	do
	{
		char		action = st->spoolbuf.data[0];

		if (!st->skipping ||
			action == LOGICAL_REP_MSG_RELATION || action == LOGICAL_REP_MSG_TYPE)
		{
			MemoryContext old = MemoryContextSwitchTo(st->replaycxt);

			apply_dispatch(st, &st->spoolbuf);
			MemoryContextSwitchTo(old);
			MemoryContextReset(st->replaycxt);
		}
		if (++n % 1000 == 0)
		{
			CHECK_FOR_INTERRUPTS();
			/*
			 * Read from a local file, this loop waits on nothing that would
			 * notice the postmaster's death (a latch wait exits then): a
			 * datamart killed in the middle would leave this backend to
			 * apply and commit on its own, a crash that is not one.
			 */
			if (!PostmasterIsAlive())
				ereport(FATAL,
						(errcode(ERRCODE_ADMIN_SHUTDOWN),
						 errmsg("terminating the refresh of pipeline \"%s\": the postmaster died", st->pipe->name)));
			walstream_tick(st->ws);
		}
	} while (streamfile_replay_next(xid, &st->spoolbuf));
	flush_inserts(st);
	end_xact(st, commit);
	streamfile_drop(xid);
}

static void
apply_dispatch(ApplyState *st, StringInfo s)
{
	LogicalRepMsgType action = pq_getmsgbyte(s);

	/* a change of a transaction still in progress: spooled */
	if (streamfile_in_block() && is_streamed_change(action))
	{
		TransactionId subxid = pq_getmsgint(s, 4);

		streamfile_write(subxid, action, s->data + s->cursor, s->len - s->cursor);
		return;
	}
	/* a stepping lookup holds its pins only from one update or delete to the next */
	if (action != LOGICAL_REP_MSG_UPDATE && action != LOGICAL_REP_MSG_DELETE)
		relmap_step_release();
	/* buffered inserts go in before anything that could see them */
	if (action != LOGICAL_REP_MSG_INSERT)
		flush_inserts(st);
	st->action = action;
	switch (action)
	{
		case LOGICAL_REP_MSG_BEGIN:
			logicalrep_read_begin(s, &st->begin);
			begin_xact(st);
			break;
		case LOGICAL_REP_MSG_COMMIT:
			{
				LogicalRepCommitData commit;

				logicalrep_read_commit(s, &commit);
				end_xact(st, &commit);
			}
			break;
		case LOGICAL_REP_MSG_STREAM_START:
			{
				bool		first;
				TransactionId xid = logicalrep_read_stream_start(s, &first);

				streamfile_start(xid, first);
			}
			break;
		case LOGICAL_REP_MSG_STREAM_STOP:
			streamfile_stop();
			break;
		case LOGICAL_REP_MSG_STREAM_ABORT:
			{
				TransactionId xid;
				TransactionId subxid;

				logicalrep_read_stream_abort(s, &xid, &subxid);
				streamfile_abort(xid, subxid);
			}
			break;
		case LOGICAL_REP_MSG_STREAM_COMMIT:
			{
				LogicalRepCommitData commit;
				TransactionId xid = logicalrep_read_stream_commit(s, &commit);

				apply_spooled(st, xid, &commit);
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

/*
 * Whether pgoutput may send binary values for the pipeline: when every
 * column's binary form is the same on both sides (decided at creation),
 * and text receive functions need no conversion (they convert from the
 * session's client_encoding).
 */
bool
apply_use_binary(SluicePipeline *pipe)
{
	return pipe->binary && pg_get_client_encoding() == GetDatabaseEncoding();
}

/*
 * Set up a batch's state, its executor state and the query its
 * after-triggers belong to (apply_stream's, apply_walstream's, and
 * httpapply.c's for an HTTP pipeline), with the error context naming the
 * message being applied.
 */
void
apply_begin(ApplyState *st, SluicePipeline *pipe, XLogRecPtr start_lsn,
			ApplyStats *stats, ErrorContextCallback *errcb)
{
	HASHCTL		ctl;

	memset(st, 0, sizeof(*st));
	st->binary = apply_use_binary(pipe);
	st->pipe = pipe;
	st->stats = stats;
	st->start_lsn = start_lsn;
	st->cur_att = -1;
	st->cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice apply",
									ALLOCSET_DEFAULT_SIZES);
	st->msgcxt = AllocSetContextCreate(st->cxt, "pg_sluice apply message",
									   ALLOCSET_DEFAULT_SIZES);
	st->replaycxt = AllocSetContextCreate(st->cxt, "pg_sluice apply spooled message",
										  ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(LogicalRepRelId);
	ctl.entrysize = sizeof(ApplyRel);
	ctl.hcxt = st->cxt;
	st->rels = hash_create("pg_sluice relations", 32, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	st->estate = CreateExecutorState();
	AfterTriggerBeginQuery();

	errcb->callback = apply_error_callback;
	errcb->arg = st;
	errcb->previous = error_context_stack;
	error_context_stack = errcb;
}

/* One message, in a context reset after it. */
static void
apply_one(ApplyState *st, StringInfo msg)
{
	MemoryContext old = MemoryContextSwitchTo(st->msgcxt);

	apply_dispatch(st, msg);
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->msgcxt);
	st->stats->messages++;
	CHECK_FOR_INTERRUPTS();
}

/* End a batch: pending inserts, deferred checks and triggers, cleanup. */
void
apply_finish(ApplyState *st, ErrorContextCallback *errcb)
{
	HASH_SEQ_STATUS hs;
	ApplyRel   *ar;

	flush_inserts(st);
	error_context_stack = errcb->previous;

	if (st->in_xact)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("source ended the change stream in the middle of transaction %u",
						st->begin.xid),
				 errhint("Nothing was applied; run the refresh again.")));

	/*
	 * After-trigger events (foreign keys and user AFTER triggers of the
	 * datamart tables) fire here, while our relations are still open, as in
	 * core's finish_edata.  The trigger machinery opens a result relation of
	 * its own for each table it fires on (es_trig_target_relations):
	 * ExecCloseResultRelations closes those, or each would be reported as a
	 * relcache reference leak at commit.
	 */
	st->action = 0;
	if (st->deferred_keys != NIL)
	{
		/* the deferred keys' checks fire here: name the pipeline */
		errcb->previous = error_context_stack;
		error_context_stack = errcb;
	}
	AfterTriggerEndQuery(st->estate);
	if (st->deferred_keys != NIL)
		error_context_stack = errcb->previous;
	hash_seq_init(&hs, st->rels);
	while ((ar = hash_seq_search(&hs)) != NULL)
		relmap_close(ar);
	ExecCloseResultRelations(st->estate);
	ExecResetTupleTable(st->estate->es_tupleTable, false);
	FreeExecutorState(st->estate);
	MemoryContextDelete(st->cxt);
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
	SluiceStream stream;
	StringInfoData msg;
	ErrorContextCallback errcb;

	apply_begin(&st, pipe, start_lsn, stats, &errcb);
	memset(&stream, 0, sizeof(stream));
	PG_TRY();
	{
		/* stream_begin before the error context: it names no message */
		error_context_stack = errcb.previous;
		stream_begin(&stream, pipe, sc, sc2, split_lsn, upto_lsn, max_messages, st.binary, true);
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;

		while (stream_next(&stream, &msg))
		{
			/* a part decoded again from the slot: skip what came already */
			st.start_lsn = Max(st.start_lsn, stream.skip_before);
			apply_one(&st, &msg);

			/* a batch past its time ends at a transaction boundary */
			if (max_ms > 0 && !st.in_xact && !streamfile_in_block() &&
				(msg.data[0] == LOGICAL_REP_MSG_COMMIT ||
				 msg.data[0] == LOGICAL_REP_MSG_STREAM_COMMIT) &&
				TimestampDifferenceExceeds(started, GetCurrentTimestamp(), max_ms))
			{
				stats->stopped_early = true;
				break;
			}
		}
	}
	PG_FINALLY();
	{
		/* streamed transactions left without their commit go */
		stream_end(&stream);
	}
	PG_END_TRY();
	apply_finish(&st, &errcb);
}

/*
 * Apply what the walsender sends (walstream.c) until it has nothing more
 * for now, or the batch reached max_messages or max_ms, at a transaction
 * boundary outside any stream block (stats->stopped_early: more is
 * waiting).  Streamed transactions are spooled and applied at their
 * STREAM COMMIT (streamfile.c).  The caller has set up the origin session and
 * holds the pipeline lock.
 */
void
apply_walstream(SluicePipeline *pipe, WalStream *ws, XLogRecPtr start_lsn,
				int64 max_messages, int max_ms, ApplyStats *stats)
{
	TimestampTz started = GetCurrentTimestamp();
	ApplyState	st;
	StringInfoData msg;
	ErrorContextCallback errcb;

	apply_begin(&st, pipe, start_lsn, stats, &errcb);
	st.ws = ws;
	if (st.binary != ws->binary)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" changed its transfer format while streaming", pipe->name),
				 errdetail("The stream was started with binary transfer %s.", ws->binary ? "on" : "off"),
				 errhint("The worker starts a new stream after a backoff; nothing was applied.")));
	for (;;)
	{
		bool		boundary = !st.in_xact && !streamfile_in_block();

		/* mid-transaction, wait for the rest; at a boundary, only take */
		if (!walstream_next(ws, &msg, !boundary))
			break;
		apply_one(&st, &msg);
		if (!st.in_xact && !streamfile_in_block() &&
			((max_messages > 0 && stats->messages >= max_messages) ||
			 (max_ms > 0 && TimestampDifferenceExceeds(started, GetCurrentTimestamp(), max_ms))))
		{
			stats->stopped_early = true;
			break;
		}
	}
	apply_finish(&st, &errcb);
}

/*
 * A refresh over the walsender (refresh.c): apply everything the walsender
 * sends until it has decoded past upto_lsn, ending at a transaction
 * boundary outside any stream block.  Transactions are sent in commit
 * order and the walsender's position (ws->received, from its keepalives and
 * messages) only passes upto_lsn once every transaction that committed
 * before it was sent, so at that boundary the datamart has all of them
 * (and perhaps a few that committed later, whole).  A streamed transaction
 * still open at the end stays spooled and is dropped with the stream: the
 * next refresh gets it again.
 */
void
apply_walstream_upto(SluicePipeline *pipe, WalStream *ws, XLogRecPtr start_lsn,
					 XLogRecPtr upto_lsn, ApplyStats *stats)
{
	ApplyState	st;
	StringInfoData msg;
	ErrorContextCallback errcb;

	apply_begin(&st, pipe, start_lsn, stats, &errcb);
	st.ws = ws;
	for (;;)
	{
		bool		boundary = !st.in_xact && !streamfile_in_block();

		if (boundary && ws->received >= upto_lsn)
			break;
		if (!walstream_next(ws, &msg, false))
		{
			/* at a boundary with nothing to read: where is the walsender? */
			if (boundary)
				walstream_ask_position(ws);
			walstream_await(ws, boundary ? 10 : 10000);
			continue;
		}
		apply_one(&st, &msg);
	}
	apply_finish(&st, &errcb);
}
