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

our @EXPORT = qw(new_live new_mart checksum same_tables wait_same_tables mart_source);

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

1;
