"""A GitHub REST stand-in on 127.0.0.1, backed by a real bare git repository, for tests and the local demo.

PyGithub talks to it through a GitHub connection whose host is `emulator.url`; git clones and pushes the same bare
repository over git's smart HTTP at `emulator.clone_url` (through the real `git http-backend`, with the token as
HTTP basic auth, as on github.com). What it serves: the repository, branches, commits (also the `sha` media type that
answers with the bare sha), compare, the pulls of a commit, pulls (create, list with state/head/base, get, update,
merge as a real git merge or squash in the bare repository, requested reviewers, labels), statuses and the combined
status, issue comments, issues (list with state/labels, create, get, edit: title, body, state, labels), ETag/304 on
every GET (a 304 costs no rate limit) and rate-limit headers.

Tests script outcomes with `fail`, `rate_limit`, `too_many` and `hang` (the next N requests to a method and path),
read `requests` (every request, in order), and produce realistic history with `merge_feature` (a PR from a feature
branch, merged or squashed) and `push` (a direct commit on a branch). An unknown request answers 404 naming it.

    with GitHubEmulator(bare_repo_path) as gh: ...
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.quiet_server import QuietServer

TOKEN = "ghs_emulatorToken0123456789abcdefABCDEF"
BOT = "hubflow-bot"
ZERO = "0" * 40


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class Fault:
    method: str
    path: str
    times: int
    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Server Error"
    after_effect: bool = False
    hang: float = 0.0


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.body = status, {"message": message, **extra}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubEmulator:
    """One repository (`owner/name`) served over HTTP from the bare repository `bare`."""

    def __init__(self, bare: str | os.PathLike, repository: str = "datahub/datahub", token: str = TOKEN,
                 clock: Callable[[], float] = time.time, rate_limit: int = 5000):
        self.bare = Path(bare)
        self.repository = repository
        self.owner, self.name = repository.split("/")
        self.token = token
        self.clock = clock
        self.rate_limit = rate_limit
        self.rate_used = 0
        self.rate_reset = int(clock()) + 3600
        self.requests: list[Request] = []
        self.pulls: dict[int, dict] = {}
        self.statuses: dict[str, list[dict]] = {}
        self.comments: dict[int, list[dict]] = {}
        self.issues: dict[int, dict] = {}  # plain issues (not PRs); they share the PRs' numbers, as on GitHub
        self._faults: list[Fault] = []
        self.mergeable_unknown = 0  # the next N reads of an open PR say mergeable: null (GitHub is still computing)
        self._next_id = 1
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server = QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="github-emulator",
                                        daemon=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def clone_url(self) -> str:
        return f"{self.url}/git/{self.repository}.git"

    def start(self) -> "GitHubEmulator":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "GitHubEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting and inspection

    def fail(self, method: str, path: str, status: int = 502, times: int = 1, after_effect: bool = False,
             headers: dict[str, str] | None = None, message: str = "Server Error") -> None:
        """The next `times` requests matching `method` and `path` (a glob) answer `status`.

        With `after_effect`, the request is carried out first and only its answer is lost (a gateway error after
        GitHub already created the PR): the case where a blind retry would duplicate the effect.
        """
        with self._lock:
            self._faults.append(Fault(method, path, times, status, headers or {}, message, after_effect))

    def rate_limit_next(self, method: str, path: str, reset_in: float = 2, times: int = 1) -> None:
        """Primary rate limit: 403 with X-RateLimit-Remaining 0 and a reset time `reset_in` seconds ahead."""
        reset = str(int(self.clock() + reset_in))
        self.fail(method, path, 403, times, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
                  message="API rate limit exceeded for user ID 1.")

    def too_many(self, method: str, path: str, retry_after: int = 1, times: int = 1) -> None:
        """Secondary rate limit: 429 with Retry-After."""
        self.fail(method, path, 429, times, headers={"Retry-After": str(retry_after)},
                  message="You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")

    def hang(self, method: str, path: str, seconds: float, times: int = 1, after_effect: bool = False) -> None:
        """The next matching requests get no answer for `seconds`, then the connection closes."""
        with self._lock:
            self._faults.append(Fault(method, path, times, after_effect=after_effect, hang=seconds))

    def requests_to(self, method: str | None = None, path: str = "*") -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and fnmatch.fnmatchcase(r.path, path)]

    def head(self, branch: str) -> str:
        return self._git("rev-parse", f"refs/heads/{branch}").strip()

    # ------------------------------------------------------------------ history helpers for tests

    def push(self, branch: str, message: str, files: dict[str, str | None], parent: str | None = None,
             author: str = "octocat") -> str:
        """Commit `files` (None deletes) on top of `parent` (default: the branch) and move `branch` there."""
        with self._lock:
            parent = parent or self.head(branch)
            index = self.bare / f"emulator-index-{threading.get_ident()}"
            env = {"GIT_INDEX_FILE": str(index)}
            try:
                self._git("read-tree", parent, env=env)
                lines = []
                for path, text in files.items():
                    if text is None:
                        lines.append(f"0 {ZERO}\t{path}")
                    else:
                        blob = self._git("hash-object", "-w", "--stdin", input=text.encode()).strip()
                        lines.append(f"100644 {blob}\t{path}")
                self._git("update-index", "--index-info", input="".join(x + "\n" for x in lines).encode(), env=env)
                tree = self._git("write-tree", env=env).strip()
            finally:
                index.unlink(missing_ok=True)
            sha = self._commit(tree, [parent], message, author)
            self._git("update-ref", f"refs/heads/{branch}", sha)
            return sha

    def open_pull(self, head: str, base: str, title: str, body: str = "", author: str = "octocat",
                  labels: tuple[str, ...] = ()) -> dict:
        with self._lock:
            pr = self._create_pull({"head": head, "base": base, "title": title, "body": body}, author)
            pr["labels"] = list(labels)
            return self._pull_json(pr)

    def merge_feature(self, title: str, files: dict[str, str | None], base: str = "staging", branch: str | None = None,
                      method: str = "merge", author: str = "octocat", labels: tuple[str, ...] = (),
                      body: str = "") -> dict:
        """A PR from a new feature branch with one commit of `files`, merged into `base` with `method`
        (merge or squash) as GitHub would; returns the merged PR (`merge_commit_sha` is the new head of `base`)."""
        with self._lock:
            branch = branch or f"feature/{self._next_id}"
            self.push(branch, title, files, parent=self.head(base), author=author)
            pr = self.open_pull(branch, base, title, body, author, labels)
            self._merge(self.pulls[pr["number"]], {"merge_method": method}, merger=author)
            return self._pull_json(self.pulls[pr["number"]])

    # ------------------------------------------------------------------ git

    def _git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
             check: bool = True) -> str:
        full_env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C", **(env or {}))
        proc = subprocess.run(["git", "-C", str(self.bare), *args], input=input, capture_output=True, env=full_env)
        if check and proc.returncode != 0:
            raise HttpError(500, f"git {args[0]} failed in the emulator: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode(errors="replace")

    def _commit(self, tree: str, parents: list[str], message: str, author: str) -> str:
        ts = f"{int(self.clock())} +0000"
        env = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@users.noreply.github.com",
               "GIT_AUTHOR_DATE": ts, "GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com",
               "GIT_COMMITTER_DATE": ts}
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return self._git(*args, "-F", "-", input=message.encode(), env=env).strip()

    def _resolve(self, ref: str) -> str | None:
        if not ref or ref.startswith("-"):
            return None
        for candidate in (f"refs/heads/{ref}", ref):
            out = self._git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False).strip()
            if out:
                return out
        return None

    def _branch_exists(self, branch: str) -> bool:
        return bool(branch) and not branch.startswith("-") and bool(
            self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip())

    _FORMAT = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B%x1e"

    def _commits(self, *rev_args: str) -> list[dict]:
        out = self._git("log", f"--format={self._FORMAT}", *rev_args)
        commits = []
        for record in out.split("\x1e"):
            record = record.lstrip("\n")
            if not record:
                continue
            sha, tree, parents, an, ae, ad, cn, ce, cd, message = record.split("\x00")
            commits.append(self._commit_json(sha, tree, parents.split(), (an, ae, ad), (cn, ce, cd), message))
        return commits

    def _commit_json(self, sha: str, tree: str, parents: list[str], author: tuple, committer: tuple,
                     message: str) -> dict:
        api = f"{self.url}/repos/{self.repository}"
        person = lambda p: {"name": p[0], "email": p[1], "date": p[2]}  # noqa: E731
        return {"sha": sha, "node_id": f"C_{sha[:12]}", "url": f"{api}/commits/{sha}",
                "html_url": f"{self.url}/{self.repository}/commit/{sha}",
                "commit": {"message": message.rstrip("\n"), "author": person(author), "committer": person(committer),
                           "tree": {"sha": tree, "url": f"{api}/git/trees/{tree}"}, "url": f"{api}/git/commits/{sha}"},
                "author": None, "committer": None,
                "parents": [{"sha": p, "url": f"{api}/commits/{p}"} for p in parents]}

    def _commit_of(self, ref: str) -> dict:
        sha = self._resolve(ref)
        if sha is None:
            raise HttpError(422, f"No commit found for SHA: {ref}")
        return self._commits("-n1", sha)[0]

    # ------------------------------------------------------------------ JSON shapes

    def _user(self, login: str) -> dict:
        return {"login": login, "id": int(hashlib.sha1(login.encode()).hexdigest()[:6], 16), "type": "User",
                "url": f"{self.url}/users/{login}", "html_url": f"{self.url}/{login}"}

    def _repo_json(self) -> dict:
        return {"id": 1, "node_id": "R_1", "name": self.name, "full_name": self.repository,
                "owner": self._user(self.owner), "private": False, "default_branch": "staging",
                "url": f"{self.url}/repos/{self.repository}", "html_url": f"{self.url}/{self.repository}",
                "clone_url": self.clone_url}

    def _ref_json(self, branch: str, sha: str) -> dict:
        return {"label": f"{self.owner}:{branch}", "ref": branch, "sha": sha, "user": self._user(self.owner),
                "repo": self._repo_json()}

    def _mergeable(self, pr: dict) -> tuple[bool | None, str]:
        if pr["state"] != "open":
            return None, "unknown"
        if self.mergeable_unknown > 0:
            self.mergeable_unknown -= 1
            return None, "unknown"
        base, head = self._resolve(pr["base"]), self._resolve(pr["head"])
        if base is None or head is None:
            return False, "dirty"
        ok = subprocess.run(["git", "-C", str(self.bare), "merge-tree", "--write-tree", base, head],
                            capture_output=True).returncode == 0
        return ok, ("clean" if ok else "dirty")

    def _pull_json(self, pr: dict) -> dict:
        api = f"{self.url}/repos/{self.repository}"
        n = pr["number"]
        head_sha = self._resolve(pr["head"]) or pr.get("head_sha", ZERO)
        base_sha = self._resolve(pr["base"]) or ZERO
        mergeable, mergeable_state = self._mergeable(pr)
        return {"id": 1000 + n, "node_id": f"PR_{n}", "number": n, "state": pr["state"], "locked": False,
                "title": pr["title"], "body": pr["body"], "user": self._user(pr["author"]),
                "labels": [{"id": i, "name": name, "color": "ededed", "url": f"{api}/labels/{name}"}
                           for i, name in enumerate(pr["labels"], 1)],
                "requested_reviewers": [self._user(r) for r in pr["reviewers"]], "requested_teams": [],
                "head": self._ref_json(pr["head"], head_sha), "base": self._ref_json(pr["base"], base_sha),
                "merged": pr["merged"], "merged_at": pr["merged_at"],
                "merged_by": self._user(pr["merged_by"]) if pr["merged_by"] else None,
                "merge_commit_sha": pr["merge_commit_sha"], "mergeable": mergeable, "mergeable_state": mergeable_state,
                "draft": False, "created_at": pr["created_at"], "updated_at": pr["updated_at"],
                "closed_at": pr["closed_at"], "url": f"{api}/pulls/{n}",
                "html_url": f"{self.url}/{self.repository}/pull/{n}", "issue_url": f"{api}/issues/{n}",
                "comments_url": f"{api}/issues/{n}/comments", "statuses_url": f"{api}/statuses/{head_sha}",
                "commits_url": f"{api}/pulls/{n}/commits", "review_comments_url": f"{api}/pulls/{n}/comments"}

    # ------------------------------------------------------------------ pulls

    def _create_pull(self, body: dict, author: str) -> dict:
        head = str(body.get("head", ""))
        if ":" in head:
            owner, head = head.split(":", 1)
            if owner != self.owner:
                raise HttpError(422, "Validation Failed", errors=[{"field": "head", "code": "invalid"}])
        base = str(body.get("base", ""))
        if not body.get("title"):
            raise HttpError(422, "Validation Failed", errors=[{"field": "title", "code": "missing_field"}])
        for name, branch in (("head", head), ("base", base)):
            if not self._branch_exists(branch):
                raise HttpError(422, "Validation Failed", errors=[{"field": name, "code": "invalid"}])
        if any(p["state"] == "open" and p["head"] == head and p["base"] == base for p in self.pulls.values()):
            raise HttpError(422, "Validation Failed", errors=[
                {"resource": "PullRequest", "code": "custom",
                 "message": f"A pull request already exists for {self.owner}:{head}."}])
        if self._resolve(head) == self._resolve(base):
            raise HttpError(422, "Validation Failed", errors=[
                {"resource": "PullRequest", "code": "custom", "message": f"No commits between {base} and {head}"}])
        n = self._next_id
        self._next_id += 1
        now = _iso(self.clock())
        pr = {"number": n, "state": "open", "title": body["title"], "body": body.get("body") or "", "author": author,
              "head": head, "base": base, "labels": [], "reviewers": [], "merged": False, "merged_at": None,
              "merged_by": None, "merge_commit_sha": None, "created_at": now, "updated_at": now, "closed_at": None,
              "commits": []}
        self.pulls[n] = pr
        return pr

    def _merge(self, pr: dict, body: dict, merger: str) -> dict:
        if pr["merged"] or pr["state"] != "open":
            raise HttpError(405, "Pull Request is not mergeable")
        base, head = self._resolve(pr["base"]), self._resolve(pr["head"])
        if body.get("sha") and body["sha"] != head:
            raise HttpError(409, "Head branch was modified. Review and try the merge again.")
        proc = subprocess.run(["git", "-C", str(self.bare), "merge-tree", "--write-tree", base, head],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HttpError(405, "Pull Request is not mergeable")
        tree = proc.stdout.split("\n", 1)[0]
        method = body.get("merge_method") or "merge"
        n = pr["number"]
        if method == "merge":
            title = body.get("commit_title") or f"Merge pull request #{n} from {self.owner}/{pr['head']}"
            message = f"{title}\n\n{body.get('commit_message') or pr['title']}"
            sha = self._commit(tree, [base, head], message, merger)
        elif method == "squash":
            title = body.get("commit_title") or f"{pr['title']} (#{n})"
            squashed = "".join(f"* {c['commit']['message'].splitlines()[0]}\n"
                               for c in self._commits(f"{base}..{head}"))
            sha = self._commit(tree, [base], f"{title}\n\n{body.get('commit_message') or squashed}", pr["author"])
        else:
            raise HttpError(422, f"merge_method {method!r} is not supported by the emulator")
        pr["commits"] = self._git("rev-list", f"{base}..{head}").split()
        self._git("update-ref", f"refs/heads/{pr['base']}", sha, base)
        now = _iso(self.clock())
        pr.update(state="closed", merged=True, merged_at=now, closed_at=now, updated_at=now, merged_by=merger,
                  merge_commit_sha=sha, head_sha=head)
        return {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def _pulls_of_commit(self, sha: str) -> list[dict]:
        out = []
        for pr in self.pulls.values():
            head = self._resolve(pr["head"]) or pr.get("head_sha")
            if sha in (pr["merge_commit_sha"], head) or sha in pr["commits"]:
                out.append(pr)
        return out

    # ------------------------------------------------------------------ statuses and comments

    def _add_status(self, sha: str, body: dict) -> dict:
        if self._resolve(sha) != sha:
            raise HttpError(422, f"No commit found for SHA: {sha}")
        state = body.get("state")
        if state not in ("error", "failure", "pending", "success"):
            raise HttpError(422, "Validation Failed", errors=[{"field": "state", "code": "invalid"}])
        if len(body.get("description") or "") > 140:
            raise HttpError(422, "Validation Failed", errors=[
                {"resource": "Status", "field": "description", "code": "custom",
                 "message": "description is too long (maximum is 140 characters)"}])
        status = {"id": self._new_id(), "state": state, "context": body.get("context") or "default",
                  "description": body.get("description"), "target_url": body.get("target_url"),
                  "created_at": _iso(self.clock()), "updated_at": _iso(self.clock()), "creator": self._user(BOT),
                  "url": f"{self.url}/repos/{self.repository}/statuses/{sha}"}
        self.statuses.setdefault(sha, []).insert(0, status)
        return status

    def combined_status(self, sha: str) -> dict:
        latest: dict[str, dict] = {}
        for s in self.statuses.get(sha, []):
            latest.setdefault(s["context"], s)
        states = {s["state"] for s in latest.values()}
        state = ("failure" if states & {"failure", "error"} else
                 "pending" if not states or "pending" in states else "success")
        return {"state": state, "sha": sha, "total_count": len(latest), "statuses": list(latest.values()),
                "repository": self._repo_json(), "commit_url": f"{self.url}/repos/{self.repository}/commits/{sha}",
                "url": f"{self.url}/repos/{self.repository}/commits/{sha}/status"}

    def _new_id(self) -> int:
        self._next_id += 1
        return 10_000 + self._next_id

    def _comment_json(self, number: int, c: dict) -> dict:
        api = f"{self.url}/repos/{self.repository}"
        return {"id": c["id"], "node_id": f"IC_{c['id']}", "body": c["body"], "user": self._user(c["author"]),
                "created_at": c["created_at"], "updated_at": c["updated_at"],
                "url": f"{api}/issues/comments/{c['id']}", "issue_url": f"{api}/issues/{number}",
                "html_url": f"{self.url}/{self.repository}/pull/{number}#issuecomment-{c['id']}"}

    # ------------------------------------------------------------------ routing

    def _pull(self, n: str) -> dict:
        if int(n) not in self.pulls:
            raise HttpError(404, "Not Found")
        return self.pulls[int(n)]

    def _routes(self) -> list[tuple[str, str, Callable[..., Any]]]:
        r = re.escape(f"/repos/{self.repository}")
        return [
            ("GET", r"/rate_limit", lambda q, b: {"resources": {"core": self._rate()}, "rate": self._rate()}),
            ("GET", r, lambda q, b: self._repo_json()),
            ("GET", r + r"/branches/(?P<branch>.+)", self._get_branch),
            ("GET", r + r"/commits/(?P<ref>.+)/pulls", lambda q, b, ref: [
                self._pull_json(p) for p in self._pulls_of_commit(self._commit_of(ref)["sha"])]),
            ("GET", r + r"/commits/(?P<ref>.+)/status", lambda q, b, ref: self.combined_status(
                self._commit_of(ref)["sha"])),
            ("GET", r + r"/commits/(?P<ref>.+)/statuses", lambda q, b, ref: self.statuses.get(
                self._commit_of(ref)["sha"], [])),
            ("GET", r + r"/commits/(?P<ref>.+)", lambda q, b, ref: self._commit_of(ref)),
            ("POST", r + r"/statuses/(?P<sha>[0-9a-f]{40})", lambda q, b, sha: self._add_status(sha, b or {})),
            ("GET", r + r"/compare/(?P<base>.+?)\.\.\.(?P<head>.+)", self._compare),
            ("GET", r + r"/pulls", self._list_pulls),
            ("POST", r + r"/pulls", lambda q, b: self._pull_json(self._create_pull(b or {}, BOT))),
            ("GET", r + r"/pulls/(?P<n>\d+)", lambda q, b, n: self._pull_json(self._pull(n))),
            ("PATCH", r + r"/pulls/(?P<n>\d+)", self._update_pull),
            ("PUT", r + r"/pulls/(?P<n>\d+)/merge", lambda q, b, n: self._merge(self._pull(n), b or {}, BOT)),
            ("POST", r + r"/pulls/(?P<n>\d+)/requested_reviewers", self._request_reviewers),
            ("POST", r + r"/issues/(?P<n>\d+)/labels", self._add_labels),
            ("GET", r + r"/issues/(?P<n>\d+)/comments", lambda q, b, n: [
                self._comment_json(int(n), c) for c in self.comments.get(int(self._issue_or_pull(n)["number"]), [])]),
            ("POST", r + r"/issues/(?P<n>\d+)/comments", self._add_comment),
            ("PATCH", r + r"/issues/comments/(?P<cid>\d+)", self._edit_comment),
            ("GET", r + r"/issues", self._list_issues),
            ("POST", r + r"/issues", lambda q, b: self._issue_json(self._create_issue(b or {}))),
            ("GET", r + r"/issues/(?P<n>\d+)", lambda q, b, n: self._issue_json(self._issue(n))),
            ("PATCH", r + r"/issues/(?P<n>\d+)", self._update_issue),
        ]

    def _rate(self) -> dict:
        return {"limit": self.rate_limit, "remaining": self.rate_limit - self.rate_used, "reset": self.rate_reset,
                "used": self.rate_used}

    def _get_branch(self, q: dict, b: Any, branch: str) -> dict:
        if not self._branch_exists(branch):
            raise HttpError(404, "Branch not found")
        commit = self._commit_of(f"refs/heads/{branch}")
        return {"name": branch, "commit": commit, "protected": False,
                "_links": {"self": f"{self.url}/repos/{self.repository}/branches/{branch}"}}

    def _compare(self, q: dict, b: Any, base: str, head: str) -> dict:
        base_sha, head_sha = self._resolve(base), self._resolve(head)
        if base_sha is None or head_sha is None:
            raise HttpError(404, "Not Found")
        merge_base = self._git("merge-base", base_sha, head_sha).strip()
        ahead = self._commits("--reverse", f"{merge_base}..{head_sha}")
        behind = int(self._git("rev-list", "--count", f"{merge_base}..{base_sha}").strip())
        status = ("identical" if not ahead and not behind else "ahead" if not behind else
                  "behind" if not ahead else "diverged")
        if int(q.get("page", "1")) > 1:
            ahead = []
        return {"url": f"{self.url}/repos/{self.repository}/compare/{base}...{head}", "status": status,
                "ahead_by": len(ahead), "behind_by": behind, "total_commits": len(ahead), "commits": ahead,
                "base_commit": self._commit_of(base_sha), "merge_base_commit": self._commit_of(merge_base),
                "files": [], "html_url": f"{self.url}/{self.repository}/compare/{base}...{head}"}

    def _list_pulls(self, q: dict, b: Any) -> list[dict]:
        if int(q.get("page", "1")) > 1:
            return []
        state = q.get("state", "open")
        head = q.get("head")
        out = []
        for pr in sorted(self.pulls.values(), key=lambda p: -p["number"]):
            if state != "all" and pr["state"] != state:
                continue
            if head and f"{self.owner}:{pr['head']}" != head:
                continue
            if q.get("base") and pr["base"] != q["base"]:
                continue
            out.append(self._pull_json(pr))
        return out

    def _update_pull(self, q: dict, b: dict, n: str) -> dict:
        pr = self._pull(n)
        for key in ("title", "body", "base"):
            if key in (b or {}):
                pr[key] = b[key]
        if (b or {}).get("state") in ("open", "closed") and not pr["merged"]:
            pr["state"] = b["state"]
            pr["closed_at"] = _iso(self.clock()) if b["state"] == "closed" else None
        pr["updated_at"] = _iso(self.clock())
        return self._pull_json(pr)

    def _request_reviewers(self, q: dict, b: dict, n: str) -> dict:
        pr = self._pull(n)
        for login in (b or {}).get("reviewers", []):
            if login == pr["author"]:
                raise HttpError(422, "Review cannot be requested from pull request author.")
            if login not in pr["reviewers"]:
                pr["reviewers"].append(login)
        return self._pull_json(pr)

    def _add_labels(self, q: dict, b: Any, n: str) -> list[dict]:
        pr = self._pull(n)
        names = b.get("labels", []) if isinstance(b, dict) else (b or [])
        for name in names:
            if name not in pr["labels"]:
                pr["labels"].append(name)
        return self._pull_json(pr)["labels"]

    def _add_comment(self, q: dict, b: dict, n: str) -> dict:
        number = self._issue_or_pull(n)["number"]
        now = _iso(self.clock())
        c = {"id": self._new_id(), "body": (b or {}).get("body", ""), "author": BOT, "created_at": now,
             "updated_at": now}
        self.comments.setdefault(number, []).append(c)
        return self._comment_json(number, c)

    def _edit_comment(self, q: dict, b: dict, cid: str) -> dict:
        for number, comments in self.comments.items():
            for c in comments:
                if c["id"] == int(cid):
                    c.update(body=(b or {}).get("body", ""), updated_at=_iso(self.clock()))
                    return self._comment_json(number, c)
        raise HttpError(404, "Not Found")

    # ------------------------------------------------------------------ issues

    def _issue_or_pull(self, n: str) -> dict:
        """A PR or an issue: both take comments."""
        return self.issues[int(n)] if int(n) in self.issues else self._pull(n)

    def _issue(self, n: str) -> dict:
        if int(n) not in self.issues:
            raise HttpError(404, "Not Found")
        return self.issues[int(n)]

    def _create_issue(self, body: dict) -> dict:
        if not body.get("title"):
            raise HttpError(422, "Validation Failed", errors=[{"field": "title", "code": "missing_field"}])
        n = self._next_id
        self._next_id += 1
        now = _iso(self.clock())
        issue = {"number": n, "state": "open", "state_reason": None, "title": body["title"],
                 "body": body.get("body") or "", "author": BOT, "labels": list(body.get("labels") or []),
                 "created_at": now, "updated_at": now, "closed_at": None}
        self.issues[n] = issue
        return issue

    def _update_issue(self, q: dict, b: dict, n: str) -> dict:
        issue = self._issue(n)
        for key in ("title", "body", "labels", "state_reason"):
            if key in (b or {}):
                issue[key] = b[key]
        if (b or {}).get("state") in ("open", "closed"):
            issue["state"] = b["state"]
            issue["closed_at"] = _iso(self.clock()) if b["state"] == "closed" else None
            issue["state_reason"] = b.get("state_reason") or ("reopened" if b["state"] == "open" else "completed")
        issue["updated_at"] = _iso(self.clock())
        return self._issue_json(issue)

    def _list_issues(self, q: dict, b: Any) -> list[dict]:
        """Issues and PRs, newest first, as GitHub lists them (PRs carry `pull_request`)."""
        if int(q.get("page", "1")) > 1:
            return []
        state, wanted = q.get("state", "open"), [x for x in q.get("labels", "").split(",") if x]
        threads = [(i, self._issue_json(i)) for i in self.issues.values()]
        threads += [(p, dict(self._pull_json(p), pull_request={"url": f"{self.url}/repos/{self.repository}/pulls/"
                                                                      f"{p['number']}"}))
                    for p in self.pulls.values()]
        return [j for t, j in sorted(threads, key=lambda x: -x[0]["number"])
                if (state == "all" or t["state"] == state) and all(w in t["labels"] for w in wanted)]

    def _issue_json(self, issue: dict) -> dict:
        api, n = f"{self.url}/repos/{self.repository}", issue["number"]
        return {"id": 5000 + n, "node_id": f"I_{n}", "number": n, "state": issue["state"],
                "state_reason": issue["state_reason"], "title": issue["title"], "body": issue["body"],
                "user": self._user(issue["author"]), "locked": False, "assignees": [], "milestone": None,
                "labels": [{"id": i, "name": name, "color": "ededed", "url": f"{api}/labels/{name}"}
                           for i, name in enumerate(issue["labels"], 1)],
                "comments": len(self.comments.get(n, [])), "created_at": issue["created_at"],
                "updated_at": issue["updated_at"], "closed_at": issue["closed_at"], "url": f"{api}/issues/{n}",
                "html_url": f"{self.url}/{self.repository}/issues/{n}", "comments_url": f"{api}/issues/{n}/comments"}

    # ------------------------------------------------------------------ HTTP

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.method in (method, "*") and fnmatch.fnmatchcase(path, f.path) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer"):
            return value == self.token
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value).decode().partition(":")[2] == self.token
            except ValueError:
                return False
        return False

    def _handle_api(self, method: str, path: str, query: dict[str, str], body: Any,
                    headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one API request; the caller has checked authorisation."""
        with self._lock:
            if self.clock() >= self.rate_reset:
                self.rate_used, self.rate_reset = 0, int(self.clock()) + 3600
            fault = self._take_fault(method, path)
            if fault:
                if fault.after_effect:
                    self._dispatch(method, path, query, body, headers)
                self.rate_used += 1
                if fault.hang:
                    return -1, {}, str(fault.hang).encode()
                return fault.status, self._rate_headers(fault.headers), json.dumps({"message": fault.message}).encode()
            status, payload, extra = self._dispatch(method, path, query, body, headers)
            if method == "GET" and status == 200:
                tag = extra.get("ETag") or 'W/"' + hashlib.sha256(payload).hexdigest()[:40] + '"'
                extra["ETag"] = tag
                if headers.get("if-none-match") == tag:
                    return 304, self._rate_headers({"ETag": tag}), b""
            self.rate_used += 1
            return status, self._rate_headers(extra), payload

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any,
                  headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        for verb, pattern, handler in self._routes():
            m = re.fullmatch(pattern, path)
            if verb != method or not m:
                continue
            try:
                result = handler(query, body, **m.groupdict())
            except HttpError as exc:
                return exc.status, json.dumps(exc.body).encode(), {}
            if (verb == "GET" and path.startswith(f"/repos/{self.repository}/commits/") and "sha" in
                    headers.get("accept", "") and isinstance(result, dict) and "sha" in result):
                return 200, result["sha"].encode(), {"ETag": f'"{result["sha"]}"', "Content-Type":
                                                     "application/vnd.github.sha"}
            return (201 if verb == "POST" else 200), json.dumps(result).encode(), {}
        return 404, json.dumps({"message": f"Not Found: the GitHub emulator has no route for {method} {path}",
                                "documentation_url": "sandbox/github_emulator.py"}).encode(), {}

    def _rate_headers(self, extra: dict[str, str]) -> dict[str, str]:
        rate = self._rate()
        headers = {"X-RateLimit-Limit": str(rate["limit"]), "X-RateLimit-Remaining": str(max(rate["remaining"], 0)),
                   "X-RateLimit-Reset": str(rate["reset"]), "X-RateLimit-Used": str(rate["used"]),
                   "X-RateLimit-Resource": "core"}
        headers.update(extra)
        return headers

    def _handle_git(self, method: str, rest: str, query: str, body: bytes,
                    headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """git's smart HTTP through the real `git http-backend` (CGI), after checking the basic-auth token.
        Scripted faults apply here too, on paths like /<owner>/<name>.git/info/refs."""
        fault = self._take_fault(method, f"/{self.repository}.git{rest}")
        if fault:
            return fault.status, {"Content-Type": "text/plain"}, f"{fault.message}\n".encode()
        env = dict(os.environ, GIT_PROJECT_ROOT=str(self.bare.parent), GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=f"/{self.bare.name}{rest}", QUERY_STRING=query, REQUEST_METHOD=method,
                   CONTENT_TYPE=headers.get("content-type", ""), CONTENT_LENGTH=str(len(body)),
                   REMOTE_USER="x-access-token", REMOTE_ADDR="127.0.0.1")
        if headers.get("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
        if headers.get("git-protocol"):
            env["GIT_PROTOCOL"] = headers["git-protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status, extra = 200, {}
        for line in head.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                extra[key.strip()] = value.strip()
        return status, extra, payload

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `emulator.requests`
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                raw = self._body()
                try:
                    body = json.loads(raw) if raw and not path.startswith("/git/") else raw
                except ValueError:
                    body = raw
                record = Request(self.command, path, query, headers, body)
                with emulator._lock:
                    emulator.requests.append(record)
                git = re.fullmatch(re.escape(f"/git/{emulator.repository}.git") + r"(/.*)", path)
                if not emulator._authorized(headers.get("authorization", "")):
                    status, out_headers, payload = 401, {"WWW-Authenticate": 'Basic realm="GitHub"'}, json.dumps(
                        {"message": "Bad credentials"}).encode()
                elif git:
                    status, out_headers, payload = emulator._handle_git(self.command, git.group(1), parts.query,
                                                                        raw, headers)
                else:
                    status, out_headers, payload = emulator._handle_api(self.command, path, query, body, headers)
                record.status = status
                if status == -1:  # a scripted hang: no answer, then the connection closes
                    emulator._stopping.wait(float(payload))
                    self.close_connection = True
                    return
                self.send_response(status)
                out_headers.setdefault("Content-Type", "application/json; charset=utf-8")
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return Handler

