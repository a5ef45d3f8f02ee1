# A table renamed on live (ALTER TABLE ... RENAME TO, ... SET SCHEMA) with
# writes before and after the rename in one backlog (src/identity.c):
#  - evolve and ignore follow it: pgoutput names the table by its oid too,
#    the rows land in the same datamart table, the pipeline records the
#    new source name (the contract's key follows) and a drift event
#    'renamed' says what happened;
#  - freeze pauses with the old and the new name and the way forward
#    (sluice.accept_rename, then resume), nothing applied and nothing lost;
#    a reader may not accept, an operator may;
#  - streamed by continuous workers (walsender), under evolve and freeze;
#  - renamed, then another table created under the old name (not
#    followed), or dropped and created again under the old name (not
#    treated as the same table: paused, saying so).
# Before: every rename paused the refresh as a table "no longer exists"
# whose only way forward was a new copy, and a worker silently dropped the
# changes sent under the new name.
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
pg_sluice.max_workers = 4
});

my $tdef = q{(id int PRIMARY KEY, "Wert ä" text)};
my $ls = q{"Ün ""app"""};
my %lt;
$lt{$_} = qq{$ls."Tab 'Ä' $_"} for qw(ev ig fr we wf dr nw ws cp);
$live->safe_psql('postgres', qq{
CREATE SCHEMA $ls;
CREATE SCHEMA "Zwei Ö";
CREATE TABLE $ls.keep (id int PRIMARY KEY, v int);
INSERT INTO $ls.keep SELECT g, g FROM generate_series(1, 20) g;
} . join('', map { qq{
CREATE TABLE $lt{$_} $tdef;
INSERT INTO $lt{$_} SELECT g, 'old ' || g FROM generate_series(1, 100) g;
} } sort keys %lt) . q{
CREATE PUBLICATION "all pub" FOR ALL TABLES;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE "Öps o'Neil" LOGIN;
CREATE ROLE "Rëader" LOGIN;
GRANT CREATE ON DATABASE postgres TO "Öps o'Neil";
SELECT sluice.grant_operator('"Öps o''Neil"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO "Öps o'Neil";
});
my $op = q{SET ROLE "Öps o'Neil"; };
# a name as an SQL literal
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
my %pub = (nw => q{, publication => 'all pub'}, ws => q{, publication => 'all pub'});
foreach my $p (sort keys %lt)
{
	my $extra = $pub{$p} // '';
	my $keep = $p eq 'ev' ? ', ' . lit(qq{$ls.keep}) : '';
	my $tl = lit($lt{$p});
	$mart->safe_psql('postgres', qq{${op}
SELECT sluice.create_pipeline('$p', 'live', ARRAY[$tl$keep], target_schema => 'Mart "$p" é'$extra);});
}
# the datamart tables keep their names
my %mt;
$mt{$_} = qq{"Mart ""$_"" é"."Tab 'Ä' $_"} for keys %lt;
$mart->safe_psql('postgres', qq{${op}SELECT sluice.set_drift_policy(} . lit($mt{$_}) . q{, 'evolve');}) for qw(ev we dr nw ws);
$mart->safe_psql('postgres', qq{${op}SELECT sluice.set_drift_policy(} . lit($mt{ig}) . q{, 'ignore');});
$mart->safe_psql('postgres', qq{
GRANT USAGE ON SCHEMA "Mart ""fr"" é" TO "Rëader";
GRANT SELECT ON $mt{fr} TO "Rëader";});

sub refresh_status
{
	my ($name) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', qq{${op}\\set VERBOSITY verbose
SELECT status FROM sluice.refresh('$name')});
	return ($out, $err);
}

# a statement that may fail (the new API, before it existed): its output and error
sub try_psql
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $mart->psql('postgres', $sql);
	return ($out, $err);
}

sub source_name
{
	my ($p) = @_;
	return $mart->safe_psql('postgres', qq{SELECT source_schema || '.' || source_table FROM sluice.pipeline_tables
  WHERE pipeline = '$p' AND source_table <> 'keep'});
}

sub last_event
{
	my ($p) = @_;
	return $mart->safe_psql('postgres', qq{SELECT action || ': ' || detail FROM sluice._drift_event d JOIN sluice._pipeline p USING (pipeline_id)
  WHERE p.name = '$p' ORDER BY event_id DESC LIMIT 1});
}

# --- 1. evolve: RENAME TO, then SET SCHEMA, writes before, between and after ---
my $ev2 = qq{$ls."Tab ""B"" ö ev"};
my $ev3 = qq{"Zwei Ö"."Tab ""B"" ö ev"};
$live->safe_psql('postgres', qq{
INSERT INTO $lt{ev} VALUES (101, 'before');
UPDATE $lt{ev} SET "Wert ä" = 'upd before' WHERE id = 1;
UPDATE $ls.keep SET v = -1 WHERE id = 1;
ALTER TABLE $lt{ev} RENAME TO "Tab ""B"" ö ev";
INSERT INTO $ev2 VALUES (102, 'between');
UPDATE $ev2 SET "Wert ä" = 'upd between' WHERE id IN (2, 101);
DELETE FROM $ev2 WHERE id = 3;
ALTER TABLE $ev2 SET SCHEMA "Zwei Ö";
INSERT INTO $ev3 VALUES (103, 'after');
UPDATE $ev3 SET "Wert ä" = 'upd after' WHERE id IN (4, 102);
DELETE FROM $ev3 WHERE id = 5;
});
my ($st, $err) = refresh_status('ev');
is($st, 'succeeded', 'evolve: a table renamed and moved on live refreshes');
same_tables($live, $mart, [[$ev3, $mt{ev}], [qq{$ls.keep}, qq{"Mart ""ev"" é".keep}]], 'evolve, renamed');
is(source_name('ev'), 'Zwei Ö.Tab "B" ö ev', 'evolve: the pipeline records the new source name');
is($mart->safe_psql('postgres', q{SELECT string_agg(DISTINCT source_schema || '.' || source_table, ', ')
  FROM sluice.contracts WHERE target_schema = 'Mart "ev" é' AND source_table <> 'keep'}), 'Zwei Ö.Tab "B" ö ev',
	'evolve: the contract carries the new source name');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._contract_column cc JOIN sluice._pipeline p USING (pipeline_id)
  WHERE p.name = 'ev' AND cc.source_table = 'Tab ''Ä'' ev'}), '0', 'evolve: every contract version follows the new name');
like(last_event('ev'), qr/^renamed: Table "Ün "app"\.Tab 'Ä' ev" \(oid \d+\) was renamed to "Zwei Ö\.Tab "B" ö ev" on source "live"/,
	'evolve: a drift event renamed names the old and the new name');
$live->safe_psql('postgres', qq{INSERT INTO $ev3 VALUES (104, 'later'); UPDATE $ev3 SET "Wert ä" = 'later' WHERE id = 6;});
($st, $err) = refresh_status('ev');
is($st, 'succeeded', 'evolve: the next refresh succeeds');
same_tables($live, $mart, [[$ev3, $mt{ev}]], 'evolve, later writes');

# --- 2. ignore follows too ---
my $ig2 = qq{$ls."tab IG Ñ"};
$live->safe_psql('postgres', qq{
INSERT INTO $lt{ig} VALUES (101, 'before');
ALTER TABLE $lt{ig} RENAME TO "tab IG Ñ";
INSERT INTO $ig2 VALUES (102, 'after');
UPDATE $ig2 SET "Wert ä" = 'upd' WHERE id IN (1, 101);
});
($st, $err) = refresh_status('ig');
is($st, 'succeeded', 'ignore: a renamed table refreshes');
same_tables($live, $mart, [[$ig2, $mt{ig}]], 'ignore, renamed');
is(source_name('ig'), 'Ün "app".tab IG Ñ', 'ignore: the new source name is recorded');

# --- 3. freeze: paused, with the names and the way forward ---
my $fr2 = qq{"Zwei Ö"."Fröz ""X"""};
my $fr_before = checksum($mart, $mt{fr});
$live->safe_psql('postgres', qq{
INSERT INTO $lt{fr} VALUES (101, 'before');
UPDATE $lt{fr} SET "Wert ä" = 'upd before' WHERE id = 1;
ALTER TABLE $lt{fr} RENAME TO "Fröz ""X""";
ALTER TABLE $ls."Fröz ""X""" SET SCHEMA "Zwei Ö";
INSERT INTO $fr2 VALUES (102, 'after');
UPDATE $fr2 SET "Wert ä" = 'upd after' WHERE id IN (2, 101);
DELETE FROM $fr2 WHERE id = 3;
});
($st, $err) = refresh_status('fr');
is($st, 'paused', 'freeze: a renamed table pauses the refresh');
like($err, qr/WARNING:  55000: pipeline "fr" paused: source table "Ün "app"\.Tab 'Ä' fr" of pipeline "fr" was renamed to "Zwei Ö\.Fröz "X""/,
	'freeze: the warning (SQLSTATE 55000) names the old and the new name');
like($err, qr/DETAIL:.*"Ün "app"\.Tab 'Ä' fr" \(oid \d+\) was renamed to "Zwei Ö\.Fröz "X"" on source "live".*nothing is lost/s,
	'freeze: the detail says what happened');
like($err, qr/HINT:.*sluice\.accept_rename\('fr'\).*sluice\.resume\('fr'\)/s, 'freeze: the hint names accept_rename and resume');
is(checksum($mart, $mt{fr}), $fr_before, 'freeze: nothing was applied');
like($mart->safe_psql('postgres', q{SELECT paused_reason FROM sluice.status WHERE pipeline = 'fr'}), qr/was renamed to/,
	'freeze: sluice.status says why');
is(source_name('fr'), q{Ün "app".Tab 'Ä' fr}, 'freeze: the recorded name is unchanged');
my ($out, $rerr) = try_psql(q{SET ROLE "Rëader"; SELECT sluice.accept_rename('fr')});
like($rerr, qr/permission denied for function accept_rename/, 'a reader may not accept a rename');
($out, $rerr) = try_psql(qq{${op}SELECT sluice.accept_rename('fr')});
is($out, '1', 'the operator accepts the rename (one table)');
is(source_name('fr'), 'Zwei Ö.Fröz "X"', 'freeze: accept_rename records the new name');
like(last_event('fr'), qr/^renamed: .*accept_rename/, 'freeze: a drift event renamed');
($out, $rerr) = try_psql(qq{${op}SELECT sluice.accept_rename('fr')});
like($rerr, qr/ERROR:  no source table of pipeline "fr" was renamed/, 'accepting again says nothing was renamed');
$mart->psql('postgres', qq{${op}SELECT sluice.resume('fr')});
($st, $err) = refresh_status('fr');
is($st, 'succeeded', 'freeze: after accept_rename and resume the refresh succeeds');
same_tables($live, $mart, [[$fr2, $mt{fr}]], 'freeze, accepted: every row before and after the rename');
$live->safe_psql('postgres', qq{INSERT INTO $fr2 VALUES (103, 'later')});
($st, $err) = refresh_status('fr');
is($st, 'succeeded', 'freeze: the next refresh succeeds');
same_tables($live, $mart, [[$fr2, $mt{fr}]], 'freeze, later writes');

# --- 4. renamed, then another table created under the old name (FOR ALL
#        TABLES: its changes arrive too); evolve follows the renamed one ---
my $nw2 = qq{$ls."Tab 'Ä' nw alt"};
$live->safe_psql('postgres', qq{
INSERT INTO $lt{nw} VALUES (101, 'before');
ALTER TABLE $lt{nw} RENAME TO "Tab 'Ä' nw alt";
CREATE TABLE $lt{nw} $tdef;
INSERT INTO $lt{nw} VALUES (1, 'impostor'), (5000, 'impostor');
INSERT INTO $nw2 VALUES (102, 'after');
});
($st, $err) = refresh_status('nw');
is($st, 'succeeded', 'a table renamed and another created under its old name: the renamed one is followed');
same_tables($live, $mart, [[$nw2, $mt{nw}]], 'renamed, new table under the old name');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM $mt{nw} WHERE "Wert ä" = 'impostor'}), '0',
	'none of the new table\'s rows landed in the datamart table');
like(last_event('nw'), qr/^renamed: .*Another table \(oid \d+\) now has the old name; it is not part of the pipeline/,
	'the drift event says another table has the old name');

# --- 5. renamed, then dropped, and a new table created under the old name ---
my $dr_before;
$live->safe_psql('postgres', qq{
INSERT INTO $lt{dr} VALUES (101, 'before');
ALTER TABLE $lt{dr} RENAME TO "Tab dr weg";
INSERT INTO $ls."Tab dr weg" VALUES (102, 'after');
});
$dr_before = checksum($mart, $mt{dr});
$live->safe_psql('postgres', qq{
DROP TABLE $ls."Tab dr weg";
CREATE TABLE $lt{dr} $tdef;
INSERT INTO $lt{dr} VALUES (1, 'new 1'), (7000, 'new 7000');
});
($st, $err) = refresh_status('dr');
is($st, 'paused', 'renamed, dropped and created again under the old name: paused');
like($err, qr/not the table pipeline "dr" copied.*DETAIL:.*dropped and created again \(oid \d+, was \d+\).*HINT:.*sluice\.resnapshot/s,
	'it says the table under the old name is another one, and how to copy it');
is(checksum($mart, $mt{dr}), $dr_before, 'nothing of it was applied');

# --- 6. continuous workers over the walsender: evolve and freeze ---
$mart->safe_psql('postgres', qq{${op}SELECT sluice.start('we'); SELECT sluice.start('wf');});
$live->safe_psql('postgres', qq{INSERT INTO $lt{we} VALUES (101, 'streamed'); INSERT INTO $lt{wf} VALUES (101, 'streamed');});
wait_same_tables($live, $mart, [[$lt{we}, $mt{we}], [$lt{wf}, $mt{wf}]], 'workers streaming');
my $we2 = qq{"Zwei Ö"."Wë ""2"""};
my $wf2 = qq{"Zwei Ö"."Wf ""2"""};
$live->safe_psql('postgres', qq{
INSERT INTO $lt{we} VALUES (102, 'before');
ALTER TABLE $lt{we} RENAME TO "Wë ""2""";
ALTER TABLE $ls."Wë ""2""" SET SCHEMA "Zwei Ö";
INSERT INTO $we2 VALUES (103, 'after');
UPDATE $we2 SET "Wert ä" = 'upd after' WHERE id IN (1, 102);
INSERT INTO $lt{wf} VALUES (102, 'before');
ALTER TABLE $lt{wf} RENAME TO "Wf ""2""";
INSERT INTO $ls."Wf ""2""" VALUES (110, 'between two renames');
UPDATE $ls."Wf ""2""" SET "Wert ä" = 'upd between' WHERE id IN (2, 101);
ALTER TABLE $ls."Wf ""2""" SET SCHEMA "Zwei Ö";
INSERT INTO $wf2 VALUES (103, 'after');
UPDATE $wf2 SET "Wert ä" = 'upd after' WHERE id IN (1, 102);
});
wait_same_tables($live, $mart, [[$we2, $mt{we}]], 'evolve worker, renamed');
ok($mart->poll_query_until('postgres', q{SELECT source_schema || '.' || source_table FROM sluice.pipeline_tables WHERE pipeline = 'we'},
	'Zwei Ö.Wë "2"'), 'evolve worker: the new source name is recorded at its look at live');
ok($mart->poll_query_until('postgres', q{SELECT paused_reason ~ 'was renamed to' FROM sluice.status WHERE pipeline = 'wf'}),
	'freeze worker: the rename pauses the pipeline');
($out, $rerr) = try_psql(qq{${op}SELECT sluice.accept_rename('wf'); SELECT sluice.resume('wf');});
like($out, qr/^1/, 'freeze worker: the operator accepts the rename');
wait_same_tables($live, $mart, [[$wf2, $mt{wf}]], 'freeze worker, accepted (writes under three names)');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice._drift_event d JOIN sluice._pipeline p USING (pipeline_id)
  WHERE p.name = 'wf' AND action = 'paused'}), '1', 'freeze worker: two renames in the backlog pause it once');
$live->safe_psql('postgres', qq{INSERT INTO $we2 VALUES (104, 'later'); INSERT INTO $wf2 VALUES (104, 'later');});
wait_same_tables($live, $mart, [[$we2, $mt{we}], [$wf2, $mt{wf}]], 'workers, later writes');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.status WHERE pipeline IN ('we', 'wf') AND paused_reason IS NOT NULL}),
	'0', 'both workers run on');

# --- 7. a worker over FOR ALL TABLES: renamed, and another table created
#        under the old name in the same transaction.  Its changes can
#        arrive before the worker's look at live: the pipeline pauses (as
#        for a table created again), and once resumed the worker looks at
#        live before it streams, follows the rename and leaves the other
#        table out (before, every new stream paused again on it) ---
$mart->safe_psql('postgres', qq{${op}SELECT sluice.start('ws');});
$live->safe_psql('postgres', qq{INSERT INTO $lt{ws} VALUES (101, 'streamed')});
wait_same_tables($live, $mart, [[$lt{ws}, $mt{ws}]], 'worker over all tables');
my $ws2 = qq{$ls."Ws ""alt"" ü"};
$live->safe_psql('postgres', qq{
BEGIN;
ALTER TABLE $lt{ws} RENAME TO "Ws ""alt"" ü";
CREATE TABLE $lt{ws} $tdef;
INSERT INTO $lt{ws} VALUES (1, 'impostor'), (6000, 'impostor');
INSERT INTO $ws2 VALUES (102, 'after');
COMMIT;
});
ok($mart->poll_query_until('postgres', q{SELECT paused_reason IS NOT NULL OR source_table = 'Ws "alt" ü'
  FROM sluice.status s JOIN sluice.pipeline_tables t USING (pipeline) WHERE pipeline = 'ws'}),
	'worker over all tables: the rename is followed, or the other table\'s changes pause it');
if ($mart->safe_psql('postgres', q{SELECT paused_reason IS NOT NULL FROM sluice.status WHERE pipeline = 'ws'}) eq 't')
{
	like($mart->safe_psql('postgres', q{SELECT paused_reason FROM sluice.status WHERE pipeline = 'ws'}),
		qr/or renamed, and another one created under its name/, 'the pause says the table may have been renamed');
	$mart->safe_psql('postgres', qq{${op}SELECT sluice.resume('ws')});
}
else
{
	pass('no pause: the worker looked at live first');
}
wait_same_tables($live, $mart, [[$ws2, $mt{ws}]], 'worker over all tables, renamed');
is($mart->safe_psql('postgres', q{SELECT source_schema || '.' || source_table || ' ' || (paused_reason IS NULL)
  FROM sluice.status s JOIN sluice.pipeline_tables t USING (pipeline) WHERE pipeline = 'ws'}), 'Ün "app".Ws "alt" ü true',
	'worker over all tables: the new name recorded, the pipeline runs');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM $mt{ws} WHERE "Wert ä" = 'impostor'}), '0',
	'worker over all tables: none of the other table\'s rows landed');

# --- 8. renamed while it is copied again in chunks (freeze): the next
#        chunk says so (before: "no longer exists ... create it again") ---
my $cp_op = qq{${op}SET pg_sluice.copy_workers = 0; };
$mart->safe_psql('postgres', qq{${cp_op}SELECT sluice.resnapshot('cp', } . lit($mt{cp}) . q{, chunk_rows => 30); SELECT sluice.copy_chunk('cp');});
my $cp2 = qq{$ls."Cp ""neu"" ü"};
$live->safe_psql('postgres', qq{
ALTER TABLE $lt{cp} RENAME TO "Cp ""neu"" ü";
INSERT INTO $cp2 VALUES (101, 'after');
UPDATE $cp2 SET "Wert ä" = 'upd after' WHERE id IN (1, 90);
});
($out, $rerr) = try_psql(qq{${cp_op}SELECT sluice.copy_chunk('cp')});
like($rerr, qr/ERROR:  table "Ün "app"\.Tab 'Ä' cp" was renamed to "Ün "app"\.Cp "neu" ü" on source "live".*HINT:.*sluice\.accept_rename\('cp'\)/s,
	'a chunk of a table renamed on live says so, with the way forward');
($st, $err) = refresh_status('cp');
is($st, 'paused', 'renamed while copied: the refresh pauses (freeze)');
($out, $rerr) = try_psql(qq{${op}SELECT sluice.accept_rename('cp'); SELECT sluice.resume('cp');});
$mart->safe_psql('postgres', qq{${cp_op}CALL sluice.copy_tables('cp')});
($st, $err) = refresh_status('cp');
is($st, 'succeeded', 'renamed while copied: accepted, copied and refreshed');
same_tables($live, $mart, [[$cp2, $mt{cp}]], 'renamed while copied in chunks');

done_testing();
