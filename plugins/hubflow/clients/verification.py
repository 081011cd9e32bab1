"""The verification as the lifecycle's Airflow task runs it: one hub, one environment, one revision range.

It works out what to check from git (the packages the hub's images added or changed in base..head, the hub's
always-check list, its notebook at head), logs each
check as it runs, and returns the result as a JSON-serialisable dict for XCom and the ledger. It does not raise
when a check fails: the decide step reads `ok`. The token is given (hubflow.airflow.hooks.smoke_token reads it).
"""
from __future__ import annotations

import logging

from hubflow.clients.git import Repo
from hubflow.clients.notebook import Notebook, parse_notebook
from hubflow.clients.smoke import Check, SmokeError, format_check, verify
from hubflow.core.fleet import Fleet, Smoke
from hubflow.core.packages import hub_packages
from hubflow.core.plan import read_fleet
from hubflow.core.settings import Settings

log = logging.getLogger(__name__)


def read_notebook(repo: Repo, rev: str, path: str) -> Notebook:
    text = repo.read_blobs([f"{rev}:{path}"])[f"{rev}:{path}"]
    if text is None:
        raise SmokeError(f"smoke notebook {path} does not exist at {rev[:12]}")
    return parse_notebook(text.decode(errors="replace"), path)


def verify_hub(settings: Settings, environment: str, hub: str, repo: Repo, base: str | None, head: str,
               token: str, fleet: Fleet | None = None) -> dict:
    """Verify `hub` in `environment` after deploying `head` over `base` (nightly: base == head, the always-check list).

    `fleet` is the fleet at head when the caller has it (plan.fleet); otherwise it is read from git. The checks get
    min(hub smoke.timeout_seconds, settings timeouts.smoke_seconds), each spawn timeouts.spawn_seconds within that
    (a timed-out spawn is retried once); cleanup may take smoke.CLEANUP_SECONDS more, so a task
    execution_timeout should leave that room. The result's `blame` says whether a failure is the revision's.
    """
    env = settings.environment(environment)
    if fleet is None:
        fleet = read_fleet(repo, head, settings.repository.fleet_file, [e.name for e in settings.environments])
        if fleet is None:
            raise SmokeError(f"fleet file {settings.repository.fleet_file} does not exist at {head[:12]}")
    packages = hub_packages(repo, fleet, hub, base, head)
    smoke = fleet.hub(hub).smoke or Smoke()
    notebook = read_notebook(repo, head, smoke.notebook) if smoke.notebook else None
    url = env.url_for(hub)
    timeout = min(smoke.timeout_seconds, settings.timeouts.smoke_seconds)  # the hub's limit, capped by the operator's
    spawn_timeout = settings.timeouts.spawn_seconds
    log.info("verifying hub %s in %s at %s (%s), limit %ss (spawn %ss); packages: %s", hub, environment, head[:12],
             url, timeout, spawn_timeout, ", ".join(map(str, packages)) or "none")

    def report(check: Check) -> None:
        if check.status == "running":
            log.info("%s ...", check.name)
        else:
            (log.warning if check.status == "failed" else log.info)("%s", format_check(check))

    result = verify(url, token, packages, notebook, timeout, report, spawn_timeout=spawn_timeout)
    log.info("hub %s in %s: %s in %.1fs%s", hub, environment, "verified" if result.ok else "FAILED", result.seconds,
             f" ({result.blame}'s fault)" if result.blame else "")
    return dict(result.to_dict(), hub=hub, environment=environment, revision=head,
                packages=[str(p) for p in packages], notebook=smoke.notebook)
