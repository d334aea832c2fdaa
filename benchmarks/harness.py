"""What the benchmarks share: the environment of a `meta-inbox` process pointed at the emulator,
what one such process costs, and what a DuckDB export holds."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
from launcher import launched

from meta_inbox.emulator import Emulator

# The run's own data: CLI processes write <folder>/meta_inbox.duckdb and <folder>/dlt.
DATABASE = "meta_inbox.duckdb"


def cli_env(emulator: Emulator, folder: Path, **settings: object) -> dict[str, str]:
    """The environment of a `meta-inbox` process reading the emulator, its dlt folder inside
    `folder`; `settings` become SOURCES__META_INBOX__<KEY>."""
    return {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(folder / "dlt"),
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
    } | {f"SOURCES__META_INBOX__{key.upper()}": str(value) for key, value in settings.items()}


_STORED = "select count(*), count(*) - count(distinct id) from inbox.messages"


def stored_messages(folder: Path, postgres_dsn: str | None = None) -> tuple[int, int]:
    """Messages in the export (the DuckDB file in `folder`, or the PostgreSQL database), and
    how many of them repeat an id."""
    if postgres_dsn:
        import psycopg2

        with closing(psycopg2.connect(postgres_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute(_STORED)
            total, duplicates = cursor.fetchone()
    else:
        with duckdb.connect(str(folder / DATABASE), read_only=True) as connection:
            total, duplicates = connection.execute(_STORED).fetchone()
    return int(total), int(duplicates)


@contextmanager
def postgres() -> Iterator[Callable[[], str]]:
    """A throwaway PostgreSQL server, the tests' (`tests/postgres_server.py`: its own folder
    and port, run as the `postgres` user when this runs as root), as a function that empties
    its database and gives its DSN. A database that held another export would give a new
    pipeline folder that export's state (dlt restores it from the destination)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from postgres_server import running_postgres

    with running_postgres() as server:
        yield server.recreate_database


@dataclass(frozen=True)
class Measured:
    """One process: its wall seconds, its own CPU seconds (user and system: on a shared machine,
    steadier than wall time), its own peak RSS in MB, and what it printed."""

    wall: float
    cpu: float
    peak_rss_mb: float
    peak_anonymous_mb: float  # of it, the process's own memory (sampled), not mapped files
    stdout: str
    stderr: str


def measured_run(command: list[str], folder: Path, env: dict[str, str]) -> Measured:
    """Run `command` in `folder` (see `launcher.py`); exit on a failure, with the end of what
    it printed."""
    run = launched(command, str(folder), env)
    if run["code"] != 0:
        raise SystemExit(f"exit code {run['code']}: {run['stderr'][-2000:]}")
    # dlt retries a load job that failed for a reason it counts as transient (DuckDB out of
    # memory among them): the run succeeds, and its figures include the retries.
    retried = run["stderr"].count("Transient exception")
    if retried:
        print(f"  ({retried} load job(s) retried after a transient error: see the run's log)")
    return Measured(
        run["wall"],
        run["cpu"],
        run["peak_rss_mb"],
        run["peak_anonymous_mb"],
        run["stdout"],
        run["stderr"],
    )
