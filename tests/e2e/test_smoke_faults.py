"""Blame is earned (issue 17, scenarios 3 and 4), end to end: real deploy runs (dag.test over the sandbox, the real
local JupyterHub) whose verification meets another verification of the same hub, a smoke user someone else made or
deleted, or a spawn slower than its budget. What people see: the innocent revision is neither held nor reverted,
the verification's blame, the run's state, the commit status, the ledger and the closing line.
"""
from __future__ import annotations

import threading

import pytest

from hubflow.clients import smoke
from tests.e2e.conftest import states
from tests.e2e.test_deploy import revert_pulls, statuses
from tests.e2e.test_faults import attempt_of, closing_line

NIGHTLY = "hubflow_nightly_verify run scheduled__2026-12-08T07:00:00+00:00, task staging.verify[1]"


def merge_data8(box, smoke_limit: int = 15) -> str:
    """A merge that changes data8 only (no build): its hub file, with a tight limit for its checks."""
    pr = box.github.merge_feature("data8: a tighter smoke limit", {
        "deployments/data8/hubflow-hub.yaml": f"images: [primary]\nsmoke:\n  timeout_seconds: {smoke_limit}\n"})
    box.pr_number = pr["number"]
    return pr["merge_commit_sha"]


def verification_of(box, hub: str = "data8") -> dict:
    return attempt_of(box).record["verification"][hub]


def check(result: dict, name: str) -> dict:
    return next(c for c in result["checks"] if c["name"] == name)


def set_timeouts(box, **values: int) -> None:
    text = box.settings_file.read_text()
    for key, value in values.items():
        text = "\n".join(f"  {key}: {value}" if line.startswith(f"  {key}:") else line for line in text.splitlines())
        if f"  {key}: {value}" not in text:
            text = text.replace("timeouts:\n", f"timeouts:\n  {key}: {value}\n")
    box.settings_file.write_text(text + "\n")


def assert_not_the_revisions_fault(box, run, revision: str, words: str) -> None:
    """A platform fault in the verification: the run fails, nothing held or reverted, status error, the ledger and
    the closing line say the platform, and the hub is left with no smoke user."""
    assert run.state == "failed", states(run)
    assert states(run)["rest.verify[0]"] == "failed"
    assert box.ledger().held(revision) is None and box.ledger().holds() == []
    assert revert_pulls(box) == [] and box.github.comments.get(box.pr_number, []) == []
    assert statuses(box, revision) == [("hubflow/staging", "error")]
    attempt = attempt_of(box)
    assert (attempt.revision, attempt.outcome) == (revision, "platform") and attempt.finished_at
    assert words in attempt.detail and "not held" in attempt.detail
    line = closing_line(box)
    assert "PLATFORM FAULT at verify" in line and words in line and f"{revision[:12]} is not held" in line
    result = verification_of(box)
    assert (result["ok"], result["blame"]) == (False, "platform")
    assert box.cluster.hub.user_names() == []


# ---------------------------------------------------------------- 3. one verification per hub at a time


def test_3_a_deploy_that_meets_the_nightly_waits_its_turn_outside_its_time_and_passes(sandbox, monkeypatch):
    """The nightly verifies data8 (a slow spawn: ~20 s, longer than the 15 s data8 gives its checks) when the
    deploy's verification of data8 starts: the deploy waits for it, then verifies with the same smoke users."""
    from hubflow.clients import verification

    sandbox.baseline()
    revision = merge_data8(sandbox, smoke_limit=15)
    hub, book, nightly = sandbox.cluster.hub, sandbox.ledger(), {}
    holding, real_verify_hub = threading.Event(), verification.verify_hub

    def the_nightly() -> None:  # what hubflow_nightly_verify's verify task does for data8, from another worker
        limit = 140
        with verification.one_at_a_time(book, "staging", "data8", NIGHTLY, smoke.hold_seconds(limit),
                                        smoke.wait_seconds(limit)), hub.slow_spawns(20, times=1):
            holding.set()
            nightly["result"] = smoke.verify(hub.url, hub.token, timeout=limit, spawn_timeout=40)

    def meets_the_nightly(*args, **kwargs):
        nightly["thread"] = threading.Thread(target=the_nightly)
        nightly["thread"].start()
        assert holding.wait(30)
        return real_verify_hub(*args, **kwargs)
    monkeypatch.setattr(verification, "verify_hub", meets_the_nightly)
    run = sandbox.run("staging")
    nightly["thread"].join(120)
    assert run.state == "success", states(run)
    assert nightly["result"].ok, nightly["result"].failures  # neither run got the other's user, nor a 409
    result = verification_of(sandbox)
    assert result["ok"] and result["blame"] is None
    assert result["waited"]["for"] == NIGHTLY and result["waited"]["seconds"] > 15  # longer than its checks' limit
    assert check(result, "leftovers")["detail"] == "none"  # the nightly had cleaned up: nothing to wait for there
    assert f"is being verified by {NIGHTLY}" in sandbox.log and "not part of this verification's time" in sandbox.log
    assert statuses(sandbox, revision) == [("hubflow/staging", "success")]
    assert sandbox.ledger().holds() == [] and revert_pulls(sandbox) == []
    assert attempt_of(sandbox).outcome == "success"
    assert "staging now runs" in closing_line(sandbox) and "FAILED" not in closing_line(sandbox)
    assert book.verification_lease("staging", "data8") is None and hub.user_names() == []


@pytest.mark.parametrize("fault", ["created first (409)", "deleted under the check"])
def test_3_a_smoke_user_someone_else_made_or_deleted_is_not_the_revisions_fault(sandbox, monkeypatch, fault):
    """Someone outside hubflow's turn-taking (a person running `hubflow smoke`, an admin cleaning up) makes the smoke
    user just before the run creates it, or deletes it while the run uses it."""
    sandbox.baseline()
    revision = merge_data8(sandbox, smoke_limit=60)
    hub = sandbox.cluster.hub

    def remove(name: str) -> None:
        hub.api("DELETE", f"/users/{name}/server")
        for _ in range(100):
            if hub.api("DELETE", f"/users/{name}").status_code in (204, 404):
                return
            threading.Event().wait(0.3)

    if fault == "created first (409)":
        real = smoke._Run.create_user

        def someone_was_quicker(self, name=smoke.SMOKE_USERS[0]):
            assert hub.api("POST", f"/users/{name}").status_code == 201
            return real(self, name)
        monkeypatch.setattr(smoke._Run, "create_user", someone_was_quicker)
        words = "answered 409"
    else:
        real = smoke._Run.start_kernel

        def deleted_meanwhile(self):
            remove(self.user)
            return real(self)
        monkeypatch.setattr(smoke._Run, "start_kernel", deleted_meanwhile)
        words = "was deleted while this check ran"
    try:
        run = sandbox.run("staging")
    finally:
        remove(smoke.SMOKE_USERS[0])  # the user the other party made is theirs to remove
    assert_not_the_revisions_fault(sandbox, run, revision, words)
    failed = check(verification_of(sandbox), "user" if fault.endswith("(409)") else "kernel")
    assert failed["status"] == "failed" and "not the revision's fault" in failed["detail"]
    assert [p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("rollback")] == ["data8"]


# ---------------------------------------------------------------- 4. the spawn has its own budget


def test_4_a_spawn_slower_than_its_budget_is_retried_even_when_the_hubs_checks_limit_is_shorter(sandbox):
    """data8 gives its checks 10 s; a spawn may take 12 s (as the old defaults: a 300 s spawn in a 300 s check, at
    a test's scale). The first spawn stalls (a node scaling up): it times out at 12 s, the retry with a fresh user
    starts at once, and the revision passes."""
    sandbox.baseline()
    set_timeouts(sandbox, spawn_seconds=12)
    revision = merge_data8(sandbox, smoke_limit=10)
    with sandbox.cluster.hub.slow_spawns(60, times=1):
        run = sandbox.run("staging")
    assert run.state == "success", states(run)
    result = verification_of(sandbox)
    assert result["ok"] and (result["retried"], result["user"], result["blame"]) == (True, "hubflow-smoke-2", None)
    assert "retried as hubflow-smoke-2 after hubflow-smoke-1's spawn timeout: not ready within 12s" in \
        check(result, "server")["detail"]
    assert statuses(sandbox, revision) == [("hubflow/staging", "success")]
    assert sandbox.ledger().holds() == [] and revert_pulls(sandbox) == [] and sandbox.pods("rollback") == []
    assert "staging now runs" in closing_line(sandbox)
    assert sandbox.cluster.hub.user_names() == []


def test_4_a_spawn_still_pending_after_its_retry_is_capacity_not_the_revision(sandbox):
    sandbox.baseline()
    set_timeouts(sandbox, spawn_seconds=8)
    revision = merge_data8(sandbox, smoke_limit=10)
    with sandbox.cluster.hub.slow_spawns(60, times=2):
        run = sandbox.run("staging")
    assert_not_the_revisions_fault(sandbox, run, revision, "capacity, not the revision")
    result = verification_of(sandbox)
    assert (result["retried"], result["user"]) == (True, "hubflow-smoke-2")
    assert check(result, "server")["detail"].startswith("hubflow-smoke-2: spawn timeout: not ready within 8s")
    assert check(result, "server")["detail"].endswith(smoke.STILL_STARTING)
    # what this run changed is put back; the next trigger runs again
    assert [p["metadata"]["labels"]["hubflow.io/hub"] for p in sandbox.pods("rollback")] == ["data8"]
    assert "put back as they were" in closing_line(sandbox)
