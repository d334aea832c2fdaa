"""Reading the Parquet lake that `--destination filesystem` writes.

Parquet files are only ever appended to: a re-fetched conversation or message adds a newer row.
These views keep, for each key, the row of its latest load, and for child tables only the rows
written in the same load as their parent's latest row, so a child list that shrank leaves no
stale rows behind.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from .tables import TABLES, Table

_DUCKDB_TYPES = {
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "bool": "BOOLEAN",
    "double": "DOUBLE",
    "timestamp": "TIMESTAMPTZ",
    "json": "JSON",
}


def latest_view_sql(table: Table, folder: Path) -> str:
    files = sorted(folder.glob("*.parquet"))
    if not files:
        columns = ", ".join(
            f"NULL::{_DUCKDB_TYPES[c.data_type]} AS {c.name}" for c in table.columns
        )
        return f"CREATE OR REPLACE VIEW {table.name} AS SELECT {columns} WHERE false"
    source = f"read_parquet('{folder.as_posix()}/*.parquet', union_by_name = true)"
    if table.parent is None:
        return (
            f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM {source} "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(table.primary_key)} "
            "ORDER BY _dlt_load_id DESC) = 1"
        )
    return (
        f"CREATE OR REPLACE VIEW {table.name} AS SELECT child.* FROM {source} AS child "
        f"JOIN {table.parent} AS parent ON parent.id = child.{table.merge_key} "
        "AND parent._dlt_load_id = child._dlt_load_id"
    )


def create_latest_views(connection: duckdb.DuckDBPyConnection, dataset_folder: Path) -> None:
    """Create one view per table over `<bucket>/<dataset>` in `connection` (parents first)."""
    for table in TABLES:
        connection.execute(latest_view_sql(table, dataset_folder / table.name))
