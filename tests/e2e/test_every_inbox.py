"""Issue 18: the inboxes meta-inbox did not read whole. Conversation Routing's `is_owner`, threads
archived before mid-2018, one person's threads. Exact rows from the emulator's model; calls
counted."""

from __future__ import annotations

from conftest import NO_DUPLICATES, Workspace
from meta_inbox.emulator import Emulator
from model import expected_counts, selected


def _listings(emulator: Emulator, page_id: str | None = None) -> list:
    return [
        call
        for call in emulator.calls
        if call.path.endswith("/conversations")
        and call.params.get("fields") != "id"
        and (page_id is None or call.page_id == page_id)
    ]


def test_is_owner_is_graphs_for_every_thread(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.export()

    assert result.exit_code == 0, result.problems
    stored = dict(workspace.query("select id, is_owner from conversations"))
    expected = {c.id: c.is_owner for c in selected(emulator.inbox)}
    assert stored == expected
    # The emulator's mix: owned, owned by another app, and left out.
    assert set(expected.values()) == {True, False, None}
    assert all("is_owner" in call.params["fields"].split(",") for call in _listings(emulator))


def test_a_page_refusing_is_owner_loses_only_that_field_once(
    workspace: Workspace, emulator: Emulator
) -> None:
    refusing = emulator.inbox.pages[0]
    emulator.refuse_field(refusing.id, "is_owner")

    # One call at a time: the first listing meets the refusal before any other is asked.
    result = workspace.export(max_concurrency=1)

    assert result.exit_code == 0, result.problems
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    stored = dict(workspace.query("select id, is_owner from conversations"))
    assert stored == {
        c.id: None if c.page_id == refusing.id else c.is_owner for c in selected(emulator.inbox)
    }
    # Instagram's probes (ids only) of Pages without an account are refused as ever.
    refused = [call for call in _listings(emulator) if call.error_code is not None]
    assert [(call.page_id, call.error_code) for call in refused] == [(refusing.id, 100)]
    asked = [
        "is_owner" in call.params["fields"].split(",") for call in _listings(emulator, refusing.id)
    ]
    # The refused call, its retry without the field, and no other call asks for it.
    assert asked[0] is True
    assert not any(asked[1:])
    assert all(
        "is_owner" in call.params["fields"].split(",")
        for page in emulator.inbox.pages[1:]
        for call in _listings(emulator, page.id)
    )
    said = [warning for warning in result.warnings if "is_owner" in warning]
    assert said == [
        f"Page {refusing.id} ({refusing.name}): Graph refuses `is_owner` (Conversation Routing "
        "is not set up for this app): conversations.is_owner stays empty for this Page"
    ]
