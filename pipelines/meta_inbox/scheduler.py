"""Runs the Graph calls of a run side by side: each Page at its own pace, all within one cap.

Work is queued per lane (one lane per Page token: Meta's budget is per Page). A worker takes
the task of the lane whose next turn comes first, books that turn with the pacer and runs the
task, whose first call then starts at once. A lane waiting for its turn holds no worker, so a
throttled or slow Page never starves the others, and at Graph's usual latency several calls of
one Page are in flight, as many as its budget allows. `max_concurrency` workers bound the calls
in flight of the whole run.

No worker sleeps either: a call that must wait (a throttle, a retry's back-off) raises
`RetryLater`, and its task goes back to the head of its lane, to run again once its lane's turn
and its own delay have come. Its `TaskTries` go with it, so that its retries still end.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .graph_client import Pacer, RetryLater, TaskTries

log = logging.getLogger("meta_inbox")

Task = Callable[[], None]


@dataclass
class _Queued:
    task: Task
    tries: TaskTries = field(default_factory=TaskTries)
    not_before: float = 0.0  # a task run again waits for its retry delay, on the pacer's clock


@dataclass
class _Lane:
    waiting: deque[_Queued] = field(default_factory=deque)
    # Tasks run again, by the time they may run. Few at a time; kept apart from `waiting` so
    # that one task waiting out a retry delay does not hold up the lane's other tasks.
    again: list[_Queued] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waiting) + len(self.again)

    def ready_at(self, now: float) -> float:
        """When a task of the lane may run, its turn aside."""
        return now if self.waiting or not self.again else self.again[0].not_before

    def pop(self, now: float) -> _Queued:
        """The task to run now: one run again first, as it was taken from the head before."""
        if self.again and self.again[0].not_before <= now:
            return self.again.pop(0)
        return self.waiting.popleft()


class CallScheduler:
    def __init__(
        self,
        pacer: Pacer,
        *,
        max_concurrency: int,
        clock: Callable[[], float],
        on_error: Callable[[BaseException], None],
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_idle` is called when the last task ends with none queued: nothing more runs."""
        self._pacer = pacer
        self._clock = clock
        self._on_error = on_error
        self._on_idle = on_idle
        self._lanes: dict[str, _Lane] = {}
        self._order = itertools.count()
        self._last_turn: dict[str, int] = {}
        self._cond = threading.Condition()
        self._running = 0
        self._closing = False
        self._workers = [
            threading.Thread(target=self._work, name=f"graph-call-{n}", daemon=True)
            for n in range(max_concurrency)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, lane: str, task: Task, *, first: bool = False) -> None:
        """Queue `task` in `lane`; `first` puts it ahead of the lane's queue."""
        with self._cond:
            waiting = self._lanes.setdefault(lane, _Lane()).waiting
            if first:
                waiting.appendleft(_Queued(task))
            else:
                waiting.append(_Queued(task))
            self._cond.notify()

    def drop(self, lane: str) -> int:
        """Forget the lane's queued tasks (its Page failed), and its running ones that ask to
        run again; how many were queued."""
        with self._cond:
            dropped = len(self._lanes.pop(lane, ()))
            self._cond.notify_all()
            return dropped

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        with self._cond:
            return self._running == 0 and not any(self._lanes.values())

    def close(self) -> None:
        """Let running tasks end, drop queued ones, and stop the workers."""
        with self._cond:
            self._closing = True
            self._lanes.clear()
            self._cond.notify_all()
        for worker in self._workers:
            worker.join()

    def _work(self) -> None:
        while True:
            picked = self._next_task()
            if picked is None:
                return
            lane, queued = picked
            again = None
            try:
                with self._pacer.booked_turn(lane, queued.tries):
                    queued.task()
            except RetryLater as later:
                again = later.delay
            except BaseException as error:  # reported, so that one task cannot kill a worker
                self._on_error(error)
            finally:
                with self._cond:
                    self._running -= 1
                    if again is not None and lane in self._lanes:  # not dropped meanwhile
                        self._run_again(self._lanes[lane], queued, again)
                    self._cond.notify_all()
                    idle = self._running == 0 and not any(self._lanes.values())
                if idle:
                    self._on_idle()

    def _run_again(self, lane: _Lane, queued: _Queued, delay: float) -> None:
        queued.not_before = self._clock() + delay
        lane.again.append(queued)
        lane.again.sort(key=lambda item: item.not_before)

    def _next_task(self) -> tuple[str, _Queued] | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                ready = [(name, lane) for name, lane in self._lanes.items() if lane]
                if not ready:
                    self._cond.wait()
                    continue
                # The lane whose turn comes first; among lanes already due, the one served
                # longest ago, so that unpaced lanes take turns too.
                now = self._clock()
                starts = {
                    name: max(now, self._pacer.due(name), lane.ready_at(now))
                    for name, lane in ready
                }
                name, lane = min(
                    ready, key=lambda item: (starts[item[0]], self._last_turn.get(item[0], -1))
                )
                wait = starts[name] - now
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                self._pacer.book(name)
                self._last_turn[name] = next(self._order)
                self._running += 1
                return name, lane.pop(now)
