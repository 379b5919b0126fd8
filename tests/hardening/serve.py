"""A real ``omni serve`` for the hardening tests: a subprocess on 127.0.0.1, free ports, a fresh
database (external, by URL: it starts in a second), attacked from the test the way a stranger on
the internet would.

Rules: every test owns its server and stops it; every loop of an attack is bounded in count and
in time; a test asserts what the server did (its answers, its log, its memory), never only that it
survived.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]

#: Strong tokens of the base configuration (at least 128 bits each).
ALICE = "alice-console-T7vQ2mZ9xKp4Lw8RsE3n"
BRUNO = "bruno-console-H5cJ8dN1fG6kP0yU2aW4"
ADMIN = "admin-api-Qe4Rt7Yu1Io9Pa3Sd6Fg8Hj2"

#: A schedule open around the clock, as a configuration file says it.
ALWAYS = """[[schedules]]
id = "always"
timezone = "UTC"
[schedules.weekly]
""" + "".join(
    f'{day} = [["00:00", "24:00"]]\n' for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
)

#: One always-open service (25) and one never-open one (26), two groups, two operators, one
#: administrator's API token; ``{server}`` takes extra lines of the ``[server]`` table,
#: ``{service}`` extra lines (or sub-tables) of service 25's.
BASE = """
[server]
host = "127.0.0.1"
ws_port = 0
http_port = 0
{server}

{always}
[[schedules]]
id = "never"
timezone = "UTC"
[schedules.weekly]

[[groups]]
id = 1
name = "Support"

[[groups]]
id = 2
name = "Night"

[[services]]
id = 25
name = "Support"
schedule = "always"
survey = "none"
links = [{{ group = 1 }}]
{service}

[[services]]
id = 26
name = "Closed"
schedule = "never"
out_of_hours_message = "We are closed."
links = [{{ group = 2 }}]

[[operators]]
id = 1
name = "Alice"
groups = [1]
capacity = 3
token = "{alice}"

[[operators]]
id = 2
name = "Bruno"
groups = [2]
capacity = 3
token = "{bruno}"

[[api_tokens]]
id = "admin"
name = "Administrator"
role = "admin"
token = "{admin}"
"""


def config_text(server: str = "", extra: str = "", service: str = "") -> str:
    """The base configuration with ``server`` lines added to ``[server]``, ``service`` lines to
    service 25's table and ``extra`` tables after it."""
    return (
        BASE.format(
            server=server, service=service, alice=ALICE, bruno=BRUNO, admin=ADMIN, always=ALWAYS
        )
        + extra
    )


@dataclass
class Served:
    process: trio.Process
    ws_url: str
    http_url: str
    #: Everything the server printed and logged so far (stdout and stderr together).
    output: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.output.decode(errors="replace")


@asynccontextmanager
async def serving(
    tmp_path: Path,
    database_url: str,
    *,
    server: str = "",
    extra: str = "",
    service: str = "",
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    config: str | None = None,
    name: str = "omni.toml",
) -> AsyncIterator[Served]:
    """``omni serve`` on a configuration made by :func:`config_text`, until the block ends (then
    SIGTERM, and SIGKILL if it does not stop within 15 s). Its data directory (attachments) is
    ``tmp_path/data`` unless ``args`` name one. ``config``: the whole configuration instead
    (written to ``tmp_path/name``)."""
    path = tmp_path / name
    path.write_text(config if config is not None else config_text(server, extra, service))
    if "--data-dir" not in args:
        # Not the default ./omni-data: that is the repository the server runs in.
        args = (*args, "--data-dir", str(tmp_path / "data"))
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OMNI_")},
        "PYTHONUNBUFFERED": "1",
        "OMNI_DATABASE_URL": database_url,
        **(env or {}),
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "omni.cli", "serve", "--config", str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=environment,
    )
    assert process.stdout is not None
    output = bytearray()
    with trio.fail_after(30):
        while b"omni: serving" not in output:
            chunk = await process.stdout.receive_some()
            assert chunk, output.decode(errors="replace")
            output += chunk
    banner = output.decode()
    ws = re.search(r"(ws://127\.0\.0\.1:\d+)/ws/visitor", banner)
    http = re.search(r"HTTP on (http://127\.0\.0\.1:\d+)", banner)
    assert ws and http, banner
    served = Served(process, ws.group(1), http.group(1), output)
    try:
        async with trio.open_nursery() as nursery:

            async def pump() -> None:
                assert process.stdout is not None
                while chunk := await process.stdout.receive_some():
                    served.output += chunk

            nursery.start_soon(pump)
            try:
                yield served
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
