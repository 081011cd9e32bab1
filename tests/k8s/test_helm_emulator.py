"""Real helm 4 against the Kubernetes emulator: install, upgrade, history, rollback, status, a rollback on failure
when a Deployment never becomes ready, uninstall; and hubflow's reader of the release records helm wrote."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import requests
from kubernetes import config as k8s_config

from hubflow.clients.helm_releases import HelmReleases, deployed, hubflow_revision
from sandbox import kube_protobuf
from sandbox.k8s_emulator import K8sEmulator, helm_release_secret
from sandbox.sample_repo import tool

SHA = "c" * 40
CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny\nversion: 0.1.0\n",
    "values.yaml": "message: hello\nimage: hub:1.0\n",
    "templates/all.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  message: {{ .Values.message | quote }}
---
apiVersion: v1
kind: Service
metadata:
  name: hub
spec:
  selector: {app: hub}
  ports: [{port: 8081}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hub
spec:
  replicas: 1
  selector:
    matchLabels: {app: hub}
  template:
    metadata:
      labels: {app: hub}
    spec:
      containers:
        - name: hub
          image: {{ .Values.image | quote }}
""",
    # every other kind the emulator serves, to see each become ready the way helm 4's watcher reads it
    "templates/more.yaml": "{{- if .Values.everyKind }}\n" + """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: hub}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: hub}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: hub}
subjects: [{kind: ServiceAccount, name: hub}]
roleRef: {kind: Role, name: hub, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: hub-db}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Service
metadata: {name: proxy-public}
spec: {type: LoadBalancer, selector: {app: proxy}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: hub}
spec: {rules: [{host: hub.example.org}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: hub}
spec: {podSelector: {matchLabels: {app: hub}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: hub}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: hub}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template: {metadata: {labels: {app: db}}, spec: {containers: [{name: db, image: db}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: puller}
spec:
  selector: {matchLabels: {app: puller}}
  template: {metadata: {labels: {app: puller}}, spec: {containers: [{name: p, image: p}]}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template: {spec: {restartPolicy: Never, containers: [{name: j, image: j}]}}
""" + "{{- end }}\n",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One emulator and one chart for the module; each test uses a namespace of its own."""
    root = tmp_path_factory.mktemp("helm")
    for name, text in CHART.items():
        (root / "chart" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "chart" / name).write_text(text)
    emu = K8sEmulator().start()
    # helm's homes and client-go's discovery cache (else ~/.kube/cache, per port: stale for a later emulator)
    env = {**os.environ, "KUBECONFIG": str(emu.write_kubeconfig(root / "kubeconfig")),
           "KUBECACHEDIR": str(root / "kube-cache"),
           **{f"HELM_{kind}_HOME": str(root / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}}
    yield emu, env, root / "chart", root / "kubeconfig"
    emu.stop()


def helm(world, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    _, env, _, _ = world
    proc = subprocess.run([tool("helm"), *args], env=env, capture_output=True, text=True, timeout=60)
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def upgrade(world, ns: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return helm(world, "upgrade", "--install", "hub", str(world[2]), "--namespace", ns, "--wait", "--timeout", "10s",
                *args, ok=ok)


def history(world, ns: str) -> list[tuple[int, str, str]]:
    out = json.loads(helm(world, "history", "hub", "--namespace", ns, "--output", "json").stdout)
    return [(h["revision"], h["status"], h["description"]) for h in out]


def records(world, ns: str):
    return HelmReleases(k8s_config.new_client_from_config(str(world[3]))).records("hub", ns)


def test_install_upgrade_rollback_and_status_as_helm_and_hubflow_read_them(world):
    emu, ns = world[0], "install"
    upgrade(world, ns, "--description", f"hubflow staging {SHA}")
    assert emu.get("configmaps", ns, "hub-config")["data"] == {"message": "hello"}
    hub = emu.get("deployments", ns, "hub")
    assert (hub["metadata"]["generation"], hub["status"]["readyReplicas"]) == (1, 1)
    # helm wrote its release record as protobuf; the Python client reads it back as JSON
    (post,) = emu.calls("POST", f"/namespaces/{ns}/secrets")
    assert post.raw.startswith(kube_protobuf.MAGIC) and post.body["metadata"]["name"] == "sh.helm.release.v1.hub.v1"

    upgrade(world, ns, "--set", "message=two", "--set", "image=hub:2.0")
    assert emu.get("configmaps", ns, "hub-config")["data"] == {"message": "two"}
    hub = emu.get("deployments", ns, "hub")
    assert hub["spec"]["template"]["spec"]["containers"][0]["image"] == "hub:2.0"
    assert hub["metadata"]["generation"] == 2 and hub["status"]["observedGeneration"] == 2
    assert history(world, ns) == [(1, "superseded", f"hubflow staging {SHA}"), (2, "deployed", "Upgrade complete")]

    helm(world, "rollback", "hub", "1", "--namespace", ns, "--wait", "--timeout", "10s")
    assert history(world, ns) == [(1, "superseded", f"hubflow staging {SHA}"), (2, "superseded", "Upgrade complete"),
                                  (3, "deployed", "Rollback to 1")]
    assert emu.get("configmaps", ns, "hub-config")["data"] == {"message": "hello"}
    status = json.loads(helm(world, "status", "hub", "--namespace", ns, "--output", "json").stdout)
    assert (status["version"], status["info"]["status"], status["info"]["description"]) == \
        (3, "deployed", "Rollback to 1")

    read = records(world, ns)
    assert [(r.version, r.status) for r in read] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert read[1].config == {"message": "two", "image": "hub:2.0"} and read[0].chart_version == "0.1.0"
    assert hubflow_revision(read, deployed(read)) == ("staging", SHA)


def test_a_deployment_that_never_becomes_ready_fails_the_upgrade_and_helm_rolls_back(world):
    emu, ns = world[0], "unready"
    upgrade(world, ns)
    emu.never_ready(kind="Deployment", name="hub", namespace=ns)
    started = time.monotonic()
    proc = helm(world, "upgrade", "hub", str(world[2]), "--namespace", ns, "--rollback-on-failure", "--timeout", "3s",
                "--set", "image=hub:broken", ok=False)
    assert time.monotonic() - started < 15
    assert "has been rolled back" in proc.stderr and "resource Deployment/unready/hub not ready" in proc.stderr
    (first, _, _), (second, failed, why), (third, now, back) = history(world, ns)
    assert (first, second, failed, third, now, back) == (1, 2, "failed", 3, "deployed", "Rollback to 1")
    assert "context deadline exceeded" in why
    hub = emu.get("deployments", ns, "hub")
    assert hub["spec"]["template"]["spec"]["containers"][0]["image"] == "hub:1.0"
    assert hub["status"]["readyReplicas"] == 1
    assert [(r.version, r.status) for r in records(world, ns)] == [(1, "superseded"), (2, "failed"), (3, "deployed")]


def test_uninstall_removes_the_objects_and_the_records(world):
    emu, ns = world[0], "gone"
    upgrade(world, ns, "--set", "unused=kept-in-the-release-only", "--set", "everyKind=true", "--wait-for-jobs")
    assert emu.get("services", ns, "hub")["spec"]["clusterIP"]
    assert emu.get("persistentvolumeclaims", ns, "hub-db")["status"]["phase"] == "Bound"
    # values reach the objects that template them, and otherwise only helm's release Secret
    assert emu.leaks("kept-in-the-release-only") == [] and emu.leaks("hello") != []
    helm(world, "uninstall", "hub", "--namespace", ns, "--wait", "--timeout", "10s")
    assert [key for key in emu.objects if key[1] == ns] == []
    assert "release: not found" in helm(world, "history", "hub", "--namespace", ns, ok=False).stderr
    assert records(world, ns) == []


def test_records_written_by_helm_release_secret_are_what_helm_reads(world):
    """The nightly tests write release records with the helper: real helm takes them as its own."""
    emu, ns = world[0], "written"
    for version, status in ((1, "deployed"), (2, "pending-upgrade")):
        secret = helm_release_secret("hub", ns, version, status, {}, description=f"hubflow staging {SHA}")
        assert requests.post(f"{emu.url}/api/v1/namespaces/{ns}/secrets", json=secret, timeout=5).status_code == 201
    assert history(world, ns) == [(1, "deployed", f"hubflow staging {SHA}"),
                                  (2, "pending-upgrade", f"hubflow staging {SHA}")]
    assert "another operation (install/upgrade/rollback) is in progress" in upgrade(world, ns, ok=False).stderr
    helm(world, "rollback", "hub", "1", "--namespace", ns)
    assert history(world, ns)[-1] == (3, "deployed", "Rollback to 1")
