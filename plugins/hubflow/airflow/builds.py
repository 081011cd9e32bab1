"""The docker builder's task body (an environment's `builder: docker`): one image of the run's plan, built through
the Docker Engine API from the worker and pushed, each log line written to the task log as the engine writes it.

Mapped as the deploy DAG's `build` task over `build_pods`' output, it leaves what the pod path leaves: on failure
the verdict in the `fault` XCom (hubflow.core.builds) and a failed task, so `conclude` reads both builders alike;
like a build pod, a failed build is built again once (the task's retry) before its verdict stands.
"""
from __future__ import annotations

import logging

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hubflow.airflow import hooks
from hubflow.airflow.results import FAULT_KEY
from hubflow.airflow.runs import mirror
from hubflow.clients.docker_builder import DockerBuilder, DockerBuildError
from hubflow.clients.git import GitError
from hubflow.clients.registry import RegistryError
from hubflow.core import builds
from hubflow.core.deploy import tried
from hubflow.core.plan import PlanError, make_plan
from hubflow.core.settings import Environment, Settings
from hubflow.k8s.pods import previous_tags

log = logging.getLogger("hubflow")


def docker_build(settings: Settings, env: Environment, target: dict, planned: dict, image: str, context) -> dict:
    """Build and push `image` unless the registry has its tag already (a retry, or another run built it).

    Returns {"image", "repository", "tag", "digest"}: the digest the registry stored, no credentials.
    """
    plan = planned["plan"]
    wanted = next(i for i in plan["images"] if i["name"] == image)
    ref = f"{wanted['repository']}:{wanted['tag']}"
    try:
        registry = hooks.registry(settings)
        digest = registry.digest(wanted["repository"], wanted["tag"])
    except RegistryError as exc:
        _fail(context, image, builds.REGISTRY, str(exc))
    if digest:
        log.info("%s is in the registry (%s): not built again", ref, digest)
        return {"image": image, "repository": wanted["repository"], "tag": wanted["tag"], "digest": digest}
    envs = [e.name for e in settings.environments]
    try:
        repo = mirror(settings, plan["head"])
        the_plan = make_plan(repo, plan["base"], plan["head"], settings.repository.fleet_file, envs)
        cache = previous_tags(repo, the_plan, settings.repository.fleet_file, envs).get(image)
    except (GitError, PlanError) as exc:
        _fail(context, image, builds.CONTEXT, str(exc))
    try:
        builder = DockerBuilder(env.docker_host, registry.credentials, settings.timeouts.build_seconds)
        result = builder.build_image(repo, the_plan, image, cache, on_line=lambda line: log.info("%s", line))
    except DockerBuildError as exc:
        _fail(context, image, exc.stage, str(exc))
    return result


def _fail(context, image: str, stage: str, message: str) -> None:
    """The verdict, as the pod path gives it: built again once before it stands (`tried`)."""
    ti = context["ti"]
    fault = tried("build", builds.build_fault(stage, message), ti.try_number, context["task"].retries + 1)
    ti.xcom_push(key=FAULT_KEY, value=fault.to_dict())
    text = f"build {image}: {fault.summary} ({fault.blame} fault)"
    raise AirflowException(text) if fault.retry else AirflowFailException(text)
