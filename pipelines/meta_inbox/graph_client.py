"""The Graph API client: HTTP, paging, pacing, retries and error classification.

It knows nothing of dlt. Everything that reaches a log line or an exception passes through
`Redactor`, because Graph embeds the access token in every `paging.next` URL.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

log = logging.getLogger("meta_inbox.graph")

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v25.0"

THROTTLE_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006})
PERMISSION_CODES = frozenset({10, *range(200, 300)})
TOKEN_INVALID = 190
PAGE_TOKEN_REQUIRED = 210
INVALID_PARAMETER = 100
OBJECT_NOT_FOUND_SUBCODE = 33
CANNOT_PARSE_FIELDS = 2500
MESSAGE_DELETED = 9000001
_REDUCE_DATA_HINT = "reduce the amount of data"
_SECRET_PARAMS = ("access_token", "appsecret_proof", "client_secret")
_SECRET_PARAM_RE = re.compile(r"((?:" + "|".join(_SECRET_PARAMS) + r")=)[^&\s\"'#]+", re.IGNORECASE)


def scrub_secret_params(text: str) -> str:
    """Mask the value of every `access_token=`-like query parameter in a URL or message."""
    return _SECRET_PARAM_RE.sub(r"\1***", text)


_NESTED_LIMIT_RE = re.compile(r"\.limit\((\d+)\)")


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


def redact_log_records(redactor: Redactor) -> None:
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


class GraphError(Exception):
    """An error answered by the Graph API, in its `{"error": {...}}` envelope."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        is_transient: bool = False,
        fbtrace_id: str | None = None,
        path: str = "",
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.is_transient = is_transient
        self.fbtrace_id = fbtrace_id
        self.path = path
        self.usage = usage

    def __str__(self) -> str:
        parts = [f"Graph API error {self.code}"]
        if self.subcode:
            parts.append(f"/{self.subcode}")
        parts.append(f" on {self.path}: {self.message}")
        return "".join(parts)

    @property
    def is_throttle(self) -> bool:
        return self.code in THROTTLE_CODES

    @property
    def asks_for_less_data(self) -> bool:
        return self.code == 1 and _REDUCE_DATA_HINT in self.message.lower()

    @property
    def is_retryable(self) -> bool:
        if self.asks_for_less_data or self.is_throttle:
            return False
        return (
            self.is_transient
            or self.code in (1, 2)
            or (self.http_status is not None and self.http_status >= 500 and self.code is None)
        )


class GraphUnavailable(Exception):
    """Graph could not be reached or kept answering garbage, after every retry."""


class ThrottleBudgetExceeded(Exception):
    """Waiting on Graph's rate limits would exceed the configured ceiling."""

    def __init__(self, waited: float, ceiling: float, needed: float) -> None:
        super().__init__(
            f"Graph API rate limits would need another {needed:.0f} s of waiting after "
            f"{waited:.0f} s already; the ceiling is {ceiling:.0f} s"
        )
        self.waited = waited
        self.ceiling = ceiling


@dataclass(frozen=True)
class Usage:
    """The highest usage percentage Graph reported on one answer, and its regain time."""

    percent: float = 0.0
    regain_seconds: float = 0.0

    @classmethod
    def from_headers(cls, headers: Any) -> Usage:
        percent, regain_minutes = 0.0, 0.0
        for name in (
            "x-business-use-case-usage",
            "x-app-usage",
            "x-page-usage",
            "x-ad-account-usage",
        ):
            raw = headers.get(name)
            if not raw:
                continue
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            for entry in _usage_entries(payload):
                for key in ("call_count", "total_cputime", "total_time", "acc_id_util_pct"):
                    value = entry.get(key)
                    if isinstance(value, int | float):
                        percent = max(percent, float(value))
                regain = entry.get("estimated_time_to_regain_access")
                if isinstance(regain, int | float):
                    regain_minutes = max(regain_minutes, float(regain))
        return cls(percent=percent, regain_seconds=regain_minutes * 60)


def _usage_entries(payload: Any) -> Iterator[dict[str, Any]]:
    """X-App-Usage is one flat object; X-Business-Use-Case-Usage maps ids to lists of objects."""
    if isinstance(payload, dict) and any(not isinstance(v, list) for v in payload.values()):
        yield payload
        return
    if isinstance(payload, dict):
        for entries in payload.values():
            yield from (e for e in entries if isinstance(e, dict))


@dataclass
class Pacing:
    """How the client spaces its calls and how long it keeps trying.

    Delays are in seconds. The defaults suit Meta's documented limits; tests shrink them.
    """

    max_calls_per_second: float = 2.0
    slow_down_at_percent: float = 75.0
    usage_pause: float = 60.0
    throttle_backoff: float = 30.0
    max_throttle_wait: float = 3600.0
    max_attempts: int = 6
    retry_backoff: float = 1.0
    max_retry_delay: float = 60.0
    timeout: float = 60.0


@dataclass
class CallStats:
    """What a run cost, for the summary. Shared by every client of one run."""

    calls: int = 0
    retries: int = 0
    throttled: int = 0
    throttle_wait: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: float) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


class _TokenPacer:
    """Spaces the calls made with one token: a minimum interval, stretched as usage climbs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_allowed = 0.0
        self.extra_delay = 0.0


class GraphClient:
    """Reads the Graph API with one access token.

    `with_token` gives a sibling client for another token (a Page token found through
    `/me/accounts`) that shares the session, the statistics and the redactor.
    """

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        app_secret: str | None = None,
        pacing: Pacing | None = None,
        stats: CallStats | None = None,
        redactor: Redactor | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version.strip("/")
        self.pacing = pacing or Pacing()
        self.stats = stats or CallStats()
        self.redact = redactor or Redactor()
        self.redact.add(access_token)
        self.redact.add(app_secret)
        self._token = access_token
        self._app_secret = app_secret
        self._session = session or requests.Session()
        self._sleep = sleep
        self._clock = clock
        self._pacers: dict[str, _TokenPacer] = {}
        self._pacers_lock = threading.Lock()
        # (fields, limit) Graph found too heavy → what it accepted: later requests start there.
        self._reductions: dict[tuple[str, str], tuple[str, str]] = {}

    @property
    def access_token(self) -> str:
        return self._token

    def with_token(self, access_token: str) -> GraphClient:
        sibling = GraphClient.__new__(GraphClient)
        sibling.__dict__.update(self.__dict__)
        sibling._token = access_token
        self.redact.add(access_token)
        return sibling

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET `/{version}/{path}` and return the decoded JSON object."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        return self._request(f"/{self.api_version}/{path.lstrip('/')}", query)

    def get_next(self, next_url: str) -> dict[str, Any]:
        """GET a `paging.next` URL, rebased on our base URL and stripped of its embedded token."""
        log.debug("following %s", self.redact(next_url))
        parts = urlsplit(next_url)
        query = {k: v for k, v in parse_qsl(parts.query) if k.lower() not in _SECRET_PARAMS}
        return self._request(parts.path, query)

    def paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield every page of a list edge, following `paging.next` until it is absent."""
        page = self.get(path, params)
        while True:
            yield page
            next_url = next_page_url(page)
            if not next_url:
                return
            page = self.get_next(next_url)

    def _request(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        asked = (query.get("fields", ""), query.get("limit", ""))
        if asked in self._reductions:
            query["fields"], query["limit"] = self._reductions[asked]
            query = {k: v for k, v in query.items() if v}
        attempt = throttled = 0
        while True:
            try:
                return self._call(path, query)
            except GraphError as error:
                if error.asks_for_less_data and _shrink_request(query):
                    self._reductions[asked] = (query.get("fields", ""), query.get("limit", ""))
                    log.info("Graph asked for less data on %s: retrying with smaller pages", path)
                    continue
                if error.is_throttle:
                    self._wait_for_throttle(error, throttled)
                    throttled += 1
                    continue
                if not error.is_retryable or attempt + 1 >= self.pacing.max_attempts:
                    raise
                reason = str(error)
            except (requests.ConnectionError, requests.Timeout, _BadBody) as error:
                if attempt + 1 >= self.pacing.max_attempts:
                    raise GraphUnavailable(
                        f"Graph API at {self.base_url} did not answer {path} properly after "
                        f"{attempt + 1} attempts: {self.redact(str(error))}"
                    ) from None
                reason = self.redact(f"{type(error).__name__}: {error}")
            attempt += 1
            delay = min(
                self.pacing.max_retry_delay, self.pacing.retry_backoff * 2 ** (attempt - 1)
            ) * random.uniform(0.5, 1.0)
            self.stats.add(retries=1)
            log.warning(
                "retrying %s in %.1f s (attempt %d of %d): %s",
                path,
                delay,
                attempt + 1,
                self.pacing.max_attempts,
                reason,
            )
            self._sleep(delay)

    def _call(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        pacer = self._pacer()
        self._wait_turn(pacer)
        params = dict(query)
        if self._app_secret:
            params["appsecret_proof"] = hmac.new(
                self._app_secret.encode(), self._token.encode(), hashlib.sha256
            ).hexdigest()
        url = f"{self.base_url}{path}"
        log.debug("GET %s?%s", path, self.redact(urlencode(query)))
        self.stats.add(calls=1)
        response = self._session.get(
            url,
            params=params,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=self.pacing.timeout,
        )
        usage = Usage.from_headers(response.headers)
        self._adjust_pace(pacer, usage)
        payload = _decode(response)
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            raise _graph_error(payload["error"], response.status_code, path, usage, self.redact)
        if response.status_code >= 400 or not isinstance(payload, dict):
            raise GraphError(
                f"HTTP {response.status_code} without a Graph error body",
                http_status=response.status_code,
                is_transient=response.status_code >= 500,
                path=path,
            )
        return payload

    def _pacer(self) -> _TokenPacer:
        with self._pacers_lock:
            return self._pacers.setdefault(self._token, _TokenPacer())

    def _wait_turn(self, pacer: _TokenPacer) -> None:
        with pacer.lock:
            now = self._clock()
            wait = max(0.0, pacer.next_allowed - now)
            interval = (
                1.0 / self.pacing.max_calls_per_second if self.pacing.max_calls_per_second else 0
            )
            pacer.next_allowed = max(now, pacer.next_allowed) + interval + pacer.extra_delay
            pacer.extra_delay = 0.0
        if wait > 0:
            self._sleep(wait)

    def _adjust_pace(self, pacer: _TokenPacer, usage: Usage) -> None:
        """Slow down before Graph throttles: the nearer usage is to 100 %, the longer the pause."""
        threshold = self.pacing.slow_down_at_percent
        if usage.percent < threshold:
            return
        share = min(1.0, (usage.percent - threshold) / max(1.0, 100.0 - threshold))
        delay = max(usage.regain_seconds, self.pacing.usage_pause * share)
        with pacer.lock:
            pacer.extra_delay = max(pacer.extra_delay, delay)
        if delay:
            log.info("Graph usage at %.0f %%: slowing down by %.1f s", usage.percent, delay)

    def _wait_for_throttle(self, error: GraphError, times_before: int) -> None:
        """Wait as long as Graph says, else back off exponentially for this request."""
        delay = error.usage.regain_seconds if error.usage else 0.0
        if not delay:
            backoff = self.pacing.throttle_backoff * 2 ** min(times_before, 6)
            delay = min(backoff, self.pacing.max_throttle_wait) * random.uniform(0.5, 1.0)
        waited = self.stats.throttle_wait
        if waited + delay > self.pacing.max_throttle_wait:
            raise ThrottleBudgetExceeded(waited, self.pacing.max_throttle_wait, delay) from None
        self.stats.add(throttled=1, throttle_wait=delay)
        log.warning("throttled by Graph (code %s): waiting %.1f s", error.code, delay)
        self._sleep(delay)


class _BadBody(Exception):
    """A body that is not JSON: a truncated answer or a proxy's error page."""


def _decode(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _BadBody(
            f"HTTP {response.status_code}, {len(response.content)} bytes that are not JSON"
        ) from None


def _graph_error(
    body: dict[str, Any], status: int, path: str, usage: Usage, redact: Redactor
) -> GraphError:
    def as_int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    message = body.get("error_user_msg") or body.get("message") or "unknown error"
    return GraphError(
        redact(str(message)),
        code=as_int(body.get("code")),
        subcode=as_int(body.get("error_subcode")),
        http_status=status,
        is_transient=bool(body.get("is_transient")),
        fbtrace_id=body.get("fbtrace_id"),
        path=path,
        usage=usage,
    )


def _shrink_request(query: dict[str, str]) -> bool:
    """Halve the largest nested `.limit(n)` in `fields`, else the page `limit`. False at size 1."""
    fields = query.get("fields", "")
    limits = [int(n) for n in _NESTED_LIMIT_RE.findall(fields)]
    if limits and max(limits) > 1:
        largest = max(limits)
        query["fields"] = fields.replace(f".limit({largest})", f".limit({largest // 2})")
        return True
    limit = int(query.get("limit", 25))
    if limit > 1:
        query["limit"] = str(limit // 2)
        return True
    return False


def next_page_url(page: dict[str, Any]) -> str | None:
    """The `paging.next` of a Graph list, or None on the last page."""
    paging = page.get("paging")
    return paging.get("next") if isinstance(paging, dict) else None
