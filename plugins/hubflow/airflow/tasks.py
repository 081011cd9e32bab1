"""The bodies of the deploy DAG's tasks: each gathers what a step needs from Airflow (connections, variables,
the run's context and XComs), calls the plain step in `lifecycle`, and leaves a readable log.

The DAG files only wire these together. Everything here runs inside a task, never at import time.
"""
from __future__ import annotations

import logging
from typing import Any

from hubflow.core import lifecycle
from hubflow.core.config import Environment, Settings
from hubflow.clients.ledger import Ledger

log = logging.getLogger("hubflow")


# ---------------------------------------------------------------- what a task needs from Airflow


def ledger(settings: Settings) -> Ledger:
    from hubflow.airflow.hooks import ledger_url

    return Ledger(ledger_url(settings.ledger.conn_id))


def github(settings: Settings):
    from hubflow.clients.github import GitHub

    return GitHub.connect(settings)


def mirror(settings: Settings, have: str | None = None):
    """The worker's mirror of the deployment repository, fetched unless it already holds `have`."""
    from hubflow.airflow.hooks import github_token
    from hubflow.clients.mirror import sync

    return sync(settings, github_token(settings.repository.github_conn_id), have=have)


def run_url(context: dict) -> str:
    """Link to this run in the Airflow UI (commit statuses and PR bodies point here)."""
    from airflow.configuration import conf

    from urllib.parse import quote

    base = conf.get("api", "base_url", fallback="") or "http://localhost:8080"
    dag_run = context["dag_run"]
    return f"{base.rstrip('/')}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}"


def who(context: dict) -> str:
    dag_run = context["dag_run"]
    return getattr(dag_run, "triggering_user_name", None) or f"{dag_run.run_type} run"


def refuse(settings: Settings, env: Environment, revision: str | None, reason: str, context: dict,
           attempt: int | None = None) -> None:
    """A run that must not go on: the ledger (this run's attempt, or a new one) and GitHub say why, and the task
    fails without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    if revision:
        book = ledger(settings)
        if attempt is None:
            force = context["params"].get("force_reason") or None
            attempt = book.start(env.name, revision, None, None, context["dag_run"].run_id,
                                 who(context) if force else None, force)
        book.finish(attempt, "refused", reason)
        github(settings).set_status(env.name, revision, "error", run_url(context), f"refused: {reason}")
    raise AirflowFailException(f"refused: {reason}")


# ---------------------------------------------------------------- the steps


def resolve(settings: Settings, env: Environment, context: dict) -> dict:
    from airflow.sdk import Variable

    from hubflow.core.freeze import variable_name

    requested = context["params"].get("revision") or None
    try:
        target = lifecycle.resolve(settings, env, mirror(settings), ledger(settings), requested,
                                   Variable.get(variable_name(env.name), default=None))
    except lifecycle.Refused as exc:
        refuse(settings, env, None, str(exc), context)
    log.info("target %s (tree %s); last deployed %s%s", target.revision, target.tree, target.base or "none",
             f"; nothing to do: {target.skip}" if target.skip else "")
    return target.to_dict()


def gate(settings: Settings, env: Environment, target: dict, context: dict) -> str | None:
    force = context["params"].get("force_reason") or None
    try:
        verified = lifecycle.gate(settings, env, lifecycle.Target(**target), ledger(settings), force)
    except lifecycle.Refused as exc:
        refuse(settings, env, target["revision"], str(exc), context)
    if verified:
        log.info("gate passed: %s has the tree of %s, verified before", target["revision"][:12], verified[:12])
    elif force:
        log.warning("gate forced by %s: %s", who(context), force)
    return verified


def plan(settings: Settings, env: Environment, target: dict, context: dict) -> dict:
    """Plan the range, open the ledger attempt, mark the commit pending, and list the pods it may run."""
    from hubflow.k8s import pods
    from hubflow.core.plan import format_plan

    t = lifecycle.Target(**target)
    book = ledger(settings)
    the_plan = lifecycle.plan(settings, mirror(settings, t.revision), t, book)
    log.info("%s", format_plan(the_plan))
    force = context["params"].get("force_reason") or None
    attempt = book.start(env.name, t.revision, t.base, t.tree, context["dag_run"].run_id,
                         who(context) if force else None, force)
    book.update(attempt, plan=the_plan.to_dict(), links={"run": run_url(context)})
    github(settings).set_status(env.name, t.revision, "pending", run_url(context),
                                f"deploying {len(the_plan.hubs)} hub(s) on {env.name}")
    specs = pods.deploy_pods(settings, env, the_plan)
    return {"attempt": attempt, "plan": the_plan.to_dict(), "hubs": [h.name for h in the_plan.hubs],
            "build": specs["build"], "upgrade": specs["upgrade"]}


def build_pods(settings: Settings, env: Environment, planned: dict, context: dict) -> list[dict]:
    """The images whose tag the registry lacks are the only ones built (a revert builds nothing).

    An environment that never builds fails here, before any hub is touched, when an image is missing.
    """
    from hubflow.clients.registry import RegistryClient, credentials_from_connection

    client = RegistryClient(credentials_from_connection(settings.registry.conn_id))
    images = [i for i in planned["plan"]["images"] if not client.exists(i["repository"], i["tag"])]
    if images and not env.build_images:
        refuse(settings, env, planned["plan"]["head"], f"{env.name} never builds, and these images are not in "
               "the registry: " + ", ".join(f"{i['repository']}:{i['tag']}" for i in images), context,
               planned["attempt"])
    names = {i["name"] for i in images}
    for image in planned["plan"]["images"]:
        log.info("image %s:%s %s", image["repository"], image["tag"],
                 "is missing: building it" if image["name"] in names else "is in the registry: not building")
    return [spec for spec in planned["build"] if spec["labels"].get("hubflow.io/image") in names]


def hub_of(spec: dict) -> str:
    """The hub a helm pod is for (hub names are valid label values, so the label is the name)."""
    return spec["labels"]["hubflow.io/hub"]


def verify(settings: Settings, env: Environment, target: dict, hub: str, context: dict) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from hubflow.clients.verification import verify_hub

    result = verify_hub(settings, env.name, hub, mirror(settings, target["revision"]), target["base"],
                        target["revision"])
    context["ti"].xcom_push(key="result", value=result)
    if not result["ok"]:
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in result["checks"] if c["status"] == "failed")
        raise AirflowFailException(f"hub {hub} failed verification in {env.name}: {failed}")
    return result


def conclude(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> dict:
    """What happened, read from the task states and XComs of build, deploy and verify."""
    refused = {"outcome": "refused", "detail": "refused before any pod ran: nothing was touched"}
    if not planned:
        return refused
    ti, dag_run = context["ti"], context["dag_run"]
    states = ti.get_task_states(dag_id=dag_run.dag_id, task_ids=["build_pods", "upgrade_pods", "build", "deploy",
                                                                 "verify"],
                                run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    if any(states.get(task) != "success" for task in ("build_pods", "upgrade_pods")):
        return refused
    n = len(planned["hubs"])
    deployed = [ti.xcom_pull(task_ids="deploy", map_indexes=i) for i in range(n)]
    verified = [ti.xcom_pull(task_ids="verify", key="result", map_indexes=i) for i in range(n)]
    outcome = lifecycle.conclude(env, target, planned, states, deployed, verified)
    ledger(settings).update(planned["attempt"], releases=outcome["releases"], verification=outcome["verification"])
    log.info("%s", outcome["detail"])
    return outcome


def succeed(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> dict:
    """Success: status, the asset event for the verified revision, and the promotion PR when there is a next env."""
    gh = github(settings)
    url = run_url(context)
    gh.set_status(env.name, target["revision"], "success", url,
                  f"verified {len(planned['hubs'])} hub(s) on {env.name}")
    links = {"run": url}
    if settings.next_environment(env.name):
        pull = gh.ensure_promotion(env.name, target["revision"], {f"{env.name} verification run": url})
        if pull:
            links["promotion"] = pull.url
            log.info("promotion PR #%s: %s", pull.number, pull.url)
            if settings.promotion.mode == "merge":  # only while its head is still the verified revision
                links["promotion merge"] = gh.merge(pull.number, expected_head=target["revision"])
                log.info("promotion PR #%s merged: %s", pull.number, links["promotion merge"])
    ledger(settings).update(planned["attempt"], links=links)
    return links


def fail(settings: Settings, env: Environment, target: dict, planned: dict, outcome: dict, context: dict) -> dict:
    """Failure: hold the revision, revert the range on the branch, comment on its PRs, failure status.

    The rollback of the hubs runs as pods beside this task. A range that is itself a revert is never reverted:
    the line stops and the message says so.
    """
    from hubflow.clients.github import GitHubError, RevertRefused

    gh, book, url = github(settings), ledger(settings), run_url(context)
    revision, base = target["revision"], target["base"]
    book.hold(revision, env.name, outcome["detail"])
    links: dict[str, str] = {"run": url}
    state = "failed"
    if target.get("reverts"):
        state = "stopped"
        note = ("the failed range reverts held revision(s) " + ", ".join(r[:12] for r in target["reverts"])
                + ": hubflow never reverts a revert; the line is stopped until a person fixes forward")
    elif base is None:
        state = "stopped"
        note = "this was the first deploy of the environment: there is no good revision to revert to"
    else:
        try:
            reverted = gh.revert(env.name, base, revision, outcome["detail"], {"run": url})
            links["revert"] = reverted.pull.url
            note = f"revert PR #{reverted.pull.number}" + (" merged" if reverted.merged_sha else " opened")
        except RevertRefused as exc:
            state, note = "stopped", f"{exc}; the line is stopped"
        except GitHubError as exc:
            state, note = "stopped", f"the revert could not be made: {exc}; revert by hand"
    gh.set_status(env.name, revision, "failure", url, outcome["detail"])
    body = lifecycle.failure_comment(env.name, revision, outcome, note, links)
    for pull in gh.merged_pulls(base, revision) if base else []:
        links[f"comment #{pull.number}"] = gh.comment(pull.number, f"hubflow-{env.name}-{revision}", body)
    book.update(planned["attempt"], links=links, revert=note)
    log.warning("%s; %s", outcome["detail"], note)
    return {"state": state, "note": note, "links": links}


def record(settings: Settings, env: Environment, target: dict | None, planned: dict | None, outcome: dict | None,
           aftermath: dict | None, context: dict) -> str:
    """Close the ledger attempt, notify, and end the log with one line: what happened and where env is now."""
    from airflow.sdk.exceptions import AirflowFailException

    from hubflow.core import messages as notify

    if not (target and planned and outcome) or outcome["outcome"] == "refused":  # see the failed task above
        raise AirflowFailException(f"{env.name}: the run was refused or stopped before anything was deployed; "
                                   f"{env.name} is unchanged")
    state = (aftermath or {}).get("state", "failed") if outcome["outcome"] == "failed" else "success"
    failed_rollbacks = _failed_rollbacks(context) if state != "success" else []
    state = "stopped" if failed_rollbacks else state
    line = lifecycle.final_line(env.name, target, outcome, aftermath, failed_rollbacks)
    ledger(settings).finish(planned["attempt"], "success" if state == "success" else "failed", line)
    links = dict((aftermath or {}).get("links") or {}, run=run_url(context))
    notify.send(settings, notify.outcome_message(env.name, target["revision"], state, line, links))
    if state != "success":
        raise AirflowFailException(line)  # the run shows failed, and this line ends its log
    log.info("%s", line)
    return line


def _failed_rollbacks(context: dict) -> list[str]:
    """The hubs whose rollback pod failed in this run."""
    ti, dag_run = context["ti"], context["dag_run"]
    states = ti.get_task_states(dag_id=dag_run.dag_id, task_ids=["rollback"],
                                run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    specs = ti.xcom_pull(task_ids="rollback_pods") or []
    return [hub_of(specs[i]) for key, state in states.items()
            if state == "failed" and (i := lifecycle.map_index_of(key)) is not None and i < len(specs)]


def on_failure(context: dict) -> None:
    """Task failure callback: the last line of a failed task's log says what failed and what comes next."""
    ti = context["ti"]
    exc = context.get("exception")
    log.error("%s", lifecycle.failed_task_line(ti.task_id, ti.map_index, str(exc) if exc else ""))


def rollback_pods(settings: Settings, env: Environment, outcome: dict) -> list[dict[str, Any]]:
    from hubflow.k8s import pods

    return [pods.helm_rollback_pod(settings, env, r["hub"], r["previous_revision"])
            for r in outcome["releases"] if r.get("upgraded") and r.get("previous_revision")]
