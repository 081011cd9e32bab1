"""No state is lost when hubflow's own bookkeeping fails (issue 17, scenarios 8 and 9).

8: the ledger goes down while a bad revision's failure path runs: the revert, the failure status, the PR comment and
   Slack still happen and say the ledger could not be written; the hold and the outcome wait in the environment's
   outbox (an Airflow Variable) and are in the ledger once the next run finds it back.
9: an unexpected error before any pod (GitHub at the pending status, the ledger in prod's digest check) ends the run
   as a platform fault that touched nothing, with its attempt closed: never `refused`, never "STATE UNKNOWN".
"""
import pytest

from hubflow.clients.ledger import Ledger, LedgerError
from hubflow.core import deploy
from tests.e2e.conftest import states
from tests.e2e.test_deploy import bad_merge, merge_pull, promotion_pulls, revert_pulls, statuses
from tests.e2e.test_faults import attempt_of, closing_line, one_hub_merge


@pytest.fixture
def ledger_goes_down(monkeypatch):
    """`down()` makes every ledger write and read answer as an unreachable database does (after its retries)."""
    gone = []

    def unreachable(name):
        real = getattr(Ledger, name)

        def method(self, *args, **kwargs):
            if gone:
                raise LedgerError(f"ledger {name} failed: could not connect to server: Connection refused")
            return real(self, *args, **kwargs)
        return method

    for name in ("hold", "update", "finish", "held", "attempts", "last_success", "holds", "start"):
        monkeypatch.setattr(Ledger, name, unreachable(name))

    class Switch:
        def down(self):
            gone.append(1)

        def up(self):
            gone.clear()
    return Switch()


def test_8_the_ledger_down_on_the_failure_path_loses_nothing(sandbox, monkeypatch, ledger_goes_down):
    sandbox.baseline()
    pr = bad_merge(sandbox)
    revision = pr["merge_commit_sha"]
    real = deploy.aftermath

    def then_the_ledger_goes_down(conclusion, target):  # the failure path starts: the database is gone
        ledger_goes_down.down()
        return real(conclusion, target)
    monkeypatch.setattr(deploy, "aftermath", then_the_ledger_goes_down)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["fail"] == "success" and states(run)["record"] == "failed"
    # every effect outside the ledger happened, and each says the ledger could not be written
    (revert,) = revert_pulls(sandbox)
    assert revert["merged"]
    assert statuses(sandbox, revision) == [("hubflow/staging", "failure")]
    (comment,) = sandbox.github.comments[pr["number"]]
    assert "the ledger could not be written" in comment["body"] and "held" in comment["body"]
    line = closing_line(sandbox)
    assert "FAILED at verify" in line and "is held" in line and "the ledger could not be written" in line
    assert any("the ledger could not be written" in m for m in sandbox.slack), sandbox.slack
    # the ledger missed it all while it was down
    ledger_goes_down.up()
    assert sandbox.ledger().held(revision) is None
    assert attempt_of(sandbox).outcome == "running"
    # the next run (the revert's) finds the ledger back: the hold and the outcome are written before anything
    monkeypatch.setattr(deploy, "aftermath", real)
    sandbox.run("staging")
    assert sandbox.ledger().held(revision).startswith("verification failed: hub biology")
    failed = next(a for a in sandbox.ledger().attempts("staging") if a.revision == revision)
    assert failed.outcome == "failed" and failed.finished_at and "FAILED at verify" in failed.detail
    assert failed.record["links"]["revert"].endswith(f"/pull/{revert['number']}")
    assert "the ledger caught up with" in sandbox.log


def test_9_github_down_at_the_pending_status_is_a_platform_fault_with_the_attempt_closed(sandbox):
    sandbox.baseline()
    revision = one_hub_merge(sandbox)
    sandbox.github.fail("POST", "/repos/datahub/datahub/statuses/*", status=503, times=1000)
    run = sandbox.run("staging")
    assert run.state == "failed" and states(run)["plan"] == "failed" and sandbox.pods("upgrade") == []
    attempt = attempt_of(sandbox)
    assert (attempt.revision, attempt.outcome) == (revision, "platform") and attempt.finished_at
    assert "opening the deploy failed" in attempt.detail and "503" in attempt.detail
    line = closing_line(sandbox)
    assert "PLATFORM FAULT: opening the deploy failed" in line and "staging is unchanged" in line
    assert "refused" not in line and "STATE UNKNOWN" not in line
    assert sandbox.ledger().holds() == [] and revert_pulls(sandbox) == []


def test_9_the_ledger_down_in_prods_digest_check_is_a_platform_fault_not_state_unknown(sandbox, monkeypatch):
    sandbox.baseline()
    one_hub_merge(sandbox)
    assert sandbox.run("staging").state == "success"
    (promotion,) = promotion_pulls(sandbox)
    merged = merge_pull(sandbox, promotion["number"])

    real, calls = Ledger.verified_attempt_for_tree, []

    def gone_after_the_gate(self, env, tree):  # the gate reads it first; the database is gone by the digest check
        calls.append(env)
        if len(calls) > 1:
            raise LedgerError("ledger verified_attempt_for_tree failed: could not connect to server")
        return real(self, env, tree)
    monkeypatch.setattr(Ledger, "verified_attempt_for_tree", gone_after_the_gate)
    sandbox.k8s.reset()
    run = sandbox.run("prod")
    assert run.state == "failed" and states(run)["build_pods"] == "failed" and sandbox.pods("upgrade") == []
    attempt = attempt_of(sandbox, "prod")
    assert attempt.outcome == "platform" and attempt.finished_at and "could not connect" in attempt.detail
    line = closing_line(sandbox)
    assert "PLATFORM FAULT: checking the registry failed" in line and "prod is unchanged" in line
    assert "STATE UNKNOWN" not in line
    assert statuses(sandbox, merged) == [("hubflow/prod", "error")]
