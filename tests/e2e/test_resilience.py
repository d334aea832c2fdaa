"""Throttling, faults and fatal errors: a run finishes correctly, or stops with one line and a
documented exit code, loading what it read and advancing no state it did not cover."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import NO_DUPLICATES, Workspace
from meta_inbox.emulator import Emulator, Faults, Limits
from model import TABLE_NAMES, THROTTLE_CODES, expected_counts, selected


def _one_line(stderr: str) -> str:
    """The failure line: exactly one, whatever progress was logged before it."""
    lines = [line for line in stderr.splitlines() if line.startswith("meta-inbox:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_rough_day_ends_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults of every kind, short pages, a response-size cap and Meta's rate limit: the rows
    are exact, and the day costs at most a few times the calls of a calm one."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1) as calm:
        calm_workspace = Workspace(tmp_path / "calm", calm)
        calm_workspace.root.mkdir()
        assert calm_workspace.export().exit_code == 0
        calm_calls = len(calm.calls)
    faults = Faults(
        server_error_rate=0.06,
        unknown_error_rate=0.03,
        drop_rate=0.06,
        truncate_rate=0.05,
        non_json_rate=0.03,
        short_page_rate=0.2,
        # The heaviest thread listings of the inbox weigh 190-270 kB at full page sizes.
        max_response_bytes=200_000,
    )
    with Emulator(seed=7, scale=1, faults=faults, limits=Limits(per_second=8.0)) as emulator:
        workspace = Workspace(tmp_path / "rough", emulator)
        workspace.root.mkdir()

        result = workspace.export(max_calls_per_second=8.0, max_attempts=12)

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        calls = emulator.calls
        assert [c for c in calls if c.error_code in THROTTLE_CODES] == []
        assert any(c.status == 0 for c in calls), "no dropped connection was exercised"
        assert any(c.status >= 500 for c in calls), "no server error was exercised"
        assert any(c.error_code == 1 and c.status == 500 for c in calls), "the cap never bit"
        assert result.session.stats.retries > 0
        assert len(calls) <= 3 * calm_calls, (len(calls), calm_calls)


def test_throttle_ceiling_stops_cleanly_and_the_next_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1, limits=Limits(calls_per_window=6, window_seconds=30)) as emu:
        workspace = Workspace(tmp_path, emu)

        stopped = workspace.run(max_throttle_wait="1", usage_pause="0", throttle_backoff="0.3")

        assert stopped.code == 7, stopped.output
        line = _one_line(stopped.stderr)
        assert "rate limits" in line
        assert "what was read is loaded" in line
        record = workspace.runs()[-1]
        assert (record["status"], record["exit_code"]) == ("stopped", 7)
        partial = workspace.counts()
        assert 0 < partial["messages"] < expected_counts(selected(emu.inbox))["messages"]
        assert workspace.duplicate_ids() == NO_DUPLICATES

        emu.limits.calls_per_window = None
        assert workspace.export().exit_code == 0
        assert workspace.counts() == expected_counts(selected(emu.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES


def test_expired_token_stops_without_touching_state(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0
    before_counts, before_state = workspace.counts(), workspace.state()
    assert before_state["folders"]
    emulator.add_activity(seed=1)
    emulator.expire_token(emulator.user_token, subcode=463)

    result = workspace.run()

    assert result.code == 3
    line = _one_line(result.stderr)
    assert "token has expired" in line
    assert "Renew it" in line
    assert "fbtrace_id" in line
    assert workspace.counts() == before_counts
    assert workspace.state() == before_state
    assert workspace.runs()[-1]["status"] == "failed"


def test_page_token_required(workspace: Workspace, emulator: Emulator) -> None:
    page = emulator.inbox.pages[0]
    emulator.withhold_page_token(page.id)

    result = workspace.run("--page-id", page.id)

    assert result.code == 4
    line = _one_line(result.stderr)
    assert page.id in line
    assert "Page access token" in line
    assert workspace.data_tables() == set()
    assert workspace.state() == {}


def test_missing_permission_on_the_only_page(workspace: Workspace, emulator: Emulator) -> None:
    page = emulator.inbox.pages[1]
    emulator.revoke_permission(page.id, "pages_messaging")

    result = workspace.run(token=emulator.page_token(page.id))

    assert result.code == 5
    line = _one_line(result.stderr)
    assert "pages_messaging" in line
    assert "Grant" in line
    assert workspace.data_tables() == set()
    assert workspace.state() == {}


def test_one_failing_page_does_not_sink_the_others(
    workspace: Workspace, emulator: Emulator
) -> None:
    failing = emulator.inbox.pages[1]
    emulator.revoke_permission(failing.id, "pages_messaging")

    result = workspace.run()

    assert result.code == 9
    line = _one_line(result.stderr)
    assert failing.id in line
    assert "pages_messaging" in line
    others = [p.id for p in emulator.inbox.pages if p.id != failing.id]
    assert workspace.counts() == expected_counts(selected(emulator.inbox, others))
    assert workspace.runs()[-1]["status"] == "partial"

    emulator._revoked.clear()
    assert workspace.export().exit_code == 0
    assert workspace.counts() == expected_counts(selected(emulator.inbox))


def test_appsecret_proof(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    secret = "app-secret-for-tests-123"
    with Emulator(seed=7, scale=1, app_secret=secret) as emulator:
        workspace = Workspace(tmp_path, emulator)

        refused = workspace.run()
        assert refused.code == 2
        assert "app_secret" in _one_line(refused.stderr)

        signed = workspace.run(app_secret=secret)
        assert signed.code == 0, signed.output
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert all(secret not in output for output in workspace.outputs)


def test_tables_exist_only_after_a_load(workspace: Workspace) -> None:
    assert workspace.data_tables() == set()
    assert workspace.state() == {}
    assert workspace.export().exit_code == 0
    assert workspace.data_tables() == set(TABLE_NAMES)
