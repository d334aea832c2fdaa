"""Runs the Graph calls of a run side by side: each Page at its own pace, all within one cap.

Work is queued per lane (one lane per Page token: Meta's budget is per Page). A worker takes
the task of the lane whose next turn comes first, books that turn with the pacer and runs the
task, whose first call then starts at once. A lane waiting for its turn holds no worker, so a
throttled or slow Page never starves the others, and at Graph's usual latency several calls of
one Page are in flight, as many as its budget allows. `max_concurrency` workers bound the calls
in flight of the whole run.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable

from .graph_client import Pacer

log = logging.getLogger("meta_inbox")

Task = Callable[[], None]


class CallScheduler:
    def __init__(
        self,
        pacer: Pacer,
        *,
        max_concurrency: int,
        clock: Callable[[], float],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._pacer = pacer
        self._clock = clock
        self._on_error = on_error
        self._lanes: dict[str, deque[Task]] = {}
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
            queue = self._lanes.setdefault(lane, deque())
            if first:
                queue.appendleft(task)
            else:
                queue.append(task)
            self._cond.notify()

    def drop(self, lane: str) -> int:
        """Forget the lane's queued tasks (its Page failed); how many there were."""
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
            lane, task = picked
            try:
                with self._pacer.booked_turn(lane):
                    task()
            except BaseException as error:  # reported, so that one task cannot kill a worker
                self._on_error(error)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _next_task(self) -> tuple[str, Task] | None:
        with self._cond:
            while True:
                if self._closing:
                    return None
                ready = [(lane, queue) for lane, queue in self._lanes.items() if queue]
                if not ready:
                    self._cond.wait()
                    continue
                # The lane whose turn comes first; among lanes already due, the one served
                # longest ago, so that unpaced lanes take turns too.
                now = self._clock()
                lane, queue = min(
                    ready,
                    key=lambda item: (
                        max(now, self._pacer.due(item[0])),
                        self._last_turn.get(item[0], -1),
                    ),
                )
                wait = self._pacer.due(lane) - now
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                self._pacer.book(lane)
                self._last_turn[lane] = next(self._order)
                self._running += 1
                return lane, queue.popleft()
