"""A foreign site: a real HTTP server on a loopback port of its own, serving the pages a test
gives it — a company's site that embeds Omni, another origin than Omni's.

Why a server and not Playwright's ``route``: a page Playwright makes up at a public-looking
address (``http://foreign.example/``) may not load a script from 127.0.0.1 — Chromium's
private-network rule: "the request client is not a secure context and the resource is in
more-private address space `loopback`". Pages served from 127.0.0.1 may reach Omni on 127.0.0.1
(another port: another origin), as a site embedding the widget would.
``url(path, host="localhost")`` reaches the same server as a third origin, of another site (for
cross-site iframes).

Rules: :func:`open_foreign_site` owns the server (hypercorn, started with ``nursery.start``,
stopped when the block ends); files are set before they are fetched and never change behind a
test's back; nothing is cached. ``/favicon.ico``, which Chromium asks of every site, is an
empty answer unless a test serves one (a 404 would be a console error in every test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"


@dataclass(frozen=True)
class _File:
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass
class ForeignSite:
    port: int = 0
    #: The paths requested, in order (query strings left out; not the browser's own favicon).
    requested: list[str] = field(default_factory=list)
    _files: dict[str, _File] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def serve(
        self,
        path: str,
        body: str | bytes,
        content_type: str = HTML,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Serve ``body`` at ``path`` (with more response ``headers``, e.g. a
        ``Content-Security-Policy``); its URL."""
        assert path.startswith("/"), path
        data = body.encode() if isinstance(body, str) else body
        every = {"content-type": content_type, "cache-control": "no-store", **(headers or {})}
        self._files[path] = _File(
            data, tuple((k.lower().encode(), v.encode()) for k, v in every.items())
        )
        return self.url(path)

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """The ASGI application."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        found = self._files.get(scope["path"])
        headers: tuple[tuple[bytes, bytes], ...]
        if found is None and scope["path"] == "/favicon.ico":
            status, headers, body = 204, (), b""
        elif found is None:
            self.requested.append(scope["path"])
            status, headers, body = 404, ((b"content-type", b"text/plain"),), b"not found"
        else:
            self.requested.append(scope["path"])
            status, headers, body = 200, found.headers, found.body
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def open_foreign_site() -> AsyncIterator[ForeignSite]:
    """A :class:`ForeignSite` on 127.0.0.1 and a free port, until the block ends."""
    site = ForeignSite()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 1  # a browser's idle keep-alive connections do not hold it up
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn_serve, site, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        )
        site.port = int(binds[0].rsplit(":", 1)[1])
        try:
            yield site
        finally:
            stop.set()
