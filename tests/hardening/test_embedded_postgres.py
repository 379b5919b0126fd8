"""The embedded PostgreSQL belongs to the ``omni serve`` processes that use it, across a crash:
real servers on one data directory, killed (SIGKILL) or stopped (SIGTERM).

Rules: every wait has a deadline; the postmaster is watched through ``postmaster.pid`` and
``/proc``; whatever a test started — servers and the postmaster — is stopped in its
``finally``, even when it fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from omni.store import StoreError
from omni.store.embedded import _live_users, _stop
from tests.support import connect_tcp, eventually, start

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory for a test's data directory and server logs, removed afterwards.

    Not pytest's ``tmp_path``: run as root, pgserver runs PostgreSQL as a user of its own, which
    must be able to traverse every parent of the data directory (pgserver opens them up), and
    pytest makes its base temporary directory private again whenever a pytest process starts —
    a concurrent run would lock the database out of its own data directory."""
    with tempfile.TemporaryDirectory(prefix="omni-test-embedded-") as tmp:
        yield Path(tmp)


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid in the data directory's ``postmaster.pid`` (None when there is none)."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def _wait_until_gone(pid: int, timeout: float) -> None:
    await eventually(lambda: not _is_running(pid), seconds=timeout)


class Serve:
    """One ``omni serve`` process on ``data_dir``, its output in a file of ``log_dir``."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ws_url(self) -> str:
        found = re.search(r"(ws://127\.0\.0\.1:\d+)/ws/visitor", self.output())
        assert found, self.output()
        return found.group(1)

    async def stop(self) -> int:
        """SIGTERM, then its exit status."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL, and reap it (a zombie would still look like a user of the database)."""
        self.process.kill()
        with trio.fail_after(STOP_TIMEOUT):
            await self.process.wait()


@asynccontextmanager
async def _serve(data_dir: Path, log: Path) -> AsyncIterator[Serve]:
    """``omni serve`` on ``data_dir``, yielded once it serves; killed on exit if still running."""
    env = {k: v for k, v in os.environ.items() if k != "OMNI_DATABASE_URL"}
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [
                *(sys.executable, "-m", "omni.cli", "serve", "--config", "examples/omni.toml"),
                *("--ws-port", "0", "--http-port", "0", "--data-dir", str(data_dir)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    serve = Serve(process, log)

    def ready() -> bool:
        assert process.returncode is None, serve.output()
        return "serving websockets on" in serve.output()

    try:
        await eventually(ready, seconds=STARTUP_TIMEOUT)
        assert "HTTP on http://" in serve.output()
        yield serve
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()


@asynccontextmanager
async def _postgres_stopped_afterwards(data_dir: Path) -> AsyncIterator[set[int]]:
    """Yield a set the test adds the postmaster pids it sees to; on exit, any of them (or the
    one ``postmaster.pid`` names) still running is shut down (SIGQUIT, then SIGKILL)."""
    seen: set[int] = set()
    try:
        yield seen
    finally:
        current = _postmaster_pid(data_dir)
        for pid in seen | ({current} if current is not None else set()):
            for signum in (signal.SIGQUIT, signal.SIGKILL):
                if not _is_running(pid):
                    break
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    break
                with trio.move_on_after(5):
                    await _wait_until_gone(pid, timeout=5)


@pytest.mark.slow
async def test_a_server_takes_over_and_stops_the_postgres_a_killed_server_left_running(
    workdir: Path,
) -> None:
    data_dir = workdir / "omni-data"
    async with _postgres_stopped_afterwards(data_dir) as postmasters:
        async with _serve(data_dir, workdir / "first.log") as first:
            postmaster = _postmaster_pid(data_dir)
            assert postmaster is not None
            postmasters.add(postmaster)
            await first.kill()
        # The crash leaves the database running (nothing can stop it at SIGKILL)...
        assert _is_running(postmaster)

        async with _serve(data_dir, workdir / "second.log") as second:
            # ...the next server uses it rather than starting another one...
            assert _postmaster_pid(data_dir) == postmaster
            assert await second.stop() == 0, second.output()
        # ...and, now its only user, stops it when it stops.
        await _wait_until_gone(postmaster, timeout=10)
        assert not (data_dir / "postmaster.pid").exists(), second.output()


@pytest.mark.slow
async def test_a_server_leaves_the_postgres_running_for_another_live_server(
    workdir: Path,
) -> None:
    data_dir = workdir / "omni-data"
    async with (
        _postgres_stopped_afterwards(data_dir) as postmasters,
        _serve(data_dir, workdir / "staying.log") as staying,
    ):
        postmaster = _postmaster_pid(data_dir)
        assert postmaster is not None
        postmasters.add(postmaster)
        async with _serve(data_dir, workdir / "leaving.log") as leaving:
            assert _postmaster_pid(data_dir) == postmaster
            assert await leaving.stop() == 0, leaving.output()
        # The leaving server has stopped entirely (pg_ctl stop waits), and the database is up.
        assert _is_running(postmaster), leaving.output()
        async with connect_tcp(f"{staying.ws_url()}/ws/visitor") as visitor:
            started = await start(visitor, service_id=25)
            assert re.fullmatch(r"\d{4}-\d{6}", started["ticket"])

        assert await staying.stop() == 0, staying.output()
        await _wait_until_gone(postmaster, timeout=10)


class _Users:
    """pgserver's DiskList of the pids using a server, in memory."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def get(self) -> list[int]:
        return list(self.pids)

    def put(self, pids: list[int]) -> None:
        self.pids = list(pids)


class _FakePostgresServer:
    """Just the bookkeeping of pgserver's PostgresServer; ``cleanup`` leaves, never stops."""

    _lock = threading.Lock()

    def __init__(self, pids: list[int], postmaster: int) -> None:
        self.pgdata = Path("/nonexistent/omni-data")
        self.global_process_id_list = _Users(pids)
        self.postmaster = postmaster

    def get_pid(self) -> int:
        return self.postmaster

    def cleanup(self) -> None:
        self.global_process_id_list.pids.remove(os.getpid())


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait(timeout=STOP_TIMEOUT)
    return child.pid


def test_the_dead_users_of_a_server_are_forgotten_and_the_live_ones_kept() -> None:
    dead = _dead_pid()
    parent = os.getppid()  # alive for as long as this test runs
    server = _FakePostgresServer([dead, parent, os.getpid()], postmaster=parent)
    assert _live_users(server) == [parent, os.getpid()]
    assert server.global_process_id_list.pids == [parent, os.getpid()]


def test_a_pgserver_that_keeps_its_users_otherwise_is_refused() -> None:
    with pytest.raises(StoreError, match="does not keep the users of its server"):
        _live_users(object())
    server = _FakePostgresServer([os.getpid()], postmaster=os.getppid())
    server.global_process_id_list.pids = [{"pid": os.getpid()}]  # type: ignore[list-item]
    with pytest.raises(StoreError, match="not a list of pids"):
        _live_users(server)


def test_a_server_left_running_with_no_user_is_an_error() -> None:
    """Should pgserver's cleanup ever leave the server running when its last user leaves,
    leaving the block fails loudly rather than quietly leaving a database behind."""
    alive = os.getppid()  # stands for a postmaster that pgserver did not stop
    server = _FakePostgresServer([_dead_pid(), os.getpid()], postmaster=alive)
    with pytest.raises(StoreError, match="still running although no process uses it"):
        _stop(server)
    assert server.global_process_id_list.pids == []
