# Expectations between two real servers: declared with Great Expectations
# names, checked inside the applying transaction.  error rolls the batch
# back and pauses (resume applies the same changes once fixed), warn applies
# and records, quarantine holds rows back (release, discard).
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
CREATE TABLE app.customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE app.orders (id int PRIMARY KEY, customer_id int, email text, status text,
                         amount numeric(10,2), qty int, placed timestamptz DEFAULT now());
INSERT INTO app.customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g;
INSERT INTO app.orders (id, customer_id, email, status, amount, qty)
SELECT g, 1 + g % 50, 'buyer' || g || '@example.com', (ARRAY['new', 'paid', 'shipped'])[1 + g % 3], g * 2.5, 1 + g % 4
  FROM generate_series(1, 200) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', "SELECT sluice.create_pipeline('q', 'live', ARRAY['app.customers', 'app.orders'])");
my @pairs = (['app.customers', 'q.customers'], ['app.orders', 'q.orders']);

# --- declaring, with the Great Expectations names ---
$mart->safe_psql('postgres', q{
SELECT sluice.expect_column_values_to_not_be_null('q.orders', 'email');
SELECT sluice.expect_column_values_to_be_in_set('q.orders', 'status', ARRAY['new', 'paid', 'shipped'], severity => 'quarantine');
SELECT sluice.expect_column_values_to_be_between('q.orders', 'amount', '0', '10000', severity => 'warn');
SELECT sluice.expect_column_values_to_match_regex('q.orders', 'email', '^[^@ ]+@[^@ ]+$', severity => 'quarantine');
SELECT sluice.expect_column_value_lengths_to_be_between('q.orders', 'status', 1, 10, severity => 'warn');
SELECT sluice.expect_column_values_to_be_unique('q.orders', ARRAY['email']);
SELECT sluice.expect_table_row_count_to_be_between('q.orders', 1, 1000000);
SELECT sluice.expect_column_values_to_be_in_table('q.orders', 'customer_id', 'q.customers', 'id');
SELECT sluice.expect_column_max_to_be_fresh('q.orders', 'placed', '1 day', severity => 'warn');
SELECT sluice.expect_row_to_satisfy('q.orders', 'qty * amount < 100000', severity => 'warn');
});
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.expectations WHERE pipeline = 'q'"), '10', 'ten expectations declared');

# numeric bounds resolve (0.1 took text only) and bind as the column's type
is($mart->safe_psql('postgres', qq{BEGIN;
SELECT sluice.expect_column_values_to_be_between('q.orders', 'qty', 0, 1000, severity => 'warn', strict_max => true);
SELECT args->>'min_value', args->>'max_value' FROM sluice.expectations WHERE pipeline = 'q' AND kind = 'expect_column_values_to_be_between' AND column_names = '{qty}';
ROLLBACK}), "expect_column_values_to_be_between_qty_orders\n0|1000", 'expect_column_values_to_be_between takes numeric bounds');

# --- bad input: a clear error, nothing changed ---
my @bad = (
	["SELECT sluice.add_expectation('q.orders', 'expect_magic')", qr/unknown expectation "expect_magic"/],
	["SELECT sluice.expect_column_values_to_not_be_null('q.orders', 'nope')", qr/column "nope" is not in the contract of q.orders/],
	["SELECT sluice.expect_column_values_to_be_between('q.orders', 'amount', '10', '1')", qr/min_value 10 is greater than max_value 1/],
	# bounds of any type, compared as the column's type (before 0.2: function does not exist)
	["SELECT sluice.expect_column_values_to_be_between('q.orders', 'amount', 10, 2.5)", qr/min_value 10 is greater than max_value 2.5/],
	["SELECT sluice.expect_column_values_to_match_regex('q.orders', 'email', '([a-z')", qr/invalid regular expression/],
	["SELECT sluice.expect_row_to_satisfy('q.orders', 'qty + 1')", qr/argument of expectation predicate must be type boolean/],
	["SELECT sluice.expect_row_to_satisfy('q.orders', 'random() > 0.5')", qr/expectation predicate calls a volatile function/],
	["SELECT sluice.expect_row_to_satisfy('q.orders', 'qty > (SELECT 1)')", qr/cannot use subquery in check constraint/],
	["SELECT sluice.expect_row_to_satisfy('q.orders', 'qty > ')", qr/syntax error/],
	["SELECT sluice.expect_row_to_satisfy('q.orders', 'no_such_column > 1')", qr/column "no_such_column" does not exist/],
	["SELECT sluice.expect_column_values_to_be_unique('q.orders', ARRAY['email'], severity => 'quarantine')", qr/cannot quarantine rows/],
	["SELECT sluice.expect_column_values_to_not_be_null('q.orders', 'email', severity => 'sometimes')", qr/unknown severity "sometimes"/],
	["SELECT sluice.expect_column_values_to_not_be_null('pg_class', 'relname')", qr/table pg_class is not fed by a pg_sluice pipeline/],
	["SELECT sluice.expect_column_values_to_not_be_null('q.orders', 'email')", qr/expectation "expect_column_values_to_not_be_null_email_orders" already exists/],
	["SELECT sluice.expect_column_values_to_be_in_table('q.orders', 'customer_id', 'q.customers', 'nope')", qr/column "nope" does not exist in q.customers/],
);
foreach my $b (@bad)
{
	my ($ret, $out, $err) = $mart->psql('postgres', $b->[0]);
	like($err, $b->[1], "refused: $b->[0]");
}
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.expectations"), '10', 'nothing changed by bad input');

# --- good data: every expectation evaluated and recorded ---
$live->safe_psql('postgres', q{
INSERT INTO app.orders (id, customer_id, email, status, amount, qty)
SELECT g, 1 + g % 50, 'buyer' || g || '@example.com', 'new', 10, 1 FROM generate_series(201, 300) g;
});
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_inserted FROM sluice.refresh('q')"), 'succeeded:100', 'good batch applied');
is($mart->safe_psql('postgres', q{
SELECT count(*) || ':' || bool_and(success) || ':' || min(evaluated) FROM sluice.quality
 WHERE run_id = (SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'q')}),
	'10:true:1', 'ten results recorded, all passed');
is($mart->safe_psql('postgres', q{
SELECT evaluated FROM sluice.quality WHERE expectation = 'expect_column_values_to_not_be_null_email_orders'
 ORDER BY run_id DESC LIMIT 1}), '100', 'row expectations count the rows written');

# --- warn: applied and recorded ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (301, 1, 'big\@example.com', 'paid', 20000, 9)");
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_inserted FROM sluice.refresh('q')"), 'succeeded:1', 'warn applies');
is($mart->safe_psql('postgres', q{
SELECT string_agg(expectation || '=' || failed || ':' || coalesce(sample_keys::text, '-'), ' ' ORDER BY expectation) FROM sluice.quality
 WHERE run_id = (SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'q') AND NOT success}),
	'expect_column_values_to_be_between_amount_orders=1:[{"id": "301"}] expect_row_to_satisfy_orders=1:[{"id": "301"}]',
	'warn failures recorded with sample keys');

# --- quarantine: held back, listed, released after correction, discarded ---
$live->safe_psql('postgres', q{
INSERT INTO app.orders VALUES (302, 2, 'ok302@example.com', 'lost', 5, 1);
INSERT INTO app.orders VALUES (303, 3, 'not an email', 'new', 5, 1);
INSERT INTO app.orders VALUES (304, 4, 'ok304@example.com', 'new', 5, 1);
});
# (in one transaction with function call counting: the regex expectation
# goes through sluice._regex_match, the fast matcher of src/regex.c, once
# per row and once more for the row that fails, when each check is
# evaluated alone to name the failing one)
is($mart->safe_psql('postgres', q{
SET track_functions = 'all';
BEGIN;
SELECT status || ':' || rows_inserted FROM sluice.refresh('q');
SELECT pg_stat_get_xact_function_calls('sluice._regex_match(text, text)'::regprocedure);
COMMIT;}), "succeeded:1\n4", 'quarantine applies the good rows; the regex was matched by sluice._regex_match');
is($mart->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM q.orders WHERE id > 301"), '304', 'bad rows held back');
is($mart->safe_psql('postgres', q{
SELECT string_agg(expectation || ':' || (row_data->>'id') || ':' || change || ':' || status, ' ' ORDER BY quarantine_id) FROM sluice.quarantine}),
	'expect_column_values_to_be_in_set_status_orders:302:insert:held expect_column_values_to_match_regex_email_orders:303:insert:held',
	'quarantine lists them with the expectation');
my $q302 = $mart->safe_psql('postgres', "SELECT quarantine_id FROM sluice.quarantine WHERE row_data->>'id' = '302'");
my $q303 = $mart->safe_psql('postgres', "SELECT quarantine_id FROM sluice.quarantine WHERE row_data->>'id' = '303'");
$mart->safe_psql('postgres', "SELECT sluice.release_quarantined($q302, (SELECT row_data || '{\"status\": \"paid\"}' FROM sluice.quarantine WHERE quarantine_id = $q302))");
is($mart->safe_psql('postgres', "SELECT status FROM q.orders WHERE id = 302"), 'paid', 'released with the correction');
$mart->safe_psql('postgres', "SELECT sluice.discard_quarantined($q303)");
is($mart->safe_psql('postgres', "SELECT string_agg(status, ',' ORDER BY quarantine_id) FROM sluice.quarantine"), 'released,discarded', 'statuses');
my ($ret, $out, $err) = $mart->psql('postgres', "SELECT sluice.discard_quarantined($q303)");
like($err, qr/no held quarantined row/, 'a row is resolved once');
# a later update on live of a quarantined row stands for it, checked again
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (305, 5, 'ok305\@example.com', 'weird', 5, 1)");
$mart->safe_psql('postgres', "SELECT sluice.refresh('q')");
$live->safe_psql('postgres', "UPDATE app.orders SET status = 'paid' WHERE id = 305");
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_updated FROM sluice.refresh('q')"), 'succeeded:1', 'update of a quarantined row');
is($mart->safe_psql('postgres', "SELECT status FROM q.orders WHERE id = 305"), 'paid', 'now in the datamart');
$live->safe_psql('postgres', "DELETE FROM app.orders WHERE id = 303");
is($mart->safe_psql('postgres', "SELECT status || ':' || transactions FROM sluice.refresh('q')"), 'succeeded:1',
	'delete of a row that never reached the datamart');

# --- error: the batch rolls back, the pipeline pauses, resume applies it once fixed ---
$live->safe_psql('postgres', q{
INSERT INTO app.customers VALUES (51, 'new customer');
INSERT INTO app.orders VALUES (306, 51, 'ok306@example.com', 'new', 5, 1);
INSERT INTO app.orders VALUES (307, 1, NULL, 'new', 5, 1);
});
my $before = checksum($mart, 'q.orders');
($ret, $out, $err) = $mart->psql('postgres', "SELECT status || ':' || rows_inserted FROM sluice.refresh('q')");
is($out, 'paused:0', 'an error expectation pauses');
like($err, qr/WARNING:  pipeline "q" paused: expectation "expect_column_values_to_not_be_null_email_orders" failed on "q.orders"/, 'saying which');
like($err, qr/failed for a row inserted by source transaction \d+ \(sluice.quality has its key\)/, 'and where to find the row');
unlike($err, qr/307/, '(the key stays out of the pause reason, which every role can read)');
like($mart->safe_psql('postgres', q{SELECT sample_keys::text FROM sluice.quality WHERE NOT success AND expectation = 'expect_column_values_to_not_be_null_email_orders' ORDER BY run_id DESC LIMIT 1}),
	qr/"307"/, 'sluice.quality has the key');
is(checksum($mart, 'q.orders'), $before, 'nothing of the batch applied');
is($mart->safe_psql('postgres', "SELECT count(*) FROM q.customers WHERE id = 51"), '0', 'not even the other table');
is($mart->safe_psql('postgres', q{
SELECT failed || ':' || sample_keys::text || ':' || run_status FROM sluice.quality
 WHERE expectation = 'expect_column_values_to_not_be_null_email_orders' ORDER BY run_id DESC LIMIT 1}),
	'1:[{"id": "307"}]:paused', 'the failure is recorded');
is($mart->safe_psql('postgres', "SELECT state FROM sluice.status WHERE pipeline = 'q'"), 'paused', 'status paused');
$live->safe_psql('postgres', "UPDATE app.orders SET email = 'fixed307\@example.com' WHERE id = 307");
$mart->safe_psql('postgres', "SELECT sluice.resume('q')");
is($mart->safe_psql('postgres', "SELECT status || ':' || transactions FROM sluice.refresh('q')"), 'paused:0',
	'still paused: the bad row is in the backlog before the fix');
# the fix must cover the row as it was written: drop the expectation, resume, re-add it
$mart->safe_psql('postgres', "SELECT sluice.drop_expectation('q.orders', 'expect_column_values_to_not_be_null_email_orders')");
$mart->safe_psql('postgres', "SELECT sluice.resume('q')");
is($mart->safe_psql('postgres', "SELECT status || ':' || transactions FROM sluice.refresh('q')"), 'succeeded:4', 'applied after the fix');
$mart->safe_psql('postgres', "SELECT sluice.expect_column_values_to_not_be_null('q.orders', 'email')");
same_tables($live, $mart, [['app.customers', 'q.customers']], 'after resume');
is($mart->safe_psql('postgres', "SELECT count(*) FROM q.orders WHERE id IN (306, 307)"), '2', 'nothing lost');

# --- set expectations: foreign key and uniqueness on what the batch changed ---
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (308, 999, 'ok308\@example.com', 'new', 5, 1)");
($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('q')");
is($out, 'paused', 'foreign key expectation pauses');
like($err, qr/Expectation "expect_column_values_to_be_in_table_customer_id_orders" failed for 1 value/, 'which one');
$live->safe_psql('postgres', "INSERT INTO app.customers VALUES (999, 'late customer')");
$mart->safe_psql('postgres', "SELECT sluice.resume('q')");
is($mart->safe_psql('postgres', "SELECT status || ':' || transactions FROM sluice.refresh('q')"), 'succeeded:2',
	'the parent arriving in the same batch satisfies it');
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (309, 1, 'buyer1\@example.com', 'new', 5, 1)");
($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('q')");
is($out, 'paused', 'uniqueness expectation pauses');
is($mart->safe_psql('postgres', q{
SELECT sample_keys::text FROM sluice.quality WHERE expectation = 'expect_column_values_to_be_unique_email_orders'
 ORDER BY run_id DESC LIMIT 1}), '[{"email": "buyer1@example.com"}]', 'with the duplicated value');
# skip one bad source transaction at resume, recorded
my $xid = $live->safe_psql('postgres', "BEGIN; INSERT INTO app.orders VALUES (310, 1, NULL, 'new', 5, 1); SELECT pg_current_xact_id(); COMMIT;");
$live->safe_psql('postgres', "INSERT INTO app.orders VALUES (311, 1, 'ok311\@example.com', 'new', 5, 1)");
$mart->safe_psql('postgres', "SELECT sluice.drop_expectation('q.orders', 'expect_column_values_to_be_unique_email_orders'); SELECT sluice.resume('q')");
($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('q')");
is($out, 'paused', 'the NULL email pauses');
like($err, qr/inserted by source transaction $xid/, 'naming the source transaction');
$mart->safe_psql('postgres', "SELECT sluice.resume('q', skip_xid => '$xid')");
is($mart->safe_psql('postgres', "SELECT status || ':' || transactions FROM sluice.refresh('q')"), 'succeeded:2', 'applied, skipping it');
is($mart->safe_psql('postgres', "SELECT string_agg(id::text, ',' ORDER BY id) FROM q.orders WHERE id >= 309"), '309,311', 'only the skipped transaction is missing');
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.runs WHERE pipeline = 'q' AND skipped_xid = '$xid'"), '1', 'the skip is recorded');
is($mart->safe_psql('postgres', "SELECT skip_xid IS NULL FROM sluice._pipeline WHERE name = 'q'"), 't', 'and forgotten');

# --- more Great Expectations names: to_be_null, not_be_in_set, not_match_regex,
# match_like_pattern, value_lengths_to_equal ---
foreach my $b (
	["SELECT sluice.expect_column_values_to_match_like_pattern('q.orders', 'email', 'abc\\')", qr/invalid LIKE pattern abc\\: it ends with an escape character/],
	["SELECT sluice.expect_column_value_lengths_to_equal('q.orders', 'status', -1)", qr/needs args value, a length of 0 or more/],
	["SELECT sluice.expect_column_values_to_not_match_regex('q.orders', 'email', '(a')", qr/invalid regular expression/],
	["SELECT sluice.expect_column_values_to_not_be_in_set('q.orders', 'qty', ARRAY['x'])", qr/invalid input syntax for type integer/])
{
	($ret, $out, $err) = $mart->psql('postgres', $b->[0]);
	like($err, $b->[1], "refused: $b->[0]");
}
$mart->safe_psql('postgres', q{
SELECT sluice.expect_column_values_to_be_null('q.orders', 'placed', severity => 'warn');
SELECT sluice.expect_column_values_to_not_be_in_set('q.orders', 'status', ARRAY['shipped', 'void'], severity => 'warn');
SELECT sluice.expect_column_values_to_not_match_regex('q.orders', 'email', '@spam\.example$', severity => 'warn');
SELECT sluice.expect_column_values_to_match_like_pattern('q.orders', 'email', '%@%.com', severity => 'warn');
SELECT sluice.expect_column_value_lengths_to_equal('q.orders', 'status', 3, severity => 'warn');
});
$live->safe_psql('postgres', q{
INSERT INTO app.orders VALUES (312, 1, 'a312@spam.example', 'new', 5, 1);
INSERT INTO app.orders VALUES (313, 1, 'b313@example.com', 'shipped', 5, 1);
INSERT INTO app.orders VALUES (314, 1, 'c314@example.com', 'paid', 5, 1);
});
is($mart->safe_psql('postgres', "SELECT status || ':' || rows_inserted FROM sluice.refresh('q')"), 'succeeded:3', 'warn applies');
is($mart->safe_psql('postgres', q{
SELECT string_agg(expectation || '=' || failed || ':' || coalesce(sample_keys::text, '-'), ' ' ORDER BY expectation) FROM sluice.quality
 WHERE run_id = (SELECT max(run_id) FROM sluice.runs WHERE pipeline = 'q')
   AND expectation IN ('expect_column_values_to_be_null_placed_orders', 'expect_column_values_to_not_be_in_set_status_orders',
                       'expect_column_values_to_not_match_regex_email_orders', 'expect_column_values_to_match_like_pattern_email_orders',
                       'expect_column_value_lengths_to_equal_status_orders')}),
	'expect_column_value_lengths_to_equal_status_orders=2:[{"id": "313"}, {"id": "314"}] '
	. 'expect_column_values_to_be_null_placed_orders=3:[{"id": "312"}, {"id": "313"}, {"id": "314"}] '
	. 'expect_column_values_to_match_like_pattern_email_orders=1:[{"id": "312"}] '
	. 'expect_column_values_to_not_be_in_set_status_orders=1:[{"id": "313"}] '
	. 'expect_column_values_to_not_match_regex_email_orders=1:[{"id": "312"}]',
	'each fails on the rows it should');

$mart->safe_psql('postgres', "SELECT sluice.drop_pipeline('q', drop_tables => true)");
is($mart->safe_psql('postgres', "SELECT count(*) FROM sluice._expectation"), '0', 'expectations go with the pipeline');

done_testing();
