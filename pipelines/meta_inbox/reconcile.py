"""`run --reconcile`: after reading every thread again, mark what Graph no longer returns.

What the reconcile listed is kept on disk (a DuckDB file in the pipeline's working folder), not
in memory. Once its data is loaded, the ids the destination holds are read back through dlt's
dataset (SQL destinations and the Parquet lake alike) and compared:
- a stored thread Graph no longer lists in any folder gets `deleted_at`, and so do its messages;
- a stored message missing from a thread that was listed to its end gets `deleted_at`;
- a row marked deleted that Graph lists again gets `deleted_at` back to null;
- a message Graph lists that the destination lacks (an Instagram message without details
  that no regular run could add safely) gets its row.
Rows are never deleted: marking re-merges the stored row with `deleted_at` set. A Page and
platform is compared only when every folder of it was read to the end in this run. Instagram
threads in the Requests folder (`other`) idle for 30 days are hidden by Graph, not deleted.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .destinations import quoted
from .reader import ThreadPart
from .tables import CONVERSATIONS, MESSAGES, ROWS_HASH, TABLES, Table

INSTAGRAM_REQUESTS_HIDDEN_AFTER = timedelta(days=30)
_CHUNK = 5000


class ReconcileLedger:
    """What one reconcile run saw in Graph."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="reconcile-", dir=folder))
        self._db = duckdb.connect(str(self._dir / "seen.duckdb"))
        self._db.execute("set memory_limit = '256MB'")
        self._db.execute(
            "create table threads (id varchar, page_id varchar, platform varchar, complete boolean)"
        )
        self._db.execute(
            "create table messages (id varchar, conversation_id varchar, page_id varchar, "
            "platform varchar, created_time timestamptz)"
        )
        self._threads: list[tuple[Any, ...]] = []
        self._messages: list[tuple[Any, ...]] = []

    def record(self, part: ThreadPart) -> None:
        conversation_id = str(part.conversation["id"])
        self._messages += [
            (message_id, conversation_id, part.page.id, part.platform, created)
            for message_id, created in part.listed
        ]
        if part.final:
            self._threads.append((conversation_id, part.page.id, part.platform, part.complete))
        if len(self._messages) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        for table, rows, names in (
            ("threads", self._threads, ("id", "page_id", "platform", "complete")),
            ("messages", self._messages, ("id", "conversation_id", "page_id", "platform",
                                          "created_time")),
        ):  # fmt: skip
            if rows:
                batch = pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in rows])
                self._db.register("batch", batch)
                self._db.execute(f"insert into {table} select * from batch")
                self._db.unregister("batch")
                rows.clear()

    def corrections(
        self,
        dataset: Any,
        scopes: set[tuple[str, str]],
        now: datetime,
        start: datetime | None,
        unlisted: set[tuple[str, str, str]],
    ) -> Corrections:
        """Compare with what `dataset` (the destination) holds for `scopes` (Page, platform),
        but for the threads stored in `unlisted` folders (Page, platform, folder)."""
        self._flush()
        db = self._db
        db.execute("create table unlisted (page_id varchar, platform varchar, folder varchar)")
        if unlisted:
            db.executemany("insert into unlisted values (?, ?, ?)", sorted(unlisted))
        db.execute(
            "create table stored_threads (id varchar, page_id varchar, platform varchar, "
            "folder varchar, updated_time timestamptz, deleted_at timestamptz, load_id varchar)"
        )
        db.execute(
            "create table stored_messages (id varchar, conversation_id varchar, "
            "deleted_at timestamptz, load_id varchar)"
        )
        for page_id, platform in sorted(scopes):
            where = f"page_id = {quoted(page_id)} and platform = {quoted(platform)}"
            self._read_back(
                dataset,
                "stored_threads",
                "select id, page_id, platform, folder, updated_time, deleted_at, "
                f"_dlt_load_id from conversations where {where}",
            )
            self._read_back(
                dataset,
                "stored_messages",
                f"select id, conversation_id, deleted_at, _dlt_load_id from messages where {where}",
            )
        # The lake keeps every version of a row: the latest one counts.
        hidden_before = now - INSTAGRAM_REQUESTS_HIDDEN_AFTER
        db.execute(
            """
            create table latest_threads as
            select * from stored_threads qualify row_number() over (
                partition by id order by load_id desc) = 1;
            create table latest_messages as
            select * from stored_messages qualify row_number() over (
                partition by id order by load_id desc) = 1;
            create table gone_threads as
            select id from latest_threads t
            where deleted_at is null
              and id not in (select id from threads)
              and not (platform = 'instagram' and folder = 'other' and updated_time < ?)
              and (page_id, platform, folder) not in (select * from unlisted)
              and (cast(? as timestamptz) is null or updated_time >= ?);
            """,
            [hidden_before, start, start],
        )
        gone_threads = _ids(db, "select id from gone_threads")
        gone_messages = _ids(
            db,
            """
            select m.id from latest_messages m
            where m.deleted_at is null and (
                m.conversation_id in (select id from gone_threads)
                or (m.conversation_id in (select id from threads where complete)
                    and m.id not in (select id from messages)))
            """,
        )
        back_threads = _ids(
            db,
            "select id from latest_threads where deleted_at is not null "
            "and id in (select id from threads)",
        )
        back_messages = _ids(
            db,
            "select id from latest_messages where deleted_at is not null "
            "and id in (select id from messages)",
        )
        stubs = db.execute(
            """
            select distinct on (id) id, conversation_id, page_id, platform, created_time
            from messages where id not in (select id from latest_messages)
            """
        ).fetchall()
        return Corrections(gone_threads, gone_messages, back_threads, back_messages, stubs)

    def _read_back(self, dataset: Any, table: str, sql: str) -> None:
        for chunk in dataset.query(sql).iter_arrow(chunk_size=50_000):
            self._db.register("chunk", chunk)
            self._db.execute(f"insert into {table} select * from chunk")
            self._db.unregister("chunk")

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class Corrections:
    """Ids whose `deleted_at` changes, and messages the destination lacks."""

    def __init__(
        self,
        gone_threads: list[str],
        gone_messages: list[str],
        back_threads: list[str],
        back_messages: list[str],
        stubs: list[tuple[Any, ...]],
    ) -> None:
        self.gone_threads = gone_threads
        self.gone_messages = gone_messages
        self.back_threads = back_threads
        self.back_messages = back_messages
        self.stubs = stubs

    @property
    def marked(self) -> int:
        return len(self.gone_threads) + len(self.gone_messages)

    def stored_rows(
        self, dataset: Any, table: str, ids: list[str], deleted_at: datetime | None
    ) -> Iterator[dict[str, Any]]:
        """The latest stored row of each id, with `deleted_at` set (or cleared)."""
        for listed in _id_lists(ids):
            latest: dict[str, dict[str, Any]] = {}
            relation = dataset.query(f"select * from {table} where id in ({listed})")
            for row in relation.arrow().to_pylist():
                known = latest.get(row["id"])
                if known is None or row["_dlt_load_id"] > known["_dlt_load_id"]:
                    latest[row["id"]] = row
            for row in latest.values():
                corrected = _without_dlt_columns(row)
                if ROWS_HASH in corrected:
                    # No longer the fingerprint of what was read: the next reading loads it.
                    corrected[ROWS_HASH] = None
                yield {**corrected, "deleted_at": deleted_at}

    def lake_children(
        self, views: duckdb.DuckDBPyConnection, dataset: str
    ) -> Iterator[tuple[Table, list[dict[str, Any]]]]:
        """The rows a lake's views show now of the children of the threads and messages whose
        `deleted_at` changes, by child table. The views leave out a child row older than its
        parent's newest row, so a parent loaded again without its children would lose them
        there, where a SQL destination's merge leaves them in place: they are loaded again
        with it."""
        parents = {
            CONVERSATIONS.name: [*self.gone_threads, *self.back_threads],
            MESSAGES.name: [*self.gone_messages, *self.back_messages],
        }
        for table in TABLES:
            ids = parents.get(table.parent or "")
            if not ids:
                continue
            rows = [
                _without_dlt_columns(row)
                for listed in _id_lists(ids)
                for row in views.sql(
                    f'select * from "{dataset}"."{table.name}" '
                    f"where {table.merge_key} in ({listed})"
                )
                .to_arrow_table()
                .to_pylist()
            ]
            if rows:
                yield table, rows


def _id_lists(ids: list[str]) -> Iterator[str]:
    """`ids` as SQL lists of literals, 500 at a time: one `in (...)` each."""
    for start in range(0, len(ids), 500):
        yield ", ".join(quoted(i) for i in ids[start : start + 500])


def _without_dlt_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_dlt")}


def _ids(db: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [row[0] for row in db.execute(sql).fetchall()]
