"""The lifecycle's verification task: packages from a real diff, notebook from git, token from an Airflow connection."""
import json
import logging

import pytest

from hubflow.airflow.hooks import smoke_token
from hubflow.clients.git import Repo
from hubflow.clients.smoke import SmokeError
from hubflow.clients.verification import verify_hub
from hubflow.core.settings import parse_settings
from sandbox.sample_repo import commit, git, make_sample_repo

pytestmark = pytest.mark.slow

NOTEBOOK = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    {"cell_type": "markdown", "metadata": {}, "source": "# data8 smoke"},
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
     "source": ["import websocket, yaml\n", "assert yaml.safe_load('x: [1, 2]') == {'x': [1, 2]}"]}]})


def settings_for(url, spawn_seconds=300):
    return parse_settings(f"""
repository: {{github: datahub/datahub, clone_url: /srv/datahub.git}}
environments:
  - {{name: staging, branch: staging, hub_url: "{url}", smoke_token_conn_id: hubflow_smoke_test}}
  - {{name: prod, branch: prod, hub_url: "https://{{hub}}.example.org"}}
timeouts: {{spawn_seconds: {spawn_seconds}}}
""")


@pytest.fixture
def deployed(tmp_path):
    """A merge to staging that adds packages to image primary (environment.yml, a requirements file) and a notebook."""
    root = make_sample_repo(tmp_path / "deploy")
    base = git(root, "rev-parse", "HEAD").strip()
    head = commit(root, "primary: add websocket-client and PyYAML; data8 gets a smoke notebook", {
        "images/primary/environment.yml": "name: primary\ndependencies:\n  - python=3.12\n  - numpy=2.1.3\n"
                                          "  - pip:\n    - otter-grader==6.0.0\n    - websocket-client==1.9.2\n",
        "images/primary/requirements-extra.txt": "PyYAML==6.0.4\n",
        "deployments/data8/hubflow-hub.yaml": "images: [primary]\nsmoke:\n  packages: [requests]\n"
                                              "  notebook: deployments/data8/smoke.ipynb\n  timeout_seconds: 120\n",
        "deployments/data8/smoke.ipynb": NOTEBOOK,
    })
    return Repo(root), base, head


def test_verify_hub_checks_what_the_merge_changed_and_logs_each_check(hub, deployed, monkeypatch, caplog):
    repo, base, head = deployed
    monkeypatch.delenv("HUBFLOW_SMOKE_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_SMOKE_TEST", json.dumps({"conn_type": "generic", "password": hub.token}))
    task_log = logging.getLogger("hubflow.clients.verification")
    task_log.addHandler(caplog.handler)  # Airflow's logging set-up replaces the root handlers that caplog uses
    try:
        result = verify_hub(settings_for(hub.url), "staging", "data8", repo, base, head,
                            smoke_token("hubflow_smoke_test"))  # as the Airflow task reads it
    finally:
        task_log.removeHandler(caplog.handler)
    assert result["ok"], result
    assert (result["blame"], result["retried"]) == (None, False)
    assert json.loads(json.dumps(result)) == result  # XCom-ready as it is
    assert (result["hub"], result["environment"], result["revision"]) == ("data8", "staging", head)
    assert result["packages"] == ["PyYAML==6.0.4", "websocket-client==1.9.2", "requests"]
    checks = {c["name"]: c for c in result["checks"]}
    assert {c["status"] for c in checks.values()} == {"passed"}
    assert checks["packages"]["detail"] == "3 ok: PyYAML 6.0.4, websocket-client 1.9.2, requests 2.34.2"
    assert checks["notebook"]["detail"] == "deployments/data8/smoke.ipynb: 1 code cells ran"
    logged = [r.getMessage() for r in caplog.records]
    for name in ("health", "api", "leftovers", "user", "server", "kernel", "packages", "notebook", "cleanup"):
        assert f"{name} ..." in logged and any(m.startswith("passed") and f" {name} " in m for m in logged)
    assert hub.token not in "\n".join(logged) and hub.token not in json.dumps(result)
    assert result["user"] not in hub.user_names()


def test_nightly_checks_only_the_always_list_and_a_missing_token_is_named(hub, deployed, monkeypatch):
    repo, base, head = deployed
    monkeypatch.delenv("HUBFLOW_SMOKE_TOKEN", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_HUBFLOW_SMOKE_TEST", raising=False)
    with pytest.raises(SmokeError, match="Airflow connection 'hubflow_smoke_test' has no password and "
                                         "HUBFLOW_SMOKE_TOKEN is not set"):
        verify_hub(settings_for(hub.url), "staging", "data8", repo, head, head, smoke_token("hubflow_smoke_test"))
    with pytest.raises(SmokeError, match="no smoke token"):
        verify_hub(settings_for(hub.url), "staging", "data8", repo, head, head, "")


def test_two_spawn_timeouts_fail_naming_the_spawn_limit_from_the_settings(hub, deployed):
    """Both spawns still pending, the hub reporting no failure: capacity, the platform's fault (issue 17: it was
    blamed on the revision)."""
    repo, base, head = deployed
    with hub.slow_spawns(30, times=2):
        result = verify_hub(settings_for(hub.url, spawn_seconds=2), "staging", "data8", repo, base, head, hub.token)
    assert not result["ok"]
    assert (result["blame"], result["retried"], result["user"]) == ("platform", True, "hubflow-smoke-2")
    server = next(c for c in result["checks"] if c["name"] == "server")
    assert server["detail"] == ("hubflow-smoke-2: spawn timeout: not ready within 2s (while starting the server); "
                                "retried as hubflow-smoke-2 after hubflow-smoke-1's spawn timeout: not ready within "
                                "2s (while starting the server); the server was still starting and the hub reported "
                                "no failure: capacity, not the revision")
    assert hub.user_names() == [] and hub.running_servers() == []

