"""Deploy DAGs, one per configured environment (`hubflow_deploy_staging`, `hubflow_deploy_prod`, ...).

Wiring only: every step is a function in plugins/hubflow/. Parsing reads the settings file and nothing else
(no network, no subprocess, no connection lookups), and its cost does not depend on the number of hubs.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from hubflow.config import Environment, Settings, load_settings

DOC = """
### Deploy {env}
Triggered by a merge into `{branch}` (or by hand with a revision). Steps: **resolve** the revision and the last one
deployed (the ledger) -> {gate}**plan** which images to build and which hubs to deploy, each with its reason.
"""


def deploy_dag(settings: Settings, env: Environment):
    first = env.name == settings.environments[0].name

    @dag(
        dag_id=f"hubflow_deploy_{env.name}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["hubflow", "deploy", env.name],
        default_args={"owner": "hubflow", "retries": 0},
        doc_md=DOC.format(env=env.name, branch=env.branch,
                          gate="" if first else "**gate** (the tree must equal a verified tree of the previous environment) -> "),
        params={
            "revision": Param("", type="string", title="Revision", description="commit to deploy; empty: the branch head"),
            "force_reason": Param("", type="string", title="Force reason",
                                  description="deploy past the gate; kept in the ledger with who forced it"),
        },
        render_template_as_native_obj=False,
    )
    def deploy():
        @task(doc_md="Fetch the deployment repository; pick the target revision and the last deployed one.")
        def resolve() -> dict:
            from hubflow import lifecycle
            from hubflow.connections import ledger_url
            from hubflow.ledger import Ledger
            from hubflow.mirror import sync

            params = get_current_context()["params"]
            target = lifecycle.resolve(settings, env, sync(settings), Ledger(ledger_url(settings.ledger.conn_id)),
                                       params.get("revision") or None)
            print(f"target {target.revision} (tree {target.tree}); last deployed {target.base or 'none'}"
                  + (f"; nothing to do: {target.skip}" if target.skip else ""))
            return target.to_dict()

        @task(doc_md="The range base..target as a plan: images to build (with tags), hubs to deploy, hubs removed.")
        def plan(target: dict) -> dict:
            from hubflow import lifecycle
            from hubflow.mirror import sync
            from hubflow.plan import format_plan

            result = lifecycle.plan(settings, sync(settings), lifecycle.Target(**target))
            print(format_plan(result))
            return result.to_dict()

        plan(resolve())

    return deploy()


_settings = load_settings()
for _env in _settings.environments:
    globals()[f"hubflow_deploy_{_env.name}"] = deploy_dag(_settings, _env)
