# `make demo` and `make test` each work from a fresh clone: they build .venv
# on first use and reinstall when setup.py changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.base: $(BIN)/python setup.py tls/_records.c
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

# The PostgreSQL tests (tests/pgserver.py) start a private server from the
# Debian `postgresql` package's binaries. As root (CI) install the package when
# pg_ctl is neither on PATH nor under /usr/lib/postgresql/*/bin; otherwise
# only say so (those tests then skip, or fail with CI=true). The cluster the
# package may start itself is never used.
system-deps:
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	else \
		echo "note: PostgreSQL not found; its tests will be skipped (sudo apt-get install postgresql)"; \
	fi

# The TLS files run three times: with the compiled record path (the default,
# built by `pip install -e .`), with the direct OpenSSL calls from Python
# (SYNCPB_PURE=1) and with pyOpenSSL's public methods only (SYNCPB_TLS_DIRECT=0).
TLS_TESTS = tests/test_tls_engine.py tests/test_tls_direct.py tests/test_tls_socket_steps.py tests/test_tls_e2e.py \
	tests/test_transports.py tests/interop/test_transports_interop.py

test: system-deps $(VENV)/.test
	$(BIN)/python -m pytest
	SYNCPB_PURE=1 $(BIN)/python -m pytest -q $(TLS_TESTS)
	SYNCPB_TLS_DIRECT=0 $(BIN)/python -m pytest -q $(TLS_TESTS)

bench: system-deps $(VENV)/.bench
	$(BIN)/python benchmarks/run.py --rounds 5
	$(BIN)/python benchmarks/decoding.py
	$(BIN)/python benchmarks/responsiveness.py
	$(BIN)/python benchmarks/pool_handoff.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tls/*.so
