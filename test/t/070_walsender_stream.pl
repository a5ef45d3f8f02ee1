# The walsender transport (walstream.c, spool.c): continuous workers stream
# their slot over a replication connection with pgoutput protocol 2 and
# streaming on.  Live decodes with logical_decoding_work_mem = 64kB, so every
# big transaction comes while in progress, spooled on the datamart:
#  - a streamed transaction is applied once, exactly;
#  - an aborted streamed transaction leaves nothing;
#  - subtransactions rolled back inside a streamed transaction leave nothing
#    of theirs, and only theirs;
#  - two interleaved streamed transactions (one committing, one aborting, and
#    a pair committing in the opposite order) arrive right;
#  - kill -9 of the datamart while a streamed transaction is spooled, and
#    again while its commit is being applied: exactly once (checksums);
#  - the slot moves by the worker's status updates (no SQL advance: the slot
#    is active the whole time), and a manual refresh right after
#    sluice.stop() finds it free;
#  - commit-to-visible lag stays far below pg_sluice.naptime (10 s here):
#    the worker waits on the socket, not on a timer;
#  - pg_sluice.worker_transport = sql still streams, without a walsender.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $live = new_live('live', conf => "logical_decoding_work_mem = 64kB\nmax_wal_size = 1GB\n");
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 20
pg_sluice.worker_transport = walsender
pg_sluice.naptime = 10s
restart_after_crash = on
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "App";
CREATE TABLE "App"."Big Tåble" (id bigint PRIMARY KEY, v text, pad text);
INSERT INTO "App"."Big Tåble" SELECT g, 'seed ' || g, repeat('p', 50) FROM generate_series(1, 100) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE "Ålice o'Op" LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
SELECT sluice.grant_operator('"Ålice o''Op"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO "Ålice o'Op";
SET ROLE etl;
SELECT sluice.create_pipeline('strom_w', 'live', ARRAY['"App"."Big Tåble"'], target_schema => 'Mart Ö');
});
my $pl = q{'strom_w'};
my @pairs = ([q{"App"."Big Tåble"}, q{"Mart Ö"."Big Tåble"}]);
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = $pl");

sub stream_txns
{
	return $live->safe_psql('postgres',
		"SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = '$slot'");
}

# kill -9 of the datamart's postmaster, then start again once its children
# are gone (003_faults.pl's idiom)
sub crash_mart
{
	$mart->kill9;
	for my $try (1 .. 100)
	{
		$mart->{_pid} = undef;    # a refused start read the stale postmaster.pid
		return 1 if $mart->start(fail_ok => 1);
		usleep(200_000);
	}
	return 0;
}

sub worker_pid
{
	return $mart->safe_psql('postgres', "SELECT worker_pid FROM sluice.status WHERE pipeline = $pl");
}

is($mart->safe_psql('postgres', qq{SET ROLE "Ålice o'Op"; SELECT sluice.start($pl)}), 't', 'an operator starts the pipeline');
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = $pl"),
	'the worker runs');
ok($live->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid "
	. "WHERE s.slot_name = '$slot' AND a.backend_type = 'walsender'"),
	'the slot is read by a walsender (replication connection), not by SQL');

# --- a big transaction, streamed while in progress ---
my $streamed0 = stream_txns();
$live->safe_psql('postgres',
	q{INSERT INTO "App"."Big Tåble" SELECT g, 'big ' || g, repeat('b', 50) FROM generate_series(1001, 31000) g});
wait_same_tables($live, $mart, \@pairs, 'streamed transaction');
ok($live->poll_query_until('postgres',
	"SELECT coalesce(sum(stream_txns), 0) > $streamed0 FROM pg_stat_replication_slots WHERE slot_name = '$slot'"),
	'live streamed it in progress (logical_decoding_work_mem 64kB)');

# --- abort of a streamed transaction ---
$streamed0 = stream_txns();
$live->safe_psql('postgres', q{
BEGIN;
INSERT INTO "App"."Big Tåble" SELECT g, 'aborted ' || g, repeat('a', 50) FROM generate_series(40001, 60000) g;
UPDATE "App"."Big Tåble" SET v = 'aborted update' WHERE id <= 50;
ROLLBACK;
INSERT INTO "App"."Big Tåble" VALUES (70001, 'after the abort', NULL);
});
wait_same_tables($live, $mart, \@pairs, 'aborted streamed transaction');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v LIKE 'aborted%'}), '0',
	'nothing of the aborted streamed transaction');
ok(stream_txns() > $streamed0, 'the aborted transaction was streamed');

# --- subtransactions rolled back inside a streamed transaction ---
$live->safe_psql('postgres', q{
BEGIN;
INSERT INTO "App"."Big Tåble" SELECT g, 'kept A ' || g, repeat('x', 50) FROM generate_series(80001, 85000) g;
SAVEPOINT s1;
INSERT INTO "App"."Big Tåble" SELECT g, 'gone B ' || g, repeat('x', 50) FROM generate_series(85001, 90000) g;
UPDATE "App"."Big Tåble" SET v = 'gone B update' WHERE id BETWEEN 80001 AND 80100;
ROLLBACK TO s1;
SAVEPOINT s2;
INSERT INTO "App"."Big Tåble" SELECT g, 'kept C ' || g, repeat('x', 50) FROM generate_series(90001, 95000) g;
SAVEPOINT s3;
DELETE FROM "App"."Big Tåble" WHERE id BETWEEN 90001 AND 92000;
INSERT INTO "App"."Big Tåble" SELECT g, 'gone D ' || g, repeat('x', 50) FROM generate_series(95001, 97000) g;
ROLLBACK TO s3;
UPDATE "App"."Big Tåble" SET v = 'kept C update' WHERE id BETWEEN 90001 AND 90010;
RELEASE s2;
SAVEPOINT s4;
INSERT INTO "App"."Big Tåble" SELECT g, 'kept E ' || g, repeat('x', 50) FROM generate_series(97001, 99000) g;
RELEASE s4;
SAVEPOINT s5;
DELETE FROM "App"."Big Tåble" WHERE id BETWEEN 1001 AND 6000;
ROLLBACK TO s5;
COMMIT;
});
wait_same_tables($live, $mart, \@pairs, 'streamed transaction with rolled-back subtransactions');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v LIKE 'gone%'}), '0',
	'nothing of the rolled-back subtransactions');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE id BETWEEN 1001 AND 6000}), '5000',
	'a rolled-back delete deletes nothing');

# --- two interleaved streamed transactions ---
my $s1 = $live->background_psql('postgres');
my $s2 = $live->background_psql('postgres');
$s1->query_safe(q{BEGIN; INSERT INTO "App"."Big Tåble" SELECT g, 'one ' || g, repeat('1', 50) FROM generate_series(100001, 105000) g});
$s2->query_safe(q{BEGIN; INSERT INTO "App"."Big Tåble" SELECT g, 'two ' || g, repeat('2', 50) FROM generate_series(200001, 205000) g});
$s1->query_safe(q{INSERT INTO "App"."Big Tåble" SELECT g, 'one ' || g, repeat('1', 50) FROM generate_series(105001, 110000) g});
$s2->query_safe(q{UPDATE "App"."Big Tåble" SET v = 'two touched' WHERE id BETWEEN 200001 AND 201000});
$live->safe_psql('postgres', q{INSERT INTO "App"."Big Tåble" VALUES (300001, 'small one in between', NULL)});
$s2->query_safe(q{COMMIT});
$s1->query_safe(q{ROLLBACK});
wait_same_tables($live, $mart, \@pairs, 'interleaved streamed transactions, one aborted');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v LIKE 'one%'}), '0',
	'nothing of the aborted one');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v LIKE 'two%'}), '5000',
	'all of the committed one');

$s1->query_safe(q{BEGIN; INSERT INTO "App"."Big Tåble" SELECT g, 'three ' || g, repeat('3', 50) FROM generate_series(400001, 405000) g});
$s2->query_safe(q{BEGIN; INSERT INTO "App"."Big Tåble" SELECT g, 'four ' || g, repeat('4', 50) FROM generate_series(500001, 505000) g});
$s1->query_safe(q{UPDATE "App"."Big Tåble" SET v = 'three by four' WHERE id BETWEEN 500001 AND 500010});  # none yet: invisible to s1
$s2->query_safe(q{DELETE FROM "App"."Big Tåble" WHERE id BETWEEN 100 AND 100});
$s2->query_safe(q{COMMIT});
$s1->query_safe(q{UPDATE "App"."Big Tåble" SET v = 'three saw four' WHERE id BETWEEN 500001 AND 500010});
$s1->query_safe(q{COMMIT});
wait_same_tables($live, $mart, \@pairs, 'interleaved streamed transactions committed in the opposite order');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v = 'three saw four'}), '10',
	'the later commit applied after the earlier one');
$s1->quit;
$s2->quit;

# --- the slot moves by status updates ---
my $live_end = $live->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');
ok($live->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$live_end' AND active FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'the slot confirmed what the datamart applied while the worker held it');

# --- lag: the worker waits on the socket ---
my @lags;
my $timeouts = 0;
for my $i (1 .. 20)
{
	my $id = 600000 + $i;
	my $t0 = time;
	$live->safe_psql('postgres', qq{INSERT INTO "App"."Big Tåble" VALUES ($id, 'lag', NULL)});
	my $t1 = time;
	until ($mart->safe_psql('postgres', qq{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE id = $id}) eq '1')
	{
		usleep(2_000);
		if (time - $t0 > 30) { $timeouts++; last; }
	}
	push @lags, time - $t1;
	usleep(100_000);
}
@lags = sort { $a <=> $b } @lags;
diag(sprintf("walsender transport: commit-to-visible lag over 20 single-row commits: p50 %.1f ms, max %.1f ms (naptime 10 s)",
	$lags[9] * 1000, $lags[-1] * 1000));
is($timeouts, 0, 'every single-row commit became visible');
ok($lags[-1] < 2.0, 'no commit waited for a timer (naptime is 10 s)');
ok($lags[9] < 0.5, 'half of them visible within 0.5 s');

# --- kill -9 of the datamart while a streamed transaction is spooled ---
my $bg = $live->background_psql('postgres');
$bg->query_safe(q{BEGIN; INSERT INTO "App"."Big Tåble" SELECT g, 'spooled ' || g, repeat('s', 50) FROM generate_series(700001, 760000) g});
ok($mart->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_ls_tmpdir() WHERE name LIKE 'pgsql_tmp" . worker_pid() . ".%'"),
	'the worker spools the streamed transaction to a temporary file');
ok(crash_mart(), 'datamart restarted after kill -9 while spooling');
$bg->query_safe(q{UPDATE "App"."Big Tåble" SET v = 'spooled, updated' WHERE id BETWEEN 700001 AND 700100});
$bg->query_safe(q{COMMIT});
$bg->quit;
wait_same_tables($live, $mart, \@pairs, 'kill -9 of the datamart while spooling');

# --- ... and while the streamed transaction's commit is being applied ---
my $size0 = $mart->safe_psql('postgres', q{SELECT pg_relation_size('"Mart Ö"."Big Tåble"')});
$live->safe_psql('postgres',
	q{INSERT INTO "App"."Big Tåble" SELECT g, 'replayed ' || g, repeat('r', 200) FROM generate_series(800001, 1000000) g});
ok($mart->poll_query_until('postgres',
	qq{SELECT pg_relation_size('"Mart Ö"."Big Tåble"') > $size0 + 4 * 1024 * 1024}),
	'the worker applies the streamed commit');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v LIKE 'replayed%'}), '0',
	'not committed yet');
ok(crash_mart(), 'datamart restarted after kill -9 while applying');
wait_same_tables($live, $mart, \@pairs, 'kill -9 of the datamart while applying a streamed commit');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Big Tåble" WHERE v LIKE 'replayed%'}), '200000',
	'the streamed transaction applied exactly once');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = $pl AND status = 'failed' "
	. "AND error ~* 'duplicate|spool|protocol'"), '0',
	'no batch met a change twice or a damaged stream');

# --- stop, then a manual refresh at once: the walsender let go of the slot ---
is($mart->safe_psql('postgres', qq{SET ROLE "Ålice o'Op"; SELECT sluice.stop($pl)}), 't', 'stopped');
$live->safe_psql('postgres', q{INSERT INTO "App"."Big Tåble" VALUES (2000001, 'after stop', NULL)});
$mart->safe_psql('postgres', qq{SET ROLE "Ålice o'Op"; SELECT sluice.refresh($pl)});
same_tables($live, $mart, \@pairs, 'manual refresh right after stop');

# --- the SQL transport still streams (pg_sluice.worker_transport = sql) ---
$mart->append_conf('postgresql.conf', "pg_sluice.worker_transport = sql\npg_sluice.naptime = 50ms\n");
$mart->reload;
$mart->safe_psql('postgres', qq{SET ROLE "Ålice o'Op"; SELECT sluice.start($pl)});
ok($mart->poll_query_until('postgres', "SELECT state = 'running' FROM sluice.status WHERE pipeline = $pl"),
	'the worker runs on the SQL transport');
$live->safe_psql('postgres', q{UPDATE "App"."Big Tåble" SET v = 'by the sql transport' WHERE id % 100 = 7});
wait_same_tables($live, $mart, \@pairs, 'SQL transport');
is($live->safe_psql('postgres',
	"SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid "
	. "WHERE s.slot_name = '$slot' AND a.backend_type = 'walsender'"), '0',
	'no walsender reads the slot on the SQL transport');
$mart->safe_psql('postgres', qq{SELECT sluice.stop($pl)});

done_testing();
