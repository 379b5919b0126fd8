"""Simulator speed: virtual seconds simulated per wall second.

Usage::

    .venv/bin/python benchmarks/simulator.py [SCENARIO] [--seed N]

Default scenario: ``simulator/scenarios/weekday.toml`` (10 hours, 30 operators, ~1,000
conversations). Prints conversations, events, wall time and virtual s per wall s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.engine import simulate
from simulator.scenario import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "scenario",
        nargs="?",
        default=str(
            Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / "weekday.toml"
        ),
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    trace = simulate(scenario, args.seed)
    starts = sum(1 for e in trace.events if e.kind == "start")
    print(
        f"scenario {scenario.name}: {scenario.duration / 3600:g} virtual hours, "
        f"{len(scenario.operators)} operators, {starts} conversations, "
        f"{len(trace.events)} events"
    )
    print(f"wall {trace.wall:.2f} s; {scenario.duration / trace.wall:,.0f} virtual s per wall s")


if __name__ == "__main__":
    main()
