/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  Chunked copies of a table while its pipeline keeps streaming
 *	  (sluice.resnapshot, sluice.add_table, sluice.copy_chunk, and the big
 *	  tables of a new pipeline: pg_sluice.initial_copy), and the filter
 *	  that keeps the stream off the rows no chunk has copied yet.
 *
 * NOTES
 *	  What this file owns.  A table being copied has a row in sluice._copy:
 *	  its frontier, the last key of the ranges done (the source's text of
 *	  each key column; NULL before the first), and rows in
 *	  sluice._copy_range for the ranges above it that are claimed, in key
 *	  order.  Keys at or below the frontier are in the datamart and follow
 *	  the stream as usual; keys of a copied range follow it only for the
 *	  source transactions the range's snapshot did not see (the chunk holds
 *	  the effect of the others); keys of a range claimed but not copied yet,
 *	  or of no range, are skipped, as their chunk reads their latest state
 *	  (snapshot_keep, called by apply.c for every change of such a table).
 *
 *	  One chunk, after DBLog (Netflix) and Debezium's incremental snapshots:
 *	    1. its claim: the chunk_rows-th key above the last claimed range
 *	       (or the frontier), found on the source, recorded as a range;
 *	       a copy worker commits the claim at once, so that the others
 *	       claim the ranges after it while it copies (claims of one table
 *	       wait for each other on its _copy row);
 *	    2. on the source, in one REPEATABLE READ transaction: the snapshot
 *	       (pg_current_snapshot) and the range's rows, COPY'd straight into
 *	       the datamart table after the range's old rows are deleted (a
 *	       resnapshot);
 *	    3. a watermark written into live's WAL after that transaction
 *	       (pg_logical_emit_message, committed and flushed): every
 *	       transaction the snapshot saw is before it;
 *	    4. the range recorded copied, with the snapshot and the watermark,
 *	       in the local transaction of its rows.
 *	  Once the stream has passed a range's watermark (the replication
 *	  origin's position, or where a streaming worker is consistent) no
 *	  change it brings can be one the snapshot saw: the ranges at the start
 *	  retire into the frontier, and the copy is finished when the last one
 *	  (to the end of the keys) does.  sluice.copy_chunk then refreshes a
 *	  pipeline refreshed on demand up to the watermark, in the same
 *	  transaction; copy workers (copyworker.c) leave that to the last of
 *	  them, and a streaming pipeline's worker passes the watermarks itself.
 *	  A crash or a cancel of either server rolls the chunk back whole: its
 *	  range stays claimed and the next copier takes it first, so at most one
 *	  chunk per copier is copied twice.  The memory a chunk needs does not
 *	  grow with its size: its rows stream from COPY TO into COPY FROM.
 *
 *	  The copy lock.  A batch skips a change to a key of no range; the chunk
 *	  copying that key must see that change's transaction.  It does if its
 *	  snapshot is taken after the change was decoded, but a chunk copied
 *	  while a batch runs could take its snapshot before a transaction the
 *	  batch later skips.  So every chunk holds a lock of its table shared
 *	  from before its snapshot to its commit, and every batch that applies
 *	  the table's changes holds it exclusive from the table's first change
 *	  to its commit (snapshot_filter_open; an advisory lock tag, see
 *	  copy_lock): a batch waits for the chunks in flight, a chunk for the
 *	  batch.  The filter reads the ranges with a statement snapshot taken
 *	  after the lock (never the batch's older one).

 *	  Why the snapshot's transaction ids and not a low watermark.  DBLog
 *	  brackets the chunk's SELECT with a low and a high watermark and drops
 *	  from the chunk the keys changed between them.  In PostgreSQL a
 *	  transaction can write its commit record before the low watermark and
 *	  still be invisible to a snapshot taken after it (the commit record is
 *	  written before the transaction leaves the proc array): its change
 *	  would arrive before the low watermark, be applied, then be
 *	  overwritten by the chunk's older row.  Asking the snapshot itself
 *	  (xmin, xmax, xip) whether it saw the transaction is exact; the high
 *	  watermark remains, as the end of the refresh.  The same lag bites
 *	  across chunks: a transaction before the previous watermark (applied,
 *	  or skipped as above the frontier) must be visible to the next chunk's
 *	  snapshot; wait_for_committing waits, before the snapshot, for every
 *	  transaction committed but waiting for a synchronous standby, the
 *	  long window.  What remains is a transaction between its commit record
 *	  and leaving the proc array at that instant, without such a wait:
 *	  microseconds, in its own backend.
 *
 *	  Keys are compared in the same order on both sides: the source sorts
 *	  and bounds with the key columns' types' default btree order, COLLATE
 *	  "C" for collatable ones (byte order), and this file compares with the
 *	  same functions and the C collation.  A collatable key needs the same
 *	  encoding on both servers.  The source sorts text keys in byte order
 *	  with a sort rather than the key's index when its collation is not C.
 *
 *	  The initial copy in chunks.  create_pipeline (pipeline.c) asks
 *	  snapshot_initial_plan which tables to leave empty: with
 *	  pg_sluice.initial_copy = auto those with a key that the source
 *	  estimates above pg_sluice.initial_copy_chunked_above rows, with chunked
 *	  every one (a keyless one refused before anything is created).  Such a
 *	  table is created without its key (the lazy key, below), gets a sluice._copy row of kind
 *	  initial_copy and a frontier of NULL, exactly as after add_table: the
 *	  slot's consistent point is where its stream starts, every change to it
 *	  is skipped until a chunk copies its key.  create_pipeline, a function,
 *	  runs in one transaction and cannot commit chunk by chunk: its commit
 *	  starts the copy workers (pg_sluice.copy_workers; with none, its NOTICE
 *	  says to CALL sluice.copy_tables, which commits per chunk and resumes).  A
 *	  setting and not an argument of create_pipeline: a new argument changes
 *	  the function's signature, and the update would drop it with every
 *	  GRANT EXECUTE roles hold on it.  auto by default (since the lazy
 *	  key): a table of 20,000,000 rows or more is copied in chunks about as
 *	  fast as in the snapshot (2.09x and 2.06x native copy_data at
 *	  10,000,000, medians of three) and resumes after a crash; smaller ones
 *	  keep the snapshot, one transaction with no watermarks and no
 *	  per-chunk cost.
 *
 *	  Where a chunk's time goes (10,000,000 rows in 100 chunks, timed in
 *	  place, before the lazy key): 80% its COPY, whose rows went one by one
 *	  into the key's btree (one WAL record each); about 20 ms connecting
 *	  and describing the table, 30 ms finding the chunk's end, 5 ms the
 *	  watermark, 10 ms the refresh, 10 ms the commit.  Bigger chunks barely
 *	  helped then.  With the lazy key (2,000,000 rows in 100 chunks, 1 copy
 *	  worker, live's log_min_duration_statement, load average 5.6): about
 *	  43 ms a chunk more than the one-snapshot copy's share, 20 ms of it on
 *	  live (find the chunk's end 5 ms, watermark 4 ms, describe 8 ms); a
 *	  copy worker keeps its connection from chunk to chunk (step_connect).
 *	  Now bigger chunks do help (README, Performance: 500,000-row chunks),
 *	  at the price of more work repeated after a crash (one chunk per
 *	  copier) and longer waits of a batch for the chunks in flight.
 *
 *	  The lazy key.  A table the copy starts EMPTY (create_pipeline's
 *	  chunked initial copy, add_table; not an adopted table, not a
 *	  resnapshot) is created without its primary key, and sluice._copy
 *	  .deferred_key names its columns (data, never SQL text).  The key is
 *	  needed only to apply a stream change by key, and the filter applies
 *	  a change only to a key at or below the frontier or in a copied range;
 *	  until one exists, every change is skipped and the table is a heap
 *	  each chunk fills with a plain COPY (multi-insert, as fast per row as
 *	  the one-snapshot copy).  The key is built (a unique index first,
 *	  which readers may read through, then the primary key using it:
 *	  pipeline_build_key_online), as the pipeline's owner, in the
 *	  transaction of whoever needs it, which then clears deferred_key:
 *	    - a batch about to open the table (snapshot_key_for_apply, called
 *	      by relation.c before the table is opened, so no relcache entry,
 *	      slot or index list of it is held yet), when a frontier, a copied
 *	      range or the copy's end exists.  It takes the copy lock exclusive
 *	      first: no chunk is in flight, none starts before the batch
 *	      commits, so "nothing copied" read there holds for the whole
 *	      batch and skipped changes never need the key;
 *	    - the last range retiring (retire_ranges, the copy finished: no
 *	      chunk in flight, none to claim), if no batch needed it before;
 *	    - sluice.resnapshot of a table whose copy from empty is still
 *	      running, before it records the new copy (its chunks delete rows).
 *	  A chunk that finds the key deferred (chunk_key reads the columns from
 *	  the catalog) skips delete_range when the copy never started over
 *	  (restarts = 0): the range it copies has no row in the datamart.  Why:
 *	  rows enter the table only by a committed chunk, whose range is then
 *	  'copied' (and later the frontier), or by an applied change, whose
 *	  key the filter keeps only at or below the frontier or in a copied
 *	  range; a claim starts above the last claimed range, ranges never
 *	  overlap, and without a restart none is forgotten, so a claimed range
 *	  (new, or an orphan whose chunk rolled back with its rows) is disjoint
 *	  from every place a row can be.  After a restart (a truncation, or
 *	  live's table created again, which leaves the old rows) chunks delete
 *	  as before, by a scan of the heap while the key is deferred: slow, but
 *	  rare and correct.  Everything is transactional: a crash during a
 *	  chunk or during the build rolls back the rows or the index with the
 *	  flag, and the next batch or retirement builds it again.  Readers of
 *	  the datamart see a table without a primary key while it is copied;
 *	  the build holds the table's lock for its few seconds.
 *	  Rejected: building it only when a change actually falls in a copied
 *	  range (cheaper under write load): the batch's relation, slots and
 *	  index list are set up at its RELATION message, before any change is
 *	  seen, and rebuilding them mid-batch after an ALTER TABLE would be a
 *	  second apply path for one case.  A key built concurrently (CREATE
 *	  INDEX CONCURRENTLY): it cannot run in the batch's transaction, so a
 *	  crash could leave a half-built index, and batches would need a key
 *	  before it is valid.  The per-row btree of 0.2's first chunked copy:
 *	  it copied 10,000,000 rows 1.19x as fast as native copy_data, where
 *	  the one-snapshot copy is 2.61x as fast.
 *
 *	  A copy starts over from its first key when live truncates the table
 *	  (snapshot_truncated) or when the table on live is no longer the one
 *	  being copied, dropped and created again (identity.c, at the start of
 *	  each chunk).  When a copy finishes, the models over its table are
 *	  rebuilt once (copy_models_rebuild): COPY's rows never pass the
 *	  apply's model maintenance, and a rebuild per chunk would race the
 *	  chunks copied at once.
 *
 *	  What it never does.  Apply a change (apply.c), or decode the stream.
 *	  Copy a table without a primary key, whose rows the stream cannot tell
 *	  apart: those keep the one-snapshot copy of create_pipeline.
 *
 *	  Rejected.  A buffer of the chunk's rows held until the high
 *	  watermark, as DBLog does: the chunk is written first and the stream
 *	  applied on top (only what the snapshot did not see), which needs no
 *	  buffer at all.  A long exported snapshot: it holds back vacuum on live
 *	  for the whole copy and starts over after any failure.  One frontier
 *	  and one chunk in flight, refreshed up to its watermark before the
 *	  next (0.2's first form): chunks could not be copied at once, nor
 *	  while a worker streams.  Chunks of a pipeline that keeps history:
 *	  refused (sluice.keep_history also waits for the copies to finish), as
 *	  a chunk replaces rows without recording the versions they supersede.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/snapshot.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_database.h"
#include "catalog/pg_range.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/parse_type.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "common/hashfn.h"
#include "pgstat.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/wait_event.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "pg_sluice.h"
#include "apply_internal.h"

/* A source snapshot, as pg_current_snapshot() prints it. */
typedef struct ChunkSnap
{
	uint64		xmin;
	uint64		xmax;
	int			nxip;
	uint64	   *xip;
} ChunkSnap;

/* One claimed range of a table being copied, as the stream's filter sees it. */
typedef struct CopyRange
{
	bool		has_lo;
	Datum	   *lo;				/* keys above this (exclusive) */
	bool		has_hi;
	Datum	   *hi;				/* up to this (inclusive) */
	bool		copied;			/* false: claimed, its chunk not committed */
	ChunkSnap	snap;			/* the chunk's snapshot, when copied */
} CopyRange;

/* What apply.c needs to filter the changes of a table being copied. */
struct SnapshotFilter
{
	int			nkeys;
	AttrNumber *atts;			/* target attno of each key column */
	FmgrInfo   *cmp;			/* its btree comparison */
	Oid		   *coll;			/* C for collatable types */
	bool		has_lo;
	Datum	   *lo;				/* the frontier: every key up to it is done */
	int			nranges;
	CopyRange  *ranges;			/* the claimed ranges above it, in key order */
};

/* sluice.copy_chunk is running: its refresh launches no copy worker */
static bool in_copy_chunk = false;

static bool copies_claimable(int pipeline_id);
static bool key_is_collatable(List *keys, List *columns, List *types);
static bool same_encoding(SluiceConn *sc);
static bool type_sorts_by_default_collation(Oid typid);
static bool key_sorts_by_default_collation(List *keys, List *columns, List *types);
static bool same_default_collation(SluiceConn *sc);
static void collation_refused(const char *schema, const char *table, const char *source_name,
							  const char *hint);
static void encoding_refused(const char *schema, const char *table, const char *source_name,
							 const char *hint) pg_attribute_noreturn();
static void key_build(int pipeline_id, const char *schema, const char *table);
static SluiceTable *pipe_table(SluicePipeline *pipe, const char *schema, const char *table);

/*
 * The copy lock of a table being copied: every chunk holds it shared from
 * before its snapshot to its local commit, every batch that applies the
 * table's changes holds it exclusive from the table's first change to its
 * commit (see the NOTES).  An advisory lock tag with a fourth field the SQL
 * advisory functions never use (they use 1 and 2).
 */
#define COPY_LOCK_FIELD4 3

static void
copy_lock_tag(LOCKTAG *tag, int pipeline_id, const char *schema, const char *table)
{
	StringInfoData name;

	initStringInfo(&name);
	appendStringInfo(&name, "%s.%s", quote_identifier(schema), quote_identifier(table));
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) pipeline_id,
						 hash_bytes((const unsigned char *) name.data, name.len),
						 COPY_LOCK_FIELD4);
}

static void
copy_lock(int pipeline_id, const char *schema, const char *table, LOCKMODE mode)
{
	LOCKTAG		tag;

	copy_lock_tag(&tag, pipeline_id, schema, table);
	(void) LockAcquire(&tag, mode, false, false);
}

/*
 * A copier that found nothing to do in a table lets its lock go at once: it
 * goes on to the next table, and holding both could deadlock with a batch
 * that waits for the first while holding the second.
 */
static void
copy_unlock(int pipeline_id, const char *schema, const char *table, LOCKMODE mode)
{
	LOCKTAG		tag;

	copy_lock_tag(&tag, pipeline_id, schema, table);
	(void) LockRelease(&tag, mode, false);
}

/* ---------- keys ---------- */

/* A copied table's key: target attnos, source column names (PK order). */
typedef struct ChunkKey
{
	int			nkeys;
	AttrNumber *atts;
	Oid		   *types;
	int32	   *typmods;
	bool	   *collatable;
	char	  **src;			/* source column */
	char	  **dst;			/* datamart column */
	bool		deferred;		/* the lazy key: not built yet */
	int			restarts;		/* the copy's restarts, when deferred */
} ChunkKey;

static List *deferred_key_read(int pipeline_id, const char *schema, const char *table,
							   bool *deferrable, int *restarts);

static ChunkKey *
chunk_key_alloc(int nkeys)
{
	ChunkKey   *k = palloc0(sizeof(ChunkKey));

	k->nkeys = nkeys;
	k->atts = palloc(sizeof(AttrNumber) * nkeys);
	k->types = palloc(sizeof(Oid) * nkeys);
	k->typmods = palloc(sizeof(int32) * nkeys);
	k->collatable = palloc(sizeof(bool) * nkeys);
	k->src = palloc(sizeof(char *) * nkeys);
	k->dst = palloc(sizeof(char *) * nkeys);
	return k;
}

/* Key column i of k: datamart attribute att, and the source column feeding it. */
static void
chunk_key_column(ChunkKey *k, int i, Relation rel, SluiceTable *t, AttrNumber att, bool error)
{
	Form_pg_attribute a = TupleDescAttr(RelationGetDescr(rel), att - 1);
	ListCell   *lc;

	k->atts[i] = att;
	k->types[i] = a->atttypid;
	k->typmods[i] = a->atttypmod;
	k->collatable[i] = type_is_collatable(a->atttypid);
	k->dst[i] = pstrdup(NameStr(a->attname));
	k->src[i] = NULL;
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);

		if (strcmp(c->name, k->dst[i]) == 0)
			k->src[i] = c->source_column;
	}
	if (k->src[i] == NULL && error)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key column \"%s\" of \"%s.%s\" is fed by no source column",
						k->dst[i], t->target_schema, t->target_table),
				 errhint("Map it to its source column with sluice.map_column.")));
}

/* The key of a table whose key is not built yet, from the catalog's names. */
static ChunkKey *
chunk_key_deferred(Relation rel, SluiceTable *t, List *cols, int restarts)
{
	ChunkKey   *k = chunk_key_alloc(list_length(cols));
	ListCell   *lc;

	foreach(lc, cols)
	{
		AttrNumber	att = get_attnum(RelationGetRelid(rel), strVal(lfirst(lc)));

		if (att == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of \"%s.%s\" is gone from the datamart table",
							strVal(lfirst(lc)), t->target_schema, t->target_table),
					 errdetail("The table is being copied in chunks and its primary key is built when the copy needs it."),
					 errhint("Copy the table again: sluice.drop_pipeline and sluice.create_pipeline, or remove the table and sluice.add_table it again.")));
		chunk_key_column(k, foreach_current_index(lc), rel, t, att, true);
	}
	k->deferred = true;
	k->restarts = restarts;
	return k;
}

static ChunkKey *
chunk_key(Relation rel, SluiceTable *t, int pipeline_id, bool error)
{
	Oid			pk = RelationGetPrimaryKeyIndex(rel);
	Relation	idx;
	ChunkKey   *k;
	int			i;

	if (!OidIsValid(pk))
	{
		bool		deferrable;
		int			restarts;
		List	   *cols = deferred_key_read(pipeline_id, t->source_schema, t->source_table,
											 &deferrable, &restarts);

		if (cols != NIL)
			return chunk_key_deferred(rel, t, cols, restarts);
		if (!error)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s.%s\" has no primary key: it cannot be copied in chunks",
						t->target_schema, t->target_table),
				 errdetail("Chunks are ranges of the key; without one the stream's changes cannot be told apart from the chunk's rows."),
				 errhint("Tables without a key are copied in one snapshot when the pipeline is created; to copy one again, drop and create the pipeline.")));
	}
	idx = index_open(pk, AccessShareLock);
	k = chunk_key_alloc(idx->rd_index->indnkeyatts);
	for (i = 0; i < k->nkeys; i++)
		chunk_key_column(k, i, rel, t, idx->rd_index->indkey.values[i], error);
	index_close(idx, AccessShareLock);
	return k;
}

/*
 * Key column i as the source orders and bounds it (qual: "s." or ""): a
 * collatable key as the datamart's type, COLLATE "C".  The cast is the
 * datamart's type's: live's enum is text here (source.c), and an enum takes
 * no COLLATE (live refused every chunk of an enum key with "collations are
 * not supported by type"), nor does it sort by its label as text does here;
 * for a key of the same built-in type on both sides it is no cast at all.
 */
static char *
key_source_column(ChunkKey *k, int i, const char *qual)
{
	if (!k->collatable[i])
		return psprintf("%s%s", qual, quote_identifier(k->src[i]));
	/* a type of an extension (citext, say) is the same type on both sides */
	if (k->types[i] >= FirstNormalObjectId)
		return psprintf("%s%s COLLATE \"C\"", qual, quote_identifier(k->src[i]));
	return psprintf("CAST(%s%s AS %s) COLLATE \"C\"", qual, quote_identifier(k->src[i]),
					format_type_extended(k->types[i], k->typmods[i],
										 FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
}

/* The key columns as a row for SQL: (a COLLATE "C", b) */
static char *
key_row(ChunkKey *k, bool source)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (i = 0; i < k->nkeys; i++)
	{
		if (source)
			appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", key_source_column(k, i, ""));
		else
			appendStringInfo(&buf, "%s%s%s", i > 0 ? ", " : "",
							 quote_identifier(k->dst[i]),
							 k->collatable[i] ? " COLLATE \"C\"" : "");
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * A key as quoted literals, for the source: ('1', 'abc').  A value of a
 * type that is not built in carries its type: a composite type has no
 * comparison of its own, the record's takes the literal for an anonymous
 * record, which has no input (live refused every chunk after the first of
 * a composite key with "input of anonymous composite types is not
 * implemented").  Such a type has the same name on both sides (source.c).
 */
static char *
key_literals(ChunkKey *k, List *values)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	foreach(lc, values)
	{
		int			i = foreach_current_index(lc);

		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", quote_literal_cstr(strVal(lfirst(lc))));
		if (k->types[i] >= FirstNormalObjectId)
			appendStringInfo(&buf, "::%s",
							 format_type_extended(k->types[i], k->typmods[i],
												  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/* A key's text values as datums of the datamart's key types. */
static Datum *
key_datums(ChunkKey *k, List *values)
{
	Datum	   *d = palloc(sizeof(Datum) * k->nkeys);
	ListCell   *lc;

	foreach(lc, values)
	{
		int			i = foreach_current_index(lc);
		Oid			infunc;
		Oid			ioparam;

		getTypeInputInfo(k->types[i], &infunc, &ioparam);
		d[i] = OidInputFunctionCall(infunc, strVal(lfirst(lc)), ioparam, k->typmods[i]);
	}
	return d;
}

/* text[] of the catalog into a List of String (NIL for NULL) */
static List *
text_array_list(Datum d, bool isnull)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	List	   *l = NIL;

	if (isnull)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (i = 0; i < n; i++)
		l = lappend(l, makeString(TextDatumGetCString(elems[i])));
	return l;
}

static Datum
list_text_array(List *l)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(l), 1));
	ListCell   *lc;

	foreach(lc, l)
		elems[foreach_current_index(lc)] = CStringGetTextDatum(strVal(lfirst(lc)));
	return PointerGetDatum(construct_array(elems, list_length(l), TEXTOID, -1, false, TYPALIGN_INT));
}

/* ---------- the stream's filter (apply.c) ---------- */

/* xmin:xmax:xip1,xip2,... */
static void
parse_snapshot(const char *s, ChunkSnap *cs)
{
	char	   *p;

	cs->xmin = strtou64(s, &p, 10);
	cs->xmax = strtou64(p + 1, &p, 10);
	cs->nxip = 0;
	cs->xip = palloc(sizeof(uint64) * (strlen(s) / 2 + 1));
	p++;
	while (*p != '\0')
	{
		cs->xip[cs->nxip++] = strtou64(p, &p, 10);
		if (*p == ',')
			p++;
	}
}

/*
 * Is a chunked copy of the table under way?  Read with a statement snapshot
 * of its own, taken now (after the copy lock in snapshot_filter_open, never
 * the batch's older one); identity.c asks too.
 */
bool
snapshot_copy_under_way(int pipeline_id, const char *schema, const char *table)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	if (sluice_catalog_exec("SELECT 1 FROM sluice._copy "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 "
							"   AND finished_at IS NULL",
							3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	return SPI_processed > 0;
}

/*
 * A table's copy finished: the models over it are rebuilt (as after a
 * repair).  Its rows came by COPY, which the apply's model maintenance
 * never sees; once, at the end, when no chunk is in flight: chunks copied
 * at once would each rebuild without the others' rows.
 */
static void
copy_models_rebuild(int pipeline_id, const char *schema, const char *table)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	if (sluice_catalog_exec("SELECT target_schema, target_table FROM sluice._pipeline_table "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the pipeline's table");
	if (SPI_processed == 1)
		model_after_write(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
						  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
}

/*
 * The copied ranges of a table whose watermark the stream has passed (pos,
 * the replication origin's committed position) are done: those at the
 * start, contiguous with the frontier, move it.  Returns true when that
 * finished the copy.  A chunk in flight touches only its own range; a
 * claim waits for the _copy row this updates (or this for the claim's).
 */
static bool
retire_ranges(int pipeline_id, const char *schema, const char *table, XLogRecPtr pos)
{
	Oid			types[5] = {INT4OID, TEXTOID, TEXTOID, LSNOID, INT4OID};
	Datum		args[5];
	char		nulls[5] = "     ";
	int			last = 0;
	Datum		hi = (Datum) 0;
	bool		hi_null = false;
	bool		ended = false;
	uint64		i;

	if (XLogRecPtrIsInvalid(pos))
		return false;
	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	args[3] = LSNGetDatum(pos);
	if (sluice_catalog_exec("SELECT chunk, hi, state = 'copied' AND watermark <= $4 FROM sluice._copy_range "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 ORDER BY chunk",
							4, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copied ranges");
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		passed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));

		if (!passed)
			break;
		last = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		hi = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &hi_null);
		if (!hi_null)
			hi = PointerGetDatum(DatumGetArrayTypePCopy(hi));
		ended = hi_null;
	}
	if (last == 0)
		return false;
	args[3] = hi;
	nulls[3] = hi_null ? 'n' : ' ';
	types[3] = TEXTARRAYOID;
	args[4] = Int32GetDatum(last);
	if (sluice_catalog_exec("DELETE FROM sluice._copy_range "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 AND chunk <= $5",
							5, types, args, nulls, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not retire the copied ranges");
	if (sluice_catalog_exec("UPDATE sluice._copy SET frontier = coalesce($4, frontier), "
							"       finished_at = CASE WHEN $4 IS NULL THEN pg_catalog.clock_timestamp() END "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 AND $5 > 0",
							5, types, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not move the frontier");
	if (ended)
	{
		/* the lazy key, if no batch needed it before (no chunk in flight) */
		key_build(pipeline_id, schema, table);
		copy_models_rebuild(pipeline_id, schema, table);
	}
	return ended;
}

/*
 * At a RELATION message: is the table being copied?  Returns its filter, in
 * the batch's memory, or NULL.  Takes the table's copy lock exclusive
 * first, whether it is being copied or not: a copy asked for while the
 * batch runs waits for its commit (a resnapshot's first chunk must see
 * what the batch applied).
 */
SnapshotFilter *
snapshot_filter_open(ApplyState *st, ApplyRel *ar)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];
	SnapshotFilter *f;
	ChunkKey   *k;
	MemoryContext old;
	List	   *lo;
	bool		isnull;
	Datum		d;
	int			i;
	uint64		n;

	copy_lock(st->pipe->pipeline_id, ar->table->source_schema, ar->table->source_table, ExclusiveLock);
	if (!snapshot_copy_under_way(st->pipe->pipeline_id, ar->table->source_schema, ar->table->source_table))
		return NULL;
	args[0] = Int32GetDatum(st->pipe->pipeline_id);
	args[1] = CStringGetTextDatum(ar->table->source_schema);
	args[2] = CStringGetTextDatum(ar->table->source_table);
	/* what the stream passed before this batch is done */
	if (retire_ranges(st->pipe->pipeline_id, ar->table->source_schema, ar->table->source_table,
					  origin_progress(st->pipe->origin_name, false)))
		return NULL;
	snapshot_copy_resume(st->pipe->pipeline_id);

	if (sluice_catalog_exec("SELECT frontier FROM sluice._copy "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 "
							"   AND finished_at IS NULL",
							3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	if (SPI_processed == 0)
		return NULL;
	old = MemoryContextSwitchTo(st->cxt);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	lo = text_array_list(d, isnull);
	k = chunk_key(ar->rel, ar->table, st->pipe->pipeline_id, true);
	f = palloc0(sizeof(SnapshotFilter));
	f->nkeys = k->nkeys;
	f->atts = k->atts;
	f->cmp = palloc(sizeof(FmgrInfo) * k->nkeys);
	f->coll = palloc(sizeof(Oid) * k->nkeys);
	for (i = 0; i < k->nkeys; i++)
	{
		TypeCacheEntry *tc = lookup_type_cache(k->types[i], TYPECACHE_CMP_PROC_FINFO);

		if (!OidIsValid(tc->cmp_proc_finfo.fn_oid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("key column \"%s\" of \"%s.%s\" has no ordering",
							k->dst[i], ar->table->target_schema, ar->table->target_table),
					 errhint("Tables whose key has no btree ordering cannot be copied in chunks.")));
		fmgr_info_copy(&f->cmp[i], &tc->cmp_proc_finfo, st->cxt);
		f->coll[i] = k->collatable[i] ? C_COLLATION_OID : InvalidOid;
	}
	f->has_lo = lo != NIL;
	if (f->has_lo)
		f->lo = key_datums(k, lo);
	MemoryContextSwitchTo(old);

	if (sluice_catalog_exec("SELECT lo, hi, state = 'copied', snapshot FROM sluice._copy_range "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 ORDER BY chunk",
							3, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copied ranges");
	old = MemoryContextSwitchTo(st->cxt);
	f->nranges = (int) SPI_processed;
	f->ranges = palloc0(sizeof(CopyRange) * Max(SPI_processed, 1));
	for (n = 0; n < SPI_processed; n++)
	{
		CopyRange  *r = &f->ranges[n];
		HeapTuple	tup = SPI_tuptable->vals[n];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		List	   *l;

		d = SPI_getbinval(tup, desc, 1, &isnull);
		l = text_array_list(d, isnull);
		r->has_lo = l != NIL;
		if (r->has_lo)
			r->lo = key_datums(k, l);
		d = SPI_getbinval(tup, desc, 2, &isnull);
		l = text_array_list(d, isnull);
		r->has_hi = l != NIL;
		if (r->has_hi)
			r->hi = key_datums(k, l);
		r->copied = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		if (r->copied)
			parse_snapshot(SPI_getvalue(tup, desc, 4), &r->snap);
	}
	MemoryContextSwitchTo(old);
	return f;
}

static int
key_cmp(SnapshotFilter *f, TupleTableSlot *slot, Datum *key)
{
	int			i;

	for (i = 0; i < f->nkeys; i++)
	{
		bool		isnull;
		Datum		v = slot_getattr(slot, f->atts[i], &isnull);
		int			c;

		if (isnull)
			return 1;			/* never in a primary key */
		c = DatumGetInt32(FunctionCall2Coll(&f->cmp[i], f->coll[i], v, key[i]));
		if (c != 0)
			return c;
	}
	return 0;
}

/* Did the chunk's snapshot see source transaction xid (commit order)? */
static bool
chunk_saw(ChunkSnap *cs, TransactionId xid)
{
	uint64		epoch = cs->xmax >> 32;
	uint64		full = (epoch << 32) | (uint64) xid;
	int			i;

	/* the stream's ids are recent: the epoch is xmax's, or the one before */
	if (full > cs->xmax && epoch > 0)
		full -= UINT64CONST(1) << 32;
	if (full < cs->xmin)
		return true;
	if (full >= cs->xmax)
		return false;
	for (i = 0; i < cs->nxip; i++)
		if (cs->xip[i] == full)
			return false;
	return true;
}

/*
 * Does the change of the row whose key is in slot, by the batch's current
 * source transaction, belong in the datamart?  Keys at or below the
 * frontier: yes.  Keys of a copied range: when the range's snapshot did
 * not see the transaction (the chunk holds the effect of those it saw).
 * Keys of a range claimed but not copied yet, or of no range: no (their
 * chunk reads their latest state).
 */
bool
snapshot_keep(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot)
{
	SnapshotFilter *f = ar->copyfilter;
	int			i;

	if (f == NULL)
		return true;
	if (f->has_lo && key_cmp(f, slot, f->lo) <= 0)
		return true;
	for (i = 0; i < f->nranges; i++)
	{
		CopyRange  *r = &f->ranges[i];

		if (r->has_lo && key_cmp(f, slot, r->lo) <= 0)
			continue;
		if (r->has_hi && key_cmp(f, slot, r->hi) > 0)
			continue;
		return r->copied && !chunk_saw(&r->snap, st->begin.xid);
	}
	return false;
}

static void copy_restart(int pipeline_id, const char *schema, const char *table);

/*
 * The table was truncated on the source while being copied: the datamart
 * table was truncated too; the copy starts over from the first key (the
 * rows inserted after the truncation are copied by the chunks).  No chunk
 * is in flight: this batch holds the table's copy lock.
 */
void
snapshot_truncated(ApplyState *st, ApplyRel *ar)
{
	SnapshotFilter *f = ar->copyfilter;

	if (f == NULL)
		return;
	f->has_lo = false;
	f->nranges = 0;
	copy_restart(st->pipe->pipeline_id, ar->table->source_schema, ar->table->source_table);
}

/*
 * A table's copy starts over from its first key: its claimed and copied
 * ranges are forgotten (a chunk that still copies one finds it gone and
 * its rows are copied again by a later claim).
 */
static void
copy_restart(int pipeline_id, const char *schema, const char *table)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	if (sluice_catalog_exec("DELETE FROM sluice._copy_range "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							3, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not reset the copied ranges");
	if (sluice_catalog_exec("UPDATE sluice._copy SET frontier = NULL, restarts = restarts + 1 "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 "
							"   AND finished_at IS NULL",
							3, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not reset the copy state");
}
/* ---------- the lazy key ---------- */

/*
 * The key columns of a table whose key is not built yet (NIL when it is,
 * or when the table is not being copied from empty), whether it is built
 * deferrable, and how often the copy started over.
 */
static List *
deferred_key_read(int pipeline_id, const char *schema, const char *table,
				  bool *deferrable, int *restarts)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];
	bool		isnull;
	Datum		d;

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	if (sluice_catalog_exec("SELECT deferred_key, deferred_key_deferrable, restarts FROM sluice._copy "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 "
							"   AND deferred_key IS NOT NULL",
							3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	if (SPI_processed == 0)
		return NIL;
	*deferrable = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	*restarts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return text_array_list(d, isnull);
}

/*
 * Build the lazy key of table t of pipe now, if it is not built yet: the
 * primary key create_pipeline's one-snapshot copy would give it, built
 * without keeping readers out, as the pipeline's owner, in the caller's transaction
 * (a crash rolls it back with the flag).  The caller holds the table's copy
 * lock exclusive, or knows no chunk of it can be in flight, and has the
 * table open nowhere in this transaction (ALTER TABLE refuses a table in
 * use).
 */
static void
key_build_for(SluicePipeline *pipe, SluiceTable *t)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];
	bool		deferrable = false;
	int			restarts = 0;
	List	   *cols = deferred_key_read(pipe->pipeline_id, t->source_schema, t->source_table,
										 &deferrable, &restarts);
	SluiceUser	save;

	if (cols == NIL)
		return;
	sluice_become_owner(pipe, &save);
	pipeline_build_key_online(t->target_schema, t->target_table, cols, deferrable);
	sluice_restore_user(&save);
	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(t->source_schema);
	args[2] = CStringGetTextDatum(t->source_table);
	if (sluice_catalog_exec("UPDATE sluice._copy SET deferred_key = NULL, deferred_key_deferrable = false "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							3, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the key built");
}

/* The same, by the copy's names (the copy finished: no chunk in flight). */
static void
key_build(int pipeline_id, const char *schema, const char *table)
{
	bool		deferrable;
	int			restarts;
	SluicePipeline *pipe;

	if (deferred_key_read(pipeline_id, schema, table, &deferrable, &restarts) == NIL)
		return;
	pipe = catalog_pipeline_by_id(pipeline_id, false);
	if (pipe == NULL)
		return;
	key_build_for(pipe, pipe_table(pipe, schema, table));
}

/*
 * Record that a table starting empty is created without its key (the
 * names of the key columns, in key order, as data: never SQL text).
 */
static void
record_deferred_key(int pipeline_id, const char *schema, const char *table,
					List *keys, bool deferrable)
{
	Oid			types[5] = {INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID, BOOLOID};
	Datum		args[5];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	args[3] = list_text_array(keys);
	args[4] = BoolGetDatum(deferrable);
	if (sluice_catalog_exec("UPDATE sluice._copy SET deferred_key = $4, deferred_key_deferrable = $5 "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							5, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the copy's key");
}

/*
 * A batch is about to open table t (relation.c, before anything of the
 * table is opened or cached): when its key is deferred and something is
 * copied (a frontier, a copied range, or the copy finished), the stream
 * may now have a change to apply by key, so the key is built first.  Takes
 * the table's copy lock exclusive (as snapshot_filter_open does right
 * after), so no chunk is in flight and none starts before the batch
 * commits: the state read here holds for the whole batch.
 */
void
snapshot_key_for_apply(SluicePipeline *pipe, SluiceTable *t)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		args[3];

	copy_lock(pipe->pipeline_id, t->source_schema, t->source_table, ExclusiveLock);
	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(t->source_schema);
	args[2] = CStringGetTextDatum(t->source_table);
	if (sluice_catalog_exec("SELECT 1 FROM sluice._copy c "
							" WHERE c.pipeline_id = $1 AND c.source_schema = $2 AND c.source_table = $3 "
							"   AND c.deferred_key IS NOT NULL "
							"   AND (c.frontier IS NOT NULL OR c.finished_at IS NOT NULL "
							"        OR EXISTS (SELECT FROM sluice._copy_range r "
							"                    WHERE r.pipeline_id = $1 AND r.source_schema = $2 "
							"                      AND r.source_table = $3 AND r.state = 'copied'))",
							3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	if (SPI_processed > 0)
		key_build_for(pipe, t);
}

/* ---------- resnapshot ---------- */

static SluiceTable *
find_table(SluicePipeline *pipe, Oid relid)
{
	ListCell   *lc;

	foreach(lc, pipe->tables)
	{
		SluiceTable *t = lfirst(lc);
		Oid			nsp = get_namespace_oid(t->target_schema, true);

		if (OidIsValid(nsp) && get_relname_relid(t->target_table, nsp) == relid)
			return t;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("table \"%s\" is not fed by pipeline \"%s\"", get_rel_name(relid), pipe->name),
			 errhint("sluice.pipeline_tables lists the tables of each pipeline.")));
	return NULL;				/* keep compiler quiet */
}

static void
check_copyable(SluicePipeline *pipe)
{
	if (pipe->keep_history)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pipeline \"%s\" keeps history: its tables cannot be copied in chunks", pipe->name),
				 errdetail("A chunk replaces rows without recording the versions they supersede."),
				 errhint("Use sluice.repair to bring a versioned table back in line with the source.")));
}

/* Record a table's copy, from its first key (once per table: a new one replaces it). */
static void
record_copy(int pipeline_id, const char *schema, const char *table,
			const char *kind, int chunk_rows)
{
	Oid			types[5] = {INT4OID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
	Datum		args[5];

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(schema);
	args[2] = CStringGetTextDatum(table);
	args[3] = Int32GetDatum(chunk_rows);
	args[4] = CStringGetTextDatum(kind);
	if (sluice_catalog_exec("DELETE FROM sluice._copy_range "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							3, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not forget the last copy's ranges");
	if (sluice_catalog_exec("INSERT INTO sluice._copy AS c (pipeline_id, source_schema, source_table, kind, chunk_rows) "
							"VALUES ($1, $2, $3, $5, $4) "
							"ON CONFLICT (pipeline_id, source_schema, source_table) DO UPDATE "
							"   SET kind = $5, chunk_rows = $4, frontier = NULL, chunks_done = 0, "
							"       rows_copied = 0, rows_estimate = NULL, started_at = pg_catalog.now(), "
							"       last_chunk_at = NULL, finished_at = NULL, restarts = 0, "
							"       deferred_key = NULL, deferred_key_deferrable = false",
							5, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the copy");
}

static int32
check_chunk_rows(FunctionCallInfo fcinfo, int argno)
{
	int32		chunk_rows = PG_GETARG_INT32(argno);

	if (chunk_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("chunk_rows must be at least 1"),
				 errhint("100000 rows, the default, copy in about a second each.")));
	return chunk_rows;
}

PG_FUNCTION_INFO_V1(sluice_resnapshot);

/*
 * sluice.resnapshot(pipeline, table, chunk_rows): copy the table again, in
 * chunks (sluice.copy_chunk or CALL sluice.copy_tables), while the
 * pipeline's other tables go on as before.  Its current rows stay readable
 * until their chunk replaces them.
 */
Datum
sluice_resnapshot(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			relid;
	int32		chunk_rows;
	SluicePipeline *pipe;
	SluiceTable *t;
	Relation	rel;
	ChunkKey   *k;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline, table and chunk_rows must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	relid = PG_GETARG_OID(1);
	chunk_rows = check_chunk_rows(fcinfo, 2);
	sluice_fix_search_path();
	SPI_connect();
	pipe = catalog_pipeline(name, true);
	sluice_check_operator(pipe, "resnapshot");
	catalog_require_postgres(pipe, "resnapshot");
	check_copyable(pipe);
	t = find_table(pipe, relid);
	/* a copy from empty still in progress: its key first (its rows get replaced) */
	{
		bool		deferrable;
		int			restarts;

		if (deferred_key_read(pipe->pipeline_id, t->source_schema, t->source_table,
							  &deferrable, &restarts) != NIL)
		{
			/* no chunk in flight while the key is built */
			copy_lock(pipe->pipeline_id, t->source_schema, t->source_table, ExclusiveLock);
			key_build_for(pipe, t);
		}
	}
	rel = table_open(relid, AccessShareLock);
	k = chunk_key(rel, t, pipe->pipeline_id, true);
	table_close(rel, AccessShareLock);
	for (i = 0; i < k->nkeys; i++)
		if (k->collatable[i])
		{
			SluiceConn *sc = transport_connect(pipe->source_name, pipe->conninfo, false);

			if (!same_encoding(sc))
				encoding_refused(t->target_schema, t->target_table, pipe->source_name,
								 psprintf("sluice.repair('%s') brings the table back in line with the source instead.",
										  pipe->name));
			transport_close(sc);
			break;
		}
	for (i = 0; i < k->nkeys; i++)
		if (type_sorts_by_default_collation(k->types[i]))
		{
			SluiceConn *sc = transport_connect(pipe->source_name, pipe->conninfo, false);

			if (!same_default_collation(sc))
				collation_refused(t->target_schema, t->target_table, pipe->source_name,
								  psprintf("sluice.repair('%s') brings the table back in line with the source instead.",
										   pipe->name));
			transport_close(sc);
			break;
		}

	record_copy(pipe->pipeline_id, t->source_schema, t->source_table, "resnapshot", chunk_rows);
	copyworker_launch(pipe->pipeline_id);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/* The source may write the watermark: asked first, with a hint. */
static void
check_watermark_right(SluiceConn *sc, const char *source_name)
{
	char	   *may = transport_try_value(sc,
										  "SELECT pg_catalog.has_function_privilege("
										  "'pg_catalog.pg_logical_emit_message(boolean, text, text)', 'EXECUTE')",
										  "check the right to write a watermark");

	if (may == NULL || strcmp(may, "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the role of source \"%s\" may not write watermarks into its WAL", source_name),
				 errdetail("A chunked copy marks where each chunk ends with pg_logical_emit_message, which writes WAL only, never a table."),
				 errhint("On the source, as a superuser: GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, text) TO the source's role.")));
}

PG_FUNCTION_INFO_V1(sluice_add_table);

/*
 * sluice.add_table(pipeline, table, chunk_rows): a source table joins a
 * running pipeline, its datamart table created empty and filled by chunks
 * (CALL sluice.copy_tables), the pipeline's other tables untouched.
 */
Datum
sluice_add_table(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *spec;
	int32		chunk_rows;
	SluicePipeline *pipe;
	SluiceConn *sc;
	SourceTable *t;
	Oid			relid;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline, table and chunk_rows must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	spec = text_to_cstring(PG_GETARG_TEXT_PP(1));
	chunk_rows = check_chunk_rows(fcinfo, 2);
	sluice_fix_search_path();
	SPI_connect();
	pipe = catalog_pipeline(name, true);
	sluice_check_operator(pipe, "add a table to");
	catalog_require_postgres(pipe, "add a table to");
	check_copyable(pipe);
	sc = transport_connect(pipe->source_name, pipe->conninfo, false);
	check_watermark_right(sc, pipe->source_name);
	t = source_describe_table(sc, spec);
	if (key_is_collatable(t->keys, t->columns, t->types) && !same_encoding(sc))
		encoding_refused(t->schema, t->name, pipe->source_name,
						 "Put the table in a pipeline of its own created with SET pg_sluice.initial_copy = snapshot: "
						 "its copy is then one snapshot, not chunks.");
	if (key_sorts_by_default_collation(t->keys, t->columns, t->types) && !same_default_collation(sc))
		collation_refused(t->schema, t->name, pipe->source_name,
						  "Put the table in a pipeline of its own created with SET pg_sluice.initial_copy = snapshot: "
						  "its copy is then one snapshot, not chunks.");
	relid = pipeline_add_table(pipe, sc, t);
	transport_close(sc);
	record_copy(pipe->pipeline_id, t->schema, t->name, "add_table", chunk_rows);
	record_deferred_key(pipe->pipeline_id, t->schema, t->name, t->keys, pipeline_key_deferrable(t));
	copyworker_launch(pipe->pipeline_id);
	SPI_finish();
	PG_RETURN_OID(relid);
}

/* ---------- one chunk ---------- */

/* The source's key order as a condition: key > lo AND key <= hi */
static char *
range_condition(ChunkKey *k, List *lo, List *hi)
{
	StringInfoData buf;
	char	   *row = key_row(k, true);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "true");
	if (lo != NIL)
		appendStringInfo(&buf, " AND %s > %s", row, key_literals(k, lo));
	if (hi != NIL)
		appendStringInfo(&buf, " AND %s <= %s", row, key_literals(k, hi));
	return buf.data;
}

/* Delete the datamart's rows of the range (a resnapshot's old rows). */
static int64
delete_range(Relation rel, ChunkKey *k, List *lo, List *hi)
{
	StringInfoData sql;
	Oid		   *types = palloc(sizeof(Oid) * k->nkeys * 2);
	Datum	   *args = palloc(sizeof(Datum) * k->nkeys * 2);
	char	   *row = key_row(k, false);
	int			n = 0;
	int			i;

	initStringInfo(&sql);
	appendStringInfo(&sql, "DELETE FROM %s.%s WHERE true",
					 quote_identifier(get_namespace_name(RelationGetNamespace(rel))),
					 quote_identifier(RelationGetRelationName(rel)));
	if (lo != NIL)
	{
		Datum	   *d = key_datums(k, lo);

		appendStringInfo(&sql, " AND %s > (", row);
		for (i = 0; i < k->nkeys; i++)
		{
			types[n] = k->types[i];
			args[n] = d[i];
			appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", ++n);
		}
		appendStringInfoChar(&sql, ')');
	}
	if (hi != NIL)
	{
		Datum	   *d = key_datums(k, hi);

		appendStringInfo(&sql, " AND %s <= (", row);
		for (i = 0; i < k->nkeys; i++)
		{
			types[n] = k->types[i];
			args[n] = d[i];
			appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", ++n);
		}
		appendStringInfoChar(&sql, ')');
	}
	if (SPI_execute_with_args(sql.data, n, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete the chunk's old rows");
	return (int64) SPI_processed;
}

/*
 * Every source transaction whose commit record comes before the origin's
 * position was applied or skipped by an earlier batch: the chunk's
 * snapshot must see it, or its change to a key of the chunk is lost.  A
 * transaction becomes visible only when it leaves the proc array, after
 * its commit record, and a committing transaction that waits for a
 * synchronous standby stays invisible for as long as the standby takes,
 * while our watermarks (synchronous_commit = local) do not wait.  So
 * before the chunk's snapshot is taken, wait until the transactions that
 * wait for a synchronous standby now (pg_stat_activity's SyncRep wait: the
 * commit log already says committed, pg_xact_status still says in
 * progress, and a snapshot's xip need not list them) are done waiting;
 * those that start waiting later committed after the origin's position.
 * The source's role sees other roles' waits with pg_read_all_stats
 * (README).
 */
static void
wait_for_committing(SluiceConn *sc)
{
	/* who waits now: later commits come after the origin's position */
	char	   *waiting = transport_try_value(sc,
											  "SELECT pg_catalog.array_agg(a.backend_xid::text)::text "
											  "  FROM pg_catalog.pg_stat_activity a "
											  " WHERE a.wait_event OPERATOR(pg_catalog.=) 'SyncRep' "
											  "   AND a.backend_xid IS NOT NULL",
											  "look for commits waiting for a standby");
	const char *params[1] = {waiting};

	if (waiting == NULL)
		return;					/* none (array_agg of nothing is NULL) */
	for (;;)
	{
		PGresult   *res = transport_exec(sc,
										 "SELECT count(*) FROM pg_catalog.pg_stat_activity a "
										 " WHERE a.wait_event OPERATOR(pg_catalog.=) 'SyncRep' "
										 "   AND a.backend_xid::text OPERATOR(pg_catalog.=) ANY ($1::text[])",
										 1, params, PGRES_TUPLES_OK, "wait for commits waiting for a standby");
		bool		none = strcmp(PQgetvalue(res, 0, 0), "0") == 0;

		PQclear(res);
		if (none)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* The chunk_rows-th key above lo in the source's key order (NIL: to the end). */
static List *
find_hi(SluiceConn *sc, SluiceTable *t, ChunkKey *k, List *lo, int chunk_rows)
{
	StringInfoData sql;
	PGresult   *res;
	List	   *hi = NIL;
	int			i;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (i = 0; i < k->nkeys; i++)
		appendStringInfo(&sql, "%s%s::text", i > 0 ? ", " : "", quote_identifier(k->src[i]));
	/* qualified: a bare ORDER BY name would be the text output column */
	appendStringInfo(&sql, " FROM %s.%s s WHERE %s ORDER BY ",
					 quote_identifier(t->source_schema), quote_identifier(t->source_table),
					 range_condition(k, lo, NIL));
	for (i = 0; i < k->nkeys; i++)
		appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "", key_source_column(k, i, "s."));
	appendStringInfo(&sql, " OFFSET %d LIMIT 1", chunk_rows - 1);
	res = transport_exec(sc, sql.data, 0, NULL, PGRES_TUPLES_OK, "find the chunk's last key");
	if (PQntuples(res) > 0)
		for (i = 0; i < k->nkeys; i++)
			hi = lappend(hi, makeString(pstrdup(PQgetvalue(res, 0, i))));
	PQclear(res);
	return hi;
}

/*
 * Does the key (column names keys, among columns of datamart type names
 * types) have a column whose type satisfies pred?
 */
static bool
key_has_type(List *keys, List *columns, List *types, bool (*pred) (Oid))
{
	ListCell   *lc;
	ListCell   *lt;

	forboth(lc, columns, lt, types)
	{
		Oid			typid;
		int32		typmod;

		if (!list_member(keys, lfirst(lc)))
			continue;
		parseTypeString(strVal(lfirst(lt)), &typid, &typmod, true);
		if (OidIsValid(typid) && pred(typid))
			return true;
	}
	return false;
}

/* A collatable key column: its chunks are ranges in byte order. */
static bool
key_is_collatable(List *keys, List *columns, List *types)
{
	return key_has_type(keys, columns, types, type_is_collatable);
}

/*
 * Does a value of typid compare by its database's default collation, with
 * no collation of its own to set (a composite type with a text attribute,
 * a range of text, an array of those)?  Such a key sorts by live's default
 * collation there and by this database's here: COLLATE "C" cannot be put
 * on it, so its chunks agree only when the two are the same.
 */
static bool
type_sorts_by_default_collation(Oid typid)
{
	char		typtype;

	check_stack_depth();
	typid = getBaseType(typid);
	if (type_is_collatable(typid))
		return false;			/* compared COLLATE "C" (key_source_column) */
	if (OidIsValid(get_element_type(typid)))
		return type_sorts_by_default_collation(get_element_type(typid));
	typtype = get_typtype(typid);
	if (typtype == TYPTYPE_COMPOSITE)
	{
		TupleDesc	desc = lookup_rowtype_tupdesc(typid, -1);
		bool		found = false;
		int			i;

		for (i = 0; i < desc->natts && !found; i++)
		{
			Form_pg_attribute a = TupleDescAttr(desc, i);

			if (a->attisdropped)
				continue;
			if (type_is_collatable(a->atttypid))
				found = a->attcollation == DEFAULT_COLLATION_OID;
			else
				found = type_sorts_by_default_collation(a->atttypid);
		}
		ReleaseTupleDesc(desc);
		return found;
	}
	if (typtype == TYPTYPE_RANGE)
	{
		HeapTuple	tup = SearchSysCache1(RANGETYPE, ObjectIdGetDatum(typid));
		Form_pg_range r;
		bool		found;

		if (!HeapTupleIsValid(tup))
			return false;
		r = (Form_pg_range) GETSTRUCT(tup);
		found = type_is_collatable(r->rngsubtype) ?
			r->rngcollation == DEFAULT_COLLATION_OID :
			type_sorts_by_default_collation(r->rngsubtype);
		ReleaseSysCache(tup);
		return found;
	}
#if PG_VERSION_NUM >= 140000
	if (typtype == TYPTYPE_MULTIRANGE)
		return type_sorts_by_default_collation(get_multirange_range(typid));
#endif
	return false;
}

/* The same for a key: column names keys, among columns of datamart type names types. */
static bool
key_sorts_by_default_collation(List *keys, List *columns, List *types)
{
	return key_has_type(keys, columns, types, type_sorts_by_default_collation);
}

/*
 * Does the source's database sort text by default as this one does (the
 * same provider, collation and ICU locale)?
 */
static bool
same_default_collation(SluiceConn *sc)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
	Form_pg_database db;
	char	   *mine;
	char	   *theirs;
	bool		same;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for database %u", MyDatabaseId);
	db = (Form_pg_database) GETSTRUCT(tup);
#if PG_VERSION_NUM >= 150000
	{
		bool		isnull;
		Datum		collate = SysCacheGetAttr(DATABASEOID, tup, Anum_pg_database_datcollate, &isnull);
#if PG_VERSION_NUM >= 170000
		Datum		icu = SysCacheGetAttr(DATABASEOID, tup, Anum_pg_database_datlocale, &isnull);
#else
		Datum		icu = SysCacheGetAttr(DATABASEOID, tup, Anum_pg_database_daticulocale, &isnull);
#endif

		mine = psprintf("%c/%s/%s", db->datlocprovider, TextDatumGetCString(collate),
						isnull ? "" : TextDatumGetCString(icu));
	}
#else
	mine = psprintf("c/%s/", NameStr(db->datcollate));
#endif
	ReleaseSysCache(tup);
	theirs = transport_try_value(sc, PQserverVersion(sc->conn) >= 170000 ?
								 "SELECT datlocprovider::pg_catalog.text || '/' || datcollate || '/' || coalesce(datlocale, '') "
								 "  FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()" :
								 PQserverVersion(sc->conn) >= 150000 ?
								 "SELECT datlocprovider::pg_catalog.text || '/' || datcollate || '/' || coalesce(daticulocale, '') "
								 "  FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()" :
								 "SELECT 'c/' || datcollate || '/' "
								 "  FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()",
								 "read the source's default collation");
	same = theirs != NULL && strcmp(mine, theirs) == 0;
	if (!same)
		ereport(DEBUG1,
				(errmsg_internal("default collation: here %s, source %s", mine, theirs ? theirs : "unknown")));
	return same;
}

/* A key sorted by the default collation, which differs on the source: not in chunks. */
static void
collation_refused(const char *schema, const char *table, const char *source_name, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the key of table \"%s.%s\" sorts by the default collation, which source \"%s\" does not share with this database",
					schema, table, source_name),
			 errdetail("Chunks are ranges of the key; a composite or range type with a text part sorts by its database's default collation, so the two sides would not agree which chunk a key belongs to."),
			 errhint("%s", hint)));
}

/* Is the source's encoding this database's? */
static bool
same_encoding(SluiceConn *sc)
{
	char	   *enc = transport_try_value(sc, "SHOW server_encoding", "read the source's encoding");

	return enc != NULL && pg_char_to_encoding(enc) == GetDatabaseEncoding();
}

/* A text key from a source of another encoding cannot be copied in chunks. */
static void
encoding_refused(const char *schema, const char *table, const char *source_name, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("table \"%s.%s\" has a text key and source \"%s\" another encoding than this database (%s)",
					schema, table, source_name, GetDatabaseEncodingName()),
			 errdetail("Chunks are ranges of the key in byte order, which differs between encodings."),
			 errhint("%s", hint)));
}

/* Same order on both sides: a collatable key needs the same encoding. */
static void
check_key_order(SluiceConn *sc, const char *source_name, SluiceTable *t, ChunkKey *k, SourceTable *st)
{
	int			i;
	bool		collatable = false;

	for (i = 0; i < k->nkeys; i++)
	{
		ListCell   *lc;
		ListCell   *lt;

		collatable |= k->collatable[i];
		forboth(lc, st->columns, lt, st->types)
		{
			if (strcmp(strVal(lfirst(lc)), k->src[i]) == 0 &&
				strcmp(strVal(lfirst(lt)), format_type_with_typemod(k->types[i], k->typmods[i])) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("key column \"%s\" of \"%s.%s\" has another type on the source (%s)",
								k->dst[i], t->target_schema, t->target_table, strVal(lfirst(lt))),
						 errdetail("Chunks are ranges of the key: both sides must order it the same way."),
						 errhint("Use sluice.repair to bring the table back in line with the source.")));
		}
	}
	if (collatable && !same_encoding(sc))
		encoding_refused(t->target_schema, t->target_table, source_name,
						 "Use sluice.repair to bring the table back in line with the source.");
	for (i = 0; i < k->nkeys; i++)
		if (type_sorts_by_default_collation(k->types[i]))
		{
			if (!same_default_collation(sc))
				collation_refused(t->target_schema, t->target_table, source_name,
								  "Use sluice.repair to bring the table back in line with the source.");
			break;
		}
}

/*
 * Every contract column's source column still has a type the contract
 * takes (its type, or one it took before): else the source drifted since
 * the stream last told, and the chunk's COPY would fail on a value, or
 * read one as another type.  Named as the drift it is; the stream's next
 * batch applies the drift policy (it evolves, or pauses with its way
 * forward), then the copy goes on.  A source column gone from live is
 * named too (no batch sees it until live writes the table), with its own
 * way forward: sluice.drop_column or sluice.map_column; a column the
 * contract keeps fed by nothing (drop_column) is then left out of the
 * COPY (copy_range).
 */
static void
check_source_types(SluicePipeline *pipe, SluiceTable *t, SourceTable *src)
{
	ListCell   *lc;

	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		ListCell   *a;
		ListCell   *b;
		ListCell   *o;
		bool		found = false;

		if (c->source_column == NULL)
			continue;
		forthree(a, src->columns, b, src->types, o, src->srctypes)
		{
			Oid			now = lfirst_oid(o);

			if (strcmp(strVal(lfirst(a)), c->source_column) != 0)
				continue;
			found = true;
			if (now != c->source_type && !list_member_oid(c->prior_types, now))
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("source table \"%s.%s\" drifted from its contract", t->source_schema, t->source_table),
						 errdetail("Column \"%s\" is of type %s on source \"%s\" now, not the contract's; the chunk was not copied.",
								   c->source_column, strVal(lfirst(b)), pipe->source_name),
						 errhint("Let the pipeline's next batch apply its drift policy first (sluice.refresh('%s') for a pipeline refreshed on demand; it evolves, or pauses and names the way forward), then copy again.",
								 pipe->name)));
		}
		/* gone from live: the COPY would fail on its name, and no batch sees it until live writes the table */
		if (!found && !c->source_dropped)
		{
			char	   *target = quote_literal_cstr(psprintf("%s.%s", quote_identifier(t->target_schema),
															  quote_identifier(t->target_table)));

			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("source table \"%s.%s\" drifted from its contract", t->source_schema, t->source_table),
					 errdetail("Column \"%s\" (feeding \"%s\") no longer exists on source \"%s\" (dropped or renamed); the chunk was not copied.",
							   c->source_column, c->name, pipe->source_name),
					 errhint("If it was dropped, sluice.drop_column(%s, %s) keeps \"%s\" (NULL from now on); if it was renamed, "
							 "sluice.map_column(%s, %s, <its new name>). Then copy again.",
							 target, quote_literal_cstr(c->name), c->name, target, quote_literal_cstr(c->name))));
		}
	}
}

/* One range of one table to copy. */
typedef struct ChunkWork
{
	char	   *schema;			/* source table */
	char	   *table;
	int			chunk;
	List	   *lo;				/* String: exclusive, NIL: from the first key */
	List	   *hi;				/* String: inclusive, NIL: to the end */
	bool		claimed_now;	/* claimed by this transaction */
} ChunkWork;

static SluiceTable *
pipe_table(SluicePipeline *pipe, const char *schema, const char *table)
{
	ListCell   *lc;

	foreach(lc, pipe->tables)
	{
		SluiceTable *x = lfirst(lc);

		if (strcmp(x->source_schema, schema) == 0 && strcmp(x->source_table, table) == 0)
			return x;
	}
	elog(ERROR, "table \"%s.%s\" being copied is not in pipeline \"%s\"", schema, table, pipe->name);
	return NULL;				/* keep compiler quiet */
}

/*
 * Lock a claimed range for copying, skipping one another process copies;
 * the caller holds the table's copy lock shared.  Fills w's bounds.
 */
static bool
lock_range(int pipeline_id, ChunkWork *w)
{
	Oid			types[4] = {INT4OID, TEXTOID, TEXTOID, INT4OID};
	Datum		args[4];
	bool		isnull;
	Datum		d;

	args[0] = Int32GetDatum(pipeline_id);
	args[1] = CStringGetTextDatum(w->schema);
	args[2] = CStringGetTextDatum(w->table);
	args[3] = Int32GetDatum(w->chunk);
	if (sluice_catalog_exec("SELECT lo, hi FROM sluice._copy_range "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 AND chunk = $4 "
							"   AND state = 'claimed' FOR UPDATE SKIP LOCKED",
							4, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the claimed range");
	if (SPI_processed == 0)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	w->lo = text_array_list(d, isnull);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	w->hi = text_array_list(d, isnull);
	return true;
}

/*
 * A range claimed but copied by nobody (its copier was cancelled, or
 * crashed with either server), locked for copying; NULL when none.
 */
static ChunkWork *
find_orphan(SluicePipeline *pipe)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	List	   *found = NIL;
	ListCell   *lc;
	uint64		i;

	args[0] = Int32GetDatum(pipe->pipeline_id);
	if (sluice_catalog_exec("SELECT r.source_schema, r.source_table, r.chunk "
							"  FROM sluice._copy_range r JOIN sluice._copy c USING (pipeline_id, source_schema, source_table) "
							" WHERE r.pipeline_id = $1 AND r.state = 'claimed' AND c.finished_at IS NULL "
							" ORDER BY c.started_at, r.chunk",
							1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the claimed ranges");
	for (i = 0; i < SPI_processed; i++)
	{
		ChunkWork  *w = palloc0(sizeof(ChunkWork));
		bool		isnull;

		w->schema = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		w->table = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		w->chunk = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		found = lappend(found, w);
	}
	foreach(lc, found)
	{
		ChunkWork  *w = lfirst(lc);

		copy_lock(pipe->pipeline_id, w->schema, w->table, ShareLock);
		if (lock_range(pipe->pipeline_id, w))
			return w;
		copy_unlock(pipe->pipeline_id, w->schema, w->table, ShareLock);
	}
	return NULL;
}

/*
 * Claim the next range of the first table being copied that has one left:
 * chunk_rows keys above the last claimed range (or the frontier), found on
 * the source.  The claims of one table are serialized by its _copy row.
 * NULL when every range of every table is claimed.
 */
static ChunkWork *
claim_next(SluicePipeline *pipe, SluiceConn **scp)
{
	Oid			types[7] = {INT4OID, TEXTOID, TEXTOID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, INT8OID};
	Datum		args[7];
	char		nulls[7] = "       ";
	List	   *tables = NIL;
	ListCell   *lc;
	uint64		i;

	args[0] = Int32GetDatum(pipe->pipeline_id);
	if (sluice_catalog_exec("SELECT source_schema, source_table FROM sluice._copy "
							" WHERE pipeline_id = $1 AND finished_at IS NULL ORDER BY started_at",
							1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	for (i = 0; i < SPI_processed; i++)
		tables = lappend(tables, list_make2(makeString(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)),
											makeString(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2))));
	foreach(lc, tables)
	{
		ChunkWork  *w = palloc0(sizeof(ChunkWork));
		List	   *lo;
		int			chunk_rows;
		bool		estimated;
		bool		isnull;
		SluiceTable *t;
		Relation	rel;
		ChunkKey   *k;

		w->schema = strVal(linitial((List *) lfirst(lc)));
		w->table = strVal(lsecond((List *) lfirst(lc)));
		copy_lock(pipe->pipeline_id, w->schema, w->table, ShareLock);
		args[1] = CStringGetTextDatum(w->schema);
		args[2] = CStringGetTextDatum(w->table);
		/* all claimed already?  (asked before the row lock, kept as short) */
		if (sluice_catalog_exec("SELECT 1 FROM sluice._copy_range "
								" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 AND hi IS NULL",
								3, types, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the claimed ranges");
		if (SPI_processed > 0)
		{
			copy_unlock(pipe->pipeline_id, w->schema, w->table, ShareLock);
			continue;
		}
		/* the claims of a table wait for each other here */
		if (sluice_catalog_exec("SELECT frontier, chunk_rows, rows_estimate IS NOT NULL FROM sluice._copy "
								" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 "
								"   AND finished_at IS NULL FOR UPDATE",
								3, types, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the copy state");
		if (SPI_processed == 0)
		{
			copy_unlock(pipe->pipeline_id, w->schema, w->table, ShareLock);
			continue;
		}
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			lo = text_array_list(d, isnull);
			chunk_rows = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			estimated = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		}
		/* a statement of its own: its snapshot sees the claim committed while waiting */
		if (sluice_catalog_exec("SELECT chunk, hi FROM sluice._copy_range "
								" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 "
								" ORDER BY chunk DESC LIMIT 1",
								3, types, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the claimed ranges");
		w->chunk = 1;
		if (SPI_processed > 0)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

			if (isnull)
			{
				/* every range claimed */
				copy_unlock(pipe->pipeline_id, w->schema, w->table, ShareLock);
				continue;
			}
			lo = text_array_list(d, false);
			w->chunk = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) + 1;
		}
		t = pipe_table(pipe, w->schema, w->table);
		rel = table_open(get_relname_relid(t->target_table, get_namespace_oid(t->target_schema, false)),
						 AccessShareLock);
		k = chunk_key(rel, t, pipe->pipeline_id, true);
		table_close(rel, AccessShareLock);
		if (*scp == NULL)
			*scp = transport_connect(pipe->source_name, pipe->conninfo, false);
		/* live's table is still the one being copied, or it starts over (identity.c) */
		if (identity_chunk_start(pipe, *scp, t) == IDENTITY_RESTART)
		{
			copy_restart(pipe->pipeline_id, w->schema, w->table);
			lo = NIL;
			w->chunk = 1;
		}
		w->lo = lo;
		w->hi = find_hi(*scp, t, k, lo, chunk_rows);
		w->claimed_now = true;

		args[3] = Int32GetDatum(w->chunk);
		args[4] = lo != NIL ? list_text_array(lo) : (Datum) 0;
		nulls[4] = lo != NIL ? ' ' : 'n';
		args[5] = w->hi != NIL ? list_text_array(w->hi) : (Datum) 0;
		nulls[5] = w->hi != NIL ? ' ' : 'n';
		if (sluice_catalog_exec("INSERT INTO sluice._copy_range (pipeline_id, source_schema, source_table, chunk, lo, hi, state, worker_pid) "
								"VALUES ($1, $2, $3, $4, $5, $6, 'claimed', pg_catalog.pg_backend_pid())",
								6, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not claim the range");
		if (!estimated)
		{
			const char *params[2] = {t->source_schema, t->source_table};
			PGresult   *res = transport_exec(*scp,
											 "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END "
											 "  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
											 " WHERE n.nspname = $1 AND c.relname = $2",
											 2, params, PGRES_TUPLES_OK, "read the table's row estimate");

			if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
			{
				args[6] = Int64GetDatum(strtoi64(PQgetvalue(res, 0, 0), NULL, 10));
				if (sluice_catalog_exec("UPDATE sluice._copy SET rows_estimate = $7 "
										" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
										7, types, args, nulls, false, 0) != SPI_OK_UPDATE)
					elog(ERROR, "could not record the row estimate");
			}
			PQclear(res);
		}
		return w;
	}
	return NULL;
}

/*
 * Copy a range locked for copying, in one snapshot of the source, and
 * record it copied with that snapshot and a watermark written after it
 * (see the NOTES).  The caller holds the table's copy lock shared.
 * Returns the watermark; InvalidXLogRecPtr when the table on live is not
 * the one being copied and the copy started over instead.
 */
static XLogRecPtr
copy_range(SluicePipeline *pipe, ChunkWork *w, SluiceConn *sc)
{
	Oid			types[7] = {INT4OID, TEXTOID, TEXTOID, INT4OID, TEXTOID, LSNOID, INT8OID};
	Datum		args[7];
	SluiceTable *t = pipe_table(pipe, w->schema, w->table);
	Relation	rel;
	ChunkKey   *k;
	SourceTable *src;
	ListCell   *lc;
	List	   *dst_cols = NIL;
	List	   *src_cols = NIL;
	bool		binary;
	char	   *snap;
	char	   *mark;
	int64		rows;
	XLogRecPtr	watermark;
	SluiceUser	save;

	rel = table_open(get_relname_relid(t->target_table, get_namespace_oid(t->target_schema, false)),
					 RowExclusiveLock);
	k = chunk_key(rel, t, pipe->pipeline_id, true);
	/* live's table was dropped and created again: its copy starts over (identity.c) */
	switch (identity_chunk_start(pipe, sc, t))
	{
		case IDENTITY_SAME:
			break;
		case IDENTITY_RESTART:
			copy_restart(pipe->pipeline_id, t->source_schema, t->source_table);
			/* FALLTHROUGH */
		case IDENTITY_RESTARTED:
			table_close(rel, NoLock);
			return InvalidXLogRecPtr;
	}
	src = source_describe_table(sc, psprintf("%s.%s", quote_identifier(t->source_schema),
											 quote_identifier(t->source_table)));
	check_source_types(pipe, t, src);
	check_key_order(sc, pipe->source_name, t, k, src);
	/* a column the contract keeps fed by nothing (sluice.drop_column), gone from live: not copied */
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);

		if (c->source_column == NULL ||
			(c->source_dropped && !list_member(src->columns, makeString(c->source_column))))
			continue;
		dst_cols = lappend(dst_cols, makeString(c->name));
		src_cols = lappend(src_cols, makeString(c->source_column));
	}
	/* binary when the source's types are the contract's */
	binary = src->binary_safe;
	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		ListCell   *a;
		ListCell   *b;
		bool		same = false;

		if (c->source_column == NULL ||
			(c->source_dropped && !list_member(src->columns, makeString(c->source_column))))
			continue;
		forboth(a, src->columns, b, src->types)
			if (strcmp(strVal(lfirst(a)), c->source_column) == 0 &&
				strcmp(strVal(lfirst(b)), c->data_type) == 0)
				same = true;
		binary &= same;
	}

	/* 1. the chunk, in one snapshot of the source */
	wait_for_committing(sc);
	transport_command(sc, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "start the chunk's snapshot");
	snap = transport_try_value(sc, "SELECT pg_catalog.pg_current_snapshot()::text", "read the chunk's snapshot");
	if (snap == NULL)
		elog(ERROR, "could not read the chunk's snapshot");
	sluice_become_owner(pipe, &save);
	/* a range never copied of a table copied from empty has no rows (NOTES) */
	if (!k->deferred || k->restarts > 0)
		(void) delete_range(rel, k, w->lo, w->hi);
	rows = copy_table(sc, t->source_schema, t->source_table, false, dst_cols,
					  RelationGetRelid(rel), binary, range_condition(k, w->lo, w->hi), src_cols,
					  NULL);
	sluice_restore_user(&save);
	transport_command(sc, "COMMIT", "end the chunk's snapshot");

	/* 2. the watermark: every transaction the snapshot saw is before it */
	mark = transport_try_value(sc, "SELECT pg_catalog.pg_logical_emit_message(true, 'pg_sluice', 'chunk')",
							   "write the chunk's watermark");
	if (mark == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not write the chunk's watermark on source \"%s\"", pipe->source_name),
				 errhint("Check the source's log; the copy resumes with this chunk.")));
	watermark = transport_parse_lsn(mark);

	/* 3. the range copied, in the transaction of its rows */
	args[0] = Int32GetDatum(pipe->pipeline_id);
	args[1] = CStringGetTextDatum(w->schema);
	args[2] = CStringGetTextDatum(w->table);
	args[3] = Int32GetDatum(w->chunk);
	args[4] = CStringGetTextDatum(snap);
	args[5] = LSNGetDatum(watermark);
	args[6] = Int64GetDatum(rows);
	if (sluice_catalog_exec("UPDATE sluice._copy_range SET state = 'copied', snapshot = $5, watermark = $6, "
							"       rows = $7, worker_pid = pg_catalog.pg_backend_pid(), "
							"       copied_at = pg_catalog.clock_timestamp() "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3 AND chunk = $4",
							7, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the chunk");
	if (sluice_catalog_exec("UPDATE sluice._copy SET chunks_done = chunks_done + 1, rows_copied = rows_copied + $7, "
							"       last_chunk_at = pg_catalog.clock_timestamp() "
							" WHERE pipeline_id = $1 AND source_schema = $2 AND source_table = $3",
							7, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the chunk");
	table_close(rel, NoLock);
	return watermark;
}

/* Retire what the stream passed, table by table; true when none is left. */
static bool
retire_all(SluicePipeline *pipe, XLogRecPtr pos)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	List	   *tables = NIL;
	ListCell   *lc;
	bool		all = true;
	uint64		i;

	args[0] = Int32GetDatum(pipe->pipeline_id);
	if (sluice_catalog_exec("SELECT source_schema, source_table FROM sluice._copy "
							" WHERE pipeline_id = $1 AND finished_at IS NULL",
							1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	for (i = 0; i < SPI_processed; i++)
		tables = lappend(tables, list_make2(makeString(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)),
											makeString(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2))));
	foreach(lc, tables)
	{
		char	   *schema = strVal(linitial((List *) lfirst(lc)));
		char	   *table = strVal(lsecond((List *) lfirst(lc)));

		/* no copy lock: a streaming worker would wait for chunks in flight */
		all &= retire_ranges(pipe->pipeline_id, schema, table, pos);
	}
	return all;
}

/* Unfinished copies of the pipeline: how many, and how many ranges are claimed. */
static int64
copies_left(int pipeline_id, int64 *claimed)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];
	bool		isnull;
	int64		n;

	args[0] = Int32GetDatum(pipeline_id);
	if (sluice_catalog_exec("SELECT (SELECT count(*) FROM sluice._copy c WHERE c.pipeline_id = $1 AND c.finished_at IS NULL), "
							"       (SELECT count(*) FROM sluice._copy_range r WHERE r.pipeline_id = $1 AND r.state = 'claimed')",
							1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*claimed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return n;
}

/*
 * Is there a range of the pipeline's copies to claim, or one claimed that
 * nobody may be copying?  (Copies whose ranges are all copied only wait
 * for the stream: no worker is needed for them.)
 */
static bool
copies_claimable(int pipeline_id)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];

	args[0] = Int32GetDatum(pipeline_id);
	if (sluice_catalog_exec("SELECT 1 FROM sluice._copy c "
							" WHERE c.pipeline_id = $1 AND c.finished_at IS NULL "
							"   AND (NOT EXISTS (SELECT FROM sluice._copy_range r "
							"                     WHERE (r.pipeline_id, r.source_schema, r.source_table) "
							"                         = (c.pipeline_id, c.source_schema, c.source_table) "
							"                       AND r.hi IS NULL) "
							"        OR EXISTS (SELECT FROM sluice._copy_range r "
							"                    WHERE (r.pipeline_id, r.source_schema, r.source_table) "
							"                        = (c.pipeline_id, c.source_schema, c.source_table) "
							"                      AND r.state = 'claimed'))",
							1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the copy state");
	return SPI_processed > 0;
}

/*
 * Copy workers for the pipeline when it has chunks left to claim and none
 * runs, started when the caller commits: from a batch that opens a table
 * being copied, and after every sluice.refresh (api.c), so that a copy
 * whose workers are gone (a restart of the server; the server's
 * pg_sluice.max_copy_workers all busy at its launch) goes on at the next
 * refresh even when no change of the table arrives.
 */
void
snapshot_copy_resume(int pipeline_id)
{
	if (!in_copy_chunk && copies_claimable(pipeline_id))
		copyworker_ensure(pipeline_id);
}

/* A watermark written now on the source. */
static XLogRecPtr
emit_watermark(SluiceConn *sc, SluicePipeline *pipe)
{
	char	   *mark = transport_try_value(sc,
										   "SELECT pg_catalog.pg_logical_emit_message(true, 'pg_sluice', 'chunk')",
										   "write the chunk's watermark");

	if (mark == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not write a watermark on source \"%s\"", pipe->source_name),
				 errhint("Check the source's log; the copy resumes where it stopped.")));
	return transport_parse_lsn(mark);
}

PG_FUNCTION_INFO_V1(sluice_copy_chunk);

/*
 * sluice.copy_chunk(pipeline): copy one range of a table being copied (a
 * range whose copier died, else the next one), in the caller's transaction.
 * A pipeline refreshed on demand is then refreshed up to the chunk's
 * watermark; a streaming one's worker applies the stream.  With every range
 * copied, a pipeline refreshed on demand is refreshed once more so that
 * its copies finish.  Returns false when no range was left to copy.
 */
Datum
sluice_copy_chunk(PG_FUNCTION_ARGS)
{
	char	   *name;
	SluicePipeline *pipe;
	SluiceConn *sc = NULL;
	ChunkWork  *w;
	XLogRecPtr	watermark = InvalidXLogRecPtr;
	RefreshResult r;
	TimestampTz started = GetCurrentTimestamp();
	int64		claimed;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pipeline must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	sluice_fix_search_path();
	SPI_connect();
	pipe = catalog_pipeline(name, true);
	sluice_check_operator(pipe, "copy");
	catalog_require_postgres(pipe, "copy");
	if (pipe->paused_reason)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pipeline \"%s\" is paused", name),
				 errdetail("%s", pipe->paused_reason),
				 errhint("Fix the contract or the datamart table, then call sluice.resume('%s').", name)));
	if (copies_left(pipe->pipeline_id, &claimed) == 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	check_copyable(pipe);

	in_copy_chunk = true;
	PG_TRY();
	{
		w = find_orphan(pipe);
		if (w == NULL)
			w = claim_next(pipe, &sc);
		if (sc == NULL)
			sc = transport_connect(pipe->source_name, pipe->conninfo, false);
		check_watermark_right(sc, pipe->source_name);
		if (w != NULL)
			watermark = copy_range(pipe, w, sc);
		else if (!pipe->continuous)
			watermark = emit_watermark(sc, pipe);
		if (!pipe->continuous)
		{
			/* the stream up to the watermark, the copied ranges filtered */
			refresh_pipeline_upto(pipe, sc, 0, 0, watermark, &r);
			if (!r.conn_closed)
				transport_close(sc);
			if (!r.paused)
				(void) retire_all(pipe, watermark);
			(void) refresh_record_run(pipe, "refresh", started, &r);
		}
		else
			transport_close(sc);
	}
	PG_FINALLY();
	{
		in_copy_chunk = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_BOOL(w != NULL);
}

/* ---------- the copy workers' steps (copyworker.c) ---------- */

static void
step_begin(void)
{
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
}

static void
step_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * A copy worker's connection to live, kept from chunk to chunk (a
 * connection per claim and per copy cost two backend starts on live per
 * chunk): it survives the commits (persistent), an abort closes it and
 * clears step_conn (owner_ref), and the next step connects again.
 */
static SluiceConn *step_conn = NULL;
static int	step_conn_pipeline = 0;

static SluiceConn *
step_connect(SluicePipeline *pipe)
{
	if (step_conn != NULL &&
		(step_conn_pipeline != pipe->pipeline_id || PQstatus(step_conn->conn) != CONNECTION_OK ||
		 PQtransactionStatus(step_conn->conn) != PQTRANS_IDLE))
		transport_close(step_conn);
	if (step_conn == NULL)
	{
		step_conn = transport_connect(pipe->source_name, pipe->conninfo, false);
		step_conn->persistent = true;
		step_conn->owner_ref = &step_conn;
		step_conn_pipeline = pipe->pipeline_id;
	}
	return step_conn;
}

/*
 * One chunk of a copy worker of pipeline_id, in its own transactions: a
 * claim committed first, so that the other workers claim the ranges after
 * it while this one copies, then the copy.  What it found, in cxt.
 */
CopyStep
snapshot_copy_step(int pipeline_id, MemoryContext cxt)
{
	SluicePipeline *pipe;
	SluiceConn *sc = NULL;
	ChunkWork  *w;
	ChunkWork	mine;
	int64		claimed;
	int64		left;

	step_begin();
	pipe = catalog_pipeline_by_id(pipeline_id, false);
	if (pipe == NULL || pipe->paused_reason != NULL || pipe->source_name == NULL)
	{
		step_end();
		return COPY_STEP_GONE;
	}
	sluice_check_operator(pipe, "copy");
	check_copyable(pipe);
	w = find_orphan(pipe);
	if (w == NULL)
	{
		sc = step_connect(pipe);
		w = claim_next(pipe, &sc);
		if (w == NULL)
		{
			left = copies_left(pipeline_id, &claimed);
			transport_close(step_conn);
			step_end();
			if (left == 0)
				return COPY_STEP_GONE;
			return claimed > 0 ? COPY_STEP_BUSY : COPY_STEP_ALL_COPIED;
		}
		/* the claim commits: the other workers claim the ranges after it */
		mine.schema = MemoryContextStrdup(cxt, w->schema);
		mine.table = MemoryContextStrdup(cxt, w->table);
		mine.chunk = w->chunk;
		step_end();

		step_begin();
		pipe = catalog_pipeline_by_id(pipeline_id, false);
		if (pipe == NULL)
		{
			step_end();
			return COPY_STEP_GONE;
		}
		w = palloc0(sizeof(ChunkWork));
		w->schema = mine.schema;
		w->table = mine.table;
		w->chunk = mine.chunk;
		copy_lock(pipeline_id, w->schema, w->table, ShareLock);
		if (!lock_range(pipeline_id, w))
		{
			/* an orphan hunter took it: next */
			step_end();
			return COPY_STEP_COPIED;
		}
	}
	pgstat_report_activity(STATE_RUNNING, psprintf("pg_sluice: copying chunk %d of %s.%s",
												   w->chunk, w->schema, w->table));
	sc = step_connect(pipe);
	(void) copy_range(pipe, w, sc);
	step_end();
	pgstat_report_activity(STATE_IDLE, NULL);
	return COPY_STEP_COPIED;
}

/*
 * Every range of the pipeline is copied: its copies finish once the stream
 * passes their watermarks.  A pipeline refreshed on demand is refreshed up
 * to a new watermark here; a streaming one's worker passes them
 * (snapshot_worker_step retires them).  Returns true when every copy of
 * the pipeline finished.
 */
bool
snapshot_copy_finish(int pipeline_id)
{
	SluicePipeline *pipe;
	volatile bool done = false;

	step_begin();
	pipe = catalog_pipeline_by_id(pipeline_id, false);
	if (pipe != NULL && !pipe->continuous && pipe->paused_reason == NULL)
	{
		SluiceConn *sc;
		XLogRecPtr	watermark;
		RefreshResult r;
		TimestampTz started = GetCurrentTimestamp();

		pipe = catalog_pipeline_by_id(pipeline_id, true);
		sluice_check_operator(pipe, "copy");
		sc = transport_connect(pipe->source_name, pipe->conninfo, false);
		watermark = emit_watermark(sc, pipe);
		in_copy_chunk = true;
		PG_TRY();
		{
			refresh_pipeline_upto(pipe, sc, 0, 0, watermark, &r);
		}
		PG_FINALLY();
		{
			in_copy_chunk = false;
		}
		PG_END_TRY();
		if (!r.conn_closed)
			transport_close(sc);
		if (!r.paused)
			done = retire_all(pipe, watermark);
		(void) refresh_record_run(pipe, "refresh", started, &r);
	}
	step_end();
	return done;
}

/*
 * Between two batches of a streaming pipeline (worker.c), outside any
 * transaction: the copied ranges the stream passed retire.  Returns true
 * when ranges are left to claim, or claimed ones to copy.
 */
bool
snapshot_retire_streamed(int pipeline_id)
{
	SluicePipeline *pipe;
	bool		left = false;
	int64		claimed;

	step_begin();
	/* the common case, no copy: one index probe */
	pipe = copies_left(pipeline_id, &claimed) > 0 ? catalog_pipeline_by_id(pipeline_id, false) : NULL;
	if (pipe != NULL)
	{
		XLogRecPtr	pos = origin_progress(pipe->origin_name, false);
		Oid			types[1] = {INT4OID};
		Datum		args[1] = {Int32GetDatum(pipeline_id)};

		/*
		 * A quiet stream leaves the origin at the last transaction it
		 * applied, maybe before the last watermark (a message, not a
		 * change the pipeline applies); the worker knows the datamart is
		 * consistent with everything the walsender had flushed when its
		 * last batch caught up (sluice.status.applied_lsn).
		 */
		if (sluice_catalog_exec("SELECT applied_lsn FROM sluice._worker_status() WHERE pipeline_id = $1",
								1, types, args, NULL, false, 1) == SPI_OK_SELECT && SPI_processed > 0)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				pos = Max(pos, DatumGetLSN(d));
		}
		left = !retire_all(pipe, pos) && copies_claimable(pipeline_id);
	}
	step_end();
	return left;
}

/* ---------- the initial copy in chunks (create_pipeline) ---------- */

/*
 * pg_sluice.initial_copy: how create_pipeline copies each table.  A
 * setting, not a create_pipeline argument: a new argument changes the
 * function's signature, and updating the extension would drop it with
 * every GRANT EXECUTE roles hold on it.
 */
enum
{
	INITIAL_COPY_AUTO,
	INITIAL_COPY_SNAPSHOT,
	INITIAL_COPY_CHUNKED
};

static const struct config_enum_entry initial_copy_options[] = {
	{"auto", INITIAL_COPY_AUTO, false},
	{"snapshot", INITIAL_COPY_SNAPSHOT, false},
	{"chunked", INITIAL_COPY_CHUNKED, false},
	{NULL, 0, false}
};

static int	sluice_initial_copy = INITIAL_COPY_AUTO;
static int	sluice_chunked_above = 20000000;
static int	sluice_initial_chunk_rows = 100000;

void
snapshot_init(void)
{
	DefineCustomEnumVariable("pg_sluice.initial_copy",
							 "Sets how sluice.create_pipeline copies each table: in one snapshot (the default), in chunks, or auto.",
							 "snapshot: every table in the slot's snapshot, in create_pipeline's transaction (a failure starts it over). "
							 "chunked: every table with a primary key is created empty and copied in chunks by CALL sluice.copy_tables, "
							 "which resumes after the last committed chunk. auto: chunked for the tables the source estimates "
							 "above pg_sluice.initial_copy_chunked_above rows.",
							 &sluice_initial_copy, INITIAL_COPY_AUTO, initial_copy_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.initial_copy_chunked_above",
							"Sets the source row estimate above which pg_sluice.initial_copy = auto copies a table in chunks.",
							"The estimate is the source's pg_class.reltuples (the sum over the partitions of a partitioned table); "
							"a table never vacuumed or analyzed has none and gets the one-snapshot copy.",
							&sluice_chunked_above, 20000000, 0, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.initial_copy_chunk_rows",
							"Sets the rows per chunk of a table create_pipeline copies in chunks.",
							"Each chunk is one transaction here; a crash or a cancel repeats at most the chunk in progress.",
							&sluice_initial_chunk_rows, 100000, 1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	copyworker_init();
}

/* The source's row estimate of a table, -1 when it has none. */
static int64
source_estimate(SluiceConn *sc, SourceTable *t)
{
	const char *params[1];
	PGresult   *res;
	int64		n = -1;

	params[0] = psprintf("%s.%s", quote_identifier(t->schema), quote_identifier(t->name));
	/* partitions through pg_inherits: pg_partition_tree is 12 and later */
	res = transport_exec(sc,
						 t->partitioned ?
						 "WITH RECURSIVE tree(relid) AS ("
						 "  SELECT $1::regclass::oid "
						 "  UNION ALL SELECT i.inhrelid FROM pg_catalog.pg_inherits i "
						 "    JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.relid) "
						 "SELECT CASE WHEN pg_catalog.bool_or(c.reltuples >= 0) "
						 "            THEN pg_catalog.sum(GREATEST(c.reltuples, 0))::bigint END "
						 "  FROM tree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.relid "
						 " WHERE c.relkind IN ('r', 'f')" :
						 "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END "
						 "  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::regclass",
						 1, params, PGRES_TUPLES_OK, "read the table's row estimate");
	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		n = strtoi64(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

/*
 * Which tables of a new pipeline create_pipeline leaves empty for a
 * chunked copy (pg_sluice.initial_copy), checked before anything is
 * created: a keyless table cannot be chunked, and the source's role must
 * be able to write the chunks' watermarks.
 */
List *
snapshot_initial_plan(SluiceConn *sc, const char *source_name, List *tables)
{
	List	   *chunked = NIL;
	ListCell   *lc;
	int			same = -1;		/* the source's encoding is ours: not asked yet */
	int			same_collation = -1;	/* its default collation too */

	if (sluice_initial_copy == INITIAL_COPY_SNAPSHOT)
		return NIL;
	foreach(lc, tables)
	{
		SourceTable *t = lfirst(lc);
		bool		keyed = t->keys != NIL && t->replident != 'f';

		/* a text key from a source of another encoding: not in chunks */
		if (keyed && key_is_collatable(t->keys, t->columns, t->types))
		{
			if (same < 0)
				same = same_encoding(sc) ? 1 : 0;
			if (same == 0)
			{
				if (sluice_initial_copy == INITIAL_COPY_CHUNKED)
					encoding_refused(t->schema, t->name, source_name,
									 "SET pg_sluice.initial_copy = auto (such tables get the one-snapshot copy).");
				continue;
			}
		}
		/* a key sorted by live's default collation, not ours: nor that */
		if (keyed && key_sorts_by_default_collation(t->keys, t->columns, t->types))
		{
			if (same_collation < 0)
				same_collation = same_default_collation(sc) ? 1 : 0;
			if (same_collation == 0)
			{
				if (sluice_initial_copy == INITIAL_COPY_CHUNKED)
					collation_refused(t->schema, t->name, source_name,
									  "SET pg_sluice.initial_copy = auto (such tables get the one-snapshot copy).");
				continue;
			}
		}
		if (sluice_initial_copy == INITIAL_COPY_CHUNKED)
		{
			if (!keyed)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("table \"%s.%s\" on source \"%s\" has no primary key: it cannot be copied in chunks",
								t->schema, t->name, source_name),
						 errdetail("pg_sluice.initial_copy is chunked; chunks are ranges of the key."),
						 errhint("SET pg_sluice.initial_copy = auto (keyless tables get the one-snapshot copy), or put the table in a pipeline of its own created with pg_sluice.initial_copy = snapshot.")));
			chunked = lappend(chunked, t);
		}
		else if (keyed)
		{
			int64		n = source_estimate(sc, t);

			if (n > (int64) sluice_chunked_above)
				chunked = lappend(chunked, t);
		}
	}
	if (chunked != NIL)
		check_watermark_right(sc, source_name);
	return chunked;
}

/* Record the chunked copy of a new pipeline's table (create_pipeline). */
void
snapshot_record_initial(int pipeline_id, SourceTable *t)
{
	record_copy(pipeline_id, t->schema, t->name, "initial_copy", sluice_initial_chunk_rows);
	/* an adopted table keeps its own key; a created one waits for it (pipeline.c) */
	if (!t->adopted)
		record_deferred_key(pipeline_id, t->schema, t->name, t->keys, pipeline_key_deferrable(t));
}

int
snapshot_initial_chunk_rows(void)
{
	return sluice_initial_chunk_rows;
}
