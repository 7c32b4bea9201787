# CityEdge developer entry points. Every target sets up what it needs and fails loudly.
#   make demo   - simulated devices + agent, readings on stdout (Ctrl-C to stop)
#   make test   - lint, format check, import contracts, types, then the whole test suite (CI)
#   make bench  - every benchmark; writes docs/BENCHMARKS.md
#   make test-arm - the whole suite in arm64 and armhf roots under qemu-user (.ci/arm-test)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cityedge-installed

.PHONY: demo test lint typecheck pytest bench venv system-deps clean ext test-arm test-arm-smoke wheel-arm

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.1,<4"
	CITYEDGE_REQUIRE_EXT=$${CITYEDGE_REQUIRE_EXT:-0} $(PY) -m pip install -q --no-build-isolation -e '.[test]'
	CITYEDGE_REQUIRE_EXT=$${CITYEDGE_REQUIRE_EXT:-0} $(PY) setup.py -q build_ext --inplace
	touch $(STAMP)

venv: $(STAMP)

ext:
	CITYEDGE_REQUIRE_EXT=1 $(PY) setup.py -q build_ext --inplace

# Debian packages the tests use as real peers (a real broker, pty pairs, the browser that
# tests the commissioning page). Installed only when missing; needs root (CI runs as root).
# Fails loudly otherwise.
system-deps:
	@missing=""; \
	for b in /usr/sbin/mosquitto /usr/bin/socat /usr/bin/openssl /usr/bin/chromium; do test -x $$b || missing="$$missing $$(basename $$b)"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "ERROR: missing$$missing; run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi; \
	if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then :; fi

demo: export CITYEDGE_REQUIRE_EXT ?= 0
demo: $(STAMP)
	$(VENV)/bin/cityedge demo

lint: $(STAMP)
	$(VENV)/bin/ruff check agent drivers ext tests bench
	$(VENV)/bin/ruff format --check agent drivers ext tests bench
	$(VENV)/bin/lint-imports --no-cache  # the dependency directions: [tool.importlinter]

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) system-deps
	CITYEDGE_REQUIRE_EXT=1 $(VENV)/bin/pytest -q -p no:cacheprovider

test: export CITYEDGE_REQUIRE_EXT = 1
test: system-deps $(STAMP)
	@$(PY) -c 'import ext; assert ext.IMPLEMENTATION == "cython", "Cython filters not built: " + ext.IMPLEMENTATION'
	$(MAKE) --no-print-directory lint typecheck pytest

# The gateway's own architectures: Debian bookworm roots under qemu-user, built on first use
# (CITYEDGE_ARM_ROOTS, default /var/tmp/cityedge-arm). Minutes per architecture, so not in
# .ci/run; docs/BENCHMARKS.md ("On ARM") has the figures. Niced: it takes every core it gets.
ARM_NICE ?= nice -n 10
test-arm:
	$(ARM_NICE) .ci/arm-test arm64
	$(ARM_NICE) .ci/arm-test armhf

# the extension built from scratch, the differential filter tests and one end-to-end run
test-arm-smoke:
	$(ARM_NICE) .ci/arm-test --smoke arm64

# lean aarch64 and armv7l wheels (and the sdist) built in the roots, into wheelhouse/
wheel-arm:
	$(ARM_NICE) .ci/arm-test --wheel arm64 wheelhouse
	$(ARM_NICE) .ci/arm-test --wheel armhf wheelhouse

bench: $(STAMP) system-deps
	CITYEDGE_REQUIRE_EXT=1 $(PY) -m pip install -q --no-build-isolation -e '.[test,bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf build dist *.egg-info ext/*.so ext/*.c .pytest_cache .mypy_cache .ruff_cache
