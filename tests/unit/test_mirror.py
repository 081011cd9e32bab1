"""The worker's mirror: a bare fetch of every branch; no fetch when it already holds the commit a task needs; a
worker killed while holding the lock, in `git init` or mid-fetch leaves nothing that stops the next task."""
import os
import signal
import subprocess
import sys
import time

import pytest

from hubflow.clients.git import GitError
from hubflow.clients.mirror import sync
from hubflow.core.settings import parse_settings
from sandbox.sample_repo import commit, make_sample_repo


def settings_for(origin):
    return parse_settings(f"repository: {{github: org/deploy, clone_url: '{origin}'}}\n"
                          "environments: [{name: staging, branch: staging, hub_url: x}]\n")


@pytest.fixture
def origin(tmp_path):
    work = make_sample_repo(tmp_path / "work", bare=tmp_path / "origin.git")
    return work, settings_for(tmp_path / "origin.git")


def push(work, message):
    new = commit(work, message, {"deployments/data8/config/common.yaml": f"{message}: 1\n"})
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "staging"], check=True)
    return new


def test_fetches_branches_and_skips_the_fetch_when_the_commit_is_there(tmp_path, monkeypatch, origin):
    work, settings = origin
    repo = sync(settings, root=tmp_path / "cache")
    (head,) = repo.resolve("staging")
    assert repo.resolve("prod") == [head]
    new = push(work, "more")
    fetches = []
    real = subprocess.Popen  # what subprocess.run starts too
    monkeypatch.setattr(subprocess, "Popen", lambda args, *a, **kw: (fetches.append(args) if "fetch" in args else None,
                                                                     real(args, *a, **kw))[1])
    assert sync(settings, root=tmp_path / "cache", have=head).resolve("staging") == [head]  # no fetch: old view
    assert fetches == []
    assert sync(settings, root=tmp_path / "cache", have=new).resolve("staging") == [new]
    assert len(fetches) == 1


def test_a_worker_killed_while_holding_the_lock_does_not_block_the_next_sync(tmp_path, origin):
    work, settings = origin
    cache = tmp_path / "cache"
    sync(settings, root=cache)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(cache / "org__deploy.git.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        with pytest.raises(GitError, match=f"another task holds the mirror lock at {cache}/org__deploy.git.lock"):
            sync(settings, root=cache, timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    new = push(work, "after the kill")
    assert sync(settings, root=cache, timeout=5).resolve("staging") == [new]


def test_a_stale_ref_lock_from_a_killed_fetch_is_removed_and_a_fresh_one_is_left(tmp_path, origin):
    work, settings = origin
    cache = tmp_path / "cache"
    sync(settings, root=cache)
    mirror = cache / "org__deploy.git"
    stale = [mirror / "refs" / "heads" / "staging.lock", mirror / "packed-refs.lock"]
    for lock in stale:
        lock.write_text("")
    fresh = push(work, "one")
    with pytest.raises(GitError, match="staging.lock"):  # a fetch that may still run owns it: wait
        sync(settings, root=cache, timeout=60)
    old = time.time() - 120
    for lock in stale:
        os.utime(lock, (old, old))
    assert sync(settings, root=cache, timeout=60).resolve("staging") == [fresh]
    assert not any(lock.exists() for lock in stale)


@pytest.mark.parametrize("leftover", ["empty directory", "no HEAD", "killed init"])
def test_a_half_made_mirror_is_made_again(tmp_path, origin, leftover):
    work, settings = origin
    cache = tmp_path / "cache"
    mirror = cache / "org__deploy.git"
    mirror.mkdir(parents=True)
    if leftover == "no HEAD":
        subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
        (mirror / "HEAD").unlink()
    elif leftover == "killed init":  # HEAD written, objects/ not yet
        (mirror / "HEAD").write_text("ref: refs/heads/main\n")
        (cache / "org__deploy.git.init" / "refs").mkdir(parents=True)
    (head,) = sync(settings, root=cache, have="0" * 40).resolve("staging")
    assert head == subprocess.run(["git", "-C", str(work), "rev-parse", "staging"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    assert not (cache / "org__deploy.git.init").exists()
