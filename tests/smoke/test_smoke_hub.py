"""Verifications against a real JupyterHub on loopback: what passes, what fails and how it says so, and cleanup."""
import contextlib
import json
import socket
import threading
import time

import pytest
import requests

from hubflow.packages import parse_package
from hubflow.smoke import CHECKS, parse_notebook, verify

pytestmark = pytest.mark.slow


def statuses(result):
    return {c.name: c.status for c in result.checks}


def detail(result, name):
    return result.check(name).detail


def notebook(*cells):
    return parse_notebook(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "source": c, "metadata": {}, "outputs": [], "execution_count": None} if c.strip()
        else {"cell_type": "markdown", "source": "notes", "metadata": {}} for c in cells]}), "smoke.ipynb")


CRASHED = "hubflow-smoke-1700000000-abc123"  # a run that crashed mid-spawn: its deadline is long past
RUNNING = f"hubflow-smoke-{int(time.time()) + 3600}-def456"  # another verification, still within its time


@pytest.fixture(scope="module")
def failing_run(hub):
    """One verification with a missing package, a pin that differs from what is installed, a package whose import
    kills the kernel, and a failing cell; on a hub where an earlier run crashed while its server was spawning."""
    hub.add_package("segfaulty", "1.0", "import os\nos._exit(139)  # as a broken C extension would\n")
    for name in (CRASHED, RUNNING, "alice"):
        assert hub.api("POST", f"/users/{name}").status_code == 201
    with contextlib.suppress(requests.Timeout):  # leave the spawn pending, as the crashed run did
        requests.post(f"{hub.url}/hub/api/users/{CRASHED}/server", headers={"Authorization": f"token {hub.token}"},
                      timeout=0.5)
    packages = [parse_package(p) for p in ("requests", "segfaulty", "nosuchpkg-hubflow", "PyYAML==5.4.1",
                                           "tornado==6.6.*")]
    nb = notebook("import yaml\nvalue = yaml.safe_load('a: 1')", " ", "assert value == {'a': 2}, 'wrong value'")
    yield verify(hub.url, hub.token, packages, nb, timeout=120)
    for name in (RUNNING, "alice"):
        hub.api("DELETE", f"/users/{name}")


def test_missing_package_fails_naming_it(failing_run):
    assert not failing_run.ok
    assert failing_run.check("packages").status == "failed"
    assert "nosuchpkg-hubflow is not installed" in detail(failing_run, "packages")
    assert "requests" not in detail(failing_run, "packages")  # installed packages are not reported as problems


def test_pinned_version_mismatch_names_both_versions(failing_run):
    assert "PyYAML: installed 6.0.4, pinned 5.4.1" in detail(failing_run, "packages")
    assert "tornado" not in detail(failing_run, "packages")  # 6.6.1 matches the prefix pin 6.6.*


def test_a_package_that_kills_the_kernel_is_named_and_the_rest_are_still_checked(failing_run):
    assert detail(failing_run, "packages") == ("segfaulty: the kernel died; nosuchpkg-hubflow is not installed; "
                                               "PyYAML: installed 6.0.4, pinned 5.4.1")


def test_notebook_cell_error_names_the_cell(failing_run):  # in the kernel restarted after the crash
    assert failing_run.check("notebook").status == "failed"
    assert detail(failing_run, "notebook") == ("smoke.ipynb: cell 3 (\"assert value == {'a': 2}, 'wrong value'\") "
                                               "failed: AssertionError: wrong value")


def test_a_failing_run_still_cleans_up(failing_run):
    assert statuses(failing_run) == {"health": "passed", "api": "passed", "leftovers": "passed", "user": "passed",
                                     "server": "passed", "kernel": "passed", "packages": "failed",
                                     "notebook": "failed", "cleanup": "passed"}
    assert "kernel deleted" in detail(failing_run, "cleanup")
    assert f"user {failing_run.user} deleted" in detail(failing_run, "cleanup")


def test_hub_down_fails_clearly_and_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t = time.monotonic()
    result = verify(f"http://127.0.0.1:{port}", "sometoken", [parse_package("numpy")], timeout=300)
    assert time.monotonic() - t < 30
    assert not result.ok
    assert result.check("health").status == "failed"
    assert detail(result, "health") == "GET /hub/health: connection refused"
    assert [c.status for c in result.checks[1:]] == ["skipped"] * (len(CHECKS) - 1)
    assert detail(result, "server") == "not run: health failed"


def test_hub_that_accepts_but_never_answers_fails_in_under_30s():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        held = []
        stop = threading.Event()

        def accept():  # take connections and say nothing, like a wedged ingress
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(server.accept()[0])
                except OSError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        t = time.monotonic()
        try:
            result = verify(f"http://127.0.0.1:{server.getsockname()[1]}", "sometoken", timeout=300)
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()
    assert time.monotonic() - t < 30
    assert detail(result, "health") == "GET /hub/health: no answer in time"


def test_a_refused_token_and_a_token_without_the_scopes_are_named(clean_hub):
    result = verify(clean_hub.url, "not-a-token", timeout=60)
    assert detail(result, "api") == "the hub refused the smoke token (GET /hub/api/user answered 403)"
    assert detail(result, "user") == "not run: api failed"
    assert clean_hub.api("POST", "/users/bob").status_code == 201
    try:
        bob = clean_hub.api("POST", "/users/bob/tokens", json={"expires_in": 60}).json()["token"]
        result = verify(clean_hub.url, bob, timeout=60)
    finally:
        clean_hub.api("DELETE", "/users/bob")
    assert detail(result, "api") == ("the smoke token lacks scopes admin:users, servers, tokens, list:users "
                                     "(needs admin:users, servers, tokens, list:users)")
    assert statuses(result)["cleanup"] == "skipped"


def test_spawn_failure_fails_with_the_hubs_reason_and_removes_the_user(clean_hub):
    with clean_hub.fail_spawns():
        result = verify(clean_hub.url, clean_hub.token, [parse_package("requests")], timeout=120)
    assert not result.ok
    assert statuses(result)["server"] == "failed"
    assert detail(result, "server") == (
        "the hub could not start the server: Spawn failed: cannot start the server: test switch fail-spawns is on "
        "(POST /hub/api/users/{user}/server answered 500)")
    assert detail(result, "kernel") == "not run: server failed"
    assert statuses(result)["cleanup"] == "passed"
    assert result.user not in clean_hub.user_names()


def test_the_time_limit_bounds_the_verification_and_a_pending_spawn_is_cleaned_up(clean_hub):
    t = time.monotonic()
    result = verify(clean_hub.url, clean_hub.token, [parse_package("requests")], timeout=2)
    assert statuses(result)["server"] == "failed"
    assert detail(result, "server").startswith("timed out after 2s (limit 2s) while starting the server")
    assert statuses(result)["cleanup"] == "passed"
    assert time.monotonic() - t < 2 + 15  # cleanup of a pending spawn: the hub cancels it, then stops the server
    assert result.user not in clean_hub.user_names()


def test_leftovers_of_a_crashed_run_are_removed_and_a_running_one_is_kept(failing_run, hub):
    assert detail(failing_run, "leftovers") == f"removed 1: {CRASHED}"
    users = hub.user_names()
    assert CRASHED not in users and RUNNING in users and "alice" in users
    assert failing_run.user not in users
    assert hub.running_servers() == []


def test_the_service_token_never_appears_in_the_result(failing_run, hub):
    text = json.dumps(failing_run.to_dict())
    assert hub.token not in text
    assert "token scoped to its server, expires in" in detail(failing_run, "user")
