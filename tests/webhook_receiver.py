"""A webhook receiver for the tests: a small HTTP/1.1 server on 127.0.0.1 (trio, one request per
connection) that answers as the test scripts it, can stop listening (connections refused) and
listen again on the same port, and keeps every request it got. It also serves files (a
platform's media endpoints): a GET of a path in :attr:`Receiver.files` gets its bytes, any other
GET a 404; GETs are kept apart (:attr:`Receiver.fetched`), not in the scripted requests.

Signatures are checked here with an implementation of the test's own — HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}`` with the base64 key after ``whsec_`` — not with the
package the server signs with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    #: What the receiver answered: an HTTP status, or "hang" (no answer at all).
    answer: int | str = 0

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


def signature_is_valid(secret: str, request: Request) -> bool:
    """Standard Webhooks, written out: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))
    is one of the space-separated signatures."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    headers = request.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(s, f"v1,{expected}") for s in headers["webhook-signature"].split(" ")
    )


@dataclass
class Receiver:
    port: int = 0
    #: Answers to give, in order, to the next requests; then ``then`` for every other one.
    script: list[int | str] = field(default_factory=list)
    then: int | str = 204
    #: ``Location`` of a 3xx answer.
    location: str = ""
    requests: list[Request] = field(default_factory=list)
    #: What a GET of a path (with its query) gets: its content type and bytes.
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    #: The GETs, in the order they arrived.
    fetched: list[Request] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)
    _scope: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/omni"

    def delivered(self) -> list[Request]:
        """The requests answered 2xx, in the order they arrived."""
        return [r for r in self.requests if isinstance(r.answer, int) and 200 <= r.answer < 300]

    async def wait_for(self, count: int, seconds: float = 20.0) -> None:
        """Until ``count`` requests were answered 2xx."""
        with trio.fail_after(seconds):
            while len(self.delivered()) < count:
                await self.arrived.wait()
                self.arrived = trio.Event()

    async def listen(self) -> None:
        assert self._nursery is not None
        self._scope = await self._nursery.start(self._serve)

    def refuse(self) -> None:
        """Stop listening and drop every connection: connections are refused until
        :meth:`listen`."""
        assert self._scope is not None
        self._scope.cancel()
        self._scope = None

    async def _serve(self, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(trio.serve_listeners, self._handle, listeners))
                task_status.started(scope)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                body += chunk
            request = Request(lines[0].split(" ")[1], headers, body)
            if lines[0].startswith("GET "):
                await self._serve_file(stream, request)
                return
            request.answer = self.script.pop(0) if self.script else self.then
            self.requests.append(request)
            if request.answer == "hang":
                await trio.sleep_forever()
            status = int(request.answer)
            extra = f"Location: {self.location}\r\n" if 300 <= status < 400 else ""
            head = f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n{extra}"
            await stream.send_all(f"{head}\r\nok".encode())
            self.arrived.set()

    async def _serve_file(self, stream: trio.SocketStream, request: Request) -> None:
        self.fetched.append(request)
        found = self.files.get(request.path)
        status, (kind, content) = (200, found) if found else (404, ("text/plain", b"none"))
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n"
        )
        await stream.send_all(head.encode() + content)


@asynccontextmanager
async def open_receiver(**settings: Any) -> AsyncIterator[Receiver]:
    receiver = Receiver(**settings)
    async with trio.open_nursery() as nursery:
        receiver._nursery = nursery
        await receiver.listen()
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()
