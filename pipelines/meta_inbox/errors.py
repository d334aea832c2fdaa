"""Failures a user can act on: one plain line each, and an exit code of its own.

The exit codes are part of the public contract (README, "When things go wrong").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from .conversations_api import UnknownPages
from .graph_client import (
    CANNOT_PARSE_FIELDS,
    OBJECT_NOT_FOUND_SUBCODE,
    PAGE_TOKEN_REQUIRED,
    PERMISSION_CODES,
    TOKEN_INVALID,
    GraphError,
    GraphUnavailable,
    ThrottleBudgetExceeded,
)


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    BAD_INPUT = 2
    TOKEN = 3
    PAGE_TOKEN_REQUIRED = 4
    PERMISSION = 5
    UNKNOWN_PAGE = 6
    THROTTLED = 7
    UNAVAILABLE = 8
    PARTIAL = 9
    BUSY = 10


class BadInput(Exception):
    """Configuration or arguments that cannot work: refused before the first call."""


class Busy(Exception):
    """Another run of the same pipeline holds its lock."""


class PageFailed(Exception):
    """One Page could not be read; `error` says why."""

    def __init__(self, page_id: str, page_name: str, error: GraphError) -> None:
        super().__init__(f"Page {page_id} ({page_name}): {error}")
        self.page_id = page_id
        self.page_name = page_name
        self.error = error


def missing_token() -> BadInput:
    return BadInput(
        "No access token: set SOURCES__META_INBOX__ACCESS_TOKEN or access_token under "
        "[sources.meta_inbox] in .dlt/secrets.toml."
    )


@dataclass(frozen=True)
class Failure:
    code: ExitCode
    line: str


_TOKEN_SUBCODES = {
    458: "the app was removed by the user",
    459: "the user must log in to Facebook to fix their account",
    460: "the password was changed since the token was issued",
    463: "the token has expired",
    464: "the user is not confirmed",
    467: "the token is invalid",
    492: "the user has no role on the Page any more",
}

_PERMISSIONS = (
    "pages_messaging",
    "pages_manage_metadata",
    "pages_read_engagement",
    "instagram_manage_messages",
    "instagram_basic",
    "pages_show_list",
)


def explain(error: BaseException) -> Failure | None:
    """The one line to print for an error a user can act on, or None for a bug."""
    for cause in _causes(error):
        if isinstance(cause, BadInput):
            return Failure(ExitCode.BAD_INPUT, str(cause))
        if isinstance(cause, Busy):
            return Failure(ExitCode.BUSY, str(cause))
        if isinstance(cause, PageFailed):
            inner = _explain_graph(cause.error)
            if inner is None:
                return None
            return Failure(inner.code, f"Page {cause.page_id} ({cause.page_name}): {inner.line}")
        if isinstance(cause, UnknownPages):
            return Failure(ExitCode.UNKNOWN_PAGE, f"{cause}: fix page_ids (or --page-id).")
        if isinstance(cause, ThrottleBudgetExceeded):
            return Failure(
                ExitCode.THROTTLED,
                f"Stopped waiting on Graph API rate limits ({cause}); what was read is loaded "
                "and the next run goes on from there: run again later or raise max_throttle_wait.",
            )
        if isinstance(cause, GraphUnavailable):
            return Failure(
                ExitCode.UNAVAILABLE,
                f"{cause}; what was read is loaded and the next run goes on from there.",
            )
        if isinstance(cause, GraphError):
            return _explain_graph(cause)
    return None


def _explain_graph(error: GraphError) -> Failure | None:
    if error.code == TOKEN_INVALID:
        why = _TOKEN_SUBCODES.get(error.subcode or 0, "the token is invalid or expired")
        return Failure(
            ExitCode.TOKEN,
            f"The access token was refused ({why}: {error.message}). Renew it: generate a new "
            "Page token (Graph API Explorer or /me/accounts with a long-lived user token) and "
            "set SOURCES__META_INBOX__ACCESS_TOKEN or .dlt/secrets.toml.",
        )
    if error.code == PAGE_TOKEN_REQUIRED:
        return Failure(
            ExitCode.PAGE_TOKEN_REQUIRED,
            "Graph needs a Page access token here, and this one is a user token that does not "
            "manage this Page: use the Page's own token, or a user token of someone with a task "
            "on the Page (its Page tokens are found through /me/accounts).",
        )
    if error.code in PERMISSION_CODES:
        named = [p for p in _PERMISSIONS if p in error.message]
        needed = ", ".join(named) if named else "pages_messaging, pages_manage_metadata"
        return Failure(
            ExitCode.PERMISSION,
            f"The token lacks a permission ({error.message}). Grant {needed} to the app "
            "(and instagram_basic, instagram_manage_messages for Instagram), then renew the token.",
        )
    if error.code == 100 and "appsecret_proof" in error.message:
        return Failure(
            ExitCode.BAD_INPUT,
            "The app requires appsecret_proof: set app_secret (SOURCES__META_INBOX__APP_SECRET "
            "or .dlt/secrets.toml) to the app's secret.",
        )
    if error.code == 100 and error.subcode == OBJECT_NOT_FOUND_SUBCODE:
        return Failure(
            ExitCode.UNKNOWN_PAGE,
            f"Graph does not know {error.path} or this token cannot read it: check page_ids "
            "and that the token belongs to a Page admin.",
        )
    if error.code == CANNOT_PARSE_FIELDS:
        return Failure(
            ExitCode.UNEXPECTED,
            f"Graph could not parse the fields meta-inbox asked for ({error.message}): this is a "
            "bug in meta-inbox, please report it with the api_version you use.",
        )
    return None


def innermost(error: BaseException) -> BaseException:
    """The error at the bottom of what dlt (and we) wrapped around it."""
    return list(_causes(error))[-1]


def _causes(error: BaseException) -> Iterator[BaseException]:
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
