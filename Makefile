# The same targets serve people and CI: .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install lint typecheck unit test example demo bench bench-memory mutate zipkin-up zipkin-down clean

help:
	@echo "make test      - create $(VENV), install, then lint, mypy --strict and the tests"
	@echo "make demo      - three traced services, a few requests, traces drawn here (or ZIPKIN_URL=... to report)"
	@echo "make example   - send one traced request to a local server and print its span"
	@echo "make zipkin-up / zipkin-down - start/stop Zipkin and the example services in Docker"
	@echo "make bench     - tracing overhead vs aiozipkin and OpenTelemetry (BENCH_ARGS=--quick for a smoke run)"
	@echo "make mutate    - mutation testing of B3, URL and error redaction, parent validation and sampling (~3 min)"
	@echo "make clean     - remove the virtual environment and caches"

$(STAMP): pyproject.toml setup.py requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check aiozipkin_client tests examples bench
	$(BIN)/ruff format --check aiozipkin_client tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

example: $(STAMP)
	$(BIN)/python -m examples.simple_client

demo: $(STAMP)
	$(BIN)/python -m examples.demo $(DEMO_ARGS)

# Benchmark-only dependencies (OpenTelemetry) go into the same venv, once.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-memory: $(BENCH_STAMP)
	$(BIN)/python -m bench --memory-only $(BENCH_ARGS)

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
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
