"""How the destination is asked which messages it holds: ids in time order, apart across the
widest gaps, so that each query is bounded by the times of its own ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meta_inbox.destinations import time_spans

MONTH = timedelta(days=30)


def _at(*days: float) -> list[tuple[datetime, str]]:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    return [(start + timedelta(days=day), f"m{index}") for index, day in enumerate(days)]


def test_an_old_message_is_asked_apart_from_this_weeks() -> None:
    timed = _at(-2900, -2899.5, -3, -2, -1, 0)

    assert time_spans(timed, 4, MONTH) == [timed[:2], timed[2:]]


def test_only_the_widest_gaps_cut_and_only_those_over_the_gap() -> None:
    timed = _at(-1000, -700, -400, -100, -60, -45, -1, 0)

    # Gaps of 300 days (three), 40, 15 and 44: three parts at most, cut at the widest three.
    assert time_spans(timed, 4, MONTH) == [timed[:1], timed[1:2], timed[2:3], timed[3:]]
    assert time_spans(timed, 2, MONTH) == [timed[:1], timed[1:]]
    assert time_spans(timed, 4, timedelta(days=400)) == [timed]


def test_no_ids_no_span() -> None:
    assert time_spans([], 4, MONTH) == []
    assert time_spans(_at(0), 4, MONTH) == [_at(0)]
