"""What only PostgreSQL can show of running more than one node: notices across a lost listening
connection and a rolled-back transaction, and the fence's lock against a change of owner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from omni.store import Notice, Resync
from omni.store.postgres import PostgresStore, _db_fetchval, open_postgres_store
from omni.store.postgres_cluster import Q_FENCE

pytestmark = pytest.mark.postgresql


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres_store(postgres_dsn) as store:
        yield store


async def _notify_then_roll_back(dsn: str, channel: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT pg_notify($1, 'rolled back')", channel)
        await transaction.rollback()
    finally:
        await conn.close()


async def test_a_rolled_back_transactions_notice_never_arrives(
    pg: PostgresStore, postgres_dsn: str
) -> None:
    async with pg.listen(["omni_test"]) as notices:
        await pg._bridge.run(_notify_then_roll_back, postgres_dsn, "omni_test")
        await pg.notify("omni_test", "committed")
        with trio.fail_after(5):
            assert await notices.receive() == Notice("omni_test", "committed")
        assert notices.statistics().delivered == 1


async def test_a_lost_listening_connection_yields_a_resync_then_notices_again(
    pg: PostgresStore,
) -> None:
    async with pg.listen(["omni_test"]) as notices:
        assert pg.listener is not None
        pid = await pg.listener.backend_pid()
        assert pid is not None
        await pg.notify("omni_test", "before")
        with trio.fail_after(5):
            assert await notices.receive() == Notice("omni_test", "before")
        # PostgreSQL ends the listening connection (an administrator, a failover, a crash).
        killed = await pg._bridge.run(
            _db_fetchval, pg._pool, "SELECT pg_terminate_backend($1)", pid
        )
        assert killed is True
        with trio.fail_after(10):
            assert await notices.receive() == Resync("reconnected")
        stats = notices.statistics()
        assert stats.connected and stats.reconnects == 1
        assert await pg.listener.backend_pid() != pid
        await pg.notify("omni_test", "after")
        with trio.fail_after(5):
            assert await notices.receive() == Notice("omni_test", "after")


async def _hold_a_fence(dsn: str, resource: str, epoch: int) -> tuple[Any, Any, int]:
    """A transaction that checked (and locked) a fence, left open: a batch mid-commit."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    rows = await conn.fetch(Q_FENCE, [resource], [epoch])
    return conn, transaction, len(rows)


async def _commit_and_close(conn: Any, transaction: Any) -> None:
    await transaction.commit()
    await conn.close()


async def test_a_change_of_owner_waits_for_a_fenced_write_to_commit(
    pg: PostgresStore, postgres_dsn: str
) -> None:
    lease = await pg.acquire_lease("group:1", "a", 0.2)
    assert lease is not None
    conn, transaction, current = await pg._bridge.run(
        _hold_a_fence, postgres_dsn, "group:1", lease.epoch
    )
    assert current == 1
    await trio.sleep(0.3)  # the lease runs out while the write commits
    taken: list[Any] = []

    async def take() -> None:
        taken.append(await pg.acquire_lease("group:1", "b", 60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.sleep(0.3)
        assert taken == []  # waits on the write's lock: no owner change under a commit
        await pg._bridge.run(_commit_and_close, conn, transaction)
    [lease_b] = taken
    assert lease_b is not None and (lease_b.owner, lease_b.epoch) == ("b", lease.epoch + 1)
