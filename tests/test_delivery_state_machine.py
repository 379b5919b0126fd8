"""Delivery, as a hypothesis state machine over the running hub and gateway.

Visitors and operators are real websocket clients over in-memory streams; hypothesis drives them
(send, resend, drop, resume, end; log in and out, pause, accept, send, transfer, end; time
passing) and after every step checks the delivery invariants on a quiescent system.

Rules of this test:

* The system runs in its own ``trio.run`` on a helper thread, under a ``MockClock`` that never
  moves by itself: virtual time passes only in the ``advance`` rule (``clock.jump``). Every rule
  calls into the loop with ``trio.from_thread.run`` and ends with ``wait_all_tasks_blocked``, so
  a rule never waits for a frame and the invariants always look at a system with nothing left to
  do. Under hypothesis trio's scheduler is seeded, so a sequence replays exactly (no flakiness).
* Each connection is owned by one task in a long-lived nursery of that loop, with a reader that
  appends every frame it receives to the connection's list; rules and invariants read those
  lists. ``teardown`` closes every connection, leaves the hub and joins the thread.
* The invariants compare what clients received with the store (``MemoryStore``) and with the
  routing state (roster, group queues); they are the point of the test, see ``check``. All of
  them hold after *every* step, not only after time passed: the system is quiescent then, and a
  conversation left waiting beside an operator with room would wait until the next poke.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from trio_websocket import ConnectionClosed

from omni.actors.group import QueueSnapshot
from omni.domain.conversation import Conversation
from omni.gateway.server import Gateway
from omni.store import StoredEvent
from omni.store.memory import MemoryStore
from tests.support import (
    TOK_ALICE,
    TOK_CARLA,
    UNLIMITED,
    connect_memory,
    make_config,
    open_memory_gateway,
)

T = TypeVar("T")

#: Visitors whose conversation is open at the same time, and visitors in all.
MAX_VISITORS = 3
MAX_VISITORS_EVER = 6
SERVICE_ID = 25  # routes to group 1: Alice (capacity 2) and Carla (capacity 1)
GRACE_SECONDS = 30
#: Real (wall-clock) seconds the helper thread gets to start and to stop.
THREAD_TIMEOUT = 30.0


def pick(data: st.DataObject, choices: dict[str, T], label: str) -> T:
    """One of ``choices``, drawn by its key (which hypothesis prints)."""
    return choices[data.draw(st.sampled_from(sorted(choices)), label=label)]


async def settle() -> None:
    """Let every task run until all of them wait (on a frame, a mailbox or the frozen clock)."""
    for _ in range(3):
        await trio.testing.wait_all_tasks_blocked()


class Conn:
    """One client connection, as the test sees it: the frames it received, in order."""

    def __init__(self, path: str, label: str) -> None:
        self.path = path
        self.label = label
        self.frames: list[dict[str, Any]] = []
        #: The server closed it (the reader saw the close).
        self.peer_closed = False
        self.close_requested = trio.Event()
        self.finished = trio.Event()
        self.ws: Any = None
        #: Visitor connections: the seq the visitor resumed after (0 for the one that started).
        self.resumed_after: int | None = None

    @property
    def alive(self) -> bool:
        return not self.peer_closed and not self.close_requested.is_set()

    async def send(self, type: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"type": type, **fields}))


@dataclass
class Party:
    """A visitor or an operator, across all of its connections."""

    label: str
    author_key: str  # as in the store's client_key: "v" or "o<id>"
    conns: list[Conn] = field(default_factory=list)
    #: client_id -> text of every message this party sent (client ids are never reused).
    sent: dict[str, str] = field(default_factory=dict)
    #: client_id -> number of times it was sent (a resend is the same client_id again).
    sends: Counter[str] = field(default_factory=Counter)
    counter: int = 0

    @property
    def conn(self) -> Conn | None:
        return self.conns[-1] if self.conns else None

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.alive

    def fresh_client_id(self) -> str:
        self.counter += 1
        return f"{self.label}-{self.counter}"


@dataclass
class Visitor(Party):
    conversation_id: str | None = None
    token: str | None = None

    def last_seen(self) -> int:
        """The highest seq this visitor has seen on any of its connections (acks included)."""
        seqs = [
            f["seq"]
            for conn in self.conns
            for f in conn.frames
            if isinstance(f.get("seq"), int) and f.get("conversation_id") == self.conversation_id
        ]
        return max(seqs, default=0)


@dataclass
class Operator(Party):
    id: int = 0
    token: str = ""

    def pending_offers(self) -> list[str]:
        """Conversations offered to the current connection and not yet withdrawn or assigned
        (an accepted offer is assigned at once: ``operator_accept`` checks it)."""
        conn = self.conn
        if conn is None or not conn.alive:
            return []
        pending: list[str] = []
        for frame in conn.frames:
            if frame["type"] == "offer":
                pending.append(frame["conversation"]["id"])
            elif (
                frame["type"] in ("offer_withdrawn", "assigned")
                and frame.get("conversation_id") in pending
            ):
                pending.remove(frame["conversation_id"])
        return pending


@dataclass
class View:
    """The quiescent system, copied inside the trio thread for the invariants and rules."""

    frames: dict[Conn, list[dict[str, Any]]]
    #: conversation id -> (status, group id), for open conversations (the hub's registry).
    entries: dict[str, tuple[str, int | None]]
    #: operator id -> (presence, capacity, load, groups)
    roster: dict[int, tuple[str, int, set[str], frozenset[int]]]
    #: group id -> conversation ids waiting, head first (asked of the group actor).
    queues: dict[int, list[str]]
    #: The conversation records and events of the store.
    records: dict[str, Conversation]
    events: dict[str, list[StoredEvent]]
    #: Conversations that waited in a group while an operator of that group had room.
    starved: list[str]


@settings(max_examples=200, stateful_step_count=50, deadline=None)
class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = trio.testing.MockClock()
        self.visitors: list[Visitor] = []
        self.operators = [
            Operator("alice", "o1", id=1, token=TOK_ALICE),
            Operator("carla", "o3", id=3, token=TOK_CARLA),
        ]
        self.by_label = {op.label: op for op in self.operators}
        self.view: View | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._gw: Gateway | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-trio", daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT) or self._token is None:
            raise RuntimeError("the trio thread did not start") from self._error

    # -- the trio side ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as error:
            self._error = error
        finally:
            self._ready.set()

    async def _main(self) -> None:
        # A run is a long burst of frames on few connections in little virtual time: the rate
        # limits (tested in tests/hardening) would refuse it.
        config = make_config(operator_grace_seconds=GRACE_SECONDS, limits=UNLIMITED)
        async with open_memory_gateway(config) as gw, trio.open_nursery() as nursery:
            self._gw, self._nursery = gw, nursery
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            for party in [*self.visitors, *self.operators]:
                for conn in party.conns:
                    conn.close_requested.set()
            await settle()
            nursery.cancel_scope.cancel()

    async def _own(self, conn: Conn, *, task_status: trio.TaskStatus[None]) -> None:
        assert self._gw is not None
        try:
            async with connect_memory(self._gw, conn.path) as client, trio.open_nursery() as inner:
                conn.ws = client.ws
                inner.start_soon(self._read, conn)
                task_status.started()
                await conn.close_requested.wait()
                inner.cancel_scope.cancel()
        finally:
            conn.finished.set()

    @staticmethod
    async def _read(conn: Conn) -> None:
        try:
            while True:
                conn.frames.append(json.loads(await conn.ws.get_message()))
        except ConnectionClosed:
            conn.peer_closed = True

    async def _open(self, path: str, label: str) -> Conn:
        assert self._nursery is not None
        conn = Conn(path, label)
        await self._nursery.start(self._own, conn)
        return conn

    @staticmethod
    async def _close(conn: Conn) -> None:
        conn.close_requested.set()
        await settle()
        assert conn.finished.is_set(), f"{conn.label} did not finish closing"

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the trio loop, then wait until the system is
        quiescent."""

        async def step() -> T:
            result = await fn(*args, **kwargs)
            await settle()
            return result

        try:
            return trio.from_thread.run(step, trio_token=self._token)
        except trio.RunFinishedError:
            raise AssertionError(f"the trio loop died: {self._error!r}") from self._error

    async def _take_view(self) -> View:
        assert self._gw is not None
        hub = self._gw.hub
        store = hub.store
        assert isinstance(store, MemoryStore)
        await settle()
        # Starvation is read before the queues are asked for: the ask makes the group dispatch,
        # which would hide a dispatch the group failed to make by itself.
        starved = [
            cid
            for cid, entry in hub.conversations.items()
            if entry.status.value == "queued"
            and any(
                op.presence.value == "available" and op.free > 0 and entry.group_id in op.groups
                for op in hub.roster
            )
        ]
        queues = {g: list(await hub.group(g).ask(QueueSnapshot())) for g in hub.directory.groups}
        await settle()
        records = {conv.id: conv for conv in store.conversations()}
        return View(
            frames={
                conn: list(conn.frames)
                for p in [*self.visitors, *self.operators]
                for conn in p.conns
            },
            entries={cid: (e.status.value, e.group_id) for cid, e in hub.conversations.items()},
            roster={
                op.id: (op.presence.value, op.capacity, set(op.load), op.groups)
                for op in hub.roster
            },
            queues=queues,
            records=records,
            events={cid: store.all_events(cid) for cid in records},
            starved=starved,
        )

    # -- visitors -----------------------------------------------------------------------------
    #
    # Rules that act on someone draw them by label from those they apply to ("v2", "alice",
    # "alice <- v1" for an offer), so that a failing sequence reads as a story.

    def label(self, conversation_id: str) -> str:
        return next(
            (v.label for v in self.visitors if v.conversation_id == conversation_id),
            conversation_id,
        )

    def connected_visitors(self) -> dict[str, Visitor]:
        return {v.label: v for v in self.visitors if v.connected and v.conversation_id is not None}

    def open_visitors(self) -> list[Visitor]:
        """Visitors whose conversation has not finished (as of the last check)."""
        entries = self.view.entries if self.view is not None else {}
        return [v for v in self.visitors if v.conversation_id in entries]

    @precondition(
        lambda self: (
            len(self.visitors) < MAX_VISITORS_EVER and len(self.open_visitors()) < MAX_VISITORS
        )
    )
    @rule()
    def start_visitor(self) -> None:
        visitor = Visitor(f"v{len(self.visitors) + 1}", "v")
        self.visitors.append(visitor)

        async def start() -> Conn:
            conn = await self._open("/ws/visitor", f"{visitor.label}#1")
            conn.resumed_after = 0
            await conn.send("start", service_id=SERVICE_ID, visitor={"name": visitor.label})
            return conn

        conn = self.call(start)
        visitor.conns.append(conn)
        started = [f for f in list(conn.frames) if f["type"] == "started"]
        assert len(started) == 1, f"start got {conn.frames}"
        visitor.conversation_id, visitor.token = started[0]["conversation_id"], started[0]["token"]

    @precondition(lambda self: self.connected_visitors())
    @rule(data=st.data(), drop=st.booleans())
    def visitor_send(self, data: st.DataObject, drop: bool) -> None:
        """A new message; with ``drop`` the connection is lost right after it (before the ack)."""
        visitor = pick(data, self.connected_visitors(), "visitor")
        conn = visitor.conn
        assert conn is not None
        client_id = visitor.fresh_client_id()
        text = f"message {client_id}"
        visitor.sent[client_id] = text
        visitor.sends[client_id] += 1

        async def send() -> None:
            await conn.send("message", client_id=client_id, text=text)
            if drop:
                await self._close(conn)

        self.call(send)

    @precondition(lambda self: any(v.sent for v in self.connected_visitors().values()))
    @rule(data=st.data())
    def visitor_resend(self, data: st.DataObject) -> None:
        """The same client_id and text again: a retry after a lost ack, or a double send."""
        candidates = {label: v for label, v in self.connected_visitors().items() if v.sent}
        visitor = pick(data, candidates, "visitor")
        client_id = pick(data, {c: c for c in visitor.sent}, "client_id")
        conn = visitor.conn
        assert conn is not None
        visitor.sends[client_id] += 1
        self.call(conn.send, "message", client_id=client_id, text=visitor.sent[client_id])

    @precondition(lambda self: self.connected_visitors())
    @rule(data=st.data())
    def visitor_disconnect(self, data: st.DataObject) -> None:
        conn = pick(data, self.connected_visitors(), "visitor").conn
        assert conn is not None
        self.call(self._close, conn)

    def disconnected_visitors(self) -> dict[str, Visitor]:
        return {v.label: v for v in self.visitors if not v.connected and v.token is not None}

    @precondition(lambda self: self.disconnected_visitors())
    @rule(data=st.data(), from_start=st.booleans())
    def visitor_resume(self, data: st.DataObject, from_start: bool) -> None:
        """Resume on a new connection after the last seq seen (or, with ``from_start``, 0)."""
        visitor = pick(data, self.disconnected_visitors(), "visitor")
        last_seq = 0 if from_start else visitor.last_seen()
        old = visitor.conn

        async def resume() -> Conn:
            if old is not None and not old.finished.is_set():
                await self._close(old)  # closed by the server: let it go
            conn = await self._open("/ws/visitor", f"{visitor.label}#{len(visitor.conns) + 1}")
            conn.resumed_after = last_seq
            await conn.send("resume", token=visitor.token, last_seq=last_seq)
            return conn

        visitor.conns.append(self.call(resume))

    @precondition(lambda self: self.connected_visitors())
    @rule(data=st.data())
    def visitor_end(self, data: st.DataObject) -> None:
        conn = pick(data, self.connected_visitors(), "visitor").conn
        assert conn is not None
        self.call(conn.send, "end")

    # -- operators ----------------------------------------------------------------------------

    def offline_operators(self) -> dict[str, Operator]:
        return {op.label: op for op in self.operators if not op.connected}

    def connected_operators(self) -> dict[str, Operator]:
        return {op.label: op for op in self.operators if op.connected}

    @precondition(lambda self: self.offline_operators())
    @rule(data=st.data())
    def operator_login(self, data: st.DataObject) -> None:
        """Sign in and go available (a return within the grace period gets its conversations)."""
        operator = pick(data, self.offline_operators(), "operator")

        async def login() -> Conn:
            conn = await self._open("/ws/operator", f"{operator.label}#{len(operator.conns) + 1}")
            await conn.send("login", token=operator.token)
            await conn.send("status", status="available")
            return conn

        conn = self.call(login)
        operator.conns.append(conn)
        assert [f["type"] for f in conn.frames][:2] == ["welcome", "status"], conn.frames

    @precondition(lambda self: self.connected_operators())
    @rule(data=st.data())
    def operator_disconnect(self, data: st.DataObject) -> None:
        conn = pick(data, self.connected_operators(), "operator").conn
        assert conn is not None
        self.call(self._close, conn)

    @precondition(lambda self: self.connected_operators())
    @rule(data=st.data(), status=st.sampled_from(["paused", "available"]))
    def operator_status(self, data: st.DataObject, status: str) -> None:
        conn = pick(data, self.connected_operators(), "operator").conn
        assert conn is not None
        self.call(conn.send, "status", status=status)

    def offers(self) -> dict[str, tuple[Operator, str]]:
        return {
            f"{op.label} <- {self.label(cid)}": (op, cid)
            for op in self.connected_operators().values()
            for cid in op.pending_offers()
        }

    @precondition(lambda self: self.offers())
    @rule(data=st.data())
    def operator_accept(self, data: st.DataObject) -> None:
        """Accept an offer the operator holds: it must succeed (an offer not withdrawn stands)."""
        operator, cid = pick(data, self.offers(), "offer")
        conn = operator.conn
        assert conn is not None
        before = len(conn.frames)
        self.call(conn.send, "accept", conversation_id=cid)
        answers = [f for f in conn.frames[before:] if f.get("conversation_id") == cid]
        assert any(f["type"] == "assigned" for f in answers), (
            f"{operator.label} accepted offer {cid} and got {answers}"
        )

    def held(self) -> dict[str, tuple[Operator, str]]:
        """Every active conversation held by a connected operator, as "alice -> v1"."""
        if self.view is None:
            return {}
        return {
            f"{op.label} -> {self.label(cid)}": (op, cid)
            for op in self.connected_operators().values()
            for cid, (status, _) in self.view.entries.items()
            if status == "active" and self.view.records[cid].operator_id == op.id
        }

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def operator_send(self, data: st.DataObject) -> None:
        operator, cid = pick(data, self.held(), "conversation")
        conn = operator.conn
        assert conn is not None
        client_id = operator.fresh_client_id()
        text = f"message {client_id}"
        operator.sent[client_id] = text
        operator.sends[client_id] += 1
        self.call(conn.send, "message", conversation_id=cid, client_id=client_id, text=text)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), to=st.sampled_from(["group 1", "group 2", "alice", "carla"]))
    def operator_transfer(self, data: st.DataObject, to: str) -> None:
        """Transfer to a group (Alice is in both) or to an operator (refused if offline, full
        or the holder)."""
        operator, cid = pick(data, self.held(), "conversation")
        conn = operator.conn
        assert conn is not None
        group = to.removeprefix("group ") if to.startswith("group ") else ""
        target = {"group_id": int(group)} if group else {"operator_id": self.by_label[to].id}
        self.call(conn.send, "transfer", conversation_id=cid, **target)

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def operator_end(self, data: st.DataObject) -> None:
        operator, cid = pick(data, self.held(), "conversation")
        conn = operator.conn
        assert conn is not None
        self.call(conn.send, "end", conversation_id=cid)

    # -- time ---------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 10, 31, 120]))
    def advance(self, seconds: int) -> None:
        async def jump() -> None:
            self.clock.jump(seconds)

        self.call(jump)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def check(self) -> None:
        self.view = view = self.call(self._take_view)
        parties: list[Party] = [*self.visitors, *self.operators]
        events = view.events

        # 1. No acknowledged message lost: each ack names exactly one stored message, with the
        #    sender's client_id and text.
        for party in parties:
            for conn in party.conns:
                for frame in view.frames[conn]:
                    if frame["type"] != "ack":
                        continue
                    cid, client_id, seq = frame["conversation_id"], frame["client_id"], frame["seq"]
                    stored = [e for e in events.get(cid, []) if e.seq == seq]
                    assert len(stored) == 1, (
                        f"{conn.label}: {frame} has {len(stored)} stored events"
                    )
                    event = stored[0]
                    assert event.kind == "message", f"{conn.label}: {frame} acks {event}"
                    assert event.client_key is not None
                    assert tuple(event.client_key) == (party.author_key, client_id), (
                        f"{conn.label}: {frame} acks {event}"
                    )
                    assert event.data["text"] == party.sent[client_id], (
                        f"{conn.label}: {frame} acks {event}"
                    )

        # 2a. No duplicate, nothing invented: each (author, client_id) is stored at most once per
        #     conversation, as its sender sent it; seqs run 1, 2, 3, ... with no gap.
        for cid, stored in events.items():
            senders: dict[str, Party] = {op.author_key: op for op in self.operators}
            senders.update({v.author_key: v for v in self.visitors if v.conversation_id == cid})
            assert [e.seq for e in stored] == list(range(1, len(stored) + 1)), (
                f"{self.label(cid)}: stored seqs {[e.seq for e in stored]}"
            )
            keys = Counter(tuple(e.client_key) for e in stored if e.client_key is not None)
            duplicates = {key: n for key, n in keys.items() if n > 1}
            assert not duplicates, (
                f"{self.label(cid)}: messages stored more than once: {duplicates}"
            )
            for key in keys:
                author, client_id = key
                assert senders[author].sent.get(client_id) is not None, (
                    f"{self.label(cid)}: phantom {key}"
                )

        # 2b, 3. On each connection, each seq of a conversation arrives at most once, in strictly
        #    increasing order. An ack is a sighting of its seq — except the ack of a resend, which
        #    repeats the seq of the message first stored (1 checked it is that message).
        for party in parties:
            resent = {client_id for client_id, n in party.sends.items() if n > 1}
            for conn in party.conns:
                seen: dict[str, set[int]] = {}
                for frame in view.frames[conn]:
                    seq = frame.get("seq")
                    if not isinstance(seq, int):
                        continue
                    cid = frame["conversation_id"]
                    had = seen.setdefault(cid, set())
                    last = max(had, default=0)
                    if frame["type"] == "ack" and seq <= last:
                        assert frame["client_id"] in resent, (
                            f"{conn.label}: a first send acked with old seq (after {last}): {frame}"
                        )
                        continue
                    assert seq > last, (
                        f"{conn.label}: seq {seq} of {self.label(cid)} "
                        + ("delivered twice" if seq in had else f"after seq {last}")
                        + f": {frame}"
                    )
                    had.add(seq)

        # 4. A visitor connection that started or resumed after L, and is still open, has seen
        #    every stored event for the visitor with seq > L (its own messages as acks).
        for visitor in self.visitors:
            for conn in visitor.conns:
                if conn.resumed_after is None or not conn.alive:
                    continue
                frames = view.frames[conn]
                opening = [i for i, f in enumerate(frames) if f["type"] in ("started", "resumed")]
                assert opening, f"{conn.label}: no started/resumed frame in {frames}"
                after = frames[opening[0] + 1 :]
                cid = visitor.conversation_id
                assert cid is not None
                got = {f["seq"] for f in after if isinstance(f.get("seq"), int)}
                due = {
                    e.seq
                    for e in events.get(cid, [])
                    if e.seq > conn.resumed_after and e.audience != "operator"
                }
                assert due <= got, (
                    f"{conn.label} (after seq {conn.resumed_after}) missed seqs {sorted(due - got)}"
                    f" of {self.label(cid)}"
                )

        # 5. No operator over capacity.
        for op_id, (_, capacity, load, _) in view.roster.items():
            assert len(load) <= capacity, f"operator {op_id} holds {sorted(load)} > {capacity}"

        # 6. Nobody waits while an operator of their group has room (and is available).
        assert not view.starved, f"waiting while an operator has room: {view.starved}"

        # 7. A conversation is in exactly one place: queued in its group's queue, or offered to /
        #    held by exactly one operator (the one its record names), or (ended) in neither.
        for cid, (status, group_id) in view.entries.items():
            loads = [op for op, (_, _, load, _) in view.roster.items() if cid in load]
            queues = [g for g, queue in view.queues.items() if cid in queue]
            record = view.records[cid]
            assert record.status.value == status, (
                f"{self.label(cid)}: hub says {status}, store {record.status}"
            )
            if status == "queued":
                assert queues == [group_id] and not loads, (
                    f"{self.label(cid)} queued: queues {queues}, loads {loads}"
                )
            elif status in ("offered", "active"):
                holder = record.offered_to if status == "offered" else record.operator_id
                assert loads == [holder] and not queues, (
                    f"{self.label(cid)} {status} to {holder}: loads {loads}, queues {queues}"
                )
            else:
                assert not loads and not queues, (
                    f"{self.label(cid)} {status}: loads {loads}, queues {queues}"
                )
        for op_id, (_, _, load, _) in view.roster.items():
            stale = load - set(view.entries)
            assert not stale, f"operator {op_id} holds finished conversations {sorted(stale)}"
        for g, queue in view.queues.items():
            stale = set(queue) - set(view.entries)
            assert not stale, f"group {g} queues finished conversations {sorted(stale)}"
            assert len(queue) == len(set(queue)), f"group {g} queues {queue}"

    # -- teardown -----------------------------------------------------------------------------

    def teardown(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(THREAD_TIMEOUT)
        assert not self._thread.is_alive(), "the trio thread did not stop"
        if self._error is not None:
            raise self._error


TestDelivery = DeliveryMachine.TestCase
