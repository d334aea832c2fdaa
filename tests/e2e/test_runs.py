"""`_meta_inbox_runs`: one row per run with its figures, written with the run's last load (so
`dlt pipeline ... trace` shows the export), and `--json` for monitoring."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import Workspace
from meta_inbox.emulator import Emulator
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
    assert first["changed_threads"] == expected["conversations"]
    assert first["new_messages"] == first["messages"] == expected["messages"]
    assert first["messages_without_details"] == len(hidden)
    assert json.loads(first["rows"])["messages"] == expected["messages"]
    assert set(json.loads(first["rows"])) == {table.name for table in TABLES}
    assert first["checkpoints"] == 1
    assert second["new_messages"] == len(activity.new_message_ids) - 1  # see test_export
    assert second["rechecked_threads"] > 0
    assert first["started_at"] < first["finished_at"] <= second["started_at"]
    assert first["run_id"] != second["run_id"]


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
