/*-------------------------------------------------------------------------
 *
 * expect.c
 *	  Data-quality expectations: bound when declared, run inside the applying
 *	  transaction.
 *
 * NOTES
 *	  What this file owns.  Row expectations are boolean SQL expressions over
 *	  a datamart row (generated from the Great Expectations vocabulary by
 *	  add_expectation, or given by the user).  They are parsed once, when they
 *	  are declared, the way CHECK constraints are (no subqueries, aggregates
 *	  or volatile functions), and stored as a bound expression tree (every
 *	  function, operator, type and column resolved to its OID or number, as in
 *	  pg_constraint.conbin); a batch only prepares that tree (quarantine.c)
 *	  and evaluates it in C against every row it writes.  A NULL result
 *	  passes, as for CHECK constraints.
 *
 *	  Set expectations (unique, row count, foreign key, freshness) are queries
 *	  run once per batch, after the batch's rows are written and before it
 *	  commits; they look at the rows the batch changed through their xmin.
 *	  They too are parsed and analyzed once at declaration and stored as a
 *	  query tree, which a batch plans and executes.  Both kinds run as the
 *	  pipeline's owner in a security-restricted operation (see security.c).
 *
 *	  Results accumulate in memory that survives the batch's subtransaction,
 *	  so a failing batch still records what failed; so do the per-table counts
 *	  of a run.  An error-severity failure pauses the pipeline through
 *	  expect_pause, which hangs the reason on the batch's ApplyStats for
 *	  refresh.c.
 *
 *	  What it never does.  Evaluate a row expectation per row (quarantine.c
 *	  does, in the apply family) or hold a row back.
 *
 *	  Rejected.  Storing the expectations' SQL text and parsing it at each
 *	  batch: a function or operator created later in someone's search_path
 *	  could slip into a check, and every batch would pay the parse.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/expect.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_func.h"
#include "parser/parse_relation.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "pg_sluice.h"

PG_FUNCTION_INFO_V1(sluice_changed_here);
PG_FUNCTION_INFO_V1(sluice_compile_predicate);
PG_FUNCTION_INFO_V1(sluice_compile_check);
PG_FUNCTION_INFO_V1(sluice_length_between);

List	   *sluice_results = NIL;
static List *table_counts = NIL;
MemoryContext sluice_results_cxt = NULL;

#define MAX_SAMPLE 5

/*
 * Replace text ~ pattern (and !~) by sluice._regex_match, which matches the
 * common simple patterns much faster and hands the rest to PostgreSQL's
 * engine (see regex.c).
 */
static Node *
regex_mutator(Node *node, Oid *fn)
{
	OpExpr	   *op = (OpExpr *) node;
	FuncExpr   *f;

	if (node == NULL)
		return NULL;
	if (!IsA(node, OpExpr) || (op->opfuncid != F_TEXTREGEXEQ && op->opfuncid != F_TEXTREGEXNE))
		return expression_tree_mutator(node, regex_mutator, fn);
	if (!OidIsValid(*fn))
	{
		Oid			argtypes[2] = {TEXTOID, TEXTOID};

		*fn = LookupFuncName(list_make2(makeString("sluice"), makeString("_regex_match")),
							 2, argtypes, false);
	}
	f = makeFuncExpr(*fn, BOOLOID,
					 (List *) expression_tree_mutator((Node *) op->args, regex_mutator, fn),
					 InvalidOid, op->inputcollid, COERCE_EXPLICIT_CALL);
	f->location = op->location;
	if (op->opfuncid == F_TEXTREGEXNE)
		return (Node *) makeBoolExpr(NOT_EXPR, list_make1(f), op->location);
	return (Node *) f;
}

/*
 * Parse and analyze a row predicate against a relation, as a CHECK
 * constraint would be.
 */
static Expr *
expect_parse_predicate(Relation rel, const char *predicate)
{
	List	   *raw;
	RawStmt    *rs;
	SelectStmt *sel;
	ResTarget  *rt;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	Oid			regex_fn = InvalidOid;

	raw = raw_parser(psprintf("SELECT (%s)", predicate), RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("expectation predicate must be a single expression: %s", predicate)));
	rs = linitial_node(RawStmt, raw);
	sel = (SelectStmt *) rs->stmt;
	if (!IsA(sel, SelectStmt) || list_length(sel->targetList) != 1 || sel->fromClause != NIL ||
		sel->whereClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("expectation predicate must be a single expression: %s", predicate)));
	rt = linitial_node(ResTarget, sel->targetList);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = predicate;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, NULL, false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);
	expr = transformExpr(pstate, rt->val, EXPR_KIND_CHECK_CONSTRAINT);
	expr = coerce_to_boolean(pstate, expr, "expectation predicate");
	assign_expr_collations(pstate, expr);
	if (contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expectation predicate calls a volatile function: %s", predicate),
				 errdetail("A row's verdict must not change between evaluations."),
				 errhint("Use immutable or stable functions only.")));
	free_parsestate(pstate);
	return (Expr *) regex_mutator(expr, &regex_fn);
}

/*
 * sluice._compile_predicate(target, predicate): the predicate bound as a row
 * expectation of the table (an expression tree, for the catalog), or an
 * error if it is not a valid one.  Names are resolved here, once, in the
 * caller's search_path (add_expectation fixes it to pg_catalog).
 */
Datum
sluice_compile_predicate(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *predicate = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel = table_open(relid, AccessShareLock);
	Expr	   *expr = expect_parse_predicate(rel, predicate);

	(void) expression_planner(copyObject(expr));
	table_close(rel, AccessShareLock);
	PG_RETURN_TEXT_P(cstring_to_text(nodeToString(expr)));
}

/* Does the Var fit the relation's column of that number? */
static bool
var_fits_walker(Node *node, Relation rel)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *v = (Var *) node;
		Form_pg_attribute att;

		if (v->varno != 1 || v->varlevelsup != 0 || v->varattno <= 0 ||
			v->varattno > RelationGetDescr(rel)->natts)
			return true;
		att = TupleDescAttr(RelationGetDescr(rel), v->varattno - 1);
		return att->attisdropped || att->atttypid != v->vartype ||
			att->atttypmod != v->vartypmod || att->attcollation != v->varcollid;
	}
	if (IsA(node, SubLink) || IsA(node, Query))
		return true;
	return expression_tree_walker(node, var_fits_walker, rel);
}

/*
 * Bind a stored row expectation to the relation a batch writes: the tree
 * stored at declaration, checked against the table as it is now (a column
 * it reads may have been dropped or retyped since).
 */
Expr *
expect_bind_predicate(Relation rel, SluiceExpectation *e)
{
	Node	   *expr = stringToNode(e->predicate);

	if (exprType(expr) != BOOLOID || var_fits_walker(expr, rel) ||
		contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("expectation \"%s\" no longer fits table \"%s\"", e->name,
						RelationGetRelationName(rel)),
				 errdetail("A column it reads was dropped or changed type since it was declared."),
				 errhint("Drop it with sluice.drop_expectation() and declare it again.")));
	return (Expr *) expr;
}

/* Is a query what a set expectation stores (see sluice_compile_check)? */
static bool
check_tree_ok(Query *q)
{
	Oid			want[4] = {INT8OID, INT8OID, TEXTOID, JSONBOID};
	ListCell   *lc;
	int			i = 0;

	if (q->commandType != CMD_SELECT || q->utilityStmt != NULL || q->hasModifyingCTE ||
		q->rowMarks != NIL)
		return false;
	foreach(lc, q->targetList)
	{
		TargetEntry *te = lfirst(lc);

		if (!IsA(te, TargetEntry))
			return false;
		if (te->resjunk)
			continue;
		if (i >= 4 || exprType((Node *) te->expr) != want[i])
			return false;
		i++;
	}
	return i == 4;
}

/*
 * sluice._compile_check(target, query): a set expectation's query, parsed
 * and analyzed once (names resolved in the caller's search_path, which
 * add_expectation fixes to pg_catalog), as a query tree for the catalog.
 * The query returns one row: failed bigint, evaluated bigint, observed
 * text, sample jsonb.
 */
Datum
sluice_compile_check(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	Query	   *q;

	if (list_length(raw) != 1)
		elog(ERROR, "a set expectation is one query");
	q = parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, NULL, 0, NULL);
	if (!check_tree_ok(q))
		elog(ERROR, "a set expectation is one plain SELECT of failed, evaluated, observed and sample");
	PG_RETURN_TEXT_P(cstring_to_text(nodeToString(q)));
}

/* Error context: which expectation was running. */
static void
check_error_callback(void *arg)
{
	errcontext("set expectation \"%s\"", ((SluiceExpectation *) arg)->name);
}

/*
 * Plan and run a stored set expectation's query tree, seeing the batch's
 * own writes (model.c runs a model's expectations through it too).  Returns its one row as a heap tuple, with its descriptor.
 */
HeapTuple
expect_run_check(SluiceExpectation *e, TupleDesc *desc)
{
	Query	   *q = stringToNode(e->check);
	List	   *rewritten;
	PlannedStmt *plan;
	QueryDesc  *qd;
	DestReceiver *dest;
	Tuplestorestate *ts;
	TupleTableSlot *slot;
	HeapTuple	tup = NULL;
	ErrorContextCallback errcb;

	errcb.callback = check_error_callback;
	errcb.arg = e;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	/*
	 * The tree came from the catalog: trust nothing in it that the executor
	 * would take on faith.  It must be what _compile_check stores, a plain
	 * SELECT of (failed int8, evaluated int8, observed text, sample jsonb).
	 */
	if (!IsA(q, Query) || !check_tree_ok(q))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("set expectation \"%s\" is not a valid bound check", e->name),
				 errhint("Drop it with sluice.drop_expectation() and declare it again.")));
	AcquireRewriteLocks(q, true, false);
	rewritten = QueryRewrite(q);
	if (list_length(rewritten) != 1)
		elog(ERROR, "stored set expectation rewrote to %d queries", list_length(rewritten));
	plan = pg_plan_query(linitial_node(Query, rewritten), NULL, 0, NULL);

	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	ts = tuplestore_begin_heap(false, false, work_mem);
	dest = CreateDestReceiver(DestTuplestore);
	SetTuplestoreDestReceiverParams(dest, ts, CurrentMemoryContext, false, NULL, NULL);
	qd = CreateQueryDesc(plan, "pg_sluice set expectation", GetActiveSnapshot(), InvalidSnapshot,
						 dest, NULL, NULL, 0);
	ExecutorStart(qd, 0);
	ExecutorRun(qd, ForwardScanDirection, 2, true);
	ExecutorFinish(qd);
	*desc = CreateTupleDescCopy(qd->tupDesc);
	ExecutorEnd(qd);
	FreeQueryDesc(qd);
	dest->rDestroy(dest);
	PopActiveSnapshot();

	slot = MakeSingleTupleTableSlot(*desc, &TTSOpsMinimalTuple);
	if (tuplestore_gettupleslot(ts, true, false, slot))
		tup = ExecCopySlotHeapTuple(slot);
	if (tup == NULL || tuplestore_gettupleslot(ts, true, false, slot))
		elog(ERROR, "set expectation \"%s\" did not return one row", e->name);
	ExecDropSingleTupleTableSlot(slot);
	tuplestore_end(ts);
	error_context_stack = errcb.previous;
	return tup;
}

/*
 * sluice._length_between(s, lo, hi): lo <= length(s) <= hi, for
 * expect_column_value_lengths_to_be_between.  The length is counted once
 * (length(s) >= lo AND length(s) <= hi counts it twice), and characters are
 * only decoded when the string is not plain ASCII: it runs on every row a
 * refresh writes.
 */
Datum
sluice_length_between(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	int64		lo = PG_GETARG_INT64(1);
	int64		hi = PG_GETARG_INT64(2);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	unsigned char high = 0;
	int64		n;
	int			i;

	/* a string never has more characters than bytes */
	if (len < lo)
		PG_RETURN_BOOL(false);
	for (i = 0; i < len; i++)
		high |= p[i];
	n = (high & 0x80) ? pg_mbstrlen_with_len((const char *) p, len) : len;
	PG_RETURN_BOOL(n >= lo && n <= hi);
}

/*
 * sluice._changed_here(xmin): was this row version written by the current
 * transaction (or one of its subtransactions)?
 */
Datum
sluice_changed_here(PG_FUNCTION_ARGS)
{
	TransactionId xid = DatumGetTransactionId(PG_GETARG_DATUM(0));

	PG_RETURN_BOOL(TransactionIdIsCurrentTransactionId(xid));
}

/* ---------- results ---------- */

void
expect_results_reset(void)
{
	if (sluice_results_cxt == NULL)
		sluice_results_cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice expectation results",
												   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(sluice_results_cxt);
	sluice_results = NIL;
	table_counts = NIL;
}

/* The run's counter for a table (lives as long as the run's results). */
TableCount *
table_count(const char *schema, const char *table)
{
	ListCell   *lc;
	TableCount *c;
	MemoryContext old;

	foreach(lc, table_counts)
	{
		c = lfirst(lc);
		if (strcmp(c->target_schema, schema) == 0 && strcmp(c->target_table, table) == 0)
			return c;
	}
	old = MemoryContextSwitchTo(sluice_results_cxt);
	c = palloc0(sizeof(TableCount));
	c->target_schema = pstrdup(schema);
	c->target_table = pstrdup(table);
	table_counts = lappend(table_counts, c);
	MemoryContextSwitchTo(old);
	return c;
}

/* Store the run's per-table row counts (in the caller's transaction). */
void
table_counts_record(int64 run_id)
{
	ListCell   *lc;

	foreach(lc, table_counts)
	{
		TableCount *c = lfirst(lc);
		Oid			types[9] = {INT8OID, NAMEOID, NAMEOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID};
		Datum		args[9];
		char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		if (c->inserted + c->updated + c->deleted + c->truncated + c->missing == 0)
			continue;
		args[0] = Int64GetDatum(run_id);
		args[1] = catalog_name_datum(c->target_schema);
		args[2] = catalog_name_datum(c->target_table);
		args[3] = Int64GetDatum(c->inserted);
		args[4] = Int64GetDatum(c->updated);
		args[5] = Int64GetDatum(c->deleted);
		args[6] = Int64GetDatum(c->truncated);
		/* divergence: updates and deletes that found no row (quarantine.c) */
		args[7] = Int64GetDatum(c->missing);
		args[8] = c->nmissing_keys ? CStringGetTextDatum(psprintf("[%s]", c->missing_keys.data)) : (Datum) 0;
		nulls[8] = c->nmissing_keys ? ' ' : 'n';
		if (sluice_catalog_exec("INSERT INTO sluice._run_table VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
								  9, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record per-table counts");
	}
}

ExpectResult *
expect_result(SluiceExpectation *e)
{
	ListCell   *lc;
	ExpectResult *r;
	MemoryContext old;

	foreach(lc, sluice_results)
	{
		r = lfirst(lc);
		if (r->expectation_id == e->expectation_id)
			return r;
	}
	old = MemoryContextSwitchTo(sluice_results_cxt);
	r = palloc0(sizeof(ExpectResult));
	r->expectation_id = e->expectation_id;
	r->name = pstrdup(e->name);
	r->severity = e->severity;
	initStringInfo(&r->sample);
	sluice_results = lappend(sluice_results, r);
	MemoryContextSwitchTo(old);
	return r;
}

/* Add a failing key (JSON text) to a result's sample. */
void
expect_add_sample(ExpectResult *r, const char *json)
{
	MemoryContext old;

	if (r->nsample >= MAX_SAMPLE)
		return;
	old = MemoryContextSwitchTo(sluice_results_cxt);
	appendStringInfo(&r->sample, "%s%s", r->nsample ? ", " : "", json);
	r->nsample++;
	MemoryContextSwitchTo(old);
}

/*
 * Run the set expectations of the pipeline's tables, inside the batch.
 * An error-severity failure pauses the pipeline (the batch rolls back).
 */
void
expect_run_set_checks(SluicePipeline *pipe, SluiceDrift **pause)
{
	ListCell   *lc;

	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);
		ListCell   *ec;

		foreach(ec, t->expectations)
		{
			SluiceExpectation *e = lfirst(ec);
			ExpectResult *r;
			bool		isnull;
			int64		failed;
			char	   *observed;
			char	   *sample;

			HeapTuple	tup;
			TupleDesc	desc;

			if (e->check == NULL)
				continue;
			tup = expect_run_check(e, &desc);
			r = expect_result(e);
			failed = DatumGetInt64(heap_getattr(tup, 1, desc, &isnull));
			r->failed += failed;
			r->evaluated += DatumGetInt64(heap_getattr(tup, 2, desc, &isnull));
			observed = SPI_getvalue(tup, desc, 3);
			sample = SPI_getvalue(tup, desc, 4);
			{
				MemoryContext old = MemoryContextSwitchTo(sluice_results_cxt);

				if (observed)
					r->observed = pstrdup(observed);
				if (sample && r->nsample == 0 && strlen(sample) > 2)
				{
					/* a JSON array: keep its elements */
					appendBinaryStringInfo(&r->sample, sample + 1, strlen(sample) - 2);
					r->nsample = MAX_SAMPLE;
				}
				MemoryContextSwitchTo(old);
			}
			if (failed > 0 && e->severity == 'e')
				/*
				 * Not the observed value (a max, a count): the reason shows
				 * in sluice.status, which every role reads;
				 * sluice.quality shows it to those who can read the table.
				 */
				expect_pause(pipe, t, e, psprintf("Expectation \"%s\" failed for %lld %s%s.",
												  e->name, (long long) failed,
												  failed == 1 ? "value" : "values",
												  observed ? " (sluice.quality shows the observed value)" : ""), pause);
			if (failed > 0 && e->severity == 'w')
				ereport(WARNING,
						(errmsg("expectation \"%s\" of pipeline \"%s\" failed for %lld %s",
								e->name, pipe->name, (long long) failed, failed == 1 ? "value" : "values"),
						 errdetail("The changes were applied (severity warn); sluice.quality records it.")));
		}
	}
}

/*
 * An error-severity expectation failed: say why in *pause for refresh.c,
 * which rolls the batch back and pauses the pipeline, then raise.
 */
void
expect_pause(SluicePipeline *pipe, SluiceTable *t, SluiceExpectation *e, const char *detail,
			 SluiceDrift **pause)
{
	SluiceDrift *d = drift_new(t, detail, NULL, NULL);

	d->is_expectation = true;
	*pause = d;
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("expectation \"%s\" failed on \"%s.%s\"", e->name, t->target_schema, t->target_table),
			 errdetail("%s", detail),
			 errhint("Nothing was applied and pipeline \"%s\" is paused. Fix the data on the source, or the expectation "
					 "(sluice.drop_expectation), then call sluice.resume('%s').", pipe->name, pipe->name)));
}

/* Store the run's results (in the caller's transaction). */
void
expect_record_results(int64 run_id)
{
	ListCell   *lc;

	foreach(lc, sluice_results)
	{
		ExpectResult *r = lfirst(lc);
		Oid			types[7] = {INT8OID, INT4OID, INT8OID, INT8OID, BOOLOID, TEXTOID, TEXTOID};
		Datum		args[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

		args[0] = Int64GetDatum(run_id);
		args[1] = Int32GetDatum(r->expectation_id);
		args[2] = Int64GetDatum(r->evaluated);
		args[3] = Int64GetDatum(r->failed);
		args[4] = BoolGetDatum(r->failed == 0);
		args[5] = r->observed ? CStringGetTextDatum(r->observed) : (Datum) 0;
		nulls[5] = r->observed ? ' ' : 'n';
		args[6] = CStringGetTextDatum(psprintf("[%s]", r->sample.data));
		nulls[6] = r->nsample ? ' ' : 'n';
		if (sluice_catalog_exec("INSERT INTO sluice._expectation_result (run_id, expectation_id, evaluated, "
								  "  failed, success, observed, sample_keys) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) "
								  "ON CONFLICT (run_id, expectation_id) DO NOTHING",
								  7, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record expectation results");
	}
}
