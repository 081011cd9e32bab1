"""The per-hub pipeline and `deploy.max_parallel` on the real scheduler (dag.test runs one task at a time and ignores
concurrency limits, so only a scheduler with an executor can show either): the native stack of sandbox/stack.py
with the LocalExecutor, over the sandbox world: two hubs to deploy, at most one upgrading at once, every helm pod of
one fixed duration. The emulator's record of pods created and deleted says how many ran at once; the task
instances say that the first hub's verification started while the other hub's upgrade was still running.

(One upgrade at a time, because every sandbox hub is the same local JupyterHub: verifications of different hubs
at once would queue for its smoke users, which a real fleet, one hub per hub, never does.)"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from sandbox.stack import Stack
from sandbox.world import Cluster, Deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DAG = "hubflow_deploy_staging"
POD_SECONDS = 12
HUBS = ("data8", "datahub")


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


def test_hubs_upgrade_at_most_max_parallel_at_once_and_a_hub_is_verified_when_its_own_upgrade_ends(tmp_path):
    with Stack(tmp_path / "stack", executor="LocalExecutor", concurrency=6) as stack, ThreadPoolExecutor(1) as pool:
        migrated = pool.submit(stack.migrate)  # meanwhile the cluster starts
        cluster = Cluster(tmp_path / "cluster")
        deployment = Deployment(tmp_path / "deployment", cluster)
        try:
            cluster.upgrades_succeed(seconds=POD_SECONDS)
            settings = deployment.settings_file.read_text()
            deployment.settings_file.write_text(settings.replace("revert:\n", "deploy:\n  max_parallel: 1\nrevert:\n"))
            deployment.ledger_url = stack.database("ledger")
            migrated.result()
            deployment.baseline()
            deployment.github.merge_feature("Tune two hubs", {
                f"deployments/{hub}/config/common.yaml": f"jupyterhub: {{custom: {{hub: {hub}, size: 2}}}}\n"
                for hub in HUBS})
            stack.start(deployment.environment())
            stack.unpause(DAG)
            stack.api("POST", f"/api/v2/dags/{DAG}/dagRuns", json={"logical_date": None}).raise_for_status()
            run = stack.wait_run(DAG, lambda r: r["run_type"] == "manual", timeout=300)
            tis = stack.task_instances(DAG, run["dag_run_id"])
            assert run["state"] == "success", ({(t["task_id"], t["map_index"]): t["state"] for t in tis},
                                               stack.tails())
        finally:
            deployment.stop()
            cluster.stop()

    requests = list(cluster.k8s.requests)
    upgraded = [r.body["metadata"]["labels"]["hubflow.io/hub"] for r in requests if r.method == "POST"
                and r.path.endswith("/pods") and r.body["metadata"]["labels"].get("hubflow.io/kind") == "upgrade"]
    assert sorted(upgraded) == sorted(HUBS)
    assert most_at_once(requests, "upgrade") == 1  # both were ready at once: deploy.max_parallel held one back
    upgrade_end = {t["map_index"]: when(t["end_date"]) for t in tis if t["task_id"] == "rest.upgrade"}
    verify_start = {t["map_index"]: when(t["start_date"]) for t in tis if t["task_id"] == "rest.verify"}
    first, last = min(upgrade_end, key=upgrade_end.get), max(upgrade_end, key=upgrade_end.get)
    assert verify_start[first] < upgrade_end[last], (verify_start, upgrade_end)  # it did not wait for the others
