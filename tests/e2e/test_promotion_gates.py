"""Issue 17, scenarios 6 and 7, end to end (dag.test over the sandbox): every promotion passes the same gates and is
recorded, whether hubflow_promote merges it or `promotion.mode: merge` does at the end of a green staging run; and a
promotion is merged only when the merged tree is the tree verified on staging, so that a commit only prod has (the
revert after a failed prod deploy, a hotfix) is named with the one action that recovers, and the line recovers."""
from __future__ import annotations

import yaml

from hubflow.core.promotion import AUTOMATIC
from tests.e2e.conftest import states
from tests.e2e.test_deploy import merge_pull, promotion_pulls, revert_pulls


def settings(box, **promotion) -> None:
    data = yaml.safe_load(box.settings_file.read_text())
    data.setdefault("promotion", {}).update(promotion)
    box.settings_file.write_text(yaml.safe_dump(data))


def prod_head(box) -> str:
    return box.github.head("prod")


def tree(box, rev: str) -> str:
    return box.github._git("rev-parse", f"{rev}^{{tree}}").strip()


def tune(box, hub: str, text: str, title: str | None = None) -> str:
    return box.github.merge_feature(title or f"Tune {hub}", {f"deployments/{hub}/config/common.yaml": text}
                                    )["merge_commit_sha"]


def comments(box, number: int) -> str:
    return "\n".join(c["body"] for c in box.github.comments.get(number, []))


# ---------------------------------------------------------------- 6. merge mode passes the same gates


def test_6_merge_mode_merges_when_every_gate_passes_and_records_it(sandbox):
    sandbox.baseline()
    settings(sandbox, mode="merge", soak_minutes=0)
    revision = tune(sandbox, "rhub", "a: 3\n")
    run = sandbox.run("staging")
    assert run.state == "success", states(run)
    (pr,) = promotion_pulls(sandbox)
    assert pr["merged"] and prod_head(sandbox) == pr["merge_commit_sha"]
    assert tree(sandbox, "prod") == tree(sandbox, revision)
    (p,) = sandbox.ledger().promotions("prod")
    assert (p["outcome"], p["revision"], p["mode"], p["requested_by"]) == ("merged", revision, "merge", AUTOMATIC)
    assert [g["gate"] for g in p["record"]["gates"]] == ["verified", "not held", "not frozen", "newer", "same tree",
                                                         "soak", "mergeable"]
    assert p["record"]["merged"] == pr["merge_commit_sha"] and "every gate passed, merged" in p["detail"]
    assert p["detail"] in comments(sandbox, pr["number"]) and p["detail"] in sandbox.log
    assert sandbox.ledger().last_success("staging").record["promotion"] == "merged"


def test_6_merge_mode_leaves_the_pr_open_while_the_soak_time_runs_and_says_until_when(sandbox):
    sandbox.baseline()
    settings(sandbox, mode="merge", soak_minutes=60)
    revision = tune(sandbox, "rhub", "a: 3\n")
    before = prod_head(sandbox)
    run = sandbox.run("staging")
    assert run.state == "success", states(run)  # staging is verified: that is what this run says, truthfully
    (pr,) = promotion_pulls(sandbox)
    assert pr["state"] == "open" and not pr["merged"] and prod_head(sandbox) == before
    (p,) = sandbox.ledger().promotions("prod")
    assert (p["outcome"], p["revision"], p["requested_by"]) == ("refused", revision, AUTOMATIC)
    assert "the soak time is 60 min: try again after" in p["detail"]
    assert f"PR #{pr['number']} stays open and prod is unchanged" in p["detail"]
    assert [(g["gate"], g["ok"]) for g in p["record"]["gates"]][-1] == ("soak", False)
    assert p["detail"] in comments(sandbox, pr["number"]) and p["detail"] in sandbox.log
    assert any("refused" in m and "soak" in m for m in sandbox.slack)
    assert sandbox.ledger().last_success("staging").record["promotion"] == "refused"


def test_6_merge_mode_never_merges_into_a_frozen_prod(sandbox, monkeypatch):
    sandbox.baseline()
    settings(sandbox, mode="merge")
    monkeypatch.setenv("AIRFLOW_VAR_HUBFLOW_FREEZE_PROD", "exam week")
    before = prod_head(sandbox)
    tune(sandbox, "rhub", "a: 3\n")
    assert sandbox.run("staging").state == "success"
    (pr,) = promotion_pulls(sandbox)
    assert pr["state"] == "open" and not pr["merged"] and prod_head(sandbox) == before
    p = sandbox.ledger().promotions("prod")[0]
    assert p["outcome"] == "refused" and "prod is frozen by hand: exam week" in p["detail"]
    assert p["detail"] in comments(sandbox, pr["number"])


def test_6_merge_mode_with_approval_required_asks_through_hubflow_promote(sandbox):
    sandbox.baseline()
    settings(sandbox, mode="merge", approval="required")
    before = prod_head(sandbox)
    tune(sandbox, "rhub", "a: 3\n")
    assert sandbox.run("staging").state == "success"
    (pr,) = promotion_pulls(sandbox)
    assert pr["state"] == "open" and not pr["merged"] and prod_head(sandbox) == before
    p = sandbox.ledger().promotions("prod")[0]
    assert p["outcome"] == "opened" and "start hubflow_promote (mode merge) to ask the approvers" in p["detail"]
    assert all(g["ok"] for g in p["record"]["gates"])


# ---------------------------------------------------------------- 7. a commit only prod has


def test_7_after_a_failed_prod_deploy_promotions_are_refused_naming_the_revert_until_the_one_action(sandbox):
    sandbox.baseline()
    tune(sandbox, "data8", "jupyterhub: {cpu: 2}\n", "Tune data8")
    assert sandbox.run("staging").state == "success"
    (first,) = promotion_pulls(sandbox)
    merge_pull(sandbox, first["number"])
    # prod's deploy of it fails: rolled back, held, and the merge reverted on prod (revert.mode: merge)
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    sandbox.k8s.script({"hubflow.io/kind": "upgrade", "hubflow.io/env": "prod"}, exit_code=1,
                       logs=["Error: UPGRADE FAILED: data8 needs a GPU node prod lacks"])
    failed = sandbox.run("prod")
    assert failed.state == "failed", states(failed)
    (revert,) = revert_pulls(sandbox)
    assert revert["merged"] and revert["base"] == "prod"
    failure = comments(sandbox, first["number"])
    assert "failed on prod" in failure
    assert "the revert is a commit staging lacks: to recover, merge prod into staging (a PR `prod` -> `staging`)" \
        in failure

    # the next change on staging is verified, and its promotion is refused before anything is merged
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    tune(sandbox, "biology", "jupyterhub: {memory: 4G}\n", "Give biology more memory")
    assert sandbox.run("staging").state == "success"
    before = prod_head(sandbox)
    sandbox.log = ""
    run = sandbox.run_dag("hubflow_promote", mode="merge", reason="weekly promotion")
    assert run.state == "failed" and states(run)["check"] == "failed" and states(run)["merge"] != "success"
    assert prod_head(sandbox) == before
    p = sandbox.ledger().promotions("prod")[0]
    assert p["outcome"] == "refused" and "same tree:" in p["detail"]
    reverted = sandbox.github._git("log", "-1", "--no-merges", "--format=%h", "prod").strip()
    assert "prod has commit(s) staging lacks:" in p["detail"] and reverted[:7] in p["detail"]
    assert "Revert" in p["detail"] and "merge prod into staging (a PR `prod` -> `staging`)" in p["detail"]
    assert p["detail"] in sandbox.log
    assert [x["number"] for x in promotion_pulls(sandbox) if x["head"] == "staging" and x["merged"]] == \
        [first["number"]]  # the new promotion PR stays open

    # the one action: prod merged into staging; staging verifies the combined tree, and the line moves again
    back = sandbox.github.open_pull("prod", "staging", "Bring prod's revert into staging")
    merge_pull(sandbox, back["number"])
    assert sandbox.run("staging").state == "success"
    run = sandbox.run_dag("hubflow_promote", mode="merge", reason="after the realignment")
    assert run.state == "success", states(run)
    p = sandbox.ledger().promotions("prod")[0]
    assert p["outcome"] == "merged" and tree(sandbox, "prod") == tree(sandbox, "staging")
    sandbox.k8s.reset()
    sandbox.upgrades_succeed()
    prod = sandbox.run("prod")
    assert prod.state == "success", states(prod)
    assert "gate passed" in sandbox.log


def test_7_a_hotfix_on_prod_is_named_in_merge_mode_and_the_pr_stays_open(sandbox):
    sandbox.baseline()
    hotfix = sandbox.github.push("prod", "Hotfix: raise data8's cpu limit",
                                 {"deployments/data8/config/common.yaml": "jupyterhub: {cpu: 9}\n"})
    settings(sandbox, mode="merge")
    tune(sandbox, "rhub", "a: 3\n")
    assert sandbox.run("staging").state == "success"
    (pr,) = promotion_pulls(sandbox)
    assert pr["state"] == "open" and not pr["merged"] and prod_head(sandbox) == hotfix
    p = sandbox.ledger().promotions("prod")[0]
    assert p["outcome"] == "refused" and hotfix[:12] in p["detail"] and "Hotfix: raise" in p["detail"]
    assert "merge prod into staging" in p["detail"] and p["detail"] in comments(sandbox, pr["number"])
