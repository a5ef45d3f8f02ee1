/*-------------------------------------------------------------------------
 *
 * security.c
 *	  Who pg_sluice acts as: the pipeline's owner for everything that
 *	  touches its tables, the extension's owner for secrets.
 *
 * NOTES
 *	  Three roles meet in a refresh.  The *caller* (a person, pg_cron or a
 *	  worker started by someone) asks for it; the pipeline's *owner* (the
 *	  role that created it) owns its datamart tables and declared its
 *	  expectations; the *extension owner* owns the private catalog,
 *	  including the connection strings of the sources.
 *
 *	  - Reading a pipeline's definition with its secret is done as the
 *	    extension owner (catalog_pipeline), after which the caller must
 *	    prove it may operate the pipeline: superuser, or the privileges of
 *	    the owner role (GRANT owner TO operator), checked here.
 *	  - Everything that can run code a user wrote (row expectations, set
 *	    expectations, triggers and foreign keys on the datamart tables,
 *	    index expressions, domain checks, DDL of schema evolution) runs as
 *	    the pipeline owner under SECURITY_RESTRICTED_OPERATION, the way
 *	    REFRESH MATERIALIZED VIEW runs a view's query as its owner: a role
 *	    that can create a trigger or a function never gets a superuser's
 *	    refresh to run it with the superuser's rights.
 *	  - search_path is fixed to pg_catalog, pg_temp by every SQL entry point
 *	    (SET clauses in the extension script) and by every worker at start,
 *	    and expectations are stored as bound trees (expect.c), so no name is
 *	    looked up again in a search_path someone else controls.
 *
 *	  Rejected: SECURITY DEFINER wrappers around the C entry points (the
 *	  caller's identity would be lost, so the per-pipeline check could not
 *	  be made; and everything, triggers included, would run as the
 *	  extension owner); running everything as the caller (an operator
 *	  would need to read the sources' passwords, and a superuser's pg_cron
 *	  job would run the owner's triggers as superuser).
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/security.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "pg_sluice.h"

/*
 * The role that owns the private catalog: the owner of sluice._source (the
 * extension's owner, who ran CREATE EXTENSION).
 */
Oid
sluice_catalog_owner(void)
{
	Oid			nsp = get_namespace_oid("sluice", false);
	Oid			rel = get_relname_relid("_source", nsp);
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(rel))
		elog(ERROR, "pg_sluice's catalog table sluice._source is missing");
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", rel);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Act as the extension owner until sluice_restore_user: for reading the
 * private catalog (secrets included).  Nothing a user wrote may run in
 * between.
 */
void
sluice_become_catalog(SluiceUser *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	SetUserIdAndSecContext(sluice_catalog_owner(),
						   save->sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * Act as the pipeline's owner, in a security-restricted operation, until
 * sluice_restore_user.  An error on the way restores the user through the
 * (sub)transaction's abort.
 */
void
sluice_become_owner(SluicePipeline *pipe, SluiceUser *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	if (!OidIsValid(pipe->owner) || !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(pipe->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of pipeline \"%s\" no longer exists", pipe->name),
				 errhint("A superuser can give the pipeline to another role with sluice.alter_pipeline_owner('%s', role).",
						 pipe->name)));
	SetUserIdAndSecContext(pipe->owner,
						   save->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/*
 * A fixed statement on the private catalog (a kept plan, spiplan.c), as the
 * extension owner:
 * every write of pg_sluice's own bookkeeping (runs, results, quarantine,
 * drift events, pipeline state) goes through here, so operators and owners
 * need no write privilege on the catalog and cannot forge its rows.  The
 * caller checked that the current user may operate the pipeline.
 */
int
sluice_catalog_exec(const char *sql, int nargs, Oid *types, Datum *args,
					const char *nulls, bool read_only, long count)
{
	SluiceUser	save;
	int			rc;

	sluice_become_catalog(&save);
	rc = sluice_spi_kept(sql, nargs, types, args, nulls, read_only, count);
	sluice_restore_user(&save);
	return rc;
}

void
sluice_restore_user(SluiceUser *save)
{
	SetUserIdAndSecContext(save->userid, save->sec_context);
}

/*
 * The current user must be allowed to operate the pipeline: superuser, or
 * holding the privileges of its owner role.
 */
void
sluice_check_operator(SluicePipeline *pipe, const char *action)
{
	Oid			me = GetUserId();
	char	   *owner;

	if (superuser_arg(me) || has_privs_of_role(me, pipe->owner))
		return;
	owner = GetUserNameFromId(pipe->owner, true);
	if (owner == NULL)
		owner = psprintf("%u", pipe->owner);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s pipeline \"%s\"", action, pipe->name),
			 errdetail("Only superusers and roles with the privileges of role \"%s\", which owns the pipeline, may %s it.",
					   owner, action),
			 errhint("A superuser or the owner can grant it: GRANT %s TO %s;",
					 quote_identifier(owner), quote_identifier(GetUserNameFromId(me, false)))));
}

/*
 * Workers and other server-side sessions of ours look names up only in
 * pg_catalog (and pg_temp, which is never searched for functions or
 * operators).
 */
void
sluice_fix_search_path(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
}

PG_FUNCTION_INFO_V1(sluice_exec_as_owner);

/*
 * sluice._exec_as_owner(pipeline_id, statement, param jsonb): run one
 * statement of pg_sluice's own SQL functions (release_quarantined,
 * keep_history, tag, untag, purge_history: built there with %I and %L from
 * the catalog, never stored) as the pipeline's owner, in a
 * security-restricted operation, as a refresh writes.  So a superuser who
 * releases a row or keeps history never runs a trigger the owner planted
 * with the superuser's rights, and the tables, schemas and functions it
 * creates belong to the owner.  The caller must be allowed to operate the
 * pipeline.  $1 is param.  Returns the first column of the first row the
 * statement returns, as text, or NULL.
 */
Datum
sluice_exec_as_owner(PG_FUNCTION_ARGS)
{
	int			pipeline_id = PG_GETARG_INT32(0);
	char	   *stmt = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			types[1] = {JSONBOID};
	Datum		args[1];
	char		nulls[1];
	SluicePipeline *pipe;
	SluiceUser	save;
	char	   *result = NULL;
	MemoryContext outer = CurrentMemoryContext;
	int			rc;

	args[0] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[0] = PG_ARGISNULL(2) ? 'n' : ' ';
	SPI_connect();
	pipe = catalog_pipeline_operated(pipeline_id, "change");
	sluice_become_owner(pipe, &save);
	rc = SPI_execute_with_args(stmt, 1, types, args, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "could not run a statement as the pipeline's owner: %s", SPI_result_code_string(rc));
	if (SPI_tuptable != NULL && SPI_processed > 0)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (v != NULL)
			result = MemoryContextStrdup(outer, v);
	}
	sluice_restore_user(&save);
	SPI_finish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}
