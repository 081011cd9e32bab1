"""The deploy DAG with the REAL runner: each helm pod is cloned, decrypted with sops and run by helm 4 on the
emulator's local kubelet (sandbox/kubelet.py), against the Kubernetes emulator's store. What the tests read is what
helm itself wrote: `helm history`, the release records, the chart's objects."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from hubflow.clients.git import Repo
from hubflow.core.plan import make_plan
from hubflow.core.settings import load_settings
from hubflow.k8s import pods
from sandbox.kubelet import LocalKubelet
from sandbox.sample_repo import SECRET_VALUE
from tests.e2e.conftest import states
from tests.e2e.test_deploy import bad_merge, revert_pulls, statuses

HUB = "biology"
RELEASE = f"{HUB}-staging"
BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


@pytest.fixture
def real(sandbox, tmp_path):
    """The sandbox with helm for real: the baseline revision is installed on staging by the real runner (helm
    revision 1 of every hub), and the run's helm pods go to the local kubelet."""
    head = sandbox.baseline()
    sandbox.deployment.cluster.helm_for_real()
    settings = load_settings(sandbox.settings_file)
    env = settings.environment("staging")
    plan = make_plan(Repo(sandbox.github.bare), None, head, settings.repository.fleet_file)
    kubelet = LocalKubelet(sandbox.k8s)
    started = []
    for hub in plan.hubs:
        body = pods.compose(pods.base_pod(settings, env, "upgrade"), pods.helm_upgrade_pod(settings, env, plan,
                                                                                           hub.name))
        body["metadata"]["name"] = f"baseline-{hub.name}"
        started.append((hub.name, kubelet.start(body)))
    for hub, pod in started:
        assert pod.wait(120) == 0, f"baseline install of {hub}: {pod.logs()}"
        pod.kill()
    sandbox.helm_env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "KUBECACHEDIR": str(
        tmp_path / "kubecache"), "KUBECONFIG": str(sandbox.k8s.write_kubeconfig(
        tmp_path / "kubeconfig")), **{f"HELM_{k}_HOME": str(tmp_path / "helm" / k.lower())
                                       for k in ("CACHE", "CONFIG", "DATA")}}
    sandbox.head = head
    return sandbox


def helm(box, *args: str) -> str:
    """helm as a person runs it against the cluster, to check what hubflow left."""
    proc = subprocess.run([str(BIN / "helm"), *args], env=box.helm_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def history(box, release: str = RELEASE) -> list[tuple[int, str, str]]:
    rows = json.loads(helm(box, "history", release, "--namespace", release, "--output", "json"))
    return [(r["revision"], r["status"], r["description"]) for r in rows]


def chart(box) -> Path:
    """The sample's chart as checked out in its work tree (unchanged since the baseline)."""
    return Path(box.github.bare).parent / "work" / "hub"


def change_biology(box, title: str = "Give biology more memory"):
    return box.github.merge_feature(title, {
        "deployments/biology/config/common.yaml":
            "jupyterhub: {singleuser: {memory: {limit: 4G}}}\ncustom: {layer: common}\n"})


def test_a_merge_is_deployed_by_real_helm_with_its_values_in_order_and_the_nightly_reads_the_records(real):
    pr = change_biology(real)
    revision = pr["merge_commit_sha"]
    run = real.run("staging")
    assert run.state == "success", states(run)
    assert history(real) == [(1, "superseded", f"hubflow staging {real.head}"),
                             (2, "deployed", f"hubflow staging {revision}")]
    # helm's revision numbers reach the ledger
    attempt = real.ledger().last_success("staging")
    assert attempt.revision == revision
    assert [(r["hub"], r["previous_revision"], r["revision"]) for r in attempt.record["releases"]] == [(HUB, 1, 2)]
    # values in order: common, then staging, then the decrypted secrets, then the image as strings
    values = yaml.safe_load(helm(real, "get", "values", RELEASE, "--namespace", RELEASE, "--output", "yaml"))
    assert values["jupyterhub"]["singleuser"]["memory"] == {"limit": "4G"}
    configmap = real.k8s.get("configmaps", RELEASE, f"{RELEASE}-values")
    assert configmap["data"]["layer"] == "staging"  # config/staging.yaml overrides config/common.yaml
    auth = real.k8s.secret_data(RELEASE, f"{RELEASE}-auth")
    secret = SECRET_VALUE.format(env="staging")
    assert auth["client_secret"].decode() == secret  # sops decrypted it, after the plain files
    assert secret not in real.log and not real.k8s.leaks(secret)
    assert [(s, st) for s, st in statuses(real, revision)] == [("hubflow/staging", "success")]

    # the nightly reads the records helm wrote: no drift; then someone changes the release by hand
    run = real.run_dag("hubflow_nightly_verify", environments=["staging"], smoke=False)
    assert run.state == "success", states(run)
    helm(real, "upgrade", RELEASE, "--namespace", RELEASE, "--reuse-values", "--set-string",
         "jupyterhub.singleuser.image.tag=0123abcd0123", str(chart(real)))
    run = real.run_dag("hubflow_nightly_verify", environments=["staging"], smoke=False)
    assert run.state == "failed"
    summary = real.ledger().last_report("nightly", "staging")["summary"]
    found = " ".join(f["detail"] for h in summary["hubs"] if h["hub"] == HUB for f in h["findings"])
    assert "0123abcd0123" in found and "values differ" in found
    assert secret not in real.log and secret not in str(summary)


def test_a_hub_that_never_becomes_ready_is_rolled_back_by_helm_and_its_revision_held(real):
    real.k8s.never_ready(kind="Deployment", name=RELEASE)
    pr = change_biology(real, "Break biology's readiness")
    revision = pr["merge_commit_sha"]
    settings = real.settings_file.read_text().replace("timeouts:\n", "timeouts:\n  helm_seconds: 4\n")
    real.settings_file.write_text(settings)
    run = real.run("staging")
    assert run.state == "failed"
    s = states(run)
    assert s["rest.upgrade[0]"] == "failed" and s.get("rest.verify[0]") in ("upstream_failed", "skipped")
    (rev1, failed, back) = history(real)
    assert rev1[:2] == (1, "superseded") and failed[:2] == (2, "failed")
    assert back == (3, "deployed", "Rollback to 1")  # helm's --rollback-on-failure, for real
    assert real.ledger().held(revision).startswith("the helm upgrade failed")
    assert len(revert_pulls(real)) == 1
    assert statuses(real, revision) == [("hubflow/staging", "failure")]
    assert real.pods("rollback") == []  # helm already put it back: hubflow has nothing to undo


def test_a_failed_verification_is_rolled_back_by_hubflow_to_the_recorded_helm_revision(real):
    pr = bad_merge(real)
    run = real.run("staging")
    assert run.state == "failed"
    assert states(run)["rollback[0]"] == "success"
    (rollback,) = real.pods("rollback")
    assert rollback["metadata"]["labels"]["hubflow.io/hub"] == HUB
    assert history(real)[-1] == (3, "deployed", "Rollback to 1")
    assert real.ledger().held(pr["merge_commit_sha"]).startswith("verification failed: hub biology")


def kill_helm_mid_upgrade(box) -> None:
    """Someone's `helm upgrade` is killed while it waits for the hub: helm leaves the release in pending-upgrade."""
    box.k8s.never_ready(kind="Deployment", name=RELEASE, namespace=RELEASE)
    proc = subprocess.Popen([str(BIN / "helm"), "upgrade", RELEASE, str(chart(box)), "--namespace", RELEASE,
                             "--reuse-values", "--set-string", "jupyterhub.singleuser.image.tag=stuck",
                             "--wait=watcher", "--timeout", "60s"], env=box.helm_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (box.k8s.get("deployments", RELEASE, RELEASE) or {}).get("metadata", {}).get("generation") != 2:
            assert time.monotonic() < deadline and proc.poll() is None, "helm did not start the upgrade"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert history(box)[-1][:2] == (2, "pending-upgrade")


def test_a_release_stuck_in_pending_upgrade_is_a_platform_fault_then_recovered_when_allowed(real):
    kill_helm_mid_upgrade(real)
    pr = change_biology(real)
    revision = pr["merge_commit_sha"]
    run = real.run("staging")
    assert run.state == "failed"
    assert statuses(real, revision) == [("hubflow/staging", "error")]  # the platform's fault: no hold, no revert
    assert real.ledger().held(revision) is None and revert_pulls(real) == []
    assert "pending-upgrade" in real.log
    assert history(real)[-1][:2] == (2, "pending-upgrade")  # untouched: recovery is off

    real.settings_file.write_text(real.settings_file.read_text().replace("pods:\n", "pods:\n  recover_pending: true\n"))
    run = real.run("staging")
    assert run.state == "success", states(run)
    # the interrupted record stays as helm left it; hubflow rolled back to 1 (revision 3), then upgraded (4)
    assert [h[:2] for h in history(real)] == [(1, "superseded"), (2, "pending-upgrade"), (3, "superseded"),
                                              (4, "deployed")]
    assert history(real)[-1][2] == f"hubflow staging {revision}"


def test_without_the_sops_key_the_deploy_is_a_platform_fault_naming_the_file(real):
    r = requests.delete(f"{real.k8s.url}/api/v1/namespaces/hubflow/secrets/hubflow-sops", timeout=10)
    assert r.status_code == 200, r.text
    pr = change_biology(real)
    revision = pr["merge_commit_sha"]
    run = real.run("staging")
    assert run.state == "failed"
    assert "deployments/biology/secrets/staging.yaml" in real.log
    assert statuses(real, revision) == [("hubflow/staging", "error")]
    assert real.ledger().held(revision) is None and revert_pulls(real) == []
    assert history(real) == [(1, "deployed", f"hubflow staging {real.head}")]  # never touched
