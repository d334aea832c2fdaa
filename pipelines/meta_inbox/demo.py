"""`meta-inbox demo`: export the bundled emulator's inbox twice into a local DuckDB file."""

from __future__ import annotations

from pathlib import Path

import dlt
import duckdb

from .cli import export
from .conversations_api import FOLDERS, PLATFORMS
from .emulator import Emulator
from .source import RunReport, meta_inbox

DEMO_DATABASE = "meta_inbox_demo.duckdb"
DEMO_PIPELINE = "meta_inbox_demo"

EXAMPLE_QUERIES = {
    "Threads per platform and folder": """
        select platform, folder, count(*) as threads
        from meta_inbox.conversations group by all order by all""",
    "Messages by side (Instagram hides the sender of messages older than the newest 20)": """
        select platform,
               case when not details_available then 'unknown (no details)'
                    when is_from_page then 'page' else 'customer' end as side,
               count(*) as messages
        from meta_inbox.messages group by all order by all""",
    "Busiest threads": """
        select c.id, c.platform, c.folder, count(*) as messages,
               max(m.created_time) as last_message
        from meta_inbox.conversations c join meta_inbox.messages m on m.conversation_id = c.id
        group by all order by messages desc, c.id limit 5""",
    "How fast the Page answers (metric view response_times)": """
        select platform, count(*) as answered_messages,
               round(median(response_seconds) / 60, 1) as median_minutes,
               round(quantile_cont(response_seconds, 0.9) / 3600, 1) as p90_hours
        from meta_inbox.response_times group by all order by all""",
    "Threads waiting for an answer (metric view conversation_metrics)": """
        select platform, folder, count(*) as open_threads
        from meta_inbox.conversation_metrics where is_open group by all order by all""",
    "Most used reactions": """
        select reaction, count(*) as reactions
        from meta_inbox.message_reactions group by all order by reactions desc, reaction limit 5""",
}


def run_demo(*, seed: int, scale: int, report: RunReport) -> int:
    database = Path(DEMO_DATABASE).resolve()
    pipeline = dlt.pipeline(
        pipeline_name=DEMO_PIPELINE,
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="meta_inbox",
    )
    with Emulator(seed=seed, scale=scale) as emulator:
        print(f"Graph API emulator serving a generated inbox at {emulator.base_url}\n")
        print("== First run: every Page, both platforms, all folders ==")
        export(pipeline, _source(emulator, report), report, full_refresh=True)

        activity = emulator.add_activity(seed=seed)
        print(
            f"\n== New activity: {len(activity.new_message_ids)} messages in "
            f"{len(activity.changed_conversation_ids)} threads, one archived thread reopened =="
        )
        print("== Second run: only what changed ==")
        second = RunReport(redactor=report.redactor)
        export(pipeline, _source(emulator, second), second, full_refresh=False)

    _print_examples(database)
    print(f"\nThe data is in {database}. Open it with: duckdb {database.name}")
    return 0


def _source(emulator: Emulator, report: RunReport) -> dlt.sources.DltSource:
    # Explicit arguments, so that a user's own .dlt config cannot point the demo elsewhere.
    return meta_inbox(
        access_token=emulator.user_token,
        base_url=emulator.base_url,
        page_ids=[],
        platforms=list(PLATFORMS),
        folders=list(FOLDERS),
        max_calls_per_second=100.0,
        report=report,
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
