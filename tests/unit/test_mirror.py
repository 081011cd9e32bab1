"""The worker's mirror: a bare fetch of every branch; no fetch when it already holds the commit a task needs."""
import subprocess

from hubflow.config import parse_settings
from hubflow.mirror import sync
from sandbox.sample_repo import commit, make_sample_repo


def settings_for(origin):
    return parse_settings(f"repository: {{github: org/deploy, clone_url: '{origin}'}}\n"
                          "environments: [{name: staging, branch: staging, hub_url: x}]\n")


def test_fetches_branches_and_skips_the_fetch_when_the_commit_is_there(tmp_path, monkeypatch):
    work = make_sample_repo(tmp_path / "work", bare=tmp_path / "origin.git")
    settings = settings_for(tmp_path / "origin.git")
    repo = sync(settings, root=tmp_path / "cache")
    (head,) = repo.resolve("staging")
    assert repo.resolve("prod") == [head]
    new = commit(work, "more", {"deployments/data8/config/common.yaml": "a: 1\n"})
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "staging"], check=True)
    fetches = []
    real = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda args, *a, **kw: (fetches.append(args) if "fetch" in args else None,
                                                                     real(args, *a, **kw))[1])
    assert sync(settings, root=tmp_path / "cache", have=head).resolve("staging") == [head]  # no fetch: old view
    assert fetches == []
    assert sync(settings, root=tmp_path / "cache", have=new).resolve("staging") == [new]
    assert len(fetches) == 1
