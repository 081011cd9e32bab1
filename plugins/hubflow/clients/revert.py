"""The git side of a revert: the one thing GitHub's REST API cannot do, done with real git in a temporary clone.

`revert_range` undoes base..head of an environment branch in ONE commit on a new branch and pushes only that
branch: each commit on the first-parent line is reverted (`-m 1` for a merge commit, plain for a squash or direct
commit), newest first, and committed once, so a failed batch of merges returns the branch exactly to the last
good revision. A conflict raises RevertConflict naming the files, and nothing is pushed.

Credentials reach git through git.auth_env and every git call goes through git.run_git. No Airflow import here.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from hubflow.clients.git import NETWORK_TIMEOUT, GitError, Repo, auth_env, run_git

log = logging.getLogger(__name__)

AUTHOR = ("hubflow", "hubflow@users.noreply.github.com")


class RevertConflict(GitError):
    """Reverting would conflict with what the branch has since; nothing was pushed. `files` are the unmerged paths."""

    def __init__(self, message: str, files: list[str]):
        super().__init__(message)
        self.files = files


def revert_range(clone_url: str, token: str | None, branch: str, base: str, head: str, new_branch: str,
                 message: str) -> str:
    """Revert base..head of `branch` in one commit pushed as `new_branch`; returns the revert commit's sha."""
    env = auth_env(clone_url, token)
    with tempfile.TemporaryDirectory(prefix="hubflow-revert-") as tmp:
        path = Path(tmp) / "repo"
        run_git(["clone", "--quiet", "--no-tags", "--single-branch", "--branch", branch, "--", clone_url, str(path)],
                env=env, timeout=NETWORK_TIMEOUT, what=f"cloning {branch!r} to revert")
        repo = Repo(path)
        base, head = repo.resolve(base, head)
        if not repo.is_ancestor(head, "HEAD"):
            raise GitError(f"{head[:12]} is not on branch {branch!r}")
        if not repo.is_ancestor(base, head):
            raise GitError(f"{base[:12]} is not an ancestor of {head[:12]} on {branch!r}: no range to revert")
        line = repo.git("rev-list", "--first-parent", f"{base}..{head}").split()
        if not line:
            raise GitError(f"nothing to revert: {base[:12]} and {head[:12]} are the same revision")
        repo.git("config", "user.name", AUTHOR[0])
        repo.git("config", "user.email", AUTHOR[1])
        for sha in line:
            parents = repo.git("rev-list", "--parents", "-n1", sha).split()[1:]
            try:
                repo.git("revert", "--no-commit", *(["-m", "1"] if len(parents) > 1 else []), sha)
            except GitError:
                files = repo.git("diff", "--name-only", "-z", "--diff-filter=U").split("\0")[:-1]
                if not files:
                    raise  # git refused for another reason: its own message says which
                raise RevertConflict(
                    f"reverting {sha[:12]} on {branch!r} conflicts with later changes in {', '.join(files)}; "
                    f"nothing was pushed: revert by hand or fix forward", files) from None
        if not repo.git("diff", "--cached", "--name-only").strip():
            raise GitError(f"reverting {base[:12]}..{head[:12]} changes nothing on {branch!r}: already undone")
        repo.git("commit", "--quiet", "--no-verify", "-F", "-", input=message.encode())
        sha = repo.git("rev-parse", "HEAD").strip()
        run_git(["push", "--quiet", "origin", f"HEAD:refs/heads/{new_branch}"], cwd=path, env=env,
                timeout=NETWORK_TIMEOUT, what=f"pushing the revert as {new_branch!r}")
        log.info("pushed revert %s of %s..%s as %s", sha[:12], base[:12], head[:12], new_branch)
        return sha
