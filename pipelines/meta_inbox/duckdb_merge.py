"""How a load's rows reach the merged tables of a DuckDB destination: straight from each Parquet
file, without dlt's staging tables.

dlt merges through staging: a load copies its files into `<dataset>_staging`, then deletes the
rows they replace and inserts from staging, numbering every row by key to drop duplicates. In
DuckDB the copy holds a slice's rows a second time, in tables written to the file's log (at
227k messages its 96 MB bound spilled 149 MB to disk), and the numbering sorts every row.
Measured on one slice of 114k messages and their children, loaded into a file holding 227k:
3.0 s of CPU through staging, 2.0 s straight from the files.

Each file of a table merged on its key (`tables.Table`) is one transaction: delete what the
file's rows replace, insert them. A parent's rows replace the rows with their key. A child's
replace every row of their parents from other loads, and their own keys' rows of this load:
dlt may split a table's rows of one load over several files, and a job replayed after a crash
finds its own rows in place. A file holding a key twice (Graph listing a message on two pages
of a thread) keeps the key's last row. Tables kept otherwise (insert-only, appended) and other
file formats load as dlt loads them.
"""

from __future__ import annotations

import functools
from typing import Any

from dlt.common.destination.client import LoadJob, PreparedTableSchema, RunnableLoadJob
from dlt.common.storages.load_storage import ParsedLoadJobFileName

from .tables import RUNS, TABLES, Table

_MERGED = {
    table.name: table for table in (*TABLES, RUNS) if table.primary_key and not table.insert_only
}


def _merged(table: PreparedTableSchema) -> Table | None:
    """Our table, when dlt is to merge it by deleting and inserting."""
    ours = _MERGED.get(table["name"])
    if ours is None or table.get("write_disposition") != "merge":
        return None
    if table.get("x-merge-strategy", "delete-insert") != "delete-insert":
        return None
    return ours


@functools.cache
def direct_client() -> type[Any]:
    """dlt's DuckDB client, merging straight from the load's files."""
    # Imported here, as dlt's factory does: the client brings the duckdb module.
    from dlt.destinations.impl.duckdb.duck import DuckDbClient

    class DirectDuckDbClient(DuckDbClient):
        def should_load_data_to_staging_dataset(self, table_name: str) -> bool:
            if _merged(self.prepare_load_table(table_name)):
                return False
            return bool(super().should_load_data_to_staging_dataset(table_name))

        def _create_merge_followup_jobs(self, table_chain: Any) -> list[Any]:
            if _merged(table_chain[0]):
                return []
            return list(super()._create_merge_followup_jobs(table_chain))

        def create_load_job(
            self, table: PreparedTableSchema, file_path: str, load_id: str, restore: bool = False
        ) -> LoadJob:
            ours = _merged(table)
            if ours and ParsedLoadJobFileName.parse(file_path).file_format == "parquet":
                return _MergeFile(file_path, ours, load_id)
            return super().create_load_job(table, file_path, load_id, restore)

    return DirectDuckDbClient


class _MergeFile(RunnableLoadJob):
    """One Parquet file merged into its table, in one transaction."""

    def __init__(self, file_path: str, table: Table, load_id: str) -> None:
        super().__init__(file_path)
        self._table = table
        self._load = load_id

    def run(self) -> None:
        client = self._job_client.sql_client
        target = client.make_qualified_table_name(self.load_table_name)
        path = self._file_path.replace("'", "''")

        def scan(*options: str) -> str:
            return f"read_parquet('{path}', {', '.join(('union_by_name=true', *options))})"

        rows = scan()
        columns = [client.escape_column_name(name) for name in self._table.primary_key]
        key = ", ".join(columns)
        same_key = " and ".join(f"d.{name} = s.{name}" for name in columns)
        load = f"{client.escape_column_name('_dlt_load_id')} = '{self._load}'"
        statements = []
        if parent := self._table.merge_key:
            parent = client.escape_column_name(parent)
            statements.append(
                f"delete from {target} where {parent} in (select {parent} from {rows}) "
                f"and not {load}"
            )
            this_load = f"d.{load} and "
        else:
            this_load = ""
        statements.append(
            f"delete from {target} as d where {this_load}"
            f"exists (select 1 from {rows} as s where {same_key})"
        )
        (twice,) = client.execute_sql(f"select count(*) > count(distinct ({key})) from {rows}")[0]
        if twice:
            numbered = scan("file_row_number=true")
            statements.append(
                f"insert into {target} by name select * exclude (_last, file_row_number) from "
                f"(select *, row_number() over (partition by {key} "
                f"order by file_row_number desc) as _last from {numbered}) where _last = 1"
            )
        else:
            statements.append(f"insert into {target} by name select * from {rows}")
        with client.begin_transaction():
            for statement in statements:
                client.execute_sql(statement)
