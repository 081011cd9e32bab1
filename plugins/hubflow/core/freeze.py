"""Freeze: an environment that must not change (exam week, a holiday) neither deploys nor promotes.

Two sources: a switch an operator flips (`hubflow freeze ENV --reason ...`, kept in the Airflow Variable
`hubflow_freeze_<env>`), and the configured windows of the environment, absolute or recurring. No Airflow import
here: the task and the CLI read and write the switch and pass it in.
"""
from __future__ import annotations

import datetime as dt

from croniter import croniter

from hubflow.core.settings import Environment, FreezeWindow, RecurringFreezeWindow

Window = tuple[dt.datetime, dt.datetime, str]


def variable_name(env: str) -> str:
    return f"hubflow_freeze_{env}"


def frozen(env: Environment, switch: str | None, now: dt.datetime | None = None) -> str | None:
    """Why `env` is frozen at `now` (aware), or None when it is not; a window names its end in its own zone."""
    if switch:
        return f"{env.name} is frozen by hand: {switch}"
    now = _utc(now)
    window = next_window(env, now)
    if window and window[0] <= now:
        return f"{env.name} is frozen until {window[1].isoformat()}: {window[2]}"
    return None


def next_window(env: Environment, now: dt.datetime) -> Window | None:
    """(start, end, reason) of the window `env` is in at `now` (aware), the one that ends last, else of the next
    one to start; None when no window is current or to come. Times are in each window's own zone."""
    now = _utc(now)
    occurrences = [w for w in (_occurrence(w, now) for w in env.freeze_windows) if w]
    current = [w for w in occurrences if w[0] <= now]
    if current:
        return max(current, key=lambda w: w[1])
    return min(occurrences, key=lambda w: w[0], default=None)


def _utc(now: dt.datetime | None) -> dt.datetime:
    """In UTC, because aware datetimes that share a zone object compare as wall-clock times, blind to DST."""
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def _occurrence(window: FreezeWindow | RecurringFreezeWindow, now: dt.datetime) -> Window | None:
    """The occurrence of `window` that contains `now`, else its next one (None for an absolute window past)."""
    if isinstance(window, FreezeWindow):
        return (window.start, window.end, window.reason) if now < window.end else None
    # croniter on aware times follows DST (16:00 stays 16:00 local); the end is start + duration on the wall clock.
    after = croniter(window.cron, now.astimezone(window.zone)).get_next(dt.datetime)
    before = croniter(window.cron, after).get_prev(dt.datetime)  # the last start at or before now
    start = before if now < _end(window, before) else after
    return start, _end(window, start), window.reason


def _end(window: RecurringFreezeWindow, start: dt.datetime) -> dt.datetime:
    return (start.replace(tzinfo=None) + window.length).replace(tzinfo=window.zone)
