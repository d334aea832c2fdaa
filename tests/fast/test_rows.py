"""Rows made from Graph's answers as Meta documents them (the hand-written answers in
`tests/fixtures/graph`), shaped the way the source shapes a batch: every column of every table,
value for value. Expected values are written out: they document the shapes. Only long values
(message ids, Instagram thread ids, CDN URLs) are taken from the fixture."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from dlt.common.libs.pyarrow import py_arrow_to_table_schema_columns
from support import load

from meta_inbox import rows, source
from meta_inbox.config import PII_MODES
from meta_inbox.conversations_api import FacebookPage
from meta_inbox.reader import PageRead, ThreadPart
from meta_inbox.rows import Privacy, parse_time, repaired
from meta_inbox.source import Batch, RunCounts
from meta_inbox.tables import ROWS_HASH, TABLES, Table

pytest_plugins = ["support"]

PAGE_ID = "112233445566778"
PAGE = FacebookPage(
    id=PAGE_ID,
    name="Café Olé",
    token="EAAG-unused",
    instagram_id="17841455512345678",
    instagram_username="cafe.ole",
)
# The second Page of `me_accounts.json`: no Instagram account linked.
RAMEN = FacebookPage(id="109876543210987", name="東京ラーメン Tōkyō", token="EAAG-unused")
OBSERVED_AT = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)

MESSENGER = load("messenger_listing.json")
INSTAGRAM = load("instagram_listing.json")
# A group thread with every optional field, and a thread of one message without them.
GROUP, SINGLE = MESSENGER["data"]
(IG_THREAD,) = INSTAGRAM["data"]
GROUP_ID, SINGLE_ID, IG_THREAD_ID = "t_10160918273645501", "t_10160874619283746", IG_THREAD["id"]
(
    REPLY,
    IMAGE,
    GIF,
    VIDEO,
    PDF,
    VOICE,
    TEMPLATE,
    STICKER,
    STICKER_IMAGE,
    PRODUCT_SHARE,
    POST_SHARE,
    UNSUPPORTED,
) = GROUP["messages"]["data"]
(ENQUIRY,) = SINGLE["messages"]["data"]
IG_MESSAGES = IG_THREAD["messages"]["data"]
MERCI, IG_FROM_PAGE, STORY_MENTION, STORY_REPLY, LINK_SHARE = IG_MESSAGES[:5]
WAVE = IG_MESSAGES[9]


KEEP = Privacy()


def thread_parts(
    listing: dict[str, Any], platform: str, page: FacebookPage = PAGE
) -> list[ThreadPart]:
    """Each listed thread whole, as the reader hands it over after one listing call."""
    return [
        ThreadPart(
            page=page,
            platform=platform,
            folder="inbox",
            conversation={key: value for key, value in raw.items() if key != "messages"},
            messages=raw["messages"]["data"],
            rechecked=False,
            final=True,
        )
        for raw in listing["data"]
    ]


def shaped(
    parts: list[ThreadPart], pages: Iterable[PageRead] = (), privacy: Privacy = KEEP
) -> dict[str, list[dict[str, Any]]]:
    """The rows of each table as the source makes them, in its order (the plain messages'
    first when Arrow makes them), before Arrow but for theirs: under `privacy`, without the
    shaper's fingerprints (`rows_hash`), and not yet repaired."""
    session = SimpleNamespace(privacy=privacy, counts=RunCounts())
    made, plain = source._Shaper(session)._rows(Batch(OBSERVED_AT, parts=parts, pages=list(pages)))
    tables = {}
    for table in TABLES:
        columnar = plain[table.name].to_pylist() if table.name in plain else []
        if table_rows := [tuple(row.values()) for row in columnar] + made[table.name]:
            columns = dict(zip(table.column_names, zip(*table_rows, strict=True), strict=True))
            columns.pop(ROWS_HASH, None)
            kept = privacy.applied(table, columns)
            tables[table.name] = [
                dict(zip(kept, row, strict=True)) for row in zip(*kept.values(), strict=True)
            ]
    return tables


PARTS = [*thread_parts(MESSENGER, "messenger"), *thread_parts(INSTAGRAM, "instagram")]
PAGES_READ = [PageRead(PAGE, ("messenger", "instagram")), PageRead(RAMEN, ("messenger",))]
ROWS = shaped(PARTS, PAGES_READ)


def rows_of(table: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in ROWS[table] if row["message_id"] == message["id"]]


def message_row(message: dict[str, Any]) -> dict[str, Any]:
    (row,) = [row for row in ROWS["messages"] if row["id"] == message["id"]]
    return row


def attachment(message: dict[str, Any]) -> dict[str, Any]:
    return message["attachments"]["data"][0]


def test_pages() -> None:
    assert ROWS["pages"] == [
        {
            "id": PAGE_ID,
            "name": "Café Olé",
            "instagram_id": "17841455512345678",
            "instagram_username": "cafe.ole",
            "platforms": '["messenger","instagram"]',
            "login": "facebook_page",
            "exported_at": OBSERVED_AT,
        },
        {
            "id": "109876543210987",
            "name": "東京ラーメン Tōkyō",
            "instagram_id": None,
            "instagram_username": None,
            "platforms": '["messenger"]',
            "login": "facebook_page",
            "exported_at": OBSERVED_AT,
        },
    ]


def test_conversations() -> None:
    assert ROWS["conversations"] == [
        {
            "id": GROUP_ID,
            "page_id": PAGE_ID,
            "platform": "messenger",
            "folder": "inbox",
            "updated_time": datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC),
            "message_count": 214,
            "unread_count": 2,
            "snippet": "Parfait, on passe la chercher samedi 🙏",
            "link": "/CafeOle/inbox/102938475610293/?section=messages",
            "can_reply": True,
            "is_subscribed": True,
            "name": "Équipe du samedi",
            "subject": "Catering quote",
            "scoped_thread_key": GROUP_ID,
            "participant_count": 4,  # three participants and a former one
            "is_owner": True,
            "deleted_at": None,
        },
        {
            "id": SINGLE_ID,
            "page_id": PAGE_ID,
            "platform": "messenger",
            "folder": "inbox",
            "updated_time": datetime(2026, 5, 28, 8, 3, 27, tzinfo=UTC),
            "message_count": 1,
            "unread_count": 0,
            "snippet": "Bonjour, vous livrez à Montreuil ?",
            "link": "/CafeOle/inbox/102938475610284/?section=messages",
            "can_reply": False,
            "is_subscribed": True,
            "name": None,
            "subject": None,
            "scoped_thread_key": SINGLE_ID,
            "participant_count": 2,
            "is_owner": False,
            "deleted_at": None,
        },
        {
            "id": IG_THREAD_ID,
            "page_id": PAGE_ID,
            "platform": "instagram",
            "folder": "inbox",
            "updated_time": datetime(2026, 5, 30, 17, 12, 40, tzinfo=UTC),
            "message_count": 25,
            "unread_count": 1,
            "snippet": "Merci !! 😍",
            "link": None,
            "can_reply": True,
            "is_subscribed": True,
            "name": None,
            "subject": None,
            "scoped_thread_key": None,
            "participant_count": 2,
            "is_owner": None,
            "deleted_at": None,
        },
    ]


def test_conversation_participants_merge_participants_senders_and_former_ones() -> None:
    assert ROWS["conversation_participants"] == [
        {
            "conversation_id": GROUP_ID,
            "participant_id": "6789012345678901",
            "name": "Amélie Dubois",
            "email": "6789012345678901@facebook.com",
            "username": None,
            "is_sender": True,
            "is_former": False,
            "is_page": False,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": GROUP_ID,
            "participant_id": "7712093481726354",
            "name": "Jürgen Groß",
            "email": "7712093481726354@facebook.com",
            "username": None,
            "is_sender": False,
            "is_former": False,
            "is_page": False,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": GROUP_ID,
            "participant_id": PAGE_ID,
            "name": "Café Olé",
            "email": "112233445566778@facebook.com",
            "username": None,
            "is_sender": True,
            "is_former": False,
            "is_page": True,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": GROUP_ID,
            "participant_id": "5540918273645512",
            "name": "Siobhán O'Brien",
            "email": "5540918273645512@facebook.com",
            "username": None,
            "is_sender": False,
            "is_former": True,
            "is_page": False,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": SINGLE_ID,
            "participant_id": "4928374610293847",
            "name": "Nguyễn Văn An",
            "email": "4928374610293847@facebook.com",
            "username": None,
            "is_sender": True,
            "is_former": False,
            "is_page": False,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": SINGLE_ID,
            "participant_id": PAGE_ID,
            "name": "Café Olé",
            "email": "112233445566778@facebook.com",
            "username": None,
            "is_sender": False,
            "is_former": False,
            "is_page": True,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": IG_THREAD_ID,
            "participant_id": "6453728190283746",
            "name": None,
            "email": None,
            "username": "zoe.nunez",
            "is_sender": True,
            "is_former": False,
            "is_page": False,
            "page_id": PAGE_ID,
            "platform": "instagram",
        },
        {
            "conversation_id": IG_THREAD_ID,
            "participant_id": "17841455512345678",
            "name": None,
            "email": None,
            "username": "cafe.ole",
            "is_sender": True,
            "is_former": False,
            "is_page": True,  # the Page's Instagram account
            "page_id": PAGE_ID,
            "platform": "instagram",
        },
    ]


def test_is_page_is_unknown_on_instagram_when_graph_did_not_say_which_account_is_linked() -> None:
    unlinked = FacebookPage(id=PAGE_ID, name="Café Olé", token="EAAG-unused")
    tables = shaped(thread_parts(INSTAGRAM, "instagram", unlinked))
    assert tables["conversation_participants"] == [
        {
            "conversation_id": IG_THREAD_ID,
            "participant_id": "6453728190283746",
            "name": None,
            "email": None,
            "username": "zoe.nunez",
            "is_sender": True,
            "is_former": False,
            "is_page": None,
            "page_id": PAGE_ID,
            "platform": "instagram",
        },
        {
            "conversation_id": IG_THREAD_ID,
            "participant_id": "17841455512345678",
            "name": None,
            "email": None,
            "username": "cafe.ole",
            "is_sender": True,
            "is_former": False,
            "is_page": None,
            "page_id": PAGE_ID,
            "platform": "instagram",
        },
    ]
    assert {row["is_from_page"] for row in tables["messages"] if row["details_available"]} == {None}


def test_conversation_history() -> None:
    assert ROWS["conversation_history"] == [
        {
            "conversation_id": GROUP_ID,
            "observed_state": "inbox|2|true|214",
            "observed_at": OBSERVED_AT,
            "folder": "inbox",
            "unread_count": 2,
            "can_reply": True,
            "message_count": 214,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": SINGLE_ID,
            "observed_state": "inbox|0|false|1",
            "observed_at": OBSERVED_AT,
            "folder": "inbox",
            "unread_count": 0,
            "can_reply": False,
            "message_count": 1,
            "page_id": PAGE_ID,
            "platform": "messenger",
        },
        {
            "conversation_id": IG_THREAD_ID,
            "observed_state": "inbox|1|true|25",
            "observed_at": OBSERVED_AT,
            "folder": "inbox",
            "unread_count": 1,
            "can_reply": True,
            "message_count": 25,
            "page_id": PAGE_ID,
            "platform": "instagram",
        },
    ]


def test_one_message_row_per_listed_message_in_graph_order() -> None:
    # Too few plain messages to be made by Arrow, which would make them first (`shaped`).
    listed = [*GROUP["messages"]["data"], ENQUIRY, *IG_MESSAGES]
    assert len(listed) < rows.PlainMessages.WORTH
    assert [row["id"] for row in ROWS["messages"]] == [message["id"] for message in listed]


def test_message_with_text_replying_to_another() -> None:
    assert message_row(REPLY) == {
        "id": REPLY["id"],
        "conversation_id": GROUP_ID,
        "page_id": PAGE_ID,
        "platform": "messenger",
        "created_time": datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC),
        "from_id": "6789012345678901",
        "from_name": "Amélie Dubois",
        "from_email": "6789012345678901@facebook.com",
        "from_username": None,
        "is_from_page": False,
        "message": "Parfait, on passe la chercher samedi 🙏",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": False,
        "reply_to_mid": IMAGE["id"],
        "reply_to_is_self_reply": False,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": 0,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


def test_message_from_the_page_without_text() -> None:
    assert message_row(IMAGE) == {
        "id": IMAGE["id"],
        "conversation_id": GROUP_ID,
        "page_id": PAGE_ID,
        "platform": "messenger",
        "created_time": datetime(2026, 5, 30, 17, 40, 2, tzinfo=UTC),
        "from_id": PAGE_ID,
        "from_name": "Café Olé",
        "from_email": "112233445566778@facebook.com",
        "from_username": None,
        "is_from_page": True,
        "message": "",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": False,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": 1,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


def test_message_counts_one_reaction_per_user() -> None:
    assert message_row(GIF) == {
        "id": GIF["id"],
        "conversation_id": GROUP_ID,
        "page_id": PAGE_ID,
        "platform": "messenger",
        "created_time": datetime(2026, 5, 30, 17, 38, 45, tzinfo=UTC),
        "from_id": "6789012345678901",
        "from_name": "Amélie Dubois",
        "from_email": "6789012345678901@facebook.com",
        "from_username": None,
        "is_from_page": False,
        "message": "haha",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": False,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": 1,
        "reaction_count": 3,
        "details_available": True,
        "deleted_at": None,
    }


def test_sticker_message_with_the_expiry_of_its_url() -> None:
    assert message_row(STICKER) == {
        "id": STICKER["id"],
        "conversation_id": GROUP_ID,
        "page_id": PAGE_ID,
        "platform": "messenger",
        "created_time": datetime(2026, 5, 30, 12, 10, 31, tzinfo=UTC),
        "from_id": "7712093481726354",
        "from_name": "Jürgen Groß",
        "from_email": "7712093481726354@facebook.com",
        "from_username": None,
        "is_from_page": False,
        "message": "",
        "sticker": STICKER["sticker"],
        "sticker_expires_at": datetime(2025, 6, 9, 6, 8, 0, tzinfo=UTC),  # oe=68467A40
        "is_unsupported": False,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": 0,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


def test_unsupported_message() -> None:
    assert message_row(UNSUPPORTED) == {
        "id": UNSUPPORTED["id"],
        "conversation_id": GROUP_ID,
        "page_id": PAGE_ID,
        "platform": "messenger",
        "created_time": datetime(2026, 5, 29, 19, 18, 2, tzinfo=UTC),
        "from_id": "7712093481726354",
        "from_name": "Jürgen Groß",
        "from_email": "7712093481726354@facebook.com",
        "from_username": None,
        "is_from_page": False,
        "message": "",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": True,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": 0,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


def test_instagram_message_from_the_pages_account() -> None:
    assert message_row(IG_FROM_PAGE) == {
        "id": IG_FROM_PAGE["id"],
        "conversation_id": IG_THREAD_ID,
        "page_id": PAGE_ID,
        "platform": "instagram",
        "created_time": datetime(2026, 5, 30, 17, 11, 2, tzinfo=UTC),
        "from_id": "17841455512345678",
        "from_name": None,
        "from_email": None,
        "from_username": "cafe.ole",
        "is_from_page": True,
        "message": "Avec plaisir, à samedi !",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": False,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": 0,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


def test_story_mention_without_an_expiry_in_its_link() -> None:
    assert message_row(STORY_MENTION) == {
        "id": STORY_MENTION["id"],
        "conversation_id": IG_THREAD_ID,
        "page_id": PAGE_ID,
        "platform": "instagram",
        "created_time": datetime(2026, 5, 30, 16, 58, 31, tzinfo=UTC),
        "from_id": "6453728190283746",
        "from_name": None,
        "from_email": None,
        "from_username": "zoe.nunez",
        "is_from_page": False,
        "message": "",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": False,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": "mention",
        "story_id": "18043726510293847",
        "story_link": STORY_MENTION["story"]["mention"]["link"],
        "story_link_expires_at": None,  # a lookaside link carries no `oe`
        "attachment_count": 0,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


def test_story_reply_with_the_expiry_of_its_link() -> None:
    assert message_row(STORY_REPLY) == {
        "id": STORY_REPLY["id"],
        "conversation_id": IG_THREAD_ID,
        "page_id": PAGE_ID,
        "platform": "instagram",
        "created_time": datetime(2026, 5, 30, 16, 57, 9, tzinfo=UTC),
        "from_id": "6453728190283746",
        "from_name": None,
        "from_email": None,
        "from_username": "zoe.nunez",
        "is_from_page": False,
        "message": "Trop beau ce gâteau 😋",
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": False,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": "reply_to",
        "story_id": "18051928374650192",
        "story_link": STORY_REPLY["story"]["reply_to"]["link"],
        "story_link_expires_at": datetime(2025, 5, 31, 4, 1, 49, tzinfo=UTC),  # oe=683A7F2D
        "attachment_count": 0,
        "reaction_count": 0,
        "details_available": True,
        "deleted_at": None,
    }


@pytest.mark.parametrize(
    ("index", "created_time"),
    [
        (20, datetime(2026, 5, 2, 11, 20, 9, tzinfo=UTC)),
        (21, datetime(2026, 5, 2, 11, 18, 45, tzinfo=UTC)),
        (22, datetime(2026, 4, 27, 16, 5, 30, tzinfo=UTC)),
        (23, datetime(2026, 4, 27, 16, 1, 12, tzinfo=UTC)),
        (24, datetime(2026, 4, 27, 15, 59, 58, tzinfo=UTC)),
    ],
)
def test_instagram_messages_beyond_the_newest_20_keep_only_ids_and_times(
    index: int, created_time: datetime
) -> None:
    withheld = IG_MESSAGES[index]
    assert message_row(withheld) == {
        "id": withheld["id"],
        "conversation_id": IG_THREAD_ID,
        "page_id": PAGE_ID,
        "platform": "instagram",
        "created_time": created_time,
        "from_id": None,
        "from_name": None,
        "from_email": None,
        "from_username": None,
        "is_from_page": None,
        "message": None,
        "sticker": None,
        "sticker_expires_at": None,
        "is_unsupported": None,
        "reply_to_mid": None,
        "reply_to_is_self_reply": None,
        "story_type": None,
        "story_id": None,
        "story_link": None,
        "story_link_expires_at": None,
        "attachment_count": None,
        "reaction_count": None,
        "details_available": False,
        "deleted_at": None,
    }


def test_message_attachments_of_every_kind() -> None:
    image = attachment(IMAGE)["image_data"]
    gif = attachment(GIF)["image_data"]
    video = attachment(VIDEO)["video_data"]
    pdf, voice = attachment(PDF)["file_url"], attachment(VOICE)["file_url"]
    template = attachment(TEMPLATE)["generic_template"]
    sticker = attachment(STICKER_IMAGE)["image_data"]
    assert ROWS["message_attachments"] == [
        {
            "message_id": IMAGE["id"],
            "position": 0,
            "attachment_id": "1450298374561029",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "image",
            "mime_type": "image/jpeg",
            "name": "image-1450298374561029.jpg",
            "size": 284113,
            "url": image["url"],
            "url_expires_at": datetime(2025, 6, 4, 19, 43, 47, tzinfo=UTC),  # oe=6840A1F3
            "file_url": None,
            "image_url": image["url"],
            "image_preview_url": image["preview_url"],
            "image_width": 1080,
            "image_height": 1350,
            "image_max_width": 1080,
            "image_max_height": 1350,
            "image_type": 1,
            "image_render_as_sticker": False,
            "image_animated_gif_url": None,
            "image_animated_gif_preview_url": None,
            "video_url": None,
            "video_preview_url": None,
            "video_width": None,
            "video_height": None,
            "video_length": None,
            "video_type": None,
            "video_rotation": None,
            "generic_template": None,
        },
        {
            "message_id": GIF["id"],
            "position": 0,
            "attachment_id": "1398274650192837",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "animated_image",
            "mime_type": "image/gif",
            "name": "image-1398274650192837.gif",
            "size": 1873204,
            "url": gif["url"],
            "url_expires_at": datetime(2025, 6, 5, 4, 24, 39, tzinfo=UTC),  # oe=68411C07
            "file_url": None,
            "image_url": gif["url"],
            "image_preview_url": gif["preview_url"],
            "image_width": 480,
            "image_height": 270,
            "image_max_width": 480,
            "image_max_height": 270,
            "image_type": 2,
            "image_render_as_sticker": False,
            "image_animated_gif_url": gif["animated_gif_url"],
            "image_animated_gif_preview_url": gif["animated_gif_preview_url"],
            "video_url": None,
            "video_preview_url": None,
            "video_width": None,
            "video_height": None,
            "video_length": None,
            "video_type": None,
            "video_rotation": None,
            "generic_template": None,
        },
        {
            "message_id": VIDEO["id"],
            "position": 0,
            "attachment_id": "1563748291029384",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "video",
            "mime_type": "video/mp4",
            "name": "video-1563748291029384.mp4",
            "size": 12093847,
            "url": video["url"],
            "url_expires_at": datetime(2025, 6, 9, 13, 33, 41, tzinfo=UTC),  # oe=6846E2B5
            "file_url": None,
            "image_url": None,
            "image_preview_url": None,
            "image_width": None,
            "image_height": None,
            "image_max_width": None,
            "image_max_height": None,
            "image_type": None,
            "image_render_as_sticker": None,
            "image_animated_gif_url": None,
            "image_animated_gif_preview_url": None,
            "video_url": video["url"],
            "video_preview_url": video["preview_url"],
            "video_width": 720,
            "video_height": 1280,
            "video_length": 34,
            "video_type": 1,
            "video_rotation": 0,
            "generic_template": None,
        },
        {
            "message_id": PDF["id"],
            "position": 0,
            "attachment_id": "1672839401928374",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "file",
            "mime_type": "application/pdf",
            "name": "Devis traiteur – juin.pdf",
            "size": 183920,
            "url": pdf,
            "url_expires_at": datetime(2025, 6, 8, 15, 47, 46, tzinfo=UTC),  # oe=6845B0A2&dl=1
            "file_url": pdf,
            "image_url": None,
            "image_preview_url": None,
            "image_width": None,
            "image_height": None,
            "image_max_width": None,
            "image_max_height": None,
            "image_type": None,
            "image_render_as_sticker": None,
            "image_animated_gif_url": None,
            "image_animated_gif_preview_url": None,
            "video_url": None,
            "video_preview_url": None,
            "video_width": None,
            "video_height": None,
            "video_length": None,
            "video_type": None,
            "video_rotation": None,
            "generic_template": None,
        },
        {
            "message_id": VOICE["id"],
            "position": 0,
            "attachment_id": "1784930281736452",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "audio",
            "mime_type": "audio/mp4",
            "name": "audioclip-1780156267000-7310.mp4",
            "size": 58213,
            "url": voice,
            "url_expires_at": datetime(2025, 6, 8, 4, 34, 17, tzinfo=UTC),  # oe=684512C9
            "file_url": voice,
            "image_url": None,
            "image_preview_url": None,
            "image_width": None,
            "image_height": None,
            "image_max_width": None,
            "image_max_height": None,
            "image_type": None,
            "image_render_as_sticker": None,
            "image_animated_gif_url": None,
            "image_animated_gif_preview_url": None,
            "video_url": None,
            "video_preview_url": None,
            "video_width": None,
            "video_height": None,
            "video_length": None,
            "video_type": None,
            "video_rotation": None,
            "generic_template": None,
        },
        {
            "message_id": TEMPLATE["id"],
            "position": 0,
            "attachment_id": "1827364501928374",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "template",
            "mime_type": None,
            "name": None,
            "size": None,
            "url": template["media_url"],
            "url_expires_at": datetime(2025, 6, 8, 20, 51, 45, tzinfo=UTC),  # oe=6845F7E1
            "file_url": None,
            "image_url": None,
            "image_preview_url": None,
            "image_width": None,
            "image_height": None,
            "image_max_width": None,
            "image_max_height": None,
            "image_type": None,
            "image_render_as_sticker": None,
            "image_animated_gif_url": None,
            "image_animated_gif_preview_url": None,
            "video_url": None,
            "video_preview_url": None,
            "video_width": None,
            "video_height": None,
            "video_length": None,
            "video_type": None,
            "video_rotation": None,
            "generic_template": (
                '{"cta":{"title":"Voir le menu","type":"web_url",'
                '"url":"https://www.cafe-ole.example/menu"},'
                f'"media_url":"{template["media_url"]}",'
                '"subtitle":"Tous les dimanches de 10 h à 15 h",'
                '"title":"Brunch — spécial dimanche"}'
            ),
        },
        {
            "message_id": STICKER_IMAGE["id"],
            "position": 0,
            "attachment_id": "1938475610293847",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
            "type": "sticker",
            "mime_type": "image/png",
            "name": "sticker-1938475610293847.png",
            "size": 40213,
            "url": sticker["url"],
            "url_expires_at": datetime(2025, 6, 7, 22, 48, 56, tzinfo=UTC),  # oe=6844C1D8
            "file_url": None,
            "image_url": sticker["url"],
            "image_preview_url": sticker["preview_url"],
            "image_width": 240,
            "image_height": 240,
            "image_max_width": 240,
            "image_max_height": 240,
            "image_type": 1,
            "image_render_as_sticker": True,
            "image_animated_gif_url": None,
            "image_animated_gif_preview_url": None,
            "video_url": None,
            "video_preview_url": None,
            "video_width": None,
            "video_height": None,
            "video_length": None,
            "video_type": None,
            "video_rotation": None,
            "generic_template": None,
        },
    ]


@pytest.mark.parametrize(
    ("item", "kind"),
    [
        ({"mime_type": "image/gif", "image_data": {"url": "https://x"}}, "animated_image"),
        ({"mime_type": "video/mp4", "file_url": "https://x"}, "video"),
        ({"mime_type": "image/heic", "file_url": "https://x"}, "image"),
        ({"file_url": "https://x"}, "file"),
        ({"id": "1"}, "unknown"),
    ],
)
def test_attachment_type_of_shapes_the_fixtures_lack(item: dict[str, Any], kind: str) -> None:
    assert rows.attachment_type(item) == kind


def test_message_reactions_in_both_documented_shapes() -> None:
    assert ROWS["message_reactions"] == [
        # `{"data": [...]}`: one group per emoji, each with its users
        {
            "message_id": GIF["id"],
            "position": 0,
            "reaction": "😆",
            "user_id": "7712093481726354",
            "user_name": "Jürgen Groß",
            "user_username": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": GIF["id"],
            "position": 1,
            "reaction": "😆",
            "user_id": PAGE_ID,
            "user_name": "Café Olé",
            "user_username": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": GIF["id"],
            "position": 2,
            "reaction": "❤️",
            "user_id": "6789012345678901",
            "user_name": "Amélie Dubois",
            "user_username": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        # bare `{"reaction", "users"}`, on Messenger and on Instagram
        {
            "message_id": POST_SHARE["id"],
            "position": 0,
            "reaction": "👍",
            "user_id": PAGE_ID,
            "user_name": "Café Olé",
            "user_username": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": MERCI["id"],
            "position": 0,
            "reaction": "❤️",
            "user_id": "17841455512345678",
            "user_name": None,
            "user_username": "cafe.ole",
            "conversation_id": IG_THREAD_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": WAVE["id"],
            "position": 0,
            "reaction": "😆",
            "user_id": "6453728190283746",
            "user_name": None,
            "user_username": "zoe.nunez",
            "conversation_id": IG_THREAD_ID,
            "page_id": PAGE_ID,
        },
    ]


def test_message_recipients() -> None:
    assert rows_of("message_recipients", REPLY) == [
        {
            "message_id": REPLY["id"],
            "recipient_id": "7712093481726354",
            "name": "Jürgen Groß",
            "email": "7712093481726354@facebook.com",
            "username": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": REPLY["id"],
            "recipient_id": PAGE_ID,
            "name": "Café Olé",
            "email": "112233445566778@facebook.com",
            "username": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
    ]
    assert rows_of("message_recipients", MERCI) == [
        {
            "message_id": MERCI["id"],
            "recipient_id": "17841455512345678",
            "name": None,
            "email": None,
            "username": "cafe.ole",
            "conversation_id": IG_THREAD_ID,
            "page_id": PAGE_ID,
        }
    ]
    # Two recipients for each of the 12 group messages, one for the rest; none where
    # Instagram withholds the details.
    assert len(ROWS["message_recipients"]) == 12 * 2 + 1 + 20


def test_message_tags() -> None:
    assert rows_of("message_tags", REPLY) == [
        {
            "message_id": REPLY["id"],
            "tag": "inbox",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": REPLY["id"],
            "tag": "source:chat",
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
    ]
    assert rows_of("message_tags", ENQUIRY) == [
        {"message_id": ENQUIRY["id"], "tag": tag, "conversation_id": SINGLE_ID, "page_id": PAGE_ID}
        for tag in ("inbox", "read", "source:web")
    ]
    # Instagram messages carry no tags.
    assert len(ROWS["message_tags"]) == 2 + 11 * 3 + 3


def test_message_shares_with_a_product_template_as_json_text() -> None:
    product = PRODUCT_SHARE["shares"]["data"][0]
    post = POST_SHARE["shares"]["data"][0]
    assert ROWS["message_shares"] == [
        {
            "message_id": PRODUCT_SHARE["id"],
            "position": 0,
            "share_id": "7283746501928374",
            "link": product["link"],
            "name": "Matcha latte 抹茶",
            "description": "Lait d'avoine, matcha de cérémonie",
            "template": (
                '{"payload":{"product":{"elements":{"data":[{"id":"7283746501928374",'
                '"retailer_id":"SKU-0042",'
                f'"image_url":"{product["link"]}",'
                '"name":"Matcha latte 抹茶","price":"€4.50"}]}}}}'
            ),
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": POST_SHARE["id"],
            "position": 0,
            "share_id": "112233445566778_1029384756102938",
            "link": post["link"],
            "name": "Nouveau : brunch du dimanche",
            "description": "Réservez votre table dès maintenant",
            "template": None,
            "conversation_id": GROUP_ID,
            "page_id": PAGE_ID,
        },
        {
            "message_id": LINK_SHARE["id"],
            "position": 0,
            "share_id": None,
            "link": LINK_SHARE["shares"]["data"][0]["link"],
            "name": None,
            "description": None,
            "template": None,
            "conversation_id": IG_THREAD_ID,
            "page_id": PAGE_ID,
        },
    ]


# -- privacy ---------------------------------------------------------------------------------------

BY_NAME = {table.name: table for table in TABLES}
# HMAC-SHA256 keyed with "pepper", cut to 32 hex digits, as computed outside Python:
#   printf 'Amélie Dubois' | openssl dgst -sha256 -hmac pepper
AMELIE_NAME = "a706e189eee3694acd389f24b185a568"
AMELIE_EMAIL = "ea0e255cea049cfe03b4bc335d588fe3"  # of '6789012345678901@facebook.com'
ZOE_USERNAME = "83c97e4648463b742c4f426699a6dc82"  # of 'zoe.nunez'


def under(privacy: Privacy) -> dict[str, list[dict[str, Any]]]:
    return shaped(PARTS, PAGES_READ, privacy)


def test_hash_replaces_names_emails_and_usernames_with_their_documented_hmac() -> None:
    hashed = under(Privacy("hash", "pepper"))
    assert hashed["conversation_participants"][0] == {
        "conversation_id": GROUP_ID,
        "participant_id": "6789012345678901",
        "name": AMELIE_NAME,
        "email": AMELIE_EMAIL,
        "username": None,
        "is_sender": True,
        "is_former": False,
        "is_page": False,
        "page_id": PAGE_ID,
        "platform": "messenger",
    }
    assert hashed["conversation_participants"][6]["username"] == ZOE_USERNAME
    # What people wrote is kept by `hash`: only `drop` leaves it out.
    assert hashed["messages"][0]["message"] == "Parfait, on passe la chercher samedi 🙏"
    assert hashed["conversations"] == ROWS["conversations"]


def test_hash_gives_one_value_one_hash_in_every_table() -> None:
    hashed = under(Privacy("hash", "pepper"))
    amelie = "6789012345678901"
    names = {
        ("conversation_participants", row["name"])
        for row in hashed["conversation_participants"]
        if row["participant_id"] == amelie
    }
    names |= {("messages", r["from_name"]) for r in hashed["messages"] if r["from_id"] == amelie}
    names |= {
        ("message_recipients", row["name"])
        for row in hashed["message_recipients"]
        if row["recipient_id"] == amelie
    }
    names |= {
        ("message_reactions", row["user_name"])
        for row in hashed["message_reactions"]
        if row["user_id"] == amelie
    }
    assert names == {
        ("conversation_participants", AMELIE_NAME),
        ("messages", AMELIE_NAME),
        ("message_recipients", AMELIE_NAME),
        ("message_reactions", AMELIE_NAME),
    }


def test_hash_keeps_empty_values_and_other_salts_give_other_hashes() -> None:
    privacy = Privacy("hash", "pepper")
    assert privacy.hashed(None) is None
    assert privacy.hashed("") == ""
    assert Privacy("hash", "salt").hashed("Amélie Dubois") != AMELIE_NAME


@pytest.mark.parametrize(
    ("table", "left_out"),
    [
        ("pages", set()),
        ("conversations", {"snippet"}),
        ("conversation_participants", {"name", "email", "username"}),
        ("conversation_history", set()),
        ("messages", {"from_name", "from_email", "from_username", "message"}),
        ("message_attachments", set()),
        ("message_reactions", {"user_name", "user_username"}),
        ("message_recipients", {"name", "email", "username"}),
        ("message_tags", set()),
        ("message_shares", set()),
    ],
)
def test_drop_leaves_out_personal_columns(table: str, left_out: set[str]) -> None:
    dropped = under(Privacy("drop"))[table]
    # `rows_hash` is the shaper's, not made from Graph's answer.
    assert {tuple(row) for row in dropped} == {
        tuple(n for n in BY_NAME[table].column_names if n not in {*left_out, ROWS_HASH})
    }
    kept = [{k: v for k, v in row.items() if k not in left_out} for row in ROWS[table]]
    assert dropped == kept


# -- values no destination stores ------------------------------------------------------------------

TIMES = ("created_time", "updated_time")
# Columns meta-inbox fills itself, never from Graph's text.
OWN_COLUMNS = {"platform", "folder", "type", "story_type", "observed_state"}


def tainted(value: Any, mark: str) -> Any:
    """Every text of a Graph answer with `mark` at its end (times aside: they are parsed)."""
    if isinstance(value, dict):
        return {k: v if k in TIMES else tainted(v, mark) for k, v in value.items()}
    if isinstance(value, list):
        return [tainted(item, mark) for item in value]
    return value + mark if isinstance(value, str) else value


def columns_of(table: Table, table_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        name: [row[name] for row in table_rows] for name in table.column_names if name != ROWS_HASH
    }


@pytest.mark.parametrize("mark", ["\ud83d", "\x00"], ids=["lone surrogate", "NUL"])
def test_repaired_replaces_what_no_destination_stores_in_every_text_column(mark: str) -> None:
    page = FacebookPage(
        id=PAGE_ID + mark,
        name="Café Olé" + mark,
        token="EAAG-unused",
        instagram_id="17841455512345678" + mark,
        instagram_username="cafe.ole" + mark,
        login="facebook_page" + mark,
    )
    tables = shaped(
        [
            *thread_parts(tainted(MESSENGER, mark), "messenger", page),
            *thread_parts(tainted(INSTAGRAM, mark), "instagram", page),
        ],
        [PageRead(page, ("messenger", "instagram"))],
    )
    for table in TABLES:
        columns = columns_of(table, tables[table.name])
        before = copy.deepcopy(columns)
        marked = sum(isinstance(v, str) and mark in v for values in before.values() for v in values)

        assert repaired(columns) == marked

        assert columns == {
            name: [v.replace(mark, "\ufffd") if isinstance(v, str) else v for v in values]
            for name, values in before.items()
        }
        # JSON columns are covered by the comparison above (JSON escapes NUL, not surrogates).
        text_columns = {c.name for c in table.columns if c.data_type == "text"} - OWN_COLUMNS
        repaired_columns = {
            name for name in text_columns if any("\ufffd" in str(v) for v in columns[name])
        }
        assert repaired_columns == text_columns, table.name


def test_repaired_leaves_storable_text_alone() -> None:
    columns = {"message": ["Merci !! 😍", "", None, 3], "name": ["Nguyễn Văn An"]}
    assert repaired(columns) == 0
    assert columns == {"message": ["Merci !! 😍", "", None, 3], "name": ["Nguyễn Văn An"]}


@pytest.mark.parametrize("mark", ["\ud83d", "\x00"], ids=["lone surrogate", "NUL"])
def test_the_source_loads_repaired_values_and_counts_each(mark: str) -> None:
    """What the shaper hands to dlt: the rows above, each value holding `mark` repaired."""
    parts = [
        *thread_parts(tainted(MESSENGER, mark), "messenger"),
        *thread_parts(tainted(INSTAGRAM, mark), "instagram"),
    ]
    session = SimpleNamespace(privacy=Privacy(), counts=RunCounts())

    arrow = source._Shaper(session)._shaped(Batch(OBSERVED_AT, parts=parts))

    made = shaped(parts)
    assert set(arrow) == set(made)
    for name, table_rows in made.items():
        # Messages the destination does not hold get no fingerprint.
        own = {ROWS_HASH: None} if name == "messages" else {}
        assert arrow[name].to_pylist() == [
            {k: v.replace(mark, "\ufffd") if isinstance(v, str) else v for k, v in row.items()}
            | own
            for row in table_rows
        ], name
    marked = sum(
        isinstance(value, str) and mark in value
        for table_rows in made.values()
        for row in table_rows
        for value in row.values()
    )
    assert session.counts.repaired_values == marked
    # JSON text escapes NUL but not lone surrogates: two JSON values hold the latter only.
    assert marked == (655 if mark == "\x00" else 657)
    # Both JSON values holding the mark are repaired too: NUL as they are made (uncounted),
    # since PostgreSQL's jsonb refuses its escape, which JSON writes.
    json_values = [
        value
        for table in TABLES
        for column in table.columns
        if column.data_type == "json" and table.name in arrow
        for value in arrow[table.name].column(column.name).to_pylist()
        if value is not None
    ]
    assert all("\\u0000" not in value for value in json_values)
    assert sum("\ufffd" in value for value in json_values) == 2


# -- times -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("local_time_far_from_utc")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-05-30T17:42:11+0000", datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC)),
        ("2026-05-30T19:42:11+0200", datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC)),
        ("2026-05-30T17:42:11", datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC)),
        (1780162931, datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC)),
        ("1780162931", datetime(2026, 5, 30, 17, 42, 11, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_parse_time(value: Any, expected: datetime | None) -> None:
    parsed = parse_time(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo == UTC


# -- messages read again -----------------------------------------------------------------------


def test_a_message_read_again_as_stored_is_not_loaded_again_nor_are_its_children() -> None:
    parts = thread_parts(MESSENGER, "messenger")
    first, second, third = (str(m["id"]) for m in parts[0].messages[:3])
    session = SimpleNamespace(privacy=Privacy(), counts=RunCounts())

    # Held without a fingerprint (loaded once), or with one: each gets its own.
    loaded = source._Shaper(session)._shaped(
        Batch(OBSERVED_AT, parts=parts, stored={first: None, second: None, third: 12})
    )
    stored = {row["id"]: row[ROWS_HASH] for row in loaded["messages"].to_pylist()}
    assert all(isinstance(stored[i], int) for i in (first, second, third))
    assert len({stored[first], stored[second], stored[third]}) == 3
    assert {i: h for i, h in stored.items() if i not in {first, second, third}} == dict.fromkeys(
        set(stored) - {first, second, third}
    )

    # Read again the same, with those fingerprints: left out with every row of theirs.
    session = SimpleNamespace(privacy=Privacy(), counts=RunCounts())
    again = source._Shaper(session)._shaped(
        Batch(
            OBSERVED_AT,
            parts=thread_parts(MESSENGER, "messenger"),
            stored={first: stored[first], second: stored[second], third: 12},
        )
    )
    assert session.counts.unchanged_messages == 2
    for name, table_rows in loaded.items():
        kept = [
            row for row in table_rows.to_pylist() if _message_of(name, row) not in {first, second}
        ]
        assert (again[name].to_pylist() if name in again else []) == kept, name
    assert third in {row["id"] for row in again["messages"].to_pylist()}


def _message_of(table: str, row: dict[str, Any]) -> str | None:
    return row["id"] if table == "messages" else row.get("message_id")


def test_a_changed_reaction_changes_the_fingerprint() -> None:
    parts = thread_parts(MESSENGER, "messenger")
    reacted = next(m for m in parts[0].messages if m.get("reactions"))
    session = SimpleNamespace(privacy=Privacy(), counts=RunCounts())
    batch = Batch(OBSERVED_AT, parts=parts, stored={str(reacted["id"]): None})
    before = source._Shaper(session)._shaped(batch)["messages"].to_pylist()
    digest = next(r[ROWS_HASH] for r in before if r["id"] == str(reacted["id"]))

    changed = copy.deepcopy(MESSENGER)
    for raw in changed["data"]:
        for message in raw["messages"]["data"]:
            if message["id"] == reacted["id"]:
                message.pop("reactions")
    batch = Batch(
        OBSERVED_AT,
        parts=thread_parts(changed, "messenger"),
        stored={str(reacted["id"]): digest},
    )
    after = source._Shaper(session)._shaped(batch)

    row = next(r for r in after["messages"].to_pylist() if r["id"] == str(reacted["id"]))
    assert row["reaction_count"] == 0
    assert row[ROWS_HASH] not in {None, digest}
    assert session.counts.unchanged_messages == 0


def test_the_fingerprint_changes_with_the_privacy_setting() -> None:
    parts = thread_parts(MESSENGER, "messenger")
    message = str(parts[0].messages[0]["id"])

    def shaped_with(privacy: Privacy, stored: int | None) -> tuple[list[dict[str, Any]], int]:
        session = SimpleNamespace(privacy=privacy, counts=RunCounts())
        batch = Batch(OBSERVED_AT, parts=thread_parts(MESSENGER, "messenger"))
        batch.stored = {message: stored}
        loaded = source._Shaper(session)._shaped(batch).get("messages")
        return loaded.to_pylist() if loaded else [], session.counts.unchanged_messages

    first, _ = shaped_with(Privacy("hash", "salt"), None)
    digest = next(row[ROWS_HASH] for row in first if row["id"] == message)

    assert shaped_with(Privacy("hash", "salt"), digest)[1] == 1
    assert shaped_with(Privacy("hash", "another salt"), digest)[1] == 0
    assert shaped_with(Privacy("drop"), digest)[1] == 0


@pytest.mark.parametrize("pii", PII_MODES)
def test_arrow_columns_differ_from_their_hints_only_in_json(pii: str) -> None:
    """Every table reaches dlt as Arrow whose types, as dlt reads them, are those of the table's
    hints but for its `json` columns (JSON travels as text): dlt's warning of differing hints is
    silenced for the source's tables, so this is where a difference would show."""
    for table in source._LOADED:
        from_arrow = py_arrow_to_table_schema_columns(table.arrow_schema(pii))
        hinted = table.dlt_columns(pii)
        assert list(from_arrow) == list(hinted)
        differing = {
            (name, hint, value, hinted[name][hint])
            for name, column in from_arrow.items()
            for hint, value in column.items()
            if hinted[name].get(hint) not in (None, value)
        }
        json = {c.name for c in table.stored_columns(pii) if c.data_type == "json"}
        assert differing == {(name, "data_type", "text", "json") for name in json}, table.name


def _odd_plain_messages() -> list[dict[str, Any]]:
    """Plain messages (`rows.PLAIN_KEYS`) in every shape Graph documents or might send."""
    page, them = {"id": PAGE_ID, "name": "Café Olé"}, {"id": "555", "name": "Ana", "email": "a@x"}
    return [
        {"id": "m_1", "created_time": "2026-05-01T10:00:00+0000", "from": them, "message": "hi",
         "to": {"data": [page]}, "tags": {"data": [{"name": "inbox"}, {"name": "read"}]}},
        # A tag listed twice, one empty and one without a name: each named tag once, in order.
        {"id": "m_2", "created_time": "2026-05-01T10:01:00+0000", "from": page, "message": "",
         "to": {"data": [them, {"name": "no id"}]},
         "tags": {"data": [{"name": "sent"}, {"name": ""}, {"name": "sent"}, {"name": None},
                           {"name": "inbox"}]}},
        {"id": "m_3", "created_time": "2026-05-01T10:02:00+0000", "from": {}, "message": None,
         "reply_to": {"mid": "m_1", "is_self_reply": False}, "is_unsupported": True},
        {"id": "m_4", "created_time": "2026-05-01T10:03:00+0000", "from": them,
         "reply_to": {"mid": "m_2"}, "is_unsupported": False, "to": {}, "tags": {"data": []}},
        {"id": "m_5", "created_time": "2026-05-01T10:04:00+0000"},  # Instagram, past 20
        {"id": "m_6", "created_time": "2026-05-01T10:05:00+0000", "from": them,
         "message": "naïve 🍜 \x00 text"},
        {"id": "m_7", "created_time": "2026-05-01T10:06:00+0000", "from": {"id": None}},
        # Not documented: a null recipient, a tag without its name (left out either way).
        {"id": "m_8", "created_time": "2026-05-01T10:07:00+0000", "from": them,
         "to": {"data": [page, None]}, "tags": {"data": [{"name": "inbox"}, {}]}},
    ]  # fmt: skip


def _shaped_tables(
    parts: list[ThreadPart], privacy: Privacy, plain_keys: frozenset[str], monkeypatch: Any
) -> tuple[dict[str, list[dict[str, Any]]], RunCounts]:
    """What the shaper makes of `parts`, each table's rows in the order it made them, with the
    run's counts; messages with keys in `plain_keys` taken as plain."""
    monkeypatch.setattr(rows, "PLAIN_KEYS", plain_keys)
    # However few: these batches are small.
    monkeypatch.setattr(rows.PlainMessages, "WORTH", 1)
    session = SimpleNamespace(privacy=privacy, counts=RunCounts())
    made = source._Shaper(session)._shaped(
        Batch(OBSERVED_AT, parts=parts, stored={"m_4": 77, "m_6": None})
    )
    return {name: table.to_pylist() for name, table in made.items()}, session.counts


def _in_one_order(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: sorted(table_rows, key=lambda row: repr(sorted(row.items())))
        for name, table_rows in tables.items()
    }


PLAIN_KEYS = rows.PLAIN_KEYS  # as the module has it, whatever a test patches
ODD_PARTS = [
    ThreadPart(
        page=page,
        platform=platform,
        folder="inbox",
        conversation={"id": f"t_{number}", "updated_time": "2026-05-01T10:06:00+0000"},
        # The first thread's ids as they are (`_shaped_tables` holds two of them as stored).
        messages=[m | {"id": f"{m['id']}{suffix}"} for m in _odd_plain_messages()],
        rechecked=False,
        final=True,
    )
    for number, (page, platform, suffix) in enumerate(
        (
            (PAGE, "messenger", ""),
            (PAGE, "instagram", "_ig"),
            (RAMEN, "instagram", "_ramen"),
            # An Instagram id as a number: no text sender id equals it.
            (dataclasses.replace(PAGE, instagram_id=17841455512345678), "instagram", "_number"),
        )
    )
]


@pytest.mark.parametrize("mode", PII_MODES)
@pytest.mark.parametrize(
    "parts",
    [
        pytest.param(PARTS, id="fixtures"),
        pytest.param(ODD_PARTS, id="odd shapes"),
    ],
)
def test_plain_messages_make_the_rows_made_one_by_one(
    parts: list[ThreadPart], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    privacy = Privacy(mode, "salt")
    columnar, counted = _shaped_tables(parts, privacy, PLAIN_KEYS, monkeypatch)
    one_by_one, counted_so = _shaped_tables(parts, privacy, frozenset(), monkeypatch)
    assert _in_one_order(columnar) == _in_one_order(one_by_one)
    # Arrow took them: the comparison is not of one path with itself.
    plain = rows.PlainMessages()
    for part in parts:
        for message, created in zip(part.messages, part.created, strict=True):
            if message.keys() <= PLAIN_KEYS:
                plain.add(source._context(part), str(message["id"]), message, created, None)
    assert plain.tables()["messages"].num_rows == len(plain) > 0
    assert (counted.rows, counted.repaired_values) == (counted_so.rows, counted_so.repaired_values)
    assert columnar["messages"]


def test_a_message_listed_twice_in_a_batch_keeps_the_order_of_its_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The merge keeps a key's last row: Graph's second listing, changed since the first (a
    # reaction taken back, so that only the second is plain).
    first, again = copy.deepcopy(ODD_PARTS[0]), copy.deepcopy(ODD_PARTS[0])
    first.messages[0]["reactions"] = {"data": [{"reaction": "👍", "users": [{"id": "555"}]}]}
    again.messages[0]["message"] = "hi, edited"
    parts = [first, again]
    columnar, _ = _shaped_tables(parts, KEEP, PLAIN_KEYS, monkeypatch)
    assert columnar == _shaped_tables(parts, KEEP, frozenset(), monkeypatch)[0]
    texts = [row["message"] for row in columnar["messages"] if row["id"] == "m_1"]
    assert texts == ["hi", "hi, edited"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", [{"id": "555"}]),  # bare, as `listed` takes it
        ("tags", [{"name": "inbox"}]),
        ("message", "cut \ud83c emoji"),  # a lone surrogate: repaired
        ("is_unsupported", 1),
    ],
)
def test_a_plain_message_arrow_refuses_is_made_one_by_one(
    field: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = copy.deepcopy(ODD_PARTS[:1])
    parts[0].messages[0][field] = value
    expected = _shaped_tables(parts, KEEP, frozenset(), monkeypatch)
    assert _shaped_tables(parts, KEEP, PLAIN_KEYS, monkeypatch) == expected
