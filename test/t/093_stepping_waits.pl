# A stepping lookup (relation.c, step_find) stands on the index entry of
# the last row it found.  The write of that row may wait for another
# datamart session: a unique check on a key moved onto one the session
# inserted, a trigger waiting for a lock, a row the session locked FOR
# UPDATE; and a lookup waits for a session writing the row.  Were a pin
# held meanwhile (on the index page, or on the row's table page for a
# freezing VACUUM), a VACUUM of the table would wait for it, and the
# session, queued behind that VACUUM (ANALYZE wants the VACUUM's lock),
# would close a cycle the deadlock detector does not see: refresh ->
# session (lock), session -> VACUUM (lock), VACUUM -> refresh (a buffer
# pin, no lock).  All three would hang.  Each case: the refresh waits for
# the session, a VACUUM finishes, the session's ANALYZE finishes; the
# session ends, the refresh completes and the datamart equals live.  Found
# by a hostile pass and a review (2026-12-04).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "autovacuum = off\ndeadlock_timeout = 100ms\n");

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.s (id int PRIMARY KEY, n int);
INSERT INTO app.s SELECT g, g FROM generate_series(1, 1000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres',
	q{SELECT sluice.create_pipeline('p', 'live', ARRAY['app.s'], target_schema => 'm')});

# Poll for at most 30 s (a hang shows as a failure, not as the run's timeout).
sub wait_for
{
	my ($sql, $what) = @_;
	for (1 .. 300)
	{
		return 1 if $mart->safe_psql('postgres', $sql) eq 't';
		usleep(100_000);
	}
	diag("$what: still not so after 30 s; sessions:\n"
		  . $mart->safe_psql('postgres',
			  "SELECT string_agg(left(query, 40) || ' => ' || coalesce(wait_event_type || '/' || wait_event, 'running'), E'\\n')
			     FROM pg_stat_activity WHERE datname = 'postgres' AND backend_type = 'client backend'
			      AND state = 'active' AND pid <> pg_backend_pid()"));
	return 0;
}

# $change runs on live; the datamart session runs $hold in an open
# transaction; the refresh must wait for it ($wait_event).
sub scenario
{
	my ($name, $change, $hold, $wait_event, $vacuum_sql) = @_;
	$vacuum_sql //= 'VACUUM m.s;';

	# dead rows in the datamart table, so that VACUUM goes through its index
	$live->safe_psql('postgres',
		"DELETE FROM app.s WHERE id IN (SELECT id FROM app.s WHERE id > 100 ORDER BY id LIMIT 50)");
	$mart->safe_psql('postgres', "SELECT sluice.refresh('p')");
	$live->safe_psql('postgres', $change);

	my $session = $mart->background_psql('postgres', on_error_stop => 0);
	$session->query_safe("BEGIN; $hold");
	my $refresh = $mart->background_psql('postgres', on_error_stop => 0);
	$refresh->query_until(qr/go/, "\\echo go\nSELECT status FROM sluice.refresh('p');\n");
	ok( wait_for(
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT status FROM sluice.refresh%' AND wait_event = '$wait_event'",
			"$name: the refresh waits"),
		"$name: the refresh waits for the datamart session ($wait_event)");

	my $vacuum = $mart->background_psql('postgres', on_error_stop => 0);
	$vacuum->query_until(qr/go/, "\\echo go\n$vacuum_sql\n");
	# the VACUUM has finished, or waits for a pin (else the session's
	# ANALYZE could take the lock first and keep it until it ends)
	ok( wait_for(
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE query = '$vacuum_sql' AND state = 'active' AND wait_event IS DISTINCT FROM 'BufferPin'",
			"$name: VACUUM done or waiting for a pin"),
		"$name: the VACUUM finished or waits for a pin");
	# the session now queues behind the VACUUM, if it still runs
	$session->query_until(qr/go/, "\\echo go\nANALYZE m.s;\n");
	ok( wait_for(
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE query IN ('$vacuum_sql', 'ANALYZE m.s;') AND state = 'active'",
			"$name: VACUUM and ANALYZE"),
		"$name: a VACUUM of the table and the session behind it finish while the refresh waits");

	# end it all whatever happened: cancel a VACUUM still stuck
	$mart->safe_psql('postgres',
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = '$vacuum_sql' AND state = 'active'");
	$session->query("ROLLBACK");
	$session->quit;
	$vacuum->quit;
	like($refresh->query("SELECT 'done'"), qr/^succeeded\s+done$/, "$name: the refresh ended, and succeeded");
	$refresh->quit;
	is($mart->safe_psql('postgres', "SELECT status FROM sluice.runs WHERE pipeline = 'p' ORDER BY run_id DESC LIMIT 1"),
		'succeeded', "$name: the refresh succeeded once the session ended");
	same_tables($live, $mart, [ [ 'app.s', 'm.s' ] ], $name);
}

# Control: a moved key looked up from the root (no earlier ascending lookup).
scenario('root lookup', "UPDATE app.s SET id = 5000 WHERE id = 2",
	"INSERT INTO m.s VALUES (5000, 0);", 'transactionid');

# Two ascending lookups: the second, found by stepping, moves its key onto
# one the session inserted; its unique check waits for the session.
scenario('stepping, moved key',
	"BEGIN; UPDATE app.s SET n = -1 WHERE id = 3; UPDATE app.s SET id = 5001 WHERE id = 4; COMMIT;",
	"INSERT INTO m.s VALUES (5001, 0);", 'transactionid');

# A row the session locked FOR UPDATE, found by stepping.
scenario('stepping, row locked FOR UPDATE',
	"BEGIN; UPDATE app.s SET n = -4 WHERE id = 7; UPDATE app.s SET n = -4 WHERE id = 8; COMMIT;",
	"SELECT * FROM m.s WHERE id = 8 FOR UPDATE;", 'transactionid');

# A row the session is updating: the lookup waits for the session (from
# the root: stepping leaves a row being written to it).
scenario('lookup waits for an update',
	"BEGIN; UPDATE app.s SET n = -6 WHERE id = 11; UPDATE app.s SET n = -6 WHERE id = 12; COMMIT;",
	"UPDATE m.s SET n = 0 WHERE id = 12;", 'transactionid');

# A freezing VACUUM also waits for a cleanup lock on the table page of the
# row found (its other rows need freezing), so no pin on it either.
scenario('stepping, moved key, VACUUM (FREEZE)',
	"BEGIN; UPDATE app.s SET n = -1 WHERE id = 13; UPDATE app.s SET id = 5002 WHERE id = 14; COMMIT;",
	"INSERT INTO m.s VALUES (5002, 0);", 'transactionid', 'VACUUM (FREEZE) m.s;');

# A BEFORE trigger on the datamart table waits for a lock the session holds
# (the second, stepped row only).
$mart->safe_psql('postgres', q{
CREATE FUNCTION public.wait42() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN IF NEW.n = -3 THEN PERFORM pg_advisory_xact_lock(42); END IF; RETURN NEW; END$$;
CREATE TRIGGER w BEFORE UPDATE ON m.s FOR EACH ROW EXECUTE FUNCTION public.wait42();
ALTER TABLE m.s ENABLE ALWAYS TRIGGER w;
});
scenario('stepping, trigger waits',
	"BEGIN; UPDATE app.s SET n = -2 WHERE id = 5; UPDATE app.s SET n = -3 WHERE id = 6; COMMIT;",
	"SELECT pg_advisory_xact_lock(42);", 'advisory');

$mart->safe_psql('postgres', 'CREATE EXTENSION amcheck');
indexes_hold_rows($mart, 'm', 'at the end');
unlike(slurp_file($mart->logfile), qr/buffer refcount leak|resource was not closed|leaked/,
	'no pin or scan left behind');
done_testing();
