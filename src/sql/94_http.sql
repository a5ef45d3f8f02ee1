/*
 * src/sql/94_http.sql -- HTTP JSON sources: REST APIs pulled into the datamart.
 *
 * The catalog of HTTP sources (_http_source, its secrets the owner's only)
 * and of endpoints (_http_endpoint: where each datamart table's rows come
 * from, how pages follow each other, the cursor), create_http_source,
 * create_http_pipeline and the views http_sources and http_endpoints.  An
 * HTTP pipeline is a pipeline like the others (sluice._pipeline, its tables'
 * contracts, expectations, quarantine, versions, runs, events): only its
 * source differs.  sluice.refresh pulls it (src/httpapply.c).
 */

CREATE TABLE sluice._http_source (
    name        text PRIMARY KEY REFERENCES sluice._source (name) ON DELETE CASCADE,
    base_url    text NOT NULL,
    auth        text NOT NULL DEFAULT 'none' CHECK (auth IN ('none', 'bearer', 'basic')),
    username    text,
    secret      text,
    headers     jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(headers) = 'object')
);
COMMENT ON TABLE sluice._http_source IS
  'Private: HTTP JSON sources. Holds secrets (bearer tokens, passwords, maybe query parameters of base_url): readable by the extension owner only.';
REVOKE ALL ON sluice._http_source FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('sluice._http_source', '');

CREATE TABLE sluice._http_endpoint (
    pipeline_id    integer NOT NULL,
    source_schema  text NOT NULL,
    source_table   text NOT NULL,
    path           text NOT NULL,
    rows_path      text,
    cursor_kind    text NOT NULL DEFAULT 'none' CHECK (cursor_kind IN ('none', 'since', 'id', 'etag')),
    cursor_param   text,
    cursor_field   text,
    paging         text NOT NULL DEFAULT 'none' CHECK (paging IN ('none', 'link', 'page', 'cursor')),
    page_param     text,
    next_field     text,
    cursor_value   text,
    etag           text,
    pulled_at      timestamptz,
    PRIMARY KEY (pipeline_id, source_schema, source_table),
    FOREIGN KEY (pipeline_id, source_schema, source_table)
        REFERENCES sluice._pipeline_table ON DELETE CASCADE
);
COMMENT ON TABLE sluice._http_endpoint IS
  'Private: the endpoint feeding each datamart table of an HTTP pipeline, its pagination and its cursor (moved only by a refresh that committed).';
REVOKE ALL ON sluice._http_endpoint FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('sluice._http_endpoint', '');

CREATE FUNCTION sluice._mask_url(url text)
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_mask_url'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sluice._mask_url(text) IS
  'Private: a URL without its user and password, the values of its query parameters replaced by ********.';

CREATE FUNCTION sluice._create_http_source(name text, base_url text, bearer_token text,
                                           username text, password text, headers jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  url text;
BEGIN
  IF name IS NULL OR base_url IS NULL THEN
    RAISE EXCEPTION 'name and base_url must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF name !~ '^[a-z_][a-z0-9_]{0,47}$' THEN
    RAISE EXCEPTION 'invalid source name "%"', name USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'Names are 1 to 48 lower-case letters, digits or underscores, starting with a letter or underscore.';
  END IF;
  url := sluice._check_url(base_url);
  IF url <> sluice._mask_url(url) AND position('@' IN split_part(url, '/', 3)) > 0 THEN
    RAISE EXCEPTION 'base_url must not hold a user or password' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Give them as username => and password => (basic authentication): they are stored apart and never shown.';
  END IF;
  IF bearer_token IS NOT NULL AND (username IS NOT NULL OR password IS NOT NULL) THEN
    RAISE EXCEPTION 'give either bearer_token or username and password, not both' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'An HTTP source authenticates one way.';
  END IF;
  IF (username IS NULL) <> (password IS NULL) THEN
    RAISE EXCEPTION 'basic authentication needs both username and password' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Give username => and password => together.';
  END IF;
  IF headers IS NOT NULL AND (jsonb_typeof(headers) <> 'object' OR EXISTS (
       SELECT 1 FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$')) THEN
    RAISE EXCEPTION 'headers must be a JSON object of header names to string values' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'For example ''{"Accept": "application/json"}''.';
  END IF;
  IF EXISTS (SELECT 1 FROM sluice._source s WHERE s.name = _create_http_source.name) THEN
    RAISE EXCEPTION 'source "%" already exists', name USING ERRCODE = 'duplicate_object',
      HINT = 'Drop it with sluice.drop_source() first, or choose another name.';
  END IF;
  -- conninfo '': a source that is not a PostgreSQL server
  INSERT INTO sluice._source (name, conninfo) VALUES (name, '');
  INSERT INTO sluice._http_source (name, base_url, auth, username, secret, headers)
  VALUES (name, url,
          CASE WHEN bearer_token IS NOT NULL THEN 'bearer' WHEN username IS NOT NULL THEN 'basic' ELSE 'none' END,
          username, coalesce(bearer_token, password), coalesce(headers, '{}'));
  RETURN name;
END
$$;
COMMENT ON FUNCTION sluice._create_http_source(text, text, text, text, text, jsonb) IS
  'Private: the checks and rows of sluice.create_http_source.';
REVOKE ALL ON FUNCTION sluice._create_http_source(text, text, text, text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION sluice.create_http_source(name text, base_url text, bearer_token text DEFAULT NULL,
                                          username text DEFAULT NULL, password text DEFAULT NULL,
                                          headers jsonb DEFAULT '{}')
RETURNS text
AS 'MODULE_PATHNAME', 'sluice_create_http_source'
LANGUAGE C VOLATILE CALLED ON NULL INPUT
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sluice.create_http_source(text, text, text, text, text, jsonb) IS
  'Declares a REST API returning JSON as a source: its base URL, and a bearer token or a user and password (basic), and extra headers. Secrets are never echoed, and stored where only the owner can read them.';
REVOKE ALL ON FUNCTION sluice.create_http_source(text, text, text, text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION sluice.create_http_pipeline(name text, source text, endpoints jsonb,
                                            target_schema name DEFAULT 'public')
RETURNS sluice.refresh_result
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pid integer;
  ep jsonb;
  col jsonb;
  tbl text;
  typ text;
  typoid oid;
  keys text[];
  ddl text;
  pos integer;
  cur jsonb;
  pag jsonb;
  colnames text[];
  r sluice.refresh_result;
BEGIN
  IF name IS NULL OR source IS NULL OR endpoints IS NULL OR target_schema IS NULL THEN
    RAISE EXCEPTION 'name, source, endpoints and target_schema must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM sluice._http_source h WHERE h.name = source) THEN
    RAISE EXCEPTION 'HTTP source "%" does not exist', source USING ERRCODE = 'undefined_object',
      HINT = 'Declare it with sluice.create_http_source(); sluice.http_sources lists the known ones.';
  END IF;
  IF jsonb_typeof(endpoints) <> 'array' OR jsonb_array_length(endpoints) = 0 THEN
    RAISE EXCEPTION 'endpoints must be a non-empty JSON array of endpoint objects' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'For example ''[{"table": "students", "path": "/students", "key": ["id"], "columns": [{"name": "id", "path": "id", "type": "integer"}]}]''.';
  END IF;
  IF to_regnamespace(quote_ident(target_schema)) IS NULL THEN
    EXECUTE format('CREATE SCHEMA %I', target_schema);
  END IF;
  INSERT INTO sluice._pipeline (name, source_name, publication, publication_owned, slot_name,
                                origin_name, target_schema, consistent_lsn)
  VALUES (name, source, '', false, '', 'pg_sluice_http_' || name, target_schema, '0/0')
  RETURNING pipeline_id INTO pid;
  FOR ep IN SELECT e FROM jsonb_array_elements(endpoints) e LOOP
    tbl := ep->>'table';
    IF jsonb_typeof(ep) <> 'object' OR tbl IS NULL OR ep->>'path' IS NULL
       OR jsonb_typeof(ep->'columns') IS DISTINCT FROM 'array' OR jsonb_array_length(ep->'columns') = 0
       OR jsonb_typeof(ep->'key') IS DISTINCT FROM 'array' OR jsonb_array_length(ep->'key') = 0 THEN
      RAISE EXCEPTION 'endpoint % must have "table", "path", "key" (an array of column names) and "columns" (an array)', ep
        USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Each column is {"name": ..., "path": "a.b", "type": ..., "required": true|false}.';
    END IF;
    IF left(ep->>'path', 1) <> '/' THEN
      RAISE EXCEPTION 'endpoint path "%" must start with /', ep->>'path' USING ERRCODE = 'invalid_parameter_value',
        HINT = 'The path is appended to the source''s base_url.';
    END IF;
    keys := ARRAY(SELECT jsonb_array_elements_text(ep->'key'));
    ddl := '';
    pos := 0;
    colnames := '{}';
    FOR col IN SELECT c FROM jsonb_array_elements(ep->'columns') c LOOP
      pos := pos + 1;
      IF col->>'name' IS NULL OR col->>'path' IS NULL OR col->>'type' IS NULL THEN
        RAISE EXCEPTION 'column % of endpoint "%" must have "name", "path" and "type"', col, tbl
          USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"name": "id", "path": "id", "type": "integer"}.';
      END IF;
      IF col->>'path' !~ '^[^.]+(\.[^.]+)*$' THEN
        RAISE EXCEPTION 'JSON path "%" of column "%" is not a dotted path', col->>'path', col->>'name'
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Write the keys from the row object down, separated by dots: "address.city".';
      END IF;
      typ := sluice._type_name(col->>'type');
      typoid := typ::regtype::oid;
      colnames := colnames || (col->>'name');
      ddl := ddl || CASE WHEN ddl = '' THEN '' ELSE ', ' END || format('%I %s', col->>'name', typ)
             || CASE WHEN (col->>'name') = ANY (keys) OR coalesce((col->>'required')::boolean, false)
                     THEN ' NOT NULL' ELSE '' END;
    END LOOP;
    IF NOT keys <@ colnames THEN
      RAISE EXCEPTION 'key % of endpoint "%" names columns that are not among its columns %', keys, tbl, colnames
        USING ERRCODE = 'invalid_parameter_value', HINT = 'The key lists column names, not JSON paths.';
    END IF;
    EXECUTE format('CREATE TABLE %I.%I (%s, PRIMARY KEY (%s))', target_schema, tbl, ddl,
                   (SELECT string_agg(quote_ident(k), ', ') FROM unnest(keys) k));
    INSERT INTO sluice._pipeline_table (pipeline_id, source_schema, source_table, target_schema, target_table,
                                        key_columns, replica_identity, drift_policy)
    VALUES (pid, source, tbl, target_schema, tbl, keys, 'd', coalesce(ep->>'drift_policy', 'freeze'));
    INSERT INTO sluice._contract_column (pipeline_id, source_schema, source_table, contract_version, position,
                                         column_name, source_column, data_type, not_null, is_key, source_type)
    SELECT pid, source, tbl, 1, a.attnum, a.attname, c->>'path', format_type(a.atttypid, a.atttypmod),
           a.attnotnull, a.attname::text = ANY (keys), a.atttypid
      FROM jsonb_array_elements(ep->'columns') c
      JOIN pg_attribute a ON a.attrelid = format('%I.%I', target_schema, tbl)::regclass AND a.attname = c->>'name';
    cur := coalesce(ep->'cursor', '{"kind": "none"}');
    pag := coalesce(ep->'pagination', '{"kind": "none"}');
    IF cur->>'kind' IN ('since', 'id') AND (cur->>'param' IS NULL OR cur->>'field' IS NULL) THEN
      RAISE EXCEPTION 'cursor of endpoint "%" needs "param" (the query parameter) and "field" (the JSON path of the rows it follows)', tbl
        USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"kind": "since", "param": "since", "field": "updated_at"}.';
    END IF;
    IF cur->>'field' IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(ep->'columns') c WHERE c->>'path' = cur->>'field') THEN
      RAISE EXCEPTION 'cursor field "%" of endpoint "%" is not the path of one of its columns', cur->>'field', tbl
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Map the field to a column too.';
    END IF;
    IF pag->>'kind' = 'page' AND pag->>'param' IS NULL OR pag->>'kind' = 'cursor' AND (pag->>'param' IS NULL OR pag->>'field' IS NULL) THEN
      RAISE EXCEPTION 'pagination of endpoint "%" needs "param" (and "field" for a cursor token in the body)', tbl
        USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"kind": "cursor", "field": "next", "param": "cursor"}.';
    END IF;
    INSERT INTO sluice._http_endpoint (pipeline_id, source_schema, source_table, path, rows_path, cursor_kind,
                                       cursor_param, cursor_field, paging, page_param, next_field)
    VALUES (pid, source, tbl, ep->>'path', ep->>'rows', coalesce(cur->>'kind', 'none'), cur->>'param', cur->>'field',
            coalesce(pag->>'kind', 'none'), pag->>'param', pag->>'field');
  END LOOP;
  r := sluice.refresh(name);
  r.kind := 'initial_copy';
  RETURN r;
END
$$;
COMMENT ON FUNCTION sluice.create_http_pipeline(text, text, jsonb, name) IS
  'Creates a pipeline from an HTTP source: one datamart table per endpoint, mapped by a declared contract (JSON paths to typed columns, a key), then pulls every endpoint once.';
REVOKE ALL ON FUNCTION sluice.create_http_pipeline(text, text, jsonb, name) FROM PUBLIC;

CREATE VIEW sluice.http_sources AS
SELECT h.name,
       sluice._mask_url(h.base_url) AS base_url,
       h.auth,
       h.username,
       CASE WHEN h.secret IS NOT NULL THEN '********' END AS secret,
       (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.jsonb_object_keys(h.headers) k) AS header_names,
       s.created_at,
       s.created_by
  FROM sluice._http_source h JOIN sluice._source s ON s.name = h.name;
COMMENT ON VIEW sluice.http_sources IS 'HTTP JSON sources (secrets masked).';
COMMENT ON COLUMN sluice.http_sources.name IS 'Source name.';
COMMENT ON COLUMN sluice.http_sources.base_url IS 'Base URL, the values of its query parameters replaced by ********.';
COMMENT ON COLUMN sluice.http_sources.auth IS 'none, bearer or basic.';
COMMENT ON COLUMN sluice.http_sources.username IS 'User of basic authentication.';
COMMENT ON COLUMN sluice.http_sources.secret IS '******** when a token or password is stored; never the secret.';
COMMENT ON COLUMN sluice.http_sources.header_names IS 'Names of the extra headers sent (their values may be secrets: never shown).';
COMMENT ON COLUMN sluice.http_sources.created_at IS 'When the source was declared.';
COMMENT ON COLUMN sluice.http_sources.created_by IS 'Role that declared it.';
REVOKE ALL ON sluice.http_sources FROM PUBLIC;

CREATE VIEW sluice.http_endpoints AS
SELECT p.name AS pipeline,
       e.source_table AS endpoint,
       pt.target_schema,
       pt.target_table,
       e.path,
       e.rows_path,
       e.cursor_kind,
       CASE WHEN sluice._readable(pt.target_schema, pt.target_table)
            THEN CASE WHEN e.cursor_kind = 'etag' THEN e.etag ELSE e.cursor_value END
       END AS cursor_value,
       e.paging,
       e.pulled_at
  FROM sluice._http_endpoint e
  JOIN sluice._pipeline p ON p.pipeline_id = e.pipeline_id
  JOIN sluice._pipeline_table pt ON pt.pipeline_id = e.pipeline_id AND pt.source_schema = e.source_schema
                                AND pt.source_table = e.source_table;
COMMENT ON VIEW sluice.http_endpoints IS 'Endpoints of HTTP pipelines, with their cursors.';
COMMENT ON COLUMN sluice.http_endpoints.pipeline IS 'Pipeline name.';
COMMENT ON COLUMN sluice.http_endpoints.endpoint IS 'Endpoint name (the datamart table it feeds).';
COMMENT ON COLUMN sluice.http_endpoints.target_schema IS 'Schema of the datamart table.';
COMMENT ON COLUMN sluice.http_endpoints.target_table IS 'The datamart table.';
COMMENT ON COLUMN sluice.http_endpoints.path IS 'Path appended to the source''s base URL.';
COMMENT ON COLUMN sluice.http_endpoints.rows_path IS 'Dotted path of the array of rows in a page (NULL: the page is the array).';
COMMENT ON COLUMN sluice.http_endpoints.cursor_kind IS 'none, since (updated_at parameter), id (high-water mark) or etag (If-None-Match).';
COMMENT ON COLUMN sluice.http_endpoints.cursor_value IS 'The cursor the next refresh starts from (the ETag for etag); moved only by a refresh that committed. NULL for a role that cannot SELECT the table: a since or id cursor is a value of its rows.';
COMMENT ON COLUMN sluice.http_endpoints.paging IS 'none, link (Link: rel="next"), page (page number parameter) or cursor (a token in the body).';
COMMENT ON COLUMN sluice.http_endpoints.pulled_at IS 'When the last committed refresh pulled the endpoint.';
GRANT SELECT ON sluice.http_endpoints TO PUBLIC;
