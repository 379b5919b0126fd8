"""The MemoryStore's part in running more than one node: the node registry, leases with fencing
epochs, outbox claims and notices, kept in this process (for tests and the simulator, where
"nodes" are tasks of one trio run).

Its clock — the stand-in for PostgreSQL's ``now()`` — is the ``now`` given to the store, by
default trio's clock from a fixed epoch, so ``MockClock`` drives heartbeats, leases and claims.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trio

from omni.store import (
    Fence,
    FencedOut,
    Lease,
    NodeNameInUse,
    NodeRecord,
    Notice,
    RelayItem,
    relay_channel,
)
from omni.store.notifications import Inbox

#: Where the default clock's instants start (trio's clock has no date).
TRIO_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def trio_now() -> datetime:
    return TRIO_EPOCH + timedelta(seconds=trio.current_time())


@dataclass
class _Node:
    incarnation: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass
class _Lease:
    owner: str | None
    epoch: int
    acquired_at: datetime
    expires_at: datetime


class MemoryCoordination:
    """Mixed into :class:`~omni.store.memory.MemoryStore`."""

    def _init_coordination(self, now: Callable[[], datetime] | None) -> None:
        self._now = now or trio_now
        self._nodes: dict[str, _Node] = {}
        self._leases: dict[str, _Lease] = {}
        #: Outbox item id -> (claimant, until).
        self._claims: dict[int, tuple[str, datetime]] = {}
        self._inboxes: list[tuple[frozenset[str], Inbox]] = []
        #: Relayed items: (addressee, item, when stored).
        self._relay: list[tuple[str, RelayItem, datetime]] = []

    # -- nodes --------------------------------------------------------------------------------

    async def register_node(self, name: str, expiry: float) -> NodeRecord:
        now = self._now()
        found = self._nodes.get(name)
        if found is not None and found.heartbeat_at > now - timedelta(seconds=expiry):
            raise NodeNameInUse(f"a node named {name!r} beat less than {expiry:g} s ago")
        incarnation = 1 if found is None else found.incarnation + 1
        self._nodes[name] = _Node(incarnation, now, now)
        self._release_all(name, now)
        return NodeRecord(name, incarnation, now, now, True)

    async def node_heartbeat(self, name: str, incarnation: int) -> bool:
        found = self._nodes.get(name)
        if found is None or found.incarnation != incarnation:
            return False
        found.heartbeat_at = self._now()
        return True

    async def leave_node(self, name: str, incarnation: int) -> None:
        found = self._nodes.get(name)
        if found is not None and found.incarnation == incarnation:
            del self._nodes[name]
            self._release_all(name, self._now())

    def _release_all(self, owner: str, now: datetime) -> None:
        for lease in self._leases.values():
            if lease.owner == owner:
                lease.owner = None
                lease.expires_at = min(lease.expires_at, now)
        for item_id, (claimant, _) in list(self._claims.items()):
            if claimant == owner:
                del self._claims[item_id]

    async def nodes(self, expiry: float) -> list[NodeRecord]:
        limit = self._now() - timedelta(seconds=expiry)
        return [
            NodeRecord(n, r.incarnation, r.started_at, r.heartbeat_at, r.heartbeat_at > limit)
            for n, r in sorted(self._nodes.items())
        ]

    # -- leases -------------------------------------------------------------------------------

    def _lease(self, resource: str, lease: _Lease, now: datetime) -> Lease:
        remaining = max((lease.expires_at - now).total_seconds(), 0.0)
        return Lease(
            resource, lease.owner, lease.epoch, lease.acquired_at, lease.expires_at, remaining
        )

    async def acquire_lease(self, resource: str, owner: str, seconds: float) -> Lease | None:
        _check(seconds)
        now = self._now()
        found = self._leases.get(resource)
        if found is not None and found.owner is not None and found.expires_at > now:
            return None
        epoch = 1 if found is None else found.epoch + 1
        lease = self._leases[resource] = _Lease(owner, epoch, now, now + timedelta(seconds=seconds))
        return self._lease(resource, lease, now)

    async def renew_lease(
        self, resource: str, owner: str, epoch: int, seconds: float
    ) -> Lease | None:
        _check(seconds)
        now = self._now()
        found = self._leases.get(resource)
        if found is None or not _current(found, Fence(resource, epoch), now, owner):
            return None
        found.expires_at = now + timedelta(seconds=seconds)
        return self._lease(resource, found, now)

    async def renew_leases(self, owner: str, held: Sequence[Fence], seconds: float) -> list[Lease]:
        renewed = [await self.renew_lease(f.resource, owner, f.epoch, seconds) for f in held]
        return sorted((lease for lease in renewed if lease is not None), key=lambda x: x.resource)

    async def release_lease(self, resource: str, owner: str, epoch: int) -> bool:
        found = self._leases.get(resource)
        if found is None or found.owner != owner or found.epoch != epoch:
            return False
        found.owner = None
        found.expires_at = min(found.expires_at, self._now())
        return True

    async def leases(self, prefix: str = "") -> list[Lease]:
        now = self._now()
        return [
            self._lease(r, lease, now)
            for r, lease in sorted(self._leases.items())
            if r.startswith(prefix)
        ]

    def _check_fence(self, fence: Fence | None) -> None:
        """Raise :class:`FencedOut` unless ``fence``'s lease is current (before any change)."""
        if fence is None:
            return
        found = self._leases.get(fence.resource)
        if found is None or not _current(found, fence, self._now()):
            raise FencedOut(f"the lease of {fence.resource} is not at epoch {fence.epoch}")

    # -- outbox claims ------------------------------------------------------------------------

    def _claimed(self, item_id: int) -> bool:
        claim = self._claims.get(item_id)
        return claim is not None and claim[1] > self._now()

    def _unclaim(self, item_id: int) -> None:
        self._claims.pop(item_id, None)

    # -- notices ------------------------------------------------------------------------------

    async def notify(self, channel: str, payload: str) -> None:
        self._publish([Notice(channel, payload)])

    def _publish(self, notices: list[Notice]) -> None:
        for notice in notices:
            for channels, inbox in self._inboxes:
                if notice.channel in channels:
                    inbox.put(notice)

    async def relay_send(self, node: str, items: Sequence[RelayItem]) -> None:
        now = self._now()
        self._relay.extend((node, item, now) for item in items)
        sockets = sorted({item.socket for item in items})
        self._publish([Notice(relay_channel(node), socket) for socket in sockets])

    async def relay_take(self, node: str, socket: str, direction: str) -> list[RelayItem]:
        taken = [
            item
            for to, item, _ in self._relay
            if to == node and item.socket == socket and item.direction == direction
        ]
        self._relay = [
            r
            for r in self._relay
            if not (r[0] == node and r[1].socket == socket and r[1].direction == direction)
        ]
        return sorted(taken, key=lambda item: item.n)

    async def relay_waiting(self, node: str) -> list[str]:
        return sorted({item.socket for to, item, _ in self._relay if to == node})

    async def relay_forget(self, socket: str) -> None:
        self._relay = [r for r in self._relay if r[1].socket != socket]

    async def relay_sweep(self, seconds: float) -> int:
        limit = self._now() - timedelta(seconds=seconds)
        kept = [r for r in self._relay if r[2] >= limit]
        swept, self._relay = len(self._relay) - len(kept), kept
        return swept

    @asynccontextmanager
    async def listen(
        self, channels: Collection[str], *, buffer: int = 1024
    ) -> AsyncIterator[Inbox]:
        for channel in channels:
            Notice(channel, "")  # the name's check
        entry = (frozenset(channels), Inbox(buffer))
        self._inboxes.append(entry)
        try:
            yield entry[1]
        finally:
            self._inboxes.remove(entry)


def _current(lease: _Lease, fence: Fence, now: datetime, owner: str | None = None) -> bool:
    return (
        lease.owner is not None
        and (owner is None or lease.owner == owner)
        and lease.epoch == fence.epoch
        and lease.expires_at > now
    )


def _check(seconds: float) -> None:
    if not 0 < seconds <= 7 * 86_400:
        raise ValueError(f"a lifetime is over 0 and at most a week, not {seconds!r} s")
