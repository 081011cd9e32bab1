"""The core's decisions after the pods, without Airflow: who is to blame for a pod, what the hubs' results add up
to, what to undo, what the failure path does, and the closing line of every final outcome. Stated in the domain's
words: each hub's result (its wave, what its upgrade did, the helm revisions, its fault, its verification)."""
import dataclasses

import pytest

from hubflow.core.deploy import (
    Paths,
    Planned,
    PodFacts,
    Target,
    aftermath,
    conclude,
    final,
    pod_fault,
    revert_note,
    to_undo,
)
from hubflow.core.outcomes import (
    Aftermath,
    Blame,
    BuildResult,
    Conclusion,
    Ended,
    Fault,
    HubResult,
    Outcome,
    Release,
    Step,
    Undo,
)

REV, BASE = "a" * 40, "b" * 40
TARGET = Target("staging", REV, BASE, "t")


@pytest.mark.parametrize("kind, facts, blame, words", [
    ("upgrade", PodFacts(exit_code=1, message="release x: upgrade failed; helm rolled it back"), "revision",
     "helm failed: release x"),
    ("upgrade", PodFacts(exit_code=3, message="release x is stuck in pending-upgrade"), "platform", "pending-upgrade"),
    ("upgrade", PodFacts(exit_code=4), "platform", "chart repository unreachable"),
    ("upgrade", PodFacts(exit_code=5, message="sops could not decrypt a/secrets.yaml"), "platform", "a/secrets.yaml"),
    ("upgrade", PodFacts(unschedulable="0/3 nodes are available: 3 Insufficient cpu."), "platform",
     "never scheduled: 0/3 nodes"),
    ("upgrade", PodFacts(waiting_reason="ImagePullBackOff", waiting_message="Back-off pulling ghcr.io/x"),
     "platform", "image could not be pulled"),
    ("upgrade", PodFacts(waiting_reason="CreateContainerConfigError", waiting_message='secret "hubflow-sops" not '
                                                                                      'found'), "platform", "Secrets"),
    ("upgrade", PodFacts(init_failed="clone", exit_code=None, message="fatal: could not read from remote"),
     "platform", "could not check out"),
    ("upgrade", PodFacts(reason="DeadlineExceeded"), "platform", "ran out of time"),
    ("upgrade", PodFacts(exit_code=137, reason="OOMKilled"), "platform", "killed"),
    ("upgrade", PodFacts(exists=False, error="pods is forbidden: User cannot create"), "platform", "forbidden"),
    ("upgrade", PodFacts(running=True, error="connection reset"), "platform", "had not finished"),
    ("build", PodFacts(exit_code=1, message="ERROR: failed to solve: pip install exited 1"), "revision",
     "image build failed"),
    ("build", PodFacts(exit_code=1, message="error: failed to push ghcr.io/x: 503 Service Unavailable"), "platform",
     "could not reach the registry"),
    ("build", PodFacts(exit_code=137, reason="OOMKilled"), "revision", "out of memory"),
    # issue 17, scenario 5: a build that lost the network or its node is the platform's (the words are pip's,
    # conda's, apt's, curl's, git's and npm's own)
    ("build", PodFacts(exit_code=1, message=(
        "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
        "broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to "
        "establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/pandas/\n"
        "ERROR: Could not find a version that satisfies the requirement pandas==2.2.3 (from versions: none)\n"
        "ERROR: No matching distribution found for pandas==2.2.3\n"
        'error: failed to solve: process "/bin/sh -c pip install -r requirements.txt" did not complete '
        "successfully: exit code: 1")), "platform",
     "failed on the network (temporary failure in name resolution): error: failed to solve"),
    ("build", PodFacts(exit_code=1, message="CondaHTTPError: HTTP 000 CONNECTION FAILED for url "
                                            "<https://conda.anaconda.org/conda-forge/linux-64/repodata.json>"),
     "platform", "failed on the network (connection failed)"),
    ("build", PodFacts(exit_code=100, message="Err:1 http://deb.debian.org/debian bookworm InRelease\n  Could not "
                                              "connect to deb.debian.org:80 (151.101.2.132), connection timed out\n"
                                              "E: Unable to locate package git"), "platform",
     "failed on the network (connection timed out)"),
    ("build", PodFacts(exit_code=100, message="W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/"
                                              "InRelease  Temporary failure resolving 'deb.debian.org'"),
     "platform", "(temporary failure resolving)"),
    ("build", PodFacts(exit_code=1, message="E: Failed to fetch http://deb.debian.org/pool/main/g/git.deb  "
                                            "503 Service Unavailable [IP: 151.101.2.132 80]"),
     "platform", "failed on the network (503 service unavailable)"),
    ("build", PodFacts(exit_code=1, message="ReadTimeoutError: HTTPSConnectionPool(host='files.pythonhosted.org', "
                                            "port=443): Read timed out."), "platform", "(read timed out)"),
    ("build", PodFacts(exit_code=6, message="curl: (6) Could not resolve host: github.com"), "platform",
     "(could not resolve host)"),
    ("build", PodFacts(exit_code=1, message="npm error code EAI_AGAIN\nnpm error request to "
                                            "https://registry.npmjs.org/left-pad failed, reason: getaddrinfo "
                                            "EAI_AGAIN registry.npmjs.org"), "platform", "(eai_again)"),
    ("build", PodFacts(exit_code=137, reason="Error", message="Collecting pandas"), "platform",
     "stopped from outside (exit 137, SIGKILL) without running out of memory"),
    ("build", PodFacts(exit_code=143, reason="Error"), "platform", "stopped from outside (exit 143, SIGTERM)"),
    ("build", PodFacts(exit_code=137, reason="ContainerStatusUnknown", pod_reason="Evicted",
                       pod_message="The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi."),
     "platform", "the build pod was evicted by its node: The node was low on resource: ephemeral-storage"),
    ("build", PodFacts(exit_code=1, pod_reason="Evicted", message="ERROR: failed to solve"), "platform",
     "evicted by its node"),  # the pod's reason wins over whatever its container said as it died
    ("build", PodFacts(exit_code=143, reason="Error", disruption="PreemptionByScheduler",
                       pod_message="Preempted by pod 7c1e on node n-1"), "platform",
     "preempted by the scheduler for a higher-priority pod: Preempted by pod 7c1e"),
    ("build", PodFacts(exit_code=137, reason="Error", disruption="DeletionByTaintManager"), "platform",
     "its node became unreachable"),
    ("build", PodFacts(exit_code=143, disruption="EvictionByEvictionAPI"), "platform", "its node was drained"),
    ("build", PodFacts(exit_code=None, pod_reason="NodeLost", pod_message="Node n-1 which was running pod is "
                                                                          "unresponsive"), "platform",
     "lost with its node: Node n-1"),
    ("build", PodFacts(exit_code=143, pod_reason="Terminated",
                       pod_message="Pod was terminated in response to imminent node shutdown."), "platform",
     "stopped by its node's shutdown"),
    ("build", PodFacts(exit_code=None, pod_reason="OutOfmemory", pod_message="Node didn't have enough resource"),
     "platform", "refused by its node (OutOfmemory)"),
    ("build", PodFacts(exit_code=137, reason="OOMKilled", pod_reason=None), "revision", "(OOMKilled)"),
    # what the revision really broke stays its fault, whatever the words around it
    ("build", PodFacts(exit_code=1, message="ERROR: No matching distribution found for hubflow-no-such-package==1"),
     "revision", "the image build failed: ERROR: No matching distribution"),
    ("build", PodFacts(exit_code=1, message="PackagesNotFoundError: The following packages are not available from "
                                            "current channels:\n  - hubflow-no-such-package"), "revision",
     "image build failed"),
    # an upgrade pod stopped by its node: the platform's, and the release may be left pending
    ("upgrade", PodFacts(exit_code=137, reason="Error", pod_reason="Evicted", pod_message="The node was low on "
                                                                                         "resource: memory."),
     "platform", "the upgrade pod was evicted by its node: The node was low on resource: memory.; check `helm "
                 "history`"),
    ("upgrade", PodFacts(exit_code=143, reason="Error"), "platform", "killed (exit 143, Error); check `helm"),
    ("rollback", PodFacts(exit_code=143, disruption="PreemptionByScheduler"), "platform", "preempted"),
    # helm's --wait timed out on pods the cluster could not schedule (the runner's exit 6): capacity
    ("upgrade", PodFacts(exit_code=6, message="release x: helm upgrade to staging abc failed: the hub was not ready "
                                              "within 1800s: the cluster could not schedule pod hub-5f-x (0/3 nodes "
                                              "are available: 3 Insufficient memory.)"), "platform",
     "the cluster could not schedule the hub's pods: release x"),
])
def test_pod_fault_blames_the_revision_only_when_its_step_ran_and_said_so(kind, facts, blame, words):
    fault = pod_fault(kind, facts)
    assert fault.blame == blame and words in fault.summary, fault


def test_a_failed_build_is_built_again_once_before_its_verdict_stands():
    from hubflow.core.deploy import tried

    bad = Fault(Blame.REVISION, "the image build failed: ERROR: failed to solve")
    first = tried("build", bad, 1, 2)
    assert first == Fault(Blame.REVISION, "the image build failed: ERROR: failed to solve; building it again "
                                          "(try 1 of 2)", retry=True)
    assert tried("build", bad, 2, 2) == Fault(Blame.REVISION, "the image build failed: ERROR: failed to solve "
                                                              "(after 2 tries)")
    network = Fault(Blame.PLATFORM, "the build failed on the network (connection failed): x")
    assert tried("build", network, 1, 2).retry and not tried("build", network, 2, 2).retry
    assert tried("build", bad, 1, 1) == bad  # a task without a retry: the verdict stands at once
    running = Fault(Blame.PLATFORM, "the build task ended while its pod had not finished: x", retry=True)
    assert tried("build", running, 1, 2) is running  # re-attaches to its pod: not a second build
    helm = Fault(Blame.REVISION, "helm failed: x")
    assert tried("upgrade", helm, 1, 2) is helm  # only builds are tried again


def planned(hubs=("datahub", "data8"), canary=()):
    return Planned(1, {"hubs": [{"name": h} for h in hubs], "images": []},
                   {"canary": [h for h in hubs if h in canary], "rest": [h for h in hubs if h not in canary]})


def ok(hub):
    return {"ok": True, "hub": hub, "checks": [], "blame": None}


MISSING = {"ok": False, "blame": "revision",
           "checks": [{"name": "packages", "status": "failed", "detail": "x missing"}]}
UP = {"previous_revision": 3, "revision": 4}


def upgraded(hub, helm=UP, verification=None, wave="rest"):
    """A hub whose upgrade succeeded (and, with `verification`, whose smoke test ran)."""
    return HubResult(hub, wave, Step.DONE, helm=helm, verification=verification)


def upgrade_failed(hub, blame, summary, wave="rest"):
    return HubResult(hub, wave, Step.FAILED, fault=Fault(Blame(blame), summary))


def untouched(hub, wave="rest"):
    return HubResult(hub, wave, Step.NOT_RUN)


def test_all_verified_is_success():
    out = conclude(TARGET, [upgraded("datahub", verification=ok("datahub")),
                            upgraded("data8", verification=ok("data8"))], [])
    assert out.outcome is Outcome.SUCCESS and "verified on 2 hub(s)" in out.detail


def test_a_revision_fault_outweighs_a_platform_fault_in_the_same_run():
    out = conclude(TARGET, [upgrade_failed("datahub", "platform", "the upgrade pod was never scheduled"),
                            upgrade_failed("data8", "revision", "helm failed: values rejected")], [])
    assert out.outcome is Outcome.FAILED and out.stage == "deploy" and "hub data8: helm failed" in out.detail


def test_only_platform_faults_make_a_platform_outcome_and_keep_the_upgraded_hubs_to_undo():
    out = conclude(TARGET, [upgraded("datahub", verification=ok("datahub")),
                            upgrade_failed("data8", "platform", "never scheduled")], [])
    assert out.outcome is Outcome.PLATFORM and out.detail.startswith("platform fault: hub data8: never scheduled")
    assert to_undo(out) == [Undo("datahub", "rollback", 3)]


def test_an_upgrade_that_failed_without_a_verdict_is_the_platforms_fault():
    out = conclude(TARGET, [HubResult("datahub", "rest", Step.FAILED)], [])
    assert out.outcome is Outcome.PLATFORM and "hub datahub: the upgrade task failed" in out.detail


def test_a_build_that_failed_is_judged_by_its_fault_and_names_its_image():
    out = conclude(TARGET, [untouched("datahub")],
                   [BuildResult("datascience", Step.FAILED, Fault(Blame.REVISION, "the image build failed: pip")),
                    BuildResult("base", Step.DONE)])
    assert out.outcome is Outcome.FAILED and out.stage == "build"
    assert out.detail == "the build failed: image datascience: the image build failed: pip"


def test_a_verification_that_could_not_be_attempted_is_the_platforms_fault():
    bad = {"ok": False, "blame": "platform", "checks": [], "error": "no smoke token"}
    out = conclude(TARGET, [upgraded("datahub", verification=bad)], [])
    assert out.outcome is Outcome.PLATFORM and "no smoke token" in out.detail


def test_first_installs_are_uninstalled_and_failed_upgrades_are_not_undone_twice():
    out = conclude(TARGET, [upgraded("physics", {"previous_revision": None, "revision": 1}, MISSING),
                            upgrade_failed("datahub", "revision", "helm failed")], [])
    assert to_undo(out) == [Undo("physics", "uninstall")]


def test_each_hub_is_undone_from_its_own_helm_record_whatever_its_wave():
    out = conclude(TARGET, [upgraded("datahub", {"previous_revision": 7}, ok("datahub")),
                            upgraded("data8", UP, ok("data8"), wave="canary"),
                            upgrade_failed("rhub", "revision", "helm failed")], [])
    assert out.outcome is Outcome.FAILED and "hub rhub: helm failed" in out.detail and "canary" not in out.detail
    assert to_undo(out) == [Undo("datahub", "rollback", 7), Undo("data8", "rollback", 3)]


@pytest.mark.parametrize("canary, stage", [
    (upgraded("data8", UP, MISSING, wave="canary"), "verify"),
    (upgrade_failed("data8", "revision", "helm failed", wave="canary"), "deploy"),
])
def test_a_failing_canary_says_the_other_hubs_were_not_touched_and_only_it_is_undone(canary, stage):
    out = conclude(TARGET, [untouched("datahub"), canary, untouched("rhub")], [])
    assert out.outcome is Outcome.FAILED and out.stage == stage
    assert out.detail.endswith("the canary data8 failed, so the wave stopped: hub(s) datahub, rhub were not "
                               "touched")
    assert to_undo(out) == ([Undo("data8", "rollback", 3)] if stage == "verify" else [])


def test_results_travel_as_json_and_come_back_the_same():
    out = conclude(TARGET, [upgraded("data8", UP, MISSING)], [])
    assert Conclusion.from_dict(out.to_dict()) == out
    assert out.to_dict()["releases"] == [{"hub": "data8", "upgraded": True, "previous_revision": 3, "revision": 4,
                                          "status": None}]
    after = aftermath(out, TARGET)
    assert Aftermath.from_dict(after.to_dict()) == after
    assert Ended.from_dict(Ended(Outcome.REFUSED, "frozen", 3).to_dict()) == Ended(Outcome.REFUSED, "frozen", 3)
    assert Fault.from_dict(Fault(Blame.PLATFORM, "x", True).to_dict()) == Fault(Blame.PLATFORM, "x", True)


@pytest.mark.parametrize("outcome, target, hold, revert, state", [
    (Outcome.FAILED, TARGET, True, True, Outcome.FAILED),
    (Outcome.PLATFORM, TARGET, False, False, Outcome.PLATFORM),
    (Outcome.FAILED, dataclasses.replace(TARGET, reverts=["c" * 40]), True, False, Outcome.STOPPED),
    (Outcome.FAILED, dataclasses.replace(TARGET, base=None), True, False, Outcome.STOPPED),
])
def test_aftermath_holds_and_reverts_only_a_bad_revision(outcome, target, hold, revert, state):
    plan = aftermath(Conclusion(outcome, "verify", "x"), target)
    assert (plan.hold, plan.revert, plan.state) == (hold, revert, state)
    assert plan.status == ("error" if outcome is Outcome.PLATFORM else "failure")


def test_a_conflicting_revert_keeps_the_failure_and_says_revert_by_hand():
    state, note = revert_note("conflict", files=["images/x/requirements.txt"])
    assert state is Outcome.FAILED and note == ("the revert conflicts with later changes in "
                                                "images/x/requirements.txt: revert by hand")


@pytest.mark.parametrize("outcome, status, ledger", [
    (Outcome.SUCCESS, "success", "success"), (Outcome.UNPROMOTED, "success", "success"),
    (Outcome.FAILED, "failure", "failed"), (Outcome.STOPPED, "failure", "stopped"),
    (Outcome.PLATFORM, "error", "platform"), (Outcome.REFUSED, "error", "refused"),
    (Outcome.UNKNOWN, "error", "unknown"), (Outcome.SKIPPED, None, "skipped")])
def test_each_outcome_has_one_commit_status_and_one_ledger_word(outcome, status, ledger):
    assert (outcome.status, outcome.ledger) == (status, ledger)


FAILED = Conclusion(Outcome.FAILED, "verify", "verification failed: hub data8: packages: x",
                    [Release("data8", True, 3, 4, "ok")])
DONE = Paths(failure=True)


def test_final_lines_say_what_runs_now():
    p = planned(("data8",))
    state, line = final("staging", TARGET, p, FAILED, Aftermath(True, True, Outcome.FAILED, "failure",
                                                                "revert PR #9 merged"), DONE, {"data8": Step.DONE})
    assert state is Outcome.FAILED and "FAILED at verify" in line and "data8 put back" in line
    assert line.endswith(f"staging runs {BASE[:12]} again") and f"{REV[:12]} is held" in line
    state, line = final("staging", TARGET, p, FAILED, Aftermath(True, True, Outcome.FAILED, "x"), DONE,
                        {"data8": Step.FAILED})
    assert state is Outcome.STOPPED and "ROLLBACK FAILED for hub(s) data8" in line and "except hub(s) data8" in line


def test_a_rollback_that_never_ran_is_not_called_put_back():
    state, line = final("staging", TARGET, planned(("data8",)), FAILED,
                        Aftermath(True, True, Outcome.FAILED, "x"), DONE, {})
    assert state is Outcome.STOPPED and "ROLLBACK FAILED for hub(s) data8" in line and "put back" not in line


def test_final_state_is_unknown_when_the_run_could_not_conclude_and_never_claims_unchanged():
    state, line = final("staging", TARGET, planned(("data8", "biology")), None, None, Paths(), {})
    assert state is Outcome.UNKNOWN and "STATE UNKNOWN" in line and "data8, biology" in line
    assert "helm history" in line and "unchanged" not in line


def test_a_verified_run_whose_promotion_failed_is_not_green():
    success = Conclusion(Outcome.SUCCESS, None, "deployed and verified")
    state, line = final("staging", TARGET, planned(), success, None, Paths(success=False), {})
    assert state is Outcome.UNPROMOTED and "promotion PR not made" in line
    assert final("staging", TARGET, planned(), success, None, Paths(success=True), {})[0] is Outcome.SUCCESS


def test_a_failure_path_that_did_not_finish_stops_the_line():
    state, line = final("staging", TARGET, planned(("data8",)), FAILED, None, Paths(failure=False),
                        {"data8": Step.DONE})
    assert state is Outcome.STOPPED and "failure path did not finish" in line


def test_nothing_to_do_and_ended_runs():
    skip = dataclasses.replace(TARGET, skip="already deployed")
    assert final("staging", skip, None, None, None, Paths(), {})[0] is Outcome.SKIPPED
    owed = dataclasses.replace(TARGET, skip="x", owed=4)
    state, line = final("staging", owed, None, None, None, Paths(catch_up=True), {})
    assert state is Outcome.SUCCESS and "promotion is made now" in line
    state, line = final("staging", None, None, None, None, Paths(), {}, Ended(Outcome.PLATFORM, "GitHub down"))
    assert (state, line) == (Outcome.PLATFORM, "staging: PLATFORM FAULT: GitHub down; ? is not held and not "
                                               "reverted; staging is unchanged")
