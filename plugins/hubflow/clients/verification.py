"""The verification as the lifecycle's Airflow task runs it: one hub, one environment, one revision range.

It works out what to check from git (the packages the hub's images added or changed in base..head, the hub's
always-check list, its notebook at head), logs each
check as it runs, and returns the result as a JSON-serialisable dict for XCom and the ledger. It does not raise
when a check fails: the decide step reads `ok`. The token is given (hubflow.airflow.hooks.smoke_token reads it).

One verification per hub and environment at a time, across the deploy and nightly DAGs and every worker: they
share the hub's two smoke users (the smoke token may touch those two and nobody else). Given the ledger, the
verification first takes the hub's lease there (`one_at_a_time`); while another verification holds it, this one
waits, and the wait is not part of the verification's time: a deploy that meets the nightly is never timed out, nor
blamed, for it. A lease lasts as long as a verification can (smoke.hold_seconds), so one whose worker died is
taken over when it expires. A wait that outlasts two leases fails the verification as the platform's fault.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from typing import TYPE_CHECKING, Callable, Iterator

from hubflow.clients.git import Repo
from hubflow.clients.notebook import Notebook, parse_notebook
from hubflow.clients.smoke import Check, SmokeError, format_check, hold_seconds, verify, wait_seconds
from hubflow.core.fleet import Fleet, Smoke
from hubflow.core.packages import hub_packages
from hubflow.core.plan import read_fleet
from hubflow.core.settings import Settings

if TYPE_CHECKING:
    from hubflow.clients.ledger import Ledger

log = logging.getLogger(__name__)
POLL_SECONDS = 5  # how often a waiting verification asks whether the hub is free


class HubBusy(SmokeError):
    """Another verification of the hub held it for longer than a verification can wait (the platform's fault)."""


@contextlib.contextmanager
def one_at_a_time(ledger: Ledger, env: str, hub: str, holder: str, hold: float, wait: float,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[dict | None]:
    """Hold the lease on verifying `hub` in `env` (for `hold` seconds) while the block runs, after waiting up to
    `wait` seconds for the verification that has it. Yields what was waited for ({seconds, for}) or None; raises
    HubBusy when the wait runs out. The lease goes when the block ends (if the ledger cannot be told, it expires)."""
    token = uuid.uuid4().hex
    start, told = clock(), None
    while True:
        other = ledger.take_verification(env, hub, token, holder, hold)
        if other is None:
            break
        waited = clock() - start
        if waited >= wait:
            raise HubBusy(f"another verification of hub {hub} in {env} ({other['holder']}) kept it busy for "
                          f"{waited:.0f}s, longer than a verification waits ({wait:.0f}s): one verification per "
                          f"hub at a time; not the revision's fault")
        if told != other["holder"]:
            told = other["holder"]
            until = other["expires_at"].astimezone(dt.timezone.utc).isoformat(timespec="seconds")
            log.info("hub %s in %s is being verified by %s (its lease ends by %s): waiting; the wait is not part of "
                     "this verification's time", hub, env, told, until)
        sleep(min(POLL_SECONDS, max(0.0, wait - waited)))
    waited = round(clock() - start, 1)
    try:
        yield {"seconds": waited, "for": told} if told else None
    finally:
        try:
            ledger.release_verification(env, hub, token)
        except Exception as exc:  # noqa: BLE001 - a lease that cannot be let go expires on its own
            log.warning("could not release the verification lease of hub %s in %s (%s): it expires by itself",
                        hub, env, exc)


def read_notebook(repo: Repo, rev: str, path: str) -> Notebook:
    text = repo.read_blobs([f"{rev}:{path}"])[f"{rev}:{path}"]
    if text is None:
        raise SmokeError(f"smoke notebook {path} does not exist at {rev[:12]}")
    return parse_notebook(text.decode(errors="replace"), path)


def verify_hub(settings: Settings, environment: str, hub: str, repo: Repo, base: str | None, head: str,
               token: str, fleet: Fleet | None = None, ledger: Ledger | None = None,
               holder: str = "a hubflow verification") -> dict:
    """Verify `hub` in `environment` after deploying `head` over `base` (nightly: base == head, the always-check list).

    `fleet` is the fleet at head when the caller has it (plan.fleet); otherwise it is read from git. The whole
    verification gets settings timeouts.smoke_seconds; each spawn timeouts.spawn_seconds of its own (a spawn still
    pending then is retried once); the other checks min(hub smoke.timeout_seconds, timeouts.smoke_seconds), not
    counting the spawns; cleanup may take smoke.CLEANUP_SECONDS more. With `ledger`, it first waits its turn
    (`one_at_a_time`, as `holder`), outside those times: a task's execution_timeout should leave room for
    smoke.task_seconds. The result's `blame` says whether a failure is the revision's; `waited` what it waited for.
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
    limit = settings.timeouts.smoke_seconds  # the operator's, for the whole verification
    checks = min(smoke.timeout_seconds, limit)  # the hub's, for its checks besides the spawns
    spawn_timeout = settings.timeouts.spawn_seconds
    log.info("verifying hub %s in %s at %s (%s), limit %ss (checks %ss, each spawn %ss); packages: %s", hub,
             environment, head[:12], url, limit, checks, spawn_timeout, ", ".join(map(str, packages)) or "none")

    def report(check: Check) -> None:
        if check.status == "running":
            log.info("%s ...", check.name)
        else:
            (log.warning if check.status == "failed" else log.info)("%s", format_check(check))

    with (one_at_a_time(ledger, environment, hub, holder, hold_seconds(limit), wait_seconds(limit))
          if ledger is not None else contextlib.nullcontext()) as waited:
        if waited:
            log.info("hub %s in %s is free after %.0fs waiting for %s", hub, environment, waited["seconds"],
                     waited["for"])
        result = verify(url, token, packages, notebook, limit, report, spawn_timeout=spawn_timeout,
                        checks_timeout=checks)
    log.info("hub %s in %s: %s in %.1fs%s", hub, environment, "verified" if result.ok else "FAILED", result.seconds,
             f" ({result.blame}'s fault)" if result.blame else "")
    return dict(result.to_dict(), hub=hub, environment=environment, revision=head,
                packages=[str(p) for p in packages], notebook=smoke.notebook, waited=waited)
