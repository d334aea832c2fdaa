"""Which threads and messages a run reads, read concurrently, and the state the next run needs.

Nothing here knows dlt: the source hands in the folder states it keeps and receives, through one
bounded queue, the threads read (`ThreadPart`) and the new folder states (`FolderProgress`).

State is a few values per (Page, platform, folder), never per thread:
- `watermark`: the newest `updated_time` of the last listing pass that went to its end. Every
  message of that folder sent before it was loaded (a new message moves its thread's
  `updated_time` past it). A thread listed as updated after `watermark - lookback` is read for
  its messages from `watermark - lookback` on: an overlap that the merge keys make harmless.
- `pass`: a listing pass in progress, so that a run killed half way resumes where its last
  checkpoint left it: threads updated between `down_to` and `top` are done, and Graph's cursor
  `after` continues the listing below them. A new run lists the head of the folder (threads
  that moved above `top` since) and continues the tail from the cursor; if Graph refuses the
  cursor, the tail starts from the top again and skips what is done.
- `loaded_max` (per Page and platform, kept by the source): the newest message time ever
  loaded. An Instagram message whose details Graph withholds is loaded only when newer than
  that, or when its folder is read for the first time: a copy loaded earlier with its details is
  never replaced by one without.
Threads updated within `recheck_window` of a folder's newest are listed again every run and their
nested messages merged again, so reactions, edits, read state and moves reach the tables.

Cursor safety, in any interleaving of the calls in flight: a folder's progress is put on the
queue only after every thread of the listing pages it covers was put there whole (its last part
included); the queue is first in, first out, with one consumer, which yields the data before it
stores a later progress; and dlt commits state with the data of the same load. So state never
covers a thread that was not extracted.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .conversations_api import ConversationsApi, FacebookPage, Upcoming
from .errors import PageFailed
from .graph_client import GraphUnavailable, ThrottleBudgetExceeded, next_page_url
from .graph_errors import ErrorKind, GraphError
from .rows import has_details, parse_time
from .scheduler import CallScheduler

log = logging.getLogger("meta_inbox")

# Listing pages of a folder read ahead of the last one handed over whole: enough to keep its
# calls in flight, few to read again (and hold in memory) when a run stops half way.
LOOKAHEAD = 2


class Mode(Enum):
    REGULAR = "regular"
    RECONCILE = "reconcile"  # read every thread and message again, and say what Graph listed


@dataclass(frozen=True)
class ReadPlan:
    mode: Mode
    platforms: list[str]
    folders: list[str]
    start: datetime | None
    lookback: timedelta
    recheck_window: timedelta


@dataclass
class ThreadPart:
    """Messages of one thread read so far; the `final` part also stands for the thread itself."""

    page: FacebookPage
    platform: str
    folder: str
    conversation: dict[str, Any]  # as listed, without its nested messages
    messages: list[dict[str, Any]]  # to load
    rechecked: bool  # listed again by the recheck window: no older messages were looked for
    new_after: datetime | None  # messages sent after this are new to the destination
    final: bool
    complete: bool = False  # final, and every message of the thread was listed
    listed: list[tuple[str, datetime]] = field(default_factory=list)  # reconcile: all messages

    @property
    def newest(self) -> datetime | None:
        """The newest time this part loads: the thread's, or a message's if later."""
        times = [parse_time(self.conversation.get("updated_time"))]
        times += [parse_time(message.get("created_time")) for message in self.messages]
        return max(filter(None, times), default=None)


@dataclass(frozen=True)
class FolderProgress:
    key: str  # page/platform/folder
    state: dict[str, Any]


@dataclass(frozen=True)
class PageRead:
    page: FacebookPage
    platforms: tuple[str, ...]  # those Graph did not refuse


@dataclass
class ReadReport:
    """What reading found, for the summary and the run record."""

    pages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    page_failures: list[PageFailed] = field(default_factory=list)
    stopped_by: BaseException | None = None
    reconciled: set[tuple[str, str]] = field(default_factory=set)  # (Page, platform) read whole
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def warn(self, message: str) -> None:
        with self.lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        log.warning(message)


class InboxReader:
    """Reads the Pages of a run through a `CallScheduler`; the output is taken with `take`."""

    def __init__(
        self,
        api: ConversationsApi,
        plan: ReadPlan,
        report: ReadReport,
        *,
        max_concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.plan = plan
        self.report = report
        # Room for what the calls in flight bring, twice over: enough to keep fetching while a
        # checkpoint loads, little to lose when a run is killed.
        self._out: queue.Queue[Any] = queue.Queue(maxsize=max(8, 2 * max_concurrency))
        self._lock = threading.Lock()
        self._fatal: BaseException | None = None
        self._stopping = False
        self._pages: dict[str, FacebookPage] = {}
        self._failed: set[str] = set()
        self._refused: dict[str, set[str]] = {}  # Page → platforms Graph refused
        self._reconciled: dict[tuple[str, str], int] = {}  # (Page, platform) → folders read
        self._first_folder: dict[tuple[str, str, str], str] = {}  # thread → folder this run
        self._scheduler = CallScheduler(
            api.connection.pacer,
            max_concurrency=max_concurrency,
            clock=clock,
            on_error=self._task_failed,
        )

    # -- the consumer's side -------------------------------------------------------------

    def start(
        self,
        pages: list[FacebookPage],
        folder_states: dict[str, dict[str, Any]],
        loaded_max: dict[str, str],
    ) -> None:
        for page in pages:
            self._pages[page.id] = page
            self._refused[page.id] = set()
            self.report.pages.append(page.id)
        for page in pages:
            for platform in self.plan.platforms:
                loaded = parse_time(loaded_max.get(f"{page.id}/{platform}"))
                walks = [
                    _FolderWalk(self, page, platform, folder, folder_states, loaded)
                    for folder in self.plan.folders
                ]
                if platform == "instagram":
                    # Graph's answer is the sure test of a linked Instagram account: one
                    # folder first, the others once it answered.
                    walks[0].begin(then=walks[1:])
                else:
                    for walk in walks:
                        walk.begin()

    def take(self, timeout: float) -> Any | None:
        """The next item, or None when none came within `timeout` (see `done`)."""
        try:
            item = self._out.get(timeout=timeout)
        except queue.Empty:
            item = None
        if self._fatal is not None:
            raise self._fatal
        return item

    @property
    def done(self) -> bool:
        """Nothing more will come. Idle first: an idle scheduler puts nothing more."""
        return self._scheduler.idle() and self._out.empty()

    def stop(self, reason: BaseException | None = None) -> None:
        """Start no new call; calls in flight end and what they read is still handed over."""
        with self._lock:
            self._stopping = True
            if reason is not None and self.report.stopped_by is None:
                self.report.stopped_by = reason
        for page_id in list(self._pages):
            self._scheduler.drop(page_id)

    def close(self) -> None:
        self.stop()
        while not self._scheduler.idle():  # workers blocked on a full queue must get room
            with contextlib.suppress(queue.Empty):
                self._out.get(timeout=0.05)
        self._scheduler.close()

    # -- the workers' side ---------------------------------------------------------------

    def put(self, item: Any) -> None:
        self._out.put(item)

    def submit(self, page: FacebookPage, task: Callable[[], None], *, first: bool = False) -> None:
        if self.active(page):
            self._scheduler.submit(page.id, lambda: self._run(page, task), first=first)

    def active(self, page: FacebookPage) -> bool:
        return not self._stopping and page.id not in self._failed

    def first_sighting(self, page: FacebookPage, platform: str, thread: str, folder: str) -> bool:
        """Whether this run meets the thread in this folder first (Graph may ignore `folder`
        on a platform and list the same threads in every folder: the first folder keeps it)."""
        with self._lock:
            known = self._first_folder.setdefault((page.id, platform, thread), folder)
        if known == folder:
            return True
        self.report.warn(
            f"Graph listed some {platform} threads of Page {page.id} in several folders (e.g. "
            f"{thread} in {known} and {folder}): each is kept in the first folder read"
        )
        return False

    def walk_done(self, page: FacebookPage, platform: str) -> None:
        """A folder walk read its folder to the end."""
        with self._lock:
            scope = (page.id, platform)
            self._reconciled[scope] = self._reconciled.get(scope, 0) + 1
            if self._reconciled[scope] == len(self.plan.folders):
                self.report.reconciled.add(scope)

    def refused(self, page: FacebookPage, platform: str) -> None:
        with self._lock:
            self._refused[page.id].add(platform)

    def pages_read(self) -> list[PageRead]:
        """The Pages read (not given up), with the platforms Graph did not refuse."""
        with self._lock:
            return [
                PageRead(page, tuple(p for p in self.plan.platforms if p not in self._refused[id_]))
                for id_, page in self._pages.items()
                if id_ not in self._failed
            ]

    def _run(self, page: FacebookPage, task: Callable[[], None]) -> None:
        if not self.active(page):
            return
        try:
            task()
        except GraphError as error:
            if not error.kind.concerns_one_page:
                raise
            self._page_failed(page, error)

    def _page_failed(self, page: FacebookPage, error: GraphError) -> None:
        with self._lock:
            if page.id in self._failed:
                return
            self._failed.add(page.id)
            self.report.page_failures.append(PageFailed(page.id, page.name, error))
            everyone = len(self._failed) == len(self._pages)
        # This Page cannot be read (permission, role, token): the others still can.
        self._scheduler.drop(page.id)
        log.debug("Page %s given up: %s", page.id, error)
        if everyone:
            self._stop_for(self.report.page_failures[0], fatal=True)

    def _task_failed(self, error: BaseException) -> None:
        if isinstance(error, GraphError) and error.kind is ErrorKind.BLOCKED:
            error = GraphUnavailable(f"Graph blocks these calls for now ({error.message})")
        if isinstance(error, ThrottleBudgetExceeded | GraphUnavailable):
            log.warning("stopping early, keeping what was read: %s", error)
            self._stop_for(error, fatal=False)
        else:
            self._stop_for(error, fatal=True)

    def _stop_for(self, error: BaseException, *, fatal: bool) -> None:
        if fatal:
            with self._lock:
                self._fatal = self._fatal or error
        self.stop(None if fatal else error)


def folder_key(page_id: str, platform: str, folder: str) -> str:
    return f"{page_id}/{platform}/{folder}"


class _Skip(Enum):
    SKIP = "skip"  # not read now; the listing goes on
    STOP = "stop"  # older than what this pass reads: the listing ends after this page


@dataclass(frozen=True)
class _ReadHow:
    floor: datetime | None  # messages sent before this are not looked for (None: all)
    recheck: bool  # the nested page only: no older pages, no attachment follow-ups


@dataclass
class _ListingPage:
    pending: int = 1  # threads not handed over whole, plus one while the page is sorted
    newest: datetime | None = None
    oldest: datetime | None = None
    after: str | None = None  # Graph's cursor past this page


class _Chain:
    """One sequence of listing calls down a folder, and how far it was handed over."""

    def __init__(self, after: str | None, *, skip_from: datetime | None, stop_at: datetime | None):
        self.first_after = after
        self.skip_from = skip_from  # tail of a resumed pass: threads from here up are done
        self.stop_at = stop_at  # head of a resumed pass: ends below this
        self.pages: list[_ListingPage] = []
        self.handed_over = 0  # leading pages whose every thread is on the queue
        self.ended = False
        self.paused_at: str | None = None  # the cursor to go on from, once the frontier moves
        self.upcoming: Upcoming | None = None  # see `Listing.upcoming`

    @property
    def finished(self) -> bool:
        return self.ended and self.handed_over == len(self.pages)


class _FolderWalk:
    """Everything read this run in one (Page, platform, folder)."""

    def __init__(
        self,
        reader: InboxReader,
        page: FacebookPage,
        platform: str,
        folder: str,
        folder_states: dict[str, dict[str, Any]],
        loaded_max: datetime | None,
    ) -> None:
        self.reader = reader
        self.page = page
        self.platform = platform
        self.folder = folder
        self.key = folder_key(page.id, platform, folder)
        self.plan = reader.plan
        state = folder_states.get(self.key) or {}
        self.watermark = parse_time(state.get("watermark"))
        self.previous: dict[str, Any] = (
            state.get("pass") or {} if self.plan.mode is Mode.REGULAR else {}
        )
        # The interrupted pass's span, parsed once: every thread listed is compared with it.
        self.previous_top = parse_time(self.previous.get("top"))
        self.previous_down_to = parse_time(self.previous.get("down_to"))
        self.loaded_max = loaded_max
        self.lock = threading.Lock()
        self.details_limited = False
        self.stop_below: datetime | None = None
        self.recheck_from: datetime | None = None
        self.planned = False
        self.chains: list[_Chain] = []
        self.head: _Chain | None = None
        self.tail = _Chain(None, skip_from=None, stop_at=None)
        self.then: list[_FolderWalk] = []
        self.over = False  # finished or given up

    # -- planning -------------------------------------------------------------------------

    def begin(self, then: list[_FolderWalk] | None = None) -> None:
        self.then = then or []
        previous = self.previous
        if previous:
            top = self.previous_top
            down_to = self.previous_down_to or top
            self.stop_below = parse_time(previous.get("stop_below"))
            self.recheck_from = parse_time(previous.get("recheck_from"))
            self.planned = True
            assert top is not None
            assert down_to is not None
            head_end = top - self.plan.lookback
            if self.recheck_from is not None:
                head_end = min(head_end, self.recheck_from)
            self.head = _Chain(None, skip_from=None, stop_at=max(down_to, head_end))
            self.tail = _Chain(previous.get("after"), skip_from=down_to, stop_at=None)
            self.chains = [self.head, self.tail]
        else:
            self.chains = [self.tail]
        for chain in self.chains:
            self.reader.submit(
                self.page, lambda chain=chain: self._list(chain, chain.first_after), first=True
            )

    def _plan_pass(self, newest: datetime | None) -> None:
        """Where a new pass ends, once the folder's newest thread is known."""
        self.planned = True
        if self.plan.mode is Mode.RECONCILE or self.watermark is None:
            self.stop_below = self.plan.start
            return
        self.stop_below = self.watermark - self.plan.lookback
        if self.plan.recheck_window and newest is not None:
            self.recheck_from = newest - self.plan.recheck_window
            self.stop_below = min(self.stop_below, self.recheck_from)

    def _how(self, chain: _Chain, updated: datetime | None) -> _ReadHow | _Skip:
        if updated is None:
            return _ReadHow(floor=self._floor(), recheck=False)
        if self.plan.mode is Mode.RECONCILE:
            if self.plan.start and updated < self.plan.start:
                return _Skip.STOP
            return _ReadHow(floor=None, recheck=False)
        if chain is self.head and updated <= self.previous_top:  # type: ignore[operator]
            # Read by the interrupted pass: only a recheck, down to where the tail takes over.
            if chain.stop_at is not None and updated < chain.stop_at:
                return _Skip.STOP
            return self._recheck_or(updated, _Skip.SKIP)
        if chain.skip_from is not None and updated >= chain.skip_from:
            return _Skip.SKIP  # done by the interrupted pass, rechecked by the head
        if self.stop_below is not None and updated < self.stop_below:
            return _Skip.STOP
        if self.watermark is None or updated >= self.watermark - self.plan.lookback:
            return _ReadHow(floor=self._floor(), recheck=False)
        return self._recheck_or(updated, _Skip.STOP)

    def _recheck_or(self, updated: datetime, otherwise: _Skip) -> _ReadHow | _Skip:
        if self.recheck_from is not None and updated >= self.recheck_from:
            return _ReadHow(floor=None, recheck=True)
        return otherwise

    def _floor(self) -> datetime | None:
        if self.watermark is None:
            return self.plan.start
        return self.watermark - self.plan.lookback

    def first_time(self, chain: _Chain) -> bool:
        """Threads this folder never read: a backfill's, below what an interrupted pass did."""
        return self.plan.mode is Mode.REGULAR and self.watermark is None and chain is self.tail

    # -- listing calls --------------------------------------------------------------------

    def _list(self, chain: _Chain, after: str | None) -> None:
        try:
            listing = self.reader.api.list_threads(
                self.page,
                self.platform,
                self.folder,
                after=after,
                details_limited=self.details_limited,
                upcoming=chain.upcoming,
            )
        except GraphError as error:
            # A kept cursor refused is not a folder refused: look at the cursor first.
            if self._refused_cursor(chain, after, error):
                return
            if after is None and self._refused_folder(error):
                return
            raise
        entry = _ListingPage(after=_cursor(listing.next_url))
        with self.lock:
            self.details_limited = listing.details_limited
            chain.upcoming = listing.upcoming
            if not self.planned:
                self._plan_pass(max(filter(None, map(_updated, listing.threads)), default=None))
            chain.pages.append(entry)
            dependents, self.then = self.then, []
        for walk in dependents:
            walk.begin()
        stop = False
        threads, listing.threads = listing.threads[::-1], []
        while threads:
            # Popped, so that a thread handed over is not held by its listing page meanwhile.
            raw = threads.pop()
            updated = _updated(raw)
            if updated is not None:
                entry.newest = max(entry.newest or updated, updated)
                entry.oldest = min(entry.oldest or updated, updated)
            how = self._how(chain, updated)
            if how is _Skip.STOP:
                stop = True
            elif isinstance(how, _ReadHow) and self.reader.first_sighting(
                self.page, self.platform, str(raw["id"]), self.folder
            ):
                with self.lock:
                    entry.pending += 1
                _ThreadRead(self, chain, entry, raw, how).begin()
        goes_on = listing.next_url is not None and not stop
        with self.lock:
            if not goes_on:
                chain.ended = True
            elif len(chain.pages) - chain.handed_over >= LOOKAHEAD:
                chain.paused_at = entry.after
            else:
                self._list_next(chain, entry.after)
        self.handed_over(chain, entry)

    def _list_next(self, chain: _Chain, after: str | None) -> None:
        self.reader.submit(self.page, lambda: self._list(chain, after), first=True)

    def _refused_folder(self, error: GraphError) -> bool:
        """Graph refusing Instagram on a Page (none linked), or one of its folders: skipped,
        with a warning; the other Pages and platforms go on."""
        if self.platform != "instagram" or error.kind is not ErrorKind.INVALID_PARAMETER:
            return False
        with self.lock:
            if self.over:
                return True
            self.over = True
            dependents, self.then = self.then, []
        probing = bool(dependents) or len(self.plan.folders) == 1
        what = "Instagram" if probing else f"the Instagram folder {self.folder}"
        self.reader.report.warn(
            f"Page {self.page.id} ({self.page.name}): Graph refuses {what} "
            f"({error.message}): skipped"
        )
        if probing:
            self.reader.refused(self.page, self.platform)
        for walk in dependents:
            walk.over = True
        return True

    def _refused_cursor(self, chain: _Chain, after: str | None, error: GraphError) -> bool:
        """A cursor kept from an earlier run that Graph no longer takes: list from the top."""
        if after is None or after != chain.first_after or chain.pages:
            return False
        if error.kind is not ErrorKind.INVALID_PARAMETER:
            return False
        log.info("%s: Graph refused the listing cursor kept from the last run", self.key)
        chain.first_after = None
        self.reader.submit(self.page, lambda: self._list(chain, None), first=True)
        return True

    # -- handing over ---------------------------------------------------------------------

    def handed_over(self, chain: _Chain, entry: _ListingPage) -> None:
        """A thread of `entry` is on the queue whole (or the page was sorted): move the
        frontier, and put the folder's progress on the queue when it moved."""
        with self.lock:
            entry.pending -= 1
            moved = False
            while (
                chain.handed_over < len(chain.pages) and not chain.pages[chain.handed_over].pending
            ):
                chain.handed_over += 1
                moved = True
            if not moved:
                return
            if chain.paused_at is not None and len(chain.pages) - chain.handed_over < LOOKAHEAD:
                self._list_next(chain, chain.paused_at)
                chain.paused_at = None
            finished = all(c.finished for c in self.chains)
            state = self._state(finished)
            if state is not None:
                self.reader.put(FolderProgress(self.key, state))
            if finished:
                self.over = True
        if finished:
            self.reader.walk_done(self.page, self.platform)

    def _state(self, finished: bool) -> dict[str, Any] | None:
        if finished:
            seen = [page.newest for chain in self.chains for page in chain.pages]
            newest = max(filter(None, [*seen, self.watermark]), default=None)
            return {"watermark": _iso(newest), "pass": None}
        if self.plan.mode is Mode.RECONCILE:
            return None
        done = self.tail.pages[: self.tail.handed_over]
        previous = self.previous
        tops = [*(page.newest for page in done), self.previous_top]
        if self.head is not None and self.head.finished:
            tops += [page.newest for page in self.head.pages]
        lows = [*(page.oldest for page in done), self.previous_down_to]
        top, down_to = max(filter(None, tops), default=None), min(filter(None, lows), default=None)
        if top is None:
            return None
        return {
            "watermark": _iso(self.watermark),
            "pass": {
                "top": _iso(top),
                "down_to": _iso(down_to),
                "after": done[-1].after if done else previous.get("after"),
                "stop_below": _iso(self.stop_below),
                "recheck_from": _iso(self.recheck_from),
            },
        }


class _ThreadRead:
    """One thread: its nested messages, older pages while needed, the rest of long attachment
    lists. Handed over in parts, one per page of messages, so no thread is held whole."""

    def __init__(
        self,
        walk: _FolderWalk,
        chain: _Chain,
        entry: _ListingPage,
        raw: dict[str, Any],
        how: _ReadHow,
    ) -> None:
        self.walk = walk
        self.reader = walk.reader
        self.chain = chain
        self.entry = entry
        self.how = how
        nested = raw.get("messages")
        self.nested = nested if isinstance(nested, dict) else {}
        self.conversation = {key: value for key, value in raw.items() if key != "messages"}
        self.first_time = walk.first_time(chain)
        # Once Instagram refused details in this folder, it gave the newest 20 nested: what is
        # older comes without details, asked as such.
        self.details = not walk.details_limited
        self.lock = threading.Lock()
        self.pending = 1  # units of work not done: pages of messages, attachment lists

    def begin(self) -> None:
        self._take(self.nested)

    def _take(self, listing: dict[str, Any]) -> None:
        """Hand over a page of messages (nested or older) and ask for what is still needed."""
        messages = listing.get("data") or []
        kept = [m for m in messages if _sent_at_or_after(m, self.how.floor)]
        following = next_page_url(listing)
        wants_more = (
            following is not None
            and bool(messages)
            and len(kept) == len(messages)
            and not self.how.recheck
        )
        unfinished = [m for m in kept if self._attachments_go_on(m)]
        if unfinished:
            kept = [m for m in kept if not self._attachments_go_on(m)]
        if self.how.recheck:
            # A message whose attachments go on would lose the rest of them: not merged again.
            unfinished = []
        listed = messages if self.walk.plan.mode is Mode.RECONCILE else []
        self._settle(kept, listed, new_work=len(unfinished) + wants_more)
        for message in unfinished:
            self.reader.submit(self.walk.page, lambda m=message: self._more_attachments(m))
        if wants_more:
            assert following is not None
            self.reader.submit(self.walk.page, lambda: self._older(following))

    def _older(self, url: str) -> None:
        try:
            listing = self.reader.api.older_messages(self.walk.page, url, details=self.details)
        except GraphError as error:
            if error.kind is not ErrorKind.MESSAGE_DELETED or not self.details:
                raise
            # Details refused for some message of this page (Instagram's older ones): keep what
            # Graph lists of them, ids and times, here and further back.
            self.details = False
            listing = self.reader.api.older_messages(self.walk.page, url, details=False)
        self._take(listing)

    def _attachments_go_on(self, message: dict[str, Any]) -> bool:
        attachments = message.get("attachments")
        return isinstance(attachments, dict) and self.reader.api.attachments_may_go_on(attachments)

    def _more_attachments(self, message: dict[str, Any]) -> None:
        attachments = message["attachments"]
        items = list(attachments.get("data", []))
        while self.reader.api.attachments_may_go_on(attachments):
            following = next_page_url(attachments)
            assert following is not None
            attachments = self.reader.api.more_attachments(self.walk.page, following)
            items += attachments.get("data", [])
        self._settle([{**message, "attachments": {"data": items}}], [], new_work=0)

    def _settle(
        self, messages: list[dict[str, Any]], listed: list[dict[str, Any]], *, new_work: int
    ) -> None:
        """One unit of work done, `new_work` started: hand over what it read. The part after
        which nothing is pending is the thread's last, and moves its folder's frontier."""
        with self.lock:
            self.pending += new_work - 1
            last = self.pending == 0
        walk = self.walk
        part = ThreadPart(
            page=walk.page,
            platform=walk.platform,
            folder=walk.folder,
            conversation=self.conversation,
            messages=[m for m in messages if self._loadable(m)],
            rechecked=self.how.recheck,
            new_after=walk.watermark,
            final=last,
            complete=last and self.how.floor is None and not self.how.recheck,
            listed=[(str(m["id"]), t) for m in listed if (t := parse_time(m.get("created_time")))],
        )
        if part.messages or part.listed or last:
            self.reader.put(part)
        if last:
            walk.handed_over(self.chain, self.entry)

    def _loadable(self, message: dict[str, Any]) -> bool:
        """Every message with details; one without only where no copy can exist already."""
        if has_details(message) or self.first_time:
            return True
        created = parse_time(message.get("created_time"))
        loaded = self.walk.loaded_max
        return loaded is None or (created is not None and created > loaded)


def _updated(raw: dict[str, Any]) -> datetime | None:
    return parse_time(raw.get("updated_time"))


def _sent_at_or_after(message: dict[str, Any], floor: datetime | None) -> bool:
    if floor is None:
        return True
    created = parse_time(message.get("created_time"))
    return created is None or created >= floor


def _cursor(next_url: str | None) -> str | None:
    if not next_url:
        return None
    return parse_qs(urlsplit(next_url).query).get("after", [None])[0]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
