/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  libpq connections from a datamart backend to a source server.
 *
 * NOTES
 *	  What this file owns.  Every libpq connection pg_sluice opens and every
 *	  wait on one.  Every wait on the network goes through WaitLatchOrSocket,
 *	  so a query cancel, statement_timeout, SIGTERM or postmaster death
 *	  interrupts it promptly.  Connections are remembered in a small registry
 *	  and closed at the end of the transaction whatever happens: an ERROR
 *	  thrown in the middle of a COPY leaves no socket and no busy query on the
 *	  source (a busy query gets a cancel request first, so the source stops
 *	  decoding and the slot is free for the next batch at once).  PGresults
 *	  are tracked by a libpq event procedure and cleared at the end of the
 *	  transaction, so none leaks past an ERROR.
 *
 *	  What it never does.  Let a password out: messages from libpq are
 *	  scrubbed of it before they reach errdetail, and connection strings shown
 *	  to users are masked.  Know what a pipeline or a pgoutput message is: the
 *	  decoding query and its framing are stream.c's.
 *
 *	  CopyBoth (the walsender transport, walstream.c) uses the same waits:
 *	  transport_copy_try_next never blocks, transport_wait_readable waits on
 *	  the socket and the latch, transport_copy_end ends the stream politely so
 *	  the walsender frees the slot before the connection closes.  A
 *	  connection's owner_ref, when set, is cleared when it closes, so a
 *	  worker knows whether an abort took it.  transport_over_unix_socket
 *	  tells whether a connection reaches its server over a Unix socket
 *	  (a refresh's choice of transport, refresh.c).
 *
 *	  Rejected.  PQexec and blocking PQgetCopyData: nothing interrupts them
 *	  until the source answers.  Closing connections in a PG_CATCH at every
 *	  call site: the registry closes them at the end of the transaction
 *	  wherever the ERROR came from, and the call sites stay straight-line
 *	  code.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/transport.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "access/xact.h"
#include "libpq-events.h"
#include "mb/pg_wchar.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"

/* every open connection; grows (a pool worker holds two per pipeline it serves) */
static SluiceConn **open_conns = NULL;
static int	max_open_conns = 0;
static bool xact_callback_registered = false;

/*
 * Every PGresult our connections create, until it is PQclear()ed: libpq
 * mallocs them, so one an ERROR skips past (a caller raising between
 * transport_exec and PQclear, an interrupt while get_result holds one)
 * would stay allocated for the life of the process.  A libpq event
 * procedure registered on each connection keeps this list: results are
 * added when created and removed when cleared, by whoever clears them.  No
 * result outlives the transaction that made it, so whatever is still here
 * at its end is cleared then.
 */
static PGresult **live_results = NULL;
static int	nlive_results = 0;
static int	maxlive_results = 0;

static void transport_xact_callback(XactEvent event, void *arg);
static int	transport_result_event(PGEventId id, void *info, void *arg);
static void clear_live_results(void);
static void forget_conn(SluiceConn *sc);
static void free_conn(SluiceConn *sc);
static SluiceConn *connect_source(const char *source, const char *conninfo,
								  bool replication, bool missing_ok);
static void wait_socket(SluiceConn *sc, int io_flag, long timeout_ms,
						const char *what);
static char *scrub(SluiceConn *sc, const char *msg);
static void report_failure(SluiceConn *sc, PGresult *res, const char *what)
			pg_attribute_noreturn();

/*
 * libpq event procedure: track the results of our connections (see
 * live_results).  Runs inside libpq: it must not raise an ERROR, so an
 * allocation failure only leaves the result untracked.
 */
static int
transport_result_event(PGEventId id, void *info, void *arg)
{
	int			i;

	if (id == PGEVT_RESULTCREATE)
	{
		PGresult   *res = ((PGEventResultCreate *) info)->result;

		if (nlive_results == maxlive_results)
		{
			int			n = maxlive_results ? maxlive_results * 2 : 16;
			PGresult  **a = MemoryContextAllocExtended(TopMemoryContext, sizeof(PGresult *) * n,
												   MCXT_ALLOC_NO_OOM);

			if (a == NULL)
				return 1;
			if (live_results)
			{
				memcpy(a, live_results, sizeof(PGresult *) * nlive_results);
				pfree(live_results);
			}
			live_results = a;
			maxlive_results = n;
		}
		live_results[nlive_results++] = res;
	}
	else if (id == PGEVT_RESULTDESTROY)
	{
		PGresult   *res = ((PGEventResultDestroy *) info)->result;

		for (i = nlive_results - 1; i >= 0; i--)
		{
			if (live_results[i] == res)
			{
				live_results[i] = live_results[--nlive_results];
				break;
			}
		}
	}
	return 1;
}

/* Clear the results nobody cleared (each PQclear removes its entry). */
static void
clear_live_results(void)
{
	while (nlive_results > 0)
	{
		int			before = nlive_results;

		PQclear(live_results[nlive_results - 1]);
		if (nlive_results == before)
			nlive_results--;	/* not ours after all: forget it */
	}
}

/*
 * At the end of every transaction close what is still open: on commit this
 * is a no-op (callers close), on abort it is the only cleanup.  Results
 * still allocated are cleared either way (see live_results).
 */
static void
transport_xact_callback(XactEvent event, void *arg)
{
	int			i;

	if (event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_PREPARE)
		return;

	for (i = 0; i < max_open_conns; i++)
	{
		SluiceConn *sc = open_conns[i];

		if (sc == NULL)
			continue;
		/*
		 * A worker's connection outlives its committed batches; a parked one
		 * (a pool worker's, of a pipeline other than the batch's: the batch
		 * never touched it) outlives an aborted one too.
		 */
		if (sc->persistent && (sc->parked || event == XACT_EVENT_COMMIT ||
							   event == XACT_EVENT_PARALLEL_COMMIT))
			continue;
		open_conns[i] = NULL;
		if (sc->conn != NULL)
		{
			/*
			 * A query still running on the source (an interrupted refresh)
			 * would keep decoding and keep the slot busy: cancel it.  This is
			 * a short loopback-or-LAN round trip; errors are ignored.
			 */
			if (PQtransactionStatus(sc->conn) == PQTRANS_ACTIVE)
			{
				PGcancel   *cancel = PQgetCancel(sc->conn);
				char		errbuf[256];

				if (cancel != NULL)
				{
					(void) PQcancel(cancel, errbuf, sizeof(errbuf));
					PQfreeCancel(cancel);
				}
			}
			PQfinish(sc->conn);
			sc->conn = NULL;
		}
		free_conn(sc);
	}
	clear_live_results();
}

static void
remember_conn(SluiceConn *sc)
{
	int			i;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(transport_xact_callback, NULL);
		xact_callback_registered = true;
	}
	for (i = 0; i < max_open_conns; i++)
	{
		if (open_conns[i] == NULL)
		{
			open_conns[i] = sc;
			return;
		}
	}
	{
		int			n = Max(8, max_open_conns * 2);
		SluiceConn **a = MemoryContextAllocZero(TopMemoryContext, sizeof(SluiceConn *) * n);

		if (open_conns != NULL)
		{
			memcpy(a, open_conns, sizeof(SluiceConn *) * max_open_conns);
			pfree(open_conns);
		}
		open_conns = a;
		open_conns[max_open_conns] = sc;
		max_open_conns = n;
	}
}

static void
forget_conn(SluiceConn *sc)
{
	int			i;

	for (i = 0; i < max_open_conns; i++)
		if (open_conns[i] == sc)
			open_conns[i] = NULL;
}

/*
 * SluiceConn structs live in TopMemoryContext: an aborting transaction frees
 * the caller's contexts before our transaction callback runs.
 */
static void
free_conn(SluiceConn *sc)
{
	if (sc->owner_ref != NULL && *sc->owner_ref == sc)
		*sc->owner_ref = NULL;
	if (sc->copybuf)
		PQfreemem(sc->copybuf);
	if (sc->password)
	{
		memset(sc->password, 0, strlen(sc->password));
		pfree(sc->password);
	}
	pfree(sc->source);
	pfree(sc);
}

/*
 * Replace every occurrence of the password in a libpq message.
 */
static char *
scrub(SluiceConn *sc, const char *msg)
{
	StringInfoData buf;
	const char *p = msg;
	size_t		plen;

	if (msg == NULL)
		return pstrdup("");
	if (sc == NULL || sc->password == NULL || sc->password[0] == '\0')
		return pchomp(msg);

	plen = strlen(sc->password);
	initStringInfo(&buf);
	while (*p)
	{
		if (strncmp(p, sc->password, plen) == 0)
		{
			appendStringInfoString(&buf, "********");
			p += plen;
		}
		else
			appendStringInfoChar(&buf, *p++);
	}
	return pchomp(buf.data);
}

/*
 * Validate a connection string without ever echoing it: libpq's own parse
 * errors quote pieces of the string, which may be a password.
 */
void
transport_check_conninfo(const char *conninfo)
{
	PQconninfoOption *opts;
	char	   *err = NULL;

	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		if (err)
			PQfreemem(err);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid connection string"),
				 errdetail("The connection string could not be parsed; it is not shown because it may contain a password."),
				 errhint("Use key=value pairs such as \"host=live.example.com dbname=app user=sluice\" or a postgresql:// URI.")));
	}
	PQconninfoFree(opts);
}

/*
 * Return the connection string with any password replaced by ********.
 */
char *
transport_mask_conninfo(const char *conninfo)
{
	PQconninfoOption *opts;
	PQconninfoOption *o;
	char	   *err = NULL;
	StringInfoData buf;

	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		if (err)
			PQfreemem(err);
		return pstrdup("(invalid connection string)");
	}

	initStringInfo(&buf);
	for (o = opts; o->keyword != NULL; o++)
	{
		const char *v;

		if (o->val == NULL || o->val[0] == '\0')
			continue;
		v = (strcmp(o->keyword, "password") == 0) ? "********" : o->val;
		if (buf.len > 0)
			appendStringInfoChar(&buf, ' ');
		appendStringInfo(&buf, "%s='", o->keyword);
		for (; *v; v++)
		{
			if (*v == '\'' || *v == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *v);
		}
		appendStringInfoChar(&buf, '\'');
	}
	PQconninfoFree(opts);
	return buf.data;
}

/*
 * Wait until the socket is ready, the latch is set (then check for
 * interrupts), or timeout_ms passes (0: no timeout).
 */
static void
wait_socket(SluiceConn *sc, int io_flag, long timeout_ms, const char *what)
{
	int			rc;
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | io_flag;

	if (timeout_ms > 0)
		events |= WL_TIMEOUT;

	relmap_step_release();
	rc = WaitLatchOrSocket(MyLatch, events, PQsocket(sc->conn),
						   timeout_ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if ((rc & WL_TIMEOUT) && !(rc & io_flag))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("timed out while waiting for source \"%s\" to %s",
						sc->source, what),
				 errhint("Check that the source is reachable, or raise pg_sluice.connect_timeout.")));
}

/*
 * Open a connection to the source: a normal one, or with replication=database
 * for the walsender commands (slot creation with an exported snapshot).
 *
 * The connection uses an empty search_path, so every name it prints is
 * schema-qualified and nothing the source's users define can capture our
 * queries.
 */
SluiceConn *
transport_connect(const char *source, const char *conninfo, bool replication)
{
	return connect_source(source, conninfo, replication, false);
}

/*
 * The same, for a connection we can do without (a refresh's second
 * decoder): when the source refuses it (max_connections, say), log why and
 * return NULL.
 */
SluiceConn *
transport_try_connect(const char *source, const char *conninfo)
{
	return connect_source(source, conninfo, false, true);
}

static SluiceConn *
connect_source(const char *source, const char *conninfo, bool replication,
			   bool missing_ok)
{
	SluiceConn *sc;
	const char *keys[6];
	const char *vals[6];
	int			n = 0;
	PostgresPollingStatusType status;
	TimestampTz deadline;
	PQconninfoOption *opts;
	PQconninfoOption *o;

	transport_check_conninfo(conninfo);

	sc = MemoryContextAllocZero(TopMemoryContext, sizeof(SluiceConn));
	sc->source = MemoryContextStrdup(TopMemoryContext, source);

	/* Remember the password, only to scrub it from messages. */
	opts = PQconninfoParse(conninfo, NULL);
	for (o = opts; o && o->keyword != NULL; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && o->val[0])
			sc->password = MemoryContextStrdup(TopMemoryContext, o->val);
	if (opts)
		PQconninfoFree(opts);

	keys[n] = "dbname";
	vals[n++] = conninfo;
	if (replication)
	{
		keys[n] = "replication";
		vals[n++] = "database";
	}
	keys[n] = "fallback_application_name";
	vals[n++] = "pg_sluice";
	/* text arrives in this database's encoding, whatever the source's */
	keys[n] = "client_encoding";
	vals[n++] = GetDatabaseEncodingName();
	keys[n] = "options";
	vals[n++] = "-c search_path= -c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 "
		"-c synchronous_commit=local";
	keys[n] = NULL;
	vals[n] = NULL;

	PG_TRY();
	{
		remember_conn(sc);
	}
	PG_CATCH();
	{
		free_conn(sc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	sc->conn = PQconnectStartParams(keys, vals, 1);
	if (sc->conn == NULL ||
		!PQregisterEventProc(sc->conn, transport_result_event, "pg_sluice results", NULL))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while connecting to source \"%s\"", source)));

	deadline = GetCurrentTimestamp() +
		(TimestampTz) sluice_connect_timeout * USECS_PER_SEC;
	status = PQstatus(sc->conn) == CONNECTION_BAD ?
		PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
	while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
	{
		long		remaining;

		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not connect to source \"%s\"", source),
					 errdetail("No answer within %d seconds.", sluice_connect_timeout),
					 errhint("Check that the source is reachable, or raise pg_sluice.connect_timeout.")));
		wait_socket(sc, status == PGRES_POLLING_READING ?
					WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE,
					Max(remaining, 1), "accept the connection");
		status = PQconnectPoll(sc->conn);
	}

	if ((status == PGRES_POLLING_FAILED || PQstatus(sc->conn) != CONNECTION_OK) && missing_ok)
	{
		ereport(LOG,
				(errmsg("could not open a second connection to source \"%s\"", source),
				 errdetail_internal("%s", scrub(sc, PQerrorMessage(sc->conn)))));
		transport_close(sc);
		return NULL;
	}
	if (status == PGRES_POLLING_FAILED || PQstatus(sc->conn) != CONNECTION_OK)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to source \"%s\"", source),
				 errdetail_internal("%s", scrub(sc, PQerrorMessage(sc->conn))),
				 errhint("Check the source's connection string with sluice.alter_source(); the password is never shown.")));

	if (PQsetnonblocking(sc->conn, 1) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not set up connection to source \"%s\"", source)));
	return sc;
}

/* An LSN as the source prints it. */
XLogRecPtr
transport_parse_lsn(const char *s)
{
	return DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(s)));
}

/*
 * Close a connection now (the transaction callback would do it at the end).
 */
void
transport_close(SluiceConn *sc)
{
	if (sc == NULL)
		return;
	forget_conn(sc);
	if (sc->conn)
		PQfinish(sc->conn);
	sc->conn = NULL;
	free_conn(sc);
}

/*
 * Close a connection whose query may still be running on the source: cancel
 * it first, so the source stops sending and releases the slot at once.
 */
void
transport_abandon(SluiceConn *sc)
{
	if (sc == NULL)
		return;
	if (sc->conn != NULL && PQtransactionStatus(sc->conn) == PQTRANS_ACTIVE)
	{
		PGcancel   *cancel = PQgetCancel(sc->conn);
		char		errbuf[256];

		if (cancel != NULL)
		{
			(void) PQcancel(cancel, errbuf, sizeof(errbuf));
			PQfreeCancel(cancel);
		}
	}
	transport_close(sc);
}

static void
report_failure(SluiceConn *sc, PGresult *res, const char *what)
{
	const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
	int			code = ERRCODE_CONNECTION_FAILURE;
	char	   *msg;

	if (sqlstate != NULL && strlen(sqlstate) == 5)
		code = MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2],
							 sqlstate[3], sqlstate[4]);
	msg = scrub(sc, primary ? primary : PQerrorMessage(sc->conn));
	if (res)
		PQclear(res);

	if (PQstatus(sc->conn) == CONNECTION_BAD)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("lost connection to source \"%s\" while trying to %s",
						sc->source, what),
				 errdetail_internal("%s", msg),
				 errhint("Nothing was applied; run the refresh again when the source is back.")));

	ereport(ERROR,
			(errcode(code),
			 errmsg("source \"%s\" refused to %s: %s", sc->source, what, msg),
			 detail ? errdetail_internal("%s", scrub(sc, detail)) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/*
 * Send a query without blocking and wait for its last result, interruptibly.
 */
static PGresult *
get_result(SluiceConn *sc, const char *what, bool stop_at_copy)
{
	PGresult   *last = NULL;

	for (;;)
	{
		PGresult   *res;

		while (PQisBusy(sc->conn))
		{
			wait_socket(sc, WL_SOCKET_READABLE, 0, what);
			if (PQconsumeInput(sc->conn) == 0)
				report_failure(sc, last, what);
		}
		res = PQgetResult(sc->conn);
		if (res == NULL)
			break;
		if (last)
			PQclear(last);
		last = res;
		if (stop_at_copy &&
			(PQresultStatus(res) == PGRES_COPY_OUT ||
			 PQresultStatus(res) == PGRES_COPY_BOTH))
			break;
		if (PQstatus(sc->conn) == CONNECTION_BAD)
			break;
	}
	return last;
}

static void
send_query(SluiceConn *sc, const char *sql, int nparams,
		   const char *const *params, const char *what)
{
	int			ok;

	if (nparams > 0)
		ok = PQsendQueryParams(sc->conn, sql, nparams, NULL, params,
							   NULL, NULL, 0);
	else
		ok = PQsendQuery(sc->conn, sql);
	if (!ok)
		report_failure(sc, NULL, what);
	/* flush what libpq could not send at once */
	for (;;)
	{
		int			r = PQflush(sc->conn);

		if (r == 0)
			break;
		if (r < 0)
			report_failure(sc, NULL, what);
		wait_socket(sc, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE, 0, what);
		if (PQconsumeInput(sc->conn) == 0)
			report_failure(sc, NULL, what);
	}
}

/*
 * Run one statement on the source and return its result, which must have
 * the expected status (the caller PQclear()s it).  "what" completes the
 * sentence "source X refused to ...".
 */
PGresult *
transport_exec(SluiceConn *sc, const char *sql, int nparams,
			   const char *const *params, ExecStatusType expected,
			   const char *what)
{
	PGresult   *res;

	send_query(sc, sql, nparams, params, what);
	res = get_result(sc, what, false);
	if (res == NULL || PQresultStatus(res) != expected)
		report_failure(sc, res, what);
	return res;
}

/*
 * Run a query whose failure does not matter (only a broken connection
 * raises an error) and return its one value, palloc'd, or NULL when it
 * failed or returned none.
 */
char *
transport_try_value(SluiceConn *sc, const char *sql, const char *what)
{
	PGresult   *res;
	char	   *val = NULL;

	send_query(sc, sql, 0, NULL, what);
	res = get_result(sc, what, false);
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK &&
		PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0))
		val = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (PQstatus(sc->conn) == CONNECTION_BAD)
		report_failure(sc, NULL, what);
	return val;
}

void
transport_command(SluiceConn *sc, const char *sql, const char *what)
{
	PQclear(transport_exec(sc, sql, 0, NULL, PGRES_COMMAND_OK, what));
}

/* The source ended a COPY: read its command's result (an error raises); -1. */
static int
copy_ended(SluiceConn *sc, const char *what)
{
	PGresult   *res = get_result(sc, what, false);

	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		report_failure(sc, res, what);
	PQclear(res);
	return -1;
}

/* Send a command the source answers by entering a COPY state (want). */
static void
start_copy(SluiceConn *sc, const char *sql, ExecStatusType want, const char *what)
{
	PGresult   *res;

	send_query(sc, sql, 0, NULL, what);
	res = get_result(sc, what, true);
	if (res == NULL || PQresultStatus(res) != want)
		report_failure(sc, res, what);
	PQclear(res);
}

/*
 * Start a COPY ... TO STDOUT on the source.
 */
void
transport_copy_start(SluiceConn *sc, const char *sql, const char *what)
{
	start_copy(sc, sql, PGRES_COPY_OUT, what);
}

/*
 * Send a query (several statements, say) without waiting for its results:
 * the source works on it while we do something else.
 */
void
transport_send(SluiceConn *sc, const char *sql, const char *what)
{
	send_query(sc, sql, 0, NULL, what);
}

/*
 * Wait for what transport_send started to reach a COPY TO STDOUT.  Returns
 * NULL when it did, or the source's error message (scrubbed, palloc'd) when
 * a statement before it failed; a broken connection raises an ERROR.
 */
char *
transport_copy_await(SluiceConn *sc, const char *what)
{
	PGresult   *res = get_result(sc, what, true);
	char	   *err;

	if (res != NULL && PQresultStatus(res) == PGRES_COPY_OUT)
	{
		PQclear(res);
		return NULL;
	}
	if (PQstatus(sc->conn) == CONNECTION_BAD)
		report_failure(sc, res, what);
	err = scrub(sc, res ? PQresultErrorMessage(res) : PQerrorMessage(sc->conn));
	PQclear(res);
	return err;
}

/*
 * Return the next row of a COPY TO STDOUT in *buf and its length, or -1
 * once the COPY completed successfully.  The row stays valid until the next
 * call or the connection's close, which free it (also after an ERROR).
 */
int
transport_copy_next(SluiceConn *sc, char **buf, const char *what)
{
	if (sc->copybuf)
	{
		PQfreemem(sc->copybuf);
		sc->copybuf = NULL;
	}
	for (;;)
	{
		int			len = PQgetCopyData(sc->conn, buf, 1);

		if (len > 0)
		{
			sc->copybuf = *buf;
			return len;
		}
		if (len == 0)
		{
			wait_socket(sc, WL_SOCKET_READABLE, 0, what);
			if (PQconsumeInput(sc->conn) == 0)
				report_failure(sc, NULL, what);
			continue;
		}
		if (len == -1)
			return copy_ended(sc, what);
		report_failure(sc, NULL, what);
	}
}


/*
 * Start a command the source answers with CopyBoth (START_REPLICATION on a
 * replication connection): both sides may send CopyData from now on.
 */
void
transport_copy_both_start(SluiceConn *sc, const char *sql, const char *what)
{
	start_copy(sc, sql, PGRES_COPY_BOTH, what);
}

/*
 * The next CopyData message of a CopyBoth (or COPY TO) already received,
 * without waiting: its length with *buf set (valid until the next call or
 * the close), 0 when none has arrived yet, -1 when the source ended the
 * COPY (its command's result is read; an error raises).
 */
int
transport_copy_try_next(SluiceConn *sc, char **buf, const char *what)
{
	int			len;

	if (sc->copybuf)
	{
		PQfreemem(sc->copybuf);
		sc->copybuf = NULL;
	}
	len = PQgetCopyData(sc->conn, buf, 1);
	if (len == 0)
	{
		if (PQconsumeInput(sc->conn) == 0)
			report_failure(sc, NULL, what);
		len = PQgetCopyData(sc->conn, buf, 1);
	}
	if (len > 0)
	{
		sc->copybuf = *buf;
		return len;
	}
	if (len == 0)
		return 0;
	if (len == -1)
		return copy_ended(sc, what);
	report_failure(sc, NULL, what);
}

/*
 * Whether the connection reaches its server over a Unix-domain socket (the
 * source runs on the datamart's host): a refresh's choice of transport
 * depends on it (refresh.c).  False when it cannot tell.
 */
bool
transport_over_unix_socket(SluiceConn *sc)
{
	struct sockaddr_storage addr;
	socklen_t	len = sizeof(addr);
	pgsocket	sock = (sc == NULL || sc->conn == NULL) ? PGINVALID_SOCKET : PQsocket(sc->conn);

	if (sock == PGINVALID_SOCKET || getsockname(sock, (struct sockaddr *) &addr, &len) != 0)
		return false;
	return addr.ss_family == AF_UNIX;
}

/*
 * Wait until the connection's socket has something to read, the latch is
 * set (interrupts are then checked), or timeout_ms passes.  Returns true
 * when the socket is readable.
 */
bool
transport_wait_readable(SluiceConn *sc, long timeout_ms)
{
	int			rc;

	relmap_step_release();
	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | WL_SOCKET_READABLE | WL_TIMEOUT,
						   PQsocket(sc->conn), Max(timeout_ms, 1), PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return (rc & WL_SOCKET_READABLE) != 0;
}

/*
 * Send one CopyData message of a CopyBoth (a standby status update) and
 * flush it, waiting interruptibly when the socket is full.
 */
void
transport_copy_put(SluiceConn *sc, const char *data, int len, const char *what)
{
	if (PQputCopyData(sc->conn, data, len) <= 0)
		report_failure(sc, NULL, what);
	for (;;)
	{
		int			r = PQflush(sc->conn);

		if (r == 0)
			break;
		if (r < 0)
			report_failure(sc, NULL, what);
		wait_socket(sc, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE, 0, what);
		if (PQconsumeInput(sc->conn) == 0)
			report_failure(sc, NULL, what);
	}
}

/*
 * End a CopyBoth politely: CopyDone, then read (and drop) what the source
 * still sends until its command completes, at most timeout_ms.  A walsender
 * releases its slot before it completes the command, so once this returns
 * true the slot is free for the next reader.  Failures only return false:
 * the caller closes the connection either way.
 */
bool
transport_copy_end(SluiceConn *sc, long timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	if (sc == NULL || sc->conn == NULL || PQstatus(sc->conn) != CONNECTION_OK)
		return false;
	if (PQputCopyEnd(sc->conn, NULL) <= 0)
		return false;
	for (;;)
	{
		char	   *buf;
		int			len;
		long		remaining;

		if (PQflush(sc->conn) < 0)
			return false;
		len = PQgetCopyData(sc->conn, &buf, 1);
		if (len > 0)
		{
			PQfreemem(buf);
			continue;
		}
		if (len == -1)
		{
			bool		ok = true;

			for (;;)
			{
				PGresult   *res;

				while (PQisBusy(sc->conn))
				{
					remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
					if (remaining <= 0)
						return false;
					(void) transport_wait_readable(sc, remaining);
					if (PQconsumeInput(sc->conn) == 0)
						return false;
				}
				res = PQgetResult(sc->conn);
				if (res == NULL)
					break;
				if (PQresultStatus(res) != PGRES_COMMAND_OK &&
					PQresultStatus(res) != PGRES_TUPLES_OK)
					ok = false;
				PQclear(res);
			}
			return ok;
		}
		if (len < -1)
			return false;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			return false;
		(void) transport_wait_readable(sc, remaining);
		if (PQconsumeInput(sc->conn) == 0)
			return false;
	}
}
