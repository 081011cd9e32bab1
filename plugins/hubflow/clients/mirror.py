"""A bare mirror of the deployment repository on the worker: the plan, the gate and the ledger read git from here.

Fetching into one cached bare repository is cheap after the first time and needs no checkout. A file lock keeps two
tasks on one worker from fetching into it at once. The token reaches git as an extra header in GIT_CONFIG_*
environment variables (revert.auth_env), never in the URL, so nothing secret lands in a log or on disk.
"""
from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

from hubflow.core.config import Settings
from hubflow.clients.git import GitError, Repo
from hubflow.clients.revert import auth_env


def cache_dir() -> Path:
    return Path(os.environ.get("HUBFLOW_CACHE", Path.home() / ".cache" / "hubflow"))


def sync(settings: Settings, token: str | None = None, root: Path | None = None, have: str | None = None) -> Repo:
    """Fetch every branch of the deployment repository into the local mirror and return it.

    With `have` (a full sha the caller needs, e.g. the run's target), a mirror that already holds that commit is
    used as it is: the many verify tasks of a run then cost one fetch per worker, not one each.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.repository.github.replace("/", "__"))
    path = (root or cache_dir()) / f"{name}.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    env = auth_env(settings.repository.clone_url, token)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "HEAD").exists():
            _git(env, "creating the mirror", "init", "-q", "--bare", str(path))
        elif have and _has_commit(path, have):
            return Repo(path)
        _git(env, "fetching the deployment repository", "-C", str(path), "fetch", "-q", "--prune", "--no-tags",
             "--end-of-options", settings.repository.clone_url, "+refs/heads/*:refs/heads/*")
    return Repo(path)


def _has_commit(path: Path, sha: str) -> bool:
    return subprocess.run(["git", "-C", str(path), "cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}"],
                          capture_output=True).returncode == 0


def _git(env: dict[str, str], what: str, *args: str) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise GitError(f"{what} failed: {proc.stderr.strip()}")
