"""What hubflow writes on GitHub (hubflow.core.texts), without GitHub: PR bodies, the revert's texts, markers and
the commit status description. The same texts are checked as GitHub receives them in tests/github."""
from __future__ import annotations

from collections import namedtuple

import pytest

from hubflow.core import texts
from hubflow.core.reverts import REVERTS_TRAILER

Pull = namedtuple("Pull", "number title author merge_commit_sha")  # what the texts read of clients.github.Pull
TITLE = "Fix `x` </script> **bold** {{ 7*7 }} @channel"


def test_a_status_description_is_one_line_within_githubs_limit():
    assert texts.trim_description("deploying\n 4 hubs") == "deploying 4 hubs"
    long = texts.trim_description("line one\nline two " + "x" * 300)
    assert len(long) == 140 and long.startswith("line one line two xx") and long.endswith("…")


def test_a_marker_is_hidden_and_refuses_keys_that_could_end_it():
    assert texts.marker("staging:abc") == "<!-- hubflow:staging:abc -->"
    assert texts.marked("Deployed", "prod:abc") == "Deployed\n\n<!-- hubflow:prod:abc -->"
    with pytest.raises(ValueError, match="key 'x --> <script>' may hold only"):
        texts.marker("x --> <script>")


def test_the_promotion_body_names_the_revision_evidence_and_pulls():
    body = texts.promotion_body("staging", "prod", "a" * 40, "a" * 40, {"datahub smoke": "http://airflow/run/7"},
                                [Pull(3, "Add a hub", "ada", "c" * 40)])
    assert f"`{'a' * 40}`" in body and "not verified yet" not in body
    assert "- [datahub smoke](http://airflow/run/7)" in body and "- #3 `Add a hub` (@ada)" in body
    moved = texts.promotion_body("staging", "prod", "a" * 40, "b" * 40, {}, [])
    assert "not verified yet" in moved and "- (none)" in moved and "- (none: direct commits only)" in moved
    assert texts.promotion_title("staging", "prod", "0123456789") == "Promote staging to prod (0123456)"


def test_pr_titles_are_code_spans_in_markdown_and_plain_in_the_commit_message():
    pull = Pull(7, TITLE, "ada", "d" * 40)
    title, message, body = texts.revert_texts("staging", "staging", "a" * 40, "b" * 40, [pull], "hub failed\n", {})
    assert title == f'Revert "{TITLE}" on staging'
    assert f"- #7 ``{TITLE}`` (@ada) ddddddd" in body
    assert f"- #7 {TITLE} (@ada) ddddddd" in message
    assert message.endswith(f"\n\n{REVERTS_TRAILER}: {'b' * 40}\n")


def test_a_batch_revert_names_every_merge_and_the_range():
    pulls = [Pull(1, "A", "ada", None), Pull(2, "B", "bo", "e" * 40)]
    title, message, body = texts.revert_texts("prod", "prod", "a" * 40, "b" * 40, pulls, "failed", {"run": "http://r"})
    assert title == "Revert prod to aaaaaaa: undo 2 changes"
    assert "- #1 `A` (@ada)\n- #2 `B` (@bo) eeeeeee" in body and "- [run](http://r)" in body
    assert f"This returns prod to {'a' * 40} (undoes aaaaaaaaaaaa..bbbbbbbbbbbb)." in message
    direct = texts.revert_texts("prod", "prod", "a" * 40, "b" * 40, [], "failed", {})
    assert direct[0] == "Revert prod to aaaaaaa: undo the changes" and "- aaaaaaaaaaaa..bbbbbbbbbbbb" in direct[2]
