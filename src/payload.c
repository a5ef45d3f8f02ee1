/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  Event payloads built with jansson: the webhook JSON (documented in the
 *	  README), a Slack-compatible text body, and OpenLineage RunEvents.
 *
 * NOTES
 *	  What this file owns.  The JSON a destination receives, built from an
 *	  outbox row by payload_build, and the parsing of a destination's extra
 *	  header lines.
 *
 *	  What it never does.  Send anything (notify.c does) or include
 *	  PostgreSQL's fmgr and json headers, whose json_* names clash with
 *	  jansson's: it sees only pg_sluice.h, which is kept light for it.
 *	  Strings returned are malloc'd: free() them.
 *
 *	  Rejected.  Building payloads with StringInfo and escape_json, as the
 *	  apply's small JSON objects are: OpenLineage events nest deeply, and
 *	  jansson keeps them well-formed.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/payload.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <jansson.h>

/*
 * The postgres executable exports a json_object() of its own (the SQL
 * function), which would win the dynamic symbol lookup: never call
 * jansson's json_object() directly here, use json_pack("{}").
 */

#include "pg_sluice.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "unknown"
#endif

static json_t *
parse_json(const char *text)
{
	json_error_t err;
	json_t	   *j = json_loads(text, 0, &err);

	if (j == NULL)
		elog(ERROR, "invalid event body: %s", err.text);
	return j;
}

static const char *
jstr(json_t *obj, const char *key, const char *dflt)
{
	json_t	   *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : dflt;
}

/*
 * The OpenLineage RunEvent of a run event: the live tables as inputs, the
 * datamart tables as outputs with their schema facet (from the contract)
 * and data-quality assertions (from the run's expectation results); the
 * models the run maintained as outputs too, with the datamart tables and
 * models they read as inputs.
 */
static json_t *
openlineage_event(const char *event, json_t *body, const char *namespace, const char *when)
{
	json_t	   *ev = json_pack("{}");
	json_t	   *inputs = json_array();
	json_t	   *outputs = json_array();
	json_t	   *tables = json_object_get(body, "tables");
	size_t		i;
	json_t	   *t;
	const char *type = strcmp(event, "refresh_started") == 0 ? "START" :
		strcmp(event, "refresh_completed") == 0 ? "COMPLETE" : "FAIL";

	json_object_set_new(ev, "eventType", json_string(type));
	json_object_set_new(ev, "eventTime", json_string(when));
	json_object_set_new(ev, "producer", json_string("https://github.com/pg-sluice/pg_sluice/tree/" SLUICE_VERSION));
	json_object_set_new(ev, "schemaURL", json_string("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"));
	json_object_set_new(ev, "run", json_pack("{s:s}", "runId", jstr(body, "run_uuid", "")));
	if (strcmp(type, "FAIL") == 0 && jstr(body, "error", NULL))
		json_object_set_new(json_object_get(ev, "run"), "facets",
							json_pack("{s:{s:s,s:s,s:s,s:s}}", "errorMessage",
									  "_producer", "https://github.com/pg-sluice/pg_sluice",
									  "_schemaURL", "https://openlineage.io/spec/facets/1-0-0/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
									  "message", jstr(body, "error", ""),
									  "programmingLanguage", "SQL"));
	json_object_set_new(ev, "job", json_pack("{s:s,s:s}", "namespace", namespace,
											 "name", jstr(body, "job", "pg_sluice")));
	json_array_foreach(tables, i, t)
	{
		json_t	   *fields = json_object_get(t, "fields");
		json_t	   *assertions = json_object_get(t, "assertions");
		json_t	   *facets = json_pack("{}");

		json_array_append_new(inputs, json_pack("{s:s,s:s}",
												"namespace", jstr(body, "source_namespace", ""),
												"name", jstr(t, "input", "")));
		json_object_set_new(facets, "schema",
							json_pack("{s:s,s:s,s:O}",
									  "_producer", "https://github.com/pg-sluice/pg_sluice",
									  "_schemaURL", "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
									  "fields", fields ? fields : json_array()));
		if (json_array_size(assertions) > 0)
			json_object_set_new(facets, "dataQualityAssertions",
								json_pack("{s:s,s:s,s:O}",
										  "_producer", "https://github.com/pg-sluice/pg_sluice",
										  "_schemaURL", "https://openlineage.io/spec/facets/1-0-1/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet",
										  "assertions", assertions));
		json_array_append_new(outputs, json_pack("{s:s,s:s,s:o}",
												 "namespace", jstr(body, "target_namespace", ""),
												 "name", jstr(t, "output", ""),
												 "facets", facets));
	}
	/* models: the datamart tables and models they read in, the model out */
	json_array_foreach(json_object_get(body, "models"), i, t)
	{
		json_t	   *in;
		size_t		j;
		json_t	   *fields = json_object_get(t, "fields");

		json_array_foreach(json_object_get(t, "inputs"), j, in)
			if (json_is_string(in))
				json_array_append_new(inputs, json_pack("{s:s,s:s}",
														"namespace", jstr(body, "target_namespace", ""),
														"name", json_string_value(in)));
		json_array_append_new(outputs, json_pack("{s:s,s:s,s:{s:{s:s,s:s,s:O}}}",
												 "namespace", jstr(body, "target_namespace", ""),
												 "name", jstr(t, "output", ""),
												 "facets", "schema",
												 "_producer", "https://github.com/pg-sluice/pg_sluice",
												 "_schemaURL", "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
												 "fields", fields ? fields : json_array()));
	}
	json_object_set_new(ev, "inputs", inputs);
	json_object_set_new(ev, "outputs", outputs);
	return ev;
}

/* The webhook payload: documented in the README. */
static json_t *
webhook_event(int64 id, const char *event, const char *pipeline, json_t *body,
			  const char *when, bool slack)
{
	if (slack)
	{
		char	   *text = psprintf("[pg_sluice] %s: %s%s%s", pipeline ? pipeline : "-", event,
									jstr(body, "summary", NULL) ? " - " : "",
									jstr(body, "summary", ""));

		return json_pack("{s:s}", "text", text);
	}
	return json_pack("{s:I,s:s,s:s?,s:s,s:O}", "event_id", (json_int_t) id, "event", event,
					 "pipeline", pipeline, "occurred_at", when, "data", body);
}


/*
 * The body to post for an event.  kind: webhook or openlineage.
 */
char *
payload_build(const char *kind, const char *event, const char *pipeline, int64 id,
			  const char *body_text, const char *namespace, const char *when, bool slack)
{
	json_t	   *body = parse_json(body_text);
	json_t	   *payload;
	char	   *text;

	if (strcmp(kind, "openlineage") == 0)
		payload = openlineage_event(event, body, namespace, when);
	else
		payload = webhook_event(id, event, pipeline, body, when, slack);
	text = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(payload);
	json_decref(body);
	if (text == NULL)
		elog(ERROR, "could not build the event payload");
	return text;
}

/* "Name: value" lines of a JSON object of headers, NULL-terminated (malloc'd). */
char **
payload_header_lines(const char *headers)
{
	json_t	   *h = parse_json(headers);
	const char *k;
	json_t	   *v;
	char	  **lines = calloc(json_object_size(h) + 1, sizeof(char *));
	int			n = 0;

	if (lines == NULL)
	{
		json_decref(h);
		elog(ERROR, "out of memory");
	}
	json_object_foreach(h, k, v)
	{
		if (!json_is_string(v))
			continue;
		lines[n] = malloc(strlen(k) + strlen(json_string_value(v)) + 3);
		if (lines[n] == NULL)
		{
			/* nothing malloc'd may outlive the error */
			json_decref(h);
			payload_free_lines(lines);
			elog(ERROR, "out of memory");
		}
		sprintf(lines[n], "%s: %s", k, json_string_value(v));
		n++;
	}
	json_decref(h);
	return lines;
}

void
payload_free_lines(char **lines)
{
	int			i;

	for (i = 0; lines && lines[i]; i++)
		free(lines[i]);
	free(lines);
}
