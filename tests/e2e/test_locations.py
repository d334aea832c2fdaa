"""Where data and state live (README "Run"): a pipeline's working folder in the current folder's
`.dlt/pipelines`, the DuckDB file in the current folder. Two checkouts on one machine share the
user's home (dlt's per-user folders) and nothing else; a moved folder keeps working; a shared
`DLT_DATA_DIR` or another destination on one pipeline stops with exit 2 and one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import QUICK
from meta_inbox.emulator import Emulator
from model import detailed_messages, expected_counts, selected

DEMO_SEED = 7  # `meta-inbox demo`'s default inbox and activity


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The user's home, shared by every checkout of a test (dlt's `~/.dlt` lives there)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def _clone(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def _env(home: Path, emulator: Emulator, **extra: str) -> dict[str, str]:
    """A user's shell: no DLT_* or destination settings of the test session, the emulator's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DLT_", "SOURCES__", "DESTINATION__"))
    }
    env |= {
        "HOME": str(home),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
    }
    env |= {f"SOURCES__META_INBOX__{key.upper()}": str(value) for key, value in QUICK.items()}
    return env | extra


def _cli(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meta_inbox", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("meta-inbox:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _counts(database: Path) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return {
            table: connection.execute(f"select count(*) from inbox.{table}").fetchone()[0]
            for table in expected_counts([])
        }


def _runs(database: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(database), read_only=True) as connection:
        result = connection.execute("select * from inbox._meta_inbox_runs order by started_at")
        names = [column[0] for column in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _demo_expected() -> tuple[dict[str, int], int]:
    """The demo database's rows, and the messages its activity adds, from the model."""
    with Emulator(seed=DEMO_SEED, scale=1) as emulator:
        detailed = detailed_messages(emulator.inbox.conversations)
        activity = emulator.add_activity(seed=DEMO_SEED)
        return (
            expected_counts(selected(emulator.inbox), detailed),
            len(activity.new_message_ids),
        )


def test_two_checkouts_each_keep_their_own_data(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    first, second = _clone(tmp_path, "first"), _clone(tmp_path, "second")
    env = _env(home, emulator)
    demo_rows, activity_messages = _demo_expected()
    expected = expected_counts(selected(emulator.inbox))

    demos = [_cli(folder, env, "demo") for folder in (first, second)]
    runs = [_cli(folder, env, "run") for folder in (first, second)]

    for done in (*demos, *runs):
        assert done.returncode == 0, done.stderr
    for folder, demo in zip((first, second), demos, strict=True):
        assert _counts(folder / "meta_inbox_demo.duckdb") == demo_rows
        assert [
            (r["mode"], r["new_messages"]) for r in _runs(folder / "meta_inbox_demo.duckdb")
        ] == [
            ("regular", demo_rows["messages"] - activity_messages),
            ("regular", activity_messages),
        ]
        assert f"{activity_messages} new messages in" in demo.stdout
        assert "refresh" not in demo.stdout + demo.stderr
        assert _counts(folder / "meta_inbox.duckdb") == expected
        assert len(_runs(folder / "meta_inbox.duckdb")) == 1
        assert (folder / ".dlt" / "pipelines" / "meta_inbox" / "state.json").is_file()
    assert not (home / ".dlt" / "pipelines").exists()


def test_a_moved_folder_goes_on_where_it_was(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    folder = _clone(tmp_path, "project")
    env = _env(home, emulator)
    assert _cli(folder, env, "run").returncode == 0
    moved = tmp_path / "renamed"
    shutil.move(folder, moved)

    done = _cli(moved, env, "run")

    assert done.returncode == 0, done.stderr
    assert not folder.exists()
    assert done.stdout.splitlines()[0].startswith("meta-inbox: 3 Page(s), nothing new, into ")
    assert _counts(moved / "meta_inbox.duckdb") == expected_counts(selected(emulator.inbox))
    assert [run["new_messages"] for run in _runs(moved / "meta_inbox.duckdb")] == [
        expected_counts(selected(emulator.inbox))["messages"],
        0,
    ]


def test_a_shared_pipelines_folder_never_loads_another_folders_file(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    """A cron job (or a second project) with DLT_DATA_DIR set, from another folder."""
    first, second = _clone(tmp_path, "first"), _clone(tmp_path, "second")
    env = _env(home, emulator, DLT_DATA_DIR=str(tmp_path / "dlt"))
    assert _cli(first, env, "run").returncode == 0
    before = (first / "meta_inbox.duckdb").stat().st_mtime_ns

    elsewhere = _cli(second, env, "run")
    assert (first / "meta_inbox.duckdb").stat().st_mtime_ns == before
    assert len(_runs(first / "meta_inbox.duckdb")) == 1
    shutil.rmtree(first)
    gone = _cli(second, env, "run")

    for done in (elsewhere, gone):
        assert done.returncode == 2, done.stderr
        line = _one_line(done.stderr)
        assert line == (
            f"meta-inbox: Pipeline 'meta_inbox' (state in {tmp_path}/dlt/pipelines/meta_inbox) "
            f"loads {first}/meta_inbox.duckdb (duckdb, dataset inbox), not "
            f"{second}/meta_inbox.duckdb (duckdb, dataset inbox): run from the folder of its "
            "data, or give this run another --pipeline-name."
        )
    assert not (second / "meta_inbox.duckdb").exists()
    assert elsewhere.stdout == gone.stdout == ""


def test_another_destination_on_one_pipeline_is_refused(
    tmp_path: Path, home: Path, emulator: Emulator
) -> None:
    folder = _clone(tmp_path, "project")
    env = _env(home, emulator)
    assert _cli(folder, env, "run").returncode == 0
    calls = len(emulator.calls)

    done = _cli(folder, env, "run", "--destination", "filesystem")

    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert f"loads {folder}/meta_inbox.duckdb (duckdb, dataset inbox), not " in line
    assert f"{folder}/meta_inbox_lake (filesystem, dataset inbox)" in line
    assert "another --pipeline-name" in line
    assert "will be ignored" not in done.stderr  # dlt's own line
    assert not (folder / "meta_inbox_lake").exists()
    assert len(emulator.calls) == calls
    lake = _cli(folder, env, "run", "--destination", "filesystem", "--pipeline-name", "lake")
    assert lake.returncode == 0, lake.stderr


def test_a_deleted_database_starts_over(tmp_path: Path, home: Path, emulator: Emulator) -> None:
    folder = _clone(tmp_path, "project")
    env = _env(home, emulator)
    assert _cli(folder, env, "run").returncode == 0
    (folder / "meta_inbox.duckdb").unlink()

    done = _cli(folder, env, "run")

    assert done.returncode == 0, done.stderr
    assert f"{folder}/meta_inbox.duckdb is gone" in done.stderr
    expected = expected_counts(selected(emulator.inbox))
    assert _counts(folder / "meta_inbox.duckdb") == expected
    assert [run["new_messages"] for run in _runs(folder / "meta_inbox.duckdb")] == [
        expected["messages"]
    ]
