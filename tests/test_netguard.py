"""The SSRF guard (``omni.netguard``): which addresses outgoing calls may reach, and that a call
goes to the address that was checked.

The classification is checked against an oracle written here from the IANA special-purpose
address registries (not from :mod:`ipaddress`'s own properties), over every kind of address
hypothesis makes, IPv4 and IPv6, and IPv4 addresses dressed up as IPv6 ones. Calls are real HTTP
on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import partial
from typing import Any

import httpcore
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from omni.netguard import Guard, GuardedBackend, OutboundHttp, Refused, non_global, parse_url

# IANA IPv4 and IPv6 Special-Purpose Address Registries: blocks that are not globally reachable
# (plus multicast, which is not unicast at all, and the IPv6 blocks that carry an IPv4 address,
# judged by that address below).
IPV4_NOT_GLOBAL = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
IPV6_NOT_GLOBAL = [
    "::/8",  # unspecified, loopback, IPv4-compatible (deprecated), reserved
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "64:ff9b:1::/48",
]
# Global blocks inside the non-global ones above (the registry's exceptions).
IPV4_GLOBAL_INSIDE = ["192.0.0.9/32", "192.0.0.10/32"]
IPV6_GLOBAL_INSIDE = [
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:20::/28",
    "2001:30::/28",
]
CARRIERS = {
    "mapped": lambda v4: ipaddress.IPv6Address(int(ipaddress.IPv6Address("::ffff:0:0")) | int(v4)),
    "nat64": lambda v4: ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4)),
    "6to4": lambda v4: ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1),
}


def oracle_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        value = int(address)
        if value >> 32 == 0xFFFF or value >> 32 == int(ipaddress.IPv6Address("64:ff9b::")) >> 32:
            return oracle_global(ipaddress.IPv4Address(value & 0xFFFFFFFF))
        if value >> 112 == 0x2002:
            return oracle_global(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
        if value >> 96 == 0x20010000:  # Teredo: the client's address, inverted, at the end
            return oracle_global(ipaddress.IPv4Address(~value & 0xFFFFFFFF))
        if address not in ipaddress.ip_network("2000::/3"):
            return False  # outside global unicast: the IPv6 Address Space registry's "reserved"
        blocks, exceptions = IPV6_NOT_GLOBAL, IPV6_GLOBAL_INSIDE
    else:
        blocks, exceptions = IPV4_NOT_GLOBAL, IPV4_GLOBAL_INSIDE
    if any(address in ipaddress.ip_network(b) for b in exceptions):
        # Python 3.11's ipaddress does not know every exception; the guard errs on refusing.
        return non_global(address) is None
    return not any(address in ipaddress.ip_network(b) for b in blocks)


def addresses_in(
    blocks: list[str],
) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    def pick(block: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        net = ipaddress.ip_network(block)
        first = int(net.network_address)
        return st.integers(first, first + net.num_addresses - 1).map(ipaddress.ip_address)

    return st.sampled_from(blocks).flatmap(pick)


ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
# Plain random addresses rarely land in the special blocks: draw from them on purpose too.
special = addresses_in(IPV4_NOT_GLOBAL) | addresses_in(IPV6_NOT_GLOBAL)
carried = st.tuples(st.sampled_from(sorted(CARRIERS)), ipv4 | addresses_in(IPV4_NOT_GLOBAL)).map(
    lambda c: CARRIERS[c[0]](c[1])
)


@settings(max_examples=1000, deadline=None)
@given(ipv4 | ipv6 | special | carried)
@example(ipaddress.ip_address("169.254.169.254"))
@example(ipaddress.ip_address("::ffff:127.0.0.1"))
@example(ipaddress.ip_address("::ffff:169.254.169.254"))
@example(ipaddress.ip_address("64:ff9b::a00:1"))
@example(ipaddress.ip_address("2002:7f00:1::1"))
@example(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe"))  # Teredo, 127.0.0.1
def test_only_global_addresses_pass(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    reason = non_global(address)
    assert (reason is None) == oracle_global(address), (address, reason)
    guard = Guard()
    if reason is None:
        guard.check_address(address)
    else:
        with pytest.raises(Refused) as refused:
            guard.check_address(address)
        assert str(address) in refused.value.message and reason in refused.value.message


@given(carried)
def test_an_ipv4_address_carried_in_ipv6_is_judged_as_itself(
    address: ipaddress.IPv6Address,
) -> None:
    value = int(address)
    inner = (
        ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
        if value >> 112 == 0x2002
        else ipaddress.IPv4Address(value & 0xFFFFFFFF)
    )
    assert non_global(address) == non_global(inner)


@pytest.mark.parametrize(
    "address,reason",
    [
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("240.0.0.1", "private"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("192.88.99.1", "special-purpose"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_the_reasons(address: str, reason: str | None) -> None:
    assert non_global(ipaddress.ip_address(address)) == reason


def test_the_allowance_lets_exactly_its_networks_through() -> None:
    guard = Guard([ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")])
    for allowed in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "8.8.8.8"):
        guard.check_address(ipaddress.ip_address(allowed))
    for refused in ("127.0.0.2", "10.0.0.1", "169.254.169.254", "::2"):
        with pytest.raises(Refused, match=refused.replace(".", r"\.")):
            guard.check_address(ipaddress.ip_address(refused))


@pytest.mark.parametrize(
    "url,problem",
    [
        ("ftp://example.com/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com", "only http and https"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https:///nohost", "no host"),
        ("http://[::1/x", "not a URL"),
        ("http://example.com:99999/", "not a URL"),
    ],
)
def test_urls_that_are_refused_before_any_lookup(url: str, problem: str) -> None:
    with pytest.raises(Refused, match=problem):
        parse_url(url)


def test_a_url_parts() -> None:
    target = parse_url("HTTPS://Hooks.Example.com/omni?x=1")
    assert (target.scheme, target.host, target.port, target.host_header) == (
        "https",
        "hooks.example.com",
        443,
        "hooks.example.com",
    )
    assert parse_url("http://[::1]:8080/").host_header == "[::1]:8080"


@pytest.mark.parametrize(
    "url,named",
    [
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "(127.0.0.1) is a loopback address"),
        ("http://localhost:8080/hook", "localhost resolves to"),
        ("http://0.0.0.0:80/", "0.0.0.0 is a unspecified address"),
    ],
)
async def test_check_url_refuses_non_global_destinations(url: str, named: str) -> None:
    with pytest.raises(Refused) as refused:
        await Guard().check_url(url)
    assert named in refused.value.message


class _Resolver(trio.abc.HostnameResolver):
    """A name server in the test: each name answers the next of its lists of addresses (the
    last one for ever after), and every question is counted."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def getaddrinfo(
        self, host: bytes | str | None, port: object, *args: object, **kw: object
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        lists = self.answers[name]
        found = lists.pop(0) if len(lists) > 1 else lists[0]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, int(port)) if ":" not in a else (a, int(port), 0, 0),
            )  # type: ignore[call-overload]
            for a in found
        ]

    async def getnameinfo(self, sockaddr: object, flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_a_name_with_one_refused_address_is_refused() -> None:
    resolver = _Resolver({"mixed.test": [["8.8.8.8", "127.0.0.1"]]})
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with pytest.raises(Refused) as refused:
            await Guard().check_url("https://mixed.test/hook")
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert refused.value.message == "mixed.test resolves to 127.0.0.1, a loopback address"


async def test_the_connection_goes_to_the_address_checked_whatever_dns_says_next() -> None:
    """DNS rebinding: the name answers an allowed address, then a forbidden one. The guard asks
    once per connection and connects to what it checked — never asking the name again."""
    resolver = _Resolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    seen: list[bytes] = []
    answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    recorder = _Recorder()
    guard = Guard([ipaddress.ip_network("127.0.0.1/32")])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_once, answer, seen)
        trio.socket.set_custom_hostname_resolver(resolver)
        http = OutboundHttp(
            guard,
            connect_timeout=5,
            read_timeout=5,
            max_response_bytes=10,
            backend=GuardedBackend(guard, recorder),
        )
        try:
            got = await http.post(f"http://rebind.test:{port}/hook", b"{}", [])
            # The next connection asks again, and this time the answer is refused.
            with pytest.raises(Refused, match=r"10\.0\.0\.1, a private address"):
                await http.post(f"http://rebind.test:{port + 1}/hook", b"{}", [])
        finally:
            trio.socket.set_custom_hostname_resolver(None)
            await http.aclose()
        nursery.cancel_scope.cancel()
    assert got.status == 204
    assert resolver.asked == ["rebind.test", "rebind.test"]
    assert recorder.hosts == ["127.0.0.1"]
    assert f"Host: rebind.test:{port}\r\n".encode() in seen[0]


class _Recorder(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, remembering which hosts it was asked to connect to."""

    def __init__(self) -> None:
        self.inner = httpcore.TrioBackend()
        self.hosts: list[str] = []

    async def connect_tcp(
        self, host: str, port: int, *args: object, **kw: object
    ) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        return await self.inner.connect_tcp(host, port, *args, **kw)  # type: ignore[arg-type]


async def _serve_once(answer: bytes, seen: list[bytes], task_status: trio.TaskStatus[int]) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        seen.append(data)
        await stream.send_all(answer)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


async def test_a_call_goes_to_the_checked_address_with_the_names_host_header() -> None:
    """``localhost`` is resolved by the guard and the connection made to the address checked
    (127.0.0.1): the HTTP client's connect is never given the name itself."""
    seen: list[bytes] = []
    answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    recorder = _Recorder()
    guard = Guard([ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_once, answer, seen)
        http = OutboundHttp(
            guard,
            connect_timeout=5,
            read_timeout=5,
            max_response_bytes=100,
            backend=GuardedBackend(guard, recorder),
        )
        try:
            got = await http.post(f"http://localhost:{port}/hook", b"{}", [("X-Test", "1")])
        finally:
            await http.aclose()
        nursery.cancel_scope.cancel()
    assert got.status == 204
    assert recorder.hosts and all(ipaddress.ip_address(h).is_loopback for h in recorder.hosts)
    assert f"Host: localhost:{port}\r\n".encode() in seen[0]


async def test_no_redirect_is_followed_and_the_answer_is_capped() -> None:
    seen: list[bytes] = []
    answer = (
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\n"
        b"Content-Length: 1000\r\n\r\n" + b"x" * 1000
    )
    guard = Guard([ipaddress.ip_network("127.0.0.1/32")])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_once, answer, seen)
        http = OutboundHttp(guard, connect_timeout=5, read_timeout=5, max_response_bytes=10)
        try:
            got = await http.post(f"http://127.0.0.1:{port}/hook", b"{}", [])
        finally:
            await http.aclose()
        nursery.cancel_scope.cancel()
    assert (got.status, got.location, got.body) == (302, "http://127.0.0.1:1/elsewhere", b"x" * 10)
    assert len(seen) == 1  # nothing went to the redirect's target


async def test_without_the_allowance_a_call_to_loopback_is_refused_before_connecting() -> None:
    recorder = _Recorder()
    guard = Guard()
    http = OutboundHttp(
        guard,
        connect_timeout=5,
        read_timeout=5,
        max_response_bytes=10,
        backend=GuardedBackend(guard, recorder),
    )
    try:
        for url in ("http://127.0.0.1:9/", "http://localhost:9/", "http://[::1]:9/"):
            with pytest.raises(Refused):
                await http.post(url, b"{}", [])
    finally:
        await http.aclose()
    assert recorder.hosts == []
