"""Deterministic Pages, threads and messages that the emulator serves, and changes between runs.

Everything is drawn from `random.Random` instances seeded with strings (hashed with SHA-512 by
`random`), so the same seed, scale and number of Pages give the same inbox on every machine and
Python run. What later versions added to existing messages (CDN expiries, voice clips,
sticker-like images) comes from hashes of serial numbers, never from the random stream, so that a
seed keeps the ids, counts and random draws it had.

The emulator takes slices of the thread and message lists under its lock but renders answers
outside it: changes replace what a message or thread holds (text, people, attachments,
reactions) with new objects and never edit those in place, so a reader sees the old value or
the new one.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import itertools
import random
import time
from bisect import bisect, bisect_left, insort
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qs, urlsplit

VIRTUAL_NOW = 1780315200  # 2026-06-01T12:00:00+0000
FOLDERS = ("inbox", "other", "page_done", "spam")
# Messenger threads archived before mid-2018: in no folder, listed with `tags=action:archived`.
# Kept in the inbox's listings under this name, which no `folder` parameter reaches.
LEGACY_ARCHIVE = "archived_legacy"
LEGACY_ARCHIVE_TAG = "action:archived"
LEGACY_ARCHIVE_END = 1527811200  # 2018-06-01T00:00:00+0000
LEGACY_THREADS = 2  # per Messenger account, times the scale
INSTAGRAM_LOGIN_USERNAME = "atelier.sans.page"
INSTAGRAM_DETAIL_LIMIT = 20
SNIPPET_UNITS = 100  # Graph cuts snippets by UTF-16 code units, even inside a surrogate pair
LONE_SURROGATE = "\ud83d"  # what is left of an emoji cut in half
# 99 UTF-16 units, then an emoji that the snippet's cut splits.
CUT_SNIPPET_TEXT = (
    "Merci pour tout ! Le brunch de dimanche était parfait, les enfants ont adoré les crêpes. "
    "À bientôt 😋😋"
)

HOUR = 3600
DAY = 24 * HOUR
# Instagram stops listing Requests-folder threads inactive for this long.
STALE_REQUEST_AGE = 30 * DAY
# Messenger media URLs of old messages expire at most this long before now: a mix of dead and
# live URLs, as an archive that was read over weeks holds.
OLDEST_MESSENGER_EXPIRY = 60 * DAY

TEXTS = (
    "Hi! Are you open on Sunday? ☀️",
    "Merci beaucoup, c'était délicieux 😋",
    "¿Tienen opciones sin gluten?",
    "Can I change my order to two cafés con leche?",
    "こんにちは！明日の予約はできますか？",
    "你好，请问你们几点关门？",
    "مرحبا، هل التوصيل متاح اليوم؟",
    "שלום, אפשר להזמין שולחן לשישה?",
    "Danke! Bis morgen 👋",
    "👍",
    "Ok 🙂",
    "The parcel arrived damaged 😕 can you help?",
    "Zoë says thanks — see you at the naïve art café!",
    "Привет! Есть ли у вас скидки для студентов?",
    "Yes, 19:30 works. Table for 4 under Łukasz.",
    "I wanted to say the whole team was wonderful last night — the crème brûlée, the music, "
    "the service… we'll definitely be back for our anniversary next month! 🎉🎂",
    "Thanks for reaching out! We'll get back to you within 24 hours.",
    "Your order is ready for pickup 📦",
    "🙏🙏🙏",
    "Ça marche 👌",
    "Is the 🚲 still available in size M?",
    "Ελπίζω να είστε καλά!",
    "Can you send me the invoice as a PDF?",
    "한국어로도 답장 가능한가요?",
    'He said "no spaces\tor tabs" — weird, right?\nNew line here.',
)
NAMES = (
    "José Álvarez", "Zoë Ñúñez", "李雷", "محمد الأحمد", "Łukasz Żółć", "Ingrid Øverland",
    "Noa Ben-David", "Amélie Dubois", "Oğuz Yılmaz", "Siobhán O'Brien", "Nguyễn Văn An",
    "Björn Åberg", "Иван Петров", "Kwame Mensah", "Priya Sharma", "Jürgen Groß", "田中さくら",
)  # fmt: skip
USERNAMES = (
    "jose.alvarez_92", "zoe.nunez", "li.lei.88", "m.alahmad", "lukasz.zolc", "ingrid_ov",
    "noa.bd", "amelie.dbs", "oguz.ylmz", "siobhan.ob", "nguyen.van.an", "bjorn.aberg",
    "ivan_petrov", "kwame.m", "priya.s", "juergen.gross", "sakura.t",
)  # fmt: skip
REACTIONS = ("❤️", "😆", "😮", "😢", "😠", "👍", "🔥")
THREAD_NAMES = ("Wedding order 💍", "Équipe du samedi", "Team offsite 2026", "家族旅行")
SUBJECTS = ("Order #48213", "Réservation", "Refund request", "Catering quote")
PAGE_SPECS = (
    ("Café Olé", "cafe.ole", ["MODERATE", "MESSAGING", "ANALYZE", "ADVERTISE"]),
    ("Ünicorn Bikes 🚲", "unicorn.bikes", ["MODERATE", "MESSAGING", "ANALYZE"]),
    ("東京ラーメン Tōkyō", None, ["MESSAGING", "MODERATE"]),
)
UNMANAGED_PAGE_SPEC = ("Someone Else's Page", None, ["ANALYZE"])
EXTRA_PAGE_TASKS = ["MODERATE", "MESSAGING"]
FILE_NAMES = ("Facture n°42 – juin.pdf", "menu_2026.pdf", "見積書.xlsx")
# Messenger voice clips; as many formats as file names, so a clip draws what a file would.
AUDIO_FORMATS = (("mp4", "audio/mp4"), ("mp4", "audio/mp4"), ("mp3", "audio/mpeg"))
# One string per tag, shared by the million messages of the largest inboxes.
SOURCE_TAGS = {source: f"source:{source}" for source in ("chat", "web", "mobile")}
IMAGE_SIZES = ((1080, 1350), (1920, 1080), (512, 512))
STICKER_SIZES = ((512, 512), (480, 480), (240, 240))
VOICE_CLIP_ONE_IN = 3  # of Messenger files
STICKER_IMAGE_ONE_IN = 10  # of still images

# Meta's CDN hosts and path segments by kind of media; images by platform.
CDN_ROUTES = {
    "video": ("video.xx.fbcdn.net", "t42.3356-2"),
    "file": ("cdn.fbsbx.com", "t59.2708-21"),
    "audio": ("cdn.fbsbx.com", "t59.3654-21"),
    "sticker": ("scontent.xx.fbcdn.net", "t39.1997-6"),
}
IMAGE_ROUTES = {
    "messenger": ("scontent.xx.fbcdn.net", "t1.15752-9"),
    "instagram": ("scontent.xx.fbcdn.net", "t51.29350-15"),
}

# Message kinds: weights per platform (Instagram has no files and adds stories).
KIND_WEIGHTS = {
    "messenger": {"text": 72, "image": 6, "gif": 1, "video": 2, "file": 2, "template": 2,
                  "album": 1, "sticker": 4, "share": 2, "reply": 6, "unsupported": 1},
    "instagram": {"text": 70, "image": 6, "gif": 1, "video": 3, "template": 1, "album": 1,
                  "sticker": 1, "share": 4, "story_reply": 3, "story_mention": 2, "reply": 6,
                  "unsupported": 2},
}  # fmt: skip
# The newest messages of one thread per platform cycle through every kind, so every shape exists
# at any seed (and, on Instagram, inside the 20 messages whose details are readable).
SHOWCASE = {platform: (*weights, "album", "text") for platform, weights in KIND_WEIGHTS.items()}
ATTACHMENT_KINDS = {"image", "gif", "video", "file", "template"}
MEDIA_KINDS = ATTACHMENT_KINDS | {"album", "sticker", "share", "story_reply", "story_mention"}
TEXTLESS_KINDS = {"sticker", "unsupported", "story_mention"}
CAPTIONED_KINDS = {"image", "gif", "video", "file", "template", "album", "share"}


def iso(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(timestamp))


def digest(*parts: object, length: int = 40) -> str:
    raw = hashlib.sha512("|".join(map(str, parts)).encode()).digest()
    return base64.b64encode(raw).translate(None, b"+/=")[:length].decode()


def digits(*parts: object, length: int = 16) -> str:
    number = int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest(), 16)
    low = 10 ** (length - 1)
    return str(low + number % (9 * low))


def one_in(count: int, *parts: object) -> bool:
    """A hashed draw, so that choosing leaves the random stream untouched."""
    return int(digits(*parts)) % count == 0


def url_expiry(url: str) -> int | None:
    """The Unix time a signed CDN URL expires at (its `oe=`, hex), None if it carries none."""
    values = parse_qs(urlsplit(url).query).get("oe")
    return int(values[0], 16) if values else None


def utf16_prefix(text: str, units: int) -> str:
    """The first `units` UTF-16 code units of `text`, half an emoji included."""
    return text.encode("utf-16-le", "surrogatepass")[: 2 * units].decode(
        "utf-16-le", "surrogatepass"
    )


@dataclass(frozen=True)
class Person:
    id: str
    name: str | None = None
    username: str | None = None

    def as_json(self) -> dict[str, str]:
        if self.username is not None:
            return {"id": self.id, "username": self.username}
        return {"id": self.id, "name": self.name or "", "email": f"{self.id}@facebook.com"}

    def as_reactor(self) -> dict[str, str]:
        if self.username is not None:
            return {"id": self.id, "username": self.username}
        return {"id": self.id, "name": self.name or ""}


@dataclass(frozen=True)
class InstagramAccount:
    id: str
    username: str


@dataclass
class Page:
    """A Facebook Page, or (`login == "instagram"`) a professional Instagram account without
    one, read with an Instagram User token on the Instagram host: its `id` is the account's
    `user_id`, `app_scoped_id` the `id` its `/me` gives."""

    id: str
    name: str
    access_token: str
    tasks: list[str]
    instagram: InstagramAccount | None = None
    login: str = "facebook"
    app_scoped_id: str | None = None

    @property
    def platforms(self) -> tuple[str, ...]:
        if self.login == "instagram":
            return ("instagram",)
        return ("messenger", "instagram") if self.instagram else ("messenger",)

    def person(self, platform: str) -> Person:
        if platform == "instagram" and self.instagram:
            return Person(self.instagram.id, username=self.instagram.username)
        return Person(self.id, name=self.name)

    def graph_values(self) -> dict[str, Any]:
        if self.login == "instagram" and self.instagram:
            username = self.instagram.username
            return {"id": self.app_scoped_id, "user_id": self.id, "username": username}
        values: dict[str, Any] = {"id": self.id, "name": self.name}
        values |= {"access_token": self.access_token, "tasks": list(self.tasks)}
        if self.instagram:
            ig = self.instagram
            values["instagram_business_account"] = {"id": ig.id, "username": ig.username}
        return values


@dataclass
class User:
    id: str
    name: str
    access_token: str


# A million messages live in memory at the largest scales: slots keep each one small.
@dataclass(slots=True)
class Message:
    id: str
    conversation_id: str
    seq: int  # order of arrival in the thread: orders messages sent in the same second
    created_time: int
    sender: Person
    recipients: list[Person]
    text: str = ""
    attachments: list[dict[str, Any]] = field(default_factory=list)
    reactions: dict[str, Any] | None = None
    shares: list[dict[str, Any]] = field(default_factory=list)
    sticker: str | None = None
    story: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)
    reply_to: dict[str, Any] | None = None
    is_unsupported: bool = False

    def graph_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": self.id,
            "created_time": iso(self.created_time),
            "from": self.sender.as_json(),
            "to": {"data": [person.as_json() for person in self.recipients]},
            "message": self.text,
        }
        optional = {
            "reactions": self.reactions,
            "shares": {"data": self.shares} if self.shares else None,
            "sticker": self.sticker,
            "story": self.story,
            "tags": {"data": [{"name": tag} for tag in self.tags]} if self.tags else None,
            "reply_to": self.reply_to,
            "is_unsupported": True if self.is_unsupported else None,
        }
        return values | {key: value for key, value in optional.items() if value is not None}


message_key = attrgetter("created_time", "seq")


@dataclass
class Conversation:
    id: str
    page_id: str
    platform: str
    folder: str
    participants: list[Person]
    messages: list[Message] = field(default_factory=list)  # oldest first
    unread_count: int = 0
    can_reply: bool = True
    is_subscribed: bool = True
    name: str | None = None
    subject: str | None = None
    former_participants: list[Person] = field(default_factory=list)
    link: str | None = None
    scoped_thread_key: str | None = None
    # Set by a new message only: reactions, edits, moves and unsent messages leave it alone.
    updated_time: int = 0
    # Conversation Routing: whether the reading app owns the thread; None where Graph leaves
    # the field out.
    is_owner: bool | None = None

    @property
    def page_side(self) -> Person:
        """The Page (or its Instagram account) is always the last participant."""
        return self.participants[-1]

    @property
    def customers(self) -> list[Person]:
        return self.participants[:-1]

    @property
    def message_count(self) -> int:
        return len(self.messages)

    @property
    def snippet(self) -> str:
        return utf16_prefix(self.messages[-1].text, SNIPPET_UNITS) if self.messages else ""

    def newest_first(self) -> list[Message]:
        return self.messages[::-1]

    def next_seq(self) -> int:
        return self.messages[-1].seq + 1 if self.messages else 0

    def is_detailed(self, message: Message) -> bool:
        """Instagram only lets the 20 most recent messages of a thread be read in full."""
        if self.platform != "instagram" or len(self.messages) <= INSTAGRAM_DETAIL_LIMIT:
            return True
        return message_key(message) >= message_key(self.messages[-INSTAGRAM_DETAIL_LIMIT])

    def senders(self) -> list[Person]:
        sender_ids = {message.sender.id for message in self.messages}
        return [person for person in self.participants if person.id in sender_ids]

    def graph_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": self.id,
            "updated_time": iso(self.updated_time),
            "message_count": self.message_count,
            "unread_count": self.unread_count,
            "snippet": self.snippet,
            "can_reply": self.can_reply,
            "is_subscribed": self.is_subscribed,
            "participants": {"data": [person.as_json() for person in self.participants]},
            "senders": {"data": [person.as_json() for person in self.senders()]},
        }
        optional = {
            "link": self.link,
            "name": self.name,
            "subject": self.subject,
            "scoped_thread_key": self.scoped_thread_key,
            "is_owner": self.is_owner,
            "former_participants": {"data": [p.as_json() for p in self.former_participants]}
            if self.former_participants
            else None,
        }
        return values | {key: value for key, value in optional.items() if value is not None}


ListingKey = tuple[str, str, str]  # page id, platform, folder


@dataclass
class Inbox:
    seed: int
    scale: int
    now: int
    user: User
    pages: list[Page]
    unmanaged_page: Page
    conversations: list[Conversation] = field(default_factory=list)
    # Professional Instagram accounts without a Page (Instagram API with Instagram Login).
    instagram_accounts: list[Page] = field(default_factory=list)
    serial: int = 0  # feeds every generated id, so ids never collide, also after activity

    def __post_init__(self) -> None:
        self._pages = {
            page.id: page for page in [*self.pages, self.unmanaged_page, *self.instagram_accounts]
        }
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, Message] = {}
        # (updated_time, id) of each folder's threads, ascending: the edge lists them in
        # reverse, and a cursor's place is found by bisection.
        self._listings: dict[ListingKey, list[tuple[int, str]]] = {}
        self._threads_of: dict[str, set[str]] = {}  # person id → ids of the threads they are in

    @property
    def unmanaged_page_id(self) -> str:
        return self.unmanaged_page.id

    def page(self, page_id: str) -> Page | None:
        return self._pages.get(page_id)

    @property
    def page_conversations(self) -> list[Conversation]:
        """The threads of the managed Facebook Pages: what a user token exports (not the
        Instagram account without a Page's)."""
        managed = {page.id for page in self.pages}
        return [c for c in self.conversations if c.page_id in managed]

    def conversation(self, conversation_id: str) -> Conversation | None:
        return self._conversations.get(conversation_id)

    def message(self, message_id: str) -> Message | None:
        return self._messages.get(message_id)

    def listing(self, page_id: str, platform: str, folder: str) -> list[tuple[int, str]]:
        """The live (updated_time, id) keys of one folder, ascending; not a copy."""
        return self._listings.get((page_id, platform, folder), [])

    def conversations_of(self, page_id: str, platform: str, folder: str) -> list[Conversation]:
        """Newest `updated_time` first, ties broken by id (descending), as the edge lists them."""
        keys = self.listing(page_id, platform, folder)
        return [self._conversations[conversation_id] for _, conversation_id in reversed(keys)]

    def threads_with(self, person_id: str) -> list[Conversation]:
        return [self._conversations[i] for i in sorted(self._threads_of.get(person_id, ()))]

    @staticmethod
    def url_expiry(url: str) -> int | None:
        return url_expiry(url)

    # -- changes ---------------------------------------------------------------------------

    def add_conversation(self, conversation: Conversation) -> None:
        self.conversations.append(conversation)
        self._conversations[conversation.id] = conversation
        for message in conversation.messages:
            self._messages[message.id] = message
        for person in conversation.participants:
            self._threads_of.setdefault(person.id, set()).add(conversation.id)
        self._list(conversation)

    def append_message(self, conversation: Conversation, message: Message) -> None:
        messages = conversation.messages
        if messages and message_key(message) < message_key(messages[-1]):
            insort(messages, message, key=message_key)
        else:
            messages.append(message)
        self._messages[message.id] = message
        if message.created_time >= conversation.updated_time:
            self._relist(conversation, updated_time=message.created_time)

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def customer_writes(self, conversation_id: str, text: str, created: int) -> Message:
        """A text message from the thread's first customer to the Page, sent at `created`."""
        conversation = self._conversations[conversation_id]
        message = Message(
            id=f"m_{digest(self.seed, 'written', self.next_serial())}",
            conversation_id=conversation.id,
            seq=conversation.next_seq(),
            created_time=created,
            sender=conversation.customers[0],
            recipients=[conversation.page_side],
            text=text,
        )
        self.append_message(conversation, message)
        return message

    def move_thread(self, conversation_id: str, folder: str) -> None:
        if folder not in FOLDERS:
            raise ValueError(f"folder must be one of {', '.join(FOLDERS)}: {folder}")
        conversation = self._conversations[conversation_id]
        self._relist(conversation, folder=folder)

    def react(self, message_id: str, emoji: str, user_id: str | None = None) -> Message:
        """A person's reaction replaces the one they had on the message, as on Messenger."""
        message = self._messages[message_id]
        conversation = self._conversations[message.conversation_id]
        people = {person.id: person for person in conversation.participants}
        reactor = (people[user_id] if user_id else conversation.customers[0]).as_reactor()
        message.reactions = _with_reaction(message.reactions, emoji, reactor)
        return message

    def unreact(self, message_id: str, user_id: str | None = None) -> Message:
        """A person takes their reaction back; a message nobody reacts to any more has none."""
        message = self._messages[message_id]
        conversation = self._conversations[message.conversation_id]
        person = user_id or conversation.customers[0].id
        message.reactions = _without_reaction(message.reactions, person)
        return message

    def edit_message(self, message_id: str, text: str) -> Message:
        message = self._messages[message_id]
        message.text = text
        return message

    def set_unread(self, conversation_id: str, count: int) -> None:
        self._conversations[conversation_id].unread_count = count

    def set_can_reply(self, conversation_id: str, value: bool) -> None:
        self._conversations[conversation_id].can_reply = value

    def unsend(self, message_id: str) -> Message:
        message = self._messages.pop(message_id)
        messages = self._conversations[message.conversation_id].messages
        index = bisect_left(messages, message_key(message), key=message_key)
        assert messages[index] is message, "message keys are unique within a thread"
        del messages[index]
        return message

    def delete_thread(self, conversation_id: str) -> Conversation:
        conversation = self._conversations[conversation_id]
        self._unlist(conversation)
        del self._conversations[conversation_id]
        index = next(i for i, c in enumerate(self.conversations) if c is conversation)
        del self.conversations[index]
        for message in conversation.messages:
            del self._messages[message.id]
        for person in conversation.participants:
            self._threads_of[person.id].discard(conversation_id)
        return conversation

    def inject_surrogates(self) -> dict[str, str]:
        """Lone UTF-16 surrogates where Graph has been seen to send them, in the longest
        Messenger thread of the first Page's inbox (and its newest named attachment)."""
        page = self.pages[0]
        threads = self.conversations_of(page.id, "messenger", "inbox")
        thread = max(threads, key=lambda c: c.message_count)
        newest, older = thread.messages[-1], thread.messages[-2]
        newest.text = CUT_SNIPPET_TEXT
        older.text = f"Regarde ça {LONE_SURROGATE}"
        customer = thread.customers[0]
        self._rename(thread, customer.id, f"{customer.name} {LONE_SURROGATE}")
        named = (
            message
            for conversation in threads
            for message in reversed(conversation.messages)
            if any("name" in attachment for attachment in message.attachments)
        )
        with_file = next(named)
        with_file.attachments = [
            {**a, "name": f"{LONE_SURROGATE}{a['name']}"} if "name" in a else a
            for a in with_file.attachments
        ]
        return {
            "message_id": older.id,
            "conversation_id": thread.id,
            "participant_id": customer.id,
            "attachment_message_id": with_file.id,
        }

    def _rename(self, conversation: Conversation, person_id: str, name: str) -> None:
        renamed = Person(person_id, name=name)

        def swap(people: list[Person]) -> list[Person]:
            return [renamed if person.id == person_id else person for person in people]

        conversation.participants = swap(conversation.participants)
        conversation.former_participants = swap(conversation.former_participants)
        for message in conversation.messages:
            if message.sender.id == person_id:
                message.sender = renamed
            message.recipients = swap(message.recipients)
            if message.reactions:
                message.reactions = _renamed_reactors(message.reactions, renamed.as_reactor())

    def _relist(self, conversation: Conversation, **changes: Any) -> None:
        """Change a thread's listing key (`updated_time`, `folder`), keeping listings sorted."""
        listed = self._conversations.get(conversation.id) is conversation
        if listed:
            self._unlist(conversation)
        for name, value in changes.items():
            setattr(conversation, name, value)
        if listed:
            self._list(conversation)

    def _list(self, conversation: Conversation) -> None:
        key = (conversation.page_id, conversation.platform, conversation.folder)
        insort(self._listings.setdefault(key, []), (conversation.updated_time, conversation.id))

    def _unlist(self, conversation: Conversation) -> None:
        keys = self._listings[(conversation.page_id, conversation.platform, conversation.folder)]
        del keys[bisect_left(keys, (conversation.updated_time, conversation.id))]


def _with_reaction(
    reactions: dict[str, Any] | None, emoji: str, reactor: dict[str, str]
) -> dict[str, Any]:
    """`reactions` with `reactor`'s reaction set to `emoji`, in the shape it already had.

    The bare shape holds a single emoji: a different one replaces it, with its sole reactor.
    """
    if reactions is None:
        return {"data": [{"reaction": emoji, "users": [reactor]}]}
    if "data" not in reactions:
        if reactions["reaction"] != emoji:
            return {"reaction": emoji, "users": [reactor]}
        others = [user for user in reactions["users"] if user["id"] != reactor["id"]]
        return {"reaction": emoji, "users": [*others, reactor]}
    groups = [
        {
            "reaction": group["reaction"],
            "users": [u for u in group["users"] if u["id"] != reactor["id"]],
        }
        for group in reactions["data"]
    ]
    if not any(group["reaction"] == emoji for group in groups):
        groups.append({"reaction": emoji, "users": []})
    for group in groups:
        if group["reaction"] == emoji:
            group["users"].append(reactor)
    return {"data": [group for group in groups if group["users"]]}


def _without_reaction(reactions: dict[str, Any] | None, person: str) -> dict[str, Any] | None:
    groups = (reactions or {}).get("data", [reactions] if reactions else [])
    kept = [
        {**group, "users": [u for u in group["users"] if u["id"] != person]} for group in groups
    ]
    kept = [group for group in kept if group["users"]]
    if not kept:
        return None
    return {"data": kept} if "data" in reactions else kept[0]


def _renamed_reactors(reactions: dict[str, Any], reactor: dict[str, str]) -> dict[str, Any]:
    def swap(group: dict[str, Any]) -> dict[str, Any]:
        users = [reactor if user["id"] == reactor["id"] else user for user in group["users"]]
        return {**group, "users": users}

    if "data" in reactions:
        return {"data": [swap(group) for group in reactions["data"]]}
    return swap(reactions)


@dataclass
class Activity:
    new_message_ids: set[str] = field(default_factory=set)
    changed_conversation_ids: set[str] = field(default_factory=set)
    new_conversation_ids: set[str] = field(default_factory=set)
    reopened_conversation_id: str = ""
    long_thread_id: str = ""
    same_second_message_id: str = ""


@dataclass
class _Plan:
    page: Page
    platform: str
    folder: str
    size: int
    last_time: int
    showcase: bool = False


def generate_inbox(seed: int = 7, scale: int = 1, pages: int = 3) -> Inbox:
    """An inbox of `pages` managed Pages (every other one with an Instagram account) and one
    Page the user does not manage; `scale` multiplies the threads of each folder."""
    managed = _make_pages(seed, pages)
    user_token = "EAAG" + digest(seed, "user-token", length=80)
    account_id = str(17841400000000000 + 90)
    account = Page(
        id=account_id,
        name=INSTAGRAM_LOGIN_USERNAME,
        access_token="IGAA" + digest(seed, "instagram-user-token", length=80),
        tasks=[],
        instagram=InstagramAccount(account_id, INSTAGRAM_LOGIN_USERNAME),
        login="instagram",
        app_scoped_id=digits(seed, "instagram-app-scoped", length=17),
    )
    inbox = Inbox(
        seed=seed,
        scale=scale,
        now=VIRTUAL_NOW,
        user=User(digits(seed, "user"), "Ana Ibáñez", user_token),
        pages=managed,
        unmanaged_page=_make_page(seed, len(PAGE_SPECS) + 1, UNMANAGED_PAGE_SPEC),
        instagram_accounts=[account],
    )
    author = _Author(inbox, random.Random(f"meta-inbox:{seed}"))
    # The legacy archive draws from a stream of its own, after the others: every other thread
    # keeps the ids and contents it had before the archive existed.
    archivist = _Author(inbox, random.Random(f"meta-inbox:legacy:{seed}"))
    # So does the Instagram account without a Page.
    creator = _Author(inbox, random.Random(f"meta-inbox:instagram-login:{seed}"))
    with _collector_paused():
        for plan in author.plan_threads(scale):
            inbox.add_conversation(author.thread(plan))
        for plan in archivist.plan_legacy_threads(scale):
            inbox.add_conversation(archivist.thread(plan))
        for plan in creator.plan_account_threads(scale):
            inbox.add_conversation(creator.thread(plan))
    return inbox


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Millions of new objects, none of them garbage: the cycle collector would walk them over
    and over while they are written, then again in its young generations during the first
    answers. Paused, then handed straight to its oldest generation (freezing and unfreezing
    does that without walking them), they cost it nothing until its next full pass."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def add_activity(inbox: Inbox, seed: int = 1) -> Activity:
    """New messages and threads since the last run, as documented for `Emulator.add_activity`."""
    rng = random.Random(f"activity:{inbox.seed}:{seed}:{inbox.now}")
    start = inbox.now
    inbox.now += rng.randint(2, 12) * HOUR
    run = _ActivityRun(inbox, rng, start)
    long_thread = run.take("messenger")
    run.extend(long_thread, 150)
    run.extend(run.take("instagram-20"), 3)
    for _ in range(8):
        run.extend(run.take("any"), rng.randint(1, 5))
    reopened = run.take("page_done")
    run.extend(reopened, 1, customer_only=True)
    inbox.move_thread(reopened.id, "inbox")
    run.same_second(run.take("head"))
    for platform in ("messenger", "messenger", "instagram", "instagram"):
        run.new_thread(platform)
    run.activity.long_thread_id = long_thread.id
    run.activity.reopened_conversation_id = reopened.id
    return run.activity


def _make_pages(seed: int, count: int) -> list[Page]:
    """The first Pages keep the numbers they always had; the unmanaged Page holds the next one,
    so extra Pages start after it."""
    numbers = [*range(1, len(PAGE_SPECS) + 1), *range(len(PAGE_SPECS) + 2, count + 2)]
    pages = []
    for position, number in enumerate(numbers[:count]):
        if position < len(PAGE_SPECS):
            spec = PAGE_SPECS[position]
        else:
            username = f"atelier.{number}" if position % 2 else None
            spec = (f"Atelier Nº{number} ✂️", username, EXTRA_PAGE_TASKS)
        pages.append(_make_page(seed, number, spec))
    return pages


def _make_page(seed: int, number: int, spec: tuple[str, str | None, list[str]]) -> Page:
    name, username, tasks = spec
    page_id = str(10**15 + number)
    account = InstagramAccount(str(17841400000000000 + number), username) if username else None
    token = "EAAG" + digest(seed, "page-token", page_id, length=80)
    return Page(page_id, name, token, list(tasks), account)


def _ordinary_size(rng: random.Random) -> int:
    return rng.randint(1, 40) if rng.random() < 0.85 else rng.randint(41, 120)


def _last_time(rng: random.Random, folder: str) -> int:
    newest, oldest = {
        "inbox": (HOUR, 40 * DAY),
        "other": (HOUR, 120 * DAY),
        "page_done": (20 * DAY, 600 * DAY),
        "spam": (HOUR, 300 * DAY),
    }[folder]
    return VIRTUAL_NOW - rng.randint(newest, oldest)


def _owner(seed: int, serial: int) -> bool | None:
    """Routed threads: most owned by the app, some by another app, some without the field.
    Hashed, so that the random stream (ids, counts) is what it was before the field existed."""
    draw = int(digits(seed, "owner", serial)) % 6
    return None if draw == 0 else draw != 1


def _conversation_id(seed: int, serial: int, platform: str) -> str:
    if platform == "messenger":
        return f"t_{digits(seed, 'thread', serial)}"
    return "aWdf" + digest(seed, "thread", serial, length=64)


def _timeline(rng: random.Random, size: int, last_time: int, tie_at_end: bool) -> list[int]:
    """Message times oldest first, walking back from the newest with human-like gaps."""
    times = [last_time]
    for _ in range(size - 1):
        longest = rng.choice((10, 60, 300, 900, 3 * HOUR, 20 * HOUR, 4 * DAY))
        gap = 0 if rng.random() < 0.02 else rng.randint(1, longest)
        times.append(times[-1] - gap)
    if tie_at_end and size > 1:
        times[1] = times[0]
    return times[::-1]


class _Kinds:
    """`random.choices(kinds, weights)` with the cumulative weights summed once: the same draw."""

    def __init__(self, weights: dict[str, int]) -> None:
        self.kinds = list(weights)
        self.cumulative = list(itertools.accumulate(weights.values()))
        self.total = self.cumulative[-1] + 0.0

    def draw(self, rng: random.Random) -> str:
        index = bisect(self.cumulative, rng.random() * self.total, 0, len(self.kinds) - 1)
        return self.kinds[index]


KINDS = {platform: _Kinds(weights) for platform, weights in KIND_WEIGHTS.items()}


@dataclass(slots=True)
class _Media:
    """Signed CDN URLs for the media of one message, each with its own expiry (`oe=`)."""

    seed: int
    platform: str
    created: int
    now: int

    def url(self, serial: int, kind: str, extension: str) -> str:
        raw = hashlib.sha512(f"{self.seed}|cdn|{kind}|{serial}".encode()).digest()
        number = int.from_bytes(raw[32:], "big")
        host, segment = CDN_ROUTES.get(kind) or IMAGE_ROUTES[self.platform]
        signature = base64.urlsafe_b64encode(raw[:32]).rstrip(b"=").decode()
        ohc = base64.urlsafe_b64encode(raw[40:56]).rstrip(b"=").decode()[:17]
        expiry = self.expiry(kind, number % (30 * DAY))
        # Meta writes the hex in upper case, with the odd lower-case one.
        oe = format(expiry, "x" if number % 7 == 0 else "X")
        path = f"{number % 10**9:09d}_{number // 10**9 % 10**17:017d}_n.{extension}"
        query = (
            f"_nc_cat={number % 113 + 1}&ccb=1-7&_nc_sid={raw[36:39].hex()}&_nc_ohc={ohc}"
            f"&_nc_ht={host.removesuffix('.fbcdn.net').removesuffix('.com')}"
            f"&oh=00_{signature}&oe={oe}"
        )
        return f"https://{host}/v/{segment}/{path}?{query}"

    def expiry(self, kind: str, spread: int) -> int:
        """Story media last a day, Instagram media 4 to 7 days, Messenger media 3 to 30 days."""
        if kind == "story":
            return self.created + DAY
        if self.platform == "instagram":
            return self.created + 4 * DAY + spread % (3 * DAY)
        return max(self.created + 3 * DAY + spread % (27 * DAY), self.now - OLDEST_MESSENGER_EXPIRY)


class _Author:
    """Writes threads and messages into an inbox from one random stream."""

    def __init__(self, inbox: Inbox, rng: random.Random) -> None:
        self.inbox = inbox
        self.rng = rng
        self.seed = inbox.seed

    def plan_threads(self, scale: int) -> list[_Plan]:
        rng, plans = self.rng, []
        for page in self.inbox.pages:
            for platform in page.platforms:
                for folder in FOLDERS:
                    plans += [
                        _Plan(page, platform, folder, _ordinary_size(rng), _last_time(rng, folder))
                        for _ in range(rng.randint(3, 10) * scale)
                    ]
        # Two threads of one list updated in the same second exercise the tie-break by id.
        plans[1].last_time = plans[0].last_time
        messenger = [plan for plan in plans if plan.platform == "messenger"]
        instagram = [plan for plan in plans if plan.platform == "instagram"]
        # Showcase threads are the longest of their platform, so they are easy to find.
        showcase, long_thread = rng.sample(messenger, 2)
        showcase.size, showcase.showcase = rng.randint(281, 320), True
        long_thread.size = rng.randint(231, 270)
        big, *mids = rng.sample(instagram, 4)
        big.size, big.showcase = rng.randint(121, 150), True
        for plan in mids:
            plan.size = rng.randint(21, 80)
        return plans

    def plan_legacy_threads(self, scale: int) -> list[_Plan]:
        rng = self.rng
        return [
            _Plan(page, "messenger", LEGACY_ARCHIVE, rng.randint(1, 30), last)
            for page in self.inbox.pages
            for _ in range(LEGACY_THREADS * scale)
            if (last := LEGACY_ARCHIVE_END - rng.randint(DAY, 900 * DAY))
        ]

    def plan_account_threads(self, scale: int) -> list[_Plan]:
        rng = self.rng
        return [
            _Plan(account, "instagram", folder, _ordinary_size(rng), _last_time(rng, folder))
            for account in self.inbox.instagram_accounts
            for folder in FOLDERS
            for _ in range(rng.randint(2, 5) * scale)
        ]

    def thread(self, plan: _Plan) -> Conversation:
        conversation = self.conversation(plan.page, plan.platform, plan.folder)
        kinds = SHOWCASE[plan.platform] if plan.showcase else ()
        first_showcase = plan.size - len(kinds)
        tie_at_end = plan.showcase and plan.platform == "messenger"
        from_page = False
        for index, created in enumerate(_timeline(self.rng, plan.size, plan.last_time, tie_at_end)):
            if index and self.rng.random() < 0.65:
                from_page = not from_page
            kind = kinds[index - first_showcase] if index >= first_showcase else None
            message = self.message(conversation, created, from_page, kind)
            if plan.showcase and index in (first_showcase, first_showcase + 1):
                bare = index > first_showcase
                message.reactions = self.reactions(conversation, everyone=True, bare=bare)
            self.inbox.append_message(conversation, message)
        self.mark_unread(conversation)
        return conversation

    def conversation(self, page: Page, platform: str, folder: str) -> Conversation:
        rng, serial = self.rng, self.inbox.next_serial()
        group = rng.random() < 0.06
        customers = [self.customer(platform) for _ in range(2 if group else 1)]
        conversation = Conversation(
            id=_conversation_id(self.seed, serial, platform),
            page_id=page.id,
            platform=platform,
            folder=folder,
            participants=[*customers, page.person(platform)],
            can_reply=rng.random() < (0.7 if folder in ("page_done", "spam") else 0.95),
            is_subscribed=rng.random() < 0.95,
            name=rng.choice(THREAD_NAMES) if group else None,
            subject=rng.choice(SUBJECTS) if rng.random() < 0.05 else None,
        )
        if group or rng.random() < 0.03:
            conversation.former_participants = [self.customer(platform)]
        conversation.is_owner = _owner(self.seed, serial)
        if platform == "messenger":
            number = digits(self.seed, "link", serial, length=15)
            conversation.link = f"/{page.name.replace(' ', '')}/inbox/{number}/?section=messages"
            conversation.scoped_thread_key = f"t_{digits(self.seed, 'scoped', serial)}"
        return conversation

    def customer(self, platform: str) -> Person:
        serial = self.inbox.next_serial()
        if platform == "instagram":
            igsid = digits(self.seed, "igsid", serial, length=17)
            return Person(igsid, username=self.rng.choice(USERNAMES))
        return Person(digits(self.seed, "psid", serial), name=self.rng.choice(NAMES))

    def message(
        self, conversation: Conversation, created: int, from_page: bool, kind: str | None
    ) -> Message:
        rng, serial, platform = self.rng, self.inbox.next_serial(), conversation.platform
        sender = conversation.page_side if from_page else rng.choice(conversation.customers)
        kind = kind or KINDS[platform].draw(rng)
        prefix = "m_" if platform == "messenger" else "aWdG"
        message = Message(
            id=prefix + digest(self.seed, "message", serial, length=60),
            conversation_id=conversation.id,
            seq=conversation.next_seq(),
            created_time=created,
            sender=sender,
            recipients=[p for p in conversation.participants if p.id != sender.id],
            text=rng.choice(TEXTS),
        )
        self.apply_kind(message, kind, serial, conversation)
        if kind in TEXTLESS_KINDS or (kind in CAPTIONED_KINDS and rng.random() < 0.6):
            message.text = ""
        if platform == "messenger":
            source = rng.choice(("chat", "web") if from_page else ("mobile", "web"))
            message.tags = ["inbox", "sent" if from_page else "read", SOURCE_TAGS[source]]
        if rng.random() < 0.06:
            message.reactions = self.reactions(
                conversation, everyone=False, bare=rng.random() < 0.5
            )
        return message

    def apply_kind(
        self, message: Message, kind: str, serial: int, conversation: Conversation
    ) -> None:
        if kind == "reply" and conversation.messages:
            target = self.rng.choice(conversation.messages[-10:])
            message.reply_to = {"mid": target.id, "is_self_reply": target.sender == message.sender}
        elif kind == "unsupported":
            message.is_unsupported = True
        elif kind in MEDIA_KINDS:
            media = _Media(self.seed, conversation.platform, message.created_time, self.inbox.now)
            self.apply_media(message, kind, serial, media)

    def apply_media(self, message: Message, kind: str, serial: int, media: _Media) -> None:
        if kind in ATTACHMENT_KINDS:
            message.attachments = [self.attachment(kind, media)]
        elif kind == "album":
            message.attachments = [self.attachment("image", media) for _ in range(3)]
        elif kind == "sticker":
            message.sticker = media.url(serial, "sticker", "png")
        elif kind == "share":
            message.shares = [self.share(serial, media)]
        else:
            key = "reply_to" if kind == "story_reply" else "mention"
            story_id = digits(self.seed, "story", serial, length=17)
            story = {"link": media.url(serial, "story", "jpg"), "id": story_id}
            message.story = {key: story}

    def attachment(self, kind: str, media: _Media) -> dict[str, Any]:
        serial = self.inbox.next_serial()
        content = {
            "image": self.image,
            "gif": self.image,
            "video": self.video,
            "file": self.file,
            "template": self.template,
        }[kind](kind, serial, media)
        return {"id": digits(self.seed, "attachment", serial), **content}

    def image(self, kind: str, serial: int, media: _Media) -> dict[str, Any]:
        gif = kind == "gif"
        sticker = not gif and one_in(STICKER_IMAGE_ONE_IN, self.seed, "sticker-image", serial)
        extension = "gif" if gif else "png" if sticker else "jpg"
        width, height = self.rng.choice(STICKER_SIZES if sticker else IMAGE_SIZES)
        data = {
            "width": width,
            "height": height,
            "max_width": width,
            "max_height": height,
            "url": media.url(serial, "image", extension),
            "preview_url": media.url(serial, "preview", "jpg"),
            "image_type": 2 if gif else 1,
            "render_as_sticker": sticker or (gif and self.rng.random() < 0.5),
        }
        if gif:
            data["animated_gif_url"] = media.url(serial, "gif", "gif")
            data["animated_gif_preview_url"] = media.url(serial, "gif-preview", "gif")
        size = self.rng.randint(20_000, 4_000_000)
        return {
            "mime_type": "image/gif" if gif else "image/png" if sticker else "image/jpeg",
            "name": f"{'sticker' if sticker else 'image'}-{serial}.{extension}",
            "size": size // 40 if sticker else size,
            "image_data": data,
        }

    def video(self, kind: str, serial: int, media: _Media) -> dict[str, Any]:
        width, height = self.rng.choice(((1920, 1080), (720, 1280)))
        data = {
            "width": width,
            "height": height,
            "length": self.rng.randint(3, 180),
            "video_type": 1,
            "url": media.url(serial, kind, "mp4"),
            "preview_url": media.url(serial, "video-preview", "jpg"),
            "rotation": self.rng.choice((0, 0, 90)),
        }
        return {
            "mime_type": "video/mp4",
            "name": f"video-{serial}.mp4",
            "size": self.rng.randint(200_000, 40_000_000),
            "video_data": data,
        }

    def file(self, kind: str, serial: int, media: _Media) -> dict[str, Any]:
        """A document, or on Messenger now and then a voice clip (named as Messenger names them:
        recording time in milliseconds, then length in milliseconds)."""
        clip = media.platform == "messenger" and one_in(
            VOICE_CLIP_ONE_IN, self.seed, "voice", serial
        )
        if clip:
            extension, mime_type = self.rng.choice(AUDIO_FORMATS)
            length_ms = 1000 + int(digits(self.seed, "voice-length", serial)) % 59_000
            name = f"audioclip-{media.created * 1000 + serial % 1000}-{length_ms}.{extension}"
        else:
            name = self.rng.choice(FILE_NAMES)
            extension = name.rsplit(".", 1)[1]
            mime_type = "application/pdf" if extension == "pdf" else "application/vnd.ms-excel"
        size = self.rng.randint(20_000, 4_000_000)
        url = media.url(serial, "audio" if clip else kind, extension)
        return {"mime_type": mime_type, "name": name, "size": size, "file_url": url}

    def template(self, kind: str, serial: int, media: _Media) -> dict[str, Any]:
        cta = {"title": "Voir le menu", "type": "web_url", "url": "https://example.com/menu"}
        template = {
            "cta": cta,
            "media_url": media.url(serial, kind, "jpg"),
            "subtitle": "Fresh every morning ☕",
            "title": "Brunch — spécial dimanche",
        }
        return {"generic_template": template}

    def share(self, serial: int, media: _Media) -> dict[str, Any]:
        link = media.url(serial, "share", "jpg")
        if media.platform == "instagram":
            return {"link": link}
        share: dict[str, Any] = {
            "link": link,
            "id": digits(self.seed, "share", serial),
            "name": "Spring menu 🌸",
            "description": "Nos plats de saison, préparés chaque matin",
        }
        if self.rng.random() < 0.5:
            product = {
                "id": digits(self.seed, "product", serial),
                "retailer_id": f"SKU-{serial % 10000:04d}",
                "image_url": media.url(serial, "product", "jpg"),
                "name": "Matcha latte 抹茶",
                "price": "€4.50",
            }
            share["template"] = {"payload": {"product": {"elements": {"data": [product]}}}}
        return share

    def reactions(
        self, conversation: Conversation, *, everyone: bool, bare: bool
    ) -> dict[str, Any]:
        people = conversation.participants
        chosen = people if everyone else self.rng.sample(people, self.rng.randint(1, len(people)))
        emoji = self.rng.choice(REACTIONS)
        reaction = {"reaction": emoji, "users": [p.as_reactor() for p in chosen]}
        return reaction if bare else {"data": [reaction]}

    def mark_unread(self, conversation: Conversation) -> None:
        """Some inbox threads end with customer messages the Page has not read yet."""
        if conversation.folder != "inbox" or self.rng.random() < 0.6:
            return
        for message in reversed(conversation.messages):
            if message.sender == conversation.page_side:
                break
            conversation.unread_count += 1
            message.tags = [tag for tag in message.tags if tag != "read"]


class _ActivityRun(_Author):
    """One `add_activity` call: each thread is touched by one step only."""

    def __init__(self, inbox: Inbox, rng: random.Random, start: int) -> None:
        super().__init__(inbox, rng)
        self.start = start
        self.activity = Activity()
        # Legacy archived threads get no activity (a new message would move them to the
        # inbox), nor the Instagram account without a Page (a login of its own).
        pages = {page.id for page in inbox.pages}
        self.pool = sorted(
            (c for c in inbox.conversations if c.folder != LEGACY_ARCHIVE and c.page_id in pages),
            key=lambda c: c.id,
        )
        rng.shuffle(self.pool)

    def take(self, wanted: str) -> Conversation:
        chosen = next(c for c in self.pool if self.matches(c, wanted))
        self.pool.remove(chosen)
        return chosen

    def matches(self, conversation: Conversation, wanted: str) -> bool:
        if wanted == "head":
            # The newest thread of its folder as the last run saw it: a message in that same
            # second is one an exporter can meet on the boundary of its cursor.
            keys = self.inbox.listing(
                conversation.page_id, conversation.platform, conversation.folder
            )
            return conversation.folder != "page_done" and keys[-1][1] == conversation.id
        if wanted == "instagram-20":
            return conversation.platform == "instagram" and conversation.message_count >= 20
        if wanted == "page_done":
            return conversation.folder == "page_done"
        return wanted in ("any", conversation.platform) and conversation.folder != "page_done"

    def new_times(self, count: int) -> list[int]:
        return sorted(self.rng.randint(self.start + 1, self.inbox.now) for _ in range(count))

    def extend(
        self, conversation: Conversation, count: int, *, customer_only: bool = False
    ) -> None:
        for created in self.new_times(count):
            from_page = not customer_only and self.rng.random() < 0.45
            self.add(conversation, created, from_page)

    def same_second(self, conversation: Conversation) -> None:
        """A message in the very second of the newest one of the thread at the head of its
        folder, as if it arrived while the last run was reading: `updated_time` stays put."""
        message = self.add(conversation, conversation.updated_time, from_page=False)
        self.activity.same_second_message_id = message.id

    def new_thread(self, platform: str) -> None:
        page = self.rng.choice([page for page in self.inbox.pages if platform in page.platforms])
        conversation = self.conversation(page, platform, "inbox")
        self.inbox.add_conversation(conversation)
        self.activity.new_conversation_ids.add(conversation.id)
        for index, created in enumerate(self.new_times(self.rng.randint(1, 6))):
            self.add(conversation, created, from_page=index % 2 == 1)

    def add(self, conversation: Conversation, created: int, from_page: bool) -> Message:
        message = self.message(conversation, created, from_page, None)
        if not from_page:
            conversation.unread_count += 1
            message.tags = [tag for tag in message.tags if tag != "read"]
        self.inbox.append_message(conversation, message)
        self.activity.new_message_ids.add(message.id)
        self.activity.changed_conversation_ids.add(conversation.id)
        return message
