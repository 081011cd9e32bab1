"""The plan: for a revision range, which images to build (with tags) and which hubs to deploy, each with its reason.

Everything is read from git objects at the two revisions, never from a checkout, with a fixed number of git
processes whatever the size of the fleet (one diff, a few batched object reads, one log per image).
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, cast

from hubflow.core.documents import ConfigError, parse_yaml
from hubflow.core.errors import HubflowError
from hubflow.core.fleet import Environments, Fleet, Hub, environment_names, parse_fleet
from hubflow.core.paths import check_glob, glob_match

if TYPE_CHECKING:  # the core takes its clients as arguments and imports none of them
    from hubflow.clients.git import Repo


class PlanError(HubflowError):
    """The range cannot be planned (unknown revision, not a fast-forward, broken fleet at a revision)."""


@dataclass
class ImagePlan:
    name: str
    repository: str
    tag: str
    changed: bool
    reason: str
    last_commit: str | None
    changed_files: list[str] = field(default_factory=list)
    hubs: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass
class HubPlan:
    name: str
    reason: str
    folder: str
    images: list[str] = field(default_factory=list)


@dataclass
class Plan:
    base: str | None
    head: str
    images: list[ImagePlan]
    hubs: list[HubPlan]
    removed_hubs: list[str]
    fleet: Fleet | None = field(default=None, repr=False, compare=False)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("fleet")
        return out

    def image(self, name: str) -> ImagePlan:
        return next(i for i in self.images if i.name == name)


def image_tag(path_ids: list[tuple[str, str]]) -> str:
    """Tag from the content of an image's paths: the git tree id for one path, a hash of (path, id) pairs otherwise.

    The same content always gives the same tag, so a revert brings back a tag that is already built. Twelve hex
    characters; a tag that happens to be all digits gets a letter, because helm reads such a tag as a number.
    """
    if len(path_ids) == 1:
        digest = path_ids[0][1]
    else:
        digest = hashlib.sha1("".join(f"{p} {o}\n" for p, o in path_ids).encode()).hexdigest()
    tag = digest[:12]
    return "h" + digest[:11] if tag.isdigit() else tag


def read_fleet(repo: Repo, rev: str, fleet_file: str, environments: Environments | None = None,
               check_paths: bool = True) -> Fleet | None:
    """The fleet at `rev` (None when the fleet file does not exist there).

    With `check_paths`, every folder, image path, chart and values file it names must exist at `rev`. Given the
    settings' environments, the release and namespace names they render for its hubs are checked too.
    """
    source = f"{fleet_file}@{rev[:12]}"
    text = repo.read_blobs([f"{rev}:{fleet_file}"])[f"{rev}:{fleet_file}"]
    if text is None:
        return None
    patterns = parse_fleet_discovery(text.decode(errors="replace"), source)
    files = repo.files(rev) if patterns or check_paths else []
    discovered: dict[str, str] = {}
    if patterns:
        found = [p for p in files if any(glob_match(p, pat) for pat in patterns)]
        blobs = repo.read_blobs([f"{rev}:{p}" for p in found])
        discovered = {p: (blobs[f"{rev}:{p}"] or b"").decode(errors="replace") for p in found}
    fleet = parse_fleet(text.decode(errors="replace"), source, discovered, environments)
    if check_paths:
        _check_paths(fleet, files, source, rev)
    return fleet


def parse_fleet_discovery(text: str, source: str) -> list[str]:
    """The valid discovery patterns of a fleet file, read before the hub files they find.

    A bad pattern is left out here: the full validation that follows reports it with every other problem.
    """
    data = parse_yaml(text, source)
    rules = data.get("hub_discovery") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        return []
    out = []
    for rule in rules:
        if isinstance(rule, dict) and isinstance(rule.get("pattern"), str):
            with contextlib.suppress(ValueError):
                out.append(check_glob(rule["pattern"]))
    return out


def _check_paths(fleet: Fleet, files: list[str], source: str, rev: str) -> None:
    """Every folder, image path, chart and values file the fleet names must exist in the tree (`files`) at `rev`.

    A build context must be a folder: git lists a symlink as a file, so a context can never be a link to
    something outside the checkout (such as the mounted registry credentials).
    """
    folders = {"/".join(parts[:n]) for parts in (p.split("/") for p in files) for n in range(1, len(parts))}
    present = folders | set(files)
    wanted: dict[str, str] = {fleet.chart: "chart"}
    contexts: dict[str, str] = {}
    for i, image in enumerate(fleet.images):
        for j, p in enumerate(image.paths):
            wanted[p] = f"images[{i}].paths[{j}]"
        contexts[image.build_context] = f"images[{i}].context" if image.context else f"images[{i}].paths[0]"
        wanted[image.dockerfile_path] = f"images[{i}].dockerfile"
    for i, hub in enumerate(fleet.hubs):
        wanted[hub.folder] = f"hubs[{i}].folder ({hub.name})"
        for key, values in (hub.values or {}).items():
            for j, p in enumerate(values):
                wanted[f"{hub.folder}/{p}"] = f"hubs[{i}].values.{key}[{j}] ({hub.name})"
    problems = [(source, where, f"{path!r} does not exist at {rev[:12]}")
                for path, where in wanted.items() if path not in present]
    problems += [(source, where, f"build context {path!r} is not a folder at {rev[:12]}")
                 for path, where in contexts.items() if path not in folders]
    if problems:
        raise ConfigError(problems)


def make_plan(repo: Repo, base: str | None, head: str, fleet_file: str,
              environments: Environments | None = None, also: dict[str, str] | None = None) -> Plan:
    """Plan the range base..head (base None or empty: first deploy, every hub and every image).

    `also` names hubs to deploy whatever the diff says, with the reason (the hubs a failed run touched, when
    the range reverts it); names not in the fleet at head are ignored. Given the settings' environments, the names
    they render for the hubs at head must be valid and unique (ConfigError otherwise); the fleet at base is
    what runs now, so only its own validity counts (a range that mends two colliding hubs plans).
    """
    if base:
        base, head = repo.resolve(base, head)
        if not repo.is_ancestor(base, head):
            raise PlanError(f"base {base[:12]} is not an ancestor of head {head[:12]}: the branch was rewritten; "
                            "plan from the last common revision or deploy with no base")
    else:
        base, (head,) = None, repo.resolve(head)
    fleet = read_fleet(repo, head, fleet_file, environments)
    if fleet is None:
        raise PlanError(f"fleet file {fleet_file!r} does not exist at head {head[:12]}")
    old = read_fleet(repo, base, fleet_file, environment_names(environments), check_paths=False) if base else None
    first = base is None or old is None
    changed = [] if base is None or first or base == head else _relevant_changes(repo, base, head, fleet)

    images = _image_plans(repo, head, fleet, old, changed, first)
    changed_images = {i.name for i in images if i.changed}
    shared = next((f"shared path {p} changed" for p in changed if glob_match(p, fleet.chart)
                   or any(glob_match(p, g) for g in fleet.redeploy_all)), None)
    if shared is None and old is not None and old.chart != fleet.chart:
        shared = f"chart moved to {fleet.chart}"
    by_folder = _changes_by_hub_folder(changed, fleet)
    old_hubs = {h.name: h for h in old.hubs} if old else {}

    hubs = []
    for hub in fleet.hubs:
        uses = [ref.name for ref in hub.images or []]
        reason = _hub_reason(hub, first, old_hubs.get(hub.name), shared, by_folder.get(hub.folder),
                             [n for n in uses if n in changed_images]) or (also or {}).get(hub.name)
        if reason:
            hubs.append(HubPlan(hub.name, reason, hub.folder, uses))
    deployed = {h.name for h in hubs}
    for image in images:
        image.hubs = [h.name for h in fleet.hubs if image.name in [r.name for r in h.images or []]]
    needed = [i for i in images if i.changed or deployed & set(i.hubs)]
    removed = sorted(set(old_hubs) - {h.name for h in fleet.hubs})
    warnings = [] if not hubs else unvendored(repo, head, fleet.chart)
    return Plan(base, head, needed, hubs, removed, fleet, warnings)


def unvendored(repo: Repo, rev: str, chart: str) -> list[str]:
    """A warning naming the chart when a dependency of its Chart.yaml is not committed in its charts/ folder (as
    `helm dependency update` writes it): then every upgrade pod downloads it (include/runner/README.md)."""
    text = repo.read_blobs([f"{rev}:{chart}/Chart.yaml"])[f"{rev}:{chart}/Chart.yaml"]
    try:
        deps = parse_yaml((text or b"").decode(errors="replace"), chart).get("dependencies") or []
        wanted = {f"{d['name']}-{d['version']}": d["name"] for d in deps}
    except (ConfigError, AttributeError, TypeError, KeyError):  # helm names a broken Chart.yaml in the pod
        return []
    ids = repo.object_ids([f"{rev}:{chart}/charts/{spec}.tgz" for spec in wanted]
                          + [f"{rev}:{chart}/charts/{name}/Chart.yaml" for name in wanted.values()])
    missing = [spec for spec, name in wanted.items() if ids[f"{rev}:{chart}/charts/{spec}.tgz"] is None
               and ids[f"{rev}:{chart}/charts/{name}/Chart.yaml"] is None]
    if not missing:
        return []
    return [f"chart {chart} does not vendor {', '.join(missing)}: every upgrade pod downloads it; run "
            f"`helm dependency update {chart}` and commit {chart}/Chart.lock and {chart}/charts/"]


def _hub_reason(hub: Hub, first: bool, old: Hub | None, shared: str | None, files: list[str] | None,
                changed_images: list[str]) -> str | None:
    """Why a hub is deployed, the strongest reason first; None when it is not."""
    if first:
        return "first deploy"
    if old is None:
        return "new hub"
    if shared:
        return shared
    if files:
        return _files_reason(files)
    if old != hub:
        return "fleet entry changed"
    if changed_images:
        return f"image {changed_images[0]} changed"
    return None


def _relevant_changes(repo: Repo, base: str, head: str, fleet: Fleet) -> list[str]:
    """Changed paths (both sides of a rename), less those that deploy nothing."""
    paths: list[str] = []
    for change in repo.changed_paths(base, head):
        paths.extend(change[1:])
    return [p for p in dict.fromkeys(paths) if not any(glob_match(p, g) for g in fleet.deploy_nothing)]


def _changes_by_hub_folder(changed: list[str], fleet: Fleet) -> dict[str, list[str]]:
    """Changed paths per hub folder, found by walking each path's parents (cost: files x depth, not files x hubs)."""
    folders = {h.folder for h in fleet.hubs}
    out: dict[str, list[str]] = {}
    for path in changed:
        parts = path.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[:n])
            if parent in folders:
                out.setdefault(parent, []).append(path)
    return out


def _files_reason(files: list[str]) -> str:
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    return f"{files[0]} changed{more}"


def _image_plans(repo: Repo, head: str, fleet: Fleet, old: Fleet | None, changed: list[str],
                 first: bool) -> list[ImagePlan]:
    # read_fleet (check_paths) found every image path at head: none of these ids is None
    ids = cast("dict[str, str]", repo.object_ids([f"{head}:{p}" for image in fleet.images for p in image.paths]))
    old_images = {i.name: i for i in old.images} if old else {}
    plans = []
    for image in fleet.images:
        files = [p for p in changed if any(glob_match(p, root) for root in image.paths)]
        reason = ("first deploy" if first else
                  "new image" if image.name not in old_images else
                  "fleet entry changed" if old_images[image.name] != image else
                  _files_reason(files) if files else "unchanged")
        tag = image_tag([(p, ids[f"{head}:{p}"]) for p in image.paths])
        plans.append(ImagePlan(image.name, image.repository, tag, reason != "unchanged", reason,
                               repo.last_commit(head, image.paths), files))
    return plans


WAVES = ("canary", "rest")  # the deploy's waves in order; each is a mapped task group of the deploy DAG


def deploy_waves(plan: Plan, canary: list[str]) -> dict[str, list[str]]:
    """The hubs of each wave, in plan order: the canaries this plan deploys, then the rest (deployed only after
    every canary passed). A canary the fleet does not know is refused by name: a typo would skip the canary."""
    known = [h.name for h in plan.fleet.hubs] if plan.fleet else [h.name for h in plan.hubs]
    unknown = [name for name in canary if name not in known]
    if unknown:
        raise PlanError(f"deploy.canary names hub(s) the fleet does not have at {plan.head[:12]}: "
                        f"{', '.join(unknown)}; its hubs are {', '.join(known) or 'none'}")
    return {"canary": [h.name for h in plan.hubs if h.name in canary],
            "rest": [h.name for h in plan.hubs if h.name not in canary]}


def format_plan(plan: Plan) -> str:
    """A readable table of the plan, for the CLI and task logs."""
    lines = [f"plan {plan.base[:12] if plan.base else '(first deploy)'}..{plan.head[:12]}", "", "images:"]
    lines += [f"  {i.name:<24} {i.tag:<14} {'build' if i.changed else 'reuse':<6} {i.reason}"
              for i in plan.images] or ["  (none)"]
    lines += ["", "hubs to deploy:"]
    lines += [f"  {h.name:<24} {h.reason}" for h in plan.hubs] or ["  (none)"]
    if plan.removed_hubs:
        lines += ["", "hubs removed from the fleet (not deployed; uninstall by hand):"]
        lines += [f"  {name}" for name in plan.removed_hubs]
    lines += ["", *(f"warning: {w}" for w in plan.warnings)] if plan.warnings else []
    return "\n".join(lines)
