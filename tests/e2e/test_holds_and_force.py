"""Issue 17, scenarios 10 and 11, end to end (dag.test over the sandbox, real git and the GitHub emulator; `hubflow`
run as the operator runs it, a process reading the same ledger and repository).

10. A rewritten environment branch is refused with the one action that works (a deploy forced with a reason), and that
    action deploys every hub at the head, is kept in the ledger with who and why, and, when it fails, puts the hubs
    back without reverting anything and says they run what ran before.
11. `hubflow hold` takes the 12 digits `hubflow ledger` prints (or a branch, or any unambiguous name), stores the full
    sha with who and why, and that hold stops the next deploy and the promotion; clearing it is kept too.
"""
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import states
from tests.e2e.test_deploy import merge_pull, promotion_pulls, revert_pulls, statuses
from tests.e2e.test_faults import closing_line

HUBFLOW = Path(sys.executable).parent / "hubflow"
HUBS = ["biology", "data8", "datahub", "rhub"]
MISSING = "hubflow-no-such-package==1.0"


def hubflow(*args: str) -> subprocess.CompletedProcess:
    """The `hubflow` command with the operator's environment (settings, Airflow connections, the mirror's cache)."""
    return subprocess.run([str(HUBFLOW), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ))


def upgraded(box, since: int) -> list[str]:
    return sorted(p["metadata"]["labels"]["hubflow.io/hub"] for p in box.pods("upgrade", "staging")[since:])


def images_the_sandbox_hub_has(box) -> str:
    """Both environments on a revision whose images declare only what the sandbox hub's kernels import (a deploy
    with no base checks every declared package), then baselined there. Returns that revision."""
    box.github.push("staging", "Images the sandbox hub has", {
        "images/primary/environment.yml": "name: primary\ndependencies:\n  - pip:\n    - requests\n",
        "images/datascience/requirements.txt": "requests\n"})
    box.github._git("update-ref", "refs/heads/prod", box.github.head("staging"))
    return box.baseline()


def rewrite_staging(box, onto: str, message: str, files: dict[str, str]) -> str:
    """Someone force-pushes staging back to `onto` and commits `files` there: the deployed merge is gone."""
    box.github._git("update-ref", "refs/heads/staging", onto)
    return box.github.push("staging", message, files)


def deployed_merge(box) -> str:
    revision = box.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml":
                                                       "jupyterhub: {cpu: 3}\n"})["merge_commit_sha"]
    run = box.run("staging")
    assert run.state == "success", states(run)
    return revision


# ---------------------------------------------------------------- 10. a rewritten branch


def test_10_a_rewritten_branch_is_refused_saying_what_works_and_force_deploys_every_hub(sandbox):
    initial = images_the_sandbox_hub_has(sandbox)
    deployed = deployed_merge(sandbox)
    head = rewrite_staging(sandbox, initial, "Tune biology", {"deployments/biology/config/common.yaml":
                                                              "jupyterhub: {memory: 4G}\n"})
    attempts, pods = len(sandbox.ledger().attempts("staging")), len(sandbox.pods("upgrade", "staging"))

    run = sandbox.run("staging")  # what the branch watcher starts
    assert run.state == "failed" and states(run)["resolve"] == "failed" and states(run)["record"] == "failed"
    line = closing_line(sandbox)
    assert f"staging runs {deployed[:12]}, which branch 'staging' no longer contains (head {head[:12]})" in line
    assert "To deploy every hub at the head, trigger hubflow_deploy_staging again with force_reason" in line
    assert "nothing was deployed" in line and "staging is unchanged" in line
    assert upgraded(sandbox, pods) == [] and sandbox.pods("build") == []
    assert len(sandbox.ledger().attempts("staging")) == attempts
    assert sandbox.ledger().last_success("staging").revision == deployed  # what runs, as before
    assert statuses(sandbox, head) == []
    assert any("no longer contains" in m and "force_reason" in m for m in sandbox.slack), sandbox.slack

    run = sandbox.run("staging", force_reason="INC-4: staging reset to drop a leaked key")  # the advice, followed
    assert run.state == "success", states(run)
    assert upgraded(sandbox, pods) == HUBS  # data8 runs `deployed` and biology changed: no diff can tell, so all
    assert sandbox.pods("build") == []  # every image's content tag is in the registry already
    assert "no longer contains (rewritten): forced by" in sandbox.log
    attempt = sandbox.ledger().attempts("staging")[0]
    assert (attempt.revision, attempt.outcome) == (head, "success")
    assert attempt.force_reason == "INC-4: staging reset to drop a leaked key" and attempt.forced_by
    assert sorted(h["name"] for h in attempt.record["plan"]["hubs"]) == HUBS
    assert statuses(sandbox, head) == [("hubflow/staging", "success")]
    assert f"staging now runs {head[:12]}" in closing_line(sandbox)
    listed = hubflow("ledger", "--env", "staging")
    assert listed.returncode == 0, listed.stderr
    assert f"[forced by {attempt.forced_by}: INC-4: staging reset to drop a leaked key]" in listed.stdout
    assert len(promotion_pulls(sandbox)) == 1 and head in promotion_pulls(sandbox)[0]["body"]

    pods = len(sandbox.pods("upgrade", "staging"))  # the branch is a range again: a merge deploys what it changes
    sandbox.github.merge_feature("Tune rhub", {"deployments/rhub/config/common.yaml": "jupyterhub: {cpu: 1}\n"})
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    assert upgraded(sandbox, pods) == ["rhub"]


def test_10_a_forced_run_that_fails_puts_the_hubs_back_reverts_nothing_and_says_what_runs(sandbox):
    initial = images_the_sandbox_hub_has(sandbox)
    deployed = deployed_merge(sandbox)
    head = rewrite_staging(sandbox, initial, "Add a package", {"images/datascience/requirements.txt":
                                                               f"requests\n{MISSING}\n"})
    pods = len(sandbox.pods("upgrade", "staging"))
    run = sandbox.run("staging", force_reason="INC-4: staging reset")
    assert run.state == "failed"
    assert upgraded(sandbox, pods) == HUBS
    assert [p["metadata"]["labels"]["hubflow.io/image"] for p in sandbox.pods("build")] == ["datascience"]
    assert sorted(p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("rollback")) == HUBS
    assert MISSING.split("==")[0] in sandbox.log
    assert revert_pulls(sandbox) == [] and sandbox.github.head("staging") == head  # the branch is left as it is
    assert sandbox.ledger().held(head).startswith("verification failed: hub biology")
    assert statuses(sandbox, head) == [("hubflow/staging", "failure")]
    line = closing_line(sandbox)
    assert f"staging: {head[:12]} FAILED at verify" in line and f"{head[:12]} is held" in line
    assert f"no revert on it leads back to {deployed[:12]}" in line and "force_reason" in line
    assert f"staging runs {deployed[:12]} again" in line and "first deploy" not in line
    attempt = sandbox.ledger().attempts("staging")[0]
    assert (attempt.revision, attempt.outcome, attempt.force_reason) == (head, "stopped", "INC-4: staging reset")
    assert f"staging runs {deployed[:12]} again" in attempt.detail
    assert sandbox.ledger().last_success("staging").revision == deployed


# ---------------------------------------------------------------- 11. holds by what people type


def test_11_a_hold_by_the_sha_the_ledger_prints_stops_the_next_deploy_and_the_promotion(sandbox):
    baseline = sandbox.baseline()
    revision = deployed_merge(sandbox)
    (promotion,) = promotion_pulls(sandbox)
    short = revision[:12]

    listed = hubflow("ledger", "--env", "staging")  # an incident: the operator reads the ledger, holds what it says
    assert listed.returncode == 0 and short in listed.stdout
    unknown = hubflow("hold", "no-such-branch", "--reason", "INC-9")
    assert unknown.returncode == 2 and "unknown revision 'no-such-branch'" in unknown.stderr
    out = hubflow("hold", short, "--reason", "INC-9: kernels die on data8", "--by", "alice")
    assert out.returncode == 0, out.stderr
    assert f"held {revision} ({short}) by alice" in out.stdout
    (hold,) = sandbox.ledger().holds()
    assert (hold["revision"], hold["held_by"], hold["reason"]) == (revision, "alice", "INC-9: kernels die on data8")
    assert f"held: {short} (staging) since " in hubflow("ledger").stdout

    merge_pull(sandbox, promotion["number"])  # someone merges the promotion PR anyway
    run = sandbox.run("prod")
    assert run.state == "failed" and states(run)["resolve"] == "failed"
    assert sandbox.pods("upgrade", "prod") == []
    line = closing_line(sandbox)
    assert f"still contains held revision {short} (INC-9: kernels die on data8)" in line
    assert f"`hubflow hold --clear {short} --reason WHY`" in line and "prod is unchanged" in line
    assert sandbox.ledger().last_success("prod").revision == baseline

    run = sandbox.run_dag("hubflow_promote", revision=revision)  # nor does the promote DAG move it
    assert run.state == "failed"
    assert sandbox.ledger().promotions("prod")[0]["outcome"] == "refused"
    assert "INC-9: kernels die on data8" in sandbox.ledger().promotions("prod")[0]["detail"]

    out = hubflow("hold", "--clear", short, "--reason", "INC-9: a node fault, not the revision", "--by", "bob")
    assert out.returncode == 0 and f"cleared the hold on {revision}" in out.stdout  # the advice works as printed
    assert sandbox.ledger().holds() == []
    (cleared,) = sandbox.ledger().cleared_holds()
    assert (cleared["held_by"], cleared["cleared_by"], cleared["clear_reason"]) == (
        "alice", "bob", "INC-9: a node fault, not the revision")
    run = sandbox.run("prod")
    assert run.state == "success", states(run)
    assert [p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("upgrade", "prod")] == ["data8"]
