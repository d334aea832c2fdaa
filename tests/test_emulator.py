"""The Graph API emulator itself, exercised over real HTTP."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from meta_inbox.emulator.inbox import Conversation, Inbox, Message, add_activity, iso

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


# -- the inbox -------------------------------------------------------------------------------


def test_same_seed_gives_identical_inbox_and_json() -> None:
    first, second = generate_inbox(7, 1), generate_inbox(7, 1)
    assert json.dumps(dataclasses.asdict(first)) == json.dumps(dataclasses.asdict(second))
    assert dataclasses.asdict(generate_inbox(8, 1)) != dataclasses.asdict(first)
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
    assert 100 <= len(inbox.conversations) <= 150
    assert 4000 <= sum(c.message_count for c in inbox.conversations) <= 6000
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


def _shapes(conversation: Conversation, message: Message) -> set[str]:
    found = {key for a in message.attachments for key in a if key.endswith(("_data", "template"))}
    found |= {"file_url"} if any("file_url" in a for a in message.attachments) else set()
    found |= {"three attachments"} if len(message.attachments) == 3 else set()
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
    assert common | {"file_url"} <= seen["messenger"]
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
    cdn = [url for url in urls if "example-cdn" in url]
    assert cdn
    assert all(re.match(r"https://scontent\.example-cdn\.net/v/.+\?oh=.+&oe=", u) for u in cdn)
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
    fresh.limits.calls_per_window, fresh.limits.window_seconds = 2, 0.3
    page = fresh.inbox.pages[0]
    statuses = [get(fresh, "/me", page.access_token).status_code for _ in range(3)]
    assert statuses == [200, 200, 400]
    time.sleep(0.35)
    assert get(fresh, "/me", page.access_token).status_code == 200


def test_per_second_limit(launch: Callable[..., Emulator]) -> None:
    fresh = launch(limits=Limits(per_second=5))
    page = fresh.inbox.pages[0]
    assert get(fresh, f"/{page.id}/conversations", page.access_token).status_code == 200
    error = error_of(get(fresh, f"/{page.id}/conversations", page.access_token))
    assert error["code"] == 80006
    time.sleep(0.25)
    assert get(fresh, f"/{page.id}/conversations", page.access_token).status_code == 200


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


def test_activity_is_deterministic() -> None:
    first, second = generate_inbox(7, 1), generate_inbox(7, 1)
    assert add_activity(first, 1) == add_activity(second, 1)
    assert dataclasses.asdict(first) == dataclasses.asdict(second)
    assert add_activity(first, 1) != add_activity(second, 2)


def test_concurrent_requests_are_all_answered_and_recorded(fresh: Emulator) -> None:
    page = fresh.inbox.pages[0]

    def list_conversations(_: int) -> int:
        return get(fresh, f"/{page.id}/conversations", page.access_token).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(list_conversations, range(40))) == {200}
    assert len(fresh.calls) == 40


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
    fresh.reset_calls()
    assert fresh.calls == []
