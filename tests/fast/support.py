"""What the fast tests share: the hand-written Graph answers, a clock that only the code under
test moves (by sleeping), Graph connections on that clock, and fixtures. Test modules load the
fixtures with `pytest_plugins`: a conftest.py here would shadow the `conftest` module that other
tests import names from."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from meta_inbox import graph_client
from meta_inbox.graph_client import GraphConnection, Pacer, Pacing, Redactor
from meta_inbox.graph_errors import GraphError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "graph"
CONVERSATIONS = "/v25.0/1000000000000001/conversations"

# Pacing under test: no pacing and no slowing down unless a test asks, round delays.
PACING = Pacing(
    max_calls_per_second=0.0,
    slow_down_at_percent=100.0,
    usage_pause=0.0,
    throttle_backoff=1.0,
    max_throttle_wait=100.0,
    max_attempts=4,
    retry_backoff=1.0,
    max_retry_delay=100.0,
    timeout=10.0,
)


def load(name: str) -> dict[str, Any]:
    """A hand-written Graph answer from `tests/fixtures/graph`."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def from_envelope(name: str, *, status: int = 400, path: str = CONVERSATIONS) -> GraphError:
    """The GraphError of a fixture's `{"error": {...}}` answer."""
    error = load(name)["error"]
    return GraphError(
        error["message"],
        code=error.get("code"),
        subcode=error.get("error_subcode"),
        http_status=status,
        is_transient=bool(error.get("is_transient")),
        fbtrace_id=error.get("fbtrace_id"),
        path=path,
    )


class FakeClock:
    """The pacer's time. It stands still until the code under test sleeps, so the delays a test
    expects are exact and cost nothing."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        # What the world does while the code under test sleeps (a fault heals, a limit lifts).
        self.meanwhile: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.meanwhile is not None:
            self.meanwhile()


class RecordingSession(requests.Session):
    """A real HTTP session that keeps the URL of every request sent and the size of its answer:
    what the emulator cannot show (the query as sent, before it drops the token)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.sizes: list[int] = []
        self.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.urls.append(str(response.request.url))
        self.sizes.append(len(response.content))


def connect(
    base_url: str,
    clock: FakeClock,
    *,
    session: requests.Session | None = None,
    app_secret: str | None = None,
    redactor: Redactor | None = None,
    **pacing: Any,
) -> GraphConnection:
    """A connection paced on `clock`; `pacing` overrides fields of `PACING`."""
    chosen = dataclasses.replace(PACING, **pacing)
    return GraphConnection(
        base_url=base_url,
        api_version="v25.0",
        pacing=chosen,
        app_secret=app_secret,
        redactor=redactor or Redactor(),
        pacer=Pacer(chosen.max_calls_per_second, clock=clock, sleep=clock.sleep),
        session=session,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def full_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry and throttle delays at the top of their random range, so that tests can name them."""
    monkeypatch.setattr(graph_client, "random", SimpleNamespace(uniform=lambda low, high: high))


@pytest.fixture
def local_time_far_from_utc() -> Iterator[None]:
    """The process's local time 10 hours behind UTC, so that a time read as local shows."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "HST10"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()
