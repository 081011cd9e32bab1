"""The steps of a deploy run as plain functions: what the deploy DAG's tasks call, testable without Airflow.

Each step takes what it needs (settings, the mirror, the ledger) and returns JSON-serialisable data for XCom.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from hubflow.core.config import Environment, Settings
from hubflow.core.errors import HubflowError
from hubflow.core.freeze import frozen
from hubflow.core.plan import Plan, make_plan

if TYPE_CHECKING:  # the core takes its clients as arguments and imports none of them
    from hubflow.clients.git import Repo
    from hubflow.clients.ledger import Ledger


REVERTS_TRAILER = "Hubflow-Reverts"  # names the failed head in hubflow's revert commits: what makes a commit a revert


class Refused(HubflowError):
    """The run must not go on (gate, hold, freeze, bad parameters); nothing was touched."""


@dataclass
class Target:
    env: str
    revision: str
    base: str | None
    tree: str
    skip: str | None = None  # why there is nothing to do, when there is nothing to do
    reverts: list[str] = field(default_factory=list)  # held revisions this range reverts (never revert those again)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(settings: Settings, env: Environment, repo: Repo, ledger: Ledger, requested: str | None = None,
            freeze_switch: str | None = None) -> Target:
    """The revision to deploy and the last one deployed.

    The newest head wins: the event or request that woke the run is only a wake-up (a requested revision must be on
    the branch), the branch is read again here, and the range starts at the last revision the ledger says was
    deployed. Queued or missed events therefore lose nothing and never deploy twice.
    """
    (head,) = repo.resolve(env.branch)
    if requested:
        (wanted,) = repo.resolve(requested)
        if not repo.is_ancestor(wanted, head):
            raise Refused(f"revision {wanted[:12]} is not on branch {env.branch!r} (head {head[:12]})")
    why_frozen = frozen(env, freeze_switch)
    if why_frozen:
        raise Refused(f"{why_frozen}; nothing was deployed")
    last = ledger.last_success(env.name)
    base = last.revision if last else None
    if base and not repo.is_ancestor(base, head):
        raise Refused(f"the last deployed revision {base[:12]} is not an ancestor of {head[:12]}: "
                      f"{env.branch!r} was rewritten; deploy with force to start again from the head")
    target = Target(env.name, head, base, repo.tree_id(head))
    held = ledger.held(head)
    if base == head:
        target.skip = f"{head[:12]} is already deployed in {env.name}"
    elif held:
        target.skip = f"{head[:12]} is held: {held}"
    else:
        target.reverts = _check_holds(repo, ledger, base, head)
    return target


def _check_holds(repo: Repo, ledger: Ledger, base: str | None, head: str) -> list[str]:
    """Refuse a range that still carries a held revision; return the held revisions it reverts."""
    held = {h["revision"]: h["reason"] for h in ledger.holds()}
    if not held:
        return []
    log = repo.git("log", "--format=%H%x00%B%x01", f"{base}..{head}" if base else head)
    commits = [entry.strip("\n").split("\0", 1) for entry in log.split("\x01") if entry.strip()]
    messages = "\n".join(body for _, body in commits)
    reverted = [sha for sha in held if f"This reverts commit {sha}" in messages
                or f"{REVERTS_TRAILER}: {sha}" in messages]
    for sha, _ in commits:
        if sha in held and sha not in reverted:
            raise Refused(f"{head[:12]} still contains held revision {sha[:12]} ({held[sha]}): "
                          "merge its revert first, or clear the hold with `hubflow hold --clear`")
    return reverted


def gate(settings: Settings, env: Environment, target: Target, ledger: Ledger,
         force_reason: str | None = None) -> str | None:
    """Promote exactly what was tested: the target's tree must equal the tree of a revision verified in the
    environment before this one. Returns the verified revision it matches; refuses otherwise unless forced."""
    names = [e.name for e in settings.environments]
    i = names.index(env.name)
    if i == 0:
        return None
    previous = names[i - 1]
    verified = ledger.verified_revision_for_tree(previous, target.tree)
    if verified:
        return verified
    if force_reason:
        return None
    raise Refused(f"{target.revision[:12]} (tree {target.tree[:12]}) matches no revision verified on {previous}: "
                  f"promote a revision that passed {previous}, or force with a reason")


def plan(settings: Settings, repo: Repo, target: Target, ledger: Ledger) -> Plan:
    """The plan of the range; when it reverts a failed revision, the hubs that failed run touched are deployed
    (and verified) again whatever the diff says, so a rollback that did not take is mended by the revert's run."""
    also = {hub: f"redeploy: touched by the failed run of {sha[:12]}, which this range reverts"
            for sha in target.reverts for hub in ledger.planned_hubs(target.env, sha)}
    return make_plan(repo, target.base, target.revision, settings.repository.fleet_file,
                     [e.name for e in settings.environments], also)


# ---------------------------------------------------------------- after the pods: what happened, in words


def _stage(states: dict[str, str], task: str) -> dict[str, str]:
    """States of one task's instances: `task` when it never expanded, `task_<i>` per mapped instance."""
    return {k: v for k, v in states.items() if k == task or k.startswith(f"{task}_")}


def map_index_of(key: str) -> int | None:
    tail = key.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def conclude(env: Environment, target: dict, planned: dict, states: dict[str, str], deployed: list[dict | None],
             verified: list[dict | None]) -> dict:
    """Success only when every planned hub was upgraded and verified; otherwise the first stage that failed."""
    hubs = planned["hubs"]
    releases = [{"hub": hub, "upgraded": bool(d), "previous_revision": (d or {}).get("previous_revision"),
                 "revision": (d or {}).get("revision"), "status": (d or {}).get("status")}
                for hub, d in zip(hubs, deployed)]
    verification = {hub: v for hub, v in zip(hubs, verified) if v}
    failed_builds = [planned["build"][i]["labels"].get("hubflow.io/image", f"#{i}")
                     for k, s in _stage(states, "build").items() if s == "failed" and (i := map_index_of(k)) is not None]
    failed_deploys = [hubs[i] for k, s in _stage(states, "deploy").items()
                      if s == "failed" and (i := map_index_of(k)) is not None]
    failed_checks = {hub: [c for c in v["checks"] if c["status"] == "failed"]
                     for hub, v in verification.items() if not v["ok"]}
    rev = target["revision"][:12]
    if failed_builds:
        stage, detail = "build", f"the build of image(s) {', '.join(failed_builds)} failed; nothing was deployed"
    elif failed_deploys:
        stage, detail = "deploy", f"the helm upgrade of hub(s) {', '.join(failed_deploys)} failed"
    elif failed_checks:
        stage = "verify"
        detail = "verification failed: " + "; ".join(
            f"hub {hub}: " + ", ".join(f"{c['name']}: {c['detail']}" for c in checks)
            for hub, checks in failed_checks.items())
    elif any(not r["upgraded"] for r in releases) or len(verification) < len(hubs):
        stage = "deploy" if any(not r["upgraded"] for r in releases) else "verify"
        missing = [r["hub"] for r in releases if not r["upgraded"]] or [h for h in hubs if h not in verification]
        detail = f"hub(s) {', '.join(missing)} did not finish the {stage} step (task killed or skipped)"
    else:
        stage = None
        detail = f"{rev} deployed and verified on {len(hubs)} hub(s) in {env.name}" if hubs else \
            f"{rev} changes no hub in {env.name}: nothing to deploy"
    return {"outcome": "success" if stage is None else "failed", "stage": stage, "detail": detail,
            "releases": releases, "verification": verification}


def failure_comment(env: str, revision: str, outcome: dict, note: str, links: dict[str, str]) -> str:
    """The comment left on each PR of a failed range."""
    rolled = [r["hub"] for r in outcome["releases"] if r["upgraded"] and r["previous_revision"]]
    lines = [f"**hubflow: `{revision[:12]}` failed on {env}** at the {outcome['stage']} step.", "",
             outcome["detail"], "",
             f"- rolled back: {', '.join(rolled) if rolled else 'nothing (no hub was left upgraded)'}",
             f"- the revision is held: it will not be deployed again or promoted until the hold is cleared",
             f"- {note}"]
    lines += [f"- [{name}]({url})" for name, url in links.items()]
    return "\n".join(lines) + "\n"


def final_line(env: str, target: dict, outcome: dict, aftermath: dict | None,
               rollback_failed: list[str] = ()) -> str:
    """One line for the end of the log, the ledger and Slack: what happened and what runs in `env` now."""
    rev = target["revision"][:12]
    if outcome["outcome"] == "success":
        return f"{env}: {outcome['detail']}; {env} now runs {rev}"
    rolled = [r["hub"] for r in outcome["releases"]
              if r["upgraded"] and r["previous_revision"] and r["hub"] not in rollback_failed]
    back = (f"hub(s) {', '.join(rolled)} rolled back to their previous helm revisions" if rolled
            else "no hub was left upgraded" if not rollback_failed else "")
    if rollback_failed:
        back += (f"{'; ' if back else ''}the ROLLBACK FAILED for hub(s) {', '.join(rollback_failed)}: they may still "
                 f"run {rev}, check `helm history` and roll back by hand")
    base = target["base"][:12] if target.get("base") else "nothing (first deploy)"
    now = (f"{env} runs {base} again" if not rollback_failed
           else f"{env} runs {base} except hub(s) {', '.join(rollback_failed)}")
    return (f"{env}: {rev} FAILED at {outcome['stage']}: {outcome['detail']}; {back}; {rev} is held; "
            f"{(aftermath or {}).get('note', 'no revert was made')}; {now}")


def failed_task_line(task_id: str, map_index: int, error: str) -> str:
    """The last line of a failed task's log: what failed and what state the environment is left in."""
    if task_id == "record":
        return f"hubflow: {error}"  # record fails with the run's closing line itself
    which = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else task_id
    after = {
        "resolve": "nothing was touched",
        "gate": "nothing was touched; the refusal is in the ledger and the commit status",
        "plan": "nothing was touched",
        "build": "nothing was deployed; the failure path holds and reverts the revision",
        "deploy": "helm --atomic returned this release to its previous revision; the failure path rolls back "
                  "the other upgraded hubs, holds and reverts the revision",
        "verify": "the failure path rolls back every upgraded hub, holds and reverts the revision",
        "rollback": "this release may still run the failed revision: check `helm history` and roll back by hand",
    }.get(task_id, "see the run's final `record` task for the state of the environment")
    return f"hubflow: {which} failed ({error.strip().splitlines()[-1] if error.strip() else 'no message'}); {after}"
