/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable entry points: sources, pipelines, refresh.
 *
 * Each function validates everything it can before it changes anything,
 * on the source or here; a failure part-way through pipeline creation
 * drops what it created on the source before the error propagates (the
 * local part rolls back with the transaction).
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

/* A source table as described by the source, before anything is created. */
typedef struct SourceTable
{
	char	   *schema;
	char	   *name;
	char	   *target;			/* datamart table name */
	char		replident;		/* d, f, i (n is refused) */
	bool		partitioned;	/* a partitioned table: published via its root */
	List	   *ancestors;		/* a partition: String "schema.name" of each */
	List	   *keys;			/* String column names */
	bool		key_deferrable; /* the source's key is DEFERRABLE */
	List	   *columns;		/* String column names */
	List	   *types;			/* String datamart type names */
	List	   *notnull;		/* int: 1 when NOT NULL */
	List	   *srctypes;		/* oid: type on the source, as pgoutput sends it */
	bool		binary_safe;	/* every column's binary form is the same here:
								 * the initial copy can be binary */
	bool		stream_binary;	/* pgoutput's binary mode can send every column
								 * (a type without a send function goes as text) */
	Oid			adopted;		/* existing datamart table it feeds, or 0 */
	List	   *ignored;		/* String: source columns the datamart table lacks */
} SourceTable;

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

static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *args, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "SPI failed (%s) for: %s", SPI_result_code_string(rc), sql);
}

static bool
spi_exists(const char *sql, const char *arg)
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

static char *
getval(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : pstrdup(PQgetvalue(res, row, col));
}

/*
 * Drop a slot on the source, waiting a little if it is still marked active
 * by a walsender that is exiting.  Returns false if it did not exist.
 */
static bool
drop_source_slot(SluiceConn *sc, const char *slot)
{
	const char *params[1] = {slot};
	int			attempt;

	for (attempt = 0; attempt < 100; attempt++)
	{
		PGresult   *res = transport_exec(sc,
										 "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
										 1, params, PGRES_TUPLES_OK,
										 "look up the replication slot");
		bool		exists = PQntuples(res) > 0;
		bool		active = exists && !PQgetisnull(res, 0, 0);

		PQclear(res);
		if (!exists)
			return false;
		if (!active)
		{
			PQclear(transport_exec(sc, "SELECT pg_catalog.pg_drop_replication_slot($1)",
								   1, params, PGRES_TUPLES_OK,
								   "drop the replication slot"));
			return true;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_IN_USE),
			 errmsg("replication slot \"%s\" on source \"%s\" is in use", slot, sc->source),
			 errhint("Stop whatever reads the slot and try again.")));
	return false;				/* keep compiler quiet */
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
	if (spi_exists("SELECT 1 FROM sluice._source WHERE name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("source \"%s\" already exists", name),
				 errhint("Use sluice.alter_source() to change its connection string.")));
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(conninfo);
	spi_exec("INSERT INTO sluice._source (name, conninfo) VALUES ($1, $2)",
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
	spi_exec("UPDATE sluice._source SET conninfo = $2 WHERE name = $1",
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
	if (spi_exists("SELECT 1 FROM sluice._pipeline WHERE source_name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("source \"%s\" is used by a pipeline", name),
				 errhint("Drop its pipelines first with sluice.drop_pipeline().")));
	args[0] = CStringGetTextDatum(name);
	spi_exec("DELETE FROM sluice._source WHERE name = $1", 1, types, args, SPI_OK_DELETE);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("source \"%s\" does not exist", name),
				 errhint("sluice.sources lists the known sources.")));
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/* ---------- pipeline creation ---------- */

/*
 * Check the source can feed a pipeline: logical WAL, a role allowed to
 * create slots, a free slot name.
 */
static void
check_source(SluiceConn *sc, const char *slot_name)
{
	const char *params[1] = {slot_name};
	PGresult   *res;

	res = transport_exec(sc,
						 "SELECT pg_catalog.current_setting('wal_level'), "
						 "       (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), "
						 "       current_user, "
						 "       pg_catalog.current_setting('server_version_num')::int, "
						 "       EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
						 1, params, PGRES_TUPLES_OK, "describe itself");
	if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("source \"%s\" is not configured for logical replication", sc->source),
				 errdetail("Its wal_level is \"%s\".", PQgetvalue(res, 0, 0)),
				 errhint("Set wal_level = logical on the source and restart it.")));
	if (atoi(PQgetvalue(res, 0, 3)) < 100000)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("source \"%s\" runs PostgreSQL older than 10", sc->source)));
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" on source \"%s\" may not create replication slots",
						PQgetvalue(res, 0, 2), sc->source),
				 errhint("On the source, run ALTER ROLE %s REPLICATION, or connect as a role that has it.",
						 quote_identifier(PQgetvalue(res, 0, 2)))));
	if (strcmp(PQgetvalue(res, 0, 4), "t") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replication slot \"%s\" already exists on source \"%s\"",
						slot_name, sc->source),
				 errhint("Pass another slot_name, or drop the slot on the source if nothing uses it.")));
	PQclear(res);
}

/*
 * Refuse a table live could no longer update or delete from once it is
 * published.  A publication that publishes updates and deletes makes the
 * source's own UPDATE and DELETE of a table without a usable replica
 * identity fail ("does not have a replica identity and publishes updates"):
 * REPLICA IDENTITY NOTHING, a default identity without a primary key or
 * with a DEFERRABLE one (PostgreSQL cannot use it), an identity index that
 * is gone.  pg_sluice must never make a write on live fail, so this runs
 * for every table, and for a partitioned table for every partition (all
 * are published), before anything is created.  Partitions also need an
 * identity that carries the parent's key: the default one or FULL.
 * Inheritance children are not published (the publication names plain
 * tables with ONLY), so they need nothing.
 */
static void
check_replica_identity(SluiceConn *sc, const char *oid)
{
	const char *params[1] = {oid};
	PGresult   *res;
	int			i;

	res = transport_exec(sc,
						 "WITH RECURSIVE tree(relid, parent) AS ( "
						 "  SELECT $1::oid, NULL::oid "
						 "  UNION ALL "
						 "  SELECT i.inhrelid, tree.relid FROM pg_catalog.pg_inherits i "
						 "    JOIN tree ON i.inhparent = tree.relid "
						 "    JOIN pg_catalog.pg_class p ON p.oid = tree.relid AND p.relkind = 'p') "
						 "SELECT n.nspname, c.relname, c.relreplident, c.relkind, "
						 "       (SELECT pg_catalog.format('%I.%I', pn.nspname, pc.relname) "
						 "          FROM pg_catalog.pg_class pc JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace "
						 "         WHERE pc.oid = tree.parent), "
						 "       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
						 "       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND i.indimmediate), "
						 "       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident "
						 "                  AND i.indimmediate AND i.indisvalid) "
						 "  FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.relid "
						 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
						 " WHERE c.relkind IN ('r', 'p') "
						 " ORDER BY tree.parent NULLS FIRST, c.relname",
						 1, params, PGRES_TUPLES_OK, "describe a table's replica identity");
	for (i = 0; i < PQntuples(res); i++)
	{
		char	   *qname = psprintf("%s.%s", quote_identifier(PQgetvalue(res, i, 0)),
									 quote_identifier(PQgetvalue(res, i, 1)));
		const char *name = psprintf("%s.%s", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
		char		ident = PQgetvalue(res, i, 2)[0];
		bool		partitioned = PQgetvalue(res, i, 3)[0] == 'p';
		bool		is_part = !PQgetisnull(res, i, 4);
		bool		has_pk = PQgetvalue(res, i, 5)[0] == 't';
		bool		pk_ok = PQgetvalue(res, i, 6)[0] == 't';
		bool		index_ok = PQgetvalue(res, i, 7)[0] == 't';
		char	   *where = is_part ?
		psprintf("It is a partition of \"%s\", which publishes it. ", PQgetvalue(res, i, 4)) : "";

		if (partitioned)
		{
			/* partitions created later get the parent's key, and only that */
			if (!has_pk)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("partitioned table \"%s\" on source \"%s\" has no primary key", name, sc->source),
						 errdetail("%sPartitions created later take their replica identity from the parent's primary key; without one, the source's own UPDATE and DELETE of them would fail once they are published.", where),
						 errhint("Add a primary key to %s on the source, or list its partitions instead.", qname)));
			if (!pk_ok)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("primary key of partitioned table \"%s\" on source \"%s\" is deferrable and cannot identify rows", name, sc->source),
						 errdetail("%sPartitions created later take it as their replica identity, which PostgreSQL cannot use: the source's own UPDATE and DELETE of them would fail once they are published.", where),
						 errhint("Make the primary key of %s on the source not deferrable, or list its partitions instead.", qname)));
			continue;
		}
		if (ident == 'n')
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" on source \"%s\" has REPLICA IDENTITY NOTHING", name, sc->source),
					 errdetail("%sPublishing it would make the source's own UPDATE and DELETE of it fail.", where),
					 has_pk ?
					 errhint("On the source, run ALTER TABLE %s REPLICA IDENTITY DEFAULT.", qname) :
					 errhint("On the source, run ALTER TABLE %s REPLICA IDENTITY FULL, or add a primary key and run ALTER TABLE %s REPLICA IDENTITY DEFAULT.", qname, qname)));
		if (ident == 'd' && !has_pk)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s\" on source \"%s\" has no primary key", name, sc->source),
					 errdetail("%sUpdates and deletes can only be applied to rows pg_sluice can identify, and publishing it would make the source's own UPDATE and DELETE of it fail.", where),
					 errhint("Add a primary key on the source, or run ALTER TABLE %s REPLICA IDENTITY FULL there.", qname)));
		if (ident == 'd' && !pk_ok)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("primary key of table \"%s\" on source \"%s\" is deferrable and cannot identify rows", name, sc->source),
					 errdetail("%sPostgreSQL cannot use a deferrable key as replica identity: publishing the table would make the source's own UPDATE and DELETE of it fail.", where),
					 errhint("On the source, run ALTER TABLE %s REPLICA IDENTITY FULL (pg_sluice then gives the datamart table a deferred key), or make the key not deferrable.", qname)));
		if (ident == 'i' && (!index_ok || is_part))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replica identity index of table \"%s\" on source \"%s\" cannot identify rows%s",
							name, sc->source, index_ok ? " by the parent's key" : ""),
					 errdetail("%s%s", where, index_ok ?
							   "Rows of a partitioned table are identified by the parent's primary key." :
							   "The index is missing, deferrable or invalid: publishing the table would make the source's own UPDATE and DELETE of it fail."),
					 errhint("On the source, run ALTER TABLE %s REPLICA IDENTITY %s.", qname,
							 has_pk && pk_ok ? "DEFAULT" : "FULL")));
	}
	PQclear(res);
}

/*
 * Describe one source table: its key, columns and their datamart types.
 *
 * Type rule: built-in types keep their type; enums become text (their
 * label); domains become their base type (the source already enforced the
 * domain); arrays of those follow the same rule (an array of a domain is an
 * array of its base type); any other type must exist in the datamart under
 * the same schema-qualified name.  STORED generated columns are left out
 * (pgoutput does not send them, COPY cannot name them) and recorded as
 * ignored source columns.
 */
static SourceTable *
describe_table(SluiceConn *sc, const char *spec)
{
	const char *params[1] = {spec};
	PGresult   *res;
	SourceTable *t = palloc0(sizeof(SourceTable));
	char	   *oid;
	char		relkind;
	int			i;

	/* Unqualified names resolve as on the source with the default path. */
	res = transport_exec(sc,
						 "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident, "
						 "       pg_catalog.has_table_privilege(c.oid, 'SELECT'), c.relispartition "
						 "  FROM pg_catalog.pg_class c "
						 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
						 " WHERE c.oid = (SELECT pg_catalog.to_regclass($1) "
						 "                  FROM pg_catalog.set_config('search_path', '\"$user\", public', true))",
						 1, params, PGRES_TUPLES_OK, "look up a table");
	if (PQntuples(res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s\" does not exist on source \"%s\"", spec, sc->source),
				 errhint("Name tables as schema.table; unqualified names are looked up in the source's public schema.")));
	oid = getval(res, 0, 0);
	t->schema = getval(res, 0, 1);
	t->name = getval(res, 0, 2);
	t->target = t->name;
	relkind = PQgetvalue(res, 0, 3)[0];
	if (relkind != 'r' && relkind != 'p')
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s.%s\" on source \"%s\" is not a plain table", t->schema, t->name, sc->source),
				 errdetail("Views and foreign tables cannot be replicated.")));
	t->partitioned = relkind == 'p';
	if (t->partitioned && PQserverVersion(sc->conn) < 130000)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("partitioned table \"%s.%s\" on source \"%s\" cannot be published through its root",
						t->schema, t->name, sc->source),
				 errdetail("Publishing through the root needs PostgreSQL 13 or later on the source."),
				 errhint("List the partitions instead.")));
	if (strcmp(PQgetvalue(res, 0, 5), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read table \"%s.%s\" on source \"%s\"",
						t->schema, t->name, sc->source),
				 errhint("On the source, GRANT SELECT ON %s.%s to the role pg_sluice connects as.",
						 quote_identifier(t->schema), quote_identifier(t->name))));
	t->replident = PQgetvalue(res, 0, 4)[0];
	if (PQgetvalue(res, 0, 6)[0] == 't')
	{
		PQclear(res);
		params[0] = oid;
		res = transport_exec(sc,
							 "WITH RECURSIVE up(relid, depth) AS ( "
							 "  SELECT i.inhparent, 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = $1::oid "
							 "  UNION ALL "
							 "  SELECT i.inhparent, up.depth + 1 FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.relid) "
							 "SELECT n.nspname || '.' || c.relname "
							 "  FROM up JOIN pg_catalog.pg_class c ON c.oid = up.relid "
							 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY up.depth",
							 1, params, PGRES_TUPLES_OK, "look up a partition's parents");
		for (i = 0; i < PQntuples(res); i++)
			t->ancestors = lappend(t->ancestors, makeString(getval(res, i, 0)));
	}
	PQclear(res);

	check_replica_identity(sc, oid);

	/* The key: the primary key for identity "default", the index for "index". */
	params[0] = oid;
	res = transport_exec(sc,
						 "SELECT a.attname, NOT i.indimmediate "
						 "  FROM pg_catalog.pg_index i "
						 "  CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
						 "  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
						 " WHERE i.indrelid = $1::oid "
						 "   AND CASE (SELECT relreplident FROM pg_catalog.pg_class WHERE oid = $1::oid) "
						 "       WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END "
						 " ORDER BY k.ord",
						 1, params, PGRES_TUPLES_OK, "describe a table's key");
	for (i = 0; i < PQntuples(res); i++)
	{
		t->keys = lappend(t->keys, makeString(getval(res, i, 0)));
		t->key_deferrable = PQgetvalue(res, i, 1)[0] == 't';
	}
	PQclear(res);

	if (t->keys == NIL && t->replident != 'f')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" on source \"%s\" has no primary key",
						t->schema, t->name, sc->source),
				 errdetail("Updates and deletes can only be applied to rows pg_sluice can identify."),
				 errhint("Add a primary key on the source, or run ALTER TABLE %s.%s REPLICA IDENTITY FULL there.",
						 quote_identifier(t->schema), quote_identifier(t->name))));

	/*
	 * Columns and their datamart types: the base type of a domain (col, then
	 * base), and for an array the base type of its element (elem, then
	 * ebase), so that an array of a domain becomes an array of its base
	 * type.  Binary transfer, per column: the initial copy needs send and
	 * receive functions all the way down (aclitem[] has an array_send, but
	 * aclitem has none) and the same binary form here (built-in types, enums
	 * read as text; not an array of a domain, whose element type OID is the
	 * domain's); pgoutput sends a type without a send function as text by
	 * itself.
	 */
	res = transport_exec(sc,
						 psprintf("WITH RECURSIVE col AS ( "
								  "  SELECT a.attnum, a.attname::text AS attname, a.attnotnull, "
								  "         a.atttypid AS typid, a.atttypmod AS typmod, 0 AS depth, a.atttypid AS rawtyp, "
								  "         %s AS generated "
								  "    FROM pg_catalog.pg_attribute a "
								  "   WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped "
								  "  UNION ALL "
								  "  SELECT col.attnum, col.attname, col.attnotnull, t.typbasetype, t.typtypmod, col.depth + 1, "
								  "         col.rawtyp, col.generated "
								  "    FROM col JOIN pg_catalog.pg_type t ON t.oid = col.typid "
								  "   WHERE t.typtype = 'd'), "
								  "base AS (SELECT DISTINCT ON (attnum) * FROM col ORDER BY attnum, depth DESC), "
								  "elem AS ( "
								  "  SELECT b.attnum, t.typelem AS typid, -1 AS typmod, 0 AS depth "
								  "    FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.typid "
								  "   WHERE t.typcategory = 'A' AND t.typelem <> 0 "
								  "  UNION ALL "
								  "  SELECT elem.attnum, t.typbasetype, t.typtypmod, elem.depth + 1 "
								  "    FROM elem JOIN pg_catalog.pg_type t ON t.oid = elem.typid "
								  "   WHERE t.typtype = 'd'), "
								  "ebase AS (SELECT DISTINCT ON (attnum) * FROM elem ORDER BY attnum, depth DESC) "
								  "SELECT b.attname, b.attnotnull, "
								  "       CASE WHEN t.typtype = 'e' THEN 'text' "
								  "            WHEN et.typtype = 'e' THEN 'text[]' "
								  "            WHEN eb.depth > 0 THEN pg_catalog.format_type(eb.typid, eb.typmod) || '[]' "
								  "            ELSE pg_catalog.format_type(b.typid, b.typmod) END, "
								  "       (t.typtype = 'e' OR (b.typid < 16384 AND t.typsend <> 0 AND t.typreceive <> 0)) "
								  "         AND (eb.attnum IS NULL OR (eb.depth = 0 AND eb.typid < 16384 "
								  "                                    AND et.typsend <> 0 AND et.typreceive <> 0)), "
								  "       b.rawtyp, b.generated, t.typsend = 0 "
								  "  FROM base b JOIN pg_catalog.pg_type t ON t.oid = b.typid "
								  "  LEFT JOIN ebase eb ON eb.attnum = b.attnum "
								  "  LEFT JOIN pg_catalog.pg_type et ON et.oid = eb.typid "
								  " ORDER BY b.attnum",
								  PQserverVersion(sc->conn) >= 120000 ? "a.attgenerated <> ''" : "false"),
						 1, params, PGRES_TUPLES_OK, "describe a table's columns");
	t->binary_safe = true;
	t->stream_binary = true;
	for (i = 0; i < PQntuples(res); i++)
	{
		char	   *attname = getval(res, i, 0);

		if (strcmp(PQgetvalue(res, i, 5), "t") == 0)
		{
			ListCell   *lc;

			foreach(lc, t->keys)
				if (strcmp(strVal(lfirst(lc)), attname) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("key column \"%s\" of table \"%s.%s\" on source \"%s\" is a generated column",
									attname, t->schema, t->name, sc->source),
							 errdetail("Generated columns are not replicated, so rows could not be identified.")));
			t->ignored = lappend(t->ignored, makeString(attname));
			continue;
		}
		if (strcmp(PQgetvalue(res, i, 3), "t") != 0)
		{
			t->binary_safe = false;
			if (strcmp(PQgetvalue(res, i, 6), "t") != 0)
				t->stream_binary = false;
		}
		t->columns = lappend(t->columns, makeString(attname));
		t->notnull = lappend_int(t->notnull, strcmp(PQgetvalue(res, i, 1), "t") == 0);
		t->types = lappend(t->types, makeString(getval(res, i, 2)));
		t->srctypes = lappend_oid(t->srctypes, (Oid) strtoul(PQgetvalue(res, i, 4), NULL, 10));
	}
	PQclear(res);
	if (t->columns == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s.%s\" on source \"%s\" has no columns", t->schema, t->name, sc->source)));
	return t;
}

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
	if (spi_exists(psprintf("SELECT 1 FROM %s.%s LIMIT 1 -- $1",
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

static void
check_target(SourceTable *t, const char *target_schema, bool adopt)
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
	spi_exec(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
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
	spi_exec(psprintf("COMMENT ON TABLE %s IS %s", qual,
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
		spi_exec(psprintf("COMMENT ON COLUMN %s.%s IS %s", qual, quote_identifier(col),
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
	StringInfoData sql;
	ListCell   *lc;
	bool		first = true;

	if (t->keys == NIL)
		return;
	initStringInfo(&sql);
	appendStringInfo(&sql, "ALTER TABLE %s.%s ADD PRIMARY KEY (",
					 quote_identifier(target_schema), quote_identifier(t->target));
	foreach(lc, t->keys)
	{
		appendStringInfo(&sql, "%s%s", first ? "" : ", ", quote_identifier(strVal(lfirst(lc))));
		first = false;
	}
	appendStringInfoChar(&sql, ')');
	/* see the comment above */
	if (t->key_deferrable || t->replident == 'f')
		appendStringInfoString(&sql, " DEFERRABLE INITIALLY DEFERRED");
	spi_exec(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
}

/*
 * Contract version 1 of a table: the datamart table as created, each column
 * fed by the source column of the same name.  targs: pipeline id, source
 * schema and table, target schema and table, key columns.
 */
static void
record_contract(SourceTable *t, const char *target_schema, Datum *targs)
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
	spi_exec("INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, "
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

static void
record_pipeline(const char *name, const char *source, const char *publication,
				bool publication_owned, const char *slot_name,
				const char *origin_name, const char *target_schema,
				XLogRecPtr consistent, List *tables, Oid owner, int *pipeline_id)
{
	Oid			types[10] = {TEXTOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, TEXTOID, NAMEOID, LSNOID, BOOLOID, OIDOID};
	Datum		args[10];
	bool		binary = true;
	Oid			ttypes[7] = {INT4OID, TEXTOID, TEXTOID, NAMEOID, NAMEOID, TEXTARRAYOID, TEXTOID};
	Datum		targs[7];
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
	spi_exec("INSERT INTO sluice._pipeline (name, source_name, publication, publication_owned, "
			 "  slot_name, origin_name, target_schema, consistent_lsn, binary_transfer, owner, created_by) "
			 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
			 "        (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = $10)) RETURNING pipeline_id",
			 10, types, args, SPI_OK_INSERT_RETURNING);
	*pipeline_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));

	foreach(lc, tables)
	{
		SourceTable *t = lfirst(lc);
		Datum	   *keys = palloc(sizeof(Datum) * Max(list_length(t->keys), 1));
		ListCell   *kc;
		int			n = 0;
		const char *ri = t->replident == 'f' ? "full" :
		t->replident == 'i' ? "index" : "default";

		foreach(kc, t->keys)
			keys[n++] = CStringGetTextDatum(strVal(lfirst(kc)));
		targs[0] = Int32GetDatum(*pipeline_id);
		targs[1] = CStringGetTextDatum(t->schema);
		targs[2] = CStringGetTextDatum(t->name);
		targs[3] = catalog_name_datum(target_schema);
		targs[4] = catalog_name_datum(t->target);
		targs[5] = PointerGetDatum(construct_array(keys, n, TEXTOID, -1, false, TYPALIGN_INT));
		targs[6] = CStringGetTextDatum(ri);
		spi_exec("INSERT INTO sluice._pipeline_table (pipeline_id, source_schema, source_table, "
				 "  target_schema, target_table, key_columns, replica_identity) "
				 "VALUES ($1, $2, $3, $4, $5, $6, $7)",
				 7, ttypes, targs, SPI_OK_INSERT);
		record_contract(t, target_schema, targs);
		if (t->ignored != NIL)
		{
			Datum	   *ig = palloc(sizeof(Datum) * list_length(t->ignored));
			ListCell   *ic;
			int			m = 0;
			Oid			itypes[2] = {INT4OID, TEXTARRAYOID};
			Datum		iargs[2];

			foreach(ic, t->ignored)
				ig[m++] = CStringGetTextDatum(strVal(lfirst(ic)));
			iargs[0] = targs[0];
			iargs[1] = PointerGetDatum(construct_array(ig, m, TEXTOID, -1, false, TYPALIGN_INT));
			spi_exec(psprintf("UPDATE sluice._pipeline_table SET ignored_columns = $2 "
							  " WHERE pipeline_id = $1 AND target_table = %s",
							  quote_literal_cstr(t->target)),
					 2, itypes, iargs, SPI_OK_UPDATE);
		}
	}
}

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
	volatile bool publication_owned = false;
	volatile bool slot_created = false;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *elnulls;
	int			nelems;
	int			i;
	List	   *volatile tables = NIL;
	ListCell   *lc;
	SluiceConn *sc;
	SluiceConn *volatile repl = NULL;
	SluiceConn *volatile snap = NULL;
	TimestampTz started = GetCurrentTimestamp();
	MemoryContext cxt = CurrentMemoryContext;
	XLogRecPtr	consistent = InvalidXLogRecPtr;
	ApplyStats	stats;
	int64		run_id = 0;
	int			pipeline_id;
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
	exists = spi_exists("SELECT 1 FROM sluice._pipeline WHERE name = $1", name);
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
	check_source(sc, slot_name);
	for (i = 0; i < nelems; i++)
	{
		SourceTable *t = describe_table(sc, TextDatumGetCString(elems[i]));

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
		check_target(t, target_schema, adopt);
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

	{
		const char *params[1] = {publication};
		PGresult   *res = transport_exec(sc,
										 "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
										 1, params, PGRES_TUPLES_OK, "look up the publication");
		bool		exists = PQntuples(res) > 0;

		PQclear(res);
		if (exists && !publication_given)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("publication \"%s\" already exists on source \"%s\"", publication, source),
					 errhint("Pass publication => '%s' to use it, or drop it on the source.", publication)));
		if (exists)
		{
			foreach(lc, tables)
			{
				SourceTable *t = lfirst(lc);
				const char *p3[3] = {publication, t->schema, t->name};

				/*
				 * Without publish_via_partition_root, a parent's changes
				 * arrive under its partitions' names: none would be applied.
				 */
				if (t->partitioned)
				{
					res = transport_exec(sc,
										 "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1 AND pubviaroot",
										 1, p3, PGRES_TUPLES_OK, "look up the publication");
					exists = PQntuples(res) > 0;
					PQclear(res);
					if (!exists)
						ereport(ERROR,
								(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								 errmsg("publication \"%s\" on source \"%s\" does not publish partitioned table \"%s.%s\" through its root",
										publication, source, t->schema, t->name),
								 errdetail("Its partitions' changes would arrive under their own names, and none would be applied."),
								 errhint("On the source, run ALTER PUBLICATION %s SET (publish_via_partition_root = true).",
										 quote_identifier(publication))));
				}
				res = transport_exec(sc,
									 "SELECT 1 FROM pg_catalog.pg_publication_tables "
									 " WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
									 3, p3, PGRES_TUPLES_OK, "look up the publication's tables");
				exists = PQntuples(res) > 0;
				PQclear(res);
				if (!exists)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("publication \"%s\" on source \"%s\" does not include table \"%s.%s\"",
									publication, source, t->schema, t->name),
							 errhint("On the source, run ALTER PUBLICATION %s ADD TABLE %s.%s.",
									 quote_identifier(publication), quote_identifier(t->schema),
									 quote_identifier(t->name))));
			}
		}
		else
			publication_owned = true;
	}

	PG_TRY();
	{
		PGresult   *res;
		StringInfoData sql;
		char	   *snapshot;
		int64		copied = 0;

		if (publication_owned)
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
			appendStringInfo(&sql, "CREATE PUBLICATION %s FOR TABLE ", quote_identifier(publication));
			foreach(lc, tables)
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
		repl = transport_connect(source, conninfo, true);
		res = transport_exec(repl,
							 psprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export')",
									  quote_identifier(slot_name)),
							 0, NULL, PGRES_TUPLES_OK, "create the replication slot");
		slot_created = true;
		consistent = transport_parse_lsn(PQgetvalue(res, 0, 1));
		snapshot = pstrdup(PQgetvalue(res, 0, 2));
		PQclear(res);

		snap = transport_connect(source, conninfo, false);
		transport_command(snap, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
						  "start the initial copy transaction");
		transport_command(snap, psprintf("SET TRANSACTION SNAPSHOT %s",
										 quote_literal_cstr(snapshot)),
						  "import the slot's snapshot");

		spi_exec(psprintf("CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(target_schema)),
				 0, NULL, NULL, SPI_OK_UTILITY);
		foreach(lc, tables)
		{
			SourceTable *t = lfirst(lc);
			Oid			relid = t->adopted ? t->adopted : create_target_table(t, target_schema);

			copied += copy_table(snap, t->schema, t->name, t->partitioned, t->columns,
								 relid, t->binary_safe);
			if (!t->adopted)
			{
				create_target_key(t, target_schema);
				comment_target(snap, t, target_schema, name, relid);
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
		record_pipeline(name, source, publication, publication_owned, slot_name,
						origin_name, target_schema, consistent, tables, save.userid,
						&pipeline_id);
		replorigin_create(origin_name);
		CommandCounterIncrement();
		origin_session_begin(origin_name);
		origin_session_set(consistent, started);

		memset(&stats, 0, sizeof(stats));
		stats.inserted = copied;
		run_id = catalog_insert_run(0, pipeline_id, "initial_copy", started,
									InvalidXLogRecPtr, consistent, 0, copied,
									0, 0, 0, 0);
		sluice_restore_user(&save);
		outbox_emit_run(run_id, 0);
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
			SluiceConn *cc = transport_connect(source, conninfo, false);

			if (slot_created)
				(void) drop_source_slot(cc, slot_name);
			if (publication_owned)
				transport_command(cc, psprintf("DROP PUBLICATION IF EXISTS %s",
											   quote_identifier(publication)),
								  "drop the publication");
			transport_close(cc);
		}
		PG_CATCH();
		{
			FlushErrorState();
			ereport(WARNING,
					(errmsg("could not remove what pipeline \"%s\" created on source \"%s\"",
							name, source),
					 errhint("Drop replication slot \"%s\"%s on the source by hand.", slot_name,
							 publication_owned ? " and its publication" : "")));
		}
		PG_END_TRY();
		RESUME_INTERRUPTS();
		ReThrowError(edata);
	}
	PG_END_TRY();

	transport_close(sc);
	SPI_finish();
	PG_RETURN_DATUM(make_result(fcinfo, name, run_id, "initial_copy", &stats,
								InvalidXLogRecPtr, consistent, started, "succeeded"));
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
	appendStringInfoString(&body, "{\"status\": \"failed\", \"kind\": \"refresh\", \"job\": ");
	escape_json(&body, psprintf("pg_sluice.%s", pipeline));
	appendStringInfoString(&body, ", \"error\": ");
	escape_json(&body, edata->message ? edata->message : "unknown error");
	appendStringInfoString(&body, ", \"summary\": ");
	escape_json(&body, psprintf("refresh failed: %s", edata->message ? edata->message : "unknown error"));
	appendStringInfoString(&body, ", \"tables\": []}");

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
		announce = spi_exists("SELECT 1 FROM sluice._destination WHERE $1 IS NOT NULL "
							  "   AND ('*' = ANY (events) OR 'refresh_failed' = ANY (events))", "x");
		sluice_restore_user(&save);
	}
	PG_TRY();
	{
		sc = transport_connect(pipe->source_name, pipe->conninfo, false);
		refresh_pipeline(pipe, sc, 0, 0, &r);
		if (!r.conn_closed)
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
	SPI_finish();
	PG_RETURN_DATUM(make_result(fcinfo, name, run_id, "refresh", &r.stats,
								r.start_lsn, r.end_lsn, started,
								r.paused ? "paused" : "succeeded"));
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
	ListCell   *lc;

	PreventInTransactionBlock(true, "sluice.drop_pipeline()");

	SPI_connect();
	/* a continuous worker lets go of the pipeline first */
	pipe = catalog_pipeline(name, false);
	sluice_check_operator(pipe, "drop");
	if (pipe->continuous)
		(void) worker_stop_pipeline(MyDatabaseId, pipe->pipeline_id, 60000);
	pipe = catalog_pipeline(name, true);

	PG_TRY();
	{
		SluiceConn *sc = transport_connect(pipe->source_name, pipe->conninfo, false);

		(void) drop_source_slot(sc, pipe->slot_name);
		if (pipe->publication_owned)
			transport_command(sc, psprintf("DROP PUBLICATION IF EXISTS %s",
										   quote_identifier(pipe->publication)),
							  "drop the publication");
		transport_close(sc);
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
	{
		uint64		k;

		/* tags are schemas of views over the tables */
		args[0] = Int32GetDatum(pipe->pipeline_id);
		/* only schemas the owner owns: a tag row names a schema to drop */
		spi_exec("SELECT t.schema_name FROM sluice._tag t "
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
			char	   *hist = psprintf("%s_history", t->target_schema);

			/* CASCADE: the table's time-travel functions return its row type */
			spi_exec(psprintf("DROP TABLE IF EXISTS %s.%s CASCADE",
							  quote_identifier(t->target_schema),
							  quote_identifier(t->target_table)),
					 0, NULL, NULL, SPI_OK_UTILITY);
			/* (looked up first: IF EXISTS would still say the schema is missing) */
			if (OidIsValid(get_namespace_oid(hist, true)))
				spi_exec(psprintf("DROP TABLE IF EXISTS %s.%s",
								  quote_identifier(hist),
								  quote_identifier(t->target_table)),
						 0, NULL, NULL, SPI_OK_UTILITY);
		}
		if (OidIsValid(get_namespace_oid(psprintf("%s_history", pipe->target_schema), true)) &&
			!spi_exists("SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n "
						"    ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass "
						"   AND d.refobjid = n.oid WHERE n.nspname = $1",
						psprintf("%s_history", pipe->target_schema)))
			spi_exec(psprintf("DROP SCHEMA %s RESTRICT",
							  quote_identifier(psprintf("%s_history", pipe->target_schema))),
					 0, NULL, NULL, SPI_OK_UTILITY);
		/* and the target schema, when nothing else lives in it */
		if (!spi_exists("SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n "
						"    ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass "
						"   AND d.refobjid = n.oid WHERE n.nspname = $1", pipe->target_schema))
			spi_exec(psprintf("DROP SCHEMA IF EXISTS %s RESTRICT",
							  quote_identifier(pipe->target_schema)),
					 0, NULL, NULL, SPI_OK_UTILITY);
	}
	args[0] = Int32GetDatum(pipe->pipeline_id);
	sluice_become_catalog(&save);
	/* views publishing its contract versions (sluice.publish_contract) */
	spi_exec("SELECT sluice._unpublish_pipeline($1)", 1, types, args, SPI_OK_SELECT);
	spi_exec("DELETE FROM sluice._pipeline WHERE pipeline_id = $1", 1, types, args, SPI_OK_DELETE);
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
