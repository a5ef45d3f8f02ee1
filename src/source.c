/*-------------------------------------------------------------------------
 *
 * source.c
 *	  What pg_sluice asks of a source's catalog, and drops there, when a
 *	  pipeline is created or dropped.
 *
 * NOTES
 *	  What this file owns.  The checks that decide whether a source can feed a
 *	  pipeline, run before anything is created: logical WAL, a role allowed to
 *	  create slots, a free slot name (source_check); every table's replica
 *	  identity, for a partitioned table every partition's
 *	  (check_replica_identity: pg_sluice must never make a write on the source
 *	  fail); each table's key, columns and their datamart types
 *	  (source_describe_table); the publication it is given, or the free name
 *	  of the one it will own (source_check_publication).  All of it is one
 *	  shape, a query on the source with parameters and a refusal that says
 *	  what to run there: source_exists.  And what a pipeline leaves on the
 *	  source to drop: its slot, waiting for an exiting walsender
 *	  (source_drop_slot), and its publication (source_drop), for
 *	  sluice.drop_pipeline and for the undo of a failed creation alike.
 *
 *	  What it never does.  Write to the datamart, or create anything on the
 *	  source: the publication and the slot are created by pipeline_create,
 *	  next to the undo that drops them.
 *
 *	  Rejected.  Creating first and checking after (CREATE PUBLICATION refuses
 *	  nothing): a published table without a usable replica identity makes the
 *	  source's own UPDATE and DELETE fail.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/source.c
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

static char *
getval(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : pstrdup(PQgetvalue(res, row, col));
}

/*
 * Drop a slot on the source, waiting a little if it is still marked active
 * by a walsender that is exiting.  Returns false if it did not exist.
 */
bool
source_drop_slot(SluiceConn *sc, const char *slot)
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

/*
 * Check the source can feed a pipeline: logical WAL, a role allowed to
 * create slots, a free slot name.
 */
void
source_check(SluiceConn *sc, const char *slot_name)
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
SourceTable *
source_describe_table(SluiceConn *sc, const char *spec)
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
	t->relid = (Oid) strtoul(oid, NULL, 10);
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
 * Does the query return a row on the source?  The shape of the checks that
 * refuse a pipeline the source cannot feed.
 */
static bool
source_exists(SluiceConn *sc, const char *sql, int nparams, const char *const *params,
			  const char *what)
{
	PGresult   *res = transport_exec(sc, sql, nparams, params, PGRES_TUPLES_OK, what);
	bool		exists = PQntuples(res) > 0;

	PQclear(res);
	return exists;
}

/*
 * Check the publication a pipeline would use: one it is given must publish
 * every table (a partitioned table through its root); a name it was not
 * given must be free, as pg_sluice will create and own it.  Returns
 * whether it exists.
 */
bool
source_check_publication(SluiceConn *sc, const char *source, const char *publication,
						 bool given, List *tables)
{
	const char *params[1] = {publication};
	bool		exists;
	ListCell   *lc;

	exists = source_exists(sc, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
						   1, params, "look up the publication");
	if (exists && !given)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("publication \"%s\" already exists on source \"%s\"", publication, source),
				 errhint("Pass publication => '%s' to use it, or drop it on the source.", publication)));
	if (!exists)
		return false;
	foreach(lc, tables)
	{
		SourceTable *t = lfirst(lc);
		const char *p3[3] = {publication, t->schema, t->name};

		/*
		 * Without publish_via_partition_root, a parent's changes arrive
		 * under its partitions' names: none would be applied.
		 */
		if (t->partitioned &&
			!source_exists(sc, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1 AND pubviaroot",
						   1, p3, "look up the publication"))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("publication \"%s\" on source \"%s\" does not publish partitioned table \"%s.%s\" through its root",
							publication, source, t->schema, t->name),
					 errdetail("Its partitions' changes would arrive under their own names, and none would be applied."),
					 errhint("On the source, run ALTER PUBLICATION %s SET (publish_via_partition_root = true).",
							 quote_identifier(publication))));
		if (!source_exists(sc, "SELECT 1 FROM pg_catalog.pg_publication_tables "
						   " WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
						   3, p3, "look up the publication's tables"))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("publication \"%s\" on source \"%s\" does not include table \"%s.%s\"",
							publication, source, t->schema, t->name),
					 errhint("On the source, run ALTER PUBLICATION %s ADD TABLE %s.%s.",
							 quote_identifier(publication), quote_identifier(t->schema),
							 quote_identifier(t->name))));
	}
	return true;
}

/*
 * Drop what a pipeline made on the source: its slot (slot, or NULL) and its
 * publication (publication, or NULL when pg_sluice does not own it).
 */
void
source_drop(SluiceConn *sc, const char *slot, const char *publication)
{
	if (slot != NULL)
		(void) source_drop_slot(sc, slot);
	if (publication != NULL)
		transport_command(sc, psprintf("DROP PUBLICATION IF EXISTS %s",
									   quote_identifier(publication)),
						  "drop the publication");
}
