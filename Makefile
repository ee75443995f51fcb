# Every target creates .venv by itself on a fresh machine (only Python 3.10+ needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-deployment test-airflow-3.1 bench lint clean sandbox docs docs-serve dist-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[s3,openlineage,local,redis]" --group dev
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
	$(VENV31)/bin/uv pip install --quiet --python $(VENV31)/bin/python "apache-airflow==3.1.8" -e ".[s3,openlineage,local,redis]" \
		--group dev
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

## docs: build the documentation site into site/ (warnings are errors); open site/index.html
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --group docs
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## docs-serve: the documentation site with live reload on http://127.0.0.1:8000
docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

## dist-check: build the sdist and wheel, check them, install the wheel into a fresh venv and ask Airflow about it
RELEASE_STAMP := $(VENV)/.installed-release
$(RELEASE_STAMP): $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --group release
	touch $(RELEASE_STAMP)

dist-check: $(RELEASE_STAMP)
	BIN=$(BIN) scripts/check_dist.sh

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard airflow_sora dags tests scripts bench)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VENV31) .airflow output .pytest_cache .mypy_cache .ruff_cache site dist build
