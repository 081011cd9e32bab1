"""hubflow_pr_preview end to end (dag.test over the GitHub emulator, the real bare repository and the ledger): one
comment per PR, updated in place, untouched when nothing changed. No cluster, registry or hub: a preview needs none."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import yaml

from sandbox.world import Deployment
from tests.e2e.conftest import Sandbox, states

DAG_ID = "hubflow_pr_preview"
PRIMARY_ENV = "images/primary/environment.yml"


class NoCluster:
    """What a Deployment reads of a cluster, for DAGs that reach none."""

    k8s = None
    registry = SimpleNamespace(host="127.0.0.1:5000")
    hub = SimpleNamespace(url="http://127.0.0.1:9/{hub}")

    def connections(self) -> dict[str, str]:
        return {}


@pytest.fixture
def box(tmp_path, monkeypatch, capfd, caplog):
    deployment = Deployment(tmp_path, NoCluster())
    for key, value in deployment.environment().items():
        monkeypatch.setenv(key, value)
    yield Sandbox(deployment, capfd, caplog)
    deployment.stop()


def run(box, **conf):
    return box.run_dag(DAG_ID, **conf)


def open_pr(box, branch: str, title: str, files: dict[str, str | None]) -> int:
    box.github.push(branch, title, files, parent=box.github.head("staging"))
    return box.github.open_pull(branch, "staging", title)["number"]


def comments(box, number: int) -> list[str]:
    return [c["body"] for c in box.github.comments.get(number, [])]


def writes(box) -> int:
    """Comment writes GitHub received (new comments and edits)."""
    return len(box.github.requests_to("POST", "*/issues/*/comments") + box.github.requests_to("PATCH", "*/comments/*"))


def test_one_comment_per_pr_kept_up_to_date_and_left_alone_when_nothing_changed(box):
    n = open_pr(box, "feature/numpy", "Bump numpy `$(x)`", {
        PRIMARY_ENV: "name: primary\ndependencies:\n  - python=3.12\n  - numpy=2.2.0\n"})
    dag_run = run(box, pull=n)
    assert dag_run.state == "success", states(dag_run)
    (body,) = comments(box, n)
    assert "merging #" in body and "`staging`" in body
    assert "`primary` `127.0.0.1:5000/datahub/primary:" in body and "**rebuilt**" in body
    hubs = {line.split("`")[1]: line for line in body.splitlines() if line.startswith("- `") and "smoke test" in line}
    assert set(hubs) == {"datahub", "data8"}  # the two hubs of image primary; biology and rhub are untouched
    assert "`numpy==2.2.0.*`" in hubs["datahub"] and "`requests`" in hubs["datahub"]  # changed + always-check
    assert "staging is not frozen" in body and "No held revision" in body
    assert box.github.head("feature/numpy") in body  # the hidden data: the head it describes

    box.github.push("feature/numpy", "Biology memory", {"deployments/biology/config/common.yaml": "a: 1\n"})
    before = writes(box)
    assert run(box, pull=n).state == "success"
    (updated,) = comments(box, n)  # the same comment, edited in place
    assert updated != body and "`biology`" in updated and box.github.head("feature/numpy") in updated
    assert len(box.github.requests_to("PATCH", "*/comments/*")) == 1 and writes(box) == before + 1

    before = writes(box)
    assert run(box, pull=n).state == "success"  # the webhook again, nothing changed: read, not written
    assert run(box).state == "success"  # the schedule: its comment describes its head, nothing to do
    assert writes(box) == before and comments(box, n) == [updated]
    assert f"#{n}: unchanged" in box.log and "0 PR(s) to preview" in box.log


def test_scheduled_run_previews_every_stale_pr_and_a_broken_fleet_names_its_problems(box):
    good = open_pr(box, "feature/data8", "Tune data8", {"deployments/data8/config/common.yaml": "cpu: 2\n"})
    broken = open_pr(box, "feature/broken", "New image for biology", {
        "deployments/biology/hubflow-hub.yaml": "images: [nosuchimage]\n"})
    dag_run = run(box)
    assert dag_run.state == "success", states(dag_run)
    (ok,) = comments(box, good)
    assert "`data8`" in ok and "Nothing to deploy" not in ok
    (bad,) = comments(box, broken)
    assert "does not validate" in bad and "nosuchimage" in bad
    assert "the merge" in bad  # not the sha of a merge commit nobody can see
    # the staging branch moves: every preview describes another base now
    box.github.merge_feature("Docs", {"docs/index.md": "# new\n"})
    assert run(box).state == "success"
    assert "2 PR(s) to preview" in box.log


def test_a_head_only_github_keeps_is_fetched_by_sha_and_one_that_is_gone_is_said(box):
    n = open_pr(box, "feature/fork", "From a fork", {"deployments/rhub/config/common.yaml": "r: 1\n"})
    sha = box.github.head("feature/fork")
    box.github._git("update-ref", f"refs/pull/{n}/head", sha)  # where GitHub keeps a fork's head
    box.github._git("update-ref", "-d", "refs/heads/feature/fork")
    box.github.pulls[n]["head_sha"] = sha
    assert run(box, pull=n).state == "success"
    (body,) = comments(box, n)
    assert "`rhub`" in body and sha[:12] in body

    box.github.pulls[n]["head_sha"] = "1" * 40
    assert run(box, pull=n).state == "success"
    (body,) = comments(box, n)
    assert "could not be fetched" in body and "not checked" in body


def test_frozen_environment_and_held_revision_are_in_the_comment(box):
    n = open_pr(box, "feature/held", "Carries a bad commit", {"deployments/data8/config/common.yaml": "x: 1\n"})
    box.ledger().hold(box.github.head("feature/held"), "staging", "verification failed: hub data8")
    now = dt.datetime.now(dt.timezone.utc)
    data = yaml.safe_load(box.settings_file.read_text())
    data["environments"][0]["freeze_windows"] = [{"start": (now - dt.timedelta(hours=1)).isoformat(),
                                                  "end": (now + dt.timedelta(hours=1)).isoformat(),
                                                  "reason": "exam week"}]
    box.settings_file.write_text(yaml.safe_dump(data))
    assert run(box, pull=n).state == "success"
    (body,) = comments(box, n)
    assert "staging is frozen" in body and "exam week" in body
    assert "carries a held revision" in body and "verification failed: hub data8" in body


def test_unknown_conf_key_is_refused(box):
    n = open_pr(box, "feature/x", "x", {"deployments/data8/config/common.yaml": "x: 2\n"})
    dag_run = run(box, pull=n, pul=n)
    assert dag_run.state == "failed"
    assert states(dag_run)["pulls"] == "failed" and "unknown parameter(s) 'pul'" in box.log
    assert comments(box, n) == []


def test_a_pr_that_conflicts_with_its_branch_says_so_and_is_planned_from_its_merge_base(box):
    n = open_pr(box, "feature/conflict", "data8 cpu", {"deployments/data8/config/common.yaml": "cpu: 2\n"})
    box.github.merge_feature("data8 cpu too", {"deployments/data8/config/common.yaml": "cpu: 4\n"})
    assert run(box, pull=n).state == "success"
    (body,) = comments(box, n)
    assert "conflicts with `staging`" in body and "`deployments/data8/config/common.yaml`" in body
    assert "- `data8`" in body  # its own change, planned from where it left staging
