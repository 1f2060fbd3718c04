# Argus: `make demo` and `make test` work from a fresh clone on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERL_VERSION := 0.9.1
RAY_VERSION := 2.60.0
ARGUS_SHARED_ROOT ?= $(HOME)/.argus/shared

.PHONY: venv demo test test-unit down clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "ray[default]==$(RAY_VERSION)" -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps "verl==$(VERL_VERSION)"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py --shared-root "$(ARGUS_SHARED_ROOT)"

test: $(STAMP)
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
