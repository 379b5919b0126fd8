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

**Per hour** (:func:`plan_group`, ``omni-sim staff --per-hour``): a staffing plan N(h) for each
local hour of the run instead of one level for the whole run.

* The group's shifts become *layers* of the template: operator k works the hours where
  N(h) >= k (login and logout at those hours' edges, leaving with ``finish``: they complete what
  they hold), so the number logged in follows the plan hour by hour.
* Every hour starts at its own Erlang C estimate. Then, hour by hour in order, N(h) moves down
  while the hour still meets the target, or up until it does — the hour's service level being
  that of the visitors who *arrived* in it — with earlier hours at their chosen values and later
  ones at their estimates. One simulation gives every hour's level, and plans already simulated
  are not simulated again.
* Repair: an hour that misses the target once later hours were chosen (its last visitors are
  answered in the next hour) gets one more operator, the first such hour each time, up to
  ``budget`` times; the levels reported are those of the final plan, and an hour that still
  misses is flagged.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import time, timedelta
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
    return links[0].group if links else None


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


def group_service_level(
    trace: Trace,
    group: int,
    threshold: float,
    end: float,
    window: tuple[float, float] | None = None,
) -> float | None:
    """The group's service level in % (see the module doc), from a trace; with ``window``,
    only of the visitors who arrived in [start, end) of it."""
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
        if window is not None and not window[0] <= arrived[v] < window[1]:
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


# -- per hour -------------------------------------------------------------------------------------


@dataclass
class HourPlan:
    start: float  # seconds from the run's start
    end: float
    local: str  # "HH:MM", local time of the start
    rate: float  # arrivals per hour to the group
    erlang: int  # operators, by Erlang C for this hour alone
    operators: int = 0  # the plan
    level: float | None = None  # simulated SL % of this hour's arrivals, with the final plan
    below: float | None = None  # the same with one operator fewer in this hour, when tried
    note: str = ""


@dataclass
class GroupPlan:
    group: int
    name: str
    aht: float | None = None
    capacity: int = 1
    hours: list[HourPlan] = field(default_factory=list)
    sims: int = 0
    note: str = ""

    def operator_hours(self, attribute: str = "operators") -> float:
        total: float = sum(getattr(h, attribute) * (h.end - h.start) / 3600 for h in self.hours)
        return total


def hour_windows(scenario: Scenario) -> list[tuple[float, float]]:
    starts = _hour_starts(scenario)
    return list(zip(starts, [*starts[1:], scenario.duration], strict=True))


def _hhmm(scenario: Scenario, offset: float) -> str:
    local = scenario.local(offset)
    if local.date() > scenario.local(0).date():
        return "24:00"  # the run's end at midnight (checked by plan_group)
    return local.strftime("%H:%M")


def planned(raw: dict[str, Any], scenario: Scenario, group: int, plan: list[int]) -> dict[str, Any]:
    """``raw`` with the group's shifts replaced by layers of its first shift: operator k works
    every hour h (of :func:`hour_windows`) with ``plan[h] >= k``."""
    windows = hour_windows(scenario)
    shifts = raw["operators"]
    mine = [s for s in shifts if group in s["groups"]]
    template = copy.deepcopy(mine[0])
    for key in ("token", "name", "pauses", "count", "id"):
        template.pop(key, None)
    template["leave"] = "finish"
    spans: list[tuple[int, int]] = []
    for k in range(1, max(plan, default=0) + 1):
        h = 0
        while h < len(plan):
            if plan[h] < k:
                h += 1
                continue
            j = h
            while j < len(plan) and plan[j] >= k:
                j += 1
            spans.append((h, j))
            h = j
    next_id = max(s["id"] + s.get("count", 1) - 1 for s in shifts) + 1
    layers = []
    for (a, b), count in sorted(Counter(spans).items()):
        login, logout = _hhmm(scenario, windows[a][0]), _hhmm(scenario, windows[b - 1][1])
        layers.append({**template, "id": next_id, "count": count, "login": login, "logout": logout})
        next_id += count
    out = dict(raw)
    out["operators"] = [s for s in shifts if group not in s["groups"]] + layers
    return out


def plan_group(
    raw: dict[str, Any],
    scenario: Scenario,
    group: int,
    target: float,
    seconds: float,
    seed: int,
    budget: int = 4,
    base: Path | None = None,
) -> GroupPlan:
    """The group's staffing per hour (see the module doc); at most ``budget`` simulations per
    hour, plus the final one."""
    result = GroupPlan(group, scenario.group_names[group])
    if not [s for s in raw.get("operators", []) if group in s["groups"]]:
        result.note = "no shifts"
        return result
    first_day, last = scenario.local(0).date(), scenario.local(scenario.duration)
    midnight = last.time() == time(0)
    if last.date() != first_day and (last.date() != first_day + timedelta(days=1) or not midnight):
        raise ValueError("a plan per hour needs a run within one local day (shifts are HH:MM)")
    template = parse_scenario(staffed(raw, group, 1), base=base).operators[-1]
    result.aht, result.capacity = template.handle_time.mean, template.capacity
    windows = hour_windows(scenario)
    rates = group_rates(scenario, group)
    for (start, end), rate in zip(windows, rates, strict=True):
        agents = erlang_c_agents(rate, result.aht, target, seconds)
        result.hours.append(
            HourPlan(
                start,
                end,
                scenario.local(start).strftime("%H:%M"),
                rate,
                math.ceil(agents / result.capacity),
            )
        )
    if not any(h.rate > 0 for h in result.hours):
        result.note = "no arrivals"
        return result
    levels: dict[tuple[int, ...], list[float | None]] = {}

    def simulated(plan: list[int]) -> list[float | None]:
        key = tuple(plan)
        if key not in levels:
            trace = simulate(parse_scenario(planned(raw, scenario, group, plan), base=base), seed)
            levels[key] = [
                group_service_level(trace, group, seconds, scenario.duration, window)
                for window in windows
            ]
            result.sims += 1
        return levels[key]

    def meets(plan: list[int], h: int) -> bool:
        level = simulated(plan)[h]
        return level is None or level >= 100 * target

    plan = [h.erlang for h in result.hours]
    for h, hour in enumerate(result.hours):
        if hour.rate <= 0:
            continue
        plan[h] = max(1, plan[h])
        if simulated(plan)[h] is None:
            # Nobody waited in this group this hour (e.g. the service is closed then).
            plan[h] = hour.erlang = 0
            hour.note = "no conversation queued here"
            continue
        spent = 0
        if meets(plan, h):
            while plan[h] > 1 and spent < budget:
                spent += 1
                fewer = [*plan[:h], plan[h] - 1, *plan[h + 1 :]]
                if not meets(fewer, h):
                    hour.below = simulated(fewer)[h]
                    break
                plan = fewer
        else:
            while spent < budget:
                spent += 1
                hour.below = simulated(plan)[h]
                plan = [*plan[:h], plan[h] + 1, *plan[h + 1 :]]
                if meets(plan, h):
                    break
            else:
                hour.note = f"not met with {plan[h]} (budget of {budget} simulations)"
    # Repair: an hour chosen early can miss once later hours were lowered (its last visitors
    # are answered in the next hour); give the first such hour one more operator, and again.
    for _ in range(budget):
        missed = [
            h
            for h, level in enumerate(simulated(plan))
            if level is not None and level < 100 * target and not result.hours[h].note
        ]
        if not missed:
            break
        plan = [*plan[: missed[0]], plan[missed[0]] + 1, *plan[missed[0] + 1 :]]
    final = simulated(plan)
    for h, hour in enumerate(result.hours):
        hour.operators, hour.level = plan[h], final[h]
        if hour.level is not None and hour.level < 100 * target and not hour.note:
            hour.note = "missed in the final plan (repair budget spent)"
    return result


def plan_table(results: list[GroupPlan], target: float, seconds: float, seed: int) -> str:
    def pct(level: float | None) -> str:
        return "-" if level is None else f"{level:.1f}"

    lines = [
        f"Staffing per hour for {target:.0%} answered within {seconds:g} s, by simulation "
        f"(seed {seed}); each group's shifts replaced by layers of its first shift",
    ]
    for r in results:
        lines += ["", f"{r.group} {r.name}" + (f": {r.note}" if r.note else "")]
        if not r.hours or r.note:
            continue
        head = (
            f"{'hour':<7}{'arrivals/h':>11}{'Erlang C':>10}{'simulated':>11}{'SL%':>7}"
            f"{'SL% N-1':>9}"
        )
        lines += [head, "-" * len(head)]
        for hour in r.hours:
            lines.append(
                f"{hour.local:<7}{hour.rate:>11.1f}{hour.erlang:>10}{hour.operators:>11}"
                f"{pct(hour.level):>7}{pct(hour.below):>9}"
                + (f"  {hour.note}" if hour.note else "")
            )
        peak = max(h.operators for h in r.hours)
        span = sum(h.end - h.start for h in r.hours) / 3600
        lines.append(
            f"operator-hours: {r.operator_hours():.1f} planned, {r.operator_hours('erlang'):.1f} "
            f"by Erlang C per hour, {peak * span:.1f} at the plan's peak all day "
            f"(AHT {r.aht:.0f} s, capacity {r.capacity}, {r.sims} simulations)"
        )
    return "\n".join(lines)


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
