"""``omni-sim run`` as a user runs it: separate processes, each with its own string hashing.

The simulator promises that the same scenario and seed give byte-identical outputs. Within one
process (tests/test_simulator.py::test_same_seed_same_bytes) Python's string hashes are fixed,
so an iteration over a set of strings (conversation ids, tokens) keeps one order; across
processes that order follows ``PYTHONHASHSEED``. These tests run ``python -m simulator.cli``
from this checkout, in processes with different hash seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ("report.json", "events.jsonl", "report.txt", "chart.html")

# Two hours through the server's less travelled paths as well as its queues: operators in two
# groups, pauses, three operators who leave at 10:15 holding up to three conversations each,
# impatient visitors, surveys, and a service closing at 11:00 (out of hours). ``{leave}`` is
# how those three leave: "finish" their conversations, or "drop" the connection so that the
# server requeues what they held once the grace period is over.
SCENARIO = """\
name = "determinism"
start = 2026-11-23T09:30:00
timezone = "Europe/Berlin"
duration_hours = 2
seed = 5
operator_grace_seconds = 60

[[schedules]]
id = "office"
timezone = "Europe/Berlin"
[schedules.weekly]
mon = [["08:00", "11:00"]]

[[groups]]
id = 1
name = "Support"

[[groups]]
id = 2
name = "Sales"

[[services]]
id = 25
name = "Support"
schedule = "office"
links = [{ group = 1 }]

[[services]]
id = 30
name = "Sales"
survey = "none"
links = [{ group = 2 }]

[[operators]]
id = 1
name = "Stays"
count = 3
groups = [1]
capacity = 2
login = "09:30"
logout = "11:30"
pauses = [["10:00", "10:20"]]
handle_time = { kind = "lognormal", mean = 300, sigma = 0.6 }
reply_delay = 8

[[operators]]
id = 11
name = "Lost"
count = 3
groups = [1]
capacity = 3
login = "09:30"
logout = "10:15"
leave = "{leave}"
handle_time = { kind = "lognormal", mean = 300, sigma = 0.6 }

[[operators]]
id = 21
name = "Both"
count = 2
groups = [1, 2]
capacity = 2
login = "09:30"
logout = "11:30"
handle_time = { kind = "exponential", mean = 240 }

[[arrivals]]
service = 25
rate = 70
rates = { "10" = 100 }

[[arrivals]]
service = 30
rate = 30

[visitors]
patience = { kind = "exponential", mean = 300 }
messages = [1, 3]
think_time = { kind = "exponential", mean = 30 }
survey_share = 0.5
"""


def start_run(scenario: Path, seed: int, out: Path, hash_seed: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    env.pop("PYTHONPATH", None)  # this checkout's code, found from the working directory
    command = [sys.executable, "-m", "simulator.cli", "run", str(scenario)]
    command += ["--seed", str(seed), "--out", str(out), "--no-progress"]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("leave", "shows"),
    [
        pytest.param("finish", '"event": "paused"', id="finish"),
        # An operator who drops with several conversations: they are told (and requeued) in
        # conversation-id order, not in the order of a set of strings (that followed
        # PYTHONHASHSEED before omni.actors.operator sorted them).
        pytest.param("drop", '"event": "requeued"', id="drop"),
    ],
)
def test_same_seed_same_bytes_across_processes(tmp_path: Path, leave: str, shows: str) -> None:
    """Two processes with the same scenario and seed, under PYTHONHASHSEED 1 and 2, write the
    same bytes; a third with another seed writes another report."""
    scenario = tmp_path / "determinism.toml"
    scenario.write_text(SCENARIO.replace("{leave}", leave), encoding="utf-8")
    runs = {
        "first": start_run(scenario, 5, tmp_path / "first", hash_seed="1"),
        "again": start_run(scenario, 5, tmp_path / "again", hash_seed="2"),
        "other": start_run(scenario, 6, tmp_path / "other", hash_seed="1"),
    }
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, (name, stderr.decode())
    first, again = outputs(tmp_path / "first"), outputs(tmp_path / "again")
    events = first["events.jsonl"].decode()
    # The run went where it was meant to: out of hours, and pauses or requeues.
    assert '"event": "out_of_hours"' in events and shows in events
    for name in OUTPUTS:
        assert first[name] == again[name], f"{name} differs between PYTHONHASHSEED 1 and 2"
    other = outputs(tmp_path / "other")
    assert other["report.json"] != first["report.json"]
    assert other["events.jsonl"] != first["events.jsonl"]


@pytest.mark.slow
def test_the_bot_scenario_same_bytes_across_processes(tmp_path: Path) -> None:
    """The shipped chatbot day (simulator/scenarios/bot.toml), as a user runs it, in two
    processes with PYTHONHASHSEED 1 and 2: the same bytes, and every path of the bot taken."""
    scenario = ROOT / "simulator" / "scenarios" / "bot.toml"
    runs = {
        "first": start_run(scenario, 16, tmp_path / "first", hash_seed="1"),
        "again": start_run(scenario, 16, tmp_path / "again", hash_seed="2"),
    }
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, (name, stderr.decode())
        assert b"Chatbot" in stdout and b"Bot front (40 Shop), per node" in stdout
    first, again = outputs(tmp_path / "first"), outputs(tmp_path / "again")
    for name in OUTPUTS:
        assert first[name] == again[name], f"{name} differs between PYTHONHASHSEED 1 and 2"
    bot = json.loads(first["report.json"])["services"]["40"]["bot"]
    assert bot["contained"] > 0 and bot["dropoffs"] and bot["out_of_hours"] > 0, bot
    assert bot["nodes"]["billing"]["closed"] > 0 and bot["nodes"]["email"]["invalid"] > 0
    assert set(bot["handoffs"]) == {"1", "2", "3"}
