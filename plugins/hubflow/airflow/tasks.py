"""The bodies of the deploy DAG's tasks: each gathers what its step needs from Airflow (connections, variables, the
run's context and XComs), calls one decision of hubflow.core.lifecycle, performs the effects it returns, and leaves
a readable log. Everything here runs inside a task, never at import time. The DAG files import this module at
parse, so the clients (PyGithub, SQLAlchemy + Alembic, ...) are imported inside the functions that use them.
"""
from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from hubflow.airflow import hooks
from hubflow.airflow.operators import FAULT_KEY
from hubflow.core import lifecycle
from hubflow.core.config import ConfigError, Environment, Settings
from hubflow.core.messages import outcome_message
from hubflow.core.plan import WAVES, PlanError, deploy_waves, format_plan
from hubflow.k8s import pods

log = logging.getLogger("hubflow")
ENDED_KEY = "ended"  # XCom of a task that ended the run before any pod ran: {"outcome", "detail"}
LEDGER_OUTCOME = {"unpromoted": "success"}  # verified, not promoted: still what the prod gate must see
STATUS = {"success": "success", "unpromoted": "success", "failed": "failure", "stopped": "failure",
          "platform": "error", "refused": "error", "unknown": "error"}


# ---------------------------------------------------------------- what a task needs from Airflow


def mirror(settings: Settings, have: str | None = None):
    """The worker's mirror of the deployment repository, fetched unless it already holds `have`."""
    from hubflow.clients.mirror import sync

    return sync(settings, hooks.github_token(settings.repository.github_conn_id), have=have)


def run_url(context: dict) -> str:
    dag_run = context["dag_run"]
    return hooks.run_url(dag_run.dag_id, dag_run.run_id)


def who(context: dict) -> str:
    dag_run = context["dag_run"]
    return getattr(dag_run, "triggering_user_name", None) or f"{dag_run.run_type} run"


def force_reason(context: dict) -> str | None:
    return context["params"].get("force_reason") or None


def unknown_params(context: dict) -> str | None:
    """What is wrong with the run's conf when it holds keys that match no param (Airflow accepts them silently, so
    a typo such as `revison` would otherwise deploy the branch head), else None. Every DAG's first task asks."""
    declared = set(context["dag"].params)  # context["params"] already has the conf merged in
    unknown = sorted(set(context["dag_run"].conf or {}) - declared)
    if not unknown:
        return None
    return f"unknown parameter(s) {', '.join(map(repr, unknown))}; this DAG takes {', '.join(sorted(declared)) or 'none'}"


def start_attempt(book, env: Environment, revision: str, base: str | None, tree: str | None, context: dict) -> int:
    """This run's ledger attempt (the same one again on a retry), with who forced it and why when it was forced."""
    force = force_reason(context)
    return book.start(env.name, revision, base, tree, context["dag_run"].run_id, who(context) if force else None,
                      force)


def end(settings: Settings, env: Environment, outcome: str, reason: str, context: dict, revision: str | None = None,
        attempt: int | None = None) -> None:
    """End the run before any pod ran (a refusal, or a platform fault met while planning): the ledger (this run's
    attempt, or a new one), the commit status and `record` say why, and the task fails without retries."""
    from hubflow.clients.github import GitHubError

    if revision:
        book = hooks.ledger(settings)
        if attempt is None:
            attempt = start_attempt(book, env, revision, None, None, context)
        book.finish(attempt, outcome, reason)
        try:
            hooks.github(settings).set_status(env.name, revision, "error", run_url(context), f"{outcome}: {reason}")
        except GitHubError as exc:
            log.warning("could not set the commit status: %s", exc)
    context["ti"].xcom_push(key=ENDED_KEY, value={"outcome": outcome, "detail": reason, "attempt": attempt})
    raise AirflowFailException(f"{outcome}: {reason}")


# ---------------------------------------------------------------- before the pods


def resolve(settings: Settings, env: Environment, context: dict) -> dict:
    from hubflow.clients.git import GitError
    from hubflow.clients.ledger import LedgerError

    unknown = unknown_params(context)
    if unknown:
        end(settings, env, "refused", unknown, context)
    requested = context["params"].get("revision") or None
    try:
        repo = mirror(settings)
        target = lifecycle.resolve(settings, env, repo, hooks.ledger(settings), requested,
                                   hooks.freeze_switch(env.name))
    except lifecycle.Refused as exc:
        end(settings, env, "refused", str(exc), context)
    except (GitError, LedgerError) as exc:
        if requested and "unknown revision" in str(exc):
            end(settings, env, "refused", str(exc), context)
        end(settings, env, "platform", f"cannot read the deployment repository or the ledger: {exc}; nothing was "
                                       "touched, the next trigger runs again", context)
    log.info("target %s (tree %s); last deployed %s%s", target.revision, target.tree, target.base or "none",
             f"; nothing to do: {target.skip}" if target.skip else "")
    return target.to_dict()


def route(first: bool, target: dict) -> list[str]:
    """The next step: nothing (already deployed, held), a promotion owed by an earlier run, or the deploy."""
    if target["skip"]:
        return ["catch_up"] if target.get("owed") else []
    return ["plan"] if first else ["gate"]


def gate(settings: Settings, env: Environment, target: dict, context: dict) -> str | None:
    force = force_reason(context)
    try:
        verified = lifecycle.gate(settings, env, lifecycle.Target(**target), hooks.ledger(settings), force)
    except lifecycle.Refused as exc:
        end(settings, env, "refused", str(exc), context, target["revision"])
    if verified:
        log.info("gate passed: %s has the tree of %s, verified before", target["revision"][:12], verified[:12])
    elif force:
        log.warning("gate forced by %s: %s", who(context), force)
    return verified


def plan(settings: Settings, env: Environment, target: dict, context: dict) -> dict:
    """Plan the range and build its pods, then open the ledger attempt and mark the commit pending."""
    t = lifecycle.Target(**target)
    book = hooks.ledger(settings)
    try:
        the_plan = lifecycle.plan(settings, mirror(settings, t.revision), t, book)
        waves = deploy_waves(the_plan, settings.deploy.canary)
        specs = pods.deploy_pods(settings, env, the_plan)
    except (pods.PodSpecError, PlanError, ConfigError) as exc:
        end(settings, env, "refused", f"cannot plan {t.revision[:12]}: {exc}", context, t.revision)
    log.info("%s", format_plan(the_plan))
    if waves["canary"]:
        log.info("canary wave: %s; then, once every canary passed: %s", ", ".join(waves["canary"]),
                 ", ".join(waves["rest"]) or "nothing")
    attempt = start_attempt(book, env, t.revision, t.base, t.tree, context)
    book.update(attempt, plan=the_plan.to_dict(), links={"run": run_url(context)})
    hooks.github(settings).set_status(env.name, t.revision, "pending", run_url(context),
                                      f"deploying {len(the_plan.hubs)} hub(s) on {env.name}")
    return {"attempt": attempt, "plan": the_plan.to_dict(), "hubs": [h.name for h in the_plan.hubs],
            "waves": waves, "build": specs["build"], "upgrade": specs["upgrade"]}


def build_pods(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> list[dict]:
    """Only the images whose tag the registry lacks are built (a revert builds nothing). An environment that never
    builds refuses, before any hub is touched, when an image is missing or differs from what was verified."""
    from hubflow.clients.registry import RegistryError

    images = planned["plan"]["images"]
    revision, attempt = planned["plan"]["head"], planned["attempt"]
    try:
        registry = hooks.registry(settings)
        digests = {i["name"]: registry.digest(i["repository"], i["tag"]) for i in images}
    except RegistryError as exc:
        end(settings, env, "platform", f"the registry cannot be read: {exc}; nothing was touched", context,
            revision, attempt)
    missing = [i for i in images if digests[i["name"]] is None]
    if missing and not env.build_images:
        end(settings, env, "refused", f"{env.name} never builds, and these images are not in the registry: "
            + ", ".join(f"{i['repository']}:{i['tag']}" for i in missing), context, revision, attempt)
    if not env.build_images:
        verified = _verified_digests(settings, env, target)
        differ = [f"{i['repository']}:{i['tag']} is {digests[i['name']]}, {verified[i['name']]} was verified"
                  for i in images if verified.get(i["name"]) not in (None, digests[i["name"]])]
        if differ:
            end(settings, env, "refused", "an image changed in the registry since it was verified: "
                + "; ".join(differ), context, revision, attempt)
    for image in images:
        log.info("image %s:%s %s", image["repository"], image["tag"],
                 "is missing: building it" if image in missing else f"is in the registry ({digests[image['name']]})")
    names = {i["name"] for i in missing}
    return [spec for spec in planned["build"] if spec["labels"].get(f"{pods.LABEL}image") in names]


def _verified_digests(settings: Settings, env: Environment, target: dict) -> dict[str, str]:
    """The image digests recorded when the revision this one promotes was verified in the previous environment."""
    previous = settings.previous_environment(env.name)
    if previous is None:
        return {}
    attempt = hooks.ledger(settings).verified_attempt_for_tree(previous.name, target["tree"])
    return (attempt.record.get("digests") or {}) if attempt else {}


def hub_of(spec: dict) -> str:
    """The hub a helm pod is for (hub names are valid label values, so the label is the name)."""
    return spec["labels"][f"{pods.LABEL}hub"]


def image_of(spec: dict) -> str:
    """The image a build pod is for (image names are valid label values too)."""
    return spec["labels"][f"{pods.LABEL}image"]


def wave_pods(planned: dict, wave: str) -> list[dict]:
    """The upgrade pods of one wave, in the order of `planned["waves"][wave]` (map index i is that list's hub i)."""
    by_hub = {hub_of(spec): spec for spec in planned["upgrade"]}
    return [by_hub[hub] for hub in planned["waves"][wave]]


# ---------------------------------------------------------------- the pods' outcome


def verify(settings: Settings, env: Environment, target: dict, hub: str, context: dict) -> dict:
    """Smoke-test one hub. The result always reaches XCom (also when the check could not be attempted: a platform
    fault), and a failure fails the task so the grid shows it."""
    from hubflow.clients.verification import verify_hub

    try:
        result = verify_hub(settings, env.name, hub, mirror(settings, target["revision"]), target["base"],
                            target["revision"], hooks.smoke_token(env.smoke_token_conn_id))
    except Exception as exc:  # noqa: BLE001 - the verification could not be attempted: the platform's fault
        result = {"ok": False, "blame": "platform", "hub": hub, "environment": env.name, "checks": [],
                  "error": f"the verification could not be attempted: {exc}"}
    context["ti"].xcom_push(key="result", value=result)
    if not result["ok"]:
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in result["checks"] if c["status"] == "failed")
        raise AirflowFailException(f"hub {hub} failed verification in {env.name}: {failed or result.get('error')}")
    return result


def conclude(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> dict:
    """What the pods did (core.lifecycle.conclude); a verified revision is recorded as such at once, before any
    promotion, so the next environment's gate can always see it."""
    from hubflow.clients.registry import RegistryError

    ti, dag_run = context["ti"], context["dag_run"]
    states = task_states(context, ["build_pods", "build", *(f"{wave}.upgrade" for wave in WAVES)])
    if not planned or states.get("build_pods") != "success":  # the run ended before any pod: `record` says so
        return None
    built = ti.xcom_pull(task_ids="build_pods") or []  # the builds that were mapped
    build_faults = [ti.xcom_pull(task_ids="build", key=FAULT_KEY, map_indexes=i) for i in range(len(built))]
    deployed, verified, deploy_faults = {}, {}, {}
    for hub, wave, i in lifecycle.hub_steps(planned):
        deployed[hub] = ti.xcom_pull(task_ids=f"{wave}.upgrade", map_indexes=i)
        deploy_faults[hub] = ti.xcom_pull(task_ids=f"{wave}.upgrade", key=FAULT_KEY, map_indexes=i)
        verified[hub] = ti.xcom_pull(task_ids=f"{wave}.verify", key="result", map_indexes=i)
    outcome = lifecycle.conclude(env.name, target, dict(planned, build=built), states, deployed, verified,
                                 build_faults, deploy_faults)
    book = hooks.ledger(settings)
    book.update(planned["attempt"], releases=outcome["releases"], verification=outcome["verification"])
    if outcome["outcome"] == "success":
        try:  # what the next environment checks before it deploys the same images
            registry = hooks.registry(settings)
            digests = {i["name"]: registry.digest(i["repository"], i["tag"]) for i in planned["plan"]["images"]}
        except RegistryError as exc:
            log.warning("image digests not recorded (the next environment cannot compare them): %s", exc)
            digests = {}
        book.update(planned["attempt"], digests=digests, promotion="owed" if settings.next_environment(env.name)
                    else "none")
        book.finish(planned["attempt"], "success", outcome["detail"])
    log.info("%s (run %s)", outcome["detail"], dag_run.run_id)
    return outcome


def decide(outcome: dict | None) -> list[str]:
    return {"success": ["succeed"], "failed": ["rollback_pods", "fail"],
            "platform": ["rollback_pods", "fail"]}.get((outcome or {}).get("outcome"), [])


def promote(settings: Settings, env: Environment, revision: str, attempt: int, hubs: int, context: dict) -> dict:
    """Status success and the promotion PR to the next environment (merged when `promotion.mode: merge`, only
    while its head is still the verified revision). Safe to retry: the PR is found before it is made."""
    from hubflow.clients.github import NotMergeable

    gh, book, url = hooks.github(settings), hooks.ledger(settings), run_url(context)
    gh.set_status(env.name, revision, "success", url, f"verified {hubs} hub(s) on {env.name}")
    links: dict[str, str] = {"run": url}
    state = "none"
    if settings.next_environment(env.name):
        pull = gh.ensure_promotion(env.name, revision, {f"{env.name} verification run": url})
        if pull:
            links["promotion"], state = pull.url, "opened"
            log.info("promotion PR #%s: %s", pull.number, pull.url)
            if settings.promotion.mode == "merge":
                try:
                    links["promotion merge"] = gh.merge(pull.number, expected_head=revision)
                    state = "merged"
                    log.info("promotion PR #%s merged: %s", pull.number, links["promotion merge"])
                except NotMergeable as exc:
                    log.warning("promotion PR #%s left open: %s", pull.number, exc)
    book.update(attempt, links=links, promotion=state)
    return links


def succeed(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> dict:
    return promote(settings, env, target["revision"], planned["attempt"], len(planned["hubs"]), context)


def catch_up(settings: Settings, env: Environment, target: dict, context: dict) -> dict:
    """The revision is deployed and verified but its promotion never happened (GitHub was down): do it now."""
    attempt = hooks.ledger(settings).get(target["owed"])
    log.info("%s is verified in %s but was never promoted: opening the promotion now", target["revision"][:12],
             env.name)
    links = promote(settings, env, target["revision"], attempt.id, len(attempt.record.get("plan", {})
                                                                          .get("hubs", [])), context)
    log.info("%s: promotion of %s caught up: %s", env.name, target["revision"][:12], links.get("promotion", "-"))
    return links


def rollback_pods(settings: Settings, env: Environment, outcome: dict) -> list[dict[str, Any]]:
    return pods.undo_pods(settings, env, lifecycle.to_undo(outcome))


def fail(settings: Settings, env: Environment, target: dict, planned: dict, outcome: dict, context: dict) -> dict:
    """The failure path the core decides (lifecycle.aftermath): hold and revert the revision only when it is to
    blame, the commit status, the comments on its PRs. Safe to retry: the hold, the revert PR, the branch and the
    comments are looked up before they are made; a transient GitHub error fails the try and Airflow retries."""
    from hubflow.clients.github import RevertRefused
    from hubflow.clients.revert import RevertConflict

    gh, book, url = hooks.github(settings), hooks.ledger(settings), run_url(context)
    revision, base = target["revision"], target["base"]
    plan = lifecycle.aftermath(outcome, target)
    state, note, links = plan["state"], plan["note"], {"run": url}
    if plan["hold"]:
        book.hold(revision, env.name, outcome["detail"])
    if plan["revert"]:
        try:
            reverted = gh.revert(env.name, base, revision, outcome["detail"], {"run": url})
            links["revert"] = reverted.pull.url
            state, note = lifecycle.revert_note("made", number=reverted.pull.number, merged=bool(reverted.merged_sha))
        except RevertRefused as exc:
            state, note = lifecycle.revert_note("refused", error=str(exc))
        except RevertConflict as exc:
            state, note = lifecycle.revert_note("conflict", files=exc.files)
    gh.set_status(env.name, revision, plan["status"], url, outcome["detail"])
    if outcome["outcome"] == "failed":
        body = lifecycle.failure_comment(env.name, revision, outcome, note, links)
        for pull in gh.merged_pulls(base, revision) if base else []:
            links[f"comment #{pull.number}"] = gh.comment(pull.number, f"hubflow-{env.name}-{revision}", body)
    book.update(planned["attempt"], links=links, revert=note)
    log.warning("%s; %s", outcome["detail"], note)
    return {"state": state, "note": note, "links": links}


def record(settings: Settings, env: Environment, target: dict | None, planned: dict | None, outcome: dict | None,
           aftermath: dict | None, context: dict) -> str:
    """Close the ledger attempt, set the final status, notify, and end the log with one line: what happened and
    what runs in the environment now (core.lifecycle.final)."""
    from hubflow.clients.github import GitHubError

    ti = context["ti"]
    ended = next((e for t in ("resolve", "gate", "plan", "build_pods")
                  if (e := ti.xcom_pull(task_ids=t, key=ENDED_KEY))), None)
    states = task_states(context, ["succeed", "fail", "rollback", "rollback_pods", "catch_up"])
    undo = lifecycle.to_undo(outcome) if outcome else []
    state, line = lifecycle.final(env.name, target, planned, outcome, aftermath, states, undo, ended)
    if state == "skipped":  # nothing new on the branch: no attempt, no message
        log.info("%s", line)
        return line
    links = dict((aftermath or {}).get("links") or {}, run=run_url(context))
    if ended:
        if ended.get("attempt"):  # the task that ended the run set the status; the ledger gets the closing line
            hooks.ledger(settings).finish(ended["attempt"], state, line)
    elif planned:
        hooks.ledger(settings).finish(planned["attempt"], LEDGER_OUTCOME.get(state, state), line)
        try:
            hooks.github(settings).set_status(env.name, target["revision"], STATUS[state], links["run"],
                                              f"{state}: {outcome['detail']}" if outcome else line)
        except GitHubError as exc:
            log.warning("could not set the final commit status (%s): %s", STATUS[state], exc)
    hooks.notify(settings, outcome_message(env.name, (target or {}).get("revision", "?"), state, line, links))
    if state != "success":
        raise AirflowFailException(line)  # the run shows failed, and this line ends its log
    log.info("%s", line)
    return line


def task_states(context: dict, task_ids: list[str]) -> dict[str, str]:
    """States of this run's tasks, mapped instances as `<task>_<index>`."""
    ti, dag_run = context["ti"], context["dag_run"]
    return ti.get_task_states(dag_id=dag_run.dag_id, task_ids=task_ids,
                              run_ids=[dag_run.run_id]).get(dag_run.run_id, {})


def on_failure(context: dict) -> None:
    """Task failure callback: the last line of a failed task's log says what failed and what comes next."""
    ti = context["ti"]
    exc = context.get("exception")
    log.error("%s", lifecycle.failed_task_line(ti.task_id, ti.map_index, str(exc) if exc else ""))
