"""Prints what killing a long backfill costs: the calls repeated when runs are SIGKILLed at three
points and a last run goes to the end, against one run that is never interrupted.

    .venv/bin/python benchmarks/resume.py --scale 20

The real CLI exports the emulator's inbox at zero latency, at Meta's 2 calls a second per Page
(`--unpaced`: as fast as it can, so that reading runs far ahead of the loads and a kill loses
more), checkpointing every `--checkpoint-threads` threads. Each kill comes when the emulator
has answered a share (a quarter, a half, three quarters) of the calls the uninterrupted run
made, counted from the start of the killed run. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from meta_inbox.emulator import Emulator

KILLS = (0.25, 0.5, 0.75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--checkpoint-threads", type=int, default=200)
    parser.add_argument("--unpaced", action="store_true")
    args = parser.parse_args()
    pacing = {"SOURCES__META_INBOX__MAX_CALLS_PER_SECOND": "0"} if args.unpaced else {}
    with Emulator(seed=args.seed, scale=args.scale) as emulator:
        expected = sum(c.message_count for c in emulator.inbox.conversations)
        print(f"scale {args.scale}: {expected} messages, a checkpoint every "
              f"{args.checkpoint_threads} threads")  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            _run(Path(folder), emulator, args.checkpoint_threads, pacing)
            whole = len(emulator.calls)
        print(f"uninterrupted: {whole} calls")
        total = 0
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            for share in KILLS:
                made = _run(root, emulator, args.checkpoint_threads, pacing, int(share * whole))
                total += made
                print(f"killed at {share:.0%} of the calls: {made} calls")
            made = _run(root, emulator, args.checkpoint_threads, pacing)
            total += made
            print(f"run to the end: {made} calls")
            stored, distinct = _messages(root)
        print(f"all runs: {total} calls, {total / whole:.2f}x the uninterrupted run")
        print(f"messages {stored} of {expected}, duplicates {stored - distinct}")


def _run(
    root: Path,
    emulator: Emulator,
    checkpoint_threads: int,
    pacing: dict[str, str],
    kill_after: int = 0,
) -> int:
    """One CLI run, SIGKILLed once the emulator has answered `kill_after` of its calls (0: run
    to the end); the calls it made."""
    emulator.reset_calls()
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(root / "dlt"),
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
        "SOURCES__META_INBOX__CHECKPOINT_THREADS": str(checkpoint_threads),
        **pacing,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "meta_inbox.cli", "run"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while kill_after and process.poll() is None and len(emulator.calls) < kill_after:
        time.sleep(0.01)
    if kill_after and process.poll() is None:
        process.send_signal(signal.SIGKILL)
    code = process.wait()
    if not kill_after and code:
        sys.exit(f"the export failed with exit {code}")
    return len(emulator.calls)


def _messages(root: Path) -> tuple[int, int]:
    with duckdb.connect(str(root / "meta_inbox.duckdb"), read_only=True) as connection:
        sql = "select count(*), count(distinct id) from inbox.messages"
        return connection.execute(sql).fetchone()


if __name__ == "__main__":
    main()
