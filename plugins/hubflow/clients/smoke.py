"""Verification: prove a freshly deployed hub works, the way a person would, through its public URL.

The hub answers; the smoke user `hubflow-smoke-1` gets a server; a kernel on that server imports every package that
must be there (at its pinned version); an optional notebook runs cell by cell; and, whatever happened, the kernel,
the server and the user are removed. Each check has a status, a duration and a detail that names the endpoint, the
package or the cell, so the ledger, the commit comment and Slack can say what broke; `blame` says whose fault a
failure is (see blame_of).

Time, in three budgets: the whole verification has `timeout` (the operator's limit, what the task can afford); each
spawn has `spawn_timeout` of its own; the other checks have `checks_timeout` (the hub's smoke limit), which the time
spent spawning or waiting for another verification does not use up. A spawn still pending when its budget runs out,
with no failure from the hub, is the cluster's capacity (a node scaling up, an image pull), not the revision: it is
retried once as `hubflow-smoke-2` (a second name gets a fresh pod and volume: in z2jh a user's PVC outlives the user,
and a pod that is still terminating blocks a new one of the same name), and if that one is still pending too, the
failure blames the platform. Settings where the retry cannot fit are refused (hubflow.core.settings.Timeouts).

Earned blame: only a hub that answers and misbehaves is the revision's fault. A smoke user that already exists when
this run creates it (409), or that is deleted while this run uses it, means another verification or a person is on
it: the platform's fault. hubflow runs one verification per hub and environment at a time (the ledger's lease,
hubflow.clients.verification), so between its own runs this does not happen.

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
The nightly DAG file imports this module at parse time (task_seconds sizes a timeout): its imports stay light,
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
LEASE_MARGIN_SECONDS = 30  # a request that ends a little after the limit (see hold_seconds)
AFTER_USER = ("user", "server", "kernel", "packages", "notebook")  # the checks that use the smoke user
RETRY_ATTEMPTS = 3  # tries of an idempotent request (network errors, 502-504)


STILL_STARTING = "the server was still starting and the hub reported no failure: capacity, not the revision"


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


class _SpawnTimeout(_PlatformFault):
    """The server was still starting when the spawn's budget (or the verification's limit) ran out, and the hub
    reported no failure: capacity (a node scaling up, an image pull), not the revision. Worth one retry."""


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
    or another verification holds the smoke users, created one first (409) or deleted it under this run; or a spawn
    still pending with no failure from the hub: capacity): no revert, the next trigger tries again. "revision": a
    hub that answers but misbehaves. None when every check passed."""
    failed = [c for c in checks if c.status == "failed"]
    return faults.get(failed[0].name, "revision") if failed else None


def verify(hub_url: str, token: str, packages: list[Package] = (), notebook: Notebook | None = None,
           timeout: float = 300, report: Callable[[Check], None] | None = None,
           spawn_timeout: float = 300, checks_timeout: float | None = None) -> Verification:
    """Run every check against the hub at `hub_url` within `timeout` seconds (cleanup may take CLEANUP_SECONDS more).

    Each spawn has `spawn_timeout` seconds of its own (within `timeout`); a spawn that runs out of it is retried once
    with a fresh user. The other checks have `checks_timeout` (default: `timeout`), not counting the time spent
    spawning or waiting for another verification. `report` is called with each check when it starts (status
    "running") and when it ends.
    """
    parts = urlsplit(hub_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SmokeError(f"hub URL {hub_url!r} is not an http(s) URL")
    if not token:
        raise SmokeError("no smoke token: set HUBFLOW_SMOKE_TOKEN or the environment's smoke token connection")
    return _Run(hub_url.rstrip("/"), token, list(packages), notebook, timeout, spawn_timeout,
                timeout if checks_timeout is None else checks_timeout, report).run()


def hold_seconds(timeout: float) -> int:
    """How long a verification with limit `timeout` can keep its hub's smoke users at most (its cleanup included,
    and a margin for a request that ends just after the limit): the length of its lease and of its user's token."""
    return int(timeout) + CLEANUP_SECONDS + LEASE_MARGIN_SECONDS


def wait_seconds(timeout: float) -> int:
    """How long a verification waits for the hub's other verifications at most (hubflow.clients.verification): one
    at its longest, then one more that took the hub first (e.g. the nightly's second try)."""
    return 2 * hold_seconds(timeout)


def task_seconds(timeout: float, tries: int = 1) -> int:
    """A bound for a task that runs `tries` verifications of one hub in turn: each may wait, then run and clean up."""
    return tries * (wait_seconds(timeout) + hold_seconds(timeout))


class _Run:
    def __init__(self, url: str, token: str, packages: list[Package], notebook: Notebook | None, timeout: float,
                 spawn_timeout: float, checks_timeout: float, report: Callable[[Check], None] | None):
        self.url, self.packages, self.notebook, self.timeout = url, packages, notebook, timeout
        self.spawn_timeout, self.checks_timeout = spawn_timeout, checks_timeout
        self.spawn_deadline: float | None = None  # while a spawn runs
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        self.report = report or (lambda check: None)
        self.result = Verification(url)
        self.hub = requests.Session()
        self.hub.headers["Authorization"] = f"token {token}"
        self.single = requests.Session()  # the single-user server, with the smoke user's own token
        self.start = time.monotonic()
        self.end = self.start + timeout  # the verification's limit, everything included
        self.deadline = self.start + checks_timeout  # the checks' own: spawning and waiting for others move it on
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
            self.end = self.deadline = max(self.end, time.monotonic()) + CLEANUP_SECONDS
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
            elif check.status == "failed" and name in AFTER_USER and self.faults.get(name, "revision") == "revision" \
                    and self.user_gone():
                check.detail += (f"; user {self.user} was deleted while this check ran (by another verification or "
                                 f"a person): not the revision's fault")
                self.faults[name] = "platform"
            self.report(check)
        return check.status != "failed"

    def user_gone(self) -> bool:
        """Whether the hub no longer knows this run's smoke user (someone deleted it under the run)."""
        if self.user is None:
            return False
        try:
            r = self.hub.get(f"{self.url}/hub/api/users/{self.user}", timeout=5)
        except requests.RequestException:
            return False
        return r.status_code == 404

    def budget_end(self) -> float:
        """When the time of the step that runs now ends: a spawn's own, or the checks' (within the limit)."""
        return min(self.end, self.spawn_deadline if self.spawn_deadline is not None else self.deadline)

    def remaining(self, what: str) -> float:
        now = time.monotonic()
        elapsed = f"timed out after {now - self.start:.0f}s"
        if self.spawn_deadline is not None:  # a spawn: its own budget, within the verification's limit
            if now >= self.end:
                raise _SpawnTimeout(f"{elapsed} (limit {self.timeout:.0f}s) while {what}")
            if now >= self.spawn_deadline:
                raise _SpawnTimeout(f"spawn timeout: not ready within {self.spawn_timeout:.0f}s (while {what})")
            return self.budget_end() - now
        if now >= self.deadline:  # the checks used up their own time: the hub's doing
            moved = self.deadline - self.start - self.checks_timeout
            besides = f", besides {moved:.0f}s spawning or waiting for another verification" if moved >= 1 else ""
            raise _Failed(f"{elapsed} (limit {self.checks_timeout:.0f}s{besides}) while {what}")
        if now >= self.end:  # the verification's limit, before the checks' own: the spawns or the waits took it
            raise _PlatformFault(f"{elapsed} (limit {self.timeout:.0f}s) while {what}, before the checks used their "
                                 f"{self.checks_timeout:.0f}s: spawning or waiting for another verification took "
                                 f"the rest")
        return self.budget_end() - now

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
                        attempts=RETRY_ATTEMPTS, deadline=max(0.0, self.budget_end() - time.monotonic()))(attempt)

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
                if time.monotonic() + 1 >= self.end:
                    stamp = datetime.fromtimestamp(until).astimezone().isoformat(timespec="seconds")
                    raise _PlatformFault(f"another verification of this hub holds user {name} until {stamp}: "
                                         f"one verification per hub at a time")
                time.sleep(1)
                waited += 1
        self.deadline += waited  # waiting for another verification is not this hub's time
        wait = f"waited {waited:.0f}s for another verification; " if waited else ""
        return wait + (f"removed {len(removed)}: {', '.join(removed)}" if removed else "none")

    def create_user(self, name: str = SMOKE_USERS[0]) -> str:
        r = self.hub_api("POST", f"/users/{name}", "creating the smoke user", ok=(201, 409))
        if r.status_code == 409:  # someone made it after the leftovers were removed: never this run's revision
            raise _PlatformFault(f"user {name} already exists (POST /hub/api/users/{name} answered 409): another "
                                 f"verification of this hub, or a person, is using it; not the revision's fault")
        self.users.append(name)
        self.user = name
        self.result.user = name
        expires = int(self.end - time.monotonic()) + CLEANUP_SECONDS + LEASE_MARGIN_SECONDS
        token = self.hub_api("POST", f"/users/{name}/tokens", "creating the smoke user's token", ok=(200, 201),
                             json={"scopes": [f"access:servers!user={name}"], "expires_in": expires,
                                   "note": RUN_NOTE}).json()["token"]
        self.single.headers["Authorization"] = f"token {token}"
        return f"{name}, token scoped to its server, expires in {expires}s"

    def start_server(self) -> str:
        try:
            return self.spawn()
        except _SpawnTimeout as first:
            if time.monotonic() >= self.end:  # no time for a retry (settings.Timeouts makes room for one)
                first.args = (f"{first}; {STILL_STARTING}",)
                raise
            failed = self.user
            self.hub_api("DELETE", f"/users/{failed}/server", "stopping the timed-out spawn", ok=(202, 204, 400, 404))
            self.result.retried = True
            self.create_user(SMOKE_USERS[1])
            retry = f"retried as {self.user} after {failed}'s {first}"
            try:
                return f"{self.spawn()}; {retry}"
            except _Failed as second:
                still = f"; {STILL_STARTING}" if isinstance(second, _SpawnTimeout) else ""
                second.args = (f"{self.user}: {second}; {retry}{still}",)
                raise

    def spawn(self) -> str:
        """Start the current user's server within spawn_timeout (its own time: the checks' deadline moves on)."""
        t = time.monotonic()
        self.spawn_deadline = t + self.spawn_timeout
        try:
            return self._spawn(t)
        finally:
            self.spawn_deadline = None
            self.deadline += time.monotonic() - t

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
        try:
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
        except _PlatformFault as cut:  # the verification's limit: the revision's fault only if a package already was
            if not problems:
                raise
            problems.append(str(cut))
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
        except _PlatformFault:  # the verification's limit ran out before the checks' own time: not the code's doing
            raise
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
