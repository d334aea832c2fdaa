"""What a listing pass of one folder does with each thread it lists: read it, recheck it, skip it,
or stop there. Pure functions of a folder's state and the thread's `updated_time`; no calls.

A folder's state (see `reader.py`) is a `watermark` (the newest `updated_time` of the last pass
that went to its end) and, while a pass is interrupted, the span it had done. A pass is made of
chains of listing calls: a new pass has one, from the folder's head. A resumed pass has two: the
head, which lists the threads that moved above the interrupted pass since, down to where it had
started, and the tail, which goes on from where it stopped (or, when Graph no longer takes that
position, from the head again, skipping what was done).

Why nothing is lost, in any order of the calls:
- a message changes its thread's `updated_time` to the message's time, so a thread with a
  message sent after `watermark - lookback` is listed at or above that time, and is read from
  there on (`floor`); older messages were loaded by the pass that set the watermark;
- listings are newest first, but the order is not Meta's promise: a pass stops only below
  `stop_below`, a `lookback` under the watermark, so neighbours out of order by less than the
  lookback are still read;
- a resumed head reads every thread above the interrupted pass's top (moved up since), and
  rechecks the rest down to where the tail's done span begins; the tail skips only threads whose
  `updated_time` is within the done span, which a thread can leave only by moving up, into the
  head's reach (the span's oldest second is read again: `updated_time` has whole seconds,
  and the thread that ended the last page done may share its second with the next page's);
- a thread that moves up while a pass lists its folder (a new message) leaves the pass's reach
  for its head, above where the pass started: once its chains have ended, a pass that listed
  more than one page lists its head again (`Chain.closes`), down to its top, and reads there
  the threads it did not read, and those it read for the messages they got since (a thread
  read early can move up by less than another that sets the watermark);
- a cursor that expires during a pass (refused, or answered with an empty page that a light
  probe tells from the folder's end) restarts its chain from the head, which reads as the
  closing chain does;
- a watermark is raised only when every chain of the pass was handed over whole.
The overlaps this leaves (a thread read twice) are harmless: rows merge on their keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum


class Skip(Enum):
    SKIP = "skip"  # not read now; the listing goes on
    STOP = "stop"  # older than what this pass reads: the listing ends after this page


@dataclass(frozen=True)
class ReadHow:
    floor: datetime | None  # messages sent before this are not looked for (None: all)
    recheck: bool  # the nested page only: no older pages, no attachment follow-ups


@dataclass(frozen=True)
class Chain:
    """Where a chain of listing calls sits in its pass: `skip_from` marks the tail of a resumed
    pass (threads from there up are done), `stop_at` the head of one (it ends below that),
    `closes` the head listed again at the end of a pass, down to the pass's top."""

    head: bool = False
    skip_from: datetime | None = None
    stop_at: datetime | None = None
    closes: datetime | None = None


NEW = Chain()


@dataclass(frozen=True)
class FolderPlan:
    """How one pass reads one folder."""

    reconcile: bool  # read every thread whole, down to `start`
    start: datetime | None  # start_date: nothing older is read
    watermark: datetime | None
    lookback: timedelta
    stop_below: datetime | None = None
    recheck_from: datetime | None = None  # threads updated from here on are listed again
    previous_top: datetime | None = None  # the interrupted pass's newest thread

    @property
    def floor(self) -> datetime | None:
        """Messages older than this were loaded by an earlier pass."""
        if self.watermark is None:
            return self.start
        return self.watermark - self.lookback

    def planned(self, newest: datetime | None, recheck_window: timedelta) -> FolderPlan:
        """The plan of a new pass, once the folder's newest `updated_time` is known."""
        if self.reconcile or self.watermark is None:
            return replace(self, stop_below=self.start)
        stop_below = self.watermark - self.lookback
        recheck_from = None
        if recheck_window and newest is not None:
            recheck_from = newest - recheck_window
            stop_below = min(stop_below, recheck_from)
        return replace(self, stop_below=stop_below, recheck_from=recheck_from)

    def resumed_chains(self, down_to: datetime) -> tuple[Chain, Chain]:
        """The head and tail of a pass resumed from one done between `down_to` and
        `previous_top`."""
        assert self.previous_top is not None
        head_end = self.previous_top - self.lookback
        if self.recheck_from is not None:
            head_end = min(head_end, self.recheck_from)
        return Chain(head=True, stop_at=max(down_to, head_end)), Chain(skip_from=down_to)

    def decide(self, updated: datetime | None, chain: Chain = NEW) -> ReadHow | Skip:
        """What the pass does with a thread listed in `chain` as updated at `updated`."""
        if updated is None:
            return ReadHow(floor=self.floor, recheck=False)
        if chain.closes is not None and updated <= chain.closes:
            # What the pass listed, or moved under it: it stops a lookback below, as a pass
            # does, for neighbours out of order.
            return Skip.STOP if updated < chain.closes - self.lookback else Skip.SKIP
        if self.reconcile:
            if self.start and updated < self.start:
                return Skip.STOP
            return ReadHow(floor=None, recheck=False)
        if chain.head and self.previous_top is not None and updated <= self.previous_top:
            # Read by the interrupted pass: only a recheck, down to where the tail takes over.
            if chain.stop_at is not None and updated < chain.stop_at:
                return Skip.STOP
            return self._recheck_or(updated, Skip.SKIP)
        if chain.skip_from is not None and updated > chain.skip_from:
            # Done by the interrupted pass, rechecked by the head. Its oldest second is read
            # again: the thread that ended its last page may share it with the next page's.
            return Skip.SKIP
        if self.stop_below is not None and updated < self.stop_below:
            return Skip.STOP
        if self.watermark is None or updated >= self.watermark - self.lookback:
            return ReadHow(floor=self.floor, recheck=False)
        return self._recheck_or(updated, Skip.STOP)

    def _recheck_or(self, updated: datetime, otherwise: Skip) -> ReadHow | Skip:
        if self.recheck_from is not None and updated >= self.recheck_from:
            return ReadHow(floor=None, recheck=True)
        return otherwise


def listing_decisions(
    plan: FolderPlan, pages: Iterable[Iterable[datetime | None]], chain: Chain = NEW
) -> list[list[ReadHow | Skip]]:
    """The decisions of a chain over listing pages of threads (their `updated_time`s, in
    Graph's order): a page holding a STOP is the chain's last."""
    decided: list[list[ReadHow | Skip]] = []
    for page in pages:
        decided.append([plan.decide(updated, chain) for updated in page])
        if Skip.STOP in decided[-1]:
            break
    return decided
