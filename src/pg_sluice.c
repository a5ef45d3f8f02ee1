/*-------------------------------------------------------------------------
 *
 * pg_sluice.c
 *	  Module magic, settings (GUCs) and trivial SQL-callable helpers.
 *
 * pg_sluice copies tables from a live PostgreSQL server ("source") into
 * this server (the "datamart"): a consistent initial copy, then incremental
 * changes read from a logical replication slot with the built-in pgoutput
 * plugin, applied exactly once.  See README.md for the vocabulary.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/pg_sluice.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
int			sluice_source_decoding_work_mem = 65536;	/* kB */

void		_PG_init(void);

PG_FUNCTION_INFO_V1(sluice_version);
PG_FUNCTION_INFO_V1(sluice_mask_conninfo);

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
							"Memory the source may use to decode one refresh before spilling to disk (64kB to 2GB). "
							"Larger values decode large transactions faster and cost memory on the source, not here.",
							&sluice_source_decoding_work_mem,
							65536, 64, 2 * 1024 * 1024,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

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
