"""Prints how close a backfill comes to Meta's rate limit: N Pages, each allowed 2 calls a
second, every answer taking L seconds.

    .venv/bin/python benchmarks/throughput.py --pages 6 --latency 1.2 --scale 1
    .venv/bin/python benchmarks/throughput.py --strict

The real CLI runs at its default pacing (2 calls a second per Page, less a margin) against the
emulator, into a DuckDB file in a temporary folder. By default each Page's budget is a token
bucket refilled at 2 calls a second. `--strict` makes it a sliding window of 2 calls in any one
second, which refuses a call that arrives a moment early, with 0.3 s answers, 3 Pages and a
larger inbox by default: how much a run loses to throttles it could not avoid. Every setting
is the default; the emulator's usage headers count the rolling hour, as Graph's do.

The floor is the busiest Page's calls at 2 a second: no schedule of calls beats it. `wall` is
the whole CLI process, start-up and the load into DuckDB included, so at small sizes
`wall / floor` is mostly that fixed cost. Peaks in flight and throttle errors are the
emulator's counts. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import cli_env, stored_messages

from meta_inbox.emulator import Emulator, Limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from model import THROTTLE_CODES  # noqa: E402

PER_SECOND = 2.0
BUCKET = {"pages": 6, "latency": 1.2, "scale": 1}
# At scale 40 the busiest Page makes 88 calls: 44 s at 2 a second, against which the 5-7 s
# every run costs (process start, finding the Pages, the last load) weigh little.
STRICT = {"pages": 3, "latency": 0.3, "scale": 40}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="a sliding one-second window")
    parser.add_argument("--pages", type=int, help="default 6, or 3 with --strict")
    parser.add_argument("--latency", type=float, help="seconds per answer: 1.2, or 0.3 --strict")
    parser.add_argument("--scale", type=int, help="threads per folder ×: 1, or 40 with --strict")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    defaults = STRICT if args.strict else BUCKET
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.strict:
        limits = Limits(calls_per_window=int(PER_SECOND), window_seconds=1.0)
    else:
        limits = Limits(per_second=PER_SECOND)
    with (
        Emulator(
            seed=args.seed, scale=args.scale, pages=args.pages, latency=args.latency, limits=limits
        ) as emulator,
        tempfile.TemporaryDirectory() as root,
    ):
        inbox = emulator.inbox
        expected = sum(c.message_count for c in inbox.page_conversations)
        print(
            f"inbox: {len(inbox.pages)} Pages, scale {args.scale}, {len(inbox.page_conversations)} "
            f"threads, {expected} messages; {args.latency} s per answer, "
            f"{PER_SECOND:g} calls/s per Page"
            + (", in a sliding one-second window" if args.strict else "")
        )
        emulator.reset_calls()
        started = time.monotonic()
        record = _export(Path(root), emulator)
        wall = time.monotonic() - started

        calls = emulator.calls
        # Only Page-token calls draw on a Page's budget; the user token's listing does not.
        per_page = Counter(call.page_id for call in calls if call.token_kind == "page")
        busiest = max(per_page.values())
        floor = busiest / PER_SECOND
        peaks = [emulator.peak_in_flight(page.id) for page in inbox.pages]
        throttled = sum(call.error_code in THROTTLE_CODES for call in calls)
        print(f"run: {record['status']}, {len(calls)} calls, {record['checkpoints']} checkpoints")
        print(f"wall       {wall:7.1f} s")
        print(f"floor      {floor:7.1f} s  (busiest Page: {busiest} calls at {PER_SECOND:g}/s)")
        print(f"wall/floor {wall / floor:7.2f}")
        print(
            f"peak in flight: {min(peaks)}-{max(peaks)} calls per Page, "
            f"{emulator.peak_pages_in_flight()} of {len(inbox.pages)} Pages at once"
        )
        print(
            f"throttle errors: {throttled} (the CLI counted {record['throttled']}, "
            f"waited {record['throttle_wait_seconds']:.1f} s)"
        )
        print(f"messages loaded {stored_messages(Path(root))[0]}, expected {expected}")


def _export(folder: Path, emulator: Emulator) -> dict[str, Any]:
    """One `meta-inbox run` at its default settings; its run record."""
    env = cli_env(emulator, folder)
    done = subprocess.run(
        [sys.executable, "-m", "meta_inbox.cli", "run", "--json"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"exit code {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


if __name__ == "__main__":
    main()
