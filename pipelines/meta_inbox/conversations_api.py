"""What meta-inbox asks the Conversations API, and how it walks Pages, threads and messages.

Built on `GraphClient` (HTTP, paging, pacing); knows nothing of dlt or of tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from .graph_client import (
    INVALID_PARAMETER,
    MESSAGE_DELETED,
    GraphClient,
    GraphError,
    next_page_url,
)

log = logging.getLogger("meta_inbox")

PLATFORMS = ("messenger", "instagram")
INSTAGRAM_DETAILS = 20  # Instagram gives details of a thread's newest 20 messages only
FOLDERS = ("inbox", "other", "page_done", "spam")

ATTACHMENT_FIELDS = "id,mime_type,name,size,file_url,image_data,video_data,generic_template"
SHARE_FIELDS = "id,link,name,description,template"
CONVERSATION_FIELDS = (
    "id,updated_time,message_count,unread_count,snippet,link,can_reply,is_subscribed,"
    "name,subject,scoped_thread_key,participants,senders,former_participants"
)
PAGE_FIELDS = "id,name,instagram_business_account{id,username}"


def message_fields(attachments_page_size: int) -> str:
    """Every documented message field, with attachments expanded in the same request."""
    return (
        "id,created_time,from,to,message,sticker,story,tags,reply_to,is_unsupported,reactions,"
        f"shares{{{SHARE_FIELDS}}},attachments.limit({attachments_page_size}){{{ATTACHMENT_FIELDS}}}"
    )


@dataclass(frozen=True)
class Page:
    """A Facebook Page to export, with the token its endpoints need (never printed)."""

    id: str
    name: str
    token: str = field(repr=False)
    instagram_id: str | None = None
    instagram_username: str | None = None

    @property
    def own_ids(self) -> frozenset[str]:
        """Ids under which the Page itself sends messages, on either platform."""
        return frozenset(i for i in (self.id, self.instagram_id) if i)


class UnknownPages(Exception):
    """`page_ids` names Pages the token cannot read."""

    def __init__(self, missing: list[str], available: list[str]) -> None:
        super().__init__(
            f"page_ids {', '.join(missing)} not found among the Pages this token can read "
            f"({', '.join(available) or 'none'})"
        )
        self.missing = missing
        self.available = available


class ConversationsApi:
    """The Conversations API calls of one run, with the page sizes to ask for."""

    def __init__(
        self,
        client: GraphClient,
        *,
        page_size: int = 100,
        messages_page_size: int = 100,
        attachments_page_size: int = 25,
    ) -> None:
        self.client = client
        self.page_size = page_size
        self.messages_page_size = messages_page_size
        self.attachments_page_size = attachments_page_size
        self._instagram_refuses_old_details = False

    def pages(self, page_ids: list[str] | None = None) -> list[Page]:
        """The Pages to export: those a user token manages, or the one a Page token stands for."""
        try:
            pages = [
                _page(raw, raw.get("access_token"))
                for listing in self.client.paginate(
                    "me/accounts", {"fields": f"{PAGE_FIELDS},access_token", "limit": 100}
                )
                for raw in listing.get("data", [])
            ]
        except GraphError as error:
            if error.code != INVALID_PARAMETER or "accounts" not in error.message:
                raise
            # A Page token has no `accounts` edge: the token is the Page's own.
            pages = [_page(self.client.get("me", {"fields": PAGE_FIELDS}), None)]
        pages = [p if p.token else _with_token(p, self.client) for p in pages]
        for page in pages:
            self.client.redact.add(page.token)
        if not page_ids:
            return pages
        wanted = [str(i) for i in page_ids]
        missing = [i for i in wanted if i not in {p.id for p in pages}]
        if missing:
            raise UnknownPages(missing, [p.id for p in pages])
        return [p for p in pages if p.id in wanted]

    def conversation_pages(
        self, page: Page, platform: str, folder: str
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of threads, newest `updated_time` first, each with its newest messages.

        The caller stops iterating when it reaches threads it already has: no further call is made.
        """
        nested = self.messages_page_size
        if platform == "instagram" and self._instagram_refuses_old_details:
            nested = INSTAGRAM_DETAILS
        params = {
            "platform": platform,
            "folder": folder,
            "limit": self.page_size,
            "fields": self._listing_fields(nested),
        }
        client = self.client.with_token(page.token)
        path, next_url = f"{page.id}/conversations", None
        while True:
            try:
                listing = client.get_next(next_url) if next_url else client.get(path, params)
            except GraphError as error:
                if error.code != MESSAGE_DELETED or platform != "instagram":
                    raise
                if params["fields"] == self._listing_fields(INSTAGRAM_DETAILS):
                    raise
                # Instagram may refuse, rather than leave out, the details of messages older
                # than a thread's newest 20: ask for 20 per thread, all of them readable.
                self._instagram_refuses_old_details = True
                params["fields"] = self._listing_fields(INSTAGRAM_DETAILS)
                next_url = next_url and _with_params(next_url, fields=params["fields"])
                continue
            yield listing.get("data", [])
            next_url = next_page_url(listing)
            if not next_url:
                return

    def _listing_fields(self, messages: int) -> str:
        return (
            f"{CONVERSATION_FIELDS},messages.limit({messages})"
            f"{{{message_fields(self.attachments_page_size)}}}"
        )

    def message_pages(
        self, page: Page, conversation: dict[str, Any], platform: str
    ) -> Iterator[list[dict[str, Any]]]:
        """A thread's messages, newest first: the page that came with the thread, then older ones.

        The caller stops iterating once it reaches messages it already has.
        """
        nested = conversation.get("messages") or {}
        client = self.client.with_token(page.token)
        while True:
            yield [self._complete_attachments(client, m) for m in nested.get("data", [])]
            next_url = next_page_url(nested)
            if not next_url:
                return
            if platform == "instagram" and self._instagram_refuses_old_details:
                # Past the first page, all are older than the newest 20: ids and times only.
                next_url = _with_params(
                    next_url, fields="id,created_time", limit=str(self.messages_page_size)
                )
            try:
                nested = client.get_next(next_url)
            except GraphError as error:
                if error.code != MESSAGE_DELETED:
                    raise
                # Details refused for some message of this page (Instagram's older ones): keep
                # what Graph lists of them, ids and times, as it does when it leaves them out.
                nested = client.get_next(
                    _with_params(
                        next_url, fields="id,created_time", limit=str(self.messages_page_size)
                    )
                )

    def _complete_attachments(self, client: GraphClient, message: dict[str, Any]) -> dict[str, Any]:
        """Fetch the rest of a message's attachments when its nested list may go on.

        Graph adds a `next` even to complete attachment lists, so a `next` alone proves nothing:
        only a full page (as many as asked for, far more than a message usually carries) does.
        """
        attachments = message.get("attachments")
        if not isinstance(attachments, dict) or not self._may_go_on(attachments):
            return message
        items = list(attachments.get("data", []))
        listing = attachments
        while self._may_go_on(listing):
            listing = client.get_next(listing["paging"]["next"])
            items.extend(listing.get("data", []))
        return {**message, "attachments": {"data": items}}

    def _may_go_on(self, listing: dict[str, Any]) -> bool:
        next_url = next_page_url(listing)
        if not next_url:
            return False
        # The size asked for, as Graph echoes it in `next` (smaller after a "reduce the data").
        asked = parse_qs(urlsplit(next_url).query).get("limit", [self.attachments_page_size])[0]
        return len(listing.get("data", [])) >= int(asked)


def _with_params(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | params
    return urlunsplit(parts._replace(query=urlencode(query)))


def _page(raw: dict[str, Any], token: str | None) -> Page:
    instagram = raw.get("instagram_business_account") or {}
    return Page(
        id=str(raw["id"]),
        name=str(raw.get("name", "")),
        token=token or "",
        instagram_id=instagram.get("id"),
        instagram_username=instagram.get("username"),
    )


def _with_token(page: Page, client: GraphClient) -> Page:
    return Page(page.id, page.name, client.access_token, page.instagram_id, page.instagram_username)
