"""End to end into a real PostgreSQL server: the real CLI, exact counts, incremental runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg2
import pytest

from conftest import TABLE_NAMES, Workspace, detailed_messages, expected_counts, selected
from meta_inbox.emulator import Emulator
from meta_inbox.metrics import METRIC_VIEWS as VIEW_DEFINITIONS
from postgres_server import PostgresServer, PostgresUnavailable, running_postgres

SCHEMA = "meta_inbox"
METRIC_VIEWS = ("conversation_metrics", "daily_volume", "response_times")
VIEWS = {view.name: view for view in VIEW_DEFINITIONS}


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    # A failure, not a skip: CI has PostgreSQL, and a silently skipped load test proves nothing.
    try:
        with running_postgres() as server:
            yield server
            return
    except PostgresUnavailable as error:
        problem = str(error)
    # Outside the except block, so the report shows the one reason and no chained traceback.
    pytest.fail(f"no PostgreSQL server for the tests: {problem}", pytrace=False)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty `meta_inbox` database, handed to the CLI through dlt's environment config."""
    dsn = postgres_server.recreate_database()
    # Workspace.run copies os.environ into the CLI's environment.
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", dsn)
    return dsn


def test_postgres_load_is_exact_and_incremental(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    first = workspace.run("--destination", "postgres")

    assert first.code == 0, first.output
    assert counts(postgres_dsn) == expected_counts(selected(emulator.inbox))
    assert timestamp_types(postgres_dsn) == {
        ("conversations", "updated_time"): "timestamp with time zone",
        ("messages", "created_time"): "timestamp with time zone",
        ("_meta_inbox_runs", "started_at"): "timestamp with time zone",
        ("_meta_inbox_runs", "finished_at"): "timestamp with time zone",
    }

    detailed = detailed_messages(emulator.inbox.conversations)
    activity = emulator.add_activity(seed=1)
    second = workspace.run("--destination", "postgres")

    assert second.code == 0, second.output
    assert counts(postgres_dsn) == expected_counts(selected(emulator.inbox), detailed)
    assert messages_of_last_load(postgres_dsn) == activity.new_message_ids
    assert query(
        postgres_dsn,
        f"select folder from {SCHEMA}.conversations where id = %s",
        (activity.reopened_conversation_id,),
    ) == [("inbox",)]
    for table in ("conversations", "messages"):
        assert query(
            postgres_dsn, f"select count(*) - count(distinct id) from {SCHEMA}.{table}"
        ) == [(0,)]


def test_fresh_runner_restores_state_from_postgres(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    """What a scheduled CI job relies on: no local pipeline folder, still an incremental run."""
    assert workspace.run("--destination", "postgres").code == 0
    detailed = detailed_messages(emulator.inbox.conversations)
    activity = emulator.add_activity(seed=1)
    shutil.rmtree(workspace.data_dir)

    result = workspace.run("--destination", "postgres")

    assert result.code == 0, result.output
    assert messages_of_last_load(postgres_dsn) == activity.new_message_ids
    assert counts(postgres_dsn) == expected_counts(selected(emulator.inbox), detailed)


def test_metric_views_exist_in_postgres(workspace: Workspace, postgres_dsn: str) -> None:
    """The CLI creates the metric views after each load (meta_inbox.metrics.create_metric_views)."""
    result = workspace.run("--destination", "postgres")

    assert result.code == 0, result.output
    views = {
        row[0]
        for row in query(
            postgres_dsn,
            "select table_name from information_schema.views where table_schema = %s",
            (SCHEMA,),
        )
    }
    assert set(METRIC_VIEWS) <= views, f"missing views: {sorted(set(METRIC_VIEWS) - views)}"
    for view in METRIC_VIEWS:
        assert query(postgres_dsn, f"select count(*) from {SCHEMA}.{view}")[0][0] > 0, view


def test_metric_views_hold_the_same_values_as_duckdb(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    """Same SQL, same inbox, same history: Postgres's views equal DuckDB's, whose values
    tests/test_metrics.py checks against the emulator's model."""
    assert workspace.run("--destination", "postgres", "--pipeline-name", "pg").code == 0
    assert workspace.run().code == 0
    emulator.add_activity(seed=1)
    assert workspace.run("--destination", "postgres", "--pipeline-name", "pg").code == 0
    assert workspace.run().code == 0

    for view in METRIC_VIEWS:
        columns = ", ".join(c.name for c in VIEWS[view].columns)
        in_postgres = query(postgres_dsn, f"select {columns} from {SCHEMA}.{view}")
        in_duckdb = workspace.query(f"select {columns} from {view}")
        assert len(in_postgres) == len(in_duckdb) > 0, view
        assert _comparable(in_postgres) == _comparable(in_duckdb), view


def _comparable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows in one order, with values both engines' drivers return alike."""

    def value(item: Any) -> Any:
        if isinstance(item, datetime):
            return item.timestamp()
        if isinstance(item, date):
            return item.isoformat()
        if isinstance(item, float | Decimal):
            return round(float(item), 6)
        return item

    converted = [tuple(value(item) for item in row) for row in rows]
    return sorted(converted, key=lambda row: tuple((v is None, str(v)) for v in row))


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    # A psycopg2 connection's `with` ends the transaction only; closing() closes it.
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def counts(dsn: str) -> dict[str, int]:
    return {name: query(dsn, f"select count(*) from {SCHEMA}.{name}")[0][0] for name in TABLE_NAMES}


def timestamp_types(dsn: str) -> dict[tuple[str, str], str]:
    """Every timestamp column of the loaded tables (dlt's own and views left out), with its type."""
    rows = query(
        dsn,
        "select c.table_name, c.column_name, c.data_type from information_schema.columns c "
        "join information_schema.tables t using (table_schema, table_name) "
        "where c.table_schema = %s and c.data_type like 'timestamp%%' "
        "and t.table_type = 'BASE TABLE' and c.table_name not like '\\_dlt%%'",
        (SCHEMA,),
    )
    return {(table, column): data_type for table, column, data_type in rows}


def messages_of_last_load(dsn: str) -> set[str]:
    rows = query(
        dsn,
        f"select id from {SCHEMA}.messages "
        f"where _dlt_load_id = (select max(_dlt_load_id) from {SCHEMA}.messages)",
    )
    return {row[0] for row in rows}
