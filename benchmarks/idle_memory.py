"""Idle-connection memory: the RSS of a real ``omni serve`` before, with N idle visitor
websockets open, and after they close (issue 12, docs/capacity.md).

Usage::

    .venv/bin/python benchmarks/idle_memory.py [--connections 2000] [--cycles 2] [--json]
    .venv/bin/python benchmarks/idle_memory.py --database-url postgresql://user@127.0.0.1/omni_scratch

The server is ``python -m omni.cli serve`` in a subprocess, on 127.0.0.1 and free ports, with a
configuration this script writes to a temporary directory: one always-open service, a group, an
operator, an admin API token, ``native_visitors = true`` and ``[server.limits]`` raised so that
one address may open the whole crowd (connections, handshakes, ``hello_timeout``); the
keep-alive stays at its default (a ping every 10 s), so each connection's keeper task is part of
the figure. Its store is PostgreSQL at ``--database-url`` (a scratch database: the server
migrates it and bootstraps the configuration into it if it is empty), else an embedded
PostgreSQL in the temporary directory, removed afterwards.

Sequence: wait until the started server's RSS is steady (``started``); open, ping and close
``--warmup`` connections so that what a first connection initialises once is not counted, and
measure again (``before``). Then, ``--cycles`` times: open ``--connections`` websockets to
``/ws/visitor`` from this process (``--concurrency`` handshakes at a time), each sending one
``{"type":"ping"}`` and reading its ``pong`` so that it is fully established, then staying idle
(no ``start``: no conversation, nothing stored); wait until the server's
``omni_connections{kind="visitor"}`` gauge (``/metrics``) counts them all, let it settle
(``--settle`` s) and measure (``with N idle``); close them all, wait until the gauge is back to
0 and measure (``after close``), and again ``--settle-after`` seconds later (``after settle``).
The second cycle shows whether the memory the first one left behind is reused.

``--collect`` is a diagnostic: the server is started through a one-line bootstrap that makes
SIGUSR1 run ``gc.collect()`` (in its main thread, between two steps of the trio loop; the
collector settings of ``omni serve`` are unchanged), the script sends it before ``before`` and
after each cycle's ``after settle``, and measures once more (``after gc.collect()``). It tells
memory held by garbage cycles that the tuned collector has not reached yet from memory held by
live objects or kept by the allocator.

A measurement is the omni process's own ``VmRSS`` (and ``RssAnon``) from ``/proc/PID/status``,
read until three readings 0.5 s apart agree within 64 KiB, and its open file descriptors. The
embedded PostgreSQL runs in other processes (a postmaster and its children, a few connections
of the store's pool): their total PSS (``/proc/PID/smaps_rollup``, shared pages divided among
them) is reported in a column of its own, never added to the server's. Per connection:
(with N idle - before) / N.

Limits: the server and this process each hold N sockets, so both need ``ulimit -n`` above N.
The script raises its own soft ``RLIMIT_NOFILE`` to N + margin before it starts the server,
which inherits it; it stops with a message if the hard limit is lower (raise it with
``ulimit -Hn``, as root or in limits.conf). Linux only (``/proc``). Every wait is bounded, all
traffic stays on 127.0.0.1, and the server is stopped (SIGTERM, then SIGKILL after
``STOP_TIMEOUT``) on every exit path, its embedded PostgreSQL with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
from lifecycle import exit_status, stop_embedded, stop_server, until_signalled
from trio_websocket import WebSocketConnection, open_websocket_url

HOST = "127.0.0.1"
#: Hosts --database-url may name (None: a Unix socket).
LOCAL_HOSTS = (None, "", "127.0.0.1", "localhost", "::1")
ROOT = Path(__file__).resolve().parents[1]

#: Strong tokens (as tests/hardening/serve.py's): nothing here signs in, but a real configuration
#: has them.
OPERATOR_TOKEN = "alice-console-T7vQ2mZ9xKp4Lw8RsE3n"
ADMIN_TOKEN = "admin-api-Qe4Rt7Yu1Io9Pa3Sd6Fg8Hj2"

CONFIG = """\
[server]
host = "127.0.0.1"
ws_port = 0
http_port = 0
native_visitors = true

# One address (this script) opens the whole crowd, and its connections never send `start`.
# ping_interval stays at its default (10 s): each connection's keep-alive task is measured.
[server.limits]
connections_per_ip = 100000
handshakes_per_second = 100000
handshake_burst = 100000
hello_timeout = 3600

[[schedules]]
id = "always"
timezone = "UTC"
[schedules.weekly]
mon = [["00:00", "24:00"]]
tue = [["00:00", "24:00"]]
wed = [["00:00", "24:00"]]
thu = [["00:00", "24:00"]]
fri = [["00:00", "24:00"]]
sat = [["00:00", "24:00"]]
sun = [["00:00", "24:00"]]

[[groups]]
id = 1
name = "Support"

[[services]]
id = 25
name = "Support"
schedule = "always"
survey = "none"
links = [{{ group = 1 }}]

[[operators]]
id = 1
name = "Alice"
groups = [1]
capacity = 3
token = "{operator}"

[[api_tokens]]
id = "admin"
name = "Administrator"
role = "admin"
token = "{admin}"
"""

#: Deadlines: every wait is bounded, so a broken server fails the run instead of hanging it.
START_TIMEOUT = 120.0  # the banner (initdb of the embedded PostgreSQL included)
STOP_TIMEOUT = 30.0  # the server exiting after SIGTERM (it stops its PostgreSQL), then SIGKILL
CONNECT_TIMEOUT = 30.0  # one websocket handshake
OPEN_TIMEOUT = 300.0  # the whole crowd open and answered
RECV_TIMEOUT = 10.0  # one pong
CLOSE_TIMEOUT = 30.0  # one close handshake; the whole crowd closed: twice that
GAUGE_TIMEOUT = 60.0  # the server's gauge reaching the expected count
STEADY_TIMEOUT = 30.0  # the RSS becoming steady (else the last reading, marked unsteady)
HTTP_TIMEOUT = 5.0  # one /metrics or /healthz request
MAX_FRAMES = 20  # frames read while waiting for the pong

STEADY_KIB = 64  # three readings within this are steady
STEADY_INTERVAL = 0.5
FD_MARGIN = 512  # descriptors beyond the crowd: listeners, the store's pool, logs, pipes

PING = '{"type":"ping"}'
BANNER = re.compile(
    rb"omni: serving websockets on (ws://127\.0\.0\.1:\d+)/ws/visitor.*"
    rb"HTTP on (http://127\.0\.0\.1:\d+)"
)


#: ``--collect``: ``omni serve`` as usual (its own collector settings included), except that
#: SIGUSR1 runs a full ``gc.collect()``. A Python signal handler runs in the main thread, between
#: two bytecodes of the trio loop: nothing else in the server changes.
COLLECTABLE = (
    "import gc, signal, sys; "
    "signal.signal(signal.SIGUSR1, lambda *_: gc.collect()); "
    "from omni.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


# == the server ==================================================================================


@dataclass
class Server:
    process: trio.Process
    ws_url: str
    http_url: str
    #: The embedded PostgreSQL's data directory (None: an external database).
    data_dir: Path | None
    #: Everything the server printed and logged (stdout and stderr together).
    output: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.output.decode(errors="replace")


def _environment(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env["PYTHONUNBUFFERED"] = "1"
    if database_url:
        env["OMNI_DATABASE_URL"] = database_url
    return env


@asynccontextmanager
async def serving(
    scratch: Path, database_url: str | None, collectable: bool = False
) -> AsyncIterator[Server]:
    """``omni serve`` until the block ends; then SIGTERM, SIGKILL after ``STOP_TIMEOUT``.
    ``collectable``: started through :data:`COLLECTABLE`, so that SIGUSR1 makes it collect."""
    config = scratch / "omni.toml"
    config.write_text(CONFIG.format(operator=OPERATOR_TOKEN, admin=ADMIN_TOKEN))
    data_dir = None if database_url else scratch / "data"
    start = ["-c", COLLECTABLE] if collectable else ["-m", "omni.cli"]
    command = [sys.executable, *start, "serve", "--config", str(config)]
    command += ["--host", HOST, "--ws-port", "0", "--http-port", "0", "--log-level", "WARNING"]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=_environment(database_url),
        start_new_session=True,  # our Ctrl-C is handled here; the server gets SIGTERM from us
    )
    output = bytearray()
    banner, drained = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as nursery:

            async def pump() -> None:
                assert process.stdout is not None
                while chunk := await process.stdout.receive_some():
                    output.extend(chunk)
                    if not banner.is_set() and BANNER.search(output):
                        banner.set()
                banner.set()  # it exited: no banner will come
                drained.set()

            nursery.start_soon(pump)
            with trio.move_on_after(START_TIMEOUT):
                await banner.wait()
            if (found := BANNER.search(output)) is None:
                tail = output.decode(errors="replace")[-3000:]
                if drained.is_set():  # its output ended: it exited, or is about to
                    with trio.move_on_after(5):
                        await process.wait()
                status = process.poll()
                raise RuntimeError(
                    f"omni serve did not start within {START_TIMEOUT:.0f} s:\n{tail}"
                    if status is None
                    else f"omni serve exited with status {status} before serving:\n{tail}"
                )
            server = Server(process, found[1].decode(), found[2].decode(), data_dir, output)
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await stop_server(process, STOP_TIMEOUT)
                    with trio.move_on_after(2):
                        await drained.wait()  # its last words
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stop_server(process, STOP_TIMEOUT)
        if data_dir is not None:
            stop_embedded(data_dir, STOP_TIMEOUT)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
        return str(response.read().decode())


async def visitor_gauge(server: Server) -> int:
    """The server's ``omni_connections{kind="visitor"}`` (0 before the first visitor)."""
    text = await trio.to_thread.run_sync(_get, server.http_url + "/metrics")
    found = re.search(r'^omni_connections\{kind="visitor"\} (\S+)$', text, re.M)
    return int(float(found[1])) if found else 0


async def wait_for_gauge(server: Server, expected: int) -> float:
    """Seconds until the visitor gauge shows ``expected``."""
    started = trio.current_time()
    seen = -1
    try:
        with trio.fail_after(GAUGE_TIMEOUT):
            while True:
                if (seen := await visitor_gauge(server)) == expected:
                    break
                await trio.sleep(0.2)
    except trio.TooSlowError:
        raise RuntimeError(
            f"omni_connections{{kind=visitor}} is {seen}, not {expected}, "
            f"after {GAUGE_TIMEOUT:.0f} s"
        ) from None
    return trio.current_time() - started


# == measuring ===================================================================================


@dataclass
class Reading:
    phase: str
    cycle: int | None
    #: Seconds since the server printed its banner.
    at: float
    rss_kib: int
    anon_kib: int
    file_kib: int
    fds: int
    #: The embedded PostgreSQL's processes, PSS summed (None: an external database).
    postgres_pss_kib: int | None
    postgres_processes: int | None
    visitors: int
    steady: bool


def _status(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[name] = int(value.split()[0])  # kB
    return fields


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of ``data_dir`` and its children (backends, checkpointer, WAL writer...)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == postmaster:  # ppid
            pids.append(int(entry))
    return pids


def _pss_kib(pids: list[int]) -> int | None:
    """Total PSS of ``pids``; None if none could be read (another user's processes)."""
    total = read = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    read += 1
                    break
    return total if read else None


def _sample(server: Server) -> tuple[dict[str, int], int, int | None, int | None]:
    status = _status(server.pid)
    fds = _fds(server.pid)
    if server.data_dir is None:
        return status, fds, None, None
    pids = _postgres_pids(server.data_dir)
    return status, fds, _pss_kib(pids), len(pids)


async def measure(
    server: Server, phase: str, cycle: int | None, settle: float, t0: float
) -> Reading:
    """After ``settle`` seconds, the server's memory once three readings agree (or after
    ``STEADY_TIMEOUT``, the last one, marked unsteady)."""
    await trio.sleep(settle)
    rss: list[int] = []
    steady = False
    with trio.move_on_after(STEADY_TIMEOUT):
        while True:
            status, fds, pss, processes = await trio.to_thread.run_sync(_sample, server)
            rss.append(status["VmRSS"])
            if len(rss) >= 3 and max(rss[-3:]) - min(rss[-3:]) <= STEADY_KIB:
                steady = True
                break
            await trio.sleep(STEADY_INTERVAL)
    if not rss:  # the deadline struck during the first sample: take one now
        status, fds, pss, processes = _sample(server)
    return Reading(
        phase=phase,
        cycle=cycle,
        at=round(trio.current_time() - t0, 1),
        rss_kib=status["VmRSS"],
        anon_kib=status["RssAnon"],
        file_kib=status["RssFile"] + status.get("RssShmem", 0),
        fds=fds,
        postgres_pss_kib=pss,
        postgres_processes=processes,
        visitors=await visitor_gauge(server),
        steady=steady,
    )


# == the crowd ===================================================================================


async def _pong(ws: WebSocketConnection) -> None:
    await ws.send_message(PING)
    with trio.fail_after(RECV_TIMEOUT):
        for _ in range(MAX_FRAMES):
            frame = json.loads(await ws.get_message())
            if frame.get("type") == "pong":
                return
            if frame.get("type") == "error":
                raise RuntimeError(f"the server answered the ping with {frame}")
    raise RuntimeError(f"no pong within {MAX_FRAMES} frames")


@dataclass
class Crowd:
    """``size`` idle visitor connections: open once all have had their pong, closed on
    :meth:`release`."""

    size: int
    opened: int = 0
    all_open: trio.Event = field(default_factory=trio.Event)
    released: trio.Event = field(default_factory=trio.Event)
    closed: int = 0
    all_closed: trio.Event = field(default_factory=trio.Event)

    async def hold(self, url: str, limiter: trio.CapacityLimiter) -> None:
        try:
            await self._hold(url, limiter)
        finally:
            self.closed += 1
            if self.closed == self.size:
                self.all_closed.set()

    async def _hold(self, url: str, limiter: trio.CapacityLimiter) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with limiter:  # the handshake and the ping, a bounded number at a time
                ws = await stack.enter_async_context(
                    open_websocket_url(
                        url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=CLOSE_TIMEOUT
                    )
                )
                await _pong(ws)
            self.opened += 1
            if self.opened == self.size:
                self.all_open.set()
            await self.released.wait()  # idle: the library answers the server's pings

    def release(self) -> None:
        self.released.set()


@asynccontextmanager
async def crowd_open(url: str, size: int, concurrency: int) -> AsyncIterator[Crowd]:
    """``size`` established, idle websockets to ``url`` until the block ends; the block's end
    closes them all (each with a close handshake) before it returns."""
    crowd = Crowd(size)
    limiter = trio.CapacityLimiter(concurrency)
    async with trio.open_nursery() as nursery:
        for _ in range(size):
            nursery.start_soon(crowd.hold, url, limiter)
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                await crowd.all_open.wait()
        except trio.TooSlowError:
            raise RuntimeError(
                f"{crowd.opened} of {size} connections open after {OPEN_TIMEOUT:.0f} s"
            ) from None
        try:
            yield crowd
        finally:
            crowd.release()
            with trio.move_on_after(2 * CLOSE_TIMEOUT) as scope:
                await crowd.all_closed.wait()
            if scope.cancelled_caught:
                nursery.cancel_scope.cancel()
                raise RuntimeError(f"the crowd did not close within {2 * CLOSE_TIMEOUT:.0f} s")


# == the run =====================================================================================


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``needed`` (the server inherits it);
    SystemExit if the hard limit is lower. Returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(
                f"idle_memory: {needed} file descriptors are needed (the server and this process "
                f"each hold one per connection) but the hard limit is {hard}: raise it "
                f"(ulimit -Hn {needed}, as root or in limits.conf) or use fewer --connections"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    readings: list[Reading] = []
    timings: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="omni-idle-memory-"))
    try:
        async with serving(scratch, args.database_url, args.collect) as server:
            t0 = trio.current_time()
            url = server.ws_url + "/ws/visitor"
            await trio.to_thread.run_sync(_get, server.http_url + "/healthz")
            readings.append(await measure(server, "started", None, args.settle, t0))
            if args.warmup:
                async with crowd_open(url, args.warmup, args.concurrency):
                    await wait_for_gauge(server, args.warmup)
                await wait_for_gauge(server, 0)
            if args.collect:
                server.process.send_signal(signal.SIGUSR1)
            readings.append(await measure(server, "before", None, args.settle, t0))
            for cycle in range(1, args.cycles + 1):
                started = trio.current_time()
                async with crowd_open(url, args.connections, args.concurrency):
                    await wait_for_gauge(server, args.connections)
                    timings[f"open_s_{cycle}"] = round(trio.current_time() - started, 2)
                    readings.append(await measure(server, "with", cycle, args.settle, t0))
                    closing = trio.current_time()
                await wait_for_gauge(server, 0)
                timings[f"close_s_{cycle}"] = round(trio.current_time() - closing, 2)
                readings.append(await measure(server, "after close", cycle, 0, t0))
                readings.append(await measure(server, "after settle", cycle, args.settle_after, t0))
                if args.collect:
                    server.process.send_signal(signal.SIGUSR1)
                    readings.append(await measure(server, "after gc.collect()", cycle, 1.0, t0))
        log = server.log()
        status = server.process.returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    before = next(r for r in readings if r.phase == "before")
    per_connection = [
        {
            "cycle": r.cycle,
            "rss_kib": round((r.rss_kib - before.rss_kib) / args.connections, 2),
            "anon_kib": round((r.anon_kib - before.anon_kib) / args.connections, 2),
        }
        for r in readings
        if r.phase == "with"
    ]
    return {
        "benchmark": "idle_memory",
        "date": date.today().isoformat(),
        "connections": args.connections,
        "warmup": args.warmup,
        "cycles": args.cycles,
        "collect": args.collect,
        "settle_s": args.settle,
        "settle_after_s": args.settle_after,
        "concurrency": args.concurrency,
        "store": "external PostgreSQL" if args.database_url else "embedded PostgreSQL",
        "ping_interval_s": 10.0,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fd_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "readings": [asdict(r) for r in readings],
        "per_connection": per_connection,
        "timings": timings,
        "server_exit_status": status,
        "server_log_problems": [
            line
            for line in log.splitlines()
            if re.search(r"WARNING|ERROR|CRITICAL|Traceback", line)
        ][:20],
    }


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def table(result: dict[str, Any]) -> str:
    n = result["connections"]
    lines = [
        f"idle memory: {n} idle visitor websockets x {result['cycles']} cycle(s), "
        f"{result['store']}, {result['cpus']} CPUs, Python {result['python']}",
        f"{'':<26}{'RSS MiB':>9}{'anon MiB':>10}{'fds':>7}{'visitors':>10}{'PG PSS MiB':>12}",
    ]
    for r in result["readings"]:
        name = {
            "started": "started (idle)",
            "before": f"before (after {result['warmup']} warm-up)",
            "with": f"with {n} idle",
        }.get(r["phase"], r["phase"])
        if r["cycle"] is not None:
            name = f"{r['cycle']}: {name}"
        if r["phase"] == "after settle":
            name += f" ({result['settle_after_s']:g} s)"
        lines.append(
            f"{name:<26}{_mib(r['rss_kib']):>9}{_mib(r['anon_kib']):>10}{r['fds']:>7}"
            f"{r['visitors']:>10}{_mib(r['postgres_pss_kib']):>12}"
            + ("" if r["steady"] else "  (not steady)")
        )
    for p in result["per_connection"]:
        lines.append(
            f"per connection, cycle {p['cycle']}: {p['rss_kib']:.1f} KiB RSS "
            f"({p['anon_kib']:.1f} KiB anonymous) = (with - before) / {n}"
        )
    if result["server_exit_status"] != 0:
        lines.append(f"note: the server exited with status {result['server_exit_status']}")
    if result["server_log_problems"]:
        lines.append(f"note: the server logged {len(result['server_log_problems'])} problem(s):")
        lines += [f"  {line}" for line in result["server_log_problems"][:5]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--connections", type=int, default=2000, help="idle visitor websockets (2000)"
    )
    parser.add_argument("--cycles", type=int, default=2, help="open/close cycles (2)")
    parser.add_argument(
        "--warmup", type=int, default=20, help="connections opened and closed first (20)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes in flight (64)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds before a measurement (5)"
    )
    parser.add_argument(
        "--settle-after", type=float, default=10.0, help="seconds after the close (10)"
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL for the server (a scratch database); default: an embedded one",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="diagnostic: make the server run gc.collect() (SIGUSR1) before 'before' and after "
        "each cycle's settle, and measure again",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 50_000:
        parser.error("--connections must be 1..50000")
    if not 1 <= args.cycles <= 20 or not 0 <= args.warmup <= 1000:
        parser.error("--cycles must be 1..20 and --warmup 0..1000")
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be 1..1000")
    if not 0 <= args.settle <= 600 or not 0 <= args.settle_after <= 600:
        parser.error("--settle and --settle-after must be 0..600")
    if args.database_url and urlsplit(args.database_url).hostname not in LOCAL_HOSTS:
        parser.error("--database-url must be a PostgreSQL on this machine (127.0.0.1)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    if not sys.platform.startswith("linux"):
        print("idle_memory: Linux only (it reads /proc)", file=sys.stderr)
        return 2
    args = parse_args(argv)
    raise_fd_limit(args.connections + args.warmup + FD_MARGIN)
    try:
        result = trio.run(until_signalled(run), args)
    except BaseException as exc:
        if (status := exit_status(exc)) is None:
            raise
        print("interrupted", file=sys.stderr)
        return status
    if not args.json:
        print(table(result))
        print()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
