"""Issue 17, scenario 13: the nightly asks Airflow whether a deploy of the environment runs, not the ledger's age.

End to end with dag.test over the sandbox: the deploy runs are rows of Airflow's own metadata database (the one the
nightly's tasks ask through the Task SDK), the ledger is the sandbox's.
"""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests import airflow_support
from tests.e2e.conftest import states
from tests.e2e.test_nightly import config, nightly, release, report, rows

DEPLOY = "hubflow_deploy_staging"


class DeployRuns:
    """Runs of the staging deploy DAG made in Airflow's metadata database, in a state, as the scheduler keeps them."""

    def __init__(self):
        self.made: list[str] = []

    def make(self, run_id: str, state: str, started: dt.datetime) -> str:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState
        from airflow.utils.types import DagRunTriggeredByType, DagRunType

        with create_session() as session:
            session.add(DagRun(dag_id=DEPLOY, run_id=run_id, run_type=DagRunType.MANUAL, state=DagRunState(state),
                               start_date=started, run_after=started, triggered_by=DagRunTriggeredByType.TEST))
        self.made.append(run_id)
        return run_id

    def set_state(self, run_id: str, state: str) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState

        with create_session() as session:
            session.query(DagRun).filter_by(dag_id=DEPLOY, run_id=run_id).update({"state": DagRunState(state)})

    def remove(self) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            session.query(DagRun).filter(DagRun.dag_id == DEPLOY, DagRun.run_id.in_(self.made)).delete(
                synchronize_session=False)


@pytest.fixture
def deploy_runs():
    """Deploy runs in Airflow's database, removed afterwards (the database is shared by every test of this process:
    a live deploy left behind would make later nightlies wait)."""
    airflow_support.migrate()
    runs = DeployRuns()
    yield runs
    runs.remove()


def attempt(box, revision: str, run_id: str, age: dt.timedelta) -> int:
    """A ledger attempt of staging left `running`, opened `age` ago by the deploy run `run_id`."""
    book = box.ledger()
    aid = book.start("staging", revision, revision, None, run_id)
    with book.engine.begin() as c:
        c.execute(sa.text("UPDATE hubflow_attempts SET started_at = :t WHERE id = :id"),
                  {"t": dt.datetime.now(dt.timezone.utc) - age, "id": aid})
    return aid


def reschedules(run, task_id: str) -> int:
    """How many times the task was rescheduled (a sensor in reschedule mode that found its condition false)."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    ti = airflow_support.task_instances(run)[(task_id, -1)]
    with create_session() as session:
        return session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count()


def test_attempts_left_running_by_ended_runs_are_not_waited_for_and_are_reported_abandoned(sandbox, deploy_runs):
    h0 = sandbox.baseline()
    release(sandbox, "rhub", 3, "deployed", config(sandbox, "rhub", h0), h0)
    now = dt.datetime.now(dt.timezone.utc)
    # young enough that the ledger's age alone would wait for it, but Airflow says its run failed
    failed = deploy_runs.make("manual__deploy-that-failed", "failed", now - dt.timedelta(minutes=20))
    attempt(sandbox, h0, failed, dt.timedelta(minutes=20))
    # an old one whose run Airflow no longer has at all
    attempt(sandbox, h0, "manual__deploy-long-gone", dt.timedelta(hours=30))

    run = nightly(sandbox, environments=["staging"], hubs=["rhub"], smoke=False)
    assert run.state == "success", states(run)
    s = states(run)
    assert s["staging.wait_for_deploys"] == "success" and s["staging.inventory"] == "success"
    assert reschedules(run, "staging.wait_for_deploys") == 0  # not one poke waited
    assert "waiting" not in sandbox.log and "Airflow could not say" not in sandbox.log
    summary = report(sandbox)
    assert summary["ok"] and rows(summary)["rhub"]["ok"] and summary["overlapped"] is None
    notes = [f["detail"] for f in summary["findings"] if f["check"] == "deploy"]
    assert len(notes) == 2 and all(n.startswith("abandoned attempt:") for n in notes)
    assert any("run manual__deploy-that-failed" in n and "Airflow says that run ended (failed)" in n for n in notes)
    assert any("run manual__deploy-long-gone" in n and "Airflow has no such run" in n for n in notes)
    assert "abandoned attempt: the ledger still has the deploy of" in sandbox.log  # the sensor's log says it too
    assert sandbox.slack[-1].startswith(":white_check_mark: hubflow nightly staging")


def test_a_deploy_airflow_says_is_running_is_waited_for_however_old_its_attempt(sandbox, deploy_runs, monkeypatch):
    from hubflow.airflow import nightly as airflow_nightly
    from hubflow.core import nightly as core_nightly
    from hubflow.core.settings import load_settings

    monkeypatch.setattr(airflow_nightly, "POKE_SECONDS", 1)  # the sensor pokes every second and gives up after 5 s
    monkeypatch.setattr(core_nightly, "wait_seconds", lambda timeouts: 4)
    h0 = sandbox.baseline()
    release(sandbox, "rhub", 3, "deployed", config(sandbox, "rhub", h0), h0)
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)  # a long wave: older than the deploy window
    assert dt.timedelta(hours=3).total_seconds() > core_nightly.deploy_window(load_settings().timeouts)
    live = deploy_runs.make("manual__long-wave", "running", started)
    attempt(sandbox, h0, live, dt.timedelta(hours=3))

    run = nightly(sandbox, environments=["staging"], hubs=["rhub"], smoke=False)
    s = states(run)
    assert s["staging.wait_for_deploys"] == "failed", s  # the sensor's own timeout: it waited, then gave up
    assert reschedules(run, "staging.wait_for_deploys") >= 2  # up_for_reschedule between pokes
    assert s["staging.inventory"] == "upstream_failed" and s["staging.inspect"] == "upstream_failed"
    assert s["staging.report"] == "failed" and run.state == "failed"
    assert f"a deploy of staging runs (run {live}, revision {h0[:12]}" in sandbox.log
    assert "Airflow says its run is running): waiting" in sandbox.log and "Airflow could not say" not in sandbox.log
    assert f"staging was not checked: a deploy of it still runs (run {live}, revision {h0[:12]}) after the " \
           "nightly waited 0m for it (see wait_for_deploys)" in sandbox.log
    assert sandbox.ledger().last_report("nightly", "staging") is None  # nothing checked, nothing reported as drift

    # the deploy run ends (its attempt finished): the next nightly checks at once
    deploy_runs.set_state(live, "success")
    book = sandbox.ledger()
    (mine,) = [a for a in book.attempts("staging") if a.run_id == live]
    book.finish(mine.id, "success", "deployed")
    run = nightly(sandbox, environments=["staging"], hubs=["rhub"], smoke=False)
    assert run.state == "success", states(run)
    assert reschedules(run, "staging.wait_for_deploys") == 0
    summary = report(sandbox)
    assert summary["ok"] and not [f for f in summary["findings"] if f["check"] == "deploy"]
