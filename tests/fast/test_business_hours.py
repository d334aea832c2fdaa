"""The business clock and the settings that make it, without a database."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from meta_inbox.business_hours import clock_rows, parse_duration, parse_schedule
from meta_inbox.errors import BadInput
from meta_inbox.report import period

BERLIN = {
    "timezone": "Europe/Berlin",
    "mon": ["09:00-17:00"],
    "fri": ["22:00-24:00"],
    "sat": ["00:00-02:00"],
    "sun": ["01:00-04:00"],
    "holidays": ["2026-03-30"],
}


def test_the_clock_tiles_the_span_and_counts_only_open_time() -> None:
    schedule = parse_schedule(BERLIN)
    assert schedule is not None
    # Berlin moves its clocks forward on Sunday 2026-03-29 at 02:00; Monday is a holiday.
    rows = clock_rows(schedule, date(2026, 3, 26), date(2026, 4, 6))

    assert rows[0].starts_at == datetime(2026, 3, 26, tzinfo=UTC)
    assert rows[-1].ends_at == datetime(2026, 4, 7, tzinfo=UTC)
    for before, after in itertools.pairwise(rows):
        assert before.ends_at == after.starts_at
        assert after.open_seconds_before == before.open_seconds_before + (
            (before.ends_at - before.starts_at).total_seconds() if before.is_open else 0
        )
    for row in rows:
        assert row.utc_day == row.starts_at.date()
        assert row.local_day == row.starts_at.astimezone(ZoneInfo("Europe/Berlin")).date()
        assert (row.ends_at - timedelta(microseconds=1)).date() == row.utc_day
    opened = [(r.starts_at, r.ends_at) for r in rows if r.is_open]
    # Fri 22:00-24:00 and Sat 00:00-02:00 (UTC+1), cut at local and UTC midnight; Sunday
    # 01:00-04:00 lasts two hours (02:00 to 03:00 does not exist); the holiday is closed; a week
    # later the same in summer time (UTC+2), Sunday three hours, Monday 09:00-17:00.
    assert opened == [
        (utc(3, 27, 21), utc(3, 27, 23)),
        (utc(3, 27, 23), utc(3, 28, 0)),
        (utc(3, 28, 0), utc(3, 28, 1)),
        (utc(3, 29, 0), utc(3, 29, 2)),
        (utc(4, 3, 20), utc(4, 3, 22)),
        (utc(4, 3, 22), utc(4, 4, 0)),
        (utc(4, 4, 23), utc(4, 5, 0)),
        (utc(4, 5, 0), utc(4, 5, 2)),
        (utc(4, 6, 7), utc(4, 6, 15)),
    ]
    assert rows[-1].open_seconds_before == 21 * 3600


def utc(month: int, day: int, hour: int) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def test_without_a_schedule_there_is_none() -> None:
    assert parse_schedule(None) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"timezone": "Nowhere/City"}, "business_hours.timezone 'Nowhere/City' is not an IANA"),
        ({"timezone": "UTC", "mon": "09:00-17:00"}, "business_hours.mon must be a list"),
        ({"timezone": "UTC", "mon": ["9-17"]}, "business_hours.mon '9-17' is not an interval"),
        ({"timezone": "UTC", "mon": ["09:00-24:30"]}, "business_hours.mon '09:00-24:30' is not"),
        ({"timezone": "UTC", "sun": ["12:00-12:00"]}, "business_hours.sun '12:00-12:00' ends"),
        ({"timezone": "UTC", "sat": ["08:00-10:00", "09:59-11:00"]}, "business_hours.sat has"),
        ({"timezone": "UTC", "holidays": "2026-01-01"}, "business_hours.holidays must be a list"),
        ({"timezone": "UTC", "holidays": ["01/01/2026"]}, "business_hours.holidays '01/01/2026'"),
        ({"timezone": "UTC", "lunch": []}, "business_hours.lunch is unknown"),
        ("Europe/Berlin", "business_hours must be a table"),
    ],
)
def test_a_bad_schedule_names_its_key(raw: object, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_schedule(raw)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


def test_touching_intervals_are_fine() -> None:
    schedule = parse_schedule({"timezone": "UTC", "tue": ["12:00-17:00", "08:00-12:00"]})
    assert schedule is not None
    assert schedule.week[1] == ((480, 720), (720, 1020))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("4h", 14400.0), ("30m", 1800.0), ("1h30m", 5400.0), ("90s", 90.0), ("900", 900.0),
     (" 2H ", 7200.0), (None, None), ("", None)],
)  # fmt: skip
def test_durations(value: str | None, seconds: float | None) -> None:
    assert parse_duration(value, "first_response_sla") == seconds


@pytest.mark.parametrize("value", ["soon", "1d", "h", "0", "-5", "0h"])
def test_bad_durations_name_the_key(value: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_duration(value, "resolution_sla")
    assert str(raised.value).startswith(f"resolution_sla {value!r} ")


def test_the_report_period_counts_whole_local_days() -> None:
    zone = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)

    chosen = period("2026-05-18", "2026-05-31", zone, now)
    default = period(None, None, zone, now)

    assert (chosen.since, chosen.until) == (
        datetime(2026, 5, 17, 22, tzinfo=UTC),
        datetime(2026, 5, 31, 22, tzinfo=UTC),
    )
    assert chosen.days()[0] == date(2026, 5, 18)
    assert chosen.days()[-1] == date(2026, 5, 31)
    assert (default.since, default.until) == (now - timedelta(days=7), now)
    with pytest.raises(BadInput, match=r"--since .* must be before --until"):
        period("2026-06-02", "2026-06-01", zone, now)
