"""Prints what a large backfill costs (about a million messages by default), how far it is from
fetching alone, and what the run after it costs when nothing has changed.

    .venv/bin/python benchmarks/scale.py --scale 250
    .venv/bin/python benchmarks/scale.py --scales 30,250   # the state's size at two sizes
    .venv/bin/python benchmarks/scale.py --scales 1,250 --small-change
    .venv/bin/python benchmarks/scale.py --scale 250 --postgres

`--small-change` then writes the same few messages into the same few threads at each size and
runs twice: once with the recheck window off (what the change alone costs: at 1M messages it
should take no more than twice the wall time it takes at demo size, scale 1) and once with the
default window after another such change (the rows it reads again, and its CPU).

The real CLI runs unpaced against the emulator at zero latency, into a DuckDB file in a temporary
folder, or with `--postgres` into a throwaway PostgreSQL server (the tests' own; the server's
memory is not counted). Peak RSS is each CLI process's own (the emulator lives in this process,
so it is not counted). The fetch floor makes exactly the calls the emulator recorded for the
backfill, in a bare loop with no parsing and no loading: what the HTTP round trips alone take on
this machine (the emulator shares this process with that loop, as it shares the machine with
the CLI). The state is meta-inbox's incremental state in dlt: it should not grow with the
threads. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import requests
from harness import cli_env, measured_run, postgres, stored_messages

from meta_inbox.emulator import Emulator
from meta_inbox.emulator.server import Call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=250, help="threads per folder ×")
    parser.add_argument("--scales", help="several scales, comma-separated (overrides --scale)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--small-change", action="store_true", help="see above")
    parser.add_argument("--postgres", action="store_true", help="load PostgreSQL, not DuckDB")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")] if args.scales else [args.scale]
    with postgres() if args.postgres else nullcontext() as fresh_database:
        walls = [
            _measure(scale, args.seed, args.small_change, fresh_database and fresh_database())
            for scale in scales
        ]
    if args.small_change and len(scales) > 1:
        print(
            f"small change, window off: {walls[-1]:.1f} s at scale {scales[-1]} against "
            f"{walls[0]:.1f} s at scale {scales[0]}: {walls[-1] / walls[0]:.2f}x"
        )


def _measure(scale: int, seed: int, small_change: bool, dsn: str | None) -> float:
    started = time.monotonic()
    emulator = Emulator(seed=seed, scale=scale)  # builds the whole inbox in memory
    built = time.monotonic() - started
    with emulator, tempfile.TemporaryDirectory() as root:
        inbox = emulator.inbox
        expected = sum(c.message_count for c in inbox.page_conversations)
        print(
            f"scale {scale}: {len(inbox.page_conversations)} threads, {expected} messages "
            f"(the emulator took {built:.1f} s to build them)"
        )
        folder = Path(root)
        env = cli_env(emulator, folder, **UNPACED)

        emulator.reset_calls()
        wall, cpu, rss, record = _run(folder, env, dsn)
        calls = emulator.calls
        stored, _ = stored_messages(folder, dsn)
        print(
            f"  backfill   {wall:7.1f} s  peak RSS {rss}  {record['api_calls']} calls  "
            f"{record['checkpoints']} checkpoints  {stored} of {expected} messages"
        )
        print(f"  CPU        {cpu:7.1f} s: {cpu / expected * 1e6:.0f} µs per message")
        floor = _replay(emulator, calls)
        print(f"  fetch floor {floor:6.1f} s for the same {len(calls)} calls: {wall / floor:.1f}x")
        state = json.dumps(_state(folder))
        print(
            f"  state      {len(state.encode())} bytes for {len(inbox.page_conversations)} threads"
        )

        # The same workspace again, no activity in between: what a quiet day's run costs. The
        # first reads the recheck window's messages again and fingerprints them; the hourly
        # runs after it find them as stored.
        for label in ("no change", "and again"):
            emulator.reset_calls()
            wall, cpu, rss, record = _run(folder, env, dsn)
            print(
                f"  {label:<10}{wall:7.1f} s  peak RSS {rss}  {record['api_calls']} calls  "
                f"{record['new_messages']} new messages  {_again(record)}  CPU {cpu:.1f} s"
            )
        if not small_change:
            return wall

        threads = _change(emulator, 1)
        windowless = cli_env(emulator, folder, **UNPACED, **NO_WINDOW)
        wall, cpu, rss, record = _run(folder, windowless, dsn)
        print(
            f"  small change ({len(threads)} threads, {MESSAGES_WRITTEN} messages), recheck window "
            f"off: {wall:.1f} s  peak RSS {rss}  {record['api_calls']} calls  "
            f"{record['new_messages']} new messages  CPU {cpu:.1f} s"
        )
        _change(emulator, 2)
        windowed = _run(folder, env, dsn)
        rechecked = windowed[3]
        print(
            f"  same change, default window: {windowed[0]:.1f} s  peak RSS {windowed[2]}  "
            f"{rechecked['rechecked_threads']} threads rechecked, {_again(rechecked)}  "
            f"CPU {windowed[1]:.1f} s: "
            f"{windowed[1] / max(rechecked['messages'], 1) * 1e6:.0f} µs per message read"
        )
        return wall


def _again(record: dict[str, Any]) -> str:
    """What a run read that the destination held: found as stored, or loaded again."""
    read_again = record["messages"] - record["new_messages"]
    return (
        f"{read_again} messages read again ({record['unchanged_messages']} as stored, "
        f"{record['messages_merged_again']} loaded again)"
    )


UNPACED = {"max_calls_per_second": 0}
NO_WINDOW = {"recheck_window_days": 0}
CHANGED_THREADS = 6
MESSAGES_WRITTEN = 13


def _change(emulator: Emulator, round_: int) -> list[str]:
    """Customers write `MESSAGES_WRITTEN` messages into the `CHANGED_THREADS` threads of the
    Pages' Messenger inboxes that moved last (thread ids differ from scale to scale; these are
    alike at every scale), an hour after the inbox's newest message."""
    inbox = emulator.inbox
    recent = sorted(
        (c for c in inbox.page_conversations if c.platform == "messenger" and c.folder == "inbox"),
        key=lambda conversation: conversation.updated_time,
    )
    threads = [conversation.id for conversation in recent[-CHANGED_THREADS:]]
    inbox.now += 3600
    for number in range(MESSAGES_WRITTEN):
        thread = threads[number % len(threads)]
        emulator.customer_writes(thread, f"round {round_}, message {number}", inbox.now + number)
    return threads


def _run(
    folder: Path, env: dict[str, str], dsn: str | None
) -> tuple[float, float, str, dict[str, Any]]:
    """One `meta-inbox run` (into PostgreSQL with a `dsn`): its wall seconds, CPU seconds, peak
    RSS (and anonymous memory) and run record."""
    command = [sys.executable, "-m", "meta_inbox", "run", "--json"]
    if dsn is not None:
        command += ["--destination", "postgres"]
        env = env | {"DESTINATION__POSTGRES__CREDENTIALS": dsn}
    done = measured_run(command, folder, env)
    memory = f"{done.peak_rss_mb:.0f} MB (anonymous {done.peak_anonymous_mb:.0f} MB)"
    return done.wall, done.cpu, memory, json.loads(done.stdout)


def _replay(emulator: Emulator, calls: list[Call]) -> float:
    """Seconds to make the same calls again, one after another, reading each answer whole."""
    tokens = {page.id: page.access_token for page in emulator.inbox.pages}
    with requests.Session() as session:
        started = time.monotonic()
        for call in calls:
            token = emulator.user_token if call.token_kind == "user" else tokens[call.page_id]
            # Without stream=True, requests reads the whole body before it returns.
            session.get(
                f"{emulator.base_url}/v25.0{call.path}",
                params=call.params,
                headers={"Authorization": f"Bearer {token}"},
            )
        return time.monotonic() - started


def _state(folder: Path) -> Any:
    state = json.loads((folder / "dlt/pipelines/meta_inbox/state.json").read_text())
    return state["sources"]["meta_inbox"]


if __name__ == "__main__":
    main()
