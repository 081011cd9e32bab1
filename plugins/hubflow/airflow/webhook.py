"""The instant path: GitHub webhook deliveries turned into DAG runs, checked and parsed in one place.

GitHub -> a signed delivery (X-Hub-Signature-256) -> `Relay.handle` checks the headers and the signature, then:
- a `push` to an environment branch, or a merged `pull_request` into one, triggers `hubflow_deploy_<env>` with the
  run conf {"revision": sha} and the run id `hubflow_webhook__<env>__<sha>`. One merge sends both events and GitHub
  may redeliver; the run id is the same for all of them, so there is one run (the others answer "already_triggered");
- a `pull_request` opened, synchronized or reopened against an environment branch triggers `hubflow_pr_preview`
  with {"pull": number} (run id `hubflow_webhook__pr<number>__<head sha>`), when that DAG exists.
The polling trigger (hubflow.airflow.triggers) stays on as the safety net: the deploy DAG re-reads the branch head
and diffs from the last deployed revision, so a run for a revision already deployed skips cleanly.

Two ways to run it, one parser:
- inside Airflow's api-server, as POST /hubflow/webhook/github of the hubflow UI plugin (hubflow.airflow.plugin),
  which creates the runs in-process; the secret is HUBFLOW_WEBHOOK_SECRET in the api-server's environment;
- standalone, for setups without the plugin (stdlib server, triggers through Airflow's REST API):

    HUBFLOW_WEBHOOK_SECRET=... AIRFLOW_API_URL=http://airflow-api:8080 AIRFLOW_API_TOKEN=... \\
        hubflow webhook --listen 0.0.0.0:8090 [--config include/hubflow.yaml]

  Instead of AIRFLOW_API_TOKEN, AIRFLOW_API_USERNAME and AIRFLOW_API_PASSWORD make the relay fetch a JWT from
  POST /auth/token (and renew it on a 401); deliveries go to https://<relay>/github.
On GitHub: repository Settings -> Webhooks -> the payload URL, content type application/json, the same secret,
events "Pushes" and "Pull requests". Secrets come from the environment only (never arguments) and never reach a log.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import requests

from hubflow.core.deploy import deploy_dag_id
from hubflow.core.errors import HubflowError
from hubflow.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
ZERO = "0" * 40
SHA = re.compile(r"[0-9a-f]{40}")
PREVIEW_DAG = "hubflow_pr_preview"
PREVIEW_ACTIONS = ("opened", "synchronize", "reopened")
SECRET_ENV = "HUBFLOW_WEBHOOK_SECRET"


class NoSuchDag(HubflowError):
    """Airflow has no DAG of that id (the PR preview DAG is optional)."""


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_id: str
    conf: dict[str, Any]
    optional: bool = False  # a DAG that may not be installed: its absence is an ignored event, not an error


Trigger = Callable[[Run], dict[str, str]]  # creates the run; {"triggered"|"already_triggered": run_id, "dag_id"}


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """GitHub's X-Hub-Signature-256: `sha256=` + HMAC-SHA256 of the raw body with the shared secret."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(header) and hmac.compare_digest(expected, header)


def header_problem(event: str | None, signature: str | None) -> tuple[int, str] | None:
    """(status, what is wrong) with a delivery's headers, or None. Unsigned is unauthenticated (401); a missing
    event or a signature of the wrong form is a bad request (400)."""
    if not signature:
        return 401, "the X-Hub-Signature-256 header is missing: give the webhook a secret"
    if not event:
        return 400, "the X-GitHub-Event header is missing"
    if not re.fullmatch(r"sha256=[0-9a-f]{64}", signature):
        return 400, "the X-Hub-Signature-256 header is not sha256=<64 hex digits>"
    return None


class Relay:
    """Turns signed GitHub events into DAG runs through `trigger`."""

    def __init__(self, settings: Settings, secret: str, trigger: Trigger):
        if not secret:
            raise HubflowError(f"the webhook secret is empty: set {SECRET_ENV} to the secret GitHub signs with")
        self.branches = {env.branch: env.name for env in settings.environments}
        self.secret, self.trigger = secret, trigger

    @classmethod
    def from_environment(cls, settings: Settings) -> "Relay":
        """The standalone relay: secret and Airflow REST credentials from the environment."""
        return cls(settings, os.environ.get(SECRET_ENV, ""), RestTrigger.from_environment())

    def handle(self, event: str | None, signature: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, answer) for one delivery."""
        problem = header_problem(event, signature)
        if problem:
            return problem[0], {"error": problem[1]}
        if len(body) > MAX_BODY:
            return 413, {"error": f"the body is larger than {MAX_BODY} bytes"}
        if not signature_ok(self.secret, body, signature):
            return 401, {"error": "X-Hub-Signature-256 does not match the body and the shared secret"}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"error": "the body is not JSON (set the webhook's content type to application/json)"}
        if not isinstance(payload, dict):
            return 400, {"error": "the body is not a JSON object"}
        if event == "ping":
            return 200, {"ok": "pong"}
        run = self.run_for(event, payload)
        if not isinstance(run, Run):
            return run
        try:
            return 200, self.trigger(run)
        except NoSuchDag as exc:
            if run.optional:
                return 202, {"ignored": f"{event} event: no DAG {run.dag_id} in this Airflow"}
            return 502, {"error": str(exc)}
        except HubflowError as exc:
            return 502, {"error": str(exc)}

    def run_for(self, event: str, payload: dict) -> Run | tuple[int, dict[str, str]]:
        """The run an event asks for, or the (status, answer) that says why there is none."""
        pr = payload.get("pull_request") if event == "pull_request" else None
        if isinstance(pr, dict) and payload.get("action") in PREVIEW_ACTIONS:
            branch, number, head = _ref(pr, "base"), pr.get("number"), (pr.get("head") or {}).get("sha")
            if branch not in self.branches:
                return 202, {"ignored": f"pull request against {branch!r}, not an environment branch"}
            if not isinstance(number, int) or isinstance(number, bool) or not SHA.fullmatch(str(head or "")):
                return 400, {"error": f"pull_request event for {branch!r} carries no number or head sha"}
            return Run(PREVIEW_DAG, f"hubflow_webhook__pr{number}__{head}", {"pull": number}, optional=True)
        branch, revision = _target(event, payload)
        if branch is None:
            return 202, {"ignored": f"{event} event: nothing merged into a branch"}
        env = self.branches.get(branch)
        if env is None:
            return 202, {"ignored": f"branch {branch!r} is not an environment branch"}
        if not SHA.fullmatch(str(revision or "")):
            return 400, {"error": f"{event} event for {branch!r} carries no commit sha"}
        return Run(deploy_dag_id(env), f"hubflow_webhook__{env}__{revision}", {"revision": revision})


class RestTrigger:
    """Creates runs through Airflow's REST API (the standalone relay); a second trigger of a run id is a no-op."""

    def __init__(self, api_url: str, token: str | None = None, username: str | None = None,
                 password: str | None = None, timeout: float = 10.0):
        if not token and not (username and password):
            raise HubflowError("no Airflow credentials: set AIRFLOW_API_TOKEN, or AIRFLOW_API_USERNAME and "
                               "AIRFLOW_API_PASSWORD")
        self.api_url = api_url.rstrip("/")
        self.token, self.username, self.password, self.timeout = token, username, password, timeout
        self.session = requests.Session()

    @classmethod
    def from_environment(cls) -> "RestTrigger":
        env = os.environ
        return cls(env.get("AIRFLOW_API_URL", "http://127.0.0.1:8080"), env.get("AIRFLOW_API_TOKEN"),
                   env.get("AIRFLOW_API_USERNAME"), env.get("AIRFLOW_API_PASSWORD"))

    def __call__(self, run: Run) -> dict[str, str]:
        url = f"{self.api_url}/api/v2/dags/{run.dag_id}/dagRuns"
        body = {"dag_run_id": run.run_id, "logical_date": None, "conf": run.conf}
        answer = self._post(url, body)
        if answer.status_code == 401 and self.username:
            self.token = None
            answer = self._post(url, body)
        if answer.status_code == 409:
            log.info("%s: run %s already exists", run.dag_id, run.run_id)
            return {"already_triggered": run.run_id, "dag_id": run.dag_id}
        if answer.status_code == 404:
            raise NoSuchDag(f"Airflow has no DAG {run.dag_id}")
        if answer.status_code not in (200, 201):
            raise HubflowError(f"Airflow answered {answer.status_code} to triggering {run.dag_id}: "
                               f"{answer.text[:300]}")
        log.info("%s: triggered run %s", run.dag_id, run.run_id)
        return {"triggered": run.run_id, "dag_id": run.dag_id}

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


def _ref(pr: dict, side: str) -> str | None:
    return (pr.get(side) or {}).get("ref")


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
            return _ref(pr, "base"), pr.get("merge_commit_sha")
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
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._answer(400, {"error": "the Content-Length header is not a number"})
            if length > MAX_BODY:
                return self._answer(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
            status, body = relay.handle(self.headers.get("X-GitHub-Event"),
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
    print(f"hubflow webhook relay: POST http://{args.listen}/github -> {relay.trigger.api_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
