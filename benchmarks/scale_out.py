"""Prints what fanning out over Pages buys: one process exporting every Page, against one
process per Page running at the same time (what the Airflow DAG does), into PostgreSQL.

    .venv/bin/python benchmarks/scale_out.py --pages 6 --latency 1.2 --scale 1

The emulator answers each call after `--latency` seconds and allows each Page 2 calls a second
(as Meta does for the Conversations API); meta-inbox paces itself to that by default, and
pauses when Graph reports high usage (`slowed`: the pauses and their seconds, summed over the
processes; `--usage-pause` sets usage_pause). `cpu` is the CPU time of the meta-inbox
processes. The floor is the busiest Page's calls at 2 a second: no schedule of calls beats it.
A throwaway PostgreSQL server (tests/postgres_server.py) gets a fresh database for each way.
Figures only; no threshold is asserted anywhere.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg2
from harness import cli_env

from meta_inbox.emulator import Emulator, Limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from model import THROTTLE_CODES  # noqa: E402
from postgres_server import running_postgres  # noqa: E402

PER_SECOND = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--latency", type=float, default=1.2, help="seconds per answer")
    parser.add_argument("--scale", type=int, default=1, help="threads per folder ×")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--usage-pause", type=float, help="usage_pause (default: meta-inbox's)")
    args = parser.parse_args()
    limits = Limits(per_second=PER_SECOND)
    with (
        Emulator(
            seed=args.seed, scale=args.scale, pages=args.pages, latency=args.latency, limits=limits
        ) as emulator,
        running_postgres() as server,
        tempfile.TemporaryDirectory() as root,
    ):
        inbox = emulator.inbox
        messages = sum(len(c.messages) for c in inbox.page_conversations)
        print(
            f"inbox: {len(inbox.pages)} Pages, scale {args.scale}, {len(inbox.page_conversations)} "
            f"threads, {messages} messages; {args.latency} s per answer, "
            f"{PER_SECOND:g} calls/s per Page"
        )
        page_ids = sorted(page.id for page in inbox.pages)
        ways: dict[str, Callable[[Path, dict[str, str]], list[str]]] = {
            "one process": lambda folder, env: _together(folder, env, [["run", *POSTGRES]]),
            f"{len(page_ids)} processes": lambda folder, env: _fan_out(folder, env, page_ids),
        }
        print(
            f"{'':<14} {'wall':>7} {'cpu':>7} {'calls':>6} {'throttled':>9} {'peak in flight':>14} "
            f"{'peak Pages':>10} {'floor':>7} {'slowed':>12} {'messages':>8}"
        )
        for label, export in ways.items():
            dsn = server.recreate_database()
            folder = Path(root) / label.replace(" ", "_")
            folder.mkdir()
            env = cli_env(emulator, folder) | {"DESTINATION__POSTGRES__CREDENTIALS": server.dsn}
            if args.usage_pause is not None:
                env["SOURCES__META_INBOX__USAGE_PAUSE"] = str(args.usage_pause)
            emulator.reset_calls()
            started, cpu = time.monotonic(), _children_cpu()
            logs = export(folder, env)
            wall, cpu = time.monotonic() - started, _children_cpu() - cpu
            calls = emulator.calls
            throttled = sum(call.error_code in THROTTLE_CODES for call in calls)
            busiest = max(Counter(call.page_id for call in calls if call.page_id).values())
            pauses = [float(s) for log in logs for s in SLOWED.findall(log)]
            print(
                f"{label:<14} {wall:6.1f}s {cpu:6.1f}s {len(calls):6d} {throttled:9d} "
                f"{emulator.peak_in_flight():14d} {emulator.peak_pages_in_flight():10d} "
                f"{busiest / PER_SECOND:6.1f}s {len(pauses):4d} {sum(pauses):6.1f}s "
                f"{_messages(dsn):8d}"
            )


POSTGRES = ("--destination", "postgres")
# meta-inbox's log line when Graph's usage headers make it pause a Page.
SLOWED = re.compile(r"slowing down by ([0-9.]+) s")


def _fan_out(folder: Path, env: dict[str, str], page_ids: list[str]) -> list[str]:
    """One pipeline per Page, all at once, then the views once (the DAG's way); their logs."""
    exports = _together(
        folder,
        env,
        [
            ["run", *POSTGRES, "--page-id", page, "--pipeline-name", f"meta_inbox_{page}",
             "--no-views"]
            for page in page_ids
        ],
    )  # fmt: skip
    return exports + _together(folder, env, [["views", *POSTGRES]])


def _together(folder: Path, env: dict[str, str], commands: list[list[str]]) -> list[str]:
    """Run the commands at the same time; their logs."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "meta_inbox", *command],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    logs = []
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"exit code {process.returncode}: {stderr[-2000:]}")
        logs.append(stderr)
    return logs


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _messages(dsn: str) -> int:
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from inbox.messages")
        return int(cursor.fetchone()[0])


if __name__ == "__main__":
    main()
