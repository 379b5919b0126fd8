"""The websocket gateway on trio-websocket: ``/ws/visitor``, ``/ws/operator`` and
``/ws/supervisor`` (the supervisors' live view, under the operator's Origin rules).

Rules:

* The gateway translates; it decides nothing about conversations. A frame is decoded
  (:mod:`omni.domain.protocol`), turned into a hub call, and every refusal becomes an
  ``error {code, message}`` frame.
* It is the door, so it holds the limits on what a stranger may make the server do
  (:mod:`omni.limits`, ``[server.limits]``, docs/security.md): handshakes and connections per
  client address, the page's ``Origin``, bytes of a message still arriving, a deadline for the
  first ``start``/``resume``/``login``, pings with a pong deadline, and per connection a token
  bucket for messages and one for typing. A refused handshake gets an HTTP status (403, 429); a
  refused frame an ``error`` frame with ``retry_after``; persistent abuse closes the connection
  (1008). A check is a dictionary look-up and a little arithmetic: nothing on the hot path waits.
* Bad input never takes anything down: a malformed, oversized or out-of-place frame gets an error
  and the connection stays open; only a fault of the server itself closes the connection (with
  ``internal_error``), and never the server.
* Each connection has a reader and a writer draining a bounded buffer of live frames (and a
  keeper sending pings), owned by the connection's nursery. A client too slow to drain its buffer
  is disconnected and resumes; actors never wait on a socket. A replay of history is one item in
  that buffer, sent a page at a time as the client reads it: however long, it never fills the
  buffer. A frame for an idle TCP connection is written straight into its socket
  (:mod:`omni.compat.trio_websocket`, the only code that reads trio-websocket's internals).
* The same handler serves real TCP connections and in-memory streams (``serve_stream``), so the
  simulator and virtual-time tests run this exact code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
    wrap_server_stream,
)

from omni.accounts import SESSION_PREFIX, Accounts
from omni.actors.conversation import DetachVisitor
from omni.actors.hub import Hub
from omni.actors.operator import OperatorSession
from omni.actors.peer import History
from omni.actors.runtime import ActorCrashed, ActorStopped, AskTimeout
from omni.compat import trio_websocket as trio_websocket_compat
from omni.compat.trio_websocket import DirectWriter
from omni.domain import conversation as domain
from omni.domain import protocol as p
from omni.domain.protocol import Rejected, error_frame
from omni.gateway.relay import Relay, RelayedSocket
from omni.limits import Backoff, Counter, Keyed, TokenBucket, client_ip, networks
from omni.settings import LimitsSettings, ServerSettings

log = logging.getLogger(__name__)

#: A client's connection: its own websocket, or one another node holds (cluster mode).
Socket = WebSocketConnection | RelayedSocket

T = TypeVar("T")

#: Time a closing connection gets to send its last error frame and close handshake.
CLOSE_TIMEOUT = 2.0

#: Refusals that are the client's doing, counted towards closing a connection that persists.
_ABUSE = frozenset({"rate_limited", "too_many_attempts"})


class WebSocketPeer:
    """One client connection as the actors see it (:class:`omni.actors.peer.Peer`), and what
    the gateway knows of it: where it comes from, and its rate buckets."""

    __slots__ = (
        "_direct",
        "_queued",
        "_rx",
        "_scope",
        "_tx",
        "_ws",
        "client",
        "close_reason",
        "messages",
        "origin",
        "refusals",
        "typing",
    )

    def __init__(
        self,
        ws: Socket,
        buffer: int,
        scope: trio.CancelScope,
        client: str,
        limits: LimitsSettings,
    ) -> None:
        self._ws = ws
        self._scope = scope
        # str: a frame to encode and send; bytes: an encoded remainder to send first;
        # History: a replay to read from the store and send as the client reads.
        self._tx, self._rx = trio.open_memory_channel[str | bytes | History](buffer)
        self._direct = (
            DirectWriter.for_connection(ws) if isinstance(ws, WebSocketConnection) else None
        )
        #: Items handed to the writer task and not yet fully sent.
        self._queued = 0
        #: The client's address (an IP, see ``trusted_proxies``).
        self.client = client
        #: The Origin header of the handshake (a browser's page), if any; None for the
        #: server's own pages too (``Gateway.page_origins``).
        self.origin: str | None = None
        self.close_reason: tuple[str, str] | None = None
        now = trio.current_time()
        self.messages = TokenBucket(limits.messages_per_second, limits.message_burst, now)
        self.typing = TokenBucket(limits.typing_per_second, limits.typing_burst, now)
        #: Frames refused in a row as abuse (too fast, failed sign-ins).
        self.refusals = 0

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
        self._enqueue(item)

    def deliver_history(self, history: History) -> None:
        if self.close_reason is None:
            self._enqueue(history)

    def _enqueue(self, item: str | bytes | History) -> None:
        try:
            self._tx.send_nowait(item)
        except trio.WouldBlock:
            self.close("slow_consumer", "too many frames unread; resume to catch up")
            return
        self._queued += 1

    @property
    def closing(self) -> bool:
        return self.close_reason is not None

    def close(self, code: str, message: str) -> None:
        """End the connection with ``code``: its reader stops at once; its writer finishes the
        frame it is sending (a frame cut in half would garble the stream) and sends no new
        one; then the gateway sends the error frame and closes (:meth:`Gateway._run`)."""
        if self.close_reason is None:
            self.close_reason = (code, message)
            self._scope.cancel()
            self._tx.close()

    async def run_writer(self) -> None:
        """Send what is queued, in order, until the connection closes (then only the rest of a
        frame already begun)."""
        async for item in self._rx:
            if isinstance(item, bytes):
                assert self._direct is not None  # only a direct write leaves bytes behind
                await self._direct.send_rest(item)
            elif self.close_reason is not None:
                continue  # dropped: the client resumes
            elif isinstance(item, str):
                await self._ws.send_message(item)
            else:
                # Each page is read when the client has taken the one before it.
                async for page in item.pages():
                    for event in page:
                        if self.closing:
                            break
                        await self._ws.send_message(event.frame)
            self._queued -= 1


Handler = Callable[[Any, WebSocketPeer], Awaitable[None]]


class Gateway:
    def __init__(self, hub: Hub, settings: ServerSettings | None = None) -> None:
        # Refuse to run on a trio-websocket whose internals the direct writes do not know.
        trio_websocket_compat.check()
        self.hub = hub
        settings = settings or ServerSettings()
        self.settings = settings
        self.limits = limits = settings.limits
        self.limit = settings.max_frame_bytes
        self.outbound_buffer = settings.outbound_buffer
        #: Pages allowed on /ws/operator: the configured console origins, and the server's own
        #: HTTP origin (added by :func:`omni.server.open_server` once it is bound).
        self.console_origins: set[str] = set(settings.console_origins)
        #: The origins of the server's own pages (added by :func:`omni.server.open_server`):
        #: on /ws/visitor the WebChat, which runs there whatever site embeds it. A service's
        #: ``allowed_origins`` are not asked of it — they name the sites that may embed the
        #: chat, and its page's ``frame-ancestors`` holds it to them (docs/pages.md).
        self.page_origins: set[str] = set()
        self._trusted = networks(settings.trusted_proxies)
        #: Cluster mode: sockets served by another node are relayed to it (omni.gateway.relay);
        #: set by :func:`omni.server.open_server`.
        self.relay: Relay | None = None
        self._routes: dict[str, tuple[str, Handler]] = {
            "/ws/visitor": ("visitor", self._visitor),
            "/ws/operator": ("operator", self._operator),
            # The console's page hosts the live view: the same Origin rules as /ws/operator.
            "/ws/supervisor": ("supervisor", self._supervisor),
        }
        self._peers: set[WebSocketPeer] = set()
        self._all_closed = trio.Event()
        self._all_closed.set()
        # Per client address; each table is bounded (omni.limits.Keyed).
        self._connections: Counter[str] = Counter()
        self._handshakes: Keyed[str, TokenBucket] = Keyed(
            lambda: _bucket(limits.handshakes_per_second, limits.handshake_burst)
        )
        per_minute = limits.conversations_per_minute
        per_service = limits.conversations_per_service_per_minute
        self.conversations: Keyed[str, TokenBucket] = Keyed(
            lambda: _bucket(per_minute / 60, per_minute)
        )
        self.service_conversations: Keyed[tuple[str, int], TokenBucket] = Keyed(
            lambda: _bucket(per_service / 60, per_service)
        )
        #: Sign-in sessions, which ``login`` accepts beside console tokens.
        self.accounts = Accounts(hub, settings.session_ttl)
        self.logins: Keyed[str, Backoff] = Keyed(
            lambda: Backoff(
                limits.failures_before_wait, limits.failure_wait, limits.failure_wait_max
            )
        )

    async def shutdown(self) -> None:
        """Close every connection with ``server_shutdown`` and wait until they are gone."""
        if self.relay is not None:
            await self.relay.shutdown()
        for peer in list(self._peers):
            peer.close("server_shutdown", "the server is shutting down; resume shortly")
        await self._all_closed.wait()

    # -- transports ---------------------------------------------------------------------------

    @property
    def hard_limit(self) -> int:
        # Messages up to this size are read and answered (frame_too_large beyond max_frame_bytes);
        # a larger one — even still arriving in parts — makes the library close the connection
        # (1009) without buffering more of it.
        return self.limits.partial_frame_bytes

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

    async def serve_stream(self, stream: trio.abc.Stream, client: str = "memory") -> None:
        """Serve one connection over any trio stream (e.g. ``trio.testing.memory_stream_pair``);
        ``client`` is the address it counts as coming from."""
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(nursery, stream, max_message_size=self.hard_limit)
            await self.handle_request(request, client)
            nursery.cancel_scope.cancel()

    async def handle_request(self, request: WebSocketRequest, client: str | None = None) -> None:
        route = self._routes.get(request.path.partition("?")[0])
        if route is None:
            await request.reject(404, body=b"unknown websocket path")
            return
        kind, handler = route
        origin = forwarded = None
        for name, value in request.headers:
            name = name.lower()
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
        if client is None:
            remote = request.remote
            client = client_ip(getattr(remote, "address", str(remote)), forwarded, self._trusted)
        refusal = self._refuse_handshake(kind, client, origin)
        if refusal is not None:
            status, reason, retry_after = refusal
            self._count("handshake_" + reason.split(":", 1)[0])
            headers = [] if retry_after is None else [(b"Retry-After", b"%d" % retry_after)]
            await request.reject(status, extra_headers=headers, body=reason.encode())
            return
        ws = await request.accept()
        self._connections.add(client)
        self.hub.metrics.connections[kind] += 1
        if kind == "visitor" and origin in self.page_origins:
            origin = None  # Omni's own page: not an embedding site (see page_origins)
        try:
            first: str | bytes | None = None
            if self.relay is not None and kind != "supervisor":
                # Cluster mode: the first message says who serves this socket.
                with trio.move_on_after(self.limits.hello_timeout):
                    first = await ws.get_message()
                if first is None:
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.send_message(
                            error_frame("idle_timeout", "send `start`, `resume` or `login` first")
                        )
                        await ws.aclose(1008, "idle_timeout")
                    return
                node = await self.relay.destination(kind, first, self.limit)
                if node is not None:
                    try:
                        await self.relay.hold(
                            ws, kind, client, origin, first, node, self._pinger(ws)
                        )
                    except Exception:
                        log.exception("relaying a %s connection to node %s failed", kind, node)
                        await trio_websocket_compat.abort(ws)
                    return
            await self._run(ws, handler, client, origin, first)
        except ConnectionClosed:
            pass
        finally:
            self.hub.metrics.connections[kind] -= 1
            self._connections.remove(client)

    async def serve_relayed(
        self, ws: RelayedSocket, kind: str, client: str, origin: str | None
    ) -> None:
        """Serve a socket another node holds (cluster mode): the same handler as for one of
        this node's own."""
        handler = next(h for k, h in self._routes.values() if k == kind)
        await self._run(ws, handler, client, origin)

    def _pinger(self, ws: WebSocketConnection) -> Callable[[], Awaitable[None]] | None:
        """The keep-alive of a socket relayed elsewhere: returns when the client stops
        answering."""
        interval, timeout = self.limits.ping_interval, self.limits.pong_timeout
        if interval is None:
            return None

        async def ping() -> None:
            while True:
                await trio.sleep(interval)
                with trio.move_on_after(timeout):
                    await ws.ping()
                    continue
                return

        return ping

    def _refuse_handshake(
        self, kind: str, client: str, origin: str | None
    ) -> tuple[int, str, int | None] | None:
        """Why a handshake is refused (HTTP status, reason, Retry-After), or None."""
        wait = self._handshakes[client].take(trio.current_time())
        if wait is not None:
            return 429, "rate: too many handshakes from this address", math.ceil(wait)
        if self._connections[client] >= self.limits.connections_per_ip:
            return 429, "connections: too many open connections from this address", 60
        if origin is None:
            native = (
                self.settings.native_visitors
                if kind == "visitor"
                else self.settings.native_operators
            )
            return None if native else (403, "origin: a browser's Origin is required here", None)
        allowed = (
            origin in self.page_origins or self.hub.directory.embeddable_from(origin)
            if kind == "visitor"
            else origin in self.console_origins
        )
        return None if allowed else (403, f"origin: {origin} is not allowed here", None)

    async def _run(
        self,
        ws: Socket,
        handler: Handler,
        client: str,
        origin: str | None,
        first: str | bytes | None = None,
    ) -> None:
        """The connection's tasks: the reader (``handler``) under the scope that
        :meth:`WebSocketPeer.close` cancels; the writer and the pings beside it, so that a
        close never cuts a frame in half."""
        reading = trio.CancelScope()
        peer = WebSocketPeer(ws, self.outbound_buffer, reading, client, self.limits)
        peer.origin = origin
        self._peers.add(peer)
        self._all_closed = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                written = trio.Event()
                nursery.start_soon(self._write, peer, written)
                if self.limits.ping_interval is not None:
                    nursery.start_soon(_ignore_closed, self._keep_alive, ws, peer)
                with reading:
                    await _ignore_closed(handler, ws if first is None else _Replay(ws, first), peer)
                if peer.close_reason is not None:
                    await self._close(ws, peer, written)
                nursery.cancel_scope.cancel()
        finally:
            self._peers.discard(peer)
            if not self._peers:
                self._all_closed.set()

    async def _write(self, peer: WebSocketPeer, written: trio.Event) -> None:
        try:
            await peer.run_writer()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection writer failed")
            peer.close("internal_error", "a fault in the server closed this connection")
        finally:
            written.set()

    async def _close(self, ws: Socket, peer: WebSocketPeer, written: trio.Event) -> None:
        """Send the reason and close — once the writer is done with its last frame; if it
        cannot finish it in time (a client that reads nothing), drop the connection instead."""
        assert peer.close_reason is not None
        code, message = peer.close_reason
        if code in ("idle_timeout", "ping_timeout", "rate_limited", "slow_consumer"):
            self._count(code)
        with trio.move_on_after(CLOSE_TIMEOUT):
            await written.wait()
            try:
                await ws.send_message(error_frame(code, message))
                await ws.aclose(_CLOSE_CODES.get(code, 1008), code)
            except ConnectionClosed:
                pass
            return
        if isinstance(ws, RelayedSocket):
            await ws.abort()
        else:
            await trio_websocket_compat.abort(ws)

    async def _keep_alive(self, ws: Socket, peer: WebSocketPeer) -> None:
        """Ping every ``ping_interval``; a peer that does not answer within ``pong_timeout``
        is gone (a dead TCP peer sends no FIN): its connection closes, and what it held
        follows the usual rules (an operator's grace period, a visitor's absence)."""
        assert self.limits.ping_interval is not None
        while True:
            await trio.sleep(self.limits.ping_interval)
            with trio.move_on_after(self.limits.pong_timeout):
                await ws.ping()
                continue
            peer.close("ping_timeout", "no answer to the server's ping; reconnect and resume")
            return

    def _count(self, reason: str) -> None:
        refused = self.hub.metrics.refused
        refused[reason] = refused.get(reason, 0) + 1

    # -- frames -------------------------------------------------------------------------------

    async def _visitor(self, ws: Socket, peer: WebSocketPeer) -> None:
        connection = _VisitorConnection(self, peer)
        try:
            await self._read(ws, peer, connection, p.decode_visitor)
        finally:
            await connection.aclose()

    async def _operator(self, ws: Socket, peer: WebSocketPeer) -> None:
        connection = _OperatorConnection(self, peer)
        try:
            await self._read(ws, peer, connection, p.decode_operator)
        finally:
            await connection.aclose()

    async def _supervisor(self, ws: Socket, peer: WebSocketPeer) -> None:
        connection = _SupervisorConnection(self, peer)
        try:
            await self._read(ws, peer, connection, p.decode_supervisor)
        finally:
            connection.aclose()

    async def _read(
        self,
        ws: Socket,
        peer: WebSocketPeer,
        connection: _VisitorConnection | _OperatorConnection | _SupervisorConnection,
        decode: Callable[[str | bytes, int], Any],
    ) -> None:
        """Each frame, charged to its bucket, to its handler; refusals as error frames. Until
        the connection is bound (``start``, ``resume``, ``login``) it has ``hello_timeout``."""
        deadline = trio.current_time() + self.limits.hello_timeout
        limit = self.limit
        while True:
            if connection.bound and connection.expires is not None:
                # Signed in with a person's session: the connection ends with it.
                left = (connection.expires - self.hub.clock.now()).total_seconds()
                received: str | bytes | None = None
                if left > 0:
                    with trio.move_on_after(left):
                        received = await ws.get_message()
                if received is None:
                    peer.close("session_ended", "your session expired; sign in again")
                    return
                data = received
            elif connection.bound:
                data = await ws.get_message()
            else:
                with trio.move_on_at(deadline):
                    data = await ws.get_message()
                if not connection.bound and trio.current_time() >= deadline:
                    peer.close("idle_timeout", "send `start`, `resume` or `login` first")
                    return
            frame: Any = None
            try:
                try:
                    frame = decode(data, limit)
                finally:
                    # Every frame costs a token, a broken one too: typing and pings from their
                    # own bucket, everything else from the messages'.
                    bucket = peer.typing if type(frame) in _LIGHT_FRAMES else peer.messages
                    wait = bucket.take(trio.current_time())
                    if wait is not None:
                        raise Rejected("rate_limited", "too many frames; slow down", wait)
                await connection.handle(frame)
                peer.refusals = 0
            except Rejected as error:
                if error.code == "moved":
                    # Served by another node (cluster mode): the client reconnects, and is
                    # relayed there.
                    peer.close("moved", error.message)
                    return
                if error.code in _ABUSE:
                    peer.refusals += 1
                    if peer.refusals >= self.limits.refusals_before_close:
                        peer.close(error.code, "too many refused frames; this connection closes")
                        return
                peer.deliver(
                    error_frame(
                        error.code,
                        error.message,
                        conversation_id=getattr(frame, "conversation_id", None),
                        client_id=getattr(frame, "client_id", None),
                        retry_after=_seconds(error.retry_after),
                    )
                )
            except (AskTimeout, ActorCrashed, ActorStopped) as error:
                peer.deliver(error_frame("overloaded", f"try again ({type(error).__name__})"))


class _Replay:
    """A connection whose first message was read already (to route it): that one first."""

    def __init__(self, ws: Socket, first: str | bytes) -> None:
        self._ws = ws
        self._first: str | bytes | None = first

    async def get_message(self) -> str | bytes:
        first, self._first = self._first, None
        if first is not None:
            return first
        message: str | bytes = await self._ws.get_message()
        return message


#: Frames charged to the typing bucket (cheap, and sent often by well-behaved clients).
_LIGHT_FRAMES = frozenset({p.VisitorTyping, p.OperatorTyping, p.Ping})


class _VisitorConnection:
    """One visitor connection's frames, each to its handler; at most one conversation."""

    def __init__(self, gateway: Gateway, peer: WebSocketPeer) -> None:
        self.gateway = gateway
        self.hub = gateway.hub
        self.peer = peer
        self.expires: datetime | None = None  # visitors have no sign-in session
        self.conversation_id: str | None = None

    @property
    def bound(self) -> bool:
        return self.conversation_id is not None

    async def handle(self, frame: p.VisitorFrame) -> None:
        # A table of the class, not of the instance: bound methods held by the connection
        # itself would make every closed connection a reference cycle, kept until a full
        # collection (docs/capacity.md).
        await _VISITOR_HANDLERS[type(frame)](self, frame)

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
        gateway, client = self.gateway, self.peer.client
        now = trio.current_time()
        buckets = (
            gateway.conversations[client],
            gateway.service_conversations[client, frame.service_id],
        )
        # Both must allow it before either is spent: a refused start costs nothing.
        wait = max((w for b in buckets if (w := b.wait(now)) is not None), default=None)
        if wait is not None:
            raise Rejected("rate_limited", "too many new conversations; try again later", wait)
        for bucket in buckets:
            bucket.take(now)
        self.conversation_id = await self.hub.start_conversation(
            frame.service_id,
            frame.visitor,
            self.peer,
            self.peer.origin,
            frame.identity,
            frame.captcha,
            client=client,
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


#: Visitor frame type -> its handler.
_VISITOR_HANDLERS: dict[type, Callable[[_VisitorConnection, Any], Awaitable[None]]] = {
    p.Start: _VisitorConnection._start,
    p.Resume: _VisitorConnection._resume,
    p.Ping: _VisitorConnection._ping,
    p.TranscriptRequest: _VisitorConnection._transcript,
    p.VisitorMessage: _VisitorConnection._event,
    p.VisitorAttachment: _VisitorConnection._event,
    p.VisitorTyping: _VisitorConnection._event,
    p.VisitorEnd: _VisitorConnection._event,
    p.SurveyAnswers: _VisitorConnection._event,
    p.SurveySkip: _VisitorConnection._event,
    p.BotReply: _VisitorConnection._event,
}


def _visitor_event(frame: p.VisitorFrame) -> domain.Event:
    if isinstance(frame, p.VisitorMessage):
        return domain.VisitorMessage(frame.client_id, frame.text)
    if isinstance(frame, p.VisitorAttachment):
        return domain.VisitorMessage(frame.client_id, "", upload_id=frame.upload_id)
    if isinstance(frame, p.SurveyAnswers):
        return domain.SurveyAnswered(frame.answers)
    if isinstance(frame, p.BotReply):
        return domain.BotAnswer(frame.client_id, frame.option, frame.text)
    return _VISITOR_EVENTS[type(frame)]()


#: Visitor frames that carry nothing but their type, and the events they are.
_VISITOR_EVENTS: dict[type, Callable[[], domain.Event]] = {
    p.VisitorTyping: domain.VisitorTyping,
    p.VisitorEnd: domain.VisitorEnd,
    p.SurveySkip: domain.SurveySkipped,
}


class _OperatorConnection:
    """One operator connection's frames, each to its handler, once signed in."""

    def __init__(self, gateway: Gateway, peer: WebSocketPeer) -> None:
        self.gateway = gateway
        self.hub = gateway.hub
        self.peer = peer
        #: When the sign-in session this connection logged in with expires (None: a token).
        self.expires: datetime | None = None
        self.session: OperatorSession | None = None
        self._handlers: dict[type, Callable[[OperatorSession, Any], Awaitable[None]]] = {
            p.SetStatus: lambda s, f: s.set_status(f.status, f.reason),
            p.Accept: lambda s, f: s.accept(f.conversation_id),
            p.OperatorMessage: lambda s, f: s.message(f.conversation_id, f.client_id, f.text),
            p.OperatorAttachment: lambda s, f: s.attachment(
                f.conversation_id, f.client_id, f.upload_id
            ),
            p.OperatorTyping: lambda s, f: s.typing(f.conversation_id),
            p.Transfer: lambda s, f: s.transfer(f.conversation_id, f.group_id, f.operator_id),
            p.OperatorEnd: lambda s, f: s.end(f.conversation_id),
            p.Sync: lambda s, f: s.sync(f.conversation_id, f.last_seq),
            p.OperatorResume: lambda s, f: s.resume(f.conversation_id),
            p.OpenFolder: lambda s, f: s.folder(f.name, f.cursor),
            p.AskTargets: lambda s, f: s.targets(f.conversation_id),
        }

    @property
    def bound(self) -> bool:
        return self.session is not None

    async def handle(self, frame: p.OperatorFrame) -> None:
        if isinstance(frame, p.Ping):
            self.peer.deliver(_PONG)
        elif isinstance(frame, p.Login):
            if self.session is not None:
                raise Rejected("already_logged_in", "this connection is signed in")
            self.session = await self._login(frame.token)
        elif self.session is None:
            raise Rejected("not_logged_in", "send `login` first")
        else:
            await self._handlers[type(frame)](self.session, frame)

    async def _login(self, token: str) -> OperatorSession:
        """Sign in; an address that keeps failing waits longer before each next try."""

        async def attempt() -> OperatorSession:
            if token.startswith(SESSION_PREFIX):
                signed_in = await self.gateway.accounts.session(token)
                if signed_in is None:
                    raise Rejected("invalid_login", "this session has ended or expired")
                user, generation = signed_in.user, signed_in.session.generation
                self.expires = signed_in.session.expires_at
                return await self.hub.login_with_session(user.id, generation, self.peer)
            return await self.hub.login(token, self.peer)

        return await _sign_in(self.gateway, self.peer, attempt)

    async def aclose(self) -> None:
        if self.session is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await self.session.aclose()


class _SupervisorConnection:
    """One supervisor's live view: once signed in, every new board, and their actions."""

    def __init__(self, gateway: Gateway, peer: WebSocketPeer) -> None:
        self.gateway = gateway
        self.hub = gateway.hub
        self.peer = peer
        #: When the sign-in session this connection logged in with expires (None: a token).
        self.expires: datetime | None = None
        self.supervisor: p.SupervisorInfo | None = None

    @property
    def bound(self) -> bool:
        return self.supervisor is not None

    async def handle(self, frame: p.SupervisorFrame) -> None:
        if isinstance(frame, p.Ping):
            self.peer.deliver(_PONG)
        elif isinstance(frame, p.Login):
            if self.supervisor is not None:
                raise Rejected("already_logged_in", "this connection is signed in")
            token = frame.token
            generation: int | None = None

            async def attempt() -> p.SupervisorInfo:
                nonlocal generation
                if token.startswith(SESSION_PREFIX):
                    signed_in = await self.gateway.accounts.session(token)
                    if signed_in is None:
                        raise Rejected("invalid_login", "this session has ended or expired")
                    generation = signed_in.session.generation
                    self.expires = signed_in.session.expires_at
                    return self.hub.supervisor_session(signed_in.user)
                return await self.hub.supervisor_login(token)

            who = await _sign_in(self.gateway, self.peer, attempt)
            self.supervisor = who
            self.peer.deliver(p.encode(p.SupervisorWelcome(who)))
            self.hub.watch_board(who, self.peer, generation)
        elif self.supervisor is None:
            raise Rejected("not_logged_in", "send `login` first")
        elif isinstance(frame, p.Transfer):
            event = self.hub.supervisor_transfer(frame.group_id, frame.operator_id)
            await self.hub.supervise(self.supervisor, frame.conversation_id, event, self.peer)
        else:
            event = self.hub.supervisor_assign(frame.operator_id)
            await self.hub.supervise(self.supervisor, frame.conversation_id, event, self.peer)

    def aclose(self) -> None:
        if self.supervisor is not None:
            self.hub.unwatch_board(self.peer)


async def _sign_in(gateway: Gateway, peer: WebSocketPeer, attempt: Callable[[], Awaitable[T]]) -> T:
    """Sign in (``attempt``: the hub's check of the token, not made while the address must
    wait); an address that keeps failing waits longer before each next try, on every
    endpoint alike."""
    # Keyed by the address as text: the admin API counts its failed credentials in this same
    # table (one budget per address, whichever door).
    logins, client = gateway.logins, str(peer.client)
    backoff = logins[client]
    wait = backoff.wait(trio.current_time())
    if wait is not None:
        raise Rejected("too_many_attempts", "too many failed sign-ins; wait", wait)
    try:
        signed_in = await attempt()
    except Rejected as error:
        if error.code == "invalid_login":
            backoff.failed(trio.current_time())
        raise
    logins.forget(client)
    return signed_in


_PONG = p.encode(p.Pong())

#: Websocket close codes for the reasons the server closes a connection (1008: policy).
_CLOSE_CODES = {"internal_error": 1011, "server_shutdown": 1001, "moved": 1012}


def _bucket(rate: float, burst: float) -> TokenBucket:
    return TokenBucket(rate, burst, trio.current_time())


def _seconds(wait: float | None) -> float | None:
    """A wait as the client is told it: tenths of a second, rounded up."""
    return None if wait is None else math.ceil(wait * 10) / 10


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
