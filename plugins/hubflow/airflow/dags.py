"""DAG factories: the deploy DAG of each configured environment (`hubflow_deploy_staging`, `hubflow_deploy_prod`, ...).

Wiring only: every task body is one call into hubflow.airflow.tasks. Building a DAG reads the settings and nothing
else (no network, no subprocess, no connection lookups), and its cost does not depend on the number of hubs.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetWatcher, Param, dag, get_current_context, task, task_group
from airflow.task.trigger_rule import TriggerRule

from hubflow.airflow import tasks
from hubflow.airflow.operators import HubflowPodOperator
from hubflow.airflow.triggers import BranchHeadTrigger
from hubflow.core.config import Environment, Settings, load_settings
from hubflow.k8s.pods import operator_kwargs

DOC = """
### Deploy {env}
Runs when `{branch}` moves (or by hand / REST API with `{{"revision": sha}}`; the newest head always wins).

1. **resolve**: the branch head and the last revision deployed (the ledger); held, frozen or nothing new stop here
   (a verified revision whose promotion never happened is promoted by **catch_up**).
{gate}2. **plan**: images to build (tag = content), hubs to deploy, each with its reason, in two waves (the
   `deploy.canary` hubs first); commit status pending.
3. **build**: each image whose tag the registry lacks, {builder}{nobuild}; before any upgrade.
4. Per hub, one pipeline: **upgrade** (helm upgrade pod, `--rollback-on-failure`) then **verify** (its smoke test),
   as soon as its own upgrade ends; at most {parallel} hub(s) upgrade at once. The **canary** wave runs first; the
   **rest** only after every canary passed (a failing canary stops the wave: the other hubs are never touched).
5. **conclude**: all verified -> **succeed** (status{promote}, asset event); the revision's fault -> **rollback**
   (pods, only what this run changed) + **fail** (hold, revert, status, comment); a platform fault -> **rollback**
   + **fail** (status error, no hold, no revert).
6. **record**: ledger, Slack, and one closing line saying what runs in {env} now.
"""

RETRY = timedelta(seconds=5)  # bookkeeping and GitHub side effects: retried whole, nothing is duplicated
BOOKKEEPING = {"retries": 2, "retry_delay": RETRY}
POD_RETRIES = {"retries": 1, "retry_delay": timedelta(seconds=10)}  # a dead worker: the retry re-attaches


def branch_asset(settings: Settings, env: Environment) -> Asset:
    """The environment branch as an asset, watched by a trigger that polls its head (conditional requests)."""
    trigger = BranchHeadTrigger.for_environment(settings, env.name)
    return Asset(name=f"hubflow-{env.name}-branch", uri=f"hubflow://{settings.repository.github}/branches/{env.branch}",
                 watchers=[AssetWatcher(name=f"hubflow-{env.name}-head", trigger=trigger)])


def verified_asset(settings: Settings, env: Environment) -> Asset:
    return Asset(name=f"hubflow-{env.name}-verified", uri=f"hubflow://{settings.repository.github}/verified/{env.name}")


def deploy_dag(settings: Settings, env: Environment):
    first = env.name == settings.environments[0].name
    nxt = settings.next_environment(env.name)
    verified = verified_asset(settings, env)

    @dag(
        dag_id=f"hubflow_deploy_{env.name}",
        schedule=branch_asset(settings, env),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["hubflow", "deploy", env.name],
        default_args={"owner": "hubflow", "retries": 0, "on_failure_callback": tasks.on_failure},
        doc_md=DOC.format(env=env.name, branch=env.branch,
                          gate="" if first else "   **gate**: the tree must equal a tree verified on the previous "
                                                "environment, unless forced with a reason.\n",
                          nobuild="" if env.build_images else " — never here: images must exist",
                          builder="in a rootless BuildKit pod" if env.builder == "buildkit"
                          else "through the Docker Engine API from the worker",
                          parallel=settings.deploy.max_parallel,
                          promote=f", promotion PR to {nxt.name}" if nxt else ""),
        params={
            "revision": Param(None, type=["null", "string"], title="Revision",
                              description="a commit on the branch (empty: the branch head; a newer head wins)"),
            "force_reason": Param(None, type=["null", "string"], title="Force reason",
                                  description="pass the gate anyway; the ledger keeps who forced it and why"),
        },
    )
    def deploy():
        @task(doc_md="Fetch the repository; the target revision, the last deployed one; held/frozen/nothing new.")
        def resolve() -> dict:
            return tasks.resolve(settings, env, get_current_context())

        @task.branch(doc_md="Deploy, catch up an owed promotion, or stop here successfully (the reason is logged).")
        def route(target: dict) -> list[str]:
            return tasks.route(first, target)

        @task(doc_md="Promote exactly what was tested: the tree must match a verified tree of the previous env.")
        def gate(target: dict) -> str | None:
            return tasks.gate(settings, env, target, get_current_context())

        @task(doc_md="Plan the range; open the ledger attempt; status pending; list the pods.")
        def plan(target: dict) -> dict:
            return tasks.plan(settings, env, target, get_current_context())

        @task(outlets=[verified], **BOOKKEEPING,
              doc_md="A verified revision whose promotion never happened (GitHub was down): status and PR now.")
        def catch_up(target: dict) -> dict:
            return tasks.catch_up(settings, env, target, get_current_context())

        @task(doc_md="Ask the registry which tags are missing: only those images are built.")
        def build_pods(target: dict, planned: dict) -> list[dict]:
            return tasks.build_pods(settings, env, target, planned, get_current_context())

        @task(task_id="build", **POD_RETRIES, doc_md="Build and push one image through the Docker Engine API.")
        def docker_build(target: dict, planned: dict, image: str) -> dict:
            from hubflow.airflow import builds  # the docker SDK is loaded only where a build runs

            return builds.docker_build(settings, env, target, planned, image, get_current_context())

        @task(trigger_rule=TriggerRule.NONE_FAILED,
              doc_md="The upgrade pods of one wave (`canary`: the deploy.canary hubs this plan deploys; `rest`: "
                     "the others, once every canary passed).")
        def wave_pods(planned: dict, wave: str) -> list[dict]:
            return tasks.wave_pods(planned, wave)

        @task(doc_md="Smoke-test one hub: health, API, a throwaway user's server, a kernel importing the packages.")
        def verify(target: dict, pod: dict) -> dict:
            return tasks.verify(settings, env, target, tasks.hub_of(pod), get_current_context())

        def wave(name: str, pods):
            @task_group(group_id=name, tooltip="per hub: helm upgrade, then its verification")
            def hub(target: dict, pod: dict):
                upgrade = HubflowPodOperator(
                    task_id="upgrade", pod=pod, max_active_tis_per_dagrun=settings.deploy.max_parallel,
                    **POD_RETRIES, **operator_kwargs(settings, env, "upgrade"),
                    doc_md="helm upgrade --install of one hub (runner pod, --rollback-on-failure); XCom: helm "
                           "revisions before/after.")
                upgrade >> verify(target, pod)

            group = hub.partial(target=target).expand(pod=pods)
            pods >> group
            return group

        @task(trigger_rule=TriggerRule.ALL_DONE, **BOOKKEEPING,
              doc_md="Read what the builds, upgrades and verifications did: success, the revision's fault, or "
                     "the platform's.")
        def conclude(target: dict, planned: dict) -> dict:
            return tasks.conclude(settings, env, target, planned, get_current_context())

        @task.branch(**BOOKKEEPING, doc_md="Success path or failure path.")
        def decide(outcome: dict) -> list[str]:
            return tasks.decide(outcome)

        @task(outlets=[verified], **BOOKKEEPING,
              doc_md="Status success, the verified asset event, the promotion PR (safe to retry).")
        def succeed(target: dict, planned: dict) -> dict:
            context = get_current_context()
            context["outlet_events"][verified].extra = {"revision": target["revision"], "tree": target["tree"]}
            return tasks.succeed(settings, env, target, planned, context)

        @task(doc_md="What this run changed, to put back: helm rollbacks, uninstalls of first installs.")
        def rollback_pods(outcome: dict) -> list[dict]:
            return tasks.rollback_pods(settings, env, outcome)

        rollback = HubflowPodOperator.partial(
            task_id="rollback", doc_md="helm rollback (or uninstall) of one hub to what it ran before this run.",
            **POD_RETRIES, **operator_kwargs(settings, env, "rollback"))

        @task(**BOOKKEEPING,
              doc_md="Hold and revert the revision when it is to blame (never a revert of a revert), status, "
                     "comments (safe to retry: the PR, the branch and the comments are looked up first).")
        def fail(target: dict, planned: dict, outcome: dict) -> dict:
            return tasks.fail(settings, env, target, planned, outcome, get_current_context())

        @task(trigger_rule=TriggerRule.ALL_DONE, **BOOKKEEPING,
              doc_md="Ledger, final status, Slack, and the closing line: what runs now.")
        def record(target: dict, planned: dict, outcome: dict, aftermath: dict | None) -> str:
            return tasks.record(settings, env, target, planned, outcome, aftermath, get_current_context())

        target = resolve()
        way = route(target)
        planned = plan(target)
        if first:
            way >> planned
        else:
            way >> gate(target) >> planned
        caught_up = catch_up(target)
        way >> caught_up
        to_build = build_pods(target, planned)
        if env.builder == "docker":  # no pod: the worker talks to the Docker Engine API
            builds = docker_build.partial(target=target, planned=planned).expand(image=to_build.map(tasks.image_of))
        else:
            builds = HubflowPodOperator.partial(
                task_id="build", doc_md="Build and push one image (rootless BuildKit pod).", **POD_RETRIES,
                **operator_kwargs(settings, env, "build")).expand(pod=to_build)
        canary_pods = wave_pods.override(task_id="canary_pods")(planned, "canary")
        builds >> canary_pods
        canary = wave("canary", canary_pods)
        rest_pods = wave_pods.override(task_id="rest_pods")(planned, "rest")
        canary >> rest_pods
        rest = wave("rest", rest_pods)
        outcome = conclude(target, planned)
        [builds, canary, rest] >> outcome  # every pod has ended, whichever failed first
        branch = decide(outcome)
        ok = succeed(target, planned)
        to_roll_back = rollback_pods(outcome)
        back = rollback.expand(pod=to_roll_back)
        aftermath = fail(target, planned, outcome)
        branch >> [ok, to_roll_back, aftermath]
        done = record(target, planned, outcome, aftermath)
        [ok, back, aftermath, caught_up] >> done

    return deploy()


def deploy_dags(settings: Settings | None = None) -> dict:
    """{dag_id: DAG} for every configured environment (the settings file is the only thing read)."""
    settings = settings or load_settings()
    return {f"hubflow_deploy_{env.name}": deploy_dag(settings, env) for env in settings.environments}
