"""This node among others (issue 18, docs/scale-out.md): its name, its registration and its
heartbeat.

Rules:

* A node registers when the server starts (``Store.register_node``: a name a live node holds
  is refused) and leaves when it stops, giving up its leases and outbox claims at once.
* Its heartbeat runs in the server's nursery on trio's clock, every ``heartbeat_seconds``; the
  store stamps it with the database's clock, which is the one that decides who is alive. A
  heartbeat the store cannot take is logged and tried again at the next beat (the node is dead
  to the others once ``node_expiry_seconds`` pass without one). A heartbeat the store refuses —
  another process registered this name since — sets :attr:`Node.replaced`: this process must
  no longer act as the node.
* This module is an edge beside the outbox: the settings come in, the store goes out.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

from omni.settings import ClusterSettings
from omni.store import ADOPT_CHANNEL, Fence, NodeRecord, Resync, Store

log = logging.getLogger(__name__)


def generated_name() -> str:
    """A name for a node that was given none: its host's, and a random suffix (each start of
    an unnamed node is a new node)."""
    host = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname())
    return f"{host[:48] or 'omni'}-{secrets.token_hex(3)}"


@dataclass
class NodeStatistics:
    beats: int = 0
    #: Heartbeats the store could not take (it was away).
    missed: int = 0


class Node:
    """This node, registered: its name and incarnation while :func:`open_node` runs."""

    def __init__(self, store: Store, record: NodeRecord, settings: ClusterSettings) -> None:
        self.store = store
        self.name = record.name
        self.incarnation = record.incarnation
        self.settings = settings
        #: Set when the store refused a heartbeat: another process is this node now.
        self.replaced = trio.Event()
        self._stats = NodeStatistics()

    async def live_nodes(self) -> list[NodeRecord]:
        """The nodes alive now (this one too, while it beats), by name."""
        nodes = await self.store.nodes(self.settings.node_expiry_seconds)
        return [n for n in nodes if n.alive]

    async def run_heartbeat(self) -> None:
        while not self.replaced.is_set():
            await trio.sleep(self.settings.heartbeat_seconds)
            try:
                beat = await self.store.node_heartbeat(self.name, self.incarnation)
            except Exception as exc:
                self._stats.missed += 1
                log.warning("node %s: the heartbeat was not stored (%s)", self.name, exc)
                continue
            if not beat:
                log.error(
                    "node %s: another process registered this node's name; this one no "
                    "longer acts as it",
                    self.name,
                )
                self.replaced.set()
                return
            self._stats.beats += 1

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(**vars(self._stats))


@asynccontextmanager
async def open_node(store: Store, name: str, settings: ClusterSettings) -> AsyncIterator[Node]:
    """Register ``name`` (:class:`~omni.store.NodeNameInUse` if a live node has it), beat until
    the block exits, then leave."""
    record = await store.register_node(name, settings.node_expiry_seconds)
    node = Node(store, record, settings)
    log.info("node %s: registered (start %d)", node.name, node.incarnation)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.run_heartbeat)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await store.leave_node(node.name, node.incarnation)
            except Exception as exc:  # the others see it dead after the expiry instead
                log.warning("node %s: could not leave (%s)", node.name, exc)


# -- cluster mode: groups owned by lease -----------------------------------------------------


class GroupOwner(Protocol):
    """What the ownership loop drives (the hub)."""

    def group_ids(self) -> Collection[int]:
        """The configured groups."""
        ...

    def placement(self, group_id: int) -> str:
        """What ``group_id`` is placed by: its routing domain's name, so that the groups that
        share operators or services hash to one node together."""
        ...

    async def own_group(self, group_id: int, fence: Fence) -> None:
        """Run the group here, writing under ``fence``: its actors, and its open conversations
        restored from the store as at start-up."""
        ...

    def disown_group(self, group_id: int) -> None:
        """Stop running the group here at once: its actors, its conversations' actors, their
        visitors' and operators' sockets (closed with ``moved``)."""
        ...

    async def adopt_conversations(self, groups: set[int] | None = None) -> None:
        """Restore the owned ``groups``' (None: all owned) open conversations that run nowhere
        here (handed over by the node that created them, or moved by a transfer)."""
        ...


def rendezvous(nodes: Collection[str], resource: str) -> str:
    """The node ``resource`` hashes to among ``nodes`` (highest random weight): a node that
    joins or leaves moves only the resources that hash to it."""
    return max(
        nodes,
        key=lambda node: hashlib.sha256(f"{node}\n{resource}".encode()).digest(),
    )


def group_resource(group_id: int) -> str:
    return f"group:{group_id}"


class GroupOwnership:
    """Cluster mode's loop (``[server.cluster] enabled``): acquire, renew and release the
    ``group:<id>`` leases of this node, and tell the hub what it owns.

    Rules:

    * Each heartbeat: renew every owned lease (one statement); release those that now hash
      (rendezvous over the live nodes) to another live node — the group's actors are stopped
      *before* the release, so nothing of this node is written once another may acquire;
      acquire the groups that hash here, and any group whose lease has been free for a
      heartbeat.
    * A lease's local deadline is trio's clock taken *before* the acquire or renew was sent,
      plus ``lease_seconds`` minus a margin (a tenth): the database counted from later, so
      this node stops owning first. A watchdog disowns a group whose deadline passes, whatever
      the loop is waiting for (a database away, a renewal that hangs).
    """

    def __init__(self, node: Node, owner: GroupOwner) -> None:
        self.node = node
        self.owner = owner
        self.settings = node.settings
        #: Owned groups: their lease epoch and local deadline (trio's clock).
        self.owned: dict[int, tuple[int, float]] = {}
        self._free_since: dict[int, float] = {}
        self._lost = trio.Event()

    @property
    def _lifetime(self) -> float:
        return self.settings.lease_seconds * 0.9

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog)
            nursery.start_soon(self._adopt_on_notice)
            while True:
                try:
                    # A statement that hangs (a database cut off without a FIN) must not stall
                    # the loop for good: the watchdog disowns meanwhile, the next beat retries.
                    with trio.move_on_after(self.settings.lease_seconds):
                        await self.beat()
                except Exception as exc:  # the watchdog stops what cannot be renewed
                    log.warning("node %s: group leases not renewed (%s)", self.node.name, exc)
                await trio.sleep(self.settings.heartbeat_seconds)

    async def _adopt_on_notice(self) -> None:
        """A conversation handed into a group owned here (a transfer, a bot's hand-over on
        another node) is adopted as soon as its write commits, not at the next beat."""
        while True:
            try:
                async with self.node.store.listen([ADOPT_CHANNEL]) as notices:
                    async for notice in notices:
                        group_id = None if isinstance(notice, Resync) else int(notice.payload)
                        if group_id is None or group_id in self.owned:
                            await self.owner.adopt_conversations(
                                None if group_id is None else {group_id}
                            )
            except Exception as exc:  # the beat adopts meanwhile
                log.warning("node %s: adoption notices lost (%s)", self.node.name, exc)
                await trio.sleep(self.settings.heartbeat_seconds)

    async def _watchdog(self) -> None:
        while True:
            now = trio.current_time()
            for group_id, (_, deadline) in sorted(self.owned.items()):
                if deadline <= now:
                    log.error(
                        "node %s: group %d's lease not renewed in time; stops owning it",
                        self.node.name,
                        group_id,
                    )
                    self._disown(group_id)
            due = [d for _, d in self.owned.values()]
            await trio.sleep_until(min([*due, now + self.settings.heartbeat_seconds / 4]))

    def _disown(self, group_id: int) -> None:
        if self.owned.pop(group_id, None) is not None:
            self.owner.disown_group(group_id)

    async def beat(self) -> None:
        store, me, seconds = self.node.store, self.node.name, self.settings.lease_seconds
        live = {n.name for n in await self.node.live_nodes()} | {me}
        groups = set(self.owner.group_ids())
        held = dict(self.owned)
        sent = trio.current_time()
        renewed = {
            lease.resource: lease
            for lease in await store.renew_leases(
                me,
                [Fence(group_resource(g), epoch) for g, (epoch, _) in sorted(held.items())],
                seconds,
            )
        }
        for group_id, (epoch, _) in sorted(held.items()):
            resource = group_resource(group_id)
            lease = renewed.get(resource)
            if self.owned.get(group_id, (None,))[0] != epoch:
                # Disowned by the watchdog meanwhile: give the lease back.
                if lease is not None:
                    await store.release_lease(resource, me, epoch)
                continue
            if lease is None:
                log.error("node %s: group %d's lease was lost", me, group_id)
                self._disown(group_id)
                continue
            self.owned[group_id] = (epoch, sent + self._lifetime)
        for group_id, (epoch, _) in sorted(self.owned.items()):
            resource = group_resource(group_id)
            if group_id not in groups or rendezvous(live, self.owner.placement(group_id)) != me:
                self._disown(group_id)  # stopped first: nothing written after the release
                await store.release_lease(resource, me, epoch)
        leases = {lease.resource: lease for lease in await store.leases("group:")}
        now = trio.current_time()
        for group_id in sorted(groups - self.owned.keys()):
            resource = group_resource(group_id)
            found = leases.get(resource)
            if found is not None and found.owner is not None and found.remaining > 0:
                self._free_since.pop(group_id, None)
                continue
            if rendezvous(live, self.owner.placement(group_id)) != me:
                # Another live node's: give it a heartbeat to take it.
                since = self._free_since.setdefault(group_id, now)
                if now - since < self.settings.heartbeat_seconds:
                    continue
            sent = trio.current_time()
            lease = await store.acquire_lease(resource, me, seconds)
            if lease is None:
                continue
            self._free_since.pop(group_id, None)
            self.owned[group_id] = (lease.epoch, sent + self._lifetime)
            log.info("node %s: owns group %d (epoch %d)", me, group_id, lease.epoch)
            await self.owner.own_group(group_id, lease.fence)
        await self.owner.adopt_conversations()
