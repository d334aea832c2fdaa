# Two commands for a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
# Both build their own virtualenv in .venv (rebuilt when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RUNTIME__DLTHUB_TELEMETRY := false

.PHONY: demo test test-fast lint format schema-docs clean

demo: $(VENV)/.installed
	$(BIN)/meta-inbox demo

# Both tiers: the fast one first, so that a broken row shape fails in seconds. The end-to-end
# tier runs a file per worker (E2E_WORKERS), each worker with its own PostgreSQL server.
E2E_WORKERS ?= 2

test: $(VENV)/.installed
	$(BIN)/pytest tests/fast
	$(BIN)/pytest tests --ignore=tests/fast -n $(E2E_WORKERS) --dist loadfile

test-fast: $(VENV)/.installed
	$(BIN)/pytest tests/fast

lint: $(VENV)/.installed
	$(BIN)/ruff check pipelines tests benchmarks
	$(BIN)/ruff format --check pipelines tests benchmarks

format: $(VENV)/.installed
	$(BIN)/ruff check --fix pipelines tests benchmarks
	$(BIN)/ruff format pipelines tests benchmarks

schema-docs: $(VENV)/.installed
	$(BIN)/meta-inbox schema

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meta-inbox needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $@

clean:
	rm -rf $(VENV) .venv-airflow .pytest_cache .ruff_cache meta_inbox_demo.duckdb meta_inbox_lake \
		.dlt/demo_pipelines
