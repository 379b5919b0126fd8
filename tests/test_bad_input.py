"""Bad input gets a precise error frame, the connection survives, nothing partial happens."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed

from omni.domain.protocol import ERROR_CODES
from omni.server import RunningServer
from tests.support import TOK_ALICE, connect_memory, connect_tcp, login, open_memory_gateway, start

VISITOR_CASES = [
    ("{not json", "bad_json"),
    ('"just a string"', "invalid_frame"),
    ("[1, 2]", "invalid_frame"),
    ('{"no_type": 1}', "unknown_type"),
    ('{"type": "teleport"}', "unknown_type"),
    ('{"type": 7}', "unknown_type"),
    ('{"type": "start"}', "invalid_frame"),
    ('{"type": "start", "service_id": "25", "visitor": {"name": "V"}}', "invalid_frame"),
    ('{"type": "start", "service_id": 25, "visitor": {"name": ""}}', "invalid_frame"),
    ('{"type": "start", "service_id": 25, "visitor": {"name": "V", "email": 5}}', "invalid_frame"),
    ('{"type": "start", "service_id": 999, "visitor": {"name": "V"}}', "unknown_service"),
    ('{"type": "message", "client_id": "c", "text": "hi"}', "not_started"),
    ('{"type": "end"}', "not_started"),
    ('{"type": "resume", "token": "nope", "last_seq": 0}', "invalid_token"),
    ('{"type": "resume", "token": "nope", "last_seq": -1}', "invalid_frame"),
]


@pytest.mark.parametrize(("frame", "code"), VISITOR_CASES)
async def test_visitor_bad_frames(
    frame: str, code: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/visitor") as client:
        await client.send_raw(frame)
        error = await client.expect("error")
        assert error["code"] == code and error["message"]
        assert code in ERROR_CODES
        # The connection survives and nothing was created.
        assert gw.hub.conversations == {}
        await client.send("ping")
        await client.expect("pong")
        await start(client)
        await client.expect("queued")


async def test_visitor_errors_inside_a_conversation(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/visitor") as vera:
        cid = (await start(vera))["conversation_id"]
        await vera.expect("queued")
        await vera.send("start", service_id=25, visitor={"name": "Again"})
        assert (await vera.expect("error"))["code"] == "already_started"
        await vera.send("message", client_id="empty", text="   ")
        error = await vera.expect("error")
        assert error == {
            "type": "error",
            "code": "invalid_frame",
            "message": "message text is empty",
            "conversation_id": cid,
            "client_id": "empty",
        }
        await vera.send("message", client_id="long", text="x" * 9000)
        assert (await vera.expect("error"))["code"] == "message_too_long"
        await vera.send("survey", answers={"rating": 5})
        assert (await vera.expect("error"))["code"] == "invalid_state"
        await vera.send("resume", token="x", last_seq=0)
        assert (await vera.expect("error"))["code"] == "already_started"
        # None of it was stored.
        assert [e.kind for e in gw.hub.store.all_events(cid)] == []  # type: ignore[attr-defined]
        await vera.send("message", client_id="ok", text="fine")
        assert (await vera.expect("ack"))["seq"] == 1


OPERATOR_CASES = [
    ('{"type": "status", "status": "available"}', "not_logged_in"),
    ('{"type": "login", "token": "wrong-token"}', "invalid_login"),
    ('{"type": "login"}', "invalid_frame"),
    ("{]", "bad_json"),
]


@pytest.mark.parametrize(("frame", "code"), OPERATOR_CASES)
async def test_operator_bad_frames_before_login(
    frame: str, code: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/operator") as op:
        await op.send_raw(frame)
        assert (await op.expect("error"))["code"] == code
        await login(op, TOK_ALICE)
        assert 1 in gw.hub.sessions


async def test_operator_errors_after_login(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/operator") as op:
        await login(op, TOK_ALICE)
        cases = [
            ({"type": "login", "token": TOK_ALICE}, "already_logged_in"),
            ({"type": "status", "status": "asleep"}, "invalid_frame"),
            ({"type": "accept", "conversation_id": "nope"}, "unknown_conversation"),
            (
                {"type": "message", "conversation_id": "nope", "client_id": "c", "text": "x"},
                "unknown_conversation",
            ),
            ({"type": "transfer", "conversation_id": "nope", "group_id": 42}, "unknown_group"),
            ({"type": "sync", "conversation_id": "nope", "last_seq": 0}, "unknown_conversation"),
            ({"type": "offer"}, "unknown_type"),
        ]
        for frame, code in cases:
            await op.send_raw(json.dumps(frame))
            error = await op.expect("error")
            assert error["code"] == code, (frame, error)
        async with connect_memory(gw, "/ws/visitor") as vera:
            cid = (await start(vera))["conversation_id"]
            offer = await op.expect("offer")
            await op.send("end", conversation_id=cid)
            assert (await op.expect("error"))["code"] == "not_your_conversation"
            await op.send("accept", conversation_id=offer["conversation"]["id"])
            await op.expect("assigned")
            await op.expect("message")  # the greeting
            await op.send("accept", conversation_id=cid)
            assert (await op.expect("error"))["code"] == "invalid_state"
            await op.send("sync", conversation_id=cid, last_seq=99)
            assert (await op.expect("error"))["code"] == "invalid_seq"


async def test_frames_over_the_limit_over_tcp(server: RunningServer) -> None:
    limit = server.gateway.limit
    async with connect_tcp(f"{server.ws_url}/ws/visitor") as vera:
        await start(vera)
        await vera.expect("queued")
        # Over the limit in bytes (multi-byte characters), under it in characters.
        text = "é" * (limit // 2 + 10)
        await vera.send("message", client_id="big", text=text)
        assert (await vera.expect("error"))["code"] == "frame_too_large"
        await vera.send_raw(b"\x00binary")
        assert (await vera.expect("error"))["code"] == "binary_not_supported"
        await vera.send("message", client_id="small", text="still here")
        assert (await vera.expect("ack"))["seq"] == 1
        # Far beyond the limit the library closes the connection (1009) — the server lives on.
        await vera.send_raw("x" * (5 * limit))
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                await vera.recv()
    async with connect_tcp(f"{server.ws_url}/ws/visitor") as other:
        await start(other)


async def test_unknown_path_is_rejected(server: RunningServer) -> None:
    from trio_websocket import ConnectionRejected, open_websocket_url

    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"{server.ws_url}/ws/nowhere"):
            pass
    assert info.value.status_code == 404


async def test_a_crashing_connection_task_does_not_take_the_server_down(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault in the gateway for one frame closes that connection with internal_error only."""
    from omni.gateway.server import _VisitorConnection

    original = _VisitorConnection.handle

    async def faulty(self: _VisitorConnection, frame: object) -> None:
        if getattr(frame, "text", None) == "boom":
            raise RuntimeError("injected fault")
        await original(self, frame)  # type: ignore[arg-type]

    monkeypatch.setattr(_VisitorConnection, "handle", faulty)
    async with (
        connect_tcp(f"{server.ws_url}/ws/visitor") as vera,
        connect_tcp(f"{server.ws_url}/ws/visitor") as will,
    ):
        await start(vera)
        await start(will)
        await vera.send("message", client_id="b", text="boom")
        assert (await vera.until("error"))["code"] == "internal_error"
        await will.send("message", client_id="w", text="fine")
        await will.expect("ack")
