# The pool of continuous workers (issue 19): pg_sluice.max_workers = 2
# workers serve 6 streaming pipelines, reading 3 source databases, over the
# walsender transport:
#  1. every pipeline streams; sluice.workers says which of the 2 workers
#     serves each, sluice.status gives that worker's pid;
#  2. fairness: one pipeline applies a 200,000-row transaction (one long
#     batch) while the others get small ones: their commit-to-visible lag
#     stays bounded (the launcher moves them off the busy worker);
#  3. a pipeline whose batches fail in a loop (a target column dropped)
#     backs off alone (last_error, next_retry_at), the others go on; fixed,
#     it catches up exactly once;
#  4. pg_terminate_backend of one worker: its pipelines are served again,
#     exactly once (checksums); kill -9 of a worker: the same after the
#     postmaster's restart;
#  5. stop and start one pipeline while the others stream;
#  6. stops leave one worker with one pipeline and the other with three: the
#     launcher moves one (two and two), exactly once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run;
use SluiceTest;

my $live = new_live('live', conf => "logical_decoding_work_mem = 64kB\nmax_wal_senders = 20\nmax_replication_slots = 20\nmax_connections = 100\n");
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 20
pg_sluice.max_workers = 2
pg_sluice.max_pipelines = 10
pg_sluice.worker_transport = walsender
pg_sluice.naptime = 50ms
pg_sluice.batch_time = 200ms
restart_after_crash = on
});

# three source databases, names with capitals, quotes, spaces, non-ASCII
my @dbs = ('postgres', q{Shop "Nord"}, 'Lager Ö');
for my $db (@dbs[1 .. 2])
{
	(my $q = $db) =~ s/"/""/g;
	$live->safe_psql('postgres', qq{CREATE DATABASE "$q"});
}
$mart->safe_psql('postgres', q{
CREATE ROLE "Øp'erator" LOGIN;
GRANT CREATE ON DATABASE postgres TO "Øp'erator";
SELECT sluice.grant_operator('"Øp''erator"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO "Øp'erator";
CREATE ROLE reader LOGIN;
});

# pipeline name => [source db, table]
my @pl = (
	['big_one', 0], ['small_a', 0], ['small_b', 1],
	['small_c', 1], ['fehler', 2], ['small_d', 2]);
my (%pairs, @all_pairs);
for my $i (0 .. $#pl)
{
	my ($name, $d) = @{ $pl[$i] };
	my $db = $dbs[$d];
	my $src = "src$d";
	my $t = "T$i";
	$live->safe_psql($db, qq{CREATE TABLE public."$t" (id bigint PRIMARY KEY, v text, at timestamptz DEFAULT clock_timestamp());
INSERT INTO public."$t" (id, v) SELECT g, 'seed' FROM generate_series(1, 100) g});
	if (!$mart->safe_psql('postgres', "SELECT count(*) FROM sluice.sources WHERE name = '$src'"))
	{
		mart_source($mart, $live, $src, $db);
	}
	(my $lit = $name) =~ s/'/''/g;
	$mart->safe_psql('postgres', qq{SET ROLE "Øp'erator";
SELECT sluice.create_pipeline('$lit', '$src', ARRAY['public."$t"'], target_schema => 'Mart $i')});
	$pairs{$name} = [qq{public."$t"}, qq{"Mart $i"."$t"}, $db];
	push @all_pairs, $name;
}

sub lit { (my $s = shift) =~ s/'/''/g; return "'$s'"; }

sub cs_sql { return "SELECT count(*) || ':' || coalesce(md5(string_agg((id, v, at)::text, '|' ORDER BY id)), '-') FROM $_[0]"; }

sub wait_one
{
	my ($name, $label) = @_;
	my ($l, $m, $db) = @{ $pairs{$name} };
	my $want = $live->safe_psql($db, cs_sql($l));
	ok($mart->poll_query_until('postgres', cs_sql($m), $want), "$label: $name caught up");
	is($mart->safe_psql('postgres', cs_sql($m)), $want, "$label: $name equals live");
}

sub wait_all
{
	my ($label) = @_;
	wait_one($_, $label) for @all_pairs;
}

# --- 1. six pipelines, two workers ------------------------------------------
for my $name (@all_pairs)
{
	$mart->safe_psql('postgres', qq{SET ROLE "Øp'erator"; SELECT sluice.start(} . lit($name) . ')');
}
wait_all('started');
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 6 AND count(DISTINCT worker) = 2 AND bool_and(worker_pid IS NOT NULL) FROM sluice.workers"),
	'six pipelines served by two workers');
is($mart->safe_psql('postgres',
	"SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE backend_type = 'pg_sluice worker'"), '2',
	'two worker processes for six pipelines');
is($mart->safe_psql('postgres',
	"SELECT count(*) FROM sluice.status s JOIN sluice.workers w USING (pipeline) WHERE s.worker_pid = w.worker_pid AND s.state = 'running'"),
	'6', 'sluice.status shows the pid of the worker serving each pipeline');
is($mart->safe_psql('postgres', "SET ROLE reader; SELECT count(*) FROM sluice.workers"), '6',
	'a reader sees sluice.workers');

# one small commit on pipeline $name's source, and how long until the mart has it
my $next_id = 1_000_000;
sub small_lag
{
	my ($name) = @_;
	my ($l, $m, $db) = @{ $pairs{$name} };
	my $id = $next_id++;
	$live->safe_psql($db, "INSERT INTO $l (id, v) VALUES ($id, 'small')");
	my $t0 = time;
	while (time - $t0 < 60)
	{
		return time - $t0
		  if $mart->safe_psql('postgres', "SELECT count(*) FROM $m WHERE id = $id") eq '1';
		usleep(20_000);
	}
	return 999;
}

# --- 2. fairness: a 200,000-row transaction on one pipeline -----------------
my ($bl, $bm) = @{ $pairs{'big_one'} };
my $big_worker = $mart->safe_psql('postgres', qq{SELECT worker FROM sluice.workers WHERE pipeline = 'big_one'});
my @others_same = split /\n/, $mart->safe_psql('postgres',
	qq{SELECT pipeline FROM sluice.workers WHERE worker = $big_worker AND pipeline <> 'big_one' ORDER BY 1});
ok(@others_same >= 1, 'the big pipeline shares its worker with others (' . join(', ', @others_same) . ')');
my $base = $mart->safe_psql('postgres', "SELECT count(*) FROM $bm");
# indexes of the datamart's own make its apply slower: a batch of a second or more
$mart->safe_psql('postgres', "CREATE INDEX ON $bm (v, id); CREATE INDEX ON $bm (md5(v || id)); CREATE INDEX ON $bm (at, v)");
my $t_big = time;
# the big transaction commits in the background while the probes run
my $big = IPC::Run::start(['psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $live->connstr('postgres'), '-c',
	"INSERT INTO $bl (id, v) SELECT g, repeat('x', 100) FROM generate_series(10000001, 10200000) g"]);
my (@lags, @long_lags, @wp, $long_first, $long_last);
# small commits, in turn on the other five, until the big one is on the mart
while (time - $t_big < 180)
{
	last if $mart->safe_psql('postgres', "SELECT count(*) FROM $bm") == $base + 200000;
	for my $name (grep { $_ ne 'big_one' } @all_pairs)
	{
		# is the big pipeline's worker in one batch for longer than batch_time?
		# and, past twice that, does it still serve others (the launcher moves them)?
		my ($long, $wp) = split /\|/, $mart->safe_psql('postgres',
			"SELECT coalesce(bool_or(in_batch AND clock_timestamp() - batch_started_at > interval '0.2 s'), false) || '|' || "
			. "coalesce(max(worker_pipelines) FILTER (WHERE in_batch AND clock_timestamp() - batch_started_at > interval '0.4 s'), 0) "
			. "FROM sluice.workers WHERE pipeline = 'big_one'");
		$long = $long eq 'true';
		push @wp, $wp if $wp > 0;
		my $lag = small_lag($name);
		push @lags, $lag;
		if ($long)
		{
			push @long_lags, $lag;
			$long_first //= time;
			$long_last = time;
		}
	}
}
$big->finish;
my $big_s = time - $t_big;
# the batch that applied it, as its run says
my $batch_s = $mart->safe_psql('postgres',
	"SELECT extract(epoch FROM finished_at - started_at) FROM sluice.runs WHERE pipeline = 'big_one' AND rows_inserted >= 200000");
my @sorted = sort { $a <=> $b } @lags;
my @lsorted = sort { $a <=> $b } @long_lags;
diag(sprintf("200,000-row transaction committed and applied in %.1f s; meanwhile %d small commits on the 5 other "
	  . "pipelines: lag p50 %.2f s, max %.2f s; %d of them while its worker was in one batch for more than "
	  . "batch_time (0.2 s; seen for %.1f s): max %.2f s; the batch took %.2f s",
	$big_s, scalar @lags, $sorted[ $#sorted / 2 ], $sorted[-1], scalar @long_lags,
	($long_last // 0) - ($long_first // 0), $lsorted[-1] // -1, $batch_s));
ok(@long_lags >= 2, 'small commits were measured while the big transaction was one long batch');
ok(@wp >= 1 && !grep({ $_ != 1 } @wp),
	'past twice batch_time in that batch, its worker serves no other pipeline (' . join(',', @wp) . ')');
ok($sorted[-1] < 5, sprintf('the others\' lag stayed under 5 s (max %.2f s)', $sorted[-1]));
ok(@lsorted && $lsorted[-1] < 2 && $lsorted[-1] < $batch_s,
	sprintf('during the long batch (%.2f s) the others\' lag stayed under 2 s (max %.2f s)', $batch_s, $lsorted[-1] // -1));
wait_all('after the big transaction');

# --- 3. a pipeline failing in a loop -----------------------------------------
my ($el, $em, $edb) = @{ $pairs{'fehler'} };
# a constraint of the datamart's the next row breaks: every batch fails
$mart->safe_psql('postgres', "ALTER TABLE $em ADD CONSTRAINT no_breaks CHECK (v <> 'breaks') NOT VALID");
$live->safe_psql($edb, "INSERT INTO $el (id, v) VALUES (5000001, 'breaks')");
ok($mart->poll_query_until('postgres',
	"SELECT state = 'error' AND last_error IS NOT NULL AND next_retry_at IS NOT NULL FROM sluice.status WHERE pipeline = 'fehler'"),
	'the failing pipeline is in error, with its next retry');
ok($mart->poll_query_until('postgres',
	"SELECT count(*) >= 3 FROM sluice.runs WHERE pipeline = 'fehler' AND status = 'failed'"),
	'it fails in a loop');
my @err_lags = map { small_lag($_) } grep { $_ ne 'fehler' } @all_pairs;
@sorted = sort { $a <=> $b } @err_lags;
diag(sprintf("while one pipeline fails in a loop, the others' lag: max %.2f s", $sorted[-1]));
ok($sorted[-1] < 5, 'the others go on while one fails in a loop');
# (polled: a pipeline the launcher moves between workers is 'starting' until
# its new worker takes it)
ok($mart->poll_query_until('postgres', "SELECT count(*) = 5 FROM sluice.status WHERE state = 'running'"),
	'the five others are running');
$mart->safe_psql('postgres', "ALTER TABLE $em DROP CONSTRAINT no_breaks");
ok($mart->poll_query_until('postgres',
	"SELECT state = 'running' AND last_error IS NULL FROM sluice.status WHERE pipeline = 'fehler'"),
	'fixed, it runs again');
wait_all('after the error loop');

my $runs_before = $mart->safe_psql('postgres', "SELECT max(run_id) FROM sluice.runs");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE status = 'failed' AND pipeline <> 'fehler'"),
	'0', 'no other pipeline failed a batch (moves included)');

# --- 4. a worker terminated, a worker killed ---------------------------------
my $victim = $mart->safe_psql('postgres', "SELECT worker_pid FROM sluice.workers WHERE pipeline = 'small_a'");
my @moved = split /\n/, $mart->safe_psql('postgres', "SELECT pipeline FROM sluice.workers WHERE worker_pid = $victim");
ok($mart->safe_psql('postgres', "SELECT pg_terminate_backend($victim)") eq 't', 'terminate one worker');
for my $name (@all_pairs)
{
	my ($l, undef, $db) = @{ $pairs{$name} };
	$live->safe_psql($db, "INSERT INTO $l (id, v) SELECT g, 'after terminate' FROM generate_series(6000001, 6001000) g");
}
wait_all('after pg_terminate_backend of a worker');
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 6 AND bool_and(worker_pid IS NOT NULL AND worker_pid <> $victim) FROM sluice.workers"),
	'its pipelines (' . join(', ', @moved) . ') are served by a live worker');

$victim = $mart->safe_psql('postgres', "SELECT worker_pid FROM sluice.workers WHERE pipeline = 'small_b'");
$live->safe_psql($pairs{'small_b'}[2], "INSERT INTO public.\"T2\" (id, v) SELECT g, 'big' FROM generate_series(7000001, 7100000) g");
kill 'KILL', $victim;
for my $name (@all_pairs)
{
	my ($l, undef, $db) = @{ $pairs{$name} };
	$live->safe_psql($db, "INSERT INTO $l (id, v) SELECT g, 'after kill' FROM generate_series(8000001, 8001000) g");
}
wait_all('after kill -9 of a worker');
ok($mart->poll_query_until('postgres', "SELECT count(*) = 6 AND count(DISTINCT worker) = 2 FROM sluice.workers"),
	'after the restart, six pipelines on two workers again');

# --- 5. stop and start one while the others stream ----------------------------
$mart->safe_psql('postgres', "SET ROLE \"Øp'erator\"; SELECT sluice.stop('small_c')");
is($mart->safe_psql('postgres', "SELECT mode || '/' || state FROM sluice.status WHERE pipeline = 'small_c'"),
	'scheduled/stopped', 'one stopped');
for my $name (@all_pairs)
{
	my ($l, undef, $db) = @{ $pairs{$name} };
	$live->safe_psql($db, "INSERT INTO $l (id, v) SELECT g, 'while stopped' FROM generate_series(9000001, 9000500) g");
}
wait_one($_, 'while small_c is stopped') for grep { $_ ne 'small_c' } @all_pairs;
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.workers WHERE pipeline = 'small_c'"), '0',
	'the stopped pipeline has no worker');
$mart->safe_psql('postgres', "SET ROLE \"Øp'erator\"; SELECT sluice.start('small_c')");
wait_all('after stop and start');
ok($mart->poll_query_until('postgres', "SELECT count(*) = 6 FROM sluice.status WHERE state = 'running'"), 'all six running');

# --- 6. balance: stops leave the workers uneven, the launcher evens them out --
my $balanced = "SELECT count(*) = 2 AND max(c) - min(c) <= 1 FROM (SELECT worker, count(*) AS c FROM sluice.workers GROUP BY worker) g";
ok($mart->poll_query_until('postgres', $balanced), 'six pipelines, three on each worker');
my $runs_mark = $mart->safe_psql('postgres', "SELECT max(run_id) FROM sluice.runs");
my $full = $mart->safe_psql('postgres', "SELECT worker FROM sluice.workers ORDER BY worker LIMIT 1");
my @gone = (split /\n/, $mart->safe_psql('postgres', "SELECT pipeline FROM sluice.workers WHERE worker = $full ORDER BY pipeline"))[0 .. 1];
$mart->safe_psql('postgres', qq{SET ROLE "Øp'erator"; SELECT sluice.stop(} . lit($_) . ')') for @gone;
diag('stopped ' . join(', ', @gone) . ': pipelines per worker ' . $mart->safe_psql('postgres',
	"SELECT string_agg(c::text, ' / ' ORDER BY worker) FROM (SELECT worker, count(*) AS c FROM sluice.workers GROUP BY worker) g"));
ok($mart->poll_query_until('postgres', $balanced), 'one pipeline moved: two on each worker');
my @left = grep { my $n = $_; !grep { $_ eq $n } @gone } @all_pairs;
for my $name (@left)
{
	my ($l, undef, $db) = @{ $pairs{$name} };
	$live->safe_psql($db, "INSERT INTO $l (id, v) SELECT g, 'balanced' FROM generate_series(9100001, 9100500) g");
}
wait_one($_, 'after the move') for @left;
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE run_id > $runs_mark AND status = 'failed'"), '0',
	'no batch failed on the move');
$mart->safe_psql('postgres', qq{SET ROLE "Øp'erator"; SELECT sluice.start(} . lit($_) . ')') for @gone;
wait_all('after the balance');
$mart->stop;
$live->stop;
done_testing();
