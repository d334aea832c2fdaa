"""`_meta_inbox_runs`: one row per run with its figures, and `--json` for monitoring."""

from __future__ import annotations

import json

from conftest import TABLE_NAMES, Workspace, expected_counts, hidden_messages, selected
from meta_inbox.emulator import Emulator


def test_every_run_appends_its_record(workspace: Workspace, emulator: Emulator) -> None:
    inbox = emulator.inbox
    expected = expected_counts(selected(inbox))
    hidden = hidden_messages(selected(inbox))
    assert workspace.run().code == 0
    first_calls = len(emulator.calls)
    activity = emulator.add_activity(seed=1)
    emulator.reset_calls()
    assert workspace.run().code == 0

    first, second = workspace.runs()
    assert first["status"] == second["status"] == "success"
    assert first["exit_code"] == 0
    assert first["error"] is None
    assert json.loads(first["pages"]) == [page.id for page in inbox.pages]
    assert first["api_calls"] == first_calls
    assert second["api_calls"] == len(emulator.calls)
    assert first["changed_threads"] == expected["conversations"]
    assert first["new_messages"] == expected["messages"]
    assert first["messages_without_details"] == len(hidden)
    assert json.loads(first["rows"])["messages"] == expected["messages"]
    assert second["new_messages"] == len(activity.new_message_ids)
    assert json.loads(second["rows"])["conversations"] == len(activity.changed_conversation_ids)
    assert first["started_at"] < first["finished_at"] <= second["started_at"]
    assert first["run_id"] != second["run_id"]


def test_json_summary_is_the_record(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run("--json")

    assert result.code == 0, result.output
    printed = json.loads(result.stdout)
    stored = workspace.runs()[-1]
    assert printed["run_id"] == stored["run_id"]
    assert printed["status"] == "success"
    assert printed["rows"] == dict.fromkeys(TABLE_NAMES, 0) | {
        name: count for name, count in expected_counts(selected(emulator.inbox)).items()
    }
    assert printed["api_calls"] == len(emulator.calls)
    assert set(printed) == set(stored) - {"_dlt_load_id", "_dlt_id"}


def test_failed_and_partial_runs_are_recorded(workspace: Workspace, emulator: Emulator) -> None:
    failing = emulator.inbox.pages[1]
    emulator.revoke_permission(failing.id, "pages_messaging")
    assert workspace.run().code == 9
    emulator.expire_token(emulator.user_token)
    assert workspace.run("--json").code == 3

    partial, failed = workspace.runs()
    assert partial["status"] == "partial"
    assert partial["exit_code"] == 9
    assert failing.id in partial["error"]
    assert failed["status"] == "failed"
    assert failed["exit_code"] == 3
    assert "access token was refused" in failed["error"]


def test_full_refresh_keeps_the_history_of_runs(workspace: Workspace) -> None:
    assert workspace.run().code == 0
    assert workspace.run("--full-refresh").code == 0
    assert [run["status"] for run in workspace.runs()] == ["success", "success"]
