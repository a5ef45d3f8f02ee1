/*-------------------------------------------------------------------------
 *
 * contract.c
 *	  Contracts: a RELATION message checked against the table's contract,
 *	  drift handled by policy, the contract evolved and recorded.
 *
 * NOTES
 *	  What this file owns.  Every contract version and every drift event.
 *	  contract_check compares the source's columns, as a RELATION message
 *	  announces them, with the contract before any row of the relation is
 *	  applied, and acts by the table's drift policy: freeze pauses, evolve
 *	  adds new source columns of built-in types and widens column types safely
 *	  (type_fits lists the widenings), ignore leaves new columns out; a
 *	  dropped source column is kept fed nothing, or pauses.  Evolving alters
 *	  the datamart table and its history table and records a new contract
 *	  version; contract_record_first records version 1 at creation
 *	  (pipeline.c).  contract_record_drift writes the drift event and its
 *	  contract_drift alert, for drift the policy absorbed (in the batch's
 *	  transaction) and for a pause (refresh.c, in the caller's, after the
 *	  batch rolled back).
 *
 *	  What it never does.  It never maps or writes rows (relation.c, apply.c),
 *	  and never records a pause itself: drift_pause hangs a SluiceDrift on the
 *	  batch's ApplyStats and raises; the batch rolls back, nothing of it
 *	  stays, and refresh.c records the pause and its event where they survive.
 *
 *	  Rejected.  Comparing at every row: pgoutput sends a RELATION message
 *	  before a relation's first change in a decoding session and again after
 *	  its schema changed, which is exactly when the answer can change.
 *	  Recording a pause in the batch's own transaction: the rollback would
 *	  take it along.  Carrying the pause to refresh.c in a global
 *	  (sluice_pending_drift, until 0.1): a field of the batch's own result
 *	  says in the signature who may set it, and cannot outlive its batch.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/contract.c
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
		sluice_json_begin(&buf);
		sluice_json_string(&buf, "name", lr->attnames[i]);
		sluice_json_raw(&buf, "type", psprintf("%u", lr->atttyps[i]));
		sluice_json_string(&buf, "type_name",
						   source_type_name(st, lr->atttyps[i], st->typmods ? st->typmods[i] : -1));
		sluice_json_end(&buf);
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
		sluice_json_begin(&buf);
		sluice_json_string(&buf, "name", c->source_column);
		sluice_json_string(&buf, "column", c->name);
		sluice_json_raw(&buf, "type", psprintf("%u", c->source_type));
		sluice_json_string(&buf, "type_name", contract_type_name(st, c));
		sluice_json_string(&buf, "data_type", c->data_type);
		if (c->source_dropped)
			sluice_json_raw(&buf, "source_dropped", "true");
		sluice_json_end(&buf);
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/*
 * Schema drift the policy cannot absorb: say so in the batch's stats
 * (ApplyStats.pause) for refresh.c, which
 * rolls the batch back and pauses the pipeline, then raise.  hint says
 * which function accepts the change.
 */
static void
drift_pause(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr, const char *detail,
			const char *hint)
{
	SluiceDrift *d = drift_new(t, detail, columns_json(st, lr), contract_json(st, t));

	d->xid = st->begin.xid;
	d->lsn = st->begin.final_lsn;
	st->stats->pause = d;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("source table \"%s.%s\" drifted from its contract", t->source_schema, t->source_table),
			 errdetail("%s", detail),
			 errhint("Nothing was applied and pipeline \"%s\" is paused. %s Then call sluice.resume('%s').",
					 st->pipe->name,
					 hint ? hint : "Fix the contract (sluice.map_column, sluice.set_drift_policy) or the datamart table.",
					 st->pipe->name)));
}

/*
 * Why a batch pauses, for refresh.c (refresh_pause): t's table, drift
 * policy and contract version, detail, and the source and contract columns
 * as jsonb text ("[]" where none apply).  Allocated in TopMemoryContext, as
 * it outlives the batch's rollback.  Every pause reason is made here
 * (drift, identity, an expectation, a missing row under strict).
 */
SluiceDrift *
drift_new(SluiceTable *t, const char *detail, const char *source_columns,
		  const char *contract_columns)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	SluiceDrift *d = palloc0(sizeof(SluiceDrift));

	d->source_schema = pstrdup(t->source_schema);
	d->source_table = pstrdup(t->source_table);
	d->policy = pstrdup(t->drift_policy ? t->drift_policy : "");
	d->detail = pstrdup(detail);
	d->source_columns = pstrdup(source_columns ? source_columns : "[]");
	d->contract_columns = pstrdup(contract_columns ? contract_columns : "[]");
	d->contract_version = t->contract_version;
	MemoryContextSwitchTo(old);
	return d;
}

/*
 * Record a drift event of a pipeline's table (d: its table, policy,
 * detail, source and contract columns, contract version, source
 * transaction) and, when a row was written, queue its contract_drift event
 * for the notifier, naming the table as table.  An 'ignored' event is
 * recorded once per set of source columns, not at every refresh.  Absorbed
 * drift is recorded in the batch's transaction, a pause in the caller's
 * once the batch rolled back (refresh.c).
 */
void
contract_record_drift(SluicePipeline *pipe, const SluiceDrift *d, const char *action,
					  const char *table)
{
	Oid			types[11] = {INT4OID, TEXTOID, TEXTOID, XIDOID, LSNOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, TEXTOID, TEXTOID};
	Datum		args[11];
	int			rc;

	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(d->source_schema);
	args[2] = CStringGetTextDatum(d->source_table);
	args[3] = TransactionIdGetDatum(d->xid);
	args[4] = LSNGetDatum(d->lsn);
	args[5] = CStringGetTextDatum(d->policy);
	args[6] = CStringGetTextDatum(action);
	args[7] = CStringGetTextDatum(d->detail);
	args[8] = Int32GetDatum(d->contract_version);
	args[9] = CStringGetTextDatum(d->source_columns);
	args[10] = CStringGetTextDatum(d->contract_columns);
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
		sluice_json_begin(&j);
		sluice_json_string(&j, "table", table);
		sluice_json_string(&j, "action", action);
		sluice_json_string(&j, "summary", d->detail);
		sluice_json_end(&j);
		outbox_emit(pipe->name, "contract_drift", j.data);
	}
}

/* Record a drift event the policy absorbed, in the batch's transaction. */
static void
record_drift(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr,
			 const char *action, const char *detail)
{
	SluiceDrift d;

	memset(&d, 0, sizeof(d));
	d.source_schema = t->source_schema;
	d.source_table = t->source_table;
	d.policy = t->drift_policy;
	d.detail = (char *) detail;
	d.contract_columns = contract_json(st, t);
	d.source_columns = columns_json(st, lr);
	d.contract_version = t->contract_version;
	d.xid = st->begin.xid;
	d.lsn = st->begin.final_lsn;
	contract_record_drift(st->pipe, &d, action,
						  psprintf("%s.%s", t->target_schema, t->target_table));
}

/* The datamart table of t, and its history table (InvalidOid: none). */
static Oid
target_relid(SluiceTable *t)
{
	return get_relname_relid(t->target_table, get_namespace_oid(t->target_schema, false));
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
	if (OidIsValid(version_history_relid(st, t)))
	{
		Oid			rtypes[1] = {REGCLASSOID};
		Datum		rargs[1];

		rc = SPI_execute(psprintf("ALTER TABLE %s.%s %s",
								  quote_identifier(version_history_schema(t->target_schema)),
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
 * (read in UTC, see relmap_fill_slot).
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
char **
contract_check(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr)
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
				feeds[i] = found->name; /* relmap_open says it is missing */
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
				char	   *readers = model_readers(relid, found->name);

				if (evolve && safe && readers == NULL)
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
					if (readers != NULL)
						appendStringInfo(&hints, "%sColumn \"%s\" is read by the query of model %s, which pins its type: drop the model with sluice.drop_model(), call sluice.accept_type_change('%s', '%s', '%s'), then create the model again.",
										 hints.len ? " " : "", found->name, readers, qtarget, found->name, now);
					else if (safe)
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
 * Contract version 1 of a table: the datamart table as created, each column
 * fed by the source column of the same name.  targs: pipeline id, source
 * schema and table, target schema and table, key columns.
 */
void
contract_record_first(SourceTable *t, const char *target_schema, Datum *targs)
{
	Oid			types[7] = {INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID, OIDARRAYOID, TEXTOID, TEXTARRAYOID};
	Datum		args[7];
	Datum	   *names = palloc(sizeof(Datum) * Max(list_length(t->columns), 1));
	Datum	   *oids = palloc(sizeof(Datum) * Max(list_length(t->columns), 1));
	ListCell   *nc;
	ListCell   *oc;
	int			n = 0;

	forboth(nc, t->columns, oc, t->srctypes)
	{
		names[n] = CStringGetTextDatum(strVal(lfirst(nc)));
		oids[n++] = ObjectIdGetDatum(lfirst_oid(oc));
	}
	args[0] = targs[0];
	args[1] = targs[1];
	args[2] = targs[2];
	args[3] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(oids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	args[5] = CStringGetTextDatum(psprintf("%s.%s", quote_identifier(target_schema),
										   quote_identifier(t->target)));
	args[6] = targs[5];
	sluice_spi_exec("INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, "
					"  contract_version, position, column_name, source_column, data_type, not_null, "
					"  is_key, source_type) "
					"SELECT $1, $2, $3, 1, a.attnum, a.attname, a.attname, "
					"       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
					"       a.attname::text = ANY ($7), s.typ "
					"  FROM pg_catalog.pg_attribute a "
					"  JOIN ROWS FROM (pg_catalog.unnest($4), pg_catalog.unnest($5)) AS s(name, typ) ON s.name = a.attname::text "
					" WHERE a.attrelid = $6::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped",
					7, types, args, SPI_OK_INSERT);
}
