"""The Graph client against the emulator over real HTTP, on a clock that only its sleeps move:
the delays it asks for are asserted exactly, and no test waits for them."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from support import FakeClock, RecordingSession, connect

from meta_inbox.emulator import Emulator, Limits
from meta_inbox.graph_client import (
    PACE_MARGIN,
    GraphClient,
    GraphUnavailable,
    GraphUnreachable,
    Pacer,
    Redactor,
    RetryLater,
    TaskTries,
    ThrottleBudgetExceeded,
    next_page_url,
    redact_log_records,
)
from meta_inbox.graph_errors import ErrorKind, GraphError

pytest_plugins = ["support"]

CAFE, BIKES = "1000000000000001", "1000000000000002"
CAFE_ME = {"id": CAFE, "name": "Café Olé"}
SECOND = 1 / PACE_MARGIN  # the interval between turns at 1 call a second, less the margin


def page_client(emulator: Emulator, clock: FakeClock, **options: Any) -> GraphClient:
    """A client with Café Olé's Page token, in its own lane."""
    connection = connect(emulator.base_url, clock, **options)
    return connection.client(emulator.page_token(CAFE), lane=CAFE)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FAULTS = ["server_error_rate", "unknown_error_rate", "drop_rate", "truncate_rate", "non_json_rate"]


# -- retries ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("full_backoff")
@pytest.mark.parametrize("fault", FAULTS)
def test_transient_faults_are_retried_with_exponential_backoff(
    emulator: Emulator, clock: FakeClock, fault: str
) -> None:
    setattr(emulator.faults, fault, 1.0)

    def heal_after_three_retries() -> None:
        if len(clock.sleeps) == 3:
            setattr(emulator.faults, fault, 0.0)

    clock.meanwhile = heal_after_three_retries
    client = page_client(emulator, clock)

    assert client.get("me") == CAFE_ME
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert len(emulator.calls) == 4
    assert (client.connection.stats.calls, client.connection.stats.retries) == (4, 3)


@pytest.mark.usefixtures("full_backoff")
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("drop_rate", "connection closed by the server"),
        ("truncate_rate", "invalid or truncated answers"),
        ("non_json_rate", "invalid or truncated answers"),
    ],
)
def test_a_connection_or_body_failing_every_attempt_makes_graph_unavailable(
    emulator: Emulator, clock: FakeClock, fault: str, reason: str
) -> None:
    client = page_client(emulator, clock, max_attempts=5, max_retry_delay=3.0)
    client.get("me")  # Graph has answered in this run
    setattr(emulator.faults, fault, 1.0)

    with pytest.raises(GraphUnavailable) as raised:
        client.get("me")

    assert str(raised.value) == (
        f"Graph API at {emulator.base_url} did not answer properly after 5 attempts ({reason})"
    )
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]  # doubled, then capped at max_retry_delay
    assert len(emulator.calls) == 1 + 5


@pytest.mark.usefixtures("full_backoff")
@pytest.mark.parametrize("fault", ["server_error_rate", "unknown_error_rate"])
def test_server_errors_on_every_attempt_make_graph_unavailable(
    emulator: Emulator, clock: FakeClock, fault: str
) -> None:
    """The README: exit 8 when "Graph kept failing (5xx, timeouts, bad bodies) after
    max_attempts"; only GraphUnavailable gets that exit."""
    client = page_client(emulator, clock, max_attempts=5, max_retry_delay=3.0)
    client.get("me")
    setattr(emulator.faults, fault, 1.0)

    with pytest.raises(GraphUnavailable, match="did not answer properly after 5 attempts"):
        client.get("me")

    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]
    assert len(emulator.calls) == 1 + 5


@pytest.mark.usefixtures("full_backoff")
@pytest.mark.parametrize(
    ("hangs_up", "reason"),
    [(False, "connection refused"), (True, "connection closed by the server")],
    ids=["closed port", "server hanging up"],
)
def test_a_graph_that_never_answered_in_this_run_is_unreachable(
    emulator: Emulator, clock: FakeClock, hangs_up: bool, reason: str
) -> None:
    emulator.faults.drop_rate = 1.0
    base_url = emulator.base_url if hangs_up else f"http://127.0.0.1:{closed_port()}"
    client = connect(base_url, clock, max_attempts=2).client("EAAG-token", lane=CAFE)

    with pytest.raises(GraphUnreachable) as raised:
        client.get("me")

    assert str(raised.value) == f"Graph API at {base_url} could not be reached ({reason})"
    assert clock.sleeps == [1.0]


def test_errors_that_are_not_transient_are_not_retried(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.expire_token(emulator.page_token(CAFE))
    client = page_client(emulator, clock)

    with pytest.raises(GraphError) as raised:
        client.get("me")

    assert (raised.value.kind, raised.value.subcode) == (ErrorKind.TOKEN, 463)
    assert (len(emulator.calls), clock.sleeps) == (1, [])


# -- throttling ------------------------------------------------------------------------------------


def test_a_throttle_is_waited_out_for_the_time_graph_gives(
    emulator: Emulator, clock: FakeClock
) -> None:
    # One call an hour: the second is refused with "59 minutes to regain access".
    emulator.limits = Limits(calls_per_window=1, window_seconds=3600)
    client = page_client(emulator, clock, max_throttle_wait=3600.0)
    client.get("me")

    def window_passes() -> None:
        emulator.limits = Limits()

    clock.meanwhile = window_passes
    assert client.get("me") == CAFE_ME

    assert clock.sleeps == [59 * 60.0]
    assert [call.error_code for call in emulator.calls] == [None, 32, None]
    stats = client.connection.stats
    assert (stats.throttled, stats.throttle_wait) == (1, 59 * 60.0)


@pytest.mark.usefixtures("full_backoff")
def test_without_a_regain_time_a_throttle_halves_the_pace_and_waits_briefly_up_to_the_ceiling(
    emulator: Emulator, clock: FakeClock
) -> None:
    # One call per 50 s: Graph reports the wait in whole minutes, here 0.
    emulator.limits = Limits(per_second=0.02)
    client = page_client(
        emulator, clock, max_calls_per_second=2.0, throttle_backoff=1.0, max_throttle_wait=10.0
    )
    pacer = client.connection.pacer
    client.get("me")
    paces = []
    clock.meanwhile = lambda: paces.append(pacer.pace(CAFE))

    with pytest.raises(ThrottleBudgetExceeded) as raised:
        client.get("me")

    # A turn at 1.8 calls a second, then waits of 1, 2 and 4 s for the same call, each
    # throttle halving the pace down to a sixteenth of it; the next wait would pass the ceiling.
    assert clock.sleeps == pytest.approx([SECOND / 2, 1.0, 2.0, 4.0])
    assert paces == pytest.approx([1.8, 0.9, 0.45, 0.225])
    assert pacer.pace(CAFE) == pytest.approx(1.8 / 16)
    assert str(raised.value) == (
        "Graph API rate limits would need another 8 s of waiting after 7 s already; "
        "the ceiling is 10 s"
    )
    assert [call.error_code for call in emulator.calls] == [None, 32, 32, 32, 32]
    stats = client.connection.stats
    assert (stats.throttled, stats.throttle_wait) == (3, 7.0)


@pytest.mark.usefixtures("full_backoff")
def test_after_a_throttle_each_answer_raises_the_pace_a_little_up_to_the_full_pace(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.limits = Limits(per_second=0.02)
    client = page_client(emulator, clock, max_calls_per_second=2.0, throttle_backoff=1.0)
    pacer = client.connection.pacer
    client.get("me")

    def limit_lifts_after_two_throttles() -> None:
        if len(clock.sleeps) == 3:  # a turn, then two throttle waits
            emulator.limits = Limits()

    clock.meanwhile = limit_lifts_after_two_throttles
    paces = []
    for _ in range(10):
        client.get("me")
        paces.append(pacer.pace(CAFE))

    # Halved twice (1.8 → 0.45), then 0.18 more per answer: the full pace after 8 answers.
    assert paces == pytest.approx([0.45 + 0.18 * n for n in range(1, 8)] + [1.8] * 3)
    assert [call.error_code for call in emulator.calls] == [None, 32, 32] + [None] * 10
    # Each turn comes after the one before at the pace of when that one was booked.
    assert clock.sleeps[3:] == pytest.approx([1 / pace for pace in [0.45, *paces[:-2]]])


def test_calls_in_flight_together_halve_the_pace_once(clock: FakeClock) -> None:
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        pacer.book(CAFE)
    clock.now = 1.0

    pacer.slower(CAFE, sent_at=0.0)
    pacer.slower(CAFE, sent_at=0.5)  # sent before the first throttle was seen: the same burst
    halved_once = pacer.pace(CAFE)
    pacer.slower(CAFE, sent_at=1.0)  # sent at the slower pace, and still throttled

    assert (halved_once, pacer.pace(CAFE)) == (0.9, 0.45)


class ScriptedSession(requests.Session):
    """Answers the next calls with the Graph errors scripted (0: the call goes through), then
    lets calls through."""

    def __init__(self, *codes: int) -> None:
        super().__init__()
        self.script = list(codes)
        self.answered: list[int] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if not self.script:
            return super().request(method, url, *args, **kwargs)
        code = self.script.pop(0)
        self.answered.append(code)
        if not code:
            return super().request(method, url, *args, **kwargs)
        response = requests.Response()
        response.status_code = 400
        response.url = str(url)
        message = f"({code}) Application request limit reached"
        response._content = json.dumps({"error": {"message": message, "code": code}}).encode()
        return response


def test_each_call_of_a_task_has_its_own_tries(emulator: Emulator, clock: FakeClock) -> None:
    """A task run again after `RetryLater` goes on counting a call's tries, so that they end;
    a call that follows one which used most of its own (a page asked smaller after one too
    heavy) still has all of its own."""
    session = ScriptedSession(2, 2, 2)
    connection = connect(emulator.base_url, clock, session=session, max_attempts=4)
    client = connection.client(emulator.page_token(CAFE), lane=CAFE)
    tries = TaskTries()

    def task(*calls: dict[str, str]) -> None:
        with connection.pacer.booked_turn(CAFE, tries):
            for params in calls:
                client.get("me", params)

    for _ in range(3):
        with pytest.raises(RetryLater):
            task({})
    # Answered at its fourth try, the first call is made again each time the task runs.
    session.script = [0, 2] * 4
    for _ in range(3):
        with pytest.raises(RetryLater):
            task({}, {"fields": "id"})
    with pytest.raises(GraphUnavailable, match="after 4 attempts"):
        task({}, {"fields": "id"})

    assert session.answered == [2, 2, 2, *[0, 2] * 4]
    assert connection.stats.retries == 6


@pytest.mark.usefixtures("full_backoff")
@pytest.mark.parametrize(
    ("code", "every_lane"),
    [(4, True), (17, True), (32, False), (613, False), (80001, False), (80006, False)],
)
def test_app_and_user_throttles_push_back_every_lane_page_throttles_only_their_own(
    emulator: Emulator, clock: FakeClock, code: int, every_lane: bool
) -> None:
    session = ScriptedSession()
    connection = connect(emulator.base_url, clock, session=session, max_calls_per_second=2.0)
    cafe = connection.client(emulator.page_token(CAFE), lane=CAFE)
    bikes = connection.client(emulator.page_token(BIKES), lane=BIKES)
    pacer = connection.pacer
    bikes.get("me")  # BIKES's next turn: 0.556 s from now
    session.script = [code]

    # As in a scheduler's task: the throttle pushes lanes back and gives the worker back.
    with pacer.booked_turn(CAFE, TaskTries()), pytest.raises(RetryLater):
        cafe.get("me")

    assert session.answered == [code]
    assert clock.sleeps == []
    bikes_due, bikes_pace = (1.0, 0.9) if every_lane else (SECOND / 2, 1.8)
    assert (pacer.due(CAFE), pacer.pace(CAFE)) == (1.0, 0.9)
    assert (pacer.due(BIKES), pacer.pace(BIKES)) == (pytest.approx(bikes_due), bikes_pace)
    assert pacer.due("a Page not read yet") == (1.0 if every_lane else 0.0)


@pytest.mark.usefixtures("full_backoff")
def test_throttles_that_overlap_count_once_against_the_ceiling(
    emulator: Emulator, clock: FakeClock
) -> None:
    session = ScriptedSession(80006, 80006, 80006)
    connection = connect(emulator.base_url, clock, session=session, max_throttle_wait=3.0)
    cafe = connection.client(emulator.page_token(CAFE), lane=CAFE)
    bikes = connection.client(emulator.page_token(BIKES), lane=BIKES)
    stats = connection.stats

    # Two calls in flight throttled at once, each told to wait 1 s: the run waits 1 s.
    for client in (cafe, bikes):
        with connection.pacer.booked_turn(client.lane, TaskTries()), pytest.raises(RetryLater):
            client.get("me")
    together = (stats.throttled, stats.throttle_wait)
    clock.now = 0.5  # half way: only the last 1.5 s of the next wait, to 2.5, are new
    with connection.pacer.booked_turn(CAFE, TaskTries(throttled=1)), pytest.raises(RetryLater):
        cafe.get("me")  # its second throttle: 2 s

    assert together == (2, 1.0)
    assert (stats.throttled, stats.throttle_wait, stats.throttled_until) == (3, 2.5, 2.5)
    assert session.answered == [80006, 80006, 80006]
    stats.throttle(2.0, 3.0, 3.0)  # to the ceiling, not past it
    with pytest.raises(ThrottleBudgetExceeded) as raised:
        stats.throttle(3.0, 4.0, 3.0)
    assert str(raised.value) == (
        "Graph API rate limits would need another 1 s of waiting after 3 s already; "
        "the ceiling is 3 s"
    )
    assert (stats.throttled, stats.throttle_wait) == (4, 3.0)


def test_usage_headers_push_the_lanes_next_turn_back(emulator: Emulator, clock: FakeClock) -> None:
    # Four calls an hour: usage reads 25 %, 50 %, 75 % and 100 % after each.
    emulator.limits = Limits(calls_per_window=4, window_seconds=3600)
    client = page_client(emulator, clock, slow_down_at_percent=50.0, usage_pause=8.0)
    pacer = client.connection.pacer

    due = []
    for _ in range(4):
        client.get("me")
        due.append(pacer.due(CAFE))

    # Below the threshold, on time; from it, a share of usage_pause as usage nears 100 %.
    assert due == [0.0, 0.0, 4.0, 12.0]
    assert clock.sleeps == [4.0]


# -- pacing ----------------------------------------------------------------------------------------


def test_turns_are_paced_per_lane_under_the_limit_and_lanes_are_independent(
    emulator: Emulator, clock: FakeClock
) -> None:
    connection = connect(emulator.base_url, clock, max_calls_per_second=2.0)
    cafe = connection.client(emulator.page_token(CAFE), lane=CAFE)
    bikes = connection.client(emulator.page_token(BIKES), lane=BIKES)

    started = []
    for client in (cafe, cafe, bikes, cafe):
        client.get("me")
        started.append(clock.now)

    # 1.8 calls a second, not 2: 0.556 s apart, not 0.5.
    half = SECOND / 2
    assert started == pytest.approx([0.0, half, half, 2 * half])
    assert clock.sleeps == pytest.approx([half, half])
    assert (half, connection.pacer.pace(CAFE)) == (pytest.approx(0.5556, abs=1e-4), 1.8)


def test_a_call_inside_booked_turn_uses_the_turn_booked_for_it(
    emulator: Emulator, clock: FakeClock
) -> None:
    client = page_client(emulator, clock, max_calls_per_second=1.0)
    pacer = client.connection.pacer

    pacer.book(CAFE)  # as the scheduler does before it runs a task
    with pacer.booked_turn(CAFE):
        client.get("me")
        assert (pacer.due(CAFE), clock.sleeps) == (pytest.approx(SECOND), [])
        client.get("me")  # the next call books a turn of its own

    assert (pacer.due(CAFE), clock.sleeps) == (pytest.approx(2 * SECOND), [pytest.approx(SECOND)])


def test_a_turn_booked_for_another_lane_is_not_taken(emulator: Emulator, clock: FakeClock) -> None:
    client = page_client(emulator, clock, max_calls_per_second=1.0)
    pacer = client.connection.pacer
    pacer.book(CAFE)

    with pacer.booked_turn(BIKES):
        client.get("me")

    assert (pacer.due(CAFE), clock.sleeps) == (pytest.approx(2 * SECOND), [pytest.approx(SECOND)])


def test_a_call_that_goes_out_late_moves_its_lanes_next_turn(clock: FakeClock) -> None:
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    pacer.book(CAFE)  # the scheduler books the turn at 0...
    clock.now = 0.25  # ...and its worker gets to the call a quarter second late

    with pacer.booked_turn(CAFE):
        pacer.wait_turn(CAFE)

    # Graph sees the call at 0.25: the next may not arrive closer to it than the pace allows.
    assert (pacer.due(CAFE), clock.sleeps) == (pytest.approx(0.25 + SECOND), [])


# -- what the client leaves to its callers ---------------------------------------------------------


def test_too_much_data_goes_to_the_caller_after_one_call(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.faults.max_response_bytes = 100
    client = page_client(emulator, clock)
    params = {"platform": "messenger", "folder": "inbox", "limit": 7}

    with pytest.raises(GraphError) as raised:
        client.get(f"{CAFE}/conversations", params)

    assert raised.value.kind is ErrorKind.TOO_MUCH_DATA
    assert [(call.path, call.params) for call in emulator.calls] == [
        (f"/{CAFE}/conversations", {"platform": "messenger", "folder": "inbox", "limit": "7"})
    ]
    assert clock.sleeps == []


# -- paging ----------------------------------------------------------------------------------------


def test_next_urls_are_rebased_on_base_url_and_stripped_of_the_token(
    emulator: Emulator, clock: FakeClock
) -> None:
    session = RecordingSession()
    token = emulator.page_token(CAFE)
    client = connect(emulator.base_url, clock, session=session).client(token, lane=CAFE)
    first = client.get(f"{CAFE}/conversations", {"folder": "other", "limit": 2})
    following = next_page_url(first)
    assert following is not None
    assert f"access_token={token}" in following
    # As Graph writes it: its own host, whatever base_url points at (a proxy, the emulator),
    # and parameters a client must not tidy away: a blank one, a repeated one.
    as_graph_writes_it = following.replace(emulator.base_url, "https://graph.facebook.com")
    as_graph_writes_it += "&since=&tag=a&tag=b"

    second = client.get_next(as_graph_writes_it)

    sent = urlsplit(session.urls[-1])
    given = urlsplit(as_graph_writes_it)
    assert f"{sent.scheme}://{sent.netloc}" == emulator.base_url
    assert sent.path == given.path
    given_query = parse_qsl(given.query, keep_blank_values=True)
    without_token = [(k, v) for k, v in given_query if k != "access_token"]
    assert parse_qsl(sent.query, keep_blank_values=True) == without_token
    assert ("since", "") in without_token
    assert ("tag", "b") in without_token
    newest = [key[1] for key in reversed(emulator.inbox.listing(CAFE, "messenger", "other"))]
    assert [thread["id"] for thread in first["data"] + second["data"]] == newest[:4]


def test_walk_follows_next_until_it_is_absent(emulator: Emulator, clock: FakeClock) -> None:
    client = page_client(emulator, clock)
    first = client.get(f"{CAFE}/conversations", {"folder": "spam", "limit": 3})

    pages = list(client.walk(first))

    newest = [key[1] for key in reversed(emulator.inbox.listing(CAFE, "messenger", "spam"))]
    assert [thread["id"] for page in pages for thread in page["data"]] == newest
    assert next_page_url(pages[-1]) is None


# -- secrets ---------------------------------------------------------------------------------------


@pytest.fixture
def redactor() -> Iterator[Redactor]:
    """Every log record redacted as it is made, for this test only."""
    factory = logging.getLogRecordFactory()
    redactor = Redactor()
    redact_log_records(redactor)
    yield redactor
    logging.setLogRecordFactory(factory)


@pytest.mark.usefixtures("full_backoff")
def test_no_secret_in_any_log_record_nor_in_exceptions(
    emulator: Emulator, clock: FakeClock, redactor: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = emulator.page_token(CAFE)
    secret = "app-s3cret-value"
    proof = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
    connection = connect(emulator.base_url, clock, app_secret=secret, redactor=redactor)
    client = connection.client(token, lane=CAFE)
    log = logging.getLogger("meta_inbox")

    first = client.get(f"{CAFE}/conversations", {"folder": "spam", "limit": 3})
    for page in client.walk(first):
        log.debug("next page: %s", next_page_url(page))  # Graph's URL, token and all
    try:
        raise RuntimeError(f"could not follow {next_page_url(first)}")
    except RuntimeError:
        log.exception("walk failed")  # the traceback holds the URL too
    emulator.faults.drop_rate = 1.0
    with pytest.raises(GraphUnavailable) as dropped:
        client.get_next(str(next_page_url(first)))
    gone = connect(f"http://127.0.0.1:{closed_port()}", clock, app_secret=secret, redactor=redactor)
    with pytest.raises(GraphUnavailable) as refused:
        gone.client(token, lane=CAFE).get_next(str(next_page_url(first)))

    texts = [record.getMessage() for record in caplog.records]
    texts += [record.exc_text for record in caplog.records if record.exc_text]
    texts += [str(dropped.value), str(refused.value)]
    assert any("next page: " in text and "access_token=***" in text for text in texts)
    assert any(text.startswith("retrying") for text in texts)
    leaks = [text for text in texts for value in (token, secret, proof) if value in text]
    assert leaks == []


def test_appsecret_proof_is_sent_and_accepted(clock: FakeClock) -> None:
    with Emulator(seed=7, app_secret="s3cret") as emulator:
        token = emulator.page_token(CAFE)
        session = RecordingSession()
        connection = connect(emulator.base_url, clock, session=session, app_secret="s3cret")

        assert connection.client(token, lane=CAFE).get("me") == CAFE_ME

        sent = dict(parse_qsl(urlsplit(session.urls[0]).query))
        proof = hmac.new(b"s3cret", token.encode(), hashlib.sha256).hexdigest()
        assert sent["appsecret_proof"] == proof
        without = connect(emulator.base_url, clock).client(token, lane=CAFE)
        with pytest.raises(GraphError) as raised:
            without.get("me")
        assert raised.value.kind is ErrorKind.APP_SECRET_PROOF
