# The same commands for developers, CI and the README.
#   make run    create .venv, install, migrate, serve http://127.0.0.1:8000 (GraphiQL at /graphql)
#   make test   install the dev extras and run the suite on PostgreSQL, then on SQLite
#   make lint   ruff (lint and format) and mypy --strict
#   make schema regenerate schema.graphql from the code
#   make e2e    drive a real server with third-party clients (Node graphql-ws, gql, Chromium)
#   make bench  benchmarks; results in docs/benchmarks.md

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
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

run: migrate
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

test: test-postgres test-sqlite

test-postgres: dev
	$(BIN)/pytest --db postgres $(PYTEST_ARGS)

test-sqlite: dev
	$(BIN)/pytest --db sqlite $(PYTEST_ARGS)

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
