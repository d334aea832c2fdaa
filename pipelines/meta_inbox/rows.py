"""Graph objects turned into the rows of the tables in `tables.py`. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .graph_client import scrub_secret_params
from .tables import (
    MESSAGE_ATTACHMENTS,
    MESSAGE_REACTIONS,
    MESSAGE_RECIPIENTS,
    MESSAGE_SHARES,
    MESSAGE_TABLES,
    MESSAGE_TAGS,
    MESSAGES,
    ROWS_HASH,
    Table,
)

HASH_HEX_DIGITS = 32  # 128 bits: no collisions among the people of any inbox
REPLACEMENT = "\ufffd"
# Lone UTF-16 surrogates (Graph cuts snippets inside emoji) cannot be encoded as UTF-8, and no
# PostgreSQL text holds a NUL: both become U+FFFD.
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
# `oe=` in a URL's query, as parse_qs would find it: a regular expression costs a tenth.
_EXPIRY = re.compile(r"[?&]oe=([0-9A-Fa-f]+)(?:[&#]|$)")


@dataclass(frozen=True)
class Privacy:
    """What rows keep of the people in them: the `pii` setting and its salt.

    `keep` keeps everything. `hash` replaces names, emails and usernames with the hex HMAC-SHA256
    of the value keyed by the salt, cut to 32 digits: one value gives one hash in every table and
    every run with that salt, so hashed columns still join and group, while without the salt a
    guessed name cannot be hashed to find it. `drop` leaves out those columns and message text.
    Ids are kept as they are: they are Page- or Instagram-scoped, and they are the join keys.
    """

    mode: str = "keep"
    salt: str = field(default="", repr=False)  # a secret: kept out of logs and tracebacks

    def applied(self, table: Table, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """`columns` (name to values) of `table` as the table stores them under this mode (its
        columns marked `pii` in tables.py)."""
        if self.mode == "keep":
            return columns
        personal = table.personal_columns
        if self.mode == "drop":
            return {name: values for name, values in columns.items() if name not in personal}
        return {
            name: [self.hashed(v) for v in _values(values)]
            if personal.get(name) == "person"
            else values
            for name, values in columns.items()
        }

    def hashed(self, value: Any) -> Any:
        # An absent or empty value says nothing about anyone: it stays as it is.
        if value is None or value == "":
            return value
        digest = hmac.new(self.salt.encode(), str(value).encode(), hashlib.sha256).hexdigest()
        return digest[:HASH_HEX_DIGITS]


def _values(values: Any) -> list[Any]:
    return values.to_pylist() if isinstance(values, pa.Array | pa.ChunkedArray) else values


@dataclass(frozen=True)
class ThreadContext:
    """What every row of a thread needs to know besides the Graph object it comes from."""

    conversation_id: str
    page_id: str
    platform: str
    folder: str
    page_own_ids: frozenset[str]
    instagram_id_known: bool  # whether Graph said which Instagram account is the Page's


def parse_time(value: Any) -> datetime | None:
    """Graph times are ISO 8601 with a `+0000` offset; some answers use Unix seconds. A time
    without an offset is UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value), tz=UTC)
    else:
        parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def url_expiry(url: Any) -> datetime | None:
    """When a signed CDN URL stops working: Meta's `oe` parameter is hex Unix seconds."""
    found = _EXPIRY.search(url) if isinstance(url, str) else None
    if found is None:
        return None
    try:
        return datetime.fromtimestamp(int(found.group(1), 16), tz=UTC)
    except (OverflowError, OSError):
        return None


def listed(value: Any) -> list[Any]:
    """The items of a Graph list, whether wrapped in `{"data": [...]}` or bare."""
    if isinstance(value, dict):
        value = value.get("data", [])
    return value if isinstance(value, list) else []


def has_details(message: dict[str, Any]) -> bool:
    """Instagram lists old messages with `id` and `created_time` only: no sender, no details."""
    return "from" in message


def repaired(columns: dict[str, list[Any]]) -> int:
    """Replace, in place, what no destination can store in every text value of `columns`
    (column name to values); how many values changed."""
    count = 0
    for values in columns.values():
        for index, value in enumerate(values):
            # `isascii` first: it is far cheaper than a search, and almost every value passes.
            if isinstance(value, str) and (
                "\x00" in value or (not value.isascii() and _UNSTORABLE.search(value))
            ):
                values[index] = _UNSTORABLE.sub(REPLACEMENT, value)
                count += 1
    return count


def page_row(
    page_id: str, name: str, instagram: tuple[str | None, str | None], platforms: list[str],
    exported_at: datetime, login: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": page_id,
        "name": name,
        "instagram_id": instagram[0],
        "instagram_username": instagram[1],
        "platforms": _json(platforms),
        "login": login,
        "exported_at": exported_at,
    }


def conversation_row(thread: ThreadContext, raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": thread.conversation_id,
        "page_id": thread.page_id,
        "platform": thread.platform,
        "folder": thread.folder,
        "updated_time": parse_time(raw.get("updated_time")),
        "message_count": raw.get("message_count"),
        "unread_count": raw.get("unread_count"),
        "snippet": raw.get("snippet"),
        "link": _url(raw.get("link")),
        "can_reply": raw.get("can_reply"),
        "is_subscribed": raw.get("is_subscribed"),
        "name": raw.get("name"),
        "subject": raw.get("subject"),
        "scoped_thread_key": raw.get("scoped_thread_key"),
        "participant_count": len(_people(raw)),
        "is_owner": raw.get("is_owner"),
        "deleted_at": None,
    }


def participant_rows(thread: ThreadContext, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Participants, senders and former participants merged: one row per person."""
    senders = {str(p.get("id")) for p in listed(raw.get("senders"))}
    return [
        {
            "conversation_id": thread.conversation_id,
            "participant_id": person_id,
            "name": person.get("name"),
            "email": person.get("email"),
            "username": person.get("username"),
            "is_sender": person_id in senders,
            "is_former": role == "former_participants",
            "is_page": _is_page(thread, person_id),
            "page_id": thread.page_id,
            "platform": thread.platform,
        }
        for person_id, (person, role) in _people(raw).items()
    ]


def history_row(
    thread: ThreadContext, raw: dict[str, Any], observed_at: datetime
) -> dict[str, Any]:
    values = (raw.get("unread_count"), raw.get("can_reply"), raw.get("message_count"))
    state = [thread.folder, *("" if v is None else str(v).lower() for v in values)]
    return {
        "conversation_id": thread.conversation_id,
        "observed_state": "|".join(state),
        "observed_at": observed_at,
        "folder": thread.folder,
        "unread_count": values[0],
        "can_reply": values[1],
        "message_count": values[2],
        "page_id": thread.page_id,
        "platform": thread.platform,
    }


class MessageRows:
    """The rows of messages and of their children, table by table, each row a tuple of its
    table's columns in their order in `tables.py`.

    A backfill makes about four rows per message. Made as a dict per row, each read back into a
    tuple on its own, the rows of the emulator's inbox cost 13.8 µs per message; appended as
    tuples in one pass over each message, 7.7 µs (measured, Arrow's conversion aside). The wide,
    rare rows (attachments, shares) are still made as dicts, for their names, and read in
    column order.
    """

    def __init__(self) -> None:
        self.tables: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in MESSAGE_TABLES}
        self._messages = self.tables[MESSAGES.name].append
        self._attachments = self.tables[MESSAGE_ATTACHMENTS.name].append
        self._reactions = self.tables[MESSAGE_REACTIONS.name].append
        self._recipients = self.tables[MESSAGE_RECIPIENTS.name].append
        self._tags = self.tables[MESSAGE_TAGS.name].append
        self._shares = self.tables[MESSAGE_SHARES.name].append

    def add(
        self,
        thread: ThreadContext,
        message_id: str,
        message: dict[str, Any],
        created: datetime | None,
        rows_hash: int | None,
    ) -> None:
        """The rows of one message: `created` is its parsed `created_time`, `rows_hash` the
        shaper's fingerprint of them (`tables.ROWS_HASH`)."""
        conversation_id, page_id = thread.conversation_id, thread.page_id
        # Most messages have no attachments, reactions or shares: a lookup spares the rest.
        attachments = 0
        if value := message.get("attachments"):
            for position, item in enumerate(listed(value)):
                row = _attachment_row(thread, message_id, position, item)
                self._attachments(_ATTACHMENT_VALUES(row))
                attachments += 1
        reactions = 0
        if value := message.get("reactions"):
            for position, (reaction, user) in enumerate(_reactions(value)):
                self._reactions(
                    (
                        message_id,
                        position,
                        reaction,
                        user.get("id"),
                        user.get("name"),
                        user.get("username"),
                        conversation_id,
                        page_id,
                    )
                )
                reactions += 1
        if value := message.get("to"):
            for person in listed(value):
                if person is None:
                    continue
                self._recipients(
                    (
                        message_id,
                        str(person.get("id")),
                        person.get("name"),
                        person.get("email"),
                        person.get("username"),
                        conversation_id,
                        page_id,
                    )
                )
        if value := message.get("tags"):
            tags = listed(value)
            for name in dict.fromkeys(
                t.get("name") for t in tags if isinstance(t, dict) and t.get("name")
            ):
                self._tags((message_id, name, conversation_id, page_id))
        if value := message.get("shares"):
            for position, share in enumerate(listed(value)):
                self._shares(_SHARE_VALUES(_share_row(thread, message_id, position, share)))
        row = _message_row(thread, message_id, message, created, attachments, reactions)
        self._messages((*_MESSAGE_VALUES(row), rows_hash))


# The keys of the messages that make most of an inbox (text, with its sender, recipients and
# tags, perhaps a reply, or only an id and a time): `PlainMessages` turns them into columns.
PLAIN_KEYS = frozenset(("id", "created_time", "from", "to", "message", "tags", "reply_to",
                        "is_unsupported"))  # fmt: skip
_PERSON = pa.struct([(name, pa.string()) for name in ("id", "name", "email", "username")])
_PLAIN = pa.struct(
    [
        ("from", _PERSON),
        ("to", pa.struct([("data", pa.list_(_PERSON))])),
        ("message", pa.string()),
        ("tags", pa.struct([("data", pa.list_(pa.struct([("name", pa.string())])))])),
        ("reply_to", pa.struct([("mid", pa.string()), ("is_self_reply", pa.bool_())])),
        ("is_unsupported", pa.bool_()),
    ]
)


class PlainMessages:
    """The rows of plain messages (keys in `PLAIN_KEYS`), made column by column by Arrow.

    What `MessageRows` makes of such a message, per message in Python and then into Arrow,
    costs 12 µs of CPU; Arrow reads the same values out of Graph's objects in 6 µs (measured
    on batches of the emulator's inbox). `tables()` refuses (ArrowException,
    UnicodeEncodeError) what Arrow cannot take as the documented shapes declare it: a bare list
    where Graph wraps one in `data`, a number for a text, a lone surrogate. The caller then makes
    these messages' rows with `MessageRows`, which takes every shape `listed` does and repairs
    text; a test holds the two to the same rows.
    """

    # Arrow's calls cost the same for 10 messages as for 1,000: below this many, `MessageRows`
    # is the cheaper (measured: 100 took 14 µs a message either way; 25, 44 against 24 µs).
    WORTH = 100

    def __init__(self) -> None:
        # Each message as `add` was given it, for `tables` or, where Arrow refuses, `MessageRows`.
        self.added: list[
            tuple[ThreadContext, str, dict[str, Any], datetime | None, int | None]
        ] = []

    def add(
        self,
        thread: ThreadContext,
        message_id: str,
        message: dict[str, Any],
        created: datetime | None,
        rows_hash: int | None,
    ) -> None:
        self.added.append((thread, message_id, message, created, rows_hash))

    def __len__(self) -> int:
        return len(self.added)

    def made_by(self, rows: MessageRows) -> None:
        """These messages' rows made one by one, as every other message's are."""
        for added in self.added:
            rows.add(*added)

    def tables(self) -> dict[str, pa.Table]:
        """Each table's rows, as `MessageRows.tables` holds them."""
        if not self.added:
            return {}
        threads, message_ids, messages, created, hashes = (
            list(c) for c in zip(*self.added, strict=True)
        )
        # Each struct's fields, with its nulls: one call for them all (Arrow's fixed cost per
        # call is what a small batch pays).
        sender, to, text, tags, reply_to, unsupported = pa.array(messages, type=_PLAIN).flatten()
        sender_id, sender_name, sender_email, sender_username = sender.flatten()
        count = len(messages)
        ids = pa.array(message_ids, pa.string())
        conversation = pa.array([t.conversation_id for t in threads], pa.string())
        page = pa.array([t.page_id for t in threads], pa.string())
        details = pa.array(["from" in message for message in messages], pa.bool_())
        text_absent = pa.nulls(count, pa.string())
        time_absent = pa.nulls(count, _TIMESTAMP)
        counted = pc.if_else(details, pa.scalar(0, pa.int64()), pa.scalar(None, pa.int64()))
        reply_to_mid, reply_to_is_self_reply = reply_to.flatten()
        columns = {
            "id": ids,
            "conversation_id": conversation,
            "page_id": page,
            "platform": pa.array([t.platform for t in threads], pa.string()),
            "created_time": pa.array(created, _TIMESTAMP),
            "from_id": sender_id,
            "from_name": sender_name,
            "from_email": sender_email,
            "from_username": sender_username,
            "is_from_page": _from_page(threads, page, sender_id, details),
            "message": text,
            "sticker": text_absent,
            "sticker_expires_at": time_absent,
            "is_unsupported": pc.if_else(
                details, pc.fill_null(unsupported, False), pa.scalar(None, pa.bool_())
            ),
            "reply_to_mid": reply_to_mid,
            "reply_to_is_self_reply": reply_to_is_self_reply,
            "story_type": text_absent,
            "story_id": text_absent,
            "story_link": text_absent,
            "story_link_expires_at": time_absent,
            "attachment_count": counted,
            "reaction_count": counted,
            "details_available": details,
            "deleted_at": time_absent,
            ROWS_HASH: pa.array(hashes, pa.int64()),
        }
        tables = {MESSAGES.name: _table(MESSAGES, columns)}
        keys = {"message_id": ids, "conversation_id": conversation, "page_id": page}

        (recipients,) = to.flatten()
        person, of = recipients.flatten(), pc.list_parent_indices(recipients)
        # A null where Graph lists a recipient names no one (`MessageRows` skips it too).
        named_one = person.is_valid()
        person, of = person.filter(named_one), of.filter(named_one)
        person_id, *named = person.flatten()
        tables[MESSAGE_RECIPIENTS.name] = _table(
            MESSAGE_RECIPIENTS,
            {name: column.take(of) for name, column in keys.items()}
            # As `MessageRows` writes an id Graph left out: str(None).
            | {"recipient_id": pc.fill_null(person_id, "None")}
            | dict(zip(("name", "email", "username"), named, strict=True)),
        )

        (tag_lists,) = tags.flatten()
        (names,) = tag_lists.flatten().flatten()
        tag = pa.table({"of": pc.list_parent_indices(tag_lists), "tag": names})
        tag = _each_once(tag.filter(pc.fill_null(pc.not_equal(tag["tag"], ""), False)))
        tables[MESSAGE_TAGS.name] = _table(
            MESSAGE_TAGS,
            {name: column.take(tag["of"]) for name, column in keys.items()} | {"tag": tag["tag"]},
        )
        return tables


_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _from_page(
    threads: list[ThreadContext], page: pa.Array, sender: pa.Array, details: pa.Array
) -> pa.Array:
    """`_is_page` of each message's sender, None where Graph gave no details."""
    # Only a text id can equal `str(sender)`, as `_is_page` compares them.
    own = {(t.page_id, i) for t in threads for i in t.page_own_ids if isinstance(i, str)}
    owned = pa.array([f"{page_id}\0{own_id}" for page_id, own_id in own], pa.string())
    # str(None) is no one's id, as in `_is_page`.
    who = pc.binary_join_element_wise(page, pc.fill_null(sender, "None"), "\0")
    mine = pc.is_in(who, value_set=owned)
    unknown = pa.array(
        [t.platform == "instagram" and not t.instagram_id_known for t in threads], pa.bool_()
    )
    no = pa.scalar(None, pa.bool_())
    return pc.if_else(details, pc.if_else(mine, True, pc.if_else(unknown, no, False)), no)


def _each_once(tag: pa.Table) -> pa.Table:
    """Each message's tags once, where Graph lists them first. Graph repeating one is rare:
    only a batch where it does pays for finding where."""
    pairs = pc.binary_join_element_wise(pc.cast(tag["of"], pa.string()), tag["tag"], "\0")
    if pc.count_distinct(pairs).as_py() == tag.num_rows:
        return tag
    first: dict[str, int] = {}
    for index, pair in enumerate(pairs.to_pylist()):
        first.setdefault(pair, index)
    return tag.take(sorted(first.values()))


def _table(table: Table, columns: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: columns[name] for name in table.column_names},
        schema=table.arrow_schema(),
    )


def _message_row(
    thread: ThreadContext,
    message_id: str,
    message: dict[str, Any],
    created: datetime | None,
    attachment_count: int,
    reaction_count: int,
) -> dict[str, Any]:
    sender = message.get("from") or {}
    details = has_details(message)
    reply_to = message.get("reply_to") or {}
    story_type, story = _story(message.get("story"))
    sticker, story_link = _url(message.get("sticker")), _url(story.get("link"))
    sender_id = sender.get("id")
    return {
        "id": message_id,
        "conversation_id": thread.conversation_id,
        "page_id": thread.page_id,
        "platform": thread.platform,
        "created_time": created,
        "from_id": sender_id,
        "from_name": sender.get("name"),
        "from_email": sender.get("email"),
        "from_username": sender.get("username"),
        "is_from_page": _is_page(thread, sender_id) if details else None,
        "message": message.get("message"),
        "sticker": sticker,
        "sticker_expires_at": url_expiry(sticker),
        "is_unsupported": bool(message.get("is_unsupported")) if details else None,
        "reply_to_mid": reply_to.get("mid"),
        "reply_to_is_self_reply": reply_to.get("is_self_reply"),
        "story_type": story_type,
        "story_id": story.get("id"),
        "story_link": story_link,
        "story_link_expires_at": url_expiry(story_link),
        "attachment_count": attachment_count if details else None,
        "reaction_count": reaction_count if details else None,
        "details_available": details,
        "deleted_at": None,
    }


def _attachment_row(
    thread: ThreadContext, message_id: str, position: int, item: dict[str, Any]
) -> dict[str, Any]:
    image = item.get("image_data") or {}
    video = item.get("video_data") or {}
    template = item.get("generic_template")
    url = _url(
        image.get("url")
        or video.get("url")
        or item.get("file_url")
        or (template.get("media_url") if isinstance(template, dict) else None)
    )
    return {
        "message_id": message_id,
        "position": position,
        "attachment_id": item.get("id"),
        "conversation_id": thread.conversation_id,
        "page_id": thread.page_id,
        "type": attachment_type(item),
        "mime_type": item.get("mime_type"),
        "name": item.get("name"),
        "size": item.get("size"),
        "url": url,
        "url_expires_at": url_expiry(url),
        "file_url": _url(item.get("file_url")),
        "image_url": _url(image.get("url")),
        "image_preview_url": _url(image.get("preview_url")),
        "image_width": image.get("width"),
        "image_height": image.get("height"),
        "image_max_width": image.get("max_width"),
        "image_max_height": image.get("max_height"),
        "image_type": image.get("image_type"),
        "image_render_as_sticker": image.get("render_as_sticker"),
        "image_animated_gif_url": _url(image.get("animated_gif_url")),
        "image_animated_gif_preview_url": _url(image.get("animated_gif_preview_url")),
        "video_url": _url(video.get("url")),
        "video_preview_url": _url(video.get("preview_url")),
        "video_width": video.get("width"),
        "video_height": video.get("height"),
        "video_length": video.get("length"),
        "video_type": video.get("video_type"),
        "video_rotation": video.get("rotation"),
        "generic_template": _json(template) if template is not None else None,
    }


def attachment_type(item: dict[str, Any]) -> str:
    """What an attachment is, from which of Graph's shapes it has, then its MIME type."""
    image = item.get("image_data")
    mime = str(item.get("mime_type") or "").lower()
    if isinstance(image, dict):
        if image.get("render_as_sticker"):
            return "sticker"
        if image.get("animated_gif_url") or mime == "image/gif":
            return "animated_image"
        return "image"
    if item.get("video_data"):
        return "video"
    if item.get("generic_template"):
        return "template"
    for prefix, kind in (("audio/", "audio"), ("video/", "video"), ("image/", "image")):
        if mime.startswith(prefix):
            return kind
    return "file" if item.get("file_url") or mime else "unknown"


def _share_row(
    thread: ThreadContext, message_id: str, position: int, share: dict[str, Any]
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "position": position,
        "share_id": share.get("id"),
        "link": _url(share.get("link")),
        "name": share.get("name"),
        "description": share.get("description"),
        "template": _json(share["template"]) if share.get("template") is not None else None,
        "conversation_id": thread.conversation_id,
        "page_id": thread.page_id,
    }


# A row dict's values in its table's column order (`rows_hash`, the shaper's, aside).
_MESSAGE_VALUES = itemgetter(*(n for n in MESSAGES.column_names if n != ROWS_HASH))
_ATTACHMENT_VALUES = itemgetter(*MESSAGE_ATTACHMENTS.column_names)
_SHARE_VALUES = itemgetter(*MESSAGE_SHARES.column_names)


def _people(raw: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Each person of the thread once, with the first list naming them."""
    people: dict[str, tuple[dict[str, Any], str]] = {}
    for role in ("participants", "senders", "former_participants"):
        for person in listed(raw.get(role)):
            people.setdefault(str(person.get("id")), (person, role))
    return people


def _is_page(thread: ThreadContext, person_id: Any) -> bool | None:
    if str(person_id) in thread.page_own_ids:
        return True
    if thread.platform == "instagram" and not thread.instagram_id_known:
        return None
    return False


def _reactions(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(emoji, user) pairs of a message's `reactions`, in either documented shape:
    `{"data": [...]}` or one bare reaction."""
    groups = [value] if isinstance(value, dict) and "reaction" in value else listed(value)
    for group in groups:
        for user in group.get("users") or [{}]:
            yield str(group.get("reaction")), user


def _story(value: Any) -> tuple[str | None, dict[str, Any]]:
    """Stories come as `{"reply_to": {link, id}}`, `{"mention": {...}}` or a bare `{link, id}`."""
    if not isinstance(value, dict):
        return None, {}
    for kind in ("reply_to", "mention"):
        if isinstance(value.get(kind), dict):
            return kind, value[kind]
    return None, value


def _url(value: Any) -> str | None:
    return scrub_secret_params(value) if isinstance(value, str) else value


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # JSON writes NUL as an escape, which the NUL repair of text columns does not see and
    # PostgreSQL's jsonb refuses: replaced in the value itself, as it is elsewhere.
    if "\\u0000" in text:
        text = json.dumps(_nul_replaced(value), ensure_ascii=False, separators=(",", ":"))
    return text


def _nul_replaced(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT)
    if isinstance(value, dict):
        return {_nul_replaced(key): _nul_replaced(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nul_replaced(item) for item in value]
    return value
