"""The PR preview DAG (`hubflow_pr_preview`) and its task bodies: one comment per open PR against an environment
branch, kept up to date, saying what its merge would build and deploy. The text is hubflow.core.preview's.

What is planned: the PR's head merged onto the branch head, because that merge is what would deploy (a PR's head
alone may lack what the branch gained since; the image tags are the content of the merge). GitHub's
refs/pull/N/merge is not relied on (it is computed lazily and may be stale): the merge is made here, in the
worker's mirror, with `git merge-tree` and a commit of fixed identity and date, so the same PR on the same branch
always gives the same commit. A PR that conflicts is planned from its merge-base to its head, and says so.
The head is fetched by its sha when the mirror lacks it (a fork: GitHub serves it through refs/pull/N/head).
"""
from __future__ import annotations

import datetime as dt
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from hubflow.airflow import hooks
from hubflow.airflow.runs import end_run, mirror, unknown_params
from hubflow.core import deploy, preview
from hubflow.core.documents import ConfigError
from hubflow.core.freeze import frozen, next_window
from hubflow.core.outcomes import Ended, Outcome
from hubflow.core.packages import PackagesError, hub_packages
from hubflow.core.plan import PlanError
from hubflow.core.settings import Environment, Settings, load_settings

if TYPE_CHECKING:
    from hubflow.clients.github import OpenPull

log = logging.getLogger("hubflow")
DAG_ID = "hubflow_pr_preview"
POLL = "*/10 * * * *"  # the fallback for webhook deliveries that never came
DOC = """
### PR preview
One comment per open PR against an environment branch (`{branches}`), kept up to date: the images rebuilt (with
their tags) or reused, the hubs upgraded and why, the hubs removed, the packages each hub's smoke test imports,
whether the environment is frozen and whether the PR carries a held revision. Planned between the branch head and
the PR's head merged onto it.

- **by the webhook** (`{{"pull": N}}`) on every push to a PR: that PR, always written again (GitHub sees an
  edit only when the text changed);
- **every 10 minutes**, as a fallback: every open PR whose head or branch head differs from what its comment
  describes (the comment carries both shas in hidden data).

A broken fleet, a conflict or a head that cannot be fetched is said in the comment; each PR is its own task.
"""


# ---------------------------------------------------------------- task bodies


def select(settings: Settings, context: dict) -> list[dict]:
    """The PRs to preview: the one asked for, or every open PR whose comment describes another head or base."""
    from hubflow.clients.github import GitHubError

    unknown = unknown_params({**context, "params": context["dag"].params})  # declared: conf is merged in
    if unknown:
        end_run(context, Ended(Outcome.REFUSED, unknown))
    gh = hooks.github(settings)
    envs = {e.branch: e for e in settings.environments}
    number = context["params"].get("pull")
    if number is not None:
        try:
            pull = gh.open_pull(number)
        except GitHubError as exc:
            raise AirflowFailException(f"cannot read PR #{number}: {exc}") from None
        if pull.state != "open" or pull.base not in envs:
            log.info("PR #%d is %s, against %r: nothing to preview (environment branches: %s)", number,
                     pull.state, pull.base, ", ".join(envs))
            return []
        return [_job(settings, pull, envs[pull.base], gh.branch_head(envs[pull.base].name))]
    jobs = []
    for env in settings.environments:
        base = gh.branch_head(env.name)
        for pull in gh.open_pulls(env.branch):
            try:
                seen = preview.described(gh.comment_body(pull.number, preview.KEY))
            except GitHubError as exc:  # its own task tries again and says what went wrong
                log.warning("cannot read the preview comment of #%d: %s", pull.number, exc)
                seen = None
            if seen == (pull.head_sha, base):
                log.info("#%d: unchanged (head %s on %s %s)", pull.number, pull.head_sha[:12], env.branch, base[:12])
                continue
            jobs.append(_job(settings, pull, env, base))
    log.info("%d PR(s) to preview: %s", len(jobs), ", ".join(f"#{j['number']}" for j in jobs) or "none")
    return jobs


def _job(settings: Settings, pull: OpenPull, env: Environment, base: str) -> dict:
    fork = None if pull.head_repo == settings.repository.github else (pull.head_repo or "(a deleted fork)")
    return {"number": pull.number, "env": env.name, "base": base, "head": pull.head_sha, "fork": fork}


def comment(settings: Settings, job: dict) -> dict:
    """Gather one PR's preview and write its comment (GitHub.comment edits only when the text changed)."""
    env = settings.environment(job["env"])
    p = preview.Preview(job["number"], env.name, env.branch, job["base"], job["head"], fork=job["fork"])
    gather(settings, env, p)
    url = hooks.github(settings).comment(p.number, preview.KEY, preview.render(p))
    log.info("#%d: %s -> %s", p.number, p.problem or f"{len((p.plan or {}).get('hubs', []))} hub(s) upgraded", url)
    return {"number": p.number, "url": url, "problem": p.problem}


def gather(settings: Settings, env: Environment, p: preview.Preview) -> None:
    """Fill `p`: freeze, holds, the plan and the packages. What stops the plan becomes `p.problem`."""
    from hubflow.clients.git import GitError
    from hubflow.clients.mirror import fetch_commit

    now = dt.datetime.now(dt.timezone.utc)
    p.frozen = frozen(env, hooks.freeze_switch(env.name), now)
    window = next_window(env, now)
    if window and not p.frozen:
        p.next_window = {"start": window[0].isoformat(), "end": window[1].isoformat(), "reason": window[2]}
    repo = mirror(settings, have=p.base)
    try:
        fetch_commit(settings, hooks.github_token(settings.repository.github_conn_id), p.head,
                     f"refs/hubflow/pulls/{p.number}")
    except GitError as exc:
        p.holds_known = False
        p.problem = f"This PR's head {p.head[:12]} could not be fetched, so nothing was planned"
        p.details = [str(exc)]
        return
    book = hooks.ledger(settings)
    try:
        p.reverts = deploy.check_holds(repo, book, p.base, p.head)
    except deploy.Refused as exc:
        p.held = str(exc)
    merged, p.conflicts = repo.merge_preview(p.base, p.head)
    base, head = (p.base, merged) if p.conflicts is None else (merged, p.head)
    target = deploy.Target(env.name, head, base, "", reverts=p.reverts)
    try:
        plan = deploy.plan(settings, repo, target, book)
    except (ConfigError, PlanError) as exc:
        where = "the merge" if p.conflicts is None else "the head"
        p.problem = f"The fleet at {where} does not validate: the deploy would refuse it"
        problems = exc.problems if isinstance(exc, ConfigError) else [("", "", str(exc))]
        p.details = [": ".join(x for x in problem if x).replace(head[:12], where) for problem in problems]
        return
    p.plan = plan.to_dict()
    for hub in plan.hubs:
        try:
            p.packages[hub.name] = [str(pkg) for pkg in hub_packages(repo, plan.fleet, hub.name, base, head)]
        except PackagesError as exc:
            p.package_problems[hub.name] = str(exc).replace(head[:12], "the merge")


# ---------------------------------------------------------------- the DAG


def preview_dag(settings: Settings | None = None):
    settings = settings or load_settings()

    @dag(
        dag_id=DAG_ID,
        schedule=CronTriggerTimetable(POLL, timezone="UTC"),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,  # one writer: two runs never both create the comment of a PR
        tags=["hubflow", "preview"],
        default_args={"owner": "hubflow", "retries": 0},
        doc_md=DOC.format(branches="`, `".join(e.branch for e in settings.environments)),
        params={"pull": Param(None, type=["null", "integer"], title="Pull request",
                              description="the PR number (empty: every open PR whose preview is out of date)")},
    )
    def pr_preview():
        @task(doc_md="The PRs to preview: the one asked for, or every open PR whose comment is out of date.")
        def pulls() -> list[dict]:
            return select(settings, get_current_context())

        @task(retries=1, retry_delay=timedelta(seconds=30),
              doc_md="Plan one PR's merge and write its comment (safe to retry: the comment is found by its key).")
        def preview_pull(job: dict) -> dict:
            return comment(settings, job)

        preview_pull.expand(job=pulls())

    return pr_preview()
