"""The websocket gateway on trio-websocket: ``/ws/visitor`` and ``/ws/operator``.

Rules:

* The gateway translates; it decides nothing. A frame is decoded (omni.gateway.protocol), turned
  into a hub call, and every refusal becomes an ``error {code, message}`` frame.
* Bad input never takes anything down: a malformed, oversized or out-of-place frame gets an error
  and the connection stays open; only a fault of the server itself closes the connection (with
  ``internal_error``), and never the server.
* Each connection has two tasks — a reader and a writer draining a bounded outbound buffer —
  owned by the connection's nursery. A client too slow to drain its buffer is disconnected and
  resumes; actors never wait on a socket. A frame for an idle TCP connection is written
  straight into its socket (:mod:`omni.compat.trio_websocket`, the only code that reads
  trio-websocket's internals).
* The same handler serves real TCP connections and in-memory streams (``serve_stream``), so the
  simulator and virtual-time tests run this exact code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_server_stream,
)

from omni.actors.conversation import DetachVisitor
from omni.actors.hub import Hub
from omni.actors.operator import OperatorSession
from omni.actors.runtime import ActorCrashed, ActorStopped, AskTimeout
from omni.compat import trio_websocket as trio_websocket_compat
from omni.compat.trio_websocket import DirectWriter
from omni.domain import conversation as domain
from omni.domain import protocol as p
from omni.domain.protocol import Rejected, error_frame
from omni.settings import ServerSettings

log = logging.getLogger(__name__)

#: Time a closing connection gets to send its last error frame and close handshake.
CLOSE_TIMEOUT = 2.0


class WebSocketPeer:
    """One client connection as the actors see it (:class:`omni.actors.peer.Peer`)."""

    __slots__ = ("_direct", "_queued", "_rx", "_scope", "_tx", "_ws", "close_reason", "origin")

    def __init__(self, ws: WebSocketConnection, buffer: int, scope: trio.CancelScope) -> None:
        self._ws = ws
        self._scope = scope
        # str: a frame to encode and send; bytes: an encoded remainder to send first.
        self._tx, self._rx = trio.open_memory_channel[str | bytes](buffer)
        self._direct = DirectWriter.for_connection(ws)
        #: Items handed to the writer task and not yet fully sent.
        self._queued = 0
        #: The Origin header of the handshake (a browser's page), if any.
        self.origin: str | None = None
        self.close_reason: tuple[str, str] | None = None

    def deliver(self, frame: str) -> None:
        if self.close_reason is not None:
            return
        item: str | bytes = frame
        if self._queued == 0 and self._direct is not None:
            rest = self._direct.write(frame)
            if rest == b"":
                return
            if rest is not None:
                item = rest
        try:
            self._tx.send_nowait(item)
        except trio.WouldBlock:
            self.close("slow_consumer", "too many frames unread; resume to catch up")
            return
        self._queued += 1

    def close(self, code: str, message: str) -> None:
        if self.close_reason is None:
            self.close_reason = (code, message)
            self._scope.cancel()

    async def run_writer(self) -> None:
        async for item in self._rx:
            if isinstance(item, bytes):
                assert self._direct is not None  # only a direct write leaves bytes behind
                await self._direct.send_rest(item)
            else:
                await self._ws.send_message(item)
            self._queued -= 1


Handler = Callable[[WebSocketConnection, WebSocketPeer], Awaitable[None]]


class Gateway:
    def __init__(self, hub: Hub, settings: ServerSettings | None = None) -> None:
        # Refuse to run on a trio-websocket whose internals the direct writes do not know.
        trio_websocket_compat.check()
        self.hub = hub
        settings = settings or ServerSettings()
        self.limit = settings.max_frame_bytes
        self.outbound_buffer = settings.outbound_buffer
        self._routes: dict[str, Handler] = {
            "/ws/visitor": self._visitor,
            "/ws/operator": self._operator,
        }
        self._peers: set[WebSocketPeer] = set()
        self._all_closed = trio.Event()
        self._all_closed.set()

    async def shutdown(self) -> None:
        """Close every connection with ``server_shutdown`` and wait until they are gone."""
        for peer in list(self._peers):
            peer.close("server_shutdown", "the server is shutting down; resume shortly")
        await self._all_closed.wait()

    # -- transports ---------------------------------------------------------------------------

    @property
    def hard_limit(self) -> int:
        # Frames up to 4x the limit are read and answered with frame_too_large; beyond that the
        # library closes the connection (1009) without buffering them.
        return 4 * self.limit

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve_websocket(
            self.handle_request,
            host,
            port,
            ssl_context=None,
            max_message_size=self.hard_limit,
            task_status=task_status,
        )

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection over any trio stream (e.g. ``trio.testing.memory_stream_pair``)."""
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(nursery, stream, max_message_size=self.hard_limit)
            await self.handle_request(request)
            nursery.cancel_scope.cancel()

    async def handle_request(self, request: WebSocketRequest) -> None:
        handler = self._routes.get(request.path.partition("?")[0])
        if handler is None:
            await request.reject(404, body=b"unknown websocket path")
            return
        origin = next(
            (v.decode("latin-1") for k, v in request.headers if k.lower() == b"origin"), None
        )
        ws = await request.accept()
        kind = "visitor" if handler == self._visitor else "operator"
        self.hub.metrics.connections[kind] += 1
        try:
            await self._run(ws, handler, origin)
        finally:
            self.hub.metrics.connections[kind] -= 1

    async def _run(self, ws: WebSocketConnection, handler: Handler, origin: str | None) -> None:
        with trio.CancelScope() as scope:
            peer = WebSocketPeer(ws, self.outbound_buffer, scope)
            peer.origin = origin
            self._peers.add(peer)
            self._all_closed = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_ignore_closed, peer.run_writer)
                    await _ignore_closed(handler, ws, peer)
                    nursery.cancel_scope.cancel()
            finally:
                self._peers.discard(peer)
                if not self._peers:
                    self._all_closed.set()
        if peer.close_reason is not None:
            code, message = peer.close_reason
            with trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await ws.send_message(error_frame(code, message))
                    await ws.aclose(_CLOSE_CODES.get(code, 1008), code)
                except ConnectionClosed:
                    pass

    # -- visitor ------------------------------------------------------------------------------

    async def _visitor(self, ws: WebSocketConnection, peer: WebSocketPeer) -> None:
        connection = _VisitorConnection(self.hub, peer)
        try:
            while True:
                data = await ws.get_message()
                frame: p.VisitorFrame | None = None
                try:
                    frame = p.decode_visitor(data, self.limit)
                    await connection.handle(frame)
                except Rejected as error:
                    client_id = getattr(frame, "client_id", None)
                    peer.deliver(error_frame(error.code, error.message, client_id=client_id))
                except (AskTimeout, ActorCrashed, ActorStopped) as error:
                    peer.deliver(error_frame("overloaded", f"try again ({type(error).__name__})"))
        finally:
            await connection.aclose()

    # -- operator -----------------------------------------------------------------------------

    async def _operator(self, ws: WebSocketConnection, peer: WebSocketPeer) -> None:
        connection = _OperatorConnection(self.hub, peer)
        try:
            while True:
                data = await ws.get_message()
                frame: p.OperatorFrame | None = None
                try:
                    frame = p.decode_operator(data, self.limit)
                    await connection.handle(frame)
                except Rejected as error:
                    peer.deliver(
                        error_frame(
                            error.code,
                            error.message,
                            conversation_id=getattr(frame, "conversation_id", None),
                            client_id=getattr(frame, "client_id", None),
                        )
                    )
                except (AskTimeout, ActorCrashed, ActorStopped) as error:
                    peer.deliver(error_frame("overloaded", f"try again ({type(error).__name__})"))
        finally:
            await connection.aclose()


class _VisitorConnection:
    """One visitor connection's frames, each to its handler; at most one conversation."""

    def __init__(self, hub: Hub, peer: WebSocketPeer) -> None:
        self.hub = hub
        self.peer = peer
        self.conversation_id: str | None = None
        self._handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            p.Start: self._start,
            p.Resume: self._resume,
            p.Ping: self._ping,
            p.TranscriptRequest: self._transcript,
            p.VisitorMessage: self._event,
            p.VisitorTyping: self._event,
            p.VisitorEnd: self._event,
            p.SurveyAnswers: self._event,
            p.SurveySkip: self._event,
        }

    async def handle(self, frame: p.VisitorFrame) -> None:
        await self._handlers[type(frame)](frame)

    async def aclose(self) -> None:
        if self.conversation_id is None:
            return
        entry = self.hub.running(self.conversation_id)
        if entry is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await entry.ref.send(DetachVisitor(self.peer))

    def _unbound(self) -> None:
        if self.conversation_id is not None:
            raise Rejected("already_started", "this connection already has a conversation")

    async def _start(self, frame: p.Start) -> None:
        self._unbound()
        self.conversation_id = await self.hub.start_conversation(
            frame.service_id,
            frame.visitor,
            self.peer,
            self.peer.origin,
            frame.identity,
            frame.captcha,
        )

    async def _resume(self, frame: p.Resume) -> None:
        self._unbound()
        self.conversation_id = await self.hub.resume_conversation(
            frame.token, frame.last_seq, self.peer
        )

    async def _ping(self, frame: p.Ping) -> None:
        self.peer.deliver(_PONG)

    def _bound(self) -> str:
        if self.conversation_id is None:
            raise Rejected("not_started", "send `start` or `resume` first")
        return self.conversation_id

    async def _transcript(self, frame: p.TranscriptRequest) -> None:
        # Not an event of the conversation (it may be closed): a request about it (F14).
        await self.hub.request_transcript(self._bound(), frame.email, self.peer)

    async def _event(self, frame: p.VisitorFrame) -> None:
        conversation_id = self._bound()
        await self.hub.send_event(
            conversation_id, _visitor_event(frame), self.peer, missing="conversation_closed"
        )


def _visitor_event(frame: p.VisitorFrame) -> domain.Event:
    if isinstance(frame, p.VisitorMessage):
        return domain.VisitorMessage(frame.client_id, frame.text)
    if isinstance(frame, p.SurveyAnswers):
        return domain.SurveyAnswered(frame.answers)
    return _VISITOR_EVENTS[type(frame)]()


#: Visitor frames that carry nothing but their type, and the events they are.
_VISITOR_EVENTS: dict[type, Callable[[], domain.Event]] = {
    p.VisitorTyping: domain.VisitorTyping,
    p.VisitorEnd: domain.VisitorEnd,
    p.SurveySkip: domain.SurveySkipped,
}


class _OperatorConnection:
    """One operator connection's frames, each to its handler, once signed in."""

    def __init__(self, hub: Hub, peer: WebSocketPeer) -> None:
        self.hub = hub
        self.peer = peer
        self.session: OperatorSession | None = None
        self._handlers: dict[type, Callable[[OperatorSession, Any], Awaitable[None]]] = {
            p.SetStatus: lambda s, f: s.set_status(f.status),
            p.Accept: lambda s, f: s.accept(f.conversation_id),
            p.OperatorMessage: lambda s, f: s.message(f.conversation_id, f.client_id, f.text),
            p.OperatorTyping: lambda s, f: s.typing(f.conversation_id),
            p.Transfer: lambda s, f: s.transfer(f.conversation_id, f.group_id, f.operator_id),
            p.OperatorEnd: lambda s, f: s.end(f.conversation_id),
            p.Sync: lambda s, f: s.sync(f.conversation_id, f.last_seq),
            p.OperatorResume: lambda s, f: s.resume(f.conversation_id),
            p.OpenFolder: lambda s, f: s.folder(f.name, f.cursor),
        }

    async def handle(self, frame: p.OperatorFrame) -> None:
        if isinstance(frame, p.Ping):
            self.peer.deliver(_PONG)
        elif isinstance(frame, p.Login):
            if self.session is not None:
                raise Rejected("already_logged_in", "this connection is signed in")
            self.session = await self.hub.login(frame.token, self.peer)
        elif self.session is None:
            raise Rejected("not_logged_in", "send `login` first")
        else:
            await self._handlers[type(frame)](self.session, frame)

    async def aclose(self) -> None:
        if self.session is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await self.session.aclose()


_PONG = p.encode(p.Pong())

#: Websocket close codes for the reasons the server closes a connection (1008: policy).
_CLOSE_CODES = {"internal_error": 1011, "server_shutdown": 1001}


async def _ignore_closed(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run a connection task; the peer going away ends it quietly, a fault closes only this
    connection."""
    try:
        await fn(*args)
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("connection task failed")
        peer = next((a for a in args if isinstance(a, WebSocketPeer)), None)
        if peer is not None:
            peer.close("internal_error", "a fault in the server closed this connection")
