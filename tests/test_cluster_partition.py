"""Cluster mode cut off from PostgreSQL without a FIN (a pulled cable, tests/tcp_proxy.py;
docs/scale-out.md, "Failure modes"): a partitioned node stops acting as a group's owner before
its lease can be taken — by its local deadline, while the database still holds the lease for it
— and a listening connection gone half-open is noticed by its check, then listens again once the
network is back."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from omni.cluster import rendezvous
from omni.store import Lease, Notice, Resync, Store
from omni.store.notifications import CHECK_INTERVAL, CHECK_TIMEOUT
from omni.store.postgres import open_postgres_store
from tests.hardening.serve import Served, serving
from tests.support import connect_tcp, eventually, start
from tests.tcp_proxy import open_tcp_proxy

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

HEARTBEAT = 0.5
LEASE = 3.0
#: Cluster mode with short timings; visitors without an Origin (a program, not a browser).
CLUSTER = f"""native_visitors = true

[server.cluster]
enabled = true
heartbeat_seconds = {HEARTBEAT}
node_expiry_seconds = 2
lease_seconds = {LEASE}
"""
#: The node behind the proxy, and the one that reaches PostgreSQL directly.
CUT, DIRECT = "e", "a"


async def _leases(store: Store) -> dict[str, Lease]:
    return {lease.resource: lease for lease in await store.leases("group:")}


async def _logged(served: Served, text: str) -> float:
    """Trio's clock when ``text`` shows in the node's log (read every 10 ms: another process)."""
    needle = text.encode()
    await eventually(lambda: needle in served.output, seconds=LEASE + 10)
    return trio.current_time()


def _epoch(served: Served, name: str, group_id: int) -> int:
    found = re.findall(rf"node {name}: owns group {group_id} \(epoch (\d+)\)", served.log())
    assert len(found) == 1, served.log()
    return int(found[0])


async def test_a_partitioned_node_stops_acting_as_owner_before_its_lease_can_be_taken(
    tmp_path: Path, postgres_dsn: str
) -> None:
    # Rendezvous hashing is deterministic: group 1 (service 25's routing domain) goes to the
    # node behind the proxy, group 2's to the other (checked, so that a change of the hash
    # cannot void the test).
    assert rendezvous([CUT, DIRECT], "domain:1") == CUT
    assert rendezvous([CUT, DIRECT], "domain:2") == DIRECT
    (tmp_path / CUT).mkdir()
    (tmp_path / DIRECT).mkdir()
    async with (
        open_tcp_proxy(postgres_dsn) as proxy,
        # The test's own view of the database (it migrates the fresh database first).
        open_postgres_store(postgres_dsn) as store,
        serving(tmp_path / CUT, proxy.dsn, server=CLUSTER, args=("--node", CUT)) as a,
        serving(tmp_path / DIRECT, postgres_dsn, server=CLUSTER, args=("--node", DIRECT)) as b,
    ):
        try:

            async def split() -> bool:
                leases = await _leases(store)
                return {r: lease.owner for r, lease in leases.items() if lease.held} == {
                    "group:1": CUT,
                    "group:2": DIRECT,
                }

            await eventually(split, seconds=20)
            first_epoch = _epoch(a, CUT, 1)
            # A visitor waits in group 1 on its owner, the node about to be cut off.
            async with connect_tcp(f"{a.ws_url}/ws/visitor") as vera:
                await start(vera, 25)
                await vera.expect("queued")
                assert f"node {DIRECT}: owns group 1 " not in b.log()

                seen: dict[str, Any] = {}

                async def visitor_moved() -> None:
                    error = await vera.until("error", timeout=LEASE + 5)
                    assert error["code"] == "moved"
                    with pytest.raises(ConnectionClosed) as closed:
                        await vera.recv(timeout=5)
                    reason = closed.value.reason
                    assert reason is not None and reason.code == 1012
                    seen["visitor closed"] = trio.current_time()

                async def a_stops() -> None:
                    seen["a stops"] = await _logged(
                        a, f"node {CUT}: group 1's lease not renewed in time; stops owning it"
                    )
                    # At once: the database still holds the lease for the node that let go.
                    seen["lease when a stopped"] = (await _leases(store))["group:1"]

                async def b_owns() -> None:
                    seen["b owns"] = await _logged(b, f"node {DIRECT}: owns group 1 ")

                proxy.cut()
                cut_at = trio.current_time()
                with trio.fail_after(LEASE + 10):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(visitor_moved)
                        nursery.start_soon(a_stops)
                        nursery.start_soon(b_owns)
            taken = (await _leases(store))["group:1"]
        finally:
            proxy.heal()  # "a" reaches its database again and stops in time at the block's end

    stopped, owned, closed = seen["a stops"], seen["b owns"], seen["visitor closed"]
    print(
        f"after the cut: a stopped at {stopped - cut_at:.2f} s, its visitor closed at "
        f"{closed - cut_at:.2f} s, b owned group 1 at {owned - cut_at:.2f} s"
    )
    # The partitioned node let go first, and its visitor was told to move, before anyone else
    # could own the group.
    assert stopped < owned
    assert closed < owned
    # By its local deadline: at most 0.9 lease after its last renewal, sent before the cut.
    assert stopped - cut_at <= 0.9 * LEASE + 0.2
    # When it let go, the database still held the lease for it: nobody could take it yet.
    held: Lease = seen["lease when a stopped"]
    assert held.owner == CUT and held.epoch == first_epoch and held.remaining > 0
    # The other node took it only once the lease's lifetime after the last renewal had run out
    # (the database's clock), in the next epoch — and about a lease after the cut (the last
    # renewal came at most a heartbeat, and a beat's statements, before it).
    assert taken.owner == DIRECT and taken.epoch == first_epoch + 1
    assert taken.acquired_at >= held.expires_at
    assert _epoch(b, DIRECT, 1) == first_epoch + 1
    assert owned - cut_at >= LEASE - HEARTBEAT - 0.1
    # And promptly: at its first beat after the lease ran out.
    assert owned - cut_at <= LEASE + 2 * HEARTBEAT + 0.5


class _LogEvent(logging.Handler):
    """Sets ``event`` (and notes trio's clock) when a record containing ``text`` is logged —
    on trio's thread, where the listener logs."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text = text
        self.event = trio.Event()
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage() and not self.event.is_set():
            self.at = trio.current_time()
            self.event.set()


@contextmanager
def _watching(logger: str, text: str) -> Iterator[_LogEvent]:
    handler = _LogEvent(text)
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


async def test_a_half_open_listening_connection_is_noticed_and_listened_again(
    postgres_dsn: str,
) -> None:
    channel = "omni_partition"
    async with (
        open_tcp_proxy(postgres_dsn) as proxy,
        open_postgres_store(postgres_dsn) as direct,
        open_postgres_store(proxy.dsn) as pg,
    ):
        try:
            async with pg.listen([channel]) as notices:
                assert pg.listener is not None
                pid = await pg.listener.backend_pid()
                await direct.notify(channel, "before")
                with trio.fail_after(5):
                    assert await notices.receive() == Notice(channel, "before")
                accepted = proxy.accepted

                with _watching("omni.store.notifications", "does not answer") as lost:
                    proxy.cut()
                    cut_at = trio.current_time()
                    # No FIN: only the check (a SELECT 1 every 5 s, answered within 5 s) can
                    # tell, and nothing arrives meanwhile.
                    with trio.fail_after(CHECK_INTERVAL + CHECK_TIMEOUT + 2):
                        await lost.event.wait()
                    assert lost.at is not None
                    noticed = lost.at - cut_at
                    # Not sooner than the check's own timeout: nothing else could tell.
                    assert noticed >= CHECK_TIMEOUT
                    stats = notices.statistics()
                    assert not stats.connected and stats.reconnects == 0
                    assert stats.resyncs == 0 and stats.delivered == 1

                proxy.heal()
                with trio.fail_after(CHECK_TIMEOUT + 5):
                    assert await notices.receive() == Resync("reconnected")
                reconnected = trio.current_time() - cut_at
                stats = notices.statistics()
                assert stats.connected and stats.reconnects == 1
                # Through the proxy, on a new connection to a new backend.
                assert proxy.accepted > accepted
                assert await pg.listener.backend_pid() != pid
                await direct.notify(channel, "after")
                with trio.fail_after(5):
                    assert await notices.receive() == Notice(channel, "after")
        finally:
            proxy.heal()
    print(f"the cut noticed after {noticed:.2f} s, listening again after {reconnected:.2f} s")
