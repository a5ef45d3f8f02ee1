#!/usr/bin/env bash
# Run every pg_sluice test suite against real PostgreSQL 15 servers.
#   bash scripts/test.sh    # as root
# Installs what it needs, builds with warnings as errors, then, as an
# unprivileged user in a scratch copy of the tree:
#   1. pg_regress (sql/, expected/) and the isolation specs
#      (test/isolation/) on temporary instances
#   2. TAP suites (test/t/*.pl): two clusters, live and datamart, including
#      the pgTAP behaviour tests (test/pgtap/*.sql) run with pg_prove
#   3. a smoke run of the benchmark (bench/run.sh, SMOKE=1), so it never rots
#   4. packaging (scripts/package.sh): the Debian package and the PGXN zip
#      built from a clean clone, installed and tested on clean clusters
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
RUN_USER=${SLUICE_USER:-pgsluice}
PG_MAJOR=15

SLUICE_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare" \
    bash scripts/setup.sh
make -s check-version
# the previous release's sources, for the upgrade test (test/t/060_upgrade.pl),
# which the scratch copy below cannot take from git
if [ -e .git ]; then
    make -s upgrade-sources
fi

WORK=$(mktemp -d /tmp/pg_sluice-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp -a "$SRC"/. "$WORK"/
rm -rf "$WORK"/.git
chown -R "$RUN_USER" "$WORK"
chmod 755 "$WORK"

status=0
FAILURES="$WORK/failures.txt"
: > "$FAILURES"
note() { echo "== failed: $*" | tee -a "$FAILURES"; }
run() { su "$RUN_USER" -c "cd '$WORK' && PATH=/usr/lib/postgresql/$PG_MAJOR/bin:\$PATH $*"; }

echo "== pg_regress and isolation specs"
if ! run make -s installcheck PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config; then
    status=1
    note "pg_regress or isolation specs"
    cat "$WORK"/regression.diffs "$WORK"/output_iso/regression.diffs 2>/dev/null | head -200 | tee -a "$FAILURES" || true
fi

echo "== TAP (two clusters) and pgTAP"
if ! run "make -s tapcheck PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config PROVE_FLAGS=--timer > '$WORK/prove.out' 2>&1; rc=\$?; cat '$WORK/prove.out'; exit \$rc"; then
    status=1
    # The failing suites' own logs, kept for the summary at the end (CI
    # shows the tail of this output, after the benchmark and packaging).
    for t in $(sed -n 's/^\(test\/t\/[^ ]*\.pl\).*\(Dubious\|Failed\|not ok\).*/\1/p; s/^\(test\/t\/[^ ]*\.pl\) *(Wstat.*/\1/p' "$WORK/prove.out" | sort -u); do
        note "TAP suite $t failed"
        log="$WORK/tmp_check/log/regress_log_$(basename "$t" .pl)"
        [ -f "$log" ] && { echo "---- $log (last 80 lines)"; tail -80 "$log"; } >> "$FAILURES"
    done
    grep -E '^(not ok|# +Failed test|# +at |# +got|# +expected|Failed|Dubious)' "$WORK/prove.out" | head -60 >> "$FAILURES" || true
fi

echo "== benchmark smoke run (bench/run.sh with 10,000 rows; figures are not judged)"
if ! SMOKE=1 BENCH_USER="$RUN_USER" bash "$SRC"/bench/run.sh; then
    status=1
    note "benchmark smoke run (bench/run.sh)"
fi

echo "== packaging: .deb and PGXN zip from a clean clone, installed and tested (scripts/package.sh)"
if ! bash "$SRC"/scripts/package.sh; then
    status=1
    note "packaging (scripts/package.sh)"
fi

if [ $status -eq 0 ]; then
    echo "== all suites passed"
else
    echo "== summary of failures"
    cat "$FAILURES"
    echo "== FAILED"
fi
exit $status
