"""Graph objects turned into the rows of the tables in `tables.py`. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .graph_client import scrub_secret_params
from .tables import Table

HASH_HEX_DIGITS = 32  # 128 bits: no collisions among the people of any inbox


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

    def apply(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """The row as `table` stores it under this mode (its columns marked `pii` in tables.py)."""
        if self.mode == "keep":
            return row
        personal = table.personal_columns
        if self.mode == "drop":
            return {key: value for key, value in row.items() if key not in personal}
        return {
            key: self.hashed(value) if personal.get(key) == "person" else value
            for key, value in row.items()
        }

    def hashed(self, value: Any) -> Any:
        # An absent or empty value says nothing about anyone: it stays as it is.
        if value is None or value == "":
            return value
        digest = hmac.new(self.salt.encode(), str(value).encode(), hashlib.sha256).hexdigest()
        return digest[:HASH_HEX_DIGITS]


@dataclass(frozen=True)
class Thread:
    """A conversation as listed, with where it was found."""

    page_id: str
    platform: str
    folder: str
    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw["id"])


@dataclass(frozen=True)
class MessageBatch:
    """New messages of one thread, newest first, with what their rows need to know."""

    conversation_id: str
    page_id: str
    platform: str
    page_own_ids: frozenset[str]
    messages: tuple[dict[str, Any], ...]


def parse_time(value: Any) -> datetime | None:
    """Graph times are ISO 8601 with a `+0000` offset; some answers use Unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value), tz=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def listed(value: Any) -> list[Any]:
    """The items of a Graph list, whether wrapped in `{"data": [...]}` or bare."""
    if isinstance(value, dict):
        value = value.get("data", [])
    return value if isinstance(value, list) else []


def conversation_row(thread: Thread) -> dict[str, Any]:
    raw = thread.raw
    return {
        "id": thread.id,
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
        "participant_count": len(participant_rows(thread)),
    }


def participant_rows(thread: Thread) -> list[dict[str, Any]]:
    """Participants, senders and former participants merged: one row per person."""
    raw = thread.raw
    senders = {str(p.get("id")) for p in listed(raw.get("senders"))}
    people: dict[str, dict[str, Any]] = {}
    for role in ("participants", "senders", "former_participants"):
        for person in listed(raw.get(role)):
            person_id = str(person.get("id"))
            if person_id in people:
                continue
            people[person_id] = {
                "conversation_id": thread.id,
                "participant_id": person_id,
                **_person("", person),
                "is_sender": person_id in senders,
                "is_former": role == "former_participants",
                "page_id": thread.page_id,
                "platform": thread.platform,
            }
    return list(people.values())


def has_details(message: dict[str, Any]) -> bool:
    """Instagram lists old messages with `id` and `created_time` only: no sender, no details."""
    return "from" in message


def message_row(batch: MessageBatch, message: dict[str, Any]) -> dict[str, Any]:
    sender = message.get("from") or {}
    reply_to = message.get("reply_to") or {}
    story_type, story = _story(message.get("story"))
    details = has_details(message)
    return {
        "id": str(message["id"]),
        "conversation_id": batch.conversation_id,
        "page_id": batch.page_id,
        "platform": batch.platform,
        "created_time": parse_time(message.get("created_time")),
        "from_id": sender.get("id"),
        **_person("from_", sender),
        "is_from_page": sender.get("id") in batch.page_own_ids if details else None,
        "message": message.get("message"),
        "sticker": _url(message.get("sticker")),
        "is_unsupported": bool(message.get("is_unsupported")) if details else None,
        "reply_to_mid": reply_to.get("mid"),
        "reply_to_is_self_reply": reply_to.get("is_self_reply"),
        "story_type": story_type,
        "story_id": story.get("id"),
        "story_link": _url(story.get("link")),
        "attachment_count": len(listed(message.get("attachments"))) if details else None,
        "reaction_count": sum(1 for _ in _reactions(message)) if details else None,
        "details_available": details,
    }


def attachment_rows(batch: MessageBatch, message: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for position, item in enumerate(listed(message.get("attachments"))):
        image = item.get("image_data") or {}
        video = item.get("video_data") or {}
        rows.append(
            {
                "message_id": str(message["id"]),
                "position": position,
                "attachment_id": item.get("id"),
                "conversation_id": batch.conversation_id,
                "mime_type": item.get("mime_type"),
                "name": item.get("name"),
                "size": item.get("size"),
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
                "generic_template": item.get("generic_template"),
            }
        )
    return rows


def reaction_rows(batch: MessageBatch, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(message["id"]),
            "position": position,
            "reaction": reaction,
            "user_id": user.get("id"),
            "user_name": user.get("name"),
            "user_username": user.get("username"),
            "conversation_id": batch.conversation_id,
        }
        for position, (reaction, user) in enumerate(_reactions(message))
    ]


def recipient_rows(batch: MessageBatch, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(message["id"]),
            "recipient_id": str(person.get("id")),
            **_person("", person),
            "conversation_id": batch.conversation_id,
        }
        for person in listed(message.get("to"))
    ]


def tag_rows(batch: MessageBatch, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(message["id"]),
            "tag": tag["name"],
            "conversation_id": batch.conversation_id,
        }
        for tag in listed(message.get("tags"))
        if isinstance(tag, dict) and tag.get("name")
    ]


def share_rows(batch: MessageBatch, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(message["id"]),
            "position": position,
            "share_id": share.get("id"),
            "link": _url(share.get("link")),
            "name": share.get("name"),
            "description": share.get("description"),
            "template": share.get("template"),
            "conversation_id": batch.conversation_id,
        }
        for position, share in enumerate(listed(message.get("shares")))
    ]


def _reactions(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(emoji, user) pairs from either documented shape: `{"data": [...]}` or one bare reaction."""
    value = message.get("reactions")
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


def _person(prefix: str, person: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{prefix}name": person.get("name"),
        f"{prefix}email": person.get("email"),
        f"{prefix}username": person.get("username"),
    }


def _url(value: Any) -> str | None:
    return scrub_secret_params(value) if isinstance(value, str) else value
