"""The load test runs as users run it: ``loadtests/smoke.py`` starts ``omni serve`` on the
embedded PostgreSQL and ephemeral ports, drives it with locust over real websockets on
127.0.0.1 for 10 seconds, and every request type shows up with no failure — on one node, and on
two nodes of a cluster sharing one PostgreSQL (``--nodes 2``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT / "loadtests"))
from smoke import REQUEST_TYPES, cluster_config  # noqa: E402  (the smoke run's own: one source)


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


@pytest.mark.slow
def test_smoke_load_over_two_nodes_reaches_both_and_has_no_failure(tmp_path: Path) -> None:
    """``--nodes 2``: one embedded PostgreSQL, two nodes in cluster mode. The users connect to
    both nodes (round robin); the node that does not own the group relays its sockets to the one
    that does; every request type runs and none fails. Well under a minute: PostgreSQL's initdb,
    two starts, 10 s of load."""
    summary_path = tmp_path / "summary.json"
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNI_LOAD_", "OMNI_DATABASE"))}
    result = subprocess.run(
        [
            sys.executable,
            "loadtests/smoke.py",
            "--nodes",
            "2",
            "--run-time",
            "10",
            "--fast",
            "--operators",
            "2",
            "--visitors",
            "6",
            "--require-all",
            "--out",
            str(report),
            "--summary-json",
            str(summary_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "smoke: 2 nodes on one PostgreSQL, groups owned n1: " in result.stdout, result.stdout
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    total = summary.pop("_total")
    server = summary.pop("_server")
    nodes = summary.pop("_nodes")
    assert set(nodes) == {"n1", "n2"}, nodes
    for name, node in nodes.items():
        assert node["connects"] > 0, (name, nodes)  # locust connected to this node
        assert node["peak_connections"] > 0, (name, nodes)  # and the node saw its sockets
        assert (report / f"{name}.log").read_text().count(f"as node {name}") == 1
    assert server["messages_relayed"] > 0, server
    assert total["failures"] == 0, summary
    assert total["exceptions"] == 0, result.stdout[-4000:]
    for kind in REQUEST_TYPES:
        assert summary.get(kind, {}).get("count", 0) > 0, (kind, summary)
        assert summary[kind]["failures"] == 0, (kind, summary[kind])
    # No protocol error. A socket taken up on another node (``reconnect``) is allowed: on a busy
    # machine a node may miss its beats and its group move; what must not happen is a failure.
    assert not set(summary) - set(REQUEST_TYPES) - {"reconnect"}, summary
    assert "[server.cluster]" in (report / "omni-load-cluster.toml").read_text()


def test_the_cluster_configuration_is_the_load_configuration_in_cluster_mode(
    tmp_path: Path,
) -> None:
    """``smoke.py --nodes``' configuration is ``omni-load.toml`` plus a ``[server.cluster]``
    table that Omni accepts (its ClusterSettings checks included), with short beats."""
    from omni.config import load_config

    path, groups = cluster_config(tmp_path)
    config = load_config(path)
    base = load_config(ROOT / "loadtests" / "omni-load.toml")
    assert config.server.cluster.enabled and not base.server.cluster.enabled
    assert config.server.cluster.heartbeat_seconds == 0.5
    assert config.server.cluster.lease_seconds >= 2 * config.server.cluster.heartbeat_seconds
    assert config.server.cluster.outbox_poll_seconds is not None
    assert config.items == base.items  # the same services, groups and operators
    assert config.server.limits == base.server.limits
    assert groups == {1}


def _in_a_fresh_interpreter(code: str, **env: str) -> Any:
    """Run ``code`` in its own interpreter (importing locust monkey-patches the standard library
    for gevent, which must not happen in the test process) and return what it printed as
    JSON: the test's assertions stay in the test."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_LOAD_")}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", "import json, sys; sys.path.insert(0, 'loadtests')\n" + code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_locustfile_refuses_a_remote_host() -> None:
    """Tests and CI talk only to loopback: anything else needs OMNI_LOAD_ALLOW_REMOTE=1."""
    seen = _in_a_fresh_interpreter(
        "import locustfile as f\n"
        "try:\n    f.check_host('ws://example.com:8765'); remote = None\n"
        "except SystemExit as e:\n    remote = str(e)\n"
        "print(json.dumps({'ip': f.check_host('ws://127.0.0.1:8765'),\n"
        "    'name': f.check_host('http://localhost:1'), 'remote': remote,\n"
        "    'tokens': f.expand_tokens('a,x{1..3}')}))\n"
    )
    assert seen["ip"] == "ws://127.0.0.1:8765"
    assert seen["name"] == "ws://localhost:1"
    assert seen["remote"] is not None and "refusing" in seen["remote"]
    assert seen["tokens"] == ["a", "x1", "x2", "x3"]


def test_load_profiles_add_visitors_on_top_of_the_operators() -> None:
    """The shapes: steady ramps then holds, the morning ramp rises from 10 %, the burst jumps
    after the first third; the operators (fixed_count) are always included."""
    seen = _in_a_fresh_interpreter(
        "import shapes\n"
        "class U: fixed_count = 5\n"
        "class V: fixed_count = 0\n"
        "class R: user_classes = [U, V]\n"
        "def at(name, t):\n"
        "    s = getattr(shapes, name)(); s.runner = R(); s.get_run_time = lambda: t\n"
        "    tick = s.tick(); return None if tick is None else tick[0]\n"
        "cases = [('SteadyShift', 0), ('SteadyShift', 5), ('SteadyShift', 50),\n"
        "    ('SteadyShift', 100), ('MorningRamp', 0), ('MorningRamp', 60),\n"
        "    ('VisitorBurst', 10), ('VisitorBurst', 40)]\n"
        "print(json.dumps({'users': [at(n, t) for n, t in cases],\n"
        "    'profiles': sorted(shapes.PROFILES)}))\n",
        OMNI_LOAD_VISITORS="100",
        OMNI_LOAD_DURATION="100",
    )
    # Operators (5) always, and visitors: steady 1 -> 50 -> 100 -> done; morning 10 % -> 100;
    # the burst 10 % before the first third, 100 after.
    assert seen["users"] == [6, 5 + 50, 5 + 100, None, 5 + 10, 5 + 100, 5 + 10, 5 + 100]
    assert seen["profiles"] == ["burst", "morning-ramp", "steady"]


def test_users_spread_over_the_nodes_and_move_on_when_one_is_gone() -> None:
    """Round robin over the nodes, one counter for operators and visitors; a socket lost to
    ``moved`` is taken up again whatever the nodes, a lost node only when there are several
    (with one node a lost socket stays a failure, as it always was)."""
    seen = _in_a_fresh_interpreter(
        "import websocket, locustfile as f\n"
        "class Env: runner = None; host = None\n"
        "class U:\n    environment = Env(); host = None\n"
        "f.Settings.nodes = [f.check_host(f'ws://127.0.0.1:{p}') for p in (1, 2, 3)]\n"
        "users = [U() for _ in range(7)]\n"
        "for u in users: u.node = f.first_node(u)\n"
        "spread = [f.node_url(u) for u in users]\n"
        "users[0].node += 1\n"
        "moved_on = f.node_url(users[0])\n"
        "lost = [f.Moved('1012'), f.Closed(1001, 'server_shutdown'), f.Closed(1008, 'x'),\n"
        "    ConnectionRefusedError(), websocket.WebSocketConnectionClosedException('lost'),\n"
        "    f.StepTimeout('slow')]\n"
        "several = [f.resumable(e) for e in lost]\n"
        "f.Settings.nodes = f.Settings.nodes[:1]\n"
        "one = [f.resumable(e) for e in lost]\n"
        "print(json.dumps({'spread': spread, 'moved_on': moved_on, 'several': several,\n"
        "    'one': one}))\n"
    )
    assert seen["spread"] == [f"ws://127.0.0.1:{p}" for p in (1, 2, 3, 1, 2, 3, 1)]
    assert seen["moved_on"] == "ws://127.0.0.1:2"
    assert seen["several"] == ["moved", "node gone", None, "node gone", "node gone", None]
    assert seen["one"] == ["moved", None, None, None, None, None]
