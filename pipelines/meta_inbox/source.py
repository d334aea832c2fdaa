"""The `meta_inbox` dlt source: one resource shapes what the reader read into Arrow tables and
hands each to dlt marked with its table, whose hints are that resource's variant for it. No HTTP
here.

`ExportSession` is one run's reading. `meta_inbox.export()` extracts it in slices, each a dlt
load of its own (a checkpoint); `dlt.pipeline(...).run(meta_inbox())` reads everything in one.
Incremental state lives in the source's dlt state: folder states (see `reader.py`) and, per
Page and platform, the newest message time loaded (`loaded_max`). The resource writes them
after yielding the data they cover, and dlt commits them with that data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Protocol

import dlt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.extract.items import DataItemWithMeta
from dlt.extract.resource import DltResource

from . import rows
from .config import FOLDERS, Settings, meta_inbox_version
from .conversations_api import ConversationsApi, FacebookPage
from .erasure import after_erasure
from .graph_client import REDACTOR, CallStats, GraphConnection
from .reader import FolderProgress, InboxReader, Mode, PageRead, ReadPlan, ReadReport, ThreadPart
from .rows import Privacy, ThreadContext
from .tables import (
    CONVERSATION_HISTORY,
    CONVERSATION_PARTICIPANTS,
    CONVERSATIONS,
    PAGES,
    REFRESHES,
    RUNS,
    TABLES,
    Table,
)

log = logging.getLogger("meta_inbox")


class _JsonAsText(logging.Filter):
    """dlt warns when an Arrow string column has a `json` hint, then loads it as JSON all the
    same: JSON travels as text in Arrow, as in dlt's own conversions. In the resources named
    here that is the only hint that differs (a test in `tests/fast/test_rows.py` checks it);
    others still warn."""

    def __init__(self, resources: set[str]) -> None:
        super().__init__()
        self.warnings = {
            f"In resource: {name}, when merging arrow schema with dlt schema" for name in resources
        }

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(tuple(self.warnings))


PROGRESS_EVERY = 30.0  # seconds between progress lines
# Messages and threads per batch shaped into Arrow: few enough to hold little memory as rows.
BATCH_ROWS = 2_000
# Rows of a table per item handed to dlt. dlt computes and validates a table's schema from its
# hints for every Arrow item (some 10 ms): items of one batch each cost 50 µs per message,
# measured. A table's Arrow rows are held until they fill an item, or the slice ends.
ITEM_ROWS = 20_000
INBOX = "inbox"  # the resource that reads the inbox; it loads every table of `_LOADED`


@dataclass
class Batch:
    """What the reader hands to the shaping: threads read, Pages, the run record."""

    observed_at: datetime  # when the run started: the time of what it observed
    parts: list[ThreadPart] = field(default_factory=list)
    pages: list[PageRead] = field(default_factory=list)  # with the run's last load
    refreshed: list[str] = field(default_factory=list)  # Pages whose older rows a refresh drops
    record: dict[str, Any] | None = None  # the run record, with the run's last load
    # Of its messages, those the destination holds, with their `rows_hash` as stored.
    stored: dict[str, int | None] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(part.messages) + 1 for part in self.parts) + len(self.pages)

    def __bool__(self) -> bool:
        return bool(self.parts or self.pages or self.refreshed or self.record)


@dataclass
class RunCounts:
    """What a run did, for the summary and the run record."""

    threads: int = 0  # threads read
    messages: int = 0  # messages read
    new_messages: int = 0  # of those, not in the destination before the run
    unchanged_messages: int = 0  # read again and found as stored: not loaded again
    threads_with_new_messages: int = 0
    rechecked_threads: int = 0  # threads read that brought no new message
    messages_without_details: int = 0
    repaired_values: int = 0
    checkpoints: int = 0
    marked_deleted: int = 0
    rows: Counter[str] = field(default_factory=Counter)

    @property
    def messages_merged_again(self) -> int:
        """Messages loaded that the destination held already (reactions, edits, read state)."""
        return self.messages - self.new_messages - self.unchanged_messages


class Stored(Protocol):
    """What the destination held before the run (`destinations.StoredMessages`)."""

    newest: dict[tuple[str, str], datetime]  # per (Page, platform): its newest message time

    def known(self, asked: list[tuple[str, datetime | None]]) -> dict[str, int | None]:
        """Which of these ids (each with its time) the destination holds, with their
        `rows_hash`."""


class ExportSession:
    """One run's reading: the Graph connection, the Pages, the reader and what it counted.

    `checkpoints` False reads everything in one slice (one dlt load).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        mode: Mode = Mode.REGULAR,
        refresh: bool = False,
        checkpoints: bool = True,
        observer: Callable[[ThreadPart], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.refresh = refresh
        self.checkpoints = checkpoints
        self.observer = observer
        self.clock = clock
        self.started_at = datetime.now(UTC)
        self.redactor = REDACTOR
        self.redactor.add(settings.access_token)
        self.redactor.add(settings.pii_salt)
        self.stats = CallStats()
        self.report = ReadReport()
        self.counts = RunCounts()
        self.privacy = Privacy(settings.pii, settings.pii_salt or "")

        def connection(base_url: str, **shared: Any) -> GraphConnection:
            # The shared session's pool is mounted again by each: as large as the calls in flight.
            return GraphConnection(
                base_url=base_url,
                api_version=settings.api_version,
                pacing=settings.pacing(),
                app_secret=settings.app_secret,
                redactor=self.redactor,
                stats=self.stats,
                pool_size=settings.max_concurrency,
                **shared,
            )

        self.connection = connection(settings.base_url)
        # The Instagram API with Instagram Login: another host, the same session, pace and
        # statistics.
        instagram = connection(
            settings.instagram_base_url,
            pacer=self.connection.pacer,
            session=self.connection.session,
        )
        self.api = ConversationsApi(
            self.connection,
            settings.access_token,
            page_size=settings.page_size,
            messages_page_size=settings.messages_page_size,
            attachments_page_size=settings.attachments_page_size,
            instagram=instagram,
        )
        self.pages: list[FacebookPage] | None = None
        self.reader: InboxReader | None = None
        # The run record, asked for when the last slice ends (set by `export`).
        self.record: Callable[[], dict[str, Any]] | None = None
        # What the destination held before the run (set by `export`); None: nothing.
        self.stored: Stored | None = None
        # Threads `meta-inbox forget` erased, with when (set by `export`).
        self.erased: dict[str, datetime] = {}
        self._threads_with_new: set[str] = set()
        self._stop_reason: BaseException | None = None
        self._last_progress = clock()

    def discover(self) -> list[FacebookPage]:
        if self.pages is None:
            self.pages = self.api.discover_pages(self.settings.page_ids)
        return self.pages

    @property
    def finished(self) -> bool:
        return self.reader is not None and self.reader.done

    def stop(self, reason: BaseException) -> None:
        """Stop reading; what is read so far is still handed over."""
        self._stop_reason = self._stop_reason or reason
        if self.reader is not None:
            self.reader.stop(reason)
        elif self.report.stopped_by is None:
            self.report.stopped_by = reason

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    # -- slices (one per checkpoint) --------------------------------------------------------

    def read_slice(self, state: dict[str, Any]) -> Iterator[Batch]:
        """Batches until the reader is done or the slice is long enough. `state` is the source
        state: folder progress goes in right after the data it covers was yielded."""
        batch = Batch(self.started_at)
        if self.reader is None:
            batch.refreshed = self._begin(state)
        assert self.reader is not None
        started, threads = self.clock(), 0
        while True:
            item = self.reader.take(timeout=0.2)
            if isinstance(item, ThreadPart) and self.erased:
                item = self._unerased(item)
            if isinstance(item, ThreadPart):
                self._count(item)
                if item.newest:
                    _raise(state["loaded_max"], f"{item.page.id}/{item.platform}", item.newest)
                batch.parts.append(item)
                threads += item.final
            elif isinstance(item, FolderProgress):
                if batch:
                    yield self._to_count(batch)
                    batch = Batch(self.started_at)
                state["folders"][item.key] = item.state
                if item.state["pass"] is None:
                    log.info("%s: read to its end%s", item.key, self._totals())
            elif self.reader.done:
                break
            if batch.size >= BATCH_ROWS or (item is None and batch):
                yield self._to_count(batch)
                batch = Batch(self.started_at)
            self._progress()
            if self.checkpoints and (
                self.clock() - started >= self.settings.checkpoint_seconds
                or threads >= self.settings.checkpoint_threads
            ):
                break
        self.counts.checkpoints += 1
        batch = self._to_count(batch)
        if self.finished:
            if self.report.stopped_by is None and self.reader.generation:
                state.pop("generation", None)
            batch.pages = self.reader.pages_read()
            if self.record is not None:
                batch.record = self.record()
        if batch:
            yield batch

    def _unerased(self, part: ThreadPart) -> ThreadPart | _Erased:
        erased_at = self.erased.get(str(part.conversation.get("id")))
        if erased_at is None:
            return part
        return after_erasure(part, erased_at) or _Erased()

    def _begin(self, state: dict[str, Any]) -> list[str]:
        """The first slice: read state (forgetting refreshed Pages'), then start reading."""
        pages = self.discover()
        if "resources" in state:
            # meta-inbox 0.1 kept a cursor per thread: forgotten, so this run reads everything.
            log.warning("incremental state of an older meta-inbox: this run reads everything")
            state.clear()
        folders: dict[str, Any] = state.setdefault("folders", {})
        loaded_max: dict[str, str] = state.setdefault("loaded_max", {})
        refreshed = [page.id for page in pages] if self.refresh else []
        if self.settings.start_date and any(key.split("/")[0] not in refreshed for key in folders):
            self.report.warn(
                "start_date (--since) only bounds a pipeline's first run, and this one has run "
                "before: it has no effect (use --full-refresh to start over from it)"
            )
        for key in [k for k in (*folders, *loaded_max) if k.split("/")[0] in refreshed]:
            folders.pop(key, None)
            loaded_max.pop(key, None)
        settings = self.settings
        plan = ReadPlan(
            mode=self.mode,
            platforms=settings.platforms,
            # What a reconcile does not read would look deleted: it reads every folder. One
            # person's history is in every folder too.
            folders=list(FOLDERS)
            if self.mode is Mode.RECONCILE or settings.user_ids
            else settings.folders,
            start=settings.start,
            lookback=settings.lookback,
            recheck_window=settings.recheck_window,
            user_ids=tuple(settings.user_ids or ()),
        )
        self.reader = InboxReader(
            self.api,
            plan,
            self.report,
            max_concurrency=settings.max_concurrency,
            read_ahead=settings.read_ahead_messages,
            slice_threads=settings.checkpoint_threads if self.checkpoints else None,
            clock=self.clock,
        )
        # A run whose reading ends closes its generation; a run killed or stopped leaves it
        # open, and the next one finishes it first (see reader.py). One person's history is
        # read outside of them: it keeps no folder state.
        generation, resumed = None, False
        if not settings.user_ids:
            resumed = "generation" in state
            generation = state.setdefault("generation", self.started_at.isoformat())
        self.reader.start(
            pages, dict(folders), dict(loaded_max), generation=generation, resumed=resumed
        )
        if self._stop_reason is not None:
            self.reader.stop(self._stop_reason)
        return refreshed

    def _count(self, part: ThreadPart) -> None:
        counts = self.counts
        counts.messages += len(part.messages)
        counts.messages_without_details += sum(not rows.has_details(m) for m in part.messages)
        counts.threads += part.final
        if self.observer is not None:
            self.observer(part)

    def _to_count(self, batch: Batch) -> Batch:
        """The batch, its messages counted as new or read again, with what the destination
        holds of those read again (`Batch.stored`)."""
        newest = self.stored.newest if self.stored else {}
        parts = []
        for part in batch.parts:
            latest = newest.get((part.page.id, part.platform))
            # Those sent after the destination's newest of their Page and platform are new
            # without asking; the older ones are new if the destination does not hold them.
            maybe_known = (
                [
                    (str(message["id"]), created)
                    for message, created in zip(part.messages, part.created, strict=True)
                    if created is None or created <= latest
                ]
                if latest is not None
                else []
            )
            parts.append((part, maybe_known))
        asked = [message for _, maybe_known in parts for message in maybe_known]
        if self.stored and asked:
            batch.stored = self.stored.known(asked)
        if self.refresh:
            # What the run finds stored is deleted once its first slice is loaded: it is all
            # loaded again, unfingerprinted (the new-message count still tells it apart).
            stored, batch.stored = batch.stored, {}
        else:
            stored = batch.stored
        counts = self.counts
        for part, maybe_known in parts:
            thread = str(part.conversation["id"])
            new = len(part.messages) - sum(i in stored for i, _ in maybe_known)
            counts.new_messages += new
            if new and thread not in self._threads_with_new:
                self._threads_with_new.add(thread)
                counts.threads_with_new_messages += 1
            if part.final and thread not in self._threads_with_new:
                counts.rechecked_threads += 1
        return batch

    def _progress(self) -> None:
        if self.clock() - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = self.clock()
            log.info("reading%s", self._totals())

    def _totals(self) -> str:
        counts = self.counts
        return (
            f" (run: {counts.threads} threads, {counts.messages} messages, "
            f"{self.stats.calls} calls)"
        )


class _Erased:
    """A part of an erased thread with nothing to load: taken, and dropped."""


def _raise(loaded_max: dict[str, str], key: str, newest: datetime) -> None:
    current = rows.parse_time(loaded_max.get(key))
    if current is None or newest > current:
        loaded_max[key] = newest.isoformat()


@dlt.source(name="meta_inbox", max_table_nesting=0)
def meta_inbox(
    settings: Settings | None = None,
    *,
    session: ExportSession | None = None,
    **overrides: Any,
) -> Sequence[DltResource]:
    """Messenger and Instagram conversations of the Pages an access token can read.

    `settings` (or keyword `overrides` of them) default to dlt's config: `[sources.meta_inbox]`
    and `SOURCES__META_INBOX__*`. Without a `session`, one dlt load reads everything; use
    `meta_inbox.export()` for checkpoints, metric views and run records.
    """
    if session is None:
        session = ExportSession(settings or Settings.from_config(**overrides), checkpoints=False)
    shaper = _Shaper(session)

    # One resource for every table, each item marked with its table: dlt writes each as it is
    # handed over, before the next batches are shaped. Through a fork to a transformer per
    # table, dlt took turns between the fork and the reading, and held up to 20 hand-overs.
    @dlt.resource(name=INBOX)
    def inbox() -> Iterator[DataItemWithMeta]:
        for batch in session.read_slice(dlt.current.source_state()):
            yield from _marked(shaper.add(batch))
        yield from _marked(shaper.rest())

    for table in _LOADED:
        inbox.apply_hints(**_hints(table, session.privacy.mode), create_table_variant=True)
    return [inbox]


def _marked(handed: dict[str, pa.Table]) -> Iterator[DataItemWithMeta]:
    # Popped: a table written is let go before the next is written.
    while handed:
        name, rows_of_table = handed.popitem()
        yield dlt.mark.with_table_name(rows_of_table, name)


def appended(resource: DltResource) -> None:
    """Have every table of `resource` appended to, not merged into."""
    resource.apply_hints(write_disposition="append")
    if resource.name == INBOX:
        for table in _LOADED:
            resource.apply_hints(
                table_name=table.name, write_disposition="append", create_table_variant=True
            )


def rows_resource(table: Table, shaped: list[dict[str, Any]], pii: str) -> DltResource:
    """A resource loading `shaped` rows of `table` as they stand (corrections, run records)."""

    def stored() -> Iterator[pa.Table]:
        if shaped:
            yield with_load_id(pa.Table.from_pylist(shaped, schema=table.arrow_schema(pii)))

    return dlt.resource(stored, name=table.name, **_hints(table, pii))


def _hints(table: Table, pii: str) -> dict[str, Any]:
    return {
        "table_name": table.name,
        "write_disposition": table.write_disposition,
        "primary_key": table.primary_key or None,
        "columns": table.dlt_columns(pii),
    }


def with_load_id(rows_of_table: pa.Table) -> pa.Table:
    """The table with dlt's `_dlt_load_id`, which dlt adds to Arrow tables only when told to
    (a global setting); the lake views and per-Page refreshes need it on every row."""
    load_id = dlt.current.load_package_state()["load_id"]
    column = pa.array([load_id] * rows_of_table.num_rows, pa.string())
    return rows_of_table.append_column(pa.field("_dlt_load_id", pa.string(), False), column)


class _Shaper:
    """Turns each batch, in one pass, into the Arrow table of every table it has rows for, and
    hands a table's rows over in items of `ITEM_ROWS`.
    Each row becomes a tuple of its table's columns as it is made, so a batch is never held as
    thousands of row dicts, and the tuples are turned into columns at C speed."""

    def __init__(self, session: ExportSession) -> None:
        self.session = session
        self.schemas = {t.name: t.arrow_schema(session.privacy.mode) for t in _LOADED}
        # The rows made as dicts (a thread's, a Page's, a run's) read in column order.
        self.values = {t.name: itemgetter(*t.column_names) for t in _LOADED}
        self.history_keys: set[tuple[Any, ...]] = set()
        self.held: dict[str, list[pa.Table]] = {name: [] for name in self.schemas}
        # Rows change with meta-inbox's version and the privacy setting as well as with Graph.
        privacy = session.privacy
        self.made_with = hashlib.blake2b(
            f"{meta_inbox_version()}\0{privacy.mode}\0{privacy.salt}".encode(), digest_size=32
        ).digest()

    def add(self, batch: Batch) -> dict[str, pa.Table]:
        """The tables whose held rows fill an item, with this batch's rows."""
        for name, shaped in self._shaped(batch).items():
            self.held[name].append(shaped)
        return self._handed(
            [name for name, held in self.held.items() if sum(t.num_rows for t in held) >= ITEM_ROWS]
        )

    def rest(self) -> dict[str, pa.Table]:
        """Every table's held rows: the slice ends."""
        return self._handed([name for name, held in self.held.items() if held])

    def _handed(self, names: list[str]) -> dict[str, pa.Table]:
        handed = {}
        for name in names:
            handed[name] = with_load_id(pa.concat_tables(self.held[name]))
            self.held[name] = []
        return handed

    def _shaped(self, batch: Batch) -> dict[str, pa.Table]:
        made, plain = self._rows(batch)
        tables = {name: self._arrow(name, values) for name, values in made.items() if values}
        for name, columns in plain.items():
            if columns.num_rows:
                own = self._table(
                    name, dict(zip(columns.column_names, columns.columns, strict=True))
                )
                tables[name] = pa.concat_tables([own, tables[name]]) if name in tables else own
        return _without_nul(tables, self.session.counts)

    def _rows(self, batch: Batch) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, pa.Table]]:
        """Each table's rows of the batch: made one by one, each a tuple of all the table's
        columns, and the plain messages' made by Arrow (`rows.PlainMessages`)."""
        shaped: dict[str, list[tuple[Any, ...]]] = {name: [] for name in self.schemas}
        for table, row in _thread_rows(batch):
            # One load keeps one row per key: dlt's insert-only leaves a load's duplicates in.
            if not table.insert_only or self._first(table, row):
                shaped[table.name].append(self.values[table.name](row))
        made, plain = rows.MessageRows(), rows.PlainMessages()
        # A message listed twice keeps its last rows (the merge keeps a key's last row): its
        # rows are made in one place, in the order Graph listed them. Arrow makes the plain
        # ones where they are many enough to pay for its calls.
        repeated, plain_count = _plain_and_repeated(batch)
        columnar = plain_count >= plain.WORTH
        counts = self.session.counts
        for message_id, context, message, created in _messages(batch):
            # A message read again gets the fingerprint of what its rows are made from: the
            # recheck window reads a week of threads every run, and what did not change then
            # costs no rows, no load, no merge and no rewrite of the row groups it sits in. A
            # message loaded once has none (a backfill pays nothing for it), so its first
            # reading again loads it.
            digest = None
            if message_id in batch.stored:
                digest = _fingerprint(self.made_with, context, message)
                if digest == batch.stored[message_id]:
                    counts.unchanged_messages += 1
                    continue
            if columnar and message.keys() <= rows.PLAIN_KEYS and message_id not in repeated:
                plain.add(context, message_id, message, created, digest)
            else:
                made.add(context, message_id, message, created, digest)
        columns = None
        with contextlib.suppress(pa.ArrowException, UnicodeEncodeError):
            columns = plain.tables()
        if columns is None:
            plain.made_by(made)
        return shaped | made.tables, columns or {}

    def _first(self, table: Table, row: dict[str, Any]) -> bool:
        key = tuple(row[name] for name in table.primary_key)
        if key in self.history_keys:
            return False
        self.history_keys.add(key)
        return True

    def _arrow(self, name: str, values: list[tuple[Any, ...]]) -> pa.Table:
        columns = zip(_BY_NAME[name].column_names, zip(*values, strict=True), strict=True)
        return self._table(name, {n: list(v) for n, v in columns})

    def _table(self, name: str, columns: dict[str, Any]) -> pa.Table:
        """Arrow refuses lone UTF-16 surrogates: only a batch holding one pays for the repair
        (`PlainMessages` leaves such a batch to `MessageRows`, so its columns are lists)."""
        counts = self.session.counts
        counts.rows[name] += len(next(iter(columns.values())))
        shaped = self.session.privacy.applied(_BY_NAME[name], columns)
        schema = self.schemas[name]
        try:
            return pa.Table.from_pydict(shaped, schema=schema)
        except UnicodeEncodeError:
            counts.repaired_values += rows.repaired(shaped)
            return pa.Table.from_pydict(shaped, schema=schema)


def _without_nul(tables: dict[str, pa.Table], counts: RunCounts) -> dict[str, pa.Table]:
    """The tables with NUL (which no PostgreSQL text holds) replaced, in Arrow."""
    for name, arrow in tables.items():
        for index, column_type in enumerate(arrow.schema):
            column = arrow.column(index)
            if not pa.types.is_string(column_type.type) or not _may_hold_nul(column):
                continue
            found = pc.sum(pc.match_substring(column, "\x00")).as_py()
            if found:
                counts.repaired_values += found
                fixed = pc.replace_substring(column, "\x00", rows.REPLACEMENT)
                arrow = arrow.set_column(index, column_type, fixed)
        tables[name] = arrow
    return tables


def _may_hold_nul(column: pa.ChunkedArray) -> bool:
    """Whether the bytes of the column's text hold a zero: in UTF-8, only NUL encodes to one.
    A search of the raw bytes costs a sixtieth of Arrow's search value by value, and almost
    no column holds one."""
    data = (chunk.buffers()[2] for chunk in column.chunks)
    return any(b"\x00" in memoryview(buffer).tobytes() for buffer in data if buffer is not None)


def _thread_rows(batch: Batch) -> Iterator[tuple[Table, dict[str, Any]]]:
    """Every row of a batch with its table but its messages' (`_messages`)."""
    for done in batch.pages:
        page = done.page
        instagram = (page.instagram_id, page.instagram_username)
        platforms = list(done.platforms)
        yield (
            PAGES,
            rows.page_row(page.id, page.name, instagram, platforms, batch.observed_at, page.login),
        )
    if batch.refreshed:
        pipeline_name = dlt.current.pipeline().pipeline_name
        for page_id in batch.refreshed:
            yield (
                REFRESHES,
                {
                    "page_id": page_id,
                    "pipeline_name": pipeline_name,
                    "requested_at": batch.observed_at,
                    "applied_at": None,
                },
            )
    if batch.record:
        yield RUNS, batch.record
    for part in batch.parts:
        if part.final:
            context, raw = _context(part), part.conversation
            yield CONVERSATIONS, rows.conversation_row(context, raw)
            for row in rows.participant_rows(context, raw):
                yield CONVERSATION_PARTICIPANTS, row
            yield CONVERSATION_HISTORY, rows.history_row(context, raw, batch.observed_at)


def _messages(
    batch: Batch,
) -> Iterator[tuple[str, ThreadContext, dict[str, Any], datetime | None]]:
    """Each message of a batch: its id, its thread's context, Graph's object, its time."""
    for part in batch.parts:
        context = _context(part)
        for message, created in zip(part.messages, part.created, strict=True):
            yield str(message["id"]), context, message, created


def _plain_and_repeated(batch: Batch) -> tuple[set[str], int]:
    """The ids of the messages a batch holds more than once, and how many of its messages are
    plain (`rows.PLAIN_KEYS`)."""
    ids = [str(message["id"]) for part in batch.parts for message in part.messages]
    plain = sum(
        message.keys() <= rows.PLAIN_KEYS for part in batch.parts for message in part.messages
    )
    if len(set(ids)) == len(ids):
        return set(), plain
    return {message_id for message_id, times in Counter(ids).items() if times > 1}, plain


_CONTEXT_FIELDS = tuple(field.name for field in dataclasses.fields(ThreadContext))


def _fingerprint(made_with: bytes, context: ThreadContext, message: dict[str, Any]) -> int:
    """64 bits of a digest of all a message's rows are made from: Graph's object, its thread's
    context, and `made_with` (meta-inbox's version and the privacy setting). Graph's text can
    hold a lone surrogate, which orjson refuses: then the object's repr."""
    # Every field of the context, so that one added to it changes the fingerprint too; a set
    # sorted, since its order differs from process to process.
    thread = tuple(
        sorted(value) if isinstance(value, frozenset) else value
        for value in (getattr(context, name) for name in _CONTEXT_FIELDS)
    )
    try:
        data = orjson.dumps([thread, message], option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        data = repr((thread, message)).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8, key=made_with).digest()
    return int.from_bytes(digest, "big", signed=True)


def _context(part: ThreadPart) -> ThreadContext:
    return ThreadContext(
        conversation_id=str(part.conversation["id"]),
        page_id=part.page.id,
        platform=part.platform,
        folder=part.folder,
        page_own_ids=part.page.own_ids,
        instagram_id_known=part.page.instagram_id is not None,
    )


# What the source loads: the exported tables, refresh markers and run records.
_LOADED: tuple[Table, ...] = (*TABLES, REFRESHES, RUNS)
_BY_NAME = {table.name: table for table in _LOADED}


logging.getLogger("dlt").addFilter(
    _JsonAsText(
        {INBOX, *(t.name for t in _LOADED if any(c.data_type == "json" for c in t.columns))}
    )
)
