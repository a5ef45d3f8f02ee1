#!/usr/bin/env bash
# Build pg_sluice the two ways DBAs install extensions, install each, and
# prove it works:
#   bash scripts/package.sh      # as root, in a git work tree; CI runs it
#                                # at the end of scripts/test.sh
# From a clean clone of HEAD (committed files only):
#   1. make check-version; make dist -> pg_sluice-<x.y.z>.zip, whose
#      META.json scripts/check-meta.py checks against PGXN Meta Spec 1.0.0
#   2. dpkg-buildpackage -us -uc -b as an unprivileged user ->
#      postgresql-15-pg-sluice_<version>_amd64.deb (the build runs the
#      pg_regress suite on the package's files); lintian: no errors
#   3. apt-get install of the .deb; on clean clusters run by the unprivileged
#      user: CREATE EXTENSION with shared_preload_libraries (launcher up,
#      sluice.version() = control = package version), then the pg_regress
#      suite (debian/tests/installcheck, as autopkgtest runs it); purge
#   4. pgxn install of the zip; the same two checks on clean clusters
#   5. make install from this tree, so the system keeps the tree's build
#      (the package's removal took the library away)
# Clusters listen on unix sockets in a scratch directory only (or, for
# pg_virtualenv's, on localhost at a port from 5432 up).  Installs into the
# system's PostgreSQL 15: callers sharing the machine serialise with
# flock /tmp/pg_sluice-install.lock.  Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
RUN_USER=${SLUICE_USER:-pgsluice}
PG_MAJOR=15
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PGBIN/pg_config
PORT_BASE=${PACKAGE_PORT:-5491}		# below 32768, away from demo and bench
PKG=postgresql-$PG_MAJOR-pg-sluice
PKGS="debhelper dpkg-dev fakeroot lintian pgxnclient zip unzip git python3 binutils
      postgresql-server-dev-all postgresql-$PG_MAJOR postgresql-$PG_MAJOR-pgtap
      libcurl4-openssl-dev libjansson-dev libpq-dev make gcc"

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/package.sh: run as root (it installs packages)" >&2
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
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
id "$RUN_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$RUN_USER"

WORK=$(mktemp -d /tmp/pg_sluice-package.XXXXXX)
chmod 755 "$WORK"
chown "$RUN_USER" "$WORK"
CLUSTERS=()
cleanup() {
    local d
    for d in "${CLUSTERS[@]}"; do
        su "$RUN_USER" -c "$PGBIN/pg_ctl -D '$d' -m immediate stop" >/dev/null 2>&1 || true
    done
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q "install ok installed"; then
        dpkg --purge "$PKG" >/dev/null || true
    fi
    # the system keeps a working pg_sluice: this tree's build
    make -C "$SRC" -s install PG_CONFIG="$PG_CONFIG" >/dev/null 2>&1 ||
        echo "scripts/package.sh: make install from $SRC failed" >&2
    rm -rf "$WORK"
}
trap cleanup EXIT

as_user() { su "$RUN_USER" -c "PATH=$PGBIN:\$PATH; $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

# --- a clean clone of HEAD ---------------------------------------------------
HEAD=$(git -C "$SRC" rev-parse HEAD)
git clone -q --no-hardlinks "$SRC" "$WORK/pg-sluice"
git -C "$WORK/pg-sluice" checkout -q "$HEAD"
chown -R "$RUN_USER" "$WORK/pg-sluice"
CLONE=$WORK/pg-sluice
VERSION=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$CLONE/pg_sluice.control")
case $VERSION in			# PGXN versions are SemVer: 0.1 is 0.1.0 (as in the Makefile)
    *.*.*) PGXN_VERSION=$VERSION ;;
    *) PGXN_VERSION=$VERSION.0 ;;
esac
echo "== packaging pg_sluice $VERSION (PGXN $PGXN_VERSION) from $(git -C "$SRC" log -1 --format='%h %s' "$HEAD")"
as_user "cd '$CLONE' && make -s check-version PG_CONFIG=$PG_CONFIG" || fail "make check-version"

# --- 1. PGXN release ---------------------------------------------------------
echo "== make dist"
as_user "cd '$CLONE' && make -s dist PG_CONFIG=$PG_CONFIG"
ZIP=$CLONE/pg_sluice-$PGXN_VERSION.zip
[ -f "$ZIP" ] || fail "make dist made no $(basename "$ZIP")"
unzip -q "$ZIP" -d "$WORK/zip"
ZIPDIR=$WORK/zip/pg_sluice-$PGXN_VERSION
[ -f "$ZIPDIR/META.json" ] || fail "the zip has no pg_sluice-$PGXN_VERSION/META.json"
[ ! -e "$ZIPDIR/debian" ] || fail "the zip carries debian/"
python3 "$SRC/scripts/check-meta.py" "$ZIPDIR/META.json" --version "$VERSION" || fail "META.json"
echo "   $(basename "$ZIP"): $(unzip -Z1 "$ZIP" | wc -l) entries"

# --- 2. Debian package -------------------------------------------------------
echo "== dpkg-buildpackage -us -uc -b (as $RUN_USER; runs the pg_regress suite on the package's files)"
if ! as_user "cd '$CLONE' && dpkg-buildpackage -us -uc -b" >"$WORK/build.log" 2>&1; then
    tail -80 "$WORK/build.log"
    fail "dpkg-buildpackage"
fi
grep -E "^(test |ok |not ok| All [0-9]+ tests| [0-9]+ of [0-9]+ tests)" "$WORK/build.log" | sed 's/^/   /' || true
DEB=$WORK/${PKG}_${VERSION}_amd64.deb
[ -f "$DEB" ] || fail "no $(basename "$DEB") (versions differ?): $(ls "$WORK"/*.deb 2>/dev/null)"
[ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ] || fail "package version $(dpkg-deb -f "$DEB" Version) is not $VERSION"
echo "== lintian $(basename "$DEB")"
as_user "lintian --fail-on error --display-info '$DEB'" || fail "lintian reports errors"

# A fresh cluster in $WORK run by $RUN_USER, on a unix socket only.
# new_cluster NAME PORT [postgres -c settings...]
new_cluster() {
    local name=$1 port=$2 dir=$WORK/$1
    shift 2
    mkdir -p "$dir"
    chown "$RUN_USER" "$dir"
    as_user "initdb -D '$dir/data' -U postgres --no-sync -E UTF8 --locale=C.UTF-8" >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log"; fail "initdb $name"; }
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "port = $port"
        echo "fsync = off"
        for s in "$@"; do echo "$s"; done
    } >>"$dir/data/postgresql.conf"
    CLUSTERS+=("$dir/data")
    as_user "pg_ctl -D '$dir/data' -l '$dir/log' -w start" >/dev/null || { cat "$dir/log"; fail "start $name"; }
}
stop_cluster() { as_user "pg_ctl -D '$WORK/$1/data' -m fast -w stop" >/dev/null; }
psql_at() { local name=$1 port=$2; shift 2; as_user "psql -X -At -v ON_ERROR_STOP=1 -h '$WORK/$name' -p $port -U postgres -d postgres $*"; }

# CREATE EXTENSION on a preloaded server (continuous mode's configuration):
# the launcher runs and the library reports the control file's version.
check_preloaded() {
    local name=$1 port=$2 got
    new_cluster "$name" "$port" "shared_preload_libraries = 'pg_sluice'" "wal_level = logical"
    got=$(psql_at "$name" "$port" -c "'CREATE EXTENSION pg_sluice'" -c "'SELECT sluice.version()'" | tail -1)
    [ "$got" = "$VERSION" ] || fail "$name: sluice.version() is '$got', not $VERSION"
    got=$(psql_at "$name" "$port" -c "\"SELECT extversion FROM pg_extension WHERE extname = 'pg_sluice'\"")
    [ "$got" = "$VERSION" ] || fail "$name: extension version is '$got', not $VERSION"
    for _ in $(seq 1 50); do
        got=$(psql_at "$name" "$port" -c "\"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_sluice launcher'\"")
        [ "$got" = 1 ] && break
        sleep 0.1
    done
    [ "$got" = 1 ] || fail "$name: no pg_sluice launcher running"
    stop_cluster "$name"
    echo "   $name: CREATE EXTENSION with shared_preload_libraries, launcher running, sluice.version() = $VERSION"
}

# The pg_regress suite of DIR against a clean cluster with DIR's
# test/regress.conf (what make installcheck's temporary instance gets).
regress_on_cluster() {
    local name=$1 port=$2 dir=$3
    new_cluster "$name" "$port" "$(cat "$dir/test/regress.conf")"
    if ! as_user "cd '$dir' && PGHOST='$WORK/$name' PGPORT=$port PGUSER=postgres make -s installcheck PG_CONFIG=$PG_CONFIG REGRESS_OPTS=--dbname=contrib_regression" >"$WORK/$name.log" 2>&1; then
        cat "$WORK/$name.log"
        cat "$dir/regression.diffs" 2>/dev/null | head -100
        fail "$name: pg_regress"
    fi
    grep -E "^(test |ok |not ok| All [0-9]+ tests| [0-9]+ of [0-9]+ tests)" "$WORK/$name.log" | sed 's/^/   /' || true
    stop_cluster "$name"
}

# --- 3. install the .deb -----------------------------------------------------
echo "== apt-get install ./$(basename "$DEB")"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$DEB" >/dev/null
dpkg-query -W -f='${Status} ${Version}\n' "$PKG"
check_preloaded deb-preloaded "$PORT_BASE"
echo "   deb: pg_regress through debian/tests/installcheck (pg_virtualenv cluster)"
as_user "cd '$CLONE' && debian/tests/installcheck" >"$WORK/autopkgtest.log" 2>&1 ||
    { cat "$WORK/autopkgtest.log"; fail "debian/tests/installcheck"; }
grep -E "^(test |ok |not ok| All [0-9]+ tests| [0-9]+ of [0-9]+ tests)" "$WORK/autopkgtest.log" | sed 's/^/   /' || true
dpkg --purge "$PKG" >/dev/null
[ ! -e "$($PG_CONFIG --pkglibdir)/pg_sluice.so" ] || fail "dpkg --purge left pg_sluice.so behind"

# --- 4. pgxn install ---------------------------------------------------------
echo "== pgxn install ./$(basename "$ZIP")"
(cd "$WORK" && pgxn install --pg_config "$PG_CONFIG" --make "$(command -v make)" "$ZIP") >"$WORK/pgxn.log" 2>&1 ||
    { tail -40 "$WORK/pgxn.log"; fail "pgxn install"; }
[ -f "$($PG_CONFIG --sharedir)/extension/pg_sluice--$VERSION.sql" ] || fail "pgxn install put no pg_sluice--$VERSION.sql"
check_preloaded pgxn-preloaded "$((PORT_BASE + 1))"
echo "   pgxn: pg_regress from the unpacked zip"
chown -R "$RUN_USER" "$WORK/zip"
regress_on_cluster pgxn-regress "$((PORT_BASE + 2))" "$ZIPDIR"

echo "== packaging passed in ${SECONDS}s: $(basename "$DEB"), $(basename "$ZIP")"
