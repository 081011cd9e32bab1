"""Blame is earned (issue 17, scenarios 3 and 4): the rules without a hub.

One verification per hub and environment at a time (the ledger's lease, on SQLite and the machine's PostgreSQL),
waiting for it outside the verification's time; the three time budgets of a verification and whose fault each
timeout is; a 409 or a deleted smoke user is never the revision's fault; settings where the spawn's retry cannot
happen are refused.
"""
import datetime as dt
import threading
from pathlib import Path

import pytest

from hubflow.clients import smoke
from hubflow.clients.ledger import Ledger
from hubflow.clients.verification import HubBusy, one_at_a_time
from hubflow.core.documents import ConfigError
from hubflow.core.settings import SPAWN_ROOM_SECONDS, Timeouts, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = """
repository: {github: org/deploy, clone_url: https://github.com/org/deploy.git}
environments:
  - {name: staging, branch: staging, hub_url: "https://{hub}.staging.example.org"}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else request.getfixturevalue("pg_database")
    book = Ledger(url)
    yield book
    book.engine.dispose()


# ---------------------------------------------------------------- settings: room for the spawn's retry


def timeouts_problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        parse_settings(SETTINGS + text, "hubflow.yaml")
    return {path: reason for _, path, reason in err.value.problems}


def test_the_shipped_timeouts_leave_room_for_the_spawns_retry():
    t = load_settings(ROOT / "include" / "hubflow.yaml").timeouts
    assert (t.smoke_seconds, t.spawn_seconds) == (900, 300)
    assert t.smoke_seconds >= 2 * t.spawn_seconds + SPAWN_ROOM_SECONDS
    assert (Timeouts().smoke_seconds, Timeouts().spawn_seconds) == (900, 300)  # the model's defaults, too


def test_timeouts_where_the_retry_cannot_happen_are_refused_naming_the_fields_and_the_numbers():
    found = timeouts_problems("timeouts: {smoke_seconds: 600, spawn_seconds: 300}\n")
    assert found == {"timeouts": "smoke_seconds (600) leaves no room for the spawn's retry: it must be at least "
                                 "2 x spawn_seconds (300) + 60 = 660 (raise smoke_seconds or lower spawn_seconds): "
                                 "otherwise a spawn that runs out of its time is never tried again with a fresh user"}
    # the spawn's default counts when only the limit is set (the old default pair: a 300 s spawn in a 600 s limit)
    assert "2 x spawn_seconds (300) + 60 = 660" in timeouts_problems("timeouts: {smoke_seconds: 600}\n")["timeouts"]
    assert "smoke_seconds (300)" in timeouts_problems("timeouts: {smoke_seconds: 300, spawn_seconds: 300}\n")[
        "timeouts"]


def test_timeouts_with_room_for_two_spawns_pass():
    assert parse_settings(SETTINGS + "timeouts: {smoke_seconds: 660, spawn_seconds: 300}\n").timeouts.smoke_seconds \
        == 660
    assert parse_settings(SETTINGS + "timeouts: {smoke_seconds: 140, spawn_seconds: 40}\n").timeouts.spawn_seconds \
        == 40


def test_a_verification_holds_its_hub_and_waits_for_bounded_times():
    assert smoke.hold_seconds(900) == 900 + smoke.CLEANUP_SECONDS + smoke.LEASE_MARGIN_SECONDS
    assert smoke.wait_seconds(900) == 2 * smoke.hold_seconds(900)
    assert smoke.task_seconds(900, tries=2) == 2 * (smoke.wait_seconds(900) + smoke.hold_seconds(900))


# ---------------------------------------------------------------- the lease: one verification per hub at a time


def test_one_verification_holds_a_hub_the_others_see_who(ledger):
    assert ledger.take_verification("staging", "data8", "a" * 32, "hubflow_nightly_verify run n1", 60) is None
    other = ledger.take_verification("staging", "data8", "b" * 32, "hubflow_deploy_staging run d1", 60)
    assert other["holder"] == "hubflow_nightly_verify run n1"
    assert other["expires_at"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=50)
    # another hub, or the same hub in another environment, is free
    assert ledger.take_verification("staging", "biology", "b" * 32, "d1", 60) is None
    assert ledger.take_verification("prod", "data8", "b" * 32, "d1", 60) is None
    # taking again with the same token renews (a retried call); letting go with another token changes nothing
    assert ledger.take_verification("staging", "data8", "a" * 32, "hubflow_nightly_verify run n1", 120) is None
    ledger.release_verification("staging", "data8", "b" * 32)
    assert ledger.verification_lease("staging", "data8")["holder"] == "hubflow_nightly_verify run n1"
    ledger.release_verification("staging", "data8", "a" * 32)
    assert ledger.verification_lease("staging", "data8") is None
    assert ledger.take_verification("staging", "data8", "b" * 32, "hubflow_deploy_staging run d1", 60) is None


def test_a_lease_whose_holder_died_is_taken_over_when_it_expires(ledger):
    assert ledger.take_verification("staging", "data8", "a" * 32, "a worker that died", 0.2) is None
    assert ledger.take_verification("staging", "data8", "b" * 32, "next", 60)["holder"] == "a worker that died"
    threading.Event().wait(0.3)
    assert ledger.verification_lease("staging", "data8") is None
    assert ledger.take_verification("staging", "data8", "b" * 32, "next", 60) is None
    ledger.release_verification("staging", "data8", "a" * 32)  # the late holder's release leaves the new lease
    assert ledger.verification_lease("staging", "data8")["holder"] == "next"


def test_holders_racing_for_a_free_hub_get_it_once(ledger):
    got, barrier = [], threading.Barrier(4)

    def race(i: int) -> None:
        barrier.wait()
        if ledger.take_verification("staging", "data8", f"{i:032d}", f"holder {i}", 60) is None:
            got.append(i)
    threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and ledger.verification_lease("staging", "data8")["holder"] == f"holder {got[0]}"


class Clock:
    """A clock that moves only when the code sleeps."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_verification_waits_for_the_holder_outside_its_own_time_then_holds_the_hub(ledger, caplog):
    clock = Clock()
    ledger.take_verification("staging", "data8", "n" * 32, "hubflow_nightly_verify run n1", 60)
    real_sleep = clock.sleep

    def sleep(seconds):  # the nightly's verification ends after 12 s
        real_sleep(seconds)
        if clock.now >= 12:
            ledger.release_verification("staging", "data8", "n" * 32)
    caplog.set_level("INFO", "hubflow.clients.verification")
    with one_at_a_time(ledger, "staging", "data8", "hubflow_deploy_staging run d1", 60, 600, sleep, clock) as waited:
        assert waited == {"seconds": 15.0, "for": "hubflow_nightly_verify run n1"}
        assert ledger.verification_lease("staging", "data8")["holder"] == "hubflow_deploy_staging run d1"
    assert clock.sleeps == [5, 5, 5]
    assert ledger.verification_lease("staging", "data8") is None  # let go when the block ends
    (said,) = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]  # said once, not per poll
    assert "is being verified by hubflow_nightly_verify run n1" in said and "not part of this verification's time" \
        in said


def test_a_free_hub_is_taken_at_once_and_let_go_when_the_verification_raises(ledger):
    clock = Clock()
    with pytest.raises(RuntimeError), one_at_a_time(ledger, "staging", "data8", "d1", 60, 600, clock.sleep,
                                                    clock) as waited:
        assert waited is None
        raise RuntimeError("the verification broke")
    assert clock.sleeps == [] and ledger.verification_lease("staging", "data8") is None


def test_a_wait_longer_than_two_leases_is_the_platforms_fault(ledger):
    clock = Clock()
    ledger.take_verification("staging", "data8", "n" * 32, "hubflow_nightly_verify run n1", 3600)
    with pytest.raises(HubBusy) as busy, one_at_a_time(ledger, "staging", "data8", "d1", 60, 12, clock.sleep, clock):
        pass
    assert str(busy.value) == ("another verification of hub data8 in staging (hubflow_nightly_verify run n1) kept it "
                               "busy for 12s, longer than a verification waits (12s): one verification per hub at "
                               "a time; not the revision's fault")
    assert clock.sleeps == [5, 5, 2]
    assert ledger.verification_lease("staging", "data8")["holder"] == "hubflow_nightly_verify run n1"


# ---------------------------------------------------------------- the time budgets and whose fault a timeout is


@pytest.fixture
def run(monkeypatch):
    """A verification's bookkeeping with a clock the test moves: limit 100 s, spawns 30 s, checks 40 s."""
    clock = Clock()
    monkeypatch.setattr(smoke.time, "monotonic", clock)
    r = smoke._Run("http://hub.invalid", "t", [], None, 100, 30, 40, None)
    r.clock = clock
    yield r
    r.hub.close()
    r.single.close()


def test_a_spawn_has_its_own_budget_and_a_pending_spawn_is_capacity_not_the_revision(run):
    run.clock.now = 35  # the checks before the spawn were slow: past the checks' own 40 s would be close
    run.spawn_deadline = 35 + 30
    run.clock.now = 60
    assert run.remaining("waiting for the server") == 5  # the spawn's own time, not the checks' (gone at 40)
    run.clock.now = 65
    with pytest.raises(smoke._SpawnTimeout) as out:
        run.remaining("waiting for the server")
    assert out.value.blame == "platform"
    assert str(out.value) == "spawn timeout: not ready within 30s (while waiting for the server)"


def test_the_time_spent_spawning_does_not_use_up_the_checks_time(run):
    t = run.clock.now = 10
    run.spawn_deadline = t + 30
    run.clock.now = 38  # the spawn took 28 s
    run.spawn_deadline = None
    run.deadline += run.clock.now - t  # what spawn() does when it ends
    assert run.remaining("starting a kernel") == pytest.approx(40 + 28 - 38)
    run.clock.now = 68
    with pytest.raises(smoke._Failed) as out:  # the checks used their own 40 s: the hub's doing
        run.remaining("checking numpy")
    assert out.value.blame == "revision"
    assert str(out.value) == ("timed out after 68s (limit 40s, besides 28s spawning or waiting for another "
                              "verification) while checking numpy")


def test_the_verifications_limit_before_the_checks_own_time_is_the_platforms_fault(run):
    run.deadline += 70  # two slow spawns
    run.clock.now = 100
    with pytest.raises(smoke._PlatformFault) as out:
        run.remaining("checking numpy")
    assert out.value.blame == "platform"
    assert str(out.value) == ("timed out after 100s (limit 100s) while checking numpy, before the checks used their "
                              "40s: spawning or waiting for another verification took the rest")
    run.spawn_deadline = 200  # a spawn that meets the limit: still starting, capacity
    with pytest.raises(smoke._SpawnTimeout, match=r"^timed out after 100s \(limit 100s\) while starting the server$"):
        run.remaining("starting the server")


class Answer:
    def __init__(self, status: int, body: dict | None = None):
        self.status_code, self.body = status, body or {}

    def json(self):
        return self.body


def test_a_smoke_user_that_already_exists_is_never_the_revisions_fault(run, monkeypatch):
    monkeypatch.setattr(run, "hub_api", lambda method, path, what, **kw: Answer(409, {"message": "exists"}))
    assert not run._step("user", run.create_user)
    check = run.result.check("user")
    assert check.detail == ("user hubflow-smoke-1 already exists (POST /hub/api/users/hubflow-smoke-1 answered 409): "
                            "another verification of this hub, or a person, is using it; not the revision's fault")
    assert smoke.blame_of(run.result.checks, run.faults) == "platform"
    assert run.users == []  # not this run's: its cleanup leaves it alone


def test_a_smoke_user_deleted_under_a_running_check_is_never_the_revisions_fault(run, monkeypatch):
    run.user = "hubflow-smoke-1"
    monkeypatch.setattr(run.hub, "get", lambda url, timeout: Answer(404))

    def kernel():
        raise smoke._Failed("POST /user/hubflow-smoke-1/api/kernels answered 503: the server is gone")
    assert not run._step("kernel", kernel)
    assert run.result.check("kernel").detail.endswith(
        "; user hubflow-smoke-1 was deleted while this check ran (by another verification or a person): not the "
        "revision's fault")
    assert smoke.blame_of(run.result.checks, run.faults) == "platform"


def test_a_failing_check_of_a_user_that_still_exists_is_the_revisions_fault(run, monkeypatch):
    run.user = "hubflow-smoke-1"
    monkeypatch.setattr(run.hub, "get", lambda url, timeout: Answer(200, {"name": "hubflow-smoke-1"}))

    def packages():
        raise smoke._Failed("numpy: ModuleNotFoundError: No module named 'numpy'")
    assert not run._step("packages", packages)
    assert run.result.check("packages").detail == "numpy: ModuleNotFoundError: No module named 'numpy'"
    assert smoke.blame_of(run.result.checks, run.faults) == "revision"


def test_hubflow_validate_refuses_the_old_defaults_naming_the_fields_and_the_numbers(tmp_path):
    import os
    import subprocess
    import sys

    settings = tmp_path / "hubflow.yaml"
    shipped = (ROOT / "include" / "hubflow.yaml").read_text()
    settings.write_text(shipped.replace("smoke_seconds: 900", "smoke_seconds: 600"))
    out = subprocess.run([str(Path(sys.executable).parent / "hubflow"), "validate", "--config", str(settings)],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert (f"{settings}: timeouts: smoke_seconds (600) leaves no room for the spawn's retry: it must be at least "
            "2 x spawn_seconds (300) + 60 = 660") in out.stderr
