/*-------------------------------------------------------------------------
 *
 * jsonout.c
 *	  Small JSON objects written as text: event bodies, drift columns,
 *	  row keys.
 *
 * NOTES
 *	  What this file owns.  The one way pg_sluice writes JSON text outside
 *	  payload.c: an object opened, members added (a string, escaped with
 *	  PostgreSQL's escape_json, NULL written as null, or JSON text as it
 *	  is), closed.  Members are separated by ", " and keys by ": ", as
 *	  jsonb's output writes them: the quarantine ledger compares the keys it
 *	  builds with row_key::text of the stored entries, byte for byte.
 *
 *	  What it never does.  Parse JSON, or build nested documents of any
 *	  size: payload.c builds the webhook and OpenLineage documents with
 *	  jansson.
 *
 *	  Rejected.  jansson here too: its text is not jsonb's (no space after
 *	  ":" or ","), and payload.c cannot share PostgreSQL's headers.  The
 *	  SQL-side jsonb_build_object: a query per object, in the apply's loop.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/jsonout.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/json.h"

#include "pg_sluice.h"

/* Open an object in buf (an initialized StringInfo). */
void
sluice_json_begin(StringInfo buf)
{
	appendStringInfoChar(buf, '{');
}

/* A member's key, after a separator unless it is the object's first. */
static void
json_key(StringInfo buf, const char *key)
{
	if (buf->len > 0 && buf->data[buf->len - 1] != '{')
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
}

/* Add "key": "value", or "key": null when value is NULL. */
void
sluice_json_string(StringInfo buf, const char *key, const char *value)
{
	json_key(buf, key);
	if (value != NULL)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/* Add "key": json, json being JSON text (a number, true, an object...). */
void
sluice_json_raw(StringInfo buf, const char *key, const char *json)
{
	json_key(buf, key);
	appendStringInfoString(buf, json);
}

/* Close the object. */
void
sluice_json_end(StringInfo buf)
{
	appendStringInfoChar(buf, '}');
}
