"""`--destination filesystem`: a Parquet lake, read through `meta-inbox lake-views` exactly as the
warehouse is read: the same schema, tables, metric views and run records."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pytest

from conftest import Workspace
from meta_inbox import lake
from meta_inbox.demo import EXAMPLE_QUERIES
from meta_inbox.emulator import Emulator
from meta_inbox.errors import Interrupted
from meta_inbox.metrics import METRIC_VIEWS
from meta_inbox.pipeline import _Run
from meta_inbox.tables import TABLES, Table
from model import TABLE_NAMES, detailed_messages, expected_counts, selected

LAKE = {"destination": "filesystem", "pipeline_name": "lake"}
CHILDREN = [table.name for table in TABLES if table.parent]


def test_the_lake_reads_like_the_warehouse(
    workspace: Workspace, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake_folder = workspace.root / "meta_inbox_lake"
    first = workspace.run("--destination", "filesystem", "--pipeline-name", "lake")
    assert first.code == 0, first.output
    # Parquet files are appended to: no dlt warning that merging falls back to append.
    assert "falling back to append" not in first.output
    assert workspace.export().exit_code == 0  # the same history into DuckDB, to compare with
    counts = expected_counts(selected(emulator.inbox))
    for table in TABLE_NAMES:
        assert (
            ds.dataset(lake_folder / "inbox" / table, format="parquet").count_rows()
            == (counts[table])
        ), table
    detailed = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)
    # Not compacted again: the views read a compacted file (one row per key) and the files
    # loaded since, rows read again among them.
    monkeypatch.setattr(lake, "COMPACT_ABOVE", 100.0)
    assert workspace.export(**LAKE).exit_code == 0
    assert workspace.export().exit_code == 0

    for table in ("conversations", "messages", "message_reactions"):
        names = [p.name for p in (lake_folder / "inbox" / table).glob("*.parquet")]
        assert sorted(name.startswith("compacted.") for name in names) == [False, True], names

    views = workspace.cli("lake-views", "meta_inbox_lake")

    assert views.returncode == 0, views.stderr
    assert "lake.duckdb" in views.stdout
    with lake.connect(lake_folder) as connection:
        connection.execute("set schema = 'inbox'")
        for table in TABLE_NAMES:
            on_the_lake = connection.execute(f"select count(*) from {table}").fetchone()[0]
            assert on_the_lake == expected_counts(selected(emulator.inbox), detailed)[table], table
        # The metric views hold the same rows as DuckDB's.
        for view in METRIC_VIEWS:
            columns = ", ".join(c.name for c in view.columns if c.name != "url_expires_at")
            sql = f"select {columns} from {view.name} order by all"
            assert connection.execute(sql).fetchall() == workspace.query(sql), view.name
        runs = connection.execute("select status, mode from _meta_inbox_runs").fetchall()
        assert runs == [("success", "regular"), ("success", "regular")]
        # The lake only appends: threads read again are there twice, the views keep the latest.
        appended = connection.execute(
            "select count(*) from read_parquet('inbox/conversations/*.parquet')"
        ).fetchone()[0]
    assert appended > expected_counts(selected(emulator.inbox))["conversations"]


def test_pipelines_of_other_pages_share_a_lake_dataset(
    workspace: Workspace, emulator: Emulator
) -> None:
    """A pipeline's first run into a lake dataset another pipeline loaded (its lake client has
    no view of those tables yet) takes what it reads as new; the views hold each Page once."""
    pages = emulator.inbox.pages[:2]
    for _ in range(2):
        for number, page in enumerate(pages):
            done = workspace.run(
                "--destination",
                "filesystem",
                "--pipeline-name",
                f"page{number}",
                PAGE_IDS=json.dumps([page.id]),
            )
            assert done.code == 0, done.output

    with lake.connect(workspace.root / "meta_inbox_lake") as connection:
        connection.execute("set schema = 'inbox'")
        expected = expected_counts(selected(emulator.inbox, [page.id for page in pages]))
        for table in TABLE_NAMES:
            on_the_lake = connection.execute(f"select count(*) from {table}").fetchone()[0]
            assert on_the_lake == expected[table], table


def test_a_lake_folder_can_be_moved(workspace: Workspace, emulator: Emulator) -> None:
    assert workspace.export(**LAKE).exit_code == 0
    lake.write_views(workspace.root / "meta_inbox_lake", "inbox")
    moved = workspace.root / "elsewhere" / "lake"
    moved.parent.mkdir()
    shutil.move(workspace.root / "meta_inbox_lake", moved)

    with lake.connect(moved) as connection:
        count = connection.execute("select count(*) from inbox.messages").fetchone()[0]

    assert count == expected_counts(selected(emulator.inbox))["messages"]


def test_the_demo_queries_run_unchanged_on_the_lake(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export(**LAKE).exit_code == 0
    assert workspace.export().exit_code == 0
    lake.write_views(workspace.root / "meta_inbox_lake", "inbox")

    with lake.connect(workspace.root / "meta_inbox_lake") as connection:
        for title, sql in EXAMPLE_QUERIES.items():
            assert connection.execute(sql).fetchall() == workspace.query(sql), title


def test_a_page_refreshed_on_the_lake_keeps_only_its_new_rows(
    workspace: Workspace, emulator: Emulator
) -> None:
    page = emulator.inbox.pages[0]
    assert workspace.export(**LAKE).exit_code == 0
    emulator.add_activity(seed=1)

    refreshed = workspace.export(**LAKE, full_refresh=True, page_ids=[page.id])

    assert refreshed.exit_code == 0
    assert _page_counts(workspace, page.id) == expected_counts(selected(emulator.inbox, [page.id]))


def test_a_thread_read_twice_in_one_load_has_each_row_once_on_the_lake(
    workspace: Workspace, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor by offset repeats a thread at the edge of two listing pages when one above
    moved up meanwhile: read twice in one load, its rows are twice in that load's files. The
    lake's views show each key once, row for row as the warehouse does, and so does the
    compaction that rewrites the files from them."""
    emulator.faults.repeated_edge = True
    small = {"page_size": 3, "messages_page_size": 10}
    lake_folder = workspace.root / "meta_inbox_lake"
    tables = [table for table in TABLES if table.name in TABLE_NAMES]

    def stored(table: str) -> int:
        return ds.dataset(lake_folder / "inbox" / table, format="parquet").count_rows()

    def assert_each_row_once(counts: dict[str, int]) -> None:
        lake.write_views(lake_folder, "inbox")
        with lake.connect(lake_folder) as connection:
            connection.execute("set schema = 'inbox'")
            for table in tables:
                sql = f"select {', '.join(table.column_names)} from {table.name} order by all"
                rows = connection.execute(sql).fetchall()
                assert len(rows) == counts[table.name], table.name
                if table.name in CHILDREN:  # no times of the run in them
                    assert rows == workspace.query(sql), table.name

    # A lake's first run compacts every table: from the views, each row once.
    assert workspace.export(**LAKE, **small).exit_code == 0
    assert workspace.export(**small).exit_code == 0
    counts = expected_counts(selected(emulator.inbox))
    assert {table.name: stored(table.name) for table in tables} == counts
    assert_each_row_once(counts)

    # Every thread read again, in files the views read beside the compacted ones.
    detailed = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)
    monkeypatch.setattr(lake, "COMPACT_ABOVE", 100.0)
    again = {**small, "recheck_window_days": 3650}
    assert workspace.export(**LAKE, **again).exit_code == 0
    assert workspace.export(**again).exit_code == 0
    counts = expected_counts(selected(emulator.inbox), detailed)
    # Each table whose rows a thread's second reading makes holds keys twice in one load.
    twice = {table.name: _twice_in_a_load(lake_folder, table) for table in tables}
    assert all(twice[name] for name in ("conversations", *CHILDREN)), twice
    assert_each_row_once(counts)


def _twice_in_a_load(lake_folder: Path, table: Table) -> int:
    keys = ", ".join(table.primary_key)
    files = (lake_folder / "inbox" / table.name / "*.parquet").as_posix()
    return duckdb.sql(
        f"select count(*) from (select _dlt_load_id, {keys} from read_parquet('{files}') "
        "group by all having count(*) > 1)"
    ).fetchone()[0]


def test_a_refresh_cut_short_on_the_lake_leaves_no_message_out(
    workspace: Workspace, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lake keeps the rows a refresh replaced, which its views leave out, until it is
    compacted. A refresh stopped after its first checkpoint is finished by the next run: a
    message that run finds only among those, fingerprinted as it is, must be loaded again, not
    taken as stored."""
    page = emulator.inbox.pages[0]
    everything = {"recheck_window_days": 3650}
    for _ in range(2):  # the second fingerprints every message
        assert workspace.export(**LAKE, **everything).exit_code == 0
    load = _Run._load

    def stopped_after_the_first(run: _Run, data: Any, merged_before: int | None = None) -> None:
        load(run, data, merged_before)
        run.session.stop(Interrupted(signal.SIGTERM, "SIGTERM"))

    with monkeypatch.context() as patched:
        patched.setattr(_Run, "_load", stopped_after_the_first)
        # Its views not written (`--no-views`), so not compacted either, as on a bucket.
        cut = workspace.export(
            **LAKE, full_refresh=True, page_ids=[page.id], checkpoint_threads=5, views=False
        )
    assert cut.exit_code == 143, cut.problems

    finished = workspace.export(**LAKE)

    assert finished.exit_code == 0, finished.problems
    assert _page_counts(workspace, page.id) == expected_counts(selected(emulator.inbox, [page.id]))


def _page_counts(workspace: Workspace, page_id: str) -> dict[str, int]:
    """Each table's rows of the Page in the lake's views, written again."""
    lake.write_views(workspace.root / "meta_inbox_lake", "inbox")
    with lake.connect(workspace.root / "meta_inbox_lake") as connection:
        return {
            table: connection.execute(
                f"select count(*) from inbox.{table} where "
                f"{'id' if table == 'pages' else 'page_id'} = ?",
                [page_id],
            ).fetchone()[0]
            for table in TABLE_NAMES
        }


def test_lake_views_refuse_a_folder_that_is_no_lake(workspace: Workspace) -> None:
    done = workspace.cli("lake-views", str(Path(workspace.root) / "nothing"))

    assert done.returncode == 2
    assert "is not a folder" in done.stderr


def test_rows_merged_again_do_not_stay_in_the_files_the_views_read(
    workspace: Workspace, emulator: Emulator
) -> None:
    lake_folder = workspace.root / "meta_inbox_lake"
    # A wide recheck window: every run merges every thread again, as a week of hourly runs
    # would; appended, the files would hold each row five times.
    everything = {"recheck_window_days": 3650}
    for seed in range(5):
        emulator.add_activity(seed=seed + 1)
        assert workspace.export(**LAKE, **everything).exit_code == 0
        assert workspace.export(**everything).exit_code == 0

    with lake.connect(lake_folder) as connection:
        connection.execute("set schema = 'inbox'")
        for table in TABLE_NAMES:
            live = connection.execute(f"select count(*) from {table}").fetchone()[0]
            stored = ds.dataset(lake_folder / "inbox" / table, format="parquet").count_rows()
            assert live == workspace.query(f"select count(*) from {table}")[0][0], table
            assert stored <= lake.COMPACT_ABOVE * live, (table, stored, live)
        # Each run adds a file per table it loads into: they are merged, not kept for ever.
        for table in (*TABLE_NAMES, "_meta_inbox_runs"):
            files = list((lake_folder / "inbox" / table).glob("*.parquet"))
            assert len(files) <= lake.MERGE_ABOVE, (table, len(files))
        runs = connection.execute("select status, mode from _meta_inbox_runs").fetchall()
        assert runs == [("success", "regular")] * 5
        for sql in (
            "select id, conversation_id, message, reaction_count from messages order by id",
            "select message_id, position, reaction, user_id from message_reactions order by all",
            "select id, folder, unread_count, message_count from conversations order by id",
            "select conversation_id, observed_state from conversation_history order by all",
        ):
            assert connection.execute(sql).fetchall() == workspace.query(sql), sql


def test_a_compaction_cut_short_is_finished_or_undone_by_the_next(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export(**LAKE).exit_code == 0
    folder = workspace.root / "meta_inbox_lake" / "inbox"
    (loaded,) = (folder / "conversations").glob("*.parquet")
    (attachments,) = (folder / "message_attachments").glob("*.parquet")
    # Killed once its new file was in place: the files it replaces are still there.
    shutil.copy(loaded, folder / "conversations" / "compacted.1.parquet")
    journal = {"new": "compacted.1.parquet", "replaced": [loaded.name]}
    (folder / "conversations" / "_compaction.json").write_text(json.dumps(journal))
    # Killed while writing its new file.
    (folder / "message_attachments" / "compacted.2.parquet.tmp").write_bytes(b"PAR1")
    journal = {"new": "compacted.2.parquet", "replaced": [attachments.name]}
    (folder / "message_attachments" / "_compaction.json").write_text(json.dumps(journal))

    compacted = lake.compact(workspace.root / "meta_inbox_lake", "inbox")

    # The children's compacted files are older than their parent's new one: compacted again.
    counts = expected_counts(selected(emulator.inbox))
    participants = counts["conversation_participants"]
    assert compacted == {"conversation_participants": (participants, participants)}
    assert sorted(p.name for p in (folder / "conversations").iterdir()) == ["compacted.1.parquet"]
    assert sorted(p.name for p in (folder / "message_attachments").iterdir()) == [attachments.name]
    lake.write_views(workspace.root / "meta_inbox_lake", "inbox")
    with lake.connect(workspace.root / "meta_inbox_lake") as connection:
        for table in ("conversations", "conversation_participants", "message_attachments"):
            stored = connection.execute(f"select count(*) from inbox.{table}").fetchone()[0]
            assert stored == counts[table], table
