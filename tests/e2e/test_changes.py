"""The inbox as it changes without new messages: the recheck window of every run, `--reconcile`,
`conversation_history` with resolution times, and expiring attachment URLs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from conftest import NO_DUPLICATES, Workspace
from meta_inbox import lake
from meta_inbox.emulator import Emulator
from meta_inbox.emulator.inbox import Conversation, Inbox
from model import (
    TABLE_NAMES,
    detailed_messages,
    expected_counts,
    folder_count,
    reaction_count,
    selected,
)


def _recent(inbox: Inbox, platform: str = "messenger") -> Conversation:
    """The newest inbox thread of a platform: well inside the recheck window."""
    threads = [c for c in selected(inbox) if c.platform == platform and c.folder == "inbox"]
    return max(threads, key=lambda c: c.updated_time)


def _idle(inbox: Inbox, exclude: set[str]) -> Conversation:
    """An inbox thread idle for months: outside any recheck window."""
    threads = [
        c
        for c in selected(inbox)
        if c.platform == "messenger" and c.folder == "inbox" and c.id not in exclude
    ]
    return min(threads, key=lambda c: c.updated_time)


def test_recent_reactions_edits_and_read_state_reach_a_regular_run(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0
    inbox = emulator.inbox
    thread = _recent(inbox)
    reacted, edited = thread.messages[-2], thread.messages[-1]
    emulator.react(reacted.id, "🔥")
    emulator.edit_message(edited.id, "edited: see you at 8 🙂")
    emulator.set_unread(thread.id, 7)
    emulator.reset_calls()

    result = workspace.export()

    assert result.exit_code == 0, result.problems
    reactions = workspace.query(
        f"select reaction, user_id from message_reactions where message_id = '{reacted.id}' "
        "order by position"
    )
    expected = [
        (group["reaction"], user["id"])
        for group in reacted.reactions.get("data", [reacted.reactions])
        for user in group["users"]
    ]
    assert reactions == expected
    assert ("🔥", thread.customers[0].id) in reactions
    assert workspace.query(f"select message from messages where id = '{edited.id}'") == [
        ("edited: see you at 8 🙂",)
    ]
    assert workspace.query(f"select unread_count from conversations where id = '{thread.id}'") == [
        (7,)
    ]
    # Listing calls only: one per folder, no older pages, no follow-ups.
    assert len(emulator.calls) == 1 + folder_count(inbox)
    assert result.session.counts.rechecked_threads > 0
    assert result.record["rechecked_threads"] == result.session.counts.rechecked_threads
    assert workspace.counts() == expected_counts(selected(inbox))


def test_reactions_taken_back_leave_no_rows_in_the_warehouse_or_the_lake(
    workspace: Workspace, emulator: Emulator
) -> None:
    inbox = emulator.inbox
    thread = _recent(inbox)
    alone, shared = thread.messages[-1], thread.messages[-2]
    customer, page = thread.customers[0].id, thread.page_side.id
    emulator.react(alone.id, "🔥")
    emulator.react(shared.id, "👍")
    emulator.react(shared.id, "😮", page)
    lake_run = {"destination": "filesystem", "pipeline_name": "lake"}
    assert workspace.export().exit_code == 0
    assert workspace.export(**lake_run).exit_code == 0
    reactions = "select message_id, reaction, user_id from message_reactions where message_id in "
    reactions += f"('{alone.id}', '{shared.id}') order by message_id, user_id"
    assert sorted(workspace.query(reactions)) == sorted(
        [(alone.id, "🔥", customer), (shared.id, "👍", customer), (shared.id, "😮", page)]
    )
    emulator.unreact(alone.id)
    emulator.unreact(shared.id)
    emulator.reset_calls()

    result = workspace.export()

    assert result.exit_code == 0, result.problems
    # The recheck window read the thread again: listing calls only.
    assert len(emulator.calls) == 1 + folder_count(inbox)
    assert workspace.query(reactions) == [(shared.id, "😮", page)]
    counts = f"select id, reaction_count from messages where id in ('{alone.id}', '{shared.id}')"
    assert sorted(workspace.query(counts)) == sorted([(alone.id, 0), (shared.id, 1)])
    assert workspace.counts() == expected_counts(selected(inbox))
    assert workspace.export(**lake_run).exit_code == 0
    with _lake_views(workspace) as connection:
        assert connection.execute(reactions).fetchall() == [(shared.id, "😮", page)]


@pytest.mark.parametrize("destination", ["duckdb", "filesystem"])
def test_messages_read_again_as_stored_are_not_loaded_again(
    workspace: Workspace, emulator: Emulator, destination: str
) -> None:
    inbox = emulator.inbox
    run = {"destination": destination}
    assert workspace.export(**run).exit_code == 0
    # The recheck window reads the week's threads again: loaded once more, fingerprinted.
    again = workspace.export(**run).session.counts
    assert again.new_messages == 0
    assert again.unchanged_messages == 0
    assert again.messages_merged_again == again.messages > 0
    thread = _recent(inbox)
    reacted = thread.messages[-1]
    emulator.react(reacted.id, "🔥")
    emulator.reset_calls()

    result = workspace.export(**run)

    assert result.exit_code == 0, result.problems
    counts = result.session.counts
    # The same messages read, with the same calls; only the one that changed is loaded.
    assert counts.messages == again.messages
    assert len(emulator.calls) == 1 + folder_count(inbox)
    assert counts.messages_merged_again == 1
    assert counts.unchanged_messages == counts.messages - 1
    assert result.record["unchanged_messages"] == counts.unchanged_messages
    assert counts.rows["messages"] == 1
    assert counts.rows["message_reactions"] == reaction_count(reacted.reactions)
    if destination == "filesystem":
        with _lake_views(workspace) as connection:
            assert _counts(connection) == expected_counts(selected(inbox))
            reactions = connection.execute(
                f"select reaction from message_reactions where message_id = '{reacted.id}'"
            ).fetchall()
    else:
        assert workspace.counts() == expected_counts(selected(inbox))
        reactions = workspace.query(
            f"select reaction from message_reactions where message_id = '{reacted.id}'"
        )
    assert ("🔥",) in reactions


@pytest.mark.parametrize("destination", ["duckdb", "filesystem"])
def test_a_full_refresh_loads_again_what_it_finds_as_stored(
    workspace: Workspace, emulator: Emulator, destination: str
) -> None:
    """A refresh deletes what was loaded before it: nothing may be left out as unchanged."""
    run = {"destination": destination}
    for _ in range(2):  # the second fingerprints the recheck window's messages
        assert workspace.export(**run).exit_code == 0

    result = workspace.export(**run, full_refresh=True)

    assert result.exit_code == 0, result.problems
    assert result.session.counts.unchanged_messages == 0
    expected = expected_counts(selected(emulator.inbox))
    if destination == "filesystem":
        with _lake_views(workspace) as connection:
            assert _counts(connection) == expected
    else:
        assert workspace.counts() == expected


def _counts(connection: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {
        name: connection.execute(f"select count(*) from {name}").fetchone()[0]
        for name in TABLE_NAMES
    }


def test_instagram_message_without_details_never_replaces_a_detailed_copy(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0
    inbox = emulator.inbox
    detailed = detailed_messages(inbox.conversations)
    activity = emulator.add_activity(seed=1)
    # Messages that new ones pushed out of Instagram's newest 20: loaded with details before,
    # listed without them now, in threads every run reads again (new messages, recheck).
    pushed = [
        m.id
        for cid in activity.changed_conversation_ids
        for c in [inbox.conversation(cid)]
        for m in c.messages
        if c.platform == "instagram" and m.id in detailed and not c.is_detailed(m)
    ]
    assert pushed

    assert workspace.export().exit_code == 0

    kept = workspace.query(
        "select count(*) from messages where details_available and from_id is not null and "
        f"id in ({', '.join(repr(m) for m in pushed)})"
    )
    assert kept == [(len(pushed),)]
    assert workspace.counts() == expected_counts(selected(inbox), detailed)


def test_reconcile_marks_exactly_what_graph_no_longer_returns(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0
    before = detailed_messages(emulator.inbox.conversations)
    gone = _change(emulator)
    regular = workspace.export()
    # A regular run sees none of it: the thread is idle, nothing moved its `updated_time`.
    assert regular.exit_code == 0
    assert workspace.query("select count(*) from messages where deleted_at is not null") == [(0,)]
    emulator.reset_calls()

    result = workspace.export(reconcile=True)

    assert result.exit_code == 0, result.problems
    _assert_reconciled(workspace.query, emulator, gone, before)
    assert result.record["mode"] == "reconcile"
    assert result.record["marked_deleted"] == 2 + len(gone["deleted_messages"])
    # The calls of a backfill.
    listings = sum(c.path.endswith("/conversations") for c in emulator.calls)
    assert listings == folder_count(emulator.inbox)


def test_reconcile_marks_none_of_a_folder_graph_refuses_to_list(
    workspace: Workspace, emulator: Emulator
) -> None:
    """Graph refusing the legacy archive's listing (`tags`) says nothing of its threads: a
    reconcile marks none of them deleted, and reconciles the Page's other folders."""
    assert workspace.export().exit_code == 0
    legacy = "select count(*) from conversations where folder = 'archived_legacy'"
    assert workspace.query(legacy)[0][0] > 0
    thread = next(
        c for c in emulator.inbox.conversations if c.platform == "messenger" and c.folder == "inbox"
    )
    emulator.delete_thread(thread.id)
    emulator.faults.refuses_tags = True

    result = workspace.export(reconcile=True)

    assert result.exit_code == 0, result.problems
    assert workspace.query("select id from conversations where deleted_at is not null") == [
        (thread.id,)
    ]
    assert result.record["marked_deleted"] == 1 + thread.message_count


def test_reconcile_works_on_the_lake_through_its_views(
    workspace: Workspace, emulator: Emulator
) -> None:
    """And the children of the rows it marks stay in the views, as they stay in SQL tables: the
    views leave out a child row older than its parent's newest row."""
    lake_run = {"destination": "filesystem", "pipeline_name": "lake"}
    assert workspace.export(**lake_run).exit_code == 0
    before = detailed_messages(emulator.inbox.conversations)
    gone = _change(emulator)
    marked = ", ".join(repr(i) for i in [gone["unsent"], *gone["deleted_messages"]])
    children = {
        table: f"select * exclude (_dlt_load_id) from {table} where {key} in ({keys}) order by all"
        for table, key, keys in [
            ("conversation_participants", "conversation_id", repr(gone["deleted"])),
            ("message_tags", "message_id", marked),
            ("message_recipients", "message_id", marked),
            ("message_attachments", "message_id", marked),
        ]
    }
    with _lake_views(workspace) as connection:
        held = {table: connection.execute(sql).fetchall() for table, sql in children.items()}
    assert all(held.values()), {table: len(rows) for table, rows in held.items()}

    assert workspace.export(**lake_run, reconcile=True).exit_code == 0

    with _lake_views(workspace) as connection:
        _assert_reconciled(lambda sql: connection.execute(sql).fetchall(), emulator, gone, before)
        assert {
            table: connection.execute(sql).fetchall() for table, sql in children.items()
        } == held


@contextmanager
def _lake_views(workspace: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """The lake's views as a run would write them now, schema `inbox` by default."""
    lake.write_views(workspace.root / "meta_inbox_lake", "inbox")
    with lake.connect(workspace.root / "meta_inbox_lake") as connection:
        connection.execute("set schema = 'inbox'")
        yield connection


def _change(emulator: Emulator) -> dict[str, object]:
    inbox = emulator.inbox
    recent = _recent(inbox)
    idle = _idle(inbox, {recent.id})
    others = [
        c
        for c in selected(inbox)
        if c.platform == "messenger" and c.id not in {idle.id, recent.id} and c.message_count >= 3
    ]
    unsent_in, deleted = others[0], others[1]
    unsent = unsent_in.messages[1]
    gone = {
        "idle": idle,
        "reacted": idle.messages[0].id,
        "unsent": unsent.id,
        "deleted": deleted.id,
        "deleted_messages": [m.id for m in deleted.messages],
    }
    emulator.react(idle.messages[0].id, "👍")
    emulator.move_thread(idle.id, "page_done")
    emulator.unsend(unsent.id)
    emulator.delete_thread(deleted.id)
    return gone


def _assert_reconciled(query, emulator: Emulator, gone: dict, before: set[str]) -> None:
    idle = gone["idle"]
    assert query(f"select folder from conversations where id = '{idle.id}'") == [("page_done",)]
    assert ("👍",) in query(
        f"select reaction from message_reactions where message_id = '{gone['reacted']}'"
    )
    marked_threads = {row[0] for row in query(
        "select id from conversations where deleted_at is not null")}  # fmt: skip
    marked_messages = {row[0] for row in query(
        "select id from messages where deleted_at is not null")}  # fmt: skip
    assert marked_threads == {gone["deleted"]}
    assert marked_messages == {gone["unsent"], *gone["deleted_messages"]}
    # What is live is what the emulator holds.
    live = {
        table: query(
            f"select count(*) from {table} where deleted_at is null"
            if table in ("conversations", "messages")
            else f"select count(*) from {table}"
        )[0][0]
        for table in ("conversations", "messages")
    }
    expected = expected_counts(selected(emulator.inbox), before)
    assert live == {table: expected[table] for table in live}


def test_reconcile_leaves_threads_graph_hides_alone(tmp_path: Path, monkeypatch) -> None:
    """Instagram's Requests folder (`other`) hides threads idle for 30 days: not deleted."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1) as emulator:
        workspace = Workspace(tmp_path, emulator)
        assert workspace.export().exit_code == 0
        hidden = [
            c
            for c in selected(emulator.inbox)
            if c.platform == "instagram" and c.folder == "other"
            and c.updated_time < emulator.inbox.now - 30 * 86400
        ]  # fmt: skip
        assert hidden
        emulator.faults.instagram_hides_stale_requests = True

        result = workspace.export(reconcile=True)

        assert result.exit_code == 0
        assert result.record["marked_deleted"] == 0
        assert workspace.query(
            "select count(*) from conversations where deleted_at is not null"
        ) == [(0,)]


def test_history_records_each_observed_state_and_the_resolution(
    workspace: Workspace, emulator: Emulator
) -> None:
    inbox = emulator.inbox
    thread = _recent(inbox)
    customer_last = max(m.created_time for m in thread.messages if m.sender in thread.customers)
    emulator.set_unread(thread.id, 1)
    first = workspace.export()
    emulator.set_unread(thread.id, 0)  # an agent read it
    second = workspace.export()
    emulator.move_thread(thread.id, "page_done")  # and archived it
    third = workspace.export()
    fourth = workspace.export()  # nothing changed: nothing recorded

    assert {run.exit_code for run in (first, second, third, fourth)} == {0}
    history = workspace.query(
        "select folder, unread_count, can_reply, message_count, observed_at from "
        f"conversation_history where conversation_id = '{thread.id}' order by observed_at"
    )
    runs = [run.session.started_at for run in (first, second, third)]
    assert history == [
        ("inbox", 1, thread.can_reply, thread.message_count, runs[0]),
        ("inbox", 0, thread.can_reply, thread.message_count, runs[1]),
        ("page_done", 0, thread.can_reply, thread.message_count, runs[2]),
    ]
    metrics = workspace.query(
        "select resolved_at, resolution_seconds, is_open, folder from conversation_metrics "
        f"where conversation_id = '{thread.id}'"
    )
    expected_seconds = (runs[2] - datetime.fromtimestamp(customer_last, UTC)).total_seconds()
    assert metrics == [(runs[2], pytest.approx(expected_seconds, abs=1e-3), False, "page_done")]
    # Archived before the first export: never seen open, so no resolution time.
    archived = [c for c in selected(inbox) if c.folder == "page_done" and c.id != thread.id]
    unresolved = workspace.query(
        "select count(*) from conversation_metrics where folder = 'page_done' "
        "and resolved_at is null"
    )
    assert unresolved == [(len(archived),)]


def test_stickers_and_story_links_carry_their_expiry(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0

    rows = workspace.query(
        "select id, sticker, epoch(sticker_expires_at)::bigint, story_link, "
        "epoch(story_link_expires_at)::bigint from messages "
        "where sticker is not null or story_link is not null"
    )
    assert rows
    for _, sticker, sticker_expiry, story, story_expiry in rows:
        assert sticker_expiry == (emulator.inbox.url_expiry(sticker) if sticker else None)
        assert story_expiry == (emulator.inbox.url_expiry(story) if story else None)
    assert workspace.duplicate_ids() == NO_DUPLICATES


def test_reconcile_refuses_to_go_with_a_full_refresh(workspace: Workspace) -> None:
    result = workspace.run("--full-refresh", "--reconcile")

    assert result.code == 2
    assert "not allowed with argument" in result.stderr
