"""Graph answering in the other ways it documents (or may): error texts in the owner's language,
threads and messages gone mid-run, unknown codes, short attachment pages, Instagram ignoring
`folder`, refused folders. Exact rows for everything Graph still returns; calls counted."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import NO_DUPLICATES, Workspace
from meta_inbox.emulator import Emulator, Faults, Limits
from meta_inbox.emulator.inbox import Conversation
from meta_inbox.reader import UNAVAILABLE_SKIPS
from model import FOLDERS, expected_counts, selected

PAGE_SIZE = 100  # nested messages per listed thread, by default
TOO_MUCH_DATA = "Please reduce the amount of data you're asking for, then retry your request"
CAP = 150_000  # bytes: a response-size cap that refuses the heaviest listings


@pytest.fixture
def workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))

    def make(name: str, emulator: Emulator) -> Workspace:
        workspace = Workspace(tmp_path / name, emulator)
        workspace.root.mkdir()
        workspace.data_dir = workspace.root / "dlt"
        return workspace

    return make


def _long_messenger_threads(emulator: Emulator, count: int) -> list[Conversation]:
    threads = [
        c
        for c in emulator.inbox.conversations
        if c.platform == "messenger" and c.message_count > PAGE_SIZE
    ]
    assert len(threads) >= count
    return sorted(threads, key=lambda c: c.id)[:count]


def _attachment_positions(emulator: Emulator) -> set[tuple[str, int]]:
    """(message id, position) of every attachment an export loads."""
    return {
        (m.id, position)
        for c in selected(emulator.inbox)
        for m in c.messages
        if c.is_detailed(m)
        for position in range(len(m.attachments))
    }


def _stored_ids(workspace: Workspace, conversation_id: str) -> set[str]:
    rows = workspace.query(f"select id from messages where conversation_id = '{conversation_id}'")
    return {row[0] for row in rows}


def test_texts_in_the_owners_language_change_no_call(workspaces) -> None:
    """Graph writes `error_user_msg` in the token owner's language: under a size cap, a backfill
    with Spanish texts makes exactly the calls it makes with English ones."""
    calls = {}
    for language in (None, "es"):
        faults = Faults(max_response_bytes=CAP, error_language=language)
        with Emulator(seed=7, scale=1, faults=faults) as emulator:
            workspace = workspaces(f"texts-{language}", emulator)
            # One call at a time: the same calls in the same order, whatever the language.
            result = workspace.export(max_concurrency=1)
            assert result.exit_code == 0, result.problems
            assert workspace.counts() == expected_counts(selected(emulator.inbox))
            calls[language] = [(c.path, c.params, c.error_code) for c in emulator.calls]
    refused = [call for call in calls["es"] if call[2] == 1]
    assert refused
    assert calls["es"] == calls[None]


def test_threads_gone_or_failing_mid_run_are_skipped_and_the_rest_is_exact(
    workspace: Workspace, emulator: Emulator
) -> None:
    gone, deleted, unknown, heavy = _long_messenger_threads(emulator, 4)
    # What the listing shows of each: its newest nested page.
    failing = (gone, deleted, unknown, heavy)
    partial = {c.id: replace(c, messages=c.messages[-PAGE_SIZE:]) for c in failing}
    emulator.delete_after_listing(gone.id)
    emulator.fail_follow_ups(deleted.id, 9000001)
    emulator.fail_follow_ups(unknown.id, 12345)
    # Too heavy for Graph even one message at a time.
    emulator.fail_follow_ups(heavy.id, 1, message=TOO_MUCH_DATA, error_type="", status=500)

    result = workspace.export()

    assert result.exit_code == 0, result.problems
    others = [c for c in selected(emulator.inbox) if c.id not in partial]
    assert workspace.counts() == expected_counts([*others, *partial.values()])
    assert workspace.duplicate_ids() == NO_DUPLICATES
    for conversation in partial.values():
        assert _stored_ids(workspace, conversation.id) == {m.id for m in conversation.messages}
    for conversation in others:
        assert len(_stored_ids(workspace, conversation.id)) == conversation.message_count
    record = result.record
    assert (record["skipped_threads"], record["skipped_messages"]) == (4, 0)
    errors = {skip["thread_id"]: skip["error"] for skip in json.loads(record["skipped"])}
    assert set(errors) == set(partial)
    assert "error 100/33" in errors[gone.id]
    assert "error 9000001" in errors[deleted.id]
    assert "error 12345" in errors[unknown.id]
    assert "error 1 on" in errors[heavy.id]
    assert any(warning.startswith("4 thread(s) and 0 message(s)") for warning in result.warnings)
    # Each failing follow-up was asked once: no retry of what Graph says is gone; the heavy
    # thread's, halved down to one message.
    follow_ups = [c for c in emulator.calls if c.path.endswith("/messages")]
    failed = [c for c in follow_ups if c.error_code is not None]
    halved = ["100", "50", "25", "12", "6", "3", "1"]
    assert [c.params["limit"] for c in failed if heavy.id in c.path] == halved
    assert len(failed) == 3 + len(halved)


def test_a_message_without_its_created_time_is_skipped_and_the_rest_is_exact(
    workspace: Workspace, emulator: Emulator
) -> None:
    """Graph documents `created_time` on every message; one without it cannot be placed in
    time (nor move a watermark): it is skipped and counted, as a message Graph withholds is,
    and the rest of its thread is loaded, its nested page and its older pages alike."""
    thread = _long_messenger_threads(emulator, 1)[0]
    newest, oldest = thread.messages[-1], thread.messages[0]
    for message in (newest, oldest):
        emulator.leave_out(message.id, "created_time")

    result = workspace.export()

    assert result.exit_code == 0, result.problems
    kept = replace(thread, messages=[m for m in thread.messages if m not in (newest, oldest)])
    others = [c for c in selected(emulator.inbox) if c.id != thread.id]
    assert workspace.counts() == expected_counts([*others, kept])
    assert _stored_ids(workspace, thread.id) == {m.id for m in kept.messages}
    record = result.record
    assert (record["skipped_threads"], record["skipped_messages"]) == (0, 2)
    skipped = json.loads(record["skipped"])
    assert {skip["message_id"] for skip in skipped} == {newest.id, oldest.id}
    assert {skip["error"] for skip in skipped} == {"Graph gave no created_time"}

    # A reconcile does not take a message it skips so for deleted: its thread is not read whole.
    stored = thread.messages[-2]
    emulator.leave_out(stored.id, "created_time")
    reconciled = workspace.export(reconcile=True)

    assert reconciled.exit_code == 0, reconciled.problems
    assert reconciled.record["skipped_messages"] == 3
    assert workspace.query("select count(*) from messages where deleted_at is not null") == [(0,)]
    assert stored.id in _stored_ids(workspace, thread.id)


@pytest.mark.parametrize("failing", [UNAVAILABLE_SKIPS, UNAVAILABLE_SKIPS + 1])
def test_threads_graph_keeps_failing_while_answering_others_are_skipped_a_few(
    workspace: Workspace, emulator: Emulator, failing: int
) -> None:
    """A thread whose calls Graph keeps failing (a transient error, every retry) while it
    answers the run's other calls is skipped, so that it does not stop every run at it; past
    `UNAVAILABLE_SKIPS` of them, Graph itself is failing: the run stops early, exit 8, and
    keeps what it read."""
    threads = _long_messenger_threads(emulator, failing)
    for conversation in threads:
        emulator.fail_follow_ups(conversation.id, 2, status=500)

    result = workspace.export(max_attempts=3)

    follow_ups = [c for c in emulator.calls if c.path.endswith("/messages")]
    refused = [c for c in follow_ups if c.error_code == 2]
    if failing == UNAVAILABLE_SKIPS:
        assert result.exit_code == 0, result.problems
        partial = [replace(c, messages=c.messages[-PAGE_SIZE:]) for c in threads]
        others = [c for c in selected(emulator.inbox) if c not in threads]
        assert workspace.counts() == expected_counts([*others, *partial])
        assert result.record["skipped_threads"] == failing
        errors = [skip["error"] for skip in json.loads(result.record["skipped"])]
        assert all("did not answer properly after 3 attempts" in error for error in errors)
        assert len(refused) == 3 * failing  # each thread's first older page, 3 tries
    else:
        assert result.exit_code == 8, result.problems
        assert result.record["skipped_threads"] == UNAVAILABLE_SKIPS
        assert workspace.duplicate_ids() == NO_DUPLICATES
        assert len(refused) == 3 * failing


def test_attachment_pages_shorter_than_asked_are_followed_to_the_end(workspaces) -> None:
    with Emulator(seed=7, scale=1, faults=Faults(attachments_page_cap=2)) as emulator:
        workspace = workspaces("capped", emulator)
        detailed = [
            (c, m) for c in selected(emulator.inbox) for m in c.messages if c.is_detailed(m)
        ]
        longest = max(len(m.attachments) for _, m in detailed)
        assert longest >= 3
        # One message Graph unsends once a listing showed it: its follow-up answers 100/33.
        conversation, unsent = next(
            (c, m)
            for c, m in detailed
            if len(m.attachments) >= 3 and c.platform == "messenger" and c.message_count < 90
        )
        emulator.unsend_after_listing(unsent.id)

        result = workspace.export()

        assert result.exit_code == 0, result.problems
        stored = set(workspace.query("select message_id, position from message_attachments"))
        expected = _attachment_positions(emulator)
        assert stored == expected | {(unsent.id, 0), (unsent.id, 1)}
        assert (result.record["skipped_threads"], result.record["skipped_messages"]) == (0, 1)
        # A call per further page of two: none for lists Graph marks complete.
        follow_ups = [c for c in emulator.calls if c.path.endswith("/attachments")]
        needed = sum(max(0, math.ceil(len(m.attachments) / 2) - 1) for _, m in detailed)
        # The unsent message's one follow-up was asked, and refused.
        assert len(follow_ups) == needed
        assert sum(c.error_code == 100 for c in follow_ups) == 1
        assert workspace.query(f"select id from messages where id = '{unsent.id}'") == [
            (unsent.id,)
        ]
        assert len(_stored_ids(workspace, conversation.id)) == conversation.message_count + 1


def test_pages_of_older_messages_that_hold_none_or_ask_for_themselves_again(workspaces) -> None:
    """A thread's page of older messages may hold none and still have a `next` (Graph may
    answer fewer items than asked): the thread goes on, exactly. A page whose `next` asks for
    that page again is not asked again: the thread ends there, where an endless Graph would
    otherwise hold the run for ever."""
    asked = {}
    for older_pages in ("as_asked", "empty_first"):
        with Emulator(seed=7, scale=1, faults=Faults(older_pages=older_pages)) as emulator:
            workspace = workspaces(older_pages, emulator)
            # A full nested page has a `next`, even where it ends its list (Graph may).
            long = [c for c in selected(emulator.inbox) if c.message_count >= PAGE_SIZE]
            assert long

            result = workspace.export()

            assert result.exit_code == 0, result.problems
            assert workspace.counts() == expected_counts(selected(emulator.inbox))
            asked[older_pages] = sum(
                c.path.endswith("/messages") and c.params["fields"] != "id,created_time"
                for c in emulator.calls
            )
    # Each long thread's empty page besides its pages of older messages (light calls that
    # tell an empty last page from an expired cursor aside).
    assert asked["empty_first"] == asked["as_asked"] + len(long)

    with Emulator(seed=7, scale=1, faults=Faults(older_pages="next_repeats")) as emulator:
        workspace = workspaces("repeats", emulator)

        result = workspace.export()

        assert result.exit_code == 0, result.problems
        stored = dict(workspace.query("select conversation_id, count(*) from messages group by 1"))
        # The nested page and the one older page asked.
        expected = {c.id: min(c.message_count, 2 * PAGE_SIZE) for c in selected(emulator.inbox)}
        assert stored == {thread: count for thread, count in expected.items() if count}
        older = [(c.path, c.params["after"]) for c in emulator.calls if "/messages" in c.path]
        assert len(older) == len(set(older)) == len(long)  # each asked once
        assert workspace.duplicate_ids() == NO_DUPLICATES


def test_listing_pages_that_hold_none_but_have_a_next_are_followed(
    workspaces, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder's listing page may hold no thread and still have a `next`: the pass follows
    it, as any `next`, rather than take it for the folder's end or for an expired cursor:
    exact rows, one more listing call per empty page, no restart."""
    listings = {}
    for empty_first in (False, True):
        faults = Faults(listing_pages_empty_first=empty_first)
        with Emulator(seed=7, scale=1, faults=faults) as emulator:
            workspace = workspaces(f"empty-first-{empty_first}", emulator)

            with caplog.at_level(logging.INFO, logger="meta_inbox"):
                result = workspace.export(page_size=3)

            assert result.exit_code == 0, result.problems
            assert workspace.counts() == expected_counts(selected(emulator.inbox))
            listings[empty_first] = [
                c
                for c in emulator.calls
                if c.path.endswith("/conversations") and "messages" in c.params.get("fields", "")
            ]
    # The emulator's empty pages: a chain's first page reached by a cursor, its `next` marked.
    empty = [c for c in listings[True] if "after" in c.params and "__paging_token" not in c.params]
    assert empty
    assert len(listings[True]) == len(listings[False]) + len(empty)
    assert not [r for r in caplog.records if "cursor expired" in r.getMessage()]


@pytest.mark.parametrize("expiry", ["empty", "error"])
def test_an_attachment_cursor_that_expires_is_read_again_not_cut_short(
    workspaces, expiry: str
) -> None:
    """Attachment lists page by cursors too: one that expires (answered with an empty page, or
    refused) while a message's list is followed reads that list again from its start, rather
    than hand the message over with part of its attachments."""
    faults = Faults(attachments_page_cap=2, cursor_expiry=expiry)
    with Emulator(seed=7, scale=1, faults=faults) as emulator:
        workspace = workspaces(f"expired-{expiry}", emulator)
        emulator.expire_cursors_when_asked(
            lambda path, params: path.endswith("/attachments") and "after" in params
        )

        result = workspace.export()

        assert result.exit_code == 0, result.problems
        stored = set(workspace.query("select message_id, position from message_attachments"))
        expected = _attachment_positions(emulator)
        assert stored == expected
        assert (result.record["skipped_threads"], result.record["skipped_messages"]) == (0, 0)
        follow_ups = [c for c in emulator.calls if c.path.endswith("/attachments")]
        read_again = [
            c for c in follow_ups if "after" not in c.params and c.params["fields"] != "id"
        ]
        assert read_again


def test_complete_attachment_lists_with_next_cost_no_call(
    workspace: Workspace, emulator: Emulator
) -> None:
    several = [m for c in selected(emulator.inbox) for m in c.messages if len(m.attachments) >= 2]
    assert several

    assert workspace.export().exit_code == 0

    assert [c for c in emulator.calls if c.path.endswith("/attachments")] == []
    assert workspace.counts() == expected_counts(selected(emulator.inbox))


def test_instagram_ignoring_folder_lists_each_thread_once_in_a_stable_folder(workspaces) -> None:
    with Emulator(seed=7, scale=1, faults=Faults(instagram_ignores_folder=True)) as emulator:
        workspace = workspaces("ignored", emulator)

        first = workspace.export()

        assert first.exit_code == 0, first.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        walked = {
            c.params.get("folder")
            for c in emulator.calls
            if c.path.endswith("/conversations")
            and c.params["platform"] == "instagram"
            and c.params["fields"] != "id"
        }
        assert walked == {"inbox"}
        instagram = "select id, folder from conversations where platform = 'instagram' order by id"
        folders = workspace.query(instagram)
        assert {folder for _, folder in folders} == {"inbox"}
        history = workspace.query("select count(*) from conversation_history")

        second = workspace.export()

        assert second.exit_code == 0, second.problems
        assert workspace.query(instagram) == folders
        assert workspace.query("select count(*) from conversation_history") == history
        assert workspace.counts() == expected_counts(selected(emulator.inbox))


def test_a_refused_folder_is_reported_and_the_rest_is_exact(
    workspace: Workspace, emulator: Emulator
) -> None:
    page = next(p for p in emulator.inbox.pages if p.instagram)
    emulator.fail_listing(page.id, "instagram", "spam", 100, message="(#100) Invalid folder")
    emulator.fail_listing(page.id, "messenger", "other", 12345)

    result = workspace.run()

    assert result.code == 9, result.output
    refused = {(page.id, "instagram", "spam"), (page.id, "messenger", "other")}
    kept = [c for c in selected(emulator.inbox) if (c.page_id, c.platform, c.folder) not in refused]
    assert workspace.counts() == expected_counts(kept)
    for platform, folder in (("instagram", "spam"), ("messenger", "other")):
        assert f"Graph refused the {platform} folder {folder}" in result.stderr
    folders = workspace.state()["folders"]
    assert f"{page.id}/instagram/spam" not in folders
    assert f"{page.id}/messenger/other" not in folders
    assert f"{page.id}/instagram/inbox" in folders
    assert "Traceback" not in result.output
    # Instagram itself was not taken for missing: its other folders are all there.
    assert {row[0] for row in workspace.query(
        f"select distinct folder from conversations where page_id = '{page.id}' "
        "and platform = 'instagram'")} == set(FOLDERS) - {"spam"}  # fmt: skip


def test_a_strict_one_second_window_costs_few_throttles(workspaces) -> None:
    """Graph's 2 calls a second per Page, enforced as a strict sliding window, three Pages,
    0.3 s answers: paced with a margin, the run meets few refusals and loads everything."""
    limits = Limits(calls_per_window=2, window_seconds=1.0)
    with Emulator(seed=7, scale=1, pages=3, latency=0.3, limits=limits) as emulator:
        workspace = workspaces("strict", emulator)

        result = workspace.export(max_calls_per_second=2.0)

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        throttled = sum(emulator.throttle_errors.values())
        assert throttled <= 5, emulator.throttle_errors
        assert result.record["throttled"] == throttled


def test_an_app_throttle_on_one_page_holds_every_page(workspaces) -> None:
    """Code 4 is the app's limit, shared by every Page token: after one Page's call meets it,
    the other Pages wait too instead of each meeting it in turn."""
    with Emulator(seed=7, scale=1, pages=3, latency=0.05) as emulator:
        workspace = workspaces("app", emulator)
        first = emulator.inbox.pages[0]
        emulator.throttle_app(first.id, seconds=1.0)

        result = workspace.export(max_calls_per_second=2.0, max_concurrency=3)

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        # The call that met it, and at most the calls already in flight then.
        refused = [c for c in emulator.calls if c.error_code == 4]
        assert 1 <= len(refused) <= 3, refused
        assert result.record["throttled"] == len(refused)
