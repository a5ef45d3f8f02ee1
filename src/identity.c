/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Is a pipeline's source table still the table it copied?  A table
 *	  dropped on live, or dropped and created again under the same name,
 *	  is noticed and pauses the pipeline, instead of a datamart that keeps
 *	  the old rows while every refresh succeeds.
 *
 * NOTES
 *	  What this file owns.  sluice._pipeline_table.source_relid: the oid
 *	  the table had on live when pg_sluice copied it (create_pipeline,
 *	  add_table; a chunked copy that finds another one starts over and
 *	  records it).  NULL after an update from 0.1, learnt at the next look.
 *
 *	  Why an oid and not the name.  pgoutput names a relation by oid and by
 *	  name.  A table dropped on live leaves its publication (one FOR TABLE,
 *	  as pg_sluice creates), so nothing of it arrives again: its rows in
 *	  the datamart stay as they were and every refresh succeeds.  Created
 *	  again under the same name, it arrives under a new oid if published
 *	  (FOR ALL TABLES, or added back): its rows would land on top of the
 *	  old table's.  Both are a table the datamart no longer mirrors, and
 *	  the name alone cannot tell.
 *
 *	  Where it looks.
 *	    - identity_check, at the start of every sluice.refresh (refresh.c,
 *	      one query on the connection the refresh already holds) and every
 *	      5 s in a continuous worker (worker.c with its slot look over the
 *	      walsender; refresh.c's throttle when it polls over SQL, whose
 *	      polls are every naptime):
 *	      by schema and name in live's catalog, which needs no privilege.
 *	      A table gone pauses the pipeline; one created again pauses it
 *	      too, unless a chunked copy of it is under way (that copy starts
 *	      over, identity_chunk_start) and the new table has the columns of
 *	      the key its chunks range over (by source name and type,
 *	      identity_missing_key): without them the copy could never start
 *	      over, its chunks failed on a missing column while every refresh
 *	      succeeded over a datamart holding part of the old table.
 *	    - identity_relation, at every RELATION message of a mapped table
 *	      (relation.c): the message's oid against the recorded one.  A
 *	      change of the old table (a backlog from before the drop) while
 *	      its copy is under way is skipped: the copy reads the new table.
 *	  The pause is a drift pause (sluice._drift_event, contract_drift
 *	  event, sluice.status.paused_reason) whose hint is the way forward:
 *	  sluice.resnapshot copies the table again, in chunks, from the table
 *	  live has now, which also puts it back in pg_sluice's publication.
 *
 *	  What it never does.  Write on live beyond putting a table back in a
 *	  publication pg_sluice created (ALTER PUBLICATION, as add_table does).
 *	  Guess: a table gone with no new one keeps the pipeline paused until
 *	  the DBA chooses (create it again and resnapshot, or drop the
 *	  pipeline; its datamart tables stay).
 *
 *	  Rejected.  Matching the publication's table list (pg_publication_tables
 *	  lists the leaves of a partitioned table not published through its
 *	  root, and a publication FOR ALL TABLES takes the new table back
 *	  silently).  An event trigger on live: live needs no extension.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/identity.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "replication/logicalproto.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "pg_sluice.h"
#include "apply_internal.h"

/* Record the oid live gives a pipeline's table now. */
void
identity_record(int pipeline_id, const char *schema, const char *table, Oid relid)
{
	Oid			types[4] = {INT4OID, TEXTOID, TEXTOID, OIDOID};
	Datum		args[4];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	args[3] = ObjectIdGetDatum(relid);
	if (sluice_catalog_exec("UPDATE sluice._pipeline_table SET source_relid = $4 "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							4, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the source table's oid");
}

static char *
identity_hint(SluicePipeline *pipe, SluiceTable *t)
{
	char	   *target = quote_literal_cstr(psprintf("%s.%s", quote_identifier(t->target_schema),
													  quote_identifier(t->target_table)));

	return psprintf("If live has the table again: sluice.resnapshot('%s', %s), sluice.resume('%s'), then CALL sluice.copy_tables('%s') "
					"copy it again in chunks from what live has now. If not, create it again on live first, "
					"or drop the pipeline (its datamart tables stay).",
					pipe->name, target, pipe->name, pipe->name);
}

/* s as one element of an array literal: "...", with \ and " escaped */
static void
array_element(StringInfo buf, const char *s)
{
	appendStringInfoChar(buf, '"');
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *s);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * The first column of t's key (by its source name, of its source type)
 * that live's table relid lacks; NULL when it has them all.  A copy can
 * start over on a table created again only then: its chunks are ranges of
 * that key.
 */
static char *
identity_missing_key(SluiceConn *sc, SluiceTable *t, Oid relid)
{
	StringInfoData names;
	StringInfoData typeoids;
	const char *params[3];
	PGresult   *res;
	ListCell   *lc;
	char	   *missing = NULL;

	initStringInfo(&names);
	initStringInfo(&typeoids);
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		char		sep = names.len > 0 ? ',' : '{';

		if (!c->is_key || c->source_column == NULL)
			continue;
		appendStringInfoChar(&names, sep);
		array_element(&names, c->source_column);
		appendStringInfo(&typeoids, "%c%u", sep, c->source_type);
	}
	if (names.len == 0)
		return NULL;
	appendStringInfoChar(&names, '}');
	appendStringInfoChar(&typeoids, '}');
	params[0] = psprintf("%u", relid);
	params[1] = names.data;
	params[2] = typeoids.data;
	res = transport_exec(sc,
						 "SELECT k.n FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::oid[])) "
						 "       WITH ORDINALITY AS k(n, t, i) "
						 " WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a "
						 "                    WHERE a.attrelid = $1::pg_catalog.oid AND a.attname = k.n "
						 "                      AND a.attnum > 0 AND NOT a.attisdropped "
						 "                      AND (k.t = 0 OR a.atttypid = k.t)) "
						 " ORDER BY k.i LIMIT 1",
						 3, params, PGRES_TUPLES_OK, "look up the key of the source table");
	if (PQntuples(res) > 0)
		missing = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return missing;
}

/* The way forward when live's table was created again without t's key column col. */
static char *
identity_key_hint(SluicePipeline *pipe, SluiceTable *t, const char *col)
{
	char	   *target = quote_literal_cstr(psprintf("%s.%s", quote_identifier(t->target_schema),
													  quote_identifier(t->target_table)));

	return psprintf("Give the table on live its column \"%s\" back (its name and type), then copy it again: "
					"sluice.resnapshot('%s', %s), sluice.resume('%s'), then CALL sluice.copy_tables('%s'). "
					"Or drop the pipeline (its datamart tables stay).",
					col, pipe->name, target, pipe->name, pipe->name);
}

/*
 * Look up every table of the pipeline on live by schema and name (sc: an
 * open connection).  Returns the first one gone, or created again while no
 * chunked copy of it is under way, as the drift that pauses the pipeline
 * (*message, *hint: what to say, and the way forward); NULL when all are the tables pg_sluice copied.
 * An oid not known yet (after the update from 0.1) is recorded.
 */
SluiceDrift *
identity_check(SluicePipeline *pipe, SluiceConn *sc, char **message, char **hint)
{
	StringInfoData schemas;
	StringInfoData names;
	StringInfoData oids;
	const char *params[3];
	PGresult   *res;
	ListCell   *lc;
	SluiceDrift *d = NULL;
	char	   *missing = NULL;
	int			i;

	if (pipe->tables == NIL)
		return NULL;
	initStringInfo(&schemas);
	initStringInfo(&names);
	initStringInfo(&oids);
	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);
		char		sep = oids.len > 0 ? ',' : '{';

		appendStringInfoChar(&schemas, sep);
		array_element(&schemas, t->source_schema);
		appendStringInfoChar(&names, sep);
		array_element(&names, t->source_table);
		appendStringInfo(&oids, "%c%u", sep, t->source_relid);
	}
	appendStringInfoChar(&schemas, '}');
	appendStringInfoChar(&names, '}');
	appendStringInfoChar(&oids, '}');
	params[0] = schemas.data;
	params[1] = names.data;
	params[2] = oids.data;
	res = transport_exec(sc,
						 "SELECT u.i, c.oid FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), "
						 "                                    pg_catalog.unnest($3::oid[])) "
						 "       WITH ORDINALITY AS u(s, n, o, i) "
						 "  LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = u.s "
						 "  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = u.n "
						 "       AND c.relkind IN ('r', 'p') "
						 " WHERE c.oid IS DISTINCT FROM u.o ORDER BY u.i",
						 3, params, PGRES_TUPLES_OK, "look up the source tables");
	for (i = 0; i < PQntuples(res) && d == NULL; i++)
	{
		SluiceTable *t = list_nth(pipe->tables, atoi(PQgetvalue(res, i, 0)) - 1);
		bool		gone = PQgetisnull(res, i, 1);
		Oid			now = gone ? InvalidOid : (Oid) strtoul(PQgetvalue(res, i, 1), NULL, 10);

		if (!OidIsValid(t->source_relid))
		{
			/* not known yet: learn it (a table gone is not learnt) */
			if (!gone)
			{
				identity_record(pipe->pipeline_id, t->source_schema, t->source_table, now);
				t->source_relid = now;
			}
			continue;
		}
		if (gone)
			d = drift_new(t,
						  psprintf("Table \"%s.%s\" no longer exists on source \"%s\" (it was dropped, or renamed): "
										"the datamart table \"%s.%s\" keeps the rows it had and gets no more changes.",
										t->source_schema, t->source_table, pipe->source_name,
										t->target_schema, t->target_table),
						  NULL, NULL);
		else if (!snapshot_copy_under_way(pipe->pipeline_id, t->source_schema, t->source_table))
			d = drift_new(t,
						  psprintf("Table \"%s.%s\" on source \"%s\" was dropped and created again (oid %u, was %u): "
										"the datamart table \"%s.%s\" holds the rows of the old one.",
										t->source_schema, t->source_table, pipe->source_name, now,
										t->source_relid, t->target_schema, t->target_table),
						  NULL, NULL);
		else if ((missing = identity_missing_key(sc, t, now)) != NULL)
			/* the copy under way cannot start over on it: its chunks are ranges of the key */
			d = drift_new(t,
						  psprintf("Table \"%s.%s\" on source \"%s\" was dropped and created again (oid %u, was %u) "
								   "without column \"%s\" of the datamart table's key, as it was: its copy cannot start over, "
								   "and the datamart table \"%s.%s\" holds rows of the old one.",
								   t->source_schema, t->source_table, pipe->source_name, now,
								   t->source_relid, missing, t->target_schema, t->target_table),
						  NULL, NULL);
		if (d != NULL)
		{
			*message = psprintf("source table \"%s.%s\" is not the table pipeline \"%s\" copied",
								t->source_schema, t->source_table, pipe->name);
			*hint = psprintf("Nothing was applied and pipeline \"%s\" is paused. %s", pipe->name,
							 missing != NULL ? identity_key_hint(pipe, t, missing) : identity_hint(pipe, t));
		}
	}
	PQclear(res);
	return d;
}

/*
 * A RELATION message of table t under another oid than the one recorded:
 * while a chunked copy of it is under way, the old table's changes are
 * skipped (returns false: the relation is left unmapped); else the
 * pipeline pauses (the batch rolls back).  True: apply as usual.
 */
bool
identity_relation(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr)
{
	SluiceDrift *d;

	if (!OidIsValid(t->source_relid) || t->source_relid == lr->remoteid)
		return true;
	if (snapshot_copy_under_way(st->pipe->pipeline_id, t->source_schema, t->source_table))
		return false;
	d = drift_new(t,
				  psprintf("Changes of table \"%s.%s\" arrived under oid %u, not %u: the table was dropped and created again on source \"%s\", "
								"and the datamart table \"%s.%s\" holds the rows of the old one.",
								t->source_schema, t->source_table, lr->remoteid, t->source_relid,
								st->pipe->source_name, t->target_schema, t->target_table),
				  NULL, NULL);
	d->xid = st->begin.xid;
	d->lsn = st->begin.final_lsn;
	st->stats->pause = d;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("source table \"%s.%s\" is not the table pipeline \"%s\" copied", t->source_schema,
					t->source_table, st->pipe->name),
			 errdetail("%s", d->detail),
			 errhint("Nothing was applied and pipeline \"%s\" is paused. %s", st->pipe->name,
					 identity_hint(st->pipe, t))));
	return false;				/* keep compiler quiet */
}

/*
 * The start of a chunk of t's copy (sc: the chunk's connection to live):
 * is live's table still the one recorded?  When it was dropped and created
 * again (since the copy began, or since the pipeline copied it), the
 * table goes back into pg_sluice's publication if the drop took it out,
 * its new oid is recorded, and the caller starts the copy over
 * (IDENTITY_RESTART); a chunk running at once that got there first did
 * both (IDENTITY_RESTARTED: the caller leaves its chunk).  The recorded oid
 * is read again under a row lock only then, so chunks of one table do not
 * wait for each other otherwise.  A new table without the key the chunks
 * range over is refused, by name, before anything is recorded: the next
 * refresh or batch pauses the pipeline (identity_check).
 */
IdentityChunk
identity_chunk_start(SluicePipeline *pipe, SluiceConn *sc, SluiceTable *t)
{
	const char *params[3] = {t->source_schema, t->source_table, pipe->publication};
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];
	PGresult   *res;
	Oid			now;
	Oid			recorded;
	bool		isnull;
	bool		published;
	bool		partitioned;
	char	   *missing;

	res = transport_exec(sc,
						 "SELECT c.oid, c.relkind = 'p', EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables p "
						 "                       WHERE p.pubname = $3 AND p.schemaname = $1 AND p.tablename = $2) "
						 "  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace "
						 " WHERE ns.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
						 3, params, PGRES_TUPLES_OK, "look up the source table");
	if (PQntuples(res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.%s\" no longer exists on source \"%s\"", t->source_schema,
						t->source_table, pipe->source_name),
				 errdetail("Its copy cannot go on; the datamart table \"%s.%s\" keeps what it has.",
						   t->target_schema, t->target_table),
				 errhint("Create it again on live, then copy it again with sluice.resnapshot('%s', %s).",
						 pipe->name, quote_literal_cstr(psprintf("%s.%s", quote_identifier(t->target_schema),
																 quote_identifier(t->target_table))))));
	now = (Oid) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	partitioned = PQgetvalue(res, 0, 1)[0] == 't';
	published = PQgetvalue(res, 0, 2)[0] == 't';
	PQclear(res);
	if (now == t->source_relid)
		return IDENTITY_SAME;
	missing = OidIsValid(t->source_relid) ? identity_missing_key(sc, t, now) : NULL;
	if (missing != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" was created again on source \"%s\" without column \"%s\" of the datamart table's key",
						t->source_schema, t->source_table, pipe->source_name, missing),
				 errdetail("Its copy cannot start over: chunks are ranges of that key. The datamart table \"%s.%s\" keeps the rows it has; "
						   "the pipeline's next refresh or batch pauses it.",
						   t->target_schema, t->target_table),
				 errhint("%s", identity_key_hint(pipe, t, missing))));

	/* under the row lock: another chunk may have started the copy over */
	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(t->source_schema);
	args[2] = CStringGetTextDatum(t->source_table);
	if (sluice_catalog_exec("SELECT source_relid FROM sluice._pipeline_table "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 FOR UPDATE",
							3, types, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the source table's oid");
	recorded = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		recorded = InvalidOid;
	if (recorded == now)
	{
		t->source_relid = now;
		return IDENTITY_RESTARTED;
	}

	if (!published && pipe->publication_owned)
		transport_command(sc, psprintf("ALTER PUBLICATION %s ADD TABLE %s%s.%s",
									   quote_identifier(pipe->publication), partitioned ? "" : "ONLY ",
									   quote_identifier(t->source_schema), quote_identifier(t->source_table)),
						  "add the table to the publication");
	else if (!published)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s.%s\" is not in publication \"%s\" on source \"%s\"",
						t->source_schema, t->source_table, pipe->publication, pipe->source_name),
				 errdetail("It was dropped and created again; the pipeline uses a publication it did not create."),
				 errhint("On the source: ALTER PUBLICATION %s ADD TABLE %s.%s; then copy again.",
						 quote_identifier(pipe->publication), quote_identifier(t->source_schema),
						 quote_identifier(t->source_table))));
	identity_record(pipe->pipeline_id, t->source_schema, t->source_table, now);
	t->source_relid = now;
	if (!OidIsValid(recorded))
		return IDENTITY_SAME;	/* learnt (after the update from 0.1) */
	ereport(NOTICE,
			(errmsg("table \"%s.%s\" was created again on source \"%s\": its copy starts over",
					t->source_schema, t->source_table, pipe->source_name)));
	return IDENTITY_RESTART;
}
