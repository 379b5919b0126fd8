"""Item 1: a long history is replayed as its reader reads it — never a reason to disconnect them.

The conversation holds 1,100 visitor messages of 2,000 characters (2.2 MB), and every
connection's live buffer holds 64 frames: before the replay was paged, accepting it closed the
operator with ``slow_consumer`` (and the conversation went back to the queue to kick the next
one), and so did ``sync`` and the visitor's ``resume``.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.hardening.serve import ALICE, serving
from tests.support import Client, connect_tcp, login, start

COUNT = 1_100
TEXT = "x" * 1_996

#: Room for the messages to be sent flat out, and a live buffer far smaller than the history.
SERVER = """
native_visitors = true
native_operators = true
outbound_buffer = 64
limits = { messages_per_second = 100000, message_burst = 100000 }
"""


async def _history(client: Client, count: int, until: str | None = None) -> list[int]:
    """Read ``count`` stored messages (and whatever else comes; ``until`` ends it), checking
    them whole and in order; their seqs."""
    seqs: list[int] = []
    with trio.fail_after(60):
        while len(seqs) < count or until is not None:
            frame = await client.recv(timeout=60)
            assert frame["type"] != "error", frame
            if frame["type"] == "message" and frame["author"]["kind"] == "visitor":
                assert frame["text"] == f"{len(seqs):04d}{TEXT}"
                seqs.append(frame["seq"])
            elif frame["type"] == until:
                break
    assert seqs == sorted(seqs) and len(seqs) == count
    return seqs


async def test_a_long_history_is_replayed_to_its_readers_and_kicks_nobody(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=SERVER) as server:
        url = server.ws_url
        async with connect_tcp(f"{url}/ws/visitor") as vera:
            started = await start(vera, 25)
            await vera.expect("queued")
            with trio.fail_after(60):
                for n in range(COUNT):
                    await vera.send("message", client_id=f"m{n}", text=f"{n:04d}{TEXT}")
                for _ in range(COUNT):
                    await vera.until("ack", timeout=60)

            async with connect_tcp(f"{url}/ws/operator") as alice:
                await login(alice, ALICE)
                offer = await alice.until("offer")
                cid = offer["conversation"]["id"]
                await alice.send("accept", conversation_id=cid)
                # The whole history, then `assigned`: in order, nothing dropped, still connected.
                seqs = await _history(alice, COUNT, until="assigned")
                await alice.send("ping")
                await alice.until("pong")
                # `sync` from the start replays it all again.
                await alice.send("sync", conversation_id=cid, last_seq=0)
                assert await _history(alice, COUNT) == seqs
                await alice.send("message", conversation_id=cid, client_id="a1", text="Hello")
                await alice.until("ack")

        # The visitor comes back on a new connection and asks for everything.
        async with connect_tcp(f"{url}/ws/visitor") as again:
            await again.send("resume", token=started["token"], last_seq=0)
            await again.expect("resumed")
            await _history(again, COUNT)
            with trio.fail_after(10):
                while (await again.until("message"))["text"] != "Hello":
                    pass
        assert "slow_consumer" not in server.log()
