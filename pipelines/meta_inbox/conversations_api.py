"""What meta-inbox asks the Conversations API: which Pages, which fields, how much per call.

Each method is one request (with Graph's own paging where noted), so that a scheduler can put
every call of a run in flight at its Page's pace. Built on `GraphClient`; knows nothing of dlt,
of state or of tables.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import UnknownPages
from .graph_client import GraphClient, GraphConnection, GraphUnavailable, next_page_url
from .graph_errors import ErrorKind, GraphError
from .rows import parse_time

log = logging.getLogger("meta_inbox")

INSTAGRAM_DETAILS = 20  # Instagram gives details of a thread's newest 20 messages only
# How Instagram may refuse details of older messages: 9000001 in the notes, whose exact code
# they leave open; an answer of another kind is then asked again without those details, and
# a refusal that stays is the listing's or the thread's own.
DETAILS_REFUSALS = frozenset(
    {ErrorKind.MESSAGE_DELETED, ErrorKind.INVALID_PARAMETER, ErrorKind.OTHER}
)
ATTACHMENT_FIELDS = "id,mime_type,name,size,file_url,image_data,video_data,generic_template"
SHARE_FIELDS = "id,link,name,description,template"
CONVERSATION_FIELDS = (
    "id,updated_time,message_count,unread_count,snippet,link,can_reply,is_subscribed,"
    "name,subject,scoped_thread_key,participants,senders,former_participants"
)
# Conversation Routing's field: Graph returns it only when asked, and may refuse it (100).
OWNER_FIELD = "is_owner"
PAGE_FIELDS = "id,name,instagram_business_account{id,username}"
# The Instagram API with Instagram Login: an account's own `/me` (its `user_id` is the id its
# threads and messages know it by; `id` is scoped to the app).
INSTAGRAM_ACCOUNT_FIELDS = "user_id,username"
FACEBOOK_LOGIN, INSTAGRAM_LOGIN = "facebook_page", "instagram_login"
# Threads archived before mid-2018 are in no folder: Graph lists them by a tag, on Messenger
# only. meta-inbox reads and stores them as a folder of this name.
LEGACY_ARCHIVE = "archived_legacy"
LEGACY_ARCHIVE_TAG = "action:archived"
# Fields of messages whose details Graph withholds (Instagram, beyond the newest 20).
BARE_MESSAGE_FIELDS = "id,created_time"


def message_fields(attachments_page_size: int) -> str:
    """Every documented message field, with attachments expanded in the same request."""
    return (
        "id,created_time,from,to,message,sticker,story,tags,reply_to,is_unsupported,reactions,"
        f"shares{{{SHARE_FIELDS}}},attachments.limit({attachments_page_size}){{{ATTACHMENT_FIELDS}}}"
    )


@dataclass(frozen=True)
class FacebookPage:
    """A Facebook Page to export, with the token its endpoints need (never printed)."""

    id: str
    name: str
    token: str = field(repr=False)
    instagram_id: str | None = None
    instagram_username: str | None = None
    # How it is read: a Facebook Page on `base_url`, or a professional Instagram account
    # without a Page on `instagram_base_url` (Instagram Login), whose id is its `user_id`.
    login: str = FACEBOOK_LOGIN

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms it can have: an Instagram Login account has only Instagram."""
        return ("instagram",) if self.login == INSTAGRAM_LOGIN else ("messenger", "instagram")

    @property
    def own_ids(self) -> frozenset[str]:
        """Ids under which the Page itself sends messages, on either platform."""
        return frozenset(i for i in (self.id, self.instagram_id) if i)


# A thread's own fields (participants, snippet...) weigh about as much as this many messages.
THREAD_WEIGHT = 2


@dataclass(frozen=True)
class ListingSize:
    """How much one listing call asks for: threads, and messages nested in each."""

    threads: int
    messages: int

    def weight(self, counts: Sequence[int | None]) -> int:
        """The messages (and thread fields) an answer at this size holds, for threads whose
        message counts are `counts` (None: not given, so as many as asked)."""
        return sum(
            min(self.messages if count is None else count, self.messages) + THREAD_WEIGHT
            for count in counts[: self.threads]
        )


class SizeCap:
    """What Graph's response-size cap has been seen to allow, as a weight (see
    `ListingSize.weight`). Learned across the run, since the cap is Graph's and not a Page's, but
    consulted only to size the retry of a listing Graph refused: a listing that fits is always
    asked at full size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fits = 0  # the heaviest answer Graph gave
        self._refused: int | None = None  # the lightest request Graph refused

    def fitted(self, weight: int) -> None:
        with self._lock:
            if self._refused is None or weight < self._refused:
                self._fits = max(self._fits, weight)

    def refused(self, weight: int) -> int:
        """Record a refusal; the weight a retry should stay within."""
        with self._lock:
            self._refused = weight if self._refused is None else min(self._refused, weight)
        return self.budget() or 0

    def budget(self) -> int | None:
        """Halfway between the heaviest answer known to fit (or half the lightest refusal,
        when none came near) and that refusal: each refusal or answer narrows the gap, so a
        run soon asks close to the cap. None before any refusal."""
        with self._lock:
            if self._refused is None:
                return None
            fits = self._fits if self._fits < self._refused else 0
            return (max(fits, self._refused // 2) + self._refused) // 2


@dataclass(frozen=True)
class Upcoming:
    """Message counts of the threads a folder lists next, learned when Graph refused a page."""

    counts: tuple[int | None, ...]
    to_the_end: bool  # no thread follows them

    def after(self, listed: int) -> Upcoming:
        return Upcoming(self.counts[listed:], self.to_the_end)

    def fitting(self, size: ListingSize, budget: int, page_size: int) -> ListingSize | None:
        """The listing to ask within `budget`: threads with `size.messages` nested (each short
        nested page would cost a follow-up call per thread), else one thread with fewer nested
        messages; None when not even one message fits.

        Known to the folder's end, the threads are split into as few pages as the budget
        allows, of even weight (the same calls as filling each page, further from the cap); the
        last page is asked full, so that Graph's answer ends the folder rather than point at a
        next, empty page."""
        weights = list(accumulate(ListingSize(1, size.messages).weight([c]) for c in self.counts))
        within = [weight for weight in weights if weight <= budget]
        if not within:
            nested = min(size.messages, budget - THREAD_WEIGHT)
            return ListingSize(1, nested) if nested >= 1 else None
        if not self.to_the_end:
            return ListingSize(len(within), size.messages)
        if len(within) == len(weights):
            return ListingSize(page_size, size.messages)
        target = weights[-1] / math.ceil(weights[-1] / budget)
        threads = min(range(len(within)), key=lambda i: abs(within[i] - target)) + 1
        return ListingSize(threads, size.messages)


@dataclass(frozen=True)
class TakenPage:
    """A page of a list (threads or messages) as a chain took it: the `next` that gave it (None:
    the list's start), the ids it held, and the oldest time among them."""

    asked: str | None
    ids: frozenset[str]
    oldest: datetime | None

    @classmethod
    def of(
        cls, asked: str | None, items: list[dict[str, Any]], oldest: datetime | None = None
    ) -> TakenPage:
        """The page of `items` (Graph's objects), asked at `asked`, whose oldest time is
        `oldest` (None: items without a time, attachments)."""
        return cls(asked, frozenset(str(item.get("id")) for item in items), oldest)

    def lists_below(
        self, items: list[dict[str, Any]], time_field: str | None, unseen: set[str]
    ) -> bool:
        """Whether `items`, in the list's order, hold one below this page: not on it, and
        after every item of it still listed, or as old as its oldest or older (or without a
        time). `unseen`: the page's ids not listed yet, updated."""
        for item in items:
            if (key := str(item.get("id"))) in self.ids:
                unseen.discard(key)
                continue
            time = parse_time(item.get(time_field)) if time_field else None
            if not unseen or time is None or self.oldest is None or time <= self.oldest:
                return True
        return False


@dataclass
class Listing:
    """One page of a folder's threads, and what it took to get it."""

    threads: list[dict[str, Any]]
    next_url: str | None
    size: ListingSize  # the size Graph accepted
    details_limited: bool  # nested messages asked at Instagram's readable 20
    upcoming: Upcoming | None = None
    note: str | None = None  # what this call learned that the run should say once
    counts: Upcoming | None = None  # the message counts this page was sized by, if learned

    @property
    def messages(self) -> int:
        """Messages nested in the listed threads."""
        return sum(map(_nested_count, self.threads))


class ConversationsApi:
    """The calls of one run, with the page sizes to ask for."""

    def __init__(
        self,
        connection: GraphConnection,
        access_token: str,
        *,
        page_size: int,
        messages_page_size: int,
        attachments_page_size: int,
        instagram: GraphConnection | None = None,
    ) -> None:
        """`instagram`: the connection to the Instagram API with Instagram Login, tried when
        the Facebook host refuses the token as no token of its own."""
        self.connection = connection
        self.instagram = instagram
        self.user = connection.client(access_token, lane="discovery")
        self.page_size = page_size
        self.messages_page_size = messages_page_size
        self.attachments_page_size = attachments_page_size
        self._caps: dict[tuple[str, str], SizeCap] = defaultdict(SizeCap)
        self._lock = threading.Lock()
        self._owner_refused: set[str] = set()  # Pages whose Graph refuses `is_owner`
        self._owner_answered: set[str] = set()  # Pages whose Graph answered it

    def client(self, page: FacebookPage) -> GraphClient:
        """The client of a Page: its token, paced in the Page's own lane, on its host."""
        connection = self.instagram if page.login == INSTAGRAM_LOGIN else self.connection
        assert connection is not None
        return connection.client(page.token, lane=page.id)

    def discover_pages(self, page_ids: list[str] | None = None) -> list[FacebookPage]:
        """The Pages to export: those a user token manages, or the one a Page token stands for.

        A Page that `/me/accounts` lists without a token (the user's role gives none) gets the
        user token: Graph then refuses its conversations with 210, reported for that Page.
        """
        try:
            first = self.user.get("me/accounts", {"fields": f"{PAGE_FIELDS},access_token"})
            raws = [raw for listing in self.user.walk(first) for raw in listing.get("data", [])]
            pages = [_page(raw, raw.get("access_token") or self.user.access_token) for raw in raws]
        except GraphError as error:
            if error.kind is ErrorKind.NO_ACCOUNTS_EDGE:
                pages = [
                    _page(self.user.get("me", {"fields": PAGE_FIELDS}), self.user.access_token)
                ]
            elif error.kind is ErrorKind.TOKEN and error.subcode is None and self.instagram:
                pages = [self._instagram_account(error)]
            else:
                raise
        for page in pages:
            self.connection.redact.add(page.token)
        if not page_ids:
            return pages
        known = {page.id for page in pages}
        missing = [page_id for page_id in page_ids if page_id not in known]
        if missing:
            raise UnknownPages(missing, sorted(known))
        return [page for page in pages if page.id in page_ids]

    def _instagram_account(self, refused: GraphError) -> FacebookPage:
        """The account an Instagram User token stands for, asked of the Instagram host after the
        Facebook host took the token for no token (190 without a subcode). A token that host
        refuses too is simply invalid: the Facebook host's answer is raised, with both hosts
        named."""
        assert self.instagram is not None
        client = self.instagram.client(self.user.access_token, lane="discovery")
        try:
            raw = client.get("me", {"fields": INSTAGRAM_ACCOUNT_FIELDS})
        except GraphError as error:
            if error.kind is not ErrorKind.TOKEN:
                raise
            refused.message = (
                f"{refused.message} (neither {self.connection.base_url} nor "
                f"{self.instagram.base_url} takes this token)"
            )
            raise refused from None
        account_id = str(raw.get("user_id") or raw["id"])
        username = raw.get("username")
        return FacebookPage(
            id=account_id,
            name=str(username or ""),
            token=self.user.access_token,
            instagram_id=account_id,
            instagram_username=username,
            login=INSTAGRAM_LOGIN,
        )

    def list_threads(
        self,
        page: FacebookPage,
        platform: str,
        folder: str,
        *,
        next_url: str | None,
        details_limited: bool,
        upcoming: Upcoming | None = None,
        user_id: str | None = None,
    ) -> Listing:
        """One page of a folder's threads, newest `updated_time` first, each with its newest
        messages: the folder's first page, or the page Graph's `next_url` points at (followed as
        given, kept from an earlier run too; only `limit` and `fields` are ours to set).

        When Graph finds the page too heavy, one light call learns how many messages its threads
        hold, and the page is asked again with as many threads as fit (see `SizeCap`); those
        counts, passed back as `upcoming`, size the next page without a refusal. Code 1 without
        the English "reduce the amount of data" is retried as transient first; when it keeps
        coming, the page is taken as too heavy all the same. Instagram may refuse, rather than
        leave out, details of messages older than a thread's newest 20 (with 9000001, or
        another code: `DETAILS_REFUSALS`): the page is then asked again with 20 nested
        messages, all of them readable, before anything else is tried.

        `is_owner` is asked until a Page's Graph refuses a folder's first page with 100 before
        any listing of the Page that asked for it was answered: the page is asked again without
        it, and when that is answered the field is dropped for the Page for the rest of the run
        (the listing's `note` says so). A refusal that stays is the folder's, and is raised.
        """
        client = self.client(page)
        nested = INSTAGRAM_DETAILS if details_limited else self.messages_page_size
        size = ListingSize(self.page_size, nested)
        cap = self._caps[page.id, platform]
        if upcoming and upcoming.counts and (budget := cap.budget()) is not None:
            size = upcoming.fitting(size, budget, self.page_size) or size
        ask = _Asker(
            client, f"{page.id}/conversations", _first(platform, folder, user_id), next_url
        )
        owner = self.asks_owner(page)
        probing_owner = False
        while True:
            try:
                answer = ask(limit=size.threads, fields=self._listing_fields(size.messages, owner))
            except (GraphError, GraphUnavailable) as failure:
                if _too_heavy(failure):
                    if not (upcoming and upcoming.counts):
                        upcoming = self._upcoming(ask, size.threads)
                    if not upcoming.counts:
                        raise
                    budget = cap.refused(size.weight(upcoming.counts))
                    if (smaller := upcoming.fitting(size, budget, self.page_size)) is None:
                        raise
                    log.info("Graph asked for less data on %s/%s: %s", page.id, folder, smaller)
                    size = smaller
                    continue
                refused = failure.kind if isinstance(failure, GraphError) else None
                if platform == "instagram" and not details_limited and refused in DETAILS_REFUSALS:
                    details_limited = True
                    size = ListingSize(size.threads, min(size.messages, INSTAGRAM_DETAILS))
                    continue
                invalid = refused is ErrorKind.INVALID_PARAMETER
                if invalid and owner and next_url is None and not self._owner_known(page):
                    owner, probing_owner = False, True
                    continue
                raise
            threads = answer.get("data", [])
            cap.fitted(size.weight([_nested_count(thread) for thread in threads]))
            rest = upcoming.after(len(threads)) if upcoming else None
            listing = Listing(
                threads, next_page_url(answer), size, details_limited, rest, counts=upcoming
            )
            if owner:
                with self._lock:
                    self._owner_answered.add(page.id)
            if probing_owner:
                with self._lock:
                    self._owner_refused.add(page.id)
                listing.note = (
                    f"Page {page.id} ({page.name}): Graph refuses `is_owner` (Conversation "
                    "Routing is not set up for this app): conversations.is_owner stays empty "
                    "for this Page"
                )
            return listing

    def _owner_known(self, page: FacebookPage) -> bool:
        """Whether Graph answered a listing of this Page that asked for `is_owner`: a 100
        then is about something else."""
        with self._lock:
            return page.id in self._owner_answered

    def asks_owner(self, page: FacebookPage) -> bool:
        """Whether listings of this Page still ask for `is_owner`."""
        with self._lock:
            return page.id not in self._owner_refused

    def thread_ids(
        self, page: FacebookPage, platform: str, folder: str | None, limit: int
    ) -> list[str]:
        """The ids of a folder's newest threads (no `folder`: Graph's default listing), asked
        without their fields: a light call that can fail only for the listing itself."""
        params = {"platform": platform, "folder": folder, "limit": str(limit), "fields": "id"}
        answer = self.client(page).get(f"{page.id}/conversations", params)
        return [str(thread.get("id")) for thread in answer.get("data", [])]

    def folder_ends_below(
        self,
        page: FacebookPage,
        platform: str,
        folder: str,
        taken: TakenPage,
        *,
        user_id: str | None = None,
    ) -> bool:
        """Whether a folder's listing ends below a page of it a chain took (`_ends_below`)."""
        first = _first(platform, folder, user_id)
        ask = _Asker(self.client(page), f"{page.id}/conversations", first, taken.asked)
        return _ends_below(ask, taken, "updated_time")

    def messages_end_below(self, page: FacebookPage, thread: str, taken: TakenPage) -> bool:
        """Whether a thread's messages end below a page of them a chain took (`_ends_below`)."""
        ask = _Asker(self.client(page), f"{thread}/messages", {}, taken.asked)
        return _ends_below(ask, taken, "created_time")

    @staticmethod
    def _upcoming(ask: _Asker, limit: int) -> Upcoming:
        """How many messages each thread of a listing holds, asked without the messages."""
        answer = ask(limit=limit, fields="id,message_count")
        threads = answer.get("data", [])
        return Upcoming(
            tuple(thread.get("message_count") for thread in threads),
            to_the_end=next_page_url(answer) is None or len(threads) < limit,
        )

    def older_messages(
        self, page: FacebookPage, thread: str, next_url: str | None, *, details: bool
    ) -> dict[str, Any]:
        """The page of a thread's messages that `next_url` (a nested `paging.next`) points at,
        or its newest (None: the thread is read again from its start), asked at
        `messages_page_size` whatever size the nested list had.

        `details=False` asks only ids and times (Instagram's older messages). A page Graph finds
        too heavy is asked again smaller, for this call only.
        """
        ask = _Asker(self.client(page), f"{thread}/messages", {}, next_url)
        fields = message_fields(self.attachments_page_size) if details else BARE_MESSAGE_FIELDS
        limit = self.messages_page_size
        while True:
            try:
                return ask(limit=limit, fields=fields)
            except (GraphError, GraphUnavailable) as failure:
                if not _too_heavy(failure) or limit == 1:
                    raise
                limit //= 2

    def more_attachments(
        self, page: FacebookPage, message: str, next_url: str | None
    ) -> dict[str, Any]:
        """The page of a message's attachments that `next_url` (its list's `next`) points at,
        followed as given but for the `limit` and `fields` it was asked with, or its first (None:
        the list is read again from its start)."""
        ask = _Asker(self.client(page), f"{message}/attachments", {}, next_url)
        return ask(limit=self.attachments_page_size, fields=ATTACHMENT_FIELDS)

    def attachments_end_below(self, page: FacebookPage, message: str, taken: TakenPage) -> bool:
        """Whether a message's attachments end below a page of them a chain took (by ids:
        attachments have no time, and none come later)."""
        ask = _Asker(self.client(page), f"{message}/attachments", {}, taken.asked)
        return _ends_below(ask, taken, None)

    def _listing_fields(self, messages: int, owner: bool) -> str:
        owned = f",{OWNER_FIELD}" if owner else ""
        return (
            f"{CONVERSATION_FIELDS}{owned},messages.limit({messages})"
            f"{{{message_fields(self.attachments_page_size)}}}"
        )


class _Asker:
    """Asks a listing's page: the first, from our parameters, or the one a `next` points at,
    followed as given but for the `limit` and `fields` of this one call."""

    def __init__(
        self, client: GraphClient, path: str, first: dict[str, str], next_url: str | None
    ) -> None:
        self.client = client
        self.path = path
        self.first = first
        self.next_url = next_url

    def __call__(self, *, limit: int, fields: str) -> dict[str, Any]:
        if self.next_url is None:
            return self.client.get(self.path, self.first | {"limit": limit, "fields": fields})
        return self.client.get_next(_with_params(self.next_url, limit=str(limit), fields=fields))


def _ends_below(ask: _Asker, taken: TakenPage, time_field: str | None) -> bool:
    """Whether a list ends below a page a chain took. An empty last page reached by a `next`
    may be the list's end or a cursor that expired on the way (Graph may answer one with
    nothing): that page asked again now, by ids and times and one item longer, tells, and
    where that answer does not reach past the page (items came above it, or Graph gave fewer
    than asked), the light pages after it. False when the page lists nothing any more (its
    cursor expired too), or when too many items came above it to tell (a restart costs reads
    already done; an end taken for true would cost data)."""
    fields, limit = f"id,{time_field}" if time_field else "id", len(taken.ids) + 1
    answer = ask(limit=limit, fields=fields)
    if not answer.get("data"):
        return False
    unseen = set(taken.ids)
    for _ in range(_PROBE_CALLS):
        if taken.lists_below(answer.get("data") or [], time_field, unseen):
            return False
        following = next_page_url(answer)
        if following is None:
            return True
        answer = ask.client.get_next(_with_params(following, limit=str(limit), fields=fields))
    return False


# Light calls that look past a page for `_ends_below`.
_PROBE_CALLS = 5


def _too_heavy(failure: GraphError | GraphUnavailable) -> bool:
    """Graph refusing an answer's size: said in English, or as code 1 again and again."""
    if isinstance(failure, GraphError):
        return failure.kind is ErrorKind.TOO_MUCH_DATA
    cause = failure.__cause__
    return isinstance(cause, GraphError) and cause.code == 1


def _first(platform: str, folder: str, user_id: str | None) -> dict[str, str]:
    """The parameters of a folder's first listing page (fields and limit aside)."""
    first = {"platform": platform, **folder_params(folder)}
    if user_id:
        first["user_id"] = user_id
    return first


def folder_params(folder: str) -> dict[str, str]:
    """The listing parameters that select a folder."""
    if folder == LEGACY_ARCHIVE:
        return {"tags": LEGACY_ARCHIVE_TAG}
    return {"folder": folder}


def platform_folders(platform: str, folders: Sequence[str]) -> list[str]:
    """The folders of `folders` that a platform has: the legacy archive is Messenger's."""
    return [f for f in folders if f != LEGACY_ARCHIVE or platform == "messenger"]


def attachments_go_on(attachments: dict[str, Any]) -> str | None:
    """The `next` of an attachment list that is not complete yet, else None.

    Graph's recorded answers put a `next` on complete attachment lists too, with equal `before`
    and `after` cursors: that shape, and only that one, ends a list that has a `next`."""
    following = next_page_url(attachments)
    if not following or not attachments.get("data"):
        return None
    cursors = attachments["paging"].get("cursors") or {}
    before = cursors.get("before")
    return None if before is not None and before == cursors.get("after") else following


def _nested_count(thread: dict[str, Any]) -> int:
    nested = thread.get("messages")
    return len(nested.get("data", [])) if isinstance(nested, dict) else 0


def _with_params(url: str, **params: str) -> str:
    """`url` with these parameters set, and the others as given (blank or repeated ones too)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()])))


def _page(raw: dict[str, Any], token: str) -> FacebookPage:
    instagram = raw.get("instagram_business_account") or {}
    return FacebookPage(
        id=str(raw["id"]),
        name=str(raw.get("name", "")),
        token=token,
        instagram_id=instagram.get("id"),
        instagram_username=instagram.get("username"),
    )
