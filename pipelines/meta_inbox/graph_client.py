"""The Graph API client: HTTP, pacing, retries, paging and redaction. It knows nothing of dlt.

Everything that reaches a log line or an exception passes through `Redactor`, because Graph
embeds the access token in every `paging.next` URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from .graph_errors import ErrorKind, GraphError, Usage

log = logging.getLogger("meta_inbox.graph")

# A call's parameters, in order: a `next` URL may repeat one.
Query = list[tuple[str, str]]

_SECRET_PARAMS = ("access_token", "appsecret_proof", "client_secret")
_SECRET_PARAM_RE = re.compile(r"((?:" + "|".join(_SECRET_PARAMS) + r")=)[^&\s\"'#]+", re.IGNORECASE)


def scrub_secret_params(text: str) -> str:
    """Mask the value of every `access_token=`-like query parameter in a URL or message."""
    lowered = text.lower()
    # Most text holds none: a substring test spares the regular expression.
    if not any(name in lowered for name in _SECRET_PARAMS):
        return text
    return _SECRET_PARAM_RE.sub(r"\1***", text)


class Redactor:
    """Removes access tokens (known ones, and any `access_token=` query value) from text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 8:
            with self._lock:
                self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        text = scrub_secret_params(text)
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text


# The secrets of this process: log records are the process's, so their redaction is too.
REDACTOR = Redactor()


def redact_log_records(redactor: Redactor = REDACTOR) -> None:
    """Redact every log record when it is created, whichever logger or handler it goes to.

    dlt's logger has handlers of its own that do not propagate, so a handler filter would miss it.
    """
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redactor", None) is redactor:
        return

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redactor(message), None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters render tracebacks later, from exc_text when it is set.
            record.exc_text = redactor(logging.Formatter().formatException(record.exc_info))
        return record

    redacted_record.redactor = redactor  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)


class GraphUnavailable(Exception):
    """Graph kept failing or answering garbage, after every retry. `others_answered`: Graph
    answered other calls of the run with their data, so the trouble may be this call's
    object."""

    def __init__(self, message: str, *, others_answered: bool = False) -> None:
        super().__init__(message)
        self.others_answered = others_answered


class GraphUnreachable(GraphUnavailable):
    """Graph never answered at all this run: a wrong `base_url`, or no network."""


class ThrottleBudgetExceeded(Exception):
    """Waiting on Graph's rate limits would exceed the configured ceiling."""

    def __init__(self, waited: float, ceiling: float, needed: float) -> None:
        super().__init__(
            f"Graph API rate limits would need another {needed:.0f} s of waiting after "
            f"{waited:.0f} s already; the ceiling is {ceiling:.0f} s"
        )


def usage_from_headers(headers: Any) -> Usage:
    """The highest percentage in `X-Business-Use-Case-Usage` and `X-App-Usage`, and the longest
    `estimated_time_to_regain_access` (minutes on the wire)."""
    percent, regain_minutes = 0.0, 0.0
    for name in ("x-business-use-case-usage", "x-app-usage"):
        raw = headers.get(name)
        if not raw:
            continue
        try:
            payload = json.loads(raw)
        except ValueError:
            continue
        for entry in _usage_entries(payload):
            for key in ("call_count", "total_cputime", "total_time"):
                value = entry.get(key)
                if isinstance(value, int | float):
                    percent = max(percent, float(value))
            regain = entry.get("estimated_time_to_regain_access")
            if isinstance(regain, int | float):
                regain_minutes = max(regain_minutes, float(regain))
    return Usage(percent=percent, regain_seconds=regain_minutes * 60)


def _usage_entries(payload: Any) -> Iterator[dict[str, Any]]:
    """X-App-Usage is one flat object; X-Business-Use-Case-Usage maps ids to lists of objects."""
    if not isinstance(payload, dict):
        return
    if any(not isinstance(value, list) for value in payload.values()):
        yield payload
        return
    for entries in payload.values():
        yield from (entry for entry in entries if isinstance(entry, dict))


@dataclass(frozen=True)
class Pacing:
    """How the client spaces its calls and how long it keeps trying. Delays are in seconds;
    `config.Settings` holds the documented defaults."""

    max_calls_per_second: float
    slow_down_at_percent: float
    usage_pause: float
    throttle_backoff: float
    max_throttle_wait: float
    max_attempts: int
    retry_backoff: float
    max_retry_delay: float
    timeout: float


@dataclass
class CallStats:
    """What a run cost, for the summary. Shared by every client of one run."""

    calls: int = 0
    answered: int = 0  # calls that got any HTTP answer
    succeeded: int = 0  # calls answered with their data
    retries: int = 0
    throttled: int = 0
    throttle_wait: float = 0.0  # wall time during which some call waited for a throttle
    throttled_until: float = 0.0  # on the pacer's clock: the end of the waits counted so far
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: float) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def throttle(self, now: float, until: float, ceiling: float) -> None:
        """Count a throttle wait from `now` to `until`, or raise `ThrottleBudgetExceeded` when
        it would take the run's waiting past `ceiling`. Waits that overlap count once: two
        calls throttled together hold the run up no longer than one."""
        with self.lock:
            added = max(0.0, until - max(now, self.throttled_until))
            if self.throttle_wait + added > ceiling:
                raise ThrottleBudgetExceeded(self.throttle_wait, ceiling, added)
            self.throttled += 1
            self.throttle_wait += added
            self.throttled_until = max(self.throttled_until, until)


# Calls are paced this far under the limit: Graph counts a call when it arrives, and network and
# thread-scheduling jitter bring some calls in early. At 2 calls a second, a 10 % margin leaves
# 55 ms either side of each call before a strict one-second window sees three, for 10 % of
# the throughput.
PACE_MARGIN = 0.9
# After a throttle without a regain time, a lane's pace is halved, down to this share of its
# full pace; each call answered then gives back this share, so the full pace returns after
# some ten calls without a throttle (5-10 s). The full pace is a safe one (under Meta's
# documented limit): the climb back needs only be slow enough that a Page whose limit is
# lower for a while is not refused again at once.
SLOWEST_SHARE = 1 / 16
RECOVERY_SHARE = 1 / 10


@dataclass
class TaskTries:
    """What one scheduler task has been through, kept across its runs: a task run again after
    `RetryLater` goes on counting, so that its retries end."""

    # Transient failures so far of each of its calls (by path and parameters): a task run
    # again makes its answered calls again, and a call that follows a failed one (a page asked
    # smaller) gets tries of its own.
    attempts: Counter[int] = field(default_factory=Counter)
    throttled: int = 0


class RetryLater(Exception):
    """A call inside a scheduler task must wait: its task is queued again at the head of its
    lane, to run `delay` seconds from now at the earliest, and its worker serves others
    meanwhile. The lane's turns (`Pacer`) may hold it longer."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:.1f} s")
        self.delay = delay


class Pacer:
    """Gives each lane (one token: one Page's budget) turns at most `1 / pace` apart, pushed
    back while Graph reports high usage or throttles.

    A lane's pace starts at `PACE_MARGIN` of `calls_per_second`, is halved by a throttle
    without a regain time and rises slowly again with each call answered (additive increase,
    multiplicative decrease, as TCP finds a link's rate): Graph does not say how close to its
    limit a Page is, and a strict window refuses calls that a looser one would take.

    A scheduler may book a lane's turn itself, then run the call inside `booked_turn`, so that
    the call does not book a second one; the task's `TaskTries` ride along.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._full_pace = calls_per_second * PACE_MARGIN
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._every_lane_next = 0.0  # limits of the app or user: no lane has a turn before
        self._pace: dict[str, float] = {}
        self._slowed_at: dict[str, float] = {}
        self._running = threading.local()

    def now(self) -> float:
        return self._clock()

    def pace(self, lane: str) -> float:
        """The lane's calls per second now (0: not paced)."""
        with self._lock:
            return self._pace.get(lane, self._full_pace)

    def due(self, lane: str) -> float:
        """When the lane's next turn may start (on the pacer's clock)."""
        with self._lock:
            return max(self._next.get(lane, 0.0), self._every_lane_next)

    def book(self, lane: str) -> float:
        """Take the lane's next turn; returns when it starts."""
        with self._lock:
            start = max(self._clock(), self._next.get(lane, 0.0), self._every_lane_next)
            self._next[lane] = start + self._interval(lane)
            return start

    def wait_turn(self, lane: str) -> None:
        """Sleep until the lane's turn, unless the scheduler booked it for this call."""
        if getattr(self._running, "lane", None) == lane:
            self._running.lane = None
        else:
            delay = self.book(lane) - self._clock()
            if delay > 0:
                self._sleep(delay)
        # Graph counts a call when it arrives: a call that goes out late (a busy interpreter, a
        # long sleep) moves the lane's next turn with it, or the next call would follow it
        # closer than the pace allows.
        with self._lock:
            self._next[lane] = max(self._next.get(lane, 0.0), self._clock() + self._interval(lane))

    def _interval(self, lane: str) -> float:
        pace = self._pace.get(lane, self._full_pace)
        return 1.0 / pace if pace else 0.0

    @contextmanager
    def booked_turn(self, lane: str, tries: TaskTries | None = None) -> Iterator[None]:
        """The first call of `lane` inside this block uses a turn already booked; with `tries`,
        the calls inside are those of a scheduler task, which raise `RetryLater` instead of
        waiting."""
        self._running.lane, self._running.tries = lane, tries
        try:
            yield
        finally:
            self._running.lane = self._running.tries = None

    def task_tries(self) -> TaskTries | None:
        """The tries of the scheduler task running on this thread, or None outside one."""
        return getattr(self._running, "tries", None)

    def push_back(self, lane: str, seconds: float, *, every_lane: bool = False) -> None:
        """No turn for the lane (or for every lane) in the next `seconds`."""
        with self._lock:
            until = self._clock() + seconds
            if every_lane:
                self._every_lane_next = max(self._every_lane_next, until)
            else:
                self._next[lane] = max(self._next.get(lane, 0.0), until)

    def slower(self, lane: str, sent_at: float, *, every_lane: bool = False) -> None:
        """Halve the lane's pace (or every lane's) after a throttle of a call sent at `sent_at`.
        Calls sent before the last halving were sent too fast already: they do not halve it
        again, so that the calls in flight of one burst count as one signal."""
        if not self._full_pace:
            return
        with self._lock:
            lanes = set(self._next) | {lane} if every_lane else {lane}
            slowest = self._full_pace * SLOWEST_SHARE
            for name in lanes:
                if sent_at < self._slowed_at.get(name, -1.0):
                    continue
                self._pace[name] = max(slowest, self._pace.get(name, self._full_pace) / 2)
                self._slowed_at[name] = self._clock()

    def answered(self, lane: str) -> None:
        """A call of the lane was answered: its pace rises a little, up to the full pace."""
        with self._lock:
            pace = self._pace.get(lane)
            if pace is not None:
                raised = pace + self._full_pace * RECOVERY_SHARE
                if raised >= self._full_pace:
                    del self._pace[lane]
                else:
                    self._pace[lane] = raised

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)


class GraphConnection:
    """What every token's client of one run shares: the HTTP session, pacing and statistics."""

    def __init__(
        self,
        *,
        base_url: str,
        api_version: str,
        pacing: Pacing,
        app_secret: str | None = None,
        redactor: Redactor | None = None,
        stats: CallStats | None = None,
        pacer: Pacer | None = None,
        pool_size: int = 10,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version.strip("/")
        self.pacing = pacing
        self.redact = redactor or REDACTOR
        self.redact.add(app_secret)
        self.stats = stats or CallStats()
        self.pacer = pacer or Pacer(pacing.max_calls_per_second)
        self.app_secret = app_secret
        self.session = session or requests.Session()
        # One connection per call in flight: requests keeps only 10 per host by default.
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 10))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def client(self, access_token: str, lane: str) -> GraphClient:
        """A client calling with `access_token`, paced in `lane` (one lane per Page token)."""
        self.redact.add(access_token)
        return GraphClient(self, access_token, lane)


class GraphClient:
    """Reads the Graph API with one access token."""

    def __init__(self, connection: GraphConnection, access_token: str, lane: str) -> None:
        self.connection = connection
        self.lane = lane
        self._token = access_token

    @property
    def access_token(self) -> str:
        return self._token

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET `/{version}/{path}` and return the decoded JSON object."""
        query = [(k, str(v)) for k, v in (params or {}).items() if v is not None]
        return self._request(f"/{self.connection.api_version}/{path.lstrip('/')}", query)

    def get_next(self, next_url: str) -> dict[str, Any]:
        """GET a `paging.next` URL, rebased on our base URL and stripped of its embedded token."""
        log.debug("following %s", self.connection.redact(next_url))
        # As given: Graph's cursors may repeat a parameter or leave one blank.
        path, query = _public_query(next_url)
        return self._request(path, query)

    def walk(self, listing: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """`listing` and every page after it, following `paging.next` until it is absent."""
        while True:
            yield listing
            following = next_page_url(listing)
            if not following:
                return
            listing = self.get_next(following)

    def _request(self, path: str, query: Query) -> dict[str, Any]:
        """One call, retried and waited for. Inside a scheduler task every wait becomes
        `RetryLater`, so that no worker sleeps; elsewhere the call waits in place."""
        pacer = self.connection.pacer
        task = pacer.task_tries()
        tries = task or TaskTries()
        while True:
            pacer.wait_turn(self.lane)
            sent_at = pacer.now()
            try:
                answer = self._call(path, query)
            except GraphError as error:
                if error.kind is ErrorKind.THROTTLED:
                    self._wait_for_throttle(error, tries, sent_at)
                    delay = 0.0  # the lanes pushed back wait for the throttle
                elif error.is_retryable:
                    delay = self._retry_delay(tries, path, query, error)
                else:
                    raise
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _BadBody,
            ) as error:
                delay = self._retry_delay(tries, path, query, error)
            else:
                pacer.answered(self.lane)
                self.connection.stats.add(succeeded=1)
                return answer
            if task is not None:
                raise RetryLater(delay)
            if delay:
                pacer.sleep(delay)

    def _retry_delay(self, tries: TaskTries, path: str, query: Query, error: Exception) -> float:
        """How long to wait before trying again after a transient failure; raises when the
        call has had its `max_attempts`."""
        pacing, stats = self.connection.pacing, self.connection.stats
        reason = str(error) if isinstance(error, GraphError) else _short_reason(error)
        call = hash((path, *sorted(query)))
        tries.attempts[call] += 1
        attempts = tries.attempts[call]
        if attempts >= pacing.max_attempts:
            where = f"Graph API at {self.connection.base_url}"
            others = stats.succeeded > 0
            if isinstance(error, GraphError):
                raise GraphUnavailable(
                    f"{where} did not answer properly after {attempts} attempts (last: {error})",
                    others_answered=others,
                ) from error
            if not stats.answered:
                raise GraphUnreachable(f"{where} could not be reached ({reason})") from None
            raise GraphUnavailable(
                f"{where} did not answer properly after {attempts} attempts ({reason})",
                others_answered=others,
            ) from None
        delay = min(pacing.max_retry_delay, pacing.retry_backoff * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)
        stats.add(retries=1)
        log.warning(
            "retrying %s in %.1f s (attempt %d of %d): %s",
            path,
            delay,
            attempts + 1,
            pacing.max_attempts,
            reason,
        )
        return delay

    def _call(self, path: str, query: Query) -> dict[str, Any]:
        connection = self.connection
        params = list(query)
        if connection.app_secret:
            proof = hmac.new(connection.app_secret.encode(), self._token.encode(), hashlib.sha256)
            params.append(("appsecret_proof", proof.hexdigest()))
        log.debug("GET %s?%s", path, connection.redact(urlencode(query)))
        connection.stats.add(calls=1)
        response = connection.session.get(
            f"{connection.base_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=connection.pacing.timeout,
        )
        connection.stats.add(answered=1)
        usage = usage_from_headers(response.headers)
        self._slow_down(usage)
        payload = _decode(response)
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            raise _graph_error(payload["error"], response.status_code, path, usage, connection)
        if response.status_code >= 400 or not isinstance(payload, dict):
            raise GraphError(
                f"HTTP {response.status_code} without a Graph error body",
                http_status=response.status_code,
                is_transient=response.status_code >= 500,
                path=path,
            )
        return payload

    def _slow_down(self, usage: Usage) -> None:
        """Slow down before Graph throttles: the nearer usage is to 100 %, the longer the pause."""
        pacing = self.connection.pacing
        threshold = pacing.slow_down_at_percent
        if usage.percent < threshold:
            return
        share = min(1.0, (usage.percent - threshold) / max(1.0, 100.0 - threshold))
        delay = max(usage.regain_seconds, pacing.usage_pause * share)
        if delay:
            self.connection.pacer.push_back(self.lane, delay)
            log.info("Graph usage at %.0f %%: slowing down by %.1f s", usage.percent, delay)

    def _wait_for_throttle(self, error: GraphError, tries: TaskTries, sent_at: float) -> None:
        """Push back the lane, or every lane for a limit of the app or the user, for as long as
        Graph says. Without a regain time the limit is a short one (Graph gives whole minutes):
        the lanes pushed back slow down, and wait briefly, longer each time the same call is
        refused again."""
        pacing, pacer = self.connection.pacing, self.connection.pacer
        every_lane = error.throttles_every_page
        delay = error.usage.regain_seconds if error.usage else 0.0
        if not delay:
            pacer.slower(self.lane, sent_at, every_lane=every_lane)
            backoff = pacing.throttle_backoff * 2 ** min(tries.throttled, 6)
            delay = min(backoff, pacing.max_throttle_wait) * random.uniform(0.5, 1.0)
        now = pacer.now()
        self.connection.stats.throttle(now, now + delay, pacing.max_throttle_wait)
        tries.throttled += 1
        log.warning(
            "throttled by Graph (code %s): %s waits %.1f s",
            error.code,
            "every Page" if every_lane else f"Page {self.lane}",
            delay,
        )
        pacer.push_back(self.lane, delay, every_lane=every_lane)


class _BadBody(Exception):
    """A body that is not JSON: a truncated answer or a proxy's error page."""


def _decode(response: requests.Response) -> Any:
    """orjson decodes Graph's large answers several times faster than `json`, but refuses a
    lone UTF-16 surrogate (Graph cuts snippets inside emoji): `json` takes what it refuses."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(response.content)
    except ValueError:
        raise _BadBody(
            f"HTTP {response.status_code}, {len(response.content)} bytes that are not JSON"
        ) from None


def _short_reason(error: BaseException) -> str:
    """A few words for a network failure, instead of urllib3's nested retry message."""
    text = str(error).lower()
    for words, reason in (
        ("refused", "connection refused"),
        ("name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("temporary failure in name resolution", "host name not found"),
        ("timed out", "timed out"),
        ("reset by peer", "connection reset"),
        ("remote end closed", "connection closed by the server"),
    ):
        if words in text:
            return reason
    return "invalid or truncated answers" if isinstance(error, _BadBody) else type(error).__name__


def _graph_error(
    body: dict[str, Any], status: int, path: str, usage: Usage, connection: GraphConnection
) -> GraphError:
    def as_int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    user_words = [str(body[key]) for key in ("error_user_title", "error_user_msg") if body.get(key)]
    return GraphError(
        connection.redact(str(body.get("message") or "unknown error")),
        code=as_int(body.get("code")),
        subcode=as_int(body.get("error_subcode")),
        http_status=status,
        is_transient=bool(body.get("is_transient")),
        fbtrace_id=body.get("fbtrace_id"),
        path=path,
        usage=usage,
        error_type=body.get("type"),
        user_message=connection.redact(": ".join(user_words)) if user_words else None,
    )


def without_secrets(url: str) -> str:
    """A `next` URL fit to keep across runs: its path and query, without the token or any other
    secret (`get_next` puts it back on the base URL)."""
    path, query = _public_query(url)
    return urlunsplit(("", "", path, urlencode(query), ""))


def _public_query(url: str) -> tuple[str, Query]:
    """A URL's path and its query's parameters, in order, but for the token and other secrets."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    return parts.path, [(key, value) for key, value in query if key.lower() not in _SECRET_PARAMS]


def next_page_url(listing: dict[str, Any]) -> str | None:
    """The `paging.next` of a Graph list, or None on the last page."""
    paging = listing.get("paging")
    return paging.get("next") if isinstance(paging, dict) else None


def page_of(url: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """What names the page a URL asks for: its path and parameters, in any order, but for
    the token and what a follow-up asks its own way (`fields`, `limit`)."""
    path, query = _public_query(url)
    return path, frozenset((key, value) for key, value in query if key not in ("fields", "limit"))
