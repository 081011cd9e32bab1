"""Every decision of a deploy run, as plain functions the deploy DAG's thin tasks call (no Airflow, no I/O of its
own: the repository and the ledger are passed in, and the run's results arrive as hubflow.core.outcomes values).

Before the pods: resolve (what to deploy), gate (promote exactly what was tested), plan. After them: what a pod's
failure means (`pod_fault`), what the hubs' results add up to (`conclude`), what to undo (`to_undo`), what the
failure path does (`aftermath`), and the run's final outcome with its one closing line (`final`). The closing
line, the ledger, the commit status and Slack all say the same thing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hubflow.core.errors import HubflowError
from hubflow.core.freeze import frozen
from hubflow.core.outcomes import (
    Aftermath,
    Blame,
    BuildResult,
    Conclusion,
    Ended,
    Fault,
    HubResult,
    Outcome,
    Step,
    Undo,
)
from hubflow.core.plan import Plan, make_plan
from hubflow.core.reverts import REVERTS_TRAILER
from hubflow.core.settings import Environment, Settings

if TYPE_CHECKING:  # the core takes its clients as arguments and imports none of them
    from hubflow.clients.git import Repo
    from hubflow.clients.ledger import Ledger


def deploy_dag_id(env: str) -> str:
    """The id of `env`'s deploy DAG (the pages, the webhook and the nightly name it)."""
    return f"hubflow_deploy_{env}"


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
    owed: int | None = None  # the verified attempt whose promotion never happened (GitHub was down): do it now
    # forced after the branch was rewritten: the revision the ledger says runs, which the branch no longer holds.
    # `base` is then None (the plan deploys every hub); the hubs put back on a failure run this one again.
    rewritten: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Target | None:
        return cls(**d) if d else None


@dataclass
class Planned:
    """The plan of a run as its later steps need it: the ledger attempt, the plan, the hubs in their waves (the
    canary hubs first), and the pods to run (build and upgrade pod specs, plain JSON from hubflow.k8s.pods)."""

    attempt: int
    plan: dict[str, Any]
    waves: dict[str, list[str]]
    build: list[dict[str, Any]] = field(default_factory=list)
    upgrade: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hubs(self) -> list[str]:
        return [h["name"] for h in self.plan["hubs"]]

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), hubs=self.hubs)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Planned | None:
        if not d:
            return None
        return cls(d["attempt"], d["plan"], d["waves"], d.get("build") or [], d.get("upgrade") or [])


def resolve(settings: Settings, env: Environment, repo: Repo, ledger: Ledger, requested: str | None = None,
            freeze_switch: str | None = None, force_reason: str | None = None) -> Target:
    """The revision to deploy and the last one deployed.

    The newest head wins: the event or request that woke the run is only a wake-up (a requested revision must be on
    the branch), the branch is read again here, and the range starts at the last revision the ledger says was
    deployed. Queued or missed events therefore lose nothing and never deploy twice.

    When the branch no longer contains that revision (it was rewritten), no range on the branch leads from what
    runs to the head, so nothing can say which hubs differ: the run is refused, or, forced with a reason (kept in
    the ledger with who), deploys every hub at the head, and a failure puts the hubs back without a revert.
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
    rewritten = None
    if base and not repo.is_ancestor(base, head):
        if not force_reason:
            raise Refused(f"{env.name} runs {base[:12]}, which branch {env.branch!r} no longer contains (head "
                          f"{head[:12]}): the branch was rewritten, so no diff says which hubs differ; nothing was "
                          f"deployed. To deploy every hub at the head, trigger {deploy_dag_id(env.name)} again with "
                          "force_reason set to why (the ledger keeps who forced it and why)")
        base, rewritten = None, base
    target = Target(env.name, head, base, repo.tree_id(head), rewritten=rewritten)
    held = ledger.held(head)
    if last and base == head:
        target.skip = f"{head[:12]} is already deployed in {env.name}"
        if settings.next_environment(env.name) and promotion_owed(last.record):
            target.owed = last.id
    elif held:
        target.skip = f"{head[:12]} is held: {held}"
    else:
        target.reverts = check_holds(repo, ledger, base, head)
    return target


def check_holds(repo: Repo, ledger: Ledger, base: str | None, head: str) -> list[str]:
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
                          f"merge its revert first, or clear the hold with `hubflow hold --clear {sha[:12]} "
                          "--reason WHY`")
    return reverted


def gate(settings: Settings, env: Environment, target: Target, ledger: Ledger,
         force_reason: str | None = None) -> str | None:
    """Promote exactly what was tested: the target's tree must equal the tree of a revision verified in the
    environment before this one. Returns the verified revision it matches; refuses otherwise unless forced."""
    before = settings.previous_environment(env.name)
    if before is None:
        return None
    previous = before.name
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
                     settings.environments, also)  # the environments themselves: their rendered names are checked


def promotion_owed(record: dict) -> bool:
    """A verified attempt whose promotion PR was never opened (the success path could not reach GitHub)."""
    return record.get("promotion") == "owed"


# ---------------------------------------------------------------- after the pods: what a failure means

RUNNER_EXIT = {  # the runner's exit codes (include/runner/hubflow-runner): who is to blame, in a few words;
    # its termination message (one line: what happened, what state the release is left in) follows them
    1: (Blame.REVISION, "helm failed"),
    2: (Blame.PLATFORM, "hubflow's runner was called wrongly (a hubflow bug)"),
    3: (Blame.PLATFORM, "stuck release"),
    4: (Blame.PLATFORM, "cluster or chart repository unreachable"),
    5: (Blame.PLATFORM, "no sops key"),
    6: (Blame.PLATFORM, "the cluster could not schedule the hub's pods"),
}
PLATFORM_BUILD = ("failed to push", "failed to do request", "connection refused", "no such host", "i/o timeout",
                  "unauthorized", "denied:", "tls handshake", "failed to authorize", "toomanyrequests")
# A build step that lost the network (pip, conda, apt, curl, git, npm in their own words; lower case): the platform's,
# whatever the step's last line blames (pip ends with "No matching distribution found" when it could not resolve).
NETWORK_BUILD = ("temporary failure in name resolution", "temporary failure resolving", "could not resolve host",
                 "name or service not known", "connection failed", "failed to establish a new connection",
                 "connection timed out", "read timed out", "operation timed out", "could not connect to",
                 "unable to connect to", "network is unreachable", "connection reset by peer", "eai_again",
                 "etimedout", "econnreset", "503 service unavailable", "502 bad gateway", "504 gateway time")
# The pod's own reason when its node or the scheduler stopped it (the container's reason, Error or
# ContainerStatusUnknown with exit 137, would hide it), and the reasons of a DisruptionTarget condition.
NODE_REASONS = {"Evicted": "evicted by its node", "Preempting": "preempted by its node for a critical pod",
                "NodeLost": "lost with its node", "Terminated": "stopped by its node's shutdown",
                "Shutdown": "stopped by its node's shutdown", "NodeShutdown": "stopped by its node's shutdown",
                "UnexpectedAdmissionError": "refused by its node", "NodeAffinity": "refused by its node"}
DISRUPTIONS = {"PreemptionByScheduler": "preempted by the scheduler for a higher-priority pod",
               "PreemptionByKubeScheduler": "preempted by the scheduler for a higher-priority pod",
               "DeletionByTaintManager": "deleted because its node became unreachable or not ready",
               "DeletionByPodGC": "deleted because its node is gone",
               "EvictionByEvictionAPI": "evicted (its node was drained)",
               "TerminationByKubelet": "stopped by its node (resource pressure or shutdown)"}
SIGNALS = {137: "SIGKILL", 143: "SIGTERM"}
PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")


@dataclass
class PodFacts:
    """What the cluster says about a pod that did not succeed (gathered by the operator, judged here)."""

    exists: bool = True
    exit_code: int | None = None  # of the base container, when it terminated
    reason: str | None = None  # terminated reason (Error, OOMKilled, DeadlineExceeded) or the pod's own reason
    message: str | None = None  # the termination message (the runner's last line) or the pod's message
    waiting_reason: str | None = None  # of a container that never started
    waiting_message: str | None = None
    unschedulable: str | None = None  # the scheduler's message when PodScheduled is False
    init_failed: str | None = None  # name of an init container (the clone) that failed
    running: bool = False  # still running when the task failed (a dead or interrupted worker)
    error: str = ""  # what the operator raised
    pod_reason: str | None = None  # the pod's own reason (Evicted, Preempting, NodeLost...), kept apart from `reason`
    pod_message: str | None = None  # the pod's own message (what the node said when it evicted it)
    disruption: str | None = None  # the reason of the pod's DisruptionTarget condition (PreemptionByScheduler...)


def pod_fault(kind: str, facts: PodFacts) -> Fault:
    """Who is to blame for a pod that did not succeed, and one sentence saying what happened.

    Only a pod that ran hubflow's step to its end and reported the revision's fault blames the revision; a pod
    that never scheduled, could not pull its image, lacked a Secret, lost its clone, was evicted, preempted or
    lost with its node, was killed or ran out of time, and every unexplained operator error, is the platform's.
    A build is the revision's only when it ran out of memory or failed in its own words; one that lost the
    network (name resolution, timeouts, a mirror's 503) or the registry is the platform's.
    """
    platform = Blame.PLATFORM
    detail = _last_line(facts.message) or _last_line(facts.error)
    if not facts.exists:
        return Fault(platform, f"the {kind} pod could not be created: {_last_line(facts.error) or 'no pod'}")
    disrupted = _disrupted(facts)
    if disrupted:
        said = _last_line(facts.pod_message)
        return Fault(platform, f"the {kind} pod was {disrupted}{f': {said}' if said else ''}"
                               + ("" if kind == "build" else "; check `helm history`: the release may be left pending"))
    if facts.unschedulable:
        return Fault(platform, f"the {kind} pod was never scheduled: {facts.unschedulable}")
    if facts.waiting_reason in PULL_REASONS:
        return Fault(platform, f"hubflow's {kind} pod image could not be pulled ({facts.waiting_reason}): "
                               f"{_last_line(facts.waiting_message)}")
    if facts.waiting_reason in CONFIG_REASONS:
        return Fault(platform, f"the {kind} pod could not start ({facts.waiting_reason}): "
                               f"{_last_line(facts.waiting_message)}; check the Secrets it uses")
    if facts.init_failed:
        return Fault(platform, f"the {kind} pod could not check out the revision ({facts.init_failed} "
                               f"failed): {detail or 'see its log'}")
    if facts.reason == "DeadlineExceeded":
        return Fault(platform, f"the {kind} pod ran out of time (activeDeadlineSeconds) and was stopped; "
                               "check `helm history`: the release may be left pending")
    if facts.running or facts.exit_code is None:
        return Fault(platform, f"the {kind} task ended while its pod had not finished: "
                               f"{_last_line(facts.error) or 'no message'}", retry=facts.running)
    if facts.exit_code == 0:
        return Fault(platform, f"the {kind} pod succeeded but its task failed: "
                               f"{_last_line(facts.error) or 'no message'}", retry=True)
    if kind == "build":
        return _build_fault(facts, detail)
    if facts.reason == "OOMKilled" or facts.exit_code in SIGNALS:
        return Fault(platform, f"the {kind} pod was killed (exit {facts.exit_code}, {facts.reason}); "
                               "check `helm history`: the release may be left pending")
    blame, what = RUNNER_EXIT.get(facts.exit_code, (platform, f"the runner exited {facts.exit_code}"))
    return Fault(blame, f"{what}: {detail}" if detail and detail != what else what)


def _build_fault(facts: PodFacts, detail: str) -> Fault:
    """A build pod that ran and exited non-zero: the revision's only when it ran out of memory or failed in its
    own words; stopped from outside, or lost the registry or the network, it is the platform's."""
    if facts.reason == "OOMKilled":
        return Fault(Blame.REVISION, "the image build ran out of memory (OOMKilled)")
    if facts.exit_code in SIGNALS:  # killed from outside without running out of memory: a node, not the image
        return Fault(Blame.PLATFORM, f"the build pod was stopped from outside (exit {facts.exit_code}, "
                                     f"{SIGNALS[facts.exit_code]}) without running out of memory: its node was "
                                     "drained, shut down or reclaimed")
    said = (facts.message or "").lower()
    if any(p in said for p in PLATFORM_BUILD):
        return Fault(Blame.PLATFORM, f"the build could not reach the registry: {detail}")
    cause = next((p for p in NETWORK_BUILD if p in said), None)
    if cause:
        return Fault(Blame.PLATFORM, f"the build failed on the network ({cause}): {detail}")
    return Fault(Blame.REVISION, f"the image build failed: {detail or f'exit code {facts.exit_code}'}")


def _disrupted(facts: PodFacts) -> str | None:
    """What stopped a pod from outside, in words, when its node or the scheduler did (None otherwise)."""
    reason = facts.pod_reason or ""
    if reason in NODE_REASONS:
        return NODE_REASONS[reason]
    if reason.startswith("OutOf"):  # OutOfcpu, OutOfmemory, OutOfpods: the node admitted it and then could not
        return f"refused by its node ({reason})"
    return DISRUPTIONS.get(facts.disruption or "")


def tried(kind: str, fault: Fault, try_number: int, tries: int) -> Fault:
    """The verdict of try `try_number` of `tries` of a pod's task. A failed build is built again before anyone is
    blamed (its tag is its content, so building it again is safe, and a network or node hiccup then costs no run):
    while a try remains its fault comes back with `retry` set and says so; the last try's says how many failed.
    Other kinds, and faults that already re-attach to their pod (`retry`), are unchanged."""
    if kind != "build" or fault.retry:
        return fault
    if try_number < tries:
        return Fault(fault.blame, f"{fault.summary}; building it again (try {try_number} of {tries})", retry=True)
    return Fault(fault.blame, f"{fault.summary} (after {try_number} tries)") if try_number > 1 else fault


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- after the pods: what the run did


STAGE_WORDS = {"build": "the build failed", "deploy": "the helm upgrade failed", "verify": "verification failed"}


def conclude(target: Target, hubs: list[HubResult], builds: list[BuildResult]) -> Conclusion:
    """What the pods did: success only when every planned hub was upgraded and verified; otherwise who is to blame
    (the revision -> failed, else the platform) and the first stage that went wrong, in words. `hubs` are the
    planned hubs in plan order, each with its wave's result; `builds` the images the run built.
    When a canary failed, the detail says so and names the hubs that were never touched."""
    verification = {h.hub: h.verification for h in hubs if h.verification}
    problems: list[tuple[Blame, str, str, str | None]] = []  # (blame, stage, sentence, hub)
    for b in builds:
        if b.step.failed:
            f = b.fault or Fault(Blame.PLATFORM, "the build task failed")
            problems.append((f.blame, "build", f"image {b.image}: {f.summary}", None))
    for h in hubs:
        if h.upgrade.failed:
            f = h.fault or Fault(Blame.PLATFORM, "the upgrade task failed")
            problems.append((f.blame, "deploy", f"hub {h.hub}: {f.summary}", h.hub))
    for hub, v in verification.items():
        if not v.get("ok"):
            checks = ", ".join(f"{c['name']}: {c['detail']}" for c in v.get("checks", []) if c["status"] == "failed")
            problems.append((Blame(v.get("blame") or Blame.REVISION), "verify",
                             f"hub {hub}: {checks or v.get('error', '?')}", hub))
    missing = [h.hub for h in hubs if h.hub not in verification]
    if not problems and missing:
        problems.append((Blame.PLATFORM, "verify", f"hub(s) {', '.join(missing)} did not finish the deploy and "
                                                   "verify steps (a task was killed or skipped)", None))
    releases = [h.release for h in hubs]
    rev = target.revision[:12]
    if not problems:
        detail = (f"{rev} deployed and verified on {len(hubs)} hub(s) in {target.env}" if hubs
                  else f"{rev} changes no hub in {target.env}: nothing to deploy")
        return Conclusion(Outcome.SUCCESS, None, detail, releases, verification)
    blamed = [p for p in problems if p[0] is Blame.REVISION]
    outcome = Outcome.FAILED if blamed else Outcome.PLATFORM
    shown = blamed or problems
    stage = shown[0][1]
    detail = (f"{STAGE_WORDS[stage]}: " if blamed else "platform fault: ") + "; ".join(p[2] for p in shown)
    canaries = {h.hub for h in hubs if h.wave == "canary"}
    failed_canaries = [p[3] for p in problems if p[3] in canaries]
    untouched = [h.hub for h in hubs if h.wave == "rest" and h.upgrade not in (Step.DONE, Step.FAILED)]
    if failed_canaries and untouched:
        detail += (f"; the canary {', '.join(dict.fromkeys(failed_canaries))} failed, so the wave stopped: hub(s) "
                   f"{', '.join(untouched)} were not touched")
    return Conclusion(outcome, stage, detail, releases, verification)


def to_undo(conclusion: Conclusion) -> list[Undo]:
    """What this run changed and must put back: each release it upgraded goes back to the helm revision it had
    before; a release it installed for the first time is uninstalled (nothing ran there before). A failed upgrade
    is not undone again: helm's --rollback-on-failure upgrade already returned it (or never started)."""
    return [Undo(r.hub, "rollback", r.previous_revision) if r.previous_revision else Undo(r.hub, "uninstall")
            for r in conclusion.releases if r.upgraded]


def aftermath(conclusion: Conclusion, target: Target) -> Aftermath:
    """What the failure path does: hold and revert only when the revision is to blame, never a revert of a revert,
    never a revert without a good revision to return to; the commit status it ends with."""
    if conclusion.outcome is Outcome.PLATFORM:
        return Aftermath(False, False, Outcome.PLATFORM, "not the revision's fault: it is not held and not reverted; "
                                                         "run again once the platform is fixed")
    if target.rewritten:
        return Aftermath(True, False, Outcome.STOPPED, f"the branch was rewritten: no revert on it leads back to "
                         f"{target.rewritten[:12]}; revert {target.revision[:12]} or fix forward (then clear its "
                         "hold), and deploy with force_reason again")
    if target.reverts:
        return Aftermath(True, False, Outcome.STOPPED, "the failed range reverts held revision(s) "
                         + ", ".join(r[:12] for r in target.reverts)
                         + ": hubflow never reverts a revert; the line is stopped until a person fixes forward")
    if not target.base:
        return Aftermath(True, False, Outcome.STOPPED, "this was the first deploy of the environment: there is no "
                                                       "good revision to revert to")
    return Aftermath(True, True, Outcome.FAILED)


def revert_note(result: str, *, number: int | None = None, merged: bool = False, error: str = "",
                files: Sequence[str] = ()) -> tuple[Outcome, str]:
    """(state, note) after the revert was tried: made, refused (a revert in the range), conflicting, or failed."""
    if result == "made":
        return Outcome.FAILED, f"revert PR #{number} " + ("merged" if merged else "opened")
    if result == "refused":
        return Outcome.STOPPED, f"{error}; the line is stopped"
    if result == "conflict":
        return Outcome.FAILED, ("the revert conflicts with later changes in " + ", ".join(files or ["?"])
                                + ": revert by hand")
    return Outcome.STOPPED, f"the revert could not be made: {error}; revert by hand"


def failure_comment(env: str, revision: str, conclusion: Conclusion, note: str, links: dict[str, str]) -> str:
    """The comment left on each PR of a failed range."""
    from hubflow.core.messages import code_span

    undone = [u.hub for u in to_undo(conclusion)]
    lines = [f"**hubflow: `{revision[:12]}` failed on {env}** at the {conclusion.stage} step.", "",
             code_span(conclusion.detail), "",
             f"- rolled back: {', '.join(undone) if undone else 'nothing (no hub was left changed)'}",
             "- the revision is held: it will not be deployed again or promoted until the hold is cleared",
             f"- {note}"]
    lines += [f"- [{name}]({url})" for name, url in links.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Paths:
    """Which of the run's closing paths finished (read from the run by the Airflow layer)."""

    success: bool = False  # status success, the verified asset event, the promotion PR
    failure: bool = False  # hold, revert, status, comments
    catch_up: bool = False  # the promotion an earlier run owed


def final(env: str, target: Target | None, planned: Planned | None, conclusion: Conclusion | None,
          after: Aftermath | None, paths: Paths, rollbacks: dict[str, Step],
          ended: Ended | None = None) -> tuple[Outcome, str]:
    """(outcome, line): the run's final outcome and its closing line, which says what happened and what runs in
    `env` now, on one line whatever the details hold (git and helm errors span lines). `rollbacks` says what became
    of each hub's rollback (a hub of `to_undo` missing from it never had its rollback run)."""
    outcome, line = _closing(env, target, planned, conclusion, after, paths, rollbacks, ended)
    return outcome, " ".join(line.split())


def _closing(env: str, target: Target | None, planned: Planned | None, conclusion: Conclusion | None,
             after: Aftermath | None, paths: Paths, rollbacks: dict[str, Step],
             ended: Ended | None) -> tuple[Outcome, str]:
    rev = target.revision[:12] if target else "?"
    was = (target.base or target.rewritten) if target else None  # after a forced rewrite: off the branch
    before = was[:12] if was else "nothing (first deploy)"
    if ended:  # a task before the pods ended the run itself (a refusal, a platform fault): nothing was touched
        if ended.outcome is Outcome.PLATFORM:
            return Outcome.PLATFORM, (f"{env}: PLATFORM FAULT: {ended.detail}; {rev} is not held and not reverted; "
                                      f"{env} is unchanged")
        return ended.outcome, f"{env}: {ended.outcome}: {ended.detail}; {env} is unchanged"
    if target and target.skip:
        if not target.owed:
            return Outcome.SKIPPED, f"{env}: nothing to do: {target.skip}"
        if paths.catch_up:
            return Outcome.SUCCESS, f"{env}: {rev} was verified earlier; its promotion is made now; {env} runs {rev}"
        return Outcome.UNPROMOTED, (f"{env}: {rev} is verified but its promotion could not be made again (GitHub?); "
                                    f"{env} runs {rev}; the next run tries again")
    if not (target and planned):
        return Outcome.REFUSED, (f"{env}: the run was refused or stopped before anything was deployed; "
                                 f"{env} is unchanged")
    if conclusion is None:
        return Outcome.UNKNOWN, (f"{env}: STATE UNKNOWN: the run could not conclude after deploying {rev}; hub(s) "
                                 f"{', '.join(planned.hubs) or 'none'} may run {rev} or {before}: check `helm "
                                 f"history` of each and `hubflow ledger --env {env}`")
    if conclusion.outcome is Outcome.SUCCESS:
        if paths.success:
            return Outcome.SUCCESS, f"{env}: {conclusion.detail}; {env} now runs {rev}"
        return Outcome.UNPROMOTED, (f"{env}: {conclusion.detail}, but the success path did not finish (status and "
                                    f"promotion PR not made: GitHub?); {env} now runs {rev}; the next run opens the "
                                    "promotion PR")
    undo = to_undo(conclusion)
    failed_undo = [u.hub for u in undo if rollbacks.get(u.hub, Step.NOT_RUN).failed]
    not_run = [u.hub for u in undo if rollbacks.get(u.hub, Step.NOT_RUN) is Step.NOT_RUN]
    stuck = failed_undo + not_run
    put_back = [u.hub for u in undo if u.hub not in stuck]
    back = (f"hub(s) {', '.join(put_back)} put back as they were" if put_back
            else "no hub was left changed" if not stuck else "")
    if stuck:
        back += (f"{'; ' if back else ''}the ROLLBACK FAILED for hub(s) {', '.join(stuck)}: they may still run "
                 f"{rev}, check `helm history` and roll back by hand")
    failed = conclusion.outcome is Outcome.FAILED
    if not paths.failure:
        note = "the failure path did not finish: " + ("hold, revert, status and comments may be missing"
                                                      if failed else "status may be missing")
        outcome = Outcome.STOPPED
    else:
        note, outcome = (after.note, after.state) if after else ("", conclusion.outcome)
    if stuck:
        outcome = Outcome.STOPPED
    now = f"{env} runs {before} again" if not stuck else f"{env} runs {before} except hub(s) {', '.join(stuck)}"
    held = f"{rev} is held" if failed else f"{rev} is not held"
    word = "FAILED" if failed else "hit a PLATFORM FAULT"
    return outcome, "; ".join(p for p in (f"{env}: {rev} {word} at {conclusion.stage}: {conclusion.detail}", back,
                                          held, note, now) if p)
