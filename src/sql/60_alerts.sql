/*
 * src/sql/60_alerts.sql -- alerts and lineage over HTTP.
 *
 * Destinations (webhooks, OpenLineage endpoints), the event builder
 * (_emit_run: OpenLineage and webhook payloads), _emit and
 * _announce_failure.
 */

-------------------------------------------------------------------------------
-- Alerts and lineage over HTTP
-------------------------------------------------------------------------------

CREATE FUNCTION sluice._check_url(url text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_check_url'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION sluice._check_url(text) IS 'Private: the URL normalised by libcurl, or an error if it is not an http(s) URL.';

CREATE FUNCTION sluice._event_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['refresh_started', 'refresh_completed', 'refresh_failed', 'pipeline_paused', 'contract_drift',
             'expectation_failed', 'quarantine', 'slot_lag', 'divergence', 'verification', 'spool_full'];

CREATE FUNCTION sluice._check_destination(name text, url text, events text[], headers jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  e text;
  h record;
BEGIN
  IF name IS NULL OR url IS NULL OR events IS NULL THEN
    RAISE EXCEPTION 'name, url and events must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF EXISTS (SELECT 1 FROM sluice._destination d WHERE d.name = _check_destination.name) THEN
    RAISE EXCEPTION 'destination "%" already exists', name USING ERRCODE = 'duplicate_object';
  END IF;
  FOREACH e IN ARRAY events LOOP
    IF e IS NULL OR NOT (e = '*' OR e = ANY (sluice._event_names())) THEN
      RAISE EXCEPTION 'unknown event "%"', e USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Known: * (all), ' || array_to_string(sluice._event_names(), ', ') || '.';
    END IF;
  END LOOP;
  IF jsonb_typeof(coalesce(headers, '{}')) <> 'object' THEN
    RAISE EXCEPTION 'headers must be a JSON object of strings' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR h IN SELECT * FROM jsonb_each(coalesce(headers, '{}')) LOOP
    IF jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$'
       OR (h.value #>> '{}') ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' THEN
      RAISE EXCEPTION 'invalid HTTP header "%"', h.key USING ERRCODE = 'invalid_parameter_value',
        DETAIL = 'Header names are tokens; values are strings without CR, LF or other control characters.';
    END IF;
  END LOOP;
  RETURN sluice._check_url(url);
END
$$;

CREATE FUNCTION sluice.create_webhook(name text, url text, events text[] DEFAULT ARRAY['*'],
    headers jsonb DEFAULT '{}', secret text DEFAULT NULL, format text DEFAULT 'json')
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  u text := sluice._check_destination(name, url, events, headers);
BEGIN
  IF format IS NULL OR format NOT IN ('json', 'slack') THEN
    RAISE EXCEPTION 'unknown format "%"', format USING ERRCODE = 'invalid_parameter_value',
      HINT = 'json (the documented event payload) or slack (a Slack-compatible {"text": ...} body).';
  END IF;
  INSERT INTO sluice._destination (name, kind, url, events, headers, secret, format)
  VALUES (name, 'webhook', u, events, coalesce(headers, '{}'), secret, format);
  PERFORM sluice._notifier_wanted();
  RETURN name;
END
$$;
COMMENT ON FUNCTION sluice.create_webhook(text, text, text[], jsonb, text, text) IS
  'Posts the chosen events (default all) as JSON (or Slack text) to a URL; with a secret, each request is signed (X-Sluice-Signature: sha256=HMAC of the body).';

CREATE FUNCTION sluice.create_lineage_endpoint(name text, url text, namespace text DEFAULT 'pg_sluice',
    api_key text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  u text := sluice._check_destination(name, url, ARRAY['refresh_started', 'refresh_completed', 'refresh_failed'], '{}');
BEGIN
  IF namespace IS NULL OR namespace = '' THEN
    RAISE EXCEPTION 'namespace must not be empty' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO sluice._destination (name, kind, url, events, secret, namespace)
  VALUES (name, 'openlineage', u, ARRAY['refresh_started', 'refresh_completed', 'refresh_failed'], api_key, namespace);
  PERFORM sluice._notifier_wanted();
  RETURN name;
END
$$;
COMMENT ON FUNCTION sluice.create_lineage_endpoint(text, text, text, text) IS
  'Posts OpenLineage RunEvents (START, COMPLETE, FAIL) for every run to an OpenLineage receiver (api_key sent as a Bearer token).';

CREATE FUNCTION sluice.drop_destination(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM sluice._destination d WHERE d.name = drop_destination.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'destination "%" does not exist', name USING ERRCODE = 'undefined_object';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION sluice.drop_destination(text) IS 'Removes a destination and its undelivered events.';


CREATE FUNCTION sluice._conninfo_part(conninfo text, keyword text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_conninfo_part'
LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION sluice._conninfo_part(text, text) IS 'Private: one value of a connection string (never the password).';

CREATE FUNCTION sluice._emit_run(run_id bigint, quarantined bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  p record;
  ci text;
  api text;
  body jsonb;
  bad jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sluice._destination) THEN
    RETURN;
  END IF;
  SELECT * INTO r FROM sluice._run WHERE _run.run_id = _emit_run.run_id;
  SELECT * INTO p FROM sluice._pipeline WHERE pipeline_id = r.pipeline_id;
  SELECT conninfo INTO ci FROM sluice._source WHERE name = p.source_name;
  -- an HTTP source (94_http.sql): its scheme, host and port, never a secret
  SELECT substring(sluice._mask_url(h.base_url) FROM '^[a-z]+://[^/?]+') INTO api
    FROM sluice._http_source h WHERE h.name = p.source_name;
  body := jsonb_build_object(
    'run_id', r.run_id,
    'run_uuid', md5(p.name || ':' || p.pipeline_id || ':' || r.run_id)::uuid,
    'job', 'pg_sluice.' || p.name,
    'kind', r.kind, 'status', r.status,
    'started_at', r.started_at, 'finished_at', r.finished_at,
    'start_lsn', r.start_lsn, 'end_lsn', r.end_lsn,
    'transactions', r.transactions, 'rows_inserted', r.rows_inserted, 'rows_updated', r.rows_updated,
    'rows_deleted', r.rows_deleted, 'tables_truncated', r.tables_truncated,
    'error', r.error,
    'summary', format('%s %s: %s transactions, %s inserted, %s updated, %s deleted', r.kind, r.status,
                      r.transactions, r.rows_inserted, r.rows_updated, r.rows_deleted)
                || CASE WHEN r.error IS NOT NULL THEN ' - ' || r.error ELSE '' END,
    'source_namespace', coalesce(api, format('postgres://%s:%s', coalesce(sluice._conninfo_part(ci, 'host'), 'localhost'),
                                             coalesce(sluice._conninfo_part(ci, 'port'), '5432'))),
    'target_namespace', format('postgres://%s:%s', coalesce(host(inet_server_addr()), 'localhost'), current_setting('port')),
    'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'input', CASE WHEN api IS NULL
                       THEN format('%s.%s.%s', coalesce(sluice._conninfo_part(ci, 'dbname'), 'postgres'), pt.source_schema, pt.source_table)
                       ELSE (SELECT e.path FROM sluice._http_endpoint e
                              WHERE (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table)) END,
         'output', format('%s.%s.%s', current_database(), pt.target_schema, pt.target_table),
         'fields', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', c.column_name, 'type', c.data_type) ORDER BY c.position), '[]')
                      FROM sluice._contract_column c
                     WHERE (c.pipeline_id, c.source_schema, c.source_table, c.contract_version)
                           = (pt.pipeline_id, pt.source_schema, pt.source_table, pt.contract_version)),
         'assertions', (SELECT coalesce(jsonb_agg(jsonb_build_object('assertion', e.kind, 'success', er.success)
                                                  || CASE WHEN cardinality(e.column_names) = 1
                                                          THEN jsonb_build_object('column', e.column_names[1]) ELSE '{}' END
                                                  ORDER BY e.expectation_id), '[]')
                          FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
                         WHERE er.run_id = r.run_id
                           AND (e.pipeline_id, e.source_schema, e.source_table) = (pt.pipeline_id, pt.source_schema, pt.source_table))
         ) ORDER BY pt.source_schema, pt.source_table), '[]')
       FROM sluice._pipeline_table pt WHERE pt.pipeline_id = p.pipeline_id),
    -- the models the run maintained: datamart tables and models in, the model out
    'models', (SELECT coalesce(jsonb_agg(jsonb_build_object(
         'output', format('%s.%s.%s', current_database(), n.nspname, c.relname),
         'inputs', (SELECT coalesce(jsonb_agg(format('%s.%s.%s', current_database(), n2.nspname, c2.relname)
                                              ORDER BY n2.nspname, c2.relname), '[]')
                      FROM sluice._model_input i JOIN pg_class c2 ON c2.oid = i.relid
                      JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
                     WHERE i.model_id = m.model_id),
         'fields', (SELECT v.columns FROM sluice._model_version v
                     WHERE v.model_id = m.model_id AND v.version = m.contract_version),
         'maintenance', rm.maintenance) ORDER BY m.depth, m.model_id), '[]')
       FROM sluice._run_model rm JOIN sluice._model m USING (model_id)
       JOIN pg_class c ON c.oid = m.model_table JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE rm.run_id = r.run_id));
  PERFORM sluice._emit(p.name, 'refresh_started', body);
  PERFORM sluice._emit(p.name, CASE WHEN r.status = 'succeeded' THEN 'refresh_completed' ELSE 'refresh_failed' END, body);
  IF r.status = 'paused' THEN
    PERFORM sluice._emit(p.name, 'pipeline_paused',
      jsonb_build_object('run_id', r.run_id, 'reason', r.error, 'summary', 'paused: ' || r.error));
  END IF;
  SELECT jsonb_agg(jsonb_build_object('expectation', e.name, 'kind', e.kind, 'severity', e.severity,
                                      'evaluated', er.evaluated, 'failed', er.failed, 'sample_keys', er.sample_keys)
                   ORDER BY e.expectation_id)
    INTO bad
    FROM sluice._expectation_result er JOIN sluice._expectation e USING (expectation_id)
   WHERE er.run_id = r.run_id AND NOT er.success;
  IF bad IS NOT NULL THEN
    PERFORM sluice._emit(p.name, 'expectation_failed',
      jsonb_build_object('run_id', r.run_id, 'failures', bad,
                         'summary', format('%s expectation(s) failed in run %s', jsonb_array_length(bad), r.run_id)));
  END IF;
  IF quarantined > 0 THEN
    PERFORM sluice._emit(p.name, 'quarantine',
      jsonb_build_object('run_id', r.run_id, 'rows', quarantined,
                         'summary', format('%s row(s) quarantined in run %s', quarantined, r.run_id)));
  END IF;
END
$$;
COMMENT ON FUNCTION sluice._emit_run(bigint, bigint) IS 'Private: queue the events of a recorded run.';

CREATE FUNCTION sluice._notifier_wanted()
RETURNS boolean
AS 'MODULE_PATHNAME', 'sluice_notifier_wanted'
LANGUAGE C VOLATILE;

CREATE FUNCTION sluice._emit(pipeline text, event text, body jsonb)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  INSERT INTO sluice._outbox (destination, pipeline, event, body)
  SELECT d.name, pipeline, event, body FROM sluice._destination d
   WHERE '*' = ANY (d.events) OR event = ANY (d.events);
END;
COMMENT ON FUNCTION sluice._emit(text, text, jsonb) IS 'Private: queue an event for every destination that wants it.';

CREATE FUNCTION sluice._announce_failure(pipeline text, body jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'sluice_announce_failure'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice._announce_failure(text, jsonb) IS
  'Private: queue the event of a failed refresh (called by sluice.refresh over its own connection, so the event survives the rollback).';
