"""hubflow.clients.retry, the one retry policy: what is retried, how long it waits, where it stops, what it logs."""
from __future__ import annotations

import logging
import time

import pytest

from hubflow.clients.retry import backoff, retrying


class Flaky(Exception):
    pass


def failing(times: int, exc: BaseException | None = None):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise exc or Flaky(f"failure {len(calls)}\nsecond line")
        return "done"
    return fn, calls


def policy(sleeps, **kwargs):
    bounds = {"transient": lambda exc: isinstance(exc, Flaky), "attempts": 5, "deadline": 900.0,
              "sleep": sleeps.append, **kwargs}
    return retrying("read the thing", **bounds)


def test_waits_double_from_the_first_up_to_the_longest():
    assert [backoff(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [backoff(n, 0.5, 8.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff(5000) == 30.0


def test_a_transient_failure_is_tried_again_until_it_succeeds():
    sleeps = []
    fn, calls = failing(2)
    assert policy(sleeps)(fn) == "done"
    assert len(calls) == 3 and sleeps == [1.0, 2.0]


def test_attempts_bound_the_tries_and_the_last_failure_is_raised_as_it_is():
    sleeps = []
    fn, calls = failing(10)
    retry = policy(sleeps, first_wait=0.5, max_wait=8.0)
    with pytest.raises(Flaky, match="failure 5"):
        retry(fn)
    assert len(calls) == 5 and sleeps == [0.5, 1.0, 2.0, 4.0]
    assert (retry.statistics["attempt_number"], retry.statistics["idle_for"]) == (5, 7.5)


def test_any_other_failure_is_raised_at_once():
    sleeps = []
    fn, calls = failing(1, KeyError("nope"))
    with pytest.raises(KeyError):
        policy(sleeps)(fn)
    assert len(calls) == 1 and sleeps == []


def test_the_deadline_bounds_the_waits_even_when_sleep_takes_no_time():
    sleeps = []
    fn, calls = failing(10)
    with pytest.raises(Flaky):
        policy(sleeps, deadline=10.0, wait=lambda exc, attempt: 7.0)(fn)
    assert sleeps == [7.0] and len(calls) == 2  # a second wait of 7 s would end past the deadline
    sleeps.clear()
    with pytest.raises(Flaky):
        policy(sleeps, deadline=600.0, wait=lambda exc, attempt: 3601.0)(failing(1)[0])
    assert sleeps == []  # a wait longer than the deadline is never begun


def test_the_deadline_bounds_the_time_since_the_first_try():
    sleeps = []
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.06)
        raise Flaky("slow")
    with pytest.raises(Flaky):
        policy(sleeps, deadline=0.05, first_wait=0.001)(slow)
    assert len(calls) == 1 and sleeps == []


def test_a_wait_function_decides_where_it_knows_and_the_doubling_elsewhere():
    sleeps = []
    asked = {2: 7.0}
    with pytest.raises(Flaky):
        policy(sleeps, attempts=4, wait=lambda exc, attempt: asked.get(attempt))(failing(10)[0])
    assert sleeps == [1.0, 7.0, 4.0]


def test_each_wait_is_logged_in_one_line_naming_the_operation(caplog):
    log = logging.getLogger("hubflow.test_retry")
    with caplog.at_level(logging.WARNING, logger=log.name):
        policy([], logger=log, describe=lambda exc: f"Flaky: {exc}")(failing(2)[0])
    assert [r.getMessage() for r in caplog.records if r.name == log.name] == [
        "read the thing: Flaky: failure 1; trying again in 1.0s (try 2 of 5)",
        "read the thing: Flaky: failure 2; trying again in 2.0s (try 3 of 5)"]


def test_the_loop_form_retries_a_block():
    sleeps, tries = [], []
    for attempt in policy(sleeps):
        with attempt:
            tries.append(1)
            if len(tries) < 3:
                raise Flaky("again")
    assert len(tries) == 3 and sleeps == [1.0, 2.0]
