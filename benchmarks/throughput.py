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

The floor is the busiest Page's calls at 2 a second. `wall` is the whole CLI process, start-up
and the load into DuckDB included, so at small sizes `wall / floor` is mostly fixed costs,
printed apart from the emulator's arrival and answer times of each call: start (process start
to its first call), the wait between the Pages' discovery and their first call, and end (the
last answer to the process's exit: the last load, the views, the run record). The busiest
Page's first-to-last-call span is set against what its token bucket allows, and "floor with
answers" adds what no run avoids: the discovery's answer and the last call's. Peaks in flight
and throttle errors are the emulator's counts. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import cli_env, stored_messages

from meta_inbox.emulator import Call, Emulator, Limits
from meta_inbox.graph_client import PACE_MARGIN

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
        started, cpu_before = time.monotonic(), _children_cpu()
        record, trace = _export(Path(root), emulator)
        ended = time.monotonic()
        wall, cpu = ended - started, _children_cpu() - cpu_before

        calls = sorted(emulator.calls, key=lambda call: call.arrived)
        # Only Page-token calls draw on a Page's budget; the user token's listing does not.
        per_page = Counter(call.page_id for call in calls if call.token_kind == "page")
        busiest_page, busiest = per_page.most_common(1)[0]
        floor = busiest / PER_SECOND
        peaks = [emulator.peak_in_flight(page.id) for page in inbox.pages]
        throttled = sum(call.error_code in THROTTLE_CODES for call in calls)
        print(f"run: {record['status']}, {len(calls)} calls, {record['checkpoints']} checkpoints")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"wall       {wall:7.1f} s  (CPU {cpu:.1f} s, peak RSS {peak_mb:.0f} MB)")
        print(f"floor      {floor:7.1f} s  (busiest Page: {busiest} calls at {PER_SECOND:g}/s)")
        print(f"wall/floor {wall / floor:7.2f}")
        _print_phases(calls, busiest_page, (started, ended), (trace, cpu), args.latency)
        print(
            f"peak in flight: {min(peaks)}-{max(peaks)} calls per Page, "
            f"{emulator.peak_pages_in_flight()} of {len(inbox.pages)} Pages at once"
        )
        print(
            f"throttle errors: {throttled} (the CLI counted {record['throttled']}, "
            f"waited {record['throttle_wait_seconds']:.1f} s)"
        )
        print(f"messages loaded {stored_messages(Path(root))[0]}, expected {expected}")


def _print_phases(
    calls: list[Call],
    busiest_page: str,
    wall: tuple[float, float],
    cpu: tuple[_CpuTrace, float],
    latency: float,
) -> None:
    """Where the time goes: the process's own costs before its first call, between the Pages'
    discovery and their first call, and after the last answer, in wall and CPU seconds (CPU
    is steadier on a shared machine); the busiest Page's calls from first to last against the
    least its budget allows."""
    (started, ended), (trace, cpu_total) = wall, cpu
    first, last = calls[0], max(calls, key=lambda call: call.answered)
    first_page_call = next(call for call in calls if call.token_kind == "page")
    discovered = max(
        (call.answered for call in calls if call.arrived < first_page_call.arrived),
        default=first.answered,
    )
    start = first.arrived - started
    setup = first_page_call.arrived - discovered
    end = ended - last.answered
    cpu_start = trace.at(first.arrived)
    cpu_end = cpu_total - trace.at(last.answered)
    print(
        f"fixed      {start + setup + end:7.2f} s  = start {start:.2f} s (process start to its "
        f"first call) + {setup:.2f} s (discovery's answer to the first Page call) + end "
        f"{end:.2f} s (last answer to exit: last load, views, run record)"
    )
    print(
        f"fixed CPU  {cpu_start + cpu_end:7.2f} s  = start {cpu_start:.2f} s + end "
        f"{cpu_end:.2f} s; {cpu_total - cpu_start - cpu_end:.2f} s in between"
    )
    arrivals = [call.arrived for call in calls if call.page_id == busiest_page]
    # The bucket starts full: its first `burst` calls go at once, the others at the rate.
    burst = max(1, math.ceil(PER_SECOND))
    least = max(0, len(arrivals) - burst) / PER_SECOND
    span = arrivals[-1] - arrivals[0]
    paced = (len(arrivals) - 1) / (PER_SECOND * PACE_MARGIN)
    print(
        f"busiest Page: first to last call {span:.1f} s, its budget allows {least:.1f} s "
        f"({span / least if least else 1:.2f}x); the client's pace, {PACE_MARGIN:.0%} of the "
        f"budget, {paced:.1f} s"
    )
    # No run beats the Pages' discovery, the busiest Page's paced calls and its last answer.
    unavoidable = (discovered - first.arrived) + least + latency
    print(
        f"floor with answers {unavoidable:7.1f} s (discovery {discovered - first.arrived:.1f} s "
        f"+ paced span {least:.1f} s + last answer {latency:g} s): wall / it "
        f"{(ended - started) / unavoidable:.2f}"
    )


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the CLI's)."""
    times = os.times()
    return times.children_user + times.children_system


class _CpuTrace:
    """A child process's CPU seconds as time passes, read from /proc every few milliseconds:
    how much of the CPU the process had spent by a moment the emulator recorded."""

    EVERY = 0.01

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stat = Path(f"/proc/{process.pid}/stat")
        self._process = process
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while self._process.poll() is None:
            try:
                fields = self._stat.read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                return
            # utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
            cpu = (int(fields[11]) + int(fields[12])) / self._tick
            self.samples.append((time.monotonic(), cpu))
            time.sleep(self.EVERY)

    def at(self, moment: float) -> float:
        """CPU seconds spent by `moment` (the last reading before it)."""
        self._thread.join()
        spent = [cpu for when, cpu in self.samples if when <= moment]
        return spent[-1] if spent else 0.0


def _export(folder: Path, emulator: Emulator) -> tuple[dict[str, Any], _CpuTrace]:
    """One `meta-inbox run` at its default settings; its run record, and its CPU over time."""
    env = cli_env(emulator, folder)
    with subprocess.Popen(
        [sys.executable, "-m", "meta_inbox", "run", "--json"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        trace = _CpuTrace(process)
        out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"exit code {process.returncode}: {err[-2000:]}")
    return json.loads(out), trace


if __name__ == "__main__":
    main()
