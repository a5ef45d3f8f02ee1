/*-------------------------------------------------------------------------
 *
 * apply_internal.h
 *	  Declarations shared by the apply family: apply.c, relation.c,
 *	  contract.c, quarantine.c, version.c, snapshot.c, and httpapply.c (an
 *	  HTTP pipeline's rows, written through the same handlers).
 *
 * NOTES
 *	  Why a private header.  The family shares the state of one batch
 *	  (ApplyState) and of each relation in it (ApplyRel), whose fields are
 *	  executor types (ResultRelInfo, EPQState, IndexScanDesc, SnapshotData,
 *	  ExprState) and pgoutput's (LogicalRepRelation).  pg_sluice.h is included
 *	  by every module, payload.c too, next to jansson.h, whose json_* names
 *	  clash with PostgreSQL's: it stays light, and only the family sees this.
 *	  Nothing outside the family may call what is declared here; the family's
 *	  entry point for everyone else is apply_stream (pg_sluice.h).
 *
 *	  Build note.  The Makefile names pg_sluice.h as every object's
 *	  dependency, not this file: after changing it, rebuild from clean (make
 *	  clean).
 *
 *	  Rejected.  Opaque handles with accessor functions: the family reads and
 *	  writes these fields per row, in the hottest loop of pg_sluice.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/apply_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef APPLY_INTERNAL_H
#define APPLY_INTERNAL_H

#include "executor/executor.h"
#include "replication/logicalproto.h"
#include "utils/hsearch.h"
#include "utils/snapshot.h"

#include "pg_sluice.h"

/* snapshot.c's view of a table being copied in chunks */
typedef struct SnapshotFilter SnapshotFilter;

/* A source relation as announced by a RELATION message, and its target. */
typedef struct ApplyRel
{
	LogicalRepRelId remoteid;	/* hash key: the source's relation OID */
	bool		mapped;			/* one of the pipeline's tables? */
	char	   *nspname;		/* source schema */
	char	   *relname;		/* source table */
	int			remote_natts;
	int		   *attmap;			/* source column i -> target attno - 1 */
	char	  **remote_attnames;
	Relation	rel;			/* target table, open for the whole refresh */
	ResultRelInfo *rri;
	Oid			keyidx;			/* primary key index of the target, or 0 */
	/* lookups by keyidx (see relmap_find_row): set up once per relation */
	Relation	keyrel;			/* keyidx, as opened in rri */
	int			nscankeys;
	ScanKeyData *scankeys;		/* equality on each key column; arguments
								 * set per lookup */
	AttrNumber *scanatts;		/* target attno of each key column */
	bool	   *iskey;			/* per target attribute: a key column? */
	IndexScanDesc keyscan;		/* opened at the first lookup */
	SnapshotData dirty;			/* its snapshot: sees in-progress writes */
	/* stepping lookups of ascending keys (relation.c, step_find) */
	bool		stepok;			/* a one-column unique immediate key */
	IndexScanDesc stepscan;		/* key >= value, returning index tuples */
	ScanKeyData stepkey;		/* its argument copied in poscxt */
	MemoryContext poscxt;
	bool		keybyval;		/* the key column's type (stepok) */
	int16		keylen;
	FmgrInfo   *steporder;		/* the key's btree comparison */
	Oid			stepcoll;
	bool		stepcur;		/* stepscan stands on the last row found */
	Datum		lastkey;		/* the key looked up last, if lastvalid */
	bool		lastvalid;
	MemoryContext lastcxt;		/* lastkey's copy, when passed by reference */
	int			stepgaps;		/* positions in a row that found nothing */
	int			stepcool;		/* lookups left before positioning again */
	bool		matchall;		/* the key is deferred and the source sends
								 * whole old rows: match every column too */
	FmgrInfo   *eqfuncs;		/* matchall: per target attribute, equality
								 * (fn_oid 0: compare the bytes) */
	bool	   *fed;			/* matchall: per target attribute, fed by a
								 * source column */
	TupleTableSlot *newslot;	/* virtual: the tuple to write */
	TupleTableSlot *searchslot; /* virtual: the key to look for */
	TupleTableSlot *localslot;	/* the target's current row */
	FmgrInfo   *infuncs;		/* per target attribute: text input */
	FmgrInfo   *recvfuncs;		/* per target attribute: binary input */
	bool	   *rawts;			/* per target attribute: a timestamp(tz)
								 * without typmod (see relmap_fill_slot) */
	Oid		   *ioparams;
	/* source columns whose type differs from their datamart column's */
	bool	   *convert;		/* per source column: parse as the sent type */
	FmgrInfo   *conv_in;		/* per source column: the sent type's input */
	FmgrInfo   *conv_recv;		/* ... and binary input */
	Oid		   *conv_ioparam;
	int32	   *conv_typmod;
	FmgrInfo   *conv_out;		/* ... and output (then the target's input) */
	bool	   *conv_same;		/* the datum needs no conversion (timestamp
								 * read as timestamptz in UTC) */
	/* datamart columns fed by no source column get their default on insert */
	int			ndefaults;
	AttrNumber *defatts;
	ExprState **defexprs;
	EPQState	epqstate;
	SluiceTable *table;			/* its contract and expectations */
	List	   *rowchecks;		/* RowCheck *: compiled row expectations */
	ExprState  *allchecks;		/* all of them ANDed, when more than one */
	bool		has_quarantine; /* some row expectation quarantines */
	int			nkeys;			/* key columns, for failure samples */
	AttrNumber *keyatts;
	/* versions (sluice.keep_history) */
	TableCount *counts;			/* rows written to it in this run */
	ModelInput *models;			/* models read it: rows written go to model.c */
	AttrNumber	verattno;		/* _sluice_version in the target, or 0 */
	Relation	histrel;		/* <target_schema>_history.<table> */
	ResultRelInfo *histrri;
	TupleTableSlot *histslot;
	int		   *histmap;		/* history attno - 1 -> target attno - 1, -1:
								 * _sluice_superseded */
	/* quarantine ledger (see quarantine.c) */
	HTAB	   *held;			/* key text -> HeldEntry: open entries, or
								 * NULL when the table has none and no
								 * quarantine expectation */
	int			nledgerkeys;
	AttrNumber *ledgerkeys;		/* attributes of the ledger key, in jsonb
								 * key order */
	FmgrInfo   *ledgerout;		/* their output functions */
	/* insert runs (see flush_inserts) */
	bool		multi_ok;		/* no triggers or generated columns */
	bool		update_ok;		/* multi_ok, and every index plain enough for
								 * write_update's own index entries */
	int			hinted;			/* updates whose new index entries were
								 * hinted unchanged in this batch
								 * (write_update) */
	TupleTableSlot **bufslots;	/* rows waiting for table_multi_insert */
	int			nbuffered;
	Size		bufbytes;
	/* a table being copied in chunks (snapshot.c), or NULL */
	SnapshotFilter *copyfilter;
} ApplyRel;

/* An open quarantine entry: the latest state of a key the datamart lacks. */
typedef struct HeldEntry
{
	char	   *key;			/* hash key: the key as jsonb text */
	int64		quarantine_id;
} HeldEntry;

/* A row expectation compiled for one relation and batch. */
typedef struct RowCheck
{
	SluiceExpectation *e;
	ExprState  *state;
	ExpectResult *result;		/* where this run's counts go */
} RowCheck;

typedef struct ApplyState
{
	SluicePipeline *pipe;
	EState	   *estate;
	HTAB	   *rels;			/* LogicalRepRelId -> ApplyRel */
	MemoryContext cxt;			/* lives for the refresh */
	MemoryContext msgcxt;		/* reset after every message */
	MemoryContext replaycxt;	/* reset after every spooled message */
	StringInfoData spoolbuf;	/* a spooled message being applied */
	WalStream  *ws;				/* walsender transport, or NULL */
	XLogRecPtr	start_lsn;		/* origin position: skip what is before */
	bool		in_xact;
	bool		skipping;
	LogicalRepBeginData begin;
	ApplyStats *stats;
	bool		binary;			/* pgoutput sends binary values */
	ApplyRel   *pending;		/* relation with buffered inserts, or NULL */
	List	   *deferred_keys;	/* RangeVar *: deferred keys written to, checked
								 * before the batch ends (see apply_stream) */
	List	   *remote_types;	/* RemoteType *: TYPE messages, for names */
	int32	   *typmods;		/* typmods of the RELATION being handled */
	/* error context */
	char		action;
	ApplyRel   *cur_rel;
	int			cur_att;		/* source column being converted, or -1 */
} ApplyState;

/* A source type announced by a TYPE message (types not built in). */
typedef struct RemoteType
{
	Oid			remoteid;
	char	   *name;			/* schema-qualified, quoted */
} RemoteType;

/* insert runs: at most this many rows, or bytes, wait for one multi-insert */
#define APPLY_MAX_BUFFERED			1000
#define APPLY_MAX_BUFFERED_BYTES	(64 * 1024)

/* apply.c: a batch's state, and rows from a source without a change stream */
extern void apply_begin(ApplyState *st, SluicePipeline *pipe, XLogRecPtr start_lsn,
						ApplyStats *stats, ErrorContextCallback *errcb);
extern bool apply_upsert(ApplyState *st, ApplyRel *ar, LogicalRepTupleData *newtup);
extern void apply_finish(ApplyState *st, ErrorContextCallback *errcb);
/* apply.c: a RELATION message of an earlier batch (walsender transport) */
extern bool apply_recall_relation(ApplyState *st, LogicalRepRelId relid);

/* relation.c: a source relation mapped to its target */
extern void relmap_open(ApplyState *st, LogicalRepRelation *lr, int32 *typmods);
extern void relmap_close(ApplyRel *ar);
extern ApplyRel *relmap_get(ApplyState *st, LogicalRepRelId relid);
extern void relmap_fill_slot(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot,
							 LogicalRepTupleData *tup, TupleTableSlot *base);
extern void relmap_fill_defaults(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot);
extern void relmap_init_key_lookups(ApplyState *st, ApplyRel *ar);
extern void relmap_end_key_lookups(ApplyRel *ar);
extern bool relmap_find_row(ApplyState *st, ApplyRel *ar);

/* contract.c: the contract checked, drift handled, the contract evolved */
extern char **contract_check(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr);
extern bool identity_relation(ApplyState *st, SluiceTable *t, LogicalRepRelation *lr);

/* quarantine.c: row expectations and the quarantine ledger */
extern void quarantine_open(ApplyState *st, ApplyRel *ar, SluiceTable *t);
extern bool quarantine_check_row(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot,
								 const char *change, TupleTableSlot *oldslot);
extern char *quarantine_key(ApplyRel *ar, TupleTableSlot *slot);
extern int64 quarantine_find(ApplyRel *ar, const char *key);
extern void quarantine_supersede(ApplyState *st, ApplyRel *ar, const char *key,
								 const char *how, int64 by);
extern void quarantine_truncated(ApplyState *st, ApplyRel *ar);
extern TupleTableSlot *quarantine_held_row(ApplyState *st, ApplyRel *ar, int64 quarantine_id);
extern void quarantine_missing_row(ApplyState *st, ApplyRel *ar, const char *change);

/* snapshot.c: the stream kept off the keys no chunk has copied yet */
extern SnapshotFilter *snapshot_filter_open(ApplyState *st, ApplyRel *ar);
extern bool snapshot_keep(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot);
extern void snapshot_truncated(ApplyState *st, ApplyRel *ar);

/* version.c: row versions and the history of superseded rows */
extern void version_open(ApplyState *st, ApplyRel *ar, SluiceTable *t);
extern void version_close(ApplyRel *ar);
extern void version_stamp(ApplyState *st, ApplyRel *ar, TupleTableSlot *slot);
extern void version_save(ApplyState *st, ApplyRel *ar, TupleTableSlot *old);
extern void version_truncated(ApplyState *st, ApplyRel *ar);
extern Oid	version_history_relid(ApplyState *st, SluiceTable *t);

#endif							/* APPLY_INTERNAL_H */
