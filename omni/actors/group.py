"""GroupActor: routing inside one operator group.

Rules:

* The group actor is the only one that changes its queue, so it always knows how many wait.
* After every message it dispatches: while a conversation waits and the roster has an eligible
  operator, it pops the head, picks the operator idle longest and reserves their slot — the pick
  and the reserve happen with no ``await`` between them, so no other group can take that slot —
  and offers the conversation to it.
* It never waits on a conversation's mailbox (conversations wait on groups, groups on queues:
  no cycle, no deadlock). If a conversation's mailbox is full, the reservation is undone, the
  conversation goes back to its place, and dispatch retries shortly.
* It sees the server only through :class:`GroupHost`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from omni.actors.queue import Pop, Push, QueueActor, Remove, Snapshot, VisitorLink
from omni.actors.runtime import Actor, ActorRef, Supervisor
from omni.clock import Clock
from omni.domain.estimate import WaitEstimator
from omni.domain.routing import Roster

#: Delay before retrying a dispatch that found a conversation's mailbox full.
RETRY_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class Enqueue:
    link: VisitorLink


@dataclass(frozen=True, slots=True)
class Withdraw:
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Dispatch:
    pass


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    pass


GroupMessage = Enqueue | Withdraw | Dispatch | QueueSnapshot


class Delivery(Enum):
    """What became of an offer handed to a conversation."""

    SENT = "sent"
    #: The conversation ended meanwhile (its actor is gone).
    GONE = "gone"
    #: Its mailbox is full: try again shortly.
    BUSY = "busy"


class GroupHost(Protocol):
    """What a group actor needs of the server around it."""

    @property
    def roster(self) -> Roster: ...

    @property
    def clock(self) -> Clock: ...

    def is_open(self, conversation_id: str) -> bool:
        """Whether the conversation still has an actor (it may have ended while it waited)."""
        ...

    def offer(self, conversation_id: str, operator_id: int) -> Delivery:
        """Hand the conversation an offer to the operator, without waiting."""
        ...

    def queue_changed(self, group_id: int, waiting: int) -> None:
        """How many wait in the group now (metrics, the admin API)."""
        ...


class GroupActor(Actor[GroupMessage]):
    def __init__(self, group_id: int, host: GroupHost, queue: ActorRef[Any]) -> None:
        self.group_id = group_id
        self._host = host
        self._queue = queue
        self.waiting = 0
        self._retry_armed = False
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Enqueue: self._enqueue,
            Withdraw: self._withdraw,
            Dispatch: self._dispatch_asked,
            QueueSnapshot: self._snapshot,
        }

    async def started(self) -> None:
        # After a restart, learn the queue's length again: the queue actor kept it.
        self.waiting = len(await self._queue.ask(Snapshot()))

    async def handle(self, message: GroupMessage) -> Any:
        result = await self._handlers[type(message)](message)
        await self._dispatch()
        self._host.queue_changed(self.group_id, self.waiting)
        return result

    async def _enqueue(self, message: Enqueue) -> None:
        # The slots free now go to the head of the queue at once: a visitor within them waits
        # for nobody (their estimated wait is 0).
        free = self._host.roster.free_slots(self.group_id)
        self.waiting = await self._queue.ask(Push(message.link, free))

    async def _withdraw(self, message: Withdraw) -> None:
        self.waiting = await self._queue.ask(Remove(message.conversation_id))

    async def _dispatch_asked(self, message: Dispatch) -> None:
        self._retry_armed = False

    async def _snapshot(self, message: QueueSnapshot) -> list[str]:
        waiting: list[str] = await self._queue.ask(Snapshot())
        return waiting

    async def _dispatch(self) -> None:
        host, group_id = self._host, self.group_id
        roster = host.roster
        while self.waiting and roster.has_candidate(group_id):
            link: VisitorLink | None = await self._queue.ask(Pop())
            if link is None:
                self.waiting = 0
                return
            self.waiting -= 1
            if not host.is_open(link.conversation_id):
                continue  # it ended while it waited
            operator = roster.pick(group_id)  # re-checked: the ask above let others run
            if operator is None:
                self.waiting = await self._queue.ask(Push(link))
                return
            roster.reserve(operator.id, link.conversation_id, host.clock.monotonic())
            delivery = host.offer(link.conversation_id, operator.id)
            if delivery is Delivery.SENT:
                continue
            roster.release(operator.id, link.conversation_id)
            if delivery is Delivery.BUSY:
                self.waiting = await self._queue.ask(Push(link))
                if not self._retry_armed:
                    self._retry_armed = True
                    self.call_later(RETRY_DELAY, Dispatch())
                return


def spawn_group(
    supervisor: Supervisor, host: GroupHost, group_id: int, estimator: WaitEstimator
) -> tuple[ActorRef[GroupMessage], ActorRef[Any]]:
    """Spawn a group's queue and group actors under ``supervisor``; the queue reports the
    waits ``estimator`` estimates (it outlives restarts of either actor: the hub keeps it).
    Returned: the group actor, and its queue (to stop both when the group moves away)."""
    queue: ActorRef[Any] = supervisor.spawn(
        f"queue:{group_id}",
        lambda: QueueActor(group_id, estimator, host.clock),
        mailbox_size=1024,
    )
    group: ActorRef[GroupMessage] = supervisor.spawn(
        f"group:{group_id}", lambda: GroupActor(group_id, host, queue), mailbox_size=1024
    )
    return group, queue
