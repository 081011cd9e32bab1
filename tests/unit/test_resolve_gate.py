"""resolve and gate on a real repository and ledger: newest head wins, holds, freezes, the prod gate."""
import datetime as dt

import pytest

from hubflow.clients.git import Repo
from hubflow.clients.ledger import Ledger
from hubflow.core import deploy
from hubflow.core.settings import load_settings
from sandbox.sample_repo import commit, git, make_sample_repo


@pytest.fixture
def world(tmp_path):
    root = make_sample_repo(tmp_path / "deploy")
    settings = load_settings()
    return root, Repo(root), Ledger(f"sqlite:///{tmp_path}/ledger.db"), settings


def deployed(ledger, env, sha, tree="t"):
    a = ledger.start(env, sha, None, tree, None)
    ledger.finish(a, "success")


def test_first_run_targets_the_head_with_no_base(world):
    root, repo, ledger, settings = world
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    assert t.revision == git(root, "rev-parse", "staging").strip()
    assert t.base is None and t.skip is None
    assert t.tree == git(root, "rev-parse", "staging^{tree}").strip()


def test_newest_head_wins_and_covers_the_range(world):
    root, repo, ledger, settings = world
    first = git(root, "rev-parse", "HEAD").strip()
    deployed(ledger, "staging", first)
    one = commit(root, "one", {"deployments/data8/config/common.yaml": "a: 1\n"})
    two = commit(root, "two", {"deployments/biology/config/common.yaml": "a: 2\n"})
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger, requested=one)
    assert (t.revision, t.base) == (two, first)


def test_already_deployed_is_skipped(world):
    root, repo, ledger, settings = world
    deployed(ledger, "staging", git(root, "rev-parse", "HEAD").strip())
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    assert "already deployed" in t.skip


def test_requested_revision_must_be_on_the_branch(world):
    root, repo, ledger, settings = world
    git(root, "checkout", "-q", "-b", "feature")
    side = commit(root, "side", {"x": "1"})
    git(root, "checkout", "-q", "staging")
    with pytest.raises(deploy.Refused, match="is not on branch 'staging'"):
        deploy.resolve(settings, settings.environment("staging"), repo, ledger, requested=side)


def test_held_head_is_skipped_and_a_held_revision_in_the_range_refused(world):
    root, repo, ledger, settings = world
    deployed(ledger, "staging", git(root, "rev-parse", "HEAD").strip())
    bad = commit(root, "bad", {"images/primary/requirements.txt": "nope==1\n"})
    ledger.hold(bad, "staging", "smoke failed: nope missing")
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    assert t.skip == f"{bad[:12]} is held: smoke failed: nope missing"
    commit(root, "later", {"deployments/data8/config/common.yaml": "a: 1\n"})
    with pytest.raises(deploy.Refused, match=f"still contains held revision {bad[:12]}"):
        deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    git(root, "revert", "--no-edit", bad)
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    assert t.skip is None and t.reverts == [bad]


def test_freeze_switch_and_window(world):
    root, repo, ledger, settings = world
    with pytest.raises(deploy.Refused, match="frozen by hand: exams"):
        deploy.resolve(settings, settings.environment("prod"), repo, ledger, freeze_switch="exams")
    now = dt.datetime.now(dt.timezone.utc)
    env = type(settings.environment("prod")).model_validate({
        **settings.environment("prod").model_dump(),
        "freeze_windows": [{"start": now - dt.timedelta(hours=1), "end": now + dt.timedelta(hours=1),
                            "reason": "winter break"}]})
    with pytest.raises(deploy.Refused, match="frozen until .*winter break"):
        deploy.resolve(settings, env, repo, ledger)


def test_prod_gate_matches_verified_staging_trees(world):
    root, repo, ledger, settings = world
    prod = settings.environment("prod")
    target = deploy.resolve(settings, prod, repo, ledger)
    with pytest.raises(deploy.Refused, match="matches no revision verified on staging"):
        deploy.gate(settings, prod, target, ledger)
    assert deploy.gate(settings, prod, target, ledger, force_reason="hotfix") is None
    deployed(ledger, "staging", "s" * 40, tree=target.tree)
    assert deploy.gate(settings, prod, target, ledger) == "s" * 40
    assert deploy.gate(settings, settings.environment("staging"), target, ledger) is None


def test_a_range_that_reverts_a_failed_run_redeploys_what_it_touched(world):
    root, repo, ledger, settings = world
    good = git(root, "rev-parse", "HEAD").strip()
    deployed(ledger, "staging", good)
    bad = commit(root, "bad", {"deployments/biology/config/common.yaml": "broken: true\n"})
    failed = ledger.start("staging", bad, good, None, "run-bad")
    ledger.update(failed, plan={"hubs": [{"name": "biology"}]})
    ledger.finish(failed, "failed", "verification failed")
    ledger.hold(bad, "staging", "verification failed")
    git(root, "revert", "--no-edit", bad)
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    p = deploy.plan(settings, repo, t, ledger)
    assert {h.name: h.reason for h in p.hubs} == {
        "biology": f"redeploy: touched by the failed run of {bad[:12]}, which this range reverts"}


def test_a_verified_revision_whose_promotion_is_owed_is_caught_up_not_redeployed(world):
    root, repo, ledger, settings = world
    head = git(root, "rev-parse", "HEAD").strip()
    a = ledger.start("staging", head, None, "t", None)
    ledger.update(a, promotion="owed")
    ledger.finish(a, "success")
    t = deploy.resolve(settings, settings.environment("staging"), repo, ledger)
    assert "already deployed" in t.skip and t.owed == a
    ledger.update(a, promotion="opened")
    assert deploy.resolve(settings, settings.environment("staging"), repo, ledger).owed is None
    b = ledger.start("prod", head, None, "t", None)
    ledger.update(b, promotion="owed")
    ledger.finish(b, "success")
    assert deploy.resolve(settings, settings.environment("prod"), repo, ledger).owed is None  # the last env


def test_the_canaries_the_plan_deploys_go_first_and_the_rest_after(world):
    from hubflow.core.plan import deploy_waves, make_plan

    root, repo, _, _ = world
    base = git(root, "rev-parse", "HEAD").strip()
    head = commit(root, "chart", {"hub/values.yaml": "jupyterhub: {x: 1}\n"})
    p = make_plan(repo, base, head, "hubflow-fleet.yaml")
    hubs = [h.name for h in p.hubs]
    assert deploy_waves(p, ["rhub", "data8"]) == {"canary": [h for h in hubs if h in ("rhub", "data8")],
                                                  "rest": [h for h in hubs if h not in ("rhub", "data8")]}
    assert deploy_waves(p, []) == {"canary": [], "rest": hubs}
    one = make_plan(repo, head, commit(root, "one", {"deployments/data8/config/common.yaml": "a: 1\n"}),
                    "hubflow-fleet.yaml")
    assert deploy_waves(one, ["rhub"]) == {"canary": [], "rest": ["data8"]}  # a canary this plan leaves alone


def test_a_canary_the_fleet_does_not_know_is_refused_by_name(world):
    from hubflow.core.plan import PlanError, deploy_waves, make_plan

    root, repo, _, _ = world
    p = make_plan(repo, None, git(root, "rev-parse", "HEAD").strip(), "hubflow-fleet.yaml")
    with pytest.raises(PlanError, match=r"deploy.canary names hub\(s\) the fleet does not have at \w{12}: "
                                        r"datahbu, physics; its hubs are .*datahub"):
        deploy_waves(p, ["datahbu", "data8", "physics"])
