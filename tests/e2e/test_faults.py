"""Every fault ends in a known state, said truthfully (issue: outcomes you can trust).

Each scenario is a real deploy run (dag.test over the sandbox) with one fault put in, and asserts what people see
afterwards: the run's state, the commit status, the ledger attempt (finished, with its outcome), holds and reverts
(only when the revision is to blame), PR comments, Slack, and the closing line, which says what runs now.
"""
import json

import pytest

from hubflow.clients.ledger import Ledger
from tests import airflow_support as af
from tests.e2e.conftest import states
from tests.e2e.test_deploy import bad_merge, promotion_pulls, revert_pulls, statuses


def closing_line(box) -> str:
    """The run's closing line: the last thing `record` logged (also the message its failure carries)."""
    lines = [line for line in box.log.splitlines() if "hubflow" in line and ("staging:" in line or "prod:" in line)]
    return lines[-1] if lines else ""


def attempt_of(box, env="staging"):
    return box.ledger().attempts(env)[0]


def status_of(box, revision, env="staging"):
    (status,) = [s for s in box.github.combined_status(revision)["statuses"] if s["context"] == f"hubflow/{env}"]
    return status


def assert_platform_fault(box, run, revision, words: str):
    """A platform fault: the run fails, nothing is held or reverted, status error naming it, Slack says it."""
    assert run.state == "failed"
    assert box.ledger().held(revision) is None and box.ledger().holds() == []
    assert revert_pulls(box) == []
    status = status_of(box, revision)
    assert status["state"] == "error" and words in status["description"].lower(), status["description"]
    attempt = attempt_of(box)
    assert (attempt.revision, attempt.outcome) == (revision, "platform") and attempt.finished_at
    assert words in attempt.detail.lower() and "not held" in attempt.detail
    assert any("platform" in m and words in m.lower() for m in box.slack), box.slack
    assert box.github.comments.get(box.pr_number, []) == []


def one_hub_merge(box, hub="data8"):
    """A merge that changes one hub's values only: no build, one upgrade."""
    pr = box.github.merge_feature(f"Tune {hub}", {f"deployments/{hub}/config/common.yaml": "jupyterhub: {cpu: 3}\n"})
    box.pr_number = pr["number"]
    return pr["merge_commit_sha"]


# ---------------------------------------------------------------- 1. bookkeeping tasks fail or their worker dies


def test_1_a_bookkeeping_task_that_fails_once_is_retried_and_the_run_concludes(sandbox, monkeypatch):
    sandbox.baseline()
    revision = one_hub_merge(sandbox)
    real, calls = Ledger.update, []

    def flaky(self, attempt_id, **record):
        if "releases" in record and not calls:
            calls.append(1)
            raise RuntimeError("worker lost its database connection")
        return real(self, attempt_id, **record)
    monkeypatch.setattr(Ledger, "update", flaky)
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert af.task_instances(run)[("conclude", -1)].try_number == 2
    assert attempt_of(sandbox).outcome == "success" and status_of(sandbox, revision)["state"] == "success"


def test_1_a_run_that_cannot_conclude_says_state_unknown_and_what_to_check(sandbox, monkeypatch):
    sandbox.baseline()
    revision = one_hub_merge(sandbox)
    real = Ledger.update

    def broken(self, attempt_id, **record):
        if "releases" in record:
            raise RuntimeError("the ledger database is gone")
        return real(self, attempt_id, **record)
    monkeypatch.setattr(Ledger, "update", broken)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["conclude"] == "failed"
    line = closing_line(sandbox)
    assert "STATE UNKNOWN" in line and "helm history" in line and "data8" in line
    assert "unchanged" not in line
    attempt = attempt_of(sandbox)
    assert attempt.outcome == "unknown" and "STATE UNKNOWN" in attempt.detail
    assert status_of(sandbox, revision)["state"] == "error"
    assert sandbox.ledger().holds() == [] and revert_pulls(sandbox) == []
    assert any("STATE UNKNOWN" in m for m in sandbox.slack)


# ---------------------------------------------------------------- 2. GitHub down through the success path


def test_2_github_down_through_the_success_path_is_not_green_and_the_next_run_promotes(sandbox):
    sandbox.baseline()
    revision = one_hub_merge(sandbox)
    sandbox.github.fail("POST", "/repos/datahub/datahub/pulls", status=502, times=1000)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["succeed"] == "failed"
    assert promotion_pulls(sandbox) == []
    attempt = attempt_of(sandbox)
    assert attempt.outcome == "success" and attempt.record["promotion"] == "owed"  # verified, the gate sees it
    assert "promotion PR not made" in attempt.detail
    assert "promotion PR not made" in closing_line(sandbox)
    sandbox.github._faults.clear()
    again = sandbox.run("staging")  # nothing new on the branch: the owed promotion is caught up
    assert again.state == "success", states(again)
    assert states(again)["catch_up"] == "success" and states(again)["plan"] == "skipped"
    assert len(promotion_pulls(sandbox)) == 1 and revision in promotion_pulls(sandbox)[0]["body"]
    assert sandbox.ledger().get(attempt.id).record["promotion"] == "opened"
    third = sandbox.run("staging")
    assert third.state == "success" and states(third)["catch_up"] == "skipped"
    assert len(promotion_pulls(sandbox)) == 1


# ---------------------------------------------------------------- 3. verified before any promotion merge


def test_3_the_verification_is_in_the_ledger_before_the_promotion_is_merged(sandbox, monkeypatch):
    from hubflow.clients.github import GitHub

    sandbox.baseline()
    text = sandbox.settings_file.read_text()
    sandbox.settings_file.write_text(text.replace("revert:\n", "promotion:\n  mode: merge\nrevert:\n"))
    revision = one_hub_merge(sandbox)
    tree = sandbox.github._git("rev-parse", f"{revision}^{{tree}}").strip()
    seen, real_merge = [], GitHub.merge

    def merge(self, number, expected_head=None, method="merge"):
        seen.append(sandbox.ledger().verified_revision_for_tree("staging", tree))
        return real_merge(self, number, expected_head, method)
    monkeypatch.setattr(GitHub, "merge", merge)
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert seen == [revision]
    (promotion,) = promotion_pulls(sandbox)
    assert promotion["merged"]
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    prod = sandbox.run("prod")
    assert prod.state == "success", states(prod)
    assert "gate passed" in sandbox.log


# ---------------------------------------------------------------- 4. a worker killed while a pod runs


def test_4_5_a_worker_killed_while_a_helm_pod_runs_is_retried_and_reattaches_to_the_same_pod(sandbox, monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    sandbox.baseline()
    # the helm pod outlives the dead worker and the retry delay (10 s), as a real helm upgrade does
    sandbox.k8s.script({"hubflow.io/kind": "upgrade"}, xcom={"previous_revision": 3, "revision": 4,
                                                             "status": "deployed"}, run_seconds=25)
    revision = one_hub_merge(sandbox)
    real_start, real_cleanup, died = KubernetesPodOperator.await_pod_start, KubernetesPodOperator.cleanup, []

    def dies(self, *args, **kwargs):
        real_start(self, *args, **kwargs)
        if not died:  # the first try's worker dies once its pod runs: nothing after this line runs
            died.append(self.pod.metadata.name)
            raise SystemError("worker killed")

    def no_cleanup_by_the_dead(self, *args, **kwargs):
        if len(died) == 1:
            died.append("cleanup skipped")
            return None
        return real_cleanup(self, *args, **kwargs)
    monkeypatch.setattr(KubernetesPodOperator, "await_pod_start", dies)
    monkeypatch.setattr(KubernetesPodOperator, "cleanup", no_cleanup_by_the_dead)
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert af.task_instances(run)[("rest.upgrade", 0)].try_number == 2
    upgrades = sandbox.pods("upgrade")
    assert len(upgrades) == 1 and upgrades[0]["metadata"]["name"] == died[0]  # re-attached, never a second pod
    assert "Reusing existing pod" in sandbox.log
    assert status_of(sandbox, revision)["state"] == "success"
    # 5. the pod's deadline leaves room for `--wait --atomic` at its worst: the upgrade and its rollback
    assert upgrades[0]["spec"]["activeDeadlineSeconds"] >= 2 * 1800 + 5


# ---------------------------------------------------------------- 6. platform faults are not the revision's fault


@pytest.mark.parametrize("fault, words", [
    (dict(exit_code=3, message="release data8-staging in namespace data8-staging is stuck in pending-upgrade "
                               "(helm revision 4)"), "pending-upgrade"),
    (dict(exit_code=4, message="cannot reach chart repository https://hub.jupyter.org/helm-chart/"),
     "chart repository"),
    (dict(exit_code=5, message="sops could not decrypt deployments/data8/secrets/staging.yaml: no key is available"),
     "no key is available"),
    (dict(never_scheduled=True), "never scheduled"),
    (dict(image_pull_error="ErrImagePull"), "could not be pulled"),
])
def test_6_a_platform_fault_in_the_helm_pod_holds_and_reverts_nothing(sandbox, fault, words):
    sandbox.baseline()
    sandbox.k8s.script({"hubflow.io/kind": "upgrade"}, **fault)
    revision = one_hub_merge(sandbox)
    run = sandbox.run("staging")
    assert states(run)["rest.upgrade[0]"] == "failed" and "rest.verify[0]" not in states(run) or \
        states(run)["rest.verify[0]"] != "success"
    assert_platform_fault(sandbox, run, revision, words)
    assert sandbox.pods("rollback") == []  # the upgrade never changed the release
    line = closing_line(sandbox)
    assert "PLATFORM FAULT" in line and "is not held" in line and "staging runs" in line
    if fault.get("never_scheduled") or fault.get("image_pull_error"):
        assert sandbox.k8s.pods == {} or all(
            p.body["metadata"]["labels"].get("hubflow.io/kind") != "upgrade" for p in sandbox.k8s.pods.values())


def test_6_a_platform_fault_on_one_hub_rolls_back_the_hubs_this_run_changed(sandbox):
    sandbox.baseline()
    sandbox.k8s.script({"hubflow.io/kind": "upgrade", "hubflow.io/hub": "rhub"}, never_scheduled=True)
    pr = sandbox.github.merge_feature("Bump the chart", {"hub/values.yaml": "jupyterhub: {hub: {db: {type: x}}}\n"})
    sandbox.pr_number = pr["number"]
    run = sandbox.run("staging")
    assert_platform_fault(sandbox, run, pr["merge_commit_sha"], "never scheduled")
    rolled = sorted(p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("rollback"))
    assert rolled == ["biology", "data8", "datahub"]
    assert "put back as they were" in closing_line(sandbox)


def test_6_an_unreachable_registry_is_a_platform_fault_before_anything_is_touched(sandbox):
    sandbox.baseline()
    revision = one_hub_merge(sandbox)
    registry = sandbox.deployment.cluster.registry
    registry.stop()  # the real registry is down for this run
    try:
        run = sandbox.run("staging")
    finally:
        registry.start()
    assert states(run)["build_pods"] == "failed" and sandbox.pods("upgrade") == []
    assert_platform_fault(sandbox, run, revision, "registry")
    assert "staging is unchanged" in closing_line(sandbox)


def test_6_github_down_when_the_run_starts_is_a_platform_fault_that_touches_nothing(sandbox):
    sandbox.baseline()
    one_hub_merge(sandbox)
    sandbox.github.fail("*", "/datahub/datahub.git/*", status=503, times=1000)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["resolve"] == "failed"
    assert sandbox.pods("upgrade") == [] and sandbox.ledger().holds() == [] and revert_pulls(sandbox) == []
    line = closing_line(sandbox)
    assert "PLATFORM FAULT" in line and "cannot read the deployment repository" in line and "unchanged" in line
    assert any("cannot read the deployment repository" in m for m in sandbox.slack)


# ---------------------------------------------------------------- 7. the revert conflicts with the branch


def test_7_a_revert_that_conflicts_says_revert_by_hand_names_the_files_and_keeps_the_hold(sandbox, monkeypatch):
    from hubflow.core import deploy

    sandbox.baseline()
    pr = bad_merge(sandbox)
    revision = pr["merge_commit_sha"]
    real = deploy.aftermath

    def branch_moves_on(conclusion, target):  # someone merges over the same lines while the run verifies
        sandbox.github.push("staging", "pin scikit-learn", {
            "images/datascience/requirements.txt": "pandas==2.2.3\nscikit-learn==1.6.0\nhubflow-no-such-package==2\n"})
        return real(conclusion, target)
    monkeypatch.setattr(deploy, "aftermath", branch_moves_on)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["fail"] == "success"
    assert revert_pulls(sandbox) == []
    assert statuses(sandbox, revision) == [("hubflow/staging", "failure")]
    (comment,) = sandbox.github.comments[pr["number"]]
    assert "revert by hand" in comment["body"] and "images/datascience/requirements.txt" in comment["body"]
    attempt = attempt_of(sandbox)
    assert attempt.outcome == "failed" and attempt.finished_at and "revert by hand" in attempt.detail
    assert sandbox.ledger().held(revision)


def test_7_a_transient_github_error_while_reverting_is_retried_not_a_stopped_line(sandbox):
    sandbox.baseline()
    pr = bad_merge(sandbox)
    sandbox.github.fail("POST", "/repos/datahub/datahub/pulls", status=502, times=6)  # more than one try's retries
    run = sandbox.run("staging")
    assert run.state == "failed"
    assert af.task_instances(run)[("fail", -1)].try_number >= 2 and states(run)["fail"] == "success"
    (revert,) = revert_pulls(sandbox)
    assert revert["merged"]
    attempt = attempt_of(sandbox)
    assert attempt.outcome == "failed" and "line is stopped" not in attempt.detail
    assert sandbox.ledger().held(pr["merge_commit_sha"])


# ---------------------------------------------------------------- 8. refusals after planning


def test_8_a_pod_spec_error_refuses_the_run_and_leaves_nothing_pending(sandbox):
    sandbox.baseline()
    pr = sandbox.github.merge_feature("Odd values path", {
        "deployments/data8/hubflow-hub.yaml": "images:\n  - name: primary\n    values_path: 'a..b'\n"})
    revision = pr["merge_commit_sha"]
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["plan"] == "failed"
    assert states(run)["decide"] == "success" and states(run)["record"] == "failed"  # only the refusal fails
    attempt = attempt_of(sandbox)
    assert (attempt.revision, attempt.outcome) == (revision, "refused") and attempt.finished_at
    assert "values_path" in attempt.detail
    assert statuses(sandbox, revision) == [("hubflow/staging", "error")]
    assert sandbox.pods("upgrade") == [] and sandbox.ledger().holds() == []
    assert "staging is unchanged" in closing_line(sandbox)


# ---------------------------------------------------------------- 9. a hub installed for the first time


def test_9_a_hub_first_installed_by_a_failing_run_is_uninstalled(sandbox):
    sandbox.baseline()
    sandbox.k8s.script({"hubflow.io/kind": "upgrade", "hubflow.io/hub": "physics"},
                       xcom={"previous_revision": None, "revision": 1, "status": "deployed"})
    pr = sandbox.github.merge_feature("New hub physics with a missing package", {
        "deployments/physics/hubflow-hub.yaml": "images: [datascience]\n",
        "deployments/physics/config/common.yaml": "jupyterhub: {custom: {hub: physics}}\n",
        **{f"deployments/physics/{kind}/{env}.yaml": "jupyterhub: {}\n"
           for kind in ("config", "secrets") for env in ("staging", "prod")},
        "images/datascience/requirements.txt": "pandas==2.2.3\nscikit-learn==1.5.2\nhubflow-no-such-package==1.0\n"})
    run = sandbox.run("staging")
    assert run.state == "failed"
    undo = {p["metadata"]["labels"]["hubflow.io/hub"]: p["spec"]["containers"][0]["args"]
            for p in sandbox.pods("rollback")}
    assert undo["physics"][:3] == ["uninstall", "--release", "physics-staging"]
    assert undo["biology"][0] == "rollback"
    assert "hub(s) biology, physics put back as they were" in closing_line(sandbox) or \
        "hub(s) physics, biology put back as they were" in closing_line(sandbox)
    assert sandbox.ledger().held(pr["merge_commit_sha"])


# ---------------------------------------------------------------- 10. Slack down


def test_10_slack_failing_never_fails_a_run(sandbox, monkeypatch):
    sandbox.baseline()
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_SLACK", json.dumps({
        "conn_type": "slackwebhook", "host": "http://127.0.0.1:9", "password": "T0/B0/x"}))
    one_hub_merge(sandbox)
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert "Slack notification through 'hubflow_slack' failed" in sandbox.log
    assert "T0/B0/x" not in sandbox.log  # the webhook's secret path never reaches a log


# ---------------------------------------------------------------- 11. what makes a revert a revert


def test_11_a_feature_branch_named_revert_is_reverted_like_any_other(sandbox):
    sandbox.baseline()
    pr = sandbox.github.merge_feature("Fix a typo", {
        "images/datascience/requirements.txt": "pandas==2.2.3\nscikit-learn==1.5.2\nhubflow-no-such-package==1.0\n"},
        branch="revert-typo")
    run = sandbox.run("staging")
    assert run.state == "failed"
    (revert,) = revert_pulls(sandbox)
    assert revert["merged"]
    assert "never reverts a revert" not in sandbox.log
    assert attempt_of(sandbox).outcome == "failed" and sandbox.ledger().held(pr["merge_commit_sha"])


# ---------------------------------------------------------------- security: prod deploys exactly the verified images


def test_prod_refuses_an_image_whose_digest_differs_from_the_one_staging_verified(sandbox):
    from tests.e2e.test_deploy import merge_pull

    sandbox.baseline()
    one_hub_merge(sandbox)
    assert sandbox.run("staging").state == "success"
    verified = sandbox.ledger().last_success("staging")
    assert verified.record["digests"]["primary"].startswith("sha256:")
    (promotion,) = promotion_pulls(sandbox)
    merged = merge_pull(sandbox, promotion["number"])
    # the tag was pushed again with other content after staging verified it
    sandbox.ledger().update(verified.id, digests={**verified.record["digests"], "primary": "sha256:" + "0" * 64})
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    run = sandbox.run("prod")
    assert run.state == "failed" and states(run)["build_pods"] == "failed" and sandbox.pods("upgrade") == []
    attempt = attempt_of(sandbox, "prod")
    assert attempt.outcome == "refused" and "changed in the registry since it was verified" in attempt.detail
    assert statuses(sandbox, merged) == [("hubflow/prod", "error")]
