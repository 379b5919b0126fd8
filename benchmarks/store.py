"""Store benchmark: durable writes through PostgresStore, and the two asyncio bridges, in one run.

Usage::

    .venv/bin/python benchmarks/store.py [--writers 100] [--messages 50] [--json]
    .venv/bin/python benchmarks/store.py --database-url postgresql://user@127.0.0.1/postgres
    .venv/bin/python benchmarks/store.py --bridge          # only the bridge micro-benchmark

Without ``--database-url`` an embedded PostgreSQL (pgserver, Unix socket only) is started in a
temporary directory, which is removed at the end. With it, the user must be allowed to create
databases: each scenario gets a fresh database (``omni_bench_<pid>_<n>``, migrated by
``open_postgres_store`` as at start-up) that is dropped afterwards.

Traffic, the same in every scenario: ``--writers`` trio tasks, one conversation each, as
conversation actors would write. Each first writes its conversation record (one ``Write``, not
timed); when all records are stored, every writer starts at once and makes ``--messages``
sequential ``Write``s of one visitor ``message`` event each, awaiting each before the next — the
wait an ``ack`` waits for. Reported per scenario: durable messages per second (messages / wall
time of that phase), p50 and p99 of one write's latency (≈ ack latency, without the network),
and the transactions (batches) and average batch size from ``batch_statistics`` for that phase.
The events stored are counted afterwards and must be exactly writers x messages.

Scenarios:

1. ``group_commit`` — the default: ``batch_max=512``, no linger, thread bridge;
2. ``per_message`` — one transaction per write: ``batch_max=1``, thread bridge;
3. ``trio_asyncio`` — group commit through the trio-asyncio bridge;
4. ``linger_2ms`` — group commit with ``batch_linger=0.002``.

``synchronous_commit`` is left as the server has it (on by default); the script reads it (and
``fsync``) in each scenario's database and prints it, so a figure measured without durability
cannot pass unnoticed. The bridge micro-benchmark times ``bridge.run(noop)`` round trips, one at a
time, for both bridges.

Ordering: once ``trio_asyncio`` is imported, asyncio's event loop policy refuses to create a new
loop inside trio (``ThreadBridge.open`` then fails), so everything using the thread bridge runs
first and the trio-asyncio measurements last. Every phase has a deadline (``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from omni.actors.peer import encode
from omni.domain.conversation import Conversation, Status
from omni.store import StoredEvent, Write
from omni.store.bridge import Bridge, open_bridge
from omni.store.postgres import PostgresStore, open_postgres_store

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TEXT = "Hello, I ordered a blue jacket last week and it has not arrived yet. Can you check?"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    bridge: str
    batch_max: int
    batch_linger: float


SCENARIOS = {
    s.key: s
    for s in [
        Scenario("group_commit", "(1) group commit, thread bridge", "thread", 512, 0.0),
        Scenario("per_message", "(2) one transaction per message", "thread", 1, 0.0),
        Scenario("trio_asyncio", "(3) group commit, trio-asyncio bridge", "trio-asyncio", 512, 0.0),
        Scenario("linger_2ms", "(4) group commit, linger 2 ms", "thread", 512, 0.002),
    ]
}


class BenchmarkError(Exception):
    pass


# == asyncio side (run through a bridge) =========================================================


async def _db_execute(dsn: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _db_settings(dsn: str) -> dict[str, str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "server_version")
        }
    finally:
        await conn.close()


async def _noop() -> None:
    return None


# == traffic =====================================================================================


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise BenchmarkError("--database-url must be a postgresql:// URL")
    return urlunsplit(parts._replace(path=f"/{name}"))


def make_conversation(n: int) -> Conversation:
    at = NOW + timedelta(milliseconds=n)
    operator = 1 + n % 10
    return Conversation(
        id=f"bench-{n:05d}",
        ticket=f"2026-{n + 1:06d}",
        service_id=1,
        token_hash=f"bench-token-hash-{n:05d}",
        visitor={"name": f"Visitor {n}", "email": f"visitor{n}@example.com"},
        status=Status.ACTIVE,
        group_id=1,
        created_at=at.isoformat().replace("+00:00", "Z"),
        operator_id=operator,
        operator_name=f"Operator {operator}",
        waiting_since=at.timestamp(),
    )


def message_event(conv: Conversation, seq: int) -> StoredEvent:
    """One visitor message as the conversation actor stores it: the delivered frame, and the
    (author, client_id) key that makes the send idempotent."""
    client_id = f"m{seq}"
    frame = encode(
        {
            "type": "message",
            "conversation_id": conv.id,
            "seq": seq,
            "id": f"{conv.id}-{seq}",
            "author": {"kind": "visitor", "name": conv.visitor["name"]},
            "text": TEXT,
            "at": (NOW + timedelta(seconds=seq)).isoformat().replace("+00:00", "Z"),
        }
    )
    return StoredEvent(conv.id, seq, "message", "both", frame, ("v", client_id))


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]


async def drive(store: PostgresStore, writers: int, messages: int) -> dict[str, Any]:
    """The traffic of one scenario; returns its measurements."""
    conversations = [make_conversation(n) for n in range(writers)]
    latencies: list[float] = []
    recorded = 0
    all_recorded = trio.Event()
    go = trio.Event()

    async def writer(conv: Conversation) -> None:
        nonlocal recorded
        await store.write(Write(conversation=conv))
        recorded += 1
        if recorded == writers:
            all_recorded.set()
        await go.wait()
        for seq in range(1, messages + 1):
            write = Write(events=[message_event(conv, seq)])
            started = time.perf_counter()
            await store.write(write)
            latencies.append(time.perf_counter() - started)

    async with trio.open_nursery() as nursery:
        for conv in conversations:
            nursery.start_soon(writer, conv)
        await all_recorded.wait()
        # Count only the message phase (no commit is in flight: every record write returned).
        stats = store.batch_statistics
        stats.batches = stats.writes = stats.largest = 0
        started = time.perf_counter()
        go.set()
    elapsed = time.perf_counter() - started
    stats = store.batch_statistics
    latencies.sort()
    total = writers * messages
    return {
        "messages": total,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(total / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "transactions": stats.batches,
        "avg_batch": round(stats.writes / stats.batches, 1) if stats.batches else 0.0,
        "largest_batch": stats.largest,
    }


async def run_scenario(
    admin: Bridge, server_dsn: str, scenario: Scenario, number: int, args: argparse.Namespace
) -> dict[str, Any]:
    name = f"omni_bench_{os.getpid()}_{number}"
    await admin.run(
        _db_execute, server_dsn, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'
    )
    dsn = with_database(server_dsn, name)
    try:
        settings = await admin.run(_db_settings, dsn)
        try:
            with trio.fail_after(args.timeout):
                async with open_postgres_store(
                    dsn,
                    bridge=scenario.bridge,
                    batch_max=scenario.batch_max,
                    batch_linger=scenario.batch_linger,
                ) as store:
                    measured = await drive(store, args.writers, args.messages)
                    stored = await store.count_events()
        except trio.TooSlowError:
            raise BenchmarkError(
                f"scenario {scenario.key} took longer than --timeout {args.timeout:g} s"
            ) from None
        if stored != measured["messages"]:
            raise BenchmarkError(
                f"scenario {scenario.key}: {stored} events stored, {measured['messages']} written"
            )
    finally:
        with trio.move_on_after(30) as cleanup:
            cleanup.shield = True
            await admin.run(_db_execute, server_dsn, f'DROP DATABASE IF EXISTS "{name}"')
    return {
        "scenario": scenario.key,
        "title": scenario.title,
        "bridge": scenario.bridge,
        "batch_max": scenario.batch_max,
        "batch_linger_s": scenario.batch_linger,
        "synchronous_commit": settings["synchronous_commit"],
        "fsync": settings["fsync"],
        **measured,
    }


async def time_bridge(kind: str, calls: int, limit: float) -> dict[str, Any]:
    """Round trips of ``bridge.run(noop)``, one at a time, after a short warm-up."""
    with trio.fail_after(limit):
        async with open_bridge(kind) as bridge:
            for _ in range(min(1000, calls)):
                await bridge.run(_noop)
            started = time.perf_counter()
            for _ in range(calls):
                await bridge.run(_noop)
            elapsed = time.perf_counter() - started
    return {"bridge": kind, "calls": calls, "us_per_call": round(elapsed / calls * 1e6, 1)}


# == the run =====================================================================================


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "store",
        "date": date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "writers": args.writers,
        "messages_per_writer": args.messages,
    }
    bridges: dict[str, dict[str, Any]] = {}
    if args.bridge:
        for kind in ("thread", "trio-asyncio"):  # thread first: see the module docstring
            bridges[kind] = await time_bridge(kind, args.bridge_calls, args.timeout)
        result["bridge_us_per_call"] = bridges
        return result

    chosen = [SCENARIOS[key] for key in args.scenarios]
    # Thread-bridge scenarios first, trio-asyncio last (see the module docstring).
    order = sorted(chosen, key=lambda s: s.bridge == "trio-asyncio")
    scenarios: dict[str, dict[str, Any]] = {}
    tmp: str | None = None
    try:
        async with open_bridge("thread") as admin:
            if args.database_url:
                scenarios, server = await run_all(admin, args.database_url, order, bridges, args)
            else:
                from omni.store.embedded import open_embedded_postgres

                tmp = tempfile.mkdtemp(prefix="omni-bench-pg-")
                async with open_embedded_postgres(Path(tmp) / "data") as dsn:
                    scenarios, server = await run_all(admin, dsn, order, bridges, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result["server"] = server
    result["scenarios"] = {key: scenarios[key] for key in args.scenarios}
    result["bridge_us_per_call"] = bridges
    result["ratios"] = ratios(scenarios)
    return result


async def run_all(
    admin: Bridge,
    dsn: str,
    order: list[Scenario],
    bridges: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    settings = await admin.run(_db_settings, dsn)
    server = {
        "version": settings["server_version"],
        "embedded": not args.database_url,
        "wal_sync_method": settings["wal_sync_method"],
    }
    scenarios: dict[str, dict[str, Any]] = {}
    timed: set[str] = set()
    for number, scenario in enumerate(order, 1):
        if scenario.bridge == "trio-asyncio" and "thread" not in timed and not args.no_bridge:
            bridges["thread"] = await time_bridge("thread", args.bridge_calls, args.timeout)
            timed.add("thread")
        if not args.json:
            print(f"running {scenario.title} ...", file=sys.stderr, flush=True)
        scenarios[scenario.key] = await run_scenario(admin, dsn, scenario, number, args)
    if not args.no_bridge:
        for kind in ("thread", "trio-asyncio"):
            if kind not in timed:
                bridges[kind] = await time_bridge(kind, args.bridge_calls, args.timeout)
    return scenarios, server


def ratios(scenarios: dict[str, dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {}
    base = scenarios.get("group_commit")
    if base is None:
        return found
    for key in ("per_message", "trio_asyncio", "linger_2ms"):
        other = scenarios.get(key)
        if other is None:
            continue
        found[f"throughput_group_commit/{key}"] = round(
            base["messages_per_s"] / other["messages_per_s"], 2
        )
        found[f"p99_group_commit/{key}"] = round(base["p99_ms"] / other["p99_ms"], 3)
    return found


def table(result: dict[str, Any]) -> str:
    lines = [
        f"store benchmark, {result['date']}, {result['machine']['cpus']} CPUs, "
        f"Python {result['machine']['python']}",
    ]
    if "scenarios" in result:
        server = result["server"]
        lines.append(
            f"PostgreSQL {server['version']} ({'embedded' if server['embedded'] else 'given'}"
            f", wal_sync_method {server['wal_sync_method']}); {result['writers']} writers x "
            f"{result['messages_per_writer']} messages"
        )
        lines.append("")
        header = (
            f"{'scenario':40} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'tx':>6} "
            f"{'avg batch':>9} {'sync commit':>11} {'fsync':>5}"
        )
        lines += [header, "-" * len(header)]
        for s in result["scenarios"].values():
            lines.append(
                f"{s['title']:40} {s['messages_per_s']:>9.0f} {s['p50_ms']:>8.2f} "
                f"{s['p99_ms']:>8.2f} {s['transactions']:>6} {s['avg_batch']:>9.1f} "
                f"{s['synchronous_commit']:>11} {s['fsync']:>5}"
            )
        if result["ratios"]:
            lines.append("")
            for name, value in result["ratios"].items():
                lines.append(f"{name:45} {value:>8}")
    if result.get("bridge_us_per_call"):
        lines.append("")
        for b in result["bridge_us_per_call"].values():
            lines.append(
                f"bridge {b['bridge']:13} {b['us_per_call']:>8.1f} us per bridge.run(noop) "
                f"({b['calls']} calls)"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--writers", type=int, default=100, help="concurrent conversations")
    parser.add_argument("--messages", type=int, default=50, help="sequential writes per writer")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to use (postgresql:// URL; databases are created and dropped); "
        "default: an embedded server in a temporary directory",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--bridge", action="store_true", help="only the bridge micro-benchmark")
    parser.add_argument("--no-bridge", action="store_true", help="skip the bridge micro-benchmark")
    parser.add_argument("--bridge-calls", type=int, default=20_000, help="calls per bridge")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each phase (s)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    args.scenarios = [key.strip() for key in args.scenarios.split(",") if key.strip()]
    unknown = [key for key in args.scenarios if key not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    if not 1 <= args.writers <= 10_000 or not 1 <= args.messages <= 100_000:
        parser.error("--writers must be 1..10000 and --messages 1..100000")
    if not 1 <= args.bridge_calls <= 1_000_000:
        parser.error("--bridge-calls must be 1..1000000")
    return args


def find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first ``kind`` inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := find(inner, kind)) is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = trio.run(run, args)
    except BaseException as exc:
        if (problem := find(exc, BenchmarkError)) is not None:
            print(f"store benchmark: {problem}", file=sys.stderr)
            return 1
        if find(exc, KeyboardInterrupt) is not None:
            print("interrupted", file=sys.stderr)
            return 130
        raise
    if not args.json:
        print(table(result))
        print()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
