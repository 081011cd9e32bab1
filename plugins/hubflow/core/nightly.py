"""The nightly verification's decisions: what counts as drift, a stuck release, a missing image or a promotion lag;
the rows of one environment's summary, whether it is ok, and the texts (log table, Slack, GitHub issue).

Plain Python, no Airflow and no I/O: the task gathers releases, the registry, the ledger and git, and asks here.

Values that are comparable: helm keeps the user-supplied values of a release (`config`), which hold the decrypted
secrets. hubflow cannot decrypt sops files, so every leaf a sops-encrypted values file sets (its keys are plain text)
is left out on both sides; everything else (the plain values files in helm's order, then the image overrides) must
be exactly what the release runs. Digests of that projection are compared; the config never leaves the task.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hubflow.core.fleet import Hub
from hubflow.core.messages import code_span, slack_escape, slack_link

LAG_DAYS = 7  # a verified revision of an environment missing from the next one for longer than this is a problem
ISSUE_LABEL = "hubflow-nightly"
SENSITIVE = object()  # a leaf set by a sops-encrypted file: not comparable


@dataclass
class Finding:
    check: str  # smoke | drift | release | image | lag | leftovers | platform
    detail: str
    problem: bool = True  # False: a note, shown but not failing the environment


@dataclass
class HubRow:
    hub: str
    smoke: str = "skipped"  # passed | failed | skipped
    release: str = "-"  # "deployed v4", "pending-upgrade v5", "not installed"
    revision: str | None = None  # the hubflow revision the release runs
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.problem for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), ok=self.ok)


# ---------------------------------------------------------------- values


def _merge(base: dict, top: dict) -> dict:
    """helm's merge of values files: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _mark(values: Any) -> Any:
    """Every leaf of a sops file replaced by SENSITIVE (its own `sops` block dropped)."""
    if isinstance(values, dict):
        return {k: _mark(v) for k, v in values.items()}
    return SENSITIVE


def _set(values: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(values.get(part), dict):
            values[part] = {}
        values = values[part]
    values[last] = value


def _get(values: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(values, dict):
            return None
        values = values.get(part)
    return values


def _sensitive_paths(values: Any, prefix: str = "") -> list[str]:
    if values is SENSITIVE:
        return [prefix]
    if isinstance(values, dict):
        return [p for k, v in values.items() for p in _sensitive_paths(v, f"{prefix}.{k}" if prefix else k)]
    return []


def _without(values: dict, paths: list[str]) -> dict:
    out = copy.deepcopy(values)
    for path in paths:
        *parents, last = path.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def is_sops(values: Any) -> bool:
    return isinstance(values, dict) and isinstance(values.get("sops"), dict)


def expected_values(files: list[Any], images: dict[str, tuple[str, str]]) -> tuple[dict, list[str]]:
    """(what hubflow passes to helm, without what sops files set; the paths left out) for values `files` parsed in
    helm's order and `images` (values path -> (repository, tag)) set as hubflow's --set-string overrides do."""
    merged: dict = {}
    for values in files:
        if is_sops(values):
            values = _mark({k: v for k, v in values.items() if k != "sops"})
        merged = _merge(merged, values if isinstance(values, dict) else {})
    for where, (repository, tag) in images.items():
        _set(merged, f"{where}.name", repository)
        _set(merged, f"{where}.tag", tag)
    hidden = _sensitive_paths(merged)
    return _without(merged, hidden), hidden


def values_digest(values: dict, hidden: Sequence[str] = ()) -> str:
    """A short digest of values as JSON (helm's JSON writes 2.0 as 2), `hidden` paths left out."""
    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return int(v) if isinstance(v, float) and v.is_integer() else v
    text = json.dumps(norm(_without(values, list(hidden))), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def running_images(hub: Hub, config: dict) -> dict[str, dict[str, str | None]]:
    """Values path -> {name, tag} the release runs, for each image hubflow sets in this hub."""
    return {ref.values_path: {"name": _get(config, f"{ref.values_path}.name"),
                              "tag": _get(config, f"{ref.values_path}.tag")} for ref in hub.images or []}


# ---------------------------------------------------------------- per release


def release_findings(latest: dict | None, now: dt.datetime, helm_seconds: int) -> list[Finding]:
    """The newest helm record of a release: missing, stuck in pending-* past the deploy timeout, or left failed.

    `latest` holds status, version, updated (aware datetime) and description."""
    if latest is None:
        return [Finding("release", "not installed: helm has no record of this release")]
    status, version = latest["status"], latest["version"]
    if status.startswith("pending-") or status == "uninstalling":
        age = now - latest["updated"]
        since = f"since {latest['updated'].isoformat(timespec='minutes')} ({_duration(age)})"
        if age.total_seconds() > helm_seconds:
            return [Finding("release", f"stuck in {status} at helm revision {version} {since}, longer than the "
                                       f"deploy timeout ({helm_seconds}s): roll it back by hand")]
        return [Finding("release", f"{status} at helm revision {version} {since}: a helm operation is running",
                        problem=False)]
    if status == "failed":
        return [Finding("release", f"left failed at helm revision {version} ({latest.get('description') or '-'})")]
    return []


def drift_findings(env: str, branch: str, head: str, expected: dict, running: dict | None,
                   behind: str | None) -> list[Finding]:
    """What the release runs (`running`: chart_version, images, values_digest, env, revision of its deployed record)
    against what the branch head says (`expected`: the same keys). `behind` is why hubflow would redeploy the hub from
    the running revision to the head (the plan's reason), None when it would not, "not on the branch" if unrelated."""
    if running is None:
        return []  # release_findings said why nothing is deployed
    out = []
    if running["chart_version"] != expected["chart_version"]:
        out.append(Finding("drift", f"chart {running['chart_version']}, the branch says {expected['chart_version']}"))
    for where, want in expected["images"].items():
        have = running["images"].get(where) or {}
        if (have.get("name"), have.get("tag")) != (want["name"], want["tag"]):
            out.append(Finding("drift", f"image {where} is {have.get('name')}:{have.get('tag')}, the branch says "
                                        f"{want['name']}:{want['tag']}"))
    if running["values_digest"] != expected["values_digest"]:
        out.append(Finding("drift", f"values differ from the branch ({running['values_digest']} vs "
                                    f"{expected['values_digest']}; sops-encrypted keys not compared)"))
    revision = running.get("revision")
    if revision is None:
        out.append(Finding("drift", f"not deployed by hubflow (release description {running.get('description')!r})"))
    elif running.get("env") != env:
        out.append(Finding("drift", f"deployed by hubflow for {running.get('env')}, not {env}"))
    elif behind:
        where = f"not on {branch}" if behind == "not on the branch" else f"behind {branch} {head[:12]}: {behind}"
        out.append(Finding("drift", f"runs {revision[:12]}, {where}"))
    return out


def smoke_findings(result: dict | None) -> tuple[str, list[Finding]]:
    """(smoke state, findings) of a verification result (None: not run); leftover smoke users it removed are a note,
    a cleanup that failed leaves them behind: a problem."""
    if result is None:
        return "skipped", []
    out = []
    checks = {c["name"]: c for c in result.get("checks", [])}
    leftovers = checks.get("leftovers", {})
    if leftovers.get("status") == "passed" and "removed" in leftovers.get("detail", ""):
        out.append(Finding("leftovers", f"smoke users left by an earlier run: {leftovers['detail']}", problem=False))
    if checks.get("cleanup", {}).get("status") == "failed":
        out.append(Finding("leftovers", f"smoke users may be left behind: {checks['cleanup']['detail']}"))
    if result.get("ok"):
        return "passed", out
    failed = "; ".join(f"{c['name']}: {c['detail']}" for c in result.get("checks", []) if c["status"] == "failed")
    tries = f" (tried {result['tries']} times)" if result.get("tries", 1) > 1 else ""
    blame = " [platform]" if result.get("blame") == "platform" else ""
    return "failed", [Finding("smoke", f"{failed or result.get('error') or 'failed'}{tries}{blame}")] + out


# ---------------------------------------------------------------- per environment


def image_findings(images: list[dict]) -> list[Finding]:
    """Each image the environment runs ({ref, digest: in the registry or None, verified: recorded or None})."""
    out = []
    for image in images:
        if image["digest"] is None:
            out.append(Finding("image", f"{image['ref']} is not in the registry"))
        elif image["verified"] is None:
            out.append(Finding("image", f"{image['ref']}: no verified digest recorded", problem=False))
        elif image["verified"] != image["digest"]:
            out.append(Finding("image", f"{image['ref']} is {image['digest']}, {image['verified']} was verified"))
    return out


def verified_digests(records: list[dict]) -> dict[tuple[str, str | None], str]:
    """(image name, tag) -> digest recorded by successful deploys, newest record first in `records`; a record
    without its plan (a baseline) gives (name, None), which stands for any tag not seen with a plan."""
    out: dict[tuple[str, str | None], str] = {}
    for record in records:
        tags = {i["name"]: i["tag"] for i in (record.get("plan") or {}).get("images", [])}
        for name, digest in (record.get("digests") or {}).items():
            if digest:
                out.setdefault((name, tags.get(name)), digest)
    return out


def verified_digest(digests: dict[tuple[str, str | None], str], name: str, tag: str) -> str | None:
    return digests.get((name, tag)) or digests.get((name, None))


def promotion_lag(source: str, target: str, verified: list[tuple[str, dt.datetime]], contained: set[str],
                  now: dt.datetime, days: int = LAG_DAYS) -> list[Finding]:
    """A revision verified in `source` (revision, when) that `target` lacks (not in `contained`) for over `days`."""
    missing = [(when, rev) for rev, when in verified if rev not in contained]
    if not missing:
        return []
    when, rev = min(missing)
    if now - when <= dt.timedelta(days=days):
        return []
    return [Finding("lag", f"{source} revision {rev[:12]}, verified {_duration(now - when)} ago, is not in {target} "
                           f"(more than {days} days)")]


def deploy_window(timeouts: Any) -> int:
    """Seconds one deploy's steps can take end to end (its timeouts): the ledger's age rule, used only when Airflow
    cannot be asked whether a deploy runs (an attempt `running` for longer is then taken as abandoned)."""
    return (timeouts.build_seconds + timeouts.pod_startup_seconds + timeouts.helm_seconds
            + timeouts.smoke_seconds)


WAIT_WINDOWS = 3  # how many deploy windows the nightly waits for live deploys before it gives up (waves add up)


def wait_seconds(timeouts: Any) -> int:
    """How long the nightly waits while Airflow says a deploy of the environment is queued or running: a deploy of
    several waves (canaries, then the rest in slots of max_parallel) lives a few windows; a run still live after
    that is stuck, and the nightly ends saying it could not check rather than waiting into the next night."""
    return WAIT_WINDOWS * deploy_window(timeouts)


LIVE = ("queued", "running")  # Airflow's states of a deploy run that is live (queued: it starts when one ends)


@dataclass(frozen=True)
class DeployRuns:
    """What Airflow says about the deploy runs of one environment (`hubflow_deploy_<env>`)."""
    live: int  # runs queued or running (queued: it starts as soon as the running one ends)
    states: dict[str, str | None]  # run id of each ledger attempt still `running` -> its state (None: no such run)


def deploy_running(attempts: list[dict], airflow: DeployRuns | None, now: dt.datetime, window: int) -> dict | None:
    """The deploy the nightly waits for (a deploy changes what it would check), or None.

    Airflow decides: the newest ledger attempt still `running` whose run Airflow says is queued or running, however
    old it is (a long wave is not abandoned); else, with a deploy run of the environment queued or running that has
    not opened its attempt yet, that run (`run_id` and `revision` None). An attempt `running` whose run Airflow says
    has ended is not waited for (see `abandoned`). `airflow` None (Airflow could not be asked): the ledger's age
    decides, the newest attempt still `running` that started less than `window` seconds ago."""
    running = [a for a in attempts if a["outcome"] == "running"]
    if airflow is None:
        return next((a for a in running if (now - a["started_at"]).total_seconds() < window), None)
    live = next((a for a in running if airflow.states.get(a["run_id"]) in LIVE), None)
    if live is not None:
        return dict(live, state=airflow.states[live["run_id"]])
    if airflow.live:
        return {"run_id": None, "revision": None, "started_at": None, "state": "queued or running"}
    return None


def abandoned(attempts: list[dict], airflow: DeployRuns | None) -> list[dict]:
    """Ledger attempts still `running` whose run Airflow says has ended (or does not know): abandoned, each with
    Airflow's `state` (None: no such run). What such a deploy changed shows as drift. Empty when Airflow could not
    be asked."""
    if airflow is None:
        return []
    return [dict(a, state=airflow.states.get(a["run_id"])) for a in attempts
            if a["outcome"] == "running" and airflow.states.get(a["run_id"]) not in LIVE]


def waiting_line(env: str, deploy: dict) -> str:
    """The sensor's log line while it waits for `deploy` (from `deploy_running`)."""
    if deploy.get("revision") is None:
        return f"a deploy run of {env} is {deploy.get('state')} in Airflow (no ledger attempt yet): waiting"
    since = deploy["started_at"].isoformat(timespec="seconds")
    said = (f"Airflow says its run is {deploy['state']}" if deploy.get("state")
            else "Airflow could not be asked; the ledger's attempt is younger than a deploy can take")
    return f"a deploy of {env} runs (run {deploy['run_id']}, revision {deploy['revision'][:12]}, since {since}; " \
           f"{said}): waiting"


def not_checked(env: str, deploy: dict | None, waited: int) -> str:
    """Why an environment's checks did not run (its inventory left nothing): a deploy Airflow still says is live
    after the nightly waited `waited` seconds (`deploy` from `deploy_running`), or else the branch or its fleet."""
    if deploy is None:
        return (f"{env} was not checked: the branch or its fleet could not be read (see inventory), or the wait for "
                f"a deploy ended (see wait_for_deploys)")
    which = (f"run {deploy['run_id']}, revision {deploy['revision'][:12]}" if deploy.get("revision")
             else "a run that has not opened its ledger attempt yet")
    return (f"{env} was not checked: a deploy of it still runs ({which}) after the nightly waited "
            f"{_duration(dt.timedelta(seconds=waited))} for it (see wait_for_deploys); nothing was checked, so "
            f"nothing it changes is reported as drift")


def abandoned_finding(attempt: dict) -> Finding:
    """A note for an attempt the ledger still has `running` though its run has ended: not waited for, and what
    it changed is reported as it is (drift), not as a deploy in progress."""
    state = attempt.get("state")
    said = f"Airflow says that run ended ({state})" if state else "Airflow has no such run"
    return Finding("deploy", f"abandoned attempt: the ledger still has the deploy of {attempt['revision'][:12]} "
                             f"(run {attempt['run_id']}, started {attempt['started_at'].isoformat(timespec='minutes')})"
                             f" running, but {said}; not waited for: what it changed shows here as it is",
                   problem=False)


def overlapping(attempts: list[dict], since: dt.datetime, airflow: DeployRuns | None = None,
                now: dt.datetime | None = None, window: int = 0) -> dict | None:
    """A deploy that ran while the checks did (they began at `since`): the results may show it, not the night.

    A ledger attempt that started or ended after `since`, or one still `running` whose run Airflow says is running
    (it started before the checks, yet ran during them). An attempt left `running` by a run that has ended is not
    one (it is `abandoned`). A deploy run without an attempt yet has changed nothing (the attempt is opened before
    any pod). `airflow` None (Airflow could not be asked): `running` attempts younger than `window` count."""
    for a in attempts:
        if a["started_at"] >= since or (a.get("finished_at") and a["finished_at"] >= since):
            return a
        if a["outcome"] != "running":
            continue
        if airflow is None:
            if now is not None and (now - a["started_at"]).total_seconds() < window:
                return a
        elif airflow.states.get(a["run_id"]) == "running":
            return a
    return None


def summarize(env: str, head: str, rows: list[HubRow], findings: list[Finding], checked_at: dt.datetime,
              overlapped: dict | None = None, partial: bool = False) -> dict[str, Any]:
    """One environment's report (JSON): per-hub rows, environment-wide findings, ok. `partial`: some hubs or the
    smoke tests were left out by the run, so it may report problems but not that all is green."""
    ok = all(r.ok for r in rows) and not any(f.problem for f in findings)
    summary = {"environment": env, "head": head, "ok": ok, "checked_at": checked_at.isoformat(timespec="seconds"),
               "hubs": [r.to_dict() for r in rows], "findings": [asdict(f) for f in findings],
               "problems": sum(not r.ok for r in rows) + sum(f.problem for f in findings),
               "overlapped": overlapped, "partial": partial}
    return dict(summary, line=summary_line(summary))


def summary_line(summary: dict, shown: int = 3) -> str:
    """The report in one line, for the Environments page: what is wrong first."""
    if summary.get("overlapped"):
        return f"discarded: {discarded_reason(summary)}"
    if summary["ok"]:
        return f"all {len(summary['hubs'])} hub(s) ok" + (" (a partial run)" if summary.get("partial") else "")
    found = [f"{hub}: {f['check']}: {f['detail']}" for hub, f in _problems(summary) if f["problem"]]
    more = f"; and {len(found) - shown} more" if len(found) > shown else ""
    return f"{summary['problems']} problem(s): " + "; ".join(found[:shown]) + more


def issue_action(summary: dict) -> str:
    """What the run does to the environment's issue: ensure (problems), close (a complete green run), or leave it
    (results discarded, or green but partial: what was left out may still be broken)."""
    if summary.get("overlapped"):
        return "leave"
    if not summary["ok"]:
        return "ensure"
    return "leave" if summary.get("partial") else "close"


def _problems(summary: dict) -> list[tuple[str, dict]]:
    out = [(h["hub"], f) for h in summary["hubs"] for f in h["findings"]]
    return out + [("-", f) for f in summary["findings"]]


def format_table(summary: dict) -> str:
    """The report as a table for the task log."""
    lines = [f"nightly {summary['environment']} at {summary['head'][:12]}: "
             f"{'ok' if summary['ok'] else str(summary['problems']) + ' problem(s)'}",
             f"  {'hub':<20} {'smoke':<8} {'release':<22} {'revision':<13} findings"]
    for h in summary["hubs"]:
        found = "; ".join(("" if f["problem"] else "(note) ") + f"{f['check']}: {f['detail']}"
                          for f in h["findings"]) or "-"
        lines.append(f"  {h['hub']:<20} {h['smoke']:<8} {h['release']:<22} {(h['revision'] or '-')[:12]:<13} {found}")
    lines += [f"  {'(environment)':<20} {'' if f['problem'] else '(note) '}{f['check']}: {f['detail']}"
              for f in summary["findings"]]
    if summary.get("overlapped"):
        lines.append(f"  DISCARDED: {discarded_reason(summary)}")
    return "\n".join(lines)


def discarded_reason(summary: dict) -> str:
    o = summary["overlapped"]
    return (f"a deploy of {o['revision'][:12]} (run {o['run_id']}) started during the checks; they may show it "
            f"half done, so the issue is left as it was")


def slack_text(summary: dict, run_url: str, issue_url: str | None) -> str:
    env = summary["environment"]
    if summary.get("overlapped"):
        head = f":warning: hubflow nightly {env}: results discarded"
        body = [slack_escape(discarded_reason(summary))]
    elif summary["ok"]:
        head, body = f":white_check_mark: hubflow nightly {env}: all {len(summary['hubs'])} hub(s) ok", []
        if summary.get("partial"):
            head += " (a partial run: some hubs or the smoke tests were left out)"
    else:
        head = f":x: hubflow nightly {env}: {summary['problems']} problem(s)"
        body = [f"- {slack_escape(hub)}: {f['check']}: {slack_escape(f['detail'])}"
                for hub, f in _problems(summary) if f["problem"]]
    links = [slack_link(run_url, "run")] + ([slack_link(issue_url, "issue")] if issue_url else [])
    return "\n".join([head, *body, " ".join(links)])


def issue_title(env: str) -> str:
    return f"hubflow nightly: {env} has problems"


def issue_key(env: str) -> str:
    return f"nightly-{env}"


def issue_body(summary: dict, run_url: str) -> str:
    """The issue's Markdown: kept up to date by each night; text hubflow did not write is a code span."""
    rows = [f"| {h['hub']} | {h['smoke']} | {code_span(h['release'])} | "
            f"{code_span((h['revision'] or '-')[:12])} | {'ok' if h['ok'] else 'PROBLEM'} |" for h in summary["hubs"]]
    found = [f"- **{hub}** {f['check']}{'' if f['problem'] else ' (note)'}: {code_span(f['detail'])}"
             for hub, f in _problems(summary)]
    return "\n".join([
        f"The nightly verification of **{summary['environment']}** found {summary['problems']} problem(s) at "
        f"`{summary['head']}` ({summary['checked_at']}). hubflow updates this issue every night and closes it "
        "when everything is green again.", "",
        "| hub | smoke | release | revision | |", "|---|---|---|---|---|", *rows, "",
        "Findings:", *(found or ["- (none)"]), "", f"[Last run]({run_url})"]) + "\n"


def closing_comment(summary: dict, run_url: str) -> str:
    return (f"All {len(summary['hubs'])} hub(s) of **{summary['environment']}** are green again at "
            f"`{summary['head']}` ({summary['checked_at']}): closing. [Run]({run_url})")


def _duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m"
