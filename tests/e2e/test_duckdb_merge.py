"""Merges into DuckDB straight from each load's Parquet files (`duckdb_merge`): a child's rows
replace its parent's rows of earlier loads, however dlt splits one load over files; a key held
twice keeps its last row; a job replayed after a kill leaves one row per key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest

from conftest import NO_DUPLICATES, Workspace, left_packages
from meta_inbox.emulator import Emulator
from meta_inbox.pipeline import make_pipeline
from meta_inbox.source import rows_resource
from meta_inbox.tables import MESSAGE_TAGS, PAGES
from model import expected_counts, selected

AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dlt.Pipeline:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    return make_pipeline("duckdb", pipeline_name="merges")


def _tag(message: str, tag: str, conversation: str = "t1") -> dict[str, Any]:
    return {"message_id": message, "tag": tag, "conversation_id": conversation, "page_id": "p1"}


def _page(name: str) -> dict[str, Any]:
    return {
        "id": "p1",
        "name": name,
        "instagram_id": None,
        "instagram_username": None,
        "platforms": '["messenger"]',
        "login": "facebook_page",
        "exported_at": AT,
    }


def _load(pipeline: dlt.Pipeline, *resources: Any) -> list[str]:
    """Load `resources`; the files of each table in the load's package."""
    info = pipeline.run(list(resources), loader_file_format="parquet")
    jobs = info.load_packages[0].jobs["completed_jobs"]
    return sorted(
        job.job_file_info.table_name for job in jobs if job.file_path.endswith(".parquet")
    )


def _rows(pipeline: dlt.Pipeline, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(f"{pipeline.pipeline_name}.duckdb", read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_a_childs_rows_split_over_files_replace_their_parents_older_rows(
    pipeline: dlt.Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = [_tag("m1", "inbox"), _tag("m1", "read"), _tag("m2", "inbox")]
    assert _load(pipeline, rows_resource(MESSAGE_TAGS, first, "keep")) == ["message_tags"]
    (first_load,) = _rows(pipeline, "select distinct _dlt_load_id from inbox.message_tags")

    # Two rows a file: m1's three tags of this load land in two files.
    monkeypatch.setenv("DATA_WRITER__FILE_MAX_ITEMS", "2")
    files = _load(
        pipeline,
        rows_resource(MESSAGE_TAGS, [_tag("m1", "sent"), _tag("m1", "source:web")], "keep"),
        rows_resource(MESSAGE_TAGS, [_tag("m1", "inbox", "t9")], "keep").with_name("more"),
    )

    assert files == ["message_tags", "message_tags"]
    stored = _rows(
        pipeline,
        "select message_id, tag, conversation_id, _dlt_load_id = "
        f"'{first_load[0]}' from inbox.message_tags order by all",
    )
    assert stored == [
        ("m1", "inbox", "t9", False),
        ("m1", "sent", "t1", False),
        ("m1", "source:web", "t1", False),
        ("m2", "inbox", "t1", True),
    ]


def test_a_key_held_twice_in_a_load_keeps_its_last_row(pipeline: dlt.Pipeline) -> None:
    _load(pipeline, rows_resource(PAGES, [_page("Old name")], "keep"))
    twice = [_tag("m1", "inbox", "t1"), _tag("m1", "inbox", "t2"), _tag("m1", "read")]

    _load(
        pipeline,
        rows_resource(PAGES, [_page("First"), _page("Last")], "keep"),
        rows_resource(MESSAGE_TAGS, twice, "keep"),
    )

    assert _rows(pipeline, "select id, name from inbox.pages") == [("p1", "Last")]
    assert _rows(
        pipeline, "select message_id, tag, conversation_id from inbox.message_tags order by all"
    ) == [("m1", "inbox", "t2"), ("m1", "read", "t1")]


def test_the_merged_tables_need_no_staging_tables(pipeline: dlt.Pipeline) -> None:
    _load(pipeline, rows_resource(MESSAGE_TAGS, [_tag("m1", "inbox")], "keep"))
    _load(pipeline, rows_resource(MESSAGE_TAGS, [_tag("m1", "read")], "keep"))

    staged = _rows(
        pipeline,
        "select table_name from information_schema.tables where table_schema = 'inbox_staging'",
    )
    assert ("message_tags",) not in staged
    assert _rows(pipeline, "select message_id, tag from inbox.message_tags") == [("m1", "read")]


# The first merge of `message_tags` is committed, then the process dies before dlt records its
# job as done: the next run loads that package again before it reads anything new.
KILLED_AFTER_A_MERGE = """
import os
from meta_inbox import duckdb_merge
merged = duckdb_merge._MergeFile.run
def run(job):
    merged(job)
    if job.load_table_name == "message_tags":
        os._exit(137)
duckdb_merge._MergeFile.run = run
"""


def test_a_merge_replayed_after_a_kill_leaves_one_row_per_key(
    workspace: Workspace, emulator: Emulator
) -> None:
    killed = workspace.program(KILLED_AFTER_A_MERGE, "run")
    assert killed.returncode == 137, killed.stderr
    assert workspace.query("select count(*) from message_tags")[0][0] > 0
    assert any(name.startswith("normalized/") for name in left_packages(workspace.data_dir))
    calls = emulator.calls

    result = workspace.run()

    assert result.code == 0, result.output
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    assert left_packages(workspace.data_dir) == []
    # The replay brought the killed run's state with its rows: the next run finds nothing new
    # and reads only the recheck window, in fewer calls than the backfill made.
    assert workspace.runs()[-1]["new_messages"] == 0
    assert 0 < len(emulator.calls) - len(calls) < len(calls)
