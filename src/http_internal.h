/*-------------------------------------------------------------------------
 *
 * http_internal.h
 *	  Declarations shared by the files that speak HTTP through libcurl:
 *	  http.c and notify.c.
 *
 * NOTES
 *	  Why a private header.  It includes curl/curl.h, which pg_sluice.h (read
 *	  by every module) stays without.
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

#endif							/* HTTP_INTERNAL_H */
