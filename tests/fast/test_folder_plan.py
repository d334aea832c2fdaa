"""The folder planner on hand-made listings: what each thread gets, and where a chain ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meta_inbox.folder_plan import NEW, FolderPlan, ReadHow, Skip, listing_decisions

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LOOKBACK = timedelta(minutes=10)
WINDOW = timedelta(days=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def read(floor: datetime | None) -> ReadHow:
    return ReadHow(floor=floor, recheck=False)


RECHECK = ReadHow(floor=None, recheck=True)


def incremental(watermark: datetime, newest: datetime, window: timedelta = WINDOW) -> FolderPlan:
    plan = FolderPlan(reconcile=False, start=None, watermark=watermark, lookback=LOOKBACK)
    return plan.planned(newest, window)


def test_a_first_pass_reads_everything_down_to_the_start_date() -> None:
    start = at(-60)
    plan = FolderPlan(reconcile=False, start=start, watermark=None, lookback=LOOKBACK)
    plan = plan.planned(at(0), WINDOW)

    assert listing_decisions(plan, [[at(0), at(-30)], [at(-60), at(-61), at(-20)], [at(-90)]]) == [
        [read(start), read(start)],
        # The start itself is read; below it the chain ends with this page, whose out-of-order
        # neighbour is still read.
        [read(start), Skip.STOP, read(start)],
    ]


def test_new_threads_are_read_from_the_lookback_rechecked_within_the_window_then_stop() -> None:
    watermark = at(0)
    plan = incremental(watermark, newest=at(30), window=timedelta(hours=1))
    floor = watermark - LOOKBACK

    assert plan.stop_below == at(-30)
    assert [plan.decide(t) for t in (at(30), at(0), floor, floor - timedelta(seconds=1))] == [
        read(floor),
        read(floor),
        read(floor),  # exactly at the lookback: read, not rechecked
        RECHECK,
    ]
    assert plan.decide(at(-30)) == RECHECK  # exactly at the window's edge
    assert plan.decide(at(-30) - timedelta(seconds=1)) is Skip.STOP


def test_without_a_recheck_window_the_pass_stops_below_the_lookback() -> None:
    plan = incremental(at(0), newest=at(5), window=timedelta(0))

    assert plan.recheck_from is None
    assert listing_decisions(plan, [[at(5), at(-5), at(-10)], [at(-11), at(-3)], [at(-1)]]) == [
        [read(at(-10))] * 3,
        [Skip.STOP, read(at(-10))],
    ]


def test_threads_with_equal_times_are_all_read_whichever_comes_first() -> None:
    plan = incremental(at(0), newest=at(0), window=timedelta(0))
    same = [at(-10)] * 4

    assert listing_decisions(plan, [same, same]) == [[read(at(-10))] * 4] * 2


def test_out_of_order_neighbours_within_the_lookback_do_not_end_the_listing() -> None:
    plan = incremental(at(0), newest=at(20), window=timedelta(0))

    decisions = listing_decisions(plan, [[at(20), at(-9), at(15)], [at(-2), at(-10)], [at(-12)]])

    assert decisions == [[read(at(-10))] * 3, [read(at(-10))] * 2, [Skip.STOP]]


def test_a_thread_met_twice_in_one_listing_is_read_both_times() -> None:
    # A new message moved it while the listing went down (or Graph repeats a page's edge):
    # read twice, merged once. One that moves above pages already listed is newer than the
    # watermark this pass leaves, so the next pass reads it.
    plan = incremental(at(0), newest=at(30), window=timedelta(0))

    assert listing_decisions(plan, [[at(30), at(31)], [at(31), at(-1)]]) == [
        [read(at(-10))] * 2,
        [read(at(-10))] * 2,
    ]


def test_a_resumed_pass_rereads_what_moved_up_and_skips_what_was_done() -> None:
    # The interrupted pass had done threads updated between -100 and +10 (its top).
    plan = FolderPlan(
        reconcile=False,
        start=None,
        watermark=None,
        lookback=LOOKBACK,
        previous_top=at(10),
        stop_below=None,
        recheck_from=None,
    )
    head, tail = plan.resumed_chains(down_to=at(-100))

    assert head.stop_at == at(0)  # top - lookback: below it the tail's skipped span begins
    # The head: threads that moved above the top are read; the rest down to stop_at skipped.
    assert listing_decisions(plan, [[at(40), at(11), at(10), at(1)], [at(0), at(-1)]], head) == [
        [read(None), read(None), Skip.SKIP, Skip.SKIP],
        [Skip.SKIP, Skip.STOP],
    ]
    # The tail (from Graph's `next`, or from the head when it was refused): done threads are
    # skipped, older ones read, whatever the order. Those of the done span's oldest second are
    # read again: one may have been on the next page, unread.
    assert listing_decisions(plan, [[at(5), at(-100), at(-101)], [at(-300), at(-50)]], tail) == [
        [Skip.SKIP, read(None), read(None)],
        [read(None), Skip.SKIP],
    ]


def test_a_resumed_incremental_pass_rechecks_the_done_span_within_the_window() -> None:
    plan = FolderPlan(
        reconcile=False,
        start=None,
        watermark=at(-200),
        lookback=LOOKBACK,
        previous_top=at(10),
        stop_below=at(-1440),
        recheck_from=at(-30),
    )
    head, _ = plan.resumed_chains(down_to=at(-50))

    assert head.stop_at == at(-30)
    assert [plan.decide(t, head) for t in (at(20), at(5), at(-30), at(-31))] == [
        read(at(-210)),
        RECHECK,
        RECHECK,
        Skip.STOP,
    ]


def test_a_reconcile_reads_every_thread_whole_down_to_the_start() -> None:
    plan = FolderPlan(reconcile=True, start=at(-60), watermark=at(0), lookback=LOOKBACK)
    plan = plan.planned(at(10), WINDOW)

    assert listing_decisions(plan, [[at(10), at(-59)], [at(-60), at(-61)], [at(-62)]]) == [
        [read(None), read(None)],
        [read(None), Skip.STOP],
    ]


def test_a_thread_without_a_time_is_read_from_the_floor() -> None:
    plan = incremental(at(0), newest=None)

    assert plan.recheck_from is None
    assert plan.decide(None, NEW) == read(at(-10))
