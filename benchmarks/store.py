"""Store benchmark: durable writes through PostgresStore, and the two asyncio bridges, in one run.

Usage::

    .venv/bin/python benchmarks/store.py [--writers 100] [--messages 50] [--repeat 3] [--json]
    .venv/bin/python benchmarks/store.py --database-url postgresql://user@127.0.0.1/postgres
    .venv/bin/python benchmarks/store.py --bridge          # only the bridge micro-benchmark

Without ``--database-url`` an embedded PostgreSQL (pgserver, Unix socket only) is started in a
temporary directory, which is removed at the end. With it, the user must be allowed to create
databases. Each measurement gets a fresh database (``omni_bench_<pid>``, migrated by
``open_postgres_store`` as at start-up), dropped afterwards.

Traffic, the same in every scenario: ``--writers`` trio tasks, one conversation each, as
conversation actors would write. Each first writes its conversation record (one ``Write``, not
timed); when all records are stored, every writer starts at once and makes ``--messages``
sequential ``Write``s of one visitor ``message`` event each (the delivered frame and its
client_id), awaiting each before the next: that wait is what an ``ack`` waits for. Measured per
scenario: durable messages per second (messages / wall time of that phase), p50 and p99 of one
write's latency (about the ack latency, without the network), and the transactions (batches)
and average batch size from ``batch_statistics`` for that phase. Afterwards the stored events are
counted: they must be exactly writers x messages.

Scenarios:

1. ``group_commit``: the default, ``batch_max=512``, no linger, thread bridge;
2. ``per_message``: one transaction per write, ``batch_max=1``, thread bridge;
3. ``trio_asyncio``: group commit through the trio-asyncio bridge;
4. ``linger_2ms``: group commit with ``batch_linger=0.002``.

``synchronous_commit`` is left as the server has it (on by default); each measurement reads it
and ``fsync`` in its database, and the report prints them, so that a figure measured without
durability cannot pass unnoticed. The bridge micro-benchmark times ``--bridge-calls`` round trips
of ``bridge.run(noop)``, one at a time, for each bridge.

Each measurement runs in a fresh child process of this script (hidden ``--child-scenario`` /
``--child-bridge`` flags), so that none inherits another's state, and the rounds interleave
the scenarios (1, 2, 3, 4, bridges; 1, 2, ...) so that a machine busy for a while slows them all
alike; the report gives medians over ``--repeat`` rounds and each round's figures. (A child
process also matters for correctness: once ``trio_asyncio`` is imported, asyncio's event loop
policy refuses to create a loop inside trio, so ``ThreadBridge.open`` would fail afterwards in the
same process.) Every measurement has a deadline (``--timeout``, default 60 s); at the defaults a
run takes well under a minute.
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

from omni.domain import protocol as p
from omni.domain.conversation import Conversation, Status, Visitor
from omni.store import StoredEvent, Write
from omni.store.bridge import Bridge, open_bridge
from omni.store.postgres import PostgresStore, open_postgres_store

SCRIPT = Path(__file__).resolve()
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


BRIDGES = ("thread", "trio-asyncio")


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
        visitor=Visitor(f"Visitor {n}", f"visitor{n}@example.com"),
        status=Status.ACTIVE,
        group_id=1,
        created_at=at,
        waiting_since=at,
        operator_id=operator,
        operator_name=f"Operator {operator}",
    )


def message_event(conv: Conversation, seq: int) -> StoredEvent:
    """One visitor message as the conversation actor stores it: the delivered frame, and the
    (author, client_id) key that makes the send idempotent."""
    client_id = f"m{seq}"
    frame = p.encode(
        p.Message(
            conversation_id=conv.id,
            seq=seq,
            id=f"{conv.id}-{seq}",
            author=p.Author("visitor", conv.visitor.name),
            text=TEXT,
            at=NOW + timedelta(seconds=seq),
        )
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
    admin: Bridge, server_dsn: str, scenario: Scenario, args: argparse.Namespace
) -> dict[str, Any]:
    name = f"omni_bench_{os.getpid()}"
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


# == one measurement (a child process) ===========================================================


async def child(args: argparse.Namespace) -> dict[str, Any]:
    if args.child_bridge:
        return await time_bridge(args.child_bridge, args.bridge_calls, args.timeout)
    scenario = SCENARIOS[args.child_scenario]
    async with open_bridge("thread") as admin:
        server = await admin.run(_db_settings, args.database_url)
        measured = await run_scenario(admin, args.database_url, scenario, args)
    measured["server"] = {
        "version": server["server_version"],
        "wal_sync_method": server["wal_sync_method"],
    }
    return measured


async def run_child(label: str, argv: list[str], limit: float) -> dict[str, Any]:
    """Run this script on one measurement in a fresh interpreter and return its JSON (``label``
    names the measurement in errors; ``argv`` may hold a DSN with a password)."""
    command = [sys.executable, str(SCRIPT), *argv, "--json"]
    try:
        with trio.fail_after(limit):
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
    except trio.TooSlowError:
        raise BenchmarkError(f"{label} took longer than {limit:g} s") from None
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip().splitlines()
        raise BenchmarkError(f"{label} failed: {error[-1] if error else done.returncode}")
    found: dict[str, Any] = json.loads(done.stdout)
    return found


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
        "rounds": args.repeat,
    }
    common = ["--timeout", str(args.timeout), "--bridge-calls", str(args.bridge_calls)]
    bridge_rounds: dict[str, list[dict[str, Any]]] = {}

    async def bridge_round() -> None:
        for kind in BRIDGES:
            argv = ["--child-bridge", kind, *common]
            found = await run_child(f"bridge {kind}", argv, args.timeout + 30)
            bridge_rounds.setdefault(kind, []).append(found)

    if args.bridge:
        for _ in range(args.repeat):
            await bridge_round()
        result["bridge_us_per_call"] = summarize_bridges(bridge_rounds)
        return result

    result["writers"] = args.writers
    result["messages_per_writer"] = args.messages
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in args.scenarios}

    async def measure_all(dsn: str) -> None:
        for number in range(1, args.repeat + 1):
            for key in args.scenarios:
                if not args.json:
                    print(
                        f"round {number}/{args.repeat}: {SCENARIOS[key].title} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                argv = ["--child-scenario", key, "--database-url", dsn, *common]
                argv += ["--writers", str(args.writers), "--messages", str(args.messages)]
                found = await run_child(f"scenario {key}", argv, args.timeout + 60)
                rounds[key].append(found)
            if not args.no_bridge:
                await bridge_round()

    if args.database_url:
        await measure_all(args.database_url)
    else:
        from omni.store.embedded import open_embedded_postgres

        tmp = tempfile.mkdtemp(prefix="omni-bench-pg-")
        try:
            async with open_embedded_postgres(Path(tmp) / "data") as dsn:
                await measure_all(dsn)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    first = rounds[args.scenarios[0]][0]
    result["server"] = {**first["server"], "embedded": not args.database_url}
    scenarios = {key: summarize(found) for key, found in rounds.items()}
    result["scenarios"] = scenarios
    result["ratios"] = ratios(scenarios)
    if bridge_rounds:
        result["bridge_us_per_call"] = summarize_bridges(bridge_rounds)
    return result


def summarize(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds (worst for the maximum), and each round's headline figures."""
    first = found[0]
    summary = {key: first[key] for key in ("scenario", "title", "bridge", "batch_max")}
    summary["batch_linger_s"] = first["batch_linger_s"]
    for setting in ("synchronous_commit", "fsync"):
        summary[setting] = "/".join(sorted({r[setting] for r in found}))
    summary["messages"] = first["messages"]
    for key in ("messages_per_s", "p50_ms", "p99_ms", "mean_ms", "transactions", "avg_batch"):
        summary[key] = round(statistics.median(r[key] for r in found), 2)
    summary["max_ms"] = max(r["max_ms"] for r in found)
    summary["largest_batch"] = max(r["largest_batch"] for r in found)
    summary["rounds"] = [
        {key: r[key] for key in ("messages_per_s", "p50_ms", "p99_ms", "transactions")}
        for r in found
    ]
    return summary


def summarize_bridges(found: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        kind: {
            "bridge": kind,
            "calls": runs[0]["calls"],
            "us_per_call": round(statistics.median(r["us_per_call"] for r in runs), 1),
            "rounds": [r["us_per_call"] for r in runs],
        }
        for kind, runs in found.items()
    }


def ratios(scenarios: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Group commit (1) against each other scenario: throughput (higher is better for (1)) and
    p99 latency (lower is better for (1))."""
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
            f"{result['messages_per_writer']} messages; medians of {result['rounds']} rounds"
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
                f"{s['p99_ms']:>8.2f} {s['transactions']:>6.0f} {s['avg_batch']:>9.1f} "
                f"{s['synchronous_commit']:>11} {s['fsync']:>5}"
            )
        lines.append("")
        for s in result["scenarios"].values():
            each = ", ".join(
                f"{r['messages_per_s']:.0f} ({r['p99_ms']:.1f} ms)" for r in s["rounds"]
            )
            lines.append(f"{s['title']:40} rounds msg/s (p99): {each}")
        if result["ratios"]:
            lines.append("")
            for name, value in result["ratios"].items():
                lines.append(f"{name:45} {value:>8}")
    if result.get("bridge_us_per_call"):
        lines.append("")
        for b in result["bridge_us_per_call"].values():
            lines.append(
                f"bridge {b['bridge']:13} {b['us_per_call']:>8.1f} us per bridge.run(noop) "
                f"({b['calls']} calls; rounds: {', '.join(f'{r:.1f}' for r in b['rounds'])})"
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
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    # One measurement in this process (the parent runs each in a fresh child process).
    parser.add_argument("--child-scenario", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--child-bridge", choices=BRIDGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_scenario and not args.database_url:
        parser.error("--child-scenario needs --database-url")
    args.scenarios = [key.strip() for key in args.scenarios.split(",") if key.strip()]
    unknown = [key for key in args.scenarios if key not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    if not 1 <= args.writers <= 10_000 or not 1 <= args.messages <= 100_000:
        parser.error("--writers must be 1..10000 and --messages 1..100000")
    if not 1 <= args.bridge_calls <= 1_000_000:
        parser.error("--bridge-calls must be 1..1000000")
    if not 1 <= args.repeat <= 20 or not 1 <= args.timeout <= 600:
        parser.error("--repeat must be 1..20 and --timeout 1..600")
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
        result = trio.run(child if args.child_scenario or args.child_bridge else run, args)
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
