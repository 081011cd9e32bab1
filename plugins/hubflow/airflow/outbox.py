"""The ledger's outbox: writes a run could not make while the ledger database was down, kept until it returns.

A deploy's failure path must not lose its hold, its outcome or its links because the ledger is unreachable: the
revert, the commit status, the comments and Slack still happen, and each ledger write that failed is kept in an
Airflow Variable of the environment (`hubflow_ledger_outbox_<env>`, in Airflow's own database). The next task
that reads the ledger for a decision (a deploy's resolve, a promotion's check, the nightly) writes them first, in
order: a hold is in force before anything could deploy or promote the held revision. Every write kept here is one
the ledger makes idempotent (hold, update, finish), so writing one twice changes nothing.

One deploy of an environment runs at a time and its tasks write one after another, so the Variable of an
environment has one writer at a time.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from hubflow.airflow import hooks

if TYPE_CHECKING:
    from hubflow.core.settings import Settings

log = logging.getLogger("hubflow")
KEY = "hubflow_ledger_outbox_{env}"
WRITES = ("hold", "update", "finish")  # what may wait: the ledger makes each of them idempotent


def write(settings: Settings, env: str, op: str, *args: Any, **kwargs: Any) -> str | None:
    """Make one ledger write for `env`; None when it landed, else why it could not (it then waits in the outbox
    until the ledger returns)."""
    from hubflow.clients.ledger import LedgerError

    if op not in WRITES:
        raise ValueError(f"{op!r} cannot wait in the ledger's outbox; these can: {', '.join(WRITES)}")
    try:
        getattr(hooks.ledger(settings), op)(*args, **kwargs)
        return None
    except LedgerError as exc:
        _keep(env, [*_pending(env), {"op": op, "args": list(args), "kwargs": kwargs}])
        log.warning("the ledger could not be written (%s); the %s waits in Airflow Variable %s until it returns",
                    exc, op, KEY.format(env=env))
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def catch_up(settings: Settings) -> int:
    """Write what earlier runs of every environment could not, oldest first; how many writes landed. Raises the
    ledger's error when it is still down (the caller's own reads would fail the same way)."""
    from airflow.sdk import Variable

    done = 0
    for env in settings.environments:
        pending = _pending(env.name)
        if not pending:
            continue
        book = hooks.ledger(settings)
        for w in pending:
            getattr(book, w["op"])(*w["args"], **w["kwargs"])
        Variable.delete(KEY.format(env=env.name))
        log.info("the ledger caught up with %d write(s) %s could not make while it was down", len(pending),
                 env.name)
        done += len(pending)
    return done


def _pending(env: str) -> list[dict[str, Any]]:
    from airflow.sdk import Variable

    return json.loads(Variable.get(KEY.format(env=env), default="[]"))


def _keep(env: str, writes: list[dict[str, Any]]) -> None:
    from airflow.sdk import Variable

    Variable.set(KEY.format(env=env), json.dumps(writes),
                 description="hubflow: ledger writes made while the ledger was down; written when it returns")
