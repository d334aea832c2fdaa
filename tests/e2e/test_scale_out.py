"""Many Pages on many workers: one pipeline per Page, all loading one dataset.

On PostgreSQL the per-Page pipelines run at the same time (what the Airflow DAG does); on DuckDB,
a single-writer file, they take turns. Either way a `--full-refresh` of one Page replaces that
Page's rows and leaves the others' value for value. A DuckDB load that finds the file held by
another pipeline's load exits 11 with one line and loses nothing.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import pytest

from conftest import CliResult, Workspace, sessions_waiting_on_locks, wait_for
from meta_inbox.emulator import Emulator
from meta_inbox.metrics import METRIC_VIEWS
from meta_inbox.outcomes import ExitCode
from meta_inbox.tables import REFRESHES, RUNS, TABLES
from model import detailed_messages, expected_counts, selected

PAGES = 4
DATASET = "inbox"
# Exported tables, with the column naming each row's Page.
PAGE_COLUMNS = {table.name: table.page_column for table in TABLES}
# What a run rewrites in a row even when nothing changed: dlt's load id, when the Page was last
# read (`pages.exported_at`, the start of the run that read it), and the fingerprint a message
# gets when first read again (`messages.rows_hash`).
RUN_COLUMNS = {"_dlt_load_id", "exported_at", "rows_hash"}

Query = Callable[[str], list[tuple[Any, ...]]]
Commands = dict[str, list[str]]  # arguments of `meta-inbox run`, by Page


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=7, scale=1, pages=PAGES) as emu:
        yield emu


@dataclass
class Dataset:
    """Where the Pages' pipelines load, and how they share it."""

    destination: str
    query: Query
    together: bool  # the pipelines of a round run at the same time (else one after the other)

    def run_round(self, workspace: Workspace, commands: Commands) -> dict[str, CliResult]:
        if not self.together:
            return {key: finished(workspace.start("run", *args)) for key, args in commands.items()}
        started = {key: workspace.start("run", *args) for key, args in commands.items()}
        return {key: finished(process) for key, process in started.items()}


@pytest.fixture(params=["postgres", "duckdb"])
def dataset(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Dataset:
    if request.param == "postgres":
        return Dataset("postgres", postgres(request.getfixturevalue("postgres_dsn")), True)
    return Dataset("duckdb", duckdb_file(shared_duckdb_file(tmp_path, monkeypatch)), False)


def shared_duckdb_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One DuckDB file for every pipeline (by default each would write `<pipeline>.duckdb`)."""
    path = tmp_path / "shared.duckdb"
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(path))
    return path


def page_ids(emulator: Emulator) -> list[str]:
    return sorted(page.id for page in emulator.inbox.pages)


def page_run(page_id: str, *options: str) -> list[str]:
    """Arguments of `meta-inbox run` for a Page's own pipeline, as the Airflow DAG runs it."""
    return ["--page-id", page_id, "--pipeline-name", pipeline_of(page_id), *options]


def pipeline_of(page_id: str) -> str:
    return f"meta_inbox_{page_id}"


def finished(process: subprocess.Popen[str]) -> CliResult:
    stdout, stderr = process.communicate(timeout=300)
    return CliResult(process.returncode, stdout, stderr)


def postgres(dsn: str) -> Query:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()

    return query


def duckdb_file(path: Path) -> Query:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(path), read_only=True) as connection:
            return connection.execute(sql).fetchall()

    return query


def counts_by_page(query: Query, pages: list[str]) -> dict[str, dict[str, int]]:
    """Rows per Page in each table the model counts (`expected_counts`)."""
    counts: dict[str, dict[str, int]] = {page: {} for page in pages}
    for table in expected_counts([]):
        column = PAGE_COLUMNS[table]
        found = dict(query(f"select {column}, count(*) from {DATASET}.{table} group by {column}"))
        for page in pages:
            counts[page][table] = found.get(page, 0)
    return counts


def expected_by_page(
    emulator: Emulator, pages: list[str], detailed_before: set[str] = frozenset()
) -> dict[str, dict[str, int]]:
    return {
        page: expected_counts(selected(emulator.inbox, [page]), detailed_before) for page in pages
    }


def rows_of(query: Query, pages: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of these Pages in every exported table, but for what each run rewrites."""
    wanted = ", ".join(f"'{page}'" for page in pages)
    snapshot = {}
    for table in TABLES:
        columns = [
            name
            for (name,) in query(
                "select column_name from information_schema.columns "
                f"where table_schema = '{DATASET}' and table_name = '{table.name}' "
                "order by ordinal_position"
            )
            if name not in RUN_COLUMNS
        ]
        rows = query(
            f"select {', '.join(columns)} from {DATASET}.{table.name} "
            f"where {table.page_column} in ({wanted})"
        )
        snapshot[table.name] = sorted(rows, key=repr)
    return snapshot


def duplicate_keys(query: Query) -> dict[str, int]:
    """Rows beyond one per primary key, in every exported table that has one."""
    return {
        table.name: query(
            f"select count(*) - count(distinct ({', '.join(table.primary_key)})) "
            f"from {DATASET}.{table.name}"
        )[0][0]
        for table in TABLES
        if table.primary_key
    }


def runs_by_pipeline(query: Query) -> dict[str, list[str]]:
    """The statuses `_meta_inbox_runs` recorded, per pipeline, oldest first."""
    runs: dict[str, list[str]] = {}
    for pipeline_name, status in query(
        f"select pipeline_name, status from {DATASET}.{RUNS.name} order by started_at"
    ):
        runs.setdefault(pipeline_name, []).append(status)
    return runs


def views(query: Query) -> set[str]:
    return {
        name
        for (name,) in query(
            f"select table_name from information_schema.views where table_schema = '{DATASET}'"
        )
    }


def assert_exit_zero(results: dict[str, CliResult]) -> None:
    failed = {key: result.output for key, result in results.items() if result.code != 0}
    assert not failed, failed


def assert_round(
    dataset: Dataset, pages: list[str], expected: dict[str, dict[str, int]], rounds: int
) -> None:
    """What holds after every round: exact rows, one run record per process, the views."""
    assert counts_by_page(dataset.query, pages) == expected
    assert not any(duplicate_keys(dataset.query).values()), duplicate_keys(dataset.query)
    assert runs_by_pipeline(dataset.query) == {pipeline_of(p): ["success"] * rounds for p in pages}
    assert {view.name for view in METRIC_VIEWS} <= views(dataset.query)


def test_page_pipelines_backfill_read_updates_and_refresh_one_page(
    workspace: Workspace, emulator: Emulator, dataset: Dataset
) -> None:
    pages = page_ids(emulator)
    assert len(pages) == PAGES
    into = ("--destination", dataset.destination)

    # 1. The backfill, each process creating the tables it loads and the metric views.
    backfill = dataset.run_round(workspace, {page: page_run(page, *into) for page in pages})

    assert_exit_zero(backfill)
    assert_round(dataset, pages, expected_by_page(emulator, pages), rounds=1)

    # 2. New activity, read incrementally; as a fan-out does, the views are left to one last
    # command.
    detailed = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)
    incremental = dataset.run_round(
        workspace, {page: page_run(page, *into, "--no-views") for page in pages}
    )
    refreshed_views = finished(workspace.start("views", *into))

    assert_exit_zero(incremental)
    assert refreshed_views.code == 0, refreshed_views.output
    assert_round(dataset, pages, expected_by_page(emulator, pages, detailed), rounds=2)

    # 3. One Page reloaded from scratch while the others run as usual, with nothing new for
    # them. The refresh drops the details Instagram no longer gives for messages that were
    # among a thread's newest 20 in the backfill.
    refreshed, others = pages[0], pages[1:]
    before = rows_of(dataset.query, others)
    exported_before = dict(dataset.query(f"select id, exported_at from {DATASET}.pages"))
    mixed = dataset.run_round(
        workspace,
        {page: page_run(page, *into) for page in others}
        | {refreshed: page_run(refreshed, *into, "--full-refresh")},
    )

    assert_exit_zero(mixed)
    expected = expected_by_page(emulator, others, detailed)
    expected |= expected_by_page(emulator, [refreshed])
    assert_round(dataset, pages, expected, rounds=3)
    assert rows_of(dataset.query, others) == before
    exported_after = dict(dataset.query(f"select id, exported_at from {DATASET}.pages"))
    assert all(exported_after[page] > exported_before[page] for page in pages)
    assert dataset.query(
        f"select page_id, pipeline_name, applied_at is not null from {DATASET}.{REFRESHES.name}"
    ) == [(refreshed, pipeline_of(refreshed), True)]


@pytest.mark.parametrize(
    ("before", "held"),
    [
        pytest.param(None, f"create schema {DATASET}", id="dataset"),
        pytest.param(f"create schema {DATASET}", f"create table {DATASET}.messages (id text)",
                     id="tables"),
    ],
)  # fmt: skip
def test_first_loads_meeting_at_the_same_ddl_all_succeed(
    workspace: Workspace,
    emulator: Emulator,
    postgres_dsn: str,
    before: str | None,
    held: str,
) -> None:
    """Four first loads meet where the dataset (or its tables) gets created: the test holds that
    DDL uncommitted until all four wait on Postgres, then rolls it back, so that they all go on
    at the same moment. Without serialized DDL three of them failed on a unique index of
    Postgres's catalog (or a deadlock)."""
    query = postgres(postgres_dsn)
    pages = page_ids(emulator)
    with closing(psycopg2.connect(postgres_dsn)) as blocker, blocker.cursor() as cursor:
        if before:
            cursor.execute(before)
            blocker.commit()
        cursor.execute(held)
        into = ("--destination", "postgres")
        started = {page: workspace.start("run", *page_run(page, *into)) for page in pages}
        wait_for(
            lambda: sessions_waiting_on_locks(postgres_dsn) == PAGES, "every first load waiting"
        )
        blocker.rollback()
        results = {page: finished(process) for page, process in started.items()}

    assert_exit_zero(results)
    assert counts_by_page(query, pages) == expected_by_page(emulator, pages)
    assert runs_by_pipeline(query) == {pipeline_of(page): ["success"] for page in pages}


def holds_write_lock(pid: int, path: Path) -> bool:
    """Whether `pid` holds DuckDB's lock on `path` (a POSIX lock on the file, held while a
    connection is open: during a run's loads)."""
    if not path.exists():
        return False
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "POSIX" and int(fields[4]) == pid and fields[5].endswith(f":{inode}"):
            return True
    return False


def is_stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t")


def stop_while_holding(process: subprocess.Popen[str], path: Path) -> None:
    """SIGSTOP `process` at a moment its load holds the DuckDB file: a precondition, polled."""
    deadline = time.monotonic() + 120
    while True:
        process.send_signal(signal.SIGSTOP)
        wait_for(lambda: is_stopped(process.pid), "the run stopped")
        if holds_write_lock(process.pid, path):
            return
        process.send_signal(signal.SIGCONT)
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("never caught the run in a load")
        time.sleep(0.01)


def test_a_load_meeting_another_on_one_duckdb_file_exits_11_and_loses_nothing(
    workspace: Workspace, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run holds the DuckDB file only while it loads (reading takes no lock), so runs into
    one file may overlap; a run that needs the file while another's load holds it stops with
    exit 11 and its line, before loading anything. Here the holder is frozen mid-load."""
    path = shared_duckdb_file(tmp_path, monkeypatch)
    holder_page, blocked_page = page_ids(emulator)[:2]
    # A load per thread: the holder is in a load much of the time.
    holder = workspace.start("run", *page_run(holder_page), checkpoint_threads="1")
    stop_while_holding(holder, path)
    try:
        blocked = workspace.run(*page_run(blocked_page))
    finally:
        holder.send_signal(signal.SIGCONT)
    resumed = finished(holder)
    again = workspace.run(*page_run(blocked_page))

    assert blocked.code == ExitCode.DESTINATION_LOCKED, blocked.output
    assert blocked.stderr.splitlines() == [
        f"meta-inbox: The DuckDB file {path} is open in another program (a notebook, the DuckDB "
        "CLI, another run): close it there, or let that run finish, then run again."
    ]
    assert resumed.code == 0, resumed.output
    assert again.code == 0, again.output
    query = duckdb_file(path)
    pages = [holder_page, blocked_page]
    assert counts_by_page(query, pages) == expected_by_page(emulator, pages)
    assert not any(duplicate_keys(query).values()), duplicate_keys(query)
    # The blocked run left no record: it never got to write one.
    assert runs_by_pipeline(query) == {pipeline_of(page): ["success"] for page in pages}
