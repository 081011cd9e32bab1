"""The nightly verification DAG (`hubflow_nightly_verify`) and its task bodies: every hub of every environment,
smoke-tested and compared with what its branch head says, one report per environment (log table, ledger, Slack,
one GitHub issue kept up to date). The decisions are hubflow.core.nightly's; this module gathers and reports.

Never overlapping a deploy: each environment first waits (a sensor in reschedule mode: no worker slot held) while
Airflow says a deploy run of that environment (`hubflow_deploy_<env>`) is queued or running, however long its waves
take; a ledger attempt left `running` by a run Airflow says has ended is abandoned: not waited for, and reported.
Deploys never wait for the nightly, so the report checks again at the end, and results of checks that a deploy ran
during are recorded as discarded (the ledger and Slack say so, the GitHub issue is left as it was) instead of
raising a false alarm. Tasks ask Airflow through the Task SDK (the task instance's `get_dr_count` and
`get_dagrun_state`), never its database; when Airflow cannot be asked, the ledger's age decides as before.
"""
from __future__ import annotations

import datetime as dt
import logging
from datetime import timedelta
from typing import Any

import pendulum
import yaml
from airflow.sdk import CronTriggerTimetable, Param, PokeReturnValue, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from hubflow.airflow import hooks, outbox
from hubflow.airflow.results import RESULT_KEY
from hubflow.airflow.runs import end_run, mirror, on_failure, run_url, unknown_params, verification
from hubflow.core import nightly
from hubflow.core.deploy import deploy_dag_id
from hubflow.core.outcomes import Ended, Outcome
from hubflow.core.settings import Environment, Settings, load_settings

log = logging.getLogger("hubflow")
DAG_ID = "hubflow_nightly_verify"
POKE_SECONDS = 60

DOC = """
### Nightly verification
Every hub of every environment (`{envs}`), at `{cron}` ({tz}) or by hand (optionally some environments, some
hubs, without the smoke tests):

1. **wait_for_deploys**: while Airflow says a deploy run of the environment is queued or running, wait
   (rescheduled, no worker slot held); a ledger attempt left `running` by a run that ended is reported as abandoned.
2. **inventory**: the fleet at the branch head. 3. **verify** (one per hub): the smoke test, retried once.
4. **inspect**: helm's release records against the branch (chart, image tags, values digest, revision), releases
   stuck in pending-* or left failed, every image in the registry with the verified digest, the promotion lag.
5. **report**: a table in the log, the ledger, one GitHub issue per environment (opened, updated, closed when
   green), Slack. A deploy that started during the checks discards them.
"""


# ---------------------------------------------------------------- task bodies


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)  # SQLite gives naive UTC


def _attempts(settings: Settings, env: Environment, limit: int = 50) -> list[dict]:
    return [{"run_id": a.run_id, "revision": a.revision, "outcome": a.outcome, "started_at": _aware(a.started_at),
             "finished_at": _aware(a.finished_at) if a.finished_at else None}
            for a in hooks.ledger(settings).attempts(env.name, limit)]


def _deploy_runs(env: Environment, attempts: list[dict], context: dict) -> nightly.DeployRuns | None:
    """What Airflow says about the deploy runs of `env`: how many are queued or running, and the state of the run
    of each ledger attempt still `running` (None: Airflow has no such run). None when Airflow cannot be asked."""
    ti, dag_id = context["ti"], deploy_dag_id(env.name)
    try:
        live = ti.get_dr_count(dag_id=dag_id, states=list(nightly.LIVE))
        states: dict[str, str | None] = {}
        for a in attempts:
            rid = a["run_id"]
            if a["outcome"] != "running" or not rid or rid in states:
                continue
            known = ti.get_dr_count(dag_id=dag_id, run_ids=[rid])  # counted first: a run Airflow lacks is a 404
            state = ti.get_dagrun_state(dag_id=dag_id, run_id=rid) if known else None
            states[rid] = None if state is None else str(getattr(state, "value", state))
    except Exception as exc:  # noqa: BLE001 - the API server's answer failed: fall back on the ledger, and say so
        log.warning("Airflow could not say whether a deploy of %s runs (%s): the ledger's age decides", env.name, exc)
        return None
    return nightly.DeployRuns(live, states)


def start(settings: Settings, context: dict) -> dict:
    """The run's choices, checked before anything runs: which environments and hubs, smoke or not."""
    from hubflow.clients.ledger import LedgerError

    unknown = unknown_params(context)
    if unknown:
        end_run(context, Ended(Outcome.REFUSED, unknown))
    params = context["params"]
    names = [e.name for e in settings.environments]
    wanted = params.get("environments") or names
    bad = [e for e in wanted if e not in names]
    if bad:
        end_run(context, Ended(Outcome.REFUSED, f"unknown environment(s) {', '.join(map(repr, bad))}; "
                                                f"configured: {names}"))
    choice = {"environments": wanted, "hubs": params.get("hubs") or None, "smoke": params.get("smoke") is not False}
    try:
        outbox.catch_up(settings)  # what the ledger missed while it was down, before the report reads it
    except LedgerError as exc:
        log.warning("the ledger cannot be reached (%s): the checks run, the report says what it could not read", exc)
    log.info("nightly verification of %s; hubs: %s; smoke tests: %s", ", ".join(wanted),
             ", ".join(choice["hubs"] or ["all"]), "yes" if choice["smoke"] else "no")
    return choice


def wait_for_deploys(settings: Settings, env: Environment, choice: dict, context: dict) -> PokeReturnValue:
    """Done when Airflow has no deploy run of the environment queued or running (see core.nightly.deploy_running);
    an attempt the ledger still has `running` whose run has ended is logged as abandoned and not waited for."""
    from hubflow.clients.ledger import LedgerError

    if env.name not in choice["environments"]:
        raise AirflowSkipException(f"{env.name} was not asked for")
    try:
        attempts = _attempts(settings, env, 20)
    except LedgerError as exc:  # Airflow's own record still says whether a deploy runs
        log.warning("the ledger cannot be reached (%s): Airflow alone says whether a deploy of %s runs", exc, env.name)
        attempts = []
    airflow = _deploy_runs(env, attempts, context)
    running = nightly.deploy_running(attempts, airflow, dt.datetime.now(dt.timezone.utc),
                                     nightly.deploy_window(settings.timeouts))
    if running:
        log.info("%s", nightly.waiting_line(env.name, running))
        return PokeReturnValue(is_done=False)
    for a in nightly.abandoned(attempts, airflow):
        log.warning("%s: %s", env.name, nightly.abandoned_finding(a).detail)
    return PokeReturnValue(is_done=True)


def inventory(settings: Settings, env: Environment, choice: dict) -> dict:
    """The branch head and the hubs of its fleet (read with git through the worker's mirror)."""
    from hubflow.core.plan import read_fleet

    started = dt.datetime.now(dt.timezone.utc)
    repo = mirror(settings)
    (head,) = repo.resolve(env.branch)
    fleet = read_fleet(repo, head, settings.repository.fleet_file, [e.name for e in settings.environments])
    if fleet is None:
        raise AirflowFailException(f"{settings.repository.fleet_file} does not exist at {env.branch} {head[:12]}")
    hubs = [h.name for h in fleet.hubs]
    if choice["hubs"]:
        missing = [h for h in choice["hubs"] if h not in hubs]
        if missing:
            log.warning("hub(s) %s are not in the fleet of %s at %s", ", ".join(missing), env.branch, head[:12])
        hubs = [h for h in hubs if h in choice["hubs"]]
    log.info("%s at %s: %d hub(s): %s", env.branch, head[:12], len(hubs), ", ".join(hubs))
    return {"head": head, "started_at": started.isoformat(), "hubs": hubs,
            "smoke_hubs": hubs if choice["smoke"] else [], "partial": bool(choice["hubs"]) or not choice["smoke"]}


def verify(settings: Settings, env: Environment, head: str, hub: str, context: dict) -> dict:
    """Smoke-test one hub at the branch head (base == head: the always-check list); a failure is tried once more
    before it counts (a night is long: one blip is not a problem to wake people for)."""
    result: dict[str, Any] = {}
    for attempt in (1, 2):
        result = verification(settings, env, hub, head, head)
        result["tries"] = attempt
        if result["ok"]:
            break
        if attempt == 1:
            log.warning("hub %s failed verification in %s; trying once more", hub, env.name)
    context["ti"].xcom_push(key=RESULT_KEY, value=result)
    if not result["ok"]:
        _, (finding, *_) = nightly.smoke_findings(result)
        raise AirflowFailException(f"hub {hub} failed verification in {env.name}: {finding.detail}")
    return result


def inspect(settings: Settings, env: Environment, inv: dict) -> dict:
    """Releases, images and promotion lag of one environment, as JSON-safe findings (release values stay here)."""
    from hubflow.clients.git import GitError
    from hubflow.clients.helm_releases import HelmReleases, ReleaseError, deployed, hubflow_revision
    from hubflow.core.plan import PlanError, make_plan, read_fleet

    head, now = inv["head"], dt.datetime.now(dt.timezone.utc)
    envs = [e.name for e in settings.environments]
    repo = mirror(settings, head)
    fleet = read_fleet(repo, head, settings.repository.fleet_file, envs)
    tags = {i.name: i for i in make_plan(repo, None, head, settings.repository.fleet_file, envs).images}
    chart_file = f"{head}:{fleet.chart}/Chart.yaml"
    files = [f for h in inv["hubs"] for f in fleet.hub(h).values_files(env.name)]
    blobs = repo.read_blobs([chart_file] + [f"{head}:{f}" for f in files])
    chart_version = (yaml.safe_load(blobs[chart_file] or b"") or {}).get("version")
    plans: dict[str, Any] = {}

    def behind(revision: str, hub: str) -> str | None:
        """Why hubflow would redeploy `hub` from `revision` to the head (None: nothing for it changed)."""
        if revision == head:
            return None
        if revision not in plans:
            try:
                known = repo.resolve(revision)[0]
                plans[revision] = (make_plan(repo, known, head, settings.repository.fleet_file, envs)
                                   if repo.is_ancestor(known, head) else None)
            except (PlanError, GitError):  # a revision the repository does not know is not on the branch
                plans[revision] = None
        plan = plans[revision]
        return "not on the branch" if plan is None else next((h.reason for h in plan.hubs if h.name == hub), None)

    rows, running_images = {}, {}
    helm = HelmReleases(hooks.kubernetes(env.kubernetes_conn_id))
    for name in inv["hubs"]:
        hub = fleet.hub(name)
        images = {ref.values_path: (tags[ref.name].repository, tags[ref.name].tag) for ref in hub.images or []}
        parsed = [yaml.safe_load(blobs[f"{head}:{f}"] or b"") for f in hub.values_files(env.name)]
        values, hidden = nightly.expected_values(parsed, images)
        expected = {"chart_version": chart_version, "values_digest": nightly.values_digest(values),
                    "images": {w: {"name": r, "tag": t} for w, (r, t) in images.items()}}
        try:
            records = helm.records(env.release_for(name), env.namespace_for(name))
        except ReleaseError as exc:
            rows[name] = {"release": "unreadable", "revision": None,
                          "findings": [nightly.Finding("platform", str(exc)).__dict__]}
            continue
        latest, current = (records[-1] if records else None), deployed(records)
        log.info("%s: newest helm record %s", name, latest.summary() if latest else "none")  # no values: secrets
        found = nightly.release_findings(latest and {"status": latest.status, "version": latest.version,
                                                     "updated": latest.updated,
                                                     "description": latest.description},
                                         now, settings.timeouts.helm_seconds)
        running, revision = None, None
        if current is not None:
            by = hubflow_revision(records, current)
            revision = by[1] if by else None
            running = {"chart_version": current.chart_version, "description": current.description,
                       "images": nightly.running_images(hub, current.config),
                       "values_digest": nightly.values_digest(current.config, hidden),
                       "env": by[0] if by else None, "revision": revision}
            found += nightly.drift_findings(env.name, env.branch, head, expected, running,
                                            behind(revision, name) if revision else None)
        elif latest is not None:
            found.append(nightly.Finding("release", "no deployed revision: nothing of this hub runs"))
        for ref in hub.images or []:
            have = (running or expected)["images"].get(ref.values_path) or {}
            key = (have.get("name") or images[ref.values_path][0], have.get("tag") or images[ref.values_path][1])
            running_images.setdefault(key, ref.name)
        rows[name] = {"release": f"{latest.status} v{latest.version}" if latest else "not installed",
                      "revision": revision, "findings": [f.__dict__ for f in found]}
    env_findings = _image_findings(settings, env, running_images)
    env_findings += _lag(settings, env, repo, head, now)
    for f in env_findings:
        log.info("%s: %s: %s", env.name, f.check, f.detail)
    return {"rows": rows, "findings": [f.__dict__ for f in env_findings]}


def _image_findings(settings: Settings, env: Environment, running: dict[tuple[str, str], str]) -> list[nightly.Finding]:
    """Every image the environment runs, in the registry with the digest its last successful deploys recorded."""
    from hubflow.clients.registry import RegistryError

    book = hooks.ledger(settings)
    digests = nightly.verified_digests([a.record for a in book.attempts(env.name, 200) if a.outcome == "success"])
    try:
        registry = hooks.registry(settings)
        images = [{"ref": f"{repository}:{tag}", "digest": registry.digest(repository, tag),
                   "verified": nightly.verified_digest(digests, name, tag)}
                  for (repository, tag), name in running.items()]
    except RegistryError as exc:
        return [nightly.Finding("platform", f"the registry cannot be read: {exc}")]
    for image in images:
        log.info("image %s: %s (verified %s)", image["ref"], image["digest"] or "MISSING", image["verified"] or "-")
    return nightly.image_findings(images)


def _lag(settings: Settings, env: Environment, repo, head: str, now: dt.datetime) -> list[nightly.Finding]:
    """Revisions verified in the previous environment that this one lacks (newest first: on one branch, once one is
    in, every older one is too)."""
    before = settings.previous_environment(env.name)
    if before is None:
        return []
    source = before.name
    verified = []
    for a in hooks.ledger(settings).attempts(source, 200):
        if a.outcome != "success" or a.finished_at is None:
            continue
        if repo.is_ancestor(a.revision, head):
            break
        verified.append((a.revision, _aware(a.finished_at)))
    return nightly.promotion_lag(source, env.name, verified, set(), now)


def _not_checked(settings: Settings, env: Environment, context: dict) -> str:
    """Why the environment's checks did not run: a deploy still live after the wait, or the branch or its fleet."""
    from hubflow.clients.ledger import LedgerError

    try:
        attempts = _attempts(settings, env, 20)
    except LedgerError:
        attempts = []
    running = nightly.deploy_running(attempts, _deploy_runs(env, attempts, context), dt.datetime.now(dt.timezone.utc),
                                     nightly.deploy_window(settings.timeouts))
    return nightly.not_checked(env.name, running, nightly.wait_seconds(settings.timeouts))


def report(settings: Settings, env: Environment, choice: dict | None, inv: dict | None, state: dict | None,
           context: dict) -> dict:
    """One summary: the log table, the ledger, the GitHub issue (unless discarded), Slack; fails when not ok, and
    when the environment could not be checked at all (a run that checked nothing must not look green)."""
    from hubflow.clients.github import GitHubError

    if choice is None:
        raise AirflowFailException(f"{env.name} was not checked: the run's params were refused (see start)")
    if env.name not in choice["environments"]:
        raise AirflowSkipException(f"{env.name} was not asked for")
    if not inv:
        raise AirflowFailException(_not_checked(settings, env, context))
    ti, url = context["ti"], run_url(context)
    results = {hub: ti.xcom_pull(task_ids=f"{env.name}.verify", key=RESULT_KEY, map_indexes=i)
               for i, hub in enumerate(inv["smoke_hubs"])}
    rows = []
    for hub in inv["hubs"]:
        result = results.get(hub)
        if hub in results and result is None:
            result = {"ok": False, "checks": [], "error": "the verification task left no result (see its log)"}
        smoke, found = nightly.smoke_findings(result)
        inspected = (state or {}).get("rows", {}).get(hub, {})
        found += [nightly.Finding(**f) for f in inspected.get("findings", [])]
        rows.append(nightly.HubRow(hub, smoke, inspected.get("release", "-"), inspected.get("revision"), found))
    env_findings = [nightly.Finding(**f) for f in (state or {}).get("findings", [])]
    if state is None:
        env_findings.append(nightly.Finding("platform", "releases, images and lag were not checked: see inspect"))
    since, attempts = dt.datetime.fromisoformat(inv["started_at"]), _attempts(settings, env, 20)
    airflow = _deploy_runs(env, attempts, context)
    env_findings += [nightly.abandoned_finding(a) for a in nightly.abandoned(attempts, airflow)]
    overlapped = nightly.overlapping(attempts, since, airflow, dt.datetime.now(dt.timezone.utc),
                                     nightly.deploy_window(settings.timeouts))
    if overlapped:
        overlapped = {"run_id": overlapped["run_id"], "revision": overlapped["revision"]}
    summary = nightly.summarize(env.name, inv["head"], rows, env_findings, dt.datetime.now(dt.timezone.utc),
                                overlapped, partial=inv["partial"])
    log.info("%s", nightly.format_table(summary))
    hooks.ledger(settings).add_report("nightly", env.name, context["dag_run"].run_id, summary["ok"], summary)
    issue, action, key = None, nightly.issue_action(summary), nightly.issue_key(env.name)
    try:
        if action == "close":
            issue = hooks.github(settings).close_issue(key, nightly.ISSUE_LABEL, nightly.closing_comment(summary, url))
        elif action == "ensure":
            issue = hooks.github(settings).ensure_issue(key, nightly.issue_title(env.name),
                                                        nightly.issue_body(summary, url),
                                                        [nightly.ISSUE_LABEL, "hubflow"])
        else:
            log.info("the GitHub issue of %s is left as it is (%s)", env.name,
                     "results discarded" if overlapped else "a partial run cannot say all is green")
        if issue:
            log.info("GitHub issue #%s %s: %s", issue["number"], issue["action"], issue["url"])
    except GitHubError as exc:
        log.warning("the GitHub issue of %s could not be kept up to date: %s", env.name, exc)
    hooks.notify(settings, nightly.slack_text(summary, url, (issue or {}).get("url")))
    if not summary["ok"] and not overlapped:
        raise AirflowFailException(f"nightly {env.name}: {summary['problems']} problem(s) (see the table above)")
    return {"ok": summary["ok"], "problems": summary["problems"], "issue": issue}


# ---------------------------------------------------------------- the DAG


def nightly_dag(settings: Settings | None = None):
    settings = settings or load_settings()
    wait = nightly.wait_seconds(settings.timeouts)
    from hubflow.clients.smoke import task_seconds

    # two tries, each may wait its turn behind a deploy's verification of the hub, then run and clean up
    verify_timeout = timedelta(seconds=task_seconds(settings.timeouts.smoke_seconds, tries=2) + 120)

    @dag(
        dag_id=DAG_ID,
        schedule=CronTriggerTimetable(settings.schedules.nightly, timezone=settings.schedules.timezone),
        start_date=pendulum.datetime(2026, 1, 1, tz=settings.schedules.timezone),
        catchup=False,
        max_active_runs=1,
        tags=["hubflow", "nightly"],
        default_args={"owner": "hubflow", "retries": 0, "on_failure_callback": on_failure},
        doc_md=DOC.format(envs="`, `".join(e.name for e in settings.environments), cron=settings.schedules.nightly,
                          tz=settings.schedules.timezone),
        params={
            "environments": Param(None, type=["null", "array"], items={"type": "string"}, title="Environments",
                                  description="only these environments (empty: all)"),
            "hubs": Param(None, type=["null", "array"], items={"type": "string"}, title="Hubs",
                          description="only these hubs (empty: every hub of the fleet)"),
            "smoke": Param(True, type=["null", "boolean"], title="Smoke tests",
                           description="off: releases, drift, images and lag only (no throwaway users)"),
        },
    )
    def nightly_verify():
        @task(task_id="start", doc_md="Check the run's params: environments, hubs, smoke tests.")
        def _start() -> dict:
            return start(settings, get_current_context())

        choice = _start()
        for env in settings.environments:
            @task_group(group_id=env.name)
            def environment(env: Environment = env):
                @task.sensor(task_id="wait_for_deploys", mode="reschedule", poke_interval=POKE_SECONDS,
                             timeout=wait + POKE_SECONDS,
                             doc_md="Wait while Airflow says a deploy run of this environment is queued or running.")
                def _wait(choice: dict) -> PokeReturnValue:
                    return wait_for_deploys(settings, env, choice, get_current_context())

                @task(task_id="inventory", doc_md="The branch head and the hubs of its fleet.")
                def _inventory(choice: dict) -> dict:
                    return inventory(settings, env, choice)

                @task(task_id="smoke_hubs", doc_md="The hubs to smoke-test (none when the run turned smoke off).")
                def _smoke_hubs(inv: dict) -> list[str]:
                    return inv["smoke_hubs"]

                @task(task_id="verify", execution_timeout=verify_timeout,
                      doc_md="Smoke-test one hub (retried once before it fails).")
                def _verify(inv: dict, hub: str) -> dict:
                    return verify(settings, env, inv["head"], hub, get_current_context())

                @task(task_id="inspect", doc_md="Helm's records against the branch; stuck releases; images; lag.")
                def _inspect(inv: dict) -> dict:
                    return inspect(settings, env, inv)

                @task(task_id="report", trigger_rule=TriggerRule.ALL_DONE,
                      doc_md="Log table, ledger, GitHub issue, Slack.")
                def _report(choice: dict | None, inv: dict | None, state: dict | None) -> dict:
                    return report(settings, env, choice, inv, state, get_current_context())

                inv = _inventory(choice)
                _wait(choice) >> inv
                checks = _verify.partial(inv=inv).expand(hub=_smoke_hubs(inv))
                state = _inspect(inv)
                [checks, state] >> _report(choice, inv, state)

            environment()

    return nightly_verify()
