"""Seeding trio's scheduler: the one place Omni reads trio's internals (the simulator needs it).

Why: trio runs the tasks that are ready in one batch and, to flush out code that depends on an
order it never promised, reverses the batch at random (or shuffles it, when Hypothesis is
loaded). The simulator promises that the same scenario and seed give the same report, byte for
byte, in any process; that needs those coin flips to come from the run's seed.

What it relies on: ``trio._core._run._r``, the ``random.Random`` those flips are drawn from.
:func:`check` refuses a trio version this module was not written and tested against, or one
without that generator (:class:`~omni.compat.IncompatibleDependency`), so an
upgrade cannot quietly make simulations differ from run to run. tests/test_compat.py and the
simulator's determinism tests (two ``omni-sim run`` processes, byte-identical reports) are its
conformance tests; docs/decisions.md has the upstream proposal (a public, seedable scheduler
random source, e.g. ``trio.run(..., scheduler_seed=...)``).
"""

from __future__ import annotations

import random
from importlib.metadata import version

from omni.compat import IncompatibleDependency

#: trio versions (minor releases, inclusive) whose scheduler draws from ``_core._run._r``.
FIRST, LAST = (0, 25), (0, 35)


def _minor(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def check() -> None:
    """Refuse an installed trio whose scheduler this adapter does not know."""
    installed = version("trio")
    if not FIRST <= _minor(installed) <= LAST:
        raise IncompatibleDependency(
            f"trio {installed} is installed; omni/compat/trio.py (the simulator's seeded "
            f"scheduler) was written for {FIRST[0]}.{FIRST[1]}-{LAST[0]}.{LAST[1]}. Check it "
            "against the new version (tests/test_compat.py) and widen the range."
        )
    import trio._core._run as run

    if not isinstance(getattr(run, "_r", None), random.Random):
        raise IncompatibleDependency(
            f"trio {installed}: the scheduler's random source trio._core._run._r is gone; "
            "omni/compat/trio.py must be updated"
        )


def seed_scheduler(seed: int) -> None:
    """Make the order in which trio runs ready tasks follow ``seed`` (this process, from now)."""
    check()
    import trio._core._run as run

    run._r.seed(seed)
