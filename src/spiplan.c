/*-------------------------------------------------------------------------
 *
 * spiplan.c
 *	  Kept plans for pg_sluice's own catalog statements.
 *
 * NOTES
 *	  What this file owns.  sluice_spi_kept runs one of pg_sluice's fixed
 *	  catalog statements (the pipeline's row, its tables, contracts and
 *	  expectations, the run row, the slot state...) through a plan prepared
 *	  once per process and kept (SPI_prepare + SPI_keepplan), where
 *	  SPI_execute_with_args parsed, analyzed and planned it again at every
 *	  call.  A continuous worker runs a dozen of them per batch; at a few
 *	  rows per batch that planning was most of the batch's fixed cost.
 *
 *	  Keys and validity.  A plan is found by its statement's text and
 *	  parameter types, never by the caller's pointer (a psprintf'd text can
 *	  reuse an address).  It is a plan, not a result: nothing read through it
 *	  is kept, so a pool worker serving several pipelines shares the plans
 *	  and reads each pipeline's rows afresh (the pipeline id is a parameter).
 *	  PostgreSQL's plan cache keeps a kept plan valid: a change to a table,
 *	  view or function it uses (ALTER EXTENSION UPDATE, DROP and CREATE
 *	  EXTENSION) or to search_path makes it re-analyze and re-plan the text
 *	  at its next use.  Permissions are checked when a plan runs, as the
 *	  user current then (the catalog owner, security.c).
 *
 *	  Bounds.  At most SPIPLAN_MAX plans per process; past that a statement
 *	  runs unkept, as before.  Only texts fixed in the source come here (the
 *	  callers are catalog statements with parameters), so the bound is never
 *	  reached in practice; it keeps memory bounded if one day a caller passes
 *	  a built text.
 *
 *	  What it never does.  Keep a statement that is not pg_sluice's own
 *	  (expectations, models, user SQL), or any result.
 *
 *	  Rejected.  Preparing the statements at load time: the extension's
 *	  tables may not exist yet (CREATE EXTENSION, upgrades), and most
 *	  processes never run most of them.  A hash table: a linear scan over a
 *	  few dozen entries that compares a 32-bit hash first costs microseconds
 *	  against the milliseconds of one planning.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/spiplan.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/memutils.h"

#include "pg_sluice.h"

#define SPIPLAN_MAX 128

typedef struct KeptPlan
{
	uint32		hash;			/* of the text */
	int			nargs;
	Oid		   *types;
	char	   *sql;
	SPIPlanPtr	plan;
} KeptPlan;

static KeptPlan kept[SPIPLAN_MAX];
static int	nkept = 0;
static MemoryContext kept_cxt = NULL;

static SPIPlanPtr
find_or_prepare(const char *sql, int nargs, Oid *types)
{
	uint32		h = hash_bytes((const unsigned char *) sql, strlen(sql));
	KeptPlan   *k;
	SPIPlanPtr	plan;
	int			i;

	for (i = 0; i < nkept; i++)
	{
		k = &kept[i];
		if (k->hash == h && k->nargs == nargs &&
			(nargs == 0 || memcmp(k->types, types, nargs * sizeof(Oid)) == 0) &&
			strcmp(k->sql, sql) == 0)
			return k->plan;
	}
	if (nkept >= SPIPLAN_MAX)
		return NULL;

	plan = SPI_prepare(sql, nargs, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed (%s) for: %s", SPI_result_code_string(SPI_result), sql);
	if (kept_cxt == NULL)
		kept_cxt = AllocSetContextCreate(TopMemoryContext, "pg_sluice kept plans",
										 ALLOCSET_SMALL_SIZES);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed for: %s", sql);
	k = &kept[nkept];
	k->hash = h;
	k->nargs = nargs;
	k->types = nargs > 0 ? MemoryContextAlloc(kept_cxt, nargs * sizeof(Oid)) : NULL;
	if (nargs > 0)
		memcpy(k->types, types, nargs * sizeof(Oid));
	k->sql = MemoryContextStrdup(kept_cxt, sql);
	k->plan = plan;
	nkept++;
	return plan;
}

/*
 * SPI_execute_with_args of a fixed statement of ours, through a kept plan
 * (as SPI_execute_with_args: the caller is connected to SPI; returns its
 * result code).
 */
int
sluice_spi_kept(const char *sql, int nargs, Oid *types, Datum *args,
				const char *nulls, bool read_only, long count)
{
	SPIPlanPtr	plan = find_or_prepare(sql, nargs, types);

	if (plan == NULL)
		return SPI_execute_with_args(sql, nargs, types, args, nulls, read_only, count);
	return SPI_execute_plan(plan, args, nulls, read_only, count);
}
