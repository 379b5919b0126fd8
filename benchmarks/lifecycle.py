"""Stopping a benchmark and its server cleanly, shared by the benchmarks that start
``omni serve`` (``idle_memory.py``, ``page_weight.py``, ``relay.py``; run as scripts, so this
folder is on ``sys.path``).

* Ctrl-C, SIGTERM and SIGHUP all cancel the run, so that its ``finally`` blocks stop the server
  and its database and remove temporary directories, and the process exits with the usual
  128 + signal status.
* A server is asked to stop with SIGTERM (it stops its embedded PostgreSQL), killed if it does
  not; an embedded PostgreSQL a killed server left behind is stopped from its pid file."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio


class Interrupted(Exception):
    """SIGTERM or SIGHUP: the run stops as after Ctrl-C (the server and its database too)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def until_signalled(
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
) -> Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]:
    """``run``, cancelled (its ``finally`` blocks stopping the server) by SIGTERM/SIGHUP."""

    async def running(args: argparse.Namespace) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def measured() -> None:
                    result.update(await run(args))
                    nursery.cancel_scope.cancel()

                nursery.start_soon(measured)
                async for signum in signals:
                    raise Interrupted(signum)
        return result

    return running


def exit_status(exc: BaseException) -> int | None:
    """The exit status for Ctrl-C or a signal inside (nested) exception groups, else None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (status := exit_status(inner)) is not None:
                return status
        return None
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, Interrupted):
        return 128 + exc.signum
    return None


#: How long a server may take to exit after SIGTERM (it stops its PostgreSQL), then SIGKILL.
STOP_TIMEOUT = 30.0


async def stop_server(process: trio.Process, grace: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if the server is still there after ``grace`` seconds."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        print(f"omni serve ignored SIGTERM for {grace:.0f} s: SIGKILL", file=sys.stderr)
        process.kill()
        with trio.move_on_after(grace):
            await process.wait()


def stop_embedded(data_dir: str | Path, timeout: float = STOP_TIMEOUT) -> None:
    """Stop an embedded PostgreSQL left running in ``data_dir`` (by a server killed before it
    could stop it, or on purpose, for the next server)."""
    pid_file = Path(data_dir) / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + timeout
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
