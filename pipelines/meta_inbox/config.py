"""Every setting of meta-inbox, once: its type, default, description and validation.

`Settings` is a dlt configspec read from `[sources.meta_inbox]` in `.dlt/config.toml` and
`.dlt/secrets.toml`, or from `SOURCES__META_INBOX__<KEY>` variables. The README's configuration
table and the commented `.dlt/config.toml` are generated from it (`meta-inbox config`), and a
test fails when they drift.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)
from dlt.common.configuration.specs import BaseConfiguration
from dlt.common.typing import TSecretStrValue

from .business_hours import Schedule, parse_duration, parse_schedule
from .conversations_api import LEGACY_ARCHIVE
from .errors import BadInput
from .graph_client import Pacing

SECTIONS = ("sources", "meta_inbox")
PLATFORMS = ("messenger", "instagram")
FOLDERS = ("inbox", "other", "page_done", "spam", LEGACY_ARCHIVE)
PII_MODES = ("keep", "hash", "drop")
_PAGE_ID = re.compile(r"^\d{1,32}$")
# DuckDB's bound while a run loads (see `destinations.DUCKDB_LOADING` for what was measured).
DUCKDB_MEMORY_LIMIT = "96MB"
_MEMORY_SIZE = re.compile(r"^\d+(\.\d+)?\s*(K|M|G|T)i?B$", re.IGNORECASE)


def _setting(default: Any, description: str, *, secret: bool = False, shown: str = "") -> Any:
    """A field with what the docs say of it. `shown` replaces the default in the docs."""
    metadata = {"description": description, "secret": secret, "shown": shown}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@configspec
class Analysis(BaseConfiguration):
    """The settings of the metric views and the report: they need no token, so `meta-inbox
    views`, `lake-views` and `report` resolve these alone."""

    business_hours: dict[str, Any] | None = _setting(
        None,
        '`timezone` (IANA), `mon` … `sun` (lists of `"HH:MM-HH:MM"`, `[]` when closed) and '
        "`holidays` (dates, closed all day); the business-time columns are null without it",
    )
    first_response_sla: str | None = _setting(
        None, 'first response target in business time, e.g. `"1h"`, `"30m"`, `"1h30m"`'
    )
    resolution_sla: str | None = _setting(None, 'resolution target in business time, e.g. `"8h"`')

    def on_resolved(self) -> None:
        self.schedule()
        self.sla_seconds()

    def schedule(self) -> Schedule | None:
        return parse_schedule(self.business_hours)

    def sla_seconds(self) -> tuple[float | None, float | None]:
        """The first response and resolution targets, in business seconds."""
        return (
            parse_duration(self.first_response_sla, "first_response_sla"),
            parse_duration(self.resolution_sla, "resolution_sla"),
        )

    @classmethod
    def from_config(cls, **overrides: Any) -> Analysis:
        explicit = {key: value for key, value in overrides.items() if value is not None}
        with _bad_values():
            return resolve_configuration(cls(), sections=SECTIONS, explicit_value=explicit)


@configspec
class Settings(Analysis):
    """What to export and how; see the README's configuration reference."""

    access_token: TSecretStrValue = _setting(
        None, "Page token, or user / system-user token", secret=True, shown="(required)"
    )
    app_secret: TSecretStrValue | None = _setting(
        None, "send `appsecret_proof` with every call", secret=True
    )
    base_url: str = _setting(
        "https://graph.facebook.com", "the Graph API, the emulator, a proxy or a test server"
    )
    instagram_base_url: str = _setting(
        "https://graph.instagram.com",
        "the Instagram API with Instagram Login (an Instagram User token, accounts without a "
        "Page), the emulator's second address, or a proxy",
    )
    api_version: str = _setting("v25.0", "Graph API version")
    page_ids: list[str] | None = _setting(
        None, "Pages to export (user tokens)", shown="every Page the token reads"
    )
    platforms: list[str] = _setting(
        list(PLATFORMS),
        "platforms to export; Instagram is tried on every Page and skipped, with a warning, "
        "where Graph says none is linked",
    )
    folders: list[str] = _setting(
        list(FOLDERS),
        "folders to export (`page_done` is archived; `archived_legacy`, Messenger only, holds "
        "threads archived before mid-2018)",
    )
    user_ids: list[str] | None = _setting(
        None,
        "export only these people's threads (PSIDs or IGSIDs), whole, on both platforms and in "
        "every folder; such a run keeps no folder state: see Answering a data request",
        shown="everyone",
    )
    start_date: str | None = _setting(
        None, "first-run lower bound (UTC), e.g. `2025-01-01`: older threads are skipped"
    )
    lookback_seconds: int = _setting(
        3600, "how far before the last run's newest thread new messages are looked for"
    )
    recheck_window_days: float = _setting(
        7.0,
        "threads updated this close to a folder's newest are listed again every run, so "
        "reactions, edits, read state and moves reach the tables (0: off)",
    )
    page_size: int = _setting(100, "threads per listing call")
    messages_page_size: int = _setting(100, "messages per thread per call (nested and follow-up)")
    attachments_page_size: int = _setting(25, "attachments per message per call")
    max_calls_per_second: float = _setting(
        2.0,
        "per Page token: Meta's documented Conversations API limit; calls are paced at 90 % of "
        "it, and slower for a while after a throttle (0: no limit)",
    )
    max_concurrency: int = _setting(16, "Graph calls in flight at once, all Pages together")
    # What reading holds ahead of the load waits as decoded JSON (3.4 kB a message): at 1.09M
    # messages, 10,000 peaked 20 MB below 20,000, but 12 Pages with 2 s answers took 48.6 s
    # against 34.2 s (`throughput.py --pages 12 --latency 2.0 --scale 5`): fewer listings in
    # flight for all Pages together. 40,000 took 33.8 s.
    read_ahead_messages: int = _setting(
        20_000,
        "messages read and not yet handed to the load, all Pages together, past which no new "
        "listing call starts (nor past a checkpoint's worth): what bounds a run's memory",
    )
    slow_down_at_percent: float = _setting(
        75.0, "usage (`X-Business-Use-Case-Usage`) from which calls are spaced out"
    )
    usage_pause: float = _setting(60.0, "pause at 100 % usage, in seconds; scaled down below")
    throttle_backoff: float = _setting(
        1.0,
        "wait on a throttle error without a regain time (jittered), doubled each time the "
        "same call is refused again",
    )
    max_throttle_wait: float = _setting(
        3600.0, "seconds of throttle waiting before the run stops cleanly"
    )
    retry_backoff: float = _setting(1.0, "first retry delay of a transient fault, doubled after")
    max_retry_delay: float = _setting(60.0, "longest retry delay, in seconds")
    max_attempts: int = _setting(6, "tries of one call before Graph counts as unavailable")
    request_timeout: float = _setting(60.0, "seconds to wait for one answer")
    checkpoint_seconds: float = _setting(
        300.0, "a long run loads what it has read at least this often (seconds)"
    )
    # Each checkpoint is a dlt load with fixed costs of its own: 1.2 s of CPU at 126k messages
    # (measured: 5 checkpoints of 1,000 threads took 17.1 s, 2 of 2,500 13.8 s, 1 12.4 s), and
    # each leaves DuckDB a part-full row group per table that later checkpoints merge: the 1.09M
    # backfill took 72-76 s of CPU in 10 checkpoints of 4,000 threads against 86-93 s in 16 of
    # 2,500, for the same peak memory (measured alternately).
    checkpoint_threads: int = _setting(4000, "... and after this many threads")
    duckdb_memory_limit: str = _setting(
        DUCKDB_MEMORY_LIMIT,
        "memory DuckDB may use while a run loads the file meta-inbox makes for it (not DuckDB "
        "credentials of your own): raise it if a run stops out of memory (exit 16)",
    )
    pii: str = _setting("keep", "`keep`, `hash` or `drop` personal columns: see Privacy")
    pii_salt: TSecretStrValue | None = _setting(
        None, "key of the hashes with `pii = hash` (required then)", secret=True
    )

    def on_resolved(self) -> None:
        super().on_resolved()
        self.platforms = _chosen("platforms (--platform)", self.platforms, PLATFORMS)
        self.folders = _chosen("folders (--folder)", self.folders, FOLDERS)
        self.pii = _chosen("pii", [self.pii], PII_MODES)[0]
        if not self.access_token or not str(self.access_token).strip():
            raise missing_token()
        if self.page_ids is not None:
            self.page_ids = [str(page_id) for page_id in self.page_ids]
            bad = [p for p in self.page_ids if not _PAGE_ID.match(p)]
            if bad:
                raise BadInput(
                    f"page_ids (--page-id) {bad[0]!r} is not a Page id: Page ids are digits only."
                )
        if self.user_ids is not None:
            self.user_ids = graph_ids(self.user_ids, "user_ids (--user-id)")
        if self.start_date:
            self.start_date = iso_date(self.start_date, "start_date (--since)")
        if self.pii == "hash" and not (self.pii_salt and str(self.pii_salt).strip()):
            raise BadInput(
                "pii = hash needs a secret salt: set pii_salt (SOURCES__META_INBOX__PII_SALT or "
                ".dlt/secrets.toml)."
            )
        if not _MEMORY_SIZE.match(str(self.duckdb_memory_limit).strip()):
            raise BadInput(
                f"duckdb_memory_limit {self.duckdb_memory_limit!r} is not a size: write it as "
                "DuckDB does, e.g. 96MB or 1GB."
            )
        for name in ("base_url", "instagram_base_url"):
            if not re.match(r"^https?://[^/\s]+", getattr(self, name)):
                raise BadInput(f"{name} {getattr(self, name)!r} is not an http(s) URL.")
        for name in ("page_size", "messages_page_size", "attachments_page_size"):
            if not 1 <= getattr(self, name) <= 100:
                raise BadInput(f"{name} must be between 1 and 100.")
        for name in (
            "max_concurrency",
            "max_attempts",
            "checkpoint_threads",
            "read_ahead_messages",
        ):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1.")
        for name in (
            "lookback_seconds",
            "recheck_window_days",
            "max_calls_per_second",
            "max_throttle_wait",
            "checkpoint_seconds",
        ):
            if getattr(self, name) < 0:
                raise BadInput(f"{name} must not be negative.")

    @classmethod
    def from_config(cls, **overrides: Any) -> Settings:
        """Settings from dlt's config providers, with `overrides` (e.g. from the CLI) winning."""
        explicit = {key: value for key, value in overrides.items() if value is not None}
        unknown = sorted(set(explicit) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        try:
            with _bad_values():
                return resolve_configuration(cls(), sections=SECTIONS, explicit_value=explicit)
        except ConfigFieldMissingException as error:
            if "access_token" in error.fields:
                raise missing_token() from None
            raise

    def pacing(self) -> Pacing:
        return Pacing(
            max_calls_per_second=self.max_calls_per_second,
            slow_down_at_percent=self.slow_down_at_percent,
            usage_pause=self.usage_pause,
            throttle_backoff=self.throttle_backoff,
            max_throttle_wait=self.max_throttle_wait,
            max_attempts=self.max_attempts,
            retry_backoff=self.retry_backoff,
            max_retry_delay=self.max_retry_delay,
            timeout=self.request_timeout,
        )

    @property
    def start(self) -> datetime | None:
        return datetime.fromisoformat(self.start_date) if self.start_date else None

    @property
    def lookback(self) -> timedelta:
        return timedelta(seconds=self.lookback_seconds)

    @property
    def recheck_window(self) -> timedelta:
        return timedelta(days=self.recheck_window_days)


@contextmanager
def _bad_values() -> Iterator[None]:
    """A value dlt cannot turn into its setting's type is bad input, named by its key."""
    try:
        yield
    except ConfigValueCannotBeCoercedException as error:
        hint = getattr(error.hint, "__name__", str(error.hint))
        raise BadInput(
            f"{error.field_name} {error.field_value!r} is not a valid {hint}: fix it in "
            f".dlt/config.toml or SOURCES__META_INBOX__{error.field_name.upper()}."
        ) from None


def missing_token() -> BadInput:
    return BadInput(
        "No access token: set SOURCES__META_INBOX__ACCESS_TOKEN or access_token under "
        "[sources.meta_inbox] in .dlt/secrets.toml."
    )


def graph_ids(values: list[Any], name: str) -> list[str]:
    """People's ids as Graph gives them, digits only: an id is data, and anything else is
    refused before it reaches a call or a statement."""
    ids = [str(value).strip() for value in values]
    bad = [value for value in ids if not _PAGE_ID.match(value)]
    if bad or not ids:
        shown = repr(bad[0]) if bad else "(none)"
        raise BadInput(f"{name} {shown} is not a Graph id: ids are digits only.")
    return list(dict.fromkeys(ids))


def iso_date(value: str, name: str) -> str:
    """A date or time as ISO 8601 in UTC; a time without an offset is read as UTC."""
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise BadInput(
            f"{name} {value!r} is not a date: use YYYY-MM-DD or an ISO 8601 time."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()


def _chosen(name: str, values: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    chosen = [str(value).strip().lower() for value in values] if values else list(allowed)
    unknown = [value for value in chosen if value not in allowed]
    if unknown:
        raise BadInput(f"{name} {unknown[0]!r} is unknown: use {', '.join(allowed)}.")
    return list(dict.fromkeys(chosen))


def _documented() -> list[tuple[dataclasses.Field[Any], str]]:
    """Each setting with its default as the docs show it."""
    rows = []
    # The export's settings first, then the analysis ones that Settings inherits.
    analysis = {spec.name for spec in dataclasses.fields(Analysis)}
    for spec in sorted(dataclasses.fields(Settings), key=lambda spec: spec.name in analysis):
        if spec.name.startswith("__"):
            continue
        meta = spec.metadata
        if meta["shown"]:
            shown = meta["shown"]
        elif spec.default_factory is not dataclasses.MISSING:
            shown = f"`{_toml(spec.default_factory())}`"
        else:
            shown = "none" if spec.default is None else f"`{_toml(spec.default)}`"
        if meta["secret"]:
            shown += " (secret)"
        rows.append((spec, shown))
    return rows


def settings_markdown() -> str:
    """The README's configuration table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [
        f"| `{spec.name}` | {shown} | {spec.metadata['description']} |"
        for spec, shown in _documented()
    ]
    return "\n".join(lines) + "\n"


def config_toml() -> str:
    """`.dlt/config.toml`: every setting that is not a secret, commented out at its default."""
    lines = [
        "# meta-inbox configuration, generated by `meta-inbox config --toml`: every setting at its",
        "# default, commented out. Uncomment to change one, or set SOURCES__META_INBOX__<KEY>",
        "# (lists as JSON). Secrets (access_token, app_secret, pii_salt) go in .dlt/secrets.toml.",
        "",
        "[runtime]",
        "dlthub_telemetry = false",
        "",
        "[sources.meta_inbox]",
    ]
    for spec, _ in _documented():
        if spec.metadata["secret"]:
            continue
        default = (
            spec.default_factory()
            if spec.default_factory is not dataclasses.MISSING
            else spec.default
        )
        value = _EXAMPLES.get(spec.name, '""' if default is None else _toml(default))
        lines.append(f"# {spec.name} = {value}  # {spec.metadata['description']}")
    return "\n".join(lines) + "\n"


# What the commented `.dlt/config.toml` shows for settings without a default.
_EXAMPLES = {
    "page_ids": '["1234567890"]',
    "user_ids": '["6912345678901234"]',
    "start_date": '"2025-01-01"',
    "business_hours": '{ timezone = "Europe/Berlin", mon = ["09:00-12:30", "13:30-17:00"], '
    'tue = ["09:00-17:00"], wed = ["09:00-17:00"], thu = ["09:00-17:00"], fri = ["09:00-15:00"], '
    'sat = [], sun = [], holidays = ["2026-12-25", "2026-12-26"] }',
    "first_response_sla": '"1h"',
    "resolution_sla": '"8h"',
}


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@functools.cache  # read from the installed metadata: once a process
def meta_inbox_version() -> str:
    try:
        return version("meta-inbox")
    except PackageNotFoundError:
        return "unknown"
