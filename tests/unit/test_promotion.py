"""The promotion's decisions (hubflow.core.promotion) without Airflow: each gate, the merge gate, the outcome."""
from __future__ import annotations

import datetime as dt

import pytest

from hubflow.core import promotion
from hubflow.core.deploy import Refused
from hubflow.core.outcomes import Ended, Outcome, PromotionOutcome, Step
from hubflow.core.settings import Settings

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
REV, TREE, PROD_REV, PROD_TREE = "a" * 40, "t" * 40, "b" * 40, "p" * 40


def settings(**promotion_settings) -> Settings:
    windows = promotion_settings.pop("windows", [])
    return Settings.model_validate({
        "repository": {"github": "o/r", "clone_url": "https://example.org/o/r.git"},
        "environments": [{"name": "staging", "branch": "staging", "hub_url": "https://{hub}.s"},
                         {"name": "prod", "branch": "prod", "hub_url": "https://{hub}.p", "freeze_windows": windows}],
        "promotion": promotion_settings})


class Attempt:
    def __init__(self, env, revision, tree, outcome="success", minutes_ago=60):
        self.env, self.revision, self.tree, self.outcome = env, revision, tree, outcome
        self.started_at = self.finished_at = NOW - dt.timedelta(minutes=minutes_ago)


class Ledger:
    def __init__(self, *attempts, holds=None):
        self.list = list(attempts)  # newest first
        self.holds = holds or {}

    def attempts(self, env, limit=50):
        return [a for a in self.list if a.env == env][:limit]

    def last_success(self, env):
        return next((a for a in self.attempts(env) if a.outcome == "success"), None)

    def verified_revision_for_tree(self, env, tree):
        return next((a.revision for a in self.attempts(env) if a.outcome == "success" and a.tree == tree), None)

    def held(self, revision):
        return self.holds.get(revision)


class Repo:
    """The deployment repository as the gates read it: prod's branch head is PROD_REV unless `head` says
    otherwise; merging onto it gives `merged` (a tree; None: the revision's own tree) or conflicts in `conflicts`;
    `only` are the "sha subject" lines of the commits only prod has."""

    def __init__(self, ancestors=(), head=PROD_REV, merged=None, conflicts=None, only=()):
        self.ancestors = set(ancestors)
        self.head, self.merged, self.conflicts, self.only = head, merged, conflicts, list(only)

    def is_ancestor(self, base, head):
        return base == head or (base, head) in self.ancestors

    def resolve(self, *revs):
        return [self.head if r == "prod" else r for r in revs]

    def merge_preview(self, base, head):
        return ("merge-base" if self.conflicts is not None else "merged-commit"), self.conflicts

    def tree_id(self, rev):
        return self.merged or TREE

    def git(self, *args):
        assert args[0] == "log" and args[-1] == f"{REV}..{self.head}", args
        return "".join(f"{line}\n" for line in self.only)


def run(s=None, ledger=None, repo=None, switch=None):
    ledger = ledger or Ledger(Attempt("staging", REV, TREE), Attempt("prod", PROD_REV, PROD_TREE),
                              Attempt("staging", PROD_REV, PROD_TREE, minutes_ago=600))
    c = promotion.Candidate("staging", "prod", REV, TREE, "Tune data8 (#4)")
    return promotion.gates(s or settings(), c, repo or Repo({(PROD_REV, REV)}), ledger, switch, NOW)


def refused(**kwargs) -> promotion.GateRefused:
    with pytest.raises(promotion.GateRefused) as info:
        run(**kwargs)
    return info.value


def test_every_gate_passes_and_says_why():
    c = run()
    assert [g["gate"] for g in c.gates] == ["verified", "not held", "not frozen", "newer", "same tree", "soak"]
    assert all(g["ok"] for g in c.gates) and c.verified == REV
    assert c.verified_at == (NOW - dt.timedelta(minutes=60)).isoformat()


def test_a_tree_not_verified_on_the_source_is_refused():
    exc = refused(ledger=Ledger(Attempt("staging", REV, TREE, outcome="failed"), Attempt("prod", PROD_REV, PROD_TREE)))
    assert "matches no revision verified on staging" in str(exc)
    assert [(g["gate"], g["ok"]) for g in exc.gates] == [("verified", False)]


def test_a_held_revision_is_refused():
    ledger = Ledger(Attempt("staging", REV, TREE), Attempt("prod", PROD_REV, PROD_TREE), holds={REV: "INC-9"})
    assert "is held: INC-9" in str(refused(ledger=ledger))


def test_a_frozen_target_is_refused_by_switch_and_by_window():
    assert "prod is frozen by hand: exams" in str(refused(switch="exams"))
    window = {"start": (NOW - dt.timedelta(hours=1)).isoformat(), "end": (NOW + dt.timedelta(hours=1)).isoformat(),
              "reason": "winter break"}
    assert "winter break" in str(refused(s=settings(windows=[window])))


def test_the_tree_the_target_runs_is_refused():
    ledger = Ledger(Attempt("staging", REV, TREE), Attempt("prod", "m" * 40, TREE))
    assert "prod already runs this tree" in str(refused(ledger=ledger))


def test_a_revision_that_lacks_what_the_target_runs_is_refused():
    assert "does not contain" in str(refused(repo=Repo()))


def test_newer_sees_through_the_merge_commit_the_target_runs():
    """prod runs the merge commit of the last promotion; its tree was verified on staging as PROD_REV."""
    ledger = Ledger(Attempt("staging", REV, TREE), Attempt("prod", "m" * 40, PROD_TREE),
                    Attempt("staging", PROD_REV, PROD_TREE, minutes_ago=600))
    assert run(ledger=ledger).gates[3]["ok"]


def test_soak_time_counts_from_the_first_verification_still_live():
    ledger = Ledger(Attempt("staging", REV, TREE, minutes_ago=5), Attempt("staging", "x" * 40, "y", "failed"),
                    Attempt("staging", REV, TREE, minutes_ago=50), Attempt("prod", PROD_REV, PROD_TREE))
    c = run(s=settings(soak_minutes=45), ledger=ledger)
    assert "for 50 min" in c.gates[-1]["detail"]
    exc = refused(s=settings(soak_minutes=60), ledger=ledger)
    assert "for 50 min, the soak time is 60 min" in str(exc) and "2026-12-01T12:10:00+00:00" in str(exc)


def test_soak_refuses_a_tree_the_source_no_longer_runs():
    ledger = Ledger(Attempt("staging", "n" * 40, "newer-tree", minutes_ago=1), Attempt("staging", REV, TREE),
                    Attempt("prod", PROD_REV, PROD_TREE))
    assert "staging no longer runs this tree: it runs nnnnnnnnnnnn" in str(refused(ledger=ledger))


def test_merge_needs_a_reason():
    with pytest.raises(Refused, match="mode merge needs a reason"):
        promotion.check_params("merge", "  ")
    promotion.check_params("pull_request", None)


def test_the_merge_gate():
    pull = {"number": 7}
    assert promotion.mergeable(REV, REV, pull, None) == f"PR #7 is mergeable at {REV[:12]}"
    with pytest.raises(Refused, match="source branch moved on"):
        promotion.mergeable(REV, "c" * 40, pull, None)
    with pytest.raises(Refused, match="mergeable: PR #7 is not mergeable"):
        promotion.mergeable(REV, REV, pull, "PR #7 is not mergeable: GitHub says 'dirty'")


C = {"revision": REV, "source": "staging", "target": "prod", "subject": "Tune `x` {{ 7*7 }}", "evidence": {},
     "gates": [{"gate": "soak", "ok": True, "detail": "fine"}]}
PULL = {"number": 7, "url": "https://github.com/o/r/pull/7"}


@pytest.mark.parametrize("answer, merged, outcome, words", [
    (None, None, "opened", "PR #7 is open for review"),
    ({"chosen_options": ["Approve"], "responded_by_user": {"id": "alice"}}, "m" * 40, "merged", "merged PR #7"),
    ({"chosen_options": ["Reject"], "responded_by_user": {"id": "alice", "name": "alice"}}, None, "rejected",
     "rejected by alice"),
    ({"chosen_options": ["Reject"], "responded_by_user": None}, None, "refused", "nobody approved within 240 min"),
])
def test_how_a_promotion_ends(answer, merged, outcome, words):
    mode = "merge" if answer else "pull_request"
    got, line = promotion.final(C, mode, None, PULL, answer, merged, {"open": Step.DONE}, 240)
    assert got is PromotionOutcome(outcome) and words in line


def test_a_refusal_and_a_failure_end_it_too():
    assert promotion.final(C, "merge", Ended(Outcome.REFUSED, "soak: no"), None, None, None, {}, 240) == \
        (PromotionOutcome.REFUSED, f"promotion {REV[:12]} staging -> prod: refused: soak: no; prod is unchanged")
    outcome, line = promotion.final(C, "merge", None, PULL, None, None, {"open": Step.DONE, "merge": Step.FAILED},
                                    240)
    assert outcome is PromotionOutcome.FAILED and "failed at merge" in line and "prod is unchanged unless" in line


def test_the_approval_request_shows_the_evidence_and_escapes_what_people_wrote():
    subject, body = promotion.approval_text(C, "merge", "INC-1", "bob", PULL, "https://airflow/run")
    assert REV[:12] in subject and f"[#7]({PULL['url']})" in body and "**soak**" in body
    assert "``Tune `x` {{ 7*7 }}``" in body  # a code span: Markdown shows it as written


# ---------------------------------------------------------------- issue 17, scenario 7: the merged tree


def test_same_tree_passes_through_the_merge_commits_of_earlier_promotions():
    c = run(repo=Repo({(PROD_REV, REV)}, head="m" * 40))  # prod's head: a promotion's merge commit
    assert c.gates[4] == {"gate": "same tree", "ok": True,
                          "detail": f"merging {REV[:12]} into prod gives the verified tree {TREE[:12]}"}


def test_a_commit_only_the_target_has_is_refused_naming_it_and_the_one_action():
    revert = "r" * 40 + ' Revert "Tune data8" on prod'
    exc = refused(repo=Repo({(PROD_REV, REV)}, head="m" * 40, merged="x" * 40, only=[revert]))
    assert [(g["gate"], g["ok"]) for g in exc.gates][-2:] == [("newer", True), ("same tree", False)]
    words = str(exc)
    assert f"would not give the tree verified on staging ({TREE[:12]})" in words
    assert 'rrrrrrrrrrrr `Revert "Tune data8" on prod`' in words
    assert "merge prod into staging (a PR `prod` -> `staging`)" in words


def test_a_merge_that_conflicts_is_refused_naming_the_files():
    exc = refused(repo=Repo({(PROD_REV, REV)}, head="m" * 40, conflicts=["deployments/data8/config/common.yaml"],
                            only=["h" * 40 + " hotfix on prod"]))
    assert "merging it into prod conflicts in deployments/data8/config/common.yaml" in str(exc)
    assert "hhhhhhhhhhhh `hotfix on prod`" in str(exc) and "merge prod into staging" in str(exc)


# ---------------------------------------------------------------- issue 17, scenario 6: merge mode's promotion


def test_merge_mode_merges_only_when_every_gate_passed_and_says_why_not():
    outcome, line = promotion.automatic(C, None, PULL, "m" * 40, approval=False)
    assert outcome is PromotionOutcome.MERGED and "every gate passed, merged PR #7 as mmmmmmmmmmmm" in line
    outcome, line = promotion.automatic(C, Ended(Outcome.REFUSED, "soak: try again after 2026-12-01T13:00"), PULL,
                                        None, approval=False)
    assert outcome is PromotionOutcome.REFUSED
    assert "refused: soak: try again after 2026-12-01T13:00; PR #7 stays open and prod is unchanged" in line
    outcome, line = promotion.automatic(C, None, PULL, None, approval=True)
    assert outcome is PromotionOutcome.OPENED and "start hubflow_promote (mode merge)" in line
    outcome, line = promotion.automatic(C, None, PULL, None, approval=False, failed="GitHub answered 502")
    assert outcome is PromotionOutcome.FAILED and "prod is unchanged unless PR #7 shows merged" in line
