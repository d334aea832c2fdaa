"""Business time and service levels, on DuckDB, PostgreSQL and the Parquet lake, checked row by
row against a computation written here: the schedule's intervals in local time, turned into UTC
by `zoneinfo`, intersected with each wait. Everything is counted from the loaded `messages`."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import pytest

from conftest import Workspace
from meta_inbox import lake
from meta_inbox.emulator import Emulator

ZONE = ZoneInfo("Europe/Berlin")
SCHEDULE = {
    "timezone": "Europe/Berlin",
    "mon": ["09:00-12:30", "13:30-18:00"],
    "tue": ["09:00-17:00"],
    "wed": ["09:00-17:00"],
    "thu": ["09:00-17:00"],
    # A night shift past midnight, split between two days.
    "fri": ["09:00-15:00", "22:00-24:00"],
    "sat": ["00:00-02:00"],
    # Berlin changes its clocks on Sunday at 02:00 or 03:00: this shift holds the change.
    "sun": ["00:00-04:00"],
    "holidays": ["2025-12-25", "2025-12-26", "2026-01-01", "2026-04-06", "2026-05-01"],
}
FIRST_RESPONSE_SLA = 2 * 3600
RESOLUTION_SLA = 90 * 60
SETTINGS = {
    "business_hours": SCHEDULE,
    "first_response_sla": "2h",
    "resolution_sla": "1h30m",
}
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAYS = {date.fromisoformat(day) for day in SCHEDULE["holidays"]}
RESOLVED_THREADS = 3

Query = Callable[[str], list[tuple[Any, ...]]]


def open_intervals(first: date, last: date) -> Iterator[tuple[float, float]]:
    """The schedule's open intervals of the local days `first` to `last`, as unix seconds."""
    day = first
    while day <= last:
        if day not in HOLIDAYS:
            for interval in SCHEDULE[WEEK[day.weekday()]]:
                start, end = interval.split("-")
                yield local(day, start), local(day, end)
        day += timedelta(days=1)


def local(day: date, clock: str) -> float:
    hours, minutes = (int(part) for part in clock.split(":"))
    if hours == 24:  # the next day's midnight
        day, hours = day + timedelta(days=1), 0
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=ZONE).timestamp()


def business_seconds(start: float, end: float) -> float:
    first = datetime.fromtimestamp(start, UTC).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, UTC).date() + timedelta(days=1)
    return float(
        sum(
            max(0.0, min(end, closes) - max(start, opens))
            for opens, closes in open_intervals(first, last)
        )
    )


def dst_changes() -> list[float]:
    """Instants where Berlin's UTC offset changes, 2024 to 2027."""
    hour = datetime(2024, 1, 1, tzinfo=UTC)
    changes = []
    while hour.year < 2027:
        following = hour + timedelta(hours=1)
        if hour.astimezone(ZONE).utcoffset() != following.astimezone(ZONE).utcoffset():
            changes.append(following.timestamp())
        hour = following
    return changes


@dataclass
class Thread:
    conversation_id: str
    page_id: str
    platform: str
    folder: str
    customers: list[float]
    page: list[float]
    hidden: list[float]

    def reply(self, asked: float) -> float | None:
        return min((t for t in self.page if t > asked), default=None)

    @property
    def first_customer(self) -> float | None:
        return min(self.customers, default=None)

    @property
    def known(self) -> bool:
        if not self.hidden:
            return True
        return bool(self.customers) and min(self.hidden) >= min(self.customers)


def threads(read: Query) -> dict[str, Thread]:
    """The threads as the loaded tables hold them."""
    found = {
        row[0]: Thread(*row, [], [], [])
        for row in read(
            "select id, page_id, platform, folder from conversations where deleted_at is null"
        )
    }
    for conversation_id, created, detailed, from_page in read(
        "select conversation_id, created_time, details_available, is_from_page from messages "
        "where deleted_at is null"
    ):
        thread = found[conversation_id]
        side = thread.hidden if not detailed else thread.page if from_page else thread.customers
        side.append(created.timestamp())
    return found


@pytest.fixture(params=["duckdb", "postgres", "lake"])
def destination(request: pytest.FixtureRequest, workspace: Workspace) -> tuple[dict, Query]:
    """Export options and a reader of the dataset, for each place views live."""
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")

        def read_postgres(sql: str) -> list[tuple[Any, ...]]:
            with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
                cursor.execute("set search_path = inbox")
                cursor.execute(sql)
                return cursor.fetchall()

        return {"destination": "postgres"}, read_postgres
    if request.param == "lake":

        def read_lake(sql: str) -> list[tuple[Any, ...]]:
            with lake.connect(workspace.root / "meta_inbox_lake") as connection:
                connection.execute("set schema = 'inbox'")
                return connection.execute(sql).fetchall()

        return {"destination": "filesystem", "pipeline_name": "lake"}, read_lake
    return {}, workspace.query


def test_business_seconds_and_service_levels_equal_an_independent_computation(
    workspace: Workspace, emulator: Emulator, destination: tuple[dict, Query]
) -> None:
    options, read = destination
    assert workspace.export(**options, **SETTINGS).exit_code == 0
    # Seen open, now archived: resolved, over months that hold DST changes and holidays.
    waiting = [c for c in emulator.inbox.conversations if c.folder == "inbox"][:RESOLVED_THREADS]
    for conversation in waiting:
        emulator.move_thread(conversation.id, "page_done")
    assert workspace.export(**options, **SETTINGS).exit_code == 0
    loaded = threads(read)

    before = datetime.now(UTC).timestamp()
    responses = read(
        "select customer_message_id, customer_message_at, reply_at, response_business_seconds "
        "from response_times"
    )
    metrics = read(
        "select conversation_id, first_response_known, first_response_business_seconds, "
        "first_response_breached, last_customer_message_at, resolved_at, "
        "resolution_business_seconds, resolution_breached from conversation_metrics"
    )
    daily = read(
        "select day, page_id, platform, threads, answered, first_response_breaches, "
        "resolution_breaches, first_response_business_p50, first_response_business_p90 "
        "from sla_daily"
    )
    after = datetime.now(UTC).timestamp()

    # Every response, each with its own computation.
    spans = [(asked.timestamp(), replied.timestamp()) for _, asked, replied, _ in responses]
    expected_responses = sum(
        1 for thread in loaded.values() for asked in thread.customers if thread.reply(asked)
    )
    assert len(responses) == expected_responses
    assert {row[0]: row[3] for row in responses} == {
        row[0]: business_seconds(row[1].timestamp(), row[2].timestamp()) for row in responses
    }
    # The waits cover what the schedule decides: DST changes, holidays, weekends, nights.
    changes = dst_changes()
    assert any(a < change < b for a, b in spans for change in changes)
    assert any(a < local(day, "12:00") < b for a, b in spans for day in HOLIDAYS)
    assert any(b - a > 3 * 86400 for a, b in spans)
    assert any(0 < business_seconds(a, b) < b - a for a, b in spans)

    assert len(metrics) == len(loaded)
    expected_metrics = {}
    for thread in loaded.values():
        first = thread.first_customer
        reply = thread.reply(first) if first is not None else None
        known_first = thread.known and first is not None
        first_business = business_seconds(first, reply) if known_first and reply else None
        if not known_first:
            breached = None
        elif reply is not None:
            breached = first_business > FIRST_RESPONSE_SLA
        else:
            breached = outcome(first, before, after, FIRST_RESPONSE_SLA)
        last = max(thread.customers, default=None)
        resolved = resolution_of(metrics, thread.conversation_id)
        resolution = business_seconds(last, resolved) if resolved and last else None
        if last is None:
            resolution_breached = None
        elif resolution is not None:
            resolution_breached = resolution > RESOLUTION_SLA
        elif thread.folder in ("inbox", "other"):
            resolution_breached = outcome(last, before, after, RESOLUTION_SLA)
        else:
            resolution_breached = None
        expected_metrics[thread.conversation_id] = (
            thread.known,
            first_business,
            breached,
            rounded(resolution),
            resolution_breached,
        )
    assert {
        row[0]: (row[1], row[2], row[3], rounded(row[6]), row[7]) for row in metrics
    } == expected_metrics
    resolved_rows = [row for row in metrics if row[5] is not None]
    assert len(resolved_rows) == RESOLVED_THREADS
    assert {row[0] for row in resolved_rows} == {c.id for c in waiting}
    assert {value[2] for value in expected_metrics.values()} == {True, False, None}

    expected_daily = daily_counts(loaded, expected_metrics)
    assert len(daily) == len(expected_daily)
    assert {
        (str(row[0]), row[1], row[2]): (*row[3:7], rounded(row[7]), rounded(row[8]))
        for row in daily
    } == expected_daily


def outcome(since: float, before: float, after: float, target: float) -> bool | None:
    """A wait still going: breached once longer than the target, else not known yet. The views
    read the clock between `before` and `after`: a wait crossing the target then is a race."""
    if business_seconds(since, before) > target:
        return True
    assert business_seconds(since, after) <= target, "a wait crosses its target during the test"
    return None


def resolution_of(metrics: list[tuple[Any, ...]], conversation_id: str) -> float | None:
    """`resolved_at` is when a run saw the thread archived: taken from the view, as observed."""
    resolved = next(row[5] for row in metrics if row[0] == conversation_id)
    return resolved.timestamp() if resolved else None


def daily_counts(
    loaded: dict[str, Thread], metrics: dict[str, tuple[Any, ...]]
) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    days: dict[tuple[str, str, str], list[Thread]] = defaultdict(list)
    for thread in loaded.values():
        if thread.known and thread.first_customer is not None:
            day = datetime.fromtimestamp(thread.first_customer, ZONE).date().isoformat()
            days[(day, thread.page_id, thread.platform)].append(thread)
    counted = {}
    for key, members in days.items():
        answered = [t for t in members if t.reply(t.first_customer) is not None]
        seconds = sorted(metrics[t.conversation_id][1] for t in answered)
        counted[key] = (
            len(members),
            len(answered),
            sum(1 for t in members if metrics[t.conversation_id][2]),
            sum(1 for t in members if metrics[t.conversation_id][4]),
            rounded(percentile(seconds, 0.5)),
            rounded(percentile(seconds, 0.9)),
        )
    return counted


def percentile(ordered: list[float], fraction: float) -> float | None:
    """`percentile_cont`: linear interpolation between the two nearest ranks."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rounded(value: Any) -> Any:
    """To the microsecond: `resolved_at` is a run's start, with a fraction of a second."""
    return None if value is None else round(float(value), 3)


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        (
            "business_hours",
            {"timezone": "Mars/Olympus_Mons", "mon": ["09:00-17:00"]},
            "business_hours.timezone 'Mars/Olympus_Mons' is not an IANA timezone, "
            "e.g. Europe/Berlin.",
        ),
        (
            "business_hours",
            {"timezone": "UTC", "tue": ["09:00-13:00", "12:00-17:00"]},
            "business_hours.tue has overlapping intervals: ['09:00-13:00', '12:00-17:00'].",
        ),
        (
            "business_hours",
            {"timezone": "UTC", "fri": ["22:00-02:00"]},
            "business_hours.fri '22:00-02:00' ends before it starts: split a shift past "
            'midnight between two days ("22:00-24:00", then "00:00-02:00").',
        ),
        (
            "business_hours",
            {"timezone": "UTC", "holidays": ["2026-02-30"]},
            "business_hours.holidays '2026-02-30' is not a date: use YYYY-MM-DD.",
        ),
        (
            "business_hours",
            {"timezone": "UTC", "monday": ["09:00-17:00"]},
            "business_hours.monday is unknown: use timezone, mon, tue, wed, thu, fri, sat, sun, "
            "holidays.",
        ),
        (
            "first_response_sla",
            "soon",
            'first_response_sla \'soon\' is not a duration: use e.g. "4h", "30m", "1h30m" '
            "or seconds.",
        ),
    ],
    ids=["zone", "overlap", "inverted", "date", "key", "sla"],
)
def test_bad_business_settings_exit_2_naming_the_key(
    workspace: Workspace, emulator: Emulator, key: str, value: Any, line: str
) -> None:
    text = value if isinstance(value, str) else json.dumps(value)

    result = workspace.run(**{key: text})

    assert (result.code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"meta-inbox: {line}"]
    assert emulator.calls == []
