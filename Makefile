# airflow_bt — `make demo` and `make test` work on a fresh machine with Python 3.10+ and network
# access to PyPI. AIRFLOW_VERSION selects the Airflow line (default 3.3.2; e.g. 2.11.2).
AIRFLOW_VERSION ?= 3.3.2
DEFAULT_AIRFLOW := 3.3.2
PYTHON ?= python3
ifeq ($(AIRFLOW_VERSION),$(DEFAULT_AIRFLOW))
VENV ?= .venv
AIRFLOW_HOME_DIR ?= .airflow
else
VENV ?= .venv-$(AIRFLOW_VERSION)
AIRFLOW_HOME_DIR ?= .airflow-$(AIRFLOW_VERSION)
endif
CONSTRAINTS := constraints/airflow-$(AIRFLOW_VERSION).txt
UV := $(shell command -v uv 2>/dev/null || echo $(PYTHON) -m uv)
DS ?= 2026-06-24
PYTEST_ARGS ?=

export AIRFLOW_VERSION VENV AIRFLOW_HOME_DIR DS

.PHONY: venv demo ui test lint typecheck unit bench bench-memory clean constraints stack-env

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(wildcard $(CONSTRAINTS))
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) venv --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(VENV)/bin/python \
	    $(if $(wildcard $(CONSTRAINTS)),--constraint $(CONSTRAINTS)) \
	    "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]"
	@touch $@

demo: venv
	@bash scripts/demo.sh

# Airflow's UI, scheduler, dag-processor and triggerer on the demo's home (after `make demo`), without Docker;
# binds 127.0.0.1:8080 (UI_ARGS="--port 8081", or --host), prints the URL and the login; Ctrl-C stops them all.
UI_ARGS ?=
ifeq ($(filter 2.%,$(AIRFLOW_VERSION)),)
ui: venv
	@$(VENV)/bin/python scripts/ui.py --home $(AIRFLOW_HOME_DIR) $(UI_ARGS)
else
ui:
	@echo "make ui runs Airflow 3's api-server, dag-processor and SimpleAuthManager; AIRFLOW_VERSION=$(AIRFLOW_VERSION) has none of them. Use the default line: make demo && make ui" >&2; exit 2
endif

# The docker-compose stack's .env: .env.example with fresh random secrets (never overwrites a .env).
stack-env:
	@$(PYTHON) scripts/stack_env.py

# Debian's docker-compose (v1) checks docker-compose.yaml in the tests, and Debian's chromium is the browser of
# the UI test: each installed when missing and apt-get runs as root; otherwise that test is skipped with the
# reason printed.
.PHONY: tools
tools:
	@command -v docker-compose >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && { echo "installing Debian's docker-compose (the compose-file syntax check)"; \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 \
	         || { apt-get update -qq >/dev/null 2>&1 \
	              && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1; }; }; } \
	    || echo "docker-compose not installed: the compose-file syntax test will be skipped"
	@# Debian's chromium, driven by Playwright in the browser test of the UI (Playwright's own download is not used)
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && { echo "installing Debian's chromium (the browser test of Airflow's UI)"; \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	         || { apt-get update -qq >/dev/null 2>&1 \
	              && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } \
	    || echo "chromium not installed: the browser test of the UI will be skipped"

# The SageMaker Python SDK v2, in a cached venv of its own (its pins need not agree with Airflow's), for
# tests/integration/test_sagemaker_sdk.py: installed here, before the tests run (skipped there if it failed).
.PHONY: sdk-env
sdk-env: venv
	@$(VENV)/bin/python tests/sdk_env.py

test: venv tools sdk-env lint typecheck
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check airflow_bt dags tests bench scripts

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

# Throughput and memory: the pipeline vs the naive pandas script, the floor and GNU split (bench/README.md).
ROWS ?= 2000000
REPEATS ?= 3
BENCH_ARGS ?=
bench: venv
	$(UV) pip install --quiet --compile-bytecode --python $(VENV)/bin/python \
	    $(if $(wildcard $(CONSTRAINTS)),--constraint $(CONSTRAINTS)) -e ".[bench]"
	$(VENV)/bin/python -m bench.run --rows $(ROWS) --repeats $(REPEATS) $(BENCH_ARGS)

bench-memory: venv
	$(UV) pip install --quiet --compile-bytecode --python $(VENV)/bin/python \
	    $(if $(wildcard $(CONSTRAINTS)),--constraint $(CONSTRAINTS)) -e ".[bench]"
	$(VENV)/bin/python -m bench.run --only-memory --repeats $(REPEATS)

# Re-pin the constraints of an Airflow line (needs PyPI).
constraints:
	echo "apache-airflow==$(AIRFLOW_VERSION)" > /tmp/airflow-bt-req.in
	$(UV) pip compile -q --python $(PYTHON) pyproject.toml /tmp/airflow-bt-req.in --extra test --extra demo --extra bench \
	    --no-header --no-annotate -o $(CONSTRAINTS)

clean:
	rm -rf .venv .venv-* .airflow .airflow-* demo-data .pytest_cache .mypy_cache .ruff_cache
