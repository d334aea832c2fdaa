"""What meta-inbox knows of dlt destinations: defaults, sharing a dataset, and their failures.

- Where data and state live (README "Run"): a pipeline's working folder is in the current
  folder's `.dlt/pipelines/` (or under `DLT_DATA_DIR` when set), the default DuckDB file is
  `./<pipeline_name>.duckdb` and a filesystem destination without a bucket writes
  `./meta_inbox_lake/`. dlt's own default would follow the folder of the pipeline's first run
  (its `initial_cwd`), so a second checkout loaded into the first one's file: the paths are
  resolved here, against the current folder. The working folder remembers where its data
  went (`LOCATION_RECORD`): a run asking for another place stops (exit 2) rather than apply
  one dataset's state to another; a run whose local data is gone starts over.
- On warehouses each pipeline stages its merges in a dataset of its own
  (`<dataset>_staging_<pipeline>`), so that per-Page pipelines loading one dataset at the same
  time never truncate each other's staging tables.
- On PostgreSQL, creating the dataset and migrating its tables hold an advisory lock. dlt checks
  the catalog, then issues plain `CREATE SCHEMA` / `CREATE TABLE`: per-Page pipelines whose
  first loads met failed with `duplicate key value violates unique constraint
  "pg_namespace_nspname_index"` (or `"pg_type_typname_nsp_index"`, or a deadlock). Under the
  lock, the next pipeline sees what the previous one created and adds only what is missing.
  Only DDL waits: the loads themselves still run side by side.
- A Page refreshed by `--full-refresh` loses its older rows: SQL destinations delete them after
  the refresh's first load (a marker row in `_meta_inbox_refreshes` makes this survive a kill);
  the lake views hide them.
- Failures a user can fix become one line: a DuckDB file open elsewhere, a folder that cannot
  be written, missing credentials, a missing package.
"""

from __future__ import annotations

import copy
import errno
import functools
import heapq
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.destination import Destination, DestinationReference
from dlt.common.destination.exceptions import (
    InvalidDestinationReference,
    UnknownDestinationModule,
)
from dlt.common.exceptions import MissingDependencyException
from dlt.common.schema.typing import TSchemaTables
from dlt.destinations import duckdb, postgres
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from .config import DUCKDB_MEMORY_LIMIT
from .duckdb_merge import direct_client
from .errors import (
    BadInput,
    DestinationCredentialsMissing,
    DestinationLocked,
    DestinationOutOfMemory,
    DestinationUnwritable,
    MissingExtra,
    causes,
)
from .rows import parse_time
from .tables import MESSAGES, REFRESHES, ROWS_HASH, TABLES

log = logging.getLogger("meta_inbox")

DEFAULT_LAKE = "meta_inbox_lake"
_PARQUET = ("duckdb", "filesystem", "motherduck")
# Destinations meta-inbox runs SQL on (views, refresh deletions): the dialects of the views.
SQL_DIALECTS = ("duckdb", "postgres")
_EXTRAS = {"postgres": "postgres", "redshift": "redshift", "bigquery": "bigquery",
           "snowflake": "snowflake", "motherduck": "motherduck", "mssql": "mssql",
           "databricks": "databricks", "athena": "athena", "synapse": "synapse",
           "clickhouse": "clickhouse"}  # fmt: skip
# DuckDB takes 80 % of the machine's memory by default, and its merges are what a checkpoint's
# peak memory is made of: measured, a bound and one thread cut a backfill's peak by a tenth at
# no cost in time (the load is a small part of a run). The run's connection keeps what it read
# up to the bound (`held_open`), so the bound is also a run's peak after a small change at 1M
# messages (its merges read the big tables): 321 MB at 128 MB, 288 MB at 96 MB, which loaded
# the 1.09M backfill without an out-of-memory retry; 64 MB made merges fail (out of memory) at
# 430k. Applied only where the user configured no DuckDB credentials of their own.
DUCKDB_LOADING = {"memory_limit": DUCKDB_MEMORY_LIMIT, "threads": 1}
# dlt runs up to 20 load jobs at once. In DuckDB each is a query of this process, and a
# checkpoint's ten merges and copies side by side added 100-170 MB to its peak (measured at
# 123k messages), where one after another they took no more time: DuckDB writes one at a time.
DUCKDB_LOAD_JOBS = 1
# Serializes the DDL of concurrent pipelines on Postgres (a constant of our own).
_DDL_LOCK = 7_210_422_020


def configured(destination: str | Destination, pipeline_name: str) -> Destination:
    """The destination with meta-inbox's defaults where the user configured nothing."""
    if isinstance(destination, Destination):
        return destination
    try:
        factory = Destination.from_reference(destination)
    except (UnknownDestinationModule, InvalidDestinationReference):
        raise BadInput(
            f"--destination {destination!r} is not a dlt destination: use duckdb, filesystem, "
            "postgres, bigquery, snowflake, motherduck… (and install its extra, e.g. "
            "dlt[postgres])."
        ) from None
    name = factory.destination_name
    if name == "filesystem" and not _configured("destination.filesystem.bucket_url"):
        return dlt.destinations.filesystem(bucket_url=str(Path(DEFAULT_LAKE).resolve()))
    if name == "duckdb":
        return _DirectDuckDb(
            credentials=_duckdb_credentials(pipeline_name), max_parallel_load_jobs=DUCKDB_LOAD_JOBS
        )
    if name in ("filesystem", "motherduck"):
        return factory
    staging = f"%s_staging_{pipeline_name}"
    if isinstance(factory, postgres):
        return _LockingPostgres(
            destination_name=factory.configured_name, staging_dataset_name_layout=staging
        )
    return Destination.from_reference(destination, staging_dataset_name_layout=staging)


def _duckdb_credentials(pipeline_name: str) -> Any:
    """The file in the current folder, with meta-inbox's settings, unless the user configured
    credentials (a relative file resolved here); None leaves them to dlt's config."""
    given = _configured("destination.duckdb.credentials")
    if not given:
        database = str(Path(f"{pipeline_name}.duckdb").resolve())
        return DuckDbCredentials(database, global_config=DUCKDB_LOADING)
    if isinstance(given, str) and _relative_file(given):
        return DuckDbCredentials(str(Path(given).resolve()))
    return None


def checkpoint(pipeline: dlt.Pipeline) -> None:
    """DuckDB, after a load: empty the staging tables (the next load empties them anyway), then
    write what the load changed into the file. Until DuckDB writes them, rows added are held in
    memory, some 10 MB a table however few (measured); a checkpoint compresses what it writes,
    and staging rows left in cost a third of a backfill's CPU."""
    if pipeline.destination.destination_name != "duckdb":
        return
    with pipeline.sql_client() as client:
        with client.with_staging_dataset():
            staging = client.make_qualified_table_name_path(None, quote=False)[-1]
            tables = client.execute_sql(
                "select table_name from information_schema.tables where table_schema = %s",
                staging,
            )
            client.truncate_tables(*(name for (name,) in tables or []))
        client.execute_sql("checkpoint")


@contextmanager
def held_open(pipeline: dlt.Pipeline, memory_limit: str = DUCKDB_MEMORY_LIMIT) -> Iterator[None]:
    """While a run lasts, its DuckDB file stays open. dlt's connection pool closes the database
    when its last connection is returned, so each load job and query opened the file again and
    closing it wrote a checkpoint: measured, 30 % of a backfill's CPU. The pipeline gets its own
    destination back afterwards, so that what the run returns can still read the data."""
    destination = pipeline.destination
    credentials = destination.config_params.get("credentials") if destination else None
    if not isinstance(credentials, DuckDbCredentials) or credentials.external_conn() is not None:
        yield
        return
    import duckdb

    config = credentials.global_config
    if config == DUCKDB_LOADING:  # meta-inbox's own bound, which `duckdb_memory_limit` moves
        config = {**config, "memory_limit": memory_limit}
    connection = duckdb.connect(credentials.database)
    try:
        held = copy.copy(destination)
        held.config_params = {
            **destination.config_params,
            "credentials": DuckDbCredentials(connection, global_config=config),
        }
        pipeline.destination = held
        yield
    finally:
        pipeline.destination = destination
        connection.close()


def _with_client(factory: type[Any], client: Callable[[], type[Any]]) -> type[Any]:
    """dlt's destination `factory`, whose client is `client()`: dlt's own type all the same,
    as pipeline state, config sections and readers see it."""

    class Ours(factory):  # type: ignore[misc, valid-type]
        @property
        def destination_type(self) -> str:
            return DestinationReference.normalize_type(
                f"{factory.__module__}.{factory.__qualname__}"
            )

        @property
        def client_class(self) -> type[Any]:
            return client()

    return Ours


@functools.cache
def _locking_postgres_client() -> type[Any]:
    # Imported here: psycopg2 comes with the postgres extra only.
    import psycopg2
    from dlt.destinations.impl.postgres.postgres import PostgresClient

    class LockingPostgresClient(PostgresClient):
        def initialize_storage(self, truncate_tables: Iterable[str] | None = None) -> None:
            with self._ddl_lock():
                super().initialize_storage(truncate_tables)

        def update_stored_schema(
            self,
            only_tables: Iterable[str] | None = None,
            expected_update: TSchemaTables | None = None,
            force: bool = False,
        ) -> TSchemaTables | None:
            with self._ddl_lock():
                return super().update_stored_schema(only_tables, expected_update, force)

        @contextmanager
        def _ddl_lock(self) -> Iterator[None]:
            """Held by a connection of its own: after a failed statement, some of which dlt
            expects (a table not created yet), dlt resets its connection, and the reset's
            DISCARD ALL drops advisory locks. Closing the connection releases the lock."""
            credentials = self.config.credentials.to_native_representation()
            with closing(psycopg2.connect(credentials)) as connection:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute("select pg_advisory_lock(%s)", (_DDL_LOCK,))
                yield

    return LockingPostgresClient


# On PostgreSQL, DDL under `_DDL_LOCK`; into DuckDB, merges without staging tables.
_LockingPostgres = _with_client(postgres, _locking_postgres_client)
_DirectDuckDb = _with_client(duckdb, direct_client)


def takes_parquet(destination: Destination) -> bool:
    """Loading Parquet is measured 10x faster than dlt's INSERT statements into DuckDB, with a
    third of the memory; a lake is Parquet anyway."""
    return destination.destination_name in _PARQUET


def on_postgres(pipeline: dlt.Pipeline) -> bool:
    return pipeline.destination.capabilities().sqlglot_dialect == "postgres"


def speaks_sql(pipeline: dlt.Pipeline) -> bool:
    """Whether meta-inbox can run its SQL in the dataset (not on a lake's files)."""
    from dlt.destinations.impl.duckdb.sql_client import WithTableScanners

    if pipeline.destination.capabilities().sqlglot_dialect not in SQL_DIALECTS:
        return False
    with pipeline.sql_client() as client:
        return not isinstance(client, WithTableScanners)


def apply_refreshes(pipeline: dlt.Pipeline) -> list[str]:
    """Delete the rows that `--full-refresh` replaced: those of a refreshed Page loaded before
    its marker. Idempotent, so a run killed in between is completed by the next one."""
    if not speaks_sql(pipeline):
        return []
    with pipeline.sql_client() as client:
        if not _has_table(client, REFRESHES.name):
            return []
        refreshes = client.make_qualified_table_name(REFRESHES.name)
        markers = client.execute_sql(
            f"select page_id, max(_dlt_load_id) from {refreshes} "
            "where applied_at is null group by page_id"
        )
        done = []
        for page_id, load_id in markers or []:
            with client.begin_transaction():
                for table in TABLES:
                    if _has_table(client, table.name):
                        client.execute_sql(
                            f"delete from {client.make_qualified_table_name(table.name)} "
                            f"where {table.page_column} = %s and _dlt_load_id < %s",
                            page_id,
                            load_id,
                        )
                client.execute_sql(
                    f"update {refreshes} "
                    "set applied_at = current_timestamp where page_id = %s and applied_at is null",
                    page_id,
                )
            done.append(page_id)
            log.info("Page %s: rows loaded before its refresh deleted", page_id)
        return done


def drop_stale_children(pipeline: dlt.Pipeline, load_ids: Iterable[str]) -> None:
    """Delete the child rows of parents merged again in these loads that the loads did not
    write again. A child table's merge replaces the rows of the parents it has rows for, so
    the reactions of a message whose last reaction was taken back would stay. Only loads that
    merged stored rows again need it; the lake's views leave such rows out by themselves."""
    if not speaks_sql(pipeline):
        return
    with pipeline.sql_client() as client:
        children = [t for t in TABLES if t.parent and _has_table(client, t.name)]
        if on_postgres(pipeline):
            # PostgreSQL's statistics of a parent table predate the loads: a load's rows are
            # estimated at one, and the planner then compares every child row with every parent
            # row of the load. Measured at 1M messages, a run that merged 53k again: 88 s on
            # the 24k shares alone, the whole run 101 s; with ANALYZE first, 16 s.
            for parent in sorted({str(table.parent) for table in children}):
                client.execute_sql(f"analyze {client.make_qualified_table_name(parent)}")
        for load_id in load_ids:
            # Literals: DuckDB skips the row groups of other loads only for a constant.
            load = quoted(load_id)
            for table in children:
                child = client.make_qualified_table_name(table.name)
                parent = client.make_qualified_table_name(str(table.parent))
                client.execute_sql(
                    f"delete from {child} where _dlt_load_id <> {load} and {table.merge_key} "
                    f"in (select id from {parent} where _dlt_load_id = {load})"
                )


def _has_table(client: Any, name: str) -> bool:
    schema = client.make_qualified_table_name_path(None, quote=False)[-1]
    rows = client.execute_sql(
        "select count(*) from information_schema.tables "
        "where table_schema = %s and table_name = %s",
        schema,
        name,
    )
    return bool(rows and rows[0][0])


def explained(error: BaseException, destination: Any) -> Exception:
    """A missing package, as the line that says which extra to install."""
    name = str(getattr(destination, "destination_name", destination))
    extra = _EXTRAS.get(name.split(".")[-1], name)
    command = 'pip install "meta-inbox[postgres]"' if extra == "postgres" else (
        f'pip install "dlt[{extra}]"')  # fmt: skip
    missing = getattr(error, "name", None) or str(error).split("'")[1:2] or [name]
    what = missing if isinstance(missing, str) else missing[0]
    return MissingExtra(
        f"--destination {name} needs a package that is not installed ({what}): {command}"
    )


@contextmanager
def explained_failures(destination: Any) -> Iterator[None]:
    """Turn destination failures a user can fix into plain-language errors."""
    try:
        yield
    except Exception as error:
        problem = problem_of(error, destination)
        if problem is None:
            raise
        raise problem from error


# DuckDB's buffer manager at its memory limit: "could not allocate block of size 256.0 KiB
# (18.9 MiB/19.0 MiB used)", "failed to pin block ...", "failed to allocate data ...".
_BUFFER_FULL = re.compile(r"(allocate|pin) (block|data) of size [^()]*\([^()]*/[^()]* used\)")
# A full disk or quota: Python's writes raise OSError with the errno; DuckDB's quote the
# system's message for it (`Could not write file "…": No space left on device`), in the locale
# of this process, which `os.strerror` gives too.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_NO_ROOM_TEXTS = tuple(os.strerror(number) for number in _NO_ROOM)


def problem_of(error: BaseException, destination: Any) -> Exception | None:
    """The plain-language error for a destination failure a user can fix, else None."""
    for cause in causes(error):
        if isinstance(
            cause, DestinationLocked | DestinationUnwritable | DestinationOutOfMemory | MissingExtra
        ):
            return None
        text = str(cause)
        first = text.splitlines()[0] if text else ""
        # duckdb's class, not imported for other destinations; a commit or a checkpoint that
        # runs out raises another class, which quotes its buffer manager's words.
        if type(cause).__name__ == "OutOfMemoryException" or _BUFFER_FULL.search(first):
            return DestinationOutOfMemory(
                f"DuckDB ran out of memory while loading ({first}): raise "
                "duckdb_memory_limit (SOURCES__META_INBOX__DUCKDB_MEMORY_LIMIT); what earlier "
                "checkpoints loaded is kept, and the next run goes on from there."
            )
        if (isinstance(cause, OSError) and cause.errno in _NO_ROOM) or any(
            words in first for words in _NO_ROOM_TEXTS
        ):
            return DestinationUnwritable(
                f"The disk is full ({first}): free space on it, or point DLT_DATA_DIR (dlt's "
                "pipeline folder) and the destination at a disk with room; what earlier "
                "checkpoints loaded is kept, and the next run goes on from there."
            )
        if "Could not set lock on file" in text or "Conflicting lock" in text:
            path = _quoted_path(text)
            return DestinationLocked(
                f"The DuckDB file {path} is open in another program (a notebook, the DuckDB CLI, "
                "another run): close it there, or let that run finish, then run again."
            )
        if isinstance(cause, PermissionError) or (
            isinstance(cause, OSError) and cause.errno in (errno.EROFS, errno.EACCES)
        ):
            where = getattr(cause, "filename", None) or text
            return DestinationUnwritable(
                f"Cannot write {where}: run from a folder you can write to, or point DLT_DATA_DIR "
                "(dlt's pipeline folder) and the destination somewhere writable."
            )
        if "read-only file system" in text.lower() or "permission denied" in text.lower():
            return DestinationUnwritable(
                f"Cannot write where the data goes ({text.splitlines()[0]}): run from a folder "
                "you can write to, or point DLT_DATA_DIR and the destination somewhere writable."
            )
        if (
            isinstance(cause, ConfigFieldMissingException)
            and "destination" in str(cause.spec_name).lower() + text.lower()
        ):
            name = str(getattr(destination, "destination_name", destination))
            return DestinationCredentialsMissing(
                f"--destination {name} needs credentials: set DESTINATION__{name.upper()}__"
                f"CREDENTIALS, or credentials under [destination.{name}] in .dlt/secrets.toml."
            )
        if isinstance(cause, ModuleNotFoundError | MissingDependencyException):
            return explained(cause, destination)
    return None


def _quoted_path(text: str) -> str:
    for quote in ('"', "'"):
        parts = text.split(quote)
        for part in parts[1::2]:
            if part.endswith((".duckdb", ".db")):
                return part
    return "(the destination's)"


def _configured(key: str) -> Any:
    return dlt.config.get(key) or dlt.secrets.get(key)


def _relative_file(value: str) -> bool:
    """A DuckDB path dlt would place under the pipeline's first working folder, not `:memory:`
    or a connection string."""
    return not value.startswith(":") and "://" not in value and not Path(value).is_absolute()


def pipelines_dir() -> str | None:
    """Where pipelines keep their working folders: the current folder's `.dlt/pipelines`, or
    dlt's default under `DLT_DATA_DIR` when that is set (None)."""
    if os.environ.get("DLT_DATA_DIR"):
        return None
    return str(Path(".dlt", "pipelines").resolve())


# In a pipeline's working folder: the destination, dataset and place its state belongs to.
LOCATION_RECORD = "meta_inbox_location.json"


def claim_location(pipeline: dlt.Pipeline) -> dlt.Pipeline:
    """The pipeline, once sure its working folder's state belongs to the data it is asked to
    load: another destination, dataset or file stops the run (exit 2) with both named; a
    DuckDB file or local lake that is gone takes its state with it (the run starts over)."""
    record = Path(pipeline.working_dir) / LOCATION_RECORD
    if not record.is_file():
        return pipeline
    recorded, asked = json.loads(record.read_text(encoding="utf-8")), _location(pipeline)
    if recorded != asked:
        raise BadInput(
            f"Pipeline {pipeline.pipeline_name!r} (state in {pipeline.working_dir}) loads "
            f"{_described(recorded, pipeline)}, not {_described(asked, pipeline)}: run from the "
            "folder of its data, or give this run another --pipeline-name."
        )
    place = _local_place(pipeline)
    if place is not None and not place.exists():
        log.warning(
            "%s is gone: the state of pipeline %r (in %s) went with it; reading everything again",
            place,
            pipeline.pipeline_name,
            pipeline.working_dir,
        )
        return pipeline.drop()
    return pipeline


def remember_location(pipeline: dlt.Pipeline) -> None:
    """Record, once data is loaded, where this pipeline's state belongs (`claim_location`)."""
    record = Path(pipeline.working_dir) / LOCATION_RECORD
    if not record.is_file():
        record.write_text(json.dumps(_location(pipeline)), encoding="utf-8")


def _location(pipeline: dlt.Pipeline) -> dict[str, str]:
    """Destination, dataset and place; a local place relative to the working folder, so that a
    project folder moved as a whole (its data and `.dlt/`) still matches."""
    place = _local_place(pipeline)
    if place is not None:
        where = os.path.relpath(place, pipeline.working_dir)
    elif pipeline.destination.destination_name == "filesystem":
        where = str(pipeline.destination_client().config.bucket_url)
    else:
        where = ""
    return {
        "destination": pipeline.destination.destination_name,
        "dataset": pipeline.dataset_name,
        "place": where,
    }


def _described(location: dict[str, str], pipeline: dlt.Pipeline) -> str:
    place = location["place"]
    if place and "://" not in place:
        place = os.path.normpath(Path(pipeline.working_dir, place))
    where = f"{place} " if place else ""
    return f"{where}({location['destination']}, dataset {location['dataset']})"


def _local_place(pipeline: dlt.Pipeline) -> Path | None:
    """The DuckDB file or local lake folder of the pipeline; None elsewhere."""
    if pipeline.destination.destination_name == "duckdb":
        database = pipeline.destination_client().config.credentials.database
        return Path(database) if database and not database.startswith(":") else None
    return local_lake(pipeline)


class StoredMessages:
    """What the destination held before a run, to tell new messages from those merged again:
    per Page and platform its newest message time (a message sent later is new without asking)
    and, asked once per slice, which ids of the older ones it holds."""

    # Ids per query: each query scans the table's ids once (some 60 ms at 1M messages in DuckDB
    # for 5,000 ids); dlt's dataset would also parse the query's every literal (sqlglot).
    CHUNK = 5_000
    # Time spans asked apart, at most: see `known`.
    SPANS = 4
    SPAN_GAP = timedelta(days=30)

    def __init__(self, pipeline: dlt.Pipeline) -> None:
        self.pipeline = pipeline
        self.newest: dict[tuple[str, str], datetime] = {}
        tables = pipeline.dataset().schema.tables
        columns = tables[MESSAGES.name]["columns"] if MESSAGES.name in tables else {}
        # A dataset of an earlier meta-inbox has no `rows_hash` until its first load adds it.
        self.hashes = ROWS_HASH if ROWS_HASH in columns else "null"
        # A lake keeps the rows a refresh replaced until it is compacted, and its views leave
        # them out: so does this, or a refresh cut short would leave the messages it had not
        # read again out for good, found as stored (warehouses delete those rows).
        self.live = ""
        if pipeline.destination.destination_name == "filesystem" and REFRESHES.name in tables:
            self.live = (
                " and _dlt_load_id >= coalesce((select max(_dlt_load_id) from {refreshes} as "
                "refreshed where refreshed.page_id = held.page_id), '')"
            )
        if not columns:
            return
        try:
            rows = self._rows(
                "select page_id, platform, max(created_time) from {messages} group by page_id, "
                "platform"
            )
        except DatabaseUndefinedRelation:
            # A lake dataset another pipeline loaded, not yet read by this one (whose lake
            # client has no view of it): what this one reads is new to it, and the views keep
            # a key's latest row.
            return
        self.newest = {
            (page, platform): parse_time(newest) for page, platform, newest in rows if newest
        }

    def known(self, asked: list[tuple[str, datetime | None]]) -> dict[str, int | None]:
        """Which of these ids (each with the time it was sent) the destination holds, with
        their `rows_hash` (on a lake, that of their latest row).

        Each query is bounded by the times of its ids, as literals: DuckDB then skips the row
        groups of other times (measured at 1M messages: 4 ms and 2 MB for recent ids, against
        90 ms and 80 MB for the whole table). A message is stored with the time it is read
        with. Ids are asked in time order, and apart across the widest gaps of over a month
        (a thread idle since 2018 among this week's), so that one old id does not widen a
        query to the whole table (at 1M messages, the lookups of a run with the recheck window
        went from 1.2 to 0.4 s); a few at most, since each query reads its row groups again.
        """
        timed = sorted((created, i) for i, created in asked if created is not None)
        untimed = [i for i, created in asked if created is None]
        latest: dict[str, tuple[str, int | None]] = {}
        queries = [
            ([i for _, i in chunk], (chunk[0][0], chunk[-1][0]))
            for span in time_spans(timed, self.SPANS, self.SPAN_GAP)
            for chunk in _chunks(span, self.CHUNK)
        ]
        queries += [(chunk, None) for chunk in _chunks(untimed, self.CHUNK)]
        for ids, between in queries:
            for message_id, digest, load_id in self._held(ids, between):
                if message_id not in latest or load_id > latest[message_id][0]:
                    latest[message_id] = (load_id, digest)
        return {message_id: digest for message_id, (_, digest) in latest.items()}

    def _held(
        self, ids: list[str], between: tuple[datetime, datetime] | None
    ) -> list[tuple[Any, ...]]:
        bounded = ""
        if between:
            oldest, newest = (quoted(t.isoformat()) for t in between)
            bounded = f"created_time between {oldest} and {newest} and "
        listed = ", ".join(quoted(i) for i in ids)
        return self._rows(
            f"select id, {self.hashes}, _dlt_load_id from {{messages}} as held "
            f"where {bounded}id in ({listed}){self.live}"
        )

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        """In a thread of its own: a query waiting on a lock held elsewhere (PostgreSQL) waits
        in C, where the main thread would take no SIGINT or SIGTERM until the lock is gone."""

        def query() -> list[tuple[Any, ...]]:
            with self.pipeline.sql_client() as client:
                named = sql
                for placeholder, table in (("{messages}", MESSAGES), ("{refreshes}", REFRESHES)):
                    named = named.replace(placeholder, client.make_qualified_table_name(table.name))
                return list(client.execute_sql(named) or [])

        pool = ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(query).result()
        finally:
            pool.shutdown(wait=False)


def time_spans(
    timed: list[tuple[datetime, str]], most: int, gap: timedelta
) -> list[list[tuple[datetime, str]]]:
    """`timed`, in time order, cut across its widest gaps longer than `gap`: `most` parts
    at most."""
    widest = heapq.nlargest(
        most - 1, range(1, len(timed)), key=lambda k: timed[k][0] - timed[k - 1][0]
    )
    cuts = sorted(k for k in widest if timed[k][0] - timed[k - 1][0] > gap)
    bounds = [0, *cuts, len(timed)]
    return [timed[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    return (items[start : start + size] for start in range(0, len(items), size))


def quoted(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def local_lake(pipeline: dlt.Pipeline) -> Path | None:
    """The folder of a Parquet lake on this machine; None for a bucket or another destination."""
    if pipeline.destination.destination_name != "filesystem":
        return None
    url = str(pipeline.destination_client().config.bucket_url)
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        return None
    return Path(parts.path if parts.scheme else url)


def location(pipeline: dlt.Pipeline) -> str:
    """Where the data of `pipeline` lands, in words: the DuckDB file, the lake folder, or the
    warehouse and its dataset."""
    name, dataset = pipeline.destination.destination_name, pipeline.dataset_name
    config = pipeline.destination_client().config
    if name == "duckdb":
        return f"{config.credentials.database} (DuckDB), schema {dataset}"
    if name == "filesystem":
        folder = local_lake(pipeline)
        views = f"views in {folder / 'lake.duckdb'}" if folder else "`meta-inbox lake-views`"
        return f"{config.bucket_url}/{dataset} (Parquet; read it through the {views})"
    return f"{name} dataset {dataset}"


class _DestinationSwitch(logging.Filter):
    """dlt warns, as a pipeline is made, that the destination its state names differs "and will
    be ignored": `claim_location` refuses that run with a line of its own (exit 2)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "in state differs from destination" not in record.getMessage()


logging.getLogger("dlt").addFilter(_DestinationSwitch())
