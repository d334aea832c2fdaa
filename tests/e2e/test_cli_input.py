"""Bad input is refused before the first call to Graph, with one line and exit code 2."""

from __future__ import annotations

import pytest

from conftest import Workspace
from meta_inbox.emulator import Emulator


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (["--platform", "whatsapp"], {}, "--platform 'whatsapp' is unknown"),
        (["--page-id", "my-page"], {}, "Page ids are digits only"),
        (["--since", "last tuesday"], {}, "is not a date"),
        (["--destination", "nowhere"], {}, "is not a dlt destination"),
        ([], {"folders": '["inbox", "archive"]'}, "folders"),
        ([], {"platforms": '["telegram"]'}, "platforms"),
    ],
)
def test_refused_before_any_call(
    workspace: Workspace, emulator: Emulator, args: list[str], config: dict, expected: str
) -> None:
    result = workspace.run(*args, **config)

    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert emulator.calls == []


def test_missing_token_is_refused(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run(token=" ")

    assert result.code == 2
    assert "No access token" in result.stderr
    assert emulator.calls == []
