# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test lint bench docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/outreach demo --dir demo

# CI's gate: branch coverage of the sending core (outreach/sending/) at least COVERAGE_MIN percent. Only
# `make test` applies it; a subset run with `.venv/bin/pytest tests/...` measures nothing and never fails on it.
COVERAGE_MIN ?= 90
test: $(BIN)/.installed
	$(BIN)/pytest --cov=outreach/sending --cov-branch --cov-report=term --cov-fail-under=$(COVERAGE_MIN)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: $(BIN)/.installed
	$(BIN)/python -m outreach.cli.docs > docs/cli.md

clean:
	rm -rf $(VENV) demo .mypy_cache .ruff_cache .pytest_cache
