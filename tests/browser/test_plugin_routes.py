"""The plugin app inherits no Airflow authentication: each of its routes refuses an anonymous or forged caller
and answers an authenticated one. The webhook's authentication is GitHub's signature: its tests are below, with
the runs it creates checked through Airflow's REST API."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.browser.conftest import SECRET

PAGES = ["/hubflow/environments", "/hubflow/api/environments"]
WEBHOOK = "/hubflow/webhook/github"


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(server, event: str | None, payload: dict, secret: str = SECRET) -> requests.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signed(body, secret)}
    if event:
        headers["X-GitHub-Event"] = event
    return requests.post(f"{server.url}{WEBHOOK}", data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("path", PAGES)
def test_pages_refuse_anonymous_and_forged_callers(server, path):
    assert requests.get(f"{server.url}{path}", timeout=10).status_code == 401
    forged = requests.get(f"{server.url}{path}", cookies={"_token": "not-a-jwt"}, timeout=10)
    assert forged.status_code in (401, 403)
    bearer = requests.get(f"{server.url}{path}", headers={"Authorization": "Bearer " + "x" * 40}, timeout=10)
    assert bearer.status_code in (401, 403)


@pytest.mark.parametrize("path", PAGES)
def test_pages_answer_a_logged_in_user(server, path):
    assert server.api("GET", path).status_code == 200
    cookie = requests.get(f"{server.url}{path}", cookies={"_token": server.token()}, timeout=10)
    assert cookie.status_code == 200


def test_an_unsigned_delivery_is_refused(server):
    answer = requests.post(f"{server.url}{WEBHOOK}", data=b"{}", headers={"X-GitHub-Event": "push"}, timeout=10)
    assert answer.status_code == 401 and "X-Hub-Signature-256" in answer.json()["error"]
    # an Airflow login is no substitute for GitHub's signature
    assert server.api("POST", WEBHOOK, data=b"{}", headers={"X-GitHub-Event": "push"}).status_code == 401


def run(server, dag_id: str, run_id: str) -> dict | None:
    answer = server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    return answer.json() if answer.status_code == 200 else None


def test_a_signed_push_triggers_the_deploy_dag_once(server):
    sha = "c" * 40
    payload = {"ref": "refs/heads/staging", "after": sha, "deleted": False}
    first = deliver(server, "push", payload)
    run_id = f"hubflow_webhook__staging__{sha}"
    assert first.status_code == 200 and first.json() == {"triggered": run_id, "dag_id": "hubflow_deploy_staging"}
    created = run(server, "hubflow_deploy_staging", run_id)
    assert created["conf"] == {"revision": sha} and created["state"] == "queued"
    again = deliver(server, "pull_request", {"action": "closed", "pull_request": {
        "merged": True, "merge_commit_sha": sha, "base": {"ref": "staging"}}})
    assert again.json() == {"already_triggered": run_id, "dag_id": "hubflow_deploy_staging"}


def test_an_opened_pull_request_asks_for_its_preview(server):
    sha = "d" * 40
    answer = deliver(server, "pull_request", {"action": "opened", "pull_request": {
        "number": 12, "head": {"sha": sha}, "base": {"ref": "staging"}}})
    preview = server.api("GET", "/api/v2/dags/hubflow_pr_preview").status_code == 200
    if preview:
        assert answer.status_code == 200, answer.text
        assert run(server, "hubflow_pr_preview", f"hubflow_webhook__pr12__{sha}")["conf"] == {"pull": 12}
    else:
        assert answer.status_code == 202 and "no DAG hubflow_pr_preview" in answer.json()["ignored"]


def test_a_bad_signature_is_401_and_triggers_nothing(server):
    sha = "e" * 40
    answer = deliver(server, "push", {"ref": "refs/heads/prod", "after": sha}, secret="guess")
    assert answer.status_code == 401
    assert run(server, "hubflow_deploy_prod", f"hubflow_webhook__prod__{sha}") is None


@pytest.mark.parametrize("headers, problem", [
    ({"X-Hub-Signature-256": signed(b"{}")}, "X-GitHub-Event header is missing"),
    ({"X-GitHub-Event": "push", "X-Hub-Signature-256": "md5=abc"}, "not sha256=<64 hex digits>"),
])
def test_bad_headers_are_400_naming_the_header(server, headers, problem):
    answer = requests.post(f"{server.url}{WEBHOOK}", data=b"{}", headers=headers, timeout=10)
    assert answer.status_code == 400 and problem in answer.json()["error"]


def test_an_oversized_body_is_refused_before_it_is_read(server):
    """A declared length over GitHub's 25 MB cap is answered at once (the body is never sent here)."""
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST {WEBHOOK} HTTP/1.1\r\nHost: {host}\r\nX-GitHub-Event: push\r\n"
                  f"X-Hub-Signature-256: {signed(b'')}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {26 * 1024 * 1024}\r\n\r\n{{".encode())
        status_line = s.recv(4096).split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, status_line


def test_an_oversized_chunked_body_is_cut_off(server):
    """Without a declared length the relay counts what arrives and stops at the cap."""
    def chunks():
        block = b" " * (1024 * 1024)
        for _ in range(27):
            yield block

    answer = requests.post(f"{server.url}{WEBHOOK}", data=chunks(), timeout=60, headers={
        "X-GitHub-Event": "push", "X-Hub-Signature-256": signed(b"")})
    assert answer.status_code == 413
