# From a hostile pass (2026-12-04): the continuous worker (walsender transport) applies ascending
# and descending updates, deletes and inserts again, while datamart sessions
# VACUUM the table in a loop, lock rows FOR KEY SHARE / FOR UPDATE /
# FOR NO KEY UPDATE for a moment, and run VACUUM FULL, CLUSTER and REINDEX
# CONCURRENTLY.  Nothing may hang (every step within the test's timeouts),
# the datamart must end equal to live, its indexes and heap must verify, and
# no pin may leak.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $live = new_live('live', conf => "logical_decoding_work_mem = 64kB\n");
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 20
pg_sluice.worker_transport = walsender
pg_sluice.naptime = 100ms
autovacuum = off
deadlock_timeout = 100ms
});
$mart->safe_psql('postgres', "CREATE EXTENSION amcheck");

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.s (id int PRIMARY KEY, n int, email text, pad text);
INSERT INTO app.s SELECT g, g, 'e' || g, repeat('p', 60) FROM generate_series(1, 100000) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{SELECT sluice.create_pipeline('w', 'live', ARRAY['app.s'], target_schema => 'm')});
$mart->safe_psql('postgres', "CREATE UNIQUE INDEX s_email ON m.s (email)");
$mart->safe_psql('postgres', "SELECT sluice.start('w')");

# datamart sessions: a VACUUM loop and row lockers
my $vac = $mart->background_psql('postgres', on_error_stop => 0);
$vac->query_until(qr/go/, "\\echo go\nVACUUM m.s \\watch 0.05\n");
my @lockers;
for my $mode ('FOR KEY SHARE', 'FOR UPDATE', 'FOR NO KEY UPDATE', 'FOR SHARE')
{
	my $l = $mart->background_psql('postgres', on_error_stop => 0);
	$l->query_until(qr/go/, qq{\\echo go
SET lock_timeout = '2s';
DO \$\$ DECLARE i int; BEGIN
  FOR i IN 1..100000 LOOP
    BEGIN
      PERFORM 1 FROM m.s WHERE id BETWEEN (i * 37) % 100000 AND (i * 37) % 100000 $mode;
      PERFORM pg_sleep(0.005);
    EXCEPTION WHEN lock_not_available THEN NULL;
    END;
    COMMIT;
  END LOOP;
END \$\$;
});
	push @lockers, $l;
}

my $t0 = time();
for my $round (1 .. 8)
{
	$live->safe_psql('postgres', qq{
BEGIN;
UPDATE app.s SET n = n + 1 WHERE id % 3 <> 0;
DELETE FROM app.s WHERE id % 97 = $round;
INSERT INTO app.s SELECT g, -g, 'r$round-' || g, 'again' FROM generate_series(1, 100000) g WHERE g % 97 = $round
  ON CONFLICT (id) DO NOTHING;
UPDATE app.s SET email = email || '.' WHERE id % 50 = $round;
COMMIT;
DO \$\$ DECLARE i int; BEGIN
  FOR i IN REVERSE 3000..1 LOOP UPDATE app.s SET n = n - 1 WHERE id = i * 6 + $round; END LOOP;
END \$\$;
UPDATE app.s SET id = id + 100000 WHERE id BETWEEN $round * 100 AND $round * 100 + 20;
DELETE FROM app.s WHERE id BETWEEN $round * 1000 AND $round * 1000 + 300;
});
	if ($round == 3)
	{
		$mart->safe_psql('postgres', "SET lock_timeout = '60s'; VACUUM FULL m.s");
	}
	elsif ($round == 5)
	{
		$mart->safe_psql('postgres', "SET lock_timeout = '60s'; CLUSTER m.s USING s_pkey");
	}
	elsif ($round == 7)
	{
		$mart->safe_psql('postgres', "REINDEX TABLE CONCURRENTLY m.s");
	}
	diag(sprintf("round %d at %.1f s", $round, time() - $t0));
	diag($mart->safe_psql('postgres', "SELECT string_agg(backend_type || ': ' || left(query, 25) || ' => ' || coalesce(wait_event_type, '-') || '/' || coalesce(wait_event, '-'), E'\n') FROM pg_stat_activity WHERE datname = 'postgres' AND pid <> pg_backend_pid() AND (state = 'active' OR backend_type NOT LIKE 'client%') AND backend_type NOT IN ('checkpointer','background writer','walwriter','autovacuum launcher','logical replication launcher')"));
}
wait_same_tables($live, $mart, [['app.s', 'm.s']], 'worker with lockers and vacuum');
diag(sprintf("caught up at %.1f s", time() - $t0));

$mart->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (query LIKE '%DO \$\$%' OR query LIKE 'VACUUM m.s%')");
eval { $_->quit } for @lockers;
eval { $vac->quit };
indexes_hold_rows($mart, 'm', 'after the worker caught up');
heaps_verify($mart, 'm', 'after the worker caught up');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.status WHERE pipeline = 'w' AND state <> 'running'"), '0',
	'the worker is still running');
my $log = slurp_file($mart->logfile);
unlike($log, qr/buffer refcount leak|resource was not closed|leaked|TRAP|terminated by signal/,
	'no pin or scan left behind, no crash');
my @errs = ($log =~ /^.*(?:ERROR|WARNING).*$/mg);
my @shown = grep { !/lock timeout|canceling statement/ } @errs;
splice(@shown, 10) if @shown > 10;
diag("datamart log errors/warnings: " . scalar(@errs) . "\n" . join("\n", @shown));
done_testing();
