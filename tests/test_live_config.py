"""Live configuration (F20), the issue's acceptance test: an administrator edits a schedule and a
group's operators through the admin API while conversations are live, and the effect is seen at
once — without a restart.

Every test runs one real server (127.0.0.1, ephemeral ports, memory store): visitors and
operators on TCP websockets, the administrator on HTTP with an admin bearer token. Each test
ends by checking that it is still the same server — same hub, same ports, answering.

Configuration (``tests.support.make_config``): service 25 -> group 1 on the always-open schedule
``always``; service 27 -> group 2 (no survey); Alice (1) in groups 1 and 2, capacity 2; Bruno
(2) in group 2, capacity 1; Carla (3) in group 1, capacity 1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from omni.actors.conversation import Summary
from omni.actors.group import QueueSnapshot
from omni.actors.hub import Hub
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.support import (
    TOK_BRUNO,
    TOK_CARLA,
    Client,
    api_token,
    connect_tcp,
    login,
    make_config,
    start,
    with_items,
)

ADMIN_TOKEN = "admin-live-config-token-Zx4Cv6Bn"
#: Operator grace period of these servers, seconds (real time: kept short).
GRACE = 1.0
#: "At once": a live change must show within this (no timer is involved).
AT_ONCE = 2.0
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class Omni:
    server: RunningServer
    api: httpx.AsyncClient
    hub: Hub = field(init=False)
    ports: tuple[int, int | None] = field(init=False)

    def __post_init__(self) -> None:
        self.hub = self.server.hub
        self.ports = (self.server.ws_port, self.server.http_port)

    async def edit(self, path: str, **changes: Any) -> dict[str, Any]:
        """GET a resource, change some fields, PUT it back (secrets are kept when omitted)."""
        response = await self.api.get(path)
        assert response.status_code == 200, response.text
        body = {**response.json(), **changes}
        response = await self.api.put(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/conversations/{conversation_id}")
        assert response.status_code == 200, response.text
        return response.json()["conversation"]  # type: ignore[no-any-return]

    async def waiting(self, group_id: int) -> int:
        response = await self.api.get("/api/v1/queues")
        assert response.status_code == 200, response.text
        return next(q["waiting"] for q in response.json() if q["group_id"] == group_id)

    async def settled(self) -> None:
        """Every actor has handled what it was sent so far: each group's dispatch (a queue
        snapshot comes back through its mailbox, behind any dispatch asked for), then each
        conversation's offers (a summary comes back behind them) — twice, for what the first
        round set off. A barrier, not a wait."""
        for _ in range(2):
            for group_id in sorted(self.hub.directory.groups):
                await self.hub.group(group_id).ask(QueueSnapshot())
            for entry in list(self.hub.conversations.values()):
                await entry.ref.ask(Summary())

    async def assert_not_restarted(self) -> None:
        assert self.server.hub is self.hub
        assert (self.server.ws_port, self.server.http_port) == self.ports
        health = await self.api.get("/healthz")
        assert health.status_code == 200
        async with connect_tcp(f"{self.server.ws_url}/ws/visitor") as probe:
            await probe.send("ping")
            await probe.expect("pong")


@pytest.fixture
async def omni() -> AsyncIterator[Omni]:
    config = make_config(operator_grace_seconds=GRACE)
    config = with_items(config, api_token("admin", ADMIN_TOKEN))
    async with (
        open_server(
            config, entropy=SeededEntropy(5), host="127.0.0.1", ws_port=0, http_port=0
        ) as server,
        httpx.AsyncClient(
            base_url=server.http_url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        ) as api,
    ):
        running = Omni(server, api)
        yield running
        await running.assert_not_restarted()


async def _queued(client: Client, service_id: int, name: str) -> tuple[str, int]:
    cid: str = (await start(client, service_id, name))["conversation_id"]
    queued = await client.expect("queued")
    return cid, queued["position"]


async def _offered(operator: Client, conversation_id: str) -> None:
    offer = await operator.until("offer", timeout=AT_ONCE)
    assert offer["conversation"]["id"] == conversation_id


async def _take(operator: Client, conversation_id: str) -> None:
    """Accept an offer already received."""
    await operator.send("accept", conversation_id=conversation_id)
    while (await operator.until("assigned"))["conversation_id"] != conversation_id:
        pass


async def _accept(operator: Client, conversation_id: str) -> None:
    """Expect the next offer to be ``conversation_id`` (at once) and accept it."""
    await _offered(operator, conversation_id)
    await _take(operator, conversation_id)


async def _no_offer(omni: Omni, operator: Client) -> None:
    """No offer was made to the operator, and none is on its way."""
    await omni.settled()
    await operator.expect_quiet("offer")


async def _said(client: Client, text: str) -> None:
    """Skip frames up to the message saying ``text`` (greetings come first)."""
    while (await client.until("message"))["text"] != text:
        pass


async def test_a_schedule_closed_live_keeps_the_queue_and_turns_new_visitors_away(
    omni: Omni,
) -> None:
    """(a) Queued conversations stay queued, in place, when their service's schedule closes;
    new visitors get ``out_of_hours`` at once; reopening queues new visitors again."""
    ws = omni.server.ws_url
    async with (
        connect_tcp(f"{ws}/ws/visitor") as v1,
        connect_tcp(f"{ws}/ws/visitor") as v2,
        connect_tcp(f"{ws}/ws/visitor") as v3,
        connect_tcp(f"{ws}/ws/visitor") as v4,
        connect_tcp(f"{ws}/ws/operator") as carla,
    ):
        c1, p1 = await _queued(v1, 25, "Vera")
        c2, p2 = await _queued(v2, 25, "Will")
        assert (p1, p2) == (1, 2)

        closed = await omni.edit("/api/v1/schedules/always", weekly={})
        assert closed["weekly"] == {}
        # Nothing happens to those already waiting: no frame, same status, same places.
        await omni.settled()
        await v1.expect_quiet()
        await v2.expect_quiet()
        assert (await omni.conversation(c1))["status"] == "queued"
        assert (await omni.conversation(c2))["status"] == "queued"
        assert await omni.waiting(1) == 2

        # A new visitor is out of hours at once.
        c3 = (await start(v3, 25, "Xena"))["conversation_id"]
        ooh = await v3.expect("out_of_hours", timeout=AT_ONCE)
        assert ooh["seq"] == 1
        assert (await omni.conversation(c3))["status"] == "out_of_hours"

        # Open again: the next visitor queues, behind the two who never left.
        await omni.edit("/api/v1/schedules/always", weekly={d: [["00:00", "24:00"]] for d in WEEK})
        _, p4 = await _queued(v4, 25, "Yuri")
        assert p4 == 3
        assert await omni.waiting(1) == 3
        assert (await omni.conversation(c3))["status"] == "out_of_hours"

        # The queue kept its order: the first operator's offer is the head, Vera's.
        await login(carla, TOK_CARLA)
        await _accept(carla, c1)
        assert (await v2.expect("queued"))["position"] == 1
        assert (await v4.expect("queued"))["position"] == 2


async def test_an_operator_added_to_a_group_gets_its_waiting_conversations_at_once(
    omni: Omni,
) -> None:
    """(b) PUT /api/v1/operators/{id} adding a group: the signed-in operator is offered that
    group's waiting conversations at once; removing the group stops new offers (what they
    hold stays theirs)."""
    ws = omni.server.ws_url
    async with (
        connect_tcp(f"{ws}/ws/operator") as bruno,
        connect_tcp(f"{ws}/ws/visitor") as v1,
        connect_tcp(f"{ws}/ws/visitor") as v2,
    ):
        welcome = await login(bruno, TOK_BRUNO)
        assert [g["id"] for g in welcome["groups"]] == [2]
        c1, _ = await _queued(v1, 25, "Vera")  # group 1: not Bruno's
        c2, _ = await _queued(v2, 25, "Will")
        await _no_offer(omni, bruno)

        edited = await omni.edit("/api/v1/operators/2", groups=[1, 2], capacity=2)
        assert "token" not in edited and "token_hash" not in edited
        # At once, in queue order, up to his capacity of 2.
        await _offered(bruno, c1)
        await _offered(bruno, c2)
        await _take(bruno, c1)
        await v1.until("assigned")

        # Out of group 1 again. An offer already made stays his until accepted or expired.
        await omni.edit("/api/v1/operators/2", groups=[2])
        await _take(bruno, c2)
        await bruno.send("end", conversation_id=c2)
        await v2.until("ended")

        async with connect_tcp(f"{ws}/ws/visitor") as v3:
            c3, position = await _queued(v3, 25, "Xena")
            assert position == 1
            await _no_offer(omni, bruno)  # free capacity, but not in group 1 any more
            assert (await omni.conversation(c3))["status"] == "queued"
            assert await omni.waiting(1) == 1
            # What he holds from group 1 is still his: he can answer and end it.
            await bruno.send("message", conversation_id=c1, client_id="b-1", text="Still here")
            await _said(v1, "Still here")
            await bruno.send("end", conversation_id=c1)
            await v1.until("ended")


async def test_an_operator_made_inactive_is_signed_out_and_their_conversation_requeued(
    omni: Omni,
) -> None:
    """(c) active=false: the operator gets ``operator_deactivated`` and the connection closes;
    their active conversation goes back to the queue after the grace period, not before."""
    ws = omni.server.ws_url
    async with (
        connect_tcp(f"{ws}/ws/operator") as carla,
        connect_tcp(f"{ws}/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA)
        cid, _ = await _queued(vera, 25, "Vera")
        await _accept(carla, cid)
        await vera.until("assigned")

        await omni.edit("/api/v1/operators/3", active=False)
        deactivated = trio.current_time()
        error = await carla.until("error")
        assert error["code"] == "operator_deactivated"
        with pytest.raises(ConnectionClosed) as closed:
            await carla.recv(AT_ONCE)
        assert closed.value.reason.code == 1008
        assert closed.value.reason.reason == "operator_deactivated"
        assert 3 not in omni.hub.sessions

        # During the grace period the conversation stays active, with nobody to requeue it (and
        # the requeue below comes no sooner than the grace period allows).
        await omni.settled()
        await vera.expect_quiet("transferred", "queued")
        assert (await omni.conversation(cid))["status"] == "active"
        transferred = await vera.expect("transferred", timeout=GRACE * 5)
        at = trio.current_time()
        assert transferred["reason"] == "operator_disconnected"
        assert transferred["to"] == {"kind": "group", "id": 1, "name": "Support"}
        assert at - deactivated >= GRACE * 0.9
        assert (await vera.expect("queued"))["position"] == 1
        assert (await omni.conversation(cid))["status"] == "queued"
        assert await omni.waiting(1) == 1

        # An inactive operator cannot sign in again.
        async with connect_tcp(f"{ws}/ws/operator") as again:
            await again.send("login", token=TOK_CARLA)
            assert (await again.expect("error"))["code"] == "invalid_login"
        # Active again: she signs in and is offered the conversation she lost.
        await omni.edit("/api/v1/operators/3", active=True)
        async with connect_tcp(f"{ws}/ws/operator") as back:
            await login(back, TOK_CARLA)
            await _accept(back, cid)


async def test_a_group_unlinked_from_a_service_keeps_its_open_conversations(
    omni: Omni,
) -> None:
    """(d) A group removed from a service's links takes no new conversations of it, but keeps
    those it has until they end: the open one can still be answered and ended, the waiting one
    is still offered there."""
    ws = omni.server.ws_url
    async with (
        connect_tcp(f"{ws}/ws/operator") as carla,
        connect_tcp(f"{ws}/ws/visitor") as v1,
        connect_tcp(f"{ws}/ws/visitor") as v2,
        connect_tcp(f"{ws}/ws/visitor") as v3,
    ):
        await login(carla, TOK_CARLA)  # group 1, capacity 1
        c1, _ = await _queued(v1, 25, "Vera")
        await _accept(carla, c1)
        await v1.until("assigned")
        c2, _ = await _queued(v2, 25, "Will")  # waits in group 1: Carla is full

        services = await omni.edit("/api/v1/services/25", links=[{"group": 2, "schedule": None}])
        assert services["links"] == [{"group": 2, "schedule": None}]
        # New conversations of service 25 go to group 2 now.
        c3, _ = await _queued(v3, 25, "Xena")
        assert (await omni.conversation(c3))["group_id"] == 2
        assert await omni.waiting(2) == 1
        # Group 1 keeps what it had.
        assert (await omni.conversation(c2))["group_id"] == 1
        assert await omni.waiting(1) == 1
        await _no_offer(omni, carla)

        # The open one is answered and ended in group 1 ...
        await carla.send("message", conversation_id=c1, client_id="c-1", text="Done soon")
        await _said(v1, "Done soon")
        await carla.send("end", conversation_id=c1)
        await v1.until("ended")
        # ... and the freed slot takes the one still waiting in group 1, which ends normally.
        await _accept(carla, c2)
        await v2.until("assigned")
        await carla.send("message", conversation_id=c2, client_id="c-2", text="Hello Will")
        await _said(v2, "Hello Will")
        await v2.send("end")
        await v2.until("ended")
        assert (await omni.conversation(c2))["group_id"] == 1
        assert await omni.waiting(1) == 0
        # Group 1 gets nothing from service 25 any more, even with Carla free.
        await _no_offer(omni, carla)
        assert (await omni.conversation(c3))["status"] == "queued"


async def test_capacity_changes_apply_to_the_next_offers(omni: Omni) -> None:
    """(e) Raising capacity offers waiting conversations at once; lowering it keeps what is
    held and offered, and offers nothing more until the load is below the new capacity."""
    ws = omni.server.ws_url
    async with (
        connect_tcp(f"{ws}/ws/operator") as carla,
        connect_tcp(f"{ws}/ws/visitor") as v1,
        connect_tcp(f"{ws}/ws/visitor") as v2,
        connect_tcp(f"{ws}/ws/visitor") as v3,
        connect_tcp(f"{ws}/ws/visitor") as v4,
    ):
        await login(carla, TOK_CARLA)  # capacity 1
        c1, _ = await _queued(v1, 25, "Vera")
        await _accept(carla, c1)
        c2, _ = await _queued(v2, 25, "Will")
        c3, _ = await _queued(v3, 25, "Xena")
        await _no_offer(omni, carla)

        await omni.edit("/api/v1/operators/3", capacity=3)
        await _offered(carla, c2)
        await _offered(carla, c3)
        await _take(carla, c2)
        await _take(carla, c3)

        await omni.edit("/api/v1/operators/3", capacity=1)
        c4, _ = await _queued(v4, 25, "Yuri")
        await _no_offer(omni, carla)
        for held, visitor in ((c1, v1), (c2, v2)):
            await carla.send("end", conversation_id=held)
            await visitor.until("ended")
            await _no_offer(omni, carla)  # load 2, then 1: not below capacity 1
        assert (await omni.conversation(c4))["status"] == "queued"
        await carla.send("end", conversation_id=c3)
        await v3.until("ended")
        await _accept(carla, c4)


async def test_a_group_deleted_while_it_holds_an_open_conversation_strands_nobody(
    omni: Omni,
) -> None:
    """A group that no service links and no operator has may be deleted; a conversation still
    open in it must not be left in a queue that no longer exists. Whatever the server does —
    refuse the deletion, or requeue elsewhere — once the operator has left and the grace period
    is over, the conversation waits in a group that ``GET /api/v1/queues`` lists."""
    ws = omni.server.ws_url
    async with connect_tcp(f"{ws}/ws/visitor") as vera:
        async with connect_tcp(f"{ws}/ws/operator") as bruno:
            await login(bruno, TOK_BRUNO)  # group 2
            cid, _ = await _queued(vera, 27, "Vera")  # service 27 -> group 2
            await _accept(bruno, cid)
            await vera.until("assigned")
            # Group 2 emptied: service 27 now goes to group 1, nobody is in group 2 any more.
            await omni.edit("/api/v1/services/27", links=[{"group": 1, "schedule": None}])
            await omni.edit("/api/v1/operators/1", groups=[1])
            await omni.edit("/api/v1/operators/2", groups=[1])
            deleted = await omni.api.delete("/api/v1/groups/2")
            assert deleted.status_code in (204, 409), deleted.text
        # Bruno has left; after the grace period the conversation goes back to a queue.
        transferred = await vera.until("transferred", timeout=GRACE * 5)
        assert transferred["reason"] == "operator_disconnected"
        conversation = await omni.conversation(cid)
        assert conversation["status"] == "queued"
        queues = (await omni.api.get("/api/v1/queues")).json()
        listed = {q["group_id"]: q["waiting"] for q in queues}
        assert conversation["group_id"] in listed, (
            f"conversation {cid} waits in group {conversation['group_id']}, which is not in "
            f"GET /api/v1/queues {sorted(listed)}: nobody can ever be offered it"
        )
        assert listed[conversation["group_id"]] == 1


async def test_a_deleted_services_open_conversations_survive_a_restart() -> None:
    """A service deleted while it has open conversations: they finish under its last
    definition — also after a restart, when that definition comes back from the audit log."""
    config = make_config(operator_grace_seconds=30)
    config = with_items(config, api_token("admin", ADMIN_TOKEN))
    store = MemoryStore()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    evening = {"id": 41, "name": "Evening", "schedule": "never", "links": [{"group": 1}]}

    async with (
        open_server(config, store=store, host="127.0.0.1", ws_port=0, http_port=0) as first,
        httpx.AsyncClient(base_url=first.http_url, headers=auth, timeout=10) as api,
    ):
        assert (await api.post("/api/v1/services", json=evening)).status_code == 201
        ws = first.ws_url
        async with (
            connect_tcp(f"{ws}/ws/operator") as carla,
            connect_tcp(f"{ws}/ws/visitor") as vera,
            connect_tcp(f"{ws}/ws/visitor") as quinn,
            connect_tcp(f"{ws}/ws/visitor") as olga,
        ):
            await login(carla, TOK_CARLA)  # group 1, capacity 1
            active = await start(vera, 25, "Vera")
            await _accept(carla, active["conversation_id"])
            await vera.until("assigned")
            queued = await start(quinn, 25, "Quinn")
            await quinn.expect("queued")
            closed = await start(olga, 41, "Olga")
            await olga.expect("out_of_hours")
            await olga.send("message", client_id="o1", text="Call me back")
            await olga.expect("ack", client_id="o1")
            for service in (25, 41):
                deleted = await api.delete(f"/api/v1/services/{service}")
                assert deleted.status_code == 204, deleted.text
            # Still running here, under the last definition.
            await vera.send("message", client_id="v1", text="Still there?")
            await _said(carla, "Still there?")
            assert first.hub.conversations[queued["conversation_id"]].status.value == "queued"

    async with (
        open_server(config, store=store, host="127.0.0.1", ws_port=0, http_port=0) as second,
        httpx.AsyncClient(base_url=second.http_url, headers=auth, timeout=10) as api,
    ):
        ws = second.ws_url
        assert second.configuration.get("services", "25") is None
        assert {active["conversation_id"], queued["conversation_id"]} <= set(
            second.hub.conversations
        ), "the deleted service's open conversations were not restored"
        async with (
            connect_tcp(f"{ws}/ws/operator") as carla,
            connect_tcp(f"{ws}/ws/visitor") as vera,
            connect_tcp(f"{ws}/ws/visitor") as quinn,
            connect_tcp(f"{ws}/ws/visitor") as olga,
        ):
            await login(carla, TOK_CARLA)
            await vera.send("resume", token=active["token"], last_seq=0)
            assert (await vera.until("resumed"))["status"] == "active"
            await quinn.send("resume", token=queued["token"], last_seq=0)
            assert (await quinn.until("resumed"))["status"] == "queued"
            await olga.send("resume", token=closed["token"], last_seq=0)
            assert (await olga.until("resumed"))["status"] == "out_of_hours"
            # The conversation goes on: the visitor is heard, the operator ends it, the next
            # one in the deleted service's queue is offered.
            await vera.send("message", client_id="v2", text="After the restart")
            await _said(carla, "After the restart")
            await carla.send("end", conversation_id=active["conversation_id"])
            await vera.until("ended")
            await _accept(carla, queued["conversation_id"])
            assert (await quinn.until("assigned"))["operator"]["id"] == 3
            # The out-of-hours one can still be resumed by an operator, and its service's
            # greeting (the last definition) is not needed for that.
            await olga.send("message", client_id="o2", text="Anyone?")
            while (await olga.until("ack"))["client_id"] != "o2":
                pass
            r = await api.get(f"/api/v1/conversations/{closed['conversation_id']}/transcript")
            texts = [e.get("text") for e in r.json()["events"] if e["type"] == "message"]
            assert texts == ["Call me back", "Anyone?"]
