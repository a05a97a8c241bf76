# keysweep developer tasks. `make test` is the one command that installs everything and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint packages bench clean system-deps checkov

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

CHECKOV_VENV ?= .venv-checkov

# Checkov has many dependencies of its own: it gets its own environment, used only by tests/test_guardrails.py
$(CHECKOV_VENV)/bin/checkov:
	@echo "make: installing Checkov 3.3.30 into $(CHECKOV_VENV) (the IaC guardrail tests run it; ~1 min once)"
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==3.3.30

checkov: $(CHECKOV_VENV)/bin/checkov

test: install system-deps checkov
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
	rm -rf $(VENV) $(CHECKOV_VENV) build dist *.egg-info agent/*.egg-info
