"""``omni-sim``: run a scenario in virtual time (or against a running server) and report.

omni-sim run SCENARIO [--seed N] [--out DIR] [--threshold 20] [--no-progress]
omni-sim run --real ws://127.0.0.1:PORT SCENARIO [--allow-remote] [--wall-cap S]
omni-sim staff SCENARIO [--target 80/20] [--seed N] [--budget N] [--group G] [--per-hour]
                        [--erlang-only]
omni-sim config SCENARIO [--out FILE]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from simulator.engine import simulate, simulate_real
from simulator.erlang import erlang_c_staff
from simulator.report import build_report, to_table, write_outputs
from simulator.scenario import Scenario, ScenarioError, load_raw, load_scenario
from simulator.staff import plan_group, plan_table, staff, staff_table


def real_base(url: str, allow_remote: bool) -> str:
    """``ws://host:port`` from ``url`` (a trailing ``/ws/visitor`` or ``/ws/operator`` is
    dropped); a :class:`ValueError` for other schemes, or for a non-loopback host unless
    ``allow_remote``."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"--real needs a ws:// or wss:// URL with a host, not {url!r}")
    host = parts.hostname
    if not allow_remote:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"--real {host} is not a loopback address: load tests target "
                "127.0.0.1 (pass --allow-remote to drive another host)"
            )
    path = parts.path.rstrip("/")
    for suffix in ("/ws/visitor", "/ws/operator"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return f"{parts.scheme}://{parts.netloc}{path}"


def server_toml(scenario: Scenario) -> str:
    """The scenario's server configuration as a file for ``omni serve --config`` (then
    ``omni-sim run --real`` against that server finds every operator's token)."""
    name = scenario.name or "scenario"
    head = (
        f"# omni serve configuration for the simulator scenario {name!r} (omni-sim config).\n"
        "# Operators' tokens are the scenario's: change them before exposing the server.\n\n"
    )
    return head + tomli_w.dumps(_without_nulls(scenario.server_config))


def _without_nulls(value: Any) -> Any:
    """TOML has no null: a field left out takes its default, which is what null meant."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def parse_target(text: str) -> tuple[float, float]:
    percent, _, seconds = text.partition("/")
    share, within = float(percent) / 100, float(seconds or 20)
    if not 0 < share < 1 or within <= 0:
        raise ValueError(f"--target {text!r}: want PERCENT/SECONDS, e.g. 80/20")
    return share, within


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="simulate a scenario in virtual time, or drive a running server in real time (--real)",
    )
    run.add_argument("scenario")
    run.add_argument("--seed", type=int, default=None, help="overrides the scenario's seed")
    run.add_argument(
        "--out",
        default=None,
        help="directory for report.json, report.txt, "
        "events.jsonl and chart.html (default: sim-out/<scenario name>, "
        "sim-out/<scenario name>-real with --real)",
    )
    run.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="service-level threshold in seconds (default: the scenario's, 20)",
    )
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--real",
        metavar="URL",
        default=None,
        help="drive the server at ws://HOST:PORT over TCP in real time",
    )
    run.add_argument(
        "--allow-remote",
        action="store_true",
        help="with --real: allow a host that is not a loopback address",
    )
    run.add_argument(
        "--wall-cap",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --real: hard wall-clock limit (default: duration + 60 s)",
    )
    config_cmd = sub.add_parser(
        "config",
        help="print the omni serve configuration (TOML) of a server that runs the scenario",
    )
    config_cmd.add_argument("scenario")
    config_cmd.add_argument("--out", default=None, help="write it to this file instead")
    staff_cmd = sub.add_parser(
        "staff",
        help="fewest operators per group meeting a service "
        "level, by simulation, beside the Erlang C estimate",
    )
    staff_cmd.add_argument("scenario")
    staff_cmd.add_argument("--target", default="80/20", help="PERCENT/SECONDS, default 80/20")
    staff_cmd.add_argument("--seed", type=int, default=None, help="overrides the scenario's seed")
    staff_cmd.add_argument(
        "--budget",
        type=int,
        default=None,
        help="most simulations per group (default 12), or per hour with --per-hour (default 4)",
    )
    staff_cmd.add_argument(
        "--per-hour",
        action="store_true",
        help="a staffing plan per local hour instead of one level for the whole run",
    )
    staff_cmd.add_argument(
        "--group", type=int, action="append", default=None, help="only this group (repeatable)"
    )
    staff_cmd.add_argument(
        "--erlang-only",
        action="store_true",
        help="print only the Erlang C estimate per service and hour",
    )
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"omni-sim: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        text = server_toml(scenario)
        if args.out is None:
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text, encoding="utf-8")
        return 0
    seed = scenario.seed if args.seed is None else args.seed
    if args.command == "staff":
        try:
            share, within = parse_target(args.target)
        except ValueError as exc:
            print(f"omni-sim: {exc}", file=sys.stderr)
            return 2
        if args.erlang_only:
            print(erlang_c_staff(scenario, share, within))
            return 0
        unknown = [g for g in args.group or [] if g not in scenario.group_names]
        if unknown:
            print(f"omni-sim: unknown group(s) {unknown}", file=sys.stderr)
            return 2
        raw, _ = load_raw(args.scenario)
        base = Path(args.scenario).parent
        if args.per_hour:
            budget = max(1, 4 if args.budget is None else args.budget)
            try:
                plans = [
                    plan_group(raw, scenario, g, share, within, seed, budget, base)
                    for g in (args.group or sorted(scenario.group_names))
                ]
            except ValueError as exc:
                print(f"omni-sim: {exc}", file=sys.stderr)
                return 2
            print(plan_table(plans, share, within, seed))
            return 0
        budget = max(1, 12 if args.budget is None else args.budget)
        results = staff(raw, scenario, share, within, seed, budget, args.group, base=base)
        print(staff_table(results, share, within, seed))
        return 0
    threshold = scenario.threshold if args.threshold is None else args.threshold
    name = scenario.name or Path(args.scenario).stem
    if args.real is not None:
        try:
            server = real_base(args.real, args.allow_remote)
        except ValueError as exc:
            print(f"omni-sim: {exc}", file=sys.stderr)
            return 2
        trace = simulate_real(scenario, server, seed, args.wall_cap, progress=not args.no_progress)
        name += "-real"
    else:
        trace = simulate(scenario, seed, progress=not args.no_progress)
    report = build_report(scenario, trace, seed, threshold)
    out = Path(args.out or Path("sim-out") / name)
    write_outputs(out, scenario, trace, report)
    print(to_table(report))
    if args.real is not None:
        print(
            f"wrote {out}/report.json, report.txt, events.jsonl, chart.html "
            f"(real time, {trace.wall:.1f} s)"
        )
    else:
        print(
            f"wrote {out}/report.json, report.txt, events.jsonl, chart.html "
            f"({scenario.duration / max(trace.wall, 1e-9):,.0f} virtual s per wall s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
