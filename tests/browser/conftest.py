"""One real Airflow 3.3 api-server for the browser tests, with the hubflow plugin, the project's DAGs and a ledger
holding deploys of the sample deployment repository; and one headless Chromium logged in as the admin.

The DAGs parse against sandbox settings (the GitHub emulator over a bare copy of the sample repository) and are
serialized once with `airflow dags reserialize`; no scheduler runs, so triggered runs stay queued, which is all the
tests look at. Every process started here is stopped at the end of the session, also when a test fails.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox.registry_server import free_port
from tests import airflow_support
from tests.browser.cdp import Chromium

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
PLUGINS = ROOT / "plugins"
DOCS = ROOT / "docs"
SECRET = "browser-webhook-secret-42"
USERS = {"admin": "admin-pass-1", "viewer": "viewer-pass-2"}


class Server:
    """The api-server's address and what the tests need to talk to it as a person or a client would."""

    def __init__(self, url: str, env: dict[str, str], ledger_url: str, origin: Path):
        self.url, self.env, self.ledger_url, self.origin = url, env, ledger_url, origin
        self._tokens: dict[str, str] = {}

    def token(self, user: str = "admin") -> str:
        if user not in self._tokens:
            answer = requests.post(f"{self.url}/auth/token", json={"username": user, "password": USERS[user]},
                                   timeout=10)
            assert answer.status_code in (200, 201), answer.text
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "admin", headers: dict | None = None,
            **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", timeout=30,
                                headers={**(headers or {}), "Authorization": f"Bearer {self.token(user)}"}, **kwargs)


def _airflow(*args: str, env: dict[str, str], timeout: int = 300) -> None:
    proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _stop(proc: subprocess.Popen) -> None:
    """Stop the process started here and its children (it leads its own session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from sandbox.github_emulator import TOKEN, GitHubEmulator
    from sandbox.sample_repo import make_sample_repo
    from sandbox.world import SETTINGS

    root = tmp_path_factory.mktemp("browser")
    home = airflow_support.setup_environment()
    airflow_support.migrate()
    # a metadata database of its own: the api-server lives for the whole session, and a second process writing the
    # worker's SQLite file would lock out the dag.test runs of later test modules on this worker
    database = root / "airflow.db"
    shutil.copyfile(home / "airflow.db", database)
    make_sample_repo(root / "work", bare=root / "origin.git")
    github = GitHubEmulator(root / "origin.git").start()
    settings = root / "hubflow.yaml"
    settings.write_text(SETTINGS.format(clone_url=github.clone_url, hub_url="http://127.0.0.1:9/{hub}/", poll=3600,
                                        deferrable="false"))
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ledger_url = f"sqlite:///{root}/ledger.db"
    env = dict(
        os.environ,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{database}",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET="browser-tests-jwt-secret-0123456789abcdef",
        AIRFLOW__API__SECRET_KEY="browser-tests-secret-key",
        HUBFLOW_CONFIG=str(settings),
        HUBFLOW_CACHE=str(root / "cache"),
        HUBFLOW_WEBHOOK_SECRET=SECRET,
        AIRFLOW_CONN_GITHUB_DEFAULT=json.dumps({"conn_type": "github", "host": github.url, "password": TOKEN}),
        AIRFLOW_CONN_HUBFLOW_LEDGER=json.dumps({"conn_type": "generic", "extra": {"url": ledger_url}}),
    )
    started = time.monotonic()
    _airflow("dags", "reserialize", env=env)
    log = open(root / "api-server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "api-server", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                f"the api-server did not come up:\n{(root / 'api-server.log').read_text()[-4000:]}"
            time.sleep(0.3)
        print(f"\nbrowser tests: DAGs serialized and api-server up in {time.monotonic() - started:.1f}s "
              f"(AIRFLOW_HOME {home})")
        yield Server(url, env, ledger_url, root / "origin.git")
    finally:
        _stop(proc)
        log.close()
        github.stop()


@pytest.fixture(scope="session")
def browser(server):
    """Chromium with the admin's JWT in the `_token` cookie, as the UI's own login leaves it."""
    chrome = Chromium()
    try:
        chrome.set_cookie(server.url, "_token", server.token("admin"))
        yield chrome
    finally:
        chrome.close()


@pytest.fixture(scope="session")
def docs(tmp_path_factory) -> Path:
    """Where screenshots go: docs/ (the README's pictures) with HUBFLOW_SCREENSHOTS=docs, else a temporary folder,
    so a test run never rewrites tracked files."""
    if os.environ.get("HUBFLOW_SCREENSHOTS") == "docs":
        DOCS.mkdir(exist_ok=True)
        return DOCS
    return tmp_path_factory.mktemp("screenshots")
