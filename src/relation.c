/*-------------------------------------------------------------------------
 *
 * relation.c
 *	  A source relation mapped to its datamart table: the table opened for
 *	  the batch, tuples filled from pgoutput, rows found by key.
 *
 * NOTES
 *	  What this file owns.  The life of an ApplyRel.  relmap_open, at a
 *	  RELATION message, takes the contract's verdict (contract_check: which
 *	  datamart column each source column feeds), lets snapshot.c build the
 *	  key of a table copied in chunks from empty if the batch may need it
 *	  (the lazy key: before the table is opened, so that nothing below
 *	  caches it without its index), opens the target for the
 *	  batch with RowExclusiveLock, checks the owner may write it, and prepares
 *	  everything a row needs: the column map, input and receive functions,
 *	  conversions for source columns whose type changed but still fits,
 *	  defaults for columns no source column feeds, the key index and its
 *	  lookups (deferred keys included), the slots; then version.c and
 *	  quarantine.c set up their part.  relmap_fill_slot turns a pgoutput tuple
 *	  into a slot (text, binary and unchanged columns); relmap_find_row finds
 *	  the datamart row a change is about; relmap_close undoes relmap_open.
 *
 *	  What it never does.  It never decides whether a source column may feed a
 *	  column (contract.c does, before anything here runs), and never writes a
 *	  row (apply.c and version.c do).
 *
 *	  Key lookups.  RelationFindReplTupleByIndex, which native apply uses,
 *	  looks up the key's operators and begins and ends an index scan for every
 *	  row, and locks the row it finds (a WAL record per row); for a
 *	  100,000-row UPDATE on the source that was a third of the apply.  Here
 *	  the scan keys are built once per relation and one index scan stays open
 *	  for the batch, rescanned for each row, with a dirty snapshot as core's.
 *	  Tables without a usable btree key fall back to
 *	  RelationFindReplTupleByIndex or, without any key,
 *	  RelationFindReplTupleSeq.
 *
 *	  Names.  The exported functions are prefixed relmap_: relation_open and
 *	  relation_close are the backend's, and a global symbol of this library
 *	  with a backend function's name would be bound to the backend's.
 *
 *	  Rejected.  Core's logicalrep_rel_open and its relation map: they map by
 *	  name and live across transactions, kept valid by invalidation callbacks
 *	  of a subscription.  Here names go through the contract (renamed and
 *	  left-out columns, type changes) and a mapping lives for one batch, whose
 *	  lock on the target keeps it valid, so nothing needs invalidating.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/relation.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
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
#include "apply_internal.h"

static SluiceTable *find_pipeline_table(SluicePipeline *pipe, LogicalRepRelation *lr);

/*
 * (Re)map a source relation, as a RELATION message announced it (typmods:
 * its columns' typmods), to its target table through the table's contract.
 * Drift is handled by policy (contract.c) before any row of the relation is
 * applied; the history table (version.c), the row expectations and the
 * quarantine ledger (quarantine.c) are set up with it.
 */
void
relmap_open(ApplyState *st, LogicalRepRelation *lr, int32 *typmods)
{
	ApplyRel   *ar;
	bool		found;
	SluiceTable *t;
	MemoryContext old;
	TupleDesc	desc;
	int			i;
	char	  **feeds;

	ar = hash_search(st->rels, &lr->remoteid, HASH_ENTER, &found);
	if (found)
		relmap_close(ar);

	old = MemoryContextSwitchTo(st->cxt);
	memset(((char *) ar) + sizeof(LogicalRepRelId), 0,
		   sizeof(ApplyRel) - sizeof(LogicalRepRelId));
	ar->nspname = pstrdup(lr->nspname);
	ar->relname = pstrdup(lr->relname);
	ar->remote_natts = lr->natts;
	ar->remote_attnames = palloc(sizeof(char *) * Max(lr->natts, 1));
	for (i = 0; i < lr->natts; i++)
		ar->remote_attnames[i] = pstrdup(lr->attnames[i]);

	t = find_pipeline_table(st->pipe, lr);
	if (t == NULL)
	{
		/* published but not part of this pipeline: its changes are ignored */
		MemoryContextSwitchTo(old);
		return;
	}
	/* the table live has now is not the one copied (identity.c) */
	if (!identity_relation(st, t, lr))
	{
		MemoryContextSwitchTo(old);
		return;
	}
	ar->mapped = true;
	st->cur_rel = ar;

	st->typmods = typmods;
	feeds = contract_check(st, t, lr);
	st->typmods = NULL;

	/* a chunked copy's lazy key, built before the table is opened (snapshot.c) */
	snapshot_key_for_apply(st->pipe, t);
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
	 * (see contract_check) is parsed as the type it is sent as, then
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
	relmap_init_key_lookups(st, ar);
	if (ar->keyrel != NULL && !ar->keyrel->rd_index->indimmediate)
	{
		Oid			conoid = get_index_constraint(ar->keyidx);

		/*
		 * A deferred key (the source may swap keys, see pipeline.c's
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
	ar->update_ok = ar->multi_ok && !ar->rel->rd_rel->relispartition;
	for (i = 0; ar->update_ok && i < ar->rri->ri_NumIndices; i++)
	{
		IndexInfo  *ii = ar->rri->ri_IndexRelationInfo[i];
		Form_pg_index idx = ar->rri->ri_IndexRelationDescs[i]->rd_index;

		/* see apply.c's write_update */
		if (ii->ii_Predicate != NIL || ii->ii_ExclusionOps != NULL ||
			(idx->indisunique && !idx->indimmediate))
			ar->update_ok = false;
	}
	ar->newslot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	ar->searchslot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	ar->localslot = MakeSingleTupleTableSlot(desc, table_slot_callbacks(ar->rel));
	EvalPlanQualInit(&ar->epqstate, st->estate, NULL, NIL, -1);

	version_open(st, ar, t);
	ar->counts = table_count(t->target_schema, t->target_table);
	ar->models = model_input_open(ar->rel);
	ar->table = t;
	quarantine_open(st, ar, t);
	/* a table being copied in chunks: which keys the stream may touch */
	ar->copyfilter = snapshot_filter_open(st, ar);

	st->cur_rel = NULL;
	MemoryContextSwitchTo(old);
}

/*
 * The pipeline's table a RELATION message is about: by live's oid first (a
 * table renamed on live, ALTER TABLE ... RENAME TO or SET SCHEMA, keeps its
 * oid, and the backlog sends it under each name it had), then by the name
 * recorded, for a table whose oid is not known yet or that was created
 * again under it (identity_relation tells).  NULL: not the pipeline's.
 */
static SluiceTable *
find_pipeline_table(SluicePipeline *pipe, LogicalRepRelation *lr)
{
	ListCell   *lc;

	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);

		if (OidIsValid(t->source_relid) && t->source_relid == lr->remoteid)
			return t;
	}
	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);

		if (strcmp(t->source_schema, lr->nspname) == 0 && strcmp(t->source_table, lr->relname) == 0)
			return t;
	}
	return NULL;
}

void
relmap_close(ApplyRel *ar)
{
	version_close(ar);
	if (ar->rel == NULL)
		return;
	Assert(ar->nbuffered == 0);
	if (ar->bufslots != NULL)
	{
		int			i;

		for (i = 0; i < APPLY_MAX_BUFFERED && ar->bufslots[i] != NULL; i++)
			ExecDropSingleTupleTableSlot(ar->bufslots[i]);
		pfree(ar->bufslots);
		ar->bufslots = NULL;
	}
	relmap_end_key_lookups(ar);
	/* a RELATION message reopens it in the same batch: nothing is kept */
	if (ar->poscxt != NULL)
		MemoryContextDelete(ar->poscxt);
	if (ar->lastcxt != NULL)
		MemoryContextDelete(ar->lastcxt);
	ar->poscxt = ar->lastcxt = NULL;
	EvalPlanQualEnd(&ar->epqstate);
	ExecCloseIndices(ar->rri);
	ExecDropSingleTupleTableSlot(ar->newslot);
	ExecDropSingleTupleTableSlot(ar->searchslot);
	ExecDropSingleTupleTableSlot(ar->localslot);
	table_close(ar->rel, NoLock);
	ar->rel = NULL;
}

/*
 * Look a relation up for a change message; NULL when its changes are not
 * for this pipeline.
 */
ApplyRel *
relmap_get(ApplyState *st, LogicalRepRelId relid)
{
	ApplyRel   *ar = hash_search(st->rels, &relid, HASH_FIND, NULL);

	/* the walsender announced it in an earlier batch (apply.c) */
	if (ar == NULL && apply_recall_relation(st, relid))
		ar = hash_search(st->rels, &relid, HASH_FIND, NULL);
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
void
relmap_fill_slot(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot,
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
void
relmap_init_key_lookups(ApplyState *st, ApplyRel *ar)
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
		return;					/* relmap_find_row takes the general path */

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

	/* stepping: a one-column key of unique, immediate, ascending entries */
	ar->stepok = ar->nscankeys == 1 && idx->rd_index->indisunique &&
		idx->rd_index->indimmediate && idx->rd_indoption[0] == 0;
	if (ar->stepok && ar->steporder == NULL)
	{
		Oid			optype = idx->rd_opcintype[0];
		Oid			ge = get_opfamily_member(idx->rd_opfamily[0], optype, optype,
											 BTGreaterEqualStrategyNumber);
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(ar->rel), ar->scanatts[0] - 1);

		if (!OidIsValid(ge))
			ar->stepok = false;
		else
		{
			ScanKeyInit(&ar->stepkey, 1, BTGreaterEqualStrategyNumber, get_opcode(ge), (Datum) 0);
			ar->stepkey.sk_collation = idx->rd_indcollation[0];
			ar->steporder = palloc0(sizeof(FmgrInfo));
			fmgr_info_copy(ar->steporder, index_getprocinfo(idx, 1, BTORDER_PROC), st->cxt);
			ar->stepcoll = idx->rd_indcollation[0];
			ar->keybyval = att->attbyval;
			ar->keylen = att->attlen;
			ar->lastcxt = AllocSetContextCreate(st->cxt, "pg_sluice last key", ALLOCSET_SMALL_SIZES);
		}
	}
	MemoryContextSwitchTo(old);
}

/*
 * The relation whose stepping scan stands on an entry, and the
 * subtransaction that placed it (see relmap_step_release).
 */
static ApplyRel *stepping_rel = NULL;
static SubTransactionId stepping_subid = InvalidSubTransactionId;

/* End the lookups' index scans: before its index is closed. */
void
relmap_end_key_lookups(ApplyRel *ar)
{
	if (stepping_rel == ar)
		stepping_rel = NULL;
	ar->stepcur = false;
	ar->lastvalid = false;
	if (ar->stepscan != NULL)
	{
		index_endscan(ar->stepscan);
		ar->stepscan = NULL;
	}
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

/*
 * Stepping lookups.  A big UPDATE or DELETE on the source sends its rows
 * in the order it read them: for a table filled in key order (a serial
 * key, pg_sluice's own copy) the keys' order.  A lookup from the root of
 * the index for each row was most of the apply of such a batch: 59% of a
 * 100,000-row DELETE's, 23% of an UPDATE's (bench scenarios 2d and 2c,
 * perf, 2026-12-04).  Here, once two lookups in a row ascend, the key is
 * looked up with a scan that stays where it found the row (key >= value,
 * returning the index entries, whose keys it compares with the btree's
 * own comparison); the next greater key is read on from there, as a range
 * scan reads a leaf page's entries, for at most STEP_MAX entries.  Only a
 * row found is taken from it: anything else (a smaller or the same key, a
 * key farther on, no row, a row another session is writing) lets the
 * position go and looks the key up from the root as before.  So a key
 * order the source did not keep costs a comparison per row, and after
 * STEP_GAPS lookups in a row that the position did not find, STEP_COOL
 * lookups go from the root alone.
 *
 * Only a row found is trusted, and that holds however stale the scan's
 * copy of its page: it was read before the rows written since, so it may
 * lack an entry added meanwhile (the new version of a row updated under a
 * key already passed, an insert ahead), which only sends that lookup to
 * the root; an entry whose row VACUUM removed since, its slot in the table
 * taken by another row, yields a row without the key, which is not taken
 * (step_read); and the key's index is unique and immediate, so a row with
 * the key that the dirty snapshot sees is the row.  Between lookups the
 * position holds no pin (step_unpin).  It is let go at a message other
 * than an update or delete of this table, before any wait on the network
 * (relmap_step_release), at the end of the relation, and before its
 * transaction or subtransaction commits; it is forgotten when either
 * aborts.
 */
#define STEP_MAX	32
#define STEP_GAPS	3
#define STEP_COOL	1024

/* Let the standing stepping scan go (any relation's). */
void
relmap_step_release(void)
{
	ApplyRel   *ar = stepping_rel;

	if (ar == NULL)
		return;
	stepping_rel = NULL;
	ar->stepcur = false;
	index_rescan(ar->stepscan, &ar->stepkey, 1, NULL, 0);
}

/*
 * The subtransaction that placed the position ends, and the position with
 * it: its scan lives in memory of the apply's.  Aborted (an error, perhaps
 * in the middle of a lookup, pins held), its resource owner releases the
 * pins: forget the position.  Committed: let it go first.  (The apply
 * closes its relations before its subtransaction ends, so neither happens
 * with a position standing but on an error.)
 */
static void
step_subxact(SubXactEvent event, SubTransactionId mySubid,
			 SubTransactionId parentSubid, void *arg)
{
	if (stepping_rel == NULL || mySubid != stepping_subid)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		stepping_rel->stepcur = false;
		stepping_rel = NULL;
	}
	else if (event == SUBXACT_EVENT_PRE_COMMIT_SUB)
		relmap_step_release();
}

static void
step_xact(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		if (stepping_rel != NULL)
			stepping_rel->stepcur = false;
		stepping_rel = NULL;
	}
	else if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PARALLEL_PRE_COMMIT)
		relmap_step_release();
}

/*
 * The position keeps no pin between lookups.  The row found is written
 * next, and that write may wait for another session (a row lock, a unique
 * check, a trigger), which may itself wait for a VACUUM of the table; that
 * VACUUM waits for a cleanup lock on every leaf page of the index, and on
 * a table page it must freeze, so for any pin on one: a cycle the deadlock
 * detector does not see (a wait for a pin is no lock).  The btree copied
 * the page's entries when it read it and reads on from the copy, or from
 * the next page by its number, as it does for the MVCC scans it unpins
 * itself.  It does so only for WAL-logged indexes and not for index-only
 * scans: here every entry's row is read from the table and its key checked
 * (step_read), and no entry is ever marked dead (step_read clears
 * kill_prior_tuple), which is what needs the page's LSN to tell whether
 * the page changed meanwhile, and an unlogged index's LSN does not move.
 */
static void
step_unpin(IndexScanDesc scan)
{
	BTScanOpaque so = (BTScanOpaque) scan->opaque;

	BTScanPosUnpinIfPinned(so->currPos);
	table_index_fetch_reset(scan->xs_heapfetch);
}

/* The key's btree order of a against b (step_compare, step_read, step_find). */
static inline int
step_order(ApplyRel *ar, Datum a, Datum b)
{
	return DatumGetInt32(FunctionCall2Coll(ar->steporder, ar->stepcoll, a, b));
}

static int
step_compare(ApplyRel *ar, Datum key)
{
	IndexScanDesc scan = ar->stepscan;
	bool		isnull;
	Datum		entry = index_getattr(scan->xs_itup, 1, scan->xs_itupdesc, &isnull);

	if (isnull)
		return 1;				/* nulls sort last: past any key */
	return step_order(ar, entry, key);
}

/*
 * Read on from the scan's entry (current: it is the one to look at first)
 * to key's row, for at most STEP_MAX entries.  True: the row is in found.
 */
static bool
step_read(ApplyRel *ar, Datum key, bool current, TupleTableSlot *found)
{
	IndexScanDesc scan = ar->stepscan;
	int			steps = 0;
	int			c;

	for (;;)
	{
		if (!current)
		{
			if (++steps > STEP_MAX)
				return false;
			scan->kill_prior_tuple = false;	/* see step_unpin */
			if (index_getnext_tid(scan, ForwardScanDirection) == NULL)
				return false;
		}
		current = false;
		c = step_compare(ar, key);
		if (c < 0)
			continue;
		if (c > 0)
			return false;
		do
		{
			if (index_fetch_heap(scan, found))
			{
				Datum		rowkey;
				bool		isnull;

				/* another session is writing it: the lookup from the root waits for it */
				if (TransactionIdIsValid(ar->dirty.xmin) || TransactionIdIsValid(ar->dirty.xmax))
					return false;
				ExecMaterializeSlot(found);

				/*
				 * The entry was read when its page was, and the page is not
				 * pinned since (step_unpin): VACUUM may have removed it and
				 * its row, and the row's slot in the table may hold another
				 * row now.  The row is taken only under its key.
				 */
				rowkey = slot_getattr(found, ar->scanatts[0], &isnull);
				if (isnull || step_order(ar, rowkey, key) != 0)
					return false;
				step_unpin(scan);
				return true;
			}
		} while (scan->xs_heap_continue);
	}
}

static void
step_remember(ApplyRel *ar, Datum key)
{
	if (ar->keybyval)
		ar->lastkey = key;
	else
	{
		MemoryContext old;

		MemoryContextReset(ar->lastcxt);
		old = MemoryContextSwitchTo(ar->lastcxt);
		ar->lastkey = datumCopy(key, false, ar->keylen);
		MemoryContextSwitchTo(old);
	}
	ar->lastvalid = true;
}

/*
 * The position did not find the row.  STEP_GAPS times in a row (keys in no
 * order: every other one greater than the last, but far from it) and the
 * next STEP_COOL lookups go from the root alone.
 */
static void
step_gap(ApplyRel *ar)
{
	if (++ar->stepgaps >= STEP_GAPS)
	{
		ar->stepgaps = 0;
		ar->stepcool = STEP_COOL;
	}
}

/* Key's row by stepping: true, in ar->localslot; false, look it up from the root. */
static bool
step_find(ApplyState *st, ApplyRel *ar)
{
	static bool registered = false;
	Datum		key = ar->searchslot->tts_values[ar->scanatts[0] - 1];
	MemoryContext old;
	bool		ascending;
	bool		missed = false;

	if (stepping_rel != ar)
		relmap_step_release();	/* another relation's position */
	if (ar->searchslot->tts_isnull[ar->scanatts[0] - 1])
	{
		relmap_step_release();
		return false;
	}

	/*
	 * Standing on the last row found: read on to a greater key.  The scan
	 * allocates some of its state as it goes (the btree's list of dead
	 * entries): in the relation's memory, as for find_row_by_key.
	 */
	if (ar->stepcur)
	{
		bool		found;

		old = MemoryContextSwitchTo(st->cxt);
		found = step_compare(ar, key) < 0 && step_read(ar, key, false, ar->localslot);
		MemoryContextSwitchTo(old);
		if (found)
		{
			ar->stepgaps = 0;
			step_remember(ar, key);
			return true;
		}
		relmap_step_release();
		step_gap(ar);
		missed = true;
	}

	ascending = ar->lastvalid &&
		step_order(ar, key, ar->lastkey) > 0;
	step_remember(ar, key);
	if (!ascending)
		return false;
	if (ar->stepcool > 0)
	{
		ar->stepcool--;
		return false;
	}

	/* position the scan at the key */
	old = MemoryContextSwitchTo(st->cxt);
	if (!registered)
	{
		RegisterSubXactCallback(step_subxact, NULL);
		RegisterXactCallback(step_xact, NULL);
		registered = true;
	}
	if (ar->stepscan == NULL)
	{
		/* a TRUNCATE ends the scan (relmap_end_key_lookups), not this */
		if (ar->poscxt == NULL)
			ar->poscxt = AllocSetContextCreate(st->cxt, "pg_sluice stepping key", ALLOCSET_SMALL_SIZES);
		InitDirtySnapshot(ar->dirty);
		ar->stepscan = index_beginscan(ar->rel, ar->keyrel, &ar->dirty, 1, 0);
		ar->stepscan->xs_want_itup = true;
	}
	/* the scan compares every entry it reads with the key: a copy of its own */
	MemoryContextReset(ar->poscxt);
	MemoryContextSwitchTo(ar->poscxt);
	ar->stepkey.sk_argument = datumCopy(key, ar->keybyval, ar->keylen);
	MemoryContextSwitchTo(st->cxt);
	index_rescan(ar->stepscan, &ar->stepkey, 1, NULL, 0);
	stepping_rel = ar;
	stepping_subid = GetCurrentSubTransactionId();
	if (index_getnext_tid(ar->stepscan, ForwardScanDirection) != NULL &&
		step_read(ar, key, true, ar->localslot))
	{
		ar->stepcur = true;
		MemoryContextSwitchTo(old);
		return true;
	}
	relmap_step_release();
	if (!missed)
		step_gap(ar);			/* one lookup counts once */
	MemoryContextSwitchTo(old);
	return false;
}

static bool
find_row_by_key(ApplyState *st, ApplyRel *ar)
{
	TupleTableSlot *search = ar->searchslot;
	TupleTableSlot *found = ar->localslot;
	MemoryContext old;
	bool		ret = false;
	int			i;

	if (ar->stepok && !ar->matchall && step_find(st, ar))
		return true;

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
		/* no pin while waiting (see step_unpin): the index's, the row's */
		release_key_position(ar);
		ExecClearTuple(found);
		XactLockTableWait(xwait, NULL, NULL, XLTW_None);
	}
	release_key_position(ar);
	MemoryContextSwitchTo(old);
	return ret;
}

bool
relmap_find_row(ApplyState *st, ApplyRel *ar)
{
	if (ar->keyrel != NULL)
		return find_row_by_key(st, ar);
	if (OidIsValid(ar->keyidx))
		return RelationFindReplTupleByIndex(ar->rel, ar->keyidx, LockTupleExclusive,
											ar->searchslot, ar->localslot);
	return RelationFindReplTupleSeq(ar->rel, LockTupleExclusive,
									ar->searchslot, ar->localslot);
}

/*
 * Datamart columns no source column feeds (kept after a drop on the
 * source, or the DBA's own) take their default in an inserted row, as an
 * INSERT that leaves them out would.
 */
void
relmap_fill_defaults(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot)
{
	int			k;

	for (k = 0; k < ar->ndefaults; k++)
	{
		int			a = ar->defatts[k] - 1;

		slot->tts_values[a] = ExecEvalExpr(ar->defexprs[k], GetPerTupleExprContext(st->estate),
										   &slot->tts_isnull[a]);
	}
}
