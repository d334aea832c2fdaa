"""Run records: one row per `meta-inbox run` in `_meta_inbox_runs`, for operators and monitoring.

The rows live in a dlt schema of their own, so that `--full-refresh` (which drops the source's
tables) keeps the history of runs.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dlt

from .source import RunReport
from .tables import TABLES, Column, Table

log = logging.getLogger("meta_inbox")

RUNS = Table(
    name="_meta_inbox_runs",
    description="One row per `meta-inbox run`, whatever its outcome, appended after the run.",
    columns=(
        Column("run_id", "text", "Unique id of the run.", nullable=False),
        Column("pipeline_name", "text", "The dlt pipeline (`--pipeline-name`)."),
        Column("started_at", "timestamp", "When the run started (UTC).", nullable=False),
        Column("finished_at", "timestamp", "When it ended (UTC).", nullable=False),
        Column(
            "status",
            "text",
            "`success`, `partial` (some Pages failed), `stopped` (throttle ceiling or Graph "
            "unavailable: what was read is loaded) or `failed` (nothing loaded).",
            nullable=False,
        ),
        Column("exit_code", "bigint", "The CLI's exit code (README, When things go wrong)."),
        Column("error", "text", "The line printed for each problem, if any."),
        Column("pages", "json", "Ids of the Pages read."),
        Column("api_calls", "bigint", "Graph API calls made, retries included."),
        Column("retries", "bigint", "Calls retried after a transient fault."),
        Column("throttled", "bigint", "Throttle errors waited out."),
        Column("throttle_wait_seconds", "double", "Time spent waiting on throttling."),
        Column("changed_threads", "bigint", "Threads loaded because they changed."),
        Column("new_messages", "bigint", "Messages loaded."),
        Column("messages_without_details", "bigint", "Of those, messages Instagram withheld."),
        Column("rows", "json", "Rows loaded per table."),
        Column("meta_inbox_version", "text", "The meta-inbox version that ran."),
    ),
)


@dataclass
class RunRecord:
    pipeline_name: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def finish(
        self, report: RunReport, rows: dict[str, int], exit_code: int, errors: list[str]
    ) -> dict[str, Any]:
        """The row for this run, from what the run reported."""
        stats = report.stats
        return {
            "run_id": self.run_id,
            "pipeline_name": self.pipeline_name,
            "started_at": self.started_at,
            "finished_at": datetime.now(UTC),
            "status": _status(report, rows, exit_code),
            "exit_code": exit_code,
            "error": "\n".join(errors) or None,
            "pages": list(report.pages),
            "api_calls": stats.calls,
            "retries": stats.retries,
            "throttled": stats.throttled,
            "throttle_wait_seconds": round(stats.throttle_wait, 3),
            "changed_threads": report.changed_threads,
            "new_messages": report.new_messages,
            "messages_without_details": report.messages_without_details,
            "rows": {table.name: rows.get(table.name, 0) for table in TABLES},
            "meta_inbox_version": _version(),
        }


def loaded_rows(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Rows per table that the pipeline's last run normalised (empty when nothing was)."""
    trace = pipeline.last_trace
    normalized = trace.last_normalize_info if trace else None
    return dict(normalized.row_counts) if normalized else {}


def append_run(pipeline: dlt.Pipeline, record: dict[str, Any]) -> None:
    """Append the record to `_meta_inbox_runs`. A destination that fails here is logged only:
    the run's own outcome has been decided and printed already."""
    try:
        pipeline.run(
            [record],
            table_name=RUNS.name,
            write_disposition="append",
            columns=RUNS.dlt_columns(),
            schema=dlt.Schema("meta_inbox_runs"),
        )
    except Exception as error:
        log.warning("could not record the run in %s: %s", RUNS.name, error)


def _status(report: RunReport, rows: dict[str, int], exit_code: int) -> str:
    if exit_code == 0:
        return "success"
    if report.stopped_by is not None and rows:
        return "stopped"
    if report.page_failures and rows:
        return "partial"
    return "failed"


def _version() -> str:
    try:
        return version("meta-inbox")
    except PackageNotFoundError:
        return "unknown"
