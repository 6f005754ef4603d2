PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
ARGS ?=
# Every install goes through the constraints, so pip keeps this machine's torch wheels and never
# downloads another multi-GB torch to satisfy pyproject's ranges.
PIP_INSTALL := $(PY) -m pip install -c constraints.txt

.PHONY: train test lint format clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) -e .
	touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP) $@

## Install the package and train on the synthetic default (generated on first use).
train: $(STAMP)
	$(PY) -m csetgraph train $(ARGS)

## Install with dev extras, lint, and run the test suite.
test: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q $(ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
