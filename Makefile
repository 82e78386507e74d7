# stream-migrator — common tasks. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install jars demo test test-unit lint bench infra-up infra-down infra-status clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the package and dev tools

jars: $(STAMP) ## download the local stack's jars from Maven Central (cached in .sm/cache)
	$(BIN)/python -c "from pathlib import Path; from stream_migrator.infra.stack import DEFAULT_CACHE_DIR; from stream_migrator.infra.jars import resolve_jars; print(resolve_jars(DEFAULT_CACHE_DIR))"

demo: jars ## migrate a live shop.orders (20,000 docs + live writes) end to end and report
	$(BIN)/stream-migrator demo

test: jars ## run the whole test suite (unit, integration, chaos) on real servers
	$(BIN)/pytest

test-unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check stream_migrator tests benchmarks
	$(BIN)/mypy

bench: jars ## throughput benchmark: backlog drain rate (prints figures)
	$(BIN)/python benchmarks/drain.py

infra-up: jars ## start Kafka + mongo-java-server on loopback
	$(BIN)/stream-migrator infra up

infra-down: $(STAMP) ## stop them
	$(BIN)/stream-migrator infra down

infra-status: $(STAMP) ## what runs where
	$(BIN)/stream-migrator infra status

clean: ## remove the venv and all local state (.sm)
	-$(BIN)/stream-migrator infra down
	rm -rf $(VENV) .sm
