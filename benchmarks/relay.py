"""Relay benchmark: Omni's message path against a bare trio-websocket relay, in the same run.

Usage::

    .venv/bin/python benchmarks/relay.py [--pairs 100] [--messages 50] [--warmup 5] [--json]
    nox -s bench -- --json

Two servers are measured one after the other, each in its own subprocess (its own
``trio.run``, one core), with every client in this process (the other core):

* **bare** — the stack's ceiling: a minimal trio-websocket server where each "visitor"
  connection is paired with an "operator" connection and every text frame is forwarded to the
  other side as it is, without parsing.
* **omni** — the whole server (``omni.server.open_server``, no HTTP): operators sign in and go
  available, visitors start, each operator accepts its offer, then the same traffic runs over
  the real protocol (``message`` frames, acks, sequence numbers, actors, store).

Traffic, identical for both: all pairs run concurrently; each pair does ``--messages`` round
trips: the visitor sends a ``message`` carrying its ``time.perf_counter()`` send time, the
operator receives it (one latency sample), replies with a fresh timestamp, and the visitor
receives the reply (a second sample) before sending the next one. Throughput is the number of
messages delivered in both directions divided by the wall time of that exchange phase; latency
is end to end (receiving client's clock minus sending client's clock, both in this process).
The ratios omni/bare are what to compare across machines; the absolute figures are not.

The target (throughput ratio >= 0.6, p99 ratio <= 2.0 at 100 pairs) is only reported: the
benchmark never fails because of it. The machine may be shared, so ``--repeat`` rounds (bare
then omni each time) are run and the medians reported. ``--profile [omni|bare|both]`` runs the
server under cProfile during the exchange phase and prints its top 25 functions (cumulative and
own time) to stderr; the figures are then not representative (use ``--repeat 1``). The hidden
``--serve bare|omni`` flag runs one server; the parent uses it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import trio
from lifecycle import stop_embedded
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

HOST = "127.0.0.1"
TARGET_THROUGHPUT_RATIO = 0.6  # omni/bare, at least
TARGET_P99_RATIO = 2.0  # omni/bare, at most
TARGET_PAIRS = 100
TARGET_DURABLE_THROUGHPUT_RATIO = 0.5  # omni on PostgreSQL / bare, at least (issue 3)

#: Deadlines: every wait is bounded, so a broken server fails the run instead of hanging it.
RECV_TIMEOUT = 10.0  # one frame
SETUP_TIMEOUT = 60.0  # connecting, signing in, starting and accepting every conversation
EXCHANGE_TIMEOUT = 90.0  # the measured phase
PORT_TIMEOUT = 30.0  # a server subprocess reporting its port
SERVER_LIFETIME = 300.0  # a server subprocess never outlives this
STOP_TIMEOUT = 10.0  # a server subprocess exiting after its stdin closed
MAX_SKIPPED = 200  # frames skipped while waiting for one (acks, greetings, queue updates)
MAX_RELAYED = 10_000_000  # frames one bare relay connection forwards at most


def operator_token(n: int) -> str:
    """Operator ``n``'s console token (strong enough for the server; public: benchmarks only)."""
    return f"bench-op-{n}-Jr5Wq9Zm3Xk7Lp2V"


# == servers (run in a subprocess with --serve) ==================================================


@dataclass
class _Pair:
    sides: dict[str, WebSocketConnection] = field(default_factory=dict)
    ready: trio.Event = field(default_factory=trio.Event)


class BareRelay:
    """``/v/KEY`` and ``/o/KEY`` are paired; each text frame goes verbatim to the other side."""

    def __init__(self) -> None:
        self._pairs: dict[str, _Pair] = {}

    async def handle(self, request: WebSocketRequest) -> None:
        side, _, key = request.path.strip("/").partition("/")
        if side not in ("v", "o") or not key:
            await request.reject(404, body=b"use /v/KEY or /o/KEY")
            return
        ws = await request.accept()
        pair = self._pairs.setdefault(key, _Pair())
        pair.sides[side] = ws
        if len(pair.sides) == 2:
            pair.ready.set()
        with trio.move_on_after(SETUP_TIMEOUT):
            await pair.ready.wait()
        if not pair.ready.is_set():
            await ws.aclose(1008, "no partner")
            return
        other = pair.sides["o" if side == "v" else "v"]
        try:
            await ws.send_message('{"type":"paired"}')
            for _ in range(MAX_RELAYED):
                await other.send_message(await ws.get_message())
        except ConnectionClosed:
            pass
        finally:
            self._pairs.pop(key, None)
            with trio.move_on_after(2):
                await other.aclose()


def omni_config(operators: int) -> Any:
    """One always-open service, one group, ``operators`` operators of capacity 1."""
    from omni.config import parse_config
    from omni.settings import ONE_ADDRESS_CROWD

    always = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    return parse_config(
        {
            # One address, programs for clients, flat out: the limits for strangers (of which
            # only the per-connection buckets are checked per frame) are set out of reach.
            "server": {
                "host": HOST,
                "ws_port": 0,
                "http_port": 0,
                "native_visitors": True,
                "native_operators": True,
                "limits": {
                    **ONE_ADDRESS_CROWD,
                    "messages_per_second": 1_000_000,
                    "message_burst": 1_000_000,
                },
            },
            "schedules": [{"id": "always", "timezone": "UTC", "weekly": always}],
            "groups": [{"id": 1, "name": "Bench"}],
            "services": [{"id": 1, "name": "Bench", "schedule": "always", "links": [{"group": 1}]}],
            "operators": [
                {
                    "id": n,
                    "name": f"Operator {n}",
                    "groups": [1],
                    "capacity": 1,
                    "token": operator_token(n),
                }
                for n in range(1, operators + 1)
            ],
        }
    )


async def _control(profiler: cProfile.Profile | None) -> None:
    """Read commands from stdin until it closes (the parent exiting closes it too)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        for _ in range(10_000):
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if profiler is not None and line == b"profile on":
                    profiler.enable()
                elif profiler is not None and line == b"profile off":
                    profiler.disable()


async def _fresh_database(dsn: str) -> str:
    """A new, empty database on the server of ``dsn`` (each round starts from nothing)."""
    from omni.store.bridge import ThreadBridge

    name = f"relay_{os.getpid()}"

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async with ThreadBridge.open() as bridge:
        await bridge.run(create)
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def _store_options() -> dict[str, Any]:
    """PostgresStore options from the environment, for experiments: OMNI_BENCH_BRIDGE
    (thread or trio-asyncio), OMNI_BENCH_IN_FLIGHT (batches committing at once) and
    OMNI_BENCH_BATCH_MAX (writes per batch at most)."""
    return {
        "bridge": os.environ.get("OMNI_BENCH_BRIDGE", "thread"),
        "in_flight": int(os.environ.get("OMNI_BENCH_IN_FLIGHT", "1")),
        "batch_max": int(os.environ.get("OMNI_BENCH_BATCH_MAX", "512")),
    }


@asynccontextmanager
async def _omni_store(store: str, data_dir: str | None) -> AsyncIterator[Any]:
    """None (the server's memory store), or a PostgresStore on a fresh database of the
    embedded PostgreSQL in ``data_dir`` (or of OMNI_DATABASE_URL)."""
    if store == "memory":
        yield None
        return
    from omni.store.embedded import open_embedded_postgres
    from omni.store.postgres import open_postgres_store

    url = os.environ.get("OMNI_DATABASE_URL")
    if url:
        async with open_postgres_store(await _fresh_database(url), **_store_options()) as pg:
            yield pg
        return
    assert data_dir is not None
    async with (
        open_embedded_postgres(data_dir) as dsn,
        open_postgres_store(await _fresh_database(dsn), **_store_options()) as pg,
    ):
        yield pg


async def _serve(
    kind: str,
    operators: int,
    profiler: cProfile.Profile | None,
    store: str = "memory",
    data_dir: str | None = None,
) -> None:
    with trio.move_on_after(SERVER_LIFETIME):
        if kind == "bare":
            async with trio.open_nursery() as nursery:
                relay = BareRelay()
                listener = await nursery.start(serve_websocket, relay.handle, HOST, 0, None)
                print(f"PORT {listener.port}", flush=True)
                await _control(profiler)
                nursery.cancel_scope.cancel()
        else:
            from omni.server import open_server

            async with (
                _omni_store(store, data_dir) as durable,
                open_server(
                    omni_config(operators), store=durable, http=False, host=HOST, ws_port=0
                ) as server,
            ):
                print(f"PORT {server.ws_port}", flush=True)
                await _control(profiler)


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, possibly wrapped in trio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def serve(kind: str, operators: int, profile: bool, store: str, data_dir: str | None) -> int:
    from omni.server import tune_gc

    # Both servers run with ``omni serve``'s collector settings (the bare relay hardly
    # allocates, so they change little for it), unless OMNI_BENCH_DEFAULT_GC is set.
    if not os.environ.get("OMNI_BENCH_DEFAULT_GC"):
        tune_gc()
    profiler = cProfile.Profile() if profile else None
    try:
        trio.run(_serve, kind, operators, profiler, store, data_dir)
    except BaseException as exc:
        if not interrupted(exc):
            raise
    finally:
        if profiler is not None:
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stderr).strip_dirs()
            print(
                f"\n== cProfile, {kind} server, exchange phase: top 25 cumulative ==",
                file=sys.stderr,
            )
            stats.sort_stats("cumulative").print_stats(25)
            print(f"== cProfile, {kind} server: top 25 by own time ==", file=sys.stderr)
            stats.sort_stats("tottime").print_stats(25)
    return 0


class ServerProcess:
    """This script with ``--serve KIND`` in a subprocess; closing its stdin stops it."""

    def __init__(
        self,
        kind: str,
        operators: int,
        profile: bool,
        store: str = "memory",
        data_dir: str | None = None,
    ) -> None:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            kind,
            "--pairs",
            str(operators),
            "--store",
            store,
        ]
        if data_dir is not None:
            command += ["--data-dir", data_dir]
        if profile:
            command.append("--profile-server")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
            # Out of the terminal's process group: Ctrl-C reaches only the parent, which stops
            # the server by closing its stdin (also what happens if the parent dies).
            start_new_session=True,
        )
        try:
            self.port = self._read_port()
        except BaseException:
            self.stop()
            raise

    def _read_port(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + PORT_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if readable:
                line = self.proc.stdout.readline().decode().strip()
                if line.startswith("PORT "):
                    return int(line.split()[1])
                if not line and self.proc.poll() is not None:
                    break
        raise RuntimeError(f"server subprocess did not report its port: {self.proc.args!r}")

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server so far (Linux /proc; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# == clients (this process) ======================================================================


@dataclass
class Link:
    """One pair: the visitor and operator connections and the conversation between them."""

    visitor: WebSocketConnection
    operator: WebSocketConnection
    conversation_id: str


async def recv_frame(ws: WebSocketConnection) -> tuple[float, dict[str, Any]]:
    with trio.fail_after(RECV_TIMEOUT):
        data = await ws.get_message()
    received = time.perf_counter()
    return received, json.loads(data)


async def until(
    ws: WebSocketConnection, kind: str, text_prefix: str | None = None
) -> tuple[float, dict[str, Any]]:
    """The next frame of type ``kind`` (and text starting with ``text_prefix``), skipping others;
    an ``error`` frame fails the run."""
    for _ in range(MAX_SKIPPED):
        received, frame = await recv_frame(ws)
        if frame.get("type") == "error":
            raise RuntimeError(f"server error while waiting for {kind!r}: {frame}")
        if frame.get("type") == kind and (
            text_prefix is None or str(frame.get("text", "")).startswith(text_prefix)
        ):
            return received, frame
    raise RuntimeError(f"no {kind!r} frame among {MAX_SKIPPED}")


async def send(ws: WebSocketConnection, type: str, **fields: Any) -> None:
    await ws.send_message(json.dumps({"type": type, **fields}))


async def _hold(
    url: str, stop: trio.Event, *, task_status: trio.TaskStatus[WebSocketConnection]
) -> None:
    async with open_websocket_url(url, connect_timeout=RECV_TIMEOUT, disconnect_timeout=2) as ws:
        task_status.started(ws)
        await stop.wait()


async def open_all(
    holder: trio.Nursery, stop: trio.Event, urls: Sequence[str]
) -> list[WebSocketConnection]:
    """Open every url concurrently; each connection lives in ``holder`` until ``stop``."""
    opened: list[WebSocketConnection | None] = [None] * len(urls)

    async def open_one(i: int) -> None:
        opened[i] = await holder.start(_hold, urls[i], stop)

    async with trio.open_nursery() as nursery:
        for i in range(len(urls)):
            nursery.start_soon(open_one, i)
    return [ws for ws in opened if ws is not None]


async def gather(fn: Callable[..., Any], items: Sequence[Any]) -> None:
    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(fn, item)


@dataclass
class Measured:
    latencies: list[float]
    seconds: float
    client_cpu: float
    server_cpu: float | None


async def exchange(
    links: list[Link], messages: int, warmup: int, server: ServerProcess, profile: bool
) -> Measured:
    """Every pair: ``warmup`` unmeasured round trips, then (all together) ``messages`` measured
    ones. Returns every one-way latency and the wall time of the measured phase."""
    latencies: list[float] = []
    ready = 0
    all_ready = trio.Event()
    go = trio.Event()

    def sample(received: float, frame: dict[str, Any], prefix: str, record: bool) -> None:
        _, number, sent = frame["text"].split("|")
        if number != prefix:
            raise RuntimeError(f"expected message {prefix}, got {frame['text']!r}")
        if record:
            latencies.append(received - float(sent))

    async def round_trip(link: Link, tag: str, k: int, record: bool) -> None:
        sent = time.perf_counter()
        await send(link.visitor, "message", client_id=f"v{tag}{k}", text=f"v|{tag}{k}|{sent!r}")
        received, frame = await until(link.operator, "message", "v|")
        sample(received, frame, f"{tag}{k}", record)
        sent = time.perf_counter()
        await send(
            link.operator,
            "message",
            conversation_id=link.conversation_id,
            client_id=f"o{tag}{k}",
            text=f"o|{tag}{k}|{sent!r}",
        )
        received, frame = await until(link.visitor, "message", "o|")
        sample(received, frame, f"{tag}{k}", record)

    async def run_pair(link: Link) -> None:
        nonlocal ready
        for k in range(warmup):
            await round_trip(link, "w", k, record=False)
        ready += 1
        if ready == len(links):
            all_ready.set()
        await go.wait()
        for k in range(messages):
            await round_trip(link, "m", k, record=True)

    async with trio.open_nursery() as nursery:
        for link in links:
            nursery.start_soon(run_pair, link)
        with trio.fail_after(SETUP_TIMEOUT):
            await all_ready.wait()
        if profile:
            server.command("profile on")
        server_cpu = server.cpu_seconds()
        client_cpu = time.process_time()
        start = time.perf_counter()
        go.set()
    seconds = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    server_end = server.cpu_seconds()
    if profile:
        server.command("profile off")
    return Measured(
        latencies,
        seconds,
        client_cpu,
        None if server_cpu is None or server_end is None else server_end - server_cpu,
    )


async def run_bare(server: ServerProcess, args: argparse.Namespace, profile: bool) -> Measured:
    url = f"ws://{HOST}:{server.port}"
    stop = trio.Event()
    async with trio.open_nursery() as holder:
        with trio.fail_after(SETUP_TIMEOUT):
            visitors = await open_all(holder, stop, [f"{url}/v/{i}" for i in range(args.pairs)])
            operators = await open_all(holder, stop, [f"{url}/o/{i}" for i in range(args.pairs)])

            async def paired(ws: WebSocketConnection) -> None:
                await until(ws, "paired")

            await gather(paired, visitors + operators)
        pairs = enumerate(zip(visitors, operators, strict=True))
        links = [Link(v, o, f"pair-{i}") for i, (v, o) in pairs]
        with trio.fail_after(EXCHANGE_TIMEOUT):
            measured = await exchange(links, args.messages, args.warmup, server, profile)
        stop.set()
    return measured


async def run_omni(server: ServerProcess, args: argparse.Namespace, profile: bool) -> Measured:
    url = f"ws://{HOST}:{server.port}"
    stop = trio.Event()
    n = args.pairs
    async with trio.open_nursery() as holder:
        with trio.fail_after(SETUP_TIMEOUT):
            operators = await open_all(holder, stop, [f"{url}/ws/operator"] * n)

            async def sign_in(item: tuple[int, WebSocketConnection]) -> None:
                number, ws = item
                await send(ws, "login", token=operator_token(number))
                await until(ws, "welcome")
                await send(ws, "status", status="available")
                await until(ws, "status")

            await gather(sign_in, list(enumerate(operators, start=1)))
            visitors = await open_all(holder, stop, [f"{url}/ws/visitor"] * n)
            by_conversation: dict[str, WebSocketConnection] = {}
            visitor_of: dict[str, WebSocketConnection] = {}

            async def accept(ws: WebSocketConnection) -> None:
                _, offer = await until(ws, "offer")
                conversation_id = offer["conversation"]["id"]
                await send(ws, "accept", conversation_id=conversation_id)
                await until(ws, "assigned")
                await until(ws, "message")  # the greeting
                by_conversation[conversation_id] = ws

            async def start(item: tuple[int, WebSocketConnection]) -> None:
                number, ws = item
                await send(ws, "start", service_id=1, visitor={"name": f"Visitor {number}"})
                _, started = await until(ws, "started")
                await until(ws, "assigned")
                await until(ws, "message")  # the greeting
                visitor_of[started["conversation_id"]] = ws

            async with trio.open_nursery() as nursery:
                nursery.start_soon(gather, accept, operators)
                nursery.start_soon(gather, start, list(enumerate(visitors, start=1)))
        links = [Link(visitor_of[c], by_conversation[c], c) for c in sorted(visitor_of)]
        if len(links) != n:
            raise RuntimeError(f"only {len(links)} of {n} conversations were assigned")
        with trio.fail_after(EXCHANGE_TIMEOUT):
            measured = await exchange(links, args.messages, args.warmup, server, profile)
        stop.set()
    return measured


# == figures ====================================================================================


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def figures(m: Measured) -> dict[str, Any]:
    values = sorted(m.latencies)
    delivered = len(values)
    return {
        "delivered": delivered,
        "seconds": round(m.seconds, 4),
        "messages_per_s": round(delivered / m.seconds, 1),
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3) if values else math.nan,
        "client_cpu_pct": round(100 * m.client_cpu / m.seconds, 1),
        "server_cpu_pct": (
            None if m.server_cpu is None else round(100 * m.server_cpu / m.seconds, 1)
        ),
        # CPU per delivered message: less sensitive than wall time to a busy machine.
        "client_cpu_us_per_msg": round(1e6 * m.client_cpu / delivered, 1),
        "server_cpu_us_per_msg": (
            None if m.server_cpu is None else round(1e6 * m.server_cpu / delivered, 1)
        ),
    }


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    runner = run_bare if kind == "bare" else run_omni
    profile = args.profile in (kind, "both")
    store = args.store if kind == "omni" else "memory"
    with ServerProcess(kind, args.pairs, profile, store, args.data_dir) as server:
        measured = trio.run(runner, server, args, profile)
    return figures(measured)


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (so one figure may come from another round)."""
    merged: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if first is None or any(v is None for v in values):
            merged[key] = None
        else:
            merged[key] = statistics.median(values)
    return merged


def cpu_ratio(bare: dict[str, Any], omni: dict[str, Any]) -> float | None:
    b, o = bare["server_cpu_us_per_msg"], omni["server_cpu_us_per_msg"]
    return None if b is None or o is None or b == 0 else round(o / b, 3)


def report(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()
    rounds: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        bare = measure("bare", args)
        omni = measure("omni", args)
        rounds.append(
            {
                "bare": bare,
                "omni": omni,
                "throughput_ratio": round(omni["messages_per_s"] / bare["messages_per_s"], 3),
                "p99_ratio": round(omni["p99_ms"] / bare["p99_ms"], 3),
                "server_cpu_ratio": cpu_ratio(bare, omni),
            }
        )
    throughput = statistics.median(r["throughput_ratio"] for r in rounds)
    p99 = statistics.median(r["p99_ratio"] for r in rounds)
    cpu = [r["server_cpu_ratio"] for r in rounds if r["server_cpu_ratio"] is not None]
    return {
        "benchmark": "relay",
        "date": date.today().isoformat(),
        "pairs": args.pairs,
        "messages_per_pair": args.messages,
        "warmup_per_pair": args.warmup,
        "rounds": args.repeat,
        "pattern": "round trips: visitor -> operator -> visitor, one at a time per pair; "
        "all pairs concurrent",
        "arrangement": "each server in its own subprocess, all clients in the parent; "
        "bare then omni in every round; figures and ratios are medians over the rounds",
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "profiled": args.profile,
        "bare": median_figures([r["bare"] for r in rounds]),
        "omni": median_figures([r["omni"] for r in rounds]),
        "ratios": {
            "throughput": round(throughput, 3),
            "p99": round(p99, 3),
            "server_cpu_per_msg": round(statistics.median(cpu), 3) if cpu else None,
        },
        "store": args.store,
        "target": _target(args.store, throughput, p99),
        "per_round": rounds,
    }


def _target(store: str, throughput: float, p99: float) -> dict[str, Any]:
    """Issue 2's target for the memory store; issue 3's (throughput only) for the durable relay."""
    if store == "postgres":
        minimum = TARGET_DURABLE_THROUGHPUT_RATIO
        return {
            "pairs": TARGET_PAIRS,
            "throughput_ratio_min": minimum,
            "p99_ratio_max": None,
            "throughput_met": throughput >= minimum,
            "p99_met": True,
            "met": throughput >= minimum,
        }
    return {
        "pairs": TARGET_PAIRS,
        "throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
        "p99_ratio_max": TARGET_P99_RATIO,
        "throughput_met": throughput >= TARGET_THROUGHPUT_RATIO,
        "p99_met": p99 <= TARGET_P99_RATIO,
        "met": throughput >= TARGET_THROUGHPUT_RATIO and p99 <= TARGET_P99_RATIO,
    }


def table(result: dict[str, Any]) -> str:
    target = result["target"]
    ratios = result["ratios"]

    def row(name: str, f: dict[str, Any]) -> str:
        server_cpu = "-" if f["server_cpu_pct"] is None else f"{f['server_cpu_pct']:.0f}%"
        per_msg = f["server_cpu_us_per_msg"]
        return (
            f"{name:<10}{f['messages_per_s']:>10.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}"
            f"{'-' if per_msg is None else f'{per_msg:.0f}':>11}{server_cpu:>9}"
            f"{f['client_cpu_pct']:>9.0f}%"
        )

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = [
        f"relay: {result['pairs']} pairs x {result['messages_per_pair']} round trips "
        f"(warmup {result['warmup_per_pair']}), median of {result['rounds']} rounds, "
        f"{result['cpus']} CPUs, load {result['loadavg_before'][0]}, Python {result['python']}",
        f"{'':<10}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'srv us/msg':>11}{'srv cpu':>9}"
        f"{'cli cpu':>10}",
        row("bare", result["bare"]),
        row("omni", result["omni"]),
        f"{'omni/bare':<10}{ratios['throughput']:>10.2f}{'':>9}{ratios['p99']:>9.2f}"
        + (
            "" if ratios["server_cpu_per_msg"] is None else f"{ratios['server_cpu_per_msg']:>11.2f}"
        ),
        f"store: {result['store']}; target at {target['pairs']} pairs: throughput ratio >= "
        f"{target['throughput_ratio_min']} ({met(target['throughput_met'])})"
        + (
            ""
            if target["p99_ratio_max"] is None
            else f", p99 ratio <= {target['p99_ratio_max']} ({met(target['p99_met'])})"
        ),
    ]
    if result["pairs"] != target["pairs"]:
        lines.append(f"note: the target is stated for {target['pairs']} pairs")
    if result["profiled"]:
        lines.append(
            f"note: cProfile ran in the server(s) ({result['profiled']}); "
            "these figures are not valid"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=100, help="visitor/operator pairs (100)")
    parser.add_argument("--messages", type=int, default=50, help="round trips per pair (50)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured round trips (5)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of bare+omni (3)")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="omni",
        choices=["omni", "bare", "both"],
        help="profile a server (cProfile, exchange phase; default omni) to stderr",
    )
    parser.add_argument(
        "--store",
        choices=["memory", "postgres"],
        default="memory",
        help="Omni's store: memory (default) or postgres — the embedded PostgreSQL (or "
        "OMNI_DATABASE_URL), every message durable before its ack; target then >= 0.5x",
    )
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=["bare", "omni"], help=argparse.SUPPRESS)
    parser.add_argument("--profile-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.pairs <= 1000:
        parser.error("--pairs must be between 1 and 1000")
    if not 1 <= args.messages <= 10_000 or not 0 <= args.warmup <= 1000:
        parser.error("--messages must be 1..10000 and --warmup 0..1000")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be 1..20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.pairs, args.profile_server, args.store, args.data_dir)
    scratch = None
    if args.store == "postgres" and not os.environ.get("OMNI_DATABASE_URL"):
        scratch = tempfile.mkdtemp(prefix="omni-relay-pg-")
        args.data_dir = str(Path(scratch) / "data")
    try:
        result = report(args)
    except BaseException as exc:
        if not interrupted(exc):
            raise
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if scratch is not None:
            stop_embedded(args.data_dir)
            shutil.rmtree(scratch, ignore_errors=True)
    if not args.json:
        print(table(result))
        print()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
