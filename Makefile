# keysweep developer tasks. `make test` is the one command that installs everything and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint packages bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

test: install system-deps
	$(BIN)/ruff check agent tests bench
	$(BIN)/pytest

bench: install
	bash scripts/install-system-deps.sh bench
	$(BIN)/python bench/run.py

packages: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[packaging]'
	bash scripts/install-system-deps.sh packages
	PATH="$(CURDIR)/$(BIN):$$PATH" bash packaging/build.sh

clean:
	rm -rf $(VENV) build dist *.egg-info agent/*.egg-info
