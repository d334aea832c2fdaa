"""`meta-inbox demo`: export the bundled emulator's inbox twice into a local DuckDB file."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from .config import Settings
from .emulator import Emulator
from .pipeline import DEFAULT_DATASET_NAME, ExportResult, export, make_pipeline
from .tables import TABLES

DEMO_PIPELINE = "meta_inbox_demo"
DEMO_DATABASE = f"{DEMO_PIPELINE}.duckdb"  # meta-inbox's default file for the pipeline
# The demo's own pipelines folder, whatever DLT_DATA_DIR says: it never meets a user's pipelines.
DEMO_PIPELINES = Path(".dlt", "demo_pipelines")

EXAMPLE_QUERIES = {
    "Threads per platform and folder": """
        select platform, folder, count(*) as threads
        from inbox.conversations group by all order by all""",
    "Messages by side (Instagram hides the sender of messages older than the newest 20)": """
        select platform,
               case when not details_available then 'unknown (no details)'
                    when is_from_page then 'page' else 'customer' end as side,
               count(*) as messages
        from inbox.messages group by all order by all""",
    "Busiest threads": """
        select c.id, c.platform, c.folder, count(*) as messages,
               max(m.created_time) as last_message
        from inbox.conversations c join inbox.messages m on m.conversation_id = c.id
        group by all order by messages desc, c.id limit 5""",
    "How fast the Page answers (metric view response_times)": """
        select platform, count(*) as answered_messages,
               round(median(response_seconds) / 60, 1) as median_minutes,
               round(quantile_cont(response_seconds, 0.9) / 3600, 1) as p90_hours
        from inbox.response_times group by all order by all""",
    "Threads waiting for an answer (metric view conversation_metrics)": """
        select platform, folder, count(*) as open_threads
        from inbox.conversation_metrics where is_open group by all order by all""",
    "Attachments by type": """
        select type, count(*) as attachments
        from inbox.message_attachments group by all order by attachments desc, type""",
    "Most used reactions": """
        select reaction, count(*) as reactions
        from inbox.message_reactions group by all order by reactions desc, reaction limit 5""",
}


def run_demo(*, seed: int, scale: int) -> int:
    database = Path(DEMO_DATABASE).resolve()
    # Each demo starts over: a new database, so its first run is a first run.
    database.unlink(missing_ok=True)
    Path(f"{database}.wal").unlink(missing_ok=True)
    shutil.rmtree(DEMO_PIPELINES / DEMO_PIPELINE, ignore_errors=True)
    with Emulator(seed=seed, scale=scale) as emulator:
        print(
            f"A Graph API emulator serves a generated inbox at {emulator.base_url} for this "
            "demo only (`meta-inbox emulator` serves one for your own tests)\n"
        )
        # Explicit settings, so that a user's own .dlt config cannot point the demo elsewhere.
        settings = Settings.from_config(
            access_token=emulator.user_token,
            base_url=emulator.base_url,
            page_ids=[],
            max_calls_per_second=0.0,
        )
        pipeline = make_pipeline(
            pipeline_name=DEMO_PIPELINE, pipelines_dir=str(DEMO_PIPELINES.resolve())
        )
        print("== First run: every Page, both platforms, all folders ==")
        _summary(export(settings, pipeline=pipeline))

        activity = emulator.add_activity(seed=seed)
        print(
            f"\n== New activity: {len(activity.new_message_ids)} messages in "
            f"{len(activity.changed_conversation_ids)} threads, one archived thread reopened =="
        )
        print("== Second run: only what changed, and recent threads rechecked ==")
        _summary(export(settings, pipeline=pipeline))

    _print_examples(database)
    print(
        f"\nThe data is in {database}, schema {DEFAULT_DATASET_NAME}. Query it from Python:\n"
        f'  import duckdb; duckdb.connect("{DEMO_DATABASE}").sql("from inbox.messages").show()'
    )
    return 0


def _summary(result: ExportResult) -> None:
    counts = result.session.counts
    print(
        f"{counts.new_messages} new messages in {counts.threads_with_new_messages} threads; "
        f"{counts.rechecked_threads} threads rechecked, {counts.messages_merged_again} messages "
        f"merged again; {result.session.stats.calls} API calls"
    )
    print(
        "  " + ", ".join(f"{t.name} {counts.rows[t.name]}" for t in TABLES if counts.rows[t.name])
    )


def _print_examples(database: Path) -> None:
    with duckdb.connect(str(database), read_only=True) as connection:
        for title, sql in EXAMPLE_QUERIES.items():
            print(f"\n-- {title}\n{_dedent(sql)}")
            result = connection.sql(sql)
            print(_table(result.columns, result.fetchall()))


def _dedent(sql: str) -> str:
    lines = [line for line in sql.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in lines) + ";"


def _table(columns: list[str], records: list[tuple[object, ...]]) -> str:
    cells = [columns, *[[str(v) for v in record] for record in records]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
