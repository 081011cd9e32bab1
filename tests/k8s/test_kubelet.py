"""The emulator's local kubelet (sandbox/kubelet.py): hubflow's own pods, built by hubflow.k8s.pods, run as local
processes with real git, the real runner, real helm and sops, against the Kubernetes and GitHub emulators."""
from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from sandbox.sample_repo import SECRET_VALUE, TEST_AGE_KEY


@pytest.fixture(scope="module")
def github(sample):
    """The sample's origin over git's smart HTTP: a clone needs the token."""
    from sandbox.github_emulator import GitHubEmulator

    with GitHubEmulator(sample.parent / "origin.git") as gh:
        yield gh


@pytest.fixture
def world(settings, github):
    """The settings with the repository cloned from the GitHub emulator."""
    return settings.model_copy(update={"repository": settings.repository.model_copy(
        update={"clone_url": github.clone_url})})


@pytest.fixture
def start(emulator):
    """`start(pod_body)`: the pod runs on a local kubelet of the emulator (deleted after the test)."""
    from sandbox.kubelet import LocalKubelet

    kubelet, started = LocalKubelet(emulator), []

    def start(body):
        started.append(kubelet.start(body))
        return started[-1]

    yield start
    for pod in started:
        pod.kill()


def create_secret(emulator, namespace: str, body: dict) -> None:
    """Through the API, as an operator creates it."""
    r = requests.post(f"{emulator.url}/api/v1/namespaces/{namespace}/secrets", json=body, timeout=10)
    assert r.status_code == 201, r.text


def secret(name: str, **data: str) -> dict:
    return {"metadata": {"name": name}, "stringData": data}


def pod_of(settings, kind, part, name):
    from hubflow.k8s import pods

    body = pods.compose(pods.base_pod(settings, settings.environment("staging"), kind), part)
    body["metadata"]["name"] = name  # the operator adds a random suffix
    body["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"  # as the operator sets it
    return body


def upgrade_pod(settings, plan, hub="datahub"):
    from hubflow.k8s import pods

    return pod_of(settings, "upgrade", pods.helm_upgrade_pod(settings, settings.environment("staging"), plan, hub),
                  f"upgrade-{hub}")


def test_a_status_pod_reads_the_release_with_real_helm_and_writes_the_real_xcom(start, emulator, settings):
    from hubflow.k8s import pods
    from sandbox.k8s_emulator import helm_release_secret

    for version, status in ((1, "superseded"), (2, "deployed")):
        create_secret(emulator, "datahub-staging", helm_release_secret(
            "datahub-staging", "datahub-staging", version, status, {}, description=f"hubflow staging rev{version}"))
    pod = start(pod_of(settings, "status", pods.helm_status_pod(settings, settings.environment("staging"),
                                                                        "datahub"), "status-datahub"))
    assert pod.wait(60) == 0
    assert pod.started_at <= pod.finished_at
    assert pod.logs() == "hubflow-runner: release datahub-staging: deployed at helm revision 2\n"
    result = json.loads(pod.xcom())
    assert (result["revision"], result["status"], result["hubflow_revision"]) == (2, "deployed", "rev2")
    assert [r["status"] for r in result["history"]] == ["superseded", "deployed"]
    assert pod.termination_message() is None  # it succeeded and wrote none
    # helm found the release records through the kubeconfig the kubelet wrote for the pod
    assert emulator.calls("GET", "/api/v1/namespaces/datahub-staging/secrets")


def test_a_failing_runner_reports_its_termination_message_and_exit_code(start, emulator, settings):
    """A rollback of a release that does not exist: helm fails, the runner says so in one line."""
    from hubflow.k8s import pods

    pod = start(pod_of(settings, "rollback", pods.helm_rollback_pod(settings, settings.environment(
        "staging"), "data8", 3), "rollback-data8"))
    assert pod.wait(60) == 1
    message = pod.termination_message()
    assert message.startswith("release data8-staging in namespace data8-staging: helm rollback to revision 3 "
                              "failed; the release is not installed")
    assert pod.logs().rstrip().endswith(message.rstrip())  # also the last log line
    assert json.loads(pod.xcom())["rolled_back_to"] == 3


def test_the_clone_init_container_checks_out_the_revision_with_the_token_from_its_secret(
        start, emulator, world, plan, github):
    """The init container's git runs for real against the GitHub emulator, which refuses a clone without the
    token; the token comes from the hubflow-git Secret and never reaches a log."""
    from sandbox.github_emulator import TOKEN

    create_secret(emulator, "hubflow", secret("hubflow-git", token=TOKEN))
    pod = start(upgrade_pod(world, plan))
    deadline = time.time() + 60
    while pod.containers["clone"].exit_code is None and time.time() < deadline:
        time.sleep(0.05)
    assert pod.containers["clone"].exit_code == 0, pod.logs("clone")
    assert pod.logs("clone") == f"checked out {plan.head}\n"
    checkout = pod.root / "volumes" / "workspace" / "repo"
    assert (checkout / "hubflow-fleet.yaml").is_file()
    assert subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() == plan.head
    assert any(r.headers.get("authorization") for r in github.requests if "/info/refs" in r.path)
    pod.kill()
    pod.wait(30)
    assert TOKEN not in pod.logs("clone") + pod.logs()


def test_a_clone_refused_for_want_of_the_token_fails_the_init_container_and_runs_nothing_more(
        start, emulator, world, plan):
    pod = start(upgrade_pod(world, plan))  # no hubflow-git Secret: the optional token is missing
    assert pod.wait(60) not in (0, None)
    assert pod.failed_init == "clone"
    assert pod.containers["clone"].exit_code == pod.exit_code
    assert pod.exit_code == 128 and "fatal: could not read Username" in pod.logs("clone")
    assert pod.containers["base"].started_at is None and pod.logs() == ""


def test_an_image_hubflow_does_not_know_never_starts(start, settings):
    from hubflow.k8s import pods

    body = pod_of(settings, "status", pods.helm_status_pod(settings, settings.environment("staging"), "data8"),
                  "status-data8")
    body["spec"]["containers"][0]["image"] = "docker.io/library/busybox:1.37"
    pod = start(body)
    assert pod.wait(10) is None
    assert pod.waiting["reason"] == "ErrImagePull"
    assert 'image "docker.io/library/busybox:1.37" cannot run here' in pod.waiting["message"]
    assert pod.started_at is None and pod.finished_at is None


def test_a_known_image_runs_only_its_own_command_and_the_log_tail_becomes_the_message(start, settings, tmp_path):
    """Never a shell: the runner image asked for `sh -c` exits 127; with no message written, the kubelet takes the
    log's tail (FallbackToLogsOnError)."""
    from hubflow.k8s import pods

    body = pod_of(settings, "status", pods.helm_status_pod(settings, settings.environment("staging"), "data8"),
                  "status-data8")
    marker = tmp_path / "ran"
    body["spec"]["containers"][0]["command"] = ["sh", "-c", f"touch {marker}"]
    pod = start(body)
    assert pod.wait(10) == 127
    assert pod.termination_message() == pod.logs() == (
        "local kubelet: ghcr.io/hubflow/runner:0.1.0 runs only hubflow-runner here, not 'sh'\n")
    assert not marker.exists()


def test_a_missing_secret_that_is_not_optional_keeps_the_pod_waiting(start, world, plan):
    body = upgrade_pod(world, plan)
    body["spec"]["initContainers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["optional"] = False
    pod = start(body)
    assert pod.wait(10) is None
    assert pod.waiting == {"reason": "CreateContainerConfigError", "message": 'secret "hubflow-git" not found'}


def test_kill_stops_the_process_group_and_removes_the_pods_files(start, settings, plan):
    """A clone from a server that never answers: the pod is deleted, git goes, and so do the pod's files."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        repository = settings.repository.model_copy(
            update={"clone_url": f"http://127.0.0.1:{silent.getsockname()[1]}/datahub.git"})
        pod = start(upgrade_pod(settings.model_copy(update={"repository": repository}), plan))
        deadline = time.time() + 30
        while pod._proc is None or "fetch" not in pod._proc.args:
            assert time.time() < deadline, "git never fetched"
            time.sleep(0.05)
        git = pod._proc
        pod.kill()
        assert pod.wait(10) == 128 + 15  # SIGTERM, as the runtime reports it
    assert pod.failed_init == "clone" and git.returncode == -15
    while alive_in_group(git.pid):  # git's helper (git-remote-http) got the signal too
        assert time.time() < deadline, "a process of the pod survived"
        time.sleep(0.05)
    assert not pod.root.exists()
    assert pod.containers["base"].started_at is None


def alive_in_group(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def test_an_upgrade_pod_decrypts_with_an_age_key_mounted_from_a_secret(start, emulator, world, plan):
    """The key as a file (a Secret volume, its path in the environment): the mount and the path are mapped."""
    from sandbox.github_emulator import TOKEN

    body = upgrade_pod(world, plan)
    body["spec"]["volumes"].append({"name": "age", "secret": {"secretName": "hubflow-age",
                                                              "items": [{"key": "key", "path": "keys.txt"}]}})
    runner = body["spec"]["containers"][0]
    runner["volumeMounts"].append({"name": "age", "mountPath": "/etc/age", "readOnly": True})
    runner["env"].append({"name": "SOPS_AGE_KEY_FILE", "value": "/etc/age/keys.txt"})
    for s in (secret("hubflow-git", token=TOKEN), secret("hubflow-age", key=TEST_AGE_KEY)):
        create_secret(emulator, "hubflow", s)
    pod = start(body)
    assert pod.wait(120) == 0, pod.logs("clone") + pod.logs()
    assert json.loads(pod.xcom()) == {"release": "datahub-staging", "namespace": "datahub-staging",
                                      "previous_revision": None, "revision": 1, "status": "deployed",
                                      "hubflow_revision": plan.head}
    assert "release datahub-staging: helm revision after the upgrade: 1 (deployed)" in pod.logs()
    auth = emulator.secret_data("datahub-staging", "datahub-staging-auth")
    assert auth["client_secret"].decode() == SECRET_VALUE.format(env="staging")  # decrypted, it reached helm


@pytest.mark.airflow
@pytest.mark.slow
def test_the_real_pod_operator_runs_an_upgrade_on_the_local_kubelet_and_reads_its_xcom(emulator, world, plan,
                                                                                     capfd):
    """The emulator hands upgrade pods to its local kubelet: the unmodified KubernetesPodOperator (as
    HubflowPodOperator) creates the pod, follows its log and reads the XCom the runner wrote."""
    from hubflow.k8s import pods
    from sandbox.github_emulator import TOKEN
    from tests import airflow_support
    from tests.k8s.conftest import DAGS

    emulator.run_locally({"hubflow.io/kind": "upgrade"})
    for s in (secret("hubflow-git", token=TOKEN), secret("hubflow-sops", SOPS_AGE_KEY=TEST_AGE_KEY)):
        create_secret(emulator, "hubflow", s)
    upgrade = pods.helm_upgrade_pod(world, world.environment("staging"), plan, "data8")
    dag_run = airflow_support.run_dag(DAGS, "k8s_upgrade_sync", conf={"pods": [upgrade]})
    log = capfd.readouterr().out
    assert airflow_support.task_instances(dag_run)[("pod", 0)].state == "success"
    assert "[base] hubflow-runner: decrypting deployments/data8/secrets/staging.yaml" in log  # the pod's log
    assert airflow_support.xcom(dag_run, "pod", 0) == {
        "release": "data8-staging", "namespace": "data8-staging", "previous_revision": None, "revision": 1,
        "status": "deployed", "hubflow_revision": plan.head}
    (release,) = [s for (kind, ns, name), s in emulator.objects.items()
                  if kind == "secrets" and ns == "data8-staging" and name.startswith("sh.helm.release.v1.")]
    assert release["metadata"]["labels"]["status"] == "deployed"
    value = SECRET_VALUE.format(env="staging")
    assert emulator.secret_data("data8-staging", "data8-staging-auth")["client_secret"].decode() == value
    assert value not in log and not emulator.leaks(value)  # decrypted, it reached helm and nothing else
