/*-------------------------------------------------------------------------
 *
 * model.c
 *	  Models: tables of the datamart defined by a query over pipeline tables
 *	  (and other models), maintained in the transaction of every batch that
 *	  changes their inputs.
 *
 * NOTES
 *	  What this file owns.  The binding of a model's query at declaration
 *	  (sluice._model_bind: one SELECT, made a view in a private schema, as
 *	  the pipelines' owner, names resolved in pg_catalog and the pipelines'
 *	  target schemas, every function it calls the owner's, a role's whose
 *	  privileges it has, or a superuser's; PostgreSQL stores it parsed,
 *	  tracks what it reads and follows renames), the decision whether it can be maintained
 *	  incrementally (sluice._model_analyze, made again from the view at
 *	  every batch so the catalog can never disagree with what runs), and the
 *	  maintenance at the end of each batch:
 *
 *	  - While a batch writes rows, the apply family hands every row image
 *	    it writes to a table some model reads (the new image of an insert,
 *	    both images of an update, the old image of a delete: model_note_row)
 *	    and each truncation (model_note_truncate).  For each incremental
 *	    model over the table, the values of its GROUP BY expressions in
 *	    those images are kept, as text, one set per expression: the touched
 *	    groups.  pg_sluice.model_max_keys bounds them per table and batch;
 *	    past it (or after a truncation) the batch rebuilds the models over
 *	    that table in full, and the run record says why.
 *	  - After the batch's rows are written and before its set expectations
 *	    and commit (refresh.c), model_maintain takes the models whose inputs
 *	    changed, and the models over those, in dependency order (depth in
 *	    the DAG, then id), locks each (SHARE ROW EXCLUSIVE: readers go on
 *	    reading the version before, two pipelines feeding one model take
 *	    turns) and either deletes the touched groups from the model and
 *	    inserts them again from the view restricted to those groups, or
 *	    deletes every row and inserts the view's.  The restriction is one
 *	    "g = ANY(values) OR (null touched AND g IS NULL)" per GROUP BY
 *	    expression, on the model's column and on the view's: PostgreSQL
 *	    pushes it below the view's GROUP BY, onto the input table (an index
 *	    on the grouping expression makes it read only those groups).  With
 *	    several GROUP BY expressions the sets are combined as a product, a
 *	    superset of the touched groups: recomputing an untouched group
 *	    rewrites what it was, so the result is exact either way.
 *	  - Then the model's expectations run (set checks bound at declaration,
 *	    run by expect.c's executor, on the rows the batch wrote), and an
 *	    error-severity failure pauses the pipeline exactly as one on a
 *	    pipeline table does: the whole batch, pipeline tables included,
 *	    rolls back.
 *
 *	  Versions: a model whose pipelines keep history keeps it too, as their
 *	  tables do: _sluice_version on each row, the rows a batch deletes moved
 *	  to <schema>_history.<table> with _sluice_superseded, the batch's
 *	  version (one statement: DELETE ... RETURNING into the history table).
 *
 *	  Everything runs as the pipeline's owner (who owns the model, its view
 *	  and its table) in the batch's security-restricted operation, search_path
 *	  pg_catalog, pg_temp; the statements are built here from the catalog's
 *	  OIDs with quote_identifier and take the touched values as parameters.
 *	  No SQL text from the catalog is ever executed.
 *
 *	  What it never does.  Parse a model's query again after declaration,
 *	  write a model outside a batch (sluice.rebuild_model, release_quarantined
 *	  and repair do, through sluice._models_after_write, in SQL), or decide
 *	  which rows of a pipeline table a batch writes.
 *
 *	  Rejected.  Delta rules per aggregate (count + new - old, as pg_ivm
 *	  does): exact only for some aggregates, wrong for min and max after a
 *	  delete, and it needs the old value of every aggregate input; a group
 *	  recomputed from its rows is exact for every aggregate, and what it
 *	  reads is bounded by the touched groups.  Triggers on the input tables:
 *	  they would fire for writes outside a batch and send every insert down
 *	  the row-by-row path.  Storing the query text and running it at each
 *	  batch: a function created later in someone's search_path could slip
 *	  in, and a rename would break it.  Keys as one composite value per row:
 *	  the planner cannot push a join with a list of composites below a GROUP
 *	  BY, so each batch would aggregate the whole input.  Incremental
 *	  maintenance of a query calling a stable function (now(), date_trunc
 *	  of a timestamptz, anything reading TimeZone or DateStyle): the groups
 *	  a batch recomputes would use its time and its session's settings, the
 *	  untouched ones those of earlier batches, a model equal to its query
 *	  at no time and in no session; such a model is rebuilt in full.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/model.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"

PG_FUNCTION_INFO_V1(sluice_model_bind);
PG_FUNCTION_INFO_V1(sluice_model_analyze);

/* One GROUP BY expression of an incremental model, evaluated on its input. */
typedef struct ModelGroup
{
	ExprState  *state;
	FmgrInfo	out;
	char	   *column;			/* the model's column holding it */
	Oid			type;
	int32		typmod;
	HTAB	   *seen;			/* char * -> itself: values touched */
	bool		hasnull;		/* a touched row had NULL */
} ModelGroup;

/* An incremental model over one input table. */
typedef struct ModelTrack
{
	int			model_id;
	int			ngroups;
	ModelGroup *groups;
} ModelTrack;

/* A table some model reads, as one batch writes it. */
struct ModelInput
{
	Oid			relid;
	bool		changed;		/* the batch wrote a row of it */
	char	   *full_reason;	/* set: the batch rebuilds its models in full */
	int64		nkeys;			/* values kept over all its tracks */
	List	   *models;			/* int: every model reading it */
	List	   *tracks;			/* ModelTrack * */
	ExprContext *econtext;
};

/* What maintaining one model did in a batch (sluice._run_model). */
typedef struct ModelResult
{
	int			model_id;
	const char *maintenance;	/* incremental or full */
	char	   *reason;			/* why full, or NULL */
	int64		groups;			/* touched values (incremental) */
	int64		deleted;
	int64		inserted;
	double		ms;
	StringInfoData expectations;	/* JSON objects, comma-separated */
} ModelResult;

static MemoryContext model_cxt = NULL;	/* the batch's; reset at the next */
static List *model_inputs = NIL;	/* ModelInput * */
static List *model_results = NIL;	/* ModelResult * */

/* ---------- declaration ---------- */

/* The first function a bound query calls that its owner does not trust. */
typedef struct ModelFuncCheck
{
	Oid			owner;
	Oid			foreign;
	Oid			foreign_owner;
} ModelFuncCheck;

static Query *model_view_query(Oid viewid);

static bool
model_func_foreign(Oid funcid, void *context)
{
	ModelFuncCheck *c = context;
	HeapTuple	tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	Oid			proowner;

	if (!HeapTupleIsValid(tp))
		return false;
	proowner = ((Form_pg_proc) GETSTRUCT(tp))->proowner;
	ReleaseSysCache(tp);
	if (superuser_arg(proowner) || has_privs_of_role(c->owner, proowner))
		return false;
	c->foreign = funcid;
	c->foreign_owner = proowner;
	return true;
}

static bool
model_foreign_walker(Node *node, ModelFuncCheck *c)
{
	if (node == NULL)
		return false;
	if (IsA(node, Aggref) && model_func_foreign(((Aggref *) node)->aggfnoid, c))
		return true;
	if (IsA(node, WindowFunc) && model_func_foreign(((WindowFunc *) node)->winfnoid, c))
		return true;
	if (check_functions_in_node(node, model_func_foreign, c))
		return true;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, model_foreign_walker, c, 0);
	return expression_tree_walker(node, model_foreign_walker, c);
}

/*
 * sluice._model_bind(pipeline_id, schema, name, query, search_schemas):
 * the query, checked to be one plain SELECT, made the view schema.name as
 * the pipeline's owner (restricted), its names resolved in pg_catalog then
 * search_schemas.  The caller must operate the pipeline.
 */
Datum
sluice_model_bind(PG_FUNCTION_ARGS)
{
	int			pipeline_id = PG_GETARG_INT32(0);
	char	   *schema = NameStr(*PG_GETARG_NAME(1));
	char	   *name = NameStr(*PG_GETARG_NAME(2));
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(3));
	ArrayType  *schemas = PG_GETARG_ARRAYTYPE_P(4);
	List	   *raw;
	RawStmt    *rs;
	SluicePipeline *pipe;
	SluiceUser	save;
	StringInfoData path;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			nest;

	raw = raw_parser(query, RAW_PARSE_DEFAULT);
	rs = list_length(raw) == 1 ? linitial_node(RawStmt, raw) : NULL;
	if (rs == NULL || !IsA(rs->stmt, SelectStmt) || ((SelectStmt *) rs->stmt)->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a model's query must be one SELECT"),
				 errdetail("It is %d statement(s)%s.", list_length(raw),
						   list_length(raw) == 1 ? ", not a plain SELECT" : ""),
				 errhint("Give one SELECT (or VALUES, or TABLE) without INTO and without a semicolon between statements.")));

	initStringInfo(&path);
	appendStringInfoString(&path, "pg_catalog");
	deconstruct_array(schemas, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
		if (!nulls[i])
			appendStringInfo(&path, ", %s", quote_identifier(NameStr(*DatumGetName(elems[i]))));
	appendStringInfoString(&path, ", pg_temp");

	SPI_connect();
	pipe = catalog_pipeline_operated(pipeline_id, "build a model on");
	sluice_become_owner(pipe, &save);
	nest = NewGUCNestLevel();
	(void) set_config_option("search_path", path.data, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_execute(psprintf("CREATE VIEW %s AS %s", quote_qualified_identifier(schema, name), query),
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create the view of model \"%s\"", name);
	AtEOXact_GUC(true, nest);

	/*
	 * Every batch runs the query as the owner: a function (or operator,
	 * aggregate, cast) of another role would run its code with the owner's
	 * rights.  The search path includes the target schemas, where a role
	 * with CREATE (on public, say) can plant a better-matching
	 * lower(varchar) than pg_catalog's lower(text).
	 */
	CommandCounterIncrement();
	{
		ModelFuncCheck c = {pipe->owner, InvalidOid, InvalidOid};
		Oid			viewid = get_relname_relid(name, get_namespace_oid(schema, false));

		if (model_foreign_walker((Node *) model_view_query(viewid), &c))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("a model's query calls %s, owned by role \"%s\"",
							format_procedure_qualified(c.foreign),
							GetUserNameFromId(c.foreign_owner, false)),
					 errdetail("A model's query runs as the owner of its pipelines (\"%s\") at every batch: it may call only functions of that owner, of roles whose privileges it has, or of a superuser.",
							   GetUserNameFromId(pipe->owner, false)),
					 errhint("Qualify the function you meant (pg_catalog.lower), or have the owner create the function.")));
	}
	sluice_restore_user(&save);
	SPI_finish();
	PG_RETURN_VOID();
}

/* The query a view stands for (a copy). */
static Query *
model_view_query(Oid viewid)
{
	Relation	rel = try_relation_open(viewid, AccessShareLock);
	Query	   *q;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the query of a model (view %u) no longer exists", viewid),
				 errdetail("Someone dropped the view pg_sluice bound the model's query to."),
				 errhint("sluice.models lists the models: drop the one whose query is gone (sluice.drop_model) and create it again.")));
	if (rel->rd_rel->relkind != RELKIND_VIEW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not the view of a model", RelationGetRelationName(rel)),
				 errhint("Rebuild the model: sluice.alter_model(name, query).")));
	q = copyObject(get_view_query(rel));
	relation_close(rel, AccessShareLock);
	return q;
}

/* Does an expression read only columns of range table entry rtindex? */
static bool
model_other_vars(Node *node, Index *rtindex)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
		return ((Var *) node)->varno != *rtindex || ((Var *) node)->varlevelsup != 0;
	if (IsA(node, SubLink) || IsA(node, Query) || IsA(node, Aggref) || IsA(node, WindowFunc))
		return true;
	return expression_tree_walker(node, model_other_vars, rtindex);
}

/*
 * Can the model of this query be maintained group by group?  NULL if so,
 * with its one input table and its GROUP BY target entries; else why not.
 */
static const char *
model_incremental(Query *q, Oid *input, List **tles)
{
	RangeTblRef *rtr;
	RangeTblEntry *rte;
	ListCell   *lc;
	Index		rtindex;

	*tles = NIL;
	if (q->setOperations)
		return "it is a set operation (UNION, INTERSECT or EXCEPT)";
	if (q->cteList)
		return "it has a WITH clause";
	if (q->hasSubLinks)
		return "it has a subquery";
	if (q->hasWindowFuncs)
		return "it has a window function";
	if (q->hasTargetSRFs)
		return "it returns a set-returning function";
	if (q->groupingSets)
		return "it groups by GROUPING SETS, ROLLUP or CUBE";
	if (q->limitCount || q->limitOffset)
		return "it has LIMIT or OFFSET";
	if (list_length(q->jointree->fromlist) != 1 || !IsA(linitial(q->jointree->fromlist), RangeTblRef))
		return "it reads more than one table (a join)";
	if (q->groupClause == NIL)
		return "it has no GROUP BY";
	if (q->hasDistinctOn)
		return "it has DISTINCT ON";
	rtr = linitial(q->jointree->fromlist);
	rtindex = rtr->rtindex;
	rte = rt_fetch(rtindex, q->rtable);
	if (rte->rtekind != RTE_RELATION || rte->tablesample != NULL ||
		(rte->relkind != RELKIND_RELATION && rte->relkind != RELKIND_PARTITIONED_TABLE))
		return "it reads something other than one table";
	if (contain_volatile_functions((Node *) q))
		return "it calls a volatile function";
	/* groups recomputed now must agree with groups computed by other batches */
	if (contain_mutable_functions((Node *) q))
		return "it calls a function whose result depends on the time or the session's settings (now(), TimeZone, DateStyle: a stable function)";
	foreach(lc, q->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, q->targetList);
		Oid			type = exprType((Node *) tle->expr);

		if (tle->resjunk || tle->resname == NULL)
			return "a GROUP BY expression is not a column of its result";
		if (model_other_vars((Node *) tle->expr, &rtindex))
			return "a GROUP BY expression is not over the columns of its table";
		if (type_is_array(type) || !OidIsValid(get_array_type(type)))
			return "it groups by an array, or a type without arrays";
		*tles = lappend(*tles, tle);
	}
	*input = rte->relid;
	return NULL;
}

/*
 * sluice._model_analyze(view): how a model of this view is maintained:
 * (maintenance 'incremental' or 'full', reason, input table, group_by
 * columns of the result).
 */
Datum
sluice_model_analyze(PG_FUNCTION_ARGS)
{
	Oid			viewid = PG_GETARG_OID(0);
	Query	   *q = model_view_query(viewid);
	Oid			input = InvalidOid;
	List	   *tles;
	const char *why = model_incremental(q, &input, &tles);
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	Datum	   *cols;
	ListCell   *lc;
	int			i = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = CStringGetTextDatum(why ? "full" : "incremental");
	values[1] = CStringGetTextDatum(why ? why :
									"GROUP BY expressions of one table: the groups a batch touches are recomputed");
	values[2] = ObjectIdGetDatum(input);
	nulls[2] = why != NULL;
	cols = palloc(sizeof(Datum) * Max(list_length(tles), 1));
	foreach(lc, tles)
		cols[i++] = DirectFunctionCall1(namein, CStringGetDatum(((TargetEntry *) lfirst(lc))->resname));
	values[3] = PointerGetDatum(construct_array(cols, i, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---------- what a batch touches ---------- */

static uint32
model_str_hash(const void *key, Size keysize)
{
	return string_hash(*(char *const *) key, strlen(*(char *const *) key) + 1);
}

static int
model_str_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* A new batch: forget the last one's inputs and results. */
void
model_batch_reset(void)
{
	if (model_cxt == NULL)
		model_cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice models",
										  ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(model_cxt);
	model_inputs = NIL;
	model_results = NIL;
}

/*
 * A batch opens a datamart table: the models that read it, or NULL.  For
 * each incremental one, its GROUP BY expressions are prepared for the rows.
 */
ModelInput *
model_input_open(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			types[1] = {OIDOID};
	Datum		args[1];
	ModelInput *mi;
	MemoryContext old;
	int			nrows;
	int		   *ids;
	Oid		   *views;
	bool	   *incr;
	int			i;
	ListCell   *lc;

	/* a catalog from before models (0.1, not yet updated) has none */
	if (!OidIsValid(get_relname_relid("_model_input", get_namespace_oid("sluice", false))))
		return NULL;
	if (model_cxt == NULL)
		model_batch_reset();
	foreach(lc, model_inputs)
	{
		mi = lfirst(lc);
		if (mi->relid == relid)
			return mi;
	}
	args[0] = ObjectIdGetDatum(relid);
	if (sluice_catalog_exec("SELECT m.model_id, m.query_view::pg_catalog.oid, m.maintenance = 'incremental' "
							"  FROM sluice._model_input i JOIN sluice._model m USING (model_id) "
							" WHERE i.relid = $1::pg_catalog.regclass ORDER BY m.model_id",
							1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the models of a table");
	nrows = SPI_processed;
	if (nrows == 0)
		return NULL;
	ids = palloc(sizeof(int) * nrows);
	views = palloc(sizeof(Oid) * nrows);
	incr = palloc(sizeof(bool) * nrows);
	for (i = 0; i < nrows; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		views[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		incr[i] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
	}

	old = MemoryContextSwitchTo(model_cxt);
	mi = palloc0(sizeof(ModelInput));
	mi->relid = relid;
	mi->econtext = CreateStandaloneExprContext();
	for (i = 0; i < nrows; i++)
	{
		Query	   *q;
		Oid			input = InvalidOid;
		List	   *tles;
		ModelTrack *tr;
		int			g = 0;

		mi->models = lappend_int(mi->models, ids[i]);
		if (!incr[i])
			continue;
		q = model_view_query(views[i]);
		/* the view no longer allows it: model_maintain rebuilds in full */
		if (model_incremental(q, &input, &tles) != NULL || input != relid)
			continue;
		tr = palloc0(sizeof(ModelTrack));
		tr->model_id = ids[i];
		tr->ngroups = list_length(tles);
		tr->groups = palloc0(sizeof(ModelGroup) * tr->ngroups);
		foreach(lc, tles)
		{
			TargetEntry *tle = lfirst(lc);
			ModelGroup *mg = &tr->groups[g++];
			HASHCTL		ctl;
			Oid			outfn;
			bool		isvarlena;

			mg->state = ExecInitExpr(tle->expr, NULL);
			mg->type = exprType((Node *) tle->expr);
			mg->typmod = exprTypmod((Node *) tle->expr);
			getTypeOutputInfo(mg->type, &outfn, &isvarlena);
			fmgr_info_cxt(outfn, &mg->out, model_cxt);
			mg->column = pstrdup(tle->resname);
			memset(&ctl, 0, sizeof(ctl));
			ctl.keysize = sizeof(char *);
			ctl.entrysize = sizeof(char *);
			ctl.hash = model_str_hash;
			ctl.match = model_str_match;
			ctl.hcxt = model_cxt;
			mg->seen = hash_create("pg_sluice touched groups", 64, &ctl,
								   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
		}
		mi->tracks = lappend(mi->tracks, tr);
	}
	model_inputs = lappend(model_inputs, mi);
	MemoryContextSwitchTo(old);
	return mi;
}

/* The batch rebuilds the models over this table in full: stop collecting. */
static void
model_input_full(ModelInput *mi, const char *reason)
{
	ListCell   *lc;

	mi->full_reason = MemoryContextStrdup(model_cxt, reason);
	foreach(lc, mi->tracks)
	{
		ModelTrack *tr = lfirst(lc);
		int			g;

		for (g = 0; g < tr->ngroups; g++)
			hash_destroy(tr->groups[g].seen);
	}
	mi->tracks = NIL;
}

/* A row image the batch wrote (inserted, replaced or deleted). */
/*
 * A touched group's value as text, read back by the maintenance with its
 * type's input function: it must come back equal.  Floats print exactly
 * only with extra_float_digits above 0, which a session or a role may have
 * set lower (0 is the pre-12 output): a group printed short is found by
 * neither the delete nor the recompute, and stays stale.
 */
static char *
model_group_text(ModelGroup *mg, Datum d)
{
	int			save = extra_float_digits;
	char	   *volatile s = NULL;

	extra_float_digits = 1;
	PG_TRY();
	{
		s = OutputFunctionCall(&mg->out, d);
	}
	PG_FINALLY();
	{
		extra_float_digits = save;
	}
	PG_END_TRY();
	return s;
}

void
model_note_row(ModelInput *mi, TupleTableSlot *slot)
{
	ListCell   *lc;

	mi->changed = true;
	if (mi->tracks == NIL)
		return;
	mi->econtext->ecxt_scantuple = slot;
	foreach(lc, mi->tracks)
	{
		ModelTrack *tr = lfirst(lc);
		int			g;

		for (g = 0; g < tr->ngroups; g++)
		{
			ModelGroup *mg = &tr->groups[g];
			bool		isnull;
			Datum		d = ExecEvalExprSwitchContext(mg->state, mi->econtext, &isnull);
			char	   *s;
			char	  **e;
			bool		found;

			if (isnull)
			{
				mg->hasnull = true;
				continue;
			}
			s = model_group_text(mg, d);
			e = hash_search(mg->seen, &s, HASH_FIND, NULL);
			if (e != NULL)
				continue;
			if (++mi->nkeys > sluice_model_max_keys)
			{
				model_input_full(mi, psprintf("the batch touched more than pg_sluice.model_max_keys (%d) groups",
											  sluice_model_max_keys));
				ResetExprContext(mi->econtext);
				return;
			}
			e = hash_search(mg->seen, &s, HASH_ENTER, &found);
			*e = MemoryContextStrdup(model_cxt, s);
		}
	}
	ResetExprContext(mi->econtext);
}

/* The batch truncated the table: its models are rebuilt in full. */
void
model_note_truncate(ModelInput *mi)
{
	mi->changed = true;
	if (mi->full_reason == NULL)
		model_input_full(mi, "the source truncated an input");
}

/* ---------- maintenance ---------- */

static ModelTrack *
model_track(int model_id, ModelInput **from)
{
	ListCell   *lc;
	ListCell   *tc;

	foreach(lc, model_inputs)
	{
		ModelInput *mi = lfirst(lc);

		foreach(tc, mi->tracks)
		{
			ModelTrack *tr = lfirst(tc);

			if (tr->model_id == model_id)
			{
				*from = mi;
				return tr;
			}
		}
	}
	return NULL;
}

static char *
model_relname(Oid relid, const char *model)
{
	char	   *rel = get_rel_name(relid);
	Oid			nsp = get_rel_namespace(relid);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("a relation of model \"%s\" no longer exists", model),
				 errhint("Drop the model with sluice.drop_model('%s') and create it again.", model)));
	return quote_qualified_identifier(get_namespace_name(nsp), rel);
}

/* Run the model's expectations on what the batch wrote to it. */
static void
model_expectations(SluicePipeline *pipe, int model_id, const char *model,
				   Oid tableid, ModelResult *res, SluiceDrift **pause)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	int			n;
	int			i;
	char	  **names;
	char	  **checks;
	char	   *sev;

	args[0] = Int32GetDatum(model_id);
	if (sluice_catalog_exec("SELECT name, severity, check_tree::pg_catalog.text FROM sluice._model_expectation "
							" WHERE model_id = $1 ORDER BY expectation_id",
							1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the expectations of a model");
	n = SPI_processed;
	names = palloc(sizeof(char *) * Max(n, 1));
	checks = palloc(sizeof(char *) * Max(n, 1));
	sev = palloc(Max(n, 1));
	for (i = 0; i < n; i++)
	{
		names[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		sev[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2)[0];
		checks[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
	}
	for (i = 0; i < n; i++)
	{
		SluiceExpectation e;
		TupleDesc	desc;
		HeapTuple	tup;
		bool		isnull;
		int64		failed;
		int64		evaluated;
		char	   *observed;
		char	   *sample;
		MemoryContext old;

		memset(&e, 0, sizeof(e));
		e.name = names[i];
		e.severity = sev[i];
		e.check = checks[i];
		tup = expect_run_check(&e, &desc);
		failed = DatumGetInt64(heap_getattr(tup, 1, desc, &isnull));
		evaluated = DatumGetInt64(heap_getattr(tup, 2, desc, &isnull));
		observed = SPI_getvalue(tup, desc, 3);
		sample = SPI_getvalue(tup, desc, 4);
		old = MemoryContextSwitchTo(model_cxt);
		if (res->expectations.len > 0)
			appendStringInfoChar(&res->expectations, ',');
		sluice_json_begin(&res->expectations);
		sluice_json_string(&res->expectations, "name", e.name);
		sluice_json_raw(&res->expectations, "failed", psprintf(INT64_FORMAT, failed));
		sluice_json_raw(&res->expectations, "evaluated", psprintf(INT64_FORMAT, evaluated));
		sluice_json_string(&res->expectations, "observed", observed);
		sluice_json_raw(&res->expectations, "sample", sample ? sample : "null");
		sluice_json_end(&res->expectations);
		MemoryContextSwitchTo(old);
		if (failed > 0 && e.severity == 'e')
		{
			SluiceTable t;

			memset(&t, 0, sizeof(t));
			t.source_schema = "model";
			t.source_table = (char *) model;
			t.target_schema = get_namespace_name(get_rel_namespace(tableid));
			t.target_table = get_rel_name(tableid);
			expect_pause(pipe, &t, &e,
						 psprintf("Expectation \"%s\" on model \"%s\" failed for %lld %s%s.",
								  e.name, model, (long long) failed,
								  failed == 1 ? "value" : "values",
								  observed ? " (its observed value is data: not shown here)" : ""),
						 pause);
		}
		if (failed > 0 && e.severity == 'w')
			ereport(WARNING,
					(errmsg("expectation \"%s\" on model \"%s\" failed for %lld %s",
							e.name, model, (long long) failed, failed == 1 ? "value" : "values"),
					 errdetail("The model was maintained (severity warn); sluice.model_runs records it.")));
	}
}

/* Maintain one model, as the current user (the pipeline's owner). */
static void
model_maintain_one(SluicePipeline *pipe, int model_id, const char *model, Oid tableid,
				   Oid viewid, bool incremental, Oid owner, SluiceDrift **pause)
{
	TimestampTz started = GetCurrentTimestamp();
	char	   *table = model_relname(tableid, model);
	char	   *view = model_relname(viewid, model);
	Relation	vrel;
	StringInfoData cols;
	ModelResult *res;
	ModelInput *mi = NULL;
	ModelTrack *tr = NULL;
	MemoryContext old;
	long		secs;
	int			usecs;
	int			i;
	const char *del_prefix = "";
	const char *del_suffix = "";
	const char *ins_cols;
	const char *ins_vals;
	int			rc;

	if (owner != GetUserId())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("model \"%s\" is not owned by the owner of pipeline \"%s\"", model, pipe->name),
				 errdetail("A model is maintained as its owner, who must own every pipeline it reads."),
				 errhint("Give the pipelines to one owner (sluice.alter_pipeline_owner) or drop the model (sluice.drop_model('%s')) and create it again.",
						 model)));

	old = MemoryContextSwitchTo(model_cxt);
	res = palloc0(sizeof(ModelResult));
	res->model_id = model_id;
	initStringInfo(&res->expectations);
	MemoryContextSwitchTo(old);

	initStringInfo(&cols);
	vrel = relation_open(viewid, AccessShareLock);
	for (i = 0; i < RelationGetDescr(vrel)->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(vrel), i);

		if (att->attisdropped)
			continue;
		appendStringInfo(&cols, "%s%s", cols.len > 0 ? ", " : "", quote_identifier(NameStr(att->attname)));
	}
	relation_close(vrel, AccessShareLock);

	/*
	 * Versions: a model kept with history (its pipelines keep history) has
	 * _sluice_version, and the rows the batch replaces go to its history
	 * table valid for [_sluice_version, this batch's version).
	 */
	if (get_attnum(tableid, "_sluice_version") != InvalidAttrNumber)
	{
		char	   *hist;

		if (pipe->version == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("model \"%s\" keeps history and pipeline \"%s\" does not", model, pipe->name),
					 errhint("Call sluice.keep_history('%s'), or drop the model and create it again.", pipe->name)));
		hist = quote_qualified_identifier(psprintf("%s_history", get_namespace_name(get_rel_namespace(tableid))),
										  get_rel_name(tableid));
		del_prefix = "WITH d AS (";
		del_suffix = psprintf(" RETURNING m.*) INSERT INTO %s SELECT d.*, " INT64_FORMAT " FROM d", hist, pipe->version);
		ins_cols = psprintf("%s, _sluice_version", cols.data);
		ins_vals = psprintf("%s, " INT64_FORMAT, cols.data, pipe->version);
	}
	else
	{
		ins_cols = cols.data;
		ins_vals = cols.data;
	}

	/* readers keep the version before; two pipelines' batches take turns */
	if (SPI_execute(psprintf("LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE", table), false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock model \"%s\"", model);

	if (incremental)
	{
		tr = model_track(model_id, &mi);
		if (tr == NULL)
		{
			ListCell   *lc;

			/* its input's batch rebuilds in full, or the view changed */
			foreach(lc, model_inputs)
			{
				ModelInput *m2 = lfirst(lc);

				if (list_member_int(m2->models, model_id) && m2->full_reason != NULL)
					res->reason = m2->full_reason;
			}
			if (res->reason == NULL)
				res->reason = "its query is no longer one GROUP BY over one table";
		}
	}
	else
		res->reason = "its query is not incremental (sluice.models says why)";

	if (tr != NULL)
	{
		StringInfoData mpred;
		StringInfoData vpred;
		Oid		   *types = palloc(sizeof(Oid) * tr->ngroups * 2);
		Datum	   *args = palloc(sizeof(Datum) * tr->ngroups * 2);

		initStringInfo(&mpred);
		initStringInfo(&vpred);
		for (i = 0; i < tr->ngroups; i++)
		{
			ModelGroup *mg = &tr->groups[i];
			const char *col = quote_identifier(mg->column);
			char	   *type = format_type_extended(mg->type, mg->typmod,
													FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
			long		nv = hash_get_num_entries(mg->seen);
			Datum	   *vals = palloc(sizeof(Datum) * Max(nv, 1));
			HASH_SEQ_STATUS hs;
			char	  **e;
			int			k = 0;

			hash_seq_init(&hs, mg->seen);
			while ((e = hash_seq_search(&hs)) != NULL)
				vals[k++] = CStringGetTextDatum(*e);
			res->groups += nv + (mg->hasnull ? 1 : 0);
			types[2 * i] = TEXTARRAYOID;
			args[2 * i] = PointerGetDatum(construct_array(vals, k, TEXTOID, -1, false, TYPALIGN_INT));
			types[2 * i + 1] = BOOLOID;
			args[2 * i + 1] = BoolGetDatum(mg->hasnull);
			appendStringInfo(&mpred, "%s(m.%s = ANY ($%d::pg_catalog.text[]::%s[]) OR ($%d AND m.%s IS NULL))",
							 i > 0 ? " AND " : "", col, 2 * i + 1, type, 2 * i + 2, col);
			appendStringInfo(&vpred, "%s(v.%s = ANY ($%d::pg_catalog.text[]::%s[]) OR ($%d AND v.%s IS NULL))",
							 i > 0 ? " AND " : "", col, 2 * i + 1, type, 2 * i + 2, col);
		}
		res->maintenance = "incremental";
		rc = SPI_execute_with_args(psprintf("%sDELETE FROM %s m WHERE %s%s", del_prefix, table, mpred.data, del_suffix),
								   tr->ngroups * 2, types, args, NULL, false, 0);
		if (rc != SPI_OK_DELETE && rc != SPI_OK_INSERT)
			elog(ERROR, "could not delete the touched groups of model \"%s\"", model);
		res->deleted = SPI_processed;
		if (SPI_execute_with_args(psprintf("INSERT INTO %s (%s) SELECT %s FROM %s v WHERE %s",
										   table, ins_cols, ins_vals, view, vpred.data),
								  tr->ngroups * 2, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not recompute the touched groups of model \"%s\"", model);
		res->inserted = SPI_processed;
	}
	else
	{
		res->maintenance = "full";
		rc = SPI_execute(psprintf("%sDELETE FROM %s m%s", del_prefix, table, del_suffix), false, 0);
		if (rc != SPI_OK_DELETE && rc != SPI_OK_INSERT)
			elog(ERROR, "could not empty model \"%s\"", model);
		res->deleted = SPI_processed;
		if (SPI_execute(psprintf("INSERT INTO %s (%s) SELECT %s FROM %s", table, ins_cols, ins_vals, view),
						false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not rebuild model \"%s\"", model);
		res->inserted = SPI_processed;
	}
	if (res->reason != NULL)
		res->reason = MemoryContextStrdup(model_cxt, res->reason);
	TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
	res->ms = secs * 1000.0 + usecs / 1000.0;
	old = MemoryContextSwitchTo(model_cxt);
	model_results = lappend(model_results, res);
	MemoryContextSwitchTo(old);

	model_expectations(pipe, model_id, model, tableid, res, pause);
}

/*
 * The end of a batch: maintain every model whose inputs it changed, and the
 * models over those, in dependency order.  Runs as the pipeline's owner,
 * restricted, with the caller's SPI connection.
 */
void
model_maintain(SluicePipeline *pipe, SluiceDrift **pause)
{
	Datum	   *changed;
	int			nchanged = 0;
	Oid			types[1] = {OIDARRAYOID};
	Datum		args[1];
	int			n;
	int			i;
	int		   *ids;
	char	  **names;
	Oid		   *tables;
	Oid		   *views;
	bool	   *incr;
	Oid		   *owners;
	ListCell   *lc;

	if (model_inputs == NIL)
		return;
	changed = palloc(sizeof(Datum) * list_length(model_inputs));
	foreach(lc, model_inputs)
	{
		ModelInput *mi = lfirst(lc);

		if (mi->changed)
			changed[nchanged++] = ObjectIdGetDatum(mi->relid);
	}
	if (nchanged == 0)
		return;
	args[0] = PointerGetDatum(construct_array(changed, nchanged, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	if (sluice_catalog_exec("WITH RECURSIVE todo(model_id) AS ("
							"  SELECT i.model_id FROM sluice._model_input i "
							"   WHERE i.relid::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1) "
							"  UNION "
							"  SELECT i.model_id FROM sluice._model_input i JOIN todo ON i.input_model = todo.model_id) "
							"SELECT m.model_id, m.name, m.model_table::pg_catalog.oid, m.query_view::pg_catalog.oid, "
							"       m.maintenance = 'incremental', m.owner::pg_catalog.oid "
							"  FROM sluice._model m JOIN todo USING (model_id) ORDER BY m.depth, m.model_id",
							1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the models to maintain");
	n = SPI_processed;
	ids = palloc(sizeof(int) * Max(n, 1));
	names = palloc(sizeof(char *) * Max(n, 1));
	tables = palloc(sizeof(Oid) * Max(n, 1));
	views = palloc(sizeof(Oid) * Max(n, 1));
	incr = palloc(sizeof(bool) * Max(n, 1));
	owners = palloc(sizeof(Oid) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		ids[i] = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		names[i] = SPI_getvalue(tup, desc, 2);
		tables[i] = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		views[i] = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		incr[i] = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		owners[i] = DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull));
	}
	for (i = 0; i < n; i++)
		model_maintain_one(pipe, ids[i], names[i], tables[i], views[i], incr[i], owners[i], pause);
}

/* Record what maintaining the models did in the run (sluice._run_model). */
void
model_record_results(int64 run_id)
{
	Oid			types[9] = {INT8OID, INT4OID, TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID,
	FLOAT8OID, TEXTOID};
	ListCell   *lc;

	foreach(lc, model_results)
	{
		ModelResult *r = lfirst(lc);
		Datum		args[9];
		char		nulls[9];

		memset(nulls, ' ', sizeof(nulls));
		args[0] = Int64GetDatum(run_id);
		args[1] = Int32GetDatum(r->model_id);
		args[2] = CStringGetTextDatum(r->maintenance);
		if (r->reason)
			args[3] = CStringGetTextDatum(r->reason);
		else
			nulls[3] = 'n';
		args[4] = Int64GetDatum(r->groups);
		args[5] = Int64GetDatum(r->deleted);
		args[6] = Int64GetDatum(r->inserted);
		args[7] = Float8GetDatum(r->ms);
		args[8] = CStringGetTextDatum(psprintf("[%s]", r->expectations.data));
		if (sluice_catalog_exec("INSERT INTO sluice._run_model (run_id, model_id, maintenance, reason, groups, "
								"  rows_deleted, rows_inserted, duration, expectations) "
								"SELECT $1, $2, $3, $4, $5, $6, $7, pg_catalog.make_interval(secs => $8 / 1000), $9::pg_catalog.jsonb "
								" WHERE EXISTS (SELECT 1 FROM sluice._model WHERE model_id = $2)",
								9, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the maintenance of a model");
	}
}

/*
 * The models whose query reads a column of a datamart table, as a list for
 * a message ("a", "b"), or NULL.  A model's query is a view over the
 * table, which pins the column's type (sluice._models_reading).
 */
char *
model_readers(Oid relid, const char *column)
{
	Oid			types[2] = {REGCLASSOID, NAMEOID};
	Datum		args[2];
	bool		isnull;
	Datum		d;

	args[0] = ObjectIdGetDatum(relid);
	args[1] = DirectFunctionCall1(namein, CStringGetDatum(column));
	if (sluice_catalog_exec("SELECT sluice._models_reading($1, $2)", 2, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the models reading a column");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * Rows written to a datamart table outside a batch (sluice.repair): the
 * models that read it are rebuilt, as the caller, who operates the pipeline
 * (sluice._models_after_write; release_quarantined calls it in SQL).
 */
void
model_after_write(const char *schema, const char *table)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];

	args[0] = CStringGetTextDatum(schema);
	args[1] = CStringGetTextDatum(table);
	if (SPI_execute_with_args("SELECT sluice._models_after_write(pg_catalog.format('%I.%I', $1, $2)::pg_catalog.regclass)",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not rebuild the models of a repaired table");
}
