"""Every abuse limit of ``[server.limits]``, against a real ``omni serve`` (hardening/serve.py).

One test per limit (two where two settings work together): each sets the limit low, attacks the
server the way a hostile visitor would — over real sockets on 127.0.0.1, raw websocket frames and
a TCP relay that plays dead where a library would be too polite — and asserts what the server did:
the HTTP status, ``Retry-After`` and body of a refused handshake, the error frames with their
codes, ``client_id`` and ``retry_after``, the close codes and reasons, and what was stored (read
back through the admin API). No server may log a traceback (:func:`omni`).

Every wait has a deadline and every attack loop a bound on its count. The clients are programs,
not browsers: the servers allow connections without an ``Origin`` (``native_visitors`` and
``native_operators``).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tests.hardening.serve import ADMIN, ALICE, Served, serving
from tests.support import Client, Relay, login, open_relay, start, start_with

Frame = dict[str, Any]
Header = tuple[bytes, bytes]

#: Lines of every test's ``[server]`` table: the test clients send no ``Origin``.
NATIVE = "native_visitors = true\nnative_operators = true"

#: Deadline of a handshake, and of closing a connection from the test's side.
HANDSHAKE_TIMEOUT = 5.0


# -- the server ---------------------------------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(_toml, value)) + "]"
    raise TypeError(f"no TOML for {value!r}")


@asynccontextmanager
async def omni(
    tmp_path: Path,
    postgres_dsn: str,
    limits: Mapping[str, object] | None = None,
    **server: object,
) -> AsyncIterator[Served]:
    """``omni serve`` with ``limits`` as ``[server.limits]`` and ``server`` as more ``[server]``
    keys; once it has stopped, its log must hold no traceback."""
    lines = [NATIVE, *(f"{key} = {_toml(value)}" for key, value in server.items())]
    if limits:
        table = ", ".join(f"{key} = {_toml(value)}" for key, value in limits.items())
        lines.append(f"limits = {{ {table} }}")
    async with serving(tmp_path, postgres_dsn, server="\n".join(lines)) as served:
        yield served
    assert "Traceback" not in served.log(), served.log()


def visitor_url(served: Served) -> str:
    return f"{served.ws_url}/ws/visitor"


def operator_url(served: Served) -> str:
    return f"{served.ws_url}/ws/operator"


async def api(served: Served, path: str, **params: str | int) -> Any:
    """``GET`` an admin API path with the administrator's token; the JSON it answers."""
    async with httpx.AsyncClient(
        base_url=served.http_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def stored_conversation(served: Served, conversation_id: str) -> Frame:
    found: Frame = (await api(served, f"/api/v1/conversations/{conversation_id}"))["conversation"]
    return found


async def stored_visitor_texts(served: Served, conversation_id: str) -> list[str]:
    """The texts of the visitor's stored messages, in order (the admin API's transcript)."""
    transcript = await api(served, f"/api/v1/conversations/{conversation_id}/transcript")
    return [
        event["text"]
        for event in transcript["events"]
        if event["type"] == "message" and event["author"]["kind"] == "visitor"
    ]


# -- clients ------------------------------------------------------------------------------------


def forwarded(address: str) -> Header:
    return (b"X-Forwarded-For", address.encode())


@asynccontextmanager
async def connect(url: str, *headers: Header) -> AsyncIterator[Client]:
    """A trio-websocket client (it answers the server's pings by itself while it runs)."""
    async with open_websocket_url(
        url,
        extra_headers=list(headers),
        connect_timeout=HANDSHAKE_TIMEOUT,
        disconnect_timeout=HANDSHAKE_TIMEOUT,
    ) as ws:
        yield Client(ws)


async def handshake(url: str, *headers: Header) -> ConnectionRejected | None:
    """One handshake, its connection closed at once: None when accepted, else the refusal."""
    try:
        async with connect(url, *headers):
            return None
    except ConnectionRejected as refusal:
        return refusal


async def refused(url: str, *headers: Header) -> ConnectionRejected:
    refusal = await handshake(url, *headers)
    assert refusal is not None, "the handshake was accepted"
    return refusal


def assert_429(refusal: ConnectionRejected, reason: str, retry_after: str) -> None:
    """A handshake refused with 429, ``Retry-After`` and the one-line reason of protocol §1."""
    assert refusal.status_code == 429, refusal
    headers = {name.decode().lower(): value.decode() for name, value in refusal.headers}
    assert headers.get("retry-after") == retry_after, headers
    assert (refusal.body or b"").startswith(f"{reason}: ".encode()), refusal.body


async def alive(client: Client) -> None:
    """The connection is open and answering: a ``ping`` gets its ``pong`` (queue positions
    aside; any other frame fails)."""
    await client.send("ping")
    await client.expect("pong", timeout=5)


async def close_of(client: Client, timeout: float = 5.0) -> tuple[list[Frame], CloseReason]:
    """Every frame until the server closes the connection, and the close code and reason."""
    frames: list[Frame] = []
    with trio.fail_after(timeout):
        while True:
            try:
                frames.append(await client.recv(timeout))
            except ConnectionClosed as closed:
                assert closed.reason is not None
                return frames, closed.reason


def assert_rate_limited(error: Frame, most: float, **fields: object) -> float:
    """A ``rate_limited`` refusal telling to wait more than nothing and at most ``most``
    seconds; the wait."""
    assert error["type"] == "error" and error["code"] == "rate_limited", error
    for key, value in fields.items():
        assert error.get(key) == value, error
    retry_after = error["retry_after"]
    assert isinstance(retry_after, int | float) and 0 < retry_after <= most, error
    return float(retry_after)


async def answer(client: Client) -> Frame:
    """The next ``ack`` or ``error`` (queue positions aside; anything else fails)."""
    while (frame := await client.recv())["type"] == "queued":
        pass
    assert frame["type"] in ("ack", "error"), frame
    return frame


async def assigned_to_alice(vera: Client, alice: Client) -> str:
    """Vera, just started on service 25, taken by Alice and greeted: the conversation's id."""
    await login(alice, ALICE)
    offer = await alice.until("offer")
    conversation_id: str = offer["conversation"]["id"]
    await alice.send("accept", conversation_id=conversation_id)
    for side in (alice, vera):
        await side.until("assigned")
        greeting = await side.expect("message")  # the default greeting, from Alice
        assert greeting["author"]["kind"] == "operator", greeting
    return conversation_id


class RawClient:
    """A websocket client one frame at a time (wsproto over TCP), for what trio-websocket never
    sends: a message in fragments."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.protocol = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.protocol.send(event))

    async def receive(self) -> Event:
        while not self._events:
            data = await self.stream.receive_some(65_536)
            assert data, "the server closed the TCP connection without a close frame"
            self.protocol.receive_data(data)
            self._events.extend(self.protocol.events())
        return self._events.popleft()


@asynccontextmanager
async def raw_connect(url: str) -> AsyncIterator[RawClient]:
    address = urlsplit(url)
    assert address.hostname and address.port
    async with await trio.open_tcp_stream(address.hostname, address.port) as stream:
        client = RawClient(stream)
        await client.send(Request(host=address.netloc, target=address.path))
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            accepted = await client.receive()
        assert isinstance(accepted, AcceptConnection), accepted
        yield client


@asynccontextmanager
async def relay(served: Served) -> AsyncIterator[Relay]:
    port = urlsplit(served.ws_url).port
    assert port is not None
    async with open_relay(port) as proxy:
        yield proxy


# -- 1. connections per client address ----------------------------------------------------------


async def test_open_connections_per_address(tmp_path: Path, postgres_dsn: str) -> None:
    async with (
        omni(tmp_path, postgres_dsn, {"connections_per_ip": 5}) as served,
        AsyncExitStack() as held,
    ):
        url = visitor_url(served)
        clients = [await held.enter_async_context(connect(url)) for _ in range(5)]
        for client in clients:
            await alive(client)
        # The sixth is refused, on either endpoint: the count is the address's.
        assert_429(await refused(url), "connections", "60")
        assert_429(await refused(operator_url(served)), "connections", "60")

        # One closes: its place is free once the server has seen it go (a few tries at most;
        # no cancel scope around them, as the connection opened stays open past it).
        await clients[0].close()
        deadline = trio.current_time() + 5
        for _ in range(50):
            try:
                clients[0] = await held.enter_async_context(connect(url))
                break
            except ConnectionRejected as refusal:
                assert refusal.status_code == 429
                assert trio.current_time() < deadline
                await trio.sleep(0.05)
        else:
            raise AssertionError("a closed connection's place was never given back")
        await alive(clients[0])
        assert_429(await refused(url), "connections", "60")


# -- 2. handshakes per client address -----------------------------------------------------------


async def test_handshakes_per_address_per_second(tmp_path: Path, postgres_dsn: str) -> None:
    limits = {"handshakes_per_second": 1, "handshake_burst": 5}
    async with omni(tmp_path, postgres_dsn, limits) as served:
        url = visitor_url(served)
        began = trio.current_time()
        accepted = 0
        with trio.fail_after(5):
            for _ in range(10):
                refusal = await handshake(url)
                if refusal is not None:
                    break
                accepted += 1
        took = trio.current_time() - began
        assert refusal is not None, "no handshake was refused"
        # The burst, and what one a second added while it went (nothing, on any sane machine).
        assert 5 <= accepted <= 5 + took, (accepted, took)
        assert_429(refusal, "rate", "1")
        assert_429(await refused(url), "rate", "1")

        await trio.sleep(1)
        assert await handshake(url) is None
        assert_429(await refused(url), "rate", "1")


# -- 3. bytes of a message still arriving -------------------------------------------------------

MAX_FRAME = 16_384
PARTIAL = 32_768
FRAGMENT = 8_192


async def test_a_message_in_fragments_is_cut_off_past_partial_frame_bytes(
    tmp_path: Path, postgres_dsn: str
) -> None:
    limits = {"partial_frame_bytes": PARTIAL}
    async with omni(tmp_path, postgres_dsn, limits, max_frame_bytes=MAX_FRAME) as served:
        async with raw_connect(visitor_url(served)) as raw:
            # Exactly partial_frame_bytes in fragments, never finished: still being read. A
            # websocket ping between fragments is answered after them (frames are read in order).
            for _ in range(PARTIAL // FRAGMENT):
                await raw.send(TextMessage(data="x" * FRAGMENT, message_finished=False))
            await raw.send(Ping(payload=b"still there?"))
            with trio.fail_after(5):
                pong = await raw.receive()
            assert pong == Pong(payload=b"still there?"), pong
            # One byte more closes the connection with 1009, without an error frame. (The
            # gateway before partial_frame_bytes took 4 x max_frame_bytes: 65,536 bytes.)
            await raw.send(TextMessage(data="x", message_finished=False))
            with trio.fail_after(5):
                closed = await raw.receive()
            assert isinstance(closed, CloseConnection), closed
            assert closed.code == 1009, closed

        # A whole frame over max_frame_bytes but within partial_frame_bytes is refused, and the
        # connection stays.
        async with connect(visitor_url(served)) as vera:
            await vera.send_raw(json.dumps({"type": "ping", "pad": "x" * (MAX_FRAME + 1_000)}))
            await vera.expect("error", code="frame_too_large")
            await alive(vera)


# -- 4. new conversations per client address, and per address and service ----------------------


async def test_new_conversations_per_address_per_minute(tmp_path: Path, postgres_dsn: str) -> None:
    async with omni(tmp_path, postgres_dsn, {"conversations_per_minute": 3}) as served:
        for n in range(3):
            async with connect(visitor_url(served)) as vera:
                await start(vera, 25, name=f"Vera {n}")
        async with connect(visitor_url(served)) as vera:
            refusal = await start_with(vera, 25, visitor={"name": "Vera 3"})
            # 3 a minute: one more in 20 s.
            assert_rate_limited(refusal, 20)
            assert refusal["retry_after"] > 15, refusal
            await alive(vera)
        listing = await api(served, "/api/v1/conversations")
        names = sorted(item["visitor"]["name"] for item in listing["items"])
        assert names == ["Vera 0", "Vera 1", "Vera 2"]


async def test_new_conversations_per_address_and_service_per_minute(
    tmp_path: Path, postgres_dsn: str
) -> None:
    limits = {"conversations_per_minute": 10, "conversations_per_service_per_minute": 2}
    async with omni(tmp_path, postgres_dsn, limits) as served:
        for n in range(2):
            async with connect(visitor_url(served)) as vera:
                await start(vera, 25, name=f"Vera {n}")
        async with connect(visitor_url(served)) as vera:
            refusal = await start_with(vera, 25, visitor={"name": "Vera 2"})
            # 2 a minute for this service: one more in 30 s.
            assert_rate_limited(refusal, 30)
            assert refusal["retry_after"] > 25, refusal
            # Another service is another count.
            await start(vera, 26, name="Vera 3")
            await vera.expect("out_of_hours")
        on_25 = await api(served, "/api/v1/conversations", service_id=25)
        on_26 = await api(served, "/api/v1/conversations", service_id=26)
        assert sorted(item["visitor"]["name"] for item in on_25["items"]) == ["Vera 0", "Vera 1"]
        assert [item["visitor"]["name"] for item in on_26["items"]] == ["Vera 3"]


# -- 5. messages and typing per connection ------------------------------------------------------


async def test_messages_and_typing_per_connection(tmp_path: Path, postgres_dsn: str) -> None:
    # Defaults: messages 2/s, burst 20; typing 2/s, burst 10. The first flood earns 10 refusals
    # in a row: the connection closes at 15.
    async with omni(tmp_path, postgres_dsn, {"refusals_before_close": 15}) as served:
        async with connect(visitor_url(served)) as vera, connect(operator_url(served)) as alice:
            started = await start(vera, 25)
            conversation_id = await assigned_to_alice(vera, alice)
            await trio.sleep(0.6)  # the token `start` spent is back: both buckets are full

            # Typing: 15 at once, 10 relayed to Alice and 5 refused. A message after them is
            # answered after their refusals (frames are handled in order).
            began = trio.current_time()
            for _ in range(15):
                await vera.send("typing")
            await vera.send("message", client_id="t", text="t")
            typing_refusals = []
            while (frame := await vera.recv())["type"] != "ack":
                typing_refusals.append(frame)
            took = trio.current_time() - began
            assert frame["client_id"] == "t"
            relayed = 15 - len(typing_refusals)
            # The burst, and what 2 a second added while it went (nothing, on any sane machine).
            assert 10 <= relayed <= 10 + 2 * took, (typing_refusals, took)
            for error in typing_refusals:
                assert_rate_limited(error, 0.5)
            await trio.sleep(0.6)

            # Messages: 30 at once, 20 acknowledged and 10 refused, each naming its message.
            ids = [f"m{n:02d}" for n in range(30)]
            began = trio.current_time()
            for client_id in ids:
                await vera.send("message", client_id=client_id, text=client_id)
            answers = [await answer(vera) for _ in ids]
            took = trio.current_time() - began
            acked: list[str] = [a["client_id"] for a in answers if a["type"] == "ack"]
            refusals = [a for a in answers if a["type"] == "error"]
            assert acked[:20] == ids[:20]
            assert 20 <= len(acked) <= 20 + 2 * took, (acked, took)
            assert sorted(acked + [e["client_id"] for e in refusals]) == ids
            waits = [assert_rate_limited(error, 0.5) for error in refusals]

            # Waiting as told is enough.
            await trio.sleep(waits[-1])
            await vera.send("message", client_id="m30", text="m30")
            await vera.expect("ack", client_id="m30")

            # Alice got what was carried out, and nothing else.
            typing = 0
            texts: list[str] = []
            with trio.fail_after(5):
                while not texts or texts[-1] != "m30":
                    frame = await alice.recv()
                    typing += frame["type"] == "typing"
                    if frame["type"] == "message":
                        texts.append(frame["text"])
            assert typing == relayed
            assert texts == ["t", *acked, "m30"]

            # Persistent abuse: a flood read as it comes until refusals_before_close in a row
            # close the connection.
            async def flood() -> None:
                try:
                    for n in range(40):
                        await vera.send("message", client_id=f"f{n:02d}", text=f"f{n:02d}")
                except ConnectionClosed:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                frames, closed = await close_of(vera)
            assert (closed.code, closed.reason) == (1008, "rate_limited")
            last_ack = max((i for i, f in enumerate(frames) if f["type"] == "ack"), default=-1)
            flood_acked = [f["client_id"] for f in frames[: last_ack + 1]]
            in_a_row = frames[last_ack + 1 :]
            assert [(f["type"], f["code"]) for f in in_a_row] == [("error", "rate_limited")] * 15
            for error in in_a_row[:-1]:
                assert_rate_limited(error, 0.5)

        # Nothing lost, nothing refused stored: the conversation resumes with all it acknowledged.
        stored = await stored_visitor_texts(served, conversation_id)
        assert stored == ["t", *acked, "m30", *flood_acked]
        async with connect(visitor_url(served)) as again:
            await again.send("resume", token=started["token"], last_seq=0)
            resumed = await again.expect("resumed", status="active")
            replayed = []
            while (frame := await again.recv()).get("seq", 0) < resumed["last_seq"]:
                replayed.append(frame)
            replayed.append(frame)
        mine = [f for f in replayed if f["type"] == "message" and f["author"]["kind"] == "visitor"]
        assert [f["text"] for f in mine] == stored


# -- 6. failed console logins -------------------------------------------------------------------


async def _login_refused(desk: Client, token: str = ALICE) -> float:
    """``login`` refused with ``too_many_attempts``: the wait it gives."""
    await desk.send("login", token=token)
    error = await desk.expect("error", code="too_many_attempts")
    return float(error["retry_after"])


async def _wrong_logins(desk: Client, count: int) -> None:
    for n in range(count):
        await desk.send("login", token=f"wrong-token-{n}")
        await desk.expect("error", code="invalid_login")


async def test_failed_console_logins_make_the_address_wait_longer(
    tmp_path: Path, postgres_dsn: str
) -> None:
    limits = {"failures_before_wait": 3, "failure_wait": 1, "refusals_before_close": 100}
    async with omni(tmp_path, postgres_dsn, limits) as served:
        async with connect(operator_url(served)) as desk:
            # Three free failures; the fourth is still checked, and starts a 1 s wait that even
            # the right token must sit out.
            await _wrong_logins(desk, 4)
            wait = await _login_refused(desk)
            assert 0.5 < wait <= 1.0
            await trio.sleep(wait)
            # One more failure: the wait doubles.
            await _wrong_logins(desk, 1)
            wait = await _login_refused(desk)
            assert 1.5 < wait <= 2.0
            await trio.sleep(wait)
            welcome = await login(desk, ALICE, available=False)
            assert welcome["operator"]["name"] == "Alice"

        # A success forgets the address's failures: the free ones, then the first wait, again.
        async with connect(operator_url(served)) as desk:
            await _wrong_logins(desk, 4)
            assert 0.5 < await _login_refused(desk) <= 1.0


# -- 7. the first frame's deadline --------------------------------------------------------------


async def _says_nothing(url: str) -> None:
    async with connect(url) as idle:
        began = trio.current_time()
        frames, closed = await close_of(idle)
        took = trio.current_time() - began
    assert [(f["type"], f["code"]) for f in frames] == [("error", "idle_timeout")]
    assert (closed.code, closed.reason) == (1008, "idle_timeout")
    assert 0.9 <= took <= 2.0, took


async def _only_pings(url: str) -> None:
    async with connect(url) as pinger, trio.open_nursery() as nursery:

        async def every_fifth_of_a_second() -> None:
            try:
                for _ in range(20):
                    await pinger.send("ping")
                    await trio.sleep(0.2)
            except ConnectionClosed:
                pass

        nursery.start_soon(every_fifth_of_a_second)
        began = trio.current_time()
        frames, closed = await close_of(pinger)
        took = trio.current_time() - began
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "idle_timeout", frames
    assert len(frames) > 3 and {f["type"] for f in frames[:-1]} == {"pong"}, frames
    assert (closed.code, closed.reason) == (1008, "idle_timeout")
    assert 0.9 <= took <= 2.0, took


async def _starts_in_time(url: str) -> None:
    async with connect(url) as vera:
        await start(vera, 25)
        await trio.sleep(1.5)
        await alive(vera)


async def test_a_connection_must_start_resume_or_login_in_time(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(tmp_path, postgres_dsn, {"hello_timeout": 1}) as served,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_says_nothing, visitor_url(served))
        nursery.start_soon(_says_nothing, operator_url(served))
        nursery.start_soon(_only_pings, operator_url(served))
        nursery.start_soon(_starts_in_time, visitor_url(served))


# -- 8. server pings with a pong deadline -------------------------------------------------------


async def test_a_dead_operator_is_found_by_pings_and_their_conversation_requeued(
    tmp_path: Path, postgres_dsn: str
) -> None:
    limits = {"ping_interval": 0.5, "pong_timeout": 0.5}
    async with (
        omni(tmp_path, postgres_dsn, limits, operator_grace_seconds=1) as served,
        relay(served) as proxy,
        connect(visitor_url(served)) as vera,
        connect(f"{proxy.url}/ws/operator") as alice,
    ):
        await start(vera, 25)
        conversation_id = await assigned_to_alice(vera, alice)
        # Clients that answer pings (trio-websocket does, while it runs) stay: three pings on.
        await trio.sleep(1.5)
        await alive(alice)
        await alive(vera)

        proxy.freeze()
        frozen_at = trio.current_time()
        moved = await vera.expect("transferred", timeout=5)
        waited = trio.current_time() - frozen_at
        # Found within ping_interval + pong_timeout, then the grace period: 1.5 to 2 s.
        assert 1.4 <= waited <= 3.5, waited
        assert moved["conversation_id"] == conversation_id
        assert moved["reason"] == "operator_disconnected"
        assert moved["to"] == {"kind": "group", "id": 1, "name": "Support"}
        await vera.expect("queued", position=1)
        await alive(vera)
        summary = await stored_conversation(served, conversation_id)
        assert summary["status"] == "queued", summary

        proxy.sever()  # Alice's client learns its connection is gone (the server's close is held)
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await alice.ws.get_message()


# -- 9. a queued visitor whose connection is gone -----------------------------------------------


async def test_a_queued_visitor_who_is_gone_is_abandoned(tmp_path: Path, postgres_dsn: str) -> None:
    async with omni(tmp_path, postgres_dsn, {"absent_visitor_timeout": 1}) as served:
        url = visitor_url(served)
        async with connect(url) as gone:
            left = await start(gone, 25, name="Gone")
            await gone.expect("queued", position=1)
        left_at = trio.current_time()
        async with connect(url) as back:
            stays = await start(back, 25, name="Back")
            await back.expect("queued", position=2)
        async with connect(url) as back:
            await back.send("resume", token=stays["token"], last_seq=0)
            await back.expect("resumed", status="queued")
            # The one who left is abandoned (service 25 has no queue_timeout): Back moves up.
            with trio.fail_after(5):
                while (await back.expect("queued"))["position"] != 1:
                    pass
            assert trio.current_time() - left_at >= 0.8
            abandoned = await stored_conversation(served, left["conversation_id"])
            assert (abandoned["status"], abandoned["ended_by"]) == ("abandoned", "visitor_gone")
            # Back was away for a moment only: well past its own timeout, it still waits.
            await trio.sleep(1)
            await back.expect_quiet("ended", "closed", timeout=5)
            waiting = await stored_conversation(served, stays["conversation_id"])
            assert (waiting["status"], waiting["ended_by"]) == ("queued", None)


# -- 10. visitor messages out of hours ----------------------------------------------------------


async def test_an_out_of_hours_conversation_takes_a_bounded_number_of_messages(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(tmp_path, postgres_dsn, {"out_of_hours_messages": 3}) as served,
        connect(visitor_url(served)) as vera,
    ):
        started = await start(vera, 26)
        conversation_id = started["conversation_id"]
        await vera.expect("out_of_hours", seq=1)
        seqs = {}
        for client_id in ("m1", "m2", "m3"):
            await vera.send("message", client_id=client_id, text=f"text of {client_id}")
            seqs[client_id] = (await vera.expect("ack", client_id=client_id))["seq"]
        await vera.send("message", client_id="m4", text="text of m4")
        await vera.expect(
            "error", code="message_limit", client_id="m4", conversation_id=conversation_id
        )
        # A resend of a stored one (an ack lost on the way) is still acknowledged, as before.
        await vera.send("message", client_id="m2", text="text of m2, again")
        await vera.expect("ack", client_id="m2", seq=seqs["m2"])
        stored = await stored_visitor_texts(served, conversation_id)
        assert stored == ["text of m1", "text of m2", "text of m3"]


# -- 11. X-Forwarded-For, only from trusted proxies ---------------------------------------------


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(tmp_path, postgres_dsn, {"connections_per_ip": 2}) as served,
        AsyncExitStack() as held,
    ):
        url = visitor_url(served)
        for n in (1, 2):
            await alive(await held.enter_async_context(connect(url, forwarded(f"203.0.113.{n}"))))
        # All of them are 127.0.0.1, whatever they claim.
        assert_429(await refused(url, forwarded("203.0.113.3")), "connections", "60")


async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with (
        omni(
            tmp_path, postgres_dsn, {"connections_per_ip": 2}, trusted_proxies=["127.0.0.1"]
        ) as served,
        AsyncExitStack() as held,
    ):
        url = visitor_url(served)
        # Three clients behind the proxy, and the proxy itself: four addresses, one each.
        for n in (1, 2, 3):
            await alive(await held.enter_async_context(connect(url, forwarded(f"203.0.113.{n}"))))
        await alive(await held.enter_async_context(connect(url)))
        # The same client twice is its limit; a third is refused — also when it prepends a
        # forged address (the proxy appends the real one, and only that part is believed).
        await alive(await held.enter_async_context(connect(url, forwarded("203.0.113.1"))))
        assert_429(await refused(url, forwarded("203.0.113.1")), "connections", "60")
        forged = forwarded("198.51.100.9, 203.0.113.1")
        assert_429(await refused(url, forged), "connections", "60")
