/*-------------------------------------------------------------------------
 *
 * http.c
 *	  One HTTP transfer run to its end with every wait interruptible: the
 *	  wait shared by the notifier (notify.c) and the HTTP sources
 *	  (httpsource.c).
 *
 * NOTES
 *	  What this file owns.  http_perform: a libcurl easy handle, set up by
 *	  the caller, driven through libcurl's multi-socket interface, its
 *	  sockets and timer watched by a WaitEventSet together with the process
 *	  latch.  SIGTERM (pg_terminate_backend, a fast shutdown), a query cancel
 *	  (pg_cancel_backend) and postmaster death end the wait at once, whatever
 *	  the transfer's own timeouts are: CHECK_FOR_INTERRUPTS runs whenever the
 *	  latch is set.  The multi handle is its own and released on every way
 *	  out, an ERROR included; the easy handle stays the caller's.
 *
 *	  What it never does.  Set options on the easy handle, read its answer or
 *	  decide what a status means: that is the caller's.
 *
 *	  Rejected.  curl_easy_perform: it blocks in libcurl's own poll for up to
 *	  the transfer's timeout, deaf to signals.  A progress callback polling
 *	  for interrupts: libcurl calls it about once a second when the
 *	  connection is idle, a wait still.  A copy of this loop in each caller
 *	  (as notify.c had it until the HTTP sources came).
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_sluice.h"
#include "http_internal.h"

/*
 * The sockets libcurl wants watched and its timer, as its multi interface
 * reports them (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION).  One
 * transfer uses one socket, two while it races IPv6 against IPv4.
 */
typedef struct CurlWait
{
	struct
	{
		curl_socket_t fd;
		int			what;		/* CURL_POLL_IN, _OUT, _INOUT */
	}			socks[4];
	int			nsocks;
	TimestampTz deadline;		/* when curl wants its timeout action; 0: none */
} CurlWait;

static int
curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	CurlWait   *w = userp;
	int			i;

	for (i = 0; i < w->nsocks; i++)
		if (w->socks[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < w->nsocks)
			w->socks[i] = w->socks[--w->nsocks];
		return 0;
	}
	if (i == w->nsocks)
	{
		if (w->nsocks == lengthof(w->socks))
			return -1;			/* curl fails the transfer */
		w->nsocks++;
	}
	w->socks[i].fd = fd;
	w->socks[i].what = what;
	return 0;
}

static int
curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	CurlWait   *w = userp;

	w->deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* The loop of http_perform, on a multi handle it has set up. */
static CURLcode
perform_loop(CURLM *multi, CurlWait *w)
{
	int			running = 1;
	CURLMsg    *msg;
	int			left;
	CURLcode	result = CURLE_OK;

	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	while (running)
	{
		WaitEventSet *set;
		WaitEvent	events[lengthof(w->socks) + 2];
		long		timeout = 1000;	/* without a timer: look again every second */
		int			n;
		int			i;

		if (w->deadline != 0)
			timeout = Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), w->deadline));
		set = CreateWaitEventSet(CurrentMemoryContext, lengthof(events));
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		for (i = 0; i < w->nsocks; i++)
		{
			int			want = ((w->socks[i].what & CURL_POLL_IN) ? WL_SOCKET_READABLE : 0) |
				((w->socks[i].what & CURL_POLL_OUT) ? WL_SOCKET_WRITEABLE : 0);

			if (want != 0)
				AddWaitEventToSet(set, want, w->socks[i].fd, NULL, NULL);
		}
		relmap_step_release();
		n = WaitEventSetWait(set, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
		FreeWaitEventSet(set);

		if (n == 0)
		{
			w->deadline = 0;
			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		for (i = 0; i < n && running; i++)
		{
			int			mask = 0;

			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
				continue;
			}
			if (events[i].events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, events[i].fd, mask, &running);
		}
	}
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE)
			result = msg->data.result;
	return result;
}

/*
 * Run the transfer of curl (set up by the caller) to its end, waiting on
 * its sockets and on the latch together: interrupts are served at once,
 * not after the transfer's timeout.  Returns the transfer's result; an
 * interrupt raises as CHECK_FOR_INTERRUPTS does, with the multi handle
 * released and curl left to its caller to clean up.
 */
CURLcode
http_perform(CURL *curl)
{
	CurlWait	w;
	CURLM	   *volatile multi;
	volatile bool added = false;
	volatile CURLcode result = CURLE_OK;

	memset(&w, 0, sizeof(w));
	multi = curl_multi_init();
	if (multi == NULL)
		return CURLE_OUT_OF_MEMORY;
	PG_TRY();
	{
		curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
		curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, &w);
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
		curl_multi_setopt(multi, CURLMOPT_TIMERDATA, &w);
		if (curl_multi_add_handle(multi, curl) != CURLM_OK)
			result = CURLE_FAILED_INIT;
		else
		{
			added = true;
			result = perform_loop(multi, &w);
		}
	}
	PG_CATCH();
	{
		if (added)
			curl_multi_remove_handle(multi, curl);
		curl_multi_cleanup(multi);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (added)
		curl_multi_remove_handle(multi, curl);
	curl_multi_cleanup(multi);
	return result;
}
