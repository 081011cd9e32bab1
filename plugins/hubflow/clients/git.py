"""Real git, run as argv lists (never a shell) through one runner, with errors that say what was asked.

`run_git` is the only way hubflow starts git: every call has a time limit, never prompts, ignores the user's
credential helpers, and reports git's own message with any auth header cut out. A `Repo` reads a deployment
repository without a checkout: objects are read at a revision through one `git cat-file --batch` per call, so the
cost of reading many files does not grow in processes.
"""
from __future__ import annotations

import base64
import binascii
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from hubflow.core.errors import HubflowError

LOCAL_TIMEOUT = 120.0
"""Seconds a git command that only reads or writes local repositories may take."""
NETWORK_TIMEOUT = 600.0
"""Seconds a clone, fetch or push may take."""

# Tracing can print request headers; an askpass program could prompt or hand out other credentials.
_DROPPED_ENV = ("GIT_TRACE", "GIT_CURL_VERBOSE", "GIT_ASKPASS", "SSH_ASKPASS")


class GitError(HubflowError):
    """A git command failed, or its input was refused; the message is meant for people."""


def auth_env(clone_url: str, token: str | None) -> dict[str, str]:
    """Environment for `run_git` that sends `token` to the clone URL's host only (basic auth as x-access-token).

    The header travels in GIT_CONFIG_* variables, so it is in no URL, argument, log line or file on disk.
    """
    parts = urlsplit(clone_url)
    if parts.password or (parts.username and parts.scheme in ("http", "https")):
        raise GitError("the clone URL must not hold credentials; the token comes from the GitHub connection")
    if not token or parts.scheme not in ("http", "https"):
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


def run_git(args: list[str], *, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
            input: bytes | None = None, timeout: float = LOCAL_TIMEOUT, what: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run `git *args`; a non-zero exit (with `check`) or a run longer than `timeout` seconds raises GitError.

    `env` is added to a cleaned copy of this process's environment (e.g. `auth_env`). git runs in its own process
    group so that a timeout, or this task being stopped, kills it with every helper it started (remote-https,
    index-pack), which would otherwise keep writing into the repository.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
    full_env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    full_env.update(env or {})
    label = f"{what} (git {_command(args)})" if what else f"git {_command(args)}"
    with subprocess.Popen(["git", "-c", "credential.helper=", *args], cwd=cwd, env=full_env,
                          stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise GitError(f"{label} did not finish within {timeout:g} s and was killed") from None
        except BaseException:
            _kill(proc)
            raise
    if check and proc.returncode != 0:
        raise GitError(f"{label} failed: {_redact(err.decode(errors='replace').strip(), full_env)}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _command(args: list[str]) -> str:
    """The git subcommand in `args`, past global options such as `-c name=value`."""
    skip = False
    for arg in args:
        if skip or arg.startswith("-"):
            skip = arg in ("-c", "-C") and not skip
            continue
        return arg
    return "?"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _redact(text: str, env: dict[str, str]) -> str:
    """`text` without any extra header from `env`, in whole, as its credential, or as the decoded token."""
    for key, value in env.items():
        if not (key.startswith("GIT_CONFIG_VALUE_") and value.lower().startswith("authorization:")):
            continue
        secrets = [value, value.split()[-1]]
        try:
            secrets.append(base64.b64decode(secrets[1], validate=True).decode().partition(":")[2])
        except (binascii.Error, UnicodeDecodeError):
            pass
        for secret in filter(None, secrets):
            text = text.replace(secret, "***")
    return text


PREVIEW_IDENTITY = {"GIT_AUTHOR_NAME": "hubflow", "GIT_AUTHOR_EMAIL": "hubflow@localhost",
                    "GIT_COMMITTER_NAME": "hubflow", "GIT_COMMITTER_EMAIL": "hubflow@localhost",
                    "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}


class Repo:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise GitError(f"{self.path}: no such directory")
        if self._run("rev-parse", "--git-dir", check=False).returncode != 0:
            raise GitError(f"{self.path} is not a git repository")

    def _run(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return run_git(["-C", str(self.path), *args], input=input, check=check)

    def git(self, *args: str, input: bytes | None = None) -> str:
        return self._run(*args, input=input).stdout.decode()

    def resolve(self, *revs: str) -> list[str]:
        """Full commit shas of `revs`, in one process; an unknown revision is named in the error."""
        for rev in revs:
            if not rev or rev.startswith("-") or any(c.isspace() or ord(c) < 32 for c in rev):
                raise GitError(f"{rev!r} is not a revision")
        ids = self.object_ids([f"{r}^{{commit}}" for r in revs])
        for rev in revs:
            if ids[f"{rev}^{{commit}}"] is None:
                raise GitError(f"unknown revision {rev!r} in {self.path}")
        return [ids[f"{r}^{{commit}}"] for r in revs]

    def is_ancestor(self, base: str, head: str) -> bool:
        return self._run("merge-base", "--is-ancestor", base, head, check=False).returncode == 0

    def read_blobs(self, specs: list[str]) -> dict[str, bytes | None]:
        """Contents of `rev:path` specs (None where missing), all through one `cat-file --batch`."""
        if not specs:
            return {}
        data = self._run("cat-file", "--batch", input="".join(s + "\n" for s in specs).encode()).stdout
        out: dict[str, bytes | None] = {}
        pos = 0
        for spec in specs:
            end = data.index(b"\n", pos)
            header = data[pos:end].decode()
            pos = end + 1
            if header.endswith(" missing") or header.endswith(" ambiguous"):
                out[spec] = None
                continue
            _, kind, size = header.rsplit(" ", 2)
            body = data[pos:pos + int(size)]
            pos += int(size) + 1
            out[spec] = body if kind == "blob" else None
        return out

    def object_ids(self, specs: list[str]) -> dict[str, str | None]:
        """Object ids (trees or blobs) of `rev:path` specs, None where missing, in one process."""
        if not specs:
            return {}
        lines = self._run("cat-file", "--batch-check=%(objectname) %(objecttype)",
                          input="".join(s + "\n" for s in specs).encode()).stdout.decode().splitlines()
        return {s: (None if line.endswith("missing") else line.split()[0]) for s, line in zip(specs, lines)}

    def files(self, rev: str) -> list[str]:
        """Every file path in the tree of `rev`."""
        return self.git("ls-tree", "-r", "-z", "--name-only", rev).split("\0")[:-1]

    def changed_paths(self, base: str, head: str) -> list[tuple[str, ...]]:
        """`(status, path[, new path])` for each change between two trees; renames and copies keep both sides."""
        fields = self.git("diff", "--name-status", "-z", "-M", base, head).split("\0")
        out, i = [], 0
        while i < len(fields) - 1:
            status = fields[i]
            if status[:1] in "RC":
                out.append((status[:1], fields[i + 1], fields[i + 2]))
                i += 3
            else:
                out.append((status[:1], fields[i + 1]))
                i += 2
        return out

    def last_commit(self, rev: str, paths: list[str]) -> str | None:
        out = self.git("log", "-n1", "--format=%H", rev, "--", *paths).strip()
        return out or None

    def tree_id(self, rev: str) -> str:
        return self.git("rev-parse", f"{rev}^{{tree}}").strip()

    def merge_preview(self, base: str, head: str) -> tuple[str, list[str] | None]:
        """(the commit merging `head` onto `base`, None), or (their merge-base, the conflicting files) when they
        conflict. The commit has a fixed author and date: one PR on one branch head always gives the same one."""
        out = run_git(["-C", str(self.path), "merge-tree", "--write-tree", "--name-only", "--no-messages", base, head],
                      check=False)
        if out.returncode == 1:
            return self.git("merge-base", base, head).strip(), out.stdout.decode().splitlines()[1:]
        if out.returncode != 0:
            raise GitError(f"git merge-tree of {head[:12]} onto {base[:12]} failed: {out.stderr.decode().strip()}")
        tree = out.stdout.decode().split()[0]
        made = run_git(["-C", str(self.path), "commit-tree", tree, "-p", base, "-p", head, "-m", "hubflow preview"],
                       env=PREVIEW_IDENTITY)
        return made.stdout.decode().strip(), None
