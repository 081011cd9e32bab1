"""The standalone webhook relay: signed GitHub deliveries -> DAG runs through Airflow's REST API, once per revision
(the same parser serves the plugin's route; tests/browser/test_plugin_routes.py runs that one in a real api-server).

Airflow's API is played by a small recorder here (the two endpoints the relay uses, with Airflow 3's shapes:
POST /auth/token, POST /api/v2/dags/{dag_id}/dagRuns answering 409 for an existing run id).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from hubflow.airflow.webhook import Relay, RestTrigger, make_server
from hubflow.core.errors import HubflowError

SECRET = "webhook-secret-0123456789"
PASSWORD = "airflow-password-9876"
JWT = "jwt-token-abcdef-123456"
SHA = "a" * 40


class FakeAirflowApi:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, dict]] = []
        self.runs: dict[str, dict] = {}
        self.dags = {"hubflow_deploy_staging", "hubflow_deploy_prod"}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append(("POST", self.path, dict(self.headers), body))
                status, answer = api.answer(self.path, self.headers.get("Authorization"), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, auth: str | None, body: dict) -> tuple[int, dict]:
        if path == "/auth/token":
            ok = body == {"username": "relay", "password": PASSWORD}
            return (201, {"access_token": JWT}) if ok else (401, {"detail": "Invalid credentials"})
        if auth != f"Bearer {JWT}":
            return 401, {"detail": "Not authenticated"}
        dag_id = path.split("/")[4]
        if dag_id not in self.dags:
            return 404, {"detail": f"The Dag with dag_id: `{dag_id}` was not found"}
        if body["dag_run_id"] in self.runs:
            return 409, {"detail": "Unique constraint violation"}
        self.runs[body["dag_run_id"]] = {"dag_id": dag_id, **body}
        return 200, {"dag_run_id": body["dag_run_id"], "state": "queued"}


@pytest.fixture
def airflow():
    api = FakeAirflowApi()
    yield api
    api.server.shutdown()
    api.server.server_close()


@pytest.fixture
def relay_url(example_settings, airflow):
    relay = Relay(example_settings, SECRET, RestTrigger(airflow.url, username="relay", password=PASSWORD))
    server = make_server(relay, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def deliver(url: str, event: str, payload: dict, secret: str = SECRET) -> requests.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return requests.post(f"{url}/github", data=body, timeout=5, headers={
        "X-GitHub-Event": event, "X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-1",
        "Content-Type": "application/json"})


def push(branch: str, after: str = SHA) -> dict:
    return {"ref": f"refs/heads/{branch}", "before": "b" * 40, "after": after, "deleted": False}


def merged_pr(base: str, sha: str = SHA) -> dict:
    return {"action": "closed", "pull_request": {"merged": True, "merge_commit_sha": sha, "base": {"ref": base}}}


def test_a_push_to_an_environment_branch_triggers_its_deploy_dag_once(relay_url, airflow, caplog):
    caplog.set_level(logging.DEBUG)
    first = deliver(relay_url, "push", push("staging"))
    assert first.status_code == 200 and first.json()["triggered"] == f"hubflow_webhook__staging__{SHA}"
    assert airflow.runs == {f"hubflow_webhook__staging__{SHA}": {
        "dag_id": "hubflow_deploy_staging", "dag_run_id": f"hubflow_webhook__staging__{SHA}", "logical_date": None,
        "conf": {"revision": SHA}}}
    # the pull_request event of the same merge and a redelivery make no second run
    assert deliver(relay_url, "pull_request", merged_pr("staging")).json()["already_triggered"]
    assert deliver(relay_url, "push", push("staging")).json()["already_triggered"]
    assert len(airflow.runs) == 1
    assert deliver(relay_url, "pull_request", merged_pr("prod", "c" * 40)).json()["dag_id"] == "hubflow_deploy_prod"
    assert [r[1] for r in airflow.requests].count("/auth/token") == 1  # the JWT is fetched once and reused
    for secret in (SECRET, PASSWORD, JWT):
        assert secret not in caplog.text


def test_a_bad_signature_is_refused_and_triggers_nothing(relay_url, airflow):
    answer = deliver(relay_url, "push", push("staging"), secret="guess")
    assert answer.status_code == 401 and "X-Hub-Signature-256" in answer.json()["error"]
    unsigned = requests.post(f"{relay_url}/github", data=b"{}", headers={"X-GitHub-Event": "push"}, timeout=5)
    assert unsigned.status_code == 401
    assert airflow.requests == []


@pytest.mark.parametrize("event, payload, reason", [
    ("push", push("feature/$(touch PWNED)"), "not an environment branch"),
    ("push", {**push("staging"), "deleted": True, "after": "0" * 40}, "nothing merged"),
    ("push", {"ref": "refs/tags/v1", "after": SHA}, "nothing merged"),
    ("pull_request", {"action": "opened", "pull_request": {"number": 3, "head": {"sha": SHA},
                                                           "base": {"ref": "feature"}}}, "not an environment branch"),
    ("pull_request", {"action": "closed", "pull_request": {"merged": False, "base": {"ref": "staging"}}},
     "nothing merged"),
    ("issues", {"action": "opened"}, "nothing merged"),
])
def test_events_that_merge_nothing_into_an_environment_are_ignored(relay_url, airflow, event, payload, reason):
    answer = deliver(relay_url, event, payload)
    assert answer.status_code == 202 and reason in answer.json()["ignored"]
    assert airflow.requests == []


def opened(number=12, head=SHA, base="staging", action="opened") -> dict:
    return {"action": action, "pull_request": {"number": number, "head": {"sha": head}, "base": {"ref": base}}}


def test_a_pull_request_against_an_environment_asks_for_its_preview_when_that_dag_exists(relay_url, airflow):
    absent = deliver(relay_url, "pull_request", opened())
    assert absent.status_code == 202 and "no DAG hubflow_pr_preview" in absent.json()["ignored"]
    airflow.dags.add("hubflow_pr_preview")
    assert deliver(relay_url, "pull_request", opened()).json()["triggered"] == f"hubflow_webhook__pr12__{SHA}"
    assert deliver(relay_url, "pull_request", opened(action="reopened")).json()["already_triggered"]
    newer = deliver(relay_url, "pull_request", opened(head="c" * 40, action="synchronize")).json()
    assert newer["triggered"] == f"hubflow_webhook__pr12__{'c' * 40}"
    assert airflow.runs[newer["triggered"]]["conf"] == {"pull": 12}
    assert deliver(relay_url, "pull_request", opened(number="12")).status_code == 400


def test_headers_that_are_missing_or_malformed_are_named(relay_url, airflow):
    body = b"{}"
    no_event = requests.post(f"{relay_url}/github", data=body, timeout=5, headers={
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()})
    assert no_event.status_code == 400 and "X-GitHub-Event" in no_event.json()["error"]
    sha1 = requests.post(f"{relay_url}/github", data=body, timeout=5,
                         headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha1=abc"})
    assert sha1.status_code == 400 and "sha256=<64 hex digits>" in sha1.json()["error"]
    assert airflow.requests == []


def test_ping_bad_json_and_bad_sha(relay_url, airflow):
    assert deliver(relay_url, "ping", {"zen": "Keep it logically awesome."}).json() == {"ok": "pong"}
    assert deliver(relay_url, "push", push("staging", after="{{ 7*7 }}")).status_code == 400
    body = b"not json"
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = requests.post(f"{relay_url}/github", data=body, timeout=5,
                           headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    assert airflow.requests == []


def test_airflow_refusing_the_relay_is_a_502_that_says_why(example_settings, airflow):
    relay = Relay(example_settings, SECRET, RestTrigger(airflow.url, username="relay", password="wrong"))
    body = json.dumps(push("staging")).encode()
    status, answer = relay.handle("push", "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
                                  body)
    assert status == 502 and "refused the relay's credentials (401" in answer["error"]


def test_the_relay_refuses_to_start_without_secret_or_credentials(example_settings):
    with pytest.raises(HubflowError, match="HUBFLOW_WEBHOOK_SECRET"):
        Relay(example_settings, "", RestTrigger("http://127.0.0.1:8080", token="t"))
    with pytest.raises(HubflowError, match="AIRFLOW_API_TOKEN"):
        RestTrigger("http://127.0.0.1:8080")


def test_hubflow_webhook_command_serves_the_relay(airflow, tmp_path):
    """The documented way to run it: `hubflow webhook --listen`, secrets from the environment only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HUBFLOW_WEBHOOK_SECRET=SECRET, AIRFLOW_API_URL=airflow.url, AIRFLOW_API_TOKEN=JWT,
               PYTHONPATH="plugins")
    proc = subprocess.Popen([sys.executable, "-m", "hubflow.cli", "webhook", "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.1)
        assert deliver(url, "push", push("prod")).json()["dag_id"] == "hubflow_deploy_prod"
        assert list(airflow.runs) == [f"hubflow_webhook__prod__{SHA}"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "POST http://127.0.0.1:" in output and SECRET not in output and JWT not in output
