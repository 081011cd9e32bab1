"""The promote DAG (`hubflow_promote`): move a verified revision from the first environment to the next one, by
hand from a form. The gates and the outcome are decided in hubflow.core.promotion; the task bodies here gather
what they need, perform the effects and leave a readable log. Building the DAG reads the settings only.
"""
from __future__ import annotations

import datetime as dt
import logging
from datetime import timedelta
from typing import NoReturn

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from hubflow.airflow import hooks, outbox
from hubflow.airflow.results import step
from hubflow.airflow.runs import end_run, ended_by, mirror, run_url, task_states, unknown_params, who
from hubflow.core import promotion
from hubflow.core.deploy import Refused
from hubflow.core.messages import outcome_message
from hubflow.core.outcomes import Ended, Outcome, PromotionOutcome
from hubflow.core.settings import Settings, load_settings

log = logging.getLogger("hubflow")
DAG_ID = "hubflow_promote"
CANDIDATE_KEY = "candidate"  # XCom of a check that refused at a gate: what it checked and the gates' results
ANSWER_KEY = "answer"  # XCom of the approval: chosen_options, responded_by_user (None: nobody answered in time)

DOC = """
### Promote {source} to {target}
By hand (and, with `promotion.mode: merge`, the same gates at the end of every green {source} run). **check**: the
form, then the gates (verified on {source}, not held, {target} not frozen, newer than what {target} runs, merging
it into {target} gives the verified tree, soak time {soak} min) — the first that fails refuses, before anything
changes.
**open**: the one promotion PR `{source} -> {target}` with the evidence (in merge mode: GitHub must say it is
mergeable). {approval}**merge** (merge mode): merges the PR at exactly the checked revision; {target}'s deploy then
runs from its branch watcher. **record**: the ledger (who, what, when, why, the gates), Slack, a PR comment and one
closing line, all saying the same thing.
"""


def refuse(context: dict, detail: str) -> NoReturn:
    """Stop the run here, nothing changed; `record` books the refusal."""
    end_run(context, Ended(Outcome.REFUSED, detail))


def mode(settings: Settings, context: dict) -> str:
    """The promotion mode of this run: the form's choice, else the settings' (an empty field submits null)."""
    return context["params"].get("mode") or settings.promotion.mode


def run_check(settings: Settings, context: dict) -> dict:
    """The form, the revision, the ledger entry, the gates. Refusals go to `record`, which books them."""
    from hubflow.clients.git import GitError

    params = context["params"]
    unknown = unknown_params(context)
    if unknown:
        refuse(context, unknown)
    try:
        promotion.check_params(mode(settings, context), params.get("reason"))
        source, target = promotion.environments(settings)
        outbox.catch_up(settings)  # a hold a failure path could not write is in force before the gates read
        book = hooks.ledger(settings)
        repo = mirror(settings)
        wanted = params.get("revision") or promotion.default_revision(book, source)
        (head,) = repo.resolve(settings.environment(source).branch)
        try:
            (revision,) = repo.resolve(wanted)
        except GitError:
            raise Refused(f"revision {wanted!r} is not a commit of the deployment repository") from None
        if not repo.is_ancestor(revision, head):
            raise Refused(f"revision {revision[:12]} is not on branch {settings.environment(source).branch!r}")
    except Refused as exc:
        refuse(context, str(exc))
    subject = repo.git("log", "-1", "--format=%s", revision).strip()
    log.info("revision %s %r%s", revision, subject, "" if params.get("revision") else
             f" (the newest revision verified on {source}: the form was left empty)")
    c = promotion.Candidate(source, target, revision, repo.tree_id(revision), subject)
    c.evidence = {"promotion run": run_url(context)}
    pid = book.start_promotion(source, target, revision, c.tree, mode(settings, context), params.get("reason"),
                               who(context), context["dag_run"].run_id)
    try:
        promotion.gates(settings, c, repo, book, hooks.freeze_switch(target), dt.datetime.now(dt.timezone.utc))
    except promotion.GateRefused as exc:
        for g in exc.gates:
            log.info("gate %s: %s", "passed" if g["ok"] else "REFUSED", g["detail"])
        context["ti"].xcom_push(key=CANDIDATE_KEY, value={"id": pid, **c.to_dict()})
        refuse(context, str(exc))
    for g in c.gates:
        log.info("gate passed: %s", g["detail"])
    verification = next((a for a in book.attempts(source, 200)
                         if a.revision == c.verified and a.outcome == "success"), None)
    if verification and verification.record.get("links", {}).get("run"):
        c.evidence = {f"verification on {source}": verification.record["links"]["run"], **c.evidence}
    return {"id": pid, **c.to_dict()}


def open_pull(settings: Settings, c: dict, context: dict) -> dict:
    """The one promotion PR, opened or updated with the evidence; in merge mode, the merge gate."""
    gh = hooks.github(settings)
    pull = gh.ensure_promotion(c["source"], c["revision"], c["evidence"])
    if pull is None:
        refuse(context, f"{c['target']} already has everything {c['source']} has: no promotion PR")
    pull = pull.to_dict()
    log.info("promotion PR #%d: %s", pull["number"], pull["url"])
    if mode(settings, context) == "merge":
        try:
            detail = promotion.mergeable(c["revision"], gh.branch_head(c["source"]), pull,
                                         gh.unmergeable(pull["number"]))
        except Refused as exc:
            refuse(context, str(exc))
        log.info("gate passed: %s", detail)
    return pull


def _comment(settings: Settings, number: int, key: str, body: str) -> None:
    """A PR comment that GitHub cannot take is logged: the ledger and Slack still say the same thing."""
    from hubflow.clients.github import GitHubError

    try:
        hooks.github(settings).comment(number, key, body)
    except GitHubError as exc:
        log.warning("could not comment on PR #%d: %s", number, exc)


class PromotionApproval(ApprovalOperator):
    """The approval of a merge. Its subject and body hold commit subjects and reasons people wrote, so they are
    never Jinja templates: they are built at run time from the check's XCom."""

    template_fields = ()

    def __init__(self, *, settings: Settings, **kwargs):
        p = settings.promotion
        super().__init__(subject="Promotion", body=None, defaults=["Reject"],
                         assigned_users=[{"id": user, "name": user} for user in p.approvers] or None,
                         response_timeout=timedelta(minutes=p.approval_timeout_minutes), **kwargs)
        self.settings = settings

    def execute(self, context):
        if mode(self.settings, context) != "merge":
            raise AirflowSkipException("pull_request mode: the PR waits for a person on GitHub, nothing to approve")
        ti = context["ti"]
        c, pull = ti.xcom_pull(task_ids="check"), ti.xcom_pull(task_ids="open")
        self.subject, self.body = promotion.approval_text(c, "merge", context["params"].get("reason"),
                                                          who(context), pull, run_url(context))
        link = f"{run_url(context)}/tasks/{self.task_id}/required_actions"
        _comment(self.settings, pull["number"], f"hubflow-approval-{c['id']}",
                 f"hubflow: merging `{c['revision'][:12]}` into {c['target']} waits for an approval in Airflow: "
                 f"[Required Actions]({link})")
        hooks.notify(self.settings, outcome_message(c["target"], c["revision"], "awaiting approval",
                                                    self.subject, {"approve or reject": link, "PR": pull["url"]}))
        log.info("waiting for an approval: %s", link)
        return super().execute(context)

    def execute_complete(self, context, event):
        """Keep the answer for `record` first: on Reject the operator skips `merge` by raising, so it returns
        nothing."""
        context["ti"].xcom_push(key=ANSWER_KEY, value={
            "chosen_options": event.get("chosen_options"), "responded_by_user": event.get("responded_by_user"),
            "responded_at": str(event.get("responded_at"))})
        return super().execute_complete(context, event)


def run_merge(settings: Settings, c: dict, pull: dict, context: dict) -> str:
    """Merge at exactly the checked revision, after the gates said yes once more."""
    from hubflow.clients.github import NotMergeable

    if mode(settings, context) != "merge":
        raise AirflowSkipException("pull_request mode: a person merges the PR on GitHub")
    again = promotion.Candidate(c["source"], c["target"], c["revision"], c["tree"], c["subject"])
    try:  # an approval may take hours: a hold, a freeze or a commit on the target that came meanwhile still stops
        # the merge (the mirror is fetched again: the "same tree" gate merges onto the target's head as it is now)
        promotion.gates(settings, again, mirror(settings), hooks.ledger(settings),
                        hooks.freeze_switch(c["target"]), dt.datetime.now(dt.timezone.utc))
    except promotion.GateRefused as exc:
        refuse(context, f"{exc} (checked again just before merging)")
    try:
        sha = hooks.github(settings).merge(pull["number"], expected_head=c["revision"])
    except NotMergeable as exc:
        refuse(context, f"mergeable: {exc}")
    log.info("merged PR #%d as %s", pull["number"], sha)
    return sha


def automatic(settings: Settings, revision: str, pull: dict, context: dict) -> tuple[PromotionOutcome, str]:
    """`promotion.mode: merge`, at the end of the run that verified `revision` on the first environment: the same
    checked promotion as this DAG's (the gates, GitHub's merge gate, the merge at exactly the verified revision)
    and the same record (the ledger's promotions, a PR comment, Slack, a log line). A gate that refuses leaves the
    PR open and says why; with `promotion.approval: required` nobody is asked here: the line says to start this DAG.
    Safe to retry: the run's promotion is found again in the ledger, the merge is a no-op once merged."""
    from hubflow.clients.github import GitHubError, NotMergeable

    source, target = promotion.environments(settings)
    gh, book, repo, url = hooks.github(settings), hooks.ledger(settings), mirror(settings), run_url(context)
    c = promotion.Candidate(source, target, revision, repo.tree_id(revision),
                            repo.git("log", "-1", "--format=%s", revision).strip(),
                            evidence={f"verification on {source}": url})
    pid = book.start_promotion(source, target, revision, c.tree, "merge",
                               f"promotion.mode: merge, after the run that verified it on {source}",
                               promotion.AUTOMATIC, context["dag_run"].run_id)
    ended, merged, failed = None, None, None
    approval = settings.promotion.approval == "required"
    try:
        promotion.gates(settings, c, repo, book, hooks.freeze_switch(target), dt.datetime.now(dt.timezone.utc))
        if not approval:
            detail = promotion.mergeable(revision, gh.branch_head(source), pull, gh.unmergeable(pull["number"]))
            c.gates.append({"gate": "mergeable", "ok": True, "detail": detail})
            merged = gh.merge(pull["number"], expected_head=revision)
    except promotion.GateRefused as exc:
        ended = Ended(Outcome.REFUSED, str(exc))
    except Refused as exc:  # the merge gate
        c.gates.append({"gate": "mergeable", "ok": False, "detail": str(exc)})
        ended = Ended(Outcome.REFUSED, str(exc))
    except NotMergeable as exc:
        c.gates.append({"gate": "mergeable", "ok": False, "detail": str(exc)})
        ended = Ended(Outcome.REFUSED, f"mergeable: {exc}")
    except GitHubError as exc:  # booked, then raised: the task's retry tries again
        failed = str(exc)
    outcome, line = promotion.automatic(c.to_dict(), ended, pull, merged, approval, failed)
    links = {"run": url, "PR": pull["url"]}
    for g in c.gates:
        log.info("gate %s: %s", "passed" if g["ok"] else "REFUSED", g["detail"])
    book.finish_promotion(pid, outcome.value, line, gates=c.gates, pull=pull, merged=merged, links=links)
    _comment(settings, pull["number"], f"hubflow-promotion-{pid}",
             f"**hubflow: {outcome}**\n\n{line}\n\n[run]({url})")
    hooks.notify(settings, outcome_message(target, revision, outcome, line, links))
    (log.info if outcome.ok else log.warning)("%s", line)
    if failed:
        raise GitHubError(line)
    return outcome, line


def run_record(settings: Settings, approval: bool, context: dict) -> str:
    """Book how the promotion ended (ledger, Slack, PR comment) and end the log with the same line."""
    ti = context["ti"]
    pull_ids = ["check", "open", "merge"]
    ended = ended_by(context, pull_ids)
    c, pull, merged = (ti.xcom_pull(task_ids=t) for t in pull_ids)
    c = c or ti.xcom_pull(task_ids="check", key=CANDIDATE_KEY)
    answer = ti.xcom_pull(task_ids="approve", key=ANSWER_KEY) if approval else None
    steps = {name: step(state) for name, state in task_states(context, pull_ids + (["approve"] if approval else []))
             .items()}  # the promotion's steps are its tasks
    outcome, line = promotion.final(c, mode(settings, context), ended, pull, answer, merged, steps,
                                    settings.promotion.approval_timeout_minutes)
    links = {"run": run_url(context), **({"PR": pull["url"]} if pull else {})}
    if c:
        by = (answer or {}).get("responded_by_user")
        hooks.ledger(settings).finish_promotion(
            c["id"], outcome.value, line, gates=c["gates"], pull=pull, merged=merged, links=links,
            approval={"answer": answer["chosen_options"], "by": by, "at": answer["responded_at"]} if answer else None)
        if pull:
            _comment(settings, pull["number"], f"hubflow-promotion-{c['id']}",
                     f"**hubflow: {outcome}**\n\n{line}\n\n[run]({links['run']})")
    hooks.notify(settings, outcome_message((c or {}).get("target", "promotion"), (c or {}).get("revision", "?"),
                                           outcome, line, links))
    if not outcome.ok:
        log.warning("%s", line)
        raise AirflowFailException(line)  # the run shows failed, and this line ends its log
    log.info("%s", line)
    return line


def promote_dag(settings: Settings):
    source = settings.environments[0].name
    target = getattr(settings.next_environment(source), "name", "(none)")  # check refuses without one
    approval = settings.promotion.approval == "required"

    @dag(
        dag_id=DAG_ID,
        schedule=None,
        allowed_run_types=["manual"],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["hubflow", "promote"],
        default_args={"owner": "hubflow", "retries": 0},
        doc_md=DOC.format(source=source, target=target, soak=settings.promotion.soak_minutes,
                          approval="**approve** (merge mode): a person approves in Airflow; no answer counts as "
                                   "Reject. " if approval else ""),
        params={
            "revision": Param(None, type=["null", "string"], title="Revision",
                              description_md=f"A commit on `{settings.environments[0].branch}`. **Empty**: the "
                              f"newest revision verified on {source}, looked up when the run starts (the form "
                              "cannot show it: building the form reads nothing); the run's log names it with its "
                              "subject line."),
            "mode": Param(None, type=["null", "string"], enum=[None, "pull_request", "merge"], title="Mode",
                          values_display={"null": f"As configured ({settings.promotion.mode})",
                                          "pull_request": "Open or update the promotion PR (a person merges it)",
                                          "merge": f"Merge the promotion PR now ({target} deploys)"},
                          description_md=f"**Empty**: the settings' `promotion.mode` ({settings.promotion.mode})."),
            "reason": Param(None, type=["null", "string"], title="Reason",
                            description_md="Why this promotion, now. **Required to merge**; the ledger keeps it "
                                           "with who asked."),
        },
    )
    def promote():
        @task(doc_md="The form, the revision, the gates: the first that fails refuses before anything changes.")
        def check() -> dict:
            return run_check(settings, get_current_context())

        @task(task_id="open", retries=2, retry_delay=timedelta(seconds=5),
              doc_md="Open or update the one promotion PR with the evidence; merge mode: GitHub must say mergeable.")
        def open_pr(c: dict) -> dict:
            return open_pull(settings, c, get_current_context())

        @task(retries=2, retry_delay=timedelta(seconds=5),
              doc_md="Merge the PR at exactly the checked revision (merge mode only).")
        def merge(c: dict, pull: dict) -> str:
            return run_merge(settings, c, pull, get_current_context())

        @task(trigger_rule=TriggerRule.ALL_DONE, doc_md="Ledger, Slack, PR comment, and the closing line.")
        def record() -> str:
            return run_record(settings, approval, get_current_context())

        c = check()
        pull = open_pr(c)
        merged = merge(c, pull)
        if approval:
            pull >> PromotionApproval(task_id="approve", settings=settings,
                                      doc_md="A person approves the merge (Required Actions).") >> merged
        done = record()
        [c, pull, merged] >> done

    return promote()


def promote_dags(settings: Settings | None = None) -> dict:
    settings = settings or load_settings()
    return {DAG_ID: promote_dag(settings)}
