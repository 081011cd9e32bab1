"""The nightly verification end to end (dag.test over the sandbox): helm's records in the Kubernetes emulator, the
real local hub, the real registry, the ledger, GitHub's issue and Slack."""
from __future__ import annotations

import datetime as dt

import requests
import sqlalchemy as sa
import yaml

from hubflow.clients.git import Repo
from hubflow.core.nightly import expected_values
from hubflow.core.plan import make_plan, read_fleet
from sandbox.k8s_emulator import helm_release_secret
from tests.e2e.conftest import states

ENVS = ["staging", "prod"]
FLEET = "hubflow-fleet.yaml"
MISSING = "hubflow-no-such-package"


def nightly(box, **conf):
    """One run of the nightly DAG, as the form or the REST API would start it; its log lands in `box.log`."""
    return box.run_dag("hubflow_nightly_verify", **conf)


def config(box, hub: str, revision: str, env: str = "staging") -> dict:
    """The values hubflow passes to helm for `hub` at `revision`, with the sops secret as helm stores it: decrypted."""
    repo = Repo(box.github.bare)
    h = read_fleet(repo, revision, FLEET, ENVS).hub(hub)
    tags = {i.name: i for i in make_plan(repo, None, revision, FLEET, ENVS).images}
    blobs = repo.read_blobs([f"{revision}:{f}" for f in h.values_files(env)])
    values, _ = expected_values([yaml.safe_load(b) for b in blobs.values()],
                                {r.values_path: (tags[r.name].repository, tags[r.name].tag) for r in h.images or []})
    values["jupyterhub"]["hub"]["config"]["GenericOAuthenticator"]["client_secret"] = "decrypted-secret"
    return values


def release(box, hub: str, version: int, status: str, values: dict, revision: str, env: str = "staging",
            updated: dt.datetime | None = None) -> None:
    """A release record written through the Kubernetes API the way helm writes it."""
    name = f"{hub}-{env}"
    stamp = updated.isoformat().replace("+00:00", "Z") if updated else None
    secret = helm_release_secret(name, name, version, status, values, description=f"hubflow {env} {revision}",
                                 last_deployed=stamp)
    r = requests.post(f"{box.k8s.url}/api/v1/namespaces/{name}/secrets", json=secret, timeout=10)
    assert r.status_code == 201, r.text


def issues(box) -> list[dict]:
    return [i for i in box.github.issues.values() if "hubflow-nightly" in i["labels"]]


def report(box, env: str = "staging") -> dict:
    return box.ledger().last_report("nightly", env)["summary"]


def rows(summary: dict) -> dict[str, dict]:
    return {h["hub"]: h for h in summary["hubs"]}


def test_problems_open_one_issue_that_is_updated_then_closed_when_all_is_green(sandbox):
    h0 = sandbox.baseline()
    h1 = sandbox.github.push("staging", "biology checks a package its image lacks", {
        "deployments/biology/hubflow-hub.yaml": f"images: [datascience]\nsmoke:\n  packages: [{MISSING}]\n"})
    release(sandbox, "datahub", 3, "deployed", config(sandbox, "datahub", h0), h0)  # h1 changed nothing of it
    release(sandbox, "biology", 3, "deployed", config(sandbox, "biology", h1), h1)
    drifted = config(sandbox, "data8", h0)
    drifted["jupyterhub"]["singleuser"]["image"]["tag"] = "0123abcd0123"
    release(sandbox, "data8", 3, "deployed", drifted, h0)
    release(sandbox, "rhub", 3, "deployed", config(sandbox, "rhub", h0), h0)
    release(sandbox, "rhub", 4, "pending-upgrade", config(sandbox, "rhub", h0), h1,
            updated=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))

    run = nightly(sandbox, environments=["staging"])
    assert run.state == "failed"
    s = states(run)
    summary = report(sandbox)
    order = [h["hub"] for h in summary["hubs"]]
    assert order == ["biology", "data8", "datahub", "rhub"]  # discovered: in path order
    assert [s[f"staging.verify[{i}]"] for i in range(4)] == ["failed", "success", "success", "success"]
    assert s["staging.report"] == "failed" and s["prod.report"] == "skipped"
    by = rows(summary)
    assert by["datahub"]["ok"] and by["datahub"]["smoke"] == "passed" and by["datahub"]["revision"] == h0
    assert not by["biology"]["ok"] and by["biology"]["smoke"] == "failed"
    detail = by["biology"]["findings"][0]["detail"]
    assert MISSING in detail and "tried 2 times" in detail
    data8 = " ".join(f["detail"] for f in by["data8"]["findings"])
    assert "0123abcd0123" in data8 and "values differ" in data8
    assert by["rhub"]["release"] == "pending-upgrade v4" and "stuck in pending-upgrade" in \
        by["rhub"]["findings"][0]["detail"]
    assert [f["detail"] for f in summary["findings"]] == [
        f"{sandbox.cluster.registry.host}/datahub/primary:0123abcd0123 is not in the registry"]
    assert "decrypted-secret" not in sandbox.log and "decrypted-secret" not in str(summary)
    assert "nightly staging at" in sandbox.log and "stuck in pending-upgrade" in sandbox.log
    (issue,) = issues(sandbox)
    assert issue["state"] == "open" and issue["title"] == "hubflow nightly: staging has problems"
    assert MISSING in issue["body"] and "0123abcd0123" in issue["body"] and "<!-- hubflow:nightly-staging -->" in \
        issue["body"]
    assert sandbox.slack[-1].startswith(":x: hubflow nightly staging: 4 problem(s)")
    assert f"/issues/{issue['number']}|issue>" in sandbox.slack[-1]

    # the stuck release is mended by hand; a quick run without smoke tests updates the same issue
    release(sandbox, "rhub", 5, "deployed", config(sandbox, "rhub", h0), h0)
    run = nightly(sandbox, environments=["staging"], smoke=False)
    assert run.state == "failed"
    (same,) = issues(sandbox)
    assert same["number"] == issue["number"] and same["state"] == "open"
    assert "stuck" not in same["body"] and "0123abcd0123" in same["body"]
    assert rows(report(sandbox))["biology"]["smoke"] == "skipped"

    # biology's fix merged and deployed, data8 redeployed: green, the issue is closed with a comment
    h2 = sandbox.github.push("staging", "biology checks only what its image has",
                             {"deployments/biology/hubflow-hub.yaml": "images: [datascience]\n"})
    release(sandbox, "biology", 4, "deployed", config(sandbox, "biology", h2), h2)
    release(sandbox, "data8", 4, "deployed", config(sandbox, "data8", h0), h0)
    run = nightly(sandbox, environments=["staging"])
    assert run.state == "success", states(run)
    (closed,) = issues(sandbox)
    assert closed["number"] == issue["number"] and closed["state"] == "closed"
    assert "green again" in sandbox.github.comments[issue["number"]][-1]["body"]
    assert report(sandbox)["ok"] and sandbox.slack[-1].startswith(":white_check_mark: hubflow nightly staging")


def test_prod_lagging_a_verified_staging_revision_and_a_missing_release(sandbox):
    h0 = sandbox.baseline()
    pr = sandbox.github.merge_feature("Tune data8", {"deployments/data8/config/common.yaml": "a: 1\n"})
    book = sandbox.ledger()
    attempt = book.start("staging", pr["merge_commit_sha"], h0, None, "deploy-1")
    book.finish(attempt, "success", "verified")
    with book.engine.begin() as c:  # verified nine days ago, never promoted
        c.execute(sa.text("UPDATE hubflow_attempts SET finished_at = :t WHERE id = :id"),
                  {"t": dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=9), "id": attempt})
    release(sandbox, "datahub", 2, "deployed", config(sandbox, "datahub", h0, "prod"), h0, "prod")
    run = nightly(sandbox, environments=["prod"], hubs=["datahub", "rhub"], smoke=False)
    assert run.state == "failed"
    summary = report(sandbox, "prod")
    assert rows(summary)["datahub"]["ok"] and rows(summary)["rhub"]["release"] == "not installed"
    (lag,) = [f for f in summary["findings"] if f["check"] == "lag"]
    assert lag["detail"].startswith(f"staging revision {pr['merge_commit_sha'][:12]}, verified 9d ago, is not in prod")
    (issue,) = issues(sandbox)
    assert issue["title"] == "hubflow nightly: prod has problems"


def test_a_deploy_during_the_checks_discards_them_and_unknown_params_are_refused(sandbox):
    h0 = sandbox.baseline()
    book = sandbox.ledger()
    later = book.start("staging", h0, h0, None, "deploy-during-the-night")
    book.finish(later, "success", "deployed")
    with book.engine.begin() as c:  # it starts while the nightly checks run
        c.execute(sa.text("UPDATE hubflow_attempts SET started_at = :t WHERE id = :id"),
                  {"t": dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5), "id": later})
    run = nightly(sandbox, environments=["staging"], hubs=["rhub"], smoke=False)
    assert run.state == "success", states(run)
    summary = report(sandbox)
    assert summary["overlapped"]["run_id"] == "deploy-during-the-night" and not summary["ok"]
    assert issues(sandbox) == [] and "results discarded" in sandbox.slack[-1]
    run = nightly(sandbox, hub=["rhub"])
    assert run.state == "failed" and states(run)["start"] == "failed"
    assert "unknown parameter(s) 'hub'" in sandbox.log
