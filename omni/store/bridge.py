"""The asyncio bridge: how trio code awaits asyncpg. The only module of Omni that imports asyncio.

Rules:

* asyncpg needs an asyncio event loop. :class:`ThreadBridge` (the default) runs one in a
  dedicated thread; trio submits coroutine *functions* to it and is woken through its
  ``TrioToken`` when the result is ready — no thread per call, no polling.
  :class:`TrioAsyncioBridge` runs asyncio inside trio's own loop with trio-asyncio instead;
  ``benchmarks/store.py --bridge`` measures both (docs/storage.md records the figures and
  why the thread won).
* Callers pass a coroutine function and its arguments; it runs entirely on the asyncio side, so
  asyncpg objects (pools, connections) never cross into trio code except as opaque handles.
* Cancelling the trio caller cancels the asyncio future; it does not wait for the database.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


class Bridge(Protocol):
    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...


class ThreadBridge:
    """An asyncio event loop on its own thread, for the lifetime of :meth:`open`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[ThreadBridge]:
        # Not asyncio.new_event_loop(): a process that has imported trio-asyncio has replaced the
        # global policy with one that refuses to make loops inside trio.
        loop = asyncio.DefaultEventLoopPolicy().new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="omni-asyncio", daemon=True)
        thread.start()
        try:
            yield cls(loop)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)
            loop.close()

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future = asyncio.run_coroutine_threadsafe(_call(fn, args), self._loop)
        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()


async def _call(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


class TrioAsyncioBridge:
    """asyncio on top of trio's loop (trio-asyncio): measured against :class:`ThreadBridge`."""

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[TrioAsyncioBridge]:
        import trio_asyncio

        async with trio_asyncio.open_loop():
            yield cls()

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        import trio_asyncio

        result: T = await trio_asyncio.aio_as_trio(fn)(*args)
        return result


@asynccontextmanager
async def open_bridge(kind: str = "thread") -> AsyncIterator[Bridge]:
    if kind == "thread":
        async with ThreadBridge.open() as bridge:
            yield bridge
    elif kind == "trio-asyncio":
        async with TrioAsyncioBridge.open() as other:
            yield other
    else:
        raise ValueError(f"unknown bridge {kind!r} (thread or trio-asyncio)")
