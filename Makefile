# keysweep developer tasks (README.md, "Set up", says what each runs and how long it takes).
#   make test        unit and integration tests (+ ruff check and format, the import-layer contracts, mypy); what a change must pass
#   make ci          everything CI runs (.ci/run runs exactly this): make test, the package checks, the image and
#                    distribution tests; needs root and a Docker engine (started if missing)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' agent/keysweep/__init__.py)
IMAGE ?= keysweep:$(VERSION)
# the image's base: the local Debian image (scripts/debian-image.sh; no registry needed) unless BASE is given,
# e.g. BASE=python:3.11.14-slim-bookworm
BASE ?=
PYTEST_ARGS ?= -m "not docker"

.PHONY: install test lint packages packages-check image image-test ci bench clean system-deps checkov

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
	$(BIN)/ruff format --check agent tests bench packaging/launch.py packaging/split-sites.py
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy agent/keysweep
	$(BIN)/pytest $(PYTEST_ARGS)

# ripgrep 14 (the speed to compare with) from its PyPI wheel, the bench extra
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

packages: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[packaging]'
	bash scripts/install-system-deps.sh packages
	PATH="$(CURDIR)/$(BIN):$$PATH" bash packaging/build.sh

# the deb and rpm built, installed, exercised and removed on this machine (root)
packages-check: install
	bash scripts/ci-packages.sh

# keysweep:<version>, built without network from the fetched wheels (on the local Debian base unless BASE is set)
image: install
	bash scripts/docker-engine.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash packaging/build.sh wheels
	@start=$$(date +%s); \
	base="$(BASE)"; [ -n "$$base" ] || base=$$(bash scripts/debian-image.sh bookworm); \
	docker build --quiet --network none --build-arg BASE=$$base --build-arg OFFLINE=1 -t $(IMAGE) . && \
	echo "image: $(IMAGE) on $$base built in $$(( $$(date +%s) - start ))s, $$(docker image inspect --format '{{.Size}}' $(IMAGE) | awk '{printf "%.0f MB", $$1 / 1e6}')"

# the image (re)built by the tests' fixture (`make image`) and run as the DaemonSet and the sidecar example run
# it; the deb installed in Debian 11/12/13 containers (tests marked `docker`; the engine is started if needed)
image-test: install
	bash scripts/docker-engine.sh
	$(BIN)/pytest -m docker tests/test_image.py tests/test_distros.py

ci:
	$(MAKE) test PYTEST_ARGS='-m "not docker"'
	$(MAKE) packages-check
	$(MAKE) image-test

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build dist *.egg-info agent/*.egg-info packaging/wheelhouse/*.whl
