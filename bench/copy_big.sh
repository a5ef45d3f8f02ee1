#!/usr/bin/env bash
# The initial copy of one big table, three ways, in the same run: native
# CREATE SUBSCRIPTION ... copy_data (until pg_subscription_rel shows state r),
# sluice.create_pipeline with pg_sluice.initial_copy = snapshot, and
# initial_copy = chunked three ways: chunked0 (pg_sluice.copy_workers = 0,
# create_pipeline + CALL sluice.copy_tables, one session), chunkedN (N
# background copy workers, no CALL: sluice.copy_progress polled until
# finished).  The order of the methods rotates between runs; every copy is
# counted.  kill0 is chunked0 with kill -9 of the datamart's postmaster once
# half of the chunks committed and the next chunk's COPY runs on live,
# a restart (crash recovery included in its time) and CALL copy_tables
# again: it prints what was kept, the rows live read twice, and whether
# live and mart have equal checksums (compared after the timing).  Each method prints
# the rows live read from the table (pg_stat_user_tables): kill0's minus
# chunked0's is the work repeated.
#
#   bash bench/copy_big.sh                        # as a non-root user with pg_sluice installed
#   N=10000000 RUNS=3 bash bench/copy_big.sh      # the README's figures
#
# Environment: N (rows, default 1000000), RUNS (default 3), METHODS (default
# "native snapshot chunked1 chunked2"; chunked is chunked0; a method/rows,
# e.g. chunked1/500000, copies in chunks of that many rows), CHUNK_ROWS (default 100000), PGBIN (default
# Debian's PostgreSQL 15), LIVE_PORT / MART_PORT (default 26532 / 26533),
# EXTRA_CONF (lines appended to both postgresql.conf). Two throwaway clusters
# in a scratch directory under ${BENCH_TMPDIR:-/tmp}, removed on exit; the
# settings are bench/run.sh's. Scenario 1 of bench/run.sh measures the same
# three at ROWS/10 and ROWS next to dump/restore.
set -euo pipefail
N=${N:-1000000}; RUNS=${RUNS:-3}; METHODS=${METHODS:-"native snapshot chunked1 chunked2"}; CHUNK_ROWS=${CHUNK_ROWS:-100000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}; export PATH=$PGBIN:$PATH
LP=${LIVE_PORT:-26532}; MP=${MART_PORT:-26533}
[ "$(id -u)" -ne 0 ] || { echo "copy_big: run as a non-root user" >&2; exit 1; }
W=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/pg_sluice-copy.XXXXXX")
trap 'for d in live mart; do pg_ctl -D "$W/$d" -m immediate stop >/dev/null 2>&1 || true; done; rm -rf "$W"' EXIT
for s in live:$LP mart:$MP; do
    n=${s%%:*}; p=${s##*:}
    initdb -D "$W/$n" --auth=trust --locale=C --encoding=UTF8 --no-sync >/dev/null
    cat >>"$W/$n/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $p
unix_socket_directories = '$W'
shared_buffers = 256MB
checkpoint_timeout = 1d
max_wal_size = 4GB
max_replication_slots = 20
max_wal_senders = 20
wal_level = logical
wal_retrieve_retry_interval = 100ms
${EXTRA_CONF:-}
CONF
    pg_ctl -D "$W/$n" -l "$W/$n.log" -w start >/dev/null
done
P() { local port=$1 db=$2; shift 2; PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 -h "$W" -p "$port" -d "$db" "$@"; }
live() { P "$LP" bench "$@"; }
mart() { P "$MP" mart "$@"; }
nat() { P "$MP" native "$@"; }
P "$LP" postgres -c "CREATE DATABASE bench"
P "$MP" postgres -c "CREATE DATABASE mart" -c "CREATE DATABASE native"
DDL="CREATE SCHEMA bench; CREATE TABLE bench.t (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric);"
live -c "$DDL" -c "INSERT INTO bench.t SELECT g, (g % 100000)::int, md5(g::text),
    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', round(g * 1.37, 2) FROM generate_series(1, $N) g" \
     -c "CREATE PUBLICATION bench_pub FOR TABLE bench.t" -c "VACUUM ANALYZE bench.t"
nat -c "$DDL"
mart -c "CREATE EXTENSION pg_sluice" -c "SELECT sluice.create_source('live', 'host=127.0.0.1 port=$LP dbname=bench')" >/dev/null
now() { date +%s.%N; }
# rows live read from its table (heap tuples by sequential and index scans): a chunk read
# twice shows as its rows more than an uninterrupted copy
readrows() { live -c "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relid = 'bench.t'::regclass"; }
echo "copy_big: $N rows, $RUNS runs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
MS=($METHODS)
for run in $(seq 1 "$RUNS"); do
    for ((i = 0; i < ${#MS[@]}; i++)); do
        label=${MS[(run - 1 + i) % ${#MS[@]}]}
        # method/rows: that method with chunks of that many rows
        m=${label%%/*}; CR=$CHUNK_ROWS; [ "$m" = "$label" ] || CR=${label#*/}
        mart -c CHECKPOINT; live -c CHECKPOINT
        r0=$(readrows)
        s=$(now)
        case $m in
            native)
                nat -c "CREATE SUBSCRIPTION copy_sub CONNECTION 'host=127.0.0.1 port=$LP dbname=bench' PUBLICATION bench_pub WITH (copy_data = true)"
                until [ "$(nat -c "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel")" = t ]; do sleep 0.05; done ;;
            snapshot)
                mart -c "SET pg_sluice.initial_copy = snapshot" \
                     -c "SELECT sluice.create_pipeline('c', 'live', ARRAY['bench.t'], target_schema => 'c')" >/dev/null ;;
            chunked | chunked0)
                # one session, chunk after chunk (no background worker)
                mart -c "SET pg_sluice.copy_workers = 0" -c "SET pg_sluice.initial_copy = chunked" \
                     -c "SET pg_sluice.initial_copy_chunk_rows = $CR" \
                     -c "SELECT sluice.create_pipeline('c', 'live', ARRAY['bench.t'], target_schema => 'c')" >/dev/null
                mart -c "CALL sluice.copy_tables('c')" ;;
            chunked[1-9])
                # background copy workers, no CALL: poll copy_progress (fails after 30 min)
                mart -c "SET pg_sluice.copy_workers = ${m#chunked}" -c "SET pg_sluice.initial_copy = chunked" \
                     -c "SET pg_sluice.initial_copy_chunk_rows = $CR" \
                     -c "SELECT sluice.create_pipeline('c', 'live', ARRAY['bench.t'], target_schema => 'c')" >/dev/null
                for ((w = 0; ; w++)); do
                    [ "$(mart -c "SELECT state FROM sluice.copy_progress WHERE pipeline = 'c'")" = finished ] && break
                    ((w < 36000)) || { echo "copy_big: $m did not finish" >&2; exit 1; }
                    sleep 0.05
                done ;;
            kill0)
                # chunked0, with kill -9 of the datamart's postmaster once half
                # of the chunks committed, a restart, and CALL copy_tables again
                mart -c "SET pg_sluice.copy_workers = 0" -c "SET pg_sluice.initial_copy = chunked" \
                     -c "SET pg_sluice.initial_copy_chunk_rows = $CR" \
                     -c "SELECT sluice.create_pipeline('c', 'live', ARRAY['bench.t'], target_schema => 'c')" >/dev/null
                half=$(( (N / CR) / 2 ))
                (mart -c "SET pg_sluice.copy_workers = 0" -c "CALL sluice.copy_tables('c')" >/dev/null 2>&1 || true) &
                bgp=$!
                # half the chunks committed and the next one's COPY running on
                # live: killed mid-chunk, not between two
                for ((w = 0; ; w++)); do
                    [ "$(mart -c "SELECT chunks_done >= $half FROM sluice.copy_progress WHERE pipeline = 'c'")" = t ] &&
                      [ "$(live -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT %' AND state = 'active'")" != 0 ] && break
                    [ "$(mart -c "SELECT state FROM sluice.copy_progress WHERE pipeline = 'c'")" != finished ] ||
                      { echo "copy_big: kill0 found no chunk in flight to kill" >&2; exit 1; }
                    ((w < 36000)) || { echo "copy_big: kill0 did not reach half" >&2; exit 1; }
                    sleep 0.02
                done
                kill -9 "$(head -1 "$W/mart/postmaster.pid")"
                wait $bgp || true
                for ((w = 0; w < 100; w++)); do
                    pg_ctl -D "$W/mart" -l "$W/mart.log" -w start >/dev/null 2>&1 && break
                    sleep 0.2
                done
                kept=$(mart -c "SELECT chunks_done || ' chunks, ' || rows_copied || ' rows' FROM sluice.copy_progress WHERE pipeline = 'c'")
                until [ "$(live -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sluice_c' AND active_pid IS NOT NULL")" = 0 ]; do sleep 0.05; done
                mart -c "SET pg_sluice.copy_workers = 0" -c "CALL sluice.copy_tables('c')"
                sleep 1; rk=$(readrows)
                echo "$label: killed at $half of $(( N / CR )) chunks, kept $kept; rows read from live twice: $((rk - r0 - N)) of $N"
                ;;
            *) echo "copy_big: unknown method $m" >&2; exit 1 ;;
        esac
        t=$(awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
        if [ "$m" = kill0 ]; then
            # after the timing: both sides read every row
            sum="SELECT count(*) || ':' || sum(hashtext(row(id, a, b, c, d)::text)::bigint)"
            [ "$(live -c "$sum FROM bench.t")" = "$(mart -c "$sum FROM c.t")" ] \
                && echo "$label: live and mart checksums equal" \
                || { echo "copy_big: $label: mart differs from live" >&2; exit 1; }
        fi
        case $m in
            native) c=$(nat -c "SELECT count(*) FROM bench.t"); nat -c "DROP SUBSCRIPTION copy_sub" -c "TRUNCATE bench.t" ;;
            *) c=$(mart -c "SELECT count(*) FROM c.t")
               mart -c "SELECT sluice.drop_pipeline('c', drop_tables => true)" >/dev/null
               mart -c "DROP SCHEMA IF EXISTS c CASCADE" ;;
        esac
        [ "$c" = "$N" ] || { echo "copy_big: $m copied $c rows, expected $N" >&2; exit 1; }
        sleep 1; r1=$(readrows); [ "$m" != kill0 ] || r1=$((r1 - N))
        echo "run $run  $label  ${t}s  (rows read from live's table: $((r1 - r0)))"
    done
done
echo "copy_big: load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
