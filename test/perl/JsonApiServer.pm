# JsonApiServer.pm -- a small REST API returning JSON pages, for the HTTP
# source tests (test/t/072_http_source.pl) and the demo.
#
# It serves, under /api:
#   /students  rows {"data": [...]} of the "students" collection, 2 a page
#              (or ?limit=),
#              those with updated_at > ?since (in updated_at, id order),
#              the next page in a Link: rel="next" header (?offset=);
#   /courses   rows {"items": [...], "next": <token>} of "courses", 2 a
#              page, the next page by ?cursor=<token> from the body, and an
#              ETag of the whole collection (If-None-Match: 304);
# every answer carries X-RateLimit-Remaining.  Requests need
# "Authorization: Bearer <token>" when a token is set.  The test controls
# it over HTTP: PUT /control/data (the collections), PUT /control/faults (a
# list of {"match": <substring of the request URI>, "kind": "429" | "500" |
# "malformed" | "shape" | "slow", "times": n}), GET /control/log (the
# requests served: uri, status, if_none_match) and DELETE /control/log.
# One process, one request a connection, one at a time; a slow answer is given by a child
# after sleeping, so the server keeps answering meanwhile.
package JsonApiServer;

use strict;
use warnings;
use HTTP::Daemon;
use HTTP::Response;
use HTTP::Status;
use JSON::PP;
use Digest::MD5 qw(md5_hex);
use POSIX ();

my $json = JSON::PP->new->canonical(1);

# Start the server in a child (on port => $n, or any free port); returns
# (pid, port).  data => {...} sets the collections at once.
sub start
{
	my (%opts) = @_;
	my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => $opts{port} // 0, ReuseAddr => 1, Listen => 64)
	  or die "cannot listen: $!";
	my $port = $d->sockport;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	return ($pid, $port) if $pid;
	$SIG{CHLD} = 'IGNORE';
	serve($d, $opts{token}, $opts{data});
	POSIX::_exit(0);
}

sub serve
{
	my ($d, $token, $initial) = @_;
	my %data = $initial ? %$initial : (students => [], courses => []);
	my @faults;
	my @log;
	while (my $c = $d->accept)
	{
		# one request a connection: a client keeping its connection open
		# must not block the others
		for my $req (grep { defined } ($c->get_request))
		{
			my $uri = $req->uri->as_string;
			my $path = $req->uri->path;
			my %q = $req->uri->query_form;
			my $res;
			if ($path =~ m{^/control/})
			{
				if ($path eq '/control/data') { %data = %{ $json->decode($req->content) }; }
				elsif ($path eq '/control/faults') { @faults = @{ $json->decode($req->content) }; }
				elsif ($path eq '/control/log' && $req->method eq 'DELETE') { @log = (); }
				$res = HTTP::Response->new(200);
				$res->content($path eq '/control/log' ? $json->encode(\@log) : '{}');
				$c->send_response($res);
				next;
			}
			my $fault;
			for my $f (@faults)
			{
				next unless $f->{times} > 0 && index($uri, $f->{match}) >= 0;
				$f->{times}--;
				$fault = $f->{kind};
				last;
			}
			if (defined $token && ($req->header('Authorization') // '') ne "Bearer $token")
			{
				$res = HTTP::Response->new(401);
			}
			elsif (defined $fault && $fault eq 'slow')
			{
				push @log, { uri => $uri, status => 0 };
				my $pid = fork();
				if (defined $pid && $pid == 0)
				{
					sleep 30;
					POSIX::_exit(0);
				}
				$c->close;
				last;
			}
			elsif (defined $fault && $fault eq '429')
			{
				$res = HTTP::Response->new(429);
				$res->header('Retry-After' => 1);
			}
			elsif (defined $fault && $fault eq '500')
			{
				$res = HTTP::Response->new(500);
			}
			elsif ($path eq '/api/students')
			{
				my @rows = sort { $a->{updated_at} cmp $b->{updated_at} || $a->{id} <=> $b->{id} }
				  grep { !defined $q{since} || $_->{updated_at} gt $q{since} } @{ $data{students} };
				my $off = $q{offset} // 0;
				my $size = $q{limit} // 2;
				my @page = grep { defined } @rows[$off .. $off + $size - 1];
				$res = HTTP::Response->new(200);
				if ($off + $size < @rows)
				{
					my $next = $req->uri->clone;
					$next->query_form(%q, offset => $off + $size);
					$res->header(Link => '<' . $next->path_query . '>; rel="next"');
				}
				$res->content($json->encode({ data => \@page, total => scalar @rows }));
			}
			elsif ($path eq '/api/courses')
			{
				my @rows = sort { $a->{code} cmp $b->{code} } @{ $data{courses} };
				my $etag = '"' . md5_hex($json->encode(\@rows)) . '"';
				if (($req->header('If-None-Match') // '') eq $etag)
				{
					$res = HTTP::Response->new(304);
				}
				else
				{
					my $off = $q{cursor} // 0;
					my @page = grep { defined } @rows[$off .. $off + 1];
					$res = HTTP::Response->new(200);
					$res->header(ETag => $etag);
					$res->content($json->encode({ items => \@page,
						next => ($off + 2 < @rows ? $off + 2 : undef) }));
				}
			}
			else
			{
				$res = HTTP::Response->new(404);
			}
			if (defined $fault && $fault eq 'malformed')
			{
				$res = HTTP::Response->new(200);
				$res->content('{"data": [ {"id": 1, "name": ');
			}
			elsif (defined $fault && $fault eq 'shape')
			{
				$res = HTTP::Response->new(200);
				$res->content('{"data": "not rows"}');
			}
			$res->header('Content-Type' => 'application/json');
			$res->header('X-RateLimit-Remaining' => 100);
			push @log, { uri => $uri, status => $res->code,
						 if_none_match => scalar $req->header('If-None-Match') };
			$c->send_response($res);
		}
		$c->close;
	}
}

1;
