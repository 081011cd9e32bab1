"""Every decision of a deploy run, as plain functions the deploy DAG's thin tasks call (no Airflow, no I/O of its
own: the repository and the ledger are passed in).

Before the pods: resolve (what to deploy), gate (promote exactly what was tested), plan. After them: what a pod's
failure means (`pod_fault`), what happened (`conclude`), what to undo (`to_undo`), what the failure path does
(`aftermath`), and the run's final state with its one closing line (`final`). Every run ends in one of OUTCOMES,
and the closing line, the ledger, the commit status and Slack all say the same thing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from hubflow.core.config import Environment, Settings
from hubflow.core.errors import HubflowError
from hubflow.core.freeze import frozen
from hubflow.core.plan import WAVES, Plan, make_plan

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
    owed: int | None = None  # the verified attempt whose promotion never happened (GitHub was down): do it now

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
                          "merge its revert first, or clear the hold with `hubflow hold --clear`")
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
                     [e.name for e in settings.environments], also)


def promotion_owed(record: dict) -> bool:
    """A verified attempt whose promotion PR was never opened (the success path could not reach GitHub)."""
    return record.get("promotion") == "owed"


# ---------------------------------------------------------------- after the pods: what a failure means

OUTCOMES = ("success", "failed", "platform", "refused", "stopped", "unknown")
# success: deployed and verified; failed: the revision is to blame (held, reverted); platform: not the revision's
# fault (nothing held or reverted, the next trigger runs again); refused: nothing was touched; stopped: the line
# stops for a person (a revert failed, a rollback failed); unknown: the run could not conclude.

RUNNER_EXIT = {  # the runner's exit codes (include/runner/hubflow-runner): who is to blame, in a few words;
    # its termination message (one line: what happened, what state the release is left in) follows them
    1: ("revision", "helm failed"),
    2: ("platform", "hubflow's runner was called wrongly (a hubflow bug)"),
    3: ("platform", "stuck release"),
    4: ("platform", "cluster or chart repository unreachable"),
    5: ("platform", "no sops key"),
}
PLATFORM_BUILD = ("failed to push", "failed to do request", "connection refused", "no such host", "i/o timeout",
                  "unauthorized", "denied:", "tls handshake", "503 service unavailable", "502 bad gateway",
                  "failed to authorize", "toomanyrequests")
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

    def to_dict(self) -> dict:
        return asdict(self)


def pod_fault(kind: str, facts: PodFacts) -> dict:
    """Who is to blame for a pod that did not succeed, and one sentence saying what happened.

    Only a pod that ran hubflow's step to its end and reported the revision's fault blames the revision; a pod
    that never scheduled, could not pull its image, lacked a Secret, lost its clone, was killed or ran out of
    time, and every unexplained operator error, is the platform's.
    """
    detail = _first_line(facts.message) or _first_line(facts.error)
    if not facts.exists:
        return _fault("platform", f"the {kind} pod could not be created: {_first_line(facts.error) or 'no pod'}")
    if facts.unschedulable:
        return _fault("platform", f"the {kind} pod was never scheduled: {facts.unschedulable}")
    if facts.waiting_reason in PULL_REASONS:
        return _fault("platform", f"hubflow's {kind} pod image could not be pulled ({facts.waiting_reason}): "
                                  f"{_first_line(facts.waiting_message)}")
    if facts.waiting_reason in CONFIG_REASONS:
        return _fault("platform", f"the {kind} pod could not start ({facts.waiting_reason}): "
                                  f"{_first_line(facts.waiting_message)}; check the Secrets it uses")
    if facts.init_failed:
        return _fault("platform", f"the {kind} pod could not check out the revision ({facts.init_failed} "
                                  f"failed): {detail or 'see its log'}")
    if facts.reason == "DeadlineExceeded":
        return _fault("platform", f"the {kind} pod ran out of time (activeDeadlineSeconds) and was stopped; "
                                  "check `helm history`: the release may be left pending")
    if facts.running or facts.exit_code is None:
        return _fault("platform", f"the {kind} task ended while its pod had not finished: "
                                  f"{_first_line(facts.error) or 'no message'}", retry=facts.running)
    if facts.exit_code == 0:
        return _fault("platform", f"the {kind} pod succeeded but its task failed: "
                                  f"{_first_line(facts.error) or 'no message'}", retry=True)
    if kind == "build":
        if facts.reason == "OOMKilled" or facts.exit_code == 137:
            return _fault("revision", "the image build ran out of memory or was killed")
        if any(p in (facts.message or "").lower() for p in PLATFORM_BUILD):
            return _fault("platform", f"the build could not reach the registry: {detail}")
        return _fault("revision", f"the image build failed: {detail or f'exit code {facts.exit_code}'}")
    if facts.reason == "OOMKilled" or facts.exit_code == 137:
        return _fault("platform", f"the {kind} pod was killed (exit {facts.exit_code}, {facts.reason}); "
                                  "check `helm history`: the release may be left pending")
    blame, what = RUNNER_EXIT.get(facts.exit_code, ("platform", f"the runner exited {facts.exit_code}"))
    return _fault(blame, f"{what}: {detail}" if detail and detail != what else what)


def _fault(blame: str, summary: str, retry: bool = False) -> dict:
    """`retry`: the pod is running or done, so another try of the task re-attaches to it and reads its result."""
    return {"blame": blame, "summary": summary, "retry": retry}


def _first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _stage(states: dict[str, str], task: str) -> dict[str, str]:
    """States of one task's instances: `task` when it never expanded, `task_<i>` per mapped instance."""
    return {k: v for k, v in states.items() if k == task or k.startswith(f"{task}_")}


def map_index_of(key: str) -> int | None:
    tail = key.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _failed(states: dict[str, str], task: str) -> list[int]:
    return sorted(i for k, s in _stage(states, task).items()
                  if s in ("failed", "upstream_failed") and (i := map_index_of(k)) is not None)


def hub_steps(planned: dict) -> list[tuple[str, str, int]]:
    """(hub, wave, map index) of every planned hub: its upgrade and its verification ran as `<wave>.upgrade` and
    `<wave>.verify` at that index (one mapped task group per wave)."""
    return [(hub, wave, i) for wave in WAVES for i, hub in enumerate(planned["waves"][wave])]


def conclude(env: str, target: dict, planned: dict, states: dict[str, str], deployed: dict[str, dict | None],
             verified: dict[str, dict | None], build_faults: list[dict | None],
             deploy_faults: dict[str, dict | None]) -> dict:
    """What the pods did: success only when every planned hub was upgraded and verified; otherwise who is to blame
    (the revision -> failed, else the platform) and the first stage that went wrong, in words. `states` are the
    run's task states; `deployed`, `verified` and `deploy_faults` the XComs of each hub's upgrade and verification.
    When a canary failed, the detail says so and names the hubs that were never touched."""
    hubs = planned["hubs"]
    upgrade = {hub: states.get(f"{wave}.upgrade_{i}") for hub, wave, i in hub_steps(planned)}
    releases = [{"hub": hub, "upgraded": upgrade.get(hub) == "success",
                 "previous_revision": (deployed.get(hub) or {}).get("previous_revision"),
                 "revision": (deployed.get(hub) or {}).get("revision"),
                 "status": (deployed.get(hub) or {}).get("status")} for hub in hubs]
    verification = {hub: verified[hub] for hub in hubs if verified.get(hub)}
    images = [spec["labels"].get("hubflow.io/image", f"#{i}") for i, spec in enumerate(planned["build"])]
    problems: list[tuple[str, str, str, str | None]] = []  # (blame, stage, sentence, hub)
    for i in _failed(states, "build"):
        f = (build_faults[i] if i < len(build_faults) else None) or _fault("platform", "the build task failed")
        problems.append((f["blame"], "build", f"image {images[i] if i < len(images) else i}: {f['summary']}", None))
    for hub in hubs:
        if upgrade.get(hub) in ("failed", "upstream_failed"):
            f = deploy_faults.get(hub) or _fault("platform", "the upgrade task failed")
            problems.append((f["blame"], "deploy", f"hub {hub}: {f['summary']}", hub))
    for hub, v in verification.items():
        if not v.get("ok"):
            checks = ", ".join(f"{c['name']}: {c['detail']}" for c in v.get("checks", []) if c["status"] == "failed")
            problems.append((v.get("blame") or "revision", "verify", f"hub {hub}: {checks or v.get('error', '?')}",
                             hub))
    missing = [h for h in hubs if h not in verification]
    if not problems and missing:
        problems.append(("platform", "verify", f"hub(s) {', '.join(missing)} did not finish the deploy and verify "
                                               "steps (a task was killed or skipped)", None))
    rev = target["revision"][:12]
    if not problems:
        detail = (f"{rev} deployed and verified on {len(hubs)} hub(s) in {env}" if hubs
                  else f"{rev} changes no hub in {env}: nothing to deploy")
        return {"outcome": "success", "stage": None, "detail": detail, "releases": releases,
                "verification": verification}
    blamed = [p for p in problems if p[0] == "revision"]
    outcome = "failed" if blamed else "platform"
    shown = blamed or problems
    stage = shown[0][1]
    what = {"build": "the build failed", "deploy": "the helm upgrade failed", "verify": "verification failed"}[stage]
    detail = (f"{what}: " if outcome == "failed" else "platform fault: ") + "; ".join(p[2] for p in shown)
    canaries = [p[3] for p in problems if p[3] in planned["waves"]["canary"]]
    untouched = [h for h in planned["waves"]["rest"] if upgrade.get(h) not in ("success", "failed")]
    if canaries and untouched:
        detail += (f"; the canary {', '.join(dict.fromkeys(canaries))} failed, so the wave stopped: hub(s) "
                   f"{', '.join(untouched)} were not touched")
    return {"outcome": outcome, "stage": stage, "detail": detail, "releases": releases,
            "verification": verification}


def to_undo(outcome: dict) -> list[dict]:
    """What this run changed and must put back: each release it upgraded goes back to the helm revision it had
    before; a release it installed for the first time is uninstalled (nothing ran there before). A failed upgrade
    is not undone again: helm's --rollback-on-failure upgrade already returned it (or never started)."""
    return [{"hub": r["hub"], "action": "rollback", "to": r["previous_revision"]} if r["previous_revision"]
            else {"hub": r["hub"], "action": "uninstall"}
            for r in outcome.get("releases", []) if r["upgraded"]]


def aftermath(outcome: dict, target: dict) -> dict:
    """What the failure path does: hold and revert only when the revision is to blame, never a revert of a revert,
    never a revert without a good revision to return to; the commit status it ends with."""
    if outcome["outcome"] == "platform":
        return {"hold": False, "revert": False, "state": "platform", "status": "error",
                "note": "not the revision's fault: it is not held and not reverted; run again once the platform "
                        "is fixed"}
    if target.get("reverts"):
        return {"hold": True, "revert": False, "state": "stopped", "status": "failure",
                "note": "the failed range reverts held revision(s) " + ", ".join(r[:12] for r in target["reverts"])
                        + ": hubflow never reverts a revert; the line is stopped until a person fixes forward"}
    if not target.get("base"):
        return {"hold": True, "revert": False, "state": "stopped", "status": "failure",
                "note": "this was the first deploy of the environment: there is no good revision to revert to"}
    return {"hold": True, "revert": True, "state": "failed", "status": "failure", "note": ""}


def revert_note(result: str, *, number: int | None = None, merged: bool = False, error: str = "",
                files: list[str] = ()) -> tuple[str, str]:
    """(state, note) after the revert was tried: made, refused (a revert in the range), conflicting, or failed."""
    if result == "made":
        return "failed", f"revert PR #{number} " + ("merged" if merged else "opened")
    if result == "refused":
        return "stopped", f"{error}; the line is stopped"
    if result == "conflict":
        return "failed", ("the revert conflicts with later changes in " + ", ".join(files or ["?"])
                          + ": revert by hand")
    return "stopped", f"the revert could not be made: {error}; revert by hand"


def failure_comment(env: str, revision: str, outcome: dict, note: str, links: dict[str, str]) -> str:
    """The comment left on each PR of a failed range."""
    from hubflow.core.messages import code_span

    undone = [u["hub"] for u in to_undo(outcome)]
    lines = [f"**hubflow: `{revision[:12]}` failed on {env}** at the {outcome['stage']} step.", "",
             code_span(outcome["detail"]), "",
             f"- rolled back: {', '.join(undone) if undone else 'nothing (no hub was left changed)'}",
             "- the revision is held: it will not be deployed again or promoted until the hold is cleared",
             f"- {note}"]
    lines += [f"- [{name}]({url})" for name, url in links.items()]
    return "\n".join(lines) + "\n"


def final(env: str, target: dict | None, planned: dict | None, outcome: dict | None, after: dict | None,
          states: dict[str, str], undo: list[dict], ended: dict | None = None) -> tuple[str, str]:
    """(state, line): the run's final state (one of OUTCOMES, or skipped/unpromoted) and its closing line, which
    says what happened and what runs in `env` now, on one line whatever the details hold (git and helm errors span
    lines). `states` are the task states of the run; `undo` what the rollback pods were to undo."""
    state, line = _closing(env, target, planned, outcome, after, states, undo, ended)
    return state, " ".join(line.split())


def _closing(env: str, target: dict | None, planned: dict | None, outcome: dict | None, after: dict | None,
             states: dict[str, str], undo: list[dict], ended: dict | None) -> tuple[str, str]:
    rev = target["revision"][:12] if target else "?"
    base = (target or {}).get("base")
    before = base[:12] if base else "nothing (first deploy)"
    if ended:  # a task before the pods ended the run itself (a refusal, a platform fault): nothing was touched
        if ended["outcome"] == "platform":
            return "platform", (f"{env}: PLATFORM FAULT: {ended['detail']}; {rev} is not held and not reverted; "
                                f"{env} is unchanged")
        return ended["outcome"], f"{env}: {ended['outcome']}: {ended['detail']}; {env} is unchanged"
    if target and target.get("skip"):
        if not target.get("owed"):
            return "skipped", f"{env}: nothing to do: {target['skip']}"
        if states.get("catch_up") == "success":
            return "success", f"{env}: {rev} was verified earlier; its promotion is made now; {env} runs {rev}"
        return "unpromoted", (f"{env}: {rev} is verified but its promotion could not be made again (GitHub?); "
                              f"{env} runs {rev}; the next run tries again")
    if not (target and planned):
        return "refused", f"{env}: the run was refused or stopped before anything was deployed; {env} is unchanged"
    hubs = planned.get("hubs", [])
    if outcome is None:
        return "unknown", (f"{env}: STATE UNKNOWN: the run could not conclude after deploying {rev}; hub(s) "
                           f"{', '.join(hubs) or 'none'} may run {rev} or {before}: check `helm history` of each "
                           f"and `hubflow ledger --env {env}`")
    if outcome["outcome"] == "success":
        if states.get("succeed") == "success":
            return "success", f"{env}: {outcome['detail']}; {env} now runs {rev}"
        return "unpromoted", (f"{env}: {outcome['detail']}, but the success path did not finish (status and "
                              f"promotion PR not made: GitHub?); {env} now runs {rev}; the next run opens the "
                              "promotion PR")
    failed_undo = [undo[i]["hub"] for i in _failed(states, "rollback") if i < len(undo)]
    not_run = [u["hub"] for i, u in enumerate(undo)
               if _stage(states, "rollback").get(f"rollback_{i}", "missing") not in ("success", "failed",
                                                                                        "upstream_failed")]
    if _stage(states, "rollback").get("rollback") in ("failed", "upstream_failed", "skipped"):
        not_run = [u["hub"] for u in undo]  # the list of pods itself was never made
    put_back = [u["hub"] for u in undo if u["hub"] not in failed_undo + not_run]
    back = (f"hub(s) {', '.join(put_back)} put back as they were" if put_back
            else "no hub was left changed" if not (failed_undo or not_run) else "")
    if failed_undo or not_run:
        stuck = failed_undo + not_run
        back += (f"{'; ' if back else ''}the ROLLBACK FAILED for hub(s) {', '.join(stuck)}: they may still run "
                 f"{rev}, check `helm history` and roll back by hand")
    after = after or {}
    if states.get("fail") != "success":
        note = "the failure path did not finish: " + ("hold, revert, status and comments may be missing"
                                                      if outcome["outcome"] == "failed" else "status may be missing")
        state = "stopped"
    else:
        note, state = after.get("note", ""), after.get("state", outcome["outcome"])
    if failed_undo or not_run:
        state = "stopped"
    now = f"{env} runs {before} again" if not (failed_undo or not_run) else \
        f"{env} runs {before} except hub(s) {', '.join(failed_undo + not_run)}"
    held = f"{rev} is held" if outcome["outcome"] == "failed" else f"{rev} is not held"
    word = "FAILED" if outcome["outcome"] == "failed" else "hit a PLATFORM FAULT"
    return state, "; ".join(p for p in (f"{env}: {rev} {word} at {outcome['stage']}: {outcome['detail']}", back,
                                        held, note, now) if p)


def failed_task_line(task_id: str, map_index: int, error: str) -> str:
    """The last line of a failed task's log: what failed and what comes next for the environment."""
    if task_id == "record":
        return f"hubflow: {error}"  # record fails with the run's closing line itself
    which = f"{task_id}[{map_index}]" if map_index is not None and map_index >= 0 else task_id
    step = task_id.rsplit(".", 1)[-1]  # a hub's upgrade and verification run in its wave's group: `canary.upgrade`
    after = {
        "resolve": "nothing was touched",
        "gate": "nothing was touched; the refusal is in the ledger and the commit status",
        "plan": "nothing was touched",
        "build_pods": "nothing was touched",
        "build": "nothing was deployed; `record` says what follows",
        "upgrade": "the failure path puts back what this run changed; `record` says what runs now",
        "verify": "the failure path puts back what this run changed; `record` says what runs now",
        "rollback": "this release may still run the failed revision: check `helm history` and roll back by hand",
    }.get(step, "see the run's final `record` task for the state of the environment")
    return f"hubflow: {which} failed ({error.strip().splitlines()[-1] if error.strip() else 'no message'}); {after}"
