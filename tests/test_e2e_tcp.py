"""The whole conversation flow, end to end: over real websockets on 127.0.0.1 (server on
ephemeral ports), and the very same flow in virtual time over in-memory streams."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from omni.actors.hub import Hub
from omni.server import RunningServer
from tests.support import (
    TOK_ALICE,
    Client,
    connect_memory,
    connect_tcp,
    login,
    open_memory_gateway,
    start,
)

Connect = Callable[[str], AbstractAsyncContextManager[Client]]


async def test_visitor_and_operator_hold_a_whole_conversation(server: RunningServer) -> None:
    await whole_conversation(lambda path: connect_tcp(f"{server.ws_url}{path}"), server.hub)


async def test_the_same_flow_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    wall = time.monotonic()
    async with open_memory_gateway(operator_grace_seconds=600) as gw:
        await whole_conversation(lambda path: connect_memory(gw, path), gw.hub)
        # And a 10-minute grace period, start to finish.
        async with connect_memory(gw, "/ws/visitor") as vera:
            cid = (await start(vera))["conversation_id"]
            async with connect_memory(gw, "/ws/operator") as alice:
                await login(alice, TOK_ALICE)
                await alice.send(
                    "accept", conversation_id=(await alice.expect("offer"))["conversation"]["id"]
                )
                await vera.until("assigned")
            before = trio.current_time()
            transferred = await vera.until("transferred", timeout=700)
            assert transferred["reason"] == "operator_disconnected"
            assert 600 <= trio.current_time() - before < 601
            assert gw.hub.conversations[cid].status.value == "queued"
    assert time.monotonic() - wall < 2.0, "virtual time: ten minutes must cost milliseconds"


async def whole_conversation(connect: Connect, hub: Hub) -> None:
    async with connect("/ws/operator") as alice, connect("/ws/visitor") as vera:
        welcome = await login(alice, TOK_ALICE)
        assert welcome["operator"]["name"] == "Alice"
        assert welcome["conversations"] == []

        started = await start(vera, name="Vera", email="vera@example.com")
        assert re.fullmatch(r"\d{4}-\d{6}", started["ticket"])
        cid = started["conversation_id"]
        queued = await vera.expect("queued")
        assert queued["position"] == 1

        offer = await alice.expect("offer")
        assert offer["conversation"]["id"] == cid
        assert offer["conversation"]["visitor"]["name"] == "Vera"
        await alice.send("accept", conversation_id=cid)

        assigned = await vera.expect("assigned")
        assert assigned["operator"]["name"] == "Alice"
        assert assigned["avatar"] == {"name": "Ana", "image": "/ana.png"}
        greeting = await vera.expect("message")
        assert greeting["text"] == "Hi Vera, Alice here."
        assert greeting["seq"] > assigned["seq"]
        assert (await alice.expect("assigned"))["seq"] == assigned["seq"]
        assert (await alice.expect("message"))["seq"] == greeting["seq"]

        await vera.send("message", client_id="v1", text="My order is late 😟")
        ack = await vera.expect("ack", client_id="v1")
        got = await alice.expect("message")
        assert got["text"] == "My order is late 😟" and got["seq"] == ack["seq"]
        assert got["author"]["kind"] == "visitor"

        await alice.send("typing", conversation_id=cid)
        assert (await vera.expect("typing"))["author"]["kind"] == "operator"
        await alice.send("message", conversation_id=cid, client_id="a1", text="Let me check.")
        a_ack = await alice.expect("ack", client_id="a1")
        reply = await vera.expect("message")
        assert reply["text"] == "Let me check." and reply["seq"] == a_ack["seq"] > ack["seq"]

        # A resend after a lost ack: same ack, nothing stored twice, nothing delivered twice.
        await vera.send("message", client_id="v1", text="My order is late 😟")
        again = await vera.expect("ack", client_id="v1")
        assert again["seq"] == ack["seq"]
        await alice.expect_quiet()  # the resend was handled before its ack: nothing followed

        await vera.send("end")
        ended = await vera.expect("ended", by="visitor")
        assert (await alice.expect("ended"))["seq"] == ended["seq"]
        survey = await vera.expect("survey")
        assert [q["id"] for q in survey["questions"]] == ["rating", "comment"]
        await vera.send("survey", answers={"rating": 5, "comment": "quick"})
        closed = await vera.expect("closed", message="Bye!")
        assert closed["seq"] > survey["seq"]
        await alice.expect("closed")
        assert await hub.store.survey(cid) == {"rating": 5, "comment": "quick"}

        # Nothing is accepted after closed.
        await vera.send("message", client_id="v2", text="hello?")
        assert (await vera.expect("error"))["code"] == "conversation_closed"


async def test_metrics_and_health_over_http(server: RunningServer) -> None:
    """After real traffic, /metrics counts it: connections, conversations by state, the queue,
    operators by presence, messages relayed; /healthz agrees."""
    url = server.ws_url
    async with (
        connect_tcp(f"{url}/ws/operator") as alice,
        connect_tcp(f"{url}/ws/visitor") as vera,
        connect_tcp(f"{url}/ws/visitor") as will,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        await login(alice, TOK_ALICE)
        cid = (await start(vera))["conversation_id"]
        await alice.send("accept", conversation_id=(await alice.until("offer"))["conversation_id"])
        await vera.until("message")  # the greeting
        await vera.send("message", client_id="v1", text="Hi")
        while (await alice.until("message"))["text"] != "Hi":
            pass  # the greeting Alice sent comes first
        await alice.send("message", conversation_id=cid, client_id="a1", text="Hello")
        await vera.until("message")
        await alice.send("status", status="paused", reason="lunch")
        assert await alice.until("status") == {
            "type": "status",
            "status": "paused",
            "reason": "lunch",
        }
        await start(will, name="Will")
        await will.expect("queued")
        health = (await http.get("/healthz")).json()
        response = await http.get("/metrics")
    assert health == {"status": "ok", "conversations": 2, "operators_online": 1}
    assert response.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("omni_connections", (("kind", "visitor"),))] == 2
    assert samples[("omni_connections", (("kind", "operator"),))] == 1
    assert samples[("omni_conversations", (("state", "active"),))] == 1
    assert samples[("omni_conversations", (("state", "queued"),))] == 1
    assert samples[("omni_queue_length", (("group", "1"),))] == 1
    # Paused operators by pause reason: every configured one has a series, '' is "none given".
    assert samples[("omni_operators", (("presence", "paused"), ("reason", "lunch")))] == 1
    assert samples[("omni_operators", (("presence", "paused"), ("reason", "break")))] == 0
    assert samples[("omni_operators", (("presence", "paused"), ("reason", "")))] == 0
    assert samples[("omni_operators", (("presence", "offline"), ("reason", "")))] == 2
    assert samples[("omni_operators", (("presence", "available"), ("reason", "")))] == 0
    # The greeting, Vera's message and Alice's reply.
    assert samples[("omni_messages_relayed_total", ())] == 3
