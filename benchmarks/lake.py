"""Prints how large a Parquet lake grows under hourly runs, against a fresh backfill of the same
data: a week of them by default.

    .venv/bin/python benchmarks/lake.py --scale 3 --runs 168

The real CLI runs unpaced against the emulator at zero latency, into a local lake in a temporary
folder, with the default recheck window. Before each run after the backfill, the emulator adds
its activity (new messages and threads, a reopened thread). At the end a fresh backfill of the
inbox as it then stands gives the size the lake's data takes when each row is written once.
Bytes are those of the tables' Parquet files (dlt's own tables and the views database aside).
Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import cli_env

from meta_inbox import lake
from meta_inbox.emulator import Emulator
from meta_inbox.tables import RUNS, TABLES

LAKE = "meta_inbox_lake"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=3, help="threads per folder ×")
    parser.add_argument("--runs", type=int, default=168, help="runs after the backfill")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with (
        Emulator(seed=args.seed, scale=args.scale) as emulator,
        tempfile.TemporaryDirectory() as root,
    ):
        hourly = Path(root) / "hourly"
        _run(emulator, hourly)
        print(f"backfill: {_bytes(hourly)} bytes, {_live_rows(hourly)} live rows")
        for number in range(1, args.runs + 1):
            emulator.add_activity(seed=number)
            seconds = _run(emulator, hourly)
            if number % 24 == 0 or number == args.runs:
                print(
                    f"after run {number}: {_bytes(hourly)} bytes, {_files(hourly)} files, "
                    f"{_live_rows(hourly)} live rows (the run took {seconds:.1f} s)"
                )
        fresh = Path(root) / "fresh"
        _run(emulator, fresh)
        grown, once = _bytes(hourly), _bytes(fresh)
        print(f"fresh backfill of the same data: {once} bytes; the hourly lake {grown / once:.2f}x")


def _run(emulator: Emulator, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "meta_inbox.cli", "run", "--destination", "filesystem"]
    env = cli_env(emulator, folder, max_calls_per_second=0)
    started = time.monotonic()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"exit code {done.returncode}: {done.stderr[-2000:]}")
    return time.monotonic() - started


def _table_files(folder: Path) -> list[Path]:
    return [
        file
        for table in (*TABLES, RUNS)
        for file in (folder / LAKE / "inbox" / table.name).glob("*.parquet")
    ]


def _bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in _table_files(folder))


def _files(folder: Path) -> int:
    return len(_table_files(folder))


def _live_rows(folder: Path) -> int:
    with lake.connect(folder / LAKE) as connection:
        return sum(
            connection.execute(f'select count(*) from inbox."{table.name}"').fetchone()[0]
            for table in TABLES
        )


if __name__ == "__main__":
    main()
