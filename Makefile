# The front door: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DEPS_STAMP := $(VENV)/.deps-stamp
GEN_STAMP := generated/.stamp
PROTOS := $(shell find proto -name '*.proto' | sort)
# Extra pytest arguments for the test targets, e.g. PYTEST_ARGS='-x -k booking'.
PYTEST_ARGS ?=

.PHONY: help deps gen lint test test-unit test-integration up down status bench clean hosts-up hosts-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: $(DEPS_STAMP) ## create .venv and install every package and tool (Envoy, grpcurl, Consul)

$(DEPS_STAMP): pyproject.toml scripts/install-deps.sh scripts/install-consul.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-deps.sh
	@touch $@

gen: $(GEN_STAMP) ## generate Python stubs, .pyi stubs, Envoy's descriptor set, openapi.json and /docs from proto/

$(GEN_STAMP): $(DEPS_STAMP) $(PROTOS) scripts/gen.sh $(wildcard contract/*.py contract/*.html)
	@echo "== make gen: Python stubs and Envoy's descriptor set, openapi.json and /docs from proto/"
	@PY=$(PY) bash scripts/gen.sh
	@touch $@

lint: gen ## buf lint, ruff, mypy, yamllint, buf breaking against the last release
	@$(BIN)/buf lint generated/airline.pb#format=binpb --config buf.yaml --path airline
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@PY=$(PY) bash scripts/lint-yaml.sh
	@# The contract gate (buf breaking and the OpenAPI diff) against the newest release
	@# (contract/RELEASES); before the first release there is nothing to break.
	@PY=$(PY) bash scripts/contract-gate.sh

test: gen ## run every test: unit and integration
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: gen ## run every test but the whole-mesh ones (everything outside tests/integration)
	@$(PY) -m pytest --ignore=tests/integration $(PYTEST_ARGS)

test-integration: gen ## run the whole-mesh tests (tests/integration): one real mesh per run
	@$(PY) -m pytest tests/integration $(PYTEST_ARGS)

clean: ## remove generated code and local state (keeps .venv)
	rm -rf generated var

up: gen ## run the whole mesh here (Consul, control plane, Envoy, services); returns when healthy
	@$(PY) -m mesh up

down: ## stop everything `make up` started
	@$(PY) -m mesh down

status: ## show each process and each Consul health check
	@$(PY) -m mesh status

# Simulated hosts (as root): HOSTS app hosts and a database host in network namespaces.
HOSTS ?= 3

hosts-up: gen ## the mesh across HOSTS (3) simulated hosts and a database host; writes var/hosts.json
	@HOSTS=$(HOSTS) $(PY) -m mesh.hosts up

hosts-down: ## stop every simulated host and remove its namespace
	@$(PY) -m mesh.hosts down

bench: gen ## the edge vs a FastAPI twin, booking create, idle RSS, CPU per request; writes bench/results.json
	@$(PY) bench/run.py
