"""Sensing merges: an event trigger that polls one environment branch's head and emits when it moves.

Used in an AssetWatcher, one per environment (the branch is in the trigger's arguments, so two assets never share
one trigger). Polling is a conditional request (ETag / If-None-Match on the `sha` media type): while the branch is
idle GitHub answers 304, which costs no rate limit. Measured against the emulator: an idle hour of polling both
branches every 60 s makes 120 requests, all 304, and costs 0 rate-limited requests (a triggerer's very first
poll of a branch, with nothing stored, costs 1).

The last seen head and its ETag live in `self.asset_state_store` (kept across triggerer restarts), never in
`serialize()`. The trigger never fires on its first poll ever: it records that head as the baseline. Across a
restart it compares with the stored head, so a head that moved while the triggerer was down fires once, and an
unmoved head fires nothing.

Dedupe (the lifecycle's side): an event is a wake-up, not a command. Events can be held back or coalesced
(apache/airflow#56050), the same head can be emitted again if the triggerer dies between emitting and storing,
and a webhook may trigger the same revision too. So the deploy DAG's first task re-reads the branch head and diffs
from the last revision the ledger recorded as deployed: nothing new -> it skips cleanly.

Outages: the client is built inside the poll loop (hubflow.airflow.hooks.github_client), so a failed connection
lookup (secrets backend, network) is retried with the same bounded backoff as a failed poll, and a 401 makes the next
poll read the connection again (a rotated token). Each failure is one warning line that never holds the token.

Payload: {"env", "branch", "revision"}.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from hubflow.core.settings import Settings

if TYPE_CHECKING:
    from hubflow.clients.github import Head

STATE_KEY = "head"
MAX_RATE_WAIT = 3600.0


class BranchHeadTrigger(BaseEventTrigger):
    """Emit {env, branch, revision} each time the head of `branch` in `repository` moves."""

    def __init__(self, env: str, branch: str, repository: str, github_conn_id: str = "github_default",
                 poll_interval: float = 60.0):
        super().__init__()
        self.env, self.branch, self.repository = env, branch, repository
        self.github_conn_id, self.poll_interval = github_conn_id, float(poll_interval)

    @classmethod
    def for_environment(cls, settings: Settings, env: str) -> "BranchHeadTrigger":
        """The trigger for an AssetWatcher on `env`'s branch, as the settings configure it."""
        environment = settings.environment(env)
        return cls(env=environment.name, branch=environment.branch, repository=settings.repository.github,
                   github_conn_id=settings.repository.github_conn_id,
                   poll_interval=settings.schedules.poll_interval_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("hubflow.airflow.triggers.BranchHeadTrigger",
                {"env": self.env, "branch": self.branch, "repository": self.repository,
                 "github_conn_id": self.github_conn_id, "poll_interval": self.poll_interval})

    async def _load(self) -> Head | None:
        from hubflow.clients.github import Head

        if self.asset_state_store is None:
            self.log.warning("no asset state store (not in an AssetWatcher): the last head is kept in memory only")
            return None
        stored = await self.asset_state_store.aget(STATE_KEY)
        return Head(stored["revision"], stored.get("etag")) if stored else None

    async def _store(self, head: Head) -> None:
        if self.asset_state_store is not None:
            await self.asset_state_store.aset(STATE_KEY, {"revision": head.revision, "etag": head.etag})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # here, not at import: DAG files import this module to build watchers, and PyGithub is heavy
        from github import GithubException

        from hubflow.airflow import hooks
        from hubflow.clients.github import describe, poll_head, retry_wait

        known = await self._load()
        client = None
        failures = 0
        while True:
            try:
                if client is None:  # in the loop: a secrets backend or the network may be down for a while
                    client = await asyncio.to_thread(hooks.github_client, self.github_conn_id)
                head = await asyncio.to_thread(poll_head, client, self.repository, self.branch, known)
            except Exception as exc:  # noqa: BLE001 - a watcher outlives any outage; each failure is logged
                failures += 1
                what = (f"reading the head of {self.branch} in {self.repository}" if client else
                        f"reading GitHub connection {self.github_conn_id!r}")
                if isinstance(exc, GithubException) and exc.status == 401:
                    client = None  # the token was revoked or rotated: read the connection again
                wait = min(max(retry_wait(exc, failures, time.time()) or 0.0, self.poll_interval), MAX_RATE_WAIT)
                self.log.warning("%s: %s; trying again in %.0fs", what, (describe(exc).splitlines() or [""])[0],
                                 wait)
                await asyncio.sleep(wait)
                continue
            failures = 0
            if known is None:
                self.log.info("%s: first poll, head %s recorded as the baseline", self.branch, head.revision)
            elif head.revision != known.revision:
                self.log.info("%s moved %s -> %s", self.branch, known.revision[:12], head.revision[:12])
                yield TriggerEvent({"env": self.env, "branch": self.branch, "revision": head.revision})
            if head != known:
                await self._store(head)
                known = head
            await asyncio.sleep(self.poll_interval)
