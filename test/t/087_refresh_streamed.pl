# sluice.refresh over the SQL decoding interface (pg_sluice.refresh_transport
# = sql, stream.c) with live streaming big transactions in progress: live
# decodes with logical_decoding_work_mem = 64kB, and pg_sluice leaves it at
# live's own setting (pg_sluice.source_decoding_work_mem = 0, the default),
# so a transaction bigger than that reaches the datamart in stream blocks,
# spooled there (streamfile.c) until its STREAM COMMIT, instead of being
# spilled to live's disk and held whole.  As an operator role, names with
# quotes, spaces, capitals and non-ASCII, a column named like apply's
# internal aliases:
#  - a backlog with a streamed big transaction, an aborted streamed one and
#    rolled-back subtransactions inside a streamed one: applied exactly,
#    live streamed and spilled nothing;
#  - interleaved streamed transactions committed in the other order than
#    they began, with small ones between;
#  - a streamed transaction still in progress at the refresh: not applied,
#    nothing of it left behind; applied once by the refresh after its commit;
#  - a refresh decoded in two parts with a streamed transaction across the
#    split (only the second part streams), and the fallback (no second
#    slot) that decodes the second part after the first;
#  - kill -9 of the datamart while a streamed transaction is applied:
#    exactly once;
#  - the spool (sluice.drain) of a paused pipeline keeps protocol 1.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SluiceTest;

my $live = new_live('live', conf => "logical_decoding_work_mem = 64kB\nlog_statement = 'all'\n");
my $mart = new_mart('mart', conf => "pg_sluice.refresh_transport = sql\nrestart_after_crash = on\n");
is($mart->safe_psql('postgres', "LOAD 'pg_sluice'; SHOW pg_sluice.source_decoding_work_mem"), '0',
	'pg_sluice leaves live\'s logical_decoding_work_mem alone by default');

$live->safe_psql('postgres', q{
CREATE SCHEMA "Src Ö";
CREATE TABLE "Src Ö"."Wide 'T'" (id bigint PRIMARY KEY, v text, "__sluice_op" text);
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'seed ' || g, 'x' FROM generate_series(1, 100) g;
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
SELECT sluice.create_pipeline('sql_r', 'live', ARRAY['"Src Ö"."Wide ''T''"'], target_schema => 'Mart Ö');
});
my $pl = q{'sql_r'};
my @pairs = ([q{"Src Ö"."Wide 'T'"}, q{"Mart Ö"."Wide 'T'"}]);
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = $pl");
my $as_op = qq{SET ROLE "Ålice o'Op";};

sub slot_stats
{
	return split /\|/, $live->safe_psql('postgres',
		"SELECT coalesce(sum(stream_txns), 0), coalesce(sum(spill_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = '$slot'");
}
sub refresh
{
	my ($extra) = @_;
	return $mart->safe_psql('postgres', "$as_op " . ($extra // '') . " SELECT transactions FROM sluice.refresh($pl)");
}
sub count_where
{
	my ($cond) = @_;
	return $mart->safe_psql('postgres', qq{SELECT count(*) FROM "Mart Ö"."Wide 'T'" WHERE $cond});
}
sub crash_mart
{
	$mart->kill9;
	for my $try (1 .. 100)
	{
		$mart->{_pid} = undef;
		return 1 if $mart->start(fail_ok => 1);
		usleep(200_000);
	}
	return 0;
}

# --- 1. streamed, aborted streamed, subtransaction aborts, small ones ---
my ($stream0, $spill0) = slot_stats();
$live->safe_psql('postgres', q{
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'big ' || g, repeat('b', 50) FROM generate_series(1001, 6000) g;
INSERT INTO "Src Ö"."Wide 'T'" VALUES (7001, 'small', NULL);
BEGIN;
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'aborted ' || g, repeat('a', 50) FROM generate_series(10001, 15000) g;
ROLLBACK;
BEGIN;
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'kept ' || g, repeat('k', 50) FROM generate_series(20001, 22000) g;
SAVEPOINT s1;
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'sub gone ' || g, repeat('g', 50) FROM generate_series(22001, 25000) g;
UPDATE "Src Ö"."Wide 'T'" SET v = 'sub gone too' WHERE id BETWEEN 20001 AND 20500;
ROLLBACK TO s1;
SAVEPOINT s2;
UPDATE "Src Ö"."Wide 'T'" SET v = 'sub kept' WHERE id BETWEEN 1001 AND 3000;
RELEASE s2;
DELETE FROM "Src Ö"."Wide 'T'" WHERE id BETWEEN 5001 AND 5100;
COMMIT;
});
my $logpos = -s $live->logfile;
my $n = refresh();
same_tables($live, $mart, \@pairs, 'SQL refresh of streamed, aborted and subtransaction work');
ok($n >= 3, "the refresh applied the committed transactions ($n)");
my ($stream1, $spill1) = slot_stats();
ok($stream1 > $stream0, "live streamed the big transactions in progress ($stream0 -> $stream1)");
is($spill1, $spill0, 'live spilled nothing to its disk');
is(count_where(q{v LIKE 'aborted%' OR v LIKE 'sub gone%'}), '0', 'nothing of the aborted transaction or subtransaction');
like(slurp_file($live->logfile, $logpos), qr/pg_logical_slot_peek_binary_changes\(.*'proto_version', '2', 'streaming', 'on'/,
	'the refresh asked the SQL interface to stream');
like(slurp_file($live->logfile, $logpos), qr/SET logical_decoding_work_mem = '64kB'/,
	'and decoded within live\'s logical_decoding_work_mem (less the session\'s own 1MB, at least 64kB)');
is(refresh(), '0', 'the next refresh has nothing');

# --- 2. interleaved streamed transactions, committed in the other order ---
my $t1 = $live->background_psql('postgres');
my $t2 = $live->background_psql('postgres');
$t1->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'one ' || g, repeat('1', 50) FROM generate_series(30001, 33000) g});
$t2->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'two ' || g, repeat('2', 50) FROM generate_series(40001, 43000) g});
$live->safe_psql('postgres', q{UPDATE "Src Ö"."Wide 'T'" SET v = 'between' WHERE id BETWEEN 1 AND 10});
$t1->query_safe(q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'one more ' || g, repeat('1', 50) FROM generate_series(33001, 36000) g});
$t2->query_safe(q{UPDATE "Src Ö"."Wide 'T'" SET v = 'two, updated' WHERE id BETWEEN 40001 AND 42000});
$t2->query_safe('COMMIT');
$live->safe_psql('postgres', q{DELETE FROM "Src Ö"."Wide 'T'" WHERE id BETWEEN 11 AND 20});
$t1->query_safe(q{UPDATE "Src Ö"."Wide 'T'" SET v = 'one, updated' WHERE id BETWEEN 30001 AND 31000; COMMIT});
$t1->quit;
$t2->quit;
$n = refresh();
same_tables($live, $mart, \@pairs, 'interleaved streamed transactions');
is($n, '4', 'four transactions');

# --- 3. a streamed transaction in progress at the refresh ---
my $open = $live->background_psql('postgres');
$open->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'open ' || g, repeat('o', 50) FROM generate_series(50001, 55000) g});
$open->query_safe(q{UPDATE "Src Ö"."Wide 'T'" SET v = 'open touched' WHERE id BETWEEN 1001 AND 2000});
$live->safe_psql('postgres', q{INSERT INTO "Src Ö"."Wide 'T'" VALUES (7002, 'while open', NULL)});
($stream0) = slot_stats();
is(refresh(), '1', 'the refresh applies the committed transaction');
($stream1) = slot_stats();
ok($stream1 > $stream0, 'live streamed the open transaction to it');
is(count_where(q{v LIKE 'open%'}), '0', 'nothing of the open transaction');
is(count_where('id = 7002'), '1', 'the committed one is there');
$open->query_safe(q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'open ' || g, repeat('o', 50) FROM generate_series(55001, 56000) g; COMMIT});
$open->quit;
is(refresh(), '1', 'after its commit the next refresh applies it');
is(count_where(q{v = 'open ' || id}), '6000', 'exactly once');
same_tables($live, $mart, \@pairs, 'after the open streamed transaction committed');

# --- 4. two parts, a streamed transaction across the split ---
my $split = "SET pg_sluice.split_decoding_min = '64kB'; SET client_min_messages = debug1;";
my $long = $live->background_psql('postgres');
$long->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'long ' || g, repeat('l', 50) FROM generate_series(60001, 65000) g});
$live->safe_psql('postgres', join('', map { qq{INSERT INTO "Src Ö"."Wide 'T'" VALUES (} . (70000 + $_) . ", 'small $_', repeat('s', 100));\n" } 1 .. 400));
$long->query_safe(q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'long ' || g, repeat('l', 50) FROM generate_series(65001, 70000) g; COMMIT});
$long->quit;
$live->safe_psql('postgres', q{UPDATE "Src Ö"."Wide 'T'" SET v = 'after long' WHERE id % 7 = 0});
$logpos = -s $live->logfile;
my ($ret, $out, $err) = $mart->psql('postgres', "$as_op $split SELECT transactions FROM sluice.refresh($pl)");
is($ret, 0, 'the refresh in two parts succeeded') or diag($err);
my $partlog = slurp_file($live->logfile, $logpos);
like($partlog, qr/peek_binary_changes\('\Q$slot\E', CASE [^,]* END, NULL, 'proto_version', '1'/,
	'the first part does not stream (what it would stream commits in the second)');
like($partlog, qr/peek_binary_changes\('sluice_split_[^']*', CASE [^,]* END, NULL, 'proto_version', '2', 'streaming', 'on'/,
	'the second part streams');
# live's 64kB quartered is below its floor: 64kB each
is(scalar(() = $partlog =~ /SET logical_decoding_work_mem = '64kB'/g), 2,
	'each part decodes within live\'s logical_decoding_work_mem (a quarter each, at least 64kB)');
like($err, qr/decodes .* in two parts/, 'the refresh decoded in two parts');
like($err, qr/first part done after \d+ messages/, 'it went on with the second part on the second connection');
same_tables($live, $mart, \@pairs, 'two parts with a streamed transaction across the split');
is(count_where(q{v LIKE 'long %'}), '8571', 'the long transaction once (less its rows the update renamed)');

# --- 5. no second slot: the second part decoded after the first ---
# (the second part's temporary slot goes when its backend on live exits)
$live->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'sluice_split%'")
  or die 'the temporary slot of the second part stayed on live';
my $used = $live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots");
$live->safe_psql('postgres', join('', map { "SELECT pg_create_physical_replication_slot('filler_$_');\n" } 1 .. (10 - $used)));
$long = $live->background_psql('postgres');
$long->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'late ' || g, repeat('l', 50) FROM generate_series(80001, 84000) g});
$live->safe_psql('postgres', join('', map { qq{INSERT INTO "Src Ö"."Wide 'T'" VALUES (} . (90000 + $_) . ", 'fallback $_', repeat('f', 100));\n" } 1 .. 400));
$live->safe_psql('postgres', q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'early big ' || g, repeat('e', 50) FROM generate_series(95001, 99000) g});
$long->query_safe(q{UPDATE "Src Ö"."Wide 'T'" SET v = 'late touched' WHERE id BETWEEN 90001 AND 90100; COMMIT});
$long->quit;
$logpos = -s $mart->logfile;
($ret, $out, $err) = $mart->psql('postgres', "$as_op $split SELECT transactions FROM sluice.refresh($pl)");
is($ret, 0, 'the refresh with the fallback succeeded') or diag($err);
ok($mart->wait_for_log(qr/could not decode the second part of its refresh on a second connection; decoding it after the first/, $logpos),
	'the datamart logs the fallback');
same_tables($live, $mart, \@pairs, 'the second part after the first, streamed transactions on both sides');
is(count_where(q{v LIKE 'early big%'}), '4000', 'the streamed transaction before the split once');
$live->safe_psql('postgres', join('', map { "SELECT pg_drop_replication_slot('filler_$_');\n" } 1 .. (10 - $used)));

# --- 6. kill -9 of the datamart while a streamed transaction is applied ---
$live->safe_psql('postgres',
	q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'replayed ' || g, repeat('r', 50) FROM generate_series(100001, 130000) g});
# the slot mover moves the slot to the last refresh's end after its commit:
# wait for it, or the killed refresh's own advance there would look like a move
my $end0 = $mart->safe_psql('postgres', "SELECT end_lsn FROM sluice.runs WHERE pipeline = $pl ORDER BY run_id DESC LIMIT 1");
$live->poll_query_until('postgres', "SELECT confirmed_flush_lsn >= '$end0' FROM pg_replication_slots WHERE slot_name = '$slot'")
  or die "the slot did not reach the last refresh's end ($end0)";
my $c0 = $live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
$mart->safe_psql('postgres', q{
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.id = 120000 THEN PERFORM pg_sleep(60); END IF; RETURN NEW; END $$;
CREATE TRIGGER hold BEFORE INSERT ON "Mart Ö"."Wide 'T'" FOR EACH ROW EXECUTE FUNCTION public.hold();
ALTER TABLE "Mart Ö"."Wide 'T'" ENABLE ALWAYS TRIGGER hold;});
my $bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, qq{$as_op \\echo started\nSELECT sluice.refresh($pl);\n});
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'sluice.refresh'"),
	'the refresh is in the middle of the streamed transaction');
ok(crash_mart(), 'datamart restarted after kill -9 during the refresh');
$mart->safe_psql('postgres', q{DROP TRIGGER hold ON "Mart Ö"."Wide 'T'"});
eval { $bg->quit };
is($live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'"),
	$c0, 'the killed refresh did not move the slot');
is(refresh(), '1', 'the refresh after the crash applies the transaction');
is(count_where(q{v LIKE 'replayed%'}), '30000', 'exactly once');
same_tables($live, $mart, \@pairs, 'kill -9 during a streamed transaction');

# --- 7. the spool of a paused pipeline keeps protocol 1 ---
my $nn = $mart->safe_psql('postgres', qq{$as_op SELECT sluice.expect_column_values_to_not_be_null('"Mart Ö"."Wide ''T''"', '__sluice_op', severity => 'error')});
$live->safe_psql('postgres',
	q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'spooled ' || g, CASE WHEN g = 205000 THEN NULL ELSE 's' END FROM generate_series(200001, 205000) g});
$mart->psql('postgres', "$as_op SELECT sluice.refresh($pl)");
is($mart->safe_psql('postgres', "SELECT state FROM sluice.status WHERE pipeline = $pl"), 'paused',
	'a failing error expectation paused the pipeline');
$logpos = -s $live->logfile;
$mart->safe_psql('postgres', "$as_op SELECT sluice.drain($pl)");
my $log = slurp_file($live->logfile, $logpos);
like($log, qr/pg_logical_slot_peek_binary_changes\(.*'proto_version', '1'/, 'the spool decodes with protocol 1');
unlike($log, qr/'streaming', 'on'/, '... without streaming');
$mart->safe_psql('postgres', qq{$as_op SELECT sluice.drop_expectation('"Mart Ö"."Wide ''T''"', \$n\$$nn\$n\$)});
$mart->safe_psql('postgres', "$as_op SELECT sluice.resume($pl)");
refresh();
same_tables($live, $mart, \@pairs, 'after the spool was applied');

done_testing();
