/*-------------------------------------------------------------------------
 *
 * verify_internal.h
 *	  Declarations shared by the verify family: verify.c, verify_compare.c
 *	  and repair.c.
 *
 * NOTES
 *	  Why a private header.  The family shares the comparison of one table
 *	  (VerifyTable): verify_compare.c fills it (buckets, differences, the
 *	  keys for the report), repair.c re-copies the differing keys it
 *	  collects, verify.c records and returns its counts.  Its fields are
 *	  SPI's and libpq's (SPIPlanPtr, the source's connection), read and
 *	  written per differing row.  pg_sluice.h is included by every module
 *	  and stays light: only the family sees this.  Nothing outside the
 *	  family may call what is declared here; the family's entry points for
 *	  everyone else are the SQL functions sluice.verify and sluice.repair
 *	  (verify.c).
 *
 *	  Build note.  The Makefile names every header in src/ as every object's
 *	  dependency, so a change here rebuilds the family.
 *
 *	  Rejected.  Opaque handles with accessor functions: the comparison
 *	  and the repair read and write these fields per differing row, and the
 *	  three files are one feature split by concern, not three clients of an
 *	  interface.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/verify_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef VERIFY_INTERNAL_H
#define VERIFY_INTERNAL_H

#include "executor/spi.h"
#include "lib/stringinfo.h"

#include "pg_sluice.h"

/* One contract column, as each side names it. */
typedef struct VerifyColumn
{
	char	   *name;			/* datamart name */
	char	   *mart_expr;		/* quoted datamart column */
	char	   *live_expr;		/* source column, cast when widened */
	bool		is_key;
	Oid			typid;			/* datamart type (repair's inserts) */
	int32		typmod;
	bool		typed;			/* hashed by value (verify_compare.c) */
} VerifyColumn;

/* A bucket that differs: its number and the larger side's row count. */
typedef struct VerifyBucket
{
	int64		bucket;
	int64		rows;
} VerifyBucket;

/* The comparison of one table. */
typedef struct VerifyTable
{
	SluiceTable *t;
	Oid			relid;			/* datamart table */
	List	   *columns;		/* VerifyColumn * */
	bool		keyless;
	char	   *live_rel;		/* [ONLY] schema.table on the source */
	char	   *mart_rel;		/* [ONLY] schema.table here */
	bool		fast_hash;		/* both sides agree on hashtextextended */
	char	   *live_kb;		/* the key's bucket hash on the source */
	char	   *mart_kb;		/* the same here */
	char	   *live_rh;		/* the row's hash on the source */
	char	   *mart_rh;		/* the same here */
	char	   *live_inner;		/* SELECT kh, rh, kj, kb on the source */
	char	   *mart_inner;		/* the same here */
	int64		rows_live;
	int64		rows_mart;
	int64		ranges;			/* buckets compared, all levels */
	int64		differences;
	int			nkeys;			/* entries in keys */
	StringInfoData keys;		/* JSON objects, comma-separated */
	/* the pending entry (a run of equal rows of a keyless table) */
	const char *pend_kind;
	char	   *pend_rh;
	char	   *pend_key;
	int64		pend_count;
	/* repair (sluice.repair): the differing keys are re-copied */
	bool		repair;
	SluiceConn *snap;			/* the connection holding the source's
								 * snapshot, open while it compares */
	int64		version;		/* _sluice_version of the copied rows, or 0 */
	char	   *live_key_row;	/* key columns, source side */
	char	   *mart_key_row;	/* key columns, datamart side */
	char	   *live_cols;		/* contract columns, source side */
	char	   *mart_table;		/* schema.table here, without ONLY */
	char	   *hist_table;		/* its history table, or NULL */
	char	   *all_cols;		/* every column of the datamart table */
	SPIPlanPtr	insert_plan;	/* INSERT of one row from the source */
	int			nbatch;			/* differing keys waiting */
	char	  **batch_kh;		/* their key hashes */
	const char **batch_kind;
	int64		rows_deleted;
	int64		rows_inserted;
	MemoryContext cxt;			/* what lives as long as the comparison */
	MemoryContext flushcxt;		/* one repair batch, reset after it */
} VerifyTable;

#define REPAIR_BATCH 1000

/* Average rate limit on source rows read. */
typedef struct VerifyThrottle
{
	int			rate;			/* rows per second, 0: none */
	TimestampTz start;
	int64		rows;
} VerifyThrottle;

/* verify_compare.c: hashing, buckets, bisection, the leaf merge */
extern VerifyTable *verify_prepare(SluicePipeline *pipe, SluiceTable *t, SluiceConn *snap);
extern void verify_compare(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th, int max_keys);
extern void verify_throttle(VerifyThrottle *th, int64 rows);
extern void verify_set_output_settings(void);

/* repair.c: the differing keys re-copied from the source, as a version */
extern void repair_prepare(VerifyTable *vt, SluicePipeline *pipe, SluiceConn *snap);
extern void repair_flush(VerifyTable *vt);

#endif							/* VERIFY_INTERNAL_H */
