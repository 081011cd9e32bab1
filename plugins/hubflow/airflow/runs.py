"""What every hubflow task needs from its Airflow run: the worker's mirror, a hub's verification, links, who asked,
the run's params, the states of its tasks, and the one way a step ends the run early (`end_run`). Shared by the
deploy, promotion, nightly and preview task bodies. The DAG files import this module at parse, so clients load
inside the functions that use them.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

from airflow.sdk.exceptions import AirflowFailException

from hubflow.airflow import hooks
from hubflow.core.outcomes import Blame, Ended

if TYPE_CHECKING:
    from hubflow.clients.git import Repo
    from hubflow.core.settings import Environment, Settings

log = logging.getLogger("hubflow")
ENDED_KEY = "ended"  # XCom of a step that ended the run early: an Ended (outcome, detail, ledger attempt)


def mirror(settings: Settings, have: str | None = None) -> Repo:
    """The worker's mirror of the deployment repository, fetched unless it already holds `have`."""
    from hubflow.clients.mirror import sync

    return sync(settings, hooks.github_token(settings.repository.github_conn_id), have=have)


def verification(settings: Settings, env: Environment, hub: str, base: str | None, head: str) -> dict:
    """One hub's smoke verification as its JSON result, never raising: a verification that cannot even be attempted
    (no token, the repository or the fleet unreadable, the hub kept busy by other verifications for too long) is a
    failed result that blames the platform. One at a time per hub and environment, across the deploy and nightly
    DAGs: it waits its turn through the ledger, outside the verification's time (clients.verification)."""
    from hubflow.clients.verification import verify_hub

    try:
        return verify_hub(settings, env.name, hub, mirror(settings, head), base, head,
                          hooks.smoke_token(env.smoke_token_conn_id), ledger=hooks.ledger(settings),
                          holder=_holder())
    except Exception as exc:  # noqa: BLE001 - whatever stopped it, the revision was not what failed
        return {"ok": False, "blame": Blame.PLATFORM.value, "hub": hub, "environment": env.name, "checks": [],
                "error": f"the verification could not be attempted: {exc}"}


def _holder() -> str:
    """Who verifies, in words another waiting verification logs: the DAG, the run and the task."""
    from airflow.sdk import get_current_context

    try:
        ti = get_current_context()["ti"]
    except Exception:  # noqa: BLE001 - outside a task (a test, the CLI): still a name
        return "a hubflow verification"
    which = f"{ti.task_id}[{ti.map_index}]" if ti.map_index is not None and ti.map_index >= 0 else ti.task_id
    return f"{ti.dag_id} run {ti.run_id}, task {which}"


def run_url(context: dict) -> str:
    dag_run = context["dag_run"]
    return hooks.run_url(dag_run.dag_id, dag_run.run_id)


def who(context: dict) -> str:
    dag_run = context["dag_run"]
    return getattr(dag_run, "triggering_user_name", None) or f"{dag_run.run_type} run"


def unknown_params(context: dict) -> str | None:
    """What is wrong with the run's conf when it holds keys that match no param (Airflow accepts them silently, so
    a typo such as `revison` would otherwise deploy the branch head), else None. Every DAG's first task asks."""
    declared = set(context["dag"].params)  # context["params"] already has the conf merged in
    unknown = sorted(set(context["dag_run"].conf or {}) - declared)
    if not unknown:
        return None
    takes = ", ".join(sorted(declared)) or "none"
    return f"unknown parameter(s) {', '.join(map(repr, unknown))}; this DAG takes {takes}"


def end_run(context: dict, ended: Ended) -> NoReturn:
    """End the run at this step: the reason goes to XCom for the run's closing task, and the task fails without
    retries with it as its last line."""
    context["ti"].xcom_push(key=ENDED_KEY, value=ended.to_dict())
    log.warning("%s: %s", ended.outcome, ended.detail)
    raise AirflowFailException(f"{ended.outcome}: {ended.detail}")


def ended_by(context: dict, task_ids: list[str]) -> Ended | None:
    """How the run was ended early, by the first of `task_ids` that ended it."""
    ti = context["ti"]
    return Ended.from_dict(next((e for t in task_ids if (e := ti.xcom_pull(task_ids=t, key=ENDED_KEY))), None))


def task_states(context: dict, task_ids: list[str]) -> dict[str, str]:
    """States of this run's tasks, mapped instances as `<task>_<index>`."""
    ti, dag_run = context["ti"], context["dag_run"]
    return ti.get_task_states(dag_id=dag_run.dag_id, task_ids=task_ids,
                              run_ids=[dag_run.run_id]).get(dag_run.run_id, {})


AFTER_FAILURE = {  # a failed deploy task's step -> what comes next for the environment
    "resolve": "nothing was touched",
    "gate": "nothing was touched; the refusal is in the ledger and the commit status",
    "plan": "nothing was touched",
    "build_pods": "nothing was touched",
    "build": "nothing was deployed; `record` says what follows",
    "upgrade": "the failure path puts back what this run changed; `record` says what runs now",
    "verify": "the failure path puts back what this run changed; `record` says what runs now",
    "rollback": "this release may still run the failed revision: check `helm history` and roll back by hand",
}


def failed_task_line(task_id: str, map_index: int | None, error: str) -> str:
    """The last line of a failed task's log: what failed and what comes next for the environment."""
    if task_id == "record":
        return f"hubflow: {error}"  # record fails with the run's closing line itself
    which = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else task_id
    step = task_id.rsplit(".", 1)[-1]  # a hub's upgrade and verification run in its wave's group: `canary.upgrade`
    after = AFTER_FAILURE.get(step, "see the run's final `record` task for the state of the environment")
    return f"hubflow: {which} failed ({error.strip().splitlines()[-1] if error.strip() else 'no message'}); {after}"


def on_failure(context: dict) -> None:
    """Task failure callback: the last line of a failed task's log says what failed and what comes next."""
    ti = context["ti"]
    exc = context.get("exception")
    log.error("%s", failed_task_line(ti.task_id, ti.map_index, str(exc) if exc else ""))
