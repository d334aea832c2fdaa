"""Throttling, faults, kills, races and fatal errors: finish correctly, or stop with one line."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    TABLE_NAMES,
    Workspace,
    detailed_messages,
    expected_counts,
    selected,
)
from meta_inbox.emulator import Emulator, Faults, Limits

THROTTLE_CODES = {4, 17, 32, 613, 80001, 80002, 80006}
QUICK_RETRIES = {"retry_backoff": "0.05", "throttle_backoff": "0.5", "max_attempts": "10"}


def _no_duplicates(workspace: Workspace) -> None:
    assert workspace.duplicate_ids() == {"conversations": 0, "messages": 0}
    pairs = workspace.query(
        "select count(*) - count(distinct (conversation_id, participant_id)) "
        "from conversation_participants"
    )
    assert pairs == [(0,)]


def _one_line(stderr: str) -> str:
    """The failure line: exactly one, whatever progress was logged before it."""
    lines = [line for line in stderr.splitlines() if line.startswith("meta-inbox:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def rough_emulator() -> Iterator[Emulator]:
    """Meta on a bad day: a tight rolling budget per Page, faults of every kind, a size cap."""
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
    # 10 calls a second per Page at most, against the client's own pace of 8: usage climbs
    # past the slow-down threshold, and only pacing by the headers keeps clear of the limit.
    limits = Limits(calls_per_window=20, window_seconds=2.0, per_second=12.0)
    with Emulator(seed=7, scale=1, faults=faults, limits=limits) as emulator:
        yield emulator


def test_rough_day_ends_exact_and_paced_by_the_headers(
    tmp_path: Path, rough_emulator: Emulator
) -> None:
    workspace = Workspace(tmp_path, rough_emulator)

    result = workspace.run(max_calls_per_second="8", usage_pause="2", **QUICK_RETRIES)

    assert result.code == 0, result.output
    assert workspace.counts() == expected_counts(selected(rough_emulator.inbox))
    _no_duplicates(workspace)
    calls = rough_emulator.calls
    throttled = [c for c in calls if c.error_code in THROTTLE_CODES]
    assert len(throttled) <= 5, f"{len(throttled)} throttled of {len(calls)} calls"
    assert any(c.status == 0 for c in calls), "no dropped connection was exercised"
    assert any(c.status >= 500 for c in calls), "no server error was exercised"
    assert "asked for less data" in result.stderr, "the response-size cap was never hit"


def test_throttle_ceiling_stops_cleanly_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    limits = Limits(calls_per_window=6, window_seconds=30.0)
    with Emulator(seed=7, scale=1, limits=limits) as emulator:
        workspace = Workspace(tmp_path, emulator)

        stopped = workspace.run(max_throttle_wait="1", usage_pause="0", throttle_backoff="0.3")

        assert stopped.code == 7, stopped.output
        assert "rate limits" in stopped.stderr
        assert "what was read is loaded" in stopped.stderr
        partial = workspace.counts()
        assert 0 < partial["messages"] < expected_counts(selected(emulator.inbox))["messages"]
        _no_duplicates(workspace)

        emulator.limits.calls_per_window = None
        assert workspace.run().code == 0
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        _no_duplicates(workspace)


def test_sigkill_at_several_points_then_a_full_run(tmp_path: Path) -> None:
    """Kill the CLI during extraction, normalisation and loading; then run it to the end."""
    with Emulator(seed=7, scale=1, latency=0.01) as emulator:
        reference = Workspace(tmp_path / "reference", emulator)
        reference.root.mkdir()
        started = time.monotonic()
        assert reference.run().code == 0
        duration = time.monotonic() - started

        workspace = Workspace(tmp_path / "killed", emulator)
        workspace.root.mkdir()
        for share in (0.2, 0.5, 0.75, 0.9):
            _kill_after(workspace, duration * share)
        assert workspace.run().code == 0
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        _no_duplicates(workspace)

        detailed = detailed_messages(emulator.inbox.conversations)
        emulator.add_activity(seed=1)
        for share in (0.3, 0.8):
            _kill_after(workspace, duration * share)
        assert workspace.run().code == 0
        assert workspace.counts() == expected_counts(selected(emulator.inbox), detailed)
        _no_duplicates(workspace)


def _kill_after(workspace: Workspace, seconds: float) -> None:
    process = workspace.start()
    try:
        process.wait(timeout=seconds)
    except Exception:
        process.send_signal(signal.SIGKILL)
    process.communicate()


def test_second_concurrent_run_refuses(tmp_path: Path) -> None:
    with Emulator(seed=7, scale=1, latency=0.05) as emulator:
        workspace = Workspace(tmp_path, emulator)
        first = workspace.start()
        deadline = time.monotonic() + 60
        while len(emulator.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)

        second = workspace.run()

        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, out + err
        assert second.code == 10
        assert "Another run of pipeline 'meta_inbox' is in progress" in _one_line(second.stderr)
        assert workspace.counts() == expected_counts(selected(emulator.inbox))


def test_expired_token_stops_without_touching_state(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.run().code == 0
    before_counts, before_cursors = workspace.counts(), workspace.cursors()
    assert before_cursors
    emulator.add_activity(seed=1)
    emulator.expire_token(emulator.user_token, subcode=463)

    result = workspace.run()

    assert result.code == 3
    line = _one_line(result.stderr)
    assert "token has expired" in line
    assert "Renew it" in line
    assert workspace.counts() == before_counts
    assert workspace.cursors() == before_cursors
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
    assert workspace.cursors() == {}


def test_missing_permission_on_the_only_page(workspace: Workspace, emulator: Emulator) -> None:
    page = emulator.inbox.pages[1]
    emulator.revoke_permission(page.id, "pages_messaging")

    result = workspace.run(token=emulator.page_token(page.id))

    assert result.code == 5
    line = _one_line(result.stderr)
    assert "pages_messaging" in line
    assert "Grant" in line
    assert workspace.data_tables() == set()
    assert workspace.cursors() == {}


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

    emulator._revoked.clear()
    assert workspace.run().code == 0
    assert workspace.counts() == expected_counts(selected(emulator.inbox))


def test_appsecret_proof(tmp_path: Path) -> None:
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
    assert workspace.cursors() == {}
    assert workspace.run().code == 0
    assert set(TABLE_NAMES) <= workspace.tables()
