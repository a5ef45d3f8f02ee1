# Settings an operator gives its own role never reach the pool worker that
# runs as it (hostile review 9): the worker connects as the bootstrap
# superuser and takes the role's session authorization, so ALTER ROLE ...
# SET of that role (which it may do itself, and keeps doing once removed
# from the team) is never read.  default_transaction_read_only made every
# batch fail; TimeZone and DateStyle changed what the owner's triggers saw.
# The worker still runs as the operator (session_user, pg_stat_activity),
# its triggers as the owner; once the operator is removed its worker
# streams nothing, and nothing of its settings is in effect after a
# superuser starts the pipeline again; the database's settings still apply.  Names with
# quotes, spaces, capitals and non-ASCII; live and mart compared by checksum.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.naptime = 50ms
TimeZone = 'UTC'
DateStyle = 'ISO, MDY'
});
my $src = 'public."Bücher ""B"""';
my $dst = '"Ziel Ä"."Bücher ""B"""';
$live->safe_psql('postgres', qq{CREATE TABLE $src (id int PRIMARY KEY, v text NOT NULL, at timestamptz NOT NULL DEFAULT '2026-12-04 01:00+00');
INSERT INTO $src (id, v) SELECT g, 'v' || g FROM generate_series(1, 10) g});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', qq{
CREATE ROLE "Eigner E" NOLOGIN;
CREATE ROLE "Öp 'x'" LOGIN;
CREATE ROLE reader LOGIN;
GRANT CREATE ON DATABASE postgres TO "Eigner E";
SELECT sluice.grant_operator('"Eigner E"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO "Eigner E";
GRANT "Eigner E" TO "Öp 'x'";
CREATE TABLE public.seen (id int, who name, session_who name, tz text, ro text, ds text, at_text text);
GRANT INSERT ON public.seen TO PUBLIC;
SET ROLE "Eigner E";
SELECT sluice.create_pipeline('strom', 'live', ARRAY['$src'], target_schema => 'Ziel Ä');
CREATE FUNCTION "Ziel Ä".note() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO public.seen VALUES (NEW.id, current_user, session_user, current_setting('TimeZone'),
    current_setting('default_transaction_read_only'), current_setting('DateStyle'), NEW.at::text);
  RETURN NEW;
END \$\$;
CREATE TRIGGER note AFTER INSERT ON $dst FOR EACH ROW EXECUTE FUNCTION "Ziel Ä".note();
ALTER TABLE $dst ENABLE ALWAYS TRIGGER note;
});

# the operator sets its own role's defaults: one breaks every batch, two
# change what the owner's trigger sees
$mart->safe_psql('postgres', q{SET ROLE "Öp 'x'";
ALTER ROLE CURRENT_USER SET default_transaction_read_only = on;
ALTER ROLE CURRENT_USER SET TimeZone = 'Pacific/Kiritimati';
ALTER ROLE CURRENT_USER SET DateStyle = 'SQL, DMY'});
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'Öp ''x'''}),
	'1', 'the operator gave its role settings');
is($mart->safe_psql('postgres', q{SET ROLE "Öp 'x'"; SELECT sluice.start('strom')}), 't', 'the operator starts the pipeline');
ok($mart->poll_query_until('postgres', q{SELECT state = 'running' FROM sluice.status WHERE pipeline = 'strom'}),
	'its worker runs');
$live->safe_psql('postgres', qq{INSERT INTO $src (id, v) SELECT g, 'neu' || g FROM generate_series(11, 20) g});
wait_same_tables($live, $mart, [[$src, $dst]], 'the role\'s default_transaction_read_only does not stop the worker');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.runs WHERE pipeline = 'strom' AND status = 'failed'}),
	'0', 'no batch failed');
is($mart->safe_psql('postgres', q{SELECT string_agg(DISTINCT concat_ws('|', who, session_who, tz, ro, ds, at_text), ',') FROM public.seen}),
	q{Eigner E|Öp 'x'|UTC|off|ISO, MDY|2026-12-04 01:00:00+00},
	'the trigger ran as the owner in a session of the operator, in the datamart\'s settings, not the role\'s');
is($mart->safe_psql('postgres', q{SELECT a.usename FROM pg_stat_activity a JOIN sluice.status s ON s.worker_pid = a.pid WHERE s.pipeline = 'strom'}),
	q{Öp 'x'}, 'pg_stat_activity shows the worker as the operator');

# the worker's session was authenticated as the bootstrap superuser: code
# the owner wrote (a trigger on its datamart table, immediate or deferred
# to the commit) cannot take that back with SET SESSION AUTHORIZATION
my $boot = $mart->safe_psql('postgres', q{SELECT rolname FROM pg_roles WHERE oid = 10});
$mart->safe_psql('postgres', qq{
CREATE TABLE public.climbed (id int, msg text);
GRANT INSERT ON public.climbed TO PUBLIC;
SET ROLE "Eigner E";
CREATE FUNCTION "Ziel Ä".climb() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
  BEGIN
    EXECUTE 'SET SESSION AUTHORIZATION $boot';
    EXECUTE 'ALTER ROLE "Eigner E" SUPERUSER';
    INSERT INTO public.climbed VALUES (NEW.id, 'climbed');
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO public.climbed VALUES (NEW.id, SQLERRM);
  END;
  RETURN NULL;
END \$\$;
CREATE TRIGGER climb AFTER INSERT ON $dst FOR EACH ROW EXECUTE FUNCTION "Ziel Ä".climb();
ALTER TABLE $dst ENABLE ALWAYS TRIGGER climb;
CREATE CONSTRAINT TRIGGER climb_late AFTER INSERT ON $dst DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION "Ziel Ä".climb();
ALTER TABLE $dst ENABLE ALWAYS TRIGGER climb_late;
});
$live->safe_psql('postgres', qq{INSERT INTO $src (id, v) VALUES (900, 'hoch')});
ok($mart->poll_query_until('postgres', q{SELECT count(*) > 0 FROM public.climbed WHERE id = 900}),
	'the owner\'s trigger ran in the worker');
is($mart->safe_psql('postgres', q{SELECT string_agg(DISTINCT msg, ',') FROM public.climbed}),
	'cannot set parameter "session_authorization" within security-definer function',
	'it could not become the superuser the worker connected as');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_roles WHERE rolsuper AND rolname IN ('Eigner E', 'Öp ''x''')}),
	'0', 'no role was made a superuser');
$mart->safe_psql('postgres', qq{SELECT sluice.stop('strom'); DROP TRIGGER climb ON $dst; DROP TRIGGER climb_late ON $dst;
  DELETE FROM $dst WHERE id = 900;});
$live->safe_psql('postgres', qq{DELETE FROM $src WHERE id = 900});
$mart->safe_psql('postgres', q{SET ROLE "Öp 'x'"; SELECT sluice.start('strom')});
wait_same_tables($live, $mart, [[$src, $dst]], 'with the triggers gone');

# the operator leaves the team; it may still set its own role's defaults.
# After a restart its worker comes back as it and streams nothing (it no
# longer operates the pipeline); a superuser starts the pipeline again.
$mart->safe_psql('postgres', q{SELECT sluice.revoke_operator('"Öp ''x''"');
REVOKE "Eigner E" FROM "Öp 'x'";
SET ROLE "Öp 'x'";
ALTER ROLE CURRENT_USER SET TimeZone = 'Asia/Kathmandu';
ALTER ROLE CURRENT_USER SET lock_timeout = '1ms';
ALTER ROLE CURRENT_USER SET row_security = off});
$mart->restart;
$mart->safe_psql('postgres', 'TRUNCATE public.seen');
$live->safe_psql('postgres', qq{INSERT INTO $src (id, v) SELECT g, 'später' || g FROM generate_series(21, 30) g});
ok($mart->poll_query_until('postgres',
	q{SELECT last_error ~ 'permission denied to stream pipeline "strom"' FROM sluice.status WHERE pipeline = 'strom'}),
	'the removed operator\'s worker streams nothing');
is($mart->safe_psql('postgres', 'SELECT count(*) FROM public.seen'), '0', 'nothing was applied as it');
my $superuser = $mart->safe_psql('postgres', 'SELECT current_user');
$mart->safe_psql('postgres', q{SELECT sluice.stop('strom')});
$mart->safe_psql('postgres', q{SELECT sluice.start('strom')});
wait_same_tables($live, $mart, [[$src, $dst]], 'started again by a superuser');
is($mart->safe_psql('postgres', q{SELECT string_agg(DISTINCT concat_ws('|', session_who, tz, ro, ds, at_text), ',') FROM public.seen}),
	"$superuser|UTC|off|ISO, MDY|2026-12-04 01:00:00+00", 'none of the removed operator\'s settings is in effect');

# what the datamart's administrators set for the database still applies
# (DateStyle: ISO output is the same in every order, the checksums stay comparable)
$mart->safe_psql('postgres', q{ALTER DATABASE postgres SET DateStyle = 'ISO, DMY'; SELECT sluice.stop('strom')});
$mart->safe_psql('postgres', q{TRUNCATE public.seen; SELECT sluice.start('strom')});
$live->safe_psql('postgres', qq{INSERT INTO $src (id, v) VALUES (31, 'Berlin')});
wait_same_tables($live, $mart, [[$src, $dst]], 'after ALTER DATABASE SET');
is($mart->safe_psql('postgres', q{SELECT ds FROM public.seen WHERE id = 31}), 'ISO, DMY',
	'the database\'s settings apply to the worker');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.runs WHERE pipeline = 'strom' AND status = 'failed'
  AND error !~ 'permission denied to stream'}), '0', 'no batch failed but the removed operator\'s');
$mart->safe_psql('postgres', q{SELECT sluice.stop('strom')});

done_testing();
