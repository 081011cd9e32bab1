# Two commands do all set-up on a fresh machine:
#   make test   venv, pinned install, system packages, then the whole test suite
#   make demo   the lifecycle on local defaults (Airflow standalone on SQLite over the sandbox)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: test demo setup system lock schema bench clean

setup: $(STAMP) node_modules/.installed system

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# configurable-http-proxy for the real JupyterHub used by the smoke tests (pinned in package-lock.json)
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages the tests use: a real OCI registry, htpasswd for its authenticated variant, and headless
# chromium for the browser tests (tests/browser).
system:
	@command -v docker-registry >/dev/null && command -v htpasswd >/dev/null && command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils chromium >/dev/null; }

# Two workers (one per core), each module on one worker: every worker has its own Airflow home, sandbox and hub.
PYTEST_ARGS ?= -n 2 --dist loadfile

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: failing"; exit $$rc

demo: setup
	$(BIN)/python -m sandbox.demo

schema: $(STAMP)
	$(BIN)/hubflow schema

bench: setup
	$(BIN)/python bench/plan_bench.py

# Re-resolve the pins from the top-level requirements (takes about two minutes).
lock:
	rm -rf /tmp/hubflow-lock && $(PY) -m venv /tmp/hubflow-lock
	/tmp/hubflow-lock/bin/pip install -q -r requirements.in
	{ echo "# Exact pins of the whole resolved set (Python 3.11). Resolve again with: make lock"; /tmp/hubflow-lock/bin/pip freeze; } > requirements.txt

clean:
	rm -rf $(VENV) node_modules .airflow
