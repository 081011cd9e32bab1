"""The steps of a deploy run as plain functions: what the deploy DAG's tasks call, testable without Airflow.

Each step takes what it needs (settings, the mirror, the ledger) and returns JSON-serialisable data for XCom.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from hubflow.config import Environment, Settings
from hubflow.errors import HubflowError
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

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(settings: Settings, env: Environment, repo: Repo, ledger: Ledger, requested: str | None = None) -> Target:
    """The revision to deploy (the requested one, else the branch head) and the last one deployed.

    The event that woke the run is only a wake-up: the branch is read again here and the range starts at the
    last revision the ledger says was deployed, so queued or missed events lose nothing and never deploy twice.
    """
    (head,) = repo.resolve(env.branch)
    (target,) = repo.resolve(requested) if requested else (head,)
    if not repo.is_ancestor(target, head):
        raise Refused(f"revision {target[:12]} is not on branch {env.branch!r} (head {head[:12]})")
    last = ledger.last_success(env.name)
    base = last.revision if last else None
    if base and not repo.is_ancestor(base, target):
        raise Refused(f"the last deployed revision {base[:12]} is not an ancestor of {target[:12]}: "
                      f"{env.branch!r} was rewritten or {target[:12]} is older than what runs; "
                      "deploy the branch head, or force")
    tree = repo.tree_id(target)
    held = ledger.held(target)
    skip = (f"{target[:12]} is already deployed in {env.name}" if base == target else
            f"{target[:12]} is held: {held}" if held else None)
    return Target(env.name, target, base, tree, skip)


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
