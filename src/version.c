/*-------------------------------------------------------------------------
 *
 * version.c
 *	  Versions: rows stamped with the batch's version, and the rows it
 *	  replaced or deleted kept in the history tables.
 *
 * NOTES
 *	  What this file owns.  For a pipeline that keeps history
 *	  (sluice.keep_history): the _sluice_version stamp of every row written
 *	  (version_stamp), the copy of each row version an update or delete
 *	  replaces into <target_schema>_history.<table> with _sluice_superseded
 *	  set to the batch's version, so that it covers [_sluice_version,
 *	  _sluice_superseded) (version_save), all current rows at once when the
 *	  source truncates (version_truncated), and the history table's setup for
 *	  the batch, which checks it still matches the datamart table column for
 *	  column (version_open).  version_history_relid tells contract.c whether
 *	  DDL must follow on a history table.
 *
 *	  A release of a quarantined row (sluice.release_quarantined) is a
 *	  version too: _release_version records it as a run of kind release, so
 *	  the released row carries a version later than the batch that held it
 *	  back (<table>_at of that batch does not show it) and the row it
 *	  replaces goes to history like any other.  The SQL function writes the
 *	  rows; this records the run as the catalog's owner, which an operator
 *	  may not do itself.
 *
 *	  What it never does.  Read history (the views and the <table>_at
 *	  functions of the extension script do) or prune it (retention is SQL
 *	  too).  The version number itself is the run id refresh.c reserves for
 *	  the batch.
 *
 *	  Rejected.  Triggers on the datamart tables keeping history: they would
 *	  fire for the DBA's own writes too, and any trigger sends a table down
 *	  the row-by-row insert path.  A validity range on the current table
 *	  closed by an UPDATE of the old row: two writes of the table BI reads per
 *	  change, and a table that grows with its history.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/version.c
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
 * Set up a relation's versions (sluice.keep_history): the row's version
 * column in the target and the table of superseded rows, opened for the
 * batch.  Runs in st->cxt, at the table's RELATION message.
 */
void
version_open(ApplyState *st, ApplyRel *ar, SluiceTable *t)
{
	TupleDesc	desc = RelationGetDescr(ar->rel);
	int			i;

	if (st->pipe->keep_history &&
		(ar->verattno = get_attnum(RelationGetRelid(ar->rel), "_sluice_version")) != InvalidAttrNumber)
	{
		TupleDesc	hdesc;

		ar->histrel = table_openrv(makeRangeVar(version_history_schema(t->target_schema),
												 t->target_table, -1), RowExclusiveLock);
		hdesc = RelationGetDescr(ar->histrel);
		ar->histmap = palloc(sizeof(int) * Max(hdesc->natts, 1));
		for (i = 0; i < hdesc->natts; i++)
		{
			Form_pg_attribute ha = TupleDescAttr(hdesc, i);

			if (ha->attisdropped)
				ar->histmap[i] = -2;
			else if (strcmp(NameStr(ha->attname), "_sluice_superseded") == 0)
				ar->histmap[i] = -1;
			else
			{
				AttrNumber	a = get_attnum(RelationGetRelid(ar->rel), NameStr(ha->attname));

				if (a == InvalidAttrNumber)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("history table \"%s_history.%s\" has column \"%s\" that \"%s.%s\" lacks",
									t->target_schema, t->target_table, NameStr(ha->attname),
									t->target_schema, t->target_table)));
				ar->histmap[i] = a - 1;
				if (TupleDescAttr(desc, a - 1)->atttypid != ha->atttypid ||
					TupleDescAttr(desc, a - 1)->atttypmod != ha->atttypmod)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("column \"%s\" of history table \"%s_history.%s\" has type %s, the datamart table's has %s",
									NameStr(ha->attname), t->target_schema, t->target_table,
									format_type_with_typemod(ha->atttypid, ha->atttypmod),
									format_type_with_typemod(TupleDescAttr(desc, a - 1)->atttypid,
															 TupleDescAttr(desc, a - 1)->atttypmod)),
							 errdetail("Superseded rows are copied into the history table as they are."),
							 errhint("Alter the history table's column to the same type, or use sluice.accept_type_change, which alters both.")));
			}
		}
		ar->histrri = makeNode(ResultRelInfo);
		InitResultRelInfo(ar->histrri, ar->histrel, 0, NULL, 0);
		ExecOpenIndices(ar->histrri, false);
		ar->histslot = MakeSingleTupleTableSlot(hdesc, &TTSOpsVirtual);
	}
	else
		ar->verattno = InvalidAttrNumber;
}

/* Close what version_open opened. */
void
version_close(ApplyRel *ar)
{
	if (ar->histrel != NULL)
	{
		ExecCloseIndices(ar->histrri);
		ExecDropSingleTupleTableSlot(ar->histslot);
		table_close(ar->histrel, NoLock);
		ar->histrel = NULL;
	}
}

/* Stamp the row about to be written with the batch's version. */
void
version_stamp(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot)
{
	if (ar->verattno == InvalidAttrNumber)
		return;
	slot->tts_values[ar->verattno - 1] = Int64GetDatum(st->pipe->version);
	slot->tts_isnull[ar->verattno - 1] = false;
}

/* Keep the row version being replaced or deleted: [its version, this one). */
void
version_save(ApplyState *st, ApplyRel *ar, TupleTableSlot *old)
{
	TupleDesc	hdesc;
	int			i;

	if (ar->histrel == NULL)
		return;
	hdesc = RelationGetDescr(ar->histrel);
	slot_getallattrs(old);
	ExecClearTuple(ar->histslot);
	for (i = 0; i < hdesc->natts; i++)
	{
		int			m = ar->histmap[i];

		if (m == -1)
		{
			ar->histslot->tts_values[i] = Int64GetDatum(st->pipe->version);
			ar->histslot->tts_isnull[i] = false;
		}
		else if (m < 0)
		{
			ar->histslot->tts_values[i] = (Datum) 0;
			ar->histslot->tts_isnull[i] = true;
		}
		else
		{
			ar->histslot->tts_values[i] = old->tts_values[m];
			ar->histslot->tts_isnull[i] = old->tts_isnull[m];
		}
	}
	ExecStoreVirtualTuple(ar->histslot);
	ExecSimpleRelationInsert(ar->histrri, st->estate, ar->histslot);
}

/*
 * The schema of a target schema's history tables: <target_schema>_history
 * (the extension script's views and functions use the same name).
 */
char *
version_history_schema(const char *target_schema)
{
	return psprintf("%s_history", target_schema);
}

/* The history table of t (InvalidOid: none). */
Oid
version_history_relid(ApplyState *st, SluiceTable *t)
{
	Oid			nsp;

	if (!st->pipe->keep_history)
		return InvalidOid;
	nsp = get_namespace_oid(version_history_schema(t->target_schema), true);
	return OidIsValid(nsp) ? get_relname_relid(t->target_table, nsp) : InvalidOid;
}

/*
 * The source truncated the table: every current row is superseded by the
 * truncation, copied into the history table in one statement.
 */
void
version_truncated(ApplyState *st, ApplyRel *ar)
{
	StringInfoData cols;
	StringInfoData vals;
	TupleDesc	hdesc;
	int			i;

	if (ar->histrel == NULL)
		return;
	hdesc = RelationGetDescr(ar->histrel);
	initStringInfo(&cols);
	initStringInfo(&vals);
	for (i = 0; i < hdesc->natts; i++)
	{
		Form_pg_attribute ha = TupleDescAttr(hdesc, i);

		if (ha->attisdropped)
			continue;
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", quote_identifier(NameStr(ha->attname)));
		if (ar->histmap[i] == -1)
			appendStringInfo(&vals, "%s" INT64_FORMAT, vals.len ? ", " : "", st->pipe->version);
		else
			appendStringInfo(&vals, "%s%s", vals.len ? ", " : "", quote_identifier(NameStr(ha->attname)));
	}
	if (SPI_execute(psprintf("INSERT INTO %s.%s (%s) SELECT %s FROM %s.%s",
							 quote_identifier(get_namespace_name(RelationGetNamespace(ar->histrel))),
							 quote_identifier(RelationGetRelationName(ar->histrel)), cols.data, vals.data,
							 quote_identifier(ar->table->target_schema),
							 quote_identifier(ar->table->target_table)),
					false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not keep the truncated rows' history");
}

PG_FUNCTION_INFO_V1(sluice_release_version);

/*
 * sluice._release_version(pipeline_id, target_schema, target_table,
 * replaced): record the version a release of a quarantined row makes (a run
 * of kind release, one row inserted or, where it replaces one, updated, at
 * the pipeline's last position) with its events, and return its number for
 * the released row's _sluice_version.  The caller must operate the pipeline.
 */
Datum
sluice_release_version(PG_FUNCTION_ARGS)
{
	int			pipeline_id = PG_GETARG_INT32(0);
	char	   *schema = NameStr(*PG_GETARG_NAME(1));
	char	   *table = NameStr(*PG_GETARG_NAME(2));
	bool		replaced = PG_GETARG_BOOL(3);
	XLogRecPtr	at = InvalidXLogRecPtr;
	int64		run_id;
	bool		isnull;
	Oid			types[1] = {INT4OID};
	Datum		args[1];

	SPI_connect();
	(void) catalog_pipeline_operated(pipeline_id, "change");

	if (sluice_catalog_exec("SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('sluice._run', 'run_id'))",
							0, NULL, NULL, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not reserve a version");
	run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	/* the source position does not move: the last one the pipeline reached */
	args[0] = Int32GetDatum(pipeline_id);
	if (sluice_catalog_exec("SELECT end_lsn FROM sluice._run WHERE pipeline_id OPERATOR(pg_catalog.=) $1 "
							"   AND status OPERATOR(pg_catalog.=) 'succeeded' AND end_lsn IS NOT NULL "
							" ORDER BY run_id DESC LIMIT 1",
							1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the pipeline's position");
	if (SPI_processed == 1)
		at = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	(void) catalog_insert_run(run_id, pipeline_id, "release", GetCurrentTimestamp(), at, at,
							  0, replaced ? 0 : 1, replaced ? 1 : 0, 0, 0, 0);
	catalog_insert_run_table(run_id, schema, table, replaced ? 0 : 1, replaced ? 1 : 0, 0);
	outbox_emit_run(run_id, 0);
	SPI_finish();
	PG_RETURN_INT64(run_id);
}
