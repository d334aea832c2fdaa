"""What Graph API error answers mean. The one module that reads Graph's error codes.

Graph answers errors as `{"error": {"message", "code", "error_subcode", "is_transient",
"fbtrace_id", "error_user_title", "error_user_msg"}}`, mostly with HTTP 400 whatever the cause,
so the code, not the status, says what happened. `error_user_title` / `error_user_msg` are
written for a person in the token owner's language: they are shown, never classified.
Everything else in meta-inbox asks a `GraphError` for its `kind`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class ErrorKind(Enum):
    THROTTLED = "throttled"
    TOO_MUCH_DATA = "too much data"  # "Please reduce the amount of data you're asking for"
    TRANSIENT = "transient"
    TOKEN = "token"  # invalid, expired or revoked
    PAGE_TOKEN_REQUIRED = "page token required"
    PERMISSION = "permission"
    NOT_FOUND = "not found"  # does not exist, or this token cannot see it
    APP_SECRET_PROOF = "appsecret_proof required"
    NO_ACCOUNTS_EDGE = "no accounts edge"  # /me/accounts asked with a Page token
    INVALID_PARAMETER = "invalid parameter"
    MESSAGE_DELETED = "message deleted"  # Instagram's answer for details it withholds
    BAD_FIELDS = "bad fields"  # Graph cannot parse our `fields`: a bug of ours
    BLOCKED = "temporarily blocked"
    OTHER = "other"

    @property
    def concerns_one_page(self) -> bool:
        """Errors about one Page's token, role or permissions: the other Pages can go on."""
        return self in _ONE_PAGE


_ONE_PAGE = frozenset(
    {ErrorKind.TOKEN, ErrorKind.PAGE_TOKEN_REQUIRED, ErrorKind.PERMISSION, ErrorKind.NOT_FOUND}
)
_THROTTLE_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006})
_APP_OR_USER_THROTTLE_CODES = frozenset({4, 17})  # every Page of the app and the token shares them
_TOKEN_SUBCODES = {
    458: "the app was removed by the user",
    459: "the user must log in to Facebook to fix their account",
    460: "the password was changed since the token was issued",
    463: "the token has expired",
    464: "the user is not confirmed",
    467: "the token is invalid",
    492: "the user has no role on the Page any more",
}
PERMISSIONS = (
    "pages_messaging",
    "pages_manage_metadata",
    "pages_read_engagement",
    "pages_show_list",
    "instagram_manage_messages",
    "instagram_basic",
)
_PERMISSION_NAME = re.compile("|".join(PERMISSIONS))


def classify(code: int | None, subcode: int | None, message: str, *, status: int | None,
             transient: bool, path: str) -> ErrorKind:  # fmt: skip
    """The meaning of one error answer, from its code, subcode and transience, and only then from
    the developer `message` (English whatever the token owner's language).

    Code 1 is both "unknown error" and "reduce the amount of data": without the English text it
    reads as transient, and the listing that keeps failing with it is asked smaller all the same
    (`ConversationsApi.list_threads`)."""
    text = message.lower()
    if code in _THROTTLE_CODES:
        return ErrorKind.THROTTLED
    if code == 1 and "reduce the amount of data" in text:
        return ErrorKind.TOO_MUCH_DATA
    if code == 190:
        return ErrorKind.TOKEN
    if code == 210:
        return ErrorKind.PAGE_TOKEN_REQUIRED
    if code == 10 or (code is not None and 200 <= code <= 299):
        return ErrorKind.PERMISSION
    if code == 100:
        if subcode == 33:
            return ErrorKind.NOT_FOUND
        if "appsecret_proof" in text:
            return ErrorKind.APP_SECRET_PROOF
        if path.rstrip("/").endswith("/accounts") and "accounts" in text:
            return ErrorKind.NO_ACCOUNTS_EDGE
        return ErrorKind.INVALID_PARAMETER
    if code == 9000001:
        return ErrorKind.MESSAGE_DELETED
    if code == 2500:
        return ErrorKind.BAD_FIELDS
    if code == 368:
        return ErrorKind.BLOCKED
    if transient or code in (1, 2) or (code is None and status is not None and status >= 500):
        return ErrorKind.TRANSIENT
    return ErrorKind.OTHER


@dataclass(frozen=True)
class Usage:
    """The highest usage percentage Graph reported on one answer, and its regain time."""

    percent: float = 0.0
    regain_seconds: float = 0.0


class GraphError(Exception):
    """An error answered by the Graph API, in its `{"error": {...}}` envelope."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        is_transient: bool = False,
        fbtrace_id: str | None = None,
        path: str = "",
        usage: Usage | None = None,
        error_type: str | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message  # the developer message: what `kind` reads
        self.user_message = user_message  # for a person, maybe in another language: shown only
        self.error_type = error_type
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.is_transient = is_transient
        self.fbtrace_id = fbtrace_id
        self.path = path
        self.usage = usage
        self.kind = classify(
            code, subcode, message, status=http_status, transient=is_transient, path=path
        )

    def __str__(self) -> str:
        code = f"{self.code}/{self.subcode}" if self.subcode else f"{self.code}"
        trace = f" (fbtrace_id {self.fbtrace_id})" if self.fbtrace_id else ""
        # No code: Graph's answer said what went wrong without an error envelope.
        what = "Graph API" if self.code is None else f"Graph API error {code}"
        return f"{what} on {self.path}: {self.text}{trace}"

    @property
    def text(self) -> str:
        """What Graph said, for a person: its developer message, and its words for the user."""
        if self.user_message and self.user_message != self.message:
            return f"{self.message} ({self.user_message})"
        return self.message

    @property
    def first_line(self) -> str:
        """The error in one line, for the run record."""
        return str(self).splitlines()[0]

    @property
    def is_retryable(self) -> bool:
        return self.kind is ErrorKind.TRANSIENT

    @property
    def throttles_every_page(self) -> bool:
        """A throttle of the app's or the user's limit, not of one Page's."""
        return self.kind is ErrorKind.THROTTLED and self.code in _APP_OR_USER_THROTTLE_CODES

    @property
    def token_problem(self) -> str:
        """Why a token was refused, in words, from the subcode Graph gave."""
        return _TOKEN_SUBCODES.get(self.subcode or 0, "the token is invalid or expired")

    @property
    def missing_permissions(self) -> list[str]:
        """Permissions Graph names in its message (it usually names the one missing)."""
        return sorted(set(_PERMISSION_NAME.findall(self.message)))
