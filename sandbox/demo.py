"""The main job on local defaults: the whole lifecycle, watched in a real Airflow.

1. Starts the sandbox (sandbox/world.py): a DataHub-like deployment repository as `origin` behind the GitHub
   emulator, the Kubernetes emulator, a real registry and a real JupyterHub.
2. Starts Airflow standalone (SQLite) with hubflow's dags/ and plugins/ pointed at it.
3. Plays a good merge into staging (deployed, verified, promotion PR) and a bad one (a package the image lacks:
   verification fails, the hub is rolled back, the merge reverted), and prints what happened.
4. Prints the UI address and its login, and keeps everything running until Ctrl-C, which stops all it started.

Everything lives under .airflow/ in the project; each start begins from a fresh sandbox.

    make demo
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

import requests

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".airflow"
PORT = int(os.environ.get("HUBFLOW_DEMO_PORT", "8080"))
API = f"http://127.0.0.1:{PORT}"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


class Airflow:
    """`airflow standalone` in its own process group (it stops its children only on SIGINT)."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None

    def start(self) -> None:
        airflow = Path(sys.executable).with_name("airflow")
        log = (HOME / "standalone.log").open("ab")
        self.proc = subprocess.Popen([str(airflow), "standalone"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"airflow standalone exited; see {HOME / 'standalone.log'}")
            try:
                health = requests.get(f"{API}/api/v2/monitor/health", timeout=2).json()
                if health.get("scheduler", {}).get("status") == "healthy" and self.password():
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        else:
            raise SystemExit(f"Airflow did not become healthy in 180 s; see {HOME / 'standalone.log'}")
        r = requests.post(f"{API}/auth/token", json={"username": "admin", "password": self.password()}, timeout=10)
        r.raise_for_status()
        self.token = r.json()["access_token"]

    def password(self) -> str | None:
        path = HOME / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text()).get("admin") if path.exists() else None

    def api(self, method: str, path: str, **kwargs) -> dict:
        r = requests.request(method, f"{API}/api/v2{path}", headers={"Authorization": f"Bearer {self.token}"},
                             timeout=30, **kwargs)
        r.raise_for_status()
        return r.json()

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 20})["dag_runs"]

    def wait_for_run(self, dag_id: str, known: set[str], revision: str, timeout: float = 420) -> dict:
        """The next run of `dag_id` (started by the branch watcher; by the REST API if none shows up) to its end."""
        deadline, triggered = time.monotonic() + timeout, False
        started = time.monotonic()
        while time.monotonic() < deadline:
            new = [r for r in reversed(self.runs(dag_id)) if r["dag_run_id"] not in known]  # oldest first
            if new and new[0]["state"] in ("success", "failed"):
                return new[0]
            if not new and not triggered and time.monotonic() - started > 60:
                print("   (no run from the branch watcher after 60 s: triggering through the REST API)")
                self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {"revision": revision}})
                triggered = True
            time.sleep(2)
        raise SystemExit(f"{dag_id} did not finish within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGINT to the group (standalone's own shutdown), then TERM and KILL to whatever it left behind."""
        if not self.proc:
            return
        for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 5), (signal.SIGKILL, 0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(min(grace, 2))


def tasks_of(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, str]:
    tis = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return {(ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")): ti["state"]
            for ti in tis["task_instances"]}


def report(world, airflow: Airflow, dag_id: str, run: dict, revision: str) -> None:
    print(f"   run {run['dag_run_id']}: {run['state']}")
    states = tasks_of(airflow, dag_id, run["dag_run_id"])
    print("   tasks: " + ", ".join(f"{t}={s}" for t, s in sorted(states.items()) if s))
    hubs = [p["metadata"]["labels"]["hubflow.io/hub"] for p in world.cluster.k8s.created
            if p["metadata"]["labels"].get("hubflow.io/kind") == "upgrade"
            and p["metadata"]["labels"].get("hubflow.io/revision") == revision]
    rolled = [p["metadata"]["labels"]["hubflow.io/hub"] for p in world.cluster.k8s.created
              if p["metadata"]["labels"].get("hubflow.io/kind") == "rollback"]
    print(f"   helm upgrade pods: {', '.join(hubs) or 'none'}; rollback pods: {', '.join(rolled) or 'none'}")
    for s in world.github.combined_status(revision)["statuses"]:
        print(f"   GitHub status {s['context']}: {s['state']} ({s['description']})")
    for pr in world.github.pulls.values():
        print(f"   PR #{pr['number']} {pr['head']} -> {pr['base']}: {pr['state']}{' (merged)' if pr['merged'] else ''}"
              f" {pr['title']!r}")
    held = world.ledger().held(revision)
    if held:
        print(f"   held: {revision[:12]}: {held}")


def main() -> None:
    from sandbox.world import Cluster, Deployment

    shutil.rmtree(HOME / "sandbox", ignore_errors=True)
    for old in HOME.glob("airflow.db*"):  # runs and watcher state of an earlier sandbox would only confuse
        old.unlink()
    (HOME / "sandbox").mkdir(parents=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops everything too, like Ctrl-C
    say("starting the sandbox: GitHub and Kubernetes emulators, a registry, a real JupyterHub")
    cluster = Cluster(HOME / "sandbox" / "cluster")
    # pods that take a few seconds, as real ones do (an instant pod races Airflow's own deferral bookkeeping)
    cluster.upgrades_succeed(seconds=4)
    cluster.k8s.script({"hubflow.io/kind": "build"}, run_seconds=4, logs=["pushed"])
    world = Deployment(HOME / "sandbox" / "deployment", cluster, poll_seconds=5, deferrable=True)
    world.baseline()
    print(f"   origin {world.github.clone_url}; hub {cluster.hub.url}; registry {cluster.registry.url}")
    env = dict(os.environ, **world.environment(),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               AIRFLOW_HOME=str(HOME), AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False", AIRFLOW__API__PORT=str(PORT),
               AIRFLOW__API__BASE_URL=API, PYTHONPATH=str(ROOT / "plugins"))
    airflow = Airflow(env)
    try:
        say(f"starting Airflow standalone on {API} (log: {HOME / 'standalone.log'})")
        airflow.start()
        dag = "hubflow_deploy_staging"
        say("waiting for the branch watcher to take its first look at staging")
        deadline = time.monotonic() + 120
        while not world.github.requests_to("GET", "/repos/datahub/datahub/branches/staging") \
                and time.monotonic() < deadline:
            time.sleep(1)

        say("a good merge into staging: more memory for biology")
        known = {r["dag_run_id"] for r in airflow.runs(dag)}
        good = world.github.merge_feature("Give biology more memory",
                                          {"deployments/biology/config/common.yaml": "jupyterhub: {memory: 4G}\n"})
        run = airflow.wait_for_run(dag, known, good["merge_commit_sha"])
        report(world, airflow, dag, run, good["merge_commit_sha"])

        say("a bad merge into staging: a package the image does not have")
        known = {r["dag_run_id"] for r in airflow.runs(dag)}
        bad = world.github.merge_feature("Add a package to datascience", {
            "images/datascience/requirements.txt":
                "pandas==2.2.3\nscikit-learn==1.5.2\nhubflow-no-such-package==1.0\n"})
        run = airflow.wait_for_run(dag, known, bad["merge_commit_sha"])
        report(world, airflow, dag, run, bad["merge_commit_sha"])

        say("the merged revert moves staging again: its run redeploys and verifies what the failed run touched")
        known.add(run["dag_run_id"])
        revert = world.github.head("staging")
        report(world, airflow, dag, airflow.wait_for_run(dag, known, revert), revert)

        say(f"the Airflow UI: {API}  login admin / {airflow.password()}")
        print("   GitHub emulator:", world.github.url, " JupyterHub:", cluster.hub.url)
        print("   Everything keeps running; Ctrl-C stops it all.", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping")
        airflow.stop()
        world.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
