"""The production topology natively: PostgreSQL, Redis, api-server, scheduler, dag-processor, triggerer and a
Celery worker (sandbox/stack.py) over the sandbox world. A merge pushed with real git to the staging branch is
picked up by the branch watcher in the triggerer (no manual trigger); the run's tasks execute on the Celery worker,
its helm upgrade pod reaches the Kubernetes emulator, and the promotion PR is opened on the GitHub emulator. A second
merge then changes two hubs under `deploy.max_parallel: 1`: the real scheduler (dag.test runs one task at a time and
ignores concurrency limits, so only a scheduler with an executor can show it) upgrades one at a time, and the first
hub is verified while the other still upgrades. At the end every process the stack started is gone and its databases
are dropped.

(One upgrade at a time, because every sandbox hub is the same local JupyterHub: verifications of different hubs
at once would queue for its smoke users, which a real fleet, one hub per hub, never does.)"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from sandbox.sample_repo import commit, git
from sandbox.stack import POSTGRES, Stack
from sandbox.world import Cluster, Deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DAG = "hubflow_deploy_staging"
POD_SECONDS = 12  # the second merge's upgrades: long enough to see what overlaps
HUBS = ("data8", "datahub")


def alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. A zombie does not: it has ended and only waits to be reaped
    (children that outlived their group's leader are reaped by PID 1, whenever that gets to it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def most_at_once(requests, kind: str) -> int:
    """The most pods of `kind` alive at once, from the emulator's requests in the order they came."""
    alive, kinds, most = set(), {}, 0
    for r in requests:
        if r.method == "POST" and r.path.endswith("/pods"):
            kinds[r.body["metadata"]["name"]] = r.body["metadata"]["labels"].get("hubflow.io/kind")
            if kinds[r.body["metadata"]["name"]] == kind:
                alive.add(r.body["metadata"]["name"])
        elif r.method == "DELETE" and "/pods/" in r.path:
            alive.discard(r.path.rsplit("/", 1)[1])
        most = max(most, len(alive))
    return most


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_merge_deploys_through_the_branch_watcher_on_celery_and_hubs_upgrade_at_most_max_parallel_at_once(
        tmp_path):
    with Stack(tmp_path / "stack", concurrency=4) as stack, ThreadPoolExecutor(1) as pool:
        migrated = pool.submit(stack.migrate)  # meanwhile the cluster starts (its JupyterHub takes a while)
        cluster = Cluster(tmp_path / "cluster")
        deployment = Deployment(tmp_path / "deployment", cluster, poll_seconds=5)
        try:
            cluster.upgrades_succeed(seconds=1)
            settings = deployment.settings_file.read_text()
            deployment.settings_file.write_text(settings.replace("revert:\n", "deploy:\n  max_parallel: 1\nrevert:\n"))
            deployment.ledger_url = stack.database("ledger")
            migrated.result()
            baselined = pool.submit(deployment.baseline)  # while the components start
            stack.start(deployment.environment())
            baselined.result()
            stack.unpause(DAG)
            # the watcher's first answered poll is its baseline: a merge after it is a change
            stack.wait_for("the branch watcher's first poll of staging", lambda: any(
                r.status == 200 for r in deployment.github.requests_to("GET", "*/commits/staging")), timeout=120)
            work = deployment.root / "work"
            merge = commit(work, "data8: larger notebooks", {
                "deployments/data8/config/common.yaml": "jupyterhub:\n  custom:\n    hub: data8\n    size: 2\n"})
            git(work, "push", "-q", "origin", "staging")

            run = stack.wait_run(DAG, timeout=180)
            tis = stack.task_instances(DAG, run["dag_run_id"])
            assert run["state"] == "success", (
                {(t["task_id"], t["map_index"]): t["state"] for t in tis}, stack.tails())
            assert run["run_type"] == "asset_triggered"
            ran = {ti["task_id"] for ti in tis if ti["state"] == "success"}
            assert {"resolve", "plan", "rest.upgrade", "rest.verify", "succeed", "record"} <= ran

            worker = stack.log("worker")
            assert run["dag_run_id"] in worker
            for task_id in ran:
                assert f"task_id='{task_id}'" in worker, f"{task_id} did not run on the Celery worker"

            upgrades = [r.body["metadata"]["labels"] for r in cluster.k8s.calls("POST", "/pods")
                        if r.body["metadata"]["labels"].get("hubflow.io/kind") == "upgrade"]
            assert [(labels["hubflow.io/hub"], labels["hubflow.io/env"]) for labels in upgrades] == [
                ("data8", "staging")]

            promotions = [p for p in deployment.github.pulls.values()
                          if (p["head"], p["base"], p["state"]) == ("staging", "prod", "open")]
            assert len(promotions) == 1, deployment.github.pulls
            assert deployment.github.head("staging") == merge

            # two hubs at once, one upgrade slot: the second merge, picked up by the watcher too
            cluster.upgrades_succeed(seconds=POD_SECONDS)
            mark = len(cluster.k8s.requests)
            deployment.github.merge_feature("Tune two hubs", {
                f"deployments/{hub}/config/common.yaml": f"jupyterhub: {{custom: {{hub: {hub}, size: 3}}}}\n"
                for hub in HUBS})
            second = stack.wait_run(DAG, lambda r: r["dag_run_id"] != run["dag_run_id"], timeout=300)
            tis = stack.task_instances(DAG, second["dag_run_id"])
            assert second["state"] == "success", ({(t["task_id"], t["map_index"]): t["state"] for t in tis},
                                                  stack.tails())
            groups, databases = [p.pid for p in stack.procs.values()], list(stack.databases)
            assert len(groups) == 5
        finally:
            deployment.stop()
            cluster.stop()

    requests = list(cluster.k8s.requests)[mark:]
    upgraded = [r.body["metadata"]["labels"]["hubflow.io/hub"] for r in requests if r.method == "POST"
                and r.path.endswith("/pods") and r.body["metadata"]["labels"].get("hubflow.io/kind") == "upgrade"]
    assert sorted(upgraded) == sorted(HUBS)
    assert most_at_once(requests, "upgrade") == 1  # both were ready at once: deploy.max_parallel held one back
    upgrade_end = {t["map_index"]: when(t["end_date"]) for t in tis if t["task_id"] == "rest.upgrade"}
    verify_start = {t["map_index"]: when(t["start_date"]) for t in tis if t["task_id"] == "rest.verify"}
    first, last = min(upgrade_end, key=upgrade_end.get), max(upgrade_end, key=upgrade_end.get)
    assert verify_start[first] < upgrade_end[last], (verify_start, upgrade_end)  # it did not wait for the others

    assert [pid for pid in groups if alive(pid)] == []
    with psycopg.connect(f"{POSTGRES}/postgres") as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (databases,)).fetchall()
    assert left == []
