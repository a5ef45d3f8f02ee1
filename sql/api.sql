-- SQL API and its error paths that need no source server.
-- Every invalid input gets a clear error and changes nothing.
SET search_path = public;
CREATE EXTENSION pg_sluice;
\set VERBOSITY default

SELECT sluice.version() = extversion AS version_matches
  FROM pg_extension WHERE extname = 'pg_sluice';

-- masking: the password never shows
SELECT sluice._mask_conninfo('host=live dbname=app user=etl password=s3cret');
SELECT sluice._mask_conninfo('postgresql://etl:s3cret@live:5433/app');
SELECT sluice._mask_conninfo('host=live dbname=app');

-- sources
SELECT sluice.create_source('live', 'host=127.0.0.1 port=1 dbname=app user=etl password=s3cret');
SELECT name, conninfo FROM sluice.sources;
-- duplicate
SELECT sluice.create_source('live', 'host=elsewhere');
-- bad names
SELECT sluice.create_source('Live', 'host=x');
SELECT sluice.create_source('', 'host=x');
SELECT sluice.create_source('a-b', 'host=x');
-- unparsable connection string: not echoed (it may hold a password)
SELECT sluice.create_source('bad', 'host=x password=s3cret oops');
SELECT sluice.create_source('bad', 'nokey=value');
SELECT count(*) AS sources FROM sluice.sources;
-- alter / drop unknown
SELECT sluice.alter_source('nope', 'host=x');
SELECT sluice.drop_source('nope');
SELECT sluice.alter_source('live', 'host=127.0.0.1 port=1 dbname=app user=etl password=n3w');
SELECT conninfo FROM sluice.sources;

-- pipelines: bad arguments are refused before any connection
SELECT sluice.create_pipeline('p', 'live', ARRAY[]::text[]);
SELECT sluice.create_pipeline('p', 'live', ARRAY['a', NULL]);
SELECT sluice.create_pipeline(NULL, 'live', ARRAY['a']);
SELECT sluice.create_pipeline('P!', 'live', ARRAY['a']);
SELECT sluice.create_pipeline('p', 'live', ARRAY['a'], slot_name => 'Bad-Slot');
SELECT sluice.create_pipeline('p', 'nosuchsource', ARRAY['a']);
-- not inside a transaction block (a slot cannot be rolled back)
BEGIN;
SELECT sluice.create_pipeline('p', 'live', ARRAY['a']);
ROLLBACK;
-- unreachable source: clear error, no password in it
SET pg_sluice.connect_timeout = 5;
SELECT sluice.create_pipeline('p', 'live', ARRAY['a']);
SELECT count(*) AS pipelines FROM sluice.pipelines;

-- unknown pipeline
SELECT sluice.refresh('nope');
SELECT sluice.drop_pipeline('nope');

-- settings
SHOW pg_sluice.connect_timeout;
SHOW pg_sluice.source_decoding_work_mem;
SET pg_sluice.connect_timeout = 0;
SET pg_sluice.nosuchsetting = 1;

-- catalog privileges: secrets are for the owner only
CREATE ROLE sluice_bi;
SET ROLE sluice_bi;
SELECT count(*) FROM sluice.pipelines;
SELECT count(*) FROM sluice.runs;
SELECT * FROM sluice._source;
SELECT * FROM sluice.sources;
SELECT sluice.create_source('x', 'host=x');
SELECT sluice.refresh('x');
RESET ROLE;
DROP ROLE sluice_bi;

-- length checks count characters once; ASCII without decoding
SELECT sluice._length_between('abc', 3, 3) AS exact, sluice._length_between('abc', 4, 10) AS too_short,
       sluice._length_between('abcdef', 0, 5) AS too_long, sluice._length_between('', 0, 0) AS empty,
       CASE WHEN getdatabaseencoding() = 'UTF8'
            THEN sluice._length_between(U&'h\00E9llo', 5, 5) AND NOT sluice._length_between(U&'h\00E9llo', 6, 6)
            ELSE true END AS multibyte;

SELECT sluice.drop_source('live');
DROP EXTENSION pg_sluice;

