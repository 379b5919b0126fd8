"""The suite's own rules catch what they are meant to (a check that never fails checks
nothing): tests/conftest.py's run_leaving_nothing_behind fails a test that leaves a task or a
thread running."""

from __future__ import annotations

import threading

import pytest
import trio

from tests.conftest import run_leaving_nothing_behind


async def _bootstrap_fixtures_and_run_test(body: object) -> None:
    """Named as pytest-trio's task that runs a test and its fixtures."""
    await body()  # type: ignore[operator]


def test_a_task_left_running_fails_the_test() -> None:
    async def leaks() -> None:
        trio.lowlevel.spawn_system_task(trio.sleep_forever)

    with pytest.raises(AssertionError, match=r"tasks left running.*sleep_forever"):
        run_leaving_nothing_behind(_bootstrap_fixtures_and_run_test, leaks)


def test_a_thread_left_running_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.conftest.THREAD_EXIT_SECONDS", 0.1)
    stop = threading.Event()

    async def leaks() -> None:
        threading.Thread(target=stop.wait, name="left-behind", daemon=True).start()

    try:
        with pytest.raises(AssertionError, match=r"threads left running.*left-behind"):
            run_leaving_nothing_behind(_bootstrap_fixtures_and_run_test, leaks)
    finally:
        stop.set()


def test_a_clean_test_passes() -> None:
    async def clean() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)
        await trio.to_thread.run_sync(lambda: None)  # trio's idle worker thread may stay

    run_leaving_nothing_behind(_bootstrap_fixtures_and_run_test, clean)
