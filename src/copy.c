/*-------------------------------------------------------------------------
 *
 * copy.c
 *	  Initial copy of one source table into its datamart table.
 *
 * NOTES
 *	  What this file owns.  The source connection already runs a REPEATABLE
 *	  READ transaction on the snapshot exported by the slot's creation
 *	  (pipeline.c), so every table is copied as of the slot's consistent
 *	  point.  Rows stream from the source's COPY TO STDOUT straight into the
 *	  local COPY FROM machinery (BeginCopyFrom with a read callback), which
 *	  batches them through table_multi_insert: memory does not grow with the
 *	  table.  Binary when every column's binary form is the same on both
 *	  sides, text otherwise.  A long copy says how far it is, a NOTICE every
 *	  million rows, counted by COPY FROM itself (pg_stat_progress_copy).
 *
 *	  What it never does.  Create the table, its key or its catalog rows
 *	  (pipeline.c), or record the run.
 *
 *	  Rejected.  Inserting the rows one by one through the executor, or SPI:
 *	  COPY FROM's multi-insert buffers are what makes the copy as fast as
 *	  pg_dump | psql, as PostgreSQL's own tablesync does.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/copy.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "commands/copy.h"
#include "commands/progress.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "pg_sluice.h"

/* State of the COPY being read; the read callback has no argument. */
static SluiceConn *copy_conn = NULL;
static char *copy_buf = NULL;	/* current row, owned by copy_conn */
static int	copy_len = 0;
static int	copy_off = 0;
static bool copy_done = false;
static const char *copy_progress = NULL;	/* prefix of the progress notices */
static int64 copy_next_notice = 0;

/* A progress notice every this many rows of a long copy. */
#define COPY_NOTICE_ROWS 1000000

/*
 * copy_data_source_cb: hand COPY FROM at least minread and at most maxread
 * bytes, fewer only at the end of data.
 */
static int
copy_read_cb(void *outbuf, int minread, int maxread)
{
	int			bytesread = 0;

	/*
	 * A long copy says how far it is: COPY FROM counts the rows it has
	 * stored in this backend's progress (pg_stat_progress_copy).
	 */
	if (copy_progress != NULL && MyBEEntry != NULL &&
		MyBEEntry->st_progress_param[PROGRESS_COPY_TUPLES_PROCESSED] >= copy_next_notice)
	{
		ereport(NOTICE,
				(errmsg("%s: " INT64_FORMAT " rows copied so far",
						copy_progress, MyBEEntry->st_progress_param[PROGRESS_COPY_TUPLES_PROCESSED])));
		copy_next_notice += COPY_NOTICE_ROWS;
	}

	while (bytesread < maxread && !copy_done)
	{
		int			avail;

		if (copy_buf == NULL || copy_off >= copy_len)
		{
			copy_buf = NULL;
			/* return what we have rather than block, once minread is met */
			if (bytesread >= minread && bytesread > 0)
				break;
			copy_len = transport_copy_next(copy_conn, &copy_buf, "send the initial copy");
			copy_off = 0;
			if (copy_len < 0)
			{
				copy_buf = NULL;
				copy_done = true;
				break;
			}
		}
		avail = Min(copy_len - copy_off, maxread - bytesread);
		memcpy((char *) outbuf + bytesread, copy_buf + copy_off, avail);
		copy_off += avail;
		bytesread += avail;
	}
	return bytesread;
}

/*
 * Copy one table.  columns is a list of String column names, the same on
 * both sides.  Returns the number of rows copied.
 *
 * partitioned: the source table is a partitioned table, which COPY TO
 * refuses; COPY (SELECT ...) reads every partition's rows instead.
 *
 * where: NULL for the whole table, else a condition on the source table's
 * columns (a chunk's key range, snapshot.c, its values quoted literals):
 * COPY (SELECT ... WHERE ...) then reads only those rows.
 *
 * src_columns: NIL when the source's column names are columns, else the
 * source column feeding each of columns, in the same order (a contract
 * whose columns were renamed with sluice.map_column).
 *
 * progress: NULL, or what a NOTICE says every COPY_NOTICE_ROWS rows copied
 * (create_pipeline's one-snapshot copy, which may last minutes).
 *
 * binary: every column has the same type on both sides (built-in types,
 * enums read as text), so COPY's binary format can be used.  It costs the
 * source no output functions and us no input parsing: about 40% less time
 * than text for the benchmark's table.  Text inside it is converted like
 * pgoutput's binary values: the source sends it in the connection's
 * client_encoding (this database's), and text receive functions here convert
 * from this session's client_encoding, so that must be the database's too.
 * Otherwise text format, converted to this database's encoding.
 */
int64
copy_table(SluiceConn *sc, const char *src_schema, const char *src_table,
		   bool partitioned, List *columns, Oid target_relid, bool binary,
		   const char *where, List *src_columns, const char *progress)
{
	StringInfoData sql;
	ListCell   *lc;
	Relation	rel;
	ParseState *pstate;
	CopyFromState cstate;
	int64		rows;
	bool		first = true;
	volatile bool use_binary;

	if (where != NULL)
		partitioned = true;		/* the COPY (SELECT ...) form */
	initStringInfo(&sql);
	appendStringInfoString(&sql, partitioned ? "COPY (SELECT " : "COPY ");
	if (!partitioned)
		appendStringInfo(&sql, "%s.%s (",
						 quote_identifier(src_schema), quote_identifier(src_table));
	foreach(lc, src_columns != NIL ? src_columns : columns)
	{
		appendStringInfo(&sql, "%s%s", first ? "" : ", ",
						 quote_identifier(strVal(lfirst(lc))));
		first = false;
	}
	if (partitioned)
		appendStringInfo(&sql, " FROM %s.%s",
						 quote_identifier(src_schema), quote_identifier(src_table));
	if (where != NULL)
		appendStringInfo(&sql, " WHERE %s", where);
	/* a copy the PG_TRY below cannot clobber (the argument is assigned) */
	use_binary = binary && pg_get_client_encoding() == GetDatabaseEncoding();
	appendStringInfo(&sql, ") TO STDOUT%s", use_binary ? " (FORMAT binary)" : "");

	transport_copy_start(sc, sql.data, "start the initial copy");

	copy_conn = sc;
	copy_buf = NULL;
	copy_len = copy_off = 0;
	copy_done = false;
	copy_next_notice = COPY_NOTICE_ROWS;

	rel = table_open(target_relid, RowExclusiveLock);
	PG_TRY();
	{
		copy_progress = progress;
		pstate = make_parsestate(NULL);
		(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
											 NULL, false, false);
		/* the source sends this database's encoding (see transport.c) */
		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, copy_read_cb,
							   columns,
							   use_binary ?
							   list_make1(makeDefElem("format", (Node *) makeString("binary"), -1)) :
							   list_make1(makeDefElem("encoding",
													  (Node *) makeString((char *) GetDatabaseEncodingName()),
													  -1)));
		rows = (int64) CopyFrom(cstate);
		EndCopyFrom(cstate);
		/* drain to the end so the source's COPY completes cleanly */
		while (!copy_done)
		{
			char		tmp[8192];

			(void) copy_read_cb(tmp, 1, sizeof(tmp));
		}
	}
	PG_FINALLY();
	{
		copy_buf = NULL;
		copy_conn = NULL;
		copy_progress = NULL;
	}
	PG_END_TRY();
	table_close(rel, NoLock);
	return rows;
}
