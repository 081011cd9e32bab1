"""One retry policy for every outbound call hubflow makes (GitHub, the ledger database, the hubs).

    retrying(what, transient=..., attempts=..., deadline=..., first_wait=1, max_wait=30, wait=None,
             describe=str, logger=log, sleep=None) -> tenacity.Retrying
    backoff(attempt, first_wait=1, max_wait=30) -> seconds  (the doubling, for a caller that sleeps by itself)

Use it as `retrying(...)(fn)` (calls `fn()` until it returns) or, for a block, as tenacity's loop:
`for attempt in retrying(...): with attempt: ...`.

- `transient(exc) -> bool` says which exceptions are worth trying again; any other exception is raised at once.
- A try is made again only while fewer than `attempts` tries were made, less than `deadline` seconds have passed
  since the first one, and the waits, the coming one included, add up to at most `deadline` (so a wait an injected
  `sleep` skips is bounded as well, and a wait that alone exceeds the deadline is never begun).
- Waits double from `first_wait` up to `max_wait` (`backoff`: `first_wait * 2 ** (try - 1)`, capped). A
  caller-supplied `wait(exc, try) -> seconds | None` overrides that for the answers that say how long to wait
  (GitHub's Retry-After or X-RateLimit-Reset); None falls back to the doubling.
- Before each wait `logger` logs one warning line naming the operation `what`, the failure (the first line of
  `describe(exc)`), the wait and the coming try: "<what>: <failure>; trying again in 2.0s (try 3 of 5)".
- `sleep` (default: tenacity's, i.e. time.sleep) is injectable: tests record the waits instead of sleeping.
- When the bounds are reached, the last exception is raised as it is (tenacity's `reraise`); the caller names it in
  its own error. `retrying.statistics["attempt_number"]` is then the number of tries made and
  `retrying.statistics["idle_for"]` the seconds waited.

Everything that retries goes through here: clients.github (GitHub.call; the mergeability poll), clients.ledger
(Ledger._retry), clients.smoke (idempotent hub requests). No Airflow import here.
"""
from __future__ import annotations

import logging
from typing import Callable

import tenacity

log = logging.getLogger(__name__)


def retrying(what: str, *, transient: Callable[[BaseException], bool], attempts: int, deadline: float,
             first_wait: float = 1.0, max_wait: float = 30.0,
             wait: Callable[[BaseException, int], float | None] | None = None,
             describe: Callable[[BaseException], str] = str, logger: logging.Logger = log,
             sleep: Callable[[float], None] | None = None) -> tenacity.Retrying:
    """A tenacity.Retrying for the operation `what` under hubflow's one policy (see the module docstring)."""
    def worth_it(state: tenacity.RetryCallState) -> bool:
        return bool(state.outcome.failed) and transient(state.outcome.exception())

    def how_long(state: tenacity.RetryCallState) -> float:
        asked = wait(state.outcome.exception(), state.attempt_number) if wait else None
        return backoff(state.attempt_number, first_wait, max_wait) if asked is None else asked

    def enough(state: tenacity.RetryCallState) -> bool:
        return (state.attempt_number >= attempts or (state.seconds_since_start or 0.0) >= deadline
                or state.idle_for + state.upcoming_sleep > deadline)

    def say(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception()
        failure = (describe(exc).splitlines() or [type(exc).__name__])[0]
        logger.warning("%s: %s; trying again in %.1fs (try %d of %d)", what, failure, state.upcoming_sleep,
                       state.attempt_number + 1, attempts)

    return tenacity.Retrying(retry=worth_it, wait=how_long, stop=enough, before_sleep=say, reraise=True,
                             **({"sleep": sleep} if sleep else {}))


def backoff(attempt: int, first_wait: float = 1.0, max_wait: float = 30.0) -> float:
    """The wait after failed try number `attempt` (1, 2, ...): `first_wait`, doubled after each try, at most
    `max_wait`."""
    return min(first_wait * 2 ** min(attempt - 1, 64), max_wait)
