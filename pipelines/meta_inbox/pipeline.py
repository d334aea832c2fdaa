"""A whole export: what `meta-inbox run`, the demo and Python users call (`meta_inbox.export`).

One run: finish a load an interrupted run left pending; find the Pages; for `full_refresh`,
forget their state and replace their rows; read in slices, each loaded as it completes (a
checkpoint); for `reconcile`, mark what Graph no longer returns; keep the metric views in
place; and record the run in `_meta_inbox_runs`. SIGINT and SIGTERM stop the reading, load what
was read and record the run; a second signal aborts at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import signal
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.destination.exceptions import UnknownDestinationModule
from dlt.common.exceptions import MissingDependencyException

from . import destinations, lake
from .config import Analysis, Settings, graph_ids, meta_inbox_version
from .conversations_api import FacebookPage
from .erasure import Forgotten, erased_threads
from .erasure import forget as forget_threads
from .errors import BadInput, Busy, Interrupted, innermost
from .graph_client import redact_log_records
from .lake import compact, write_views
from .metrics import METRIC_VIEWS, ensure_metric_views
from .outcomes import ExitCode, Failure, explain
from .reader import Mode
from .reconcile import ReconcileLedger
from .source import ExportSession, appended, meta_inbox, rows_resource
from .tables import CONVERSATIONS, MESSAGES, RUNS, TABLES

log = logging.getLogger("meta_inbox")

DEFAULT_PIPELINE_NAME = "meta_inbox"
DEFAULT_DATASET_NAME = "inbox"
MAX_SKIPS_KEPT = 100  # skips listed in a run record: enough to look into, never a flood


@dataclass
class ExportResult:
    """What a run did: its record (as stored in `_meta_inbox_runs`), exit code and problems."""

    record: dict[str, Any]
    exit_code: ExitCode
    problems: list[str]
    warnings: list[str]
    session: ExportSession
    pipeline: dlt.Pipeline
    views: list[str]

    @property
    def status(self) -> str:
        return str(self.record["status"])


def make_pipeline(
    destination: str | Destination = "duckdb",
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    dataset_name: str = DEFAULT_DATASET_NAME,
    pipelines_dir: str | None = None,
) -> dlt.Pipeline:
    """The dlt pipeline of an export. Its working folder is in `pipelines_dir`, by default the
    current folder's `.dlt/pipelines` (dlt's under `DLT_DATA_DIR` when that is set); a DuckDB
    destination defaults to `./<pipeline_name>.duckdb`. On warehouses it stages in a dataset of
    its own, so that several pipelines (one per Page) can load one dataset at the same time."""
    try:
        chosen = destinations.configured(destination, pipeline_name)
    except (UnknownDestinationModule, ModuleNotFoundError, MissingDependencyException) as error:
        raise destinations.explained(error, destination) from None
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        pipelines_dir=pipelines_dir or destinations.pipelines_dir(),
        destination=chosen,
        dataset_name=dataset_name,
    )


def export(
    settings: Settings | None = None,
    *,
    pipeline: dlt.Pipeline | None = None,
    destination: str | Destination = "duckdb",
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    dataset_name: str = DEFAULT_DATASET_NAME,
    full_refresh: bool = False,
    reconcile: bool = False,
    views: bool = True,
) -> ExportResult:
    """Export the Pages `settings` name (default: dlt's config) into `pipeline` (default: a new
    one from `destination`, `pipeline_name` and `dataset_name`).

    `full_refresh` reloads the run's Pages from scratch, replacing their rows only (other Pages
    in the dataset are never touched). `reconcile` reads every thread again and marks what
    Graph no longer returns with `deleted_at`. `views` False leaves the metric views alone (a
    fan-out of per-Page runs refreshes them once, after all). Raises for a run that could not
    load anything;
    `ExportResult.exit_code` says how a run that loaded ended (partial, stopped, interrupted).
    """
    if full_refresh and reconcile:
        raise BadInput("--full-refresh and --reconcile cannot go together: a refresh reads all.")
    redact_log_records()
    settings = settings or Settings.from_config()
    if settings.user_ids and (full_refresh or reconcile):
        # Both act on every thread of the Pages: a refresh would replace them with one person's,
        # a reconcile would take everyone else's for deleted.
        raise BadInput("--user-id cannot go with --full-refresh or --reconcile.")
    with destinations.explained_failures(destination):
        pipeline = destinations.claim_location(
            pipeline
            or make_pipeline(destination, pipeline_name=pipeline_name, dataset_name=dataset_name)
        )
        mode = Mode.RECONCILE if reconcile else Mode.REGULAR
        ledger = ReconcileLedger(Path(pipeline.working_dir)) if reconcile else None
        session = ExportSession(
            settings,
            mode=mode,
            refresh=full_refresh,
            observer=ledger.record if ledger else None,
        )
        run = _Run(pipeline, session, ledger, "full-refresh" if full_refresh else mode.value)
        run.views = views
        try:
            with (
                _exclusive(pipeline),
                destinations.held_open(pipeline, settings.duckdb_memory_limit),
                _graceful_signals(session, pipeline),
            ):
                return run.execute()
        finally:
            session.close()
            if ledger:
                ledger.close()


class _Run:
    def __init__(
        self,
        pipeline: dlt.Pipeline,
        session: ExportSession,
        ledger: ReconcileLedger | None,
        mode: str,
    ) -> None:
        self.pipeline = pipeline
        self.session = session
        self.ledger = ledger
        self.mode = mode
        self.run_id = str(uuid.uuid4())
        self.views = True
        self.recorded: dict[str, Any] | None = None
        self.loader_file_format = (
            "parquet" if destinations.takes_parquet(pipeline.destination) else None
        )

    def execute(self) -> ExportResult:
        try:
            return self._execute()
        except KeyboardInterrupt:
            raise  # a second signal: out at once
        except BaseException as error:
            self._record_failure(error)
            raise

    def _execute(self) -> ExportResult:
        pipeline, session = self.pipeline, self.session
        # dlt's run() would load what an interrupted run left and stop there; a scheduled job
        # must also fetch what is new, so the old load is finished first.
        settle_load_packages(pipeline)
        # A destination without its credentials or package fails now, before any call to Graph.
        pipeline.destination_client()
        # The destination is read while Graph answers the Pages' discovery, which its queries
        # would otherwise follow. Should both fail, the discovery's error is the one reported,
        # as when it came first.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery") as pool:
            discovery = pool.submit(session.discover)
            try:
                session.stored = destinations.StoredMessages(pipeline)
                session.erased = erased_threads(pipeline)
                destinations.apply_refreshes(pipeline)
            finally:
                discovery.result()
        if not self.ledger:
            session.record = self._last_slice_record
        while True:
            self._load(
                meta_inbox(session=session), merged_before=session.counts.messages_merged_again
            )
            if session.refresh and session.counts.checkpoints == 1:
                destinations.apply_refreshes(pipeline)
            if session.finished:
                break
        self._warn_of_skips()
        if self.ledger:
            self._reconcile()
        views = current_views(pipeline, session.settings) if self.views else []
        code, problems = self.outcome()
        if self.recorded is not None and self.recorded["status"] != _status(code):
            # A signal came while the last slice loaded: the record it carried is replaced.
            self._load([rows_resource(RUNS, [self.record(code, problems)], "keep")])
        return ExportResult(
            record=self.record(code, problems),
            exit_code=code,
            problems=problems,
            warnings=list(session.report.warnings),
            session=session,
            pipeline=pipeline,
            views=views,
        )

    def _warn_of_skips(self) -> None:
        report = self.session.report
        if report.skipped:
            report.warn(
                f"{report.skipped_threads} thread(s) and {report.skipped_messages} message(s) "
                "were not read whole: Graph stopped answering for them during the run (deleted "
                "meanwhile, or an error meta-inbox does not know); what was read is loaded, and "
                "`skipped` in _meta_inbox_runs says which"
            )

    def _last_slice_record(self) -> dict[str, Any]:
        self.recorded = self.record(*self.outcome())
        return self.recorded

    def outcome(self) -> tuple[ExitCode, list[str]]:
        """Exit code, and a line per problem, for a run that loaded (maybe not everything)."""
        report = self.session.report
        problems: list[BaseException] = [*report.page_failures, *report.folder_failures]
        if report.stopped_by is not None:
            problems.append(report.stopped_by)
        code, lines = ExitCode.OK, []
        for problem in problems:
            failure = explain(problem)
            if failure is None:
                raise problem
            lines.append(self.session.redactor(failure.line))
            if problem is report.stopped_by or code == ExitCode.OK:
                code = failure.code
        if (report.page_failures or report.folder_failures) and report.stopped_by is None:
            code = ExitCode.PARTIAL
        return code, lines

    def record(self, code: ExitCode, problems: list[str]) -> dict[str, Any]:
        session, stats, counts = self.session, self.session.stats, self.session.counts
        return {
            "run_id": self.run_id,
            "pipeline_name": self.pipeline.pipeline_name,
            "started_at": session.started_at,
            "finished_at": datetime.now(UTC),
            "status": _status(code),
            "exit_code": int(code),
            "error": "\n".join(problems) or None,
            "mode": self.mode,
            "pages": _json([page.id for page in session.pages or []]),
            "api_calls": stats.calls,
            "retries": stats.retries,
            "throttled": stats.throttled,
            "throttle_wait_seconds": round(stats.throttle_wait, 3),
            "checkpoints": counts.checkpoints,
            "new_messages": counts.new_messages,
            "threads_with_new_messages": counts.threads_with_new_messages,
            "messages": counts.messages,
            "rechecked_threads": counts.rechecked_threads,
            "messages_merged_again": counts.messages_merged_again,
            "unchanged_messages": counts.unchanged_messages,
            "messages_without_details": counts.messages_without_details,
            "repaired_values": counts.repaired_values,
            "marked_deleted": counts.marked_deleted,
            "skipped_threads": session.report.skipped_threads,
            "skipped_messages": session.report.skipped_messages,
            "skipped": _json([vars(skip) for skip in session.report.skipped[:MAX_SKIPS_KEPT]]),
            "rows": _json({table.name: counts.rows[table.name] for table in TABLES}),
            "meta_inbox_version": meta_inbox_version(),
        }

    def _load(self, data: Any, merged_before: int | None = None) -> None:
        """Load `data`. A slice says how many stored messages the run had merged again before
        it: one that merged more may have left some of their children stale."""
        if self.pipeline.destination.destination_name == "filesystem":
            # Parquet files are only appended to (the lake views keep the latest rows); saying
            # so spares dlt a warning per table that merge falls back to append.
            for resource in data.resources.values() if hasattr(data, "resources") else data:
                appended(resource)
        info = self.pipeline.run(data, loader_file_format=self.loader_file_format)
        again = self.session.counts.messages_merged_again
        if merged_before is not None and again > merged_before:
            destinations.drop_stale_children(self.pipeline, info.loads_ids)
        destinations.checkpoint(self.pipeline)
        destinations.remember_location(self.pipeline)
        discard_loaded_packages(self.pipeline)

    def _reconcile(self) -> None:
        """Compare what the reconcile listed with what the destination holds; re-merge rows
        whose `deleted_at` changes, add the messages it lacks; record the run with them."""
        assert self.ledger is not None
        session, now = self.session, datetime.now(UTC)
        dataset = self.pipeline.dataset()
        report = session.report
        corrections = self.ledger.corrections(
            dataset, report.reconciled, now, session.settings.start, unlisted=report.unlisted
        )
        conversations = [
            *corrections.stored_rows(dataset, "conversations", corrections.gone_threads, now),
            *corrections.stored_rows(dataset, "conversations", corrections.back_threads, None),
        ]
        messages = [
            *corrections.stored_rows(dataset, "messages", corrections.gone_messages, now),
            *corrections.stored_rows(dataset, "messages", corrections.back_messages, None),
            *(_stub(*stub) for stub in corrections.stubs),
        ]
        session.counts.marked_deleted = corrections.marked
        # Messages listed that the destination lacks: loaded now, so new to it.
        session.counts.messages += len(corrections.stubs)
        session.counts.new_messages += len(corrections.stubs)
        session.counts.rows[CONVERSATIONS.name] += len(conversations)
        session.counts.rows[MESSAGES.name] += len(messages)
        log.info(
            "reconcile: %d threads and %d messages gone, %d back, %d messages added",
            len(corrections.gone_threads),
            len(corrections.gone_messages),
            len(corrections.back_threads) + len(corrections.back_messages),
            len(corrections.stubs),
        )
        mode = session.privacy.mode
        corrected = [
            rows_resource(CONVERSATIONS, conversations, mode),
            rows_resource(MESSAGES, messages, mode),
        ]
        folder = destinations.local_lake(self.pipeline)
        if folder is not None and (conversations or messages):
            dataset_name = self.pipeline.dataset_name
            with closing(lake.connect(folder, write_views(folder, dataset_name))) as views:
                corrected += [
                    rows_resource(table, rows, mode)
                    for table, rows in corrections.lake_children(views, dataset_name)
                ]
        self._load([*corrected, rows_resource(RUNS, [self.record(*self.outcome())], "keep")])

    def _record_failure(self, error: BaseException) -> None:
        """Record a run that failed; a destination that fails here too is only logged."""
        problem = destinations.problem_of(error, self.pipeline.destination) or error
        failure = explain(problem) or Failure(ExitCode.UNEXPECTED, f"unexpected error: {error}")
        if failure.code in _UNRECORDABLE:
            return
        record = self.record(failure.code, [self.session.redactor(failure.line)])
        record["status"] = "failed"
        try:
            self._load([rows_resource(RUNS, [record], "keep")])
        except Exception as unrecorded:
            reason = str(innermost(unrecorded)).splitlines()[0]
            log.warning("could not record the run in %s: %s", RUNS.name, reason)


def _slices(packages: Iterable[Any]) -> list[str]:
    """The loads of slices among `packages`: a reconcile's corrections merge parents alone
    (their children as stored), slices write children too."""
    children = {table.name for table in TABLES if table.parent}
    return [
        package.load_id
        for package in packages
        if any(
            job.job_file_info.table_name in children
            for jobs in package.jobs.values()
            for job in jobs
        )
    ]


# Failures that leave no way, or no reason, to write a run record into the destination.
_UNRECORDABLE = (
    ExitCode.BUSY,
    ExitCode.DESTINATION_LOCKED,
    ExitCode.DESTINATION_UNWRITABLE,
    ExitCode.DESTINATION_CREDENTIALS,
    ExitCode.MISSING_EXTRA,
)


def settle_load_packages(pipeline: dlt.Pipeline) -> None:
    """Load what an interrupted run extracted and did not load, then delete what dlt loaded
    (`discard_loaded_packages`). dlt loads nothing (and says None) when, syncing with a
    destination that holds nothing of the pipeline yet, it drops what the run left: a first
    run killed before its first load is read again whole."""
    if pipeline.has_pending_data:
        log.info("finishing the load that an interrupted run left pending")
        finished = pipeline.run()
        if finished is not None:
            destinations.drop_stale_children(pipeline, _slices(finished.load_packages))
    discard_loaded_packages(pipeline)


def discard_loaded_packages(pipeline: dlt.Pipeline) -> None:
    """Delete the load packages that dlt loaded whole. dlt keeps each one in the pipeline folder
    (`load/loaded/`) for good, with its Parquet files: every message of every run, which grew
    the folder by the size of the data on each checkpoint and kept the words of a person
    `forget` erased. The destination and `_meta_inbox_runs` hold what they told. A package with
    a failed job is kept for its error."""
    storage = pipeline._get_load_storage()  # dlt's own, to delete packages the way it lays them
    for load_id in pipeline.list_completed_load_packages():
        package = pipeline.get_load_package_info(load_id)
        if package.state == "loaded" and not package.jobs.get("failed_jobs"):
            storage.delete_loaded_package(load_id)


def _status(code: ExitCode) -> str:
    if code == ExitCode.OK:
        return "success"
    if code == ExitCode.PARTIAL:
        return "partial"
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
        return "interrupted"
    return "stopped"


def _stub(
    message_id: str, conversation_id: str, page_id: str, platform: str, created: datetime
) -> dict[str, Any]:
    """The row of a message Graph lists without details (Instagram)."""
    return {
        "id": message_id,
        "conversation_id": conversation_id,
        "page_id": page_id,
        "platform": platform,
        "created_time": created,
        "details_available": False,
        "deleted_at": None,
    }


@contextmanager
def _exclusive(pipeline: dlt.Pipeline) -> Iterator[None]:
    """One run per pipeline at a time. The kernel drops the lock when a run dies, even killed."""
    working_dir = Path(pipeline.working_dir)
    working_dir.mkdir(parents=True, exist_ok=True)
    with open(working_dir / "meta_inbox.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"Another run of pipeline {pipeline.pipeline_name!r} is in progress (it holds "
                f"{lock.name}): let it finish, or use another --pipeline-name."
            ) from None
        yield


@contextmanager
def _graceful_signals(session: ExportSession, pipeline: dlt.Pipeline) -> Iterator[None]:
    """SIGINT and SIGTERM stop reading; what was read is loaded and the run recorded. dlt's own
    handling (abort the load between jobs) is off meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    runtime = pipeline.runtime_config
    intercepted = runtime.intercept_signals
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def stop(number: int, _frame: Any) -> None:
        if session.report.stopped_by is not None and isinstance(
            session.report.stopped_by, Interrupted
        ):
            raise KeyboardInterrupt
        name = signal.Signals(number).name
        session.stop(Interrupted(number, name))
        log.warning("%s: stopping; loading what was read (again to abort at once)", name)

    runtime.intercept_signals = False
    for number in previous:
        signal.signal(number, stop)
    try:
        yield
    finally:
        runtime.intercept_signals = intercepted
        for number, handler in previous.items():
            signal.signal(number, handler)


def refresh_views(
    destination: str | Destination = "duckdb",
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    dataset_name: str = DEFAULT_DATASET_NAME,
) -> list[str]:
    """Create or replace the metric views of a dataset (`meta-inbox views`); their names."""
    with destinations.explained_failures(destination):
        pipeline = destinations.claim_location(
            make_pipeline(destination, pipeline_name=pipeline_name, dataset_name=dataset_name)
        )
        return current_views(pipeline)


def forget(
    user_ids: list[str],
    destination: str | Destination = "duckdb",
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    dataset_name: str = DEFAULT_DATASET_NAME,
    dry_run: bool = False,
) -> Forgotten:
    """Erase the threads of `user_ids` from a dataset (`meta-inbox forget`); see `erasure.py`.
    Ids that are not Graph ids are refused before anything is read."""
    user_ids = graph_ids(user_ids, "user_ids (--user-id)")
    with destinations.explained_failures(destination):
        pipeline = destinations.claim_location(
            make_pipeline(destination, pipeline_name=pipeline_name, dataset_name=dataset_name)
        )
        if dry_run:
            return forget_threads(pipeline, user_ids, dry_run=True)
        # A load an interrupted run left would bring the threads back with the next run: it is
        # loaded first (no run may load meanwhile), and erased with the rest.
        with _exclusive(pipeline), destinations.held_open(pipeline):
            settle_load_packages(pipeline)
            return forget_threads(pipeline, user_ids, dry_run=False)


def current_views(pipeline: dlt.Pipeline, analysis: Analysis | None = None) -> list[str]:
    """Create or replace the metric views; on a local lake, compact the tables that rows read
    again have swollen, then write its views database (tables, metric views and run records, in
    `<lake>/lake.duckdb`). Their names. `analysis`: the
    business hours and SLAs (default: from the configuration)."""
    folder = destinations.local_lake(pipeline)
    if folder is None:
        return ensure_metric_views(pipeline, analysis)
    if not (folder / pipeline.dataset_name).is_dir():
        return []
    compact(folder, pipeline.dataset_name)
    write_views(folder, pipeline.dataset_name, analysis=analysis)
    return [view.name for view in METRIC_VIEWS]


def pages(settings: Settings | None = None) -> list[FacebookPage]:
    """The Pages an export with `settings` reads (`meta-inbox pages`), for fanning out."""
    redact_log_records()
    return ExportSession(settings or Settings.from_config()).discover()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
