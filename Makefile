# `make demo` and `make test` each work from a fresh clone: they build .venv
# on first use and reinstall when setup.py changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.base: $(BIN)/python setup.py
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.base
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

demo: $(VENV)/.base
	$(BIN)/python examples/calculator/demo.py

test: $(VENV)/.test
	$(BIN)/python -m pytest

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/run.py --rounds 5
	$(BIN)/python benchmarks/decoding.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
