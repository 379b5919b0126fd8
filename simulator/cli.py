"""``omni-sim``: run a scenario in virtual time and write its report.

    omni-sim run SCENARIO [--seed N] [--out DIR] [--threshold 20] [--no-progress]
    omni-sim staff SCENARIO [--target 80/20]   (Erlang C estimate per group)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulator.engine import simulate
from simulator.erlang import erlang_c_staff
from simulator.report import build_report, to_table, write_outputs
from simulator.scenario import ScenarioError, load_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a scenario in virtual time")
    run.add_argument("scenario")
    run.add_argument("--seed", type=int, default=None, help="overrides the scenario's seed")
    run.add_argument("--out", default=None, help="directory for report.json, report.txt, "
                     "events.jsonl and chart.html (default: sim-out/<scenario name>)")
    run.add_argument("--threshold", type=float, default=None,
                     help="service-level threshold in seconds (default: the scenario's, 20)")
    run.add_argument("--no-progress", action="store_true")
    staff = sub.add_parser("staff", help="Erlang C staffing estimate per group and hour")
    staff.add_argument("scenario")
    staff.add_argument("--target", default="80/20", help="PERCENT/SECONDS, default 80/20")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"omni-sim: {exc}", file=sys.stderr)
        return 2
    if args.command == "staff":
        percent, _, seconds = args.target.partition("/")
        print(erlang_c_staff(scenario, float(percent) / 100, float(seconds or 20)))
        return 0
    seed = scenario.seed if args.seed is None else args.seed
    threshold = scenario.threshold if args.threshold is None else args.threshold
    trace = simulate(scenario, seed, progress=not args.no_progress)
    report = build_report(scenario, trace, seed, threshold)
    out = Path(args.out or Path("sim-out") / (scenario.name or Path(args.scenario).stem))
    write_outputs(out, scenario, trace, report)
    print(to_table(report))
    print(f"wrote {out}/report.json, report.txt, events.jsonl, chart.html "
          f"({scenario.duration / max(trace.wall, 1e-9):,.0f} virtual s per wall s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
