-- sluice._regex_match, which row expectations call for ~ and !~, agrees with
-- PostgreSQL's regular expressions: on every pattern form it matches itself,
-- on the forms it hands to PostgreSQL, and on random patterns.
-- In a UTF8 database, so that multibyte characters are characters.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS sluice_regex;
CREATE DATABASE sluice_regex ENCODING 'UTF8' LOCALE 'C' TEMPLATE template0;
\c sluice_regex
SET client_min_messages = warning;
CREATE EXTENSION pg_sluice;
\set VERBOSITY terse

CREATE TEMP TABLE strs (s text);
INSERT INTO strs VALUES (''), ('a'), ('b'), ('ab'), ('ba'), ('aab'), ('abc'), ('abz'), ('zzz'),
  ('A'), ('aA'), ('0'), ('09'), ('a0'), ('-'), ('a-b'), ('.'), ('a.b'), ('a b'), (E'a\nb'), (E'\n'),
  (E'ab\n'), ('é'), ('aé'), ('éa'), ('€'), ('😀'), ('a😀b'), ('['), (']'), ('^'), ('$'), ('a$'), ('\'),
  ('{'), ('a{2}'), ('d41d8cd98f00b204e9800998ecf8427e'), ('d41d8cd98f00b204e9800998ecf8427'),
  ('d41d8cd98f00b204e9800998ecf8427eX'), ('D41D8CD98F00B204E9800998ECF8427E'),
  ('AB-1234'), ('AB-12345'), ('AB-1234567'), ('ab-1234'), ('user@example.org'), ('user@@x'),
  ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa');

CREATE TEMP TABLE pats (p text);
INSERT INTO pats VALUES
  -- the simple forms
  (''), ('a'), ('ab'), ('^a'), ('a$'), ('^a$'), ('^$'), ('^'), ('$'), ('.'), ('^.$'), ('^..$'), ('a.b'),
  ('[ab]'), ('^[ab]+$'), ('[a-z]'), ('^[a-z]*$'), ('[^a]'), ('^[^a]$'), ('^[^a-z0-9]+$'), ('[]a]'),
  ('[^]a]'), ('[-a]'), ('[a-]'), ('^[.]$'), ('[$^]'), ('[ -~]'), ('a*'), ('^a*$'), ('^a+$'), ('^a?$'),
  ('^a?b$'), ('^a*b*$'), ('a{2}'), ('^a{2}$'), ('^a{0}b$'), ('^a{0,0}$'), ('^a{1,2}$'), ('^a{2,}$'),
  ('^a{0,}$'), ('a{0,}b'), ('\.'), ('^a\.b$'), ('\-'), ('\\'), ('\$'), ('^\$$'), ('\['), ('\{'), ('\^'),
  ('^[0-9a-f]{32}$'), ('^[0-9a-fA-F]{32}$'), ('^[A-Z]{2}-[0-9]{4,6}$'), ('^[^@ ]+@[^@ ]+$'),
  ('^.{1,3}$'), ('^.*$'), ('é'), ('^.é'), ('[^0-9]'), ('^a{63}$'), ('^a{64}$'), ('a{1,64}'),
  -- forms left to PostgreSQL
  ('^a{65}$'), ('a|b'), ('(a)'), ('(?i)a'), ('***:a'), ('\d'), ('[[:alpha:]]'), ('[\d]'), ('a*?'),
  ('a+?'), ('a{1,2}?'), ('a**'), ('a{,2}'), ('a{'), ('a}'), (']'), ('a^'), ('$a'), ('^^a'), ('\y'),
  ('[a-z-0]'), ('[z-a]'), ('a{256}'), ('a{3,2}'), ('[[.a.]]'), ('[[=a=]]'), ('\'), ('é+'), ('[é]');

-- which forms are matched without PostgreSQL's engine
SELECT p, sluice._regex_is_simple(p) AS simple FROM pats ORDER BY sluice._regex_is_simple(p) DESC, p COLLATE "C";

-- every pattern on every string: the same answer as ~ (invalid patterns: the same error)
CREATE FUNCTION both_ways(s text, p text, OUT fast boolean, OUT pg boolean) LANGUAGE plpgsql AS $$
BEGIN
  BEGIN fast := sluice._regex_match(s, p); EXCEPTION WHEN OTHERS THEN fast := NULL; END;
  BEGIN pg := s ~ p; EXCEPTION WHEN OTHERS THEN pg := NULL; END;
END $$;
SELECT p, s, b.* FROM pats, strs, both_ways(s, p) b WHERE b.fast IS DISTINCT FROM b.pg;
SELECT count(*) AS pairs, count(*) FILTER (WHERE (both_ways(s, p)).pg) AS matching FROM pats, strs;

-- PostgreSQL's errors stay PostgreSQL's
SELECT sluice._regex_match('a', 'a{3,2}');
SELECT sluice._regex_match('a', '[z-a]');
SELECT sluice._regex_match('a', '(');
CREATE COLLATION sluice_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
SELECT sluice._regex_match('a' COLLATE sluice_ci, 'a');

-- random patterns from the simple forms and a few others, on random strings
SELECT setseed(0.4242);
CREATE FUNCTION pick(a text[]) RETURNS text LANGUAGE sql AS
  $$ SELECT a[1 + floor(random() * array_length(a, 1))::int] $$;
CREATE TEMP TABLE rpats AS
SELECT i, (CASE WHEN random() < 0.4 THEN '^' ELSE '' END) ||
          (SELECT string_agg(pick(ARRAY['a', 'b', 'z', 'A', '0', '-', ' ', '\.', '\-', '\\', '\$', '.', '.', '[ab]', '[a-z]', '[^a]',
                                        '[^a-z0]', '[]a]', '[-a]', '[a-]', '[.]', 'é', '(a|b)', '[[:alpha:]]']) ||
                             pick(ARRAY['', '', '', '*', '+', '?', '{0}', '{1}', '{2}', '{0,1}', '{1,3}', '{2,}', '{0,}', '*?']), '')
             FROM generate_series(1, floor(random() * 5)::int + i * 0)) ||
          (CASE WHEN random() < 0.4 THEN '$' ELSE '' END) AS p
FROM generate_series(1, 3000) i;
CREATE TEMP TABLE rstrs AS
SELECT j, (SELECT coalesce(string_agg(pick(ARRAY['a', 'a', 'b', 'z', 'A', '0', '-', '.', ' ', '\', '$', 'é', '😀', E'\n']), ''), '')
             FROM generate_series(1, floor(random() * 9)::int + j * 0)) AS s
FROM generate_series(1, 40) j;
SELECT count(DISTINCT p) > 1500 AS many_patterns, bool_and(sluice._regex_is_simple(p)) IS FALSE AS some_not_simple,
       count(*) FILTER (WHERE sluice._regex_is_simple(p)) > 1000 AS many_simple FROM rpats;
CREATE TEMP TABLE rres AS SELECT p, s, sluice._regex_match(s, p) AS fast, s ~ p AS pg FROM rpats, rstrs;
SELECT p, s, fast, pg FROM rres WHERE fast IS DISTINCT FROM pg LIMIT 20;
SELECT count(*) FILTER (WHERE pg) > 10000 AS many_matches, count(*) FILTER (WHERE NOT pg) > 10000 AS many_misses FROM rres;

-- in a row expectation, ~ and !~ become sluice._regex_match
CREATE TABLE t (id int PRIMARY KEY, code text);
SELECT pg_get_expr(sluice._compile_predicate('t', $$code ~ '^[A-Z]{2}$' AND code !~ 'Q'$$), 't'::regclass);

-- inputs PostgreSQL's engine cannot convert (from 268,435,455 bytes on)
-- fail as they do with ~, however simple the pattern
SELECT sluice._regex_match(repeat('a', 268435455), '^a');

-- a collation whose locale this machine lacks fails as with ~, and a
-- collation version mismatch warns as with ~ (each in a fresh session: a
-- session loads a collation's locale once)
CREATE COLLATION sluice_gone (provider = libc, locale = 'C.utf8');
UPDATE pg_collation SET collcollate = 'xx_XX.UTF-8', collctype = 'xx_XX.UTF-8' WHERE collname = 'sluice_gone';
CREATE COLLATION sluice_old (provider = icu, locale = 'und');
UPDATE pg_collation SET collversion = '0.0' WHERE collname = 'sluice_old';
\c sluice_regex
\set VERBOSITY terse
SELECT sluice._regex_match('abc' COLLATE sluice_gone, '^a');
\c sluice_regex
\set VERBOSITY terse
SELECT sluice._regex_match('abc' COLLATE sluice_old, '^a');

\c contrib_regression
DROP DATABASE sluice_regex;
