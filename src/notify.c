/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  Alerts and lineage over HTTP: webhooks and OpenLineage RunEvents, and
 *	  the notifier that delivers them.
 *
 * NOTES
 *	  What this file owns.  The outbox and its delivery.  Events are written
 *	  to sluice._outbox in the same transaction as what they describe (a pause
 *	  or a worker failure is recorded in the transaction that survives the
 *	  rollback of the failed work).  A notifier per database (notifier_main,
 *	  in a worker slot of its own) delivers them in three short steps, never
 *	  holding locks across network I/O: claim a batch (status 'sending',
 *	  commit), post each with libcurl (timeouts, TLS verification on), record
 *	  the attempt (sent, or pending again with exponential backoff, or failed
 *	  after pg_sluice.http_max_attempts).  Payloads are built with jansson
 *	  (payload.c); webhooks with a secret carry an HMAC-SHA256 signature of
 *	  the body.  Events a failed round left claimed are handed back at the
 *	  next round.
 *
 *	  What it never does.  Make the apply wait on HTTP: apply and refresh only
 *	  insert outbox rows.
 *
 *	  A post waits on curl's sockets and the process latch together
 *	  (http.c's http_perform: libcurl's multi-socket interface driving a
 *	  WaitEventSet): SIGTERM and postmaster death end it at once, whatever
 *	  pg_sluice.http_timeout is.
 *
 *	  Rejected.  Posting from the applying transaction (pg_net's batch loop):
 *	  its locks would be held across the network.  curl_easy_perform: it
 *	  blocks in libcurl's own poll for up to pg_sluice.http_timeout, deaf to
 *	  SIGTERM, so a fast shutdown or pg_terminate_backend waited for a slow
 *	  endpoint.  A progress callback polling for interrupts: libcurl calls it
 *	  about once a second when the connection is idle, a wait still.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/notify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hmac.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/wait_event.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_sluice.h"
#include "http_internal.h"

PG_FUNCTION_INFO_V1(sluice_check_url);
PG_FUNCTION_INFO_V1(sluice_conninfo_part);

#define BATCH 20

/* ---------- SQL helpers ---------- */

/*
 * sluice._check_url(url): libcurl's normalised URL; only http and https.
 */
Datum
sluice_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CURLU	   *h = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *norm = NULL;
	char	   *host = NULL;
	text	   *result;

	if (h == NULL)
		elog(ERROR, "out of memory");
	rc = curl_url_set(h, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
	{
		curl_url_cleanup(h);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid URL"),
				 errdetail("%s (the URL is not repeated: it may hold a secret).", curl_url_strerror(rc)),
				 errhint("Give an absolute http:// or https:// URL.")));
	}
	if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		(strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
	{
		char	   *s = scheme ? pstrdup(scheme) : pstrdup("?");

		if (scheme)
			curl_free(scheme);
		curl_url_cleanup(h);
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("unsupported URL scheme \"%s\"", s),
				 errhint("Events are posted over http or https.")));
	}
	if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || host == NULL || host[0] == '\0')
	{
		curl_free(scheme);
		curl_url_cleanup(h);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("URL has no host"),
				 errhint("Give an absolute http:// or https:// URL.")));
	}
	if (curl_url_get(h, CURLUPART_URL, &norm, 0) != CURLUE_OK || norm == NULL)
	{
		curl_free(host);
		curl_free(scheme);
		curl_url_cleanup(h);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid URL \"%s\"", url)));
	}
	result = cstring_to_text(norm);
	curl_free(norm);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(h);
	PG_RETURN_TEXT_P(result);
}

/*
 * sluice._conninfo_part(conninfo, keyword): one value of a connection
 * string (NULL when absent); for OpenLineage dataset namespaces.
 */
Datum
sluice_conninfo_part(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	PQconninfoOption *o;
	text	   *result = NULL;

	if (strcmp(key, "password") == 0)
		PG_RETURN_NULL();
	for (o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, key) == 0 && o->val && o->val[0])
			result = cstring_to_text(o->val);
	if (opts)
		PQconninfoFree(opts);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}

/* Queue an event for every destination that wants it (caller's transaction, SPI connected). */
void
outbox_emit(const char *pipeline, const char *event, const char *json)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	SluiceUser	save;

	args[0] = pipeline ? CStringGetTextDatum(pipeline) : (Datum) 0;
	nulls[0] = pipeline ? ' ' : 'n';
	args[1] = CStringGetTextDatum(event);
	args[2] = CStringGetTextDatum(json);
	/* destinations are the extension owner's (they hold secrets) */
	sluice_become_catalog(&save);
	if (sluice_spi_kept("SELECT sluice._emit($1, $2, $3::jsonb)", 3, types, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not queue event %s", event);
	sluice_restore_user(&save);
}

/* Queue the events of a recorded run (started, completed or failed, quality). */
void
outbox_emit_run(int64 run_id, int64 quarantined)
{
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		args[2];
	SluiceUser	save;

	args[0] = Int64GetDatum(run_id);
	args[1] = Int64GetDatum(quarantined);
	sluice_become_catalog(&save);
	if (sluice_spi_kept("SELECT sluice._emit_run($1, $2)", 2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not queue the run's events");
	sluice_restore_user(&save);
}

/* ---------- delivery ---------- */

typedef struct Claimed
{
	int64		id;
	char	   *destination;
	char	   *pipeline;
	char	   *event;
	char	   *body;
	int			attempts;
	char	   *created_at;
	char	   *kind;
	char	   *url;
	char	   *headers;
	char	   *secret;
	char	   *format;
	char	   *namespace;
} Claimed;

static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

static void
hmac_hex(const char *key, const char *data, char *out)
{
	static ResourceOwner owner = NULL;
	ResourceOwner save = CurrentResourceOwner;
	pg_hmac_ctx *ctx;
	uint8		digest[32];
	int			i;

	/* the notifier posts outside transactions: the HMAC needs an owner */
	if (owner == NULL)
		owner = ResourceOwnerCreate(NULL, "pg_sluice notifier");
	CurrentResourceOwner = owner;
	ctx = pg_hmac_create(PG_SHA256);

	if (ctx == NULL ||
		pg_hmac_init(ctx, (const uint8 *) key, strlen(key)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) data, strlen(data)) < 0 ||
		pg_hmac_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute HMAC-SHA256");
	pg_hmac_free(ctx);
	CurrentResourceOwner = save;
	for (i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", digest[i]);
	out[64] = '\0';
}

/* Append a header line; curl_slist_append returns NULL (list intact) when out of memory. */
static struct curl_slist *
append_header(struct curl_slist *hdrs, const char *line)
{
	struct curl_slist *l = curl_slist_append(hdrs, line);

	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return l;
}

/* What post_event allocates outside PostgreSQL's memory contexts. */
typedef struct PostState
{
	CURL	   *curl;			/* libcurl easy handle */
	struct curl_slist *hdrs;	/* its header list */
	char	   *text;			/* the payload (jansson, malloc'd) */
	char	  **lines;			/* extra header lines (malloc'd) */
	long		status;			/* HTTP status, 0 if none */
} PostState;

/* Build and send the request; everything it allocates is recorded in ps. */
static void
perform_post(Claimed *c, char **error, PostState *ps)
{
	char		errbuf[CURL_ERROR_SIZE];
	CURLcode	rc;

	ps->text = payload_build(c->kind, c->event, c->pipeline, c->id, c->body,
							 c->namespace ? c->namespace : "pg_sluice", c->created_at,
							 c->format && strcmp(c->format, "slack") == 0);
	ps->curl = curl_easy_init();
	if (ps->curl == NULL)
	{
		*error = pstrdup("could not initialise libcurl");
		return;
	}
	ps->hdrs = append_header(ps->hdrs, "Content-Type: application/json");
	ps->hdrs = append_header(ps->hdrs, psprintf("User-Agent: pg_sluice/%s", SLUICE_VERSION));
	ps->hdrs = append_header(ps->hdrs, psprintf("X-Sluice-Event: %s", c->event));
	ps->hdrs = append_header(ps->hdrs, psprintf("X-Sluice-Event-Id: " INT64_FORMAT, c->id));
	if (c->secret && strcmp(c->kind, "webhook") == 0)
	{
		char		sig[65];

		hmac_hex(c->secret, ps->text, sig);
		ps->hdrs = append_header(ps->hdrs, psprintf("X-Sluice-Signature: sha256=%s", sig));
	}
	if (c->secret && strcmp(c->kind, "openlineage") == 0)
		ps->hdrs = append_header(ps->hdrs, psprintf("Authorization: Bearer %s", c->secret));
	if (c->headers)
	{
		int			k;

		ps->lines = payload_header_lines(c->headers);
		for (k = 0; ps->lines && ps->lines[k]; k++)
			ps->hdrs = append_header(ps->hdrs, ps->lines[k]);
	}
	errbuf[0] = '\0';
	curl_easy_setopt(ps->curl, CURLOPT_URL, c->url);
	curl_easy_setopt(ps->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(ps->curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(ps->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(ps->curl, CURLOPT_HTTPHEADER, ps->hdrs);
	curl_easy_setopt(ps->curl, CURLOPT_POSTFIELDS, ps->text);
	curl_easy_setopt(ps->curl, CURLOPT_POSTFIELDSIZE, (long) strlen(ps->text));
	curl_easy_setopt(ps->curl, CURLOPT_TIMEOUT_MS, (long) sluice_http_timeout);
	curl_easy_setopt(ps->curl, CURLOPT_CONNECTTIMEOUT_MS, (long) sluice_http_timeout);
	curl_easy_setopt(ps->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(ps->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(ps->curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(ps->curl, CURLOPT_WRITEFUNCTION, discard_body);
	rc = http_perform(ps->curl);
	if (rc != CURLE_OK)
		*error = pstrdup(errbuf[0] ? errbuf : curl_easy_strerror(rc));
	else
	{
		curl_easy_getinfo(ps->curl, CURLINFO_RESPONSE_CODE, &ps->status);
		if (ps->status < 200 || ps->status >= 300)
			*error = psprintf("HTTP status %ld", ps->status);
	}
}

/* Free what perform_post allocated. */
static void
release_post(PostState *ps)
{
	if (ps->hdrs != NULL)
		curl_slist_free_all(ps->hdrs);
	if (ps->curl != NULL)
		curl_easy_cleanup(ps->curl);
	if (ps->text != NULL)
		free(ps->text);
	if (ps->lines != NULL)
		payload_free_lines(ps->lines);
	ps->hdrs = NULL;
	ps->curl = NULL;
	ps->text = NULL;
	ps->lines = NULL;
}

/*
 * Post one event.  Returns the HTTP status (0 if none) and sets *error on
 * failure.  The libcurl handle, its header list and the payload are
 * malloc'd by their libraries: they are released on every way out,
 * including an ERROR.
 */
static long
post_event(Claimed *c, char **error)
{
	PostState	ps;

	memset(&ps, 0, sizeof(ps));
	PG_TRY();
	{
		perform_post(c, error, &ps);
	}
	PG_CATCH();
	{
		release_post(&ps);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_post(&ps);
	return ps.status;
}

/*
 * One round of the notifier: claim due events, post them, record.  Returns
 * the number of events handled.  Runs outside any transaction.  With
 * reclaim, events a failed round left claimed ('sending') are pending
 * again first: the caller asks for it at start and after every error.
 */
int
notifier_run_once(bool reclaim)
{
	List	   *claimed = NIL;
	ListCell   *lc;
	MemoryContext cxt = CurrentMemoryContext;
	uint64		i;

	/* 1. claim */
	worker_xact_begin();
	if (reclaim &&
		SPI_execute("UPDATE sluice._outbox SET status = 'pending' WHERE status = 'sending'",
					false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not hand back claimed events");
	if (SPI_execute(psprintf("WITH c AS (UPDATE sluice._outbox o SET status = 'sending', attempts = attempts + 1 "
							 "  WHERE event_id IN (SELECT event_id FROM sluice._outbox WHERE status = 'pending' "
							 "    AND next_attempt_at <= pg_catalog.clock_timestamp() ORDER BY event_id "
							 "    LIMIT %d FOR UPDATE SKIP LOCKED) "
							 "  RETURNING o.*) "
							 "SELECT c.event_id, c.destination, c.pipeline, c.event, c.body::text, c.attempts, "
							 "       pg_catalog.to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
							 "       d.kind, d.url, d.headers::text, d.secret, d.format, d.namespace "
							 "  FROM c JOIN sluice._destination d ON d.name = c.destination ORDER BY c.event_id", BATCH),
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not claim events");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		Claimed    *c = palloc0(sizeof(Claimed));
		char	   *v;

#define GET(col) ((v = SPI_getvalue(tup, desc, col)) ? pstrdup(v) : NULL)
		c->id = strtoll(SPI_getvalue(tup, desc, 1), NULL, 10);
		c->destination = GET(2);
		c->pipeline = GET(3);
		c->event = GET(4);
		c->body = GET(5);
		c->attempts = atoi(SPI_getvalue(tup, desc, 6));
		c->created_at = GET(7);
		c->kind = GET(8);
		c->url = GET(9);
		c->headers = GET(10);
		c->secret = GET(11);
		c->format = GET(12);
		c->namespace = GET(13);
#undef GET
		claimed = lappend(claimed, c);
		MemoryContextSwitchTo(old);
	}
	worker_xact_commit();
	MemoryContextSwitchTo(cxt);

	/* 2. send, 3. record, one event at a time */
	foreach(lc, claimed)
	{
		Claimed    *c = lfirst(lc);
		char	   *error = NULL;
		TimestampTz t0 = GetCurrentTimestamp();
		long		status;
		Oid			types[6] = {INT8OID, INT4OID, TIMESTAMPTZOID, INT4OID, TEXTOID, INT4OID};
		Datum		args[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
		long		backoff;

		CHECK_FOR_INTERRUPTS();
		pgstat_report_activity(STATE_RUNNING, "pg_sluice: posting an event");
		status = post_event(c, &error);
		pgstat_report_activity(STATE_IDLE, NULL);

		backoff = sluice_http_retry_base;
		for (i = 1; i < (uint64) c->attempts && backoff < 3600 * 1000L; i++)
			backoff *= 2;
		backoff = Min(backoff, 3600 * 1000L);

		args[0] = Int64GetDatum(c->id);
		args[1] = Int32GetDatum(c->attempts);
		args[2] = TimestampTzGetDatum(t0);
		args[3] = Int32GetDatum((int32) status);
		nulls[3] = status ? ' ' : 'n';
		args[4] = error ? CStringGetTextDatum(error) : (Datum) 0;
		nulls[4] = error ? ' ' : 'n';
		args[5] = Int32GetDatum((int32) backoff);

		worker_xact_begin();
		if (SPI_execute_with_args("INSERT INTO sluice._delivery VALUES ($1, $2, $3, pg_catalog.clock_timestamp() - $3, $4, $5)",
								  6, types, args, nulls, false, 0) != SPI_OK_INSERT ||
			SPI_execute_with_args(psprintf("UPDATE sluice._outbox SET "
										   " status = CASE WHEN $5 IS NULL THEN 'sent' WHEN $2 >= %d THEN 'failed' ELSE 'pending' END, "
										   " sent_at = CASE WHEN $5 IS NULL THEN pg_catalog.clock_timestamp() END, "
										   " last_error = $5, "
										   " next_attempt_at = pg_catalog.clock_timestamp() + $6 * interval '1 millisecond' "
										   " WHERE event_id = $1", sluice_http_max_attempts),
								  6, types, args, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record a delivery");
		worker_xact_commit();
		MemoryContextSwitchTo(cxt);
	}
	return list_length(claimed);
}

/* ---------- the notifier's loop ---------- */

/*
 * The notifier's loop, in the worker the launcher started for this
 * database's notifier slot (worker.c): a round of deliveries, then a nap
 * when there was nothing to send, until the launcher no longer wants it.
 * cxt: the worker's context, reset after every round.
 */
void
notifier_main(MemoryContext cxt)
{
	/*
	 * Events claimed ('sending') by a round that failed are handed back
	 * ('pending') by the next round: at start (a previous notifier died)
	 * and after every error.
	 */
	volatile bool reclaim = true;

	pgstat_report_appname("pg_sluice notifier");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	while (worker_still_wanted())
	{
		int			n = 0;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			n = notifier_run_once(reclaim);
			reclaim = false;
		}
		PG_CATCH();
		{
			HOLD_INTERRUPTS();
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			RESUME_INTERRUPTS();
			reclaim = true;
			n = 0;
		}
		PG_END_TRY();
		MemoryContextReset(cxt);
		pgstat_report_stat(false);
		if (n == 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(sluice_naptime, 200), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
