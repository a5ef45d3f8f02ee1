# pg_sluice -- incremental, validated, versioned copies of a live PostgreSQL
#
# Build with PGXS:  make && make install
# Tests:            make installcheck  (pg_regress and isolation specs, self-contained temp instances)
#                   make tapcheck      (two-server TAP + pgTAP suites in test/t)
# Everything:       sudo bash scripts/test.sh

EXTENSION   = pg_sluice
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pg_sluice.control)

MODULE_big  = pg_sluice
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA        = $(wildcard pg_sluice--*.sql)
PGFILEDESC  = "pg_sluice - incremental validated versioned replication into a datamart"

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-instance=tmp_regress --temp-config=test/regress.conf

# Isolation specs (test/isolation/specs, expected outputs in
# test/isolation/expected), run by "make installcheck" after pg_regress on a
# temporary instance of their own: pg_sluice preloaded, wal_level = logical,
# the server its own source.
ISOLATION      = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --temp-instance=tmp_check_iso --temp-config=test/isolation/isolation.conf

# TAP suites run with "make tapcheck" (not part of installcheck, which stays
# pg_regress only and needs no second server).
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CONFIG  ?= pg_config
PG_CPPFLAGS = -I$(shell $(PG_CONFIG) --includedir) -DSLUICE_VERSION='"$(EXTVERSION)"'
SHLIB_LINK  = -L$(shell $(PG_CONFIG) --libdir) -lpq -lcurl -ljansson

EXTRA_CLEAN = tmp_regress tmp_check results regression.diffs regression.out output_iso tmp_check_iso

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every module includes the shared header
$(OBJS): $(wildcard src/*.h)

PG_PROVE_FLAGS += -I $(srcdir)/test/perl

# One version, many places: the control file's default_version (EXTVERSION)
# names the SQL script and is the library's sluice.version() (-DSLUICE_VERSION),
# the Debian package's version and CHANGELOG.md's newest entry; META.json
# carries its SemVer form (PGXN wants x.y.z: 0.1 is 0.1.0).  The built library
# is checked when it exists; scripts/package.sh asks installed servers too.
PGXN_VERSION = $(if $(word 3,$(subst ., ,$(EXTVERSION))),$(EXTVERSION),$(EXTVERSION).0)

.PHONY: check-version
check-version:
	@grep -q '"version": "$(PGXN_VERSION)"' META.json || { echo "META.json version differs from $(PGXN_VERSION)"; exit 1; }
	@test "$$(grep -c '"version": "$(PGXN_VERSION)"' META.json)" -ge 2 || { echo "META.json provides a version other than $(PGXN_VERSION)"; exit 1; }
	@test -f pg_sluice--$(EXTVERSION).sql || { echo "pg_sluice--$(EXTVERSION).sql missing"; exit 1; }
	@test ! -f debian/changelog || test "$$(sed -n '1s/^[^ ]* (\([^)-]*\).*/\1/p' debian/changelog)" = "$(EXTVERSION)" || { echo "debian/changelog version differs from $(EXTVERSION)"; exit 1; }
	@test "$$(sed -n 's/^## \([^ ]*\).*/\1/p' CHANGELOG.md | head -1)" = "$(EXTVERSION)" || { echo "CHANGELOG.md's newest entry is not $(EXTVERSION)"; exit 1; }
	@test ! -f pg_sluice.so || strings -n 3 pg_sluice.so | grep -qxF '$(EXTVERSION)' || { echo "pg_sluice.so was not built as version $(EXTVERSION): make clean all"; exit 1; }

# A PGXN release of the committed tree (HEAD): pg_sluice-<x.y.z>.zip.  Files
# marked export-ignore in .gitattributes (debian/, .ci/) stay out of it.
.PHONY: dist
dist:
	git archive --format zip --prefix=$(EXTENSION)-$(PGXN_VERSION)/ -o $(EXTENSION)-$(PGXN_VERSION).zip HEAD

# The TAP suites alone (installcheck runs pg_regress and then these).
.PHONY: tapcheck
tapcheck:
	$(prove_installcheck)
