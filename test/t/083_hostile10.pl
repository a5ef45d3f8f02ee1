# Hostile review of session 9 (session 10): each case a bug found by
# attacking what session 9 added as its users would, that failed before
# its fix.
#  1. sluice.workers.waiting (every role reads it) showed the error a
#     pipeline backs off from as it is, while sluice.status.last_error and
#     sluice.runs.error show it only to the pipeline's operators and to
#     roles that read all its tables: a trigger's RAISE with the failing
#     row's value reached a reader that cannot read the table, between the
#     death of the pipeline's pool worker and its next start.
# Names with quotes, spaces, capitals and non-ASCII; a non-superuser
# operator; a reader with no SELECT on the datamart tables.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.max_workers = 2
pg_sluice.naptime = 50ms
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "Ün app";
CREATE TABLE "Ün app"."Pay Ö" (id int PRIMARY KEY, v text);
INSERT INTO "Ün app"."Pay Ö" SELECT g, 'ok ' || g FROM generate_series(1, 10) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE "Øps 'op'" LOGIN;
CREATE ROLE "Rëader" LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO "Øps 'op'";
});
my $op = q{SET ROLE "Øps 'op'"; };
my $reader = q{SET ROLE "Rëader"; };

# --- 1. sluice.workers.waiting masks an error as sluice.status does ---------
# a trigger of the owner's refuses a row, naming its value, after a pause
# long enough to end its worker in the middle of the batch
$mart->safe_psql('postgres', q{SET ROLE etl;
SELECT sluice.create_pipeline('leak', 'live', ARRAY['"Ün app"."Pay Ö"'], target_schema => 'Leak ö');
CREATE FUNCTION "Leak ö".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.v LIKE 'salary%' THEN
    PERFORM pg_sleep(1.5);
    RAISE EXCEPTION 'refused %', NEW.v;
  END IF;
  RETURN NEW;
END$$;
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON "Leak ö"."Pay Ö" FOR EACH ROW EXECUTE FUNCTION "Leak ö".refuse();
});
$mart->safe_psql('postgres', qq{${op}SELECT sluice.start('leak')});
$mart->safe_psql('postgres', q{GRANT USAGE ON SCHEMA "Leak ö" TO "Rëader"});
$live->safe_psql('postgres', q{UPDATE "Ün app"."Pay Ö" SET v = 'salary 987654' WHERE id = 3});
ok($mart->poll_query_until('postgres',
	q{SELECT count(*) >= 2 FROM sluice.runs WHERE pipeline = 'leak' AND error ~ 'salary 987654'}),
	'the batch fails on the trigger, its error naming the value');
ok($mart->poll_query_until('postgres', q{SELECT in_batch FROM sluice.workers WHERE pipeline = 'leak'}),
	'the worker tries the batch again');
is($mart->safe_psql('postgres',
	q{SELECT count(pg_terminate_backend(worker_pid)) FROM sluice.workers WHERE pipeline = 'leak' AND in_batch}),
	'1', 'its worker ends in the middle of the batch');
# until a worker serves it again, the pipeline waits: what does a reader read?
my $seen = '';
my $deadline = time() + 60;
while ($seen eq '' && time() < $deadline)
{
	$seen = $mart->safe_psql('postgres',
		qq{${reader}SELECT coalesce(waiting, '') FROM sluice.workers WHERE pipeline = 'leak' AND worker IS NULL});
	Time::HiRes::sleep(0.02) if $seen eq '';
}
isnt($seen, '', 'a reader sees the pipeline wait for a worker, with a reason');
unlike($seen, qr/987654/, 'not the value of a row it cannot read');
like($seen, qr/^an error \(shown to the pipeline's operators/, 'it reads that there was an error');
unlike($mart->safe_psql('postgres', qq{${reader}SELECT coalesce(last_error, '') FROM sluice.status WHERE pipeline = 'leak'}),
	qr/987654/, 'as sluice.status says');
like($mart->safe_psql('postgres', qq{${op}SELECT coalesce(last_error, '') FROM sluice.status WHERE pipeline = 'leak'}),
	qr/refused salary 987654/, 'its operator reads the error');
$mart->safe_psql('postgres', q{GRANT SELECT ON "Leak ö"."Pay Ö" TO "Rëader"});
is($mart->safe_psql('postgres', qq{${reader}SELECT count(*) > 0 FROM sluice.runs WHERE pipeline = 'leak' AND error ~ '987654'}),
	't', 'once the reader reads the table, it reads the error');
# the owner drops the trigger: the row arrives, nothing else was applied
$mart->safe_psql('postgres', q{SET ROLE etl; DROP TRIGGER refuse ON "Leak ö"."Pay Ö"});
ok($mart->poll_query_until('postgres', q{SELECT v = 'salary 987654' FROM "Leak ö"."Pay Ö" WHERE id = 3}),
	'without the trigger the row arrives');
is(checksum($mart, '"Leak ö"."Pay Ö"'), checksum($live, '"Ün app"."Pay Ö"'), 'the datamart equals live');
$mart->safe_psql('postgres', q{SELECT sluice.stop('leak')});

done_testing();
