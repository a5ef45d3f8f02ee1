#!/usr/bin/env bash
# Install what pg_sluice needs on Debian 12 (as root), build and install it,
# and create the unprivileged user the test and demo servers run as.
# Idempotent: a second run only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR=15
RUN_USER=${SLUICE_USER:-pgsluice}
PKGS="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR
      libcurl4-openssl-dev libjansson-dev libpq-dev postgresql-$PG_MAJOR-pgtap pgtap
      postgresql-$PG_MAJOR-cron postgresql-$PG_MAJOR-pglogical libipc-run-perl libhttp-daemon-perl make gcc procps
      prometheus-postgres-exporter"

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/setup.sh: run as root (it installs packages)" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Packages start their services (PostgreSQL's default cluster, the
    # exporter on :9187); we use neither, so none is started while we install.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy=yes
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq $missing >/dev/null
    if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
# Our servers are our own: stop the distribution's default cluster if any.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
        pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
fi

export PATH=/usr/lib/postgresql/$PG_MAJOR/bin:$PATH
echo "== building pg_sluice"
make -s clean >/dev/null 2>&1 || true
make -s PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config \
     PROFILE="${SLUICE_CFLAGS:--Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare}" \
     2>&1 | grep -v '^gcc\|^clang\|^/usr/bin/clang' || true
test -f pg_sluice.so
make -s install PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config >/dev/null

id "$RUN_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$RUN_USER"
echo "== pg_sluice $(sed -n "s/^default_version = '\(.*\)'/\1/p" pg_sluice.control) installed"
