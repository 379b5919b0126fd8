"""The domain layer stays pure: no I/O, no clock, no randomness.

Its imports are a contract of pyproject.toml (``domain-is-pure``, checked by
tests/test_layers.py): nothing else of Omni, nothing that does I/O or keeps time — only the
standard library and msgspec (docs/decisions.md). Checked here:

* No module reads the wall clock (``datetime.now``, ``datetime.utcnow``, ``time.time``): the
  caller passes ``now``.
* Importing the domain does not drag trio or asyncio in, not even through a library.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ROOT / "omni" / "domain"
DOMAIN_FILES = sorted(DOMAIN.rglob("*.py"))

#: Fully qualified callables that read the wall clock.
FORBIDDEN_CALLS = frozenset(
    {
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "time.time",
    }
)


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _local_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> fully qualified name, from the file's imports (``import time as t``,
    ``from datetime import datetime as dt``...)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _clock_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, qualified name) of every reference to a wall-clock function, called or not
    (``now = datetime.now`` is as bad as calling it)."""
    names = _local_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts = _dotted(node)
        if parts is None:
            continue
        qualified = ".".join([names.get(parts[0], parts[0]), *parts[1:]])
        if qualified in FORBIDDEN_CALLS:
            found.append((node.lineno, qualified))
    return found


def test_domain_has_modules() -> None:
    names = {path.name for path in DOMAIN_FILES}
    assert {"conversation.py", "estimate.py", "model.py", "routing.py", "schedule.py"} <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=_relative)
def test_domain_module_never_reads_the_clock(path: Path) -> None:
    found = _clock_reads(_parse(path))
    assert not found, f"{_relative(path)} reads the wall clock: {found}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from datetime import datetime\ndatetime.now()", ["datetime.datetime.now"]),
        ("from datetime import datetime as dt\nf = dt.utcnow", ["datetime.datetime.utcnow"]),
        ("import datetime\ndatetime.datetime.now(tz=None)", ["datetime.datetime.now"]),
        ("import time\ntime.time()", ["time.time"]),
        ("import time as t\nt.time()", ["time.time"]),
        # ``datetime.time`` is a type, not a clock; ``now`` as a plain variable is fine.
        ("from datetime import time\ntime(12, 0)", []),
        ("def f(now):\n    return now.date()", []),
    ],
)
def test_clock_detector_sees_aliases(source: str, expected: list[str]) -> None:
    """The checker itself: catches aliased reads and ignores look-alikes."""
    assert [name for _, name in _clock_reads(ast.parse(source))] == expected


@pytest.mark.slow
def test_importing_the_domain_does_not_load_trio() -> None:
    """In a fresh interpreter: every domain module imported, then the modules loaded."""
    domain = ", ".join(
        f"omni.domain.{path.stem}" for path in DOMAIN_FILES if path.stem != "__init__"
    )
    code = f"import json, sys, {domain}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "omni.domain.protocol" in loaded
    assert not {"trio", "asyncio", "asyncpg", "trio_websocket", "httpx"} & loaded
