/*-------------------------------------------------------------------------
 *
 * verify_compare.c
 *	  The comparison of one datamart table with its source table, both read
 *	  at the same source position: hashing, buckets, bisection of those
 *	  that differ, and the merge of their rows (sluice.verify and
 *	  sluice.repair).
 *
 * NOTES
 *	  What this file owns: given a table's two sides already at one exact
 *	  source position (verify.c: the source's snapshot on a connection, the
 *	  datamart in this transaction), finding which keys differ, counting
 *	  them and listing up to max_keys of them; each differing key is also
 *	  handed to repair.c when the caller repairs.  It never chooses the
 *	  position, takes a lock or records a result, and writes nothing itself,
 *	  here or on the source: the repair's writes are repair.c's.
 *
 *	  Hashing.  Each side computes the same SQL over the same values: for
 *	  each row a 64-bit hash of each contract column, seeded by its place
 *	  in the contract (a null hashes to a constant of its seed), combined
 *	  by xor into the row's hash (rh) and, over the key columns (every
 *	  column for a table without a key) with other seeds, into the key's
 *	  (kb, 60 bits), which buckets the row; per bucket, the count and the
 *	  sum of the row hashes.  A column is hashed by value when its type is
 *	  one of typed_hashes (int2, int4, int8, text, varchar, timestamp,
 *	  timestamptz, time, uuid): with the extended hash function of the
 *	  type's default hash operator class, found in this server's catalog
 *	  (pg_amproc, support function 2) and named, schema-qualified, in both
 *	  sides' queries, called on the value (text and varchar COLLATE "C",
 *	  so byte-wise; timestamptz cast to timestamp, which under TimeZone UTC
 *	  keeps its value).  Every other column is hashed from its text
 *	  (hashtextextended).  The list holds the types whose equality is the
 *	  identity of their printed value and whose hash costs less than their
 *	  text; measured on one server, bench.big's 1,000,000 rows, CPU
 *	  seconds of the backend (the scan alone 0.07-0.10), three runs each:
 *	  timestamptz 0.21-0.35 from its text, 0.12-0.22 cast and hashed,
 *	  0.20-0.31 through a one-column record (hash_record_extended); uuid
 *	  0.79-0.84 against 0.58-0.66 (its cast from text included); timestamp
 *	  and time not measured apart (the same kind of function, no cast).
 *	  Left to
 *	  their text: numeric, whose hash ignores the scale (1.0 = 1.00) so
 *	  that a change of scale alone would not be a difference, and with the
 *	  scale added to the seed costs what its text does (0.23-0.29 against
 *	  0.19-0.28); date, bool and bytea, whose functions take another type,
 *	  and through a record cost more than their text (date 0.26-0.29
 *	  against 0.19-0.25, bool 0.19-0.30 against 0.13-0.19, bytea 0.38-0.45
 *	  against 0.30-0.35); float4/float8 (-0 = 0), interval ('1 day' = '24
 *	  hours'), jsonb (its numbers compare as numerics), bpchar (trailing
 *	  spaces); enums, whose hash is their OID, which differs between
 *	  servers; arrays, ranges and records (their elements may be any of
 *	  those).  So "different" is unchanged: a value differs when its text
 *	  does.  Both servers must agree on each function: the probe
 *	  (verify_typed_probe) hashes one value of each such type the table
 *	  uses on both sides, the source's in a savepoint; a type whose hashes
 *	  differ (another byte order, another major version's function,
 *	  another TimeZone) or that the source cannot hash falls back to its
 *	  text, column by column.  All of
 *	  this is used when both servers give the same results for
 *	  hashtextextended (verify_fast_hash: it reads bytes in machine words,
 *	  so servers of different byte order disagree, and the source needs
 *	  PostgreSQL 11); else md5 of the text of ROW(key columns) and of
 *	  ROW(contract columns), whose hex digits are turned into integers (60
 *	  bits from the key's, two times 60 summed from the row's).  The leaf
 *	  rows carry the md5 of the key (the merge orders by it, repair.c looks
 *	  keys up by it) and the row's hash as text.  Columns are named through
 *	  the contract (datamart name here, source name there); a column whose
 *	  datamart type differs from the source's (a declared widening,
 *	  sluice.accept_type_change) is cast on the source to the datamart's
 *	  type first when that is a built-in type, so both sides hash the same
 *	  value or text (int4 widened to int8 is hashed as int8 on both).  Both
 *	  sessions print with the same settings (TimeZone UTC, DateStyle ISO,
 *	  IntervalStyle postgres, extra_float_digits 3, bytea_output hex).
 *	  Only (bucket, count, sum) rows cross the wire.  One 64-bit sum: two
 *	  differing buckets agree by chance once in 2^64.  The xor keeps the
 *	  columns of a row together (the sum of the rows' xors changes when
 *	  values move between rows), the seeds keep a column's value from
 *	  cancelling the same value in another column.

 *	  Buckets, not key ranges.  A range of keys ("id between 1 and 1000")
 *	  holds the same rows on both sides only if both sides order keys the
 *	  same way, and text keys are ordered by collations, which differ from
 *	  server to server (and COLLATE "C" would keep the source from using its
 *	  index anyway).  A bucket (the key's hash modulo M) holds the same keys
 *	  everywhere.  The per-bucket aggregate is a sum, so it does not depend
 *	  on the order of the rows either, and it compares multisets: for a
 *	  table without a key, a duplicated row adds its hash twice.  Bisection:
 *	  the buckets that differ (count or sums) are split, bucket b of modulus
 *	  M into b + i * M of modulus M * F, and only those children are
 *	  computed (a scan of each side, filtered on the parents), until the
 *	  differing buckets are small; then their rows' (key hash, row hash,
 *	  key) are streamed from both sides through cursors in key-hash order
 *	  and merged here: a key only on the source is missing in the mart, one
 *	  only in the mart is extra, one on both with another row hash is
 *	  different.  The cost is one scan of each side when they are equal,
 *	  plus one per level of bisection when they are not; the two sides scan
 *	  at the same time (the source's aggregate is read as a COPY while the
 *	  datamart computes its own).  A level's filter on its parents is in
 *	  the scan, so only their rows are hashed; once the differing buckets
 *	  hold at most VERIFY_LEAF_TOTAL rows in all, they are listed at once
 *	  (one more scan of each side, hashing only the keys) instead of split
 *	  again.  The parents travel as parameters: an int8[] here, and on the
 *	  source, whose COPY takes no parameters, a setting of the snapshot's
 *	  transaction (set_config, its value a parameter) that the query reads
 *	  once (an initplan); the leaf's cursor binds an int8[].  Measured (the
 *	  2-core shared test machine, both servers on it, bench/verify_10m.pl,
 *	  bench.big of scenario 7, pg_dump -t to /dev/null in the same run,
 *	  three runs each, medians): 1,000,000 rows, 1.53 s equal (pg_dump
 *	  1.09 s), 1.75 s with one row changed; 10,000,000 rows, 16.1 s equal
 *	  (pg_dump 12.2 s), 18.5 s with one row changed.  With the typed
 *	  hashes (same bench, 10,000,000 rows, two runs): 6.4 s and 8.1 s
 *	  equal against pg_dump 8.6 s and 11.4 s (ratios 0.74, 0.71); the build
 *	  before, run twice in the same half hour, 1.81 and 1.79; at
 *	  1,000,000 rows 1.01 against 1.14, two minutes apart.  Per
 *	  server the gain is smaller, so the load of the hour is part of it:
 *	  CPU of the level query over 1,000,000 rows 0.70-0.80 s against
 *	  0.62-0.84 s before, COPY 0.63-0.76 s.  The record text of
 *	  the row hashed twice, as before: 4.9-6.0 s equal at 1,000,000 rows
 *	  (pg_dump 2.2-2.5 s in that loaded run), 5.3-5.5 s with one row changed
 *	  (a second level scanned and hashed every row).

 *	  Rejected: shipping every row's (key, hash) and merging here (the
 *	  wire would carry a row per row); md5 for every scan (the conversion of
 *	  its hex digits to integers, through bit(60), costs most of the scan:
 *	  on one server, the level query over 1,000,000 rows of five columns
 *	  took 4.8-6.1 s, the two md5s alone 1.6 s, the row's text 0.7 s);
 *	  hashtextextended without the probe (its result depends on the byte
 *	  order of the server); ranges of keys (see above); hashing the record
 *	  text of ROW(columns) (record_out's quoting and the tuple built for it
 *	  cost about twice the per-column hashes: 1.29 s against 0.68 s for
 *	  1,000,000 rows on one server, COPY of the table 0.46 s); one
 *	  hash_record_extended of ROW(every column) instead of a hash per
 *	  column (no faster on one server, and a column without a hash
 *	  function would need its text inside the record anyway); numeric,
 *	  date, bool and bytea by value (see Hashing).  Not tried: parallel
 *	  workers for the level (the planner does not parallelize the scan
 *	  under OFFSET 0, and on the test machine both servers and the dump
 *	  share two cores).
 *
 *	  Memory is bounded: the buckets of one level (at most 65536 are asked
 *	  for, and as many parents passed down), batches of 1000 rows of the leaf cursors, and at most max_keys
 *	  differing keys kept for the report (all are counted).
 *
 *	  Throttling: rows_per_second > 0 holds the average rate of source rows
 *	  read, by sleeping between the queries and cursor batches on the
 *	  source.  Each aggregate is one query, so the rate is not held within
 *	  one scan.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/verify_compare.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/hash.h"
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "parser/parse_coerce.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "verify_internal.h"

#define VERIFY_MAX_BUCKETS	65536	/* buckets one level may ask for */
#define VERIFY_LEAF_ROWS	64		/* rows per bucket listed key by key */
#define VERIFY_FETCH		1000	/* rows per cursor batch */
#define VERIFY_LEAF_TOTAL	65536	/* rows of differing buckets listed at once */

/* the source's setting that carries a level's parent buckets (see NOTES) */
#define VERIFY_BUCKETS_GUC	"sluice_verify.buckets"

/* One side of the leaf merge: a cursor read in batches. */
typedef struct LeafStream
{
	bool		live;
	SluiceConn *sc;				/* source side */
	PGresult   *res;			/* its current batch */
	Portal		portal;			/* datamart side */
	SPITupleTable *tt;			/* its current batch */
	uint64		n;				/* rows in the batch */
	uint64		pos;			/* current row */
	bool		done;
	VerifyThrottle *throttle;
} LeafStream;

static VerifyBucket *verify_level(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
								  int64 modulus, int64 parent_modulus,
								  VerifyBucket *parents, int nparents, int *ndiff);
static void verify_leaf(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
						int64 modulus, VerifyBucket *buckets, int nbuckets, int max_keys);

/* ---------- helpers ---------- */

/* An int8 made of 60 bits of an md5 in hex, from character start. */
static char *
hex60(const char *expr, int start)
{
	return psprintf("(('x' OPERATOR(pg_catalog.||) pg_catalog.substr(%s, %d, 15))::pg_catalog.bit(60))::pg_catalog.int8",
					expr, start);
}

/*
 * The query both sides run to see whether hashtextextended gives the same
 * results on both: it hashes bytes in machine words, so two servers of
 * different byte order disagree.  Strings of 1 to 24 bytes cover every tail
 * of its 12-byte blocks.
 */
#define VERIFY_HASH_PROBE \
	"SELECT pg_catalog.string_agg(pg_catalog.hashtextextended(" \
	"pg_catalog.substr('pg_sluice verify probe!!', 1, n) COLLATE pg_catalog.\"C\", n)::pg_catalog.text, ',' ORDER BY n) " \
	"FROM pg_catalog.generate_series(1, 24) n"

/*
 * May both sides hash with hashtextextended (see NOTES)?  The source needs
 * it (PostgreSQL 11) and must agree with this server on the probe.
 */
static bool
verify_fast_hash(SluiceConn *snap)
{
	char	   *live;
	bool		isnull;
	Datum		d;

	if (PQserverVersion(snap->conn) < 110000)
		return false;
	live = transport_try_value(snap, VERIFY_HASH_PROBE, "hash the probe");
	if (live == NULL)
		return false;
	if (SPI_execute(VERIFY_HASH_PROBE, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && strcmp(TextDatumGetCString(d), live) == 0;
}

/* Is the type one of pg_catalog's (so the source has it too)? */
static bool
type_is_builtin(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	bool		result;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	result = ((Form_pg_type) GETSTRUCT(tup))->typnamespace == PG_CATALOG_NAMESPACE;
	ReleaseSysCache(tup);
	return result;
}

/* The buckets' numbers as the text of an int8[] parameter for the source. */
static char *
bucket_array_text(VerifyBucket *b, int n)
{
	StringInfoData s;
	int			i;

	initStringInfo(&s);
	appendStringInfoChar(&s, '{');
	for (i = 0; i < n; i++)
		appendStringInfo(&s, "%s" INT64_FORMAT, i ? "," : "", b[i].bucket);
	appendStringInfoChar(&s, '}');
	return s.data;
}

/* The buckets' numbers as an int8[] parameter here. */
static Datum
bucket_array_datum(VerifyBucket *b, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(b[i].bucket);
	return PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * The types hashed by value when both servers agree (see NOTES), each with
 * the value the probe hashes: types whose equality is the identity of their
 * printed value and whose hash function costs less than their text.
 */
static const struct
{
	Oid			typid;
	const char *probe;
}			typed_hashes[] =
{
	{INT2OID, "-12345"},
	{INT4OID, "-1234567890"},
	{INT8OID, "-1234567890123456789"},
	{TEXTOID, "pg_sluice verify probe: typed"},
	{VARCHAROID, "pg_sluice verify probe: varchar"},
	{TIMESTAMPTZOID, "2024-02-29 12:34:56.789012+00"},
	{TIMESTAMPOID, "2024-02-29 12:34:56.789012"},
	{TIMEOID, "12:34:56.789012"},
	{UUIDOID, "0123abcd-4567-89ef-fedc-ba9876543210"},
};

/*
 * The hash of a value of one of typed_hashes' types by the extended hash
 * function of the type's default hash operator class, as this server's
 * catalog names it, seeded by seed; NULL when there is none callable on
 * the type.  timestamptz's (timestamp_hash_extended) takes a timestamp:
 * the value is cast, which keeps it as it is in both sessions (TimeZone
 * UTC, see NOTES).
 */
static char *
typed_hash(Oid typid, const char *expr, int seed)
{
	Oid			opclass = GetDefaultOpClass(typid, HASH_AM_OID);
	Oid			proc;
	Oid		   *argtypes;
	int			nargs;
	bool		listed = false;
	const char *coll = type_is_collatable(typid) ? " COLLATE pg_catalog.\"C\"" : "";

	for (int i = 0; i < lengthof(typed_hashes); i++)
		listed |= (typed_hashes[i].typid == typid);
	if (!listed || !OidIsValid(opclass))
		return NULL;
	proc = get_opfamily_proc(get_opclass_family(opclass), get_opclass_input_type(opclass),
							 get_opclass_input_type(opclass), HASHEXTENDED_PROC);
	if (!OidIsValid(proc) || get_func_namespace(proc) != PG_CATALOG_NAMESPACE)
		return NULL;
	(void) get_func_signature(proc, &argtypes, &nargs);
	if (nargs != 2)
		return NULL;
	if (typid == TIMESTAMPTZOID && argtypes[0] == TIMESTAMPOID)
		expr = psprintf("CAST(%s AS pg_catalog.\"timestamp\")", expr);
	else if (argtypes[0] != typid &&
			 (IsPolymorphicType(argtypes[0]) || argtypes[0] == INTERNALOID ||
			  !IsBinaryCoercible(typid, argtypes[0])))
		return NULL;
	return psprintf("%s.%s((%s)%s, %d)", quote_identifier("pg_catalog"),
					quote_identifier(get_func_name(proc)), expr, coll, seed);
}

/*
 * Which of the table's columns are hashed by value: those of a type in
 * typed_hashes on which both servers hash the probe's value alike (one
 * query each side, the source's in a savepoint so that a function it
 * lacks only makes the type's columns hash their text).
 */
static void
verify_typed_probe(VerifyTable *vt, SluiceConn *snap)
{
	StringInfoData q;
	Oid			types[lengthof(typed_hashes)];
	int			ntypes = 0;
	char	   *live;
	char	   *mart = NULL;
	ListCell   *lc;

	initStringInfo(&q);
	for (int i = 0; i < lengthof(typed_hashes); i++)
	{
		bool		used = false;
		char	   *h;

		foreach(lc, vt->columns)
			used |= (((VerifyColumn *) lfirst(lc))->typid == typed_hashes[i].typid);
		if (!used)
			continue;
		h = typed_hash(typed_hashes[i].typid,
					   psprintf("%s::%s", quote_literal_cstr(typed_hashes[i].probe),
								format_type_extended(typed_hashes[i].typid, -1, FORMAT_TYPE_FORCE_QUALIFY)),
					   7);
		if (h == NULL)
			continue;
		appendStringInfo(&q, "%s(%s)::pg_catalog.text", ntypes ? ", " : "", h);
		types[ntypes++] = typed_hashes[i].typid;
	}
	if (ntypes == 0)
		return;
	q.data = psprintf("SELECT pg_catalog.concat_ws(',', %s)", q.data);

	transport_command(snap, "SAVEPOINT sluice_verify_probe", "probe the hash functions");
	live = transport_try_value(snap, q.data, "probe the hash functions");
	transport_command(snap, live ? "RELEASE SAVEPOINT sluice_verify_probe" :
					  "ROLLBACK TO SAVEPOINT sluice_verify_probe", "probe the hash functions");
	if (live == NULL)
		return;
	if (SPI_execute(q.data, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		mart = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (mart == NULL)
		return;

	/* the i-th hash of each side is the i-th type's */
	for (int i = 0; i < ntypes; i++)
	{
		char	   *l = strsep(&live, ",");
		char	   *m = strsep(&mart, ",");

		if (l == NULL || m == NULL || strcmp(l, m) != 0)
			continue;
		foreach(lc, vt->columns)
		{
			VerifyColumn *vc = lfirst(lc);

			if (vc->typid == types[i])
				vc->typed = true;
		}
	}
}

/*
 * The hash of one column's value (see NOTES): by value with its type's
 * hash function when the probe allows it, else from its text; seeded by
 * the column's place, a null hashing to a constant of that seed.  The
 * column's datamart type is the type of the source's expression too (cast
 * when widened) or prints the same.
 */
static char *
column_hash(const char *expr, VerifyColumn *vc, int seed)
{
	char	   *h = NULL;

	if (vc->typed)
		h = typed_hash(vc->typid, expr, seed);
	if (h == NULL)
		h = psprintf("pg_catalog.hashtextextended((%s)::pg_catalog.text COLLATE pg_catalog.\"C\", %d)",
					 expr, seed);
	return psprintf("COALESCE(%s, %d)", h, -seed);
}

/*
 * Sleep so that the source rows read so far, plus rows, stay within the
 * rate; interruptible.
 */
void
verify_throttle(VerifyThrottle *th, int64 rows)
{
	th->rows += rows;
	if (th->rate <= 0)
		return;
	for (;;)
	{
		TimestampTz due = th->start + (TimestampTz) ((double) th->rows * USECS_PER_SEC / th->rate);
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), due);

		CHECK_FOR_INTERRUPTS();
		if (ms <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(ms, 1000L), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	CHECK_FOR_INTERRUPTS();
}

/*
 * Print values here as the source session prints them (see NOTES).  Set
 * for the rest of the transaction's current GUC nest level; the caller
 * undoes it with AtEOXact_GUC.
 */
void
verify_set_output_settings(void)
{
	(void) set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("DateStyle", "ISO", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("IntervalStyle", "postgres", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "3", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("bytea_output", "hex", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* ---------- one table ---------- */

/*
 * Describe one table for the comparison: its contract columns as each side
 * names them, casts for widened types, the two base queries.
 */
VerifyTable *
verify_prepare(SluicePipeline *pipe, SluiceTable *t, SluiceConn *snap)
{
	VerifyTable *vt = palloc0(sizeof(VerifyTable));
	const char *params[2] = {t->source_schema, t->source_table};
	PGresult   *res;
	ListCell   *lc;
	bool		partitioned = false;
	Oid			nsp;
	StringInfoData key;
	StringInfoData row;
	StringInfoData names;
	StringInfoData vals;
	StringInfoData keyh;
	StringInfoData rowh;
	bool		first;
	int			nkey = 0;

	vt->t = t;
	vt->cxt = CurrentMemoryContext;
	initStringInfo(&vt->keys);
	nsp = get_namespace_oid(t->target_schema, true);
	vt->relid = OidIsValid(nsp) ? get_relname_relid(t->target_table, nsp) : InvalidOid;
	if (!OidIsValid(vt->relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("datamart table \"%s.%s\" of pipeline \"%s\" does not exist",
						t->target_schema, t->target_table, pipe->name),
				 errhint("Drop the pipeline with sluice.drop_pipeline() and create it again.")));

	res = transport_exec(snap,
						 "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), c.relkind "
						 "  FROM pg_catalog.pg_class c "
						 "  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
						 "  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid "
						 "   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped "
						 " WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2",
						 2, params, PGRES_TUPLES_OK, "describe the source table");
	if (PQntuples(res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("source table \"%s.%s\" of pipeline \"%s\" does not exist on source \"%s\"",
						t->source_schema, t->source_table, pipe->name, pipe->source_name),
				 errhint("Remove the table from the datamart's comparison with the tables argument, or create the pipeline again.")));
	partitioned = PQgetvalue(res, 0, 2)[0] == 'p';

	foreach(lc, t->columns)
	{
		SluiceColumn *c = lfirst(lc);
		VerifyColumn *vc;
		AttrNumber	attno;
		Oid			typid;
		int32		typmod;
		Oid			collid;
		char	   *mart_type;
		const char *live_type = NULL;
		int			i;

		/* a column the source no longer feeds has nothing to compare */
		if (c->source_column == NULL || c->source_dropped)
			continue;
		for (i = 0; i < PQntuples(res); i++)
			if (strcmp(PQgetvalue(res, i, 0), c->source_column) == 0)
				live_type = PQgetvalue(res, i, 1);
		if (live_type == NULL)
			continue;
		attno = get_attnum(vt->relid, c->name);
		if (attno == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of datamart table \"%s.%s\" does not exist",
							c->name, t->target_schema, t->target_table),
					 errdetail("The contract of the table has it."),
					 errhint("Restore the column, or drop it from the contract with sluice.drop_column().")));
		get_atttypetypmodcoll(vt->relid, attno, &typid, &typmod, &collid);
		mart_type = format_type_extended(typid, typmod, FORMAT_TYPE_TYPEMOD_GIVEN);

		vc = palloc0(sizeof(VerifyColumn));
		vc->name = c->name;
		vc->is_key = c->is_key;
		vc->mart_expr = pstrdup(quote_identifier(c->name));
		vc->typid = typid;
		vc->typmod = typmod;
		vc->live_expr = pstrdup(quote_identifier(c->source_column));
		/* a widened column: print the source's value as the datamart's type */
		if (strcmp(mart_type, live_type) != 0 && type_is_builtin(typid))
			vc->live_expr = psprintf("CAST(%s AS %s)", vc->live_expr,
									 format_type_extended(typid, typmod,
														  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
		if (vc->is_key)
			nkey++;
		vt->columns = lappend(vt->columns, vc);
	}
	PQclear(res);
	if (vt->columns == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("datamart table \"%s.%s\" has no column fed by the source to compare",
						t->target_schema, t->target_table)));
	vt->keyless = (nkey == 0);

	vt->live_rel = psprintf("%s%s.%s", partitioned ? "" : "ONLY ",
							quote_identifier(t->source_schema), quote_identifier(t->source_table));
	vt->mart_rel = psprintf("%s%s.%s",
							get_rel_relkind(vt->relid) == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
							quote_identifier(t->target_schema), quote_identifier(t->target_table));
	vt->fast_hash = verify_fast_hash(snap);
	if (vt->fast_hash)
		verify_typed_probe(vt, snap);

	for (int side = 0; side < 2; side++)
	{
		bool		live = (side == 0);

		initStringInfo(&key);
		initStringInfo(&row);
		initStringInfo(&names);
		initStringInfo(&vals);
		initStringInfo(&keyh);
		initStringInfo(&rowh);
		first = true;
		foreach(lc, vt->columns)
		{
			VerifyColumn *vc = lfirst(lc);
			const char *e = live ? vc->live_expr : vc->mart_expr;
			int			place = foreach_current_index(lc) + 1;

			appendStringInfo(&row, "%s%s", row.len ? ", " : "", e);
			appendStringInfo(&rowh, "%s%s", rowh.len ? " OPERATOR(pg_catalog.#) " : "",
							 column_hash(e, vc, place));
			if (vt->keyless || vc->is_key)
			{
				appendStringInfo(&key, "%s%s", key.len ? ", " : "", e);
				appendStringInfo(&keyh, "%s%s", keyh.len ? " OPERATOR(pg_catalog.#) " : "",
								 column_hash(e, vc, 1000 + place));
				appendStringInfo(&names, "%s%s", first ? "" : ", ", quote_literal_cstr(vc->name));
				appendStringInfo(&vals, "%s(%s)::pg_catalog.text", first ? "" : ", ", e);
				first = false;
			}
		}
		*(live ? &vt->live_key_row : &vt->mart_key_row) = pstrdup(key.data);
		if (live)
			vt->live_cols = pstrdup(row.data);
		/* kb: the key's bucket hash, 60 bits; rh: the row's (see NOTES) */
		*(live ? &vt->live_kb : &vt->mart_kb) = vt->fast_hash ?
			psprintf("((%s) OPERATOR(pg_catalog.&) 1152921504606846975)", keyh.data) :
			hex60(psprintf("pg_catalog.md5((ROW(%s))::pg_catalog.text)", key.data), 1);
		*(live ? &vt->live_rh : &vt->mart_rh) = vt->fast_hash ?
			psprintf("(%s)", rowh.data) :
			psprintf("pg_catalog.md5((ROW(%s))::pg_catalog.text)", row.data);
		*(live ? &vt->live_inner : &vt->mart_inner) =
			psprintf("SELECT pg_catalog.md5((ROW(%s))::pg_catalog.text) AS kh, "
					 "(%s)::pg_catalog.text AS rh, "
					 "(pg_catalog.json_object(ARRAY[%s]::pg_catalog.text[], ARRAY[%s]::pg_catalog.text[]))::pg_catalog.text AS kj, "
					 "%s AS kb "
					 "FROM %s",
					 key.data, live ? vt->live_rh : vt->mart_rh, names.data, vals.data,
					 live ? vt->live_kb : vt->mart_kb,
					 live ? vt->live_rel : vt->mart_rel);
	}
	return vt;
}

/*
 * Compute the buckets of one level on both sides and return those that
 * differ.  modulus: this level's; parents (of parent_modulus) restrict the
 * rows to theirs, all rows when NULL.  The first level also counts the
 * rows of each side.
 */
static VerifyBucket *
verify_level(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
			 int64 modulus, int64 parent_modulus, VerifyBucket *parents,
			 int nparents, int *ndiff)
{
	char	   *sums;
	int			nf;				/* fields of a bucket: b, count, sums */
	char	   *sql[2];
	char	  **lval[4];		/* the source's rows: b, count, sums */
	int			lmax = 64;
	char	   *err;
	char	   *buf;
	int			len;
	SPITupleTable *mt;
	uint64		nm;
	int			nl;
	int			i = 0;
	uint64		j = 0;
	VerifyBucket *diff;
	int			maxdiff;
	int			n = 0;
	int64		live_rows = 0;
	MemoryContext rowcxt;
	MemoryContext outer;
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		args[1];

	/* one 64-bit sum of the row hashes, or two of 60 bits from md5 */
	if (vt->fast_hash)
	{
		sums = "pg_catalog.sum(y.rh)";
		nf = 3;
	}
	else
	{
		sums = psprintf("pg_catalog.sum(%s), pg_catalog.sum(%s)", hex60("y.rh", 1), hex60("y.rh", 16));
		nf = 4;
	}

	/*
	 * The parents' filter is inside the scan, so only their rows are hashed
	 * and summed.  OFFSET 0 keeps the row's hash a column computed once.
	 */
	for (int side = 0; side < 2; side++)
	{
		bool		live = (side == 0);
		const char *kb = live ? vt->live_kb : vt->mart_kb;
		char	   *filter = "";

		if (parents != NULL)
			filter = psprintf(" WHERE (%s OPERATOR(pg_catalog.%%) " INT64_FORMAT ") OPERATOR(pg_catalog.=) ANY (%s)",
							  kb, parent_modulus,
							  live ? "(SELECT pg_catalog.current_setting('" VERIFY_BUCKETS_GUC "')::pg_catalog.int8[])" : "$1");
		sql[side] = psprintf("SELECT y.kb OPERATOR(pg_catalog.%%) " INT64_FORMAT " AS b, pg_catalog.count(*), %s "
							 "FROM (SELECT %s AS kb, %s AS rh FROM %s%s OFFSET 0) y "
							 "GROUP BY 1 ORDER BY 1",
							 modulus, sums, kb, live ? vt->live_rh : vt->mart_rh,
							 live ? vt->live_rel : vt->mart_rel, filter);
	}

	/*
	 * A COPY takes no parameters: the source reads the parents from a
	 * setting of its transaction, given as a parameter (see NOTES).
	 */
	if (parents != NULL)
	{
		const char *params[1] = {bucket_array_text(parents, nparents)};

		PQclear(transport_exec(snap, "SELECT pg_catalog.set_config('" VERIFY_BUCKETS_GUC "', $1, true)",
							   1, params, PGRES_TUPLES_OK, "receive the buckets to compare"));
	}

	/* the source computes its buckets while the datamart computes its own */
	transport_send(snap, psprintf("COPY (%s) TO STDOUT", sql[0]), "compute the verification's hashes");
	if (parents != NULL)
	{
		args[0] = bucket_array_datum(parents, nparents);
		if (SPI_execute_with_args(sql[1], 1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not compute the datamart's hashes");
	}
	else if (SPI_execute(sql[1], false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not compute the datamart's hashes");
	mt = SPI_tuptable;
	nm = SPI_processed;
	err = transport_copy_await(snap, "compute the verification's hashes");
	if (err != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the source refused to compute the verification's hashes of table \"%s.%s\": %s",
						vt->t->source_schema, vt->t->source_table, err),
				 errhint("Check that the role the source's connection uses may still read the table, then verify again.")));
	for (int k = 0; k < nf; k++)
		lval[k] = palloc(sizeof(char *) * lmax);
	nl = 0;
	/* rows of integers, tab-separated: nothing to unescape */
	while ((len = transport_copy_next(snap, &buf, "send the verification's hashes")) >= 0)
	{
		char	   *line = pnstrdup(buf, len);
		char	   *f = line;

		if (nl == lmax)
		{
			lmax *= 2;
			for (int k = 0; k < nf; k++)
				lval[k] = repalloc(lval[k], sizeof(char *) * lmax);
		}
		for (int k = 0; k < nf; k++)
		{
			char	   *end = strpbrk(f, "\t\n");

			if (end != NULL)
				*end = '\0';
			lval[k][nl] = f;
			f = end ? end + 1 : f + strlen(f);
		}
		nl++;
		CHECK_FOR_INTERRUPTS();
	}

	maxdiff = nl + (int) nm;
	diff = palloc(sizeof(VerifyBucket) * Max(maxdiff, 1));
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice verify bucket",
								   ALLOCSET_DEFAULT_SIZES);
	outer = MemoryContextSwitchTo(rowcxt);
	while (i < nl || j < nm)
	{
		int64		bl = i < nl ? strtoll(lval[0][i], NULL, 10) : PG_INT64_MAX;
		int64		bm = j < nm ? strtoll(SPI_getvalue(mt->vals[j], mt->tupdesc, 1), NULL, 10) : PG_INT64_MAX;
		int64		cl = 0;
		int64		cm = 0;
		bool		differs;

		CHECK_FOR_INTERRUPTS();
		if (bl <= bm)
			cl = strtoll(lval[1][i], NULL, 10);
		if (bm <= bl)
			cm = strtoll(SPI_getvalue(mt->vals[j], mt->tupdesc, 2), NULL, 10);
		differs = (bl != bm || cl != cm);
		for (int k = 2; k < nf && !differs; k++)
			differs = strcmp(lval[k][i], SPI_getvalue(mt->vals[j], mt->tupdesc, k + 1)) != 0;
		vt->ranges++;
		live_rows += cl;
		if (parents == NULL)
		{
			vt->rows_live += cl;
			vt->rows_mart += cm;
		}
		if (differs)
		{
			diff[n].bucket = Min(bl, bm);
			diff[n].rows = Max(cl, cm);
			n++;
		}
		if (bl <= bm)
			i++;
		if (bm <= bl)
			j++;
		MemoryContextReset(rowcxt);
	}
	MemoryContextSwitchTo(outer);
	MemoryContextDelete(rowcxt);
	for (int k = 0; k < nl; k++)
		pfree(lval[0][k]);
	for (int k = 0; k < nf; k++)
		pfree(lval[k]);
	SPI_freetuptable(mt);
	verify_throttle(th, parents == NULL ? live_rows : vt->rows_live);
	*ndiff = n;
	return diff;
}

/* Fetch the next batch of a leaf stream. */
static void
leaf_fetch(LeafStream *s)
{
	if (s->live)
	{
		if (s->res)
			PQclear(s->res);
		s->res = NULL;
		s->res = transport_exec(s->sc, psprintf("FETCH FORWARD %d FROM sluice_verify", VERIFY_FETCH),
								0, NULL, PGRES_TUPLES_OK, "read the differing rows");
		s->n = PQntuples(s->res);
		verify_throttle(s->throttle, (int64) s->n);
	}
	else
	{
		if (s->tt)
			SPI_freetuptable(s->tt);
		SPI_cursor_fetch(s->portal, true, VERIFY_FETCH);
		s->tt = SPI_tuptable;
		s->n = SPI_processed;
	}
	s->pos = 0;
	s->done = (s->n == 0);
}

/* Column col (0: key hash, 1: row hash, 2: key as JSON) of the current row. */
static char *
leaf_value(LeafStream *s, int col)
{
	if (s->live)
		return PQgetvalue(s->res, (int) s->pos, col);
	return SPI_getvalue(s->tt->vals[s->pos], s->tt->tupdesc, col + 1);
}

static void
leaf_next(LeafStream *s)
{
	if (++s->pos >= s->n)
		leaf_fetch(s);
}

/* Write the pending difference, if any. */
static void
flush_difference(VerifyTable *vt, int max_keys)
{
	if (vt->pend_kind == NULL)
		return;
	if (vt->nkeys < max_keys)
	{
		if (vt->nkeys > 0)
			appendStringInfoString(&vt->keys, ", ");
		sluice_json_begin(&vt->keys);
		sluice_json_string(&vt->keys, "kind", vt->pend_kind);
		sluice_json_raw(&vt->keys, "key", vt->pend_key);
		if (vt->keyless)
			sluice_json_raw(&vt->keys, "count", psprintf(INT64_FORMAT, vt->pend_count));
		sluice_json_end(&vt->keys);
		vt->nkeys++;
	}
	pfree(vt->pend_rh);
	pfree(vt->pend_key);
	vt->pend_kind = NULL;
}

/*
 * Count a difference; equal rows of a keyless table missing or extra
 * several times make one entry with their count.
 */
static void
add_difference(VerifyTable *vt, const char *kind, const char *kh, const char *rh,
			   const char *key, int max_keys)
{
	MemoryContext old = MemoryContextSwitchTo(vt->cxt);

	vt->differences++;
	if (vt->repair)
	{
		vt->batch_kh[vt->nbatch] = pstrdup(kh);
		vt->batch_kind[vt->nbatch] = kind;
		if (++vt->nbatch == REPAIR_BATCH)
			repair_flush(vt);
	}
	if (vt->pend_kind != NULL && vt->keyless &&
		strcmp(vt->pend_kind, kind) == 0 && strcmp(vt->pend_rh, rh) == 0)
		vt->pend_count++;
	else
	{
		flush_difference(vt, max_keys);
		vt->pend_kind = kind;
		vt->pend_rh = pstrdup(rh);
		vt->pend_key = pstrdup(key);
		vt->pend_count = 1;
	}
	MemoryContextSwitchTo(old);
}

/*
 * List the rows of the differing buckets on both sides, in key-hash order,
 * and merge them: missing (only on the source), extra (only here),
 * different (another row hash).
 */
static void
verify_leaf(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th,
			int64 modulus, VerifyBucket *buckets, int nbuckets, int max_keys)
{
	char	   *sql[2];
	LeafStream	l;
	LeafStream	m;
	SPIPlanPtr	plan;
	MemoryContext rowcxt;
	MemoryContext outer;
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		args[1];
	const char *params[1];

	for (int side = 0; side < 2; side++)
		sql[side] = psprintf("SELECT y.kh, y.rh, y.kj FROM (%s) y "
							 "WHERE (y.kb OPERATOR(pg_catalog.%%) " INT64_FORMAT ") OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[]) "
							 "ORDER BY y.kh COLLATE pg_catalog.\"C\", y.rh COLLATE pg_catalog.\"C\"",
							 side == 0 ? vt->live_inner : vt->mart_inner, modulus);

	memset(&l, 0, sizeof(l));
	memset(&m, 0, sizeof(m));
	l.live = true;
	l.sc = snap;
	l.throttle = th;
	params[0] = bucket_array_text(buckets, nbuckets);
	PQclear(transport_exec(snap, psprintf("DECLARE sluice_verify NO SCROLL CURSOR FOR %s", sql[0]),
						   1, params, PGRES_COMMAND_OK, "read the differing rows"));
	plan = SPI_prepare(sql[1], 1, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the datamart's rows: %s", SPI_result_code_string(SPI_result));
	args[0] = bucket_array_datum(buckets, nbuckets);
	m.portal = SPI_cursor_open(NULL, plan, args, NULL, false);
	leaf_fetch(&l);
	leaf_fetch(&m);

	/* what one row of the merge allocates (SPI_getvalue) goes at its end */
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_sluice verify row",
								   ALLOCSET_DEFAULT_SIZES);
	outer = MemoryContextSwitchTo(rowcxt);
	while (!l.done || !m.done)
	{
		int			c;

		MemoryContextReset(rowcxt);
		CHECK_FOR_INTERRUPTS();
		if (l.done)
			c = 1;
		else if (m.done)
			c = -1;
		else
		{
			c = strcmp(leaf_value(&l, 0), leaf_value(&m, 0));
			/* a keyless table's key is its row: equal rows match one to one */
			if (c == 0 && vt->keyless)
				c = strcmp(leaf_value(&l, 1), leaf_value(&m, 1));
		}
		if (c == 0)
		{
			if (strcmp(leaf_value(&l, 1), leaf_value(&m, 1)) != 0)
				add_difference(vt, "different", leaf_value(&l, 0), leaf_value(&l, 1), leaf_value(&l, 2), max_keys);
			leaf_next(&l);
			leaf_next(&m);
		}
		else if (c < 0)
		{
			add_difference(vt, "missing", leaf_value(&l, 0), leaf_value(&l, 1), leaf_value(&l, 2), max_keys);
			leaf_next(&l);
		}
		else
		{
			add_difference(vt, "extra", leaf_value(&m, 0), leaf_value(&m, 1), leaf_value(&m, 2), max_keys);
			leaf_next(&m);
		}
	}
	MemoryContextSwitchTo(outer);
	MemoryContextDelete(rowcxt);
	flush_difference(vt, max_keys);
	if (vt->repair)
		repair_flush(vt);
	if (l.res)
		PQclear(l.res);
	if (m.tt)
		SPI_freetuptable(m.tt);
	SPI_cursor_close(m.portal);
	SPI_freeplan(plan);
	transport_command(snap, "CLOSE sluice_verify", "close the cursor of differing rows");
}

/*
 * Compare one table: buckets, bisection of those that differ, then their
 * rows (see NOTES).
 */
void
verify_compare(VerifyTable *vt, SluiceConn *snap, VerifyThrottle *th, int max_keys)
{
	HeapTuple	tup;
	double		reltuples = 0;
	int64		modulus;
	VerifyBucket *diff;
	int			ndiff;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(vt->relid));
	if (HeapTupleIsValid(tup))
	{
		reltuples = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
		ReleaseSysCache(tup);
	}
	/* about a thousand rows a bucket, 16 to 4096 buckets */
	modulus = (int64) Max(reltuples, 0) / 1024;
	modulus = Min(Max(modulus, 16), 4096);

	diff = verify_level(vt, snap, th, modulus, 0, NULL, 0, &ndiff);
	while (ndiff > 0)
	{
		int64		maxrows = 0;
		int64		total = 0;
		int64		fanout;
		int			k;

		for (k = 0; k < ndiff; k++)
		{
			maxrows = Max(maxrows, diff[k].rows);
			total += diff[k].rows;
		}
		fanout = Min((maxrows + VERIFY_LEAF_ROWS - 1) / VERIFY_LEAF_ROWS,
					 VERIFY_MAX_BUCKETS / ndiff);
		/* few rows in all: listing them costs less than another level's scan */
		if (total <= VERIFY_LEAF_TOTAL || maxrows <= VERIFY_LEAF_ROWS || fanout < 2 ||
			modulus > (INT64CONST(1) << 59) / fanout)
		{
			verify_leaf(vt, snap, th, modulus, diff, ndiff, max_keys);
			break;
		}
		diff = verify_level(vt, snap, th, modulus * fanout, modulus, diff, ndiff, &ndiff);
		modulus *= fanout;
	}
}
