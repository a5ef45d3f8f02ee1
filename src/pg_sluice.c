/*-------------------------------------------------------------------------
 *
 * pg_sluice.c
 *	  Module magic, settings (GUCs) and trivial SQL-callable helpers.
 *
 * NOTES
 *	  pg_sluice copies tables from a live PostgreSQL server ("source") into
 *	  this server (the "datamart"): a consistent initial copy, then
 *	  incremental changes read from a logical replication slot with the
 *	  built-in pgoutput plugin, applied exactly once.  See README.md and
 *	  pg_sluice.h for the vocabulary, and pg_sluice.h for the files in the
 *	  order data flows through them.
 *
 *	  What this file owns.  _PG_init: the GUCs, and, only when pg_sluice is in
 *	  shared_preload_libraries, pg_sluice.max_workers and continuous mode's
 *	  shared memory and launcher (launcher.c); the GUCs' variables;
 *	  sluice.version() and sluice._mask_conninfo().
 *
 *	  What it never does.  Anything per pipeline: per-pipeline settings are
 *	  catalog columns set through the SQL API, never GUCs.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/pg_sluice.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "pg_sluice.h"

PG_MODULE_MAGIC;

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "unknown"
#endif

int			sluice_connect_timeout = 30;
int			sluice_source_decoding_work_mem = 0;	/* kB; 0: the source's own */
int			sluice_split_decoding_min = 65536;	/* kB of WAL; 0: never */
int			sluice_refresh_walsender_min = -1;	/* kB of WAL; -1: never */
int			sluice_max_workers = 8;
int			sluice_max_pipelines = 128;
int			sluice_naptime = 200;	/* ms */
int			sluice_batch_size = 100000; /* pgoutput messages */
int			sluice_batch_time = 1000;	/* ms */
int			sluice_max_retained_wal = 1024; /* MB */
int			sluice_http_timeout = 5000; /* ms */
int			sluice_http_max_attempts = 8;
int			sluice_http_retry_base = 1000;	/* ms */
int			sluice_http_max_page = 65536;	/* kB */
int			sluice_quarantine_alert = 0;	/* rows */
int			sluice_worker_transport = SLUICE_TRANSPORT_WALSENDER;
int			sluice_refresh_transport = SLUICE_TRANSPORT_AUTO;

static const struct config_enum_entry transport_options[] = {
	{"walsender", SLUICE_TRANSPORT_WALSENDER, false},
	{"sql", SLUICE_TRANSPORT_SQL, false},
	{NULL, 0, false}
};
static const struct config_enum_entry refresh_transport_options[] = {
	{"auto", SLUICE_TRANSPORT_AUTO, false},
	{"walsender", SLUICE_TRANSPORT_WALSENDER, false},
	{"sql", SLUICE_TRANSPORT_SQL, false},
	{NULL, 0, false}
};
int			sluice_model_max_keys = 10000;	/* groups per table and batch */

void		_PG_init(void);

PG_FUNCTION_INFO_V1(sluice_version);
PG_FUNCTION_INFO_V1(sluice_mask_conninfo);

/* 0 (the source's own), or what logical_decoding_work_mem accepts there */
static bool
check_source_decoding_work_mem(int *newval, void **extra, GucSource source)
{
	if (*newval != 0 && *newval < 64)
	{
		GUC_check_errdetail("It must be 0 (the source's own logical_decoding_work_mem) or at least 64kB.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	DefineCustomIntVariable("pg_sluice.connect_timeout",
							"Sets how long pg_sluice waits for a source to accept a connection.",
							"Between 1 second and 1 hour. A refresh or pipeline creation fails with a clear error past it.",
							&sluice_connect_timeout,
							30, 1, 3600,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.source_decoding_work_mem",
							"Sets logical_decoding_work_mem for pg_sluice's sessions on the source.",
							"Memory the source may use to decode a transaction before streaming it (or, for the spool, "
							"spilling it to its disk): 64kB to 2GB, or 0 (the default) for the source's own "
							"logical_decoding_work_mem, as a native subscription uses (a refresh takes 1MB less, "
							"what its SQL decoding session holds beyond a walsender). "
							"Superuser only: it spends the live server's memory, which no datamart role may claim.",
							&sluice_source_decoding_work_mem,
							0, 0, 2 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							check_source_decoding_work_mem, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.split_decoding_min",
							"Sets the backlog of source WAL from which a refresh decodes it in two parts at once.",
							"A refresh whose backlog is at least this large decodes its second half on a second "
							"connection, from a temporary copy of the slot, while it applies the first half. "
							"Costs a second connection and replication slot on the source while it runs. 0 turns it off.",
							&sluice_split_decoding_min,
							65536, 0, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.refresh_walsender_min",
							"Sets the backlog of source WAL from which pg_sluice.refresh_transport = auto reads it over the walsender.",
							"Only for a source reached over TCP; smaller backlogs, and any backlog over a Unix socket, "
							"are read through the SQL decoding functions. 0 takes the walsender for every backlog over TCP; "
							"-1 (the default) never: the SQL decoding functions were faster for every backlog measured.",
							&sluice_refresh_walsender_min,
							-1, -1, INT_MAX,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.naptime",
							"Sets how long a caught-up worker waits before looking at the source again (pg_sluice.worker_transport = sql).",
							"Lower values cut the commit-to-visible lag and cost one small query on the source each time. "
							"Workers on the walsender transport wait on its socket instead.",
							&sluice_naptime,
							200, 10, 60000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("pg_sluice.worker_transport",
							 "Sets how continuous workers read their slot.",
							 "walsender: a replication connection streams changes as the source decodes them "
							 "and the worker waits on its socket; sql: the worker polls the SQL decoding "
							 "functions every pg_sluice.naptime.",
							 &sluice_worker_transport,
							 SLUICE_TRANSPORT_WALSENDER, transport_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("pg_sluice.refresh_transport",
							 "Sets how sluice.refresh() reads its slot.",
							 "walsender: a replication connection streams the backlog and the slot moves "
							 "when the refresh commits; sql: the SQL decoding functions (a big backlog in two "
							 "parts at once), the slot moving after the commit by a short-lived worker; "
							 "auto: chooses by the size of the backlog (see README, Performance).",
							 &sluice_refresh_transport,
							 SLUICE_TRANSPORT_AUTO, refresh_transport_options,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.batch_size",
							"Sets how many changes a worker applies per local transaction.",
							"Counted in pgoutput messages; a batch always holds whole source transactions, "
							"so one larger source transaction still commits as one batch.",
							&sluice_batch_size,
							100000, 100, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.batch_time",
							"Sets how long a worker applies before committing a batch.",
							"The batch commits at the first source commit past this time.",
							&sluice_batch_time,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.max_retained_wal",
							"Sets the WAL a pipeline's slot may keep on the source before pg_sluice warns.",
							"Workers log a WARNING past it and sluice.status flags it; 0 disables the check.",
							&sluice_max_retained_wal,
							1024, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.http_timeout",
							"Sets how long the notifier waits for an HTTP destination to connect and answer.",
							NULL, &sluice_http_timeout, 5000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.http_max_attempts",
							"Sets how many times an event is posted before it is given up on.",
							NULL, &sluice_http_max_attempts, 8, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.http_retry_base",
							"Sets the first retry delay of a failed delivery; it doubles at each attempt, up to an hour.",
							NULL, &sluice_http_retry_base, 1000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pg_sluice.http_max_page_size",
							"Sets the largest page an HTTP source may answer.",
							"A refresh holds one page at a time while parsing it; a larger page fails the refresh "
							"and nothing is applied.",
							&sluice_http_max_page, 65536, 1, 1048576,
							PGC_USERSET, GUC_UNIT_KB, NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.quarantine_alert_threshold",
							"Sets how many rows a run may quarantine before a quarantine event is sent.",
							NULL, &sluice_quarantine_alert, 0, 0, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("pg_sluice.model_max_keys",
							"Sets how many touched groups a batch keeps per table for incremental models.",
							"Past it the batch rebuilds the models over the table in full (sluice.model_runs says so). "
							"Bounds the memory a batch spends on group keys.",
							&sluice_model_max_keys, 10000, 0, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	spool_init();
	slotwatch_init();
	snapshot_init();

	/* continuous mode: shared memory and the launcher exist only when preloaded */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("pg_sluice.max_workers",
								"Sets the size of the pool of workers that apply continuous pipelines.",
								"The workers share the streaming pipelines among them (count them in "
								"max_worker_processes, plus one for the launcher and one per database's notifier).",
								&sluice_max_workers,
								8, 1, 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("pg_sluice.max_pipelines",
								"Sets how many pipelines can stream continuously at once.",
								"Sizes the shared memory of continuous mode (one slot per streaming pipeline "
								"and per database's notifier).",
								&sluice_max_pipelines,
								128, 1, 100000,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		worker_shmem_init();
	}

	/*
	 * After the last definition: reserving the prefix drops the placeholders
	 * postgresql.conf made, so a setting defined after it (max_workers,
	 * max_pipelines) would silently be its default.
	 */
	MarkGUCPrefixReserved("pg_sluice");

	origin_init();
}

/*
 * sluice.version(): the version of the loaded library.
 */
Datum
sluice_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(SLUICE_VERSION));
}

/*
 * sluice._mask_conninfo(conninfo): the connection string, password masked.
 */
Datum
sluice_mask_conninfo(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(transport_mask_conninfo(conninfo)));
}
