"""The branch-head trigger's run(), driven directly with asyncio against the emulator (no triggerer needed).

The GitHub client comes from a real Airflow connection (AIRFLOW_CONN_GITHUB_EMULATOR) through the provider's hook.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from hubflow.airflow.triggers import BranchHeadTrigger

HEAD_PATH = "/repos/datahub/datahub/commits/*"
POLL = 0.02


class MemoryStore:
    """Stands in for the triggerer's asset_state_store (JSON values, kept across trigger instances)."""

    def __init__(self) -> None:
        self.data: dict = {}

    async def aget(self, key, default=None):
        return self.data.get(key, default)

    async def aset(self, key, value):
        self.data[key] = json.loads(json.dumps(value))


def make_trigger(conn_id, store, env="staging", branch="staging"):
    trigger = BranchHeadTrigger(env=env, branch=branch, repository="datahub/datahub", github_conn_id=conn_id,
                                poll_interval=POLL)
    trigger.asset_state_store = store
    return trigger


async def collect(trigger, events: list, until, timeout: float = 20):
    """Run the trigger, appending its payloads to `events`, until `until()` holds; then stop it like a triggerer."""
    async def consume():
        async for event in trigger.run():
            events.append(event.payload)

    task = asyncio.ensure_future(consume())
    try:
        async with asyncio.timeout(timeout):
            while not until():
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def polls(emulator):
    return emulator.requests_to("GET", HEAD_PATH)


def test_serialize_holds_the_branch_and_never_the_last_head(github_conn):
    classpath, kwargs = make_trigger(github_conn, None).serialize()
    assert classpath == "hubflow.airflow.triggers.BranchHeadTrigger"
    assert kwargs == {"env": "staging", "branch": "staging", "repository": "datahub/datahub",
                      "github_conn_id": github_conn, "poll_interval": POLL}
    assert BranchHeadTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_one_trigger_per_environment_from_the_settings(example_settings):
    args = [BranchHeadTrigger.for_environment(example_settings, env.name).serialize()[1]
            for env in example_settings.environments]
    assert [(a["env"], a["branch"], a["poll_interval"]) for a in args] == [("staging", "staging", 60.0),
                                                                           ("prod", "prod", 60.0)]
    assert {a["repository"] for a in args} == {"datahub/datahub"}


def test_first_poll_records_a_baseline_and_idle_polls_are_answered_304(github_conn, emulator):
    store, events = MemoryStore(), []
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: len(polls(emulator)) >= 6))
    assert events == []
    assert store.data["head"]["revision"] == emulator.head("staging")
    statuses = [r.status for r in polls(emulator)]
    assert statuses[0] == 200 and set(statuses[1:]) == {304}
    assert all(r.headers["if-none-match"] == f'"{emulator.head("staging")}"' for r in polls(emulator)[1:])


def test_a_moved_head_is_emitted_once(github_conn, emulator):
    store, events = MemoryStore(), []

    def merge_then_stop():
        if len(polls(emulator)) >= 3 and not merged:
            pr = emulator.merge_feature("Add pandas", {"images/primary/environment.yml": "pandas\n"})
            merged.append(pr["merge_commit_sha"])
        return len(polls(emulator)) >= 10

    merged: list[str] = []
    asyncio.run(collect(make_trigger(github_conn, store), events, merge_then_stop))
    assert events == [{"env": "staging", "branch": "staging", "revision": merged[0]}]
    assert store.data["head"]["revision"] == merged[0]


def test_a_restart_does_not_emit_again_but_catches_a_move_made_while_down(github_conn, emulator):
    store, events = MemoryStore(), []
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: len(polls(emulator)) >= 2))
    before = len(polls(emulator))
    # restart with the same stored state: nothing moved, nothing emitted, and the stored ETag keeps it free
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: len(polls(emulator)) >= before + 3))
    assert events == [] and {r.status for r in polls(emulator)[before:]} == {304}
    # the head moves while the triggerer is down: the next start emits it exactly once
    moved = emulator.merge_feature("While down", {"hub/values.yaml": "x: 1\n"})["merge_commit_sha"]
    before = len(polls(emulator))
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: len(polls(emulator)) >= before + 4))
    assert events == [{"env": "staging", "branch": "staging", "revision": moved}]


def test_the_trigger_survives_errors_and_rate_limits(github_conn, emulator):
    store, events = MemoryStore(), []
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: "head" in store.data))
    emulator.fail("GET", HEAD_PATH, status=502)
    emulator.too_many("GET", HEAD_PATH, retry_after=0)
    moved = emulator.merge_feature("A", {"hub/values.yaml": "x: 1\n"})["merge_commit_sha"]
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: len(events) == 1))
    assert events == [{"env": "staging", "branch": "staging", "revision": moved}]
    assert [r.status for r in polls(emulator)[1:4]] == [502, 429, 200]


@pytest.mark.parametrize("stored", [False, True], ids=["cold-start", "warm-start"])
def test_an_idle_hour_of_polling_both_branches_costs_no_rate_limit(github_conn, emulator, stored, capsys):
    """60 s polls for an hour = 60 polls per branch, compressed into POLL-second intervals."""
    stores = {b: MemoryStore() for b in ("staging", "prod")}
    if stored:  # a triggerer that ran before: it kept the head and the ETag
        for branch, store in stores.items():
            store.data["head"] = {"revision": emulator.head(branch), "etag": f'"{emulator.head(branch)}"'}
    used = emulator.rate_used

    async def both():
        events: list = []
        done = lambda b: len(emulator.requests_to("GET", f"{HEAD_PATH[:-1]}{b}")) >= 60  # noqa: E731
        await asyncio.gather(*(collect(make_trigger(github_conn, stores[b], env=b, branch=b), events,
                                       lambda b=b: done(b)) for b in stores))
        return events

    assert asyncio.run(both()) == []
    requests = polls(emulator)
    counted = emulator.rate_used - used
    with capsys.disabled():
        print(f"\nidle hour, both branches ({'warm' if stored else 'cold'} start): {len(requests)} requests, "
              f"{sum(r.status == 304 for r in requests)} answered 304, {counted} counted against the rate limit")
    assert counted == (0 if stored else 2)
    assert len(requests) >= 120


def test_a_failing_connection_lookup_is_retried_and_the_event_still_comes(github_conn, emulator, monkeypatch, capfd):
    from hubflow.airflow import hooks

    store, events, lookups = MemoryStore(), [], []
    real = hooks.github_client

    def flaky(conn_id, *args):
        lookups.append(conn_id)
        if len(lookups) <= 2:
            raise RuntimeError("secrets backend unreachable\nTraceback (most recent call last): ...")
        return real(conn_id, *args)

    monkeypatch.setattr(hooks, "github_client", flaky)
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: "head" in store.data))
    moved = emulator.merge_feature("A", {"hub/values.yaml": "x: 1\n"})["merge_commit_sha"]
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: len(events) == 1))
    assert events == [{"env": "staging", "branch": "staging", "revision": moved}]
    assert len(lookups) == 4  # two failures, then one client per trigger run
    warnings = [line for line in "".join(capfd.readouterr()).splitlines() if "secrets backend" in line]
    assert len(warnings) == 2 and all(f"reading GitHub connection {github_conn!r}" in w for w in warnings)
    assert all("Traceback" not in w for w in warnings)  # the reason in one line


def test_an_auth_error_reads_the_connection_again(github_conn, emulator, monkeypatch, capfd):
    from hubflow.airflow import hooks

    store, events, lookups = MemoryStore(), [], []
    real = hooks.github_client
    monkeypatch.setattr(hooks, "github_client", lambda conn_id, *a: lookups.append(conn_id) or real(conn_id, *a))
    emulator.fail("GET", HEAD_PATH, status=401, message="Bad credentials")
    asyncio.run(collect(make_trigger(github_conn, store), events, lambda: "head" in store.data))
    assert len(lookups) == 2 and [r.status for r in polls(emulator)] == [401, 200]
    out = "".join(capfd.readouterr())
    assert "401: Bad credentials" in out and emulator.token not in out
