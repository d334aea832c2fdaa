"""The emulator's HTTP face: routing, tokens, paging, errors, usage headers, throttles, faults.

Requests are served concurrently. The emulator's lock guards the inbox and is held only to look
things up and to take the slice of a list that an answer shows; rendering and JSON encoding happen
outside it (the inbox replaces nested values instead of editing them, see `inbox`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import math
import random
import re
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .fields import (
    Field,
    FieldsSyntaxError,
    FieldsValueError,
    format_fields,
    parse_fields,
    render,
    validate,
)
from .inbox import (
    FOLDERS,
    LEGACY_ARCHIVE,
    LEGACY_ARCHIVE_TAG,
    STALE_REQUEST_AGE,
    Activity,
    Conversation,
    Message,
    Page,
    User,
    add_activity,
    digest,
    generate_inbox,
    iso,
    message_key,
)
from .user_texts import USER_TEXTS, user_text

FACEBOOK, INSTAGRAM = (
    "facebook",
    "instagram",
)  # the two hosts: graph.facebook.com, graph.instagram.com
DEFAULT_VERSION = "v25.0"
DEFAULT_LIMIT = 25
PLATFORMS = ("messenger", "instagram")
JSON_TYPE = "application/json; charset=UTF-8"
VERSION_PREFIX = re.compile(r"^/(v\d+\.\d+)(?=/|$)")
BAD_GATEWAY = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
# A call may find the token it needs half refilled: a client that paces its calls at its own side
# sees them arrive with scheduling jitter, up to half an interval early. Never a whole token, so
# a burst one call over the bucket is always refused.
JITTER_TOKENS = 0.5

USER_DEFAULT = parse_fields("id,name")
PAGE_DEFAULT = parse_fields("id,name")
INSTAGRAM_USER_DEFAULT = parse_fields("id,username")
ACCOUNT_DEFAULT = parse_fields("id,name,access_token,tasks")
CONVERSATION_DEFAULT = parse_fields("id,updated_time")
MESSAGE_DEFAULT = parse_fields("id,created_time")
ATTACHMENT_DEFAULT = parse_fields(
    "id,mime_type,name,size,image_data,video_data,file_url,generic_template"
)

RATE_LIMIT_DOC = (
    "For more info, please refer to "
    "https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
)
THROTTLES = {
    "messenger": (
        80006,
        "(#80006) There have been too many messenger api calls to this Page account. "
        f"Wait a bit and try again. {RATE_LIMIT_DOC}",
    ),
    "instagram": (
        80002,
        "(#80002) There have been too many calls to this Instagram account. "
        f"Wait a bit and try again. {RATE_LIMIT_DOC}",
    ),
    "pages": (32, "(#32) Page request limit reached"),
}
EXPIRED_TOKENS = {
    458: "Error validating access token: The user has not authorized application.",
    460: "Error validating access token: The session has been invalidated because the user "
    "changed their password or Facebook has changed the session for security reasons.",
    463: "Error validating access token: Session has expired on Monday, 01-Jun-26 05:00:00 PDT. "
    "The current time is Monday, 01-Jun-26 05:00:01 PDT.",
    467: "Error validating access token: The session is invalid because the user logged out.",
}
DELETED_MESSAGE = "This Message has been deleted by the user or the business."
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006})
APP_LIMIT_REACHED = "(#4) Application request limit reached"
UNKNOWN_ERROR = "An unknown error occurred"
# What a scripted failure (`fail_follow_ups`, `fail_listing`) says when the test gives no text.
SCRIPTED_MESSAGES = {9000001: DELETED_MESSAGE}

Key = tuple[Any, ...]
Target = User | Page | Conversation | Message | None
T = TypeVar("T")


# How often a page whose `next` repeats it (`Faults.older_pages`) is answered so before its
# `next` goes on: a client that follows it again and again still ends, having asked it this often.
REPEATS = 5


@dataclass
class Faults:
    server_error_rate: float = 0.0
    unknown_error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    non_json_rate: float = 0.0
    short_page_rate: float = 0.0
    trailing_empty_page: bool = True
    max_response_bytes: int | None = None
    # Code 1 is both "reduce the amount of data" and "unknown error" (the notes): False
    # refuses an answer over `max_response_bytes` with the latter's text.
    heavy_answer_says_so: bool = True
    # Graph's other possible answer for Instagram messages older than a thread's newest 20
    # (the notes leave it open): a list asking for their details fails with 9000001 instead
    # of leaving the details out; with `instagram_details_code`, the code the notes leave open.
    instagram_details_error: bool = False
    instagram_details_code: int = 9000001
    # What an expired cursor (see `Emulator.expire_cursors`) gets: error 100, or, as Graph may
    # also do (the notes leave it open), the list again from its start, or an empty page with
    # nothing to follow.
    cursor_expiry: Literal["error", "restart", "empty"] = "error"
    # Instagram does not list Requests-folder threads inactive for 30 days.
    instagram_hides_stale_requests: bool = False
    # Error envelopes also carry `error_user_title` and `error_user_msg` in this language, as
    # Graph writes them for the token's owner (see `user_texts`); None: neither is sent.
    error_language: str | None = None
    # Attachment lists show at most this many attachments a page, whatever the limit asked:
    # a client can then not tell a complete list from its count. At least 2, so that a page
    # that leaves attachments out always has distinct cursors.
    attachments_page_cap: int | None = None
    # Instagram listings ignore `folder` (the notes leave open whether Graph honours it there):
    # every folder, and no folder, lists all of the account's threads.
    instagram_ignores_folder: bool = False
    # Graph refuses `tags` (the listing of Messenger threads archived before mid-2018) with 100.
    refuses_tags: bool = False
    # A thread listing's page after the first begins with the thread the page before ended
    # with, as a cursor by offset shows it when a thread above moved up meanwhile.
    repeated_edge: bool = False
    # A thread's messages reached by a cursor: "empty_first", its first such page holds no
    # messages and has a `next` to what it would have held (a page may hold fewer items than
    # its limit and still have `next`); "next_repeats", a page's `next` asks for that page
    # again (its cursor), the first `REPEATS` times it is asked.
    older_pages: Literal["as_asked", "empty_first", "next_repeats"] = "as_asked"
    # A folder's listing pages reached by a cursor, as `older_pages` "empty_first".
    listing_pages_empty_first: bool = False

    def __post_init__(self) -> None:
        if self.error_language is not None and self.error_language not in USER_TEXTS:
            languages = ", ".join(USER_TEXTS)
            raise ValueError(f"error_language must be one of {languages}: {self.error_language}")
        if self.attachments_page_cap is not None and self.attachments_page_cap < 2:
            raise ValueError(f"attachments_page_cap must be 2 or more: {self.attachments_page_cap}")


@dataclass
class Limits:
    max_page_size: int = 100
    calls_per_window: int | None = None
    window_seconds: float = 60.0
    # Per Page, as Graph counts the Conversations API: a token bucket refilled at `per_second`
    # calls a second that holds `burst` calls (by default the calls of one second).
    per_second: float | None = None
    burst: int | None = None
    # Whether a call the rolling window refuses still takes a place in it: a client that keeps
    # calling while throttled then stays throttled.
    count_refused: bool = False


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str]
    token_kind: str
    status: int
    error_code: int | None
    object_id: str | None
    page_id: str | None = None  # the Page whose token made the call
    host: str = FACEBOOK  # the host that answered it
    # On the emulator's clock: when the call was let in, and when its answer was ready.
    arrived: float = 0.0
    answered: float = 0.0


class GraphError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        status: int = 400,
        transient: bool = False,
        error_type: str = "OAuthException",
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.status = status
        self.transient = transient
        self.error_type = error_type
        self.kind = kind  # what the code does not tell apart, for the texts written for people

    def envelope(self, trace_id: str, language: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.transient
        if language is not None:
            title, text = user_text(language, self.code, self.subcode, self.kind)
            error |= {"error_user_title": title, "error_user_msg": text}
        error["fbtrace_id"] = trace_id
        return {"error": error}


class _ExpiredCursor(Exception):
    """A cursor from before `Emulator.expire_cursors`, when such cursors get an empty page."""


def _missing(object_id: str) -> GraphError:
    return GraphError(
        100,
        f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be loaded "
        "due to missing permissions, or does not support this operation. Please read the Graph "
        "API documentation at https://developers.facebook.com/docs/graph-api",
        subcode=33,
        error_type="GraphMethodException",
    )


def _page_token_required() -> GraphError:
    return GraphError(210, "(#210) A page access token is required to request this resource.")


def _bad_cursor() -> GraphError:
    return GraphError(100, "(#100) Invalid cursor", kind="invalid_cursor")


def _unexpected() -> GraphError:
    message = "An unexpected error has occurred. Please retry your request later."
    return GraphError(2, message, status=500, transient=True)


def _too_much_data() -> GraphError:
    message = "Please reduce the amount of data you're asking for, then retry your request"
    return GraphError(1, message, status=500, kind="reduce_data")


def _scripted(
    code: int, subcode: int | None, message: str | None, error_type: str, status: int
) -> Callable[[], GraphError]:
    """A failure a test asked for; a new exception each time, as calls may raise it at once."""
    text = SCRIPTED_MESSAGES.get(code, f"(#{code}) An unknown error has occurred.")
    return functools.partial(
        GraphError,
        code,
        text if message is None else message,
        subcode=subcode,
        status=status,
        error_type=error_type,
    )


def _load(percent: int) -> dict[str, int]:
    """The usage figures of `X-App-Usage` (and of each Page's business use case)."""
    return {"call_count": percent, "total_cputime": percent // 2, "total_time": percent * 3 // 4}


@dataclass
class _Request:
    method: str
    path: str  # without the version prefix
    raw_path: str  # as sent, so that `next` URLs keep the caller's version
    version: str
    query: dict[str, str]  # every query parameter but access_token
    token: str | None
    token_kind: str
    page: Page | None  # the Page a Page token belongs to
    head: str
    rest: list[str]
    target: Target
    host: str = FACEBOOK
    short_page: float | None = None  # share of a page kept when the short-page fault fires
    headers: dict[str, str] = field(default_factory=dict)
    nested_queries: dict[int, str] = field(default_factory=dict)  # by id() of the selection
    # What the answer shows, for the changes due once it has been built (`delete_after_listing`,
    # `unsend_after_listing`): listed threads, and messages of message lists.
    shown_threads: list[Conversation] = field(default_factory=list)
    shown_messages: list[Message] = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        return {k: v for k, v in self.query.items() if k != "appsecret_proof"}


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    error_code: int | None = None
    drop: bool = False
    truncate: bool = False


@dataclass(frozen=True)
class _Window(Generic[T]):
    entries: list[tuple[Key, T]]  # newest first
    limit: int
    more_before: bool
    more_after: bool


@dataclass(frozen=True)
class _Usage:
    percent: int
    regain_minutes: int
    admitted: bool


@dataclass
class _Bucket:
    """The calls a Page may make now: refilled at `rate` a second, up to `capacity`."""

    tokens: float
    at: float
    rate: float = 0.0
    capacity: int = 1

    calls: deque[float] = field(default_factory=deque)  # admitted in the last hour

    def used_percent(self, now: float) -> int:
        """The share of an hour's allowance at this rate used in the last hour. Graph's usage
        headers count a rolling hour: a client at exactly the per-second rate reads low
        percents for a long while, not 100 % after every burst of two calls."""
        while self.calls and self.calls[0] <= now - 3600:
            self.calls.popleft()
        allowance = max(self.capacity, self.rate * 3600)
        return min(100, math.ceil(100 * len(self.calls) / allowance))


class _Meter:
    """Call budgets per Page, the source of usage headers and throttling errors: a token bucket
    (`Limits.per_second`, `Limits.burst`) and a rolling window (`Limits.calls_per_window`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}  # admitted (and counted refused) calls
        self._buckets: dict[str, _Bucket] = {}
        self._hour: dict[str, deque[float]] = {}  # admitted calls of the last hour, for usage

    def admit(self, page_id: str, limits: Limits) -> _Usage:
        with self._lock:
            now = self._clock()
            window = self._calls.setdefault(page_id, deque())
            while window and window[0] <= now - limits.window_seconds:
                window.popleft()
            budget = limits.calls_per_window
            bucket = self._refilled(page_id, limits, now)
            # Graph reports whole minutes, so waits under a minute read as 0.
            if bucket is not None and bucket.tokens + JITTER_TOKENS < 1:
                wait = (1 - bucket.tokens) / bucket.rate
                return _Usage(100, int(wait // 60), admitted=False)
            if budget is not None and len(window) >= budget:
                if limits.count_refused:
                    window.append(now)
                wait = window[0] + limits.window_seconds - now
                return _Usage(100, int(wait // 60), admitted=False)
            window.append(now)
            percent = 0
            if budget and limits.window_seconds < 60:
                percent = self._hourly_percent(page_id, budget, limits, now)
            elif budget:
                percent = min(100, 100 * len(window) // budget)
            if bucket is not None:
                bucket.tokens -= 1
                bucket.calls.append(now)
                percent = max(percent, bucket.used_percent(now))
            return _Usage(percent, 0, admitted=True)

    def _hourly_percent(self, page_id: str, budget: int, limits: Limits, now: float) -> int:
        """Usage of a per-second limit as Graph's headers count it, over a rolling hour: a
        window of a second read as 100 % after every second call would tell a client to stop
        for minutes. Longer windows report their own share, as the tests of throttling use."""
        hour = self._hour.setdefault(page_id, deque())
        hour.append(now)
        while hour[0] <= now - 3600:
            hour.popleft()
        allowance = budget * 3600 / limits.window_seconds
        return min(100, math.ceil(100 * len(hour) / allowance))

    def _refilled(self, page_id: str, limits: Limits, now: float) -> _Bucket | None:
        rate = limits.per_second
        if not rate:
            return None
        capacity = limits.burst or max(1, math.ceil(rate))
        bucket = self._buckets.setdefault(page_id, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
        bucket.at, bucket.rate, bucket.capacity = now, rate, capacity
        return bucket


class _Traffic:
    """Calls in flight (from arrival to the end of their answer) and their peaks, and the gate
    that holds new calls on arrival (`Emulator.hold_after`)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._flying: Counter[str | None] = Counter()  # by the Page of the token
        self._peak = 0
        self._peaks: dict[str, int] = {}
        self._peak_pages = 0
        self._passes: int | None = None  # calls let through before the gate closes; None: open
        self._waiting = 0

    @contextmanager
    def flight(self, page_id: str | None) -> Iterator[None]:
        with self._changed:
            if self._passes == 0:
                self._waiting += 1
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._passes != 0)
                self._waiting -= 1
            if self._passes is not None:
                self._passes -= 1
            self._flying[page_id] += 1
            self._peak = max(self._peak, self._flying.total())
            if page_id is not None:
                self._peaks[page_id] = max(self._peaks.get(page_id, 0), self._flying[page_id])
            self._peak_pages = max(self._peak_pages, self._pages_flying())
        try:
            yield
        finally:
            with self._changed:
                self._flying[page_id] -= 1
                if not self._flying[page_id]:
                    del self._flying[page_id]
                self._changed.notify_all()

    def _pages_flying(self) -> int:
        return sum(1 for page_id in self._flying if page_id is not None)

    def peak(self, page_id: str | None) -> int:
        with self._changed:
            return self._peak if page_id is None else self._peaks.get(page_id, 0)

    def peak_pages(self) -> int:
        with self._changed:
            return self._peak_pages

    def reset(self) -> None:
        """Peaks start again from the calls in flight now."""
        with self._changed:
            self._peak = self._flying.total()
            self._peaks = {p: n for p, n in self._flying.items() if p is not None}
            self._peak_pages = self._pages_flying()

    def hold_after(self, count: int) -> None:
        with self._changed:
            self._passes = count
            self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self._passes = None
            self._changed.notify_all()

    def held(self) -> int:
        with self._changed:
            return self._waiting

    def wait_until_held(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._waiting >= count, timeout)

    def wait_until_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._flying, timeout)


def _cursor(epoch: int, key: Key) -> str:
    compact = json.dumps([epoch, *key], separators=(",", ":"))
    return base64.urlsafe_b64encode(compact.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, Key]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as err:
        raise _bad_cursor() from err
    if not (isinstance(decoded, list) and len(decoded) > 1):
        raise _bad_cursor()
    epoch, *key = decoded
    valid = type(epoch) is int and all(type(part) in (int, str) for part in key)
    if not valid:
        raise _bad_cursor()
    return epoch, tuple(key)


def _same(value: Any) -> Any:
    return value


def _window(
    items: Sequence[Any],
    limit: int,
    after: Key | None,
    before: Key | None,
    *,
    key: Callable[[Any], Key] = _same,
    value: Callable[[Any], T] = _same,
    lowest: int = 0,
    keep: float | None = None,
    narrowest: int = 1,
    repeated: bool = False,
) -> _Window[T]:
    """The page of `items` (sorted by ascending `key`, listed in reverse) that follows `after`
    or precedes `before`, found by bisection; `items[:lowest]` are not listed. A short page
    (`keep`, the share kept) still holds `narrowest` items when it can. `repeated`: a page
    that follows `after` begins with the item `after` names (when a page holds more than it).

    Cursors hold the key of the item they name, so a page resumes just past that item even when
    newer items were added at the head in between.
    """
    try:
        if before is not None and after is None:
            low = bisect_right(items, before, lowest, key=key)
            high = min(len(items), low + limit)
        elif after is not None:
            edge = bisect_right if repeated and limit > 1 else bisect_left
            high = edge(items, after, lowest, key=key)
            low = max(lowest, high - limit)
        else:
            high = len(items)
            low = max(lowest, high - limit)
    except TypeError as err:  # a cursor whose key does not compare with this list's keys
        raise _bad_cursor() from err
    if keep is not None and high - low > narrowest:
        low = high - max(narrowest, int((high - low) * keep))
    entries = [(key(item), value(item)) for item in reversed(items[low:high])]
    return _Window(entries, limit, more_before=high < len(items), more_after=low > lowest)


def _json_bytes(payload: Any) -> bytes:
    # Graph escapes non-ASCII characters (lone surrogates included) and slashes in its JSON;
    # clients must cope with both.
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def _object_id(target: Target) -> str | None:
    match target:
        case Page() | Conversation():
            return target.id
        case Message():
            return target.conversation_id
    return None


def _positional(items: Sequence[T]) -> list[tuple[int, T]]:
    """Items listed in the order given, as `(rank, item)` in ascending rank."""
    return [(-index, item) for index, item in reversed(list(enumerate(items)))]


def _rank(entry: tuple[int, Any]) -> Key:
    return (entry[0],)


def _ranked(entry: tuple[int, T]) -> T:
    return entry[1]


def _nested_query(request: _Request, selection: Field) -> str:
    """The query of a nested list's links but the cursor: the same for every node of an answer,
    so encoded once per answer."""
    query = {"access_token": request.token or ""}
    if selection.children:
        query["fields"] = format_fields(selection.children)
    if "appsecret_proof" in request.query:
        query["appsecret_proof"] = request.query["appsecret_proof"]
    query["limit"] = str(selection.limit or DEFAULT_LIMIT)
    return urlencode(query)


def _credentials(target: str, authorization: str | None) -> tuple[str, dict[str, str], str | None]:
    """The path, the query without the token, and the token (header or `access_token`)."""
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    token = query.pop("access_token", None)
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and credential:
        token = credential.strip()
    return url.path, query, token


class Emulator:
    """Meta's Graph API (Conversations API) for one deterministic inbox, served on 127.0.0.1.

    Tests also get the calls it answered and how many were in flight at once, a gate that holds
    calls on arrival, and changes to the inbox that Graph's `updated_time` does not show.
    """

    def __init__(
        self,
        seed: int = 7,
        scale: int = 1,
        faults: Faults | None = None,
        limits: Limits | None = None,
        latency: float = 0.0,
        *,
        port: int = 0,
        app_secret: str | None = None,
        pages: int = 3,
        latency_jitter: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` times call budgets and the app throttle: a test may pass its own."""
        self.inbox = generate_inbox(seed, scale, pages)
        self.faults = faults or Faults()
        self.limits = limits or Limits()
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.app_secret = app_secret
        self._seed = seed
        self._port = port
        self._lock = threading.RLock()
        self._rng = random.Random(f"faults:{seed}")
        self._rng_lock = threading.Lock()
        self._clock = clock
        self._meter = _Meter(clock)
        self._traffic = _Traffic()
        self._calls: list[Call] = []
        self._expired: dict[str, int] = {}
        self._revoked: dict[str, set[str]] = {}
        self._withheld: set[str] = set()
        self._delete_after_listing: set[str] = set()
        self._unsend_after_listing: set[str] = set()
        self._failing_threads: dict[str, Callable[[], GraphError]] = {}
        self._failing_listings: dict[tuple[str, str, str], Callable[[], GraphError]] = {}
        # (Page, platform, folder) → [pages reached by a cursor to wait, what happens then].
        self._when_listed: dict[tuple[str, str, str], list[tuple[int, Callable[[], None]]]] = {}
        self._repeated_next: Counter[tuple[str, str]] = Counter()  # see `Faults.older_pages`
        self._refused_fields: dict[str, set[str]] = {}  # Page id → conversation fields
        self._left_out: dict[str, set[str]] = {}  # message id → fields its answers leave out
        # See `fail_calls`: which calls, how often each path, and how often each failed.
        self._failing_calls: list[tuple[Callable[[str, dict[str, str]], bool], int]] = []
        self._failed_calls: Counter[tuple[int, str]] = Counter()
        self._expiring_on: list[Callable[[str, dict[str, str]], bool]] = []  # see below
        self._app_throttles: dict[str, float] = {}  # Page id → seconds, from its next call
        self._app_throttled_until: float | None = None
        self._cursor_epoch = 0
        inbox = self.inbox
        self._page_tokens = {
            p.access_token: p
            for p in [*inbox.pages, inbox.unmanaged_page, *inbox.instagram_accounts]
        }
        self._traces = itertools.count(1)
        self._server: _Server | None = None
        self._instagram_server: _Server | None = None
        # Kept after `stop`: calls released from the gate as it stops still build their links.
        self._base_url: str | None = None
        self._instagram_base_url: str | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._server = _Server(("127.0.0.1", self._port), self, FACEBOOK)
        self._base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._instagram_server = _Server(("127.0.0.1", 0), self, INSTAGRAM)
        self._instagram_base_url = f"http://127.0.0.1:{self._instagram_server.server_address[1]}"
        self._threads = [
            threading.Thread(
                target=functools.partial(server.serve_forever, poll_interval=0.05),
                name=f"graph-api-emulator-{server.host}",
                daemon=True,
            )
            for server in (self._server, self._instagram_server)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.release()
        for server in (self._server, self._instagram_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join()
        self._server = None
        self._instagram_server = None
        self._threads = []

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("start the emulator first")
        return self._base_url

    @property
    def instagram_base_url(self) -> str:
        """The Instagram API with Instagram Login (graph.instagram.com): Instagram User tokens
        only, as the Facebook host takes Facebook tokens only (190 for the other's)."""
        if self._instagram_base_url is None:
            raise RuntimeError("start the emulator first")
        return self._instagram_base_url

    @property
    def instagram_login_token(self) -> str:
        """The Instagram User token of the account without a Page."""
        return self.inbox.instagram_accounts[0].access_token

    @property
    def user_token(self) -> str:
        return self.inbox.user.access_token

    def page_token(self, page_id: str) -> str:
        page = self.inbox.page(page_id)
        if page is None:
            raise KeyError(page_id)
        return page.access_token

    # -- what happened ---------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        """Forget the calls so far, and start the in-flight peaks again."""
        with self._lock:
            self._calls.clear()
        self._traffic.reset()

    def peak_in_flight(self, page_id: str | None = None) -> int:
        """The most calls in flight at once: made with `page_id`'s token, or all of them."""
        return self._traffic.peak(page_id)

    @property
    def throttle_errors(self) -> Counter[str | None]:
        """Calls answered with a throttling code (4, 17, 32, 613, 800xx), by the Page whose token
        made them (None for other tokens)."""
        return Counter(call.page_id for call in self.calls if call.error_code in THROTTLE_CODES)

    def peak_pages_in_flight(self) -> int:
        """The most Pages with at least one call (made with their token) in flight at once."""
        return self._traffic.peak_pages()

    # -- the gate --------------------------------------------------------------------------

    def hold_after(self, count: int) -> None:
        """Let `count` more calls in, then hold every later one on arrival (neither in flight
        nor answered) until `release`."""
        self._traffic.hold_after(count)

    def release(self) -> None:
        self._traffic.release()

    def held(self) -> int:
        return self._traffic.held()

    def wait_until_held(self, count: int = 1, timeout: float = 30.0) -> bool:
        return self._traffic.wait_until_held(count, timeout)

    def wait_until_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no call is in flight. A client has its answer a moment before the
        emulator's handler counts the call as ended."""
        return self._traffic.wait_until_idle(timeout)

    # -- changes between runs --------------------------------------------------------------

    def add_activity(self, seed: int = 1) -> Activity:
        with self._lock:
            return add_activity(self.inbox, seed)

    def react(self, message_id: str, emoji: str, user_id: str | None = None) -> None:
        """A reaction by a participant (the first customer unless `user_id` says who)."""
        with self._lock:
            self.inbox.react(message_id, emoji, user_id)

    def unreact(self, message_id: str, user_id: str | None = None) -> None:
        """A participant takes their reaction back (the first customer unless `user_id` says)."""
        with self._lock:
            self.inbox.unreact(message_id, user_id)

    def customer_writes(self, conversation_id: str, text: str, created: int) -> str:
        """A new message from the thread's first customer, sent at `created` (Unix seconds);
        its id."""
        with self._lock:
            return self.inbox.customer_writes(conversation_id, text, created).id

    def edit_message(self, message_id: str, text: str) -> None:
        with self._lock:
            self.inbox.edit_message(message_id, text)

    def set_unread(self, conversation_id: str, count: int) -> None:
        with self._lock:
            self.inbox.set_unread(conversation_id, count)

    def set_can_reply(self, conversation_id: str, value: bool) -> None:
        with self._lock:
            self.inbox.set_can_reply(conversation_id, value)

    def move_thread(self, conversation_id: str, folder: str) -> None:
        """Archive (`page_done`) or move a thread without a new message."""
        with self._lock:
            self.inbox.move_thread(conversation_id, folder)

    def unsend(self, message_id: str) -> None:
        with self._lock:
            self.inbox.unsend(message_id)

    def delete_thread(self, conversation_id: str) -> None:
        with self._lock:
            self.inbox.delete_thread(conversation_id)

    def delete_after_listing(self, conversation_id: str) -> None:
        """Delete the thread once the first `/{page}/conversations` answer that lists it has been
        built: that answer still shows it and its nested messages, later calls on it (or its
        messages) answer 100 / subcode 33, as for a thread deleted between listing and
        follow-up."""
        with self._lock:
            if self.inbox.conversation(conversation_id) is None:
                raise KeyError(conversation_id)
            self._delete_after_listing.add(conversation_id)

    def unsend_after_listing(self, message_id: str) -> None:
        """Unsend the message once the first list of messages that shows it has been built (a
        listing's or a thread's nested messages, or a `/messages` page)."""
        with self._lock:
            if self.inbox.message(message_id) is None:
                raise KeyError(message_id)
            self._unsend_after_listing.add(message_id)

    def fail_follow_ups(
        self,
        conversation_id: str,
        code: int,
        *,
        subcode: int | None = None,
        message: str | None = None,
        error_type: str = "OAuthException",
        status: int = 400,
    ) -> None:
        """Every later call on the thread or its messages (`/{conversation}`, `/messages`,
        `/{message}`, `/attachments`) answers this error; listings still list the thread."""
        failure = _scripted(code, subcode, message, error_type, status)
        with self._lock:
            if self.inbox.conversation(conversation_id) is None:
                raise KeyError(conversation_id)
            self._failing_threads[conversation_id] = failure

    def fail_listing(
        self,
        page_id: str,
        platform: str,
        folder: str,
        code: int,
        *,
        subcode: int | None = None,
        message: str | None = None,
        error_type: str = "OAuthException",
        status: int = 400,
    ) -> None:
        """Every `/{page}/conversations` call for this platform and folder (as asked) answers
        this error, after the checks of the token, the parameters and the permissions."""
        failure = _scripted(code, subcode, message, error_type, status)
        with self._lock:
            self._failing_listings[(page_id, platform, folder)] = failure

    def write_when_listed(
        self, page_id: str, platform: str, folder: str, conversation_id: str, created: int
    ) -> None:
        """The thread's customer writes, at `created`, as the folder's next page reached by a
        cursor is asked (before it is answered): the thread moves to the folder's top between
        two pages of a listing."""
        write = (conversation_id, "written while the folder was listed", created)
        self._when_listed_at(
            (page_id, platform, folder), 1, lambda: self.inbox.customer_writes(*write)
        )

    def expire_cursors_when_listed(
        self, page_id: str, platform: str, folder: str, pages: int
    ) -> None:
        """Every cursor issued so far expires as the `pages`-th page of the folder reached by a
        cursor is asked (before it is answered): mid-listing, as Graph's may in a long run."""
        self._when_listed_at((page_id, platform, folder), pages, self._next_cursor_epoch)

    def _next_cursor_epoch(self) -> None:
        self._cursor_epoch += 1

    def _when_listed_at(
        self, folder: tuple[str, str, str], pages: int, happens: Callable[[], None]
    ) -> None:
        with self._lock:
            self._when_listed.setdefault(folder, []).append((pages, happens))

    def fail_calls(self, matches: Callable[[str, dict[str, str]], bool], times: int) -> None:
        """The first `times` calls of each path that `matches` (path, parameters) answer a
        transient error (code 2, HTTP 500), as Graph's do now and then."""
        with self._lock:
            self._failing_calls.append((matches, times))

    def expire_cursors_when_asked(self, matches: Callable[[str, dict[str, str]], bool]) -> None:
        """Every cursor issued so far expires as the first call that `matches` (path,
        parameters) is asked, before it is answered (see `Faults.cursor_expiry`)."""
        with self._lock:
            self._expiring_on.append(matches)

    def _expire_if_asked(self, request: _Request) -> None:
        """`expire_cursors_when_asked`, before the request is answered."""
        with self._lock:
            for matches in [m for m in self._expiring_on if m(request.path, request.params)]:
                self._expiring_on.remove(matches)
                self._next_cursor_epoch()

    def _failing_call(self, request: _Request) -> _Reply | None:
        with self._lock:
            for rule, (matches, times) in enumerate(self._failing_calls):
                key = (rule, request.path)
                if self._failed_calls[key] < times and matches(request.path, request.params):
                    self._failed_calls[key] += 1
                    break
            else:
                return None
        return self._error_reply(_unexpected())

    def leave_out(self, message_id: str, field: str) -> None:
        """Answers leave `field` out of the message, asked or not, as a Graph that did not
        give it would."""
        with self._lock:
            self._left_out.setdefault(message_id, set()).add(field)

    def refuse_field(self, page_id: str, field: str) -> None:
        """Conversation fields asked with the Page's token that Graph refuses with 100, as it
        may refuse `is_owner` to an app without Conversation Routing."""
        with self._lock:
            self._refused_fields.setdefault(page_id, set()).add(field)

    def throttle_app(self, page_id: str, seconds: float) -> None:
        """The next call made with the Page's token reaches the app's request limit: it, and
        every call with any of the app's tokens for `seconds` from then, answers code 4."""
        with self._lock:
            self._app_throttles[page_id] = seconds

    def inject_surrogates(self) -> dict[str, str]:
        """Lone UTF-16 surrogates in a message text, a snippet, a participant's name and an
        attachment's name; says which ids carry them."""
        with self._lock:
            return self.inbox.inject_surrogates()

    def expire_cursors(self) -> None:
        """Every cursor issued so far stops working (see `Faults.cursor_expiry`)."""
        with self._lock:
            self._next_cursor_epoch()

    def expire_token(self, token: str, subcode: int = 463) -> None:
        with self._lock:
            self._expired[token] = subcode

    def revoke_permission(self, page_id: str, permission: str) -> None:
        with self._lock:
            self._revoked.setdefault(page_id, set()).add(permission)

    def withhold_page_token(self, page_id: str) -> None:
        """`/me/accounts` lists the Page without its `access_token`, as Graph does for a user
        whose role on the Page gives no token: a client then has only the user token (210)."""
        with self._lock:
            self._withheld.add(page_id)

    # -- one request -----------------------------------------------------------------------

    @contextmanager
    def _in_flight(self, target: str, authorization: str | None) -> Iterator[None]:
        """Wait at the gate, then count the call in flight until its answer is written."""
        _, _, token = _credentials(target, authorization)
        page = self._page_tokens.get(token or "")
        with self._traffic.flight(page.id if page else None):
            yield

    def _answer(
        self, method: str, target: str, authorization: str | None, host: str = FACEBOOK
    ) -> _Reply:
        arrived = self._clock()
        request = self._request(method, target, authorization, host)
        delay = self.latency + self._uniform(0.0, self.latency_jitter)
        if delay:
            time.sleep(delay)
        if self._chance(self.faults.slow_rate):
            time.sleep(self.faults.slow_seconds)
        self._expire_if_asked(request)
        reply = self._failing_call(request) or self._fault_reply() or self._graph_reply(request)
        reply.truncate = not reply.drop and self._chance(self.faults.truncate_rate)
        call = Call(
            request.method,
            request.path,
            request.params,
            request.token_kind,
            0 if reply.drop else reply.status,
            reply.error_code,
            _object_id(request.target),
            request.page.id if request.page else None,
            host,
            arrived,
            self._clock(),
        )
        with self._lock:
            self._calls.append(call)
        return reply

    def _request(self, method: str, target: str, authorization: str | None, host: str) -> _Request:
        raw_path, query, token = _credentials(target, authorization)
        path = unquote(raw_path)
        version = VERSION_PREFIX.match(path)
        bare_path = path[version.end() :] if version else path
        head, *rest = bare_path.strip("/").split("/")
        kind, page = self._identify(token)
        with self._lock:
            resolved = self._resolve(head, kind, page)
        request = _Request(
            method=method,
            path=bare_path or "/",
            raw_path=raw_path,
            version=version.group(1) if version else DEFAULT_VERSION,
            query=query,
            token=token,
            token_kind=kind,
            page=page,
            head=head,
            rest=rest,
            target=resolved,
            host=host,
        )
        if self._chance(self.faults.short_page_rate):
            request.short_page = self._uniform(0.2, 0.8)
        return request

    def _identify(self, token: str | None) -> tuple[str, Page | None]:
        if token is None:
            return "none", None
        if token == self.inbox.user.access_token:
            return "user", None
        page = self._page_tokens.get(token)
        return ("page", page) if page else ("invalid", None)

    def _resolve(self, head: str, kind: str, page: Page | None) -> Target:
        if head == "me":
            return page or (self.inbox.user if kind == "user" else None)
        if head == self.inbox.user.id:
            return self.inbox.user
        inbox = self.inbox
        return inbox.page(head) or inbox.conversation(head) or inbox.message(head)

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._rng_lock:
            return self._rng.random() < rate

    def _uniform(self, low: float, high: float) -> float:
        """A draw from the seeded fault stream; none when the range is empty, so that options
        left at zero do not shift the faults that follow."""
        if high <= low:
            return low
        with self._rng_lock:
            return self._rng.uniform(low, high)

    def _fault_reply(self) -> _Reply | None:
        faults = self.faults
        if self._chance(faults.drop_rate):
            return _Reply(0, b"", {}, drop=True)
        if self._chance(faults.server_error_rate):
            return self._error_reply(_unexpected())
        if self._chance(faults.unknown_error_rate):
            return self._error_reply(GraphError(1, UNKNOWN_ERROR, status=500, transient=True))
        if self._chance(faults.non_json_rate):
            return _Reply(502, BAD_GATEWAY, {"Content-Type": "text/html; charset=utf-8"})
        return None

    def _graph_reply(self, request: _Request) -> _Reply:
        try:
            body = _json_bytes(self._dispatch(request))
        except GraphError as err:
            return self._error_reply(err, request.headers)
        except _ExpiredCursor:
            body = _json_bytes({"data": []})
        limit = self.faults.max_response_bytes
        if limit is not None and len(body) > limit:
            if not self.faults.heavy_answer_says_so:
                refusal = GraphError(1, UNKNOWN_ERROR, status=500, transient=True)
                return self._error_reply(refusal, request.headers)
            return self._error_reply(_too_much_data(), request.headers)
        self._after_answer(request)
        return _Reply(200, body, {"Content-Type": JSON_TYPE, **request.headers})

    def _after_answer(self, request: _Request) -> None:
        """The deletions and unsent messages due now that an answer showing them is built."""
        with self._lock:
            if not (self._delete_after_listing or self._unsend_after_listing):
                return
            for conversation in request.shown_threads:
                if conversation.id in self._delete_after_listing:
                    self._delete_after_listing.discard(conversation.id)
                    if self.inbox.conversation(conversation.id) is conversation:
                        self.inbox.delete_thread(conversation.id)
            for message in request.shown_messages:
                if message.id in self._unsend_after_listing:
                    self._unsend_after_listing.discard(message.id)
                    # Gone already if its thread was deleted by this same answer.
                    if self.inbox.message(message.id) is message:
                        self.inbox.unsend(message.id)

    def _error_reply(self, error: GraphError, headers: dict[str, str] | None = None) -> _Reply:
        trace_id = "A" + digest(self._seed, "trace", next(self._traces), length=22)
        body = _json_bytes(error.envelope(trace_id, self.faults.error_language))
        reply_headers = {"Content-Type": JSON_TYPE, **(headers or {})}
        return _Reply(error.status, body, reply_headers, error_code=error.code)

    # -- Graph semantics -------------------------------------------------------------------

    def _dispatch(self, request: _Request) -> Any:
        self._authenticate(request)
        self._check_app_throttle(request)
        if request.method != "GET":
            raise GraphError(100, f"(#100) Unsupported {request.method.lower()} request.")
        self._charge(request)
        self._check_access(request)
        self._check_scripted_failure(request)
        target, rest = request.target, request.rest
        match target, rest:
            case User(), []:
                values = {"id": target.id, "name": target.name}
                return render(values, self._fields(request, "User", USER_DEFAULT))
            case User(), ["accounts"]:
                return self._accounts(request)
            case Page(), [] if target.login == INSTAGRAM:
                fields = self._fields(request, "InstagramUser", INSTAGRAM_USER_DEFAULT)
                return render(target.graph_values(), fields)
            case Page(), []:
                fields = self._fields(request, "Page", PAGE_DEFAULT)
                return render(target.graph_values(), fields)
            case Page(), ["conversations"]:
                return self._conversations(request, target)
            case Conversation(), []:
                fields = self._fields(request, "Conversation", CONVERSATION_DEFAULT)
                return self._conversation_json(request, target, fields)
            case Conversation(), ["messages"]:
                return self._messages(request, target)
            case Message(), []:
                fields = self._fields(request, "Message", MESSAGE_DEFAULT)
                self._check_detailed(target)
                return self._message_json(request, target, fields, detailed=True)
            case Message(), ["attachments"]:
                return self._attachments(request, target)
            case _, [edge]:
                node_type = type(target).__name__
                raise GraphError(
                    100,
                    f"(#100) Tried accessing nonexisting field ({edge}) on node type ({node_type})",
                )
        raise GraphError(100, f"(#100) Unknown path components: /{'/'.join(rest)}")

    def _authenticate(self, request: _Request) -> None:
        token = request.token
        if token is None:
            raise GraphError(104, "An access token is required to request this resource.")
        # Each host reads only its own tokens: an Instagram User token on graph.facebook.com,
        # or a Facebook token on graph.instagram.com, is not a token there.
        host = request.page.login if request.page else FACEBOOK
        if request.token_kind == "invalid" or host != request.host:
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
        subcode = self._expired.get(token)
        if subcode is not None:
            message = EXPIRED_TOKENS.get(subcode, "Error validating access token.")
            raise GraphError(190, message, subcode=subcode)
        if self.app_secret is None:
            return
        proof = request.query.get("appsecret_proof")
        if proof is None:
            raise GraphError(100, "API calls from the server require an appsecret_proof argument")
        expected = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(proof, expected):
            raise GraphError(100, "Invalid appsecret_proof provided in the API argument")

    def _check_app_throttle(self, request: _Request) -> None:
        """The app's own limit (`throttle_app`), reached before any Page's budget is charged."""
        with self._lock:
            now = self._clock()
            seconds = self._app_throttles.pop(request.page.id, None) if request.page else None
            if seconds is not None:
                self._app_throttled_until = max(self._app_throttled_until or now, now + seconds)
            until = self._app_throttled_until
            throttled = seconds is not None or (until is not None and now < until)
        if throttled:
            request.headers = {"X-App-Usage": json.dumps(_load(100))}
            raise GraphError(4, APP_LIMIT_REACHED)

    def _check_scripted_failure(self, request: _Request) -> None:
        target = request.target
        if not isinstance(target, Conversation | Message):
            return
        conversation_id = target.id if isinstance(target, Conversation) else target.conversation_id
        with self._lock:
            failure = self._failing_threads.get(conversation_id)
        if failure is not None:
            raise failure()

    def _usage_type(self, request: _Request) -> str:
        match request.target, request.rest:
            case (Conversation() | Message()) as target, _:
                conversation = self._conversation_of(target)
                return conversation.platform if conversation else "messenger"
            case Page(), ["conversations"]:
                platform = request.query.get("platform", "messenger").lower()
                return platform if platform in PLATFORMS else "messenger"
        return "pages"

    def _charge(self, request: _Request) -> None:
        """Count a Page token's call against its Page's budget and report usage like Graph."""
        if request.page is None:
            return
        usage_type = self._usage_type(request)
        usage = self._meter.admit(request.page.id, self.limits)
        load = _load(usage.percent)
        business = {"type": usage_type, **load}
        business["estimated_time_to_regain_access"] = usage.regain_minutes
        request.headers = {
            "X-Business-Use-Case-Usage": json.dumps({request.page.id: [business]}),
            "X-App-Usage": json.dumps(load),
        }
        if not usage.admitted:
            code, message = THROTTLES[usage_type]
            raise GraphError(code, message, transient=True)

    def _check_access(self, request: _Request) -> None:
        target = request.target
        match target:
            case User():
                allowed = request.token_kind == "user"
            case Page():
                managed = request.token_kind == "user" and target in self.inbox.pages
                allowed = managed or request.page is target
            case Conversation() | Message():
                conversation = self._conversation_of(target)
                if conversation is None:
                    raise _missing(request.head)
                owner = self.inbox.page(conversation.page_id)
                if request.token_kind == "user" and owner in self.inbox.pages:
                    raise _page_token_required()
                if request.page is not owner:
                    raise _missing(request.head)
                self._check_permissions(conversation.page_id, conversation.platform)
                return
            case _:
                allowed = False
        if not allowed:
            raise _missing(request.head)

    def _check_permissions(self, page_id: str, platform: str) -> None:
        with self._lock:
            revoked = sorted(self._revoked.get(page_id, ()))
        for permission in revoked:
            if platform == "instagram" or not permission.startswith("instagram_"):
                message = f"(#200) Requires {permission} permission to manage the object"
                raise GraphError(200, message)

    def _conversation_of(self, target: Conversation | Message) -> Conversation | None:
        """The thread of a node: None once it was deleted while the request was on its way."""
        if isinstance(target, Conversation):
            return target
        return self.inbox.conversation(target.conversation_id)

    def _check_detailed(self, message: Message) -> None:
        with self._lock:
            conversation = self._conversation_of(message)
            detailed = conversation is not None and conversation.is_detailed(message)
        if not detailed:
            raise GraphError(9000001, DELETED_MESSAGE)

    def _fields(
        self, request: _Request, node_type: str, default: tuple[Field, ...]
    ) -> tuple[Field, ...]:
        text = request.query.get("fields")
        try:
            fields = parse_fields(text) if text else default
            validate(node_type, fields)
        except FieldsSyntaxError as err:
            raise GraphError(2500, f"Cannot parse fields: {err}") from err
        except FieldsValueError as err:
            raise GraphError(100, str(err)) from err
        if node_type == "Conversation" and request.page is not None:
            with self._lock:
                refused = self._refused_fields.get(request.page.id, set())
            for field in fields:
                if field.name in refused:
                    raise GraphError(
                        100,
                        f"(#100) Tried accessing nonexisting field ({field.name}) on node type "
                        "(Conversation)",
                    )
        return fields

    def _limit(self, raw: str | None) -> int:
        if raw is None:
            return DEFAULT_LIMIT
        if not raw.isdigit() or int(raw) == 0:
            raise GraphError(100, f"(#100) Param limit must be a positive integer: {raw}")
        return int(raw)

    def _position(self, cursor: str | None) -> Key | None:
        """The key a cursor names; None (the start of the list) for none, or for an expired one
        when the emulator restarts lists."""
        if cursor is None:
            return None
        epoch, key = _decode_cursor(cursor)
        if epoch == self._cursor_epoch:
            return key
        if self.faults.cursor_expiry == "restart":
            return None
        if self.faults.cursor_expiry == "empty":
            raise _ExpiredCursor()
        raise _bad_cursor()

    # -- lists -----------------------------------------------------------------------------

    def _edge_window(
        self,
        request: _Request,
        items: Sequence[Any],
        *,
        key: Callable[[Any], Key] = _same,
        value: Callable[[Any], T] = _same,
        lowest: int = 0,
        attachments: bool = False,
        repeated: bool = False,
    ) -> _Window[T]:
        """The page a top-level edge request asks for; call it holding the lock."""
        limit = self._page_size(self._limit(request.query.get("limit")), attachments)
        after = self._position(request.query.get("after"))
        before = self._position(request.query.get("before"))
        return _window(
            items,
            limit,
            after,
            before,
            key=key,
            value=value,
            lowest=lowest,
            keep=request.short_page,
            # A short page of one attachment would look complete (equal cursors).
            narrowest=2 if attachments else 1,
            repeated=repeated,
        )

    def _page_size(self, asked: int, attachments: bool) -> int:
        cap = self.faults.attachments_page_cap if attachments else None
        return min(asked, self.limits.max_page_size, cap or asked)

    def _accounts(self, request: _Request) -> dict[str, Any]:
        fields = self._fields(request, "Page", ACCOUNT_DEFAULT)
        window = self._edge_window(request, _positional(self.inbox.pages), key=_rank, value=_ranked)

        def account(page: Page) -> dict[str, Any]:
            values = page.graph_values()
            if page.id in self._withheld:
                del values["access_token"]
            return render(values, fields)

        return self._listing(request, window, account)

    def _base(self, request: _Request) -> str:
        """The host a request came to, for the links of its answer."""
        return self.instagram_base_url if request.host == INSTAGRAM else self.base_url

    def _conversations(self, request: _Request, page: Page) -> dict[str, Any]:
        """A Page's threads of one platform and folder. Without `folder`, the inbox: what
        Graph lists then is not documented, and the inbox is what a person sees first."""
        if request.token_kind != "page":
            raise _page_token_required()
        raw_platform = request.query.get("platform", "messenger")
        platform = raw_platform.lower()
        if platform not in PLATFORMS:
            raise GraphError(100, f"(#100) Invalid platform: {raw_platform}")
        if platform not in page.platforms and page.login == INSTAGRAM:
            raise GraphError(100, f"(#100) Invalid platform for an Instagram account: {platform}")
        if platform == "instagram" and page.instagram is None:
            raise GraphError(
                100, f"(#100) The Page {page.id} has no linked Instagram professional account"
            )
        folder = self._folder(request, platform)
        ignores_folder = platform == "instagram" and self.faults.instagram_ignores_folder
        by_tag = "tags" in request.query
        if folder not in FOLDERS and not (ignores_folder or by_tag):
            raise GraphError(100, f"(#100) Param folder must be one of {', '.join(FOLDERS)}")
        self._check_permissions(page.id, platform)
        with self._lock:
            failure = self._failing_listings.get((page.id, platform, folder))
        if failure is not None:
            raise failure()
        with self._lock:
            if "after" in request.query and (
                waiting := self._when_listed.get((page.id, platform, folder))
            ):
                for pages, happens in waiting:
                    if pages == 1:
                        happens()
                waiting[:] = [(pages - 1, happens) for pages, happens in waiting if pages > 1]
        fields = self._fields(request, "Conversation", CONVERSATION_DEFAULT)
        user_id = request.query.get("user_id")
        with self._lock:
            if ignores_folder:
                lists = (self._folder_keys(page, platform, f, user_id) for f in FOLDERS)
                keys, lowest = list(heapq.merge(*(k[low:] for k, low in lists))), 0
            else:
                keys, lowest = self._folder_keys(page, platform, folder, user_id)
            window = self._edge_window(
                request,
                keys,
                value=lambda key: self.inbox.conversation(key[1]),
                lowest=lowest,
                repeated=self.faults.repeated_edge,
            )
            request.shown_threads = [conversation for _, conversation in window.entries]
        answer = self._listing(
            request,
            window,
            lambda conversation: self._conversation_json(request, conversation, fields),
        )
        return (
            self._empty_first(request, answer) if self.faults.listing_pages_empty_first else answer
        )

    def _folder(self, request: _Request, platform: str) -> str:
        """The folder a listing asks for: `folder`, or the legacy archive by its tag."""
        tags = request.query.get("tags")
        if tags is None:
            return request.query.get("folder", "inbox").lower()
        if self.faults.refuses_tags or platform != "messenger" or tags != LEGACY_ARCHIVE_TAG:
            raise GraphError(100, f"(#100) Param tags must be one of {{{LEGACY_ARCHIVE_TAG}}}")
        if "folder" in request.query:
            raise GraphError(100, "(#100) Param tags cannot be used with folder")
        return LEGACY_ARCHIVE

    def _folder_keys(
        self, page: Page, platform: str, folder: str, user_id: str | None
    ) -> tuple[Sequence[tuple[int, str]], int]:
        """The (updated_time, id) keys of a folder's threads (of one person's, with `user_id`),
        ascending, and how many of the first are hidden; call it holding the lock."""
        if user_id:
            keys: Sequence[tuple[int, str]] = sorted(
                (c.updated_time, c.id)
                for c in self.inbox.threads_with(user_id)
                if (c.page_id, c.platform, c.folder) == (page.id, platform, folder)
            )
        else:
            keys = self.inbox.listing(page.id, platform, folder)
        # Oldest first: the hidden stale requests are the start of the keys.
        hides = self.faults.instagram_hides_stale_requests and platform == "instagram"
        if hides and folder == "other":
            return keys, bisect_left(keys, (self.inbox.now - STALE_REQUEST_AGE,))
        return keys, 0

    def _messages(self, request: _Request, conversation: Conversation) -> dict[str, Any]:
        fields = self._fields(request, "Message", MESSAGE_DEFAULT)
        with self._lock:
            window = self._edge_window(request, conversation.messages, key=message_key)
            detailed = {id(m) for _, m in window.entries if conversation.is_detailed(m)}
        request.shown_messages += [message for _, message in window.entries]
        answer = self._listing(
            request,
            window,
            lambda m: self._message_json(request, m, fields, detailed=id(m) in detailed),
        )
        return self._older_page_fault(request, answer)

    def _older_page_fault(self, request: _Request, answer: dict[str, Any]) -> dict[str, Any]:
        """`Faults.older_pages` on a page of a thread's messages."""
        if "after" not in request.query or self.faults.older_pages == "as_asked":
            return answer
        if self.faults.older_pages == "empty_first":
            return self._empty_first(request, answer)
        page = (request.raw_path, request.query["after"])
        with self._lock:
            self._repeated_next[page] += 1
            if self._repeated_next[page] > REPEATS:
                return answer
        return {**answer, "paging": {**answer.get("paging", {}), "next": self._again(request)}}

    def _empty_first(self, request: _Request, answer: dict[str, Any]) -> dict[str, Any]:
        """A page reached by a cursor answered first with no items and a `next` to them."""
        if "after" not in request.query or "__paging_token" in request.query:
            return answer
        following = self._again(request, request.query | {"__paging_token": "shown"})
        return {"data": [], "paging": {"next": following}}

    def _again(
        self,
        request: _Request,
        query: dict[str, str] | None = None,
        cursor: dict[str, str] | None = None,
    ) -> str:
        """The URL of `request` (with `query` for its parameters), its token and `cursor` last,
        as Graph writes a `next`."""
        asked = request.query if query is None else query
        asked = asked | {"access_token": request.token or ""} | (cursor or {})
        return f"{self._base(request)}{request.raw_path}?{urlencode(asked)}"

    def _attachments(self, request: _Request, message: Message) -> dict[str, Any]:
        self._check_detailed(message)
        fields = self._fields(request, "MessageAttachment", ATTACHMENT_DEFAULT)
        window = self._edge_window(
            request, _positional(message.attachments), key=_rank, value=_ranked, attachments=True
        )
        return self._listing(
            request, window, lambda attachment: render(attachment, fields), marks_end=True
        )

    def _listing(
        self,
        request: _Request,
        window: _Window[T],
        item: Callable[[T], Any],
        *,
        marks_end: bool = False,
    ) -> dict[str, Any]:
        """A top-level edge page; its `next` repeats the request with the token and a cursor."""

        def link(name: str, cursor: str) -> str:
            query = {k: v for k, v in request.query.items() if k not in ("after", "before")}
            query.setdefault("limit", str(DEFAULT_LIMIT))
            return self._again(request, query, cursor={name: cursor})

        if not window.entries:
            after = request.query.get("after")
            return (
                {"data": [], "paging": {"previous": link("before", after)}}
                if after
                else {"data": []}
            )
        data = [item(value) for _, value in window.entries]
        return {"data": data, "paging": self._paging(window, link, marks_end=marks_end)}

    def _nested(
        self,
        request: _Request,
        owner_id: str,
        edge: str,
        selection: Field,
        window: _Window[T],
        item: Callable[[T], Any],
        *,
        marks_end: bool = False,
    ) -> dict[str, Any]:
        """A list inside a node; its `next` points at the standalone edge, token included."""
        if not window.entries:
            return {"data": []}

        def link(name: str, cursor: str) -> str:
            query = request.nested_queries.get(id(selection))
            if query is None:
                query = request.nested_queries[id(selection)] = _nested_query(request, selection)
            # Cursors are URL-safe base64: nothing to escape.
            base = self._base(request)
            return f"{base}/{request.version}/{owner_id}/{edge}?{query}&{name}={cursor}"

        data = [item(value) for _, value in window.entries]
        return {"data": data, "paging": self._paging(window, link, marks_end=marks_end)}

    def _nested_window(
        self,
        items: Sequence[Any],
        selection: Field,
        *,
        key: Callable[[Any], Key] = _same,
        value: Callable[[Any], T] = _same,
        attachments: bool = False,
    ) -> _Window[T]:
        """The page a nested list's selection asks for; call it holding the lock."""
        limit = self._page_size(selection.limit or DEFAULT_LIMIT, attachments)
        try:
            after, before = self._position(selection.after), self._position(selection.before)
        except _ExpiredCursor:
            return _Window([], limit, more_before=False, more_after=False)
        return _window(items, limit, after, before, key=key, value=value)

    def _paging(
        self, window: _Window[Any], link: Callable[[str, str], str], *, marks_end: bool = False
    ) -> dict[str, Any]:
        """Cursors naming the first and last item shown. With `marks_end` (attachment lists,
        as recorded), a page that ends its list has both cursors naming its end, and a `next`."""
        epoch = self._cursor_epoch
        first, last = _cursor(epoch, window.entries[0][0]), _cursor(epoch, window.entries[-1][0])
        ends = marks_end and not window.more_after
        paging: dict[str, Any] = {"cursors": {"before": last if ends else first, "after": last}}
        trailing = self.faults.trailing_empty_page and len(window.entries) >= window.limit
        if window.more_after or ends or trailing:
            paging["next"] = link("after", last)
        if window.more_before:
            paging["previous"] = link("before", first)
        return paging

    # -- nodes -----------------------------------------------------------------------------

    def _conversation_json(
        self, request: _Request, conversation: Conversation, fields: tuple[Field, ...]
    ) -> dict[str, Any]:
        with self._lock:
            values = conversation.graph_values()

        def messages(selection: Field) -> dict[str, Any] | None:
            with self._lock:
                if not conversation.messages:
                    return None
                window = self._nested_window(conversation.messages, selection, key=message_key)
                detailed = {id(m) for _, m in window.entries if conversation.is_detailed(m)}
            request.shown_messages += [message for _, message in window.entries]
            children = selection.children or MESSAGE_DEFAULT
            return self._nested(
                request,
                conversation.id,
                "messages",
                selection,
                window,
                lambda m: self._message_json(request, m, children, detailed=id(m) in detailed),
            )

        return render(values, fields, {"messages": messages})

    def _message_json(
        self, request: _Request, message: Message, fields: tuple[Field, ...], *, detailed: bool
    ) -> dict[str, Any]:
        shown = self._shown_message(request, message, fields, detailed=detailed)
        for name in self._left_out.get(message.id, ()):
            shown.pop(name, None)
        return shown

    def _shown_message(
        self, request: _Request, message: Message, fields: tuple[Field, ...], *, detailed: bool
    ) -> dict[str, Any]:
        if not detailed:
            asked = {field.name for field in fields}
            if self.faults.instagram_details_error and asked - {"id", "created_time"}:
                raise _scripted(
                    self.faults.instagram_details_code, None, None, "OAuthException", 400
                )()
            return {"id": message.id, "created_time": iso(message.created_time)}
        attachments = message.attachments

        def attachments_edge(selection: Field) -> dict[str, Any] | None:
            if not attachments:
                return None
            window = self._nested_window(
                _positional(attachments), selection, key=_rank, value=_ranked, attachments=True
            )
            return self._nested(
                request,
                message.id,
                "attachments",
                selection,
                window,
                lambda attachment: render(attachment, selection.children or ATTACHMENT_DEFAULT),
                marks_end=True,
            )

        return render(message.graph_values(), fields, {"attachments": attachments_edge})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator, host: str) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        self.host = host

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up early (a timeout in a test) is not an emulator failure.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm, a kept-alive connection
    # waits for the client's delayed ACK (40 ms) before the body.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        emulator = self.server.emulator
        authorization = self.headers.get("Authorization")
        with emulator._in_flight(self.path, authorization):
            reply = emulator._answer(self.command, self.path, authorization, self.server.host)
            if reply.drop:
                self.close_connection = True
                return
            body = reply.body[: len(reply.body) // 2] if reply.truncate else reply.body
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a test run makes thousands of requests."""


def serve(
    port: int,
    seed: int,
    scale: int,
    pages: int = 3,
    latency: float = 0.0,
    per_second: float | None = None,
) -> None:
    """Run an emulator in the foreground until Ctrl-C (the `meta-inbox emulator` command)."""
    limits = Limits(per_second=per_second)
    emulator = Emulator(
        seed=seed, scale=scale, limits=limits, latency=latency, port=port, pages=pages
    )
    with emulator:
        print(f"Graph API emulator listening on {emulator.base_url} (Ctrl-C stops it)")
        print("Point meta-inbox at it: paste these lines into the shell that runs it")
        print(f"export SOURCES__META_INBOX__BASE_URL={emulator.base_url}")
        print(f"export SOURCES__META_INBOX__INSTAGRAM_BASE_URL={emulator.instagram_base_url}")
        print(f"export SOURCES__META_INBOX__ACCESS_TOKEN={emulator.user_token}")
        print("or, to export one Page with its Page token, use one of these tokens:")
        for page in emulator.inbox.pages:
            print(f"  {page.id} ({page.name}): {page.access_token}")
        account = emulator.inbox.instagram_accounts[0]
        print("or, for the Instagram account without a Page (Instagram Login), this one:")
        print(f"  {account.id} (@{account.name}): {account.access_token}")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
