"""The Environments page's model (hubflow.core.environments): what counts as deployed, what each hub runs and
when it was last verified, holds, freeze, promotion, nightly; links are web URLs only. Plain data, no Airflow."""
from __future__ import annotations

import datetime as dt

from hubflow.core import environments as view
from hubflow.core.settings import Settings

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
A, B, C = "a" * 40, "b" * 40, "c" * 40


def settings() -> Settings:
    return Settings(repository={"github": "datahub/datahub", "clone_url": "https://example.org/x.git"},
                    environments=[
                        {"name": "staging", "branch": "staging", "hub_url": "https://{hub}-s.example.org"},
                        {"name": "prod", "branch": "prod", "hub_url": "https://{hub}.example.org",
                         "freeze_windows": [{"start": "2026-12-18T17:00:00-08:00",
                                             "end": "2027-01-04T08:00:00-08:00", "reason": "winter break"}]}])


def attempt(id_, revision, outcome, hubs=(), removed=(), helm=4, verified=None, links=None, **record):
    plan = {"images": [{"name": "primary", "tag": f"tag{id_}"}],
            "hubs": [{"name": h, "images": ["primary"]} for h in hubs], "removed_hubs": list(removed)}
    return {"id": id_, "revision": revision, "outcome": outcome, "detail": f"detail {id_}", "run_id": f"run{id_}",
            "forced_by": None, "force_reason": None, "started_at": f"2026-12-0{id_}T10:00:00+00:00",
            "finished_at": f"2026-12-0{id_}T10:05:00+00:00",
            "record": {"plan": plan, "links": links or {"run": f"http://airflow/runs/{id_}"},
                       "releases": [{"hub": h, "upgraded": True, "revision": helm, "status": "deployed"}
                                    for h in hubs],
                       "verification": {h: {"ok": ok, "checks": [] if ok else [
                           {"name": "packages", "status": "failed", "detail": "numpy missing"}]}
                                        for h, ok in (verified or {}).items()}, **record}}


def run_link(dag_id, run_id):
    return f"http://airflow/dags/{dag_id}/runs/{run_id}"


def render(rows: dict) -> dict:
    return view.page(settings(), rows, NOW, "https://github.com", run_link)


def test_deployed_is_the_newest_success_and_a_newer_failure_is_the_last_attempt():
    ok = attempt(1, A, "success", hubs=["datahub", "data8"], verified={"datahub": True, "data8": True},
                 promotion="opened", links={"run": "http://airflow/runs/1", "promotion": "https://github.com/pr/7"})
    bad = attempt(2, B, "failed", hubs=["datahub"], verified={"datahub": False})
    bad["record"]["releases"] = [{"hub": "datahub", "upgraded": True, "revision": 5}]
    staging = render({"staging": view.EnvironmentRows([bad, ok], ok)})["environments"][0]
    assert staging["deployed"]["revision"] == A and staging["deployed"]["run_url"] == "http://airflow/runs/1"
    assert staging["deployed"]["url"] == f"https://github.com/datahub/datahub/commit/{A}"
    assert staging["last_attempt"]["outcome"] == "failed" and staging["last_attempt"]["detail"] == "detail 2"
    datahub, data8 = sorted(staging["hubs"], key=lambda h: h["name"] != "datahub")
    # a failed attempt's upgrade is not what runs (it was rolled back): the success's release and tags are
    assert (datahub["revision"], datahub["helm_revision"], datahub["images"]) == (A, 4, [{"name": "primary",
                                                                                        "tag": "tag1"}])
    assert datahub["verification"]["ok"] is False and datahub["verification"]["problem"] == "packages: numpy missing"
    assert data8["verification"]["ok"] is True and data8["verification"]["revision"] == A[:12]
    assert staging["promotion"] == {"url": "https://github.com/pr/7", "state": "opened", "revision": A[:12]}


def test_a_success_as_newest_attempt_has_no_last_attempt_and_nothing_is_shown_before_the_first_deploy():
    ok = attempt(1, A, "success", hubs=["datahub"])
    env = render({"staging": view.EnvironmentRows([ok], ok)})["environments"][0]
    assert env["last_attempt"] is None and env["promotion"] is None
    empty = render({"prod": view.EnvironmentRows([], None)})["environments"][0]
    assert (empty["deployed"], empty["last_attempt"], empty["hubs"], empty["nightly"]) == (None, None, [], None)


def test_a_hub_removed_by_a_newer_success_is_gone_and_each_hub_keeps_its_own_last_upgrade():
    first = attempt(1, A, "success", hubs=["datahub", "old"], helm=3)
    second = attempt(2, B, "success", hubs=["data8"], removed=["old"], helm=7)
    hubs = {h["name"]: h for h in view.hubs([second, first], view.Links("https://github.com", "o/r", run_link))}
    assert set(hubs) == {"datahub", "data8"}
    assert (hubs["datahub"]["revision"], hubs["datahub"]["helm_revision"]) == (A, 3)
    assert (hubs["data8"]["revision"], hubs["data8"]["helm_revision"]) == (B, 7)


def test_environments_come_in_settings_order_holds_per_environment_freeze_and_nightly():
    holds = [{"revision": B, "env": "staging", "reason": "<b>bad</b>", "created_at": dt.datetime(2026, 12, 2)},
             {"revision": C, "env": "prod", "reason": "worse", "created_at": dt.datetime(2026, 12, 2)}]
    nightly = {"ok": False, "run_id": "scheduled__1", "created_at": NOW, "summary": {"drift": 2, "hubs": ["x"]}}
    page = render({"prod": view.EnvironmentRows([], None, holds, "exam week", nightly),
                   "staging": view.EnvironmentRows([], None, holds)})
    staging, prod = page["environments"]
    assert (staging["name"], prod["name"]) == ("staging", "prod")
    assert [h["revision"] for h in staging["holds"]] == [B] and staging["holds"][0]["reason"] == "<b>bad</b>"
    assert prod["freeze"]["frozen"] == "prod is frozen by hand: exam week" and staging["freeze"]["frozen"] is None
    assert prod["freeze"]["window"]["reason"] == "winter break" and prod["freeze"]["window"]["current"] is False
    assert prod["nightly"] == {"ok": False, "when": NOW.isoformat(), "run_id": "scheduled__1",
                               "run_url": "http://airflow/dags/hubflow_nightly_verify/runs/scheduled__1",
                               "summary": "drift: 2"}


def test_links_are_web_urls_only():
    ok = attempt(1, A, "success", hubs=["datahub"],
                 links={"run": "javascript:alert(1)", "promotion": "data:text/html,<script>"}, promotion="opened")
    env = render({"staging": view.EnvironmentRows([ok], ok)})["environments"][0]
    assert env["deployed"]["run_url"] is None and env["promotion"]["url"] is None


def test_github_web_root_from_the_connection_host():
    assert view.github_web(None) == "https://github.com"
    assert view.github_web("https://api.github.com") == "https://github.com"
    assert view.github_web("https://ghe.example.org/api/v3/") == "https://ghe.example.org"
    assert view.github_web("ghe.example.org") == "https://ghe.example.org"


def test_summary_text_is_one_bounded_line():
    assert view.summary_text({"line": "all good", "drift": 0}) == "all good"
    assert view.summary_text("x" * 400).endswith("…") and len(view.summary_text("x" * 400)) == 300
    assert view.summary_text(None) == ""
