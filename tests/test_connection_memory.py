"""A closed connection is freed as it closes — by reference counting, not by a later full
collection of the cyclic garbage collector, which the server runs rarely (``tune_gc``).

A connection that was part of a reference cycle stayed in memory with its socket, its tasks
and its buffers until such a collection: opening and closing sockets within the per-address
limits grew the server by 6 to 12 KiB a connection (docs/capacity.md).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from omni.gateway.server import WebSocketPeer
from omni.server import open_server
from tests.support import connect_tcp, eventually, make_config, start


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _peers() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, WebSocketPeer))


async def test_closed_connections_are_freed_without_the_collector(no_collector: None) -> None:
    async with open_server(make_config(), host="127.0.0.1", ws_port=0, http=False) as srv:
        for started in (False, True):
            for _ in range(5):
                async with connect_tcp(f"{srv.ws_url}/ws/visitor") as vera:
                    if started:
                        await start(vera)  # its conversation waits on, without her
                    await vera.send("ping")
                    await vera.until("pong")
            await eventually(lambda: srv.hub.metrics.connections["visitor"] == 0)
            await eventually(lambda: _peers() == 0, 5)
