"""The fleet (a file in the deployment repository, read with git at each revision): the chart, the images and the hubs.

Adding or retiring a hub is one PR to the deployment repository, so this file is read at every revision and anyone who
opens a PR may write it: it is checked completely, each problem named by the file that holds it (the fleet file or a
discovered hub's own file), the field path and the reason, all at once.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from hubflow.core.documents import ConfigError, StrictModel, parse_yaml, top_mapping, validation_problems
from hubflow.core.paths import RepoPath, check_glob, check_repo_path
from hubflow.core.settings import Environment, fleet_name_problems


class HubImage(StrictModel):
    name: str
    values_path: str = Field("jupyterhub.singleuser.image",
                             description="dotted helm values path; name and tag are set under it")


class Smoke(StrictModel):
    packages: list[str] = Field([], description="always checked in this hub's kernel, on top of the plan's changed "
                                                "packages")
    notebook: RepoPath | None = Field(None, description="repository path of a notebook to execute")
    timeout_seconds: int = Field(300, gt=0, description="how long this hub's checks may take besides starting the "
                                 "smoke user's server (which has the settings' timeouts.spawn_seconds); the whole "
                                 "verification stays within timeouts.smoke_seconds")


_NAME = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class HubFields(StrictModel):
    """What a hub entry, a discovered hub file and `hub_defaults` may set."""

    images: list[HubImage] | None = None
    external_image: str | None = Field(None, description="an image not built here, e.g. "
                                                         "quay.io/jupyter/scipy-notebook:2025-01-06")
    values: dict[str, list[RepoPath]] | None = Field(
        None, description="values files relative to the hub folder, by environment; key `common` goes first")
    smoke: Smoke | None = None

    @field_validator("images", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v


class Hub(HubFields):
    name: str = Field(pattern=_NAME)
    folder: str

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        return check_repo_path(v)

    def values_files(self, env: str) -> list[str]:
        """Repository paths of the values files for `env`, in helm order: common first, then the environment's."""
        values = self.values or {}
        return [f"{self.folder}/{p}" for p in values.get("common", []) + values.get(env, [])]


class Image(StrictModel):
    name: str = Field(pattern=_NAME)
    paths: list[str] = Field(min_length=1, description="repository paths whose content defines the image")
    repository: str = Field(description="registry repository, e.g. us-central1-docker.pkg.dev/proj/repo/primary")
    context: RepoPath | None = Field(None, description="repository path of the build context; default: the first path")
    dockerfile: RepoPath = Field("Dockerfile", description="path of the Dockerfile inside the build context")
    builder: Literal["buildkit"] = Field("buildkit", description="rootless BuildKit: maintained, daemonless, "
                                         "needs no privileged pod")

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return [check_repo_path(p) for p in v]

    @property
    def build_context(self) -> str:
        return self.context or self.paths[0]

    @property
    def dockerfile_path(self) -> str:
        """Repository path of the Dockerfile: inside the repository, as both of its parts are."""
        return f"{self.build_context}/{self.dockerfile}"


class Discovery(StrictModel):
    pattern: str = Field(description="gitwildmatch pattern of per-hub files from the repository root, e.g. "
                         "deployments/*/hubflow-hub.yaml; the hub is the folder")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return check_glob(v)


_PATTERNS = ("gitwildmatch from the repository root: `**` spans folders, `*.md` is top level only, a plain folder "
             "(`docs`) is everything under it, `hub/*` only hub's own files")


class Fleet(StrictModel):
    chart: str = Field(description="path of the shared helm chart; a change there redeploys every hub")
    redeploy_all: list[str] = Field([], description=f"patterns: a change here redeploys every hub. {_PATTERNS}")
    deploy_nothing: list[str] = Field([], description="patterns: a change here deploys nothing, even inside a hub "
                                      f"folder. {_PATTERNS}")
    images: list[Image] = []
    hub_defaults: HubFields = HubFields()
    hubs: list[Hub] = []
    hub_discovery: list[Discovery] = []

    @field_validator("chart")
    @classmethod
    def _chart(cls, v: str) -> str:
        return check_repo_path(v)

    @field_validator("redeploy_all", "deploy_nothing")
    @classmethod
    def _globs(cls, v: list[str]) -> list[str]:
        return [check_glob(g) for g in v]

    def image(self, name: str) -> Image:
        return next(i for i in self.images if i.name == name)

    def hub(self, name: str) -> Hub:
        return next(h for h in self.hubs if h.name == name)


def _fleet_problems(f: Fleet, environments: list[str] | None) -> list[tuple[str, str]]:
    problems = []
    images = {i.name for i in f.images}
    for kind, names in (("images", [i.name for i in f.images]), ("hubs", [h.name for h in f.hubs])):
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                problems.append((f"{kind}[{i}].name", f"duplicate name {name!r} (also {kind}[{seen[name]}])"))
            seen[name] = i
    folders: dict[str, int] = {}
    for i, hub in enumerate(f.hubs):
        where = f"hubs[{i}]"
        if hub.folder in folders:
            problems.append((f"{where}.folder", f"folder {hub.folder!r} is also used by hubs[{folders[hub.folder]}]"))
        folders[hub.folder] = i
        for j, ref in enumerate(hub.images or []):
            if ref.name not in images:
                problems.append((f"{where}.images[{j}].name", f"unknown image {ref.name!r}; defined: {sorted(images)}"))
        if not hub.images and not hub.external_image:
            problems.append((where, "a hub needs `images` or `external_image`"))
        if hub.images and hub.external_image:
            problems.append((where, "`images` and `external_image` exclude each other"))
        if environments is not None:
            for key in (hub.values or {}):
                if key != "common" and key not in environments:
                    problems.append((f"{where}.values.{key}", f"unknown environment; configured: {environments}"))
    return problems


Environments = Sequence[str] | Sequence[Environment]


def environment_names(environments: Environments | None) -> list[str] | None:
    """The names of `environments` (given by name or as the settings' environments)."""
    return None if environments is None else [e if isinstance(e, str) else e.name for e in environments]


def parse_fleet(text: str, source: str = "<fleet>", discovered: dict[str, str] | None = None,
                environments: Environments | None = None) -> Fleet:
    """Validate a fleet file. `discovered` maps each per-hub file found by `hub_discovery` to its text.

    A discovered hub is named after its folder; its file holds the same fields as a hub entry, minus name and folder.
    `hub_defaults` fill what a hub leaves out (field by field). Given the settings' environments (not only their
    names), the helm release and namespace each environment renders for each hub are checked too: valid for helm
    and Kubernetes, and no two in the same place on one cluster.
    """
    data = top_mapping(parse_yaml(text, source), source)
    problems: list[tuple[str, str, str]] = []
    defaults = data.get("hub_defaults") or {}
    hubs = data.get("hubs") or []
    if not isinstance(hubs, list):
        hubs = []  # pydantic reports the type error below
    merged = [dict(defaults, **h) if isinstance(h, dict) and isinstance(defaults, dict) else h for h in hubs]
    origin = [(source, f"hubs[{i}]") for i in range(len(merged))]
    for path, hub_text in sorted((discovered or {}).items()):
        try:
            hub_data = parse_yaml(hub_text, path) or {}
            hub_data = top_mapping(hub_data, path)
        except ConfigError as exc:
            problems += exc.problems
            continue
        bad = {"name", "folder"} & set(hub_data)
        if bad:
            problems.append((path, "", f"{sorted(bad)} come from the folder and may not be set here"))
            continue
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        merged.append(dict(defaults if isinstance(defaults, dict) else {}, **hub_data,
                           name=folder.rsplit("/", 1)[-1], folder=folder))
        origin.append((path, ""))
    data = dict(data, hubs=merged)
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as err:
        for path, reason in validation_problems(err):
            problems.append(_locate(path, source, origin, len(hubs)))
            problems[-1] = (*problems[-1][:2], reason)
        raise ConfigError(problems) from None
    for path, reason in _fleet_problems(fleet, environment_names(environments)):
        problems.append((*_locate(path, source, origin, len(hubs))[:2], reason))
    if environments is not None:
        envs = [e for e in environments if isinstance(e, Environment)]
        names = list(dict.fromkeys(h.name for h in fleet.hubs))  # a duplicate name is reported already
        index = {h.name: i for i, h in reversed(list(enumerate(fleet.hubs)))}
        for n, reason in fleet_name_problems(envs, names):
            i = index[names[n]]  # a discovered hub's name is its folder's: no field of its file holds it
            problems.append((*_locate(f"hubs[{i}].name" if i < len(hubs) else f"hubs[{i}]", source, origin,
                                      len(hubs))[:2], reason))
    if problems:
        raise ConfigError(problems)
    return fleet


def _locate(path: str, source: str, origin: list[tuple[str, str]], listed: int) -> tuple[str, str, str]:
    """Map a path in the merged fleet back to the file that holds it (a discovered hub lives in its own file)."""
    m = re.match(r"hubs\[(\d+)\](.*)", path)
    if m and int(m.group(1)) >= listed and int(m.group(1)) < len(origin):
        file, _ = origin[int(m.group(1))]
        return file, m.group(2).lstrip("."), ""
    return source, path, ""
