# SluiceTest.pm -- helpers shared by pg_sluice's multi-server TAP tests.
#
# Every test runs real PostgreSQL 15 clusters (PostgreSQL::Test::Cluster):
# a "live" server with wal_level=logical and a "mart" server with pg_sluice.
package SluiceTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Exporter 'import';
use Time::HiRes ();

our @EXPORT = qw(new_live new_mart checksum same_tables wait_same_tables mart_source big_pipeline
  indexes_hold_rows heaps_verify);

# A live server: logical WAL, room for slots.
sub new_live
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => ($opts{wal_level} // 'logical'));
	$node->append_conf('postgresql.conf', "max_replication_slots = 10\nmax_wal_senders = 10\n");
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	return $node;
}

# A datamart server with the extension created in database "postgres".
sub new_mart
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name // 'mart');
	$node->init;
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_sluice');
	return $node;
}

# Declare $live as source $name on $mart (unix socket, trust auth).
sub mart_source
{
	my ($mart, $live, $name, $db) = @_;
	my $conn = $live->connstr($db // 'postgres');
	$mart->safe_psql('postgres', "SELECT sluice.create_source('$name', \$\$$conn\$\$)");
}

# A deterministic checksum of a table's content: row count and md5 of the
# rows' text, in a total order.
sub checksum
{
	my ($node, $table, $db) = @_;
	return $node->safe_psql($db // 'postgres',
		"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '-') FROM $table t");
}

# Assert live and mart tables are equal row for row.
sub same_tables
{
	my ($live, $mart, $pairs, $label) = @_;
	foreach my $p (@$pairs)
	{
		my ($l, $m) = @$p;
		is(checksum($mart, $m), checksum($live, $l), "$label: $m equals live $l");
	}
}

# Wait until every mart table equals its live table (continuous mode), then
# assert it.  Live must be quiet.
sub wait_same_tables
{
	my ($live, $mart, $pairs, $label) = @_;
	foreach my $p (@$pairs)
	{
		my ($l, $m) = @$p;
		my $want = checksum($live, $l);
		ok($mart->poll_query_until('postgres',
			"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '-') FROM $m t",
			$want), "$label: $m caught up with live $l");
		is(checksum($mart, $m), $want, "$label: $m equals live $l");
	}
}

# Assert that every index on the tables of $schema holds exactly its
# table's rows (amcheck's bt_index_parent_check with heapallindexed: the
# extension must exist in database "postgres"); the failing ones are named.
sub indexes_hold_rows
{
	my ($node, $schema, $label) = @_;
	is($node->safe_psql('postgres', qq{
SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_class t ON t.oid = i.indrelid
 WHERE t.relnamespace = '$schema'::regnamespace
   AND NOT (SELECT true FROM (SELECT bt_index_parent_check(i.indexrelid, true)) s)}),
		'', "$label: every index holds exactly its table's rows");
}

# Assert that amcheck's verify_heapam finds nothing in the tables of
# $schema; the failing ones are named.
sub heaps_verify
{
	my ($node, $schema, $label) = @_;
	is($node->safe_psql('postgres', qq{
SELECT string_agg(DISTINCT c.relname, ', ')
  FROM pg_class c, LATERAL verify_heapam(c.oid) v
 WHERE c.relnamespace = '$schema'::regnamespace AND c.relkind = 'r'}),
		'', "$label: every table's heap verifies");
}

# Two servers (conf: both postgresql.conf additions) and live's bench.big
# as bench/run.sh's scenario 7 builds it (id bigint primary key, a int, b
# text, c timestamptz, d numeric) of $n rows, copied into the datamart's
# sb.big by pipeline b; VACUUM ANALYZE and CHECKPOINT on both.  For the
# bench/*.pl scripts; returns (live, mart).
sub big_pipeline
{
	my ($conf, $n) = @_;
	my $live = new_live('live', conf => $conf);
	my $mart = new_mart('mart', conf => $conf);
	my $t0 = Time::HiRes::time();
	$live->safe_psql('postgres', qq{
CREATE SCHEMA bench;
CREATE TABLE bench.big (id bigint, a int, b text, c timestamptz, d numeric);
INSERT INTO bench.big SELECT g, (g % 100000)::int, md5(g::text),
    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', round(g * 1.37, 2)
  FROM generate_series(1, $n) g;
ALTER TABLE bench.big ADD PRIMARY KEY (id);
VACUUM ANALYZE bench.big;});
	Test::More::diag(sprintf("load on live: %.1f s, heap %s", Time::HiRes::time() - $t0,
		$live->safe_psql('postgres', "SELECT pg_size_pretty(pg_relation_size('bench.big'))")));
	mart_source($mart, $live, 'live');
	$t0 = Time::HiRes::time();
	Test::More::is($mart->safe_psql('postgres',
		"SELECT rows_inserted FROM sluice.create_pipeline('b', 'live', ARRAY['bench.big'], target_schema => 'sb')"),
		$n, 'initial copy');
	Test::More::diag(sprintf("initial copy: %.1f s", Time::HiRes::time() - $t0));
	$mart->safe_psql('postgres', "VACUUM ANALYZE sb.big; CHECKPOINT");
	$live->safe_psql('postgres', "CHECKPOINT");
	return ($live, $mart);
}

1;
