"""Notices between nodes: PostgreSQL ``LISTEN/NOTIFY`` delivered into trio (docs/scale-out.md).

Rules:

* A notice carries ids; bodies are read from the tables. It is sent by the transaction that
  wrote what it names (``pg_notify`` in the batch writer's transaction), so a notice received
  means the data is committed, and a write that failed sends none.
* One dedicated connection LISTENs (asyncpg, through :mod:`omni.store.bridge`: asyncpg's
  callbacks run on the asyncio thread and hand each notice to trio with
  ``TrioToken.run_sync_soon``). Its loss is noticed two ways: asyncpg's termination listener,
  and a ``SELECT 1`` every ``check_interval`` seconds (a connection cut without a FIN). The
  listener then reconnects with a doubling back-off and, once it LISTENs again, puts a
  :class:`~omni.store.Resync` in the stream: what was committed meanwhile is in the tables,
  and everything committed from then on is notified. Never a silent gap.
* The stream is bounded: a consumer that falls ``buffer`` notices behind loses the unread ones
  and gets one :class:`~omni.store.Resync` in their place — the same recovery as a lost
  connection, and the notifying transactions never wait for a slow reader.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from omni.store import Notice, Resync, StoreError
from omni.store.bridge import Bridge

log = logging.getLogger(__name__)

#: Seconds between two checks that the listening connection still answers.
CHECK_INTERVAL = 5.0
#: How long a check may take before the connection is taken for lost.
CHECK_TIMEOUT = 5.0
#: The first wait before reconnecting, doubling up to the second.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


@dataclass
class SubscriptionStatistics:
    delivered: int = 0
    #: Resync markers put in the stream, by reason (``reconnected``, ``overflow``).
    resyncs: int = 0
    dropped: int = 0
    #: Whether the listening connection is up now (always, in memory).
    connected: bool = True
    reconnects: int = 0


class Inbox:
    """A bounded stream of notices and resync markers (trio side); the store puts, one
    consumer receives. Implements :class:`~omni.store.Subscription`."""

    def __init__(self, buffer: int) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self._buffer = buffer
        self._items: deque[Notice | Resync] = deque()
        self._ready = trio.Event()
        self._stats = SubscriptionStatistics()

    def put(self, notice: Notice) -> None:
        """Add a notice (never blocks): if the stream is full, its unread notices are dropped
        for one resync marker."""
        if len(self._items) >= self._buffer:
            self._stats.dropped += sum(isinstance(i, Notice) for i in self._items)
            self._items.clear()
            self._add(Resync("overflow"))
            return
        self._add(notice)

    def resync(self, reason: str) -> None:
        """Tell the consumer it may have missed notices (after what is already in the stream)."""
        self._add(Resync(reason))

    def _add(self, item: Notice | Resync) -> None:
        if isinstance(item, Resync):
            self._stats.resyncs += 1
        self._items.append(item)
        self._ready.set()

    async def receive(self) -> Notice | Resync:
        while not self._items:
            self._ready = trio.Event()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, Notice):
            self._stats.delivered += 1
        return item

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Notice | Resync:
        return await self.receive()

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(**vars(self._stats))


# -- PostgreSQL -----------------------------------------------------------------------------------

_Q_PING = "SELECT 1"
_Q_NOTIFY = "SELECT pg_notify($1, $2)"


class _Listening:
    """The listening connection (asyncio side) and the callbacks it was given."""

    def __init__(self, conn: Any, on_notice: Any, on_lost: Any) -> None:
        self.conn = conn
        self.on_notice = on_notice
        self.on_lost = on_lost
        #: False once given up: what the connection still hands over is not passed on (the
        #: Resync that follows covers it).
        self.open = True


async def _db_listen(
    dsn: str, channels: list[str], token: trio.lowlevel.TrioToken, inbox: Inbox, lost: Any
) -> _Listening:
    import asyncpg

    def deliver(_conn: Any, _pid: int, channel: str, payload: str) -> None:
        # On the asyncio thread: hand over to trio, in the order PostgreSQL sent them.
        if not listening.open:
            return
        try:
            token.run_sync_soon(inbox.put, Notice(channel, payload))
        except trio.RunFinishedError:
            pass

    def terminated(_conn: Any) -> None:
        try:
            token.run_sync_soon(lost)
        except trio.RunFinishedError:
            pass

    listening = _Listening(None, deliver, terminated)
    # A connection attempt into a network that drops packets must not outlast a check either.
    conn = await asyncpg.connect(dsn, command_timeout=CHECK_TIMEOUT, timeout=CHECK_TIMEOUT)
    try:
        conn.add_termination_listener(terminated)
        for channel in channels:
            # asyncpg quotes the name (an identifier, not a parameter); Notice checked it.
            await conn.add_listener(channel, deliver)
    except BaseException:
        await conn.close()
        raise
    listening.conn = conn
    return listening


async def _db_ping(listening: _Listening) -> None:
    await listening.conn.fetchval(_Q_PING)


async def _db_unlisten(listening: _Listening) -> None:
    listening.open = False
    conn = listening.conn
    if conn.is_closed():
        return
    conn.remove_termination_listener(listening.on_lost)
    try:
        await conn.close(timeout=CHECK_TIMEOUT)
    except Exception:
        conn.terminate()


async def _db_backend_pid(listening: _Listening) -> int:
    pid: int = listening.conn.get_server_pid()
    return pid


class PostgresListener:
    """LISTENs on ``channels`` on a connection of its own while :meth:`open` runs."""

    def __init__(
        self,
        bridge: Bridge,
        dsn: str,
        channels: Collection[str],
        inbox: Inbox,
        *,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        for channel in channels:
            Notice(channel, "")  # the name's check
        self._bridge = bridge
        self._dsn = dsn
        self._channels = sorted(set(channels))
        self._inbox = inbox
        self._check_interval = check_interval
        self._listening: _Listening | None = None
        self._lost = trio.Event()

    async def backend_pid(self) -> int | None:
        """The PostgreSQL process of the listening connection now (for tests and operations)."""
        if self._listening is None:
            return None
        return await self._bridge.run(_db_backend_pid, self._listening)

    async def _connect(self) -> None:
        self._lost = trio.Event()
        lost = self._lost
        token = trio.lowlevel.current_trio_token()
        self._listening = await self._bridge.run(
            _db_listen, self._dsn, self._channels, token, self._inbox, lost.set
        )
        self._inbox._stats.connected = True

    async def _disconnect(self) -> None:
        listening, self._listening = self._listening, None
        self._inbox._stats.connected = False
        if listening is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CHECK_TIMEOUT):
                try:
                    await self._bridge.run(_db_unlisten, listening)
                except Exception as exc:
                    log.debug("notices: closing the lost connection: %s", exc)

    async def _watch(self) -> None:
        """Return when the connection is lost."""
        while not self._lost.is_set():
            with trio.move_on_after(self._check_interval):
                await self._lost.wait()
                return
            try:
                with trio.fail_after(CHECK_TIMEOUT):
                    assert self._listening is not None
                    await self._bridge.run(_db_ping, self._listening)
            except (Exception, trio.TooSlowError) as exc:
                log.warning("notices: the listening connection does not answer (%s)", exc)
                return

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """LISTEN, then report ``started`` (notices committed from then on arrive); watch and
        reconnect until cancelled."""
        try:
            await self._connect()
        except Exception as exc:
            raise StoreError(f"notices: cannot LISTEN: {type(exc).__name__}: {exc}") from exc
        task_status.started()
        try:
            while True:
                await self._watch()
                log.warning("notices: the listening connection was lost; reconnecting")
                await self._disconnect()
                backoff = FIRST_BACKOFF
                while True:
                    try:
                        await self._connect()
                        break
                    except Exception as exc:
                        log.warning(
                            "notices: cannot LISTEN (%s); again in %.1f s",
                            type(exc).__name__,
                            backoff,
                        )
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF)
                self._inbox._stats.reconnects += 1
                # Listening again: what was committed while it was not is in the tables.
                self._inbox.resync("reconnected")
        finally:
            await self._disconnect()


@asynccontextmanager
async def open_postgres_listener(
    bridge: Bridge,
    dsn: str,
    channels: Collection[str],
    *,
    buffer: int = 1024,
    check_interval: float = CHECK_INTERVAL,
) -> AsyncIterator[tuple[Inbox, PostgresListener]]:
    inbox = Inbox(buffer)
    listener = PostgresListener(bridge, dsn, channels, inbox, check_interval=check_interval)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        try:
            yield inbox, listener
        finally:
            nursery.cancel_scope.cancel()
