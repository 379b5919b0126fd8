"""Test clients that speak Omni's websocket protocol, over TCP or over in-memory streams.

Rules for tests (after trio-websocket's): every wait has a deadline (``fail_after``), frames are
compared as decoded JSON, and a test states exactly which frames it expects in which order —
only live queue positions (state, not history) may be skipped.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import trio
import trio.testing
from trio_websocket import WebSocketConnection, open_websocket_url, wrap_client_stream

from omni.config import Config, parse_config
from omni.domain.configuration import ConfigItem, build_directory, item_of
from omni.domain.conversation import Conversation, Status, Visitor
from omni.domain.model import ApiToken, Role, hash_token
from omni.gateway.server import Gateway
from omni.settings import ONE_ADDRESS_CROWD

TIMEOUT = 10.0

#: The operators' console tokens of :func:`make_config` (configured secrets need 128 bits).
TOK_ALICE = "tok-alice-Vq7Lx2ZpK9mR4wTs"
TOK_BRUNO = "tok-bruno-Hc5Jd8Nf1Gk6Py0U"
TOK_CARLA = "tok-carla-Ee3Rt7Yu1Io9Pa4S"

ALWAYS_OPEN = {
    "id": "always",
    "timezone": "UTC",
    "weekly": {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
}


def make_config(**server: Any) -> Config:
    """Two services on always-open schedules, three groups, three operators (tokens
    :data:`TOK_ALICE`, :data:`TOK_BRUNO`, :data:`TOK_CARLA`)."""
    raw: dict[str, Any] = {
        # The tests' clients are programs, not browsers: they send no Origin unless a test
        # says so.
        "server": {
            "host": "127.0.0.1",
            "ws_port": 0,
            "http_port": 0,
            "native_visitors": True,
            "native_operators": True,
            # Virtual-time tests open their connections at the start and use them later, and
            # leave frames unread for long stretches — which stops a trio-websocket client from
            # reading pings too (tests/hardening tests both limits).
            **server,
            "limits": {"hello_timeout": 86_400, "ping_interval": None, **server.get("limits", {})},
        },
        "schedules": [
            ALWAYS_OPEN,
            {"id": "never", "timezone": "America/Sao_Paulo", "weekly": {}},
        ],
        "groups": [
            {"id": 1, "name": "Support"},
            {"id": 2, "name": "Billing"},
            {"id": 3, "name": "Night"},
        ],
        "services": [
            {
                "id": 25,
                "name": "Support",
                "schedule": "always",
                "greeting": "Hi {visitor}, {operator} here.",
                "closing_message": "Bye!",
                "avatar": {"name": "Ana", "image": "/ana.png"},
                "links": [{"group": 1}],
            },
            {
                "id": 26,
                "name": "Closed service",
                "schedule": "never",
                "out_of_hours_message": "We are closed.",
                "links": [{"group": 3}],
            },
            {
                "id": 27,
                "name": "No survey",
                "schedule": "always",
                "survey": "none",
                "closing_message": "See you.",
                "links": [{"group": 2}],
            },
        ],
        "operators": [
            {"id": 1, "name": "Alice", "groups": [1, 2], "capacity": 2, "token": TOK_ALICE},
            {"id": 2, "name": "Bruno", "groups": [2], "capacity": 1, "token": TOK_BRUNO},
            {"id": 3, "name": "Carla", "groups": [1], "capacity": 1, "token": TOK_CARLA},
        ],
    }
    return parse_config(raw)


#: Limits no test of a feature meets: for the tests that flood a connection on purpose.
UNLIMITED = {
    **ONE_ADDRESS_CROWD,
    "messages_per_second": 1_000_000,
    "message_burst": 1_000_000,
    "typing_per_second": 1_000_000,
    "typing_burst": 1_000_000,
}

#: The instant the tests' conversations are made around (a Wednesday).
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_conversation(
    n: int = 1,
    status: Status = Status.QUEUED,
    *,
    at: datetime | None = None,
    visitor: Visitor | str | None = None,
    **changes: Any,
) -> Conversation:
    """Conversation ``n`` as the store keeps it: id ``c<n>``, ticket ``2026-<n>``, service 25,
    group 1, created (and waiting since) ``at`` — by default ``n`` seconds after :data:`T0` —
    visitor ``Visitor <n>`` (a name, or a whole :class:`Visitor`); ``changes`` set any other
    field (``operator_id=1``, ``answered_at=...``)."""
    at = at if at is not None else T0 + timedelta(seconds=n)
    if not isinstance(visitor, Visitor):
        visitor = Visitor(name=visitor or f"Visitor {n}")
    conv = Conversation(
        id=f"c{n}",
        ticket=f"2026-{n:06d}",
        service_id=25,
        token_hash=f"hash-{n}",
        visitor=visitor,
        status=status,
        group_id=1,
        created_at=at,
        waiting_since=at,
    )
    for key, value in changes.items():
        if not hasattr(conv, key):
            raise AttributeError(f"Conversation has no field {key!r}")
        setattr(conv, key, value)
    return conv


def api_token(
    id: str, token: str, role: Role = Role.ADMIN, operator_id: int | None = None
) -> ConfigItem:
    """An API token resource, stored as the server keeps it (hashed)."""
    return item_of(
        "api_tokens",
        ApiToken(
            id=id, name=id.title(), role=role, operator_id=operator_id, token_hash=hash_token(token)
        ),
    )


def with_items(config: Config, *items: ConfigItem) -> Config:
    """``config`` with more resources (its directory rebuilt)."""
    every = [*config.items, *items]
    return Config(config.server, every, build_directory(every))


def with_service(config: Config, service_id: int, change: Any) -> Config:
    """``config`` with ``change(body)`` applied to one service's stored body."""
    for item in config.items:
        if item.kind == "services" and item.key == str(service_id):
            change(item.body)
    return Config(config.server, config.items, build_directory(config.items))


class Client:
    """One websocket client. ``expect`` returns the next frame of a type, skipping only
    ``queued`` position updates unless those are what is expected."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.last_seq = 0
        self.received: list[dict[str, Any]] = []

    async def send(self, type: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"type": type, **fields}))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
        self.received.append(frame)
        if isinstance(frame.get("seq"), int):
            self.last_seq = max(self.last_seq, frame["seq"])
        return frame

    async def expect(self, type: str, timeout: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == "queued" and type != "queued":
                continue
            assert frame["type"] == type, f"expected {type!r}, got {frame}"
            for key, value in match.items():
                assert frame.get(key) == value, f"expected {key}={value!r} in {frame}"
            return frame

    async def until(self, type: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Skip frames up to the next one of ``type`` (where the ones before don't matter)."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == type:
                return frame

    async def expect_nothing(self, seconds: float = 0.2) -> None:
        """No frame within ``seconds``: for virtual time (MockClock), where it means "nothing
        until everything is idle". On real time use :meth:`expect_quiet`."""
        with trio.move_on_after(seconds):
            frame = json.loads(await self.ws.get_message())
            raise AssertionError(f"expected no frame, got {frame}")

    async def expect_quiet(self, *types: str, timeout: float = TIMEOUT) -> None:
        """Nothing the server has sent is still to come — no frame at all, or none of
        ``types`` (frames of other types before it are read and dropped): a ping's pong comes
        first. The server answers a ping after everything it delivered to this connection
        before, so this is a barrier, not a wait; frames an actor has yet to produce are not
        covered (settle the actors first)."""
        await self.send("ping")
        while (frame := await self.recv(timeout))["type"] != "pong":
            assert types and frame["type"] not in types, f"expected no {types or 'frame'}: {frame}"

    async def close(self) -> None:
        await self.ws.aclose()


@asynccontextmanager
async def connect_tcp(url: str, origin: str | None = None) -> AsyncIterator[Client]:
    """A client over TCP; ``origin`` is sent as the handshake's Origin header."""
    headers = [(b"Origin", origin.encode())] if origin else None
    async with open_websocket_url(url, extra_headers=headers) as ws:
        yield Client(ws)


_memory_clients = itertools.count(1)


@asynccontextmanager
async def connect_memory(
    gateway: Gateway, path: str, origin: str | None = None, client: str | None = None
) -> AsyncIterator[Client]:
    """A client wired to ``gateway`` through ``trio.testing.memory_stream_pair`` (no socket);
    ``origin`` is sent as the handshake's Origin header, as a browser page would; ``client`` is
    the address it counts as coming from (by default one of its own)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    headers = [(b"Origin", origin.encode())] if origin else None
    client = client or f"memory-{next(_memory_clients)}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway.serve_stream, server_stream, client)
        ws = await wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "localhost",
            path,
            extra_headers=headers,
        )
        client = Client(ws)
        try:
            yield client
        finally:
            with trio.move_on_after(1):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def login(client: Client, token: str, available: bool = True) -> dict[str, Any]:
    await client.send("login", token=token)
    welcome = await client.expect("welcome")
    if available:
        await client.send("status", status="available")
        await client.expect("status", status="available")
    return welcome


async def start(
    client: Client, service_id: int = 25, name: str = "Vera", **visitor: Any
) -> dict[str, Any]:
    await client.send("start", service_id=service_id, visitor={"name": name, **visitor})
    return await client.expect("started")


async def start_with(client: Client, service_id: int = 27, **fields: Any) -> dict[str, Any]:
    """Send ``start`` with exactly ``fields``; the server's answer, whatever it is."""
    await client.send("start", service_id=service_id, **fields)
    return await client.recv()


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0
) -> None:
    """Wait until ``condition`` holds, checking every 10 ms, for at most ``seconds``.

    Only for what the test cannot wait on directly — work on another thread or process (an
    SMTP server, PostgreSQL, the outbox worker's thread). Inside trio, wait on the frame or
    the event itself."""
    with trio.fail_after(seconds):
        while True:
            outcome = condition()
            if not isinstance(outcome, bool):
                outcome = await outcome
            if outcome:
                return
            await trio.sleep(0.01)


@asynccontextmanager
async def open_memory_gateway(
    config: Config | None = None, *, epoch: Any = None, store: Any = None, **settings: Any
) -> AsyncIterator[Gateway]:
    """A hub and gateway on the memory store (``store``: one a previous run used, to restart),
    reached only through in-memory streams: with ``MockClock(autojump_threshold=0)``
    everything runs in virtual time."""
    from datetime import UTC, datetime

    from omni.actors.hub import open_hub
    from omni.clock import Clock
    from omni.entropy import SeededEntropy
    from omni.server import hub_settings
    from omni.store.memory import MemoryStore

    config = config or make_config(**settings)
    clock = Clock(epoch or datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    async with open_hub(
        config.directory,
        store if store is not None else MemoryStore(),
        clock,
        entropy=SeededEntropy(1),
        settings=hub_settings(config.server),
    ) as hub:
        yield Gateway(hub, config.server)


class Relay:
    """A TCP relay to a server's port on 127.0.0.1, that can play dead: :meth:`freeze` stops it
    forwarding anything either way while both sockets stay open — a peer gone without a FIN —
    :meth:`sever` closes every connection it carries (new ones are relayed again), and
    :meth:`cut` does that and closes new ones at once until :meth:`restore` (the network is
    down). ``target`` may be set after the relay is listening (a server configured with its
    URL)."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.url = ""
        self.port = 0
        self._frozen = False
        self._down = False
        self._links: list[trio.CancelScope] = []

    def freeze(self) -> None:
        self._frozen = True

    def sever(self) -> None:
        for link in self._links:
            link.cancel()
        self._links.clear()

    def cut(self) -> None:
        self._down = True
        self.sever()

    def restore(self) -> None:
        self._down = False

    async def link(self, client: trio.SocketStream) -> None:
        assert self.target is not None, "the relay's target port is not set"
        if self._down:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._links.append(scope)
            server = await trio.open_tcp_stream("127.0.0.1", self.target)
            async with client, server, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                nursery.start_soon(self._pump, server, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, link: trio.CancelScope
    ) -> None:
        try:
            while True:
                data = await source.receive_some(65_536)
                if self._frozen:
                    await trio.sleep_forever()  # holds what it read, and reads no more
                if not data:
                    break
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        link.cancel()  # one side is gone: so is the other


@asynccontextmanager
async def open_relay(target: int | None = None) -> AsyncIterator[Relay]:
    """A :class:`Relay` listening on a free port of 127.0.0.1 (``relay.url``: ``ws://…``)."""
    proxy = Relay(target)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy.link, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        proxy.url = f"ws://127.0.0.1:{proxy.port}"
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
