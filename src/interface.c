/*-------------------------------------------------------------------------
 *
 * interface.c
 *	  Published contract versions and bound expectations follow the
 *	  contract when the apply changes it.
 *
 * A contract version published with sluice.publish_contract is a view over
 * the datamart table (pg_sluice--0.1.sql, "contract interfaces"); a view
 * pins the types of the columns it reads, so before the apply alters the
 * table the views are dropped (their grants kept), and once the new
 * contract version is recorded they are built again, in the batch's
 * transaction.  The same moment re-binds the table's expectations, whose
 * stored trees name the old column types, and hands the new trees to the
 * batch, which binds them right after.  The SQL functions do the work;
 * they are called as the current user, the pipeline's owner (security.c),
 * so the expectations' text is compiled with the owner's rights only.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/interface.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "pg_sluice.h"

/*
 * Does the catalog (read as the extension owner) hold what the query asks
 * about t's datamart table?
 */
static bool
interface_catalog_exists(SluiceTable *t, const char *sql)
{
	Oid			types[2] = {NAMEOID, NAMEOID};
	Datum		args[2];
	bool		isnull;

	args[0] = catalog_name_datum(t->target_schema);
	args[1] = catalog_name_datum(t->target_table);
	if (sluice_catalog_exec(sql, 2, types, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the published interfaces of \"%s.%s\"", t->target_schema, t->target_table);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static Oid
interface_target_relid(SluiceTable *t)
{
	return get_relname_relid(t->target_table, get_namespace_oid(t->target_schema, false));
}

/*
 * Before "ALTER TABLE" on t's datamart table: drop the views that publish
 * its contract versions (sluice._interfaces_detach).  The caller holds an
 * SPI connection and runs as the pipeline's owner.
 */
void
interface_before_alter(SluiceTable *t)
{
	Oid			types[1] = {REGCLASSOID};
	Datum		args[1];

	if (!interface_catalog_exists(t,
								  "SELECT EXISTS (SELECT 1 FROM sluice._published_contract p "
								  "  JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table) "
								  " WHERE pt.target_schema = $1 AND pt.target_table = $2)"))
		return;
	args[0] = ObjectIdGetDatum(interface_target_relid(t));
	if (SPI_execute_with_args("SELECT sluice._interfaces_detach($1)", 1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not detach the published interfaces of \"%s.%s\"", t->target_schema, t->target_table);
}

/*
 * After a new contract version of t is recorded: rebuild its published
 * interfaces and re-bind the expectations that read it
 * (sluice._contract_settled), and take the new trees into the pipeline's
 * in-memory expectations, which the batch binds next.  The caller holds an
 * SPI connection and runs as the pipeline's owner.
 */
void
interface_contract_settled(SluicePipeline *pipe, SluiceTable *t)
{
	Oid			types[1] = {REGCLASSOID};
	Datum		args[1];
	uint64		k;

	if (!interface_catalog_exists(t,
								  "SELECT EXISTS (SELECT 1 FROM sluice._published_contract p "
								  "  JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table) "
								  " WHERE pt.target_schema = $1 AND pt.target_table = $2) "
								  "    OR EXISTS (SELECT 1 FROM sluice._expectation e "
								  "  JOIN sluice._pipeline_table pt USING (pipeline_id, source_schema, source_table) "
								  " WHERE (pt.target_schema = $1 AND pt.target_table = $2) "
								  "    OR e.kind = 'expect_column_values_to_be_in_table')"))
		return;
	args[0] = ObjectIdGetDatum(interface_target_relid(t));
	if (SPI_execute_with_args("SELECT expectation_id, predicate_tree::pg_catalog.text, check_tree::pg_catalog.text "
							  "  FROM sluice._contract_settled($1)", 1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not rebuild the published interfaces of \"%s.%s\"", t->target_schema, t->target_table);
	for (k = 0; k < SPI_processed; k++)
	{
		bool		isnull;
		int			id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1, &isnull));
		char	   *pred = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 2);
		char	   *check = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 3);
		ListCell   *lc;

		foreach(lc, pipe->tables)
		{
			SluiceTable *pt = lfirst(lc);
			ListCell   *ec;

			foreach(ec, pt->expectations)
			{
				SluiceExpectation *e = lfirst(ec);
				MemoryContext cxt = GetMemoryChunkContext(e);

				if (e->expectation_id != id)
					continue;
				e->predicate = pred ? MemoryContextStrdup(cxt, pred) : NULL;
				e->check = check ? MemoryContextStrdup(cxt, check) : NULL;
			}
		}
	}
}
