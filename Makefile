# stream-migrator — common tasks. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install jars demo test test-unit lint bench bench-compare infra-up infra-down infra-status clean \
	ops-tools deploy-check dashboard-png

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
	$(BIN)/python -c "from stream_migrator.infra.connect import connect_jars; print(connect_jars())"

demo: jars ## migrate a live shop.orders (20,000 docs + live writes) end to end and report
	$(BIN)/stream-migrator demo

test: jars ops-tools ## run the whole test suite (unit, integration, chaos) on real servers
	$(BIN)/pytest

test-unit: ops-tools ## unit tests only (no servers)
	$(BIN)/pytest tests/unit

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check stream_migrator tests benchmarks
	$(BIN)/mypy

bench: jars ## throughput benchmark: backlog drain rate (prints figures)
	$(BIN)/python benchmarks/drain.py

bench-compare: jars ## drain vs the servers' ceilings and Kafka Connect, latency (ARGS=--quick)
	$(BIN)/python benchmarks/side_by_side.py $(ARGS)

infra-up: jars ## start Kafka + mongo-java-server on loopback
	$(BIN)/stream-migrator infra up

infra-down: $(STAMP) ## stop them
	$(BIN)/stream-migrator infra down

infra-status: $(STAMP) ## what runs where
	$(BIN)/stream-migrator infra status

clean: ## remove the venv and all local state (.sm)
	-$(BIN)/stream-migrator infra down
	rm -rf $(VENV) .sm

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
K8S_VERSION ?= 1.30.0

ops-tools: $(STAMP) ## promtool + prometheus, docker-compose, stunnel, chromium (Debian); kubernetes-validate (PyPI)
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
		&& command -v docker-compose >/dev/null && command -v stunnel4 >/dev/null \
		&& command -v chromium >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus docker-compose stunnel4 chromium >/dev/null; }
	$(BIN)/pip install --quiet 'kubernetes-validate>=1.30' 'pyyaml>=6'

deploy-check: ops-tools ## check deploy/: alert rules + their tests, compose file, k8s manifests
	promtool check rules deploy/prometheus/rules/*.rules.yml
	promtool test rules deploy/prometheus/tests/*.test.yml
	docker-compose -f deploy/docker-compose.yml config -q
	$(BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) \
		$(filter-out deploy/k8s/kustomization.yaml deploy/k8s/servicemonitor.yaml,$(wildcard deploy/k8s/*.yaml))

dashboard-png: jars ops-tools ## run a pipeline under Prometheus, render the dashboard to docs/dashboard.png
	$(BIN)/pip install --quiet 'matplotlib>=3.8'
	$(BIN)/python deploy/grafana/render_dashboard.py --out docs/dashboard.png
