"""Prints what killing a long backfill costs: runs SIGKILLed at three points, then a run to the
end, against one run that is never interrupted.

    .venv/bin/python benchmarks/resume.py --scale 20

The real CLI runs unpaced against the emulator at zero latency, into DuckDB files in a temporary
folder, checkpointing every `--checkpoint-threads` threads. The uninterrupted run goes first, in
its own workspace, to give U, its calls. Then, in a fresh workspace, run k is killed once it has
made k/4 of U calls of its own (each picks up at the last checkpoint of the run before it); a
run that ends before its kill point has finished the export, and no further run is made. The
kill is placed by the emulator's gate, which holds the next call on arrival, so it lands at the
same call however loaded the machine is. Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import cli_env, stored_messages

from meta_inbox.emulator import Emulator

SHARES = (0.25, 0.5, 0.75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20, help="threads per folder ×")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--checkpoint-threads", type=int, default=200)
    args = parser.parse_args()
    with (
        Emulator(seed=args.seed, scale=args.scale) as emulator,
        tempfile.TemporaryDirectory() as root,
    ):
        inbox = emulator.inbox
        expected = sum(c.message_count for c in inbox.page_conversations)
        print(f"scale {args.scale}: {len(inbox.page_conversations)} threads, {expected} messages")

        whole = Path(root) / "uninterrupted"
        emulator.reset_calls()
        record = _run(_start(emulator, whole, args.checkpoint_threads))
        uninterrupted = len(emulator.calls)
        print(
            f"uninterrupted: {uninterrupted} calls, {record['checkpoints']} checkpoints, "
            f"{stored_messages(whole)[0]} messages loaded"
        )

        resumed = Path(root) / "resumed"
        calls = []
        for share in SHARES:
            kill_at = round(share * uninterrupted)
            emulator.reset_calls()
            killed = _killed_run(emulator, resumed, args.checkpoint_threads, kill_at)
            calls.append(len(emulator.calls))
            if not killed:
                # The export is whole: a further run would be the next scheduled one.
                print(f"run {len(calls)}: to the end before its kill point; {calls[-1]} calls")
                break
            print(f"run {len(calls)}: killed after {kill_at} calls; {calls[-1]} made in all")
        else:
            emulator.reset_calls()
            record = _run(_start(emulator, resumed, args.checkpoint_threads))
            calls.append(len(emulator.calls))
            print(f"run {len(calls)}: to the end; {calls[-1]} calls, {record['status']}")

        loaded, duplicates = stored_messages(resumed)
        print(
            f"all {len(calls)} runs: {sum(calls)} calls, against {uninterrupted} "
            f"uninterrupted: {sum(calls) / uninterrupted:.2f}x"
        )
        print(f"messages loaded {loaded}, expected {expected}; duplicate ids {duplicates}")


def _start(emulator: Emulator, folder: Path, checkpoint_threads: int) -> subprocess.Popen[bytes]:
    folder.mkdir(exist_ok=True)
    env = cli_env(emulator, folder, max_calls_per_second=0, checkpoint_threads=checkpoint_threads)
    return subprocess.Popen(
        [sys.executable, "-m", "meta_inbox", "run", "--json"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _run(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Wait for a run to end; its run record."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"exit code {process.returncode}: {stderr[-2000:].decode()}")
    return json.loads(stdout)


def _killed_run(emulator: Emulator, folder: Path, checkpoint_threads: int, kill_at: int) -> bool:
    """A run SIGKILLed as it makes call `kill_at + 1`; False if it ended before that.

    The calls held at the gate when it dies count as its calls: it made them."""
    # Close the gate before the process starts, so that no call slips past the kill point.
    emulator.hold_after(kill_at)
    process = _start(emulator, folder, checkpoint_threads)
    try:
        while not emulator.wait_until_held(1, timeout=0.1):
            if process.poll() is not None:
                _run(process)  # a failure still stops the benchmark
                return False
        process.kill()
        process.communicate()
        held = emulator.held()
    finally:
        emulator.release()
    # The held calls are answered now, to a closed socket; they count for this run, so wait
    # until the emulator has recorded them (it records each call before writing its answer).
    deadline = time.monotonic() + 10
    while len(emulator.calls) < kill_at + held and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


if __name__ == "__main__":
    main()
