"""Erlang C and Erlang A (M/M/c and M/M/c+M) formulas, for checks and staffing estimates."""

from __future__ import annotations

import math

from simulator.scenario import Scenario


def erlang_c(c: int, load: float) -> float:
    """Probability of waiting in M/M/c with offered load ``load`` = λ/μ Erlangs (< c)."""
    if load >= c:
        return 1.0
    term = 1.0
    total = 1.0
    for k in range(1, c):
        term *= load / k
        total += term
    top = term * load / c * c / (c - load)
    return top / (total + top)


def erlang_c_asa(c: int, load: float, mean_handle: float) -> float:
    """Average speed of answer in M/M/c."""
    return erlang_c(c, load) * mean_handle / (c - load)


def erlang_c_service_level(c: int, load: float, mean_handle: float, t: float) -> float:
    return 1.0 - erlang_c(c, load) * math.exp(-(c - load) * t / mean_handle)


def erlang_a(c: int, lam: float, mu: float, theta: float, states: int = 2000) -> dict[str, float]:
    """M/M/c+M (exponential patience, rate theta) by its birth-death chain: probability of
    waiting and of abandoning."""
    weights = [1.0]
    for n in range(1, states):
        death = min(n, c) * mu + max(0, n - c) * theta
        weights.append(weights[-1] * lam / death)
    total = sum(weights)
    p = [w / total for w in weights]
    wait = sum(p[c:])
    queued = sum((n - c) * p[n] for n in range(c, states))
    return {"p_wait": wait, "p_abandon": theta * queued / lam}


def erlang_c_staff(scenario: Scenario, target: float, seconds: float) -> str:
    """Fewest agents (capacity 1) per service and hour meeting ``target`` within ``seconds``,
    by Erlang C with each service's mean handle time taken from its groups' operators."""
    lines = [
        f"Erlang C estimate for {target:.0%} answered within {seconds:g} s "
        "(agents of capacity 1, infinite patience)"
    ]
    for arrival in scenario.arrivals:
        service = scenario.config.directory.services[arrival.service]
        groups = {link.group for link in service.links}
        handles = [op.handle_time.mean for op in scenario.operators if groups & set(op.groups)]
        if not handles:
            continue
        mean = sum(handles) / len(handles)
        from simulator.scenario import _hourly

        table = _hourly(arrival)
        cells = []
        for hour, rate in enumerate(table):
            load = rate / 3600 * mean
            c = max(1, math.ceil(load))
            while rate and erlang_c_service_level(c, load, mean, seconds) < target:
                c += 1
            cells.append(f"{hour:02d}:{c if rate else 0}")
        lines.append(f"service {arrival.service} (AHT {mean:.0f} s): " + " ".join(cells))
    return "\n".join(lines)
