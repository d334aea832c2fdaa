"""Progress: one updating status line on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import os
import pty

from conftest import Workspace


def test_terminal_gets_one_updating_status_line(workspace: Workspace) -> None:
    terminal, stderr = pty.openpty()
    process = workspace.start(stderr=stderr)
    os.close(stderr)
    screen = _read_until_closed(terminal)
    stdout, _ = process.communicate(timeout=300)

    assert process.returncode == 0, screen
    assert "changed threads" in screen
    assert screen.count("\r\x1b[K") >= 20  # one rewrite per folder at least
    assert " INFO " not in screen  # no log-formatted lines on a terminal
    assert "messages without details" in stdout


def test_plain_lines_when_not_a_terminal(workspace: Workspace) -> None:
    result = workspace.run()

    assert result.code == 0
    progress = [line for line in result.stderr.splitlines() if "changed threads" in line]
    assert len(progress) == 20  # one per Page, platform and folder
    assert all(" INFO meta_inbox" in line for line in progress)
    assert "\r" not in result.stderr


def _read_until_closed(terminal: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(terminal)
    return b"".join(chunks).decode(errors="replace")
