"""What the Environments page shows, decided from plain ledger rows and settings (no Airflow, no I/O).

The plugin (hubflow.airflow.plugin) gathers the rows and renders this model as HTML and as JSON, so every choice
(which attempt counts as deployed, which hubs exist, what a hub runs) is unit-tested here. Strings from git and
GitHub pass through as data: escaping is the renderer's job.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from hubflow.core.deploy import deploy_dag_id
from hubflow.core.freeze import frozen, next_window
from hubflow.core.settings import Environment, Settings

HISTORY = 100  # attempts read per environment: enough to find what every hub last ran and its last verification
NIGHTLY_DAG = "hubflow_nightly_verify"
RunLink = Callable[[str, str], str]  # (dag_id, run_id) -> URL of the run in the Airflow UI


@dataclass
class EnvironmentRows:
    """What the ledger and Airflow say about one environment; attempts are `Attempt.to_dict()`, newest first."""
    attempts: list[dict[str, Any]]
    last_success: dict[str, Any] | None
    holds: list[dict[str, Any]] = field(default_factory=list)
    switch: str | None = None
    nightly: dict[str, Any] | None = None


def github_web(host: str | None) -> str:
    """The web root of GitHub from the GitHub connection's host: github.com, or a GHE host without its /api/v3."""
    host = (host or "").rstrip("/")
    if not host or host.removeprefix("https://").removeprefix("http://") == "api.github.com":
        return "https://github.com"
    host = host.removesuffix("/api/v3")
    return host if "://" in host else f"https://{host}"


def page(settings: Settings, rows: dict[str, EnvironmentRows], now: dt.datetime, web: str,
         run_link: RunLink) -> dict[str, Any]:
    """The whole page: one entry per environment in `rows`, in settings (promotion) order."""
    return {"repository": settings.repository.github, "repository_url": f"{web}/{settings.repository.github}",
            "generated_at": _iso(now),
            "environments": [environment(env, rows[env.name], now, Links(web, settings.repository.github, run_link))
                             for env in settings.environments if env.name in rows]}


@dataclass
class Links:
    web: str
    repository: str
    run: RunLink

    def commit(self, sha: str | None) -> str | None:
        return web_url(f"{self.web}/{self.repository}/commit/{sha}") if sha else None


def web_url(url: Any) -> str | None:
    """`url` when it is an http(s) URL, else None: a link the page shows can never be javascript: or data:."""
    return url if isinstance(url, str) and url.lower().startswith(("https://", "http://")) else None


def environment(env: Environment, rows: EnvironmentRows, now: dt.datetime, links: Links) -> dict[str, Any]:
    success = rows.last_success
    newest = rows.attempts[0] if rows.attempts else None
    pending = newest if newest and newest["outcome"] != "success" and (
        success is None or newest["id"] > success["id"]) else None
    return {
        "name": env.name,
        "branch": env.branch,
        "dag_id": deploy_dag_id(env.name),
        "deployed": _attempt(success, links) if success else None,
        "last_attempt": _attempt(pending, links) if pending else None,
        "hubs": hubs(rows.attempts, links),
        "holds": [{"revision": h["revision"], "short": h["revision"][:12], "url": links.commit(h["revision"]),
                   "reason": h["reason"], "since": _iso(h.get("created_at"))} for h in rows.holds
                  if h.get("env") == env.name],
        "freeze": freeze(env, rows.switch, now),
        "promotion": promotion(success),
        "nightly": nightly(rows.nightly, links),
    }


def _attempt(a: dict[str, Any], links: Links) -> dict[str, Any]:
    return {"revision": a["revision"], "short": a["revision"][:12], "url": links.commit(a["revision"]),
            "outcome": a["outcome"], "detail": a.get("detail") or "", "run_id": a.get("run_id"),
            "run_url": _links(a).get("run"), "started_at": _iso(a.get("started_at")),
            "finished_at": _iso(a.get("finished_at")), "forced_by": a.get("forced_by"),
            "force_reason": a.get("force_reason")}


def hubs(attempts: list[dict[str, Any]], links: Links) -> list[dict[str, Any]]:
    """Per hub, newest first: what its last successful upgrade installed (revision, image tags, helm revision) and
    its last verification, whichever attempt each came from. A hub removed by a newer success is not listed."""
    found: dict[str, dict[str, Any]] = {}
    gone: set[str] = set()

    def hub(name: str) -> dict[str, Any]:
        return found.setdefault(name, {"name": name, "revision": None, "short": None, "url": None, "images": [],
                                       "helm_revision": None, "release_status": None, "verification": None})

    for a in attempts:
        record, success = a.get("record") or {}, a["outcome"] == "success"
        plan = record.get("plan") or {}
        if success:
            gone.update(n for n in plan.get("removed_hubs", []) if n not in found)
        tags = {i["name"]: i["tag"] for i in plan.get("images", [])}
        uses = {h["name"]: h.get("images", []) for h in plan.get("hubs", [])}
        for release in record.get("releases", []) if success else []:
            if release["hub"] in gone or not release.get("upgraded"):
                continue
            h = hub(release["hub"])
            if h["revision"] is None:
                h.update(revision=a["revision"], short=a["revision"][:12], url=links.commit(a["revision"]),
                         images=[{"name": i, "tag": tags.get(i)} for i in uses.get(release["hub"], [])],
                         helm_revision=release.get("revision"), release_status=release.get("status"))
        for name, result in (record.get("verification") or {}).items():
            if name in gone or not isinstance(result, dict):
                continue
            h = hub(name)
            if h["verification"] is None:
                h["verification"] = {"ok": bool(result.get("ok")), "revision": a["revision"][:12],
                                     "when": _iso(a.get("finished_at") or a.get("started_at")),
                                     "run_url": _links(a).get("run"), "problem": _problem(result)}
    return [found[n] for n in sorted(found)]


def _problem(result: dict[str, Any]) -> str:
    if result.get("ok"):
        return ""
    failed = [f"{c.get('name')}: {c.get('detail')}" for c in result.get("checks", []) if c.get("status") == "failed"]
    return "; ".join(failed) or str(result.get("error") or "failed")


def freeze(env: Environment, switch: str | None, now: dt.datetime) -> dict[str, Any]:
    """The hand switch, whether the environment is frozen now and why, and the current or next window."""
    window = next_window(env, now)
    return {"switch": switch, "frozen": frozen(env, switch, now),
            "window": {"start": _iso(window[0]), "end": _iso(window[1]), "reason": window[2],
                       "current": window[0] <= now} if window else None}


def promotion(success: dict[str, Any] | None) -> dict[str, Any] | None:
    """The promotion PR the newest success opened (or owes), from its record."""
    if not success:
        return None
    record = success.get("record") or {}
    url, state = _links(success).get("promotion"), record.get("promotion")
    if not url and state in (None, "none"):
        return None
    return {"url": url, "state": state, "revision": success["revision"][:12]}


def nightly(report: dict[str, Any] | None, links: Links) -> dict[str, Any] | None:
    if not report:
        return None
    run_id = report.get("run_id")
    return {"ok": bool(report.get("ok")), "when": _iso(report.get("created_at")), "run_id": run_id,
            "run_url": web_url(links.run(NIGHTLY_DAG, run_id)) if run_id else None,
            "summary": summary_text(report.get("summary"))}


def summary_text(summary: Any, limit: int = 300) -> str:
    """One line from a report summary: its text, else its scalar fields as `key: value`."""
    if isinstance(summary, dict):
        text = summary.get("line") or summary.get("text") or ", ".join(
            f"{k}: {v}" for k, v in summary.items() if isinstance(v, (str, int, float, bool)))
    else:
        text = "" if summary is None else str(summary)
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _links(a: dict[str, Any]) -> dict[str, str]:
    """The attempt's recorded links that are web URLs."""
    links = (a.get("record") or {}).get("links")
    return {k: u for k, v in links.items() if (u := web_url(v))} if isinstance(links, dict) else {}


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
