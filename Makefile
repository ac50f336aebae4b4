# `make demo` and `make test` each work from a fresh clone: they build .venv
# on first use and reinstall when setup.py changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test typecheck bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.base: $(BIN)/python setup.py pyproject.toml tls/_records.c $(wildcard syncpb/_c*.pyx) $(wildcard syncpb/_c*.pxd)
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

# Real servers the tests use, from Debian's packages: PostgreSQL (the
# tests/pgserver.py tests start a private server from its binaries; the
# cluster the package may start itself is never used) and HAProxy (the
# examples/haproxy test). As root (CI) a missing one is installed; otherwise
# only said (those tests then skip, or fail with CI=true).
system-deps:
	@missing=""; \
	if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		missing="postgresql"; \
	fi; \
	if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then \
		missing="$$missing haproxy"; \
	fi; \
	if [ -z "$$missing" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	else \
		echo "note: not installed: $$missing; their tests will be skipped (sudo apt-get install $$missing)"; \
	fi

# The TLS files run three times: with the compiled record path (the default,
# built by `pip install -e .`), with the direct OpenSSL calls from Python
# (SYNCPB_PURE=1) and with pyOpenSSL's public methods only (SYNCPB_TLS_DIRECT=0).
TLS_TESTS = tests/test_tls_engine.py tests/test_tls_direct.py tests/test_tls_socket_steps.py tests/test_tls_e2e.py \
	tests/test_transports.py tests/interop/test_transports_interop.py

# mypy --strict (settings in mypy.ini) over syncpb/, tls/ and adapters/.
# setup.py installs tls/ and adapters/ as syncpb.tls and syncpb.adapters
# (package_dir), which mypy has no option for, and it cannot follow the import
# hook of the editable install either. So each run remakes a tree of symlinks,
# $(TYPECHECK)/syncpb: one per entry of syncpb/ plus tls and adapters, and mypy
# checks the package `syncpb` from inside $(TYPECHECK). Every file is reached
# under one module name only (no duplicate-module errors), files added to or
# removed from syncpb/ are picked up, and mypy's cache stays under build/.
# Errors name files as syncpb/...: syncpb/tls/X is tls/X, syncpb/adapters/X is
# adapters/X.
TYPECHECK := build/typecheck

typecheck: $(VENV)/.test
	rm -rf $(TYPECHECK)/syncpb
	mkdir -p $(TYPECHECK)/syncpb
	ln -s "$(CURDIR)"/syncpb/* $(TYPECHECK)/syncpb/
	ln -s "$(CURDIR)/tls" "$(CURDIR)/adapters" $(TYPECHECK)/syncpb/
	cd $(TYPECHECK) && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/mypy.ini" -p syncpb

# The files of the compiled twins (syncpb/_c*.pyx: the codec, the broker core
# and the sessions core) run twice: with the compiled modules (built by `pip install -e .`;
# tests/test_speedups.py checks they are the ones in use) and with the
# pure-Python reference (SYNCPB_PURE=1, which also covers the TLS files).
TWIN_TESTS = tests/test_banana.py tests/test_properties.py tests/test_properties_fuzz.py \
	tests/test_split_invariance.py tests/test_jelly_fast_paths.py tests/test_replay.py \
	tests/test_bad_input.py tests/test_speedups.py tests/test_e2e_calls.py tests/test_e2e_references.py \
	tests/test_cacheable.py tests/test_copyable.py tests/test_hot_paths.py tests/test_zero_copy.py \
	tests/test_paging.py tests/test_assembly.py tests/interop \
	tests/test_brokercore.py tests/test_portal.py tests/test_viewable.py tests/test_green_yield.py \
	tests/test_sessioncore.py tests/test_broken_sockets.py tests/test_e2e_threads.py tests/test_threaded_waiting.py \
	tests/test_call_timeout.py tests/test_call_cancel_e2e.py tests/test_waiting.py \
	tests/test_gevent_boundary.py tests/test_session_lock.py

# After the main pass, the other three (pure twins, pure TLS records, TLS
# through the wrapped socket) are independent of each other and mostly wait
# on subprocesses and sockets: they run side by side, each into a log of its
# own (build/passes/), printed in order once all have ended. Any failure
# fails the target.
PASSES := build/passes

test: system-deps $(VENV)/.test typecheck
	$(BIN)/python -m pytest
	@rm -rf $(PASSES) && mkdir -p $(PASSES)
	@echo "pure twins, pure TLS records and wrapped TLS passes, side by side ($(PASSES)/)"
	@SYNCPB_PURE=1 $(BIN)/python -m pytest -q $(TWIN_TESTS) > $(PASSES)/pure.log 2>&1 & a=$$!; \
	SYNCPB_PURE=1 $(BIN)/python -m pytest -q $(TLS_TESTS) > $(PASSES)/tls-pure.log 2>&1 & b=$$!; \
	SYNCPB_TLS_DIRECT=0 $(BIN)/python -m pytest -q $(TLS_TESTS) > $(PASSES)/tls-wrapped.log 2>&1 & c=$$!; \
	status=0; \
	for pass in pure:$$a tls-pure:$$b tls-wrapped:$$c; do \
		if wait $${pass#*:}; then result=passed; else result=FAILED; status=1; fi; \
		echo "== $${pass%%:*} pass ($(PASSES)/$${pass%%:*}.log): $$result"; \
		tail -n 5 $(PASSES)/$${pass%%:*}.log; \
		if [ $$result = FAILED ]; then cat $(PASSES)/$${pass%%:*}.log; fi; \
	done; \
	exit $$status

bench: system-deps $(VENV)/.bench
	$(BIN)/python benchmarks/run.py --rounds 5
	$(BIN)/python benchmarks/decoding.py
	$(BIN)/python benchmarks/responsiveness.py
	$(BIN)/python benchmarks/pool_handoff.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tls/*.so
