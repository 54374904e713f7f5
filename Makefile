# The same targets serve people and CI: .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install lint typecheck unit test matrix example demo bench bench-memory bench-replay bench-instructions bench-whole mutate zipkin-up zipkin-down clean

help:
	@echo "make test      - create $(VENV), install, then lint, mypy --strict and the tests (asyncio, then uvloop)"
	@echo "make matrix    - the tests on Python 3.11-3.13 x aiohttp 3.10-3.14, and the built wheel (nox)"
	@echo "make demo      - three traced services, a few requests, traces drawn here (or ZIPKIN_URL=... to report)"
	@echo "make example   - send one traced request to a local server and print its span"
	@echo "make zipkin-up / zipkin-down - start/stop Zipkin and the example services in Docker"
	@echo "make bench     - tracing overhead vs aiozipkin and OpenTelemetry (BENCH_ARGS=--quick for a smoke run)"
	@echo "make bench-replay - each tracer's handler cost per small GET, no network (BENCH_ARGS=--signals per signal)"
	@echo "make bench-instructions - the same, as instructions per request under valgrind (BENCH_ARGS=--unsampled)"
	@echo "make bench-whole - make bench's cases counted in instructions per whole request under valgrind"
	@echo "make mutate    - mutation testing of B3, URL and error redaction, parent validation and sampling (~3 min)"
	@echo "make clean     - remove the virtual environment and caches"

$(STAMP): pyproject.toml setup.py requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# zipkin-js and OpenTelemetry JS for tests/test_other_tracers.py, pinned by the package-lock.json
# of tests/interop/node. Without npm the tests that need them are skipped, and say so.
JS_PEER := tests/interop/node
JS_STAMP := $(JS_PEER)/node_modules/.installed

$(JS_STAMP): $(JS_PEER)/package.json $(JS_PEER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(JS_PEER) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm not found: the Node.js tests of tests/test_other_tracers.py will be skipped"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check aiozipkin_client tests examples bench noxfile.py
	$(BIN)/ruff format --check aiozipkin_client tests examples bench noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite twice: on asyncio's event loop, then on uvloop's (tests/conftest.py, TEST_LOOP).
unit: $(STAMP) $(JS_STAMP)
	$(BIN)/pytest -q
	AIOZIPKIN_CLIENT_TEST_LOOP=uvloop $(BIN)/pytest -q

test: lint typecheck unit

# The support matrix (noxfile.py): every Python x aiohttp cell, then the packaging check.
# NOX_ARGS picks sessions, e.g. NOX_ARGS='-s "tests-3.13(aiohttp=\'3.10\')"'. pyenv keeps each
# interpreter in its own directory: the newest patch of each minor goes first on PATH, so nox
# finds python3.11, python3.12 and python3.13 (interpreters already on PATH do too).
PYENV_ROOT ?= $(HOME)/.pyenv
MATRIX_PYTHONS := 3.11 3.12 3.13
MATRIX_PATH := $(shell for v in $(MATRIX_PYTHONS); do ls -d $(PYENV_ROOT)/versions/$$v.*/bin 2>/dev/null | sort -V | tail -n 1; done | paste -sd: -)

matrix: $(STAMP)
	PATH="$(MATRIX_PATH)$(if $(MATRIX_PATH),:)$$PATH" $(BIN)/nox $(NOX_ARGS)

example: $(STAMP)
	$(BIN)/python -m examples.simple_client

demo: $(STAMP)
	$(BIN)/python -m examples.demo $(DEMO_ARGS)

# The benchmark's other tracers (OpenTelemetry) are pinned in requirements-dev.txt: the tests
# use them too.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-memory: $(STAMP)
	$(BIN)/python -m bench --memory-only $(BENCH_ARGS)

bench-replay: $(STAMP)
	$(BIN)/python -m bench.replay $(BENCH_ARGS)

# Needs valgrind on the PATH (not a Python package: apt install valgrind).
bench-instructions: $(STAMP)
	$(BIN)/python -m bench.replay --instructions $(BENCH_ARGS)

# Also needs valgrind: the client process of make bench's requests, counted (bench/whole.py).
bench-whole: $(STAMP)
	$(BIN)/python -m bench.whole $(BENCH_ARGS)

# Mutation testing (mutmut) goes into the same venv, once; too slow for .ci/run.
MUTATE_STAMP := $(VENV)/.mutate-installed

$(MUTATE_STAMP): $(STAMP) requirements-mutate.txt
	$(BIN)/python -m pip install --quiet -r requirements-mutate.txt
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP)
	$(BIN)/python mutation/run.py

zipkin-up:
	docker compose -f docker/docker-compose.yml up -d --build
	@echo "Zipkin UI: http://localhost:9411/zipkin/   try: curl -i http://localhost:8080/checkout/42"

zipkin-down:
	docker compose -f docker/docker-compose.yml down

clean:
	rm -rf $(VENV) .nox .mypy_cache .pytest_cache .ruff_cache build dist *.egg-info $(JS_PEER)/node_modules
