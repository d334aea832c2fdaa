"""Issue 18: the inboxes meta-inbox did not read whole. Conversation Routing's `is_owner`, threads
archived before mid-2018, one person's threads. Exact rows from the emulator's model; calls
counted."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from conftest import NO_DUPLICATES, Workspace, left_packages, postgres_rows
from meta_inbox.emulator import Emulator, Faults
from meta_inbox.emulator.inbox import LEGACY_ARCHIVE_END
from meta_inbox.reader import UNAVAILABLE_SKIPS
from model import LEGACY_ARCHIVE, TABLE_NAMES, expected_counts, platform_folders, selected


def _listings(emulator: Emulator, page_id: str | None = None) -> list:
    return [
        call
        for call in emulator.calls
        if call.path.endswith("/conversations")
        and call.params.get("fields") != "id"
        and (page_id is None or call.page_id == page_id)
    ]


def _counts(workspace: Workspace) -> dict[str, int]:
    """Rows of every table; a table no row was loaded into yet counts 0."""
    present = workspace.data_tables()
    return {
        name: workspace.query(f"select count(*) from {name}")[0][0] if name in present else 0
        for name in TABLE_NAMES
    }


def test_is_owner_is_graphs_for_every_thread(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.export()

    assert result.exit_code == 0, result.problems
    stored = dict(workspace.query("select id, is_owner from conversations"))
    expected = {c.id: c.is_owner for c in selected(emulator.inbox)}
    assert stored == expected
    # The emulator's mix: owned, owned by another app, and left out.
    assert set(expected.values()) == {True, False, None}
    assert all("is_owner" in call.params["fields"].split(",") for call in _listings(emulator))


def test_a_page_refusing_is_owner_loses_only_that_field_once(
    workspace: Workspace, emulator: Emulator
) -> None:
    refusing = emulator.inbox.pages[0]
    emulator.refuse_field(refusing.id, "is_owner")

    # One call at a time: the first listing meets the refusal before any other is asked.
    result = workspace.export(max_concurrency=1)

    assert result.exit_code == 0, result.problems
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    stored = dict(workspace.query("select id, is_owner from conversations"))
    assert stored == {
        c.id: None if c.page_id == refusing.id else c.is_owner for c in selected(emulator.inbox)
    }
    # Instagram's probes (ids only) of Pages without an account are refused as ever.
    refused = [call for call in _listings(emulator) if call.error_code is not None]
    assert [(call.page_id, call.error_code) for call in refused] == [(refusing.id, 100)]
    asked = [
        "is_owner" in call.params["fields"].split(",") for call in _listings(emulator, refusing.id)
    ]
    # The refused call, its retry without the field, and no other call asks for it.
    assert asked[0] is True
    assert not any(asked[1:])
    assert all(
        "is_owner" in call.params["fields"].split(",")
        for page in emulator.inbox.pages[1:]
        for call in _listings(emulator, page.id)
    )
    said = [warning for warning in result.warnings if "is_owner" in warning]
    assert said == [
        f"Page {refusing.id} ({refusing.name}): Graph refuses `is_owner` (Conversation Routing "
        "is not set up for this app): conversations.is_owner stays empty for this Page"
    ]


def test_threads_archived_before_mid_2018_are_listed_by_tag_and_marked(
    workspace: Workspace, emulator: Emulator
) -> None:
    inbox = emulator.inbox
    legacy = [c for c in selected(inbox) if c.folder == LEGACY_ARCHIVE]
    assert len(legacy) == 2 * len(inbox.pages)
    assert all(c.updated_time < LEGACY_ARCHIVE_END for c in legacy)

    result = workspace.export()

    assert result.exit_code == 0, result.problems
    assert workspace.counts() == expected_counts(selected(inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    stored = workspace.query(
        f"select id, platform from conversations where folder = '{LEGACY_ARCHIVE}' order by id"
    )
    assert stored == sorted((c.id, "messenger") for c in legacy)
    for conversation in legacy:
        rows = workspace.query(
            f"select count(*) from messages where conversation_id = '{conversation.id}'"
        )
        assert rows == [(conversation.message_count,)]
    tagged = [call for call in _listings(emulator) if "tags" in call.params]
    assert sorted((call.page_id, call.params["platform"]) for call in tagged) == sorted(
        (page.id, "messenger") for page in inbox.pages
    )
    assert all("folder" not in call.params and call.error_code is None for call in tagged)
    assert all(call.params["tags"] == "action:archived" for call in tagged)
    folders = workspace.state()["folders"]
    assert {key for key in folders if key.endswith(LEGACY_ARCHIVE)} == {
        f"{page.id}/messenger/{LEGACY_ARCHIVE}" for page in inbox.pages
    }
    # Archived long ago: never open, never resolved by a run.
    views = workspace.query(
        f"select is_open, resolved_at from conversation_metrics where folder = '{LEGACY_ARCHIVE}'"
    )
    assert views == [(False, None)] * len(legacy)


def test_a_graph_refusing_tags_costs_one_call_and_a_note(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt"))
    with Emulator(seed=7, scale=1, faults=Faults(refuses_tags=True)) as emulator:
        workspace = Workspace(tmp_path, emulator)
        inbox = emulator.inbox

        result = workspace.export()

        assert result.exit_code == 0, result.problems
        kept = [c for c in selected(inbox) if c.folder != LEGACY_ARCHIVE]
        assert workspace.counts() == expected_counts(kept)
        tagged = [call for call in emulator.calls if "tags" in call.params]
        assert sorted((call.page_id, call.error_code) for call in tagged) == sorted(
            (page.id, 100) for page in inbox.pages
        )
        # Nothing else was refused but the probes of Pages without Instagram.
        refused = [call for call in _listings(emulator) if call.error_code is not None]
        assert refused == tagged
        notes = [warning for warning in result.warnings if "action:archived" in warning]
        # One note per Page, in the order the Pages' listings were answered.
        assert sorted(notes) == sorted(
            f"Page {page.id} ({page.name}): Graph refuses `tags=action:archived` ((#100) Param "
            "tags must be one of {action:archived}): threads archived before mid-2018 are not "
            "exported"
            for page in inbox.pages
        )
        assert not any(key.endswith(LEGACY_ARCHIVE) for key in workspace.state()["folders"])


def test_run_for_some_people_exports_exactly_their_threads_and_keeps_no_state(
    workspace: Workspace, emulator: Emulator
) -> None:
    inbox = emulator.inbox
    archived = next(c for c in selected(inbox) if c.folder == LEGACY_ARCHIVE)
    requested = next(
        c for c in selected(inbox) if c.platform == "instagram" and c.folder == "other"
    )
    people = [archived.customers[0].id, requested.customers[0].id]
    theirs = {c.id: c for person in people for c in inbox.threads_with(person)}
    assert {archived.id, requested.id} <= set(theirs)

    result = workspace.run("--user-id", people[0], "--user-id", people[1])

    assert result.code == 0, result.output
    # Every Page was read (for these people), so every Page has its row.
    expected = expected_counts(theirs.values()) | {"pages": len(inbox.pages)}
    assert _counts(workspace) == expected
    assert set(workspace.query("select id from conversations")) == {(i,) for i in theirs}
    listings = _listings(emulator)
    assert listings
    assert all(call.params["user_id"] in people for call in listings)
    # Every folder of both platforms, for each person, on every Page that has them.
    asked = {(c.page_id, c.params["platform"], c.params.get("folder"), c.params["user_id"])
             for c in listings if c.error_code is None}  # fmt: skip
    assert len(asked) == len(people) * sum(
        len(platform_folders(platform)) for page in inbox.pages for platform in page.platforms
    )
    assert workspace.state().get("folders") == {}

    emulator.reset_calls()
    regular = workspace.run()

    # The regular pipeline's first run is still a backfill: nothing was skipped for the people.
    assert regular.code == 0, regular.output
    assert workspace.counts() == expected_counts(selected(inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES


def test_user_ids_that_are_not_graph_ids_are_refused(workspace: Workspace) -> None:
    for bad in ("1' or '1'='1", "12a", ""):
        result = workspace.run("--user-id", bad)
        assert result.code == 2, result.output
        assert "is not a Graph id: ids are digits only." in result.stderr
    assert not workspace.database().exists()
    assert workspace.emulator.calls == []


def _duckdb_rows(path) -> dict[str, set[tuple]]:
    """Every row of every table in every schema of a DuckDB file, by `schema.table`."""
    with duckdb.connect(str(path), read_only=True) as connection:
        names = connection.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_type = 'BASE TABLE'"
        ).fetchall()
        return {
            f"{schema}.{table}": set(
                connection.execute(f'select * from "{schema}"."{table}"').fetchall()
            )
            for schema, table in names
        }


def _key_positions(path) -> dict[str, int | None]:
    """Where each table keeps its thread id (`id` in conversations), if it has one."""
    with duckdb.connect(str(path), read_only=True) as connection:
        columns = connection.execute(
            "select table_schema, table_name, column_name, ordinal_position "
            "from information_schema.columns"
        ).fetchall()
    keys: dict[str, int | None] = {}
    for schema, table, column, position in columns:
        name = f"{schema}.{table}"
        keys.setdefault(name, None)
        wanted = "id" if table == "conversations" else "conversation_id"
        if column == wanted:
            keys[name] = position - 1
    return keys


def _holding(path, needle: str) -> list[str]:
    """`schema.table.column` of every text column of the file that holds `needle`."""
    with duckdb.connect(str(path), read_only=True) as connection:
        columns = connection.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type in ('VARCHAR', 'JSON')"
        ).fetchall()
        return [
            f"{schema}.{table}.{column}"
            for schema, table, column in columns
            if connection.execute(
                f'select count(*) from "{schema}"."{table}" '
                f'where contains(cast("{column}" as varchar), ?)',
                [needle],
            ).fetchone()[0]
        ]


def _forget(workspace: Workspace, *args: str):
    done = workspace.cli("forget", *args)
    workspace.outputs.append(done.stdout + done.stderr)
    return done


def test_forget_erases_a_person_from_duckdb_for_good(
    workspace: Workspace, emulator: Emulator
) -> None:
    inbox = emulator.inbox
    page = inbox.pages[0]
    # The newest thread of an inbox: every regular run lists it again (the recheck window).
    newest = inbox.conversations_of(page.id, "messenger", "inbox")[0]
    person = newest.customers[0]
    theirs = {c.id for c in inbox.threads_with(person.id)}
    assert workspace.run().code == 0
    database = workspace.database()
    before = _duckdb_rows(database)
    assert _holding(database, person.id)

    for bad in ("1' or '1'='1", f"{person.id};drop table messages", "12 34", "-1"):
        refused = _forget(workspace, "--user-id", bad)
        assert refused.returncode == 2, refused.stderr
        assert "is not a Graph id: ids are digits only." in refused.stderr
    refused = _forget(workspace, "--user-id", person.id, "--user-id", "1' or '1'='1")
    assert refused.returncode == 2, refused.stderr
    assert _duckdb_rows(database) == before

    dry = _forget(workspace, "--user-id", person.id, "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert f"would erase {len(theirs)} thread(s)" in dry.stdout
    assert _duckdb_rows(database) == before

    done = _forget(workspace, "--user-id", person.id)

    assert done.returncode == 0, done.stderr
    assert f"erased {len(theirs)} thread(s)" in done.stdout
    after = _duckdb_rows(database)
    keys = _key_positions(database)
    erasures = after.pop("inbox._meta_inbox_erasures")
    assert {(row[0], row[1], row[2]) for row in erasures} == {
        (c.id, c.page_id, c.platform) for c in inbox.threads_with(person.id)
    }
    # Every other row is there, value for value.
    assert after == {
        name: {row for row in rows if keys[name] is None or row[keys[name]] not in theirs}
        for name, rows in before.items()
    }
    # The emulator's texts and names are shared by many people: the rows above are the test
    # of those; the person's id (also in their emails) must be nowhere.
    assert _holding(database, person.id) == []

    stale = {c.id: c for c in selected(inbox) if c.id not in theirs}
    for args in ((), ("--reconcile",), ("--full-refresh",)):
        result = workspace.run(*args)
        assert result.code == 0, result.output
        assert _holding(database, person.id) == [], args
        assert workspace.counts() == expected_counts(stale.values()), args

    # What the person writes after the erasure is exported, and only that.
    later = emulator.customer_writes(newest.id, "Hello again, it's me", int(time.time()) + 5)
    result = workspace.run()

    assert result.code == 0, result.output
    stored = workspace.query(
        f"select id, message from messages where conversation_id = '{newest.id}'"
    )
    assert stored == [(later, "Hello again, it's me")]
    assert workspace.query(f"select count(*) from conversations where id = '{newest.id}'") == [(1,)]


def test_forget_deletes_the_packages_an_older_meta_inbox_left(
    workspace: Workspace, emulator: Emulator
) -> None:
    """meta-inbox used to leave dlt's loaded packages in the pipeline folder, every row in their
    Parquet files: the first run here is made as it did."""
    newest = emulator.inbox.conversations_of(emulator.inbox.pages[0].id, "messenger", "inbox")[0]
    person = newest.customers[0]
    done = workspace.program(
        "import meta_inbox.pipeline as p; p.discard_loaded_packages = lambda pipeline: None", "run"
    )
    assert done.returncode == 0, done.stderr
    files = [name for name in left_packages(workspace.data_dir) if name.endswith(".parquet")]
    assert any(_parquet_holds(workspace.data_dir, name, person.id) for name in files)

    done = _forget(workspace, "--user-id", person.id)

    assert done.returncode == 0, done.stderr
    assert left_packages(workspace.data_dir) == []
    assert _holding(workspace.database(), person.id) == []


KILLED_BEFORE_ITS_LOAD = "import os, dlt; dlt.Pipeline.load = lambda *args, **kwargs: os._exit(137)"


def test_a_first_run_killed_before_its_load_is_read_again_whole(
    workspace: Workspace, emulator: Emulator
) -> None:
    killed = workspace.program(KILLED_BEFORE_ITS_LOAD, "run")
    assert killed.returncode == 137, killed.stderr
    assert any(name.startswith("normalized/") for name in left_packages(workspace.data_dir))

    result = workspace.run()

    assert result.code == 0, result.output
    assert workspace.counts() == expected_counts(selected(emulator.inbox))
    assert workspace.duplicate_ids() == NO_DUPLICATES
    assert left_packages(workspace.data_dir) == []


def test_forget_loads_and_erases_what_a_killed_run_left_pending(
    workspace: Workspace, emulator: Emulator
) -> None:
    """A run killed between its extract and its load leaves a package that the next run loads
    first: loaded after the erasure, it would bring the person's thread back."""
    inbox = emulator.inbox
    newest = inbox.conversations_of(inbox.pages[0].id, "messenger", "inbox")[0]
    person = newest.customers[0]
    theirs = {c.id for c in inbox.threads_with(person.id)}
    assert workspace.run().code == 0
    # Sent before the erasure: what is sent after it is a new contact, exported as usual.
    emulator.customer_writes(newest.id, "Are you there?", int(time.time()) - 1)
    killed = workspace.program(KILLED_BEFORE_ITS_LOAD, "run")
    assert killed.returncode == 137, killed.stderr
    pending = [
        name
        for name in left_packages(workspace.data_dir)
        if name.startswith("normalized/") and name.endswith(".parquet")
    ]
    assert any(_parquet_holds(workspace.data_dir, name, person.id) for name in pending)

    done = _forget(workspace, "--user-id", person.id)

    assert done.returncode == 0, done.stderr
    assert f"erased {len(theirs)} thread(s)" in done.stdout
    assert left_packages(workspace.data_dir) == []
    assert _holding(workspace.database(), person.id) == []
    result = workspace.run()
    assert result.code == 0, result.output
    assert _holding(workspace.database(), person.id) == []
    assert workspace.counts() == expected_counts(c for c in selected(inbox) if c.id not in theirs)


def _parquet_holds(data_dir: Path, name: str, needle: str) -> bool:
    path = data_dir / "pipelines" / "meta_inbox" / "load" / name
    with duckdb.connect() as connection:
        return bool(
            connection.execute(
                f"select count(*) from read_parquet('{path}') as t where contains(t::varchar, ?)",
                [needle],
            ).fetchone()[0]
        )


def _postgres_rows(dsn: str) -> tuple[dict[str, set[tuple]], dict[str, int | None]]:
    """Every row of every table of the `inbox` schemas (data and staging), by `schema.table`,
    and where each keeps its thread id."""
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select c.table_schema, c.table_name, c.column_name, c.ordinal_position "
            "from information_schema.columns as c join information_schema.tables as t "
            "using (table_schema, table_name) "
            "where t.table_type = 'BASE TABLE' and c.table_schema like 'inbox%%'"
        )
        keys: dict[str, int | None] = {}
        for schema, table, column, position in cursor.fetchall():
            name = f"{schema}.{table}"
            keys.setdefault(name, None)
            if column == ("id" if table == "conversations" else "conversation_id"):
                keys[name] = position - 1
        rows = {}
        for name in keys:
            schema, table = name.split(".")
            cursor.execute(f'select * from "{schema}"."{table}"')
            rows[name] = {tuple(map(_hashable, row)) for row in cursor.fetchall()}
    return rows, keys


def _hashable(value: object) -> object:
    """JSON columns come back as lists and dicts."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _postgres_holding(dsn: str, needle: str) -> list[str]:
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema like 'inbox%%' and data_type in ('text', 'character varying', "
            "'jsonb', 'json')"
        )
        found = []
        for schema, table, column in cursor.fetchall():
            cursor.execute(
                f'select count(*) from "{schema}"."{table}" '
                f'where position(%s in cast("{column}" as text)) > 0',
                (needle,),
            )
            if cursor.fetchone()[0]:
                found.append(f"{schema}.{table}.{column}")
        return found


def test_forget_erases_a_person_from_postgres_for_good(
    workspace: Workspace, emulator: Emulator, postgres_dsn: str
) -> None:
    inbox = emulator.inbox
    person = inbox.conversations_of(inbox.pages[1].id, "instagram", "inbox")[0].customers[0]
    theirs = {c.id for c in inbox.threads_with(person.id)}
    postgres = ("--destination", "postgres")
    assert workspace.run(*postgres).code == 0
    before, keys = _postgres_rows(postgres_dsn)
    assert _postgres_holding(postgres_dsn, person.id)

    done = _forget(workspace, "--user-id", person.id, *postgres)

    assert done.returncode == 0, done.stderr
    after, _ = _postgres_rows(postgres_dsn)
    erasures = after.pop("inbox._meta_inbox_erasures")
    assert {row[0] for row in erasures} == theirs
    assert after == {
        name: {row for row in rows if keys[name] is None or row[keys[name]] not in theirs}
        for name, rows in before.items()
    }
    assert _postgres_holding(postgres_dsn, person.id) == []
    kept = [c for c in selected(inbox) if c.id not in theirs]
    for args in ((), ("--reconcile",), ("--full-refresh",)):
        result = workspace.run(*postgres, *args)
        assert result.code == 0, result.output
        assert _postgres_holding(postgres_dsn, person.id) == [], args
        counts = {table: postgres_rows(postgres_dsn, table) for table in TABLE_NAMES}
        assert counts == expected_counts(kept), args


def _lake_rows(folder) -> dict[str, set[tuple]]:
    """Every row of the lake's Parquet files, by table folder."""
    return {
        table.name: {
            tuple(row.items())
            for path in sorted(table.glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()
        }
        for table in sorted(folder.iterdir())
        if table.is_dir()
    }


def _lake_holding(folder, needle: str) -> list[str]:
    """Files of the lake (any file, bytes or Parquet text values) that hold `needle`."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if needle.encode() in path.read_bytes():
            found.append(str(path))
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
            texts = [c for c in table.column_names if pa.types.is_string(table[c].type)]
            if any(needle in (value or "") for c in texts for value in table[c].to_pylist()):
                found.append(str(path))
    return found


def test_forget_rewrites_the_lake_files_that_held_a_person(
    workspace: Workspace, emulator: Emulator
) -> None:
    inbox = emulator.inbox
    person = inbox.conversations_of(inbox.pages[0].id, "messenger", "other")[0].customers[0]
    theirs = {c.id for c in inbox.threads_with(person.id)}
    lake = ("--destination", "filesystem", "--pipeline-name", "lake")
    assert workspace.run(*lake).code == 0
    folder = workspace.root / "meta_inbox_lake" / "inbox"
    before = _lake_rows(folder)
    assert _lake_holding(folder, person.id)

    done = _forget(workspace, "--user-id", person.id, *lake)

    assert done.returncode == 0, done.stderr
    assert _lake_holding(workspace.root / "meta_inbox_lake", person.id) == []
    after = _lake_rows(folder)
    erasures = after.pop("_meta_inbox_erasures")
    assert {dict(row)["conversation_id"] for row in erasures} == theirs

    def erased(table: str, row: tuple) -> bool:
        values = dict(row)
        return values.get("id" if table == "conversations" else "conversation_id") in theirs

    assert after == {
        table: {row for row in rows if not erased(table, row)} for table, rows in before.items()
    }
    for args in ((), ("--reconcile",), ("--full-refresh",)):
        result = workspace.run(*lake, *args)
        assert result.code == 0, result.output
        assert _lake_holding(workspace.root / "meta_inbox_lake", person.id) == [], args


def _lake_files_query(workspace: Workspace):
    """SQL on every row of the lake's files (not its views, which keep a key's latest row)."""
    folder = workspace.root / "meta_inbox_lake" / "inbox"

    def query(sql: str) -> list[tuple]:
        with duckdb.connect() as connection:
            for table in ("conversations", "messages"):
                files = sorted(str(path) for path in (folder / table).glob("*.parquet"))
                connection.execute(
                    f"create view {table} as select * from read_parquet({files!r}, "
                    "union_by_name = true)"
                )
            return connection.execute(sql).fetchall()

    return query


@pytest.mark.parametrize("lake", [False, True])
def test_forget_erases_a_thread_a_stopped_run_loaded_in_part(
    workspace: Workspace, emulator: Emulator, lake: bool
) -> None:
    """A run that stops early loads the first page of a long thread's messages, not yet its
    `conversations` row (it comes with the thread's last page): `forget` erases the thread
    all the same, and later runs do not bring it back."""
    inbox = emulator.inbox
    long = sorted(
        (c for c in inbox.conversations if c.platform == "messenger" and c.message_count > 100),
        key=lambda conversation: conversation.id,
    )[: UNAVAILABLE_SKIPS + 1]
    for thread in long:
        emulator.fail_follow_ups(thread.id, 2, status=500)
    where = ("--destination", "filesystem", "--pipeline-name", "lake") if lake else ()
    assert workspace.run(*where, MAX_ATTEMPTS="2").code == 8  # Graph keeps failing
    query = _lake_files_query(workspace) if lake else workspace.query
    stored = dict(query("select conversation_id, count(*) from messages group by 1"))
    listed = {row[0] for row in query("select id from conversations")}
    part = next(c for c in long if stored.get(c.id) and c.id not in listed)
    person = part.customers[0]
    theirs = {c.id for c in inbox.threads_with(person.id)}

    done = _forget(workspace, "--user-id", person.id, *where)

    assert done.returncode == 0, done.stderr
    assert f"erased {len(theirs)} thread(s)" in done.stdout
    assert query(f"select count(*) from messages where conversation_id = '{part.id}'") == [(0,)]
    workspace.run(*where, MAX_ATTEMPTS="2")
    assert query(f"select count(*) from messages where conversation_id = '{part.id}'") == [(0,)]
    if lake:
        assert _lake_holding(workspace.root / "meta_inbox_lake", person.id) == []
    else:
        assert _holding(workspace.database(), person.id) == []


def test_an_instagram_account_without_a_page_is_exported_with_its_own_token(
    workspace: Workspace, emulator: Emulator
) -> None:
    account = emulator.inbox.instagram_accounts[0]
    token = emulator.instagram_login_token
    theirs = [c for c in emulator.inbox.conversations if c.page_id == account.id]
    assert {c.platform for c in theirs} == {"instagram"}

    result = workspace.run(token=token)

    assert result.code == 0, result.output
    assert _counts(workspace) == expected_counts(theirs)
    messages = workspace.query("select id from messages")
    assert sorted(messages) == sorted((m.id,) for c in theirs for m in c.messages)
    assert workspace.query(
        "select id, name, instagram_id, instagram_username, platforms, login from pages"
    ) == [(account.id, account.name, account.id, account.name, '["instagram"]', "instagram_login")]
    stored = dict(workspace.query("select id, is_owner from conversations"))
    assert stored == {c.id: c.is_owner for c in theirs}
    # The Facebook host refused the token once; everything else was asked of the Instagram host.
    assert [(c.host, c.path, c.error_code) for c in emulator.calls[:2]] == [
        ("facebook", "/me/accounts", 190),
        ("instagram", "/me", None),
    ]
    assert all(c.host == "instagram" for c in emulator.calls[1:])
    assert token not in result.output

    listed = workspace.cli("pages", "--json", env=workspace.env(token))

    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [
        {
            "id": account.id,
            "name": account.name,
            "instagram_id": account.id,
            "instagram_username": account.name,
            "login": "instagram_login",
        }
    ]


def test_each_host_refuses_the_other_hosts_tokens(emulator: Emulator) -> None:
    for base, token in (
        (emulator.base_url, emulator.instagram_login_token),
        (emulator.instagram_base_url, emulator.user_token),
        (emulator.instagram_base_url, emulator.page_token(emulator.inbox.pages[0].id)),
    ):
        answer = requests.get(f"{base}/v25.0/me", params={"access_token": token}, timeout=10)
        assert answer.json()["error"]["code"] == 190


def test_a_token_neither_host_takes_says_so(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run(token="IGAAnot-a-token")

    assert result.code != 0
    assert "neither" in result.stderr
    assert emulator.base_url in result.stderr
    assert emulator.instagram_base_url in result.stderr


def test_run_for_one_person_of_an_instagram_login_account(
    workspace: Workspace, emulator: Emulator
) -> None:
    account = emulator.inbox.instagram_accounts[0]
    thread = next(c for c in emulator.inbox.conversations if c.page_id == account.id)
    person = thread.customers[0].id
    theirs = emulator.inbox.threads_with(person)

    result = workspace.run("--user-id", person, token=emulator.instagram_login_token)

    assert result.code == 0, result.output
    assert _counts(workspace) == expected_counts(theirs)
    listings = [c for c in _listings(emulator) if c.error_code is None]
    assert listings
    assert all(c.host == "instagram" and c.params["user_id"] == person for c in listings)


def test_a_run_for_some_people_cannot_refresh_or_reconcile(workspace: Workspace) -> None:
    for mode in ("--full-refresh", "--reconcile"):
        result = workspace.run("--user-id", "6912345678901234", mode)
        assert result.code == 2, result.output
        assert "--user-id cannot go with --full-refresh or --reconcile." in result.stderr
    assert workspace.emulator.calls == []
