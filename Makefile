# One place that sets up the virtual environment and runs ductal.
# `make demo` and `make test` work on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types pytest bench clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

## demo: build the demo study database (SQLite) and its reports
demo: $(STAMP)
	$(BIN)/ductal demo --reset

## test: every check — lint, types and the whole test suite
test: lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

types: $(STAMP)
	$(BIN)/mypy src

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

docs: $(STAMP)
	$(BIN)/python scripts/cli_docs.py > docs/cli.md

clean:
	rm -rf $(VENV) ductal-data
