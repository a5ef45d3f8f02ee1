/*-------------------------------------------------------------------------
 *
 * pipeline.c
 *	  Creating a pipeline: its datamart tables, catalog rows and initial
 *	  copy; and dropping its datamart objects.
 *
 * NOTES
 *	  What this file owns.  The datamart side of a pipeline's life.
 *	  pipeline_add_table adds a table to an existing pipeline, empty, for a
 *	  chunked copy (snapshot.c) to fill.
 *	  pipeline_check_target decides whether each target table is created or
 *	  adopted (an existing, empty table becomes the contract).
 *	  pipeline_create does the rest in an order that matters: the publication
 *	  on the source when pg_sluice owns it; the slot, before this transaction
 *	  writes anything (slot creation waits for every transaction with an XID
 *	  on the source server, which would be us if the source were this server);
 *	  the slot's exported snapshot imported on a second connection; the target
 *	  tables, each copied in that snapshot (copy.c) and only then given its
 *	  key and comments, except the big ones snapshot_initial_plan chose
 *	  (pg_sluice.initial_copy), created empty and without their key for a
 *	  chunked copy (snapshot.c builds the key when it needs it: the lazy
 *	  key) that the copy workers or CALL sluice.copy_tables run afterwards; the
 *	  catalog rows, written as the extension owner for the creating role
 *	  (record_pipeline, contract version 1 through contract.c), and the
 *	  chunked copies' rows; the replication origin at the slot's consistent
 *	  point; the initial copy's run.  A failure drops the slot and the owned
 *	  publication on the source before the error propagates.
 *	  pipeline_drop_tables removes what sluice.drop_pipeline(drop_tables)
 *	  removes: tag schemas, tables, history tables, and the schemas when
 *	  nothing else lives in them.
 *
 *	  What it never does.  Validate the caller's arguments or rights (api.c),
 *	  or ask the source's catalog (source.c).
 *
 *	  Rejected.  The key before the copy: loading without it and building it
 *	  afterwards, as pg_dump does, copied 1M rows in 1.12 s against 1.44 s.
 *	  Catalog rows written as the caller: operators may not insert pipelines,
 *	  as a row names slots, origins and tables.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/pipeline.c
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
#include "commands/defrem.h"
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

/*
 * Check, before anything is written, that every datamart type exists here
 * and no target table is in the way.
 */
static char *
key_list(List *keys)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	foreach(lc, keys)
		appendStringInfo(&buf, "%s%s", buf.len > 1 ? ", " : "", quote_identifier(strVal(lfirst(lc))));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * The datamart table exists and is the user's design: it becomes the
 * contract.  Every column must be fed by the source column of the same name
 * (its type may differ: values are converted through their text form); the
 * source's key must be the table's primary key; source columns the table
 * lacks are left out.  The table must be empty.
 */
static void
adopt_target(SourceTable *t, const char *target_schema, Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *cols = NIL;
	List	   *types = NIL;
	List	   *srctypes = NIL;
	List	   *notnull = NIL;
	ListCell   *lc;
	int			i;
	Oid			pk = RelationGetPrimaryKeyIndex(rel);

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s.%s\" is not a table", target_schema, t->target)));

	/*
	 * The initial copy writes below COPY's privilege checks, and its
	 * triggers run as the pipeline's owner: only the table's own owner
	 * adopts it (a superuser adopting someone else's table would run that
	 * role's triggers with a superuser's rights).
	 */
	if (rel->rd_rel->relowner != GetUserId())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("table \"%s.%s\" is owned by role \"%s\", not by the role creating the pipeline",
						target_schema, t->target, GetUserNameFromId(rel->rd_rel->relowner, true) ?
						GetUserNameFromId(rel->rd_rel->relowner, true) : "?"),
				 errdetail("An adopted table becomes the pipeline's: the pipeline's owner writes it and runs its triggers."),
				 errhint("Create the pipeline as the table's owner (SET ROLE %s), or give the table to your role with ALTER TABLE ... OWNER TO.",
						 quote_identifier(GetUserNameFromId(rel->rd_rel->relowner, true) ?
										  GetUserNameFromId(rel->rd_rel->relowner, true) : "?"))));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		ListCell   *c,
				   *ty,
				   *st;
		bool		found = false;

		if (att->attisdropped)
			continue;
		forthree(c, t->columns, ty, t->types, st, t->srctypes)
		{
			if (strcmp(strVal(lfirst(c)), NameStr(att->attname)) != 0)
				continue;
			found = true;
			cols = lappend(cols, lfirst(c));
			types = lappend(types, makeString(format_type_with_typemod(att->atttypid, att->atttypmod)));
			srctypes = lappend_oid(srctypes, lfirst_oid(st));
			notnull = lappend_int(notnull, att->attnotnull);
			/* a different type is a cast through text: no binary transfer */
			if (strcmp(strVal(lfirst(ty)), format_type_with_typemod(att->atttypid, att->atttypmod)) != 0)
				t->binary_safe = t->stream_binary = false;
		}
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of datamart table \"%s.%s\" has no source column of that name in \"%s.%s\"",
							NameStr(att->attname), target_schema, t->target, t->schema, t->name),
					 errhint("Every column of an adopted table must be fed by the source; drop the column or rename it.")));
	}
	foreach(lc, t->keys)
	{
		bool		found = false;
		ListCell   *c;

		foreach(c, cols)
			if (strcmp(strVal(lfirst(c)), strVal(lfirst(lc))) == 0)
				found = true;
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("datamart table \"%s.%s\" lacks key column \"%s\" of the source",
							target_schema, t->target, strVal(lfirst(lc)))));
	}
	if (t->keys != NIL)
	{
		bool		same = OidIsValid(pk);

		if (same)
		{
			Relation	idx = index_open(pk, AccessShareLock);
			int			k;

			same = (idx->rd_index->indnkeyatts == list_length(t->keys));
			for (k = 0; same && k < idx->rd_index->indnkeyatts; k++)
			{
				AttrNumber	a = idx->rd_index->indkey.values[k];
				bool		in = false;

				foreach(lc, t->keys)
					if (a > 0 && strcmp(NameStr(TupleDescAttr(desc, a - 1)->attname), strVal(lfirst(lc))) == 0)
						in = true;
				same = in;
			}
			index_close(idx, AccessShareLock);
		}
		if (!same)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("datamart table \"%s.%s\" needs a primary key on the source's key", target_schema, t->target),
					 errdetail("The source identifies rows by %s.", key_list(t->keys)),
					 errhint("ALTER TABLE %s.%s ADD PRIMARY KEY (...) on those columns.",
							 quote_identifier(target_schema), quote_identifier(t->target))));
	}
	table_close(rel, AccessShareLock);
	if (sluice_spi_exists(psprintf("SELECT 1 FROM %s.%s LIMIT 1 -- $1",
								   quote_identifier(target_schema), quote_identifier(t->target)), ""))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("datamart table \"%s.%s\" is not empty", target_schema, t->target),
				 errhint("The initial copy fills it; empty it first.")));
	foreach(lc, t->columns)
	{
		bool		kept = false;
		ListCell   *c;

		foreach(c, cols)
			if (strcmp(strVal(lfirst(c)), strVal(lfirst(lc))) == 0)
				kept = true;
		if (!kept)
			t->ignored = lappend(t->ignored, lfirst(lc));
	}
	t->columns = cols;
	t->types = types;
	t->srctypes = srctypes;
	t->notnull = notnull;
	t->adopted = relid;
}

/*
 * The type rule inside composite types.  A composite type must exist in the
 * datamart; an enum in it (directly, in an array, through a domain) would
 * make every refresh fail as soon as live adds a label, since the value
 * arrives as text and the datamart's enum lacks the label.  Refuse it up
 * front, with the ALTER TYPE that makes it text, as enums are elsewhere.
 * Columns' own enums are already text (adopted tables may keep theirs:
 * that was the user's choice).
 */
static void
check_no_enum_inside(Oid typid, SourceTable *t, const char *column)
{
	Oid			elem;
	TupleDesc	desc;
	int			i;

	typid = getBaseType(typid);
	elem = get_element_type(typid);
	if (OidIsValid(elem))
	{
		check_no_enum_inside(elem, t, column);
		return;
	}
	if (get_typtype(typid) != TYPTYPE_COMPOSITE)
		return;
	desc = lookup_rowtype_tupdesc_copy(typid, -1);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			atype;
		Oid			aelem;
		Oid			leaf;

		if (att->attisdropped)
			continue;
		atype = getBaseType(att->atttypid);
		aelem = get_element_type(atype);
		leaf = OidIsValid(aelem) ? getBaseType(aelem) : atype;
		if (get_typtype(leaf) == TYPTYPE_ENUM)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("attribute \"%s\" of datamart type %s holds enum %s",
							NameStr(att->attname), format_type_be_qualified(typid),
							format_type_be_qualified(leaf)),
					 errdetail("Column \"%s\" of source table \"%s.%s\" has this type; a label added on the source would make every refresh fail.",
							   column, t->schema, t->name),
					 errhint("In the datamart, run ALTER TYPE %s ALTER ATTRIBUTE %s TYPE %s: enums become text inside composite types too.",
							 format_type_be_qualified(typid), quote_identifier(NameStr(att->attname)),
							 OidIsValid(aelem) ? "text[]" : "text")));
		check_no_enum_inside(att->atttypid, t, column);
	}
}

void
pipeline_check_target(SourceTable *t, const char *target_schema, bool adopt)
{
	Oid			nsp = get_namespace_oid(target_schema, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(t->target, nsp) : InvalidOid;
	ListCell   *lc1,
			   *lc2;

	if (OidIsValid(relid) && !adopt)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("table \"%s.%s\" already exists in the datamart", target_schema, t->target),
				 errhint("Choose another target_schema, drop the existing table, or pass adopt_tables => true to make it the table's contract.")));
	if (OidIsValid(relid))
		adopt_target(t, target_schema, relid);

	forboth(lc1, t->columns, lc2, t->types)
	{
		Oid			typid;
		int32		typmod;

		parseTypeString(strVal(lfirst(lc2)), &typid, &typmod, true);
		if (!OidIsValid(typid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("type %s of column \"%s\" of source table \"%s.%s\" does not exist in the datamart",
							strVal(lfirst(lc2)), strVal(lfirst(lc1)), t->schema, t->name),
					 errhint("Create the type (or the extension providing it) in the datamart first; enums and domains are mapped to text and their base type automatically.")));
		check_no_enum_inside(typid, t, strVal(lfirst(lc1)));
	}
}

static Oid
create_target_table(SourceTable *t, const char *target_schema)
{
	StringInfoData sql;
	ListCell   *lc1,
			   *lc2,
			   *lc3;
	bool		first = true;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TABLE %s.%s (",
					 quote_identifier(target_schema), quote_identifier(t->target));
	forthree(lc1, t->columns, lc2, t->types, lc3, t->notnull)
	{
		appendStringInfo(&sql, "%s%s %s%s", first ? "" : ", ",
						 quote_identifier(strVal(lfirst(lc1))), strVal(lfirst(lc2)),
						 lfirst_int(lc3) ? " NOT NULL" : "");
		first = false;
	}
	appendStringInfoChar(&sql, ')');
	sluice_spi_exec(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
	return get_relname_relid(t->target, get_namespace_oid(target_schema, false));
}

/*
 * Comment a new datamart table and its columns for BI tools, which show
 * comments as descriptions: the source's own comments, or where a table or
 * column has none, where it comes from.
 */
static void
comment_target(SluiceConn *sc, SourceTable *t, const char *target_schema,
			   const char *pipeline, Oid relid)
{
	const char *params[2] = {t->schema, t->name};
	PGresult   *res;
	char	   *qual = psprintf("%s.%s", quote_identifier(target_schema), quote_identifier(t->target));
	int			i;

	res = transport_exec(sc,
						 "SELECT a.attname, pg_catalog.col_description(c.oid, a.attnum), "
						 "       pg_catalog.obj_description(c.oid, 'pg_class'), "
						 "       pg_catalog.format_type(a.atttypid, a.atttypmod) "
						 "  FROM pg_catalog.pg_class c "
						 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
						 "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
						 " WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped "
						 " ORDER BY a.attnum",
						 2, params, PGRES_TUPLES_OK, "read the table's comments");
	sluice_spi_exec(psprintf("COMMENT ON TABLE %s IS %s", qual,
							 quote_literal_cstr(PQntuples(res) > 0 && !PQgetisnull(res, 0, 2) ?
										 PQgetvalue(res, 0, 2) :
										 psprintf("pg_sluice: %s.%s on source %s (pipeline %s).",
												  t->schema, t->name, sc->source, pipeline))),
					0, NULL, NULL, SPI_OK_UTILITY);
	for (i = 0; i < PQntuples(res); i++)
	{
		const char *col = PQgetvalue(res, i, 0);

		if (get_attnum(relid, col) == InvalidAttrNumber)
			continue;			/* left out of the datamart table */
		sluice_spi_exec(psprintf("COMMENT ON COLUMN %s.%s IS %s", qual, quote_identifier(col),
								 quote_literal_cstr(!PQgetisnull(res, i, 1) ? PQgetvalue(res, i, 1) :
											 psprintf("pg_sluice: source column %s (%s).", col,
													  PQgetvalue(res, i, 3)))),
						0, NULL, NULL, SPI_OK_UTILITY);
	}
	PQclear(res);
}

/*
 * Build the key after loading, as pg_restore does: faster than inserting
 * into an index.
 *
 * The key takes whatever live's can.  Where the source's key is DEFERRABLE
 * (its identity is then FULL: a deferrable key cannot be a replica
 * identity), or its identity is FULL (rows are identified by every column,
 * not by the key), a source transaction may swap keys (UPDATE t SET id =
 * 11 - id) or hold two rows with one key between statements.
 * Applied row by row, that would fail an immediate key; a DEFERRABLE
 * INITIALLY DEFERRED one is checked when the batch commits (apply.c checks
 * it before, see apply_stream), at which point the batch holds whole source
 * transactions, so the key holds if it held on live.
 */
static void
create_target_key(SourceTable *t, const char *target_schema)
{
	if (t->keys == NIL)
		return;
	/* see the comment above */
	pipeline_build_key(target_schema, t->target, t->keys,
					   pipeline_key_deferrable(t));
}

/* The key is DEFERRABLE INITIALLY DEFERRED (see above). */
bool
pipeline_key_deferrable(SourceTable *t)
{
	return t->key_deferrable || t->replident == 'f';
}

/* "a, b)": the key's columns, quoted, closing the list */
static void
append_key_columns(StringInfo sql, List *keys)
{
	ListCell   *lc;

	foreach(lc, keys)
		appendStringInfo(sql, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
						 quote_identifier(strVal(lfirst(lc))));
	appendStringInfoChar(sql, ')');
}

/*
 * ALTER TABLE ... ADD PRIMARY KEY on a datamart table, as the caller (the
 * table's owner): create_pipeline after its one-snapshot copy, on a table
 * no other session sees yet (the lazy key of a chunked copy is built by
 * pipeline_build_key_online; the columns come as names, quoted here).
 */
void
pipeline_build_key(const char *schema, const char *table, List *keys, bool deferrable)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "ALTER TABLE %s.%s ADD PRIMARY KEY (",
					 quote_identifier(schema), quote_identifier(table));
	append_key_columns(&sql, keys);
	if (deferrable)
		appendStringInfoString(&sql, " DEFERRABLE INITIALLY DEFERRED");
	sluice_spi_exec(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
}

/*
 * The same on a table readers may be reading (the lazy key of a chunked
 * copy, snapshot.c): the unique index is built first, under a lock that
 * lets them read (ADD PRIMARY KEY would keep them out for the whole
 * build, a minute at 100,000,000 rows), then becomes the primary key in a
 * moment.  The key's columns are NOT NULL already (created so from live's
 * key), so that step scans nothing.  The name is the one ADD PRIMARY KEY
 * would choose.
 */
void
pipeline_build_key_online(const char *schema, const char *table, List *keys, bool deferrable)
{
	StringInfoData sql;
	char	   *name = ChooseRelationName(table, NULL, "pkey", get_namespace_oid(schema, false), true);

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE UNIQUE INDEX %s ON %s.%s (", quote_identifier(name),
					 quote_identifier(schema), quote_identifier(table));
	append_key_columns(&sql, keys);
	sluice_spi_exec(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
	resetStringInfo(&sql);
	appendStringInfo(&sql, "ALTER TABLE %s.%s ADD CONSTRAINT %s PRIMARY KEY USING INDEX %s",
					 quote_identifier(schema), quote_identifier(table), quote_identifier(name),
					 quote_identifier(name));
	if (deferrable)
		appendStringInfoString(&sql, " DEFERRABLE INITIALLY DEFERRED");
	sluice_spi_exec(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
}

/* A table's catalog rows: _pipeline_table and contract version 1. */
static void
record_table(int pipeline_id, const char *target_schema, SourceTable *t)
{
	Oid			ttypes[8] = {INT4OID, TEXTOID, TEXTOID, NAMEOID, NAMEOID, TEXTARRAYOID, TEXTOID, OIDOID};
	Datum		targs[8];
	Datum	   *keys = palloc(sizeof(Datum) * Max(list_length(t->keys), 1));
	ListCell   *kc;
	int			n = 0;
	const char *ri = t->replident == 'f' ? "full" :
	t->replident == 'i' ? "index" : "default";

	foreach(kc, t->keys)
		keys[n++] = CStringGetTextDatum(strVal(lfirst(kc)));
	targs[0] = Int32GetDatum(pipeline_id);
	targs[1] = CStringGetTextDatum(t->schema);
	targs[2] = CStringGetTextDatum(t->name);
	targs[3] = catalog_name_datum(target_schema);
	targs[4] = catalog_name_datum(t->target);
	targs[5] = PointerGetDatum(construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT));
	targs[6] = CStringGetTextDatum(ri);
	targs[7] = ObjectIdGetDatum(t->relid);
	sluice_spi_exec("INSERT INTO sluice._pipeline_table (pipeline_id, source_schema, source_table, "
					"  target_schema, target_table, key_columns, replica_identity, source_relid) "
					"VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, 0))",
					8, ttypes, targs, SPI_OK_INSERT);
	contract_record_first(t, target_schema, targs);
	if (t->ignored != NIL)
	{
		Datum	   *ig = palloc(sizeof(Datum) * list_length(t->ignored));
		ListCell   *ic;
		int			m = 0;
		Oid			itypes[3] = {INT4OID, TEXTARRAYOID, TEXTOID};
		Datum		iargs[3];

		foreach(ic, t->ignored)
			ig[m++] = CStringGetTextDatum(strVal(lfirst(ic)));
		iargs[0] = targs[0];
		iargs[1] = PointerGetDatum(construct_array(ig, m, TEXTOID, -1, false, TYPALIGN_INT));
		iargs[2] = CStringGetTextDatum(t->target);
		sluice_spi_exec("UPDATE sluice._pipeline_table SET ignored_columns = $2 "
						" WHERE pipeline_id = $1 AND target_table = $3",
						3, itypes, iargs, SPI_OK_UPDATE);
	}
}

static void
record_pipeline(const char *name, const char *source, const char *publication,
				bool publication_owned, const char *slot_name,
				const char *origin_name, const char *target_schema,
				XLogRecPtr consistent, List *tables, Oid owner, int *pipeline_id)
{
	Oid			types[10] = {TEXTOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, TEXTOID, NAMEOID, LSNOID, BOOLOID, OIDOID};
	Datum		args[10];
	bool		binary = true;
	ListCell   *lc;
	bool		isnull;

	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(source);
	args[2] = CStringGetTextDatum(publication);
	args[3] = BoolGetDatum(publication_owned);
	args[4] = CStringGetTextDatum(slot_name);
	args[5] = CStringGetTextDatum(origin_name);
	args[6] = catalog_name_datum(target_schema);
	args[7] = LSNGetDatum(consistent);
	foreach(lc, tables)
		binary &= ((SourceTable *) lfirst(lc))->stream_binary;
	args[8] = BoolGetDatum(binary);
	args[9] = ObjectIdGetDatum(owner);
	sluice_spi_exec("INSERT INTO sluice._pipeline (name, source_name, publication, publication_owned, "
					"  slot_name, origin_name, target_schema, consistent_lsn, binary_transfer, owner, created_by) "
					"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
					"        (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = $10)) RETURNING pipeline_id",
					10, types, args, SPI_OK_INSERT_RETURNING);
	*pipeline_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));

	foreach(lc, tables)
		record_table(*pipeline_id, target_schema, lfirst(lc));
}

/*
 * Create a pipeline that create_pipeline (api.c) validated: the
 * publication on the source when pg_sluice owns it (sc), the slot with its
 * exported snapshot, the datamart tables with the initial copy in that
 * snapshot, the catalog rows (contract version 1 of every table), the
 * replication origin at the slot's consistent point, and the initial
 * copy's run.  Sets np->pipeline_id, consistent, copied and run_id.  A
 * failure part-way drops what was created on the source before the error
 * propagates; what was created here rolls back with the transaction.
 */
void
pipeline_create(NewPipeline *np, SluiceConn *sc)
{
	volatile bool slot_created = false;
	SluiceConn *volatile repl = NULL;
	SluiceConn *volatile snap = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	SluiceUser	save;
	ListCell   *lc;

	PG_TRY();
	{
		PGresult   *res;
		StringInfoData sql;
		char	   *snapshot;
		int64		copied = 0;

		/* which tables are left empty for a chunked copy (checked first) */
		np->chunked = snapshot_initial_plan(sc, np->source, np->tables);

		if (np->publication_owned)
		{
			bool		first = true;

			/*
			 * ONLY: a plain table's inheritance children are not published
			 * (their rows are not part of the datamart table, and publishing
			 * them would need them to have a replica identity).  A
			 * partitioned table is published through its root, so its
			 * partitions, those created later included, arrive as it; a
			 * partition listed without its parent is published as itself.
			 */
			initStringInfo(&sql);
			appendStringInfo(&sql, "CREATE PUBLICATION %s FOR TABLE ", quote_identifier(np->publication));
			foreach(lc, np->tables)
			{
				SourceTable *t = lfirst(lc);

				appendStringInfo(&sql, "%s%s%s.%s", first ? "" : ", ",
								 t->partitioned ? "" : "ONLY ",
								 quote_identifier(t->schema), quote_identifier(t->name));
				first = false;
			}
			if (PQserverVersion(sc->conn) >= 130000)
				appendStringInfoString(&sql, " WITH (publish_via_partition_root = true)");
			transport_command(sc, sql.data, "create the publication");
		}

		/*
		 * Create the slot before this transaction writes anything: slot
		 * creation waits for every transaction with an XID on the source
		 * server to end, which would be us if the source were this server.
		 */
		repl = transport_connect(np->source, np->conninfo, true);
		res = transport_exec(repl,
							 psprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export')",
									  quote_identifier(np->slot_name)),
							 0, NULL, PGRES_TUPLES_OK, "create the replication slot");
		slot_created = true;
		np->consistent = transport_parse_lsn(PQgetvalue(res, 0, 1));
		snapshot = pstrdup(PQgetvalue(res, 0, 2));
		PQclear(res);

		snap = transport_connect(np->source, np->conninfo, false);
		transport_command(snap, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
						  "start the initial copy transaction");
		transport_command(snap, psprintf("SET TRANSACTION SNAPSHOT %s",
										 quote_literal_cstr(snapshot)),
						  "import the slot's snapshot");

		sluice_spi_exec(psprintf("CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(np->target_schema)),
						0, NULL, NULL, SPI_OK_UTILITY);
		foreach(lc, np->tables)
		{
			SourceTable *t = lfirst(lc);
			Oid			relid = t->adopted ? t->adopted : create_target_table(t, np->target_schema);
			TimestampTz tstart = GetCurrentTimestamp();
			int64		rows = 0;
			long		secs = 0;
			int			usecs;

			/* a chunked table stays empty: CALL sluice.copy_tables fills it */
			if (!list_member_ptr(np->chunked, t))
			{
				rows = copy_table(snap, t->schema, t->name, t->partitioned, t->columns,
								  relid, t->binary_safe, NULL, NIL,
								  psprintf("pipeline \"%s\": table %d of %d, %s.%s",
										   np->name, foreach_current_index(lc) + 1,
										   list_length(np->tables), t->schema, t->name));
				TimestampDifference(tstart, GetCurrentTimestamp(), &secs, &usecs);
			}
			copied += rows;
			/* a long copy says how far it is, table by table */
			if (secs >= 5)
				ereport(NOTICE,
						(errmsg("pipeline \"%s\": table %d of %d, %s.%s, copied: " INT64_FORMAT " rows in %ld s",
								np->name, foreach_current_index(lc) + 1, list_length(np->tables),
								t->schema, t->name, rows, secs)));
			if (!t->adopted)
			{
				/* a chunked one's key waits (snapshot.c, the lazy key) */
				if (!list_member_ptr(np->chunked, t))
					create_target_key(t, np->target_schema);
				comment_target(snap, t, np->target_schema, np->name, relid);
			}
		}
		transport_command(snap, "COMMIT", "end the initial copy transaction");
		transport_close(snap);
		snap = NULL;
		transport_close(repl);
		repl = NULL;

		/*
		 * The catalog rows are written as the extension owner (operators may
		 * not insert pipelines: a row names slots, origins and tables), for
		 * the role creating the pipeline, which owns it.
		 */
		sluice_become_catalog(&save);
		record_pipeline(np->name, np->source, np->publication, np->publication_owned, np->slot_name,
						np->origin_name, np->target_schema, np->consistent, np->tables, save.userid,
						&np->pipeline_id);
		foreach(lc, np->chunked)
			snapshot_record_initial(np->pipeline_id, lfirst(lc));
		if (np->chunked != NIL)
			copyworker_launch(np->pipeline_id);
		replorigin_create(np->origin_name);
		CommandCounterIncrement();
		origin_session_begin(np->origin_name);
		origin_session_set(np->consistent, np->started);

		np->copied = copied;
		np->run_id = catalog_insert_run(0, np->pipeline_id, "initial_copy", np->started,
										InvalidXLogRecPtr, np->consistent, 0, copied,
										0, 0, 0, 0);
		sluice_restore_user(&save);
		outbox_emit_run(np->run_id, 0);
		if (np->chunked != NIL && copyworker_count() > 0)
			ereport(NOTICE,
					(errmsg("pipeline \"%s\": %d of %d tables created empty, to be copied in chunks of %d rows by %d background workers",
							np->name, list_length(np->chunked), list_length(np->tables),
							snapshot_initial_chunk_rows(), copyworker_count()),
					 errdetail("pg_sluice.initial_copy chose a chunked copy: the workers start when this transaction commits; each chunk commits on its own, so a crash or a cancel repeats at most one chunk per worker."),
					 errhint("sluice.copy_progress shows how far it is and sluice.copy_chunks which worker copies what; CALL sluice.copy_tables(%s) waits until the copy has finished.",
							 quote_literal_cstr(np->name))));
		else if (np->chunked != NIL)
			ereport(NOTICE,
					(errmsg("pipeline \"%s\": %d of %d tables created empty, to be copied in chunks of %d rows",
							np->name, list_length(np->chunked), list_length(np->tables),
							snapshot_initial_chunk_rows()),
					 errdetail("pg_sluice.initial_copy chose a chunked copy: each chunk commits on its own, so a crash or a cancel repeats at most one chunk."),
					 errhint("CALL sluice.copy_tables(%s) copies them, with a notice per chunk; call it again to resume after an interruption. sluice.copy_progress shows how far it is.",
							 quote_literal_cstr(np->name))));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();

		/* Undo what we did on the source; what we did here rolls back. */
		HOLD_INTERRUPTS();
		if (snap)
			transport_close(snap);
		if (repl)
			transport_close(repl);
		PG_TRY();
		{
			SluiceConn *cc = transport_connect(np->source, np->conninfo, false);

			source_drop(cc, slot_created ? np->slot_name : NULL,
						np->publication_owned ? np->publication : NULL);
			transport_close(cc);
		}
		PG_CATCH();
		{
			FlushErrorState();
			ereport(WARNING,
					(errmsg("could not remove what pipeline \"%s\" created on source \"%s\"",
							np->name, np->source),
					 errhint("Drop replication slot \"%s\"%s on the source by hand.", np->slot_name,
							 np->publication_owned ? " and its publication" : "")));
		}
		PG_END_TRY();
		RESUME_INTERRUPTS();
		ReThrowError(edata);
	}
	PG_END_TRY();
}

/*
 * Add a table to an existing pipeline (sluice.add_table): on the source,
 * the table joins the pipeline's publication (when pg_sluice owns it; else
 * it must be in it already); here, its datamart table with its key and
 * comments but without its key (snapshot.c builds it when the stream or
 * the copy's end needs it), created as the pipeline's owner, and its
 * catalog rows (contract version 1).  It is left empty: the caller records its chunked copy
 * (snapshot.c), and until a chunk copies a key the stream's changes to it
 * are skipped.
 */
Oid
pipeline_add_table(SluicePipeline *pipe, SluiceConn *sc, SourceTable *t)
{
	const char *params[3] = {pipe->publication, t->schema, t->name};
	PGresult   *res;
	bool		published;
	Oid			relid;
	SluiceUser	save;

	if (t->keys == NIL || t->replident == 'f')
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s.%s\" on source \"%s\" has no primary key: it cannot be added to a pipeline",
						t->schema, t->name, pipe->source_name),
				 errdetail("A table is added by a chunked copy, in ranges of its key, while the pipeline streams."),
				 errhint("Give it a primary key on the source, or create a new pipeline for it: its initial copy takes one snapshot.")));
	pipeline_check_target(t, pipe->target_schema, false);

	res = transport_exec(sc,
						 "SELECT 1 FROM pg_catalog.pg_publication_tables "
						 " WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
						 3, params, PGRES_TUPLES_OK, "look the table up in the publication");
	published = PQntuples(res) > 0;
	PQclear(res);
	if (!published && !pipe->publication_owned)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" is not in publication \"%s\" on source \"%s\"",
						t->schema, t->name, pipe->publication, pipe->source_name),
				 errdetail("The pipeline uses a publication it did not create."),
				 errhint("On the source: ALTER PUBLICATION %s ADD TABLE %s.%s; then add the table again.",
						 quote_identifier(pipe->publication), quote_identifier(t->schema),
						 quote_identifier(t->name))));
	if (!published)
		transport_command(sc, psprintf("ALTER PUBLICATION %s ADD TABLE %s%s.%s",
									   quote_identifier(pipe->publication),
									   t->partitioned ? "" : "ONLY ",
									   quote_identifier(t->schema), quote_identifier(t->name)),
						  "add the table to the publication");

	sluice_become_owner(pipe, &save);
	sluice_spi_exec(psprintf("CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(pipe->target_schema)),
					0, NULL, NULL, SPI_OK_UTILITY);
	relid = create_target_table(t, pipe->target_schema);
	/* no key yet: snapshot.c builds it when needed (the lazy key) */
	comment_target(sc, t, pipe->target_schema, pipe->name, relid);
	sluice_restore_user(&save);

	sluice_become_catalog(&save);
	record_table(pipe->pipeline_id, pipe->target_schema, t);
	/* pgoutput's binary mode must suit every table of the pipeline */
	if (pipe->binary && !t->stream_binary)
	{
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(pipe->pipeline_id)};

		sluice_spi_exec("UPDATE sluice._pipeline SET binary_transfer = false WHERE pipeline_id = $1",
						1, types, args, SPI_OK_UPDATE);
	}
	sluice_restore_user(&save);
	return relid;
}

/*
 * Drop a pipeline's datamart objects (sluice.drop_pipeline with
 * drop_tables): its tags' schemas, its tables and their history tables,
 * and the target and history schemas when nothing else lives in them.
 */
void
pipeline_drop_tables(SluicePipeline *pipe)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	ListCell   *lc;
	uint64		k;

	/* tags are schemas of views over the tables */
	args[0] = Int32GetDatum(pipe->pipeline_id);
	/* only schemas the owner owns: a tag row names a schema to drop */
	sluice_spi_exec("SELECT t.schema_name FROM sluice._tag t "
					"  JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name "
					"  JOIN sluice._pipeline p ON p.pipeline_id = t.pipeline_id AND n.nspowner = p.owner "
					" WHERE t.pipeline_id = $1", 1, types, args, SPI_OK_SELECT);
	for (k = 0; k < SPI_processed; k++)
	{
		char	   *tag = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1);

		SPI_execute(psprintf("DROP SCHEMA IF EXISTS %s CASCADE", quote_identifier(tag)), false, 0);
	}
	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);
		char	   *hist = version_history_schema(t->target_schema);

		/* CASCADE: the table's time-travel functions return its row type */
		sluice_spi_exec(psprintf("DROP TABLE IF EXISTS %s.%s CASCADE",
								 quote_identifier(t->target_schema),
								 quote_identifier(t->target_table)),
						0, NULL, NULL, SPI_OK_UTILITY);
		/* (looked up first: IF EXISTS would still say the schema is missing) */
		if (OidIsValid(get_namespace_oid(hist, true)))
			sluice_spi_exec(psprintf("DROP TABLE IF EXISTS %s.%s",
									 quote_identifier(hist),
									 quote_identifier(t->target_table)),
							0, NULL, NULL, SPI_OK_UTILITY);
	}
	if (OidIsValid(get_namespace_oid(version_history_schema(pipe->target_schema), true)) &&
		!sluice_spi_exists("SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n "
						   "    ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass "
						   "   AND d.refobjid = n.oid WHERE n.nspname = $1",
						   version_history_schema(pipe->target_schema)))
		sluice_spi_exec(psprintf("DROP SCHEMA %s RESTRICT",
								 quote_identifier(version_history_schema(pipe->target_schema))),
						0, NULL, NULL, SPI_OK_UTILITY);
	/* and the target schema, when nothing else lives in it */
	if (!sluice_spi_exists("SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n "
						   "    ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass "
						   "   AND d.refobjid = n.oid WHERE n.nspname = $1", pipe->target_schema))
		sluice_spi_exec(psprintf("DROP SCHEMA IF EXISTS %s RESTRICT",
								 quote_identifier(pipe->target_schema)),
						0, NULL, NULL, SPI_OK_UTILITY);
}
