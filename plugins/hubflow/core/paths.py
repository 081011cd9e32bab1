"""Paths and patterns inside the deployment repository, checked at load.

The fleet names folders, files and gitwildmatch patterns of the deployment repository, and anyone who can open a PR
may write it: nothing absolute, no `..`, no pattern that would fail later in a plan. pathspec compiles the patterns;
what is ours is the reading from the repository root and the folder rule (see glob_match).
"""
from __future__ import annotations

import functools
import re
from typing import Annotated

from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern
from pydantic import AfterValidator


def _path_problem(p: str) -> str | None:
    """Why `p` is not a path inside the repository as git names it, or None."""
    if not p:
        return "empty"
    if p.startswith("/"):
        return "absolute"
    if "\\" in p or re.search(r"[\x00-\x1f\x7f]", p):
        return "backslash or control character"
    if any(part in ("", ".", "..") for part in p.split("/")):
        return "empty, `.` or `..` part"
    return None


def check_repo_path(v: str) -> str:
    """A literal path inside the repository: relative, `/`-separated, nothing that could leave the checkout."""
    p = v.strip().rstrip("/")
    problem = _path_problem(p) or ("wildcard characters (*?[]) in a plain path" if re.search(r"[*?\[\]]", p) else None)
    if problem:
        raise ValueError(f"{v!r} is not a path inside the repository: {problem}")
    return p


def check_glob(v: str) -> str:
    """A gitwildmatch pattern of repository paths, compiled here so a bad one fails at load, not in a plan."""
    p = v.strip().rstrip("/")
    problem = _path_problem(p)
    if problem:
        raise ValueError(f"{v!r} is not a pattern of paths inside the repository: {problem}")
    _compiled(p)
    return p


@functools.lru_cache(maxsize=4096)  # bounded: PR previews read fleets that anyone may write
def _compiled(pattern: str) -> tuple[re.Pattern, bool]:
    """The pattern's regex (anchored at the root: `*.md` is top level only) and whether it may match a folder."""
    try:
        rule = GitIgnoreSpecPattern("/" + pattern)
    except ValueError as exc:
        raise ValueError(f"{pattern!r} is not a valid pattern: {exc}") from None
    if rule.regex is None:  # pathspec discards what git would: a `[` that never closes
        raise ValueError(f"{pattern!r} is not a valid pattern: unbalanced brackets, a `[` without its `]`")
    return rule.regex, not re.search(r"[*?\[]", pattern.rsplit("/", 1)[-1])


def glob_match(path: str, pattern: str) -> bool:
    """gitwildmatch from the repository root: `**` spans folders, a plain last part (`docs`, `deployments/*/config`)
    also matches everything under it, a wildcard last part only names at that level (`hub/*` is hub's own files)."""
    regex, folders = _compiled(pattern)
    m = regex.match(path)
    return m is not None and (folders or m.groupdict().get("ps_d") is None)


RepoPath = Annotated[str, AfterValidator(check_repo_path)]
