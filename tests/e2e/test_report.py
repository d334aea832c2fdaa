"""`meta-inbox report` on the demo data, opened in a real headless browser (Debian's
`chromium`, installed here when missing): every plot is laid out and drawn, and a screenshot is
written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from conftest import Workspace

BUSINESS = {
    "SOURCES__META_INBOX__BUSINESS_HOURS": json.dumps(
        {
            "timezone": "Europe/Berlin",
            **{day: ["09:00-12:30", "13:30-18:00"] for day in ("mon", "tue", "wed", "thu")},
            "fri": ["09:00-15:00"],
            "holidays": ["2026-05-25"],
        }
    ),
    "SOURCES__META_INBOX__FIRST_RESPONSE_SLA": "1h",
    "SOURCES__META_INBOX__RESOLUTION_SLA": "8h",
}
PLOTS = [
    "Messages per day",
    "First response",
    "Service levels",
    "Open threads by age",
    "Busiest hours",
]
# The demo inbox's last two weeks, in Berlin.
SINCE, UNTIL = "2026-05-18", "2026-05-31"
PERIOD = (datetime(2026, 5, 17, 22, tzinfo=UTC), datetime(2026, 5, 31, 22, tzinfo=UTC))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed once per test run when missing (CI runs as root)."""
    found = shutil.which("chromium")
    if found is None:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        found = shutil.which("chromium")
    assert found, "chromium is not installed and could not be"
    return found


def browse(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--run-all-compositor-stages-before-draw", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )  # fmt: skip


def test_the_report_of_the_demo_renders_every_plot(workspace: Workspace, chromium: str) -> None:
    env = workspace.env() | BUSINESS
    assert workspace.cli("demo", env=env).returncode == 0
    page = workspace.root / "report.html"

    done = workspace.cli(
        "report", "--pipeline-name", "meta_inbox_demo", "--since", SINCE, "--until", UNTIL,
        "--output", str(page), env=env,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"report of 2026-05-17 22:00 to 2026-05-31 22:00 UTC written to {page}\n"
    )
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing is fetched (the SVG namespace is a name, not a request).
    assert re.findall(r"""(?:src|href)\s*=|url\(|@import""", text) == []
    messages = count(
        workspace.root / "meta_inbox_demo.duckdb",
        "select count(*) from inbox.messages where deleted_at is null "
        "and created_time >= $1 and created_time < $2",
    )
    assert f"{messages} messages in the period" in text

    dom = browse(chromium, page, "--dump-dom").stdout
    drawn = re.findall(r'<figure class="plot" data-plot="([^"]+)" data-rendered="(\w+)" '
                       r'data-marks="(\d+)"', dom)  # fmt: skip
    assert [(name, rendered) for name, rendered, _ in drawn] == [(p, "yes") for p in PLOTS]
    assert all(int(marks) > 0 for _, _, marks in drawn)
    assert f'data-plots="{len(PLOTS)}"' in dom

    screenshot = workspace.root / "report.png"
    browse(chromium, page, f"--screenshot={screenshot}", "--window-size=1200,2600")
    image = screenshot.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(image) > 50_000  # plots and tables, not a blank page


def count(database: Path, sql: str) -> int:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql, list(PERIOD)).fetchone()[0]


def test_the_report_reads_postgres_and_the_lake_alike(
    workspace: Workspace, postgres_dsn: str
) -> None:
    env = workspace.env() | BUSINESS
    pages = {}
    for destination, pipeline in (
        ("duckdb", "meta_inbox"),
        ("postgres", "pg"),
        ("filesystem", "lake"),
    ):
        assert workspace.cli("run", "--destination", destination, "--pipeline-name", pipeline,
                             env=env).returncode == 0  # fmt: skip
        page = workspace.root / f"{destination}.html"
        done = workspace.cli(
            "report", "--destination", destination, "--pipeline-name", pipeline,
            "--since", SINCE, "--until", UNTIL, "--output", str(page), env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # The same numbers wherever the data lives (the generation time aside).
        pages[destination] = re.sub(r"Generated [^<]* UTC", "", page.read_text(encoding="utf-8"))
    assert pages["duckdb"].count('<figure class="plot"') == len(PLOTS)
    assert pages["postgres"] == pages["duckdb"] == pages["filesystem"]
