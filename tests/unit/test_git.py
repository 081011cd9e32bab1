"""The one git runner, with real git: time limits that kill git and what it started, errors that keep git's message
but never the token, and credentials that go to the clone URL's host only, never to a helper or a prompt."""
import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hubflow.clients.git import GitError, Repo, auth_env, run_git
from sandbox.sample_repo import commit, git


def test_a_command_past_its_time_limit_is_killed_with_what_it_started(tmp_path):
    marker = tmp_path / "still-running"
    started = time.monotonic()
    with pytest.raises(GitError, match=r"^git hang did not finish within 0.5 s and was killed$"):
        run_git(["-c", f"alias.hang=!sleep 1.5 && touch {marker}", "hang"], timeout=0.5)
    assert time.monotonic() - started < 1.2
    time.sleep(1.5)
    assert not marker.exists()  # the shell and its sleep died with git


def test_errors_name_the_command_and_keep_what_git_said(tmp_path):
    git(tmp_path, "init", "-q")
    commit(tmp_path, "one")
    with pytest.raises(GitError, match=r"^git rev-parse failed: fatal: ambiguous argument 'nope'"):
        Repo(tmp_path).git("rev-parse", "nope")
    with pytest.raises(GitError, match=r"^reading the fleet \(git show\) failed: fatal: invalid object name 'nope'"):
        run_git(["show", "nope:x"], cwd=tmp_path, what="reading the fleet")
    assert run_git(["show", "nope:x"], cwd=tmp_path, check=False).returncode == 128


class _Refusing(BaseHTTPRequestHandler):
    """An HTTP git remote that records each request's Authorization header and asks for credentials."""
    seen: list[str | None] = []

    def do_GET(self):
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def remote():
    _Refusing.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/org/deploy.git"
    server.shutdown()
    server.server_close()


def test_the_token_goes_to_the_clone_host_only_and_never_to_a_helper_a_prompt_or_an_error(tmp_path, monkeypatch,
                                                                                          remote):
    marker = tmp_path / "asked"
    helper = tmp_path / "helper"
    helper.write_text(f"#!/bin/sh\ntouch {marker}\n")
    helper.chmod(0o755)
    (tmp_path / "gitconfig").write_text(f"[credential]\n\thelper = !{helper}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_ASKPASS", str(helper))
    monkeypatch.setenv("GIT_TRACE_CURL", "1")  # would print the header, were it not dropped
    monkeypatch.setenv("GIT_TRACE_REDACT", "0")
    basic = base64.b64encode(b"x-access-token:s3cret").decode()

    with pytest.raises(GitError, match="terminal prompts disabled") as error:
        run_git(["ls-remote", remote], env=auth_env(remote, "s3cret"), timeout=30, what="listing")
    with pytest.raises(GitError):
        run_git(["ls-remote", remote], env=auth_env("https://github.com/org/deploy.git", "s3cret"), timeout=30)

    assert _Refusing.seen == [f"Basic {basic}", None]
    assert "s3cret" not in str(error.value) and basic not in str(error.value)
    assert not marker.exists()


def test_auth_env_puts_the_token_in_a_header_for_http_remotes_only():
    (key, value), = [(k, v) for k, v in auth_env("https://git.example.org/o/r.git", "t0k").items()
                     if k.startswith("GIT_CONFIG_KEY")]
    assert key == "GIT_CONFIG_KEY_0" and value == "http.https://git.example.org/.extraHeader"
    assert auth_env("https://git.example.org/o/r.git", None) == {}
    assert auth_env("ssh://git@git.example.org/o/r.git", "t0k") == {}
    assert auth_env("/srv/origin.git", "t0k") == {}
    for url in ("https://x-access-token:t0k@git.example.org/o/r.git", "https://t0k@git.example.org/o/r.git"):
        with pytest.raises(GitError, match="must not hold credentials"):
            auth_env(url, "t0k")
