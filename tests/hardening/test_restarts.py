"""Item 8a: a conversation put back into routing after a restart goes through one path — the
domain's ``restore`` — whether the process was killed or only its actor crashed (the latter in
tests/test_isolation.py, where a fault can be injected).

A server killed while a visitor waits, with the service's queue timeout running: restarted, the
conversation is back in its queue, the timeout still counts from the visitor's arrival, and the
visitor who resumes sees it end on time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.hardening.serve import ADMIN, Served, serving
from tests.support import connect_tcp, start

NATIVE = "native_visitors = true\nnative_operators = true"


async def _set_timers(served: Served, **timers: float) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=served.http_url, headers=auth) as api:
        body: dict[str, Any] = (await api.get("/api/v1/services/25")).json()
        body["timers"] = {**body.get("timers", {}), **timers}
        reply = await api.put("/api/v1/services/25", json=body)
        assert reply.status_code == 200, reply.text


async def test_a_killed_servers_queued_conversation_keeps_its_queue_timeout(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as first:
        await _set_timers(first, queue_timeout=10)
        async with connect_tcp(f"{first.ws_url}/ws/visitor") as vera:
            started = await start(vera, 25)
            arrived = trio.current_time()
            await vera.expect("queued")
        first.process.kill()
        with trio.fail_after(10):
            await first.process.wait()

    async with (
        serving(tmp_path, postgres_dsn, server=NATIVE) as second,
        connect_tcp(f"{second.ws_url}/ws/visitor") as again,
    ):
        await again.send("resume", token=started["token"], last_seq=0)
        resumed = await again.expect("resumed")
        assert resumed["status"] == "queued"
        assert (await again.expect("queued"))["position"] == 1
        ended = await again.until("ended", timeout=20)
        assert ended["by"] == "queue_timeout"
        # Ten seconds from arrival, not from the restart (which took a second or two).
        assert 9.5 < trio.current_time() - arrived < 12.5
        await again.until("closed")
