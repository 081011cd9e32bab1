"""What hubflow writes on GitHub for a promotion and a revert: PR titles and bodies, the revert's commit message, the
hidden markers that find a comment or an issue again, and the one-line commit status description.

Pure text, no I/O; hubflow.clients.github sends it. Titles of other people's PRs are user-controlled: in Markdown
they are code spans (hubflow.core.messages.code_span), in the plain-text commit message they stay as written.
(The outcome's Slack message is in hubflow.core.messages; the failure comment, the preview comment and the nightly
issue are written by core.deploy, core.preview and core.nightly.)
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hubflow.core.messages import code_span
from hubflow.core.reverts import REVERTS_TRAILER

if TYPE_CHECKING:
    from hubflow.clients.github import Pull

DESCRIPTION_LIMIT = 140  # GitHub refuses longer commit status descriptions
REOPENED = "The problems are back: reopened by hubflow."  # the comment on an issue hubflow reopens


def trim_description(text: str) -> str:
    """One line within GitHub's 140 characters for a commit status description."""
    line = " ".join(text.split())
    return line if len(line) <= DESCRIPTION_LIMIT else line[:DESCRIPTION_LIMIT - 1] + "…"


def marker(key: str) -> str:
    """The hidden marker that finds a comment or an issue again (a retry then never posts a second one).
    ValueError when `key` holds anything that could end the HTML comment early."""
    if not re.fullmatch(r"[A-Za-z0-9_.:/-]+", key):
        raise ValueError(f"key {key!r} may hold only letters, digits and _ . : / -")
    return f"<!-- hubflow:{key} -->"


def marked(body: str, key: str) -> str:
    """`body` with the marker of `key` at its end: the text of a comment or an issue kept under that key."""
    return f"{body}\n\n{marker(key)}"


def pull_line(p: Pull, markdown: bool = True) -> str:
    """One merged PR in a list; in Markdown the title is a code span (it may hold markup, HTML or {{ }}), while
    "#123" stays plain so that GitHub links it."""
    return f"- #{p.number} {code_span(p.title) if markdown else p.title} (@{p.author})"


def promotion_title(source: str, target: str, revision: str) -> str:
    return f"Promote {source} to {target} ({revision[:7]})"


def promotion_body(source: str, target: str, revision: str, source_head: str, evidence: dict[str, str],
                   pulls: list[Pull]) -> str:
    """The promotion PR's body: the verified revision (and a warning when the source moved on), the evidence
    (label -> URL) and the merged PRs the target lacks."""
    lines = [f"Promotes **{source}** to **{target}**, opened and kept up to date by hubflow.", "",
             f"Verified revision on {source}: `{revision}`"]
    if source_head != revision:
        lines.append(f"> {source} has moved on to `{source_head}`, which is not verified yet: hubflow merges this PR "
                     f"only while its head is the verified revision.")
    lines += ["", "Evidence:"] + ([f"- [{label}]({url})" for label, url in evidence.items()] or ["- (none)"])
    lines += ["", f"Pull requests {target} does not have yet:"]
    lines += [pull_line(p) for p in pulls] or ["- (none: direct commits only)"]
    return "\n".join(lines) + "\n"


def diverged(source: str, target: str, revision: str, tree: str, only_target: list[str], conflicts: list[str] | None,
             source_branch: str, target_branch: str) -> str:
    """The "same tree" gate's refusal: merging `revision` into the target would not give the tree verified on the
    source, because the target has commits the source lacks (`only_target`: "sha subject" lines, newest first; a
    revert after a failed deploy, a hotfix). Names them and the one action that recovers."""
    named = ", ".join(f"{line.split(' ', 1)[0][:12]} {code_span(line.split(' ', 1)[1] if ' ' in line else '')}"
                      for line in only_target[:5]) + (f" and {len(only_target) - 5} more" if len(only_target) > 5
                                                       else "")
    what = (f"merging it into {target} conflicts in {', '.join(conflicts[:5]) or '?'}" if conflicts is not None
            else f"merging it into {target} would not give the tree verified on {source} ({tree[:12]})")
    return (f"{revision[:12]}: {what}: {target} has commit(s) {source} lacks: {named or '(merge commits only)'}; "
            f"{realign(source, target, source_branch, target_branch)}")


def realign(source: str, target: str, source_branch: str, target_branch: str) -> str:
    """The one action that lets promotions through again after a commit only the target has."""
    return (f"to recover, merge {target} into {source} (a PR `{target_branch}` -> `{source_branch}`): {source} then "
            f"verifies what {target} has together with its own changes, and the next promotion passes")


def revert_texts(env: str, branch: str, base: str, head: str, pulls: list[Pull], reason: str,
                 links: dict[str, str]) -> tuple[str, str, str]:
    """(PR title, commit message, PR body) of a revert; every merge it undoes is named. The commit message ends
    with hubflow's revert trailer (hubflow.core.reverts), which is what makes the commit a revert."""
    if len(pulls) == 1:
        title = f'Revert "{pulls[0].title}" on {env}'
    else:
        title = f"Revert {branch} to {base[:7]}: undo {len(pulls) or 'the'} change{'s' * (len(pulls) != 1)}"

    def undone(markdown: bool) -> list[str]:  # the commit message is plain text, the PR body Markdown
        return [pull_line(p, markdown) + (f" {p.merge_commit_sha[:7]}" if p.merge_commit_sha else "") for p in pulls]
    why = f"Verification of {head[:12]} on {env} failed:\n{reason.strip()}"
    message = "\n".join([title, "", why, "", f"This returns {branch} to {base} (undoes {base[:12]}..{head[:12]}).",
                         *(["", "Undoes:", *undone(False)] if pulls else []), "", f"{REVERTS_TRAILER}: {head}"]) + "\n"
    body = "\n".join([f"hubflow reverts what failed on **{env}** so that `{branch}` returns to the last good "
                      f"revision `{base}`.", "", why, "", "Undoes:", *(undone(True) or [f"- {base[:12]}..{head[:12]}"]),
                      *(["", "Links:", *[f"- [{k}]({v})" for k, v in links.items()]] if links else [])]) + "\n"
    return title, message, body
