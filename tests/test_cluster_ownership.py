"""Cluster mode (``[server.cluster] enabled``, docs/scale-out.md): groups owned by lease on one
PostgreSQL — split among the live nodes, a joining node's share handed to it, a dead node's
groups taken over after their leases run out and restored through the restart path, and a
stale owner's writes refused."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from omni.cluster import group_resource, rendezvous
from omni.server import RunningServer, open_server
from omni.store import ADOPT_CHANNEL, Fence, FencedOut, Notice, Store, Write
from omni.store.postgres import open_postgres_store
from tests.cluster_support import FAST_CLUSTER, cluster_node
from tests.support import (
    TOK_ALICE,
    connect_tcp,
    eventually,
    login,
    make_config,
    make_conversation,
)

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

CLUSTER = FAST_CLUSTER
GROUPS = {1, 2, 3}
#: Routing domains of tests.support's configuration: Alice serves groups 1 and 2, so they are
#: placed together; group 3 alone.
PLACEMENT = {1: "domain:1", 2: "domain:1", 3: "domain:3"}


_node = cluster_node


def _owned(server: RunningServer) -> set[int]:
    assert server.ownership is not None
    return set(server.ownership.owned)


async def _split(store: Store, servers: dict[str, RunningServer]) -> bool:
    """Every group owned by exactly the node it hashes to, as the leases say too."""
    names = set(servers)
    owned = [_owned(s) for s in servers.values()]
    if sorted(g for o in owned for g in o) != sorted(GROUPS):
        return False
    for name, server in servers.items():
        if _owned(server) != {g for g in GROUPS if rendezvous(names, PLACEMENT[g]) == name}:
            return False
    leases = {lease.resource: lease.owner for lease in await store.leases("group:")}
    return all(
        leases.get(group_resource(g)) == name
        for name, server in servers.items()
        for g in _owned(server)
    )


def _joiner(names: set[str]) -> str:
    """A name that takes at least one group from ``names`` when it joins them."""
    for n in range(100):
        name = f"n{n}"
        if any(rendezvous(names | {name}, PLACEMENT[g]) == name for g in GROUPS):
            return name
    raise AssertionError("no joiner")  # pragma: no cover


async def test_nodes_split_the_groups_and_a_joining_node_gets_its_share(
    postgres_dsn: str,
) -> None:
    async with AsyncExitStack() as stack:
        servers: dict[str, RunningServer] = {}
        for name in ("a", "b"):
            servers[name], store = await stack.enter_async_context(_node(postgres_dsn, name))
        await eventually(lambda: _split(store, servers), seconds=15)
        third = _joiner(set(servers))
        servers[third], _ = await stack.enter_async_context(_node(postgres_dsn, third))
        await eventually(lambda: _split(store, servers), seconds=15)
        assert _owned(servers[third])
        # Every owned group runs its actors on its owner only.
        for server in servers.values():
            assert set(server.hub.fences) == _owned(server)


async def test_cluster_mode_off_takes_no_lease(postgres_dsn: str) -> None:
    async with (
        open_postgres_store(postgres_dsn) as store,
        open_server(make_config(), store=store, host="127.0.0.1", ws_port=0, http=False) as one,
    ):
        assert one.ownership is None and not one.hub.cluster
        await trio.sleep(0.3)
        assert await store.leases() == []


async def test_a_dead_nodes_groups_are_taken_over_and_its_queue_kept(postgres_dsn: str) -> None:
    """A node dies without leaving; after its leases run out the other owns its groups,
    restores their queues from the store, and a visitor resuming there keeps their place, is
    answered by an operator there, and finds every acknowledged message once, in order."""
    async with AsyncExitStack() as stack:
        survivor, store = await stack.enter_async_context(_node(postgres_dsn, "a"))
        async with trio.open_nursery() as nursery:
            dead_cancel = trio.CancelScope()
            ready: list[tuple[RunningServer, Store]] = []
            done = trio.Event()

            async def doomed() -> None:
                with dead_cancel:
                    async with _node(postgres_dsn, "d") as (server, its_store):

                        async def no_leave(name: str, incarnation: int) -> None:
                            return None  # it dies: nothing is given back

                        its_store.leave_node = no_leave  # type: ignore[method-assign]
                        ready.append((server, its_store))
                        await trio.sleep_forever()
                done.set()

            nursery.start_soon(doomed)
            servers = {"a": survivor}
            await eventually(lambda: bool(ready), seconds=15)
            servers["d"] = ready[0][0]
            await eventually(lambda: _split(store, servers), seconds=15)
            # Rendezvous hashing is deterministic: under the names "a" and "d", group 2's domain
            # goes to "d" (checked, so that a change of the hash cannot silently change this
            # test).
            assert rendezvous(["a", "d"], PLACEMENT[2]) == "d"
            assert 2 in _owned(servers["d"])
            dying = servers["d"]
            # Two visitors wait in group 2 (service 27: Alice and Bruno serve it, none online).
            tokens: list[tuple[str, str]] = []
            acked: dict[str, int] = {}
            for name in ("Ana", "Bia"):
                async with connect_tcp(f"{dying.ws_url}/ws/visitor") as visitor:
                    await visitor.send("start", service_id=27, visitor={"name": name})
                    started = await visitor.expect("started")
                    tokens.append((started["conversation_id"], started["token"]))
                    await visitor.until("queued")
                    await visitor.send("message", client_id=f"{name}-1", text=f"hello {name}")
                    acked[name] = (await visitor.until("ack"))["seq"]
            dead_cancel.cancel()
            with trio.fail_after(10):
                await done.wait()
            # The survivor takes group 2 once its lease runs out.
            await eventually(lambda: 2 in _owned(survivor), seconds=15)
            bia_id, bia_token = tokens[1]
            async with connect_tcp(f"{survivor.ws_url}/ws/visitor") as bia:
                await bia.send("resume", token=bia_token, last_seq=0)
                resumed = await bia.expect("resumed", status="queued")
                assert (await bia.until("queued"))["position"] == 2
                async with connect_tcp(f"{survivor.ws_url}/ws/operator") as alice:
                    await login(alice, TOK_ALICE)
                    offers = []
                    for _ in range(2):
                        offer = await alice.until("offer")
                        offers.append(offer["conversation"]["id"])
                        await alice.send("accept", conversation_id=offers[-1])
                    assert offers == [tokens[0][0], bia_id]  # queue order kept
                    await bia.send("message", client_id="Bia-2", text="still there?")
                    await bia.until("ack")
                    # Alice reads each accepted conversation's history first.
                    while (await alice.until("message"))["text"] != "still there?":
                        pass
            events = await store.events_after(bia_id, 0)
            seqs = [e.seq for e in events]
            assert seqs == list(range(1, len(seqs) + 1))
            keys = [e.client_key[1] for e in events if e.client_key]
            assert keys.count("Bia-1") == 1 and keys.count("Bia-2") == 1
            assert {e.seq for e in events if e.client_key and e.client_key[1] == "Bia-1"} == {
                acked["Bia"]
            }
            assert resumed["last_seq"] >= acked["Bia"]
            nursery.cancel_scope.cancel()


async def test_a_stale_owners_write_is_refused_and_its_actor_stops(postgres_dsn: str) -> None:
    async with _node(postgres_dsn, "a") as (server, store):
        await eventually(lambda: _owned(server) == GROUPS, seconds=15)
        hub = server.hub
        async with connect_tcp(f"{server.ws_url}/ws/visitor") as visitor:
            await visitor.send("start", service_id=27, visitor={"name": "Ana"})
            started = await visitor.expect("started")
            await visitor.until("queued")
            conversation_id = started["conversation_id"]
            # Another node takes the group behind this one's back (its lease is stolen: the
            # database's row moves to a new epoch, as after an expiry and an acquisition).
            fence = hub.fences[2]
            await store.release_lease(fence.resource, "a", fence.epoch)
            stolen = await store.acquire_lease(fence.resource, "z", 60)
            assert stolen is not None and stolen.epoch == fence.epoch + 1
            conv = await store.load_conversation(conversation_id)
            with pytest.raises(FencedOut):
                await store.write(
                    Write(conversation=conv, fence=Fence(fence.resource, fence.epoch))
                )
            before = await store.events_after(conversation_id, 0)
            await visitor.send("message", client_id="late", text="refused")
            closing: dict[str, Any] = await visitor.until("error")
            assert closing["code"] == "moved"
            await eventually(lambda: conversation_id not in hub.conversations, seconds=5)
            # Nothing of the refused write is stored.
            assert await store.events_after(conversation_id, 0) == before


async def test_a_node_that_cannot_renew_stops_owning_before_its_lease_runs_out(
    postgres_dsn: str,
) -> None:
    async with _node(postgres_dsn, "a") as (server, store):
        await eventually(lambda: _owned(server) == GROUPS, seconds=15)
        async with connect_tcp(f"{server.ws_url}/ws/visitor") as visitor:
            await visitor.send("start", service_id=27, visitor={"name": "Ana"})
            await visitor.expect("started")
            await visitor.until("queued")
            hung = trio.Event()

            async def renew_hangs(*args: Any) -> None:
                hung.set()
                await trio.sleep_forever()

            store.renew_leases = renew_hangs  # type: ignore[method-assign]
            with trio.fail_after(5):
                await hung.wait()
            waited = trio.current_time()
            closing = await visitor.until("error", timeout=5)
            assert closing["code"] == "moved"
            # Stopped by the local deadline, before the database's lifetime (1 s) ran out.
            assert trio.current_time() - waited < CLUSTER["lease_seconds"]
            await eventually(lambda: not _owned(server), seconds=1)
            assert server.hub.fences == {}
            leases = await store.leases("group:")
            assert all(lease.owner == "a" for lease in leases)  # not yet free in the database


async def test_a_conversation_handed_into_an_owned_group_is_adopted_at_once(
    postgres_dsn: str,
) -> None:
    """Another node's transfer (or bot's hand-over) into a group owned here commits an
    ``omni_adopt`` notice with its write: the owner restores the conversation then, not at its
    next heartbeat (a minute away here). Without the notice it would wait for that beat."""
    slow = {"enabled": True, "heartbeat_seconds": 60, "node_expiry_seconds": 130}
    slow["lease_seconds"] = 125
    async with (
        open_postgres_store(postgres_dsn) as store,
        open_server(
            make_config(cluster=slow),
            store=store,
            host="127.0.0.1",
            ws_port=0,
            http=False,
            node="a",
        ) as server,
    ):
        await eventually(lambda: _owned(server) == GROUPS, seconds=10)
        quiet = make_conversation(1, service_id=26, group_id=3)
        await store.write(Write(conversation=quiet))
        await trio.sleep(0.5)
        assert "c1" not in server.hub.conversations  # no notice: it waits for the beat
        handed = make_conversation(2, service_id=26, group_id=3)
        await store.write(Write(conversation=handed, notices=[Notice(ADOPT_CHANNEL, "3")]))
        await eventually(lambda: "c2" in server.hub.conversations, seconds=5)
        # The notice said "group 3": both of its conversations are adopted by that one read.
        assert "c1" in server.hub.conversations
