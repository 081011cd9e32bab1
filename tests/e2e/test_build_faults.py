"""Issue 17, scenario 5: blame is earned for builds.

A failed build is built again once before anyone is blamed (its tag is its content, so a second build is safe); a
build that lost the network or its node is the platform's (nothing held or reverted, status `error` naming the
cause, the next trigger builds again), and only a Dockerfile that fails in its own words on both tries holds and
reverts the revision. Each scenario is a real deploy run (dag.test over the sandbox) with the build pods scripted
in the Kubernetes emulator, and asserts what people see: the build task's tries and pods, its `fault` XCom, the
run's state, the commit status, the ledger, holds and reverts, Slack, PR comments and the closing line.
"""
from __future__ import annotations

from tests import airflow_support as af
from tests.e2e.conftest import states
from tests.e2e.test_deploy import MISSING, bad_merge, revert_pulls, statuses
from tests.e2e.test_faults import assert_platform_fault, attempt_of, closing_line

BUILD = {"hubflow.io/kind": "build"}
PIP_OFFLINE = [  # BuildKit's log of a pip step without DNS; its last lines blame a package, wrongly
    "#7 [3/3] RUN pip install -r requirements.txt",
    "#7 3.2 WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
    "broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f3c>: Failed to "
    "establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/pandas/",
    "#7 8.9 ERROR: Could not find a version that satisfies the requirement pandas==2.2.3 (from versions: none)",
    "#7 8.9 ERROR: No matching distribution found for pandas==2.2.3",
    'error: failed to solve: process "/bin/sh -c pip install -r requirements.txt" did not complete successfully: '
    "exit code: 1"]
PIP_BAD = [
    "#7 [3/3] RUN pip install -r requirements.txt",
    f"#7 4.1 ERROR: Could not find a version that satisfies the requirement {MISSING} (from versions: none)",
    f"#7 4.1 ERROR: No matching distribution found for {MISSING}",
    'error: failed to solve: process "/bin/sh -c pip install -r requirements.txt" did not complete successfully: '
    "exit code: 1"]
LOW_MEMORY = ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi. Container base was "
              "using 3820Mi, request is 1Gi, has larger consumption of memory.")


def image_merge(box) -> str:
    """A good PR that changes an image and no package (its Dockerfile installs what it copies): one build, then
    every hub using the image, verified with the packages it always had."""
    pr = box.github.merge_feature("Install the requirements", {"images/datascience/Dockerfile": (
        "FROM quay.io/jupyter/scipy-notebook:2025-01-06\nCOPY requirements.txt /tmp/\n"
        "RUN pip install --no-cache-dir -r /tmp/requirements.txt\n")})
    box.pr_number = pr["number"]
    return pr["merge_commit_sha"]


def stopped_by_the_node(monkeypatch, selector: dict[str, str], *, reason: str | None, message: str,
                        disruption: str) -> None:
    """Failed pods matching `selector` carry what the kubelet or the scheduler writes when it stops a pod: the pod's
    own reason and message (an eviction) and a DisruptionTarget condition; their container shows only exit 137 or
    143 with reason Error. (The emulator plays a pod's containers; its node's verdict is added here.)"""
    from sandbox import k8s_emulator

    real = k8s_emulator._Pod.view

    def view(self):
        pod = real(self)
        status = pod["status"]
        if status.get("phase") == "Failed" and all(self.labels.get(k) == v for k, v in selector.items()):
            if reason:
                status.update(reason=reason, message=message)
            status["conditions"] = [*status.get("conditions", []), {"type": "DisruptionTarget", "status": "True",
                                                                    "reason": disruption, "message": message}]
        return pod
    monkeypatch.setattr(k8s_emulator._Pod, "view", view)


def assert_built_twice(box, run) -> dict:
    """The build task failed on its first try, was retried once (a second pod), and its fault says so."""
    assert states(run)["build[0]"] == "failed"
    assert af.task_instances(run)[("build", 0)].try_number == 2
    builds = box.pods("build")
    assert len(builds) == 2 and len({p["metadata"]["name"] for p in builds}) == 2
    assert [p["metadata"]["labels"]["try_number"] for p in builds] == ["1", "2"]
    assert box.pods("upgrade") == [] and box.pods("rollback") == []  # nothing deployed, nothing to put back
    fault = af.xcom(run, "build", 0, key="fault")
    assert fault["summary"].endswith("(after 2 tries)") and not fault["retry"], fault
    return fault


def test_a_build_that_lost_the_network_is_built_again_then_is_a_platform_fault(sandbox):
    """pip without DNS (conda's CONNECTION FAILED, apt's timeouts and the rest: tests/unit/test_outcomes.py)."""
    cause = "temporary failure in name resolution"
    sandbox.baseline()
    base = sandbox.ledger().last_success("staging").revision
    sandbox.k8s.script(BUILD, exit_code=1, logs=PIP_OFFLINE)
    revision = image_merge(sandbox)
    run = sandbox.run("staging")
    fault = assert_built_twice(sandbox, run)
    assert fault["blame"] == "platform" and f"the build failed on the network ({cause})" in fault["summary"]
    assert_platform_fault(sandbox, run, revision, cause)  # nothing held or reverted, status error naming it, Slack
    assert statuses(sandbox, revision) == [("hubflow/staging", "error")]
    line = closing_line(sandbox)
    assert f"staging: {revision[:12]} hit a PLATFORM FAULT at build: platform fault: image datascience: the build " \
           f"failed on the network ({cause})" in line
    assert "(after 2 tries)" in line and f"{revision[:12]} is not held" in line
    assert f"staging runs {base[:12]} again" in line, line


def test_a_build_whose_network_comes_back_on_the_retry_costs_no_run(sandbox):
    sandbox.baseline()
    sandbox.k8s.script({**BUILD, "try_number": "1"}, exit_code=1, logs=PIP_OFFLINE)
    revision = image_merge(sandbox)
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert af.task_instances(run)[("build", 0)].try_number == 2 and len(sandbox.pods("build")) == 2
    assert statuses(sandbox, revision) == [("hubflow/staging", "success")]
    assert sandbox.ledger().holds() == [] and revert_pulls(sandbox) == []
    assert "building it again (try 1 of 2)" in sandbox.log  # the first try's line says why it is tried again


def test_an_evicted_build_pod_is_built_again_then_is_a_platform_fault(sandbox, monkeypatch):
    """The kubelet evicted it (preemption and the other ways a node stops a pod: tests/k8s/test_operator.py and
    tests/unit/test_outcomes.py). Its container says only exit 137 (reason Error), which hubflow used to read as
    the build running out of memory, the revision's fault; the node's words are the pod's own."""
    words = "the build pod was evicted by its node: the node was low on resource: memory"
    sandbox.baseline()
    stopped_by_the_node(monkeypatch, BUILD, reason="Evicted", message=LOW_MEMORY, disruption="TerminationByKubelet")
    sandbox.k8s.script(BUILD, exit_code=137, logs=["#7 [3/3] RUN pip install -r requirements.txt",
                                                    "#7 12.0 Collecting scikit-learn==1.5.2"])
    revision = image_merge(sandbox)
    run = sandbox.run("staging")
    fault = assert_built_twice(sandbox, run)
    assert fault["blame"] == "platform" and words in fault["summary"].lower(), fault
    assert_platform_fault(sandbox, run, revision, words.split(": ")[0])
    line = closing_line(sandbox)
    assert "hit a PLATFORM FAULT at build" in line and words in line.lower() and "is not held" in line
    assert "out of memory" not in line  # the container's exit code does not speak for the node


def test_a_dockerfile_that_really_fails_on_both_tries_holds_and_reverts_the_revision(sandbox):
    sandbox.baseline()
    sandbox.k8s.script(BUILD, exit_code=1, logs=PIP_BAD)
    pr = bad_merge(sandbox)
    revision = pr["merge_commit_sha"]
    run = sandbox.run("staging")
    assert run.state == "failed"
    fault = assert_built_twice(sandbox, run)
    assert fault["blame"] == "revision"
    assert fault["summary"].startswith("the image build failed: error: failed to solve")
    held = sandbox.ledger().held(revision)
    assert held.startswith("the build failed: image datascience: the image build failed: error: failed to solve")
    assert held.endswith("(after 2 tries)")
    (revert,) = revert_pulls(sandbox)
    assert revert["merged"]
    assert statuses(sandbox, revision) == [("hubflow/staging", "failure")]
    attempt = attempt_of(sandbox)
    assert (attempt.revision, attempt.outcome) == (revision, "failed") and attempt.finished_at
    line = closing_line(sandbox)
    assert f"staging: {revision[:12]} FAILED at build: the build failed: image datascience" in line
    assert f"{revision[:12]} is held" in line and "(after 2 tries)" in line
    (comment,) = sandbox.github.comments[pr["number"]]
    assert "failed on staging** at the build step" in comment["body"]
