"""Strings people control pass through untouched and run nothing; the token never reaches a log, an argv or a URL."""
from __future__ import annotations

import base64
import logging
import subprocess
from pathlib import Path

import pytest

from hubflow.clients.github import GitHubError
from hubflow.clients.revert import RevertConflict
from hubflow.core.messages import code_span

TITLE = ("Add $(touch PWNED) `touch PWNED` ; rm -rf ./x && echo \"hi\" 'q' | tee PWNED > PWNED < /dev/null\n"
         "second line {{ 7*7 }} {% if 1 %}x{% endif %} ${HOME} %(x)s ✓ ünïcödé 🚀")
BRANCH = "feature/$(touch${IFS}PWNED)`touch${IFS}PWNED`;&|'\"{{7x7}}<>ü"
PRIMARY = "images/primary/environment.yml"


def no_pwned(workdir: Path) -> bool:
    """No command ran: nothing named PWNED in the working directory (where a shell would have run) or in /tmp."""
    return not list(workdir.rglob("PWNED*")) and not list(Path("/tmp").glob("PWNED*"))


def test_hostile_titles_branches_and_messages_pass_through_untouched(gh, emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = emulator.head("staging")
    pr = emulator.merge_feature(TITLE, {PRIMARY: "torch\n"}, branch=BRANCH, body=TITLE, author="ada")
    sha = pr["merge_commit_sha"]

    pull = gh.pull_for(sha)
    assert (pull.title, pull.head) == (TITLE, BRANCH)
    promotion = gh.ensure_promotion("staging", sha, {TITLE: "http://airflow/run/1"})
    # the title is data: shown as a code span (nothing in it renders as Markdown, HTML or a mention), never changed
    assert f"#{pr['number']} {code_span(TITLE)} (@ada)" in emulator.pulls[promotion.number]["body"]
    assert f"[{TITLE}](http://airflow/run/1)" in emulator.pulls[promotion.number]["body"]

    gh.set_status("staging", sha, "failure", None, TITLE)
    description = emulator.combined_status(sha)["statuses"][0]["description"]
    assert description == " ".join(TITLE.split())[:139] + "…" and "{{ 7*7 }}" in description
    gh.comment(pr["number"], "staging:failed", TITLE)
    assert emulator.comments[pr["number"]][0]["body"].startswith(TITLE + "\n\n<!--")

    result = gh.revert("staging", good, sha, reason=TITLE)
    message = emulator._git("log", "-n1", "--format=%B", emulator.head(result.branch))
    assert message.startswith(f'Revert "{TITLE}" on staging\n') and message.count(TITLE) == 3  # {{ 7*7 }} kept
    assert TITLE in emulator.pulls[result.pull.number]["body"]
    assert no_pwned(tmp_path)


@pytest.fixture
def recorded_argv(monkeypatch):
    """Every argv this process starts (hubflow's git runner, and the emulator's): subprocess.run starts its
    processes through Popen too, so spying on Popen sees them all."""
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    class Spy(real_popen):
        def __init__(self, args, *a, **kw):
            argvs.append([str(x) for x in args])
            super().__init__(args, *a, **kw)
    monkeypatch.setattr(subprocess, "Popen", Spy)
    return argvs


def test_the_token_reaches_github_and_git_but_no_log_line_argv_or_error(gh, emulator, caplog, capfd,
                                                                       recorded_argv, monkeypatch):
    caplog.set_level(logging.DEBUG)  # PyGithub logs every request and response at DEBUG
    # Airflow's logging set-up, done by an earlier test in this process, disables the loggers that existed then
    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("github", "hubflow", "urllib3")]:
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
        caplog.set_level(logging.DEBUG, logger=name)
    good = emulator.head("staging")
    a = emulator.merge_feature("A", {PRIMARY: "a\n"})
    gh.set_status("staging", a["merge_commit_sha"], "success", "http://airflow/run/1", "verified")
    gh.merge(gh.ensure_promotion("staging", a["merge_commit_sha"], {}).number)
    gh.revert("staging", good, a["merge_commit_sha"], "failed")
    gh.comment(a["number"], "staging:x", "reverted")
    b = emulator.merge_feature("B", {PRIMARY: "b\n"})
    emulator.push("staging", "same line again", {PRIMARY: "c\n"})
    with pytest.raises(RevertConflict) as conflict:
        gh.revert("staging", a["merge_commit_sha"], b["merge_commit_sha"], "failed")
    emulator.fail("GET", "*/commits/*", status=500, times=10)
    with pytest.raises(GitHubError) as failure:
        gh.branch_head("staging")
    errors = [str(conflict.value), str(failure.value)]

    api = [r for r in emulator.requests if not r.path.startswith("/git/")]
    git = [r for r in emulator.requests if r.path.startswith("/git/")]
    assert api and all(r.headers["authorization"] == f"token {emulator.token}" for r in api)
    basic = base64.b64encode(f"x-access-token:{emulator.token}".encode()).decode()
    assert git and all(r.headers["authorization"] == f"Basic {basic}" for r in git)
    out, err = capfd.readouterr()
    seen = "\n".join([caplog.text, out, err, *errors, *(" ".join(argv) for argv in recorded_argv),
                      *(r.path + str(r.query) for r in emulator.requests)])
    assert "GET /repos/datahub/datahub" in caplog.text  # the debug log was really captured
    for secret in (emulator.token, basic):
        assert secret not in seen
