"""Stopping a benchmark cleanly: Ctrl-C, SIGTERM and SIGHUP all cancel the run, so that its
``finally`` blocks stop the server and its database and remove temporary directories, and the
process exits with the usual 128 + signal status.

Shared by the benchmarks that start servers (``idle_memory.py``, ``page_weight.py``); they are
run as scripts, so this folder is on ``sys.path``."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable
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
