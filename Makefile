# Every target creates .venv by itself on a fresh machine (only Python 3.10+ needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-deployment test-airflow-3.1 bench lint clean sandbox

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $(STAMP)

## demo: run the example batch DAG against the bundled sandbox; videos land in ./output/
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## test: the whole suite but the slow deployment tests, plus lint and types
test: $(STAMP)
	$(BIN)/ruff check $(wildcard airflow_sora dags tests scripts bench)
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not deployment"

## test-airflow-3.1: the unit and integration tests again on the oldest supported Airflow (3.1)
VENV31 := .venv-3.1
$(VENV31)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV31)
	$(VENV31)/bin/python -m pip install --quiet --upgrade pip uv
	$(VENV31)/bin/uv pip install --quiet --python $(VENV31)/bin/python "apache-airflow==3.1.8" -e ".[dev]"
	touch $(VENV31)/.installed

test-airflow-3.1: $(VENV31)/.installed
	$(VENV31)/bin/python -m pytest -p no:cacheprovider tests/unit tests/integration

## test-deployment: the real scheduler/triggerer/worker deployment tests (need PostgreSQL and Redis)
test-deployment: $(STAMP)
	$(BIN)/python -m pytest -m deployment

## bench: throughput and landing benchmarks; results in bench/results/ and bench/RESULTS.md
bench: $(STAMP)
	$(BIN)/python bench/run.py

## sandbox: run the local emulator of both APIs on port 8765
sandbox: $(STAMP)
	$(BIN)/python -m airflow_sora.sandbox --port 8765

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard airflow_sora dags tests scripts bench)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VENV31) .airflow output .pytest_cache .mypy_cache .ruff_cache
