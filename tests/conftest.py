"""Fixtures. Each owns its lifetime (no shared nursery); the embedded PostgreSQL is started
once per test session — unless ``OMNI_TEST_DATABASE_URL`` names a server to use — and each
test that needs it gets a database of its own."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from tests.support import make_config

_database_numbers = itertools.count(1)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A whole server on 127.0.0.1, ephemeral ports, memory store, owned by this fixture."""
    async with open_server(
        make_config(), entropy=SeededEntropy(7), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The DSN of the session's PostgreSQL server (``postgres`` database)."""
    given = os.environ.get("OMNI_TEST_DATABASE_URL")
    if given:
        yield given
        return
    from omni.store.embedded import _ensure_runtime_dir

    _ensure_runtime_dir()  # before pgserver is imported: it reads XDG_RUNTIME_DIR at import
    from pgserver import get_server  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory(prefix="omni-test-pg-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="stop")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def fresh_database(postgres_url: str, name: str) -> str:
    """(Re)create the empty database ``name`` on the server of ``postgres_url``; its URL.
    Call it outside trio (fixtures, helper threads)."""
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return _with_database(postgres_url, name)


@pytest.fixture
def postgres_dsn(postgres_url: str) -> str:
    """A fresh, empty database for one test."""
    return fresh_database(postgres_url, f"omni_test_{os.getpid()}_{next(_database_numbers)}")
