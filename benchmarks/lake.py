"""Prints how large a Parquet lake grows under hourly runs, against a fresh backfill of the same
data (a week of them by default); or, with `--queries`, what a large lake's backfill and the run
after it cost, and how fast its views answer the demo queries.

    .venv/bin/python benchmarks/lake.py --scale 3 --runs 168
    .venv/bin/python benchmarks/lake.py --queries --scale 250

The real CLI runs unpaced against the emulator at zero latency, into a local lake in a temporary
folder, with the default recheck window. Before each run after the backfill, the emulator adds
its activity (new messages and threads, a reopened thread). At the end a fresh backfill of the
inbox as it then stands, every 24 runs, gives the size the lake's data takes when each row is
written once. Each run reopens an archived thread: the simulation ends early when the inbox has
none left (81 archived threads at `--scale 3` lasted 73 to 95 runs; `--scale 8` has 192).
Bytes and files are those of the tables' Parquet files, which the views read (dlt's own tables
and the views database aside). The compaction figures are those the runs log. Peak RSS and CPU
seconds are each CLI process's own (the emulator lives in this process). Each demo query runs
three times on the lake's views: the first time, and the fastest. Figures only; no threshold is
asserted anywhere.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Measured, cli_env, measured_run

from meta_inbox import lake
from meta_inbox.demo import EXAMPLE_QUERIES
from meta_inbox.emulator import Emulator
from meta_inbox.tables import RUNS, TABLES

LAKE = "meta_inbox_lake"
# What `lake.compact` logs of each table it rewrites.
_REWRITTEN = re.compile(r"lake: (\w+) rewritten from .* in ([\d.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=3, help="threads per folder ×")
    parser.add_argument("--runs", type=int, default=168, help="runs after the backfill")
    parser.add_argument("--queries", action="store_true", help="a backfill, then the queries")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it")
    args = parser.parse_args()
    with (
        Emulator(seed=args.seed, scale=args.scale) as emulator,
        tempfile.TemporaryDirectory() as temporary,
    ):
        root = args.keep or Path(temporary)
        if args.queries:
            _queries(emulator, root)
        else:
            _hourly(emulator, root, args.runs)


def _hourly(emulator: Emulator, root: Path, runs: int) -> None:
    hourly = root / "hourly"
    _run(emulator, hourly)
    print(f"backfill: {_size(hourly)}, {_live_rows(hourly)} live rows")
    seconds: list[float] = []
    compactions: list[float] = []
    for number in range(1, runs + 1):
        emulator.add_activity(seed=number)
        done = _run(emulator, hourly)
        seconds.append(done.wall)
        compactions += [float(m[2]) for m in _REWRITTEN.finditer(done.stderr)]
        last = number == runs or not _can_reopen(emulator)
        if last and number < runs:
            print("the emulator's inbox has no archived thread left to reopen")
        if number % 24 == 0 or last:
            print(
                f"after run {number}: {_size(hourly)}, {_live_rows(hourly)} live rows; "
                f"runs since: median {statistics.median(seconds):.1f} s, max "
                f"{max(seconds):.1f} s; {len(compactions)} tables rewritten in "
                f"{sum(compactions):.2f} s (max {max(compactions, default=0):.2f} s)"
            )
            _against_fresh(emulator, hourly, root / f"fresh{number}")
            seconds, compactions = [], []
        if last:
            break


def _can_reopen(emulator: Emulator) -> bool:
    """Whether `add_activity` finds an archived thread to reopen (each call reopens one), with
    room for the threads its other steps may take from the archive first."""
    archived = [c for c in emulator.inbox.page_conversations if c.folder == "page_done"]
    return len(archived) > 12


def _against_fresh(emulator: Emulator, hourly: Path, fresh: Path) -> None:
    """A fresh backfill of the inbox as it stands: the size its data takes written once."""
    _run(emulator, fresh)
    print(f"  fresh backfill of the same data: {_size(fresh)}")
    print(f"  the hourly lake: {_bytes(hourly) / _bytes(fresh):.2f}x its bytes")
    for table in (*TABLES, RUNS):
        grown, once = _bytes(hourly, table.name), _bytes(fresh, table.name)
        print(f"    {table.name:26} {grown:>10} against {once:>10} bytes")
    shutil.rmtree(fresh)


def _queries(emulator: Emulator, root: Path) -> None:
    inbox = emulator.inbox
    messages = sum(c.message_count for c in inbox.page_conversations)
    print(f"{len(inbox.page_conversations)} threads, {messages} messages")
    for title in ("backfill", "no change"):
        done = _run(emulator, root)
        print(
            f"  {title:9} {done.wall:7.1f} s  CPU {done.cpu:6.1f} s  peak RSS "
            f"{done.peak_rss_mb:5.0f} MB  lake {_size(root)}"
        )
    with lake.connect(root / LAKE) as connection:
        for title, sql in EXAMPLE_QUERIES.items():
            times = []
            for _ in range(3):
                started = time.monotonic()
                connection.execute(sql).fetchall()
                times.append(time.monotonic() - started)
            print(f"  {times[0]:5.2f} s, fastest {min(times):5.2f} s: {title}")


def _run(emulator: Emulator, folder: Path) -> Measured:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "meta_inbox", "run", "--destination", "filesystem"]
    return measured_run(command, folder, cli_env(emulator, folder, max_calls_per_second=0))


def _table_files(folder: Path, name: str | None = None) -> list[Path]:
    names = [name] if name else [table.name for table in (*TABLES, RUNS)]
    return [file for n in names for file in (folder / LAKE / "inbox" / n).glob("*.parquet")]


def _bytes(folder: Path, name: str | None = None) -> int:
    return sum(file.stat().st_size for file in _table_files(folder, name))


def _size(folder: Path) -> str:
    return f"{_bytes(folder)} bytes in {len(_table_files(folder))} files"


def _live_rows(folder: Path) -> int:
    with lake.connect(folder / LAKE) as connection:
        return sum(
            connection.execute(f'select count(*) from inbox."{table.name}"').fetchone()[0]
            for table in TABLES
        )


if __name__ == "__main__":
    main()
