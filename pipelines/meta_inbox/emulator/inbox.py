"""Deterministic Pages, threads and messages that the emulator serves, and activity between runs.

Everything is drawn from `random.Random` instances seeded with strings (hashed with SHA-512 by
`random`), so the same seed and scale give the same inbox on every machine and Python run.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

VIRTUAL_NOW = 1780315200  # 2026-06-01T12:00:00+0000
FOLDERS = ("inbox", "other", "page_done", "spam")
INSTAGRAM_DETAIL_LIMIT = 20
CDN = "https://scontent.example-cdn.net/v"

HOUR = 3600
DAY = 24 * HOUR

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
TEXTLESS_KINDS = {"sticker", "unsupported", "story_mention"}
CAPTIONED_KINDS = {"image", "gif", "video", "file", "template", "album", "share"}


def iso(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(timestamp))


def digest(*parts: object, length: int = 40) -> str:
    raw = hashlib.sha512("|".join(map(str, parts)).encode()).digest()
    letters = base64.b64encode(raw).decode().translate(str.maketrans("", "", "+/="))
    return letters[:length]


def digits(*parts: object, length: int = 16) -> str:
    number = int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest(), 16)
    low = 10 ** (length - 1)
    return str(low + number % (9 * low))


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
    id: str
    name: str
    access_token: str
    tasks: list[str]
    instagram: InstagramAccount | None = None

    @property
    def platforms(self) -> tuple[str, ...]:
        return ("messenger", "instagram") if self.instagram else ("messenger",)

    def person(self, platform: str) -> Person:
        if platform == "instagram" and self.instagram:
            return Person(self.instagram.id, username=self.instagram.username)
        return Person(self.id, name=self.name)

    def graph_values(self) -> dict[str, Any]:
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


@dataclass
class Message:
    id: str
    conversation_id: str
    seq: int  # position in the thread, oldest first: orders messages sent in the same second
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

    @property
    def page_side(self) -> Person:
        """The Page (or its Instagram account) is always the last participant."""
        return self.participants[-1]

    @property
    def customers(self) -> list[Person]:
        return self.participants[:-1]

    @property
    def updated_time(self) -> int:
        return self.messages[-1].created_time

    @property
    def message_count(self) -> int:
        return len(self.messages)

    @property
    def snippet(self) -> str:
        return self.messages[-1].text[:100]

    def newest_first(self) -> list[Message]:
        return self.messages[::-1]

    def is_detailed(self, message: Message) -> bool:
        """Instagram only lets the 20 most recent messages of a thread be read in full."""
        if self.platform != "instagram":
            return True
        return message.seq >= len(self.messages) - INSTAGRAM_DETAIL_LIMIT

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
            "former_participants": {"data": [p.as_json() for p in self.former_participants]}
            if self.former_participants
            else None,
        }
        return values | {key: value for key, value in optional.items() if value is not None}


@dataclass
class Inbox:
    seed: int
    scale: int
    now: int
    user: User
    pages: list[Page]
    unmanaged_page: Page
    conversations: list[Conversation] = field(default_factory=list)
    serial: int = 0  # feeds every generated id, so ids never collide, also after activity

    def __post_init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, Message] = {}

    @property
    def unmanaged_page_id(self) -> str:
        return self.unmanaged_page.id

    def page(self, page_id: str) -> Page | None:
        return next((p for p in [*self.pages, self.unmanaged_page] if p.id == page_id), None)

    def conversation(self, conversation_id: str) -> Conversation | None:
        return self._conversations.get(conversation_id)

    def message(self, message_id: str) -> Message | None:
        return self._messages.get(message_id)

    def conversations_of(self, page_id: str, platform: str, folder: str) -> list[Conversation]:
        """Newest `updated_time` first, ties broken by id (descending), as the edge lists them."""
        found = [
            c
            for c in self.conversations
            if (c.page_id, c.platform, c.folder) == (page_id, platform, folder)
        ]
        return sorted(found, key=lambda c: (c.updated_time, c.id), reverse=True)

    def add_conversation(self, conversation: Conversation) -> None:
        self.conversations.append(conversation)
        self._conversations[conversation.id] = conversation
        for message in conversation.messages:
            self._messages[message.id] = message

    def append_message(self, conversation: Conversation, message: Message) -> None:
        conversation.messages.append(message)
        self._messages[message.id] = message

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial


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


def generate_inbox(seed: int = 7, scale: int = 1) -> Inbox:
    pages = _make_pages(seed)
    user_token = "EAAG" + digest(seed, "user-token", length=80)
    inbox = Inbox(
        seed=seed,
        scale=scale,
        now=VIRTUAL_NOW,
        user=User(digits(seed, "user"), "Ana Ibáñez", user_token),
        pages=pages[:3],
        unmanaged_page=pages[3],
    )
    author = _Author(inbox, random.Random(f"meta-inbox:{seed}"))
    for plan in author.plan_threads(scale):
        inbox.add_conversation(author.thread(plan))
    return inbox


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
    reopened.folder = "inbox"
    run.same_second(run.take("head"))
    for platform in ("messenger", "messenger", "instagram", "instagram"):
        run.new_thread(platform)
    run.activity.long_thread_id = long_thread.id
    run.activity.reopened_conversation_id = reopened.id
    return run.activity


def _make_pages(seed: int) -> list[Page]:
    specs = (
        ("Café Olé", "cafe.ole", ["MODERATE", "MESSAGING", "ANALYZE", "ADVERTISE"]),
        ("Ünicorn Bikes 🚲", "unicorn.bikes", ["MODERATE", "MESSAGING", "ANALYZE"]),
        ("東京ラーメン Tōkyō", None, ["MESSAGING", "MODERATE"]),
        ("Someone Else's Page", None, ["ANALYZE"]),
    )
    pages = []
    for number, (name, username, tasks) in enumerate(specs, start=1):
        page_id = f"10000000000000{number:02d}"
        account = InstagramAccount(f"178414000000000{number:02d}", username) if username else None
        token = "EAAG" + digest(seed, "page-token", page_id, length=80)
        pages.append(Page(page_id, name, token, tasks, account))
    return pages


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

    def cdn(self, serial: int, kind: str, extension: str) -> str:
        seed = self.seed
        path = f"t1.15752-9/{digits(seed, kind, serial, length=9)}_{digits(seed, kind, -serial)}_n"
        expiry = format(VIRTUAL_NOW + 30 * DAY, "x")
        return f"{CDN}/{path}.{extension}?oh=00_{digest(seed, 'oh', kind, serial)}&oe={expiry}"

    def message(
        self, conversation: Conversation, created: int, from_page: bool, kind: str | None
    ) -> Message:
        rng, serial, platform = self.rng, self.inbox.next_serial(), conversation.platform
        sender = conversation.page_side if from_page else rng.choice(conversation.customers)
        weights = KIND_WEIGHTS[platform]
        kind = kind or rng.choices(list(weights), list(weights.values()))[0]
        prefix = "m_" if platform == "messenger" else "aWdG"
        message = Message(
            id=prefix + digest(self.seed, "message", serial, length=60),
            conversation_id=conversation.id,
            seq=len(conversation.messages),
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
            message.tags = ["inbox", "sent" if from_page else "read", f"source:{source}"]
        if rng.random() < 0.06:
            message.reactions = self.reactions(
                conversation, everyone=False, bare=rng.random() < 0.5
            )
        return message

    def apply_kind(
        self, message: Message, kind: str, serial: int, conversation: Conversation
    ) -> None:
        if kind in ATTACHMENT_KINDS:
            message.attachments = [self.attachment(kind)]
        elif kind == "album":
            message.attachments = [self.attachment("image") for _ in range(3)]
        elif kind == "sticker":
            message.sticker = self.cdn(serial, "sticker", "png")
        elif kind == "share":
            message.shares = [self.share(serial, conversation.platform)]
        elif kind in ("story_reply", "story_mention"):
            key = "reply_to" if kind == "story_reply" else "mention"
            story_id = digits(self.seed, "story", serial, length=17)
            story = {"link": self.cdn(serial, "story", "jpg"), "id": story_id}
            message.story = {key: story}
        elif kind == "reply" and conversation.messages:
            target = self.rng.choice(conversation.messages[-10:])
            message.reply_to = {"mid": target.id, "is_self_reply": target.sender == message.sender}
        elif kind == "unsupported":
            message.is_unsupported = True

    def attachment(self, kind: str) -> dict[str, Any]:
        serial = self.inbox.next_serial()
        content = {
            "image": self.image,
            "gif": self.image,
            "video": self.video,
            "file": self.file,
            "template": self.template,
        }[kind](kind, serial)
        return {"id": digits(self.seed, "attachment", serial), **content}

    def image(self, kind: str, serial: int) -> dict[str, Any]:
        gif = kind == "gif"
        extension = "gif" if gif else "jpg"
        width, height = self.rng.choice(((1080, 1350), (1920, 1080), (512, 512)))
        data = {
            "width": width,
            "height": height,
            "max_width": width,
            "max_height": height,
            "url": self.cdn(serial, "image", extension),
            "preview_url": self.cdn(serial, "preview", "jpg"),
            "image_type": 2 if gif else 1,
            "render_as_sticker": gif and self.rng.random() < 0.5,
        }
        if gif:
            data["animated_gif_url"] = self.cdn(serial, "gif", "gif")
            data["animated_gif_preview_url"] = self.cdn(serial, "gif-preview", "gif")
        return {
            "mime_type": "image/gif" if gif else "image/jpeg",
            "name": f"image-{serial}.{extension}",
            "size": self.rng.randint(20_000, 4_000_000),
            "image_data": data,
        }

    def video(self, kind: str, serial: int) -> dict[str, Any]:
        width, height = self.rng.choice(((1920, 1080), (720, 1280)))
        data = {
            "width": width,
            "height": height,
            "length": self.rng.randint(3, 180),
            "video_type": 1,
            "url": self.cdn(serial, kind, "mp4"),
            "preview_url": self.cdn(serial, "video-preview", "jpg"),
            "rotation": self.rng.choice((0, 0, 90)),
        }
        return {
            "mime_type": "video/mp4",
            "name": f"video-{serial}.mp4",
            "size": self.rng.randint(200_000, 40_000_000),
            "video_data": data,
        }

    def file(self, kind: str, serial: int) -> dict[str, Any]:
        name = self.rng.choice(("Facture n°42 – juin.pdf", "menu_2026.pdf", "見積書.xlsx"))
        extension = name.rsplit(".", 1)[1]
        mime_type = "application/pdf" if extension == "pdf" else "application/vnd.ms-excel"
        size = self.rng.randint(20_000, 4_000_000)
        url = self.cdn(serial, kind, extension)
        return {"mime_type": mime_type, "name": name, "size": size, "file_url": url}

    def template(self, kind: str, serial: int) -> dict[str, Any]:
        cta = {"title": "Voir le menu", "type": "web_url", "url": "https://example.com/menu"}
        template = {
            "cta": cta,
            "media_url": self.cdn(serial, kind, "jpg"),
            "subtitle": "Fresh every morning ☕",
            "title": "Brunch — spécial dimanche",
        }
        return {"generic_template": template}

    def share(self, serial: int, platform: str) -> dict[str, Any]:
        link = self.cdn(serial, "share", "jpg")
        if platform == "instagram":
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
                "image_url": self.cdn(serial, "product", "jpg"),
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
        self.pool = sorted(inbox.conversations, key=lambda c: c.id)
        rng.shuffle(self.pool)

    def take(self, wanted: str) -> Conversation:
        chosen = next(c for c in self.pool if self.matches(c, wanted))
        self.pool.remove(chosen)
        return chosen

    def matches(self, conversation: Conversation, wanted: str) -> bool:
        if wanted == "head":
            # The newest thread of its folder as the last run saw it: a message in that same
            # second is one an exporter can meet on the boundary of its cursor.
            listing = self.inbox.conversations_of(
                conversation.page_id, conversation.platform, conversation.folder
            )
            return conversation.folder != "page_done" and listing[0] is conversation
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
