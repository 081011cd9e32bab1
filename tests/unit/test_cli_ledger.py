"""`hubflow ledger`, `hubflow hold` and `hubflow freeze` as an operator runs them (real processes, real databases)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from hubflow.clients.ledger import Ledger
from tests import airflow_support

HUBFLOW = Path(sys.executable).parent / "hubflow"


def run(*args, **env):
    return subprocess.run([str(HUBFLOW), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_ledger_lists_attempts_and_holds(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    book = Ledger(url)
    a = book.start("staging", "a" * 40, None, "t", "run-1")
    book.finish(a, "success", "deployed and verified on 1 hub(s)")
    b = book.start("prod", "b" * 40, None, "t", "run-2", forced_by="alice", force_reason="INC-7")
    book.finish(b, "failed", "verification failed: hub datahub: packages: numpy is not installed")
    out = run("ledger", "--ledger", url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "prod" in lines[1] and "failed" in lines[1] and "[forced by alice: INC-7]" in lines[1]
    assert "staging" in lines[2] and "success" in lines[2]
    out = run("ledger", "--env", "prod", "--json", HUBFLOW_LEDGER_URL=url)
    data = json.loads(out.stdout)
    assert [x["revision"] for x in data["attempts"]] == ["b" * 40]
    assert run("ledger", "--env", "qa", "--ledger", url).stderr.startswith("error: unknown environment 'qa'")


def git(repo, *args, **env):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, GIT_AUTHOR_NAME="a", GIT_AUTHOR_EMAIL="a@x", GIT_COMMITTER_NAME="a",
                                   GIT_COMMITTER_EMAIL="a@x", GIT_AUTHOR_DATE="1700000000 +0000",
                                   GIT_COMMITTER_DATE="1700000000 +0000", **env)).stdout.strip()


def deployment(tmp_path, commits=3):
    """A deployment repository with `commits` commits on staging: (path, [shas, oldest first])."""
    repo = tmp_path / "deploy"
    git(tmp_path, "init", "-q", "-b", "staging", str(repo))
    for n in range(commits):
        git(repo, "commit", "-q", "--allow-empty", "-m", f"change {n}")
    return repo, git(repo, "rev-list", "--reverse", "staging").split()


def test_hold_and_clear(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    repo, shas = deployment(tmp_path)
    sha = shas[-1]
    assert "say why" in run("hold", sha, "--ledger", url, "--repo", str(repo)).stderr
    out = run("hold", sha, "--reason", "broke the kernels", "--ledger", url, "--repo", str(repo))
    assert out.returncode == 0 and Ledger(url).held(sha) == "broke the kernels"
    assert "say why" in run("hold", sha, "--clear", "--ledger", url, "--repo", str(repo)).stderr
    assert Ledger(url).held(sha) == "broke the kernels"  # a clear without a reason clears nothing
    cleared = run("hold", sha, "--clear", "--reason", "fixed", "--ledger", url, "--repo", str(repo))
    assert cleared.returncode == 0 and Ledger(url).held(sha) is None
    again = run("hold", sha, "--clear", "--reason", "fixed", "--ledger", url, "--repo", str(repo))
    assert again.returncode == 2 and "is not held" in again.stderr


def test_hold_takes_what_the_ledger_prints_and_any_name_git_reads_and_stores_the_full_sha(tmp_path):
    """Issue 17, scenario 11: the 12 digits `hubflow ledger` prints hold the revision they name (they held
    nothing before: holds compare full shas), as do a branch name and an expression."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    repo, shas = deployment(tmp_path)
    out = run("hold", shas[-1][:12], "--reason", "INC-7: logins fail", "--by", "alice", "--ledger", url,
              "--repo", str(repo))
    assert out.returncode == 0, out.stderr
    assert f"held {shas[-1]} ({shas[-1][:12]}) by alice" in out.stdout
    book = Ledger(url)
    hold = book.hold_of(shas[-1])
    assert (hold["revision"], hold["reason"], hold["held_by"], hold["env"]) == (shas[-1], "INC-7: logins fail",
                                                                                 "alice", "staging")
    assert run("hold", "staging~1", "--reason", "also bad", "--env", "prod", "--ledger", url,
               "--repo", str(repo)).returncode == 0
    assert book.hold_of(shas[-2])["env"] == "prod" and book.hold_of(shas[-2])["held_by"]  # the login name
    again = run("hold", "staging", "--reason", "twice", "--ledger", url, "--repo", str(repo))
    assert again.returncode == 0 and "already held since" in again.stdout and "by alice: INC-7" in again.stdout
    assert book.held(shas[-1]) == "INC-7: logins fail"
    listed = run("ledger", "--ledger", url).stdout
    assert f"held: {shas[-1][:12]} (staging) since " in listed and "by alice: INC-7: logins fail" in listed
    # cleared by what `hubflow ledger` printed, kept with who and why
    out = run("hold", "--clear", shas[-1][:12], "--reason", "fixed by #88", "--by", "bob", "--ledger", url)
    assert out.returncode == 0, out.stderr  # the ledger's holds name it: no repository needed
    assert f"cleared the hold on {shas[-1]}" in out.stdout and book.held(shas[-1]) is None
    (cleared,) = book.cleared_holds()
    assert (cleared["revision"], cleared["held_by"], cleared["cleared_by"], cleared["clear_reason"]) == (
        shas[-1], "alice", "bob", "fixed by #88")
    listed = run("ledger", "--ledger", url)
    assert f"cleared: {shas[-1][:12]} (staging) at " in listed.stdout and "by bob: fixed by #88" in listed.stdout
    data = json.loads(run("ledger", "--json", "--ledger", url).stdout)
    assert [h["revision"] for h in data["holds"]] == [shas[-2]]
    assert data["cleared_holds"][0]["cleared_by"] == "bob" and data["cleared_holds"][0]["cleared_at"]


def colliding_commits(repo, n=1500):
    """`n` commits made in one git process (fast-import) on branch `many`, until two share 4 hex digits."""
    stream = "".join(f"commit refs/heads/many\ncommitter a <a@x> {1700000000 + i} +0000\ndata {len(str(i))}\n{i}\n\n"
                     for i in range(n))
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=stream, text=True, check=True)
    seen = {}
    for sha in git(repo, "rev-list", "many").split():
        if sha[:4] in seen:
            return sha[:4], {seen[sha[:4]], sha}
        seen[sha[:4]] = sha
    raise AssertionError("no two commits share 4 hex digits")


def test_an_ambiguous_or_unknown_revision_is_an_error_naming_it_and_holds_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    repo, shas = deployment(tmp_path)
    prefix, both = colliding_commits(repo)
    out = run("hold", prefix, "--reason", "x", "--ledger", url, "--repo", str(repo))
    assert out.returncode == 2 and out.stderr.startswith(f"error: ambiguous revision '{prefix}'")
    assert all(sha in out.stderr for sha in both)
    upper = run("hold", prefix.upper() + "~0", "--reason", "x", "--ledger", url, "--repo", str(repo))
    assert upper.returncode == 2 and "ambiguous revision" in upper.stderr  # git's own reading says so too
    # a branch named like the sha prefix of another commit, and a tag named like a branch
    git(repo, "branch", shas[0][:8], shas[1])
    out = run("hold", shas[0][:8], "--reason", "x", "--ledger", url, "--repo", str(repo))
    assert out.returncode == 2 and "ambiguous" in out.stderr and shas[0] in out.stderr and shas[1] in out.stderr
    assert f"refs/heads/{shas[0][:8]}" in out.stderr
    for unknown in ("f" * 40, "feature/nope", "abc", "staging~99"):
        out = run("hold", unknown, "--reason", "x", "--ledger", url, "--repo", str(repo))
        assert out.returncode == 2 and out.stderr.startswith(f"error: unknown revision '{unknown}'"), out.stderr
    git(repo, "tag", "staging", shas[0])
    out = run("hold", "staging", "--reason", "x", "--ledger", url, "--repo", str(repo))
    assert out.returncode == 2 and "refs/heads/staging" in out.stderr and "refs/tags/staging" in out.stderr
    out = run("hold", "staging~1", "--reason", "x", "--ledger", url, "--repo", str(repo))
    assert out.returncode == 2 and "ambiguous revision 'staging~1'" in out.stderr  # git would pick the tag
    for bad in ("--upload-pack=x", "a b"):
        out = run("hold", "--reason", "x", "--ledger", url, "--repo", str(repo), "--", bad)
        assert out.returncode == 2 and "is not a revision" in out.stderr, out.stderr
    assert Ledger(url).holds() == [] and Ledger(url).cleared_holds() == []
    # unambiguous once long enough, and a full sha is never ambiguous
    one = sorted(both)[0]
    assert run("hold", one[:12], "--reason", "x", "--ledger", url, "--repo", str(repo)).returncode == 0
    assert run("hold", shas[0], "--reason", "y", "--ledger", url, "--repo", str(repo)).returncode == 0
    assert {h["revision"] for h in Ledger(url).holds()} == {one, shas[0]}


def test_hold_resolves_in_the_mirror_of_the_settings_repository_by_default(tmp_path):
    """Without --repo the revision is resolved in the deployment repository itself (the worker's mirror, fetched
    from the settings' clone URL), as the deploy reads it."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    repo, shas = deployment(tmp_path)
    settings = tmp_path / "hubflow.yaml"
    text = (Path(__file__).resolve().parents[2] / "include" / "hubflow.yaml").read_text()
    settings.write_text(text.replace("https://github.com/datahub/datahub.git", str(repo)))
    env = {"HUBFLOW_CONFIG": str(settings), "HUBFLOW_CACHE": str(tmp_path / "cache"), "HUBFLOW_LEDGER_URL": url}
    out = run("hold", shas[1][:10], "--reason", "INC-8", "--by", "ops", **env)
    assert out.returncode == 0, out.stderr
    assert Ledger(url).held(shas[1]) == "INC-8"
    assert list((tmp_path / "cache").glob("*.git"))  # the mirror the deploy tasks use
    missing = run("hold", "f" * 12, "--reason", "INC-8", **env)
    assert missing.returncode == 2 and "unknown revision 'ffffffffffff'" in missing.stderr


def test_ledger_without_a_connection_says_how_to_fix_it():
    out = run("ledger", AIRFLOW_CONN_HUBFLOW_LEDGER="")
    assert out.returncode == 2 and "pass --ledger URL or set HUBFLOW_LEDGER_URL" in out.stderr


def freeze_variable() -> str | None:
    """The freeze switch as Airflow itself reads it, asked by a process of its own (`airflow variables get`): this
    test process's own answer was seen stale in a clean-clone run, still holding a value the CLI had deleted."""
    proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "variables", "get", "hubflow_freeze_prod"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        assert "does not exist" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        return None
    return proc.stdout.strip().splitlines()[-1]


def test_freeze_sets_and_lifts_the_switch_the_deploy_reads():
    airflow_support.migrate()

    out = run("freeze", "prod", "--reason", "exam week")
    assert out.returncode == 0, out.stderr
    assert freeze_variable() == "exam week"
    assert run("freeze", "prod", "--off").returncode == 0
    assert freeze_variable() is None
    assert "unknown environment" in run("freeze", "qa", "--reason", "x").stderr
