"""The emulator's HTTP face: routing, tokens, paging, errors, usage headers, throttles, faults."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
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
    Activity,
    Conversation,
    Message,
    Page,
    User,
    add_activity,
    digest,
    generate_inbox,
    iso,
)

DEFAULT_VERSION = "v25.0"
DEFAULT_LIMIT = 25
PLATFORMS = ("messenger", "instagram")
JSON_TYPE = "application/json; charset=UTF-8"
VERSION_PREFIX = re.compile(r"^/(v\d+\.\d+)(?=/|$)")
BAD_GATEWAY = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"

USER_DEFAULT = parse_fields("id,name")
PAGE_DEFAULT = parse_fields("id,name")
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
        "There have been too many messenger api calls to this Page account. "
        f"Wait a bit and try again. {RATE_LIMIT_DOC}",
    ),
    "instagram": (
        80002,
        "There have been too many calls to this Instagram account. "
        f"Wait a bit and try again. {RATE_LIMIT_DOC}",
    ),
    "pages": (32, "Page request limit reached"),
}
EXPIRED_TOKENS = {
    458: "Error validating access token: The user has not authorized application.",
    460: "Error validating access token: The session has been invalidated because the user "
    "changed their password or Facebook has changed the session for security reasons.",
    463: "Error validating access token: Session has expired on Monday, 01-Jun-26 05:00:00 PDT. "
    "The current time is Monday, 01-Jun-26 05:00:01 PDT.",
    467: "Error validating access token: The session is invalid because the user logged out.",
}

Key = tuple[Any, ...]
Target = User | Page | Conversation | Message | None
T = TypeVar("T")


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
    # Graph's other possible answer for Instagram messages older than a thread's newest 20
    # (the notes leave it open): a list asking for their details fails with 9000001 instead
    # of leaving the details out.
    instagram_details_error: bool = False


@dataclass
class Limits:
    max_page_size: int = 100
    calls_per_window: int | None = None
    window_seconds: float = 60.0
    per_second: float | None = None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str]
    token_kind: str
    status: int
    error_code: int | None
    object_id: str | None


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
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.status = status
        self.transient = transient
        self.error_type = error_type

    def envelope(self, trace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error |= {"is_transient": self.transient, "fbtrace_id": trace_id}
        return {"error": error}


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
    short_page: float | None = None  # share of a page kept when the short-page fault fires
    headers: dict[str, str] = field(default_factory=dict)

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
    entries: list[tuple[Key, T]]
    more_before: bool
    more_after: bool


@dataclass(frozen=True)
class _Usage:
    percent: int
    regain_minutes: int
    admitted: bool


class _Meter:
    """Rolling call budgets per Page, the source of usage headers and throttling errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, deque[float]] = {}
        self._last: dict[str, float] = {}

    def admit(self, page_id: str, limits: Limits) -> _Usage:
        with self._lock:
            now = time.monotonic()
            window = self._calls.setdefault(page_id, deque())
            while window and window[0] <= now - limits.window_seconds:
                window.popleft()
            budget = limits.calls_per_window
            if limits.per_second and now - self._last.get(page_id, -1e9) < 1 / limits.per_second:
                return _Usage(self._percent(len(window), budget), 0, admitted=False)
            if budget is not None and len(window) >= budget:
                # Graph reports whole minutes, so waits under a minute read as 0.
                wait = window[0] + limits.window_seconds - now
                return _Usage(100, int(wait // 60), admitted=False)
            window.append(now)
            self._last[page_id] = now
            return _Usage(self._percent(len(window), budget), 0, admitted=True)

    @staticmethod
    def _percent(calls: int, budget: int | None) -> int:
        return 0 if not budget else min(100, 100 * calls // budget)


def _cursor(key: Key) -> str:
    compact = json.dumps(list(key), separators=(",", ":"))
    return base64.urlsafe_b64encode(compact.encode()).decode().rstrip("=")


def _bad_cursor(cursor: str) -> GraphError:
    return GraphError(100, f"(#100) Invalid cursor: {cursor}")


def _decode_cursor(cursor: str) -> Key:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError as err:
        raise _bad_cursor(cursor) from err
    if not (isinstance(key, list) and key and all(isinstance(p, int | str) for p in key)):
        raise _bad_cursor(cursor)
    return tuple(key)


def _window(
    entries: list[tuple[Key, T]],
    limit: int,
    after: str | None,
    before: str | None,
    keep: float | None = None,
) -> _Window[T]:
    """The page of `entries` (sorted by descending key) that follows `after` or precedes `before`.

    Cursors hold the key of the item they name, so a page resumes just past that item even when
    newer items were added at the head in between.
    """
    try:
        if before is not None and after is None:
            key = _decode_cursor(before)
            end = next((i for i, (k, _) in enumerate(entries) if k <= key), len(entries))
            start = max(0, end - limit)
        elif after is not None:
            key = _decode_cursor(after)
            start = next((i for i, (k, _) in enumerate(entries) if k < key), len(entries))
            end = start + limit
        else:
            start, end = 0, limit
    except TypeError as err:
        raise _bad_cursor(after or before or "") from err
    chosen = entries[start:end]
    if keep is not None and len(chosen) > 1:
        chosen = chosen[: max(1, int(len(chosen) * keep))]
    return _Window(chosen, more_before=start > 0, more_after=start + len(chosen) < len(entries))


def _paging(
    window: _Window[Any],
    limit: int,
    link: Callable[[str, str], str],
    *,
    trailing: bool,
    always_next: bool = False,
) -> dict[str, Any]:
    first, last = _cursor(window.entries[0][0]), _cursor(window.entries[-1][0])
    paging: dict[str, Any] = {"cursors": {"before": first, "after": last}}
    if window.more_after or always_next or (trailing and len(window.entries) >= limit):
        paging["next"] = link("after", last)
    if window.more_before:
        paging["previous"] = link("before", first)
    return paging


def _json_bytes(payload: Any) -> bytes:
    # Graph escapes non-ASCII characters and slashes in its JSON; clients must cope with both.
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def _message_entries(conversation: Conversation) -> list[tuple[Key, Message]]:
    return [((m.created_time, m.seq), m) for m in conversation.newest_first()]


def _conversation_entries(conversations: list[Conversation]) -> list[tuple[Key, Conversation]]:
    return [((c.updated_time, c.id), c) for c in conversations]


def _object_id(target: Target) -> str | None:
    match target:
        case Page() | Conversation():
            return target.id
        case Message():
            return target.conversation_id
    return None


def _positional(items: list[T]) -> list[tuple[Key, T]]:
    return [((-index,), item) for index, item in enumerate(items)]


class Emulator:
    """Meta's Graph API (Conversations API) for one deterministic inbox, served on 127.0.0.1."""

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
    ) -> None:
        self.inbox = generate_inbox(seed, scale)
        self.faults = faults or Faults()
        self.limits = limits or Limits()
        self.latency = latency
        self.app_secret = app_secret
        self._seed = seed
        self._port = port
        self._lock = threading.RLock()
        self._rng = random.Random(f"faults:{seed}")
        self._rng_lock = threading.Lock()
        self._meter = _Meter()
        self._calls: list[Call] = []
        self._expired: dict[str, int] = {}
        self._revoked: dict[str, set[str]] = {}
        self._withheld: set[str] = set()
        self._traces = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._server = _Server(("127.0.0.1", self._port), self)
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="graph-api-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("start the emulator first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def user_token(self) -> str:
        return self.inbox.user.access_token

    def page_token(self, page_id: str) -> str:
        page = self.inbox.page(page_id)
        if page is None:
            raise KeyError(page_id)
        return page.access_token

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def add_activity(self, seed: int = 1) -> Activity:
        with self._lock:
            return add_activity(self.inbox, seed)

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

    def _answer(self, method: str, target: str, authorization: str | None) -> _Reply:
        request = self._request(method, target, authorization)
        if self.latency:
            time.sleep(self.latency)
        if self._chance(self.faults.slow_rate):
            time.sleep(self.faults.slow_seconds)
        reply = self._fault_reply() or self._graph_reply(request)
        reply.truncate = not reply.drop and self._chance(self.faults.truncate_rate)
        call = Call(
            request.method,
            request.path,
            request.params,
            request.token_kind,
            0 if reply.drop else reply.status,
            reply.error_code,
            _object_id(request.target),
        )
        with self._lock:
            self._calls.append(call)
        return reply

    def _request(self, method: str, target: str, authorization: str | None) -> _Request:
        url = urlsplit(target)
        path = unquote(url.path)
        version = VERSION_PREFIX.match(path)
        bare_path = path[version.end() :] if version else path
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        token = query.pop("access_token", None)
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() in ("bearer", "oauth") and credential:
            token = credential.strip()
        head, *rest = bare_path.strip("/").split("/")
        with self._lock:
            kind, page = self._identify(token)
            request = _Request(
                method=method,
                path=bare_path or "/",
                raw_path=url.path,
                version=version.group(1) if version else DEFAULT_VERSION,
                query=query,
                token=token,
                token_kind=kind,
                page=page,
                head=head,
                rest=rest,
                target=self._resolve(head, kind, page),
            )
        if self._chance(self.faults.short_page_rate):
            with self._rng_lock:
                request.short_page = self._rng.uniform(0.2, 0.8)
        return request

    def _identify(self, token: str | None) -> tuple[str, Page | None]:
        if token is None:
            return "none", None
        if token == self.inbox.user.access_token:
            return "user", None
        everyone = [*self.inbox.pages, self.inbox.unmanaged_page]
        page = next((p for p in everyone if p.access_token == token), None)
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

    def _fault_reply(self) -> _Reply | None:
        faults = self.faults
        if self._chance(faults.drop_rate):
            return _Reply(0, b"", {}, drop=True)
        if self._chance(faults.server_error_rate):
            message = "An unexpected error has occurred. Please retry your request later."
            return self._error_reply(GraphError(2, message, status=500, transient=True))
        if self._chance(faults.unknown_error_rate):
            message = "An unknown error occurred"
            return self._error_reply(GraphError(1, message, status=500, transient=True))
        if self._chance(faults.non_json_rate):
            return _Reply(502, BAD_GATEWAY, {"Content-Type": "text/html; charset=utf-8"})
        return None

    def _graph_reply(self, request: _Request) -> _Reply:
        try:
            with self._lock:
                body = _json_bytes(self._dispatch(request))
        except GraphError as err:
            return self._error_reply(err, request.headers)
        limit = self.faults.max_response_bytes
        if limit is not None and len(body) > limit:
            message = "Please reduce the amount of data you're asking for, then retry your request"
            return self._error_reply(GraphError(1, message, status=500), request.headers)
        return _Reply(200, body, {"Content-Type": JSON_TYPE, **request.headers})

    def _error_reply(self, error: GraphError, headers: dict[str, str] | None = None) -> _Reply:
        trace_id = "A" + digest(self._seed, "trace", next(self._traces), length=22)
        body = _json_bytes(error.envelope(trace_id))
        reply_headers = {"Content-Type": JSON_TYPE, **(headers or {})}
        return _Reply(error.status, body, reply_headers, error_code=error.code)

    # -- Graph semantics -------------------------------------------------------------------

    def _dispatch(self, request: _Request) -> Any:
        self._authenticate(request)
        if request.method != "GET":
            raise GraphError(100, f"(#100) Unsupported {request.method.lower()} request.")
        self._charge(request)
        self._check_access(request)
        target, rest = request.target, request.rest
        match target, rest:
            case User(), []:
                values = {"id": target.id, "name": target.name}
                return render(values, self._fields(request, "User", USER_DEFAULT))
            case User(), ["accounts"]:
                return self._accounts(request)
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
                return self._message_json(request, self._detailed(target), target, fields)
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
        if request.token_kind == "invalid":
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
        if token in self._expired:
            subcode = self._expired[token]
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

    def _usage_type(self, request: _Request) -> str:
        match request.target, request.rest:
            case (Conversation() | Message()) as target, _:
                return self._conversation_of(target).platform
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
        load = {
            "call_count": usage.percent,
            "total_cputime": usage.percent // 2,
            "total_time": usage.percent * 3 // 4,
        }
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
        for permission in sorted(self._revoked.get(page_id, ())):
            if platform == "instagram" or not permission.startswith("instagram_"):
                message = f"(#200) Requires {permission} permission to manage the object"
                raise GraphError(200, message)

    def _conversation_of(self, target: Conversation | Message) -> Conversation:
        if isinstance(target, Conversation):
            return target
        conversation = self.inbox.conversation(target.conversation_id)
        assert conversation is not None, "every message belongs to a stored conversation"
        return conversation

    def _detailed(self, message: Message) -> Conversation:
        conversation = self._conversation_of(message)
        if not conversation.is_detailed(message):
            raise GraphError(9000001, "This Message has been deleted by the user or the business.")
        return conversation

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
        return fields

    def _limit(self, raw: str | None) -> int:
        if raw is None:
            return DEFAULT_LIMIT
        if not raw.isdigit() or int(raw) == 0:
            raise GraphError(100, f"(#100) Param limit must be a positive integer: {raw}")
        return int(raw)

    # -- lists -----------------------------------------------------------------------------

    def _accounts(self, request: _Request) -> dict[str, Any]:
        fields = self._fields(request, "Page", ACCOUNT_DEFAULT)
        entries = _positional(self.inbox.pages)

        def account(page: Page) -> dict[str, Any]:
            values = page.graph_values()
            if page.id in self._withheld:
                del values["access_token"]
            return render(values, fields)

        return self._listing(request, entries, account)

    def _conversations(self, request: _Request, page: Page) -> dict[str, Any]:
        if request.token_kind != "page":
            raise _page_token_required()
        raw_platform = request.query.get("platform", "messenger")
        platform = raw_platform.lower()
        if platform not in PLATFORMS:
            raise GraphError(100, f"(#100) Invalid platform: {raw_platform}")
        if platform == "instagram" and page.instagram is None:
            raise GraphError(
                100, f"(#100) The Page {page.id} has no linked Instagram professional account"
            )
        folder = request.query.get("folder", "inbox").lower()
        if folder not in FOLDERS:
            raise GraphError(100, f"(#100) Param folder must be one of {', '.join(FOLDERS)}")
        self._check_permissions(page.id, platform)
        fields = self._fields(request, "Conversation", CONVERSATION_DEFAULT)
        conversations = self.inbox.conversations_of(page.id, platform, folder)
        if user_id := request.query.get("user_id"):
            conversations = [
                c for c in conversations if any(p.id == user_id for p in c.participants)
            ]
        return self._listing(
            request,
            _conversation_entries(conversations),
            lambda conversation: self._conversation_json(request, conversation, fields),
        )

    def _messages(self, request: _Request, conversation: Conversation) -> dict[str, Any]:
        fields = self._fields(request, "Message", MESSAGE_DEFAULT)
        return self._listing(
            request,
            _message_entries(conversation),
            lambda message: self._message_json(request, conversation, message, fields),
        )

    def _attachments(self, request: _Request, message: Message) -> dict[str, Any]:
        self._detailed(message)
        fields = self._fields(request, "MessageAttachment", ATTACHMENT_DEFAULT)
        entries = _positional(message.attachments)
        return self._listing(request, entries, lambda attachment: render(attachment, fields))

    def _listing(
        self, request: _Request, entries: list[tuple[Key, T]], item: Callable[[T], Any]
    ) -> dict[str, Any]:
        """A top-level edge page; its `next` repeats the request with the token and a cursor."""
        limit = min(self._limit(request.query.get("limit")), self.limits.max_page_size)
        after, before = request.query.get("after"), request.query.get("before")
        window = _window(entries, limit, after, before, request.short_page)

        def link(name: str, cursor: str) -> str:
            query = {k: v for k, v in request.query.items() if k not in ("after", "before")}
            query.setdefault("limit", str(DEFAULT_LIMIT))
            query |= {"access_token": request.token or "", name: cursor}
            return f"{self.base_url}{request.raw_path}?{urlencode(query)}"

        if not window.entries:
            return (
                {"data": [], "paging": {"previous": link("before", after)}}
                if after
                else {"data": []}
            )
        data = [item(value) for _, value in window.entries]
        trailing = self.faults.trailing_empty_page
        return {"data": data, "paging": _paging(window, limit, link, trailing=trailing)}

    def _nested(
        self,
        request: _Request,
        owner_id: str,
        edge: str,
        selection: Field,
        entries: list[tuple[Key, T]],
        item: Callable[[T], Any],
        *,
        always_next: bool = False,
    ) -> dict[str, Any] | None:
        """A list inside a node; its `next` points at the standalone edge, token included."""
        if not entries:
            return None
        requested = selection.limit or DEFAULT_LIMIT
        limit = min(requested, self.limits.max_page_size)
        window = _window(entries, limit, selection.after, selection.before)
        if not window.entries:
            return {"data": []}

        def link(name: str, cursor: str) -> str:
            query = {"access_token": request.token or ""}
            if selection.children:
                query["fields"] = format_fields(selection.children)
            if "appsecret_proof" in request.query:
                query["appsecret_proof"] = request.query["appsecret_proof"]
            query |= {"limit": str(requested), name: cursor}
            return f"{self.base_url}/{request.version}/{owner_id}/{edge}?{urlencode(query)}"

        data = [item(value) for _, value in window.entries]
        trailing = self.faults.trailing_empty_page
        paging = _paging(window, limit, link, trailing=trailing, always_next=always_next)
        return {"data": data, "paging": paging}

    # -- nodes -----------------------------------------------------------------------------

    def _conversation_json(
        self, request: _Request, conversation: Conversation, fields: tuple[Field, ...]
    ) -> dict[str, Any]:
        def messages(selection: Field) -> dict[str, Any] | None:
            return self._nested(
                request,
                conversation.id,
                "messages",
                selection,
                _message_entries(conversation),
                lambda m: self._message_json(
                    request, conversation, m, selection.children or MESSAGE_DEFAULT
                ),
            )

        return render(conversation.graph_values(), fields, {"messages": messages})

    def _message_json(
        self,
        request: _Request,
        conversation: Conversation,
        message: Message,
        fields: tuple[Field, ...],
    ) -> dict[str, Any]:
        if not conversation.is_detailed(message):
            asked = {field.name for field in fields}
            if self.faults.instagram_details_error and asked - {"id", "created_time"}:
                raise GraphError(
                    9000001, "This Message has been deleted by the user or the business."
                )
            return {"id": message.id, "created_time": iso(message.created_time)}

        def attachments(selection: Field) -> dict[str, Any] | None:
            # Recorded responses show `next` even on a complete attachments list.
            return self._nested(
                request,
                message.id,
                "attachments",
                selection,
                _positional(message.attachments),
                lambda a: render(a, selection.children or ATTACHMENT_DEFAULT),
                always_next=True,
            )

        return render(message.graph_values(), fields, {"attachments": attachments})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up early (a timeout in a test) is not an emulator failure.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        reply = self.server.emulator._answer(
            self.command, self.path, self.headers.get("Authorization")
        )
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


def serve(port: int, seed: int, scale: int) -> None:
    """Run an emulator in the foreground until Ctrl-C (the `meta-inbox emulator` command)."""
    with Emulator(seed=seed, scale=scale, port=port) as emulator:
        page = emulator.inbox.pages[0]
        print(f"Graph API emulator listening on {emulator.base_url}", flush=True)
        print(f"user token: {emulator.user_token}", flush=True)
        print(f"page token for {page.name} ({page.id}): {page.access_token}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
