"""A real JupyterHub on loopback for the smoke tests and the benchmark (no stand-in: pip jupyterhub + npm proxy).

DummyAuthenticator, SimpleLocalProcessSpawner (single-user servers from this venv, so their kernels see its
packages, plus what `add_package()` puts in the hub's site folder), sqlite, configurable-http-proxy from
node_modules, and a service `hubflow-smoke` whose token has exactly the scopes hubflow documents for production
(NEEDED_SCOPES), so the tests prove they suffice. A second service, `hubflow-test-admin`, is the tests' own view of
the hub (`api()`). `fail_spawns()` and `slow_spawns()` make spawns fail or stall (all of them, or the next N) until
the block ends, so one hub serves the whole session.

    python -m sandbox.jupyterhub_local      # start, print the URL and the token; stop with Ctrl-C or SIGTERM
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from hubflow.clients.smoke import NEEDED_SCOPES
from sandbox.registry_server import free_port

ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
SERVICE = "hubflow-smoke"
ADMIN = "hubflow-test-admin"
ADMIN_SCOPES = ["admin:users", "admin:servers", "tokens", "list:users"]

CONFIG = """\
import os
c = get_config()  # noqa
here = {dir!r}
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///" + os.path.join(here, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(here, "cookie_secret")
c.JupyterHub.pid_file = os.path.join(here, "jupyterhub.pid")
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = os.path.join(here, "proxy.pid")
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(here, "home", "{{username}}")
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.http_timeout = 30  # a single-user server starting on a loaded 2-core machine can need more than 15 s
c.Spawner.start_timeout = 30
c.Spawner.default_url = "/lab"
c.Spawner.environment = {{"PYTHONPATH": os.path.join(here, "site")}}  # add_package() installs here
c.JupyterHub.services = [{{"name": {service!r}, "api_token": {token!r}}},
                          {{"name": {admin!r}, "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [{{"name": {service!r}, "scopes": {scopes!r}, "services": [{service!r}]}},
                           {{"name": {admin!r}, "scopes": {admin_scopes!r}, "services": [{admin!r}]}}]


def take(switch):
    # a switch file holds "<count> <value>"; count -1 is every spawn; the file goes when its count is used up
    path = os.path.join(here, switch)
    try:
        count, value = open(path).read().split()
    except (OSError, ValueError):
        return None
    count = int(count)
    if count == 1:
        os.unlink(path)
    elif count > 1:
        open(path, "w").write(f"{{count - 1}} {{value}}")
    return float(value)


async def test_switches(spawner):
    import asyncio
    if take("fail-spawns") is not None:  # as a spawner that cannot create the server (quota, missing image)
        raise RuntimeError("cannot start the server: test switch fail-spawns is on")
    delay = take("slow-spawns")
    if delay:  # as a node that is still scaling up or pulling the image
        await asyncio.sleep(delay)


c.Spawner.pre_spawn_hook = test_switches
"""


class HubStartError(RuntimeError):
    pass


class LocalHub:
    """One JupyterHub process, which runs its proxy and its single-user servers."""

    def __init__(self, workdir: str | os.PathLike | None = None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="hubflow-hub-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(24)  # the smoke service's
        self.admin_token = secrets.token_hex(24)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "jupyterhub.log"

    def start(self, timeout: float = 60) -> LocalHub:
        if not PROXY.exists():
            raise HubStartError(f"{PROXY} is missing: run `npm ci` (make setup) first")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        (self.dir / "site").mkdir(exist_ok=True)
        args = ["--allow-root"] if os.geteuid() == 0 else []
        (self.dir / "jupyterhub_config.py").write_text(CONFIG.format(
            dir=str(self.dir), port=self.port, hub_port=free_port(), proxy=str(PROXY), proxy_api_port=free_port(),
            proxy_token=secrets.token_hex(16), singleuser=str(Path(sys.executable).parent / "jupyterhub-singleuser"),
            args=args, service=SERVICE, token=self.token, scopes=list(NEEDED_SCOPES), admin=ADMIN,
            admin_token=self.admin_token, admin_scopes=ADMIN_SCOPES))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("HUBFLOW_SMOKE_TOKEN", None)
        with self.log_path.open("ab") as log:  # a session of its own: a Ctrl-C meant for the caller does not reach it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.dir / "jupyterhub_config.py")],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HubStartError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/hub/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise HubStartError(f"jupyterhub did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the hub: it stops its single-user servers and its proxy. If it must be killed, the proxy goes too."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError, ValueError):  # the hub removes the pid file when it stopped the proxy
            os.kill(int((self.dir / "proxy.pid").read_text()), signal.SIGTERM)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @contextlib.contextmanager
    def _switch(self, name: str, times: int | None, value: float):
        flag = self.dir / name
        flag.write_text(f"{-1 if times is None else times} {value}")
        try:
            yield
        finally:
            flag.unlink(missing_ok=True)

    def fail_spawns(self, times: int | None = None):
        """Within the block every spawn (or the next `times`) fails with an error the hub reports."""
        return self._switch("fail-spawns", times, 0)

    def slow_spawns(self, seconds: float, times: int | None = 1):
        """Within the block the next `times` spawns (None: every one) wait `seconds` before the server starts."""
        return self._switch("slow-spawns", times, seconds)

    def add_package(self, name: str, version: str, source: str) -> None:
        """Install a one-module distribution that kernels started from now on see (e.g. one that crashes on import)."""
        module = name.replace("-", "_")
        dist = self.dir / "site" / f"{module}-{version}.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (dist / "top_level.txt").write_text(module + "\n")
        (self.dir / "site" / f"{module}.py").write_text(source)

    # -- the hub's own view, for assertions

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """The hub API as the tests' admin service, or with `token=` (e.g. the smoke token, to see what it may do)."""
        token = kwargs.pop("token", self.admin_token)
        return requests.request(method, f"{self.url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                                timeout=10, **kwargs)

    def user_names(self) -> list[str]:
        r = self.api("GET", "/users")
        r.raise_for_status()
        return [u["name"] for u in r.json()]

    def running_servers(self) -> list[str]:
        r = self.api("GET", "/users")
        r.raise_for_status()
        return [u["name"] for u in r.json() if u.get("servers")]


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the hub on SIGTERM as on Ctrl-C
    hub = LocalHub().start()
    print(f"JupyterHub {hub.url}  (dir {hub.dir})\nexport HUBFLOW_SMOKE_TOKEN={hub.token}", flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        hub.remove()


if __name__ == "__main__":
    main()
