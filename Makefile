# Two commands do everything on a fresh machine (Python 3.11, no GPU):
#   make course   create .venv, then run every notebook (quick profile) into course_output/
#   make test     create .venv, then ruff (lint + format check) and the full pytest suite: nbval
#                 runs every notebook once (pyproject.toml addopts) and the metrics tests reuse it
# Plain commands for machines without make are in README.md.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstalled whenever pyproject.toml changes.
STAMP := $(VENV)/.galaxy_helpers-installed
OUTPUT ?= course_output
# Extra arguments, e.g. make course COURSE_ARGS="--only 01 02" or PYTEST_ARGS="-x -k schema"
COURSE_ARGS ?=
PYTEST_ARGS ?=
# make notebooks NOTEBOOKS_ARGS="--only 02 05" regenerates only some notebooks
NOTEBOOKS_ARGS ?=
# Where make screenshots writes widget_search.png and widget_anomaly.png
SCREENSHOTS ?= notebooks/images

# Local mirror of the real data, used by the data tests when it exists.
ifneq ($(wildcard ../shared/data),)
GALAXY_DATA_MIRROR ?= $(abspath ../shared/data)
endif
ifdef GALAXY_DATA_MIRROR
export GALAXY_DATA_MIRROR
endif

.PHONY: help env course test lint format notebooks notebooks-check screenshots clean

help:
	@echo "make course  - set up .venv and run the whole course into $(OUTPUT)/"
	@echo "make test    - set up .venv, ruff check, ruff format --check, pytest"
	@echo "make env     - only set up .venv (python3.11 -m venv; pip install -e '.[test]')"
	@echo "make lint    - ruff check + ruff format --check"
	@echo "make format  - ruff format + ruff check --fix"
	@echo "make notebooks       - re-execute every notebook in place (quick profile), strip"
	@echo "                       volatile metadata, stamp headers, rewrite navigation; commit it"
	@echo "make notebooks-check - the read-only notebook checks the test suite runs"
	@echo "make screenshots     - the real-browser widget tests (notebooks 04, 05), which also"
	@echo "                       write widget_search.png, widget_anomaly.png to $(SCREENSHOTS)/"

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

course: env
	$(BIN)/python -m galaxy_helpers.course run --output $(OUTPUT) $(COURSE_ARGS)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: env
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Committed notebooks keep the outputs of a quick-profile run; this regenerates them with the
# course runner of `make course` (course_output/labels/ must be empty).
notebooks: env
	$(BIN)/ruff format notebooks/
	$(BIN)/python -m galaxy_helpers.notebooks regenerate $(NOTEBOOKS_ARGS)

notebooks-check: env
	$(BIN)/python -m galaxy_helpers.notebooks check

# The two widget tests of tests/test_browser.py in JupyterLab + headless Chromium; the
# screenshots of the widgets they click go to $(SCREENSHOTS)/ as well (commit them). Fails,
# saying why, where the browser tests would skip (no /usr/bin/chromium: apt-get install chromium).
screenshots: env
	@$(BIN)/python -c "import sys; sys.path.insert(0, 'tests'); from browser import lab; \
		sys.exit(lab.missing_requirements())"
	GALAXY_WIDGET_SCREENSHOTS=$(abspath $(SCREENSHOTS)) $(BIN)/python -m pytest \
		tests/test_browser.py -k "anomaly_widget or search_widget" $(PYTEST_ARGS)

clean:
	rm -rf $(OUTPUT) .pytest_cache .ruff_cache build *.egg-info
