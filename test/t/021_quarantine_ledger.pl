# Quarantine as a ledger of each key's latest state (issue 15, item 1).
# A quarantined row whose key later changes on the source is superseded,
# never released by mistake over newer data; an update of a held key is
# checked again and inserted (columns it did not send come from the held
# row); a correction given to release_quarantined may be partial.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart');

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, status text, note text, big text);
CREATE TABLE app.parts ("Zone é" text, id int, status text, PRIMARY KEY ("Zone é", id));
INSERT INTO app.orders SELECT g, 'new', 'note ' || g, NULL FROM generate_series(100, 110) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
SELECT sluice.create_pipeline('q', 'live', ARRAY['app.orders', 'app.parts']);
SELECT sluice.expect_column_values_to_be_in_set('q.orders', 'status', ARRAY['new', 'paid', 'shipped'], severity => 'quarantine');
SELECT sluice.expect_column_values_to_be_in_set('q.parts', 'status', ARRAY['new', 'paid'], severity => 'quarantine');
});
my @pairs = (['app.orders', 'q.orders'], ['app.parts', 'q.parts']);

sub refresh
{
	return $mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('q')");
}

sub qrow
{
	my ($where) = @_;
	return $mart->safe_psql('postgres',
		"SELECT quarantine_id || ':' || status || ':' || coalesce(superseded_how, '-') || ':' || coalesce(superseded_by::text, '-') "
		  . "FROM sluice.quarantine WHERE $where ORDER BY quarantine_id");
}

sub qid
{
	my ($id, $status) = @_;
	return $mart->safe_psql('postgres',
		"SELECT max(quarantine_id) FROM sluice.quarantine WHERE row_data->>'id' = '$id'"
		  . ($status ? " AND status = '$status'" : ''));
}

# --- 1. the stale quarantine of the issue: live fixes the row, the entry is superseded ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (1, 'lost', 'first', NULL)");
is(refresh(), 'succeeded', 'refresh quarantines row 1');
my $q1 = qid(1);
is($mart->safe_psql('postgres', "SELECT status FROM sluice.quarantine WHERE quarantine_id = $q1"), 'held', 'row 1 is held');
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'paid' WHERE id = 1");
is(refresh(), 'succeeded', 'live fixed row 1');
is($mart->safe_psql('postgres', "SELECT status FROM q.orders WHERE id = 1"), 'paid', 'the fixed row is in the datamart');
is($mart->safe_psql('postgres', "SELECT status FROM sluice.quarantine WHERE quarantine_id = $q1"), 'superseded',
	'its quarantine entry is superseded, not held');
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.release_quarantined($q1)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55000: quarantined row $q1 is superseded by a later change of its key/, 'release of the stale row is refused');
like($err, qr/DETAIL:  Source transaction \d+ changed the row with key \{"id": "1"\} after it was quarantined; the datamart already holds/,
	'saying what superseded it');
like($err, qr/HINT:  Pass force => true to write this stale row anyway\./, 'and naming the force option');
is($mart->safe_psql('postgres', "SELECT status FROM q.orders WHERE id = 1"), 'paid', 'the good row is untouched');
same_tables($live, $mart, \@pairs, 'after the refused release');
is(qrow("quarantine_id = $q1"), "$q1:superseded:applied:-", 'superseded by the applied update');
is($mart->safe_psql('postgres', "SELECT row_key FROM sluice.quarantine WHERE quarantine_id = $q1"), '{"id": "1"}',
	'the entry has its key');

# --- 2. an update held back while the datamart keeps the old version, then fixed ---
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'bogus' WHERE id = 100");
refresh();
my $q2 = qid(100);
is(qrow("quarantine_id = $q2"), "$q2:held:-:-", 'the bad update of row 100 is held');
is($mart->safe_psql('postgres', "SELECT status FROM q.orders WHERE id = 100"), 'new', 'the datamart keeps the previous version');
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'shipped' WHERE id = 100");
refresh();
is(qrow("quarantine_id = $q2"), "$q2:superseded:applied:-", 'the next good update supersedes it');
same_tables($live, $mart, \@pairs, 'row 100');

# --- 3. held again: the new entry supersedes the old, release names the latest; a partial correction ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (3, 'x1', 'third', NULL)");
refresh();
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'x2' WHERE id = 3");
refresh();
my ($q3a, $q3b) = split /\n/, $mart->safe_psql('postgres',
	"SELECT quarantine_id FROM sluice.quarantine WHERE row_data->>'id' = '3' ORDER BY quarantine_id");
is(qrow("row_data->>'id' = '3'"), "$q3a:superseded:quarantined:$q3b\n$q3b:held:-:-", 'the second bad state supersedes the first');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.release_quarantined($q3a)");
like($err, qr/held again as quarantined row $q3b/, 'the refusal names the latest entry');
like($err, qr/HINT:  Release the latest entry, sluice.release_quarantined\($q3b\), or pass force => true/, 'and how to release it');
$mart->safe_psql('postgres', "SELECT sluice.release_quarantined($q3b, corrected => '{\"status\": \"paid\"}')");
is($mart->safe_psql('postgres', "SELECT id || ':' || status || ':' || note FROM q.orders WHERE id = 3"), '3:paid:third',
	'a partial correction merges with the stored row');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.release_quarantined($q3b)");
like($err, qr/no held quarantined row $q3b/, 'released once');
($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.release_quarantined(" . qid(100) . ", corrected => '{\"id\": 999}', force => true)");
like($err, qr/the correction changes key column "id" of quarantined row/, 'a correction may not change the key');
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'paid' WHERE id = 3");
refresh();
same_tables($live, $mart, \@pairs, 'row 3');

# --- 4. force: the operator may still write a superseded row ---
is($mart->safe_psql('postgres', "SELECT sluice.release_quarantined($q1, force => true)"), 't', 'forced release');
is($mart->safe_psql('postgres', "SELECT status FROM q.orders WHERE id = 1"), 'lost', 'wrote the stale row, as asked');
is(qrow("quarantine_id = $q1"), "$q1:released:applied:-", 'recorded as released');
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'shipped' WHERE id = 1");
refresh();

# --- 5. a delete of a held key closes its entry; it is no divergence ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (4, 'zz', 'fourth', NULL)");
refresh();
my $q4 = qid(4);
$live->safe_psql('postgres', "DELETE FROM app.orders WHERE id = 4");
refresh();
is(qrow("quarantine_id = $q4"), "$q4:superseded:deleted:-", 'the delete supersedes the held row');

# --- 6. an update of a held row that leaves a TOASTed column unchanged ---
$live->safe_psql('postgres', q{
INSERT INTO app.orders SELECT 5, 'bad', 'fifth', string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 1000) g;
});
refresh();
my $q5 = qid(5);
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'paid' WHERE id = 5");
is(refresh(), 'succeeded', 'the update of the held row applies');
is($mart->safe_psql('postgres', "SELECT length(big) FROM q.orders WHERE id = 5"), '32000',
	'the unchanged TOASTed value comes from the held row');
is(qrow("quarantine_id = $q5"), "$q5:superseded:applied:-", 'superseded by the applied update');
same_tables($live, $mart, \@pairs, 'row 5');

# --- 7. the key of a held row moves ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (6, 'bad', 'sixth', NULL)");
refresh();
my $q6 = qid(6);
$live->safe_psql('postgres', "UPDATE app.orders SET id = 60, status = 'paid' WHERE id = 6");
refresh();
is(qrow("quarantine_id = $q6"), "$q6:superseded:applied:-", 'the held row moved to a new key and was applied');
same_tables($live, $mart, \@pairs, 'row 6 became 60');

# --- 8. a row moves to a new key and its new state is held: the old key leaves the datamart ---
$live->safe_psql('postgres', "UPDATE app.orders SET id = 70, status = 'bad' WHERE id = 101");
refresh();
is($mart->safe_psql('postgres', "SELECT count(*) FROM q.orders WHERE id IN (70, 101)"), '0',
	'neither the old key (gone on live) nor the held new one');
is(qrow("row_data->>'id' = '70'"), qid(70) . ':held:-:-', 'row 70 held');
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'new' WHERE id = 70");
refresh();
same_tables($live, $mart, \@pairs, 'row 101 became 70');

# --- 9. a discarded row fixed on live arrives; its entry records why it is closed ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (9, 'bad', 'ninth', NULL)");
refresh();
my $q9 = qid(9);
$mart->safe_psql('postgres', "SELECT sluice.discard_quarantined($q9)");
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'paid' WHERE id = 9");
refresh();
is(qrow("quarantine_id = $q9"), "$q9:discarded:applied:-", 'the discarded entry is closed by the later change');
same_tables($live, $mart, \@pairs, 'row 9');

# --- 10. composite keys with odd names keep their identity across refreshes ---
$live->safe_psql('postgres', q{INSERT INTO app.parts VALUES ('eu-west', 1, 'broken'), ('eu-west', 2, 'new')});
refresh();
my $qp = $mart->safe_psql('postgres', "SELECT quarantine_id FROM sluice.quarantine WHERE target_table = 'parts'");
is($mart->safe_psql('postgres', "SELECT row_key FROM sluice.quarantine WHERE quarantine_id = $qp"),
	'{"id": "1", "Zone é": "eu-west"}', 'the key of a composite key row');
$live->safe_psql('postgres', q{UPDATE app.parts SET status = 'paid' WHERE id = 1});
refresh();
is(qrow("quarantine_id = $qp"), "$qp:superseded:applied:-", 'found again by its composite key in a later refresh');

# --- 11. TRUNCATE supersedes every open entry of the table ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (11, 'bad', 'eleventh', NULL)");
refresh();
my $q11 = qid(11);
$live->safe_psql('postgres', "TRUNCATE app.orders");
refresh();
is(qrow("quarantine_id = $q11"), "$q11:superseded:truncated:-", 'truncated');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.quarantine WHERE status = 'held'"), '0', 'nothing held any more');
is($mart->safe_psql('postgres', "SELECT rows_missing FROM sluice.status WHERE pipeline = 'q'"), '0',
	'none of this was divergence');
same_tables($live, $mart, \@pairs, 'at the end');

done_testing();
