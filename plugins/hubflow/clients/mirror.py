"""A bare mirror of the deployment repository on the worker: the plan, the gate and the ledger read git from here.

Fetching into one cached bare repository is cheap after the first time and needs no checkout. A file lock keeps two
tasks on one worker from fetching into it at once; the kernel drops it when its holder dies, and the wait for it is
bounded. A worker killed mid-way must not break the mirror for every later task: a new mirror appears only whole
(initialised aside, then renamed), one that is not a repository is made again, and ref lock files older than any
fetch may run are removed. The token reaches git as an extra header (git.auth_env), never in the URL.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from pathlib import Path

from hubflow.clients.git import NETWORK_TIMEOUT, GitError, Repo, auth_env, run_git
from hubflow.core.settings import Settings


def cache_dir() -> Path:
    return Path(os.environ.get("HUBFLOW_CACHE", Path.home() / ".cache" / "hubflow"))


def sync(settings: Settings, token: str | None = None, root: Path | None = None, have: str | None = None,
         timeout: float = NETWORK_TIMEOUT) -> Repo:
    """Fetch every branch of the deployment repository into the local mirror and return it.

    With `have` (a full sha the caller needs, e.g. the run's target), a mirror that already holds that commit is
    used as it is: the many verify tasks of a run then cost one fetch per worker, not one each. `timeout` bounds
    the fetch and the wait for another task's fetch alike.
    """
    path = _path(settings, root)
    env = auth_env(settings.repository.clone_url, token)
    with open(f"{path}.lock", "w") as lock:
        _lock(lock, path, timeout)
        if not _usable(path):
            _create(path)
        elif have and run_git([f"--git-dir={path}", "cat-file", "-e", "--end-of-options", f"{have}^{{commit}}"],
                              check=False).returncode == 0:
            return Repo(path)
        _remove_stale_locks(path, timeout)
        run_git([f"--git-dir={path}", "fetch", "-q", "--prune", "--no-tags", "--end-of-options",
                 settings.repository.clone_url, "+refs/heads/*:refs/heads/*"],
                env=env, timeout=timeout, what="fetching the deployment repository")
    return Repo(path)


def fetch_commit(settings: Settings, token: str | None, sha: str, ref: str, root: Path | None = None,
                 timeout: float = NETWORK_TIMEOUT) -> Repo:
    """Make sure the mirror holds commit `sha` (a PR's head, maybe from a fork: GitHub serves any commit reachable
    from refs/pull/N/head), fetched by its sha when it does not, and kept under `ref` so git's gc leaves it."""
    path = _path(settings, root)
    with open(f"{path}.lock", "w") as lock:
        _lock(lock, path, timeout)
        repo = Repo(path)
        if not repo.object_ids([f"{sha}^{{commit}}"])[f"{sha}^{{commit}}"]:
            url = settings.repository.clone_url
            run_git([f"--git-dir={path}", "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--end-of-options",
                     url, f"+{sha}:{ref}"], env=auth_env(url, token), timeout=timeout, what=f"fetching {sha[:12]}")
    return repo


def _path(settings: Settings, root: Path | None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.repository.github.replace("/", "__"))
    path = (root or cache_dir()) / f"{name}.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _lock(lock, path: Path, timeout: float) -> None:
    """Take the mirror's lock, waiting at most `timeout`: longer than that, its holder is past any fetch."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise GitError(f"another task holds the mirror lock at {path}.lock for longer than a fetch may "
                               f"take ({timeout:g} s); is a git process from a stopped worker still running?") from None
            time.sleep(min(0.2, timeout / 10))


def _usable(path: Path) -> bool:
    """Whether `path` is a bare repository git opens (a killed `git init` leaves one that is not)."""
    return (path / "HEAD").is_file() and run_git([f"--git-dir={path}", "rev-parse", "--is-bare-repository"],
                                                 check=False).stdout.strip() == b"true"


def _create(path: Path) -> None:
    """A new empty mirror at `path`, replacing whatever is there; a killed init leaves only the side directory."""
    side = path.with_name(path.name + ".init")
    for leftover in (path, side):
        shutil.rmtree(leftover, ignore_errors=True)
    run_git(["init", "-q", "--bare", str(side)], what="creating the mirror")
    side.rename(path)


def _remove_stale_locks(path: Path, timeout: float) -> None:
    """Delete git's own lock files (refs/heads/x.lock, packed-refs.lock, ...) that no running fetch can own.

    We hold the mirror lock, so any fetch that made them has ended or is past its time limit; a fetch killed with
    its worker leaves them behind, and git would refuse to update those refs forever.
    """
    cutoff = time.time() - timeout
    for lock in [*path.glob("*.lock"), *(path / "refs").rglob("*.lock")]:
        try:
            if lock.is_file() and lock.stat().st_mtime < cutoff:
                lock.unlink()
        except FileNotFoundError:
            pass
