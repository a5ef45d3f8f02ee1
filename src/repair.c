/*-------------------------------------------------------------------------
 *
 * repair.c
 *	  Re-copy the keys that differ between a datamart table and its source
 *	  table, read at the verification's exact source position, as a version
 *	  (sluice.repair).
 *
 * NOTES
 *	  What this file owns: the writes of sluice.repair.  The comparison
 *	  (verify_compare.c) hands it each differing key's hash and kind
 *	  (missing, extra, different); by batches of REPAIR_BATCH keys, and once
 *	  more at the end of each leaf merge, it deletes those keys here and
 *	  inserts the source's rows of those keys, read in the verification's
 *	  snapshot on the connection that holds it.  With a history table, the
 *	  deleted rows go there, superseded by the repair's version, and the
 *	  inserted ones carry it (_sluice_version), so <table>_at(version)
 *	  before the repair still shows them.  A table without a key: each
 *	  extra row deletes one copy, each missing row inserts one.
 *
 *	  What it never does: choose the position or take the lock, both
 *	  verify.c's; record the run (verify.c records one of kind repair, the
 *	  version, with the rows counted here); run the pipeline's expectations
 *	  (the source's rows are copied as they are); write on the source, which
 *	  it only reads, in the snapshot.  All of it happens in the caller's
 *	  transaction, as the pipeline's owner (verify.c becomes the owner around
 *	  the comparison that calls this).
 *
 *	  The key hashes of a batch go as one array parameter: here a text[]
 *	  datum, on the source an untyped parameter the query types as text[].
 *	  Rejected: a text parameter cast to text[] in the datamart's query (it
 *	  would be parsed again for each row); an UPDATE of the different keys
 *	  (missing and extra keys need an insert or a delete anyway, a keyless
 *	  table has no key to update by, and the delete is what moves the
 *	  replaced rows to the history table).
 *
 *	  Memory: what one batch allocates lives in its own context, reset
 *	  after it.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/repair.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "verify_internal.h"

/*
 * Ready a table for repair: its history table, every column (for the
 * history rows), the INSERT of one row from the source.
 */
void
repair_prepare(VerifyTable *vt, SluicePipeline *pipe, SluiceConn *snap)
{
	SluiceTable *t = vt->t;
	bool		has_version = get_attnum(vt->relid, "_sluice_version") != InvalidAttrNumber;
	Oid			hnsp = get_namespace_oid(psprintf("%s_history", t->target_schema), true);
	Oid		   *types;
	Oid			args[1];
	Datum		vals[1];
	StringInfoData cols;
	StringInfoData params;
	ListCell   *lc;
	int			n = 0;

	vt->repair = true;
	vt->snap = snap;
	vt->version = has_version ? pipe->version : 0;
	vt->mart_table = psprintf("%s.%s", quote_identifier(t->target_schema), quote_identifier(t->target_table));
	if (has_version && OidIsValid(hnsp) && OidIsValid(get_relname_relid(t->target_table, hnsp)))
		vt->hist_table = psprintf("%s.%s", quote_identifier(psprintf("%s_history", t->target_schema)),
								  quote_identifier(t->target_table));
	vt->batch_kh = palloc(sizeof(char *) * REPAIR_BATCH);
	vt->batch_kind = palloc(sizeof(char *) * REPAIR_BATCH);

	args[0] = OIDOID;
	vals[0] = ObjectIdGetDatum(vt->relid);
	if (SPI_execute_with_args("SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) "
							  "  FROM pg_catalog.pg_attribute a "
							  " WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 "
							  "   AND NOT a.attisdropped",
							  1, args, vals, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the columns of the datamart table");
	vt->all_cols = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	types = palloc(sizeof(Oid) * (list_length(vt->columns) + 1));
	initStringInfo(&cols);
	initStringInfo(&params);
	foreach(lc, vt->columns)
	{
		VerifyColumn *vc = lfirst(lc);

		types[n++] = vc->typid;
		appendStringInfo(&cols, "%s%s", n > 1 ? ", " : "", vc->mart_expr);
		appendStringInfo(&params, "%s$%d", n > 1 ? ", " : "", n);
	}
	if (vt->version > 0)
	{
		types[n++] = INT8OID;
		appendStringInfo(&cols, ", _sluice_version");
		appendStringInfo(&params, ", $%d", n);
	}
	vt->insert_plan = SPI_prepare(psprintf("INSERT INTO %s (%s) VALUES (%s)", vt->mart_table, cols.data, params.data),
								  n, types);
	if (vt->insert_plan == NULL)
		elog(ERROR, "could not prepare the repair's insert: %s", SPI_result_code_string(SPI_result));
}

/* Insert the source's rows of res (the contract's columns) here. */
static void
repair_insert_rows(VerifyTable *vt, PGresult *res)
{
	int			ncols = list_length(vt->columns);
	Datum	   *values = palloc(sizeof(Datum) * (ncols + 1));
	char	   *nulls = palloc(ncols + 2);
	int			i;

	memset(nulls, ' ', ncols + 1);
	nulls[ncols + 1] = '\0';
	for (i = 0; i < PQntuples(res); i++)
	{
		ListCell   *lc;
		int			j = 0;

		CHECK_FOR_INTERRUPTS();
		foreach(lc, vt->columns)
		{
			VerifyColumn *vc = lfirst(lc);
			Oid			infunc;
			Oid			ioparam;

			if (PQgetisnull(res, i, j))
			{
				values[j] = (Datum) 0;
				nulls[j] = 'n';
			}
			else
			{
				getTypeInputInfo(vc->typid, &infunc, &ioparam);
				values[j] = OidInputFunctionCall(infunc, PQgetvalue(res, i, j), ioparam, vc->typmod);
				nulls[j] = ' ';
			}
			j++;
		}
		values[ncols] = Int64GetDatum(vt->version);
		if (SPI_execute_plan(vt->insert_plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert a repaired row");
		vt->rows_inserted++;
	}
}

/*
 * Re-copy the waiting differing keys: delete them here (their rows go to
 * the history table, superseded by the repair's version), then insert the
 * source's rows of those keys, read in the verification's snapshot.  A
 * table without a key: each extra row deletes one copy, each missing row
 * inserts one.
 */
void
repair_flush(VerifyTable *vt)
{
	SluiceConn *snap = vt->snap;
	int			i;
	MemoryContext old;

	if (vt->nbatch == 0)
		return;
	if (vt->flushcxt == NULL)
		vt->flushcxt = AllocSetContextCreate(vt->cxt, "pg_sluice repair batch",
											 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(vt->flushcxt);
	if (!vt->keyless)
	{
		StringInfoData arr;
		Oid			types[2] = {TEXTARRAYOID, INT8OID};
		Datum		args[2];
		const char *params[1];
		PGresult   *res;
		int			rc;

		initStringInfo(&arr);
		appendStringInfoChar(&arr, '{');
		for (i = 0; i < vt->nbatch; i++)
			appendStringInfo(&arr, "%s%s", i ? "," : "", vt->batch_kh[i]);
		appendStringInfoChar(&arr, '}');
		/* a text[] parameter: a text one cast in the query would be parsed per row */
		{
			Datum	   *elems = palloc(sizeof(Datum) * vt->nbatch);

			for (i = 0; i < vt->nbatch; i++)
				elems[i] = CStringGetTextDatum(vt->batch_kh[i]);
			args[0] = PointerGetDatum(construct_array(elems, vt->nbatch, TEXTOID, -1, false, TYPALIGN_INT));
		}
		args[1] = Int64GetDatum(vt->version);
		if (vt->hist_table)
			rc = SPI_execute_with_args(psprintf("WITH d AS (DELETE FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
												"OPERATOR(pg_catalog.=) ANY ($1) RETURNING *) "
												"INSERT INTO %s (%s, _sluice_superseded) SELECT %s, $2 FROM d",
												vt->mart_rel, vt->mart_key_row, vt->hist_table, vt->all_cols, vt->all_cols),
									   2, types, args, NULL, false, 0);
		else
			rc = SPI_execute_with_args(psprintf("DELETE FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
												"OPERATOR(pg_catalog.=) ANY ($1)",
												vt->mart_rel, vt->mart_key_row),
									   1, types, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT && rc != SPI_OK_DELETE)
			elog(ERROR, "could not delete the rows to repair: %s", SPI_result_code_string(rc));
		vt->rows_deleted += SPI_processed;

		params[0] = arr.data;
		res = transport_exec(snap,
							 psprintf("SELECT %s FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
									  "OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
									  vt->live_cols, vt->live_rel, vt->live_key_row),
							 1, params, PGRES_TUPLES_OK, "read the rows to repair");
		repair_insert_rows(vt, res);
		PQclear(res);
	}
	else
	{
		for (i = 0; i < vt->nbatch; i++)
		{
			CHECK_FOR_INTERRUPTS();
			if (strcmp(vt->batch_kind[i], "extra") == 0)
			{
				Oid			types[1] = {TEXTOID};
				Datum		args[1];

				args[0] = CStringGetTextDatum(vt->batch_kh[i]);
				if (SPI_execute_with_args(psprintf("DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) "
												   "(SELECT ctid FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
												   "OPERATOR(pg_catalog.=) $1 LIMIT 1)",
												   vt->mart_rel, vt->mart_rel, vt->mart_key_row),
										  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
					elog(ERROR, "could not delete an extra row");
				vt->rows_deleted += SPI_processed;
			}
			else
			{
				const char *params[1] = {vt->batch_kh[i]};
				PGresult   *res;

				res = transport_exec(snap,
									 psprintf("SELECT %s FROM %s WHERE pg_catalog.md5((ROW(%s))::pg_catalog.text) "
											  "OPERATOR(pg_catalog.=) $1 LIMIT 1",
											  vt->live_cols, vt->live_rel, vt->live_key_row),
									 1, params, PGRES_TUPLES_OK, "read the rows to repair");
				repair_insert_rows(vt, res);
				PQclear(res);
			}
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(vt->flushcxt);
	for (i = 0; i < vt->nbatch; i++)
		pfree(vt->batch_kh[i]);
	vt->nbatch = 0;
}
