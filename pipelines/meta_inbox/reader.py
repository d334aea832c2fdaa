"""Which threads and messages a run reads, read concurrently, and the state the next run needs.

Nothing here knows dlt: the source hands in the folder states it keeps and receives, through one
bounded queue, the threads read (`ThreadPart`) and the new folder states (`FolderProgress`).

State is a few values per (Page, platform, folder), never per thread:
- `watermark`: the newest `updated_time` of the last listing pass that went to its end. Every
  message of that folder sent before it was loaded (a new message moves its thread's
  `updated_time` past it). A thread listed as updated after `watermark - lookback` is read for
  its messages from `watermark - lookback` on: an overlap that the merge keys make harmless.
- `pass`: a listing pass in progress, so that a run killed half way resumes where its last
  checkpoint left it: threads updated between `down_to` and `top` are done, and `next` (Graph's
  own `next` URL past them, without the token) continues the listing below them. A new run lists
  the head of the folder (threads that moved above `top` since) and continues the tail from
  `next`. A kept position is distrusted: when Graph refuses it or answers it with an empty page
  (an expired cursor may do either), the tail starts from the head again and skips what is done.
  `folder_plan.py` says what each listed thread gets, and why nothing is lost.
- `generation` (with `pass` None): the run that began the reading in which this folder's pass
  ended. A run killed or stopped leaves its generation open (the source keeps it), and the next
  run finishes that generation before anything else: it reads neither the folders whose pass
  ended in it nor the heads of the passes it interrupted, only their tails. What moved in them
  since is above their watermark, which the next generation's passes read from; the watermark
  of a pass that ends without its head is the interrupted pass's `top`. A restart thus costs the
  calls since the last checkpoint, not a listing of every folder again.
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

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from functools import cached_property
from typing import Any

from .conversations_api import (
    DETAILS_REFUSALS,
    LEGACY_ARCHIVE,
    LEGACY_ARCHIVE_TAG,
    ConversationsApi,
    FacebookPage,
    Listing,
    TakenPage,
    Upcoming,
    attachments_go_on,
    platform_folders,
)
from .errors import FolderFailed, PageFailed
from .folder_plan import NEW, Chain, FolderPlan, ReadHow, Skip
from .graph_client import (
    GraphUnavailable,
    ThrottleBudgetExceeded,
    next_page_url,
    page_of,
    without_secrets,
)
from .graph_errors import ErrorKind, GraphError
from .rows import has_details, parse_time
from .scheduler import CallScheduler

log = logging.getLogger("meta_inbox")

# Listing pages of a folder read ahead of the last one handed over whole: enough to keep its
# calls in flight, few to read again (and hold in memory) when a run stops half way.
LOOKAHEAD = 2
# Skips a run makes of a thread (or a message's attachments) whose calls Graph kept failing
# where it answered others: one object Graph cannot serve must not stop every run at it, but
# past a few, Graph itself is failing, and the run stops early with what it read.
UNAVAILABLE_SKIPS = 3


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
    # One person's threads (PSIDs or IGSIDs): each folder listed for each, every thread read
    # whole, and no folder state read or written (see `source.py`).
    user_ids: tuple[str, ...] = ()


@dataclass
class ThreadPart:
    """Messages of one thread read so far; the `final` part also stands for the thread itself."""

    page: FacebookPage
    platform: str
    folder: str
    conversation: dict[str, Any]  # as listed, without its nested messages
    messages: list[dict[str, Any]]  # to load
    rechecked: bool  # listed again by the recheck window: no older messages were looked for
    final: bool
    complete: bool = False  # final, and every message of the thread was listed
    listed: list[tuple[str, datetime]] = field(default_factory=list)  # reconcile: all messages
    # Each message's `created_time` as the reader parsed it (see `created`).
    times: InitVar[list[datetime | None] | None] = None
    _created: list[datetime | None] | None = field(
        init=False, default=None, repr=False, compare=False
    )

    def __post_init__(self, times: list[datetime | None] | None) -> None:
        self._created = times

    @property
    def created(self) -> list[datetime | None]:
        """Each message's `created_time`, parsed once: counting, state and rows all need it.
        The reader parses them as it reads; parts made otherwise, when first asked."""
        if self._created is None:
            self._created = [parse_time(message.get("created_time")) for message in self.messages]
        return self._created

    @cached_property
    def newest(self) -> datetime | None:
        """The newest time this part loads: the thread's, or a message's if later."""
        times = [parse_time(self.conversation.get("updated_time")), *self.created]
        return max(filter(None, times), default=None)


@dataclass(frozen=True)
class FolderProgress:
    key: str  # page/platform/folder
    state: dict[str, Any]


@dataclass(frozen=True)
class PageRead:
    page: FacebookPage
    platforms: tuple[str, ...]  # those Graph did not refuse


@dataclass(frozen=True)
class Skipped:
    """A thread (or one message of it) Graph stopped answering for while a run read it."""

    page_id: str
    platform: str
    thread_id: str
    message_id: str | None
    error: str  # the first line of Graph's answer, or what was wrong with it


@dataclass
class ReadReport:
    """What reading found, for the summary and the run record."""

    pages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    page_failures: list[PageFailed] = field(default_factory=list)
    folder_failures: list[FolderFailed] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    stopped_by: BaseException | None = None
    reconciled: set[tuple[str, str]] = field(default_factory=set)  # (Page, platform) read whole
    # Of those, (Page, platform, folder) Graph refused to list: what it held is not known gone.
    unlisted: set[tuple[str, str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def warn(self, message: str) -> None:
        with self.lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        log.warning(message)

    def skip(self, skipped: Skipped) -> None:
        with self.lock:
            self.skipped.append(skipped)
        what = f"message {skipped.message_id} of " if skipped.message_id else ""
        log.warning("skipped %sthread %s: %s", what, skipped.thread_id, skipped.error)

    def not_listed(self, page_id: str, platform: str, folder: str) -> None:
        with self.lock:
            self.unlisted.add((page_id, platform, folder))

    def folder_failed(self, failure: FolderFailed) -> None:
        with self.lock:
            self.folder_failures.append(failure)
        log.warning("%s", failure)

    @property
    def skipped_threads(self) -> int:
        return len({s.thread_id for s in self.skipped if s.message_id is None})

    @property
    def skipped_messages(self) -> int:
        return sum(s.message_id is not None for s in self.skipped)


class InboxReader:
    """Reads the Pages of a run through a `CallScheduler`; the output is taken with `take`."""

    def __init__(
        self,
        api: ConversationsApi,
        plan: ReadPlan,
        report: ReadReport,
        *,
        max_concurrency: int,
        read_ahead: int,
        slice_threads: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.plan = plan
        self.report = report
        # Messages of listing pages not yet handed over whole, and the listing calls waiting
        # for them to fall under `read_ahead`: a listing brings up to 100 threads of up to 100
        # messages each, so memory is bounded in messages, not in calls or items.
        self.read_ahead = read_ahead
        # Nor more than a checkpoint's slice (`slice_threads` threads, in the mean messages
        # of the threads listed so far): the next slice is read while one loads, and a run
        # killed loses no more than those two.
        self.slice_threads = slice_threads
        self.generation: str | None = None
        self.resumed = False
        self._held = 0
        # A listing call in flight holds what it is expected to bring: the mean of the
        # listings so far (at first a quarter of the bound, so that few start at once).
        self._listed = [0, 0, 0]  # messages, listings, threads
        self._waiting: collections.deque[tuple[FacebookPage, Callable[[], None]]] = (
            collections.deque()
        )
        # Room for what the calls in flight bring, twice over: enough to keep fetching while a
        # checkpoint loads, little to lose when a run is killed.
        self._out: queue.Queue[Any] = queue.Queue(maxsize=max(8, 2 * max_concurrency))
        self._lock = threading.Lock()
        self._fatal: BaseException | None = None
        self._stopping = False
        self._pages: dict[str, FacebookPage] = {}
        self._failed: set[str] = set()
        self._unavailable_skips = 0
        self._refused: dict[str, set[str]] = {}  # Page → platforms Graph refused
        self._reconciled: dict[tuple[str, str], int] = {}  # (Page, platform) → folders read
        # (Page, platform) → folders whose reading covers the platform (one, where Graph
        # ignores `folder`); by default every folder of the plan.
        self._covering: dict[tuple[str, str], int] = {}
        # Thread → the folder this run took it in, and its `updated_time` there.
        self._first_folder: dict[tuple[str, str, str], tuple[str, datetime | None]] = {}
        self._scheduler = CallScheduler(
            api.connection.pacer,
            max_concurrency=max_concurrency,
            clock=clock,
            on_error=self._task_failed,
            on_idle=self._wake,
        )

    # -- the consumer's side -------------------------------------------------------------

    def start(
        self,
        pages: list[FacebookPage],
        folder_states: dict[str, dict[str, Any]],
        loaded_max: dict[str, str],
        generation: str | None = None,
        resumed: bool = False,
    ) -> None:
        """Start reading. `generation` names the reading folder states record their end in;
        `resumed`: it was begun by an earlier run, which this one finishes (see above)."""
        self.generation, self.resumed = generation, resumed
        for page in pages:
            self._pages[page.id] = page
            self._refused[page.id] = set()
            self.report.pages.append(page.id)
        for page in pages:
            for platform in self.plan.platforms:
                if platform not in page.platforms:
                    continue
                loaded = parse_time(loaded_max.get(f"{page.id}/{platform}"))
                walks = [
                    _FolderWalk(self, page, platform, folder, folder_states, loaded, user_id)
                    for user_id in self.plan.user_ids or (None,)
                    for folder in platform_folders(platform, self.plan.folders)
                ]
                if platform == "instagram":
                    if not all(walk.ended_in_generation for walk in walks):
                        _InstagramProbe(self, page, walks).begin()
                    continue
                # The legacy archive is listed once another folder's first page answered: the
                # Page's `is_owner` is then known to be asked or dropped, so that a refusal of
                # its listing (100) is the tag's, and costs one call.
                legacy = [walk for walk in walks if walk.folder == LEGACY_ARCHIVE]
                others = [
                    walk
                    for walk in walks
                    if walk.folder != LEGACY_ARCHIVE and not walk.ended_in_generation
                ]
                if others:
                    others[0].followers = legacy
                for walk in others or legacy:
                    walk.begin()

    def take(self, timeout: float) -> Any | None:
        """The next item, or None when none came within `timeout` (see `done`)."""
        try:
            item = self._out.get(timeout=timeout)
        except queue.Empty:
            item = None
        if item is None and self._scheduler.idle():
            # Nothing in flight will release what is held (a folder that failed half way
            # holds its pages): the bound gives way rather than stall the run.
            self._admit(force=True)
        if self._fatal is not None:
            raise self._fatal
        return item

    @property
    def done(self) -> bool:
        """Nothing more will come. Idle first: an idle scheduler puts nothing more."""
        with self._lock:
            waiting = bool(self._waiting)
        return self._scheduler.idle() and self._out.empty() and not waiting

    def stop(self, reason: BaseException | None = None) -> None:
        """Start no new call; calls in flight end and what they read is still handed over."""
        with self._lock:
            self._stopping = True
            self._waiting.clear()
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

    def _wake(self) -> None:
        """The consumer waiting in `take` learns at once that the reading is done, not at its
        timeout (a run's last slice would wait for it). A full queue wakes it anyway."""
        with contextlib.suppress(queue.Full):
            self._out.put_nowait(None)

    def submit(self, page: FacebookPage, task: Callable[[], None], *, first: bool = False) -> None:
        if self.active(page):
            self._scheduler.submit(page.id, lambda: self._run(page, task), first=first)

    def submit_listing(self, page: FacebookPage, task: Callable[[], None]) -> None:
        """A listing call, started once the messages held fall under `read_ahead`."""
        with self._lock:
            self._waiting.append((page, task))
        self._admit()

    def hold(self, listing: int, threads: int) -> None:
        """A listing brought `listing` messages of `threads` threads: held until handed over
        (`release`)."""
        with self._lock:
            self._held += listing
            self._listed[0] += listing
            self._listed[1] += 1
            self._listed[2] += threads

    def release(self, messages: int) -> None:
        with self._lock:
            self._held -= messages
        self._admit()

    def _admit(self, force: bool = False) -> None:
        while True:
            with self._lock:
                messages, listings, threads = self._listed
                expected = max(1, messages // listings if listings else self.read_ahead // 4)
                bound = self.read_ahead
                if self.slice_threads and threads:
                    bound = min(bound, max(1, messages * self.slice_threads // threads))
                if not self._waiting or (
                    self._held + expected > bound and self._held > 0 and not force
                ):
                    return
                page, task = self._waiting.popleft()
                self._held += expected
            force = False
            self.submit(page, self._reserved(task, expected), first=True)

    def _reserved(self, task: Callable[[], None], expected: int) -> Callable[[], None]:
        """The task, giving back what its call was expected to bring once it ran (a task tried
        again after a throttle gives it back once)."""
        reservation = [expected]

        def run() -> None:
            try:
                task()
            finally:
                given_back, reservation[0] = reservation[0], 0
                if given_back:
                    self.release(given_back)

        return run

    def active(self, page: FacebookPage) -> bool:
        return not self._stopping and page.id not in self._failed

    def sighting(
        self,
        page: FacebookPage,
        platform: str,
        thread: str,
        folder: str,
        updated: datetime | None,
    ) -> tuple[str, datetime | None] | None:
        """The folder that took the thread to read earlier this run, and the thread's
        `updated_time` then; None the first time. A thread is kept in the first folder that
        takes it (Graph may ignore `folder` on a platform and list the same threads in every
        folder), which records its newest `updated_time` taken."""
        key = (page.id, platform, thread)
        with self._lock:
            earlier = self._first_folder.get(key)
            if earlier is None or (earlier[0] == folder and _newer(updated, earlier[1])):
                self._first_folder[key] = (folder, updated)
        if earlier is not None and earlier[0] != folder:
            self.report.warn(
                f"Graph listed some {platform} threads of Page {page.id} in several folders "
                f"(e.g. {thread} in {earlier[0]} and {folder}): each is kept in the first "
                "folder read"
            )
        return earlier

    def walk_done(self, page: FacebookPage, platform: str) -> None:
        """A folder walk read its folder to the end."""
        with self._lock:
            scope = (page.id, platform)
            self._reconciled[scope] = self._reconciled.get(scope, 0) + 1
            folders = len(platform_folders(platform, self.plan.folders))
            if self._reconciled[scope] == self._covering.get(scope, folders):
                self.report.reconciled.add(scope)

    def one_folder_lists_all(self, page: FacebookPage, platform: str) -> None:
        """Graph ignores `folder` on this platform: one folder's walk reads every thread."""
        with self._lock:
            self._covering[page.id, platform] = 1

    def refused(self, page: FacebookPage, platform: str) -> None:
        with self._lock:
            self._refused[page.id].add(platform)

    def pages_read(self) -> list[PageRead]:
        """The Pages read (not given up), with the platforms Graph did not refuse."""
        with self._lock:
            return [
                PageRead(
                    page,
                    tuple(
                        p
                        for p in self.plan.platforms
                        if p in page.platforms and p not in self._refused[id_]
                    ),
                )
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

    def skips_unavailable(self) -> bool:
        """Whether a thread whose calls Graph kept failing may be skipped: one more counted."""
        with self._lock:
            self._unavailable_skips += 1
            return self._unavailable_skips <= UNAVAILABLE_SKIPS

    def _task_failed(self, error: BaseException) -> None:
        if isinstance(error, GraphError) and error.kind is ErrorKind.BLOCKED:
            error = GraphUnavailable(f"Graph blocks these calls for now ({error.text})")
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


# Errors that end one thread, or one listing, and nothing else: the object is gone ("does not
# exist", a message deleted), too heavy for Graph even asked one at a time, or Graph answers in
# a way meta-inbox does not know.
_LOCAL = frozenset(
    {
        ErrorKind.NOT_FOUND,
        ErrorKind.MESSAGE_DELETED,
        ErrorKind.TOO_MUCH_DATA,
        ErrorKind.INVALID_PARAMETER,
        ErrorKind.OTHER,
    }
)


def _local(error: GraphError) -> bool:
    return error.kind in _LOCAL


def _refused_cursor(error: GraphError | GraphUnavailable) -> bool:
    """Graph's answer to a cursor it no longer takes, as the notes allow (or to its page)."""
    return isinstance(error, GraphError) and error.kind is ErrorKind.INVALID_PARAMETER


def _newer(updated: datetime | None, than: datetime | None) -> bool:
    return updated is not None and (than is None or updated > than)


# Restarts of a chain whose cursors expired before its end: a folder's listing, a thread's
# messages, a message's attachments (`_FolderWalk._expired`, `_ThreadRead._again`).
_RESTARTS = 2


@dataclass
class _ListingPage:
    pending: int = 1  # threads not handed over whole, plus one while the page is sorted
    newest: datetime | None = None
    oldest: datetime | None = None
    next_url: str | None = None  # Graph's `next` past this page, without its secrets
    held: int = 0  # messages it brought, held until every thread of it is handed over


class _Chain:
    """One sequence of listing calls down a folder, and how far it was handed over."""

    def __init__(self, first_url: str | None, role: Chain) -> None:
        self.first_url = first_url  # a position kept from an earlier run, or None: the head
        self.role = role
        self.pages: list[_ListingPage] = []
        self.handed_over = 0  # leading pages whose every thread is on the queue
        self.ended = False
        self.paused_at: str | None = None  # the `next` to go on from, once the frontier moves
        self.upcoming: Upcoming | None = None  # see `Listing.upcoming`
        # Lists again what this run listed (a pass's head at its end, a listing whose cursor
        # expired): a thread met is read only for what it got since.
        self.again = role.closes is not None
        self.restarts = 0  # see `_FolderWalk._expired`
        self.last: TakenPage | None = None  # the last page that listed threads

    @property
    def finished(self) -> bool:
        return self.ended and self.handed_over == len(self.pages)


class _InstagramProbe:
    """Before an Instagram account's folders are walked: whether the Page has one, and whether
    Graph honours `folder` there (UNCERTAIN in the notes).

    Two light listings (ids only) of two folders: a thread lives in one folder, so the same
    threads in both mean Graph ignores `folder`, and one walk then reads them all, once. A
    refused folder listing is told apart from "no Instagram account" by the one call that can
    only fail for that: a listing with neither `folder` nor fields."""

    def __init__(self, reader: InboxReader, page: FacebookPage, walks: list[_FolderWalk]) -> None:
        self.reader = reader
        self.page = page
        self.walks = walks
        self.probed = walks[:2]
        self.lock = threading.Lock()
        self.answers: dict[str, list[str] | GraphError] = {}

    def begin(self) -> None:
        for walk in self.probed:
            self.reader.submit(self.page, lambda walk=walk: self._probe(walk), first=True)

    def _probe(self, walk: _FolderWalk) -> None:
        api = self.reader.api
        try:
            answer: list[str] | GraphError = api.thread_ids(
                self.page, "instagram", walk.folder, api.page_size
            )
        except GraphError as error:
            if not _local(error):
                raise
            answer = error
        with self.lock:
            self.answers[walk.folder] = answer
            if len(self.answers) < len(self.probed):
                return
        if any(isinstance(answer, GraphError) for answer in self.answers.values()):
            self.reader.submit(self.page, self._account, first=True)
        else:
            self._walk()

    def _account(self) -> None:
        try:
            self.reader.api.thread_ids(self.page, "instagram", None, 1)
        except GraphError as error:
            if not _local(error):
                raise
            self.reader.report.warn(
                f"Page {self.page.id} ({self.page.name}): Graph refuses Instagram "
                f"({error.text}): skipped"
            )
            self.reader.refused(self.page, "instagram")
            return
        self._walk()

    def _walk(self) -> None:
        lists = [answer for answer in self.answers.values() if isinstance(answer, list)]
        if len(self.probed) == 2 and len(lists) == 2 and lists[0] and lists[0] == lists[1]:
            first = self.walks[0]
            log.info(
                "Page %s: Graph ignores `folder` for Instagram: its threads are listed once, "
                "as folder %s",
                self.page.id,
                first.folder,
            )
            self.reader.one_folder_lists_all(self.page, "instagram")
            for walk in self.walks:
                if walk.folder == first.folder:  # one per person, in a run for some people
                    walk.begin()
            return
        for walk in self.walks:
            answer = self.answers.get(walk.folder)
            if isinstance(answer, GraphError):
                walk.fail(answer)
            else:
                walk.begin()


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
        user_id: str | None = None,
    ) -> None:
        self.reader = reader
        self.page = page
        self.platform = platform
        self.folder = folder
        self.user_id = user_id  # one person's threads: read whole, no state kept
        self.key = folder_key(page.id, platform, folder)
        self.read_plan = reader.plan
        state = {} if user_id else folder_states.get(self.key) or {}
        reconcile = self.read_plan.mode is Mode.RECONCILE or user_id is not None
        self.previous: dict[str, Any] = {} if reconcile else state.get("pass") or {}
        self.ended_in_generation = (
            reader.resumed
            and not reconcile
            and bool(state)
            and state.get("pass") is None
            and state.get("generation") == reader.generation
        )
        self.previous_down_to = parse_time(self.previous.get("down_to"))
        self.plan = FolderPlan(
            reconcile=reconcile,
            start=None if user_id else self.read_plan.start,
            watermark=parse_time(state.get("watermark")),
            lookback=self.read_plan.lookback,
            previous_top=parse_time(self.previous.get("top")),
        )
        self.loaded_max = loaded_max
        self.lock = threading.Lock()
        self.details_limited = False
        self.planned = False
        self.chains: list[_Chain] = []
        self.head: _Chain | None = None
        self.tail = _Chain(None, NEW)
        self.closing: _Chain | None = None  # see `Chain.closes`
        self.head_counts: Upcoming | None = None  # see `_list`
        self.over = False  # finished or given up
        self.followers: list[_FolderWalk] = []  # walks that begin after this one's first answer

    @property
    def watermark(self) -> datetime | None:
        return self.plan.watermark

    # -- planning -------------------------------------------------------------------------

    def begin(self) -> None:
        if self.ended_in_generation:
            self._release_followers()
            return
        top = self.plan.previous_top
        if top is not None:
            self.plan = replace(
                self.plan,
                stop_below=parse_time(self.previous.get("stop_below")),
                recheck_from=parse_time(self.previous.get("recheck_from")),
            )
            self.planned = True
            head, tail = self.plan.resumed_chains(self.previous_down_to or top)
            # A position kept by a meta-inbox that kept cursors (`after`) is not followed:
            # the tail starts from the head and skips what was done.
            self.tail = _Chain(self.previous.get("next"), tail)
            self.chains = [self.tail]
            if not self.reader.resumed:
                self.head = _Chain(None, head)
                self.chains.insert(0, self.head)
        else:
            self.chains = [self.tail]
        for chain in self.chains:
            self._list_next(chain, chain.first_url)

    def first_time(self, chain: _Chain) -> bool:
        """Threads this folder never read: a backfill's, below what an interrupted pass did."""
        return not self.plan.reconcile and self.watermark is None and chain is self.tail

    # -- listing calls --------------------------------------------------------------------

    def _list(self, chain: _Chain, next_url: str | None) -> None:
        kept = next_url is not None and next_url == chain.first_url and not chain.pages
        try:
            listing = self.reader.api.list_threads(
                self.page,
                self.platform,
                self.folder,
                next_url=next_url,
                details_limited=self.details_limited,
                upcoming=chain.upcoming,
                user_id=self.user_id,
            )
        except GraphError as error:
            if not _local(error):
                raise
            self._release_followers()
            if kept:
                self._distrusted(chain, error.first_line)
            elif next_url is not None and _refused_cursor(error):
                self._expired(chain, error)
            elif self.folder == LEGACY_ARCHIVE and error.kind is ErrorKind.INVALID_PARAMETER:
                self._without_legacy_archive(error)
            else:
                self.fail(error)
            return
        self._release_followers()
        if listing.note:
            self.reader.report.warn(listing.note)
        if kept and not listing.threads:
            self._distrusted(chain, "an empty page")
            return
        before = chain.last
        if not listing.threads and not listing.next_url and next_url and before is not None:
            self.reader.submit_listing(
                self.page, lambda: self._confirm_end(chain, next_url, listing, before)
            )
            return
        self._take(chain, next_url, listing)

    def _confirm_end(
        self, chain: _Chain, next_url: str, listing: Listing, before: TakenPage
    ) -> None:
        """An empty page reached by a cursor Graph gave this run: the folder's end, or the
        cursor expired on the way (`folder_ends_below`)."""
        try:
            ended = self.reader.api.folder_ends_below(
                self.page, self.platform, self.folder, before, user_id=self.user_id
            )
        except GraphError as error:
            if not _local(error):
                raise
            if _refused_cursor(error):
                self._expired(chain, error)
            else:
                self.fail(error)
            return
        if ended:
            self._take(chain, next_url, listing)
        else:
            self._expired(chain)

    def _expired(self, chain: _Chain, refusal: GraphError | None = None) -> None:
        """A cursor of this run that Graph refused or answered with nothing: the chain lists
        the folder from its head again, reading what it had not read (`_Chain.again`). A chain
        that keeps losing its cursor fails the folder, whose state stays where the last
        checkpoint left it."""
        chain.restarts += 1
        if chain.restarts > _RESTARTS:
            self.fail(
                refusal
                or GraphError(
                    f"its listing cursors expired {chain.restarts} times before its end; "
                    "the next run goes on from the last checkpoint",
                    path=f"/{self.page.id}/conversations",
                )
            )
            return
        log.info("%s: a listing cursor expired: listing the folder from its head again", self.key)
        chain.again = True
        # What is known of the head's size, not of the threads past where the cursor was.
        chain.upcoming = self.head_counts
        self._list_next(chain, None)

    def _take(self, chain: _Chain, next_url: str | None, listing: Listing) -> None:
        """Hand a listing page's threads to their reads, and ask the next page."""
        entry = _ListingPage(
            next_url=without_secrets(listing.next_url) if listing.next_url else None,
            held=listing.messages,
        )
        if listing.threads:
            oldest = min(filter(None, map(_updated, listing.threads)), default=None)
            chain.last = TakenPage.of(next_url, listing.threads, oldest)
        self.reader.hold(entry.held, len(listing.threads))
        with self.lock:
            self.details_limited = listing.details_limited
            chain.upcoming = listing.upcoming
            if listing.counts and chain is not self.closing and not chain.pages:
                # What the folder's head held, to size the closing chain's first listing.
                self.head_counts = listing.counts
            if not self.planned:
                self.planned = True
                newest = max(filter(None, map(_updated, listing.threads)), default=None)
                self.plan = self.plan.planned(newest, self.read_plan.recheck_window)
            chain.pages.append(entry)
        stop = False
        threads, listing.threads = listing.threads[::-1], []
        while threads:
            # Popped, so that a thread handed over is not held by its listing page meanwhile.
            raw = threads.pop()
            updated = _updated(raw)
            how = self.plan.decide(updated, chain.role)
            # A page spans the threads this pass takes: one it skips was done by an earlier
            # pass, or moved above a pass resumed without its head since, and must not raise
            # the pass's top or watermark, below which the next pass would not look for it.
            if updated is not None and how is not Skip.SKIP:
                entry.newest = max(entry.newest or updated, updated)
                entry.oldest = min(entry.oldest or updated, updated)
            if how is Skip.STOP:
                stop = True
            elif isinstance(how, ReadHow) and (read := self._reads(chain, raw, updated, how)):
                with self.lock:
                    entry.pending += 1
                _ThreadRead(self, chain, entry, raw, read).begin()
        goes_on = entry.next_url is not None and entry.next_url != next_url and not stop
        with self.lock:
            if not goes_on:
                chain.ended = True
            elif len(chain.pages) - chain.handed_over >= LOOKAHEAD:
                chain.paused_at = entry.next_url
            else:
                self._list_next(chain, entry.next_url)
        self.handed_over(chain, entry)

    def _reads(
        self, chain: _Chain, raw: dict[str, Any], updated: datetime | None, how: ReadHow
    ) -> ReadHow | None:
        """How the pass reads a thread it decided to read, if it does. A thread another folder
        of the run took is that folder's. A chain that lists again what the run listed reads
        a thread it met only for the messages it got since (it moved up), from a lookback
        below where it was met: a later thread's move can raise the watermark above them."""
        earlier = self.reader.sighting(
            self.page, self.platform, str(raw["id"]), self.folder, updated
        )
        if earlier is None:
            return how
        folder, then = earlier
        if folder != self.folder:
            return None
        if not chain.again:
            return how
        if then is None or not _newer(updated, then):
            return None
        floor = then - self.plan.lookback
        return ReadHow(
            floor=max(floor, self.plan.start) if self.plan.start else floor, recheck=False
        )

    def _list_next(self, chain: _Chain, next_url: str | None) -> None:
        self.reader.submit_listing(self.page, lambda: self._list(chain, next_url))

    def _distrusted(self, chain: _Chain, answer: str) -> None:
        """A position kept from an earlier run that Graph refused or answered with nothing: the
        pass goes on from the head of the folder, skipping what it had done."""
        log.info("%s: the listing position kept from the last run got %s", self.key, answer)
        chain.first_url = None
        self._list_next(chain, None)

    def _release_followers(self) -> None:
        with self.lock:
            followers, self.followers = self.followers, []
        for walk in followers:
            walk.begin()

    def _without_legacy_archive(self, error: GraphError) -> None:
        """Graph refuses the tag that lists threads archived before mid-2018 (a Graph that has
        no such archive, or no longer takes the parameter): said once, and the Page goes on as
        if the folder were empty, but for a reconcile, which marks none of its threads deleted.
        No state is kept, so a later run asks again."""
        with self.lock:
            self.over = True
        self.reader.report.not_listed(self.page.id, self.platform, self.folder)
        self.reader.report.warn(
            f"Page {self.page.id} ({self.page.name}): Graph refuses `tags={LEGACY_ARCHIVE_TAG}` "
            f"({error.text}): threads archived before mid-2018 are not exported"
        )
        self.reader.walk_done(self.page, self.platform)

    def fail(self, error: GraphError) -> None:
        """Graph refuses this folder's listing: the folder is not read this run (its state
        stays), the others go on."""
        with self.lock:
            if self.over:
                return
            self.over = True
        failure = FolderFailed(self.page.id, self.page.name, self.platform, self.folder, error)
        self.reader.report.folder_failed(failure)

    # -- handing over ---------------------------------------------------------------------

    def handed_over(self, chain: _Chain, entry: _ListingPage) -> None:
        """A thread of `entry` is on the queue whole (or the page was sorted): move the
        frontier, and put the folder's progress on the queue when it moved."""
        with self.lock:
            entry.pending -= 1
            emptied = not entry.pending
        if emptied:
            self.reader.release(entry.held)
        with self.lock:
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
            if finished and self.closing is None and (top := self._closing_top()):
                log.info("%s: listing its head again, for threads that moved above it", self.key)
                self.closing = _Chain(None, Chain(closes=top))
                self.closing.upcoming = self.head_counts
                self.chains.append(self.closing)
                self._list_next(self.closing, None)
                finished = False
            # A pass's progress is its tail's: a run stopped while it closes goes on from there.
            closing = self.closing is not None and not finished
            state = None if self.user_id or closing else self._state(finished)
            if state is not None:
                self.reader.put(FolderProgress(self.key, state))
            if finished:
                self.over = True
        if finished:
            self.reader.walk_done(self.page, self.platform)

    def _closing_top(self) -> datetime | None:
        """The top of a pass that listed more than one page: a thread listed under the page
        being asked could move above the pass meanwhile, unlisted."""
        pages = [page for chain in self.chains for page in chain.pages]
        if len(pages) < 2:
            return None
        return max(filter(None, [*(p.newest for p in pages), self.plan.previous_top]), default=None)

    def _state(self, finished: bool) -> dict[str, Any] | None:
        if finished:
            seen = [page.newest for chain in self.chains for page in chain.pages]
            tops = [*seen, self.plan.previous_top, self.watermark]
            newest = max(filter(None, tops), default=None)
            return {"watermark": _iso(newest), "pass": None, "generation": self.reader.generation}
        if self.plan.reconcile:
            return None
        done = self.tail.pages[: self.tail.handed_over]
        previous = self.previous
        tops = [*(page.newest for page in done), self.plan.previous_top]
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
                "next": done[-1].next_url if done else previous.get("next"),
                "stop_below": _iso(self.plan.stop_below),
                "recheck_from": _iso(self.plan.recheck_from),
            },
        }


class _ThreadRead:
    """One thread: its nested messages, older pages while needed, the rest of long attachment
    lists. Handed over in parts, one per page of messages, so no thread is held whole.

    Each call is a task of its own, and a call comes first in its task: a task put back in
    its lane (a throttle) runs again from its start without doing anything twice."""

    def __init__(
        self,
        walk: _FolderWalk,
        chain: _Chain,
        entry: _ListingPage,
        raw: dict[str, Any],
        how: ReadHow,
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
        # Pages of messages asked for (`page_of`).
        self.followed: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        self.skipped = False  # Graph stopped answering for it: what was read is loaded
        # The position (None: the newest) and size of the last page taken that held messages,
        # the oldest message taken, and, once Graph's cursors expired and the thread is read
        # from its start again, the oldest handed over before: only older ones are new.
        self.before: TakenPage | None = None
        self.oldest: datetime | None = None
        self.handed_down_to: datetime | None = None
        self.restarts = 0

    def begin(self) -> None:
        self._take(self.nested, None)

    def _take(self, listing: dict[str, Any], at: str | None) -> None:
        """Hand over a page of messages (nested or older; `at` is the `next` that gave it) and
        ask for what is still needed."""
        messages = listing.get("data") or []
        older = next_page_url(listing)
        before = self.before
        if not messages and older is None and at is not None and before is not None:
            self.reader.submit(self.walk.page, lambda: self._confirm_end(before))
            return
        times = [parse_time(message.get("created_time")) for message in messages]
        if messages:
            low = min(filter(None, times), default=None)
            self.before = TakenPage.of(at, messages, low)
            self.oldest = min(filter(None, (low, self.oldest)), default=None)
        kept: list[tuple[dict[str, Any], datetime | None]] = []
        unfinished: list[tuple[dict[str, Any], datetime | None, str]] = []
        below_floor = False
        floor, handed = self.how.floor, self.handed_down_to
        for message, created in zip(messages, times, strict=True):
            if created is None:
                # Graph documents it on every message: without it, no place in time. Not
                # listed either, so the thread is not taken as read whole (by a reconcile).
                self._skip("Graph gave no created_time", str(message.get("id")))
                self.skipped = True
                continue
            if floor is not None and created < floor:
                below_floor = True
                continue
            if handed is not None and created > handed:
                continue
            attachments = message.get("attachments")
            following = attachments_go_on(attachments) if isinstance(attachments, dict) else None
            if following is None:
                kept.append((message, created))
            elif not self.how.recheck:
                unfinished.append((message, created, following))
            # A rechecked message whose attachments go on would lose the rest: not merged again.
        # A page may hold fewer messages than asked, none among them, and still have a `next`;
        # one whose `next` asks for a page asked already would never end.
        wants_more = older is not None and page_of(older) not in self.followed
        wants_more = wants_more and not below_floor and not self.how.recheck
        listed: list[tuple[str, datetime]] = []
        if self.walk.read_plan.mode is Mode.RECONCILE:
            listed = [(str(m["id"]), t) for m, t in zip(messages, times, strict=True) if t]
        self._settle(kept, listed, new_work=len(unfinished) + wants_more)
        for message, created, following in unfinished:
            self.reader.submit(
                self.walk.page,
                lambda m=message, t=created, f=following: self._more_attachments(
                    m, t, _Attachments.nested(m["attachments"]), f
                ),
            )
        if wants_more:
            assert older is not None
            self.followed.add(page_of(older))
            self.reader.submit(self.walk.page, lambda: self._older(older))

    def _confirm_end(self, before: TakenPage) -> None:
        """An empty last page reached by a cursor: the thread's end, or the cursor expired on
        the way (`messages_end_below`), or was refused."""
        thread = str(self.conversation.get("id"))
        try:
            ended = self.reader.api.messages_end_below(self.walk.page, thread, before)
        except (GraphError, GraphUnavailable) as error:
            if not self._ends_here(error):
                raise
            if not _refused_cursor(error):
                self._skip(error, None)
                self._settle([], [], new_work=0)
                return
            ended = False
        if ended:
            self._settle([], [], new_work=0)
        else:
            self._again(None)

    def _again(self, refusal: GraphError | GraphUnavailable | None) -> None:
        """Graph's cursor of the thread's messages expired (answered with nothing, or refused):
        the thread is read from its start again, in a task of its own (a call comes first in
        its task), handing over only what is older than what it handed; one that keeps losing
        its cursor is skipped."""
        if self.restarts == _RESTARTS:
            self._skip(refusal or f"its message cursors expired {_RESTARTS + 1} times", None)
            self._settle([], [], new_work=0)
            return
        self.restarts += 1
        log.info(
            "thread %s: a cursor of its messages expired: read from its start again",
            self.conversation.get("id"),
        )
        self.handed_down_to, self.before = self.oldest, None
        self.followed.clear()  # Graph may give the cursors of before again
        # A refusal taken for Instagram's withheld details may have been the expiry's.
        self.details = not self.walk.details_limited
        self.reader.submit(self.walk.page, lambda: self._older(None))

    def _older(self, url: str | None) -> None:
        api, page = self.reader.api, self.walk.page
        thread = str(self.conversation.get("id"))
        try:
            try:
                listing = api.older_messages(page, thread, url, details=self.details)
            except GraphError as error:
                instagram = self.walk.platform == "instagram"
                if error.kind not in DETAILS_REFUSALS or not (self.details and instagram):
                    raise
                # Instagram withholds details of its older messages: keep what Graph lists of
                # them, ids and times, here and further back.
                self.details = False
                listing = api.older_messages(page, thread, url, details=False)
        except (GraphError, GraphUnavailable) as error:
            if not self._ends_here(error):
                raise
            if url is not None and _refused_cursor(error):
                self._again(error)  # a cursor refused, as the notes allow
                return
            self._skip(error, None)
            self._settle([], [], new_work=0)
            return
        self._take(listing, url)

    def _more_attachments(
        self, message: dict[str, Any], created: datetime | None, read: _Attachments, url: str | None
    ) -> None:
        """One more page of a message's attachments (None: its first, the list read again);
        the message is handed over with all of them once its list is complete. An empty last
        page is told from an expired cursor, as a thread's (`_ThreadRead._confirm_end`)."""
        message_id = str(message.get("id"))
        try:
            more = self.reader.api.more_attachments(self.walk.page, message_id, url)
        except (GraphError, GraphUnavailable) as error:
            if not self._ends_here(error):
                raise
            if url is not None and _refused_cursor(error):
                self._attachments_again(message, created, read, error)
                return
            self._skip(error, message_id)
            more = {}
        data = more.get("data") or []
        if url is not None and more and not data and next_page_url(more) is None:
            self.reader.submit(
                self.walk.page, lambda: self._attachments_end(message, created, read)
            )
            return
        items = [*read.items, *data]
        following = attachments_go_on(more) if more else None
        if following is not None and following != url:
            going_on = _Attachments(items, TakenPage.of(url, data), read.restarts)
            self.reader.submit(
                self.walk.page,
                lambda: self._more_attachments(message, created, going_on, following),
            )
            return
        self._settle_message(message, created, items)

    def _attachments_end(
        self, message: dict[str, Any], created: datetime | None, read: _Attachments
    ) -> None:
        message_id = str(message.get("id"))
        try:
            ended = self.reader.api.attachments_end_below(self.walk.page, message_id, read.before)
        except (GraphError, GraphUnavailable) as error:
            if not self._ends_here(error):
                raise
            if not _refused_cursor(error):
                self._skip(error, message_id)
            ended = not _refused_cursor(error)
        if ended:
            self._settle_message(message, created, read.items)
        else:
            self._attachments_again(message, created, read, None)

    def _attachments_again(
        self,
        message: dict[str, Any],
        created: datetime | None,
        read: _Attachments,
        refusal: GraphError | GraphUnavailable | None,
    ) -> None:
        """A cursor of the message's attachments expired: its list is read again from its
        start, in a task of its own; one that keeps losing its cursor is handed over with what
        was read, and counted skipped."""
        if read.restarts == _RESTARTS:
            expired = f"its attachment cursors expired {_RESTARTS + 1} times"
            self._skip(refusal or expired, str(message.get("id")))
            self._settle_message(message, created, read.items)
            return
        again = _Attachments([], read.before, read.restarts + 1)
        self.reader.submit(
            self.walk.page, lambda: self._more_attachments(message, created, again, None)
        )

    def _settle_message(
        self, message: dict[str, Any], created: datetime | None, attachments: list[dict[str, Any]]
    ) -> None:
        """A message whose attachment list was followed, handed over with what it holds."""
        self._settle([({**message, "attachments": {"data": attachments}}, created)], [], new_work=0)

    def _ends_here(self, error: GraphError | GraphUnavailable) -> bool:
        """Whether the failure is this thread's alone, to skip: Graph's answer about its
        object, or calls about it Graph kept failing where it answered the run's others
        (`UNAVAILABLE_SKIPS` of them)."""
        if isinstance(error, GraphError):
            return _local(error)
        return error.others_answered and self.reader.skips_unavailable()

    def _skip(self, error: GraphError | GraphUnavailable | str, message_id: str | None) -> None:
        self.skipped = self.skipped or message_id is None
        walk = self.walk
        self.reader.report.skip(
            Skipped(
                walk.page.id,
                walk.platform,
                str(self.conversation.get("id")),
                message_id,
                error if isinstance(error, str) else str(error).splitlines()[0],
            )
        )

    def _settle(
        self,
        messages: list[tuple[dict[str, Any], datetime | None]],
        listed: list[tuple[str, datetime]],
        *,
        new_work: int,
    ) -> None:
        """One unit of work done, `new_work` started: hand over what it read. The part after
        which nothing is pending is the thread's last, and moves its folder's frontier."""
        with self.lock:
            self.pending += new_work - 1
            last = self.pending == 0
        walk = self.walk
        loadable = [(m, t) for m, t in messages if self._loadable(m, t)]
        part = ThreadPart(
            page=walk.page,
            platform=walk.platform,
            folder=walk.folder,
            conversation=self.conversation,
            messages=[m for m, _ in loadable],
            rechecked=self.how.recheck,
            final=last,
            complete=last and self.how.floor is None and not self.how.recheck and not self.skipped,
            listed=listed,
            times=[t for _, t in loadable],
        )
        if part.messages or part.listed or last:
            self.reader.put(part)
        if last:
            walk.handed_over(self.chain, self.entry)

    def _loadable(self, message: dict[str, Any], created: datetime | None) -> bool:
        """Every message with details; one without only where no copy can exist already."""
        if has_details(message) or self.first_time:
            return True
        loaded = self.walk.loaded_max
        return loaded is None or (created is not None and created > loaded)


@dataclass(frozen=True)
class _Attachments:
    """A message's attachments read so far, the last page that held some, and how often its
    list was read again from its start."""

    items: list[dict[str, Any]]
    before: TakenPage
    restarts: int = 0

    @classmethod
    def nested(cls, attachments: dict[str, Any]) -> _Attachments:
        """What the message's own page holds: its attachment list's first page."""
        items = list(attachments.get("data") or [])
        return cls(items, TakenPage.of(None, items))


def _updated(raw: dict[str, Any]) -> datetime | None:
    return parse_time(raw.get("updated_time"))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
