"""Prints what a big backfill costs: wall time against the fetch floor, peak memory, state size,
then a run with nothing new.

    .venv/bin/python benchmarks/scale.py --scales 30,250     # 250: about a million messages

For each scale, the real CLI exports the emulator's inbox at zero latency, unpaced, into a DuckDB
file in a temporary folder. The fetch floor is a bare loop making the very calls the export made
(as the emulator recorded them), one after the other, reading and decoding each answer: what
fetching alone costs. Peak RSS is the CLI process's (the emulator runs in this one). State is the
source's part of dlt's `state.json`. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import requests

from meta_inbox.emulator import Emulator
from meta_inbox.emulator.server import Call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="250", help="comma-separated emulator scales")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for scale in (int(text) for text in args.scales.split(",")):
        _measure(scale, args.seed)


def _measure(scale: int, seed: int) -> None:
    started = time.monotonic()
    with Emulator(seed=seed, scale=scale) as emulator, tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        inbox = emulator.inbox
        threads, messages = (
            len(inbox.conversations),
            sum(c.message_count for c in inbox.conversations),
        )
        print(f"scale {scale}: {threads} threads, {messages} messages "
              f"(inbox built in {time.monotonic() - started:.0f} s)")  # fmt: skip
        for label in ("backfill", "no change"):
            emulator.reset_calls()
            seconds, peak_mb, record = _export(root, emulator)
            calls = list(emulator.calls)
            line = (f"  {label:<9} {seconds:7.1f} s, peak RSS {peak_mb:5.0f} MB, {len(calls)} "
                    f"calls, {record['checkpoints']} checkpoints")  # fmt: skip
            if label == "backfill":
                floor = _fetch_floor(emulator, calls)
                line += f"; fetch floor {floor:.1f} s: {seconds / floor:.2f}x"
            print(line)
        state = json.loads((root / "dlt" / "pipelines" / "meta_inbox" / "state.json").read_text())
        size = len(json.dumps(state["sources"]["meta_inbox"]))
        print(f"  state {size} bytes for {threads} threads; "
              f"messages in the table {_messages(root)} of {messages}")  # fmt: skip


def _export(root: Path, emulator: Emulator) -> tuple[float, float, dict]:
    """One CLI run in its own process: seconds, its peak RSS in MB, its run record."""
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(root / "dlt"),
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
        "SOURCES__META_INBOX__MAX_CALLS_PER_SECOND": "0",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "meta_inbox.cli", "run", "--json"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = process.stdout.read() if process.stdout else ""
    # wait4 gives this child's own peak (RUSAGE_CHILDREN would give the largest of all so far).
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if code := os.waitstatus_to_exitcode(status):
        sys.exit(f"the export failed with exit {code}")
    peak = usage.ru_maxrss / 1024
    return seconds, peak, json.loads(output)


def _fetch_floor(emulator: Emulator, calls: list[Call]) -> float:
    tokens = {page.id: page.access_token for page in emulator.inbox.pages}
    session = requests.Session()
    started = time.monotonic()
    for call in calls:
        token = emulator.user_token if call.token_kind == "user" else tokens[call.page_id]
        answer = session.get(
            f"{emulator.base_url}/v25.0{call.path}",
            params=call.params,
            headers={"Authorization": f"Bearer {token}"},
        )
        answer.json()  # read and decode the whole answer, as the export does
    return time.monotonic() - started


def _messages(root: Path) -> int:
    with duckdb.connect(str(root / "meta_inbox.duckdb"), read_only=True) as connection:
        return connection.execute("select count(*) from inbox.messages").fetchone()[0]


if __name__ == "__main__":
    main()
