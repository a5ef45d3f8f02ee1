# The worker pool when something runs out or breaks (issue 19):
#  1. max_worker_processes leaves room for ONE pool worker (pg_sluice.max_workers
#     = 4): the second pipeline of the same role shares the worker there is
#     (it waited forever: every look tried to start a new worker, and failed);
#     a pipeline of another role, which needs a worker of its own, says why it
#     waits (sluice.start's WARNING, sluice.status, sluice.workers) and streams
#     once the other role's pipelines stop;
#  2. no free slot (pg_sluice.max_pipelines): sluice.start refuses with a hint
#     naming the setting; after a restart with fewer slots than continuous
#     pipelines, sluice.status says which one waits and why;
#  3. a worker failing with an ERROR between batches (pg_sluice.test_error_pid,
#     superuser only): its pipelines are served again by a live worker, the
#     changes committed meanwhile arrive exactly once, no batch failed;
#  4. a reader sees in sluice.workers what sluice.status shows, no more;
#  5. drop one pipeline while another streams;
#  6. pg_sluice.batch_interval: 20 commits 50 ms apart go in a few batches.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live', conf => "max_wal_senders = 20\nmax_replication_slots = 20\n");
# the launcher + one pool worker: max_worker_processes = 2, nobody else's workers
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 2
max_logical_replication_workers = 0
max_parallel_workers = 0
max_parallel_workers_per_gather = 0
max_parallel_maintenance_workers = 0
pg_sluice.max_workers = 4
pg_sluice.max_pipelines = 3
pg_sluice.worker_transport = walsender
pg_sluice.naptime = 50ms
pg_sluice.batch_time = 200ms
});
mart_source($mart, $live, 'src');
$mart->safe_psql('postgres', q{
CREATE ROLE "Øp'erator" LOGIN;
CREATE ROLE "Zweiter Öp" LOGIN;
GRANT CREATE ON DATABASE postgres TO "Øp'erator", "Zweiter Öp";
SELECT sluice.grant_operator('"Øp''erator"');
SELECT sluice.grant_operator('"Zweiter Öp"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO "Øp'erator", "Zweiter Öp";
CREATE ROLE reader LOGIN;
});

# pipeline => [its role, its live table, its mart table]
my %pl = (
	'eins' => [q{"Øp'erator"}, 'public."T 1"', '"M 1"."T 1"'],
	'zwei'     => [q{"Øp'erator"}, 'public."T 2"', '"M 2"."T 2"'],
	'drei'   => [q{"Zweiter Öp"}, 'public."T 3"', '"M 3"."T 3"'],
	'vier'     => [q{"Øp'erator"}, 'public."T 4"', '"M 4"."T 4"']);
my $n = 0;
for my $name (sort keys %pl)
{
	my ($role, $l, $m) = @{ $pl{$name} };
	$n++;
	$live->safe_psql('postgres', "CREATE TABLE $l (id bigint PRIMARY KEY, v text);
INSERT INTO $l SELECT g, 'seed' FROM generate_series(1, 50) g");
	(my $schema = $m) =~ s/\.[^.]*$//;
	$mart->safe_psql('postgres', "SET ROLE $role;
SELECT sluice.create_pipeline(" . lit($name) . ", 'src', ARRAY[" . lit($l) . "], target_schema => " . lit(unq($schema)) . ')');
}

sub lit { (my $s = shift) =~ s/'/''/g; return "'$s'"; }
sub unq { (my $s = shift) =~ s/^"(.*)"$/$1/; $s =~ s/""/"/g; return $s; }

sub as_role
{
	my ($name, $sql) = @_;
	return $mart->safe_psql('postgres', "SET ROLE $pl{$name}[0]; $sql");
}

sub cs { return "SELECT count(*) || ':' || coalesce(md5(string_agg((id, v)::text, '|' ORDER BY id)), '-') FROM $_[0]"; }

sub caught_up
{
	my ($name, $label) = @_;
	my (undef, $l, $m) = @{ $pl{$name} };
	my $want = $live->safe_psql('postgres', cs($l));
	ok($mart->poll_query_until('postgres', cs($m), $want), "$label: $name caught up");
	is($mart->safe_psql('postgres', cs($m)), $want, "$label: $name equals live, each row once");
}

my $next = 1000;
sub write_all
{
	my ($what) = @_;
	for my $name (sort keys %pl)
	{
		my $l = $pl{$name}[1];
		$live->safe_psql('postgres', "INSERT INTO $l SELECT g, '$what' FROM generate_series($next, $next + 99) g");
	}
	$next += 100;
}

# --- 1. one worker slot ----------------------------------------------------------
as_role('eins', q{SELECT sluice.start('eins')});
as_role('zwei', q{SELECT sluice.start('zwei')});
write_all('one worker');
caught_up($_, 'one worker slot') for ('eins', 'zwei');
ok($mart->poll_query_until('postgres',
	q{SELECT count(*) = 2 AND count(DISTINCT worker_pid) = 1 AND bool_and(waiting IS NULL) FROM sluice.workers}),
	'the second pipeline shares the one worker there is room for');
like(slurp_file($mart->logfile), qr/could not start a pool worker: no background worker slot is free/,
	'the launcher logged that it could not start a second worker');

# another role needs a worker of its own: there is no room for one
my ($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE "Zweiter Öp"; SELECT sluice.start('drei')});
is($ret, 0, 'sluice.start of a pipeline no worker can take succeeds');
like($err, qr/WARNING:  pipeline "drei" waits for a pool worker.*max_worker_processes = 2.*HINT:  .*max_worker_processes/s,
	'sluice.start warns that it waits, naming max_worker_processes');
ok($mart->poll_query_until('postgres',
	q{SELECT state = 'error' AND last_error LIKE 'waiting for a pool worker: no background worker slot is free (max_worker_processes = 2)%' AND worker_pid IS NULL
	    FROM sluice.status WHERE pipeline = 'drei'}),
	'sluice.status says why it waits');
is($mart->safe_psql('postgres', q{SELECT worker IS NULL AND waiting LIKE 'waiting for a pool worker: no background worker slot%' FROM sluice.workers WHERE pipeline = 'drei'}),
	't', 'sluice.workers says why it waits');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.runs WHERE pipeline = 'drei' AND status = 'failed'}),
	'0', 'waiting is not a failure');
# the first role's pipelines stop: the worker slot goes to the second role
as_role('eins', q{SELECT sluice.stop('eins')});
as_role('zwei', q{SELECT sluice.stop('zwei')});
write_all('after the wait');
caught_up('drei', 'a worker was free again');
ok($mart->poll_query_until('postgres',
	q{SELECT state = 'running' AND last_error IS NULL FROM sluice.status WHERE pipeline = 'drei'}),
	'the waiting pipeline runs once a worker slot is free');

# --- 2. no free slot ----------------------------------------------------------------
as_role('eins', q{SELECT sluice.start('eins')});
as_role('zwei', q{SELECT sluice.start('zwei')});
($ret, $out, $err) = $mart->psql('postgres', qq{SET ROLE $pl{vier}[0]; SELECT sluice.start('vier')});
isnt($ret, 0, 'a fourth pipeline cannot stream with pg_sluice.max_pipelines = 3');
like($err, qr/no free slot for pipeline "vier" to stream.*HINT:.*pg_sluice\.max_pipelines/s,
	'the error names pg_sluice.max_pipelines');
is($mart->safe_psql('postgres', q{SELECT mode FROM sluice.status WHERE pipeline = 'vier'}), 'scheduled',
	'the refused pipeline stays scheduled');

# a restart with two slots for three continuous pipelines (they are taken in
# pipeline_id order: drei, eins, then zwei); room for two workers
$mart->append_conf('postgresql.conf', "pg_sluice.max_pipelines = 2\nmax_worker_processes = 4\npg_sluice.max_workers = 2\n");
$mart->restart;
ok($mart->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM sluice.status WHERE state = 'running'}),
	'after a restart with two slots, two pipelines run');
is($mart->safe_psql('postgres',
	q{SELECT pipeline || ': ' || state || ': ' || last_error FROM sluice.status WHERE mode = 'continuous' AND state <> 'running'}),
	q{zwei: error: waiting: pg_sluice.max_pipelines (2) reached; stop another pipeline and call sluice.start() again, or raise it and restart},
	'the third says it waits for pg_sluice.max_pipelines');
write_all('two slots');
caught_up($_, 'two slots') for ('eins', 'drei');

# --- 3. a worker failing between batches ---------------------------------------------
my $victim = $mart->safe_psql('postgres', q{SELECT worker_pid FROM sluice.workers WHERE pipeline = 'eins'});
my @victims = split /\n/, $mart->safe_psql('postgres', "SELECT pipeline FROM sluice.workers WHERE worker_pid = $victim ORDER BY 1");
my $runs_before = $mart->safe_psql('postgres', 'SELECT max(run_id) FROM sluice.runs');
my ($r2, $o2, $e2) = $mart->psql('postgres', "SET ROLE reader; SET pg_sluice.test_error_pid = $victim");
like($e2, qr/permission denied to set parameter "pg_sluice.test_error_pid"/, 'only a superuser sets pg_sluice.test_error_pid');
$mart->safe_psql('postgres', "ALTER SYSTEM SET pg_sluice.test_error_pid = $victim; SELECT pg_reload_conf()");
ok($mart->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $victim"),
	'the worker exits on its error between batches');
$mart->safe_psql('postgres', 'ALTER SYSTEM RESET pg_sluice.test_error_pid; SELECT pg_reload_conf()');
like(slurp_file($mart->logfile), qr/ERROR:  pool worker \d+ fails between two batches/, 'its error is in the log');
write_all('after the error');
caught_up($_, 'after a worker failed between batches') for ('eins', 'drei');
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 2 AND bool_and(worker_pid IS NOT NULL AND worker_pid <> $victim) FROM sluice.workers WHERE pipeline IN ('eins', 'drei')"),
	'its pipelines (' . join(', ', @victims) . ') are served by a live worker');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.workers GROUP BY pipeline HAVING count(*) > 1"), '',
	'each pipeline once in sluice.workers');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE run_id > $runs_before AND status = 'failed'"),
	'0', 'no batch failed on the way (the new worker waits for the old stream to let go of the slot)');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.status WHERE state = 'running'"), '2',
	'both run');

# --- 4. what a reader sees ------------------------------------------------------------
is($mart->safe_psql('postgres', q{SET ROLE reader;
SELECT count(*) FROM sluice.workers w JOIN sluice.status s USING (pipeline)
 WHERE w.worker_pid IS DISTINCT FROM s.worker_pid AND w.worker IS NOT NULL}), '0',
	'a reader sees in sluice.workers the pids sluice.status shows');
($ret, $out, $err) = $mart->psql('postgres', 'SET ROLE reader; SELECT * FROM sluice.sources');
like($err, qr/permission denied/, 'a reader still cannot read the sources (their connection strings)');

# --- 5. drop one while another streams; the waiting one takes its slot ----------------
my $slot = $mart->safe_psql('postgres', q{SELECT slot_name FROM sluice.pipelines WHERE name = 'drei'});
$mart->safe_psql('postgres', q{SELECT sluice.drop_pipeline('drei')});
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.workers WHERE pipeline = 'drei'}), '0', 'the dropped pipeline has no worker');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = " . lit($slot)), '0',
	'its slot is gone from live');
delete $pl{'drei'};
as_role('zwei', q{SELECT sluice.start('zwei')});
write_all('after the drop');
caught_up($_, 'after a drop') for ('eins', 'zwei');
ok($mart->poll_query_until('postgres',
	q{SELECT count(*) = 2 AND bool_and(state = 'running' AND last_error IS NULL) FROM sluice.status WHERE mode = 'continuous'}),
	'the pipeline that waited for a slot runs in the dropped one\'s');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE run_id > $runs_before AND status = 'failed'"),
	'0', 'no batch failed');

# --- 6. pg_sluice.batch_interval: a caught-up stream rests, changes gather ----------
# 20 single-row commits 50 ms apart on one pipeline: one batch each without a
# rest; with 400 ms of rest after each caught-up batch, a few batches hold them
sub commits_in_runs
{
	my ($tag) = @_;
	my (undef, $l) = @{ $pl{eins} };
	my $mark = $mart->safe_psql('postgres', 'SELECT max(run_id) FROM sluice.runs');
	$live->safe_psql('postgres', "DO \$d\$ BEGIN FOR i IN 1..20 LOOP
INSERT INTO $l VALUES ($next + i, '$tag'); COMMIT; PERFORM pg_sleep(0.05); END LOOP; END \$d\$");
	$next += 100;
	caught_up('eins', $tag);
	return $mart->safe_psql('postgres',
		"SELECT count(*) FROM sluice.runs WHERE pipeline = 'eins' AND run_id > $mark AND rows_inserted > 0");
}
my $runs_plain = commits_in_runs('no rest');
$mart->safe_psql('postgres', "ALTER SYSTEM SET pg_sluice.batch_interval = '400ms'; SELECT pg_reload_conf()");
my $runs_rest = commits_in_runs('rest 400ms');
$mart->safe_psql('postgres', 'ALTER SYSTEM RESET pg_sluice.batch_interval; SELECT pg_reload_conf()');
diag("20 commits 50 ms apart: $runs_plain batches without a rest, $runs_rest with batch_interval = 400ms");
ok($runs_plain >= 10, "without a rest, about a batch per commit ($runs_plain)");
ok($runs_rest <= 6, "with a 400 ms rest, a few batches hold them ($runs_rest)");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE run_id > $runs_before AND status = 'failed'"),
	'0', 'no batch failed');

$mart->stop;
$live->stop;
done_testing();
