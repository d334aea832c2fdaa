"""Shared fixtures: the emulator over real HTTP, and a workspace where exports run (in process
through `meta_inbox.export`, or as the real CLI in a subprocess) into real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from meta_inbox import ExportResult, Settings, export
from meta_inbox.emulator import Emulator
from model import TABLE_NAMES

# The fast tier's shared helpers are imported by name before pytest would rewrite them.
pytest.register_assert_rewrite("support")

# Retries and throttle waits shrunk so that faults cost milliseconds; everything else default.
QUICK = {"max_calls_per_second": 0.0, "retry_backoff": 0.02, "max_retry_delay": 0.1}


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=7, scale=1) as emu:
        yield emu


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def left_packages(data_dir: Path, pipeline_name: str = "meta_inbox") -> list[str]:
    """The files of dlt's load packages in a pipeline folder: what it loaded, and what it has
    yet to."""
    load = data_dir / "pipelines" / pipeline_name / "load"
    return sorted(
        str(p.relative_to(load)) for p in load.rglob("*") if p.is_file() and p.name != ".version"
    )


class Workspace:
    """A folder where exports run: the working folder (DuckDB files, lakes) and dlt's pipeline
    folder (DLT_DATA_DIR), both inside the test's temporary folder."""

    def __init__(self, root: Path, emulator: Emulator) -> None:
        self.root = root
        self.emulator = emulator
        self.data_dir = root / "dlt"
        self.outputs: list[str] = []

    def database(self, pipeline_name: str = "meta_inbox") -> Path:
        return self.root / f"{pipeline_name}.duckdb"

    def settings(self, token: str | None = None, **values: Any) -> Settings:
        return Settings.from_config(
            access_token=token or self.emulator.user_token,
            base_url=self.emulator.base_url,
            instagram_base_url=self.emulator.instagram_base_url,
            **(QUICK | values),
        )

    def export(self, token: str | None = None, **options: Any) -> ExportResult:
        """`meta_inbox.export` in process; `options` are export's, the rest are settings."""
        keys = {
            "pipeline_name",
            "destination",
            "dataset_name",
            "full_refresh",
            "reconcile",
            "views",
        }
        run = {key: options.pop(key) for key in list(options) if key in keys}
        previous, data_dir = Path.cwd(), os.environ.get("DLT_DATA_DIR")
        os.chdir(self.root)
        os.environ["DLT_DATA_DIR"] = str(self.data_dir)
        try:
            return export(self.settings(token, **options), **run)
        finally:
            os.chdir(previous)
            if data_dir is None:
                os.environ.pop("DLT_DATA_DIR")
            else:
                os.environ["DLT_DATA_DIR"] = data_dir

    def run(self, *args: str, token: str | None = None, **config: str) -> CliResult:
        """`meta-inbox run ARGS` in a subprocess; `config` keys become SOURCES__META_INBOX__*."""
        done = self.cli("run", *args, env=self.env(token, config))
        self.outputs.append(done.stdout + done.stderr)
        return CliResult(done.returncode, done.stdout, done.stderr)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`meta-inbox ARGS` in a subprocess, in the working folder (default: `env()`)."""
        return self._finished(self.command(*args), env)

    def program(self, prelude: str, *args: str) -> subprocess.CompletedProcess:
        """`meta-inbox ARGS` as its script starts it, after `prelude`: Python run first in the
        same process (to watch it, or to make it behave as an older meta-inbox did)."""
        started = f"{prelude}\nfrom meta_inbox.program import entry; entry()"
        return self._finished([sys.executable, "-c", started, *args])

    def _finished(
        self, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=self.root,
            env=self.env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(
        self, *args: str, token: str | None = None, stderr: Any = subprocess.PIPE, **config: str
    ) -> subprocess.Popen[str]:
        """Start `meta-inbox ARGS` in the background (to signal it, kill it or race it)."""
        return subprocess.Popen(
            self.command(*args),
            cwd=self.root,
            env=self.env(token, config),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    @staticmethod
    def command(*args: str) -> list[str]:
        return [sys.executable, "-m", "meta_inbox", *args]

    def env(self, token: str | None = None, config: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "DLT_DATA_DIR": str(self.data_dir),
            "SOURCES__META_INBOX__ACCESS_TOKEN": token or self.emulator.user_token,
            "SOURCES__META_INBOX__BASE_URL": self.emulator.base_url,
            "SOURCES__META_INBOX__INSTAGRAM_BASE_URL": self.emulator.instagram_base_url,
        }
        env |= {f"SOURCES__META_INBOX__{key.upper()}": str(value) for key, value in QUICK.items()}
        return env | {f"SOURCES__META_INBOX__{k.upper()}": v for k, v in (config or {}).items()}

    def query(self, sql: str, pipeline_name: str = "meta_inbox") -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.database(pipeline_name)), read_only=True) as connection:
            connection.execute("set schema = 'inbox'")
            return connection.execute(sql).fetchall()

    def relations(self, kind: str = "BASE TABLE", pipeline_name: str = "meta_inbox") -> set[str]:
        """Tables (or `kind="VIEW"`) of the `inbox` dataset; none before any load."""
        if not self.database(pipeline_name).exists():
            return set()
        rows = self.query(
            "select table_name from information_schema.tables "
            f"where table_schema = 'inbox' and table_type = '{kind}'",
            pipeline_name,
        )
        return {row[0] for row in rows}

    def data_tables(self) -> set[str]:
        return self.relations() & set(TABLE_NAMES)

    def counts(self, pipeline_name: str = "meta_inbox") -> dict[str, int]:
        return {
            name: self.query(f"select count(*) from {name}", pipeline_name)[0][0]
            for name in TABLE_NAMES
        }

    def state(self, pipeline_name: str = "meta_inbox") -> dict[str, Any]:
        """The source's incremental state in the local pipeline folder."""
        path = self.data_dir / "pipelines" / pipeline_name / "state.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text()).get("sources", {}).get("meta_inbox", {})

    def runs(self, pipeline_name: str = "meta_inbox") -> list[dict[str, Any]]:
        """`_meta_inbox_runs`, oldest first."""
        with duckdb.connect(str(self.database(pipeline_name)), read_only=True) as connection:
            result = connection.execute("select * from inbox._meta_inbox_runs order by started_at")
            names = [d[0] for d in result.description]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def duplicate_ids(self, pipeline_name: str = "meta_inbox") -> dict[str, int]:
        """Rows beyond one per key, in every table with a primary key."""
        keys = {
            "conversations": "id",
            "messages": "id",
            "conversation_participants": "conversation_id, participant_id",
            "message_attachments": "message_id, position",
            "message_reactions": "message_id, position",
            "message_tags": "message_id, tag",
        }
        return {
            table: self.query(
                f"select count(*) - count(distinct ({key})) from {table}", pipeline_name
            )[0][0]
            for table, key in keys.items()
        }


@pytest.fixture
def workspace(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    return Workspace(tmp_path, emulator)


NO_DUPLICATES = dict.fromkeys(
    (
        "conversations",
        "messages",
        "conversation_participants",
        "message_attachments",
        "message_reactions",
        "message_tags",
    ),
    0,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the session. A failure, not a skip, without one: CI
    has PostgreSQL, and a silently skipped load test proves nothing."""
    from postgres_server import PostgresUnavailable, running_postgres

    try:
        with running_postgres() as server:
            yield server
            return
    except PostgresUnavailable as error:
        problem = str(error)
    # Outside the except block, so the report shows the one reason and no chained traceback.
    pytest.fail(f"no PostgreSQL server for the tests: {problem}", pytrace=False)


@pytest.fixture
def postgres_dsn(postgres_server: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty database, handed to exports through dlt's environment configuration."""
    dsn = postgres_server.recreate_database()
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", dsn)
    return dsn


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll until `condition` holds: a precondition of the test, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def sessions_waiting_on_locks(dsn: str) -> int:
    """Sessions of the test database that wait on a lock (a load held by the test)."""
    import psycopg2

    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from pg_stat_activity "
            "where datname = current_database() and wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def postgres_rows(dsn: str, table: str) -> int:
    """Rows of `inbox.<table>` in the test database; 0 before the table exists."""
    import psycopg2

    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = 'inbox' and table_name = %s",
            (table,),
        )
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(f"select count(*) from inbox.{table}")
        return int(cursor.fetchone()[0])
