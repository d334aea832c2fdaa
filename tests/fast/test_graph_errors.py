"""What each documented Graph error means (the notes' error table), from the error envelopes in
`tests/fixtures/graph` where there is one."""

from __future__ import annotations

import pytest
from support import CONVERSATIONS, from_envelope

from meta_inbox.graph_errors import ErrorKind, GraphError, classify


@pytest.mark.parametrize(
    ("name", "status", "path", "kind"),
    [
        ("error_reduce_data.json", 500, CONVERSATIONS, ErrorKind.TOO_MUCH_DATA),
        ("error_throttle_80006.json", 400, CONVERSATIONS, ErrorKind.THROTTLED),
        ("error_token_expired.json", 400, "/v25.0/me", ErrorKind.TOKEN),
        ("error_permission.json", 400, CONVERSATIONS, ErrorKind.PERMISSION),
        ("error_message_deleted.json", 400, "/v25.0/aWdGGi", ErrorKind.MESSAGE_DELETED),
        ("error_no_accounts_edge.json", 400, "/v25.0/me/accounts", ErrorKind.NO_ACCOUNTS_EDGE),
    ],
)
def test_the_fixtures_error_answers(name: str, status: int, path: str, kind: ErrorKind) -> None:
    assert from_envelope(name, status=status, path=path).kind is kind


def test_a_missing_field_elsewhere_than_me_accounts_is_an_invalid_parameter() -> None:
    error = from_envelope("error_no_accounts_edge.json", path="/v25.0/1000000000000001/threads")
    assert error.kind is ErrorKind.INVALID_PARAMETER


def kind_of(
    code: int | None,
    subcode: int | None = None,
    message: str = "(#0) An error",
    *,
    status: int | None = 400,
    transient: bool = False,
    path: str = CONVERSATIONS,
) -> ErrorKind:
    return classify(code, subcode, message, status=status, transient=transient, path=path)


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80001, 80002, 80006])
def test_throttle_codes(code: int) -> None:
    assert kind_of(code) is ErrorKind.THROTTLED
    # Graph marks some throttles transient: they are waited out, not retried at once.
    assert kind_of(code, transient=True) is ErrorKind.THROTTLED


@pytest.mark.parametrize("code", [1, 2])
def test_unknown_and_temporary_service_errors_are_transient(code: int) -> None:
    assert kind_of(code, message="An unexpected error has occurred.", status=500) is (
        ErrorKind.TRANSIENT
    )


@pytest.mark.parametrize("subcode", [None, 458, 459, 460, 463, 464, 467, 492])
def test_code_190_is_a_token_problem_whatever_the_subcode(subcode: int | None) -> None:
    assert kind_of(190, subcode) is ErrorKind.TOKEN


@pytest.mark.parametrize(
    ("subcode", "problem"),
    [
        (458, "the app was removed by the user"),
        (459, "the user must log in to Facebook to fix their account"),
        (460, "the password was changed since the token was issued"),
        (463, "the token has expired"),
        (464, "the user is not confirmed"),
        (467, "the token is invalid"),
        (492, "the user has no role on the Page any more"),
        (None, "the token is invalid or expired"),
    ],
)
def test_token_problems_in_words(subcode: int | None, problem: str) -> None:
    assert GraphError("Error validating access token", code=190, subcode=subcode).token_problem == (
        problem
    )


@pytest.mark.parametrize("code", [10, 200, 230, 299])
def test_permission_codes(code: int) -> None:
    assert kind_of(code) is ErrorKind.PERMISSION


def test_the_missing_permission_is_read_from_the_message() -> None:
    assert from_envelope("error_permission.json").missing_permissions == ["pages_messaging"]


@pytest.mark.parametrize(
    ("code", "subcode", "message", "kind"),
    [
        (100, 33, "Object with ID '1' does not exist", ErrorKind.NOT_FOUND),
        (
            100,
            None,
            "API calls from the server require an appsecret_proof argument",
            ErrorKind.APP_SECRET_PROOF,
        ),
        (100, None, "Invalid appsecret_proof provided", ErrorKind.APP_SECRET_PROOF),
        (100, None, "(#100) Invalid cursor", ErrorKind.INVALID_PARAMETER),
        (210, None, "(#210) A page access token is required", ErrorKind.PAGE_TOKEN_REQUIRED),
        (368, None, "(#368) The action attempted has been deemed abusive", ErrorKind.BLOCKED),
        (2500, None, "Cannot parse fields: unexpected '}'", ErrorKind.BAD_FIELDS),
        (9000001, None, "This Message has been deleted", ErrorKind.MESSAGE_DELETED),
        (300, None, "(#300) Edit failure", ErrorKind.OTHER),
    ],
)
def test_codes_that_stop(code: int, subcode: int | None, message: str, kind: ErrorKind) -> None:
    assert kind_of(code, subcode, message) is kind


def test_is_transient_makes_an_unknown_code_transient() -> None:
    assert kind_of(12345, transient=True) is ErrorKind.TRANSIENT
    assert kind_of(12345) is ErrorKind.OTHER


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT), (400, ErrorKind.OTHER)],
)
def test_without_a_code_only_http_5xx_is_transient(status: int, kind: ErrorKind) -> None:
    assert kind_of(None, message=f"HTTP {status} without a Graph error body", status=status) is kind


def test_the_code_not_the_status_says_what_happened() -> None:
    assert kind_of(190, 463, status=500) is ErrorKind.TOKEN
    assert kind_of(100, status=503) is ErrorKind.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("kind", "one_page"),
    [
        (ErrorKind.TOKEN, True),
        (ErrorKind.PAGE_TOKEN_REQUIRED, True),
        (ErrorKind.PERMISSION, True),
        (ErrorKind.NOT_FOUND, True),
        (ErrorKind.THROTTLED, False),
        (ErrorKind.TRANSIENT, False),
        (ErrorKind.BAD_FIELDS, False),
        (ErrorKind.APP_SECRET_PROOF, False),
    ],
)
def test_which_errors_concern_one_page_only(kind: ErrorKind, one_page: bool) -> None:
    assert kind.concerns_one_page is one_page


def test_the_error_as_text_names_code_path_message_and_trace() -> None:
    assert str(from_envelope("error_token_expired.json", path="/v25.0/me")) == (
        "Graph API error 190/463 on /v25.0/me: Error validating access token: Session has expired "
        "on Saturday, 30-May-26 10:00:00 PDT. The current time is Saturday, 30-May-26 10:42:11 PDT."
        " (fbtrace_id AkP7zQ2wN5xR0vT3yU6iO9a)"
    )
    assert str(from_envelope("error_reduce_data.json")) == (
        f"Graph API error 1 on {CONVERSATIONS}: Please reduce the amount of data you're asking "
        "for, then retry your request"
    )
