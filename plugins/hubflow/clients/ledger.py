"""The ledger: every deploy attempt (environment, revision, plan, tags, helm revisions, verification, outcome, links,
who forced what) and every hold.

It lives in its own SQL database (SQLAlchemy URL; PostgreSQL in production, SQLite locally), not in Airflow's
metadata database: tasks in Airflow 3 may not touch that one, and losing it must not lose the history. If the
ledger database itself is lost, the essentials outlive it elsewhere: GitHub commit statuses `hubflow/<env>` on each
branch (which revisions passed or failed where) and the git revision recorded in each helm release.

The schema is migrated by alembic (ledger_migrations/) when a Ledger is opened. Every read and write is retried on
transient database errors, then fails as a LedgerError naming the operation; writes are idempotent so a retry that
follows a commit whose answer was lost changes nothing.
No Airflow import here.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from hubflow.clients.retry import retrying
from hubflow.core.errors import HubflowError
from hubflow.core.outcomes import LEDGER_WORDS, PROMOTION_LEDGER_WORDS, RUNNING

log = logging.getLogger(__name__)

metadata = sa.MetaData()

attempts = sa.Table(
    "hubflow_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("env", sa.String(64), nullable=False, index=True),
    sa.Column("revision", sa.String(64), nullable=False, index=True),
    sa.Column("base", sa.String(64)),
    sa.Column("tree", sa.String(64), index=True),
    sa.Column("run_id", sa.String(250), index=True),
    sa.Column("outcome", sa.String(32), nullable=False),  # one of LEDGER_WORDS
    sa.Column("detail", sa.Text),
    sa.Column("forced_by", sa.String(250)),
    sa.Column("force_reason", sa.Text),
    sa.Column("record", sa.Text, nullable=False, default="{}"),  # plan, tags, releases, verification, links (JSON)
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

holds = sa.Table(  # one row per hold, kept when it is cleared: at most one in force per revision
    "hubflow_holds", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("revision", sa.String(64), nullable=False, index=True),  # a full commit sha, never an abbreviation
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("env", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("held_by", sa.String(250)),  # NULL: held before who was recorded (migration 0004)
    sa.Column("cleared_at", sa.DateTime(timezone=True)),  # NULL while the hold is in force
    sa.Column("cleared_by", sa.String(250)),
    sa.Column("clear_reason", sa.Text),
)

promotions = sa.Table(
    "hubflow_promotions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(64), nullable=False, index=True),
    sa.Column("revision", sa.String(64), nullable=False),
    sa.Column("tree", sa.String(64)),
    sa.Column("mode", sa.String(32), nullable=False),  # pull_request | merge
    sa.Column("reason", sa.Text),
    sa.Column("requested_by", sa.String(250)),
    sa.Column("run_id", sa.String(250), index=True),
    sa.Column("outcome", sa.String(32), nullable=False),  # one of PROMOTION_LEDGER_WORDS
    sa.Column("detail", sa.Text),
    sa.Column("record", sa.Text, nullable=False, default="{}"),  # gates, PR, approval (JSON)
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

reports = sa.Table(
    "hubflow_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # nightly
    sa.Column("env", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),  # JSON
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_hubflow_reports_kind_env", "kind", "env"),
)

verification_leases = sa.Table(  # one verification per hub and environment at a time, across the DAGs (migration 0005)
    "hubflow_verification_leases", metadata,
    sa.Column("env", sa.String(64), primary_key=True),
    sa.Column("hub", sa.String(64), primary_key=True),
    sa.Column("token", sa.String(64), nullable=False),  # the holder's own id: taking again with it renews
    sa.Column("holder", sa.String(500), nullable=False),  # who, in words: DAG, run, task
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),  # then anyone may take it
)

# an attempt's outcome is `running` until it concludes, then the ledger word of its Outcome (hubflow.core.outcomes)
OUTCOMES = LEDGER_WORDS

MIGRATIONS = Path(__file__).with_name("ledger_migrations")
INITIAL_REVISION = "0001"  # the schema `metadata.create_all` made before migrations
_MIGRATE_LOCK = 0x6875_6266_6C6F_77  # "hubflow": the PostgreSQL advisory lock taken around a migration
_MIGRATING = threading.Lock()  # alembic's `context` is process-global: one migration per process at a time

TRANSIENT = (sa.exc.OperationalError, sa.exc.DisconnectionError, sa.exc.InterfaceError)
FULL_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256 object names, as git prints them
HOLDER = "hubflow"  # who holds a revision when hubflow's own failure path does


class LedgerError(HubflowError):
    """The ledger database stayed unreachable (or kept failing) through every retry of an operation."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long an operation retries transient database errors: waits double from `first_wait` up to `max_wait`,
    for at most `attempts` tries and `deadline` seconds (so a task fails in under ~30 s, not at its timeout)."""
    attempts: int = 5
    first_wait: float = 0.5
    max_wait: float = 8.0
    deadline: float = 25.0


T = TypeVar("T")


def _retried(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> T:
        return self._retry(method.__name__.lstrip("_"), lambda: method(self, *args, **kwargs))
    return wrapper


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


@dataclass
class Attempt:
    id: int
    env: str
    revision: str
    base: str | None
    tree: str | None
    run_id: str | None
    outcome: str
    detail: str | None
    forced_by: str | None
    force_reason: str | None
    record: dict[str, Any]
    started_at: dt.datetime
    finished_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out


def _attempt(row: sa.Row | None) -> Attempt | None:
    return Attempt(**{**row._mapping, "record": json.loads(row.record)}) if row else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _alembic(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def _heads() -> frozenset[str]:
    """The head revision(s) of the migrations shipped with this code (read from disk once per process)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS)).get_heads())


class Ledger:
    """One engine (its connection pool) and one migration check per Ledger: open one per process and URL and keep
    it (hubflow.airflow.hooks.LedgerHook does), `close()` it when done. Not across a fork: the child must open
    its own (the hook's cache lets the inherited one go with `engine.dispose(close=False)`)."""

    def __init__(self, url: str, retry: RetryPolicy = RetryPolicy()):
        self.retry = retry
        connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
        self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        try:
            self._migrate()
        except BaseException:
            self.engine.dispose()  # a ledger that cannot open keeps no pool behind
            raise

    def close(self) -> None:
        """Close the pooled connections. The Ledger stays usable: a later call opens a connection again."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, operation: str, fn: Callable[[], T]) -> T:
        policy = self.retry
        retry = retrying(f"ledger {operation}", transient=lambda exc: isinstance(exc, TRANSIENT),
                         attempts=policy.attempts, deadline=policy.deadline, first_wait=policy.first_wait,
                         max_wait=policy.max_wait, describe=_first_line, logger=log)
        try:
            return retry(fn)
        except TRANSIENT as exc:
            tries = retry.statistics.get("attempt_number", policy.attempts)
            raise LedgerError(f"ledger {operation} failed after {tries} tries: {_first_line(exc)}") from exc

    @_retried
    def _migrate(self) -> None:
        """Bring the schema to head. At head (the usual case: tasks open the ledger often) this is one query."""
        try:
            with self.engine.connect() as c:
                if set(c.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()) == _heads():
                    return
        except (sa.exc.ProgrammingError, sa.exc.OperationalError):  # no alembic_version yet (or a lost connection)
            pass
        with _MIGRATING, self.engine.begin() as c:
            if c.dialect.name == "postgresql":  # two processes opening a new database: one migrates, one waits
                c.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
            cfg = _alembic(c)
            inspector = sa.inspect(c)
            if inspector.has_table(attempts.name) and not inspector.has_table("alembic_version"):
                command.stamp(cfg, INITIAL_REVISION)  # made by create_all before migrations: the tables are there
            command.upgrade(cfg, "head")

    @_retried
    def start(self, env: str, revision: str, base: str | None, tree: str | None, run_id: str | None,
              forced_by: str | None = None, force_reason: str | None = None) -> int:
        """Open an attempt; a retried task that starts the same run again gets the same attempt back."""
        with self.engine.begin() as c:
            if run_id:
                row = c.execute(sa.select(attempts.c.id).where(attempts.c.run_id == run_id, attempts.c.env == env,
                                                               attempts.c.revision == revision)).first()
                if row:
                    return row.id
            return c.execute(attempts.insert().values(
                env=env, revision=revision, base=base, tree=tree, run_id=run_id, outcome=RUNNING,
                forced_by=forced_by, force_reason=force_reason, record="{}", started_at=_now())).inserted_primary_key[0]

    @_retried
    def update(self, attempt_id: int, **record: Any) -> None:
        """Merge keys into the attempt's record (plan, images, releases, verification, links...)."""
        with self.engine.begin() as c:
            row = c.execute(sa.select(attempts.c.record).where(attempts.c.id == attempt_id)).scalar_one()
            current = json.loads(row)
            current.update(record)
            c.execute(attempts.update().where(attempts.c.id == attempt_id).values(record=json.dumps(current)))

    @_retried
    def finish(self, attempt_id: int, outcome: str, detail: str = "") -> None:
        """Conclude an attempt. Again on a concluded one (a retried task) it replaces the outcome and detail."""
        if outcome not in OUTCOMES - {RUNNING}:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self.engine.begin() as c:
            c.execute(attempts.update().where(attempts.c.id == attempt_id)
                      .values(outcome=outcome, detail=detail, finished_at=_now()))

    @_retried
    def attempts(self, env: str | None = None, limit: int = 50) -> list[Attempt]:
        q = sa.select(attempts).order_by(attempts.c.id.desc()).limit(limit)
        if env:
            q = q.where(attempts.c.env == env)
        with self.engine.connect() as c:
            return [_attempt(row) for row in c.execute(q)]

    @_retried
    def get(self, attempt_id: int) -> Attempt:
        with self.engine.connect() as c:
            return _attempt(c.execute(sa.select(attempts).where(attempts.c.id == attempt_id)).one())

    @_retried
    def attempt_for_run(self, env: str, run_id: str) -> Attempt | None:
        """The newest attempt that run `run_id` opened in `env` (what a later task of the run reports on)."""
        with self.engine.connect() as c:
            return _attempt(c.execute(sa.select(attempts).where(attempts.c.env == env, attempts.c.run_id == run_id)
                                      .order_by(attempts.c.id.desc()).limit(1)).first())

    @_retried
    def last_attempt(self, env: str) -> Attempt | None:
        """The newest attempt in `env`, whatever its outcome."""
        with self.engine.connect() as c:
            return _attempt(c.execute(sa.select(attempts).where(attempts.c.env == env)
                                      .order_by(attempts.c.id.desc()).limit(1)).first())

    @_retried
    def last_success(self, env: str) -> Attempt | None:
        """The revision running in `env` as far as hubflow knows: its newest successful deploy."""
        with self.engine.connect() as c:
            return _attempt(c.execute(sa.select(attempts).where(attempts.c.env == env, attempts.c.outcome == "success")
                                      .order_by(attempts.c.id.desc()).limit(1)).first())

    def verified_revision_for_tree(self, env: str, tree: str) -> str | None:
        """A revision whose tree passed verification in `env` (the prod gate: promote exactly what was tested)."""
        attempt = self.verified_attempt_for_tree(env, tree)
        return attempt.revision if attempt else None

    @_retried
    def verified_attempt_for_tree(self, env: str, tree: str) -> Attempt | None:
        """The newest attempt that verified `tree` in `env`, with its record (e.g. the image digests it verified)."""
        with self.engine.connect() as c:
            return _attempt(c.execute(sa.select(attempts).where(
                attempts.c.env == env, attempts.c.tree == tree, attempts.c.outcome == "success")
                .order_by(attempts.c.id.desc()).limit(1)).first())

    @_retried
    def planned_hubs(self, env: str, revision: str) -> list[str]:
        """The hubs that attempts to deploy `revision` in `env` planned to change (touched, maybe not undone)."""
        hubs: dict[str, None] = {}
        with self.engine.connect() as c:
            for (record,) in c.execute(sa.select(attempts.c.record).where(
                    attempts.c.env == env, attempts.c.revision == revision)):
                hubs.update(dict.fromkeys(h["name"] for h in json.loads(record).get("plan", {}).get("hubs", [])))
        return list(hubs)

    # ------------------------------------------------------------ holds (a full sha each; cleared ones are kept)

    @_retried
    def hold(self, revision: str, env: str, reason: str, by: str | None = HOLDER) -> bool:
        """Hold `revision`, a full commit sha (an abbreviation would hold nothing: every check compares full shas;
        `hubflow hold` resolves what people type). While a hold of it is in force the first one stays, reason and
        who alike, so a retried write changes nothing. Returns whether this call made the hold."""
        if not FULL_SHA.fullmatch(revision):
            raise ValueError(f"a hold takes a full commit sha, not {revision!r}")
        with self.engine.begin() as c:
            if c.execute(sa.select(holds.c.id).where(holds.c.revision == revision, holds.c.cleared_at.is_(None))
                         ).first():
                return False
            c.execute(holds.insert().values(revision=revision, env=env, reason=reason, held_by=by, created_at=_now()))
            return True

    def held(self, revision: str) -> str | None:
        """The reason `revision` (a full sha) is held, or None when no hold of it is in force."""
        hold = self.hold_of(revision)
        return hold["reason"] if hold else None

    @_retried
    def hold_of(self, revision: str) -> dict[str, Any] | None:
        """The hold of `revision` in force (revision, reason, env, created_at, held_by, ...), or None."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(holds).where(holds.c.revision == revision, holds.c.cleared_at.is_(None))
                            .order_by(holds.c.id).limit(1)).first()
        return dict(row._mapping) if row else None

    @_retried
    def clear_hold(self, revision: str, by: str | None = None, reason: str | None = None) -> bool:
        """Lift the hold of `revision` in force, keeping it as history with who lifted it, when and why. Returns
        whether one was in force."""
        with self.engine.begin() as c:
            return c.execute(holds.update().where(holds.c.revision == revision, holds.c.cleared_at.is_(None))
                             .values(cleared_at=_now(), cleared_by=by, clear_reason=reason)).rowcount > 0

    @_retried
    def holds(self) -> list[dict[str, Any]]:
        """The holds in force, oldest first."""
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(holds).where(holds.c.cleared_at.is_(None))
                                                        .order_by(holds.c.created_at, holds.c.id))]

    @_retried
    def cleared_holds(self, limit: int = 50) -> list[dict[str, Any]]:
        """The holds lifted, the last lifted first, with who held and who cleared each and why."""
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(holds).where(holds.c.cleared_at.is_not(None))
                                                        .order_by(holds.c.cleared_at.desc(), holds.c.id.desc())
                                                        .limit(limit))]

    # ------------------------------------------------------------ promotions

    @_retried
    def start_promotion(self, source: str, target: str, revision: str, tree: str | None, mode: str,
                        reason: str | None, requested_by: str | None, run_id: str | None) -> int:
        """Open a promotion; a retried task of the same run gets the same one back."""
        with self.engine.begin() as c:
            if run_id:
                row = c.execute(sa.select(promotions.c.id).where(promotions.c.run_id == run_id,
                                                                 promotions.c.target == target)).first()
                if row:
                    return row.id
            return c.execute(promotions.insert().values(
                source=source, target=target, revision=revision, tree=tree, mode=mode, reason=reason,
                requested_by=requested_by, run_id=run_id, outcome=RUNNING, record="{}",
                started_at=_now())).inserted_primary_key[0]

    @_retried
    def finish_promotion(self, promotion_id: int, outcome: str, detail: str = "", **record: Any) -> None:
        """Conclude a promotion (again on a concluded one: replaces it), merging `record` into its record."""
        if outcome not in PROMOTION_LEDGER_WORDS - {RUNNING}:
            raise ValueError(f"unknown promotion outcome {outcome!r}")
        with self.engine.begin() as c:
            current = json.loads(c.execute(sa.select(promotions.c.record)
                                           .where(promotions.c.id == promotion_id)).scalar_one())
            current.update(record)
            c.execute(promotions.update().where(promotions.c.id == promotion_id).values(
                outcome=outcome, detail=detail, record=json.dumps(current), finished_at=_now()))

    @_retried
    def promotions(self, target: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q = sa.select(promotions).order_by(promotions.c.id.desc()).limit(limit)
        if target:
            q = q.where(promotions.c.target == target)
        with self.engine.connect() as c:
            return [{**r._mapping, "record": json.loads(r.record)} for r in c.execute(q)]

    # ------------------------------------------------------------ reports (the nightly verification)

    @_retried
    def add_report(self, kind: str, env: str, run_id: str | None, ok: bool, summary: dict[str, Any]) -> None:
        """Keep one report per (kind, env, run): a retried task replaces its own."""
        with self.engine.begin() as c:
            if run_id:
                c.execute(reports.delete().where(reports.c.kind == kind, reports.c.env == env,
                                                 reports.c.run_id == run_id))
            c.execute(reports.insert().values(kind=kind, env=env, run_id=run_id, ok=ok, summary=json.dumps(summary),
                                              created_at=_now()))

    @_retried
    def last_report(self, kind: str, env: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(reports).where(reports.c.kind == kind, reports.c.env == env)
                            .order_by(reports.c.id.desc()).limit(1)).first()
        return {**row._mapping, "summary": json.loads(row.summary)} if row else None

    # ------------------------------------------------------------ verification leases (one per hub at a time)

    def take_verification(self, env: str, hub: str, token: str, holder: str, seconds: float) -> dict[str, Any] | None:
        """Take the lease on verifying `hub` in `env` for `seconds`. None: this holder (`token`) has it now; else the
        lease of the verification that has it ({holder, taken_at, expires_at}): wait and ask again. A lease past its
        expiry is anyone's (its holder died); taking it again with the same token renews it (a retried call)."""
        try:
            return self._take_lease(env, hub, token, holder, seconds)
        except sa.exc.IntegrityError:  # another holder took it in the same instant
            now = _now()
            return self.verification_lease(env, hub) or {"holder": "another verification", "taken_at": now,
                                                         "expires_at": now}

    @_retried
    def _take_lease(self, env: str, hub: str, token: str, holder: str, seconds: float) -> dict[str, Any] | None:
        now = _now()
        lease = verification_leases.c
        with self.engine.begin() as c:
            c.execute(verification_leases.delete().where(lease.env == env, lease.hub == hub,
                                                         sa.or_(lease.expires_at <= now, lease.token == token)))
            row = c.execute(sa.select(verification_leases).where(lease.env == env, lease.hub == hub)).first()
            if row is not None:
                return _lease(row)
            c.execute(verification_leases.insert().values(env=env, hub=hub, token=token, holder=holder[:500],
                                                          taken_at=now,
                                                          expires_at=now + dt.timedelta(seconds=seconds)))
        return None

    @_retried
    def release_verification(self, env: str, hub: str, token: str) -> None:
        """Let the lease go (only the holder's own: one that expired and was taken by another stays theirs)."""
        lease = verification_leases.c
        with self.engine.begin() as c:
            c.execute(verification_leases.delete().where(lease.env == env, lease.hub == hub, lease.token == token))

    @_retried
    def verification_lease(self, env: str, hub: str) -> dict[str, Any] | None:
        """Who verifies `hub` in `env` now ({holder, taken_at, expires_at}), or None."""
        lease = verification_leases.c
        with self.engine.connect() as c:
            row = c.execute(sa.select(verification_leases).where(lease.env == env, lease.hub == hub,
                                                                 lease.expires_at > _now())).first()
        return _lease(row) if row else None


def _utc(value: dt.datetime) -> dt.datetime:
    """A time read back from the database, aware (SQLite keeps UTC without its zone)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _lease(row: sa.Row) -> dict[str, Any]:
    return {"holder": row.holder, "taken_at": _utc(row.taken_at), "expires_at": _utc(row.expires_at)}
