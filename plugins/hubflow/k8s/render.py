"""The preview of a deploy: the pods a revision range would create, as multi-document YAML.

For an operator or a PR reviewer: exactly the Pod objects the lifecycle's operators send, built with the same
builders and the same `compose` the pod operator uses, with no cluster, no credentials (Secrets appear only as
references) and no Airflow import. The operator adds only its own labels (dag, task, run) and, for pods that return
a result, its XCom sidecar. Every image of the plan is shown as a build; the lifecycle skips those already in the
registry.
"""
from __future__ import annotations

from typing import Any

import yaml

from hubflow.core.plan import make_plan
from hubflow.core.settings import Settings
from hubflow.k8s import pods


def _prune(value: Any) -> Any:
    """Drop empty fields, as `kubectl get -o yaml` shows a pod (an empty `emptyDir` is a volume source: kept)."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, []) or k == "emptyDir"}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def render_deploy(settings: Settings, env_name: str, repo, head: str,
                  base: str | None = None) -> list[tuple[str, dict]]:
    """(comment, Pod manifest) for every build and upgrade pod of a deploy of base..head to `env_name`."""
    env = settings.environment(env_name)
    envs = [e.name for e in settings.environments]
    plan = make_plan(repo, base, head, settings.repository.fleet_file, envs)
    per_kind = pods.deploy_pods(settings, env, plan,
                                cache_tags=pods.previous_tags(repo, plan, settings.repository.fleet_file, envs))
    reasons = {("build", i.name): f"build image {i.name} as {i.ref} (skipped if the registry has it): {i.reason}"
               for i in plan.images}
    reasons |= {("upgrade", h.name): f"upgrade hub {h.name} in {env.name}: {h.reason}" for h in plan.hubs}
    out = []
    for kind in ("build", "upgrade"):
        base = pods.base_pod(settings, env, kind)
        for pod in per_kind[kind]:
            name = pod["labels"][f"{pods.LABEL}{'image' if kind == 'build' else 'hub'}"]
            out.append((reasons[(kind, name)], _prune(pods.compose(base, pod))))
    return out


def to_yaml(documents: list[tuple[str, dict]]) -> str:
    return "".join(f"---\n# {comment}\n{yaml.safe_dump(doc, sort_keys=False)}" for comment, doc in documents)
