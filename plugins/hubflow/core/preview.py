"""The PR preview: one comment per open PR against an environment branch saying what its merge would deploy.

Pure text: the task gathers the plan (between the branch head and the PR's head merged onto it), the packages each
hub's smoke test imports, the freeze and the holds, and this module writes the comment. The output depends on
those facts only (no clock, no run id), so a PR that did not change gives the same comment and GitHub sees no
edit. Every string people control (paths, hub and image names, reasons, validation problems) is a code span.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from hubflow.core.messages import code_span

KEY = "hubflow-preview"  # the comment's key (clients.github.GitHub.comment)
_STATE = re.compile(r"^<!-- hubflow-preview head=([0-9a-f]{40}) base=([0-9a-f]{40}) -->$", re.M)


@dataclass
class Preview:
    """What the comment of one PR says; `problem` (and its `details`) replaces the plan when there is none."""

    number: int
    env: str
    branch: str
    base: str  # the branch head the merge is planned onto
    head: str  # the PR's head commit
    fork: str | None = None  # owner/name of the fork the head comes from
    conflicts: list[str] | None = None  # the merge conflicts in these files: planned merge-base..head instead
    plan: dict | None = None  # Plan.to_dict()
    packages: dict[str, list[str]] = field(default_factory=dict)  # hub -> what its smoke test imports
    package_problems: dict[str, str] = field(default_factory=dict)  # hub -> why its packages cannot be read
    frozen: str | None = None  # why the environment is frozen now
    next_window: dict | None = None  # {"start", "end", "reason"} of the next freeze window
    held: str | None = None  # why the deploy would refuse a held revision this PR carries
    holds_known: bool = True  # False when the PR's commits could not be read
    reverts: list[str] = field(default_factory=list)  # held revisions this PR reverts
    problem: str | None = None
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def described(body: str | None) -> tuple[str, str] | None:
    """(head, base) that an earlier comment describes, from its hidden line; None when there is no such comment."""
    found = _STATE.findall(body or "")
    return found[-1] if found else None


def render(p: Preview) -> str:
    """The comment's Markdown (the hidden marker of its key is added by GitHub.comment)."""
    lines = [f"### hubflow preview: what merging #{p.number} into `{p.branch}` would deploy to {p.env}", ""]
    lines += [_source(p), ""]
    if p.problem:
        lines += [f":warning: **{p.problem}**", *[f"- {code_span(d)}" for d in p.details], ""]
    elif p.plan is not None:
        lines += _plan(p)
    lines += ["**Before it deploys**", f"- {_freeze(p)}", f"- {_holds(p)}", ""]
    lines.append(f"<!-- hubflow-preview head={p.head} base={p.base} -->")
    return "\n".join(lines)


def _source(p: Preview) -> str:
    fork = f" from the fork {code_span(p.fork)}" if p.fork else ""
    if p.conflicts is not None:
        files = ", ".join(code_span(f) for f in p.conflicts) or "some files"
        return (f":warning: This PR's head `{p.head[:12]}`{fork} conflicts with `{p.branch}` (`{p.base[:12]}`) in "
                f"{files}: it cannot merge as it is. Planned from where it left `{p.branch}` to its head instead; "
                "resolve the conflicts for a preview of the merge.")
    return (f"Planned from `{p.branch}` at `{p.base[:12]}` to this PR's head `{p.head[:12]}`{fork} merged onto it: "
            "what the deploy of the merge would do.")


def _plan(p: Preview) -> list[str]:
    plan = p.plan or {}
    images, hubs, removed = plan.get("images", []), plan.get("hubs", []), plan.get("removed_hubs", [])
    if not (images or hubs or removed):
        return [f"Nothing to deploy: the merge changes no hub on {p.env}.", ""]
    out = []
    if images:
        out += ["**Images**"]
        for i in images:
            ref = code_span(f"{i['repository']}:{i['tag']}")
            what = f"**rebuilt**: {code_span(i['reason'])}" if i["changed"] else "reused (unchanged)"
            out.append(f"- {code_span(i['name'])} {ref} {what}")
        out.append("")
    out += [f"**Hubs upgraded on {p.env}** ({len(hubs)})" if hubs else f"**No hub is upgraded on {p.env}.**"]
    for h in hubs:
        out.append(f"- {code_span(h['name'])}: {code_span(h['reason'])}; smoke test imports {_packages(p, h['name'])}")
    out.append("")
    if removed:
        out += ["**Hubs removed from the fleet** (not deployed and not uninstalled: uninstall them by hand)",
                *[f"- {code_span(name)}" for name in removed], ""]
    return out


def _packages(p: Preview, hub: str) -> str:
    if hub in p.package_problems:
        return f":warning: (cannot be read: {code_span(p.package_problems[hub])})"
    names = p.packages.get(hub) or []
    return ", ".join(code_span(n) for n in names) if names else "nothing (health, API and server checks only)"


def _freeze(p: Preview) -> str:
    if p.frozen:
        return f":no_entry: {p.env} is frozen: {code_span(p.frozen)}; the merge waits until the freeze ends."
    if p.next_window:
        w = p.next_window
        return (f"{p.env} is not frozen; the next freeze window is {w['start']} to {w['end']}: "
                f"{code_span(w['reason'])}.")
    return f"{p.env} is not frozen."


def _holds(p: Preview) -> str:
    if not p.holds_known:
        return "Held revisions: not checked (the PR's commits could not be read)."
    if p.held:
        return f":no_entry: This PR carries a held revision; the deploy would refuse it: {code_span(p.held)}"
    if p.reverts:
        return ("It reverts held revision(s) " + ", ".join(f"`{r[:12]}`" for r in p.reverts)
                + ": the deploy also redeploys and verifies the hubs their failed run touched.")
    return "No held revision in this PR."
