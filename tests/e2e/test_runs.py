"""`_meta_inbox_runs`: one row per run with its figures, written with the run's last load (so
`dlt pipeline ... trace` shows the export), and `--json` for monitoring."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

from conftest import Workspace
from meta_inbox.emulator import Emulator
from meta_inbox.emulator.inbox import Conversation
from meta_inbox.tables import RUNS, TABLES
from model import expected_counts, hidden_messages, selected


def test_every_run_appends_its_record(workspace: Workspace, emulator: Emulator) -> None:
    inbox = emulator.inbox
    expected = expected_counts(selected(inbox))
    hidden = hidden_messages(selected(inbox))
    assert workspace.export().exit_code == 0
    first_calls = len(emulator.calls)
    activity = emulator.add_activity(seed=1)
    emulator.reset_calls()
    assert workspace.export().exit_code == 0

    first, second = workspace.runs()
    assert first["status"] == second["status"] == "success"
    assert (first["exit_code"], first["error"], first["mode"]) == (0, None, "regular")
    assert json.loads(first["pages"]) == [page.id for page in inbox.pages]
    assert first["api_calls"] == first_calls
    assert second["api_calls"] == len(emulator.calls)
    assert first["threads_with_new_messages"] == expected["conversations"]
    assert first["new_messages"] == first["messages"] == expected["messages"]
    assert (first["rechecked_threads"], first["messages_merged_again"]) == (0, 0)
    assert first["messages_without_details"] == len(hidden)
    assert json.loads(first["rows"])["messages"] == expected["messages"]
    assert set(json.loads(first["rows"])) == {table.name for table in TABLES}
    assert first["checkpoints"] == 1
    # Every message the activity added, the one sent in the second of a run's newest included.
    assert second["new_messages"] == len(activity.new_message_ids)
    assert second["threads_with_new_messages"] == len(activity.changed_conversation_ids)
    assert second["rechecked_threads"] > 0
    assert second["messages_merged_again"] == second["messages"] - second["new_messages"] > 0
    assert first["started_at"] < first["finished_at"] <= second["started_at"]
    assert first["run_id"] != second["run_id"]


def test_an_idle_run_says_nothing_new(workspace: Workspace, emulator: Emulator) -> None:
    conversations = selected(emulator.inbox)
    assert workspace.run().code == 0

    idle = workspace.run()

    assert idle.code == 0, idle.output
    first_line = idle.stdout.splitlines()[0]
    assert first_line.startswith("meta-inbox: 3 Page(s), nothing new, into ")
    record = workspace.runs()[-1]
    rechecked = _in_recheck_window(conversations, timedelta(days=7))
    assert (record["new_messages"], record["threads_with_new_messages"]) == (0, 0)
    assert (
        record["rechecked_threads"] == len(rechecked) == json.loads(record["rows"])["conversations"]
    )
    assert record["messages_merged_again"] == record["messages"] > 0
    assert (
        f"  rechecked {len(rechecked)} thread(s) without new messages; "
        f"{record['messages']} message(s) merged again" in idle.stdout
    )
    assert workspace.counts() == expected_counts(conversations)


def test_a_reconcile_of_what_is_loaded_finds_nothing_new(
    workspace: Workspace, emulator: Emulator
) -> None:
    expected = expected_counts(selected(emulator.inbox))
    assert workspace.export().exit_code == 0

    result = workspace.export(reconcile=True)

    assert result.exit_code == 0, result.problems
    record = result.record
    assert (record["new_messages"], record["threads_with_new_messages"]) == (0, 0)
    assert record["rechecked_threads"] == expected["conversations"]
    # Instagram's messages without details are not read again: the stored copies stay.
    hidden = hidden_messages(selected(emulator.inbox))
    assert (
        record["messages_merged_again"] == record["messages"] == expected["messages"] - len(hidden)
    )


def _in_recheck_window(conversations: list[Conversation], window: timedelta) -> list[str]:
    """Threads updated within `window` of their folder's newest (Page, platform, folder)."""
    newest: dict[tuple[str, str, str], int] = {}
    for c in conversations:
        key = (c.page_id, c.platform, c.folder)
        newest[key] = max(newest.get(key, 0), c.updated_time)
    return [
        c.id
        for c in conversations
        if c.updated_time >= newest[(c.page_id, c.platform, c.folder)] - window.total_seconds()
    ]


def test_json_summary_is_the_record(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run("--json")

    assert result.code == 0, result.output
    printed = json.loads(result.stdout)
    stored = workspace.runs()[-1]
    assert printed["run_id"] == stored["run_id"]
    assert printed["status"] == "success"
    assert json.loads(printed["rows"]) == {
        **dict.fromkeys((t.name for t in TABLES), 0),
        **expected_counts(selected(emulator.inbox)),
        "conversation_history": len(selected(emulator.inbox)),
    }
    assert printed["api_calls"] == len(emulator.calls)
    assert set(printed) == {column.name for column in RUNS.columns}


def test_failed_and_partial_runs_are_recorded(workspace: Workspace, emulator: Emulator) -> None:
    failing = emulator.inbox.pages[1]
    emulator.revoke_permission(failing.id, "pages_messaging")
    assert workspace.run().code == 9
    emulator.expire_token(emulator.user_token)
    assert workspace.run("--json").code == 3

    partial, failed = workspace.runs()
    assert (partial["status"], partial["exit_code"]) == ("partial", 9)
    assert failing.id in partial["error"]
    assert (failed["status"], failed["exit_code"]) == ("failed", 3)
    assert "access token was refused" in failed["error"]


def test_full_refresh_keeps_the_history_of_runs(workspace: Workspace) -> None:
    assert workspace.export().exit_code == 0
    assert workspace.export(full_refresh=True).exit_code == 0
    runs = workspace.runs()
    assert [(run["status"], run["mode"]) for run in runs] == [
        ("success", "regular"),
        ("success", "full-refresh"),
    ]


def test_the_trace_shows_the_export(workspace: Workspace) -> None:
    """`dlt pipeline <name> trace`: the last run's steps load the data, not only the record."""
    assert workspace.run().code == 0

    trace = subprocess.run(
        [sys.executable, "-m", "dlt", "pipeline", "meta_inbox", "trace"],
        cwd=workspace.root,
        env=workspace.env(),
        capture_output=True,
        text=True,
        check=False,
    )

    assert trace.returncode == 0, trace.stderr
    for table in ("messages", "conversations", "_meta_inbox_runs"):
        assert table in trace.stdout, trace.stdout
