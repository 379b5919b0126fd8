"""The PostgresStore's batch writer: how writes are gathered into batches, on which connections
they commit, and what happens when the store closes or a connection breaks.

The first tests drive the writer's trio side through a bridge whose commits wait at a gate, so
what goes into each batch is decided by the test, not by timing; the last ones use PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from omni.domain.conversation import Conversation, Status
from omni.store import StoredEvent, StoreError, Write
from omni.store.postgres import PostgresStore, _db_fetch, open_postgres_store
from tests.support import eventually, make_conversation


def write(seq: int, conversation_id: str = "c1") -> Write:
    frame = f'{{"type":"message","conversation_id":"{conversation_id}","seq":{seq}}}'
    return Write(events=[StoredEvent(conversation_id, seq, "message", "both", frame)])


class GatedBridge:
    """Stands in for the asyncio bridge: records each batch's event seqs and which writer
    connection committed it, and holds every commit until :attr:`gate` is set."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.batches: list[tuple[Any, list[int]]] = []

    async def run(self, fn: Any, *args: Any) -> Any:
        writer, _conversations, events, _surveys, _claims, _outbox = args
        self.batches.append((writer, [e[1] for e in events]))
        await self.gate.wait()


async def hold_a_first_commit(nursery: trio.Nursery, store: PostgresStore) -> None:
    """Start the writer, and one write whose commit then waits at the gate."""
    nursery.start_soon(store._run_writer, 0.0)
    nursery.start_soon(store.write, write(1))
    await trio.testing.wait_all_tasks_blocked()


async def open_gate_and_close(bridge: GatedBridge, store: PostgresStore) -> None:
    bridge.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    store._close()


def writer_store(bridge: GatedBridge, writers: list[str], batch_max: int = 512) -> PostgresStore:
    return PostgresStore(bridge, None, list(writers), batch_max)  # type: ignore[arg-type]


# -- the writer -------------------------------------------------------------------------------


async def test_writes_queued_during_a_commit_all_go_into_the_next_batch() -> None:
    bridge = GatedBridge()
    store = writer_store(bridge, ["w"])
    async with trio.open_nursery() as nursery:
        await hold_a_first_commit(nursery, store)
        assert bridge.batches == [("w", [1])]
        # Two waves while the only connection is busy, the writer running between them.
        for seq in range(2, 6):
            nursery.start_soon(store.write, write(seq))
        await trio.testing.wait_all_tasks_blocked()
        for seq in range(6, 10):
            nursery.start_soon(store.write, write(seq))
        await trio.testing.wait_all_tasks_blocked()
        await open_gate_and_close(bridge, store)
    # Not [2..5] and then [6..9]: a batch is gathered when a connection is free for it.
    assert [(writer, sorted(seqs)) for writer, seqs in bridge.batches] == [
        ("w", [1]),
        ("w", list(range(2, 10))),
    ]
    assert store.batch_statistics.batches == 2 and store.batch_statistics.writes == 9


async def test_closing_with_writes_queued_commits_them_all_and_stops() -> None:
    bridge = GatedBridge()
    store = writer_store(bridge, ["w"])
    done: list[int] = []

    async def write_and_record(seq: int) -> None:
        await store.write(write(seq))
        done.append(seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run_writer, 0.0)
        for seq in range(1, 6):
            nursery.start_soon(write_and_record, seq)
        await trio.testing.wait_all_tasks_blocked()
        store._close()  # the store is closing while writes wait
        bridge.gate.set()
    assert sorted(done) == [1, 2, 3, 4, 5]
    assert sum(len(seqs) for _, seqs in bridge.batches) == 5
    with pytest.raises(StoreError, match="closed"):
        await store.write(write(6))


async def test_a_full_batch_leaves_the_next_writes_to_the_next_batch() -> None:
    bridge = GatedBridge()
    store = writer_store(bridge, ["w"], batch_max=3)
    async with trio.open_nursery() as nursery:
        await hold_a_first_commit(nursery, store)
        for seq in range(2, 9):
            nursery.start_soon(store.write, write(seq))
            await trio.testing.wait_all_tasks_blocked()
        await open_gate_and_close(bridge, store)
    assert [seqs for _, seqs in bridge.batches] == [[1], [2, 3, 4], [5, 6, 7], [8]]


async def test_a_lingering_writer_waits_for_more_writes(autojump_clock: trio.abc.Clock) -> None:
    bridge = GatedBridge()
    bridge.gate.set()
    store = writer_store(bridge, ["w"])

    async def write_at(delay: float, seq: int) -> None:
        await trio.sleep(delay)
        await store.write(write(seq))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run_writer, 0.005)
        nursery.start_soon(write_at, 0.0, 1)
        nursery.start_soon(write_at, 0.001, 2)  # within the linger: same batch
        nursery.start_soon(write_at, 0.020, 3)  # after it: a batch of its own
        await trio.sleep(0.1)
        store._close()
    assert [seqs for _, seqs in bridge.batches] == [[1, 2], [3]]


async def test_batches_commit_concurrently_on_separate_connections() -> None:
    bridge = GatedBridge()
    store = writer_store(bridge, ["a", "b"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run_writer, 0.0)
        nursery.start_soon(store.write, write(1, "c1"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store.write, write(1, "c2"))
        await trio.testing.wait_all_tasks_blocked()
        # Both batches are committing at once, each on its own connection.
        assert len(bridge.batches) == 2
        assert {writer for writer, _ in bridge.batches} == {"a", "b"}
        nursery.start_soon(store.write, write(2, "c1"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(bridge.batches) == 2  # no third connection: it waits for a free one
        await open_gate_and_close(bridge, store)
    assert len(bridge.batches) == 3


# -- on PostgreSQL ----------------------------------------------------------------------------


def conversation() -> Conversation:
    return make_conversation(1, Status.ACTIVE, visitor="Ana")


async def _count(dsn: str, query: str) -> int:
    """``query``'s count on a fresh connection (asyncio side of the bridge)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(query)
        return count
    finally:
        await conn.close()


_SLEEPING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND query LIKE 'SELECT pg_sleep%'
"""
_OTHERS = """
SELECT count(*) AS n FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""
_KILL_OTHERS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


@pytest.mark.postgresql
async def test_slow_queries_holding_the_pool_do_not_hold_up_writes(postgres_dsn: str) -> None:
    # Messages are acknowledged while every pooled connection is busy (long reports, say):
    # batches commit on the writer's own connection.
    async with open_postgres_store(postgres_dsn, pool_size=2) as store:
        finished: list[str] = []

        async def slow_query() -> None:
            await store._bridge.run(_db_fetch, store._pool, "SELECT pg_sleep(1.5)")
            finished.append("query")

        async def both_sleeping() -> bool:
            # Asked on a connection of its own: the pool's two are the ones being waited for.
            return await store._bridge.run(_count, postgres_dsn, _SLEEPING) == 2

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_query)
            nursery.start_soon(slow_query)
            await eventually(both_sleeping)  # both pooled connections are taken
            await store.write(Write(conversation=conversation(), events=[write(1).events[0]]))
            for seq in range(2, 6):
                await store.write(write(seq))
            finished.append("writes")
        assert finished == ["writes", "query", "query"]
        assert [e.seq for e in await store.events_after("c1", 0)] == [1, 2, 3, 4, 5]


@pytest.mark.postgresql
async def test_a_writer_connection_that_broke_is_replaced(postgres_dsn: str) -> None:
    async with open_postgres_store(postgres_dsn) as store:
        await store.write(Write(conversation=conversation(), events=[write(1).events[0]]))
        # The database drops every other connection (a restart, an administrator, a proxy).
        await store._bridge.run(_db_fetch, store._pool, _KILL_OTHERS)

        async def gone() -> bool:  # the backends exit
            rows = await store._bridge.run(_db_fetch, store._pool, _OTHERS)
            return bool(rows[0]["n"] == 0)

        await eventually(gone)
        await store.write(write(2))
        await store.write(write(3))
        assert [e.seq for e in await store.events_after("c1", 0)] == [1, 2, 3]
