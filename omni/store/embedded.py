"""The embedded PostgreSQL (the ``pgserver`` package): a real server with nothing to install.

Rules: :func:`open_embedded_postgres` starts (or joins) the server of a data directory and stops
it when the block exits — unless another process still uses it, which pgserver tracks. The server
listens on a Unix socket inside the data directory only, never on a network port. Failures are
reported as :class:`~omni.store.postgres.StoreError` with what to do about them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from omni.store import StoreError

log = logging.getLogger(__name__)


def _start(data_dir: Path) -> Any:
    from pgserver import get_server  # type: ignore[attr-defined]

    return get_server(data_dir, cleanup_mode="stop")


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
    """Yield the DSN of the embedded server running on ``data_dir``."""
    path = await trio.to_thread.run_sync(lambda: Path(data_dir).expanduser().resolve())
    _check_data_dir(path)
    _ensure_runtime_dir()
    try:
        server = await trio.to_thread.run_sync(_start, path)
    except Exception as exc:
        log_file = path / "log"
        hint = f" (see {log_file})" if log_file.exists() else ""
        raise StoreError(f"cannot start the embedded PostgreSQL in {path}: {exc}{hint}") from exc
    log.info("embedded PostgreSQL running in %s", path)
    try:
        yield str(server.get_uri())
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.cleanup)
        log.info("embedded PostgreSQL stopped")
