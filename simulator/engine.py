"""The simulation: Omni's real hub, gateway and memory store in virtual time, driven by fake
visitors and operators that speak the real websocket protocol over in-memory streams.

All randomness comes from one ``random.Random(seed)``: arrivals, then one derived generator per
operator and per visitor, drawn in a fixed order. Trio's own scheduler shuffle is seeded too
(:mod:`omni.compat.trio`), so the same scenario and seed replay the same run.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from omni.actors.hub import open_hub
from omni.clock import Clock
from omni.compat.trio import seed_scheduler
from omni.domain.bot import PERSON, AskNode, MenuNode
from omni.entropy import SeededEntropy
from omni.gateway.server import Gateway
from omni.server import hub_settings
from omni.settings import ServerSettings
from omni.store.memory import MemoryStore
from simulator.bot_visitors import BotPlan
from simulator.scenario import Operator, Scenario


@dataclass
class Event:
    t: float
    kind: str
    data: dict[str, Any]


@dataclass
class Trace:
    """What happened: conversation events and operator state changes, in virtual seconds."""

    events: list[Event] = field(default_factory=list)
    start_wall: float = 0.0
    wall: float = 0.0
    #: ``virtual`` (MockClock, deterministic) or ``real-time`` (a running server over TCP).
    mode: str = "virtual"
    target: str | None = None  # the server's base URL in real time
    errors: list[str] = field(default_factory=list)
    capped: bool = False  # the wall-clock cap stopped the run

    def add(self, t: float, kind: str, **data: Any) -> None:
        self.events.append(Event(round(t, 3), kind, data))


class LoginRefused(Exception):
    pass


class ReplyRefused(Exception):
    """The server refused a visitor's answer to its bot: the scenario's script is not the
    server's (in real time), or the simulated visitor answered wrong."""


class Conn:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, type: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"type": type, **fields}))

    async def recv(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.ws.get_message())
        return frame


def simulated(server: ServerSettings) -> ServerSettings:
    """The gateway's settings in a simulation: its clients are programs over memory streams
    (no Origin, nothing to ping: a memory stream does not die silently)."""
    limits = msgspec.structs.replace(server.limits, ping_interval=None)
    return msgspec.structs.replace(
        server, native_visitors=True, native_operators=True, limits=limits
    )


@asynccontextmanager
async def connect(
    gateway: Gateway, path: str, servers: trio.Nursery, client: str
) -> AsyncIterator[Conn]:
    """A client wired to ``gateway`` through a memory stream pair, counted as coming from
    address ``client``; the server side runs in ``servers`` so that it sees the client leave as
    a real disconnect."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    servers.start_soon(gateway.serve_stream, server_stream, client)
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, client_stream, "localhost", path)  # type: ignore[arg-type]
        try:
            yield Conn(ws)
        finally:
            with trio.move_on_after(1):
                try:
                    await ws.aclose()
                except ConnectionClosed:
                    pass
            await trio.aclose_forcefully(client_stream)
            nursery.cancel_scope.cancel()


class Progress:
    """A progress bar on stderr, only when it is a terminal; it reads virtual time and never
    schedules anything, so it cannot change the run."""

    def __init__(self, total: float, enabled: bool, label: str = "virtual") -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self._last = 0.0

    def update(self, virtual: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1:
            return
        self._last = now
        share = min(1.0, virtual / self.total)
        bar = "#" * int(share * 40)
        sys.stderr.write(f"\r[{bar:<40}] {share:6.1%} {self.label} {virtual / 3600:5.2f} h")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


#: Seconds between operators acting at the same minute of their shifts (see Simulation.operator).
SHIFT_STAGGER = 1e-6


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        progress: bool = False,
        store: MemoryStore | None = None,
    ) -> None:
        self.scenario = scenario
        #: Where the server keeps the run's conversations.
        self.store = MemoryStore() if store is None else store
        self.seed = seed
        self.trace = Trace()
        self.progress = Progress(scenario.duration, progress)
        self.t0 = 0.0
        self.gateway: Gateway | None = None
        self.servers: trio.Nursery
        self._connections = 0

    def now(self) -> float:
        return trio.current_time() - self.t0

    async def sleep_until(self, offset: float) -> None:
        await trio.sleep_until(self.t0 + offset)

    def open_conn(self, path: str) -> Any:
        """An async context manager yielding a :class:`Conn` to ``path`` on the server."""
        assert self.gateway is not None
        # Every simulated person is somebody else, somewhere else: the per-address limits are
        # for strangers in a crowd, not for a simulated day.
        self._connections += 1
        return connect(self.gateway, path, self.servers, f"sim-{self._connections}")

    def queue_group(self, cid: str, service: int, handoff: int | None = None) -> int | None:
        """The group a just-queued conversation waits in (observed in the hub; never changes
        the run); ``handoff``: the group of the bot's hand-off, when known."""
        assert self.gateway is not None
        entry = self.gateway.hub.conversations.get(cid)
        return entry.group_id if entry else None

    async def main(self) -> None:
        seed_scheduler(self.seed)  # trio's order of ready tasks: deterministic replays
        s = self.scenario
        master = random.Random(self.seed)
        arrivals = s.arrival_times(random.Random(master.getrandbits(64)))
        op_rngs = [random.Random(master.getrandbits(64)) for _ in s.operators]
        visitor_rngs = [random.Random(master.getrandbits(64)) for _ in arrivals]
        clock = Clock(s.start)
        self.t0 = trio.current_time()
        async with open_hub(
            s.config.directory,
            self.store,
            clock,
            entropy=SeededEntropy(self.seed),
            settings=hub_settings(s.config.server),
        ) as hub:
            self.gateway = Gateway(hub, simulated(s.config.server))
            async with trio.open_nursery() as servers, trio.open_nursery() as nursery:
                self.servers = servers
                for order, (op, rng) in enumerate(zip(s.operators, op_rngs, strict=True)):
                    nursery.start_soon(self.operator, op, rng, order)
                nursery.start_soon(self.arrivals, arrivals, visitor_rngs, nursery.start_soon)
                await self.sleep_until(s.duration)
                self.trace.add(self.now(), "end")
                nursery.cancel_scope.cancel()
                servers.cancel_scope.cancel()
        self.progress.done()

    async def arrivals(
        self,
        arrivals: list[tuple[float, int]],
        rngs: list[random.Random],
        spawn: Callable[..., Any],
    ) -> None:
        for n, ((t, service), rng) in enumerate(zip(arrivals, rngs, strict=True)):
            await self.sleep_until(t)
            self.progress.update(t)
            spawn(self.visitor, n + 1, service, rng)

    # -- visitors -------------------------------------------------------------------------------

    async def visitor(self, n: int, service: int, rng: random.Random) -> None:
        s = self.scenario
        v = s.visitors
        patience = v.patience.sample(rng) if v.patience else None
        n_messages = rng.randint(v.messages[0], v.messages[1])
        thinks = [v.think_time.sample(rng) if v.think_time else 0.0 for _ in range(n_messages)]
        answers_survey = rng.random() < v.survey_share
        rating = rng.randint(1, 5)
        arrived = self.now()
        self.trace.add(arrived, "start", visitor=n, service=service)
        plan = self.bot_at(service)
        async with self.open_conn("/ws/visitor") as c:
            await c.send("start", service_id=service, visitor={"name": f"Visitor {n}"})
            frame = await c.recv()
            while frame["type"] != "started":
                frame = await c.recv()
            cid = frame["conversation_id"]
            frame = await c.recv()
            # Where the wait for an operator starts: the arrival, or the bot's hand-off.
            since = arrived
            handoff: dict[str, Any] = {}  # the hand-off node, in the events of bot visitors
            if plan is not None:
                self.trace.add(
                    self.now(), "bot_start", visitor=n, service=service, id=cid, bot=plan.bot.id
                )
                left_bot = await self.talk_to_bot(c, n, service, cid, rng, plan, frame)
                if left_bot is None:
                    return  # finished by the bot, or the visitor dropped out there
                frame, node = left_bot
                since = self.now()
                handoff = {"handoff": node}
            if frame["type"] == "out_of_hours":
                self.trace.add(
                    self.now(), "out_of_hours", visitor=n, service=service, id=cid, **handoff
                )
                return
            hint = None if plan is None else plan.handoff_group(handoff["handoff"])
            group = self.queue_group(cid, service, hint)
            # What the visitor was told to expect when they joined (null: unknown), to set
            # against the wait they had (the report's `estimates`).
            estimate = frame.get("estimated_wait")
            self.trace.add(
                self.now(),
                "queued",
                visitor=n,
                service=service,
                id=cid,
                group=group,
                position=frame.get("position"),
                estimate=estimate,
                **handoff,
            )
            ended = trio.Event()
            assigned = trio.Event()
            #: Assigned, or ended by the server while waiting (its queue timeout).
            settled = trio.Event()
            state: dict[str, Any] = {"group": group, "left": False}

            def abandoned(**why: Any) -> None:
                self.trace.add(
                    self.now(),
                    "abandoned",
                    visitor=n,
                    service=service,
                    id=cid,
                    group=state["group"],
                    wait=round(self.now() - since, 3),
                    **why,
                )

            async def reader() -> None:
                while True:
                    f = await c.recv()
                    kind = f["type"]
                    if kind == "assigned":
                        g = f["conversation"].get("group_id")
                        self.trace.add(
                            self.now(),
                            "assigned",
                            visitor=n,
                            service=service,
                            id=cid,
                            group=g,
                            operator=f["operator"]["id"],
                            wait=round(self.now() - since, 3),
                        )
                        state["group"] = g
                        assigned.set()
                        settled.set()
                    elif kind == "transferred":
                        to = f["to"]
                        self.trace.add(
                            self.now(),
                            "requeued",
                            visitor=n,
                            service=service,
                            id=cid,
                            group=to.get("id"),
                            reason=f["reason"],
                        )
                    elif kind == "ended":
                        if not assigned.is_set() and not state["left"]:
                            # The server gave up waiting for an operator (the service's queue
                            # timeout): the visitor is abandoned as much as one who leaves.
                            abandoned(by=f["by"])
                        ended.set()
                        settled.set()
                        state["ended_by"] = f["by"]
                    elif kind == "survey":
                        if answers_survey:
                            await c.send("survey", answers={"rating": rating})
                        else:
                            await c.send("survey_skip")
                    elif kind == "error" and f.get("code") == "invalid_survey":
                        await c.send("survey_skip")
                    elif kind == "closed":
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                if patience is not None:
                    with trio.move_on_after(patience):
                        await settled.wait()
                    if not settled.is_set():
                        state["left"] = True
                        await c.send("end")
                        abandoned()
                        return_after_close = True
                    else:
                        return_after_close = False
                else:
                    return_after_close = False
                if not return_after_close:
                    await settled.wait()
                    for k, think in enumerate(thinks if assigned.is_set() else ()):
                        with trio.move_on_after(think):
                            await ended.wait()
                        if ended.is_set():
                            break
                        await c.send("message", client_id=f"v{k}", text=f"question {k + 1}")
                    await ended.wait()

    def bot_at(self, service: int) -> BotPlan | None:
        """How visitors behave in the bot that a conversation of ``service`` starting now meets
        (None: it meets none), by the server's own rule (``Directory.bot_for``)."""
        s = self.scenario
        directory = s.config.directory
        bot = directory.bot_for(directory.services[service], self.moment())
        return None if bot is None else s.bot_plans[bot.id]

    def moment(self) -> datetime:
        """Now, as the server's clock reads it."""
        return self.scenario.local(self.now())

    async def handoff_node(
        self, cid: str, plan: BotPlan, said: str | None, last: tuple[str, str | None] | None
    ) -> str | None:
        """The node where the bot let a conversation go, to a queue or out of hours: a hand-off
        node, or ``@person`` (the visitor asked for one). Read in the store (observed; never
        changes the run), as a hand-off says nothing when it has no text, nor when nothing is
        open."""
        conv = await self.store.load_conversation(cid)  # a dict look-up: no checkpoint
        node = None if conv is None or conv.bot is None else conv.bot.node
        return node if plan.handoff_group(node) is not None else PERSON

    async def talk_to_bot(
        self,
        c: Conn,
        n: int,
        service: int,
        cid: str,
        rng: random.Random,
        plan: BotPlan,
        frame: dict[str, Any],
    ) -> tuple[dict[str, Any], str | None] | None:
        """Visitor ``n``'s time in the bot, from its first frame: each question answered as
        ``plan`` says, after a think time. Returns the frame that ends it, ``queued`` (handed
        to a group) or ``out_of_hours`` (nothing open), with the hand-off node (``@person`` when
        the visitor asked for a person; see :meth:`handoff_node`); None when the conversation
        ended in the bot (finished by it, or the visitor dropped out there).

        A visitor sent back to a question by a closed group does not choose again what led
        there: another option of a menu (they leave when none is left), and at an ask they
        leave."""
        trace = self.trace
        deadline = None if plan.patience is None else self.now() + plan.patience.sample(rng)
        said: str | None = None  # the node of the bot's last frame
        asked: str | None = None  # the question waiting for an answer
        last: tuple[str, str | None] | None = None  # the last answer: question, option
        avoid: dict[str, set[str]] = {}  # per question, what led to a closed group
        why: str | None = None  # why the visitor is leaving, once they are
        replies = 0
        while True:
            kind = frame["type"]
            if kind == "bot":
                node = frame["node"]
                question = "options" in frame or "input" in frame
                trace.add(self.now(), "bot", visitor=n, id=cid, node=node, question=question)
                closed = plan.handoff_group(said)
                if question and closed is not None and last is not None:
                    # A hand-off to a group its schedule keeps closed: back to the question.
                    trace.add(
                        self.now(), "group_closed", visitor=n, id=cid, node=said, group=closed
                    )
                    avoid.setdefault(last[0], set()).add(last[1] or "")
                said = node
                if question:
                    asked = node
                    action = plan.questions[node].decide(rng, n, frozenset(avoid.get(node, ())))
                    think, doing = action.think, str(action.kind)
                    if deadline is not None and self.now() + think >= deadline:
                        think, doing = max(0.0, deadline - self.now()), "patience"
                    if doing == "silent":
                        why = "silent"  # the bot's inactivity will end the chat
                    else:
                        # Thinking; the bot may give up meanwhile (its inactivity).
                        early: dict[str, Any] | None = None
                        with trio.move_on_after(think):
                            while early is None:
                                got = await c.recv()
                                if got["type"] not in ("ack", "bot_reply"):
                                    early = got
                        if early is not None:
                            frame = early
                            continue
                        if doing != "answer":
                            why = "left" if doing == "leave" else "patience"
                            await c.send("end")
                        else:
                            replies += 1
                            answer: dict[str, Any] = (
                                {"option": action.option}
                                if action.option is not None
                                else {"text": action.text}
                            )
                            await c.send("bot_reply", client_id=f"b{replies}", **answer)
                            last = (node, action.option)
                            trace.add(
                                self.now(),
                                "bot_reply",
                                visitor=n,
                                id=cid,
                                node=node,
                                **(
                                    {"option": action.option}
                                    if action.option is not None
                                    else {"valid": action.valid}
                                ),
                            )
            elif kind in ("queued", "out_of_hours"):
                return frame, await self.handoff_node(cid, plan, said, last)
            elif kind == "ended":
                if frame["by"] == "bot":
                    trace.add(
                        self.now(), "bot_ended", visitor=n, service=service, id=cid, node=said
                    )
                else:
                    # ``slow``: the bot gave up on a visitor who was still thinking.
                    trace.add(
                        self.now(),
                        "bot_dropped",
                        visitor=n,
                        service=service,
                        id=cid,
                        node=asked,
                        by=frame["by"],
                        why=why or "slow",
                    )
                while (await c.recv())["type"] != "closed":
                    pass
                return None
            elif kind == "error":
                raise ReplyRefused(f"visitor {n}: the bot refused an answer: {frame}")
            frame = await c.recv()

    # -- operators ------------------------------------------------------------------------------

    async def operator(self, op: Operator, rng: random.Random, order: int = 0) -> None:
        # Operators whose shifts name the same minute act in scenario order, a microsecond
        # apart: trio wakes tasks sleeping until one instant in an order of its own (by object
        # address), which differs from one process to the next.
        def at(offset: float) -> float:
            return offset + order * SHIFT_STAGGER

        await self.sleep_until(at(op.login))
        held: dict[str, trio.CancelScope] = {}
        idle = trio.Event()
        idle.set()
        drop = trio.CancelScope()
        with drop:
            async with self.open_conn("/ws/operator") as c:
                await c.send("login", token=op.token)
                while (frame := await c.recv())["type"] != "welcome":
                    if frame["type"] == "error":
                        raise LoginRefused(
                            f"operator {op.id}: login refused: "
                            f"{frame.get('code')}: {frame.get('message')}"
                        )
                self.trace.add(self.now(), "login", operator=op.id, groups=list(op.groups))
                await c.send("status", status="available")
                self.trace.add(self.now(), "available", operator=op.id)

                def release(cid: str) -> None:
                    if cid in held:
                        held.pop(cid).cancel()
                    if not held and not idle.is_set():
                        self.trace.add(self.now(), "idle", operator=op.id)
                        idle.set()

                async def handle(cid: str, nursery: trio.Nursery) -> None:
                    await trio.sleep(op.handle_time.sample(rng))
                    if cid in held:
                        held.pop(cid)
                        self.trace.add(self.now(), "ended", id=cid, operator=op.id)
                        await c.send("end", conversation_id=cid)
                        release(cid)

                async def reply(cid: str, k: int) -> None:
                    await trio.sleep(op.reply_delay)
                    if cid in held:
                        await c.send(
                            "message",
                            conversation_id=cid,
                            client_id=f"o{k}",
                            text="Let me check that for you.",
                        )

                async def reader(nursery: trio.Nursery) -> None:
                    nonlocal idle
                    replies = 0
                    while True:
                        f = await c.recv()
                        kind = f["type"]
                        if kind == "offer":
                            await c.send("accept", conversation_id=f["conversation_id"])
                        elif kind == "assigned":
                            cid = f["conversation_id"]
                            if cid not in held:
                                scope = trio.CancelScope()
                                held[cid] = scope
                                if idle.is_set():
                                    idle = trio.Event()
                                self.trace.add(self.now(), "busy", operator=op.id, load=len(held))
                                nursery.start_soon(self._scoped, scope, handle, cid, nursery)
                        elif kind == "message" and f["author"]["kind"] == "visitor":
                            cid = f["conversation_id"]
                            if cid in held:
                                replies += 1
                                nursery.start_soon(reply, cid, replies)
                        elif kind in ("ended", "transferred"):
                            release(f["conversation_id"])

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader, nursery)
                    for start, end in op.pauses:
                        if end <= start or start >= op.logout:
                            continue
                        await self.sleep_until(at(start))
                        await c.send("status", status="paused")
                        self.trace.add(self.now(), "paused", operator=op.id)
                        await self.sleep_until(at(min(end, op.logout)))
                        if end < op.logout:
                            await c.send("status", status="available")
                            self.trace.add(self.now(), "available", operator=op.id)
                    await self.sleep_until(at(op.logout))
                    if op.leave == "drop":
                        self.trace.add(self.now(), "logout", operator=op.id, held=len(held))
                        drop.cancel()
                    await c.send("status", status="paused")
                    self.trace.add(self.now(), "paused", operator=op.id)
                    await idle.wait()
                    self.trace.add(self.now(), "logout", operator=op.id, held=0)
                    nursery.cancel_scope.cancel()

    @staticmethod
    async def _scoped(scope: trio.CancelScope, fn: Callable[..., Any], *args: Any) -> None:
        with scope:
            await fn(*args)


#: What a real-time agent may run into on a real server: recorded as ``error`` events.
AGENT_ERRORS = (
    OSError,
    HandshakeError,
    ConnectionClosed,
    LoginRefused,
    ReplyRefused,
    trio.BrokenResourceError,
)


class RealSimulation(Simulation):
    """The same agents against a running server over TCP, in real time (not deterministic:
    arrivals and draws are seeded, but the server's and the network's timing are not)."""

    def __init__(
        self, scenario: Scenario, seed: int, base_url: str, wall_cap: float, progress: bool = False
    ) -> None:
        super().__init__(scenario, seed, progress)
        self.base_url = base_url.rstrip("/")
        self.wall_cap = wall_cap
        self.progress = Progress(scenario.duration, progress, label="real")
        self.trace.mode = "real-time"
        self.trace.target = self.base_url

    @asynccontextmanager
    async def _real_conn(self, path: str) -> AsyncIterator[Conn]:
        async with open_websocket_url(
            self.base_url + path, connect_timeout=10, disconnect_timeout=2
        ) as ws:
            yield Conn(ws)

    def open_conn(self, path: str) -> Any:
        return self._real_conn(path)

    def queue_group(self, cid: str, service: int, handoff: int | None = None) -> int | None:
        # No hub to look into: the bot's hand-off group, or the service's first linked group
        # (where it queues by default).
        if handoff is not None:
            return handoff
        links = self.scenario.config.directory.services[service].links
        return links[0].group if links else None

    def moment(self) -> datetime:
        # The server's clock is the real one.
        return datetime.now(UTC)

    async def handoff_node(
        self, cid: str, plan: BotPlan, said: str | None, last: tuple[str, str | None] | None
    ) -> str | None:
        # No store to look into: the hand-off that spoke last, "talk to a person", or where
        # the last answer leads when that is a hand-off (None: not known).
        if plan.handoff_group(said) is not None:
            return said
        if last is None:
            return None
        if last[1] == PERSON:
            return PERSON
        node = plan.bot.node(last[0])
        if isinstance(node, MenuNode):
            target = next((o.next for o in node.options if o.id == last[1]), None)
        else:
            target = node.next if isinstance(node, AskNode) else None
        return target if plan.handoff_group(target) is not None else None

    async def _guard(self, who: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await fn(*args)
        except AGENT_ERRORS as exc:
            cause = exc.__cause__ or exc.__context__
            detail = str(exc) or (f"{type(cause).__name__}: {cause}" if cause else "")
            message = f"{who}: {type(exc).__name__}: {detail}"
            self.trace.errors.append(message)
            self.trace.add(self.now(), "error", who=who, message=message[:300])

    async def main(self) -> None:
        s = self.scenario
        master = random.Random(self.seed)
        arrivals = s.arrival_times(random.Random(master.getrandbits(64)))
        op_rngs = [random.Random(master.getrandbits(64)) for _ in s.operators]
        visitor_rngs = [random.Random(master.getrandbits(64)) for _ in arrivals]
        self.t0 = trio.current_time()
        run_for = min(s.duration, self.wall_cap)
        with trio.move_on_after(self.wall_cap) as cap:
            async with trio.open_nursery() as nursery:
                self.servers = nursery  # unused in real time (the server is elsewhere)
                for op, rng in zip(s.operators, op_rngs, strict=True):
                    nursery.start_soon(self._guard, f"operator {op.id}", self.operator, op, rng)

                def spawn(fn: Callable[..., Any], n: int, *args: Any) -> None:
                    nursery.start_soon(self._guard, f"visitor {n}", fn, n, *args)

                nursery.start_soon(self.arrivals, arrivals, visitor_rngs, spawn)
                await self.sleep_until(run_for)
                self.trace.add(self.now(), "end")
                nursery.cancel_scope.cancel()
        if cap.cancelled_caught or run_for < s.duration:
            self.trace.capped = True
            if not self.trace.events or self.trace.events[-1].kind != "end":
                self.trace.add(self.now(), "end")
        self.progress.done()


async def drive_real(
    scenario: Scenario,
    base_url: str,
    seed: int | None = None,
    wall_cap: float | None = None,
    progress: bool = False,
) -> Trace:
    """Drive the server at ``base_url`` (``ws://host:port``) with the scenario's agents, in
    real time, for at most the scenario's duration and ``wall_cap`` seconds of wall clock
    (default: duration + 60). Runs in the caller's trio run."""
    cap = scenario.duration + 60 if wall_cap is None else wall_cap
    sim = RealSimulation(scenario, scenario.seed if seed is None else seed, base_url, cap, progress)
    wall = time.perf_counter()
    await sim.main()
    sim.trace.wall = time.perf_counter() - wall
    return sim.trace


def simulate_real(
    scenario: Scenario,
    base_url: str,
    seed: int | None = None,
    wall_cap: float | None = None,
    progress: bool = False,
) -> Trace:
    """:func:`drive_real` in its own ``trio.run`` (the normal clock)."""
    trace: Trace = trio.run(drive_real, scenario, base_url, seed, wall_cap, progress)
    return trace


def simulate(
    scenario: Scenario,
    seed: int | None = None,
    progress: bool = False,
    store: MemoryStore | None = None,
) -> Trace:
    """Run ``scenario`` under ``MockClock(autojump_threshold=0)``; return its trace. ``store``:
    where the server keeps its data (a new memory store by default), to read it afterwards."""
    sim = Simulation(scenario, scenario.seed if seed is None else seed, progress, store)
    wall = time.perf_counter()
    trio.run(sim.main, clock=trio.testing.MockClock(autojump_threshold=0))
    sim.trace.wall = time.perf_counter() - wall
    return sim.trace
