# The slot's restart position after a big backlog (refresh.c,
# refresh_restart_point; slotwatch.c, the slot mover).  A logical slot's
# restart position moves only to where live logged its running
# transactions; with none logged between a backlog's last commit and the
# refresh's end, the mover could not take it past the backlog and the next
# refresh decoded the whole backlog again.  A refresh of a backlog of 16MB of
# WAL or more now logs one first (a temporary logical slot, created and
# dropped on live).  As an operator role, over the SQL interface and over
# the walsender:
#  - after the refresh and the slot mover, the restart position is past the
#    backlog, and no temporary slot is left on live;
#  - a small backlog creates no slot; the decoding function's output goes
#    to a temporary file on live, not into live's work_mem;
#  - a transaction left open on live: the refresh does not wait for it
#    (lock_timeout), applies the backlog, and leaves nothing behind;
#  - every slot of live in use but one: no attempt, no error on live;
#  - no slot mover (no free worker process): the next refresh's own advance
#    takes the restart position past the backlog before it decodes;
#  - a big backlog of one transaction is decoded in one part (two would
#    decode it one and a half times), one of many in two.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SluiceTest;

my $live = new_live('live', conf => "log_statement = 'all'\nlog_min_messages = debug1\nlog_temp_files = 0\n");
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA "Src Ö";
CREATE TABLE "Src Ö"."Big 'T'" (id bigint PRIMARY KEY, v text);
INSERT INTO "Src Ö"."Big 'T'" SELECT g, 'seed' FROM generate_series(1, 10) g;
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
SELECT sluice.create_pipeline('rp', 'live', ARRAY['"Src Ö"."Big ''T''"'], target_schema => 'Mart Ö');
});
my @pairs = ([q{"Src Ö"."Big 'T'"}, q{"Mart Ö"."Big 'T'"}]);
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = 'rp'");
my $next_id = 1000;

# about 25MB of WAL, committed right before the refresh
sub backlog
{
	my ($rows) = @_;
	my $from = $next_id;
	$next_id += $rows;
	$live->safe_psql('postgres', qq{
INSERT INTO "Src Ö"."Big 'T'" SELECT g, repeat(md5(g::text), 4) FROM generate_series($from, $from + $rows - 1) g;});
	return $live->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
}

sub refresh
{
	my ($transport) = @_;
	return $mart->safe_psql('postgres', qq{SET pg_sluice.refresh_transport = $transport; SET ROLE "Ålice o'Op";
SELECT rows_inserted FROM sluice.refresh('rp')});
}

# the slot mover has confirmed the refresh's end and let the slot go
sub wait_mover
{
	my $end = $mart->safe_psql('postgres', q{SELECT end_lsn FROM sluice.runs WHERE pipeline = 'rp' ORDER BY run_id DESC LIMIT 1});
	ok($live->poll_query_until('postgres', qq{
SELECT confirmed_flush_lsn >= '$end' AND active_pid IS NULL FROM pg_replication_slots WHERE slot_name = '$slot'}),
		"the slot mover confirmed $end");
}

sub restart_lsn
{
	return $live->safe_psql('postgres', "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
}

sub temp_slots
{
	return $live->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'sluice\_restart\_%'});
}

# --- 1. over the SQL interface, then over the walsender ---
foreach my $transport ('sql', 'walsender')
{
	my $after = backlog(150000);
	my $logpos = -s $live->logfile;
	is(refresh($transport), '150000', "$transport: the refresh applied the backlog");
	wait_mover();
	# polled: the slot is confirmed (and let go) before the mover's last
	# advance, and over the walsender before the mover even starts
	my $past = $live->poll_query_until('postgres',
		"SELECT restart_lsn >= '$after'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
	my $restart = restart_lsn();
	ok($past, "$transport: the slot's restart position ($restart) is past the backlog ($after)");
	my $log = slurp_file($live->logfile, $logpos);
	like($log, qr/pg_create_logical_replication_slot\('sluice_restart_/,
		"$transport: the refresh logged a restart point");
	like($log, qr/SET logical_decoding_work_mem = '64512kB'/,
		"$transport: live's 64MB less the session's own 1MB") if $transport eq 'sql';
	is(temp_slots(), '0', "$transport: no temporary slot left on live");
	same_tables($live, $mart, \@pairs, "$transport refresh");
}

# --- 2. a small backlog: no slot created ---
{
	backlog(100);
	my $logpos = -s $live->logfile;
	is(refresh('sql'), '100', 'a small backlog');
	unlike(slurp_file($live->logfile, $logpos), qr/pg_create_logical_replication_slot/, 'creates no slot on live');
}

# --- 2b. the decoding function's output is not held in live's work_mem ---
{
	backlog(3000);
	$live->safe_psql('postgres', "ALTER SYSTEM SET work_mem = '64MB'; SELECT pg_reload_conf()");
	my $logpos = -s $live->logfile;
	is(refresh('sql'), '3000', 'a backlog of about 400kB of messages, live\'s work_mem 64MB');
	like(slurp_file($live->logfile, $logpos), qr/temporary file: [^\n]*\n[^\n]*STATEMENT:[^\n]*peek_binary_changes/,
		'the output went to a temporary file on live, not to its memory');
	$live->safe_psql('postgres', "ALTER SYSTEM RESET work_mem; SELECT pg_reload_conf()");
}

# --- 3. a transaction left open on live ---
{
	my $open = $live->background_psql('postgres');
	$open->query_safe(q{BEGIN; INSERT INTO "Src Ö"."Big 'T'" VALUES (-1, 'open')});
	my $after = backlog(150000);
	my $t0 = time();
	is(refresh('sql'), '150000', 'with a transaction open on live, the refresh applies the backlog');
	my $took = time() - $t0;
	ok($took < 20, sprintf('without waiting for the open transaction (%.1f s)', $took));
	is(temp_slots(), '0', 'and leaves no temporary slot on live');
	$open->query_safe('COMMIT');
	$open->quit;
	is(refresh('sql'), '1', 'the open transaction comes once it committed');
	same_tables($live, $mart, \@pairs, 'after the open transaction');
}

# --- 4. every slot of live in use but one (left for others) ---
{
	my $free = $live->safe_psql('postgres',
		q{SELECT current_setting('max_replication_slots')::int - count(*) - 1 FROM pg_replication_slots});
	$live->safe_psql('postgres', "SELECT pg_create_physical_replication_slot('filler_' || g) FROM generate_series(1, $free) g");
	backlog(150000);
	my $logpos = -s $live->logfile;
	is(refresh('sql'), '150000', 'with one slot of live free, the refresh applies the backlog');
	my $log = slurp_file($live->logfile, $logpos);
	unlike($log, qr/pg_create_logical_replication_slot/, 'it tries no slot');
	unlike($log, qr/ERROR/, 'and live logged no error');
	$live->safe_psql('postgres', "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'filler_%'");
	same_tables($live, $mart, \@pairs, 'with one slot free');
}

# --- 5. no slot mover (no free worker): the next refresh moves the slot past the backlog itself ---
{
	$mart->append_conf('postgresql.conf', "max_worker_processes = 0\n");
	$mart->restart;
	refresh('sql');
	# a restart point before the backlog: the first advance stops there
	$live->safe_psql('postgres', 'CHECKPOINT');
	my $after = backlog(150000);
	is(refresh('sql'), '150000', 'without a slot mover, the refresh applies the backlog');
	my $before = restart_lsn();
	ok($live->safe_psql('postgres', "SELECT '$before'::pg_lsn < '$after'::pg_lsn") eq 't',
		"no mover ran: the restart position ($before) is still before the backlog's end");
	is(refresh('sql'), '0', 'the next refresh has nothing to apply');
	my $restart = restart_lsn();
	ok($live->safe_psql('postgres', "SELECT '$restart'::pg_lsn >= '$after'::pg_lsn") eq 't',
		"and took the slot's restart position ($restart) past the backlog ($after)");
	same_tables($live, $mart, \@pairs, 'without a slot mover');
}

# --- 6. a big backlog of one transaction is decoded in one part ---
{
	my $split = "SET pg_sluice.split_decoding_min = '64kB'; SET client_min_messages = debug1;";
	backlog(150000);
	my ($ret, $out, $err) = $mart->psql('postgres', qq{SET ROLE "Ålice o'Op"; $split SELECT rows_inserted FROM sluice.refresh('rp')});
	is($out, '150000', 'one big transaction with split_decoding_min = 64kB');
	like($err, qr/decodes its backlog in one part: \d+ transactions/, 'is decoded in one part (few transactions on live)');
	unlike($err, qr/in two parts/, 'not in two');
	$live->safe_psql('postgres', join('', map { "INSERT INTO \"Src Ö\".\"Big 'T'\" VALUES (" . (-100000 - $_) . ", repeat('s', 300));\n" } 1 .. 400));
	($ret, $out, $err) = $mart->psql('postgres', qq{SET ROLE "Ålice o'Op"; $split SELECT rows_inserted FROM sluice.refresh('rp')});
	is($out, '400', 'four hundred small transactions');
	like($err, qr/in two parts/, 'are decoded in two parts');
	same_tables($live, $mart, \@pairs, 'one part and two');
}

done_testing();
