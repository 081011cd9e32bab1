"""Freeze windows: absolute ones, weekly ones read in their own zone across DST, and bad windows refused at load."""
import datetime as dt
import zoneinfo

import pytest

from hubflow.core.documents import ConfigError
from hubflow.core.freeze import frozen, next_window
from hubflow.core.settings import Environment, parse_duration, parse_settings

LA = zoneinfo.ZoneInfo("America/Los_Angeles")
UTC = dt.timezone.utc
WEEKEND = {"cron": "0 16 * * FRI", "duration": "64h", "timezone": "America/Los_Angeles", "reason": "weekend"}


def env(*windows) -> Environment:
    return Environment(name="prod", branch="prod", hub_url="https://{hub}.example.org",
                       freeze_windows=list(windows))


def la(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LA)


@pytest.mark.parametrize("now,until", [
    (la(2026, 12, 4, 16, 0), "2026-12-07T08:00:00-08:00"),   # the window's first instant
    (la(2026, 12, 6, 12, 0), "2026-12-07T08:00:00-08:00"),
    (dt.datetime(2026, 12, 7, 15, 59, tzinfo=UTC), "2026-12-07T08:00:00-08:00"),  # 07:59 Los Angeles
    (la(2026, 12, 4, 15, 59), None),
    (la(2026, 12, 7, 8, 0), None),                            # the end is not in the window
    (la(2026, 12, 2, 12, 0), None),
])
def test_weekly_window_inside_and_outside(now, until):
    reason = frozen(env(WEEKEND), None, now)
    assert reason == (f"prod is frozen until {until}: weekend" if until else None)


def test_next_window_is_the_current_one_or_the_next_to_start():
    e = env(WEEKEND)
    assert next_window(e, la(2026, 12, 2, 12, 0)) == (la(2026, 12, 4, 16), la(2026, 12, 7, 8), "weekend")
    assert next_window(e, la(2026, 12, 5, 12, 0)) == (la(2026, 12, 4, 16), la(2026, 12, 7, 8), "weekend")
    start, end, _ = next_window(e, la(2026, 12, 7, 8, 0))
    assert (start.isoformat(), end.isoformat()) == ("2026-12-11T16:00:00-08:00", "2026-12-14T08:00:00-08:00")


@pytest.mark.parametrize("friday,last_frozen_utc,monday", [
    # DST ends on Sunday 2026-11-01: the window starts 16:00 PDT and ends 08:00 PST (65 hours later)
    (la(2026, 10, 30, 16), dt.datetime(2026, 11, 2, 15, 59, tzinfo=UTC), "2026-11-02T08:00:00-08:00"),
    # DST starts on Sunday 2026-03-08: the window starts 16:00 PST and ends 08:00 PDT (63 hours later)
    (la(2026, 3, 6, 16), dt.datetime(2026, 3, 9, 14, 59, tzinfo=UTC), "2026-03-09T08:00:00-07:00"),
])
def test_weekly_window_keeps_wall_clock_times_across_dst(friday, last_frozen_utc, monday):
    e = env(WEEKEND)
    start, end, _ = next_window(e, friday - dt.timedelta(days=1))
    assert start.isoformat() == friday.isoformat() and end.isoformat() == monday
    assert frozen(e, None, last_frozen_utc) == f"prod is frozen until {monday}: weekend"
    assert frozen(e, None, last_frozen_utc + dt.timedelta(minutes=1)) is None


def test_absolute_windows_unchanged_and_mixed_with_recurring():
    start, end = dt.datetime(2026, 12, 18, 17, tzinfo=UTC), dt.datetime(2027, 1, 6, 20, tzinfo=UTC)  # a Wednesday
    e = env({"start": start, "end": end, "reason": "winter break"}, WEEKEND)
    assert frozen(e, None, start) == f"prod is frozen until {end.isoformat()}: winter break"
    assert frozen(e, None, end) is None
    # inside both: the one that ends last is the one that says until when
    assert next_window(e, la(2026, 12, 19, 12)) == (start, end, "winter break")
    assert next_window(e, la(2026, 12, 16, 12)) == (start, end, "winter break")  # starts before Friday's
    assert frozen(e, "exams", la(2026, 12, 2)) == "prod is frozen by hand: exams"


def test_no_window_to_come():
    past = {"start": dt.datetime(2020, 1, 1, tzinfo=UTC), "end": dt.datetime(2020, 1, 2, tzinfo=UTC)}
    assert next_window(env(past), dt.datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert next_window(env(), dt.datetime(2026, 1, 1, tzinfo=UTC)) is None


SETTINGS = """
repository: {github: org/deploy, clone_url: https://github.com/org/deploy.git}
environments:
  - name: prod
    branch: prod
    hub_url: "https://{hub}.example.org"
    freeze_windows:
"""


@pytest.mark.parametrize("window,field,reason", [
    ('{cron: "0 16 * * FRY", duration: 64h, timezone: UTC}', "cron", "not a five-field cron expression"),
    ('{cron: "0 0 16 * * FRI", duration: 64h, timezone: UTC}', "cron", "not a five-field cron expression"),
    ('{cron: "0 0 30 2 *", duration: 64h, timezone: UTC}', "cron", "never starts"),
    ('{cron: "0 16 * * FRI", duration: 64h, timezone: America/Berkeley}', "timezone", "not a known IANA time zone"),
    ('{cron: "0 16 * * FRI", duration: 64h, timezone: ../../etc/passwd}', "timezone", "not a known IANA time zone"),
    ('{cron: "0 16 * * FRI", duration: 0h, timezone: UTC}', "duration", "longer than zero"),
    ('{cron: "0 16 * * FRI", duration: "64", timezone: UTC}', "duration", "not a duration such as 64h"),
    ('{cron: "0 16 * * FRI", duration: PT64H, timezone: UTC}', "duration", "not a duration such as 64h"),
    ('{cron: "0 16 * * FRI", duration: 64h, timezone: UTC, colour: red}', "colour", "unknown key"),
    ('{cron: "0 16 * * FRI", timezone: UTC}', "duration", "required key is missing"),
    ('{start: "2026-12-18T17:00:00", end: "2026-12-19T17:00:00Z"}', "start", "needs a time zone"),
])
def test_bad_windows_are_refused_at_load_with_the_field(window, field, reason):
    with pytest.raises(ConfigError) as err:
        parse_settings(SETTINGS + f"      - {window}\n", "s.yaml")
    found = {path: why for _, path, why in err.value.problems}
    assert reason in found[f"environments[0].freeze_windows[0].{field}"], found


@pytest.mark.parametrize("duration,length", [("64h", dt.timedelta(hours=64)), ("90m", dt.timedelta(minutes=90)),
                                             ("2d16h", dt.timedelta(hours=64)), ("1h30m", dt.timedelta(minutes=90))])
def test_durations(duration, length):
    assert parse_duration(duration) == length
