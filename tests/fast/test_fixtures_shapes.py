"""The emulator's answers have the shapes of Graph's, as pinned by hand-written answers in
`fixtures/graph/` (see its README): for each kind of object, the same keys with values of the
same JSON types. Keys that some documented objects of a kind lack are optional; the others must be
in every object the emulator serves."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from support import FIXTURES, load

from meta_inbox.emulator import Emulator

FOLDERS = ("inbox", "other", "page_done", "spam")
CONVERSATION_FIELDS = (
    "id,updated_time,message_count,unread_count,snippet,link,can_reply,is_subscribed,name,"
    "subject,scoped_thread_key,participants,senders,former_participants,is_owner"
)
MESSAGE_FIELDS = (
    "id,created_time,from,to,message,attachments.limit(25){id,mime_type,name,size,image_data,"
    "video_data,file_url,generic_template},reactions,shares{link,id,name,description,template},"
    "sticker,story,tags,reply_to,is_unsupported"
)
ACCOUNT_FIELDS = "id,name,access_token,tasks,instagram_business_account{id,username}"

Objects = dict[str, list[dict[str, Any]]]  # kind of object → every object of that kind seen


class Sorter:
    """Sorts the objects of Graph answers into kinds, the way Graph's documentation tells them
    apart (people and shares by platform, attachments by what they carry, reactions by shape)."""

    def __init__(self) -> None:
        self.objects: Objects = defaultdict(list)
        self.platform = "messenger"

    def record(self, kind: str, value: dict[str, Any]) -> None:
        self.objects[kind].append(value)

    def listing(self, kind: str, body: dict[str, Any], item: Callable[[Any], None]) -> None:
        if not body["data"]:
            return  # the empty page past a list's end has no cursors; Graph's is not documented
        self.record(f"{kind} list", body)
        if "paging" in body:
            self.record("paging", body["paging"])
            self.record("cursors", body["paging"]["cursors"])
        for value in body["data"]:
            item(value)

    def person(self, value: dict[str, Any]) -> None:
        self.record(f"person ({self.platform})", value)

    def conversation(self, value: dict[str, Any]) -> None:
        self.record("conversation", value)
        for people in ("participants", "senders", "former_participants"):
            if people in value:
                self.listing(people, value[people], self.person)
        self.listing("messages", value["messages"], self.message)

    def message(self, value: dict[str, Any]) -> None:
        if "from" not in value:
            self.record("message older than the newest 20", value)
            return
        self.record("message", value)
        self.person(value["from"])
        self.listing("to", value["to"], self.person)
        if "attachments" in value:
            self.listing("attachments", value["attachments"], self.attachment)
        if "shares" in value:
            self.listing("shares", value["shares"], self.share)
        if "tags" in value:
            self.listing("tags", value["tags"], lambda tag: self.record("tag", tag))
        if "reactions" in value:
            self.reactions(value["reactions"])
        if "story" in value:
            self.record("story", value["story"])
            for story in value["story"].values():
                self.record("story item", story)
        if "reply_to" in value:
            self.record("reply_to", value["reply_to"])

    def attachment(self, value: dict[str, Any]) -> None:
        kind = attachment_kind(value)
        self.record(f"attachment: {kind}", value)
        for detail in ("image_data", "video_data", "generic_template"):
            if detail in value:
                self.record(f"{detail} ({kind})", value[detail])
        if "generic_template" in value:
            self.record("template cta", value["generic_template"]["cta"])

    def reactions(self, value: dict[str, Any]) -> None:
        if "data" in value:
            self.record("reactions, data shape", value)
            for group in value["data"]:
                self.reaction("reaction in a data shape", group)
        else:
            self.reaction("reactions, bare shape", value)

    def reaction(self, kind: str, value: dict[str, Any]) -> None:
        self.record(kind, value)
        for user in value["users"]:
            self.record(f"reactor ({self.platform})", user)

    def share(self, value: dict[str, Any]) -> None:
        self.record(f"share ({self.platform})", value)
        if "template" in value:
            template = value["template"]
            self.record("share template", template)
            self.record("template payload", template["payload"])
            self.record("template product", template["payload"]["product"])
            elements = template["payload"]["product"]["elements"]
            self.listing("product elements", elements, lambda p: self.record("product", p))

    def account(self, value: dict[str, Any]) -> None:
        self.record("Page account", value)
        if "instagram_business_account" in value:
            self.record("instagram_business_account", value["instagram_business_account"])

    def error(self, body: dict[str, Any]) -> None:
        self.record("error envelope", body)
        self.record("error", body["error"])


def attachment_kind(value: dict[str, Any]) -> str:
    if "image_data" in value:
        image = value["image_data"]
        if "animated_gif_url" in image:
            return "gif"
        return "sticker image" if image["render_as_sticker"] else "image"
    if "video_data" in value:
        return "video"
    if "file_url" in value:
        return "audio" if value["mime_type"].startswith("audio/") else "file"
    return "template"


def json_type(value: Any) -> str:
    match value:
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
    return "null"


def shape(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every key seen in objects of one kind, with the JSON types of its values."""
    found: dict[str, set[str]] = defaultdict(set)
    for value in objects:
        for key, item in value.items():
            found[key].add(json_type(item))
    return dict(found)


def required(objects: list[dict[str, Any]]) -> set[str]:
    return set.intersection(*(set(value) for value in objects))


def documented_objects() -> Objects:
    sorter = Sorter()
    sorter.listing("conversations", load("messenger_listing.json"), sorter.conversation)
    sorter.platform = "instagram"
    sorter.listing("conversations", load("instagram_listing.json"), sorter.conversation)
    sorter.listing("accounts", load("me_accounts.json"), sorter.account)
    sorter.record("Page (/me)", load("me_page.json"))
    for error in sorted(FIXTURES.glob("error_*.json")):
        sorter.error(load(error.name))
    return sorter.objects


DOCUMENTED = documented_objects()


def get(emulator: Emulator, path: str, token: str, **params: Any) -> dict[str, Any]:
    params["access_token"] = token
    return requests.get(f"{emulator.base_url}/v25.0{path}", params=params, timeout=30).json()


def later_pages(first: dict[str, Any]) -> Iterator[dict[str, Any]]:
    page = first
    while "next" in page.get("paging", {}):
        page = requests.get(page["paging"]["next"], timeout=30).json()
        yield page


@pytest.fixture(scope="module")
def served() -> Objects:
    """Every object of the default inbox as the emulator serves it, and its errors."""
    sorter = Sorter()
    with Emulator(seed=7) as emulator:
        inbox = emulator.inbox
        fields = f"{CONVERSATION_FIELDS},messages.limit(100){{{MESSAGE_FIELDS}}}"
        for page in inbox.pages:
            for platform in page.platforms:
                sorter.platform = platform
                for folder in FOLDERS:
                    params = {"platform": platform, "folder": folder, "limit": 100}
                    path = f"/{page.id}/conversations"
                    body = get(emulator, path, page.access_token, fields=fields, **params)
                    sorter.listing("conversations", body, sorter.conversation)
                    for conversation in body["data"]:
                        for messages in later_pages(conversation["messages"]):
                            sorter.listing("messages", messages, sorter.message)
        sorter.listing(
            "accounts",
            get(emulator, "/me/accounts", emulator.user_token, fields=ACCOUNT_FIELDS),
            sorter.account,
        )
        sorter.record("Page (/me)", get(emulator, "/me", inbox.pages[0].access_token))
        for error in errors(emulator):
            sorter.error(error)
    return sorter.objects


def errors(emulator: Emulator) -> Iterator[dict[str, Any]]:
    """The emulator's answers for the errors the fixtures document."""
    inbox = emulator.inbox
    first, second, third = inbox.pages
    yield get(emulator, "/me/accounts", first.access_token)
    instagram = max(
        (c for c in inbox.conversations if c.platform == "instagram"),
        key=lambda c: c.message_count,
    )
    old = instagram.newest_first()[-1]
    yield get(emulator, f"/{old.id}", emulator.page_token(instagram.page_id), fields="message")
    emulator.revoke_permission(third.id, "pages_messaging")
    yield get(emulator, f"/{third.id}/conversations", third.access_token)
    emulator.faults.max_response_bytes = 10
    yield get(emulator, f"/{first.id}/conversations", first.access_token)
    emulator.faults.max_response_bytes = None
    emulator.limits.calls_per_window = 0
    yield get(emulator, f"/{first.id}/conversations", first.access_token)
    emulator.expire_token(second.access_token)
    yield get(emulator, "/me", second.access_token)


def test_the_emulator_serves_every_documented_kind_and_no_other(served: Objects) -> None:
    assert sorted(served) == sorted(DOCUMENTED)


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_keys_and_json_types_match_the_documented_ones(served: Objects, kind: str) -> None:
    assert shape(served[kind]) == shape(DOCUMENTED[kind])


@pytest.mark.parametrize("kind", sorted(DOCUMENTED))
def test_keys_every_documented_object_has_are_always_served(served: Objects, kind: str) -> None:
    always = required(DOCUMENTED[kind])
    lacking = [sorted(always - set(value)) for value in served[kind] if not always <= set(value)]
    assert lacking == []


def test_links_embed_the_token_as_graph_does(served: Objects) -> None:
    for objects in (served, DOCUMENTED):
        links = [p[name] for p in objects["paging"] for name in ("next", "previous") if name in p]
        assert links
        assert all("access_token=" in link for link in links)
