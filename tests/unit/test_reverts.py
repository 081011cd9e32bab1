"""The revert walk of hubflow.core.reverts, without GitHub: what makes a range hold one of hubflow's reverts."""
from __future__ import annotations

from hubflow.core.reverts import REVERTS_TRAILER, first_parent_line, revert_branch, revert_in


def test_the_trailer_counts_only_as_a_line_of_its_own():
    commits = {"b": (["a"], f"Mention {REVERTS_TRAILER}: abcdef1 in prose"), "a": ([], "first")}
    assert revert_in(commits, first_parent_line(commits, "b")) is None
    commits["c"] = (["b", "r"], "Merge pull request #9 from datahub/hubflow/revert-staging-abcdef1")
    commits["r"] = (["a"], f"Revert\n\n{REVERTS_TRAILER}: {'a' * 40}")
    assert first_parent_line(commits, "c") == ["c", "b", "a"]
    assert revert_in(commits, first_parent_line(commits, "c")) == "c"  # the merge that brought the revert in


def test_the_first_parent_line_stops_where_the_range_ends():
    commits = {"c": (["b", "f"], "merge"), "b": (["a"], "direct"), "f": (["a"], "feature")}  # "a" is the base
    assert first_parent_line(commits, "c") == ["c", "b"]
    assert first_parent_line(commits, "z") == []


def test_the_oldest_commit_that_brings_a_revert_in_is_named():
    revert = f"Revert\n\n{REVERTS_TRAILER}: {'b' * 40}\n"
    commits = {"d": (["c"], revert), "c": (["b"], revert), "b": (["a"], "fine")}
    assert revert_in(commits, first_parent_line(commits, "d")) == "c"


def test_a_revert_branch_is_named_by_environment_and_short_head():
    assert revert_branch("staging", "0123456789abcdef") == "hubflow/revert-staging-0123456"
