"""Runs a benchmark's `meta-inbox` processes from a small process of its own.

Linux carries a process's peak RSS across `exec`: a child forked from the benchmark, which holds
the emulator's whole inbox (1.5 GB at a million messages), reports that inbox as its own peak.
Forked from this process instead (standard library only, a few MB), a run's peak is its own.
The benchmark writes a command a line to its stdin, as JSON; it answers each on its stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from functools import cache
from typing import Any


@cache
def _launcher() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def launched(command: list[str], folder: str, env: dict[str, str]) -> dict[str, Any]:
    """`command` run in `folder`: its wall and CPU seconds, peak RSS in MB, exit code and what
    it printed."""
    launcher = _launcher()
    asked, answers = launcher.stdin, launcher.stdout
    if asked is None or answers is None:
        raise RuntimeError("the launcher has no pipes")
    asked.write(json.dumps([command, folder, env]) + "\n")
    asked.flush()
    return json.loads(answers.readline())


def _run(command: list[str], folder: str, env: dict[str, str]) -> dict[str, Any]:
    # Files, not pipes: nothing reads the output while this process sits in wait4.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=err)
        # Peak RSS also counts the shared libraries' pages mapped from the page cache, which
        # vary with its state (the same code, the same files: 60 MB apart between two
        # virtualenvs); the process's own (anonymous) memory is sampled beside it.
        anonymous = 0
        while True:
            # wait4 gives this child's own rusage; RUSAGE_CHILDREN would keep the largest peak.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            anonymous = max(anonymous, _anonymous_kb(process.pid))
            time.sleep(0.02)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return {
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_anonymous_mb": anonymous / 1024,
            "code": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(),
            "stderr": err.read().decode(),
        }


def _anonymous_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:  # ended meanwhile
        pass
    return 0


if __name__ == "__main__":
    for line in sys.stdin:
        print(json.dumps(_run(*json.loads(line))), flush=True)
