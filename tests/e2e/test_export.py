"""End to end: exports over real HTTP to the emulator into real DuckDB files; exact rows and
values from the emulator's model, and call counts from the emulator."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import NO_DUPLICATES, Workspace
from meta_inbox.emulator import Emulator, Faults
from meta_inbox.emulator.inbox import Inbox
from model import (
    detailed_messages,
    expected_counts,
    folder_count,
    hidden_messages,
    platform_folders,
    probe_calls,
    selected,
)

PAGE_SIZE = 100  # the listing and nested page size by default, the emulator's maximum


def test_first_run_loads_every_table_exactly(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.export()

    assert result.exit_code == 0, result.problems
    conversations = selected(emulator.inbox)
    assert workspace.counts() == expected_counts(conversations)
    assert workspace.duplicate_ids() == NO_DUPLICATES
    assert set(workspace.query("select distinct platform, folder from conversations")) == {
        (platform, folder)
        for platform in ("messenger", "instagram")
        for folder in platform_folders(platform)
    }
    assert result.status == "success"
    assert result.warnings == [
        f"Page {page.id} ({page.name}): Graph refuses Instagram ((#100) The Page {page.id} has "
        "no linked Instagram professional account): skipped"
        for page in emulator.inbox.pages
        if not page.instagram
    ]


def test_pages_table_says_which_account_is_the_page(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0

    rows = workspace.query(
        "select id, name, instagram_id, instagram_username, platforms from pages order by id"
    )
    assert rows == [
        (
            page.id,
            page.name,
            page.instagram.id if page.instagram else None,
            page.instagram.username if page.instagram else None,
            '["messenger","instagram"]' if page.instagram else '["messenger"]',
        )
        for page in sorted(emulator.inbox.pages, key=lambda p: p.id)
    ]
    # Every participant that is the Page (or its Instagram account) says so, and no other.
    own = {page.id for page in emulator.inbox.pages} | {
        page.instagram.id for page in emulator.inbox.pages if page.instagram
    }
    flagged = workspace.query("select participant_id, is_page from conversation_participants")
    assert {(pid, pid in own) for pid, _ in flagged} == set(flagged)


def test_rows_carry_typed_values_from_graph(workspace: Workspace, emulator: Emulator) -> None:
    assert workspace.export().exit_code == 0
    inbox = emulator.inbox
    types = dict(
        workspace.query(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'inbox' and table_name = 'messages'"
        )
    )
    assert types["created_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["details_available"] == "BOOLEAN"
    assert types["_dlt_load_id"] == "VARCHAR"

    conversation = next(c for c in inbox.conversations if c.platform == "messenger")
    message = conversation.messages[-1]
    row = workspace.query(
        "select conversation_id, epoch(created_time)::bigint, from_id, message, is_from_page, "
        f"deleted_at from messages where id = '{message.id}'"
    )
    page = inbox.page(conversation.page_id)
    assert row == [
        (
            conversation.id,
            message.created_time,
            message.sender.id,
            message.text,
            message.sender.id == page.id,
            None,
        )
    ]


def test_attachments_have_a_type_and_their_url_expiry(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0

    stored = {
        (message_id, position): (kind, expires)
        for message_id, position, kind, expires in workspace.query(
            "select message_id, position, type, url_expires_at from message_attachments"
        )
    }
    expected = {}
    for conversation in selected(emulator.inbox):
        for message in conversation.messages:
            if not conversation.is_detailed(message):
                continue
            for position, attachment in enumerate(message.attachments):
                url = _own_url(attachment)
                expiry = emulator.inbox.url_expiry(url)
                expected[(message.id, position)] = (
                    _kind(attachment),
                    datetime.fromtimestamp(expiry, UTC) if expiry else None,
                )
    assert stored == expected
    assert {kind for kind, _ in stored.values()} >= {
        "image",
        "animated_image",
        "video",
        "file",
        "audio",
        "template",
    }
    assert all(expires is not None for _, expires in stored.values())


def _own_url(attachment: dict) -> str | None:
    for key in ("image_data", "video_data"):
        if attachment.get(key):
            return attachment[key]["url"]
    if attachment.get("file_url"):
        return attachment["file_url"]
    return (attachment.get("generic_template") or {}).get("media_url")


def _kind(attachment: dict) -> str:
    image = attachment.get("image_data")
    if image:
        if image.get("render_as_sticker"):
            return "sticker"
        return "animated_image" if image.get("animated_gif_url") else "image"
    if attachment.get("video_data"):
        return "video"
    if attachment.get("generic_template"):
        return "template"
    return "audio" if attachment["mime_type"].startswith("audio/") else "file"


def test_instagram_keeps_every_message_beyond_the_newest_twenty(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0
    long_threads = [
        c for c in selected(emulator.inbox) if c.platform == "instagram" and c.message_count > 20
    ]
    assert len(long_threads) >= 3
    for conversation in long_threads:
        rows = workspace.query(
            "select id, details_available, from_id is null from messages "
            f"where conversation_id = '{conversation.id}'"
        )
        assert {row[0]: row[1:] for row in rows} == {
            m.id: (conversation.is_detailed(m), not conversation.is_detailed(m))
            for m in conversation.messages
        }
    hidden = hidden_messages(selected(emulator.inbox))
    assert workspace.query("select count(*) from messages where not details_available") == [
        (len(hidden),)
    ]


def test_second_run_loads_exactly_what_changed(workspace: Workspace, emulator: Emulator) -> None:
    assert workspace.export().exit_code == 0
    detailed = detailed_messages(emulator.inbox.conversations)
    activity = emulator.add_activity(seed=1)
    emulator.reset_calls()

    result = workspace.export()

    assert result.exit_code == 0, result.problems
    inbox = emulator.inbox
    assert workspace.counts() == expected_counts(selected(inbox), detailed)
    assert workspace.duplicate_ids() == NO_DUPLICATES
    # "New" is "not in the destination before the run": the one sent in the very second of the
    # last run's newest counts too.
    assert result.session.counts.new_messages == len(activity.new_message_ids)
    reopened = activity.reopened_conversation_id
    assert workspace.query(f"select folder from conversations where id = '{reopened}'") == [
        ("inbox",)
    ]
    same_second = activity.same_second_message_id
    assert workspace.query(f"select count(*) from messages where id = '{same_second}'") == [(1,)]
    # Calls: every listing once (the recheck window of these folders fits one page), and older
    # messages only for the thread that got more new messages than one nested page holds.
    listings, follow_ups = _graph_calls(emulator)
    assert listings == folder_count(inbox)
    assert follow_ups == 1
    assert sum(_new_in(inbox, cid, activity.new_message_ids) > PAGE_SIZE for cid in
               activity.changed_conversation_ids) == 1  # fmt: skip


def test_unchanged_inbox_costs_one_call_per_folder(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0
    before = workspace.counts()
    emulator.reset_calls()

    assert workspace.export().exit_code == 0

    assert workspace.counts() == before
    assert _graph_calls(emulator) == (folder_count(emulator.inbox), 0)
    assert sum(c.path.startswith("/me") for c in emulator.calls) == 1  # finding the Pages


def test_full_backfill_stays_near_the_fewest_calls(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0

    inbox = emulator.inbox
    # The fewest calls: a listing page per PAGE_SIZE threads (one for an empty folder), the
    # older pages of each long thread past its nested page, the probes and finding the Pages.
    # Slack: Graph may put a `next` on a full last page, which leads to an empty one, and no
    # client can tell before asking: one call per folder and per long thread.
    folders = [
        len(inbox.conversations_of(page.id, platform, folder))
        for page in inbox.pages
        for platform in page.platforms
        for folder in platform_folders(platform)
    ]
    listings = sum(max(1, math.ceil(n / PAGE_SIZE)) for n in folders)
    long_threads = [c.message_count for c in selected(inbox) if c.message_count >= PAGE_SIZE]
    older = sum(math.ceil(count / PAGE_SIZE) - 1 for count in long_threads)
    fewest = 1 + listings + older + probe_calls(inbox)
    assert older >= 3
    assert fewest <= len(emulator.calls) <= fewest + len(folders) + len(long_threads)


def test_tables_and_views_are_the_documented_ones(workspace: Workspace) -> None:
    assert workspace.export().exit_code == 0

    tables = {name for name in workspace.relations() if not name.startswith("_dlt")}
    assert tables == {
        "pages",
        "conversations",
        "conversation_participants",
        "conversation_history",
        "messages",
        "message_attachments",
        "message_reactions",
        "message_recipients",
        "message_tags",
        "message_shares",
        "_meta_inbox_runs",
        # Written with the views, from the business_hours and SLA settings.
        "business_clock",
        "sla_targets",
    }
    assert workspace.relations("VIEW") == {
        "conversation_metrics",
        "sla_daily",
        "daily_volume",
        "response_times",
        "expired_attachment_urls",
    }


@pytest.mark.parametrize(
    ("code", "nested"), [(9000001, 100), (100, 100), (12345, 100), (9000001, 10), (100, 10)]
)
def test_instagram_refusing_old_details_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, nested: int
) -> None:
    """Graph's other possible answer for Instagram messages older than the newest 20: the list
    fails with 9000001 (the notes leave the exact code open) instead of leaving their details
    out. The export must be the same, whether a listing (`nested` messages a thread) or a
    thread's older page is refused."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    faults = Faults(instagram_details_error=True, instagram_details_code=code)
    with Emulator(seed=7, scale=1, faults=faults) as emulator:
        workspace = Workspace(tmp_path, emulator)

        result = workspace.export(messages_page_size=nested)

        assert result.exit_code == 0, result.problems
        assert result.record["skipped_threads"] == 0
        conversations = selected(emulator.inbox)
        assert workspace.counts() == expected_counts(conversations)
        hidden = workspace.query("select id from messages where not details_available")
        assert {row[0] for row in hidden} == hidden_messages(conversations)
        # (A Page without Instagram is refused with 100 too, for the listing itself.)
        refused = [
            c for c in emulator.calls if c.error_code == code and "message" in c.params["fields"]
        ]
        long = [c for c in conversations if c.platform == "instagram" and c.message_count > 20]
        if nested > 20:
            # Once per Instagram folder whose listing holds a thread beyond 20 messages: the
            # rest of that folder is asked for what Graph gives.
            assert len(refused) == len({(c.page_id, c.folder) for c in long})
        else:
            # Once per thread beyond 20 messages, for its first page of older messages past
            # the 20 it details: the rest of that thread is asked for what Graph gives.
            assert len(refused) == len(long)


def _graph_calls(emulator: Emulator) -> tuple[int, int]:
    """(thread listings, every other call about threads and messages), discovery left out."""
    calls = [c for c in emulator.calls if not c.path.startswith("/me")]
    listings = sum(1 for c in calls if c.path.endswith("/conversations"))
    return listings, len(calls) - listings


def _new_in(inbox: Inbox, conversation_id: str, new_ids: set[str]) -> int:
    conversation = inbox.conversation(conversation_id)
    return sum(1 for m in conversation.messages if m.id in new_ids)
