"""The metric views over a real export, checked row by row against the emulator's own model."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

import dlt
import duckdb
import pytest

from conftest import Workspace
from meta_inbox.emulator import Emulator
from meta_inbox.emulator.inbox import Conversation, Inbox, Message
from meta_inbox.metrics import METRIC_VIEWS, ensure_metric_views, metrics_markdown
from model import detailed_messages, selected

VIEWS = [
    "response_times",
    "conversation_metrics",
    "sla_daily",
    "daily_volume",
    "expired_attachment_urls",
]
DUCKDB_TYPES = {
    "text": "VARCHAR",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "double": "DOUBLE",
    "bigint": "BIGINT",
    "bool": "BOOLEAN",
    "date": "DATE",
}
# Timestamps as unix seconds, to compare with the model's `created_time`.
RESPONSE_SQL = """
    select customer_message_id, conversation_id, page_id, platform,
           epoch(customer_message_at)::bigint, reply_message_id, epoch(reply_at)::bigint,
           response_seconds
    from response_times"""
THREAD_SQL = """
    select conversation_id, page_id, platform, folder,
           epoch(first_customer_message_at)::bigint, epoch(first_page_reply_at)::bigint,
           first_response_known, first_response_seconds, median_response_seconds,
           customer_messages, page_messages, messages_without_details,
           epoch(last_activity_at)::bigint, epoch(last_customer_message_at)::bigint,
           resolved_at, resolution_seconds, last_message_from, is_unanswered, is_open
    from conversation_metrics"""

Sided = list[tuple[Message, str]]
# Instagram threads of the default inbox longer than 20 messages: their oldest are hidden.
HIDDEN_FIRST_MESSAGES = 29


class Thread(NamedTuple):
    """A `conversation_metrics` row after its `conversation_id`, as `THREAD_SQL` reads it."""

    page_id: str
    platform: str
    folder: str
    first_customer_message_at: int | None
    first_page_reply_at: int | None
    first_response_known: bool
    first_response_seconds: float | None
    median_response_seconds: float | None
    customer_messages: int
    page_messages: int
    messages_without_details: int
    last_activity_at: int
    last_customer_message_at: int | None
    resolved_at: datetime | None
    resolution_seconds: float | None
    last_message_from: str | None
    is_unanswered: bool
    is_open: bool


def test_views_hold_exactly_the_inbox_metrics(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.export()

    assert result.views == VIEWS
    conversations = selected(emulator.inbox)
    database = workspace.database()
    assert_views_match(database, emulator.inbox, conversations)
    assert_columns_are_documented(database)
    # The edge cases the definitions decide are in the data, so the comparison covers them.
    threads = expected_threads(emulator.inbox, conversations).values()
    assert {thread.last_message_from for thread in threads} == {"customer", "page"}
    assert {thread.is_open for thread in threads} == {True, False}
    assert any(thread.folder == "spam" and thread.is_unanswered for thread in threads)
    assert any(same_second_answers(emulator.inbox, conversations))
    # Whatever today's date: one URL made to expire tomorrow, one yesterday; only URLs past
    # their expiry are listed, each once.
    with duckdb.connect(str(database)) as connection:
        connection.execute("set schema = 'inbox'")
        connection.execute(
            "update message_attachments set url_expires_at = case when position = 0 "
            "then current_timestamp + interval 1 day else current_timestamp - interval 1 day end "
            "where url is not null"
        )
    expired = query(database, "select count(*), count(distinct (message_id, position)) "
                    "from expired_attachment_urls")  # fmt: skip
    stored = query(database, "select count(*) from message_attachments "
                   "where url is not null and position > 0")  # fmt: skip
    assert stored[0][0] > 0
    assert expired == [(stored[0][0], stored[0][0])]


def test_views_follow_an_incremental_run(workspace: Workspace, emulator: Emulator) -> None:
    assert workspace.export().views == VIEWS
    kept = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)

    assert workspace.export().views == VIEWS

    # Messages loaded with details keep them once Instagram withholds them.
    assert_views_match(workspace.database(), emulator.inbox, selected(emulator.inbox), kept)


def test_views_are_skipped_where_they_cannot_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    lake = dlt.pipeline(
        pipeline_name="lake",
        destination=dlt.destinations.filesystem(bucket_url=str(tmp_path / "lake")),
        dataset_name="inbox",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    empty = dlt.pipeline(
        pipeline_name="empty",
        destination=dlt.destinations.duckdb(str(tmp_path / "empty.duckdb")),
        dataset_name="inbox",
        pipelines_dir=str(tmp_path / "pipelines"),
    )

    assert ensure_metric_views(lake) == []
    assert ensure_metric_views(empty) == []


def test_markdown_documents_every_view_and_column() -> None:
    markdown = metrics_markdown()

    for view in METRIC_VIEWS:
        assert f"#### `{view.name}`" in markdown
        assert view.description in markdown
        for column in view.columns:
            assert f"| `{column.name}` | {column.data_type} | {column.description} |" in markdown
    assert [view.name for view in METRIC_VIEWS] == VIEWS


def assert_views_match(
    database: Path,
    inbox: Inbox,
    conversations: list[Conversation],
    kept: Iterable[str] = (),
) -> None:
    kept = set(kept)
    responses = query(database, RESPONSE_SQL)
    expected = expected_responses(inbox, conversations, kept)
    assert len(responses) == len(expected)
    assert {row[0]: row[1:] for row in responses} == expected
    threads = query(database, THREAD_SQL)
    assert len(threads) == len(conversations)
    assert {row[0]: row[1:] for row in threads} == expected_threads(inbox, conversations, kept)
    volume = query(database, "select day, page_id, platform, direction, messages from daily_volume")
    expected_days = expected_volume(inbox, conversations, kept)
    assert len(volume) == len(expected_days)
    assert {row[:4]: row[4] for row in volume} == expected_days


def assert_columns_are_documented(database: Path) -> None:
    for view in METRIC_VIEWS:
        columns = query(
            database,
            "select column_name, data_type from information_schema.columns "
            f"where table_schema = 'inbox' and table_name = '{view.name}' "
            "order by ordinal_position",
        )
        assert columns == [(c.name, DUCKDB_TYPES[c.data_type]) for c in view.columns]


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        # UTC+14: days that followed the session's zone would shift.
        connection.execute("SET TimeZone = 'Pacific/Kiritimati'")
        connection.execute("SET schema = 'inbox'")
        return connection.execute(sql).fetchall()


# The model: each message's side as the export records it, worked out without the views' SQL.


def sides(inbox: Inbox, conversation: Conversation, kept: set[str]) -> Sided:
    """(message, `customer` | `page`) for the messages loaded with details, oldest first."""
    page = inbox.page(conversation.page_id)
    assert page is not None
    own = {page.id, *([page.instagram.id] if page.instagram else [])}
    return [
        (message, "page" if message.sender.id in own else "customer")
        for message in conversation.messages
        if conversation.is_detailed(message) or message.id in kept
    ]


def answer(sided: Sided, asked: Message) -> Message | None:
    later = [m for m, side in sided if side == "page" and m.created_time > asked.created_time]
    return min(later, key=lambda m: (m.created_time, m.id), default=None)


def expected_responses(
    inbox: Inbox, conversations: list[Conversation], kept: set[str] = frozenset()
) -> dict[str, tuple]:
    rows: dict[str, tuple] = {}
    for conversation in conversations:
        sided = sides(inbox, conversation, kept)
        for message, side in sided:
            reply = answer(sided, message) if side == "customer" else None
            if reply is None:
                continue
            rows[message.id] = (
                conversation.id,
                conversation.page_id,
                conversation.platform,
                message.created_time,
                reply.id,
                reply.created_time,
                float(reply.created_time - message.created_time),
            )
    return rows


def expected_threads(
    inbox: Inbox, conversations: list[Conversation], kept: set[str] = frozenset()
) -> dict[str, Thread]:
    responses = expected_responses(inbox, conversations, kept)
    rows: dict[str, Thread] = {}
    for conversation in conversations:
        sided = sides(inbox, conversation, kept)
        customers = [m for m, side in sided if side == "customer"]
        first = min(customers, key=lambda m: m.created_time, default=None)
        reply = answer(sided, first) if first else None
        known = first_customer_message_known(conversation, sided)
        seconds = [row[6] for row in responses.values() if row[0] == conversation.id]
        # At a tie in the newest second the customer counts last: no answer is strictly later.
        newest = max(
            sided, key=lambda pair: (pair[0].created_time, pair[1] == "customer"), default=None
        )
        last_from = newest[1] if newest else None
        unanswered = last_from == "customer"
        rows[conversation.id] = Thread(
            conversation.page_id,
            conversation.platform,
            conversation.folder,
            first.created_time if first else None,
            reply.created_time if reply else None,
            known,
            float(reply.created_time - first.created_time) if known and first and reply else None,
            float(statistics.median(seconds)) if seconds else None,
            len(customers),
            len(sided) - len(customers),
            len(conversation.messages) - len(sided),
            max(m.created_time for m in conversation.messages),
            max((m.created_time for m in customers), default=None),
            None,  # no thread is seen open, then archived, in one export: see test_changes
            None,
            last_from,
            unanswered,
            unanswered and conversation.folder in ("inbox", "other"),
        )
    return rows


def first_customer_message_known(conversation: Conversation, sided: Sided) -> bool:
    """False when a message loaded without details may be the customer's first: it is older
    than their oldest message with details, or they have none."""
    detailed = {m.id for m, _ in sided}
    hidden = [m.created_time for m in conversation.messages if m.id not in detailed]
    customers = [m.created_time for m, side in sided if side == "customer"]
    if not hidden:
        return True
    return bool(customers) and min(hidden) >= min(customers)


def expected_volume(
    inbox: Inbox, conversations: list[Conversation], kept: set[str] = frozenset()
) -> Counter[tuple[date, str, str, str]]:
    directions = {"customer": "inbound", "page": "outbound"}
    volume: Counter[tuple[date, str, str, str]] = Counter()
    for conversation in conversations:
        side_of = {m.id: side for m, side in sides(inbox, conversation, kept)}
        for message in conversation.messages:
            day = datetime.fromtimestamp(message.created_time, UTC).date()
            direction = directions.get(side_of.get(message.id, ""), "unknown")
            volume[(day, conversation.page_id, conversation.platform, direction)] += 1
    return volume


def same_second_answers(inbox: Inbox, conversations: list[Conversation]) -> Iterable[bool]:
    """Whether each thread has a customer message with a Page message in the same second."""
    for conversation in conversations:
        sided = sides(inbox, conversation, set())
        seconds = {m.created_time for m, side in sided if side == "page"}
        yield any(side == "customer" and m.created_time in seconds for m, side in sided)


def test_first_responses_are_unknown_where_instagram_hides_the_oldest_messages(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().views == VIEWS
    conversations = selected(emulator.inbox)
    rows = query(
        workspace.database(),
        "select conversation_id, first_response_known, first_response_seconds "
        "from conversation_metrics",
    )

    hidden = {c.id for c in conversations if not c.is_detailed(c.messages[0])}
    assert len(hidden) == HIDDEN_FIRST_MESSAGES
    assert {c.platform for c in conversations if c.id in hidden} == {"instagram"}
    expected = {}
    for conversation in conversations:
        if conversation.id in hidden:
            expected[conversation.id] = (False, None)
            continue
        # Every other thread keeps the value computed before first_response_known existed.
        sided = sides(emulator.inbox, conversation, set())
        first = min((m for m, side in sided if side == "customer"), key=lambda m: m.created_time,
                    default=None)  # fmt: skip
        reply = answer(sided, first) if first else None
        seconds = float(reply.created_time - first.created_time) if first and reply else None
        expected[conversation.id] = (True, seconds)
    assert len(rows) == len(expected)
    assert {row[0]: row[1:] for row in rows} == expected
