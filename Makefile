# Two commands a user needs: `make demo` (install + train on the bundled digits) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench bench-frameworks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# headless Chromium for the report test (tests/monitor/test_report.py skips without it)
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "warning: could not install chromium (run as root: apt-get install -y chromium)"
	# a PostgreSQL server for the search workers' shared-storage test (tests/tune/test_search_postgres.py skips without)
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) || \
		echo "warning: could not install postgresql (run as root: apt-get install -y postgresql)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/babysit train --data.name=digits

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check babysit tests bench scripts

bench: $(STAMP)
	$(BIN)/python bench/loop_overhead.py
	$(BIN)/python bench/monitor_overhead.py

# babysit vs PyTorch Lightning vs Keras 3 (torch backend): their own venv, never babysit's dependencies.
# torch is pinned first so pip keeps the CPU wheel instead of pulling the CUDA one.
# Lightning and Keras live in this venv only, never in .venv
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=

$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet torch==2.13.0
	$(BENCH_VENV)/bin/pip install --quiet -e '.[bench]'
	touch $@

bench-frameworks: $(BENCH_VENV)/.installed
	KERAS_BACKEND=torch $(BENCH_VENV)/bin/python bench/frameworks.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
