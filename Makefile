# Quick start: `make run` (development server) and `make test` (default test suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
CODE := src tests $(wildcard benchmarks)
# Test processes per suite (pytest-xdist): two workers use both cores. Functional tests run the
# app and the CLI in-process (tests/support/server.py); only tests/process/ starts real servers.
TEST_WORKERS ?= 2

.PHONY: run test test-postgres test-redis test-instances test-browser lint format migration clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	ECHO_DEV_MODE=1 ECHO_ISSUER=$${ECHO_ISSUER:-http://$(HOST):$(PORT)} sh -c '\
	  $(BIN)/echo-identity db upgrade && \
	  $(BIN)/echo-identity demo && \
	  exec $(BIN)/echo-identity serve --host $(HOST) --port $(PORT)'

test: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The unit and functional suites on PostgreSQL (a throwaway schema per database fixture).
test-postgres: $(STAMP)
	ECHO_TEST_DATABASE_URL=$${ECHO_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
	  $(BIN)/pytest -q -n $(TEST_WORKERS) tests/unit tests/functional tests/process -m 'not redis and not browser and not instances' $(PYTEST_ARGS)

# Redis-backed store tests plus the functional suite with sessions in Redis.
test-redis: $(STAMP)
	ECHO_TEST_REDIS_URL=$${ECHO_TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
	  $(BIN)/pytest -q -n $(TEST_WORKERS) tests/unit tests/functional tests/process -m 'not postgres and not browser and not instances' $(PYTEST_ARGS)

# Two server processes on one PostgreSQL + Redis (tests/process/): one deployment, two instances.
test-instances: $(STAMP)
	ECHO_TEST_DATABASE_URL=$${ECHO_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
	ECHO_TEST_REDIS_URL=$${ECHO_TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
	  $(BIN)/pytest -q tests/process -m instances $(PYTEST_ARGS)

test-browser: $(STAMP)
	$(BIN)/pytest -q -m browser $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

# Developers: make migration m="add widgets" (autogenerates against var/ SQLite database)
migration: $(STAMP)
	ECHO_DEV_MODE=1 $(BIN)/python -m echo_identity.migrations.autogenerate "$(m)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
