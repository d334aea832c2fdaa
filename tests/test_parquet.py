"""`--destination filesystem`: Parquet files, read back with pyarrow and DuckDB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.dataset as ds

from conftest import TABLE_NAMES, Workspace, detailed_messages, expected_counts, selected
from meta_inbox.emulator import Emulator


def test_parquet_lake_matches_duckdb(
    workspace: Workspace, emulator: Emulator, tmp_path: Path
) -> None:
    lake = workspace.root / "meta_inbox_lake" / "meta_inbox"
    assert workspace.run("--destination", "filesystem", "--pipeline-name", "lake").code == 0
    assert workspace.run().code == 0  # the same history into DuckDB, to compare with
    first = expected_counts(selected(emulator.inbox))
    for table in TABLE_NAMES:
        assert ds.dataset(lake / table, format="parquet").count_rows() == first[table], table

    detailed = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)
    second = workspace.run("--destination", "filesystem", "--pipeline-name", "lake")
    assert second.code == 0, second.output
    assert workspace.run().code == 0

    database = tmp_path / "views.duckdb"
    command = [sys.executable, "-m", "meta_inbox.cli", "lake-views", str(lake.parent)]
    views = subprocess.run(
        [*command, "--database", str(database)], capture_output=True, text=True, check=False
    )
    assert views.returncode == 0, views.stderr
    with duckdb.connect(str(database), read_only=True) as connection:
        lake_counts = {
            name: connection.execute(f"select count(*) from {name}").fetchone()[0]
            for name in TABLE_NAMES
        }
        appended = connection.execute(
            "select count(*) from read_parquet(?)", [str(lake / "conversations" / "*.parquet")]
        ).fetchone()[0]
        types = dict(
            connection.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_name = 'messages'"
            ).fetchall()
        )
    assert lake_counts == workspace.counts()
    assert lake_counts == expected_counts(selected(emulator.inbox), detailed)
    # The lake only appends: re-fetched threads are there twice, the views keep the latest.
    assert appended > lake_counts["conversations"]
    assert types["created_time"] == "TIMESTAMP WITH TIME ZONE"
