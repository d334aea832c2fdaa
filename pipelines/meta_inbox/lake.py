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
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from .config import Analysis
from .metrics import SPAN_SQL, metric_statements, relation_names
from .tables import REFRESHES, RUNS, TABLES, Table

VIEWS_DATABASE = "lake.duckdb"
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
