# sluice.refresh over the walsender (pg_sluice.refresh_transport =
# walsender; refresh.c's refresh_by_stream, walstream.c): the backlog is
# streamed through a replication connection up to the refresh's start, and
# the slot moves when the refresh commits, by the walsender's standby status
# update, with no pg_replication_slot_advance (no second decoding).  Live
# decodes with logical_decoding_work_mem = 64kB, so big transactions come
# while in progress and are spooled (streamfile.c).  As an operator role,
# names with quotes, spaces, capitals and non-ASCII:
#  - a backlog with a streamed big transaction, an aborted streamed one and
#    rolled-back subtransactions inside a streamed one: applied exactly;
#  - confirmed_flush_lsn reaches the refresh's end_lsn at its commit, and
#    live ran no pg_replication_slot_advance;
#  - a refresh rolled back (its backend killed before COMMIT, or an
#    exception block around it in a transaction that commits) leaves the
#    slot where it was; the next refresh applies the backlog once;
#  - kill -9 of the datamart in the middle of a refresh: exactly once;
#  - two refreshes in one transaction (the first one's walsender is let go);
#  - the sql transport still refreshes, and auto picks a transport: the
#    walsender for a backlog of pg_sluice.refresh_walsender_min (16 MB
#    here) of WAL or more from a source reached over TCP (the slot at the
#    refresh's end as soon as it returns), the SQL interface for a smaller
#    one, or over a Unix socket;
#  - a refresh cancelled while its reader waits for the walsender, behind
#    its end: promptly, the slot unmoved, the backlog then applied once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use SluiceTest;

my $live = new_live('live', conf => "logical_decoding_work_mem = 64kB\nlog_statement = 'all'\nlog_replication_commands = on\n"
	. "listen_addresses = '127.0.0.1'\n");
$live->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n");
$live->reload;
my $mart = new_mart('mart', conf => "pg_sluice.refresh_transport = walsender\npg_sluice.source_decoding_work_mem = 64\nrestart_after_crash = on\n");

$live->safe_psql('postgres', q{
CREATE SCHEMA "Src Ö";
CREATE TABLE "Src Ö"."Wide 'T'" (id bigint PRIMARY KEY, v text, pad text);
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'seed ' || g, repeat('p', 50) FROM generate_series(1, 100) g;
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
SELECT sluice.create_pipeline('wal_r', 'live', ARRAY['"Src Ö"."Wide ''T''"'], target_schema => 'Mart Ö');
});
my $pl = q{'wal_r'};
my @pairs = ([q{"Src Ö"."Wide 'T'"}, q{"Mart Ö"."Wide 'T'"}]);
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = $pl");
my $as_op = qq{SET ROLE "Ålice o'Op";};

sub confirmed
{
	return $live->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
}
sub stream_txns
{
	return $live->safe_psql('postgres',
		"SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = '$slot'");
}
sub refresh
{
	return $mart->safe_psql('postgres', "$as_op SELECT transactions || ' ' || end_lsn FROM sluice.refresh($pl)");
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

# --- a backlog: streamed, aborted streamed, subtransaction aborts, small ones ---
my $streamed0 = stream_txns();
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
my ($n, $start, $end) = split / /, $mart->safe_psql('postgres',
	"$as_op SELECT transactions || ' ' || start_lsn || ' ' || end_lsn FROM sluice.refresh($pl)");
same_tables($live, $mart, \@pairs, 'walsender refresh of streamed, aborted and subtransaction work');
ok($n >= 3, "the refresh applied the committed transactions ($n)");
ok(stream_txns() > $streamed0, 'live streamed the big transactions in progress');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Wide 'T'" WHERE v LIKE 'aborted%' OR v LIKE 'sub gone%'}),
	'0', 'nothing of the aborted transaction or subtransaction');
ok($live->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'"),
	"the slot moved to the refresh's end ($end) at its commit");
my $log = slurp_file($live->logfile, $logpos);
unlike($log, qr/pg_logical_slot_peek/, 'live ran no SQL decoding');
# a walsender refresh confirms at its commit; the advances it leads to only
# bring the slot's restart position up to where the slot already is
# (fast-forward, no output): at its start, and by the slot mover after its
# commit, so that the next refresh need not
for (1 .. 100)
{
	last if slurp_file($live->logfile, $logpos) =~ /restart_lsn < \$2::pg_lsn/;
	usleep(100_000);
}
$log = slurp_file($live->logfile, $logpos);
like($log, qr/restart_lsn < \$2::pg_lsn/, 'the slot mover brought the restart position up after the commit');
my @adv = $log =~ /parameters: \$1 = '[^']*', \$2 = '([0-9A-F]+\/[0-9A-F]+)'/g;
my $past = $live->safe_psql('postgres', "SELECT count(*) FROM unnest('{" . join(',', @adv) . "}'::pg_lsn[]) a WHERE a > '$end'");
is($past, '0', 'no slot advance past the refresh\'s end (' . scalar(@adv) . ' advances)');
like($log, qr/START_REPLICATION SLOT/, 'the refresh read the slot through the walsender');

# an empty refresh right after: nothing to apply, the slot keeps up
($n, $end) = split / /, refresh();
is($n, '0', 'the next refresh has nothing');
ok($live->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'... and the slot follows it');

# --- a refresh whose transaction dies before COMMIT: the slot stays ---
$live->safe_psql('postgres', q{UPDATE "Src Ö"."Wide 'T'" SET v = 'before the kill' WHERE id BETWEEN 1 AND 50});
my $c0 = confirmed();
my $bg = $mart->background_psql('postgres');
$bg->query_safe(qq{$as_op BEGIN});
$bg->query_safe(qq{SELECT sluice.refresh($pl)});
my $bgpid = $bg->query_safe('SELECT pg_backend_pid()');
$bgpid =~ s/\s+//g;
kill 'KILL', $bgpid;
eval { $bg->quit };
ok($mart->poll_query_until('postgres', 'SELECT true'), 'the datamart is back after the killed backend');
ok($live->poll_query_until('postgres',
	"SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'"), 'the walsender let go');
is(confirmed(), $c0, 'a rolled-back refresh did not move the slot');
($n) = split / /, refresh();
is($n, '1', 'the next refresh applies the transaction once');
same_tables($live, $mart, \@pairs, 'after a rolled-back refresh');

# --- a refresh rolled back by an exception block, its transaction committed ---
$live->safe_psql('postgres', q{UPDATE "Src Ö"."Wide 'T'" SET v = 'caught' WHERE id BETWEEN 51 AND 60});
$c0 = confirmed();
$mart->safe_psql('postgres', qq{$as_op DO \$\$ BEGIN PERFORM sluice.refresh($pl); RAISE EXCEPTION 'changed my mind';
EXCEPTION WHEN raise_exception THEN NULL; END \$\$});
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Wide 'T'" WHERE v = 'caught'}), '0',
	'the refresh rolled back with its block');
is(confirmed(), $c0, '... and the commit of its transaction did not move the slot');
($n) = split / /, refresh();
is($n, '1', 'the next refresh applies the transaction');
same_tables($live, $mart, \@pairs, 'after a refresh rolled back by an exception block');

# --- kill -9 of the datamart in the middle of a refresh: exactly once ---
$live->safe_psql('postgres',
	q{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'replayed ' || g, repeat('r', 200) FROM generate_series(100001, 250000) g});
$c0 = confirmed();
# a trigger on the datamart table holds the refresh in the middle of the
# transaction (at one row), so the kill lands there
$mart->safe_psql('postgres', q{
CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.id = 200000 THEN PERFORM pg_sleep(60); END IF; RETURN NEW; END $$;
CREATE TRIGGER hold BEFORE INSERT ON "Mart Ö"."Wide 'T'" FOR EACH ROW EXECUTE FUNCTION public.hold();
ALTER TABLE "Mart Ö"."Wide 'T'" ENABLE ALWAYS TRIGGER hold;});
$bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, qq{$as_op \\echo started\nSELECT sluice.refresh($pl);\n});
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'sluice.refresh'"),
	'the refresh is in the middle of the transaction');
ok(crash_mart(), 'datamart restarted after kill -9 during the refresh');
$mart->safe_psql('postgres', q{DROP TRIGGER hold ON "Mart Ö"."Wide 'T'"});
eval { $bg->quit };
is(confirmed(), $c0, 'the killed refresh did not move the slot');
($n) = split / /, refresh();
is($n, '1', 'the refresh after the crash applies the transaction');
same_tables($live, $mart, \@pairs, 'kill -9 of the datamart during a walsender refresh');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Wide 'T'" WHERE v LIKE 'replayed%'}), '150000',
	'exactly once');

# --- two refreshes in one transaction ---
$live->safe_psql('postgres', q{INSERT INTO "Src Ö"."Wide 'T'" VALUES (300001, 'first of two', NULL)});
$bg = $mart->background_psql('postgres');
$bg->query_safe(qq{$as_op BEGIN});
$bg->query_safe(qq{SELECT sluice.refresh($pl)});
$live->safe_psql('postgres', q{INSERT INTO "Src Ö"."Wide 'T'" VALUES (300002, 'second of two', NULL)});
$bg->query_safe(qq{SELECT sluice.refresh($pl)});
$bg->query_safe('COMMIT');
$bg->quit;
same_tables($live, $mart, \@pairs, 'two refreshes in one transaction');
($n, $end) = split / /, refresh();
is($n, '0', 'nothing left after them');

# --- a drain behind its end, cancelled while it waits for the walsender ---
# Behind its end, the reader drains the socket and waits on it
# (walstream_await).  The walsender is stopped (SIGSTOP)
# while the refresh is held at the backlog's first row (a trigger on the
# datamart waiting for a go), so once let go the reader drains what the
# socket holds and then waits, behind its end, for sure: pg_cancel_backend
# must end it promptly, the slot stays, and the next refresh applies the
# backlog exactly once.
$live->safe_psql('postgres', q{DO $$ BEGIN FOR i IN 0 .. 19 LOOP
INSERT INTO "Src Ö"."Wide 'T'" SELECT g, 'drained ' || g, repeat('d', 200) FROM generate_series(500001 + i * 2000, 502000 + i * 2000) g;
COMMIT; END LOOP; END $$});
$c0 = confirmed();
$mart->safe_psql('postgres', q{
CREATE TABLE public."Go Ö" (x int);
GRANT SELECT ON public."Go Ö" TO PUBLIC;
CREATE FUNCTION public.hold_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id = 500001 THEN
    LOOP EXIT WHEN EXISTS (SELECT FROM public."Go Ö"); PERFORM pg_sleep(0.05); END LOOP;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER hold_first BEFORE INSERT ON "Mart Ö"."Wide 'T'" FOR EACH ROW EXECUTE FUNCTION public.hold_first();
ALTER TABLE "Mart Ö"."Wide 'T'" ENABLE ALWAYS TRIGGER hold_first;});
$bg = $mart->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, qq{$as_op \\echo started\nSELECT sluice.refresh($pl);\n});
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ~ 'sluice.refresh'"),
	'the refresh is held at the first row of the backlog');
my $wspid = $live->safe_psql('postgres', "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'");
like($wspid, qr/^\d+$/, 'the refresh streams through a walsender');
ok(kill('STOP', $wspid), 'the walsender is stopped');
$mart->safe_psql('postgres', q{INSERT INTO public."Go Ö" VALUES (1)});
ok($mart->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query ~ 'sluice.refresh'"),
	'the refresh drained the socket and waits for the stopped walsender');
my $t0 = time;
$mart->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query ~ 'sluice.refresh' AND pid <> pg_backend_pid()");
$bg->quit;
my $cancel_secs = time - $t0;
like($bg->{stderr}, qr/canceling statement due to user request/, 'the cancel ends the drain with the usual error');
ok($cancel_secs < 5, sprintf('... promptly (%.2f s), the walsender still stopped', $cancel_secs));
ok(kill('CONT', $wspid), 'the walsender goes on');
ok($live->poll_query_until('postgres',
	"SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'"), 'the walsender let go');
is(confirmed(), $c0, 'the cancelled refresh did not move the slot');
$mart->safe_psql('postgres', q{DROP TRIGGER hold_first ON "Mart Ö"."Wide 'T'"});
($n, $end) = split / /, refresh();
is($n, '20', 'the next refresh applies the backlog');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "Mart Ö"."Wide 'T'" WHERE v LIKE 'drained%'}), '40000',
	'exactly once');
same_tables($live, $mart, \@pairs, 'after a cancelled drain');
is($live->safe_psql('postgres', "SELECT confirmed_flush_lsn = '$end' FROM pg_replication_slots WHERE slot_name = '$slot'"),
	't', "the slot is at the refresh's end ($end) as soon as it returns");

# --- the sql transport, and auto ---
for my $tr ('sql', 'auto')
{
	$live->safe_psql('postgres', qq{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, '$tr ' || g, NULL FROM generate_series(400001, 402000) g WHERE g % 2 = (CASE WHEN '$tr' = 'sql' THEN 0 ELSE 1 END)});
	($n) = split / /, $mart->safe_psql('postgres',
		"$as_op SET pg_sluice.refresh_transport = $tr; SELECT transactions || ' ' || end_lsn FROM sluice.refresh($pl)");
	is($n, '1', "refresh_transport = $tr applies the transaction");
	same_tables($live, $mart, \@pairs, "refresh_transport = $tr");
}
# --- auto: the walsender for a big backlog over TCP, else the SQL interface
# (pg_sluice.refresh_walsender_min = 16MB) ---
my $unix_conn = $mart->safe_psql('postgres', "SELECT conninfo FROM sluice._source WHERE name = 'live'");
sub auto_refresh
{
	my ($label, $rows) = @_;
	my $w0 = $live->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	$live->safe_psql('postgres', qq{INSERT INTO "Src Ö"."Wide 'T'" SELECT g, '$label ' || g, repeat('w', 200)
		FROM generate_series(1000001 + (SELECT count(*) FROM "Src Ö"."Wide 'T'" WHERE id > 1000000), 1000000 + $rows
			+ (SELECT count(*) FROM "Src Ö"."Wide 'T'" WHERE id > 1000000)) g});
	my $wal = $live->safe_psql('postgres', "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$w0')");
	my $pos = -s $live->logfile;
	my ($tx, $e) = split / /, $mart->safe_psql('postgres',
		"$as_op SET pg_sluice.refresh_transport = auto; SET pg_sluice.refresh_walsender_min = '16MB'; "
		. "SELECT transactions || ' ' || end_lsn FROM sluice.refresh($pl)");
	my $conf = $live->safe_psql('postgres', "SELECT confirmed_flush_lsn = '$e' FROM pg_replication_slots WHERE slot_name = '$slot'");
	is($tx, '1', "auto, $label: the refresh applies the transaction");
	is($mart->safe_psql('postgres', qq{SELECT count(*) FROM "Mart Ö"."Wide 'T'" WHERE v LIKE '$label %'}), $rows,
		"auto, $label: exactly once");
	same_tables($live, $mart, \@pairs, "auto, $label");
	my $took = slurp_file($live->logfile, $pos) =~ /START_REPLICATION SLOT/ ? 'walsender' : 'sql';
	return ($took, $wal, $conf);
}
my $port = $live->port;
$mart->safe_psql('postgres', "SELECT sluice.alter_source('live', 'host=127.0.0.1 port=$port dbname=postgres')");
my ($took, $wal, $at_end) = auto_refresh('tcp big', 70000);
ok($wal >= 16 * 1024 * 1024, "the big backlog is 16 MB of WAL or more ($wal bytes)");
is($took, 'walsender', 'auto over TCP takes the walsender for the big backlog');
is($at_end, 't', "... and the slot is at the refresh's end as soon as it returns");
($took, $wal) = auto_refresh('tcp small', 2000);
is($took, 'sql', "auto over TCP takes the SQL interface for a small backlog ($wal bytes)");
$mart->safe_psql('postgres', qq{SELECT sluice.alter_source('live', \$\$$unix_conn\$\$)});
($took, $wal) = auto_refresh('unix big', 70000);
ok($wal >= 16 * 1024 * 1024, "the big backlog is 16 MB of WAL or more ($wal bytes)");
is($took, 'sql', 'auto over a Unix socket takes the SQL interface');
done_testing();
