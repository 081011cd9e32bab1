"""The git side of a revert: the one thing GitHub's REST API cannot do, done with real git in a temporary clone.

`revert_range` undoes base..head of an environment branch in ONE commit on a new branch and pushes only that
branch: each commit on the first-parent line is reverted (`-m 1` for a merge commit, plain for a squash or direct
commit), newest first, and committed once, so a failed batch of merges returns the branch exactly to the last
good revision. A conflict raises RevertConflict naming the files, and nothing is pushed.

Credentials reach git as an HTTP header in GIT_CONFIG_* environment variables, scoped to the clone URL's host:
never in a URL, an argument or a log line. No Airflow import here.
"""
from __future__ import annotations

import base64
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from hubflow.clients.git import GitError, Repo

log = logging.getLogger(__name__)

AUTHOR = ("hubflow", "hubflow@users.noreply.github.com")
TIMEOUT_SECONDS = 600


class RevertConflict(GitError):
    """Reverting would conflict with what the branch has since; nothing was pushed."""


def auth_env(clone_url: str, token: str | None) -> dict[str, str]:
    """Environment for git that sends `token` to the clone URL's host only (basic auth as x-access-token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_TRACE", "GIT_CURL_VERBOSE"))}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="credential.helper",
               GIT_CONFIG_VALUE_0="")
    parts = urlsplit(clone_url)
    if token and parts.scheme in ("http", "https"):
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="2", GIT_CONFIG_KEY_1=f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
                   GIT_CONFIG_VALUE_1=f"Authorization: Basic {basic}")
    return env


def _remote(args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
    """A git command that talks to the remote; the error keeps git's message, which never holds the header."""
    log.info("git %s", " ".join(args))
    proc = subprocess.run(["git", *args], capture_output=True, env=env, cwd=cwd, timeout=TIMEOUT_SECONDS)
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")


def revert_range(clone_url: str, token: str | None, branch: str, base: str, head: str, new_branch: str,
                 message: str) -> str:
    """Revert base..head of `branch` in one commit pushed as `new_branch`; returns the revert commit's sha."""
    parts = urlsplit(clone_url)
    if parts.password or (parts.username and parts.scheme in ("http", "https")):
        raise GitError("the clone URL must not hold credentials; the token comes from the GitHub connection")
    env = auth_env(clone_url, token)
    with tempfile.TemporaryDirectory(prefix="hubflow-revert-") as tmp:
        path = Path(tmp) / "repo"
        _remote(["clone", "--quiet", "--no-tags", "--single-branch", "--branch", branch, "--", clone_url,
                 str(path)], env)
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
                files = repo.git("diff", "--name-only", "--diff-filter=U").split()
                raise RevertConflict(
                    f"reverting {sha[:12]} on {branch!r} conflicts with later changes in {', '.join(files) or '?'}; "
                    f"nothing was pushed: revert by hand or fix forward") from None
        if not repo.git("diff", "--cached", "--name-only").strip():
            raise GitError(f"reverting {base[:12]}..{head[:12]} changes nothing on {branch!r}: already undone")
        repo.git("commit", "--quiet", "--no-verify", "-F", "-", input=message.encode())
        sha = repo.git("rev-parse", "HEAD").strip()
        _remote(["push", "--quiet", "origin", f"HEAD:refs/heads/{new_branch}"], env, cwd=path)
        log.info("pushed revert %s of %s..%s as %s", sha[:12], base[:12], head[:12], new_branch)
        return sha
