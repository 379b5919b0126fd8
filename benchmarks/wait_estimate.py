"""How close the estimated wait comes, beside the estimates it was chosen over.

Usage::

    .venv/bin/python benchmarks/wait_estimate.py [SCENARIO] [--seed N] [--per-place S]

Default scenario: ``simulator/scenarios/busy.toml``. One simulated run; for every visitor who
was answered and told an estimate when they joined the queue (their first ``queued`` frame),
the wait they had is set against:

* ``omni`` — the estimate they were told (``omni.domain.estimate``: places to move * the
  group's pace, the recent answered visitors' waits per place);
* ``interval`` — position * the mean interval between the group's last 20 answers of the hour
  before they joined, 0 when Omni said 0 (an operator was free: this alternative is given that
  knowledge);
* ``interval_blind`` — the same without that knowledge (the usual "position * time between
  answers");
* ``mean_wait`` — the mean wait of those answered visitors, 0 when Omni said 0;
* ``oracle`` (with ``--per-place S``) — position * S, 0 when Omni said 0: an estimate that knows
  the operators' true pace (for s operators of mean handle time h, S = h / s).

The alternatives are computed from the run's trace, on the same visitors (those for which every
one of them has the data it needs). Prints JSON: per estimate, the figures of the simulator's
report (mae, bias, median_relative_error, within_50_percent, within_1_minute) over all those
visitors and over those who waited at least a second.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omni.domain.estimate import for_display
from simulator.engine import Trace, simulate
from simulator.report import accuracy
from simulator.scenario import load_scenario

#: The alternatives' window: the last answers of the last hour (as Omni's estimator).
KEEP, HORIZON = 20, 3600.0


def compare(trace: Trace, per_place: float | None) -> dict[str, Any]:
    joined: dict[int, dict[str, Any]] = {}
    answers: dict[Any, list[tuple[float, float]]] = defaultdict(list)  # group -> (t, wait)
    for event in trace.events:
        data = event.data
        if event.kind == "queued":
            joined[data["visitor"]] = {"t": event.t, **data}
        elif event.kind == "assigned":
            visitor = joined.get(data["visitor"])
            if visitor is not None and "wait" not in visitor:  # the first answer only
                visitor["wait"] = data["wait"]
                answers[visitor["group"]].append((event.t, data["wait"]))
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for visitor in joined.values():
        if "wait" not in visitor or visitor.get("estimate") is None:
            continue
        recent = [
            a for a in answers[visitor["group"]] if visitor["t"] - HORIZON <= a[0] < visitor["t"]
        ][-KEEP:]
        if len(recent) < 2:
            continue
        wait, position, free = visitor["wait"], visitor["position"], visitor["estimate"] == 0
        interval = statistics.fmean(b[0] - a[0] for a, b in itertools.pairwise(recent))
        told = {
            "omni": visitor["estimate"],
            "interval": 0 if free else for_display(position * interval),
            "interval_blind": for_display(position * interval),
            "mean_wait": 0 if free else for_display(statistics.fmean(w for _, w in recent)),
        }
        if per_place is not None:
            told["oracle"] = 0 if free else for_display(position * per_place)
        for name, estimate in told.items():
            pairs[name].append((estimate, wait))
    return {
        name: {
            "visitors": len(both),
            **accuracy(both),
            "waited": {
                "visitors": sum(1 for _, w in both if w >= 1.0),
                **accuracy([(e, w) for e, w in both if w >= 1.0]),
            },
        }
        for name, both in pairs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "scenario",
        nargs="?",
        default=str(
            Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / "busy.toml"
        ),
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--per-place", type=float, default=None, help="the oracle's pace, seconds per place"
    )
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    seed = scenario.seed if args.seed is None else args.seed
    trace = simulate(scenario, seed)
    result = {"scenario": scenario.name, "seed": seed, "estimates": compare(trace, args.per_place)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
