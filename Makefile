# Front door. Every target builds its own virtualenv in .venv, so a fresh Debian + Python 3.11
# machine needs nothing installed by hand.
PYTHON ?= python3
VENV   ?= .venv
# bench: the measured process trees run from $(IMAGE_VENV)/<X.Y>, one venv per Python version in
# BENCH_PYTHONS (each interpreter found by .ci/find-python), installed as images/Dockerfile installs
IMAGE_VENV    ?= .venv-image
BENCH_PYTHONS ?= 3.11 3.13
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
## The supervisor trees it measures run from $(IMAGE_VENV)/<X.Y>, one venv per version in
## BENCH_PYTHONS: the package installed from one wheel of the checkout, without setuptools, as in
## images/Dockerfile (rebuilt on every run, so it is the code checked out); run_all.py measures
## each tree-level number on each of them, labelled by version
bench: $(STAMP)
	rm -rf $(IMAGE_VENV)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(IMAGE_VENV)/wheel .
	set -e; for v in $(BENCH_PYTHONS); do \
		python=$$(.ci/find-python $$v); \
		$$python -m venv $(IMAGE_VENV)/$$v; \
		$(IMAGE_VENV)/$$v/bin/pip install --quiet $(IMAGE_VENV)/wheel/*.whl; \
		$(IMAGE_VENV)/$$v/bin/pip uninstall --quiet --quiet --yes setuptools wheel; \
	done
	$(PY) bench/run_all.py $(foreach v,$(BENCH_PYTHONS),--tree-python $(abspath $(IMAGE_VENV))/$(v)/bin/python) \
		--json bench/results.json --markdown docs/benchmarks.md

clean:
	rm -rf $(VENV) $(IMAGE_VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
