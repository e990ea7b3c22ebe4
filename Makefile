# Set-up is part of every target: a fresh machine with only Python 3.11 and pip works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/imagegate.yaml
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck check bench soak clean system-deps cli

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_RUN): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(STAMP_DEV): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@ $(STAMP_RUN)

## run: start the proxy with the default config
run: $(STAMP_RUN)
	$(BIN)/imagegate --config $(CONFIG)

## cli: the imagegate command with ARGS, e.g. `make cli ARGS=--help`
cli: $(STAMP_RUN)
	$(BIN)/imagegate $(ARGS)

## system-deps: the system tools the suite starts (Redis, Prometheus, wrk, nginx, kubectl, Chromium)
system-deps:
	scripts/system-deps

## test: the whole test suite with the coverage gate
test: $(STAMP_DEV) system-deps
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

## soak: two minutes of mixed traffic against a real proxy process (CI runs 6 s)
soak: $(STAMP_DEV)
	SOAK_SECONDS=120 $(BIN)/python -m pytest -p no:cacheprovider tests/soak -q

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

check: lint typecheck test

## bench: the proxy against a fake upstream, and the fake upstream directly
bench: $(STAMP_DEV)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .coverage .mypy_cache .ruff_cache .pytest_cache
