"""Real git, run as argv lists (never a shell), with errors that say what was asked.

A `Repo` reads a deployment repository without a checkout: objects are read at a revision through one long-lived
`git cat-file --batch`, so the cost of reading many files does not grow in processes.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hubflow.core.errors import HubflowError


class GitError(HubflowError):
    """A git command failed, or its input was refused; the message is meant for people."""


class Repo:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise GitError(f"{self.path}: no such directory")
        out = self._run("rev-parse", "--git-dir", check=False)
        if out.returncode != 0:
            raise GitError(f"{self.path} is not a git repository")

    def _run(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        proc = subprocess.run(["git", "-C", str(self.path), *args], input=input, capture_output=True, env=env)
        if check and proc.returncode != 0:
            raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc

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
