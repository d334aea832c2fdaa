"""Graph `fields=` expressions: parsing, validation against node types, and rendering.

Grammar: `field(,field)*` where a field is `name`, optionally followed by modifiers
`.limit(n)`, `.after(cursor)`, `.before(cursor)` and a sub-selection `{fields}`, in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NODE_FIELDS: dict[str, frozenset[str]] = {
    "User": frozenset({"id", "name"}),
    "Page": frozenset({"id", "name", "instagram_business_account", "access_token", "tasks"}),
    "InstagramUser": frozenset({"id", "user_id", "username", "name"}),
    "Conversation": frozenset(
        {
            "id", "updated_time", "message_count", "unread_count", "snippet", "link",
            "can_reply", "is_subscribed", "name", "subject", "scoped_thread_key",
            "participants", "senders", "former_participants", "messages", "is_owner",
        }
    ),
    "Message": frozenset(
        {
            "id", "created_time", "from", "to", "message", "attachments", "reactions",
            "shares", "sticker", "story", "tags", "reply_to", "is_unsupported",
        }
    ),
    "MessageAttachment": frozenset(
        {"id", "mime_type", "name", "size", "image_data", "video_data", "file_url",
         "generic_template"}
    ),
}  # fmt: skip
# Edges whose items are nodes themselves, so their sub-fields are checked against that node type.
EDGE_NODES = {
    ("Conversation", "messages"): "Message",
    ("Message", "attachments"): "MessageAttachment",
}
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class FieldsSyntaxError(ValueError):
    """The expression cannot be read (Graph error 2500)."""


class FieldsValueError(ValueError):
    """The expression reads but asks for something invalid (Graph error 100)."""


@dataclass(frozen=True)
class Field:
    name: str
    children: tuple[Field, ...] | None = None
    limit: int | None = None
    after: str | None = None
    before: str | None = None


def parse_fields(text: str) -> tuple[Field, ...]:
    parser = _Parser("".join(text.split()))
    fields = parser.field_list()
    if not parser.at_end():
        raise parser.error("Expected end of string")
    return fields


def format_fields(fields: Sequence[Field]) -> str:
    """The inverse of `parse_fields`, used to build the `fields=` of nested `next` URLs."""
    return ",".join(_format_field(f) for f in fields)


def _format_field(f: Field) -> str:
    text = f.name
    for modifier in ("limit", "after", "before"):
        value = getattr(f, modifier)
        if value is not None:
            text += f".{modifier}({value})"
    if f.children is not None:
        text += "{" + format_fields(f.children) + "}"
    return text


def validate(node_type: str, fields: Sequence[Field]) -> None:
    for f in fields:
        if f.name not in NODE_FIELDS[node_type]:
            raise FieldsValueError(
                f"(#100) Tried accessing nonexisting field ({f.name}) on node type ({node_type})"
            )
        child_type = EDGE_NODES.get((node_type, f.name))
        if child_type and f.children:
            validate(child_type, f.children)


Edge = Callable[[Field], Any]


def render(
    values: Mapping[str, Any], fields: Sequence[Field], edges: Mapping[str, Edge] | None = None
) -> dict[str, Any]:
    """A node restricted to `fields`; Graph always adds the node's `id`, asked for or not."""
    edges = edges or {}
    out: dict[str, Any] = {}
    for f in fields:
        if f.name in edges:
            value = edges[f.name](f)
        else:
            value = select(values[f.name], f.children) if f.name in values else None
        if value is not None:
            out[f.name] = value
    out.setdefault("id", values["id"])
    return out


def select(value: Any, children: Sequence[Field] | None) -> Any:
    """Sub-field selection on plain objects (`from{id}`) and `{"data": [...]}` lists."""
    if children is None:
        return value
    if isinstance(value, list):
        return [select(item, children) for item in value]
    if isinstance(value, dict):
        if isinstance(value.get("data"), list):
            return {**value, "data": select(value["data"], children)}
        return {c.name: select(value[c.name], c.children) for c in children if c.name in value}
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def at_end(self) -> bool:
        return self.position >= len(self.text)

    def peek(self) -> str:
        return self.text[self.position : self.position + 1]

    def error(self, problem: str) -> FieldsSyntaxError:
        return FieldsSyntaxError(
            f'Syntax error "{problem}" at character {self.position}: {self.text}'
        )

    def expect(self, character: str) -> None:
        if self.peek() != character:
            raise self.error(f"Expected {character!r}")
        self.position += 1

    def field_list(self) -> tuple[Field, ...]:
        fields = [self.field()]
        while self.peek() == ",":
            self.position += 1
            fields.append(self.field())
        return tuple(fields)

    def field(self) -> Field:
        name = self.name()
        modifiers: dict[str, str] = {}
        children: tuple[Field, ...] | None = None
        while self.peek() in (".", "{"):
            if self.peek() == "{":
                if children is not None:
                    raise self.error("Unexpected '{'")
                self.position += 1
                children = self.field_list()
                self.expect("}")
            else:
                self.position += 1
                modifier = self.name()
                self.expect("(")
                modifiers[modifier] = self.argument()
                self.expect(")")
        return _build(name, modifiers, children)

    def name(self) -> str:
        start = self.position
        while self.peek() and self.peek() in NAME_CHARACTERS:
            self.position += 1
        if self.position == start:
            raise self.error("Expected a field name")
        return self.text[start : self.position]

    def argument(self) -> str:
        end = self.text.find(")", self.position)
        if end < 0:
            raise self.error("Expected ')'")
        value, self.position = self.text[self.position : end], end
        return value


def _build(name: str, modifiers: dict[str, str], children: tuple[Field, ...] | None) -> Field:
    unknown = set(modifiers) - {"limit", "after", "before"}
    if unknown:
        raise FieldsValueError(f"(#100) Unsupported modifier: {sorted(unknown)[0]}")
    limit = modifiers.get("limit")
    if limit is not None and not (limit.isdigit() and int(limit) > 0):
        raise FieldsValueError(f"(#100) The limit modifier must be a positive integer: {limit}")
    return Field(
        name,
        children,
        int(limit) if limit is not None else None,
        modifiers.get("after"),
        modifiers.get("before"),
    )
