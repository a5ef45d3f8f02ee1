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
$(OBJS): src/pg_sluice.h

PG_PROVE_FLAGS += -I $(srcdir)/test/perl

# The SQL script, control file, META.json and the library must agree on one version.
.PHONY: check-version
check-version:
	@grep -q '"version": "$(EXTVERSION)"' META.json || { echo "META.json version differs from $(EXTVERSION)"; exit 1; }
	@test -f pg_sluice--$(EXTVERSION).sql || { echo "pg_sluice--$(EXTVERSION).sql missing"; exit 1; }

# The TAP suites alone (installcheck runs pg_regress and then these).
.PHONY: tapcheck
tapcheck:
	$(prove_installcheck)
