"""Freeze: an environment that must not change (exam week, a holiday) neither deploys nor promotes.

Two sources: a switch an operator flips (`hubflow freeze ENV --reason ...`, kept in the Airflow Variable
`hubflow_freeze_<env>`), and the configured time windows of the environment. No Airflow import here: the task and
the CLI read and write the switch and pass it in.
"""
from __future__ import annotations

import datetime as dt

from hubflow.core.config import Environment


def variable_name(env: str) -> str:
    return f"hubflow_freeze_{env}"


def frozen(env: Environment, switch: str | None, now: dt.datetime | None = None) -> str | None:
    """Why `env` is frozen at `now`, or None when it is not."""
    if switch:
        return f"{env.name} is frozen by hand: {switch}"
    now = now or dt.datetime.now(dt.timezone.utc)
    for window in env.freeze_windows:
        if window.start <= now < window.end:
            return f"{env.name} is frozen until {window.end.isoformat()}: {window.reason}"
    return None
