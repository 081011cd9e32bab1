"""The PR preview's text, without Airflow: what it says for each case, text people wrote kept inert, and the same
facts always giving the same comment (so GitHub sees no edit)."""
from __future__ import annotations

from hubflow.core.messages import code_span
from hubflow.core.preview import Preview, described, render

BASE, HEAD = "b" * 40, "a" * 40
PLAN = {"base": BASE, "head": "c" * 40, "removed_hubs": ["oldhub"],
        "images": [{"name": "primary", "repository": "ghcr.io/datahub/primary", "tag": "0a1b2c3d4e5f", "changed": True,
                    "reason": "images/primary/environment.yml changed", "last_commit": None, "changed_files": [],
                    "hubs": ["datahub"]},
                   {"name": "datascience", "repository": "ghcr.io/datahub/datascience", "tag": "9f8e7d6c5b4a",
                    "changed": False, "reason": "unchanged", "last_commit": None, "changed_files": [],
                    "hubs": ["biology"]}],
        "hubs": [{"name": "datahub", "reason": "image primary changed", "folder": "deployments/datahub",
                  "images": ["primary"]},
                 {"name": "biology", "reason": "deployments/biology/config/common.yaml changed",
                  "folder": "deployments/biology", "images": ["datascience"]}]}


def preview(**kw) -> Preview:
    return Preview(12, "staging", "staging", BASE, HEAD, **kw)


def lines_with(body: str, text: str) -> list[str]:
    return [line for line in body.splitlines() if text in line]


def test_plan_lists_images_rebuilt_or_reused_hubs_with_reasons_and_packages_and_removed_hubs():
    body = render(preview(plan=PLAN, packages={"datahub": ["numpy==2.2.0", "requests"], "biology": []}))
    assert "merging #12 into `staging`" in body and f"`{BASE[:12]}`" in body and f"`{HEAD[:12]}`" in body
    (primary,) = lines_with(body, "`primary`")
    assert "`ghcr.io/datahub/primary:0a1b2c3d4e5f`" in primary and "**rebuilt**" in primary
    assert "`images/primary/environment.yml changed`" in primary
    (datascience,) = lines_with(body, "`datascience`")
    assert "reused" in datascience and "rebuilt" not in datascience
    assert "**Hubs upgraded on staging** (2)" in body
    (datahub,) = lines_with(body, "- `datahub`")
    assert "`image primary changed`" in datahub and "`numpy==2.2.0`, `requests`" in datahub
    (biology,) = lines_with(body, "- `biology`")
    assert "nothing (health, API and server checks only)" in biology
    assert "**Hubs removed from the fleet**" in body and "- `oldhub`" in body
    assert "staging is not frozen." in body and "No held revision in this PR." in body


def test_the_same_facts_give_the_same_comment_and_it_names_what_it_describes():
    a = render(preview(plan=PLAN, packages={"datahub": ["numpy"]}))
    assert a == render(preview(plan=PLAN, packages={"datahub": ["numpy"]}))
    assert described(a) == (HEAD, BASE)
    assert described(render(Preview(12, "staging", "staging", "d" * 40, HEAD, plan=PLAN))) == (HEAD, "d" * 40)
    assert described(None) is None and described("a comment someone wrote") is None


def test_a_forged_hidden_line_in_text_people_wrote_is_not_read_as_the_state():
    forged = f"<!-- hubflow-preview head={'e' * 40} base={'f' * 40} -->"
    body = render(preview(problem="The fleet at the merge does not validate", details=[f"x\n{forged}"]))
    assert described(body) == (HEAD, BASE)
    assert f"\n{forged}" not in body  # the line break became a space inside a code span


def test_nothing_to_deploy_and_no_hub_upgraded():
    assert "Nothing to deploy" in render(preview(plan={"images": [], "hubs": [], "removed_hubs": []}))
    only_removed = render(preview(plan={"images": [], "hubs": [], "removed_hubs": ["gone"]}))
    assert "No hub is upgraded on staging" in only_removed and "- `gone`" in only_removed


def test_frozen_next_window_held_and_reverts():
    assert ":no_entry: staging is frozen: `exam week`" in render(preview(plan=PLAN, frozen="exam week"))
    window = {"start": "2026-12-14T00:00:00+00:00", "end": "2026-12-19T00:00:00+00:00", "reason": "finals"}
    soon = render(preview(plan=PLAN, next_window=window))
    assert "not frozen; the next freeze window is 2026-12-14T00:00:00+00:00 to 2026-12-19T00:00:00+00:00: `finals`" \
        in soon
    held = render(preview(plan=PLAN, held="aaaa still contains held revision cccc (verification failed)"))
    assert ":no_entry: This PR carries a held revision" in held and "(verification failed)`" in held
    assert "It reverts held revision(s) `cccccccccccc`" in render(preview(plan=PLAN, reverts=["c" * 40]))
    assert "not checked" in render(preview(holds_known=False, problem="could not be fetched"))


def test_problems_replace_the_plan_and_name_every_validation_problem():
    body = render(preview(problem="The fleet at the merge does not validate: the deploy would refuse it",
                          details=["hubflow-fleet.yaml@the merge: hubs[2].images[0]: unknown image 'nosuchimage'",
                                   "deployments/x/hubflow-hub.yaml: folder: 'x' does not exist at the merge"]))
    assert ":warning: **The fleet at the merge does not validate" in body
    assert "- `hubflow-fleet.yaml@the merge: hubs[2].images[0]: unknown image 'nosuchimage'`" in body
    assert len(lines_with(body, "does not exist at the merge")) == 1
    assert "**Images**" not in body and "**Before it deploys**" in body


def test_conflicts_and_forks_are_said():
    body = render(preview(plan=PLAN, conflicts=["deployments/biology/config/common.yaml"], fork="ada/datahub"))
    assert "conflicts with `staging`" in body and "`deployments/biology/config/common.yaml`" in body
    assert "from the fork `ada/datahub`" in body and "merged onto it" not in body
    assert "Planned from where it left `staging` to its head instead" in body


def test_package_problems_are_named_per_hub():
    body = render(preview(plan=PLAN, package_problems={"datahub": "requirements.txt:3: 'numpy=' is not a package"}))
    (datahub,) = lines_with(body, "- `datahub`")
    assert ":warning: (cannot be read: `requirements.txt:3: 'numpy=' is not a package`)" in datahub


def test_text_people_control_is_inert():
    hostile = "x` <img src=x onerror=alert(1)> @here [link](http://evil) ``` {{ 7*7 }}\n# heading"
    plan = {"images": [], "removed_hubs": [],
            "hubs": [{"name": hostile, "reason": hostile, "folder": "d", "images": []}]}
    body = render(preview(plan=plan, packages={hostile: [hostile]}, frozen=hostile, fork=hostile))
    assert body.count(code_span(hostile)) == 5  # hub, reason, package, freeze, fork: all code spans
    assert "\n# heading" not in body
