"""The PostgresStore's part in running more than one node (docs/scale-out.md): the node registry,
leases with fencing epochs, outbox claims, and notices.

Rules:

* Every lifetime here — a heartbeat's age, a lease's, a claim's — is measured by PostgreSQL's
  clock (``now()``); callers give durations. Two nodes whose clocks disagree still agree on
  who holds what, because only the database's clock decides.
* A lease row is never deleted: releasing it clears its owner and keeps its epoch, so epochs of
  a resource only grow and a fence at an old epoch never matches again.
* The fence check (:data:`Q_FENCE`) runs inside the batch writer's transaction and locks the
  lease rows it checks ``FOR SHARE``: an acquisition of the same resource waits for the write's
  commit, and a write that comes after an acquisition sees the new epoch and fails.
* Outbox claims live with the other outbox queries, in :mod:`omni.store.postgres`.
* SQL constants and ``_db_*`` functions as in :mod:`omni.store.postgres`; only the functions
  run on the asyncio side touch asyncpg objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

from omni.store import (
    Fence,
    Lease,
    NodeNameInUse,
    NodeRecord,
    Notice,
    RelayItem,
    StoreError,
    relay_channel,
)
from omni.store.bridge import Bridge
from omni.store.notifications import Inbox, PostgresListener, open_postgres_listener

_Q_REGISTER_NODE = """
INSERT INTO nodes (name, incarnation, started_at, heartbeat_at) VALUES ($1, 1, now(), now())
ON CONFLICT (name) DO UPDATE SET
    incarnation = nodes.incarnation + 1, started_at = now(), heartbeat_at = now()
WHERE nodes.heartbeat_at <= now() - make_interval(secs => $2)
RETURNING name, incarnation, started_at, heartbeat_at, true AS alive"""
_Q_HEARTBEAT = "UPDATE nodes SET heartbeat_at = now() WHERE name = $1 AND incarnation = $2"
_Q_FORGET_NODE = "DELETE FROM nodes WHERE name = $1 AND incarnation = $2"
_Q_NODES = """
SELECT name, incarnation, started_at, heartbeat_at,
    heartbeat_at > now() - make_interval(secs => $1) AS alive
FROM nodes ORDER BY name"""
# A node that is gone (stopped, or dead and now registering again) holds nothing any more.
_Q_RELEASE_OWNERS_LEASES = """
UPDATE leases SET owner = NULL, expires_at = least(expires_at, now()) WHERE owner = $1"""
_Q_RELEASE_CLAIMS = """
UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1"""

_LEASE_COLUMNS = """resource, owner, epoch, acquired_at, expires_at,
    greatest(extract(epoch FROM expires_at - now()), 0)::float8 AS remaining"""
_Q_ACQUIRE = f"""
INSERT INTO leases AS l (resource, owner, epoch, acquired_at, expires_at)
VALUES ($1, $2, 1, now(), now() + make_interval(secs => $3))
ON CONFLICT (resource) DO UPDATE SET
    owner = excluded.owner, epoch = l.epoch + 1, acquired_at = now(),
    expires_at = excluded.expires_at
WHERE l.owner IS NULL OR l.expires_at <= now()
RETURNING {_LEASE_COLUMNS}"""
_Q_RENEW = f"""
UPDATE leases SET expires_at = now() + make_interval(secs => $4)
WHERE resource = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
RETURNING {_LEASE_COLUMNS}"""
# Every lease a node holds, in one statement per heartbeat.
_Q_RENEW_ALL = """
UPDATE leases AS l SET expires_at = now() + make_interval(secs => $4)
FROM unnest($2::text[], $3::bigint[]) AS f(r, e)
WHERE l.resource = f.r AND l.epoch = f.e AND l.owner = $1 AND l.expires_at > now()
RETURNING l.resource, l.owner, l.epoch, l.acquired_at, l.expires_at,
    greatest(extract(epoch FROM l.expires_at - now()), 0)::float8 AS remaining"""
_Q_RELEASE = """
UPDATE leases SET owner = NULL, expires_at = least(expires_at, now())
WHERE resource = $1 AND owner = $2 AND epoch = $3"""
_Q_LEASES = f"""
SELECT {_LEASE_COLUMNS} FROM leases WHERE starts_with(resource, $1) ORDER BY resource"""

#: The fence of a batch: the leases (resource, epoch) that are current, locked until the
#: commit. Fewer rows than fences: some write's lease is not current.
Q_FENCE = """
SELECT l.resource FROM leases l
JOIN unnest($1::text[], $2::bigint[]) AS f(resource, epoch)
  ON l.resource = f.resource AND l.epoch = f.epoch
WHERE l.owner IS NOT NULL AND l.expires_at > now()
ORDER BY l.resource
FOR SHARE OF l"""
#: A batch's notices, sent at its commit.
Q_NOTIFY_ALL = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)"
_Q_NOTIFY = "SELECT pg_notify($1, $2)"

# One statement, so one round trip and its own transaction: the rows and their notices (sent at
# its commit; a data-modifying CTE runs whether or not it is read).
_Q_RELAY_SEND = """
WITH stored AS (
    INSERT INTO relay (socket, direction, n, node, kind, body)
    SELECT s, d, n, $1, k, b
    FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]) AS r(s, d, n, k, b)
)
SELECT pg_notify($7, s) FROM unnest($8::text[]) AS t(s)"""
_Q_RELAY_TAKE = """
DELETE FROM relay WHERE node = $1 AND socket = $2 AND direction = $3
RETURNING socket, direction, n, kind, body"""
_Q_RELAY_WAITING = "SELECT DISTINCT socket FROM relay WHERE node = $1 ORDER BY socket"
_Q_RELAY_FORGET = "DELETE FROM relay WHERE socket = $1"
_Q_RELAY_SWEEP = "DELETE FROM relay WHERE at < now() - make_interval(secs => $1)"


async def _db_relay_send(pool: Any, node: str, items: Sequence[RelayItem]) -> None:
    await pool.execute(
        _Q_RELAY_SEND,
        node,
        [i.socket for i in items],
        [i.direction for i in items],
        [i.n for i in items],
        [i.kind for i in items],
        [i.body for i in items],
        relay_channel(node),
        sorted({item.socket for item in items}),
    )


def _node(row: Any) -> NodeRecord:
    return NodeRecord(
        row["name"], row["incarnation"], row["started_at"], row["heartbeat_at"], row["alive"]
    )


def _lease(row: Any) -> Lease:
    return Lease(
        row["resource"],
        row["owner"],
        row["epoch"],
        row["acquired_at"],
        row["expires_at"],
        float(row["remaining"]),
    )


async def _db_register_node(pool: Any, name: str, expiry: float) -> Any:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_Q_REGISTER_NODE, name, expiry)
        if row is not None:
            # The name's earlier start is dead (its heartbeat expired): what it held is free.
            await conn.execute(_Q_RELEASE_OWNERS_LEASES, name)
            await conn.execute(_Q_RELEASE_CLAIMS, name)
        return row


async def _db_leave_node(pool: Any, name: str, incarnation: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.execute(_Q_FORGET_NODE, name, incarnation) == "DELETE 1":
            await conn.execute(_Q_RELEASE_OWNERS_LEASES, name)
            await conn.execute(_Q_RELEASE_CLAIMS, name)


async def _db_execute(pool: Any, query: str, *args: Any) -> str:
    status: str = await pool.execute(query, *args)
    return status


async def _db_fetch(pool: Any, query: str, *args: Any) -> list[Any]:
    rows: list[Any] = await pool.fetch(query, *args)
    return rows


def _seconds(seconds: float) -> float:
    if not 0 < seconds <= 7 * 86_400:
        raise ValueError(f"a lifetime is over 0 and at most a week, not {seconds!r} s")
    return float(seconds)


class PostgresCoordination:
    """The node registry, leases, claims and notices of :class:`~omni.store.postgres.
    PostgresStore` (which provides ``_bridge``, ``_pool`` and ``_dsn``)."""

    _bridge: Bridge
    _pool: Any
    _dsn: str
    #: The listener of the last :meth:`listen` block (tests and operations: its backend pid).
    listener: PostgresListener | None = None

    async def register_node(self, name: str, expiry: float) -> NodeRecord:
        row = await self._bridge.run(_db_register_node, self._pool, name, _seconds(expiry))
        if row is None:
            raise NodeNameInUse(
                f"a node named {name!r} beat less than {expiry:g} s ago: is another Omni "
                "running under that name? (omni serve --node NAME)"
            )
        return _node(row)

    async def node_heartbeat(self, name: str, incarnation: int) -> bool:
        status = await self._bridge.run(_db_execute, self._pool, _Q_HEARTBEAT, name, incarnation)
        return bool(status == "UPDATE 1")

    async def leave_node(self, name: str, incarnation: int) -> None:
        await self._bridge.run(_db_leave_node, self._pool, name, incarnation)

    async def nodes(self, expiry: float) -> list[NodeRecord]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_NODES, _seconds(expiry))
        return [_node(row) for row in rows]

    async def acquire_lease(self, resource: str, owner: str, seconds: float) -> Lease | None:
        rows = await self._bridge.run(
            _db_fetch, self._pool, _Q_ACQUIRE, resource, owner, _seconds(seconds)
        )
        return _lease(rows[0]) if rows else None

    async def renew_lease(
        self, resource: str, owner: str, epoch: int, seconds: float
    ) -> Lease | None:
        rows = await self._bridge.run(
            _db_fetch, self._pool, _Q_RENEW, resource, owner, epoch, _seconds(seconds)
        )
        return _lease(rows[0]) if rows else None

    async def renew_leases(self, owner: str, held: Sequence[Fence], seconds: float) -> list[Lease]:
        if not held:
            return []
        rows = await self._bridge.run(
            _db_fetch,
            self._pool,
            _Q_RENEW_ALL,
            owner,
            [f.resource for f in held],
            [f.epoch for f in held],
            _seconds(seconds),
        )
        return sorted((_lease(row) for row in rows), key=lambda lease: lease.resource)

    async def release_lease(self, resource: str, owner: str, epoch: int) -> bool:
        status = await self._bridge.run(_db_execute, self._pool, _Q_RELEASE, resource, owner, epoch)
        return bool(status == "UPDATE 1")

    async def leases(self, prefix: str = "") -> list[Lease]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_LEASES, prefix)
        return [_lease(row) for row in rows]

    async def notify(self, channel: str, payload: str) -> None:
        notice = Notice(channel, payload)
        try:
            await self._bridge.run(
                _db_execute, self._pool, _Q_NOTIFY, notice.channel, notice.payload
            )
        except Exception as exc:
            raise StoreError(f"notify: {exc}") from exc

    async def relay_send(self, node: str, items: Sequence[RelayItem]) -> None:
        if items:
            await self._bridge.run(_db_relay_send, self._pool, node, items)

    async def relay_take(self, node: str, socket: str, direction: str) -> list[RelayItem]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_RELAY_TAKE, node, socket, direction)
        return sorted(
            (RelayItem(r["socket"], r["direction"], r["n"], r["kind"], r["body"]) for r in rows),
            key=lambda item: item.n,
        )

    async def relay_waiting(self, node: str) -> list[str]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_RELAY_WAITING, node)
        return [row["socket"] for row in rows]

    async def relay_forget(self, socket: str) -> None:
        await self._bridge.run(_db_execute, self._pool, _Q_RELAY_FORGET, socket)

    async def relay_sweep(self, seconds: float) -> int:
        status = await self._bridge.run(_db_execute, self._pool, _Q_RELAY_SWEEP, _seconds(seconds))
        return int(status.split()[-1])

    @asynccontextmanager
    async def listen(
        self, channels: Collection[str], *, buffer: int = 1024, check_interval: float = 5.0
    ) -> AsyncIterator[Inbox]:
        async with open_postgres_listener(
            self._bridge, self._dsn, channels, buffer=buffer, check_interval=check_interval
        ) as (inbox, listener):
            self.listener = listener
            yield inbox
