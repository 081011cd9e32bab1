"""Every decision of a promotion (hubflow_promote): may this revision move from the source environment to the
next one, and how did the promotion end. No Airflow, no I/O of its own: the repository and the ledger are passed in.

The gates run in a fixed order and the first one that fails refuses with its reason, before anything changes;
the results of the gates that ran are kept (the ledger and the approval request show them).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, NoReturn

from hubflow.core import deploy
from hubflow.core.deploy import Refused
from hubflow.core.freeze import frozen
from hubflow.core.outcomes import Ended, PromotionOutcome, Step
from hubflow.core.settings import Settings

if TYPE_CHECKING:
    from hubflow.clients.git import Repo
    from hubflow.clients.ledger import Attempt, Ledger

class GateRefused(Refused):
    """A gate said no; `gates` holds every result so far, the refusing one last."""

    def __init__(self, reason: str, gates: list[dict]):
        super().__init__(reason)
        self.gates = gates


@dataclass
class Candidate:
    """What is to be promoted, and what the gates found out about it."""

    source: str
    target: str
    revision: str
    tree: str
    subject: str
    verified: str | None = None  # the source revision with this tree that passed verification
    verified_at: str | None = None  # since when this tree has been verified and live on the source (ISO)
    evidence: dict[str, str] = field(default_factory=dict)  # label -> URL
    gates: list[dict] = field(default_factory=list)  # {"gate", "ok", "detail"}

    def to_dict(self) -> dict:
        return asdict(self)


def environments(settings: Settings) -> tuple[str, str]:
    """(source, target): the first environment promotes to the next one."""
    source = settings.environments[0].name
    target = settings.next_environment(source)
    if target is None:
        raise Refused(f"only one environment ({source}) is configured: there is nothing to promote to")
    return source, target.name


def check_params(mode: str, reason: str | None) -> None:
    """Refuse a merge without a reason: the ledger keeps why prod was changed by hand."""
    if mode == "merge" and not (reason or "").strip():
        raise Refused("mode merge needs a reason (the ledger keeps who merged what and why): fill in `reason`, "
                      "or choose mode pull_request to only open the PR")


def default_revision(ledger: Ledger, source: str) -> str:
    """The newest revision verified on the source: what an empty `revision` means."""
    last = ledger.last_success(source)
    if last is None:
        raise Refused(f"nothing has been verified on {source} yet: there is nothing to promote")
    return last.revision


def live_since(attempts: list[Attempt], tree: str) -> Attempt | None:
    """The oldest success of the unbroken run of successes with `tree` at the top of `attempts` (newest first):
    when the source started running this tree, verified. None when the source's last success has another tree."""
    since = None
    for attempt in attempts:
        if attempt.outcome != "success":
            continue
        if attempt.tree != tree:
            break
        since = attempt
    return since


def gates(settings: Settings, candidate: Candidate, repo: Repo, ledger: Ledger, freeze_switch: str | None,
          now: dt.datetime) -> Candidate:
    """Run the gates in order; fills in `candidate` (verified, verified_at, gates) or raises GateRefused."""
    c = candidate
    target_env = settings.environment(c.target)

    def passed(gate: str, detail: str) -> None:
        c.gates.append({"gate": gate, "ok": True, "detail": detail})

    def refuse(gate: str, detail: str) -> NoReturn:
        c.gates.append({"gate": gate, "ok": False, "detail": detail})
        raise GateRefused(f"{gate}: {detail}", c.gates)

    rev = c.revision[:12]
    try:  # promote exactly what was tested: the deploy DAG's own gate, with no force
        verified = deploy.gate(settings, target_env, deploy.Target(c.target, c.revision, None, c.tree), ledger)
    except Refused as exc:
        refuse("verified", str(exc))
    if verified is None:
        refuse("verified", f"{c.target} is the first environment: nothing before it verifies what it runs")
    c.verified = verified
    passed("verified", f"tree {c.tree[:12]} passed verification on {c.source} as {verified[:12]}")

    for sha in dict.fromkeys((c.revision, verified)):
        held = ledger.held(sha)
        if held:
            refuse("not held", f"{sha[:12]} is held: {held}; clear it with "
                               f"`hubflow hold --clear {sha[:12]} --reason WHY`")
    passed("not held", f"{rev} is not held")

    why_frozen = frozen(target_env, freeze_switch, now)
    if why_frozen:
        refuse("not frozen", why_frozen)
    passed("not frozen", f"{c.target} is not frozen")

    runs = ledger.last_success(c.target)
    if runs is None:
        passed("newer", f"nothing has been deployed to {c.target} yet")
    else:
        if runs.tree == c.tree:
            refuse("newer", f"{c.target} already runs this tree ({runs.revision[:12]}): nothing to promote")
        # a promotion merges into the target, so what it runs is a merge commit: compare through the source
        # revision with the same tree
        same = ledger.verified_revision_for_tree(c.source, runs.tree) if runs.tree else None
        if not any(repo.is_ancestor(base, c.revision) for base in dict.fromkeys(filter(None, (runs.revision, same)))):
            refuse("newer", f"{c.target} runs {runs.revision[:12]}, which {rev} does not contain: promoting it "
                            f"would drop what {c.target} runs")
        passed("newer", f"{rev} is newer than {runs.revision[:12]}, which {c.target} runs")

    ok, detail = same_tree(settings, c, repo)
    if not ok:
        refuse("same tree", detail)
    passed("same tree", detail)

    since = live_since(ledger.attempts(c.source, 200), c.tree)
    if since is None:
        last = ledger.last_success(c.source)
        refuse("soak", f"{c.source} no longer runs this tree: it runs {last.revision[:12] if last else 'nothing'} "
                       "now; promote what it runs")
    started = since.finished_at or since.started_at
    if started.tzinfo is None:  # SQLite gives naive datetimes back; the ledger writes UTC
        started = started.replace(tzinfo=dt.timezone.utc)
    c.verified_at = started.isoformat()
    soaked = now - started
    need = dt.timedelta(minutes=settings.promotion.soak_minutes)
    minutes = int(soaked.total_seconds() // 60)
    if soaked < need:
        refuse("soak", f"verified and live on {c.source} for {minutes} min, the soak time is "
                       f"{settings.promotion.soak_minutes} min: try again after {(started + need).isoformat()}")
    passed("soak", f"verified and live on {c.source} for {minutes} min (soak time "
                   f"{settings.promotion.soak_minutes} min)")
    return c


def same_tree(settings: Settings, c: Candidate, repo: Repo) -> tuple[bool, str]:
    """Promote exactly what was tested: merging the revision into the target branch (as it is in `repo`, fetched)
    must give the tree verified on the source, or the target's own gate refuses the merged revision and the line
    stops. (ok, detail); a refusal names the commits only the target has and the one action that recovers."""
    from hubflow.core import texts

    source_branch, target_branch = settings.environment(c.source).branch, settings.environment(c.target).branch
    (head,) = repo.resolve(target_branch)
    if repo.is_ancestor(head, c.revision):
        return True, f"{c.target} has nothing {c.revision[:12]} lacks: the merge is the verified tree"
    merged, conflicts = repo.merge_preview(head, c.revision)
    if conflicts is None and repo.tree_id(merged) == c.tree:
        return True, f"merging {c.revision[:12]} into {c.target} gives the verified tree {c.tree[:12]}"
    only = repo.git("log", "--no-merges", "--format=%H %s", f"{c.revision}..{head}").splitlines()
    only = only or repo.git("log", "--format=%H %s", f"{c.revision}..{head}").splitlines()
    return False, texts.diverged(c.source, c.target, c.revision, c.tree, only, conflicts, source_branch,
                                 target_branch)


def mergeable(revision: str, source_head: str, pull: dict, unmergeable: str | None) -> str:
    """The merge gate: the PR (the source branch) must still carry the revision that passed the gates, and GitHub
    must say it can merge it."""
    if source_head != revision:
        raise Refused(f"mergeable: PR #{pull['number']} carries {source_head[:12]}, not {revision[:12]}: the "
                      "source branch moved on; promote its head once it is verified")
    if unmergeable:
        raise Refused(f"mergeable: {unmergeable}")
    return f"PR #{pull['number']} is mergeable at {revision[:12]}"


def approval_text(c: dict, mode: str, reason: str | None, who: str, pull: dict, run: str) -> tuple[str, str]:
    """(subject, body) of the approval request: the revision, the gates' evidence, the PR."""
    from hubflow.core.messages import code_span

    subject = f"Promote {c['revision'][:12]} from {c['source']} to {c['target']} ({mode})?"
    lines = [f"**{who}** asks to {'merge' if mode == 'merge' else 'open'} the promotion of "
             f"`{c['revision']}` {code_span(c['subject'])} to **{c['target']}**.", "",
             f"Reason: {code_span(reason) if reason else '(none given)'}", "",
             f"Promotion PR: [#{pull['number']}]({pull['url']})", "", "Gates:"]
    lines += [f"- {'passed' if g['ok'] else 'REFUSED'} **{g['gate']}**: {code_span(g['detail'])}" for g in c["gates"]]
    lines += ["", "Evidence:"] + [f"- [{label}]({url})" for label, url in {**c["evidence"], "run": run}.items()]
    lines += ["", "Approve merges the PR; Reject, or no answer in time, leaves the target as it is."]
    return subject, "\n".join(lines) + "\n"


AUTOMATIC = "hubflow (promotion.mode: merge)"  # who asked, in the ledger, for a promotion merge mode started


def automatic(c: dict, ended: Ended | None, pull: dict, merged: str | None, approval: bool,
              failed: str | None = None) -> tuple[PromotionOutcome, str]:
    """(outcome, closing line) of the promotion merge mode starts at the end of a verified run: the same gates as
    hubflow_promote, and nobody to ask. Merged only when every gate passed; otherwise the PR stays open and the
    line says why (and when, for the soak time)."""
    what = f"{c['revision'][:12]} {c['source']} -> {c['target']} (promotion.mode: merge)"
    pr, target = f"PR #{pull['number']}", c["target"]
    if merged:
        return PromotionOutcome.MERGED, (f"promotion {what}: every gate passed, merged {pr} as {merged[:12]}; the "
                                         f"{target} deploy runs from its branch watcher")
    if failed:
        return PromotionOutcome.FAILED, (f"promotion {what}: failed at merge: {failed}; {target} is unchanged "
                                         f"unless {pr} shows merged (GitHub did not answer)")
    if ended:
        line = (f"promotion {what}: {ended.outcome}: {ended.detail}; {pr} stays open and {target} is unchanged; "
                f"hubflow_promote (mode merge) merges it once the gate passes")
        return PromotionOutcome(ended.outcome.value), " ".join(line.split())
    if approval:
        return PromotionOutcome.OPENED, (f"promotion {what}: every gate passed, and promotion.approval is required: "
                                         f"start hubflow_promote (mode merge) to ask the approvers; {pr} stays "
                                         f"open; {target} is unchanged")
    return PromotionOutcome.OPENED, f"promotion {what}: {pr} is open; {target} is unchanged"


def final(c: dict | None, mode: str, ended: Ended | None, pull: dict | None, answer: dict | None,
          merged: str | None, steps: dict[str, Step], timeout_minutes: int) -> tuple[PromotionOutcome, str]:
    """(outcome, closing line): how the promotion ended and what the target runs now. `steps` says what became of
    each step of the promotion (check, open, approve, merge)."""
    what = f"{c['revision'][:12]} {c['source']} -> {c['target']}" if c else "promotion"
    target = c["target"] if c else "the target"
    if ended:
        return PromotionOutcome(ended.outcome.value), (f"promotion {what}: {ended.outcome}: {ended.detail}; "
                                                       f"{target} is unchanged")
    pr = f"PR #{pull['number']}" if pull else "the promotion PR"
    if answer and answer.get("chosen_options") != ["Approve"]:
        if answer.get("responded_by_user") is None:
            return PromotionOutcome.REFUSED, (
                f"promotion {what}: refused: nobody approved within {timeout_minutes} min (no answer counts as "
                f"Reject); {pr} stays open; {target} is unchanged")
        by = answer["responded_by_user"].get("name") or answer["responded_by_user"].get("id")
        return PromotionOutcome.REJECTED, (f"promotion {what}: rejected by {by}; {pr} stays open; "
                                           f"{target} is unchanged")
    if merged:
        return PromotionOutcome.MERGED, (f"promotion {what}: merged {pr} as {merged[:12]}; the "
                                         f"{target} deploy runs from its branch watcher")
    if pull and mode == "pull_request" and steps.get("open") is Step.DONE:
        return PromotionOutcome.OPENED, (f"promotion {what}: {pr} is open for review "
                                         f"({pull['url']}); {target} changes when a person merges it")
    failed = sorted(name for name, step in steps.items() if step.failed)
    now = (f"{target} is unchanged unless {pr} shows merged (GitHub did not answer)"
           if "merge" in failed else f"{target} is unchanged")
    return PromotionOutcome.FAILED, f"promotion {what}: failed at {', '.join(failed) or 'an unknown step'}; {now}"
