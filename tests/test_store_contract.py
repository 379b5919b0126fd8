"""One contract, two stores: every test runs against MemoryStore and PostgresStore.

The PostgreSQL half is marked ``postgresql`` (``pytest -m postgresql`` runs only it,
``-m "not postgresql"`` skips it); it uses the session's embedded server, or the one at
``OMNI_TEST_DATABASE_URL``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from omni.domain.conversation import Conversation, Status, Visitor
from omni.domain.protocol import ChannelRef
from omni.store import (
    ConversationQuery,
    OutboxAttempt,
    OutboxEntry,
    Store,
    StoredEvent,
    StoreError,
    Write,
)
from omni.store.postgres import PostgresStore
from tests.support import make_conversation

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def conversation(n: int, status: Status = Status.QUEUED, **changes: Any) -> Conversation:
    return make_conversation(
        n,
        status,
        at=NOW + timedelta(seconds=n),
        visitor=Visitor(f"Visitor {n}", f"v{n}@example.com"),
        **changes,
    )


def event(conv: Conversation, seq: int, text: str = "hi", client: str | None = None) -> StoredEvent:
    frame = f'{{"type":"message","conversation_id":"{conv.id}","seq":{seq},"text":"{text}"}}'
    return StoredEvent(conv.id, seq, "message", "both", frame, ("v", client) if client else None)


async def test_tickets_count_per_year_and_never_repeat(store: Store) -> None:
    assert [await store.next_ticket(2026) for _ in range(3)] == [1, 2, 3]
    assert await store.next_ticket(2027) == 1
    assert await store.next_ticket(2026) == 4


async def test_tickets_are_unique_under_concurrency(store: Store) -> None:
    numbers: list[int] = []

    async def take() -> None:
        numbers.append(await store.next_ticket(2026))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(take)
    assert sorted(numbers) == list(range(1, 21))


async def test_a_conversation_round_trips(store: Store) -> None:
    conv = conversation(1, Status.ACTIVE, operator_id=3, operator_name="Carla", grace_pending=True)
    await store.write(Write(conversation=conv, events=[event(conv, 1), event(conv, 2, "yo", "k1")]))
    conv.last_seq = 2
    loaded = await store.load_conversation("c1")
    assert loaded is not None
    assert loaded.status is Status.ACTIVE and loaded.operator_name == "Carla"
    assert loaded.visitor == conv.visitor and loaded.grace_pending is True
    assert loaded.created_at == conv.created_at and loaded.waiting_since == conv.waiting_since
    assert loaded.last_seq == 2
    assert loaded.client_ids == {("v", "k1"): 2}
    assert await store.find_by_token_hash("hash-1") == "c1"
    assert await store.find_by_token_hash("nope") is None
    assert await store.load_conversation("nope") is None


async def test_a_loaded_conversation_is_not_the_written_object(store: Store) -> None:
    conv = conversation(1)
    await store.write(Write(conversation=conv))
    conv.status = Status.CLOSED  # changed after the write, not written
    loaded = await store.load_conversation("c1")
    assert loaded is not None and loaded.status is Status.QUEUED


async def test_a_bot_conversation_keeps_its_script_answers_and_outcome(store: Store) -> None:
    """The chatbot's state (issue 16) round-trips, and is copied, never aliased: the actor
    mutates its own; what it collected joins the visitor, which is rewritten with it."""
    import msgspec

    from omni.domain.bot import Bot, BotState

    script = msgspec.convert(
        {
            "id": "b",
            "name": "B",
            "start": "ask",
            "nodes": [
                {"kind": "ask", "id": "ask", "text": "Mail?", "field": "email", "next": "h"},
                {"kind": "handoff", "id": "h", "group": 1},
            ],
        },
        Bot,
    )
    conv = conversation(1, Status.BOT, group_id=None)
    conv.bot = BotState(script=script, node="ask", last_question="ask")
    await store.write(Write(conversation=conv))
    conv.bot.fields["email"] = "x@example.com"  # not written
    loaded = await store.load_conversation("c1")
    assert loaded is not None and loaded.status is Status.BOT
    assert loaded.bot == BotState(script=script, node="ask", last_question="ask")
    assert [c.id for c in await store.open_conversations()] == ["c1"]
    # Handed off: the script goes, the outcome and the collected fields stay.
    conv.bot = BotState(
        script=None, node="h", fields={"email": "x@example.com"}, outcome="handoff", group=1
    )
    conv.status, conv.group_id = Status.QUEUED, 1
    conv.visitor = msgspec.structs.replace(conv.visitor, fields={"email": "x@example.com"})
    await store.write(Write(conversation=conv))
    loaded = await store.load_conversation("c1")
    assert loaded is not None and loaded.bot == conv.bot
    assert loaded.visitor.fields == {"email": "x@example.com"}
    (listed,) = await store.conversations_created_between(NOW, NOW + timedelta(hours=1))
    assert listed.bot is not None and listed.bot.outcome == "handoff"


async def test_events_after_returns_the_delivered_frames_in_order(store: Store) -> None:
    conv = conversation(1)
    await store.write(Write(conversation=conv, events=[event(conv, 1, "a")]))
    await store.write(Write(events=[event(conv, 2, "b"), event(conv, 3, "c")]))
    events = await store.events_after("c1", 1)
    assert [e.seq for e in events] == [2, 3]
    assert [e.data["text"] for e in events] == ["b", "c"]
    assert events[0].frame.startswith("{") and '"seq":2' in events[0].frame.replace(" ", "")
    assert await store.events_after("c1", 3) == []
    assert await store.events_after("other", 0) == []


async def test_events_after_pages_a_long_history(store: Store) -> None:
    conv = conversation(1)
    await store.write(
        Write(conversation=conv, events=[event(conv, s, str(s)) for s in range(1, 8)])
    )
    pages, after = [], 0
    while page := await store.events_after("c1", after, limit=3):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]


async def test_a_write_is_all_or_nothing(store: Store) -> None:
    conv = conversation(1)
    await store.write(Write(conversation=conv, events=[event(conv, 1)]))
    conv.status = Status.ACTIVE
    with pytest.raises(StoreError):
        # seq 1 again: refused, and the status change in the same write is not kept either.
        await store.write(Write(conversation=conv, events=[event(conv, 2), event(conv, 1)]))
    loaded = await store.load_conversation("c1")
    assert loaded is not None and loaded.status is Status.QUEUED and loaded.last_seq == 1


async def test_a_bad_write_does_not_fail_its_neighbours(store: Store) -> None:
    good, bad = conversation(1), conversation(2)
    await store.write(Write(conversation=bad, events=[event(bad, 1)]))
    results: dict[str, Any] = {}

    async def write(name: str, w: Write) -> None:
        try:
            await store.write(w)
            results[name] = "ok"
        except StoreError:
            results[name] = "refused"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "bad", Write(events=[event(bad, 1)]))
        nursery.start_soon(write, "good", Write(conversation=good, events=[event(good, 1)]))
    assert results == {"bad": "refused", "good": "ok"}
    assert [e.seq for e in await store.events_after("c1", 0)] == [1]


async def test_surveys(store: Store) -> None:
    a, b = conversation(1, Status.CLOSED), conversation(2, Status.CLOSED)
    await store.write(Write(conversation=a, survey={"rating": 4, "comment": "ok"}))
    await store.write(Write(conversation=b, survey_skipped=True))
    assert await store.survey("c1") == {"rating": 4, "comment": "ok"}
    assert await store.survey("c2") is None


async def test_a_survey_answered_after_the_close_is_stored_against_the_conversation(
    store: Store,
) -> None:
    """The survey by link: a closed conversation whose survey is pending is written again with
    its answers (and its survey state), the answers replacing nothing but an absence."""
    conv = conversation(1, Status.CLOSED, survey="pending", ended_at=NOW)
    await store.write(Write(conversation=conv))
    loaded = await store.load_conversation("c1")
    assert loaded is not None and loaded.survey == "pending" and loaded.ended_at == NOW
    assert await store.survey("c1") is None
    loaded.survey = "answered"
    await store.write(Write(conversation=loaded, survey={"rating": 2}))
    again = await store.load_conversation("c1")
    assert again is not None and again.survey == "answered"
    assert await store.survey("c1") == {"rating": 2}
    listed = await store.list_conversations(ConversationQuery(status="closed"))
    assert [(c.id, c.survey) for c in listed] == [("c1", "answered")]


async def test_open_conversations_in_queue_order(store: Store) -> None:
    for n, status in [
        (3, Status.QUEUED),
        (1, Status.ACTIVE),
        (2, Status.CLOSED),
        (4, Status.OUT_OF_HOURS),
        (5, Status.OFFERED),
        (6, Status.ENDED),
        (7, Status.ABANDONED),
    ]:
        await store.write(Write(conversation=conversation(n, status)))
    # Same waiting_since: the ticket breaks the tie.
    await store.write(
        Write(conversation=conversation(8, waiting_since=conversation(3).waiting_since))
    )
    opened = await store.open_conversations()
    assert [c.id for c in opened] == ["c1", "c3", "c8", "c5", "c6"]
    # The cheap listing (cluster mode's adoption, at every heartbeat) says the same.
    places = await store.open_conversation_places()
    assert places == [(c.id, c.group_id, c.service_id) for c in opened]


WA = ChannelRef("whatsapp", "wa")


async def test_a_channels_conversation_keeps_its_channel_and_user(store: Store) -> None:
    """Messaging channels (issue 17): the channel and the platform's user round-trip through
    every read — loaded, listed, restored at start-up — and a WebChat conversation has none."""
    conv = conversation(1, Status.ACTIVE, channel=WA, channel_user="5511987654321")
    await store.write(Write(conversation=conv, events=[event(conv, 1)]))
    await store.write(Write(conversation=conversation(2)))
    loaded = await store.load_conversation("c1")
    assert loaded is not None
    assert loaded.channel == WA and loaded.channel_user == "5511987654321"
    webchat = await store.load_conversation("c2")
    assert webchat is not None and webchat.channel is None and webchat.channel_user is None
    listed = {
        c.id: (c.channel, c.channel_user)
        for c in await store.list_conversations(ConversationQuery())
    }
    assert listed == {"c1": (WA, "5511987654321"), "c2": (None, None)}
    restored = {c.id: c.channel for c in await store.open_conversations()}
    assert restored == {"c1": WA, "c2": None}
    # Rewritten by a later step (the actor's), the channel stays.
    assert loaded is not None
    loaded.status = Status.CLOSED
    await store.write(Write(conversation=loaded))
    again = await store.load_conversation("c1")
    assert again is not None and again.channel == WA and again.channel_user == "5511987654321"
    assert again.status is Status.CLOSED


async def test_a_channel_users_open_conversation_is_found(store: Store) -> None:
    """``channel_conversation``: the newest conversation of the channel's user that is not
    closed or abandoned — out of hours included; other channels and users are not theirs."""
    assert await store.channel_conversation("wa", "u1") is None
    tg = ChannelRef("telegram", "tg")
    for n, status, channel, user in [
        (1, Status.CLOSED, WA, "u1"),
        (2, Status.ABANDONED, WA, "u1"),
        (3, Status.ACTIVE, tg, "u1"),
        (4, Status.QUEUED, WA, "u2"),
        (5, Status.QUEUED, None, None),
    ]:
        await store.write(
            Write(conversation=conversation(n, status, channel=channel, channel_user=user))
        )
    assert await store.channel_conversation("wa", "u1") is None  # only closed ones
    assert await store.channel_conversation("tg", "u1") == "c3"
    assert await store.channel_conversation("wa", "u2") == "c4"
    assert await store.channel_conversation("wa", "u3") is None
    await store.write(
        Write(conversation=conversation(6, Status.OUT_OF_HOURS, channel=WA, channel_user="u1"))
    )
    assert await store.channel_conversation("wa", "u1") == "c6"
    # Two open ones (a race the hub's lock prevents, but the store still answers): the newest.
    await store.write(
        Write(conversation=conversation(7, Status.BOT, channel=WA, channel_user="u1"))
    )
    assert await store.channel_conversation("wa", "u1") == "c7"
    closed = await store.load_conversation("c7")
    assert closed is not None
    closed.status = Status.CLOSED
    await store.write(Write(conversation=closed))
    assert await store.channel_conversation("wa", "u1") == "c6"


async def test_a_channels_inbound_messages_are_remembered_for_good(store: Store) -> None:
    """``record_inbound`` / ``inbound_seen``: per channel, kept after the conversation closed;
    recording one again changes nothing and is no error (a platform's retry racing)."""
    await store.write(Write(conversation=conversation(1, channel=WA, channel_user="u1")))
    await store.write(Write(conversation=conversation(2, channel=WA, channel_user="u1")))
    assert not await store.inbound_seen("wa", "wamid.1")
    await store.record_inbound("wa", "wamid.1", "c1", NOW)
    assert await store.inbound_seen("wa", "wamid.1")
    assert not await store.inbound_seen("tg", "wamid.1")  # another channel's ids are its own
    assert not await store.inbound_seen("wa", "wamid.2")
    await store.record_inbound("wa", "wamid.1", "c2", NOW + timedelta(seconds=5))
    assert await store.inbound_seen("wa", "wamid.1")
    closed = await store.load_conversation("c1")
    assert closed is not None
    closed.status = Status.CLOSED
    await store.write(Write(conversation=closed))
    assert await store.inbound_seen("wa", "wamid.1")


async def test_many_concurrent_writers_are_all_stored(store: Store) -> None:
    convs = [conversation(n) for n in range(1, 21)]
    for conv in convs:
        await store.write(Write(conversation=conv))

    async def chat(conv: Conversation) -> None:
        for seq in range(1, 26):
            await store.write(Write(events=[event(conv, seq, f"m{seq}", f"k{seq}")]))

    async with trio.open_nursery() as nursery:
        for conv in convs:
            nursery.start_soon(chat, conv)
    for conv in convs:
        events = await store.events_after(conv.id, 0)
        assert [e.seq for e in events] == list(range(1, 26))
    if isinstance(store, PostgresStore):
        # Group commit: 500 writes in far fewer transactions.
        stats = store.batch_statistics
        assert stats.writes >= 500 and stats.batches < stats.writes and stats.largest > 1


async def test_replayed_frames_are_byte_identical(store: Store) -> None:
    conv = conversation(1)
    frame = '{"type":"message","conversation_id":"c1","seq":1,"text":"olá \\u00e9 😀","z":1,"a":2}'
    await store.write(
        Write(conversation=conv, events=[StoredEvent("c1", 1, "message", "both", frame)])
    )
    (event,) = await store.events_after("c1", 0)
    assert event.frame == frame


# -- the outbox ---------------------------------------------------------------------------------


async def test_the_outbox_keeps_an_item_until_it_is_sent(store: Store) -> None:
    conv = conversation(1)
    await store.write(Write(conversation=conv))
    mail = {"to": "vera@example.com", "subject": "Your conversation", "body": "Hi ✓"}
    assert await store.outbox_next_due() is None
    assert await store.enqueue("email", "transcript:c1:vera@example.com", "c1", mail, NOW)
    # The same key again: queued once.
    assert not await store.enqueue("email", "transcript:c1:vera@example.com", "c1", mail, NOW)
    assert await store.enqueue("email", "other", None, {"n": 2}, NOW + timedelta(seconds=5))
    assert await store.outbox_next_due() == NOW
    [first] = await store.outbox_due(NOW, 10)
    assert (first.kind, first.dedupe_key, first.conversation_id) == (
        "email",
        "transcript:c1:vera@example.com",
        "c1",
    )
    assert first.payload == mail and first.attempts == 0 and first.created_at == NOW
    assert [i.payload for i in await store.outbox_due(NOW + timedelta(seconds=5), 10)] == [
        mail,
        {"n": 2},
    ]
    assert len(await store.outbox_due(NOW + timedelta(seconds=5), 1)) == 1

    # A failed attempt: due again later, with the error kept.
    later = NOW + timedelta(seconds=30)
    await store.outbox_retry(first.id, later, "connection refused")
    assert [i.dedupe_key for i in await store.outbox_due(NOW + timedelta(seconds=10), 10)] == [
        "other"
    ]
    assert await store.outbox_next_due() == NOW + timedelta(seconds=5)
    [again] = [i for i in await store.outbox_due(later, 10) if i.id == first.id]
    assert (again.attempts, again.next_attempt_at, again.last_error) == (
        1,
        later,
        "connection refused",
    )
    await store.outbox_sent(first.id, later)
    [other] = await store.outbox_due(later, 10)
    assert other.dedupe_key == "other"
    await store.outbox_failed(other.id, later, "550 no such user")
    assert await store.outbox_due(later + timedelta(days=1), 10) == []
    assert await store.outbox_next_due() is None
    # Sent and failed items stay, for inspection; a sent key is still not queued again.
    items = await store.outbox_items()
    assert [(i.sent_at, i.failed_at, i.attempts) for i in items] == [
        (later, None, 1),
        (None, later, 1),
    ]
    assert items[1].last_error == "550 no such user"
    assert [i.id for i in await store.outbox_items("c1")] == [first.id]
    assert not await store.enqueue("email", "transcript:c1:vera@example.com", "c1", mail, later)


async def test_an_outbox_item_of_an_unknown_conversation_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.enqueue("email", "k", "nope", {}, NOW)
    assert await store.outbox_items() == []


# -- webhooks in the outbox (issue 17) ----------------------------------------------------------


def webhook(conv: Conversation, sub: str, n: int, at: datetime = NOW) -> OutboxEntry:
    body = f'{{"type":"conversation.message","n":{n},"text":"olá"}}'
    return OutboxEntry(
        "webhook", f"webhook:{sub}:{conv.id}:{n}", conv.id, {"id": f"msg_{n}"}, at, sub, body
    )


async def test_webhooks_are_queued_with_the_events_that_make_them(store: Store) -> None:
    conv = conversation(1)
    first = webhook(conv, "crm", 1)
    await store.write(Write(conversation=conv, events=[event(conv, 1)], outbox=[first]))
    [item] = await store.outbox_items("c1")
    assert (item.kind, item.subscription, item.body, item.payload) == (
        "webhook",
        "crm",
        first.body,
        {"id": "msg_1"},
    )
    assert (item.created_at, item.next_attempt_at, item.status) == (NOW, NOW, "pending")
    # A write that fails stores neither its events nor its webhooks.
    with pytest.raises(StoreError):
        await store.write(Write(events=[event(conv, 1)], outbox=[webhook(conv, "crm", 2)]))
    assert [i.dedupe_key for i in await store.outbox_items()] == [first.dedupe_key]
    assert [e.seq for e in await store.events_after("c1", 0)] == [1]
    # An entry whose key is queued already is not queued again.
    await store.write(Write(events=[event(conv, 2)], outbox=[first, webhook(conv, "crm", 2)]))
    assert [i.body for i in await store.outbox_items()] == [
        first.body,
        webhook(conv, "crm", 2).body,
    ]
    # ... nor one of an unknown conversation.
    stranger = conversation(9)
    with pytest.raises(StoreError):
        await store.write(Write(outbox=[webhook(stranger, "crm", 1)]))


async def test_deliveries_of_a_subscription_and_conversation_go_in_order(store: Store) -> None:
    a, b = conversation(1), conversation(2)
    await store.write(Write(conversation=a, outbox=[webhook(a, "crm", 1), webhook(a, "crm", 2)]))
    await store.write(Write(conversation=b, outbox=[webhook(b, "crm", 1)]))
    await store.write(Write(events=[event(a, 1)], outbox=[webhook(a, "bi", 1)]))
    await store.enqueue("email", "mail", "c1", {"to": "x@example.com"}, NOW)
    ids = {i.dedupe_key: i.id for i in await store.outbox_items()}
    a1, a2, b1, bi = (
        ids[f"webhook:{s}:{c}:{n}"]
        for s, c, n in (("crm", "c1", 1), ("crm", "c1", 2), ("crm", "c2", 1), ("bi", "c1", 1))
    )
    # Only the head of each (subscription, conversation); e-mails have no order.
    assert [i.id for i in await store.outbox_due(NOW, 10)] == [a1, b1, bi, ids["mail"]]
    assert [i.id for i in await store.outbox_due(NOW, 10, kinds=["email"])] == [ids["mail"]]
    assert await store.outbox_next_due(["webhook"]) == NOW
    assert await store.outbox_next_due(["webhook"], after=NOW) is None
    # The head failed an attempt and waits: the next waits behind it, even though due.
    later = NOW + timedelta(seconds=30)
    failure = OutboxAttempt(NOW, 0.25, 500, "HTTP 500")
    await store.outbox_retry(a1, later, "HTTP 500", failure)
    assert [i.id for i in await store.outbox_due(NOW, 10, ["webhook"])] == [b1, bi]
    assert await store.outbox_next_due(["webhook"], after=NOW) == later
    # Sent: the next one is the head.
    success = OutboxAttempt(later, 0.5, 204)
    await store.outbox_sent(a1, later, success)
    assert [i.id for i in await store.outbox_due(later, 10, ["webhook"])] == [a2, b1, bi]
    # Failed for good (parked): the next goes on too.
    await store.outbox_failed(a2, later, "HTTP 410")
    assert a2 not in [i.id for i in await store.outbox_due(later, 10)]
    assert await store.outbox_attempts([a1, a2, b1]) == {a1: [failure, success]}
    assert await store.outbox_backlog() == {"email": 1, "webhook": 2}


async def test_a_parked_delivery_is_redelivered_on_request(store: Store) -> None:
    conv = conversation(1)
    await store.write(Write(conversation=conv, outbox=[webhook(conv, "crm", n) for n in (1, 2, 3)]))
    one, two, three = (i.id for i in await store.outbox_items())
    await store.outbox_failed(one, NOW, "HTTP 500", OutboxAttempt(NOW, 1.0, 500, "HTTP 500"))
    await store.outbox_sent(two, NOW)
    later = NOW + timedelta(minutes=5)
    # Only failed ones come back: pending and sent ones are left alone.
    assert await store.outbox_redeliver([one, two, three, 999], later) == [one]
    again = await store.outbox_item(one)
    assert again is not None
    assert (again.status, again.attempts, again.next_attempt_at) == ("pending", 0, later)
    assert await store.outbox_attempts([one]) == {one: [OutboxAttempt(NOW, 1.0, 500, "HTTP 500")]}
    # Back at the head: the third waits behind it again.
    assert [i.id for i in await store.outbox_due(later, 10)] == [one]
    assert await store.outbox_item(12345) is None


async def test_a_subscriptions_deliveries_newest_first(store: Store) -> None:
    conv = conversation(1)
    await store.write(
        Write(
            conversation=conv,
            outbox=[webhook(conv, "crm", n) for n in (1, 2, 3, 4)] + [webhook(conv, "bi", 1)],
        )
    )
    ids = [i.id for i in await store.outbox_items() if i.subscription == "crm"]
    await store.outbox_sent(ids[0], NOW)
    await store.outbox_failed(ids[1], NOW, "HTTP 500")
    assert [i.id for i in await store.outbox_deliveries("crm")] == ids[::-1]
    assert [i.id for i in await store.outbox_deliveries("crm", limit=2)] == ids[:1:-1]
    assert [i.id for i in await store.outbox_deliveries("crm", before_id=ids[2])] == ids[1::-1]
    assert [i.id for i in await store.outbox_deliveries("crm", "sent")] == [ids[0]]
    assert [i.id for i in await store.outbox_deliveries("crm", "failed")] == [ids[1]]
    assert [i.id for i in await store.outbox_deliveries("crm", "pending")] == ids[:1:-1]
    assert await store.outbox_deliveries("nobody") == []


async def test_the_outbox_forgets_what_it_finished_long_ago(store: Store) -> None:
    conv = conversation(1)
    await store.write(Write(conversation=conv, outbox=[webhook(conv, "crm", n) for n in range(6)]))
    await store.enqueue("email", "mail:old", "c1", {"to": "x@example.com"}, NOW)
    await store.enqueue("email", "mail:pending", None, {"to": "y@example.com"}, NOW)
    sent, parked, recent, pending, claimed, recent_parked = (
        i.id for i in await store.outbox_items() if i.kind == "webhook"
    )
    mail, mail_pending = (i.id for i in await store.outbox_items() if i.kind == "email")
    old, week_ago = NOW - timedelta(days=40), NOW - timedelta(days=7)
    attempt = OutboxAttempt(old, 0.5, 500, "HTTP 500")
    await store.outbox_sent(sent, old, OutboxAttempt(old, 0.25, 204))
    await store.outbox_failed(parked, old - timedelta(days=1), "HTTP 500", attempt)
    await store.outbox_sent(recent, week_ago)
    await store.outbox_failed(recent_parked, week_ago, "HTTP 410", attempt)
    await store.outbox_failed(mail, old, "550 no such user", attempt)
    # An item retried long ago, pending since; one claimed now: neither is finished.
    await store.outbox_retry(pending, old, "HTTP 503", attempt)
    assert [i.id for i in await store.outbox_claim("n1", NOW, 10, 60, ["webhook"])] == [pending]
    await store.outbox_retry(claimed, old, "HTTP 503", attempt)

    cutoff = NOW - timedelta(days=30)
    # Bounded batches, the longest finished first.
    assert await store.outbox_purge(cutoff, 2) == 2
    assert {parked, sent} & {i.id for i in await store.outbox_items()} == set()
    assert await store.outbox_purge(cutoff, 2) == 1
    assert await store.outbox_purge(cutoff, 2) == 0
    left = {i.id for i in await store.outbox_items()}
    assert left == {recent, pending, claimed, recent_parked, mail_pending}
    # Their attempts went with them; the others' stay.
    attempts = await store.outbox_attempts([sent, parked, mail, pending, recent_parked])
    assert set(attempts) == {pending, recent_parked}
    assert await store.outbox_item(sent) is None
    assert await store.outbox_backlog() == {"email": 1, "webhook": 2}
    # A later cutoff takes the recent ones, never the pending.
    assert await store.outbox_purge(NOW, 100) == 2
    assert {i.id for i in await store.outbox_items()} == {pending, claimed, mail_pending}
    # A deleted item's id is never given again.
    await store.enqueue("email", "mail:new", None, {"to": "z@example.com"}, NOW)
    assert max(i.id for i in await store.outbox_items()) > max(left | {mail})
