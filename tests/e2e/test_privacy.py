"""The `pii` setting end to end: the real CLI, real HTTP to the emulator, a real DuckDB file.

No name, email or username (and with `pii = drop` no message text) of the emulator's inbox may
reach any column of any table, while the rows and everything else stay as they were.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from conftest import Workspace
from meta_inbox.emulator import Emulator
from meta_inbox.emulator.inbox import Conversation, Person
from meta_inbox.tables import TABLES
from model import expected_counts, selected

SALT = "test-salt-4f1c9a"
OTHER_SALT = "test-salt-7b22e0"

# Per table: the column with the person's id, and the columns naming that person, by kind.
PERSON_COLUMNS: dict[str, tuple[str, dict[str, str]]] = {
    "conversation_participants": (
        "participant_id",
        {"name": "name", "email": "email", "username": "username"},
    ),
    "messages": (
        "from_id",
        {"name": "from_name", "email": "from_email", "username": "from_username"},
    ),
    "message_recipients": (
        "recipient_id",
        {"name": "name", "email": "email", "username": "username"},
    ),
    "message_reactions": ("user_id", {"name": "user_name", "username": "user_username"}),
}
TEXT_COLUMNS = {"conversations": {"snippet"}, "messages": {"message"}}

# Needles at least this long are also searched inside other values: a whole email, full name or
# sentence does not turn up inside unrelated text by chance. Shorter ones ("李雷", "priya.s",
# "Ok 🙂") could, e.g. inside a message or a URL, so they only count as found when they are a
# column's whole value. That still catches any column that copies a person's name or a text.
SUBSTRING_MIN = 10


def test_hash_replaces_every_person_and_keeps_every_row(
    workspace: Workspace, emulator: Emulator
) -> None:
    result = workspace.run(pii="hash", pii_salt=SALT)

    assert result.code == 0, result.output
    conversations = selected(emulator.inbox)
    assert workspace.counts() == expected_counts(conversations)
    assert _found(workspace, _person_values(conversations)) == []
    assert SALT not in "".join(workspace.outputs)
    # Every person has the documented hash of their own values, the same in every table: a
    # participant's hashed name is their hashed `from_name` in messages, and so on.
    assert _hashed_people(workspace) == _expected_hashes(conversations, SALT)


def test_hashes_are_the_same_in_every_run_with_the_same_salt(
    workspace: Workspace, emulator: Emulator, tmp_path: Path
) -> None:
    again = _other_workspace(tmp_path / "again", emulator)
    salted_otherwise = _other_workspace(tmp_path / "other-salt", emulator)

    for target, salt in ((workspace, SALT), (again, SALT), (salted_otherwise, OTHER_SALT)):
        result = target.export(pii="hash", pii_salt=salt)
        assert result.exit_code == 0, result.problems

    first = _hashed_people(workspace)
    assert first
    assert _hashed_people(again) == first
    other = _hashed_people(salted_otherwise)
    assert {key for key, _ in other} == {key for key, _ in first}
    assert not {value for _, value in other} & {value for _, value in first}


def test_drop_leaves_out_people_and_text(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.export(pii="drop")

    assert result.exit_code == 0, result.problems
    conversations = selected(emulator.inbox)
    assert workspace.counts() == expected_counts(conversations)
    needles = _person_values(conversations) | _texts(conversations)
    assert _found(workspace, needles) == []
    columns = _columns(workspace)
    for table in TABLES:
        left_out = _personal(table.name)
        assert columns[table.name] == {*table.column_names, "_dlt_load_id"} - left_out
    assert workspace.relations("VIEW") == {
        "conversation_metrics",
        "sla_daily",
        "daily_volume",
        "response_times",
        "expired_attachment_urls",
    }


def test_full_refresh_applies_drop_to_an_existing_dataset(
    workspace: Workspace, emulator: Emulator
) -> None:
    assert workspace.export().exit_code == 0

    result = workspace.run("--full-refresh", pii="drop")

    assert result.code == 0, result.output
    conversations = selected(emulator.inbox)
    assert workspace.counts() == expected_counts(conversations)
    assert _found(workspace, _person_values(conversations) | _texts(conversations)) == []


@pytest.mark.parametrize("salt", [None, "   "])
def test_hash_without_salt_is_refused_before_any_call(
    workspace: Workspace, emulator: Emulator, salt: str | None
) -> None:
    config = {"pii": "hash"} | ({"pii_salt": salt} if salt is not None else {})

    result = workspace.run(**config)

    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pii_salt" in lines[0]
    assert emulator.calls == []
    assert not workspace.database().exists()


def test_unknown_mode_is_refused(workspace: Workspace, emulator: Emulator) -> None:
    result = workspace.run(pii="anonymize", pii_salt=SALT)

    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(mode in lines[0] for mode in ("'anonymize'", "keep", "hash", "drop"))
    assert emulator.calls == []


def _other_workspace(root: Path, emulator: Emulator) -> Workspace:
    root.mkdir()
    return Workspace(root, emulator)


def _people(conversations: Iterable[Conversation]) -> dict[str, Person]:
    """Everyone in these threads by id: senders, recipients and reactors are all participants."""
    return {
        person.id: person
        for conversation in conversations
        for person in [*conversation.participants, *conversation.former_participants]
    }


def _values(person: Person) -> dict[str, str]:
    """What Graph says about a person, by kind, as the emulator serves it."""
    if person.username is not None:
        return {"username": person.username}
    return {"name": person.name or "", "email": f"{person.id}@facebook.com"}


def _person_values(conversations: list[Conversation]) -> set[str]:
    """What the inbox says of its people. The Pages' own names and usernames are the
    businesses' (the `pages` table names them), not personal data: left out of the needles."""
    pages = {c.page_side.id for c in conversations}
    people = [person for id_, person in _people(conversations).items() if id_ not in pages]
    values = {value for person in people for value in _values(person).values() if value}
    assert len(values) > 20  # the search below is only as good as its needles
    return values


def _texts(conversations: list[Conversation]) -> set[str]:
    texts = {m.text for c in conversations for m in c.messages if m.text}
    # Graph shortens snippets, so a long text's snippet is not the text itself.
    texts |= {c.snippet for c in conversations if c.snippet}
    # A one-emoji message ("👍") equals a reaction, which is not text anyone wrote: left out.
    reactions = {
        group["reaction"]
        for c in conversations
        for m in c.messages
        if m.reactions
        for group in m.reactions.get("data", [m.reactions])
    }
    return texts - reactions


def _found(workspace: Workspace, needles: set[str]) -> list[str]:
    """Where any needle is in the dataset: every text and JSON column of every table and view,
    and every whole row as text (which would also show a value that landed in another type)."""
    long_needles = [n for n in needles if len(n) >= SUBSTRING_MIN]
    found = []
    for table, column in workspace.query(
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'inbox' and data_type in ('VARCHAR', 'JSON')"
    ):
        values = {
            v for (v,) in workspace.query(f'select distinct "{column}"::varchar from {table}')
        }
        hits = (values & needles) | {n for n in long_needles for v in values if v and n in v}
        found += [f"{table}.{column}: {hit}" for hit in sorted(hits)]
    for (table,) in workspace.query(
        "select table_name from information_schema.tables where table_schema = 'inbox'"
    ):
        rows = [row for (row,) in workspace.query(f"select t::varchar from {table} as t")]
        found += sorted({f"{table} row: {n}" for n in long_needles for row in rows if n in row})
    return found


def _hashed_people(workspace: Workspace) -> set[tuple[tuple[str, str], str]]:
    """((person id, kind), stored value) for every person column of every table."""
    found = set()
    for table, (id_column, by_kind) in PERSON_COLUMNS.items():
        for kind, column in by_kind.items():
            rows = workspace.query(
                f"select distinct {id_column}, {column} from {table} where {column} is not null"
            )
            found |= {((person_id, kind), value) for person_id, value in rows}
    return found


def _expected_hashes(
    conversations: list[Conversation], salt: str
) -> set[tuple[tuple[str, str], str]]:
    """What the README documents: hex HMAC-SHA256 keyed by the salt, its first 32 digits."""

    def hashed(value: str) -> str:
        digest = hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]
        assert re.fullmatch(r"[0-9a-f]{32}", digest)
        return digest

    return {
        ((person_id, kind), hashed(value))
        for person_id, person in _people(conversations).items()
        for kind, value in _values(person).items()
        if value
    }


def _columns(workspace: Workspace) -> dict[str, set[str]]:
    columns: dict[str, set[str]] = {}
    for table, column in workspace.query(
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'inbox'"
    ):
        columns.setdefault(table, set()).add(column)
    return columns


def _personal(table: str) -> set[str]:
    """The columns `pii = drop` leaves out of a table, as the README lists them."""
    person_columns = set(PERSON_COLUMNS[table][1].values()) if table in PERSON_COLUMNS else set()
    return person_columns | TEXT_COLUMNS.get(table, set())
