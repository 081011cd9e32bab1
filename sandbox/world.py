"""The local world hubflow runs against here: what stands in for GitHub and a cluster, plus the real parts.

Real: git (a bare `origin` served over smart HTTP by the GitHub emulator), JupyterHub (one local hub answers for
every hub URL), the OCI registry (Debian's docker-registry), the ledger (SQLite). Emulated: GitHub and the
Kubernetes API. `connections()` gives Airflow every connection as AIRFLOW_CONN_* variables, the way an operator
would configure a real deployment. Used by the end-to-end tests and by `make demo`.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import requests

from sandbox.github_emulator import TOKEN, GitHubEmulator
from sandbox.jupyterhub_local import LocalHub
from sandbox.k8s_emulator import K8sEmulator
from sandbox.quiet_server import QuietServer
from sandbox.registry_server import RegistryServer
from sandbox.sample_repo import TEST_AGE_KEY, make_sample_repo

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
  mode: merge
schedules:
  poll_interval_seconds: {poll}
timeouts:
  pod_startup_seconds: 5
  smoke_seconds: 140
  spawn_seconds: 40
  github_wait_seconds: 3
pods:
  namespace: hubflow
  deferrable: {deferrable}
notify:
  slack_conn_id: hubflow_slack
"""


class SlackReceiver:
    """Where the Slack incoming-webhook connection points: keeps the text of every message posted."""

    def __init__(self):
        self.messages: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                receiver.messages.append(body.get("text", ""))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Cluster:
    """The long-lived services: Kubernetes emulator, registry and JupyterHub (started once per test session)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.k8s = K8sEmulator().start()
        self.kubeconfig = self.k8s.write_kubeconfig(self.root / "kubeconfig")
        self.registry = RegistryServer(self.root / "registry").start()
        self.hub = LocalHub(self.root / "hub").start()
        self.slack = SlackReceiver()

    def connections(self) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_KUBERNETES_STAGING": self.k8s.connection(self.kubeconfig),
            "AIRFLOW_CONN_KUBERNETES_PROD": self.k8s.connection(self.kubeconfig),
            "AIRFLOW_CONN_HUBFLOW_REGISTRY": json.dumps({"conn_type": "generic", "host": "127.0.0.1",
                                                         "port": self.registry.port, "schema": "http"}),
            "AIRFLOW_CONN_HUBFLOW_SMOKE": json.dumps({"conn_type": "generic", "password": self.hub.token}),
            "AIRFLOW_CONN_HUBFLOW_SLACK": json.dumps({"conn_type": "slackwebhook", "host": self.slack.url,
                                                      "password": "T000/B000/sandbox"}),
        }

    def upgrades_succeed(self, previous: int = 3, seconds: float = 0.0) -> None:
        """Helm upgrade pods succeed after `seconds` and report revisions previous -> previous + 1 (what the
        runner writes); rollbacks succeed too."""
        self.k8s.script({"hubflow.io/kind": "upgrade"}, xcom={"previous_revision": previous,
                                                            "revision": previous + 1, "status": "deployed"},
                        logs=["release upgraded"], run_seconds=seconds)
        self.k8s.script({"hubflow.io/kind": "rollback"}, xcom={"revision": previous + 2, "status": "deployed"},
                        logs=["rolled back"], run_seconds=seconds)

    def helm_for_real(self, namespace: str = "hubflow") -> None:
        """hubflow's helm pods (upgrade, rollback, uninstall, status) run for real on the emulator's local kubelet:
        the clone, the runner, helm 4 and sops, against the emulator's store. The pods get what an operator puts in
        the cluster: the `hubflow-git` token and the sample's (test-only) age key in `hubflow-sops`."""
        for kind in ("upgrade", "rollback", "uninstall", "status"):
            self.k8s.run_locally({"hubflow.io/kind": kind})
        for name, data in (("hubflow-git", {"token": TOKEN}), ("hubflow-sops", {"SOPS_AGE_KEY": TEST_AGE_KEY})):
            r = requests.post(f"{self.k8s.url}/api/v1/namespaces/{namespace}/secrets", timeout=10,
                              json={"metadata": {"name": name}, "type": "Opaque", "stringData": data})
            r.raise_for_status()

    def stop(self) -> None:
        self.slack.stop()
        self.hub.stop()
        self.registry.stop()
        self.k8s.stop()


class Deployment:
    """One deployment repository with its GitHub, settings and ledger, on a `Cluster`."""

    def __init__(self, root: Path, cluster: Cluster, poll_seconds: int = 60, deferrable: bool = False):
        self.root = Path(root)
        self.cluster = cluster
        make_sample_repo(self.root / "work", bare=self.root / "origin.git", registry=cluster.registry.host)
        self.github = GitHubEmulator(self.root / "origin.git").start()
        self.settings_file = self.root / "hubflow.yaml"
        self.settings_file.write_text(SETTINGS.format(clone_url=self.github.clone_url, hub_url=cluster.hub.url,
                                                      poll=poll_seconds, deferrable=str(deferrable).lower()))
        self.ledger_url = f"sqlite:///{self.root}/ledger.db"

    def environment(self) -> dict[str, str]:
        """Everything Airflow and hubflow need to reach this world."""
        return {
            **self.cluster.connections(),
            "HUBFLOW_CONFIG": str(self.settings_file),
            "HUBFLOW_CACHE": str(self.root / "cache"),
            "AIRFLOW_CONN_GITHUB_DEFAULT": json.dumps({"conn_type": "github", "host": self.github.url,
                                                       "password": TOKEN}),
            "AIRFLOW_CONN_HUBFLOW_LEDGER": json.dumps({"conn_type": "generic", "extra": {"url": self.ledger_url}}),
        }

    def ledger(self):
        from hubflow.clients.ledger import Ledger

        return Ledger(self.ledger_url)

    def baseline(self) -> str:
        """Both environments run the initial revision, verified, with its images in the registry."""
        from hubflow.clients.git import Repo
        from hubflow.core.plan import make_plan

        repo = Repo(self.github.bare)
        head = repo.resolve("staging")[0]
        digests = {image.name: self.cluster.registry.push(image.repository.split("/", 1)[1], image.tag)
                   for image in make_plan(repo, None, head, "hubflow-fleet.yaml").images}
        book = self.ledger()
        for env in ("staging", "prod"):
            attempt = book.start(env, head, None, repo.tree_id(head), "baseline")
            book.update(attempt, digests=digests, promotion="none")
            book.finish(attempt, "success", "baseline")
        return head

    def stop(self) -> None:
        self.github.stop()
