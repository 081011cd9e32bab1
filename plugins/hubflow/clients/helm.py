"""Real helm on this machine, run as argv lists (never a shell): `helm template` of a chart read from git.

For `hubflow render --manifests`: the files of a revision are exported from git (`git archive` through the one git
runner) into a temporary folder, and helm renders the chart there with no cluster. Values files encrypted by sops
are left out by the caller (this machine has no key, and their plaintext must never be printed).
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from hubflow.clients.git import Repo, run_git
from hubflow.core.errors import HubflowError

TIMEOUT = 120.0
"""Seconds one helm command may take (a template renders locally; a dependency build downloads)."""


class HelmError(HubflowError):
    """helm failed or is not installed; the message names the command and gives helm's own error."""


def run_helm(args: list[str], cwd: str | os.PathLike | None = None, timeout: float = TIMEOUT) -> str:
    """helm's standard output; a failure raises HelmError with the last lines of its error output."""
    try:
        proc = subprocess.run(["helm", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HelmError("helm is not installed (it must be on PATH)") from None
    except subprocess.TimeoutExpired:
        raise HelmError(f"helm {args[0]} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        error = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise HelmError(f"helm {' '.join(args[:2])} failed: {error}")
    return proc.stdout


def export(repo: Repo, rev: str, paths: list[str], dest: Path) -> Path:
    """The files under `paths` at `rev`, written below `dest` (no checkout, no worktree left behind)."""
    tar = run_git(["-C", str(repo.path), "archive", "--format=tar", rev, "--", *paths],
                  what=f"export of {rev[:12]}").stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest


def vendored(chart: Path) -> bool:
    """The chart needs nothing downloaded: no dependencies, or all in charts/ (`helm dependency list`: ok)."""
    rows = [line.split() for line in run_helm(["dependency", "list", str(chart)]).splitlines()[1:] if line.strip()]
    return all(row[-1] == "ok" for row in rows)


def build_dependencies(chart: Path) -> None:
    """Download the dependencies of an unvendored chart into its charts/ (network: its chart repositories)."""
    run_helm(["dependency", "build", str(chart)])


def template(chart: str, release: str, namespace: str, values: list[str], set_strings: list[str],
             cwd: Path) -> str:
    """The manifests `helm upgrade` would apply, rendered locally (values files in order, then the strings)."""
    args = ["template", release, chart, "--namespace", namespace]
    for path in values:
        args += ["--values", path]
    for item in set_strings:
        args += ["--set-string", item]
    return run_helm(args, cwd=cwd)
