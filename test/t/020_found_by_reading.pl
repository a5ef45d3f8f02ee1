# Bugs found by reading the code (issue 15), each shown on real servers:
#  - a foreign key or AFTER trigger on a datamart table made every refresh
#    warn "relcache reference leak";
#  - the error context said "applying ??? (0)" when live was lost between
#    two messages of a transaction;
#  - PGresults leaked on error paths (here: a refresh whose slot is gone,
#    in a loop, must not grow the backend);
#  - the notifier handed events claimed by a failed round back to
#    'pending' only at its start: they stayed 'sending' until a restart;
#  - workers never reported table statistics (autovacuum saw no writes);
#  - sluice.status.next_retry_at stayed NULL while a worker backed off.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 16
pg_sluice.naptime = 50ms
});

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.customers (id int PRIMARY KEY, name text);
CREATE TABLE app.orders (id int PRIMARY KEY, customer_id int, amount int);
CREATE TABLE app.big (id int PRIMARY KEY, v text);
CREATE TABLE app.gone (id int PRIMARY KEY);
CREATE TABLE app.streamed (id int PRIMARY KEY, v text);
INSERT INTO app.customers SELECT g, 'c' || g FROM generate_series(1, 10) g;
INSERT INTO app.orders SELECT g, 1 + g % 10, g FROM generate_series(1, 20) g;
INSERT INTO app.big VALUES (1, 'one');
});
mart_source($mart, $live, 'live');

# --- after triggers and foreign keys of datamart tables: no relcache leak ---
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('a', 'live', ARRAY['app.customers', 'app.orders']);
ALTER TABLE a.orders ADD FOREIGN KEY (customer_id) REFERENCES a.customers (id);
CREATE TABLE public.audit (what text);
CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO public.audit VALUES (TG_OP || ' ' || NEW.id); RETURN NULL; END$$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON a.customers FOR EACH ROW EXECUTE FUNCTION public.audit();
});
$live->safe_psql('postgres', q{
INSERT INTO app.customers VALUES (11, 'c11');
INSERT INTO app.orders VALUES (21, 11, 5);
UPDATE app.customers SET name = 'renamed' WHERE id = 1;
});
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT status || ':' || rows_inserted FROM sluice.refresh('a')");
is($out, 'succeeded:2', 'refresh through a foreign key and an AFTER trigger');
unlike($err, qr/leak/, 'no relcache reference leak reported');
is($mart->safe_psql('postgres', "SELECT string_agg(what, ',' ORDER BY what) FROM public.audit"), 'INSERT 11,UPDATE 1',
	'the AFTER trigger fired once per row');
same_tables($live, $mart, [['app.orders', 'a.orders'], ['app.customers', 'a.customers']], 'triggers and keys');

# --- live lost between two messages of a transaction: a context that says so ---
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('b', 'live', ARRAY['app.big'])");
$live->safe_psql('postgres', q{
BEGIN;
UPDATE app.big SET v = 'changed' WHERE id = 1;
INSERT INTO app.big SELECT g, repeat(md5(g::text), 64) FROM generate_series(2, 3001) g;
COMMIT;
});
# a session of the datamart holds row 1: the refresh waits at the first
# change while live fills the socket with the rest of the transaction
my $locker = $mart->background_psql('postgres');
$locker->query_safe("BEGIN; UPDATE b.big SET v = v WHERE id = 1;");
my ($rout, $rerr) = ('', '');
my $refresh = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $mart->connstr('postgres'), '-c', "SELECT sluice.refresh('b')" ],
	'>', \$rout, '2>', \$rerr);
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sluice.refresh%'"),
	'the refresh waits for the locked row');
ok($live->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%peek_binary_changes%' "
	  . "AND wait_event = 'ClientWrite' AND pid <> pg_backend_pid()"),
	'live is blocked sending the rest of the transaction');
$live->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%peek_binary_changes%' AND pid <> pg_backend_pid()");
$locker->query_safe("ROLLBACK");
$locker->quit;
$refresh->finish;
like($rerr, qr/lost connection to source "live"/, 'the refresh fails: live is gone');
unlike($rerr, qr/\?\?\?/, 'the context names no unknown message type');
like($rerr, qr/pipeline "b" reading the next change of source transaction \d+ committed at/,
	'the context says it was reading the next change of the transaction');
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_inserted FROM sluice.refresh('b')"), 'succeeded:3000',
	'the next refresh applies it all');
same_tables($live, $mart, [['app.big', 'b.big']], 'after the lost connection');

# --- results of failed source queries are freed: a loop of failing refreshes does not grow ---
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('d', 'live', ARRAY['app.gone']);
CREATE PROCEDURE public.failing_refreshes(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    BEGIN
      PERFORM sluice.refresh('d');
    EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL;
    END;
    COMMIT;
  END LOOP;
END $$;
});
$live->safe_psql('postgres', "SELECT pg_drop_replication_slot('sluice_d')");
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.refresh('d')");
like($err, qr/replication slot "sluice_d" of pipeline "d" no longer exists/, 'refresh fails: the slot is gone');
my $s = $mart->background_psql('postgres');
my $pid = $s->query_safe("SELECT pg_backend_pid()");
sub rss_kb
{
	open(my $fh, '<', "/proc/$pid/status") or die "cannot read /proc/$pid/status: $!";
	my ($kb) = map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$fh>;
	close $fh;
	return $kb;
}
$s->query_safe("CALL public.failing_refreshes(300)");
my $rss0 = rss_kb();
$s->query_safe("CALL public.failing_refreshes(1500)");
my $rss1 = rss_kb();
$s->quit;
note("backend RSS before and after 1500 failed refreshes: $rss0 kB, $rss1 kB");
cmp_ok($rss1 - $rss0, '<', 1024, 'failed refreshes leak no memory (RSS grew less than 1 MB over 1500 of them)');

# --- statistics of streamed writes reach pg_stat (autovacuum reads them) ---
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('e', 'live', ARRAY['app.streamed'])");
$mart->safe_psql('postgres', "SELECT sluice.start('e')");
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = 'e'"),
	'worker e runs');
$live->safe_psql('postgres', "INSERT INTO app.streamed SELECT g, 'v' FROM generate_series(1, 500) g");
$live->safe_psql('postgres', "UPDATE app.streamed SET v = 'w' WHERE id <= 100");
ok($mart->poll_query_until('postgres', "SELECT count(*) = 100 FROM e.streamed WHERE v = 'w'"), 'streamed');
ok($mart->poll_query_until('postgres',
	"SELECT n_tup_ins >= 500 AND n_tup_upd >= 100 FROM pg_stat_user_tables WHERE relid = 'e.streamed'::regclass"),
	'the worker reports its writes to the statistics system while it runs');

# --- the notifier hands back what a failed round had claimed ---
$mart->safe_psql('postgres',
	"SELECT sluice.create_webhook('w', 'http://127.0.0.1:9/hook', events => ARRAY['slot_lag'])");
$mart->safe_psql('postgres', "SELECT sluice._emit('x', 'slot_lag', '{\"summary\": \"first\"}')");
ok($mart->poll_query_until('postgres',
	"SELECT attempts >= 1 AND status = 'pending' AND last_error IS NOT NULL FROM sluice.events WHERE body->>'summary' = 'first'"),
	'the notifier runs: a first event was tried and failed (nothing listens)');
# the next event's first attempt cannot be recorded (its row is taken): that round fails after claiming it
$mart->safe_psql('postgres', q{
BEGIN;
SELECT sluice._emit('x', 'slot_lag', '{"summary": "second"}');
INSERT INTO sluice._delivery SELECT event_id, 1, now(), '0', NULL, 'planted' FROM sluice._outbox WHERE body->>'summary' = 'second';
COMMIT;
});
ok($mart->poll_query_until('postgres',
	"SELECT status = 'pending' AND attempts >= 2 FROM sluice.events WHERE body->>'summary' = 'second'"),
	'an event claimed by a failed round is handed back and tried again, without a restart');

# --- a worker backing off says when it retries ---
$live->stop;
ok($mart->poll_query_until('postgres',
	"SELECT last_error IS NOT NULL AND next_retry_at IS NOT NULL AND worker_pid IS NOT NULL FROM sluice.status WHERE pipeline = 'e'"),
	'while the worker backs off, sluice.status shows next_retry_at');
# (last_error_at is the catalog's, written after the worker's shared state)
ok($mart->poll_query_until('postgres', "SELECT next_retry_at > last_error_at FROM sluice.status WHERE pipeline = 'e'"),
	'after the failure');
$live->start;
$live->safe_psql('postgres', "INSERT INTO app.streamed VALUES (501, 'back')");
ok($mart->poll_query_until('postgres',
	"SELECT state = 'running' AND next_retry_at IS NULL AND last_error IS NULL FROM sluice.status WHERE pipeline = 'e'"),
	'cleared once a batch succeeds');
wait_same_tables($live, $mart, [['app.streamed', 'e.streamed']], 'after live came back');

done_testing();
