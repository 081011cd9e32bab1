"""The whole sandbox (sandbox/world.py) for end-to-end runs of the deploy DAGs with dag.test."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import airflow_support

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


class Sandbox:
    """One scenario's world, with what the tests read: pods asked for, GitHub's state, the ledger, the log."""

    def __init__(self, deployment, capture, caplog):
        self.deployment = deployment
        self.github = deployment.github
        self.k8s = deployment.cluster.k8s
        self.capture, self.caplog = capture, caplog
        self.log = ""

    def __getattr__(self, name):  # baseline, ledger, ...
        return getattr(self.deployment, name)

    @property
    def slack(self) -> list[str]:
        """The text of every Slack message posted during this scenario."""
        return self.deployment.cluster.slack.messages

    def upgrades_succeed(self) -> None:
        self.deployment.cluster.upgrades_succeed()

    def run(self, env: str, **conf):
        """One deploy run of `env`, as the REST API or the form would start it; its log lands in `self.log`."""
        return self.run_dag(f"hubflow_deploy_{env}", **conf)

    def run_dag(self, dag_id: str, **conf):
        """One run of a hubflow DAG with `conf`; its log lands in `self.log`."""
        self.capture.readouterr()
        self.caplog.clear()
        run = airflow_support.run_dag(DAGS, dag_id, conf=conf or None)
        out = self.capture.readouterr()
        # task logs reach stdout, or the logging handlers when an earlier test configured logging
        self.log = out.out + out.err + self.caplog.text
        return run

    def pods(self, kind: str, env: str | None = None) -> list[dict]:
        """The pods the operator asked the cluster for, of one kind (build, upgrade, rollback)."""
        return [p for p in self.k8s.created if p["metadata"]["labels"].get("hubflow.io/kind") == kind
                and (env is None or p["metadata"]["labels"].get("hubflow.io/env") == env)]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Started once: the Kubernetes emulator, a real registry and a real JupyterHub."""
    from sandbox.world import Cluster

    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture
def sandbox(cluster, tmp_path, monkeypatch, capfd, caplog):
    """A fresh deployment repository, GitHub emulator, ledger and settings for one scenario."""
    from sandbox.world import Deployment

    cluster.k8s.reset()
    cluster.upgrades_succeed()
    cluster.slack.messages.clear()
    deployment = Deployment(tmp_path, cluster)
    for key, value in deployment.environment().items():
        monkeypatch.setenv(key, value)
    yield Sandbox(deployment, capfd, caplog)
    deployment.stop()


def states(run) -> dict[str, str]:
    """Task states of a run, mapped instances as `task[i]`."""
    return {f"{t}[{i}]" if i >= 0 else t: ti.state for (t, i), ti in airflow_support.task_instances(run).items()}
