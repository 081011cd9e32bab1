"""The Kubernetes API emulator itself, through the official Python client (what the operator uses underneath)."""
from __future__ import annotations

import base64
import json
import re
import time

import pytest
import requests
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from sandbox import kube_protobuf
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
    def names(sel):
        return sorted(p.metadata.name for p in v1.list_namespaced_pod("ns", label_selector=sel).items)

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
    def sidecar():
        return v1.read_namespaced_pod("p", "ns").status.container_statuses[1].state

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


# ------------------------------------------------------------ what real helm needs of an API server


@pytest.fixture
def apps(api, tmp_path):
    emu, _ = api
    return client.AppsV1Api(config.new_client_from_config(str(emu.write_kubeconfig(tmp_path / "apps"))))


def deployment(name, labels=None, replicas=1):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}


def test_version_discovery_and_openapi(api):
    emu, v1 = api
    assert client.VersionApi(v1.api_client).get_code().git_version == "v1.35.0"
    core = {r["name"]: r for r in requests.get(f"{emu.url}/api/v1", timeout=5).json()["resources"]}
    assert core["secrets"]["kind"] == "Secret" and core["secrets"]["namespaced"] and "watch" in core["secrets"]["verbs"]
    groups = {g["name"] for g in requests.get(f"{emu.url}/apis", timeout=5).json()["groups"]}
    assert groups == {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "policy"}
    kinds = [r["kind"] for r in requests.get(f"{emu.url}/apis/apps/v1", timeout=5).json()["resources"]]
    assert kinds == ["Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"]
    paths = requests.get(f"{emu.url}/openapi/v3", timeout=5).json()["paths"]
    assert requests.get(emu.url + paths["apis/policy/v1"]["serverRelativeURL"], timeout=5).json()["openapi"]
    v2 = requests.get(f"{emu.url}/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2"
                                                                  ".v1.0+protobuf"}, timeout=5)
    assert v2.headers["Content-Type"] == "application/octet-stream"
    fields = dict(kube_protobuf.fields(v2.content))
    assert fields[1] == b"2.0" and dict(kube_protobuf.fields(fields[2])) == {1: b"Kubernetes", 2: b"v1.35.0"}


def test_a_protobuf_secret_is_stored_and_read_back_as_json(api):
    emu, v1 = api
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
              "metadata": {"name": "sh.helm.release.v1.r.v1", "labels": {"owner": "helm", "name": "r"}},
              "data": {"release": base64.b64encode(b"\x00gzipped\xff").decode()}}
    assert kube_protobuf.decode_secret(kube_protobuf.encode_secret(secret)) == secret
    r = requests.post(f"{emu.url}/api/v1/namespaces/ns/secrets", data=kube_protobuf.encode_secret(secret),
                      headers={"Content-Type": kube_protobuf.CONTENT_TYPE}, timeout=5)
    assert r.status_code == 201
    read = v1.list_namespaced_secret("ns", label_selector="owner=helm,name=r").items
    assert [(s.metadata.name, s.type, s.data) for s in read] == [(secret["metadata"]["name"], secret["type"],
                                                                   secret["data"])]
    assert emu.secret_data("ns", "sh.helm.release.v1.r.v1") == {"release": b"\x00gzipped\xff"}
    assert emu.secret_data("ns", "missing") is None
    other = requests.post(f"{emu.url}/api/v1/namespaces/ns/configmaps", data=b"k8s\x00\x0a\x00",
                          headers={"Content-Type": kube_protobuf.CONTENT_TYPE}, timeout=5)
    assert other.status_code == 415
    with pytest.raises(kube_protobuf.ProtobufError):
        kube_protobuf.decode_secret(b"{}")


def test_objects_get_what_a_server_adds_and_honour_selectors(api, apps):
    emu, _ = api
    made = apps.create_namespaced_deployment("ns", deployment("hub", {"tier": "hub"}))
    assert made.metadata.uid and made.metadata.creation_timestamp and made.metadata.generation == 1
    assert (made.status.ready_replicas, made.status.observed_generation) == (1, 1)
    apps.create_namespaced_deployment("ns", deployment("proxy", {"tier": "proxy"}))
    apps.create_namespaced_deployment("other", deployment("hub", {"tier": "hub"}))
    names = lambda **kw: sorted(d.metadata.name for d in apps.list_namespaced_deployment("ns", **kw).items)  # noqa: E731
    assert names(label_selector="tier=hub") == ["hub"] and names(field_selector="metadata.name=proxy") == ["proxy"]
    assert len(apps.list_deployment_for_all_namespaces(label_selector="tier=hub").items) == 2
    labelled = apps.patch_namespaced_deployment("hub", "ns", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1 and int(labelled.metadata.resource_version) > \
        int(made.metadata.resource_version)
    scaled = apps.patch_namespaced_deployment("hub", "ns", {"spec": {"replicas": 3}})
    assert (scaled.metadata.generation, scaled.status.ready_replicas, scaled.metadata.labels["x"]) == (2, 3, "y")
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("hub", "ns", made)  # made's resourceVersion is stale
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment("ns", deployment("hub"))
    assert err.value.status == 409
    apps.delete_namespaced_deployment("hub", "ns")
    assert emu.get("deployments", "ns", "hub") is None and emu.get("deployments", "other", "hub") is not None


def test_server_side_apply_and_merge_patches(api):
    emu, _ = api
    url = f"{emu.url}/api/v1/namespaces/ns/configmaps/c"
    applied = requests.patch(f"{url}?fieldManager=helm&fieldValidation=Strict", timeout=5,
                             headers={"Content-Type": "application/apply-patch+yaml"},
                             data="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1', b: '2'}\n")
    assert applied.status_code == 201 and applied.json()["metadata"]["managedFields"][0]["manager"] == "helm"
    again = requests.patch(f"{url}?fieldManager=helm", headers={"Content-Type": "application/apply-patch+yaml"},
                           data="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '3'}\n", timeout=5)
    assert again.status_code == 200 and again.json()["data"] == {"a": "3"}  # what helm no longer applies goes
    assert again.json()["metadata"]["uid"] == applied.json()["metadata"]["uid"]
    merged = requests.patch(url, headers={"Content-Type": "application/merge-patch+json"}, timeout=5,
                            json={"data": {"a": None, "b": "4"}})
    assert merged.json()["data"] == {"b": "4"}
    refused = requests.patch(url, headers={"Content-Type": "application/json-patch+json"}, timeout=5,
                             json=[{"op": "remove", "path": "/data/b"}])
    assert refused.status_code == 415 and emu.get("configmaps", "ns", "c")["data"] == {"b": "4"}


def test_watches_send_changes_after_a_resource_version_or_the_initial_state_then_a_bookmark(api):
    from kubernetes import watch

    emu, v1 = api
    v1.create_namespaced_config_map("ns", {"metadata": {"name": "a"}})
    since = v1.list_namespaced_config_map("ns").metadata.resource_version
    v1.create_namespaced_config_map("ns", {"metadata": {"name": "b"}, "data": {"k": "v"}})
    v1.create_namespaced_config_map("elsewhere", {"metadata": {"name": "c"}})
    v1.delete_namespaced_config_map("a", "ns")
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        v1.list_namespaced_config_map, "ns", resource_version=since, timeout_seconds=1)]
    assert events == [("ADDED", "b"), ("DELETED", "a")]
    r = requests.get(f"{emu.url}/api/v1/namespaces/ns/configmaps?watch=true&sendInitialEvents=true"
                     f"&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1", timeout=5)
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in lines] == [("ADDED", "b"), ("BOOKMARK", None)]
    assert lines[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_workloads_are_ready_unless_scripted_never_to_be(api, apps):
    emu, v1 = api
    apps.create_namespaced_deployment("ns", deployment("hub"))
    emu.never_ready(kind="Deployment", name="hub")
    assert apps.read_namespaced_deployment("hub", "ns").status.ready_replicas == 1  # the version already written
    broken = apps.patch_namespaced_deployment("hub", "ns", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "i:broken"}]}}}}).status
    assert (broken.ready_replicas, broken.available_replicas, broken.updated_replicas) == (0, 0, 1)
    assert {c.type: c.status for c in broken.conditions} == {"Available": "False", "Progressing": "True"}
    fixed = apps.patch_namespaced_deployment("hub", "ns", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "i:1"}]}}}}).status
    assert fixed.ready_replicas == 1
    emu.never_ready(kind="PersistentVolumeClaim", name="home", namespace="ns")
    for ns in ("ns", "other"):
        v1.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "home"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert [v1.read_namespaced_persistent_volume_claim("home", ns).status.phase for ns in ("ns", "other")] == \
        ["Pending", "Bound"]
    sts = client.AppsV1Api(v1.api_client).create_namespaced_stateful_set("ns", {
        "metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db",
                                             "selector": {"matchLabels": {"a": "b"}},
                                             "template": deployment("db")["spec"]["template"]}}).status
    assert (sts.ready_replicas, sts.current_revision == sts.update_revision) == (2, True)
    job = client.BatchV1Api(v1.api_client).create_namespaced_job("ns", {
        "metadata": {"name": "j"}, "spec": {"template": deployment("j")["spec"]["template"]}}).status
    assert (job.succeeded, job.conditions[0].type) == (1, "Complete")


def test_leaks_finds_a_string_sent_anywhere_but_to_a_secret(api):
    emu, v1 = api
    v1.create_namespaced_secret("ns", {"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}})
    assert emu.leaks("hunter2") == []
    body = pod("p", {})
    body["spec"]["containers"][0]["args"] = ["--password", "hunter2"]
    v1.create_namespaced_pod("ns", body)
    assert [(r.method, r.path) for r in emu.leaks("hunter2")] == [("POST", "/api/v1/namespaces/ns/pods")]


# ------------------------------------------------------------ pods run by the local kubelet


class FakeHandle:
    """What sandbox.kubelet hands back, played by the test."""

    def __init__(self, body):
        self.body = body
        self.started_at = self.finished_at = self.exit_code = None
        self.waiting = self.failed_init = None
        self.output, self.message, self.result, self.killed = "", None, None, False
        self.init_output = {}

    def logs(self, container=None):
        return self.init_output.get(container, self.output)

    def termination_message(self, container=None):
        return self.message if container in (None, "base") else None

    def xcom(self):
        return self.result

    def kill(self):
        self.killed = True


class FakeKubelet:
    def __init__(self):
        self.handles = []

    def start(self, body):
        self.handles.append(FakeHandle(body))
        return self.handles[-1]


def test_a_locally_run_pod_takes_its_status_logs_and_xcom_from_the_kubelet(api):
    emu, v1 = api
    kubelet = FakeKubelet()
    emu.run_locally({"run": "local"}, kubelet=kubelet)
    emu.script({}, xcom={"scripted": True})
    v1.create_namespaced_pod("ns", pod("p", {"run": "local", "hub": "a"}, sidecar=True))
    v1.create_namespaced_pod("ns", pod("q", {"hub": "b"}))
    (handle,) = kubelet.handles
    assert handle.body["metadata"]["name"] == "p" and handle.body["metadata"]["namespace"] == "ns"
    state = lambda: v1.read_namespaced_pod("p", "ns").status  # noqa: E731
    assert state().phase == "Pending" and state().container_statuses[0].state.waiting.reason == "ContainerCreating"
    handle.started_at, handle.output = time.time(), "first line\nsecond "
    assert state().phase == "Running"
    logs = requests.get(f"{emu.url}/api/v1/namespaces/ns/pods/p/log?container=base&follow=True", stream=True,
                        timeout=5)
    lines = logs.iter_lines()
    assert next(lines) == b"first line"  # streamed while the pod runs
    handle.output += "half\nno newline at the end"
    handle.finished_at, handle.exit_code, handle.message = time.time(), 3, "release a: failed"
    assert list(lines) == [b"second half", b"no newline at the end"]
    done = state()
    assert done.phase == "Failed"
    assert (done.container_statuses[0].state.terminated.exit_code, done.container_statuses[0].state.terminated.message,
            done.container_statuses[0].state.terminated.reason) == (3, "release a: failed", "Error")
    handle.result = '{"revision": 2}'
    ws = stream(v1.connect_get_namespaced_pod_exec, "p", "ns", container="airflow-xcom-sidecar",
                command=["/bin/sh", "-c", "cat /airflow/xcom/return.json"], stdout=True, stderr=True, stdin=False,
                tty=False, _preload_content=False)
    ws.run_forever(timeout=5)
    assert json.loads(ws.read_stdout()) == {"revision": 2}
    v1.delete_namespaced_pod("p", "ns")
    assert handle.killed
    assert v1.read_namespaced_pod("q", "ns").status.phase == "Succeeded"  # scripted as before


def test_a_pod_the_local_kubelet_cannot_start_waits_saying_why(api):
    emu, v1 = api
    kubelet = FakeKubelet()
    emu.run_locally({}, kubelet=kubelet)
    v1.create_namespaced_pod("ns", pod("p", {}))
    kubelet.handles[0].waiting = {"reason": "CreateContainerConfigError", "message": 'secret "sops-age" not found'}
    waiting = v1.read_namespaced_pod("p", "ns").status.container_statuses[0].state.waiting
    assert (waiting.reason, waiting.message) == ("CreateContainerConfigError", 'secret "sops-age" not found')
    emu.reset()
    assert kubelet.handles[0].killed


def test_a_failed_init_container_of_a_locally_run_pod_fails_the_pod_before_its_containers_start(api):
    emu, v1 = api
    kubelet = FakeKubelet()
    emu.run_locally({}, kubelet=kubelet)
    body = pod("p", {}, sidecar=True, policy="FallbackToLogsOnError")
    body["spec"]["initContainers"] = [{"name": "clone", "image": "git", "terminationMessagePolicy":
                                       "FallbackToLogsOnError"}, {"name": "later", "image": "git"}]
    v1.create_namespaced_pod("ns", body)
    (handle,) = kubelet.handles
    handle.init_output["clone"] = "cloning\nfatal: repository not found\n"
    handle.started_at = handle.finished_at = time.time()
    handle.exit_code, handle.failed_init = 128, "clone"
    status = v1.read_namespaced_pod("p", "ns").status
    assert status.phase == "Failed"
    clone, later = status.init_container_statuses
    assert (clone.state.terminated.exit_code, clone.state.terminated.message) == (
        128, "cloning\nfatal: repository not found\n")  # the kubelet's fallback to the log tail
    assert later.state.waiting.reason == "PodInitializing"
    assert [c.state.waiting.reason for c in status.container_statuses] == ["PodInitializing"] * 2
    assert v1.read_namespaced_pod_log("p", "ns", container="clone", _preload_content=False).data == \
        b"cloning\nfatal: repository not found\n"
