# One pipeline's chunked copy does not hold up the others (issue 19):
#  1. pipeline a_gross copies a table of 1,000,000 rows in chunks with two
#     background copy workers (pg_sluice.initial_copy = chunked) while, from
#     another source database, pipeline b_abruf is refreshed on demand and
#     pipeline c_strom streams, both under writes: b's refreshes and c's
#     commit-to-visible lag stay bounded (measured before the copy too, as
#     the reference), a_gross converges, checksums equal;
#  2. a copy that fails for good (a constraint of the datamart's the rows
#     break) backs off: 5 s, 10 s, 20 s between attempts, shown in
#     sluice.copy_failures (the error's text to operators only) and
#     sluice.status, with the way forward in the log; fixed, it finishes;
#  3. no background worker slot for the copy workers (max_worker_processes
#     reached): the copy waits with a warning, b and c go on, and CALL
#     sluice.copy_tables copies it in the session; its notices say nothing
#     untrue (no "<NULL> left" for a table the source has no estimate for).
# A non-superuser operator; names with quotes, spaces, capitals, non-ASCII.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.naptime = 50ms
pg_sluice.max_workers = 2
});
my $db2 = 'Zweite Ö';
my $big = '"Groß"."Viel ""V"""';
my $noest = '"Groß"."Ohne Schätzung"';
my $abruf = 'public."Auf Abruf"';
my $strom = 'public."Strom"';

$live->safe_psql('postgres', qq{
CREATE SCHEMA "Groß";
CREATE TABLE $big (id bigint PRIMARY KEY, a int NOT NULL, "Wert b" text);
INSERT INTO $big SELECT g, g % 97, 'wert ' || g FROM generate_series(1, 1000000) g;
-- never analyzed: the source has no row estimate for it (reltuples -1)
CREATE TABLE $noest (id int PRIMARY KEY, v text NOT NULL) WITH (autovacuum_enabled = false);
INSERT INTO $noest SELECT g, 'n' || g FROM generate_series(1, 2500) g;
CREATE DATABASE "$db2";
});
$live->safe_psql($db2, qq{
CREATE TABLE $abruf (id bigint PRIMARY KEY, v text NOT NULL);
CREATE TABLE $strom (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO $abruf SELECT g, 'a' || g FROM generate_series(1, 1000) g;
INSERT INTO $strom SELECT g, 's' || g FROM generate_series(1, 1000) g;
CREATE TABLE public.stop_load (stop boolean);
CREATE SEQUENCE public.new_ids START 100000;
-- small commits on both tables until a row is in stop_load (or n of them)
CREATE PROCEDURE public.write_load(n int) LANGUAGE plpgsql AS \$\$
BEGIN
  FOR i IN 1 .. n LOOP
    EXIT WHEN EXISTS (SELECT FROM public.stop_load);
    UPDATE $abruf SET v = 'u' || i WHERE id = 1 + i % 1000;
    INSERT INTO $abruf VALUES (nextval('public.new_ids'), 'i' || i);
    UPDATE $strom SET v = 'u' || i WHERE id = 1 + i % 1000;
    COMMIT;
    PERFORM pg_sleep(0.005);
  END LOOP;
END \$\$;
});
mart_source($mart, $live, 'live');
mart_source($mart, $live, 'zweite', $db2);
$mart->safe_psql('postgres', q{
CREATE ROLE "Eigner E" NOLOGIN;
CREATE ROLE "Öps 'o'" LOGIN;
GRANT CREATE ON DATABASE postgres TO "Eigner E";
SELECT sluice.grant_operator('"Eigner E"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO "Eigner E";
GRANT "Eigner E" TO "Öps 'o'";
SET ROLE "Eigner E";
SELECT sluice.create_pipeline('b_abruf', 'zweite', ARRAY['public."Auf Abruf"'], target_schema => 'Abruf B');
SELECT sluice.create_pipeline('c_strom', 'zweite', ARRAY['public."Strom"'], target_schema => 'Strom C');
});
my $abruf_m = '"Abruf B"."Auf Abruf"';
my $strom_m = '"Strom C"."Strom"';
is($mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT sluice.start('c_strom')}), 't', 'c_strom streams');
strom_same('c_strom started');

# c_strom's table on the mart catches up with live's (another database)
sub strom_same
{
	my ($label) = @_;
	my $want = checksum($live, $strom, $db2);
	ok($mart->poll_query_until('postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '-') FROM $strom_m t",
		$want), "$label: $strom_m caught up with live");
}

# a commit on c_strom's source, and how long until the mart has it
my $next = 5_000_000;
sub strom_lag
{
	my $id = $next++;
	$live->safe_psql($db2, "INSERT INTO $strom VALUES ($id, 'probe')");
	my $t0 = time;
	while (time - $t0 < 60)
	{
		return time - $t0 if $mart->safe_psql('postgres', "SELECT count(*) FROM $strom_m WHERE id = $id") eq '1';
		usleep(20_000);
	}
	return 999;
}

sub refresh_s
{
	my $t0 = time;
	$mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT sluice.refresh('b_abruf')});
	return time - $t0;
}

sub copying
{
	return $mart->safe_psql('postgres', q{SELECT coalesce(bool_or(state = 'copying'), false) FROM sluice.copy_progress WHERE pipeline = 'a_gross'}) eq 't';
}

sub pct
{
	my ($p, @v) = @_;
	my @s = sort { $a <=> $b } @v;
	return $s[ int($p * $#s) ];
}

# --- the reference: b and c under writes, no copy -------------------------
my $writer = $live->background_psql($db2, on_error_stop => 1);
$writer->query_until(qr/started/, "\\echo started\nCALL public.write_load(100000);\n\\echo written\n");
my (@ref_refresh, @ref_lag);
for (1 .. 8)
{
	push @ref_refresh, refresh_s();
	push @ref_lag, strom_lag();
}

# --- 1. a_gross copies 1,000,000 rows in chunks with two workers ----------
my ($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE "Eigner E"; SET client_min_messages = notice;
SET pg_sluice.initial_copy = chunked; SET pg_sluice.initial_copy_chunk_rows = 50000; SET pg_sluice.copy_workers = 2;
SELECT sluice.create_pipeline('a_gross', 'live', ARRAY['"Groß"."Viel ""V"""', '"Groß"."Ohne Schätzung"'], target_schema => 'Groß A')});
is($ret, 0, 'a_gross created, to be copied in chunks by two workers') or diag($err);
my $t_copy = time;
my (@refresh, @lag, $both_workers);
while (copying() && time - $t_copy < 120)
{
	$both_workers ||= $mart->safe_psql('postgres',
		q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'pg_sluice copy worker'}) eq 't';
	my $r = refresh_s();
	my $l = strom_lag();
	# only what overlapped the copy counts
	next unless copying();
	push @refresh, $r;
	push @lag, $l;
}
my $copy_s = time - $t_copy;
ok(!copying(), sprintf('a_gross\'s copy finished (%.1f s)', $copy_s));
ok($both_workers, 'two copy workers copied at once');
diag(sprintf("during a_gross's chunked copy of 1,000,000 rows (%.1f s, 2 copy workers): %d refreshes of b_abruf "
	  . "p50 %.3f s, max %.3f s (no copy: p50 %.3f s, max %.3f s); c_strom lag p50 %.3f s, max %.3f s "
	  . "(no copy: p50 %.3f s, max %.3f s)",
	$copy_s, scalar @refresh, pct(0.5, @refresh), pct(1, @refresh), pct(0.5, @ref_refresh), pct(1, @ref_refresh),
	pct(0.5, @lag), pct(1, @lag), pct(0.5, @ref_lag), pct(1, @ref_lag)));
cmp_ok(scalar @refresh, '>=', 3, 'b_abruf was refreshed at least 3 times during the copy');
cmp_ok(pct(1, @refresh), '<', 10, 'every refresh of b_abruf during the copy took under 10 s');
cmp_ok(pct(1, @lag), '<', 10, 'c_strom\'s lag stayed under 10 s during the copy');
$live->safe_psql($db2, 'INSERT INTO public.stop_load VALUES (true)');
$writer->query_until(qr/written/, '');
$writer->quit;
$live->safe_psql($db2, 'TRUNCATE public.stop_load');
$mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT sluice.refresh('a_gross'); SELECT sluice.refresh('b_abruf')});
same_tables($live, $mart, [[$big, '"Groß A"."Viel ""V"""'], [$noest, '"Groß A"."Ohne Schätzung"']], 'a_gross copied in chunks');
is(checksum($mart, $abruf_m), checksum($live, $abruf, $db2), 'b_abruf refreshed during the copy equals live');
strom_same('c_strom streamed during the copy');

# --- 2. a copy that fails for good backs off, and recovers once fixed -----
# a constraint of the datamart's that the second chunk breaks; one worker
$mart->safe_psql('postgres', q{CREATE ROLE reader LOGIN;
ALTER TABLE "Groß A"."Ohne Schätzung" ADD CONSTRAINT "kein 1500" CHECK (id <> 1500) NOT VALID});
$mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SET pg_sluice.copy_workers = 1;
SELECT sluice.resnapshot('a_gross', '"Groß A"."Ohne Schätzung"', chunk_rows => 1000)});
my (%failed_at, %delay);
my $t_fail = time;
while (time - $t_fail < 60 && !defined $failed_at{3})
{
	my $row = $mart->safe_psql('postgres', q{SELECT failures || '|' || extract(epoch FROM failed_at) || '|'
  || extract(epoch FROM next_attempt_at - failed_at) FROM sluice.copy_failures WHERE pipeline = 'a_gross'});
	if ($row ne '')
	{
		my ($n, $at, $d) = split /\|/, $row;
		$failed_at{$n} //= $at;
		$delay{$n} //= $d;
	}
	usleep(100_000);
}
ok(defined $failed_at{3}, 'the copy failed three times in a row (sluice.copy_failures)');
is(join(',', map { sprintf('%.0f', $delay{$_} // -1) } 1 .. 3), '5,10,20', 'the wait before the next attempt doubles: 5 s, 10 s, 20 s');
my $gap = ($failed_at{3} // 0) - ($failed_at{2} // 0);
cmp_ok($gap, '>=', 9, sprintf('the third attempt came %.1f s after the second, not 5 s', $gap));
like($mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT last_error FROM sluice.copy_failures WHERE pipeline = 'a_gross'}),
	qr/violates check constraint "kein 1500"/, 'the operator sees why');
like($mart->safe_psql('postgres', q{SET ROLE reader; SELECT last_error FROM sluice.copy_failures WHERE pipeline = 'a_gross'}),
	qr/^an error \(shown to the pipeline's operators/, 'a reader sees that there was an error, not its text');
like($mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT copy FROM sluice.status WHERE pipeline = 'a_gross'}),
	qr/; copy workers failed \d+ times in a row, next attempt at .* \(sluice\.copy_failures\)$/, 'sluice.status says the workers wait');
ok(slurp_file($mart->logfile) =~ /LOG:  the copy workers of pipeline "a_gross" failed 2 times in a row; they try again at .*\n.*DETAIL:  .*\n.*HINT:  Fix the cause; SELECT sluice\.copy_chunk\('a_gross'\) tries a chunk at once/,
	'the log says when they try again and the way forward');
# fixed: the hint's way forward copies the failing chunk at once, the waiting worker goes on
$mart->safe_psql('postgres', q{ALTER TABLE "Groß A"."Ohne Schätzung" DROP CONSTRAINT "kein 1500"});
my $t_fix = time;
is($mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT sluice.copy_chunk('a_gross')}), 't', 'copy_chunk copies a chunk in the session');
ok($mart->poll_query_until('postgres', q{SELECT NOT EXISTS (SELECT FROM sluice.copy_progress WHERE pipeline = 'a_gross' AND state = 'copying')
   AND NOT EXISTS (SELECT FROM sluice.copy_failures)}), 'the copy finished, the failures are gone');
my $fix_s = time - $t_fix;
cmp_ok($fix_s, '<', 12, sprintf('within %.1f s of the fix, not at the next attempt', $fix_s));
$mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT sluice.refresh('a_gross')});
same_tables($live, $mart, [[$noest, '"Groß A"."Ohne Schätzung"']], 'after the failures');

# --- 3. no worker slot for the copy workers --------------------------------
# the postmaster's workers: PostgreSQL's logical replication launcher,
# pg_sluice's launcher and c_strom's pool worker; nothing left for copies
$mart->append_conf('postgresql.conf', "max_worker_processes = 3\n");
$mart->restart;
ok($mart->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_sluice worker'}),
	'c_strom\'s pool worker runs again after the restart');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE "Öps 'o'"; SET client_min_messages = warning;
SELECT sluice.resnapshot('a_gross', '"Groß A"."Ohne Schätzung"', chunk_rows => 1000)});
is($ret, 0, 'resnapshot with no worker slot free') or diag($err);
like($err, qr/WARNING:  no free background worker slot to copy the chunks of pipeline \d+.*HINT:  .*CALL sluice\.copy_tables/s,
	'it warns that no copy worker could start, and how to copy anyway');
$writer = $live->background_psql($db2, on_error_stop => 1);
$writer->query_until(qr/started/, "\\echo started\nCALL public.write_load(300);\n\\echo written\n");
my (@r2, @l2);
for (1 .. 4)
{
	push @r2, refresh_s();
	push @l2, strom_lag();
}
diag(sprintf('a copy waiting for a worker slot: b_abruf refresh max %.3f s, c_strom lag max %.3f s', pct(1, @r2), pct(1, @l2)));
cmp_ok(pct(1, @r2), '<', 10, 'b_abruf refreshes while the copy waits for a slot');
cmp_ok(pct(1, @l2), '<', 10, 'c_strom streams while the copy waits for a slot');
ok(copying(), 'the copy still waits');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE "Öps 'o'"; SET client_min_messages = notice; CALL sluice.copy_tables('a_gross')});
is($ret, 0, 'CALL sluice.copy_tables copies it in the session') or diag($err);
like($err, qr/NOTICE:  pipeline "a_gross": table "Groß A"\."Ohne Schätzung": 1 of 2 chunks, 1000 rows(, \d+ rows\/s)?\n/,
	'a notice per chunk, with no rate or time left while the source has no estimate');
unlike($err, qr/NULL/, 'no notice prints NULL');
ok(!copying(), 'finished');
$writer->query_until(qr/written/, '');
$writer->quit;
$mart->safe_psql('postgres', q{SET ROLE "Öps 'o'"; SELECT sluice.refresh('a_gross'); SELECT sluice.refresh('b_abruf')});
same_tables($live, $mart, [[$noest, '"Groß A"."Ohne Schätzung"']], 'copied by copy_tables');
is(checksum($mart, $abruf_m), checksum($live, $abruf, $db2), 'b_abruf equals live');
strom_same('c_strom after the copy in the session');
$mart->safe_psql('postgres', q{SELECT sluice.stop('c_strom')});

done_testing();
