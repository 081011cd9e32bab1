"""The steps of a deploy run as plain functions: what the deploy DAG's tasks call, testable without Airflow.

Each step takes what it needs (settings, the mirror, the ledger) and returns JSON-serialisable data for XCom.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hubflow.config import Environment, Settings
from hubflow.errors import HubflowError
from hubflow.freeze import frozen
from hubflow.git import Repo
from hubflow.ledger import Ledger
from hubflow.plan import Plan, make_plan


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
    reverted = [sha for sha in held if f"This reverts commit {sha}" in messages]
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


def plan(settings: Settings, repo: Repo, target: Target) -> Plan:
    return make_plan(repo, target.base, target.revision, settings.repository.fleet_file,
                     [e.name for e in settings.environments])
