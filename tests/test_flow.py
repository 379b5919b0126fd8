"""The conversation flow, path by path, in virtual time over in-memory websocket streams.

Every test runs the real gateway, hub and actors under ``MockClock(autojump_threshold=0)``:
frames are real websocket frames, but no socket is opened and timers cost no wall time.
"""

from __future__ import annotations

import time

import pytest
import trio

from tests.support import (
    TOK_ALICE,
    TOK_BRUNO,
    TOK_CARLA,
    connect_memory,
    login,
    make_config,
    open_memory_gateway,
    start,
    with_service,
)


async def test_queue_positions_are_live(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/visitor") as v1,
        connect_memory(gw, "/ws/visitor") as v2,
        connect_memory(gw, "/ws/visitor") as v3,
    ):
        await start(v1)
        assert (await v1.expect("queued"))["position"] == 1
        await start(v2)
        assert (await v2.expect("queued"))["position"] == 2
        await start(v3)
        assert (await v3.expect("queued"))["position"] == 3
        # The head leaves: everybody behind moves up.
        await v1.send("end")
        await v1.expect("ended", by="visitor")
        await v1.expect("closed")
        assert (await v2.expect("queued"))["position"] == 1
        assert (await v3.expect("queued"))["position"] == 2
        # An operator takes the head: the last one moves up again.
        async with connect_memory(gw, "/ws/operator") as carla:
            await login(carla, TOK_CARLA)
            offer = await carla.expect("offer")
            await carla.send("accept", conversation_id=offer["conversation"]["id"])
            await v2.expect("assigned")
            assert (await v3.expect("queued"))["position"] == 1


async def test_out_of_hours_keeps_the_conversation(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/visitor") as vera:
        started = await start(vera, service_id=26)
        ooh = await vera.expect("out_of_hours")
        assert ooh["message"] == "We are closed." and ooh["seq"] == 1
        # The visitor may still leave a message; it is stored for the operator who resumes.
        await vera.send("message", client_id="m1", text="Please call me back")
        assert (await vera.expect("ack"))["seq"] == 2
        entry = gw.hub.conversations[started["conversation_id"]]
        assert entry.status.value == "out_of_hours"
        await vera.send("end")
        assert (await vera.expect("error"))["code"] == "invalid_state"


async def test_schedule_break_is_out_of_hours(autojump_clock: trio.testing.MockClock) -> None:
    """Sao Paulo lunch break 12:00-13:00: 15:30 UTC is 12:30 local."""
    from datetime import UTC, datetime

    raw_config = make_config()
    from omni.config import load_config

    example = load_config("examples/omni.toml")
    assert raw_config is not None
    async with (
        open_memory_gateway(example, epoch=datetime(2026, 11, 25, 15, 30, tzinfo=UTC)) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as will,
    ):
        await start(vera, service_id=30)  # Sales: business hours only
        assert (await vera.expect("out_of_hours"))["message"].startswith("Sales is closed")
        # Support (25) is open 07:00-22:00: during L1's lunch it goes to L2, not out of hours.
        await start(will, service_id=25)
        await will.expect("queued")
        entry = next(e for e in gw.hub.conversations.values() if e.status.value == "queued")
        assert entry.group_id == 2
        # At 13:00 local (16:00 UTC) the break is over: Sales takes conversations again.
        await trio.sleep(30 * 60)
        async with connect_memory(gw, "/ws/visitor") as late:
            await start(late, service_id=30)
            await late.expect("queued")


async def test_paused_operator_gets_no_offers(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        welcome = await login(carla, TOK_CARLA, available=False)
        assert welcome["operator"]["status"] == "paused"
        await start(vera)
        await vera.expect("queued")
        await carla.expect_nothing(5)
        await carla.send("status", status="available")
        await carla.expect("status")
        offer = await carla.expect("offer")
        await carla.send("status", status="paused")
        await carla.expect("status")
        # The offer stands while paused; accepting works.
        await carla.send("accept", conversation_id=offer["conversation"]["id"])
        await vera.expect("assigned")


async def test_routing_offers_to_the_operator_idle_longest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/operator") as carla,
    ):
        await login(carla, TOK_CARLA)
        await trio.sleep(10)
        await login(alice, TOK_ALICE)  # available later: idle for less time
        async with connect_memory(gw, "/ws/visitor") as v1, connect_memory(gw, "/ws/visitor") as v2:
            await start(v1)
            offer = await carla.expect("offer")
            await carla.send("accept", conversation_id=offer["conversation"]["id"])
            await start(v2)
            # Carla is at capacity (1): Alice gets the next one.
            await alice.expect("offer")


async def test_unanswered_offer_moves_on(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)
        await trio.sleep(1)
        await login(alice, TOK_ALICE)
        await start(vera)
        offer = await carla.expect("offer")
        withdrawn = await carla.expect("offer_withdrawn", timeout=60)
        assert withdrawn["conversation_id"] == offer["conversation"]["id"]
        await alice.expect("offer")
        await carla.send("accept", conversation_id=offer["conversation"]["id"])
        assert (await carla.expect("error"))["code"] == "not_offered"


async def test_transfer_to_group_keeps_history(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)
        started = await start(vera)
        cid = started["conversation_id"]
        await carla.send(
            "accept", conversation_id=(await carla.expect("offer"))["conversation"]["id"]
        )
        await vera.expect("assigned")
        await vera.expect("message")
        await vera.send("message", client_id="q", text="I need billing")
        await vera.expect("ack")
        await carla.expect("assigned")
        await carla.expect("message")  # greeting
        await carla.expect("message")  # the question
        await carla.send("transfer", conversation_id=cid, group_id=2)
        transferred = await vera.expect("transferred")
        assert transferred["to"] == {"kind": "group", "id": 2, "name": "Billing"}
        assert (await carla.expect("transferred"))["seq"] == transferred["seq"]
        assert (await vera.expect("queued"))["position"] == 1
        # Carla can no longer write in it.
        await carla.send("message", conversation_id=cid, client_id="x", text="still here?")
        assert (await carla.expect("error"))["code"] == "not_your_conversation"
        async with connect_memory(gw, "/ws/operator") as bruno:
            await login(bruno, TOK_BRUNO)
            offer = await bruno.expect("offer")
            assert offer["conversation"]["id"] == cid
            await bruno.send("accept", conversation_id=cid)
            # Bruno gets the whole history first, then his assignment, in seq order.
            history = [await bruno.recv() for _ in range(5)]
            kinds = [f["type"] for f in history]
            assert kinds == ["assigned", "message", "message", "transferred", "assigned"]
            seqs = [f["seq"] for f in history]
            assert seqs == sorted(seqs) and len(set(seqs)) == 5
            assert history[2]["text"] == "I need billing"
            assert (await vera.expect("assigned"))["operator"]["name"] == "Bruno"


async def test_transfer_to_named_operator(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)
        cid = (await start(vera))["conversation_id"]
        await carla.send(
            "accept", conversation_id=(await carla.expect("offer"))["conversation"]["id"]
        )
        await vera.expect("assigned")
        assert (await vera.expect("message"))["author"]["kind"] == "operator"  # greeting
        await carla.expect("assigned")
        await carla.expect("message")
        # An offline operator cannot be the target.
        await carla.send("transfer", conversation_id=cid, operator_id=2)
        assert (await carla.expect("error"))["code"] == "operator_unavailable"
        await carla.send("transfer", conversation_id=cid, operator_id=99)
        assert (await carla.expect("error"))["code"] == "unknown_operator"
        await carla.send("transfer", conversation_id=cid, group_id=2, operator_id=1)
        assert (await carla.expect("error"))["code"] == "invalid_frame"
        await login(alice, TOK_ALICE, available=False)
        await carla.send("transfer", conversation_id=cid, operator_id=1)
        assert (await carla.expect("transferred"))["to"]["name"] == "Alice"
        await vera.expect("transferred")
        assert (await vera.expect("assigned"))["operator"]["name"] == "Alice"
        frames = [await alice.recv() for _ in range(4)]
        assert frames[-1]["type"] == "assigned"
        await alice.send("message", conversation_id=cid, client_id="a", text="Alice here")
        await alice.expect("ack")
        assert (await vera.expect("message"))["text"] == "Alice here"
        # Carla's capacity is free again: she can take the next visitor.
        async with connect_memory(gw, "/ws/visitor") as will:
            await start(will)
            await carla.expect("offer")


async def test_operator_disconnect_grace_then_requeue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway(operator_grace_seconds=600) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        wall = time.monotonic()
        async with connect_memory(gw, "/ws/operator") as carla:
            await login(carla, TOK_CARLA)
            cid = (await start(vera))["conversation_id"]
            await carla.send("accept", conversation_id=cid)
            await vera.expect("assigned")
            await vera.expect("message")
        # Carla's console dropped. She comes back within the 10-minute grace period.
        await trio.sleep(300)
        async with connect_memory(gw, "/ws/operator") as carla:
            welcome = await login(carla, TOK_CARLA, available=False)
            assert welcome["operator"]["status"] == "available"  # restored
            assert [c["id"] for c in welcome["conversations"]] == [cid]
            last = welcome["conversations"][0]["last_seq"]
            await carla.send("sync", conversation_id=cid, last_seq=0)
            replay = [await carla.recv() for _ in range(last)]
            assert [f["seq"] for f in replay] == list(range(1, last + 1))
            await trio.sleep(900)  # well past the grace period: still hers
            await carla.send("message", conversation_id=cid, client_id="b", text="back")
            await carla.expect("ack")
            await vera.expect("message")
        # She drops again and does not come back: after 10 minutes the visitor is requeued.
        await trio.sleep(599)
        assert gw.hub.conversations[cid].status.value == "active"
        await trio.sleep(2)
        transferred = await vera.expect("transferred")
        assert transferred["reason"] == "operator_disconnected"
        assert (await vera.expect("queued"))["position"] == 1
        async with connect_memory(gw, "/ws/operator") as alice:
            await login(alice, TOK_ALICE)
            assert (await alice.expect("offer"))["conversation"]["id"] == cid
        assert time.monotonic() - wall < 5, "virtual time: the grace periods cost no wall time"


async def test_resume_replays_exactly_the_missed_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/operator") as carla:
        await login(carla, TOK_CARLA)
        async with connect_memory(gw, "/ws/visitor") as vera:
            started = await start(vera)
            cid, token = started["conversation_id"], started["token"]
            await carla.expect("offer")
            await carla.send("accept", conversation_id=cid)
            await carla.expect("assigned")
            await carla.expect("message")
            await vera.expect("assigned")
            await vera.expect("message")
            seen = vera.last_seq
        # Vera's connection dropped; Carla writes twice meanwhile.
        for n in range(2):
            await carla.send("message", conversation_id=cid, client_id=f"c{n}", text=f"missed {n}")
            await carla.expect("ack")
        async with connect_memory(gw, "/ws/visitor") as again:
            await again.send("resume", token="wrong-token", last_seq=0)
            assert (await again.expect("error"))["code"] == "invalid_token"
            await again.expect_nothing()
            await again.send("resume", token=token, last_seq=seen)
            resumed = await again.expect("resumed", conversation_id=cid)
            assert resumed["status"] == "active"
            missed = [await again.recv(), await again.recv()]
            assert [m["text"] for m in missed] == ["missed 0", "missed 1"]
            assert [m["seq"] for m in missed] == [seen + 1, seen + 2]
            await again.expect_nothing()
            # And the conversation goes on, live.
            await again.send("message", client_id="v", text="I'm back")
            await again.expect("ack", seq=seen + 3)
            assert (await carla.expect("message"))["text"] == "I'm back"


async def test_end_by_operator_skip_survey_and_no_survey_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as will,
    ):
        await login(alice, TOK_ALICE)
        cid = (await start(vera))["conversation_id"]
        await alice.send(
            "accept", conversation_id=(await alice.expect("offer"))["conversation"]["id"]
        )
        await alice.send("end", conversation_id=cid)
        await vera.expect("assigned")
        await vera.expect("message")
        await vera.expect("ended", by="operator")
        await vera.expect("survey")
        await vera.send("survey", answers={"rating": 9})
        error = await vera.expect("error")
        assert error["code"] == "invalid_survey"
        await vera.send("survey_skip")
        await vera.expect("closed", message="Bye!")
        assert await gw.hub.store.survey(cid) is None

        wid = (await start(will, service_id=27))["conversation_id"]
        await alice.send(
            "accept", conversation_id=(await alice.until("offer"))["conversation"]["id"]
        )
        await will.expect("assigned")
        await will.expect("message")  # the default greeting
        await will.send("end")
        await will.expect("ended", by="visitor")
        await will.expect("closed", message="See you.")  # no survey on this service
        assert wid not in gw.hub.conversations


async def test_survey_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        cid = (await start(vera))["conversation_id"]
        await alice.send("accept", conversation_id=cid)
        await vera.send("end")
        await vera.until("survey")
        await vera.expect("closed", timeout=700)
        assert cid not in gw.hub.conversations


async def test_an_operator_who_gets_a_conversation_back_is_sent_only_what_is_new(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)
        cid = (await start(vera))["conversation_id"]
        await carla.send(
            "accept", conversation_id=(await carla.expect("offer"))["conversation"]["id"]
        )
        first = [await carla.recv() for _ in range(2)]  # assigned, greeting
        await carla.send("transfer", conversation_id=cid, group_id=1)
        transferred = await carla.expect("transferred")
        await vera.send("message", client_id="q", text="while waiting")
        await vera.until("ack")
        await carla.send(
            "accept", conversation_id=(await carla.expect("offer"))["conversation"]["id"]
        )
        again = [await carla.recv() for _ in range(3)]
        assert [f["type"] for f in again] == ["message", "assigned", "message"]
        assert again[0]["text"] == "while waiting"
        seqs = [f["seq"] for f in [*first, transferred, *again]]
        assert seqs == list(range(1, len(seqs) + 1)), "each seq once, in order"


async def test_queue_timeout_abandons_a_waiting_visitor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """F16: with a queue timeout, nobody waits forever; an answered visitor is not affected."""
    config = with_service(
        make_config(), 25, lambda body: body["timers"].update(queue_timeout=120.0)
    )
    async with (
        open_memory_gateway(config) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as will,
    ):
        cid = (await start(vera))["conversation_id"]
        await vera.expect("queued")
        await trio.sleep(60)
        async with connect_memory(gw, "/ws/operator") as carla:
            await login(carla, TOK_CARLA)
            await carla.send(
                "accept", conversation_id=(await carla.expect("offer"))["conversation"]["id"]
            )
            await vera.until("assigned")
            await start(will)  # Carla is full: Will waits
            await will.expect("queued")
            before = trio.current_time()
            ended = await will.until("ended", timeout=200)
            assert ended["by"] == "queue_timeout"
            assert 119.9 < trio.current_time() - before < 120.1
            await will.expect("closed")
            await trio.sleep(300)
            await vera.send("message", client_id="still", text="still here")
            await vera.until("ack")
        conversations = {c.id: c for c in gw.hub.store.conversations()}  # type: ignore[attr-defined]
        assert conversations[cid].status.value == "active"
        assert [c.status.value for c in conversations.values() if c.id != cid] == ["abandoned"]


async def test_a_resend_after_the_end_still_gets_its_ack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The ack was lost, then the operator ended the conversation: the retry is acknowledged
    with the original seq, nothing is stored twice (protocol: a repeated client_id returns the
    same ack)."""
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/operator") as carla:
        await login(carla, TOK_CARLA)
        async with connect_memory(gw, "/ws/visitor") as vera:
            started = await start(vera)
            cid = started["conversation_id"]
            await carla.send(
                "accept", conversation_id=(await carla.expect("offer"))["conversation"]["id"]
            )
            await vera.until("assigned")
            await vera.send("message", client_id="m1", text="last words")
            ack = await vera.until("ack")
        await carla.send("end", conversation_id=cid)
        await carla.until("ended")
        async with connect_memory(gw, "/ws/visitor") as again:
            await again.send("resume", token=started["token"], last_seq=ack["seq"] - 1)
            await again.until("survey")
            await again.send("message", client_id="m1", text="last words")
            assert (await again.until("ack"))["seq"] == ack["seq"]
        texts = [e.data.get("text") for e in gw.hub.store.all_events(cid)]  # type: ignore[attr-defined]
        assert texts.count("last words") == 1


async def test_identification_policy_and_embedding_origins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """F7: required identification fields; F18: only the allowed sites may embed the chat."""
    config = with_service(
        make_config(),
        25,
        lambda body: body.update(
            required_fields={"email": True, "phone": False},
            allowed_origins=["https://shop.example"],
        ),
    )
    async with open_memory_gateway(config) as gw:
        async with connect_memory(gw, "/ws/visitor", origin="https://evil.example") as v:
            await v.send("start", service_id=25, visitor={"name": "Vera", "email": "v@x.org"})
            assert (await v.expect("error"))["code"] == "origin_not_allowed"
        async with connect_memory(gw, "/ws/visitor", origin="https://shop.example") as v:
            await v.send("start", service_id=25, visitor={"name": "Vera"})
            error = await v.expect("error")
            assert error["code"] == "invalid_frame" and "email" in error["message"]
            assert gw.hub.conversations == {}
            await v.send("start", service_id=25, visitor={"name": "Vera", "email": "v@x.org"})
            await v.expect("started")
        # Another service, no policy; and a non-browser client (no Origin) is not concerned.
        async with connect_memory(gw, "/ws/visitor") as w:
            await w.send("start", service_id=25, visitor={"name": "Will", "email": "w@x.org"})
            await w.expect("started")
        async with connect_memory(gw, "/ws/visitor", origin="https://evil.example") as z:
            await z.send("start", service_id=27, visitor={"name": "Zoe"})
            await z.expect("started")


async def test_an_idle_visitor_is_warned_then_the_conversation_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """F16: while the operator waits for the visitor, the visitor is warned after
    ``visitor_idle_warning`` and the conversation ends after ``visitor_idle_close`` — both
    counted from the operator's last message; a visitor who answers starts nothing over."""
    config = with_service(
        make_config(),
        27,  # no survey: closed right after the end
        lambda body: body["timers"].update(visitor_idle_warning=60.0, visitor_idle_close=90.0),
    )
    async with (
        open_memory_gateway(config) as gw,
        connect_memory(gw, "/ws/operator") as bruno,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(bruno, TOK_BRUNO)
        cid = (await start(vera, 27))["conversation_id"]
        await bruno.send(
            "accept", conversation_id=(await bruno.until("offer"))["conversation"]["id"]
        )
        await vera.until("assigned")
        await bruno.send("message", conversation_id=cid, client_id="b1", text="How can I help?")
        await vera.until("message")
        # The visitor answers after 50 s: no warning; then the operator writes again.
        await trio.sleep(50)
        await vera.send("message", client_id="v1", text="My invoice")
        await bruno.until("message")
        await trio.sleep(100)  # the operator's turn: no idle deadline runs
        await bruno.send("message", conversation_id=cid, client_id="b2", text="Which one?")
        wrote = trio.current_time()
        warning = await vera.until("idle_warning", timeout=200)
        assert warning["closes_in"] == 30.0 and warning["conversation_id"] == cid
        assert 59.9 < trio.current_time() - wrote < 60.1
        assert (await bruno.until("idle_warning"))["seq"] == warning["seq"]
        ended = await vera.until("ended", timeout=200)
        assert ended["by"] == "visitor_idle"
        assert 89.9 < trio.current_time() - wrote < 90.1
        await vera.until("closed")
        assert (await bruno.until("ended"))["by"] == "visitor_idle"
    [conv] = gw.hub.store.conversations()  # type: ignore[attr-defined]
    assert conv.status.value == "closed" and conv.ended_by == "visitor_idle"


async def test_a_missed_reply_deadline_gives_the_visitor_to_another_operator(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """F16: an operator who leaves the visitor's message unanswered for ``operator_reply``
    loses the conversation: it goes back to the queue and is offered to another operator
    first; an operator who replies in time keeps it."""
    config = with_service(
        make_config(), 25, lambda body: body["timers"].update(operator_reply=45.0)
    )
    async with (
        open_memory_gateway(config) as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)  # group 1
        cid = (await start(vera, 25))["conversation_id"]
        await carla.send(
            "accept", conversation_id=(await carla.until("offer"))["conversation"]["id"]
        )
        await vera.until("assigned")
        # Replied in time: nothing happens.
        await vera.send("message", client_id="v1", text="Hello?")
        await carla.until("message")
        await trio.sleep(40)
        await carla.send("message", conversation_id=cid, client_id="c1", text="Hi!")
        await vera.until("message")
        await trio.sleep(100)  # the visitor's turn: no reply deadline runs
        async with connect_memory(gw, "/ws/operator") as alice:
            # Alice became available just now and Carla was offered long ago, so Carla would
            # be idle longest — but she let the visitor down, so she ranks last.
            await login(alice, TOK_ALICE)
            await vera.send("message", client_id="v2", text="Are you there?")
            asked = trio.current_time()
            transferred = await vera.until("transferred", timeout=100)
            assert transferred["reason"] == "operator_reply_timeout"
            assert transferred["to"] == {"kind": "group", "id": 1, "name": "Support"}
            assert 44.9 < trio.current_time() - asked < 45.1
            told = await carla.until("transferred")
            assert told["seq"] == transferred["seq"]
            offer = await alice.until("offer", timeout=5)
            assert offer["conversation"]["id"] == cid
            await alice.send("accept", conversation_id=cid)
            assigned = await vera.until("assigned")
            assert assigned["operator"] == {"id": 1, "name": "Alice"}
            # Alice gets the history first, the unanswered message included.
            while (await alice.until("assigned"))["seq"] != assigned["seq"]:
                pass  # the history has Carla's assignment too
            texts = [f.get("text") for f in alice.received if f.get("type") == "message"]
            assert texts[-2:] == ["Hi!", "Are you there?"]


async def test_the_out_of_hours_folder(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F4: the console lists the out-of-hours conversations its operator may resume — those of
    the services the operator's groups serve — a page at a time, newest first."""
    import omni.actors.operator

    monkeypatch.setattr(omni.actors.operator, "FOLDER_PAGE", 2)
    config = with_service(make_config(), 25, lambda body: body.update(schedule="never"))
    async with (
        open_memory_gateway(config) as gw,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/operator") as bruno,
    ):
        await login(alice, TOK_ALICE, available=False)  # groups 1, 2: services 25, 27
        await login(bruno, TOK_BRUNO, available=False)  # group 2: service 27
        ids = []
        for name, service in (("Olga", 25), ("Fritz", 26), ("Pia", 25), ("Quinn", 25)):
            async with connect_memory(gw, "/ws/visitor") as visitor:
                started = await start(visitor, service, name=name)
                await visitor.expect("out_of_hours")
                ids.append(started["conversation_id"])
            await trio.sleep(1)
        olga, _fritz, pia, quinn = ids
        # Each one in Alice's scope was pushed to her as it arrived (tests/test_console.py).
        for conversation_id in (olga, pia, quinn):
            assert (await alice.expect("folder_changed"))["added"]["id"] == conversation_id

        await alice.send("folder", name="out_of_hours")
        page = await alice.expect("folder")
        assert page["name"] == "out_of_hours"
        assert [c["id"] for c in page["conversations"]] == [quinn, pia]
        assert page["conversations"][0]["visitor"] == {"name": "Quinn"}
        assert page["conversations"][0]["service_id"] == 25
        await alice.send("folder", name="out_of_hours", cursor=page["next_cursor"])
        page = await alice.expect("folder")
        assert [c["id"] for c in page["conversations"]] == [olga]
        assert page["next_cursor"] is None
        await bruno.send("folder", name="out_of_hours")
        assert (await bruno.expect("folder"))["conversations"] == []

        # Resumed, it leaves the folder.
        await alice.send("resume", conversation_id=pia)
        await alice.until("assigned")
        assert (await alice.expect("folder_changed"))["removed"] == pia
        await alice.send("folder", name="out_of_hours")
        assert [c["id"] for c in (await alice.expect("folder"))["conversations"]] == [quinn, olga]

        await alice.send("folder", name="spam")
        assert (await alice.expect("error"))["code"] == "unknown_folder"
        await alice.send("folder", name="out_of_hours", cursor="yesterday|x")
        assert (await alice.expect("error"))["code"] == "invalid_cursor"
