"""`explain`: the exit code (README, "When things go wrong") and the one line printed for every
failure a user can fix; None for a bug."""

from __future__ import annotations

import pytest
from support import from_envelope

from meta_inbox.errors import (
    BadInput,
    Busy,
    DestinationCredentialsMissing,
    DestinationLocked,
    DestinationOutOfMemory,
    DestinationUnwritable,
    Interrupted,
    MissingExtra,
    PageFailed,
    UnknownPages,
)
from meta_inbox.graph_client import GraphUnavailable, GraphUnreachable, ThrottleBudgetExceeded
from meta_inbox.graph_errors import GraphError
from meta_inbox.outcomes import ExitCode, Failure, explain

RENEW = (
    "Renew it: generate a new Page token (Graph API Explorer or /me/accounts with a long-lived "
    "user token) and set SOURCES__META_INBOX__ACCESS_TOKEN or .dlt/secrets.toml."
)
GRANT = (
    "Grant pages_messaging to the app (and instagram_basic, instagram_manage_messages for "
    "Instagram), then renew the token."
)
PAGE_TOKEN = (
    "Graph needs a Page access token here, and this one is a user token that does not manage "
    "this Page: use the Page's own token, or a user token of someone with a task on the Page "
    "(its Page tokens are found through /me/accounts)."
)
UNAVAILABLE = "Graph API at http://127.0.0.1:9 did not answer properly after 6 attempts (timed out)"
UNREACHABLE = "Graph API at http://127.0.0.1:9 could not be reached (connection refused)"


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            BadInput("platforms 'whatsapp' is unknown: use messenger, instagram."),
            2,
            "platforms 'whatsapp' is unknown: use messenger, instagram.",
        ),
        (
            UnknownPages(["1000000000000004"], ["1000000000000001", "1000000000000002"]),
            6,
            "page_ids 1000000000000004 not found among the Pages this token can read "
            "(1000000000000001, 1000000000000002): fix page_ids (or --page-id).",
        ),
        (
            ThrottleBudgetExceeded(waited=3540, ceiling=3600, needed=3540),
            7,
            "Stopped waiting on Graph API rate limits (Graph API rate limits would need another "
            "3540 s of waiting after 3540 s already; the ceiling is 3600 s); what was read is "
            "loaded and the next run goes on from there: run again later or raise "
            "max_throttle_wait.",
        ),
        (
            GraphUnreachable(UNREACHABLE),
            15,
            f"{UNREACHABLE}: check base_url (SOURCES__META_INBOX__BASE_URL) and the network; "
            "nothing was read.",
        ),
        (
            GraphUnavailable(UNAVAILABLE),
            8,
            f"{UNAVAILABLE}: check base_url and the network, or run again later; what was read "
            "is loaded and the next run goes on from there.",
        ),
        (Busy("Another run of pipeline 'meta_inbox' is in progress."), 10, None),
        (DestinationLocked("meta_inbox.duckdb is open in another process."), 11, None),
        (DestinationUnwritable("Cannot write to /data."), 12, None),
        (DestinationCredentialsMissing("postgres needs credentials."), 13, None),
        (MissingExtra("pip install 'meta-inbox[postgres]'"), 14, None),
        (DestinationOutOfMemory("DuckDB ran out of memory while loading."), 16, None),
        (
            Interrupted(2, "SIGINT"),
            130,
            "interrupted by SIGINT: what was read is loaded; the next run goes on from there.",
        ),
        (
            Interrupted(15, "SIGTERM"),
            143,
            "interrupted by SIGTERM: what was read is loaded; the next run goes on from there.",
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_failures_of_meta_inbox(error: Exception, code: int, line: str | None) -> None:
    """`line` None: the error's own message is the line."""
    assert explain(error) == Failure(ExitCode(code), line or str(error))


def test_expired_token() -> None:
    assert explain(from_envelope("error_token_expired.json", path="/v25.0/me")) == Failure(
        ExitCode.TOKEN,
        "The access token was refused (the token has expired: Error validating access token: "
        "Session has expired on Saturday, 30-May-26 10:00:00 PDT. The current time is Saturday, "
        f"30-May-26 10:42:11 PDT.) (fbtrace_id AkP7zQ2wN5xR0vT3yU6iO9a). {RENEW}",
    )


def test_missing_permission_of_one_page() -> None:
    error = from_envelope("error_permission.json")
    assert explain(PageFailed("1000000000000002", "Ünicorn Bikes 🚲", error)) == Failure(
        ExitCode.PERMISSION,
        "Page 1000000000000002 (Ünicorn Bikes 🚲): The token lacks a permission ((#200) Requires "
        f"pages_messaging permission to manage the object) (fbtrace_id AzR4tY7uI0oP3aS6dF9gH2j). "
        f"{GRANT}",
    )


def test_page_token_required() -> None:
    error = GraphError("(#210) A page access token is required to request this resource.", code=210)
    assert explain(PageFailed("1000000000000001", "Café Olé", error)) == Failure(
        ExitCode.PAGE_TOKEN_REQUIRED, f"Page 1000000000000001 (Café Olé): {PAGE_TOKEN}"
    )


def test_unknown_object() -> None:
    error = GraphError(
        "Unsupported get request. Object with ID '1000000000000009' does not exist",
        code=100,
        subcode=33,
        fbtrace_id="AbCdEf",
        path="/v25.0/1000000000000009/conversations",
    )
    assert explain(error) == Failure(
        ExitCode.UNKNOWN_PAGE,
        "Graph does not know /v25.0/1000000000000009/conversations or this token cannot read it "
        "(fbtrace_id AbCdEf): check page_ids and that the token belongs to a Page admin.",
    )


def test_appsecret_proof_required() -> None:
    error = GraphError("API calls from the server require an appsecret_proof argument", code=100)
    assert explain(error) == Failure(
        ExitCode.BAD_INPUT,
        "The app requires appsecret_proof: set app_secret (SOURCES__META_INBOX__APP_SECRET or "
        ".dlt/secrets.toml) to the app's secret.",
    )


def test_fields_graph_cannot_parse_are_our_bug_with_a_line() -> None:
    error = GraphError("Cannot parse fields: unexpected '}'", code=2500, fbtrace_id="AbCdEf")
    assert explain(error) == Failure(
        ExitCode.UNEXPECTED,
        "Graph could not parse the fields meta-inbox asked for (Cannot parse fields: unexpected "
        "'}') (fbtrace_id AbCdEf): this is a bug in meta-inbox, please report it with the "
        "api_version you use.",
    )


@pytest.mark.parametrize(
    ("code", "subcode", "message"),
    [
        (190, 463, "Error validating access token: Session has expired"),
        (210, None, "(#210) A page access token is required to request this resource."),
        (200, None, "(#200) Requires pages_messaging permission to manage the object"),
        (100, None, "API calls from the server require an appsecret_proof argument"),
        (100, 33, "Object with ID '1000000000000009' does not exist"),
        (2500, None, "Cannot parse fields: unexpected '}'"),
    ],
    ids=["token", "page token required", "permission", "appsecret_proof", "not found", "fields"],
)
def test_the_line_shows_the_fbtrace_id_graph_gave(
    code: int, subcode: int | None, message: str
) -> None:
    traced = GraphError(message, code=code, subcode=subcode, fbtrace_id="AzR4tY7uI0oP3aS6dF9gH2j")
    untraced = GraphError(message, code=code, subcode=subcode)

    failure, plain = explain(traced), explain(untraced)

    assert failure is not None
    assert plain is not None
    assert "(fbtrace_id AzR4tY7uI0oP3aS6dF9gH2j)" in failure.line
    assert "fbtrace_id" not in plain.line
    assert "\n" not in failure.line


class Wrapper(Exception):
    """How dlt hands over what a resource raised: in an `exception` attribute."""

    def __init__(self, exception: BaseException) -> None:
        super().__init__("Pipeline execution failed at stage extract")
        self.exception = exception


def test_wrapped_failures_are_explained_by_their_cause() -> None:
    inner = BadInput("start_date 'yesterday' is not a date: use YYYY-MM-DD or an ISO 8601 time.")

    def extract() -> None:
        try:
            raise Wrapper(inner)
        except Wrapper as wrapper:
            raise RuntimeError("extract failed") from wrapper

    with pytest.raises(RuntimeError) as raised:
        extract()

    assert explain(raised.value) == Failure(ExitCode.BAD_INPUT, str(inner))


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        Wrapper(KeyError("id")),
        GraphError("(#100) Invalid cursor", code=100),
        GraphError("An unknown error occurred", code=12345),
        PageFailed("1000000000000001", "Café Olé", GraphError("(#100) Invalid cursor", code=100)),
    ],
    ids=["ValueError", "wrapped KeyError", "invalid parameter", "unknown code", "Page, unknown"],
)
def test_bugs_have_no_explanation(error: Exception) -> None:
    assert explain(error) is None
