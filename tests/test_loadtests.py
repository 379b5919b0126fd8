"""The load test runs as users run it: ``loadtests/smoke.py`` starts ``omni serve`` on the
embedded PostgreSQL and ephemeral ports, drives it with locust over real websockets on
127.0.0.1 for 10 seconds, and every request type shows up with no failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT / "loadtests"))
from smoke import REQUEST_TYPES  # noqa: E402  (the smoke run's own list: one source)


@pytest.mark.slow
def test_smoke_load_has_every_request_type_and_no_failure(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNI_LOAD_", "OMNI_DATABASE"))}
    result = subprocess.run(
        [
            sys.executable,
            "loadtests/smoke.py",
            "--run-time",
            "10",
            "--fast",
            "--operators",
            "4",
            "--visitors",
            "12",
            "--require-all",
            "--out",
            str(tmp_path / "report"),
            "--summary-json",
            str(summary_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    total = summary.pop("_total")
    server = summary.pop("_server")
    assert server["peak_connections"] > 4, server  # the server saw the operators and visitors
    assert total["failures"] == 0, summary
    assert total["exceptions"] == 0, result.stdout[-4000:]
    for kind in REQUEST_TYPES:
        assert summary.get(kind, {}).get("count", 0) > 0, (kind, summary)
        assert summary[kind]["failures"] == 0, (kind, summary[kind])
    assert not set(summary) - set(REQUEST_TYPES), summary  # no "protocol error" rows
    assert (tmp_path / "report" / "load.html").stat().st_size > 0


def test_locustfile_refuses_a_remote_host() -> None:
    """Tests and CI talk only to loopback: anything else needs OMNI_LOAD_ALLOW_REMOTE=1."""
    code = (
        "import sys; sys.path.insert(0, 'loadtests'); import locustfile as f\n"
        "assert f.check_host('ws://127.0.0.1:8765') == 'ws://127.0.0.1:8765'\n"
        "assert f.check_host('http://localhost:1') == 'ws://localhost:1'\n"
        "try:\n    f.check_host('ws://example.com:8765')\n"
        "except SystemExit as e:\n    assert 'refusing' in str(e)\n"
        "else:\n    raise AssertionError('remote host accepted')\n"
        "assert f.expand_tokens('a,x{1..3}') == ['a', 'x1', 'x2', 'x3']\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_LOAD_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_load_profiles_add_visitors_on_top_of_the_operators() -> None:
    """The shapes: steady ramps then holds, the morning ramp rises from 10 %, the burst jumps
    after the first third; the operators (fixed_count) are always included."""
    code = (
        "import sys; sys.path.insert(0, 'loadtests'); import shapes\n"
        "class U: fixed_count = 5\n"
        "class V: fixed_count = 0\n"
        "class R: user_classes = [U, V]\n"
        "def at(cls, t):\n"
        "    s = cls(); s.runner = R(); s.get_run_time = lambda: t; return s.tick()\n"
        "assert at(shapes.SteadyShift, 0)[0] == 6\n"
        "assert at(shapes.SteadyShift, 5)[0] == 5 + 50\n"
        "assert at(shapes.SteadyShift, 50)[0] == 5 + 100\n"
        "assert at(shapes.SteadyShift, 100) is None\n"
        "assert at(shapes.MorningRamp, 0)[0] == 5 + 10\n"
        "assert at(shapes.MorningRamp, 60)[0] == 5 + 100\n"
        "assert at(shapes.VisitorBurst, 10)[0] == 5 + 10\n"
        "assert at(shapes.VisitorBurst, 40)[0] == 5 + 100\n"
        "assert set(shapes.PROFILES) == {'steady', 'morning-ramp', 'burst'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_LOAD_")}
    env.update(OMNI_LOAD_VISITORS="100", OMNI_LOAD_DURATION="100")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
