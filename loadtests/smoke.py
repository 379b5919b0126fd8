"""Bounded smoke load: start ``omni serve`` on a fresh embedded PostgreSQL, run locust headless
against it on 127.0.0.1, stop the server, and fail on any failed request.

    python loadtests/smoke.py                      # 60 s, 5 operators, 20 visitors
    python loadtests/smoke.py --run-time 10 --visitors 10 --fast
    python loadtests/smoke.py --run-time 120 --operators 50 --visitors 300 --out /tmp/load300
    python loadtests/smoke.py --nodes 3 --run-time 20   # three nodes on one PostgreSQL

Exit status: 0 when locust exited 0 and its stats show requests and no failures; 1 otherwise
(2 for a server that did not start). The report is ``OUT/load_stats.csv``, ``OUT/load.html`` and
``OUT/server.log`` (OUT: ``--out``, else a temporary directory, removed afterwards unless
``--keep``). Every wait is bounded and the server and its data directory are cleaned up on every
exit path, including Ctrl-C and SIGTERM.

``--nodes N`` (N > 1): cluster mode (docs/scale-out.md). This script starts one embedded
PostgreSQL itself (``omni.store.embedded``, as ``omni serve`` starts its own) and N nodes
``n1``…``nN`` on it (``OMNI_DATABASE_URL``), with ``omni-load.toml`` plus a ``[server.cluster]``
table (``OUT/omni-load-cluster.toml``; node logs ``OUT/n1.log``…). ``n1`` starts first and
alone (it bootstraps the configuration into the empty database), then the others together; the
load starts once every node has printed its banner, is alive in the ``nodes`` table, and every
group has had the same live owner for two seconds. The users spread over the nodes round robin
(``locustfile.py --omni-nodes``); the nodes and then the database are stopped on every exit path.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = HERE / "omni-load.toml"

REQUEST_TYPES = (
    "connect",
    "login",
    "start",
    "queue wait",
    "message visitor→operator",
    "message operator→visitor",
    "end",
    "survey",
)

SERVER_START_TIMEOUT = 120.0  # initdb of the embedded PostgreSQL included
SERVER_STOP_TIMEOUT = 30.0
#: Several nodes: until every group has a live owner, stable for CLUSTER_STABLE seconds.
CLUSTER_READY_TIMEOUT = 60.0
CLUSTER_STABLE = 2.0
MAX_NODES = 9
#: ``[server.cluster]`` of the nodes of a ``--nodes`` run: short beats, so that the groups are
#: placed (and a dead node noticed) within seconds (settings: omni/settings.py ClusterSettings).
CLUSTER_TABLE = """
# Added by loadtests/smoke.py --nodes: several nodes on one PostgreSQL (docs/scale-out.md).
[server.cluster]
enabled = true
heartbeat_seconds = 0.5
node_expiry_seconds = 3
lease_seconds = 4
outbox_poll_seconds = 2

"""


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class Node:
    """One ``omni serve`` process: its name (None: the single server), its URLs once started."""

    name: str | None
    process: subprocess.Popen[str]
    log_path: Path
    url: str = ""
    http: str = ""
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def label(self) -> str:
        return self.name or "server"


def launch(
    out: Path, data_dir: Path, *, config: Path = CONFIG, name: str | None = None, database: str = ""
) -> Node:
    """Start ``omni serve`` on ephemeral ports, its output pumped into ``OUT/<name>.log``
    (``server.log`` for the single server). ``database``: ``OMNI_DATABASE_URL``; empty: the
    embedded PostgreSQL in ``data_dir``, a fresh directory."""
    log_path = out / f"{name or 'server'}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMNI_DATABASE_URL", None)  # never a database of the caller's environment
    env.pop("OMNI_NODE", None)
    if database:
        env["OMNI_DATABASE_URL"] = database
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omni.cli",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
            *(["--node", name] if name else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # our Ctrl-C is handled here, not delivered to it twice
    )
    node = Node(name, process, log_path)

    def pump() -> None:
        assert process.stdout is not None
        with log_path.open("w") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                m = re.search(
                    r"omni: serving websockets on (ws://[^/\s]+)/ws/visitor.*HTTP on (http://\S+)",
                    line,
                )
                if m and not node.ready.is_set():
                    node.url, node.http = m[1], m[2]
                    node.ready.set()
        node.ready.set()

    threading.Thread(target=pump, daemon=True).start()
    return node


def wait_started(node: Node, timeout: float = SERVER_START_TIMEOUT) -> None:
    """Until ``node`` printed its banner; a RuntimeError (with its log's tail) if it did not
    within ``timeout`` seconds, or exited first."""
    node.ready.wait(timeout)
    if not node.url:
        tail = node.log_path.read_text()[-2000:] if node.log_path.exists() else ""
        raise RuntimeError(f"omni serve ({node.label}) did not start within {timeout:.0f}s\n{tail}")


class SharedDatabase:
    """One embedded PostgreSQL for every node of a ``--nodes`` run: the ``pgserver`` package
    that ``omni serve`` embeds (a Unix socket in the data directory, never a network port),
    started here — these tests speak to Omni from outside, so not through Omni's code — and
    stopped by :meth:`stop`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self._server: Any = None

    def start(self) -> str:
        # pgserver keeps its lock under XDG_RUNTIME_DIR and warns without one (containers, CI).
        if not os.environ.get("XDG_RUNTIME_DIR"):
            runtime = Path(tempfile.gettempdir()) / f"omni-runtime-{os.getuid()}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        import pgserver  # type: ignore[import-untyped]

        try:
            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise RuntimeError(f"the embedded PostgreSQL did not start: {exc}") from exc
        self.url = str(self._server.get_uri())
        return self.url

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> None:
        """Stop the server (pgserver waits for it)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def cluster_config(out: Path) -> tuple[Path, set[int]]:
    """``omni-load.toml`` with :data:`CLUSTER_TABLE` (before its first array of tables, so that
    it stays under ``[server]``), written to ``OUT/omni-load-cluster.toml``; and its groups."""
    text = CONFIG.read_text(encoding="utf-8")
    at = text.index("\n[[")
    text = text[: at + 1] + CLUSTER_TABLE.lstrip("\n") + text[at + 1 :]
    parsed = tomllib.loads(text)
    assert parsed["server"]["cluster"]["enabled"] is True
    path = out / "omni-load-cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path, {int(group["id"]) for group in parsed.get("groups", [])}


def cluster_ready(nodes: list[Node], groups: set[int]) -> dict[str, int]:
    """Until every node answers ``/metrics`` and together they have owned every group (the sum
    of ``omni_groups_owned``) the same way for :data:`CLUSTER_STABLE` seconds: node → groups
    owned. Read from outside, as an operator's monitoring would; a RuntimeError if a node exited
    meanwhile, or after :data:`CLUSTER_READY_TIMEOUT`."""
    last: dict[str, int] | None = None
    since = started = time.monotonic()
    while time.monotonic() - started < CLUSTER_READY_TIMEOUT:
        owned: dict[str, int] = {}
        for node in nodes:
            if node.process.poll() is not None:
                raise RuntimeError(
                    f"node {node.name} exited with {node.process.returncode} (see {node.log_path})"
                )
            try:
                with urllib.request.urlopen(node.http.rstrip("/") + "/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                break
            found = re.search(r"^omni_groups_owned (\d+)", text, re.M)
            if found is None:
                break
            owned[node.label] = int(float(found.group(1)))
        ready = len(owned) == len(nodes) and sum(owned.values()) == len(groups)
        now = time.monotonic()
        if not ready or owned != last:
            last, since = (owned if ready else None), now
        elif now - since >= CLUSTER_STABLE:
            return owned
        time.sleep(0.25)
    raise RuntimeError(f"the cluster did not settle within {CLUSTER_READY_TIMEOUT:.0f}s")


class MetricsSampler(threading.Thread):
    """Polls the server's ``/metrics`` every 2 s: peak open websockets, messages relayed."""

    def __init__(self, http_url: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.cpu: list[tuple[float, float]] = []  # (monotonic, server CPU seconds)
        self.url = http_url.rstrip("/") + "/metrics"
        self.stop_event = threading.Event()
        self.peak_connections = 0
        self.peak_queue = 0
        self.samples: list[tuple[float, float]] = []  # (monotonic, messages relayed)

    def run(self) -> None:
        while not self.stop_event.wait(2.0):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                continue
            connections = sum(
                float(v) for v in re.findall(r"^omni_connections\{[^}]*\} (\S+)$", text, re.M)
            )
            queued = sum(
                float(v) for v in re.findall(r"^omni_queue_length\{[^}]*\} (\S+)$", text, re.M)
            )
            relayed = re.search(r"^omni_messages_relayed_total (\S+)$", text, re.M)
            self.peak_connections = max(self.peak_connections, int(connections))
            self.peak_queue = max(self.peak_queue, int(queued))
            if relayed:
                self.samples.append((time.monotonic(), float(relayed[1])))
            try:  # Linux: utime + stime of the omni process (not its PostgreSQL)
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks = os.sysconf("SC_CLK_TCK")
                self.cpu.append((time.monotonic(), (int(fields[11]) + int(fields[12])) / ticks))
            except (OSError, ValueError, IndexError):
                pass

    def report(self) -> dict[str, float]:
        self.stop_event.set()
        self.join(5)
        rate = peak_rate = 0.0
        if len(self.samples) >= 2:
            (t0, m0), (t1, m1) = self.samples[0], self.samples[-1]
            rate = (m1 - m0) / (t1 - t0) if t1 > t0 else 0.0
            peak_rate = max(
                (b[1] - a[1]) / (b[0] - a[0])
                for a, b in zip(self.samples, self.samples[1:], strict=False)
            )
        cpu = 0.0
        if len(self.cpu) >= 2 and self.cpu[-1][0] > self.cpu[0][0]:
            cpu = (self.cpu[-1][1] - self.cpu[0][1]) / (self.cpu[-1][0] - self.cpu[0][0])
        return {
            "server_cpu_cores": cpu,
            "peak_connections": self.peak_connections,
            "peak_queue": self.peak_queue,
            "messages_relayed": self.samples[-1][1] if self.samples else 0,
            "messages_per_s": rate,
            "peak_messages_per_s": peak_rate,
        }


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    time.sleep(1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_server(server: subprocess.Popen[str], *, signalled: bool = False) -> int | None:
    """SIGTERM (unless ``signalled``: sent already — never twice, a second one ends the server
    at once), then up to :data:`SERVER_STOP_TIMEOUT` seconds, then SIGKILL; its exit code."""
    if server.poll() is None:
        if not signalled:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    return server.returncode


def stop_nodes(nodes: list[Node]) -> dict[str, int | None]:
    """SIGTERM to every node at once (each leaves the cluster), then each waited for as
    :func:`stop_server` does; their exit codes."""
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    return {node.label: stop_server(node.process, signalled=True) for node in nodes}


def read_stats(csv_prefix: Path) -> list[dict[str, str]]:
    path = Path(f"{csv_prefix}_stats.csv")
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def summarize(rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Per request type (all names merged, weighted by count): count, failures, p50/p99, rps."""
    by_type: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["Name"] == "Aggregated":
            continue
        s = by_type.setdefault(
            row["Type"], {"count": 0, "failures": 0, "p50": 0.0, "p99": 0.0, "rps": 0.0}
        )
        n = int(row["Request Count"])
        s["count"] += n
        s["failures"] += int(row["Failure Count"])
        s["rps"] += float(row["Requests/s"])
        for key, column in (("p50", "50%"), ("p99", "99%")):
            value = row.get(column, "N/A")
            if value not in ("N/A", ""):
                s[key] = max(s[key], float(value))  # the worst name of the type
    return by_type


def combine(figures: list[dict[str, float]]) -> dict[str, float]:
    """The nodes' figures together: sums (of the peaks too: each node's own peak)."""
    if len(figures) == 1:
        return figures[0]
    return {key: sum(f[key] for f in figures) for key in figures[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-time", type=int, default=60, help="seconds of load (default 60)")
    p.add_argument("--operators", type=int, default=5, help="operator users (default 5)")
    p.add_argument("--visitors", type=int, default=20, help="visitor users (default 20)")
    p.add_argument("--spawn-rate", type=float, default=0, help="users/s (default: all in ~5 s)")
    p.add_argument(
        "--processes", type=int, default=1, help="locust worker processes (default 1: no workers)"
    )
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        help=f"omni serve nodes on one PostgreSQL, cluster mode (default 1: a single server; "
        f"at most {MAX_NODES})",
    )
    p.add_argument(
        "--profile",
        choices=("steady", "morning-ramp", "burst"),
        help="a load shape (shapes.py) peaking at --visitors over --run-time, instead of -u/-r",
    )
    p.add_argument("--fast", action="store_true", help="short think times (for a 10 s run)")
    p.add_argument("--out", help="report directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary report directory")
    p.add_argument("--require-all", action="store_true", help="fail unless every request type ran")
    p.add_argument("--summary-json", help="write the per-type summary here")
    p.add_argument("locust_args", nargs="*", help="extra locust arguments (after --)")
    args = p.parse_args(argv)
    if not 1 <= args.run_time <= 3600:
        p.error("--run-time must be 1..3600 seconds")
    if not 1 <= args.nodes <= MAX_NODES:
        p.error(f"--nodes must be 1..{MAX_NODES}")

    signal.signal(signal.SIGTERM, _on_signal)
    temp = Path(tempfile.mkdtemp(prefix="omni-load-"))
    out = Path(args.out).resolve() if args.out else temp
    out.mkdir(parents=True, exist_ok=True)
    nodes: list[Node] = []
    database: SharedDatabase | None = None
    locust: subprocess.Popen[bytes] | None = None
    status = 1
    try:
        try:
            if args.nodes == 1:
                nodes.append(launch(out, temp / "pg"))
                wait_started(nodes[0])
            else:
                database = SharedDatabase(temp / "pg")
                database_url = database.start()
                config, groups = cluster_config(out)
                names = [f"n{i}" for i in range(1, args.nodes + 1)]
                # The first alone: it bootstraps the configuration into the empty database
                # (two nodes importing it at once would race); then the others together.
                for batch in (names[:1], names[1:]):
                    started = [
                        launch(out, temp / n, config=config, name=n, database=database_url)
                        for n in batch
                    ]
                    nodes += started
                    for node in started:
                        wait_started(node)
                owned = cluster_ready(nodes, groups)
                print(
                    f"smoke: {args.nodes} nodes on one PostgreSQL, groups owned "
                    + ", ".join(f"{n}: {c}" for n, c in sorted(owned.items())),
                    flush=True,
                )
        except RuntimeError as exc:
            print(f"smoke: {exc}", file=sys.stderr)
            return 2
        for node in nodes:
            print(f"smoke: {node.label} at {node.url}, report in {out}", flush=True)
        users = args.operators + args.visitors
        rate = args.spawn_rate or max(1.0, users / 5)
        env = {
            **os.environ,
            "OMNI_LOAD_OPERATORS": str(args.operators),
            "OMNI_LOAD_PROFILE": args.profile or "",  # empty: -u/-r, not a shape
            "OMNI_LOAD_VISITORS": str(args.visitors),
            "OMNI_LOAD_DURATION": str(args.run_time),
            "OMNI_LOAD_SPAWN_RATE": str(rate),
            "OMNI_LOAD_SUMMARY": str(out / "summary.json"),
            "OMNI_LOAD_WORKERS": str(max(1, args.processes)),
            # Ours only: one node is --host alone, several are every node started here.
            "OMNI_LOAD_NODES": ",".join(node.url for node in nodes) if len(nodes) > 1 else "",
        }
        if args.fast:
            env.setdefault("OMNI_LOAD_MESSAGE_INTERVAL", "0.1-0.4")
            env.setdefault("OMNI_LOAD_REPLY_DELAY", "0.05-0.2")
            env.setdefault("OMNI_LOAD_MESSAGES", "1-3")
        csv_prefix = out / "load"
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--only-summary",
            "--run-time",
            f"{args.run_time}s",
            *([] if args.profile else ["-u", str(users), "-r", str(rate)]),
            "--host",
            nodes[0].url,
            "--csv",
            str(csv_prefix),
            "--html",
            str(out / "load.html"),
            "--exit-code-on-error",
            "1",
            "--loglevel",
            "WARNING",
            *(["--processes", str(args.processes)] if args.processes > 1 else []),
            *args.locust_args,
        ]
        print("smoke:", " ".join(command), flush=True)
        if len(nodes) > 1:
            print(f"smoke: OMNI_LOAD_NODES={env['OMNI_LOAD_NODES']}", flush=True)
        samplers = [MetricsSampler(node.http, node.process.pid) for node in nodes]
        for sampler in samplers:
            sampler.start()
        locust = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        try:
            code = locust.wait(args.run_time + 45)
        except subprocess.TimeoutExpired:
            # Ask it to stop (it still writes its reports), then insist; a failure either way.
            print("smoke: locust did not finish in time; stopping it", file=sys.stderr)
            os.killpg(locust.pid, signal.SIGTERM)
            try:
                locust.wait(15)
            except subprocess.TimeoutExpired:
                pass
            code = -1
        locust_done = locust
        locust = None
        per_node = [sampler.report() for sampler in samplers]
        server_figures = combine(per_node)
        if locust_done.returncode is None:
            os.killpg(locust_done.pid, signal.SIGKILL)
            locust_done.wait(10)
        _kill_group(locust_done.pid)  # forked workers (--processes) may outlive their master

        try:  # the final figures from the locustfile; the CSV is rewritten only every 2 s
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = summarize(read_stats(csv_prefix))
        total = summary.pop("_total", {})
        connects = summary.pop("_nodes", {})  # several nodes: the locustfile's connects per node
        node_figures = {
            node.label: {
                "url": node.url,
                "connects": connects.get(node.url, {}).get("connects", 0),
                **figures,
            }
            for node, figures in zip(nodes, per_node, strict=True)
        }
        header = f"{'count':>8}{'fail':>6}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        print(f"\n{'request type':<28}{header}")
        for kind, s in sorted(summary.items()):
            print(
                f"{kind:<28}{s['count']:>8.0f}{s['failures']:>6.0f}"
                f"{s['p50']:>9.0f}{s['p99']:>9.0f}{s['rps']:>9.1f}"
            )
        if total:
            print(
                f"{'all':<28}{total['count']:>8}{total['failures']:>6}  over "
                f"{total['run_time']:.0f} s, {total['users']} users at the end, "
                f"{total['errors']} error kind(s), {total['exceptions']} exception(s)"
            )
        if len(nodes) > 1:
            for label, f in node_figures.items():
                print(
                    f"node {label} ({f['url']}): {f['connects']} connects, peak "
                    f"{f['peak_connections']} open websockets, {f['messages_relayed']:.0f} "
                    f"messages relayed, CPU {100 * f['server_cpu_cores']:.0f}% of one core"
                )
        print(
            f"server{'s (sums over the nodes)' if len(nodes) > 1 else ''}: "
            f"peak {server_figures['peak_connections']} open websockets, "
            f"peak queue {server_figures['peak_queue']}, "
            f"{server_figures['messages_relayed']:.0f} messages relayed, "
            f"{server_figures['messages_per_s']:.1f}/s average "
            f"(best 2 s: {server_figures['peak_messages_per_s']:.1f}/s), "
            f"omni process CPU {100 * server_figures['server_cpu_cores']:.0f}% of one core"
        )
        if args.summary_json:
            Path(args.summary_json).write_text(
                json.dumps(
                    {
                        **summary,
                        "_total": total,
                        "_server": server_figures,
                        **({"_nodes": node_figures} if len(nodes) > 1 else {}),
                    },
                    indent=2,
                    ensure_ascii=False,
                )
            )
        failures = sum(s["failures"] for s in summary.values())
        missing = [t for t in REQUEST_TYPES if summary.get(t, {}).get("count", 0) == 0]
        problems = []
        if code != 0:
            problems.append(f"locust exited with {code}")
        if not summary:
            problems.append("no requests recorded")
        if failures:
            problems.append(f"{failures:.0f} failed request(s) (see {csv_prefix}_failures.csv)")
        if args.require_all and missing:
            problems.append(f"request types that never ran: {', '.join(missing)}")
        idle = [label for label, f in node_figures.items() if len(nodes) > 1 and not f["connects"]]
        if idle:
            problems.append(f"no connection to node(s) {', '.join(idle)}")
        if problems:
            print("smoke: FAILED: " + "; ".join(problems), file=sys.stderr)
            status = 1
        else:
            print("smoke: OK, no failed requests", flush=True)
            status = 0
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"smoke: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        status = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if locust is not None and locust.poll() is None:
            os.killpg(locust.pid, signal.SIGTERM)
            try:
                locust.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(locust.pid, signal.SIGKILL)
                locust.wait(10)
        for label, code in stop_nodes(nodes).items():
            if code not in (0, None) and status == 0:
                print(f"smoke: {label} exited with {code} (see {out}/{label}.log)", file=sys.stderr)
                status = 1
        if database is not None:
            try:
                database.stop()
            except RuntimeError as exc:
                print(f"smoke: {exc}", file=sys.stderr)
                status = status or 1
        if args.out or not args.keep:
            shutil.rmtree(temp, ignore_errors=True)  # with --out: only the data directories
    return status


if __name__ == "__main__":
    sys.exit(main())
