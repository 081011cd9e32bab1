"""hubflow_promote end to end (dag.test over the sandbox): each gate refusing, both modes, and the approval answered
through Airflow's REST API by an api-server on the same metadata database, or left to time out."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
import yaml

from tests import airflow_support as af
from tests.e2e.conftest import states

APPROVER, PASSWORD = "alice", "alice-pw"


def promote(box, **conf):
    """One run of hubflow_promote as the form would start it; its log lands in `box.log`."""
    return box.run_dag("hubflow_promote", **conf)


def settings(box, **promotion):
    """Change the sandbox settings: promotion keys, and `prod_freeze_windows` for prod."""
    data = yaml.safe_load(box.settings_file.read_text())
    windows = promotion.pop("prod_freeze_windows", None)
    if windows is not None:
        data["environments"][1]["freeze_windows"] = windows
    data.setdefault("promotion", {}).update(promotion)
    box.settings_file.write_text(yaml.safe_dump(data))


def feature(box) -> str:
    return box.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml": "jupyterhub: {cpu: 2}\n"}
                                    )["merge_commit_sha"]


def verified(box, revision: str, minutes_ago: float = 0) -> None:
    """Book `revision` as verified on staging (the gate under test needs no real deploy)."""
    from hubflow.clients.git import Repo

    book = box.ledger()
    attempt = book.start("staging", revision, None, Repo(box.github.bare).tree_id(revision), f"fake-{revision}")
    book.finish(attempt, "success", "verified (booked by the test)")
    if minutes_ago:
        from hubflow.clients.ledger import attempts
        with book.engine.begin() as c:
            c.execute(attempts.update().where(attempts.c.id == attempt).values(
                finished_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago)))


def last_promotion(box) -> dict:
    return box.ledger().promotions("prod")[0]


def prod_head(box) -> str:
    return box.github._git("rev-parse", "prod").strip()


def said_everywhere(box, p: dict) -> None:
    """The closing line is the ledger's detail, the log's line and the Slack message (Slack-escaped)."""
    from hubflow.core.messages import slack_escape

    assert p["detail"] in box.log and slack_escape(p["detail"]) in box.slack[-1]


def assert_refused(box, run, words: str, task: str = "check"):
    assert run.state == "failed"
    s = states(run)
    assert s[task] == "failed" and s["record"] == "failed", s
    assert words in box.log
    p = last_promotion(box)
    assert p["outcome"] == "refused" and words in p["detail"], p
    said_everywhere(box, p)


# ---------------------------------------------------------------- the gates


def test_not_verified_on_staging_is_refused(sandbox):
    sandbox.baseline()
    revision = feature(sandbox)
    before = prod_head(sandbox)
    run = promote(sandbox, revision=revision, mode="merge", reason="ship it")
    assert_refused(sandbox, run, "matches no revision verified on staging")
    assert [g["gate"] for g in last_promotion(sandbox)["record"]["gates"]] == ["verified"]
    assert prod_head(sandbox) == before and not [p for p in sandbox.github.pulls.values() if p["base"] == "prod"]


def test_held_revision_is_refused(sandbox):
    sandbox.baseline()
    revision = feature(sandbox)
    verified(sandbox, revision)
    sandbox.ledger().hold(revision, "staging", "INC-9: breaks logins")
    assert_refused(sandbox, promote(sandbox, revision=revision), "INC-9: breaks logins")


def test_frozen_by_switch_is_refused(sandbox, monkeypatch):
    sandbox.baseline()
    verified(sandbox, feature(sandbox))
    monkeypatch.setenv("AIRFLOW_VAR_HUBFLOW_FREEZE_PROD", "exam week")
    assert_refused(sandbox, promote(sandbox), "prod is frozen by hand: exam week")


def test_frozen_by_window_is_refused(sandbox):
    sandbox.baseline()
    verified(sandbox, feature(sandbox))
    now = dt.datetime.now(dt.timezone.utc)
    settings(sandbox, prod_freeze_windows=[{"start": (now - dt.timedelta(hours=1)).isoformat(),
                                            "end": (now + dt.timedelta(hours=1)).isoformat(), "reason": "finals"}])
    assert_refused(sandbox, promote(sandbox), "finals")


def test_what_prod_already_runs_is_refused(sandbox):
    head = sandbox.baseline()
    assert_refused(sandbox, promote(sandbox, revision=head), "prod already runs this tree")


def test_soak_time_not_reached_is_refused_then_passes_once_it_has(sandbox):
    sandbox.baseline()
    revision = feature(sandbox)
    verified(sandbox, revision, minutes_ago=10)
    settings(sandbox, soak_minutes=30)
    assert_refused(sandbox, promote(sandbox), "for 10 min, the soak time is 30 min")
    settings(sandbox, soak_minutes=5)
    run = promote(sandbox)
    assert run.state == "success", states(run)
    assert "verified and live on staging for 10 min" in sandbox.log


def test_unmergeable_pr_is_refused_in_merge_mode(sandbox):
    sandbox.baseline()
    sandbox.github.push("prod", "hotfix on prod", {"deployments/data8/config/common.yaml": "jupyterhub: {cpu: 9}\n"})
    verified(sandbox, feature(sandbox))
    before = prod_head(sandbox)
    # issue 17: the check's "same tree" gate merges in the mirror first and names the conflict and the commit only
    # prod has (it used to be GitHub's "not mergeable" at the open step)
    assert_refused(sandbox, promote(sandbox, mode="merge", reason="ship it"),
                   "conflicts in deployments/data8/config/common.yaml")
    assert "`hotfix on prod`" in last_promotion(sandbox)["detail"]
    assert prod_head(sandbox) == before


def test_merge_needs_a_reason(sandbox):
    run = promote(sandbox, mode="merge")
    assert run.state == "failed" and states(run)["check"] == "failed"
    assert "mode merge needs a reason" in sandbox.log and "mode merge needs a reason" in sandbox.slack[-1]


def test_unknown_revision_is_refused(sandbox):
    sandbox.baseline()
    run = promote(sandbox, revision="no-such-commit")
    assert run.state == "failed" and "'no-such-commit' is not a commit" in sandbox.slack[-1]
    assert sandbox.ledger().promotions() == []  # nothing was resolved, so there is nothing to book


def test_unknown_parameter_is_refused(sandbox):
    run = promote(sandbox, revison="abc")
    assert run.state == "failed" and "unknown parameter(s) 'revison'" in sandbox.log


# ---------------------------------------------------------------- both modes


def test_pull_request_mode_after_a_real_staging_run_opens_the_pr_with_the_evidence(sandbox):
    sandbox.baseline()
    revision = feature(sandbox)
    assert sandbox.run("staging").state == "success"
    sandbox.log = ""
    run = promote(sandbox, reason="weekly promotion")
    assert run.state == "success", states(run)
    s = states(run)
    assert s["merge"] == "skipped" and s["record"] == "success"
    subject = sandbox.github._git("log", "-1", "--format=%s", revision).strip()
    assert revision in sandbox.log and subject in sandbox.log  # the empty form resolved, with its subject
    (pr,) = [p for p in sandbox.github.pulls.values() if p["base"] == "prod"]
    assert pr["state"] == "open" and revision in pr["body"] and "verification on staging" in pr["body"]
    p = last_promotion(sandbox)
    assert (p["outcome"], p["revision"], p["mode"], p["reason"], p["requested_by"]) == \
        ("opened", revision, "pull_request", "weekly promotion", "dag_test")
    assert [g["gate"] for g in p["record"]["gates"]] == ["verified", "not held", "not frozen", "newer", "same tree",
                                                         "soak"]
    assert f"PR #{pr['number']} is open" in p["detail"]
    said_everywhere(sandbox, p)
    assert any(p["detail"] in c["body"] for c in sandbox.github.comments[pr["number"]])


def test_merge_mode_merges_the_pr_and_moves_prod(sandbox):
    sandbox.baseline()
    revision = feature(sandbox)
    verified(sandbox, revision)
    run = promote(sandbox, revision=revision, mode="merge", reason="INC-12 fix")
    assert run.state == "success", states(run)
    (pr,) = [p for p in sandbox.github.pulls.values() if p["base"] == "prod"]
    assert pr["merged"] and prod_head(sandbox) == pr["merge_commit_sha"]
    assert sandbox.github._git("rev-parse", "prod^{tree}").strip() == \
        sandbox.github._git("rev-parse", f"{revision}^{{tree}}").strip()
    p = last_promotion(sandbox)
    assert (p["outcome"], p["reason"], p["record"]["merged"]) == ("merged", "INC-12 fix", pr["merge_commit_sha"])
    assert f"merged PR #{pr['number']}" in p["detail"]
    said_everywhere(sandbox, p)
    assert any(p["detail"] in c["body"] for c in sandbox.github.comments[pr["number"]])


# ---------------------------------------------------------------- the approval


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """An api-server on the tests' metadata database, where an approver logs in and answers."""
    af.migrate()
    home = tmp_path_factory.mktemp("api")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({APPROVER: PASSWORD, "mallory": "mallory-pw"}))
    port = _free_port()
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:admin,mallory:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords)}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    proc = subprocess.Popen([airflow, "api-server", "--port", str(port), "--host", "127.0.0.1"], env=env,
                            stdout=open(home / "api.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/v2/monitor/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the api-server did not start:\n" + (home / "api.log").read_text()[-3000:])
    yield url
    proc.terminate()
    proc.wait(10)


def token(url: str, user: str, password: str) -> str:
    r = requests.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["access_token"]


def awaiting(timeout: float = 120):
    """The approval task instance once it waits for an answer."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with create_session() as session:
            ti = session.query(TaskInstance).filter_by(dag_id="hubflow_promote", task_id="approve",
                                                       state=TaskInstanceState.AWAITING_INPUT).one_or_none()
            if ti is not None:
                session.expunge(ti)
                return ti
        time.sleep(0.3)
    raise AssertionError("the approval never waited for an answer")


def respond(url: str, answer: str, seen: dict) -> None:
    """What a person does on the Required Actions page, through the same REST call."""
    try:
        ti = awaiting()
        path = f"{url}/api/v2/dags/hubflow_promote/dagRuns/{ti.run_id}/taskInstances/approve/-1/hitlDetails"
        detail = requests.get(path, headers={"Authorization": f"Bearer {token(url, APPROVER, PASSWORD)}"},
                              timeout=10).json()
        seen["detail"] = detail
        outsider = requests.patch(path, json={"chosen_options": ["Approve"]}, timeout=30,
                                  headers={"Authorization": f"Bearer {token(url, 'mallory', 'mallory-pw')}"})
        seen["outsider"] = outsider.status_code
        r = requests.patch(path, json={"chosen_options": [answer]}, timeout=30,
                           headers={"Authorization": f"Bearer {token(url, APPROVER, PASSWORD)}"})
        seen["status"] = r.status_code
    except Exception as exc:  # noqa: BLE001 - the test thread reports it
        seen["error"] = repr(exc)


def approval_run(box, answer_with):
    box.baseline()
    revision = feature(box)
    verified(box, revision)
    settings(box, approval="required", approvers=[APPROVER], approval_timeout_minutes=1)
    seen: dict = {}
    # the responder's first query would import and map Airflow's models while dag.test imports: do it here first
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner  # noqa: F401
    from airflow.models import import_all_models
    from sqlalchemy.orm import configure_mappers
    import_all_models()
    configure_mappers()
    thread = threading.Thread(target=answer_with, args=(seen,), daemon=True)
    thread.start()
    run = promote(box, mode="merge", reason="INC-12 fix")
    thread.join(30)
    assert "error" not in seen, seen
    return run, revision, seen


def test_approval_approved_merges(sandbox, api_server):
    run, revision, seen = approval_run(sandbox, lambda seen: respond(api_server, "Approve", seen))
    assert seen["outsider"] == 403 and seen["status"] == 200, seen
    assert revision[:12] in seen["detail"]["subject"] and "verified and live" in seen["detail"]["body"]
    assert seen["detail"]["defaults"] == ["Reject"]
    assert run.state == "success", states(run)
    (pr,) = [p for p in sandbox.github.pulls.values() if p["base"] == "prod"]
    assert pr["merged"] and prod_head(sandbox) == pr["merge_commit_sha"]
    assert any("required_actions" in c["body"] for c in sandbox.github.comments[pr["number"]])
    assert any("required_actions" in m for m in sandbox.slack)
    p = last_promotion(sandbox)
    assert p["outcome"] == "merged" and p["record"]["approval"]["by"]["id"] == APPROVER


def test_approval_rejected_leaves_prod_alone(sandbox, api_server):
    run, revision, seen = approval_run(sandbox, lambda seen: respond(api_server, "Reject", seen))
    assert seen["status"] == 200 and run.state == "failed"
    s = states(run)
    assert s["approve"] == "success" and s["merge"] == "skipped" and s["record"] == "failed"
    (pr,) = [p for p in sandbox.github.pulls.values() if p["base"] == "prod"]
    assert pr["state"] == "open" and not pr["merged"]
    p = last_promotion(sandbox)
    assert p["outcome"] == "rejected" and f"rejected by {APPROVER}" in p["detail"]
    said_everywhere(sandbox, p)


def test_a_freeze_that_starts_while_waiting_for_the_approval_stops_the_merge(sandbox, api_server, monkeypatch):
    def freeze_then_approve(seen):
        awaiting()
        monkeypatch.setenv("AIRFLOW_VAR_HUBFLOW_FREEZE_PROD", "INC-20 during the approval")
        respond(api_server, "Approve", seen)

    run, revision, seen = approval_run(sandbox, freeze_then_approve)
    assert run.state == "failed" and states(run)["merge"] == "failed"
    assert not [p for p in sandbox.github.pulls.values() if p["merged"] and p["base"] == "prod"]
    p = last_promotion(sandbox)
    assert p["outcome"] == "refused" and "INC-20 during the approval" in p["detail"]
    assert "checked again just before merging" in p["detail"]


def time_out(seen: dict) -> None:
    """The scheduler's own timeout sweep (dag.test runs no scheduler), once the deadline has passed: the test
    moves the deadline instead of waiting the one-minute minimum."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    try:
        ti = awaiting()
        with create_session() as session:
            row = session.get(TaskInstance, ti.id)
            seen["timeout_in"] = (row.trigger_timeout - dt.datetime.now(dt.timezone.utc)).total_seconds()
            row.trigger_timeout = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
    except Exception as exc:  # noqa: BLE001 - the test thread reports it
        seen["error"] = repr(exc)


def test_approval_timed_out_is_refused(sandbox):
    run, revision, seen = approval_run(sandbox, time_out)
    assert 0 < seen["timeout_in"] <= 60
    assert run.state == "failed"
    s = states(run)
    assert s["merge"] == "skipped", s
    (pr,) = [p for p in sandbox.github.pulls.values() if p["base"] == "prod"]
    assert not pr["merged"]
    p = last_promotion(sandbox)
    assert p["outcome"] == "refused" and "nobody approved within 1 min" in p["detail"]
    assert p["record"]["approval"]["answer"] == ["Reject"] and p["record"]["approval"]["by"] is None
    said_everywhere(sandbox, p)
