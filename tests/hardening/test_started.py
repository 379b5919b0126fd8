"""Item 5: ``started`` — and its resume token — only once the conversation is stored.

The database is held up on purpose: another connection locks the conversations table, so the
server's write of a new conversation waits. Meanwhile the visitor must hear nothing; once the
write commits, ``started`` comes and the token resumes at once. A server killed while the write
waits has told nobody of a conversation that does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from omni.store.bridge import ThreadBridge
from tests.hardening.serve import ADMIN, Served, serving
from tests.support import Client, connect_tcp

NATIVE = "native_visitors = true\nnative_operators = true"


@asynccontextmanager
async def _writes_held(dsn: str) -> AsyncIterator[None]:
    """No row can be added to ``conversations`` until the block ends (reads go on)."""
    import asyncpg

    async with ThreadBridge.open() as bridge:
        conn: Any = await bridge.run(asyncpg.connect, dsn)
        try:
            await bridge.run(conn.execute, "BEGIN")
            await bridge.run(conn.execute, "LOCK TABLE conversations IN EXCLUSIVE MODE")
            yield
        finally:
            await bridge.run(conn.execute, "ROLLBACK")
            await bridge.run(conn.close)


async def _nothing_for(client: Client, seconds: float) -> None:
    with trio.move_on_after(seconds):
        frame = await client.recv(timeout=seconds + 1)
        raise AssertionError(f"the visitor was told something before the write: {frame}")


async def _conversations(served: Served) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=served.http_url, headers=auth) as api:
        page: dict[str, Any] = (await api.get("/api/v1/conversations")).json()
    return list(page["items"])


async def test_started_goes_out_after_the_write_and_its_token_resumes_at_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as first:
        async with connect_tcp(f"{first.ws_url}/ws/visitor") as vera:
            async with _writes_held(postgres_dsn):
                await vera.send("start", service_id=25, visitor={"name": "Vera"})
                await _nothing_for(vera, 1.0)
            started = await vera.expect("started")
            # The very next thing a client may do with the token works.
            async with connect_tcp(f"{first.ws_url}/ws/visitor") as again:
                await again.send("resume", token=started["token"], last_seq=0)
                resumed = await again.expect("resumed")
                assert resumed["conversation_id"] == started["conversation_id"]

        async with (
            connect_tcp(f"{first.ws_url}/ws/visitor") as will,
            _writes_held(postgres_dsn),
        ):
            await will.send("start", service_id=25, visitor={"name": "Will"})
            await _nothing_for(will, 1.0)
            first.process.kill()  # the crash, while the write waits
            with trio.fail_after(10):
                await first.process.wait()

    async with serving(tmp_path, postgres_dsn, server=NATIVE) as second:
        stored = await _conversations(second)
        # Vera's is there; Will's never was, and Will was never told it was.
        assert [c["visitor"]["name"] for c in stored] == ["Vera"]
        assert stored[0]["id"] == started["conversation_id"]
