"""The production topology natively (no Docker engine here): Airflow 3.3 as separate processes on this machine's
PostgreSQL and Redis, in the shape of Airflow's official docker-compose file.

`airflow db migrate` on a fresh database, then api-server, scheduler, dag-processor, triggerer and (CeleryExecutor)
`airflow celery worker`, each in a process group of its own, sharing one JWT secret and Fernet key, with
hubflow's dags/ and plugins/ and the sandbox world's connections. The metadata database
(`hubflow_stack_<random>`, plus any `database()` asked for) is dropped at the end and the Celery broker keys live
under a prefix of their own in Redis, so stacks run side by side. Every process is stopped at the end (SIGTERM to
its group, then SIGKILL), also when the caller fails or the interpreter exits; each one's output is kept in
`<root>/logs/<name>.log` and `tails()` prints their ends.

    with Stack(tmp) as stack:
        deployment.ledger_url = stack.database("ledger")
        stack.start(deployment.environment())
        stack.unpause("hubflow_deploy_staging")
        stack.api("GET", "/api/v2/dags").json()
"""
from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psycopg
import redis
import requests

from sandbox.registry_server import free_port

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("HUBFLOW_STACK_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("HUBFLOW_STACK_REDIS", "redis://127.0.0.1:6379/0")
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
USER, PASSWORD = "admin", "stack-admin-pass"
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class StackError(AssertionError):
    """The stack did not come up or a wait ran out; the message carries every process's log tail."""


class Stack:
    def __init__(self, root: str | os.PathLike, executor: str = "CeleryExecutor", concurrency: int = 16,
                 dags: Path = ROOT / "dags", plugins: Path = ROOT / "plugins"):
        self.root = Path(root)
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.executor, self.concurrency, self.dags, self.plugins = executor, concurrency, dags, plugins
        self.name = f"hubflow_stack_{secrets.token_hex(4)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.databases: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        passwords = self.root / "passwords.json"
        passwords.write_text(json.dumps({USER: PASSWORD}))
        keep = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {
            **keep,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only what the caller unpauses runs
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # parsed once: no re-parse load
            "AIRFLOW__CORE__PARALLELISM": str(self.concurrency),
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # two stacks on one machine: every log server on a port of its own
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CELERY__BROKER_URL": REDIS,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{self.name}:",
        }
        atexit.register(self.stop)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None and not isinstance(exc, StackError):  # a StackError already carries the tails
            print(self.tails(), flush=True)
        self.stop()

    # ------------------------------------------------------------------ life

    def database(self, suffix: str = "") -> str:
        """A fresh PostgreSQL database of this stack (dropped by `stop`), as a SQLAlchemy URL."""
        name = f"{self.name}_{suffix}" if suffix else self.name
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"{POSTGRES.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}"

    def migrate(self) -> None:
        """Create and migrate the metadata database; `start` does it when not done yet (call it early to overlap
        the ~10 s with other set-up)."""
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in self.env:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.database()
            self._run("db", "migrate", name="migrate", timeout=300)

    def start(self, environment: dict[str, str]) -> "Stack":
        """Start every component with `environment` (connections, HUBFLOW_*) on the migrated database; return
        once the health endpoint reports each component healthy and the worker is ready."""
        self.env.update(environment)
        self.migrate()
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self.procs[name] = self._spawn(name, name)
        if self.executor == "CeleryExecutor":
            self.procs["worker"] = self._spawn("worker", "celery", "worker", "--concurrency", str(self.concurrency))
        self.wait_for("every component healthy", self._healthy, timeout=180)
        if "worker" in self.procs:
            self.wait_for("the Celery worker ready", lambda: " ready." in self.log("worker"), timeout=120)
        return self

    def stop(self) -> None:
        """Stop every process started here (SIGTERM to each group, SIGKILL after 10 s), drop the databases and
        the broker's keys. Safe to call twice."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # also the group's children that outlived their leader
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self.procs.clear()
        if self.databases:
            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
                for name in self.databases:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.databases.clear()
            broker = redis.Redis.from_url(REDIS)
            keys = list(broker.scan_iter(match=f"{self.name}:*"))
            if keys:
                broker.delete(*keys)
        atexit.unregister(self.stop)

    # ------------------------------------------------------------------ talking to it

    def token(self) -> str:
        if self._token is None:
            answer = requests.post(f"{self.url}/auth/token", json={"username": USER, "password": PASSWORD},
                                   timeout=10)
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A REST call as the admin."""
        return requests.request(method, f"{self.url}{path}", timeout=30,
                                headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)

    def runs(self, dag_id: str) -> list[dict]:
        """The DAG's runs, oldest first."""
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "id", "limit": 100})
        return answer.json()["dag_runs"] if answer.status_code == 200 else []

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        answer.raise_for_status()
        return answer.json()["task_instances"]

    def unpause(self, *dag_ids: str, timeout: float = 120) -> None:
        """Once the dag-processor has serialized each DAG, unpause it (every DAG starts paused, so the nightly
        and the others stay quiet unless asked for) and have its file parsed again, which starts its watchers."""
        self.wait_for(f"DAGs {', '.join(dag_ids)} parsed", lambda: all(
            self.api("GET", f"/api/v2/dags/{d}").status_code == 200 for d in dag_ids), timeout=timeout)
        for dag_id in dag_ids:
            dag = self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
            dag.raise_for_status()
            # asset watchers are registered when an unpaused DAG is parsed: parse its file again now
            self.api("PUT", f"/api/v2/parseDagFile/{dag.json()['file_token']}").raise_for_status()

    def wait_run(self, dag_id: str, match: Callable[[dict], bool] = lambda run: True, timeout: float = 120,
                 final: bool = True) -> dict:
        """The first run of `dag_id` that `match`es, once it is created (or, with `final`, once it has ended)."""
        def found() -> dict | None:
            for run in self.runs(dag_id):
                if match(run) and (not final or run["state"] in ("success", "failed")):
                    return run
            return None
        return self.wait_for(f"a {'finished ' if final else ''}run of {dag_id}", found, timeout=timeout,
                             interval=0.2)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Poll `check` until it returns something truthy; fail with every log tail when a process died or the
        time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
            except requests.RequestException:
                result = None
            if result:
                return result
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"not within {timeout:.0f}s"
                raise StackError(f"waiting for {what}: {why}\n{self.tails()}")
            time.sleep(interval)

    # ------------------------------------------------------------------ logs

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, lines: int = 30) -> str:
        """The last lines of every process's log, for a failure message."""
        return "\n".join(f"----- {path.stem} ({path}) -----\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:]) for path in sorted(self.logs.glob("*.log")))

    # ------------------------------------------------------------------ internals

    def _healthy(self) -> bool:
        health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        return all((health.get(c) or {}).get("status") == "healthy" for c in COMPONENTS)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as log:
            return subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def _run(self, *args: str, name: str, timeout: float) -> None:
        proc = self._spawn(name, *args)
        self.procs[name] = proc
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() != 0:
            raise StackError(f"airflow {' '.join(args)} failed (exit {proc.poll()})\n{self.tails()}")
        del self.procs[name]
