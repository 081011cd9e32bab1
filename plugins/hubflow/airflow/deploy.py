"""The deploy DAG of each configured environment (`hubflow_deploy_staging`, `hubflow_deploy_prod`, ...) and its task
bodies.

Each body gathers what its step needs from Airflow (connections, variables, the run's XComs, through
hubflow.airflow.results for the pods' outcome), calls one decision of hubflow.core.deploy, performs the effects it
returns, and leaves a readable log; XCom carries the core's values as JSON (`to_dict`/`from_dict`). Building a DAG
reads the settings and nothing else (no network, no subprocess, no connection lookups), and its cost does not
depend on the number of hubs; the clients (PyGithub, SQLAlchemy + Alembic, ...) load inside the bodies.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, NoReturn

import pendulum
from airflow.sdk import Asset, AssetWatcher, Param, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.task.trigger_rule import TriggerRule

from hubflow.airflow import hooks, outbox, results
from hubflow.airflow.operators import HubflowPodOperator, pod_operator_kwargs
from hubflow.airflow.runs import end_run, ended_by, mirror, on_failure, run_url, unknown_params, verification, who
from hubflow.airflow.triggers import BranchHeadTrigger
from hubflow.core import deploy as core
from hubflow.core.documents import ConfigError
from hubflow.core.messages import outcome_message
from hubflow.core.outcomes import Aftermath, Conclusion, Ended, Outcome
from hubflow.core.plan import PlanError, deploy_waves, format_plan
from hubflow.core.settings import Environment, Settings, load_settings
from hubflow.core.texts import realign
from hubflow.k8s import pods

log = logging.getLogger("hubflow")


# ---------------------------------------------------------------- what a task needs from Airflow


def force_reason(context: dict) -> str | None:
    return context["params"].get("force_reason") or None


def start_attempt(book, env: Environment, revision: str, base: str | None, tree: str | None, context: dict) -> int:
    """This run's ledger attempt (the same one again on a retry), with who forced it and why when it was forced."""
    force = force_reason(context)
    return book.start(env.name, revision, base, tree, context["dag_run"].run_id, who(context) if force else None,
                      force)


def end(settings: Settings, env: Environment, outcome: Outcome, reason: str, context: dict,
        revision: str | None = None, attempt: int | None = None) -> NoReturn:
    """End the run before any pod ran (a refusal, or a platform fault met while planning): the ledger (this run's
    attempt, or a new one; the outbox while the ledger is down) and the commit status say why, then `end_run`
    hands the reason to `record`."""
    from hubflow.clients.github import GitHubError
    from hubflow.clients.ledger import LedgerError

    if revision:
        if attempt is None:
            try:
                attempt = start_attempt(hooks.ledger(settings), env, revision, None, None, context)
            except LedgerError as exc:
                log.warning("this run has no ledger attempt: the ledger cannot be reached (%s)", exc)
        if attempt is not None:
            outbox.write(settings, env.name, "finish", attempt, outcome.ledger, reason)
        try:
            hooks.github(settings).set_status(env.name, revision, outcome.status, run_url(context),
                                              f"{outcome}: {reason}")
        except GitHubError as exc:
            log.warning("could not set the commit status: %s", exc)
    end_run(context, Ended(outcome, reason, attempt))


class BeforePods:
    """A step before any pod ran: whatever it meets unexpectedly (GitHub or the ledger down past their retries, a
    bug) ends the run through `end` as a platform fault that touched nothing, with the attempt closed and the
    commit status set, never as a crash that leaves the attempt running and the line guessing."""

    def __init__(self, settings: Settings, env: Environment, context: dict, what: str,
                 revision: str | None = None, attempt: int | None = None):
        self.settings, self.env, self.context, self.what = settings, env, context, what
        self.revision, self.attempt = revision, attempt

    def __enter__(self) -> BeforePods:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, AirflowException) or not isinstance(exc, Exception):
            return  # it went well, or `end` already ended the run, or the worker is stopping
        end(self.settings, self.env, Outcome.PLATFORM, f"{self.what} failed: {str(exc).strip() or type(exc).__name__}"
            "; nothing was touched, the next trigger runs again", self.context, self.revision, self.attempt)


# ---------------------------------------------------------------- before the pods


def resolve(settings: Settings, env: Environment, context: dict) -> dict:
    from hubflow.clients.git import GitError
    from hubflow.clients.ledger import LedgerError

    unknown = unknown_params(context)
    if unknown:
        end(settings, env, Outcome.REFUSED, unknown, context)
    requested = context["params"].get("revision") or None
    try:
        outbox.catch_up(settings)  # what the ledger missed while it was down: holds in force before anything reads
        repo = mirror(settings)
        target = core.resolve(settings, env, repo, hooks.ledger(settings), requested, hooks.freeze_switch(env.name),
                              force_reason(context))
    except core.Refused as exc:
        end(settings, env, Outcome.REFUSED, str(exc), context)
    except (GitError, LedgerError) as exc:
        if requested and "unknown revision" in str(exc):
            end(settings, env, Outcome.REFUSED, str(exc), context)
        end(settings, env, Outcome.PLATFORM, f"cannot read the deployment repository or the ledger: {exc}; nothing "
                                             "was touched, the next trigger runs again", context)
    log.info("target %s (tree %s); last deployed %s%s", target.revision, target.tree, target.base or "none",
             f"; nothing to do: {target.skip}" if target.skip else "")
    if target.rewritten and not target.skip:
        log.warning("%s runs %s, which %r no longer contains (rewritten): forced by %s (%s), every hub is deployed "
                    "at %s", env.name, target.rewritten[:12], env.branch, who(context), force_reason(context),
                    target.revision[:12])
    return target.to_dict()


def route(first: bool, target: dict) -> list[str]:
    """The next step: nothing (already deployed, held), a promotion owed by an earlier run, or the deploy."""
    if target["skip"]:
        return ["catch_up"] if target.get("owed") else []
    return ["plan"] if first else ["gate"]


def gate(settings: Settings, env: Environment, target: dict, context: dict) -> str | None:
    force = force_reason(context)
    t = core.Target.from_dict(target)
    try:
        verified = core.gate(settings, env, t, hooks.ledger(settings), force)
    except core.Refused as exc:
        end(settings, env, Outcome.REFUSED, str(exc), context, t.revision)
    if verified:
        log.info("gate passed: %s has the tree of %s, verified before", t.revision[:12], verified[:12])
    elif force:
        log.warning("gate forced by %s: %s", who(context), force)
    return verified


def plan(settings: Settings, env: Environment, target: dict, context: dict) -> dict:
    """Plan the range and build its pods, then open the ledger attempt and mark the commit pending."""
    t = core.Target.from_dict(target)
    book = hooks.ledger(settings)
    try:
        the_plan = core.plan(settings, mirror(settings, t.revision), t, book)
        waves = deploy_waves(the_plan, settings.deploy.canary)
        specs = pods.deploy_pods(settings, env, the_plan)
    except (pods.PodSpecError, PlanError, ConfigError) as exc:
        end(settings, env, Outcome.REFUSED, f"cannot plan {t.revision[:12]}: {exc}", context, t.revision)
    log.info("%s", format_plan(the_plan))
    if waves["canary"]:
        log.info("canary wave: %s; then, once every canary passed: %s", ", ".join(waves["canary"]),
                 ", ".join(waves["rest"]) or "nothing")
    attempt = start_attempt(book, env, t.revision, t.base, t.tree, context)
    with BeforePods(settings, env, context, "opening the deploy", t.revision, attempt):
        book.update(attempt, plan=the_plan.to_dict(), links={"run": run_url(context)})
        hooks.github(settings).set_status(env.name, t.revision, "pending", run_url(context),
                                          f"deploying {len(the_plan.hubs)} hub(s) on {env.name}")
    return core.Planned(attempt, the_plan.to_dict(), waves, specs["build"], specs["upgrade"]).to_dict()


def build_pods(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> list[dict]:
    """Only the images whose tag the registry lacks are built (a revert builds nothing). An environment that never
    builds refuses, before any hub is touched, when an image is missing or differs from what was verified."""
    from hubflow.clients.registry import RegistryError

    p = core.Planned.from_dict(planned)
    images, revision = p.plan["images"], p.plan["head"]
    try:
        registry = hooks.registry(settings)
        digests = {i["name"]: registry.digest(i["repository"], i["tag"]) for i in images}
    except RegistryError as exc:
        end(settings, env, Outcome.PLATFORM, f"the registry cannot be read: {exc}; nothing was touched", context,
            revision, p.attempt)
    missing = [i for i in images if digests[i["name"]] is None]
    if missing and not env.build_images:
        end(settings, env, Outcome.REFUSED, f"{env.name} never builds, and these images are not in the registry: "
            + ", ".join(f"{i['repository']}:{i['tag']}" for i in missing), context, revision, p.attempt)
    if not env.build_images:
        verified = _verified_digests(settings, env, target)
        differ = [f"{i['repository']}:{i['tag']} is {digests[i['name']]}, {verified[i['name']]} was verified"
                  for i in images if verified.get(i["name"]) not in (None, digests[i["name"]])]
        if differ:
            end(settings, env, Outcome.REFUSED, "an image changed in the registry since it was verified: "
                + "; ".join(differ), context, revision, p.attempt)
    for image in images:
        log.info("image %s:%s %s", image["repository"], image["tag"],
                 "is missing: building it" if image in missing else f"is in the registry ({digests[image['name']]})")
    names = {i["name"] for i in missing}
    return [spec for spec in p.build if image_of(spec) in names]


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
    """The upgrade pods of one wave, in the order of the wave's hubs (map index i is that list's hub i)."""
    p = core.Planned.from_dict(planned)
    by_hub = {hub_of(spec): spec for spec in p.upgrade}
    return [by_hub[hub] for hub in p.waves[wave]]


# ---------------------------------------------------------------- the pods' outcome


def verify(settings: Settings, env: Environment, target: dict, hub: str, context: dict) -> dict:
    """Smoke-test one hub. The result always reaches XCom (also when the check could not be attempted: a platform
    fault), and a failure fails the task so the grid shows it."""
    result = verification(settings, env, hub, target["base"], target["revision"])
    context["ti"].xcom_push(key=results.RESULT_KEY, value=result)
    if not result["ok"]:
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in result["checks"] if c["status"] == "failed")
        raise AirflowFailException(f"hub {hub} failed verification in {env.name}: {failed or result.get('error')}")
    return result


def conclude(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> dict | None:
    """What the pods did (core.deploy.conclude over each hub's result); a verified revision is recorded as such at
    once, before any promotion, so the next environment's gate can always see it."""
    from hubflow.clients.registry import RegistryError

    p = core.Planned.from_dict(planned)
    if not p or not results.planned_pods_ran(context):  # the run ended before any pod: `record` says so
        return None
    built = context["ti"].xcom_pull(task_ids="build_pods") or []  # the builds that were mapped
    conclusion = core.conclude(core.Target.from_dict(target), results.hub_results(context, p),
                               results.build_results(context, built))
    out = conclusion.to_dict()
    outbox.write(settings, env.name, "update", p.attempt, releases=out["releases"], verification=out["verification"])
    if conclusion.outcome is Outcome.SUCCESS:
        try:  # what the next environment checks before it deploys the same images
            registry = hooks.registry(settings)
            digests = {i["name"]: registry.digest(i["repository"], i["tag"]) for i in p.plan["images"]}
        except RegistryError as exc:
            log.warning("image digests not recorded (the next environment cannot compare them): %s", exc)
            digests = {}
        outbox.write(settings, env.name, "update", p.attempt, digests=digests,
                     promotion="owed" if settings.next_environment(env.name) else "none")
        outbox.write(settings, env.name, "finish", p.attempt, Outcome.SUCCESS.ledger, conclusion.detail)
    log.info("%s (run %s)", conclusion.detail, context["dag_run"].run_id)
    return out


def decide(conclusion: dict | None) -> list[str]:
    outcome = (conclusion or {}).get("outcome")
    if outcome == Outcome.SUCCESS:
        return ["succeed"]
    return ["rollback_pods", "fail"] if outcome in (Outcome.FAILED, Outcome.PLATFORM) else []


def promote(settings: Settings, env: Environment, revision: str, attempt: int, hubs: int, context: dict) -> dict:
    """Status success and the promotion PR to the next environment. With `promotion.mode: merge` the first
    environment's run then makes the same checked promotion as hubflow_promote (its gates, then the merge at
    exactly the verified revision, booked in the ledger's promotions): a gate that refuses leaves the PR open and
    says why (hubflow.airflow.promotion.automatic). Safe to retry: the PR is found before it is made, the
    promotion is the run's own in the ledger."""
    from hubflow.airflow import promotion

    gh, url = hooks.github(settings), run_url(context)
    gh.set_status(env.name, revision, "success", url, f"verified {hubs} hub(s) on {env.name}")
    links: dict[str, str] = {"run": url}
    state = "none"
    if settings.next_environment(env.name):
        pull = gh.ensure_promotion(env.name, revision, {f"{env.name} verification run": url})
        if pull:
            links["promotion"], state = pull.url, "opened"
            log.info("promotion PR #%s: %s", pull.number, pull.url)
            if settings.promotion.mode == "merge" and env.name == settings.environments[0].name:
                outcome, _ = promotion.automatic(settings, revision, pull.to_dict(), context)
                state = outcome.value  # merged, refused (the PR stays open, the line says why) or opened
    outbox.write(settings, env.name, "update", attempt, links=links, promotion=state)
    return links


def succeed(settings: Settings, env: Environment, target: dict, planned: dict, context: dict) -> dict:
    p = core.Planned.from_dict(planned)
    return promote(settings, env, target["revision"], p.attempt, len(p.hubs), context)


def catch_up(settings: Settings, env: Environment, target: dict, context: dict) -> dict:
    """The revision is deployed and verified but its promotion never happened (GitHub was down): do it now."""
    attempt = hooks.ledger(settings).get(target["owed"])
    log.info("%s is verified in %s but was never promoted: opening the promotion now", target["revision"][:12],
             env.name)
    links = promote(settings, env, target["revision"], attempt.id, len(attempt.record.get("plan", {})
                                                                          .get("hubs", [])), context)
    log.info("%s: promotion of %s caught up: %s", env.name, target["revision"][:12], links.get("promotion", "-"))
    return links


def rollback_pods(settings: Settings, env: Environment, conclusion: dict) -> list[dict[str, Any]]:
    return pods.undo_pods(settings, env, core.to_undo(Conclusion.from_dict(conclusion)))


def fail(settings: Settings, env: Environment, target: dict, planned: dict, conclusion: dict, context: dict) -> dict:
    """The failure path the core decides (core.deploy.aftermath): hold and revert the revision only when it is to
    blame, the commit status, the comments on its PRs. Safe to retry: the hold, the revert PR, the branch and the
    comments are looked up before they are made; a transient GitHub error fails the try and Airflow retries."""
    from hubflow.clients.github import RevertRefused
    from hubflow.clients.revert import RevertConflict

    gh, url = hooks.github(settings), run_url(context)
    t, c = core.Target.from_dict(target), Conclusion.from_dict(conclusion)
    after = core.aftermath(c, t)
    after.links = {"run": url}
    unwritten = after.hold and outbox.write(settings, env.name, "hold", t.revision, env.name, c.detail)
    if after.revert:
        try:
            reverted = gh.revert(env.name, t.base, t.revision, c.detail, {"run": url})
            after.links["revert"] = reverted.pull.url
            after.state, after.note = core.revert_note("made", number=reverted.pull.number,
                                                       merged=bool(reverted.merged_sha))
        except RevertRefused as exc:
            after.state, after.note = core.revert_note("refused", error=str(exc))
        except RevertConflict as exc:
            after.state, after.note = core.revert_note("conflict", files=exc.files)
    if unwritten:  # said in the comments too: the hold is not in force until the ledger has it
        after.note += (f"; the ledger could not be written ({unwritten}): the hold and this outcome are written "
                       "when it returns")
    gh.set_status(env.name, t.revision, after.status, url, c.detail)
    if c.outcome is Outcome.FAILED:
        body = core.failure_comment(env.name, t.revision, c, after.note, after.links)
        before = settings.previous_environment(env.name)
        if before and after.revert:  # the revert is a commit only this environment has: the one action after it
            body += (f"- the revert is a commit {before.name} lacks: "
                     f"{realign(before.name, env.name, before.branch, env.branch)}\n")
        for pull in gh.merged_pulls(t.base, t.revision) if t.base else []:
            after.links[f"comment #{pull.number}"] = gh.comment(pull.number, f"hubflow-{env.name}-{t.revision}", body)
    late = outbox.write(settings, env.name, "update", core.Planned.from_dict(planned).attempt, links=after.links,
                        revert=after.note)
    if late and not unwritten:
        after.note += f"; the ledger could not be written ({late}): this outcome is written when it returns"
    log.warning("%s; %s", c.detail, after.note)
    return after.to_dict()


def record(settings: Settings, env: Environment, target: dict | None, planned: dict | None,
           conclusion: dict | None, aftermath: dict | None, context: dict) -> str:
    """Close the ledger attempt, set the final status, notify, and end the log with one line: what happened and
    what runs in the environment now (core.deploy.final)."""
    from hubflow.clients.github import GitHubError

    t, p, c = core.Target.from_dict(target), core.Planned.from_dict(planned), Conclusion.from_dict(conclusion)
    after = Aftermath.from_dict(aftermath)
    ended = ended_by(context, ["resolve", "gate", "plan", "build_pods"])
    undo = core.to_undo(c) if c else []
    outcome, line = core.final(env.name, t, p, c, after, results.paths(context),
                               results.rollback_steps(context, undo), ended)
    if outcome is Outcome.SKIPPED:  # nothing new on the branch: no attempt, no message
        log.info("%s", line)
        return line
    links = dict(after.links if after else {}, run=run_url(context))
    attempt = ended.attempt if ended else p.attempt if p else None
    unwritten = attempt and outbox.write(settings, env.name, "finish", attempt, outcome.ledger, line)
    if unwritten and "the ledger could not be written" not in line:
        line += f"; the ledger could not be written ({unwritten}): this outcome is written when it returns"
    if p and not ended:  # a task that ended the run early set the status itself
        try:
            hooks.github(settings).set_status(env.name, t.revision, outcome.status, links["run"],
                                              f"{outcome}: {c.detail}" if c else line)
        except GitHubError as exc:
            log.warning("could not set the final commit status (%s): %s", outcome.status, exc)
    hooks.notify(settings, outcome_message(env.name, t.revision if t else "?", outcome, line, links))
    if outcome is not Outcome.SUCCESS:
        raise AirflowFailException(line)  # the run shows failed, and this line ends its log
    log.info("%s", line)
    return line


# ---------------------------------------------------------------- the DAG

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


def deploy_dag(settings: Settings, env: Environment):  # noqa: C901 - one nested function per task, no logic
    first = env.name == settings.environments[0].name
    nxt = settings.next_environment(env.name)
    verified = verified_asset(settings, env)

    @dag(
        dag_id=core.deploy_dag_id(env.name),
        schedule=branch_asset(settings, env),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["hubflow", "deploy", env.name],
        default_args={"owner": "hubflow", "retries": 0, "on_failure_callback": on_failure},
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
                                  description="pass the gate anyway, or deploy every hub after the branch was "
                                              "rewritten; the ledger keeps who forced it and why"),
        },
    )
    def deploy():  # noqa: C901 - one nested function per task, no logic
        @task(task_id="resolve",
              doc_md="Fetch the repository; the target revision, the last deployed one; held/frozen/nothing new.")
        def _resolve() -> dict:
            context = get_current_context()
            with BeforePods(settings, env, context, "resolve"):
                return resolve(settings, env, context)

        @task.branch(task_id="route",
                     doc_md="Deploy, catch up an owed promotion, or stop here successfully (the reason is logged).")
        def _route(target: dict) -> list[str]:
            return route(first, target)

        @task(task_id="gate",
              doc_md="Promote exactly what was tested: the tree must match a verified tree of the previous env.")
        def _gate(target: dict) -> str | None:
            context = get_current_context()
            with BeforePods(settings, env, context, "the gate", target["revision"]):
                return gate(settings, env, target, context)

        @task(task_id="plan", doc_md="Plan the range; open the ledger attempt; status pending; list the pods.")
        def _plan(target: dict) -> dict:
            context = get_current_context()
            with BeforePods(settings, env, context, "planning", target["revision"]):
                return plan(settings, env, target, context)

        @task(task_id="catch_up", outlets=[verified], **BOOKKEEPING,
              doc_md="A verified revision whose promotion never happened (GitHub was down): status and PR now.")
        def _catch_up(target: dict) -> dict:
            return catch_up(settings, env, target, get_current_context())

        @task(task_id="build_pods", doc_md="Ask the registry which tags are missing: only those images are built.")
        def _build_pods(target: dict, planned: dict) -> list[dict]:
            context = get_current_context()
            with BeforePods(settings, env, context, "checking the registry", target["revision"], planned["attempt"]):
                return build_pods(settings, env, target, planned, context)

        @task(task_id="build", **POD_RETRIES, doc_md="Build and push one image through the Docker Engine API.")
        def _docker_build(target: dict, planned: dict, image: str) -> dict:
            from hubflow.airflow import builds  # the docker SDK is loaded only where a build runs

            return builds.docker_build(settings, env, target, planned, image, get_current_context())

        @task(trigger_rule=TriggerRule.NONE_FAILED,
              doc_md="The upgrade pods of one wave (`canary`: the deploy.canary hubs this plan deploys; `rest`: "
                     "the others, once every canary passed).")
        def _wave_pods(planned: dict, wave: str) -> list[dict]:
            return wave_pods(planned, wave)

        @task(task_id="verify",
              doc_md="Smoke-test one hub: health, API, a throwaway user's server, a kernel importing the packages.")
        def _verify(target: dict, pod: dict) -> dict:
            return verify(settings, env, target, hub_of(pod), get_current_context())

        def wave(name: str, upgrade_pods):
            @task_group(group_id=name, tooltip="per hub: helm upgrade, then its verification")
            def hub(target: dict, pod: dict):
                upgrade = HubflowPodOperator(
                    task_id="upgrade", pod=pod, max_active_tis_per_dagrun=settings.deploy.max_parallel,
                    **POD_RETRIES, **pod_operator_kwargs(settings, env, "upgrade"),
                    doc_md="helm upgrade --install of one hub (runner pod, --rollback-on-failure); XCom: helm "
                           "revisions before/after.")
                upgrade >> _verify(target, pod)

            group = hub.partial(target=target).expand(pod=upgrade_pods)
            upgrade_pods >> group
            return group

        @task(task_id="conclude", trigger_rule=TriggerRule.ALL_DONE, **BOOKKEEPING,
              doc_md="Read what the builds, upgrades and verifications did: success, the revision's fault, or "
                     "the platform's.")
        def _conclude(target: dict, planned: dict) -> dict | None:
            return conclude(settings, env, target, planned, get_current_context())

        @task.branch(task_id="decide", **BOOKKEEPING, doc_md="Success path or failure path.")
        def _decide(conclusion: dict) -> list[str]:
            return decide(conclusion)

        @task(task_id="succeed", outlets=[verified], **BOOKKEEPING,
              doc_md="Status success, the verified asset event, the promotion PR (safe to retry).")
        def _succeed(target: dict, planned: dict) -> dict:
            context = get_current_context()
            context["outlet_events"][verified].extra = {"revision": target["revision"], "tree": target["tree"]}
            return succeed(settings, env, target, planned, context)

        @task(task_id="rollback_pods",
              doc_md="What this run changed, to put back: helm rollbacks, uninstalls of first installs.")
        def _rollback_pods(conclusion: dict) -> list[dict]:
            return rollback_pods(settings, env, conclusion)

        rollback = HubflowPodOperator.partial(
            task_id="rollback", doc_md="helm rollback (or uninstall) of one hub to what it ran before this run.",
            **POD_RETRIES, **pod_operator_kwargs(settings, env, "rollback"))

        @task(task_id="fail", **BOOKKEEPING,
              doc_md="Hold and revert the revision when it is to blame (never a revert of a revert), status, "
                     "comments (safe to retry: the PR, the branch and the comments are looked up first).")
        def _fail(target: dict, planned: dict, conclusion: dict) -> dict:
            return fail(settings, env, target, planned, conclusion, get_current_context())

        @task(task_id="record", trigger_rule=TriggerRule.ALL_DONE, **BOOKKEEPING,
              doc_md="Ledger, final status, Slack, and the closing line: what runs now.")
        def _record(target: dict, planned: dict, conclusion: dict, aftermath: dict | None) -> str:
            return record(settings, env, target, planned, conclusion, aftermath, get_current_context())

        target = _resolve()
        way = _route(target)
        planned = _plan(target)
        if first:
            way >> planned
        else:
            way >> _gate(target) >> planned
        caught_up = _catch_up(target)
        way >> caught_up
        to_build = _build_pods(target, planned)
        if env.builder == "docker":  # no pod: the worker talks to the Docker Engine API
            builds = _docker_build.partial(target=target, planned=planned).expand(image=to_build.map(image_of))
        else:
            builds = HubflowPodOperator.partial(
                task_id="build", doc_md="Build and push one image (rootless BuildKit pod).", **POD_RETRIES,
                **pod_operator_kwargs(settings, env, "build")).expand(pod=to_build)
        canary_pods = _wave_pods.override(task_id="canary_pods")(planned, "canary")
        builds >> canary_pods
        canary = wave("canary", canary_pods)
        rest_pods = _wave_pods.override(task_id="rest_pods")(planned, "rest")
        canary >> rest_pods
        rest = wave("rest", rest_pods)
        conclusion = _conclude(target, planned)
        [builds, canary, rest] >> conclusion  # every pod has ended, whichever failed first
        branch = _decide(conclusion)
        ok = _succeed(target, planned)
        to_roll_back = _rollback_pods(conclusion)
        back = rollback.expand(pod=to_roll_back)
        aftermath = _fail(target, planned, conclusion)
        branch >> [ok, to_roll_back, aftermath]
        done = _record(target, planned, conclusion, aftermath)
        [ok, back, aftermath, caught_up] >> done

    return deploy()


def deploy_dags(settings: Settings | None = None) -> dict:
    """{dag_id: DAG} for every configured environment (the settings file is the only thing read)."""
    settings = settings or load_settings()
    return {core.deploy_dag_id(env.name): deploy_dag(settings, env) for env in settings.environments}
