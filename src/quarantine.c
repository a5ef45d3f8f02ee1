/*-------------------------------------------------------------------------
 *
 * quarantine.c
 *	  Row expectations checked in the apply, and the quarantine ledger.
 *
 * NOTES
 *	  What this file owns.  Row expectations as the apply evaluates them:
 *	  compiled once per relation and batch (quarantine_open: ExecPrepareExpr
 *	  of each bound predicate, and of all of them ANDed, so that a row passing
 *	  every one costs one evaluation) and checked on every row about to be
 *	  written (quarantine_check_row): an error-severity failure pauses through
 *	  expect_pause, a quarantine one holds the row back.  The quarantine
 *	  ledger: sluice._quarantine holds each held row with its key (row_key);
 *	  the entries of a table that are still the latest state of their key
 *	  (held, or discarded on purpose) are kept in a hash per relation for the
 *	  batch.  Any later change of such a key on the source supersedes the
 *	  entry: written to the datamart ('applied'), held again ('quarantined',
 *	  the new entry named), deleted or truncated; a superseded entry is never
 *	  released by mistake (release_quarantined refuses it without force).  An
 *	  update of a key the datamart lacks because it is held is the one case
 *	  where an update becomes an insert (checked again; columns the source did
 *	  not send come from the held row).  And divergence: any other update or
 *	  delete that finds no row means the datamart lost a row the source has;
 *	  it is never turned into an insert, but skipped and counted per run and
 *	  table (refresh.c records it, with a divergence event), or, for a strict
 *	  pipeline, it pauses the pipeline.
 *
 *	  Keys.  key_json builds the JSON object of a row's key columns for both
 *	  uses: in the contract's key order for failure samples, in jsonb's key
 *	  order (shorter names first) for the ledger, so that its text equals
 *	  row_key::text of the stored entries and a hash lookup on text finds
 *	  them.
 *
 *	  What it never does.  Release, discard or purge entries: the SQL API
 *	  does, outside any batch.  Parse or bind an expectation: expect.c did
 *	  that when it was declared.
 *
 *	  Rejected.  Looking each change's key up in sluice._quarantine: a query
 *	  per change of every table with a quarantine expectation.  Comparing keys
 *	  as jsonb: a jsonb built and compared per change, where the ledger's text
 *	  in jsonb's key order compares as bytes.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/quarantine.c
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
#include "apply_internal.h"

static void ledger_init(ApplyState *st, ApplyRel *ar);
static void ledger_hold(ApplyState *st, ApplyRel *ar, const char *key, int64 quarantine_id);

/*
 * Set up a relation's row expectations (compiled once here, evaluated per
 * row in C by quarantine_check_row), its key columns (for failure samples)
 * and its quarantine ledger.  Runs in st->cxt, at the table's RELATION
 * message.
 */
void
quarantine_open(ApplyState *st, ApplyRel *ar, SluiceTable *t)
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
	/* see quarantine_check_row */
	if (list_length(exprs) > 1)
		ar->allchecks = ExecPrepareExpr(make_andclause(exprs), st->estate);
	ar->keyatts = palloc(sizeof(AttrNumber) * Max(list_length(t->columns), 1));
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);

		if (c->is_key)
			ar->keyatts[ar->nkeys++] = get_attnum(RelationGetRelid(ar->rel), c->name);
	}
	ledger_init(st, ar);
}

/*
 * Some columns of the row in a slot as a JSON object of their text forms,
 * {"id": "1", "region": null}, keys in the order of atts (an attribute
 * number 0, a key column the table lacks, is left out).  outfuncs: the
 * columns' output functions, or NULL to look them up.  The one builder of
 * both key orders: a failure sample lists the contract's key columns in
 * the contract's order; the ledger lists its key in jsonb's order, so that
 * the text equals row_key::text of the stored entries (quarantine_key).
 */
static char *
key_json(TupleTableSlot *slot, int natts, const AttrNumber *atts, FmgrInfo *outfuncs)
{
	StringInfoData buf;
	TupleDesc	desc = slot->tts_tupleDescriptor;
	int			i;

	slot_getallattrs(slot);
	initStringInfo(&buf);
	sluice_json_begin(&buf);
	for (i = 0; i < natts; i++)
	{
		int			j = atts[i] - 1;
		Form_pg_attribute att;
		char	   *value = NULL;

		if (j < 0)
			continue;
		att = TupleDescAttr(desc, j);
		if (slot->tts_isnull[j])
			value = NULL;
		else if (outfuncs != NULL)
			value = OutputFunctionCall(&outfuncs[i], slot->tts_values[j]);
		else
		{
			Oid			out;
			bool		varlena;

			getTypeOutputInfo(att->atttypid, &out, &varlena);
			value = OidOutputFunctionCall(out, slot->tts_values[j]);
		}
		sluice_json_string(&buf, NameStr(att->attname), value);
	}
	sluice_json_end(&buf);
	return buf.data;
}

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
	if (sluice_spi_kept("SELECT quarantine_id, row_key::text FROM sluice._quarantine "
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
char *
quarantine_key(ApplyRel *ar, TupleTableSlot *slot)
{
	return key_json(slot, ar->nledgerkeys, ar->ledgerkeys, ar->ledgerout);
}

/* The open quarantine entry of a key, or 0. */
int64
quarantine_find(ApplyRel *ar, const char *key)
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
void
quarantine_supersede(ApplyState *st, ApplyRel *ar, const char *key,
					 const char *how, int64 by)
{
	Oid			types[5] = {INT8OID, INT8OID, TEXTOID, XIDOID, LSNOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int64		id = quarantine_find(ar, key);

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
void
quarantine_truncated(ApplyState *st, ApplyRel *ar)
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
TupleTableSlot *
quarantine_held_row(ApplyState *st, ApplyRel *ar, int64 quarantine_id)
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
void
quarantine_missing_row(ApplyState *st, ApplyRel *ar, const char *change)
{
	char	   *key = quarantine_key(ar, ar->searchslot);
	TableCount *c = ar->counts;

	if (st->pipe->strict)
	{
		/* (stored as the pause reason, which every role can read: no key) */
		char	   *detail = psprintf("Source transaction %u %s a row of \"%s.%s\" which datamart table \"%s.%s\" does not have.",
									  st->begin.xid, strcmp(change, "update") == 0 ? "updates" : "deletes",
									  ar->nspname, ar->relname, ar->table->target_schema,
									  ar->table->target_table);
		SluiceDrift *d = drift_new(ar->table, detail, NULL, NULL);

		d->is_divergence = true;
		st->stats->pause = d;
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
		if (c->nmissing_keys > 0)
			appendStringInfoString(&c->missing_keys, ", ");
		sluice_json_begin(&c->missing_keys);
		sluice_json_string(&c->missing_keys, "change", change);
		sluice_json_raw(&c->missing_keys, "key", key);
		sluice_json_raw(&c->missing_keys, "source_xid", psprintf("%u", st->begin.xid));
		sluice_json_end(&c->missing_keys);
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
	char	   *key = quarantine_key(ar, slot);
	char	   *oldkey = oldslot ? quarantine_key(ar, oldslot) : NULL;
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
		quarantine_supersede(st, ar, oldkey, "quarantined", id);
	quarantine_supersede(st, ar, key, "quarantined", id);
	ledger_hold(st, ar, key, id);
}

/*
 * Evaluate the row expectations on the row about to be written.  Returns
 * false when the row must not be written (quarantined); an error-severity
 * failure pauses the pipeline.  oldslot: for an update, the row's key
 * before it (see quarantine_row).
 */
bool
quarantine_check_row(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot, const char *change,
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
		expect_add_sample(r, key_json(slot, ar->nkeys, ar->keyatts, NULL));
		if (rc->e->severity == 'e')
			expect_pause(st->pipe, ar->table, rc->e,
						 psprintf("Expectation \"%s\" failed for a row %s by source transaction %u (sluice.quality has its key).",
								  rc->e->name,
								  strcmp(change, "insert") == 0 ? "inserted" : "updated", st->begin.xid),
						 &st->stats->pause);
		if (rc->e->severity == 'q' && keep)
		{
			quarantine_row(st, ar, rc->e, slot, change, oldslot);
			keep = false;
		}
	}
	return keep;
}
