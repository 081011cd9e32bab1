"""The Kubernetes API emulator itself, through the official Python client (what the operator uses underneath)."""
from __future__ import annotations

import json
import re
import time

import pytest
import requests
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from sandbox.k8s_emulator import K8sEmulator, Outcome, label_selector_matches


@pytest.fixture
def api(tmp_path):
    emu = K8sEmulator().start()
    api_client = config.new_client_from_config(str(emu.write_kubeconfig(tmp_path / "kubeconfig")))
    yield emu, client.CoreV1Api(api_client)
    emu.stop()


def pod(name, labels, sidecar=False, policy=None):
    containers = [{"name": "base", "image": "runner", **({"terminationMessagePolicy": policy} if policy else {})}]
    if sidecar:
        containers.append({"name": "airflow-xcom-sidecar", "image": "alpine"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": containers}}


def test_a_created_pod_has_a_status_at_once_and_follows_its_script(api):
    emu, v1 = api
    emu.script({"hub": "a"}, run_seconds=0.3, exit_code=2)
    created = v1.create_namespaced_pod("ns", pod("p1", {"hub": "a"}))
    assert created.status.phase == "Running"
    time.sleep(0.4)
    done = v1.read_namespaced_pod("p1", "ns")
    assert done.status.phase == "Failed"
    assert done.status.container_statuses[0].state.terminated.exit_code == 2


def test_start_delay_never_scheduled_and_killed(api):
    emu, v1 = api
    emu.script({"case": "late"}, start_delay=0.3)
    emu.script({"case": "never"}, never_scheduled=True)
    emu.script({"case": "killed"}, killed=True)
    for case in ("late", "never", "killed"):
        v1.create_namespaced_pod("ns", pod(case, {"case": case}))
    assert v1.read_namespaced_pod("late", "ns").status.phase == "Pending"
    never = v1.read_namespaced_pod("never", "ns")
    assert never.status.conditions[0].reason == "Unschedulable"
    events = v1.list_namespaced_event("ns", field_selector="involvedObject.name=never").items
    assert [e.reason for e in events] == ["FailedScheduling"]
    killed = v1.read_namespaced_pod("killed", "ns").status.container_statuses[0].state.terminated
    assert (killed.exit_code, killed.reason) == (137, "OOMKilled")
    time.sleep(0.35)
    assert v1.read_namespaced_pod("late", "ns").status.phase == "Succeeded"


def test_label_selectors_are_honoured(api):
    emu, v1 = api
    v1.create_namespaced_pod("ns", pod("a", {"dag_id": "d", "try_number": "1"}))
    v1.create_namespaced_pod("ns", pod("b", {"dag_id": "d", "try_number": "2", "already_checked": "True"}))
    v1.create_namespaced_pod("other", pod("c", {"dag_id": "d"}))
    names = lambda sel: sorted(p.metadata.name for p in v1.list_namespaced_pod("ns", label_selector=sel).items)
    assert names("dag_id=d") == ["a", "b"]
    assert names("dag_id=d,already_checked!=True") == ["a"]
    assert names("try_number==2") == ["b"]
    assert names("!already_checked") == ["a"]
    assert names("already_checked") == ["b"]
    assert label_selector_matches("", {"x": "y"})


def test_logs_have_timestamps_and_follow_ends_when_the_container_ends(api):
    emu, v1 = api
    emu.script({}, logs=["one", "two"], run_seconds=0.5)
    v1.create_namespaced_pod("ns", pod("p", {}))
    started = time.time()
    text = v1.read_namespaced_pod_log("p", "ns", container="base", follow=True, timestamps=True,
                                      _preload_content=False).data.decode()
    assert time.time() - started >= 0.4
    lines = text.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", line.split(" ", 1)[0]) for line in lines)


def test_xcom_through_exec_websocket_then_the_sidecar_stops(api):
    emu, v1 = api
    emu.script({}, xcom={"revision": 7})
    v1.create_namespaced_pod("ns", pod("p", {}, sidecar=True))
    ws = stream(v1.connect_get_namespaced_pod_exec, "p", "ns", container="airflow-xcom-sidecar",
                command=["/bin/sh", "-c", "cat /airflow/xcom/return.json"], stdout=True, stderr=True, stdin=False,
                tty=False, _preload_content=False)
    ws.run_forever(timeout=5)
    assert json.loads(ws.read_stdout()) == {"revision": 7}
    assert ws.returncode == 0
    sidecar = lambda: v1.read_namespaced_pod("p", "ns").status.container_statuses[1].state
    assert sidecar().running is not None
    ws = stream(v1.connect_get_namespaced_pod_exec, "p", "ns", container="airflow-xcom-sidecar", command=["/bin/sh"],
                stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    ws.write_stdin("kill -2 1\n")
    ws.run_forever(timeout=5)
    assert sidecar().terminated is not None


def test_patch_delete_and_recorded_requests(api):
    emu, v1 = api
    v1.create_namespaced_pod("ns", pod("p", {"a": "1"}))
    v1.patch_namespaced_pod("p", "ns", {"metadata": {"labels": {"already_checked": "True"}}})
    assert v1.read_namespaced_pod("p", "ns").metadata.labels == {"a": "1", "already_checked": "True"}
    v1.delete_namespaced_pod("p", "ns")
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("p", "ns")
    assert err.value.status == 404
    assert [(r.method, r.path) for r in emu.requests][:2] == [("POST", "/api/v1/namespaces/ns/pods"),
                                                              ("PATCH", "/api/v1/namespaces/ns/pods/p")]
    assert emu.created[0]["metadata"]["name"] == "p"


def test_unknown_requests_get_a_404_that_names_them(api):
    emu, _ = api
    r = requests.get(f"{emu.url}/apis/batch/v1/namespaces/ns/cronjobs?limit=5", timeout=5)
    assert r.status_code == 404
    assert r.json()["message"] == "emulator: no route for GET /apis/batch/v1/namespaces/ns/cronjobs?limit=5"
    assert emu.requests[-1].path == "/apis/batch/v1/namespaces/ns/cronjobs"


def terminated(v1, name):
    return v1.read_namespaced_pod(name, "ns").status.container_statuses[0].state.terminated


def test_the_termination_message_is_what_the_container_wrote_else_its_log_tail_on_error(api):
    emu, v1 = api
    emu.script({"case": "wrote"}, exit_code=4, message="release r: the cluster cannot be reached")
    emu.script({"case": "short"}, exit_code=1, logs=["one", "two"])
    emu.script({"case": "long"}, exit_code=1, logs=[f"line {i:03d} " + "x" * 40 for i in range(100)])
    emu.script({"case": "ok"}, exit_code=0, logs=["fine"])
    for case, policy in (("wrote", "FallbackToLogsOnError"), ("short", "FallbackToLogsOnError"),
                         ("long", "FallbackToLogsOnError"), ("ok", "FallbackToLogsOnError"), ("file", "File")):
        emu.script({"case": "file"}, exit_code=1, logs=["not a message"])
        v1.create_namespaced_pod("ns", pod(case, {"case": case}, policy=policy))
    assert terminated(v1, "wrote").message == "release r: the cluster cannot be reached"
    assert terminated(v1, "short").message == "one\ntwo\n"
    long = terminated(v1, "long").message
    # the kubelet keeps the last 80 lines, and of those the last 2048 bytes
    assert len(long.encode()) == 2048 and long.endswith("line 099 " + "x" * 40 + "\n") and "line 019" not in long
    assert terminated(v1, "ok").message is None
    assert terminated(v1, "file").message is None


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_an_image_that_cannot_be_pulled_keeps_the_pod_pending_and_says_why(api, reason):
    from airflow.providers.cncf.kubernetes.utils.pod_manager import detect_pod_terminate_early_issues

    emu, v1 = api
    emu.script({}, image_pull_error=reason)
    body = pod("p", {}, sidecar=True)
    body["spec"]["containers"][0]["image"] = "registry.example.org/hubflow/runner:nope"
    v1.create_namespaced_pod("ns", body)
    time.sleep(0.1)
    read = v1.read_namespaced_pod("p", "ns")
    assert read.status.phase == "Pending"
    base, sidecar = (s.state.waiting for s in read.status.container_statuses)
    assert base.reason == reason and '"registry.example.org/hubflow/runner:nope"' in base.message
    assert sidecar.reason == "ContainerCreating"
    events = v1.list_namespaced_event("ns", field_selector="involvedObject.name=p").items
    failed = [e for e in events if e.type == "Warning" and e.reason == "Failed"]
    assert failed[0].message.startswith('Failed to pull image "registry.example.org/hubflow/runner:nope": ')
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("p", "ns", container="base")
    assert err.value.status == 400 and "image can't be pulled" in err.value.body
    # the operator fails fast on it (a missing image is no transient registry outage)
    assert detect_pod_terminate_early_issues(read).startswith(f"Image cannot be pulled, unable to start: {reason}")


def test_an_unknown_image_pull_reason_is_refused():
    with pytest.raises(ValueError, match="image_pull_error"):
        Outcome(image_pull_error="Nope")
