"""Ground truth from the emulator's own model (never from the code under test)."""

from __future__ import annotations

from collections.abc import Iterable

from meta_inbox.emulator.inbox import Conversation, Inbox

TABLE_NAMES = (
    "pages",
    "conversations",
    "conversation_participants",
    "messages",
    "message_attachments",
    "message_reactions",
    "message_recipients",
    "message_tags",
    "message_shares",
)
FOLDERS = ("inbox", "other", "page_done", "spam")  # Graph's `folder` values
LEGACY_ARCHIVE = "archived_legacy"  # Messenger threads archived before mid-2018
THROTTLE_CODES = {4, 17, 32, 613, 80001, 80002, 80006}


def selected(inbox: Inbox, page_ids: Iterable[str] | None = None) -> list[Conversation]:
    wanted = set(page_ids) if page_ids else {page.id for page in inbox.pages}
    return [c for c in inbox.conversations if c.page_id in wanted]


def expected_counts(
    conversations: Iterable[Conversation], detailed_before: set[str] = frozenset()
) -> dict[str, int]:
    """Rows each table must hold for these threads.

    `detailed_before`: messages an earlier run loaded with details, which they keep after
    Instagram stops giving them (once older than the thread's newest 20).
    """
    counts = dict.fromkeys(TABLE_NAMES, 0)
    pages = set()
    for conversation in conversations:
        pages.add(conversation.page_id)
        people = {p.id for p in [*conversation.participants, *conversation.former_participants]}
        counts["conversations"] += 1
        counts["conversation_participants"] += len(people)
        counts["messages"] += len(conversation.messages)
        for message in conversation.messages:
            if not conversation.is_detailed(message) and message.id not in detailed_before:
                continue
            counts["message_attachments"] += len(message.attachments)
            counts["message_reactions"] += reaction_count(message.reactions)
            counts["message_recipients"] += len(message.recipients)
            counts["message_tags"] += len(message.tags)
            counts["message_shares"] += len(message.shares)
    counts["pages"] = len(pages)
    return counts


def reaction_count(reactions: dict | None) -> int:
    if not reactions:
        return 0
    groups = reactions.get("data", [reactions])
    return sum(len(group["users"]) for group in groups)


def detailed_messages(conversations: Iterable[Conversation]) -> set[str]:
    return {
        message.id
        for conversation in conversations
        for message in conversation.messages
        if conversation.is_detailed(message)
    }


def hidden_messages(conversations: Iterable[Conversation]) -> set[str]:
    return {
        message.id
        for conversation in conversations
        for message in conversation.messages
        if not conversation.is_detailed(message)
    }


def probe_calls(inbox: Inbox) -> int:
    """Light listings before a Page's Instagram folders are walked: two folders' ids (does Graph
    honour `folder`?), and, where both are refused, the listing that tells "no Instagram
    account" from a refused folder."""
    return sum(2 + (len(page.platforms) == 1) for page in inbox.pages)


def platform_folders(platform: str) -> tuple[str, ...]:
    """The folders meta-inbox reads on a platform: the legacy archive is Messenger's."""
    return (*FOLDERS, LEGACY_ARCHIVE) if platform == "messenger" else FOLDERS


def folder_count(inbox: Inbox) -> int:
    """Listing calls a run makes when nothing changed: one per (Page, platform, folder), and the
    Instagram probes."""
    walks = sum(len(platform_folders(p)) for page in inbox.pages for p in page.platforms)
    return walks + probe_calls(inbox)
