"""The Graph API emulator itself, exercised over real HTTP."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import pytest
import requests

from meta_inbox.emulator import Emulator, Faults, Limits, generate_inbox
from meta_inbox.emulator.fields import (
    FieldsSyntaxError,
    FieldsValueError,
    format_fields,
    parse_fields,
)
from meta_inbox.emulator.inbox import DAY, Conversation, Inbox, Message, add_activity, iso

FOLDERS = ("inbox", "other", "page_done", "spam")
FULL_MESSAGE = (
    "id,created_time,from,to,message,attachments{id,mime_type,name,size,image_data,video_data,"
    "file_url,generic_template},reactions,shares{link,id,name,description,template},sticker,"
    "story,tags,reply_to,is_unsupported"
)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """A shared emulator for tests that neither mutate it nor count its calls."""
    with Emulator(seed=7) as emulator:
        yield emulator


@pytest.fixture
def launch() -> Iterator[Callable[..., Emulator]]:
    """Starts emulators with the given options and stops them after the test."""
    started: list[Emulator] = []

    def start(**options: Any) -> Emulator:
        started.append(Emulator(seed=7, **options).start())
        return started[-1]

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def fresh(launch: Callable[..., Emulator]) -> Emulator:
    return launch()


def get(emu: Emulator, path: str, token: str | None, **params: Any) -> requests.Response:
    if token is not None:
        params["access_token"] = token
    return requests.get(f"{emu.base_url}/v25.0{path}", params=params, timeout=10)


def error_of(response: requests.Response) -> dict[str, Any]:
    return response.json()["error"]


def follow(first: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a paged list, following `next` links to the end."""
    items, page = list(first["data"]), first
    while "next" in page.get("paging", {}):
        page = requests.get(page["paging"]["next"], timeout=10).json()
        items += page["data"]
    return items


def page_with_instagram(inbox: Inbox) -> str:
    return next(p.id for p in inbox.pages if p.instagram)


def biggest(inbox: Inbox, platform: str) -> Conversation:
    threads = [c for c in inbox.conversations if c.platform == platform]
    return max(threads, key=lambda c: c.message_count)


def token_of(emu: Emulator, conversation: Conversation) -> str:
    return emu.page_token(conversation.page_id)


def listed(emu: Emulator, page_id: str, platform: str, folder: str) -> list[str]:
    """Thread ids of one folder as the edge lists them, three to a page."""
    params = {"platform": platform, "folder": folder, "limit": 3}
    first = get(emu, f"/{page_id}/conversations", emu.page_token(page_id), **params)
    return [c["id"] for c in follow(first.json())]


def node(emu: Emulator, node_id: str, conversation: Conversation, fields: str) -> Any:
    return get(emu, f"/{node_id}", token_of(emu, conversation), fields=fields).json()


# -- the inbox -------------------------------------------------------------------------------


def test_same_seed_gives_identical_inbox_and_json() -> None:
    first, second = generate_inbox(7, 1), generate_inbox(7, 1)
    assert json.dumps(dataclasses.asdict(first)) == json.dumps(dataclasses.asdict(second))
    assert _fingerprint(generate_inbox(8, 1).conversations) != _fingerprint(first.conversations)
    bodies = []
    for _ in range(2):
        with Emulator(seed=7) as emulator:
            page = emulator.inbox.pages[0]
            fields = f"id,updated_time,participants,messages.limit(5){{{FULL_MESSAGE}}}"
            response = get(emulator, f"/{page.id}/conversations", page.access_token, fields=fields)
            bodies.append(response.text.replace(emulator.base_url.replace("/", "\\/"), "BASE"))
    assert bodies[0] == bodies[1]


def test_inbox_sizes_at_scale_one() -> None:
    inbox = generate_inbox(7, 1)
    assert len(inbox.pages) == 3
    assert [bool(p.instagram) for p in inbox.pages].count(True) == 2
    assert inbox.unmanaged_page_id not in {p.id for p in inbox.pages}
    # The Pages' threads, their legacy archive, and the Instagram account without a Page.
    assert 100 <= len(inbox.conversations) <= 200
    assert 4000 <= sum(c.message_count for c in inbox.conversations) <= 7000
    messenger = [c.message_count for c in inbox.conversations if c.platform == "messenger"]
    instagram = [c.message_count for c in inbox.conversations if c.platform == "instagram"]
    assert sum(n > 230 for n in messenger) >= 2
    assert sum(21 <= n <= 80 for n in instagram) >= 3
    assert max(instagram) > 100
    for page in inbox.pages:
        for platform in page.platforms:
            for folder in ("inbox", "other", "page_done", "spam"):
                assert inbox.conversations_of(page.id, platform, folder)
    assert len(generate_inbox(7, 2).conversations) > 1.8 * len(inbox.conversations)


def _fingerprint(conversations: list[Conversation]) -> str:
    """Ids, times, texts and structure of every thread and message (not the CDN URLs)."""
    parts: list[Any] = []
    for c in conversations:
        people = [p.id for p in c.participants]
        parts.append([c.id, c.page_id, c.platform, c.folder, people, c.unread_count, c.can_reply])
        parts[-1].append(c.updated_time)
        for m in c.messages:
            attachments = [a["id"] for a in m.attachments]
            kinds = [len(m.shares), m.story is not None, m.sticker is not None, m.is_unsupported]
            parts.append([m.id, m.seq, m.created_time, m.sender.id, m.text, attachments])
            parts[-1] += [m.reactions, m.tags, m.reply_to, *kinds]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def test_the_default_inbox_has_not_changed() -> None:
    # Other tests count on these threads and messages: computed from the inbox of the version
    # before CDN expiries, voice clips and sticker images existed.
    # The legacy archive and the Instagram account without a Page came later, from streams of
    # their own, after these.
    inbox = generate_inbox(7, 1)
    pages = {page.id for page in inbox.pages}
    first = [c for c in inbox.conversations if c.page_id in pages and c.folder in FOLDERS]
    assert (len(first), sum(c.message_count for c in first)) == (130, 4685)
    assert first == inbox.conversations[:130]
    assert _fingerprint(first) == "815021ec595147dfc6871170f6cc0ffb286009e266e8db7b681e74c198856a57"


def test_more_pages_follow_the_pattern_of_the_first_three(launch: Callable[..., Emulator]) -> None:
    inbox = generate_inbox(7, 1, pages=6)
    default = generate_inbox(7, 1)
    assert [p.id[-2:] for p in inbox.pages] == ["01", "02", "03", "05", "06", "07"]
    assert [bool(p.instagram) for p in inbox.pages] == [True, True, False, True, False, True]
    assert inbox.unmanaged_page == default.unmanaged_page
    assert inbox.pages[:3] == default.pages
    assert len({p.access_token for p in inbox.pages}) == 6
    for page in inbox.pages:
        for platform in page.platforms:
            for folder in FOLDERS:
                assert inbox.conversations_of(page.id, platform, folder)
    emulator = launch(pages=6)
    accounts = follow(get(emulator, "/me/accounts", emulator.user_token).json())
    assert [a["id"] for a in accounts] == [p.id for p in inbox.pages]
    extra = inbox.pages[5]
    response = get(emulator, f"/{extra.id}/conversations", extra.access_token, platform="instagram")
    assert response.json()["data"]


def _media_urls(conversation: Conversation, message: Message) -> Iterator[tuple[str, str]]:
    """(kind, URL) of every CDN URL of a message; kind "story" for story links."""
    for attachment in message.attachments:
        for detail in ("image_data", "video_data"):
            data = attachment.get(detail, {})
            for key in ("url", "preview_url", "animated_gif_url", "animated_gif_preview_url"):
                if key in data:
                    yield "media", data[key]
        if "file_url" in attachment:
            yield "media", attachment["file_url"]
        if "generic_template" in attachment:
            yield "media", attachment["generic_template"]["media_url"]
    if message.sticker:
        yield "media", message.sticker
    for story in (message.story or {}).values():
        yield "story", story["link"]
    for share in message.shares:
        yield "media", share["link"]
        for product in (
            share.get("template", {})
            .get("payload", {})
            .get("product", {})
            .get("elements", {"data": []})["data"]
        ):
            yield "media", product["image_url"]


def test_cdn_urls_are_signed_and_expire_as_metas_do() -> None:
    inbox = generate_inbox(7, 1)
    oldest = inbox.now - 60 * DAY
    expiries, cases = [], Counter()
    for conversation in inbox.conversations:
        for message in conversation.messages:
            created = message.created_time
            for kind, url in _media_urls(conversation, message):
                assert re.fullmatch(
                    r"https://(scontent\.xx\.fbcdn\.net|video\.xx\.fbcdn\.net|cdn\.fbsbx\.com)"
                    r"/v/t\d+\.\d+-\d+/\d+_\d+_n\.\w+\?_nc_cat=\d+&ccb=1-7&_nc_sid=[0-9a-f]{6}"
                    r"&_nc_ohc=[\w-]+&_nc_ht=[\w.]+&oh=00_[\w-]{43}&oe=[0-9a-fA-F]{8}",
                    url,
                ), url
                expiry = inbox.url_expiry(url)
                assert expiry is not None
                oe = url.rsplit("oe=", 1)[1]
                cases[oe.upper() == oe] += 1
                if kind == "story":
                    assert expiry == created + DAY
                elif conversation.platform == "instagram":
                    assert created + 4 * DAY <= expiry < created + 7 * DAY
                else:
                    assert expiry == oldest or created + 3 * DAY <= expiry < created + 30 * DAY
                    assert expiry >= oldest
                expiries.append(expiry)
    assert min(expiries) < inbox.now < max(expiries)
    assert cases[True] > cases[False] > 0
    assert inbox.url_expiry("https://example.com/menu") is None


def test_voice_clips_and_sticker_images(emu: Emulator) -> None:
    attachments = [
        (conversation, message, attachment)
        for conversation in emu.inbox.conversations
        for message in conversation.messages
        for attachment in message.attachments
    ]
    clips = [a for a in attachments if a[2].get("mime_type", "").startswith("audio/")]
    stickers = [a for a in attachments if a[2].get("image_data", {}).get("render_as_sticker")]
    assert {c.platform for c, _, _ in clips} == {"messenger"}
    assert {a["mime_type"] for _, _, a in clips} == {"audio/mpeg", "audio/mp4"}
    assert all(set(a) == {"id", "mime_type", "name", "size", "file_url"} for _, _, a in clips)
    assert all(a["name"].startswith("audioclip-") for _, _, a in clips)
    still = [a for _, _, a in stickers if a["mime_type"] == "image/png"]
    assert still
    assert all(a["image_data"]["width"] == a["image_data"]["height"] for a in still)
    for conversation, message, attachment in (clips[0], stickers[0]):
        response = get(emu, f"/{message.id}/attachments", token_of(emu, conversation))
        assert attachment in response.json()["data"]


def _shapes(conversation: Conversation, message: Message) -> set[str]:
    found = {key for a in message.attachments for key in a if key.endswith(("_data", "template"))}
    found |= {"file_url"} if any("file_url" in a for a in message.attachments) else set()
    found |= {"three attachments"} if len(message.attachments) == 3 else set()
    if any(a.get("mime_type", "").startswith("audio/") for a in message.attachments):
        found.add("voice clip")
    if any(a.get("image_data", {}).get("image_type") == 1 for a in message.attachments):
        stickers = [a["image_data"]["render_as_sticker"] for a in message.attachments]
        found |= {"sticker image"} if any(stickers) else set()
    if message.reactions:
        users = [u for r in message.reactions.get("data", [message.reactions]) for u in r["users"]]
        found.add("reactions.data" if "data" in message.reactions else "reactions bare")
        found |= {"several reactors"} if len(users) > 1 else set()
    checks = {
        "sticker": message.sticker,
        "share": message.shares,
        "reply": message.reply_to,
        "unsupported": message.is_unsupported,
        "story reply": message.story and "reply_to" in message.story,
        "story mention": message.story and "mention" in message.story,
        "same second": any(
            m.created_time == message.created_time and m is not message
            for m in conversation.messages
        ),
        "non-ascii": any(ord(ch) > 0x2000 for ch in message.text),
    }
    return found | {name for name, present in checks.items() if present}


def test_every_shape_occurs_on_both_platforms() -> None:
    inbox = generate_inbox(3, 1)
    seen: dict[str, set[str]] = {"messenger": set(), "instagram": set()}
    for conversation in inbox.conversations:
        for message in conversation.messages:
            if conversation.is_detailed(message):
                seen[conversation.platform] |= _shapes(conversation, message)
    common = {"image_data", "video_data", "generic_template", "three attachments", "sticker"}
    common |= {"reactions.data", "reactions bare", "several reactors", "share", "reply"}
    common |= {"unsupported", "same second", "non-ascii"}
    common |= {"sticker image"}
    assert common | {"file_url", "voice clip"} <= seen["messenger"]
    assert common | {"story reply", "story mention"} <= seen["instagram"]
    threads = inbox.conversations
    messages = [m for c in threads for m in c.messages]
    assert len({m.id for m in messages}) == len(messages)
    attachment_ids = [a["id"] for m in messages for a in m.attachments]
    assert len(set(attachment_ids)) == len(attachment_ids)
    assert len({c.id for c in threads}) == len(threads)
    assert any(len(c.participants) == 3 for c in threads)
    assert any(c.former_participants for c in threads)
    assert any(c.name for c in threads)
    assert any(c.subject for c in threads)
    urls = re.findall(r'https://[^"]+', json.dumps(dataclasses.asdict(inbox)))
    cdn = [url for url in urls if "fbcdn.net" in url or "fbsbx.com" in url]
    assert cdn
    assert all(re.search(r"[?&]oh=[^&]+&oe=[0-9a-fA-F]+$", url) for url in cdn)
    assert not any("EAAG" in url for url in urls)


def test_message_json_matches_graph_shapes(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "instagram")
    token = token_of(emu, conversation)
    response = get(emu, f"/{conversation.id}/messages", token, fields=FULL_MESSAGE, limit=25)
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    messages = response.json()["data"]
    detailed, restricted = messages[:20], messages[20:]
    assert all({"from", "to", "message"} <= m.keys() for m in detailed)
    assert all(set(m) == {"id", "created_time"} for m in restricted)
    assert {"username", "id"} == set(detailed[0]["from"])
    assert any("story" in m for m in detailed)
    assert all("tags" not in m for m in detailed)
    shares = [share for m in detailed for share in m.get("shares", {"data": []})["data"]]
    assert shares
    assert all(set(share) == {"link"} for share in shares)
    messenger = biggest(emu.inbox, "messenger")
    first = get(emu, f"/{messenger.id}/messages", token_of(emu, messenger), fields="from,tags")
    message = first.json()["data"][0]
    assert message["from"]["email"] == f"{message['from']['id']}@facebook.com"
    assert {"inbox"} <= {t["name"] for t in message["tags"]["data"]}


# -- paging ----------------------------------------------------------------------------------


def test_conversations_page_to_the_end_without_gaps(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    expected = [c.id for c in emu.inbox.conversations_of(page.id, "messenger", "other")]
    first = get(emu, f"/{page.id}/conversations", page.access_token, folder="other", limit=3)
    assert [c["id"] for c in follow(first.json())] == expected
    next_url = first.json()["paging"]["next"]
    assert f"access_token={page.access_token}" in next_url
    assert "folder=other" in next_url
    second = requests.get(next_url, timeout=10).json()
    assert "cursors" in second["paging"]
    back = requests.get(second["paging"]["previous"], timeout=10).json()
    assert back["data"] == first.json()["data"]


def test_the_last_page_still_has_cursors(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    total = len(emu.inbox.conversations_of(page.id, "messenger", "spam"))
    last = get(emu, f"/{page.id}/conversations", page.access_token, folder="spam", limit=total + 1)
    assert len(last.json()["data"]) == total
    assert "next" not in last.json()["paging"]
    assert set(last.json()["paging"]["cursors"]) == {"before", "after"}


def test_full_page_leads_to_a_trailing_empty_page(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    total = len(emu.inbox.conversations_of(page.id, "messenger", "inbox"))
    first = get(emu, f"/{page.id}/conversations", page.access_token, limit=total).json()
    assert len(first["data"]) == total
    empty = requests.get(first["paging"]["next"], timeout=10).json()
    assert empty["data"] == []
    assert "next" not in empty.get("paging", {})


def test_trailing_empty_page_can_be_turned_off(fresh: Emulator) -> None:
    fresh.faults.trailing_empty_page = False
    page = fresh.inbox.pages[0]
    total = len(fresh.inbox.conversations_of(page.id, "messenger", "inbox"))
    first = get(fresh, f"/{page.id}/conversations", page.access_token, limit=total).json()
    assert "next" not in first["paging"]
    assert "cursors" in first["paging"]


def test_short_pages_lose_nothing(fresh: Emulator) -> None:
    fresh.faults.short_page_rate = 0.7
    conversation = biggest(fresh.inbox, "messenger")
    first = get(fresh, f"/{conversation.id}/messages", token_of(fresh, conversation), limit=40)
    items = follow(first.json())
    assert [m["id"] for m in items] == [m.id for m in conversation.newest_first()]
    assert len(fresh.calls) > math.ceil(conversation.message_count / 40) + 1


def test_a_repeated_edge_begins_each_thread_page_with_the_last_of_the_page_before(
    fresh: Emulator,
) -> None:
    fresh.faults.repeated_edge = True
    page = fresh.inbox.pages[0]
    expected = [c.id for c in fresh.inbox.conversations_of(page.id, "messenger", "other")]
    first = get(fresh, f"/{page.id}/conversations", page.access_token, folder="other", limit=3)
    listed = [c["id"] for c in follow(first.json())]
    # Pages of 3, each after the first beginning with the thread the one before ended with.
    assert [i for n, i in enumerate(listed) if n == 0 or listed[n - 1] != i] == expected
    assert [n for n in range(1, len(listed)) if listed[n] == listed[n - 1]] == list(
        range(3, len(listed), 3)
    )
    assert len(listed) > len(expected) + 3


def test_limit_is_capped_at_the_maximum_page_size(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "messenger")
    response = get(emu, f"/{conversation.id}/messages", token_of(emu, conversation), limit=500)
    assert len(response.json()["data"]) == 100


def test_cursor_resumes_by_item_not_by_offset(fresh: Emulator) -> None:
    # Activity is deterministic, so a private copy tells which thread will get 150 new messages.
    long_thread_id = add_activity(generate_inbox(7, 1), seed=1).long_thread_id
    conversation = fresh.inbox.conversation(long_thread_id)
    assert conversation is not None
    token = token_of(fresh, conversation)
    first = get(fresh, f"/{conversation.id}/messages", token, limit=5).json()
    before = [m.id for m in conversation.newest_first()]
    fresh.add_activity(seed=1)
    second = requests.get(first["paging"]["next"], timeout=10).json()
    assert [m["id"] for m in second["data"]] == before[5:10]


def test_garbage_cursor_is_error_100(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    for cursor in ("not-a-cursor!", "e30", "WyJ4Il0"):
        response = get(emu, f"/{page.id}/conversations", page.access_token, after=cursor)
        assert response.status_code == 400
        assert error_of(response)["code"] == 100


def test_expired_cursors_answer_error_100(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    thread = biggest(fresh.inbox, "messenger")
    listing = get(fresh, f"/{page.id}/conversations", page.access_token, limit=2).json()
    nested = node(fresh, thread.id, thread, "messages.limit(5){id}")["messages"]
    fresh.expire_cursors()
    for stale in (listing["paging"]["next"], nested["paging"]["next"]):
        response = requests.get(stale, timeout=10)
        assert response.status_code == 400
        assert (error_of(response)["code"], error_of(response)["message"]) == (
            100,
            "(#100) Invalid cursor",
        )
    again = get(fresh, f"/{page.id}/conversations", page.access_token, limit=2).json()
    assert again["data"] == listing["data"]
    second = requests.get(again["paging"]["next"], timeout=10)
    expected = fresh.inbox.conversations_of(page.id, "messenger", "inbox")[2:4]
    assert [c["id"] for c in second.json()["data"]] == [c.id for c in expected]


def test_expired_cursors_can_restart_the_list(launch: Callable[..., Emulator]) -> None:
    fresh = launch(faults=Faults(cursor_expiry="restart"))
    thread = biggest(fresh.inbox, "messenger")
    first = get(fresh, f"/{thread.id}/messages", token_of(fresh, thread), limit=5).json()
    fresh.expire_cursors()
    restarted = requests.get(first["paging"]["next"], timeout=10).json()
    assert restarted["data"] == first["data"]
    assert [m["id"] for m in follow(restarted)] == [m.id for m in thread.newest_first()]


def test_instagram_hides_stale_requests(launch: Callable[..., Emulator]) -> None:
    fresh = launch(faults=Faults(instagram_hides_stale_requests=True))
    inbox, hidden = fresh.inbox, []
    for page in inbox.pages:
        for platform in page.platforms:
            for folder in FOLDERS:
                every = inbox.conversations_of(page.id, platform, folder)
                stale = platform == "instagram" and folder == "other"
                shown = [c for c in every if not stale or c.updated_time >= inbox.now - 30 * DAY]
                assert listed(fresh, page.id, platform, folder) == [c.id for c in shown]
                hidden += [c for c in every if c not in shown]
    assert hidden
    assert node(fresh, hidden[0].id, hidden[0], "id")["id"] == hidden[0].id
    fresh.faults.instagram_hides_stale_requests = False
    page = inbox.page(hidden[0].page_id)
    assert page is not None
    assert hidden[0].id in listed(fresh, page.id, "instagram", "other")


# -- nested requests -------------------------------------------------------------------------


def test_nested_messages_continue_where_the_nested_page_ended(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "messenger")
    token = token_of(emu, conversation)
    fields = "id,messages.limit(100){id,created_time,from,attachments.limit(2){id,image_data{url}}}"
    nested = get(emu, f"/{conversation.id}", token, fields=fields).json()["messages"]
    next_url = nested["paging"]["next"]
    assert f"/v25.0/{conversation.id}/messages?" in next_url
    assert f"access_token={token}" in next_url
    assert "limit=100" in next_url
    items = follow(nested)
    assert [m["id"] for m in items] == [m.id for m in conversation.newest_first()]
    assert len(items) > 230
    assert all("from" in m for m in items)


def test_nested_attachments_carry_next_even_when_complete(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "messenger")
    album = next(m for m in conversation.newest_first() if len(m.attachments) == 3)
    response = get(emu, f"/{album.id}", token_of(emu, conversation), fields="attachments{id}")
    attachments = response.json()["attachments"]
    assert [a["id"] for a in attachments["data"]] == [a["id"] for a in album.attachments]
    assert requests.get(attachments["paging"]["next"], timeout=10).json()["data"] == []
    plain = next(m for m in conversation.messages if not m.attachments)
    response = get(emu, f"/{plain.id}", token_of(emu, conversation), fields="id,attachments")
    assert "attachments" not in response.json()


def test_sub_field_selection_on_objects(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "messenger")
    fields = "messages.limit(100){from{id},attachments{image_data{url}},reactions{reaction}}"
    data = get(emu, f"/{conversation.id}", token_of(emu, conversation), fields=fields).json()
    messages = data["messages"]["data"]
    assert all(set(m["from"]) == {"id"} for m in messages)
    images = [a for m in messages for a in m.get("attachments", {}).get("data", [])]
    assert all(set(a.get("image_data", {"url": 1})) == {"url"} for a in images)
    assert set(data) == {"id", "messages"}


# -- fields parsing --------------------------------------------------------------------------


def test_fields_parser_reads_nested_modifiers() -> None:
    text = "id,messages.limit(100){id,attachments.limit(10){image_data{url}}}.after(QUJD)"
    (first, messages) = parse_fields(text)
    assert first.name == "id"
    assert (messages.limit, messages.after) == (100, "QUJD")
    assert messages.children is not None
    attachments = messages.children[1]
    assert attachments.limit == 10
    assert attachments.children is not None
    assert attachments.children[0].children == parse_fields("url")
    assert parse_fields(format_fields(parse_fields(text))) == parse_fields(text)
    assert parse_fields(" id , name ") == parse_fields("id,name")


@pytest.mark.parametrize("text", ["id,", "id,,name", "messages{id", "id}", "a.limit(3", "{id}"])
def test_fields_parser_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(FieldsSyntaxError):
        parse_fields(text)


@pytest.mark.parametrize("text", ["messages.limit(x)", "messages.order(chronological)"])
def test_fields_parser_rejects_bad_modifiers(text: str) -> None:
    with pytest.raises(FieldsValueError):
        parse_fields(text)


def test_fields_errors_over_http(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "messenger")
    token = token_of(emu, conversation)
    unknown = get(emu, f"/{conversation.id}/messages", token, fields="id,mood")
    assert error_of(unknown)["code"] == 100
    assert "(mood) on node type (Message)" in error_of(unknown)["message"]
    nested = get(emu, f"/{conversation.id}", token, fields="messages{attachments{colour}}")
    assert "(colour) on node type (MessageAttachment)" in error_of(nested)["message"]
    broken = get(emu, f"/{conversation.id}", token, fields="messages{id")
    assert (broken.status_code, error_of(broken)["code"]) == (400, 2500)


# -- tokens, access and errors ---------------------------------------------------------------


def test_me_with_page_and_user_tokens(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    me = get(emu, "/me", page.access_token, fields="id,name,instagram_business_account").json()
    assert me["id"] == page.id
    assert page.instagram is not None
    assert me["instagram_business_account"] == {
        "id": page.instagram.id,
        "username": page.instagram.username,
    }
    assert get(emu, "/me", emu.user_token).json() == {
        "id": emu.inbox.user.id,
        "name": emu.inbox.user.name,
    }
    header = {"Authorization": f"OAuth {page.access_token}"}
    assert requests.get(f"{emu.base_url}/me", headers=header, timeout=10).json()["id"] == page.id


def test_accounts_lists_managed_pages_with_their_tokens(emu: Emulator) -> None:
    first = get(emu, "/me/accounts", emu.user_token, limit=2).json()
    accounts = follow(first)
    assert [a["id"] for a in accounts] == [p.id for p in emu.inbox.pages]
    assert [a["access_token"] for a in accounts] == [p.access_token for p in emu.inbox.pages]
    assert all("tasks" in a for a in accounts)
    with_page_token = get(emu, "/me/accounts", emu.inbox.pages[0].access_token)
    assert error_of(with_page_token)["code"] == 100
    assert "(accounts) on node type (Page)" in error_of(with_page_token)["message"]


def test_page_endpoints_need_that_pages_token(emu: Emulator) -> None:
    page, other = emu.inbox.pages[0], emu.inbox.pages[1]
    user = get(emu, f"/{page.id}/conversations", emu.user_token)
    assert error_of(user)["code"] == 210
    foreign = get(emu, f"/{page.id}/conversations", other.access_token)
    assert (error_of(foreign)["code"], error_of(foreign)["error_subcode"]) == (100, 33)
    thread = emu.inbox.conversations_of(page.id, "messenger", "inbox")[0]
    assert error_of(get(emu, f"/{thread.id}/messages", other.access_token))["error_subcode"] == 33
    assert error_of(get(emu, f"/{thread.id}", emu.user_token))["code"] == 210
    unmanaged = get(emu, f"/{emu.inbox.unmanaged_page_id}/conversations", page.access_token)
    assert error_of(unmanaged)["error_subcode"] == 33
    assert error_of(get(emu, f"/{emu.inbox.unmanaged_page_id}", emu.user_token))["code"] == 100
    unknown = get(emu, "/t_999", page.access_token)
    assert error_of(unknown)["type"] == "GraphMethodException"


def test_bad_and_missing_tokens(emu: Emulator) -> None:
    assert error_of(get(emu, "/me", "EAAGnope"))["code"] == 190
    assert error_of(get(emu, "/me", None))["code"] == 104


def test_expired_token_answers_190(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    fresh.expire_token(page.access_token)
    error = error_of(get(fresh, f"/{page.id}/conversations", page.access_token))
    assert (error["code"], error["error_subcode"]) == (190, 463)
    fresh.expire_token(fresh.user_token, subcode=460)
    assert error_of(get(fresh, "/me/accounts", fresh.user_token))["error_subcode"] == 460


def test_revoked_permission_answers_200(fresh: Emulator) -> None:
    page_id = page_with_instagram(fresh.inbox)
    token = fresh.page_token(page_id)
    fresh.revoke_permission(page_id, "instagram_manage_messages")
    assert get(fresh, f"/{page_id}/conversations", token).status_code == 200
    error = error_of(get(fresh, f"/{page_id}/conversations", token, platform="instagram"))
    assert error["code"] == 200
    assert "instagram_manage_messages" in error["message"]
    fresh.revoke_permission(page_id, "pages_messaging")
    assert error_of(get(fresh, f"/{page_id}/conversations", token))["code"] == 200


def test_appsecret_proof_is_checked_when_required() -> None:
    with Emulator(seed=7, app_secret="s3cret") as emulator:
        token = emulator.user_token
        proof = hmac.new(b"s3cret", token.encode(), hashlib.sha256).hexdigest()
        assert error_of(get(emulator, "/me", token))["code"] == 100
        assert error_of(get(emulator, "/me", token, appsecret_proof="00"))["code"] == 100
        assert get(emulator, "/me", token, appsecret_proof=proof).status_code == 200
        assert "appsecret_proof" not in emulator.calls[-1].params


def test_parameter_validation(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    no_instagram = next(p for p in emu.inbox.pages if not p.instagram)
    path = f"/{page.id}/conversations"
    assert get(emu, path, page.access_token, platform="INSTAGRAM").status_code == 200
    for params in ({"platform": "whatsapp"}, {"folder": "archive"}, {"limit": "-1"}):
        assert error_of(get(emu, path, page.access_token, **params))["code"] == 100
    ig = get(
        emu, f"/{no_instagram.id}/conversations", no_instagram.access_token, platform="instagram"
    )
    assert "Instagram" in error_of(ig)["message"]
    post = requests.post(
        f"{emu.base_url}{path}", params={"access_token": page.access_token}, timeout=10
    )
    assert error_of(post)["code"] == 100


def test_any_version_prefix_and_none(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    for prefix in ("", "/v19.0", "/v26.0"):
        url = f"{emu.base_url}{prefix}/{page.id}/conversations"
        params = {"access_token": page.access_token, "limit": 2}
        response = requests.get(url, params=params, timeout=10)
        assert response.status_code == 200
        assert response.json()["paging"]["next"].startswith(url)


def test_user_id_finds_the_thread_with_that_person(emu: Emulator) -> None:
    page = emu.inbox.pages[0]
    thread = emu.inbox.conversations_of(page.id, "messenger", "inbox")[2]
    customer = thread.participants[0].id
    found = get(emu, f"/{page.id}/conversations", page.access_token, user_id=customer).json()
    assert [c["id"] for c in found["data"]] == [thread.id]


# -- the Instagram 20-message limit ----------------------------------------------------------


def test_old_instagram_messages_are_deleted_for_node_reads(emu: Emulator) -> None:
    conversation = biggest(emu.inbox, "instagram")
    token = token_of(emu, conversation)
    newest = conversation.newest_first()
    recent = get(emu, f"/{newest[19].id}", token, fields="id,from,message")
    assert "from" in recent.json()
    old = get(emu, f"/{newest[20].id}", token, fields="id,from,message")
    assert (old.status_code, error_of(old)["code"]) == (400, 9000001)
    assert error_of(old)["message"] == "This Message has been deleted by the user or the business."
    assert error_of(get(emu, f"/{newest[50].id}/attachments", token))["code"] == 9000001
    nested = get(emu, f"/{conversation.id}", token, fields="messages.limit(30){id,message,from}")
    assert all(set(m) == {"id", "created_time"} for m in nested.json()["messages"]["data"][20:])


# -- usage headers and throttling ------------------------------------------------------------


def test_usage_headers_rise_and_the_budget_throttles(launch: Callable[..., Emulator]) -> None:
    fresh = launch(limits=Limits(calls_per_window=5))
    page = fresh.inbox.pages[0]
    percents = []
    for _ in range(5):
        response = get(fresh, f"/{page.id}/conversations", page.access_token)
        usage = json.loads(response.headers["X-Business-Use-Case-Usage"])[page.id][0]
        percents.append(usage["call_count"])
        assert usage["type"] == "messenger"
        assert "call_count" in json.loads(response.headers["X-App-Usage"])
    assert percents == [20, 40, 60, 80, 100]
    throttled = get(fresh, f"/{page.id}/conversations", page.access_token)
    assert error_of(throttled)["code"] == 80006
    usage = json.loads(throttled.headers["X-Business-Use-Case-Usage"])[page.id][0]
    assert usage["estimated_time_to_regain_access"] == 0
    instagram = get(fresh, f"/{page.id}/conversations", page.access_token, platform="instagram")
    assert error_of(instagram)["code"] == 80002
    assert error_of(get(fresh, f"/{page.id}", page.access_token))["code"] == 32
    assert [c.error_code for c in fresh.calls[-3:]] == [80006, 80002, 32]
    other = fresh.inbox.pages[1]
    assert get(fresh, f"/{other.id}", other.access_token).status_code == 200


def test_budget_frees_up_as_the_window_rolls(fresh: Emulator) -> None:
    fresh.limits.calls_per_window, fresh.limits.window_seconds = 2, 1.0
    page = fresh.inbox.pages[0]
    statuses = [get(fresh, "/me", page.access_token).status_code for _ in range(3)]
    assert statuses == [200, 200, 400]
    time.sleep(1.05)
    assert get(fresh, "/me", page.access_token).status_code == 200


def test_one_call_over_the_burst_is_refused(launch: Callable[..., Emulator]) -> None:
    # A bucket that refills in 100 s: nothing the test does can wait that long.
    fresh = launch(limits=Limits(per_second=0.01, burst=3))
    page, other = fresh.inbox.pages[0], fresh.inbox.pages[1]
    path = f"/{page.id}/conversations"
    responses = [get(fresh, path, page.access_token) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 400]
    usage = [json.loads(r.headers["X-Business-Use-Case-Usage"])[page.id][0] for r in responses]
    # Usage counts the hour (an allowance of 36 calls at 0.01/s); refused, it reads 100 %.
    assert [u["call_count"] for u in usage] == [3, 6, 9, 100]
    assert [u["estimated_time_to_regain_access"] for u in usage] == [0, 0, 0, 1]
    assert "call_count" in json.loads(responses[3].headers["X-App-Usage"])
    error = error_of(responses[3])
    assert (error["code"], error["is_transient"]) == (80006, True)
    instagram = get(fresh, path, page.access_token, platform="instagram")
    assert error_of(instagram)["code"] == 80002
    assert error_of(get(fresh, "/me", page.access_token))["code"] == 32
    thread = fresh.inbox.conversations_of(page.id, "messenger", "inbox")[0]
    assert error_of(get(fresh, f"/{thread.id}", page.access_token))["code"] == 80006
    # Each Page has its own bucket; user tokens are not counted.
    assert get(fresh, f"/{other.id}/conversations", other.access_token).status_code == 200
    assert get(fresh, "/me/accounts", fresh.user_token).status_code == 200
    assert [c.error_code for c in fresh.calls].count(80006) == 2


def test_a_client_at_the_rate_is_never_throttled(launch: Callable[..., Emulator]) -> None:
    fresh = launch(limits=Limits(per_second=10))
    page = fresh.inbox.pages[0]
    start, statuses = time.monotonic(), []
    # Past the burst of the first second: only the bucket's refill lets these through.
    for n in range(16):
        time.sleep(max(0.0, start + n / 10 - time.monotonic()))
        statuses.append(get(fresh, f"/{page.id}/conversations", page.access_token).status_code)
    assert statuses == [200] * 16


def test_user_token_calls_carry_no_page_usage(emu: Emulator) -> None:
    assert "X-Business-Use-Case-Usage" not in get(emu, "/me/accounts", emu.user_token).headers


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code", "transient"),
    [("server_error_rate", 500, 2, True), ("unknown_error_rate", 500, 1, True)],
)
def test_error_faults(fresh: Emulator, fault: str, status: int, code: int, transient: bool) -> None:
    setattr(fresh.faults, fault, 1.0)
    response = get(fresh, "/me", fresh.user_token)
    assert (response.status_code, error_of(response)["code"]) == (status, code)
    assert error_of(response)["is_transient"] is transient
    assert fresh.calls[-1].error_code == code


def test_dropped_connection(fresh: Emulator) -> None:
    fresh.faults.drop_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        get(fresh, "/me", fresh.user_token)
    assert fresh.calls[-1].status == 0


def test_truncated_body(fresh: Emulator) -> None:
    fresh.faults.truncate_rate = 1.0
    response = get(fresh, "/me/accounts", fresh.user_token)
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_non_json_answer(fresh: Emulator) -> None:
    fresh.faults.non_json_rate = 1.0
    response = get(fresh, "/me", fresh.user_token)
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")


def test_slow_answer(fresh: Emulator) -> None:
    fresh.faults.slow_rate, fresh.faults.slow_seconds = 1.0, 0.3
    started = time.monotonic()
    assert get(fresh, "/me", fresh.user_token).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_faults_are_reproducible(launch: Callable[..., Emulator]) -> None:
    outcomes = []
    for _ in range(2):
        emulator = launch(faults=Faults(server_error_rate=0.5))
        for _ in range(12):
            get(emulator, "/me", emulator.user_token)
        outcomes.append([call.status for call in emulator.calls])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 500}


def test_too_much_data_then_a_smaller_limit(fresh: Emulator) -> None:
    fresh.faults.max_response_bytes = 60_000
    conversation = biggest(fresh.inbox, "messenger")
    path, token = f"/{conversation.id}", token_of(fresh, conversation)
    heavy = get(fresh, path, token, fields=f"messages.limit(100){{{FULL_MESSAGE}}}")
    error = error_of(heavy)
    assert (heavy.status_code, error["code"], error["is_transient"]) == (500, 1, False)
    assert "reduce the amount of data" in error["message"]
    light = get(fresh, path, token, fields=f"messages.limit(10){{{FULL_MESSAGE}}}")
    assert light.status_code == 200


# -- activity --------------------------------------------------------------------------------


def test_activity_between_runs(fresh: Emulator) -> None:
    inbox = fresh.inbox
    counts = {c.id: c.message_count for c in inbox.conversations}
    done = {c.id for c in inbox.conversations if c.folder == "page_done"}
    activity = fresh.add_activity(seed=1)
    long_thread = inbox.conversation(activity.long_thread_id)
    assert long_thread is not None
    assert long_thread.message_count == counts[long_thread.id] + 150
    now = {c.id: c for c in inbox.conversations}
    new_threads = [now[i] for i in activity.new_conversation_ids]
    assert sorted(c.platform for c in new_threads) == ["instagram"] * 2 + ["messenger"] * 2
    assert all(c.folder == "inbox" for c in new_threads)
    assert activity.new_conversation_ids <= activity.changed_conversation_ids
    changed_old = activity.changed_conversation_ids - activity.new_conversation_ids
    # 150-message thread, Instagram thread, 8 others, reopened thread, same-second thread
    assert len(changed_old) == 12
    grown = sum(now[i].message_count - counts[i] for i in changed_old)
    added = sum(c.message_count for c in new_threads)
    assert grown + added == len(activity.new_message_ids)
    assert activity.reopened_conversation_id in done
    reopened = inbox.conversation(activity.reopened_conversation_id)
    assert reopened is not None
    path, token = f"/{reopened.page_id}/conversations", fresh.page_token(reopened.page_id)
    for folder, present in (("inbox", True), ("page_done", False)):
        response = get(fresh, path, token, platform=reopened.platform, folder=folder, limit=100)
        assert (reopened.id in {c["id"] for c in follow(response.json())}) is present


def test_activity_same_second_message(fresh: Emulator) -> None:
    activity = fresh.add_activity(seed=1)
    message = fresh.inbox.message(activity.same_second_message_id)
    assert message is not None
    thread = fresh.inbox.conversation(message.conversation_id)
    assert thread is not None
    assert thread.newest_first()[0] is message
    assert thread.newest_first()[1].created_time == message.created_time
    response = get(fresh, f"/{thread.id}", token_of(fresh, thread), fields="updated_time,snippet")
    assert response.json()["updated_time"] == iso(message.created_time)
    assert response.json()["snippet"] == message.text[:100]


def test_activity_pushes_instagram_messages_past_the_detail_limit(fresh: Emulator) -> None:
    def detailed() -> set[str]:
        threads = [c for c in fresh.inbox.conversations if c.platform == "instagram"]
        return {m.id for c in threads for m in c.messages if c.is_detailed(m)}

    before = detailed()
    fresh.add_activity(seed=1)
    lost = before - detailed()
    assert len(lost) >= 3
    message = fresh.inbox.message(sorted(lost)[0])
    assert message is not None
    conversation = fresh.inbox.conversation(message.conversation_id)
    assert conversation is not None
    response = get(fresh, f"/{message.id}", token_of(fresh, conversation), fields="message")
    assert error_of(response)["code"] == 9000001


def test_reactions_keep_the_shape_the_message_had(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "messenger")  # its showcase has both reaction shapes
    customer, page_side = thread.customers[0].as_reactor(), thread.page_side.as_reactor()
    reacted = [m for m in thread.messages if m.reactions]
    plain = next(m for m in reversed(thread.messages) if not m.reactions)
    bare = next(m for m in reacted if "reaction" in (m.reactions or {}))
    grouped = next(m for m in reacted if "data" in (m.reactions or {}))
    before = {m.id: json.loads(json.dumps(m.reactions)) for m in (bare, grouped)}
    (group,) = before[grouped.id]["data"]
    other = next(emoji for emoji in ("🔥", "😮") if emoji != group["reaction"])
    updated = thread.updated_time
    fresh.react(plain.id, "🔥")
    fresh.react(bare.id, before[bare.id]["reaction"], user_id=customer["id"])
    fresh.react(grouped.id, other, user_id=page_side["id"])
    assert plain.reactions == {"data": [{"reaction": "🔥", "users": [customer]}]}
    others = [u for u in group["users"] if u["id"] != page_side["id"]]
    assert grouped.reactions == {
        "data": [
            {"reaction": group["reaction"], "users": others},
            {"reaction": other, "users": [page_side]},
        ]
    }
    # The customer had reacted already: their reaction moves to the end, once.
    users = [u for u in before[bare.id]["users"] if u["id"] != customer["id"]]
    assert bare.reactions == {"reaction": before[bare.id]["reaction"], "users": [*users, customer]}
    for message in (plain, bare, grouped):
        assert node(fresh, message.id, thread, "reactions")["reactions"] == message.reactions
    # The bare shape holds one emoji: another one replaces it.
    fresh.react(bare.id, other)
    assert bare.reactions == {"reaction": other, "users": [customer]}
    assert node(fresh, thread.id, thread, "updated_time")["updated_time"] == iso(updated)
    with pytest.raises(KeyError):
        fresh.react(plain.id, "🔥", user_id="not-a-participant")


def test_edits_read_state_and_replies_leave_updated_time(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "instagram")
    newest, updated = thread.messages[-1], iso(thread.updated_time)
    fresh.edit_message(newest.id, "Edited: see you at 8 ✏️")
    fresh.set_unread(thread.id, 7)
    fresh.set_can_reply(thread.id, False)
    fields = "updated_time,snippet,unread_count,can_reply"
    assert node(fresh, thread.id, thread, fields) == {
        "id": thread.id,
        "updated_time": updated,
        "snippet": "Edited: see you at 8 ✏️",
        "unread_count": 7,
        "can_reply": False,
    }
    assert node(fresh, newest.id, thread, "message")["message"] == "Edited: see you at 8 ✏️"


def test_archiving_moves_a_thread_without_a_new_message(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    thread = fresh.inbox.conversations_of(page.id, "messenger", "inbox")[1]
    updated = thread.updated_time
    fresh.move_thread(thread.id, "page_done")
    assert thread.id not in listed(fresh, page.id, "messenger", "inbox")
    done = fresh.inbox.conversations_of(page.id, "messenger", "page_done")
    assert listed(fresh, page.id, "messenger", "page_done") == [c.id for c in done]
    assert thread in done
    assert (thread.folder, thread.updated_time) == ("page_done", updated)
    with pytest.raises(ValueError, match="folder"):
        fresh.move_thread(thread.id, "archive")


def test_an_unsent_message_disappears_everywhere(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "messenger")
    newest, previous = thread.newest_first()[:2]
    count, updated = thread.message_count, iso(thread.updated_time)
    fresh.unsend(newest.id)
    assert fresh.inbox.message(newest.id) is None
    fields = "updated_time,message_count,snippet,messages.limit(100){id}"
    data = node(fresh, thread.id, thread, fields)
    assert (data["updated_time"], data["message_count"], data["snippet"]) == (
        updated,
        count - 1,
        previous.text[:100],
    )
    listing = get(fresh, f"/{thread.id}/messages", token_of(fresh, thread), limit=100)
    assert newest.id not in {m["id"] for m in follow(listing.json())}
    assert newest.id not in {m["id"] for m in follow(data["messages"])}
    assert len(follow(data["messages"])) == count - 1
    for path in (f"/{newest.id}", f"/{newest.id}/attachments"):
        error = error_of(get(fresh, path, token_of(fresh, thread)))
        assert (error["code"], error["error_subcode"]) == (100, 33)


def test_an_unsent_instagram_message_lets_an_older_one_be_read(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "instagram")
    newest, twenty_first = thread.newest_first()[0], thread.newest_first()[20]
    assert error_of(get(fresh, f"/{twenty_first.id}", token_of(fresh, thread)))["code"] == 9000001
    fresh.unsend(newest.id)
    assert "from" in node(fresh, twenty_first.id, thread, "from")


def test_a_deleted_thread_disappears_with_its_messages(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    thread = fresh.inbox.conversations_of(page.id, "messenger", "inbox")[0]
    threads, message = len(fresh.inbox.conversations), thread.messages[-1]
    fresh.delete_thread(thread.id)
    assert len(fresh.inbox.conversations) == threads - 1
    assert fresh.inbox.conversation(thread.id) is None
    assert thread.id not in listed(fresh, page.id, "messenger", "inbox")
    for gone in (thread.id, message.id):
        error = error_of(get(fresh, f"/{gone}", page.access_token))
        assert (error["code"], error["error_subcode"]) == (100, 33)
    customer = thread.customers[0].id
    found = get(fresh, f"/{page.id}/conversations", page.access_token, user_id=customer).json()
    assert found["data"] == []


def test_listings_stay_in_order_through_changes(fresh: Emulator) -> None:
    inbox = fresh.inbox
    fresh.add_activity(seed=1)
    fresh.add_activity(seed=2)
    for page in inbox.pages:
        threads = inbox.conversations_of(page.id, "messenger", "inbox")
        fresh.move_thread(threads[0].id, "spam")
        fresh.unsend(threads[1].messages[-1].id)
        fresh.delete_thread(threads[2].id)
    for page in inbox.pages:
        for platform in page.platforms:
            for folder in FOLDERS:
                found = [
                    c
                    for c in inbox.conversations
                    if (c.page_id, c.platform, c.folder) == (page.id, platform, folder)
                ]
                expected = sorted(found, key=lambda c: (c.updated_time, c.id), reverse=True)
                assert inbox.conversations_of(page.id, platform, folder) == expected
                assert listed(fresh, page.id, platform, folder) == [c.id for c in expected]


def test_lone_surrogates_travel_as_json_escapes(fresh: Emulator) -> None:
    changed = fresh.inject_surrogates()
    inbox, lone = fresh.inbox, "\ud83d"
    thread = inbox.conversation(changed["conversation_id"])
    assert thread is not None
    assert set(changed) == {
        "message_id",
        "conversation_id",
        "participant_id",
        "attachment_message_id",
    }
    fields = "snippet,participants,messages.limit(2){message}"
    response = get(fresh, f"/{thread.id}", token_of(fresh, thread), fields=fields)
    assert response.content.isascii()
    assert "\\ud83d" in response.text
    data = response.json()
    assert data["snippet"] == thread.snippet
    assert data["snippet"].endswith(lone)
    assert len(data["snippet"].encode("utf-16-le", "surrogatepass")) == 200
    names = {p["id"]: p["name"] for p in data["participants"]["data"]}
    assert names[changed["participant_id"]].endswith(lone)
    texts = [m["message"] for m in data["messages"]["data"]]
    message = inbox.message(changed["message_id"])
    assert message is not None
    assert texts[1] == message.text
    assert lone in message.text
    with_file = inbox.message(changed["attachment_message_id"])
    assert with_file is not None
    owner = inbox.conversation(with_file.conversation_id)
    assert owner is not None
    attachments = get(fresh, f"/{with_file.id}/attachments", token_of(fresh, owner)).json()
    assert any(lone in a.get("name", "") for a in attachments["data"])
    assert attachments["data"] == with_file.attachments


def test_activity_is_deterministic() -> None:
    first, second = generate_inbox(7, 1), generate_inbox(7, 1)
    assert add_activity(first, 1) == add_activity(second, 1)
    assert dataclasses.asdict(first) == dataclasses.asdict(second)
    assert add_activity(first, 1) != add_activity(second, 2)


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_requests_are_all_answered_and_recorded(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    fresh.hold_after(0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        path = f"/{page.id}/conversations"
        futures = [pool.submit(get, fresh, path, page.access_token) for _ in range(8)]
        # Eight connections open at once, all waiting: the server serves them side by side.
        assert fresh.wait_until_held(8)
        assert (fresh.held(), fresh.calls, fresh.peak_in_flight()) == (8, [], 0)
        fresh.release()
        assert {future.result().status_code for future in futures} == {200}
    assert [call.page_id for call in fresh.calls] == [page.id] * 8
    assert fresh.held() == 0


def test_the_gate_holds_calls_after_a_count(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    assert not fresh.wait_until_held(1, timeout=0.01)
    fresh.hold_after(2)
    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(get, fresh, "/me", page.access_token) for _ in range(5)]
        assert fresh.wait_until_held(3)
        answered = [future.result() for future in itertools.islice(as_completed(futures), 2)]
        assert [response.status_code for response in answered] == [200, 200]
        assert (len(fresh.calls), fresh.held()) == (2, 3)
        assert sum(future.done() for future in futures) == 2
        fresh.release()
        assert all(future.result().status_code == 200 for future in futures)
    assert len(fresh.calls) == 5


def test_stopping_answers_the_held_calls(launch: Callable[..., Emulator]) -> None:
    emulator = launch()
    emulator.hold_after(0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(get, emulator, "/me/accounts", emulator.user_token)
        assert emulator.wait_until_held(1)
        emulator.stop()
        assert pending.result().status_code == 200


def test_latency_delays_each_call_on_its_own(launch: Callable[..., Emulator]) -> None:
    emulator = launch(latency=0.5)
    pages = emulator.inbox.pages
    emulator.hold_after(0)
    with ThreadPoolExecutor(max_workers=7) as pool:
        futures = [pool.submit(get, emulator, "/me", p.access_token) for p in pages for _ in (1, 2)]
        futures.append(pool.submit(get, emulator, "/me", emulator.user_token))
        assert emulator.wait_until_held(7)
        # Released together, the seven sleep their half second side by side.
        emulator.release()
        assert {future.result().status_code for future in futures} == {200}
    assert emulator.peak_in_flight() == 7
    assert [emulator.peak_in_flight(p.id) for p in pages] == [2, 2, 2]
    assert emulator.peak_pages_in_flight() == 3
    assert Counter(call.page_id for call in emulator.calls) == {
        **{p.id: 2 for p in pages},
        None: 1,
    }
    assert emulator.wait_until_idle()
    emulator.reset_calls()
    assert (emulator.peak_in_flight(), emulator.peak_pages_in_flight()) == (0, 0)
    assert emulator.peak_in_flight(pages[0].id) == 0


def test_latency_jitter_adds_to_the_latency(launch: Callable[..., Emulator]) -> None:
    emulator = launch(latency=0.1, latency_jitter=0.2)
    started = time.monotonic()
    assert get(emulator, "/me", emulator.user_token).status_code == 200
    assert time.monotonic() - started >= 0.1


def test_changes_while_a_client_reads(fresh: Emulator) -> None:
    inbox, page = fresh.inbox, fresh.inbox.pages[0]
    fields = f"id,updated_time,snippet,participants,messages.limit(50){{{FULL_MESSAGE}}}"
    done, statuses = threading.Event(), []

    def read() -> None:
        while True:
            for folder in FOLDERS:
                params = {"folder": folder, "limit": 100, "fields": fields}
                response = get(fresh, f"/{page.id}/conversations", page.access_token, **params)
                response.json()
                statuses.append(response.status_code)
            if done.is_set():
                return

    reader = threading.Thread(target=read)
    reader.start()
    for seed in (1, 2, 3):
        fresh.add_activity(seed)
    threads = inbox.conversations_of(page.id, "messenger", "inbox")
    for thread in threads[:4]:
        newest = thread.messages[-1]
        fresh.react(newest.id, "🔥")
        fresh.edit_message(newest.id, "edited")
        fresh.unsend(thread.messages[0].id)
    fresh.move_thread(threads[4].id, "page_done")
    fresh.delete_thread(threads[5].id)
    fresh.inject_surrogates()
    done.set()
    reader.join()
    assert statuses
    assert set(statuses) == {200}
    for folder in FOLDERS:
        expected = inbox.conversations_of(page.id, "messenger", folder)
        assert listed(fresh, page.id, "messenger", folder) == [c.id for c in expected]


# -- call recording --------------------------------------------------------------------------


def test_calls_are_recorded(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]
    thread = fresh.inbox.conversations_of(page.id, "messenger", "inbox")[0]
    get(fresh, f"/{page.id}/conversations", page.access_token, folder="spam", limit=2)
    get(fresh, f"/{thread.id}/messages", page.access_token)
    requests.get(f"{fresh.base_url}/me", timeout=10)
    get(fresh, "/me", "bogus")
    first, second, third, fourth = fresh.calls
    assert (first.method, first.path, first.params) == (
        "GET",
        f"/{page.id}/conversations",
        {"folder": "spam", "limit": "2"},
    )
    assert (first.token_kind, first.status, first.error_code, first.object_id) == (
        "page",
        200,
        None,
        page.id,
    )
    assert (second.path, second.object_id) == (f"/{thread.id}/messages", thread.id)
    assert (third.token_kind, fourth.token_kind, fourth.error_code) == ("none", "invalid", 190)
    assert [call.page_id for call in fresh.calls] == [page.id, page.id, None, None]
    fresh.reset_calls()
    assert fresh.calls == []


# -- scripted faults: texts for people, changes mid-run, failures, throttles -----------------


class FakeClock:
    """Time for call budgets and the app throttle that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _provoke_every_error(emulator: Emulator) -> dict[str, requests.Response]:
    """One call for each kind of error the emulator sends, in the same order on every run."""
    inbox = emulator.inbox
    page, throttled_page, other_page = inbox.pages
    token, listing = page.access_token, f"/{page.id}/conversations"
    thread, instagram = biggest(inbox, "messenger"), biggest(inbox, "instagram")
    old, old_token = instagram.newest_first()[20], token_of(emulator, instagram)
    calls = {
        "104": lambda: get(emulator, "/me", None),
        "190": lambda: get(emulator, "/me", "EAAGnope"),
        "210": lambda: get(emulator, listing, emulator.user_token),
        "100/33": lambda: get(emulator, "/t_999", token),
        "cursor": lambda: get(emulator, listing, token, after="not-a-cursor!"),
        "100": lambda: get(emulator, listing, token, folder="archive"),
        "2500": lambda: get(emulator, listing, token, fields="messages{id"),
        "9000001": lambda: get(emulator, f"/{old.id}", old_token),
    }
    responses = {name: call() for name, call in calls.items()}
    for name, fault, value in (
        ("reduce", "max_response_bytes", 10),
        ("1", "unknown_error_rate", 1.0),
        ("2", "server_error_rate", 1.0),
    ):
        before = getattr(emulator.faults, fault)
        setattr(emulator.faults, fault, value)
        responses[name] = get(emulator, "/me", emulator.user_token)
        setattr(emulator.faults, fault, before)
    for code in (17, 613, 80001, 12345):
        emulator.fail_follow_ups(thread.id, code)
        responses[str(code)] = get(emulator, f"/{thread.id}", token_of(emulator, thread))
    emulator.revoke_permission(page.id, "instagram_manage_messages")
    responses["200"] = get(emulator, listing, token, platform="instagram")
    emulator.limits.calls_per_window = 1  # the second Page has made no call yet
    throttled = (throttled_page.access_token, f"/{throttled_page.id}")
    responses["first"] = get(emulator, throttled[1], throttled[0])
    responses["80006"] = get(emulator, f"{throttled[1]}/conversations", throttled[0])
    params = {"platform": "instagram"}
    responses["80002"] = get(emulator, f"{throttled[1]}/conversations", throttled[0], **params)
    responses["32"] = get(emulator, throttled[1], throttled[0])
    emulator.throttle_app(other_page.id, 0)
    responses["4"] = get(emulator, "/me", other_page.access_token)
    del responses["first"]
    return responses


SPANISH_TITLES = {
    "104": "Falta el token de acceso",
    "190": "Sesión no válida",
    "210": "Se necesita un token de página",
    "100/33": "El objeto no existe",
    "cursor": "Cursor no válido",
    "100": "Parámetro no válido",
    "2500": "Consulta no válida",
    "9000001": "Mensaje eliminado",
    "reduce": "Demasiados datos",
    "1": "Error desconocido",
    "2": "Error temporal del servicio",
    "17": "Límite de solicitudes del usuario",
    "613": "Límite de frecuencia superado",
    "80001": "Demasiadas llamadas a la página",
    "12345": "Error",
    "200": "Falta un permiso",
    "80006": "Demasiadas llamadas a Messenger",
    "80002": "Demasiadas llamadas a Instagram",
    "32": "Límite de solicitudes de la página",
    "4": "Límite de solicitudes de la aplicación",
}


def test_error_texts_for_people_in_the_owners_language(launch: Callable[..., Emulator]) -> None:
    english = _provoke_every_error(launch())
    spanish = _provoke_every_error(launch(faults=Faults(error_language="es")))
    assert list(spanish) == list(SPANISH_TITLES)
    titles, codes = {}, {}
    for name, response in spanish.items():
        plain = english[name]
        assert response.status_code == plain.status_code, name
        for header in ("X-Business-Use-Case-Usage", "X-App-Usage"):
            assert response.headers.get(header) == plain.headers.get(header), name
        error = error_of(response)
        titles[name] = error.pop("error_user_title")
        assert error.pop("error_user_msg")
        # The same calls in the same order: even the trace ids match.
        assert error == error_of(plain), name
        assert not {"error_user_title", "error_user_msg"} & set(error_of(plain))
        codes[name] = (error["code"], error.get("error_subcode"))
    assert titles == SPANISH_TITLES
    assert codes == {
        name: (int(name.split("/")[0]), 33 if name == "100/33" else None)
        if name[0].isdigit()
        else (100 if name == "cursor" else 1, None)
        for name in SPANISH_TITLES
    }
    deleted = error_of(spanish["9000001"])
    assert list(deleted) == [
        "message",
        "type",
        "code",
        "is_transient",
        "error_user_title",
        "error_user_msg",
        "fbtrace_id",
    ]
    assert deleted["message"] == "This Message has been deleted by the user or the business."
    assert deleted["error_user_msg"] == "El usuario o la empresa ha eliminado este mensaje."
    missing = error_of(spanish["100/33"])
    assert list(missing)[3:6] == ["error_subcode", "is_transient", "error_user_title"]
    assert error_of(spanish["12345"])["error_user_msg"] == (
        "Se ha producido un error. Espera un poco y vuelve a intentarlo."
    )
    with pytest.raises(ValueError, match="error_language"):
        Faults(error_language="fr")


def _gone(response: requests.Response) -> tuple[int, int, int, str]:
    error = error_of(response)
    return response.status_code, error["code"], error["error_subcode"], error["type"]


GONE = (400, 100, 33, "GraphMethodException")


def test_a_thread_deleted_right_after_its_listing(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "messenger")
    page = fresh.inbox.page(thread.page_id)
    assert page is not None
    folder = fresh.inbox.conversations_of(page.id, "messenger", thread.folder)
    position = folder.index(thread)
    with_attachments = next(m for m in thread.newest_first() if m.attachments)
    path, params = f"/{page.id}/conversations", {"folder": thread.folder}
    fresh.delete_after_listing(thread.id)
    # A page of the listing that does not show the thread leaves it alone.
    before = get(fresh, path, page.access_token, limit=position, **params).json()
    assert [c["id"] for c in before["data"]] == [c.id for c in folder[:position]]
    assert fresh.inbox.conversation(thread.id) is thread
    fields = "id,messages.limit(3){id}"
    shown = requests.get(before["paging"]["next"], params={"fields": fields}, timeout=10).json()
    assert shown["data"][0] == {
        "id": thread.id,
        "messages": {
            "data": [{"id": m.id} for m in thread.newest_first()[:3]],
            "paging": shown["data"][0]["messages"]["paging"],
        },
    }
    assert fresh.inbox.conversation(thread.id) is None
    nested_next = shown["data"][0]["messages"]["paging"]["next"]
    token = page.access_token
    for response in (
        get(fresh, f"/{thread.id}", token),
        get(fresh, f"/{thread.id}/messages", token),
        requests.get(nested_next, timeout=10),
        get(fresh, f"/{with_attachments.id}", token),
        get(fresh, f"/{with_attachments.id}/attachments", token),
    ):
        assert _gone(response) == GONE
    assert listed(fresh, page.id, "messenger", thread.folder) == [
        c.id for c in folder if c is not thread
    ]
    assert [c.error_code for c in fresh.calls] == [None, None, 100, 100, 100, 100, 100] + [
        None
    ] * math.ceil(len(folder) / 3)
    with pytest.raises(KeyError):
        fresh.delete_after_listing(thread.id)


def test_messages_unsent_right_after_a_page_shows_them(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "messenger")
    token, newest = token_of(fresh, thread), thread.newest_first()
    target = next(m for m in newest[1:] if m.attachments)
    position = newest.index(target)
    fresh.unsend_after_listing(target.id)
    fresh.unsend_after_listing(newest[0].id)
    first = get(fresh, f"/{thread.id}/messages", token, limit=position, fields="id").json()
    assert [m["id"] for m in first["data"]] == [m.id for m in newest[:position]]
    # The newest message was on that page: unsent; the target was not.
    assert (fresh.inbox.message(newest[0].id), fresh.inbox.message(target.id)) == (None, target)
    second = requests.get(first["paging"]["next"], timeout=10).json()
    assert [m["id"] for m in second["data"]] == [m.id for m in newest[position : 2 * position]]
    assert fresh.inbox.message(target.id) is None
    for path in (f"/{target.id}", f"/{target.id}/attachments", f"/{newest[0].id}"):
        assert _gone(get(fresh, path, token)) == GONE
    again = get(fresh, f"/{thread.id}/messages", token, limit=100, fields="id").json()
    remaining = [m.id for m in newest if m not in (newest[0], target)]
    assert [m["id"] for m in follow(again)] == remaining
    # In a listing, the nested messages count: the thread's newest one goes.
    fresh.unsend_after_listing(remaining[0])
    params = {"folder": thread.folder, "limit": 100, "fields": "id,messages.limit(1){id}"}
    listing = get(fresh, f"/{thread.page_id}/conversations", token, **params).json()
    (shown,) = [c for c in listing["data"] if c["id"] == thread.id]
    assert shown["messages"]["data"] == [{"id": remaining[0]}]
    assert fresh.inbox.message(remaining[0]) is None
    assert thread.message_count == len(newest) - 3


def test_follow_ups_of_a_thread_fail_with_the_given_error(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "messenger")
    page, token = thread.page_id, token_of(fresh, thread)
    others = [c for c in fresh.inbox.conversations if c.page_id == page and c is not thread]
    with_attachments = next(m for m in thread.newest_first() if m.attachments)
    fresh.fail_follow_ups(thread.id, 9000001)
    fresh.fail_follow_ups(others[0].id, 12345, subcode=7, error_type="GraphMethodException")
    fresh.fail_follow_ups(others[1].id, 2, message="Service unavailable", status=503)
    paths = (
        f"/{thread.id}",
        f"/{thread.id}/messages",
        f"/{with_attachments.id}",
        f"/{with_attachments.id}/attachments",
    )
    for path in paths:
        response = get(fresh, path, token, fields="id")
        error = error_of(response)
        del error["fbtrace_id"]
        assert (response.status_code, error) == (
            400,
            {
                "message": "This Message has been deleted by the user or the business.",
                "type": "OAuthException",
                "code": 9000001,
                "is_transient": False,
            },
        )
    unknown = get(fresh, f"/{others[0].id}/messages", token)
    assert (unknown.status_code, error_of(unknown)["message"]) == (
        400,
        "(#12345) An unknown error has occurred.",
    )
    assert (error_of(unknown)["error_subcode"], error_of(unknown)["type"]) == (
        7,
        "GraphMethodException",
    )
    unavailable = get(fresh, f"/{others[1].id}", token)
    assert (unavailable.status_code, error_of(unavailable)["message"]) == (
        503,
        "Service unavailable",
    )
    # Listings still list them, nested messages included.
    assert listed(fresh, page, "messenger", thread.folder).count(thread.id) == 1
    assert get(fresh, f"/{others[2].id}/messages", token).status_code == 200
    assert [c.error_code for c in fresh.calls[:6]] == [9000001] * 4 + [12345, 2]
    assert {c.error_code for c in fresh.calls[6:]} == {None}
    with pytest.raises(KeyError):
        fresh.fail_follow_ups("t_999", 2)


def test_a_listing_fails_with_the_given_error(fresh: Emulator) -> None:
    page = page_with_instagram(fresh.inbox)
    token, path = fresh.page_token(page), f"/{page}/conversations"
    fresh.fail_listing(page, "messenger", "spam", 80006, message="Too many", status=400)
    fresh.fail_listing(page, "instagram", "inbox", 1, message="An unknown error occurred")
    spam = get(fresh, path, token, folder="spam")
    error = error_of(spam)
    del error["fbtrace_id"]
    assert (spam.status_code, error) == (
        400,
        {"message": "Too many", "type": "OAuthException", "code": 80006, "is_transient": False},
    )
    # Without `folder`, the inbox: the failing Instagram listing.
    assert error_of(get(fresh, path, token, platform="instagram"))["code"] == 1
    assert get(fresh, path, token, folder="inbox").status_code == 200
    assert get(fresh, path, token, platform="instagram", folder="spam").status_code == 200
    assert [c.error_code for c in fresh.calls] == [80006, 1, None, None]


def _paging_of(attachments: dict[str, Any]) -> tuple[str, str, str | None]:
    paging = attachments["paging"]
    return paging["cursors"]["before"], paging["cursors"]["after"], paging.get("next")


def test_complete_attachment_lists_have_equal_cursors_and_next(fresh: Emulator) -> None:
    thread = biggest(fresh.inbox, "messenger")
    token = token_of(fresh, thread)
    album = next(m for m in thread.newest_first() if len(m.attachments) == 3)
    single = next(m for m in thread.newest_first() if len(m.attachments) == 1)
    for message in (album, single):
        ids = [{"id": a["id"]} for a in message.attachments]
        nested = get(fresh, f"/{message.id}", token, fields="attachments{id}").json()
        edge = get(fresh, f"/{message.id}/attachments", token, fields="id").json()
        for attachments in (nested["attachments"], edge):
            assert attachments["data"] == ids
            before, after, next_url = _paging_of(attachments)
            assert before == after
            assert next_url is not None
            assert f"/{message.id}/attachments?" in next_url
            assert requests.get(next_url, timeout=10).json()["data"] == []
    # A page that leaves attachments out has distinct cursors; the last one, equal ones.
    first = get(fresh, f"/{album.id}/attachments", token, fields="id", limit=2).json()
    assert [a["id"] for a in first["data"]] == [a["id"] for a in album.attachments[:2]]
    before, after, next_url = _paging_of(first)
    assert before != after
    assert next_url is not None
    last = requests.get(next_url, timeout=10).json()
    assert [a["id"] for a in last["data"]] == [album.attachments[2]["id"]]
    assert len(set(_paging_of(last)[:2])) == 1
    assert len(fresh.calls) == 10


def test_attachment_pages_capped_below_the_limit_asked(launch: Callable[..., Emulator]) -> None:
    fresh = launch(faults=Faults(attachments_page_cap=2))
    thread = biggest(fresh.inbox, "messenger")
    token = token_of(fresh, thread)
    album = next(m for m in thread.newest_first() if len(m.attachments) == 3)
    ids = [a["id"] for a in album.attachments]
    fields = "messages.limit(100){id,attachments.limit(25){id}}"
    messages = get(fresh, f"/{thread.id}", token, fields=fields).json()["messages"]["data"]
    (nested,) = [m["attachments"] for m in messages if m["id"] == album.id]
    edge = get(fresh, f"/{album.id}/attachments", token, fields="id", limit=25).json()
    for attachments in (nested, edge):
        assert [a["id"] for a in attachments["data"]] == ids[:2]
        before, after, next_url = _paging_of(attachments)
        assert before != after
        assert next_url is not None
        assert f"/{album.id}/attachments?" in next_url
        assert "limit=25" in next_url
        rest = requests.get(next_url, timeout=10).json()
        assert [a["id"] for a in rest["data"]] == ids[2:]
        assert len(set(_paging_of(rest)[:2])) == 1
    for cap in (0, 1):
        with pytest.raises(ValueError, match="attachments_page_cap"):
            Faults(attachments_page_cap=cap)


def test_short_attachment_pages_keep_two(launch: Callable[..., Emulator]) -> None:
    fresh = launch(faults=Faults(short_page_rate=1.0))
    thread = biggest(fresh.inbox, "messenger")
    album = next(m for m in thread.newest_first() if len(m.attachments) == 3)
    page = get(fresh, f"/{album.id}/attachments", token_of(fresh, thread), limit=3).json()
    assert [a["id"] for a in page["data"]] == [a["id"] for a in album.attachments[:2]]
    assert len(set(_paging_of(page)[:2])) == 2


def test_expired_cursors_can_answer_an_empty_page(launch: Callable[..., Emulator]) -> None:
    fresh = launch(faults=Faults(cursor_expiry="empty"))
    page, thread = fresh.inbox.pages[0], biggest(fresh.inbox, "messenger")
    token = token_of(fresh, thread)
    listing = get(fresh, f"/{page.id}/conversations", page.access_token, limit=2).json()
    messages = get(fresh, f"/{thread.id}/messages", token, limit=5).json()
    cursor = messages["paging"]["cursors"]["after"]
    fresh.expire_cursors()
    for stale in (listing["paging"]["next"], messages["paging"]["next"]):
        response = requests.get(stale, timeout=10)
        assert (response.status_code, response.json()) == (200, {"data": []})
    before = get(fresh, f"/{thread.id}/messages", token, before=cursor)
    assert before.json() == {"data": []}
    fields = f"id,messages.limit(5).after({cursor}){{id}}"
    assert get(fresh, f"/{thread.id}", token, fields=fields).json() == {
        "id": thread.id,
        "messages": {"data": []},
    }
    assert [c.status for c in fresh.calls] == [200] * 6


def test_instagram_can_ignore_the_folder(launch: Callable[..., Emulator]) -> None:
    fresh = launch(faults=Faults(instagram_ignores_folder=True))
    inbox = fresh.inbox
    page = page_with_instagram(inbox)
    token, path = fresh.page_token(page), f"/{page}/conversations"
    every = sorted(
        (c for c in inbox.conversations if (c.page_id, c.platform) == (page, "instagram")),
        key=lambda c: (c.updated_time, c.id),
        reverse=True,
    )
    assert len(every) == sum(len(inbox.conversations_of(page, "instagram", f)) for f in FOLDERS)
    for folder in FOLDERS:
        assert listed(fresh, page, "instagram", folder) == [c.id for c in every]
    for params in ({}, {"folder": "archive"}):
        first = get(fresh, path, token, platform="instagram", limit=3, **params).json()
        assert [c["id"] for c in follow(first)] == [c.id for c in every]
    # The same threads, so the same cursors whatever the folder asked.
    inbox_page = get(fresh, path, token, platform="instagram", folder="inbox", limit=3).json()
    spam_page = get(fresh, path, token, platform="instagram", folder="spam", limit=3).json()
    assert inbox_page["paging"]["cursors"] == spam_page["paging"]["cursors"]
    after = inbox_page["paging"]["cursors"]["after"]
    params = {"platform": "instagram", "folder": "spam", "limit": 3, "after": after}
    assert [c["id"] for c in get(fresh, path, token, **params).json()["data"]] == [
        c.id for c in every[3:6]
    ]
    customer = every[4].customers[0].id
    found = get(fresh, path, token, platform="instagram", folder="spam", user_id=customer).json()
    assert every[4].id in [c["id"] for c in found["data"]]
    # Messenger still honours it.
    messenger = inbox.conversations_of(page, "messenger", "other")
    assert listed(fresh, page, "messenger", "other") == [c.id for c in messenger]


def test_listing_without_folder_and_instagram_without_an_account(emu: Emulator) -> None:
    page = page_with_instagram(emu.inbox)
    token, path = emu.page_token(page), f"/{page}/conversations"
    for platform in ("messenger", "instagram"):
        # Graph's default is not documented: the emulator lists the inbox.
        first = get(emu, path, token, platform=platform, limit=3).json()
        inbox = emu.inbox.conversations_of(page, platform, "inbox")
        assert [c["id"] for c in follow(first)] == [c.id for c in inbox]
    bare = next(p for p in emu.inbox.pages if not p.instagram)
    expected = (
        400,
        100,
        f"(#100) The Page {bare.id} has no linked Instagram professional account",
    )
    for params in (
        {},
        {"folder": "archive"},
        {"folder": "spam", "limit": "-1"},
        {"user_id": "123", "fields": "id,mood"},
        {"after": "not-a-cursor!"},
    ):
        response = get(
            emu, f"/{bare.id}/conversations", bare.access_token, platform="instagram", **params
        )
        assert (
            response.status_code,
            error_of(response)["code"],
            error_of(response)["message"],
        ) == expected


def test_a_strict_sliding_window_per_page(launch: Callable[..., Emulator]) -> None:
    clock = FakeClock()
    fresh = launch(limits=Limits(calls_per_window=2, window_seconds=1.0), clock=clock)
    page, other = fresh.inbox.pages[0], fresh.inbox.pages[1]
    answers = []
    for offset in (0.0, 0.5, 0.9, 0.999, 1.0, 1.2, 1.5):
        clock.now = 1000.0 + offset
        response = get(fresh, "/me", page.access_token)
        usage = json.loads(response.headers["X-Business-Use-Case-Usage"])[page.id][0]
        answers.append(
            (response.status_code, usage["call_count"], usage["estimated_time_to_regain_access"])
        )
    # Admitted calls of the last second count, each leaving it one second after it was made;
    # the usage header counts the hour (3 of 7,200 calls), as Graph's do, and 100 % on refusal.
    assert answers == [
        (200, 1, 0),
        (200, 1, 0),
        (400, 100, 0),
        (400, 100, 0),
        (200, 1, 0),
        (400, 100, 0),
        (200, 1, 0),
    ]
    assert get(fresh, "/me", other.access_token).status_code == 200
    assert fresh.throttle_errors == {page.id: 3}


def test_refused_calls_can_count_in_the_window(launch: Callable[..., Emulator]) -> None:
    clock = FakeClock()
    limits = Limits(calls_per_window=2, window_seconds=1.0, count_refused=True)
    fresh = launch(limits=limits, clock=clock)
    page = fresh.inbox.pages[0]
    statuses = []
    for offset in (0.0, 0.5, 0.9, 1.0, 1.5, 1.9, 2.0, 2.95):
        clock.now = 1000.0 + offset
        statuses.append(get(fresh, "/me", page.access_token).status_code)
    # Refused at 0.9, 1.0 and 1.5, those calls keep the window full until 2.5.
    assert statuses == [200, 200, 400, 400, 400, 400, 400, 200]
    assert fresh.throttle_errors == {page.id: 5}


def test_the_app_request_limit_stops_every_token(launch: Callable[..., Emulator]) -> None:
    clock = FakeClock()
    fresh = launch(clock=clock)
    first, second, third = fresh.inbox.pages
    fresh.throttle_app(first.id, 10)
    assert get(fresh, "/me", second.access_token).status_code == 200
    reached = get(fresh, f"/{first.id}/conversations", first.access_token)
    error = error_of(reached)
    del error["fbtrace_id"]
    assert (reached.status_code, error) == (
        400,
        {
            "message": "(#4) Application request limit reached",
            "type": "OAuthException",
            "code": 4,
            "is_transient": False,
        },
    )
    assert json.loads(reached.headers["X-App-Usage"]) == {
        "call_count": 100,
        "total_cputime": 50,
        "total_time": 75,
    }
    assert "X-Business-Use-Case-Usage" not in reached.headers
    clock.now += 9.999
    for response in (
        get(fresh, f"/{second.id}/conversations", second.access_token),
        get(fresh, "/me/accounts", fresh.user_token),
        get(fresh, "/me", third.access_token),
    ):
        assert (response.status_code, error_of(response)["code"]) == (400, 4)
    assert error_of(get(fresh, "/me", "EAAGnope"))["code"] == 190
    clock.now += 0.001
    assert get(fresh, "/me", first.access_token).status_code == 200
    assert [c.error_code for c in fresh.calls] == [None, 4, 4, 4, 4, 190, None]
    assert fresh.throttle_errors == {first.id: 1, second.id: 1, third.id: 1, None: 1}
