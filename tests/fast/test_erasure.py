"""What a run may load of a thread `meta-inbox forget` erased: only what was sent after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meta_inbox.conversations_api import FacebookPage
from meta_inbox.erasure import after_erasure
from meta_inbox.reader import ThreadPart

ERASED_AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PAGE = FacebookPage(id="1000000000000001", name="Café Olé", token="EAAG-unused")


def _at(minutes: int) -> datetime:
    return ERASED_AT + timedelta(minutes=minutes)


def _part(updated: int, sent: list[int], *, final: bool = True) -> ThreadPart:
    messages = [
        {"id": f"m_{minutes}", "created_time": _at(minutes).strftime("%Y-%m-%dT%H:%M:%S+0000")}
        for minutes in sent
    ]
    return ThreadPart(
        page=PAGE,
        platform="messenger",
        folder="inbox",
        conversation={"id": "t_1", "updated_time": _at(updated).isoformat()},
        messages=messages,
        rechecked=False,
        final=final,
        complete=final,
        listed=[(f"m_{minutes}", _at(minutes)) for minutes in sent],
    )


def test_a_thread_untouched_since_its_erasure_loads_nothing() -> None:
    assert after_erasure(_part(-5, [-60, -5]), ERASED_AT) is None
    # The very second of the erasure is before it.
    assert after_erasure(_part(0, [0]), ERASED_AT) is None


def test_only_messages_sent_after_the_erasure_are_loaded() -> None:
    kept = after_erasure(_part(30, [-60, -5, 0, 10, 30]), ERASED_AT)

    assert kept is not None
    assert [m["id"] for m in kept.messages] == ["m_10", "m_30"]
    assert [i for i, _ in kept.listed] == ["m_10", "m_30"]
    assert kept.final  # the thread moved since: its row comes back, with the new contact


def test_an_older_page_of_a_thread_that_moved_loads_nothing_of_its_own() -> None:
    assert after_erasure(_part(30, [-90, -60], final=False), ERASED_AT) is None


def test_a_message_without_a_time_is_not_loaded() -> None:
    part = _part(30, [30])
    part.messages.append({"id": "m_unknown"})

    kept = after_erasure(part, ERASED_AT)

    assert kept is not None
    assert [m["id"] for m in kept.messages] == ["m_30"]
