/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  Is a pipeline's source table still the table it copied?  A table
 *	  dropped on live, or dropped and created again under the same name,
 *	  is noticed and pauses the pipeline, instead of a datamart that keeps
 *	  the old rows while every refresh succeeds.  A table renamed on live
 *	  (RENAME TO, SET SCHEMA) is the same table under another name:
 *	  followed, or accepted with sluice.accept_rename under freeze.
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
 *	  Renames.  A table renamed on live keeps its oid, and pgoutput sends
 *	  each change under the name the table had when it was made: a
 *	  backlog holds both names.  relation.c finds the table by oid first,
 *	  so both land in the same datamart table.  identity_check finds the
 *	  recorded oid under another name: under evolve and ignore the new
 *	  name is recorded (identity_follow_rename: the catalog's keys follow,
 *	  ON UPDATE CASCADE; the old name joins prior_source_names; a drift
 *	  event 'renamed'); under freeze the pipeline pauses, and
 *	  sluice.accept_rename records the name live gives the oid then.  In a
 *	  continuous worker a change can arrive under the new name before the
 *	  next look: identity_relation applies it under evolve and ignore, and
 *	  pauses under freeze (the name it saw, source_name_seen, is accepted
 *	  too: a name between two renames).  A name the recorded one had
 *	  before applies under every policy, as does any name in a batch
 *	  whose look at live found the recorded name (an older one: the batch
 *	  ends before the look).
 *
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
#include "nodes/value.h"
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

/* schema.table with both quoted as identifiers: how prior_source_names holds a name */
char *
identity_qualified(const char *schema, const char *table)
{
	return psprintf("%s.%s", quote_identifier(schema), quote_identifier(table));
}

/* The datamart table of t, quoted, as a literal for a hint. */
static char *
identity_target_literal(SluiceTable *t)
{
	return quote_literal_cstr(psprintf("%s.%s", quote_identifier(t->target_schema),
									   quote_identifier(t->target_table)));
}

/* The way forward from a rename paused under freeze. */
static char *
identity_rename_hint(SluicePipeline *pipe, SluiceTable *t)
{
	return psprintf("Nothing was applied and pipeline \"%s\" is paused. Call sluice.accept_rename('%s') to record "
					"the new name (changes sent under the old one still apply), then sluice.resume('%s'). "
					"To follow renames by themselves, sluice.set_drift_policy(%s, 'evolve') or 'ignore'.",
					pipe->name, pipe->name, pipe->name, identity_target_literal(t));
}

/*
 * Record that live renamed t (ALTER TABLE ... RENAME TO, SET SCHEMA): its
 * new name becomes the key of the table's catalog rows (contract,
 * expectations, published contracts, chunked copy: ON UPDATE CASCADE), the
 * old one, and a name a paused stream saw it under, join
 * prior_source_names so that the backlog's changes sent under them still
 * apply, and a
 * drift event 'renamed' says what happened (why: detail).  t follows in
 * memory.  In the caller's transaction, as the extension owner.
 */
static void
identity_follow_rename(SluicePipeline *pipe, SluiceTable *t, const char *schema,
					   const char *table, const char *detail)
{
	Oid			types[7] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[7];
	char	   *oldq = identity_qualified(t->source_schema, t->source_table);
	char	   *newq = identity_qualified(schema, table);
	SluiceDrift *d;

	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(t->source_schema);
	args[2] = CStringGetTextDatum(t->source_table);
	args[3] = CStringGetTextDatum(schema);
	args[4] = CStringGetTextDatum(table);
	args[5] = CStringGetTextDatum(oldq);
	args[6] = CStringGetTextDatum(newq);
	if (sluice_catalog_exec("UPDATE sluice._pipeline_table SET source_schema = $4, source_table = $5, "
							"       prior_source_names = (SELECT pg_catalog.array_agg(DISTINCT n) "
							"                               FROM pg_catalog.unnest(prior_source_names OPERATOR(pg_catalog.||) $6 "
							"                                                      OPERATOR(pg_catalog.||) source_name_seen) n "
							"                              WHERE n OPERATOR(pg_catalog.<>) $7), "
							"       source_name_seen = NULL "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							7, types, args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not record the new name of the source table");
	t->prior_names = lappend(t->prior_names, makeString(oldq));
	/* a name a paused stream saw (one between two renames) is a prior one too */
	if (t->name_seen != NULL && strcmp(t->name_seen, newq) != 0)
		t->prior_names = lappend(t->prior_names, makeString(t->name_seen));
	t->source_schema = pstrdup(schema);
	t->source_table = pstrdup(table);
	t->name_seen = NULL;
	t->name_confirmed = true;
	d = drift_new(t, detail, NULL, NULL);
	contract_record_drift(pipe, d, "renamed", psprintf("%s.%s", t->target_schema, t->target_table));
}

/*
 * Look up every table of the pipeline on live, by the oid recorded and by
 * schema and name (sc: an open connection).  A table live renamed (the
 * oid under another name) is followed under evolve and ignore
 * (identity_follow_rename) and is a drift under freeze.  Returns the
 * first drift that pauses the pipeline: a rename under freeze, a table
 * gone, or created again while no chunked copy of it is under way
 * (*message, *hint: what to say, and the way forward); NULL when all are
 * the tables pg_sluice copied.  An oid not known yet (after the update
 * from 0.1) is recorded.
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
		t->name_confirmed = true;	/* unless listed below */
	}
	appendStringInfoChar(&schemas, '}');
	appendStringInfoChar(&names, '}');
	appendStringInfoChar(&oids, '}');
	params[0] = schemas.data;
	params[1] = names.data;
	params[2] = oids.data;
	res = transport_exec(sc,
						 "SELECT u.i, c.oid, rn.nspname, r.relname "
						 "  FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), "
						 "                  pg_catalog.unnest($3::oid[])) "
						 "       WITH ORDINALITY AS u(s, n, o, i) "
						 "  LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = u.s "
						 "  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = u.n "
						 "       AND c.relkind IN ('r', 'p') "
						 "  LEFT JOIN pg_catalog.pg_class r ON r.oid = u.o AND u.o <> 0 AND r.relkind IN ('r', 'p') "
						 "  LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace "
						 " WHERE c.oid IS DISTINCT FROM u.o ORDER BY u.i",
						 3, params, PGRES_TUPLES_OK, "look up the source tables");
	for (i = 0; i < PQntuples(res) && d == NULL; i++)
	{
		SluiceTable *t = list_nth(pipe->tables, atoi(PQgetvalue(res, i, 0)) - 1);
		bool		gone = PQgetisnull(res, i, 1);
		Oid			now = gone ? InvalidOid : (Oid) strtoul(PQgetvalue(res, i, 1), NULL, 10);
		bool		renamed = !PQgetisnull(res, i, 3);

		t->name_confirmed = false;
		if (!OidIsValid(t->source_relid))
		{
			/* not known yet: learn it (a table gone is not learnt) */
			if (!gone)
			{
				identity_record(pipe->pipeline_id, t->source_schema, t->source_table, now);
				t->source_relid = now;
				t->name_confirmed = true;
			}
			continue;
		}
		if (renamed)
		{
			/* the table copied is on live under another name: renamed */
			const char *nsp = PQgetvalue(res, i, 2);
			const char *rel = PQgetvalue(res, i, 3);
			char	   *other = gone ? "" :
				psprintf(" Another table (oid %u) now has the old name; it is not part of the pipeline.", now);

			if (strcmp(t->drift_policy, "freeze") != 0)
			{
				identity_follow_rename(pipe, t, nsp, rel,
									   psprintf("Table \"%s.%s\" (oid %u) was renamed to \"%s.%s\" on source \"%s\"; "
												"it goes on feeding the datamart table \"%s.%s\" (policy %s).%s",
												t->source_schema, t->source_table, t->source_relid, nsp, rel,
												pipe->source_name, t->target_schema, t->target_table,
												t->drift_policy, other));
				continue;
			}
			d = drift_new(t,
						  psprintf("Table \"%s.%s\" (oid %u) was renamed to \"%s.%s\" on source \"%s\"; "
								   "policy freeze keeps the name the contract records. Its changes wait on live, "
								   "nothing is lost.%s",
								   t->source_schema, t->source_table, t->source_relid, nsp, rel,
								   pipe->source_name, other),
						  NULL, NULL);
			d->name_seen = MemoryContextStrdup(TopMemoryContext, identity_qualified(nsp, rel));
			*message = psprintf("source table \"%s.%s\" of pipeline \"%s\" was renamed to \"%s.%s\"",
								t->source_schema, t->source_table, pipe->name, nsp, rel);
			*hint = identity_rename_hint(pipe, t);
			break;
		}
		if (gone)
			d = drift_new(t,
						  psprintf("Table \"%s.%s\" no longer exists on source \"%s\" (it was dropped): "
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
 * A RELATION message of table t (found by its oid, or by its name): under
 * another oid than the one recorded, while a chunked copy of it is under
 * way, the old table's changes are skipped (returns false: the relation is
 * left unmapped); else the pipeline pauses (the batch rolls back).  Under
 * the recorded oid but another name: live renamed it.  A name it had
 * before (prior_source_names), any name under evolve and ignore (the next
 * look at live records the new one, identity_check), or any name in a
 * batch whose look at live found the recorded one (the batch ends before
 * that look, so the name is an older one) applies; under freeze the
 * pipeline pauses until sluice.accept_rename.  True: apply as usual.
 */
bool
identity_relation(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr)
{
	SluiceDrift *d;

	if (OidIsValid(t->source_relid) && t->source_relid == lr->remoteid)
	{
		char	   *q;

		if (strcmp(t->source_schema, lr->nspname) == 0 && strcmp(t->source_table, lr->relname) == 0)
			return true;
		q = identity_qualified(lr->nspname, lr->relname);
		if (list_member(t->prior_names, makeString(q)) || t->name_confirmed ||
			strcmp(t->drift_policy, "freeze") != 0)
			return true;
		d = drift_new(t,
					  psprintf("Changes of table \"%s.%s\" (oid %u) arrived under the name \"%s.%s\": the table was renamed "
							   "on source \"%s\", and policy freeze keeps the name the contract records. "
							   "Nothing is lost: the changes wait on live.",
							   t->source_schema, t->source_table, t->source_relid, lr->nspname, lr->relname,
							   st->pipe->source_name),
					  NULL, NULL);
		d->name_seen = MemoryContextStrdup(TopMemoryContext, q);
		d->xid = st->begin.xid;
		d->lsn = st->begin.final_lsn;
		st->stats->pause = d;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("source table \"%s.%s\" of pipeline \"%s\" was renamed to \"%s.%s\"",
						t->source_schema, t->source_table, st->pipe->name, lr->nspname, lr->relname),
				 errdetail("%s", d->detail),
				 errhint("%s", identity_rename_hint(st->pipe, t))));
	}
	if (!OidIsValid(t->source_relid))
		return true;
	if (snapshot_copy_under_way(st->pipe->pipeline_id, t->source_schema, t->source_table))
		return false;
	d = drift_new(t,
				  psprintf("Changes of table \"%s.%s\" arrived under oid %u, not %u: the table was dropped and created again on source \"%s\" "
								"(or renamed, and another one created under its name: then sluice.resume looks again and finds it), "
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
 * sluice.accept_rename: record, for every table of the pipeline live
 * renamed, the name live gives it now (looked up by the recorded oid over
 * a connection of its own), and keep a name a paused stream saw it under
 * (source_name_seen: a rename between two others, say) with its prior
 * names.  Returns how many tables it recorded a name for; none is an
 * error that says so.  The caller checked it may operate the pipeline and
 * holds its row lock.
 */
int
identity_accept_rename(SluicePipeline *pipe)
{
	StringInfoData oids;
	const char *params[1];
	SluiceConn *sc;
	PGresult   *res;
	ListCell   *lc;
	int			n = 0;
	int			i;

	initStringInfo(&oids);
	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);

		appendStringInfo(&oids, "%c%u", oids.len > 0 ? ',' : '{', t->source_relid);
	}
	if (oids.len == 0)
		appendStringInfoChar(&oids, '{');
	appendStringInfoChar(&oids, '}');
	params[0] = oids.data;
	sc = transport_connect(pipe->source_name, pipe->conninfo, false);
	res = transport_exec(sc,
						 "SELECT u.i, n.nspname, c.relname "
						 "  FROM pg_catalog.unnest($1::pg_catalog.oid[]) WITH ORDINALITY AS u(o, i) "
						 "  JOIN pg_catalog.pg_class c ON c.oid = u.o AND u.o <> 0 AND c.relkind IN ('r', 'p') "
						 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
						 " ORDER BY u.i",
						 1, params, PGRES_TUPLES_OK, "look up the source tables by oid");
	for (i = 0; i < PQntuples(res); i++)
	{
		SluiceTable *t = list_nth(pipe->tables, atoi(PQgetvalue(res, i, 0)) - 1);
		const char *nsp = PQgetvalue(res, i, 1);
		const char *rel = PQgetvalue(res, i, 2);

		if (strcmp(nsp, t->source_schema) == 0 && strcmp(rel, t->source_table) == 0)
			continue;
		identity_follow_rename(pipe, t, nsp, rel,
							   psprintf("Table \"%s.%s\" (oid %u) was renamed to \"%s.%s\" on source \"%s\"; "
										"sluice.accept_rename recorded the new name, and it goes on feeding the datamart table \"%s.%s\".",
										t->source_schema, t->source_table, t->source_relid, nsp, rel,
										pipe->source_name, t->target_schema, t->target_table));
		n++;
	}
	PQclear(res);
	transport_close(sc);

	/* a name a paused stream saw, that live no longer gives the table */
	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);
		Oid			types[4] = {INT4OID, TEXTOID, TEXTOID, TEXTOID};
		Datum		args[4];

		if (t->name_seen == NULL)
			continue;
		args[0] = Int32GetDatum(pipe->pipeline_id);
		args[1] = CStringGetTextDatum(t->source_schema);
		args[2] = CStringGetTextDatum(t->source_table);
		args[3] = CStringGetTextDatum(t->name_seen);
		if (sluice_catalog_exec("UPDATE sluice._pipeline_table SET source_name_seen = NULL, "
								"       prior_source_names = pg_catalog.array_remove(prior_source_names, $4) "
								"                            OPERATOR(pg_catalog.||) $4 "
								" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
								4, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the name the source table was seen under");
		t->prior_names = lappend(t->prior_names, makeString(t->name_seen));
		t->name_seen = NULL;
		n++;
	}
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no source table of pipeline \"%s\" was renamed", pipe->name),
				 errdetail("Every table of the pipeline that still exists on source \"%s\" has the name its contract records.",
						   pipe->source_name),
				 errhint("sluice.status.paused_reason says why the pipeline is paused.")));
	return n;
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
	if (PQntuples(res) == 0 && OidIsValid(t->source_relid))
	{
		/* renamed on live: the same table, once the pipeline records the name */
		char		oidbuf[16];
		const char *oparams[1] = {oidbuf};
		PGresult   *renamed;

		snprintf(oidbuf, sizeof(oidbuf), "%u", t->source_relid);
		renamed = transport_exec(sc,
								 "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
								 "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
								 " WHERE c.oid = $1::pg_catalog.oid AND c.relkind IN ('r', 'p')",
								 1, oparams, PGRES_TUPLES_OK, "look up the source table by oid");
		if (PQntuples(renamed) > 0)
		{
			char	   *nsp = pstrdup(PQgetvalue(renamed, 0, 0));
			char	   *rel = pstrdup(PQgetvalue(renamed, 0, 1));

			PQclear(renamed);
			PQclear(res);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table \"%s.%s\" was renamed to \"%s.%s\" on source \"%s\"", t->source_schema,
							t->source_table, nsp, rel, pipe->source_name),
					 errdetail("Its copy goes on once pipeline \"%s\" records the new name; the datamart table \"%s.%s\" keeps what it has.",
							   pipe->name, t->target_schema, t->target_table),
					 errhint("Under policy evolve or ignore the pipeline's next refresh or batch records it; under freeze it pauses, "
							 "and sluice.accept_rename('%s') then sluice.resume('%s') record it.",
							 pipe->name, pipe->name)));
		}
		PQclear(renamed);
	}
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
