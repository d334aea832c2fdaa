"""`CallScheduler`: which task runs when, decided by events the tests control. The pacer's clock
stands still (a `FakeClock` nobody sleeps on), so a lane whose turn is ahead keeps waiting until
a test moves the clock and wakes the scheduler with a new task."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from support import FakeClock, connect

from meta_inbox.emulator import Emulator, Limits
from meta_inbox.graph_client import (
    PACE_MARGIN,
    GraphClient,
    GraphUnavailable,
    Pacer,
    RetryLater,
)
from meta_inbox.scheduler import CallScheduler

pytest_plugins = ["support"]

MakeScheduler = Callable[..., tuple[CallScheduler, Pacer]]
WAIT = 10.0  # seconds before a test gives up on an event that should come at once


class Tasks:
    """Tasks that say when they run, and gates that hold them while they run."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.finished: list[str] = []
        self.errors: list[BaseException] = []
        self._changed = threading.Condition()
        self._running = 0
        self.peak = 0

    def task(self, name: str, gate: threading.Event | None = None) -> Callable[[], None]:
        def run() -> None:
            with self._changed:
                self.ran.append(name)
                self._running += 1
                self.peak = max(self.peak, self._running)
                self._changed.notify_all()
            if gate is not None:
                assert gate.wait(WAIT), f"{name} was never let go"
            with self._changed:
                self._running -= 1
                self.finished.append(name)

        return run

    def wait_for(self, count: int) -> None:
        """Until `count` tasks have started."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.ran) >= count, WAIT), self.ran


@pytest.fixture
def tasks() -> Tasks:
    return Tasks()


@pytest.fixture
def scheduler_for(tasks: Tasks, clock: FakeClock) -> Iterator[MakeScheduler]:
    """Schedulers on the still clock, each closed after the test."""
    made: list[CallScheduler] = []

    def make(
        calls_per_second: float = 0.0,
        max_concurrency: int = 1,
        pacer: Pacer | None = None,
        on_idle: Callable[[], None] = lambda: None,
    ) -> tuple[CallScheduler, Pacer]:
        pacer = pacer or Pacer(calls_per_second, clock=clock, sleep=clock.sleep)
        scheduler = CallScheduler(
            pacer,
            max_concurrency=max_concurrency,
            clock=clock,
            on_error=tasks.errors.append,
            on_idle=on_idle,
        )
        made.append(scheduler)
        return scheduler, pacer

    yield make
    for scheduler in made:
        scheduler.close()


def test_never_more_tasks_at_once_than_max_concurrency(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, _ = scheduler_for(max_concurrency=2)
    gates = {f"task-{number}": threading.Event() for number in range(6)}
    for number, (name, gate) in enumerate(gates.items()):
        scheduler.submit(f"lane-{number % 3}", tasks.task(name, gate))

    # Let one task go each time two run, in the order they started.
    for released in range(len(gates)):
        tasks.wait_for(min(released + 2, len(gates)))
        gates[tasks.ran[released]].set()

    assert tasks.peak == 2
    assert sorted(tasks.ran) == sorted(gates)


def test_the_scheduler_says_when_the_last_task_ended(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    idle: list[list[str]] = []  # the tasks finished when the scheduler said it was idle
    said = threading.Event()

    def on_idle() -> None:
        idle.append(list(tasks.finished))
        said.set()

    scheduler, _ = scheduler_for(max_concurrency=2, on_idle=on_idle)
    gates = {name: threading.Event() for name in ("first", "second", "follow-up")}
    follow_up = tasks.task("follow-up", gates["follow-up"])

    def first() -> None:
        tasks.task("first", gates["first"])()
        scheduler.submit("lane-a", follow_up)  # as a listing queues its threads' calls

    scheduler.submit("lane-a", first)
    scheduler.submit("lane-b", tasks.task("second", gates["second"]))
    tasks.wait_for(2)
    gates["second"].set()
    gates["first"].set()
    tasks.wait_for(3)
    assert idle == []  # the follow-up still runs: tasks ended, but not the last one
    gates["follow-up"].set()

    assert said.wait(WAIT)
    assert [sorted(finished) for finished in idle] == [["first", "follow-up", "second"]]
    assert scheduler.idle()


def test_a_lane_whose_turn_is_far_away_does_not_hold_back_the_others(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, pacer = scheduler_for(calls_per_second=1.0)
    pacer.push_back("throttled", 60.0)  # as a throttle error does: no turn for a minute
    for number in range(5):
        scheduler.submit("throttled", tasks.task(f"throttled-{number}"))
    scheduler.submit("quiet", tasks.task("quiet"))

    tasks.wait_for(1)

    # The clock stands still: the throttled lane's turn never comes in this test.
    assert tasks.ran == ["quiet"]
    assert (pacer.due("throttled"), pacer.due("quiet")) == (60.0, pytest.approx(1 / PACE_MARGIN))


def test_the_tasks_of_a_lane_run_in_submission_order_but_first_goes_ahead(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, _ = scheduler_for()
    gate = threading.Event()
    scheduler.submit("holder", tasks.task("holder", gate))  # keeps the one worker busy
    tasks.wait_for(1)
    for number in (1, 2, 3):
        scheduler.submit("page", tasks.task(f"page-{number}"))
    scheduler.submit("page", tasks.task("page-urgent"), first=True)

    gate.set()
    tasks.wait_for(5)

    assert tasks.ran == ["holder", "page-urgent", "page-1", "page-2", "page-3"]


def test_drop_forgets_the_queued_tasks_of_a_lane(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, _ = scheduler_for()
    gate = threading.Event()
    scheduler.submit("holder", tasks.task("holder", gate))
    tasks.wait_for(1)
    scheduler.submit("failed", tasks.task("failed-1"))
    scheduler.submit("failed", tasks.task("failed-2"))
    scheduler.submit("fine", tasks.task("fine"))

    assert scheduler.drop("failed") == 2
    assert scheduler.drop("unknown") == 0
    gate.set()
    tasks.wait_for(2)
    scheduler.close()

    assert tasks.ran == ["holder", "fine"]


def test_a_failing_task_reaches_on_error_and_its_worker_goes_on(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, _ = scheduler_for()
    failure = ValueError("Graph said no")

    def fail() -> None:
        raise failure

    scheduler.submit("page", fail)
    scheduler.submit("page", tasks.task("after"))
    tasks.wait_for(1)

    assert tasks.errors == [failure]
    assert tasks.ran == ["after"]


def test_a_task_takes_the_turn_its_worker_booked(
    tasks: Tasks, clock: FakeClock, scheduler_for: MakeScheduler
) -> None:
    """The task's call waits for its turn the way `GraphClient` does, and finds it booked."""
    scheduler, pacer = scheduler_for(calls_per_second=1.0)
    call = tasks.task("call")

    def paced_call() -> None:
        pacer.wait_turn("page")
        call()

    scheduler.submit("page", paced_call)
    tasks.wait_for(1)
    scheduler.close()

    assert (pacer.due("page"), clock.sleeps) == (pytest.approx(1 / PACE_MARGIN), [])


def test_close_lets_running_tasks_end_drops_queued_ones_and_stops_the_workers(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, pacer = scheduler_for(max_concurrency=2)
    gate = threading.Event()
    scheduler.submit("a", tasks.task("running", gate))
    tasks.wait_for(1)
    pacer.push_back("later", 60.0)  # queued, its turn not come
    scheduler.submit("later", tasks.task("queued"))

    def close() -> None:
        scheduler.close()
        tasks.finished.append("close")

    closer = threading.Thread(target=close)
    closer.start()
    gate.set()
    closer.join(WAIT)

    assert tasks.finished == ["running", "close"]  # close waited for the running task
    assert tasks.ran == ["running"]
    assert scheduler.idle()
    assert [t.name for t in threading.enumerate() if t.name.startswith("graph-call-")] == []


# -- tasks that must wait: run again later, their worker free meanwhile ----------------------------


def test_a_task_run_again_waits_its_delay_without_holding_back_its_lane(
    tasks: Tasks, clock: FakeClock, scheduler_for: MakeScheduler
) -> None:
    scheduler, _ = scheduler_for()
    runs: list[float] = []

    def flaky() -> None:
        runs.append(clock.now)
        if len(runs) == 1:
            raise RetryLater(5.0)
        tasks.task("flaky")()

    scheduler.submit("page", flaky)
    scheduler.submit("page", tasks.task("next"))
    tasks.wait_for(1)
    clock.now = 5.0
    scheduler.submit("page", tasks.task("wake-up"))
    tasks.wait_for(3)

    # Run again ahead of the lane's queue once its delay is over.
    assert tasks.ran == ["next", "flaky", "wake-up"]
    assert (runs, tasks.errors, clock.sleeps) == ([0.0, 5.0], [], [])


def test_a_task_of_a_dropped_lane_that_asks_to_run_again_is_forgotten(
    tasks: Tasks, scheduler_for: MakeScheduler
) -> None:
    scheduler, _ = scheduler_for()

    def page_fails_meanwhile() -> None:
        scheduler.drop("page")  # as the reader does when another call finds the Page refused
        raise RetryLater(0.0)

    scheduler.submit("page", page_fails_meanwhile)
    scheduler.submit("other", tasks.task("other"))
    tasks.wait_for(1)
    scheduler.close()

    assert (tasks.ran, tasks.errors) == (["other"], [])
    assert scheduler.idle()


CAFE, BIKES = "1000000000000001", "1000000000000002"


@pytest.mark.usefixtures("full_backoff")
def test_a_throttled_call_frees_its_worker_for_other_pages_and_runs_again_on_its_turn(
    emulator: Emulator, tasks: Tasks, clock: FakeClock, scheduler_for: MakeScheduler
) -> None:
    # One call per 50 s and Page: Café Olé's first call takes its budget.
    emulator.limits = Limits(per_second=0.02)
    connection = connect(emulator.base_url, clock)
    cafe = connection.client(emulator.page_token(CAFE), lane=CAFE)
    bikes = connection.client(emulator.page_token(BIKES), lane=BIKES)
    cafe.get("me")
    scheduler, pacer = scheduler_for(pacer=connection.pacer)  # one worker

    def call(client: GraphClient, name: str) -> Callable[[], None]:
        def run() -> None:
            client.get("me")
            tasks.task(name)()

        return run

    gate = threading.Event()
    scheduler.submit("holder", tasks.task("holder", gate))
    tasks.wait_for(1)
    scheduler.submit(CAFE, call(cafe, "cafe"))
    scheduler.submit(BIKES, call(bikes, "bikes"))
    gate.set()
    tasks.wait_for(2)

    # Café Olé's call was refused first; its worker, the only one, read Bikes meanwhile.
    calls = [(call.page_id, call.error_code) for call in emulator.calls]
    assert calls == [(CAFE, None), (CAFE, 32), (BIKES, None)]
    assert (tasks.ran, pacer.due(CAFE), clock.sleeps) == (["holder", "bikes"], 1.0, [])
    assert not scheduler.idle()

    emulator.limits = Limits()
    clock.now = 1.0
    scheduler.submit("wake-up", tasks.task("wake-up"))
    tasks.wait_for(4)

    # In either order: the worker may see the clock move before the wake-up task comes.
    assert (tasks.ran[:2], sorted(tasks.ran[2:])) == (["holder", "bikes"], ["cafe", "wake-up"])
    assert [call.error_code for call in emulator.calls] == [None, 32, None, None]
    assert tasks.errors == []
    assert (connection.stats.throttled, connection.stats.throttle_wait) == (1, 1.0)


def test_the_retries_of_a_task_run_again_still_end_after_max_attempts(
    emulator: Emulator, tasks: Tasks, clock: FakeClock, scheduler_for: MakeScheduler
) -> None:
    emulator.faults.server_error_rate = 1.0
    connection = connect(emulator.base_url, clock, max_attempts=4, retry_backoff=0.0)
    cafe = connection.client(emulator.page_token(CAFE), lane=CAFE)
    scheduler, _ = scheduler_for(pacer=connection.pacer)

    scheduler.submit(CAFE, lambda: cafe.get("me"))
    scheduler.submit(CAFE, tasks.task("after"))  # runs once the failing task gave up
    tasks.wait_for(1)

    assert [type(error) for error in tasks.errors] == [GraphUnavailable]
    assert "did not answer properly after 4 attempts" in str(tasks.errors[0])
    assert [call.status for call in emulator.calls] == [500] * 4
    assert (connection.stats.calls, connection.stats.retries, clock.sleeps) == (4, 3, [])
