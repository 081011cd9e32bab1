"""The ledger on SQLite and on the machine's real PostgreSQL: attempts, outcomes, the gate's lookup, holds."""
import uuid

import pytest
import sqlalchemy as sa

from hubflow.ledger import Ledger


ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    """A ledger on SQLite, and one on a fresh database of the local PostgreSQL (which .ci/run starts)."""
    if request.param == "sqlite":
        yield Ledger(f"sqlite:///{tmp_path}/ledger.db")
        return
    name = f"hubflow_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    ledger = Ledger(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    yield ledger
    ledger.engine.dispose()
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE "{name}"'))


def test_attempt_lifecycle(ledger):
    a = ledger.start("staging", "a" * 40, None, "t" * 40, "run-1")
    assert ledger.start("staging", "a" * 40, None, "t" * 40, "run-1") == a  # a retried task gets the same attempt
    ledger.update(a, plan={"hubs": ["datahub"]})
    ledger.update(a, releases={"datahub": {"before": 3, "after": 4}})
    assert ledger.last_success("staging") is None
    ledger.finish(a, "success", "deployed 1 hub")
    got = ledger.get(a)
    assert got.outcome == "success" and got.finished_at is not None
    assert got.record == {"plan": {"hubs": ["datahub"]}, "releases": {"datahub": {"before": 3, "after": 4}}}
    assert ledger.last_success("staging").revision == "a" * 40
    assert ledger.last_success("prod") is None


def test_verified_tree_lookup_ignores_failures(ledger):
    ok = ledger.start("staging", "a" * 40, None, "tree1", "r1")
    ledger.finish(ok, "success")
    bad = ledger.start("staging", "b" * 40, None, "tree2", "r2")
    ledger.finish(bad, "failed", "smoke failed")
    assert ledger.verified_revision_for_tree("staging", "tree1") == "a" * 40
    assert ledger.verified_revision_for_tree("staging", "tree2") is None
    assert ledger.verified_revision_for_tree("prod", "tree1") is None


def test_forced_attempts_keep_who_and_why(ledger):
    a = ledger.start("prod", "c" * 40, None, "tree", "r", forced_by="alice", force_reason="hotfix; INC-42")
    got = ledger.attempts("prod")[0]
    assert (got.id, got.forced_by, got.force_reason) == (a, "alice", "hotfix; INC-42")


def test_holds(ledger):
    assert ledger.held("d" * 40) is None
    ledger.hold("d" * 40, "staging", "smoke failed: numpy missing")
    ledger.hold("d" * 40, "staging", "again")  # idempotent: the first reason stays
    assert ledger.held("d" * 40) == "smoke failed: numpy missing"
    assert [h["revision"] for h in ledger.holds()] == ["d" * 40]
    assert ledger.clear_hold("d" * 40) and not ledger.clear_hold("d" * 40)
    assert ledger.held("d" * 40) is None


def test_unknown_outcome_is_refused(ledger):
    a = ledger.start("staging", "e" * 40, None, None, None)
    with pytest.raises(ValueError, match="unknown outcome"):
        ledger.finish(a, "great")


def test_planned_hubs_of_a_revision(ledger):
    a = ledger.start("staging", "f" * 40, None, None, "r1")
    ledger.update(a, plan={"hubs": [{"name": "biology"}, {"name": "data8"}]})
    b = ledger.start("staging", "f" * 40, None, None, "r2")
    ledger.update(b, plan={"hubs": [{"name": "data8"}, {"name": "rhub"}]})
    assert ledger.planned_hubs("staging", "f" * 40) == ["biology", "data8", "rhub"]
    assert ledger.planned_hubs("prod", "f" * 40) == []
