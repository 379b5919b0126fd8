"""Checks, one nox session each: ``nox -s tests``, ``nox -s lint``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, property, websocket end to end, virtual time)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def postgres(session: nox.Session) -> None:
    """Only the PostgreSQL half: the store contract on PostgreSQL, restart safety, migrations.
    Uses an embedded server, or the one at OMNI_TEST_DATABASE_URL."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "postgresql", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (including the ASYNC rules for trio), mypy --strict on omni/, admin_api/ and
    simulator/, and the layering contracts (import-linter, pyproject.toml)."""
    session.install("-e", ".[dev]")
    session.run(
        "ruff",
        "check",
        "omni",
        "admin_api",
        "simulator",
        "loadtests",
        "tests",
        "benchmarks",
        "noxfile.py",
    )
    session.run("mypy", "omni", "admin_api", "simulator")
    session.run("lint-imports")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmarks (print figures): relay, store, a short run of 1-3 nodes in cluster mode,
    then the WebChat's weight in Chromium (which also checks the pages' size budgets)."""
    session.install("-e", ".[bench,test]")
    session.run("python", "benchmarks/relay.py", *session.posargs)
    session.run("python", "benchmarks/store.py")
    session.run("python", "benchmarks/cluster.py", "--quick")
    session.run("python", "benchmarks/page_weight.py")


@nox.session(python="3.11")
def load(session: nox.Session) -> None:
    """A bounded 60 s smoke load: omni serve on the embedded PostgreSQL, locust headless over
    websockets on 127.0.0.1; fails on any failed request (loadtests/smoke.py, docs/capacity.md).
    Then 20 s over three nodes in cluster mode on one embedded PostgreSQL, the users spread over
    the nodes (docs/scale-out.md). Arguments after ``--`` go to both runs."""
    session.install("-e", ".[load]")
    session.run("python", "loadtests/smoke.py", "--run-time", "60", *session.posargs)
    session.run(
        "python", "loadtests/smoke.py", "--nodes", "3", "--run-time", "20", *session.posargs
    )
