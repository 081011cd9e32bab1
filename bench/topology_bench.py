"""hubflow on the production topology against DataHub's CI loop: one table, each row measured side by side in one run.

- deploy: 1 vs 10 changed hubs, helm upgrade pods of a fixed POD_SECONDS on the Kubernetes emulator, in the native
  stack (sandbox/stack.py; Celery, then LocalExecutor), from the run's start to its last upgrade's end; against
  the loop DataHub's CI runs today (per hub: create the same pod through the kubernetes client, wait for it, then
  the next hub), on the same emulator at the same time. Verification is not timed: one local JupyterHub stands in
  for every hub here, so the smoke tests take it one at a time (a pool of one slot; bench/policy/).
- merge -> run queued: a merge pushed with git, seen by the branch watcher (poll interval POLL), and a signed push
  delivery to the api-server's webhook route (/hubflow/webhook/github).
- DAG-folder parse: hubflow's dags/ against a file that imports only the provider modules parsing dags/ loads,
  with settings of 3, 30 and 300-hub repositories (each in a fresh interpreter, median of PARSE_RUNS).
- overhead per task: an upgrade task's time from queued to done, less its pod's run time, LocalExecutor and
  CeleryExecutor, alone (1 hub) and 10 at once (the mean).

    .venv/bin/python bench/topology_bench.py      # or: make bench   (10-16 minutes on 2 cores)
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import requests  # noqa: E402
from kubernetes import client as k8s, config as k8s_config  # noqa: E402

from sandbox.sample_repo import commit, git, make_sample_repo, sample_files  # noqa: E402
from sandbox.stack import Stack  # noqa: E402
from sandbox.world import SETTINGS, Cluster, Deployment  # noqa: E402

POD_SECONDS = 20
POLL = 5
HUBS = 10
PARSE_SIZES = (3, 30, 300)
PARSE_RUNS = 5
DAG = "hubflow_deploy_staging"
SECRET = "bench-webhook-secret"
POLICY = ROOT / "bench" / "policy"

PARSE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
took = time.perf_counter() - start
assert bag.dags and not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": took, "dags": len(bag.dags),
                  "providers": sorted(m for m in sys.modules if m.startswith("airflow.providers."))}))
"""


def moment(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# ---------------------------------------------------------------------------------------------- parse time

def parse(folder: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PARSE, str(folder)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_rows(tmp: Path) -> list[tuple]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp / "parse-home"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp}/parse.db")
    settings = {}
    for n in PARSE_SIZES:
        repo = make_sample_repo(tmp / f"parse{n}", hubs=n)
        settings[n] = tmp / f"parse{n}.yaml"
        settings[n].write_text(SETTINGS.format(clone_url=repo, hub_url="http://127.0.0.1:9/{hub}/", poll=60,
                                               deferrable="false"))
    first = parse(ROOT / "dags", {**env, "HUBFLOW_CONFIG": str(settings[PARSE_SIZES[0]])})
    reference = tmp / "reference"
    reference.mkdir()
    (reference / "reference_dag.py").write_text(
        "".join(f"import {m}  # noqa: F401\n" for m in first["providers"])
        + "import pendulum\nfrom airflow.sdk import dag, task\n\n\n"
        "@dag(dag_id='reference', schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz='UTC'))\n"
        "def reference():\n    @task\n    def noop():\n        pass\n\n    noop()\n\n\nreference()\n")
    times: dict = {"reference": [], **{n: [] for n in PARSE_SIZES}}
    for _ in range(PARSE_RUNS):  # interleaved: a busy moment of the machine hits every case alike
        times["reference"].append(parse(reference, env)["seconds"])
        for n in PARSE_SIZES:
            times[n].append(parse(ROOT / "dags", {**env, "HUBFLOW_CONFIG": str(settings[n])})["seconds"])
    ref = statistics.median(times["reference"])
    rows = [("DAG-folder parse, providers-only file", f"{ref:.2f} s", "", "")]
    for n in PARSE_SIZES:
        t = statistics.median(times[n])
        rows.append((f"DAG-folder parse, {n} hubs ({first['dags']} DAGs)", f"{t:.2f} s", "<= 1.1x", f"{t / ref:.2f}x"))
    return rows


# ---------------------------------------------------------------------------------------------- the CI loop

class SequentialLoop(threading.Thread):
    """DataHub's CI today: per hub, create the upgrade pod and wait for it to end, then the next hub."""

    def __init__(self, kubeconfig: Path, counts: tuple[int, ...]):
        super().__init__(daemon=True)
        self.counts = counts
        self.template: dict = {}
        self.api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))
        self.seconds: dict[int, float] = {}

    def start(self, template: dict) -> None:
        self.template = template
        super().start()

    def run(self) -> None:
        for count in self.counts:
            start = time.monotonic()
            for i in range(count):
                pod = copy.deepcopy(self.template)
                pod["metadata"] = {"name": f"ci-loop-{count}-{i}", "labels": {
                    **self.template["metadata"]["labels"], "hubflow.io/env": "ci-loop"}}
                self.api.create_namespaced_pod("ci-loop", pod)
                while self.api.read_namespaced_pod(pod["metadata"]["name"], "ci-loop").status.phase not in (
                        "Succeeded", "Failed"):
                    time.sleep(0.5)
            self.seconds[count] = time.monotonic() - start


# ---------------------------------------------------------------------------------------------- the stack

def deployment(root: Path, cluster: Cluster) -> Deployment:
    """The sample deployment with HUBS hubs (the extra ones committed before the baseline)."""
    d = Deployment(root, cluster, poll_seconds=POLL)
    work = root / "work"
    commit(work, f"{HUBS} hubs", sample_files(HUBS, cluster.registry.host))
    git(work, "push", "-q", "origin", "staging", "staging:prod")
    return d


def merge(d: Deployment, hubs: list[str], message: str) -> tuple[str, float]:
    """A merge into staging pushed with git; (sha, when the push returned)."""
    work = d.root / "work"
    git(work, "pull", "-q", "--rebase", "origin", "staging")  # a failed run may have pushed a revert
    sha = commit(work, message, {f"deployments/{h}/config/common.yaml":
                                 f"jupyterhub:\n  custom:\n    hub: {h}\n    change: {message!r}\n" for h in hubs})
    git(work, "push", "-q", "origin", "staging")
    return sha, time.time()


def hub_names(d: Deployment) -> list[str]:
    return sorted(p.name for p in (d.root / "work" / "deployments").iterdir())


def start(stack: Stack, d: Deployment, extra: dict[str, str]) -> None:
    d.ledger_url = stack.database("ledger")
    d.baseline()
    stack.start({**d.environment(), **extra})
    stack.unpause(DAG)
    stack.api("POST", "/api/v2/pools", json={"name": "smoke", "slots": 1}).raise_for_status()
    stack.wait_for("the branch watcher's first poll of staging", lambda: any(
        r.status == 200 for r in d.github.requests_to("GET", "*/commits/staging")), timeout=180)


def run_after(stack: Stack, pushed: float) -> dict:
    """The first run queued after a push."""
    return stack.wait_run(DAG, lambda r: moment(r["queued_at"]) >= pushed - 1, timeout=120, final=False)


def polls(d: Deployment) -> int:
    return len(d.github.requests_to("GET", "*/commits/staging"))


def settle(stack: Stack, d: Deployment) -> None:
    """Until every run has ended and the watcher has nothing queued (a failed run's revert moves the branch too;
    an event that arrives while a run is active waits as a queued asset event)."""
    def quiet() -> bool:
        after = polls(d)
        stack.wait_for("two more polls", lambda: polls(d) >= after + 2, timeout=60)
        events = stack.api("GET", f"/api/v2/dags/{DAG}/assets/queuedEvents")
        return (events.status_code == 404 or not events.json()["queued_events"]) and all(
            r["state"] in ("success", "failed") for r in stack.runs(DAG))
    stack.wait_for("every run ended, no event queued", quiet, timeout=600, interval=1)


def upgrades_done(stack: Stack, run: dict, count: int, timeout: float = 600) -> list[dict]:
    """The run's upgrade task instances, once all `count` have ended."""
    def ended():
        tis = [ti for ti in stack.task_instances(DAG, run["dag_run_id"]) if ti["task_id"].endswith(".upgrade")
               and ti["map_index"] >= 0]
        return tis if len(tis) == count and all(ti["end_date"] for ti in tis) else None
    return stack.wait_for(f"{count} upgrades of {run['dag_run_id']}", ended, timeout=timeout, interval=1)


def deploy_seconds(stack: Stack, run: dict, tis: list[dict]) -> float:
    started = moment(stack.api("GET", f"/api/v2/dags/{DAG}/dagRuns/{run['dag_run_id']}").json()["start_date"])
    return max(moment(ti["end_date"]) for ti in tis) - started


def overhead(tis: list[dict]) -> float:
    return statistics.mean(moment(ti["end_date"]) - moment(ti["queued_when"]) - POD_SECONDS for ti in tis)


def deploy_runs(stack: Stack, d: Deployment, after_first) -> tuple[dict, list[float]]:
    """Merges changing 1, then HUBS hubs, each seen by the watcher: {count: (deploy seconds, overhead per task)}
    and the merge -> queued latencies."""
    out, queued = {}, []
    for count in (1, HUBS):
        _, pushed = merge(d, hub_names(d)[:count], f"change {count} hubs")
        run = run_after(stack, pushed)
        queued.append(moment(run["queued_at"]) - pushed)
        tis = upgrades_done(stack, run, count)
        out[count] = (deploy_seconds(stack, run, tis), overhead(tis))
        if count == 1:
            after_first()
            settle(stack, d)
    return out, queued


def webhook(stack: Stack, d: Deployment) -> float:
    """Seconds from a signed push delivery to its run being queued."""
    work = d.root / "work"
    git(work, "pull", "-q", "--rebase", "origin", "staging")
    before = git(work, "rev-parse", "HEAD").strip()
    sha = commit(work, "docs: webhook bench", {"docs/index.md": "# Operator docs\n\nwebhook bench\n"})
    git(work, "push", "-q", "origin", "staging")
    body = json.dumps({"ref": "refs/heads/staging", "before": before, "after": sha, "deleted": False}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    sent = time.time()
    answer = requests.post(f"{stack.url}/hubflow/webhook/github", data=body, timeout=30, headers={
        "X-GitHub-Event": "push", "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    run = stack.wait_run(DAG, lambda r: r["dag_run_id"] == f"hubflow_webhook__staging__{sha}", final=False)
    return moment(run["queued_at"]) - sent


def main() -> None:
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="hubflow-bench-") as name:
        tmp = Path(name)
        print("parse times ...", flush=True)
        rows += parse_rows(tmp)
        cluster = Cluster(tmp / "cluster")
        cluster.upgrades_succeed(seconds=POD_SECONDS)
        extra = {"HUBFLOW_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(POLICY)}
        results: dict = {}
        worlds: list[Deployment] = []
        loop = SequentialLoop(cluster.kubeconfig, (1, HUBS))
        try:
            print("CeleryExecutor stack ...", flush=True)
            d = deployment(tmp / "celery", cluster)
            worlds.append(d)
            with Stack(tmp / "celery-stack") as stack:
                start(stack, d, extra)
                # the CI loop creates the very pod hubflow asked for, from the first run's end on, alongside
                results["celery"], queued = deploy_runs(stack, d, lambda: loop.start(next(
                    p for p in cluster.k8s.created if p["metadata"]["labels"].get("hubflow.io/kind") == "upgrade")))
                # last: its run waits behind the 10-hub run (one run at a time), but is queued at once
                results["webhook"] = webhook(stack, d)
            print("LocalExecutor stack ...", flush=True)
            d2 = deployment(tmp / "local", cluster)
            worlds.append(d2)
            with Stack(tmp / "local-stack", executor="LocalExecutor") as stack:
                start(stack, d2, extra)
                results["local"], more = deploy_runs(stack, d2, lambda: None)
                queued += more
            loop.join(timeout=600)
        finally:
            for world in worlds:
                world.stop()
            cluster.stop()
    celery, local = results["celery"], results["local"]
    rows += [
        (f"deploy 1 hub, hubflow on Celery ({POD_SECONDS} s pods)", f"{celery[1][0]:.1f} s", "", ""),
        (f"deploy {HUBS} hubs, hubflow on Celery", f"{celery[HUBS][0]:.1f} s", "<= 1.5x",
         f"{celery[HUBS][0] / celery[1][0]:.2f}x"),
        ("deploy 1 hub, hubflow on LocalExecutor", f"{local[1][0]:.1f} s", "", ""),
        (f"deploy {HUBS} hubs, hubflow on LocalExecutor", f"{local[HUBS][0]:.1f} s", "<= 1.5x",
         f"{local[HUBS][0] / local[1][0]:.2f}x"),
        ("deploy 1 hub, CI loop (one hub after another)", f"{loop.seconds[1]:.1f} s", "", ""),
        (f"deploy {HUBS} hubs, CI loop", f"{loop.seconds[HUBS]:.1f} s", "",
         f"{loop.seconds[HUBS] / loop.seconds[1]:.2f}x"),
        (f"deploy {HUBS} hubs, hubflow on Celery / CI loop", "", "", f"{celery[HUBS][0] / loop.seconds[HUBS]:.2f}x"),
        (f"merge -> run queued, branch watcher (P = {POLL} s), max of {len(queued)}", f"{max(queued):.1f} s",
         f"<= {POLL + 2} s", ""),
        (f"merge -> run queued, branch watcher, mean of {len(queued)}", f"{statistics.mean(queued):.1f} s", "", ""),
        ("merge -> run queued, webhook route", f"{results['webhook']:.2f} s", "<= 2 s", ""),
        ("overhead per task over the pod, LocalExecutor, 1 task", f"{local[1][1]:.1f} s", "", ""),
        (f"overhead per task over the pod, LocalExecutor, {HUBS} at once", f"{local[HUBS][1]:.1f} s", "", ""),
        ("overhead per task over the pod, CeleryExecutor, 1 task", f"{celery[1][1]:.1f} s", "", ""),
        (f"overhead per task over the pod, CeleryExecutor, {HUBS} at once", f"{celery[HUBS][1]:.1f} s", "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':{width}}  {'measured':>16}  {'target':>8}  {'ratio':>6}")
    for what, measured, target, ratio in rows:
        print(f"{what:{width}}  {measured:>16}  {target:>8}  {ratio:>6}")


if __name__ == "__main__":
    main()
