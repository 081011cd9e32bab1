"""Rendered release and namespace names are checked before anything runs (issue 17, scenario 14).

A hub whose helm release helm would refuse (more than 53 characters, or not a name helm accepts) is refused at plan,
naming the hub, the rendered name and the limit: `refused`, not blamed on the revision, nothing held, reverted or run,
and the PR's preview says so before the merge. With `release: "{hub}-{env}"` a hub name (at most 40 characters) always
fits; a pattern that adds the chart's name, as here, takes a 40-character name to 59.
"""
from tests.e2e.conftest import states
from tests.e2e.test_deploy import merge_pull, revert_pulls, statuses
from tests.e2e.test_faults import attempt_of, closing_line

LONG = "a-hub-name-of-forty-characters-for-maths"
RELEASE = f"jupyterhub-{LONG}-staging"


def long_release_names(box) -> None:
    """Both environments name their releases after the chart too (`jupyterhub-{hub}-{env}`)."""
    text = box.settings_file.read_text()
    for conn in ("kubernetes_staging", "kubernetes_prod"):
        line = f"    kubernetes_conn_id: {conn}\n"
        assert text.count(line) == 1
        text = text.replace(line, line + '    release: "jupyterhub-{hub}-{env}"\n')
    box.settings_file.write_text(text)


def new_hub_files(name: str) -> dict[str, str]:
    return {f"deployments/{name}/hubflow-hub.yaml": "images: [datascience]\n",
            f"deployments/{name}/config/common.yaml": "jupyterhub: {custom: {hub: maths}}\n",
            **{f"deployments/{name}/{kind}/{env}.yaml": "jupyterhub: {}\n"
               for kind in ("config", "secrets") for env in ("staging", "prod")}}


def test_14_a_hub_whose_release_helm_would_refuse_is_refused_at_plan_and_shown_on_its_pr(sandbox):
    assert len(LONG) == 40 and len(RELEASE) == 59
    sandbox.baseline()
    long_release_names(sandbox)
    prod = sandbox.github.head("prod")
    sandbox.github.push("feature/maths", "New hub for maths", new_hub_files(LONG),
                        parent=sandbox.github.head("staging"))
    number = sandbox.github.open_pull("feature/maths", "staging", "New hub for maths")["number"]

    # before the merge: the PR's preview says the deploy would refuse it, and why
    preview = sandbox.run_dag("hubflow_pr_preview", pull=number)
    assert preview.state == "success", states(preview)
    (comment,) = [c["body"] for c in sandbox.github.comments.get(number, [])]
    assert "does not validate: the deploy would refuse it" in comment
    assert f"its staging release '{RELEASE}' is 59 characters, more than helm's limit of 53" in comment

    # merged anyway: the deploy refuses at plan, before any pod, and blames no one
    revision = merge_pull(sandbox, number)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["plan"] == "failed", states(run)
    assert states(run)["decide"] == "success" and states(run)["record"] == "failed"  # only the refusal fails
    assert sandbox.k8s.created == []  # no pod of any kind: no build, no status read, no upgrade, no rollback
    attempt = attempt_of(sandbox)
    assert (attempt.revision, attempt.outcome) == (revision, "refused") and attempt.finished_at
    for words in (f"hub '{LONG}' (40 characters)", f"its staging release '{RELEASE}' is 59 characters",
                  "more than helm's limit of 53", "environments[0].release is 'jupyterhub-{hub}-{env}'",
                  f"deployments/{LONG}/hubflow-hub.yaml"):
        assert words in attempt.detail, attempt.detail
    assert statuses(sandbox, revision) == [("hubflow/staging", "error")]
    assert sandbox.ledger().held(revision) is None and sandbox.ledger().holds() == []
    assert revert_pulls(sandbox) == [] and sandbox.github.head("staging") == revision  # nothing reverted
    line = closing_line(sandbox)
    assert "staging: refused: cannot plan" in line and RELEASE in line and "staging is unchanged" in line
    assert any("refused" in m and RELEASE in m for m in sandbox.slack), sandbox.slack
    assert sandbox.github.head("prod") == prod  # prod never heard of it
