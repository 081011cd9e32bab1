"""The ledger on SQLite and on the machine's real PostgreSQL: attempts, outcomes, the gate's lookup, holds, the
migrations (new and pre-migration databases) and riding out lost connections."""
import datetime as dt
import logging
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from hubflow.clients.ledger import MIGRATIONS, OUTCOMES, Ledger, LedgerError, RetryPolicy, metadata
from hubflow.core.errors import HubflowError

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"  # to end the sessions of a test database
FAST = RetryPolicy(attempts=3, first_wait=0.01, max_wait=0.05, deadline=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def ledger(database_url):
    book = Ledger(database_url)
    yield book
    book.engine.dispose()


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


# --- outcomes and lookups -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outcome", sorted(OUTCOMES - {"running"}))
def test_every_outcome_is_kept_and_only_success_counts_as_deployed(ledger, outcome):
    a = ledger.start("staging", "a" * 40, None, "tree", "r1")
    ledger.finish(a, outcome, "why")
    assert (ledger.get(a).outcome, ledger.get(a).detail) == (outcome, "why")
    assert (ledger.last_success("staging") is not None) == (outcome == "success")
    assert (ledger.verified_revision_for_tree("staging", "tree") is not None) == (outcome == "success")


def test_finishing_again_replaces_the_outcome(ledger):
    a = ledger.start("staging", "a" * 40, None, "tree", "r1")
    ledger.finish(a, "unknown", "the run could not conclude")
    ledger.finish(a, "success", "deployed and verified")  # the retried task concluded
    got = ledger.get(a)
    assert (got.outcome, got.detail) == ("success", "deployed and verified")
    assert ledger.verified_revision_for_tree("staging", "tree") == "a" * 40
    ledger.finish(a, "stopped", "the rollback failed")
    assert ledger.last_success("staging") is None


def test_attempt_for_run_and_last_attempt(ledger):
    assert ledger.last_attempt("staging") is None and ledger.attempt_for_run("staging", "r1") is None
    a = ledger.start("staging", "a" * 40, None, None, "r1")
    b = ledger.start("staging", "b" * 40, None, None, "r1")  # a run that moved on to a revert
    c = ledger.start("prod", "a" * 40, None, None, "r1")
    ledger.finish(a, "failed")
    assert ledger.attempt_for_run("staging", "r1").id == b
    assert ledger.attempt_for_run("prod", "r1").id == c
    assert ledger.attempt_for_run("staging", "r2") is None
    assert ledger.last_attempt("staging").id == b and ledger.last_attempt("prod").id == c
    assert ledger.last_attempt("qa") is None


# --- migrations -----------------------------------------------------------------------------------------------------

def _versions(engine):
    with engine.connect() as c:
        return set(c.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def test_migrations_make_exactly_the_schema_the_code_queries(ledger):
    with ledger.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), metadata) == []
    assert _versions(ledger.engine) == set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def _legacy_metadata():
    """The tables exactly as `metadata.create_all` made them before migrations (frozen here on purpose)."""
    old = sa.MetaData()
    sa.Table("hubflow_attempts", old,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("env", sa.String(64), nullable=False, index=True),
             sa.Column("revision", sa.String(64), nullable=False, index=True),
             sa.Column("base", sa.String(64)), sa.Column("tree", sa.String(64), index=True),
             sa.Column("run_id", sa.String(250)), sa.Column("outcome", sa.String(32), nullable=False),
             sa.Column("detail", sa.Text), sa.Column("forced_by", sa.String(250)), sa.Column("force_reason", sa.Text),
             sa.Column("record", sa.Text, nullable=False, default="{}"),
             sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
             sa.Column("finished_at", sa.DateTime(timezone=True)))
    sa.Table("hubflow_holds", old,
             sa.Column("revision", sa.String(64), primary_key=True), sa.Column("reason", sa.Text, nullable=False),
             sa.Column("env", sa.String(64), nullable=False),
             sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))
    return old


def test_a_database_made_before_migrations_is_stamped_and_upgraded_losing_nothing(database_url):
    old = _legacy_metadata()
    engine = sa.create_engine(database_url)
    old.create_all(engine)
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as c:
        c.execute(old.tables["hubflow_attempts"].insert().values(
            env="staging", revision="a" * 40, tree="t", run_id="r1", outcome="success", record='{"plan": {}}',
            started_at=now, finished_at=now))
        c.execute(old.tables["hubflow_holds"].insert().values(revision="b" * 40, reason="broke", env="staging",
                                                              created_at=now))
    engine.dispose()
    book = Ledger(database_url)
    try:
        assert book.last_success("staging").record == {"plan": {}}
        assert book.attempt_for_run("staging", "r1").revision == "a" * 40
        assert book.held("b" * 40) == "broke"
        indexes = {i["name"] for i in sa.inspect(book.engine).get_indexes("hubflow_attempts")}
        assert "ix_hubflow_attempts_run_id" in indexes  # the revisions after the stamp ran
        with book.engine.connect() as c:
            assert compare_metadata(MigrationContext.configure(c), metadata) == []
    finally:
        book.engine.dispose()


def test_opening_a_ledger_at_head_costs_one_query(database_url):
    Ledger(database_url).engine.dispose()
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        Ledger(database_url).engine.dispose()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert statements == ["SELECT version_num FROM alembic_version"]


def test_processes_opening_a_new_postgresql_ledger_at_once_do_not_collide(pg_database):
    """Without the advisory lock these race to CREATE TABLE and all but one fail."""
    script = ("import sys, time; from hubflow.clients.ledger import Ledger; "
              "time.sleep(max(0, float(sys.argv[2]) - time.time())); "
              "Ledger(sys.argv[1]).start('staging', 'a' * 40, None, None, 'r1')")
    at = str(time.time() + 3)  # after every interpreter has started
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_database, at], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    book = Ledger(pg_database)
    assert len(book.attempts("staging")) == 1  # the same run started four times is one attempt
    book.engine.dispose()


def test_threads_opening_a_new_postgresql_ledger_at_once_do_not_collide(pg_database):
    """Alembic's context is global to the process: threads of one process must migrate one at a time too."""
    barrier, errors = threading.Barrier(6), []

    def open_ledger():
        barrier.wait()
        try:
            Ledger(pg_database).engine.dispose()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
    threads = [threading.Thread(target=open_ledger) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)


# --- resilience (the real PostgreSQL) -------------------------------------------------------------------------------

def _terminate(name, pid=None):
    with sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
        which = "pid = :pid" if pid else "datname = :name AND pid <> pg_backend_pid()"
        return c.execute(sa.text(f"SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                                 f"WHERE {which}"), {"name": name, "pid": pid}).scalar()


def _retries(caplog):
    return [r for r in caplog.records if r.name == "hubflow.clients.ledger"]


def test_a_write_after_the_server_dropped_the_connections_succeeds(pg_database):
    book = Ledger(pg_database, retry=FAST)
    a = book.start("staging", "a" * 40, None, None, "r1")
    assert _terminate(pg_database.rsplit("/", 1)[1]) >= 1  # the pooled connection is dead now
    book.finish(a, "success")
    assert book.get(a).outcome == "success"
    book.engine.dispose()


def test_a_connection_lost_mid_write_is_retried_and_the_write_lands_once(pg_database, caplog):
    book = Ledger(pg_database, retry=FAST)
    killed = []

    def kill_first_insert(conn, cursor, statement, *args):
        if statement.startswith("INSERT") and not killed:
            killed.append(_terminate(None, pid=conn.connection.dbapi_connection.get_backend_pid()))
    sa.event.listen(book.engine, "before_cursor_execute", kill_first_insert)
    with caplog.at_level(logging.WARNING, logger="hubflow.clients.ledger"):
        a = book.start("staging", "a" * 40, None, None, "r1")
    assert killed == [1]
    assert [r.getMessage().split(":")[0] for r in _retries(caplog)] == ["ledger start"]
    assert [x.id for x in book.attempts("staging")] == [a]
    book.engine.dispose()


def test_a_database_that_stays_unreachable_fails_fast_as_a_ledger_error(pg_database, caplog):
    book = Ledger(pg_database, retry=FAST)
    a = book.start("staging", "a" * 40, None, None, "r1")
    name = pg_database.rsplit("/", 1)[1]
    with sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    _terminate(name)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="hubflow.clients.ledger"):
        with pytest.raises(LedgerError, match=r"ledger finish failed after 3 tries") as err:
            book.finish(a, "success")
    assert time.monotonic() - began < 5
    assert isinstance(err.value, HubflowError)
    assert len(_retries(caplog)) == 2 and all("\n" not in r.getMessage() for r in _retries(caplog))
    book.engine.dispose()


def test_opening_a_ledger_nobody_serves_is_a_ledger_error():
    with pytest.raises(LedgerError, match="ledger migrate failed after 3 tries"):
        Ledger("postgresql+psycopg2://postgres@127.0.0.1:1/nothing", retry=FAST)


def test_promotions_and_reports_are_kept(tmp_path):
    from hubflow.clients.ledger import Ledger

    book = Ledger(f"sqlite:///{tmp_path}/l.db")
    p = book.start_promotion("staging", "prod", "a" * 40, "t", "merge", "INC-1", "ada", "run-1")
    assert book.start_promotion("staging", "prod", "a" * 40, "t", "merge", "INC-1", "ada", "run-1") == p
    book.finish_promotion(p, "merged", "merged as #3", pr=3)
    (row,) = book.promotions("prod")
    assert (row["outcome"], row["requested_by"], row["reason"], row["record"]) == ("merged", "ada", "INC-1", {"pr": 3})
    book.add_report("nightly", "prod", "n-1", False, {"hubs": {"datahub": "failed"}})
    book.add_report("nightly", "prod", "n-1", True, {"hubs": {"datahub": "ok"}})  # a retried task replaces its own
    assert book.last_report("nightly", "prod")["summary"] == {"hubs": {"datahub": "ok"}}
    assert book.last_report("nightly", "staging") is None


# --- holds: full shas, who and why, set and cleared, kept as history ------------------------------------------------

def test_a_hold_keeps_who_and_why_and_its_clearing_is_kept_as_history(ledger):
    sha = "d" * 40
    assert ledger.hold(sha, "staging", "INC-12: kernels die", by="alice")
    assert not ledger.hold(sha, "prod", "again", by="bob")  # in force already: the first one stays, whoever asks
    hold = ledger.hold_of(sha)
    assert (hold["revision"], hold["env"], hold["reason"], hold["held_by"]) == (sha, "staging", "INC-12: kernels die",
                                                                                 "alice")
    assert hold["cleared_at"] is None and hold["created_at"] is not None
    assert ledger.clear_hold(sha, by="carol", reason="fixed by #88")
    assert ledger.held(sha) is None and ledger.hold_of(sha) is None and ledger.holds() == []
    (cleared,) = ledger.cleared_holds()
    assert (cleared["held_by"], cleared["reason"], cleared["cleared_by"], cleared["clear_reason"]) == (
        "alice", "INC-12: kernels die", "carol", "fixed by #88")
    assert cleared["cleared_at"] is not None
    assert ledger.hold(sha, "staging", "verification failed: hub data8")  # held again: a new hold, history kept
    assert ledger.hold_of(sha)["held_by"] == "hubflow"  # hubflow's own failure path, when no one is named
    assert [h["reason"] for h in ledger.holds()] == ["verification failed: hub data8"]
    assert len(ledger.cleared_holds()) == 1


@pytest.mark.parametrize("revision", ["d" * 12, "D" * 40, "staging", "d" * 41, ""])
def test_a_hold_takes_only_a_full_sha(ledger, revision):
    """Holds compare full shas: an abbreviation stored would hold nothing, so the ledger refuses it."""
    with pytest.raises(ValueError, match="full commit sha"):
        ledger.hold(revision, "staging", "why", by="alice")
    assert ledger.holds() == []
    assert ledger.hold("e" * 64, "staging", "a SHA-256 repository", by="alice")  # git's other object format


def test_holds_made_before_who_was_recorded_stay_readable_and_clearable(database_url):
    """A ledger at 0003 (holds keyed by revision, no who) upgraded to head: every hold still holds."""
    from alembic import command

    from hubflow.clients.ledger import _alembic

    engine = sa.create_engine(database_url)
    with engine.begin() as c:
        command.upgrade(_alembic(c), "0003")
        now = dt.datetime.now(dt.timezone.utc)
        for n, sha in enumerate(("a" * 40, "b" * 40)):
            c.execute(sa.text("INSERT INTO hubflow_holds (revision, reason, env, created_at) VALUES "
                              "(:r, :why, 'staging', :at)"), {"r": sha, "why": f"broke {n}",
                                                             "at": now + dt.timedelta(seconds=n)})
    engine.dispose()
    book = Ledger(database_url)
    try:
        assert _versions(book.engine) == set(ScriptDirectory(str(MIGRATIONS)).get_heads())
        assert [(h["revision"], h["reason"], h["held_by"]) for h in book.holds()] == [
            ("a" * 40, "broke 0", None), ("b" * 40, "broke 1", None)]
        assert book.held("b" * 40) == "broke 1"
        assert book.clear_hold("a" * 40, by="alice", reason="INC-3 closed")
        assert book.hold("a" * 40, "prod", "again", by="bob")  # a second hold of one revision: the key allows it
        with book.engine.connect() as c:
            assert compare_metadata(MigrationContext.configure(c), metadata) == []
    finally:
        book.engine.dispose()


def test_the_hold_history_migration_downgrades_keeping_the_holds_in_force(database_url):
    from alembic import command

    from hubflow.clients.ledger import _alembic

    book = Ledger(database_url)
    book.hold("a" * 40, "staging", "in force", by="alice")
    book.hold("b" * 40, "staging", "lifted", by="alice")
    book.clear_hold("b" * 40, by="bob", reason="fine")
    book.engine.dispose()
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as c:
            command.downgrade(_alembic(c), "0003")
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT revision, reason FROM hubflow_holds")).all()
        assert [tuple(r) for r in rows] == [("a" * 40, "in force")]
    finally:
        engine.dispose()
