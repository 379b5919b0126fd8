"""BoardPublisher: pushes the supervisor's live view to the connections watching it.

Rules:

* Whatever may change the board says so with :meth:`BoardPublisher.changed` — a flag, nothing
  else: conversations changing status, group or operator, queues, presence, configuration.
  Chat messages change none of these and do not call it.
* At most one board a second (``COALESCE``): the first change after a quiet second is pushed at
  once, the changes during the next second together at its end. A board equal to the last one
  pushed (but for its ``at``) is not pushed.
* The figures' 15-minute intervals and the day roll over on the clock, not on a change: the
  publisher wakes at each interval's end too, so the new interval (or day) shows without one.
* No heartbeat board: the connection's pings say it is alive, and the page ticks the longest
  wait itself from ``oldest_waiting_since``.
* The board is built once and encoded once for every watcher; nothing is built while nobody
  watches. A new watcher gets the current board at once (:meth:`watch`).
* Cluster mode (``gather``): the board shows the whole cluster — the other nodes' parts are
  gathered (:func:`omni.domain.board.merge`) at every push, and the publisher also looks every
  ``every`` seconds, since another node's changes are not signalled here.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import msgspec
import trio

from omni.actors.peer import Peer
from omni.clock import Clock
from omni.domain import protocol as p
from omni.domain.board import INTERVAL

#: Least seconds between two boards pushed.
COALESCE = 1.0


class BoardPublisher:
    def __init__(
        self,
        build: Callable[[], p.Board],
        clock: Clock,
        gather: Callable[[p.Board], Awaitable[p.Board]] | None = None,
        every: float | None = None,
    ) -> None:
        self._build = build
        self._clock = clock
        #: Cluster mode: makes this node's board the cluster's (set by the composition root).
        self.gather = gather
        self.every = every
        self._watchers: set[Peer] = set()
        self._changed = trio.Event()
        self._last: p.Board | None = None
        #: Boards pushed to the watchers (not counting those sent to a new watcher).
        self.pushed = 0

    def statistics(self) -> dict[str, int]:
        return {"watchers": len(self._watchers), "pushed": self.pushed}

    def changed(self) -> None:
        """Something the board shows may have changed."""
        self._changed.set()

    def watch(self, peer: Peer) -> None:
        """Send ``peer`` the board now, and every new one until :meth:`unwatch`."""
        self._watchers.add(peer)
        peer.deliver(p.encode(self._last if self._last is not None else self._build()))
        if self.gather is not None and self._last is None:
            self.changed()  # the whole cluster's board follows

    def unwatch(self, peer: Peer) -> None:
        self._watchers.discard(peer)

    async def run(self) -> None:
        """Push boards until cancelled (the hub's nursery owns this task)."""
        while True:
            every = self.every if self.gather is not None and self.every else math.inf
            with trio.move_on_after(min(self._until_next_interval(), every)):
                await self._changed.wait()
            self._changed = trio.Event()
            if await self._push():
                await trio.sleep(COALESCE)

    def _until_next_interval(self) -> float:
        now = self._clock.now()
        step = INTERVAL.total_seconds()
        into = now.timestamp() % step
        # Interval ends fall on whole quarter hours of UTC in every zone whose offset is a
        # multiple of 15 minutes (all zones in use today).
        return step - into + 0.001

    async def _push(self) -> bool:
        """Push the board if it changed; whether it was pushed."""
        if not self._watchers:
            self._last = None
            return False
        board = self._build()
        if self.gather is not None:
            board = await self.gather(board)
        same = msgspec.structs.replace(board, at=self._last.at) if self._last else None
        if same is not None and same == self._last:
            return False
        self._last = board
        frame = p.encode(board)
        for peer in list(self._watchers):
            peer.deliver(frame)
        self.pushed += 1
        return True
