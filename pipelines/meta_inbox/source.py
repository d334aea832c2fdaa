"""The `meta_inbox` dlt source: one resource reads Graph, one transformer per table shapes rows.

Incremental state (all in the `threads` resource, committed by dlt together with the load):
- `folders[page/platform/folder]`: newest `updated_time` seen there. Listing stops at the first page
  whose oldest thread is older than that minus `lookback_seconds`.
- `threads[conversation_id]`: `[folder, newest message time, ids of the messages at that time]`.
  A listed thread is changed when it has messages past that cursor or sits in another folder; only
  changed threads are loaded, and only their messages past the cursor are read. Ties within one
  second are told apart by id. One cursor per thread, not one for all: see dlt-notes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dlt
from dlt.common.typing import TSecretStrValue
from dlt.extract.resource import DltResource

from . import rows
from .conversations_api import FOLDERS, PLATFORMS, ConversationsApi, Page
from .errors import BadInput, PageFailed, missing_token
from .graph_client import (
    DEFAULT_API_VERSION,
    DEFAULT_BASE_URL,
    INVALID_PARAMETER,
    OBJECT_NOT_FOUND_SUBCODE,
    PAGE_TOKEN_REQUIRED,
    PERMISSION_CODES,
    TOKEN_INVALID,
    CallStats,
    GraphClient,
    GraphError,
    GraphUnavailable,
    Pacing,
    Redactor,
    ThrottleBudgetExceeded,
)
from .rows import MessageBatch, Privacy, Thread, parse_time
from .tables import (
    CONVERSATION_PARTICIPANTS,
    CONVERSATIONS,
    MESSAGE_ATTACHMENTS,
    MESSAGE_REACTIONS,
    MESSAGE_RECIPIENTS,
    MESSAGE_SHARES,
    MESSAGE_TAGS,
    MESSAGES,
    PII_MODES,
    Table,
)

log = logging.getLogger("meta_inbox")
PROGRESS_EVERY = 30.0  # seconds between progress lines inside one long folder


@dataclass
class RunReport:
    """What a run did, for the CLI's summary. Filled in while the source is extracted."""

    stats: CallStats = field(default_factory=CallStats)
    redactor: Redactor = field(default_factory=Redactor)
    pages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changed_threads: int = 0
    new_messages: int = 0
    messages_without_details: int = 0
    page_failures: list[PageFailed] = field(default_factory=list)
    stopped_by: Exception | None = None


@dataclass(frozen=True)
class ThreadUpdate:
    """A changed thread and its new messages: what every table transformer reads."""

    thread: Thread
    messages: MessageBatch


@dataclass
class _MessageCursor:
    newest: datetime | None
    ids_at_newest: set[str]

    @classmethod
    def load(cls, entry: list[Any] | None) -> _MessageCursor:
        if not entry or not entry[1]:
            return cls(None, set())
        return cls(parse_time(entry[1]), set(entry[2]))

    def is_new(self, message: dict[str, Any], created: datetime) -> bool:
        if self.newest is None or created > self.newest:
            return True
        return created == self.newest and str(message["id"]) not in self.ids_at_newest

    def advance(self, message: dict[str, Any], created: datetime) -> None:
        if self.newest is None or created > self.newest:
            self.newest, self.ids_at_newest = created, set()
        if created == self.newest:
            self.ids_at_newest.add(str(message["id"]))

    def dump(self, folder: str) -> list[Any]:
        newest = self.newest.isoformat() if self.newest else None
        return [folder, newest, sorted(self.ids_at_newest)]


@dlt.source(name="meta_inbox", max_table_nesting=0)
def meta_inbox(
    access_token: TSecretStrValue = dlt.secrets.value,
    base_url: str = DEFAULT_BASE_URL,
    api_version: str = DEFAULT_API_VERSION,
    page_ids: list[str] | None = None,
    platforms: list[str] | None = None,
    folders: list[str] | None = None,
    start_date: str | None = None,
    lookback_seconds: int = 3600,
    page_size: int = 100,
    messages_page_size: int = 100,
    app_secret: TSecretStrValue | None = None,
    max_calls_per_second: float = 2.0,
    max_throttle_wait: float = 3600.0,
    throttle_backoff: float = 30.0,
    usage_pause: float = 60.0,
    retry_backoff: float = 1.0,
    max_attempts: int = 6,
    request_timeout: float = 60.0,
    pii: str = "keep",
    pii_salt: TSecretStrValue | None = None,
    report: RunReport | None = None,
) -> Sequence[DltResource]:
    """Messenger and Instagram conversations of the Pages an access token can read.

    `access_token` is a Page token or a user / system-user token (then every Page it manages,
    filtered by `page_ids`). Delays are in seconds. `pii` is `keep`, `hash` (with the secret
    `pii_salt`) or `drop`: see `rows.Privacy`. `report` collects figures for a summary.
    """
    if not access_token or not access_token.strip():
        raise missing_token()
    platforms = _checked("platforms", platforms, PLATFORMS)
    folders = _checked("folders", folders, FOLDERS)
    privacy = _privacy(pii, pii_salt)
    try:
        start = parse_time(start_date) if start_date else None
    except ValueError:
        raise BadInput(f"start_date {start_date!r} is not a date: use YYYY-MM-DD.") from None
    if page_ids and not all(str(p).isdigit() for p in page_ids):
        raise BadInput(f"page_ids {page_ids!r} must be Page ids (digits only).")
    report = report if report is not None else RunReport()
    report.redactor.add(privacy.salt)
    pacing = Pacing(
        max_calls_per_second=max_calls_per_second,
        max_throttle_wait=max_throttle_wait,
        throttle_backoff=throttle_backoff,
        usage_pause=usage_pause,
        retry_backoff=retry_backoff,
        max_attempts=max_attempts,
        timeout=request_timeout,
    )
    client = GraphClient(
        access_token,
        base_url=base_url,
        api_version=api_version,
        app_secret=app_secret,
        pacing=pacing,
        stats=report.stats,
        redactor=report.redactor,
    )
    api = ConversationsApi(client, page_size=page_size, messages_page_size=messages_page_size)
    reader = _InboxReader(
        api,
        report,
        page_ids=page_ids,
        platforms=platforms,
        folders=folders,
        start=start,
        lookback=timedelta(seconds=lookback_seconds),
    )

    @dlt.resource(name="threads", selected=False)
    def threads() -> Iterator[list[ThreadUpdate]]:
        yield from reader.read()

    return [
        threads,
        *(_table_resource(threads, table, shape, privacy) for table, shape in _SHAPES),
    ]


def _checked(name: str, values: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    chosen = [str(v).lower() for v in values] if values else list(allowed)
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise BadInput(f"{name} {unknown[0]!r} is unknown: use {', '.join(allowed)}.")
    return chosen


def _privacy(mode: str, salt: str | None) -> Privacy:
    chosen = str(mode).lower()
    if chosen not in PII_MODES:
        raise BadInput(f"pii {mode!r} is unknown: use {', '.join(PII_MODES)}.")
    if chosen == "hash" and not (salt and salt.strip()):
        raise BadInput(
            "pii = hash needs a secret salt: set pii_salt (SOURCES__META_INBOX__PII_SALT or "
            ".dlt/secrets.toml)."
        )
    return Privacy(chosen, salt or "")


def _table_resource(
    parent: DltResource,
    table: Table,
    shape: Callable[[ThreadUpdate], list[dict[str, Any]]],
    privacy: Privacy,
) -> DltResource:
    def transform(updates: list[ThreadUpdate]) -> Iterator[list[dict[str, Any]]]:
        yield [privacy.apply(table, row) for update in updates for row in shape(update)]

    return dlt.transformer(
        transform,
        data_from=parent,
        name=table.name,
        write_disposition="merge",
        primary_key=table.primary_key,
        merge_key=table.merge_key or (),
        columns=table.dlt_columns(privacy.mode),
        table_name=table.name,
    )


def _per_message(
    to_rows: Callable[[MessageBatch, dict[str, Any]], list[dict[str, Any]]],
) -> Callable[[ThreadUpdate], list[dict[str, Any]]]:
    def shape(update: ThreadUpdate) -> list[dict[str, Any]]:
        batch = update.messages
        return [row for message in batch.messages for row in to_rows(batch, message)]

    return shape


_SHAPES: tuple[tuple[Table, Callable[[ThreadUpdate], list[dict[str, Any]]]], ...] = (
    (CONVERSATIONS, lambda update: [rows.conversation_row(update.thread)]),
    (CONVERSATION_PARTICIPANTS, lambda update: rows.participant_rows(update.thread)),
    (MESSAGES, _per_message(lambda batch, message: [rows.message_row(batch, message)])),
    (MESSAGE_ATTACHMENTS, _per_message(rows.attachment_rows)),
    (MESSAGE_REACTIONS, _per_message(rows.reaction_rows)),
    (MESSAGE_RECIPIENTS, _per_message(rows.recipient_rows)),
    (MESSAGE_TAGS, _per_message(rows.tag_rows)),
    (MESSAGE_SHARES, _per_message(rows.share_rows)),
)


@dataclass
class _InboxReader:
    """Walks Pages → platforms → folders → changed threads → new messages, keeping the cursors.

    A cursor is written into state right before the rows it covers are yielded, so a run that
    stops anywhere never records more than it extracted.
    """

    api: ConversationsApi
    report: RunReport
    page_ids: list[str] | None
    platforms: list[str]
    folders: list[str]
    start: datetime | None
    lookback: timedelta

    def read(self) -> Iterator[list[ThreadUpdate]]:
        state = dlt.current.resource_state()
        folder_cursors: dict[str, str] = state.setdefault("folders", {})
        thread_cursors: dict[str, list[Any]] = state.setdefault("threads", {})
        for page in self.api.pages(self.page_ids):
            try:
                yield from self._read_page(page, folder_cursors, thread_cursors)
            except GraphError as error:
                if not _concerns_one_page(error):
                    raise
                # This Page cannot be read (permission, role, token): the others still can.
                self.report.page_failures.append(PageFailed(page.id, page.name, error))
                log.debug("Page %s skipped: %s", page.id, error)
            except (ThrottleBudgetExceeded, GraphUnavailable) as error:
                # Stop reading, and let dlt load what was read: the cursors cover exactly that.
                self.report.stopped_by = error
                log.warning("stopping early, keeping what was read: %s", error)
                return
        if self.report.page_failures and len(self.report.page_failures) == len(self.report.pages):
            # Nothing could be read: fail the run, so that not even an empty state is loaded.
            raise self.report.page_failures[0]

    def _read_page(
        self,
        page: Page,
        folder_cursors: dict[str, str],
        thread_cursors: dict[str, list[Any]],
    ) -> Iterator[list[ThreadUpdate]]:
        self.report.pages.append(page.id)
        for platform in self.platforms:
            if platform == "instagram" and not page.instagram_id:
                self._warn(f"Page {page.id} ({page.name}) has no linked Instagram account: skipped")
                continue
            for folder in self.folders:
                key = f"{page.id}/{platform}/{folder}"
                newest = yield from self._read_folder(
                    page, platform, folder, parse_time(folder_cursors.get(key)), thread_cursors
                )
                if newest:
                    folder_cursors[key] = newest.isoformat()

    def _read_folder(
        self,
        page: Page,
        platform: str,
        folder: str,
        previous: datetime | None,
        thread_cursors: dict[str, list[Any]],
    ) -> Generator[list[ThreadUpdate], None, datetime | None]:
        """Yield the changed threads of one folder; return the newest `updated_time` seen."""
        cutoff = previous - self.lookback if previous else self.start
        newest = previous
        changed = 0
        where = f"{page.id}/{platform}/{folder}"
        last_progress = time.monotonic()
        for listing in self.api.conversation_pages(page, platform, folder):
            updates: list[ThreadUpdate] = []
            cursors: dict[str, list[Any]] = {}
            times = [parse_time(raw.get("updated_time")) for raw in listing]
            for raw, updated in zip(listing, times, strict=True):
                if updated is not None:
                    newest = max(newest, updated) if newest else updated
                if cutoff and updated and updated < cutoff:
                    continue
                thread = Thread(page.id, platform, folder, raw)
                found = self._update(page, thread, thread_cursors.get(thread.id))
                if found is not None:
                    updates.append(found[0])
                    cursors[thread.id] = found[1]
            if updates:
                thread_cursors.update(cursors)
                self._count(updates)
                changed += len(updates)
                yield updates
            if time.monotonic() - last_progress >= PROGRESS_EVERY:
                last_progress = time.monotonic()
                log.info("%s: %d changed threads so far%s", where, changed, self._totals())
            if cutoff and any(t and t < cutoff for t in times):
                break
        log.info("%s: %d changed threads%s", where, changed, self._totals())
        return newest

    def _totals(self) -> str:
        report = self.report
        return (
            f" (run: {report.changed_threads} threads, {report.new_messages} messages, "
            f"{report.stats.calls} calls)"
        )

    def _update(
        self, page: Page, thread: Thread, entry: list[Any] | None
    ) -> tuple[ThreadUpdate, list[Any]] | None:
        """The thread's new messages and its next cursor, or None when nothing changed."""
        cursor = _MessageCursor.load(entry)
        moved = entry is not None and entry[0] != thread.folder
        messages = self._new_messages(page, thread, cursor)
        if entry is not None and not messages and not moved:
            return None
        batch = MessageBatch(thread.id, page.id, thread.platform, page.own_ids, tuple(messages))
        return ThreadUpdate(thread, batch), cursor.dump(thread.folder)

    def _new_messages(
        self, page: Page, thread: Thread, cursor: _MessageCursor
    ) -> list[dict[str, Any]]:
        """Messages past the thread's cursor (or `start`), reading older pages only while needed."""
        floor = cursor.newest or self.start
        found: dict[str, dict[str, Any]] = {}
        pending: list[tuple[dict[str, Any], datetime]] = []
        for batch in self.api.message_pages(page, thread.raw, thread.platform):
            reached_known = False
            for message in batch:
                created = parse_time(message.get("created_time"))
                if created is None:
                    continue
                if floor and created < floor:
                    reached_known = True
                    continue
                if cursor.is_new(message, created) and str(message["id"]) not in found:
                    found[str(message["id"])] = message
                    pending.append((message, created))
            if reached_known:
                break
        for message, created in pending:
            cursor.advance(message, created)
        return list(found.values())

    def _count(self, updates: list[ThreadUpdate]) -> None:
        messages = [m for update in updates for m in update.messages.messages]
        self.report.changed_threads += len(updates)
        self.report.new_messages += len(messages)
        self.report.messages_without_details += sum(not rows.has_details(m) for m in messages)

    def _warn(self, message: str) -> None:
        if message not in self.report.warnings:
            self.report.warnings.append(message)


def _concerns_one_page(error: GraphError) -> bool:
    """Errors that stop one Page (its token, role or permissions), not the whole run."""
    return (
        error.code in PERMISSION_CODES
        or error.code in (TOKEN_INVALID, PAGE_TOKEN_REQUIRED)
        or (error.code == INVALID_PARAMETER and error.subcode == OBJECT_NOT_FOUND_SUBCODE)
    )
