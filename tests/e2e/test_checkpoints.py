"""Checkpoints: a long run loads what it read as it goes. A run killed at any point loses at most
the work since its last checkpoint; the next one resumes there, a half-read folder's listing
included (from Graph's cursor, or from the top when Graph no longer takes it)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import dlt
import psycopg2
import pyarrow as pa
import pytest

from conftest import (
    NO_DUPLICATES,
    Workspace,
    left_packages,
    postgres_rows,
    sessions_waiting_on_locks,
    wait_for,
)
from meta_inbox import source
from meta_inbox.emulator import Call, Emulator, Faults
from model import LEGACY_ARCHIVE, expected_counts, selected

# Small pages and slices: enough calls and checkpoints in a scale-1 inbox for kills to land
# mid-run, few threads lost with each.
SMALL = {
    "page_size": "3",
    "messages_page_size": "10",
    "checkpoint_threads": "10",
    "max_concurrency": "4",
}


def _settings() -> dict[str, object]:
    return {key: int(value) for key, value in SMALL.items()}


def _half_read(workspace: Workspace) -> bool:
    return any(folder["pass"] for folder in workspace.state().get("folders", {}).values())


def _ended_and_half_read(workspace: Workspace) -> bool:
    passes = [folder["pass"] for folder in workspace.state().get("folders", {}).values()]
    return any(passes) and None in passes


def _hold_once_half_read(
    workspace: Workspace, emulator: Emulator, ready: Callable[[Workspace], bool] = _half_read
) -> None:
    """Once a checkpoint has loaded a half-read folder (and whatever else `ready` waits for),
    hold the run's next call: it is then extracting, past that checkpoint."""
    wait_for(lambda: ready(workspace), "a checkpoint with a half-read folder")
    emulator.hold_after(0)
    assert emulator.wait_until_held(1, timeout=120)


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture
def big_emulator() -> Iterator[Emulator]:
    """Twice the threads: a run long enough that three restarts (each lists every folder it
    read before once more) weigh what they would in a real backfill."""
    with Emulator(seed=7, scale=2) as emulator:
        yield emulator


def test_sigkill_at_three_points_then_a_run_to_the_end(
    tmp_path: Path, big_emulator: Emulator, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    emulator = big_emulator
    workspace = Workspace(tmp_path, emulator)
    # One uninterrupted run of the same inbox and settings, into DuckDB: the calls to match.
    assert workspace.export(pipeline_name="reference", **_settings()).exit_code == 0
    uninterrupted = len(emulator.calls)
    emulator.reset_calls()
    run = ("run", "--destination", "postgres")

    # 1. Extracting, before any checkpoint: the emulator holds every call after discovery.
    emulator.hold_after(1)
    process = workspace.start(*run, **SMALL)
    assert emulator.wait_until_held(1, timeout=120)
    assert postgres_rows(postgres_dsn, "messages") == 0  # nothing loaded yet
    _kill(process)
    emulator.release()

    # 2. Extracting, after checkpoints were loaded with a folder half read.
    process = workspace.start(*run, **SMALL)
    _hold_once_half_read(workspace, emulator)
    assert postgres_rows(postgres_dsn, "messages") > 0
    _kill(process)
    emulator.release()

    # 3. Loading: the test holds a lock on `messages`, so the run's load waits on it.
    with closing(psycopg2.connect(postgres_dsn)) as blocker, blocker.cursor() as cursor:
        cursor.execute("lock table inbox.messages in access exclusive mode")
        process = workspace.start(*run, **SMALL)
        wait_for(lambda: sessions_waiting_on_locks(postgres_dsn) > 0, "a load waiting on the lock")
        _kill(process)
        blocker.rollback()

    finished = workspace.run("--destination", "postgres", **SMALL)

    assert finished.code == 0, finished.output
    counts = {table: postgres_rows(postgres_dsn, table) for table in expected_counts([])}
    assert counts == expected_counts(selected(emulator.inbox))
    with closing(psycopg2.connect(postgres_dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) - count(distinct id) from inbox.messages")
        assert cursor.fetchone() == (0,)
    # What the three kills cost: restarts (discovery, a listing per folder read before) and
    # the work of unfinished slices.
    assert len(emulator.calls) <= 1.3 * uninterrupted, (len(emulator.calls), uninterrupted)


def test_a_half_read_folder_resumes_from_graphs_next(
    workspace: Workspace, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    process = workspace.start("run", **SMALL)
    _hold_once_half_read(workspace, emulator, _ended_and_half_read)
    _kill(process)
    emulator.release()
    folders = workspace.state()["folders"]
    kept = {key: s["pass"]["next"] for key, s in folders.items() if s["pass"] and s["pass"]["next"]}
    assert kept
    ended = {key for key, s in folders.items() if s["pass"] is None}
    assert ended
    # Graph's own `next`, kept without its token.
    assert not any("access_token" in url or emulator.user_token in url for url in kept.values())
    resumed = {key: dict(parse_qsl(urlsplit(url).query))["after"] for key, url in kept.items()}
    emulator.reset_calls()

    with caplog.at_level(logging.INFO, logger="meta_inbox"):
        result = workspace.export(**_settings())

    assert result.exit_code == 0, result.problems
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    # The run finished what the killed one began, and nothing more: the tails of its passes,
    # not their heads nor the folders it had read to the end. What moved there since is
    # above their watermarks, for the next run. A kept position that Graph answers with an
    # empty page (the end, or an expired cursor) restarts its tail from the head, once.
    # A pass that listed more than one page then lists its head again, once.
    distrusted = _logged(caplog, "listing position kept from the last run")
    closed = _logged(caplog, "listing its head again")
    for key, cursor in resumed.items():
        here = _listings(emulator, key)
        assert any(c.params.get("after") == cursor for c in here), key
        heads = len([c for c in here if "after" not in c.params])
        assert heads == (key in distrusted) + (key in closed), key
        # Pages of the pass: a kept position answered with nothing gave none.
        pages = len(here) - (key in closed) - (key in distrusted)
        assert (key in closed) == (pages >= 2), key
    for key in ended:
        assert _listings(emulator, key) == [], key
    assert "generation" not in workspace.state()

    emulator.reset_calls()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meta_inbox"):
        assert workspace.export(**_settings()).exit_code == 0
    closed = _logged(caplog, "listing its head again")
    for key in (*resumed, *ended):
        here = _listings(emulator, key)
        heads = len([c for c in here if "after" not in c.params])
        assert heads == 1 + (key in closed), key
        assert (key in closed) == (len(here) - (key in closed) >= 2), key


def _logged(caplog: pytest.LogCaptureFixture, words: str) -> set[str]:
    """The folders (`Page/platform/folder`) of the log lines that say `words`."""
    return {
        record.getMessage().split(":")[0]
        for record in caplog.records
        if words in record.getMessage()
    }


def _listings(emulator: Emulator, key: str) -> list[Call]:
    """The listing calls of the folder `key` (`Page/platform/folder`), light ones (ids, and
    times: Instagram's probes, an empty last page's) aside."""
    page_id, platform, folder = key.split("/")
    return [
        c
        for c in emulator.calls
        if c.path == f"/{page_id}/conversations"
        and c.params["platform"] == platform
        and _folder_of(c.params) == folder
        and c.params.get("fields") not in ("id", "id,updated_time")
    ]


def _folder_of(params: dict[str, str]) -> str | None:
    """The folder a listing asked for: the legacy archive is asked by its tag."""
    if params.get("tags") == "action:archived":
        return LEGACY_ARCHIVE
    return params.get("folder")


@pytest.mark.parametrize("expiry", ["error", "restart", "empty"])
def test_an_expired_cursor_falls_back_to_the_top(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expiry: str
) -> None:
    """Graph's cursors may expire between runs: refused (error 100), silently restarting the
    list, or answered with an empty page; either way the folder is read to its end, exactly."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1, faults=Faults(cursor_expiry=expiry)) as emulator:
        workspace = Workspace(tmp_path, emulator)
        process = workspace.start("run", **SMALL)
        _hold_once_half_read(workspace, emulator)
        _kill(process)
        emulator.release()
        emulator.expire_cursors()

        result = workspace.export(**_settings())

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        refused = [c for c in emulator.calls if c.error_code == 100 and "after" in c.params]
        assert bool(refused) == (expiry == "error")
        assert result.record["skipped_threads"] == 0


@pytest.mark.parametrize("cursor", ["kept", "empty", "error"])
def test_what_moves_while_a_run_is_resumed_is_read_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cursor: str
) -> None:
    """A run that finishes a killed run's reading lists no folder head, so two threads that
    move above the killed pass meanwhile (their new messages farther apart than the lookback)
    are read whole once the pass lists its head again (it does when it listed more than one
    page), or else by the next run. Where Graph no longer takes the kept cursor, the resumed
    tail lists from the head and skips them: until they are read, the pass's watermark stays
    at the killed pass's top, or the next run would stop above the older of the two."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    # No recheck window: a recheck would read the moved threads' newest messages anyway.
    sharp = {"lookback_seconds": "1", "recheck_window_days": "0"}
    expiry = "error" if cursor == "kept" else cursor
    with Emulator(seed=7, scale=1, faults=Faults(cursor_expiry=expiry)) as emulator:
        workspace = Workspace(tmp_path, emulator)
        process = workspace.start("run", **SMALL, **sharp)
        _hold_once_half_read(workspace, emulator)
        _kill(process)
        emulator.release()
        if cursor != "kept":
            emulator.expire_cursors()
        folders = workspace.state()["folders"]
        key, half = next((key, f["pass"]) for key, f in folders.items() if f["pass"])
        top = int(datetime.fromisoformat(half["top"]).timestamp())
        down_to = int(datetime.fromisoformat(half["down_to"]).timestamp())
        page_id, platform, folder = key.split("/")
        done = [
            c.id
            for c in emulator.inbox.page_conversations
            if (c.page_id, c.platform, c.folder) == (page_id, platform, folder)
            and down_to <= c.updated_time <= top
        ]
        assert len(done) >= 2
        written = [
            emulator.customer_writes(done[0], "later", top + 10),
            emulator.customer_writes(done[-1], "later still", top + 20),
        ]
        settings = {**_settings(), **{name: int(value) for name, value in sharp.items()}}

        with caplog.at_level(logging.INFO, logger="meta_inbox"):
            resumed = workspace.export(**settings)

        assert resumed.exit_code == 0, resumed.problems
        listed = ", ".join(f"'{i}'" for i in written)
        stored = workspace.query(f"select id from inbox.messages where id in ({listed})")
        watermark = workspace.state()["folders"][key]["watermark"]
        if key in _logged(caplog, "listing its head again"):
            # The resumed pass listed more than one page, then its head again: both are read.
            assert watermark == datetime.fromtimestamp(top + 20, UTC).isoformat()
            assert sorted(stored) == sorted((i,) for i in written)
            assert workspace.counts() == expected_counts(selected(emulator.inbox))
        else:
            assert watermark == half["top"]
            assert stored == []

        after = workspace.export(**settings)

        assert after.exit_code == 0, after.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES


def test_checkpoints_are_counted_and_state_stays_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State holds a few values per folder, never per thread: three times the threads, the
    same state (apart from the times in it)."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    sizes = {}
    for scale in (1, 3):
        with Emulator(seed=7, scale=scale) as emulator:
            workspace = Workspace(tmp_path / f"scale{scale}", emulator)
            workspace.root.mkdir()
            result = workspace.export(checkpoint_threads=25)
            assert result.exit_code == 0
            threads = len(selected(emulator.inbox))
            assert result.record["checkpoints"] == result.session.counts.checkpoints
            assert result.session.counts.checkpoints >= threads // 25
            state = workspace.state()
            assert set(state) == {"folders", "loaded_max"}
            assert all(folder["pass"] is None for folder in state["folders"].values())
            sizes[scale] = (len(state["folders"]), len(json.dumps(state)))
    assert sizes[1] == sizes[3]


def test_the_pipeline_folder_keeps_no_package_dlt_loaded(workspace: Workspace) -> None:
    """dlt keeps every package it loaded, its files with every row, in the pipeline folder: a
    run deletes them once loaded, at each checkpoint, so the folder does not grow with the
    data and holds no copy of it."""
    for _ in range(2):
        result = workspace.run(checkpoint_threads="25")
        assert result.code == 0, result.output
        assert workspace.runs()[-1]["checkpoints"] >= 2
        assert left_packages(workspace.data_dir) == []


@pytest.mark.parametrize("run", ["export", "plain dlt pipeline"])
def test_tables_handed_to_dlt_are_written_before_the_next_are_shaped(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, run: str
) -> None:
    """Each table handed to dlt is written, and let go, before the next batches are shaped: when
    tables are handed over, at most two handed before are still alive (what dlt's own loop and
    writer still refer to), in an export and in a dlt pipeline of a user's own, whatever dlt's
    `extract.next_item_mode`. Through a fork to a transformer per table, which dlt's default
    order took turns with, up to 14 were alive here."""
    monkeypatch.setattr(source, "ITEM_ROWS", 200)  # many hand-overs in a scale-1 inbox
    monkeypatch.setenv("DATA_WRITER__BUFFER_MAX_ITEMS", "200")  # and each written as it comes
    monkeypatch.setenv("EXTRACT__NEXT_ITEM_MODE", "round_robin")
    handed: list[weakref.ref[pa.Table]] = []
    still_held: list[int] = []
    messages_handed = 0
    hand = source._Shaper._handed

    def watched(shaper: source._Shaper, names: list[str]) -> dict[str, pa.Table]:
        nonlocal messages_handed
        still_held.append(sum(ref() is not None for ref in handed))
        tables = hand(shaper, names)
        handed.extend(weakref.ref(table) for table in tables.values())
        messages_handed += tables["messages"].num_rows if "messages" in tables else 0
        return tables

    monkeypatch.setattr(source._Shaper, "_handed", watched)
    if run == "export":
        assert workspace.export(checkpoint_threads=40).exit_code == 0
        name = "meta_inbox"
    else:
        name = "plain"
        pipeline = dlt.pipeline(
            pipeline_name=name,
            destination=dlt.destinations.duckdb(str(workspace.database(name))),
            dataset_name="inbox",
            pipelines_dir=str(workspace.data_dir),
        )
        pipeline.run(source.meta_inbox(workspace.settings()))
    assert messages_handed == workspace.counts(name)["messages"] > 200 * 10
    assert len(still_held) > 20
    assert max(still_held) <= 2


@pytest.mark.parametrize("reconcile", [False, True])
def test_a_thread_that_moves_up_while_its_folder_is_listed_is_read_whole(
    workspace: Workspace, emulator: Emulator, reconcile: bool
) -> None:
    """A new message moves a thread the pass has not listed yet to the folder's top while the
    pass asks its next page: Graph's cursor goes on below, so no page of the pass lists it.
    Once its chains end, the pass lists its head again and reads the thread there, whole: a
    backfill does not leave its history to the next run, which reads it from the watermark
    on; a reconcile does not mark it deleted. Threads the pass listed are not read again, but
    for what one of them got meanwhile: the watermark, raised to the moved thread, would
    leave it below the next run's reach."""
    inbox = emulator.inbox
    folder = ("1000000000000002", "messenger", "inbox")
    threads = sorted(
        (c for c in inbox.page_conversations if (c.page_id, c.platform, c.folder) == folder),
        key=lambda conversation: conversation.updated_time,
    )
    assert len(threads) > 2 * int(SMALL["page_size"])  # the oldest is on a later page
    moved, read = threads[0], threads[-1]
    settings = {**_settings(), "lookback_seconds": 60, "recheck_window_days": 0}
    if reconcile:
        assert workspace.export(**settings).exit_code == 0
    newest = max(c.updated_time for c in inbox.page_conversations)
    emulator.write_when_listed(*folder, read.id, newest + 10)
    emulator.write_when_listed(*folder, moved.id, newest + 1000)
    emulator.reset_calls()

    result = workspace.export(**settings, reconcile=reconcile)

    assert result.exit_code == 0, result.problems
    # Both moved during the pass: one listed and read on its first page, one not yet listed.
    assert (read.updated_time, moved.updated_time) == (newest + 10, newest + 1000)
    assert workspace.counts() == expected_counts(selected(inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    marked = "select count(*) from {} where deleted_at is not null"
    assert workspace.query(marked.format("conversations")) == [(0,)]
    assert workspace.query(marked.format("messages")) == [(0,)]
    # The thread's messages were asked once: by the closing listing and its older pages.
    asked = [c for c in emulator.calls if c.path == f"/{moved.id}/messages"]
    assert len(asked) == -(-(len(moved.messages) - 10) // 10)
    listings = [
        c
        for c in emulator.calls
        if c.path == f"/{folder[0]}/conversations"
        and (c.params.get("platform"), c.params.get("folder")) == folder[1:]
    ]
    pages = -(-len(threads) // int(SMALL["page_size"]))
    # The pass's pages (and its last, empty or not), then one closing page.
    assert len(listings) == pages + 1


@pytest.mark.parametrize(
    ("expiry", "pages", "reconcile", "flaky"),
    [
        ("empty", 1, False, False),
        ("empty", 2, False, True),
        ("empty", 2, True, False),
        ("error", 2, False, True),
    ],
)
def test_a_cursor_that_expires_mid_pass_does_not_end_the_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    expiry: str,
    pages: int,
    reconcile: bool,
    flaky: bool,
) -> None:
    """Graph's cursors may expire during a long pass, and an expired one may be answered with
    an empty page, which a folder's real end may also be. Light listings from the page before
    tell the two apart: on expiry the pass lists the folder from its head again and reads
    only what it had not read. A backfill then loads every message, not the first pages'
    alone under a watermark set over the rest; a reconcile marks nothing deleted. `flaky`:
    Graph fails the calls that ask a thread's newest messages twice each (a re-read, a probe),
    which runs their tasks again: a restart is not counted twice, no thread is given up."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1, faults=Faults(cursor_expiry=expiry)) as emulator:
        workspace = Workspace(tmp_path, emulator)
        settings = {**_settings(), "lookback_seconds": 60, "recheck_window_days": 0}
        if reconcile:
            assert workspace.export(**settings).exit_code == 0
        folder = ("1000000000000002", "messenger", "inbox")
        listed = [
            c
            for c in emulator.inbox.page_conversations
            if (c.page_id, c.platform, c.folder) == folder
        ]
        folder_pages = -(-len(listed) // int(SMALL["page_size"]))
        assert folder_pages > pages
        emulator.expire_cursors_when_listed(*folder, pages)
        if flaky:
            emulator.fail_calls(
                lambda path, params: path.endswith("/messages") and "after" not in params, 2
            )
        emulator.reset_calls()

        with caplog.at_level(logging.INFO, logger="meta_inbox"):
            result = workspace.export(**settings, reconcile=reconcile)

        assert result.exit_code == 0, result.problems
        assert workspace.counts() == expected_counts(selected(emulator.inbox))
        assert workspace.duplicate_ids() == NO_DUPLICATES
        assert result.record["skipped_threads"] == 0
        marked = "select count(*) from {} where deleted_at is not null"
        assert workspace.query(marked.format("conversations")) == [(0,)]
        assert workspace.query(marked.format("messages")) == [(0,)]
        key = "/".join(folder)
        # Every cursor issued so far expired: other folders' in flight too.
        assert key in _logged(caplog, "a listing cursor expired")
        # The head and the pages up to the expired one; the folder again (and its empty last
        # page, where its last is full); its head once more.
        trailing = len(listed) % int(SMALL["page_size"]) == 0
        assert len(_listings(emulator, key)) == 1 + pages + folder_pages + trailing + 1
        # No page of messages was read twice; the threads whose cursor expired were read
        # again from their newest, after the light calls that told the expiry (or its refusal).
        read = [c for c in emulator.calls if c.path.endswith("/messages")]
        pages_read = Counter(
            (c.path, c.params.get("after"))
            for c in read
            if c.params["fields"] != "id,created_time" and c.error_code is None
        )
        assert set(pages_read.values()) == {1}
        again = {c.path for c in read if "after" not in c.params and c.error_code is None}
        told = {c.path for c in read if c.params["fields"] == "id,created_time"}
        assert again
        if expiry == "empty":
            assert again <= told
