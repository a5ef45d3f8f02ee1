/*-------------------------------------------------------------------------
 *
 * httpapply.c
 *	  An HTTP pipeline's refresh: each endpoint's pages written to its
 *	  datamart table through the apply family, its cursor moved with them.
 *
 * NOTES
 *	  What this file owns.  http_refresh, which refresh.c calls instead of
 *	  decoding a slot when the pipeline's source is an HTTP API, inside the
 *	  same subtransaction: a failure anywhere (page 7 not JSON, a timeout, a
 *	  cancel) rolls back every page and the cursors, and the refresh fails
 *	  (or pauses, for drift) as a PostgreSQL pipeline's does.  Exactly once
 *	  per refresh: the rows and the new cursors commit together.  Each
 *	  endpoint is a source relation to the apply family: a
 *	  LogicalRepRelation whose columns are the contract's JSON paths with
 *	  their declared types, plus any top-level field of a page no path
 *	  starts with (a new field: contract.c judges it by the drift policy,
 *	  as a new source column).  Each row is an upsert by the key
 *	  (apply_upsert): expectations, quarantine, versions and per-table counts
 *	  as for any change.  Also the SQL functions create_http_source (its
 *	  statement never shown: it holds secrets) and _mask_url.
 *
 *	  What it never does.  Speak HTTP or read JSON (httpsource.c), or keep
 *	  more than one page: pages are parsed and applied one at a time, each
 *	  in a context reset after it.
 *
 *	  Rejected.  A parallel apply for JSON rows (SPI INSERT ... ON CONFLICT):
 *	  it would skip the contract checks, quarantine, versions and counts the
 *	  apply family has.  Committing page by page: a failure in page 7 would
 *	  leave pages 1 to 6 applied and the cursor behind them.  Deletes: an API
 *	  pulled incrementally does not say what it dropped.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/httpapply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "pg_sluice.h"
#include "apply_internal.h"
#include "http_internal.h"

PG_FUNCTION_INFO_V1(sluice_create_http_source);
PG_FUNCTION_INFO_V1(sluice_mask_url);

/* ---------- SQL functions ---------- */

/*
 * sluice.create_http_source(name, base_url, bearer_token, username,
 * password, headers): sluice._create_http_source, with errors that never
 * show the statement (log_min_error_statement would copy the token).
 */
Datum
sluice_create_http_source(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		result = (Datum) 0;

	PG_TRY();
	{
		Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
		Datum		args[6];
		char		nulls[6];
		bool		isnull;
		int			i;

		for (i = 0; i < 6; i++)
		{
			args[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
			nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		}
		SPI_connect();
		if (SPI_execute_with_args("SELECT sluice._create_http_source($1, $2, $3, $4, $5, $6)",
								  6, types, args, nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not create the HTTP source");
		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		{
			MemoryContext spicxt = MemoryContextSwitchTo(cxt);

			result = PointerGetDatum(DatumGetTextPCopy(result));
			MemoryContextSwitchTo(spicxt);
		}
		SPI_finish();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		edata->hide_stmt = true;
		ReThrowError(edata);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(result);
}

/* sluice._mask_url(url) */
Datum
sluice_mask_url(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(http_mask_url(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/* ---------- the catalog ---------- */

static char *
get(int row, int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return v ? pstrdup(v) : NULL;
}

/* The pipeline's source, secrets included, and its endpoints (HttpEndpoint *). */
static HttpSource *
read_source(SluicePipeline *pipe, List **endpoints)
{
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		args[2];
	HttpSource *src = palloc0(sizeof(HttpSource));
	uint64		i;

	args[0] = CStringGetTextDatum(pipe->source_name);
	args[1] = Int32GetDatum(pipe->pipeline_id);
	if (sluice_catalog_exec("SELECT name, base_url, auth, username, secret, headers::text "
							"  FROM sluice._http_source WHERE name = $1",
							1, types, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "HTTP source \"%s\" of pipeline \"%s\" is missing", pipe->source_name, pipe->name);
	src->name = get(0, 1);
	src->base_url = get(0, 2);
	src->auth = get(0, 3);
	src->username = get(0, 4);
	src->secret = get(0, 5);
	src->headers = get(0, 6);
	if (sluice_catalog_exec("SELECT source_table, path, rows_path, cursor_kind, cursor_param, cursor_field, "
							"       paging, page_param, next_field, cursor_value, etag "
							"  FROM sluice._http_endpoint WHERE pipeline_id = $2 ORDER BY source_table",
							2, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the endpoints of pipeline \"%s\"", pipe->name);
	*endpoints = NIL;
	for (i = 0; i < SPI_processed; i++)
	{
		HttpEndpoint *ep = palloc0(sizeof(HttpEndpoint));

		ep->source_table = get(i, 1);
		ep->path = get(i, 2);
		ep->rows_path = get(i, 3);
		ep->cursor_kind = get(i, 4);
		ep->cursor_param = get(i, 5);
		ep->cursor_field = get(i, 6);
		ep->paging = get(i, 7);
		ep->page_param = get(i, 8);
		ep->next_field = get(i, 9);
		ep->cursor_value = get(i, 10);
		ep->etag = get(i, 11);
		*endpoints = lappend(*endpoints, ep);
	}
	return src;
}

/* Move an endpoint's cursor, in the refresh's subtransaction. */
static void
save_cursor(SluicePipeline *pipe, HttpEndpoint *ep)
{
	Oid			types[5] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(pipe->source_name);
	args[2] = CStringGetTextDatum(ep->source_table);
	args[3] = ep->cursor_value ? CStringGetTextDatum(ep->cursor_value) : (Datum) 0;
	nulls[3] = ep->cursor_value ? ' ' : 'n';
	args[4] = ep->etag ? CStringGetTextDatum(ep->etag) : (Datum) 0;
	nulls[4] = ep->etag ? ' ' : 'n';
	if (sluice_catalog_exec("UPDATE sluice._http_endpoint SET cursor_value = $4, etag = $5, "
							"       pulled_at = pg_catalog.now() "
							" WHERE (pipeline_id, source_schema, source_table) = ($1, $2, $3)",
							5, types, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not move the cursor of endpoint \"%s\"", ep->source_table);
}

/* ---------- the pull ---------- */

/* Where an error happened: the pipeline, the page, the row and its field. */
typedef struct PullContext
{
	ApplyState *st;
	HttpEndpoint *ep;
	const char *url;			/* shown URL of the page being applied */
	int			row;			/* -1: fetching */
} PullContext;

static void
pull_error_callback(void *arg)
{
	PullContext *pc = arg;
	ApplyState *st = pc->st;

	if (pc->row < 0)
		errcontext("pipeline \"%s\" pulling endpoint \"%s\"", st->pipe->name, pc->ep->source_table);
	else if (st->cur_rel && st->cur_att >= 0 && st->cur_att < st->cur_rel->remote_natts)
		errcontext("pipeline \"%s\" applying row %d of %s, field \"%s\"", st->pipe->name,
				   pc->row, pc->url, st->cur_rel->remote_attnames[st->cur_att]);
	else
		errcontext("pipeline \"%s\" applying row %d of %s", st->pipe->name, pc->row, pc->url);
}

static SluiceTable *
endpoint_table(SluicePipeline *pipe, HttpEndpoint *ep)
{
	ListCell   *lc;

	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);

		if (strcmp(t->source_table, ep->source_table) == 0)
			return t;
	}
	elog(ERROR, "endpoint \"%s\" of pipeline \"%s\" has no table", ep->source_table, pipe->name);
	return NULL;				/* keep the compiler quiet */
}

/* The endpoint as a source relation: the contract's paths, then the fields it left out. */
static void
endpoint_relation(SluiceTable *t, LogicalRepRelId relid, LogicalRepRelation *lr,
				  bool **required, bool **as_json, int max)
{
	ListCell   *lc;
	int			n = 0;

	memset(lr, 0, sizeof(*lr));
	lr->remoteid = relid;
	lr->nspname = t->source_schema;
	lr->relname = t->source_table;
	lr->replident = REPLICA_IDENTITY_DEFAULT;
	lr->attnames = palloc(sizeof(char *) * max);
	lr->atttyps = palloc(sizeof(Oid) * max);
	*required = palloc0(sizeof(bool) * max);
	*as_json = palloc0(sizeof(bool) * max);
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);

		if (c->source_column == NULL)
			continue;
		if (c->is_key)
			lr->attkeys = bms_add_member(lr->attkeys, n);
		(*required)[n] = c->not_null && !c->source_dropped;
		(*as_json)[n] = c->source_type == JSONOID || c->source_type == JSONBOID;
		lr->atttyps[n] = c->source_type;
		lr->attnames[n++] = c->source_column;
	}
	foreach(lc, t->ignored)
	{
		lr->atttyps[n] = TEXTOID;
		lr->attnames[n++] = strVal(lfirst(lc));
	}
	lr->natts = n;
}

/*
 * Pull one endpoint, every page, into its table.  The rows go through
 * apply_upsert; the cursor reached is left in ep for the caller to save.
 */
static void
pull_endpoint(ApplyState *st, HttpSource *src, HttpEndpoint *ep, LogicalRepRelId relid)
{
	SluiceTable *t = endpoint_table(st->pipe, ep);
	MemoryContext pagecxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice HTTP page",
												  ALLOCSET_DEFAULT_SIZES);
	LogicalRepRelation lr;
	bool	   *required;
	bool	   *as_json;
	int32	   *typmods;
	int			max = list_length(t->columns) + list_length(t->ignored) + 1024;
	bool		opened = false;
	HttpPull	pull;
	PullContext pc;
	ErrorContextCallback errcb;
	int			i;

	endpoint_relation(t, relid, &lr, &required, &as_json, max);
	typmods = palloc(sizeof(int32) * max);
	for (i = 0; i < max; i++)
		typmods[i] = -1;

	pc.st = st;
	pc.ep = ep;
	pc.url = NULL;
	pc.row = -1;
	errcb.callback = pull_error_callback;
	errcb.arg = &pc;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	http_pull_start(&pull, src, ep);
	for (;;)
	{
		HttpPage	page;
		MemoryContext old = MemoryContextSwitchTo(pagecxt);
		bool		more;
		ApplyRel   *ar;
		LogicalRepTupleData tup;
		int			r;

		pc.row = -1;
		more = http_pull_next(&pull, lr.natts, lr.attnames, required, as_json, &page);
		MemoryContextSwitchTo(old);
		if (!more || page.not_modified)
			break;
		if (page.nrows == 0)
		{
			MemoryContextReset(pagecxt);
			continue;
		}
		if (!opened || page.ncols > page.nasked)
		{
			/* new fields: announced as new source columns, judged by the contract */
			if (lr.natts + page.ncols - page.nasked > max)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("endpoint \"%s\" sends more than %d fields", ep->source_table, max),
						 errhint("Map what the datamart needs; nothing was applied.")));
			for (i = page.nasked; i < page.ncols; i++)
			{
				lr.attnames[lr.natts] = pstrdup(page.names[i]);
				lr.atttyps[lr.natts] = page.types[i];
				as_json[lr.natts] = page.types[i] == JSONBOID;
				required[lr.natts] = false;
				lr.natts++;
			}
			/* the new fields of this page are read again from it */
			for (i = page.nasked; i < page.ncols; i++)
				page.names[i] = lr.attnames[lr.natts - page.ncols + i];
			relmap_open(st, &lr, typmods);
			opened = true;
		}
		ar = relmap_get(st, relid);
		if (ar == NULL)
			elog(ERROR, "endpoint \"%s\" is not mapped", ep->source_table);

		pc.url = page.shown_url;
		old = MemoryContextSwitchTo(pagecxt);
		tup.ncols = lr.natts;
		tup.colvalues = palloc0(sizeof(StringInfoData) * lr.natts);
		tup.colstatus = palloc(lr.natts);
		for (r = 0; r < page.nrows; r++)
		{
			int			c;

			pc.row = r;
			for (c = 0; c < lr.natts; c++)
			{
				char	   *v = c < page.ncols ? page.values[r * page.ncols + c] : NULL;

				tup.colstatus[c] = v ? LOGICALREP_COLUMN_TEXT : LOGICALREP_COLUMN_NULL;
				tup.colvalues[c].data = v;
				tup.colvalues[c].len = v ? strlen(v) : 0;
				tup.colvalues[c].maxlen = tup.colvalues[c].len + 1;
				tup.colvalues[c].cursor = 0;
			}
			apply_upsert(st, ar, &tup);
			st->cur_att = -1;
			CHECK_FOR_INTERRUPTS();
		}
		MemoryContextSwitchTo(old);
		st->stats->transactions++;	/* a page: what a source transaction is to a slot */
		st->stats->messages += page.nrows;
		MemoryContextReset(pagecxt);
	}
	error_context_stack = errcb.previous;
	ep->cursor_value = pull.new_cursor;
	ep->etag = pull.new_etag;
	MemoryContextDelete(pagecxt);
}

/*
 * Refresh an HTTP pipeline: every endpoint pulled from its cursor and
 * applied, then the cursors moved, all in the caller's subtransaction
 * (refresh.c).  The caller holds the pipeline's lock and an SPI connection.
 */
void
http_refresh(SluicePipeline *pipe, RefreshResult *r)
{
	List	   *endpoints;
	HttpSource *src = read_source(pipe, &endpoints);
	ApplyState	st;
	ErrorContextCallback errcb;
	SluiceUser	owner_save;
	ListCell   *lc;
	int			k = 0;

	refresh_reserve_version(pipe, r);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	/* constraints immediate, rows written as the owner (refresh.c) */
	refresh_become_owner(pipe, &owner_save);
	apply_begin(&st, pipe, InvalidXLogRecPtr, &r->stats, &errcb);
	st.binary = false;			/* values come from JSON, as text */
	/* no pgoutput message to name: pull_endpoint's errors name the URL */
	error_context_stack = errcb.previous;
	foreach(lc, endpoints)
		pull_endpoint(&st, src, lfirst(lc), (LogicalRepRelId) ++k);
	apply_finish(&st, &errcb);
	/* models over what the pull changed, then set expectations (as refresh_inner) */
	if (r->stats.transactions > 0)
	{
		model_maintain(pipe, &r->stats.pause);
		expect_run_set_checks(pipe, &r->stats.pause);
	}
	sluice_restore_user(&owner_save);

	foreach(lc, endpoints)
		save_cursor(pipe, lfirst(lc));
	r->complete = true;
}
