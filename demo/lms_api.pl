# demo/lms_api.pl -- the demo's HTTP source: a learning platform's REST API
# (test/perl/JsonApiServer.pm) on 127.0.0.1:PORT, bearer token "demo-token",
# serving /api/students (Link pagination, ?since=) and /api/courses (a cursor
# token in the body, ETag).  Prints the server's pid and returns; the server
# runs on.  Usage: perl demo/lms_api.pl PORT [changed]
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../test/perl";
use JsonApiServer;
use HTTP::Tiny;
use JSON::PP;

my ($port, $changed) = @ARGV;
my @students = map { { id => $_, name => "Learner $_", grade => 50 + $_ % 50,
					   updated_at => sprintf('2026-09-01T08:%02d:00Z', $_ % 60) } } 1 .. 40;
my @courses = map { { code => "C$_", title => "Course $_ online" } } 1 .. 12;
my %data = (students => \@students, courses => \@courses);
if ($changed)
{
	# a day on the platform: two learners regraded, one joins, a course renamed
	$students[4]{grade} = 97;
	$students[4]{updated_at} = '2026-09-02T09:00:00Z';
	$students[9]{grade} = 12;
	$students[9]{updated_at} = '2026-09-02T09:05:00Z';
	push @students, { id => 41, name => 'Learner 41', grade => 77, updated_at => '2026-09-02T10:00:00Z' };
	$courses[2]{title} = 'Course 3 online, revised';
	my $r = HTTP::Tiny->new(keep_alive => 0)->request('PUT', "http://127.0.0.1:$port/control/data",
		{ content => JSON::PP->new->canonical(1)->encode(\%data) });
	die "could not change the API's data: $r->{status}\n" unless $r->{success};
	exit 0;
}
my ($pid) = JsonApiServer::start(port => $port, token => 'demo-token', data => \%data);
print "$pid\n";
