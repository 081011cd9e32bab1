"""The settings (include/hubflow.yaml, in this project): where the deployment repository is, how each environment is
reached and when it may change, and the knobs of every step. DAGs are generated from this file only, so it is checked
completely at load: every problem names the file, the field path and the reason, all at once.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import string
import zoneinfo
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from croniter import CroniterBadDateError, croniter
from pydantic import AfterValidator, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from hubflow.core.documents import ConfigError, StrictModel, parse_yaml, top_mapping, validation_problems
from hubflow.core.errors import HubflowError
from hubflow.core.paths import check_repo_path

DEFAULT_SETTINGS = Path(__file__).resolve().parents[3] / "include" / "hubflow.yaml"
HUB_PLACEHOLDERS = {"hub", "env"}


class UnknownEnvironment(HubflowError, KeyError):
    """A name that is not one of the configured environments (a KeyError too, for lookups that expect one)."""

    def __str__(self) -> str:
        return self.args[0]


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


# helm 4's own rule for a release name (pkg/chart/v2/util/validate_name.go, ValidateReleaseName, which every helm
# action applies): the Kubernetes name pattern and at most 53 characters (63 less 10 that charts append to it)
RELEASE_MAX = 53
_RELEASE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# a namespace is a DNS-1123 label (the API server's IsDNS1123Label)
NAMESPACE_MAX = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SHORTEST_HUB = "a"  # a pattern that fails for this hub name fails for every hub name the fleet allows


def release_name_problem(name: str) -> str | None:
    """Why helm would refuse `name` as a release name (completing "... release 'x' ..."), or None."""
    if len(name) > RELEASE_MAX:
        return f"is {len(name)} characters, more than helm's limit of {RELEASE_MAX} for a release name"
    if not _RELEASE_NAME.fullmatch(name):
        return ("is not a name helm accepts for a release: lowercase letters, digits, '-' and '.', "
                "a letter or digit at each end")
    return None


def namespace_problem(name: str) -> str | None:
    """Why Kubernetes would refuse `name` as a namespace (a DNS-1123 label), or None."""
    if len(name) > NAMESPACE_MAX:
        return f"is {len(name)} characters, more than the limit of {NAMESPACE_MAX} for a Kubernetes namespace"
    if not _DNS_LABEL.fullmatch(name):
        return ("is not a valid Kubernetes namespace (a DNS-1123 label): lowercase letters, digits and '-', "
                "a letter or digit at each end")
    return None


NAME_CHECKS = {"release": release_name_problem, "namespace": namespace_problem}


class Repository(StrictModel):
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


class FreezeWindow(StrictModel):
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


class RecurringFreezeWindow(StrictModel):
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


AnyFreezeWindow = Annotated[  # its tags are in documents.UNION_TAGS: error paths leave them out
    Annotated[FreezeWindow, Tag("absolute")] | Annotated[RecurringFreezeWindow, Tag("recurring")],
    Discriminator(_window_kind),
]


class Environment(StrictModel):
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

    def name_problems(self, hub: str) -> list[tuple[str, str, str]]:
        """What helm or Kubernetes would refuse in the names this environment renders for `hub`:
        (field, rendered name, why), for `release` and `namespace`."""
        out = []
        for key, check in NAME_CHECKS.items():
            rendered = self.render(getattr(self, key), hub)
            why = check(rendered)
            if why:
                out.append((key, rendered, why))
        return out

    def place(self, hub: str) -> tuple[str, str, str]:
        """Where `hub`'s release lives: (cluster connection, namespace, release); two hubs or environments with
        the same place would upgrade each other's release."""
        return self.kubernetes_conn_id, self.namespace_for(hub), self.release_for(hub)


class Deploy(StrictModel):
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


class Promotion(StrictModel):
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


class Revert(StrictModel):
    mode: Literal["pull_request", "merge"] = "pull_request"


class Registry(StrictModel):
    conn_id: str = "hubflow_registry"
    secret: str = Field("hubflow-registry", description="Kubernetes Secret (dockerconfigjson) the builder pushes with")


class Schedules(StrictModel):
    nightly: Cron = Field("0 7 * * *", description="when the nightly verification runs (cron, read in `timezone`)")
    timezone: TimeZone = Field("UTC", description="IANA time zone of `nightly`, e.g. America/Los_Angeles")
    poll_interval_seconds: int = Field(60, ge=5)



# what a verification needs besides its two spawns (the first and its retry): the hub's health and API, the smoke
# user, then at least a kernel on the server
SPAWN_ROOM_SECONDS = 60


class Timeouts(StrictModel):
    build_seconds: int = Field(3600, gt=0)
    helm_seconds: int = Field(1800, gt=0)
    smoke_seconds: int = Field(900, gt=0, description="how long one hub's verification may take in all, its spawns "
                               "included (a hub's smoke.timeout_seconds limits its other checks); room for two "
                               "spawns: at least 2 x spawn_seconds + 60")
    spawn_seconds: int = Field(300, gt=0, description="how long a smoke user's server may take to start (a node "
                               "scaling up, an image pull), apart from the other checks; a spawn still pending then "
                               "is retried once with a fresh user, and is the platform's fault, not the revision's")
    pod_startup_seconds: int = Field(600, gt=0)
    github_wait_seconds: int = Field(900, gt=0, description="how long one GitHub operation may wait in all for "
                                     "its retries (5xx, rate limits) before the task fails and Airflow retries it")

    @model_validator(mode="after")
    def _room_for_the_spawn_retry(self) -> Timeouts:
        need = 2 * self.spawn_seconds + SPAWN_ROOM_SECONDS
        if self.smoke_seconds < need:
            raise ValueError(
                f"smoke_seconds ({self.smoke_seconds}) leaves no room for the spawn's retry: it must be at least "
                f"2 x spawn_seconds ({self.spawn_seconds}) + {SPAWN_ROOM_SECONDS} = {need} (raise smoke_seconds "
                f"or lower spawn_seconds): otherwise a spawn that runs out of its time is never tried again with a "
                f"fresh user")
        return self


class Resources(StrictModel):
    cpu: str = "500m"
    memory: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"


class Pods(StrictModel):
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


class LedgerSettings(StrictModel):
    conn_id: str = Field("hubflow_ledger", description="Airflow connection of the ledger database "
                         "(PostgreSQL; or extra {\"url\": SQLAlchemy URL})")


class Notify(StrictModel):
    slack_conn_id: str | None = None


class Settings(StrictModel):
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
    seen: dict[tuple[str, str], int] = {}
    for i, env in enumerate(s.environments):
        for key, value in (("name", env.name), ("branch", env.branch)):
            if (key, value) in seen:
                problems.append((f"environments[{i}].{key}",
                                 f"duplicate {key} {value!r} (also environments[{seen[(key, value)]}])"))
            seen[(key, value)] = i
    return problems + _name_problems(s.environments)


def _name_problems(environments: list[Environment]) -> list[tuple[str, str]]:
    """What the settings alone show of the names they render: a pattern that no hub name can make valid, and two
    environments on one cluster that give every hub the same release in the same namespace. The rest depends on
    the hub names: the fleet's validation checks it (`fleet_name_problems`)."""
    problems = []
    for i, env in enumerate(environments):
        for key, rendered, why in env.name_problems(SHORTEST_HUB):
            problems.append((f"environments[{i}].{key}", f"{getattr(env, key)!r} renders {rendered!r} for a hub "
                             f"named {SHORTEST_HUB!r}, which {why}; no hub name can fix that"))
    places: dict[tuple[str, str, str], int] = {}
    for i, env in enumerate(environments):
        place = env.place("{hub}")  # the hub left as a placeholder: equal here means equal for every hub
        j = places.setdefault(place, i)
        if j != i and environments[j].name != env.name:  # a duplicate name is reported already
            conn, namespace, release = place
            problems.append((f"environments[{i}].release", f"{env.name} and environments[{j}] "
                             f"({environments[j].name}) render the same helm release {release!r} in namespace "
                             f"{namespace!r} on the same cluster ({conn}) for every hub: each would upgrade the "
                             "other's release; put {env} in the release or the namespace"))
    return problems


def fleet_name_problems(environments: Sequence[Environment], hubs: Sequence[str]) -> list[tuple[int, str]]:
    """The names the settings' environments (all of them, in order) render for these hubs: (index in `hubs`,
    reason) for every release or namespace helm or Kubernetes would refuse, and for every hub whose release lands
    where another hub's already is (in this environment, or in another one on the same cluster)."""
    problems = []
    places: dict[tuple[str, str, str], tuple[str, str]] = {}
    for k, env in enumerate(environments):
        for i, hub in enumerate(hubs):
            for key, rendered, why in env.name_problems(hub):
                problems.append((i, f"hub {hub!r} ({len(hub)} characters): its {env.name} {key} {rendered!r} {why} "
                                 f"(environments[{k}].{key} is {getattr(env, key)!r})"))
            place = env.place(hub)
            other_env, other = places.setdefault(place, (env.name, hub))
            if (other_env, other) != (env.name, hub):
                conn, namespace, release = place
                problems.append((i, f"hub {hub!r} in {env.name} and hub {other!r} in {other_env} render the same "
                                 f"helm release {release!r} in namespace {namespace!r} on the same cluster ({conn}): "
                                 "each would upgrade the other's release; rename one"))
    return problems


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
    data = top_mapping(parse_yaml(text, source), source)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError([(source, p, r) for p, r in validation_problems(err)]) from None
    problems = _settings_problems(settings)
    if problems:
        raise ConfigError([(source, p, r) for p, r in problems])
    return settings
