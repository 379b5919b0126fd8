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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omni.actors.queue import Pop, Push, QueueActor, Remove, Snapshot, VisitorLink
from omni.actors.runtime import Actor, ActorRef, ActorStopped, MailboxFull

if TYPE_CHECKING:
    from omni.actors.hub import Hub

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


class GroupActor(Actor[GroupMessage]):
    def __init__(self, group_id: int, hub: Hub, queue: ActorRef[Any]) -> None:
        self.group_id = group_id
        self._hub = hub
        self._queue = queue
        self.waiting = 0
        self._retry_armed = False

    async def started(self) -> None:
        # After a restart, learn the queue's length again: the queue actor kept it.
        self.waiting = len(await self._queue.ask(Snapshot()))

    async def handle(self, message: GroupMessage) -> Any:
        result: Any = None
        if isinstance(message, Enqueue):
            self.waiting = await self._queue.ask(Push(message.link))
        elif isinstance(message, Withdraw):
            self.waiting = await self._queue.ask(Remove(message.conversation_id))
        elif isinstance(message, Dispatch):
            self._retry_armed = False
        elif isinstance(message, QueueSnapshot):
            result = await self._queue.ask(Snapshot())
        await self._dispatch()
        self._hub.queue_lengths[self.group_id] = self.waiting
        return result

    async def _dispatch(self) -> None:
        from omni.actors.conversation import Apply
        from omni.domain.conversation import Offer

        roster, group_id = self._hub.roster, self.group_id
        while self.waiting and roster.has_candidate(group_id):
            link: VisitorLink | None = await self._queue.ask(Pop())
            if link is None:
                self.waiting = 0
                return
            self.waiting -= 1
            entry = self._hub.conversations.get(link.conversation_id)
            if entry is None:
                continue  # it ended while it waited
            operator = roster.pick(group_id)  # re-checked: the ask above let others run
            if operator is None:
                self.waiting = await self._queue.ask(Push(link))
                return
            roster.reserve(operator.id, link.conversation_id, self._hub.clock.monotonic())
            try:
                entry.ref.send_nowait(Apply(Offer(operator.id)))
            except MailboxFull:
                roster.release(operator.id, link.conversation_id)
                self.waiting = await self._queue.ask(Push(link))
                if not self._retry_armed:
                    self._retry_armed = True
                    self.call_later(RETRY_DELAY, Dispatch())
                return
            except ActorStopped:
                roster.release(operator.id, link.conversation_id)


def make_group(hub: Hub, group_id: int) -> tuple[ActorRef[GroupMessage], ActorRef[Any]]:
    """Spawn a group's queue and group actors under the hub's supervisor."""
    queue: ActorRef[Any] = hub.groups_supervisor.spawn(
        f"queue:{group_id}", lambda: QueueActor(group_id), mailbox_size=1024
    )
    group: ActorRef[GroupMessage] = hub.groups_supervisor.spawn(
        f"group:{group_id}", lambda: GroupActor(group_id, hub, queue), mailbox_size=1024
    )
    return group, queue
