"""Reverts with real git: a merge commit (-m 1), a squash commit, a whole range in one commit, conflicts, retries."""
from __future__ import annotations

import pytest

from hubflow.clients.github import RevertRefused
from hubflow.clients.revert import RevertConflict

PRIMARY = "images/primary/environment.yml"


def tree(emulator, rev):
    return emulator._git("rev-parse", f"{rev}^{{tree}}").strip()


def parents(emulator, rev):
    return emulator._git("rev-list", "--parents", "-n1", rev).split()[1:]


def message(emulator, rev):
    return emulator._git("log", "-n1", "--format=%B", rev)


def receive_packs(emulator):
    return emulator.requests_to("POST", "/git/*/git-receive-pack")


@pytest.mark.parametrize("method", ["merge", "squash"])
def test_revert_of_one_merged_pr(gh, emulator, method):
    good = emulator.head("staging")
    pr = emulator.merge_feature("Add torch", {PRIMARY: "torch\n"}, method=method, author="ada")
    bad = pr["merge_commit_sha"]

    result = gh.revert("staging", good, bad, "datahub: import torch failed", {"Airflow run": "http://airflow/run/3"})

    assert result.branch == f"hubflow/revert-staging-{bad[:7]}"
    revert = emulator.head(result.branch)
    assert parents(emulator, revert) == [bad]  # one plain commit on top of the failed revision
    assert tree(emulator, revert) == tree(emulator, good)
    assert message(emulator, revert).startswith(f'Revert "Add torch" on staging\n\nVerification of {bad[:12]}')
    assert f"#{pr['number']} Add torch (@ada)" in message(emulator, revert)
    pull = emulator.pulls[result.pull.number]
    assert (pull["head"], pull["base"], pull["state"]) == (result.branch, "staging", "open")
    assert "datahub: import torch failed" in pull["body"] and "[Airflow run](http://airflow/run/3)" in pull["body"]
    assert result.merged_sha is None and emulator.head("staging") == bad  # pull_request mode: a person merges


def test_a_failed_batch_is_reverted_in_one_commit_back_to_the_last_good_revision(new_gh, settings, emulator):
    gh = new_gh(settings.model_copy(update={"revert": settings.revert.model_copy(update={"mode": "merge"})}))
    good = emulator.head("staging")
    a = emulator.merge_feature("A", {PRIMARY: "a\n"})
    b = emulator.merge_feature("B", {"hub/values.yaml": "b: 1\n"}, method="squash")
    emulator.push("staging", "direct: C", {"deployments/data8/config/common.yaml": "c: 1\n"})
    d = emulator.merge_feature("D", {"deployments/rhub/hubflow-hub.yaml": None})
    head = d["merge_commit_sha"]

    result = gh.revert("staging", good, head, "2 hubs failed")

    revert = parents(emulator, result.merged_sha)[1]
    assert parents(emulator, revert) == [head]
    assert tree(emulator, revert) == tree(emulator, good)
    text = message(emulator, revert)
    assert all(f"#{p['number']} {p['title']}" in text for p in (a, b, d))
    assert emulator.head("staging") == result.merged_sha and tree(emulator, "staging") == tree(emulator, good)
    assert result.pull.merged and emulator.pulls[result.pull.number]["merged"]


def test_a_revert_that_conflicts_names_the_unmerged_files_and_pushes_nothing(gh, emulator):
    good = emulator.head("staging")
    values = "deployments/data8/config/common.yaml"
    pr = emulator.merge_feature("Pin numpy", {PRIMARY: "numpy=2.1\n", values: "numpy: 2.1\n",
                                              "hub/values.yaml": "x: 1\n"})
    emulator.push("staging", "later change to the same lines", {PRIMARY: "numpy=2.2\n", values: "numpy: 2.2\n"})

    with pytest.raises(RevertConflict, match=f"reverting {pr['merge_commit_sha'][:12]} on 'staging' conflicts with "
                                             f"later changes in {values}, {PRIMARY}; nothing was pushed") as conflict:
        gh.revert("staging", good, pr["merge_commit_sha"], "numpy broke")
    assert conflict.value.files == [values, PRIMARY]  # hub/values.yaml reverts cleanly
    assert receive_packs(emulator) == []
    assert f"hubflow/revert-staging-{pr['merge_commit_sha'][:7]}" not in emulator._git("branch", "--list", "hubflow/*")
    assert [p["number"] for p in emulator.pulls.values()] == [pr["number"]]


def test_revert_keeps_what_merged_after_the_failed_revision(gh, emulator):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    later = emulator.merge_feature("Later", {"hub/values.yaml": "later: 1\n"})["merge_commit_sha"]
    result = gh.revert("staging", good, bad, "bad image")
    revert = emulator.head(result.branch)
    assert parents(emulator, revert) == [later]
    assert emulator._git("show", f"{revert}:{PRIMARY}") == emulator._git("show", f"{good}:{PRIMARY}")
    assert emulator._git("show", f"{revert}:hub/values.yaml") == "later: 1\n"


def test_a_retried_revert_makes_one_branch_and_one_pr(gh, emulator, sleeps):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    emulator.fail("POST", "/repos/datahub/datahub/pulls", status=502, after_effect=True)
    first = gh.revert("staging", good, bad, "failed")
    second = gh.revert("staging", good, bad, "failed")  # e.g. Airflow retried the task
    assert first.pull.number == second.pull.number
    assert len([p for p in emulator.pulls.values() if p["head"].startswith("hubflow/revert-")]) == 1
    assert len(receive_packs(emulator)) == 1 and sleeps == [1.0]


def test_a_pushed_branch_without_pr_is_reused(gh, emulator):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    emulator.fail("POST", "/repos/datahub/datahub/pulls", status=422, message="Validation Failed")
    with pytest.raises(Exception, match="open the revert PR"):
        gh.revert("staging", good, bad, "failed")
    pushed = emulator.head(f"hubflow/revert-staging-{bad[:7]}")
    result = gh.revert("staging", good, bad, "failed")
    assert emulator.head(result.branch) == pushed and len(receive_packs(emulator)) == 1


def test_never_revert_a_revert(new_gh, settings, emulator):
    gh = new_gh(settings.model_copy(update={"revert": settings.revert.model_copy(update={"mode": "merge"})}))
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    result = gh.revert("staging", good, bad, "failed")
    with pytest.raises(RevertRefused, match=f"holds the revert #{result.pull.number}.*never reverts a revert"):
        gh.revert("staging", bad, result.merged_sha, "the revert failed too")
    assert len(receive_packs(emulator)) == 1
