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

from omni.store.bridge import ThreadBridge
from tests.support import connect_tcp, login, start

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMNI_DATABASE_URL"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def _spawn_serve(*args: str) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "omni.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=_env(),
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
async def test_serve_runs_the_example_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """The README's run command, on the embedded PostgreSQL: up, serving, and on SIGTERM the
    clients are told, the database is stopped, the process exits 0 — a second SIGTERM during
    the shutdown too."""
    data_dir = tmp_path / "omni-data"
    process, banner = await _spawn_serve(
        "--config",
        "examples/omni.toml",
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--data-dir",
        str(data_dir),
    )
    try:
        ws_url = re.search(r"(ws://127\.0\.0\.1:\d+)/ws/visitor", banner)
        assert ws_url, banner
        async with (
            connect_tcp(f"{ws_url.group(1)}/ws/operator") as op,
            connect_tcp(f"{ws_url.group(1)}/ws/visitor") as vera,
        ):
            welcome = await login(op, "alice-example-7Rk2Qw9ZpX4mLs8V")
            assert [g["name"] for g in welcome["groups"]] == ["Support L1", "Support L2"]
            started = await start(vera, service_id=25)
            assert re.fullmatch(r"\d{4}-000001", started["ticket"])
            process.send_signal(signal.SIGTERM)
            # Both clients are told the server is going away, then the process exits cleanly.
            assert (await op.until("error"))["code"] == "server_shutdown"
            assert (await vera.until("error"))["code"] == "server_shutdown"
            # A second SIGTERM while it shuts down (an impatient supervisor) changes nothing.
            process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await process.wait() == 0
        assert process.stdout is not None
        rest = b""
        while chunk := await process.stdout.receive_some():
            rest += chunk
        assert b"omni: stopped" in rest
        # The embedded PostgreSQL stopped with it.
        assert not (data_dir / "postmaster.pid").exists()
        assert (data_dir / "PG_VERSION").exists()
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


async def _omni(*args: str, **env: str) -> tuple[int, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "omni.cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=_env(**env),
    )
    return result.returncode, (result.stdout + result.stderr).decode()


async def test_an_unreachable_database_is_reported(tmp_path: Path) -> None:
    code, output = await _omni(
        "serve",
        "--config",
        "examples/omni.toml",
        OMNI_DATABASE_URL="postgresql://omni:secret@127.0.0.1:1/omni",
    )
    assert code == 1
    assert "omni: cannot connect to PostgreSQL at postgresql://omni@127.0.0.1:1/omni" in output
    assert "secret" not in output and "Traceback" not in output


async def test_an_unusable_data_directory_is_reported(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, output = await _omni(
        "serve", "--config", "examples/omni.toml", "--data-dir", str(not_a_dir)
    )
    assert code == 1
    assert "exists and is not a directory" in output and "Traceback" not in output
    code, output = await _omni(
        "serve", "--config", "examples/omni.toml", "--data-dir", str(tmp_path / "no" / "such")
    )
    assert code == 1 and "does not exist" in output


@pytest.mark.postgresql
async def test_migrate_and_a_schema_newer_than_the_code(postgres_dsn: str) -> None:
    from omni.store.postgres import migrations

    shipped = [m.version for m in migrations()]
    assert shipped[:3] == [1, 2, 3]
    code, output = await _omni("migrate", OMNI_DATABASE_URL=postgres_dsn)
    assert code == 0 and f"applied migrations {shipped}" in output
    code, output = await _omni("migrate", OMNI_DATABASE_URL=postgres_dsn)
    assert code == 0 and "up to date" in output

    async def bump_schema() -> None:
        import asyncpg

        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (99, 'future')"
            )
        finally:
            await conn.close()

    async with ThreadBridge.open() as bridge:
        await bridge.run(bump_schema)
    code, output = await _omni(
        "serve", "--config", "examples/omni.toml", OMNI_DATABASE_URL=postgres_dsn
    )
    assert code == 1
    assert "newer than this Omni" in output and "Traceback" not in output


def test_serve_tunes_the_collector_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    import omni.cli
    from omni.server import GC_THRESHOLDS

    seen: list[tuple[int, ...]] = []
    before = gc.get_threshold()
    # Stand in for the server: record the collector's thresholds it would run with.
    monkeypatch.setattr(omni.cli.trio, "run", lambda *args: seen.append(gc.get_threshold()))
    try:
        assert omni.cli.main(["serve", "--log-level", "WARNING"]) == 0
        assert seen == [GC_THRESHOLDS]
        assert gc.get_freeze_count() > 0  # the start-up heap is out of the collector's way
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
