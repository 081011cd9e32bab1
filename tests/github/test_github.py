"""hubflow.clients.github against the emulator: heads, merged PRs, statuses, the promotion PR, merges, comments,
retries."""
from __future__ import annotations

import socket
import time

import pytest
from github import Auth

from hubflow.airflow import hooks
from hubflow.clients.github import GitHub, GitHubError, NotMergeable, make_client

PULLS = "/repos/datahub/datahub/pulls"


def test_branch_head_follows_each_environment_branch(gh, emulator):
    assert gh.branch_head("staging") == emulator.head("staging") == gh.branch_head("prod")
    pr = emulator.merge_feature("Add pandas", {"images/primary/environment.yml": "pandas\n"})
    assert gh.branch_head("staging") == pr["merge_commit_sha"]
    assert gh.branch_head("prod") != pr["merge_commit_sha"]


def test_unknown_environment_or_branch_is_a_clear_error(gh, new_gh, settings):
    with pytest.raises(GitHubError, match="unknown environment 'qa'"):
        gh.branch_head("qa")
    bad = settings.model_copy(update={"environments": [settings.environments[0].model_copy(update={"branch": "gone"})]})
    with pytest.raises(GitHubError, match="branch 'gone'.*422: No commit found"):
        new_gh(bad).branch_head("staging")


@pytest.mark.parametrize("method", ["merge", "squash"])
def test_pull_behind_a_merge_or_squash_commit(gh, emulator, method):
    pr = emulator.merge_feature("Bump numpy", {"images/primary/environment.yml": "numpy=2.2\n"}, method=method,
                                author="ada", labels=("images",))
    pull = gh.pull_for(pr["merge_commit_sha"])
    assert (pull.number, pull.title, pull.author, pull.labels, pull.merged) == (pr["number"], "Bump numpy", "ada",
                                                                               ["images"], True)
    assert pull.url.endswith(f"/pull/{pr['number']}") and pull.base == "staging"
    assert gh.pull_for(emulator.push("staging", "direct fix", {"README.md": "x\n"})) is None


def test_merged_pulls_lists_what_prod_lacks_in_order(gh, emulator):
    a = emulator.merge_feature("A", {"deployments/datahub/config/common.yaml": "a: 1\n"})
    b = emulator.merge_feature("B", {"images/datascience/requirements.txt": "pandas\n"}, method="squash")
    emulator.push("staging", "direct commit", {"docs/index.md": "# docs\n"})
    c = emulator.merge_feature("C", {"hub/values.yaml": "c: 1\n"})
    before = len(emulator.requests_to("GET", "*/pulls"))
    pulls = gh.merged_pulls("prod", c["merge_commit_sha"])
    assert [p.number for p in pulls] == [a["number"], b["number"], c["number"]]
    # only the first-parent line is looked up (3 merges + 1 direct commit), not the feature branches' commits
    assert len(emulator.requests_to("GET", "*/pulls")) - before == 4
    assert [p.number for p in gh.merged_pulls(a["merge_commit_sha"], c["merge_commit_sha"])] == [b["number"],
                                                                                                  c["number"]]


def test_commit_status_per_environment_context(gh, emulator):
    sha = emulator.head("staging")
    gh.set_status("staging", sha, "pending", "http://airflow/run/1", "deploying 4 hubs")
    gh.set_status("prod", sha, "failure", None, "line one\nline two " + "x" * 300)
    gh.set_status("staging", sha, "success", "http://airflow/run/1", "4 hubs verified")
    combined = emulator.combined_status(sha)
    by_context = {s["context"]: s for s in combined["statuses"]}
    assert by_context["hubflow/staging"]["state"] == "success"
    assert by_context["hubflow/staging"]["target_url"] == "http://airflow/run/1"
    prod = by_context["hubflow/prod"]
    assert prod["state"] == "failure" and prod["target_url"] is None
    assert len(prod["description"]) == 140 and prod["description"].startswith("line one line two xx")
    assert prod["description"].endswith("…")
    assert combined["state"] == "failure"
    with pytest.raises(GitHubError, match="'done' is not one of"):
        gh.set_status("staging", sha, "done", None, "")


def test_promotion_pr_is_created_then_updated_in_place(gh, emulator):
    a = emulator.merge_feature("Add a hub", {"deployments/physics/hubflow-hub.yaml": "images: [primary]\n"},
                               author="ada")
    pull = gh.ensure_promotion("staging", a["merge_commit_sha"], {"datahub smoke": "http://airflow/run/7"})
    assert (pull.base, pull.head, pull.state) == ("prod", "staging", "open")
    assert pull.labels == ["hubflow", "promotion"]
    pr = emulator.pulls[pull.number]
    assert pr["reviewers"] == ["alice", "bob"]
    assert f"`{a['merge_commit_sha']}`" in pr["body"]
    assert f"- #{a['number']} `Add a hub` (@ada)" in pr["body"]
    assert "[datahub smoke](http://airflow/run/7)" in pr["body"]

    b = emulator.merge_feature("Bump R", {"images/datascience/requirements.txt": "r\n"}, author="bo")
    again = gh.ensure_promotion("staging", b["merge_commit_sha"], {"run": "http://airflow/run/8"})
    assert again.number == pull.number
    assert [p for p in emulator.pulls.values() if p["state"] == "open"] == [emulator.pulls[pull.number]]
    body = emulator.pulls[pull.number]["body"]
    assert f"#{a['number']} `Add a hub`" in body and f"#{b['number']} `Bump R`" in body and "run/8" in body
    assert len(emulator.requests_to("POST", "*/labels")) == 1  # labels and reviewers are only added once
    assert len(emulator.requests_to("POST", "*/requested_reviewers")) == 1


def test_promotion_body_warns_when_the_source_moved_past_the_verified_revision(gh, emulator):
    a = emulator.merge_feature("A", {"hub/values.yaml": "a: 1\n"})
    emulator.merge_feature("B", {"hub/values.yaml": "b: 1\n"})
    pull = gh.ensure_promotion("staging", a["merge_commit_sha"], {})
    body = emulator.pulls[pull.number]["body"]
    assert "not verified yet" in body and "#1 `A`" in body and "#2 `B`" not in body
    with pytest.raises(NotMergeable, match="head moved"):
        gh.merge(pull.number, expected_head=a["merge_commit_sha"])
    assert emulator.pulls[pull.number]["merged"] is False


def test_no_promotion_pr_when_the_target_has_everything(gh, emulator):
    assert gh.ensure_promotion("staging", emulator.head("staging"), {}) is None
    with pytest.raises(GitHubError, match="'prod' is the last one"):
        gh.ensure_promotion("prod", emulator.head("prod"), {})


@pytest.mark.parametrize("after_effect", [False, True], ids=["502-before-creating", "502-after-creating"])
def test_502_on_pr_creation_then_success_gives_exactly_one_pr(gh, emulator, sleeps, after_effect):
    a = emulator.merge_feature("A", {"hub/values.yaml": "a: 1\n"})
    emulator.fail("POST", PULLS, status=502, after_effect=after_effect)
    pull = gh.ensure_promotion("staging", a["merge_commit_sha"], {})
    promotions = [p for p in emulator.pulls.values() if p["base"] == "prod"]
    assert [p["number"] for p in promotions] == [pull.number]
    assert sleeps == [1.0]
    # GitHub had already made the PR: the retry found it instead of creating it again
    assert len(emulator.requests_to("POST", PULLS)) == (1 if after_effect else 2)


def test_primary_rate_limit_is_waited_out_until_reset(gh, emulator, sleeps):
    emulator.rate_limit_next("GET", "*/commits/*", reset_in=40)
    assert gh.branch_head("staging") == emulator.head("staging")
    assert len(sleeps) == 1 and 35 <= sleeps[0] <= 42


def test_secondary_rate_limit_waits_for_retry_after(gh, emulator, sleeps):
    emulator.too_many("POST", "*/statuses/*", retry_after=7, times=2)
    gh.set_status("staging", emulator.head("staging"), "success", None, "ok")
    assert sleeps == [7.0, 7.0]
    assert emulator.combined_status(emulator.head("staging"))["state"] == "success"


def test_a_rate_limit_beyond_the_bound_fails_clearly(new_gh, emulator, sleeps):
    gh = new_gh(max_wait=600)
    emulator.rate_limit_next("GET", "*/commits/*", reset_in=3600)
    with pytest.raises(GitHubError, match="read the head of branch 'staging'.*403: API rate limit exceeded"):
        gh.branch_head("staging")
    assert sleeps == []


def test_persistent_5xx_gives_up_after_bounded_backoff(gh, emulator, sleeps):
    emulator.fail("GET", "*/commits/*", status=503, times=10)
    with pytest.raises(GitHubError, match="503.*gave up after 5 attempts"):
        gh.branch_head("staging")
    assert sleeps == [1.0, 2.0, 4.0, 8.0]


def test_a_hung_request_times_out_and_the_retry_does_not_duplicate(new_gh, emulator, sleeps):
    gh = new_gh(timeout=1)
    pr = emulator.merge_feature("A", {"hub/values.yaml": "a: 1\n"})
    emulator.hang("POST", "*/issues/*/comments", seconds=5, after_effect=True)
    started = time.monotonic()
    gh.comment(pr["number"], "staging:outcome", "deployed")
    assert time.monotonic() - started < 4
    assert [c["body"] for c in emulator.comments[pr["number"]]] == ["deployed\n\n<!-- hubflow:staging:outcome -->"]
    assert sleeps == [1.0]


def test_comment_is_found_by_its_marker_and_edited_in_place(gh, emulator):
    pr = emulator.merge_feature("A", {"hub/values.yaml": "a: 1\n"})
    url = gh.comment(pr["number"], "staging:abc", "Deploying to staging")
    assert gh.comment(pr["number"], "staging:abc", "Deployed to staging: 4 hubs verified") == url
    gh.comment(pr["number"], "prod:abc", "Deployed to prod")
    bodies = [c["body"] for c in emulator.comments[pr["number"]]]
    assert bodies == ["Deployed to staging: 4 hubs verified\n\n<!-- hubflow:staging:abc -->",
                      "Deployed to prod\n\n<!-- hubflow:prod:abc -->"]
    with pytest.raises(GitHubError, match="comment key"):
        gh.comment(pr["number"], "x --> <script>", "no")


def test_merge_only_when_github_says_mergeable(gh, emulator, sleeps):
    a = emulator.merge_feature("A", {"hub/values.yaml": "a: 1\n"})
    pull = gh.ensure_promotion("staging", a["merge_commit_sha"], {})
    prod = emulator.head("prod")
    emulator.mergeable_unknown = 2
    sha = gh.merge(pull.number, expected_head=a["merge_commit_sha"])
    assert sleeps == [1.0, 2.0]  # GitHub was still computing mergeability twice
    assert emulator.head("prod") == sha and emulator.pulls[pull.number]["merged"]
    assert emulator._git("rev-list", "--parents", "-n1", sha).split()[1:] == [prod, a["merge_commit_sha"]]
    assert gh.merge(pull.number) == sha  # a retried merge returns the merge it already made
    assert len(emulator.requests_to("PUT", "*/merge")) == 1


def test_mergeability_is_read_a_bounded_number_of_times(gh, emulator, sleeps):
    a = emulator.merge_feature("A", {"hub/values.yaml": "a: 1\n"})
    pull = gh.ensure_promotion("staging", a["merge_commit_sha"], {})
    emulator.mergeable_unknown = 10
    with pytest.raises(NotMergeable, match="did not say whether it is mergeable after 5 reads"):
        gh.merge(pull.number)
    assert sleeps == [1.0, 2.0, 4.0, 8.0]  # no wait after the last read
    assert emulator.requests_to("PUT", "*/merge") == []


def test_a_conflicting_pr_is_not_merged(gh, emulator):
    emulator.push("prod", "hotfix on prod", {"hub/values.yaml": "prod: hotfix\n"})
    a = emulator.merge_feature("A", {"hub/values.yaml": "staging: change\n"})
    pull = gh.ensure_promotion("staging", a["merge_commit_sha"], {})
    prod = emulator.head("prod")
    with pytest.raises(NotMergeable, match="not mergeable: GitHub says 'dirty'"):
        gh.merge(pull.number)
    assert emulator.head("prod") == prod and emulator.requests_to("PUT", "*/merge") == []


def test_the_hook_builds_the_client_from_the_airflow_connection(settings, github_conn, emulator):
    conn_settings = settings.model_copy(update={
        "repository": settings.repository.model_copy(update={"github_conn_id": github_conn})})
    gh = hooks.github(conn_settings)
    assert gh.branch_head("prod") == emulator.head("prod")
    assert emulator.requests[-1].headers["authorization"] == f"token {emulator.token}"
    emulator.fail("GET", "*/commits/*", status=502)  # PyGithub's own retry is off: ours waits and counts
    waits = []
    assert hooks.github(conn_settings, sleep=waits.append).branch_head("prod") == emulator.head("prod")
    assert waits == [1.0]


@pytest.mark.parametrize("status, message", [(429, "Too Many Requests"),
                                             (403, "You have exceeded a secondary rate limit")])
def test_a_secondary_rate_limit_without_a_hint_waits_a_minute(gh, emulator, sleeps, status, message):
    emulator.fail("POST", "*/statuses/*", status=status, message=message)
    gh.set_status("staging", emulator.head("staging"), "success", None, "ok")
    assert sleeps == [60.0]
    assert emulator.combined_status(emulator.head("staging"))["state"] == "success"


def test_the_total_wait_is_bounded_across_attempts(new_gh, emulator, sleeps):
    gh = new_gh(max_wait=10)
    emulator.too_many("POST", "*/statuses/*", retry_after=7, times=2)
    with pytest.raises(GitHubError, match=r"set status hubflow/staging=success on \w+ in datahub/datahub: GitHub "
                                          r"answered 429: You have exceeded .*\(gave up after 2 attempts, 7s of "
                                          r"waiting\)"):
        gh.set_status("staging", emulator.head("staging"), "success", None, "ok")
    assert sleeps == [7.0] and emulator.statuses == {}


def test_a_refused_connection_is_retried_with_backoff_then_named(settings, sleeps):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    gh = GitHub(settings, make_client(Auth.Token("t"), url, 1), sleep=sleeps.append)
    with pytest.raises(GitHubError, match=r"read the head of branch 'staging'.*ConnectionError.*gave up after 5"):
        gh.branch_head("staging")
    assert sleeps == [1.0, 2.0, 4.0, 8.0]


def test_a_403_without_rate_limit_is_a_permission_problem_and_not_retried(gh, emulator, sleeps):
    emulator.fail("POST", "*/statuses/*", status=403, message="Resource not accessible by integration")
    with pytest.raises(GitHubError, match="set status hubflow/staging=success .*403: Resource not accessible"):
        gh.set_status("staging", emulator.head("staging"), "success", None, "ok")
    assert sleeps == [] and emulator.statuses == {}


def test_pr_titles_in_pr_bodies_are_code_spans_and_plain_in_the_commit_message(gh, emulator):
    title = "Fix `x` </script> **bold** {{ 7*7 }} @channel"
    good = emulator.head("staging")
    pr = emulator.merge_feature(title, {"hub/values.yaml": "a: 1\n"}, author="ada")
    promotion = gh.ensure_promotion("staging", pr["merge_commit_sha"], {})
    assert f"- #{pr['number']} ``{title}`` (@ada)" in emulator.pulls[promotion.number]["body"]
    revert = gh.revert("staging", good, pr["merge_commit_sha"], "failed")
    assert f"- #{pr['number']} ``{title}`` (@ada)" in emulator.pulls[revert.pull.number]["body"]
    message = emulator._git("log", "-n1", "--format=%B", emulator.head(revert.branch))
    assert f"- #{pr['number']} {title} (@ada)" in message
