"""The real `meta-inbox` command: input refused before any call, a documented exit code and one
line for everything a user can fix, SIGINT and SIGTERM, odd characters, progress, help."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import duckdb
import psycopg2
import pytest

from conftest import (
    NO_DUPLICATES,
    Workspace,
    postgres_rows,
    sessions_waiting_on_locks,
    wait_for,
)
from meta_inbox.emulator import Emulator
from meta_inbox.metrics import METRIC_VIEWS
from model import detailed_messages, expected_counts, platform_folders, selected

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _one_line(stderr: str) -> str:
    """The failure line: exactly one, whatever log lines came before it, and no traceback."""
    lines = [line for line in stderr.splitlines() if line.startswith("meta-inbox:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (["--platform", "whatsapp"], {}, "platforms (--platform) 'whatsapp' is unknown"),
        (["--folder", "archive"], {}, "folders (--folder) 'archive' is unknown"),
        (["--page-id", "my-page"], {}, "Page ids are digits only"),
        (["--since", "last tuesday"], {}, "is not a date"),
        (["--destination", "nowhere"], {}, "is not a dlt destination"),
        ([], {"folders": '["inbox", "archive"]'}, "folders (--folder) 'archive' is unknown"),
        ([], {"platforms": '["telegram"]'}, "platforms (--platform) 'telegram' is unknown"),
        ([], {"page_size": "500"}, "page_size must be between 1 and 100"),
        ([], {"base_url": "graph.facebook.com"}, "is not an http(s) URL"),
        ([], {"access_token": " "}, "No access token"),
    ],
)
def test_refused_before_any_call(
    workspace: Workspace, emulator: Emulator, args: list[str], config: dict, expected: str
) -> None:
    result = workspace.run(*args, **config)

    assert result.code == 2, result.output
    assert expected in _one_line(result.stderr)
    assert emulator.calls == []


def test_a_duckdb_file_open_elsewhere(workspace: Workspace) -> None:
    assert workspace.run().code == 0
    with duckdb.connect(str(workspace.database())):
        result = workspace.run()

    assert result.code == 11
    line = _one_line(result.stderr)
    assert str(workspace.database()) in line
    assert "open in another program" in line


def test_a_pipeline_folder_that_cannot_be_written(workspace: Workspace) -> None:
    # Root may write anywhere but /sys and the like: dlt's pipeline folder goes there.
    result = workspace.run(**{})
    assert result.code == 0
    env = workspace.env() | {"DLT_DATA_DIR": "/sys/kernel/meta-inbox"}
    done = workspace.cli("run", env=env)

    assert done.returncode == 12, done.stderr
    assert "Cannot write /sys/kernel/meta-inbox" in _one_line(done.stderr)


def test_duckdb_out_of_memory_stops_with_a_line_and_loses_nothing(
    workspace: Workspace, emulator: Emulator
) -> None:
    """A bound DuckDB cannot load under: exit 16, one line saying which setting to raise, no
    traceback (dlt logs the load jobs it retries). The next run, given the memory, loads the
    whole inbox once: what the failed run committed, if anything, was a checkpoint's."""
    failed = workspace.run(duckdb_memory_limit="8MB", checkpoint_threads="20")

    assert failed.code == 16, failed.output
    line = _one_line(failed.stderr)
    assert line.startswith("meta-inbox: DuckDB ran out of memory while loading"), line
    assert "raise duckdb_memory_limit" in line
    assert "Traceback" not in failed.stderr

    finished = workspace.run()

    assert finished.code == 0, finished.output
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES


def test_duckdb_out_of_memory_writing_the_file_stops_with_a_line_and_loses_nothing(
    workspace: Workspace, emulator: Emulator
) -> None:
    """Under a bound that loads but cannot commit or checkpoint what it loaded (the run after
    a backfill, at this inbox, at 24 MB), DuckDB raises a fatal error or a failed commit rather
    than its out-of-memory error: the same exit 16 and line. The run after it loads exactly."""
    assert workspace.run().code == 0

    failed = workspace.run(duckdb_memory_limit="24MB")

    assert failed.code == 16, failed.output
    line = _one_line(failed.stderr)
    assert line.startswith("meta-inbox: DuckDB ran out of memory while loading ("), line
    assert "MiB used)): raise duckdb_memory_limit" in line

    finished = workspace.run()

    assert finished.code == 0, finished.output
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A filesystem of 48 MB of its own (tmpfs): a full disk without filling the machine's. A
    run of the inbox below takes 15 MB."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_stops_with_a_line_and_loses_nothing(
    small_disk: Path, emulator: Emulator
) -> None:
    """The disk fills while the run writes (dlt's files, DuckDB's log or its checkpoint): exit
    12 and one line, no traceback. Once there is room, the next run loads the whole inbox
    once."""
    workspace = Workspace(small_disk, emulator)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (42 * 2**20))

    failed = workspace.run(checkpoint_threads="20")

    assert failed.code == 12, failed.output
    line = _one_line(failed.stderr)
    assert line.startswith("meta-inbox: The disk is full ("), line
    assert line.endswith(
        "free space on it, or point DLT_DATA_DIR (dlt's pipeline folder) and the destination "
        "at a disk with room; what earlier checkpoints loaded is kept, and the next run goes on "
        "from there."
    ), line
    assert "Traceback" not in failed.stderr

    filler.unlink()
    finished = workspace.run()

    assert finished.code == 0, finished.output
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES


def test_missing_destination_credentials(workspace: Workspace, emulator: Emulator) -> None:
    env = {k: v for k, v in workspace.env().items() if not k.startswith("DESTINATION__")}
    done = workspace.cli("run", "--destination", "postgres", env=env)

    assert done.returncode == 13, done.stderr
    assert "DESTINATION__POSTGRES__CREDENTIALS" in _one_line(done.stderr)
    assert emulator.calls == []


def test_missing_destination_package(workspace: Workspace, emulator: Emulator) -> None:
    env = workspace.env() | {
        "DESTINATION__SNOWFLAKE__CREDENTIALS": "snowflake://loader:pw@account/db?warehouse=w"
    }
    done = workspace.cli("run", "--destination", "snowflake", env=env)

    assert done.returncode == 14, done.stderr
    assert 'pip install "dlt[snowflake]"' in _one_line(done.stderr)
    assert emulator.calls == []


def test_a_base_url_nothing_answers(workspace: Workspace) -> None:
    result = workspace.run(base_url="http://127.0.0.1:9", max_attempts="2")

    assert result.code == 15
    line = _one_line(result.stderr)
    assert "http://127.0.0.1:9 could not be reached (connection refused)" in line
    assert "check base_url" in line


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_extracting_loads_what_was_read(
    workspace: Workspace, emulator: Emulator, number: int, code: int
) -> None:
    emulator.hold_after(15)
    process = workspace.start("run", checkpoint_threads="5")
    assert emulator.wait_until_held(1, timeout=120)
    before = _signalled(process, number)  # the handler ran before the held call is answered
    emulator.release()
    stderr = _finished(process, before)

    assert process.returncode == code, stderr
    assert "interrupted by" in _one_line(stderr)
    record = workspace.runs()[-1]
    assert (record["status"], record["exit_code"]) == ("interrupted", code)
    assert workspace.counts()["messages"] > 0
    assert workspace.relations("VIEW") >= {"conversation_metrics", "response_times"}

    assert workspace.export().exit_code == 0
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_loading_lets_the_load_finish(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str, number: int, code: int
) -> None:
    assert workspace.export(destination="postgres").exit_code == 0
    detailed = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)
    with closing(psycopg2.connect(postgres_dsn)) as blocker, blocker.cursor() as cursor:
        cursor.execute("lock table inbox.messages in access exclusive mode")
        process = workspace.start("run", "--destination", "postgres")
        wait_for(lambda: sessions_waiting_on_locks(postgres_dsn) > 0, "a load waiting")
        before = _signalled(process, number)
        blocker.rollback()
    stderr = _finished(process, before)

    assert process.returncode == code, stderr
    with closing(psycopg2.connect(postgres_dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("select status, exit_code from inbox._meta_inbox_runs order by started_at")
        assert cursor.fetchall()[-1] == ("interrupted", code)
        cursor.execute("select count(*) from information_schema.views where table_schema = 'inbox'")
        assert cursor.fetchone() == (len(METRIC_VIEWS),)
    assert workspace.export(destination="postgres").exit_code == 0
    expected = expected_counts(selected(emulator.inbox), detailed)
    assert {table: postgres_rows(postgres_dsn, table) for table in expected} == expected


def _signalled(process: subprocess.Popen[str], number: int) -> str:
    """Send the signal and read stderr until the run says it is stopping: its handler ran."""
    process.send_signal(number)
    assert process.stderr is not None
    seen = []
    while line := process.stderr.readline():
        seen.append(line)
        if "stopping; loading what was read" in line:
            return "".join(seen)
    raise AssertionError(f"the run ended without taking the signal:\n{''.join(seen)}")


def _finished(process: subprocess.Popen[str], before: str) -> str:
    """The rest of a signalled run: its whole stderr, once it ended."""
    assert process.stderr is not None
    stderr = before + process.stderr.read()
    process.wait(timeout=300)
    return stderr


def test_text_no_destination_stores_is_repaired(workspace: Workspace, emulator: Emulator) -> None:
    """Lone UTF-16 surrogates (Graph cuts snippets inside emoji) become U+FFFD, counted."""
    changed = emulator.inject_surrogates()

    result = workspace.run("--json")

    assert result.code == 0, result.output
    record = json.loads(result.stdout)
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    # Every value repaired holds U+FFFD (the inbox holds none of its own), and no other.
    repaired = sum(
        workspace.query(f"select count(*) from {table} where contains(\"{column}\", '\ufffd')")[0][
            0
        ]
        for table, column in workspace.query(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = 'inbox' and data_type = 'VARCHAR' and table_name not like '\\_%' "
            "escape '\\' and table_name in (select table_name from information_schema.tables "
            "where table_schema = 'inbox' and table_type = 'BASE TABLE')"
        )
    )
    assert record["repaired_values"] == repaired >= 4
    text = workspace.query(f"select message from messages where id = '{changed['message_id']}'")
    assert "\ufffd" in text[0][0]
    snippet = workspace.query(
        f"select snippet from conversations where id = '{changed['conversation_id']}'"
    )
    assert snippet[0][0].endswith("\ufffd")
    name = workspace.query(
        "select name from conversation_participants "
        f"where participant_id = '{changed['participant_id']}'"
    )
    assert all("\ufffd" in row[0] for row in name)
    attachment = workspace.query(
        "select name from message_attachments "
        f"where message_id = '{changed['attachment_message_id']}'"
    )
    assert any("\ufffd" in (row[0] or "") for row in attachment)


def test_progress_is_one_updating_line_on_a_terminal(workspace: Workspace) -> None:
    terminal, stderr = pty.openpty()
    process = workspace.start("run", stderr=stderr)
    os.close(stderr)
    screen = _read_until_closed(terminal)
    stdout, _ = process.communicate(timeout=300)

    assert process.returncode == 0, screen
    assert "read to its end" in screen
    assert "\r\x1b[K" in screen
    assert " INFO " not in screen  # no log-formatted lines on a terminal
    assert "messages without details" in stdout


def test_progress_is_plain_lines_elsewhere(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run()

    assert result.code == 0
    finished = [line for line in result.stderr.splitlines() if "read to its end" in line]
    folders = {line.split(": ")[1] for line in finished}
    # One line per (Page, platform, folder) read to its end, with the run's totals.
    assert (
        len(finished)
        == len(folders)
        == sum(len(platform_folders(p)) for page in emulator.inbox.pages for p in page.platforms)
    )
    assert all(" INFO meta_inbox" in line and "calls)" in line for line in finished)
    assert "\r" not in result.stderr


@pytest.mark.parametrize("command", ["run", "schema"])
def test_a_run_process_loads_neither_pandas_nor_numpy(
    workspace: Workspace, emulator: Emulator, command: str
) -> None:
    """The program as the `meta-inbox` script starts it, telling at its exit which packages it
    loaded: a run does without both; other commands (and Python users) keep them, and pyarrow
    loads numpy when it may."""
    loaded = workspace.root / "loaded.json"
    done = workspace.program(
        f"import atexit, json, sys; atexit.register(lambda: open({str(loaded)!r}, 'w')"
        ".write(json.dumps(list(sys.modules))))",
        command,
    )

    assert done.returncode == 0, done.stderr
    packages = {name.partition(".")[0] for name in json.loads(loaded.read_text())}
    assert {"pyarrow", "dlt"} <= packages
    if command == "schema":
        assert "numpy" in packages
    else:
        assert not {"numpy", "pandas"} & packages
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES


def _read_until_closed(terminal: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(terminal)
    return b"".join(chunks).decode(errors="replace")


def test_help_lists_every_option_and_exit_code(workspace: Workspace) -> None:
    done = subprocess.run(
        workspace.command("run", "--help"), capture_output=True, text=True, check=True
    )
    for option in (
        "--destination",
        "--dataset-name",
        "--pipeline-name",
        "--page-id",
        "--platform",
        "--folder",
        "--since",
        "--full-refresh",
        "--reconcile",
        "--json",
        "--no-views",
        "--debug",
    ):
        assert option in done.stdout, option
    documented = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", README, re.M))
    listed = dict(re.findall(r"^  (\d+) +(.+)$", done.stdout, re.M))
    assert set(listed) == set(documented) - {"130", "143"} | {"130"}
    version = subprocess.run(workspace.command("--version"), capture_output=True, text=True)
    assert re.fullmatch(r"meta-inbox \d+\.\d+\.\d+\n", version.stdout)


def test_pages_lists_what_the_token_reads(workspace: Workspace, emulator: Emulator) -> None:
    done = workspace.cli("pages", "--json")

    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {
            "id": page.id,
            "name": page.name,
            "instagram_id": page.instagram.id if page.instagram else None,
            "instagram_username": page.instagram.username if page.instagram else None,
            "login": "facebook_page",
        }
        for page in emulator.inbox.pages
    ]


def test_bare_command_prints_the_help(workspace: Workspace) -> None:
    done = subprocess.run(workspace.command(), capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: meta-inbox ")
    assert "SOURCES__META_INBOX__ACCESS_TOKEN" in done.stdout
    assert ".dlt/secrets.toml" in done.stdout


def test_emulator_help_describes_every_option(workspace: Workspace) -> None:
    done = subprocess.run(
        workspace.command("emulator", "--help"), capture_output=True, text=True, check=True
    )
    options = re.findall(r"^  (--[\w-]+)(?: [A-Z_]+)?(?:\n {24}| +)(\S.*)$", done.stdout, re.M)
    assert {name for name, _ in options} == {
        "--debug", "--port", "--seed", "--scale", "--pages", "--latency", "--per-second"
    }  # fmt: skip
    assert all(text.strip() for _, text in options)


def test_pages_lists_instagram_or_none(workspace: Workspace, emulator: Emulator) -> None:
    done = workspace.cli("pages")

    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["page", "id", "Instagram", "name"]
    assert [row.split()[0] for row in rows] == [page.id for page in emulator.inbox.pages]
    for row, page in zip(rows, emulator.inbox.pages, strict=True):
        if page.instagram:
            assert f"{page.instagram.id} @{page.instagram.username}" in row
        else:
            assert row.split()[1:3] == ["none", "linked"]
        assert row.endswith(page.name)
