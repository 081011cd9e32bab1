"""Verification: prove a freshly deployed hub works, the way a person would, through its public URL.

The hub answers; the smoke user `hubflow-smoke-1` gets a server; a kernel on that server imports every package that
must be there (at its pinned version); an optional notebook runs cell by cell; and, whatever happened, the kernel,
the server and the user are removed. A spawn that runs out of its own time budget (spawn_timeout) is retried once as
`hubflow-smoke-2` before the revision is blamed: a slow spawn is often the cluster (a node scaling up, an image
pull), and a second name gets a fresh pod and volume (in z2jh a user's PVC outlives the user, and a pod that is
still terminating blocks a new one of the same name). Each check has a status, a duration and a detail that names
the endpoint, the package or the cell, so the ledger, the commit comment and Slack can say what broke; `blame` says
whose fault a failure is (see blame_of).

Least privilege: the service token may touch only these two users (JupyterHub scope filters), so a leaked token
cannot read or act for anyone else. Fixed names are what makes that possible (a filter names users; it cannot
match a prefix). In z2jh values:

    hub:
      services:
        hubflow-smoke: {}          # api_token: set from a secret
      loadRoles:
        hubflow-smoke:
          services: [hubflow-smoke]
          scopes:
            - admin:users!user=hubflow-smoke-1   # create and delete the user
            - servers!user=hubflow-smoke-1       # start, follow and stop its server
            - tokens!user=hubflow-smoke-1        # issue the user's own short-lived token
            - admin:users!user=hubflow-smoke-2
            - servers!user=hubflow-smoke-2
            - tokens!user=hubflow-smoke-2

The service never uses a server itself (no access:servers): the kernel is reached with the user's own token, which
holds access to that user's server as every user's token does. read:hub and list:users are not needed either.
Users left by a crashed run (the same fixed names) are stopped and removed first; a user whose run token has not
expired belongs to a verification still running, which is waited for, never removed.

Plain Python (requests against the hub's REST API; the kernel in hubflow.clients.kernel, the package probe in
hubflow.clients.probe, the notebook in hubflow.clients.notebook): the CLI, the Airflow task and the tests use it
alike. The service token goes in a header only and never into a detail; the server is used with a short-lived token
scoped to that user. Idempotent requests are retried under hubflow's one policy (hubflow.clients.retry).
The nightly DAG file imports this module at parse time (CLEANUP_SECONDS sizes a timeout): its imports stay light,
and the kernel's (jupyter_client, zmq) and the retry policy load when they are used.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

import requests
import websocket

from hubflow.core.errors import HubflowError
from hubflow.core.packages import Package

if TYPE_CHECKING:
    from hubflow.clients.kernel import Kernel
    from hubflow.clients.notebook import Notebook

# the first spawn's user, the retry's; never the service's own name (the hub refuses to let it delete "itself")
SMOKE_USERS = ("hubflow-smoke-1", "hubflow-smoke-2")
CHECKS = ("health", "api", "leftovers", "user", "server", "kernel", "packages", "notebook", "cleanup")
# the smoke role's scopes, exactly (the module docstring has them as z2jh values)
NEEDED_SCOPES = tuple(f"{scope}!user={user}" for user in SMOKE_USERS
                      for scope in ("admin:users", "servers", "tokens"))
RUN_NOTE = "hubflow smoke verification"  # the note on the smoke user's token: a run holds the user until it expires
CLEANUP_SECONDS = 30  # cleanup may run this long past the deadline: leaving a user behind is worse than a late result
RETRY_ATTEMPTS = 3  # tries of an idempotent request (network errors, 502-504)


class SmokeError(HubflowError):
    """The verification cannot be attempted as asked (bad URL, no token, unreadable notebook)."""


class _Failed(Exception):
    """A check failed; the message is the detail people read."""

    blame = "revision"


class _PlatformFault(_Failed):
    """A failure that is not the hub's doing: nothing answers at its URL, or hubflow's token is refused."""

    blame = "platform"


class _NoAnswer(_Failed):
    """No HTTP answer (DNS, connection, TLS, no answer in time); whose fault depends on the step."""


class _Unavailable(_Failed):
    """A gateway's 502, 503 or 504: the hub behind it may answer the next time."""


class _SpawnTimeout(_Failed):
    """The spawn used up its own budget (the overall limit still had time): worth one retry."""


class _Skipped(Exception):
    """A check has nothing to do; the message says why."""


@dataclass
class Check:
    name: str
    status: str = "skipped"  # passed | failed | skipped (running while it runs)
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Verification:
    hub_url: str
    ok: bool = False
    hub_version: str | None = None
    user: str | None = None
    seconds: float = 0.0
    blame: str | None = None  # "platform" | "revision" when not ok (see blame_of)
    retried: bool = False  # the first spawn timed out and a second user was tried
    checks: list[Check] = field(default_factory=lambda: [Check(n) for n in CHECKS])

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "failed"]

    def to_dict(self) -> dict:
        """JSON-serialisable, for XCom and the ledger."""
        return asdict(self)


def format_check(check: Check) -> str:
    """One readable line per check, for the CLI and task logs."""
    return f"{check.status:<8} {check.name:<10} {check.seconds:7.2f}s  {check.detail}".rstrip()


def held_until(tokens: list[dict], now: float) -> float | None:
    """Until when a running verification holds a smoke user (its run token's expiry, wall clock), or None: a
    leftover. A token without an expiry is no run's: runs always set one."""
    ends = [datetime.fromisoformat(t["expires_at"]).timestamp() for t in tokens
            if t.get("note") == RUN_NOTE and t.get("expires_at")]
    return max(ends) if ends and max(ends) > now else None


def blame_of(checks: list[Check], faults: dict[str, str]) -> str | None:
    """Whose fault the first failure is. "platform": hubflow or what stands in front of the hub (nothing answers
    HTTP at its URL: DNS, load balancer, TLS certificate, network; or the hub refuses hubflow's token or its scopes;
    or another verification holds the smoke users): no revert, the next trigger tries again. "revision": a hub that
    answers but misbehaves. None when every check passed."""
    failed = [c for c in checks if c.status == "failed"]
    return faults.get(failed[0].name, "revision") if failed else None


def verify(hub_url: str, token: str, packages: list[Package] = (), notebook: Notebook | None = None,
           timeout: float = 300, report: Callable[[Check], None] | None = None,
           spawn_timeout: float = 300) -> Verification:
    """Run every check against the hub at `hub_url` within `timeout` seconds (cleanup may take CLEANUP_SECONDS more).

    Each spawn has `spawn_timeout` seconds of its own (within `timeout`); a spawn that runs out of it is retried once
    with a fresh user. `report` is called with each check when it starts (status "running") and when it ends.
    """
    parts = urlsplit(hub_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SmokeError(f"hub URL {hub_url!r} is not an http(s) URL")
    if not token:
        raise SmokeError("no smoke token: set HUBFLOW_SMOKE_TOKEN or the environment's smoke token connection")
    return _Run(hub_url.rstrip("/"), token, list(packages), notebook, timeout, spawn_timeout, report).run()


class _Run:
    def __init__(self, url: str, token: str, packages: list[Package], notebook: Notebook | None, timeout: float,
                 spawn_timeout: float, report: Callable[[Check], None] | None):
        self.url, self.packages, self.notebook, self.timeout = url, packages, notebook, timeout
        self.spawn_timeout = spawn_timeout
        self.spawn_deadline: float | None = None  # while a spawn runs
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        self.report = report or (lambda check: None)
        self.result = Verification(url)
        self.hub = requests.Session()
        self.hub.headers["Authorization"] = f"token {token}"
        self.single = requests.Session()  # the single-user server, with the smoke user's own token
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.user: str | None = None
        self.users: list[str] = []  # created by this run, to remove
        self.faults: dict[str, str] = {}  # check -> blame, for failed checks
        self.server: str | None = None  # URL of the user's server, ending in /
        self.kernel_id: str | None = None
        self.kernel: Kernel | None = None

    # -- running checks

    def run(self) -> Verification:
        # (name, step, whether the checks after it need it to pass)
        steps = [("health", self.health, True), ("api", self.api, True), ("leftovers", self.leftovers, False),
                 ("user", self.create_user, True), ("server", self.start_server, True),
                 ("kernel", self.start_kernel, True), ("packages", self.check_packages, False),
                 ("notebook", self.run_notebook, False)]
        try:
            for i, (name, step, needed) in enumerate(steps):
                if not self._step(name, step) and needed:
                    for later, _, _ in steps[i + 1:]:
                        self.result.check(later).detail = f"not run: {name} failed"
                    break
        finally:
            self.deadline = max(self.deadline, time.monotonic()) + CLEANUP_SECONDS
            self._step("cleanup", self.cleanup)
            self.hub.close()
            self.single.close()
            self.result.seconds = round(time.monotonic() - self.start, 3)
            self.result.ok = not self.result.failures
            self.result.blame = blame_of(self.result.checks, self.faults)
        return self.result

    def _step(self, name: str, step: Callable[[], str]) -> bool:
        check = self.result.check(name)
        check.status = "running"
        self.report(check)
        t = time.monotonic()
        try:
            check.detail, check.status = step(), "passed"
        except _Skipped as exc:
            check.detail, check.status = str(exc), "skipped"
        except _Failed as exc:
            check.detail, check.status = str(exc), "failed"
            self.faults[name] = exc.blame
        except (requests.RequestException, websocket.WebSocketException, OSError, ValueError, KeyError) as exc:
            check.detail, check.status = _describe(exc), "failed"  # also answers that are not what the API documents
        finally:
            check.seconds = round(time.monotonic() - t, 3)
            if check.status == "running":  # an unexpected error: still a result, then it propagates
                check.status, check.detail = "failed", "internal error"
            self.report(check)
        return check.status != "failed"

    def remaining(self, what: str) -> float:
        now = time.monotonic()
        left = self.deadline - now
        if left <= 0:
            raise _Failed(f"timed out after {now - self.start:.0f}s (limit {self.timeout:.0f}s) while {what}")
        if self.spawn_deadline is None:
            return left
        if self.spawn_deadline <= now:
            raise _SpawnTimeout(f"spawn timeout: not ready within {self.spawn_timeout:.0f}s (while {what})")
        return min(left, self.spawn_deadline - now)

    # -- HTTP

    def request(self, session: requests.Session, method: str, url: str, what: str, retry: bool = False,
                ok: tuple[int, ...] = (200,), read: float = 15, **kwargs) -> requests.Response:
        """A request bounded by the deadline; idempotent ones (retry=True) are retried on network errors and 502-504."""

        def attempt() -> requests.Response:
            left = self.remaining(what)
            try:
                r = session.request(method, url, timeout=(min(5, left), min(read, left)), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.remaining(what)  # a request cut short by the deadline is reported as the timeout it is
                raise _NoAnswer(f"{method} {_path(url)}: {_describe(exc)}") from None
            if r.status_code in ok:
                return r
            problem = f"{method} {_path(url)} answered {r.status_code}: {_message(r)}"
            if r.status_code == 403 and session is self.hub:
                raise _PlatformFault(f"{problem} (the smoke token may not do this)")
            # the hub answered: asking again would get the same answer; a gateway's might not
            raise (_Unavailable if r.status_code in (502, 503, 504) else _Failed)(problem)

        if not retry:
            return attempt()
        from hubflow.clients.retry import retrying

        return retrying(what, transient=lambda exc: isinstance(exc, (_NoAnswer, _Unavailable)),
                        attempts=RETRY_ATTEMPTS, deadline=max(0.0, self.deadline - time.monotonic()))(attempt)

    def hub_api(self, method: str, path: str, what: str, **kwargs) -> requests.Response:
        return self.request(self.hub, method, f"{self.url}/hub/api{path}", what, **kwargs)

    # -- the checks

    def health(self) -> str:
        try:
            self.request(self.hub, "GET", f"{self.url}/hub/health", "checking /hub/health", retry=True, read=3)
        except _NoAnswer as exc:  # nothing answers HTTP at the URL: DNS, load balancer, certificate, network
            raise _PlatformFault(str(exc)) from None
        return "GET /hub/health: 200"

    def api(self) -> str:
        version = self.hub_api("GET", "", "reading the hub version", retry=True).json().get("version")
        self.result.hub_version = version
        me = self.hub_api("GET", "/user", "checking the token", retry=True, ok=(200, 403)).json()
        if me.get("status") == 403 or "scopes" not in me:
            raise _PlatformFault("the hub refused the smoke token (GET /hub/api/user answered 403)")
        held = set(me["scopes"])
        missing = [s for s in NEEDED_SCOPES if s not in held and s.split("!")[0] not in held]
        if missing:
            raise _PlatformFault(f"the smoke token lacks scopes {', '.join(missing)} "
                                 f"(needs {', '.join(NEEDED_SCOPES)})")
        broad = sorted(s for s in held if "!" not in s)
        more = f"; holds more than it needs: {', '.join(broad)}" if broad else ""
        return f"JupyterHub {version}; token of {me.get('kind')} {me.get('name')}{more}"

    def leftovers(self) -> str:
        """Remove the smoke users a crashed run left; wait for a running verification to release them."""
        removed, waited = [], 0.0
        for name in SMOKE_USERS:
            while True:
                r = self.hub_api("GET", f"/users/{name}/tokens", f"reading {name}'s tokens", retry=True,
                                 ok=(200, 404))
                if r.status_code == 404:  # no such user
                    break
                until = held_until(r.json()["api_tokens"], time.time())
                if until is None:
                    self.remove_user(name)
                    removed.append(name)
                    break
                if time.monotonic() + 1 >= self.deadline:
                    stamp = datetime.fromtimestamp(until).astimezone().isoformat(timespec="seconds")
                    raise _PlatformFault(f"another verification of this hub holds user {name} until {stamp}: "
                                         f"one verification per hub at a time")
                time.sleep(1)
                waited += 1
        wait = f"waited {waited:.0f}s for another verification; " if waited else ""
        return wait + (f"removed {len(removed)}: {', '.join(removed)}" if removed else "none")

    def create_user(self, name: str = SMOKE_USERS[0]) -> str:
        self.hub_api("POST", f"/users/{name}", "creating the smoke user", ok=(201,))
        self.users.append(name)
        self.user = name
        self.result.user = name
        expires = int(self.deadline - time.monotonic()) + CLEANUP_SECONDS
        token = self.hub_api("POST", f"/users/{name}/tokens", "creating the smoke user's token", ok=(200, 201),
                             json={"scopes": [f"access:servers!user={name}"], "expires_in": expires,
                                   "note": RUN_NOTE}).json()["token"]
        self.single.headers["Authorization"] = f"token {token}"
        return f"{name}, token scoped to its server, expires in {expires}s"

    def start_server(self) -> str:
        try:
            return self.spawn()
        except _SpawnTimeout as first:
            if time.monotonic() >= self.deadline:
                raise
            failed = self.user
            self.hub_api("DELETE", f"/users/{failed}/server", "stopping the timed-out spawn", ok=(202, 204, 400, 404))
            self.result.retried = True
            self.create_user(SMOKE_USERS[1])
            retry = f"retried as {self.user} after {failed}'s {first}"
            try:
                return f"{self.spawn()}; {retry}"
            except _Failed as second:
                second.args = (f"{self.user}: {second}; {retry}",)
                raise

    def spawn(self) -> str:
        """Start the current user's server within spawn_timeout."""
        t = time.monotonic()
        self.spawn_deadline = t + self.spawn_timeout
        try:
            return self._spawn(t)
        finally:
            self.spawn_deadline = None

    def _spawn(self, t: float) -> str:
        r = self.request(self.hub, "POST", f"{self.url}/hub/api/users/{self.user}/server", "starting the server",
                         ok=(201, 202, 400, 500, 502, 503, 504), read=60)
        if r.status_code in (400, 500):
            reason = self._spawn_failure() or _message(r)
            raise _Failed(f"the hub could not start the server: {reason} (POST /hub/api/users/{{user}}/server "
                          f"answered {r.status_code})")
        if r.status_code != 201:  # 202, or a gateway that stopped waiting: the spawn goes on, follow it
            self._await_ready()
        model = self.hub_api("GET", f"/users/{self.user}", "reading the server", retry=True).json()
        server = (model.get("servers") or {}).get("")
        if not server or not server.get("ready"):
            raise _Failed(f"the server is not ready after the spawn: {server!r}")
        self.server = self.origin + server["url"]
        spawned = time.monotonic() - t
        self.request(self.single, "GET", f"{self.server}api/status", "reaching the server", retry=True)
        return f"ready in {spawned:.1f}s at {server['url']}"

    def _spawn_failure(self) -> str | None:
        """The hub's own reason for a failed spawn (the POST only says 500), from the progress stream."""
        try:
            for event in self._progress():
                if event.get("failed"):
                    return event.get("message")
        except (_Failed, requests.RequestException, ValueError):
            return None
        return None

    def _progress(self):
        url = f"{self.url}/hub/api/users/{self.user}/server/progress"
        with self.request(self.hub, "GET", url, "waiting for the server", stream=True, read=20) as r:
            for line in r.iter_lines():
                if line.startswith(b"data:"):
                    yield json.loads(line[5:])
                self.remaining("waiting for the server")

    def _await_ready(self) -> None:
        """Follow the spawn's progress stream (keepalives every 8 s); if it breaks off, poll the user's server."""
        try:
            for event in self._progress():
                if event.get("failed"):
                    raise _Failed(f"the hub could not start the server: {event.get('message')}")
                if event.get("ready"):
                    return
        except requests.RequestException:
            pass  # a proxy may cut long streams: the server's state decides
        while True:
            model = self.hub_api("GET", f"/users/{self.user}", "waiting for the server", retry=True).json()
            server = (model.get("servers") or {}).get("") or {}
            if server.get("ready"):
                return
            if not server.get("pending"):
                raise _Failed(f"the hub could not start the server: {self._spawn_failure() or 'no reason given'}")
            self.remaining("waiting for the server")
            time.sleep(0.5)

    def start_kernel(self) -> str:
        from hubflow.clients.kernel import Kernel, KernelDied  # jupyter_client, zmq: once a kernel is there

        r = self.request(self.single, "POST", f"{self.server}api/kernels", "starting a kernel", ok=(201,), json={})
        self.kernel_id = r.json()["id"]
        self.kernel = Kernel.connect(f"{self.server}api/kernels/{self.kernel_id}/channels",
                                     self.single.headers["Authorization"], self.remaining)
        try:
            info = self.kernel.request("kernel_info_request", {}, "kernel_info_reply", "waiting for the kernel")
        except KernelDied as exc:
            raise _Failed(str(exc)) from None
        lang = info.get("language_info", {})
        return f"{info.get('implementation', 'kernel')} {lang.get('name', '')} {lang.get('version', '')}".strip()

    def check_packages(self) -> str:
        """One kernel request per package: a package that kills the kernel is named for sure (output sent just
        before a crash can be lost), and the packages after it are still checked in the restarted kernel."""
        from hubflow.clients import probe

        if not self.packages:
            raise _Skipped("no packages to check")
        results, problems, defined = [], [], False
        for i, package in enumerate(self.packages):
            if time.monotonic() >= self.deadline:
                problems.append(f"not checked in time: {', '.join(p.name for p in self.packages[i:])}")
                break
            if not defined:
                _, error = self._execute(probe.definition(), "defining the package probe")
                if error:
                    raise _Failed(f"the package probe could not be defined: {_error_text(error)}")
                defined = True
            out, error = self._execute(probe.call(package), f"checking {package}")
            found = None if error else probe.result(out)
            if found is None:
                problems.append(f"{package.name}: {_error_text(error) if error else 'the probe printed no result'}")
                defined = not self.kernel.died
                continue
            results.append(found)
            wrong = probe.problem(found)
            if wrong:
                problems.append(wrong)
        if problems:
            raise _Failed("; ".join(problems))
        shown = [probe.shown(r) for r in results]
        more = f" and {len(shown) - 20} more" if len(shown) > 20 else ""
        return f"{len(results)} ok: {', '.join(shown[:20])}{more}"

    def run_notebook(self) -> str:
        if self.notebook is None:
            raise _Skipped("no notebook configured")
        for n, source in self.notebook.cells:
            _, error = self._execute(source, f"running {self.notebook.name} cell {n}")
            if error:
                first = source.strip().splitlines()[0][:60]
                raise _Failed(f"{self.notebook.name}: cell {n} ({first!r}) failed: {_error_text(error)}")
        return f"{self.notebook.name}: {len(self.notebook.cells)} code cells ran"

    def cleanup(self) -> str:
        """Each step is tried even when an earlier one failed: the user must not stay behind because a kernel did."""
        if self.kernel is not None:
            self.kernel.close()
        steps = []
        if self.kernel_id:
            url = f"{self.server}api/kernels/{self.kernel_id}"
            steps.append(("kernel deleted",
                          lambda: self.request(self.single, "DELETE", url, "deleting the kernel", ok=(204, 404))))
        for user in self.users:
            steps.append((f"server stopped, user {user} deleted", lambda user=user: self.remove_user(user)))
        if not steps:
            raise _Skipped("nothing to clean up")
        done, problems = [], []
        for label, step in steps:
            try:
                step()
                done.append(label)
            except _Failed as exc:
                problems.append(str(exc))
            except (requests.RequestException, OSError, ValueError) as exc:
                problems.append(_describe(exc))
        if problems:
            raise _Failed("; ".join(problems) + (f" (done: {'; '.join(done)})" if done else ""))
        return "; ".join(done)

    def remove_user(self, name: str) -> None:
        """Stop the user's server (also a pending spawn), wait until it is stopped, delete the user."""
        what = f"removing user {name}"
        self.hub_api("DELETE", f"/users/{name}/server", what, ok=(202, 204, 400, 404))
        while True:
            r = self.hub_api("DELETE", f"/users/{name}", what, ok=(204, 400, 404))
            if r.status_code != 400:
                return
            self.remaining(f"waiting for {name}'s server to stop ({_message(r)})")
            time.sleep(0.5)

    def _execute(self, code: str, what: str) -> tuple[str, dict | None]:
        """Run code in the kernel; its stdout and its error (ename, evalue), also when it timed out or died."""
        try:
            return self.kernel.execute(code, what)
        except _Failed as exc:  # out of time (what it printed is not read when there is an error)
            return "", {"ename": "", "evalue": str(exc)}


def _error_text(error: dict) -> str:
    ename, evalue = error.get("ename") or "", error.get("evalue") or ""
    return f"{ename}: {evalue}" if ename else evalue


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def _message(r: requests.Response) -> str:
    try:
        return str(r.json().get("message") or r.reason)
    except ValueError:
        return r.reason or r.text[:200]


def _describe(exc: BaseException) -> str:
    """A network error in a few words (requests' own text is a paragraph)."""
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return "the kernel's websocket closed (the kernel or its server died)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (certificate or protocol)"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if m:
        return m.group(1).strip().lower()
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return f"{type(exc).__name__}: {exc}"
