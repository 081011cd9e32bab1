"""The instant path: a GitHub webhook relay that triggers the deploy DAG through Airflow's REST API.

GitHub -> POST /github (a `push` or a merged `pull_request` event, signed with X-Hub-Signature-256) -> the relay
checks the signature, maps the branch to its environment and triggers `hubflow_deploy_<env>` with the run conf
{"revision": sha} and the run id `hubflow_webhook__<env>__<sha>`. One merge sends both events and GitHub may
redeliver; the run id is the same for all of them, so Airflow answers 409 to every one after the first and there
is one run. The polling trigger (hubflow.airflow.triggers) stays on as the safety net: both paths end in the deploy DAG,
which re-reads the branch head and diffs from the last deployed revision, so a run for a revision already
deployed skips cleanly.

A small standalone server (stdlib only, no Airflow needed), run next to Airflow's api-server:

    HUBFLOW_WEBHOOK_SECRET=... AIRFLOW_API_URL=http://airflow-api:8080 AIRFLOW_API_TOKEN=... \\
        hubflow webhook --listen 0.0.0.0:8090 [--config include/hubflow.yaml]

Instead of AIRFLOW_API_TOKEN, AIRFLOW_API_USERNAME and AIRFLOW_API_PASSWORD make the relay fetch a JWT from
POST /auth/token (and renew it on a 401). On GitHub: repository Settings -> Webhooks -> payload URL
https://<relay>/github, content type application/json, the same secret, events "Pushes" and "Pull requests".
Secrets come from the environment only (never arguments) and never reach a log line.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from hubflow.core.config import Settings, load_settings
from hubflow.core.errors import HubflowError

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
ZERO = "0" * 40


def deploy_dag_id(env: str) -> str:
    return f"hubflow_deploy_{env}"


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """GitHub's X-Hub-Signature-256: `sha256=` + HMAC-SHA256 of the raw body with the shared secret."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(header) and hmac.compare_digest(expected, header)


class Relay:
    """Turns signed GitHub events into deploy DAG runs."""

    def __init__(self, settings: Settings, secret: str, api_url: str, token: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 10.0):
        if not secret:
            raise HubflowError("the webhook secret is empty: set HUBFLOW_WEBHOOK_SECRET to the secret GitHub "
                               "signs with")
        if not token and not (username and password):
            raise HubflowError("no Airflow credentials: set AIRFLOW_API_TOKEN, or AIRFLOW_API_USERNAME and "
                               "AIRFLOW_API_PASSWORD")
        self.branches = {env.branch: env.name for env in settings.environments}
        self.secret, self.api_url = secret, api_url.rstrip("/")
        self.token, self.username, self.password, self.timeout = token, username, password, timeout
        self.session = requests.Session()

    @classmethod
    def from_environment(cls, settings: Settings) -> "Relay":
        env = os.environ
        return cls(settings, env.get("HUBFLOW_WEBHOOK_SECRET", ""), env.get("AIRFLOW_API_URL", "http://127.0.0.1:8080"),
                   env.get("AIRFLOW_API_TOKEN"), env.get("AIRFLOW_API_USERNAME"), env.get("AIRFLOW_API_PASSWORD"))

    def handle(self, event: str, signature: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, answer) for one delivery."""
        if not signature_ok(self.secret, body, signature):
            return 401, {"error": "X-Hub-Signature-256 does not match the body and the shared secret"}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"error": "the body is not JSON (set the webhook's content type to application/json)"}
        if event == "ping":
            return 200, {"ok": "pong"}
        branch, revision = _target(event, payload)
        if branch is None:
            return 202, {"ignored": f"{event} event: nothing merged into a branch"}
        env = self.branches.get(branch)
        if env is None:
            return 202, {"ignored": f"branch {branch!r} is not an environment branch"}
        if not re.fullmatch(r"[0-9a-f]{40}", revision or ""):
            return 400, {"error": f"{event} event for {branch!r} carries no commit sha"}
        try:
            return 200, self.trigger(env, revision)
        except HubflowError as exc:
            return 502, {"error": str(exc)}

    def trigger(self, env: str, revision: str) -> dict[str, str]:
        """Trigger the deploy DAG of `env` for `revision`; a second trigger of the same revision is a no-op."""
        dag_id, run_id = deploy_dag_id(env), f"hubflow_webhook__{env}__{revision}"
        url = f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": {"revision": revision}}
        answer = self._post(url, body)
        if answer.status_code == 401 and self.username:
            self.token = None
            answer = self._post(url, body)
        if answer.status_code == 409:
            log.info("%s: run %s already exists", dag_id, run_id)
            return {"already_triggered": run_id, "dag_id": dag_id}
        if answer.status_code not in (200, 201):
            raise HubflowError(f"Airflow answered {answer.status_code} to triggering {dag_id}: {answer.text[:300]}")
        log.info("%s: triggered run %s for %s", dag_id, run_id, revision)
        return {"triggered": run_id, "dag_id": dag_id}

    def _post(self, url: str, body: dict) -> requests.Response:
        try:
            return self.session.post(url, json=body, timeout=self.timeout,
                                     headers={"Authorization": f"Bearer {self._bearer()}"})
        except requests.RequestException as exc:
            raise HubflowError(f"cannot reach Airflow at {self.api_url}: {type(exc).__name__}") from None

    def _bearer(self) -> str:
        if not self.token:
            answer = self.session.post(f"{self.api_url}/auth/token", timeout=self.timeout,
                                       json={"username": self.username, "password": self.password})
            if answer.status_code not in (200, 201):
                raise HubflowError(f"Airflow refused the relay's credentials ({answer.status_code} from /auth/token)")
            self.token = answer.json()["access_token"]
        return self.token


def _target(event: str, payload: dict) -> tuple[str | None, str | None]:
    """(branch, revision) that an event moved, or (None, None)."""
    if event == "push":
        ref = payload.get("ref") or ""
        if not ref.startswith("refs/heads/") or payload.get("deleted") or payload.get("after") in (None, ZERO):
            return None, None
        return ref.removeprefix("refs/heads/"), payload.get("after")
    if event == "pull_request":
        pr = payload.get("pull_request") or {}
        if payload.get("action") == "closed" and pr.get("merged"):
            return (pr.get("base") or {}).get("ref"), pr.get("merge_commit_sha")
    return None, None


def make_server(relay: Relay, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server with POST /github (deliveries) and GET /health; call serve_forever() on it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook %s", format % args)

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(200, {"ok": True}) if self.path == "/health" else self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/github":
                return self._answer(404, {"error": f"no such endpoint {self.path[:100]}: deliveries go to /github"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._answer(413, {"error": "payload too large"})
            status, body = relay.handle(self.headers.get("X-GitHub-Event", ""),
                                        self.headers.get("X-Hub-Signature-256"), self.rfile.read(length))
            log.info("delivery %s (%s): %d %s", self.headers.get("X-GitHub-Delivery", "?"),
                     self.headers.get("X-GitHub-Event", "?"), status, body)
            self._answer(status, body)

    return ThreadingHTTPServer((host, port), Handler)


def cli_main(args: Any) -> int:
    """`hubflow webhook --listen HOST:PORT`: serve until interrupted."""
    relay = Relay.from_environment(load_settings(args.config))
    host, _, port = args.listen.rpartition(":")
    server = make_server(relay, host or "127.0.0.1", int(port))
    print(f"hubflow webhook relay: POST http://{args.listen}/github -> {relay.api_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
