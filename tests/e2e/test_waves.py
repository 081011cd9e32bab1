"""Deploy waves (dag.test over the sandbox): the `deploy.canary` hubs are upgraded and verified first, the rest only
after every canary passed; a failing canary stops the wave, and only the canaries are put back."""
from tests import airflow_support as af
from tests.e2e.conftest import states
from tests.e2e.test_deploy import MISSING, revert_pulls
from tests.e2e.test_faults import closing_line


def canary(box, *hubs):
    text = box.settings_file.read_text()
    box.settings_file.write_text(text.replace("revert:\n", f"deploy:\n  canary: [{', '.join(hubs)}]\nrevert:\n"))


def hubs_of(pods):
    return [p["metadata"]["labels"]["hubflow.io/hub"] for p in pods]


def test_the_canary_is_upgraded_and_verified_before_any_other_hub_is_touched(sandbox):
    sandbox.baseline()
    canary(sandbox, "data8")
    sandbox.github.merge_feature("Tune two hubs", {"deployments/data8/config/common.yaml": "a: 1\n",
                                                   "deployments/datahub/config/common.yaml": "a: 2\n"})
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert hubs_of(sandbox.pods("upgrade")) == ["data8", "datahub"]
    tis = af.task_instances(run)
    assert tis[("canary.verify", 0)].end_date <= tis[("rest.upgrade", 0)].start_date
    assert [tis[(t, 0)].rendered_map_index for t in ("canary.upgrade", "rest.upgrade")] == ["data8", "datahub"]
    assert "canary wave: data8; then, once every canary passed: datahub" in sandbox.log
    assert set(sandbox.ledger().last_success("staging").record["verification"]) == {"data8", "datahub"}


def test_a_failing_canary_stops_the_wave_touches_no_other_hub_and_only_it_is_rolled_back(sandbox):
    sandbox.baseline()
    canary(sandbox, "biology")
    pr = sandbox.github.merge_feature("New chart values and a package the image lacks", {
        "hub/values.yaml": "jupyterhub: {hub: {db: {type: sqlite-memory}}}\n",
        "images/datascience/requirements.txt": f"pandas==2.2.3\nscikit-learn==1.5.2\n{MISSING}\n"})
    run = sandbox.run("staging")
    assert run.state == "failed"
    s = states(run)
    assert s["canary.verify[0]"] == "failed" and s["rest_pods"] == "upstream_failed"
    assert hubs_of(sandbox.pods("upgrade")) == ["biology"]  # no pod was even asked for the others
    assert hubs_of(sandbox.pods("rollback")) == ["biology"]
    untouched = "the canary biology failed, so the wave stopped: hub(s) data8, datahub, rhub were not touched"
    line = closing_line(sandbox)
    assert untouched in line and "hub(s) biology put back as they were" in line and "staging runs" in line
    assert any(untouched in m for m in sandbox.slack), sandbox.slack
    (comment,) = sandbox.github.comments[pr["number"]]
    assert untouched in comment["body"] and "rolled back: biology" in comment["body"]
    assert sandbox.ledger().held(pr["merge_commit_sha"]) and len(revert_pulls(sandbox)) == 1


def test_a_canary_the_fleet_does_not_know_refuses_the_run_naming_it(sandbox):
    sandbox.baseline()
    canary(sandbox, "biolgy")
    pr = sandbox.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml": "a: 1\n"})
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["plan"] == "failed" and sandbox.pods("upgrade") == []
    attempt = sandbox.ledger().attempts("staging")[0]
    assert (attempt.revision, attempt.outcome) == (pr["merge_commit_sha"], "refused")
    assert "deploy.canary names hub(s) the fleet does not have" in attempt.detail and "biolgy" in attempt.detail
    assert "staging is unchanged" in closing_line(sandbox)
