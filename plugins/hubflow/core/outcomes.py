"""hubflow's vocabulary of results: how a run ended (Outcome), who is to blame (Blame), and the typed values that
cross from one step to the next (a fault, one hub's result, the conclusion, the aftermath, a run ended early).

Every layer uses these names: the core decides with them, the Airflow layer turns task states and XComs into them
(hubflow.airflow.results) and back into JSON for XCom and the ledger (`to_dict`/`from_dict`, the same keys as the
ledger has always stored). Kargo's words map onto ours: Failed is the revision's fault, Errored the platform's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Blame(StrEnum):
    """Who a failure belongs to. Only the revision's fault holds and reverts it."""

    REVISION = "revision"
    PLATFORM = "platform"


class Outcome(StrEnum):
    """How a deploy attempt ended; the closing line, the commit status, the ledger and Slack all say the same."""

    SUCCESS = "success"  # deployed and verified (and promoted onwards)
    UNPROMOTED = "unpromoted"  # deployed and verified, but the success path (status, promotion PR) did not finish
    FAILED = "failed"  # the revision is to blame: held and reverted
    PLATFORM = "platform"  # not the revision's fault: nothing held or reverted, the next trigger runs again
    REFUSED = "refused"  # nothing was touched (held, frozen, ungated, bad parameters)
    STOPPED = "stopped"  # the line stops for a person (a revert or a rollback failed, a revert of a revert)
    UNKNOWN = "unknown"  # the run could not conclude: what runs is unknown
    SKIPPED = "skipped"  # nothing to do

    @property
    def status(self) -> str | None:
        """The GitHub commit status it ends with (None: no status, nothing was attempted)."""
        return _STATUS[self]

    @property
    def ledger(self) -> str:
        """The word the ledger keeps: a verified revision is a success there whatever happened to its promotion,
        so the next environment's gate can see it."""
        return Outcome.SUCCESS.value if self is Outcome.UNPROMOTED else self.value


_STATUS = {Outcome.SUCCESS: "success", Outcome.UNPROMOTED: "success", Outcome.FAILED: "failure",
           Outcome.STOPPED: "failure", Outcome.PLATFORM: "error", Outcome.REFUSED: "error", Outcome.UNKNOWN: "error",
           Outcome.SKIPPED: None}
RUNNING = "running"  # the ledger's word for an attempt not concluded yet
LEDGER_WORDS = frozenset({RUNNING, *(o.ledger for o in Outcome)})


class PromotionOutcome(StrEnum):
    """How a promotion (hubflow_promote) ended."""

    OPENED = "opened"  # the promotion PR is open for a person to merge
    MERGED = "merged"  # merged: the next environment deploys from its branch
    REFUSED = "refused"  # a gate or the form said no: nothing changed
    REJECTED = "rejected"  # a person rejected the merge
    FAILED = "failed"  # a step failed (GitHub): the target is unchanged unless the PR shows merged

    @property
    def ok(self) -> bool:
        return self in (PromotionOutcome.OPENED, PromotionOutcome.MERGED)


PROMOTION_LEDGER_WORDS = frozenset({RUNNING, *PromotionOutcome})


class Step(StrEnum):
    """What became of one step (an image's build, a hub's upgrade, a rollback), read from the run."""

    DONE = "done"  # it ran and succeeded
    FAILED = "failed"  # it ran and failed
    BLOCKED = "blocked"  # it never ran: a step it waited for failed
    NOT_RUN = "not run"  # it never ran: skipped, or the run ended first

    @property
    def failed(self) -> bool:
        return self in (Step.FAILED, Step.BLOCKED)


@dataclass
class Fault:
    """Who is to blame for a step that did not succeed, and one sentence saying what happened. `retry`: another try
    of the task is due before any verdict holds: it re-attaches to a pod still running or done, or builds a failed
    image again (deploy.tried)."""

    blame: Blame
    summary: str
    retry: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"blame": self.blame.value, "summary": self.summary, "retry": self.retry}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Fault | None:
        return cls(Blame(d["blame"]), d["summary"], bool(d.get("retry"))) if d else None


@dataclass
class Release:
    """One hub's helm release after the run's upgrade step, as the ledger keeps it."""

    hub: str
    upgraded: bool
    previous_revision: int | None = None  # the helm revision before this run (None: a first install)
    revision: int | None = None  # the helm revision the upgrade made
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Release:
        return cls(d["hub"], bool(d["upgraded"]), d.get("previous_revision"), d.get("revision"), d.get("status"))


@dataclass
class HubResult:
    """What one hub's pipeline did in a run: its upgrade (and the helm revisions before and after it), the fault
    when the upgrade failed, and its verification (the smoke result, None when it never ran)."""

    hub: str
    wave: str  # canary | rest
    upgrade: Step
    helm: dict[str, Any] | None = None  # the upgrade's record: previous_revision, revision, status
    fault: Fault | None = None
    verification: dict[str, Any] | None = None

    @property
    def release(self) -> Release:
        helm = self.helm or {}
        return Release(self.hub, self.upgrade is Step.DONE, helm.get("previous_revision"), helm.get("revision"),
                       helm.get("status"))


@dataclass
class BuildResult:
    """What one image's build did: its step, and the fault when it failed."""

    image: str
    step: Step
    fault: Fault | None = None


@dataclass
class Undo:
    """What to put back for one hub the run changed: a helm rollback to revision `to`, or an uninstall of a first
    install."""

    hub: str
    action: str  # rollback | uninstall
    to: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"hub": self.hub, "action": self.action, **({"to": self.to} if self.action == "rollback" else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Undo:
        return cls(d["hub"], d["action"], d.get("to"))


@dataclass
class Conclusion:
    """What the pods of a run added up to: success, the revision's fault (failed) or the platform's; the first
    stage that went wrong (build, deploy, verify) and a sentence; every planned hub's release; each verification."""

    outcome: Outcome
    stage: str | None
    detail: str
    releases: list[Release] = field(default_factory=list)
    verification: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "stage": self.stage, "detail": self.detail,
                "releases": [r.to_dict() for r in self.releases], "verification": self.verification}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Conclusion | None:
        if not d:
            return None
        return cls(Outcome(d["outcome"]), d.get("stage"), d["detail"],
                   [Release.from_dict(r) for r in d.get("releases", [])], d.get("verification") or {})


@dataclass
class Aftermath:
    """What the failure path does and did: hold, revert, the state it leaves (and so its commit status), a note,
    links."""

    hold: bool
    revert: bool
    state: Outcome
    note: str = ""
    links: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return self.state.status

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), state=self.state.value)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Aftermath | None:
        if not d:
            return None
        return cls(bool(d["hold"]), bool(d["revert"]), Outcome(d["state"]), d.get("note", ""), d.get("links") or {})


@dataclass
class Ended:
    """A run ended by one of its steps before any pod ran (a refusal, a platform fault met while planning)."""

    outcome: Outcome
    detail: str
    attempt: int | None = None  # the ledger attempt the step opened or used, if any

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "detail": self.detail, "attempt": self.attempt}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Ended | None:
        return cls(Outcome(d["outcome"]), d["detail"], d.get("attempt")) if d else None
