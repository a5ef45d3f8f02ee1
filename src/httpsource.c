/*-------------------------------------------------------------------------
 *
 * httpsource.c
 *	  HTTP JSON sources: an endpoint's pages fetched one at a time, rate
 *	  limits honoured, each page parsed into rows of text values.
 *
 * NOTES
 *	  What this file owns.  The conversation with a REST API: the URL of each
 *	  page (the source's base URL, the endpoint's path, the cursor as a query
 *	  parameter), authentication (a bearer token, or basic), the headers,
 *	  If-None-Match with the committed ETag, the next page (a Link: rel="next"
 *	  header, a page number, or a cursor token in the body), retries (429 and
 *	  5xx, after Retry-After when given, else with exponential backoff from
 *	  pg_sluice.http_retry_base, at most pg_sluice.http_max_attempts
 *	  requests), X-RateLimit-Remaining: 0 (the next request waits for
 *	  X-RateLimit-Reset), and the parse of a page into rows of text values
 *	  (HttpPage) by the contract's JSON paths.  Every wait is interruptible:
 *	  transfers go through http.c, pauses through WaitLatch.
 *
 *	  What it never does.  Write a row, touch the catalog, or decide a
 *	  contract: httpapply.c does, through the apply family.  Show a secret:
 *	  URLs in messages pass http_mask_url (no user, no password, query values
 *	  masked); tokens and passwords go to libcurl only.  Follow a redirect
 *	  (the Authorization header would go to wherever it points), or a Link:
 *	  rel="next" to another scheme, host or port than the page's, for the
 *	  same reason: the response chooses it.
 *
 *	  Memory.  A page's body is held while it is parsed, up to
 *	  pg_sluice.http_max_page_size (a bigger page fails the refresh with the
 *	  URL); its
 *	  values live in the caller's per-page context.  jansson's and libcurl's
 *	  allocations are freed on every way out, an ERROR included.
 *
 *	  Rejected.  A wait longer than pg_sluice.http_timeout for a rate limit
 *	  (Retry-After: 3600): the refresh holds its transaction and the
 *	  pipeline's lock; it fails instead, saying when to come back.  Retrying
 *	  a timed-out request: a slow endpoint would cost http_max_attempts times
 *	  the timeout; the next refresh tries again.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/httpsource.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <jansson.h>

#include "catalog/pg_type_d.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"
#include "http_internal.h"

#define HTTP_MAX_PAGES		100000

/* ---------- URLs ---------- */

/*
 * A URL fit for a message: scheme, host, port and path, the query's
 * parameter names with their values masked; never a user or password.
 */
char *
http_mask_url(const char *url)
{
	CURLU	   *h = curl_url();
	char	   *scheme = NULL,
			   *host = NULL,
			   *port = NULL,
			   *path = NULL,
			   *query = NULL;
	StringInfoData buf;

	initStringInfo(&buf);
	if (h == NULL || curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK)
	{
		if (h)
			curl_url_cleanup(h);
		return pstrdup("(an invalid URL)");
	}
	curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(h, CURLUPART_HOST, &host, 0);
	curl_url_get(h, CURLUPART_PORT, &port, 0);
	curl_url_get(h, CURLUPART_PATH, &path, 0);
	curl_url_get(h, CURLUPART_QUERY, &query, 0);
	appendStringInfo(&buf, "%s://%s%s%s%s", scheme ? scheme : "?", host ? host : "?",
					 port ? ":" : "", port ? port : "", path ? path : "/");
	if (query && query[0])
	{
		char	   *q = pstrdup(query);
		char	   *save = NULL;
		char	   *part;
		bool		first = true;

		for (part = strtok_r(q, "&", &save); part; part = strtok_r(NULL, "&", &save))
		{
			char	   *eq = strchr(part, '=');

			if (eq)
				*eq = '\0';
			appendStringInfo(&buf, "%c%s%s", first ? '?' : '&', part, eq ? "=********" : "");
			first = false;
		}
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_url_cleanup(h);
	return buf.data;
}

/* url with "key=value" appended to its query (both URL-encoded). */
static char *
url_with_param(const char *url, const char *key, const char *value)
{
	CURLU	   *h = curl_url();
	char	   *out = NULL;
	char	   *result;
	char	   *kv = psprintf("%s=%s", key, value);

	if (h == NULL)
		elog(ERROR, "out of memory");
	if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_set(h, CURLUPART_QUERY, kv, CURLU_APPENDQUERY | CURLU_URLENCODE) != CURLUE_OK ||
		curl_url_get(h, CURLUPART_URL, &out, 0) != CURLUE_OK)
	{
		curl_url_cleanup(h);
		elog(ERROR, "could not add parameter \"%s\" to URL %s", key, http_mask_url(url));
	}
	result = pstrdup(out);
	curl_free(out);
	curl_url_cleanup(h);
	return result;
}

/* The base URL with the endpoint's path appended to its path. */
static char *
endpoint_url(const char *base, const char *epath)
{
	CURLU	   *h = curl_url();
	char	   *path = NULL;
	char	   *out = NULL;
	char	   *joined;
	char	   *result;
	int			len;

	if (h == NULL)
		elog(ERROR, "out of memory");
	if (curl_url_set(h, CURLUPART_URL, base, 0) != CURLUE_OK ||
		curl_url_get(h, CURLUPART_PATH, &path, 0) != CURLUE_OK)
	{
		curl_url_cleanup(h);
		elog(ERROR, "invalid base URL %s", http_mask_url(base));
	}
	len = strlen(path);
	while (len > 0 && path[len - 1] == '/')
		len--;
	joined = psprintf("%.*s%s", len, path, epath);
	curl_free(path);
	if (curl_url_set(h, CURLUPART_PATH, joined, 0) != CURLUE_OK ||
		curl_url_get(h, CURLUPART_URL, &out, 0) != CURLUE_OK)
	{
		curl_url_cleanup(h);
		elog(ERROR, "invalid endpoint path \"%s\"", epath);
	}
	result = pstrdup(out);
	curl_free(out);
	curl_url_cleanup(h);
	return result;
}

/* A URL's origin, "scheme://host:port" (the port explicit), or NULL. */
static char *
url_origin(const char *url)
{
	CURLU	   *h = curl_url();
	char	   *scheme = NULL,
			   *host = NULL,
			   *port = NULL;
	char	   *result = NULL;

	if (h == NULL)
		elog(ERROR, "out of memory");
	if (curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
		result = psprintf("%s://%s:%s", scheme, host, port);
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(h);
	return result;
}

/*
 * A Link header's rel="next" target, resolved against the page's URL; or
 * NULL.  Only on the page's origin: the request carries the source's
 * token or password, which a link elsewhere would hand to another server
 * (the reason redirects are not followed either).
 */
static char *
link_next(const char *link, const char *page_url)
{
	const char *p = link;

	while (p && *p)
	{
		const char *lt = strchr(p, '<');
		const char *gt = lt ? strchr(lt, '>') : NULL;
		const char *end;
		char	   *params;

		if (gt == NULL)
			return NULL;
		end = strchr(gt, ',');
		params = pnstrdup(gt + 1, end ? end - gt - 1 : strlen(gt + 1));
		if (strstr(params, "rel=\"next\"") || strstr(params, "rel=next"))
		{
			CURLU	   *h = curl_url();
			char	   *target = pnstrdup(lt + 1, gt - lt - 1);
			char	   *out = NULL;
			char	   *result;

			if (h == NULL)
				elog(ERROR, "out of memory");
			if (curl_url_set(h, CURLUPART_URL, page_url, 0) != CURLUE_OK ||
				curl_url_set(h, CURLUPART_URL, target, 0) != CURLUE_OK ||
				curl_url_get(h, CURLUPART_URL, &out, 0) != CURLUE_OK)
			{
				curl_url_cleanup(h);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid Link: rel=\"next\" in the response from %s", http_mask_url(page_url)),
						 errhint("Check the API's pagination; nothing was applied.")));
			}
			result = pstrdup(out);
			curl_free(out);
			curl_url_cleanup(h);
			{
				char	   *here = url_origin(page_url);
				char	   *there = url_origin(result);

				if (here == NULL || there == NULL || pg_strcasecmp(here, there) != 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("the Link: rel=\"next\" in the response from %s points to another server: %s",
									http_mask_url(page_url), http_mask_url(result)),
							 errdetail("The next page would be asked for with the source's credentials; pg_sluice follows pages on the source's own scheme, host and port only. Nothing was applied; the endpoint's cursor did not move."),
							 errhint("Check the API's pagination; if the API pages through another host, declare that host as the source's base_url.")));
			}
			return result;
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

/* ---------- one request ---------- */

typedef struct Response
{
	StringInfoData body;
	bool		too_big;
	long		status;
	char	   *etag;
	char	   *link;
	char	   *retry_after;
	char	   *rl_remaining;
	char	   *rl_reset;
} Response;

static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Response   *r = userdata;
	size_t		n = size * nmemb;

	if ((size_t) r->body.len + n > (size_t) sluice_http_max_page * 1024)
	{
		r->too_big = true;
		return 0;				/* curl fails the transfer */
	}
	appendBinaryStringInfo(&r->body, ptr, n);
	return n;
}

/* One header line: keep those pagination and rate limits need. */
static size_t
read_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Response   *r = userdata;
	size_t		n = size * nmemb;
	char	   *line = pnstrdup(ptr, n);
	char	   *colon;
	char	   *v;
	int			len;

	if (strncmp(line, "HTTP/", 5) == 0)
	{
		/* a new response (after 100 Continue): forget the last one's */
		r->etag = r->link = r->retry_after = r->rl_remaining = r->rl_reset = NULL;
		return n;
	}
	colon = strchr(line, ':');
	if (colon == NULL)
		return n;
	*colon = '\0';
	v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	len = strlen(v);
	while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
		v[--len] = '\0';
	if (pg_strcasecmp(line, "ETag") == 0)
		r->etag = v;
	else if (pg_strcasecmp(line, "Link") == 0)
		r->link = r->link ? psprintf("%s, %s", r->link, v) : v;
	else if (pg_strcasecmp(line, "Retry-After") == 0)
		r->retry_after = v;
	else if (pg_strcasecmp(line, "X-RateLimit-Remaining") == 0)
		r->rl_remaining = v;
	else if (pg_strcasecmp(line, "X-RateLimit-Reset") == 0)
		r->rl_reset = v;
	return n;
}

static struct curl_slist *
add_header(struct curl_slist *hdrs, const char *line)
{
	struct curl_slist *l = curl_slist_append(hdrs, line);

	if (l == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return l;
}

/* What one request allocates outside PostgreSQL's memory. */
typedef struct RequestState
{
	CURL	   *curl;
	struct curl_slist *hdrs;
	char	  **lines;
} RequestState;

static void
request_release(RequestState *rs)
{
	if (rs->hdrs)
		curl_slist_free_all(rs->hdrs);
	if (rs->curl)
		curl_easy_cleanup(rs->curl);
	if (rs->lines)
		payload_free_lines(rs->lines);
	memset(rs, 0, sizeof(*rs));
}

/* Send one GET; fills r.  Returns the transfer's result, errbuf its text. */
static CURLcode
request_once(RequestState *rs, HttpSource *src, const char *url,
			 const char *if_none_match, Response *r, char *errbuf)
{
	int			k;

	rs->curl = curl_easy_init();
	if (rs->curl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialise libcurl")));
	rs->hdrs = add_header(rs->hdrs, "Accept: application/json");
	rs->hdrs = add_header(rs->hdrs, psprintf("User-Agent: pg_sluice/%s", SLUICE_VERSION));
	if (strcmp(src->auth, "bearer") == 0 && src->secret)
		rs->hdrs = add_header(rs->hdrs, psprintf("Authorization: Bearer %s", src->secret));
	if (if_none_match)
		rs->hdrs = add_header(rs->hdrs, psprintf("If-None-Match: %s", if_none_match));
	if (src->headers)
	{
		rs->lines = payload_header_lines(src->headers);
		for (k = 0; rs->lines && rs->lines[k]; k++)
			rs->hdrs = add_header(rs->hdrs, rs->lines[k]);
	}
	if (strcmp(src->auth, "basic") == 0)
	{
		curl_easy_setopt(rs->curl, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
		curl_easy_setopt(rs->curl, CURLOPT_USERNAME, src->username);
		curl_easy_setopt(rs->curl, CURLOPT_PASSWORD, src->secret);
	}
	errbuf[0] = '\0';
	curl_easy_setopt(rs->curl, CURLOPT_URL, url);
	curl_easy_setopt(rs->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(rs->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(rs->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(rs->curl, CURLOPT_HTTPHEADER, rs->hdrs);
	curl_easy_setopt(rs->curl, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(rs->curl, CURLOPT_TIMEOUT_MS, (long) sluice_http_timeout);
	curl_easy_setopt(rs->curl, CURLOPT_CONNECTTIMEOUT_MS, (long) sluice_http_timeout);
	curl_easy_setopt(rs->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(rs->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(rs->curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(rs->curl, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(rs->curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(rs->curl, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(rs->curl, CURLOPT_HEADERDATA, r);
	return http_perform(rs->curl);
}

/* Sleep until a moment, interruptibly (cancel, terminate, postmaster death). */
static void
wait_until(TimestampTz when)
{
	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), when);
		int			rc;

		if (ms <= 0)
			return;
		relmap_step_release();
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/* Seconds a Retry-After or X-RateLimit-Reset asks for (an epoch when large); -1 if unreadable. */
static long
seconds_asked(const char *v)
{
	char	   *end;
	long		n;

	if (v == NULL)
		return -1;
	n = strtol(v, &end, 10);
	if (end == v || n < 0)
		return -1;
	if (n > 1000000000L)
	{
		/* an epoch (X-RateLimit-Reset of GitHub's kind) */
		long		now = (long) time(NULL);

		n = n > now ? n - now : 0;
	}
	return n;
}

/* A wait the server asks for, refused when longer than pg_sluice.http_timeout. */
static TimestampTz
asked_wait(const char *what, long seconds, const char *shown)
{
	if (seconds * 1000L > sluice_http_timeout)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("%s asks to wait %ld s before the next request, longer than pg_sluice.http_timeout", shown, seconds),
				 errdetail("%s. Nothing was applied; the endpoint's cursor did not move.", what),
				 errhint("Run the refresh again after that time, or schedule it less often.")));
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), seconds * 1000L);
}

/*
 * GET url until it answers other than 429 or 5xx, or the attempts run out.
 * Returns the response (status 2xx or 304), or raises with the URL masked.
 */
static void
fetch(HttpPull *p, const char *url, const char *if_none_match, Response *r)
{
	char	   *shown = http_mask_url(url);
	int			attempt;

	for (attempt = 1;; attempt++)
	{
		RequestState rs;
		char		errbuf[CURL_ERROR_SIZE];
		volatile CURLcode rc = CURLE_OK;
		long		secs;

		wait_until(p->not_before);
		memset(&rs, 0, sizeof(rs));
		memset(r, 0, sizeof(*r));
		initStringInfo(&r->body);
		PG_TRY();
		{
			rc = request_once(&rs, p->src, url, if_none_match, r, errbuf);
			if (rc == CURLE_OK)
				curl_easy_getinfo(rs.curl, CURLINFO_RESPONSE_CODE, &r->status);
		}
		PG_CATCH();
		{
			request_release(&rs);
			PG_RE_THROW();
		}
		PG_END_TRY();
		request_release(&rs);
		p->requests++;

		if (rc != CURLE_OK)
		{
			if (r->too_big)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("the page at %s is larger than pg_sluice.http_max_page_size (%d kB)", shown, sluice_http_max_page),
						 errdetail("Nothing was applied; the endpoint's cursor did not move."),
						 errhint("Ask the API for smaller pages (a page size parameter in the endpoint's path), or raise pg_sluice.http_max_page_size.")));
			ereport(ERROR,
					(errcode(rc == CURLE_OPERATION_TIMEDOUT ? ERRCODE_QUERY_CANCELED : ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not fetch %s: %s", shown, errbuf[0] ? errbuf : curl_easy_strerror(rc)),
					 errdetail("Nothing was applied; the endpoint's cursor did not move."),
					 errhint(rc == CURLE_OPERATION_TIMEDOUT ?
							 "The API did not answer within pg_sluice.http_timeout; raise it or run the refresh again later." :
							 "Check that the API is reachable from the datamart, then run the refresh again.")));
		}
		if ((r->status >= 200 && r->status < 300) || r->status == 304)
			break;
		if (r->status != 429 && r->status < 500)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("%s answered HTTP status %ld", shown, r->status),
					 errdetail("Nothing was applied; the endpoint's cursor did not move."),
					 errhint(r->status == 401 || r->status == 403 ?
							 "Check the source's credentials (sluice.create_http_source); they are never shown." :
							 "Check the endpoint's path and parameters (sluice.http_endpoints).")));
		if (attempt >= sluice_http_max_attempts)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("%s answered HTTP status %ld %d times", shown, r->status, attempt),
					 errdetail("Nothing was applied; the endpoint's cursor did not move."),
					 errhint("Run the refresh again later; pg_sluice.http_max_attempts bounds the attempts of one request.")));
		/* 429 or 5xx: after Retry-After, else backoff */
		secs = seconds_asked(r->retry_after);
		p->retries++;
		if (secs >= 0)
			p->not_before = asked_wait(psprintf("HTTP status %ld, Retry-After: %s", r->status, r->retry_after),
									   secs, shown);
		else
		{
			long		backoff = sluice_http_retry_base;
			int			i;

			for (i = 1; i < attempt && backoff < sluice_http_timeout; i++)
				backoff *= 2;
			backoff = Min(backoff, (long) sluice_http_timeout);
			p->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff);
		}
		ereport(DEBUG1,
				(errmsg_internal("%s answered %ld; attempt %d of %d", shown, r->status, attempt + 1,
								 sluice_http_max_attempts)));
	}
	/* an exhausted quota: the next request waits for its reset */
	if (r->rl_remaining && strtol(r->rl_remaining, NULL, 10) <= 0 && r->rl_remaining[0] == '0')
	{
		long		secs = seconds_asked(r->rl_reset);

		if (secs > 0)
			p->not_before = asked_wait(psprintf("X-RateLimit-Remaining: 0, X-RateLimit-Reset: %s", r->rl_reset),
									   secs, shown);
	}
}

/* ---------- parsing ---------- */

/* The value at a dotted path below obj (borrowed), or NULL. */
static json_t *
at_path(json_t *obj, const char *path)
{
	char	   *copy = pstrdup(path);
	char	   *save = NULL;
	char	   *seg;
	json_t	   *v = obj;

	for (seg = strtok_r(copy, ".", &save); seg && v; seg = strtok_r(NULL, ".", &save))
		v = json_is_object(v) ? json_object_get(v, seg) : NULL;
	pfree(copy);
	return v;
}

static const char *
json_kind(json_t *v)
{
	switch (json_typeof(v))
	{
		case JSON_OBJECT:
			return "an object";
		case JSON_ARRAY:
			return "an array";
		case JSON_STRING:
			return "a string";
		case JSON_INTEGER:
		case JSON_REAL:
			return "a number";
		case JSON_TRUE:
		case JSON_FALSE:
			return "a boolean";
		default:
			return "null";
	}
}

/* A JSON value as the text a column's input function reads (NULL for null). */
static char *
value_text(json_t *v, bool as_json)
{
	char	   *s;
	char	   *out;

	if (v == NULL || json_is_null(v))
		return NULL;
	if (!as_json)
	{
		if (json_is_string(v))
			return pstrdup(json_string_value(v));
		if (json_is_integer(v))
			return psprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
		if (json_is_real(v))
			return psprintf("%.17g", json_real_value(v));
		if (json_is_boolean(v))
			return pstrdup(json_is_true(v) ? "true" : "false");
	}
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s == NULL)
		elog(ERROR, "out of memory");
	out = pstrdup(s);
	free(s);
	return out;
}

/* The type a new field's value suggests (evolve adds it so). */
static Oid
value_type(json_t *v)
{
	switch (json_typeof(v))
	{
		case JSON_INTEGER:
			return INT8OID;
		case JSON_REAL:
			return NUMERICOID;
		case JSON_TRUE:
		case JSON_FALSE:
			return BOOLOID;
		case JSON_OBJECT:
		case JSON_ARRAY:
			return JSONBOID;
		default:
			return TEXTOID;
	}
}

/* a > b as cursor values: numerically when both are integers */
static bool
cursor_after(const char *a, const char *b)
{
	char	   *ea;
	char	   *eb;
	long long	na = strtoll(a, &ea, 10);
	long long	nb = strtoll(b, &eb, 10);

	if (*a && *b && *ea == '\0' && *eb == '\0')
		return na > nb;
	return strcmp(a, b) > 0;
}

/* Rows of a parsed page into page (the doc is the caller's to free). */
static void
page_rows(HttpPull *p, json_t *doc, int npaths, char **paths, bool *required,
		  bool *as_json, HttpPage *page)
{
	HttpEndpoint *ep = p->ep;
	json_t	   *rows = ep->rows_path ? at_path(doc, ep->rows_path) : doc;
	const char *where = ep->rows_path ? psprintf("$.%s", ep->rows_path) : "$";
	size_t		i;
	json_t	   *row;
	List	   *newnames = NIL;
	List	   *newtypes = NIL;
	int			ncols;
	int			c;

	if (rows == NULL || !json_is_array(rows))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_JSON_TEXT),
				 errmsg("the response from %s has the wrong shape: %s is %s, an array of rows was expected",
						page->shown_url, where, rows ? json_kind(rows) : "missing"),
				 errdetail("Nothing was applied; the endpoint's cursor did not move."),
				 errhint("Check the endpoint's \"rows\" path (sluice.http_endpoints.rows_path).")));

	/* the fields no path starts with: new ones (drift, judged by the contract) */
	json_array_foreach(rows, i, row)
	{
		const char *key;
		json_t	   *v;

		if (!json_is_object(row))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_JSON_TEXT),
					 errmsg("the response from %s has the wrong shape: %s[%zu] is %s, an object was expected",
							page->shown_url, where, i, json_kind(row)),
					 errdetail("Nothing was applied; the endpoint's cursor did not move."),
					 errhint("Check the endpoint's \"rows\" path (sluice.http_endpoints.rows_path).")));
		json_object_foreach(row, key, v)
		{
			bool		known = false;
			int			k;
			ListCell   *lc;
			int			klen = strlen(key);

			for (k = 0; k < npaths && !known; k++)
				known = strncmp(paths[k], key, klen) == 0 &&
					(paths[k][klen] == '\0' || paths[k][klen] == '.');
			foreach(lc, newnames)
				if (strcmp(strVal(lfirst(lc)), key) == 0)
					known = true;
			if (!known)
			{
				newnames = lappend(newnames, makeString(pstrdup(key)));
				newtypes = lappend_oid(newtypes, value_type(v));
			}
		}
	}

	ncols = npaths + list_length(newnames);
	page->nasked = npaths;
	page->ncols = ncols;
	page->names = palloc(sizeof(char *) * Max(ncols, 1));
	page->types = palloc0(sizeof(Oid) * Max(ncols, 1));
	for (c = 0; c < npaths; c++)
		page->names[c] = paths[c];
	c = npaths;
	{
		ListCell   *lc1,
				   *lc2;

		forboth(lc1, newnames, lc2, newtypes)
		{
			page->names[c] = strVal(lfirst(lc1));
			page->types[c++] = lfirst_oid(lc2);
		}
	}
	page->nrows = json_array_size(rows);
	page->values = palloc0(sizeof(char *) * Max((Size) page->nrows * ncols, 1));
	json_array_foreach(rows, i, row)
	{
		for (c = 0; c < ncols; c++)
		{
			json_t	   *v = at_path(row, page->names[c]);
			bool		j = c < npaths ? as_json[c] : page->types[c] == JSONBOID;

			if (c < npaths && required[c] && (v == NULL || json_is_null(v)))
				ereport(ERROR,
						(errcode(ERRCODE_NOT_NULL_VIOLATION),
						 errmsg("the response from %s lacks a required field: %s[%zu].%s is %s",
								page->shown_url, where, i, page->names[c], v ? "null" : "missing"),
						 errdetail("The contract of \"%s\" requires it. Nothing was applied; the endpoint's cursor did not move.",
								   ep->source_table),
						 errhint("Fix the API, or declare the column without \"required\" and quarantine such rows with sluice.expect_column_values_to_not_be_null(..., severity => 'quarantine').")));
			page->values[i * ncols + c] = value_text(v, j);
		}
		if (ep->cursor_field)
		{
			char	   *cv = value_text(at_path(row, ep->cursor_field), false);

			if (cv && (p->new_cursor == NULL || cursor_after(cv, p->new_cursor)))
				p->new_cursor = MemoryContextStrdup(p->cxt, cv);
		}
	}
}

/* The next page's URL, or NULL when this one was the last. */
static char *
next_url(HttpPull *p, json_t *doc, Response *r, HttpPage *page)
{
	HttpEndpoint *ep = p->ep;

	if (strcmp(ep->paging, "link") == 0)
		return r->link ? link_next(r->link, p->url) : NULL;
	if (strcmp(ep->paging, "page") == 0)
		return page->nrows > 0 ?
			url_with_param(p->first_url, ep->page_param, psprintf("%d", ++p->page)) : NULL;
	if (strcmp(ep->paging, "cursor") == 0)
	{
		char	   *token = value_text(at_path(doc, ep->next_field), false);

		return token && token[0] && page->nrows > 0 ?
			url_with_param(p->first_url, ep->page_param, token) : NULL;
	}
	return NULL;
}

/* ---------- the pull ---------- */

void
http_pull_start(HttpPull *p, HttpSource *src, HttpEndpoint *ep)
{
	memset(p, 0, sizeof(*p));
	p->cxt = CurrentMemoryContext;
	p->src = src;
	p->ep = ep;
	p->first_url = endpoint_url(src->base_url, ep->path);
	if (ep->cursor_value && ep->cursor_param &&
		(strcmp(ep->cursor_kind, "since") == 0 || strcmp(ep->cursor_kind, "id") == 0))
		p->first_url = url_with_param(p->first_url, ep->cursor_param, ep->cursor_value);
	p->url = p->first_url;
	if (strcmp(ep->paging, "page") == 0)
	{
		p->page = 1;
		p->url = url_with_param(p->first_url, ep->page_param, "1");
	}
	p->new_cursor = ep->cursor_value;
	p->new_etag = ep->etag;
}

/*
 * The next page of the pull, parsed into page (in the current memory
 * context); false when there is none.  The paths asked for are the
 * contract's; required paths must be present and not null; as_json ones
 * are read as JSON text (json and jsonb columns).
 */
bool
http_pull_next(HttpPull *p, int npaths, char **paths, bool *required,
			   bool *as_json, HttpPage *page)
{
	Response	r;
	json_t	   *volatile doc = NULL;
	json_error_t err;
	bool		first = (p->pages == 0);

	if (p->url == NULL)
		return false;
	if (p->pages >= HTTP_MAX_PAGES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("endpoint \"%s\" gave more than %d pages", p->ep->source_table, HTTP_MAX_PAGES),
				 errhint("Check its pagination; nothing was applied.")));
	memset(page, 0, sizeof(*page));
	page->shown_url = http_mask_url(p->url);
	fetch(p, p->url,
		  first && strcmp(p->ep->cursor_kind, "etag") == 0 ? p->ep->etag : NULL, &r);
	p->pages++;
	if (r.status == 304)
	{
		page->not_modified = true;
		p->url = NULL;
		return true;
	}
	if (first && r.etag)
		p->new_etag = MemoryContextStrdup(p->cxt, r.etag);

	doc = json_loadb(r.body.data, r.body.len, JSON_DECODE_ANY, &err);
	if (doc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_JSON_TEXT),
				 errmsg("the response from %s is not JSON", page->shown_url),
				 errdetail("%s at line %d, column %d. Nothing was applied; the endpoint's cursor did not move.",
						   err.text, err.line, err.column),
				 errhint("Check the endpoint's path (sluice.http_endpoints) and what the API answers there.")));
	PG_TRY();
	{
		char	   *next;

		page_rows(p, doc, npaths, paths, required, as_json, page);
		next = next_url(p, doc, &r, page);
		if (next && strcmp(next, p->url) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the next page of %s is the same page", page->shown_url),
					 errdetail("Nothing was applied; the endpoint's cursor did not move."),
					 errhint("Check the endpoint's pagination (sluice.http_endpoints.paging).")));
		p->url = next ? MemoryContextStrdup(p->cxt, next) : NULL;
	}
	PG_CATCH();
	{
		json_decref(doc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	json_decref(doc);
	pfree(r.body.data);
	return true;
}
