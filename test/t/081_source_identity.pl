# A source table dropped on live, or dropped and created again under the
# same name, is noticed (src/identity.c): the pipeline pauses with the way
# forward in its hint, instead of a datamart that keeps the old table's rows
# while every refresh succeeds (found by the hostile review, 078).
#  - refreshed on demand, pg_sluice's own publication (the dropped table
#    left it: nothing of it arrives any more);
#  - the way forward: resnapshot, resume, CALL copy_tables; the new table's
#    later changes flow;
#  - a table dropped for good pauses too; created again later, the same
#    way forward;
#  - a publication FOR ALL TABLES, streamed by a continuous worker over the
#    walsender: the new table's changes arrive under a new oid;
#  - a table dropped under a streaming pipeline (nothing more arrives): the
#    worker's look at live pauses it;
#  - a pipeline updated from 0.1 (no oid recorded) learns it;
#  - a worker polling over the SQL interface looks at most every 5 s (one
#    query on live per poll before), and still pauses on a drop.
# Names with quotes, spaces, capitals and non-ASCII; a non-superuser operator.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
pg_sluice.max_workers = 2
});

my $tdef = q{(id int PRIMARY KEY, "Wert ä" text)};
$live->safe_psql('postgres', qq{
CREATE SCHEMA "Ün ""app""";
CREATE TABLE "Ün ""app"""."T 1" $tdef;
INSERT INTO "Ün ""app"""."T 1" SELECT g, 'old ' || g FROM generate_series(1, 500) g;
CREATE TABLE "Ün ""app""".keep (id int PRIMARY KEY, v int);
INSERT INTO "Ün ""app""".keep SELECT g, g FROM generate_series(1, 50) g;
CREATE TABLE "Ün ""app""".streamed $tdef;
INSERT INTO "Ün ""app""".streamed SELECT g, 'old ' || g FROM generate_series(1, 300) g;
CREATE TABLE "Ün ""app""".quiet $tdef;
CREATE TABLE "Ün ""app""".polled $tdef;
INSERT INTO "Ün ""app""".quiet SELECT g, 'old ' || g FROM generate_series(1, 300) g;
CREATE PUBLICATION "all pub" FOR ALL TABLES;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE "Öps o'Neil" LOGIN;
GRANT CREATE ON DATABASE postgres TO "Öps o'Neil";
SELECT sluice.grant_operator('"Öps o''Neil"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO "Öps o'Neil";
});
my $op = q{SET ROLE "Öps o'Neil"; };
$mart->safe_psql('postgres', qq{${op}
SELECT sluice.create_pipeline('ident', 'live', ARRAY['"Ün ""app"""."T 1"', '"Ün ""app""".keep'], target_schema => 'Idént "S"');
SELECT sluice.create_pipeline('allp', 'live', ARRAY['"Ün ""app""".streamed'], target_schema => 'All S', publication => 'all pub');
SELECT sluice.create_pipeline('quiet', 'live', ARRAY['"Ün ""app""".quiet'], target_schema => 'Quiet S');
SELECT sluice.create_pipeline('polled', 'live', ARRAY['"Ün ""app""".polled'], target_schema => 'Polled S');
});
my $t1 = q{"Idént ""S"""."T 1"};
my $keep = q{"Idént ""S""".keep};
my $lt1 = q{"Ün ""app"""."T 1"};
my $lkeep = q{"Ün ""app""".keep};

is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._pipeline_table WHERE source_relid IS NULL}), '0',
	'create_pipeline records each table\'s oid on live');

sub refresh_status
{
	my ($name) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', qq{${op}SELECT status FROM sluice.refresh('$name')});
	return ($out, $err);
}

# --- 1. dropped and created again, refreshed on demand ---
$live->safe_psql('postgres', qq{
DROP TABLE $lt1;
CREATE TABLE $lt1 $tdef;
INSERT INTO $lt1 VALUES (1, 'new 1'), (1000, 'new 1000');
UPDATE $lkeep SET v = -1 WHERE id = 1;
});
my ($st, $err) = refresh_status('ident');
is($st, 'paused', 'a table dropped and created again on live pauses the refresh');
like($err, qr/WARNING:.*source table "Ün "app"\.T 1" is not the table pipeline "ident" copied.*DETAIL:.*dropped and created again.*HINT:.*sluice\.resnapshot\('ident', '"Idént ""S"""\."T 1"'\)/s,
	'the warning names the table, says what happened and hints resnapshot');
like($mart->safe_psql('postgres', q{SELECT paused_reason FROM sluice.status WHERE pipeline = 'ident'}),
	qr/dropped and created again/, 'sluice.status says why it is paused');
is($mart->safe_psql('postgres', q{SELECT action FROM sluice._drift_event d JOIN sluice._pipeline p USING (pipeline_id)
  WHERE p.name = 'ident' AND d.source_table = 'T 1' ORDER BY event_id DESC LIMIT 1}), 'paused', 'recorded as a drift that paused');
is($mart->safe_psql('postgres', qq{SELECT v FROM $keep WHERE id = 1}), '1', 'nothing was applied (the other table waits too)');
($st, $err) = refresh_status('ident');
like($err, qr/is paused|not the table/, 'the next refresh stays paused');

# the way forward, as the hint says: the new table copied again in chunks
$mart->safe_psql('postgres', qq{${op}
SELECT sluice.resnapshot('ident', '$t1'::regclass);
SELECT sluice.resume('ident');
CALL sluice.copy_tables('ident');
});
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM sluice.copy_progress WHERE pipeline = 'ident' AND state <> 'finished'}), '0',
	'the copy finished');
same_tables($live, $mart, [[$lt1, $t1], [$lkeep, $keep]], 'after resnapshot');
$live->safe_psql('postgres', qq{INSERT INTO $lt1 VALUES (2000, 'later'); UPDATE $lt1 SET "Wert ä" = 'newer' WHERE id = 1;});
($st, $err) = refresh_status('ident');
is($st, 'succeeded', 'the next refresh succeeds');
same_tables($live, $mart, [[$lt1, $t1]], 'the new table\'s later changes flow');

# --- 2. dropped for good: paused until it exists again ---
$live->safe_psql('postgres', qq{DROP TABLE $lt1;});
($st, $err) = refresh_status('ident');
is($st, 'paused', 'a table dropped on live pauses the refresh');
like($err, qr/DETAIL:.*no longer exists on source "live".*keeps the rows it had/s, 'it says the table is gone');
$mart->safe_psql('postgres', qq{${op}SELECT sluice.resnapshot('ident', '$t1'::regclass); SELECT sluice.resume('ident')});
my ($ret, $out, $cerr) = $mart->psql('postgres', qq{${op}CALL sluice.copy_tables('ident')});
like($cerr, qr/no longer exists on source "live".*HINT:.*Create it again on live/s, 'copying a table still gone says so');
$live->safe_psql('postgres', qq{CREATE TABLE $lt1 $tdef; INSERT INTO $lt1 SELECT g, 'third ' || g FROM generate_series(1, 40) g;});
$mart->safe_psql('postgres', qq{${op}CALL sluice.copy_tables('ident')});
($st, $err) = refresh_status('ident');
is($st, 'succeeded', 'created again and copied: refreshes succeed');
same_tables($live, $mart, [[$lt1, $t1], [$lkeep, $keep]], 'after the table came back');

# --- 3. learnt after an update from 0.1 ---
$mart->safe_psql('postgres', q{UPDATE sluice._pipeline_table SET source_relid = NULL});
($st, $err) = refresh_status('ident');
is($st, 'succeeded', 'a refresh with no oid recorded succeeds');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._pipeline_table pt JOIN sluice._pipeline p USING (pipeline_id)
  WHERE p.name = 'ident' AND source_relid IS NULL}), '0', 'and learns the oids');

# --- 4. streaming: FOR ALL TABLES (the new table's changes arrive) and a
#        quiet table dropped (nothing arrives) ---
$mart->safe_psql('postgres', qq{${op}SELECT sluice.refresh('allp'); SELECT sluice.refresh('quiet');
SELECT sluice.start('allp'); SELECT sluice.start('quiet');});
$live->safe_psql('postgres', q{INSERT INTO "Ün ""app""".streamed VALUES (301, 'x'); INSERT INTO "Ün ""app""".quiet VALUES (301, 'x');});
wait_same_tables($live, $mart, [['"Ün ""app""".streamed', '"All S".streamed'], ['"Ün ""app""".quiet', '"Quiet S".quiet']],
	'streaming');
$live->safe_psql('postgres', qq{
DROP TABLE "Ün ""app""".streamed;
CREATE TABLE "Ün ""app""".streamed $tdef;
INSERT INTO "Ün ""app""".streamed VALUES (1, 'new 1'), (5000, 'new 5000');
DROP TABLE "Ün ""app""".quiet;
});
ok($mart->poll_query_until('postgres', q{SELECT paused_reason ~ 'not the table pipeline "allp" copied' FROM sluice.status WHERE pipeline = 'allp'}),
	'streaming: the new table\'s changes under a new oid pause the pipeline');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM "All S".streamed WHERE id = 5000}), '0',
	'and none of them was applied on top of the old rows');
ok($mart->poll_query_until('postgres', q{SELECT paused_reason ~ 'no longer exists' FROM sluice.status WHERE pipeline = 'quiet'}),
	'streaming: a table dropped on live pauses the pipeline at the worker\'s next look');

# --- 5. a worker polling over the SQL interface: the look at live's tables
#        is throttled like the walsender worker's, and still sees a drop ---
$mart->safe_psql('postgres', q{ALTER SYSTEM SET pg_sluice.worker_transport = 'sql'; SELECT pg_reload_conf();});
$mart->safe_psql('postgres', qq{${op}SELECT sluice.start('polled');});
$live->safe_psql('postgres', q{INSERT INTO "Ün ""app""".polled VALUES (1, 'x')});
wait_same_tables($live, $mart, [['"Ün ""app""".polled', '"Polled S".polled']], 'polled over SQL');
$live->safe_psql('postgres', q{ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf();});
my $from = -s $live->logfile;
sleep 4;
$live->safe_psql('postgres', q{ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf();});
my $log = slurp_file($live->logfile, $from);
my $polls = () = $log =~ /confirmed_flush_lsn, active_pid, restart_lsn/g;
my $looks = () = $log =~ /unnest\(\$3::oid\[\]\)/g;
cmp_ok($polls, '>=', 5, "the SQL worker polled live ($polls times in 4 s)");
cmp_ok($looks, '<=', 2, "and looked up its tables at most every 5 s ($looks times)");
$live->safe_psql('postgres', q{DROP TABLE "Ün ""app""".polled});
ok($mart->poll_query_until('postgres', q{SELECT paused_reason ~ 'no longer exists' FROM sluice.status WHERE pipeline = 'polled'}),
	'polled over SQL: a table dropped on live pauses the pipeline at the next look');

done_testing();
