"""``omni serve`` as a newcomer runs it: a real process, real ports, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.support import connect_tcp, login, start

ROOT = Path(__file__).resolve().parent.parent


async def _spawn_serve(*args: str) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "omni.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(30):
        while b"omni: serving" not in output:
            chunk = await process.stdout.receive_some()
            assert chunk, output.decode()
            output += chunk
    return process, output.decode()


@pytest.mark.slow
async def test_serve_runs_the_example_and_stops_gracefully_on_sigterm() -> None:
    process, banner = await _spawn_serve(
        "--config", "examples/omni.toml", "--ws-port", "0", "--http-port", "0"
    )
    try:
        ws_url = re.search(r"(ws://127\.0\.0\.1:\d+)/ws/visitor", banner)
        assert ws_url, banner
        async with (
            connect_tcp(f"{ws_url.group(1)}/ws/operator") as op,
            connect_tcp(f"{ws_url.group(1)}/ws/visitor") as vera,
        ):
            welcome = await login(op, "alice-example-token")
            assert [g["name"] for g in welcome["groups"]] == ["Support L1", "Support L2"]
            started = await start(vera, service_id=25)
            assert re.fullmatch(r"\d{4}-000001", started["ticket"])
            process.send_signal(signal.SIGTERM)
            # Both clients are told the server is going away, then the process exits cleanly.
            assert (await op.until("error"))["code"] == "server_shutdown"
            assert (await vera.until("error"))["code"] == "server_shutdown"
        with trio.fail_after(15):
            assert await process.wait() == 0
        assert process.stdout is not None
        rest = b""
        while chunk := await process.stdout.receive_some():
            rest += chunk
        assert b"omni: stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[services]]\nid = "twenty-five"\nname = "x"\nlinks = []\n')
    result = await trio.run_process(
        [sys.executable, "-m", "omni.cli", "serve", "--config", str(bad)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    message = result.stderr.decode().strip()
    assert message.count("\n") == 0, message
    assert "Expected `int`, got `str` - at `$.services[0].id`" in message


async def test_serve_reports_a_missing_config(tmp_path: Path) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "omni.cli", "serve", "--config", str(tmp_path / "nope.toml")],
        capture_stderr=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert b"cannot read" in result.stderr
