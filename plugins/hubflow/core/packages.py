"""Which packages an image's environment files added or changed between two revisions.

A smoke verification checks these in the hub's kernel, because a deploy that changed `numpy==2.1.3` is only proven
by a kernel where numpy 2.1.3 imports. Environment files are `requirements*.txt` and `environment.yml` (its conda
dependencies and its `pip:` section), found under the image's paths and read with git at both revisions, never from
a checkout. A pin (`==`, `===`, conda `=`) is kept so the check can compare versions.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement

from hubflow.core.documents import parse_yaml
from hubflow.core.errors import HubflowError
from hubflow.core.fleet import Fleet
from hubflow.core.paths import glob_match

if TYPE_CHECKING:  # the core takes its clients as arguments and imports none of them
    from hubflow.clients.git import Repo

ENVIRONMENT_FILES = ("environment.yml", "environment.yaml")


class PackagesError(HubflowError):
    """An environment file or a package spec cannot be read; the message names the file, the line and the text."""


@dataclass(frozen=True)
class Package:
    """A package a kernel must have: `version` is the pin (None when unpinned); `exact` False means a prefix pin.

    `conda` marks a conda dependency, which may be a non-Python package that only conda's own records know.
    """

    name: str
    version: str | None = None
    exact: bool = True
    marker: str | None = None
    conda: bool = False
    source: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return re.sub(r"[-_.]+", "-", self.name).lower()

    def __str__(self) -> str:
        pin = "" if self.version is None else f"=={self.version}" + ("" if self.exact else ".*")
        return self.name + pin

    def to_dict(self) -> dict:
        return asdict(self)


def parse_package(spec: str, source: str = "") -> Package:
    """A pip requirement (`numpy`, `numpy==2.1.3`, `numpy==2.1.*`, `x[extra]>=1; marker`) as a Package."""
    try:
        req = Requirement(spec)
    except InvalidRequirement as exc:
        where = f"{source}: " if source else ""
        reason = str(exc).splitlines()[0]
        raise PackagesError(f"{where}{spec!r} is not a package requirement: {reason}") from None
    version, exact = None, True
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and specs[0].version:
        version = specs[0].version
        if version.endswith(".*"):
            version, exact = version[:-2], False
    return Package(req.name, version, exact, str(req.marker) if req.marker else None, False, source)


_UNNAMED = re.compile(r"^(-|\.|/|~)|^[a-z+]+://", re.I)  # options, -r/-e, local paths, bare URLs: no name to check


def parse_requirements(text: str, source: str) -> list[Package]:
    """The named requirements of a requirements.txt; options, includes and unnamed URLs/paths are left out."""
    out = []
    for n, line in enumerate(re.sub(r"\\\r?\n", " ", text).splitlines(), 1):
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        line = re.split(r"\s--?[a-z]", line, maxsplit=1)[0].strip()  # per-line options such as --hash
        if line and not _UNNAMED.search(line):
            out.append(parse_package(line, f"{source}:{n}"))
    return out


_CONDA = re.compile(r"^(?:[^:\s]+::)?([A-Za-z0-9_][A-Za-z0-9_.+-]*)\s*(.*)$")


def parse_conda(spec: str, source: str) -> Package:
    """A conda match spec: `numpy`, `numpy=2.1` (2.1.*), `numpy==2.1.3`, `numpy 2.1.*`, `chan::numpy=2.1=build`."""
    m = _CONDA.match(spec.strip())
    if not m:
        raise PackagesError(f"{source}: {spec!r} is not a conda package spec")
    name, rest = m.groups()
    version, exact = None, True
    if rest.startswith("=="):
        version = rest[2:].split("=")[0]
    elif rest.startswith("="):
        version, exact = rest[1:].split("=")[0], False
    elif rest and rest[0].isalnum():
        version = rest.split()[0]
        exact = "*" not in version
    if version is not None:
        version = version.rstrip("*").rstrip(".") or None
    if version is not None and not re.fullmatch(r"[A-Za-z0-9_.+!-]+", version):
        version, exact = None, True  # a range or an alternative: the package must exist, any version
    return Package(name, version, exact, None, True, source)


def parse_environment(text: str, source: str) -> list[Package]:
    """Conda dependencies and the `pip:` section of an environment.yml."""
    data = parse_yaml(text, source) or {}
    deps = data.get("dependencies") if isinstance(data, dict) else None
    if deps is None:
        return []
    if not isinstance(deps, list):
        raise PackagesError(f"{source}: dependencies: expected a list, got {type(deps).__name__}")
    out = []
    for i, dep in enumerate(deps):
        if isinstance(dep, str):
            out.append(parse_conda(dep, f"{source}: dependencies[{i}]"))
        elif isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            out += parse_requirements("\n".join(str(x) for x in dep["pip"]), f"{source} (pip)")
        else:
            raise PackagesError(f"{source}: dependencies[{i}]: expected a conda spec or a `pip:` list, got {dep!r}")
    return out


def is_environment_file(path: str) -> bool:
    name = posixpath.basename(path)
    return name in ENVIRONMENT_FILES or (name.startswith("requirements") and name.endswith(".txt"))


def _declared(repo: Repo, revs: list[str], paths: list[str]) -> dict[str, dict[str, Package]]:
    """Per revision: every package the environment files under `paths` declare, by normalised name."""
    files = {rev: [p for p in repo.files(rev) if is_environment_file(p) and any(glob_match(p, r) for r in paths)]
             for rev in dict.fromkeys(revs)}
    blobs = repo.read_blobs([f"{rev}:{p}" for rev, ps in files.items() for p in ps])
    out: dict[str, dict[str, Package]] = {}
    for rev, ps in files.items():
        out[rev] = {}
        for p in ps:
            text = (blobs[f"{rev}:{p}"] or b"").decode(errors="replace")
            source = f"{p}@{rev[:12]}"
            parse = parse_requirements if p.endswith(".txt") else parse_environment
            out[rev].update((pkg.key, pkg) for pkg in parse(text, source))
    return out


def changed_packages(repo: Repo, base: str | None, head: str, paths: list[str]) -> list[Package]:
    """Packages that the environment files under `paths` add or change (name, pin or marker) from base to head.

    With no base (a first deploy) every declared package counts as added; with base == head none do.
    """
    if base == head:
        return []
    declared = _declared(repo, [head] + ([base] if base else []), paths)
    old = declared[base] if base else {}
    return [pkg for key, pkg in sorted(declared[head].items()) if old.get(key) != pkg]


def hub_packages(repo: Repo, fleet: Fleet, hub: str, base: str | None, head: str) -> list[Package]:
    """What a verification of `hub` checks: what its images' files changed in base..head, then its always-check list."""
    entry = next((h for h in fleet.hubs if h.name == hub), None)
    if entry is None:
        raise PackagesError(f"hub {hub!r} is not in the fleet at {head[:12]}; hubs: {[h.name for h in fleet.hubs]}")
    paths = [p for ref in entry.images or [] for p in fleet.image(ref.name).paths]
    found = {p.key: p for p in (changed_packages(repo, base, head, paths) if paths else [])}
    for spec in entry.smoke.packages if entry.smoke else []:
        pkg = parse_package(spec, f"fleet: hubs.{hub}.smoke.packages")
        found.setdefault(pkg.key, pkg)
    return list(found.values())
