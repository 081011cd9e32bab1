"""The deploy DAGs end to end (dag.test over the sandbox): what operators see in Airflow, GitHub and the cluster."""
from tests import airflow_support as af


def states(run) -> dict[str, str]:
    return {f"{t}[{i}]" if i >= 0 else t: ti.state for (t, i), ti in af.task_instances(run).items()}


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
    assert f"#{pr['number']} Give biology more memory" in promotions[0]["body"]
    assert revision in promotions[0]["body"]
    attempt = sandbox.ledger().last_success("staging")
    assert attempt.revision == revision and attempt.record["verification"]["biology"]["ok"]
