"""The deploy DAGs end to end (dag.test over the sandbox): what operators see in Airflow, GitHub and the cluster."""
from tests import airflow_support as af
from tests.e2e.conftest import DAGS, states


def test_staging_merge_deploys_only_the_changed_hub_and_opens_the_promotion(sandbox):
    sandbox.baseline()
    pr = sandbox.github.merge_feature("Give biology more memory",
                                      {"deployments/biology/config/common.yaml": "jupyterhub: {memory: 4G}\n"})
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    upgrades = sandbox.pods("upgrade", "staging")
    assert [p["metadata"]["labels"]["hubflow.io/hub"] for p in upgrades] == ["biology"]
    assert sandbox.pods("build") == []  # its image did not change and is in the registry
    revision = pr["merge_commit_sha"]
    status = sandbox.github.combined_status(revision)
    assert [(s["context"], s["state"]) for s in status["statuses"]] == [("hubflow/staging", "success")]
    promotions = [p for p in sandbox.github.pulls.values() if p["base"] == "prod" and p["state"] == "open"]
    assert len(promotions) == 1
    assert f"#{pr['number']} `Give biology more memory`" in promotions[0]["body"]
    assert revision in promotions[0]["body"]
    attempt = sandbox.ledger().last_success("staging")
    assert attempt.revision == revision and attempt.record["verification"]["biology"]["ok"]


def promotion_pulls(box):
    return [p for p in box.github.pulls.values() if p["base"] == "prod"]


def revert_pulls(box):
    return [p for p in box.github.pulls.values() if p["head"].startswith("hubflow/revert-")]


def statuses(box, revision):
    return [(s["context"], s["state"]) for s in box.github.combined_status(revision)["statuses"]]


def merge_pull(box, number):
    """A person presses Merge on GitHub."""
    import requests

    from sandbox.github_emulator import TOKEN

    r = requests.put(f"{box.github.url}/repos/datahub/datahub/pulls/{number}/merge",
                     json={"merge_method": "merge"}, headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["sha"]


MISSING = "hubflow-no-such-package==1.0"


def bad_merge(box):
    """A PR that adds a package the image does not really have (the emulated build installs nothing)."""
    return box.github.merge_feature("Add a package", {
        "images/datascience/requirements.txt": f"pandas==2.2.3\nscikit-learn==1.5.2\n{MISSING}\n"})


def test_failed_verification_rolls_back_reverts_holds_and_leaves_prod_alone(sandbox):
    sandbox.baseline()
    pr = bad_merge(sandbox)
    revision = pr["merge_commit_sha"]
    run = sandbox.run("staging")
    assert run.state == "failed"
    s = states(run)
    assert s["rest.verify[0]"] == "failed" and s["succeed"] == "skipped" and s["rollback[0]"] == "success"
    assert "hubflow-no-such-package" in sandbox.log
    # built (the tag was new), deployed, then rolled back to the helm revision recorded before the upgrade
    assert [p["metadata"]["labels"]["hubflow.io/image"] for p in sandbox.pods("build")] == ["datascience"]
    rollback = sandbox.pods("rollback")
    assert len(rollback) == 1 and rollback[0]["metadata"]["labels"]["hubflow.io/hub"] == "biology"
    args = rollback[0]["spec"]["containers"][0]["args"]
    assert args[-3:-2] == ["3"] or "3" in args
    # the revert PR exists and, in merge mode, is merged: staging is back to the tree that last worked
    reverts = revert_pulls(sandbox)
    assert len(reverts) == 1 and reverts[0]["merged"]
    assert sandbox.github._git("rev-parse", "staging^{tree}").strip() == \
        sandbox.github._git("rev-parse", f"{revision}^1^{{tree}}").strip()
    assert sandbox.ledger().held(revision).startswith("verification failed: hub biology")
    assert statuses(sandbox, revision) == [("hubflow/staging", "failure")]
    comments = sandbox.github.comments[pr["number"]]
    assert len(comments) == 1 and "failed on staging" in comments[0]["body"] and "held" in comments[0]["body"]
    # nothing at all happened in prod
    assert sandbox.pods("upgrade", "prod") == [] and promotion_pulls(sandbox) == []
    assert "FAILED at verify" in sandbox.log


def test_promotion_merged_deploys_prod_through_the_gate(sandbox):
    sandbox.baseline()
    sandbox.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml": "jupyterhub: {cpu: 2}\n"})
    assert sandbox.run("staging").state == "success"
    (promotion,) = promotion_pulls(sandbox)
    merged = merge_pull(sandbox, promotion["number"])
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    run = sandbox.run("prod")
    assert run.state == "success", states(run)
    assert sandbox.pods("build") == []
    assert [p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("upgrade", "prod")] == ["data8"]
    assert "gate passed" in sandbox.log
    assert statuses(sandbox, merged) == [("hubflow/prod", "success")]
    assert sandbox.ledger().last_success("prod").revision == merged


def test_direct_push_to_prod_is_refused_unless_forced_with_a_reason(sandbox):
    sandbox.baseline()
    pushed = sandbox.github.push("prod", "hotfix straight to prod",
                                 {"deployments/rhub/config/prod.yaml": "jupyterhub: {hotfix: true}\n"})
    run = sandbox.run("prod")
    assert run.state == "failed"
    assert states(run)["gate"] == "failed" and sandbox.pods("upgrade") == []
    assert "matches no revision verified on staging" in sandbox.log
    refused = sandbox.ledger().attempts("prod")[0]
    assert (refused.revision, refused.outcome) == (pushed, "refused")
    assert statuses(sandbox, pushed) == [("hubflow/prod", "error")]
    run = sandbox.run("prod", force_reason="INC-7: certificate expired; verified by hand")
    assert run.state == "success", states(run)
    forced = sandbox.ledger().last_success("prod")
    assert forced.revision == pushed
    assert forced.force_reason == "INC-7: certificate expired; verified by hand" and forced.forced_by


def test_two_quick_merges_are_deployed_together_and_nothing_twice(sandbox):
    sandbox.baseline()
    first = sandbox.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml": "a: 1\n"})
    second = sandbox.github.merge_feature("Tune datahub", {"deployments/datahub/config/common.yaml": "a: 2\n"})
    run = sandbox.run("staging", revision=first["merge_commit_sha"])
    assert run.state == "success", states(run)
    assert sorted(p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("upgrade")) == ["data8", "datahub"]
    assert sandbox.ledger().last_success("staging").revision == second["merge_commit_sha"]
    again = sandbox.run("staging", revision=second["merge_commit_sha"])
    assert again.state == "success" and states(again)["plan"] == "skipped"
    assert "already deployed" in sandbox.log
    assert len(sandbox.pods("upgrade")) == 2
    assert af.load_dag(DAGS, "hubflow_deploy_staging").max_active_runs == 1


def test_failing_build_deploys_nothing_and_reverts(sandbox):
    sandbox.baseline()
    sandbox.k8s.script({"hubflow.io/kind": "build"}, exit_code=1, logs=["ERROR: failed to solve: pip install"])
    pr = bad_merge(sandbox)
    run = sandbox.run("staging")
    assert run.state == "failed"
    assert states(run)["build[0]"] == "failed" and sandbox.pods("upgrade") == [] and sandbox.pods("rollback") == []
    assert "failed to solve" in sandbox.log
    assert sandbox.ledger().held(pr["merge_commit_sha"]).startswith(
        "the build failed: image datascience: the image build failed: ERROR: failed to solve")
    assert len(revert_pulls(sandbox)) == 1
    assert statuses(sandbox, pr["merge_commit_sha"]) == [("hubflow/staging", "failure")]


def test_failing_helm_upgrade_rolls_back_the_others(sandbox):
    sandbox.baseline()
    sandbox.k8s.script({"hubflow.io/kind": "upgrade", "hubflow.io/hub": "datahub"}, exit_code=1,
                       logs=["Error: UPGRADE FAILED: release datahub-staging failed, and has been rolled back"])
    pr = sandbox.github.merge_feature("Bump the chart",
                                      {"hub/values.yaml": "jupyterhub: {hub: {db: {type: sqlite-memory}}}\n"})
    run = sandbox.run("staging")
    assert run.state == "failed"
    hubs = [p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("upgrade")]
    assert sorted(hubs) == ["biology", "data8", "datahub", "rhub"]
    rolled = sorted(p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("rollback"))
    assert rolled == ["biology", "data8", "rhub"]  # datahub: helm --atomic already put it back
    log = sandbox.log
    # the deploy task's last line says what helm left (the runner's termination message) and whose fault it is
    assert "upgrade datahub: helm failed: Error: UPGRADE FAILED: release datahub-staging failed, and has been rolled " \
           "back (revision fault)" in log
    assert len(revert_pulls(sandbox)) == 1
    assert sandbox.ledger().held(pr["merge_commit_sha"]).startswith("the helm upgrade failed: hub datahub: helm failed")


def test_the_revert_failing_to_deploy_stops_the_line(sandbox):
    sandbox.baseline()
    bad_merge(sandbox)
    assert sandbox.run("staging").state == "failed"
    (revert,) = revert_pulls(sandbox)
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    sandbox.k8s.script({"hubflow.io/kind": "upgrade"}, exit_code=1, logs=["Error: cluster unreachable"])
    run = sandbox.run("staging")
    assert run.state == "failed"
    assert len(revert_pulls(sandbox)) == 1  # no revert of the revert
    record = sandbox.log
    assert "never reverts a revert" in record and "line is stopped" in record


def test_a_retried_failure_path_repeats_no_side_effect(sandbox):
    sandbox.baseline()
    pr = bad_merge(sandbox)
    # the first try of `fail` dies after the revert was made and the comment posted (GitHub answers 403 after it)
    sandbox.github.fail("POST", "/repos/datahub/datahub/issues/*/comments", status=403, times=1, after_effect=True)
    run = sandbox.run("staging")
    assert run.state == "failed"
    tis = af.task_instances(run)
    assert tis[("fail", -1)].state == "success" and tis[("fail", -1)].try_number == 2
    assert len(revert_pulls(sandbox)) == 1
    branches = sandbox.github._git("for-each-ref", "--format=%(refname:short)", "refs/heads/hubflow/").split()
    assert len(branches) == 1
    assert len(sandbox.github.comments[pr["number"]]) == 1


def test_promotion_mode_merge_merges_the_verified_revision(sandbox):
    sandbox.baseline()
    text = sandbox.settings_file.read_text()
    sandbox.settings_file.write_text(text.replace("revert:\n", "promotion:\n  mode: merge\nrevert:\n"))
    pr = sandbox.github.merge_feature("Tune rhub", {"deployments/rhub/config/common.yaml": "a: 3\n"})
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    (promotion,) = promotion_pulls(sandbox)
    assert promotion["merged"]
    assert sandbox.github._git("merge-base", "--is-ancestor", pr["merge_commit_sha"], "prod") == ""


def test_prod_never_builds_a_missing_image_refuses_the_run(sandbox):
    sandbox.baseline()
    pushed = sandbox.github.push("prod", "an image change nobody built",
                                 {"images/primary/Dockerfile": "FROM scratch\n"})
    run = sandbox.run("prod", force_reason="testing the registry check")
    assert run.state == "failed"
    assert states(run)["build_pods"] == "failed" and sandbox.pods("build") == [] and sandbox.pods("upgrade") == []
    assert "prod never builds, and these images are not in the registry" in sandbox.log
    attempt = sandbox.ledger().attempts("prod")[0]
    assert (attempt.revision, attempt.outcome) == (pushed, "refused")
    assert statuses(sandbox, pushed) == [("hubflow/prod", "error")]


def test_a_failed_rollback_is_named_and_stops_the_line(sandbox):
    sandbox.baseline()
    sandbox.k8s.script({"hubflow.io/kind": "rollback"}, exit_code=1,
                       logs=["Error: timed out waiting for the condition"])
    pr = bad_merge(sandbox)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["rollback[0]"] == "failed"
    assert "the ROLLBACK FAILED for hub(s) biology" in sandbox.log
    assert "staging runs" in sandbox.log and "except hub(s) biology" in sandbox.log
    attempt = sandbox.ledger().attempts("staging")[0]
    assert attempt.revision == pr["merge_commit_sha"] and "ROLLBACK FAILED" in attempt.detail


def test_an_unknown_parameter_is_refused_naming_it(sandbox):
    sandbox.baseline()
    sandbox.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml": "a: 1\n"})
    run = sandbox.run("staging", revison="staging")  # a typo must not deploy the branch head instead
    assert run.state == "failed" and states(run)["resolve"] == "failed"
    assert "unknown parameter(s) 'revison'; this DAG takes force_reason, revision" in sandbox.log
    assert sandbox.pods("upgrade") == [] and sandbox.ledger().attempts("staging")[0].run_id == "baseline"
