"""Properties of cluster mode (issue 18, docs/scale-out.md): hypothesis drives joins, leaves,
kills and stalls of nodes between the steps of visitors and operators chatting through them, and
the invariants of DESIGN §3 are checked across the cluster — during the run and at its end.

Rules of this module:

* One example is one generated :class:`Plan` — nodes started, conversations started, operators
  signed in, then a list of steps — run inside one ``trio.run`` on a database of its own
  (:func:`tests.conftest.fresh_database`). Steps name nodes and people by index: an index is
  taken modulo what exists when the step runs, and a step that cannot run (a fourth node,
  stopping the last one) is skipped, so that every list is a valid run and shrinking keeps it
  one. The examples are derandomized (the same plans every run); ``OMNI_CLUSTER_EXAMPLES=n``
  runs more, ``OMNI_CLUSTER_RANDOM=1`` new ones, ``OMNI_CLUSTER_VERBOSE=1`` prints each plan
  and what its clients met.
* Nodes are in-process servers (``open_server`` on a store of their own), as in
  tests/test_cluster_ownership.py: at most three live, never fewer than one. A node *stops* by
  leaving its ``open_server`` block; it is *killed* by cancelling it after its store's
  ``leave_node`` was made to do nothing, so its leases must run out; it is *stalled* by making
  its store's calls wait (a pause, or PostgreSQL out of reach without a FIN, then back): it
  stops owning at its local deadline, others may take its groups, its late writes are refused.
* Clients are what a page would be: they connect to a live node, and on ``moved`` (an error
  frame, then close 1012), a closed socket or a dead node they reconnect to a live node — a
  bounded number of times, with short sleeps. A visitor resends the messages never answered
  with the same ``client_id`` when it resumes. Messages may be left in flight while the next
  step runs (a kill, a stall). Every frame a socket receives is kept (a reader task per socket)
  and checked at the end.
* A monitor task samples the live nodes every few milliseconds (and after every step): no group
  owned by two nodes, no conversation with an actor on two nodes, no operator over capacity, no
  conversation held by operators of two nodes (two of one node hold it while a transfer between
  them is written: the target's slot is taken first). Each store's ``write`` and
  ``acquire_lease`` are watched: every stored event was written under a fence whose epoch its
  writer had acquired, and a conversation's epochs never go back along its ``seq``.
* At the end (the clients gone, the groups placed on the remaining nodes): each conversation's
  stored events run 1..n; each ``client_id`` is stored once, an acknowledged one at the seq of
  its acks; nothing from a participant is stored after ``ended``; every socket received its
  conversation's events (and the acks of its own messages) once, in ``seq`` order, exactly as
  stored and with no gap — a visitor's from where it resumed; each conversation is in exactly
  one queue (its group's, on its owner) or with exactly one operator (on that node), or nowhere
  once it is no longer waiting nor active; and each visitor, resuming once more from 0,
  receives exactly the stored events a visitor sees.
* The tests after the property pin what it found, each deterministically.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from omni.actors.group import QueueSnapshot
from omni.cluster import rendezvous
from omni.domain.conversation import Status
from omni.server import RunningServer, open_server
from omni.store import Fence, Lease, NodeNameInUse, Store, Write
from omni.store.postgres import open_postgres_store
from tests.cluster_support import FAST_CLUSTER
from tests.conftest import drop_database, fresh_database, run_leaving_nothing_behind
from tests.support import TOK_ALICE, TOK_BRUNO, TOK_CARLA, UNLIMITED, eventually, make_config

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

CLUSTER = FAST_CLUSTER
CONFIG = make_config(cluster=CLUSTER, limits=UNLIMITED)
GROUPS = sorted(CONFIG.directory.groups)
NAMES = ("a", "b", "c", "d")
MAX_LIVE = 3
#: Support (group 1, a survey), Closed service (out of hours, runs under group 3), No survey
#: (group 2).
SERVICES = (25, 26, 27)
TOKENS = {1: TOK_ALICE, 2: TOK_BRUNO, 3: TOK_CARLA}
CAPACITY = {o.id: o.capacity for o in CONFIG.directory.operators.values()}
#: Frames that are stored events (they carry the conversation's ``seq``).
EVENTS = frozenset(
    {
        "message",
        "assigned",
        "transferred",
        "idle_warning",
        "ended",
        "survey",
        "closed",
        "out_of_hours",
        "bot",
        "bot_reply",
    }
)
#: Refusals after which a client sends the message again (same client_id) once it resumed.
RETRIED = frozenset({"moved", "overloaded"})
#: How long a client waits for an answer before it counts as none (the node may have died).
ANSWER_SECONDS = 4.0
#: Connection attempts of a client before it gives up for this step.
ATTEMPTS = 12
#: How long the cluster may take to place every group on the node it hashes to.
SETTLE_SECONDS = 10.0
MAX_EXAMPLES = int(os.environ.get("OMNI_CLUSTER_EXAMPLES", "35"))


# -- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartNode:
    name: str


@dataclass(frozen=True)
class StopNode:
    pick: int


@dataclass(frozen=True)
class KillNode:
    pick: int


@dataclass(frozen=True)
class VisitorStarts:
    service: int
    pick: int


@dataclass(frozen=True)
class VisitorSends:
    """``count`` messages one after the other; ``wait``: for their answers (else they are
    in flight while the next step runs — a kill, say)."""

    visitor: int
    pick: int
    count: int
    wait: bool


@dataclass(frozen=True)
class VisitorResumes:
    visitor: int
    pick: int


@dataclass(frozen=True)
class VisitorEnds:
    visitor: int
    pick: int


@dataclass(frozen=True)
class OperatorConnects:
    operator: int
    pick: int


@dataclass(frozen=True)
class OperatorWorks:
    """Accept what is offered, then answer every conversation held (``wait``: for the
    answers)."""

    operator: int
    wait: bool


@dataclass(frozen=True)
class OperatorEnds:
    operator: int


@dataclass(frozen=True)
class StallNode:
    """The node's database calls made in the next ``seconds`` wait until they are over (a
    pause, or the network to PostgreSQL gone without a FIN, then back): its heartbeat and
    renewals stop, others may take its groups, and its late writes must be refused."""

    pick: int
    seconds: float


@dataclass(frozen=True)
class OperatorTransfers:
    """The operator hands the first conversation they hold to a group (``group:<id>``: maybe
    one served by another node) or to another operator (``operator:<id>``)."""

    operator: int
    to: str


@dataclass(frozen=True)
class Settle:
    pass


Step = (
    StartNode
    | StopNode
    | KillNode
    | VisitorStarts
    | VisitorSends
    | VisitorResumes
    | VisitorEnds
    | OperatorConnects
    | OperatorWorks
    | OperatorEnds
    | StallNode
    | OperatorTransfers
    | Settle
)

_pick = st.integers(0, 5)
_visitor = st.integers(0, 5)
_operator = st.sampled_from(sorted(TOKENS))
#: The steps, weighted by repetition: chat more often than nodes come and go.
step = st.one_of(
    st.builds(StartNode, st.sampled_from(NAMES)),
    st.builds(StopNode, _pick),
    st.builds(KillNode, _pick),
    st.builds(VisitorStarts, st.sampled_from(SERVICES), _pick),
    *[st.builds(VisitorSends, _visitor, _pick, st.integers(1, 3), st.booleans())] * 3,
    st.builds(VisitorResumes, _visitor, _pick),
    st.builds(VisitorEnds, _visitor, _pick),
    st.builds(OperatorConnects, _operator, _pick),
    *[st.builds(OperatorWorks, _operator, st.booleans())] * 2,
    st.builds(OperatorEnds, _operator),
    st.builds(StallNode, _pick, st.sampled_from([0.5, 1.5, 2.5])),
    st.builds(
        OperatorTransfers,
        _operator,
        st.sampled_from([f"group:{g}" for g in GROUPS] + [f"operator:{o}" for o in TOKENS]),
    ),
    st.just(Settle()),
)


@dataclass(frozen=True)
class Plan:
    """The nodes started first, the conversations started and the operators signed in on them,
    then the steps."""

    nodes: list[str]
    services: list[int]
    operators: list[int]
    steps: list[Step]

    def prelude(self) -> list[Step]:
        return [
            *(StartNode(name) for name in self.nodes),
            Settle(),
            *(OperatorConnects(op, n) for n, op in enumerate(self.operators)),
            *(VisitorStarts(service, n) for n, service in enumerate(self.services)),
            *(OperatorWorks(op, True) for op in self.operators),
        ]


plans = st.builds(
    Plan,
    nodes=st.lists(st.sampled_from(NAMES), min_size=1, max_size=MAX_LIVE, unique=True),
    services=st.lists(st.sampled_from(SERVICES), min_size=1, max_size=4),
    operators=st.lists(_operator, min_size=1, max_size=3, unique=True),
    steps=st.lists(step, min_size=4, max_size=20),
)


# -- clients ----------------------------------------------------------------------------------


class Socket:
    """One client connection to one node; a reader task keeps every frame it receives."""

    def __init__(self, node: str, after: int = 0) -> None:
        self.node = node
        #: The ``last_seq`` it resumed from (0: it started the conversation, or an operator's).
        self.after = after
        self.frames: list[dict[str, Any]] = []
        #: ``client_id`` of the messages sent on this socket: their acks stand for the events
        #: their sender is not sent.
        self.own: set[str] = set()
        self.closed = trio.Event()
        self._arrived = trio.Event()
        self._ws: Any = None

    async def run(self, url: str, task_status: trio.TaskStatus[None]) -> None:
        async with open_websocket_url(url, connect_timeout=2, disconnect_timeout=1) as ws:
            self._ws = ws
            task_status.started()
            try:
                while True:
                    self.frames.append(json.loads(await ws.get_message()))
                    self._wake()
            except ConnectionClosed:
                pass
            finally:
                self.closed.set()
                self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    @property
    def open(self) -> bool:
        return not self.closed.is_set()

    async def send(self, type: str, **fields: Any) -> bool:
        """Send a frame; False if the socket is gone."""
        if self.closed.is_set():
            return False
        try:
            await self._ws.send_message(json.dumps({"type": type, **fields}))
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], since: int = 0, seconds: float = 0.0
    ) -> dict[str, Any] | None:
        """The first frame from index ``since`` that ``match`` takes; None once the socket is
        closed without one, or after ``seconds`` (default :data:`ANSWER_SECONDS`)."""
        with trio.move_on_after(seconds or ANSWER_SECONDS):
            seen = since
            while True:
                arrived = self._arrived
                for frame in self.frames[seen:]:
                    if match(frame):
                        return frame
                seen = len(self.frames)
                if self.closed.is_set():
                    return None
                await arrived.wait()
        return None

    async def answered(self, client_ids: list[str], since: int) -> None:
        """Until each of ``client_ids`` is acked or refused (or the socket closes)."""
        for client_id in client_ids:
            await self.wait_for(
                lambda f, c=client_id: f["type"] in ("ack", "error") and f.get("client_id") == c,
                since,
            )

    def stream(self, conversation_id: str) -> list[int]:
        """The seqs of ``conversation_id`` this socket got, in the order they came: its events,
        and the acks of the messages sent on it — but not an ack of a message sent again after
        a resume whose event the socket got already, or that it resumed after."""
        got: list[int] = []
        for frame in self.frames:
            if frame.get("conversation_id", conversation_id) != conversation_id:
                continue
            kind, seq = frame["type"], frame.get("seq")
            mine = kind == "ack" and frame["client_id"] in self.own
            if kind in EVENTS or (mine and seq > self.after and seq not in got):
                got.append(seq)
        return got

    async def close(self) -> None:
        if self._ws is not None and not self.closed.is_set():
            with trio.move_on_after(2):
                try:
                    await self._ws.aclose()
                except Exception:
                    pass
        with trio.move_on_after(3):
            await self.closed.wait()


def _acks(sockets: list[Socket]) -> dict[str, set[int]]:
    """client_id -> the seqs its acks gave (one, unless something is wrong)."""
    acks: dict[str, set[int]] = defaultdict(set)
    for socket in sockets:
        for frame in socket.frames:
            if frame["type"] == "ack":
                acks[frame["client_id"]].add(frame["seq"])
    return acks


def _refused(sockets: list[Socket]) -> set[str]:
    """Messages refused for good (not ``moved`` nor ``overloaded``: those are sent again after
    a resume)."""
    return {
        f["client_id"]
        for socket in sockets
        for f in socket.frames
        if f["type"] == "error" and f.get("client_id") and f["code"] not in RETRIED
    }


@dataclass
class Visitor:
    number: int
    service: int
    conversation_id: str
    token: str
    socket: Socket | None
    sockets: list[Socket] = field(default_factory=list)
    #: client_id of every message sent, in order.
    sent: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        """Sent, neither acknowledged nor refused: sent again, same client_id, on resuming."""
        acks, refused = _acks(self.sockets), _refused(self.sockets)
        return [c for c in self.sent if c not in acks and c not in refused]

    @property
    def last_seq(self) -> int:
        return max(
            [0, *(s for socket in self.sockets for s in socket.stream(self.conversation_id))]
        )


@dataclass
class Operator:
    id: int
    socket: Socket | None = None
    sockets: list[Socket] = field(default_factory=list)
    #: client_id -> the conversation it was sent to.
    sent: dict[str, str] = field(default_factory=dict)

    def holds(self) -> list[str]:
        """The conversations its current socket says it holds: in its welcome, or assigned to
        it since, and not ended."""
        if self.socket is None:
            return []
        held: list[str] = []
        for frame in self.socket.frames:
            kind = frame["type"]
            if kind == "welcome":
                held += [c["id"] for c in frame["conversations"]]
            elif kind == "assigned" and frame["operator"]["id"] == self.id:
                held.append(frame["conversation_id"])
            elif kind in ("ended", "closed") or (
                kind == "error" and frame.get("code") == "conversation_closed"
            ):
                held = [c for c in held if c != frame.get("conversation_id")]
        return list(dict.fromkeys(held))


# -- nodes ------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    server: RunningServer | None = None
    store: Store | None = None
    #: Taken by the monitor: from its start until it begins to leave (or is killed).
    active: bool = False
    #: Clients may pick it: until it is told to stop or is killed.
    serving: bool = False
    killed: bool = False
    #: Its database calls wait until then (trio's clock).
    stalled_until: float = 0.0
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


def _stallable(node: Node, store: Store) -> None:
    """Every database call of ``store`` made while ``node`` is stalled waits for its end."""

    def gated(call: Callable[..., Any]) -> Callable[..., Any]:
        async def after_the_stall(*args: Any, **kwargs: Any) -> Any:
            for _ in range(100):  # a stall may be made longer meanwhile
                if node.stalled_until <= trio.current_time():
                    break
                await trio.sleep_until(node.stalled_until)
            return await call(*args, **kwargs)

        return after_the_stall

    for name in dir(store):
        call = getattr(store, name)
        if not name.startswith("_") and inspect.iscoroutinefunction(call):
            setattr(store, name, gated(call))


@dataclass
class Written:
    """A write a node's store was asked for: its events' frames by (conversation, seq), and
    how it ended (None: it did not return — its node was killed meanwhile)."""

    node: str
    fence: Fence | None
    frames: dict[tuple[str, int], str]
    outcome: str | None = None


class Cluster:
    """The nodes of one example, its clients, and what was observed."""

    def __init__(self, dsn: str, nursery: trio.Nursery, checker: Store) -> None:
        self.dsn = dsn
        self.nursery = nursery
        self.checker = checker
        self.nodes: dict[str, Node] = {}
        self.died_at: dict[str, float] = {}
        self.visitors: list[Visitor] = []
        self.operators = {op: Operator(op) for op in TOKENS}
        self.violations: list[str] = []
        self.writes: list[Written] = []
        #: (resource, epoch) -> the node that acquired it.
        self.epochs: dict[tuple[str, int], str] = {}
        self.stats: dict[str, int] = defaultdict(int)
        self.now = "start"

    # -- nodes ------------------------------------------------------------------------------

    def serving(self) -> list[str]:
        return sorted(name for name, node in self.nodes.items() if node.serving)

    def pick(self, pick: int, attempt: int = 0) -> Node | None:
        names = self.serving()
        return self.nodes[names[(pick + attempt) % len(names)]] if names else None

    async def start_node(self, name: str) -> None:
        if name in self.nodes or len(self.serving()) >= MAX_LIVE:
            return
        # A dead node's name is taken over once its heartbeat is older than the expiry.
        dead = self.died_at.get(name)
        if dead is not None:
            await trio.sleep_until(dead + CLUSTER["node_expiry_seconds"] + 0.3)
        for _ in range(5):
            node = Node(name)
            try:
                with trio.fail_after(15):
                    await self.nursery.start(self._run_node, node)
            except NodeNameInUse:
                await trio.sleep(0.3)
                continue
            self.nodes[name] = node
            return
        raise AssertionError(f"node {name} could not register")

    async def _run_node(self, node: Node, task_status: trio.TaskStatus[None]) -> None:
        try:
            with node.scope:
                async with open_postgres_store(self.dsn) as store:
                    _stallable(node, store)
                    self._watch_store(node, store)
                    async with open_server(
                        CONFIG, store=store, host="127.0.0.1", ws_port=0, http=False, node=node.name
                    ) as server:
                        node.server, node.store = server, store
                        node.active = node.serving = True
                        task_status.started()
                        await node.stop.wait()
        finally:
            node.active = node.serving = False
            node.done.set()

    def _watch_store(self, node: Node, store: Store) -> None:
        """Record the store's successful writes and acquisitions; a killed node never leaves."""
        write, acquire, leave = store.write, store.acquire_lease, store.leave_node

        async def watched_write(w: Write) -> None:
            written = Written(
                node.name, w.fence, {(e.conversation_id, e.seq): e.frame for e in w.events}
            )
            if written.frames:
                self.writes.append(written)
            try:
                await write(w)
            except BaseException as exc:
                written.outcome = type(exc).__name__
                raise
            written.outcome = "stored"

        async def watched_acquire(resource: str, owner: str, seconds: float) -> Lease | None:
            lease = await acquire(resource, owner, seconds)
            if lease is not None:
                self.epochs[(lease.resource, lease.epoch)] = owner
            return lease

        async def watched_leave(name: str, incarnation: int) -> None:
            node.active = False  # its hub has stopped: nothing of it runs any more
            if not node.killed:
                await leave(name, incarnation)

        store.write = watched_write  # type: ignore[method-assign]
        store.acquire_lease = watched_acquire  # type: ignore[method-assign]
        store.leave_node = watched_leave  # type: ignore[method-assign]

    async def stop_node(self, pick: int) -> None:
        if len(self.serving()) < 2:
            return
        node = self.pick(pick)
        assert node is not None
        node.serving = False
        node.stop.set()
        with trio.fail_after(15):
            await node.done.wait()
        del self.nodes[node.name]

    async def kill_node(self, pick: int) -> None:
        if len(self.serving()) < 2:
            return
        node = self.pick(pick)
        assert node is not None
        node.killed = True
        node.active = node.serving = False
        self.died_at[node.name] = trio.current_time()
        node.scope.cancel()
        with trio.fail_after(15):
            await node.done.wait()
        del self.nodes[node.name]

    def stall_node(self, pick: int, seconds: float) -> None:
        node = self.pick(pick)
        if node is not None:
            node.stalled_until = max(node.stalled_until, trio.current_time() + seconds)

    def placed(self) -> bool:
        """Every group owned by the node it hashes to among the live ones, and only there."""
        live = {
            name: node.server
            for name, node in self.nodes.items()
            if node.active and node.server is not None
        }
        if not live:
            return False
        hub = next(iter(live.values())).hub
        for group in GROUPS:
            owners = [
                name
                for name, server in live.items()
                if server.ownership is not None and group in server.ownership.owned
            ]
            if owners != [rendezvous(sorted(live), hub.placement(group))]:
                return False
        return True

    async def settle(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            while True:
                if self.placed():
                    return True
                await trio.sleep(0.02)
        return False

    # -- the monitor ------------------------------------------------------------------------

    def check(self) -> None:
        """The invariants that hold at every instant, across the live nodes."""
        live = [n for n in self.nodes.values() if n.active and n.server is not None]
        owners: dict[int, list[str]] = defaultdict(list)
        runners: dict[str, list[str]] = defaultdict(list)
        holders: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for node in live:
            server = node.server
            assert server is not None and server.ownership is not None
            for group in server.ownership.owned:
                owners[group].append(node.name)
            for conversation_id in server.hub.conversations:
                runners[conversation_id].append(node.name)
            for state in server.hub.roster:
                if len(state.load) > CAPACITY[state.id]:
                    self.violate(
                        f"operator {state.id} holds {sorted(state.load)} on {node.name}, "
                        f"over their capacity {CAPACITY[state.id]}"
                    )
                for conversation_id in state.load:
                    holders[conversation_id].append((node.name, state.id))
        for group, names in owners.items():
            if len(names) > 1:
                self.violate(f"group {group} owned by {names} at once")
        for conversation_id, names in runners.items():
            if len(names) > 1:
                self.violate(f"conversation {conversation_id} runs on {names} at once")
        for conversation_id, held in holders.items():
            # Two operators of one node hold it while a transfer between them is written (the
            # target's slot is taken first); two nodes never.
            if len({name for name, _ in held}) > 1:
                self.violate(f"conversation {conversation_id} held by {held} at once")

    def violate(self, what: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(f"[{self.now}] {what}")

    async def monitor(self) -> None:
        while True:
            self.check()
            await trio.sleep(0.005)

    # -- clients ----------------------------------------------------------------------------

    async def connect(self, node: Node, path: str, after: int = 0) -> Socket | None:
        assert node.server is not None
        socket = Socket(node.name, after)
        try:
            with trio.fail_after(5):
                await self.nursery.start(socket.run, f"{node.server.ws_url}{path}")
        except Exception:  # a node just stopped or killed: try another
            self.stats["connect_failed"] += 1
            return None
        return socket

    async def hello(
        self, pick: int, path: str, first: dict[str, Any], answers: set[str], after: int = 0
    ) -> tuple[Socket, dict[str, Any]] | None:
        """Connect to a live node and send ``first`` until a frame of ``answers`` comes back;
        on ``moved``, a closed socket or silence, try the next live node."""
        for attempt in range(ATTEMPTS):
            node = self.pick(pick, attempt)
            if node is None:
                return None
            socket = await self.connect(node, path, after)
            if socket is None:
                await trio.sleep(0.1)
                continue
            await socket.send(**first)
            got = await socket.wait_for(lambda f: f["type"] in answers or f["type"] == "error")
            if got is not None and got["type"] in answers:
                return socket, got
            self.stats[f"hello_{(got or {}).get('code', 'none')}"] += 1
            await socket.close()
            await trio.sleep(0.15)
        self.stats["hello_gave_up"] += 1
        return None

    async def visitor_starts(self, service: int, pick: int) -> None:
        first = {"type": "start", "service_id": service, "visitor": {"name": "Vi"}}
        hello = await self.hello(pick, "/ws/visitor", first, {"started"})
        if hello is None:
            return
        socket, started = hello
        visitor = Visitor(
            len(self.visitors), service, started["conversation_id"], started["token"], socket
        )
        visitor.sockets.append(socket)
        self.visitors.append(visitor)

    def visitor(self, number: int) -> Visitor | None:
        return self.visitors[number % len(self.visitors)] if self.visitors else None

    async def resume(self, visitor: Visitor, pick: int) -> bool:
        """Drop the visitor's socket, resume on a live node from the last seq it got, and send
        again what was never answered."""
        if visitor.socket is not None:
            await visitor.socket.close()
            visitor.socket = None
        after = visitor.last_seq
        first = {"type": "resume", "token": visitor.token, "last_seq": after}
        hello = await self.hello(pick, "/ws/visitor", first, {"resumed"}, after)
        if hello is None:
            return False
        visitor.socket, resumed = hello
        visitor.sockets.append(visitor.socket)
        if resumed["last_seq"] < after:
            self.violate(f"visitor {visitor.number} resumed at {resumed} after {after}")
        for client_id in visitor.pending:
            self.stats["visitor_resent"] += 1
            await self.send_message(visitor, client_id)
        return True

    async def ready(self, visitor: Visitor, pick: int) -> Socket | None:
        if visitor.socket is None or not visitor.socket.open:
            await self.resume(visitor, pick)
        return visitor.socket

    async def send_message(self, visitor: Visitor, client_id: str) -> None:
        socket = visitor.socket
        assert socket is not None
        if client_id not in visitor.sent:
            visitor.sent.append(client_id)
        socket.own.add(client_id)
        await socket.send("message", client_id=client_id, text=f"text {client_id}")

    async def visitor_sends(self, number: int, pick: int, n: int, wait: bool) -> None:
        visitor = self.visitor(number)
        if visitor is None or (socket := await self.ready(visitor, pick)) is None:
            return
        since = len(socket.frames)
        client_ids = [f"v{visitor.number}-{len(visitor.sent) + k}" for k in range(n)]
        for client_id in client_ids:
            await self.send_message(visitor, client_id)
        if wait:
            await socket.answered(client_ids, since)

    async def visitor_ends(self, number: int, pick: int) -> None:
        visitor = self.visitor(number)
        if visitor is None or (socket := await self.ready(visitor, pick)) is None:
            return
        since = len(socket.frames)
        if await socket.send("end"):
            await socket.wait_for(lambda f: f["type"] in ("ended", "error"), since)

    async def operator_connects(self, operator_id: int, pick: int) -> None:
        operator = self.operators[operator_id]
        if operator.socket is not None:
            await operator.socket.close()
            operator.socket = None
        first = {"type": "login", "token": TOKENS[operator_id]}
        hello = await self.hello(pick, "/ws/operator", first, {"welcome"})
        if hello is None:
            return
        operator.socket = hello[0]
        operator.sockets.append(operator.socket)
        since = len(operator.socket.frames)
        if await operator.socket.send("status", status="available"):
            await operator.socket.wait_for(lambda f: f["type"] in ("status", "error"), since)

    async def operator_works(self, operator_id: int, wait: bool) -> None:
        operator = self.operators[operator_id]
        socket = operator.socket
        if socket is None or not socket.open:
            return
        offered = [f["conversation_id"] for f in socket.frames if f["type"] == "offer"]
        withdrawn = {f["conversation_id"] for f in socket.frames if f["type"] == "offer_withdrawn"}
        held = set(operator.holds())
        for conversation_id in dict.fromkeys(offered):
            if conversation_id in withdrawn or conversation_id in held:
                continue
            since = len(socket.frames)
            if not await socket.send("accept", conversation_id=conversation_id):
                return
            await socket.wait_for(
                lambda f, c=conversation_id: (
                    f.get("conversation_id") == c and f["type"] in ("assigned", "error")
                ),
                since,
            )
        since = len(socket.frames)
        client_ids = []
        for conversation_id in operator.holds():
            client_id = f"o{operator_id}-{len(operator.sent)}"
            operator.sent[client_id] = conversation_id
            socket.own.add(client_id)
            client_ids.append(client_id)
            await socket.send(
                "message", conversation_id=conversation_id, client_id=client_id, text="answer"
            )
        if wait:
            await socket.answered(client_ids, since)

    async def operator_ends(self, operator_id: int) -> None:
        operator = self.operators[operator_id]
        socket = operator.socket
        held = operator.holds()
        if socket is None or not held:
            return
        since = len(socket.frames)
        if await socket.send("end", conversation_id=held[0]):
            await socket.wait_for(
                lambda f: f.get("conversation_id") == held[0] and f["type"] in ("ended", "error"),
                since,
            )

    async def operator_transfers(self, operator_id: int, to: str) -> None:
        operator = self.operators[operator_id]
        socket = operator.socket
        held = operator.holds()
        if socket is None or not held:
            return
        kind, target = to.split(":")
        since = len(socket.frames)
        if await socket.send("transfer", conversation_id=held[0], **{f"{kind}_id": int(target)}):
            answer = await socket.wait_for(
                lambda f: (
                    f.get("conversation_id") == held[0] and f["type"] in ("transferred", "error")
                ),
                since,
            )
            self.stats[f"transfer_{(answer or {}).get('code', (answer or {}).get('type'))}"] += 1

    async def run(self, step: Step) -> None:
        match step:
            case StartNode(name):
                await self.start_node(name)
            case StopNode(pick):
                await self.stop_node(pick)
            case KillNode(pick):
                await self.kill_node(pick)
            case VisitorStarts(service, pick):
                await self.visitor_starts(service, pick)
            case VisitorSends(number, pick, n, wait):
                await self.visitor_sends(number, pick, n, wait)
            case VisitorResumes(number, pick):
                visitor = self.visitor(number)
                if visitor is not None:
                    await self.resume(visitor, pick)
            case VisitorEnds(number, pick):
                await self.visitor_ends(number, pick)
            case OperatorConnects(operator_id, pick):
                await self.operator_connects(operator_id, pick)
            case OperatorWorks(operator_id, wait):
                await self.operator_works(operator_id, wait)
            case OperatorEnds(operator_id):
                await self.operator_ends(operator_id)
            case StallNode(pick, seconds):
                self.stall_node(pick, seconds)
            case OperatorTransfers(operator_id, to):
                await self.operator_transfers(operator_id, to)
            case Settle():
                await self.settle(SETTLE_SECONDS / 2)

    # -- the end ------------------------------------------------------------------------------

    async def final_replay(self, visitor: Visitor) -> tuple[int, list[dict[str, Any]]]:
        """Resume from 0 once more: the ``last_seq`` resumed at, and every event received up
        to a ping's pong."""
        first = {"type": "resume", "token": visitor.token, "last_seq": 0}
        for attempt in range(3):
            hello = await self.hello(visitor.number + attempt, "/ws/visitor", first, {"resumed"})
            assert hello is not None, f"visitor {visitor.number} could not resume at the end"
            socket, resumed = hello
            since = socket.frames.index(resumed)
            pong = None
            if await socket.send("ping"):
                pong = await socket.wait_for(lambda f: f["type"] == "pong", since)
            await socket.close()
            if pong is not None:
                end = socket.frames.index(pong)
                events = [f for f in socket.frames[since:end] if f["type"] in EVENTS]
                return resumed["last_seq"], events
        raise AssertionError(f"visitor {visitor.number}: no pong after resuming at the end")

    async def verify(self) -> None:
        for socket in self.sockets():
            await socket.close()
        assert await self.settle(SETTLE_SECONDS), (
            f"the groups were not placed on {sorted(self.nodes)} within {SETTLE_SECONDS} s"
        )
        assert not self.violations, self.violations
        stored = {
            v.conversation_id: await self.checker.events_after(v.conversation_id, 0)
            for v in self.visitors
        }
        for conversation_id, events in stored.items():
            seqs = [e.seq for e in events]
            assert seqs == list(range(1, len(seqs) + 1)), f"{conversation_id}: seqs {seqs}"
            ended = min((e.seq for e in events if e.kind in ("ended", "closed")), default=None)
            late = [e.seq for e in events if e.client_key and ended and e.seq > ended]
            assert not late, f"{conversation_id}: messages stored after ended: {late}"
        self.verify_acks(stored)
        self.verify_sockets(stored)
        self.verify_fences(stored)
        await self.verify_places()
        for visitor in self.visitors:
            last, got = await self.final_replay(visitor)
            events = await self.checker.events_after(visitor.conversation_id, 0)
            visible = [e.data for e in events if e.audience != "operator"]
            assert got == visible[: len(got)], (
                f"visitor {visitor.number}: the replay from 0 differs from the store"
            )
            assert len(got) >= len([e for e in visible if e["seq"] <= last]), (
                f"visitor {visitor.number}: the replay from 0 stops short of {last}"
            )

    async def places(self) -> dict[str, list[str]]:
        """Where each conversation waits or is held, across the live nodes: the queues of the
        groups they own, and their operators' loads."""
        places: dict[str, list[str]] = defaultdict(list)
        for name, node in sorted(self.nodes.items()):
            assert node.server is not None and node.server.ownership is not None
            hub = node.server.hub
            for group_id in sorted(node.server.ownership.owned):
                group = hub.running_group(group_id)
                if group is not None:
                    for waiting in await group.ask(QueueSnapshot(), timeout=5):
                        places[waiting].append(f"queue {group_id} on {name}")
            for state in hub.roster:
                for held in state.load:
                    places[held].append(f"operator {state.id} on {name}")
        return places

    async def verify_places(self) -> None:
        """Once the clients are gone and the groups placed, each conversation is in exactly
        one queue — its group's, on its owner — or with exactly one operator (its own, on that
        node): queued ones in their queue, active ones with their operator, the others
        nowhere."""
        owner = {
            group: name
            for name, node in self.nodes.items()
            if node.server is not None and node.server.ownership is not None
            for group in node.server.ownership.owned
        }
        expected: dict[str, list[str]] = {}
        found: dict[str, list[str]] = {}
        with trio.move_on_after(5):  # offers withdrawn, conversations adopted: a beat or two
            while True:
                for visitor in self.visitors:
                    conv = await self.checker.load_conversation(visitor.conversation_id)
                    assert conv is not None and conv.group_id in (*owner, None)
                    where = []
                    if conv.status is Status.QUEUED:
                        where = [f"queue {conv.group_id} on {owner[conv.group_id]}"]
                    elif conv.status is Status.ACTIVE:
                        where = [f"operator {conv.operator_id} on {owner[conv.group_id]}"]
                    expected[conv.id] = where
                places = await self.places()
                found = {c: sorted(places.get(c, [])) for c in expected}
                if found == expected:
                    return
                await trio.sleep(0.05)
        raise AssertionError(f"conversations expected at {expected}, found at {found}")

    def sockets(self) -> list[Socket]:
        every = [s for v in self.visitors for s in v.sockets]
        return every + [s for o in self.operators.values() for s in o.sockets]

    def verify_acks(self, stored: dict[str, list[Any]]) -> None:
        """Each client_id stored once; each acknowledged one at the seq of its acks."""
        by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
        for conversation_id, events in stored.items():
            for e in events:
                if e.client_key:
                    by_key[(conversation_id, e.client_key[1])].append(e.seq)
        for key, seqs in by_key.items():
            assert len(seqs) == 1, f"{key} stored at {seqs}"
        for visitor in self.visitors:
            for client_id, seqs in _acks(visitor.sockets).items():
                found = by_key.get((visitor.conversation_id, client_id))
                assert found is not None and {*found} == seqs, (
                    f"visitor {visitor.number}'s {client_id} acked at {seqs}, stored at {found}"
                )
        for operator in self.operators.values():
            for client_id, seqs in _acks(operator.sockets).items():
                conversation_id = operator.sent[client_id]
                found = by_key.get((conversation_id, client_id))
                assert conversation_id not in stored or (found is not None and {*found} == seqs), (
                    f"operator {operator.id}'s {client_id} acked at {seqs}, stored at {found}"
                )

    def verify_sockets(self, stored: dict[str, list[Any]]) -> None:
        """Each socket got its conversation's events once, in order, exactly as stored, from
        where it resumed and with no gap (its own messages' acks standing for their events);
        an operator's socket, from the first it got."""
        for visitor in self.visitors:
            events = {e.seq: e for e in stored[visitor.conversation_id]}
            visible = [s for s, e in sorted(events.items()) if e.audience != "operator"]
            for n, socket in enumerate(visitor.sockets):
                for frame in socket.frames:
                    if frame["type"] in EVENTS:
                        event = events.get(frame["seq"])
                        assert event is not None and event.data == frame, (
                            f"visitor {visitor.number} socket {n} got {frame}, stored "
                            f"{event and event.data}"
                        )
                got = socket.stream(visitor.conversation_id)
                expected = [s for s in visible if s > socket.after][: len(got)]
                assert got == expected, (
                    f"visitor {visitor.number} socket {n} (on {socket.node}, after "
                    f"{socket.after}) got seqs {got}, expected {expected}"
                )
        for operator in self.operators.values():
            for n, socket in enumerate(operator.sockets):
                conversations = {f["conversation_id"] for f in socket.frames if f["type"] in EVENTS}
                for conversation_id in sorted(conversations & stored.keys()):
                    events = {e.seq: e for e in stored[conversation_id]}
                    for frame in socket.frames:
                        if frame["type"] in EVENTS and frame["conversation_id"] == conversation_id:
                            event = events.get(frame["seq"])
                            assert event is not None and event.data == frame, (
                                f"operator {operator.id} socket {n} got {frame}, stored "
                                f"{event and event.data}"
                            )
                    got = socket.stream(conversation_id)
                    visible = [s for s, e in sorted(events.items()) if e.audience != "visitor"]
                    start = visible.index(got[0]) if got[0] in visible else -1
                    assert start >= 0 and got == visible[start : start + len(got)], (
                        f"operator {operator.id} socket {n} (on {socket.node}) got seqs {got} "
                        f"of {conversation_id}, whose events for operators are {visible}"
                    )

    def verify_fences(self, stored: dict[str, list[Any]]) -> None:
        """Every stored event was written under a fence whose epoch its writer had acquired,
        and a conversation's epochs never go back along its seq."""
        attempts: dict[tuple[str, int], list[Written]] = defaultdict(list)
        for written in self.writes:
            for key in written.frames:
                attempts[key].append(written)
        for conversation_id, events in stored.items():
            epochs: dict[str, int] = {}
            for e in events:
                key = (conversation_id, e.seq)
                # The write that stored it: one that had this very frame and was not refused.
                found = [
                    w
                    for w in attempts[key]
                    if w.frames[key] == e.frame and w.outcome != "FencedOut"
                ]
                assert found, f"{conversation_id}#{e.seq}: no write of it was let through"
                written = found[0]
                fence = written.fence
                assert fence is not None, f"{conversation_id}#{e.seq} written without a fence"
                owner = self.epochs.get((fence.resource, fence.epoch))
                assert owner == written.node, (
                    f"{conversation_id}#{e.seq} written by {written.node} under {fence}, "
                    f"acquired by {owner}"
                )
                if fence.epoch < epochs.get(fence.resource, 0):
                    raise AssertionError(
                        f"{conversation_id}#{e.seq} written under {fence} after epoch "
                        f"{epochs[fence.resource]}"
                    )
                epochs[fence.resource] = fence.epoch


async def _example(dsn: str, plan: Plan) -> dict[str, int]:
    async with AsyncExitStack() as stack:
        checker = await stack.enter_async_context(open_postgres_store(dsn))
        nursery = await stack.enter_async_context(trio.open_nursery())
        cluster = Cluster(dsn, nursery, checker)
        try:
            nursery.start_soon(cluster.monitor)
            for n, each in enumerate([*plan.prelude(), *plan.steps]):
                cluster.now = f"step {n}: {each}"
                note(cluster.now)
                with trio.fail_after(60):
                    await cluster.run(each)
                cluster.check()
                assert not cluster.violations, cluster.violations
            cluster.now = "end"
            await cluster.verify()
        finally:
            for node in list(cluster.nodes.values()):
                node.stop.set()
            for node in list(cluster.nodes.values()):
                with trio.move_on_after(15):
                    await node.done.wait()
            nursery.cancel_scope.cancel()
        cluster.stats["visitors"] = len(cluster.visitors)
        cluster.stats["acked"] = sum(len(_acks(v.sockets)) for v in cluster.visitors)
        cluster.stats["operator_acked"] = sum(
            len(_acks(o.sockets)) for o in cluster.operators.values()
        )
        return dict(cluster.stats)


_examples = count(1)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("OMNI_CLUSTER_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans)
def test_the_cluster_keeps_the_conversation_invariants_through_joins_leaves_and_kills(
    postgres_url: str, plan: Plan
) -> None:
    name = f"omni_prop_{os.getpid()}_{next(_examples)}"
    dsn = fresh_database(postgres_url, name)
    try:
        started = time.monotonic()
        stats = run_leaving_nothing_behind(_example, dsn, plan)
        note(f"stats: {stats}")
        if os.environ.get("OMNI_CLUSTER_VERBOSE"):
            print(f"{time.monotonic() - started:.1f}s {plan} {stats}")
    finally:
        drop_database(postgres_url, name)


# -- what the properties found, pinned --------------------------------------------------------


async def test_a_relayed_client_that_leaves_while_a_frame_comes_down_is_seen_gone(
    postgres_dsn: str,
) -> None:
    """Found by the property above: the client of a relayed socket closes just as a frame for
    it is taken from the relay; the edge's send fails (``ConnectionClosed``) and must still
    tell the serving node that the client left — else its session there lives on, signed in
    and offered conversations, with nobody behind it."""
    async with AsyncExitStack() as stack:
        servers: dict[str, RunningServer] = {}
        stores: dict[str, Store] = {}
        for name in ("a", "d"):
            stores[name] = await stack.enter_async_context(open_postgres_store(postgres_dsn))
            servers[name] = await stack.enter_async_context(
                open_server(
                    CONFIG, store=stores[name], host="127.0.0.1", ws_port=0, http=False, node=name
                )
            )
        a, d = servers["a"], servers["d"]
        assert rendezvous(["a", "d"], d.hub.placement(1)) == "d"  # groups 1 and 2: Alice's
        await eventually(lambda: d.ownership is not None and set(d.ownership.owned) == {1, 2})
        # Alice's console is served by "d" (her groups), through "a".
        async with open_websocket_url(f"{a.ws_url}/ws/operator") as alice:
            await alice.send_message(json.dumps({"type": "login", "token": TOK_ALICE}))
            assert json.loads(await alice.get_message())["type"] == "welcome"
            assert 1 in d.hub.sessions and 1 not in a.hub.sessions
            take = stores["a"].relay_take

            async def take_as_the_client_leaves(node: str, socket: str, direction: str) -> Any:
                items = await take(node, socket, direction)
                if direction == "down" and items:
                    with trio.CancelScope(shield=True):
                        await alice.aclose()  # the answer is in hand as the client goes
                return items

            stores["a"].relay_take = take_as_the_client_leaves  # type: ignore[method-assign]
            await alice.send_message(json.dumps({"type": "ping"}))
            await eventually(lambda: alice.closed is not None, seconds=5)
        await eventually(lambda: 1 not in d.hub.sessions, seconds=5)


async def test_a_stopped_actor_draining_its_mailbox_writes_nothing_under_a_new_lease(
    postgres_dsn: str,
) -> None:
    """Found by the property above (a node stalled longer than its lease, then back): a
    conversation's actor stopped when its group was lost still handles the messages already
    in its mailbox. Once this node owns the group again, under a new epoch, those writes must
    not pass under it — the actor's state is stale (its last write was refused), and a new
    actor runs the conversation: the store would get seq 2 and 3 without seq 1."""
    async with (
        open_postgres_store(postgres_dsn) as store,
        open_server(CONFIG, store=store, host="127.0.0.1", ws_port=0, http=False, node="a") as a,
    ):
        assert a.ownership is not None
        await eventually(lambda: set(a.ownership.owned) == {1, 2, 3})
        hub = a.hub
        async with open_websocket_url(f"{a.ws_url}/ws/visitor") as visitor:
            start = {"type": "start", "service_id": 27, "visitor": {"name": "Ana"}}
            await visitor.send_message(json.dumps(start))
            conversation_id = json.loads(await visitor.get_message())["conversation_id"]
            # The first message's write waits until the group has changed hands; the next two
            # wait in the actor's mailbox meanwhile.
            write, held, go = store.write, trio.Event(), trio.Event()

            async def held_write(w: Write) -> None:
                if not go.is_set() and any(e.conversation_id == conversation_id for e in w.events):
                    held.set()
                    await go.wait()
                await write(w)

            store.write = held_write  # type: ignore[method-assign]
            for n in range(3):
                message = {"type": "message", "client_id": f"m{n}", "text": f"text {n}"}
                await visitor.send_message(json.dumps(message))
            await held.wait()
            # The lease is lost (released behind the node's back: its next renewal fails) and
            # the node acquires the group again at once, in a new epoch.
            fence = hub.fences[2]
            await store.release_lease(fence.resource, "a", fence.epoch)
            await eventually(lambda: 2 in hub.fences and hub.fences[2].epoch > fence.epoch)
            go.set()
            await trio.sleep(0.5)
        events = await store.events_after(conversation_id, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
