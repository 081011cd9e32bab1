"""Load and validate hubflow's two configuration files.

The *settings* (include/hubflow.yaml, in this project) say where the deployment repository is and how each
environment is reached. The *fleet* (a file inside the deployment repository, read with git at a revision) says
which images and hubs exist. Both are checked completely at load: every error names the file, the field path and
the reason, and all errors are reported at once.

No Airflow import here: the CLI, the plan and the tests use this module on their own.
"""
from __future__ import annotations

import datetime as dt
import functools
import os
import re
import string
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import CroniterBadDateError, croniter
from hubflow.core.errors import HubflowError
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

DEFAULT_SETTINGS = Path(__file__).resolve().parents[3] / "include" / "hubflow.yaml"
HUB_PLACEHOLDERS = {"hub", "env"}


class ConfigError(HubflowError):
    """One or more problems in a configuration file; `problems` holds (file, field path, reason)."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{f}: {p or '(top level)'}: {r}" for f, p, r in problems))


class UnknownEnvironment(HubflowError, KeyError):
    """A name that is not one of the configured environments (a KeyError too, for lookups that expect one)."""

    def __str__(self) -> str:
        return self.args[0]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- settings


def _check_pattern(value: str, allowed: set[str]) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    unknown = names - allowed
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return value


_REF_BAD = re.compile(r"(^[/.-])|(/$)|(\.\.)|(//)|(@\{)|(\.lock$)|(\.lock/)|(/\.)|([\x00-\x20\x7f~^:?*\[\\])|(^@$)")


def check_branch_name(name: str) -> str:
    """Apply git's check-ref-format rules without running git (no I/O at load)."""
    if not name or _REF_BAD.search(name) or name.endswith("."):
        raise ValueError(f"{name!r} is not a valid git branch name")
    return name


class Repository(_Model):
    github: str = Field(description="owner/name of the deployment repository on GitHub")
    clone_url: str = Field(description="URL that pods and the revert step clone from")
    github_conn_id: str = "github_default"
    fleet_file: str = "hubflow-fleet.yaml"
    git_secret: str = Field("hubflow-git", description="Kubernetes Secret with key `token` used to clone in pods")

    @field_validator("github")
    @classmethod
    def _owner_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", v):
            raise ValueError(f"{v!r} is not owner/name")
        return v

    @field_validator("clone_url")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        if re.match(r"^[a-z+]+://[^/]*@", v):
            raise ValueError("must not contain credentials: they come from the connection and the git Secret")
        return v

    @field_validator("fleet_file")
    @classmethod
    def _relative(cls, v: str) -> str:
        return check_repo_path(v)


class FreezeWindow(_Model):
    """One absolute window, e.g. the winter break."""

    start: dt.datetime = Field(description="ISO 8601 with a time zone, e.g. 2026-12-18T17:00:00-08:00")
    end: dt.datetime
    reason: str = "scheduled freeze"

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("needs a time zone (e.g. Z or -08:00)")
        return v


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")


def parse_duration(v: str) -> dt.timedelta:
    """`2d16h`, `64h`, `90m`: days, hours, minutes, in that order; the one format freeze windows take."""
    m = _DURATION.fullmatch(v.strip())
    if not m or not any(m.groups()):
        raise ValueError(f"{v!r} is not a duration such as 64h, 90m or 2d16h")
    days, hours, minutes = (int(g or 0) for g in m.groups())
    length = dt.timedelta(days=days, hours=hours, minutes=minutes)
    if not length:
        raise ValueError(f"{v!r}: a freeze window must last longer than zero")
    return length


def check_cron(v: str) -> str:
    if not (len(v.split()) == 5 or v.startswith("@")) or not croniter.is_valid(v):
        raise ValueError(f"{v!r} is not a five-field cron expression (minute hour day month weekday)")
    try:
        croniter(v, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError:
        raise ValueError(f"{v!r} never starts (no such date)") from None
    return v


def check_timezone(v: str) -> str:
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{v!r} is not a known IANA time zone (e.g. America/Los_Angeles, UTC)") from None
    return v


Cron = Annotated[str, AfterValidator(check_cron)]
TimeZone = Annotated[str, AfterValidator(check_timezone)]


class RecurringFreezeWindow(_Model):
    """A window that comes back, e.g. every weekend; its start is wall-clock time in its zone, DST included."""

    cron: Cron = Field(description="when each window starts: five cron fields (minute hour day month weekday) or an "
                      "alias such as @weekly, e.g. \"0 16 * * FRI\"")
    duration: str = Field(description="how long each window lasts, in wall-clock time of its zone: days, hours, "
                          "minutes as in 64h, 90m or 2d16h (64h from Friday 16:00 ends Monday 08:00, DST or not)")
    timezone: TimeZone = Field(description="IANA time zone the cron is read in, e.g. America/Los_Angeles")
    reason: str = "scheduled freeze"

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def length(self) -> dt.timedelta:
        return parse_duration(self.duration)


def _window_kind(v: Any) -> str:
    """A window with a `cron` recurs; the error then speaks of that kind only, not of both."""
    recurring = isinstance(v, RecurringFreezeWindow) or (isinstance(v, dict) and "cron" in v)
    return "recurring" if recurring else "absolute"


_UNION_TAGS = {"absolute", "recurring"}  # pydantic puts the union member in an error's location; paths leave it out
AnyFreezeWindow = Annotated[
    Annotated[FreezeWindow, Tag("absolute")] | Annotated[RecurringFreezeWindow, Tag("recurring")],
    Discriminator(_window_kind),
]


class Environment(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    branch: str
    kubernetes_conn_id: str = "kubernetes_default"
    namespace: str = Field("{hub}-{env}", description="namespace of a hub's release; placeholders {hub}, {env}")
    release: str = Field("{hub}-{env}", description="helm release name; placeholders {hub}, {env}")
    hub_url: str = Field(description="public URL of a hub; placeholders {hub}, {env}")
    service_account: str = "hubflow-deployer"
    smoke_token_conn_id: str = "hubflow_smoke"
    build_images: bool = Field(True, description="false: images must already exist (prod never builds)")
    builder: Literal["buildkit", "docker"] = Field(
        "buildkit", description="buildkit: a rootless BuildKit pod in the cluster per image; docker: the Docker "
        "Engine API at DOCKER_HOST (or `docker_host`), from the Airflow worker")
    docker_host: str | None = Field(None, description="Docker Engine URL for builder: docker (unix://, tcp://); "
                                    "default: the worker's DOCKER_HOST")
    freeze_windows: list[AnyFreezeWindow] = Field(
        [], description="times when this environment neither deploys nor promotes: {start, end, reason} once, or "
        "{cron, duration, timezone, reason} again and again")

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        return check_branch_name(v)

    @field_validator("namespace", "release", "hub_url")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        return _check_pattern(v, HUB_PLACEHOLDERS)

    def render(self, pattern: str, hub: str) -> str:
        return pattern.format(hub=hub, env=self.name)

    def namespace_for(self, hub: str) -> str:
        return self.render(self.namespace, hub)

    def release_for(self, hub: str) -> str:
        return self.render(self.release, hub)

    def url_for(self, hub: str) -> str:
        return self.render(self.hub_url, hub)


class Deploy(_Model):
    max_parallel: int = Field(10, ge=1, description="how many hubs upgrade at once in one run (the rest wait for "
                              "a slot; each hub is verified as soon as its own upgrade ends)")
    canary: list[str] = Field([], description="hubs upgraded and verified first when the plan deploys them; the "
                              "others only after every canary passed (a failing canary stops the wave)")

    @field_validator("canary")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate hub in {v}")
        return v


class Promotion(_Model):
    mode: Literal["pull_request", "merge"] = "pull_request"
    reviewers: list[str] = []
    labels: list[str] = ["hubflow", "promotion"]
    soak_minutes: int = Field(0, ge=0, description="how long a revision must have been verified and still live on "
                              "the source environment before hubflow_promote moves it on")
    approval: Literal["none", "required"] = Field("none", description="required: hubflow_promote merges only after "
                                                  "a person approves in Airflow (Required Actions)")
    approvers: list[str] = Field([], description="Airflow user ids who may answer the approval (empty: any user "
                                 "allowed to act on the DAG)")
    approval_timeout_minutes: int = Field(240, gt=0, description="no answer by then counts as Reject")


class Revert(_Model):
    mode: Literal["pull_request", "merge"] = "pull_request"


class Registry(_Model):
    conn_id: str = "hubflow_registry"
    secret: str = Field("hubflow-registry", description="Kubernetes Secret (dockerconfigjson) the builder pushes with")


class Schedules(_Model):
    nightly: Cron = Field("0 7 * * *", description="when the nightly verification runs (cron, read in `timezone`)")
    timezone: TimeZone = Field("UTC", description="IANA time zone of `nightly`, e.g. America/Los_Angeles")
    poll_interval_seconds: int = Field(60, ge=5)



class Timeouts(_Model):
    build_seconds: int = Field(3600, gt=0)
    helm_seconds: int = Field(1800, gt=0)
    smoke_seconds: int = Field(600, gt=0)
    spawn_seconds: int = Field(300, gt=0, description="how long a smoke user's server may take to start, apart "
                               "from the package checks")
    pod_startup_seconds: int = Field(600, gt=0)
    github_wait_seconds: int = Field(900, gt=0, description="how long one GitHub operation may wait in all for "
                                     "its retries (5xx, rate limits) before the task fails and Airflow retries it")


class Resources(_Model):
    cpu: str = "500m"
    memory: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"


class Pods(_Model):
    runner_image: str = "ghcr.io/hubflow/runner:0.1.0"
    builder_image: str = "moby/buildkit:v0.18.2-rootless"
    git_image: str = "alpine/git:2.47.2"
    namespace: str = Field("hubflow", description="namespace where hubflow's own pods run")
    build_service_account: str = Field("hubflow-builder", description="service account of build pods: no cluster "
                                       "role, no cloud identity, none of the deploy Secrets")
    deferrable: bool = True
    history_max: int = Field(10, ge=1)
    recover_pending: bool = Field(False, description="roll a release stuck in pending-* back before upgrading")
    resources: Resources = Resources()
    build_resources: Resources = Resources(cpu="1", memory="2Gi", cpu_limit="4", memory_limit="8Gi")


class LedgerSettings(_Model):
    conn_id: str = Field("hubflow_ledger", description="Airflow connection of the ledger database "
                         "(PostgreSQL; or extra {\"url\": SQLAlchemy URL})")


class Notify(_Model):
    slack_conn_id: str | None = None


class Settings(_Model):
    repository: Repository
    environments: list[Environment] = Field(min_length=1)
    registry: Registry = Registry()
    deploy: Deploy = Deploy()
    promotion: Promotion = Promotion()
    revert: Revert = Revert()
    schedules: Schedules = Schedules()
    timeouts: Timeouts = Timeouts()
    pods: Pods = Pods()
    ledger: LedgerSettings = LedgerSettings()
    notify: Notify = Notify()

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise UnknownEnvironment(f"unknown environment {name!r}; configured: {[e.name for e in self.environments]}")

    def next_environment(self, name: str) -> Environment | None:
        """The environment a verified revision of `name` promotes to (promotion order = list order)."""
        i = [e.name for e in self.environments].index(name)
        return self.environments[i + 1] if i + 1 < len(self.environments) else None

    def previous_environment(self, name: str) -> Environment | None:
        """The environment whose verified revisions `name` receives; None for the first one."""
        i = [e.name for e in self.environments].index(name)
        return self.environments[i - 1] if i else None


def _settings_problems(s: Settings) -> list[tuple[str, str]]:
    problems = []
    seen: dict[str, int] = {}
    for i, env in enumerate(s.environments):
        for key, value in (("name", env.name), ("branch", env.branch)):
            if (key, value) in seen:
                problems.append((f"environments[{i}].{key}", f"duplicate {key} {value!r} (also environments[{seen[(key, value)]}])"))
            seen[(key, value)] = i
    return problems


# ---------------------------------------------------------------- fleet


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


class HubImage(_Model):
    name: str
    values_path: str = Field("jupyterhub.singleuser.image", description="dotted helm values path; name and tag are set under it")


class Smoke(_Model):
    packages: list[str] = Field([], description="always checked in this hub's kernel, on top of the plan's changed packages")
    notebook: RepoPath | None = Field(None, description="repository path of a notebook to execute")
    timeout_seconds: int = Field(300, gt=0)


_NAME = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"


class HubFields(_Model):
    """What a hub entry, a discovered hub file and `hub_defaults` may set."""

    images: list[HubImage] | None = None
    external_image: str | None = Field(None, description="an image not built here, e.g. quay.io/jupyter/scipy-notebook:2025-01-06")
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


class Image(_Model):
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


class Discovery(_Model):
    pattern: str = Field(description="gitwildmatch pattern of per-hub files from the repository root, e.g. "
                         "deployments/*/hubflow-hub.yaml; the hub is the folder")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return check_glob(v)


_PATTERNS = ("gitwildmatch from the repository root: `**` spans folders, `*.md` is top level only, a plain folder "
             "(`docs`) is everything under it, `hub/*` only hub's own files")


class Fleet(_Model):
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
    for kind, items in (("images", f.images), ("hubs", f.hubs)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                problems.append((f"{kind}[{i}].name", f"duplicate name {item.name!r} (also {kind}[{seen[item.name]}])"))
            seen[item.name] = i
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


# ---------------------------------------------------------------- loading


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")) and part not in _UNION_TAGS:
            out += f".{part}" if out else str(part)
    return out


def _pydantic_problems(err: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        path = _format_loc(e["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        reason = e["msg"]
        if e["type"] == "extra_forbidden":
            reason = "unknown key"
        elif e["type"] == "missing":
            reason = "required key is missing"
        out.append((path, reason.removeprefix("Value error, ")))
    return out


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on a 300-hub fleet


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None


def _mapping(data: Any, source: str) -> dict:
    if not isinstance(data, dict):
        raise ConfigError([(source, "", f"expected a mapping at the top level, got {type(data).__name__}")])
    return data


def settings_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("HUBFLOW_CONFIG") or DEFAULT_SETTINGS)


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read the settings file (`path`, else $HUBFLOW_CONFIG, else include/hubflow.yaml)."""
    p = settings_path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([(str(p), "", f"cannot read: {exc.strerror}")]) from None
    return parse_settings(text, str(p))


def parse_settings(text: str, source: str = "<settings>") -> Settings:
    data = _mapping(parse_yaml(text, source), source)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError([(source, p, r) for p, r in _pydantic_problems(err)]) from None
    problems = _settings_problems(settings)
    if problems:
        raise ConfigError([(source, p, r) for p, r in problems])
    return settings


def parse_fleet(text: str, source: str = "<fleet>", discovered: dict[str, str] | None = None,
                environments: list[str] | None = None) -> Fleet:
    """Validate a fleet file. `discovered` maps each per-hub file found by `hub_discovery` to its text.

    A discovered hub is named after its folder; its file holds the same fields as a hub entry, minus name and folder.
    `hub_defaults` fill what a hub leaves out (field by field).
    """
    data = _mapping(parse_yaml(text, source), source)
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
            hub_data = _mapping(hub_data, path)
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
        for path, reason in _pydantic_problems(err):
            problems.append(_locate(path, source, origin, len(hubs)))
            problems[-1] = (*problems[-1][:2], reason)
        raise ConfigError(problems) from None
    for path, reason in _fleet_problems(fleet, environments):
        problems.append((*_locate(path, source, origin, len(hubs))[:2], reason))
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


def json_schemas() -> dict[str, dict]:
    """JSON schemas of both files, for editors (written to include/schemas/ by `hubflow schema`)."""
    return {"hubflow.schema.json": Settings.model_json_schema(), "hubflow-fleet.schema.json": Fleet.model_json_schema()}
