"""In-process nodes of a cluster on the test session's PostgreSQL (docs/scale-out.md), for the
tests of cluster mode: fast timings, and one node per block, on a store (pool) of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from omni.config import Config
from omni.server import RunningServer, open_server
from omni.store.postgres import PostgresStore, open_postgres_store
from tests.support import make_config

#: Cluster mode with timings fit for tests: a beat every 0.2 s, a node dead after 0.6 s, a
#: group's lease for 1 s.
FAST_CLUSTER: dict[str, Any] = {
    "enabled": True,
    "heartbeat_seconds": 0.2,
    "node_expiry_seconds": 0.6,
    "lease_seconds": 1.0,
}


@asynccontextmanager
async def cluster_node(
    dsn: str,
    name: str,
    config: Config | None = None,
    *,
    http: bool = False,
    data_dir: Path | None = None,
    prepare: Callable[[PostgresStore], None] | None = None,
) -> AsyncIterator[tuple[RunningServer, PostgresStore]]:
    """Node ``name`` (``config``, else tests.support's configuration in fast cluster mode) until
    the block ends; ``prepare`` may wrap its store's methods before the server starts."""
    async with open_postgres_store(dsn) as store:
        if prepare is not None:
            prepare(store)
        async with open_server(
            config or make_config(cluster=FAST_CLUSTER),
            store=store,
            host="127.0.0.1",
            ws_port=0,
            http=http,
            node=name,
            data_dir=data_dir,
        ) as server:
            yield server, store
