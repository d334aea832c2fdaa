"""A throwaway PostgreSQL server for the tests and the benchmarks: its own data folder, port and
socket, gone after.

PostgreSQL refuses to run as root, so when the tests run as root (CI containers) the server
commands run as the `postgres` system user, in a temporary folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# Durability only costs time for data thrown away after the tests.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
PORT_ATTEMPTS = 5


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing, or the server would not start."""


@dataclass(frozen=True)
class PostgresServer:
    port: int
    database: str

    @property
    def dsn(self) -> str:
        # dlt requires a password in Postgres credentials; trust authentication ignores it.
        return f"postgresql://postgres:postgres@127.0.0.1:{self.port}/{self.database}"

    def recreate_database(self) -> str:
        """Drop and create the database, so a test starts with no tables and no dlt state."""
        with _admin_cursor(self.port) as cursor:
            cursor.execute(f'drop database if exists "{self.database}" with (force)')
            cursor.execute(f'create database "{self.database}"')
        return self.dsn


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int

    def subprocess_args(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@contextmanager
def running_postgres(database: str = "meta_inbox") -> Iterator[PostgresServer]:
    """A fresh cluster with `database` created; stopped and deleted on exit, even on errors."""
    bin_dir = find_bin_dir()
    account = _server_account()
    root = Path(tempfile.mkdtemp(prefix="meta-inbox-pg-"))
    try:
        if account:
            os.chown(root, account.uid, account.gid)
        _initdb(bin_dir, root, account)
        process, port = _start(bin_dir, root, account)
        try:
            server = PostgresServer(port, database)
            server.recreate_database()
            yield server
        finally:
            _stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def find_bin_dir() -> Path:
    """The folder holding `initdb` and `postgres`: from PATH, else the newest Debian install."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        # PATH often holds symlinks; `postgres` must come from the same install as `initdb`.
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) are not on PATH nor in "
        "/usr/lib/postgresql/*/bin: install PostgreSQL 15 (e.g. apt-get install postgresql-15)."
    )


def _major(bin_dir: Path) -> int:
    version = bin_dir.parent.name
    return int(version) if version.isdigit() else 0


def _server_account() -> _Account | None:
    """The user to run the server as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no `postgres` user to run PostgreSQL as "
            "(it refuses to run as root)."
        ) from None
    return _Account(entry.pw_uid, entry.pw_gid)


def _initdb(bin_dir: Path, root: Path, account: _Account | None) -> None:
    done = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "--pgdata",
            str(root / "data"),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        **(account.subprocess_args() if account else {}),
    )
    if done.returncode != 0:
        raise PostgresUnavailable(f"initdb failed ({done.returncode}):\n{done.stderr}")


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(
    bin_dir: Path, root: Path, account: _Account | None
) -> tuple[subprocess.Popen[bytes], int]:
    """The server, listening on a port that was free. Another process (the other test worker
    starting its own server, say) can take the port between the probe and the server's bind:
    the server then stops at once, and another port is tried."""
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        process = _postmaster(bin_dir, root, port, account)
        try:
            _wait_until_ready(process, root, port)
            return process, port
        except _PortTaken:
            _stop(process)
    raise PostgresUnavailable(f"postgres found no free port in {PORT_ATTEMPTS} tries")


class _PortTaken(Exception):
    pass


def _postmaster(
    bin_dir: Path, root: Path, port: int, account: _Account | None
) -> subprocess.Popen[bytes]:
    settings = (
        "listen_addresses=127.0.0.1",
        f"port={port}",
        f"unix_socket_directories={root}",
        *FAST_SETTINGS,
    )
    with (root / "server.log").open("wb") as log_file:
        return subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(root / "data")]
            + [arg for setting in settings for arg in ("-c", setting)],
            cwd=root,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for pytest must not stop it before the teardown.
            start_new_session=True,
            **(account.subprocess_args() if account else {}),
        )


def _wait_until_ready(process: subprocess.Popen[bytes], root: Path, port: int) -> None:
    """Asked through its own socket folder, so that a server of another cluster that holds the
    port cannot answer for it."""
    log = root / "server.log"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            # The cluster runs in the C locale (initdb --no-locale): its messages are English.
            if "could not bind" in log.read_text(errors="replace"):
                raise _PortTaken
            raise PostgresUnavailable(f"postgres exited with {process.returncode}:\n{_tail(log)}")
        try:
            with _admin_cursor(port, host=str(root)) as cursor:
                cursor.execute("select 1")
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"postgres not ready after {START_TIMEOUT:.0f} s ({error}):\n{_tail(log)}"
                ) from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT), or immediate shutdown (SIGQUIT) if that hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGQUIT)
        process.wait(STOP_TIMEOUT)


@contextmanager
def _admin_cursor(port: int, host: str = "127.0.0.1") -> Iterator[Any]:
    # Autocommit: CREATE and DROP DATABASE cannot run inside a transaction.
    connection = psycopg2.connect(
        host=host, port=port, user="postgres", dbname="postgres", connect_timeout=2
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
