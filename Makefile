# The same commands for developers, CI and the README.
#   make run    create .venv, install, migrate, serve http://127.0.0.1:8000 (GraphiQL at /graphql)
#   make test   install the dev extras and run the suite on PostgreSQL, then on SQLite
#   make lint   ruff (lint and format) and mypy --strict
#   make schema regenerate schema.graphql from the code
#   make e2e    drive a real server with third-party clients (graphql-ws, gql, anthropic, SSE
#               parsers, Chromium: GraphiQL and Swagger UI offline)
#   make bench  benchmarks; results in docs/benchmarks.md

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PostgreSQL server for the test suite; every run creates and drops its own database on it.
TEST_DATABASE_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
export TEST_DATABASE_URL

.DEFAULT_GOAL := help
.PHONY: help install dev run migrate test test-postgres test-sqlite lint format schema e2e bench clean

help:
	@sed -n 's/^#   //p' Makefile

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/alembic upgrade head

# HOST and PORT are settings (environment or .env); `make run PORT=9000` sets them too.
run: migrate
	$(BIN)/python -m app

test: test-postgres test-sqlite

# The end-to-end tests (marker e2e) drive third-party clients and a browser: `make e2e` runs them.
test-postgres: dev
	$(BIN)/pytest --db postgres -m "not e2e" $(PYTEST_ARGS)

test-sqlite: dev
	$(BIN)/pytest --db sqlite -m "not e2e" $(PYTEST_ARGS)

lint: dev
	$(BIN)/ruff check app alembic tests benchmarks
	$(BIN)/ruff format --check app alembic tests benchmarks
	$(BIN)/mypy

format: dev
	$(BIN)/ruff check --fix app alembic tests benchmarks
	$(BIN)/ruff format app alembic tests benchmarks

# schema.graphql is generated from the code; tests/test_schema.py fails when it is stale.
schema: install
	$(BIN)/strawberry export-schema app.graphql.schema:sdl_schema --output schema.graphql

# End to end: Node clients (npm ci, pinned by package-lock.json; no browser download), Debian's
# Chromium and curl (apt-get when missing), then tests/e2e on PostgreSQL. Screenshots land in
# tests/e2e/artifacts/.
E2E_JS := tests/e2e/js
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

e2e: dev $(E2E_JS)/node_modules/.package-lock.json
	@missing="$$(test -x $(CHROMIUM) || echo chromium) $$(command -v curl >/dev/null || echo curl)"; \
	if [ -n "$${missing// }" ]; then \
		echo "apt-get install $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	CHROMIUM_PATH=$(CHROMIUM) $(BIN)/pytest --db postgres -m e2e tests/e2e $(PYTEST_ARGS)

$(E2E_JS)/node_modules/.package-lock.json: $(E2E_JS)/package.json $(E2E_JS)/package-lock.json
	@node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' 2>/dev/null || \
		{ echo "Node.js 20 or later is required for the end-to-end clients"; exit 1; }
	cd $(E2E_JS) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

# Benchmarks on PostgreSQL (TEST_DATABASE_URL, a superuser: the run creates and drops its own
# database): writes docs/benchmarks.{md,json,png}; each run's raw files go to benchmarks/.results/.
# Then the CPU per streamed chunk of each provider (benchmarks/provider_reads.py, ~2 minutes).
# A subset, results in benchmarks/.results only: .venv/bin/python -m benchmarks.run --only throughput
# --quick (see --help for profiles with py-spy and --set NAME=VALUE for API settings).
bench: dev
	@$(BIN)/python -c 'import matplotlib, psutil, uvloop' 2>/dev/null && test -x $(BIN)/py-spy || \
		$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run --docs $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.provider_reads --docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
