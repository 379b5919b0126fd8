"""The actors' view of a connected client: something frames can be delivered to.

Rules:

* Delivering never blocks an actor. A peer buffers a bounded number of live frames; one that
  cannot keep up is disconnected, and its client resumes with ``last_seq`` and gets the missed
  events replayed from the store — nothing is lost, and a slow client never slows a
  conversation.
* History is not live traffic: a replay (:class:`History`) is handed to the peer as one item
  and read from the store a page at a time *as the client reads it*, after what was queued
  before it and before what comes after it. However long the history, it takes no room in the
  live buffer and is never in memory whole.
* Frames are encoded once (:func:`omni.domain.protocol.encode`) and the same text goes to every
  recipient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from omni.store import Store, StoredEvent

#: Stored events read from the store at a time for a replay.
PAGE = 200


@dataclass(frozen=True, slots=True)
class History:
    """The stored events of one conversation with ``after < seq < before`` that one client may
    see (``hidden``: the audience it never gets), to be replayed in ``seq`` order."""

    store: Store
    conversation_id: str
    after: int
    before: int
    hidden: str

    async def pages(self, size: int = PAGE) -> AsyncIterator[list[StoredEvent]]:
        """The events, a page at a time: each page is read when the one before it is used."""
        after = self.after
        while after + 1 < self.before:
            events = await self.store.events_after(self.conversation_id, after, size)
            if not events:
                return
            yield [e for e in events if e.seq < self.before and e.audience != self.hidden]
            after = events[-1].seq
            if len(events) < size:
                return


class Peer(Protocol):
    def deliver(self, frame: str) -> None:
        """Queue one live frame; never blocks."""
        ...

    def deliver_history(self, history: History) -> None:
        """Queue a replay: sent as the client reads, behind what is already queued and ahead of
        what is queued after it; never blocks, and takes no room in the live buffer."""
        ...

    def close(self, code: str, message: str) -> None:
        """Send an ``error`` frame with ``code`` (if possible) and disconnect."""
        ...
