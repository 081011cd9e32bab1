"""The ledger: every deploy attempt (environment, revision, plan, tags, helm revisions, verification, outcome, links,
who forced what) and every hold.

It lives in its own SQL database (SQLAlchemy URL; PostgreSQL in production, SQLite locally), not in Airflow's
metadata database: tasks in Airflow 3 may not touch that one, and losing it must not lose the history. If the
ledger database itself is lost, the essentials outlive it elsewhere: GitHub commit statuses `hubflow/<env>` on each
branch (which revisions passed or failed where) and the git revision recorded in each helm release.
No Airflow import here.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

attempts = sa.Table(
    "hubflow_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("env", sa.String(64), nullable=False, index=True),
    sa.Column("revision", sa.String(64), nullable=False, index=True),
    sa.Column("base", sa.String(64)),
    sa.Column("tree", sa.String(64), index=True),
    sa.Column("run_id", sa.String(250)),
    sa.Column("outcome", sa.String(32), nullable=False),  # running, success, failed, refused, skipped
    sa.Column("detail", sa.Text),
    sa.Column("forced_by", sa.String(250)),
    sa.Column("force_reason", sa.Text),
    sa.Column("record", sa.Text, nullable=False, default="{}"),  # plan, tags, releases, verification, links (JSON)
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

holds = sa.Table(
    "hubflow_holds", metadata,
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("env", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

OUTCOMES = {"running", "success", "failed", "refused", "skipped"}


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Ledger:
    def __init__(self, url: str):
        self.engine = sa.create_engine(url, future=True)
        metadata.create_all(self.engine)

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
                env=env, revision=revision, base=base, tree=tree, run_id=run_id, outcome="running",
                forced_by=forced_by, force_reason=force_reason, record="{}", started_at=_now())).inserted_primary_key[0]

    def update(self, attempt_id: int, **record: Any) -> None:
        """Merge keys into the attempt's record (plan, images, releases, verification, links...)."""
        with self.engine.begin() as c:
            current = json.loads(c.execute(sa.select(attempts.c.record).where(attempts.c.id == attempt_id)).scalar_one())
            current.update(record)
            c.execute(attempts.update().where(attempts.c.id == attempt_id).values(record=json.dumps(current)))

    def finish(self, attempt_id: int, outcome: str, detail: str = "") -> None:
        if outcome not in OUTCOMES - {"running"}:
            raise ValueError(f"unknown outcome {outcome!r}")
        with self.engine.begin() as c:
            c.execute(attempts.update().where(attempts.c.id == attempt_id)
                      .values(outcome=outcome, detail=detail, finished_at=_now()))

    def attempts(self, env: str | None = None, limit: int = 50) -> list[Attempt]:
        q = sa.select(attempts).order_by(attempts.c.id.desc()).limit(limit)
        if env:
            q = q.where(attempts.c.env == env)
        with self.engine.connect() as c:
            return [Attempt(**{**row._mapping, "record": json.loads(row.record)}) for row in c.execute(q)]

    def get(self, attempt_id: int) -> Attempt:
        with self.engine.connect() as c:
            row = c.execute(sa.select(attempts).where(attempts.c.id == attempt_id)).one()
        return Attempt(**{**row._mapping, "record": json.loads(row.record)})

    def last_success(self, env: str) -> Attempt | None:
        """The revision running in `env` as far as hubflow knows: its newest successful deploy."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(attempts).where(attempts.c.env == env, attempts.c.outcome == "success")
                            .order_by(attempts.c.id.desc()).limit(1)).first()
        return Attempt(**{**row._mapping, "record": json.loads(row.record)}) if row else None

    def verified_revision_for_tree(self, env: str, tree: str) -> str | None:
        """A revision whose tree passed verification in `env` (the prod gate: promote exactly what was tested)."""
        with self.engine.connect() as c:
            return c.execute(sa.select(attempts.c.revision).where(
                attempts.c.env == env, attempts.c.tree == tree, attempts.c.outcome == "success")
                .order_by(attempts.c.id.desc()).limit(1)).scalar()

    def planned_hubs(self, env: str, revision: str) -> list[str]:
        """The hubs that attempts to deploy `revision` in `env` planned to change (touched, maybe not undone)."""
        hubs: dict[str, None] = {}
        with self.engine.connect() as c:
            for (record,) in c.execute(sa.select(attempts.c.record).where(
                    attempts.c.env == env, attempts.c.revision == revision)):
                hubs.update(dict.fromkeys(h["name"] for h in json.loads(record).get("plan", {}).get("hubs", [])))
        return list(hubs)

    def hold(self, revision: str, env: str, reason: str) -> None:
        with self.engine.begin() as c:
            if not c.execute(sa.select(holds.c.revision).where(holds.c.revision == revision)).first():
                c.execute(holds.insert().values(revision=revision, env=env, reason=reason, created_at=_now()))

    def held(self, revision: str) -> str | None:
        """The reason `revision` is held, or None."""
        with self.engine.connect() as c:
            return c.execute(sa.select(holds.c.reason).where(holds.c.revision == revision)).scalar()

    def clear_hold(self, revision: str) -> bool:
        with self.engine.begin() as c:
            return c.execute(holds.delete().where(holds.c.revision == revision)).rowcount > 0

    def holds(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(holds).order_by(holds.c.created_at))]
