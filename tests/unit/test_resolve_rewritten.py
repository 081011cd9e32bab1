"""A rewritten environment branch (issue 17, scenario 10): refused with advice that works, and that advice (a deploy
forced with a reason) deploys every hub at the head, puts the hubs back on a failure without reverting anything, and
says what runs: on a real repository and ledger, without Airflow."""
import pytest

from hubflow.clients.git import Repo
from hubflow.clients.ledger import Ledger
from hubflow.core import deploy
from hubflow.core.outcomes import Conclusion, Outcome, Release, Step
from hubflow.core.settings import load_settings
from sandbox.sample_repo import commit, git, make_sample_repo


@pytest.fixture
def world(tmp_path):
    root = make_sample_repo(tmp_path / "deploy")
    settings = load_settings()
    return root, Repo(root), Ledger(f"sqlite:///{tmp_path}/ledger.db"), settings


def deployed(ledger, env, sha):
    a = ledger.start(env, sha, None, "t", None)
    ledger.finish(a, "success")


def rewrite(root):
    """staging gets a commit that is deployed, then is reset and given another one: (deployed, new head)."""
    first = git(root, "rev-parse", "HEAD").strip()
    gone = commit(root, "tune data8", {"deployments/data8/config/common.yaml": "a: 1\n"})
    git(root, "reset", "-q", "--hard", first)
    head = commit(root, "tune biology", {"deployments/biology/config/common.yaml": "a: 2\n"})
    return gone, head


def test_a_rewritten_branch_is_refused_with_the_advice_that_works(world):
    root, repo, ledger, settings = world
    gone, head = rewrite(root)
    deployed(ledger, "staging", gone)
    with pytest.raises(deploy.Refused) as refused:
        deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    said = str(refused.value)
    assert f"staging runs {gone[:12]}, which branch 'staging' no longer contains (head {head[:12]})" in said
    assert "nothing was deployed" in said
    assert "trigger hubflow_deploy_staging again with force_reason" in said
    assert "deploy every hub" in said


def test_forced_it_deploys_every_hub_at_the_head_from_no_base(world):
    root, repo, ledger, settings = world
    gone, head = rewrite(root)
    deployed(ledger, "staging", gone)
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger, force_reason="INC-4: reset staging")
    assert (t.revision, t.base, t.rewritten, t.skip) == (head, None, gone, None)
    assert deploy.Target.from_dict(t.to_dict()) == t
    p = deploy.plan(settings, repo, t, ledger)
    fleet = {h.name for h in p.fleet.hubs}
    assert {h.name for h in p.hubs} == fleet and len(fleet) == 4  # data8 (runs `gone`) and biology alike


def test_forced_with_the_deployed_commit_gone_from_the_repository_too(world, tmp_path):
    """A fresh mirror holds no commit the branch lost: the same refusal, and force deploys every hub."""
    root, repo, ledger, settings = world
    deployed(ledger, "staging", "0" * 40)
    with pytest.raises(deploy.Refused, match="no longer contains"):
        deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger, force_reason="lost history")
    assert (t.base, t.rewritten) == (None, "0" * 40)


def test_force_changes_nothing_on_a_branch_that_was_not_rewritten(world):
    root, repo, ledger, settings = world
    first = git(root, "rev-parse", "HEAD").strip()
    deployed(ledger, "staging", first)
    head = commit(root, "tune data8", {"deployments/data8/config/common.yaml": "a: 1\n"})
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger, force_reason="hotfix")
    assert (t.revision, t.base, t.rewritten) == (head, first, None)
    assert deploy.Target.from_dict({k: v for k, v in t.to_dict().items() if k != "rewritten"}) == t  # old XComs


def test_a_forced_rewritten_run_still_refuses_a_held_revision_it_carries(world):
    root, repo, ledger, settings = world
    gone, head = rewrite(root)
    deployed(ledger, "staging", gone)
    ledger.hold(head, "staging", "verification failed")
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger, force_reason="INC-4")
    assert t.skip == f"{head[:12]} is held: verification failed"
    later = commit(root, "later", {"deployments/rhub/config/common.yaml": "a: 3\n"})
    with pytest.raises(deploy.Refused, match=f"{later[:12]} still contains held revision {head[:12]}"):
        deploy.resolve(settings, settings.environment("staging"), repo, ledger, force_reason="INC-4")


def failed(hubs):
    return Conclusion(Outcome.FAILED, "verify", "verification failed: hub biology: packages: x missing",
                      [Release(h, True, 3, 4, "deployed") for h in hubs])


def test_a_failed_forced_run_holds_reverts_nothing_and_says_the_hubs_run_what_ran_before(world):
    root, repo, ledger, settings = world
    gone, head = rewrite(root)
    deployed(ledger, "staging", gone)
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger, force_reason="INC-4")
    c = failed(["biology", "data8"])
    after = deploy.aftermath(c, t)
    assert (after.hold, after.revert, after.state) == (True, False, Outcome.STOPPED)
    assert f"no revert on it leads back to {gone[:12]}" in after.note and "force_reason" in after.note
    planned = deploy.Planned(1, {"hubs": [{"name": "biology"}, {"name": "data8"}]}, {"canary": [], "rest": []})
    outcome, line = deploy.final("staging", t, planned, c, after, deploy.Paths(failure=True),
                                 {"biology": Step.DONE, "data8": Step.DONE})
    assert outcome is Outcome.STOPPED
    assert f"staging runs {gone[:12]} again" in line and "first deploy" not in line
    assert f"{head[:12]} is held" in line
    outcome, line = deploy.final("staging", t, planned, None, None, deploy.Paths(), {})
    assert outcome is Outcome.UNKNOWN and f"may run {head[:12]} or {gone[:12]}" in line
