"""The adapters to dependencies' internals (omni/compat): each refuses, loudly, a version it
was not written for; and each does what it promises on the installed one (the conformance
tests an upgrade must pass before its version is added to the adapter)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from omni.compat import IncompatibleDependency
from omni.compat import trio as trio_compat
from omni.compat import trio_websocket as trio_websocket_compat
from omni.compat.trio_websocket import DirectWriter
from omni.server import RunningServer, open_server
from tests.support import TOK_ALICE, UNLIMITED, connect_tcp, eventually, login, make_config, start

ROOT = Path(__file__).resolve().parent.parent


# -- trio-websocket ------------------------------------------------------------------------------


def test_the_installed_trio_websocket_is_supported() -> None:
    trio_websocket_compat.check()


def test_an_unknown_trio_websocket_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio_websocket_compat, "version", lambda name: "0.13.0")
    with pytest.raises(IncompatibleDependency, match=r"trio-websocket 0\.13\.0 .* 0\.12\.x"):
        trio_websocket_compat.check()


def test_a_connection_without_its_stream_lock_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The internals changed under the same version number: refused, not a silent slow path."""

    class Changed(WebSocketConnection):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            del self._stream_lock

    monkeypatch.setattr(trio_websocket_compat, "WebSocketConnection", Changed)
    with pytest.raises(IncompatibleDependency, match="_stream_lock"):
        trio_websocket_compat.check()


def test_the_gateway_refuses_to_start_on_an_unknown_trio_websocket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from omni.gateway.server import Gateway

    monkeypatch.setattr(trio_websocket_compat, "version", lambda name: "0.14.1")
    with pytest.raises(IncompatibleDependency):
        Gateway(hub=None)  # type: ignore[arg-type]


@pytest.fixture
async def flood_server() -> AsyncIterator[RunningServer]:
    """A server whose rate limits let one operator send as fast as the network takes it."""
    config = make_config(limits=UNLIMITED)
    async with open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as running:
        yield running


async def test_direct_writes_keep_frames_whole_and_in_order_when_a_reader_falls_behind(
    flood_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames go straight into an idle socket, and through the writer task once the kernel's
    buffer is full (the rest of a partly written frame first). A visitor who stops reading while
    the operator sends ~1.5 MB must later read every frame whole and in seq order."""
    outcomes = {"direct": 0, "partial": 0, "queued": 0}
    original = DirectWriter.write

    def counting(self: DirectWriter, frame: str) -> bytes | None:
        rest = original(self, frame)
        outcomes["direct" if rest == b"" else "queued" if rest is None else "partial"] += 1
        return rest

    monkeypatch.setattr(DirectWriter, "write", counting)
    url = flood_server.ws_url
    async with connect_tcp(f"{url}/ws/operator") as alice, connect_tcp(f"{url}/ws/visitor") as vera:
        await login(alice, TOK_ALICE)
        cid = (await start(vera))["conversation_id"]
        await alice.send(
            "accept", conversation_id=(await alice.until("offer"))["conversation"]["id"]
        )
        await vera.until("message")  # greeting
        count, size = 300, 5000
        for n in range(count):
            await alice.send(
                "message", conversation_id=cid, client_id=f"m{n}", text=f"{n:04d}" + "x" * size
            )
        for _ in range(count):
            await alice.until("ack")
        # Vera has read nothing meanwhile; now she does.
        seqs = []
        for n in range(count):
            frame = await vera.expect("message")
            assert frame["text"].startswith(f"{n:04d}") and len(frame["text"]) == size + 4
            seqs.append(frame["seq"])
        assert seqs == sorted(seqs) and len(set(seqs)) == count
        await vera.send("message", client_id="still", text="alive")
        await vera.expect("ack")
        # Both paths were taken: straight into the socket, and a partial write whose rest
        # went to the writer task (with the frames after it queued behind).
        assert outcomes["direct"] > 0 and outcomes["partial"] > 0, outcomes


async def test_a_reader_that_falls_too_far_behind_is_let_go_without_a_garbled_frame() -> None:
    """A visitor who reads nothing while frames pile up is disconnected (``slow_consumer``) while
    the server is in the middle of writing a frame to them. Nothing may be written into the
    middle of that frame: the server finishes it and says why, or drops the connection; the
    client reads every frame it got whole and then a close — never a garbled stream (1007)."""
    config = make_config(limits=UNLIMITED, outbound_buffer=16)
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv,
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        cid = (await start(vera))["conversation_id"]
        await alice.send(
            "accept", conversation_id=(await alice.until("offer"))["conversation"]["id"]
        )
        await vera.until("assigned")
        size = 7_000
        connections = srv.hub.metrics.connections
        with trio.fail_after(20):
            for n in range(2_000):
                await alice.send(
                    "message", conversation_id=cid, client_id=f"m{n}", text=f"{n:05d}" + "x" * size
                )
                if connections["visitor"] == 0:
                    break  # let go
        # The server let the visitor go (the gauge is all that shows it from here).
        await eventually(lambda: connections["visitor"] == 0, 20)
        texts, closed = [], None
        with trio.fail_after(20):
            while closed is None:
                try:
                    frame = await vera.recv()
                except ConnectionClosed as exc:
                    closed = exc.reason
                    break
                if frame["type"] == "message" and frame["text"][:5].isdigit():
                    texts.append(frame["text"])
                elif frame["type"] == "error":
                    assert frame["code"] == "slow_consumer"
        assert closed.code in (1006, 1008), closed
        assert texts and all(len(t) == size + 5 for t in texts)
        assert [int(t[:5]) for t in texts] == list(range(len(texts)))


# -- trio ----------------------------------------------------------------------------------------


def test_the_installed_trio_is_supported() -> None:
    trio_compat.check()


def test_an_unknown_trio_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio_compat, "version", lambda name: "0.36.0")
    with pytest.raises(IncompatibleDependency, match=r"trio 0\.36\.0"):
        trio_compat.seed_scheduler(1)


ORDER = """
import json, sys, trio
from omni.compat.trio import seed_scheduler

async def main():
    order = []
    async def task(n):
        for step in range(3):
            order.append(n)
            await trio.lowlevel.checkpoint()
    seed_scheduler(int(sys.argv[1]))
    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(task, n)
    print(json.dumps(order))

trio.run(main)
"""


def _order(seed: int, hash_seed: str) -> list[int]:
    result = subprocess.run(
        [sys.executable, "-c", ORDER, str(seed)],
        cwd=ROOT,
        env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    order: list[int] = __import__("json").loads(result.stdout)
    return order


@pytest.mark.slow
def test_a_seeded_scheduler_runs_ready_tasks_in_the_same_order_in_any_process() -> None:
    """The conformance test of seed_scheduler: the order trio runs ready tasks in is the seed's,
    from one process to the next, and another seed gives another order."""
    first = _order(7, "1")
    assert sorted(first) == sorted(list(range(8)) * 3)
    assert _order(7, "2") == first
    assert any(_order(seed, "1") != first for seed in (8, 9, 10))
