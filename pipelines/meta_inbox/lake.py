"""Reading the Parquet lake that `--destination filesystem` writes, as the warehouse reads.

Parquet files are only ever appended to: a thread or message read again adds a newer row. The
views in the dataset's schema (`inbox` by default, as in a warehouse) keep, for each key, the
row of its latest load, and for child tables only the rows written in the same load as their
parent's latest row, so a child list that shrank leaves no stale rows; `conversation_history`
keeps each state's first observation. Rows of a Page loaded before its latest `--full-refresh`
are left out. The metric views are the warehouse's SQL over these views, and the tables they
read from the settings (`business_clock`, `sla_targets`) are written into the views database.

Paths in the views are relative to the lake folder, so the folder can be moved with its views
database: open it with `meta_inbox.lake.connect(folder)` (which tells DuckDB where relative
paths start), or from inside the folder.

Rows read again (the recheck window, reconciles) would make a table's files many times its
live rows, and every query of the views pays for all of them: `compact` rewrites a table whose
files hold more than `COMPACT_ABOVE` times the rows its view keeps into one file of those rows,
which the views read as they read the files it replaces. Each load also adds a file per table,
and each file carries its own schema (about 10 kB for one run record) and is opened by every
query: past `MERGE_ABOVE` files, `compact` merges a table's files but its largest into one, all
their rows kept, so that step costs what was loaded since, not the table's size.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from .config import Analysis
from .metrics import SPAN_SQL, metric_statements, relation_names
from .tables import REFRESHES, RUNS, TABLES, Table

log = logging.getLogger("meta_inbox")

VIEWS_DATABASE = "lake.duckdb"
# Rows in a table's files per row of its view above which `compact` rewrites the table.
COMPACT_ABOVE = 1.5
# Files in a table's folder above which `compact` merges all of them but the largest.
MERGE_ABOVE = 4
# In a table's folder while it is compacted: the files the new one replaces (`compact`).
_JOURNAL = "_compaction.json"
_DUCKDB_TYPES = {
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
    "timestamp": "TIMESTAMPTZ",
    "json": "JSON",
}


def write_views(
    lake: Path, dataset: str, database: Path | None = None, analysis: Analysis | None = None
) -> Path:
    """Write the views over `lake/<dataset>` into `database` (default: `lake/lake.duckdb`),
    with the tables the metric views read from the settings (`analysis`, default: from the
    configuration)."""
    folder = lake / dataset
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    database = database or lake / VIEWS_DATABASE
    with duckdb.connect(str(database)) as connection:
        connection.execute(f"set file_search_path = '{_literal(lake.resolve().as_posix())}'")
        connection.execute(f'create schema if not exists "{dataset}"')
        for table in (*TABLES, RUNS, REFRESHES):
            connection.execute(_view(table, lake, dataset))
        names = relation_names(lambda name: f'"{dataset}"."{name}"')
        span = connection.execute(SPAN_SQL.format(**names)).fetchone() or ()
        analysis = analysis or Analysis.from_config()
        for statement in metric_statements(names, analysis, *span, create="create or replace view"):
            connection.execute(statement)
    return database


def compact(lake: Path, dataset: str) -> dict[str, tuple[int, int]]:
    """Rewrite each table of `lake/<dataset>` whose files hold more than `COMPACT_ABOVE` times
    its live rows into one file of those rows, and merge the files but the largest of a table
    that has more than `MERGE_ABOVE`; per table rewritten or merged, the rows its files held
    before and after.

    A crash leaves at worst the new file beside the old ones until the next compaction deletes
    them: the journal names them before the new file takes its place. Files written while a
    table is compacted (another pipeline's load) are kept."""
    folder = lake / dataset
    compacted: dict[str, tuple[int, int]] = {}
    if not folder.is_dir():
        return compacted
    for table in (*TABLES, RUNS):
        _finish(folder / table.name)
    with duckdb.connect() as connection:
        connection.execute(f"set file_search_path = '{_literal(lake.resolve().as_posix())}'")
        connection.execute(f'create schema "{dataset}"')
        for table in (*TABLES, RUNS, REFRESHES):
            connection.execute(_view(table, lake, dataset))
        # Parents before children: a child's view keeps the rows of its parent's latest load.
        for table in (*TABLES, RUNS):
            started = time.monotonic()
            rows = {file: pq.read_metadata(file).num_rows for file in _files(folder, table)}
            stored = sum(rows.values())
            view = f'"{dataset}"."{table.name}"'
            if len(rows) < 2:
                continue
            live = connection.execute(f"select count(*) from {view}").fetchone()[0]
            if stored > COMPACT_ABOVE * live:
                replaced, kept = list(rows), live
                source = f"select * from {view}"
            elif len(rows) > MERGE_ABOVE:
                replaced = sorted(rows, key=rows.__getitem__)[:-1]
                kept = stored
                source = f"select * from {_read(replaced)}"
            else:
                continue
            _replace(folder / table.name, replaced, source, connection)
            compacted[table.name] = (stored, kept)
            log.info(
                "lake: %s rewritten from %d rows in %d files to %d rows in %d in %.2f s",
                table.name,
                stored,
                len(rows),
                kept,
                len(rows) - len(replaced) + 1,
                time.monotonic() - started,
            )
    return compacted


def _files(folder: Path, table: Table) -> list[Path]:
    return sorted((folder / table.name).glob("*.parquet"))


def _read(files: list[Path]) -> str:
    names = ", ".join(f"'{_literal(file.as_posix())}'" for file in files)
    return f"read_parquet([{names}], union_by_name = true)"


def _replace(
    table_folder: Path, replaced: list[Path], source: str, connection: duckdb.DuckDBPyConnection
) -> None:
    """Write the rows of `source` into a new file of `table_folder` that takes the place of the
    files `replaced`, journaled (`_finish`)."""
    name = f"compacted.{uuid.uuid4().hex}.parquet"
    written = table_folder / f"{name}.tmp"
    connection.execute(f"copy ({source}) to '{_literal(written.as_posix())}' (format parquet)")
    journal = {"new": name, "replaced": [file.name for file in replaced]}
    (table_folder / _JOURNAL).write_text(json.dumps(journal), encoding="utf-8")
    written.rename(written.with_suffix(""))
    _finish(table_folder)


def _finish(table_folder: Path) -> None:
    """Complete a compaction the journal in `table_folder` tells of: when its new file is in
    place, delete the files it replaces; when it is not, the compaction did not happen."""
    journal = table_folder / _JOURNAL
    if not journal.is_file():
        return
    done = json.loads(journal.read_text(encoding="utf-8"))
    if (table_folder / done["new"]).is_file():
        for name in done["replaced"]:
            (table_folder / name).unlink(missing_ok=True)
    else:
        (table_folder / f"{done['new']}.tmp").unlink(missing_ok=True)
    journal.unlink()


def connect(lake: str | Path, database: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the lake's views, from any working folder."""
    lake = Path(lake)
    connection = duckdb.connect(str(database or lake / VIEWS_DATABASE), read_only=True)
    connection.execute(f"set file_search_path = '{_literal(lake.resolve().as_posix())}'")
    return connection


def _view(table: Table, lake: Path, dataset: str) -> str:
    name = f'"{dataset}"."{table.name}"'
    files = f"{dataset}/{table.name}"
    if not any((lake / files).glob("*.parquet")):
        columns = ", ".join(
            f"NULL::{_DUCKDB_TYPES[c.data_type]} AS {c.name}" for c in table.columns
        )
        columns += ", NULL::VARCHAR AS _dlt_load_id"
        return f"create or replace view {name} as select {columns} where false"
    rows = f"read_parquet('{_literal(files)}/*.parquet', union_by_name = true)"
    if table in (RUNS, REFRESHES):
        return f"create or replace view {name} as {_latest(table, rows)}"
    refreshed = any((lake / dataset / REFRESHES.name).glob("*.parquet"))
    live = _live(table, rows, dataset) if refreshed else rows
    if table.insert_only:
        order = "_dlt_load_id asc"
        keys = ", ".join(table.primary_key)
        return (
            f"create or replace view {name} as select * from {live} "
            f"qualify row_number() over (partition by {keys} order by {order}) = 1"
        )
    if table.parent is None:
        return f"create or replace view {name} as {_latest(table, live)}"
    return (
        f"create or replace view {name} as select child.* from {live} as child "
        f'join "{dataset}"."{table.parent}" as parent on parent.id = child.{table.merge_key} '
        "and parent._dlt_load_id = child._dlt_load_id"
    )


def _latest(table: Table, rows: str) -> str:
    if not table.primary_key:
        return f"select * from {rows}"
    keys = ", ".join(table.primary_key)
    return (
        f"select * from {rows} "
        f"qualify row_number() over (partition by {keys} order by _dlt_load_id desc) = 1"
    )


def _live(table: Table, rows: str, dataset: str) -> str:
    """The table's rows, without those of a Page loaded before its latest refresh."""
    refreshes = (
        f"read_parquet('{_literal(dataset)}/{REFRESHES.name}/*.parquet', union_by_name = true)"
    )
    return (
        f"(select rows.* from {rows} as rows left join (select page_id, max(_dlt_load_id) as "
        f"since from {refreshes} group by page_id) as refreshed on refreshed.page_id = "
        f"rows.{table.page_column} where refreshed.since is null or "
        "rows._dlt_load_id >= refreshed.since)"
    )


def _literal(text: str) -> str:
    return text.replace("'", "''")
