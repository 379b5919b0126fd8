"""Direct socket writes into a trio-websocket connection: the one place Omni reads its internals.

Why: the hot path of a chat server is one small frame to an idle connection. Through
trio-websocket's public ``send_message`` from the connection's writer task, each frame costs a
task switch and several scheduler round trips; written straight into the socket when nothing
else is queued, nobody else is writing (trio-websocket's own writes — pongs, the close — hold
its stream lock) and the kernel has room, it is the same bytes on the wire in the same order,
now. It halved the gateway's CPU per frame (docs/performance.md).

What it relies on, in trio-websocket's ``WebSocketConnection`` (checked by :func:`check`):

* ``_wsproto`` — the wsproto connection that turns a message into frame bytes (and tracks the
  connection's state, so it must be the same object the library uses);
* ``_stream`` — the underlying trio stream; only a ``trio.SocketStream`` is written directly
  (anything else — memory streams, TLS — goes through the library);
* ``_stream_lock`` — the lock the library holds while it writes;
* ``_abort_web_socket()`` — the library's own clean-up for a connection the network dropped,
  used by :func:`abort`.

Everything else here is public (``WebSocketConnection.closed``, ``SocketStream.socket``,
``fileno()``). :func:`check` runs when the gateway is built: an installed version this module
was not written and tested against, or a connection without those attributes, raises
:class:`IncompatibleDependency` — the server refuses to start rather than quietly losing the fast
path or corrupting a stream. The conformance test (tests/test_compat.py) drives a slow reader
through direct, partial and queued writes. docs/decisions.md has the upstream proposal that
would make this public.
"""

from __future__ import annotations

import inspect
import os
from importlib.metadata import version

import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import TextMessage

from omni.compat import IncompatibleDependency

#: trio-websocket versions (major.minor) whose internals this module was written against.
SUPPORTED = ("0.12",)


def check() -> None:
    """Refuse (:class:`IncompatibleDependency`) an installed trio-websocket this adapter does
    not know, or one whose connections lack what it relies on."""
    installed = version("trio-websocket")
    if ".".join(installed.split(".")[:2]) not in SUPPORTED:
        raise IncompatibleDependency(
            f"trio-websocket {installed} is installed; omni/compat/trio_websocket.py was "
            f"written for {', '.join(SUPPORTED)}.x. Install a supported version, or check the "
            "adapter against the new one (tests/test_compat.py) and add it to SUPPORTED."
        )
    left, _ = trio.testing.memory_stream_pair()
    probe = WebSocketConnection(left, WSConnection(ConnectionType.SERVER))
    for name, kind in (
        ("_wsproto", WSConnection),
        ("_stream", trio.abc.Stream),
        ("_stream_lock", trio.StrictFIFOLock),
    ):
        if not isinstance(getattr(probe, name, None), kind):
            raise IncompatibleDependency(
                f"trio-websocket {installed}: a connection has no {name} of type "
                f"{kind.__name__}; omni/compat/trio_websocket.py must be updated"
            )
    if not inspect.iscoroutinefunction(getattr(probe, "_abort_web_socket", None)):
        raise IncompatibleDependency(
            f"trio-websocket {installed}: a connection has no async _abort_web_socket(); "
            "omni/compat/trio_websocket.py must be updated"
        )


class DirectWriter:
    """Writes one connection's frames straight into its socket when that can neither block nor
    reorder anything; :meth:`for_connection` gives one only for plain TCP connections."""

    __slots__ = ("_fd", "_lock", "_stream", "_ws", "_wsproto")

    def __init__(self, ws: WebSocketConnection, stream: trio.SocketStream) -> None:
        self._ws = ws
        self._wsproto: WSConnection = ws._wsproto
        self._lock: trio.StrictFIFOLock = ws._stream_lock
        self._stream = stream
        self._fd = stream.socket.fileno()

    @classmethod
    def for_connection(cls, ws: WebSocketConnection) -> DirectWriter | None:
        stream = ws._stream
        return cls(ws, stream) if isinstance(stream, trio.SocketStream) else None

    def write(self, frame: str) -> bytes | None:
        """Send ``frame`` now, without blocking: the bytes still to send (to be sent with
        :meth:`send_rest` before anything else), ``b""`` when all went out, or None when it
        cannot be written directly at all (another write is in progress, or the connection is
        closing)."""
        if self._ws.closed is not None or self._lock.locked():
            return None
        data: bytes = self._wsproto.send(TextMessage(data=frame))
        try:
            sent = os.write(self._fd, data)  # the socket is non-blocking (trio's)
        except BlockingIOError:
            sent = 0
        except OSError:
            return data  # send_rest meets the same error and ends the connection
        return data[sent:]

    async def send_rest(self, data: bytes) -> None:
        """Send what :meth:`write` left over, as trio-websocket sends: under its lock."""
        async with self._lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed(self._ws.closed) from None


async def abort(ws: WebSocketConnection) -> None:
    """Drop the connection without another byte: for a connection whose last frame may be half
    sent (its writer could not finish it in time), where a close frame — or any frame — would
    land inside that one and garble the stream. The client sees the TCP connection end (1006)
    and resumes. trio-websocket has no public way to abort; this closes its stream and lets it
    clean up as it does when the network drops a connection."""
    await trio.aclose_forcefully(ws._stream)
    await ws._abort_web_socket()
