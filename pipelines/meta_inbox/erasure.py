"""Erasing people from a dataset (`meta-inbox forget`), and keeping them erased.

A person's threads are those any table ties them to (participant, sender, recipient). Forgetting
deletes every row of those threads, in every table of the dataset and of its staging datasets
(which hold the last merge's rows), on DuckDB and PostgreSQL by `delete` statements whose values
are all bound, and on a local Parquet lake by rewriting each file that holds such rows. What is
recorded is the threads' ids, Pages, platforms and the time of the erasure, in
`_meta_inbox_erasures`: never the person's id, name or words.

Graph still holds the threads, so every run reads that record and builds no row of an erased
thread from what was sent up to the erasure (`after_erasure`): a regular run, the recheck window,
`--reconcile` and `--full-refresh` alike. A message sent after it is a new conversation with the
Page and is exported as usual, with the thread's row and its participants.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import destinations
from .errors import BadInput
from .reader import ThreadPart
from .rows import parse_time
from .tables import CONVERSATIONS, ERASURES

# Columns that tie a person to a thread, by table.
_PERSON_COLUMNS = {
    "conversation_participants": "participant_id",
    "messages": "from_id",
    "message_recipients": "recipient_id",
}
# Where a thread's Page and platform are read. A run stopped early loads the first pages of a
# long thread without its `conversations` row, which comes with the thread's last page.
_THREAD_KEYS = {"conversations": "id", "messages": "conversation_id"}
_CHUNK = 500  # values bound in one statement


@dataclass(frozen=True)
class ErasedThread:
    conversation_id: str
    page_id: str
    platform: str


@dataclass
class Forgotten:
    """What `forget` removed (or, on a dry run, would remove)."""

    threads: list[ErasedThread]
    rows: dict[str, int]  # table (`schema.table` for staging tables) -> rows
    erased_at: datetime
    dry_run: bool


def forget(pipeline: dlt.Pipeline, user_ids: list[str], *, dry_run: bool) -> Forgotten:
    """Remove the threads of `user_ids` (Graph ids, digits only: checked by the caller) from the
    pipeline's dataset and record the erasure; on a dry run, only count."""
    store = _store(pipeline)
    now = datetime.now(UTC)
    threads = store.threads_of(user_ids)
    ids = [thread.conversation_id for thread in threads]
    if dry_run:
        return Forgotten(threads, _nonzero(store.count(ids)), now, dry_run)
    # Recorded first: a forget cut short (a lake's files are rewritten one by one; SQL deletes
    # in one transaction) still keeps every later run from loading those threads again.
    if threads:
        store.record(threads, now)
    return Forgotten(threads, _nonzero(store.delete(ids)), now, dry_run)


def _nonzero(rows: dict[str, int]) -> dict[str, int]:
    return {table: count for table, count in rows.items() if count}


def erased_threads(pipeline: dlt.Pipeline) -> dict[str, datetime]:
    """Each erased thread of the dataset with the time of its latest erasure."""
    try:
        store = _store(pipeline)
    except BadInput:
        return {}
    return store.erasures()


def after_erasure(part: ThreadPart, erased_at: datetime) -> ThreadPart | None:
    """What of a thread part may be loaded once its thread was erased at `erased_at`: the
    messages sent after it, and the thread itself only when it moved since. None: nothing."""

    def later(created: datetime | None) -> bool:
        return created is not None and created > erased_at

    sent = zip(part.messages, part.created, strict=True)
    kept = [(message, created) for message, created in sent if later(created)]
    listed = [(i, created) for i, created in part.listed if later(created)]
    final = part.final and later(parse_time(part.conversation.get("updated_time")))
    if not (kept or listed or final):
        return None
    messages, times = [m for m, _ in kept], [created for _, created in kept]
    return replace(part, messages=messages, listed=listed, final=final, times=times)


def _store(pipeline: dlt.Pipeline) -> _SqlStore | _LakeStore:
    if destinations.speaks_sql(pipeline):
        return _SqlStore(pipeline)
    lake = destinations.local_lake(pipeline)
    if lake is None:
        raise BadInput(
            "meta-inbox forget works on DuckDB, PostgreSQL and a Parquet lake on this machine."
        )
    return _LakeStore(lake / pipeline.dataset_name)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _threads(rows: Iterable[tuple[Any, ...]]) -> list[ErasedThread]:
    found = {str(row[0]): ErasedThread(str(row[0]), str(row[1]), str(row[2])) for row in rows}
    return [found[key] for key in sorted(found)]


class _SqlStore:
    """DuckDB and PostgreSQL, through dlt's SQL client: `%s` placeholders, values bound."""

    def __init__(self, pipeline: dlt.Pipeline) -> None:
        self.pipeline = pipeline
        self.dataset = pipeline.dataset_name

    @contextmanager
    def _client(self) -> Iterator[Any]:
        with self.pipeline.sql_client() as client:
            yield client

    def _tables(self, client: Any) -> list[tuple[str, str, set[str]]]:
        """(schema, table, columns) of the dataset and its staging datasets."""
        rows = client.execute_sql(
            "select c.table_schema, c.table_name, c.column_name "
            "from information_schema.columns as c join information_schema.tables as t "
            "on t.table_schema = c.table_schema and t.table_name = c.table_name "
            "where t.table_type = 'BASE TABLE' and (c.table_schema = %s or c.table_schema like %s)",
            self.dataset,
            f"{self.dataset}_staging%",
        )
        tables: dict[tuple[str, str], set[str]] = {}
        for schema, table, column in rows or []:
            tables.setdefault((schema, table), set()).add(column)
        return [(schema, table, columns) for (schema, table), columns in sorted(tables.items())]

    @staticmethod
    def _name(schema: str, table: str) -> str:
        return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))

    def threads_of(self, user_ids: list[str]) -> list[ErasedThread]:
        with self._client() as client:
            present = {t for s, t, _ in self._tables(client) if s == self.dataset}
            ids: set[str] = set()
            for table, column in _PERSON_COLUMNS.items():
                if table not in present:
                    continue
                for chunk in _chunks(user_ids):
                    ids.update(
                        str(row[0])
                        for row in self._select(client, "conversation_id", table, column, chunk)
                    )
            found = [
                row
                for table, key in _THREAD_KEYS.items()
                if table in present
                for chunk in _chunks(sorted(ids))
                for row in self._select(client, f"{key}, page_id, platform", table, key, chunk)
            ]
        return _threads(found)

    def _select(
        self, client: Any, what: str, table: str, column: str, values: list[str]
    ) -> list[tuple[Any, ...]]:
        marks = ", ".join(["%s"] * len(values))
        name = self._name(self.dataset, table)
        sql = f"select distinct {what} from {name} where {column} in ({marks})"
        return list(client.execute_sql(sql, *values) or [])

    def _each(self, client: Any, ids: list[str]) -> Iterator[tuple[str, str, str]]:
        """(qualified name, key column, shown name) of every table holding thread rows."""
        for schema, table, columns in self._tables(client):
            key = "id" if table == CONVERSATIONS.name else "conversation_id"
            if key not in columns or table == ERASURES.name or not ids:
                continue
            shown = table if schema == self.dataset else f"{schema}.{table}"
            yield self._name(schema, table), key, shown

    def count(self, ids: list[str]) -> dict[str, int]:
        counted: dict[str, int] = {}
        with self._client() as client:
            for name, key, shown in self._each(client, ids):
                for chunk in _chunks(ids):
                    marks = ", ".join(["%s"] * len(chunk))
                    rows = client.execute_sql(
                        f"select count(*) from {name} where {key} in ({marks})", *chunk
                    )
                    counted[shown] = counted.get(shown, 0) + int(rows[0][0])
        return counted

    def delete(self, ids: list[str]) -> dict[str, int]:
        counted = self.count(ids)
        with self._client() as client, client.begin_transaction():
            for name, key, _ in self._each(client, ids):
                for chunk in _chunks(ids):
                    marks = ", ".join(["%s"] * len(chunk))
                    client.execute_sql(f"delete from {name} where {key} in ({marks})", *chunk)
        return counted

    def record(self, threads: list[ErasedThread], erased_at: datetime) -> None:
        name = self._name(self.dataset, ERASURES.name)
        columns = ", ".join(f"{c.name} {_SQL_TYPES[c.data_type]}" for c in ERASURES.columns)
        with self._client() as client:
            client.execute_sql(f"create table if not exists {name} ({columns})")
            for thread in threads:
                client.execute_sql(
                    f"insert into {name} (conversation_id, page_id, platform, erased_at) "
                    "values (%s, %s, %s, %s)",
                    thread.conversation_id,
                    thread.page_id,
                    thread.platform,
                    erased_at,
                )

    def erasures(self) -> dict[str, datetime]:
        with self._client() as client:
            if not any(t == ERASURES.name for s, t, _ in self._tables(client) if s == self.dataset):
                return {}
            rows = client.execute_sql(
                f"select conversation_id, max(erased_at) from "
                f"{self._name(self.dataset, ERASURES.name)} group by conversation_id"
            )
        return {str(thread): _utc(when) for thread, when in rows or []}


_SQL_TYPES = {"text": "varchar", "timestamp": "timestamp with time zone", "bigint": "bigint"}


class _LakeStore:
    """A local Parquet lake: files only ever appended to by dlt, rewritten here without the
    erased threads' rows (each file replaced whole, so no copy of the bytes is left in it)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _files(self, table: str) -> list[Path]:
        return sorted((self.folder / table).glob("*.parquet"))

    def _tables(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p.name for p in self.folder.iterdir() if p.is_dir() and p.name != ERASURES.name
        )

    def threads_of(self, user_ids: list[str]) -> list[ErasedThread]:
        ids: set[str] = set()
        for table, column in _PERSON_COLUMNS.items():
            for data in self._read(table, ["conversation_id", column]):
                hits = data.filter(pc.is_in(data[column], value_set=pa.array(user_ids)))
                ids.update(hits["conversation_id"].to_pylist())
        found: list[tuple[Any, ...]] = []
        for table, key in _THREAD_KEYS.items():
            for data in self._read(table, [key, "page_id", "platform"]):
                hits = data.filter(
                    pc.is_in(data[key], value_set=pa.array(sorted(ids), pa.string()))
                )
                found += zip(
                    *(hits[c].to_pylist() for c in (key, "page_id", "platform")), strict=True
                )
        return _threads(found)

    def _read(self, table: str, columns: list[str]) -> Iterator[pa.Table]:
        for path in self._files(table):
            yield pq.read_table(path, columns=columns)

    def _matches(self, data: pa.Table, table: str, ids: pa.Array) -> pa.Array | None:
        key = "id" if table == CONVERSATIONS.name else "conversation_id"
        if key not in data.column_names:
            return None
        return pc.fill_null(pc.is_in(data[key], value_set=ids), False)

    def count(self, ids: list[str]) -> dict[str, int]:
        return self._walk(ids, rewrite=False)

    def delete(self, ids: list[str]) -> dict[str, int]:
        return self._walk(ids, rewrite=True)

    def _walk(self, ids: list[str], *, rewrite: bool) -> dict[str, int]:
        counted: dict[str, int] = {}
        if not ids:
            return counted
        wanted = pa.array(ids, pa.string())
        for table in self._tables():
            for path in self._files(table):
                data = pq.read_table(path)
                matches = self._matches(data, table, wanted)
                if matches is None:
                    continue
                hits = pc.sum(matches).as_py() or 0
                counted[table] = counted.get(table, 0) + hits
                if rewrite and hits:
                    kept = data.filter(pc.invert(matches))
                    fresh = path.with_name(f".{path.name}.erasing")
                    pq.write_table(kept, fresh)
                    os.replace(fresh, path)
        return counted

    def record(self, threads: list[ErasedThread], erased_at: datetime) -> None:
        folder = self.folder / ERASURES.name
        folder.mkdir(parents=True, exist_ok=True)
        rows = [
            {"conversation_id": t.conversation_id, "page_id": t.page_id, "platform": t.platform,
             "erased_at": erased_at}
            for t in threads
        ]  # fmt: skip
        data = pa.Table.from_pylist(rows, schema=ERASURES.arrow_schema())
        pq.write_table(data, folder / f"{erased_at.strftime('%Y%m%dT%H%M%S%f')}.parquet")

    def erasures(self) -> dict[str, datetime]:
        latest: dict[str, datetime] = {}
        for path in self._files(ERASURES.name):
            data = pq.read_table(path).to_pylist()
            for row in data:
                when = _utc(row["erased_at"])
                thread = str(row["conversation_id"])
                latest[thread] = max(latest.get(thread, when), when)
        return latest


def _utc(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else parse_time(value)
    assert parsed is not None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
