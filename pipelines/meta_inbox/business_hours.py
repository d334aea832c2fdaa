"""Business hours: the schedule a support team works, and the clock that runs only then.

The `business_hours` setting names a timezone, the open intervals of each weekday in local wall
time and the holidays (closed all day). SQL gets it as data: `clock_rows` cuts time into
stretches, each open or closed, within one UTC day and one local day, with the business seconds
that passed before it. Business time between two instants is then the difference of two
lookups, the same SQL on every engine, exact across DST changes because the zone's rules are
applied here, by `zoneinfo`, once.

A local time that a DST change skips or repeats is read with the offset in force before the
change (`fold = 0`); an interval that thereby ends before it starts is left out that day.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import BadInput

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEYS = ("timezone", *WEEKDAYS, "holidays")
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DAY_MINUTES = 24 * 60

Interval = tuple[int, int]  # minutes from local midnight, start inclusive, end exclusive


@dataclass(frozen=True)
class Schedule:
    """Open intervals per weekday (Monday first) in local wall time, and closed dates."""

    timezone: str
    week: tuple[tuple[Interval, ...], ...]
    holidays: frozenset[date]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def open_on(self, day: date) -> tuple[Interval, ...]:
        return () if day in self.holidays else self.week[day.weekday()]


@dataclass(frozen=True)
class Stretch:
    """A row of the `business_clock` table."""

    utc_day: date
    local_day: date
    starts_at: datetime
    ends_at: datetime
    is_open: bool
    open_seconds_before: int


def parse_schedule(raw: Mapping[str, Any] | None, name: str = "business_hours") -> Schedule | None:
    """The schedule a `business_hours` value describes; BadInput naming the key at fault."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise BadInput(f"{name} must be a table (TOML) or a JSON object, not {raw!r}.")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise BadInput(f"{name}.{unknown[0]} is unknown: use {', '.join(KEYS)}.")
    zone = raw.get("timezone")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"{name}.timezone {zone!r} is not an IANA timezone, e.g. Europe/Berlin."
        ) from None
    week = tuple(_intervals(raw.get(day, []), f"{name}.{day}") for day in WEEKDAYS)
    holidays = raw.get("holidays", [])
    if not isinstance(holidays, list):
        raise BadInput(f"{name}.holidays must be a list of dates (YYYY-MM-DD).")
    closed = set()
    for value in holidays:
        try:
            closed.add(date.fromisoformat(str(value)))
        except ValueError:
            raise BadInput(f"{name}.holidays {value!r} is not a date: use YYYY-MM-DD.") from None
    return Schedule(str(zone), week, frozenset(closed))


def _intervals(values: Any, key: str) -> tuple[Interval, ...]:
    if not isinstance(values, list):
        raise BadInput(f'{key} must be a list of "HH:MM-HH:MM" ([] when closed).')
    intervals = []
    for value in values:
        match = _INTERVAL.match(str(value).strip())
        if not match:
            raise BadInput(f'{key} {value!r} is not an interval: use "HH:MM-HH:MM".')
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if start_h > 23 or end > DAY_MINUTES or start_m > 59 or end_m > 59:
            raise BadInput(f"{key} {value!r} is not a time of day (00:00 to 24:00).")
        if end <= start:
            raise BadInput(
                f"{key} {value!r} ends before it starts: split a shift past midnight "
                'between two days ("22:00-24:00", then "00:00-02:00").'
            )
        intervals.append((start, end))
    intervals.sort()
    for (_, end), (start, _) in itertools.pairwise(intervals):
        if start < end:
            raise BadInput(f"{key} has overlapping intervals: {values!r}.")
    return tuple(intervals)


def parse_duration(value: str | None, name: str) -> float | None:
    """Seconds in `value`: `"4h"`, `"30m"`, `"1h30m"`, `"90s"` or a number of seconds."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not match or not any(match.groups()):
            raise BadInput(
                f'{name} {value!r} is not a duration: use e.g. "4h", "30m", "1h30m" or seconds.'
            ) from None
        hours, minutes, secs = (int(part or 0) for part in match.groups())
        seconds = float(hours * 3600 + minutes * 60 + secs)
    if seconds <= 0:
        raise BadInput(f"{name} {value!r} must be longer than zero.")
    return seconds


def open_intervals(
    schedule: Schedule, first: date, last: date
) -> Iterator[tuple[datetime, datetime]]:
    """The open intervals (UTC) of the local days `first` to `last`, in order, merged where
    they touch."""
    zone = schedule.zone
    pending: tuple[datetime, datetime] | None = None
    day = first
    while day <= last:
        midnight = datetime.combine(day, time(), zone)
        for start, end in schedule.open_on(day):
            opens = _utc(midnight, start)
            closes = _utc(midnight, end)
            if closes <= opens:
                continue
            if pending and opens <= pending[1]:
                pending = (pending[0], max(pending[1], closes))
                continue
            if pending:
                yield pending
            pending = (opens, closes)
        day += timedelta(days=1)
    if pending:
        yield pending


def _utc(midnight: datetime, minutes: int) -> datetime:
    """Local wall time `minutes` after midnight, in UTC (24:00 is the next day's midnight)."""
    wall = midnight.replace(tzinfo=None) + timedelta(minutes=minutes)
    return wall.replace(tzinfo=midnight.tzinfo).astimezone(UTC)


def clock_rows(schedule: Schedule, first: date, last: date) -> list[Stretch]:
    """The UTC days `first` to `last` cut into open and closed stretches, each within one UTC
    day and one local day, with the business seconds since the start of `first`."""
    zone = schedule.zone
    begin = datetime.combine(first, time(), UTC)
    finish = datetime.combine(last + timedelta(days=1), time(), UTC)
    # Local days that touch the span: UTC offsets stay within a day of UTC.
    local_first, local_last = first - timedelta(days=1), last + timedelta(days=1)
    intervals = [
        (max(opens, begin), min(closes, finish))
        for opens, closes in open_intervals(schedule, local_first, local_last)
        if closes > begin and opens < finish
    ]
    cuts = {begin, finish}
    cuts.update(begin + timedelta(days=n) for n in range((last - first).days + 1))
    day = local_first
    while day <= local_last:
        local_midnight = datetime.combine(day, time(), zone).astimezone(UTC)
        if begin < local_midnight < finish:
            cuts.add(local_midnight)
        day += timedelta(days=1)
    for opens, closes in intervals:
        cuts.update((opens, closes))
    rows: list[Stretch] = []
    ordered = sorted(cuts)
    passed, index = 0, 0
    for starts_at, ends_at in itertools.pairwise(ordered):
        while index < len(intervals) and intervals[index][1] <= starts_at:
            index += 1
        is_open = index < len(intervals) and intervals[index][0] <= starts_at
        rows.append(
            Stretch(
                starts_at.date(),
                starts_at.astimezone(zone).date(),
                starts_at,
                ends_at,
                is_open,
                passed,
            )
        )
        if is_open:
            passed += int((ends_at - starts_at).total_seconds())
    return rows
