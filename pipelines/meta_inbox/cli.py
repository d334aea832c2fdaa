"""The `meta-inbox` command: `run` an export, try the `demo`, or serve the `emulator`."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.destination import Destination

from .conversations_api import PLATFORMS
from .errors import BadInput, Busy, ExitCode, explain, innermost, missing_token
from .graph_client import redact_log_records
from .lake import create_latest_views
from .metrics import create_metric_views, drop_metric_views, metrics_markdown
from .runs import RunRecord, append_run, loaded_rows
from .source import RunReport, meta_inbox
from .tables import TABLES, schema_markdown

log = logging.getLogger("meta_inbox")

_PAGE_ID = re.compile(r"^\d{1,32}$")
DEFAULT_LAKE = "meta_inbox_lake"
_PARQUET_DESTINATIONS = ("filesystem", "duckdb", "motherduck")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    report = RunReport()
    _configure_logging(args.debug, report)
    try:
        return int(args.command(args, report))
    except BrokenPipeError:
        # `meta-inbox schema | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except KeyboardInterrupt:
        print(
            "meta-inbox: interrupted; the next run resumes where the data stands.", file=sys.stderr
        )
        return 130
    except Exception as error:
        return _fail(error, args.debug, report)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meta-inbox",
        description="Export Messenger and Instagram conversations of Facebook Pages.",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="export into a dlt destination (DuckDB by default)")
    run.add_argument("--destination", default="duckdb", help="dlt destination (default duckdb)")
    run.add_argument("--dataset-name", default="meta_inbox")
    run.add_argument("--pipeline-name", default="meta_inbox")
    run.add_argument("--page-id", action="append", dest="page_ids", metavar="ID")
    run.add_argument("--platform", action="append", dest="platforms", metavar="P")
    run.add_argument("--since", metavar="DATE", help="first-run lower bound, e.g. 2026-01-31")
    run.add_argument("--full-refresh", action="store_true", help="drop tables and state, reload")
    run.add_argument("--json", action="store_true", help="print the run record as JSON")
    run.set_defaults(command=_run)

    demo = sub.add_parser("demo", help="export the bundled emulator's inbox into a local DuckDB")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--scale", type=int, default=1)
    demo.set_defaults(command=_demo)

    schema = sub.add_parser("schema", help="print the tables and columns as Markdown")
    schema.set_defaults(command=_schema)

    lake = sub.add_parser(
        "lake-views", help="DuckDB views with the latest rows of a Parquet lake (filesystem)"
    )
    lake.add_argument("path", help="the lake folder: the filesystem bucket_url (a local path)")
    lake.add_argument("--dataset-name", default="meta_inbox")
    lake.add_argument("--database", default="meta_inbox_lake.duckdb", help="DuckDB file to write")
    lake.set_defaults(command=_lake_views)

    emulator = sub.add_parser("emulator", help="serve the Graph API emulator for your own tests")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--seed", type=int, default=7)
    emulator.add_argument("--scale", type=int, default=1)
    emulator.set_defaults(command=_emulator)

    for command in (run, demo, schema, lake, emulator):
        command.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    return parser


def _run(args: argparse.Namespace, report: RunReport) -> int:
    overrides = _validated_overrides(args)
    _check_destination(args.destination)
    try:
        source = meta_inbox(report=report, **overrides)
    except ConfigFieldMissingException as error:
        if "access_token" in str(error.fields):
            raise missing_token() from None
        raise
    pipeline = dlt.pipeline(
        pipeline_name=args.pipeline_name,
        destination=_destination(args.destination, args.pipeline_name, args.dataset_name),
        dataset_name=args.dataset_name,
    )
    record = RunRecord(args.pipeline_name)
    with _exclusive(Path(pipeline.working_dir), args.pipeline_name):
        try:
            code, problems = export(
                pipeline, source, report, full_refresh=args.full_refresh, summary=not args.json
            )
        except Exception as error:
            failure = explain(error)
            line = failure.line if failure else _innermost(error)
            code = failure.code if failure else ExitCode.UNEXPECTED
            _record(pipeline, record.finish(report, {}, code, [line]), args.json, report)
            raise
        row = record.finish(report, loaded_rows(pipeline), code, problems)
        _record(pipeline, row, args.json, report)
        return code


def _record(pipeline: Any, row: dict[str, Any], as_json: bool, report: RunReport) -> None:
    """Append the run to `_meta_inbox_runs`, and print it when asked for JSON."""
    append_run(pipeline, row)
    if as_json:
        print(report.redactor(json.dumps(row, default=_json_value, ensure_ascii=False)))


def _json_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


@contextmanager
def _exclusive(working_dir: Path, pipeline_name: str) -> Iterator[None]:
    """One run per pipeline at a time. The kernel drops the lock when a run dies, even killed."""
    working_dir.mkdir(parents=True, exist_ok=True)
    with open(working_dir / "meta_inbox.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"Another run of pipeline {pipeline_name!r} is in progress (it holds "
                f"{lock.name}): let it finish, or use another --pipeline-name."
            ) from None
        yield


def _destination(name: str, pipeline_name: str, dataset_name: str) -> Any:
    """The destination by name, with two defaults of our own where nothing is configured.

    A filesystem gets a local folder. A DuckDB file follows dlt's `<pipeline>.duckdb`, except
    when that stem equals the dataset name (as with the defaults): DuckDB then cannot tell the
    file's catalog from the dataset's schema and refuses `meta_inbox.messages` as ambiguous.
    """
    if name == "filesystem" and not _configured("destination.filesystem.bucket_url"):
        return dlt.destinations.filesystem(bucket_url=str(Path(DEFAULT_LAKE).resolve()))
    if name == "duckdb" and not _configured("destination.duckdb.credentials"):
        stem = pipeline_name if pipeline_name != dataset_name else f"{pipeline_name}_data"
        return dlt.destinations.duckdb(str(Path(f"{stem}.duckdb").resolve()))
    return name


def _configured(key: str) -> bool:
    return bool(dlt.config.get(key) or dlt.secrets.get(key))


def _validated_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI values that replace config, checked before anything reaches Graph."""
    overrides: dict[str, Any] = {}
    if args.page_ids:
        bad = [p for p in args.page_ids if not _PAGE_ID.match(p)]
        if bad:
            raise BadInput(f"--page-id {bad[0]!r} is not a Page id: Page ids are digits only.")
        overrides["page_ids"] = args.page_ids
    if args.platforms:
        platforms = [p.lower() for p in args.platforms]
        unknown = sorted(set(platforms) - set(PLATFORMS))
        if unknown:
            raise BadInput(f"--platform {unknown[0]!r} is unknown: use messenger or instagram.")
        overrides["platforms"] = platforms
    if args.since:
        try:
            datetime.fromisoformat(args.since)
        except ValueError:
            raise BadInput(
                f"--since {args.since!r} is not a date: use YYYY-MM-DD or an ISO 8601 time."
            ) from None
        overrides["start_date"] = args.since
    return overrides


def _check_destination(name: str) -> None:
    try:
        Destination.from_reference(name)
    except Exception:
        raise BadInput(
            f"--destination {name!r} is not a dlt destination: use duckdb, filesystem, postgres, "
            "bigquery, snowflake, motherduck… (and install its extra, e.g. dlt[postgres])."
        ) from None


def export(
    pipeline: Any, source: Any, report: RunReport, *, full_refresh: bool, summary: bool = True
) -> tuple[int, list[str]]:
    """Run the export; its exit code and the line printed for each problem."""
    started = time.monotonic()
    # Parquet for a lake, and for DuckDB: measured 10x faster to load and a third of the
    # memory of dlt's default INSERT statements (benchmarks/export_speed.py).
    parquet = pipeline.destination.destination_name in _PARQUET_DESTINATIONS
    file_format = "parquet" if parquet else None
    if full_refresh:
        # Postgres refuses to drop tables that views read.
        drop_metric_views(pipeline)
    if pipeline.has_pending_data:
        # dlt's run() would load what an interrupted run left and stop there; a scheduled job
        # must also fetch what is new, so finish the old load first, then run as usual.
        log.info("finishing the load that an interrupted run left pending")
        pipeline.run()
    pipeline.run(
        source,
        refresh="drop_sources" if full_refresh else None,
        loader_file_format=file_format,
    )
    create_metric_views(pipeline)
    _end_status_line()
    if summary:
        _print_summary(pipeline, report, time.monotonic() - started)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stdout if summary else sys.stderr)
    return _outcome(report)


def _outcome(report: RunReport) -> tuple[int, list[str]]:
    """Exit code, and a line per problem, for a run that loaded but maybe not everything.

    A run where no Page could be read fails before loading; here some Pages were loaded.
    """
    problems = [*report.page_failures, *([report.stopped_by] if report.stopped_by else [])]
    code = ExitCode.PARTIAL if report.page_failures else ExitCode.OK
    lines = []
    for problem in problems:
        failure = explain(problem)
        if failure is None:
            raise problem
        lines.append(report.redactor(failure.line))
        print(f"meta-inbox: {lines[-1]}", file=sys.stderr)
        code = failure.code if problem is report.stopped_by else code
    return code, lines


def _print_summary(pipeline: Any, report: RunReport, elapsed: float) -> None:
    counts = loaded_rows(pipeline)
    stats = report.stats
    print(
        f"meta-inbox: {len(report.pages)} Page(s), {report.changed_threads} changed thread(s), "
        f"{report.new_messages} new message(s) into {pipeline.destination.destination_name} "
        f"dataset {pipeline.dataset_name}"
    )
    for table in TABLES:
        print(f"  {table.name:<27} {counts.get(table.name, 0):>9} rows")
    print(
        f"  API calls {stats.calls}, retries {stats.retries}, throttled {stats.throttled} "
        f"({stats.throttle_wait:.1f} s waiting)"
    )
    print(
        f"  messages without details (Instagram, older than the newest 20): "
        f"{report.messages_without_details}"
    )
    print(f"  elapsed {elapsed:.1f} s")


def _demo(args: argparse.Namespace, report: RunReport) -> int:
    from .demo import run_demo

    return run_demo(seed=args.seed, scale=args.scale, report=report)


def _schema(args: argparse.Namespace, report: RunReport) -> int:
    print(schema_markdown())
    print(metrics_markdown())
    return ExitCode.OK


def _lake_views(args: argparse.Namespace, report: RunReport) -> int:
    dataset = Path(args.path) / args.dataset_name
    if not dataset.is_dir():
        raise BadInput(f"{dataset} is not a folder: give the lake path used as bucket_url.")
    with duckdb.connect(args.database) as connection:
        create_latest_views(connection, dataset.resolve())
    print(f"views over {dataset} written to {args.database}: {', '.join(t.name for t in TABLES)}")
    return ExitCode.OK


def _emulator(args: argparse.Namespace, report: RunReport) -> int:
    from .emulator.server import serve

    serve(port=args.port, seed=args.seed, scale=args.scale)
    return ExitCode.OK


class _StatusLine(logging.StreamHandler):  # type: ignore[type-arg]
    """On a terminal, progress rewrites one status line; other records keep lines of their own."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno == logging.INFO and record.name.startswith("meta_inbox"):
                width = shutil.get_terminal_size().columns - 1
                self.stream.write(f"\r\x1b[K{record.getMessage()[:width]}")
            else:
                self.stream.write(f"\r\x1b[K{self.format(record)}\n")
            self.flush()
        except Exception:
            self.handleError(record)

    def end(self) -> None:
        self.stream.write("\r\x1b[K")
        self.flush()


def _end_status_line() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _StatusLine):
            handler.end()


def _configure_logging(debug: bool, report: RunReport) -> None:
    """Progress and warnings go to stderr; every record is redacted, dlt's included.

    On a terminal progress is one updating line; elsewhere (cron, CI) a plain line each time.
    """
    redact_log_records(report.redactor)
    if debug:
        os.environ["RUNTIME__LOG_LEVEL"] = "DEBUG"
    on_terminal = sys.stderr.isatty() and not debug
    handler = _StatusLine(sys.stderr) if on_terminal else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], force=True
    )
    logging.getLogger("meta_inbox").setLevel(logging.DEBUG if debug else logging.INFO)


def _fail(error: Exception, debug: bool, report: RunReport) -> int:
    _end_status_line()
    failure = explain(error)
    if debug:
        log.error("run failed", exc_info=error)
    if failure is not None:
        print(f"meta-inbox: {report.redactor(failure.line)}", file=sys.stderr)
        return failure.code
    print(
        f"meta-inbox: unexpected error: {report.redactor(_innermost(error))}. "
        "Run again with --debug for details and report it if it persists.",
        file=sys.stderr,
    )
    return ExitCode.UNEXPECTED


def _innermost(error: BaseException) -> str:
    cause = innermost(error)
    return f"{type(cause).__name__}: {cause}".splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
