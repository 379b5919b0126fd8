"""Any node accepts any client (cluster mode, docs/scale-out.md): a socket whose conversation or
operator is served by another node is relayed there through PostgreSQL, and the two sides chat
as on one node — acks, offers, events in order, ``client_id`` dedupe, close codes."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from omni.cluster import rendezvous
from omni.config import Config
from omni.domain.configuration import item_of
from omni.domain.model import Operator, Role, hash_token
from omni.server import RunningServer
from omni.store.postgres import PostgresStore
from tests.cluster_support import FAST_CLUSTER, cluster_node
from tests.support import (
    TOK_ALICE,
    TOK_CARLA,
    api_token,
    connect_tcp,
    eventually,
    login,
    make_config,
    with_items,
    with_service,
)
from tests.test_attachments import LIMITS, bearer, png
from tests.test_channels import FAST, post_tg, stored_texts, telegram, tg_body
from tests.test_supervisor import TOK_BOSS
from tests.webhook_receiver import open_receiver

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

CLUSTER = FAST_CLUSTER


def _node(
    dsn: str, name: str, config: Config | None = None, data_dir: Path | None = None
) -> AbstractAsyncContextManager[tuple[RunningServer, PostgresStore]]:
    """Node ``name``; with its own ``config``, its HTTP side too."""
    return cluster_node(dsn, name, config, http=config is not None, data_dir=data_dir)


def _owned(server: RunningServer) -> set[int]:
    assert server.ownership is not None
    return set(server.ownership.owned)


async def _two_nodes(stack: AsyncExitStack, dsn: str) -> tuple[RunningServer, RunningServer]:
    """Nodes "a" and "d": groups 1 and 2 (one domain) on "d", group 3 on "a"."""
    assert rendezvous(["a", "d"], "domain:1") == "d"
    assert rendezvous(["a", "d"], "domain:3") == "a"
    a, _ = await stack.enter_async_context(_node(dsn, "a"))
    d, _ = await stack.enter_async_context(_node(dsn, "d"))
    await eventually(lambda: _owned(d) == {1, 2} and _owned(a) == {3}, seconds=15)
    return a, d


async def test_a_visitor_and_an_operator_on_a_node_that_serves_neither_chat(
    postgres_dsn: str,
) -> None:
    async with AsyncExitStack() as stack:
        a, d = await _two_nodes(stack, postgres_dsn)
        store = d.hub.store
        # Both connect to "a"; service 25 (group 1) and Alice (groups 1, 2) are served on "d".
        async with (
            connect_tcp(f"{a.ws_url}/ws/operator") as alice,
            connect_tcp(f"{a.ws_url}/ws/visitor") as visitor,
        ):
            await login(alice, TOK_ALICE)
            assert 1 in alice_sessions(d) and not alice_sessions(a)
            await visitor.send("start", service_id=25, visitor={"name": "Ana"})
            started = await visitor.expect("started")
            conversation_id = started["conversation_id"]
            assert conversation_id in d.hub.conversations
            assert conversation_id not in a.hub.conversations
            offer = await alice.until("offer")
            assert offer["conversation"]["id"] == conversation_id
            await alice.send("accept", conversation_id=conversation_id)
            await visitor.until("assigned")
            for n in range(5):
                await visitor.send("message", client_id=f"v{n}", text=f"question {n}")
                ack = await visitor.until("ack")
                assert ack["client_id"] == f"v{n}"
                got = await alice.until("message")
                while got["text"] != f"question {n}":  # the greeting, sent as Alice
                    got = await alice.until("message")
                assert got["seq"] == ack["seq"]
                await alice.send(
                    "message",
                    conversation_id=conversation_id,
                    client_id=f"o{n}",
                    text=f"answer {n}",
                )
                answer = await visitor.until("message")
                assert answer["text"] == f"answer {n}"
            # The same client_id again: acknowledged again, stored once.
            await visitor.send("message", client_id="v0", text="question 0")
            await visitor.until("ack")
            await alice.send("end", conversation_id=conversation_id)
            await visitor.until("ended")
        events = await store.events_after(conversation_id, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        keys = [e.client_key[1] for e in events if e.client_key]
        assert sorted(keys) == sorted({*keys}) and "v0" in keys


def alice_sessions(server: RunningServer) -> set[int]:
    return set(server.hub.sessions)


async def test_a_visitor_resumes_through_another_node_and_misses_nothing(
    postgres_dsn: str,
) -> None:
    async with AsyncExitStack() as stack:
        a, d = await _two_nodes(stack, postgres_dsn)
        async with connect_tcp(f"{d.ws_url}/ws/operator") as carla:
            await login(carla, TOK_CARLA)
            async with connect_tcp(f"{d.ws_url}/ws/visitor") as visitor:
                await visitor.send("start", service_id=25, visitor={"name": "Bia"})
                started = await visitor.expect("started")
                conversation_id, token = started["conversation_id"], started["token"]
                await carla.send(
                    "accept", conversation_id=(await carla.until("offer"))["conversation"]["id"]
                )
                await visitor.until("assigned")
                await visitor.send("message", client_id="b1", text="first")
                last = (await visitor.until("ack"))["seq"]
            # Gone; the operator writes meanwhile; the visitor comes back through node "a".
            await carla.send(
                "message", conversation_id=conversation_id, client_id="c1", text="while away"
            )
            await carla.until("ack")
            async with connect_tcp(f"{a.ws_url}/ws/visitor") as visitor:
                await visitor.send("resume", token=token, last_seq=last)
                await visitor.expect("resumed")
                missed = await visitor.until("message")
                assert missed["text"] == "while away" and missed["seq"] > last
                await visitor.send("message", client_id="b2", text="back")
                assert (await carla.until("message"))["text"] == "back"
            # Closing the relayed socket detaches the visitor on the serving node.
            await eventually(
                lambda: d.hub.conversations[conversation_id].link.peer is None, seconds=5
            )


async def test_a_dead_serving_node_closes_its_relayed_sockets_with_moved(
    postgres_dsn: str,
) -> None:
    async with AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(_node(postgres_dsn, "a"))
        async with trio.open_nursery() as nursery:
            dead = trio.CancelScope()
            ready: list[RunningServer] = []

            async def doomed() -> None:
                with dead:
                    async with _node(postgres_dsn, "d") as (server, its_store):

                        async def no_leave(name: str, incarnation: int) -> None:
                            return None

                        its_store.leave_node = no_leave  # type: ignore[method-assign]
                        ready.append(server)
                        await trio.sleep_forever()

            nursery.start_soon(doomed)
            await eventually(lambda: bool(ready) and _owned(ready[0]) == {1, 2}, seconds=15)
            async with connect_tcp(f"{a.ws_url}/ws/visitor") as visitor:
                await visitor.send("start", service_id=25, visitor={"name": "Cida"})
                started = await visitor.expect("started")
                await visitor.until("queued")
                dead.cancel()
                error = await visitor.until("error", timeout=10)
                assert error["code"] == "moved"
            # Once "a" owns the groups, the same visitor resumes on "a" itself, still queued.
            await eventually(lambda: _owned(a) == {1, 2, 3}, seconds=15)
            async with connect_tcp(f"{a.ws_url}/ws/visitor") as visitor:
                await visitor.send("resume", token=started["token"], last_seq=0)
                assert (await visitor.expect("resumed"))["status"] == "queued"
            nursery.cancel_scope.cancel()


async def test_a_channels_message_posted_to_any_node_is_taken_by_the_serving_node(
    postgres_dsn: str,
) -> None:
    """Telegram posts to node "a"; the conversation (service 27, group 2) is served by "d":
    the message is handed over, stored once there (a repeat to either node is dropped), and
    the replies reach the platform."""
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        config = with_items(
            make_config(cluster=CLUSTER, webhooks=FAST), item_of("channels", telegram(base))
        )
        async with AsyncExitStack() as stack:
            a, _ = await stack.enter_async_context(_node(postgres_dsn, "a", config))
            d, store = await stack.enter_async_context(_node(postgres_dsn, "d", config))
            await eventually(lambda: _owned(d) == {1, 2} and _owned(a) == {3}, seconds=15)
            alice = await stack.enter_async_context(connect_tcp(f"{a.ws_url}/ws/operator"))
            await login(alice, TOK_ALICE)
            async with httpx.AsyncClient(base_url=a.http_url) as http_a:
                assert (await post_tg(http_a, tg_body(21, "Oi!"))).status_code == 200
            async with httpx.AsyncClient(base_url=d.http_url) as http_d:
                assert (await post_tg(http_d, tg_body(21, "Oi!"))).status_code == 200
            offer = await alice.until("offer")
            cid = offer["conversation"]["id"]
            assert cid in d.hub.conversations and cid not in a.hub.conversations
            await alice.send("accept", conversation_id=cid)
            await alice.until("assigned")
            await alice.send("message", conversation_id=cid, client_id="a1", text="Pois não?")
            await alice.until("ack")
            await platform.wait_for(2)
            assert [r.json["text"] for r in platform.delivered()] == [
                "Hello! How can I help you?",
                "Pois não?",
            ]
            async with httpx.AsyncClient(base_url=a.http_url) as http_a:
                assert (await post_tg(http_a, tg_body(22, "Obrigado"))).status_code == 200
            while (await alice.until("message"))["text"] != "Obrigado":
                pass
            assert await stored_texts(store, cid) == [
                ("visitor", "Oi!"),
                ("operator", "Hello! How can I help you?"),
                ("operator", "Pois não?"),
                ("visitor", "Obrigado"),
            ]
            # Counted: Alice's socket held by "a" for "d", the two messages handed over.
            async with httpx.AsyncClient(base_url=a.http_url) as http_a:
                metrics = (await http_a.get("/metrics")).text
            assert 'omni_relayed_sockets{side="held"} 1.0' in metrics
            assert 'omni_relay_calls_total{name="channel",outcome="answered"} 2.0' in metrics
            assert "omni_groups_owned 1.0" in metrics


async def test_the_live_view_shows_the_whole_cluster_and_acts_on_any_node(
    postgres_dsn: str,
) -> None:
    """A supervisor on node "a" sees the queue of group 1 (served by "d") and Carla signed in
    there, and moves a waiting visitor to group 3 (served by "a"): carried out on "d", which
    hands the conversation over; it is answered on "a"."""
    config = with_items(make_config(cluster=CLUSTER), api_token("boss", TOK_BOSS, Role.SUPERVISOR))
    async with AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(_node(postgres_dsn, "a", config))
        d, store = await stack.enter_async_context(_node(postgres_dsn, "d", config))
        await eventually(lambda: _owned(d) == {1, 2} and _owned(a) == {3}, seconds=15)
        boss = await stack.enter_async_context(connect_tcp(f"{a.ws_url}/ws/supervisor"))
        await boss.send("login", token=TOK_BOSS)
        await boss.expect("welcome")
        visitor = await stack.enter_async_context(connect_tcp(f"{d.ws_url}/ws/visitor"))
        await visitor.send("start", service_id=25, visitor={"name": "Dora"})
        started = await visitor.expect("started")
        cid, started_token = started["conversation_id"], started["token"]
        carla = await stack.enter_async_context(connect_tcp(f"{a.ws_url}/ws/operator"))
        await login(carla, TOK_CARLA, available=False)  # Carla (group 1) is served on "d"

        def shows(board: dict[str, Any]) -> bool:
            rows = {g["id"]: g for g in board["groups"]}
            people = {o["id"]: o for o in board["operators"]}
            return rows[1]["waiting"] == 1 and people[3]["presence"] == "paused"

        while not shows(await boss.until("board")):
            pass
        await visitor.until("queued")
        # The operations API of node "a" says the same.
        async with httpx.AsyncClient(base_url=a.http_url) as http:
            answer = await http.get(
                "/api/v1/queues", headers={"Authorization": f"Bearer {TOK_BOSS}"}
            )
        assert answer.status_code == 200
        rows = {row["group_id"]: row for row in answer.json()}
        assert rows[1]["waiting"] == 1 and rows[1]["operators"]["paused"] == 1
        assert rows[3]["waiting"] == 0
        await boss.send("transfer", conversation_id=cid, group_id=3)
        await boss.expect("done", action="transfer", conversation_id=cid)
        # Group 3 is "a"'s: "d" stores the move and lets go; "a" adopts the conversation, and
        # the visitor, told `moved`, resumes through "d" and waits in group 3's queue on "a".
        assert (await visitor.until("error"))["code"] == "moved"
        await eventually(lambda: cid in a.hub.conversations, seconds=10)
        assert cid not in d.hub.conversations
        async with connect_tcp(f"{d.ws_url}/ws/visitor") as back:
            await back.send("resume", token=started_token, last_seq=0)
            resumed = await back.expect("resumed")
            assert resumed["status"] == "queued"
        [entry] = [e for e in await store.audit_entries(10) if e.key == cid]
        assert (entry.actor, entry.action) == ("token:boss", "transfer")


async def test_the_api_resumes_for_an_operator_whose_console_another_node_serves(
    postgres_dsn: str,
) -> None:
    """Service 26 is closed: its visitor's conversation (group 3's domain: node "a") is out of
    hours. Dani serves group 3, signed in through "d" (served on "a"); the API of "d" resumes
    the conversation for her: carried out on "a"."""
    dani = "tok-dani-console-Hs8Kd2Lq5Wz9"
    config = with_items(
        make_config(cluster=CLUSTER),
        api_token("root", TOK_BOSS, Role.ADMIN),
        item_of(
            "operators",
            Operator(id=4, name="Dani", groups=(3,), capacity=2, token_hash=hash_token(dani)),
        ),
    )
    async with AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(_node(postgres_dsn, "a", config))
        d, _ = await stack.enter_async_context(_node(postgres_dsn, "d", config))
        await eventually(lambda: _owned(d) == {1, 2} and _owned(a) == {3}, seconds=15)
        visitor = await stack.enter_async_context(connect_tcp(f"{d.ws_url}/ws/visitor"))
        await visitor.send("start", service_id=26, visitor={"name": "Eva"})
        cid = (await visitor.expect("started"))["conversation_id"]
        await visitor.until("out_of_hours")
        headers = {"Authorization": f"Bearer {TOK_BOSS}"}
        async with httpx.AsyncClient(base_url=d.http_url) as http:
            # Not signed in anywhere yet: refused as on one node.
            refused = await http.post(
                f"/api/v1/conversations/{cid}/resume", json={"operator_id": 4}, headers=headers
            )
        assert refused.status_code == 409, refused.text
        operator = await stack.enter_async_context(connect_tcp(f"{d.ws_url}/ws/operator"))
        await login(operator, dani)
        assert 4 in a.hub.sessions and 4 not in d.hub.sessions
        async with httpx.AsyncClient(base_url=d.http_url) as http:
            answer = await http.post(
                f"/api/v1/conversations/{cid}/resume",
                json={"operator_id": 4},
                headers={"Authorization": f"Bearer {TOK_BOSS}"},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "active"
        assert (await operator.until("assigned"))["conversation_id"] == cid


async def test_a_stopping_edge_tells_its_relayed_clients_and_they_resume_elsewhere(
    postgres_dsn: str,
) -> None:
    async with _node(postgres_dsn, "d") as (d, _):
        await eventually(lambda: _owned(d) == {1, 2, 3}, seconds=15)
        async with _node(postgres_dsn, "a") as (a, _):
            await eventually(lambda: _owned(d) == {1, 2} and _owned(a) == {3}, seconds=15)
            async with connect_tcp(f"{a.ws_url}/ws/visitor") as visitor:
                await visitor.send("start", service_id=25, visitor={"name": "Flor"})
                started = await visitor.expect("started")
                await visitor.until("queued")
                await visitor.send("message", client_id="f1", text="anyone?")
                acked = (await visitor.until("ack"))["seq"]
                # "a" stops (what SIGTERM does first) while the visitor is relayed through it.
                with trio.fail_after(15):
                    await a.gateway.shutdown()
                assert (await visitor.until("error"))["code"] == "server_shutdown"
        async with connect_tcp(f"{d.ws_url}/ws/visitor") as visitor:
            await visitor.send("resume", token=started["token"], last_seq=acked)
            assert (await visitor.expect("resumed"))["status"] == "queued"


async def test_a_file_uploaded_through_one_node_is_downloaded_through_another(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """The nodes share the attachments' folder and the links' key (docs/scale-out.md): the
    visitor uploads through "a", the conversation (served on "d") takes the file, and its
    signed link works on "d"."""

    def own_limits(body: dict[str, Any]) -> None:
        body["attachments"] = LIMITS

    config = with_service(
        make_config(cluster=CLUSTER, attachments={"link_secret": "Tq8vLm3Xc7Rb2Wn9Kp4Hs6Jd"}),
        25,
        own_limits,
    )
    async with AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(_node(postgres_dsn, "a", config, tmp_path))
        d, _ = await stack.enter_async_context(_node(postgres_dsn, "d", config, tmp_path))
        await eventually(lambda: _owned(d) == {1, 2} and _owned(a) == {3}, seconds=15)
        alice = await stack.enter_async_context(connect_tcp(f"{a.ws_url}/ws/operator"))
        await login(alice, TOK_ALICE)
        visitor = await stack.enter_async_context(connect_tcp(f"{a.ws_url}/ws/visitor"))
        await visitor.send("start", service_id=25, visitor={"name": "Gil"})
        started = await visitor.expect("started")
        cid = started["conversation_id"]
        await alice.send(
            "accept", conversation_id=(await alice.until("offer"))["conversation"]["id"]
        )
        await visitor.until("assigned")
        sent = png()
        async with httpx.AsyncClient(base_url=a.http_url) as http_a:
            uploaded = await http_a.post(
                f"/api/v1/conversations/{cid}/attachments",
                params={"name": "photo.png"},
                content=sent,
                headers={**bearer(started["token"]), "Content-Type": "image/png"},
            )
        assert uploaded.status_code == 201, uploaded.text
        upload_id = uploaded.json()["upload_id"]
        await visitor.send("attachment", client_id="g1", upload_id=upload_id)
        await visitor.until("ack")
        message = await alice.until("message")
        while message.get("attachment") is None:
            message = await alice.until("message")
        async with httpx.AsyncClient(base_url=d.http_url) as http_d:
            got = await http_d.get(uploaded.json()["url"])
        assert got.status_code == 200
        assert got.content.startswith(b"\x89PNG")
