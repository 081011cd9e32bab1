"""The nightly verification's decisions (hubflow.core.nightly, no Airflow) and GitHub's one issue per environment."""
from __future__ import annotations

import datetime as dt

import pytest
from github import Auth

from hubflow.clients import github
from hubflow.core import nightly
from hubflow.core.fleet import Hub
from hubflow.core.settings import Timeouts, load_settings
from sandbox.github_emulator import GitHubEmulator
from sandbox.sample_repo import make_sample_repo

NOW = dt.datetime(2026, 11, 10, 7, 0, tzinfo=dt.timezone.utc)
HEAD, OLD = "c" * 40, "b" * 40
SOPS = {"jupyterhub": {"hub": {"config": {"Auth": {"client_secret": "ENC[AES256_GCM,data:x]"}}}},
        "sops": {"version": "3.9.0"}}
COMMON = {"jupyterhub": {"custom": {"hub": "datahub"}, "singleuser": {"memory": 2.0}}}
IMAGES = {"jupyterhub.singleuser.image": ("reg/datahub/primary", "abc123def456")}


def expected(**changes):
    out = {"chart_version": "0.1.0", "values_digest": "sha256:1", "revision": HEAD,
           "images": {"jupyterhub.singleuser.image": {"name": "reg/datahub/primary", "tag": "abc123def456"}}}
    return dict(out, **changes)


def running(**changes):
    return {**expected(), "env": "staging", "description": f"hubflow staging {HEAD}", **changes}


# ---------------------------------------------------------------- values


def test_the_release_config_matches_what_hubflow_passes_whatever_the_secrets_decrypt_to():
    values, hidden = nightly.expected_values([COMMON, SOPS], IMAGES)
    assert hidden == ["jupyterhub.hub.config.Auth.client_secret"]
    assert values["jupyterhub"]["singleuser"]["image"] == {"name": "reg/datahub/primary", "tag": "abc123def456"}
    helm_config = {"jupyterhub": {"custom": {"hub": "datahub"}, "hub": {"config": {"Auth": {"client_secret": "s3"}}},
                                  "singleuser": {"memory": 2, "image": {"name": "reg/datahub/primary",
                                                                        "tag": "abc123def456"}}}}
    assert nightly.values_digest(helm_config, hidden) == nightly.values_digest(values)
    helm_config["jupyterhub"]["custom"]["by_hand"] = True  # a manual `helm upgrade --set`
    assert nightly.values_digest(helm_config, hidden) != nightly.values_digest(values)


def test_a_plain_file_after_a_sops_file_is_compared_again_and_later_files_win():
    override = {"jupyterhub": {"hub": {"config": {"Auth": {"client_secret": "plain"}}}, "custom": {"hub": "x"}}}
    values, hidden = nightly.expected_values([COMMON, SOPS, override], {})
    assert hidden == [] and values["jupyterhub"]["hub"]["config"]["Auth"]["client_secret"] == "plain"
    assert values["jupyterhub"]["custom"]["hub"] == "x"


def test_running_images_are_read_at_the_values_paths_of_the_fleet():
    hub = Hub(name="datahub", folder="deployments/datahub", images=[{"name": "primary"}])
    config = {"jupyterhub": {"singleuser": {"image": {"name": "reg/p", "tag": "t1"}}}}
    assert nightly.running_images(hub, config) == {"jupyterhub.singleuser.image": {"name": "reg/p", "tag": "t1"}}
    assert nightly.running_images(hub, {}) == {"jupyterhub.singleuser.image": {"name": None, "tag": None}}


# ---------------------------------------------------------------- drift and releases


def test_no_drift_when_the_release_runs_what_the_branch_says():
    assert nightly.drift_findings("staging", "staging", HEAD, expected(), running(), None) == []
    assert nightly.drift_findings("staging", "staging", HEAD, expected(), None, None) == []


def test_each_kind_of_drift_is_named():
    other = {"jupyterhub.singleuser.image": {"name": "reg/datahub/primary", "tag": "0ld0ld0ld0ld"}}
    found = nightly.drift_findings("staging", "staging", HEAD, expected(),
                                   running(chart_version="0.0.9", images=other, values_digest="sha256:2",
                                           revision=OLD), "deployments/datahub/config/common.yaml changed")
    details = [f.detail for f in found]
    assert details == [
        "chart 0.0.9, the branch says 0.1.0",
        "image jupyterhub.singleuser.image is reg/datahub/primary:0ld0ld0ld0ld, the branch says "
        "reg/datahub/primary:abc123def456",
        "values differ from the branch (sha256:2 vs sha256:1; sops-encrypted keys not compared)",
        f"runs {OLD[:12]}, behind staging {HEAD[:12]}: deployments/datahub/config/common.yaml changed"]
    assert all(f.problem and f.check == "drift" for f in found)


def test_a_release_not_made_by_hubflow_or_for_another_environment_or_off_the_branch_drifts():
    manual = nightly.drift_findings("prod", "prod", HEAD, expected(),
                                    running(revision=None, description="Upgrade complete"), None)
    assert [f.detail for f in manual] == ["not deployed by hubflow (release description 'Upgrade complete')"]
    wrong = nightly.drift_findings("prod", "prod", HEAD, expected(), running(), None)
    assert [f.detail for f in wrong] == ["deployed by hubflow for staging, not prod"]
    off = nightly.drift_findings("staging", "staging", HEAD, expected(), running(revision=OLD), "not on the branch")
    assert [f.detail for f in off] == [f"runs {OLD[:12]}, not on staging"]


@pytest.mark.parametrize("status, minutes, problem, text", [
    ("pending-upgrade", 31, True, "stuck in pending-upgrade at helm revision 5 since 2026-11-10T06:29+00:00 (31m), "
                                  "longer than the deploy timeout (1800s)"),
    ("pending-install", 10, False, "pending-install at helm revision 5 since 2026-11-10T06:50+00:00 (10m): a helm "
                                   "operation is running"),
    ("failed", 1000, True, "left failed at helm revision 5 (Upgrade \"x\" failed)"),
    ("deployed", 1000, None, None),
])
def test_stuck_and_failed_releases(status, minutes, problem, text):
    latest = {"status": status, "version": 5, "updated": NOW - dt.timedelta(minutes=minutes),
              "description": 'Upgrade "x" failed'}
    found = nightly.release_findings(latest, NOW, 1800)
    if text is None:
        assert found == []
    else:
        assert [(f.problem, f.detail) for f in found] == [(problem, text)] or found[0].detail.startswith(text)
    assert nightly.release_findings(None, NOW, 1800)[0].detail.startswith("not installed")


# ---------------------------------------------------------------- smoke, images, lag, deploys


def check(name, status, detail=""):
    return {"name": name, "status": status, "detail": detail}


def test_smoke_results_become_a_state_and_findings():
    assert nightly.smoke_findings(None) == ("skipped", [])
    ok = {"ok": True, "checks": [check("leftovers", "passed", "removed 1: hubflow-smoke-1")]}
    state, found = nightly.smoke_findings(ok)
    assert state == "passed" and [(f.check, f.problem) for f in found] == [("leftovers", False)]
    bad = {"ok": False, "blame": "revision", "tries": 2,
           "checks": [check("packages", "failed", "missing: nope"), check("cleanup", "failed", "user stays")]}
    state, found = nightly.smoke_findings(bad)
    assert state == "failed"
    assert [(f.check, f.detail) for f in found] == [
        ("smoke", "packages: missing: nope; cleanup: user stays (tried 2 times)"),
        ("leftovers", "smoke users may be left behind: user stays")]
    platform = nightly.smoke_findings({"ok": False, "blame": "platform", "checks": [], "error": "no token"})
    assert platform[1][0].detail == "no token [platform]"


def test_images_missing_or_changed_since_verification():
    found = nightly.image_findings([
        {"ref": "r/a:1", "digest": None, "verified": "sha256:a"},
        {"ref": "r/b:1", "digest": "sha256:b", "verified": "sha256:b"},
        {"ref": "r/c:1", "digest": "sha256:new", "verified": "sha256:old"},
        {"ref": "r/d:1", "digest": "sha256:d", "verified": None}])
    assert [(f.problem, f.detail) for f in found] == [
        (True, "r/a:1 is not in the registry"), (True, "r/c:1 is sha256:new, sha256:old was verified"),
        (False, "r/d:1: no verified digest recorded")]


def test_the_verified_digest_is_the_newest_one_recorded_for_that_tag():
    records = [{"plan": {"images": [{"name": "primary", "tag": "t2"}]}, "digests": {"primary": "sha256:2"}},
               {"plan": {"images": [{"name": "primary", "tag": "t1"}]}, "digests": {"primary": "sha256:1"}},
               {"digests": {"primary": "sha256:0", "datascience": "sha256:d"}}]  # a baseline: no plan
    digests = nightly.verified_digests(records)
    assert nightly.verified_digest(digests, "primary", "t1") == "sha256:1"
    assert nightly.verified_digest(digests, "primary", "t9") == "sha256:0"
    assert nightly.verified_digest(digests, "datascience", "x") == "sha256:d"
    assert nightly.verified_digest(digests, "other", "x") is None


def test_promotion_lag_counts_from_the_oldest_verified_revision_the_target_lacks():
    verified = [("b" * 40, NOW - dt.timedelta(days=2)), ("a" * 40, NOW - dt.timedelta(days=8))]
    (lag,) = nightly.promotion_lag("staging", "prod", verified, set(), NOW)
    assert lag.detail == f"staging revision {'a' * 12}, verified 8d ago, is not in prod (more than 7 days)"
    assert nightly.promotion_lag("staging", "prod", verified, {"a" * 40}, NOW) == []
    assert nightly.promotion_lag("staging", "prod", [], set(), NOW) == []


def test_a_running_deploy_is_waited_for_unless_it_was_abandoned():
    window = nightly.deploy_window(Timeouts())
    assert window == 3600 + 600 + 1800 + 900  # build, pod startup, helm, the verification (its spawns included)
    young = {"outcome": "running", "started_at": NOW - dt.timedelta(minutes=5), "run_id": "r", "revision": HEAD}
    old = dict(young, started_at=NOW - dt.timedelta(seconds=window + 1))
    # Airflow could not be asked: the ledger's age decides, as before
    assert nightly.deploy_running([young], None, NOW, window) == young
    assert nightly.deploy_running([old, dict(young, outcome="success")], None, NOW, window) is None
    assert nightly.overlapping([young], NOW - dt.timedelta(minutes=10)) == young
    assert nightly.overlapping([young], NOW) is None


def test_airflow_says_whether_a_deploy_runs_not_the_ledgers_age():
    window = nightly.deploy_window(Timeouts())
    long_wave = {"outcome": "running", "started_at": NOW - dt.timedelta(seconds=2 * window), "run_id": "wave",
                 "revision": HEAD, "finished_at": None}
    young = dict(long_wave, started_at=NOW - dt.timedelta(minutes=5), run_id="young")
    live = nightly.DeployRuns(live=1, states={"wave": "running"})
    # a long wave Airflow says is running is waited for, however old its attempt
    assert nightly.deploy_running([long_wave], live, NOW, window) == dict(long_wave, state="running")
    assert nightly.abandoned([long_wave], live) == []
    assert "Airflow says its run is running" in nightly.waiting_line("staging", dict(long_wave, state="running"))
    # a young attempt whose run Airflow says has failed is abandoned: not waited for, and reported
    ended = nightly.DeployRuns(live=0, states={"young": "failed"})
    assert nightly.deploy_running([young], ended, NOW, window) is None
    (gone,) = nightly.abandoned([young, dict(young, outcome="success", run_id="x")], ended)
    assert gone["state"] == "failed"
    note = nightly.abandoned_finding(gone)
    assert note.check == "deploy" and not note.problem
    assert note.detail.startswith(f"abandoned attempt: the ledger still has the deploy of {HEAD[:12]} (run young")
    assert "Airflow says that run ended (failed)" in note.detail
    # a run Airflow does not know at all (cleaned from its database, or a hand-made attempt): abandoned
    unknown = nightly.DeployRuns(live=0, states={"young": None})
    assert nightly.deploy_running([young], unknown, NOW, window) is None
    assert "Airflow has no such run" in nightly.abandoned_finding(nightly.abandoned([young], unknown)[0]).detail
    # a run queued or running that has not opened its ledger attempt yet (resolving, or queued behind another)
    waiting = nightly.deploy_running([young], nightly.DeployRuns(live=1, states={"young": "failed"}), NOW, window)
    assert waiting == {"run_id": None, "revision": None, "started_at": None, "state": "queued or running"}
    assert nightly.waiting_line("prod", waiting) == \
        "a deploy run of prod is queued or running in Airflow (no ledger attempt yet): waiting"
    assert nightly.deploy_running([], nightly.DeployRuns(0, {}), NOW, window) is None
    # the nightly waits a few deploy windows for live runs (waves add up), then ends saying it could not check
    assert nightly.wait_seconds(Timeouts()) == nightly.WAIT_WINDOWS * window
    assert nightly.not_checked("staging", dict(long_wave, state="running"), nightly.wait_seconds(Timeouts())) == (
        f"staging was not checked: a deploy of it still runs (run wave, revision {HEAD[:12]}) after the nightly "
        "waited 5h45m for it (see wait_for_deploys); nothing was checked, so nothing it changes is reported as drift")
    assert "not opened its ledger attempt" in nightly.not_checked("staging", waiting, 60)
    assert "could not be read (see inventory)" in nightly.not_checked("staging", None, 60)


def test_a_deploy_that_ran_during_the_checks_is_told_by_airflow_not_by_the_attempts_age():
    since = NOW - dt.timedelta(minutes=30)
    window = nightly.deploy_window(Timeouts())
    before = {"outcome": "running", "started_at": since - dt.timedelta(seconds=1), "run_id": "r", "revision": HEAD,
              "finished_at": None}
    # started just before the checks (after the wait), still running in Airflow: it ran during them
    assert nightly.overlapping([before], since, nightly.DeployRuns(1, {"r": "running"}), NOW, window) == before
    # left running by a run that has ended: abandoned, not an overlap (the ledger's age alone would have said so)
    assert nightly.overlapping([before], since, nightly.DeployRuns(0, {"r": "failed"}), NOW, window) is None
    assert nightly.overlapping([before], since, None, NOW, window) == before
    old = dict(before, started_at=NOW - dt.timedelta(seconds=window + 1))
    assert nightly.overlapping([old], since, None, NOW, window) is None
    # one that ended during the checks ran during them
    done = dict(before, outcome="success", finished_at=since + dt.timedelta(minutes=1))
    assert nightly.overlapping([done], since, nightly.DeployRuns(0, {}), NOW, window) == done
    assert nightly.overlapping([dict(done, finished_at=since - dt.timedelta(seconds=1))], since,
                               nightly.DeployRuns(0, {}), NOW, window) is None
    # a run without its attempt yet changed nothing: hubflow opens the attempt before any pod
    assert nightly.overlapping([], since, nightly.DeployRuns(1, {}), NOW, window) is None


# ---------------------------------------------------------------- the summary and its texts


def summary(rows, findings=(), **kw):
    return nightly.summarize("staging", HEAD, rows, list(findings), NOW, **kw)


def test_summary_issue_and_slack_say_the_same():
    bad = nightly.HubRow("biology", "failed", "deployed v3", HEAD,
                         [nightly.Finding("smoke", "packages: missing `x` <!here>")])
    s = summary([nightly.HubRow("datahub", "passed", "deployed v3", HEAD), bad],
                [nightly.Finding("image", "r/d:1: no verified digest recorded", problem=False)])
    assert not s["ok"] and s["problems"] == 1 and nightly.issue_action(s) == "ensure"
    table = nightly.format_table(s)
    assert "nightly staging at cccccccccccc: 1 problem(s)" in table and "(note) image" in table
    body = nightly.issue_body(s, "http://airflow/run")
    assert "| biology | failed | `deployed v3` |" in body and "``packages: missing `x` <!here>``" in body
    text = nightly.slack_text(s, "http://airflow/run", "http://gh/issues/1")
    assert text.splitlines()[0] == ":x: hubflow nightly staging: 1 problem(s)"
    assert "&lt;!here&gt;" in text and "<http://gh/issues/1|issue>" in text


def test_only_a_complete_green_run_closes_and_a_discarded_one_leaves_the_issue():
    green = [nightly.HubRow("datahub", "passed", "deployed v3", HEAD)]
    assert nightly.issue_action(summary(green)) == "close"
    assert nightly.issue_action(summary(green, partial=True)) == "leave"
    overlapped = summary([nightly.HubRow("x", "failed", "-", None, [nightly.Finding("smoke", "down")])],
                         overlapped={"run_id": "deploy-1", "revision": OLD})
    assert nightly.issue_action(overlapped) == "leave"
    assert "results discarded" in nightly.slack_text(overlapped, "u", None)
    assert "DISCARDED" in nightly.format_table(overlapped)


# ---------------------------------------------------------------- GitHub: one issue per environment


@pytest.fixture
def gh(tmp_path):
    make_sample_repo(tmp_path / "work", bare=tmp_path / "origin.git")
    with GitHubEmulator(tmp_path / "origin.git") as em:
        yield em, github.GitHub(load_settings(), github.make_client(Auth.Token(em.token), em.url, 5),
                                sleep=lambda s: None)


def test_the_issue_is_opened_updated_closed_and_reopened_never_duplicated(gh):
    em, client = gh
    labels = [nightly.ISSUE_LABEL, "hubflow"]
    assert client.close_issue("nightly-staging", nightly.ISSUE_LABEL, "green") is None
    assert client.ensure_issue("nightly-staging", "t", "one", labels)["action"] == "opened"
    em.fail("GET", "/repos/datahub/datahub/issues", status=502)  # one blip: retried whole, nothing duplicated
    assert client.ensure_issue("nightly-staging", "t", "two", labels)["action"] == "updated"
    assert client.ensure_issue("nightly-staging", "t", "two", labels)["action"] == "unchanged"
    assert client.ensure_issue("nightly-prod", "t", "prod", labels)["number"] != 1
    assert client.close_issue("nightly-staging", nightly.ISSUE_LABEL, "green")["action"] == "closed"
    assert client.ensure_issue("nightly-staging", "t", "three", labels)["action"] == "reopened"
    staging = [i for i in em.issues.values() if "<!-- hubflow:nightly-staging -->" in i["body"]]
    assert len(staging) == 1 and staging[0]["state"] == "open" and staging[0]["body"].startswith("three")
    assert [c["body"] for c in em.comments[staging[0]["number"]]] == [
        "green", "The problems are back: reopened by hubflow."]


def test_the_summary_says_itself_in_one_line_for_the_page():
    import datetime as dt

    from hubflow.core.nightly import Finding, HubRow, summarize

    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    green = summarize("prod", "a" * 40, [HubRow("datahub", "passed"), HubRow("data8", "passed")], [], now)
    assert green["line"] == "all 2 hub(s) ok"
    bad = summarize("prod", "a" * 40, [HubRow("datahub", "failed", findings=[Finding("smoke", "kernel: died")])],
                    [Finding("lag", "a verified revision waits 9 days"), Finding("leftovers", "none", False)], now)
    assert bad["line"] == ("2 problem(s): datahub: smoke: kernel: died; -: lag: a verified revision waits 9 days")
