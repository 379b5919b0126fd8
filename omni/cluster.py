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

import logging
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from omni.settings import ClusterSettings
from omni.store import NodeRecord, Store

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
