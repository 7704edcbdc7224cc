# smartpole: two commands for a newcomer, `make demo` and `make test`.
# Every target sets up what it needs first: system packages (apt-get, only when missing),
# the virtual environment in .venv, and the project with its pinned dependencies.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# mypy cannot follow setuptools' editable-install import hook for our renamed packages,
# so it reads the sources through this link tree that mirrors the installed names.
TYPECHECK_VIEW := $(VENV)/typecheck
DURATION ?= 20
PYTEST_ARGS ?=
# Debian architecture `make package` builds for: amd64 or arm64 (no emulation needed).
ARCH ?= amd64

.PHONY: help setup system demo test lint typecheck contracts unit unit-first unit-rest package-check firmware soak bench lock clean

help:
	@echo "make demo   - run a simulated smart pole for $(DURATION) s (DURATION=0: until Ctrl-C)"
	@echo "make test   - lint, type-check, check the import contracts and run the whole test suite"
	@echo "make bench  - run the benchmarks in bench/, one 'BENCH name value unit' line each"
	@echo "make soak   - the long soak tests that 'make test' leaves out"
	@echo "make package [ARCH=arm64] - build dist/smartpole_<version>_<arch>.deb (default amd64)"

setup: system $(INSTALLED)

system:
	@scripts/setup-system.sh

$(INSTALLED): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "smartpole needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@mkdir -p $(TYPECHECK_VIEW)/smartpole
	@for pkg in agent drivers models; do ln -sfn "$(CURDIR)/$$pkg" "$(TYPECHECK_VIEW)/smartpole/$$pkg"; done
	@touch $@

demo: setup
	$(BIN)/smartpole demo --config configs/poles/demo.yaml --duration $(DURATION)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy package/build_deb.py
	MYPYPATH=$(TYPECHECK_VIEW) $(BIN)/mypy -p smartpole.agent -p smartpole.drivers -p smartpole.models
	# The release switcher runs outside the venv, standard library only (package/).
	MYPYPATH=package $(BIN)/mypy --strict package/smartpole_release.py package/smartpole_release_base.py

# The import contracts in pyproject.toml ([tool.importlinter]): which folder may import which.
# Read through the same link tree as mypy, so they check this checkout whatever is installed.
contracts: setup
	PYTHONPATH=$(TYPECHECK_VIEW) $(BIN)/lint-imports --no-cache --no-logo

# --durations: the slowest tests in every run's log, to keep `make test` within its budget
# (20 minutes on a 2-core machine). The suite runs as two pytest processes side by side,
# each with its own temporary folder: most tests wait on real processes, sockets and
# timers rather than compute, so one process alone left a core idle most of the time.
UNIT_FIRST := tests/system tests/models
unit: setup
	$(MAKE) --no-print-directory -j2 --output-sync=target unit-first unit-rest

unit-first: setup
	$(BIN)/pytest -m "not soak" $(UNIT_FIRST) --basetemp="$${TMPDIR:-/tmp}/smartpole-unit-first" --durations=15 $(PYTEST_ARGS)

unit-rest: setup
	$(BIN)/pytest -m "not soak" --ignore=tests/package $(addprefix --ignore=,$(UNIT_FIRST)) --basetemp="$${TMPDIR:-/tmp}/smartpole-unit-rest" --durations=15 $(PYTEST_ARGS)

# The .deb built for amd64 and arm64 and installed, upgraded, rolled back and purged in a
# Debian root (tests/package). Mostly downloads, dpkg and pip: `make test` runs it beside the
# unit tests, in its own pytest with its own temporary folder.
package-check: setup system
	$(BIN)/pytest tests/package --basetemp="$${TMPDIR:-/tmp}/smartpole-package-check" $(PYTEST_ARGS)

# The MCU's C library (firmware-bridge/c): unit and vector tests, sanitizers, a bounded fuzz run,
# and the Cortex-M0+/M4 images (-Werror, linked to fit 32 KiB flash / 4 KiB RAM).
firmware: system
	$(MAKE) -C firmware-bridge/c test sanitize fuzz mcu

test: lint typecheck contracts firmware
	$(MAKE) --no-print-directory -j3 --output-sync=target unit-first unit-rest package-check

soak: setup
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run_all.py

# Re-pin after changing the ranges in pyproject.toml; then run `make test` and commit both.
lock: setup
	$(BIN)/python -m pip install --quiet --upgrade -e '.[dev,bench]'
	{ sed -n '1,2p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable --all | grep -v '^pip=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# The Debian package: the project's wheel and the locked runtime wheels for ARCH, downloaded
# by tag (dependency wheels are cached in ~/.cache/smartpole/wheels/ARCH between builds).
.PHONY: package
package: setup
	$(BIN)/python package/build_deb.py --arch $(ARCH)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
