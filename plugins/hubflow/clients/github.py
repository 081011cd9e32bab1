"""GitHub for hubflow: branch heads, merged PRs, commit statuses, the promotion PR, reverts and comments.

One home for GitHub. Everything goes through PyGithub (a client from `make_client`; hubflow.airflow.hooks builds it
from the Airflow GitHub connection at run time, never at import), except the revert commit itself, which is real
git (hubflow.clients.revert).
The same code runs in plain Python against sandbox/github_emulator.py.

Retries (hubflow.clients.retry, the one policy, in `GitHub.call`; `transient` says what, `rate_limit_wait` how
long): transient failures (5xx, timeouts, dropped connections) are retried with exponential backoff; rate limits
(403/429) wait for Retry-After or X-RateLimit-Reset; a plain 403 is not retried; every wait is bounded (`attempts`,
and `max_wait`: the seconds of waiting in all) and goes through an injectable `sleep`. PyGithub's own urllib3 retry
is switched off so that a retry is always a whole operation: every effect is looked up before it is made, so a
retry (ours, or Airflow's task retry) never duplicates it:
the promotion PR is found by head/base, the revert by its branch name, a comment by a hidden marker.
What it writes (PR bodies, the revert's texts, markers) comes from hubflow.core.texts; which commits make a range a
revert, from hubflow.core.reverts.

No Airflow import here.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, TypeVar
from urllib.parse import quote

import requests
from github import Github, GithubException
from github.PullRequest import PullRequest

from hubflow.clients import revert as git_revert
from hubflow.clients.retry import backoff, retrying
from hubflow.core import texts
from hubflow.core.errors import HubflowError
from hubflow.core.reverts import first_parent_line, revert_branch, revert_in
from hubflow.core.settings import Environment, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

STATES = ("pending", "success", "failure", "error")


class GitHubError(HubflowError):
    """A GitHub call failed for good (after retries, or not worth retrying); names the operation and GitHub's answer."""


class NotMergeable(GitHubError):
    """GitHub says the PR cannot be merged now (conflicts, blocked, head moved): a person has to look."""


class RevertRefused(GitHubError):
    """The range to revert holds a revert: hubflow never reverts a revert; the line stops and people are alerted."""


class _StillComputing(Exception):
    """GitHub answered `mergeable: null`: it is still computing whether the PR can be merged; read it again."""


@dataclass(frozen=True)
class Pull:
    """What hubflow needs of a pull request, JSON-friendly (XCom, ledger, messages)."""

    number: int
    title: str
    author: str
    url: str
    head: str
    base: str
    state: str
    merged: bool
    merge_commit_sha: str | None
    labels: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, pr: PullRequest) -> "Pull":
        return cls(number=pr.number, title=pr.title, author=pr.user.login, url=pr.html_url, head=pr.head.ref,
                   base=pr.base.ref, state=pr.state, merged=pr.merged, merge_commit_sha=pr.merge_commit_sha,
                   labels=[label.name for label in pr.labels])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpenPull:
    """A pull request as its preview needs it: the branch it targets and the exact head commit, wherever it lives
    (`head_repo` is the head's repository, another one for a fork, None when the fork was deleted)."""

    number: int
    state: str
    base: str
    head_sha: str
    head_repo: str | None

    @classmethod
    def of(cls, pr: PullRequest) -> "OpenPull":
        repo = pr.head.repo  # only fields of the listing: `merged` and the like would cost a request per PR
        return cls(pr.number, pr.state, pr.base.ref, pr.head.sha, repo.full_name if repo else None)


@dataclass(frozen=True)
class Head:
    """A branch head and the ETag that makes the next poll a free conditional request."""

    revision: str
    etag: str | None = None


@dataclass(frozen=True)
class Revert:
    """The outcome of `GitHub.revert`: the revert branch, its PR, and the merge commit when it was merged."""

    branch: str
    pull: Pull
    merged_sha: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"branch": self.branch, "pull": self.pull.to_dict(), "merged_sha": self.merged_sha}


# ---------------------------------------------------------------- client and polling (also used by the trigger)


def make_client(auth: Any, base_url: str, timeout: int = 30) -> Github:
    """A PyGithub client with hubflow's settings: lazy objects (fewer requests), no urllib3 retry (ours retries
    whole operations), a request timeout, and no client-side throttling: a deploy makes a handful of writes, far
    below GitHub's secondary limits, and a secondary limit that does answer 403/429 is waited out by `GitHub.call`.
    """
    return Github(auth=auth, base_url=base_url, timeout=timeout, retry=None, lazy=True, per_page=100,
                  seconds_between_requests=None, seconds_between_writes=None)


def poll_head(client: Github, repository: str, branch: str, known: Head | None = None) -> Head:
    """The head of `branch`. With `known`, a conditional request: GitHub answers 304 when the head has not moved,
    and a 304 costs no rate limit, so polling an idle repository is free."""
    headers = {"Accept": "application/vnd.github.sha"}
    if known and known.etag:
        headers["If-None-Match"] = known.etag
    status, answer_headers, body = client.requester.requestJson(
        "GET", f"/repos/{repository}/commits/{quote(branch, safe='')}", headers=headers)
    if status == 304 and known:
        return known
    if status != 200:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {"message": body[:200]}
        raise client.requester.createException(status, answer_headers, data)
    revision = body.strip()
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise GitHubError(f"GitHub answered {revision[:80]!r} for the head of branch {branch!r}, not a commit sha")
    return Head(revision, answer_headers.get("etag"))


def transient(exc: BaseException) -> bool:
    """Whether trying again can help after `exc`: timeouts, dropped connections, 5xx, rate limits (not a plain 403)."""
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return True
    if not isinstance(exc, GithubException):
        return False
    if exc.status in (403, 429):
        return rate_limit_wait(exc, 0.0) is not None
    return exc.status >= 500


def rate_limit_wait(exc: BaseException, now: float) -> float | None:
    """The seconds a rate limit (403/429) asks to wait: Retry-After, X-RateLimit-Reset, or a minute for a secondary
    limit without a hint; None for any other failure (a plain 403 is permissions, not load)."""
    if not isinstance(exc, GithubException) or exc.status not in (403, 429):
        return None
    headers = {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
    if "retry-after" in headers:
        return float(headers["retry-after"])
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        return max(float(headers["x-ratelimit-reset"]) - now, 0.0) + 1.0
    if exc.status == 429 or "rate limit" in describe(exc).lower():
        return 60.0  # a secondary rate limit without a hint: GitHub asks for at least a minute
    return None


def retry_wait(exc: BaseException, attempt: int, now: float) -> float | None:
    """Seconds to wait before trying again after `exc` (failure number `attempt`), or None when trying again cannot
    help: what `GitHub.call` waits, for a caller that waits by itself (the branch-head trigger)."""
    if not transient(exc):
        return None
    asked = rate_limit_wait(exc, now)
    return backoff(attempt) if asked is None else asked


def describe(exc: BaseException) -> str:
    """GitHub's answer in one line (message and validation errors), without the request's headers."""
    if isinstance(exc, GithubException):
        data = exc.data if isinstance(exc.data, dict) else {}
        details = "; ".join(e.get("message") or f"{e.get('field')} {e.get('code')}"
                            for e in data.get("errors", []) if isinstance(e, dict))
        return f"GitHub answered {exc.status}: {data.get('message', exc.data)}" + (f" ({details})" if details else "")
    return f"{type(exc).__name__}: {exc}"


def _marker(key: str, what: str = "") -> str:
    """The hidden marker of `key` (hubflow.core.texts.marker); a key that could break it is a GitHubError."""
    try:
        return texts.marker(key)
    except ValueError as exc:
        raise GitHubError(f"{what}{exc}") from None


# ---------------------------------------------------------------- operations


class GitHub:
    """The GitHub operations of the lifecycle for one deployment repository (settings.repository.github)."""

    def __init__(self, settings: Settings, client: Github, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, attempts: int = 5, max_wait: float = 900.0):
        self.settings = settings
        self.client = client
        self.repository = settings.repository.github
        self.owner = self.repository.split("/")[0]
        self.repo = client.withLazy(True).get_repo(self.repository)
        self.sleep, self.clock, self.attempts, self.max_wait = sleep, clock, attempts, max_wait

    # ------------------------------------------------------------ plumbing

    def _retrying(self, what: str, **kwargs: Any):
        """hubflow.clients.retry's policy with this client's bounds: `attempts` tries, `max_wait` seconds of waiting
        in all, waits doubling from 1 s up to 30 s, through `sleep`."""
        return retrying(what, attempts=self.attempts, deadline=self.max_wait, first_wait=1.0, max_wait=30.0,
                        sleep=self.sleep, logger=log, **kwargs)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn` (one whole operation, lookups included) with retries; failures name `what`."""
        retry = self._retrying(what, transient=transient, describe=describe,
                               wait=lambda exc, attempt: rate_limit_wait(exc, self.clock()))
        try:
            return retry(fn)
        except (GithubException, requests.RequestException) as exc:
            gave_up = (f" (gave up after {retry.statistics['attempt_number']} attempts, "
                       f"{retry.statistics['idle_for']:.0f}s of waiting)") if transient(exc) else ""
            raise GitHubError(f"{what} in {self.repository}: {describe(exc)}{gave_up}") from None

    def _find_pull(self, head: str, base: str, state: str = "open") -> PullRequest | None:
        return next(iter(self.repo.get_pulls(state=state, head=f"{self.owner}:{head}", base=base)), None)

    def _branch_exists(self, branch: str) -> bool:
        try:
            self.repo.get_branch(branch)
            return True
        except GithubException as exc:
            if exc.status == 404:
                return False
            raise

    def _environment(self, name: str) -> Environment:
        try:
            return self.settings.environment(name)
        except KeyError as exc:
            raise GitHubError(exc.args[0]) from None

    @property
    def _token(self) -> str | None:
        """The connection's token (or GitHub App installation token) for git over HTTPS."""
        return getattr(self.client.requester.auth, "token", None)

    # ------------------------------------------------------------ reading

    def branch_head(self, env: str) -> str:
        """The revision at the head of the environment's branch."""
        branch = self._environment(env).branch
        return self.call(f"read the head of branch {branch!r}",
                         lambda: poll_head(self.client, self.repository, branch).revision)

    def pull_for(self, revision: str) -> Pull | None:
        """The merged PR whose merge (or squash) commit is `revision`; None for a direct push."""
        def find() -> Pull | None:
            for pr in self.repo.get_commit(revision).get_pulls():
                if pr.merged and pr.merge_commit_sha == revision:
                    return Pull.of(pr)
            return None
        return self.call(f"find the pull request of {revision[:12]}", find)

    def merged_pulls(self, base: str, head: str) -> list[Pull]:
        """The merged PRs that `head` adds over `base` (a revision or branch), oldest first.

        Only the first-parent line of `head` counts (the merges and squashes on the branch itself), so commits of
        the feature branches cost no lookups.
        """
        return self._pulls_of(first_parent_line(self._compare(base, head), head))

    def _compare(self, base: str, head: str) -> dict[str, tuple[list[str], str]]:
        """The commits `head` adds over `base`: sha -> (parents, message), from one compare."""
        return self.call(f"compare {base}...{head[:12]}", lambda: {
            c.sha: ([p.sha for p in c.parents], c.commit.message) for c in self.repo.compare(base, head).commits})

    def _pulls_of(self, line: list[str]) -> list[Pull]:
        pulls: list[Pull] = []
        for sha in reversed(line):
            pull = self.pull_for(sha)
            if pull and pull.number not in [p.number for p in pulls]:
                pulls.append(pull)
        return pulls

    def open_pulls(self, base: str) -> list[OpenPull]:
        """The open PRs into branch `base`, newest first."""
        return self.call(f"list the open pull requests into {base!r}",
                         lambda: [OpenPull.of(pr) for pr in self.repo.get_pulls(state="open", base=base)])

    def open_pull(self, number: int) -> OpenPull:
        return self.call(f"read #{number}", lambda: OpenPull.of(self.repo.get_pull(number)))

    # ------------------------------------------------------------ statuses and comments

    def set_status(self, env: str, revision: str, state: str, target_url: str | None, description: str) -> None:
        """The commit status `hubflow/<env>` of `revision`. Setting it twice is harmless: the latest one counts."""
        if state not in STATES:
            raise GitHubError(f"commit status state {state!r} is not one of {list(STATES)}")
        context = f"hubflow/{self._environment(env).name}"
        extra = {"target_url": target_url} if target_url else {}
        self.call(f"set status {context}={state} on {revision[:12]}", lambda: self.repo.get_commit(revision)
                  .create_status(state, description=texts.trim_description(description), context=context, **extra))

    def comment(self, number: int, key: str, body: str) -> str:
        """Post (or update in place) the comment identified by `key` on PR `number`; returns its URL.

        The key rides in a hidden marker, so a retry finds the earlier comment instead of posting a second one.
        """
        marker = _marker(key, "comment ")
        text = texts.marked(body, key)

        def post() -> str:
            issue = self.repo.get_issue(number)
            for c in issue.get_comments():
                if marker in c.body:
                    if c.body != text:
                        c.edit(text)
                    return c.html_url
            return issue.create_comment(text).html_url
        return self.call(f"comment on #{number}", post)

    def comment_body(self, number: int, key: str) -> str | None:
        """The body of the comment `comment` keeps under `key` on PR `number`, or None when there is none yet."""
        marker = _marker(key)
        return self.call(f"read the comments of #{number}", lambda: next(
            (c.body for c in self.repo.get_issue(number).get_comments() if marker in c.body), None))

    # ------------------------------------------------------------ pull requests

    def ensure_promotion(self, env: str, revision: str, evidence: dict[str, str]) -> Pull | None:
        """Open, or update in place, the one promotion PR from `env`'s branch to the next environment's.

        The body names the verified `revision`, links the `evidence` (label -> URL) and lists the merged PRs the
        target lacks; reviewers and labels come from settings.promotion. None when the target has everything.
        """
        source, target = self._environment(env), self.settings.next_environment(env)
        if target is None:
            raise GitHubError(f"environment {env!r} is the last one: there is nothing to promote it to")
        pulls = self.merged_pulls(target.branch, revision)
        source_head = self.branch_head(source.name)
        title = texts.promotion_title(source.name, target.name, revision)
        body = texts.promotion_body(source.name, target.name, revision, source_head, evidence, pulls)

        def ensure() -> PullRequest | None:
            pr = self._find_pull(source.branch, target.branch)
            if pr is None:
                try:
                    return self.repo.create_pull(base=target.branch, head=source.branch, title=title, body=body)
                except GithubException as exc:
                    if exc.status == 422 and "No commits between" in describe(exc):
                        return None
                    if exc.status == 422 and "already exists" in describe(exc):
                        return self._find_pull(source.branch, target.branch)
                    raise
            if pr.title != title or pr.body != body:
                pr.edit(title=title, body=body)
            return pr

        pr = self.call(f"open or update the promotion PR {source.branch} -> {target.branch}", ensure)
        if pr is None:
            log.info("%s already has everything %s has: no promotion PR", target.branch, source.branch)
            return None
        promotion = self.settings.promotion
        labels = [name for name in promotion.labels if name not in [label.name for label in pr.labels]]
        if labels:
            self.call(f"label #{pr.number}", lambda: pr.add_to_labels(*labels))
        reviewers = [r for r in promotion.reviewers
                     if r not in [u.login for u in pr.requested_reviewers] and r != pr.user.login]
        if reviewers:
            self.call(f"request reviews on #{pr.number}", lambda: pr.create_review_request(reviewers=reviewers))
        return Pull.of(self.call(f"read #{pr.number}", lambda: self.repo.get_pull(pr.number)))

    def merge(self, number: int, expected_head: str | None = None, method: str = "merge") -> str:
        """Merge PR `number` if GitHub says it is mergeable; returns the merge commit (also when already merged).

        With `expected_head`, GitHub merges only if the PR's head is still that revision (what was verified).
        """
        def attempt() -> str:
            pr = self._mergeable_pull(number)
            if pr.merged:
                return pr.merge_commit_sha
            if expected_head and pr.head.sha != expected_head:
                raise NotMergeable(f"PR #{number}: its head moved to {pr.head.sha[:12]}, but {expected_head[:12]} "
                                   f"is the verified revision; verify the new head first")
            try:
                return pr.merge(merge_method=method, sha=pr.head.sha).sha
            except GithubException as exc:
                if exc.status in (405, 409):
                    raise NotMergeable(f"PR #{number} cannot be merged: {describe(exc)}") from None
                raise
        return self.call(f"merge #{number}", attempt)

    def unmergeable(self, number: int) -> str | None:
        """Why GitHub would not merge PR `number` now, or None when it would (a read: nothing is merged)."""
        try:
            self.call(f"read whether #{number} is mergeable", lambda: self._mergeable_pull(number))
        except NotMergeable as exc:
            return str(exc)
        return None

    def _mergeable_pull(self, number: int) -> PullRequest:
        """The PR once GitHub has computed whether it is mergeable (it answers null while it computes: read again,
        with the retry policy's waits and bounds; a failed read is left to the caller's `call`)."""
        def read() -> PullRequest:
            pr = self.repo.get_pull(number)
            if not pr.merged and pr.mergeable is None:
                raise _StillComputing(f"GitHub is still computing whether PR #{number} is mergeable")
            return pr

        retry = self._retrying(f"read whether #{number} is mergeable",
                               transient=lambda exc: isinstance(exc, _StillComputing))
        try:
            pr = retry(read)
        except _StillComputing:
            raise NotMergeable(f"PR #{number}: GitHub did not say whether it is mergeable after "
                               f"{retry.statistics['attempt_number']} reads") from None
        if pr.state != "open" and not pr.merged:
            raise NotMergeable(f"PR #{number} is closed")
        if not pr.merged and not pr.mergeable:
            raise NotMergeable(f"PR #{number} is not mergeable: GitHub says {pr.mergeable_state!r}")
        return pr

    # ------------------------------------------------------------ revert

    def revert(self, env: str, base: str, head: str, reason: str, links: dict[str, str] | None = None) -> Revert:
        """Undo `base..head` on the environment's branch in one commit, on branch hubflow/revert-<env>-<short head>,
        with a PR to the branch that explains the failure; settings.revert.mode == "merge" merges it at once.

        `base` is the last good revision; for one failed merge it is that merge's first parent. Idempotent: the
        PR and the branch are looked up before anything is made; a merged revert PR is reused, one closed without
        merging is not (a new PR is opened, the branch pushed again if it was deleted). A conflict raises
        RevertConflict and pushes nothing. A range that brings in a commit with hubflow's revert trailer is refused
        (RevertRefused): never revert a revert.
        """
        environment = self._environment(env)
        name = revert_branch(environment.name, head)
        pr = self.call(f"look up the revert PR from {name}",
                       lambda: self._find_pull(name, environment.branch, state="all"))
        if pr is not None and pr.state == "closed" and not pr.merged:
            log.info("the revert PR #%d from %s was closed without merging: opening a new one", pr.number, name)
            pr = None
        if pr is None:
            commits = self._compare(base, head)
            line = first_parent_line(commits, head)
            brought_by = revert_in(commits, line)
            if brought_by:
                pull = self.pull_for(brought_by)
                which = f"#{pull.number} ({pull.title!r})" if pull else f"commit {brought_by[:12]}"
                raise RevertRefused(
                    f"the failed range {base[:7]}..{head[:7]} on {environment.branch} holds the revert {which}; "
                    f"hubflow never reverts a revert: fix forward")
            pulls = self._pulls_of(line)
            title, message, body = texts.revert_texts(environment.name, environment.branch, base, head, pulls,
                                                      reason, links or {})
            if not self.call(f"look up branch {name}", lambda: self._branch_exists(name)):
                git_revert.revert_range(self.settings.repository.clone_url, self._token, environment.branch, base,
                                        head, name, message)

            def create() -> PullRequest:
                return (self._find_pull(name, environment.branch)
                        or self.repo.create_pull(base=environment.branch, head=name, title=title, body=body))
            pr = self.call(f"open the revert PR {name} -> {environment.branch}", create)
        merged_sha = pr.merge_commit_sha if pr.merged else None
        if self.settings.revert.mode == "merge" and pr.state == "open":
            merged_sha = self.merge(pr.number)
        return Revert(name, Pull.of(self.call(f"read #{pr.number}", lambda: self.repo.get_pull(pr.number))),
                      merged_sha)


    # ------------------------------------------------------------ issues (one per key, kept up to date)

    def _find_issue(self, marker: str, label: str):
        """The newest issue (open or closed, not a PR) with `label` whose body holds `marker`."""
        for issue in self.repo.get_issues(state="all", labels=[label], sort="created", direction="desc"):
            if issue.pull_request is None and marker in (issue.body or ""):
                return issue
        return None

    def ensure_issue(self, key: str, title: str, body: str, labels: list[str]) -> dict[str, Any]:
        """Open, reopen or update in place the one issue identified by `key` (a hidden marker in its body, found
        among the issues with labels[0]); returns {number, url, action: opened|reopened|updated|unchanged}."""
        marker = _marker(key)
        text = texts.marked(body, key)

        def ensure() -> dict[str, Any]:
            issue = self._find_issue(marker, labels[0])
            if issue is None:
                issue = self.repo.create_issue(title=title, body=text, labels=labels)
                return {"number": issue.number, "url": issue.html_url, "action": "opened"}
            action = "unchanged"
            if issue.state == "closed":
                issue.edit(state="open", title=title, body=text)
                issue.create_comment(texts.REOPENED)
                action = "reopened"
            elif issue.title != title or issue.body != text:
                issue.edit(title=title, body=text)
                action = "updated"
            return {"number": issue.number, "url": issue.html_url, "action": action}
        return self.call(f"open or update the issue {key}", ensure)

    def close_issue(self, key: str, label: str, comment: str) -> dict[str, Any] | None:
        """Comment on and close the open issue identified by `key`; None when there is none open."""
        marker = _marker(key)

        def close() -> dict[str, Any] | None:
            issue = self._find_issue(marker, label)
            if issue is None or issue.state != "open":
                return None
            issue.create_comment(comment)
            issue.edit(state="closed", state_reason="completed")
            return {"number": issue.number, "url": issue.html_url, "action": "closed"}
        return self.call(f"close the issue {key}", close)
