/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Reads and writes of pg_sluice's own catalog tables (schema sluice).
 *
 * NOTES
 *	  What this file owns.  The catalog's rows as C structs (catalog_pipeline
 *	  reads a pipeline with its tables, contracts and expectations), the run
 *	  rows, and the SPI helpers the SQL entry points use for their own
 *	  statements (sluice_spi_exec, sluice_spi_exists).  Everything goes
 *	  through SPI with parameters; no value is ever spliced into SQL text.
 *	  The caller must be connected to SPI.
 *
 *	  What it never does.  Change who runs the statements: the caller decides;
 *	  sluice_catalog_exec (security.c) is the one way to run one as the
 *	  extension owner.
 *
 *	  Rejected.  A syscache-like cache of pipelines across transactions: every
 *	  batch reads its pipeline once, under the pipeline's row lock, which is
 *	  cheaper than keeping a cache valid.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/catalog.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"

static char *
getstr(int row, int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return v;
}

/* A text[] column of the row SPI just read, as a List of String. */
static List *
text_array_list(uint64 row, int col)
{
	bool		isnull;
	Datum		arr = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
	Datum	   *elems;
	int			nelems;
	int			k;
	List	   *result = NIL;

	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &nelems);
	for (k = 0; k < nelems; k++)
		result = lappend(result, makeString(TextDatumGetCString(elems[k])));
	return result;
}

/*
 * A C string as a Datum of type name: a NAMEDATALEN buffer, as SPI reads
 * NAMEOID parameters (CStringGetDatum would let it read past the string).
 */
Datum
catalog_name_datum(const char *s)
{
	return DirectFunctionCall1(namein, CStringGetDatum(s));
}

/*
 * Return the connection string of a source, or raise UNDEFINED_OBJECT.
 */
char *
catalog_source_conninfo(const char *source)
{
	Datum		args[1];
	Oid			types[1] = {TEXTOID};
	int			rc;

	SluiceUser	save;

	args[0] = CStringGetTextDatum(source);
	/* the secret is the extension owner's: read it as them (security.c) */
	sluice_become_catalog(&save);
	rc = sluice_spi_kept("SELECT conninfo FROM sluice._source WHERE name = $1",
							   1, types, args, NULL, true, 1);
	sluice_restore_user(&save);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("source \"%s\" does not exist", source),
				 errhint("Declare it with sluice.create_source(name, conninfo); sluice.sources lists the known ones.")));
	return getstr(0, 1);
}

#define PIPELINE_QUERY \
	"SELECT p.pipeline_id, p.name, p.source_name, s.conninfo, p.publication, " \
	"       p.publication_owned, p.slot_name, p.origin_name, p.target_schema, " \
	"       p.binary_transfer, p.continuous, p.paused_reason, p.skip_xid, p.keep_history, " \
	"       p.owner::pg_catalog.oid, p.strict, " \
	"       EXISTS (SELECT 1 FROM sluice._http_source h WHERE h.name = p.source_name) " \
	"  FROM sluice._pipeline p JOIN sluice._source s ON s.name = p.source_name "

static SluicePipeline *read_pipeline(void);

/*
 * Look a pipeline up by name, with its source and tables, as the
 * extension owner (the source's secret is theirs): the caller checks
 * next that the current user may operate it.  With lock, the
 * pipeline's row is locked FOR UPDATE: a concurrent refresh or drop of the
 * same pipeline waits here until this transaction ends.
 */
SluicePipeline *
catalog_pipeline(const char *name, bool lock)
{
	Datum		args[1];
	Oid			types[1] = {TEXTOID};
	int			rc;

	SluiceUser	save;
	SluicePipeline *p;

	args[0] = CStringGetTextDatum(name);
	sluice_become_catalog(&save);
	rc = sluice_spi_kept(lock ?
							   PIPELINE_QUERY " WHERE p.name = $1 FOR UPDATE OF p" :
							   PIPELINE_QUERY " WHERE p.name = $1",
							   1, types, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline \"%s\" does not exist", name),
				 errhint("sluice.pipelines lists the existing pipelines.")));
	p = read_pipeline();
	sluice_restore_user(&save);
	return p;
}

/*
 * The same by identifier, for workers; NULL when the pipeline is gone.
 */
SluicePipeline *
catalog_pipeline_by_id(int pipeline_id, bool lock)
{
	Datum		args[1];
	Oid			types[1] = {INT4OID};
	int			rc;

	SluiceUser	save;
	SluicePipeline *p = NULL;

	args[0] = Int32GetDatum(pipeline_id);
	sluice_become_catalog(&save);
	rc = sluice_spi_kept(lock ?
							   PIPELINE_QUERY " WHERE p.pipeline_id = $1 FOR UPDATE OF p" :
							   PIPELINE_QUERY " WHERE p.pipeline_id = $1",
							   1, types, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		p = read_pipeline();
	sluice_restore_user(&save);
	return p;
}

/*
 * The pipeline an internal entry point (sluice._exec_as_owner,
 * _release_version, _model_bind) was given by id, checked that the
 * current role operates it.  Those ids come from SQL functions that looked
 * the pipeline up by name, so a missing one was dropped in between.
 */
SluicePipeline *
catalog_pipeline_operated(int pipeline_id, const char *action)
{
	SluicePipeline *p = catalog_pipeline_by_id(pipeline_id, false);

	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pipeline %d does not exist", pipeline_id),
				 errhint("sluice.pipelines lists the existing pipelines.")));
	sluice_check_operator(p, action);
	return p;
}

/* Build a SluicePipeline from the row SPI just read, and its tables. */
static SluicePipeline *
read_pipeline(void)
{
	Datum		args[1];
	Oid			types[1] = {INT4OID};
	int			rc;
	uint64		i;
	SluicePipeline *p;

	p = palloc0(sizeof(SluicePipeline));
	p->pipeline_id = atoi(getstr(0, 1));
	p->name = getstr(0, 2);
	p->source_name = getstr(0, 3);
	p->conninfo = getstr(0, 4);
	p->publication = getstr(0, 5);
	p->publication_owned = (strcmp(getstr(0, 6), "t") == 0);
	p->slot_name = getstr(0, 7);
	p->origin_name = getstr(0, 8);
	p->target_schema = getstr(0, 9);
	p->binary = (strcmp(getstr(0, 10), "t") == 0);
	p->continuous = (strcmp(getstr(0, 11), "t") == 0);
	p->paused_reason = getstr(0, 12);
	p->skip_xid = getstr(0, 13) ? (TransactionId) strtoul(getstr(0, 13), NULL, 10) : InvalidTransactionId;
	p->keep_history = (strcmp(getstr(0, 14), "t") == 0);
	p->owner = (Oid) strtoul(getstr(0, 15), NULL, 10);
	p->http = (strcmp(getstr(0, 17), "t") == 0);
	p->strict = (strcmp(getstr(0, 16), "t") == 0);

	args[0] = Int32GetDatum(p->pipeline_id);
	rc = sluice_spi_kept("SELECT source_schema, source_table, target_schema, target_table, "
							   "       drift_policy, contract_version, ignored_columns, source_relid, "
							   "       prior_source_names, source_name_seen "
							   "  FROM sluice._pipeline_table WHERE pipeline_id = $1 "
							   " ORDER BY source_schema, source_table",
							   1, types, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		SluiceTable *t = palloc0(sizeof(SluiceTable));

		t->source_schema = getstr(i, 1);
		t->source_table = getstr(i, 2);
		t->target_schema = getstr(i, 3);
		t->target_table = getstr(i, 4);
		t->drift_policy = getstr(i, 5);
		t->contract_version = atoi(getstr(i, 6));
		t->ignored = text_array_list(i, 7);
		t->source_relid = getstr(i, 8) ? (Oid) strtoul(getstr(i, 8), NULL, 10) : InvalidOid;
		t->prior_names = text_array_list(i, 9);
		t->name_seen = getstr(i, 10);
		p->tables = lappend(p->tables, t);
	}

	/* the current contract of every table */
	rc = sluice_spi_kept("SELECT cc.source_schema, cc.source_table, cc.column_name, cc.source_column, "
							   "       cc.data_type, cc.not_null, cc.is_key, cc.source_type, "
							   "       cc.source_dropped, cc.prior_types::text, cc.prior_sources "
							   "  FROM sluice._contract_column cc JOIN sluice._pipeline_table pt "
							   "    USING (pipeline_id, source_schema, source_table, contract_version) "
							   " WHERE cc.pipeline_id = $1 ORDER BY cc.source_schema, cc.source_table, cc.position",
							   1, types, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		SluiceColumn *c = palloc0(sizeof(SluiceColumn));
		ListCell   *lc;

		c->name = getstr(i, 3);
		c->source_column = getstr(i, 4);
		c->data_type = getstr(i, 5);
		c->not_null = (strcmp(getstr(i, 6), "t") == 0);
		c->is_key = (strcmp(getstr(i, 7), "t") == 0);
		c->source_type = (Oid) strtoul(getstr(i, 8), NULL, 10);
		c->source_dropped = (strcmp(getstr(i, 9), "t") == 0);
		c->prior_sources = text_array_list(i, 11);
		{
			/* oid[] as text: {1,2} */
			char	   *p = getstr(i, 10);

			while (*p)
			{
				if (*p >= '0' && *p <= '9')
				{
					char	   *end;

					c->prior_types = lappend_oid(c->prior_types, (Oid) strtoul(p, &end, 10));
					p = end;
				}
				else
					p++;
			}
		}
		foreach(lc, p->tables)
		{
			SluiceTable *t = lfirst(lc);

			if (strcmp(t->source_schema, getstr(i, 1)) == 0 &&
				strcmp(t->source_table, getstr(i, 2)) == 0)
				t->columns = lappend(t->columns, c);
		}
	}

	/* expectations */
	rc = sluice_spi_kept("SELECT source_schema, source_table, expectation_id, name, kind, severity, "
							   "       predicate_tree, check_tree "
							   "  FROM sluice._expectation WHERE pipeline_id = $1 ORDER BY expectation_id",
							   1, types, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		SluiceExpectation *e = palloc0(sizeof(SluiceExpectation));
		ListCell   *lc;

		e->expectation_id = atoi(getstr(i, 3));
		e->name = getstr(i, 4);
		e->kind = getstr(i, 5);
		e->severity = getstr(i, 6)[0];
		e->predicate = getstr(i, 7);
		e->check = getstr(i, 8);
		foreach(lc, p->tables)
		{
			SluiceTable *t = lfirst(lc);

			if (strcmp(t->source_schema, getstr(i, 1)) == 0 &&
				strcmp(t->source_table, getstr(i, 2)) == 0)
				t->expectations = lappend(t->expectations, e);
		}
	}
	return p;
}

/*
 * Record a committed run (it commits with the caller's transaction).
 */
int64
catalog_insert_run(int64 run_id, int pipeline_id, const char *kind, TimestampTz started,
				   XLogRecPtr start_lsn, XLogRecPtr end_lsn, int64 xacts,
				   int64 ins, int64 upd, int64 del, int64 trunc,
				   TimestampTz last_commit)
{
	Oid			types[13] = {INT4OID, TEXTOID, TIMESTAMPTZOID, LSNOID, LSNOID,
		INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, INT8OID};
	Datum		args[13];
	char		nulls[13];
	int			rc;
	bool		isnull;

	memset(nulls, ' ', sizeof(nulls));
	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(kind);
	args[2] = TimestampTzGetDatum(started);
	args[3] = LSNGetDatum(start_lsn);
	if (start_lsn == InvalidXLogRecPtr)
		nulls[3] = 'n';
	args[4] = LSNGetDatum(end_lsn);
	args[5] = Int64GetDatum(xacts);
	args[6] = Int64GetDatum(ins);
	args[7] = Int64GetDatum(upd);
	args[8] = Int64GetDatum(del);
	args[9] = Int64GetDatum(trunc);
	args[10] = TimestampTzGetDatum(last_commit);
	if (last_commit == 0)
		nulls[10] = 'n';
	args[11] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[12] = Int64GetDatum(run_id);

	/* a batch that wrote versioned rows reserved its run id: they carry it */
	rc = sluice_catalog_exec(run_id > 0 ?
							   "INSERT INTO sluice._run (pipeline_id, kind, status, started_at, "
							   "  start_lsn, end_lsn, transactions, rows_inserted, rows_updated, "
							   "  rows_deleted, tables_truncated, last_source_commit, finished_at, run_id) "
							   "OVERRIDING SYSTEM VALUE "
							   "VALUES ($1, $2, 'succeeded', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
							   "RETURNING run_id" :
							   "INSERT INTO sluice._run (pipeline_id, kind, status, started_at, "
							   "  start_lsn, end_lsn, transactions, rows_inserted, rows_updated, "
							   "  rows_deleted, tables_truncated, last_source_commit, finished_at) "
							   "VALUES ($1, $2, 'succeeded', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
							   "RETURNING run_id",
							   run_id > 0 ? 13 : 12, types, args, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not record run: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Refuse what only a PostgreSQL source can do (a slot, a snapshot, a
 * position) for a pipeline that pulls an HTTP API.
 */
void
catalog_require_postgres(SluicePipeline *pipe, const char *verb)
{
	if (pipe->http)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s pipeline \"%s\": it pulls an HTTP API", verb, pipe->name),
				 errdetail("Only a pipeline with a PostgreSQL source has a replication slot, snapshots and exact source positions."),
				 errhint("Pull the API again with sluice.refresh('%s'); to copy it whole again, drop the pipeline and create it again.",
						 pipe->name)));
}

/*
 * Record the rows a run that is not a batch (a repair, a release) wrote to
 * one datamart table; a batch records its tables with their divergence
 * (expect.c).
 */
void
catalog_insert_run_table(int64 run_id, const char *target_schema, const char *target_table,
						 int64 ins, int64 upd, int64 del)
{
	Oid			types[6] = {INT8OID, NAMEOID, NAMEOID, INT8OID, INT8OID, INT8OID};
	Datum		args[6];

	args[0] = Int64GetDatum(run_id);
	args[1] = catalog_name_datum(target_schema);
	args[2] = catalog_name_datum(target_table);
	args[3] = Int64GetDatum(ins);
	args[4] = Int64GetDatum(upd);
	args[5] = Int64GetDatum(del);
	if (sluice_catalog_exec("INSERT INTO sluice._run_table (run_id, target_schema, target_table, "
							"  rows_inserted, rows_updated, rows_deleted, truncated) "
							"VALUES ($1, $2, $3, $4, $5, $6, 0)",
							6, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the rows of run " INT64_FORMAT, run_id);
}

/*
 * Record where the source stood when a run started: its flushed WAL and the
 * oldest WAL the slot kept (for lag and retained-WAL figures).
 */
void
catalog_run_source_position(int64 run_id, XLogRecPtr flush_lsn,
							XLogRecPtr restart_lsn)
{
	Oid			types[3] = {INT8OID, LSNOID, LSNOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			rc;

	args[0] = Int64GetDatum(run_id);
	args[1] = LSNGetDatum(flush_lsn);
	args[2] = LSNGetDatum(restart_lsn);
	if (restart_lsn == InvalidXLogRecPtr)
		nulls[2] = 'n';
	rc = sluice_catalog_exec("UPDATE sluice._run SET source_flush_lsn = $2, slot_restart_lsn = $3 "
							   " WHERE run_id = $1",
							   3, types, args, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not record run position: %s", SPI_result_code_string(rc));
}

/* A run that stopped on schema drift: nothing applied, pipeline paused. */
void
catalog_run_paused(int64 run_id, const char *reason)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		args[2];

	args[0] = Int64GetDatum(run_id);
	args[1] = CStringGetTextDatum(reason);
	if (sluice_catalog_exec("UPDATE sluice._run SET status = 'paused', error = $2 WHERE run_id = $1",
							  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the paused run");
}

/* The run skipped the transaction resume() named: record it, forget it. */
void
catalog_run_skipped(int pipeline_id, int64 run_id, TransactionId xid)
{
	Oid			types[3] = {INT8OID, XIDOID, INT4OID};
	Datum		args[3];

	args[0] = Int64GetDatum(run_id);
	args[1] = TransactionIdGetDatum(xid);
	args[2] = Int32GetDatum(pipeline_id);
	if (sluice_catalog_exec("UPDATE sluice._run SET skipped_xid = $2 WHERE run_id = $1",
							  3, types, args, NULL, false, 0) != SPI_OK_UPDATE ||
		sluice_catalog_exec("UPDATE sluice._pipeline SET skip_xid = NULL WHERE pipeline_id = $3",
							  3, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the skipped transaction");
}

/*
 * SPI as the current user, for the SQL entry points' own statements: run
 * sql with parameters and raise unless SPI says expected.
 */
void
sluice_spi_exec(const char *sql, int nargs, Oid *types, Datum *args, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "SPI failed (%s) for: %s", SPI_result_code_string(rc), sql);
}

/* Does the query (one text parameter) return a row? */
bool
sluice_spi_exists(const char *sql, const char *arg)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	int			rc;

	args[0] = CStringGetTextDatum(arg);
	rc = SPI_execute_with_args(sql, 1, types, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI failed (%s) for: %s", SPI_result_code_string(rc), sql);
	return SPI_processed > 0;
}
