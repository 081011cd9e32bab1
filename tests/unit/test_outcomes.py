"""The core's decisions after the pods, without Airflow: who is to blame for a pod, what a run's pods add up to,
what to undo, what the failure path does, and the closing line of every final state."""
import pytest

from hubflow.core.lifecycle import PodFacts, aftermath, conclude, final, pod_fault, revert_note, to_undo

REV, BASE = "a" * 40, "b" * 40
TARGET = {"env": "staging", "revision": REV, "base": BASE, "tree": "t", "skip": None, "reverts": [], "owed": None}


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
])
def test_pod_fault_blames_the_revision_only_when_its_step_ran_and_said_so(kind, facts, blame, words):
    fault = pod_fault(kind, facts)
    assert fault["blame"] == blame and words in fault["summary"], fault


def planned(hubs=("datahub", "data8"), images=(), canary=()):
    return {"attempt": 1, "hubs": list(hubs), "build": [{"labels": {"hubflow.io/image": i}} for i in images],
            "plan": {"images": []}, "waves": {"canary": [h for h in hubs if h in canary],
                                              "rest": [h for h in hubs if h not in canary]}}


def ok(hub):
    return {"ok": True, "hub": hub, "checks": [], "blame": None}


MISSING = {"ok": False, "blame": "revision", "checks": [{"name": "packages", "status": "failed", "detail": "x missing"}]}
UP = {"previous_revision": 3, "revision": 4}


def test_all_verified_is_success():
    out = conclude("staging", TARGET, planned(), {"rest.upgrade_0": "success", "rest.upgrade_1": "success"},
                   {"datahub": UP, "data8": UP}, {"datahub": ok("datahub"), "data8": ok("data8")}, [], {})
    assert out["outcome"] == "success" and "verified on 2 hub(s)" in out["detail"]


def test_a_revision_fault_outweighs_a_platform_fault_in_the_same_run():
    states = {"rest.upgrade_0": "failed", "rest.upgrade_1": "failed"}
    faults = {"datahub": {"blame": "platform", "summary": "the upgrade pod was never scheduled"},
              "data8": {"blame": "revision", "summary": "helm failed: values rejected"}}
    out = conclude("staging", TARGET, planned(), states, {}, {}, [], faults)
    assert out["outcome"] == "failed" and out["stage"] == "deploy" and "hub data8: helm failed" in out["detail"]


def test_only_platform_faults_make_a_platform_outcome_and_keep_the_upgraded_hubs_to_undo():
    states = {"rest.upgrade_0": "success", "rest.upgrade_1": "failed"}
    out = conclude("staging", TARGET, planned(), states, {"datahub": UP}, {"datahub": ok("datahub")}, [],
                   {"data8": {"blame": "platform", "summary": "never scheduled"}})
    assert out["outcome"] == "platform" and out["detail"].startswith("platform fault: hub data8: never scheduled")
    assert to_undo(out) == [{"hub": "datahub", "action": "rollback", "to": 3}]


def test_a_verification_that_could_not_be_attempted_is_the_platforms_fault():
    bad = {"ok": False, "blame": "platform", "checks": [], "error": "no smoke token"}
    out = conclude("staging", TARGET, planned(("datahub",)), {"rest.upgrade_0": "success"},
                   {"datahub": UP}, {"datahub": bad}, [], {})
    assert out["outcome"] == "platform" and "no smoke token" in out["detail"]


def test_first_installs_are_uninstalled_and_failed_upgrades_are_not_undone_twice():
    states = {"rest.upgrade_0": "success", "rest.upgrade_1": "failed"}
    out = conclude("staging", TARGET, planned(("physics", "datahub")), states,
                   {"physics": {"previous_revision": None, "revision": 1}, "datahub": {"previous_revision": 3}},
                   {"physics": MISSING}, [], {"datahub": {"blame": "revision", "summary": "helm failed"}})
    assert to_undo(out) == [{"hub": "physics", "action": "uninstall"}]


def test_each_hub_is_read_from_its_own_wave():
    """Map index i of a wave's group is that wave's hub i, whatever the plan order."""
    states = {"canary.upgrade_0": "success", "rest.upgrade_0": "success", "rest.upgrade_1": "failed"}
    out = conclude("staging", TARGET, planned(("datahub", "data8", "rhub"), canary=("data8",)), states,
                   {"data8": UP, "datahub": {"previous_revision": 7}}, {"data8": ok("data8"), "datahub": ok("datahub")},
                   [], {"rhub": {"blame": "revision", "summary": "helm failed"}})
    assert out["outcome"] == "failed" and "hub rhub: helm failed" in out["detail"] and "canary" not in out["detail"]
    assert to_undo(out) == [{"hub": "datahub", "action": "rollback", "to": 7},
                            {"hub": "data8", "action": "rollback", "to": 3}]


@pytest.mark.parametrize("states, verified, faults, stage", [
    ({"canary.upgrade_0": "success"}, {"data8": MISSING}, {}, "verify"),
    ({"canary.upgrade_0": "failed"}, {}, {"data8": {"blame": "revision", "summary": "helm failed"}}, "deploy"),
])
def test_a_failing_canary_says_the_other_hubs_were_not_touched_and_only_it_is_undone(states, verified, faults,
                                                                                      stage):
    out = conclude("staging", TARGET, planned(("datahub", "data8", "rhub"), canary=("data8",)),
                   {**states, "rest.upgrade": "upstream_failed"}, {"data8": UP}, verified, [], faults)
    assert out["outcome"] == "failed" and out["stage"] == stage
    assert out["detail"].endswith("the canary data8 failed, so the wave stopped: hub(s) datahub, rhub were not "
                                  "touched")
    assert to_undo(out) == ([{"hub": "data8", "action": "rollback", "to": 3}] if stage == "verify" else [])


@pytest.mark.parametrize("outcome, target, hold, revert, state", [
    ("failed", TARGET, True, True, "failed"),
    ("platform", TARGET, False, False, "platform"),
    ("failed", {**TARGET, "reverts": ["c" * 40]}, True, False, "stopped"),
    ("failed", {**TARGET, "base": None}, True, False, "stopped"),
])
def test_aftermath_holds_and_reverts_only_a_bad_revision(outcome, target, hold, revert, state):
    plan = aftermath({"outcome": outcome}, target)
    assert (plan["hold"], plan["revert"], plan["state"]) == (hold, revert, state)
    assert plan["status"] == ("error" if outcome == "platform" else "failure")


def test_a_conflicting_revert_keeps_the_failure_and_says_revert_by_hand():
    state, note = revert_note("conflict", files=["images/x/requirements.txt"])
    assert state == "failed" and note == ("the revert conflicts with later changes in images/x/requirements.txt: "
                                          "revert by hand")


FAILED = {"outcome": "failed", "stage": "verify", "detail": "verification failed: hub data8: packages: x",
          "releases": [{"hub": "data8", "upgraded": True, "previous_revision": 3, "revision": 4, "status": "ok"}]}


def test_final_lines_say_what_runs_now():
    p = planned(("data8",))
    undo = to_undo(FAILED)
    state, line = final("staging", TARGET, p, FAILED, {"state": "failed", "note": "revert PR #9 merged"},
                        {"fail": "success", "rollback_0": "success"}, undo)
    assert state == "failed" and "FAILED at verify" in line and "data8 put back" in line
    assert line.endswith(f"staging runs {BASE[:12]} again") and f"{REV[:12]} is held" in line
    state, line = final("staging", TARGET, p, FAILED, {"state": "failed", "note": "x"},
                        {"fail": "success", "rollback_0": "failed"}, undo)
    assert state == "stopped" and "ROLLBACK FAILED for hub(s) data8" in line and "except hub(s) data8" in line


def test_final_state_is_unknown_when_the_run_could_not_conclude_and_never_claims_unchanged():
    state, line = final("staging", TARGET, planned(("data8", "biology")), None, None, {}, [])
    assert state == "unknown" and "STATE UNKNOWN" in line and "data8, biology" in line and "helm history" in line
    assert "unchanged" not in line


def test_a_verified_run_whose_promotion_failed_is_not_green():
    success = {"outcome": "success", "stage": None, "detail": "deployed and verified", "releases": []}
    state, line = final("staging", TARGET, planned(), success, None, {"succeed": "failed"}, [])
    assert state == "unpromoted" and "promotion PR not made" in line
    assert final("staging", TARGET, planned(), success, None, {"succeed": "success"}, [])[0] == "success"


def test_a_failure_path_that_did_not_finish_stops_the_line():
    state, line = final("staging", TARGET, planned(("data8",)), FAILED, None, {"fail": "failed",
                                                                                 "rollback_0": "success"},
                        to_undo(FAILED))
    assert state == "stopped" and "failure path did not finish" in line


def test_nothing_to_do_and_ended_runs():
    assert final("staging", {**TARGET, "skip": "already deployed"}, None, None, None, {}, [])[0] == "skipped"
    state, line = final("staging", {**TARGET, "skip": "x", "owed": 4}, None, None, None, {"catch_up": "success"}, [])
    assert state == "success" and "promotion is made now" in line
    state, line = final("staging", None, None, None, None, {}, [], {"outcome": "platform", "detail": "GitHub down"})
    assert (state, line) == ("platform", "staging: PLATFORM FAULT: GitHub down; ? is not held and not reverted; "
                                         "staging is unchanged")


def test_a_failed_hub_step_says_what_comes_next_whichever_wave_it_ran_in():
    from hubflow.core.lifecycle import failed_task_line

    for task_id in ("canary.upgrade", "rest.upgrade", "rest.verify"):
        line = failed_task_line(task_id, 2, "helm failed\nError: x")
        assert line == (f"hubflow: {task_id}[2] failed (Error: x); the failure path puts back what this run "
                        "changed; `record` says what runs now")
