"""QueueActor: the conversations waiting in one group, in order, and their live positions.

Rules: only the group's :class:`~omni.actors.group.GroupActor` changes the queue (it asks), so
routing decisions and the queue never disagree. After every change the queue tells each waiting
visitor whose position moved their new position (F9), writing straight to the visitor's
:class:`VisitorLink` — a position is state, not history, so it carries no ``seq``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from omni.actors.peer import Peer
from omni.actors.runtime import Actor
from omni.domain import protocol as p
from omni.domain.routing import WaitingQueue


class VisitorLink:
    """A conversation's connection to its visitor, shared by its conversation actor (which
    attaches and detaches the visitor) and its queue (which reports the position)."""

    __slots__ = ("conversation_id", "key", "peer", "position")

    def __init__(
        self, conversation_id: str, key: tuple[datetime, str], peer: Peer | None = None
    ) -> None:
        self.conversation_id = conversation_id
        #: The conversation's place in any queue: (waiting since, ticket).
        self.key = key
        self.peer = peer
        self.position: int | None = None

    def position_frame(self) -> str:
        assert self.position is not None
        return p.encode(p.Queued(self.conversation_id, self.position))


@dataclass(frozen=True, slots=True)
class Push:
    link: VisitorLink


@dataclass(frozen=True, slots=True)
class Pop:
    pass


@dataclass(frozen=True, slots=True)
class Remove:
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    pass


QueueMessage = Push | Pop | Remove | Snapshot


class QueueActor(Actor[QueueMessage]):
    def __init__(self, group_id: int) -> None:
        self.group_id = group_id
        self._queue = WaitingQueue()
        self._links: dict[str, VisitorLink] = {}
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Push: self._push,
            Pop: self._pop,
            Remove: self._remove,
            Snapshot: self._snapshot,
        }

    async def handle(self, message: QueueMessage) -> Any:
        return await self._handlers[type(message)](message)

    async def _push(self, message: Push) -> int:
        link = message.link
        self._links[link.conversation_id] = link
        self._queue.push(link.conversation_id, link.key)
        self._report_positions()
        return len(self._queue)

    async def _pop(self, message: Pop) -> VisitorLink | None:
        conversation_id = self._queue.pop()
        if conversation_id is None:
            return None
        link = self._links.pop(conversation_id)
        link.position = None
        self._report_positions()
        return link

    async def _remove(self, message: Remove) -> int:
        if self._queue.remove(message.conversation_id):
            self._links.pop(message.conversation_id).position = None
            self._report_positions()
        return len(self._queue)

    async def _snapshot(self, message: Snapshot) -> list[str]:
        return list(self._queue)

    def _report_positions(self) -> None:
        for index, conversation_id in enumerate(self._queue, start=1):
            link = self._links[conversation_id]
            if link.position != index:
                link.position = index
                if link.peer is not None:
                    link.peer.deliver(link.position_frame())

    def __len__(self) -> int:
        return len(self._queue)
