"""What the Conversations API layer asks Graph (the emulator, over real HTTP): which Pages, and
how much per listing call when Graph finds an answer too heavy. Call counts are exact."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
from support import FakeClock, RecordingSession, connect, load

from meta_inbox.conversations_api import (
    ConversationsApi,
    FacebookPage,
    Listing,
    ListingSize,
    SizeCap,
    TakenPage,
    Upcoming,
    attachments_go_on,
    message_fields,
)
from meta_inbox.emulator import Emulator
from meta_inbox.emulator.inbox import Message
from meta_inbox.emulator.server import Call
from meta_inbox.errors import UnknownPages
from meta_inbox.graph_errors import ErrorKind, GraphError

pytest_plugins = ["support"]

CAFE, BIKES, RAMEN = "1000000000000001", "1000000000000002", "1000000000000003"


def conversations_api(
    emulator: Emulator,
    clock: FakeClock,
    *,
    token: str | None = None,
    session: RecordingSession | None = None,
    page_size: int = 4,
    messages_page_size: int = 8,
) -> ConversationsApi:
    return ConversationsApi(
        connect(emulator.base_url, clock, session=session),
        token or emulator.user_token,
        page_size=page_size,
        messages_page_size=messages_page_size,
        attachments_page_size=25,
    )


def cafe(emulator: Emulator) -> FacebookPage:
    return FacebookPage(
        id=CAFE,
        name="Café Olé",
        token=emulator.page_token(CAFE),
        instagram_id="17841400000000001",
        instagram_username="cafe.ole",
    )


def asked(calls: list[Call]) -> list[tuple[int, int | str]]:
    """What each listing call asked for: (threads, nested messages), or (threads, fields) for a
    call without nested messages."""
    sizes: list[tuple[int, int | str]] = []
    for call in calls:
        nested = re.search(r"messages\.limit\((\d+)\)", call.params["fields"])
        sizes.append(
            (int(call.params["limit"]), int(nested[1]) if nested else call.params["fields"])
        )
    return sizes


def inbox(
    api: ConversationsApi,
    page: FacebookPage,
    *,
    platform: str = "messenger",
    after: Listing | None = None,
    details_limited: bool = False,
) -> Listing:
    """A listing page of the Page's inbox: the first, or the one `after` an earlier listing."""
    return api.list_threads(
        page,
        platform,
        "inbox",
        next_url=after.next_url if after else None,
        details_limited=details_limited,
        upcoming=after.upcoming if after else None,
    )


# -- discovery -------------------------------------------------------------------------------------


def test_a_user_token_finds_every_page_it_manages_with_the_pages_token(
    emulator: Emulator, clock: FakeClock
) -> None:
    api = conversations_api(emulator, clock)

    assert api.discover_pages() == [
        cafe(emulator),
        FacebookPage(
            id=BIKES,
            name="Ünicorn Bikes 🚲",
            token=emulator.page_token(BIKES),
            instagram_id="17841400000000002",
            instagram_username="unicorn.bikes",
        ),
        FacebookPage(id=RAMEN, name="東京ラーメン Tōkyō", token=emulator.page_token(RAMEN)),
    ]
    # Page tokens reach no log line and no exception either.
    assert api.connection.redact(f"token {emulator.page_token(RAMEN)}") == "token ***"


def test_a_page_listed_without_its_token_gets_the_user_token(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.withhold_page_token(BIKES)

    pages = conversations_api(emulator, clock).discover_pages()

    assert [page.token for page in pages] == [
        emulator.page_token(CAFE),
        emulator.user_token,
        emulator.page_token(RAMEN),
    ]


def test_a_page_token_stands_for_its_page(emulator: Emulator, clock: FakeClock) -> None:
    api = conversations_api(emulator, clock, token=emulator.page_token(CAFE))

    assert api.discover_pages() == [cafe(emulator)]
    # /me/accounts is refused to a Page token: /me is the Page.
    assert [(call.path, call.error_code) for call in emulator.calls] == [
        ("/me/accounts", 100),
        ("/me", None),
    ]


def test_page_ids_choose_among_the_pages(emulator: Emulator, clock: FakeClock) -> None:
    pages = conversations_api(emulator, clock).discover_pages([RAMEN, CAFE])

    assert [page.id for page in pages] == [CAFE, RAMEN]


def test_page_ids_the_token_cannot_read_are_refused_by_name(
    emulator: Emulator, clock: FakeClock
) -> None:
    with pytest.raises(UnknownPages) as raised:
        conversations_api(emulator, clock).discover_pages([CAFE, "1000000000000004"])

    assert raised.value.missing == ["1000000000000004"]
    assert str(raised.value) == (
        "page_ids 1000000000000004 not found among the Pages this token can read "
        "(1000000000000001, 1000000000000002, 1000000000000003)"
    )


# -- listings too heavy for Graph ------------------------------------------------------------------


def cap_at(emulator: Emulator, threads: int, *, spare: int = 0) -> ConversationsApi:
    """Graph refuses any answer larger than Café Olé's first `threads` inbox threads with 8
    nested messages (plus `spare` bytes); an API listing 4 threads a page, its calls forgotten."""
    session = RecordingSession()
    conversations_api(emulator, FakeClock(), session=session, page_size=threads).list_threads(
        cafe(emulator), "messenger", "inbox", next_url=None, details_limited=False
    )
    emulator.faults.max_response_bytes = session.sizes[-1] + spare
    emulator.reset_calls()
    return conversations_api(emulator, FakeClock())


def test_a_listing_too_heavy_is_probed_once_then_asked_with_as_many_threads_as_fit(
    emulator: Emulator,
) -> None:
    api = cap_at(emulator, threads=2)

    first = inbox(api, cafe(emulator))

    # Refused at 4 threads: one light call learns the 3 threads' message counts (28, 39, 11),
    # and as the folder ends there, its 3 threads are split over the 2 pages the cap needs.
    assert asked(emulator.calls) == [(4, 8), (4, "id,message_count"), (1, 8)]
    assert [call.error_code for call in emulator.calls] == [1, None, None]
    assert (len(first.threads), first.size) == (1, ListingSize(1, 8))
    assert len(first.threads[0]["messages"]["data"]) == 8
    assert first.upcoming == Upcoming(counts=(39, 11), to_the_end=True)

    emulator.reset_calls()
    second = inbox(api, cafe(emulator), after=first)

    # The rest fits: asked at full page size, without a refusal, so that Graph ends the folder.
    assert asked(emulator.calls) == [(4, 8)]
    assert [call.error_code for call in emulator.calls] == [None]
    assert [len(thread["messages"]["data"]) for thread in second.threads] == [8, 8]
    assert (second.next_url, second.upcoming) == (None, Upcoming(counts=(), to_the_end=True))


def test_a_listing_refused_as_an_unknown_error_is_probed_once_its_retries_end(
    emulator: Emulator,
) -> None:
    """Code 1 is also Graph's "unknown error": a listing refused so, again and again, is asked
    smaller, as one refused for its size is."""
    api = cap_at(emulator, threads=2)
    emulator.faults.heavy_answer_says_so = False

    first = inbox(api, cafe(emulator))

    assert asked(emulator.calls) == [(4, 8)] * 4 + [(4, "id,message_count"), (1, 8)]
    assert [call.error_code for call in emulator.calls] == [1] * 4 + [None, None]
    assert (len(first.threads), first.size) == (1, ListingSize(1, 8))


def test_a_listing_that_fits_is_asked_at_full_size_whatever_was_refused_before(
    emulator: Emulator,
) -> None:
    api = cap_at(emulator, threads=2)
    inbox(api, cafe(emulator))
    emulator.reset_calls()

    # A fresh walk of the folder (no counts known): the reduction stays with the listing that
    # needed it.
    inbox(api, cafe(emulator))

    assert asked(emulator.calls)[0] == (4, 8)


def test_fewer_nested_messages_only_for_a_single_heavy_thread(emulator: Emulator) -> None:
    api = cap_at(emulator, threads=1, spare=-1)

    listing = inbox(api, cafe(emulator))

    assert asked(emulator.calls) == [(4, 8), (4, "id,message_count"), (1, 8), (1, 5)]
    assert (len(listing.threads), listing.size) == (1, ListingSize(1, 5))
    assert len(listing.threads[0]["messages"]["data"]) == 5
    # Its follow-ups are the reader's, at messages_page_size: the nested `next` goes on.
    assert "limit=5" in listing.threads[0]["messages"]["paging"]["next"]


def test_a_listing_whose_counts_cannot_be_learned_fails_with_graphs_refusal(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.faults.max_response_bytes = 100
    api = conversations_api(emulator, clock)

    with pytest.raises(GraphError) as raised:
        inbox(api, cafe(emulator))

    assert raised.value.kind is ErrorKind.TOO_MUCH_DATA
    assert asked(emulator.calls) == [(4, 8), (4, "id,message_count")]


def test_a_thread_too_heavy_even_with_one_message_fails_with_graphs_refusal(
    emulator: Emulator,
) -> None:
    session = RecordingSession()
    api = conversations_api(emulator, FakeClock(), session=session)
    api.list_threads(cafe(emulator), "messenger", "inbox", next_url=None, details_limited=False)
    emulator.faults.max_response_bytes = 1000
    emulator.reset_calls()

    with pytest.raises(GraphError) as raised:
        inbox(api, cafe(emulator))

    assert raised.value.kind is ErrorKind.TOO_MUCH_DATA
    assert [size for size in asked(emulator.calls) if size[0] == 1][-1] == (1, 1)


# -- how many threads fit: the arithmetic --------------------------------------------------------


def test_threads_that_go_on_fill_the_budget() -> None:
    upcoming = Upcoming(counts=(8, 8, 8, 8), to_the_end=False)  # each weighs 8 + THREAD_WEIGHT

    assert upcoming.fitting(ListingSize(100, 8), budget=25, page_size=100) == ListingSize(2, 8)
    assert upcoming.fitting(ListingSize(100, 8), budget=40, page_size=100) == ListingSize(4, 8)


def test_threads_to_the_folders_end_are_split_evenly_and_the_last_page_asked_full() -> None:
    upcoming = Upcoming(counts=(8, 8, 8, 8, 8), to_the_end=True)

    # 50 in all, 45 at most a page: two pages of 20 and 30, not 40 and 10.
    assert upcoming.fitting(ListingSize(100, 8), budget=45, page_size=100) == ListingSize(2, 8)
    assert upcoming.after(2).fitting(ListingSize(100, 8), 45, 100) == ListingSize(100, 8)


def test_threads_with_fewer_messages_than_nested_weigh_what_they_hold() -> None:
    upcoming = Upcoming(counts=(1, None, 3), to_the_end=False)

    # 1 + 2, then 8 (not given: as many as asked) + 2, then 3 + 2.
    assert ListingSize(3, 8).weight(upcoming.counts) == 18
    assert upcoming.fitting(ListingSize(100, 8), budget=13, page_size=100) == ListingSize(2, 8)


def test_a_single_thread_over_budget_gets_fewer_nested_messages_or_none_fits() -> None:
    heavy = Upcoming(counts=(50,), to_the_end=False)

    assert heavy.fitting(ListingSize(100, 100), budget=7, page_size=100) == ListingSize(1, 5)
    assert heavy.fitting(ListingSize(100, 100), budget=2, page_size=100) is None


def test_the_budget_narrows_between_what_fitted_and_what_was_refused() -> None:
    cap = SizeCap()
    assert cap.budget() is None

    assert cap.refused(40) == 30  # nothing fitted yet: between half the refusal and the refusal
    cap.fitted(30)
    assert cap.budget() == 35
    assert cap.refused(35) == 32
    cap.fitted(50)  # heavier than a refusal: a lighter answer in bytes, not a larger cap
    assert cap.budget() == 32


def test_instagram_refusing_older_details_is_asked_again_with_20_nested_messages(
    emulator: Emulator, clock: FakeClock
) -> None:
    emulator.faults.instagram_details_error = True
    api = conversations_api(emulator, clock, messages_page_size=100)

    listing = inbox(api, cafe(emulator), platform="instagram")

    assert asked(emulator.calls) == [(4, 100), (4, 20)]
    assert [call.error_code for call in emulator.calls] == [9000001, None]
    assert (listing.size, listing.details_limited) == (ListingSize(4, 20), True)
    # Once known, the folder's listings ask for 20 at once.
    emulator.reset_calls()
    inbox(api, cafe(emulator), platform="instagram", details_limited=True)
    assert asked(emulator.calls) == [(4, 20)]


# -- older messages --------------------------------------------------------------------------------


def nested_next(emulator: Emulator) -> str:
    """The `next` of the newest inbox thread's nested messages, listed 2 at a time."""
    nested_two = conversations_api(emulator, FakeClock(), page_size=1, messages_page_size=2)
    listing = inbox(nested_two, cafe(emulator))
    following = listing.threads[0]["messages"]["paging"]["next"]
    assert "limit=2" in following
    emulator.reset_calls()
    return following


def test_a_next_keeps_graphs_parameters_but_limit_and_fields(
    emulator: Emulator, clock: FakeClock
) -> None:
    """Only `limit` and `fields` are set on a `next`: a blank parameter and a repeated one
    reach Graph as Graph wrote them, for listings and older messages alike."""
    session = RecordingSession()
    api = conversations_api(emulator, clock, session=session, page_size=2)
    first = inbox(api, cafe(emulator))
    assert first.next_url is not None
    listing_next = first.next_url + "&since=&tag=a&tag=b"
    messages_next = nested_next(emulator) + "&since=&tag=a&tag=b"

    api.list_threads(
        cafe(emulator), "messenger", "inbox", next_url=listing_next, details_limited=False
    )
    api.older_messages(cafe(emulator), thread_of(messages_next), messages_next, details=True)

    for url in session.urls[-2:]:
        sent = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        assert ("since", "") in sent
        assert [value for key, value in sent if key == "tag"] == ["a", "b"]
        assert [key for key, _ in sent].count("limit") == 1


def thread_of(following: str) -> str:
    """The thread whose messages a `next` goes on with (`/{version}/{thread}/messages`)."""
    return urlsplit(following).path.split("/")[2]


def test_a_thread_is_read_again_from_its_newest_message(
    emulator: Emulator, clock: FakeClock
) -> None:
    api = conversations_api(emulator, clock, messages_page_size=3)
    thread = thread_of(nested_next(emulator))

    newest = api.older_messages(cafe(emulator), thread, None, details=True)

    stored = emulator.inbox.conversation(thread).messages
    assert [m["id"] for m in newest["data"]] == [m.id for m in stored[::-1][:3]]
    assert [(c.path, c.params["limit"]) for c in emulator.calls] == [(f"/{thread}/messages", "3")]


def taken(asked: str | None, messages: list[Message]) -> TakenPage:
    """A page of `messages` as a chain took it, asked at `asked`."""
    oldest = datetime.fromtimestamp(min(m.created_time for m in messages), UTC)
    return TakenPage(asked, frozenset(m.id for m in messages), oldest)


@pytest.mark.parametrize("expiry", ["none", "empty", "error"])
def test_an_empty_last_page_is_told_from_an_expired_cursor(
    emulator: Emulator, clock: FakeClock, expiry: str
) -> None:
    """The page before it asked again, light and one item longer: an item below it (not on
    it, after all of it, or as old or older) means the list goes on; items newer came since.
    Where that answer does not reach past the page (items came above it, or Graph answered
    fewer than asked), the light pages after it tell."""
    api = conversations_api(emulator, clock, messages_page_size=2)
    following = nested_next(emulator)
    thread = thread_of(following)
    stored = emulator.inbox.conversation(thread).messages[::-1]  # newest first, as listed
    assert len(stored) > 5
    if expiry != "none":
        emulator.faults.cursor_expiry = expiry
        emulator.expire_cursors()

    def ends_below(page: TakenPage) -> bool | int:
        try:
            return api.messages_end_below(cafe(emulator), thread, page)
        except GraphError as refused:
            return refused.code or 0

    if expiry == "none":
        assert ends_below(taken(None, stored)) is True
        assert ends_below(taken(None, stored[:-1])) is False
        assert ends_below(taken(following, stored[2:4])) is False
        n = len(stored)
        calls = [(c.params.get("after") is not None, c.params["limit"]) for c in emulator.calls]
        assert calls == [(False, str(n + 1)), (False, str(n)), (True, "3")]
        # Two messages came above the newest page: its re-ask does not reach past it.
        for minutes in (1, 2):
            emulator.customer_writes(thread, "meanwhile", stored[0].created_time + 60 * minutes)
        emulator.reset_calls()
        assert ends_below(taken(None, stored[:3])) is False
        assert ends_below(taken(None, stored)) is True
        calls = [(c.params.get("after") is not None, c.params["limit"]) for c in emulator.calls]
        assert calls == [(False, "4"), (True, "4"), (False, str(n + 1)), (True, str(n + 1))]
        # Graph answering fewer than asked, with a `next`: the pages after tell.
        emulator.faults.short_page_rate = 1.0
        assert ends_below(taken(following, stored[2:4])) is False
        assert {c.params["fields"] for c in emulator.calls} == {"id,created_time"}
    else:
        assert ends_below(taken(following, stored[2:4])) == (False if expiry == "empty" else 100)
        assert len(emulator.calls) == 1


def test_older_messages_are_asked_at_messages_page_size_whatever_the_nested_limit(
    emulator: Emulator, clock: FakeClock
) -> None:
    api = conversations_api(emulator, clock, messages_page_size=10)
    following = nested_next(emulator)

    detailed = api.older_messages(cafe(emulator), thread_of(following), following, details=True)
    bare = api.older_messages(cafe(emulator), thread_of(following), following, details=False)

    assert [(call.params["limit"], call.params["fields"]) for call in emulator.calls] == [
        ("10", message_fields(25)),
        ("10", "id,created_time"),
    ]
    assert (len(detailed["data"]), len(bare["data"])) == (10, 10)
    assert set(bare["data"][0]) == {"id", "created_time"}


def capped_above_five_older(emulator: Emulator, clock: FakeClock) -> tuple[ConversationsApi, str]:
    """An API asking 10 older messages a page, a nested `next`, and Graph refusing any answer
    larger than its 5 older messages; the calls forgotten."""
    session = RecordingSession()
    api = conversations_api(emulator, clock, session=session, messages_page_size=10)
    following = nested_next(emulator)
    half = conversations_api(emulator, clock, session=session, messages_page_size=5)
    half.older_messages(cafe(emulator), thread_of(following), following, details=True)
    emulator.faults.max_response_bytes = session.sizes[-1]
    emulator.reset_calls()
    return api, following


def test_older_messages_too_heavy_are_asked_smaller_for_that_call_only(
    emulator: Emulator, clock: FakeClock
) -> None:
    api, following = capped_above_five_older(emulator, clock)

    older = api.older_messages(cafe(emulator), thread_of(following), following, details=True)
    api.older_messages(cafe(emulator), thread_of(following), following, details=True)

    assert [call.params["limit"] for call in emulator.calls] == ["10", "5", "10", "5"]
    assert len(older["data"]) == 5


def test_older_messages_refused_as_an_unknown_error_are_asked_smaller_once_retries_end(
    emulator: Emulator, clock: FakeClock
) -> None:
    """Code 1 is also Graph's "unknown error": a page refused so, again and again, is asked
    smaller, as one refused for its size is."""
    api, following = capped_above_five_older(emulator, clock)
    emulator.faults.heavy_answer_says_so = False

    older = api.older_messages(cafe(emulator), thread_of(following), following, details=True)

    assert [(c.params["limit"], c.error_code) for c in emulator.calls] == [("10", 1)] * 4 + [
        ("5", None)
    ]
    assert len(older["data"]) == 5


# -- attachments -----------------------------------------------------------------------------------


def test_an_attachment_list_goes_on_unless_its_next_comes_with_equal_cursors() -> None:
    group = load("messenger_listing.json")["data"][0]
    # The recorded shape of a complete list: one image, a `next`, and equal cursors.
    complete = group["messages"]["data"][1]["attachments"]
    assert len(complete["data"]) == 1
    assert complete["paging"]["cursors"]["before"] == complete["paging"]["cursors"]["after"]
    following = "https://graph.facebook.com/v25.0/m_1/attachments?limit=25&after=Mg"
    # Two of three shown, whatever was asked: distinct cursors and a `next`.
    short = {
        "data": [{"id": "1"}, {"id": "2"}],
        "paging": {"cursors": {"before": "MQ", "after": "Mg"}, "next": following},
    }
    without_cursors = {"data": [{"id": "1"}], "paging": {"next": following}}

    assert attachments_go_on(complete) is None
    assert attachments_go_on(short) == following
    assert attachments_go_on(without_cursors) == following
    assert attachments_go_on({"data": [{"id": "1"}]}) is None
    assert attachments_go_on({"data": [], "paging": {"next": following}}) is None
