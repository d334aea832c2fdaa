"""Every README block a user would run, run as written, in README order, in an empty folder
against the emulator: shell commands (`sh`), Python (`python`) and SQL (`sql`) blocks; `toml`
blocks are parsed. Unmarked blocks are the two `make` commands, usage synopses, templates with
placeholders and diagrams."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import duckdb
import pytest

from conftest import Workspace
from meta_inbox import lake
from meta_inbox.emulator import Emulator
from model import expected_counts, selected

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = [
    (language, textwrap.dedent(body))
    for _indent, language, body in re.findall(r"^( *)```(\w*)\n(.*?)^\1```", README, re.M | re.S)
]


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    kinds = [language for language, _ in BLOCKS]
    assert set(kinds) <= {"", "sh", "python", "sql", "toml"}
    assert (kinds.count("sh"), kinds.count("python"), kinds.count("sql")) == (8, 3, 1)


def _users_env(workspace: Workspace, home: Path) -> dict[str, str]:
    """A user's shell: dlt's defaults (no DLT_DATA_DIR), a home of the test's own."""
    env = {k: v for k, v in workspace.env().items() if k != "DLT_DATA_DIR"}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture
def folder(workspace: Workspace) -> Path:
    """An empty folder, the user's working folder."""
    path = workspace.root / "project"
    path.mkdir()
    return path


def test_every_readme_block_runs_as_written(
    workspace: Workspace, emulator: Emulator, folder: Path
) -> None:
    env = _users_env(workspace, workspace.root / "home")
    env["INSTAGRAM_USER_TOKEN"] = emulator.instagram_login_token  # as the README asks
    outputs = []
    for number, (language, body) in enumerate(BLOCKS):
        if language == "toml":
            tomllib.loads(body)
        elif language == "sh":
            outputs.append(_shell(body, folder, env))
        elif language == "python":
            script = folder / f"readme_block_{number}.py"
            script.write_text(body, encoding="utf-8")
            outputs.append(_checked([sys.executable, script.name], folder, env))
        elif language == "sql":
            with duckdb.connect(str(folder / "meta_inbox.duckdb"), read_only=True) as connection:
                runs = connection.execute(body).fetchall()
            # `meta-inbox run` twice and `meta_inbox.export()`, before this block.
            assert [row[1] for row in runs] == ["success"] * 3

    everything = selected(emulator.inbox)
    expected = expected_counts(everything)
    messenger = [c for c in everything if c.platform == "messenger"]
    with duckdb.connect(str(folder / "meta_inbox.duckdb"), read_only=True) as connection:
        for table in ("conversations", "messages", "message_attachments", "pages"):
            stored = connection.execute(f"select count(*) from inbox.{table}").fetchone()
            assert stored == (expected[table],), table
    with duckdb.connect(str(folder / "my_inbox.duckdb"), read_only=True) as connection:
        stored = connection.execute("select count(*) from inbox.messages").fetchone()
        assert stored == (expected_counts(messenger)["messages"],)
    with lake.connect(folder / "meta_inbox_lake") as connection:
        stored = connection.execute("select count(*) from inbox.messages").fetchone()
        assert stored == (expected["messages"],)

    report = (folder / "inbox_report.html").read_text(encoding="utf-8")
    assert report.count('<figure class="plot"') == 5
    record = json.loads((folder / "run.json").read_text())
    assert (record["status"], record["exit_code"]) == ("success", 0)
    text = "\n".join(outputs)
    pages = [json.loads(line) for line in text.splitlines() if line.startswith('{"id"')]
    assert [page["id"] for page in pages] == [page.id for page in emulator.inbox.pages]
    assert "success 0 new messages" in text  # export() after two runs of the CLI
    # The working folder's state belongs to dataset inbox: another one is refused in one line.
    assert "loads " + str(folder / "meta_inbox.duckdb") + " (duckdb, dataset inbox), not " in text
    assert "exit 2" in text
    moved = folder.parent / "moved"
    assert "meta-inbox: 3 Page(s), nothing new, into " + str(moved / "meta_inbox.duckdb") in text
    assert not (workspace.root / "home" / ".dlt" / "pipelines" / "meta_inbox").exists()
    assert str(expected["messages"]) in text  # the count printed by the DuckDB one-liner
    assert emulator.user_token not in text
    # The legacy archive, and one person's data (an id the emulator has no thread of).
    assert "archived_legacy" in text
    assert "would erase 0 thread(s)" in text
    account = emulator.inbox.instagram_accounts[0]
    assert f"{account.id} @{account.name} (Instagram Login, no Page)" in text
    with duckdb.connect(str(folder / "instagram_account.duckdb"), read_only=True) as connection:
        stored = connection.execute("select id, login from inbox.pages").fetchall()
    assert stored == [(account.id, "instagram_login")]
    assert "user_ids (--user-id) \"1' or '1'='1\" is not a Graph id" in text


def _shell(body: str, folder: Path, env: dict[str, str]) -> str:
    """A shell block, line by line; `pip install X` is checked with `--dry-run` from the
    repository (installing for real would replace the package under test)."""
    lines = []
    for line in body.splitlines():
        installed = re.match(r"pip install (\S+)", line)
        if installed:
            spec = installed[1].replace(".", str(ROOT), 1)
            command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", spec]
            lines.append(_checked(command, ROOT, env))
        else:
            lines.append(_checked(["bash", "-euo", "pipefail", "-c", line], folder, env))
    return "\n".join(lines)


def _checked(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_the_emulator_transcript_points_a_run_at_it(
    workspace: Workspace, emulator: Emulator, folder: Path
) -> None:
    """`meta-inbox emulator` as the README shows it (on a free port), its `export` lines pasted
    into a shell, then `meta-inbox run`."""
    transcript = next(body for language, body in BLOCKS if body.startswith("$ meta-inbox emulator"))
    lines = transcript.splitlines()
    command = re.sub(r"--port \d+", "--port 0", lines[0].removeprefix("$ ")).split()
    shown = [line.split("=")[0] for line in lines if line.startswith("export ")]
    env = _users_env(workspace, workspace.root / "home")
    shell = {k: v for k, v in env.items() if not k.startswith("SOURCES__META_INBOX__")}
    server = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert server.stdout is not None
        printed = [server.stdout.readline().rstrip("\n") for _ in range(len(lines) - 1)]
        pasted = [line for line in printed if line.startswith("export ")]
        assert [line.split("=")[0] for line in pasted] == shown
        assert printed[0].startswith("Graph API emulator listening on http://127.0.0.1:")
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join([*pasted, "meta-inbox run --json"])],
            cwd=folder,
            env=shell,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.terminate()
        server.wait(timeout=60)

    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    # The same seed and scale as the test's own emulator: the same inbox.
    expected = expected_counts(selected(emulator.inbox))
    assert (record["status"], record["new_messages"]) == ("success", expected["messages"])
    with duckdb.connect(str(folder / "meta_inbox.duckdb"), read_only=True) as connection:
        stored = connection.execute("select count(*) from inbox.conversations").fetchone()
    assert stored == (expected["conversations"],)
    assert emulator.calls == []  # the run talked to the emulator it was pointed at
