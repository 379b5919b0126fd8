"""Limits on what a stranger can make the server do (DESIGN §10, docs/security.md).

Rules of this module:

* Pure bookkeeping: every function takes the current time (trio's clock, seconds) from its
  caller, so MockClock drives it in tests; nothing here blocks or does I/O.
* :class:`TokenBucket` is the one rate mechanism (handshakes, new conversations, messages,
  typing, CAPTCHA checks): ``rate`` tokens a second up to ``burst``; a refusal says how long to
  wait (``retry_after``).
* :class:`Keyed` holds one bucket (or back-off) per key — an IP, an (IP, service) pair — in a
  bounded table: the oldest keys are forgotten first, so no flood of addresses can grow it
  without bound.
* :class:`Backoff` is the growing wait after failed credentials: free attempts, then a wait
  that doubles with each failure, up to a cap; a success forgets the key.
* :func:`client_ip` is where a request comes from: the peer's address, or — only when the peer
  is a trusted proxy — the last address ``X-Forwarded-For`` names that is not itself a trusted
  proxy.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Keys (IPs, pairs) one table remembers at most.
MAX_KEYS = 100_000


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def wait(self, now: float, cost: float = 1.0) -> float | None:
        """None when ``cost`` tokens are there now, else the seconds until they would be;
        spends nothing."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= cost:
            return None
        return (cost - self._tokens) / self.rate if self.rate > 0 else float("inf")

    def take(self, now: float, cost: float = 1.0) -> float | None:
        """Spend ``cost`` tokens: None when allowed, else the seconds until it would be."""
        wait = self.wait(now, cost)
        if wait is None:
            self._tokens -= cost
        return wait


class Keyed(Generic[K, V]):
    """One value per key, made on first use, the least recently used forgotten past
    ``max_keys``."""

    def __init__(self, make: Callable[[], V], max_keys: int = MAX_KEYS) -> None:
        self._make = make
        self._max = max_keys
        self._values: OrderedDict[K, V] = OrderedDict()

    def __getitem__(self, key: K) -> V:
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = self._make()
            if len(self._values) > self._max:
                self._values.popitem(last=False)
        else:
            self._values.move_to_end(key)
        return value

    def forget(self, key: K) -> None:
        self._values.pop(key, None)

    def __len__(self) -> int:
        return len(self._values)


class Backoff:
    """Failed attempts of one key: ``free`` failures are allowed, then each one makes the key
    wait ``base`` seconds, doubled with each further failure, up to ``cap``."""

    __slots__ = ("_failures", "_until", "base", "cap", "free")

    def __init__(self, free: int, base: float, cap: float) -> None:
        self.free = free
        self.base = base
        self.cap = cap
        self._failures = 0
        self._until = 0.0

    def wait(self, now: float) -> float | None:
        """None when an attempt may be made now, else the seconds to wait."""
        return self._until - now if now < self._until else None

    def failed(self, now: float) -> None:
        self._failures += 1
        over = self._failures - self.free
        if over > 0:
            self._until = now + min(self.cap, self.base * 2 ** (over - 1))


class Counter(Generic[K]):
    """How many of something each key holds now (connections per IP)."""

    def __init__(self) -> None:
        self._counts: dict[K, int] = {}

    def add(self, key: K) -> int:
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    def remove(self, key: K) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def __getitem__(self, key: K) -> int:
        return self._counts.get(key, 0)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDR blocks (``10.0.0.0/8``, ``::1``) as networks; ``ValueError`` names a
    bad one."""
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def _within(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_ip(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: ``peer`` unless ``peer`` is a trusted proxy, then the right-most
    address of ``X-Forwarded-For`` that is not one (each proxy appends the address it got the
    request from; only the part written by trusted proxies can be believed)."""
    if not trusted or forwarded_for is None or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from the client's side of the chain: not an address
    return hops[0] if hops else peer
