# What a continuous worker keeps across batches (issue 17): the plans of its
# catalog statements (spiplan.c) and its replication stream.  Nothing it
# keeps may hide a change made between two streamed batches, in one worker
# process (its pid never changes here):
#  - a drift policy changed between batches: the next batch evolves;
#  - an expectation added between batches: the next batch pauses on it;
#  - the contract version the evolve made: a later drift under freeze
#    pauses (the new contract, not the first one, is compared);
#  - the catalog's own tables changed under the kept plans (a column added
#    to sluice._run): batches go on;
#  - the worker streams over the walsender (the default transport).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => qq{
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 20
});

$live->safe_psql('postgres', q{
CREATE SCHEMA "Shöp";
CREATE TABLE "Shöp"."Or ders" (id bigint PRIMARY KEY, v text);
INSERT INTO "Shöp"."Or ders" SELECT g, 'v' || g FROM generate_series(1, 10) g;
});
mart_source($mart, $live, 'live');
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE "Öp o'Rator" LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
SELECT sluice.grant_operator('"Öp o''Rator"');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO "Öp o'Rator";
SET ROLE etl;
SELECT sluice.create_pipeline('cache_p', 'live', ARRAY['"Shöp"."Or ders"'], target_schema => 'Märt');
});
my $tgt = q{"Märt"."Or ders"};
my @pairs = ([q{"Shöp"."Or ders"}, $tgt]);
my $slot = $mart->safe_psql('postgres', q{SELECT slot_name FROM sluice._pipeline WHERE name = 'cache_p'});

sub state
{
	return $mart->safe_psql('postgres', q{SELECT state || coalesce(': ' || paused_reason, '') FROM sluice.status WHERE pipeline = 'cache_p'});
}

sub worker_pid
{
	return $mart->safe_psql('postgres', q{SELECT worker_pid FROM sluice.status WHERE pipeline = 'cache_p'});
}

is($mart->safe_psql('postgres', q{SET ROLE "Öp o'Rator"; SELECT sluice.start('cache_p')}), 't', 'start, as an operator');
ok($mart->poll_query_until('postgres', q{SELECT state = 'running' FROM sluice.status WHERE pipeline = 'cache_p'}),
	'the worker runs');
$live->safe_psql('postgres', q{INSERT INTO "Shöp"."Or ders" VALUES (11, 'eleven')});
wait_same_tables($live, $mart, \@pairs, 'first batches streamed');
ok($live->poll_query_until('postgres',
	"SELECT active_pid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_stat_replication r WHERE r.pid = s.active_pid) "
	. "FROM pg_replication_slots s WHERE slot_name = '$slot'"),
	'the worker reads its slot through a walsender (the default transport)');
my $pid = worker_pid();
isnt($pid, '', 'worker pid known');

# --- a drift policy changed between two batches --------------------------------
$mart->safe_psql('postgres', qq{SET ROLE "Öp o'Rator"; SELECT sluice.set_drift_policy('$tgt', 'evolve')});
$live->safe_psql('postgres', q{
ALTER TABLE "Shöp"."Or ders" ADD COLUMN "Nëw" int;
INSERT INTO "Shöp"."Or ders" VALUES (12, 'twelve', 12);
});
ok($mart->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM $tgt WHERE id = 12 AND "Nëw" = 12}),
	'the batch after the policy change evolved the table (the new policy was read)');
wait_same_tables($live, $mart, \@pairs, 'evolved copy equals live');
is(state(), 'running', 'still running');

# --- an expectation added between two batches -----------------------------------
my $nn = $mart->safe_psql('postgres', qq{SET ROLE "Öp o'Rator"; SELECT sluice.expect_column_values_to_not_be_null('$tgt', 'Nëw')});
$live->safe_psql('postgres', q{INSERT INTO "Shöp"."Or ders" VALUES (13, 'thirteen', NULL)});
ok($mart->poll_query_until('postgres', q{SELECT state = 'paused' FROM sluice.status WHERE pipeline = 'cache_p'}),
	'the batch after the new expectation paused on it');
like(state(), qr/paused: .*Nëw/s, 'paused by the expectation on the new column');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM $tgt WHERE id = 13}), '0', 'the failing row was not applied');
$mart->safe_psql('postgres', qq{SET ROLE "Öp o'Rator"; SELECT sluice.drop_expectation('$tgt', '$nn')});
$mart->safe_psql('postgres', q{SET ROLE "Öp o'Rator"; SELECT sluice.resume('cache_p')});
wait_same_tables($live, $mart, \@pairs, 'resumed: the row applied once the expectation was dropped');

# --- the catalog's tables change under the kept plans ---------------------------------
$mart->safe_psql('postgres', q{ALTER TABLE sluice._run ADD COLUMN "zz test" int});
$live->safe_psql('postgres', q{INSERT INTO "Shöp"."Or ders" VALUES (14, 'fourteen', 14)});
wait_same_tables($live, $mart, \@pairs, 'batches go on after the catalog table changed');
$mart->safe_psql('postgres', q{ALTER TABLE sluice._run DROP COLUMN "zz test"});
$live->safe_psql('postgres', q{INSERT INTO "Shöp"."Or ders" VALUES (15, 'fifteen', 15)});
wait_same_tables($live, $mart, \@pairs, 'and after it changed back');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM sluice.runs WHERE pipeline = 'cache_p' AND status = 'failed'}), '0',
	'no batch failed');

# --- freeze again: a drift against the evolved contract pauses ----------------------------
$mart->safe_psql('postgres', qq{SET ROLE "Öp o'Rator"; SELECT sluice.set_drift_policy('$tgt', 'freeze')});
$live->safe_psql('postgres', q{
ALTER TABLE "Shöp"."Or ders" ADD COLUMN "Öther" text;
INSERT INTO "Shöp"."Or ders" VALUES (16, 'sixteen', 16, 'x');
});
ok($mart->poll_query_until('postgres', q{SELECT state = 'paused' FROM sluice.status WHERE pipeline = 'cache_p'}),
	'under freeze the next drift pauses');
like(state(), qr/Öther/, 'on the column added after the evolved contract');
is($mart->safe_psql('postgres', qq{SELECT count(*) FROM $tgt WHERE id = 16}), '0', 'nothing of the drifted batch applied');
is(worker_pid(), $pid, 'one worker process saw every change');

$mart->safe_psql('postgres', q{SELECT sluice.stop('cache_p')});
done_testing();
