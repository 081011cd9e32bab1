"""The whole sandbox for end-to-end runs of the deploy DAGs with dag.test.

Real: Airflow (dag.test on SQLite), git (a bare `origin` served by the GitHub emulator over smart HTTP), JupyterHub
(one local hub stands for every hub URL), the OCI registry (Debian's docker-registry), the ledger (SQLite).
Emulated: GitHub and the Kubernetes API (the real KubernetesPodOperator talks to it). Every connection is given to
Airflow as an AIRFLOW_CONN_* variable, as an operator would configure a real deployment.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import airflow_support

airflow_support.setup_environment()

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


@dataclass
class Sandbox:
    root: Path
    github: object
    k8s: object
    hub: object
    registry: object
    settings_file: Path
    ledger_url: str
    capture: object
    log: str = ""

    def settings(self):
        from hubflow.config import load_settings

        return load_settings(self.settings_file)

    def ledger(self):
        from hubflow.ledger import Ledger

        return Ledger(self.ledger_url)

    def run(self, env: str, **conf):
        """One deploy run of `env`, as the REST API or the form would start it; its log lands in `self.log`."""
        self.capture.readouterr()
        run = airflow_support.run_dag(DAGS, f"hubflow_deploy_{env}", conf=conf or None)
        out = self.capture.readouterr()
        self.log = out.out + out.err
        return run

    def pods(self, kind: str, env: str | None = None) -> list[dict]:
        """The pods the operator asked the cluster for, of one kind (build, upgrade, rollback)."""
        return [p for p in self.k8s.created if p["metadata"]["labels"].get("hubflow.io/kind") == kind
                and (env is None or p["metadata"]["labels"].get("hubflow.io/env") == env)]

    def upgrades_succeed(self, previous: int = 3) -> None:
        """Helm upgrade pods succeed and report revisions previous -> previous + 1 (what the runner writes)."""
        self.k8s.script({"hubflow.io/kind": "upgrade"}, xcom={"previous_revision": previous,
                                                            "revision": previous + 1, "status": "deployed"},
                        logs=["release upgraded"])
        self.k8s.script({"hubflow.io/kind": "rollback"}, xcom={"revision": previous + 2, "status": "deployed"},
                        logs=["rolled back"])

    def baseline(self) -> str:
        """Both environments run the initial revision, verified, with its images in the registry."""
        from hubflow.git import Repo
        from hubflow.plan import make_plan

        repo = Repo(self.github.bare)
        head = repo.resolve("staging")[0]
        for image in make_plan(repo, None, head, "hubflow-fleet.yaml").images:
            self.registry.push(image.repository.split("/", 1)[1], image.tag)
        book = self.ledger()
        for env in ("staging", "prod"):
            book.finish(book.start(env, head, None, repo.tree_id(head), "baseline"), "success", "baseline")
        return head

    def push_built_images(self) -> None:
        """What the build pods would have pushed: each tag they were asked to build appears in the registry."""
        for pod in self.pods("build"):
            labels = pod["metadata"]["labels"]
            name = f"datahub/{labels['hubflow.io/image']}"
            self.registry.push(name, labels["hubflow.io/tag"])


SETTINGS = """\
repository:
  github: datahub/datahub
  clone_url: {clone_url}
  github_conn_id: github_default
environments:
  - name: staging
    branch: staging
    kubernetes_conn_id: kubernetes_staging
    hub_url: "{hub_url}"
    smoke_token_conn_id: hubflow_smoke
  - name: prod
    branch: prod
    kubernetes_conn_id: kubernetes_prod
    hub_url: "{hub_url}"
    smoke_token_conn_id: hubflow_smoke
    build_images: false
revert:
  mode: {revert_mode}
timeouts:
  pod_startup_seconds: 5
  smoke_seconds: 60
pods:
  namespace: hubflow
  deferrable: false
"""


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Started once: GitHub and Kubernetes emulators, a real registry and a real JupyterHub."""
    from sandbox.jupyterhub_local import LocalHub
    from sandbox.k8s_emulator import K8sEmulator
    from sandbox.registry_server import RegistryServer

    base = tmp_path_factory.mktemp("services")
    k8s = K8sEmulator().start()
    kubeconfig = k8s.write_kubeconfig(base / "kubeconfig")
    registry = RegistryServer(base / "registry").start()
    hub = LocalHub(base / "hub").start()
    os.environ.update({
        "AIRFLOW_CONN_KUBERNETES_STAGING": k8s.connection(kubeconfig),
        "AIRFLOW_CONN_KUBERNETES_PROD": k8s.connection(kubeconfig),
        "AIRFLOW_CONN_HUBFLOW_REGISTRY": json.dumps({"conn_type": "generic", "host": "127.0.0.1",
                                                     "port": registry.port, "schema": "http"}),
        "AIRFLOW_CONN_HUBFLOW_SMOKE": json.dumps({"conn_type": "generic", "password": hub.token}),
    })
    yield k8s, registry, hub
    hub.stop()
    registry.stop()
    k8s.stop()


@pytest.fixture
def sandbox(services, tmp_path, monkeypatch, capfd):
    """A fresh deployment repository, GitHub emulator, ledger and settings for one scenario."""
    from sandbox.github_emulator import TOKEN, GitHubEmulator
    from sandbox.sample_repo import make_sample_repo

    k8s, registry, hub = services
    k8s.reset()
    make_sample_repo(tmp_path / "work", bare=tmp_path / "origin.git", registry=registry.host)
    github = GitHubEmulator(tmp_path / "origin.git").start()
    settings_file = tmp_path / "hubflow.yaml"
    settings_file.write_text(SETTINGS.format(clone_url=github.clone_url, hub_url=hub.url, revert_mode="merge"))
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("HUBFLOW_CONFIG", str(settings_file))
    monkeypatch.setenv("HUBFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps({"conn_type": "github", "host": github.url,
                                                                  "password": TOKEN}))
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_LEDGER", json.dumps({"conn_type": "generic",
                                                                  "extra": {"url": ledger_url}}))
    box = Sandbox(tmp_path, github, k8s, hub, registry, settings_file, ledger_url, capfd)
    box.upgrades_succeed()
    yield box
    github.stop()
