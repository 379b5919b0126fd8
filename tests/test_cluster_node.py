"""This node among others: registration, the heartbeat on trio's clock, the name refused while
a live node holds it, ``omni serve --node`` and ``OMNI_NODE`` on one PostgreSQL, and two nodes'
outbox workers sharing one outbox."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from omni.cluster import generated_name, open_node
from omni.outbox import Outbox, Outcome, RetryPolicy
from omni.server import open_server
from omni.settings import ClusterSettings
from omni.store import NodeNameInUse, OutboxEntry, OutboxItem, Store, Write
from omni.store.memory import MemoryStore
from omni.store.postgres import open_postgres_store
from tests.support import T0, eventually, make_config, make_conversation

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ClusterSettings(heartbeat_seconds=2.0, node_expiry_seconds=10.0)


async def test_a_node_beats_on_trios_clock_and_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_node(store, "a", SETTINGS) as node:
        assert (node.name, node.incarnation) == ("a", 1)
        await trio.sleep(61)
        assert node.statistics().beats == 30
        # Another start of "a" is refused while it beats, however long it runs.
        with pytest.raises(NodeNameInUse):
            await store.register_node("a", SETTINGS.node_expiry_seconds)
        assert [n.name for n in await node.live_nodes()] == ["a"]
    assert await store.nodes(SETTINGS.node_expiry_seconds) == []


async def test_a_node_whose_heartbeat_stops_is_dead_after_the_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    away = False

    class Away(MemoryStore):
        async def node_heartbeat(self, name: str, incarnation: int) -> bool:
            if away:
                raise OSError("the database is away")
            return await store.node_heartbeat(name, incarnation)

    flaky = Away()
    flaky.register_node = store.register_node  # type: ignore[method-assign]
    async with open_node(flaky, "a", SETTINGS) as a, open_node(store, "b", SETTINGS) as b:
        away = True
        await trio.sleep(9)
        assert [n.name for n in await b.live_nodes()] == ["a", "b"]
        await trio.sleep(2)
        assert [n.name for n in await b.live_nodes()] == ["b"]
        assert a.statistics().missed == 5
        # Its database back, it beats again and is alive again.
        away = False
        await trio.sleep(2)
        assert [n.name for n in await b.live_nodes()] == ["a", "b"]


async def test_a_replaced_node_learns_it_at_its_next_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with open_node(store, "a", SETTINGS) as old:
        # Its process hangs (no heartbeat for longer than the expiry) and another starts as "a".
        old.store = MemoryStore()  # its heartbeats go nowhere
        await trio.sleep(12)
        old.store = store
        new = await store.register_node("a", SETTINGS.node_expiry_seconds)
        assert new.incarnation == 2
        with trio.fail_after(SETTINGS.heartbeat_seconds * 2):
            await old.replaced.wait()
    # Leaving as the old start leaves the new one registered.
    assert [n.incarnation for n in await store.nodes(10)] == [2]


def test_generated_names_differ_and_fit_the_setting() -> None:
    names = {generated_name() for _ in range(20)}
    assert len(names) == 20
    for name in names:
        msgspec.convert({"node": name}, ClusterSettings)


def test_the_expiry_must_outlast_two_heartbeats() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"heartbeat_seconds": 5, "node_expiry_seconds": 9}, ClusterSettings)


async def test_two_servers_on_one_store_are_two_nodes_and_a_name_is_taken_once() -> None:
    store = MemoryStore()
    config = make_config()
    async with open_server(
        config, store=store, host="127.0.0.1", ws_port=0, http=False, node="n1"
    ) as one:
        assert one.node is not None and one.node.name == "n1"
        assert one.outbox is not None and one.outbox.claimant == "n1"
        async with open_server(config, store=store, host="127.0.0.1", ws_port=0, http=False) as two:
            assert two.node is not None and two.node.name != "n1"
            assert [n.name for n in await one.node.live_nodes()] == sorted(["n1", two.node.name])
        with pytest.raises(NodeNameInUse):
            async with open_server(
                config, store=store, host="127.0.0.1", ws_port=0, http=False, node="n1"
            ):
                pass  # pragma: no cover
    assert await store.nodes(60) == []


async def _serve(dsn: str, data: Path, *args: str, **env: str) -> tuple[trio.Process, str]:
    command = ["serve", "--ws-port", "0", "--http-port", "0", "--data-dir", str(data), *args]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "omni.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMNI_DATABASE_URL": dsn, **env},
    )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(30):
        while b"omni: serving" not in output or not output.endswith(b"\n"):
            chunk = await process.stdout.receive_some()
            assert chunk, output.decode()
            output += chunk
    return process, output.decode()


@pytest.mark.slow
@pytest.mark.postgresql
async def test_omni_serve_nodes_register_on_one_database(postgres_dsn: str, tmp_path: Path) -> None:
    """Two ``omni serve`` processes on one PostgreSQL, named by ``--node`` and by ``OMNI_NODE``:
    both registered and alive; the one stopped with SIGTERM leaves."""
    first, banner = await _serve(postgres_dsn, tmp_path / "n1", "--node", "n1")
    try:
        assert re.search(r"as node n1$", banner.strip()), banner
        second, banner2 = await _serve(postgres_dsn, tmp_path / "n2", OMNI_NODE="n2")
        try:
            assert re.search(r"as node n2$", banner2.strip()), banner2
            async with open_postgres_store(postgres_dsn) as store:
                alive = [(n.name, n.alive) for n in await store.nodes(10)]
                assert alive == [("n1", True), ("n2", True)]
                second.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    assert await second.wait() == 0
                assert [n.name for n in await store.nodes(10)] == ["n1"]
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
    finally:
        first.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await first.wait() == 0


class Recorder:
    """A webhook sender that records what it delivers, taking a moment over each."""

    kind = "webhook"
    retry = RetryPolicy(1.0, 1.0, 3)

    def __init__(self, name: str, delivered: list[tuple[str, str | None, int]]) -> None:
        self.name = name
        self.delivered = delivered

    async def deliver(self, item: OutboxItem) -> Outcome:
        await trio.sleep(0.005)
        self.delivered.append((self.name, item.conversation_id, item.payload["n"]))
        return Outcome(True)


async def _nothing_pending(store: Store) -> bool:
    return not await store.outbox_backlog()


async def test_two_nodes_outbox_workers_deliver_each_item_once_in_order(store: Store) -> None:
    convs = [make_conversation(n) for n in range(1, 5)]
    for conv in convs:
        entries = [
            OutboxEntry("webhook", f"w:{conv.id}:{k}", conv.id, {"n": k}, T0, "crm", "{}")
            for k in range(1, 6)
        ]
        await store.write(Write(conversation=conv, outbox=entries))
    delivered: list[tuple[str, str | None, int]] = []
    workers = [
        Outbox(
            store,
            lambda: T0 + timedelta(minutes=1),
            [Recorder(name, delivered)],
            random=lambda: 0.0,
            concurrency=2,  # neither can take every conversation's head
            claimant=name,
            poll=0.01,  # the other node's deliveries make items due here
        )
        for name in ("n1", "n2")
    ]
    async with trio.open_nursery() as nursery:
        for worker in workers:
            nursery.start_soon(worker.run)
        # PostgreSQL holds the state, other tasks change it: poll it (bounded).
        await eventually(lambda: _nothing_pending(store), seconds=20)
        nursery.cancel_scope.cancel()
    assert sorted((c, k) for _, c, k in delivered) == sorted(
        (c.id, k) for c in convs for k in range(1, 6)
    )
    for conv in convs:
        assert [k for _, c, k in delivered if c == conv.id] == [1, 2, 3, 4, 5]
    assert {name for name, _, _ in delivered} == {"n1", "n2"}  # both took part
