# Reads scale out on PostgreSQL's own replicas (issue 19): a streaming
# physical standby of the datamart (pg_basebackup) serves every read
# function to a reader role -- current tables, <t>_at, <t>_at_time, tag
# views, sluice.diff, versions, quality, status and the other public views
# -- with nothing that needs to write; each answers there what it answers
# on the primary at the same replayed position; while refreshes run on the
# primary, a hot-standby read sees a version whole or not at all (the
# current table always equals <t>_at(the latest version it lists)).  Names
# with quotes, spaces, capitals and non-ASCII.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');

# the datamart primary: streams to its standby
my $mart = PostgreSQL::Test::Cluster->new('mart');
$mart->init(allows_streaming => 1);
$mart->start;
$mart->safe_psql('postgres', 'CREATE EXTENSION pg_sluice');

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.acct (id int PRIMARY KEY, owner text, balance numeric(12,2), note text);
INSERT INTO app.acct SELECT g, 'owner ' || g, g * 10, 'n' || g FROM generate_series(1, 2000) g;
CREATE TABLE app."Wéird ""Tab"" 1" ("Key" int PRIMARY KEY, "Välue's" text);
INSERT INTO app."Wéird ""Tab"" 1" SELECT g, 'v''' || g FROM generate_series(1, 300) g;
CREATE PROCEDURE app.write_load(n int) LANGUAGE plpgsql AS $$
DECLARE i int;
BEGIN
  FOR i IN 1 .. n LOOP
    UPDATE app.acct SET balance = balance + 1, note = 'w' || i WHERE id = 1 + (i * 37) % 2000;
    DELETE FROM app.acct WHERE id = 2001 + (i % 500);
    INSERT INTO app.acct VALUES (2001 + ((i + 250) % 500), 'late ' || i, i, NULL) ON CONFLICT DO NOTHING;
    UPDATE app."Wéird ""Tab"" 1" SET "Välue's" = 'x' || i WHERE "Key" = 1 + i % 300;
    COMMIT;
    PERFORM pg_sleep(0.002);
  END LOOP;
END $$;
});
mart_source($mart, $live, 'live');

my $ts = '"Rë ""ad"" S"';
$mart->safe_psql('postgres', qq{
CREATE ROLE etl NOLOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
SELECT sluice.grant_operator('etl');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
SET ROLE etl;
SELECT sluice.create_pipeline('r', 'live', ARRAY['app.acct', 'app."Wéird ""Tab"" 1"'], target_schema => 'Rë "ad" S');
SELECT sluice.keep_history('r');
SELECT sluice.expect_column_values_to_not_be_null('$ts.acct', 'note', severity => 'warn');
});
sub refresh { $mart->safe_psql('postgres', q{SET ROLE etl; SELECT sluice.refresh('r')}); }
$live->safe_psql('postgres', q{CALL app.write_load(50)});
refresh();
my $v1 = $mart->safe_psql('postgres', q{SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'});
$mart->safe_psql('postgres', q{SET ROLE etl; SELECT sluice.tag('r', 'q1_end')});
my $tag = $mart->safe_psql('postgres', q{SELECT quote_ident(schema_name) FROM sluice.tags WHERE tag = 'q1_end'});
$live->safe_psql('postgres', q{CALL app.write_load(50)});
refresh();
my $v2 = $mart->safe_psql('postgres', q{SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'});
ok($v2 > $v1, "two versions ($v1, $v2)");
$mart->safe_psql('postgres', qq{
GRANT USAGE ON SCHEMA $ts, "Rë ""ad"" S_history", $tag TO bi;
GRANT SELECT ON ALL TABLES IN SCHEMA $ts, "Rë ""ad"" S_history", $tag TO bi;
});

# the standby: a base backup of the primary, streaming
$mart->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($mart, 'base', has_streaming => 1);
$standby->start;
$mart->wait_for_catchup($standby, 'replay');
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

my $cols = 'id, owner, balance, note';
my $odd = qq{$ts."Wéird ""Tab"" 1"};
my @reads = (
	"SELECT $cols FROM $ts.acct ORDER BY id",
	"SELECT * FROM $odd ORDER BY 1",
	"SELECT $cols FROM $ts.acct_at($v1) ORDER BY id",
	"SELECT * FROM $ts.\"Wéird \"\"Tab\"\" 1_at\"($v1) ORDER BY 1",
	"SELECT $cols FROM $ts.acct_at_time((SELECT committed_at FROM sluice.versions WHERE version = $v1)) ORDER BY id",
	"SELECT $cols FROM $tag.acct ORDER BY id",
	"SELECT * FROM $tag.\"Wéird \"\"Tab\"\" 1\" ORDER BY 1",
	"SELECT change, key::text, before::text, after::text FROM sluice.diff('$ts.acct', $v1, $v2) ORDER BY key::text",
	"SELECT * FROM sluice.versions WHERE pipeline = 'r' ORDER BY version",
	"SELECT * FROM sluice.quality ORDER BY 1, 2, 3",
	"SELECT pipeline, mode, state, last_run_id, last_success_at, applied_lsn FROM sluice.status ORDER BY 1",
	"SELECT * FROM sluice.pipelines ORDER BY 1",
	"SELECT * FROM sluice.pipeline_tables ORDER BY 1, 2, 3",
	"SELECT * FROM sluice.runs ORDER BY 1",
	"SELECT * FROM sluice.contracts ORDER BY 1, 2, 3",
	"SELECT * FROM sluice.expectations ORDER BY 1, 2, 3",
	"SELECT * FROM sluice.drift_events",
	"SELECT * FROM sluice.tags ORDER BY 1, 2",
	"SELECT * FROM sluice.copy_progress",
	"SELECT * FROM sluice.verifications");

# as the reader, on a server: (rc, stdout, stderr)
sub read_as_bi
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'bi' ]);
	return ($rc, $out, $err);
}

sub compare_all
{
	my ($label) = @_;
	foreach my $q (@reads)
	{
		my ($prc, $pout, $perr) = read_as_bi($mart, $q);
		my ($src, $sout, $serr) = read_as_bi($standby, $q);
		is($prc, 0, "$label: primary answers: $q") or diag($perr);
		is($src, 0, "$label: standby answers: $q") or diag($serr);
		is($sout, $pout, "$label: standby equals primary: $q");
	}
}
compare_all('quiet');
my ($rc, $out, $err) = read_as_bi($standby, "SELECT count(*) FROM $ts.acct");
cmp_ok($out, '>', 1000, 'the reader reads the current table on the standby');
($rc, $out, $err) = read_as_bi($standby, "SELECT $cols FROM $ts.acct_at(0)");
like($err, qr/ERROR/, 'a bad version is refused on the standby too');

# --- while refreshes run on the primary: a version whole or not at all ---
my $writer = $live->background_psql('postgres', on_error_stop => 1);
$writer->query_until(qr/started/, "\\echo started\nCALL app.write_load(600);\n\\echo done\n");
my $whole = 0;
my $checks = 0;
my $versions_seen = 0;
my %seen;
for my $i (1 .. 25)
{
	refresh();
	my ($rc2, $o, $e) = read_as_bi($standby, qq{BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT v, (SELECT md5(string_agg(t::text, '|' ORDER BY t::text COLLATE "C")) FROM (SELECT $cols FROM $ts.acct) t)
          IS NOT DISTINCT FROM
          (SELECT md5(string_agg(t::text, '|' ORDER BY t::text COLLATE "C")) FROM (SELECT $cols FROM $ts.acct_at(v)) t)
  FROM (SELECT max(version) AS v FROM sluice.versions WHERE pipeline = 'r') x;
COMMIT;});
	$checks++;
	my ($v, $same) = split /\|/, $o // '';
	if ($rc2 == 0 && defined $same && $same eq 't') { $whole++; }
	else { diag("standby read $i: rc=$rc2 out=$o err=$e"); }
	$seen{$v} = 1 if defined $v;
}
$writer->query_until(qr/done/, "");
$writer->quit;
is($whole, $checks, "every standby read during refreshes saw its latest version whole ($checks reads)");
cmp_ok(scalar(keys %seen), '>', 1, 'the standby followed new versions: ' . join(',', sort keys %seen));
refresh();
$mart->wait_for_catchup($standby, 'replay');
my $v3 = $mart->safe_psql('postgres', q{SELECT max(version) FROM sluice.versions WHERE pipeline = 'r'});
push @reads, "SELECT $cols FROM $ts.acct_at($v3) ORDER BY id",
	"SELECT change, key::text FROM sluice.diff('$ts.acct', $v2, $v3) ORDER BY key::text";
compare_all('after the load');
is(checksum($standby, "(SELECT $cols FROM $ts.acct)"), checksum($live, 'app.acct'), 'the standby equals live');

done_testing();
