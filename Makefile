# Front door. Every target builds its own virtualenv in .venv, so a fresh Debian + Python 3.11
# machine needs nothing installed by hand.
PYTHON ?= python3
VENV   ?= .venv
# bench: the measured process trees run from here, installed as images/Dockerfile installs
IMAGE_VENV ?= .venv-image
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: demo test lint proto bench clean venv

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(TSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

## demo: a simulated node (fake sysfs, kubelet stand-in), the full supervisor, one allocation
demo: $(STAMP)
	$(BIN)/sriov-supervisor demo

## test: the whole suite (root-only tests skip with a reason when not root)
test: $(TSTAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff (lint + format check) and mypy --strict on the package
lint: $(TSTAMP)
	$(BIN)/ruff check sriovdp tests bench docs
	$(BIN)/ruff format --check sriovdp tests bench docs
	$(BIN)/mypy

## proto: regenerate the v1beta1 Python code from sriovdp/proto/api.proto
proto: $(TSTAMP)
	$(PY) -m sriovdp.proto.generate

## bench: every benchmark; writes bench/results.json and the table in docs/benchmarks.md.
## The supervisor trees it measures run from $(IMAGE_VENV): the package installed from a wheel,
## without setuptools, as in images/Dockerfile (rebuilt on every run, so it is the code checked out)
bench: $(STAMP)
	rm -rf $(IMAGE_VENV)
	$(PYTHON) -m venv $(IMAGE_VENV)
	$(IMAGE_VENV)/bin/pip install --quiet .
	$(IMAGE_VENV)/bin/pip uninstall --quiet --yes setuptools wheel
	SRIOVDP_BENCH_PYTHON=$(abspath $(IMAGE_VENV))/bin/python \
		$(PY) bench/run_all.py --json bench/results.json --markdown docs/benchmarks.md

clean:
	rm -rf $(VENV) $(IMAGE_VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
