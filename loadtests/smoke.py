"""Bounded smoke load: start ``omni serve`` on a fresh embedded PostgreSQL, run locust headless
against it on 127.0.0.1, stop the server, and fail on any failed request.

    python loadtests/smoke.py                      # 60 s, 5 operators, 20 visitors
    python loadtests/smoke.py --run-time 10 --visitors 10 --fast
    python loadtests/smoke.py --run-time 120 --operators 50 --visitors 300 --out /tmp/load300

Exit status: 0 when locust exited 0 and its stats show requests and no failures; 1 otherwise
(2 for a server that did not start). The report is ``OUT/load_stats.csv``, ``OUT/load.html`` and
``OUT/server.log`` (OUT: ``--out``, else a temporary directory, removed afterwards unless
``--keep``). Every wait is bounded and the server and its data directory are cleaned up on every
exit path, including Ctrl-C and SIGTERM.
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
import urllib.request
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


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def start_server(out: Path, data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    """``omni serve`` on ephemeral ports; returns it, its ws:// and its http:// base URLs."""
    log_path = out / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMNI_DATABASE_URL", None)  # always the embedded PostgreSQL in a fresh directory
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omni.cli",
            "serve",
            "--config",
            str(CONFIG),
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
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # our Ctrl-C is handled here, not delivered to it twice
    )
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:
        assert server.stdout is not None
        with log_path.open("w") as log:
            for line in server.stdout:
                log.write(line)
                log.flush()
                m = re.search(
                    r"omni: serving websockets on (ws://[^/\s]+)/ws/visitor.*HTTP on (http://\S+)",
                    line,
                )
                if m and not ready.is_set():
                    found["url"], found["http"] = m[1], m[2]
                    ready.set()
        ready.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    ready.wait(SERVER_START_TIMEOUT)
    if "url" not in found:
        stop_server(server)
        tail = log_path.read_text()[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"omni serve did not start within {SERVER_START_TIMEOUT:.0f}s\n{tail}")
    return server, found["url"], found["http"]


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


def stop_server(server: subprocess.Popen[str]) -> int | None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    return server.returncode


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

    signal.signal(signal.SIGTERM, _on_signal)
    temp = Path(tempfile.mkdtemp(prefix="omni-load-"))
    out = Path(args.out).resolve() if args.out else temp
    out.mkdir(parents=True, exist_ok=True)
    data_dir = temp / "pg"
    server: subprocess.Popen[str] | None = None
    locust: subprocess.Popen[bytes] | None = None
    status = 1
    try:
        try:
            server, url, http_url = start_server(out, data_dir)
        except RuntimeError as exc:
            print(f"smoke: {exc}", file=sys.stderr)
            return 2
        print(f"smoke: server at {url}, report in {out}", flush=True)
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
            url,
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
        sampler = MetricsSampler(http_url, server.pid)
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
        server_figures = sampler.report()
        if locust_done.returncode is None:
            os.killpg(locust_done.pid, signal.SIGKILL)
            locust_done.wait(10)
        _kill_group(locust_done.pid)  # forked workers (--processes) may outlive their master

        try:  # the final figures from the locustfile; the CSV is rewritten only every 2 s
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = summarize(read_stats(csv_prefix))
        total = summary.pop("_total", {})
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
        print(
            f"server: peak {server_figures['peak_connections']} open websockets, "
            f"peak queue {server_figures['peak_queue']}, "
            f"{server_figures['messages_relayed']:.0f} messages relayed, "
            f"{server_figures['messages_per_s']:.1f}/s average "
            f"(best 2 s: {server_figures['peak_messages_per_s']:.1f}/s), "
            f"omni process CPU {100 * server_figures['server_cpu_cores']:.0f}% of one core"
        )
        if args.summary_json:
            Path(args.summary_json).write_text(
                json.dumps(
                    {**summary, "_total": total, "_server": server_figures},
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
        if server is not None:
            code = stop_server(server)
            if code not in (0, None) and status == 0:
                print(f"smoke: server exited with {code} (see {out}/server.log)", file=sys.stderr)
                status = 1
        if not args.keep and not args.out:
            shutil.rmtree(temp, ignore_errors=True)
        elif args.out:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
