#!/usr/bin/env bash
# pg_sluice benchmark: pg_sluice vs native logical replication vs pg_dump.
#
#   sudo bash bench/run.sh               # full run: 1,000,000 rows, RUNS=3
#   SMOKE=1 sudo bash bench/run.sh       # 10,000 rows, RUNS=1 (CI: proves the bench still works)
#
# Environment: RUNS (repetitions, default 3), ROWS (default 1000000),
# TXNS (transactions in scenario 2b, default 1000), TIMEOUT (seconds for any
# wait, default 900), BENCH_USER (default pgsluice), BENCH_TMPDIR (default /tmp),
# LOGDIR (copy both server logs there at the end), EXTRA_CONF (lines appended
# to both postgresql.conf, e.g. EXTRA_CONF='log_min_duration_statement = 0'),
# STREAM_SECS (scenario 4 window, default 30, SMOKE 5), LIVE_PORT / MART_PORT
# (the two servers' ports, default 26432 / 26433), PGBIN (the server's
# binaries, default /usr/lib/postgresql/15/bin), BIG_ROWS (scenario 7's
# big table, default 10000000, SMOKE 20000; 0 = only the ROWS size),
# MODEL_ROWS (scenario 8's table, default BIG_ROWS), SPOOL_MB (WAL live
# writes in scenario 9, default 1024, SMOKE 48), SPOOL_BASE / SPOOL_ROWS /
# SPOOL_CHURN (its table's rows, rows inserted per round, filler rows per
# round; default 100000 / 10000 / 50000, SMOKE 10000 / 2000 / 10000).
#
# Scenarios: 1 initial copy (at ROWS/10 and ROWS), 2a-2d backlog refresh,
# 3 peak memory, 5 the 2a backlog with 10 row expectations vs without (5b: 10
# cheap ones; runs after 3), 6 versions (keep_history: scans as of a version,
# storage, apply cost; runs after 5), 7 refresh after 1% of a table changed vs
# pg_dump | psql and pg_dump -Fc | pg_restore (at ROWS and BIG_ROWS; runs after
# 6; live decoding the workload alone, the floor under any refresh by logical
# decoding; 7v: sluice.verify of the table vs pg_dump -t of it), 8 a monthly model
# over MODEL_ROWS rows (default BIG_ROWS) refreshed after 1% changed, with
# and without it, and its full rebuild, 9 a paused pipeline while live
# writes SPOOL_MB of WAL: the WAL its slot keeps with the spool (sluice.drain)
# and without, the spool's size, the refresh that applies it, 4 streaming lag (continuous worker vs native subscription; the datamart
# is restarted with shared_preload_libraries = pg_sluice for it), 10 the worker pool after 4: POOL_PIPES
# pipelines (default 50, SMOKE 6) of POOL_TABLES tables (default 20, SMOKE 3) on 8 workers, memory per idle
# pipeline and lag under pgbench load (POOL_TPS, default 500, SMOKE 100, for POOL_SECS, default 30, SMOKE 5)
# vs one native subscription (live is restarted with room for the slots and walsenders).
# pglogical (if installed) is a second reference in 1 and 2a-2d; it is
# preloaded on both servers from the start and unloaded from the datamart
# (restart) after scenario 2.
#
# As root it re-runs itself as BENCH_USER in a scratch directory, where it
# initdb's and starts two throwaway servers on 127.0.0.1 (live LIVE_PORT,
# default 26432; datamart MART_PORT, default 26433). Both are stopped and the
# directory removed on exit.
# Exits non-zero if any step fails, including any copy whose content differs
# from live after a timed step. See bench/README.md.
set -euo pipefail

PG_MAJOR=15
PGBIN=${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
export PGBIN
BENCH_USER=${BENCH_USER:-pgsluice}
# defaults below Linux's ephemeral port range (32768-60999), which a client
# connection's local port could take (see scripts/demo.sh)
LIVE_PORT=${LIVE_PORT:-26432}
MART_PORT=${MART_PORT:-26433}
[[ $LIVE_PORT =~ ^[1-9][0-9]*$ && $MART_PORT =~ ^[1-9][0-9]*$ && $LIVE_PORT != "$MART_PORT" ]] ||
    { echo "bench: ERROR: LIVE_PORT and MART_PORT must be two different port numbers" >&2; exit 1; }

die() { echo "bench: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Outer part (root): scratch directory, re-run as the unprivileged user.
# ---------------------------------------------------------------------------
if [ -z "${BENCH_INNER:-}" ]; then
    [ -x "$PGBIN/postgres" ] || die "PostgreSQL $PG_MAJOR not found in $PGBIN (run: sudo bash scripts/setup.sh)"
    [ -f "$("$PGBIN/pg_config" --sharedir)/extension/pg_sluice.control" ] ||
        die "pg_sluice is not installed (run: sudo bash scripts/setup.sh)"
    W=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/pg_sluice-bench.XXXXXX")
    cp "$0" "$W/run.sh"
    if [ "$(id -u)" -eq 0 ]; then
        id "$BENCH_USER" >/dev/null 2>&1 || die "OS user $BENCH_USER does not exist (run: sudo bash scripts/setup.sh)"
        chown -R "$BENCH_USER": "$W"
        RUNAS=(runuser -u "$BENCH_USER" --)
    else
        RUNAS=()
    fi
    chmod 700 "$W"
    outer_cleanup() {
        # Normally the inner script already stopped everything; this covers
        # an inner script killed hard.
        for d in "$W/live" "$W/mart"; do
            if [ -f "$d/postmaster.pid" ]; then
                "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
            fi
        done
        if [ -n "${LOGDIR:-}" ]; then
            mkdir -p "$LOGDIR" && cp "$W"/*.log "$LOGDIR"/ 2>/dev/null && echo "bench: server logs copied to $LOGDIR" >&2
        fi
        rm -rf "$W"
    }
    trap outer_cleanup EXIT
    trap 'exit 130' INT TERM
    rc=0
    "${RUNAS[@]}" env -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u PGOPTIONS -u PGSERVICE \
        -u PGPASSWORD -u PGHOSTADDR -u PGCONNECT_TIMEOUT \
        BENCH_INNER=1 BENCH_DIR="$W" HOME="$W" \
        SMOKE="${SMOKE:-}" EXTRA_CONF="${EXTRA_CONF:-}" RUNS="${RUNS:-}" ROWS="${ROWS:-}" TXNS="${TXNS:-}" TIMEOUT="${TIMEOUT:-}" \
        STREAM_SECS="${STREAM_SECS:-}" BIG_ROWS="${BIG_ROWS:-}" MODEL_ROWS="${MODEL_ROWS:-}" LIVE_PORT="$LIVE_PORT" MART_PORT="$MART_PORT" \
        POOL_PIPES="${POOL_PIPES:-}" POOL_TABLES="${POOL_TABLES:-}" POOL_SECS="${POOL_SECS:-}" POOL_TPS="${POOL_TPS:-}" bash "$W/run.sh" || rc=$?
    exit $rc
fi

# ---------------------------------------------------------------------------
# Inner part (BENCH_USER): everything below.
# ---------------------------------------------------------------------------
export LC_ALL=C.UTF-8          # ${#s} counts characters (the table uses "–")
export PATH=$PGBIN:$PATH
W=$BENCH_DIR
cd "$W"

if [ -n "${SMOKE:-}" ]; then
    ROWS=${ROWS:-10000}; RUNS=${RUNS:-1}; TXNS=${TXNS:-100}; TIMEOUT=${TIMEOUT:-120}; BIG_ROWS=${BIG_ROWS:-20000}
else
    ROWS=${ROWS:-1000000}; RUNS=${RUNS:-3}; TXNS=${TXNS:-1000}; TIMEOUT=${TIMEOUT:-900}; BIG_ROWS=${BIG_ROWS:-10000000}
fi
[[ $ROWS =~ ^[0-9]+$ && $RUNS =~ ^[1-9][0-9]*$ && $TXNS =~ ^[1-9][0-9]*$ && $TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
    die "ROWS, RUNS, TXNS and TIMEOUT must be positive integers"
(( ROWS >= 1000 && ROWS % TXNS == 0 && ROWS % 10 == 0 )) || die "ROWS must be >= 1000, a multiple of 10 and of TXNS"
[[ $BIG_ROWS =~ ^[0-9]+$ ]] && (( BIG_ROWS == 0 || BIG_ROWS >= 1000 )) || die "BIG_ROWS must be 0 or an integer >= 1000"
N=$ROWS                 # base table size; scenario 1 copy size; 2a/2b insert size
N_SMALL=$((N / 10))     # scenario 1 also at this size (growth)
PER_TXN=$((N / TXNS))   # rows per transaction in 2b
UPD=$((N / 10))         # 2c / 2d
MEM_SMALL=$((N / 10))   # scenario 3
MEM_BIG=$N

CONNINFO="host=127.0.0.1 port=$LIVE_PORT dbname=bench user=$(id -un)"
SLUICE_TABLE=sl.t       # pg_sluice's copy on the datamart (database mart)
NATIVE_TABLE=bench.t    # the native subscriber's copy (database native)
STEP=""

log() { printf '%s %s\n' "$(date +%T)" "$*"; }

stop_servers() {  # [immediate]: after a failure (a server in crash recovery may not take a fast stop)
    for d in "$W/live" "$W/mart"; do
        if [ -f "$d/postmaster.pid" ]; then
            pg_ctl -D "$d" -m "${1:-fast}" -w -t 60 stop >/dev/null 2>&1 ||
                pg_ctl -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    done
}
inner_exit() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        echo "bench: FAILED${STEP:+ during: $STEP} (exit $rc)" >&2
        for f in "$W/live.log" "$W/mart.log"; do
            [ -f "$f" ] && { echo "---- last lines of $(basename "$f")" >&2; tail -25 "$f" >&2; }
        done
    fi
    if [ $rc -ne 0 ]; then stop_servers immediate; else stop_servers; fi
    find "${W:?}" -mindepth 1 -maxdepth 1 ! -name '*.log' -exec rm -rf {} + 2>/dev/null
    exit $rc
}
trap inner_exit EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
num() { awk -v x="$1" -v d="${2:-}" 'BEGIN { if (d == "") d = (x >= 100 ? 1 : (x >= 10 ? 2 : 3)); printf "%.*f", d, x }'; }

# psql: no psqlrc, quiet, unaligned, tuples only, stop at the first error.
# Unix socket in the scratch directory (psql startup is measured below).
P() { local port=$1 db=$2; shift 2; PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 -h "$W" -p "$port" -d "$db" "$@"; }
live() { P $LIVE_PORT bench "$@"; }
mart() { P $MART_PORT mart "$@"; }
nat()  { P $MART_PORT native "$@"; }
pgl()  { P $MART_PORT pgl "$@"; }

# A DO block polling a boolean SQL expression every 50 ms, failing after
# TIMEOUT seconds (server side: no psql start per poll).
poll_sql() {
    local cond=$1 what=${2//\'/\'\'} to=${3:-$TIMEOUT}
    cat <<SQL
DO \$poll\$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
  LOOP
    EXIT WHEN coalesce(($cond), false);
    IF clock_timestamp() - t0 > interval '$to s' THEN
      RAISE EXCEPTION 'timed out after $to s waiting for %', '$what';
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
\$poll\$;
SQL
}

# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
for port in $LIVE_PORT $MART_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "something already listens on 127.0.0.1:$port"
    fi
done

start_server() {   # name port extra-conf
    local name=$1 port=$2 extra=$3
    STEP="initdb $name"
    initdb -D "$W/$name" --auth=trust --locale=C --encoding=UTF8 --no-sync >"$W/$name.initdb.log" 2>&1 ||
        { cat "$W/$name.initdb.log" >&2; die "initdb $name failed"; }
    cat >>"$W/$name/postgresql.conf" <<CONF
# --- pg_sluice bench ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$W'
shared_buffers = 256MB
checkpoint_timeout = 1d
max_wal_size = 4GB
max_replication_slots = 20
max_wal_senders = 20
log_min_messages = warning
log_line_prefix = '%m [%p] %q%a '
$extra
${EXTRA_CONF:-}
CONF
    STEP="start $name"
    pg_ctl -D "$W/$name" -l "$W/$name.log" -w -t 120 start >/dev/null || die "could not start $name (see $name.log)"
}
# pglogical (second reference in 1 and 2a-2d): used only if its library and
# extension are installed. It must be preloaded on both servers. On the
# datamart it is preloaded for scenarios 1-2 only: with pglogical 2.4.2 on
# PostgreSQL 15 a DROP DATABASE waits forever for pglogical's supervisor and
# apply workers to absorb a ProcSignalBarrier (pglogical issues #399, #418),
# so scenario 1 uses no DROP DATABASE, and after 2 the datamart is restarted
# without pglogical. This server build also has output_plugin_libraries (the
# output plugins replication users may name): pglogical_output is added to it
# on live when the server knows the setting.
LIVE_CONF="wal_level = logical"
MART_CONF="wal_retrieve_retry_interval = 100ms"
if [ -f "$(pg_config --pkglibdir)/pglogical.so" ] && [ -f "$(pg_config --sharedir)/extension/pglogical.control" ]; then
    PGL=1
    LIVE_CONF="$LIVE_CONF
shared_preload_libraries = 'pglogical'"
    opl=$(postgres --describe-config 2>/dev/null | awk -F'\t' '$1 == "output_plugin_libraries" { print $5 }')
    if [ -n "$opl" ]; then
        LIVE_CONF="$LIVE_CONF
output_plugin_libraries = '$opl, pglogical_output'"
    fi
    MART_CONF="$MART_CONF
shared_preload_libraries = 'pglogical'
max_worker_processes = 16"
else
    PGL=0
    log "note: pglogical is not installed ($(pg_config --pkglibdir)/pglogical.so missing): its figures are skipped"
fi
PGL_ON=0                # 1 while the pglogical subscription pgl_sub takes part in 2a-2d

log "scratch directory $W"
start_server live $LIVE_PORT "$LIVE_CONF"
# wal_retrieve_retry_interval: the logical replication launcher starts at most
# one worker per interval (default 5s); lowered so that ENABLE / CREATE
# SUBSCRIPTION start their worker at once even when runs follow each other.
# max_worker_processes = 16 while pglogical is loaded (its supervisor, database
# manager, apply and sync workers share the pool with native replication's
# workers and parallel index builds).
start_server mart $MART_PORT "$MART_CONF"

TABLE_DDL="CREATE SCHEMA bench;
CREATE TABLE bench.t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);"

gen_rows() {  # lo hi [table, default bench.t] -> INSERT statement
    echo "INSERT INTO ${3:-bench.t} SELECT g, (g % 100000)::int, md5(g::text),
        timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', round(g * 1.37, 2)
   FROM generate_series($1, $2) g"
}

STEP="create databases"
P $LIVE_PORT postgres -c "CREATE DATABASE bench"
live <<SQL
$TABLE_DDL
CREATE PUBLICATION bench_pub FOR TABLE bench.t;
SQL
P $MART_PORT postgres -c "CREATE DATABASE mart"
P $MART_PORT postgres -c "CREATE DATABASE native"
mart >/dev/null <<SQL
CREATE EXTENSION pg_sluice;
SELECT sluice.create_source('live', '$CONNINFO');
SQL
nat <<<"$TABLE_DDL"
# scenario 1's pg_dump / pg_restore / COPY targets: a fresh schema bench in this
# database for every copy (no DROP DATABASE while pglogical is loaded, see above)
P $MART_PORT postgres -c "CREATE DATABASE dump"

# pglogical: provider node on live (database bench, bench.t in replication set
# bench_set); subscriber node in database pgl on the datamart (its own copy of
# bench.t, created empty with its key, as pglogical needs the table to exist).
if [ $PGL = 1 ]; then
    STEP="pglogical setup"
    live >/dev/null <<SQL
CREATE EXTENSION pglogical;
SELECT pglogical.create_node(node_name := 'live', dsn := '$CONNINFO');
SELECT pglogical.create_replication_set('bench_set');
SELECT pglogical.replication_set_add_table('bench_set', 'bench.t');
SQL
    P $MART_PORT postgres -c "CREATE DATABASE pgl"
    P $MART_PORT pgl >/dev/null <<SQL
$TABLE_DDL
CREATE EXTENSION pglogical;
SELECT pglogical.create_node(node_name := 'mart', dsn := 'host=127.0.0.1 port=$MART_PORT dbname=pgl user=$(id -un)');
SQL
    PGL_VERSION=$(P $MART_PORT pgl -c "SELECT pglogical.pglogical_version()")
fi

# Content fingerprint of a copy: count and sums over every column.
FP_SQL() {
    echo "SELECT count(*) || '/' || coalesce(sum(id), 0) || '/' || coalesce(sum(a), 0) || '/' ||
                 coalesce(sum(hashtext(b)), 0) || '/' || coalesce(sum(extract(epoch FROM c)), 0) || '/' ||
                 coalesce(sum(d), 0) FROM $1"
}
LIVE_FP=""
live_fp() { LIVE_FP=$(live -c "$(FP_SQL "${1:-bench.t}")"); }  # [table]
check_copy() {  # label port db table [expected_count]
    local label=$1 fp
    fp=$(P "$2" "$3" -c "$(FP_SQL "$4")")
    if [ "$fp" != "$LIVE_FP" ]; then
        die "$label: content differs from live after $STEP (live ${LIVE_FP%%/*} rows, copy ${fp%%/*} rows; fingerprints $LIVE_FP vs $fp)"
    fi
    if [ -n "${5:-}" ] && [ "${fp%%/*}" != "$5" ]; then
        die "$label: expected $5 rows, found ${fp%%/*} after $STEP"
    fi
}
check_sluice() { check_copy "pg_sluice ($SLUICE_TABLE)" $MART_PORT mart $SLUICE_TABLE "$@"; }
check_native() { check_copy "native ($NATIVE_TABLE)" $MART_PORT native $NATIVE_TABLE "$@"; }
PGL_TABLE=bench.t       # pglogical's copy (database pgl)
check_pgl() { check_copy "pglogical ($PGL_TABLE in pgl)" $MART_PORT pgl $PGL_TABLE "$@"; }

# Run SQL on live in one transaction; print live's WAL insert position taken
# inside it just before COMMIT. The commit record ends after it, so a copy
# whose applied position is >= this LSN has applied that transaction.
live_txn() {
    live <<SQL
BEGIN;
$1;
SELECT pg_current_wal_insert_lsn();
COMMIT;
SQL
}

# pg_sluice's peek query on live, its output to /dev/null: conninfo slot
# upto publication [logical_decoding_work_mem]; prints the messages decoded
# (nothing when COPY reported none). 2a's SQL fetch ceiling and scenario 7's
# decoding floor.
peek_null() {
    local set=() out
    [ -n "${5:-}" ] && set=(-c "SET logical_decoding_work_mem = '$5'")
    out=$(PGOPTIONS="-c client_min_messages=warning" psql -X -At -v ON_ERROR_STOP=1 -d "$1" "${set[@]}" \
        -c "\\copy (SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes('$2', '$3', NULL, 'proto_version', '2', 'streaming', 'on', 'publication_names', '$4', 'binary', 'true')) TO '/dev/null' (FORMAT binary)")
    sed -n 's/^COPY \([0-9]*\)$/\1/p' <<<"$out"
}

# Results: R[key] = space separated values (seconds or MB).
declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
stats() {  # key -> "median min max" (or "" if no values)
    [ -n "${R[$1]:-}" ] || { echo ""; return; }
    tr ' ' '\n' <<<"${R[$1]}" | grep . | sort -g |
        awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR] }'
}
cell() {  # key [decimals] -> "median (min–max)"
    local st m lo hi
    st=$(stats "$1"); [ -n "$st" ] || { echo "-"; return; }
    read -r m lo hi <<<"$st"
    if [ "$RUNS" -gt 1 ]; then echo "$(num "$m" "${2:-}") ($(num "$lo" "${2:-}")–$(num "$hi" "${2:-}"))"; else num "$m" "${2:-}"; fi
}
med() { local st; st=$(stats "$1"); echo "${st%% *}"; }
rate() {  # rows key -> rows/s of the median
    local m; m=$(med "$2"); [ -n "$m" ] || { echo "-"; return; }
    awk -v r="$1" -v t="$m" 'BEGIN { x = r / t; if (x >= 1e6) printf "%.2fM rows/s", x / 1e6; else if (x >= 1e3) printf "%.0fk rows/s", x / 1e3; else printf "%.0f rows/s", x }'
}
ratio() { local a b; a=$(med "$1"); b=$(med "$2"); [ -n "$a" ] && [ -n "$b" ] || { echo "-"; return; }
          awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# ---------------------------------------------------------------------------
# Machine and settings
# ---------------------------------------------------------------------------
PG_VERSION=$(live -c "SELECT version()")
SLUICE_VERSION=$(mart -c "SELECT sluice.version()")
SLUICE_SO=$(pg_config --pkglibdir)/pg_sluice.so
SLUICE_LIB="$SLUICE_SO ($(date -r "$SLUICE_SO" '+%F %T'), sha256 $(sha256sum "$SLUICE_SO" | cut -c1-12))"
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM_GB=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
SETTINGS_SQL="SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
  WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'wal_level', 'checkpoint_timeout', 'max_wal_size',
                 'max_replication_slots', 'max_wal_senders', 'logical_decoding_work_mem', 'autovacuum',
                 'wal_retrieve_retry_interval', 'full_page_writes', 'wal_compression',
                 'shared_preload_libraries', 'max_worker_processes', 'output_plugin_libraries')"
LIVE_SETTINGS=$(live -c "$SETTINGS_SQL")
MART_SETTINGS=$(mart -c "$SETTINGS_SQL")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# psql start + connect + trivial query, included once in every timed figure.
t=""
for i in 1 2 3 4 5; do s=$(now); mart -c "SELECT 1" >/dev/null; t="$t $(since "$s")"; done
PSQL_OVERHEAD=$(tr ' ' '\n' <<<"$t" | grep . | sort -g | sed -n 3p)
log "PostgreSQL: $PG_VERSION; pg_sluice $SLUICE_VERSION; psql start+query ${PSQL_OVERHEAD}s"
log "N=$N rows, RUNS=$RUNS${SMOKE:+ (SMOKE)}"

# ---------------------------------------------------------------------------
# pg_sluice and native helpers
# ---------------------------------------------------------------------------
REFRESH_ROW=""
REFRESH_RUN=""
LAST_T=""
sluice_refresh() {  # [pipeline, default p]; timed; sets REFRESH_ROW, REFRESH_RUN (its run_id) and LAST_T (seconds)
    local s out
    s=$(now)
    out=$(mart -c "SELECT run_id, transactions, rows_inserted, rows_updated, rows_deleted, tables_truncated FROM sluice.refresh('${1:-p}')")
    LAST_T=$(since "$s")
    REFRESH_RUN=${out%%|*}
    REFRESH_ROW=${out#*|}
}
expect_refresh() {  # "txns ins upd del trunc" as the refresh reported
    local got=${REFRESH_ROW//|/ }
    [ "$got" = "$1" ] || die "pg_sluice refresh reported (transactions inserted updated deleted truncated) = ($got), expected ($1) in $STEP"
}

native_enabled=0
native_enable_wait() {  # target_lsn; timed: ENABLE + wait until applied and flushed; sets LAST_T
    local s
    s=$(now)
    nat <<SQL
ALTER SUBSCRIPTION bench_sub ENABLE;
$(poll_sql "SELECT pg_replication_origin_progress('pg_' || oid, true) >= '$1'::pg_lsn FROM pg_subscription WHERE subname = 'bench_sub'" "native subscription to apply up to $1")
SQL
    LAST_T=$(since "$s")
    native_enabled=1
}
native_disable() {  # DISABLE and wait until its walsender on live is gone
    # the apply worker rereads its subscription only when it wakes up (data
    # from live, or its 1 s nap): a configuration reload sets its latch at once
    nat -c "ALTER SUBSCRIPTION bench_sub DISABLE" -c "SELECT pg_reload_conf()" >/dev/null
    live <<<"$(poll_sql "SELECT NOT EXISTS (SELECT FROM pg_stat_replication WHERE application_name = 'bench_sub')
                          AND NOT (SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_sub')" \
                        "the native walsender to exit")"
    native_enabled=0
}

# pglogical: subscription pgl_sub (database pgl), measured like native. Its
# replication origin (named like its slot, pgl_<db>_<provider>_<sub>) records
# the remote commit position applied; pg_replication_origin_progress(.., true)
# gives the position applied AND flushed, the same check as native's.
pgl_enabled=0
PGL_SLOT=""
PGL_ORIGIN=""
pgl_synced_sql() {  # sub -> condition: worker replicating, initial copy of bench.t done
    echo "(SELECT status FROM pglogical.show_subscription_status('$1')) = 'replicating'
       AND (SELECT count(*) FILTER (WHERE l.sync_nspname = 'bench' AND l.sync_relname = 't') = 1
                   AND bool_and(l.sync_status IN ('r', 'y'))
              FROM pglogical.local_sync_status l JOIN pglogical.subscription s ON s.sub_id = l.sync_subid
             WHERE s.sub_name = '$1')"
}
pgl_create_sql() {  # sub: create_subscription (copy the data, not the structure) and wait for the copy
    cat <<SQL
SELECT pglogical.create_subscription('$1', '$CONNINFO', replication_sets := ARRAY['bench_set'],
         synchronize_structure := false, synchronize_data := true, forward_origins := '{}');
$(poll_sql "$(pgl_synced_sql "$1")" "the pglogical subscription $1 to finish its initial copy")
SQL
}
pgl_applied_sql() {  # target_lsn -> wait until pgl_sub's origin has applied and flushed it
    poll_sql "SELECT pg_replication_origin_progress('$PGL_ORIGIN', true) >= '$1'::pg_lsn" "pglogical to apply up to $1"
}
pgl_enable_wait() {  # target_lsn; timed: enable + wait until applied and flushed; sets LAST_T
    local s
    s=$(now)
    pgl >/dev/null <<SQL
SELECT pglogical.alter_subscription_enable('pgl_sub');
$(pgl_applied_sql "$1")
SQL
    LAST_T=$(since "$s")
    pgl_enabled=1
}
pgl_disable() {  # disable and wait until its walsender on live is gone
    # its apply worker notices at its next 1 s wake-up: up to 1 s, untimed
    pgl -c "SELECT pglogical.alter_subscription_disable('pgl_sub')" >/dev/null
    live <<<"$(poll_sql "NOT (SELECT active FROM pg_replication_slots WHERE slot_name = '$PGL_SLOT')" "the pglogical walsender to exit")"
    pgl_enabled=0
}

# Quiet point before a timed step: VACUUM ANALYZE every copy (so autovacuum
# has nothing to do during the step), CHECKPOINT both servers, and move all
# slots' restart_lsn past the reset (the timed step decodes only its own
# backlog; a running_xacts record from the CHECKPOINT lets them move). pg_sluice advances its slot at the start of the next refresh,
# so two empty refreshes after the checkpoint; the native and pglogical slots
# advance from their subscriber's feedback while it is enabled.
quiesce() {  # lsn: every slot's restart_lsn should pass it
    local b=$1 i ok
    STEP="quiesce"
    live -c "VACUUM ANALYZE bench.t"
    mart -c "VACUUM ANALYZE $SLUICE_TABLE"
    nat -c "VACUUM ANALYZE $NATIVE_TABLE"
    if [ $PGL_ON = 1 ]; then pgl -c "VACUUM ANALYZE $PGL_TABLE"; fi
    live -c "CHECKPOINT"
    mart -c "CHECKPOINT"
    for i in 1 2 3 4; do
        sluice_refresh
        ok=$(live -c "SELECT restart_lsn >= '$b' FROM pg_replication_slots WHERE slot_name = '$SLUICE_SLOT'")
        if [ "$ok" = t ] && [ "$i" -ge 2 ]; then break; fi
    done
    [ "$ok" = t ] || log "   note: pg_sluice slot restart_lsn $(live -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$b', restart_lsn)) FROM pg_replication_slots WHERE slot_name = '$SLUICE_SLOT'") behind $b"
    if [ $native_enabled = 1 ]; then
        live <<<"$(poll_sql "SELECT restart_lsn >= '$b' FROM pg_replication_slots WHERE slot_name = 'bench_sub'" \
                    "the native slot's restart_lsn to pass $b" 60)" 2>/dev/null ||
            log "   note: native slot restart_lsn $(live -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$b', restart_lsn)) FROM pg_replication_slots WHERE slot_name = 'bench_sub'") behind $b"
    fi
    if [ $PGL_ON = 1 ] && [ $pgl_enabled = 1 ]; then
        live <<<"$(poll_sql "SELECT restart_lsn >= '$b' FROM pg_replication_slots WHERE slot_name = '$PGL_SLOT'" \
                    "the pglogical slot's restart_lsn to pass $b" 60)" 2>/dev/null ||
            log "   note: pglogical slot restart_lsn $(live -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$b', restart_lsn)) FROM pg_replication_slots WHERE slot_name = '$PGL_SLOT'") behind $b"
    fi
}

# ---------------------------------------------------------------------------
# Scenario 1: initial copy
# ---------------------------------------------------------------------------
# At N/10 rows, then at N (ids N/10+1..N appended to the same table, to show
# growth): pg_sluice create_pipeline (pg_sluice.initial_copy = snapshot: one
# snapshot, one transaction); pg_sluice chunked (initial_copy = chunked:
# create_pipeline creates the table empty, its commit starts 2 background copy
# workers (pg_sluice.copy_workers) that copy it in chunks of 100,000 rows, and
# CALL sluice.copy_tables waits for them); native CREATE SUBSCRIPTION ... copy_data;
# pglogical create_subscription (synchronize_data); pg_dump | psql;
# pg_dump -Fc | pg_restore; and a raw COPY TO | COPY FROM into a table created
# with its primary key before the load (what a naive loader does). The dump,
# restore and COPY targets are a fresh schema bench in database dump, dropped
# and created (untimed) before each copy. The order of the methods rotates
# between runs. Every copy is checked against live and removed afterwards.
dmp() { P $MART_PORT dump "$@"; }
copy_one() {  # method size run
    local m=$1 size=$2 run=$3 t s row what
    case $m in
        dump | dumpfc) dmp -c "DROP SCHEMA IF EXISTS bench CASCADE" -c "CREATE SCHEMA bench" ;;
        raw) dmp -c "DROP SCHEMA IF EXISTS bench CASCADE" -c "$TABLE_DDL" ;;
    esac
    mart -c "CHECKPOINT"
    case $m in
        sluice)
            what="pg_sluice create_pipeline"; STEP="1 $what, $size rows (run $run)"
            s=$(now)
            row=$(mart -c "SET pg_sluice.initial_copy = snapshot" \
                       -c "SELECT kind, rows_inserted FROM sluice.create_pipeline('c', 'live', ARRAY['bench.t'], target_schema => 'c')")
            t=$(since "$s")
            [ "$row" = "initial_copy|$size" ] || die "create_pipeline returned '$row', expected 'initial_copy|$size'"
            check_copy "pg_sluice (c.t)" $MART_PORT mart c.t "$size"
            mart -c "SELECT sluice.drop_pipeline('c', drop_tables => true)" >/dev/null
            mart -c "DROP SCHEMA IF EXISTS c CASCADE" 2>/dev/null ;;
        chunked)
            what="pg_sluice chunked: create_pipeline + CALL copy_tables"; STEP="1 $what, $size rows (run $run)"
            s=$(now)
            row=$(mart -c "SET pg_sluice.initial_copy = chunked" \
                       -c "SELECT kind, rows_inserted FROM sluice.create_pipeline('c', 'live', ARRAY['bench.t'], target_schema => 'c')")
            mart -c "CALL sluice.copy_tables('c')"
            t=$(since "$s")
            [ "$row" = "initial_copy|0" ] || die "chunked create_pipeline returned '$row', expected 'initial_copy|0'"
            check_copy "pg_sluice chunked (c.t)" $MART_PORT mart c.t "$size"
            mart -c "SELECT sluice.drop_pipeline('c', drop_tables => true)" >/dev/null
            mart -c "DROP SCHEMA IF EXISTS c CASCADE" 2>/dev/null ;;
        native)
            what="native subscription copy"; STEP="1 native CREATE SUBSCRIPTION copy_data, $size rows (run $run)"
            s=$(now)
            nat <<SQL
CREATE SUBSCRIPTION copy_sub CONNECTION '$CONNINFO' PUBLICATION bench_pub WITH (copy_data = true);
$(poll_sql "SELECT count(*) = 1 AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'copy_sub'" "the native table sync to reach state r")
SQL
            t=$(since "$s")
            check_native "$size"
            nat -c "DROP SUBSCRIPTION copy_sub"
            nat -c "TRUNCATE $NATIVE_TABLE" ;;
        pgl)
            what="pglogical create_subscription"; STEP="1 $what, $size rows (run $run)"
            s=$(now)
            pgl >/dev/null <<<"$(pgl_create_sql pgl_copy)"
            t=$(since "$s")
            check_pgl "$size"
            pgl -c "SELECT pglogical.drop_subscription('pgl_copy')" >/dev/null
            pgl -c "TRUNCATE $PGL_TABLE" ;;
        dump)
            what="pg_dump | psql"; STEP="1 $what, $size rows (run $run)"
            s=$(now)
            pg_dump -h "$W" -p $LIVE_PORT -t bench.t bench |
                psql -X -q -v ON_ERROR_STOP=1 -h "$W" -p $MART_PORT -d dump >/dev/null
            t=$(since "$s") ;;
        dumpfc)
            what="pg_dump -Fc | pg_restore"; STEP="1 $what, $size rows (run $run)"
            s=$(now)
            pg_dump -Fc -h "$W" -p $LIVE_PORT -t bench.t bench |
                pg_restore --exit-on-error -h "$W" -p $MART_PORT -d dump
            t=$(since "$s") ;;
        raw)
            what="COPY TO | COPY FROM (key before the load)"; STEP="1 $what, $size rows (run $run)"
            s=$(now)
            psql -X -q -v ON_ERROR_STOP=1 -h "$W" -p $LIVE_PORT -d bench -c "COPY bench.t TO STDOUT" |
                psql -X -q -v ON_ERROR_STOP=1 -h "$W" -p $MART_PORT -d dump -c "COPY bench.t FROM STDIN"
            t=$(since "$s") ;;
    esac
    case $m in
        dump | dumpfc | raw)
            check_copy "$what (dump bench.t)" $MART_PORT dump bench.t "$size"
            dmp -c "DROP SCHEMA bench CASCADE" ;;
    esac
    add "1_${size}_$m" "$t"
    log "   run $run  $what  ${t}s"
}

COPY_METHODS=(sluice chunked native)
if [ $PGL = 1 ]; then COPY_METHODS+=(pgl); fi
COPY_METHODS+=(dump dumpfc raw)
for size in $N_SMALL $N; do
    STEP="load $size rows on live"
    log "1  initial copy of $size rows"
    if [ "$size" = $N_SMALL ]; then lo=1; else lo=$((N_SMALL + 1)); fi
    live_txn "$(gen_rows $lo "$size")" >/dev/null
    live -c "VACUUM ANALYZE bench.t"
    live_fp
    for run in $(seq 1 "$RUNS"); do
        live -c "CHECKPOINT"
        for ((i = 0; i < ${#COPY_METHODS[@]}; i++)); do
            copy_one "${COPY_METHODS[(run - 1 + i) % ${#COPY_METHODS[@]}]}" "$size" "$run"
        done
    done
done

# ---------------------------------------------------------------------------
# Scenario 2: backlog refresh
# ---------------------------------------------------------------------------
log "2  backlog: pipeline p and subscription bench_sub, both caught up, then load, then apply"
STEP="2 setup: create_pipeline p"
mart -c "SELECT sluice.create_pipeline('p', 'live', ARRAY['bench.t'], target_schema => 'sl')" >/dev/null
SLUICE_SLOT=$(mart -c "SELECT slot_name FROM sluice.pipelines WHERE name = 'p'")
check_sluice "$N"
STEP="2 setup: native subscription bench_sub"
nat <<SQL
CREATE SUBSCRIPTION bench_sub CONNECTION '$CONNINFO' PUBLICATION bench_pub WITH (copy_data = true);
$(poll_sql "SELECT count(*) = 1 AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'bench_sub'" "the native table sync to reach state r")
SQL
native_enabled=1
check_native "$N"
if [ $PGL = 1 ]; then
    STEP="2 setup: pglogical subscription pgl_sub"
    pgl >/dev/null <<<"$(pgl_create_sql pgl_sub)"
    PGL_SLOT=$(pgl -c "SELECT sub_slot_name FROM pglogical.subscription WHERE sub_name = 'pgl_sub'")
    PGL_ORIGIN=$(pgl -c "SELECT roname FROM pg_replication_origin WHERE roname = '$PGL_SLOT'")
    [ -n "$PGL_ORIGIN" ] || die "no replication origin named like the pglogical slot '$PGL_SLOT' in pg_replication_origin"
    [ "$(live -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$PGL_SLOT'")" = 1 ] ||
        die "the pglogical slot '$PGL_SLOT' does not exist on live"
    pgl_enabled=1; PGL_ON=1
    check_pgl "$N"
    log "   pglogical $PGL_VERSION: subscription pgl_sub, slot and replication origin $PGL_ORIGIN"
fi

# Base state: ids 1..N on live and in pg_sluice's copy. reload_base: TRUNCATE
# + reload on live (untimed), pg_sluice applies it; sets RESET_LSN.
# reset_base (2a-2d, 3): native (and in 2a-2d pglogical) applies it too.
# reset_sluice (5, 6): pg_sluice only.
RESET_LSN=""
reload_base() {
    STEP="$1 reset (TRUNCATE + reload $N rows, untimed)"
    RESET_LSN=$(live_txn "TRUNCATE bench.t; $(gen_rows 1 "$N")")
    live_fp
    sluice_refresh
    expect_refresh "1 $N 0 0 1"
    check_sluice "$N"
}
reset_base() {
    reload_base "$1"
    # both subscribers catch up at the same time (untimed)
    if [ $PGL_ON = 1 ]; then
        pgl -c "SELECT pglogical.alter_subscription_enable('pgl_sub')" >/dev/null
        pgl_enabled=1
    fi
    native_enable_wait "$RESET_LSN"
    check_native "$N"
    if [ $PGL_ON = 1 ]; then
        pgl <<<"$(pgl_applied_sql "$RESET_LSN")"
        check_pgl "$N"
    fi
    quiesce "$RESET_LSN"
    STEP="$1 disable native"
    native_disable
    if [ $PGL_ON = 1 ]; then
        STEP="$1 disable pglogical"
        pgl_disable
    fi
}
reset_sluice() {
    reload_base "$1"
    quiesce "$RESET_LSN"
}

# the order of the appliers rotates between runs (WAL cache effects): with
# pg_sluice and native alone it alternates; with pglogical, run 1 is pg_sluice,
# native, pglogical, run 2 native, pglogical, pg_sluice, and so on
apply_both() {  # scenario target_lsn expected_refresh expected_count run
    local sc=$1 lsn=$2 exp=$3 cnt=$4 run=$5 t i who s end
    local appliers=(sluice native)
    if [ $PGL_ON = 1 ]; then appliers+=(pgl); fi
    for ((i = 0; i < ${#appliers[@]}; i++)); do
        who=${appliers[(run - 1 + i) % ${#appliers[@]}]}
        if [ $who = sluice ]; then
            STEP="$sc pg_sluice refresh (run $run)"
            sluice_refresh; t=$LAST_T
            expect_refresh "$exp"
            check_sluice "$cnt"
            add "${sc}_sluice" "$t"
            log "   run $run  pg_sluice refresh  ${t}s"
            # the slot mover (a background worker started by the commit)
            # advances the slot over the backlog; live's confirmed position
            # reaches the run's end when its advance is done. A scheduled
            # refresh comes later than that: the next refresh is timed once
            # it is done (bench/refresh_transport.pl times it right behind)
            STEP="$sc pg_sluice slot mover (run $run)"
            end=$(mart -c "SELECT end_lsn FROM sluice.runs WHERE run_id = $REFRESH_RUN")
            s=$(now)
            live <<<"$(poll_sql "SELECT confirmed_flush_lsn >= '$end' AND NOT active FROM pg_replication_slots WHERE slot_name = '$SLUICE_SLOT'" "the slot mover to move pg_sluice's slot to $end")"
            t=$(since "$s")
            add "${sc}_mover" "$t"
            log "   run $run  pg_sluice slot moved to $end by the slot mover ${t}s after the refresh returned"
            STEP="$sc pg_sluice next (empty) refresh (run $run)"
            sluice_refresh; t=$LAST_T
            expect_refresh "0 0 0 0 0"
            add "${sc}_adv" "$t"
            log "   run $run  pg_sluice next refresh (slot advance over the backlog)  ${t}s"
        elif [ $who = native ]; then
            STEP="$sc native ENABLE + catch-up (run $run)"
            native_enable_wait "$lsn"; t=$LAST_T
            check_native "$cnt"
            add "${sc}_native" "$t"
            log "   run $run  native catch-up  ${t}s"
        else
            STEP="$sc pglogical enable + catch-up (run $run)"
            pgl_enable_wait "$lsn"; t=$LAST_T
            check_pgl "$cnt"
            add "${sc}_pgl" "$t"
            log "   run $run  pglogical catch-up  ${t}s"
        fi
    done
}

# 2a's decode-only ceilings use pg_sluice's own stream options: pgoutput
# proto 2 with streaming on, binary = true, and logical_decoding_work_mem =
# the datamart's pg_sluice.source_decoding_work_mem (what pg_sluice SETs in
# its sessions on live; 0, the default, sets nothing: live's own setting,
# read here). A walsender takes the setting from the connection's options:
# checked here with SHOW on a replication connection.
STEP="2 read pg_sluice.source_decoding_work_mem"
SDWM=$(mart -c "LOAD 'pg_sluice'" -c "SHOW pg_sluice.source_decoding_work_mem")
[ "$SDWM" = 0 ] && SDWM=$(live -c "SHOW logical_decoding_work_mem")
[[ $SDWM =~ ^[0-9]+(kB|MB|GB|TB)$ ]] || die "SHOW pg_sluice.source_decoding_work_mem returned '$SDWM'"
got=$(psql -X -At -h "$W" -p $LIVE_PORT -d "dbname=bench replication=database options='-c logical_decoding_work_mem=$SDWM'" \
          -c "SHOW logical_decoding_work_mem")
[ "$got" = "$SDWM" ] || die "a walsender connected with options=-c logical_decoding_work_mem=$SDWM shows '$got'"
log "   pg_sluice.source_decoding_work_mem = $SDWM (a walsender started with it in options shows logical_decoding_work_mem = $got)"
CEIL_SLOTS="bench_recv bench_recvb bench_peek"

for sc in 2a 2b 2c 2d; do
    case $sc in
        2a) log "2a backlog: 1 transaction inserting $N rows" ;;
        2b) log "2b backlog: $TXNS transactions of $PER_TXN rows" ;;
        2c) log "2c backlog: UPDATE of $UPD rows (one statement)" ;;
        2d) log "2d backlog: DELETE of $UPD rows (one statement)" ;;
    esac
    for run in $(seq 1 "$RUNS"); do
        reset_base "$sc"
        STEP="$sc workload on live (run $run)"
        s=$(now)
        case $sc in
            2a)
                for sl in $CEIL_SLOTS; do
                    live -c "SELECT pg_create_logical_replication_slot('$sl', 'pgoutput')" >/dev/null
                done
                lsn=$(live_txn "$(gen_rows $((N + 1)) $((2 * N)))")
                # the commit is flushed (synchronous_commit = on): the SQL fetch reads up to here
                flush=$(live -c "SELECT pg_current_wal_flush_lsn()")
                exp="1 $N 0 0 0"; cnt=$((2 * N)) ;;
            2b)
                lsn=$( {
                    for ((i = 0; i < TXNS - 1; i++)); do
                        echo "$(gen_rows $((N + 1 + i * PER_TXN)) $((N + (i + 1) * PER_TXN)));"
                    done
                    echo "BEGIN;"
                    echo "$(gen_rows $((2 * N - PER_TXN + 1)) $((2 * N)));"
                    echo "SELECT pg_current_wal_insert_lsn();"
                    echo "COMMIT;"
                } | live)
                exp="$TXNS $N 0 0 0"; cnt=$((2 * N)) ;;
            2c)
                lsn=$(live_txn "UPDATE bench.t SET a = a + 1, b = md5(b), d = d + 1 WHERE id <= $UPD")
                exp="1 0 $UPD 0 0"; cnt=$N ;;
            2d)
                lsn=$(live_txn "DELETE FROM bench.t WHERE id <= $UPD")
                exp="1 0 0 $UPD 0"; cnt=$((N - UPD)) ;;
        esac
        log "   run $run  workload on live  $(since "$s")s (target LSN $lsn)"
        live_fp
        apply_both "$sc" "$lsn" "$exp" "$cnt" "$run"
        if [ $sc = 2a ]; then
            # decode-only ceilings, each from its own slot created before the load
            STEP="2a pg_recvlogical, default options (run $run)"
            s=$(now)
            pg_recvlogical -h "$W" -p $LIVE_PORT -d bench -S bench_recv --start --no-loop -f /dev/null \
                --endpos="$lsn" -o proto_version=1 -o publication_names=bench_pub
            t=$(since "$s")
            add 2a_recv "$t"
            log "   run $run  pg_recvlogical decode-only, default options (text, logical_decoding_work_mem default)  ${t}s"
            STEP="2a pg_recvlogical, pg_sluice's options (run $run)"
            s=$(now)
            pg_recvlogical -h "$W" -p $LIVE_PORT -d "dbname=bench options='-c logical_decoding_work_mem=$SDWM'" \
                -S bench_recvb --start --no-loop -f /dev/null \
                --endpos="$lsn" -o proto_version=2 -o streaming=on -o publication_names=bench_pub -o binary=true
            t=$(since "$s")
            add 2a_recvb "$t"
            log "   run $run  pg_recvlogical decode-only, binary, streaming, logical_decoding_work_mem $SDWM  ${t}s"
            # SQL fetch alone: pg_sluice's peek query on live, output to
            # /dev/null, up to the flush LSN read after the COMMIT (the peek
            # stops at the first record ending at or past upto_lsn: the target
            # LSN, read before COMMIT, would stop it before the commit record
            # and pgoutput would send nothing)
            STEP="2a SQL fetch only (run $run)"
            s=$(now)
            got=$(peek_null "host=$W port=$LIVE_PORT dbname=bench" bench_peek "$flush" bench_pub "$SDWM")
            t=$(since "$s")
            # BEGIN, RELATION, the inserts, COMMIT; streamed: a START and STOP per block, STREAM COMMIT
            [ -n "$got" ] && [ "$got" -ge $((N + 3)) ] ||
                die "2a SQL fetch returned '${got:-no}' messages, expected at least $((N + 3)) (RELATION, $N INSERT, BEGIN and COMMIT or stream blocks)"
            add 2a_fetch "$t"
            log "   run $run  SQL fetch only (peek, binary, streaming, logical_decoding_work_mem $SDWM): $got messages  ${t}s"
            log "   run $run  spilled to disk while decoding: $(live -c "SELECT string_agg(slot_name || ' ' || pg_size_pretty(spill_bytes), ', ' ORDER BY slot_name) FROM pg_stat_replication_slots WHERE slot_name IN ('bench_recv', 'bench_recvb', 'bench_peek')") (statistics may lag)"
            for sl in $CEIL_SLOTS; do
                live -c "SELECT pg_drop_replication_slot('$sl')" >/dev/null
            done
        fi
    done
done

# pglogical's part ends here: drop its subscription (and slot) and take
# bench.t out of its replication set (its TRUNCATE trigger then queues
# nothing), then restart the datamart without pglogical (see the note at
# start_server: DROP DATABASE would hang) and drop the databases pgl and dump.
# The extension stays on live, idle: logical decoding of WAL that holds a
# DROP EXTENSION pglogical fails for every slot ("could not find pg_class
# entry", pgoutput and test_decoding alike), so it is never dropped.
STEP="2 teardown: pglogical"
if [ $PGL = 1 ]; then
    pgl -c "SELECT pglogical.drop_subscription('pgl_sub')" >/dev/null
    PGL_ON=0; pgl_enabled=0
    [ "$(live -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$PGL_SLOT'")" = 0 ] ||
        die "pglogical.drop_subscription left the slot $PGL_SLOT on live"
    live -c "SELECT pglogical.replication_set_remove_table('bench_set', 'bench.t')" >/dev/null
    cat >>"$W/mart/postgresql.conf" <<CONF
# --- after scenario 2: pglogical unloaded ---
shared_preload_libraries = ''
max_worker_processes = 8
CONF
    pg_ctl -D "$W/mart" -l "$W/mart.log" -m fast -w -t 120 restart >/dev/null || die "could not restart the datamart (see mart.log)"
    P $MART_PORT postgres -c "DROP DATABASE pgl"
    log "   pglogical dropped; datamart restarted without it"
fi
P $MART_PORT postgres -c "DROP DATABASE dump"

# ---------------------------------------------------------------------------
# Scenario 3: peak memory of the applying process
# ---------------------------------------------------------------------------
# Sampler: waits for a pid in $1, then every 20 ms reads /proc/<pid>/status
# (RssAnon: private memory; VmHWM: peak resident, which also counts shared
# buffers the process touched) until $2 exists; writes "peak_RssAnon_kB VmHWM_kB
# RssAnon_at_start_kB" to $3.
sampler() {
    local pidf=$1 stopf=$2 out=$3 pid k v _ anon=0 peak=0 hwm=0 first=""
    until [ -s "$pidf" ]; do
        [ -e "$stopf" ] && { echo "0 0 0" >"$out"; return; }
        sleep 0.005
    done
    pid=$(<"$pidf")
    : >"$pidf.ready"
    while :; do
        if [ -r "/proc/$pid/status" ]; then
            while read -r k v _; do
                case $k in
                    RssAnon:) anon=$v ;;
                    VmHWM:) hwm=$v ;;
                esac
            done <"/proc/$pid/status" 2>/dev/null || true
            [ -z "$first" ] && first=$anon
            ((anon > peak)) && peak=$anon
        fi
        [ -e "$stopf" ] && break
        sleep 0.02
    done
    echo "$peak $hwm ${first:-0}" >"$out"
}

# Sampler of live's decoding backends for pg_sluice: every 20 ms, each child
# of live's postmaster; a backend whose title (what ps shows) ever says COPY
# is one running pg_sluice's decoding query (COPY (SELECT data FROM
# pg_logical_slot_peek_binary_changes(...)) TO STDOUT): one, or two for a
# refresh decoded in two parts. Until $1 exists; writes the sum of their
# peak RssAnon, the sum of their VmHWM and their count (kB, kB, n) to $2.
copy_sampler() {
    local stopf=$1 out=$2 pm p k v _ title anon hwm sum=0 hsum=0 n=0
    local -A peak=() hw=() iscopy=()
    pm=$(head -1 "$W/live/postmaster.pid")
    while :; do
        for p in $(pgrep -P "$pm"); do
            [ -r "/proc/$p/cmdline" ] || continue
            title=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
            [[ $title == *COPY* || $title == *START_REPLICATION* ]] && iscopy[$p]=1
            anon=0; hwm=0
            while read -r k v _; do
                case $k in
                    RssAnon:) anon=$v ;;
                    VmHWM:) hwm=$v ;;
                esac
            done <"/proc/$p/status" 2>/dev/null || true
            ((anon > ${peak[$p]:-0})) && peak[$p]=$anon
            ((hwm > ${hw[$p]:-0})) && hw[$p]=$hwm
        done
        [ -e "$stopf" ] && break
        sleep 0.02
    done
    for p in "${!iscopy[@]}"; do
        sum=$((sum + ${peak[$p]:-0})); hsum=$((hsum + ${hw[$p]:-0})); n=$((n + 1))
    done
    echo "$sum $hsum $n" >"$out"
}

# start_sampler TAG [port db sql]: sample the pid that appears in $W/TAG.pid;
# with a query, a background finder polls it every 10 ms and writes the first
# non-empty result there. stop_samplers TAG...: stop them and wait.
SAMPLERS=()
start_sampler() {
    local f=$W/$1
    rm -f "$f".pid "$f".pid.tmp "$f".pid.ready "$f".stop "$f".out
    sampler "$f.pid" "$f.stop" "$f.out" &
    SAMPLERS+=($!)
    if [ $# -gt 1 ]; then
        (
            for _ in $(seq 1 5000); do
                [ -e "$f.stop" ] && break
                p=$(P "$2" "$3" -c "$4" 2>/dev/null || true)
                if [ -n "$p" ]; then echo "$p" >"$f.pid.tmp"; mv "$f.pid.tmp" "$f.pid"; break; fi
                sleep 0.01
            done
        ) &
        SAMPLERS+=($!)
    fi
}
stop_samplers() {
    local t p
    for t; do : >"$W/$t.stop"; done
    for p in "${SAMPLERS[@]}"; do wait "$p" || true; done
    SAMPLERS=()
}
record_sample() {  # tag result-key label required(0/1)
    local peak hwm base
    read -r peak hwm base <"$W/$1.out" || peak=0
    if [ "${peak:-0}" -le 0 ]; then
        [ "$4" = 1 ] && die "memory sampler got no reading for the $3"
        log "   warning: no memory reading for the $3 (process not found in time)"
        return
    fi
    add "${2}_anon" "$(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }')"
    add "${2}_hwm" "$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
    log "   run $run  $3: peak RssAnon $(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }') MB (at start $(awk -v k="$base" 'BEGIN { printf "%.1f", k / 1024 }') MB), VmHWM $((hwm / 1024)) MB"
}

mem_run() {  # size run
    local size=$1 run=$2 lsn maxid
    STEP="3 load $size rows (run $run)"
    maxid=$(live -c "SELECT coalesce(max(id), 0) FROM bench.t")
    lsn=$(live_txn "$(gen_rows $((maxid + 1)) $((maxid + size)))")
    live_fp

    # pg_sluice: the datamart backend (pid printed by the session itself) and
    # the live backend serving pg_sluice's connection, which runs the peek.
    STEP="3 pg_sluice refresh of $size rows with memory sampling (run $run)"
    start_sampler sm
    # live: every backend that ran pg_sluice's decoding query (two for a
    # refresh decoded in two parts, pg_sluice.split_decoding_min), peaks summed
    rm -f "$W/sd.stop" "$W/sd.out"
    copy_sampler "$W/sd.stop" "$W/sd.out" &
    SAMPLERS+=($!)
    mart >/dev/null <<SQL
\o $W/sm.pid.tmp
SELECT pg_backend_pid();
\o
\! mv $W/sm.pid.tmp $W/sm.pid; n=0; while [ ! -e $W/sm.pid.ready ] && [ \$n -lt 1000 ]; do sleep 0.01; n=\$((n+1)); done
SELECT * FROM sluice.refresh('p');
\! touch $W/sm.stop; n=0; while [ ! -s $W/sm.out ] && [ \$n -lt 1000 ]; do sleep 0.01; n=\$((n+1)); done
SQL
    stop_samplers sm sd
    check_sluice
    record_sample sm "m${size}_sluice" "pg_sluice datamart backend" 1
    local p1 h1 nb
    read -r p1 h1 nb <"$W/sd.out" || p1=0
    if [ "${nb:-0}" -gt 0 ]; then
        add "m${size}_sluice_dec_anon" "$(awk -v a="$p1" 'BEGIN { printf "%.1f", a / 1024 }')"
        add "m${size}_sluice_dec_hwm" "$(awk -v a="${h1:-0}" 'BEGIN { printf "%.1f", a / 1024 }')"
        log "   run $run  live backend(s) decoding for pg_sluice: $nb, peak RssAnon $(awk -v a="$p1" 'BEGIN { printf "%.1f", a / 1024 }') MB (summed), VmHWM $((h1 / 1024)) MB"
    else
        log "   warning: no live backend ran pg_sluice's decoding query while sampled"
    fi

    # native: the apply worker and its walsender on live.
    STEP="3 native catch-up of $size rows with memory sampling (run $run)"
    start_sampler nm $MART_PORT native "SELECT pid FROM pg_stat_subscription WHERE subname = 'bench_sub' AND relid IS NULL AND pid IS NOT NULL"
    start_sampler nd $LIVE_PORT bench "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'bench_sub' AND active_pid IS NOT NULL"
    native_enable_wait "$lsn"
    stop_samplers nm nd
    check_native
    record_sample nm "m${size}_native" "native apply worker" 1
    record_sample nd "m${size}_native_dec" "native walsender on live" 0
    quiesce "$lsn"
    native_disable
}

log "3  peak memory while applying one transaction of $MEM_SMALL and of $MEM_BIG rows"
for run in $(seq 1 "$RUNS"); do
    reset_base "3"
    mem_run "$MEM_SMALL" "$run"
    mem_run "$MEM_BIG" "$run"
done

# ---------------------------------------------------------------------------
# Scenario 5: the 2a backlog with 10 row expectations on the datamart table
# ---------------------------------------------------------------------------
# Same workload as 2a (one transaction inserting ids N+1..2N on top of ids
# 1..N), refreshed by pipeline p without and with 10 row expectations on
# sl.t, back to back in every run (order alternating). The expectations are
# declared (severity error: a failing row would roll the batch back) after the
# reset and dropped after the timed refresh, so nothing else sees them. After
# the refresh with them, sluice.quality must hold 10 results for its run_id,
# each with evaluated = N and failed = 0. Native replication takes no part:
# its subscription is dropped first.
STEP="5 setup: drop the native subscription"
nat -c "DROP SUBSCRIPTION bench_sub"
nat -c "TRUNCATE $NATIVE_TABLE"
native_enabled=0
rowexp() {  # name predicate: expect_row_to_satisfy with its own name (the default name is per table)
    echo "SELECT sluice.add_expectation('$SLUICE_TABLE', 'expect_row_to_satisfy',
            args => jsonb_build_object('predicate', \$p\$$2\$p\$), severity => 'error', name => '$1');"
}
EXPECT_SQL="SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'b', severity => 'error');
SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'c', severity => 'error');
SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'd', severity => 'error');
SELECT sluice.expect_column_values_to_be_between('$SLUICE_TABLE', 'a', '0', '99999', severity => 'error');
SELECT sluice.expect_column_values_to_be_between('$SLUICE_TABLE', 'd', '0', '1000000000', severity => 'error');
SELECT sluice.expect_column_values_to_match_regex('$SLUICE_TABLE', 'b', '^[0-9a-f]{32}\$', severity => 'error');
SELECT sluice.expect_column_value_lengths_to_be_between('$SLUICE_TABLE', 'b', 32, 32, severity => 'error');
$(rowexp bench_c_from_2024 "c >= timestamptz '2024-01-01 00:00:00+00'")
$(rowexp bench_d_is_id_x_1_37 "d = round(id * 1.37, 2)")
$(rowexp bench_a_is_id_mod_100000 "a = id % 100000")"
NEXPECT=10

# 5b: 10 cheap expectations (null tests, integer / timestamp range, length,
# two trivial row predicates): the cost of the framework itself, next to 5's
# expensive predicates (regex, numeric arithmetic). Same checks on sluice.quality.
CHEAP_SQL="SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'id', severity => 'error');
SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'a', severity => 'error');
SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'b', severity => 'error');
SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'c', severity => 'error');
SELECT sluice.expect_column_values_to_not_be_null('$SLUICE_TABLE', 'd', severity => 'error');
SELECT sluice.expect_column_values_to_be_between('$SLUICE_TABLE', 'a', '0', '99999', severity => 'error');
SELECT sluice.expect_column_values_to_be_between('$SLUICE_TABLE', 'c', '2024-01-01 00:00:00+00', '2100-01-01 00:00:00+00', severity => 'error');
SELECT sluice.expect_column_value_lengths_to_be_between('$SLUICE_TABLE', 'b', 32, 32, severity => 'error');
$(rowexp bench_a_nonneg "a >= 0")
$(rowexp bench_id_positive "id > 0")"

log "5  backlog: 1 transaction inserting $N rows, refreshed without expectations, with $NEXPECT row expectations and with $NEXPECT cheap ones (5b) on $SLUICE_TABLE"
for run in $(seq 1 "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then order="plain expect cheap"; else order="cheap expect plain"; fi
    for mode in $order; do
        reset_sluice "5"
        case $mode in
            plain) what="without expectations" ;;
            expect) what="with $NEXPECT row expectations" ;;
            cheap) what="with $NEXPECT cheap row expectations (5b)" ;;
        esac
        if [ $mode != plain ]; then
            STEP="5 declare $NEXPECT row expectations ($mode, run $run)"
            if [ $mode = expect ]; then mart >/dev/null <<<"$EXPECT_SQL"; else mart >/dev/null <<<"$CHEAP_SQL"; fi
            got=$(mart -c "SELECT count(*) FROM sluice.expectations WHERE pipeline = 'p'")
            [ "$got" = $NEXPECT ] || die "5: $got expectations declared on $SLUICE_TABLE, expected $NEXPECT"
        fi
        STEP="5 workload on live (run $run, $mode)"
        lsn=$(live_txn "$(gen_rows $((N + 1)) $((2 * N)))")
        live_fp
        STEP="5 pg_sluice refresh $what (run $run)"
        sluice_refresh; t=$LAST_T
        expect_refresh "1 $N 0 0 0"
        [[ $REFRESH_RUN =~ ^[0-9]+$ ]] || die "5: sluice.refresh returned no run_id ('$REFRESH_RUN')"
        check_sluice $((2 * N))
        add "5_$mode" "$t"
        if [ $mode != plain ]; then
            q=$(mart -c "SELECT count(*) || '/' || count(*) FILTER (WHERE evaluated = $N AND failed = 0 AND success) || '/' ||
                                coalesce(string_agg(expectation || ' evaluated ' || evaluated || ' failed ' || failed, ', ' ORDER BY expectation)
                                         FILTER (WHERE NOT (evaluated = $N AND failed = 0 AND success)), '')
                           FROM sluice.quality WHERE run_id = ${REFRESH_RUN:-0}")
            [ "${q%/*}" = "$NEXPECT/$NEXPECT" ] ||
                die "5: sluice.quality for run ${REFRESH_RUN:-?} ($mode) has ${q%%/*} results, expected $NEXPECT each with evaluated = $N and failed = 0 (${q##*/})"
            STEP="5 drop the expectations ($mode, run $run)"
            mart -c "SELECT sluice.drop_expectation('$SLUICE_TABLE', name) FROM sluice.expectations WHERE pipeline = 'p'" >/dev/null
            [ "$(mart -c "SELECT count(*) FROM sluice.expectations WHERE pipeline = 'p'")" = 0 ] ||
                die "5: expectations left on $SLUICE_TABLE after drop_expectation"
            log "   run $run  pg_sluice refresh $what  ${t}s (sluice.quality run $REFRESH_RUN: $NEXPECT × evaluated $N, failed 0)"
        else
            log "   run $run  pg_sluice refresh $what  ${t}s"
        fi
    done
done

# ---------------------------------------------------------------------------
# Scenario 6: versions (sluice.keep_history): scan cost, storage, apply cost
# ---------------------------------------------------------------------------
# Runs last before 4 (keep_history adds _sluice_version to sl.t for good).
# Base: ids 1..N on live and in sl.t (pipeline p). A second pipeline q copies
# bench.t into sq.t and never keeps history: the same workload applied with and
# without history, in the same run. keep_history('p') then returns v_old.
# Run k: one transaction on live updating 1% of the rows (id % 100 = k: a, b, d)
# and deleting 0.1% (id % 1000 = 550 + k; disjoint from every update set), then
# refresh p (history) and q (without), timed, order alternating. After run 1
# (history = exactly that refresh's superseded rows): the scans, plus sizes.
# Scans: one aggregate over every column, SELECT count(*), sum(id), sum(a),
# sum(length(b)), max(c), sum(d) FROM x, for x = plain (CREATE TABLE AS of the
# current rows, no version column), sl.t, sl.t_at(v_old), sl.t_at(v_new): one
# psql session, each once to warm the cache, then 5 rounds (median, psql \timing).
SCAN_ROUNDS=5
UPD6=0; DEL6=0
scan_sql() { echo "SELECT count(*), sum(id), sum(a), sum(length(b)), max(c), sum(d) FROM $1;"; }
quiesce6() {  # VACUUM ANALYZE, CHECKPOINT, two empty refreshes of p and q (slots past the last batch)
    STEP="6 quiesce"
    live -c "VACUUM ANALYZE bench.t"
    mart -c "VACUUM ANALYZE sl.t" -c "VACUUM ANALYZE sq.t"
    [ -n "$(mart -c "SELECT to_regclass('sl_history.t')")" ] && mart -c "VACUUM ANALYZE sl_history.t"
    live -c "CHECKPOINT"; mart -c "CHECKPOINT"
    for i in 1 2; do sluice_refresh p; sluice_refresh q; done
}
log "6  versions: keep_history on pipeline p (sl.t), pipeline q (sq.t) without; 1% UPDATE + 0.1% DELETE per run"
reset_sluice "6"
STEP="6 setup: pipeline q (sq.t, no history)"
row=$(mart -c "SELECT kind, rows_inserted FROM sluice.create_pipeline('q', 'live', ARRAY['bench.t'], target_schema => 'sq')")
[ "$row" = "initial_copy|$N" ] || die "6: create_pipeline q returned '$row', expected 'initial_copy|$N'"
check_copy "pg_sluice (sq.t)" $MART_PORT mart sq.t "$N"
quiesce6
STEP="6 sluice.keep_history('p')"
SIZE_T_BEFORE=$(mart -c "SELECT pg_relation_size('sl.t')")
V_OLD=$(mart -c "SELECT sluice.keep_history('p')")
[[ $V_OLD =~ ^[0-9]+$ ]] || die "6: sluice.keep_history('p') returned '$V_OLD'"
SIZE_T_AFTER=$(mart -c "SELECT pg_relation_size('sl.t')")
log "   keep_history('p') = version $V_OLD; sl.t $SIZE_T_BEFORE bytes before, $SIZE_T_AFTER after (ADD COLUMN with a default: no rewrite)"
[ "$(mart -c "SELECT to_regclass('sl_history.t') IS NOT NULL AND to_regprocedure('sl.t_at(bigint)') IS NOT NULL AND to_regprocedure('sl.t_at_time(timestamptz)') IS NOT NULL")" = t ] ||
    die "6: keep_history did not create sl_history.t, sl.t_at(bigint) and sl.t_at_time(timestamptz)"
for run in $(seq 1 "$RUNS"); do
    k=$(( (run - 1) % 49 + 1 ))
    STEP="6 workload on live (run $run)"
    read -r nupd ndel <<<"$(live -F' ' -c "SELECT count(*) FILTER (WHERE id % 100 = $k), count(*) FILTER (WHERE id % 1000 = 550 + $k) FROM bench.t")"
    UPD6=$nupd; DEL6=$ndel
    OLD_FP=$LIVE_FP
    lsn=$(live_txn "UPDATE bench.t SET a = a + 1, b = md5(b), d = d + 1 WHERE id % 100 = $k; DELETE FROM bench.t WHERE id % 1000 = 550 + $k")
    live_fp
    cnt=$(( $(live -c "SELECT count(*) FROM bench.t") ))
    if [ $((run % 2)) = 1 ]; then order="p q"; else order="q p"; fi
    for pl in $order; do
        STEP="6 pg_sluice refresh $pl $([ $pl = p ] && echo with || echo without) history (run $run)"
        sluice_refresh $pl; t=$LAST_T
        expect_refresh "1 0 $nupd $ndel 0"
        if [ $pl = p ]; then
            check_sluice "$cnt"; add 6_hist "$t"; V_NEW=$REFRESH_RUN
            log "   run $run  refresh with history (p)  ${t}s  ($nupd updated, $ndel deleted; version $V_NEW)"
        else
            check_copy "pg_sluice (sq.t)" $MART_PORT mart sq.t "$cnt"; add 6_nohist "$t"
            log "   run $run  refresh without history (q)  ${t}s"
        fi
    done
    [ "$(mart -c "SELECT max(version) FROM sluice.versions WHERE pipeline = 'p'")" = "$V_NEW" ] ||
        die "6: sluice.versions does not list version $V_NEW as the latest of p"
    if [ "$run" = 1 ]; then
        STEP="6 check sl.t_at(v_old), sl.t_at(v_new), sl.t_at_time"
        check_copy "pg_sluice (sl.t_at($V_NEW))" $MART_PORT mart "sl.t_at($V_NEW)" "$cnt"
        check_copy "pg_sluice (sl.t_at_time(now()))" $MART_PORT mart "sl.t_at_time(now())" "$cnt"
        NEW_FP=$LIVE_FP; LIVE_FP=$OLD_FP
        check_copy "pg_sluice (sl.t_at($V_OLD))" $MART_PORT mart "sl.t_at($V_OLD)" "${OLD_FP%%/*}"
        LIVE_FP=$NEW_FP
        STEP="6 storage"
        mart -c "CREATE TABLE plain AS SELECT id, a, b, c, d FROM sl.t"
        quiesce6
        mart -c "VACUUM ANALYZE plain"
        read -r HIST_ROWS HIST_BYTES HIST_HEAP <<<"$(mart -F' ' -c "SELECT count(*), pg_total_relation_size('sl_history.t'), pg_relation_size('sl_history.t') FROM sl_history.t")"
        [ "$HIST_ROWS" = $((nupd + ndel)) ] || die "6: sl_history.t holds $HIST_ROWS rows, expected $((nupd + ndel)) (updated + deleted)"
        read -r SIZE_T SIZE_Q SIZE_PLAIN <<<"$(mart -F' ' -c "SELECT pg_relation_size('sl.t'), pg_relation_size('sq.t'), pg_relation_size('plain')")"
        HIST_BPR=$((HIST_BYTES / HIST_ROWS))
        log "   sl_history.t: $HIST_ROWS superseded rows, $HIST_BYTES bytes with its index ($HIST_BPR per row; heap $HIST_HEAP)"
        log "   heap sizes: sl.t $SIZE_T, sq.t (no history) $SIZE_Q, plain $SIZE_PLAIN bytes"
        STEP="6 scans: plain, sl.t, sl.t_at(v_old), sl.t_at(v_new)"
        out=$( {
            echo '\o /dev/null'
            for x in plain sl.t "sl.t_at($V_OLD)" "sl.t_at($V_NEW)"; do scan_sql "$x"; done
            echo '\timing on'
            for i in $(seq 1 $SCAN_ROUNDS); do
                for x in plain sl.t "sl.t_at($V_OLD)" "sl.t_at($V_NEW)"; do scan_sql "$x"; done
            done
        } | mart | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        read -r -a TS <<<"$(echo $out)"
        [ ${#TS[@]} = $((4 * SCAN_ROUNDS)) ] || die "6: expected $((4 * SCAN_ROUNDS)) scan timings, got ${#TS[@]}"
        for i in "${!TS[@]}"; do
            case $((i % 4)) in 0) key=6_scan_plain ;; 1) key=6_scan_cur ;; 2) key=6_scan_old ;; 3) key=6_scan_new ;; esac
            add $key "${TS[$i]}"
        done
        log "   scans (ms, median of $SCAN_ROUNDS): plain $(med 6_scan_plain), sl.t $(med 6_scan_cur), sl.t_at(v_old) $(med 6_scan_old), sl.t_at(v_new) $(med 6_scan_new)"
    fi
    quiesce6
done

STEP="cleanup"
# the history objects first: drop_pipeline drops sl.t without CASCADE
mart >/dev/null <<SQL
DROP TABLE plain;
DROP FUNCTION sl.t_at_time(timestamptz), sl.t_at(bigint);
DROP SCHEMA sl_history CASCADE;
SQL
mart -c "SELECT sluice.drop_pipeline('q', drop_tables => true)" >/dev/null
mart -c "SELECT sluice.drop_pipeline('p', drop_tables => true)" >/dev/null

# ---------------------------------------------------------------------------
# Scenario 7: refresh after 1% of a table changed vs a full dump / restore
# ---------------------------------------------------------------------------
# Own table bench.big on live (the columns of bench.t) and own pipeline b
# (target schema sb), so nothing else sees them; at N rows, then at BIG_ROWS
# (the table is dropped and loaded again). Load: CREATE TABLE, one INSERT of
# ids 1..size, then ADD PRIMARY KEY and VACUUM ANALYZE (timed, logged), then
# create_pipeline (its initial copy, timed, logged). Run k: one transaction on
# live updates 1% of the rows, spread over the whole table (id % 100 = k: a,
# b, d), then, order rotating: refresh b (and the empty refresh after it: the
# slot advance); pg_dump -t bench.big bench | psql into a fresh database;
# pg_dump -Fc -t bench.big bench | pg_restore -d into a fresh database (a
# pipe, no file; both load the data and then build the primary key). Every
# copy is checked against live. Between runs: VACUUM ANALYZE, CHECKPOINT, two
# empty refreshes (the next workload is decoded from past the previous one).
quiesce7() {
    STEP="7 quiesce"
    live -c "VACUUM ANALYZE bench.big"
    mart -c "VACUUM ANALYZE sb.big"
    live -c "CHECKPOINT"; mart -c "CHECKPOINT"
    sluice_refresh b; sluice_refresh b
}
dump7() {  # method size run: timed dump / restore of bench.big into a fresh database d7
    local m=$1 size=$2 run=$3 s t
    P $MART_PORT postgres -c "CREATE DATABASE d7"
    P $MART_PORT d7 -c "CREATE SCHEMA bench"
    mart -c "CHECKPOINT"
    s=$(now)
    if [ "$m" = dump ]; then
        STEP="7 pg_dump | psql, $size rows (run $run)"
        pg_dump -h "$W" -p $LIVE_PORT -t bench.big bench |
            psql -X -q -v ON_ERROR_STOP=1 -h "$W" -p $MART_PORT -d d7 >/dev/null
    else
        STEP="7 pg_dump -Fc | pg_restore, $size rows (run $run)"
        pg_dump -Fc -h "$W" -p $LIVE_PORT -t bench.big bench |
            pg_restore --exit-on-error -h "$W" -p $MART_PORT -d d7
    fi
    t=$(since "$s")
    check_copy "$([ "$m" = dump ] && echo "pg_dump | psql" || echo "pg_dump -Fc | pg_restore") (d7 bench.big)" $MART_PORT d7 bench.big "$size"
    [ "$(P $MART_PORT d7 -c "SELECT count(*) FROM pg_index WHERE indrelid = 'bench.big'::regclass AND indisprimary")" = 1 ] ||
        die "7: the restored bench.big has no primary key"
    P $MART_PORT postgres -c "DROP DATABASE d7"
    add "7_${size}_$m" "$t"
    log "   run $run  $([ "$m" = dump ] && echo "pg_dump | psql" || echo "pg_dump -Fc | pg_restore")  ${t}s"
}
# The floor under any refresh by logical decoding: live decoding the
# workload alone, nothing applied. A slot of its own (bench7_probe, made
# before the workload) is peeked over TCP as the refresh reads it (the same
# pgoutput options, b's publication), after the refresh and the dumps, so
# none of them finds live's WAL read before; recorded as 7_<size>_<key>_decode.
probe7_open() {
    live -c "SELECT 1 FROM pg_catalog.pg_create_logical_replication_slot('bench7_probe', 'pgoutput')" >/dev/null
}
probe7() {  # key size run rows
    local s t pub mark got
    STEP="7 live's decoding alone, $1, $2 rows (run $3)"
    pub=$(mart -c "SELECT publication FROM sluice.pipelines WHERE name = 'b'")
    # up to a mark whose commit flushed all before it, as the refresh does:
    # decoding to the flush position may wait for a record flushed in part
    mark=$(live -c "SELECT pg_catalog.pg_logical_emit_message(true, 'bench', 'probe')")
    s=$(now)
    got=$(peek_null "$CONNINFO" bench7_probe "$mark" "$pub")
    t=$(since "$s")
    # BEGIN, RELATION, an UPDATE per row, COMMIT (a wrong publication decodes nothing)
    [ -n "$got" ] && [ "$got" -ge $(( $4 + 3 )) ] ||
        die "7: live's decoding alone returned '${got:-no}' messages for $4 updated rows, expected at least $(( $4 + 3 ))"
    live -c "SELECT pg_catalog.pg_drop_replication_slot('bench7_probe')" >/dev/null
    add "7_${2}_${1}_decode" "$t"
    log "   run $3  live's decoding alone (the floor under a refresh)  ${t}s"
}
refresh7() {  # key label rows size run: timed refresh of b, checked, recorded as 7_<size>_<key>
    STEP="7 pg_sluice refresh b, $2, $4 rows (run $5)"
    sluice_refresh b; t=$LAST_T
    expect_refresh "1 0 $3 0 0"
    check_copy "pg_sluice (sb.big)" $MART_PORT mart sb.big "$4"
    add "7_${4}_$1" "$t"
    log "   run $5  pg_sluice refresh, $2  ${t}s"
}
BIG_SIZES=$N
if [ "$BIG_ROWS" -gt 0 ]; then BIG_SIZES="$N $BIG_ROWS"; fi
for size in $BIG_SIZES; do
    s7=$(now)
    log "7  refresh after 1% of $size rows changed vs pg_dump | psql and pg_dump -Fc | pg_restore"
    STEP="7 load $size rows into bench.big"
    s=$(now)
    live >/dev/null <<SQL
CREATE TABLE bench.big (id bigint, a int, b text, c timestamptz, d numeric);
$(gen_rows 1 "$size" bench.big);
ALTER TABLE bench.big ADD PRIMARY KEY (id);
VACUUM ANALYZE bench.big;
SQL
    t=$(since "$s"); add "7_${size}_load" "$t"
    log "   load on live (INSERT, primary key, VACUUM ANALYZE)  ${t}s; heap $(live -c "SELECT pg_size_pretty(pg_relation_size('bench.big'))")"
    live_fp bench.big
    STEP="7 create_pipeline b ($size rows)"
    s=$(now)
    row=$(mart -c "SELECT kind, rows_inserted FROM sluice.create_pipeline('b', 'live', ARRAY['bench.big'], target_schema => 'sb')")
    t=$(since "$s"); add "7_${size}_copy" "$t"
    [ "$row" = "initial_copy|$size" ] || die "7: create_pipeline b returned '$row', expected 'initial_copy|$size'"
    check_copy "pg_sluice (sb.big)" $MART_PORT mart sb.big "$size"
    log "   pg_sluice create_pipeline (initial copy)  ${t}s"
    quiesce7
    # First the same share of rows, clustered: the newest 1% of ids (recent
    # rows, where most changes land). It runs before the spread runs: their
    # dead row versions, once vacuumed, leave free space on every page, and
    # later updates would put new row versions all over the table. The
    # dump/restore times do not depend on which rows changed.
    for run in $(seq 1 "$RUNS"); do
        STEP="7c workload on live (run $run)"
        nclu=$(live -c "SELECT count(*) FROM bench.big WHERE id > $size - $size / 100")
        probe7_open
        before=$(live -c "SELECT pg_current_wal_insert_lsn()")
        lsn=$(live_txn "UPDATE bench.big SET a = a + 1, b = md5(b), d = d + 1 WHERE id > $size - $size / 100")
        log "   run $run  workload on live: UPDATE of the newest $nclu rows, $(live -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$lsn', '$before'))") of WAL"
        live_fp bench.big
        live -c "CHECKPOINT"; mart -c "CHECKPOINT"
        refresh7 clu "1% clustered (newest ids)" "$nclu" "$size" "$run"
        probe7 clu "$size" "$run" "$nclu"
        quiesce7
    done
    for run in $(seq 1 "$RUNS"); do
        k=$(( (run - 1) % 99 + 1 ))
        STEP="7 workload on live (run $run)"
        nupd=$(live -c "SELECT count(*) FROM bench.big WHERE id % 100 = $k")
        probe7_open
        before=$(live -c "SELECT pg_current_wal_insert_lsn()")
        s=$(now)
        lsn=$(live_txn "UPDATE bench.big SET a = a + 1, b = md5(b), d = d + 1 WHERE id % 100 = $k")
        log "   run $run  workload on live: UPDATE of $nupd rows  $(since "$s")s, $(live -c "SELECT pg_size_pretty(pg_wal_lsn_diff('$lsn', '$before'))") of WAL"
        live_fp bench.big
        live -c "CHECKPOINT"
        methods=(refresh dump dumpfc)
        for ((i = 0; i < 3; i++)); do
            m=${methods[(run - 1 + i) % 3]}
            if [ "$m" = refresh ]; then
                mart -c "CHECKPOINT"
                refresh7 sluice "1% spread" "$nupd" "$size" "$run"
                STEP="7 pg_sluice next (empty) refresh b (run $run)"
                sluice_refresh b; t=$LAST_T
                expect_refresh "0 0 0 0 0"
                add "7_${size}_adv" "$t"
                log "   run $run  pg_sluice next refresh (slot advance over the backlog)  ${t}s"
            else
                dump7 "$m" "$size" "$run"
            fi
        done
        probe7 sluice "$size" "$run" "$nupd"
        quiesce7
    done
    # 7v: sluice.verify of the table (both sides hashed at one source
    # position, equal: one scan each) vs pg_dump -t of it to /dev/null (what
    # a dump-and-compare check would at least cost)
    for run in $(seq 1 "$RUNS"); do
        STEP="7v sluice.verify b, $size rows (run $run)"
        live -c "CHECKPOINT"; mart -c "CHECKPOINT"
        s=$(now)
        row=$(mart -c "SELECT rows_compared || '|' || differences FROM sluice.verify('b')")
        t=$(since "$s")
        [ "$row" = "$size|0" ] || die "7v: sluice.verify b returned '$row', expected '$size|0'"
        add "7_${size}_verify" "$t"
        log "   run $run  sluice.verify  ${t}s"
        STEP="7v pg_dump -t bench.big > /dev/null, $size rows (run $run)"
        s=$(now)
        pg_dump -h "$W" -p $LIVE_PORT -t bench.big bench >/dev/null
        t=$(since "$s")
        add "7_${size}_pgdump" "$t"
        log "   run $run  pg_dump -t bench.big > /dev/null  ${t}s"
    done
    # one row changed by hand in the datamart: verify must find it, by key
    STEP="7v sluice.verify b, one row changed in the mart, $size rows"
    k7=$((size / 2 + 7))
    mart -c "UPDATE sb.big SET b = 'changed by hand' WHERE id = $k7"
    s=$(now)
    row=$(mart -c "SELECT differences || '|' || (keys->0->>'kind') || '|' || (keys->0->'key'->>'id') FROM sluice.verify('b')")
    t=$(since "$s")
    [ "$row" = "1|different|$k7" ] || die "7v: sluice.verify b returned '$row', expected '1|different|$k7'"
    add "7_${size}_verify1" "$t"
    log "   sluice.verify, row $k7 changed by hand in the mart: found  ${t}s"
    STEP="7 cleanup ($size rows)"
    mart -c "SELECT sluice.drop_pipeline('b', drop_tables => true)" >/dev/null
    mart -c "DROP SCHEMA IF EXISTS sb CASCADE" 2>/dev/null
    live -c "DROP TABLE bench.big"
    live -c "CHECKPOINT"; mart -c "CHECKPOINT"
    t=$(since "$s7"); add "7_${size}_total" "$t"
    log "   scenario 7 at $size rows took ${t}s"
done

# ---------------------------------------------------------------------------
# Scenario 8: a model (monthly aggregate) maintained in each refresh
# ---------------------------------------------------------------------------
# Own table bench.mm on live (id bigint primary key, campus int, at
# timestamp, amount numeric) of MODEL_ROWS rows (default BIG_ROWS, or ROWS
# when BIG_ROWS is 0), at spread by id over ten years; own pipeline mm
# (schema smm) and, in the datamart, an index on date_trunc('month', at).
# Run k: one transaction on live updates the newest 1% of the rows (amount,
# the last ~1.2 months: where changes land), then refresh mm: RUNS times
# without a model, then RUNS times with the model smm.monthly (GROUP BY
# month and campus: count, sum, avg, min, max, count distinct; maintained
# incrementally), its maintenance time read from sluice.model_runs; then
# RUNS full rebuilds of the model (sluice.rebuild_model). The model is
# checked against its query run from scratch at the end.
MODEL_ROWS=${MODEL_ROWS:-$([ "$BIG_ROWS" -gt 0 ] && echo "$BIG_ROWS" || echo "$N")}
MODEL_Q="SELECT date_trunc('month', at) AS month, campus, count(*) AS n, sum(amount) AS total, avg(amount) AS mean,
                min(amount) AS lo, max(amount) AS hi, count(DISTINCT amount) AS amounts FROM mm GROUP BY 1, 2"
s8=$(now)
log "8  a monthly model over $MODEL_ROWS rows, refreshed after 1% changed: without it, with it, full rebuild"
STEP="8 load $MODEL_ROWS rows into bench.mm"
live -c "CREATE TABLE bench.mm (id bigint PRIMARY KEY, campus int, at timestamp, amount numeric)"
live -c "INSERT INTO bench.mm SELECT g, g % 10, timestamp '2016-01-01' + (g::float8 / $MODEL_ROWS) * interval '3650 days', (g % 1000) / 10.0 FROM generate_series(1, $MODEL_ROWS) g"
live -c "VACUUM ANALYZE bench.mm"
STEP="8 create_pipeline mm"
mart -c "SELECT sluice.create_pipeline('mm', 'live', ARRAY['bench.mm'], target_schema => 'smm')" >/dev/null
mart -c "CREATE INDEX ON smm.mm (date_trunc('month', at))"
mart -c "VACUUM ANALYZE smm.mm"
k8=0
refresh8() {  # key label: 1% of rows updated on live, refresh mm timed
    k8=$((k8 + 1))
    STEP="8 workload on live ($2)"
    live_txn "UPDATE bench.mm SET amount = amount + $k8 WHERE id > $MODEL_ROWS - $MODEL_ROWS / 100" >/dev/null
    live -c "CHECKPOINT"; mart -c "CHECKPOINT"
    STEP="8 refresh mm ($2)"
    sluice_refresh mm
    expect_refresh "1 0 $((MODEL_ROWS / 100)) 0 0"
    add "8_$1" "$LAST_T"
    log "   $2  refresh ${LAST_T}s"
    mart -c "VACUUM ANALYZE smm.mm"
}
for run in $(seq 1 "$RUNS"); do refresh8 plain "run $run, no model"; done
STEP="8 create_model monthly"
s=$(now)
[ "$(mart -c "SELECT sluice.create_model('monthly', \$q\$$MODEL_Q\$q\$, ARRAY['mm'])")" = incremental ] ||
    die "8: the monthly model is not incremental"
log "   create_model (first build)  $(since "$s")s"
for run in $(seq 1 "$RUNS"); do
    refresh8 model "run $run, with the model"
    t=$(mart -c "SELECT extract(epoch FROM duration) FROM sluice.model_runs WHERE run_id = $REFRESH_RUN AND maintenance = 'incremental'")
    [ -n "$t" ] || die "8: run $REFRESH_RUN did not maintain the model incrementally"
    add 8_maint "$t"
    log "   run $run  its incremental maintenance ${t}s ($(mart -c "SELECT groups || ' touched values, ' || rows_inserted || ' groups rewritten' FROM sluice.model_runs WHERE run_id = $REFRESH_RUN"))"
    mart -c "VACUUM ANALYZE smm.monthly"
done
for run in $(seq 1 "$RUNS"); do
    STEP="8 rebuild_model monthly (run $run)"
    mart -c "CHECKPOINT"
    s=$(now)
    mart -c "SELECT sluice.rebuild_model('monthly')" >/dev/null
    t=$(since "$s"); add 8_rebuild "$t"
    log "   run $run  full rebuild  ${t}s"
done
STEP="8 check the model"
[ "$(mart -c "SET search_path = smm, pg_catalog;
              SELECT (SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM smm.monthly r)
                   = (SELECT md5(string_agg(r::text, '|' ORDER BY r::text)) FROM ($MODEL_Q) r)")" = t ] ||
    die "8: the model differs from its query"
STEP="8 cleanup"
mart -c "SELECT sluice.drop_model('monthly')" >/dev/null
mart -c "SELECT sluice.drop_pipeline('mm', drop_tables => true)" >/dev/null
mart -c "DROP SCHEMA IF EXISTS smm CASCADE; DROP SCHEMA IF EXISTS smm_models CASCADE" 2>/dev/null
live -c "DROP TABLE bench.mm"
t=$(since "$s8"); add 8_total "$t"
log "   scenario 8 took ${t}s"

# ---------------------------------------------------------------------------
# Scenario 9: a paused pipeline, live writing SPOOL_MB of WAL: the spool
# ---------------------------------------------------------------------------
# Own table bench.sp on live (the columns of bench.t, SPOOL_BASE rows) and
# two pipelines of it: sp (schema ssp), drained into the datamart's spool
# while paused, and sn (schema ssn), paused the same way and never drained:
# the old behaviour (what pg_sluice.spool_limit = 0 gives), live keeping
# every byte of WAL for its slot. Both pause on an error expectation (b <>
# 'bad') broken by one row. Then rounds until live has written SPOOL_MB of
# WAL: one transaction of SPOOL_ROWS inserts and an update of 2% of the rows
# of bench.sp, then a filler table outside the publication (bench.churn,
# ~1 kB of WAL a row) loaded and truncated, a CHECKPOINT on live (its
# running_xacts record lets a slot's restart_lsn move; live's background
# writer logs one every 15 s anyway), then sluice.drain('sp') (timed: it
# moves the slot to what the previous drain committed, then spools up to
# now). Retained WAL of each slot (pg_current_wal_lsn - restart_lsn) is
# sampled before and after every drain; its maximum for sp must stay under
# pg_sluice.spool_limit. Then the expectations are dropped, both resumed and
# refreshed (timed): sp applies its spool first, then the rest of its slot;
# sn decodes the whole backlog from its slot. Both copies are checked
# against live.
SPOOL_MB=${SPOOL_MB:-$([ -n "${SMOKE:-}" ] && echo 48 || echo 1024)}
SPOOL_BASE=${SPOOL_BASE:-$([ -n "${SMOKE:-}" ] && echo 10000 || echo 100000)}
SPOOL_ROWS=${SPOOL_ROWS:-$([ -n "${SMOKE:-}" ] && echo 2000 || echo 10000)}
SPOOL_CHURN=${SPOOL_CHURN:-$([ -n "${SMOKE:-}" ] && echo 10000 || echo 50000)}
s9=$(now)
log "9  pipeline paused while live writes $SPOOL_MB MB of WAL: spooled (sp) vs kept by the slot (sn)"
STEP="9 load bench.sp"
live >/dev/null <<SQL
CREATE TABLE bench.sp (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);
$(gen_rows 1 "$SPOOL_BASE" bench.sp);
CREATE TABLE bench.churn (id bigint, pad text);
SQL
STEP="9 create_pipeline sp, sn"
for p in sp sn; do
    mart -c "SELECT sluice.create_pipeline('$p', 'live', ARRAY['bench.sp'], target_schema => 's$p')" >/dev/null
done
SPOOL_LIMIT=$(mart -c "LOAD 'pg_sluice'" -c "SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'pg_sluice.spool_limit'")
[[ $SPOOL_LIMIT =~ ^[0-9]+$ ]] && [ "$SPOOL_LIMIT" -gt 0 ] || die "9: pg_sluice.spool_limit is '$SPOOL_LIMIT'"
STEP="9 pause sp and sn"
declare -A EXP9
for p in sp sn; do EXP9[$p]=$(mart -c "SELECT sluice.expect_row_to_satisfy('s$p.sp', \$\$b <> 'bad'\$\$)"); done
live -c "INSERT INTO bench.sp VALUES (0, 0, 'bad', now(), 0)"
for p in sp sn; do
    mart -c "SELECT sluice.refresh('$p')" >/dev/null 2>&1 || true
    [ "$(mart -c "SELECT state FROM sluice.status WHERE pipeline = '$p'")" = paused ] || die "9: pipeline $p did not pause"
done
retained9() {  # slot -> bytes of WAL it keeps on live
    live -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'sluice_$1'"
}
MAXR_SP=0; MAXR_SN=0
sample9() {
    local r
    r=$(retained9 sp); [ "$r" -gt "$MAXR_SP" ] && MAXR_SP=$r
    r=$(retained9 sn); [ "$r" -gt "$MAXR_SN" ] && MAXR_SN=$r
    return 0
}
start9=$(live -c "SELECT pg_current_wal_lsn()")
written=0; round=0; next_id=$((SPOOL_BASE + 1))
while [ "$written" -lt $((SPOOL_MB * 1048576)) ]; do
    round=$((round + 1))
    STEP="9 round $round on live"
    live >/dev/null <<SQL
BEGIN;
$(gen_rows "$next_id" $((next_id + SPOOL_ROWS - 1)) bench.sp);
UPDATE bench.sp SET a = a + 1, d = d + 1 WHERE id % 50 = $((round % 50));
COMMIT;
INSERT INTO bench.churn SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, $SPOOL_CHURN) g;
TRUNCATE bench.churn;
CHECKPOINT;
SQL
    next_id=$((next_id + SPOOL_ROWS))
    sample9
    STEP="9 sluice.drain('sp') (round $round)"
    s=$(now)
    out=$(mart -c "SELECT transactions || ' transactions, ' || pg_size_pretty(bytes) FROM sluice.drain('sp')")
    t=$(since "$s"); add 9_drain "$t"
    sample9
    written=$(live -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start9')::bigint")
    log "   round $round: live wrote $((written / 1048576)) MB so far; drain ${t}s ($out); slot keeps sp $(( $(retained9 sp) / 1048576 )) MB, sn $(( $(retained9 sn) / 1048576 )) MB"
done
SPOOL_WRITTEN=$written
SPOOL_TXNS=$(mart -c "SELECT transactions FROM sluice.spool WHERE pipeline = 'sp'")
SPOOL_BYTES=$(mart -c "SELECT bytes FROM sluice.spool WHERE pipeline = 'sp'")
SPOOL_REL=$(mart -c "SELECT pg_total_relation_size('sluice._spool')")
log "   live wrote $((SPOOL_WRITTEN / 1048576)) MB of WAL in $round rounds; the slot kept at most: sp $((MAXR_SP / 1048576)) MB (spool_limit $((SPOOL_LIMIT / 1048576)) MB), sn $((MAXR_SN / 1048576)) MB"
log "   spool of sp: $SPOOL_TXNS transactions, $((SPOOL_BYTES / 1048576)) MB of messages, sluice._spool $((SPOOL_REL / 1048576)) MB on disk"
[ "$MAXR_SP" -lt "$SPOOL_LIMIT" ] || die "9: the slot of sp kept $MAXR_SP bytes, not under pg_sluice.spool_limit ($SPOOL_LIMIT)"
[ "$(mart -c "SELECT count(*) FROM ssp.sp WHERE id > $SPOOL_BASE")" = 0 ] || die "9: sp applied changes while paused"
STEP="9 resume and refresh sp, sn"
live_fp bench.sp
live -c "CHECKPOINT"
for p in sp sn; do
    mart -c "SELECT sluice.drop_expectation('s$p.sp', '${EXP9[$p]}')" >/dev/null
    mart -c "SELECT sluice.resume('$p')" >/dev/null
    mart -c "CHECKPOINT"
    sluice_refresh "$p"; add "9_apply_$p" "$LAST_T"
    log "   $p: resume + refresh ${LAST_T}s (transactions inserted updated deleted truncated: ${REFRESH_ROW//|/ })"
    check_copy "pg_sluice (s$p.sp)" $MART_PORT mart "s$p.sp"
done
[ "$(mart -c "SELECT transactions FROM sluice.spool WHERE pipeline = 'sp'")" = 0 ] || die "9: the spool of sp is not empty after its refresh"
STEP="9 cleanup"
for p in sp sn; do mart -c "SELECT sluice.drop_pipeline('$p', drop_tables => true)" >/dev/null; done
mart -c "DROP SCHEMA IF EXISTS ssp CASCADE; DROP SCHEMA IF EXISTS ssn CASCADE" 2>/dev/null
live -c "DROP TABLE bench.sp; DROP TABLE bench.churn"
live -c "CHECKPOINT"; mart -c "CHECKPOINT"
t=$(since "$s9"); add 9_total "$t"
log "   scenario 9 took ${t}s"

# ---------------------------------------------------------------------------
# Scenario 4: streaming lag (commit on live -> visible on the datamart)
# ---------------------------------------------------------------------------
# Measured three times (lag_run below): the worker on the walsender
# transport (pg_sluice.worker_transport = walsender, the default) with
# pgbench at 50 tps and at 1,000 tps, then on the SQL transport (polling
# every naptime) at 50 tps; native is measured alongside each time.
# pg_sluice's continuous worker (pipeline s) and a native subscription
# (stream_sub, enabled, streaming = on) replicate the same two tables at the
# same time: bench.load (pgbench writes it at a fixed rate: background load)
# and bench.probe (id, committed). A DO loop on live inserts probe i with
# committed = clock_timestamp() and commits it at once (PL/pgSQL COMMIT), one
# every 80-120 ms (random, so probes do not stay in phase with naptime).
# A DO loop on the datamart polls both copies of the probe table every ~1 ms
# and records in an UNLOGGED table the clock_timestamp() at which each id
# first showed up; lag = first_seen - committed. One machine, one clock.
# Both copies are in database mart (the native one as bench.probe, the name
# native replication needs) so that one poller sees both at the same instant.
STREAM_SECS=${STREAM_SECS:-$([ -n "${SMOKE:-}" ] && echo 5 || echo 30)}
[[ $STREAM_SECS =~ ^[1-9][0-9]*$ ]] || die "STREAM_SECS must be a positive integer"
NPROBES=$((STREAM_SECS * 10))
log "4  streaming lag: three measurements of $NPROBES probes over ~${STREAM_SECS}s each (pgbench 50 and 1,000 tps)"

STEP="4 restart the datamart with shared_preload_libraries = pg_sluice"
cat >>"$W/mart/postgresql.conf" <<CONF
# --- scenario 4: pg_sluice continuous mode ---
shared_preload_libraries = 'pg_sluice'
max_worker_processes = 16
pg_sluice.naptime = 50ms
CONF
pg_ctl -D "$W/mart" -l "$W/mart.log" -m fast -w -t 120 restart >/dev/null || die "could not restart the datamart (see mart.log)"
STREAM_SETTINGS=$(mart -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
  WHERE name IN ('shared_preload_libraries', 'max_worker_processes', 'pg_sluice.naptime', 'pg_sluice.batch_time',
                 'pg_sluice.batch_size', 'pg_sluice.worker_transport', 'max_logical_replication_workers')")

STEP="4 setup: tables, publication"
STREAM_DDL="CREATE TABLE bench.load (id int PRIMARY KEY, n bigint NOT NULL, t timestamptz NOT NULL);
CREATE TABLE bench.probe (id int PRIMARY KEY, committed timestamptz NOT NULL);"
live <<SQL
$STREAM_DDL
CREATE PUBLICATION stream_pub FOR TABLE bench.load, bench.probe;
SQL
mart >/dev/null <<SQL
CREATE SCHEMA bench;
$STREAM_DDL
SQL
cat >"$W/load.sql" <<'SQL'
\set id random(1, 2000)
INSERT INTO bench.load VALUES (:id, 1, clock_timestamp())
    ON CONFLICT (id) DO UPDATE SET n = bench.load.n + 1, t = excluded.t;
SQL

declare -A LAG_MIN_MEAN LAG_TPS LAG_DONE

# One lag measurement: pgbench at $1 tps on live, the worker on transport $2
# (pg_sluice.worker_transport), figures under key $3 (lag_<key>_p50 ...) and
# lag_native<suffix> for the native subscription measured at the same time.
# Pipeline s and subscription stream_sub are made for it and dropped after,
# and the tables emptied, so each measurement starts alike.
lag_run() {
local LOAD_TPS=$1 TRANSPORT=$2 KEY=$3 NKEY=$4
log "4  $KEY: $NPROBES probes over ~${STREAM_SECS}s, pgbench -R $LOAD_TPS on live; pg_sluice worker ($TRANSPORT transport) and native subscription at the same time"
STEP="4 $KEY: transport $TRANSPORT"
mart >/dev/null <<SQL
ALTER SYSTEM SET pg_sluice.worker_transport = '$TRANSPORT';
SELECT pg_reload_conf();
SQL
STEP="4 $KEY setup: pipeline s, subscription stream_sub"
mart >/dev/null <<SQL
SELECT sluice.create_pipeline('s', 'live', ARRAY['bench.load', 'bench.probe'], target_schema => 'st');
SELECT sluice.start('s');
CREATE SUBSCRIPTION stream_sub CONNECTION '$CONNINFO' PUBLICATION stream_pub WITH (copy_data = true, streaming = on);
CREATE UNLOGGED TABLE probe_seen (sys text, id int, seen timestamptz NOT NULL, PRIMARY KEY (sys, id));
SQL
mart <<SQL
$(poll_sql "SELECT count(*) = 2 AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'stream_sub'" "the native table sync to reach state r" 60)
$(poll_sql "SELECT state IN ('running', 'error') FROM sluice.status WHERE pipeline = 's'" "the pg_sluice worker to start" 60)
SQL
st=$(mart -c "SELECT state || coalesce(': ' || last_error, '') FROM sluice.status WHERE pipeline = 's'")
[ "$st" = running ] || die "pg_sluice worker for pipeline s is not running: $st"

STEP="4 $KEY: load, probes and poller"
POLL_SECS=$((STREAM_SECS * 3 / 2 + ($([ -n "${SMOKE:-}" ] && echo 10 || echo 30))))
# poller: ends when both copies have all NPROBES probes, or after POLL_SECS
mart >"$W/poller.out" 2>&1 <<SQL &
DO \$poll\$
DECLARE
  deadline timestamptz := clock_timestamp() + interval '$POLL_SECS s';
  ls int := 0; ln int := 0; m int;
BEGIN
  LOOP
    -- clock_timestamp() as each statement reads: after its snapshot, so
    -- after the probe's commit (a time taken once before both reads made
    -- the second copy's lag look up to one read shorter, even negative)
    WITH i AS (INSERT INTO probe_seen SELECT 'sluice', id, clock_timestamp() FROM st.probe WHERE id > ls RETURNING id)
      SELECT max(id) INTO m FROM i;
    ls := greatest(ls, m);
    WITH i AS (INSERT INTO probe_seen SELECT 'native', id, clock_timestamp() FROM bench.probe WHERE id > ln RETURNING id)
      SELECT max(id) INTO m FROM i;
    ln := greatest(ln, m);
    EXIT WHEN (ls >= $NPROBES AND ln >= $NPROBES) OR clock_timestamp() > deadline;
    PERFORM pg_sleep(0.001);
  END LOOP;
END
\$poll\$;
SQL
POLLER=$!
pgbench -n -h "$W" -p $LIVE_PORT -c $((LOAD_TPS > 200 ? 4 : 1)) -j $((LOAD_TPS > 200 ? 2 : 1)) -R $LOAD_TPS -T $((STREAM_SECS + 3)) -f "$W/load.sql" bench >"$W/pgbench.out" 2>&1 &
PGBENCH=$!
sleep 1
s=$(now)
live -c "DO \$probe\$
BEGIN
  FOR i IN 1..$NPROBES LOOP
    INSERT INTO bench.probe VALUES (i, clock_timestamp());
    COMMIT;
    PERFORM pg_sleep(0.08 + random() * 0.04);
  END LOOP;
END
\$probe\$"
log "   $NPROBES probes committed on live in $(since "$s")s"
wait $POLLER || { cat "$W/poller.out" >&2; die "the poller on the datamart failed"; }
wait $PGBENCH || { cat "$W/pgbench.out" >&2; die "pgbench on live failed"; }
LOAD_DONE=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pgbench.out")
LOAD_LAT=$(sed -n 's/^latency average = \(.*\)$/\1/p' "$W/pgbench.out")
log "   pgbench: ${LOAD_DONE:-?} transactions on bench.load (latency average ${LOAD_LAT:-?})"

read -r seen_s seen_n <<<"$(mart -F' ' -c "SELECT count(*) FILTER (WHERE sys = 'sluice'), count(*) FILTER (WHERE sys = 'native') FROM probe_seen")"
[ "$seen_s" = "$NPROBES" ] && [ "$seen_n" = "$NPROBES" ] ||
    die "probes seen on the datamart within ${POLL_SECS}s: pg_sluice $seen_s, native $seen_n of $NPROBES ($(mart -c "SELECT state || coalesce(': ' || last_error, '') FROM sluice.status WHERE pipeline = 's'"))"

# both copies must equal live (probe and load tables)
STEP="4 $KEY: check the copies"
PFP="SELECT count(*) || '/' || coalesce(sum(id), 0) || '/' || coalesce(sum(extract(epoch FROM committed)), 0) FROM"
LFP="SELECT count(*) || '/' || coalesce(sum(id), 0) || '/' || coalesce(sum(n), 0) || '/' || coalesce(sum(extract(epoch FROM t)), 0) FROM"
lp=$(live -c "$PFP bench.probe"); ll=$(live -c "$LFP bench.load")
mart <<SQL
$(poll_sql "($LFP st.load) = '$ll' AND ($LFP bench.load) = '$ll'" "both copies of bench.load to catch up" 60)
SQL
for tb in st bench; do
    [ "$(mart -c "$PFP $tb.probe")" = "$lp" ] || die "4 $KEY: $tb.probe differs from live's bench.probe"
done

read -r -a L <<<"$(mart -F' ' <<'SQL'
WITH lag AS (
  SELECT s.sys, extract(epoch FROM s.seen - p.committed) * 1000 AS ms
    FROM probe_seen s JOIN st.probe p USING (id)),
agg AS (
  SELECT sys, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS mx, min(ms) AS mn, avg(ms) AS av
    FROM lag GROUP BY sys)
SELECT a.p50, a.p99, a.mx, a.mn, a.av, b.p50, b.p99, b.mx, b.mn, b.av
  FROM agg a, agg b WHERE a.sys = 'sluice' AND b.sys = 'native';
SQL
)"
[ ${#L[@]} = 10 ] || die "4 $KEY: could not compute the lag percentiles"
awk -v a="${L[3]}" -v b="${L[8]}" 'BEGIN { exit !(a >= 0 && b >= 0) }' ||
    die "4 $KEY: negative lag (min pg_sluice ${L[3]} ms, native ${L[8]} ms): clock or measurement error"
add "lag_${KEY}_p50" "${L[0]}"; add "lag_${KEY}_p99" "${L[1]}"; add "lag_${KEY}_max" "${L[2]}"
add "lag_${NKEY}_p50" "${L[5]}"; add "lag_${NKEY}_p99" "${L[6]}"; add "lag_${NKEY}_max" "${L[7]}"
LAG_MIN_MEAN[$KEY]="$(num "${L[3]}" 1) / $(num "${L[4]}" 1)"; LAG_MIN_MEAN[$NKEY]="$(num "${L[8]}" 1) / $(num "${L[9]}" 1)"
LAG_TPS[$KEY]=$LOAD_TPS; LAG_DONE[$KEY]=${LOAD_DONE:-?}
log "   pg_sluice lag ms: p50 $(num "${L[0]}" 1)  p99 $(num "${L[1]}" 1)  max $(num "${L[2]}" 1)  min $(num "${L[3]}" 1)  mean $(num "${L[4]}" 1)"
log "   native    lag ms: p50 $(num "${L[5]}" 1)  p99 $(num "${L[6]}" 1)  max $(num "${L[7]}" 1)  min $(num "${L[8]}" 1)  mean $(num "${L[9]}" 1)"


# stop the worker: refresh works again afterwards (and finds nothing left)
STEP="4 $KEY: sluice.stop and a final refresh"
[ "$(mart -c "SELECT sluice.stop('s')")" = t ] || die "sluice.stop('s') did not report a streaming pipeline"
row=$(mart -c "SELECT rows_inserted + rows_updated + rows_deleted FROM sluice.refresh('s')")
[ "$row" = 0 ] || die "4 $KEY: refresh after sluice.stop applied $row rows, expected 0 (the worker had caught up)"
mart >/dev/null <<SQL
SELECT sluice.drop_pipeline('s', drop_tables => true);
DROP SUBSCRIPTION stream_sub;
DROP TABLE probe_seen;
TRUNCATE bench.load, bench.probe;
SQL
live -c "TRUNCATE bench.load, bench.probe" >/dev/null
}

# the walsender transport (the default) at 50 and 1,000 tps; the SQL
# transport (polling every naptime) at 50 tps, as before it
lag_run 50 walsender ws50 native50
lag_run 1000 walsender ws1000 native1000
lag_run 50 sql sql50 nativesql50

# ---------------------------------------------------------------------------
# Scenario 10: the worker pool (issue 19)
# ---------------------------------------------------------------------------
# POOL_PIPES pipelines (default 50, SMOKE 6), each reading its own schema of
# live's database bench (POOL_TABLES tables, default 20, SMOKE 3, plus a probe
# table), streamed by the default pool of pg_sluice.max_workers = 8 workers
# over the walsender transport.
#  a. memory per idle pipeline: the pipelines are started in three steps (a
#     fifth, half, all of them); once all started ones are caught up and idle,
#     the PSS and RssAnon of the pool's worker processes are summed (from
#     /proc/<pid>/smaps_rollup and status); the increase per pipeline between
#     steps is the memory an idle pipeline costs (flat: the same at each step).
#  b. lag under load: pgbench at POOL_TPS (default 500, SMOKE 100) upserts rows
#     of random tables of all schemas for POOL_SECS (default 30, SMOKE 5); a DO
#     loop on live commits one probe row into each schema's probe table in turn
#     (one commit every ~10 ms); a poller on the datamart (every ~20 ms) records
#     when each probe first shows in pg_sluice's copy and in the native
#     reference's, measured at the same time: ONE native subscription of all
#     the schemas (one apply worker for all of them, in schemas s_<i> of
#     database mart). Lag p99 per pipeline; reported: the largest p99 over the
#     pipelines (target: under 2 s), and p50 / p99 / max over all probes.
POOL_PIPES=${POOL_PIPES:-$([ -n "${SMOKE:-}" ] && echo 6 || echo 50)}
POOL_TABLES=${POOL_TABLES:-$([ -n "${SMOKE:-}" ] && echo 3 || echo 20)}
POOL_SECS=${POOL_SECS:-$([ -n "${SMOKE:-}" ] && echo 5 || echo 30)}
POOL_TPS=${POOL_TPS:-$([ -n "${SMOKE:-}" ] && echo 100 || echo 500)}
for v in POOL_PIPES POOL_TABLES POOL_SECS POOL_TPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
log "10 worker pool: $POOL_PIPES pipelines × $POOL_TABLES tables, 8 workers, pgbench $POOL_TPS tps for ${POOL_SECS}s"

STEP="10 restart live and the datamart with room for $POOL_PIPES walsenders, slots and origins"
cat >>"$W/live/postgresql.conf" <<CONF
# --- scenario 10: one slot, one walsender and one connection per pipeline ---
max_replication_slots = $((POOL_PIPES + 30))
max_wal_senders = $((POOL_PIPES + 30))
max_connections = $((POOL_PIPES * 2 + 100))
CONF
pg_ctl -D "$W/live" -l "$W/live.log" -m fast -w -t 120 restart >/dev/null || die "could not restart live (see live.log)"
# the datamart: one replication origin per pipeline (max_replication_slots bounds them)
cat >>"$W/mart/postgresql.conf" <<CONF
# --- scenario 10: one replication origin per pipeline ---
max_replication_slots = $((POOL_PIPES + 30))
CONF
pg_ctl -D "$W/mart" -l "$W/mart.log" -m fast -w -t 120 restart >/dev/null || die "could not restart the datamart (see mart.log)"
mart >/dev/null <<SQL
ALTER SYSTEM SET pg_sluice.worker_transport = 'walsender';
SELECT pg_reload_conf();
SQL

STEP="10 setup: $POOL_PIPES schemas × $POOL_TABLES tables on live and datamart"
POOL_DDL="DO \$d\$
BEGIN
  FOR i IN 1..$POOL_PIPES LOOP
    EXECUTE format('CREATE SCHEMA %I', 's_' || i);
    EXECUTE format('CREATE TABLE %I.probe (r int PRIMARY KEY, committed timestamptz NOT NULL)', 's_' || i);
    FOR j IN 1..$POOL_TABLES LOOP
      EXECUTE format('CREATE TABLE %I.%I (id int PRIMARY KEY, n bigint NOT NULL, t timestamptz NOT NULL)', 's_' || i, 't_' || j);
    END LOOP;
  END LOOP;
END
\$d\$;"
live >/dev/null <<SQL
$POOL_DDL
SELECT format('CREATE PUBLICATION pool_pub FOR TABLES IN SCHEMA %s', string_agg(format('%I', 's_' || i), ', '))
  FROM generate_series(1, $POOL_PIPES) i \gexec
SQL
mart >/dev/null <<SQL
$POOL_DDL
SQL
s=$(now)
for i in $(seq 1 $POOL_PIPES); do
    mart -c "SELECT sluice.create_pipeline('pool_$i', 'live',
               ARRAY(SELECT format('s_$i.%I', 't_' || j) FROM generate_series(1, $POOL_TABLES) j) || 's_$i.probe'::text,
               target_schema => 'p_$i')" >/dev/null
done
log "   $POOL_PIPES pipelines created in $(since "$s")s"

# the pool's processes: PSS and RssAnon (kB), summed
pool_mem() {
    local pids pss=0 anon=0 n=0 p
    pids=$(mart -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_sluice worker' AND application_name = 'pg_sluice worker'")
    for p in $pids; do
        [ -r /proc/$p/smaps_rollup ] || continue
        pss=$((pss + $(awk '/^Pss:/ { print $2 }' /proc/$p/smaps_rollup)))
        anon=$((anon + $(awk '/^RssAnon:/ { print $2 }' /proc/$p/status)))
        n=$((n + 1))
    done
    echo "$n $pss $anon"
}
STEP="10a memory per idle pipeline"
POOL_STEPS="$(( (POOL_PIPES + 4) / 5 )) $(( (POOL_PIPES + 1) / 2 )) $POOL_PIPES"
started=0; POOL_MEM_ROWS=""; prev_m=0; prev_pss=0; prev_anon=0
for m in $POOL_STEPS; do
    [ "$m" -gt "$started" ] || continue
    for i in $(seq $((started + 1)) "$m"); do mart -c "SELECT sluice.start('pool_$i')" >/dev/null; done
    started=$m
    mart <<SQL
$(poll_sql "SELECT count(*) = $m AND bool_and(state = 'running' AND lag_bytes = 0) FROM sluice.status WHERE pipeline LIKE 'pool%' AND mode = 'continuous'" "$m pipelines to run, caught up" 120)
SQL
    sleep 3
    read -r nw pss anon <<<"$(pool_mem)"
    per=$(awk -v p="$pss" -v m="$m" 'BEGIN { printf "%.0f", p / m }')
    if [ "$prev_m" -gt 0 ]; then
        inc_pss=$(awk -v a="$pss" -v b="$prev_pss" -v m="$m" -v n="$prev_m" 'BEGIN { printf "%.0f", (a - b) / (m - n) }')
        inc_anon=$(awk -v a="$anon" -v b="$prev_anon" -v m="$m" -v n="$prev_m" 'BEGIN { printf "%.0f", (a - b) / (m - n) }')
    else
        inc_pss="-"; inc_anon="-"
    fi
    log "   $m idle pipelines: $nw workers, PSS $((pss / 1024)) MB ($per kB per pipeline), RssAnon $((anon / 1024)) MB; per pipeline added: PSS $inc_pss kB, RssAnon $inc_anon kB"
    POOL_MEM_ROWS="$POOL_MEM_ROWS$m|$nw|$pss|$anon|$per|$inc_pss|$inc_anon
"
    prev_m=$m; prev_pss=$pss; prev_anon=$anon
done

STEP="10b native reference: one subscription of all the schemas"
mart >/dev/null <<SQL
-- the tables are empty yet (the load starts below): nothing to copy
CREATE SUBSCRIPTION pool_sub CONNECTION '$CONNINFO' PUBLICATION pool_pub WITH (copy_data = false, streaming = on);
SQL
mart <<SQL
$(poll_sql "SELECT count(*) = $((POOL_PIPES * (POOL_TABLES + 1))) AND bool_and(r.srsubstate = 'r') FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = 'pool_sub'" "the native table sync of all the schemas" 300)
SQL
# every probe, in both copies
mart >/dev/null <<SQL
CREATE UNLOGGED TABLE pool_seen (sys text, i int, r int, seen timestamptz NOT NULL, PRIMARY KEY (sys, i, r));
SELECT format('CREATE VIEW pool_probes AS %s',
              string_agg(format('SELECT %L AS sys, %s AS i, r, committed FROM %I.probe', 'sluice', i, 'p_' || i)
                         || ' UNION ALL ' ||
                         format('SELECT %L, %s, r, committed FROM %I.probe', 'native', i, 's_' || i), ' UNION ALL '))
  FROM generate_series(1, $POOL_PIPES) i \gexec
SQL

STEP="10b load, probes and poller"
cat >"$W/pool_load.sql" <<SQL
\\set s random(1, $POOL_PIPES)
\\set t random(1, $POOL_TABLES)
\\set id random(1, 1000)
INSERT INTO s_:s.t_:t AS x VALUES (:id, 1, clock_timestamp()) ON CONFLICT (id) DO UPDATE SET n = x.n + 1, t = excluded.t;
SQL
POOL_POLL_SECS=$((POOL_SECS * 3 + 60))
mart -c "CREATE TABLE pool_expected (value int); INSERT INTO pool_expected VALUES (0)" >/dev/null
mart >"$W/pool_poller.out" 2>&1 <<SQL &
DO \$poll\$
DECLARE
  deadline timestamptz := clock_timestamp() + interval '$POOL_POLL_SECS s';
  want int;
  got int := 0;
  ls int[] := array_fill(0, ARRAY[$POOL_PIPES]);
  ln int[] := array_fill(0, ARRAY[$POOL_PIPES]);
  rec record;
BEGIN
  LOOP
    -- only probes newer than the last seen of each copy (each copy applies a
    -- schema's probes in commit order)
    FOR rec IN
      WITH ins AS (
        INSERT INTO pool_seen
        SELECT sys, i, r, clock_timestamp() FROM pool_probes p
         WHERE p.r > CASE p.sys WHEN 'sluice' THEN ls[p.i] ELSE ln[p.i] END
        RETURNING sys, i, r)
      SELECT sys, i, max(r) AS m, count(*) AS n FROM ins GROUP BY sys, i
    LOOP
      IF rec.sys = 'sluice' THEN ls[rec.i] := rec.m; ELSE ln[rec.i] := rec.m; END IF;
      got := got + rec.n;
    END LOOP;
    SELECT value INTO want FROM pool_expected;
    EXIT WHEN (want > 0 AND got >= 2 * want) OR clock_timestamp() > deadline;
    PERFORM pg_sleep(0.02);
  END LOOP;
END
\$poll\$;
SQL
POOLPOLLER=$!
# CPU (utime + stime from /proc) of the pool's workers and their walsenders on
# live, and of the native apply worker and its walsender, over the probe window
cpu_of() {  # pids -> summed utime+stime in clock ticks
    local t=0 p
    for p in $*; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{ print $14 + $15 }' /proc/$p/stat))); done
    echo "$t"
}
POOL_PW=$(mart -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_sluice worker' AND application_name = 'pg_sluice worker'")
POOL_NA=$(mart -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'logical replication worker'")
POOL_WS=$(live -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name <> 'pool_sub'")
POOL_NWS=$(live -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = 'pool_sub'")
POOL_RUN0=$(mart -c "SELECT coalesce(max(run_id), 0) FROM sluice._run")
pgbench -n -h "$W" -p $LIVE_PORT -c 4 -j 2 -R $POOL_TPS -T $((POOL_SECS + 3)) -f "$W/pool_load.sql" bench >"$W/pool_pgbench.out" 2>&1 &
POOLBENCH=$!
sleep 1
s=$(now)
read -r cpw0 cna0 cws0 cnws0 <<<"$(cpu_of $POOL_PW) $(cpu_of $POOL_NA) $(cpu_of $POOL_WS) $(cpu_of $POOL_NWS)"
live -c "DO \$probe\$
DECLARE
  k int := 0;
  stop_at timestamptz := clock_timestamp() + interval '$POOL_SECS s';
BEGIN
  WHILE clock_timestamp() < stop_at LOOP
    k := k + 1;
    FOR i IN 1..$POOL_PIPES LOOP
      EXECUTE format('INSERT INTO %I.probe VALUES (\$1, clock_timestamp())', 's_' || i) USING k;
      COMMIT;
      PERFORM pg_sleep(0.01);
    END LOOP;
  END LOOP;
END
\$probe\$"
nprobes=$(live -c "SELECT count(*) FROM s_1.probe")
mart -c "UPDATE pool_expected SET value = $((nprobes * POOL_PIPES))" >/dev/null
POOL_WIN=$(since "$s")
read -r cpw1 cna1 cws1 cnws1 <<<"$(cpu_of $POOL_PW) $(cpu_of $POOL_NA) $(cpu_of $POOL_WS) $(cpu_of $POOL_NWS)"
log "   $((nprobes * POOL_PIPES)) probes committed on live in ${POOL_WIN}s"
wait $POOLPOLLER || { cat "$W/pool_poller.out" >&2; die "the poller on the datamart failed"; }
wait $POOLBENCH || { cat "$W/pool_pgbench.out" >&2; die "pgbench on live failed"; }
POOL_DONE=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pool_pgbench.out")
# changes pg_sluice applied in the window (each one a row of the load or a
# probe; the native copy applies the same), and the batches that held them
read -r POOL_CHANGES POOL_BATCHES <<<"$(mart -F' ' -c "SELECT coalesce(sum(rows_inserted + rows_updated + rows_deleted), 0), count(*) FROM sluice._run WHERE run_id > $POOL_RUN0")"
HZ=$(getconf CLK_TCK)
POOL_CPU=$(awk -v a="$cpw0" -v b="$cpw1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }')
POOL_NCPU=$(awk -v a="$cna0" -v b="$cna1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }')
POOL_WSCPU=$(awk -v a="$cws0" -v b="$cws1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }')
POOL_NWSCPU=$(awk -v a="$cnws0" -v b="$cnws1" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }')
per1k() { awk -v c="$1" -v n="$POOL_CHANGES" 'BEGIN { if (n > 0) printf "%.3f", c * 1000 / n; else print "-" }'; }
log "   CPU s in the ${POOL_WIN}s window, $POOL_CHANGES changes in $POOL_BATCHES batches: pool workers $POOL_CPU ($(per1k "$POOL_CPU") per 1,000 changes), native apply $POOL_NCPU ($(per1k "$POOL_NCPU")); live: their $(echo $POOL_WS | wc -w) walsenders $POOL_WSCPU, native's $POOL_NWSCPU"
read -r seen_s seen_n <<<"$(mart -F' ' -c "SELECT count(*) FILTER (WHERE sys = 'sluice'), count(*) FILTER (WHERE sys = 'native') FROM pool_seen")"
[ "$seen_s" = $((nprobes * POOL_PIPES)) ] && [ "$seen_n" = $((nprobes * POOL_PIPES)) ] ||
    die "10: probes seen on the datamart within ${POOL_POLL_SECS}s: pg_sluice $seen_s, native $seen_n of $((nprobes * POOL_PIPES))"

STEP="10 check the copies"
pool_fp() {  # schema prefix -> count/sum of every load table, per schema
    local pre=$1
    $2 -c "SELECT string_agg(format('SELECT %s AS i, count(*) AS c, coalesce(sum(n), 0) AS n FROM %I.%I', i, '${pre}' || i, 't_' || j), ' UNION ALL ')
             FROM generate_series(1, $POOL_PIPES) i, generate_series(1, $POOL_TABLES) j" |
    { read -r q; $2 -c "SELECT string_agg(i || ':' || c || '/' || n, ',' ORDER BY i) FROM (SELECT i, sum(c) AS c, sum(n) AS n FROM ($q) u GROUP BY i) g"; }
}
lfp=$(pool_fp s_ live)
for try in $(seq 1 120); do
    [ "$(pool_fp p_ mart)" = "$lfp" ] && [ "$(pool_fp s_ mart)" = "$lfp" ] && break
    sleep 1
done
[ "$(pool_fp p_ mart)" = "$lfp" ] || die "10: pg_sluice's copies differ from live"
[ "$(pool_fp s_ mart)" = "$lfp" ] || die "10: the native copies differ from live"

read -r -a PL <<<"$(mart -F' ' <<'SQL'
WITH lag AS (
  SELECT s.sys, s.i, extract(epoch FROM s.seen - p.committed) * 1000 AS ms
    FROM pool_seen s JOIN pool_probes p USING (sys, i, r)),
per AS (
  SELECT sys, i, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 FROM lag GROUP BY sys, i),
tot AS (
  SELECT sys, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS mx, min(ms) AS mn FROM lag GROUP BY sys)
SELECT (SELECT max(p99) FROM per WHERE sys = 'sluice'), a.p50, a.p99, a.mx, a.mn,
       (SELECT max(p99) FROM per WHERE sys = 'native'), b.p50, b.p99, b.mx, b.mn
  FROM tot a, tot b WHERE a.sys = 'sluice' AND b.sys = 'native';
SQL
)"
[ ${#PL[@]} = 10 ] || die "10: could not compute the lag percentiles"
awk -v a="${PL[4]}" -v b="${PL[9]}" 'BEGIN { exit !(a >= 0 && b >= 0) }' ||
    die "10: negative lag (min pg_sluice ${PL[4]} ms, native ${PL[9]} ms): clock or measurement error"
add pool_maxp99 "${PL[0]}"; add pool_p50 "${PL[1]}"; add pool_p99 "${PL[2]}"; add pool_max "${PL[3]}"
add pool_nmaxp99 "${PL[5]}"; add pool_np50 "${PL[6]}"; add pool_np99 "${PL[7]}"; add pool_nmax "${PL[8]}"
POOL_NPROBES=$((nprobes * POOL_PIPES))
POOL_WORKERS_SEEN=$(mart -c "SELECT count(DISTINCT worker) FROM sluice.workers")
log "   pg_sluice lag ms: max p99 over pipelines $(num "${PL[0]}" 1); all probes p50 $(num "${PL[1]}" 1)  p99 $(num "${PL[2]}" 1)  max $(num "${PL[3]}" 1)"
log "   native    lag ms: max p99 over schemas $(num "${PL[5]}" 1); all probes p50 $(num "${PL[6]}" 1)  p99 $(num "${PL[7]}" 1)  max $(num "${PL[8]}" 1)"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
STEP="report"
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
pad() { local s=$1 w=$2; printf '%s%*s' "$s" $((w > ${#s} ? w - ${#s} : 0)) ''; }
W1=60 W2=24 W3=24 W4=44
row() { printf '%s | %s | %s | %s | %s\n' "$(pad "$1" $W1)" "$(pad "$2" $W2)" "$(pad "$3" $W3)" "$(pad "$4" $W4)" "$5"; }
rule() { printf '%s\n' "$(printf '%*s' $((W1 + W2 + W3 + W4 + 24)) '' | tr ' ' '-')"; }

echo
echo "================================ pg_sluice benchmark ================================"
echo "PostgreSQL : $PG_VERSION"
echo "pg_sluice  : $SLUICE_VERSION, library $SLUICE_LIB"
echo "machine    : $(nproc) cores ($CPU_MODEL), ${MEM_GB} GB RAM; load average at start $LOAD_START, at end $LOAD_END"
echo "servers    : two local clusters on 127.0.0.1, live :$LIVE_PORT, datamart :$MART_PORT (databases mart = pg_sluice, native = subscriber,"
echo "             pgl = pglogical subscriber, dump / d7 = pg_dump and COPY targets)"
echo "live       : $LIVE_SETTINGS"
echo "datamart   : $MART_SETTINGS"
if [ $PGL = 1 ]; then
    echo "pglogical  : $PGL_VERSION, preloaded on both servers; the datamart restarted after scenario 2 with"
    echo "             shared_preload_libraries = '' and max_worker_processes = 8 (pglogical.synchronous_commit = off, its default)"
else
    echo "pglogical  : not installed ($(pg_config --pkglibdir)/pglogical.so missing): its figures are skipped"
fi
echo "             fsync and synchronous_commit at their defaults (on); native subscriptions use their default synchronous_commit = off"
echo "table      : bench.t (id bigint primary key, a int, b text, c timestamptz, d numeric), ~$(commas "$N") rows base"
echo "runs       : $RUNS per figure${SMOKE:+ (SMOKE)}; figures: median (min–max) wall seconds measured around one psql call,"
echo "             which includes psql start + connect (${PSQL_OVERHEAD}s median for SELECT 1)"
echo
row "scenario" "pg_sluice" "native" "other" "native/sluice"
rule
n=$(commas "$N"); u=$(commas "$UPD")
pglcell() {  # key rows -> pglogical's "median (min–max), rate" or why there is none
    if [ $PGL = 1 ]; then echo "$(cell "$1"), $(rate "$2" "$1")"; else echo "pglogical not installed"; fi
}
for size in $N_SMALL $N; do
    k=1_$size
    row "1  initial copy, $(commas "$size") rows (s)" "$(cell ${k}_sluice)" "$(cell ${k}_native)" "pg_dump|psql $(cell ${k}_dump)" "$(ratio ${k}_native ${k}_sluice)"
    row "     throughput" "$(rate "$size" ${k}_sluice)" "$(rate "$size" ${k}_native)" "pg_dump|psql $(rate "$size" ${k}_dump)" \
        "$(ratio ${k}_dump ${k}_sluice) pg_dump|psql/sluice"
    row "     pg_dump -Fc | pg_restore (s)" "" "" "$(cell ${k}_dumpfc), $(rate "$size" ${k}_dumpfc)" "$(ratio ${k}_dumpfc ${k}_sluice) other/sluice"
    row "     pg_sluice chunked: create_pipeline + copy_tables (s)" "$(cell ${k}_chunked)" "" "" "$(ratio ${k}_native ${k}_chunked) native/chunked"
    row "     COPY TO | COPY FROM, key created first (s)" "" "" "$(cell ${k}_raw), $(rate "$size" ${k}_raw)" "$(ratio ${k}_raw ${k}_sluice) other/sluice"
    row "     pglogical create_subscription (s)" "" "" "$(pglcell ${k}_pgl "$size")" "$(ratio ${k}_pgl ${k}_sluice) pglogical/sluice"
done
pglrow() {  # scenario rows
    row "     pglogical catch-up (s)" "" "" "$(pglcell "${1}_pgl" "$2")" "$(ratio "${1}_pgl" "${1}_sluice") pglogical/sluice"
}
row "2a backlog 1 txn × $n INSERT (s)" "$(cell 2a_sluice)" "$(cell 2a_native)" "pg_recvlogical (default) $(cell 2a_recv)" "$(ratio 2a_native 2a_sluice)"
row "     throughput" "$(rate "$N" 2a_sluice)" "$(rate "$N" 2a_native)" "pg_recvlogical (default) $(rate "$N" 2a_recv)" ""
row "     ceiling: pg_recvlogical binary, decoding mem $SDWM (s)" "" "" "$(cell 2a_recvb), $(rate "$N" 2a_recvb)" "$(ratio 2a_recvb 2a_sluice) of ceiling rate"
row "     ceiling: SQL fetch only, binary, $SDWM (s)" "" "" "$(cell 2a_fetch), $(rate "$N" 2a_fetch)" "$(ratio 2a_fetch 2a_sluice) of ceiling rate"
pglrow 2a "$N"
row "     slot mover after the commit (s)" "$(cell 2a_mover)" "" "" ""
row "     next refresh, once the mover is done (s)" "$(cell 2a_adv)" "" "" ""
row "2b backlog $(commas "$TXNS") txn × $(commas "$PER_TXN") INSERT (s)" "$(cell 2b_sluice)" "$(cell 2b_native)" "" "$(ratio 2b_native 2b_sluice)"
row "     throughput" "$(rate "$N" 2b_sluice)" "$(rate "$N" 2b_native)" "" ""
pglrow 2b "$N"
row "     slot mover after the commit (s)" "$(cell 2b_mover)" "" "" ""
row "     next refresh, once the mover is done (s)" "$(cell 2b_adv)" "" "" ""
row "2c backlog $u UPDATE, 1 statement (s)" "$(cell 2c_sluice)" "$(cell 2c_native)" "" "$(ratio 2c_native 2c_sluice)"
row "     throughput" "$(rate "$UPD" 2c_sluice)" "$(rate "$UPD" 2c_native)" "" ""
pglrow 2c "$UPD"
row "     slot mover after the commit (s)" "$(cell 2c_mover)" "" "" ""
row "     next refresh, once the mover is done (s)" "$(cell 2c_adv)" "" "" ""
row "2d backlog $u DELETE, 1 statement (s)" "$(cell 2d_sluice)" "$(cell 2d_native)" "" "$(ratio 2d_native 2d_sluice)"
row "     throughput" "$(rate "$UPD" 2d_sluice)" "$(rate "$UPD" 2d_native)" "" ""
pglrow 2d "$UPD"
row "     slot mover after the commit (s)" "$(cell 2d_mover)" "" "" ""
row "     next refresh, once the mover is done (s)" "$(cell 2d_adv)" "" "" ""
for size in $MEM_SMALL $MEM_BIG; do
    row "3  peak RssAnon MB, 1 txn × $(commas "$size")" "" "" "" ""
    row "     datamart: applying process" "$(cell "m${size}_sluice_anon" 1)" "$(cell "m${size}_native_anon" 1)" \
        "VmHWM $(cell "m${size}_sluice_hwm" 0) / $(cell "m${size}_native_hwm" 0)" "$(ratio "m${size}_native_anon" "m${size}_sluice_anon")"
    row "     live: decoding process(es)" "$(cell "m${size}_sluice_dec_anon" 1)" "$(cell "m${size}_native_dec_anon" 1)" \
        "VmHWM $(cell "m${size}_sluice_dec_hwm" 0) / $(cell "m${size}_native_dec_hwm" 0)" "$(ratio "m${size}_native_dec_anon" "m${size}_sluice_dec_anon")"
done
lagcell() { echo "$(num "$(med "lag_${1}_p50")" 1) / $(num "$(med "lag_${1}_p99")" 1) / $(num "$(med "lag_${1}_max")" 1)"; }
for k in ws50:native50 ws1000:native1000 sql50:nativesql50; do
    sk=${k%%:*}; nk=${k##*:}
    case $sk in ws*) tr="walsender transport" ;; *) tr="SQL transport, naptime 50ms" ;; esac
    row "4  lag p50 / p99 / max (ms), pgbench ${LAG_TPS[$sk]:-?} tps" "$(lagcell "$sk")" "$(lagcell "$nk")" "$NPROBES probes, $tr (${LAG_DONE[$sk]:-?} txns)" \
        "$(ratio "lag_${nk}_p50" "lag_${sk}_p50") / $(ratio "lag_${nk}_p99" "lag_${sk}_p99") / $(ratio "lag_${nk}_max" "lag_${sk}_max")"
    row "     min / mean (ms)" "${LAG_MIN_MEAN[$sk]:--}" "${LAG_MIN_MEAN[$nk]:--}" "" ""
done
row "10 pool: $POOL_PIPES pipelines × $POOL_TABLES tables, 8 workers; lag (ms)" "" "one subscription" "pgbench $POOL_TPS tps, $POOL_NPROBES probes" ""
row "     largest p99 over the pipelines" "$(num "$(med pool_maxp99)" 1)" "$(num "$(med pool_nmaxp99)" 1)" "target < 2000" "$(ratio pool_nmaxp99 pool_maxp99)"
row "     all probes p50 / p99 / max" "$(num "$(med pool_p50)" 1) / $(num "$(med pool_p99)" 1) / $(num "$(med pool_max)" 1)" \
    "$(num "$(med pool_np50)" 1) / $(num "$(med pool_np99)" 1) / $(num "$(med pool_nmax)" 1)" "${POOL_DONE:-?} txns, $POOL_WORKERS_SEEN workers" \
    "$(ratio pool_np50 pool_p50) / $(ratio pool_np99 pool_p99) / $(ratio pool_nmax pool_max)"
row "     CPU s per 1,000 changes (datamart; live's walsenders)" "$(per1k "$POOL_CPU"); $(per1k "$POOL_WSCPU")" \
    "$(per1k "$POOL_NCPU"); $(per1k "$POOL_NWSCPU")" "$POOL_CHANGES changes, $POOL_BATCHES batches, ${POOL_WIN}s" \
    "$(awk -v a="$POOL_NCPU" -v b="$POOL_CPU" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')"
while IFS='|' read -r m nw pss anon per ipss ianon; do
    [ -n "$m" ] || continue
    row "10 $m idle pipelines: $nw workers, PSS / RssAnon (MB)" "$((pss / 1024)) / $((anon / 1024))" "" \
        "$per kB PSS per pipeline" "added per pipeline: PSS $ipss kB, RssAnon $ianon kB"
done <<<"$POOL_MEM_ROWS"
row "8  refresh after 1% of $(commas "$MODEL_ROWS") rows changed, no model (s)" "$(cell 8_plain)" "" "" ""
row "     with an incremental monthly model (s)" "$(cell 8_model)" "" "" "$(ratio 8_model 8_plain) with/without"
row "     its maintenance vs a full rebuild (s)" "$(cell 8_maint)" "" "rebuild_model $(cell 8_rebuild)" "$(ratio 8_maint 8_rebuild) incremental/full"
row "5  backlog 1 txn × $n INSERT, $NEXPECT row expectations (s)" "$(cell 5_expect)" "" "without $(cell 5_plain)" \
    "$(ratio 5_plain 5_expect) retained (without/with)"
row "     throughput" "$(rate "$N" 5_expect)" "" "without $(rate "$N" 5_plain)" ""
row "5b same, $NEXPECT cheap row expectations (s)" "$(cell 5_cheap)" "" "without $(cell 5_plain)" \
    "$(ratio 5_plain 5_cheap) retained (without/with)"
row "     throughput" "$(rate "$N" 5_cheap)" "" "without $(rate "$N" 5_plain)" ""
ms() { num "$(med "$1")" 1; }
row "6  scan $n rows (ms): current / as of v_old / v_new" "$(ms 6_scan_cur) / $(ms 6_scan_old) / $(ms 6_scan_new)" "" "plain table $(ms 6_scan_plain)" \
    "$(ratio 6_scan_cur 6_scan_plain) / $(ratio 6_scan_old 6_scan_plain) / $(ratio 6_scan_new 6_scan_plain) × plain"
row "     history bytes per superseded row" "${HIST_BPR:--} B" "" "$(commas "${HIST_ROWS:-0}") rows, $(num "$(awk -v b="${HIST_BYTES:-0}" 'BEGIN { print b / 1048576 }')" 2) MB" ""
row "     heap MB: sl.t (history) / sq.t (without)" "$(awk -v x="${SIZE_T:-0}" 'BEGIN { printf "%.1f", x / 1048576 }') / $(awk -v x="${SIZE_Q:-0}" 'BEGIN { printf "%.1f", x / 1048576 }')" "" \
    "plain $(awk -v x="${SIZE_PLAIN:-0}" 'BEGIN { printf "%.1f", x / 1048576 }')" "$(awk -v a="${SIZE_T:-0}" -v b="${SIZE_Q:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }') (history/without)"
row "6  refresh $(commas "$UPD6") UPDATE + $(commas "$DEL6") DELETE with history (s)" "$(cell 6_hist)" "" "without history $(cell 6_nohist)" \
    "$(ratio 6_hist 6_nohist) (with/without)"
faster7() {  # size [sluice|clu] -> (faster of the two dump / restore medians) / refresh median
    local a b r
    a=$(med "7_${1}_dump"); b=$(med "7_${1}_dumpfc"); r=$(med "7_${1}_${2:-sluice}")
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$r" ] || { echo "-"; return; }
    awk -v a="$a" -v b="$b" -v r="$r" 'BEGIN { m = (a < b ? a : b); if (r > 0) printf "%.1f", m / r; else print "-" }'
}
one() { local m; m=$(med "$1"); if [ -n "$m" ]; then num "$m"; else echo "-"; fi; }  # a figure measured once
for size in $BIG_SIZES; do
    k=7_$size
    row "7  refresh, 1% of $(commas "$size") rows updated (s)" "$(cell ${k}_sluice)" "" "pg_dump|psql $(cell ${k}_dump)" \
        "$(faster7 "$size") faster dump/restore ÷ refresh"
    row "     pg_dump -Fc | pg_restore (s)" "" "" "$(cell ${k}_dumpfc)" ""
    row "     live's decoding alone, the floor under a refresh (s)" "$(cell ${k}_sluice_decode)" "" "" "$(faster7 "$size" sluice_decode) at the floor"
    row "     next refresh (slot advance, s)" "$(cell ${k}_adv)" "" "" ""
    row "     refresh, 1% clustered: newest ids (s)" "$(cell ${k}_clu)" "" "" "$(faster7 "$size" clu) faster dump/restore ÷ refresh"
    row "     live's decoding alone, clustered (s)" "$(cell ${k}_clu_decode)" "" "" "$(faster7 "$size" clu_decode) at the floor"
    row "     once: initial copy; load on live / scenario total (s)" "$(one ${k}_copy)" "" "load $(one ${k}_load) / total $(one ${k}_total)" ""
    row "     sluice.verify (equal tables; s)" "$(cell ${k}_verify)" "" "pg_dump -t > /dev/null $(cell ${k}_pgdump)" \
        "$(ratio ${k}_verify ${k}_pgdump) (verify/pg_dump)"
    row "     sluice.verify, one row changed in the mart (s)" "$(one ${k}_verify1)" "" "found, by its key" ""
done
mb() { awk -v x="${1:-0}" 'BEGIN { printf "%.0f", x / 1048576 }'; }
row "9  paused, live wrote $(mb "$SPOOL_WRITTEN") MB of WAL: slot keeps at most (MB)" "$(mb "$MAXR_SP")" "" \
    "no spool $(mb "$MAXR_SN"); spool_limit $(mb "$SPOOL_LIMIT")" \
    "$(awk -v a="$MAXR_SN" -v b="$MAXR_SP" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }') (no spool/spool)"
row "     spool: transactions / MB of messages / MB on disk" "$SPOOL_TXNS / $(mb "$SPOOL_BYTES") / $(mb "$SPOOL_REL")" "" "" ""
row "     sluice.drain, each round (s)" "$(cell 9_drain)" "" "" ""
row "     resume + refresh: spool, then the slot (s)" "$(cell 9_apply_sp)" "" "no spool: the slot $(cell 9_apply_sn)" \
    "$(ratio 9_apply_sn 9_apply_sp) (no spool/spool)"
rule
echo "pg_sluice: SELECT * FROM sluice.refresh('p') (2*), sluice.create_pipeline (1). 3: the datamart backend running the refresh."
echo "native   : ALTER SUBSCRIPTION ENABLE until pg_replication_origin_progress(flush) >= live's WAL insert LSN taken"
echo "           inside the last load transaction just before COMMIT (1: CREATE SUBSCRIPTION until pg_subscription_rel = 'r')."
echo "3 (memory): datamart = the backend running sluice.refresh / the subscription's apply worker; live = the"
echo "           backend(s) serving pg_sluice's connections (the slot peek; with two-part decoding also the temporary"
echo "           slot's, peaks summed) / the subscription's walsender."
echo "           RssAnon = private memory, sampled every 20 ms; VmHWM (pg_sluice / native, MB) includes touched shared buffers."
echo "other    : 1: pg_dump -t bench.t | psql, pg_dump -Fc | pg_restore (both build the key after the load) and psql COPY TO |"
echo "           psql COPY FROM into a table created with its key first, each into an empty schema of database dump;"
echo "           pglogical.create_subscription (synchronize_data) until show_subscription_status = replicating and the"
echo "           table's local_sync_status is r/y. Order of all methods rotating between runs. Throughput row's last"
echo "           column: pg_dump|psql/sluice; other/sluice = that row's time / pg_sluice's (above 1: pg_sluice is faster)."
echo "           2a: pg_recvlogical (pgoutput, proto 1, default options: text, logical_decoding_work_mem default) to"
echo "           /dev/null from a slot created before the load, --endpos = the target LSN: decoding alone. Ceilings with"
echo "           pg_sluice's stream options (proto 2, streaming on, binary = true, logical_decoding_work_mem = pg_sluice.source_decoding_work_mem"
echo "           = $SDWM): pg_recvlogical (connection options=-c logical_decoding_work_mem), and the SQL fetch alone"
echo "           (\\copy of pg_logical_slot_peek_binary_changes up to live's flush LSN after the COMMIT, FORMAT binary, to"
echo "           /dev/null). Last column: ceiling time / pg_sluice time (pg_sluice rate as a share of the ceiling)."
if [ $PGL = 1 ]; then
    echo "pglogical: 2a-2d: pglogical.alter_subscription_enable until pg_replication_origin_progress('$PGL_ORIGIN', true) >="
    echo "           the same target LSN (same check as native); disabled (alter_subscription_disable) while the backlog"
    echo "           is written; order pg_sluice / native / pglogical rotating between runs. Last column: pglogical/sluice."
fi
echo "slot mover: from the refresh's return until live shows pg_sluice's slot confirmed at the run's end_lsn and no longer"
echo "           active: the background worker the commit started advances it over the backlog (pg_replication_slot_advance)."
echo "next refresh: the empty refresh that follows once the mover is done (a scheduled refresh comes later than that;"
echo "           bench/refresh_transport.pl times it right behind the mover). What is left of moving the slot for it."
echo "4 (lag)  : pg_sluice continuous worker (sluice.start) vs native subscription (streaming = on), running at the same"
echo "           time on the same probes: one row committed on live every 80-120 ms, committed = clock_timestamp() just"
echo "           before its COMMIT; lag = first time a poller on the datamart (every ~1 ms) saw the row - committed."
echo "           Datamart restarted for 4 with: $STREAM_SETTINGS"
echo "10 (pool): $POOL_PIPES pipelines, one schema of live's database bench each ($POOL_TABLES tables + a probe table), started on"
echo "           the pool of pg_sluice.max_workers = 8 (walsender transport). Memory: PSS and RssAnon of the pool's worker"
echo "           processes summed once the started pipelines are caught up and idle, at three counts; \"added per pipeline\" ="
echo "           the difference to the previous count / the pipelines added (flat = an idle pipeline costs a fixed amount)."
echo "           Lag: pgbench -R $POOL_TPS upserts random rows of all the tables; one probe committed per schema in turn every"
echo "           ~10 ms; a poller on the datamart (~20 ms) records when it shows in pg_sluice's copy and in the copy of one"
echo "           native subscription of all the schemas (one apply worker), at the same time. p99 per pipeline / per schema."
echo "5 (expect): the 2a workload refreshed with $NEXPECT row expectations on $SLUICE_TABLE (severity error; not_null b, c, d;"
echo "           between a, d; regex b; length b; row: c >= 2024-01-01, d = round(id * 1.37, 2), a = id % 100000) and,"
echo "           in \"other\", without any, back to back in every run (order alternating). Last column: without/with, the"
echo "           throughput retained (target >= 0.8, goal >= 0.9). sluice.quality checked: $NEXPECT × evaluated = N, failed = 0."
echo "5b (cheap): the same with $NEXPECT cheap ones instead (not_null id, a, b, c, d; between a (int), c (timestamptz);"
echo "           length b; row: a >= 0, id > 0): the framework's own cost, next to 5's regex and numeric predicates."
echo "6 (versions): sluice.keep_history('p') on sl.t; pipeline q copies the same table into sq.t without history. Per run, one"
echo "           transaction on live updates 1% of the rows (a, b, d) and deletes 0.1%; p and q refresh it (timed, order"
echo "           alternating). After run 1: scans (median of $SCAN_ROUNDS, psql \\timing, warm) of SELECT count(*), sum(id), sum(a),"
echo "           sum(length(b)), max(c), sum(d) over plain (CREATE TABLE AS of the current rows, no version column), sl.t,"
echo "           sl.t_at(v_old) (the version before that refresh) and sl.t_at(v_new); ratios to plain. History bytes per row ="
echo "           pg_total_relation_size('sl_history.t') (heap + index) / its rows (= rows updated + deleted)."
echo "7 (1% vs dump): own table bench.big and pipeline b, at $(commas "$N")$([ "$BIG_ROWS" -gt 0 ] && echo " and $(commas "$BIG_ROWS")") rows. Per run one"
echo "           transaction on live updates 1% of the rows (id % 100 = k: a, b, d, spread over every page); then, order"
echo "           rotating: sluice.refresh('b'); pg_dump -t bench.big | psql and pg_dump -Fc -t bench.big | pg_restore, each"
echo "           into a fresh database (pipe, no file; both build the primary key). Last column: the faster dump/restore"
echo "           median / the refresh median (issue target: >= 30 at 10,000,000 rows). Clustered: before the spread runs, the"
echo "           newest 1% of ids updated in one transaction and refreshed (same dump/restore medians: they copy everything)."
echo "9 (spool): own table bench.sp, pipelines sp (drained) and sn (never drained: what spool_limit = 0 gives), both paused"
echo "           by a broken error expectation. Rounds until live wrote SPOOL_MB: $(commas "$SPOOL_ROWS") inserts + an update of 2% of"
echo "           bench.sp in one transaction, $(commas "$SPOOL_CHURN") filler rows outside the publication (loaded, truncated), CHECKPOINT"
echo "           on live, sluice.drain('sp'); each slot's retained WAL (pg_current_wal_lsn - restart_lsn) sampled before and after"
echo "           every drain, maximum shown. Then both resumed and refreshed (timed) and checked against live."
echo "every timed step was followed by a check that the copy equals live (row count and per-column sums)."
STEP=""
