"""Cluster benchmark: messages/s and latency through 1, 2 and 3 ``omni serve`` nodes on one
PostgreSQL, against one node with cluster mode off, in the same run (issue 18, docs/scale-out.md).

Usage::

    .venv/bin/python benchmarks/cluster.py [--nodes 1,2,3] [--visitors 60] [--messages 20]
    .venv/bin/python benchmarks/cluster.py --quick          # a short run (nox -s bench)
    .venv/bin/python benchmarks/cluster.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

One PostgreSQL serves the whole run: an embedded one (pgserver, as ``omni serve`` starts it) in a
temporary directory, or the server of ``--database-url`` (a superuser there: the script creates
and drops a scratch database per configuration, and reads ``pg_stat_statements`` when the server
preloads it). Configurations, one after the other, each on a fresh database:

* **single** — the baseline: one node, cluster mode off (no lease, no fence, no relay);
* **N nodes** for each N of ``--nodes`` — N ``omni serve`` processes (``python -m omni.cli
  serve``, each its own ``trio.run``) in cluster mode on the same database.

The configuration has six services, each linked to its own group with one operator of capacity
50: six routing domains, which rendezvous hashing places on the nodes (the node names are chosen
so that the domains spread evenly, 6/N per node). The load, identical for every configuration:
``--visitors`` visitors, visitor ``i`` on service ``i % 6`` and on node ``(i // 6) % N``, and the
six operators, operator ``g`` on node ``(g - 1) % N`` — as a load balancer without affinity would
spread them, so that about (N-1)/N of the sockets are held by a node that does not serve them
and are relayed through PostgreSQL (docs/scale-out.md; omni/gateway/relay.py; with 2 nodes the
operators' share is 2 of 6: rendezvous allows no balanced names with 3). Every
conversation is started, offered and accepted; then every conversation does ``--warmup``
unmeasured and ``--messages`` measured round trips (all conversations at once, one round trip
at a time each: the concurrency is the number of conversations): the visitor sends a
``message`` carrying its ``time.perf_counter()``, the operator receives it (a latency sample),
replies, the visitor receives the reply (a second sample). Throughput is the messages delivered
in both directions over the wall time of that phase; latency is send -> the other client
receives (both clocks in this process). Every latency sample is also classed by how many of the
conversation's two sockets are relayed (0, 1 or 2 relay hops on its path).

The database's side of it, read from PostgreSQL's statistics (``pg_stat_database``,
``pg_stat_user_tables``, ``pg_stat_wal``, the WAL position, and ``pg_stat_statements`` when
available) and from ``/proc`` (the CPU of the nodes, of this process's clients and of the
PostgreSQL processes): commits, relay rows, WAL bytes and statements per delivered message,
and what the nodes cost when idle (heartbeats, leases, relay bookkeeping) per node and second.
PostgreSQL flushes a backend's counters to the shared statistics at most once a second and, for
a backend that went idle, up to 10 s later: the script waits ``--settle`` seconds before each
snapshot of the counters (``pg_stat_statements`` and the WAL position are immediate), and
subtracts the idle rate measured afterwards (``--idle`` seconds, every socket still open) from
the measured window.

Figures are printed, never judged: the ratios to the single node of the same run are what to
compare across machines; ``--repeat`` runs every configuration again (single first each
round) and reports each figure's median. Everything is on 127.0.0.1; every wait has a
deadline; the nodes, the embedded PostgreSQL and the temporary directory are gone when the script
ends, also on Ctrl-C, SIGTERM or SIGHUP (benchmarks/lifecycle.py). docs/scale-out-figures.md
records the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio
from lifecycle import exit_status, stop_embedded, stop_server, until_signalled
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]

#: Six services, each linked to its own group (one routing domain each) with one operator.
DOMAINS = 6
SERVICE_BASE = 40  # service 40 + g is linked to group g (1..6)
CAPACITY = 50  # each operator's

#: Deadlines: every wait is bounded, so a broken node fails the run instead of hanging it.
START_TIMEOUT = 120.0  # one node's banner (it migrates a fresh database first)
STOP_TIMEOUT = 30.0  # the nodes exiting after SIGTERM, then SIGKILL
PLACEMENT_TIMEOUT = 60.0  # every group leased by the node it hashes to
CONNECT_TIMEOUT = 20.0  # one websocket handshake
RECV_TIMEOUT = 20.0  # one expected frame
SETUP_TIMEOUT = 180.0  # signing in, starting, offering and accepting every conversation
EXCHANGE_TIMEOUT = 600.0  # warm-up and measured round trips
DB_TIMEOUT = 60.0  # one statement of this script
MAX_FRAMES = 2_000_000  # frames one client socket reads at most
MAX_SKIPPED = 200  # frames skipped while waiting for one during sign-in

BANNER = re.compile(rb"omni: serving websockets on (ws://127\.0\.0\.1:\d+)/ws/visitor")
PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def operator_token(group: int) -> str:
    """Operator ``group``'s console token (strong enough for the server; public: benchmarks)."""
    return f"bench-cluster-op-{group}-Jr5Wq9Zm3Xk7Lp2V"


def config_text(cluster: bool, heartbeat: float) -> str:
    always = "\n".join(
        f'{day} = [["00:00", "24:00"]]' for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    )
    text = f"""
[server]
host = "{HOST}"
ws_port = 0
http_port = 0
native_visitors = true
native_operators = true

[server.cluster]
enabled = {"true" if cluster else "false"}
heartbeat_seconds = {heartbeat}
node_expiry_seconds = {5 * heartbeat}
lease_seconds = {5 * heartbeat}

# One address (this script) opens the whole crowd, flat out.
[server.limits]
messages_per_second = 1000000
message_burst = 1000000
conversations_per_minute = 1000000
conversations_per_service_per_minute = 1000000
handshakes_per_second = 1000000
handshake_burst = 1000000
connections_per_ip = 1000000

[[schedules]]
id = "always"
timezone = "UTC"
[schedules.weekly]
{always}
"""
    for g in range(1, DOMAINS + 1):
        text += f"""
[[groups]]
id = {g}
name = "Group {g}"

[[services]]
id = {SERVICE_BASE + g}
name = "Service {g}"
schedule = "always"
survey = "none"
links = [{{ group = {g} }}]

[[operators]]
id = {g}
name = "Operator {g}"
groups = [{g}]
capacity = {CAPACITY}
token = "{operator_token(g)}"
"""
    return text


# == placement ===================================================================================


def placement(names: Sequence[str]) -> dict[int, str]:
    """Group -> the node it hashes to (each group is its own routing domain, named by its id:
    ``Hub.placement``)."""
    from omni.cluster import rendezvous

    return {g: rendezvous(names, f"domain:{g}") for g in range(1, DOMAINS + 1)}


def operator_node(group: int, count: int) -> int:
    return (group - 1) % count


def visitor_node(visitor: int, count: int) -> int:
    return (visitor // DOMAINS) % count


def visitor_group(visitor: int) -> int:
    return visitor % DOMAINS + 1


def node_names(label: str, count: int) -> list[str]:
    """Names for ``count`` nodes under which the six domains spread evenly (as evenly as they
    divide) and the round-robin operators are relayed in the same share as the visitors,
    (count-1)/count: the first such names of a fixed sequence (rendezvous is deterministic)."""
    if count == 1:
        return [f"{label}-a"]
    relayed = DOMAINS * (count - 1) / count
    # Exactly, if names allow it (with 2 nodes and 3 domains each the count is always even).
    for tolerance in (0.0, 1.0):
        for k in range(10_000):
            names = [f"{label}{k}-{chr(ord('a') + i)}" for i in range(count)]
            owners = placement(names)
            loads = Counter(owners.values())
            if max(loads[n] for n in names) - min(loads[n] for n in names) > 1:
                continue
            away = sum(owners[g] != names[operator_node(g, count)] for g in owners)
            if abs(away - relayed) <= tolerance:
                return names
    raise RuntimeError(f"no balanced names for {count} nodes")


# == processes ===================================================================================


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads; Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class NodeProcess:
    name: str
    process: trio.Process
    log_path: Path
    ws_url: str = ""

    def cpu(self) -> float:
        return proc_cpu(self.process.pid) or 0.0

    def problems(self) -> list[str]:
        """The lines of its log that are warnings, errors or tracebacks."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if PROBLEM.search(line)]


async def _banner(node: NodeProcess) -> str:
    with trio.move_on_after(START_TIMEOUT):
        while True:
            data = await trio.Path(node.log_path).read_bytes()
            if found := BANNER.search(data):
                return found[1].decode()
            if node.process.poll() is not None:
                break
            await trio.sleep(0.05)
    tail = node.log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(
        f"node {node.name} did not start (status {node.process.poll()}), its log:\n{tail}"
    )


@asynccontextmanager
async def running_nodes(
    scratch: Path, label: str, names: Sequence[str], cluster: bool, url: str, heartbeat: float
) -> AsyncIterator[list[NodeProcess]]:
    """``omni serve`` for each name on database ``url``, started one after the other (the first
    migrates the database and stores the configuration); SIGTERM (SIGKILL after
    ``STOP_TIMEOUT``) for all of them when the block ends, however it ends."""
    config = scratch / f"{label}.toml"
    config.write_text(config_text(cluster, heartbeat))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env |= {"PYTHONUNBUFFERED": "1", "OMNI_DATABASE_URL": url}
    nodes: list[NodeProcess] = []
    try:
        for name in names:
            log_path = scratch / f"{label}-{name}.log"
            command = [sys.executable, "-m", "omni.cli", "serve", "--config", str(config)]
            command += ["--node", name, "--data-dir", str(scratch / f"{label}-{name}-data")]
            command += ["--log-level", "WARNING"]
            with log_path.open("wb") as log:
                process = await trio.lowlevel.open_process(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,  # Ctrl-C reaches this script, which stops them
                )
            node = NodeProcess(name, process, log_path)
            nodes.append(node)
            node.ws_url = await _banner(node)
        yield nodes
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(stop_server, node.process, STOP_TIMEOUT)


# == the database ================================================================================


async def _connect(dsn: str) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn, timeout=DB_TIMEOUT)


async def _fetch(conn: Any, query: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(query, *args, timeout=DB_TIMEOUT)]


async def _execute(conn: Any, query: str) -> None:
    await conn.execute(query, timeout=DB_TIMEOUT)


async def _close(conn: Any) -> None:
    await conn.close(timeout=10)


def database_url(dsn: str, name: str) -> str:
    """``dsn`` with its database replaced by ``name`` (the query, e.g. a socket dir, kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


_Q_DATABASE = """
SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated,
    tup_deleted
FROM pg_stat_database WHERE datname = current_database()"""
_Q_TABLES = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
_Q_WAL = """
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 AS lsn, wal_records, wal_bytes::float8,
    wal_write, wal_sync
FROM pg_stat_wal"""
_Q_PIDS = "SELECT pid FROM pg_stat_activity"
_Q_STATEMENTS = """
SELECT queryid, query, calls, rows, total_exec_time, wal_bytes::float8 AS wal_bytes
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""


@dataclass
class Snapshot:
    """Counters at one moment (``pg_stat_*`` lag: see the module's notes)."""

    at: float
    database: dict[str, float]
    tables: dict[str, dict[str, float]]
    wal: dict[str, float]
    statements: dict[int, dict[str, Any]] | None


class Database:
    """This script's own connection to one configuration's database (asyncpg on Omni's
    thread bridge, as the store uses it)."""

    def __init__(self, bridge: Any, conn: Any, statements: bool) -> None:
        self.bridge, self.conn, self.statements = bridge, conn, statements

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        with trio.fail_after(DB_TIMEOUT):
            rows: list[dict[str, Any]] = await self.bridge.run(_fetch, self.conn, query, *args)
        return rows

    async def owners(self) -> dict[int, str]:
        rows = await self.fetch(
            "SELECT resource, owner FROM leases WHERE owner IS NOT NULL AND expires_at > now()"
        )
        return {int(r["resource"].split(":")[1]): r["owner"] for r in rows}

    async def postgres_pids(self) -> list[int]:
        return [row["pid"] for row in await self.fetch(_Q_PIDS)]

    async def snapshot(self) -> Snapshot:
        database = {k: float(v) for k, v in (await self.fetch(_Q_DATABASE))[0].items()}
        tables = {
            row.pop("relname"): {k: float(v) for k, v in row.items()}
            for row in await self.fetch(_Q_TABLES)
        }
        wal = {k: float(v) for k, v in (await self.fetch(_Q_WAL))[0].items()}
        statements = None
        if self.statements:
            statements = {row["queryid"]: row for row in await self.fetch(_Q_STATEMENTS)}
        return Snapshot(time.perf_counter(), database, tables, wal, statements)


@asynccontextmanager
async def scratch_database(
    bridge: Any, admin: Any, dsn: str, name: str
) -> AsyncIterator[tuple[str, Database]]:
    """A new, empty database ``name`` on the server of ``dsn``; dropped when the block ends."""
    with trio.fail_after(DB_TIMEOUT):
        await bridge.run(_execute, admin, f'DROP DATABASE IF EXISTS "{name}"')
        await bridge.run(_execute, admin, f'CREATE DATABASE "{name}"')
    url = database_url(dsn, name)
    conn = None
    try:
        with trio.fail_after(DB_TIMEOUT):
            conn = await bridge.run(_connect, url)
        statements = True
        try:
            with trio.fail_after(DB_TIMEOUT):
                await bridge.run(
                    _execute, conn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
                )
                await bridge.run(_fetch, conn, "SELECT 1 FROM pg_stat_statements LIMIT 1")
        except Exception:
            statements = False  # not installed, or not in shared_preload_libraries
        yield url, Database(bridge, conn, statements)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(DB_TIMEOUT):
            if conn is not None:
                await bridge.run(_close, conn)
            await bridge.run(_execute, admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# == clients (this process) ======================================================================


@dataclass
class Chat:
    """One visitor and its conversation: where each side is connected, what it waits for."""

    index: int
    group: int
    visitor_node: int
    operator_node: int
    hops: int = 0  # relayed sockets among its two (0, 1 or 2)
    visitor: WebSocketConnection | None = None
    conversation_id: str | None = None
    started: trio.Event = field(default_factory=trio.Event)
    assigned: trio.Event = field(default_factory=trio.Event)  # the visitor's `assigned`
    arrived: trio.Event = field(default_factory=trio.Event)
    expect: str = ""
    record: bool = False


@dataclass
class Clients:
    chats: list[Chat]
    operators: dict[int, WebSocketConnection] = field(default_factory=dict)
    #: Conversation id -> set when its operator got `assigned`.
    accepted: dict[str, trio.Event] = field(default_factory=dict)
    #: (latency in seconds, relay hops) of every measured message.
    samples: list[tuple[float, int]] = field(default_factory=list)
    #: Message frames that were not the one expected (a duplicate or a stray).
    strays: int = 0
    stopping: bool = False

    def accepted_event(self, conversation_id: str) -> trio.Event:
        return self.accepted.setdefault(conversation_id, trio.Event())

    def delivered(self, text: str, received: float) -> None:
        parts = text.split("|")
        try:
            chat = self.chats[int(parts[1])]
            sent = float(parts[3])
        except (IndexError, ValueError):
            self.strays += 1
            return
        if not chat.expect or not text.startswith(chat.expect):
            self.strays += 1
            return
        chat.expect = ""
        if chat.record:
            self.samples.append((received - sent, chat.hops))
        chat.arrived.set()


async def _send(ws: WebSocketConnection, type: str, **fields: Any) -> None:
    await ws.send_message(json.dumps({"type": type, **fields}))


async def _until(ws: WebSocketConnection, kind: str) -> dict[str, Any]:
    for _ in range(MAX_SKIPPED):
        with trio.fail_after(RECV_TIMEOUT):
            frame: dict[str, Any] = json.loads(await ws.get_message())
        if frame.get("type") == "error":
            raise RuntimeError(f"server error while waiting for {kind!r}: {frame}")
        if frame.get("type") == kind:
            return frame
    raise RuntimeError(f"no {kind!r} frame among {MAX_SKIPPED}")


async def _hold(
    url: str, stop: trio.Event, *, task_status: trio.TaskStatus[WebSocketConnection]
) -> None:
    async with open_websocket_url(url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=2) as ws:
        task_status.started(ws)
        await stop.wait()


async def _read_visitor(clients: Clients, chat: Chat) -> None:
    ws = chat.visitor
    assert ws is not None
    for _ in range(MAX_FRAMES):
        try:
            data = await ws.get_message()
        except ConnectionClosed:
            if clients.stopping:
                return
            raise
        received = time.perf_counter()
        frame = json.loads(data)
        kind = frame.get("type")
        if kind == "message" and str(frame.get("text", "")).startswith("o|"):
            clients.delivered(frame["text"], received)
        elif kind == "started":
            chat.conversation_id = frame["conversation_id"]
            chat.started.set()
        elif kind == "assigned":
            chat.assigned.set()
        elif kind == "error":
            raise RuntimeError(f"visitor {chat.index}: {frame}")


async def _read_operator(clients: Clients, group: int, ws: WebSocketConnection) -> None:
    for _ in range(MAX_FRAMES):
        try:
            data = await ws.get_message()
        except ConnectionClosed:
            if clients.stopping:
                return
            raise
        received = time.perf_counter()
        frame = json.loads(data)
        kind = frame.get("type")
        if kind == "message" and str(frame.get("text", "")).startswith("v|"):
            clients.delivered(frame["text"], received)
        elif kind == "offer":
            conversation_id = frame.get("conversation_id") or frame["conversation"]["id"]
            await _send(ws, "accept", conversation_id=conversation_id)
        elif kind == "assigned":
            clients.accepted_event(frame["conversation_id"]).set()
        elif kind == "error":
            raise RuntimeError(f"operator {group}: {frame}")


async def _round_trip(clients: Clients, chat: Chat, k: int, record: bool) -> None:
    assert chat.visitor is not None and chat.conversation_id is not None
    chat.record = record
    for side in ("v", "o"):
        chat.arrived = trio.Event()
        chat.expect = f"{side}|{chat.index}|{k}|"
        text = f"{chat.expect}{time.perf_counter()!r}"
        if side == "v":
            await _send(chat.visitor, "message", client_id=f"v{k}", text=text)
        else:
            await _send(
                clients.operators[chat.group],
                "message",
                conversation_id=chat.conversation_id,
                client_id=f"o{k}",
                text=text,
            )
        with trio.fail_after(RECV_TIMEOUT):
            await chat.arrived.wait()


@dataclass
class Exchange:
    seconds: float
    client_cpu: float
    node_cpu: float
    postgres_cpu: float
    before: Snapshot
    after: Snapshot
    idle: Snapshot
    #: CPU seconds of all nodes, and of PostgreSQL, from ``after`` to ``idle``.
    idle_node_cpu: float
    idle_postgres_cpu: float


def _postgres_cpu(pids: Sequence[int]) -> dict[int, float]:
    return {pid: cpu for pid in pids if (cpu := proc_cpu(pid)) is not None}


async def drive(
    nodes: list[NodeProcess], db: Database, args: argparse.Namespace, owners: dict[int, str]
) -> tuple[Clients, Exchange]:
    """Connect the operators and visitors, start and accept every conversation, run the round
    trips (warm-up, settle, measured), then let the cluster idle with every socket open."""
    count = len(nodes)
    chats = [
        Chat(i, visitor_group(i), visitor_node(i, count), operator_node(visitor_group(i), count))
        for i in range(args.visitors)
    ]
    for chat in chats:
        owner = owners.get(chat.group)
        chat.hops = sum(
            owner is not None and nodes[n].name != owner
            for n in (chat.visitor_node, chat.operator_node)
        )
    clients = Clients(chats)
    stop = trio.Event()
    async with trio.open_nursery() as holder:
        with trio.fail_after(SETUP_TIMEOUT):
            for g in range(1, DOMAINS + 1):
                url = f"{nodes[operator_node(g, count)].ws_url}/ws/operator"
                ws = await holder.start(_hold, url, stop)
                await _send(ws, "login", token=operator_token(g))
                await _until(ws, "welcome")
                await _send(ws, "status", status="available")
                await _until(ws, "status")
                clients.operators[g] = ws
                holder.start_soon(_read_operator, clients, g, ws)

            async def start(chat: Chat) -> None:
                url = f"{nodes[chat.visitor_node].ws_url}/ws/visitor"
                chat.visitor = await holder.start(_hold, url, stop)
                holder.start_soon(_read_visitor, clients, chat)
                await _send(
                    chat.visitor,
                    "start",
                    service_id=SERVICE_BASE + chat.group,
                    visitor={"name": f"Visitor {chat.index}"},
                )
                await chat.started.wait()
                await chat.assigned.wait()
                assert chat.conversation_id is not None
                await clients.accepted_event(chat.conversation_id).wait()

            async with trio.open_nursery() as starting:
                for chat in chats:
                    starting.start_soon(start, chat)

        ready = 0
        all_ready, go = trio.Event(), trio.Event()

        async def converse(chat: Chat) -> None:
            nonlocal ready
            for k in range(args.warmup):
                await _round_trip(clients, chat, k, record=False)
            ready += 1
            if ready == len(chats):
                all_ready.set()
            await go.wait()
            for k in range(args.warmup, args.warmup + args.messages):
                await _round_trip(clients, chat, k, record=True)

        with trio.fail_after(EXCHANGE_TIMEOUT):
            async with trio.open_nursery() as talking:
                for chat in chats:
                    talking.start_soon(converse, chat)
                await all_ready.wait()
                await trio.sleep(args.settle)  # the warm-up's counters reach the statistics
                before = await db.snapshot()
                pids = await db.postgres_pids()
                pg_cpu = _postgres_cpu(pids)
                node_cpu = sum(node.cpu() for node in nodes)
                client_cpu = time.process_time()
                start_time = time.perf_counter()
                go.set()
            seconds = time.perf_counter() - start_time
        client_cpu = time.process_time() - client_cpu
        node_cpu = sum(node.cpu() for node in nodes) - node_cpu
        pg_after = _postgres_cpu(pids)
        postgres_cpu = sum(cpu - pg_cpu.get(pid, 0.0) for pid, cpu in pg_after.items())
        await trio.sleep(args.settle)
        after = await db.snapshot()
        idle_pids = await db.postgres_pids()
        idle_pg = _postgres_cpu(idle_pids)
        idle_nodes = sum(node.cpu() for node in nodes)
        await trio.sleep(args.idle)
        idle = await db.snapshot()
        idle_nodes = sum(node.cpu() for node in nodes) - idle_nodes
        idle_postgres = sum(
            cpu - idle_pg.get(pid, 0.0) for pid, cpu in _postgres_cpu(idle_pids).items()
        )
        clients.stopping = True
        stop.set()
    return clients, Exchange(
        seconds, client_cpu, node_cpu, postgres_cpu, before, after, idle, idle_nodes, idle_postgres
    )


# == one configuration ===========================================================================


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    return values[max(1, math.ceil(q / 100 * len(values))) - 1]


def _diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a.get(k, 0.0) for k in b}


def _table_diff(a: Snapshot, b: Snapshot, table: str, column: str) -> float:
    return b.tables.get(table, {}).get(column, 0.0) - a.tables.get(table, {}).get(column, 0.0)


def _short(query: str) -> str:
    return " ".join(query.split())[:90]


def _statement_rates(
    a: Snapshot, b: Snapshot
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Calls, rows and WAL bytes of each statement between two snapshots, by its text."""
    calls: dict[str, float] = {}
    rows: dict[str, float] = {}
    wal: dict[str, float] = {}
    assert a.statements is not None and b.statements is not None
    for queryid, row in b.statements.items():
        old = a.statements.get(queryid, {"calls": 0, "rows": 0, "wal_bytes": 0.0})
        text = _short(row["query"])
        calls[text] = calls.get(text, 0.0) + row["calls"] - old["calls"]
        rows[text] = rows.get(text, 0.0) + row["rows"] - old["rows"]
        wal[text] = wal.get(text, 0.0) + row["wal_bytes"] - old["wal_bytes"]
    return calls, rows, wal


def database_cost(m: Exchange, delivered: int, count: int) -> dict[str, Any]:
    """Per delivered message (the measured window less the idle rate over its length) and per
    node and second when idle."""
    window = m.after.at - m.before.at
    idle_window = m.idle.at - m.after.at

    def per_message(a_busy: float, a_idle: float) -> float:
        rate = a_idle / idle_window
        return (a_busy - rate * window) / delivered

    def counters(a: Snapshot, b: Snapshot) -> dict[str, float]:
        db = _diff(a.database, b.database)
        wal = _diff(a.wal, b.wal)
        return {
            "commits": db["xact_commit"],
            "rollbacks": db["xact_rollback"],
            "rows_read": db["tup_returned"] + db["tup_fetched"],
            "rows_written": db["tup_inserted"] + db["tup_updated"] + db["tup_deleted"],
            "relay_rows_inserted": _table_diff(a, b, "relay", "n_tup_ins"),
            "relay_rows_deleted": _table_diff(a, b, "relay", "n_tup_del"),
            "events_inserted": _table_diff(a, b, "events", "n_tup_ins"),
            "wal_bytes": wal["lsn"],
            "wal_records": wal["wal_records"],
            "wal_syncs": wal["wal_sync"],
        }

    busy, quiet = counters(m.before, m.after), counters(m.after, m.idle)
    cost: dict[str, Any] = {
        "per_message": {k: round(per_message(busy[k], quiet[k]), 3) for k in busy},
        "idle_per_node_per_s": {k: round(v / idle_window / count, 2) for k, v in quiet.items()},
        "window_s": round(window, 2),
        "idle_s": round(idle_window, 2),
        "statements": None,
    }
    if m.before.statements is not None and m.idle.statements is not None:
        busy_calls, busy_rows, _ = _statement_rates(m.before, m.after)
        quiet_calls, quiet_rows, _ = _statement_rates(m.after, m.idle)
        texts = set(busy_calls) | set(quiet_calls)
        per_message = {
            t: (busy_calls.get(t, 0.0) - quiet_calls.get(t, 0.0) / idle_window * window) / delivered
            for t in texts
        }
        per_message_rows = {
            t: (busy_rows.get(t, 0.0) - quiet_rows.get(t, 0.0) / idle_window * window) / delivered
            for t in texts
        }
        idle = {t: quiet_calls.get(t, 0.0) / idle_window / count for t in texts}
        cost["statements"] = {
            "per_message_total": round(sum(per_message.values()), 2),
            "idle_per_node_per_s_total": round(sum(idle.values()), 2),
            "per_message": {
                t: {"calls": round(v, 3), "rows": round(per_message_rows[t], 3)}
                for t, v in sorted(per_message.items(), key=lambda kv: -kv[1])
                if v >= 0.01
            },
            "idle_per_node_per_s": {
                t: round(v, 3) for t, v in sorted(idle.items(), key=lambda kv: -kv[1]) if v > 0
            },
        }
    return cost


async def configuration(
    label: str,
    count: int,
    cluster: bool,
    args: argparse.Namespace,
    bridge: Any,
    admin: Any,
    dsn: str,
    scratch: Path,
) -> dict[str, Any]:
    names = node_names(label, count) if cluster else [f"{label}-a"]
    name = f"bench_cluster_{label}_{os.getpid()}"
    async with (
        scratch_database(bridge, admin, dsn, name) as (url, db),
        running_nodes(scratch, label, names, cluster, url, args.heartbeat) as nodes,
    ):
        owners: dict[int, str] = {}
        if cluster:
            expected = placement(names)
            with trio.move_on_after(PLACEMENT_TIMEOUT):
                while (owners := await db.owners()) != expected:  # noqa: ASYNC110
                    await trio.sleep(0.2)
            if owners != expected:
                raise RuntimeError(f"{label}: groups owned {owners}, expected {expected}")
            # Each node's relay refreshes its list of live nodes once a heartbeat, and relays
            # only to nodes on it: before that, a client of a node's group that joined last is
            # served where it connected and answered `moved`.
            await trio.sleep(2 * args.heartbeat)
        clients, m = await drive(nodes, db, args, owners)
        problems = {node.name: node.problems() for node in nodes}
    samples = sorted(lat for lat, _ in clients.samples)
    delivered = len(samples)
    by_hops: dict[str, Any] = {}
    for hops in (0, 1, 2):
        values = sorted(lat for lat, h in clients.samples if h == hops)
        if values:
            by_hops[str(hops)] = {
                "messages": len(values),
                "p50_ms": round(percentile(values, 50) * 1000, 2),
                "p99_ms": round(percentile(values, 99) * 1000, 2),
            }
    relayed_visitors = sum(
        bool(owners) and names[c.visitor_node] != owners[c.group] for c in clients.chats
    )
    relayed_operators = sum(
        bool(owners) and names[operator_node(g, count)] != owners[g] for g in range(1, DOMAINS + 1)
    )
    return {
        "label": label,
        "nodes": count,
        "cluster": cluster,
        "names": names,
        "owners": {str(g): o for g, o in sorted(owners.items())},
        "visitors": len(clients.chats),
        "operators": DOMAINS,
        "relayed_visitors": relayed_visitors,
        "relayed_operators": relayed_operators,
        "relayed_share": round(
            (relayed_visitors + relayed_operators) / (len(clients.chats) + DOMAINS), 3
        ),
        "messages_relayed_share": round(
            sum(1 for _, h in clients.samples if h > 0) / max(1, delivered), 3
        ),
        "delivered": delivered,
        "strays": clients.strays,
        "seconds": round(m.seconds, 3),
        "messages_per_s": round(delivered / m.seconds, 1),
        "p50_ms": round(percentile(samples, 50) * 1000, 2),
        "p99_ms": round(percentile(samples, 99) * 1000, 2),
        "max_ms": round(samples[-1] * 1000, 2) if samples else math.nan,
        "by_hops": by_hops,
        "cpu_us_per_msg": {
            "nodes": round(1e6 * m.node_cpu / delivered, 1),
            "postgres": round(1e6 * m.postgres_cpu / delivered, 1),
            "clients": round(1e6 * m.client_cpu / delivered, 1),
        },
        "cpu_pct": {
            "nodes": round(100 * m.node_cpu / m.seconds, 1),
            "postgres": round(100 * m.postgres_cpu / m.seconds, 1),
            "clients": round(100 * m.client_cpu / m.seconds, 1),
        },
        "idle_cpu_pct": {
            "per_node": round(100 * m.idle_node_cpu / (m.idle.at - m.after.at) / count, 1),
            "postgres": round(100 * m.idle_postgres_cpu / (m.idle.at - m.after.at), 1),
        },
        "database": database_cost(m, delivered, count),
        "node_log_problems": {n: lines[:20] for n, lines in problems.items() if lines},
    }


# == the run =====================================================================================


@asynccontextmanager
async def postgres(args: argparse.Namespace, scratch: Path) -> AsyncIterator[str]:
    """The DSN of ``--database-url``, or of an embedded PostgreSQL in ``scratch``."""
    if args.database_url:
        yield args.database_url
        return
    from omni.store.embedded import open_embedded_postgres

    async with open_embedded_postgres(scratch / "pg") as dsn:
        yield dsn


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from omni.store.bridge import ThreadBridge

    load = os.getloadavg()
    scratch = Path(args.scratch)
    rounds: list[list[dict[str, Any]]] = []
    async with postgres(args, scratch) as dsn, ThreadBridge.open() as bridge:
        with trio.fail_after(DB_TIMEOUT):
            admin = await bridge.run(_connect, dsn)
        try:
            version = (await bridge.run(_fetch, admin, "SHOW server_version"))[0]
            settings = {
                row["name"]: row["setting"]
                for row in await bridge.run(
                    _fetch,
                    admin,
                    "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                    [
                        "fsync",
                        "synchronous_commit",
                        "wal_level",
                        "shared_buffers",
                        "max_connections",
                    ],
                )
            }
            plan = [("single", 1, False)] + [(f"n{n}", n, True) for n in args.nodes]
            for round_ in range(1, args.repeat + 1):
                results = []
                for label, count, cluster in plan:
                    print(
                        f"cluster bench: round {round_}/{args.repeat}, {label} ({count} node(s))",
                        file=sys.stderr,
                    )
                    results.append(
                        await configuration(
                            label, count, cluster, args, bridge, admin, dsn, scratch
                        )
                    )
                baseline = results[0]
                for result in results:
                    result["throughput_ratio"] = round(
                        result["messages_per_s"] / baseline["messages_per_s"], 3
                    )
                    result["p99_ratio"] = round(result["p99_ms"] / baseline["p99_ms"], 3)
                rounds.append(results)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await bridge.run(_close, admin)
    medians = [median_of([r[i] for r in rounds]) for i in range(len(rounds[0]))]
    return {
        "benchmark": "cluster",
        "date": date.today().isoformat(),
        "visitors": args.visitors,
        "operators": DOMAINS,
        "messages_per_visitor": args.messages,
        "warmup_per_visitor": args.warmup,
        "heartbeat_seconds": args.heartbeat,
        "settle_s": args.settle,
        "idle_s": args.idle,
        "quick": args.quick,
        "database": "external" if args.database_url else "embedded",
        "postgres": version["server_version"],
        "postgres_settings": settings,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "rounds": args.repeat,
        # Each figure's median over the rounds (so one figure may come from another round).
        "results": medians,
        "per_round": rounds,
    }


def median_of(runs: list[Any]) -> Any:
    """The median of each number in ``runs`` (dicts of the same shape); anything else from
    the first run."""
    first = runs[0]
    if isinstance(first, dict):
        return {
            key: median_of([run[key] for run in runs if isinstance(run, dict) and key in run])
            for key in first
        }
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        values = [run for run in runs if isinstance(run, (int, float))]
        return round(statistics.median(values), 3) if len(values) == len(runs) else first
    return first


def table(result: dict[str, Any]) -> str:
    lines = [
        f"cluster: {result['visitors']} visitors + {result['operators']} operators, "
        f"{result['messages_per_visitor']} round trips each "
        f"(warm-up {result['warmup_per_visitor']}), PostgreSQL {result['postgres']} "
        f"({result['database']}), {result['cpus']} CPUs, "
        f"load {result['loadavg_before'][0]}, Python {result['python']}; "
        f"median of {result['rounds']} round(s)",
        f"{'config':<8}{'relayed':>8}{'msgs/s':>8}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'p99 x':>7}{'node us':>9}{'pg us':>7}{'cli us':>8}{'commits':>9}{'relay':>7}"
        f"{'WAL B':>7}{'stmts':>7}",
    ]
    for r in result["results"]:
        per = r["database"]["per_message"]
        stmts = r["database"]["statements"]
        lines.append(
            f"{r['label']:<8}{100 * r['relayed_share']:>7.0f}%{r['messages_per_s']:>8.0f}"
            f"{r['throughput_ratio']:>7.2f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
            f"{r['p99_ratio']:>7.2f}{r['cpu_us_per_msg']['nodes']:>9.0f}"
            f"{r['cpu_us_per_msg']['postgres']:>7.0f}{r['cpu_us_per_msg']['clients']:>8.0f}"
            f"{per['commits']:>9.2f}{per['relay_rows_inserted']:>7.2f}{per['wal_bytes']:>7.0f}"
            f"{'-' if stmts is None else format(stmts['per_message_total'], '.1f'):>7}"
        )
    lines.append(
        "per delivered message: CPU (us) of all nodes, PostgreSQL, this script's clients; "
        "commits, relay rows inserted, WAL bytes, statements (pg_stat_statements) in PostgreSQL"
    )
    if result["rounds"] > 1:
        lines.append("throughput ratio of each round:")
        for i, r in enumerate(result["results"]):
            ratios = ", ".join(f"{run[i]['throughput_ratio']:.2f}" for run in result["per_round"])
            lines.append(f"  {r['label']:<8}{ratios}")
    lines.append("latency by relay hops on the path (p50 / p99 ms, messages):")
    for r in result["results"]:
        parts = [
            f"{hops} hops {h['p50_ms']:.1f} / {h['p99_ms']:.1f} ({h['messages']:.0f})"
            for hops, h in r["by_hops"].items()
        ]
        lines.append(f"  {r['label']:<8}" + "; ".join(parts))
    lines.append(
        "idle, every socket open: per node and second commits, WAL bytes, statements; CPU of "
        "a node, of PostgreSQL"
    )
    for r in result["results"]:
        idle = r["database"]["idle_per_node_per_s"]
        stmts = r["database"]["statements"]
        cpu = r["idle_cpu_pct"]
        lines.append(
            f"  {r['label']:<8}{idle['commits']:>8.1f} commits{idle['wal_bytes']:>9.0f} B"
            + ("" if stmts is None else f"{stmts['idle_per_node_per_s_total']:>8.1f} statements")
            + f"   node {cpu['per_node']:.1f}% PostgreSQL {cpu['postgres']:.1f}%"
        )
    last = result["results"][-1]
    if (stmts := last["database"]["statements"]) is not None:
        lines.append(f"pg_stat_statements, {last['label']}: calls (rows) per delivered message")
        for text, v in list(stmts["per_message"].items())[:14]:
            lines.append(f"  {v['calls']:>7.2f} ({v['rows']:>6.2f})  {text[:80]}")
        lines.append(f"pg_stat_statements, {last['label']}: calls per node and second, idle")
        for text, calls in list(stmts["idle_per_node_per_s"].items())[:10]:
            lines.append(f"  {calls:>7.2f}  {text[:80]}")
    for run in result["per_round"]:
        for r in run:
            for node, problems in r["node_log_problems"].items():
                for line in problems[:3]:
                    lines.append(f"note: {r['label']} node {node} logged: {line[:160]}")
            if r["strays"]:
                lines.append(f"note: {r['label']}: {r['strays']} unexpected message frames")
    if result["settle_s"] < 11:
        lines.append(
            f"note: --settle {result['settle_s']} s < 11 s: the pg_stat counters may lag "
            "(commits, rows, WAL records per message are approximate)"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--nodes", default="1,2,3", help="node counts in cluster mode, comma-separated (1,2,3)"
    )
    parser.add_argument("--visitors", type=int, help="visitors, one conversation each (60)")
    parser.add_argument("--messages", type=int, help="measured round trips per visitor (20)")
    parser.add_argument("--warmup", type=int, help="unmeasured round trips per visitor (2)")
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=2.0,
        help="heartbeat_seconds of the nodes (2, the default)",
    )
    parser.add_argument(
        "--settle", type=float, help="seconds before a snapshot of the counters (11; quick: 1)"
    )
    parser.add_argument(
        "--idle", type=float, help="seconds of idle cluster measured (10; quick: 4)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 12 visitors x 5 round trips, settle 1 s"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to use (as a superuser: a scratch database per configuration "
        "is created and dropped) instead of an embedded one",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every configuration; medians (1)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "visitors": 12 if quick else 60,
        "messages": 5 if quick else 20,
        "warmup": 1 if quick else 2,
        "settle": 1.0 if quick else 11.0,
        "idle": 4.0 if quick else 10.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.nodes = [int(n) for n in args.nodes.split(",") if n.strip()]
    except ValueError:
        parser.error("--nodes takes numbers, e.g. 1,2,3")
    if not args.nodes or not all(1 <= n <= DOMAINS for n in args.nodes):
        parser.error(f"--nodes: each between 1 and {DOMAINS}")
    if not 1 <= args.visitors <= DOMAINS * CAPACITY:
        parser.error(f"--visitors must be 1..{DOMAINS * CAPACITY}")
    if not 1 <= args.messages <= 10_000 or not 0 <= args.warmup <= 100:
        parser.error("--messages must be 1..10000 and --warmup 0..100")
    if not 0.5 <= args.heartbeat <= 10:
        parser.error("--heartbeat must be 0.5..10")
    if not 0 <= args.settle <= 60 or not 1 <= args.idle <= 120:
        parser.error("--settle must be 0..60 and --idle 1..120")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be 1..10")
    if args.database_url:
        host = urlsplit(args.database_url).hostname
        if host not in (None, "", "127.0.0.1", "localhost", "::1"):
            parser.error("--database-url: this benchmark stays on 127.0.0.1 (or a Unix socket)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.scratch = tempfile.mkdtemp(prefix="omni-cluster-bench-")
    try:
        result = trio.run(until_signalled(run), args)
    except BaseException as exc:
        if (status := exit_status(exc)) is None:
            raise
        print("interrupted", file=sys.stderr)
        return status
    finally:
        stop_embedded(Path(args.scratch) / "pg")
        shutil.rmtree(args.scratch, ignore_errors=True)
    if not args.json:
        print(table(result))
        print()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
