"""Item 9a: every HTTP answer leaves a keep-alive connection ready for the next request.

The admin API answered a ``PUT`` of an unknown resource with 404 before the body had arrived;
the connection then waited for a body nobody read, and the next request on it (the "on 404,
POST" every client script does) never got an answer. Driven here byte by byte on one socket:
headers, a pause, the body, the next request.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from tests.hardening.serve import ADMIN, serving


def _request(method: str, path: str, body: bytes) -> tuple[bytes, bytes]:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: omni\r\nAuthorization: Bearer {ADMIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


async def _answers(stream: trio.SocketStream, count: int) -> list[int]:
    """The status codes of the next ``count`` answers on ``stream`` (each with a body of its
    Content-Length)."""
    data, statuses = b"", []
    with trio.fail_after(10):
        while len(statuses) < count:
            head, found, rest = data.partition(b"\r\n\r\n")
            if not found:
                chunk = await stream.receive_some()
                assert chunk, f"the server closed the connection after {statuses}"
                data += chunk
                continue
            lines = head.decode().split("\r\n")
            length = next(
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            )
            while len(rest) < length:
                chunk = await stream.receive_some()
                assert chunk
                rest += chunk
            statuses.append(int(lines[0].split()[1]))
            data = rest[length:]
    return statuses


async def test_the_request_after_a_404_to_a_slow_body_is_answered(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn) as served:
        port = int(served.http_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for group in (300, 301, 302):
                body = json.dumps({"id": group, "name": f"Group {group}"}).encode()
                head, payload = _request("PUT", f"/api/v1/groups/{group}", body)
                await stream.send_all(head)
                await trio.sleep(0.3)  # the body arrives after the server could answer
                await stream.send_all(payload)
                await stream.send_all(b"".join(_request("POST", "/api/v1/groups", body)))
                assert await _answers(stream, 2) == [404, 201]


async def test_put_or_post_on_one_keep_alive_client(tmp_path: Path, postgres_dsn: str) -> None:
    """The report's script: create resources as "PUT, and on 404 POST" with one client."""
    async with serving(tmp_path, postgres_dsn) as served:
        auth = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=served.http_url, headers=auth, timeout=5) as api:
            with trio.fail_after(30):
                for n in range(40):
                    group = {"id": 400 + n, "name": f"Group {n}"}
                    reply = await api.put(f"/api/v1/groups/{400 + n}", json=group)
                    if reply.status_code == 404:
                        reply = await api.post("/api/v1/groups", json=group)
                    assert reply.status_code in (200, 201), reply.text
