"""The layering is a checked contract (DESIGN §2: edges -> actors -> domain).

* The import-linter contracts of pyproject.toml hold: the domain imports nothing else of Omni
  and nothing that does I/O; the store only the domain; the actors no edge; no cycle between
  sibling modules at any depth; the admin API is an edge below the composition root; nothing
  in production imports the simulator; the load tests import no Omni code.
* The forbidden lists cover every module of ``omni``: a new module cannot slip past them.
* Private attributes of the dependencies (trio's, trio-websocket's) are read in ``omni/compat``
  only, where each adapter checks the installed version (tests/test_compat.py).
"""

from __future__ import annotations

import ast
import logging
import os
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = {
    c["id"]: c
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}
#: The top-level modules and packages of ``omni``.
OMNI_MODULES = sorted(
    f"omni.{p.stem}"
    for p in (ROOT / "omni").iterdir()
    if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
)


def test_the_import_contracts_hold(capsys: pytest.CaptureFixture[str]) -> None:
    cwd = os.getcwd()
    os.chdir(ROOT)
    # lint_imports configures logging with dictConfig, which disables every logger that exists
    # (Omni's too): the tests after this one would see no log record. They are put back.
    loggers = logging.root.manager.loggerDict.values()
    enabled = [x for x in loggers if isinstance(x, logging.Logger) and not x.disabled]
    try:
        status = lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
        for logger in enabled:
            logger.disabled = False
    report = capsys.readouterr().out
    assert status == 0, report
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in report


@pytest.mark.parametrize(
    ("contract", "allowed"),
    [
        ("domain-is-pure", {"omni.domain"}),
        ("store-on-domain", {"omni.domain", "omni.store"}),
    ],
)
def test_the_contracts_name_every_module_of_omni(contract: str, allowed: set[str]) -> None:
    forbidden = set(CONTRACTS[contract]["forbidden_modules"])
    if "omni.*" in forbidden:
        return  # the wildcard covers them all
    uncovered = [m for m in OMNI_MODULES if m not in forbidden and m not in allowed]
    assert not uncovered, f"{contract} does not forbid {uncovered}: add them to pyproject.toml"


#: Private attributes of trio's and trio-websocket's objects that Omni relies on, and the
#: private modules: only omni/compat may name them.
PRIVATE = {"_wsproto", "_stream", "_stream_lock", "_close_reason", "_sock", "_r", "_run", "_core"}
PRIVATE_MODULES = ("trio._", "trio_websocket._", "wsproto.")


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            # ``self._stream`` of a class of our own is ours; a dependency's object is not.
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id == "self"):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in getattr(node, "names", [])]
            for name in names:
                if name.startswith(PRIVATE_MODULES):
                    found.append(f"line {node.lineno}: import {name}")
    return found


PRODUCTION = sorted(
    p
    for folder in ("omni", "admin_api", "simulator")
    for p in (ROOT / folder).rglob("*.py")
    if "compat" not in p.parts
)


@pytest.mark.parametrize("path", PRODUCTION, ids=lambda p: str(p.relative_to(ROOT)))
def test_private_apis_are_used_in_omni_compat_only(path: Path) -> None:
    assert not _private_uses(path)


def test_the_private_api_detector_sees_what_it_should() -> None:
    """The checker itself: the adapters do use internals (and are allowed to)."""
    assert _private_uses(ROOT / "omni" / "compat" / "trio_websocket.py")
    assert _private_uses(ROOT / "omni" / "compat" / "trio.py")


#: Modules imported by path, not as packages (the locustfile's neighbours).
LOCAL_MODULES = {"shapes", "smoke", "locustfile"}


def _imported_distributions() -> dict[str, set[str]]:
    """Third-party top-level modules the code imports -> the folders that import them."""
    found: dict[str, set[str]] = {}
    for folder in ("omni", "admin_api", "simulator", "loadtests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL_MODULES:
                        found.setdefault(top, set()).add(folder)
    for own in ("omni", "admin_api", "simulator", "loadtests"):
        found.pop(own, None)
    return found


def _normal(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    """Whatever the code imports is a dependency of pyproject.toml (a package that comes only
    with another one may be dropped by it any day)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += extra
    names = {_normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in declared}
    providers = packages_distributions()
    missing = {
        module: sorted(providers.get(module, [module]))
        for module in _imported_distributions()
        if not {_normal(d) for d in providers.get(module, [module])} & names
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
