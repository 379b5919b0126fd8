"""A loopback TCP proxy in front of PostgreSQL that can be cut like a pulled cable.

:func:`open_tcp_proxy` listens on 127.0.0.1 (a free port) and relays every connection to the
PostgreSQL server of a DSN — over TCP, or over its Unix socket (the embedded server of the tests
listens on a socket only). :attr:`TcpProxy.dsn` is the DSN that goes through it.

:meth:`TcpProxy.cut` black-holes the proxy: from then on no byte is relayed either way, on the
connections it carries and on the ones made while it is cut (accepted — the client's connect
succeeds — but never relayed), and no socket is closed: no FIN, no RST, as when a cable is
pulled; each end learns of it only by a timeout of its own. :meth:`TcpProxy.heal` plugs the
cable back in: relaying resumes on every connection that neither end gave up meanwhile (bytes
held by the proxy go on, as TCP retransmits them), and new connections are relayed again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import trio

#: What one read takes from a socket.
CHUNK = 65_536


def postgres_address(dsn: str) -> tuple[str, int]:
    """The host (a directory: a Unix socket's) and port of a ``postgresql://`` DSN."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or unquote(parts.hostname or "") or "localhost"
    port = int(query.get("port") or parts.port or 5432)
    return host, port


def via(dsn: str, port: int) -> str:
    """``dsn`` going to 127.0.0.1:``port`` instead (same user, password, database and other
    parameters; no TLS: the proxy relays bytes, and the server sees a local client)."""
    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port", "sslmode")]
    query.append(("sslmode", "disable"))
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


class TcpProxy:
    """The proxy while :func:`open_tcp_proxy` runs."""

    def __init__(self, dsn: str) -> None:
        self.target = postgres_address(dsn)
        self.port = 0
        self.dsn = ""
        #: Connections accepted so far (made while cut too).
        self.accepted = 0
        #: Connections relayed now or held by a cut.
        self.open = 0
        self._forwarding = trio.Event()
        self._forwarding.set()

    @property
    def is_cut(self) -> bool:
        return not self._forwarding.is_set()

    def cut(self) -> None:
        """Stop relaying, both ways, on every connection (and on new ones); close nothing."""
        if self._forwarding.is_set():
            self._forwarding = trio.Event()

    def heal(self) -> None:
        """Relay again: what was held, what comes next, and new connections."""
        self._forwarding.set()

    async def _relaying(self) -> None:
        """Return once the proxy relays (at once unless it is cut)."""
        while not self._forwarding.is_set():
            await self._forwarding.wait()

    async def _upstream(self) -> trio.SocketStream:
        host, port = self.target
        if host.startswith("/"):
            return await trio.open_unix_socket(f"{host}/.s.PGSQL.{port}")
        return await trio.open_tcp_stream(host, port)

    async def _link(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        self.open += 1
        try:
            async with client:
                await self._relaying()  # made while cut: it reaches nothing until healed
                try:
                    server = await self._upstream()
                except OSError:
                    return
                async with server, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                    nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
        finally:
            self.open -= 1

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, link: trio.CancelScope
    ) -> None:
        try:
            while True:
                await self._relaying()
                data = await source.receive_some(CHUNK)
                await self._relaying()  # cut meanwhile: held, as on a pulled cable
                if not data:
                    break
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        link.cancel()  # one end closed (the proxy is not cut): so does the other


@asynccontextmanager
async def open_tcp_proxy(dsn: str) -> AsyncIterator[TcpProxy]:
    """A proxy to the PostgreSQL server of ``dsn`` on 127.0.0.1, until the block exits (then
    every connection it carries is closed)."""
    proxy = TcpProxy(dsn)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            trio.serve_listeners,
            proxy._link,
            await trio.open_tcp_listeners(0, host="127.0.0.1"),
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        proxy.dsn = via(dsn, proxy.port)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
