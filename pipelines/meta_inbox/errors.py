"""Failures meta-inbox raises on purpose: what went wrong, in terms a user can act on.

They carry no exit codes: `outcomes.py` says what each means for a caller.
"""

from __future__ import annotations

from collections.abc import Iterator

from .graph_errors import GraphError


class MetaInboxError(Exception):
    """A failure with a plain-language message."""


class BadInput(MetaInboxError):
    """Configuration or arguments that cannot work: refused before the first call."""


class Busy(MetaInboxError):
    """Another run of the same pipeline holds its lock."""


class UnknownPages(MetaInboxError):
    """`page_ids` names Pages the token cannot read."""

    def __init__(self, missing: list[str], available: list[str]) -> None:
        super().__init__(
            f"page_ids {', '.join(missing)} not found among the Pages this token can read "
            f"({', '.join(available) or 'none'})"
        )
        self.missing = missing


class PageFailed(MetaInboxError):
    """One Page could not be read; `error` says why."""

    def __init__(self, page_id: str, page_name: str, error: GraphError) -> None:
        super().__init__(f"Page {page_id} ({page_name}): {error}")
        self.page_id = page_id
        self.page_name = page_name
        self.error = error


class FolderFailed(MetaInboxError):
    """Graph refused the listing of one folder of a Page; the other folders and Pages go on."""

    def __init__(self, page_id: str, page_name: str, platform: str, folder: str, error: GraphError):
        super().__init__(
            f"Page {page_id} ({page_name}): Graph refused the {platform} folder {folder} "
            f"({error.first_line})"
        )
        self.page_id = page_id
        self.platform = platform
        self.folder = folder
        self.error = error


class DestinationLocked(MetaInboxError):
    """The destination is held by another process (a DuckDB file open elsewhere)."""


class DestinationUnwritable(MetaInboxError):
    """Files cannot be written where the destination or the pipeline keeps them."""


class DestinationOutOfMemory(MetaInboxError):
    """DuckDB ran out of the memory it was given while loading."""


class DestinationCredentialsMissing(MetaInboxError):
    """The destination needs credentials that no config provider holds."""


class MissingExtra(MetaInboxError):
    """A package the chosen destination needs is not installed."""


class Interrupted(MetaInboxError):
    """The run was asked to stop (SIGINT or SIGTERM) and stopped after loading what it read."""

    def __init__(self, signal_number: int, signal_name: str) -> None:
        super().__init__(
            f"interrupted by {signal_name}: what was read is loaded; the next run goes on "
            "from there."
        )
        self.signal_number = signal_number


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: dlt wraps what a resource raises, sometimes twice."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "exception", None)
        current = (
            wrapped
            if isinstance(wrapped, BaseException)
            else current.__cause__ or current.__context__
        )


def innermost(error: BaseException) -> BaseException:
    """The error at the bottom of what dlt (and we) wrapped around it."""
    return list(causes(error))[-1]
