"""Pods that change or read a cluster: image builds, helm upgrades, rollbacks and status reads.

One home for pod construction, with no Airflow import (so `hubflow render` stays fast). The deploy DAG runs each
kind as a mapped task of hubflow.airflow.operators.HubflowPodOperator (`pod_operator_kwargs` says how it runs them):

    HubflowPodOperator.partial(task_id="build", **pod_operator_kwargs(settings, env, "build")).expand(pod=pods_xcom)

`base_pod` is what every pod of a kind in an environment shares (image, command, service account, secrets as
Kubernetes Secret references, volumes, resources, deadline); `build_pod`, `helm_upgrade_pod`, `helm_rollback_pod`
and `helm_status_pod` return what differs per pod as JSON-serialisable dicts (name, labels, arguments, init
containers), so they travel through XCom; `compose` joins the two into the Pod. User-controlled strings (hub
names, revisions, paths from git) only ever appear as separate argv items, never in a shell command line, and never
pass through Jinja: Airflow 3.3 renders values that arrive through expand_kwargs, so the operator renders no fields.
"""
from __future__ import annotations

import copy
import hashlib
import posixpath
import re
from typing import TYPE_CHECKING, Any, Literal

from kubernetes.client import ApiClient, models as k8s

from hubflow.core.errors import HubflowError
from hubflow.core.outcomes import Undo
from hubflow.core.plan import Plan, PlanError, make_plan
from hubflow.core.settings import Environment, Resources, Settings

if TYPE_CHECKING:  # a repository is passed in; this layer reads nothing itself
    from hubflow.clients.git import Repo

Kind = Literal["build", "upgrade", "rollback", "status"]
KINDS: tuple[str, ...] = ("build", "upgrade", "rollback", "status")

LABEL = "hubflow.io/"
WORKSPACE = "/workspace"
CHECKOUT = f"{WORKSPACE}/repo"
RUNNER = "hubflow-runner"
SOPS_SECRET = "hubflow-sops"  # optional Secret: its keys become the upgrade pod's environment for sops
BUILDER_HOME = "/home/user"
STARTUP_MARGIN_SECONDS = 600  # clone, chart dependencies and image pulls before helm's own timeout starts
EXECUTION_MARGIN_SECONDS = 120  # the task outlives its pod's deadline: the operator reads the final state and logs
BASE_CONTAINER = "base"  # the container the pod operator watches and reads logs from

# A fixed script: the repository URL, revision and target folder arrive as positional parameters ($1 $2 $3), never
# inside the script text, and after `--`, so none can be read as an option. The token is read from the environment
# by git's credential helper, so it is in no argv.
CLONE_SCRIPT = """set -eu
git init -q "$3"
cd "$3"
helper='!f() { test "$1" = get && test -n "${GIT_TOKEN:-}" &&
  printf "username=x-access-token\\npassword=%s\\n" "$GIT_TOKEN"; }; f'
git -c "credential.helper=$helper" fetch -q --depth 1 -- "$1" "$2"
git -c advice.detachedHead=false checkout -q FETCH_HEAD
echo "checked out $(git rev-parse HEAD)"
"""

_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_REPOSITORY = re.compile(r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                         r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_VALUES_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class PodSpecError(HubflowError):
    """A pod cannot be built from this input (the message names the field and the value)."""


# ---------------------------------------------------------------- names and labels


def label_value(value: str) -> str:
    """A valid Kubernetes label value for any input.

    Valid values pass unchanged; anything else is reduced to its allowed characters and gets eight hex characters of
    its hash, so two different hostile inputs never share a label.
    """
    value = str(value)
    if _LABEL_VALUE.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:54].strip("-_.")
    return f"{clean}-{digest}" if clean else digest


def pod_name(*parts: str) -> str:
    """A DNS-1123 prefix for the pod name (the operator appends a random suffix)."""
    name = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return name[:50].strip("-") or "hubflow"


def pod_labels(env: Environment, kind: str, **values: str | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/managed-by": "hubflow", f"{LABEL}kind": kind, f"{LABEL}env": label_value(env.name)}
    labels.update({f"{LABEL}{k}": label_value(v) for k, v in values.items() if v is not None})
    return labels


def check_revision(revision: str) -> str:
    if not revision or revision.startswith("-") or any(c.isspace() or ord(c) < 32 for c in revision):
        raise PodSpecError(f"revision {revision!r} is not a git revision")
    return revision


def _check(pattern: re.Pattern, value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise PodSpecError(f"{what} {value!r} is not valid")
    return value


# ---------------------------------------------------------------- what every pod of a kind shares


def _resources(r: Resources) -> k8s.V1ResourceRequirements:
    return k8s.V1ResourceRequirements(requests={"cpu": r.cpu, "memory": r.memory},
                                      limits={"cpu": r.cpu_limit, "memory": r.memory_limit})


def _restricted() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(allow_privilege_escalation=False, run_as_non_root=True, run_as_user=1000,
                                 capabilities=k8s.V1Capabilities(drop=["ALL"]))


def pod_seconds(settings: Settings, kind: str) -> int:
    """How long a pod of `kind` may run (Kubernetes activeDeadlineSeconds): helm's worst case plus the start-up.

    `upgrade --wait --rollback-on-failure` may wait `helm_seconds` for the upgrade and as long again for the
    rollback; recovering a pending release first adds one more rollback. A deadline shorter than that would kill
    helm mid-rollback and leave the release in pending-rollback.
    """
    t = settings.timeouts
    helm_runs = {"build": 0, "upgrade": 2 + int(settings.pods.recover_pending), "rollback": 1, "status": 0}[kind]
    if kind == "build":
        return t.build_seconds
    return helm_runs * t.helm_seconds + STARTUP_MARGIN_SECONDS


def base_pod(settings: Settings, env: Environment, kind: Kind) -> dict[str, Any]:
    """What every pod of `kind` in `env` shares, as the API's JSON: image, command, service account, secrets as
    Kubernetes Secret references, volumes, resources, security, deadline."""
    if kind not in KINDS:
        raise PodSpecError(f"unknown pod kind {kind!r}; known: {list(KINDS)}")
    p = settings.pods
    workspace = k8s.V1Volume(name="workspace", empty_dir=k8s.V1EmptyDirVolumeSource())
    if kind == "build":
        container = k8s.V1Container(
            name=BASE_CONTAINER,
            image=p.builder_image,
            command=["buildctl-daemonless.sh"],
            image_pull_policy="IfNotPresent",
            resources=_resources(p.build_resources),
            env=[k8s.V1EnvVar(name="BUILDKITD_FLAGS", value="--oci-worker-no-process-sandbox"),
                 k8s.V1EnvVar(name="DOCKER_CONFIG", value=f"{BUILDER_HOME}/.docker")],
            volume_mounts=[k8s.V1VolumeMount(name="workspace", mount_path=WORKSPACE, read_only=True),
                           k8s.V1VolumeMount(name="buildkit", mount_path=f"{BUILDER_HOME}/.local/share/buildkit"),
                           k8s.V1VolumeMount(name="registry", mount_path=f"{BUILDER_HOME}/.docker", read_only=True)],
            # rootless BuildKit needs its own user namespaces: no seccomp/AppArmor filter, but no privilege either
            security_context=k8s.V1SecurityContext(
                run_as_user=1000, run_as_group=1000, run_as_non_root=True,
                seccomp_profile=k8s.V1SeccompProfile(type="Unconfined"),
                app_armor_profile=k8s.V1AppArmorProfile(type="Unconfined")))
        volumes = [workspace,
                   k8s.V1Volume(name="buildkit", empty_dir=k8s.V1EmptyDirVolumeSource()),
                   k8s.V1Volume(name="registry", secret=k8s.V1SecretVolumeSource(
                       secret_name=settings.registry.secret,
                       items=[k8s.V1KeyToPath(key=".dockerconfigjson", path="config.json")]))]
        automount = False
    else:
        container = k8s.V1Container(
            name=BASE_CONTAINER,
            image=p.runner_image,
            command=[RUNNER],
            image_pull_policy="IfNotPresent",
            resources=_resources(p.resources),
            security_context=_restricted(),
            env=[k8s.V1EnvVar(name="HOME", value="/tmp")])
        volumes = []
        automount = True  # helm talks to the cluster as this environment's service account
        if kind == "upgrade":
            container.env_from = [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=SOPS_SECRET,
                                                                                       optional=True))]
            container.volume_mounts = [k8s.V1VolumeMount(name="workspace", mount_path=WORKSPACE),
                                       k8s.V1VolumeMount(name="decrypted", mount_path="/decrypted")]
            volumes = [workspace, k8s.V1Volume(name="decrypted", empty_dir=k8s.V1EmptyDirVolumeSource(
                medium="Memory"))]
    pod = k8s.V1Pod(
        api_version="v1", kind="Pod",
        metadata=k8s.V1ObjectMeta(namespace=p.namespace),
        spec=k8s.V1PodSpec(
            containers=[container],
            # builds get an account with no role and no cloud identity; only helm pods act as the deployer
            service_account_name=p.build_service_account if kind == "build" else env.service_account,
            automount_service_account_token=automount,
            restart_policy="Never",
            active_deadline_seconds=pod_seconds(settings, kind),
            security_context=k8s.V1PodSecurityContext(fs_group=1000, seccomp_profile=k8s.V1SeccompProfile(
                type="RuntimeDefault")),
            volumes=volumes or None))
    return ApiClient().sanitize_for_serialization(pod)


def compose(base: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The whole Pod: `base` (from `base_pod`) with one pod's name, labels, arguments and init containers."""
    out = copy.deepcopy(base)
    out["metadata"].update(name=pod["name"], labels=dict(pod["labels"]))
    out["spec"]["containers"][0]["args"] = list(pod["arguments"])
    if pod.get("init_containers"):
        out["spec"]["initContainers"] = copy.deepcopy(pod["init_containers"])
    return out


# ---------------------------------------------------------------- what differs per pod (JSON, travels through XCom)


def clone_container(settings: Settings, revision: str) -> dict[str, Any]:
    """Init container that checks out `revision` into the workspace (token from the git Secret, never in argv)."""
    return {
        "name": "clone",
        "image": settings.pods.git_image,
        "command": ["sh", "-c", CLONE_SCRIPT, "clone", settings.repository.clone_url, check_revision(revision),
                    CHECKOUT],
        "env": [{"name": "GIT_TOKEN", "valueFrom": {"secretKeyRef": {"name": settings.repository.git_secret,
                                                                     "key": "token", "optional": True}}},
                {"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                            "capabilities": {"drop": ["ALL"]}},
    }


def build_pod(settings: Settings, env: Environment, plan: Plan, image_name: str,
              cache_tag: str | None = None) -> dict[str, Any]:
    """Build one image of `plan` at its head revision with rootless BuildKit and push `<repository>:<tag>`.

    `cache_tag`, when known (the image's tag at the last deployed revision), seeds the layer cache from the registry.
    """
    if not env.build_images:
        raise PodSpecError(f"environment {env.name!r} does not build images (build_images: false)")
    image, spec = plan.image(image_name), _fleet(plan).image(image_name)
    repository = _check(_REPOSITORY, image.repository, f"image {image_name}: repository")
    tag = _check(_TAG, image.tag, f"image {image_name}: tag")
    context = posixpath.join(CHECKOUT, spec.build_context)
    dockerfile = posixpath.join(context, spec.dockerfile)
    args = ["build", "--frontend", "dockerfile.v0",
            "--local", f"context={context}",
            "--local", f"dockerfile={posixpath.dirname(dockerfile)}",
            "--opt", f"filename={posixpath.basename(dockerfile)}",
            "--opt", f"label:org.opencontainers.image.revision={check_revision(plan.head)}",
            "--output", f"type=image,name={repository}:{tag},push=true",
            "--export-cache", "type=inline"]
    if cache_tag:
        args += ["--import-cache", f"type=registry,ref={repository}:{_check(_TAG, cache_tag, 'cache tag')}"]
    return {
        "name": pod_name("build", image_name),
        "labels": pod_labels(env, "build", image=image_name, tag=tag, revision=plan.head),
        "arguments": args,
        "init_containers": [clone_container(settings, plan.head)],
    }


def helm_upgrade_pod(settings: Settings, env: Environment, plan: Plan, hub_name: str) -> dict[str, Any]:
    """`helm upgrade --install` of one hub at the plan's head, run by the runner script (include/runner/).

    Values files go in the fleet's order (common, then the environment's; sops files are decrypted inside the pod),
    then each image's repository and tag are set as strings at the hub's values path.
    """
    hub = _fleet(plan).hub(hub_name)
    args = ["upgrade", "--release", env.release_for(hub.name), "--namespace", env.namespace_for(hub.name),
            "--chart", _fleet(plan).chart, "--revision", check_revision(plan.head), "--env", env.name,
            "--timeout", f"{settings.timeouts.helm_seconds}s", "--history-max", str(settings.pods.history_max)]
    for path in hub.values_files(env.name):
        args += ["--values", path]
    for ref in hub.images or []:
        image = plan.image(ref.name)
        where = _check(_VALUES_PATH, ref.values_path, f"hub {hub.name}: values_path")
        repository = _check(_REPOSITORY, image.repository, f"image {image.name}: repository")
        args += ["--set-string", f"{where}.name={repository}",
                 "--set-string", f"{where}.tag={_check(_TAG, image.tag, f'image {image.name}: tag')}"]
    if settings.pods.recover_pending:
        args.append("--recover-pending")
    return {
        "name": pod_name("upgrade", hub.name, env.name),
        "labels": pod_labels(env, "upgrade", hub=hub.name, revision=plan.head),
        "arguments": args,
        "init_containers": [clone_container(settings, plan.head)],
    }


def helm_rollback_pod(settings: Settings, env: Environment, hub_name: str, to_revision: int) -> dict[str, Any]:
    """Roll one hub's release back to helm revision `to_revision` (the one reported before the upgrade)."""
    if not isinstance(to_revision, int) or isinstance(to_revision, bool) or to_revision < 1:
        raise PodSpecError(f"hub {hub_name}: helm revision to roll back to must be a positive number, "
                           f"got {to_revision!r}")
    return {
        "name": pod_name("rollback", hub_name, env.name),
        "labels": pod_labels(env, "rollback", hub=hub_name, **{"helm-revision": str(to_revision)}),
        "arguments": ["rollback", "--release", env.release_for(hub_name), "--namespace", env.namespace_for(hub_name),
                      "--to", str(to_revision), "--timeout", f"{settings.timeouts.helm_seconds}s"],
    }


def helm_uninstall_pod(settings: Settings, env: Environment, hub_name: str) -> dict[str, Any]:
    """Uninstall one hub's release: a hub this run installed for the first time, then failed (nothing ran before)."""
    return {
        "name": pod_name("uninstall", hub_name, env.name),
        "labels": pod_labels(env, "rollback", hub=hub_name, action="uninstall"),
        "arguments": ["uninstall", "--release", env.release_for(hub_name), "--namespace",
                      env.namespace_for(hub_name), "--timeout", f"{settings.timeouts.helm_seconds}s"],
    }


def undo_pods(settings: Settings, env: Environment, undo: list[Undo]) -> list[dict[str, Any]]:
    """The rollback pods of what a run must put back (`hubflow.core.deploy.to_undo`)."""
    return [helm_rollback_pod(settings, env, u.hub, u.to) if u.action == "rollback"
            else helm_uninstall_pod(settings, env, u.hub) for u in undo]


def helm_status_pod(settings: Settings, env: Environment, hub_name: str) -> dict[str, Any]:
    """Read one hub's release status and history (JSON through XCom, no values: they may hold secrets)."""
    return {
        "name": pod_name("status", hub_name, env.name),
        "labels": pod_labels(env, "status", hub=hub_name),
        "arguments": ["status", "--release", env.release_for(hub_name), "--namespace", env.namespace_for(hub_name),
                      "--history-max", str(settings.pods.history_max)],
    }


def _fleet(plan: Plan):
    if plan.fleet is None:
        raise PodSpecError("the plan carries no fleet: make it with hubflow.core.plan.make_plan")
    return plan.fleet


def previous_tags(repo: Repo, plan: Plan, fleet_file: str, environments: list[str]) -> dict[str, str]:
    """Each image's tag at the plan's base, where it differs: the build seeds its layer cache from it."""
    if not plan.base:
        return {}
    try:
        before = {i.name: i.tag for i in make_plan(repo, None, plan.base, fleet_file, environments).images}
    except PlanError:  # no fleet at the base: nothing to seed from
        return {}
    return {i.name: before[i.name] for i in plan.images if before.get(i.name) not in (None, i.tag)}


def deploy_pods(settings: Settings, env: Environment, plan: Plan, build: list[str] | None = None,
                cache_tags: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per-pod kwargs of a whole deploy: `build` lists the images to build (default: every image of the plan)."""
    names = [i.name for i in plan.images] if build is None else build
    return {
        "build": [build_pod(settings, env, plan, n, (cache_tags or {}).get(n)) for n in names]
        if env.build_images else [],
        "upgrade": [helm_upgrade_pod(settings, env, plan, h.name) for h in plan.hubs],
    }
