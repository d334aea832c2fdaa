"""Prints how close an export comes to Meta's rate limit: N Pages, answers taking L seconds, 2
calls a second allowed per Page (as Meta does for the Conversations API).

    .venv/bin/python benchmarks/throughput.py --pages 6 --latency 1.2

The real CLI runs at its default pacing against the emulator. The floor is the busiest Page's
calls at 2 a second: no schedule of calls beats it. Calls in flight and throttle errors are the
emulator's counts. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb

from meta_inbox.emulator import Emulator, Limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from model import THROTTLE_CODES  # noqa: E402

PER_SECOND = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--latency", type=float, default=1.2, help="seconds per answer")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    limits = Limits(per_second=PER_SECOND)
    with (
        Emulator(
            seed=args.seed, scale=args.scale, pages=args.pages, latency=args.latency, limits=limits
        ) as emulator,
        tempfile.TemporaryDirectory() as folder,
    ):
        root = Path(folder)
        started = time.monotonic()
        record = _export(root, emulator)
        wall = time.monotonic() - started

        pages = emulator.inbox.pages
        per_page = Counter(call.page_id for call in emulator.calls if call.token_kind == "page")
        floor = max(per_page.values()) / PER_SECOND
        peaks = [emulator.peak_in_flight(page.id) for page in pages]
        throttled = sum(call.error_code in THROTTLE_CODES for call in emulator.calls)
        expected = sum(c.message_count for c in emulator.inbox.conversations)
        print(f"{len(pages)} Pages, latency {args.latency} s, {PER_SECOND:g} calls/s per Page")
        print(f"wall {wall:.1f} s, floor {floor:.1f} s (busiest Page's {max(per_page.values())} "
              f"calls at {PER_SECOND:g}/s): {wall / floor:.2f}x the floor")  # fmt: skip
        print(f"calls {len(emulator.calls)}, status {record['status']}")
        print(f"peak calls in flight per Page: {min(peaks)}-{max(peaks)}; "
              f"Pages in flight at once: {emulator.peak_pages_in_flight()}")  # fmt: skip
        print(f"throttle errors {throttled}")
        print(f"messages loaded {_messages(root)} of {expected}")


def _export(root: Path, emulator: Emulator) -> dict:
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(root / "dlt"),
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "meta_inbox.cli", "run", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the export failed with exit {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _messages(root: Path) -> int:
    with duckdb.connect(str(root / "meta_inbox.duckdb"), read_only=True) as connection:
        return connection.execute("select count(*) from inbox.messages").fetchone()[0]


if __name__ == "__main__":
    main()
