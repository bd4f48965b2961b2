# unlearnops — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*## "} {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(BIN)/unlearnops: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test,dev]'
	touch $@

install: $(BIN)/unlearnops ## create .venv and install unlearnops with test/dev tools (torch pinned by constraints.txt)

test: install ## run the whole test suite (slow and service tests included)
	$(BIN)/python -m pytest -q tests

test-fast: install ## run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow" tests

test-unit: install ## the fast tier: no servers, no MLflow registry, no model builds (markers slow/services/registry; tests/conftest.py)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not services and not registry" tests

lint: install ## ruff check and mypy (configured in pyproject.toml)
	$(BIN)/ruff check unlearnops components pipelines tests benchmarks
	$(BIN)/mypy

demo: install ## the main job end to end: data, tiny models, champion, erasure request, local pipeline, gates, promotion, serving before/after (state in .unlearnops/demo)
	$(BIN)/python -m unlearnops.pipelines.demo

bench: install ## run the benchmarks; JSON under benchmarks/results/, summary in BENCHMARKS.md
	$(BIN)/python -m benchmarks.run_all $(BENCH)

CHART_OUT ?= build/chart
chart: install ## render the Helm chart (charts/unlearnops) into $(CHART_OUT)/ (VALUES=file for your values)
	$(BIN)/python charts/render.py --out $(CHART_OUT) $(if $(VALUES),--values $(VALUES))

.PHONY: help install test test-fast test-unit lint bench demo chart
