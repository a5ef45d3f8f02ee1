/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable entry points: sources, pipelines, refresh.
 *
 * NOTES
 *	  What this file owns.  The C functions behind sluice.create_source,
 *	  alter_source, drop_source, create_pipeline, refresh, drop_pipeline and
 *	  their private helpers (_announce_failure, _type_name, _one_expression):
 *	  argument checks, permission checks, and the result rows.  Each function
 *	  validates everything it can before it changes anything, on the source or
 *	  here; then it calls the file that does the work: source.c to ask the
 *	  source, pipeline.c to create or drop, refresh.c to apply.  A failure
 *	  part-way through pipeline creation drops what it created on the source
 *	  before the error propagates (pipeline_create); the local part rolls back
 *	  with the transaction.  A failed refresh is announced over a separate
 *	  connection to this database, so that its event survives the rollback.
 *
 *	  What it never does.  Build DDL for a datamart table, read the source's
 *	  catalog, or apply a change itself.  The SQL functions of continuous mode
 *	  (launcher.c), of expectations (expect.c) and of the notifier (notify.c)
 *	  live with the shared state or the code they drive.
 *
 *	  Rejected.  SECURITY DEFINER wrappers around the entry points (see
 *	  security.c: the caller's identity would be lost).  Writing
 *	  create_pipeline in PL/pgSQL: it talks to the source over libpq and must
 *	  undo there what it did when a later step fails.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/genam.h"
#include "access/table.h"
#include "utils/rel.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_type.h"
#include "parser/parser.h"
#include "nodes/parsenodes.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "commands/dbcommands.h"
#include "utils/json.h"
#include "utils/guc.h"
#include "postmaster/postmaster.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"

PG_FUNCTION_INFO_V1(sluice_create_source);
PG_FUNCTION_INFO_V1(sluice_alter_source);
PG_FUNCTION_INFO_V1(sluice_drop_source);
PG_FUNCTION_INFO_V1(sluice_create_pipeline);
PG_FUNCTION_INFO_V1(sluice_refresh);
PG_FUNCTION_INFO_V1(sluice_drop_pipeline);
PG_FUNCTION_INFO_V1(sluice_announce_failure);
PG_FUNCTION_INFO_V1(sluice_accept_rename);

/* ---------- helpers ---------- */

static void
check_name(const char *what, const char *name)
{
	int			len = strlen(name);
	int			i;
	bool		ok = len >= 1 && len <= 48 &&
		((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_');

	for (i = 1; ok && i < len; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') ||
			(name[i] >= '0' && name[i] <= '9') || name[i] == '_';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s name \"%s\"", what, name),
				 errdetail("Names are 1 to 48 lower-case letters, digits or underscores, starting with a letter or underscore.")));
}

/* ---------- sources ---------- */

/*
 * Run fn with errors that never show the statement: the statement that
 * calls create_source or alter_source holds a connection string, maybe with
 * a password, and log_min_error_statement would copy it into the server
 * log.
 */
static Datum
hiding_statement(PGFunction fn, FunctionCallInfo fcinfo)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		result = (Datum) 0;

	PG_TRY();
	{
		result = fn(fcinfo);
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
	return result;
}

static Datum
create_source(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];

	check_name("source", name);
	transport_check_conninfo(conninfo);

	SPI_connect();
	if (sluice_spi_exists("SELECT 1 FROM sluice._source WHERE name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("source \"%s\" already exists", name),
				 errhint("Use sluice.alter_source() to change its connection string.")));
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(conninfo);
	sluice_spi_exec("INSERT INTO sluice._source (name, conninfo) VALUES ($1, $2)",
					2, types, args, SPI_OK_INSERT);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

Datum
sluice_create_source(PG_FUNCTION_ARGS)
{
	return hiding_statement(create_source, fcinfo);
}

static Datum
alter_source(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];

	transport_check_conninfo(conninfo);
	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(conninfo);
	sluice_spi_exec("UPDATE sluice._source SET conninfo = $2 WHERE name = $1",
					2, types, args, SPI_OK_UPDATE);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("source \"%s\" does not exist", name),
				 errhint("sluice.sources lists the known sources.")));
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

Datum
sluice_alter_source(PG_FUNCTION_ARGS)
{
	return hiding_statement(alter_source, fcinfo);
}

Datum
sluice_drop_source(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {TEXTOID};
	Datum		args[1];

	SPI_connect();
	if (sluice_spi_exists("SELECT 1 FROM sluice._pipeline WHERE source_name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("source \"%s\" is used by a pipeline", name),
				 errhint("Drop its pipelines first with sluice.drop_pipeline().")));
	args[0] = CStringGetTextDatum(name);
	sluice_spi_exec("DELETE FROM sluice._source WHERE name = $1", 1, types, args, SPI_OK_DELETE);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("source \"%s\" does not exist", name),
				 errhint("sluice.sources lists the known sources.")));
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/* ---------- pipeline creation ---------- */

static Datum
make_result(FunctionCallInfo fcinfo, const char *pipeline, int64 run_id,
			const char *kind, ApplyStats *st, XLogRecPtr start_lsn,
			XLogRecPtr end_lsn, TimestampTz started, const char *status)
{
	TupleDesc	desc;
	Datum		values[12];
	bool		nulls[12];

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(pipeline);
	values[1] = Int64GetDatum(run_id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = Int64GetDatum(st->transactions);
	values[4] = Int64GetDatum(st->inserted);
	values[5] = Int64GetDatum(st->updated);
	values[6] = Int64GetDatum(st->deleted);
	values[7] = Int64GetDatum(st->truncated);
	values[8] = LSNGetDatum(start_lsn);
	nulls[8] = (start_lsn == InvalidXLogRecPtr);
	values[9] = LSNGetDatum(end_lsn);
	values[10] = DirectFunctionCall2(timestamp_mi,
									 TimestampTzGetDatum(GetCurrentTimestamp()),
									 TimestampTzGetDatum(started));
	values[11] = CStringGetTextDatum(status);
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/*
 * sluice.create_pipeline(name, source, tables, target_schema, publication,
 *						  slot_name)
 */
Datum
sluice_create_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *source;
	char	   *target_schema;
	char	   *publication;
	char	   *slot_name;
	char	   *origin_name;
	char	   *conninfo;
	bool		publication_given;
	bool		adopt;
	bool		publication_owned;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *elnulls;
	int			nelems;
	int			i;
	List	   *tables = NIL;
	ListCell   *lc;
	SluiceConn *sc;
	TimestampTz started = GetCurrentTimestamp();
	NewPipeline np;
	ApplyStats	stats;
	SluiceUser	save;
	bool		exists;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name, source and tables must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	source = text_to_cstring(PG_GETARG_TEXT_PP(1));
	arr = PG_GETARG_ARRAYTYPE_P(2);
	target_schema = PG_ARGISNULL(3) ? name : pstrdup(NameStr(*PG_GETARG_NAME(3)));
	publication_given = !PG_ARGISNULL(4);
	publication = publication_given ? text_to_cstring(PG_GETARG_TEXT_PP(4)) :
		psprintf("sluice_%s", name);
	slot_name = PG_ARGISNULL(5) ? psprintf("sluice_%s", name) :
		text_to_cstring(PG_GETARG_TEXT_PP(5));
	adopt = !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
	origin_name = psprintf("sluice_%s", name);

	check_name("pipeline", name);
	ReplicationSlotValidateName(slot_name, ERROR);
	if (publication[0] == '\0' || strlen(publication) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid publication name \"%s\"", publication)));
	if (target_schema[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target schema name must not be empty")));

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elnulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pipeline needs at least one table")));
	for (i = 0; i < nelems; i++)
		if (elnulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("table names must not be null")));

	/* A slot cannot be rolled back: like CREATE SUBSCRIPTION, refuse blocks. */
	PreventInTransactionBlock(true, "sluice.create_pipeline()");

	SPI_connect();
	conninfo = catalog_source_conninfo(source);
	sluice_become_catalog(&save);
	exists = sluice_spi_exists("SELECT 1 FROM sluice._pipeline WHERE name = $1", name);
	sluice_restore_user(&save);
	if (exists)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("pipeline \"%s\" already exists", name)));
	if (replorigin_by_name(origin_name, true) != InvalidRepOriginId)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replication origin \"%s\" already exists", origin_name),
				 errhint("A previous pipeline of that name left it behind; drop it with pg_replication_origin_drop().")));

	/* Everything we can check before writing anything. */
	sc = transport_connect(source, conninfo, false);
	source_check(sc, slot_name);
	for (i = 0; i < nelems; i++)
	{
		SourceTable *t = source_describe_table(sc, TextDatumGetCString(elems[i]));

		foreach(lc, tables)
		{
			SourceTable *o = lfirst(lc);

			if (strcmp(o->target, t->target) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("tables \"%s.%s\" and \"%s.%s\" would both become \"%s.%s\"",
								o->schema, o->name, t->schema, t->name, target_schema, t->target),
						 errhint("Put them in separate pipelines with different target schemas.")));
		}
		pipeline_check_target(t, target_schema, adopt);
		tables = lappend(tables, t);
	}

	/*
	 * A partition and its parent: published through the root, the
	 * partition's changes would all arrive as the parent's.
	 */
	foreach(lc, tables)
	{
		SourceTable *t = lfirst(lc);
		ListCell   *ac;
		ListCell   *oc;

		foreach(ac, t->ancestors)
			foreach(oc, tables)
			{
				SourceTable *o = lfirst(oc);

				if (strcmp(psprintf("%s.%s", o->schema, o->name), strVal(lfirst(ac))) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("table \"%s.%s\" is a partition of \"%s.%s\", also listed",
									t->schema, t->name, o->schema, o->name),
							 errdetail("A partitioned table is published through its root: its partitions' rows all arrive as its own."),
							 errhint("List either the partitioned table or its partitions, or put them in separate pipelines.")));
			}
	}

	memset(&np, 0, sizeof(np));
	publication_owned = !source_check_publication(sc, source, publication, publication_given, tables);

	np.name = name;
	np.source = source;
	np.conninfo = conninfo;
	np.target_schema = target_schema;
	np.publication = publication;
	np.publication_owned = publication_owned;
	np.slot_name = slot_name;
	np.origin_name = origin_name;
	np.tables = tables;
	np.started = started;
	pipeline_create(&np, sc);
	memset(&stats, 0, sizeof(stats));
	stats.inserted = np.copied;

	transport_close(sc);
	SPI_finish();
	PG_RETURN_DATUM(make_result(fcinfo, name, np.run_id, "initial_copy", &stats,
								InvalidXLogRecPtr, np.consistent, started, "succeeded"));
}

/* ---------- refresh ---------- */

/*
 * sluice.refresh(pipeline): apply everything committed on the source up to
 * now, exactly once.
 */
/*
 * Append keyword='value' to a connection string, quoting the value as
 * libpq wants (backslash and single quote escaped): names of databases and
 * roles may hold any character.
 */
static void
conninfo_append(StringInfo ci, const char *keyword, const char *value)
{
	const char *p;

	appendStringInfo(ci, "%s%s='", ci->len > 0 ? " " : "", keyword);
	for (p = value; *p; p++)
	{
		if (*p == '\\' || *p == '\'')
			appendStringInfoChar(ci, '\\');
		appendStringInfoChar(ci, *p);
	}
	appendStringInfoChar(ci, '\'');
}

/*
 * Announce a failed refresh through a separate connection to this database:
 * the failed refresh's rollback must not take its event with it.  Best
 * effort (a refused connection only costs the event, with a WARNING); the
 * connection touches the outbox only, never a row the failed transaction
 * holds.
 */
static void
announce_failure(const char *pipeline, ErrorData *edata)
{
	const char *dirs = GetConfigOption("unix_socket_directories", true, false);
	char	   *host = pstrdup(dirs && dirs[0] ? dirs : "localhost");
	char	   *comma = strchr(host, ',');
	StringInfoData body;
	MemoryContext cxt = CurrentMemoryContext;

	if (comma)
		*comma = '\0';
	initStringInfo(&body);
	sluice_json_begin(&body);
	sluice_json_string(&body, "status", "failed");
	sluice_json_string(&body, "kind", "refresh");
	sluice_json_string(&body, "job", psprintf("pg_sluice.%s", pipeline));
	sluice_json_string(&body, "error", edata->message ? edata->message : "unknown error");
	sluice_json_string(&body, "summary",
					   psprintf("refresh failed: %s", edata->message ? edata->message : "unknown error"));
	sluice_json_raw(&body, "tables", "[]");
	sluice_json_end(&body);

	PG_TRY();
	{
		SluiceConn *self;
		const char *params[2] = {pipeline, body.data};

		StringInfoData ci;

		initStringInfo(&ci);
		conninfo_append(&ci, "host", host);
		conninfo_append(&ci, "port", psprintf("%d", PostPortNumber));
		conninfo_append(&ci, "dbname", get_database_name(MyDatabaseId));
		conninfo_append(&ci, "user", GetUserNameFromId(GetUserId(), false));
		self = transport_connect("this datamart", ci.data, false);
		PQclear(transport_exec(self, "SELECT sluice._announce_failure($1, $2::jsonb)",
							   2, params, PGRES_TUPLES_OK, "queue the failure's event"));
		transport_close(self);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("the failure of pipeline \"%s\" could not be announced: %s", pipeline, e->message)));
	}
	PG_END_TRY();
}

/*
 * sluice._announce_failure(pipeline, body): queue a failed refresh's event.
 * sluice.refresh calls it over its own connection, as the role that called
 * the refresh.  Written in C rather than as a SECURITY DEFINER function,
 * which would lose who calls it: that role must be allowed to operate the
 * pipeline, and nothing running inside a refresh (a trigger of the
 * owner's, in the security-restricted operation) may call it at all.
 */
Datum
sluice_announce_failure(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *body = DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(1)));
	SluicePipeline *pipe;

	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot announce a failure of pipeline \"%s\" within a security-restricted operation", name)));
	SPI_connect();
	pipe = catalog_pipeline(name, false);
	sluice_check_operator(pipe, "announce a failure of");
	outbox_emit(name, "refresh_failed", body);
	SPI_finish();
	PG_RETURN_VOID();
}

Datum
sluice_refresh(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	SluicePipeline *pipe;
	SluiceConn *sc;
	TimestampTz started = GetCurrentTimestamp();
	RefreshResult r;
	int64		run_id;
	bool		announce;
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	pipe = catalog_pipeline(name, true);
	sluice_check_operator(pipe, "refresh");
	if (pipe->continuous)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("pipeline \"%s\" is streaming continuously", name),
				 errdetail("A background worker applies its changes; sluice.status shows it."),
				 errhint("Stop it with sluice.stop('%s') to refresh on demand or from pg_cron.", name)));

	if (pipe->paused_reason)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" is paused", name),
				 errdetail("%s", pipe->paused_reason),
				 errhint("Fix the contract or the datamart table, then call sluice.resume('%s'); sluice.drift_events has the details.", name)));

	{
		SluiceUser	save;

		/* destinations hold secrets: the extension owner's to read */
		sluice_become_catalog(&save);
		announce = sluice_spi_exists("SELECT 1 FROM sluice._destination WHERE $1 IS NOT NULL "
									 "   AND ('*' = ANY (events) OR 'refresh_failed' = ANY (events))", "x");
		sluice_restore_user(&save);
	}
	PG_TRY();
	{
		/* an HTTP pipeline has no PostgreSQL source (httpapply.c) */
		sc = pipe->http ? NULL : transport_connect(pipe->source_name, pipe->conninfo, false);
		refresh_pipeline(pipe, sc, 0, 0, &r);
		if (!r.conn_closed && sc != NULL)
			transport_close(sc);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		if (!announce)
			PG_RE_THROW();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		announce_failure(name, edata);
		ReThrowError(edata);
	}
	PG_END_TRY();

	run_id = refresh_record_run(pipe, "refresh", started, &r);
	/*
	 * live frees the batch's WAL right after the commit (slotwatch.c): over
	 * the walsender the slot is confirmed at the commit, but its restart
	 * position moves only with the mover
	 */
	if (r.stats.transactions > 0)
		slotwatch_move_after_commit(pipe);
	/* a copy whose workers are gone goes on (snapshot.c) */
	snapshot_copy_resume(pipe->pipeline_id);
	SPI_finish();
	PG_RETURN_DATUM(make_result(fcinfo, name, run_id, "refresh", &r.stats,
								r.start_lsn, r.end_lsn, started,
								r.paused ? "paused" : "succeeded"));
}

/* ---------- a source table renamed on live ---------- */

/*
 * sluice.accept_rename(pipeline): after a rename on live paused the
 * pipeline (policy freeze), record the name live gives each renamed table
 * now (identity.c); the next refresh, once resumed, applies the backlog
 * sent under the old name and the new one alike.
 */
Datum
sluice_accept_rename(PG_FUNCTION_ARGS)
{
	SluicePipeline *pipe;
	int			n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline must not be NULL"),
				 errhint("Name the pipeline whose source table was renamed (sluice.status).")));
	sluice_fix_search_path();
	SPI_connect();
	pipe = catalog_pipeline(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	sluice_check_operator(pipe, "accept a rename in");
	catalog_require_postgres(pipe, "accept a rename in");
	n = identity_accept_rename(pipe);
	SPI_finish();
	PG_RETURN_INT32(n);
}

/* ---------- drop ---------- */

Datum
sluice_drop_pipeline(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		drop_tables = PG_GETARG_BOOL(1);
	bool		force = PG_GETARG_BOOL(2);
	SluiceUser	save;
	SluicePipeline *pipe;
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[1] = {INT4OID};
	Datum		args[1];

	PreventInTransactionBlock(true, "sluice.drop_pipeline()");

	SPI_connect();
	/* a continuous worker lets go of the pipeline first */
	pipe = catalog_pipeline(name, false);
	sluice_check_operator(pipe, "drop");
	if (pipe->continuous)
		(void) worker_stop_pipeline(MyDatabaseId, pipe->pipeline_id, 60000);
	pipe = catalog_pipeline(name, true);

	/*
	 * A model reading the pipeline's tables holds them (its query is a view
	 * over them) and its catalog row: refuse before the slot on live is
	 * dropped, which no rollback brings back.
	 */
	args[0] = Int32GetDatum(pipe->pipeline_id);
	sluice_become_catalog(&save);
	sluice_spi_exec("SELECT pg_catalog.string_agg('\"' OPERATOR(pg_catalog.||) name OPERATOR(pg_catalog.||) '\"', ', ' ORDER BY name), "
					"       pg_catalog.min(name), pg_catalog.count(*) OPERATOR(pg_catalog.>) 1 "
					"  FROM (SELECT DISTINCT m.name FROM sluice._model_input i JOIN sluice._model m USING (model_id) "
					"         WHERE i.pipeline_id OPERATOR(pg_catalog.=) $1) x",
					1, types, args, SPI_OK_SELECT);
	sluice_restore_user(&save);
	if (SPI_processed == 1 && SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) != NULL)
	{
		char	   *models = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *first = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		bool		many = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), "t") == 0;

		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop pipeline \"%s\": %s %s %s its tables", pipe->name,
						many ? "models" : "model", models, many ? "read" : "reads"),
				 errdetail("Nothing was dropped, here or on the source."),
				 errhint("Drop the model first with sluice.drop_model('%s').", first)));
	}

	PG_TRY();
	{
		/* an HTTP pipeline has no slot nor publication anywhere */
		if (!pipe->http)
		{
			SluiceConn *sc = transport_connect(pipe->source_name, pipe->conninfo, false);

			source_drop(sc, pipe->slot_name, pipe->publication_owned ? pipe->publication : NULL);
			transport_close(sc);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (!force || edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			if (edata->sqlerrcode != ERRCODE_QUERY_CANCELED)
				edata->hint = pstrdup("To drop the pipeline here anyway, call sluice.drop_pipeline(pipeline, force => true); the slot then stays on the source and holds WAL until it is dropped there.");
			FlushErrorState();
			ReThrowError(edata);
		}
		FlushErrorState();
		ereport(WARNING,
				(errmsg("replication slot \"%s\" was left on source \"%s\": %s",
						pipe->slot_name, pipe->source_name, edata->message),
				 errhint("Drop it on the source with pg_drop_replication_slot('%s'); until then it holds WAL there.",
						 pipe->slot_name)));
	}
	PG_END_TRY();

	replorigin_drop_by_name(pipe->origin_name, true, false);

	if (drop_tables)
		pipeline_drop_tables(pipe);
	sluice_become_catalog(&save);
	/* views publishing its contract versions (sluice.publish_contract) */
	sluice_spi_exec("SELECT sluice._unpublish_pipeline($1)", 1, types, args, SPI_OK_SELECT);
	sluice_spi_exec("DELETE FROM sluice._pipeline WHERE pipeline_id = $1", 1, types, args, SPI_OK_DELETE);
	sluice_restore_user(&save);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/*
 * sluice._type_name(type text): the canonical name of a type written by a
 * user (format_type's, with its typmod), safe to splice into DDL.  Used
 * by sluice.accept_type_change.
 */
PG_FUNCTION_INFO_V1(sluice__type_name);
Datum
sluice__type_name(PG_FUNCTION_ARGS)
{
	char	   *str = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			typid;
	int32		typmod;

	parseTypeString(str, &typid, &typmod, false);
	PG_RETURN_TEXT_P(cstring_to_text(format_type_with_typemod(typid, typmod)));
}

/*
 * sluice._one_expression(expr text): expr, checked to be one scalar
 * expression (no statement after it, no FROM), before
 * sluice.accept_type_change puts it in USING (...).
 */
PG_FUNCTION_INFO_V1(sluice__one_expression);
Datum
sluice__one_expression(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	char	   *str = text_to_cstring(t);
	MemoryContext cxt = CurrentMemoryContext;
	List	   *volatile parsed = NIL;
	SelectStmt *sel = NULL;

	/* a syntax error is reported as not one expression (parsing holds no resources) */
	PG_TRY();
	{
		parsed = raw_parser(str, RAW_PARSE_PLPGSQL_EXPR);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		parsed = NIL;
	}
	PG_END_TRY();

	if (list_length(parsed) == 1 && IsA(linitial(parsed), RawStmt) &&
		IsA(((RawStmt *) linitial(parsed))->stmt, SelectStmt))
		sel = (SelectStmt *) ((RawStmt *) linitial(parsed))->stmt;
	if (sel == NULL || list_length(sel->targetList) != 1 || sel->fromClause != NIL ||
		sel->whereClause != NULL || sel->groupClause != NIL || sel->havingClause != NULL ||
		sel->windowClause != NIL || sel->sortClause != NIL || sel->limitCount != NULL ||
		sel->limitOffset != NULL || sel->lockingClause != NIL || sel->distinctClause != NIL ||
		((ResTarget *) linitial(sel->targetList))->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("using_expression must be one expression"),
				 errdetail("It was \"%s\".", str),
				 errhint("Write an expression of the column, such as %s.",
						 "'amount::numeric(12,2)' or 'NULLIF(code, '''')::integer'")));
	PG_RETURN_TEXT_P(t);
}
