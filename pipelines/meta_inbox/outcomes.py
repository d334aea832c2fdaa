"""What a failure means for whoever runs meta-inbox: an exit code and one line saying what to do.

The exit codes are part of the public contract (README, "When things go wrong"); the CLI prints
the line, and the run record (`_meta_inbox_runs`) keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .errors import (
    BadInput,
    Busy,
    DestinationCredentialsMissing,
    DestinationLocked,
    DestinationOutOfMemory,
    DestinationUnwritable,
    FolderFailed,
    Interrupted,
    MissingExtra,
    PageFailed,
    UnknownPages,
    causes,
)
from .graph_client import GraphUnavailable, GraphUnreachable, ThrottleBudgetExceeded
from .graph_errors import ErrorKind, GraphError


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
    DESTINATION_LOCKED = 11
    DESTINATION_UNWRITABLE = 12
    DESTINATION_CREDENTIALS = 13
    MISSING_EXTRA = 14
    GRAPH_UNREACHABLE = 15
    DESTINATION_OUT_OF_MEMORY = 16
    INTERRUPTED = 130  # 128 + SIGINT, as shells report it
    TERMINATED = 143  # 128 + SIGTERM


@dataclass(frozen=True)
class Failure:
    code: ExitCode
    line: str


_PLAIN = (
    (BadInput, ExitCode.BAD_INPUT, "{error}"),
    (Busy, ExitCode.BUSY, "{error}"),
    (UnknownPages, ExitCode.UNKNOWN_PAGE, "{error}: fix page_ids (or --page-id)."),
    (DestinationLocked, ExitCode.DESTINATION_LOCKED, "{error}"),
    (DestinationUnwritable, ExitCode.DESTINATION_UNWRITABLE, "{error}"),
    (DestinationCredentialsMissing, ExitCode.DESTINATION_CREDENTIALS, "{error}"),
    (DestinationOutOfMemory, ExitCode.DESTINATION_OUT_OF_MEMORY, "{error}"),
    (MissingExtra, ExitCode.MISSING_EXTRA, "{error}"),
    (
        ThrottleBudgetExceeded,
        ExitCode.THROTTLED,
        "Stopped waiting on Graph API rate limits ({error}); what was read is loaded and the "
        "next run goes on from there: run again later or raise max_throttle_wait.",
    ),
    (
        GraphUnreachable,
        ExitCode.GRAPH_UNREACHABLE,
        "{error}: check base_url (SOURCES__META_INBOX__BASE_URL) and the network; nothing was "
        "read.",
    ),
    (
        GraphUnavailable,
        ExitCode.UNAVAILABLE,
        "{error}: check base_url and the network, or run again later; what was read is loaded "
        "and the next run goes on from there.",
    ),
)


def explain(error: BaseException) -> Failure | None:
    """The exit code and line for an error a user can act on, or None for a bug."""
    for cause in causes(error):
        if isinstance(cause, Interrupted):
            code = ExitCode.TERMINATED if cause.signal_number == 15 else ExitCode.INTERRUPTED
            return Failure(code, str(cause))
        if isinstance(cause, FolderFailed):
            return Failure(
                ExitCode.PARTIAL,
                f"{cause}: the other folders and Pages are loaded. Drop the folder from "
                "`folders` (--folder) if Graph does not have it for this platform.",
            )
        if isinstance(cause, PageFailed):
            inner = _graph(cause.error)
            if inner is None:
                return None
            return Failure(inner.code, f"Page {cause.page_id} ({cause.page_name}): {inner.line}")
        for kind, code, template in _PLAIN:
            if isinstance(cause, kind):
                return Failure(code, template.format(error=cause))
        if isinstance(cause, GraphError):
            return _graph(cause)
    return None


def _graph(error: GraphError) -> Failure | None:
    trace = f" (fbtrace_id {error.fbtrace_id})" if error.fbtrace_id else ""
    match error.kind:
        case ErrorKind.TOKEN:
            return Failure(
                ExitCode.TOKEN,
                f"The access token was refused ({error.token_problem}: {error.text}){trace}. "
                "Renew it: generate a new Page token (Graph API Explorer or /me/accounts with a "
                "long-lived user token) and set SOURCES__META_INBOX__ACCESS_TOKEN or "
                ".dlt/secrets.toml.",
            )
        case ErrorKind.PAGE_TOKEN_REQUIRED:
            return Failure(
                ExitCode.PAGE_TOKEN_REQUIRED,
                f"Graph needs a Page access token here{trace}, and this one is a user token that "
                "does not manage this Page: use the Page's own token, or a user token of someone "
                "with a task on the Page (its Page tokens are found through /me/accounts).",
            )
        case ErrorKind.PERMISSION:
            needed = (
                ", ".join(error.missing_permissions) or "pages_messaging, pages_manage_metadata"
            )
            return Failure(
                ExitCode.PERMISSION,
                f"The token lacks a permission ({error.text}){trace}. Grant {needed} to the "
                "app (and instagram_basic, instagram_manage_messages for Instagram), then renew "
                "the token.",
            )
        case ErrorKind.APP_SECRET_PROOF:
            return Failure(
                ExitCode.BAD_INPUT,
                f"The app requires appsecret_proof{trace}: set app_secret "
                "(SOURCES__META_INBOX__APP_SECRET or .dlt/secrets.toml) to the app's secret.",
            )
        case ErrorKind.NOT_FOUND:
            return Failure(
                ExitCode.UNKNOWN_PAGE,
                f"Graph does not know {error.path} or this token cannot read it{trace}: check "
                "page_ids and that the token belongs to a Page admin.",
            )
        case ErrorKind.BAD_FIELDS:
            return Failure(
                ExitCode.UNEXPECTED,
                f"Graph could not parse the fields meta-inbox asked for ({error.text}){trace}: "
                "this is a bug in meta-inbox, please report it with the api_version you use.",
            )
    return None
