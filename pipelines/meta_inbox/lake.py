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
files hold more than `COMPACT_ABOVE` times the rows its view keeps, or take that many times
their bytes compacted (or that has no compacted file yet), into one compacted file of those
rows. Each load also adds a file per table, and each file carries its own schema (about 10 kB
for one run record) and is opened by every query: past `MERGE_ABOVE` files loaded since the
last compaction, `compact` merges them into one, all their rows kept, so that step costs what
was loaded since, not the table's size.

A compacted file holds one row per key, each older than the rows of the table's other files:
a view chooses between rows only for the keys that these other files hold, so a query reads a
million compacted messages without ordering them by key. A child row is stale once its parent
has a row of a later load; a parent compacted has its children compacted after it, so that
the parent's compacted rows need not be looked at. The views name each compacted file: once it
is replaced, they read its rows as any other file's (slower, never wrong) until written again.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from .config import Analysis
from .metrics import SPAN_SQL, metric_statements, relation_names
from .tables import REFRESHES, RUNS, TABLES, Table

log = logging.getLogger("meta_inbox")

VIEWS_DATABASE = "lake.duckdb"
# Rows (and bytes) in a table's files per row of its view (per byte of those rows compacted)
# above which `compact` rewrites the table.
COMPACT_ABOVE = 1.5
# Files loaded since a table's last compaction above which `compact` merges them into one.
MERGE_ABOVE = 4
# DuckDB's memory limit while `compact` runs.
COMPACTION_MEMORY = "256MB"
# In a table's folder while it is compacted: the files the new one replaces (`compact`).
_JOURNAL = "_compaction.json"
# Rows per row group of the files `compact` writes: those of dlt's own files.
_ROW_GROUP = 20_000
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
    """Rewrite each table of `lake/<dataset>` that has no compacted file, or whose files hold
    more than `COMPACT_ABOVE` times its live rows (or their bytes compacted), or whose parent
    was compacted after it, into one compacted file of those rows, and merge the files loaded
    since into one past `MERGE_ABOVE`; per table rewritten or merged, the rows its files held
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
    # Bounded: past the limit DuckDB spills to the temporary folder; without insertion order
    # it writes a table's rows as it reads them instead of holding them in order; a second
    # thread's buffers made the window over a million messages run out of the limit.
    settings = {"memory_limit": COMPACTION_MEMORY, "preserve_insertion_order": False, "threads": 1}
    with (
        tempfile.TemporaryDirectory() as spill,
        duckdb.connect(config={**settings, "temp_directory": spill}) as connection,
    ):
        connection.execute(f"set file_search_path = '{_literal(lake.resolve().as_posix())}'")
        connection.execute(f'create schema "{dataset}"')
        connection.execute(_view(REFRESHES, lake, dataset))
        # Parents first: a parent compacted makes its children's compacted files older than
        # its own, which the children's views cannot tell from stale (`_view`).
        for table in (*TABLES, RUNS):
            started = time.monotonic()
            connection.execute(_view(table, lake, dataset))
            rows = {file: pq.read_metadata(file).num_rows for file in _files(folder, table)}
            if not rows:
                continue
            stored = sum(rows.values())
            base = _base(folder, table.name)
            view = f'"{dataset}"."{table.name}"'
            live = connection.execute(f"select count(*) from {view}").fetchone()[0]
            newer = [file for file in rows if file.name != base]
            # The run records have no older versions: they are only merged.
            if table is not RUNS and (
                base is None
                or _older(base, _base(folder, table.parent))
                or stored > COMPACT_ABOVE * live
                or (newer and _swollen(folder / table.name / base, rows, live))
            ):
                replaced, kind, kept = list(rows), "compacted", live
                source = f"select * from {view}"
            elif len(newer) > MERGE_ABOVE:
                replaced, kind, source, kept = newer, "merged", _read(newer), stored
            else:
                continue
            _replace(folder / table.name, kind, replaced, source, connection)
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


def _swollen(base: Path, rows: dict[Path, int], live: int) -> bool:
    """Whether a table's files take more than `COMPACT_ABOVE` times the bytes its `live` rows
    would take compacted, as many per row as in its compacted file `base`: dlt's files take
    more per row than compacted ones, and each carries its schema."""
    size = sum(file.stat().st_size for file in rows)
    return size * rows[base] > COMPACT_ABOVE * live * base.stat().st_size


def _files(folder: Path, table: Table) -> list[Path]:
    return sorted((folder / table.name).glob("*.parquet"))


def _base(folder: Path, table: str | None) -> str | None:
    """The name of `table`'s compacted file (the newest, should a crash have left two)."""
    if table is None:
        return None
    names = sorted(file.name for file in (folder / table).glob("compacted.*.parquet"))
    return names[-1] if names else None


def _older(base: str, parent_base: str | None) -> bool:
    """Whether a child's compacted file `base` was written before its parent's."""
    return parent_base is not None and base < parent_base


def _read(files: list[Path]) -> str:
    names = ", ".join(f"'{_literal(file.as_posix())}'" for file in files)
    return f"select * from read_parquet([{names}], union_by_name = true)"


def _replace(
    table_folder: Path,
    kind: str,
    replaced: list[Path],
    source: str,
    connection: duckdb.DuckDBPyConnection,
) -> None:
    """Write the rows of `source` into a new file of `table_folder` that takes the place of the
    files `replaced`, journaled (`_finish`). Its name starts with `kind` and sorts after the
    names of the files of that kind written before."""
    name = f"{kind}.{time.time_ns():020d}.{uuid.uuid4().hex[:8]}.parquet"
    written = table_folder / f"{name}.tmp"
    # Row groups of dlt's own size: DuckDB's default holds 122,880 rows of a table in memory.
    # zstd: the rows leave a join in another order than dlt wrote them, which made snappy
    # files of message recipients a quarter larger; zstd ones are smaller than dlt's.
    connection.execute(
        f"copy ({source}) to '{_literal(written.as_posix())}' "
        f"(format parquet, row_group_size {_ROW_GROUP}, compression zstd)"
    )
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
    if table in (RUNS, REFRESHES):
        rows = f"read_parquet('{_literal(files)}/*.parquet', union_by_name = true)"
        return f"create or replace view {name} as {_latest(table, rows)}"
    base = _base(lake / dataset, table.name)
    refreshed = any((lake / dataset / REFRESHES.name).glob("*.parquet"))
    rows = _rows(table.name, dataset, base)
    live = _live(table, rows, dataset) if refreshed else rows
    if table.parent is None:
        return f"create or replace view {name} as {_newest(table, live, base)}"
    parent_base = _base(lake / dataset, table.parent)
    # A child row is stale once its parent has a row of a later load. The rows of the
    # parent's compacted file are no later than the rows of a child's compacted file written
    # after it, nor than those loaded since: then only the parent's other files are looked at.
    skipped = parent_base if base is not None and not _older(base, parent_base) else None
    # An anti join, as in `_newest`: a correlated `not exists` took the distinct keys of
    # every child row first (200 MB for the two million tags of a million messages).
    parents = _rows(table.parent, dataset, skipped)
    # Keys held twice in a load are left out after this join, not before: DuckDB then built
    # the join's table on the children, which its estimate made few, and wrote the compacted
    # files out of their load's order (message_recipients 17 % larger, measured).
    current = (
        f"(select child.* from {live} as child anti join "
        f"(select id, _dlt_load_id from {parents} where not _in_base) "
        f"as parent on parent.id = child.{table.merge_key} "
        "and parent._dlt_load_id > child._dlt_load_id)"
    )
    return (
        f"create or replace view {name} as select * exclude (_in_base) from {_once(table, current)}"
    )


def _rows(table: str, dataset: str, base: str | None) -> str:
    """The rows of `table`'s files, with `_in_base`: whether a row is in its file `base`."""
    files = f"{_literal(dataset)}/{table}/*.parquet"
    if base is None:
        return f"(select *, false as _in_base from read_parquet('{files}', union_by_name = true))"
    return (
        f"(select * exclude (filename), parse_filename(filename) = '{_literal(base)}' as _in_base "
        f"from read_parquet('{files}', union_by_name = true, filename = true))"
    )


def _once(table: Table, rows: str) -> str:
    """`rows` with one row per key and load: a thread read twice in one load (a cursor by
    offset repeats one when a thread above moved up) has its rows twice in it. A key's rows of
    older loads go with its parent's later row (`_view`). Only the rare keys a load holds
    twice are numbered, found by an aggregate, which spills: a window over every row ran out
    of the compaction's memory at a million messages (two million tags). A compacted file
    holds each key once."""
    keys = (*table.primary_key, "_dlt_load_id")
    twice = (
        f"(select {', '.join(keys)} from {rows} where not _in_base group by all "
        "having count(*) > 1)"
    )
    choice = f"qualify row_number() over (partition by {', '.join(keys)}) = 1"
    return f"({_chosen(rows, twice, keys, choice, columns='*')})"


def _chosen(
    rows: str, among: str, keys: Sequence[str], choice: str, *, columns: str, alone: str = ""
) -> str:
    """`columns` of the rows whose keys the subquery `among` does not hold (and that pass
    `alone`), and of the rows whose keys it holds, those `choice` keeps: only the few keys in
    `among` are numbered, not every row."""
    match = " and ".join(f"among.{key} = candidate.{key}" for key in keys)
    return (
        f"select {columns} from {rows} as candidate anti join {among} as among on {match}{alone} "
        "union all "
        f"select {columns} from (select candidate.* from {rows} as candidate "
        f"semi join {among} as among on {match} {choice})"
    )


def _newest(table: Table, rows: str, base: str | None) -> str:
    """Per key, the row of its latest load (of its first, for an `insert_only` table). The
    compacted file `base` holds one row per key, older than the other files' rows: only the
    keys these hold need a choice between rows."""
    keys = ", ".join(table.primary_key)
    order = "asc" if table.insert_only else "desc"
    choice = f"qualify row_number() over (partition by {keys} order by _dlt_load_id {order}) = 1"
    if base is None:
        return f"select * exclude (_in_base) from {rows} {choice}"
    # Subqueries, not CTEs: DuckDB stores a view's CTE without `not materialized`, and then
    # materializes each row of the table. Joins, not `exists`: DuckDB plans a correlated
    # `exists` by first taking the distinct keys of every candidate row, the whole compacted
    # file's (measured: a third of the time a view of a million messages takes to read).
    newer = f"(select {keys} from {rows} where not _in_base)"
    return _chosen(
        rows,
        newer,
        table.primary_key,
        choice,
        columns="* exclude (_in_base)",
        alone=" where candidate._in_base",
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
