/*-------------------------------------------------------------------------
 *
 * http_internal.h
 *	  Declarations shared by the files that speak HTTP through libcurl:
 *	  http.c, notify.c, httpsource.c and httpapply.c.
 *
 * NOTES
 *	  Why a private header.  It includes curl/curl.h, which pg_sluice.h (read
 *	  by every module) stays without.  httpsource.c reads JSON with jansson
 *	  and httpapply.c writes rows with the executor: this header lets them
 *	  share pages of text values without either seeing the other's library
 *	  (jansson's json_* names clash with PostgreSQL's).
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/http_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HTTP_INTERNAL_H
#define HTTP_INTERNAL_H

#include <curl/curl.h>

/* http.c: one transfer to its end, every wait interruptible */
extern CURLcode http_perform(CURL *curl);

/* An HTTP source, secrets included (read as the extension owner). */
typedef struct HttpSource
{
	char	   *name;
	char	   *base_url;
	char	   *auth;			/* none, bearer, basic */
	char	   *username;
	char	   *secret;			/* bearer token or password, or NULL */
	char	   *headers;		/* JSON object text: extra headers */
} HttpSource;

/* An endpoint: where one datamart table's rows come from, and its cursor. */
typedef struct HttpEndpoint
{
	char	   *source_table;	/* its name (the datamart table's) */
	char	   *path;
	char	   *rows_path;		/* dotted path of the rows array, or NULL */
	char	   *cursor_kind;	/* none, since, id, etag */
	char	   *cursor_param;
	char	   *cursor_field;	/* dotted path in a row */
	char	   *paging;			/* none, link, page, cursor */
	char	   *page_param;
	char	   *next_field;		/* dotted path of the next token in a page */
	char	   *cursor_value;	/* as committed, or NULL */
	char	   *etag;			/* as committed, or NULL */
} HttpEndpoint;

/* One endpoint's pull, page after page (httpsource.c). */
typedef struct HttpPull
{
	MemoryContext cxt;			/* where what outlives a page lives */
	HttpSource *src;
	HttpEndpoint *ep;
	char	   *first_url;		/* the first page's URL, cursor included */
	char	   *url;			/* the next page's URL, NULL when done */
	int			page;			/* page number (paging page) */
	int			pages;			/* pages read */
	TimestampTz not_before;		/* rate limit: no request before */
	char	   *new_etag;		/* the first page's ETag */
	char	   *new_cursor;		/* highest cursor field value seen */
	int64		requests;		/* requests sent, retries included */
	int64		retries;
} HttpPull;

/*
 * A page as rows of text values: column i of row r is
 * values[r * ncols + i] (NULL: JSON null or absent).  The first columns are
 * the paths asked for, then the row objects' top-level fields no path
 * starts with (new fields: drift), with the type their first value
 * suggests.
 */
typedef struct HttpPage
{
	bool		not_modified;	/* 304: nothing changed since the ETag */
	char	   *shown_url;		/* the URL without secrets, for messages */
	int			nrows;
	int			ncols;
	int			nasked;
	char	  **names;			/* per column: the JSON path */
	Oid		   *types;			/* per new column: its type */
	char	  **values;
} HttpPage;

/* httpsource.c: fetch, paginate, honour rate limits, parse */
extern void http_pull_start(HttpPull *p, HttpSource *src, HttpEndpoint *ep);
extern bool http_pull_next(HttpPull *p, int npaths, char **paths, bool *required,
						   bool *as_json, HttpPage *page);
extern char *http_mask_url(const char *url);

#endif							/* HTTP_INTERNAL_H */
