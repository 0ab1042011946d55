# The two commands: `make run` and `make test`. Everything else is here to support them.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then echo $$p; break; fi; done)
STAMP := $(VENV)/.installed
export FLASK_APP := app.py

.PHONY: run test install translations lint typecheck pytest messages clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (python3.11, python3.12, ...)." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) translations

translations: $(STAMP)
	@$(BIN)/pybabel -q compile -d crm/translations

run: install
	$(BIN)/flask db upgrade
	$(BIN)/flask crm serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite runs on SQLite and the embedded queue; with TEST_DATABASE_URL / TEST_REDIS_URL set it
# runs a second time on PostgreSQL + Redis.
pytest: install
	$(BIN)/pytest
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL$${TEST_REDIS_URL:+ + Redis} =="; \
		CRM_TEST_BACKEND=postgresql $(BIN)/pytest -m "not e2e"; \
	fi

test: install lint typecheck pytest

# Refresh the translation catalogues after changing user-facing strings.
messages: $(STAMP)
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -o crm/translations/messages.pot .
	$(BIN)/pybabel -q update -i crm/translations/messages.pot -d crm/translations --no-fuzzy-matching

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
