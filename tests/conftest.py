"""Shared fixtures: the emulator over real HTTP, the real CLI in a subprocess, and ground truth
counted from the emulator's own model (never from the code under test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from meta_inbox.emulator import Emulator
from meta_inbox.emulator.inbox import Conversation, Inbox

TABLE_NAMES = (
    "conversations",
    "conversation_participants",
    "messages",
    "message_attachments",
    "message_reactions",
    "message_recipients",
    "message_tags",
    "message_shares",
)


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


class Workspace:
    """A folder where the CLI runs: its DuckDB file, and dlt's pipeline folder (DLT_DATA_DIR)."""

    def __init__(self, root: Path, emulator: Emulator) -> None:
        self.root = root
        self.emulator = emulator
        self.data_dir = root / "dlt"
        self.outputs: list[str] = []

    @property
    def database(self) -> Path:
        return self.root / "meta_inbox_data.duckdb"

    def run(self, *args: str, token: str | None = None, **config: str) -> CliResult:
        """Run `meta-inbox run ARGS` to the end; `config` keys become SOURCES__META_INBOX__*."""
        done = subprocess.run(
            self._command(args),
            cwd=self.root,
            env=self._env(token, config),
            capture_output=True,
            text=True,
            timeout=float(os.environ.get("CLI_TIMEOUT", "300")),
        )
        self.outputs.append(done.stdout + done.stderr)
        return CliResult(done.returncode, done.stdout, done.stderr)

    def start(
        self, *args: str, token: str | None = None, stderr: Any = subprocess.PIPE, **config: str
    ) -> subprocess.Popen:
        """Start `meta-inbox run ARGS` in the background (to kill it, race it, or give it a
        terminal as `stderr`)."""
        return subprocess.Popen(
            self._command(args),
            cwd=self.root,
            env=self._env(token, config),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    @staticmethod
    def _command(args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "meta_inbox.cli", "run", *args]

    def _env(self, token: str | None, config: dict[str, str]) -> dict[str, str]:
        env = {
            **os.environ,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "DLT_DATA_DIR": str(self.data_dir),
            "SOURCES__META_INBOX__BASE_URL": self.emulator.base_url,
            "SOURCES__META_INBOX__MAX_CALLS_PER_SECOND": "0",
            "SOURCES__META_INBOX__RETRY_BACKOFF": "0.05",
        }
        env["SOURCES__META_INBOX__ACCESS_TOKEN"] = token or self.emulator.user_token
        return env | {f"SOURCES__META_INBOX__{key.upper()}": value for key, value in config.items()}

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.database), read_only=True) as connection:
            connection.execute("SET schema = 'meta_inbox'")
            return connection.execute(sql).fetchall()

    def tables(self, kind: str = "BASE TABLE") -> set[str]:
        """Tables (or `kind="VIEW"`) of the `meta_inbox` dataset; none before any load."""
        if not self.database.exists():
            return set()
        with duckdb.connect(str(self.database), read_only=True) as connection:
            rows = connection.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'meta_inbox' and table_type = ?",
                [kind],
            ).fetchall()
        return {row[0] for row in rows}

    def cursors(self) -> dict:
        """The incremental state (folder and thread cursors) of the local pipeline state."""
        path = self.data_dir / "pipelines" / "meta_inbox" / "state.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text()).get("sources", {}).get("meta_inbox", {})

    def data_tables(self) -> set[str]:
        """The exported tables that exist (dlt's own and the run records left out)."""
        return self.tables() & set(TABLE_NAMES)

    def runs(self) -> list[dict]:
        """`_meta_inbox_runs`, oldest first."""
        with duckdb.connect(str(self.database), read_only=True) as connection:
            result = connection.execute(
                "select * from meta_inbox._meta_inbox_runs order by started_at"
            )
            names = [d[0] for d in result.description]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def duplicate_ids(self) -> dict[str, int]:
        """Rows beyond one per id, in the two tables keyed by `id`."""
        return {
            table: self.query(f"select count(*) - count(distinct id) from {table}")[0][0]
            for table in ("conversations", "messages")
        }

    def counts(self) -> dict[str, int]:
        return {name: self.query(f"select count(*) from {name}")[0][0] for name in TABLE_NAMES}


@pytest.fixture
def workspace(tmp_path: Path, emulator: Emulator) -> Workspace:
    return Workspace(tmp_path, emulator)


def selected(inbox: Inbox, page_ids: Iterable[str] | None = None) -> list[Conversation]:
    wanted = set(page_ids) if page_ids else {page.id for page in inbox.pages}
    return [c for c in inbox.conversations if c.page_id in wanted]


def expected_counts(
    conversations: Iterable[Conversation], detailed_before: set[str] = frozenset()
) -> dict[str, int]:
    """Rows each table must hold for these threads, counted from the emulator's model.

    `detailed_before`: messages an earlier run loaded with details, which they keep after
    Instagram stops giving them (once older than the thread's newest 20).
    """
    counts = dict.fromkeys(TABLE_NAMES, 0)
    for conversation in conversations:
        people = {p.id for p in [*conversation.participants, *conversation.former_participants]}
        counts["conversations"] += 1
        counts["conversation_participants"] += len(people)
        counts["messages"] += len(conversation.messages)
        for message in conversation.messages:
            if not conversation.is_detailed(message) and message.id not in detailed_before:
                continue
            counts["message_attachments"] += len(message.attachments)
            counts["message_reactions"] += reaction_count(message.reactions)
            counts["message_recipients"] += len(message.recipients)
            counts["message_tags"] += len(message.tags)
            counts["message_shares"] += len(message.shares)
    return counts


def reaction_count(reactions: dict | None) -> int:
    if not reactions:
        return 0
    groups = reactions.get("data", [reactions])
    return sum(len(group["users"]) for group in groups)


def detailed_messages(conversations: Iterable[Conversation]) -> set[str]:
    return {
        message.id
        for conversation in conversations
        for message in conversation.messages
        if conversation.is_detailed(message)
    }


def hidden_messages(conversations: Iterable[Conversation]) -> set[str]:
    return {
        message.id
        for conversation in conversations
        for message in conversation.messages
        if not conversation.is_detailed(message)
    }
