"""What makes a commit one of hubflow's reverts, and the walk that finds one in a failed range (never revert a revert).

Pure: the commits come in as a dict sha -> (parents, message), read by the caller (hubflow.clients.github from
one compare). The trailer decides, not a branch name: a feature branch may be called revert-x.
"""
from __future__ import annotations

import re

REVERTS_TRAILER = "Hubflow-Reverts"  # names the failed head in hubflow's revert commits: what makes a commit a revert
REVERTS_LINE = re.compile(rf"^{re.escape(REVERTS_TRAILER)}: [0-9a-f]{{7,40}}[ \t]*$", re.M)
REVERT_PREFIX = "hubflow/revert-"

Commits = dict[str, tuple[list[str], str]]  # sha -> (parent shas, message)


def revert_branch(env: str, head: str) -> str:
    """The branch (and so the PR) of the revert of `head` on `env`: how a retry finds the revert it already made."""
    return f"{REVERT_PREFIX}{env}-{head[:7]}"


def first_parent_line(commits: Commits, head: str) -> list[str]:
    """The first-parent line of `head` within `commits` (sha -> (parents, message)), newest first."""
    line: list[str] = []
    sha: str | None = head
    while sha in commits:
        line.append(sha)
        parents = commits[sha][0]
        sha = parents[0] if parents else None
    return line


def revert_in(commits: Commits, line: list[str]) -> str | None:
    """The oldest commit of `line` that brings in a commit with hubflow's revert trailer (a revert PR merged,
    squashed or pushed), or None. The trailer decides, not a branch name: a feature branch may be called revert-x.
    """
    seen: set[str] = set()
    for brought_by in reversed(line):
        todo = [brought_by]
        while todo:
            sha = todo.pop()
            if sha in seen or sha not in commits:
                continue
            seen.add(sha)
            if REVERTS_LINE.search(commits[sha][1]):
                return brought_by
            todo += commits[sha][0]
    return None
