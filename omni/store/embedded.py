"""The embedded PostgreSQL (the ``pgserver`` package): a real server with nothing to install.

Rules: :func:`open_embedded_postgres` starts (or joins) the server of a data directory and stops
it when the block exits — unless another live process still uses it. The server listens on a
Unix socket inside the data directory only, never on a network port. Failures are reported as
:class:`~omni.store.postgres.StoreError` with what to do about them.

Owning the server across a crash. pgserver keeps the processes that use a data directory's
server in ``<data dir>/.handle_pids.json`` (a ``DiskList`` of pids, read and written under its
inter-process lock ``PostgresServer._lock``): ``get_server`` appends the caller's pid, and
``cleanup`` — also registered with ``atexit`` — removes it and stops the server only when the
list was exactly ``[own pid]``. It never checks whether the other pids are still alive. A process
killed with SIGKILL runs neither ``cleanup`` nor its ``atexit`` hooks, so its pid stays in the
list forever: the server it started keeps running, and every later process that joins it sees a
"user" besides itself and leaves it running too. pgserver has no public API to forget a dead
user, so this module does it: after joining and again before leaving, it removes from the list,
under pgserver's own lock, the pids of processes that no longer exist (or are zombies). A live
process on the same data directory — another ``omni serve``, an ``omni migrate`` — keeps its
entry, so its server is never stopped under it.

What that relies on, checked rather than assumed: the server object has
``global_process_id_list`` (``get``/``put`` of a list of ints) and its class a ``_lock`` context
manager; if either is missing or the list holds anything but pids, opening fails with a
:class:`StoreError` naming the pgserver version. And after ``cleanup`` with no live user left,
the postmaster must be gone; if it is not, leaving the block raises :class:`StoreError` instead
of quietly leaving a server behind. A pid reused by an unrelated process after its Omni died
looks alive: the server is then left running (the old behaviour, never the unsafe one) and the
next start takes it over once that process is gone.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio

from omni.store import StoreError

log = logging.getLogger(__name__)


def _start(data_dir: Path) -> Any:
    from pgserver import get_server  # type: ignore[attr-defined]

    return get_server(data_dir, cleanup_mode="stop")


def _process_is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has: only its exit status is
    left for its parent to collect)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user (pgserver runs postgres as its own user under root)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False  # exited between the two looks
    except OSError:
        return True  # no /proc (not Linux): existing is all we can tell
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")".
    return stat.rpartition(")")[2].split()[0] != "Z"


def _bookkeeping(server: Any) -> tuple[Any, Any]:
    """pgserver's list of the processes using ``server`` and the lock that guards it; a
    :class:`StoreError` if this pgserver does not keep them as this module expects."""
    users = getattr(server, "global_process_id_list", None)
    lock = getattr(type(server), "_lock", None)
    if (
        users is None
        or not callable(getattr(users, "get", None))
        or not callable(getattr(users, "put", None))
        or not hasattr(lock, "__enter__")
    ):
        raise StoreError(
            f"pgserver {version('pgserver')} does not keep the users of its server as "
            "omni/store/embedded.py expects (global_process_id_list, PostgresServer._lock); "
            "update that module"
        )
    return users, lock


def _live_users(server: Any) -> list[int]:
    """Forget the processes that used ``server`` and are gone; the pids of those still alive
    (this one included, while it is registered)."""
    users, lock = _bookkeeping(server)
    with lock:
        pids = users.get()
        if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
            raise StoreError(
                f"pgserver {version('pgserver')} keeps {pids!r} as the users of {server.pgdata}, "
                "not a list of pids; update omni/store/embedded.py"
            )
        alive = [pid for pid in pids if pid == os.getpid() or _process_is_alive(pid)]
        if alive != pids:
            users.put(alive)
    gone = sorted(set(pids) - set(alive))
    if gone:
        log.warning(
            "the embedded PostgreSQL in %s was also used by process(es) %s, which are gone "
            "(killed?): this process now owns it and stops it when it is the last user",
            server.pgdata,
            gone,
        )
    return alive


def _stop(server: Any) -> None:
    """Leave ``server``; stop it when no other live process uses it."""
    postmaster = server.get_pid()
    _live_users(server)  # a user that died while we ran must not keep the server alive
    server.cleanup()
    others = _live_users(server)
    if others:
        log.info("embedded PostgreSQL left running for process(es) %s, which use it", others)
    elif postmaster is not None and _process_is_alive(postmaster):
        raise StoreError(
            f"the embedded PostgreSQL in {server.pgdata} (pid {postmaster}) is still running "
            "although no process uses it: pgserver did not stop it (see "
            f"{server.pgdata / 'log'}); omni/store/embedded.py must be updated"
        )
    else:
        log.info("embedded PostgreSQL stopped")


def _check_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreError(f"the data directory {data_dir} exists and is not a directory")
    parent = data_dir.parent
    if not parent.exists():
        raise StoreError(f"the data directory's parent {parent} does not exist")
    if not os.access(parent if not data_dir.exists() else data_dir, os.W_OK):
        raise StoreError(f"the data directory {data_dir} is not writable")


def _ensure_runtime_dir() -> None:
    """pgserver keeps its inter-process lock under XDG_RUNTIME_DIR, and warns when that is unset
    (containers, CI): give it a private directory that every Omni process of this user shares."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"omni-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


@asynccontextmanager
async def open_embedded_postgres(data_dir: str | Path) -> AsyncIterator[str]:
    """Yield the DSN of the embedded server running on ``data_dir``, starting it if needed.

    On exit the server is stopped unless another live process still uses it; one left running
    by a process that died without stopping it (SIGKILL, a crash) is taken over and stopped.
    """
    path = await trio.to_thread.run_sync(lambda: Path(data_dir).expanduser().resolve())
    _check_data_dir(path)
    _ensure_runtime_dir()
    try:
        server = await trio.to_thread.run_sync(_start, path)
    except Exception as exc:
        log_file = path / "log"
        hint = f" (see {log_file})" if log_file.exists() else ""
        raise StoreError(f"cannot start the embedded PostgreSQL in {path}: {exc}{hint}") from exc
    try:
        await trio.to_thread.run_sync(_live_users, server)
    except StoreError:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.cleanup)  # leave as pgserver alone would
        raise
    log.info("embedded PostgreSQL running in %s", path)
    try:
        yield str(server.get_uri())
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_stop, server)
