"""A fault in one conversation actor leaves every other conversation working (one-for-one)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from omni.actors.conversation import ConversationActor
from omni.domain import conversation as domain
from tests.support import (
    TOK_ALICE,
    TOK_CARLA,
    connect_memory,
    login,
    make_config,
    open_memory_gateway,
    start,
    with_service,
)


def inject_fault(monkeypatch: pytest.MonkeyPatch, trigger: str = "boom") -> list[str]:
    """Make a conversation actor crash while handling a visitor message whose text is
    ``trigger`` — after the rules ran, before the store write, like a bug in the actor would."""
    crashed: list[str] = []
    original = ConversationActor._carry_out

    async def carry_out(self: ConversationActor, effects: list[Any], **options: Any) -> None:
        for effect in effects:
            if isinstance(effect, domain.Emit) and getattr(effect.frame, "text", None) == trigger:
                crashed.append(self._conv.id)
                raise RuntimeError("injected fault")
        await original(self, effects, **options)

    monkeypatch.setattr(ConversationActor, "_carry_out", carry_out)
    return crashed


async def test_crash_in_one_conversation_leaves_the_others_working(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    crashed = inject_fault(monkeypatch)
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        async with (
            connect_memory(gw, "/ws/visitor") as vera,
            connect_memory(gw, "/ws/visitor") as will,
        ):
            v = await start(vera, name="Vera")
            w = await start(will, name="Will")
            for _ in range(2):
                offer = await alice.until("offer")
                await alice.send("accept", conversation_id=offer["conversation"]["id"])
            await vera.until("assigned")
            await will.until("assigned")
            await vera.send("message", client_id="ok1", text="before")
            await vera.until("ack")

            await vera.send("message", client_id="b", text="boom")
            error = await vera.until("error")
            assert error["code"] == "internal_error"
            assert crashed == [v["conversation_id"]]

            # The other conversation never noticed.
            await will.send("message", client_id="w1", text="are you there?")
            await will.until("ack")
            await alice.until("message")
            await alice.send(
                "message", conversation_id=w["conversation_id"], client_id="a1", text="yes"
            )
            assert (await will.until("message"))["text"] == "yes"
            assert gw.hub.conversations_supervisor.statistics().restarts == 1

        # The crashed conversation was restarted from the store: Vera resumes, nothing is lost,
        # the faulty message was never acknowledged or stored.
        async with connect_memory(gw, "/ws/visitor") as again:
            await again.send("resume", token=v["token"], last_seq=0)
            await again.expect("resumed", status="active")
            replay = [await again.recv() for _ in range(3)]
            assert [f["type"] for f in replay] == ["assigned", "message", "message"]
            assert replay[2]["text"] == "before"
            await again.send("message", client_id="ok2", text="after the crash")
            ack = await again.expect("ack")
            assert ack["seq"] == replay[2]["seq"] + 1
        texts = [e.data.get("text") for e in gw.hub.store.all_events(v["conversation_id"])]  # type: ignore[attr-defined]
        assert "boom" not in texts and texts[-1] == "after the crash"


async def test_a_conversation_that_keeps_crashing_is_given_up_alone(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    inject_fault(monkeypatch)
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/visitor") as will:
        await start(will, name="Will")
        await will.expect("queued")
        supervisor = gw.hub.conversations_supervisor
        async with connect_memory(gw, "/ws/visitor") as vera:
            v = await start(vera)
            cid = v["conversation_id"]
            await vera.send("message", client_id="b0", text="boom")
            await vera.until("error")
        attempts = 1
        while supervisor.statistics().given_up == 0:
            assert attempts <= supervisor.max_restarts + 1, "the supervisor never gave up"
            async with connect_memory(gw, "/ws/visitor") as vera:
                await vera.send("resume", token=v["token"], last_seq=0)
                await vera.until("resumed")
                await vera.send("message", client_id=f"b{attempts}", text="boom")
                assert (await vera.until("error"))["code"] == "internal_error"
            attempts += 1
        assert attempts == supervisor.max_restarts + 1
        # Given up: out of the registry and out of the queue; nothing else was touched.
        assert cid not in gw.hub.conversations
        await trio.testing.wait_all_tasks_blocked()
        from omni.actors.group import QueueSnapshot

        assert cid not in await gw.hub.group(1).ask(QueueSnapshot())
        assert gw.hub.queue_lengths[1] == 1
        await will.send("message", client_id="w", text="still fine")
        await will.expect("ack")
        # The visitor coming back gives the conversation a fresh start, in its queue again.
        async with connect_memory(gw, "/ws/visitor") as vera:
            await vera.send("resume", token=v["token"], last_seq=0)
            await vera.until("resumed")
            assert (await vera.expect("queued"))["position"] == 2
            await vera.send("message", client_id="fine", text="hello again")
            await vera.expect("ack")


async def test_a_queued_conversation_restarted_after_a_crash_keeps_its_queue_timer(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A restart goes through the one restore path: the queue timeout still counts from when
    the visitor began waiting (it used to be lost with the crashed incarnation)."""
    inject_fault(monkeypatch)
    config = with_service(
        make_config(), 25, lambda body: body["timers"].update(queue_timeout=120.0)
    )
    async with open_memory_gateway(config) as gw:
        t0 = trio.current_time()
        async with connect_memory(gw, "/ws/visitor") as vera:
            v = await start(vera)
            await vera.expect("queued")
            await trio.sleep(30)
            await vera.send("message", client_id="b", text="boom")
            assert (await vera.until("error"))["code"] == "internal_error"
        assert gw.hub.conversations_supervisor.statistics().restarts == 1
        async with connect_memory(gw, "/ws/visitor") as again:
            await again.send("resume", token=v["token"], last_seq=0)
            await again.until("resumed")
            ended = await again.until("ended", timeout=200)
            assert ended["by"] == "queue_timeout"
            assert 119.9 < trio.current_time() - t0 < 120.1


async def test_an_offered_conversation_restarted_after_a_crash_is_offered_again(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """The offer died with the incarnation that made it: the operator is told, their reserved
    slot is given back, and the conversation is offered again at once from its queue — not
    after an offer timeout with a slot held for nothing."""
    inject_fault(monkeypatch)
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,  # capacity 1
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)
        cid = (await start(vera))["conversation_id"]
        assert (await carla.until("offer"))["conversation"]["id"] == cid
        before = trio.current_time()
        await vera.send("message", client_id="b", text="boom")
        await vera.until("error")
        assert (await carla.until("offer_withdrawn"))["conversation_id"] == cid
        again = await carla.until("offer")
        assert again["conversation"]["id"] == cid
        assert trio.current_time() - before < 1
        await carla.send("accept", conversation_id=cid)
        await carla.until("assigned")
