"""The `meta-inbox` command: parsing arguments and printing. The work is done elsewhere."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from . import allocators  # noqa: F401  (before pyarrow and DuckDB load: see the module)
from .config import (
    FOLDERS,
    PLATFORMS,
    Settings,
    config_toml,
    meta_inbox_version,
    settings_markdown,
)
from .conversations_api import INSTAGRAM_LOGIN
from .destinations import explained_failures, location
from .errors import BadInput, innermost
from .graph_client import REDACTOR, redact_log_records
from .outcomes import ExitCode, explain
from .pipeline import (
    DEFAULT_DATASET_NAME,
    DEFAULT_PIPELINE_NAME,
    ExportResult,
    export,
    forget,
    pages,
    refresh_views,
)
from .tables import TABLES, schema_markdown

log = logging.getLogger("meta_inbox")

EXIT_CODES = """exit codes:
  0   success
  1   unexpected error (a bug: rerun with --debug and report it)
  2   bad input: argument, configuration, missing token, or a pipeline whose state
      belongs to other data (run from its folder, or use another --pipeline-name)
  3   the access token was refused (expired, invalid): renew it
  4   a Page token is needed (Graph code 210)
  5   a permission is missing: grant it, renew the token
  6   unknown Page, or not readable with this token
  7   throttle waiting reached max_throttle_wait (what was read is loaded)
  8   Graph could not be reached or kept failing (what was read is loaded)
  9   partial: some Pages failed, the others were loaded
  10  another run of the same pipeline is in progress
  11  the destination is held by another program (a DuckDB file open elsewhere)
  12  a folder or file cannot be written
  13  the destination's credentials are missing
  14  a package the destination needs is not installed
  15  Graph could not be reached at all: check base_url and the network
  16  DuckDB ran out of memory while loading: raise duckdb_memory_limit
  130 interrupted by Ctrl-C (SIGINT); 143 by SIGTERM: what was read is loaded
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()
        return ExitCode.OK
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    _return_freed_memory()
    _collect_garbage_on_a_timer()
    _configure_logging(args.debug)
    try:
        return int(args.command(args))
    except BrokenPipeError:
        # `meta-inbox schema | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except KeyboardInterrupt:
        _end_status_line()
        print("meta-inbox: aborted; the next run resumes where the data stands.", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as error:
        return _fail(error, args.debug)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meta-inbox",
        description="Export Messenger and Instagram conversations of Facebook Pages.\n\n"
        "The access token: SOURCES__META_INBOX__ACCESS_TOKEN in the environment, or\n"
        "access_token under [sources.meta_inbox] in .dlt/secrets.toml (see the README).\n"
        "Every command takes --help.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"meta-inbox {meta_inbox_version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = _command(sub, "run", "export into a dlt destination (DuckDB by default)", _run)
    run.add_argument(
        "--destination",
        default="duckdb",
        help="dlt destination: duckdb (default: ./<pipeline-name>.duckdb), filesystem "
        "(Parquet, default ./meta_inbox_lake), postgres, bigquery, snowflake…",
    )
    run.add_argument(
        "--dataset-name",
        default=DEFAULT_DATASET_NAME,
        help=f"dataset (schema) to load into (default {DEFAULT_DATASET_NAME})",
    )
    run.add_argument(
        "--pipeline-name",
        default=DEFAULT_PIPELINE_NAME,
        help="dlt pipeline: keeps this export's state, in ./.dlt/pipelines/<name>; one per "
        "destination, and one per Page when several processes load one dataset (default "
        f"{DEFAULT_PIPELINE_NAME})",
    )
    run.add_argument(
        "--page-id",
        action="append",
        dest="page_ids",
        metavar="ID[,ID...]",
        help="only these Pages (repeat, or separate by commas); default: every Page the token "
        "reads, or page_ids from the configuration",
    )
    run.add_argument(
        "--user-id",
        action="append",
        dest="user_ids",
        metavar="ID[,ID...]",
        help="only these people's threads (PSID or IGSID; repeat, or separate by commas), whole, "
        "in every folder and on both platforms; the run keeps no folder state",
    )
    run.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        metavar="PLATFORM",
        help=f"only this platform: {' or '.join(PLATFORMS)} (repeat for both; default both)",
    )
    run.add_argument(
        "--folder",
        action="append",
        dest="folders",
        metavar="FOLDER",
        help=f"only this folder: {', '.join(FOLDERS)} (repeat; default all)",
    )
    run.add_argument(
        "--since",
        metavar="DATE",
        help="first-run lower bound, UTC (e.g. 2026-01-31): older threads are skipped",
    )
    modes = run.add_mutually_exclusive_group()
    modes.add_argument(
        "--full-refresh",
        action="store_true",
        help="forget this pipeline's state and reload its Pages, replacing their rows only",
    )
    modes.add_argument(
        "--reconcile",
        action="store_true",
        help="read every thread again and mark what Graph no longer returns (deleted_at)",
    )
    run.add_argument("--json", action="store_true", help="print the run record as JSON")
    run.add_argument(
        "--no-views",
        action="store_true",
        help="leave the metric views alone (per-Page runs of a fan-out: see `views`)",
    )

    views = _command(sub, "views", "create or replace the metric views of a dataset", _views)
    views.add_argument("--destination", default="duckdb", help="dlt destination (default duckdb)")
    views.add_argument("--dataset-name", default=DEFAULT_DATASET_NAME, help="the dataset")
    views.add_argument(
        "--pipeline-name",
        default=DEFAULT_PIPELINE_NAME,
        help="a pipeline of the dataset (for DuckDB: the file <pipeline-name>.duckdb)",
    )

    report = _command(
        sub, "report", "write a self-contained HTML report of a period (plots and numbers)", _report
    )
    report.add_argument(
        "--destination",
        default="duckdb",
        help="duckdb (default), postgres, or filesystem (a local Parquet lake)",
    )
    report.add_argument("--dataset-name", default=DEFAULT_DATASET_NAME, help="the dataset")
    report.add_argument(
        "--pipeline-name",
        default=DEFAULT_PIPELINE_NAME,
        help="a pipeline of the dataset (for DuckDB: the file <pipeline-name>.duckdb)",
    )
    report.add_argument(
        "--since",
        metavar="DATE",
        help="first day (or ISO time), in the business_hours timezone (default: 7 days before "
        "--until)",
    )
    report.add_argument(
        "--until", metavar="DATE", help="last day, included (or ISO time, excluded); default now"
    )
    report.add_argument(
        "--output",
        type=Path,
        default=Path("meta_inbox_report.html"),
        help="the HTML file to write (default meta_inbox_report.html)",
    )

    forget = _command(
        sub,
        "forget",
        "erase people's threads from a dataset, for good (see Answering a data request)",
        _forget,
    )
    forget.add_argument(
        "--user-id",
        action="append",
        dest="user_ids",
        required=True,
        metavar="ID[,ID...]",
        help="the person's PSID or IGSID (repeat, or separate by commas)",
    )
    forget.add_argument("--destination", default="duckdb", help="as for run (default duckdb)")
    forget.add_argument("--dataset-name", default=DEFAULT_DATASET_NAME, help="the dataset")
    forget.add_argument(
        "--pipeline-name", default=DEFAULT_PIPELINE_NAME, help="as for run (the DuckDB file)"
    )
    forget.add_argument(
        "--dry-run", action="store_true", help="print what would be erased, erase nothing"
    )

    pages = _command(sub, "pages", "list the Pages the token can read", _pages)
    pages.add_argument("--json", action="store_true", help="one JSON object per line")

    demo = _command(sub, "demo", "export the bundled emulator's inbox into a local DuckDB", _demo)
    demo.add_argument("--seed", type=int, default=7, help="the generated inbox (default 7)")
    demo.add_argument("--scale", type=int, default=1, help="threads per folder × (default 1)")

    _command(sub, "schema", "print the tables and views as Markdown", _schema)
    settings = _command(sub, "config", "print the configuration reference", _config)
    settings.add_argument("--toml", action="store_true", help="as a commented .dlt/config.toml")

    lake = _command(
        sub, "lake-views", "DuckDB views with the latest rows of a Parquet lake", _lake_views
    )
    lake.add_argument("path", help="the lake folder (the filesystem bucket_url)")
    lake.add_argument("--dataset-name", default=DEFAULT_DATASET_NAME, help="the dataset (schema)")
    lake.add_argument(
        "--database", type=Path, help="DuckDB file to write (default: PATH/lake.duckdb)"
    )

    emulator = _command(
        sub,
        "emulator",
        "serve the Graph API emulator for your tests; prints the settings that point "
        "meta-inbox at it",
        _emulator,
    )
    emulator.add_argument(
        "--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free)"
    )
    emulator.add_argument(
        "--seed", type=int, default=7, help="the generated inbox: same seed, same inbox (default 7)"
    )
    emulator.add_argument("--scale", type=int, default=1, help="threads per folder × (default 1)")
    emulator.add_argument("--pages", type=int, default=3, help="managed Pages (default 3)")
    emulator.add_argument(
        "--latency", type=float, default=0.0, help="seconds per answer (default 0)"
    )
    emulator.add_argument(
        "--per-second",
        type=float,
        help="calls per second per Page before throttling (default: no limit)",
    )
    return parser


def _command(sub: Any, name: str, summary: str, handler: Any) -> argparse.ArgumentParser:
    command = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=EXIT_CODES if name == "run" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    command.set_defaults(command=handler)
    return command


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_config(
        page_ids=_listed_ids(args.page_ids),
        user_ids=_listed_ids(args.user_ids),
        platforms=args.platforms,
        folders=args.folders,
        start_date=args.since,
    )
    started = time.monotonic()
    result = export(
        settings,
        destination=args.destination,
        pipeline_name=args.pipeline_name,
        dataset_name=args.dataset_name,
        full_refresh=args.full_refresh,
        reconcile=args.reconcile,
        views=not args.no_views,
    )
    _end_status_line()
    if args.json:
        print(REDACTOR(json.dumps(result.record, default=_json_value)))
    else:
        _print_summary(result, time.monotonic() - started)
    for line in result.problems:
        print(f"meta-inbox: {line}", file=sys.stderr)
    return result.exit_code


def _listed_ids(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [page.strip() for value in values for page in value.split(",") if page.strip()]


def _print_summary(result: ExportResult, elapsed: float) -> None:
    counts, stats = result.session.counts, result.session.stats
    news = (
        f"{counts.new_messages} new message(s) in {counts.threads_with_new_messages} thread(s)"
        if counts.new_messages
        else "nothing new"
    )
    print(
        f"meta-inbox: {len(result.session.pages or [])} Page(s), {news}, into "
        f"{location(result.pipeline)}"
    )
    for table in TABLES:
        print(f"  {table.name:<27} {counts.rows[table.name]:>9} rows")
    print(
        f"  rechecked {counts.rechecked_threads} thread(s) without new messages; "
        f"{counts.messages_merged_again} message(s) merged again (reactions, edits, read "
        "state, moves)"
    )
    if counts.marked_deleted:
        print(f"  marked deleted: {counts.marked_deleted} row(s)")
    print(
        f"  API calls {stats.calls}, retries {stats.retries}, throttled {stats.throttled} "
        f"({stats.throttle_wait:.1f} s waiting), checkpoints {counts.checkpoints}"
    )
    print(
        f"  messages without details (Instagram, older than the newest 20): "
        f"{counts.messages_without_details}"
    )
    if counts.repaired_values:
        print(f"  text values repaired (U+FFFD): {counts.repaired_values}")
    print(f"  elapsed {elapsed:.1f} s")


def _json_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _views(args: argparse.Namespace) -> int:
    names = refresh_views(
        args.destination, pipeline_name=args.pipeline_name, dataset_name=args.dataset_name
    )
    if not names:
        raise BadInput(
            f"No metric views in {args.destination} dataset {args.dataset_name}: it has no "
            "tables yet, or the destination cannot hold views (a Parquet lake: use lake-views)."
        )
    print(f"metric views: {', '.join(names)}")
    return ExitCode.OK


def _report(args: argparse.Namespace) -> int:
    from .config import Analysis
    from .pipeline import make_pipeline
    from .report import write_report

    analysis = Analysis.from_config()
    with explained_failures(args.destination):
        pipeline = make_pipeline(
            args.destination, pipeline_name=args.pipeline_name, dataset_name=args.dataset_name
        )
        chosen = write_report(pipeline, args.output, args.since, args.until, analysis)
    print(
        f"report of {chosen.since:%Y-%m-%d %H:%M} to {chosen.until:%Y-%m-%d %H:%M} UTC written "
        f"to {args.output}"
    )
    return ExitCode.OK


def _forget(args: argparse.Namespace) -> int:
    done = forget(
        _listed_ids(args.user_ids) or [],
        args.destination,
        pipeline_name=args.pipeline_name,
        dataset_name=args.dataset_name,
        dry_run=args.dry_run,
    )
    verb = "would erase" if done.dry_run else "erased"
    print(f"meta-inbox forget: {verb} {len(done.threads)} thread(s)")
    for thread in done.threads:
        print(f"  {thread.platform} thread {thread.conversation_id} of Page {thread.page_id}")
    for table, count in sorted(done.rows.items()):
        print(f"  {table}: {count} row(s)")
    if not done.dry_run and done.threads:
        print(
            f"recorded in _meta_inbox_erasures: their messages up to "
            f"{done.erased_at:%Y-%m-%d %H:%M:%S} UTC are never exported again"
        )
    return ExitCode.OK


def _pages(args: argparse.Namespace) -> int:
    found = pages()
    if not args.json:
        print(f"{'page id':<18} {'Instagram':<32} name")
    for page in found:
        if args.json:
            row = {
                "id": page.id,
                "name": page.name,
                "instagram_id": page.instagram_id,
                "instagram_username": page.instagram_username,
                "login": page.login,
            }
            print(json.dumps(row, ensure_ascii=False))
        else:
            instagram = f"{page.instagram_id} @{page.instagram_username}" if (
                page.instagram_id) else "none linked"  # fmt: skip
            if page.login == INSTAGRAM_LOGIN:
                instagram += " (Instagram Login, no Page)"
            print(f"{page.id:<18} {instagram:<32} {page.name}")
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seed=args.seed, scale=args.scale)


def _schema(args: argparse.Namespace) -> int:
    from .metrics import metrics_markdown

    print(schema_markdown())
    print(metrics_markdown())
    return ExitCode.OK


def _config(args: argparse.Namespace) -> int:
    print(config_toml() if args.toml else settings_markdown(), end="")
    return ExitCode.OK


def _lake_views(args: argparse.Namespace) -> int:
    from .lake import write_views

    lake = Path(args.path)
    if not (lake / args.dataset_name).is_dir():
        raise BadInput(
            f"{lake / args.dataset_name} is not a folder: give the lake folder (bucket_url) "
            "and its --dataset-name."
        )
    database = write_views(lake, args.dataset_name, args.database)
    print(
        f"views over {lake / args.dataset_name} written to {database}, schema "
        f'{args.dataset_name}; open it with: python -c "import meta_inbox.lake as l; '
        f"print(l.connect('{lake}').sql('show all tables'))\""
    )
    return ExitCode.OK


def _emulator(args: argparse.Namespace) -> int:
    from .emulator.server import serve

    serve(
        port=args.port,
        seed=args.seed,
        scale=args.scale,
        pages=args.pages,
        latency=args.latency,
        per_second=args.per_second,
    )
    return ExitCode.OK


def _return_freed_memory() -> None:
    """An export decodes and shapes megabytes at a time on many threads. glibc gives each
    thread an arena of its own and Arrow's allocator keeps what it freed: with two arenas and
    the system allocator (`allocators`), a long run's memory stays near what it uses
    (benchmarks/scale.py measures it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 2)


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _collect_garbage_on_a_timer() -> None:
    """Decoding Graph's answers and shaping their rows allocate millions of containers, freed
    by their reference counts: hardly any is in a reference cycle (dlt's configuration traces
    and closures, 3 MB at 227k messages). Python's collector walked them all the same, young
    and old: 7-9 % of a backfill's CPU even at a threshold of 20,000 allocations (measured at
    227k and 1.09M messages). The cycles are collected every `_COLLECTED_EVERY` seconds
    instead, whatever was allocated meanwhile: at 1.09M messages, 16 MB of them over a run, so
    every 15 s held 5-15 MB less at the peak than every 60 s, for the same CPU (measured
    alternately)."""
    gc.disable()

    def collect() -> None:
        while True:
            time.sleep(_COLLECTED_EVERY)
            gc.collect()

    threading.Thread(target=collect, name="garbage-collection", daemon=True).start()


_COLLECTED_EVERY = 15.0  # seconds


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


def _configure_logging(debug: bool) -> None:
    """Progress and warnings go to stderr; every record is redacted, dlt's included.

    On a terminal progress is one updating line; elsewhere (cron, CI) a plain line each time.
    """
    redact_log_records()
    if debug:
        os.environ["RUNTIME__LOG_LEVEL"] = "DEBUG"
    on_terminal = sys.stderr.isatty() and not debug
    handler = _StatusLine(sys.stderr) if on_terminal else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], force=True
    )
    logging.getLogger("meta_inbox").setLevel(logging.DEBUG if debug else logging.INFO)
    dlt_logger = logging.getLogger("dlt")
    for kept in [f for f in dlt_logger.filters if isinstance(f, _WithoutTraceback)]:
        dlt_logger.removeFilter(kept)
    if not debug:
        dlt_logger.addFilter(_WithoutTraceback())


class _WithoutTraceback(logging.Filter):
    """dlt logs a load job it retries (DuckDB out of memory, a lost connection) with its
    traceback, attached or in the message: without --debug, the line alone. The run's last
    line says what to do."""

    MARK = "Traceback (most recent call last):"

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        message = record.getMessage()
        if self.MARK in message:
            record.msg = message.split(self.MARK)[0] + "(a traceback: run with --debug to see it)"
            record.args = None
        return True


def _fail(error: Exception, debug: bool) -> int:
    _end_status_line()
    failure = explain(error)
    if debug:
        log.error("run failed", exc_info=error)
    if failure is not None:
        print(f"meta-inbox: {REDACTOR(failure.line)}", file=sys.stderr)
        return failure.code
    cause = innermost(error)
    advice = "the traceback is above" if debug else "run again with --debug for details"
    print(
        f"meta-inbox: unexpected error: "
        f"{REDACTOR(f'{type(cause).__name__}: {cause}'.splitlines()[0])}. "
        f"A bug: {advice}; report it if it persists.",
        file=sys.stderr,
    )
    return ExitCode.UNEXPECTED
