"""A bare mirror of the deployment repository on the worker: the plan, the gate and the ledger read git from here.

Fetching into one cached bare repository is cheap after the first time and needs no checkout. A file lock keeps two
tasks on one worker from fetching into it at once. Credentials arrive as git environment (askpass or an extra
header configured through GIT_CONFIG_* variables), never in the URL, so nothing secret lands in a log or on disk.
"""
from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

from hubflow.config import Settings
from hubflow.git import GitError, Repo


def cache_dir() -> Path:
    return Path(os.environ.get("HUBFLOW_CACHE", Path.home() / ".cache" / "hubflow"))


def sync(settings: Settings, git_env: dict[str, str] | None = None, root: Path | None = None) -> Repo:
    """Fetch every branch of the deployment repository into the local mirror and return it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.repository.github.replace("/", "__"))
    path = (root or cache_dir()) / f"{name}.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", **(git_env or {}))
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "HEAD").exists():
            _git(env, "creating the mirror", "init", "-q", "--bare", str(path))
        _git(env, "fetching the deployment repository", "-C", str(path), "fetch", "-q", "--prune", "--no-tags", "--end-of-options",
             settings.repository.clone_url, "+refs/heads/*:refs/heads/*")
    return Repo(path)


def _git(env: dict[str, str], what: str, *args: str) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise GitError(f"{what} failed: {proc.stderr.strip()}")
