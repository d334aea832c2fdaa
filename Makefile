# Two commands for a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
# Both build their own virtualenv in .venv (rebuilt when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RUNTIME__DLTHUB_TELEMETRY := false

.PHONY: demo test lint format schema-docs clean

demo: $(VENV)/.installed
	$(BIN)/meta-inbox demo

test: $(VENV)/.installed
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check pipelines tests benchmarks
	$(BIN)/ruff format --check pipelines tests benchmarks

format: $(VENV)/.installed
	$(BIN)/ruff check --fix pipelines tests benchmarks
	$(BIN)/ruff format pipelines tests benchmarks

schema-docs: $(VENV)/.installed
	$(BIN)/python -m meta_inbox.tables

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meta-inbox needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache meta_inbox_demo.duckdb
