"""QueueActor: the conversations waiting in one group, in order, and their live positions.

Rules: only the group's :class:`~omni.actors.group.GroupActor` changes the queue (it asks), so
routing decisions and the queue never disagree. After every change the queue tells each waiting
visitor whose position moved their new position and estimated wait (F9), writing straight to
the visitor's :class:`VisitorLink` — a position is state, not history, so it carries no ``seq``.

The estimate is the group's :class:`~omni.domain.estimate.WaitEstimator`'s, which the hub
feeds with the group's answers; the queue only asks it, once per report and only when some
position moved. When a visitor joins, the queue notes on their link when and with how many
places to move (:class:`QueueEntry`): what their answer teaches the estimator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from omni.actors.peer import Peer
from omni.actors.runtime import Actor
from omni.clock import Clock
from omni.domain import protocol as p
from omni.domain.estimate import WaitEstimator, wait_for
from omni.domain.routing import WaitingQueue


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """When a visitor joined a group's queue (trio's clock) and how many places they had to
    move then: their position less the slots the group's operators had free."""

    group_id: int
    at: float
    ahead: int


class VisitorLink:
    """A conversation's connection to its visitor, shared by its conversation actor (which
    attaches and detaches the visitor, and reports the answer) and its queue (which reports
    the position and the estimated wait, and notes the entry)."""

    __slots__ = ("conversation_id", "entered", "estimated_wait", "key", "peer", "position")

    def __init__(
        self, conversation_id: str, key: tuple[datetime, str], peer: Peer | None = None
    ) -> None:
        self.conversation_id = conversation_id
        #: The conversation's place in any queue: (waiting since, ticket).
        self.key = key
        self.peer = peer
        self.position: int | None = None
        self.estimated_wait: int | None = None
        #: Since when the conversation waits for an operator, until one accepts it: a visitor
        #: put back at the head (an offer lapsed) keeps the entry they were first told about.
        self.entered: QueueEntry | None = None

    def position_frame(self) -> str:
        assert self.position is not None
        return p.encode(p.Queued(self.conversation_id, self.position, self.estimated_wait))


@dataclass(frozen=True, slots=True)
class Push:
    link: VisitorLink
    #: Slots the group's operators have free now: the first ``free`` visitors are offered at
    #: once, so they wait for nobody.
    free: int = 0


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
    def __init__(self, group_id: int, estimator: WaitEstimator, clock: Clock) -> None:
        self.group_id = group_id
        self._estimator = estimator
        self._clock = clock
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
        index = self._queue.push(link.conversation_id, link.key)
        if link.entered is None or link.entered.group_id != self.group_id:
            ahead = max(index + 1 - message.free, 0)
            link.entered = QueueEntry(self.group_id, self._clock.monotonic(), ahead)
        self._report_positions(message.free)
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

    def _report_positions(self, free: int = 0) -> None:
        """Tell every visitor whose position moved their position and estimated wait (those
        behind the ``free`` first places wait for the operators who are busy now)."""
        pace: float | None = None
        asked = False
        for index, conversation_id in enumerate(self._queue, start=1):
            link = self._links[conversation_id]
            if link.position != index:
                link.position = index
                if not asked:  # once per report, and only when a position moved
                    pace, asked = self._estimator.pace(self._clock.monotonic()), True
                link.estimated_wait = wait_for(index - free, pace)
                if link.peer is not None:
                    link.peer.deliver(link.position_frame())

    def __len__(self) -> int:
        return len(self._queue)
