"""Prints how fast and how heavy an export is: a backfill, then an incremental run.

    .venv/bin/python benchmarks/export_speed.py --scale 10

Runs the real CLI against the emulator (no latency, no faults) into a DuckDB file in a temporary
folder. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from meta_inbox.emulator import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with (
        Emulator(seed=args.seed, scale=args.scale) as emulator,
        tempfile.TemporaryDirectory() as root,
    ):
        inbox = emulator.inbox
        messages = sum(len(c.messages) for c in inbox.conversations)
        print(f"inbox: scale {args.scale}, {len(inbox.conversations)} threads, {messages} messages")
        for label in ("backfill", "incremental"):
            if label == "incremental":
                activity = emulator.add_activity(seed=1)
                print(f"activity: {len(activity.new_message_ids)} new messages")
            emulator.reset_calls()
            seconds, peak_mb = _run(Path(root), emulator)
            loaded = _count(Path(root) / "meta_inbox_data.duckdb")
            print(
                f"{label:<12} {seconds:6.1f} s  {len(emulator.calls):5d} calls  "
                f"peak RSS {peak_mb:6.0f} MB  messages in table {loaded}"
            )


def _run(root: Path, emulator: Emulator) -> tuple[float, float]:
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(root / "dlt"),
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
        "SOURCES__META_INBOX__MAX_CALLS_PER_SECOND": "0",
    }
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "meta_inbox.cli", "run"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return time.monotonic() - started, peak / 1024


def _count(database: Path) -> int:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute("select count(*) from meta_inbox.messages").fetchone()[0]


if __name__ == "__main__":
    main()
