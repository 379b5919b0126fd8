"""Three ``omni serve`` processes on one PostgreSQL (issue 18, docs/scale-out.md): clients on any
node; a node SIGKILLed mid-traffic loses nothing acknowledged and duplicates nothing.

The check is Jepsen's set check: every visitor keeps a record of what the server acknowledged
(client id → seq); after the kill they reconnect to the nodes left, resume and send again
what was not acknowledged, under the same client ids, as the WebChat does. At the end the
database must hold every acknowledged message exactly once, at the seq its ack said, and each
conversation's events must run 1, 2, 3, … without a gap."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from omni.cluster import rendezvous
from omni.store.postgres import open_postgres_store
from tests.conftest import fresh_database
from tests.hardening.serve import ALWAYS, Served, serving

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

TOKENS = {
    1: "op-one-console-T7vQ2mZ9xKp4Lw8RsE3nA1",
    5: "op-five-console-H5cJ8dN1fG6kP0yU2aW4B2",
    6: "op-six-console-Qe4Rt7Yu1Io9Pa3Sd6Fg8C3",
}
NODES = ("a", "b", "c")
#: Service → its one group; the groups (each its own routing domain) hash one to each node.
SERVICES = {31: 1, 35: 5, 36: 6}

CONFIG = (
    """
[server]
host = "127.0.0.1"
ws_port = 0
http_port = 0
native_visitors = true
native_operators = true

[server.cluster]
enabled = true
heartbeat_seconds = 0.5
node_expiry_seconds = 2
lease_seconds = 3

[server.limits]
messages_per_second = 1000
message_burst = 1000
conversations_per_minute = 100000
conversations_per_service_per_minute = 100000
handshakes_per_second = 100000
handshake_burst = 100000
connections_per_ip = 100000

"""
    + ALWAYS
    + "".join(
        f"""
[[groups]]
id = {group}
name = "Group {group}"

[[services]]
id = {service}
name = "Service {service}"
schedule = "always"
survey = "none"
links = [{{ group = {group} }}]

[[operators]]
id = {group}
name = "Operator {group}"
groups = [{group}]
capacity = 50
token = "{TOKENS[group]}"
"""
        for service, group in SERVICES.items()
    )
)


def test_the_groups_hash_one_to_each_node() -> None:
    """What the tests below rely on (rendezvous hashing is deterministic)."""
    owners = {g: rendezvous(NODES, f"domain:{g}") for g in SERVICES.values()}
    assert owners == {1: "a", 5: "c", 6: "b"}


@asynccontextmanager
async def _cluster(tmp_path: Path, url: str) -> AsyncIterator[dict[str, Served]]:
    async with AsyncExitStack() as stack:
        nodes: dict[str, Served] = {}
        for name in NODES:
            nodes[name] = await stack.enter_async_context(
                serving(
                    tmp_path,
                    url,
                    config=CONFIG,
                    name=f"{name}.toml",
                    args=("--node", name, "--data-dir", str(tmp_path / f"data-{name}")),
                )
            )
        with trio.fail_after(30):
            while await _owners(url) != {1: "a", 5: "c", 6: "b"}:  # noqa: ASYNC110
                await trio.sleep(0.2)
        yield nodes


async def _owners(url: str) -> dict[int, str]:
    async with open_postgres_store(url) as store:
        leases = await store.leases("group:")
    return {
        int(lease.resource.split(":")[1]): lease.owner
        for lease in leases
        if lease.owner is not None and lease.remaining > 0
    }


async def _events(
    url: str, conversations: list[str]
) -> dict[str, list[tuple[int, str, str | None]]]:
    """Each conversation's stored events: (seq, kind, client id)."""
    async with open_postgres_store(url) as store:
        return {
            c: [
                (e.seq, e.kind, e.client_key[1] if e.client_key else None)
                for e in await store.events_after(c, 0)
            ]
            for c in conversations
        }


async def _frame(ws: Any, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


async def _until(ws: Any, kind: str, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            frame = await _frame(ws, timeout)
            if frame["type"] == kind:
                return frame
            assert frame["type"] != "error", frame


async def test_visitors_and_operators_on_different_nodes_complete_conversations(
    tmp_path: Path, postgres_url: str
) -> None:
    url = await trio.to_thread.run_sync(fresh_database, postgres_url, "cluster_three")
    async with _cluster(tmp_path, url) as nodes:
        names = list(NODES)
        conversations = []
        for i, (service, group) in enumerate(SERVICES.items()):
            owner = rendezvous(NODES, f"domain:{group}")
            # The visitor on the next node after the owner, the operator on the one after.
            visitor_node = nodes[names[(names.index(owner) + 1) % 3]]
            operator_node = nodes[names[(names.index(owner) + 2) % 3]]
            async with (
                open_websocket_url(f"{operator_node.ws_url}/ws/operator") as operator,
                open_websocket_url(f"{visitor_node.ws_url}/ws/visitor") as visitor,
            ):
                await operator.send_message(json.dumps({"type": "login", "token": TOKENS[group]}))
                await _until(operator, "welcome")
                await operator.send_message(json.dumps({"type": "status", "status": "available"}))
                await visitor.send_message(
                    json.dumps(
                        {"type": "start", "service_id": service, "visitor": {"name": f"V{i}"}}
                    )
                )
                started = await _until(visitor, "started")
                conversation_id = started["conversation_id"]
                conversations.append(conversation_id)
                offer = await _until(operator, "offer")
                assert offer["conversation"]["id"] == conversation_id
                await operator.send_message(
                    json.dumps({"type": "accept", "conversation_id": conversation_id})
                )
                await _until(visitor, "assigned")
                await visitor.send_message(
                    json.dumps({"type": "message", "client_id": "q", "text": "a question"})
                )
                await _until(visitor, "ack")
                while (await _until(operator, "message"))["text"] != "a question":
                    pass
                await operator.send_message(
                    json.dumps(
                        {
                            "type": "message",
                            "conversation_id": conversation_id,
                            "client_id": "a",
                            "text": "an answer",
                        }
                    )
                )
                assert (await _until(visitor, "message"))["text"] == "an answer"
                await operator.send_message(
                    json.dumps({"type": "end", "conversation_id": conversation_id})
                )
                await _until(visitor, "ended")
        stored = await _events(url, conversations)
        assert len(stored) == 3
        for events in stored.values():
            assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
            assert [c for _, _, c in events if c is not None] == ["q", "a"]


@dataclass
class _Visitor:
    """One visitor of the set check: what the server acknowledged, and what it still owes."""

    number: int
    service: int
    messages: int
    token: str | None = None
    conversation_id: str | None = None
    last_seq: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0

    def unacked(self) -> list[str]:
        return [f"m{k}" for k in range(self.messages) if f"m{k}" not in self.acked]


async def _visit(visitor: _Visitor, urls: list[str], alive: set[str], stop: trio.Event) -> None:
    """Chat until every message is acknowledged: one at a time, on whichever live node is
    next; after a drop, resume and send again what was not acknowledged."""
    turn = visitor.number
    while visitor.unacked() and not stop.is_set():
        candidates = [u for u in urls if u in alive]
        url = candidates[turn % len(candidates)]
        turn += 1
        try:
            async with open_websocket_url(f"{url}/ws/visitor") as ws:
                if visitor.token is None:
                    start = {"type": "start", "service_id": visitor.service}
                    start["visitor"] = {"name": f"Visitor {visitor.number}"}
                    await ws.send_message(json.dumps(start))
                else:
                    resume = {"type": "resume", "token": visitor.token}
                    await ws.send_message(json.dumps(resume | {"last_seq": visitor.last_seq}))
                while visitor.unacked():
                    frame = await _frame(ws)
                    kind = frame["type"]
                    if kind == "error":
                        assert frame["code"] in ("moved", "server_shutdown"), frame
                        break
                    if kind == "started":
                        visitor.token = frame["token"]
                        visitor.conversation_id = frame["conversation_id"]
                    if kind in ("started", "resumed", "ack"):
                        if kind == "ack":
                            seq = visitor.acked.setdefault(frame["client_id"], frame["seq"])
                            assert seq == frame["seq"], "one client id acknowledged at two seqs"
                        client_id = visitor.unacked()[:1]
                        if client_id:
                            await trio.sleep(0.02)
                            text = f"{visitor.number}:{client_id[0]}"
                            message = {"type": "message", "client_id": client_id[0], "text": text}
                            await ws.send_message(json.dumps(message))
                    if isinstance(frame.get("seq"), int):
                        visitor.last_seq = max(visitor.last_seq, frame["seq"])
        except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError):
            pass
        if visitor.unacked():
            visitor.reconnects += 1
            await trio.sleep(0.3)


async def test_a_node_killed_mid_traffic_loses_and_duplicates_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    url = await trio.to_thread.run_sync(fresh_database, postgres_url, "cluster_kill")
    async with _cluster(tmp_path, url) as nodes:
        urls = [nodes[name].ws_url for name in NODES]
        alive = set(urls)
        visitors = [_Visitor(n, list(SERVICES)[n % 3], messages=30) for n in range(18)]
        stop = trio.Event()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for visitor in visitors:
                    nursery.start_soon(_visit, visitor, urls, alive, stop)
                # Mid-traffic: every visitor has had some messages acknowledged.
                while min(len(v.acked) for v in visitors) < 5:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                # "a" owns group 1 (service 31): SIGKILL, no goodbye.
                victim = nodes["a"]
                alive.discard(victim.ws_url)
                victim.process.send_signal(signal.SIGKILL)
                await victim.process.wait()
        assert all(not v.unacked() for v in visitors)
        # Its group was taken over by a survivor.
        owners = await _owners(url)
        assert owners[1] in ("b", "c")
        # Visitors of every node had to come back: of the killed node's group, and those
        # whose socket the killed node held.
        assert sum(v.reconnects for v in visitors if v.service == 31) >= 6
        stored = await _events(url, [v.conversation_id for v in visitors if v.conversation_id])
        for visitor in visitors:
            assert visitor.conversation_id is not None
            events = stored[visitor.conversation_id]
            seqs = [seq for seq, _, _ in events]
            assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in seq"
            messages = {c: seq for seq, kind, c in events if kind == "message" and c}
            kept = [c for _, kind, c in events if kind == "message" and c]
            assert len(kept) == len(set(kept)), "a message stored twice"
            # Every acknowledged message is stored once, at the seq of its ack.
            assert messages == visitor.acked
