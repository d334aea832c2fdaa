"""Calls in flight up to every Page's budget, and the fewest calls when Graph asks for less data.
Counted by the emulator; nothing here depends on timing."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import NO_DUPLICATES, Workspace
from meta_inbox.conversations_api import CONVERSATION_FIELDS, OWNER_FIELD, message_fields
from meta_inbox.emulator import Emulator, Faults, Limits
from model import (
    LEGACY_ARCHIVE,
    THROTTLE_CODES,
    expected_counts,
    platform_folders,
    probe_calls,
    selected,
)


def test_every_page_keeps_calls_in_flight_at_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers take a second and Meta allows 2 calls a second per Page: a Page's budget needs
    calls in flight side by side, and so do Pages read at once. Pacing keeps Graph from ever
    refusing a call."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    limits = Limits(per_second=2.0)
    with Emulator(seed=7, scale=1, pages=4, latency=1.0, limits=limits) as emulator:
        workspace = Workspace(tmp_path, emulator)

        result = workspace.export(max_calls_per_second=2.0)

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        assert [c for c in emulator.calls if c.error_code in THROTTLE_CODES] == []
        pages = emulator.inbox.pages
        assert all(emulator.peak_in_flight(page.id) >= 2 for page in pages)
        assert emulator.peak_pages_in_flight() >= 2


def test_listing_calls_wait_while_what_was_read_exceeds_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`read_ahead_messages` bounds the messages read and not yet handed to the load. At 1, a
    listing call starts only once every thread of the listing before it was handed over: no
    two listings are ever in flight together, however many Pages and folders wait, and the
    export is as exact, with as many calls, as without the bound."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    for folder in ("bounded", "unbounded"):
        (tmp_path / folder).mkdir()
    with Emulator(seed=7, scale=1, pages=4, latency=0.05) as emulator:
        workspace = Workspace(tmp_path / "bounded", emulator)

        result = workspace.export(read_ahead_messages=1)

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        listings = sorted(
            (call.arrived, call.answered)
            for call in emulator.calls
            if call.path.endswith("/conversations") and "messages" in call.params.get("fields", "")
        )
        assert len(listings) > 20
        assert all(later >= ended for (_, ended), (later, _) in itertools.pairwise(listings))
        bounded = len(emulator.calls)
    with Emulator(seed=7, scale=1, pages=4, latency=0.05) as emulator:
        Workspace(tmp_path / "unbounded", emulator).export()
        assert len(emulator.calls) == bounded


# A cap the heaviest listings of the inbox exceed at full page sizes (they weigh 190-270 kB).
CAP = 150_000


def test_under_a_size_cap_a_backfill_makes_nearly_the_fewest_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound is 1.2x the calls of a client that knew every answer's size in advance, plus
    the refusals no client can avoid: Graph does not publish its cap, and a listing that may fit
    is asked at full size (a reduction stays with the request that needed it), so a folder
    whose first full listing is too heavy costs one refusal to learn that."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1, faults=Faults(max_response_bytes=CAP)) as emulator:
        fewest, unavoidable = _fewest_calls(emulator)
        emulator.reset_calls()
        workspace = Workspace(tmp_path, emulator)

        result = workspace.export()

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        refused = sum(c.error_code == 1 for c in emulator.calls)
        assert refused >= unavoidable > 0, "the cap never bit"
        bound = 1.2 * (fewest + unavoidable)
        assert len(emulator.calls) <= bound, (len(emulator.calls), fewest, unavoidable, refused)


def _fewest_calls(emulator: Emulator) -> tuple[int, int]:
    """The calls a client that knew every answer's size in advance would make for a backfill:
    each listing page and each page of older messages as large as fits under the cap (found
    here by probing, probes not counted), follow-ups at 100 messages at most, and the head of a
    folder of more than one page once more; and the folders whose first listing at full size
    (100 threads, 100 messages) Graph refuses."""
    session = requests.Session()
    inbox = emulator.inbox
    calls = 1 + probe_calls(inbox)  # finding the Pages, the light Instagram probes
    unavoidable = 0
    for page in inbox.pages:
        token = page.access_token
        platforms = ["messenger", "instagram"]
        for platform in platforms:
            if platform not in page.platforms:
                continue
            for folder in platform_folders(platform):
                after = None
                pages = 0
                while True:
                    listing, full = _largest(session, emulator, token, page.id, platform,
                                             folder, after)  # fmt: skip
                    if after is None:
                        head_refused = not full
                    calls += 1
                    pages += 1
                    for thread in listing["data"]:
                        calls += _older_pages(session, emulator, token, thread.get("messages"))
                    after = listing.get("paging", {}).get("cursors", {}).get("after")
                    if "next" not in listing.get("paging", {}):
                        break
                # A pass of more than one page lists its head again (threads may have moved
                # above it), sized by what its first listing learned.
                calls += pages >= 2
                unavoidable += head_refused
    return calls, unavoidable


def _largest(
    session: requests.Session,
    emulator: Emulator,
    token: str,
    page_id: str,
    platform: str,
    folder: str,
    after: str | None,
) -> tuple[dict[str, Any], bool]:
    """The largest listing page that fits (fewest threads cut first), and whether it is the
    full size."""
    for threads in range(100, 0, -1):
        for messages in (100, 50, 25, 12, 6, 3, 1):
            if threads > 1 and messages < 100:
                break  # fewer threads, full nested pages: the cheaper reduction
            params = {
                "platform": platform,
                **({"tags": "action:archived"} if folder == LEGACY_ARCHIVE else {"folder": folder}),
                "limit": threads,
                "fields": f"{CONVERSATION_FIELDS},{OWNER_FIELD},messages.limit({messages})"
                f"{{{message_fields(25)}}}",
            }
            if after:
                params["after"] = after
            answer = session.get(
                f"{emulator.base_url}/v25.0/{page_id}/conversations",
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.status_code == 200:
                return answer.json(), threads == 100
    raise AssertionError("no listing fits the cap")


def _older_pages(session: requests.Session, emulator: Emulator, token: str, nested: Any) -> int:
    calls = 0
    while nested and "next" in nested.get("paging", {}):
        base = nested["paging"]["next"]
        for limit in range(100, 0, -1):
            answer = session.get(
                base,
                params={"limit": limit, "fields": message_fields(25)},
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.status_code == 200:
                break
        calls += 1
        nested = answer.json()
    return calls
