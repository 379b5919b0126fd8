"""The simulator: scenario validation, determinism, queueing theory, shipped scenarios."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from simulator.engine import simulate
from simulator.erlang import erlang_a, erlang_c, erlang_c_asa
from simulator.report import build_report, event_log, to_json
from simulator.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).parent.parent / "simulator" / "scenarios"

ALWAYS = {"id": "always", "timezone": "UTC",
          "weekly": {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri",
                                                       "sat", "sun")}}


def mmc(c: int, rate_per_hour: float, mean_handle: float, hours: float,
        patience: float | None = None, seed: int = 11) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "mmc", "start": "2026-11-23T00:00:00", "timezone": "UTC",
        "duration_hours": hours, "seed": seed,
        "schedules": [ALWAYS], "groups": [{"id": 1, "name": "G"}],
        "services": [{"id": 1, "name": "S", "schedule": "always", "survey": "none",
                      "greeting": "", "links": [{"group": 1}]}],
        "operators": [{"id": 1, "count": c, "groups": [1], "capacity": 1, "login": "00:00",
                       "logout": "00:00", "handle_time": {"mean": mean_handle}}],
        "arrivals": [{"service": 1, "rate": rate_per_hour}],
        "visitors": {"messages": [0, 0], "think_time": None, "survey_share": 0},
    }
    if patience is not None:
        raw["visitors"]["patience"] = {"mean": patience}
    return raw


def test_validation_names_the_field_and_line(tmp_path: Path) -> None:
    text = (SCENARIOS / "closing.toml").read_text().replace("capacity = 2", "capacity = 0")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(bad)
    line = next(n for n, s in enumerate(text.splitlines(), 1) if s == "capacity = 0")
    assert "$.operators[0].capacity" in str(err.value)
    assert f"(line {line})" in str(err.value)
    raw = mmc(2, 10, 60, 1)
    raw["arrivals"][0]["service"] = 99
    with pytest.raises(ScenarioError, match=r"\$\.arrivals\[0\]\.service"):
        parse_scenario(raw)
    raw = mmc(2, 10, 60, 1)
    raw["operators"][0]["handle_time"] = {"mean": 60, "kind": "gamma"}
    with pytest.raises(ScenarioError, match=r"\$\.operators\[0\]\.handle_time\.kind"):
        parse_scenario(raw)


def test_same_seed_same_bytes() -> None:
    scenario = load_scenario(SCENARIOS / "closing.toml")
    outputs = []
    for _ in range(2):
        trace = simulate(scenario)
        report = build_report(scenario, trace, scenario.seed, 20)
        outputs.append((to_json(report).encode(), event_log(scenario, trace).encode()))
    assert outputs[0] == outputs[1]
    other = simulate(scenario, seed=scenario.seed + 1)
    assert event_log(scenario, other).encode() != outputs[0][1]


def test_out_of_hours_after_closing() -> None:
    scenario = load_scenario(SCENARIOS / "closing.toml")
    report = build_report(scenario, simulate(scenario), scenario.seed, 20)
    hours = report["hours"]
    for h in ("16", "17"):
        assert hours[h]["out_of_hours"] == 0 and hours[h]["answered"] > 0
    for h in ("18", "19"):
        assert hours[h]["offered"] > 0
        assert hours[h]["out_of_hours"] == hours[h]["offered"]
        assert hours[h]["answered"] == 0


def test_lunch_break_lowers_service_level() -> None:
    scenario = load_scenario(SCENARIOS / "lunch.toml")
    report = build_report(scenario, simulate(scenario), scenario.seed, 20)
    hours = report["hours"]
    lunch = hours["12"]["service_level"]
    others = [hours[h]["service_level"] for h in ("09", "10", "11", "13")]
    assert lunch < min(others) - 20, (lunch, others)
    series = {p["local"]: p for p in report["series"]}
    assert series["12:15"]["available"] < series["11:00"]["available"]


def test_erlang_c() -> None:
    """M/M/5 at rho = 0.7: probability of waiting and ASA against the formula."""
    c, mean, rho = 5, 60.0, 0.7
    load = c * rho
    rate = load / mean * 3600
    scenario = parse_scenario(mmc(c, rate, mean, hours=30))
    trace = simulate(scenario)
    report = build_report(scenario, trace, scenario.seed, 20)
    total = report["total"]
    answered = total["answered"]
    assert answered > 6000
    events = [e for e in trace.events if e.kind == "assigned"]
    waited = sum(1 for e in events if e.data["wait"] > 0) / len(events)
    expected = erlang_c(c, load)
    asa = erlang_c_asa(c, load, mean)
    # Batch-means style tolerance: correlated samples, about 4 standard errors.
    assert abs(waited - expected) < 0.05, (waited, expected)
    assert math.isclose(total["asa"], asa, rel_tol=0.2), (total["asa"], asa)
    assert math.isclose(total["aht"], mean, rel_tol=0.05)
    print(f"M/M/5 rho=0.7: P(wait) {waited:.4f} vs {expected:.4f}; "
          f"ASA {total['asa']:.2f} vs {asa:.2f} s; n={answered}")


def test_erlang_a() -> None:
    """M/M/3+M: abandonment with exponential patience against the birth-death chain."""
    c, mean, patience, load = 3, 60.0, 60.0, 3.0
    rate = load / mean * 3600
    scenario = parse_scenario(mmc(c, rate, mean, hours=12, patience=patience, seed=5))
    total = build_report(scenario, simulate(scenario), scenario.seed, 20)["total"]
    theory = erlang_a(c, rate / 3600, 1 / mean, 1 / patience)
    observed = total["abandoned"] / (total["answered"] + total["abandoned"])
    assert abs(observed - theory["p_abandon"]) < 0.03, (observed, theory)
    print(f"M/M/3+M: abandoned {observed:.4f} vs Erlang A {theory['p_abandon']:.4f}")
