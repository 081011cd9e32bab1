"""What makes a range a revert (hubflow's trailer, not a branch name), and which earlier revert PR is reused
(the walk itself, without GitHub: tests/unit/test_reverts.py)."""
from __future__ import annotations

import pytest

from hubflow.clients.github import RevertRefused
from hubflow.core.reverts import REVERTS_TRAILER

PRIMARY = "images/primary/environment.yml"


def receive_packs(emulator):
    return emulator.requests_to("POST", "/git/*/git-receive-pack")


def revert_pulls(emulator):
    return [p for p in emulator.pulls.values() if p["head"].startswith("hubflow/revert-")]


def test_a_feature_branch_named_revert_is_reverted_like_any_other(gh, emulator):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Fix a typo", {PRIMARY: "typo\n"}, branch="revert-typo")["merge_commit_sha"]
    result = gh.revert("staging", good, bad, "datahub failed")
    assert emulator._git("rev-parse", f"{result.branch}^{{tree}}") == emulator._git("rev-parse", f"{good}^{{tree}}")
    assert result.pull.state == "open" and "Fix a typo" in result.pull.title


def test_a_range_with_hubflows_revert_commit_pushed_directly_is_refused(gh, emulator):
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    revert = emulator.push("staging", f"Revert bad\n\nUndoes it.\n\n{REVERTS_TRAILER}: {bad}\n", {PRIMARY: None})
    with pytest.raises(RevertRefused, match=f"holds the revert commit {revert[:12]}; hubflow never reverts a revert"):
        gh.revert("staging", bad, revert, "the revert failed too")
    assert receive_packs(emulator) == [] and revert_pulls(emulator) == []


def test_a_revert_pr_closed_without_merging_is_replaced_by_a_new_one(gh, emulator):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    first = gh.revert("staging", good, bad, "failed")
    emulator.pulls[first.pull.number].update(state="closed")
    second = gh.revert("staging", good, bad, "failed again")
    assert second.pull.number != first.pull.number and second.pull.state == "open"
    assert second.branch == first.branch and len(receive_packs(emulator)) == 1  # the branch was still there
    assert [p["state"] for p in revert_pulls(emulator)] == ["closed", "open"]
    assert gh.revert("staging", good, bad, "failed").pull.number == second.pull.number  # the open one is reused


def test_a_closed_revert_pr_whose_branch_was_deleted_is_pushed_again(gh, emulator):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    first = gh.revert("staging", good, bad, "failed")
    emulator.pulls[first.pull.number].update(state="closed")
    emulator._git("update-ref", "-d", f"refs/heads/{first.branch}")
    second = gh.revert("staging", good, bad, "failed again")
    assert second.pull.state == "open" and second.pull.number != first.pull.number
    assert len(receive_packs(emulator)) == 2 and emulator.head(second.branch)


def test_a_merged_revert_pr_is_reused(gh, emulator):
    good = emulator.head("staging")
    bad = emulator.merge_feature("Bad", {PRIMARY: "bad\n"})["merge_commit_sha"]
    first = gh.revert("staging", good, bad, "failed")
    merged = gh.merge(first.pull.number)
    again = gh.revert("staging", good, bad, "failed")  # e.g. Airflow retried the task after a person merged
    assert (again.pull.number, again.merged_sha, again.pull.merged) == (first.pull.number, merged, True)
    assert len(revert_pulls(emulator)) == 1 and len(receive_packs(emulator)) == 1
