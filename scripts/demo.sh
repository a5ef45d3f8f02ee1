#!/usr/bin/env bash
# pg_sluice demo: a live server and a datamart on this machine.
#   bash scripts/demo.sh            # as root: run the demo, then clean up
#   KEEP=1 bash scripts/demo.sh     # leave both servers running
#
# Installs and builds pg_sluice (scripts/setup.sh), then, as the unprivileged
# OS user pgsluice in a scratch directory:
#   live      127.0.0.1:25432  database "school"   (wal_level = logical)
#   datamart  127.0.0.1:25433  database "datamart" (CREATE EXTENSION pg_sluice)
#   LMS API   127.0.0.1:25434  a REST API returning JSON (demo/lms_api.pl)
# loads demo/live_sample.sql on live, copies it into the datamart with
# sluice.create_pipeline(), applies demo/changes.sql on live, runs
# sluice.refresh() and compares every table on both servers.
# Exits non-zero if anything fails or any table differs.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

PG_MAJOR=15
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
RUN_USER=${SLUICE_USER:-pgsluice}
# Below Linux's ephemeral port range (32768-60999): a client connection's
# local port there can take a server's port at any moment ("could not create
# any TCP/IP sockets"; it happened to this demo on 55432).
LIVE_PORT=25432
MART_PORT=25433
API_PORT=25434
KEEP=${KEEP:-0}
TABLES=(teachers students courses enrollments exams grades attendance sis_import)

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/demo.sh: run as root (it installs packages)" >&2
    exit 1
fi

# Our servers, our settings: ignore any PG* variables of the caller.
for v in $(compgen -e); do case $v in PG*) unset "$v" ;; esac; done

section() { printf '\n== %s\n' "$*"; }

section "0. install and build"
# (filter pg_ctlcluster's note about the distribution's default cluster)
bash scripts/setup.sh 2>&1 | { grep -v '^Cluster is not running' || true; }
test -f "$PGBIN/pg_ctl"

# Refuse to start if something already listens on our ports.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $LIVE_PORT $MART_PORT $API_PORT; do
    if port_busy "$port"; then
        echo "scripts/demo.sh: port $port on 127.0.0.1 is already in use; the demo needs ports $LIVE_PORT, $MART_PORT and $API_PORT." >&2
        for d in /tmp/pg_sluice-demo.*; do
            [ -f "$d/live/postmaster.pid" ] || [ -f "$d/datamart/postmaster.pid" ] || continue
            echo "A demo left running with KEEP=1 is in $d; stop it with:" >&2
            echo "  su $RUN_USER -c '$PGBIN/pg_ctl -D $d/datamart stop; $PGBIN/pg_ctl -D $d/live stop' && rm -rf $d" >&2
        done
        exit 1
    fi
done

WORK=$(mktemp -d /tmp/pg_sluice-demo.XXXXXX)

# Run a command as the unprivileged user, in the scratch directory.
as_user() {
    (cd "$WORK" && runuser -u "$RUN_USER" -- env PATH="$PGBIN:/usr/bin:/bin" TZ=UTC PGTZ=UTC \
        PGHOST=127.0.0.1 PGUSER="$RUN_USER" PSQLRC=/dev/null "$@")
}
live() { as_user psql -X -q -v ON_ERROR_STOP=1 -p $LIVE_PORT -d school "$@"; }
mart() { as_user psql -X -q -v ON_ERROR_STOP=1 -p $MART_PORT -d datamart "$@"; }
# Show a query's result, without psql's trailing blank line.
show() { local srv=$1; shift; "$srv" -P footer=off "$@" | sed '/^$/d'; }

cleanup() {
    status=$?
    if [ "$KEEP" = 1 ]; then
        if [ $status -ne 0 ]; then
            echo "== demo failed (exit status $status); KEEP=1: servers and logs left in $WORK" >&2
        fi
        return
    fi
    if [ $status -ne 0 ] && [ $status -ne 130 ]; then
        for c in live datamart; do
            if [ -s "$WORK/$c.log" ] && grep -qE 'ERROR|FATAL|PANIC' "$WORK/$c.log"; then
                echo "---- errors in the $c server log" >&2
                grep -E -A3 'ERROR|FATAL|PANIC' "$WORK/$c.log" | tail -12 >&2
            fi
        done
    fi
    if [ -s "$WORK/api.pid" ]; then
        kill "$(cat "$WORK/api.pid")" 2>/dev/null || true
    fi
    for c in live datamart; do
        if [ -f "$WORK/$c/postmaster.pid" ]; then
            as_user pg_ctl -D "$WORK/$c" -m fast -w stop >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$WORK"
    if [ $status -ne 0 ]; then
        echo "== demo failed (exit status $status); servers stopped, $WORK removed" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 755 "$WORK"
chown "$RUN_USER": "$WORK"

section "1. two PostgreSQL $PG_MAJOR servers, as OS user $RUN_USER, in $WORK"
for c in live datamart; do
    as_user initdb -D "$WORK/$c" -A trust -U "$RUN_USER" --encoding UTF8 --locale C >/dev/null
    cat >>"$WORK/$c/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
CONF
done
cat >>"$WORK/live/postgresql.conf" <<CONF
port = $LIVE_PORT
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
CONF
echo "port = $MART_PORT" >>"$WORK/datamart/postgresql.conf"
as_user pg_ctl -D "$WORK/live" -l "$WORK/live.log" -w start >/dev/null
as_user pg_ctl -D "$WORK/datamart" -l "$WORK/datamart.log" -w start >/dev/null
echo "live      127.0.0.1:$LIVE_PORT  wal_level = logical"
echo "datamart  127.0.0.1:$MART_PORT"

section "2. sample school database on live (demo/live_sample.sql)"
as_user createdb -p $LIVE_PORT school
as_user createdb -p $MART_PORT datamart
live -f - <"$SRC/demo/live_sample.sql"
show live -c "
SELECT c.relname AS table,
       to_char(c.reltuples, 'FM999,999') AS rows,
       CASE c.relreplident WHEN 'f' THEN 'REPLICA IDENTITY FULL'
            ELSE (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
                    FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                   WHERE i.indrelid = c.oid AND i.indisprimary) END AS primary_key,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS size
  FROM pg_class c
 WHERE c.relnamespace = 'school'::regnamespace AND c.relkind = 'r'
 ORDER BY c.oid"

section "3. initial copy into the datamart: sluice.create_pipeline()"
table_list=$(printf "'school.%s', " "${TABLES[@]}")
table_list="ARRAY[${table_list%, }]"
cat <<SQL
CREATE EXTENSION pg_sluice;
SELECT sluice.create_source('school_live', 'host=127.0.0.1 port=$LIVE_PORT dbname=school user=$RUN_USER');
SELECT * FROM sluice.create_pipeline('school', 'school_live',
         $table_list,
         target_schema => 'school_mart');
SQL
echo
mart -c "CREATE EXTENSION pg_sluice" \
     -c "SELECT sluice.create_source('school_live', 'host=127.0.0.1 port=$LIVE_PORT dbname=school user=$RUN_USER')" >/dev/null
show mart -x -c "SELECT * FROM sluice.create_pipeline('school', 'school_live', $table_list, target_schema => 'school_mart')"

section "3b. contracts, expectations and versions"
cat <<'SQL'
SELECT sluice.keep_history('school');        -- every refresh becomes a queryable version
SELECT sluice.expect_column_values_to_be_between('school_mart.grades', 'score', '0', '100');
SELECT sluice.expect_column_values_to_be_in_set('school_mart.attendance', 'status',
         ARRAY['present', 'late', 'absent', 'excused'], severity => 'warn');
SELECT sluice.expect_column_values_to_match_regex('school_mart.students', 'email', '^[^@ ]+@[^@ ]+$', severity => 'quarantine');
SELECT sluice.expect_column_values_to_be_in_table('school_mart.enrollments', 'student_id', 'school_mart.students', 'student_id');
SELECT sluice.expect_table_row_count_to_be_between('school_mart.students', 1000, 100000);
SQL
mart -q -c "SELECT sluice.keep_history('school')" \
     -c "SELECT sluice.expect_column_values_to_be_between('school_mart.grades', 'score', '0', '100')" \
     -c "SELECT sluice.expect_column_values_to_be_in_set('school_mart.attendance', 'status', ARRAY['present', 'late', 'absent', 'excused'], severity => 'warn')" \
     -c "SELECT sluice.expect_column_values_to_match_regex('school_mart.students', 'email', '^[^@ ]+@[^@ ]+\$', severity => 'quarantine')" \
     -c "SELECT sluice.expect_column_values_to_be_in_table('school_mart.enrollments', 'student_id', 'school_mart.students', 'student_id')" \
     -c "SELECT sluice.expect_table_row_count_to_be_between('school_mart.students', 1000, 100000)" >/dev/null 2>&1
show mart -c "SELECT target_table, column_name, data_type, not_null, is_key FROM sluice.contracts
               WHERE target_table = 'students' ORDER BY position LIMIT 6"

section "3c. a model: monthly attendance per course, maintained in every refresh"
cat <<'SQL'
SELECT sluice.create_model('attendance_monthly', $q$
  SELECT date_trunc('month', class_date)::date AS month, course_id, count(*) AS records,
         count(*) FILTER (WHERE status = 'absent') AS absences, avg(minutes_late) AS avg_minutes_late
    FROM attendance GROUP BY 1, 2 $q$, ARRAY['school']);
SELECT sluice.expect_model('attendance_monthly', 'expect_column_values_to_be_between', ARRAY['absences'], '{"min_value": "0"}');
SQL
mart -q -c "SELECT sluice.create_model('attendance_monthly', \$q\$
  SELECT date_trunc('month', class_date)::date AS month, course_id, count(*) AS records,
         count(*) FILTER (WHERE status = 'absent') AS absences, avg(minutes_late) AS avg_minutes_late
    FROM attendance GROUP BY 1, 2 \$q\$, ARRAY['school'])" \
     -c "SELECT sluice.expect_model('attendance_monthly', 'expect_column_values_to_be_between', ARRAY['absences'], '{\"min_value\": \"0\"}')" >/dev/null
show mart -c "SELECT name, model_table, maintenance, reason, group_by FROM sluice.models"

section "4. a day of changes on live (demo/changes.sql)"
live -f - <"$SRC/demo/changes.sql"

section "5. apply them to the datamart: sluice.refresh('school')"
show mart -x -c "SELECT * FROM sluice.refresh('school')"
echo
# Spot checks of some of the changes made by demo/changes.sql.
echo "A few rows in the datamart afterwards:"
show mart -c "
SELECT 'course 12, room changed' AS change,
       format('room %s, syllabus of %s characters kept', room, length(syllabus)) AS \"in school_mart\"
  FROM school_mart.courses WHERE course_id = 12
UNION ALL
SELECT 'student 1042 renumbered 9042',
       format('1042: %s rows; 9042: %s enrollments, %s grades, %s attendance rows',
              (SELECT count(*) FROM school_mart.students WHERE student_id = 1042),
              (SELECT count(*) FROM school_mart.enrollments WHERE student_id = 9042),
              (SELECT count(*) FROM school_mart.grades WHERE student_id = 9042),
              (SELECT count(*) FROM school_mart.attendance WHERE student_id = 9042))
UNION ALL
SELECT 'student 77 left',
       format('%s rows left in students, enrollments, grades, attendance',
              (SELECT count(*) FROM school_mart.students WHERE student_id = 77)
            + (SELECT count(*) FROM school_mart.enrollments WHERE student_id = 77)
            + (SELECT count(*) FROM school_mart.grades WHERE student_id = 77)
            + (SELECT count(*) FROM school_mart.attendance WHERE student_id = 77))
UNION ALL
SELECT 'new enum label ''remote''',
       format('%s attendance rows; status is of type %s here', count(*),
              (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                WHERE attrelid = 'school_mart.attendance'::regclass AND attname = 'status'))
  FROM school_mart.attendance WHERE status = 'remote'"

section "5b. data quality of that refresh (sluice.quality)"
show mart -c "
SELECT target_table, expectation, severity, evaluated, failed, success,
       left(coalesce(sample_keys::text, ''), 40) AS sample
  FROM sluice.quality WHERE run_id = (SELECT max(run_id) FROM sluice.runs) ORDER BY target_table, expectation"

section "5c. versions: time travel, a tag for reports, a diff"
show mart -c "
SELECT version, kind, transactions, rows_inserted, rows_updated, rows_deleted, expectations_failed, queryable
  FROM sluice.versions ORDER BY version"
v1=$(mart -At -c "SELECT min(version) FROM sluice.versions")
v2=$(mart -At -c "SELECT max(version) FROM sluice.versions")
mart -q -c "SELECT sluice.tag('school', 'before_changes', $v1)" >/dev/null
show mart -c "
SELECT 'attendance marked remote' AS question,
       (SELECT count(*) FROM school_mart.attendance_at($v1) WHERE status = 'remote') AS at_first_version,
       (SELECT count(*) FROM school_mart.attendance WHERE status = 'remote') AS now
UNION ALL
SELECT 'students', (SELECT count(*) FROM school_before_changes.students), (SELECT count(*) FROM school_mart.students)"
show mart -c "SELECT change, count(*) AS students FROM sluice.diff('school_mart.students', $v1, $v2) GROUP BY change ORDER BY change"

section "5d. the monthly model as of two versions"
echo "The refresh maintained the model in its own transaction (sluice.model_runs):"
show mart -c "SELECT run_id, model, maintenance, groups, rows_deleted, rows_inserted, duration FROM sluice.model_runs"
echo "Monthly attendance as of version $v1 (attendance_monthly_at($v1), also tag school_before_changes) and $v2 (attendance_monthly_at($v2)):"
show mart -c "
SELECT coalesce(a.month, b.month) AS month, a.records AS \"records v$v1\", b.records AS \"records v$v2\",
       a.absences AS \"absences v$v1\", b.absences AS \"absences v$v2\"
  FROM (SELECT month, sum(records) AS records, sum(absences) AS absences
          FROM school_mart.attendance_monthly_at($v1) GROUP BY 1) a
  FULL JOIN (SELECT month, sum(records) AS records, sum(absences) AS absences
               FROM school_mart.attendance_monthly_at($v2) GROUP BY 1) b USING (month)
 ORDER BY 1"

section "6. what the datamart knows: sluice.runs and sluice.pipelines"
show mart -c "
SELECT run_id, kind, status, transactions AS xacts, rows_inserted AS inserted,
       rows_updated AS updated, rows_deleted AS deleted, tables_truncated AS truncated,
       start_lsn, end_lsn, to_char(extract(epoch FROM duration), 'FM0.000') || ' s' AS duration
  FROM sluice.runs ORDER BY run_id"
echo
show mart -c "
SELECT name, source, target_schema, publication, slot_name, cardinality(tables) AS tables,
       binary_transfer, last_end_lsn
  FROM sluice.pipelines"

section "6b. an HTTP source next to the school database: a learning platform's JSON API"
as_user perl "$SRC/demo/lms_api.pl" $API_PORT >"$WORK/api.pid"
cat <<SQL
SELECT sluice.create_http_source('lms', 'http://127.0.0.1:$API_PORT/', bearer_token => 'demo-token');
SELECT * FROM sluice.create_http_pipeline('lms', 'lms', '[
  {"table": "learners", "path": "/api/students", "rows": "data", "key": ["id"],
   "columns": [{"name": "id", "path": "id", "type": "integer"},
               {"name": "name", "path": "name", "type": "text", "required": true},
               {"name": "grade", "path": "grade", "type": "integer"},
               {"name": "updated_at", "path": "updated_at", "type": "timestamptz"}],
   "cursor": {"kind": "since", "param": "since", "field": "updated_at"},
   "pagination": {"kind": "link"}},
  {"table": "online_courses", "path": "/api/courses", "rows": "items", "key": ["code"],
   "columns": [{"name": "code", "path": "code", "type": "text"},
               {"name": "title", "path": "title", "type": "text"}],
   "cursor": {"kind": "etag"}, "pagination": {"kind": "cursor", "field": "next", "param": "cursor"}}]',
  target_schema => 'lms_mart');
SQL
endpoints='[{"table": "learners", "path": "/api/students", "rows": "data", "key": ["id"],
   "columns": [{"name": "id", "path": "id", "type": "integer"}, {"name": "name", "path": "name", "type": "text", "required": true},
               {"name": "grade", "path": "grade", "type": "integer"}, {"name": "updated_at", "path": "updated_at", "type": "timestamptz"}],
   "cursor": {"kind": "since", "param": "since", "field": "updated_at"}, "pagination": {"kind": "link"}},
  {"table": "online_courses", "path": "/api/courses", "rows": "items", "key": ["code"],
   "columns": [{"name": "code", "path": "code", "type": "text"}, {"name": "title", "path": "title", "type": "text"}],
   "cursor": {"kind": "etag"}, "pagination": {"kind": "cursor", "field": "next", "param": "cursor"}}]'
mart -q -c "SELECT sluice.create_http_source('lms', 'http://127.0.0.1:$API_PORT/', bearer_token => 'demo-token')" >/dev/null
show mart -c "SELECT pipeline, kind, rows_inserted, status FROM sluice.create_http_pipeline('lms', 'lms', '$endpoints', target_schema => 'lms_mart')"
echo
echo "A day on the platform (two learners regraded, one joins, a course renamed), then sluice.refresh('lms'):"
as_user perl "$SRC/demo/lms_api.pl" $API_PORT changed
show mart -c "SELECT pipeline, rows_inserted, rows_updated, status FROM sluice.refresh('lms')"
show mart -c "SELECT endpoint, cursor_kind, cursor_value, paging FROM sluice.http_endpoints ORDER BY endpoint"
show mart -c "SELECT name, base_url, auth, secret FROM sluice.http_sources"
lms=$(mart -At -c "SELECT (SELECT count(*) FROM lms_mart.learners) || ' ' ||
                          (SELECT grade FROM lms_mart.learners WHERE id = 5) || ' ' ||
                          (SELECT grade FROM lms_mart.learners WHERE id = 10) || ' ' ||
                          (SELECT count(*) FROM lms_mart.online_courses) || ' ' ||
                          (SELECT title FROM lms_mart.online_courses WHERE code = 'C3')")
if [ "$lms" != "41 97 12 12 Course 3 online, revised" ]; then
    section "FAILED: the HTTP source's tables differ from the API's data ($lms)"
    exit 1
fi
echo "lms_mart equals the API's data: 41 learners, 12 courses, every change applied once."

section "7. live vs datamart, table by table (row count and md5 of all rows)"
declare -A cols
while IFS='|' read -r t c; do cols[$t]=$c; done < <(live -At -c "
SELECT c.relname, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'school'::regnamespace AND c.relkind = 'r' GROUP BY c.relname")
checksums() {  # the live columns only: datamart tables also carry _sluice_version
    local schema=$1 q="" t
    for t in "${TABLES[@]}"; do
        [ -n "$q" ] && q="$q UNION ALL "
        q="$q SELECT '$t', count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text COLLATE \"C\")), '-') FROM (SELECT ${cols[$t]} FROM $schema.$t) x"
    done
    echo "$q"
}
declare -A live_rows live_md5 mart_rows mart_md5
while IFS='|' read -r t n h; do live_rows[$t]=$n; live_md5[$t]=$h; done < <(live -At -c "$(checksums school)")
while IFS='|' read -r t n h; do mart_rows[$t]=$n; mart_md5[$t]=$h; done < <(mart -At -c "$(checksums school_mart)")
mismatches=0
printf '%-12s  %10s  %10s  %s\n' table "live rows" "mart rows" match
printf '%-12s  %10s  %10s  %s\n' ------------ ---------- ---------- -----
for t in "${TABLES[@]}"; do
    if [ "${live_rows[$t]:-?}" = "${mart_rows[$t]:-!}" ] && [ "${live_md5[$t]:-?}" = "${mart_md5[$t]:-!}" ]; then
        ok=yes
    else
        ok=NO; mismatches=$((mismatches + 1))
    fi
    printf '%-12s  %10s  %10s  %s\n' "$t" "${live_rows[$t]:-?}" "${mart_rows[$t]:-?}" "$ok"
done
echo "(enum columns are text in the datamart, domains their base type: same text, same md5)"

if [ $mismatches -ne 0 ]; then
    section "FAILED: $mismatches table(s) differ between live and datamart"
    exit 1
fi

section "done: the datamart matches live"
if [ "$KEEP" = 1 ]; then
    cat <<MSG
Both servers are still running (KEEP=1), owned by OS user $RUN_USER:
  psql -h 127.0.0.1 -p $MART_PORT -U $RUN_USER datamart   # sluice.*, school_mart.*
  psql -h 127.0.0.1 -p $LIVE_PORT -U $RUN_USER school     # school.*
Change something on live, then on the datamart: SELECT * FROM sluice.refresh('school');
Stop them and clean up with:
  su $RUN_USER -c '$PGBIN/pg_ctl -D $WORK/datamart stop; $PGBIN/pg_ctl -D $WORK/live stop' && rm -rf $WORK
MSG
else
    echo "Stopping both servers and removing $WORK (KEEP=1 bash scripts/demo.sh leaves them running)."
fi
