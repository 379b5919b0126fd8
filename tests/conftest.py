"""Fixtures. Each owns its lifetime (no shared nursery); the embedded PostgreSQL is started
once per test session — unless ``OMNI_TEST_DATABASE_URL`` names a server to use — and each
test that needs it gets a database of its own.

Every trio test runs under :func:`run_leaving_nothing_behind`: once the test and its fixtures
are done, nothing it started may still run — no task left for trio to cancel (a system task),
no thread it started (a bridge, an abandoned worker)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.store import Store
from omni.store.memory import MemoryStore
from omni.store.postgres import open_postgres_store
from tests.support import make_config

_database_numbers = itertools.count(1)

#: Tasks trio itself keeps until the end of every run.
TRIO_OWN_TASKS = {"<init>", "<TrioToken.run_sync_soon task>"}
#: How long a thread a test started may take to finish after the test.
THREAD_EXIT_SECONDS = 5.0


class _TaskLedger(trio.abc.Instrument):
    """The tasks alive when the test's own task (pytest-trio's, which runs the test and its
    fixtures) ends: anything beyond trio's own is a task the test left behind."""

    def __init__(self) -> None:
        self.alive: set[trio.lowlevel.Task] = set()
        self.left_behind: list[str] | None = None

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.alive.add(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.alive.discard(task)
        if self.left_behind is None and task.name.endswith("_bootstrap_fixtures_and_run_test"):
            self.left_behind = sorted(t.name for t in self.alive if t.name not in TRIO_OWN_TASKS)


def run_leaving_nothing_behind(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``trio.run`` for a test, then the check that it left no task or thread running."""
    ledger = _TaskLedger()
    kwargs["instruments"] = [*kwargs.get("instruments", ()), ledger]
    before = set(threading.enumerate())
    result = trio.run(fn, *args, **kwargs)
    assert not ledger.left_behind, f"tasks left running after the test: {ledger.left_behind}"
    started = [
        t
        for t in set(threading.enumerate()) - before
        if not t.name.startswith("Trio thread")  # trio's cache of idle worker threads
    ]
    for thread in started:
        thread.join(THREAD_EXIT_SECONDS)
    alive = [t.name for t in started if t.is_alive()]
    assert not alive, f"threads left running after the test: {alive}"
    return result


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.add_marker(pytest.mark.trio(run=run_leaving_nothing_behind))


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


def drop_database(postgres_url: str, name: str) -> None:
    """Drop a test's database (and whatever still holds it open) once it is done with."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def postgres_dsn(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped after it."""
    name = f"omni_test_{os.getpid()}_{next(_database_numbers)}"
    yield fresh_database(postgres_url, name)
    drop_database(postgres_url, name)


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgresql)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each store of the contract suites, owned by the test: a MemoryStore, and a
    PostgresStore on a fresh database."""
    if request.param == "memory":
        yield MemoryStore()
        return
    async with open_postgres_store(request.getfixturevalue("postgres_dsn")) as pg:
        yield pg
