"""Any node accepts any client (cluster mode, docs/scale-out.md "Sockets relayed to the serving
node"): a socket whose conversation or operator is served by another node is relayed to that
node through PostgreSQL.

Rules of this module:

* The node holding the client's socket (its *edge*) reads the first frame and asks
  :meth:`Relay.destination` which node serves it: the owner of the lease of the group the
  conversation runs under (its own, or its service's first: :meth:`Hub.home`), or of the
  operator's groups. Itself, or nobody alive: the socket is served here, as on a single node
  (a wrong guess is answered ``moved`` by the hub, and the client resumes).
* Another node: each client message goes as an ``up`` item, each ``down`` item goes back to the
  client, through :meth:`Store.relay_send` (items and a notice on the addressee's channel, in one
  transaction) and :meth:`Store.relay_take`. Bodies are in the table; notices carry the socket id.
* The serving node runs the gateway's own connection handler on a :class:`RelayedSocket`: the
  same rules, limits, errors and close codes as for a socket of its own. Every frame the
  conversation's actor sends — events, acks, offers, replays — takes that one path.
* Each side sends one batch of a socket at a time, the next once the last has committed, so a
  socket's items commit in ``n`` order and a reader that takes everything committed never sees
  a gap. A lost notice (the listener's ``Resync``) makes the node take whatever waits for it.
* When the other side's node dies (its heartbeat is older than ``node_expiry_seconds``), a
  side closes its end: the client hears ``moved`` (1012) and resumes elsewhere; the serving
  handler sees its socket closed (a visitor detached, an operator's grace period).
* Items left behind by a dead node are swept after :data:`SWEEP_AFTER` seconds.
* The same path carries *calls*: a request that must be carried out by the serving node — a
  messaging channel's message, which the platform posts to any node — goes as a socket of
  kind ``call:<name>`` with one frame, and its answer comes back as one frame. The caller
  answers the platform only after the serving node stored the message (or refused it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from omni.domain import board as board_rules
from omni.domain import protocol as p
from omni.domain.channels import Inbound, Media
from omni.domain.conversation import (
    TERMINAL_STATUSES,
    Rejected,
    SupervisorAssign,
    SupervisorTransferToGroup,
)
from omni.domain.model import hash_token
from omni.store import RelayItem, Resync, Store, relay_channel

if TYPE_CHECKING:
    from omni.actors.hub import Hub
    from omni.cluster import Node
    from omni.domain.model import Channel

log = logging.getLogger(__name__)

#: Items older than this (seconds) are a dead node's leftovers.
SWEEP_AFTER = 300.0
#: How long a side waits for its last items to commit when its socket ends.
FLUSH_TIMEOUT = 5.0
MOVED = "this connection is served by another node now; reconnect and resume"
#: How long a call waits for its answer (a channel's message may fetch a file: 120 s at most).
CALL_TIMEOUT = 150.0
#: How long a node waits for another's part of the supervisors' board.
BOARD_TIMEOUT = 2.0


class CallFailed(Exception):
    """A call got no answer (the serving node died, the database is away, time ran out)."""


class _Wake:
    """A coalescing signal: any number of ``set`` between two ``wait`` wake it once."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class _Sender:
    """One socket's items in one direction: numbered, sent one batch at a time."""

    def __init__(
        self,
        store: Store,
        node: str,
        socket: str,
        direction: str,
        counts: dict[str, int] | None = None,
    ) -> None:
        self._store, self._node, self._socket, self._direction = store, node, socket, direction
        self._counts = counts if counts is not None else {}
        self._pending: list[tuple[str, str]] = []
        self._n = 0
        self._wake = _Wake()
        self._idle = trio.Event()
        self._idle.set()
        self.failed: BaseException | None = None

    def put(self, kind: str, body: str) -> None:
        self._pending.append((kind, body))
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            while self._pending:
                batch, self._pending = self._pending, []
                items = []
                for kind, body in batch:
                    self._n += 1
                    items.append(RelayItem(self._socket, self._direction, self._n, kind, body))
                try:
                    await self._store.relay_send(self._node, items)
                    self._counts[self._direction] = self._counts.get(self._direction, 0) + len(
                        items
                    )
                except Exception as exc:
                    # The database is away: the socket cannot go on (the client resumes).
                    log.warning("relay %s: could not send (%s)", self._socket, exc)
                    self.failed = exc
                    self._idle.set()
                    return
            self._idle.set()

    async def flushed(self) -> None:
        """Until what was put has committed (or the sender failed)."""
        await self._idle.wait()


class RelayedSocket:
    """The serving node's side of a relayed socket: what the gateway's handler reads and writes
    instead of a :class:`~trio_websocket.WebSocketConnection`."""

    def __init__(
        self, store: Store, socket: str, edge: str, counts: dict[str, int] | None = None
    ) -> None:
        self.socket, self.edge = socket, edge
        self._incoming: deque[str | bytes] = deque()
        self._arrived = _Wake()
        self._sender = _Sender(store, edge, socket, "down", counts)
        #: Why it ended (the edge's close, or ours); None while open.
        self.closed: CloseReason | None = None
        self._closing_sent = False

    def feed(self, items: list[RelayItem]) -> None:
        for item in items:
            if item.kind == "close":
                reason = json.loads(item.body)
                self.ended(reason["code"], reason["reason"])
            else:
                self._incoming.append(_message_of(item))
        self._arrived.set()

    def ended(self, code: int, reason: str | None) -> None:
        """The client's side ended (it closed, or its node died)."""
        if self.closed is None:
            self.closed = CloseReason(code, reason)
        self._closing_sent = True  # nobody to tell
        self._arrived.set()

    async def get_message(self) -> str | bytes:
        while True:
            if self._incoming:
                return self._incoming.popleft()
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            await self._arrived.wait()

    async def send_message(self, message: str | bytes) -> None:
        if self.closed is not None or self._sender.failed is not None:
            raise ConnectionClosed(self.closed or CloseReason(1006, "relay failed"))
        _put_message(self._sender, message)

    async def ping(self, payload: bytes | None = None) -> None:
        """The edge pings the client; between nodes the heartbeats tell who is gone."""

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        if not self._closing_sent:
            self._closing_sent = True
            self._sender.put("close", json.dumps({"code": code, "reason": reason}))
        if self.closed is None:
            self.closed = CloseReason(code, reason)
        self._arrived.set()
        with trio.move_on_after(FLUSH_TIMEOUT):
            await self._sender.flushed()

    async def abort(self) -> None:
        await self.aclose(1011, "internal_error")


#: Runs the gateway's handler of ``kind`` on a relayed socket (``Gateway.serve_relayed``).
Serve = Callable[[RelayedSocket, str, str, str | None], Awaitable[None]]


class _Held:
    """A socket held here and served by ``node``."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.wake = _Wake()
        self.scope = trio.CancelScope()
        #: Why the relay ends it (its node died, this one shuts down): (code, message).
        self.ending: tuple[str, str] | None = None


@dataclasses.dataclass
class RelayStatistics:
    """What the relay did (for the metrics)."""

    #: Items sent, by direction (``up``: for another node's clients; ``down``: to them).
    items: dict[str, int] = dataclasses.field(default_factory=lambda: {"up": 0, "down": 0})
    #: Calls made, by name and outcome (``answered``, ``failed``).
    calls: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)


class Relay:
    """This node's end of every relayed socket, both ways (one per node, in the server's
    nursery: :meth:`run`)."""

    def __init__(self, hub: Hub, node: Node, serve: Serve) -> None:
        self.hub = hub
        self.store: Store = hub.store
        self.node = node
        self.me = node.name
        self._serve = serve
        self.stats = RelayStatistics()
        self._held: dict[str, _Held] = {}
        #: Set when the last held socket ends (while shutting down).
        self._emptied: trio.Event | None = None
        self._served: dict[str, tuple[str, _Wake, RelayedSocket | None]] = {}
        self._nursery: trio.Nursery | None = None
        #: The live nodes as of the last heartbeat: a dead node's lease may not have run out
        #: yet, but nothing is relayed to it.
        self._live: set[str] = {self.me}
        #: Session tokens → the operator they sign in (set by the gateway: its accounts).
        self.session_operator: Callable[[str], Awaitable[int | None]] | None = None
        #: What this node answers calls of each name with.
        self._calls: dict[str, Callable[[str], Awaitable[str]]] = {
            "channel": self._channel_call,
            "board": self._board_call,
            "supervise": self._supervise_call,
            "resume": self._resume_call,
        }

    def statistics(self) -> tuple[int, int, RelayStatistics]:
        """Sockets held here for other nodes, sockets served here for other nodes, counts."""
        served = sum(1 for _, _, relayed in self._served.values() if relayed is not None)
        return len(self._held), served, self.stats

    # -- where a socket is served -----------------------------------------------------------

    async def destination(self, kind: str, data: str | bytes, limit: int) -> str | None:
        """The node that serves a socket whose first message is ``data``; None: this one."""
        try:
            if kind == "visitor":
                home = await self._visitor_home(p.decode_visitor(data, limit))
            elif kind == "operator":
                home = await self._operator_home(p.decode_operator(data, limit))
            else:
                return None
        except Rejected:
            return None  # served here: the handler answers the error
        if home is None or self.hub.owns_group(home):
            return None
        owner = await self._owner(home)
        return None if owner in (None, self.me) else owner

    async def _visitor_home(self, frame: Any) -> int | None:
        hub = self.hub
        if isinstance(frame, p.Start):
            return hub.start_home(frame.service_id)
        if isinstance(frame, p.Resume):
            conversation_id = await hub.store.find_by_token_hash(hash_token(frame.token))
            # A finished conversation is replayed from the store anywhere.
            return None if conversation_id is None else await self._home_of(conversation_id)
        return None

    async def _home_of(self, conversation_id: str) -> int | None:
        """The group an open conversation runs under (None: unknown, or finished)."""
        conv = await self.hub.store.load_conversation(conversation_id)
        if conv is None or conv.status in TERMINAL_STATUSES:
            return None
        return self.hub.home(conv.group_id, conv.service_id)

    async def _operator_home(self, frame: Any) -> int | None:
        if not isinstance(frame, p.Login):
            return None
        directory = self.hub.directory
        operator = directory.operator_by_token(frame.token)
        operator_id = None if operator is None else operator.id
        if operator_id is None and self.session_operator is not None:
            operator_id = await self.session_operator(frame.token)
        return None if operator_id is None else self.hub.operator_home(operator_id)

    async def _owner(self, group_id: int) -> str | None:
        """The live node holding ``group_id``'s lease, if any."""
        resource = f"group:{group_id}"
        for lease in await self.store.leases(resource):
            if lease.resource != resource or lease.owner is None or lease.remaining <= 0:
                continue
            if lease.owner not in self._live:
                # A node that joined since the last heartbeat's look (it owns already).
                self._live = {n.name for n in await self.node.live_nodes()} | {self.me}
            return lease.owner if lease.owner in self._live else None
        return None

    # -- the node's loop ------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with (
            self.store.listen([relay_channel(self.me)], buffer=65_536) as inbox,
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            self._live = {n.name for n in await self.node.live_nodes()} | {self.me}
            nursery.start_soon(self._watch)
            # Whatever waited for this node before it listened (a restart under its name).
            for socket in await self.store.relay_waiting(self.me):
                self._arrived(socket)
            task_status.started()
            async for notice in inbox:
                if isinstance(notice, Resync):
                    for socket in await self.store.relay_waiting(self.me):
                        self._arrived(socket)
                    for held in self._held.values():
                        held.wake.set()
                    continue
                self._arrived(notice.payload)

    def _arrived(self, socket: str) -> None:
        held = self._held.get(socket)
        if held is not None:
            held.wake.set()
            return
        served = self._served.get(socket)
        if served is not None:
            served[1].set()
            return
        wake = _Wake()
        self._served[socket] = ("", wake, None)
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_socket, socket, wake)

    async def _watch(self) -> None:
        """Close the sockets whose other side's node died; sweep dead nodes' leftovers."""
        settings = self.node.settings
        swept = trio.current_time()
        while True:
            await trio.sleep(settings.heartbeat_seconds)
            try:
                live = self._live = {n.name for n in await self.node.live_nodes()} | {self.me}
                if trio.current_time() - swept > SWEEP_AFTER / 4:
                    swept = trio.current_time()
                    await self.store.relay_sweep(SWEEP_AFTER)
            except Exception as exc:
                log.warning("relay: could not read the live nodes (%s)", exc)
                continue
            for held in list(self._held.values()):
                if held.node not in live:
                    self._end_held(held, "moved", MOVED)
            for edge, _, relayed in list(self._served.values()):
                if relayed is not None and edge not in live:
                    relayed.ended(1006, "the node holding this socket is gone")

    def _end_held(self, held: _Held, code: str, message: str) -> None:
        if held.ending is None:
            held.ending = (code, message)
            held.scope.cancel()

    async def shutdown(self) -> None:
        """Close every socket held here for another node (the server stops), and wait until
        their clients were told (bounded)."""
        for held in list(self._held.values()):
            self._end_held(held, "server_shutdown", "the server is shutting down; resume shortly")
        if self._held:
            self._emptied = trio.Event()
            with trio.move_on_after(FLUSH_TIMEOUT * 2):
                await self._emptied.wait()

    def _release(self, socket: str) -> None:
        self._held.pop(socket, None)
        if not self._held and self._emptied is not None:
            self._emptied.set()

    # -- serving a socket held elsewhere ------------------------------------------------------

    async def _serve_socket(self, socket: str, wake: _Wake) -> None:
        try:
            items = await self.store.relay_take(self.me, socket, "up")
            if not items or items[0].kind != "open":
                return  # a late notice of a socket served and gone, or leftovers
            opened = json.loads(items[0].body)
            if opened["kind"].startswith("call:"):
                await self._answer(socket, opened, items[1:])
                return
            relayed = RelayedSocket(self.store, socket, opened["edge"], self.stats.items)
            self._served[socket] = (opened["edge"], wake, relayed)
            relayed.feed(items[1:])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayed._sender.run)
                nursery.start_soon(self._take_up, socket, wake, relayed)
                await self._serve(relayed, opened["kind"], opened["client"], opened["origin"])
                if relayed.closed is None:
                    await relayed.aclose(1000, None)
                with trio.move_on_after(FLUSH_TIMEOUT):
                    await relayed._sender.flushed()
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("relay %s: serving failed", socket)
        finally:
            self._served.pop(socket, None)

    async def _answer(self, socket: str, opened: dict[str, Any], items: list[RelayItem]) -> None:
        """Carry out a call (its one frame came with the open) and send the answer back."""
        handler = self._calls.get(opened["kind"].removeprefix("call:"))
        frames = [item.body for item in items if item.kind == "frame"]
        if handler is None or len(frames) != 1:
            answer = json.dumps({"error": "internal_error", "message": "no such call"})
        else:
            try:
                answer = await handler(frames[0])
            except Exception:
                log.exception("relay %s: the call %s failed", socket, opened["kind"])
                answer = json.dumps({"error": "internal_error"})
        await self.store.relay_send(opened["edge"], [RelayItem(socket, "down", 1, "frame", answer)])

    async def call(self, node: str, name: str, body: str, seconds: float = CALL_TIMEOUT) -> str:
        """Have ``node`` carry out call ``name`` with ``body``; its answer
        (:class:`CallFailed` if none comes: its node died, time ran out)."""
        socket = uuid.uuid4().hex
        held = self._held[socket] = _Held(node)
        opened = {"kind": f"call:{name}", "client": "", "origin": None, "edge": self.me}
        try:
            await self.store.relay_send(
                node,
                [
                    RelayItem(socket, "up", 1, "open", json.dumps(opened)),
                    RelayItem(socket, "up", 2, "frame", body),
                ],
            )
            with trio.move_on_after(seconds), held.scope:
                while True:
                    await held.wake.wait()
                    for item in await self.store.relay_take(self.me, socket, "down"):
                        if item.kind == "frame":
                            self._count_call(name, "answered")
                            return item.body
            raise CallFailed(held.ending[1] if held.ending else f"no answer from node {node}")
        except CallFailed:
            self._count_call(name, "failed")
            raise
        except Exception as exc:
            self._count_call(name, "failed")
            raise CallFailed(str(exc)) from exc
        finally:
            self._release(socket)

    async def _call_serving(
        self,
        home: int | None,
        name: str,
        request: dict[str, Any],
        *,
        nobody: Rejected,
        failed: str,
        seconds: float = BOARD_TIMEOUT * 5,
    ) -> dict[str, Any]:
        """Call ``name`` on the node serving group ``home``; its answer. ``nobody`` when no
        other live node serves it; :class:`Rejected` with code ``failed`` when that node does
        not answer, and with the answer's own error when it refuses."""
        node = None if home is None else await self._owner(home)
        if node is None or node == self.me:
            raise nobody
        try:
            answer: dict[str, Any] = json.loads(
                await self.call(node, name, json.dumps(request), seconds=seconds)
            )
        except CallFailed as exc:
            raise Rejected(failed, f"node {node} did not answer; try again ({exc})") from None
        if "error" in answer:
            code = answer["error"]
            # A code this node does not know (another version) is not passed on as such.
            raise Rejected(
                code if code in p.ERROR_CODES else "internal_error",
                answer.get("message", f"node {node} refused it"),
            )
        return answer

    def _count_call(self, name: str, outcome: str) -> None:
        calls = self.stats.calls
        calls[name, outcome] = calls.get((name, outcome), 0) + 1

    # -- messaging channels' messages, posted to any node ------------------------------------------

    async def forward_channel(self, channel: Channel, message: Inbound) -> str | None:
        """Hand a channel's message to the node serving its conversation (the hub's
        ``forward_channel``); the conversation's id, as the hub's ``channel_message`` says."""
        conversation_id = await self.hub.store.channel_conversation(channel.id, message.user)
        home = (
            self.hub.start_home(channel.service_id)
            if conversation_id is None
            else await self._home_of(conversation_id)
        )
        answer = await self._call_serving(
            home,
            "channel",
            {"channel": channel.id, "message": dataclasses.asdict(message)},
            nobody=Rejected("moved", "no node serves this conversation now; try again"),
            failed="moved",
            seconds=CALL_TIMEOUT,
        )
        found: str | None = answer["conversation_id"]
        return found

    async def _channel_call(self, body: str) -> str:
        request = json.loads(body)
        channel = self.hub.directory.channels.get(request["channel"])
        if channel is None:
            # This node's configuration lags the caller's: the platform tries again.
            return json.dumps({"error": "overloaded", "message": "unknown channel here"})
        fields = request["message"]
        media = fields.pop("media")
        message = Inbound(**fields, media=None if media is None else Media(**media))
        try:
            found = await self.hub.channel_message(channel, message, forwarded=True)
        except Rejected as exc:
            return json.dumps({"error": exc.code})
        return json.dumps({"conversation_id": found})

    # -- the supervisors' live view: the whole cluster's ------------------------------------------

    async def gather_board(self, local: p.Board) -> p.Board:
        """``local`` made the cluster's board: each other live node's groups and operators."""
        parts: list[tuple[list[int], p.Board]] = []

        async def ask(node: str) -> None:
            try:
                answer = json.loads(await self.call(node, "board", "", seconds=BOARD_TIMEOUT))
            except (CallFailed, ValueError) as exc:
                log.info("relay: no board from node %s (%s)", node, exc)
                return
            parts.append((answer["owned"], msgspec.json.decode(answer["board"], type=p.Board)))

        async with trio.open_nursery() as nursery:
            for node in sorted(self._live - {self.me}):
                nursery.start_soon(ask, node)
        return board_rules.merge(local, parts)

    async def _board_call(self, body: str) -> str:
        hub = self.hub
        board = p.encode(hub.make_board())
        return json.dumps({"owned": sorted(hub.fences), "board": board})

    async def forward_supervise(
        self,
        who: p.SupervisorInfo,
        conversation_id: str,
        event: SupervisorAssign | SupervisorTransferToGroup,
        origin: Any,
    ) -> None:
        """A supervisor's action on a conversation another node serves: carried out there
        (the hub's ``forward_supervise``); its answer frames go to ``origin``."""
        request = {
            "who": msgspec.to_builtins(who),
            "conversation_id": conversation_id,
            "kind": "assign" if isinstance(event, SupervisorAssign) else "transfer",
            "event": dataclasses.asdict(event),
        }
        try:
            answer = await self._call_serving(
                await self._home_of(conversation_id),
                "supervise",
                request,
                nobody=Rejected("unknown_conversation", f"no open conversation {conversation_id}"),
                failed="overloaded",
            )
        except Rejected as exc:
            if exc.code != "moved":
                raise
            # Served elsewhere again meanwhile: the supervisor tries again (their connection
            # stays: it is not the one that moved).
            raise Rejected("overloaded", exc.message) from None
        for frame in answer["frames"]:
            origin.deliver(frame)

    async def _supervise_call(self, body: str) -> str:
        request = json.loads(body)
        who = msgspec.convert(request["who"], p.SupervisorInfo)
        event: SupervisorAssign | SupervisorTransferToGroup = (
            SupervisorAssign(**request["event"])
            if request["kind"] == "assign"
            else SupervisorTransferToGroup(**request["event"])
        )
        origin = _Collect()
        try:
            await self.hub.supervise(who, request["conversation_id"], event, origin, forwarded=True)
        except Rejected as exc:
            return json.dumps({"error": exc.code, "message": exc.message})
        return json.dumps({"frames": origin.frames})

    # -- an operator resumes an out-of-hours conversation through the API ---------------------

    async def forward_resume(self, conversation_id: str, operator_id: int) -> None:
        """The API's resume for an operator whose console another node serves (the hub's
        ``forward_resume``): carried out there. :class:`Rejected` as that node refuses;
        ``operator_unavailable`` when no node serves the operator's console."""
        await self._call_serving(
            self.hub.operator_home(operator_id),
            "resume",
            {"conversation_id": conversation_id, "operator_id": operator_id},
            nobody=Rejected("operator_unavailable", f"operator {operator_id} is not signed in"),
            failed="overloaded",
        )

    async def _resume_call(self, body: str) -> str:
        request = json.loads(body)
        operator_id = request["operator_id"]
        session = self.hub.sessions.get(operator_id)
        if session is None:
            message = f"operator {operator_id} is not signed in to the console"
            return json.dumps({"error": "operator_unavailable", "message": message})
        if self.hub.roster.get(operator_id).free <= 0:
            message = f"operator {operator_id} has no free capacity"
            return json.dumps({"error": "operator_unavailable", "message": message})
        try:
            await session.resume(request["conversation_id"], scoped=False)
        except Rejected as exc:
            return json.dumps({"error": exc.code, "message": exc.message})
        return json.dumps({})

    async def _take_up(self, socket: str, wake: _Wake, relayed: RelayedSocket) -> None:
        while relayed.closed is None or not relayed._closing_sent:
            await wake.wait()
            try:
                items = await self.store.relay_take(self.me, socket, "up")
            except Exception as exc:
                log.warning("relay %s: could not take (%s)", socket, exc)
                relayed.ended(1011, "relay failed")
                return
            relayed.feed(items)

    # -- holding a socket served elsewhere -------------------------------------------------------

    async def hold(
        self,
        ws: WebSocketConnection,
        kind: str,
        client: str,
        origin: str | None,
        first: str | bytes,
        node: str,
        keep_alive: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Relay the client on ``ws`` (its first message ``first``) to ``node`` until either
        side ends."""
        socket = uuid.uuid4().hex
        held = self._held[socket] = _Held(node)
        up = _Sender(self.store, node, socket, "up", self.stats.items)
        opened = {"kind": kind, "client": str(client), "origin": origin, "edge": self.me}
        up.put("open", json.dumps(opened))
        _put_message(up, first)
        closing: tuple[int, str | None] | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(up.run)
                if keep_alive is not None:
                    nursery.start_soon(_until_gone, keep_alive, held)
                with held.scope:
                    async with trio.open_nursery() as pumps:
                        pumps.start_soon(self._take_down, ws, socket, held, pumps.cancel_scope)
                        try:
                            while True:
                                _put_message(up, await ws.get_message())
                                if up.failed is not None:
                                    held.ending = ("moved", MOVED)
                                    break
                        except ConnectionClosed as exc:
                            reason = exc.reason
                            closing = (reason.code, reason.reason) if reason else (1006, None)
                        pumps.cancel_scope.cancel()
                if held.ending is not None:
                    code, message = held.ending
                    closing = (1012 if code == "moved" else 1001, code)
                    with trio.move_on_after(FLUSH_TIMEOUT):
                        try:
                            await ws.send_message(p.error_frame(code, message))
                            await ws.aclose(closing[0], code)
                        except ConnectionClosed:
                            pass
                if closing is not None:
                    up.put("close", json.dumps({"code": closing[0], "reason": closing[1]}))
                    with trio.move_on_after(FLUSH_TIMEOUT):
                        await up.flushed()
                nursery.cancel_scope.cancel()
        finally:
            self._release(socket)

    async def _take_down(
        self, ws: WebSocketConnection, socket: str, held: _Held, done: trio.CancelScope
    ) -> None:
        while True:
            await held.wake.wait()
            try:
                items = await self.store.relay_take(self.me, socket, "down")
            except Exception as exc:
                log.warning("relay %s: could not take (%s)", socket, exc)
                self._end_held(held, "moved", MOVED)
                return
            for item in items:
                if item.kind == "close":
                    reason = json.loads(item.body)
                    try:
                        await ws.aclose(reason["code"], reason["reason"])
                    except ConnectionClosed:
                        pass
                    done.cancel()
                    return
                try:
                    await ws.send_message(_message_of(item))
                except ConnectionClosed:
                    # The client left as its frames came: the reader sees it too, and tells
                    # the serving node (the relayed side closes).
                    return


class _Collect:
    """A supervisor's connection on another node, as the conversation sees it here: what it
    is sent is returned with the call's answer."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def deliver(self, frame: str) -> None:
        self.frames.append(frame)

    def deliver_history(self, history: Any) -> None:
        """A supervisor is sent no history."""

    def close(self, code: str, message: str) -> None:
        self.frames.append(p.error_frame(code, message))


def _put_message(sender: _Sender, message: str | bytes) -> None:
    """A websocket message as an item: text as it is, binary as its hex."""
    if isinstance(message, str):
        sender.put("frame", message)
    else:
        sender.put("binary", message.hex())


def _message_of(item: RelayItem) -> str | bytes:
    """The websocket message of a ``frame`` or ``binary`` item."""
    return item.body if item.kind == "frame" else bytes.fromhex(item.body)


async def _until_gone(keep_alive: Callable[[], Awaitable[None]], held: _Held) -> None:
    """The client's pings (the gateway's keep-alive): no answer ends the socket."""
    try:
        await keep_alive()
    except ConnectionClosed:
        return
    if held.ending is None:
        held.ending = ("ping_timeout", "no answer to the server's ping; reconnect and resume")
        held.scope.cancel()
