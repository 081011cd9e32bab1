"""The real KubernetesPodOperator (as HubflowPodOperator) against the API emulator, inside dag.test.

Each module-scoped run maps several pods with different scripted outcomes, so one dag.test covers many behaviours;
every pod's per-pod kwargs travel through XCom exactly as in the lifecycle.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from tests import airflow_support
from tests.k8s.conftest import DAGS

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

HOSTILE_HUB = "{{ 7 * 7 }}; rm -rf / $(id) `id` | tee x"
HOSTILE_REV = "{{7*7}};$(id)&&`id`|{%raw%}"
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def run(kind, pods, deferrable=False):
    mode = {False: "sync", True: "deferrable", "plain": "plain", "group": "group"}[deferrable]
    return airflow_support.run_dag(DAGS, f"k8s_{kind}_{mode}", conf={"pods": pods})


def created(emulator, labels):
    return [p for p in emulator.created if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())]


@pytest.fixture(scope="module")
def status_run(_emulator, settings):
    """Sync status pods: a success with XCom, a failure, and a hostile hub name."""
    from hubflow.k8s import pods

    _emulator.reset()
    env = settings.environment("staging")
    _emulator.script({"hubflow.io/hub": "datahub"}, logs=["release datahub-staging: deployed at helm revision 4"],
                     xcom={"release": "datahub-staging", "revision": 4, "status": "deployed"})
    _emulator.script({"hubflow.io/hub": "data8"}, exit_code=1,
                     logs=["checking release data8-staging", "Error: cannot reach the cluster: i/o timeout"])
    _emulator.script({"hubflow.io/kind": "status", "hubflow.io/hub": pods.label_value(HOSTILE_HUB)},
                     xcom={"ok": True})
    hubs = ["datahub", "data8", HOSTILE_HUB]
    dag_run = run("status", [pods.helm_status_pod(settings, env, h) for h in hubs])
    return dag_run, airflow_support.task_instances(dag_run), list(_emulator.created), list(_emulator.requests)


def test_a_succeeding_pod_returns_its_xcom(status_run):
    dag_run, tis, _, _ = status_run
    assert tis[("pod", 0)].state == "success"
    assert airflow_support.xcom(dag_run, "pod", 0) == {"release": "datahub-staging", "revision": 4,
                                                       "status": "deployed"}
    assert tis[("pod", 0)].rendered_map_index == "datahub"  # the UI names mapped pods after their hub


def test_a_failing_pod_fails_its_task_and_is_kept_for_debugging(status_run):
    dag_run, tis, pods_created, requests = status_run
    assert tis[("pod", 1)].state == "failed"
    assert dag_run.state == "failed"
    failed = next(p["metadata"]["name"] for p in pods_created if p["metadata"]["labels"]["hubflow.io/hub"] == "data8")
    succeeded = next(p["metadata"]["name"] for p in pods_created
                     if p["metadata"]["labels"]["hubflow.io/hub"] == "datahub")
    deleted = {r.path.rsplit("/", 1)[1] for r in requests if r.method == "DELETE"}
    assert succeeded in deleted and failed not in deleted


def test_a_pod_that_never_schedules_fails_within_the_startup_timeout_saying_why(emulator, settings, capfd):
    from hubflow.k8s import pods

    emulator.script({}, never_scheduled=True)
    dag_run = run("status", [pods.helm_status_pod(settings, settings.environment("staging"), "biology")])
    out = capfd.readouterr().out
    ti = airflow_support.task_instances(dag_run)[("pod", 0)]
    assert ti.state == "failed"
    # pod_startup_seconds is 3 in the test settings; allow for Airflow's own start-up on a busy machine
    assert (ti.end_date - ti.start_date).total_seconds() < settings.timeouts.pod_startup_seconds + 20
    assert "Pod took too long to be scheduled on the cluster, giving up. More than 3s" in out
    assert "FailedScheduling - 0/3 nodes are available: 3 Insufficient cpu." in out


def test_pods_carry_the_service_account_resources_and_sanitised_labels(status_run, settings):
    _, _, pods_created, _ = status_run
    assert len(pods_created) == 3
    for pod in pods_created:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "deployer-staging"
        assert pod["metadata"]["namespace"] == settings.pods.namespace
        base = next(c for c in spec["containers"] if c["name"] == "base")
        assert base["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                     "limits": {"cpu": "2", "memory": "2Gi"}}
        assert spec["activeDeadlineSeconds"] == 600
        for value in pod["metadata"]["labels"].values():
            assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), value


def test_user_strings_reach_the_pod_verbatim_and_are_never_rendered_as_templates(status_run):
    """Airflow 3.3 renders values that come through expand_kwargs: HubflowPodOperator must render none of them."""
    _, tis, pods_created, _ = status_run
    assert tis[("pod", 2)].state == "success"
    pod = next(p for p in pods_created if "{{ 7 * 7 }}" in " ".join(p["spec"]["containers"][0]["args"]))
    args = pod["spec"]["containers"][0]["args"]
    assert args[:3] == ["status", "--release", f"{HOSTILE_HUB}-staging"]
    assert args[4] == f"{HOSTILE_HUB}-staging"
    assert "49" not in " ".join(args)
    assert pod["spec"]["containers"][0]["command"] == ["hubflow-runner"]  # argv, no shell


def test_in_a_mapped_task_group_each_instance_gets_its_own_pod_verbatim(emulator, settings):
    """The deploy DAG's per-hub pipeline: the pod is the mapped task group's argument, which Airflow resolves only
    at run time; each instance must create its own hub's pod, unrendered, and return its XCom."""
    from hubflow.k8s import pods

    env = settings.environment("staging")
    emulator.script({"hubflow.io/kind": "status"}, xcom={"ok": True})
    emulator.script({"hubflow.io/hub": "data8"}, xcom={"ok": "data8"})
    dag_run = run("status", [pods.helm_status_pod(settings, env, h) for h in ("data8", HOSTILE_HUB)],
                  deferrable="group")
    assert dag_run.state == "success"
    tis = airflow_support.task_instances(dag_run)
    assert airflow_support.xcom(dag_run, "one.pod", 0) == {"ok": "data8"}
    assert [tis[("one.pod", i)].rendered_map_index for i in (0, 1)] == ["data8", pods.label_value(HOSTILE_HUB)]
    args = {p["metadata"]["labels"]["hubflow.io/hub"]: p["spec"]["containers"][0]["args"] for p in emulator.created}
    assert args["data8"][2] == "data8-staging"
    assert args[pods.label_value(HOSTILE_HUB)][2] == f"{HOSTILE_HUB}-staging"  # verbatim: no 49


def test_the_plain_operator_would_render_expanded_values_which_is_why_hubflow_turns_templating_off(emulator,
                                                                                                 settings):
    """The finding behind HubflowPodOperator: with expand_kwargs from XCom, Airflow 3.3 renders every value."""
    from hubflow.k8s import pods

    dag_run = run("status", [pods.helm_status_pod(settings, settings.environment("staging"), HOSTILE_HUB)],
                  deferrable="plain")
    assert dag_run.state == "success"
    (pod,) = emulator.created
    assert pod["spec"]["containers"][0]["args"][2].startswith("49; rm -rf /")


def test_upgrade_pod_with_hostile_revision_deferrable_returns_helm_revisions(emulator, settings, plan, capfd):
    """Deferrable mode: the trigger waits, the task resumes, logs and XCom come back; the revision is not rendered."""
    from hubflow.k8s import pods

    env = settings.environment("staging")
    hostile = dataclasses.replace(plan, head=HOSTILE_REV)
    emulator.script({"hubflow.io/kind": "upgrade"}, run_seconds=0.5,
                    logs=["hubflow-runner: release datahub-staging: helm revision before the upgrade: 6",
                          "hubflow-runner: release datahub-staging: helm revision after the upgrade: 7 (deployed)"],
                    xcom={"release": "datahub-staging", "previous_revision": 6, "revision": 7, "status": "deployed"})
    dag_run = run("upgrade", [pods.helm_upgrade_pod(settings, env, hostile, "datahub")], deferrable=True)
    out = capfd.readouterr().out
    assert dag_run.state == "success", out[-3000:]
    assert airflow_support.xcom(dag_run, "pod", 0)["previous_revision"] == 6
    assert "helm revision after the upgrade: 7 (deployed)" in out
    (pod,) = emulator.created
    clone = pod["spec"]["initContainers"][0]
    assert clone["command"][-2] == HOSTILE_REV
    assert pod["spec"]["containers"][0]["args"][pod["spec"]["containers"][0]["args"].index("--revision") + 1] \
        == HOSTILE_REV
    assert "49" not in str(pod["spec"])
    assert pod["metadata"]["labels"]["hubflow.io/revision"] == pods.label_value(HOSTILE_REV)


def test_failure_surfaces_the_pods_last_log_lines_deferrable(emulator, settings, capfd):
    from hubflow.k8s import pods

    env = settings.environment("staging")
    emulator.script({"hubflow.io/kind": "rollback"}, exit_code=1, run_seconds=0.3,
                    logs=["hubflow-runner: helm rollback datahub-staging 6", "Error: release has no 6 version"])
    dag_run = run("rollback", [pods.helm_rollback_pod(settings, env, "datahub", 6)], deferrable=True)
    out = capfd.readouterr().out
    assert dag_run.state == "failed"
    assert "Error: release has no 6 version" in out
    assert not emulator.calls("DELETE")  # kept for debugging


LOW_MEMORY = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi."


@pytest.mark.parametrize("mode, exit_code, node, summary", [
    (False, 137, {"reason": "Evicted", "message": LOW_MEMORY, "disruption": "TerminationByKubelet"},
     f"the build pod was evicted by its node: {LOW_MEMORY}"),
    (True, 143, {"disruption": "PreemptionByScheduler", "message": "Preempted by pod 3f1c on node pool-b-7x2k"},
     "the build pod was preempted by the scheduler for a higher-priority pod: Preempted by pod 3f1c on node "
     "pool-b-7x2k"),
], ids=["evicted-sync", "preempted-deferrable"])
def test_a_build_pod_its_node_stopped_keeps_the_pods_own_reason_and_is_the_platforms_fault(
        emulator, settings, plan, monkeypatch, mode, exit_code, node, summary):
    """Issue 17, scenario 5: the kubelet's eviction (the pod's reason and message) and the scheduler's preemption
    (a DisruptionTarget condition) are read from the pod, not overwritten by the container's exit 137/143 (which
    hubflow used to read as a build out of memory, the revision's fault). The test DAG gives the task no retry:
    the verdict stands at once."""
    from hubflow.k8s import pods
    from sandbox import k8s_emulator

    real = k8s_emulator._Pod.view

    def stopped_by_its_node(self):
        pod = real(self)
        if pod["status"].get("phase") == "Failed":
            if node.get("reason"):
                pod["status"].update(reason=node["reason"], message=node["message"])
            pod["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                                "reason": node["disruption"], "message": node["message"]})
        return pod
    monkeypatch.setattr(k8s_emulator._Pod, "view", stopped_by_its_node)
    emulator.script({"hubflow.io/kind": "build"}, exit_code=exit_code, logs=["#7 12.0 Collecting pandas==2.2.3"])
    build = pods.deploy_pods(settings, settings.environment("staging"), plan)["build"][0]
    dag_run = run("build", [build], deferrable=mode)
    assert airflow_support.task_instances(dag_run)[("pod", 0)].state == "failed"
    assert airflow_support.xcom(dag_run, "pod", 0, key="fault") == {"blame": "platform", "summary": summary,
                                                                   "retry": False}
    assert len(created(emulator, {"hubflow.io/kind": "build"})) == 1


def permissions(requests):
    """(resource, verb) pairs that the recorded API requests need, as the API server's authorizer names them."""
    out = set()
    for r in requests:
        m = re.fullmatch(r"/api/v1/namespaces/[^/]+/(pods|events)(/[^/]+)?(/log|/exec)?", r.path)
        assert m, r.path
        resource = m[1] + (m[3] or "")
        watch = r.query.get("watch", ["false"])[-1].lower() == "true"
        verb = {"POST": "create", "PATCH": "patch", "DELETE": "delete"}.get(r.method) or (
            "watch" if watch else "get" if m[2] else "list")
        out.add((resource, verb))
    return out


def launcher_role():
    from pathlib import Path

    import yaml

    docs = yaml.safe_load_all((Path(__file__).parents[2] / "include" / "k8s" / "hubflow-namespace.yaml").read_text())
    role = next(d for d in docs if d["kind"] == "Role")
    return {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}


def test_the_launcher_role_allows_every_request_the_operator_made(status_run, emulator, settings):
    """include/k8s/hubflow-namespace.yaml against what the operator really asked for, sync and deferrable."""
    from hubflow.k8s import pods

    _, _, _, sync_requests = status_run
    emulator.script({"hubflow.io/kind": "status"}, start_delay=0.5, xcom={})
    run("status", [pods.helm_status_pod(settings, settings.environment("staging"), "datahub")], deferrable=True)
    needed = permissions(sync_requests) | permissions(emulator.requests)
    assert {("pods", "create"), ("pods/log", "get"), ("pods/exec", "get")} <= needed
    assert needed <= launcher_role(), needed - launcher_role()


def test_the_operator_creates_exactly_the_pod_that_render_shows(settings, plan):
    """`hubflow render` composes pods without Airflow; the operator must build the same Pod from the same parts,
    adding only its own labels (dag, task, run), a name suffix, and the XCom sidecar of pods that return a result."""
    from kubernetes.client import ApiClient

    from hubflow.airflow.operators import HubflowPodOperator, pod_operator_kwargs
    from hubflow.k8s import pods

    env = settings.environment("staging")
    per_kind = pods.deploy_pods(settings, env, plan)
    for kind, pod in (("build", per_kind["build"][0]), ("upgrade", per_kind["upgrade"][0]),
                      ("rollback", pods.helm_rollback_pod(settings, env, "datahub", 3))):
        kwargs = {**pod_operator_kwargs(settings, env, kind), "kubernetes_conn_id": None}
        built = ApiClient().sanitize_for_serialization(
            HubflowPodOperator(task_id=kind, **kwargs, pod=pod).build_pod_request_obj(dry_run=True))
        expected = pods.compose(pods.base_pod(settings, env, kind), pod)
        assert built["metadata"]["name"].startswith(expected["metadata"]["name"] + "-")
        assert expected["metadata"]["labels"].items() <= built["metadata"]["labels"].items()
        base = built["spec"]["containers"][0]
        assert base["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the runner's last line reaches us
        base.pop("terminationMessagePolicy")
        base["volumeMounts"] = [m for m in base.get("volumeMounts") or [] if m["name"] != "xcom"]  # the sidecar's
        assert {k: v for k, v in base.items() if v != []} == expected["spec"]["containers"][0]  # the provider adds []
        sidecars = built["spec"]["containers"][1:]
        assert [c["name"] for c in sidecars] == ([] if kind == "build" else ["airflow-xcom-sidecar"])
        for key in ("serviceAccountName", "automountServiceAccountToken", "activeDeadlineSeconds", "initContainers",
                    "securityContext", "restartPolicy"):
            got = built["spec"].get(key)
            assert (None if got == [] else got) == expected["spec"].get(key), key  # [] and absent alike
        assert [v for v in built["spec"].get("volumes") or [] if v["name"] != "xcom"] == \
            (expected["spec"].get("volumes") or [])
