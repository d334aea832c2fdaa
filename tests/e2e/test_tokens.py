"""Page tokens, user tokens, `page_ids`, bad tokens, and the token never leaking anywhere."""

from __future__ import annotations

from pathlib import Path

from conftest import Workspace
from meta_inbox.emulator import Emulator
from model import TABLE_NAMES, expected_counts, selected


def test_page_token_exports_its_own_page(workspace: Workspace, emulator: Emulator) -> None:
    page = next(p for p in emulator.inbox.pages if p.instagram)

    result = workspace.export(token=emulator.page_token(page.id))

    assert result.exit_code == 0, result.problems
    assert workspace.counts() == expected_counts(selected(emulator.inbox, [page.id]))
    assert workspace.query("select distinct page_id from messages") == [(page.id,)]


def test_user_token_with_page_ids_exports_only_those(
    workspace: Workspace, emulator: Emulator
) -> None:
    first, second, third = (page.id for page in emulator.inbox.pages)

    # Repeated, and separated by commas: both read as a list of Pages.
    result = workspace.run("--page-id", f"{first},{third}")

    assert result.code == 0, result.output
    assert workspace.counts() == expected_counts(selected(emulator.inbox, [first, third]))
    assert {row[0] for row in workspace.query("select distinct page_id from conversations")} == {
        first,
        third,
    }
    assert workspace.run("--page-id", second, "--page-id", first).code == 0
    assert workspace.counts() == expected_counts(selected(emulator.inbox))


def test_page_ids_from_config_filter_too(workspace: Workspace, emulator: Emulator) -> None:
    chosen = emulator.inbox.pages[1].id

    result = workspace.run(page_ids=f'["{chosen}"]', platforms='["messenger"]')

    assert result.code == 0, result.output
    conversations = [c for c in selected(emulator.inbox, [chosen]) if c.platform == "messenger"]
    assert {k: v for k, v in workspace.counts().items() if k != "pages"} == {
        k: v for k, v in expected_counts(conversations).items() if k != "pages"
    }


def test_page_the_token_cannot_read_is_refused(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run("--page-id", emulator.inbox.unmanaged_page_id)

    assert result.code == 6
    assert emulator.inbox.unmanaged_page_id in result.stderr
    assert "page_ids" in result.stderr
    assert "Traceback" not in result.output
    assert workspace.data_tables() == set()
    assert workspace.state() == {}


def test_bad_token_fails_with_one_line(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run(token="EAAGnotavalidtoken123456")

    assert result.code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "access token" in lines[0]
    assert "Renew it" in lines[0]
    assert "EAAGnotavalidtoken123456" not in result.output
    # The Instagram host is asked once whether the token is an Instagram User token.
    assert [(c.host, c.path) for c in emulator.calls] == [
        ("facebook", "/me/accounts"),
        ("instagram", "/me"),
    ]
    assert workspace.data_tables() == set()
    assert workspace.state() == {}


def test_tokens_are_found_nowhere(workspace: Workspace, emulator: Emulator) -> None:
    """Not in the destination, the CLI's output (with --debug), nor dlt's state, trace or
    load packages — although Graph embeds the token in every `next` URL it sends back."""
    tokens = [emulator.user_token, *(emulator.page_token(p.id) for p in emulator.inbox.pages)]
    assert workspace.run().code == 0
    emulator.add_activity(seed=1)
    debug = workspace.run("--debug")
    assert debug.code == 0, debug.output

    for table in (*TABLE_NAMES, "_meta_inbox_runs", "conversation_history"):
        for token in tokens:
            hits = workspace.query(
                f"select count(*) from {table} t where contains(t::varchar, '{token}')"
            )
            assert hits == [(0,)], (table, token)
    files = [workspace.database(), *workspace.data_dir.rglob("*")]
    assert len(files) > 10
    for path in (p for p in files if p.is_file()):
        content = path.read_bytes()
        for token in tokens:
            assert token.encode() not in content, path
    for output in workspace.outputs:
        for token in tokens:
            assert token not in output
    # The search means something: Graph's `next` URLs were logged (redacted), and so was
    # dlt's own debug logging.
    assert "access_token=***" in debug.stderr
    assert "|[DEBUG]|" in debug.stderr
    assert "|dlt|" in debug.stderr


def test_duckdb_file_is_in_the_current_folder(workspace: Workspace) -> None:
    """`<pipeline-name>.duckdb` in the current folder, schema `inbox` (README "Run")."""
    result = workspace.run()

    assert result.code == 0
    assert (Path(workspace.root) / "meta_inbox.duckdb").exists()
    assert f"{workspace.root / 'meta_inbox.duckdb'} (DuckDB), schema inbox" in result.stdout
    assert workspace.run("--pipeline-name", "nightly").code == 0
    assert (Path(workspace.root) / "nightly.duckdb").exists()
