"""The line of an unexpected error: its advice fits whether --debug was given."""

from __future__ import annotations

import pytest

from meta_inbox.cli import _fail
from meta_inbox.outcomes import ExitCode


@pytest.mark.parametrize(
    ("debug", "advice"),
    [
        (False, "A bug: run again with --debug for details; report it if it persists."),
        (True, "A bug: the traceback is above; report it if it persists."),
    ],
)
def test_unexpected_error_advice(
    capsys: pytest.CaptureFixture[str], debug: bool, advice: str
) -> None:
    code = _fail(RuntimeError("boom"), debug)

    assert code == ExitCode.UNEXPECTED
    lines = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("meta-inbox:")
    ]
    assert lines == [f"meta-inbox: unexpected error: RuntimeError: boom. {advice}"]
