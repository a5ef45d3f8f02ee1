# Models between two real servers (issue 20).  A property test: random
# inserts, updates that move rows between groups, deletes that empty groups,
# NULL group values and a TRUNCATE on live over many refreshes; after each,
# every model equals its query run from scratch, and incremental models were
# maintained incrementally (or in full, saying why).  Then: a failing
# expectation on a model rolls the whole batch back, pipeline tables
# included; a model over two pipelines is maintained when either refreshes;
# a DAG of models and a refused cycle; alter_model versions the contract;
# hostile roles cannot make a model run their SQL as the owner.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SluiceTest;

my $live = new_live('live');
my $mart = new_mart('mart', conf => "shared_preload_libraries = 'pg_sluice'\npg_sluice.naptime = 50ms\n");

$live->safe_psql('postgres', q{
CREATE SCHEMA app;
CREATE TABLE app.sales (id int PRIMARY KEY, "Campus" text, grp int, amount numeric(12,2), at timestamp NOT NULL);
INSERT INTO app.sales SELECT g, CASE WHEN g % 11 = 0 THEN NULL ELSE 'campus ' || (g % 5) END, g % 7,
                             (g * 37 % 1000) / 10.0, timestamp '2025-01-01' + (g % 300) * interval '1 day'
  FROM generate_series(1, 2000) g;
CREATE TABLE app.issues (id int PRIMARY KEY, "Campus" text, opened date NOT NULL);
INSERT INTO app.issues SELECT g, 'campus ' || (g % 4), date '2025-01-01' + g FROM generate_series(1, 100) g;
});
mart_source($mart, $live, 'live');

# --- roles: etl owns the pipelines, alice operates them, mallory operates
# --- others, bi reads --------------------------------------------------------
$mart->safe_psql('postgres', q{
CREATE ROLE etl NOLOGIN;
CREATE ROLE alice LOGIN;
CREATE ROLE mallory LOGIN;
CREATE ROLE bi LOGIN;
GRANT CREATE ON DATABASE postgres TO etl;
GRANT CREATE ON SCHEMA public TO mallory, etl;
SELECT sluice.grant_operator('etl');
SELECT sluice.grant_operator('mallory');
GRANT EXECUTE ON FUNCTION sluice.create_pipeline(text, text, text[], name, text, text, boolean) TO etl;
GRANT etl TO alice;
SET ROLE etl;
SELECT sluice.create_pipeline('shop', 'live', ARRAY['app.sales'], target_schema => 'Mart "Sales" é');
SELECT sluice.create_pipeline('desk', 'live', ARRAY['app.issues'], target_schema => 'desk');
});
my $ms = '"Mart ""Sales"" é"';

my %query = (
	monthly => q{SELECT date_trunc('month', at) AS month, "Campus", count(*) AS n, sum(amount) AS total,
	                    min(amount) AS lo, max(amount) AS hi, avg(amount) AS mean, count(DISTINCT grp) AS grps
	               FROM sales GROUP BY 1, 2},
	by_campus => q{SELECT c."Campus", c.n AS sales, coalesce(i.n, 0) AS issues
	                 FROM (SELECT "Campus", count(*) AS n FROM sales GROUP BY 1) c
	                 LEFT JOIN (SELECT "Campus", count(*) AS n FROM issues GROUP BY 1) i USING ("Campus")},
	yearly => qq{SELECT date_trunc('year', month) AS year, sum(n) AS n, sum(total) AS total FROM $ms.monthly GROUP BY 1},
);
my %table = (monthly => "$ms.monthly", by_campus => "$ms.by_campus", yearly => "$ms.yearly");

# a model equals its query run from scratch
sub model_is
{
	my ($model, $label) = @_;
	my $q = "SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text COLLATE \"C\")), '-') FROM %s r";
	my $want = $mart->safe_psql('postgres', "SET search_path = $ms, desk, pg_catalog; " . sprintf($q, "($query{$model})"));
	is($mart->safe_psql('postgres', sprintf($q, $table{$model})), $want, "$label: $model equals its query");
}

# --- declaration ---------------------------------------------------------
is($mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.create_model('monthly', \$q\$$query{monthly}\$q\$, ARRAY['shop'])"),
	'incremental', 'a GROUP BY over one table is incremental');
is($mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.create_model('by_campus', \$q\$$query{by_campus}\$q\$, ARRAY['shop', 'desk'])"),
	'full', 'a join is rebuilt in full');
is($mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.create_model('yearly', \$q\$$query{yearly}\$q\$, ARRAY['shop'])"),
	'full', 'a model over a model is rebuilt in full');
is($mart->safe_psql('postgres', q{SELECT string_agg(name || ':' || maintenance || ':' || depth || ':' || reason || ':' || array_to_string(pipelines, '+'), E'\n' ORDER BY name) FROM sluice.models}),
	"by_campus:full:0:it reads more than one table (a join):shop+desk\n"
	. "monthly:incremental:0:GROUP BY expressions of one table: the groups a batch touches are recomputed:shop\n"
	. "yearly:full:1:it reads a model: only a pipeline table's batch says which groups changed:shop",
	'the catalog says how each model is maintained, and why');
is($mart->safe_psql('postgres', "SELECT group_by::text FROM sluice.models WHERE name = 'monthly'"), '{month,Campus}', 'its GROUP BY columns');
is($mart->safe_psql('postgres', "SELECT tableowner FROM pg_tables WHERE tablename = 'monthly'"), 'etl', 'the model table is the owner\'s');
model_is($_, 'at creation') for qw(monthly by_campus yearly);

# the query is one SELECT, bound: no second statement, no unknown input
my ($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.create_model('bad', 'SELECT 1 AS x FROM sales; DROP TABLE desk.issues', ARRAY['shop'])");
like($err, qr/a model's query must be one SELECT/, 'two statements are refused');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.create_model('bad', 'SELECT count(*) FROM issues', ARRAY['shop'])");
like($err, qr/relation "issues" does not exist/, 'names resolve in the named pipelines\' schemas only');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.create_model('bad', 'SELECT count(*) FROM desk.issues', ARRAY['shop'])");
like($err, qr/model "bad" reads desk.issues, which is neither a table of its pipelines nor a model/, 'a table of a pipeline not named is refused');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.create_model('Bad Name', 'SELECT 1', ARRAY['shop'])");
like($err, qr/invalid model name "Bad Name"/, 'model names are identifiers');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_class WHERE relname LIKE 'bad%'"), '0', 'nothing is left of refused models');

# --- the property test: random workload, model == query after each refresh ---
srand(20261203);
my $next = 100000;
my ($incremental, $full) = (0, 0);
for my $round (1 .. 12)
{
	my @sql;
	for (1 .. 10)
	{
		my $op = int(rand(9));
		my $id = 1 + int(rand(2200));
		my $c = int(rand(6));
		my $campus = $c == 5 ? 'NULL' : "'campus $c'";
		if ($op == 0) { push @sql, "INSERT INTO app.sales VALUES ($next, $campus, " . int(rand(7)) . ", " . int(rand(9000)) / 10 . ", timestamp '2025-01-01' + " . int(rand(400)) . " * interval '1 day')"; $next++; }
		elsif ($op == 1) { push @sql, "UPDATE app.sales SET \"Campus\" = $campus WHERE id BETWEEN $id AND $id + 20"; }    # rows move between groups
		elsif ($op == 2) { push @sql, "UPDATE app.sales SET at = at + interval '40 days' WHERE id % 13 = $id % 13 AND id < $id"; }   # between months
		elsif ($op == 3) { push @sql, "UPDATE app.sales SET amount = amount + 1.5, grp = grp + 1 WHERE id BETWEEN $id AND $id + 50"; }
		elsif ($op == 4) { push @sql, "DELETE FROM app.sales WHERE date_trunc('month', at) = date_trunc('month', timestamp '2025-01-01' + $id % 300 * interval '1 day') AND \"Campus\" IS NOT DISTINCT FROM $campus"; }   # empties a group
		elsif ($op == 5) { push @sql, "DELETE FROM app.sales WHERE id BETWEEN $id AND $id + 3"; }
		elsif ($op == 6) { push @sql, "UPDATE app.sales SET id = id + 500000 WHERE id = $id"; }   # key change
		elsif ($op == 7) { push @sql, "UPDATE app.sales SET amount = NULL WHERE id = $id"; }
		else { push @sql, "INSERT INTO app.issues VALUES ($next, $campus, date '2025-03-01') ON CONFLICT DO NOTHING"; $next++; }
	}
	push @sql, "TRUNCATE app.sales; INSERT INTO app.sales SELECT g, 'campus ' || (g % 3), g % 4, g, timestamp '2025-06-01' + g * interval '1 hour' FROM generate_series(1, 900) g"
		if $round == 8;
	$live->safe_psql('postgres', join(";\n", @sql));
	# one refresh in round 5 with a tiny bound on touched groups
	my $set = $round == 5 ? 'SET pg_sluice.model_max_keys = 2; ' : '';
	my $run = $mart->safe_psql('postgres', "${set}SELECT run_id FROM sluice.refresh('shop')");
	$mart->safe_psql('postgres', "SELECT sluice.refresh('desk')") if $round % 3 == 0;
	model_is($_, "round $round") for qw(monthly by_campus yearly);
	my $how = $mart->safe_psql('postgres', "SELECT maintenance || ':' || coalesce(reason, '') FROM sluice.model_runs WHERE run_id = $run AND model = 'monthly'");
	if ($round == 5)
	{
		is($how, 'full:the batch touched more than pg_sluice.model_max_keys (2) groups', 'past the bound, the batch rebuilds and says so');
	}
	elsif ($round == 8)
	{
		is($how, 'full:the source truncated an input', 'a truncation rebuilds and says so');
	}
	elsif ($how ne '')
	{
		is($how, 'incremental:', "round $round: maintained incrementally");
	}
	$incremental++ if $how =~ /^incremental/;
}
ok($incremental >= 8, "$incremental refreshes maintained the monthly model incrementally");
is($mart->safe_psql('postgres', q{SELECT bool_and(groups > 0 AND rows_deleted + rows_inserted > 0) FROM sluice.model_runs WHERE model = 'monthly' AND maintenance = 'incremental'}),
	't', 'incremental runs recompute their touched groups');
# one row changed: one group recomputed (its month and its campus)
$live->safe_psql('postgres', "UPDATE app.sales SET amount = amount + 1 WHERE id = (SELECT min(id) FROM app.sales WHERE \"Campus\" IS NOT NULL)");
my $one = $mart->safe_psql('postgres', "SELECT run_id FROM sluice.refresh('shop')");
is($mart->safe_psql('postgres', "SELECT maintenance || ':' || groups || ':' || rows_deleted || ':' || rows_inserted FROM sluice.model_runs WHERE run_id = $one AND model = 'monthly'"),
	'incremental:2:1:1', 'one row changed: one group rewritten');
model_is('monthly', 'after one row');
is($mart->safe_psql('postgres', q{SELECT bool_and(y.run_id IS NOT NULL) FROM sluice.model_runs m LEFT JOIN sluice.model_runs y ON y.run_id = m.run_id AND y.model = 'yearly' WHERE m.model = 'monthly'}),
	't', 'a model over a model is maintained in the same batch');

# --- a model over two pipelines, maintained when either refreshes ---
$live->safe_psql('postgres', "INSERT INTO app.issues SELECT g, 'campus 1', date '2025-05-05' FROM generate_series(900000, 900009) g");
$mart->safe_psql('postgres', "SELECT sluice.refresh('desk')");
model_is('by_campus', 'after a refresh of the second pipeline alone');
is($mart->safe_psql('postgres', q{SELECT string_agg(DISTINCT model, ',' ORDER BY model) FROM sluice.model_runs WHERE pipeline = 'desk'}),
	'by_campus', 'a batch of the second pipeline maintains the model over both, and only it');

# --- expectations on models: error rolls the whole batch back ---
is($mart->safe_psql('postgres', q{SET ROLE alice; SELECT sluice.expect_model('monthly', 'expect_column_values_to_be_between', ARRAY['hi'], '{"max_value": "10000"}')}),
	'expect_column_values_to_be_between_hi_monthly', 'an error expectation on a model');
is($mart->safe_psql('postgres', q{SET ROLE alice; SELECT sluice.expect_model('monthly', 'expect_column_values_to_be_unique', ARRAY['month', 'Campus'], severity => 'warn')}),
	'expect_column_values_to_be_unique_month_Campus_monthly', 'a set expectation on a model');
($ret, $out, $err) = $mart->psql('postgres', q{SET ROLE alice; SELECT sluice.expect_model('monthly', 'expect_column_values_to_not_be_null', ARRAY['n'], severity => 'quarantine')});
like($err, qr/severity "quarantine" is not for models/, 'nothing can be quarantined from a model');
my $sales_before = checksum($mart, "$ms.sales");
my $model_before = checksum($mart, $table{monthly});
$live->safe_psql('postgres', "INSERT INTO app.sales VALUES (990001, 'campus 2', 1, 12345.67, timestamp '2025-02-02'); INSERT INTO app.sales VALUES (990002, 'campus 3', 1, 5, timestamp '2025-02-02')");
($ret, $out, $err) = $mart->psql('postgres', "SELECT status || ':' || transactions FROM sluice.refresh('shop')");
is($out, 'paused:0', 'a failing error expectation on a model pauses the pipeline');
like($err, qr/expectation "expect_column_values_to_be_between_hi_monthly" failed on "Mart "Sales" é.monthly"/, 'saying which');
is(checksum($mart, "$ms.sales"), $sales_before, 'the pipeline table rolled back with the model');
is(checksum($mart, $table{monthly}), $model_before, 'the model rolled back');
like($mart->safe_psql('postgres', "SELECT paused_reason FROM sluice._pipeline WHERE name = 'shop'"), qr/on model "monthly" failed for 1 value/, 'the pause names the model');
$mart->safe_psql('postgres', "SET ROLE alice; SELECT sluice.drop_model_expectation('monthly', 'expect_column_values_to_be_between_hi_monthly'); SELECT sluice.resume('shop')");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('shop')"), 'succeeded', 'resumed once the expectation is gone');
model_is('monthly', 'after the resume');
like($mart->safe_psql('postgres', "SELECT expectations::text FROM sluice.model_runs WHERE model = 'monthly' ORDER BY run_id DESC LIMIT 1"),
	qr/"name": "expect_column_values_to_be_unique_month_Campus_monthly", "failed": 0, .*"evaluated": [1-9]/, 'the set expectation ran on the rows the batch wrote');

# --- the DAG: a cycle is refused; alter_model versions the contract ---
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.alter_model('monthly', \$q\$SELECT year AS month, NULL::text AS \"Campus\", n, total, total AS lo, total AS hi, total AS mean, n AS grps FROM $ms.yearly\$q\$)");
like($err, qr/model "monthly" would read itself through .*yearly/, 'a cycle is refused');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.alter_model('monthly', 'SELECT \"Campus\", count(*) AS n FROM sales GROUP BY 1')");
like($err, qr/the columns of model "monthly" would change, and other models read it/, 'a new contract under a dependent model is refused');
$query{monthly} =~ s/FROM sales GROUP BY/FROM sales WHERE amount IS NOT NULL GROUP BY/;
is($mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.alter_model('monthly', \$q\$$query{monthly}\$q\$)"), '2', 'a new query is version 2');
model_is($_, 'after alter_model') for qw(monthly yearly);
$mart->safe_psql('postgres', "GRANT USAGE ON SCHEMA $ms TO bi; GRANT SELECT ON $table{by_campus} TO bi");
$query{by_campus} = q{SELECT c."Campus", c.n AS sales, coalesce(i.n, 0) AS issues, c.n + coalesce(i.n, 0) AS total
	                 FROM (SELECT "Campus", count(*) AS n FROM sales GROUP BY 1) c
	                 LEFT JOIN (SELECT "Campus", count(*) AS n FROM issues GROUP BY 1) i USING ("Campus")};
is($mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.alter_model('by_campus', \$q\$$query{by_campus}\$q\$)"), '2', 'new columns: version 2');
is($mart->safe_psql('postgres', q{SELECT string_agg(version || ':' || jsonb_array_length(columns), ',' ORDER BY version) FROM sluice.model_versions WHERE model = 'by_campus'}),
	'1:3,2:4', 'each version keeps its columns');
model_is('by_campus', 'after a new contract');
is($mart->safe_psql('postgres', "SET ROLE bi; SELECT count(*) > 0 FROM $table{by_campus}"), 't', 'readers keep their grant on the rebuilt table');
$live->safe_psql('postgres', "INSERT INTO app.sales VALUES (990003, 'campus 9', 1, 5, timestamp '2026-02-02'); INSERT INTO app.issues VALUES (990003, 'campus 9', date '2026-01-01')");
$mart->safe_psql('postgres', "SELECT sluice.refresh('shop'); SELECT sluice.refresh('desk')");
model_is($_, 'maintained after alter_model') for qw(monthly by_campus yearly);

# --- lineage: a run's events carry the models it maintained, with their inputs ---
$mart->safe_psql('postgres', "SELECT sluice.create_lineage_endpoint('ol', 'http://127.0.0.1:9/lineage')");
$live->safe_psql('postgres', "UPDATE app.sales SET amount = amount + 2 WHERE id < 10");
my $lrun = $mart->safe_psql('postgres', "SELECT run_id FROM sluice.refresh('shop')");
is($mart->safe_psql('postgres', qq{SELECT string_agg(m->>'output' || '<' || (m->'inputs')::text, ' ' ORDER BY ord)
                                     FROM sluice._outbox o, jsonb_array_elements(o.body->'models') WITH ORDINALITY x(m, ord)
                                    WHERE o.event = 'refresh_completed' AND (o.body->>'run_id')::bigint = $lrun}),
	'postgres.Mart "Sales" é.monthly<["postgres.Mart \\"Sales\\" é.sales"] postgres.Mart "Sales" é.by_campus<["postgres.Mart \\"Sales\\" é.sales", "postgres.desk.issues"] postgres.Mart "Sales" é.yearly<["postgres.Mart \\"Sales\\" é.monthly"]',
	'the lineage event names each model and what it reads, in dependency order');
$mart->safe_psql('postgres', "SELECT sluice.drop_destination('ol')");

# --- versions: a model over a pipeline that keeps history keeps its own ---
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.keep_history('desk')");
# opened::timestamp: date_trunc of a date would take it as a timestamptz, in
# the session's TimeZone, which makes a model full (078)
my $imq = q{SELECT date_trunc('month', opened::timestamp) AS month, "Campus", count(*) AS n FROM issues GROUP BY 1, 2};
is($mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.create_model('issues_monthly', \$q\$$imq\$q\$, ARRAY['desk'], schema => 'desk')"),
	'incremental', 'a model over a pipeline that keeps history');
is($mart->safe_psql('postgres', "SELECT history FROM sluice.models WHERE name = 'issues_monthly'"), 't', 'keeps its versions');
$mart->safe_psql('postgres', q{CREATE TABLE public.snap_im (version bigint, month timestamp, "Campus" text, n bigint)});
my @iv;
for my $round (1 .. 6)
{
	my $c = $round % 4;
	my $lo = 700000 + $round * 100;
	$live->safe_psql('postgres', qq{
INSERT INTO app.issues SELECT g, 'campus $c', date '2025-01-01' + (g % 200) FROM generate_series($lo, $lo + 20) g;
UPDATE app.issues SET "Campus" = 'campus ' || ($round + 1) % 4 WHERE id % 9 = $round;
UPDATE app.issues SET opened = opened + 45 WHERE id % 11 = $round;
DELETE FROM app.issues WHERE id % 17 = $round;
});
	my $v = $mart->safe_psql('postgres', "SELECT run_id FROM sluice.refresh('desk')");
	push @iv, $v;
	$mart->safe_psql('postgres', qq{INSERT INTO public.snap_im SELECT $v, month, "Campus", n FROM desk.issues_monthly});
}
my $versions_ok = "SELECT string_agg(v || ':' || ((SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM (SELECT month, \"Campus\", n FROM desk.issues_monthly_at(v)) r)
                                     = (SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM (SELECT month, \"Campus\", n FROM public.snap_im s WHERE s.version = v) r))::text, ',' ORDER BY v)
                     FROM unnest(ARRAY[" . join(',', @iv) . "]::bigint[]) v";
my $all_true = join(',', map { "$_:true" } @iv);
is($mart->safe_psql('postgres', $versions_ok), $all_true, 'issues_monthly_at(version) is the model as each version left it');
is($mart->safe_psql('postgres', "SELECT count(*) FROM desk_history.issues_monthly") > 0 ? 'yes' : 'no', 'yes', 'replaced groups are kept in the history table');
my $im_now = "SELECT count(*) || ':' || md5(string_agg(r::text, '|' ORDER BY r::text)) FROM (%s) r";
is($mart->safe_psql('postgres', sprintf($im_now, 'SELECT month, "Campus", n FROM desk.issues_monthly')),
	$mart->safe_psql('postgres', "SET search_path = desk, pg_catalog; " . sprintf($im_now, $imq)), 'the model with history equals its query');
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.tag('desk', 'first', $iv[0])");
is($mart->safe_psql('postgres', sprintf($im_now, 'SELECT month, "Campus", n FROM desk_first.issues_monthly')),
	$mart->safe_psql('postgres', sprintf($im_now, "SELECT month, \"Campus\", n FROM public.snap_im WHERE version = $iv[0]")), 'a tag pins the model too');
ok($mart->safe_psql('postgres', "SELECT count(*) FROM sluice.diff('desk.issues_monthly', $iv[0], $iv[-1]) WHERE key ? 'month' AND key ? 'Campus'") > 0,
	'sluice.diff of a model, keyed by its GROUP BY columns');
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.rebuild_model('issues_monthly')");
is($mart->safe_psql('postgres', $versions_ok), $all_true, 'a rebuild by hand leaves the versions as they were');

# --- hostile roles ---
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE bi; SELECT sluice.create_model('evil', 'SELECT 1 AS x FROM sales', ARRAY['shop'])");
like($err, qr/permission denied for function create_model/, 'a reader cannot create a model');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE mallory; SELECT sluice.create_model('evil', 'SELECT 1 AS x FROM sales', ARRAY['shop'])");
like($err, qr/pipeline "shop" does not exist/, 'an operator of other pipelines does not see this one');
my $pid = $mart->safe_psql('postgres', "SELECT pipeline_id FROM sluice._pipeline WHERE name = 'shop'");
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE mallory; SELECT sluice._model_bind($pid, 'public', 'evil', 'SELECT 1', '{}')");
like($err, qr/permission denied to build a model on pipeline "shop"/, 'nor bind a query as its owner');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE mallory; CREATE OR REPLACE VIEW \"Mart \"\"Sales\"\" é_models\".monthly_v2 AS SELECT 1");
like($err, qr/permission denied for schema/, 'the bound queries are private');
# a function planted in public, named like those the queries call, is never called
$mart->safe_psql('postgres', q{
SET ROLE mallory;
CREATE TABLE public.pwned (who text);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.date_trunc(text, timestamp) RETURNS timestamp LANGUAGE sql
  AS $$ INSERT INTO public.pwned VALUES (current_user) RETURNING now()::timestamp $$;
CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;
});
$live->safe_psql('postgres', "UPDATE app.sales SET amount = amount + 1 WHERE id < 100");
$mart->safe_psql('postgres', "SET search_path = public, pg_catalog; SELECT sluice.refresh('shop')");
is($mart->safe_psql('postgres', 'SELECT count(*) FROM public.pwned'), '0', 'no planted function runs in maintenance');
model_is('monthly', 'with planted functions');
# maintenance runs as the owner, even in a superuser's refresh
$mart->safe_psql('postgres', q{
SET ROLE etl;
CREATE TABLE desk.seen_by (u text);
CREATE FUNCTION desk.note_user() RETURNS text LANGUAGE sql VOLATILE
  AS $$ INSERT INTO desk.seen_by VALUES (current_user) RETURNING u $$;
SELECT sluice.create_model('who', 'SELECT "Campus", count(*) AS n, desk.note_user() AS u FROM issues GROUP BY 1', ARRAY['desk'], schema => 'desk');
});
is($mart->safe_psql('postgres', "SELECT reason FROM sluice.models WHERE name = 'who'"), 'it calls a volatile function', 'a volatile function makes a model full');
$live->safe_psql('postgres', "INSERT INTO app.issues VALUES (990004, 'campus 1', date '2026-01-01')");
$mart->safe_psql('postgres', "TRUNCATE desk.seen_by; SELECT sluice.refresh('desk')");
is($mart->safe_psql('postgres', 'SELECT string_agg(DISTINCT u, \',\') FROM desk.seen_by'), 'etl', 'a superuser\'s refresh maintains models as their owner');

# --- streamed batches maintain models the same way ---
is($mart->safe_psql('postgres', "SELECT sluice.start('shop')"), 't', 'shop streams');
$live->safe_psql('postgres', q{
INSERT INTO app.sales SELECT g, 'campus ' || (g % 3), 1, g % 50, timestamp '2025-09-01' + g * interval '1 hour' FROM generate_series(800001, 800300) g;
UPDATE app.sales SET "Campus" = 'campus 4' WHERE id BETWEEN 800001 AND 800050;
DELETE FROM app.sales WHERE id BETWEEN 800100 AND 800150;
});
wait_same_tables($live, $mart, [['app.sales', "$ms.sales"]], 'streaming');
model_is($_, 'after streamed batches') for qw(monthly by_campus yearly);
is($mart->safe_psql('postgres', "SELECT count(*) > 0 FROM sluice.model_runs m JOIN sluice.runs r USING (run_id) WHERE r.kind = 'stream' AND m.model = 'monthly' AND m.maintenance = 'incremental'"),
	't', 'streamed batches maintained the model incrementally');
is($mart->safe_psql('postgres', "SELECT sluice.stop('shop')"), 't', 'shop stops');

# --- rows written outside a batch: release_quarantined rebuilds the models ---
$mart->safe_psql('postgres', qq{SET ROLE etl; SELECT sluice.add_expectation('$ms.sales', 'expect_column_values_to_not_be_null', ARRAY['grp'], severity => 'quarantine')});
$live->safe_psql('postgres', "INSERT INTO app.sales VALUES (995001, 'campus 7', NULL, 7, timestamp '2025-04-04')");
$mart->safe_psql('postgres', "SELECT sluice.refresh('shop')");
model_is('monthly', 'with a row held in quarantine');
my $qid = $mart->safe_psql('postgres', "SELECT max(quarantine_id) FROM sluice._quarantine WHERE status = 'held'");
ok($qid > 0, 'the row is held');
$mart->safe_psql('postgres', qq{SET ROLE etl; SELECT sluice.release_quarantined($qid, '{"grp": 3}')});
is($mart->safe_psql('postgres', "SELECT count(*) FROM $ms.sales WHERE id = 995001"), '1', 'released');
model_is($_, 'after release_quarantined') for qw(monthly by_campus yearly);
# a row lost by hand, the model rebuilt over the loss, then repair brings both back
$mart->safe_psql('postgres', "DELETE FROM $ms.sales WHERE id = (SELECT max(id) FROM $ms.sales WHERE id < 990000)");
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.rebuild_model('monthly')");
ok($mart->safe_psql('postgres', "SELECT sum(rows_inserted + rows_deleted) FROM sluice.repair('shop')") > 0, 'repair rewrites the lost row');
model_is($_, 'after repair') for qw(monthly by_campus yearly);

# --- drop ---
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.drop_model('monthly')");
like($err, qr/other models read model "monthly"/, 'a model read by another cannot be dropped');
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.drop_model('yearly'); SELECT sluice.drop_model('monthly'); SELECT sluice.drop_model('who')");
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.untag('desk', 'first'); SELECT sluice.drop_model('issues_monthly')");
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_class WHERE relname IN ('monthly', 'yearly', 'monthly_v2', 'yearly_v1', 'issues_monthly', 'issues_monthly_v1')"), '0', 'dropped with their tables, history tables and queries');
is($mart->safe_psql('postgres', "SELECT count(*) FROM pg_proc WHERE proname LIKE 'issues_monthly_at%'"), '0', 'and their time-travel functions');
$live->safe_psql('postgres', "DELETE FROM app.sales WHERE id < 50");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('shop')"), 'succeeded', 'the pipeline refreshes without them');
model_is('by_campus', 'the remaining model');

# --- a model pins the columns it reads: refusals that name it, and a drift
# --- that would alter one pauses (it used to fail every refresh) ---
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.create_model('top_issue', 'SELECT max(id) AS top, count(*) AS n FROM issues', ARRAY['desk'], schema => 'desk')");
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.accept_type_change('desk.issues', 'Campus', 'varchar(40)')");
like($err, qr/ERROR:  cannot alter the type of column "Campus" of desk.issues: model "by_campus" reads it.*HINT:  Drop the model with sluice.drop_model\(\)/s,
	'accept_type_change on a column a model reads: refused, naming the model');
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.drop_column('desk.issues', 'Campus', keep => false)");
like($err, qr/ERROR:  cannot drop column "Campus" of desk.issues: model "by_campus" reads it/, 'drop_column too');
is($mart->safe_psql('postgres', "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'desk.issues'::regclass AND attname = 'Campus'"),
	'text', 'nothing was altered');
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.set_drift_policy('desk.issues', 'evolve')");
$live->safe_psql('postgres', "ALTER TABLE app.issues ALTER id TYPE bigint; INSERT INTO app.issues VALUES (990006, 'campus 3', date '2026-01-03')");
($ret, $out, $err) = $mart->psql('postgres', "SELECT status FROM sluice.refresh('desk')");
is($out, 'paused', 'a widening of a column a model reads pauses under evolve');
like($err, qr/Column "id" is read by the query of model "top_issue", which pins its type: drop the model with sluice.drop_model\(\), call sluice.accept_type_change\('desk.issues', 'id', 'bigint'\)/,
	'the pause names the model and the way forward');
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.drop_model('top_issue'); SELECT sluice.accept_type_change('desk.issues', 'id', 'bigint')");
$mart->safe_psql('postgres', "SELECT sluice.resume('desk')");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('desk')"), 'succeeded', 'that way forward works');
is($mart->safe_psql('postgres', "SELECT count(*) FROM desk.issues WHERE id = 990006"), '1', 'and the row waiting behind the pause is applied');
model_is('by_campus', 'after the type change');

# --- a pipeline a model reads cannot be dropped; refused before live is touched ---
my $slot = $mart->safe_psql('postgres', "SELECT slot_name FROM sluice._pipeline WHERE name = 'desk'");
$mart->safe_psql('postgres', "GRANT EXECUTE ON FUNCTION sluice.drop_pipeline(text, boolean, boolean) TO etl");
($ret, $out, $err) = $mart->psql('postgres', "SET ROLE etl; SELECT sluice.drop_pipeline('desk', drop_tables => true)");
like($err, qr/ERROR:  cannot drop pipeline "desk": model "by_campus" reads its tables.*HINT:  Drop the model first with sluice.drop_model\('by_campus'\)/s,
	'drop_pipeline refuses while a model reads the pipeline, naming the model');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"), '1',
	'the refused drop left the slot on live');
$live->safe_psql('postgres', "INSERT INTO app.issues VALUES (990005, 'campus 2', date '2026-01-02')");
is($mart->safe_psql('postgres', "SELECT status FROM sluice.refresh('desk')"), 'succeeded', 'and the pipeline still refreshes');
model_is('by_campus', 'after the refused drop');
$mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.drop_model('by_campus')");
is($mart->safe_psql('postgres', "SET ROLE etl; SELECT sluice.drop_pipeline('desk', drop_tables => true)"), 't', 'without the model it drops');
is($live->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"), '0', 'with its slot');

done_testing();
