"""Outgoing HTTP to addresses an administrator typed: the SSRF guard (webhooks now; the
messaging channels' adapters later).

Rules of this module:

* A destination is an ``http`` or ``https`` URL with a host and no credentials
  (:func:`parse_url`).
* Every address it may reach must be global: loopback, private, link-local (the cloud metadata
  service, ``169.254.169.254``), multicast, reserved, unspecified and other special-purpose
  addresses are refused (:func:`non_global`), IPv4 and IPv6 alike — including an IPv4 address
  carried inside an IPv6 one (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4,
  Teredo), which is judged as the IPv4 address it stands for. Only the networks of the explicit
  allowance (``[server.webhooks] allow_private``, for development and tests) are let through.
* The messaging channels fetch media through the same client (:meth:`OutboundHttp.get`,
  :meth:`OutboundHttp.stream`): the same checks, no redirect followed.
* A name is resolved **once**, **every** address it resolves to is checked (one refused address
  refuses the name), and the connection goes to an address that was checked:
  :class:`GuardedBackend` does all three inside the HTTP client's own connect, so a DNS answer
  that changes between a check and the connection (rebinding) cannot switch the destination.
  The URL's host still goes in the ``Host`` header and in TLS's SNI (and is what the
  certificate is checked against).
* :class:`OutboundHttp` follows no redirect (httpcore follows none), reads no proxy from the
  environment, bounds the connect and the read, and reads at most ``max_response_bytes`` of an
  answer.
* :exc:`Refused` names the address and why; it is raised when a URL is saved
  (:meth:`Guard.check_url`) and when it is called.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import trio

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: NAT64's well-known prefix (RFC 6052): its last 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Special-purpose blocks that :mod:`ipaddress` of Python 3.11 still counts as global.
_NOT_GLOBAL = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast (deprecated)
    ipaddress.IPv4Network("198.18.0.0/15"),  # benchmarking
)


class Refused(Exception):
    """A destination the guard does not allow; the message says which address and why."""

    def __init__(self, message: str, address: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.address = address
        self.reason = reason


class Unresolvable(httpcore.ConnectError):
    """A host name that did not resolve (a failure of the moment, unlike :exc:`Refused`)."""


def non_global(address: Address) -> str | None:
    """Why ``address`` is not a global unicast address (``"loopback"``, ``"private"``, …), or
    None when it is one. An IPv4 address inside an IPv6 one is judged as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return non_global(inner)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if any(address in network for network in _NOT_GLOBAL if network.version == address.version):
        return "special-purpose"
    if not address.is_global:
        return "not globally routable"
    return None


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it carries one: IPv4-mapped, NAT64's
    well-known prefix, 6to4, or a Teredo client."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _shown(address: Address) -> str:
    """The address as a message names it: an IPv4 address inside an IPv6 one is shown too."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return f"{address} ({inner})"
    return str(address)


@dataclass(frozen=True, slots=True)
class Target:
    """A destination URL's parts: scheme, host (without brackets), port."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """``url``'s parts, or :exc:`Refused` when it is not an http(s) URL with a host and no
    credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None:
        raise Refused("a URL must not carry credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise Refused("the URL has no host")
    if any(c.isspace() or c in "\\%" for c in host):
        raise Refused(f"the URL's host {host!r} is not a host name")
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80))


class Guard:
    """The addresses outgoing calls may reach: the global ones, and ``allowed`` (the
    development allowance)."""

    def __init__(self, allowed: Iterable[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def check_address(self, address: Address) -> None:
        """:exc:`Refused` naming ``address`` unless it may be reached."""
        candidates: list[Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        for candidate in candidates:
            if any(candidate in n for n in self.allowed if n.version == candidate.version):
                return
        reason = non_global(address)
        if reason is not None:
            shown = _shown(address)
            raise Refused(f"{shown} is a {reason} address", shown, reason)

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address ``host`` stands for, each checked (one refused address refuses the
        name), in the resolver's order; :exc:`Unresolvable` when it resolves to nothing."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self.check_address(literal)
            return [literal]
        try:
            found = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise Unresolvable(f"{host} cannot be resolved: {exc}") from None
        addresses: list[Address] = []
        for *_, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise Unresolvable(f"{host} resolves to no IP address")
        for address in addresses:
            try:
                self.check_address(address)
            except Refused as exc:
                raise Refused(
                    f"{host} resolves to {exc.address}, a {exc.reason} address",
                    exc.address,
                    exc.reason,
                ) from None
        return addresses

    async def check_url(self, url: str) -> list[Address]:
        """The addresses ``url`` would reach now, all allowed; :exc:`Refused` (or
        :exc:`Unresolvable`) otherwise."""
        target = parse_url(url)
        return await self.resolve(target.host, target.port)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, except that a connection's host is resolved and checked by the
    guard, and the connection made to one of the addresses checked."""

    def __init__(self, guard: Guard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                addresses = await self.guard.resolve(host, port)
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long") from None
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("outgoing calls go to IP addresses only")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a server answered: its status, its ``Location`` (redirects), the first bytes of
    its body (at most the cap)."""

    status: int
    location: str | None
    body: bytes


class OutboundHttp:
    """An HTTP client whose every connection passes the guard. One per server; close it with
    :meth:`aclose`."""

    def __init__(
        self,
        guard: Guard,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_response_bytes: int,
        max_connections: int = 32,
        user_agent: str = "Omni",
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.guard = guard
        self.max_response_bytes = max_response_bytes
        self.user_agent = user_agent
        self._timeouts = {
            "connect": connect_timeout,
            "read": read_timeout,
            "write": read_timeout,
            "pool": connect_timeout,
        }
        # httpcore, not httpx: no redirects, no proxies or certificates from the environment,
        # and the network backend is the guard's.
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=backend or GuardedBackend(guard),
        )

    async def post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> Answer:
        """POST ``body``; :exc:`Refused`, :exc:`httpcore.TimeoutException` or another
        :exc:`httpcore` error when it did not get an answer."""
        target = parse_url(url)
        sent = [
            ("Host", target.host_header),
            ("User-Agent", self.user_agent),
            ("Content-Length", str(len(body))),
            *headers,
        ]
        async with self._pool.stream(
            "POST", url, headers=sent, content=body, extensions={"timeout": self._timeouts}
        ) as response:
            kept = bytearray()
            async for chunk in response.aiter_stream():
                kept += chunk[: self.max_response_bytes - len(kept)]
                if len(kept) >= self.max_response_bytes:
                    break  # the rest is not read; the connection is not reused
            location = next(
                (v.decode("latin-1") for k, v in response.headers if k.lower() == b"location"),
                None,
            )
            return Answer(response.status, location, bytes(kept))

    async def get(self, url: str, headers: list[tuple[str, str]]) -> Answer:
        """GET ``url``; its answer (at most ``max_response_bytes`` of its body), or the errors
        of :meth:`post`."""
        async with self.stream(url, headers) as (status, _length, chunks):
            kept = bytearray()
            async for chunk in chunks:
                kept += chunk[: self.max_response_bytes - len(kept)]
                if len(kept) >= self.max_response_bytes:
                    break
            return Answer(status, None, bytes(kept))

    @asynccontextmanager
    async def stream(
        self, url: str, headers: list[tuple[str, str]]
    ) -> AsyncIterator[tuple[int, int | None, AsyncIterator[bytes]]]:
        """GET ``url`` and read its body as it streams in: the status, the ``Content-Length``
        (None if not sent) and the chunks. The caller bounds what it reads; what it leaves
        unread closes the connection."""
        target = parse_url(url)
        sent = [("Host", target.host_header), ("User-Agent", self.user_agent), *headers]
        async with self._pool.stream(
            "GET", url, headers=sent, extensions={"timeout": self._timeouts}
        ) as response:
            length: int | None = None
            for k, v in response.headers:
                if k.lower() == b"content-length" and v.strip().isdigit():
                    length = int(v)
            yield response.status, length, response.aiter_stream()

    async def aclose(self) -> None:
        await self._pool.aclose()
