"""PauseRecorder: the operators' pauses written to the store behind their sessions.

Rules:

* A presence change takes effect at once (roster, routing, the console's reply); its pause is
  written to the store *after* it, by one task, in the order the changes happened. An
  operator's status never waits on the database: a slow or unreachable database delays only the
  record (docs/decisions.md, issue 14).
* A pause starts when the operator pauses and ends when they become available, go offline or
  give another reason (which starts the next pause). Pausing again for the same reason changes
  nothing.
* A write that fails is tried again, in order, after a back-off; nothing is dropped while the
  server runs. A write interrupted by a cancellation is written again by :meth:`close`: doing
  one twice changes no figure (a start again ends the first copy where it began, with no
  length; an end or a heartbeat again changes nothing).
* While any pause is open, the store hears every ``heartbeat`` seconds that the open ones go
  on (:meth:`~omni.store.Store.pauses_ongoing`): a pause left open by a server that died ends,
  at the next start-up, at most that long before the server died.
* :meth:`close` (the hub's exit) ends the open pauses at that instant and writes what is
  pending, for at most ``drain`` seconds.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import trio

from omni.clock import Clock
from omni.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Change:
    #: "start", "end" or "ongoing" (the heartbeat).
    kind: str
    operator_id: int
    reason: str | None
    at: datetime

    async def write(self, store: Store) -> None:
        if self.kind == "start":
            await store.pause_started(self.operator_id, self.reason, self.at)
        elif self.kind == "end":
            await store.pause_ended(self.operator_id, self.at)
        else:
            await store.pauses_ongoing(self.at)


class PauseRecorder:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        heartbeat: float = 60.0,
        retry_max: float = 30.0,
        drain: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.heartbeat = heartbeat
        self.retry_max = retry_max
        self.drain = drain
        #: Operators paused now -> their reason (what the store holds open, once written).
        self._open: dict[int, str | None] = {}
        #: Changes not yet written, oldest first.
        self._pending: deque[_Change] = deque()
        self._wakeup = trio.Event()
        #: One writer at a time: the task, or :meth:`close`.
        self._writing = trio.Lock()
        self._queued = 0
        self._written = 0
        self._progress = trio.Event()
        self.failures = 0

    def statistics(self) -> dict[str, int]:
        return {
            "open": len(self._open),
            "pending": len(self._pending),
            "written": self._written,
            "failures": self.failures,
        }

    def presence(self, operator_id: int, paused: bool, reason: str | None, at: datetime) -> None:
        """The operator's presence changed at ``at``: paused (with ``reason``), or not. Never
        blocks; the store hears of it shortly."""
        if operator_id in self._open:
            if paused and self._open[operator_id] == reason:
                return  # the same pause goes on
            if not paused:
                del self._open[operator_id]
                self._queue(_Change("end", operator_id, None, at))
                return
        if paused:
            # A pause still open ends where this one starts (the store does both).
            self._open[operator_id] = reason
            self._queue(_Change("start", operator_id, reason, at))

    def _queue(self, change: _Change) -> None:
        self._pending.append(change)
        self._queued += 1
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every change made so far is in the store."""
        target = self._queued
        while self._written < target:
            await self._progress.wait()

    async def run(self) -> None:
        """Write the changes as they come, and the heartbeat; runs until cancelled."""
        next_beat = self._clock.monotonic() + self.heartbeat
        while True:
            now = self._clock.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat
                if self._open:
                    self._queue(_Change("ongoing", 0, None, self._clock.now()))
            if not self._pending:
                # No heartbeat while nobody is paused: an idle server has no timer here.
                with trio.move_on_at(next_beat if self._open else math.inf):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            await self._write_pending()

    async def close(self) -> None:
        """The server stops: the open pauses end now, and what is pending is written (for at
        most ``drain`` seconds, even if the caller is being cancelled)."""
        at = self._clock.now()
        for operator_id in list(self._open):
            self.presence(operator_id, False, None, at)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.drain):
                await self._write_pending()
        if self._pending:
            log.error(
                "%d pause changes were not stored before the server stopped", len(self._pending)
            )

    async def _write_pending(self) -> None:
        async with self._writing:
            delay = 0.5
            while self._pending:
                change = self._pending[0]
                try:
                    await change.write(self._store)
                except Exception as exc:
                    self.failures += 1
                    log.warning(
                        "a pause change was not stored (%s); trying again in %.1f s",
                        type(exc).__name__,
                        delay,
                    )
                    await trio.sleep(delay)
                    delay = min(delay * 2, self.retry_max)
                    continue
                delay = 0.5
                self._pending.popleft()
                self._written += 1
                self._progress.set()
                self._progress = trio.Event()
