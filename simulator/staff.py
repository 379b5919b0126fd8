"""Staffing by simulation: the fewest operators per group that meet a service-level target.

For each group that has shifts and traffic:

1. **Traffic.** An arrival belongs to the first group its service links to (where the server
   queues it while that group is open). The group's rate per local hour of the run is the sum of
   its arrivals' rates (with an ``arrival_trace``: the arrivals counted in each hour of the run).
2. **Erlang C estimate** at the peak hour: the fewest agents of capacity 1 with
   ``1 - C(c, A) * exp(-(c - A) * T / AHT) >= target``, where ``A = peak rate * AHT`` and AHT is
   the mean handle time of the group's *template* shift (below); divided by that shift's capacity
   and rounded up.
3. **Scaling.** To staff the group with N operators, every shift that lists the group is removed
   and replaced by N copies (``count = N``) of the first such shift, the *template*, with fresh
   ids. Shifts of other groups stay as they are, so do their arrivals.
4. **Simulation.** Each N is simulated in virtual time with the same seed (the same arrivals).
   The group's service level is answered within T / (answered + abandoned + still waiting at
   the end after more than T): a queue that grows without bound counts against it.
5. **Search.** Start at the estimate; step down (or up) by 1, 2, 4, … until the target flips,
   then bisect. At most ``budget`` simulations per group.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.engine import Trace, simulate
from simulator.erlang import erlang_c_service_level
from simulator.report import _hour_starts
from simulator.scenario import Scenario, _hourly, parse_scenario


@dataclass
class GroupStaffing:
    group: int
    name: str
    peak_rate: float = 0.0  # arrivals per hour, at the busiest hour of the run
    aht: float | None = None
    capacity: int = 1
    erlang: int | None = None  # operators, by Erlang C at the peak hour
    minimum: int | None = None  # fewest simulated operators meeting the target
    levels: dict[int, float | None] = field(default_factory=dict)  # N -> simulated SL %
    note: str = ""

    @property
    def sims(self) -> int:
        return len(self.levels)


def primary_group(scenario: Scenario, service: int) -> int | None:
    links = scenario.config.directory.services[service].links
    return links[0].group_id if links else None


def group_rates(scenario: Scenario, group: int) -> list[float]:
    """Arrivals per hour to ``group``, one value per (local) hour of the run."""
    starts = _hour_starts(scenario)
    if scenario.trace is not None:
        ends = [*starts[1:], scenario.duration]
        rates = []
        for lo, hi in zip(starts, ends, strict=True):
            n = sum(
                1 for t, s in scenario.trace if lo <= t < hi and primary_group(scenario, s) == group
            )
            rates.append(n * 3600 / (hi - lo) if hi > lo else 0.0)
        return rates
    mine = [a for a in scenario.arrivals if primary_group(scenario, a.service) == group]
    return [sum(_hourly(a)[scenario.local(t).hour] for a in mine) for t in starts]


def erlang_c_agents(rate_per_hour: float, aht: float, target: float, seconds: float) -> int:
    """Fewest agents of capacity 1 meeting ``target`` (a share) within ``seconds``."""
    if rate_per_hour <= 0:
        return 0
    load = rate_per_hour / 3600 * aht
    c = max(1, math.floor(load) + 1)
    while erlang_c_service_level(c, load, aht, seconds) < target:
        c += 1
    return c


def group_service_level(trace: Trace, group: int, threshold: float, end: float) -> float | None:
    """The group's service level in % (see the module doc), from a trace."""
    arrived: dict[int, float] = {}
    group_of: dict[int, int | None] = {}
    waits: dict[int, float] = {}
    abandoned: set[int] = set()
    for e in trace.events:
        v = e.data.get("visitor")
        if v is None:
            continue
        if e.kind == "start":
            arrived[v] = e.t
        elif e.kind == "queued":
            group_of[v] = e.data["group"]
        elif e.kind == "assigned" and v not in waits:
            waits[v] = e.data["wait"]
            group_of[v] = e.data["group"]
        elif e.kind == "abandoned":
            abandoned.add(v)
    hits = total = 0
    for v, g in group_of.items():
        if g != group:
            continue
        if v in waits:
            total += 1
            hits += waits[v] <= threshold
        elif v in abandoned or end - arrived[v] > threshold:
            total += 1
    return 100.0 * hits / total if total else None


def staffed(raw: dict[str, Any], group: int, n: int) -> dict[str, Any]:
    """``raw`` (a scenario's TOML) with the group's shifts replaced by ``n`` copies of the first."""
    shifts = raw["operators"]
    mine = [s for s in shifts if group in s["groups"]]
    top = max(s["id"] + s.get("count", 1) - 1 for s in shifts)
    template = copy.deepcopy(mine[0])
    template.update(id=top + 1, count=n)
    template.pop("token", None)
    template.pop("name", None)
    out = dict(raw)
    out["operators"] = [s for s in shifts if group not in s["groups"]] + [template]
    return out


def staff_group(
    raw: dict[str, Any],
    scenario: Scenario,
    group: int,
    target: float,
    seconds: float,
    seed: int,
    budget: int = 12,
    base: Path | None = None,
) -> GroupStaffing:
    result = GroupStaffing(group, scenario.group_names[group])
    shifts = [s for s in raw.get("operators", []) if group in s["groups"]]
    if not shifts:
        result.note = "no shifts"
        return result
    template = parse_scenario(staffed(raw, group, 1), base=base).operators[-1]
    result.aht, result.capacity = template.handle_time.mean, template.capacity
    result.peak_rate = max(group_rates(scenario, group), default=0.0)
    if result.peak_rate <= 0:
        result.note = "no arrivals"
        return result
    agents = erlang_c_agents(result.peak_rate, result.aht, target, seconds)
    result.erlang = math.ceil(agents / result.capacity)

    def meets(n: int) -> bool:
        if n not in result.levels:
            trace = simulate(parse_scenario(staffed(raw, group, n), base=base), seed)
            result.levels[n] = group_service_level(trace, group, seconds, scenario.duration)
        level = result.levels[n]
        return level is not None and level >= 100 * target

    lo, hi = 0, None  # lo: known to fail (0: nobody); hi: known to meet
    n = min(1000, max(1, result.erlang))
    if meets(n):
        hi, step = n, 1
        while hi > 1 and result.sims < budget:
            m = max(1, hi - step)
            if meets(m):
                hi, step = m, step * 2
            else:
                lo = m
                break
    else:
        lo, step = n, 1
        while result.sims < budget and lo < 1000:
            m = min(1000, lo + step)
            if meets(m):
                hi = m
                break
            lo, step = m, step * 2
    while hi is not None and hi - lo > 1 and result.sims < budget:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    if hi is None:
        result.note = f"not met with {lo} (budget of {budget} simulations)"
    else:
        result.minimum = hi
        if hi - lo > 1:
            result.note = f"between {lo + 1} and {hi} (budget of {budget} simulations)"
    return result


def staff(
    raw: dict[str, Any],
    scenario: Scenario,
    target: float,
    seconds: float,
    seed: int,
    budget: int = 12,
    groups: list[int] | None = None,
    base: Path | None = None,
) -> list[GroupStaffing]:
    return [
        staff_group(raw, scenario, g, target, seconds, seed, budget, base)
        for g in (groups or sorted(scenario.group_names))
    ]


def staff_table(results: list[GroupStaffing], target: float, seconds: float, seed: int) -> str:
    def pct(level: float | None) -> str:
        return "-" if level is None else f"{level:.1f}"

    head = (
        f"{'Group':<20}{'peak/h':>8}{'AHT s':>8}{'cap':>5}{'Erlang C':>10}{'simulated':>11}"
        f"{'SL% at N':>10}{'SL% N-1':>9}{'sims':>6}"
    )
    lines = [
        f"Staffing for {target:.0%} answered within {seconds:g} s, by simulation (seed "
        f"{seed}); each group's shifts replaced by N copies of its first shift",
        "",
        head,
        "-" * len(head),
    ]
    for r in results:
        n = r.minimum
        lines.append(
            f"{(str(r.group) + ' ' + r.name)[:19]:<20}{r.peak_rate:>8.1f}"
            f"{'-' if r.aht is None else f'{r.aht:.0f}':>8}{r.capacity:>5}"
            f"{'-' if r.erlang is None else r.erlang:>10}{'-' if n is None else n:>11}"
            f"{pct(r.levels.get(n)) if n else '-':>10}"
            f"{pct(r.levels.get(n - 1)) if n and n > 1 else '-':>9}{r.sims:>6}"
            + (f"  {r.note}" if r.note else "")
        )
    return "\n".join(lines)
