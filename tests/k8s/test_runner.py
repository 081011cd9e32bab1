"""The runner script (include/runner/hubflow-runner) run as a process the way its pod runs it: real helm 4 and
real sops from the project's venv, against the Kubernetes emulator, on the sample repository's real chart (its
dependency vendored) and sops files encrypted for the test age key, which reaches the runner only as the Secret
`hubflow-sops`. The pod builders produce the argv, so the two together fix what helm is asked to do.

A few situations no real tool produces on demand (helm failing its own rollback, losing the cluster mid-upgrade, a
key service refusing) run the runner with stand-in `helm`/`sops` scripts instead (`FakeRunner`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from sandbox.registry_server import free_port
from sandbox.sample_repo import SECRET_VALUE, TEST_AGE_KEY, dependency_chart, tool

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "include" / "runner" / "hubflow-runner"
BIN = Path(tool("helm")).parent
HUB = "release datahub-staging in namespace datahub-staging"
NS = RELEASE = "datahub-staging"
SECRET = SECRET_VALUE.format(env="staging")
OTHER_AGE_KEY = "AGE-SECRET-KEY-13ENNM7PAKTZWAKP3HZ5DR5ZSGDCHUXPNMN7CDNY34EKM0Q8UCWMQ9WSTK2"  # TEST ONLY, opens nothing


class Runner:
    """Runs the runner with real helm and sops on PATH and the emulator as its cluster; the environment is what
    the pod gives it (nothing of this process's SOPS_* or helm settings leaks in)."""

    def __init__(self, tmp: Path, kubeconfig: Path, path: str = str(BIN)):
        self.tmp = tmp
        self.xcom, self.decrypted, self.termination_log = tmp / "xcom" / "return.json", tmp / "decrypted", \
            tmp / "termination-log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SOPS_", "HELM_", "KUBECONFIG"))
               and k != "XDG_CONFIG_HOME"}
        self.env = dict(env, PATH=f"{path}:{os.environ['PATH']}", HOME=str(tmp), KUBECONFIG=str(kubeconfig),
                        HUBFLOW_XCOM=str(self.xcom), HUBFLOW_DECRYPTED=str(self.decrypted),
                        HUBFLOW_TERMINATION_LOG=str(self.termination_log),
                        **{f"HELM_{k}_HOME": str(tmp / "helm" / k.lower()) for k in ("CACHE", "CONFIG", "DATA")})

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        if self.termination_log.exists():
            self.termination_log.unlink()
        return subprocess.run([sys.executable, str(RUNNER), *args], env=dict(self.env, **env), capture_output=True,
                              text=True, timeout=120)

    def helm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool("helm"), *args], env=self.env, capture_output=True, text=True, timeout=60)

    def history(self, release: str = RELEASE, namespace: str = NS) -> list[tuple[int, str, str]]:
        out = self.helm("history", release, "--namespace", namespace, "--output", "json")
        assert out.returncode == 0, out.stderr
        return [(r["revision"], r["status"], r["description"]) for r in json.loads(out.stdout)]

    def result(self):
        return json.loads(self.xcom.read_text())

    def termination(self, proc) -> str:
        """The termination message; it is also the last log line, and it never holds values."""
        text = self.termination_log.read_text()
        assert text.endswith("\n") and text.count("\n") == 1
        line = text.rstrip("\n")
        assert proc.stdout.splitlines()[-1] == f"hubflow-runner: {line}"
        for value in (SECRET, "decrypted-value", "client_secret", "GenericOAuthenticator", "singleuser"):
            assert value not in line
        return line


@pytest.fixture
def cluster(emulator, tmp_path, settings):
    """The emulator with the Secret `hubflow-sops` holding the test age key, as an operator creates it."""
    from hubflow.k8s import pods

    r = requests.post(f"{emulator.url}/api/v1/namespaces/{settings.pods.namespace}/secrets", timeout=10,
                      json={"metadata": {"name": pods.SOPS_SECRET}, "stringData": {"SOPS_AGE_KEY": TEST_AGE_KEY}})
    assert r.status_code == 201, r.text
    return emulator


@pytest.fixture
def runner(cluster, tmp_path):
    return Runner(tmp_path, cluster.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def key(cluster, settings) -> dict[str, str]:
    """What the upgrade pod's envFrom of `hubflow-sops` gives the runner: that Secret's keys, read from the cluster."""
    from hubflow.k8s import pods

    return {k: v.decode() for k, v in cluster.secret_data(settings.pods.namespace, pods.SOPS_SECRET).items()}


@pytest.fixture
def upgrade_args(settings, plan, sample):
    from hubflow.k8s import pods

    pod = pods.helm_upgrade_pod(settings, settings.environment("staging"), plan, "datahub")
    return [*pod["arguments"], "--workdir", str(sample)]


def timeout(args: list[str], value: str) -> list[str]:
    i = args.index("--timeout")
    return [*args[:i + 1], value, *args[i + 2:]]


def revision(args: list[str], sha: str) -> list[str]:
    i = args.index("--revision")
    return [*args[:i + 1], sha, *args[i + 2:]]


def image_tag(args: list[str], tag: str) -> list[str]:
    return [re.sub(r"(image\.tag=).*", rf"\g<1>{tag}", a) for a in args]


def no_secret_anywhere(runner, proc, cluster, args):
    """The decrypted value reached helm (the Secret holds it) and nothing else: log, args, XCom, other requests."""
    assert cluster.secret_data(NS, f"{RELEASE}-auth") == {"client_secret": SECRET.encode()}
    assert SECRET not in proc.stdout + proc.stderr + runner.xcom.read_text() + " ".join(args)
    assert cluster.leaks(SECRET) == []


def test_upgrade_applies_values_in_order_and_rollback_returns_to_the_recorded_revision(runner, cluster, key, settings,
                                                                                        upgrade_args, plan):
    from hubflow.k8s import pods

    primary = plan.image("primary")
    proc = runner(*upgrade_args, **key)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # common, then staging, then the decrypted secrets (they replace staging's placeholder), then the image strings
    assert cluster.get("configmaps", NS, f"{RELEASE}-values")["data"] == {
        "hub": "datahub", "layer": "staging", "hosts": "datahub-staging.example.org", "db": "sqlite-pvc"}
    assert cluster.get("configmaps", NS, f"{RELEASE}-singleuser")["data"] == {"image": primary.ref}
    assert cluster.get("deployments", NS, RELEASE)["status"]["readyReplicas"] == 1
    no_secret_anywhere(runner, proc, cluster, upgrade_args)
    # the dependency is vendored: nothing was downloaded
    assert "are vendored in hub/charts: nothing to download" in proc.stdout
    assert "helm dependency build" not in proc.stdout and "helm repo" not in proc.stdout
    assert runner.result() == {"release": RELEASE, "namespace": NS, "previous_revision": None, "revision": 1,
                               "status": "deployed", "hubflow_revision": plan.head}
    assert not runner.termination_log.exists()

    later = "b" * 40
    proc = runner(*image_tag(revision(upgrade_args, later), "tag2"), **key)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cluster.get("configmaps", NS, f"{RELEASE}-singleuser")["data"] == {"image": f"{primary.repository}:tag2"}
    assert (runner.result()["previous_revision"], runner.result()["revision"]) == (1, 2)
    assert runner.history() == [(1, "superseded", f"hubflow staging {plan.head}"),
                                (2, "deployed", f"hubflow staging {later}")]

    # hubflow's rollback pod, to the revision recorded before the upgrade
    proc = runner(*pods.helm_rollback_pod(settings, settings.environment("staging"), "datahub", 1)["arguments"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert runner.result() == {"release": RELEASE, "namespace": NS, "rolled_back_to": 1, "revision": 3,
                               "status": "deployed"}
    assert runner.history()[-1] == (3, "deployed", "Rollback to 1")
    assert cluster.get("configmaps", NS, f"{RELEASE}-singleuser")["data"] == {"image": primary.ref}


def test_a_hub_that_never_becomes_ready_is_rolled_back_by_helm_and_says_so(runner, cluster, key, upgrade_args,
                                                                            plan):
    assert runner(*upgrade_args, **key).returncode == 0
    cluster.never_ready(kind="Deployment", name=RELEASE, namespace=NS)
    later = "c" * 40
    proc = runner(*image_tag(timeout(revision(upgrade_args, later), "3s"), "broken"), **key)
    assert proc.returncode == 1
    # helm 4's own wording, classified
    assert "has been rolled back due to rollback-on-failure being set" in proc.stderr
    assert f"resource Deployment/{NS}/{RELEASE} not ready" in proc.stderr
    assert runner.termination(proc) == (
        f"{HUB}: helm upgrade to staging {later} failed: the hub was not ready within 3s; "
        f"the upgrade failed and helm rolled the release back to revision 1 (now revision 3, deployed)")
    assert (runner.result()["previous_revision"], runner.result()["revision"]) == (1, 3)
    (_, status, why), back = runner.history()[1:]
    assert status == "failed" and "context deadline exceeded" in why and back == (3, "deployed", "Rollback to 1")
    hub = cluster.get("deployments", NS, RELEASE)
    assert hub["spec"]["template"]["metadata"]["annotations"]["singleuser-image"] == plan.image("primary").ref
    assert hub["status"]["readyReplicas"] == 1


def test_a_hub_that_is_not_ready_because_its_pods_cannot_be_scheduled_is_a_platform_fault(runner, cluster, key,
                                                                                          upgrade_args):
    """Issue 17, scenario 5: helm's --wait timed out on a hub whose new pod no node has room for: capacity (exit 6,
    naming the pod and the scheduler's words), not the revision. A user's pending server is not what helm waited
    for, and a timeout with every pod scheduled stays the revision's (the test above)."""
    from sandbox.k8s_emulator import UNSCHEDULABLE

    assert runner(*upgrade_args, **key).returncode == 0
    cluster.never_ready(kind="Deployment", name=RELEASE, namespace=NS)
    cluster.script({"test.hubflow.io/pending": "yes"}, never_scheduled=True)
    for name in (f"{RELEASE}-7d4b9c6f5-x2x9z", "jupyter-alice"):
        r = requests.post(f"{cluster.url}/api/v1/namespaces/{NS}/pods", timeout=10, json={
            "metadata": {"name": name, "labels": {"test.hubflow.io/pending": "yes"}},
            "spec": {"containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.2.0"}]}})
        assert r.status_code == 201, r.text
    later = "d" * 40
    proc = runner(*image_tag(timeout(revision(upgrade_args, later), "3s"), "needs-a-bigger-node"), **key)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert runner.termination(proc) == (
        f"{HUB}: helm upgrade to staging {later} failed: the hub was not ready within 3s: the cluster could not "
        f"schedule pod {RELEASE}-7d4b9c6f5-x2x9z ({UNSCHEDULABLE}); the upgrade failed and helm rolled the release "
        f"back to revision 1 (now revision 3, deployed)")
    asked = {r.path.rsplit("/", 1)[1] for r in cluster.calls("GET", f"/api/v1/namespaces/{NS}/")
             if r.path.endswith(("/pods", "/events"))}
    assert asked == {"pods", "events"}
    role = next(d for d in yaml.safe_load_all((ROOT / "include" / "k8s" / "hub-namespace.yaml").read_text())
                if d["kind"] == "Role")  # hubflow-helm, the upgrade pod's rights in the hub's namespace
    assert all(any(res in rule["resources"] and "list" in rule["verbs"] for rule in role["rules"]) for res in asked)


def kill_helm_mid_upgrade(runner, cluster, workdir: Path) -> None:
    """A `helm upgrade` killed while it waits for the hub: the release stays in pending-upgrade, as helm left it."""
    cluster.never_ready(kind="Deployment", name=RELEASE, namespace=NS)
    helm = subprocess.Popen([tool("helm"), "upgrade", RELEASE, "hub", "--namespace", NS, "--set-string",
                             "jupyterhub.singleuser.image.tag=stuck", "--wait=watcher", "--timeout", "60s"],
                            cwd=workdir, env=runner.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (cluster.get("deployments", NS, RELEASE) or {}).get("metadata", {}).get("generation") != 2:
            assert time.monotonic() < deadline and helm.poll() is None, "helm did not start the upgrade"
            time.sleep(0.05)
    finally:
        helm.send_signal(signal.SIGKILL)
        helm.wait()
    record = cluster.get("secrets", NS, f"sh.helm.release.v1.{RELEASE}.v2")
    assert record["metadata"]["labels"]["status"] == "pending-upgrade"


def test_a_release_left_pending_by_a_killed_helm_is_a_platform_fault_recovered_only_when_asked(
        runner, cluster, key, upgrade_args, sample):
    assert runner(*upgrade_args, **key).returncode == 0
    kill_helm_mid_upgrade(runner, cluster, sample)
    proc = runner(*upgrade_args, **key)
    assert proc.returncode == 3
    line = runner.termination(proc)
    assert line.startswith(f"{HUB}: it is stuck in pending-upgrade (helm revision 2, since ")
    assert f"helm rollback {RELEASE} 1 --namespace {NS}" in line and "pods.recover_pending" in line
    assert "helm upgrade" not in proc.stdout and [r[:2] for r in runner.history()] == [(1, "deployed"),
                                                                                       (2, "pending-upgrade")]
    proc = runner(*upgrade_args, "--recover-pending", **key)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is stuck in pending-upgrade (helm revision 2" in proc.stdout
    # helm's rollback leaves the interrupted record as it was; what counts is the last one
    assert [r[:2] for r in runner.history()] == [(1, "superseded"), (2, "pending-upgrade"), (3, "superseded"),
                                                 (4, "deployed")]
    assert runner.history()[2][2] == "Rollback to 1"
    assert runner.result()["previous_revision"] == 3 and runner.result()["revision"] == 4


SECRETS = "deployments/datahub/secrets/staging.yaml"


def test_sops_files_without_their_key_fail_as_a_platform_fault_naming_the_file(runner, upgrade_args):
    proc = runner(*upgrade_args)  # no hubflow-sops key in the pod
    assert proc.returncode == 5
    assert runner.termination(proc) == (
        f"{HUB}: cannot decrypt {SECRETS}: it is encrypted for age and this pod has no age key (none of "
        f"SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY_CMD, SOPS_AGE_SSH_PRIVATE_KEY_FILE is set); "
        f"the release is not installed")
    assert "decrypting" not in proc.stdout and "helm upgrade" not in proc.stdout
    proc = runner(*upgrade_args, SOPS_AGE_KEY=OTHER_AGE_KEY)  # a key, but not one the file was encrypted for
    assert proc.returncode == 5
    assert runner.termination(proc) == (
        f"{HUB}: cannot decrypt {SECRETS}: sops could not retrieve its data key (no key in this pod opens it, or the "
        f"key service refused or cannot be reached); the release is not installed")
    assert "helm upgrade" not in proc.stdout


@pytest.fixture
def checkout(sample, tmp_path) -> Path:
    """A copy of the sample's checkout to break."""
    return Path(shutil.copytree(sample, tmp_path / "checkout", ignore=shutil.ignore_patterns(".git")))


def workdir(args: list[str], path: Path) -> list[str]:
    return [*args[:-1], str(path)]


@pytest.mark.parametrize("damage, code, event", [
    (lambda c: (c / SECRETS).write_text(re.sub(r"lastmodified: .*", 'lastmodified: "2020-01-01T00:00:00Z"',
                                               (c / SECRETS).read_text())),
     1, f"sops cannot decrypt {SECRETS}: the file is damaged (see the log)"),
    (lambda c: (c / "hub/templates/broken.yaml").write_text("{{ .Values.jupyterhub | nosuchfunction }}\n"),
     1, "helm upgrade to staging {head} failed: the chart does not render with these values"),
    (lambda c: (c / "hub/values.schema.json").write_text(json.dumps(
        {"properties": {"jupyterhub": {"properties": {"custom": {"properties": {"layer": {"type": "integer"}}}}}}})),
     1, "helm upgrade to staging {head} failed: the chart's schema rejected the values"),
])
def test_what_the_revision_broke_is_its_fault_and_never_quoted(runner, key, upgrade_args, checkout, plan, damage,
                                                               code, event):
    damage(checkout)
    proc = runner(*workdir(upgrade_args, checkout), **key)
    assert proc.returncode == code
    assert runner.termination(proc) == f"{HUB}: {event.format(head=plan.head)}; the release is not installed"


class ChartRepository:
    """A classic (index.yaml) chart repository on loopback serving the sample's dependency, or (`empty`) a web
    server that is no chart repository."""

    def __init__(self, root: Path, empty: bool = False):
        root.mkdir()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        if not empty:
            (root / "jupyterhub-4.1.0.tgz").write_bytes(dependency_chart())
            subprocess.run([tool("helm"), "repo", "index", str(root), "--url", self.url], check=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.parametrize("repository, code, event", [
    ("served", 0, None),
    ("closed", 4, "chart repository {url} cannot be reached (helm repo add)"),
    ("empty", 1, "{url} (a dependency of chart hub) is not a chart repository (helm repo add)"),
    ("oci-closed", 4, "a chart repository of chart hub cannot be reached (helm dependency build)"),
])
def test_an_unvendored_chart_is_fetched_in_the_pod_and_an_unreachable_repository_is_a_platform_fault(
        runner, cluster, key, upgrade_args, checkout, tmp_path, repository, code, event):
    url = {"served": lambda: ChartRepository(tmp_path / "repo").url,
           "empty": lambda: ChartRepository(tmp_path / "repo", empty=True).url,
           "closed": lambda: f"http://127.0.0.1:{free_port()}/",
           "oci-closed": lambda: f"oci://127.0.0.1:{free_port()}/charts"}[repository]()
    shutil.rmtree(checkout / "hub" / "charts")
    (checkout / "hub" / "Chart.lock").unlink()
    chart = checkout / "hub" / "Chart.yaml"
    chart.write_text(re.sub(r"repository: .*", f"repository: {url}", chart.read_text()))
    proc = runner(*workdir(upgrade_args, checkout), **key)
    assert "the dependencies of chart hub are not vendored: fetching them" in proc.stdout
    assert proc.returncode == code, proc.stdout + proc.stderr
    if code:
        assert runner.termination(proc) == f"{HUB}: {event.format(url=url)}; the release is not installed"
        assert "decrypting" not in proc.stdout
    else:
        assert cluster.get("configmaps", NS, f"{RELEASE}-singleuser") is not None  # the dependency rendered


def test_an_unreachable_cluster_is_a_platform_fault_with_an_unknown_release_state(runner, upgrade_args, tmp_path):
    port = free_port()
    kubeconfig = tmp_path / "closed"
    kubeconfig.write_text(Path(runner.env["KUBECONFIG"]).read_text().replace(
        re.search(r"http://127\.0\.0\.1:\d+", Path(runner.env["KUBECONFIG"]).read_text())[0],
        f"http://127.0.0.1:{port}"))
    proc = runner(*upgrade_args, KUBECONFIG=str(kubeconfig))
    assert proc.returncode == 4
    assert runner.termination(proc) == (
        f'{HUB}: cannot read the release history (kubernetes cluster unreachable: Get "http://127.0.0.1:{port}/'
        f'version": dial tcp 127.0.0.1:{port}: connect: connection refused); '
        f"the state of the release is unknown (its history cannot be read)")


def test_status_reports_history_and_the_git_revision_and_uninstall_removes_the_release(runner, cluster, key,
                                                                                       settings, upgrade_args, plan):
    from hubflow.k8s import pods

    env = settings.environment("staging")
    status = pods.helm_status_pod(settings, env, "datahub")["arguments"]
    assert runner(*status).returncode == 0 and runner.result()["exists"] is False
    assert runner(*upgrade_args, **key).returncode == 0
    proc = runner(*status)
    assert proc.returncode == 0, proc.stderr
    result = runner.result()
    assert (result["exists"], result["revision"], result["status"], result["hubflow_revision"], result["chart"]) == \
        (True, 1, "deployed", plan.head, "hub-0.1.0")
    assert [r["description"] for r in result["history"]] == [f"hubflow staging {plan.head}"]
    assert SECRET not in runner.xcom.read_text()

    proc = runner(*pods.helm_rollback_pod(settings, env, "datahub", 7)["arguments"])
    assert proc.returncode == 1
    assert runner.termination(proc) == f"{HUB}: helm rollback to revision 7 failed; the release is now at revision " \
                                       f"1 (deployed)"

    uninstall = pods.helm_uninstall_pod(settings, env, "datahub")["arguments"]
    proc = runner(*uninstall)
    assert proc.returncode == 0, proc.stderr
    assert runner.result() == {"release": RELEASE, "namespace": NS, "uninstalled": True}
    assert cluster.get("deployments", NS, RELEASE) is None and cluster.get("configmaps", NS, f"{RELEASE}-values") \
        is None
    proc = runner(*uninstall)  # already gone: counts as removed
    assert proc.returncode == 0 and "is not installed: nothing to uninstall" in proc.stdout
    assert not runner.termination_log.exists()


@pytest.fixture
def age_repo(tmp_path):
    """A checkout whose only values file is a given text (a chart without dependencies)."""
    repo = tmp_path / "repo"
    (repo / "hub").mkdir(parents=True)
    (repo / "hub" / "Chart.yaml").write_text("apiVersion: v2\nname: hub\nversion: 0.1.0\n")
    return ["upgrade", "--release", "r", "--namespace", "ns", "--chart", "hub", "--revision", "abc1234", "--env",
            "staging", "--timeout", "60s", "--values", "secrets.yaml", "--workdir", str(repo)]


def test_a_values_file_that_is_not_yaml_is_reported_by_line_only(runner, age_repo):
    workdir = Path(age_repo[-1])
    (workdir / "secrets.yaml").write_text("hub:\n  password: decrypted-value\n  - [\n")
    proc = runner(*age_repo)
    assert proc.returncode == 1
    assert runner.termination(proc) == "release r in namespace ns: values file secrets.yaml is not valid YAML " \
                                       "(line 3); the release is not installed"


def test_an_unexpected_error_exits_1_and_says_so(runner, age_repo):
    proc = runner(*age_repo[:-1], str(runner.tmp / "no-checkout"))
    assert proc.returncode == 1
    assert runner.termination(proc) == "release r in namespace ns: the runner failed unexpectedly " \
                                       "(FileNotFoundError, see the log)"
    assert "Traceback" in proc.stderr


def test_usage_errors_exit_2_with_a_message_even_when_the_message_file_cannot_be_written(runner):
    proc = runner("upgrade", "--release", "r")
    assert proc.returncode == 2
    assert runner.termination(proc).startswith("usage: the following arguments are required: --namespace")
    proc = runner("status", HUBFLOW_TERMINATION_LOG=str(runner.tmp / "missing" / "log"))
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[-1] == "hubflow-runner: usage: the following arguments are required: --release, " \
                                           "--namespace"


def test_the_runner_image_ships_the_helm_and_sops_the_tests_run():
    dockerfile = (RUNNER.parent / "Dockerfile").read_text()
    helm = subprocess.run([tool("helm"), "version", "--template", "{{ .Version }}"], capture_output=True, text=True)
    sops = subprocess.run([tool("sops"), "--disable-version-check", "--version"], capture_output=True, text=True)
    assert f"ARG HELM_VERSION={helm.stdout.strip().removeprefix('v')}\n" in dockerfile
    assert f"ARG SOPS_VERSION={sops.stdout.split()[1]}\n" in dockerfile


# ---------------------------------------------------------------- what no real tool produces on demand


FAKE_HELM = r'''#!PYTHON
"""Stand-in helm: records argv, keeps a release history in $FAKE_STATE and fails the commands listed there.

A failing command first appends its `then` revisions, then prints its `error`, where {values} stands for the text of
the values files (helm's and Kubernetes' errors can quote values; the runner must not repeat them)."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(["helm", *args]) + "\n")
state = json.load(open(os.environ["FAKE_STATE"]))
def save():
    json.dump(state, open(os.environ["FAKE_STATE"], "w"))
def add(status, description):
    for r in state["history"]:
        if r["status"] == "deployed":
            r["status"] = "superseded"
    state["history"].append({"revision": len(state["history"]) + 1, "updated": "2026-11-28T00:00:00Z",
                             "status": status, "chart": "hub-0.1.0", "app_version": "", "description": description})
fail = state["fail"].get(args[0])
if fail:
    for status, description in fail.get("then", []):
        add(status, description)
    save()
    values = " ".join(open(args[i + 1]).read() for i, a in enumerate(args) if a == "--values")
    print(fail["error"].replace("{values}", values), file=sys.stderr)
    sys.exit(1)
if args[0] == "history":
    if not state["history"]:
        print(f"Error: release: not found", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(state["history"]))
elif args[0] == "upgrade":
    add("deployed", args[args.index("--description") + 1])
    save()
    print("Release has been upgraded. Happy Helming!")
elif args[0] == "rollback":
    add("deployed", f"Rollback to {args[2]}")
    save()
    print("Rollback was a success! Happy Helming!")
elif args[0] == "uninstall":
    if not state["history"]:
        print(f"Error: uninstall: Release not loaded: {args[1]}: release: not found", file=sys.stderr)
        sys.exit(1)
    state["history"] = []
    save()
    print(f'release "{args[1]}" uninstalled')
'''

FAKE_SOPS = r'''#!PYTHON
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(["sops", *sys.argv[1:]]) + "\n")
out = sys.argv[sys.argv.index("--output") + 1]
open(out, "w").write("jupyterhub: {hub: {config: {GenericOAuthenticator: {client_secret: decrypted-value}}}}\n")
'''


class FakeRunner(Runner):
    """The runner with stand-in `helm` and `sops` first on PATH: they record their argv, keep a release history in
    a file, and fail as told."""

    def __init__(self, tmp: Path):
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name, text in (("helm", FAKE_HELM), ("sops", FAKE_SOPS)):
            (bin_dir / name).write_text(text.replace("PYTHON", sys.executable, 1))
            (bin_dir / name).chmod(0o755)
        super().__init__(tmp, tmp / "no-kubeconfig", path=str(bin_dir))
        self.log, self.state = tmp / "calls.jsonl", tmp / "state.json"
        self.env.update(FAKE_LOG=str(self.log), FAKE_STATE=str(self.state), SOPS_AGE_KEY="stand-in")

    def set_history(self, history, fail=None):
        """`fail`: {helm command: {"error": stderr text, "then": [[status, description], ...]}}."""
        self.state.write_text(json.dumps({"history": history, "fail": fail or {}}))

    def calls(self):
        return [c[1:] for c in map(json.loads, self.log.read_text().splitlines()) if c[0] == "helm"]


def rev(n, status="deployed", description="hubflow staging abc"):
    return {"revision": n, "updated": "2026-11-27T00:00:00Z", "status": status, "chart": "hub-0.1.0",
            "app_version": "", "description": description}


@pytest.fixture
def fake(tmp_path):
    return FakeRunner(tmp_path)


@pytest.mark.parametrize("error, then, why, state", [
    ('Error: UPGRADE FAILED: Secret "hub" is invalid: data[x]: Invalid value: "{values}"', [["failed", "x"]],
     "Kubernetes rejected an object of the chart", "the release is now at revision 2 (failed)"),
    # helm 4's failed rollback-on-failure (its rollback timed out too): a rollback that did not happen is never claimed
    ("Error: UPGRADE FAILED: an error occurred while rolling back the release. original upgrade error: resource "
     "Deployment/ns/hub not ready. status: InProgress, message: Available: 0/1\ncontext deadline exceeded: release "
     "hub failed: {values}\ncontext deadline exceeded", [["failed", "x"], ["failed", "Rollback to 1"]],
     "the hub was not ready within 900s", "the release is now at revision 3 (failed)"),
])
def test_a_failed_upgrade_says_truthfully_what_helm_left_and_never_quotes_values(fake, upgrade_args, plan, error,
                                                                                 then, why, state):
    fake.set_history([rev(1)], fail={"upgrade": {"error": error, "then": then}})
    proc = fake(*upgrade_args)
    assert proc.returncode == 1
    assert fake.termination(proc) == f"{HUB}: helm upgrade to staging {plan.head} failed: {why}; {state}"
    assert "decrypted-value" in proc.stderr  # helm's own error reaches the pod log as it is, not the message


UNREACHABLE = 'Get "https://10.0.0.1:443/version": dial tcp 10.0.0.1:443: connect: connection refused'


def test_losing_the_cluster_during_the_upgrade_is_a_platform_fault(fake, upgrade_args, plan):
    fake.set_history([rev(1)], fail={"upgrade": {"error": f"Error: UPGRADE FAILED: kubernetes cluster unreachable: "
                                                          f"{UNREACHABLE}", "then": [["pending-upgrade", "x"]]}})
    proc = fake(*upgrade_args)
    assert proc.returncode == 4
    assert fake.termination(proc) == (f"{HUB}: the Kubernetes API cannot be reached (helm upgrade to staging "
                                      f"{plan.head}); the release is now at revision 2 (pending-upgrade)")


def test_a_failed_uninstall_says_where_the_release_is(fake, settings):
    from hubflow.k8s import pods

    fake.set_history([rev(1)], fail={"uninstall": {"error": f"Error: uninstall: {UNREACHABLE}",
                                                    "then": [["uninstalling", "Deletion in progress"]]}})
    proc = fake(*pods.helm_uninstall_pod(settings, settings.environment("staging"), "datahub")["arguments"])
    assert proc.returncode == 4
    assert fake.termination(proc) == f"{HUB}: helm uninstall failed; the release is now at revision 2 (uninstalling)"
    assert ["uninstall", RELEASE, "--namespace", NS, "--wait=watcher", "--timeout", "900s"] in fake.calls()


class StandInAPI:
    """A Kubernetes API that answers only a namespace's pods and its events by reason, recording what it is asked
    and with which token: what the runner reads when helm's wait timed out."""

    def __init__(self, tmp: Path, pods: list[dict], events: list[dict]):
        self.asked: list[tuple[str, str]] = []
        api = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                api.asked.append((self.path, self.headers.get("Authorization", "")))
                url = urllib.parse.urlsplit(self.path)
                selector = dict(p.split("=", 1) for p in
                                urllib.parse.parse_qs(url.query).get("fieldSelector", [""])[0].split(",") if p)
                if url.path == f"/api/v1/namespaces/{NS}/pods":
                    body = {"kind": "PodList", "items": pods}
                elif url.path == f"/api/v1/namespaces/{NS}/events":
                    body = {"kind": "EventList", "items": [e for e in events if e["reason"] == selector.get("reason")
                                                           and selector.get("involvedObject.kind") == "Pod"]}
                else:
                    return self.send_error(404)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = tmp / "stand-in-kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{self.server.server_port}"}}],
            "users": [{"name": "u", "user": {"token": "deployer-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": NS}}]}))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def event(pod: str, reason: str, seconds_ago: float, message: str = "", new_style: bool = False) -> dict:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))
    stamps = {"eventTime": when.replace("Z", ".000000Z"), "lastTimestamp": None} if new_style else \
        {"lastTimestamp": when}
    return {"metadata": {"name": f"{pod}.{reason}"}, "involvedObject": {"kind": "Pod", "name": pod},
            "reason": reason, "message": message, **stamps}


NOT_READY = ("Error: UPGRADE FAILED: resource Deployment/datahub-staging/hub not ready. status: InProgress, message: "
             "Available: 0/1\ncontext deadline exceeded")


def test_pods_that_failed_scheduling_during_the_wait_are_found_from_events_after_helm_removed_them(fake,
                                                                                                    upgrade_args,
                                                                                                    plan):
    """helm's rollback-on-failure deleted the pending pod before the runner looks: its FailedScheduling events
    (newer schedulers set only eventTime) still say why. A pod scheduled after failing, a user's server, and a
    FailedScheduling older than the upgrade are not why this wait timed out."""
    insufficient = "0/5 nodes are available: 5 Insufficient memory. preemption: 0/5 nodes are available."
    api = StandInAPI(fake.tmp, pods=[], events=[
        event("hub-5f7d8c9b4-abcde", "FailedScheduling", 30, insufficient, new_style=True),
        event("hub-5f7d8c9b4-later", "FailedScheduling", 40, insufficient),
        event("hub-5f7d8c9b4-later", "Scheduled", 20, "Successfully assigned datahub-staging/hub-5f7d8c9b4-later"),
        event("jupyter-alice", "FailedScheduling", 10, insufficient),
        event("hub-0ld0ld0ld-zzzzz", "FailedScheduling", 7200, insufficient)])
    try:
        fake.set_history([rev(1)], fail={"upgrade": {"error": NOT_READY,
                                                     "then": [["failed", "x"], ["deployed", "Rollback to 1"]]}})
        proc = fake(*upgrade_args, KUBECONFIG=str(api.kubeconfig))
    finally:
        api.stop()
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert fake.termination(proc) == (
        f"{HUB}: helm upgrade to staging {plan.head} failed: the hub was not ready within 900s: the cluster could "
        f"not schedule pod hub-5f7d8c9b4-abcde ({insufficient}); the upgrade failed and helm rolled the release "
        f"back to revision 1 (now revision 3, deployed)")
    assert {token for _, token in api.asked} == {"Bearer deployer-token"}  # as the pod's own identity
    assert len(api.asked) == 3


def test_a_timeout_the_cluster_cannot_explain_stays_the_revisions_fault(fake, upgrade_args, plan):
    """Every pod was scheduled (or the API cannot be asked): the hub itself never became ready."""
    api = StandInAPI(fake.tmp, pods=[{"metadata": {"name": "hub-5f7d8c9b4-abcde"},
                                      "status": {"phase": "Running", "conditions": [
                                          {"type": "PodScheduled", "status": "True"}]}}],
                     events=[event("hub-5f7d8c9b4-abcde", "Scheduled", 30, "Successfully assigned")])
    try:
        fake.set_history([rev(1)], fail={"upgrade": {"error": NOT_READY,
                                                     "then": [["failed", "x"], ["deployed", "Rollback to 1"]]}})
        proc = fake(*upgrade_args, KUBECONFIG=str(api.kubeconfig))
    finally:
        api.stop()
    assert proc.returncode == 1
    assert fake.termination(proc).endswith("failed: the hub was not ready within 900s; the upgrade failed and helm "
                                           "rolled the release back to revision 1 (now revision 3, deployed)")
    fake.set_history([rev(1)], fail={"upgrade": {"error": NOT_READY, "then": [["failed", "x"]]}})
    proc = fake(*upgrade_args)  # no API at all (its kubeconfig does not exist)
    assert proc.returncode == 1 and "could not ask the cluster why the pods were not ready" in proc.stdout
