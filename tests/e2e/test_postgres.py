"""End to end into a real PostgreSQL server: exact rows, incremental runs, state restored on a
fresh runner, and metric views that hold the same values as DuckDB's."""

from __future__ import annotations

import shutil
from contextlib import closing
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg2

from conftest import Workspace
from meta_inbox.emulator import Emulator
from meta_inbox.metrics import METRIC_VIEWS
from model import TABLE_NAMES, detailed_messages, expected_counts, selected

SCHEMA = "inbox"
POSTGRES = {"destination": "postgres"}


def test_postgres_load_is_exact_and_incremental(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    # A reaction on the newest thread, taken back before the second run (which reads it again).
    newest = max(
        (c for c in selected(emulator.inbox) if c.platform == "messenger"),
        key=lambda c: c.updated_time,
    )
    reacted = newest.messages[-1].id
    emulator.react(reacted, "🔥")
    first = workspace.run("--destination", "postgres")

    assert first.code == 0, first.output
    assert counts(postgres_dsn) == expected_counts(selected(emulator.inbox))
    assert (
        timestamp_types(postgres_dsn)
        >= {
            ("conversations", "updated_time"): "timestamp with time zone",
            ("messages", "created_time"): "timestamp with time zone",
            ("_meta_inbox_runs", "started_at"): "timestamp with time zone",
        }.items()
    )
    # Staging tables of their own: per-Page pipelines loading one dataset do not share them.
    assert schemas(postgres_dsn) >= {SCHEMA, f"{SCHEMA}_staging_meta_inbox"}

    detailed = detailed_messages(emulator.inbox.conversations)
    activity = emulator.add_activity(seed=1)
    emulator.unreact(reacted)
    second = workspace.export(**POSTGRES)

    assert second.exit_code == 0, second.problems
    assert counts(postgres_dsn) == expected_counts(selected(emulator.inbox), detailed)
    assert query(
        postgres_dsn,
        f"select count(*) from {SCHEMA}.message_reactions where message_id = %s",
        (reacted,),
    ) == [(0,)]
    assert query(
        postgres_dsn,
        f"select folder from {SCHEMA}.conversations where id = %s",
        (activity.reopened_conversation_id,),
    ) == [("inbox",)]
    for table in ("conversations", "messages"):
        assert query(
            postgres_dsn, f"select count(*) - count(distinct id) from {SCHEMA}.{table}"
        ) == [(0,)]
    # The second run merged stored messages again: its stale children were looked up with
    # statistics that know its load (without, PostgreSQL planned a nested loop: see
    # `drop_stale_children`).
    ((load,),) = query(postgres_dsn, f"select max(_dlt_load_id) from {SCHEMA}.messages")
    for table in ("conversations", "messages"):
        assert query(
            postgres_dsn,
            "select most_common_vals::text like %s from pg_stats "
            "where schemaname = %s and tablename = %s and attname = '_dlt_load_id'",
            (f"%{load}%", SCHEMA, table),
        ) == [(True,)], table


def test_fresh_runner_restores_state_from_postgres(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    """What a scheduled CI job relies on: no local pipeline folder, still an incremental run."""
    assert workspace.export(**POSTGRES).exit_code == 0
    detailed = detailed_messages(emulator.inbox.conversations)
    emulator.add_activity(seed=1)
    shutil.rmtree(workspace.data_dir)
    emulator.reset_calls()

    result = workspace.export(**POSTGRES)

    assert result.exit_code == 0, result.problems
    assert counts(postgres_dsn) == expected_counts(selected(emulator.inbox), detailed)
    # Incremental: one follow-up (the thread with more new messages than a page), not a backfill.
    assert sum(c.path.endswith("/messages") for c in emulator.calls) == 1


def test_metric_views_hold_the_same_values_as_duckdb(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    """Same SQL, same inbox, same history: Postgres's views equal DuckDB's, whose values
    tests/e2e/test_metrics.py checks against the emulator's model."""
    assert workspace.export(**POSTGRES, pipeline_name="pg").exit_code == 0
    assert workspace.export().exit_code == 0
    emulator.add_activity(seed=1)
    assert workspace.export(**POSTGRES, pipeline_name="pg").exit_code == 0
    assert workspace.export().exit_code == 0

    for view in METRIC_VIEWS:
        columns = ", ".join(c.name for c in view.columns)
        in_postgres = query(postgres_dsn, f"select {columns} from {SCHEMA}.{view.name}")
        in_duckdb = workspace.query(f"select {columns} from {view.name}")
        assert len(in_postgres) == len(in_duckdb) > 0, view.name
        assert _comparable(in_postgres) == _comparable(in_duckdb), view.name


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


def schemas(dsn: str) -> set[str]:
    return {row[0] for row in query(dsn, "select schema_name from information_schema.schemata")}


def timestamp_types(dsn: str) -> Any:
    """Every timestamp column of the loaded tables (dlt's own and views left out), with its type."""
    rows = query(
        dsn,
        "select c.table_name, c.column_name, c.data_type from information_schema.columns c "
        "join information_schema.tables t using (table_schema, table_name) "
        "where c.table_schema = %s and c.data_type like 'timestamp%%' "
        "and t.table_type = 'BASE TABLE' and c.table_name not like '\\_dlt%%'",
        (SCHEMA,),
    )
    return {(table, column): data_type for table, column, data_type in rows}.items()
