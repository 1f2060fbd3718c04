# Argus: `make demo` and `make test` work from a fresh clone on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERL_VERSION := 0.9.1
RAY_VERSION := 2.60.0
ARGUS_SHARED_ROOT ?= $(HOME)/.argus/shared

.PHONY: venv sshd prometheus chromium demo lint test test-unit down clean bench

venv: $(STAMP)

# `sshd` is order-only: checked on every run (cheap), never a reason to reinstall the venv.
$(STAMP): pyproject.toml Makefile | sshd prometheus chromium
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "ray[default]==$(RAY_VERSION)" "wandb==0.31.0" -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps "verl==$(VERL_VERSION)"
	@touch $(STAMP)

# OpenSSH's server, for the managed-node tests (they start their own sshd on 127.0.0.1).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
sshd:
	@command -v /usr/sbin/sshd >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends openssh-server; }

# Prometheus and promtool (Debian's package), for the monitoring tests: they start their own
# Prometheus on a port of their own, never the package's service.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

# Chromium (Debian's package), for the console's browser tests: Playwright drives /usr/bin/chromium,
# so no browser is ever downloaded (never `playwright install`).
chromium:
	@command -v /usr/bin/chromium >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

demo: $(STAMP)
	$(BIN)/python examples/demo.py --shared-root "$(ARGUS_SHARED_ROOT)"

# Lint: ruff (rules and formatting), mypy over src/, and the layer contracts (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -ra tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

down: $(STAMP)
	$(BIN)/argus down --shared-root "$(ARGUS_SHARED_ROOT)"

bench: $(STAMP)
	$(BIN)/python bench/cluster_timing.py
	$(BIN)/python bench/api_load.py --db sqlite
	$(BIN)/python bench/sim_traces.py

clean: down
	rm -rf $(VENV) .argus
