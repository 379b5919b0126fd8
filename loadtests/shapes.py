"""Load profiles for ``locustfile.py``, chosen with ``OMNI_LOAD_PROFILE``.

Each shape returns the number of *visitor* users over time; the operators (``OperatorUser``, a
``fixed_count`` class) are added on top and are spawned first, so they are signed in before the
first visitor arrives. Sizes come from the environment so the same profile scales from a laptop
to a distributed run:

``OMNI_LOAD_VISITORS``   peak visitors (default 300)
``OMNI_LOAD_DURATION``   profile length in seconds (default 600; the profile ends after it)
``OMNI_LOAD_SPAWN_RATE`` users started per second (default 10)

Profiles:

``steady``        a steady shift: ramp to the peak in the first 10 % of the time, then hold.
``morning-ramp``  a morning: 10 % of the peak at opening, rising linearly to the peak at 60 % of
                  the time (the mid-morning rush), then holding.
``burst``         queue build-up: a low baseline (10 %) for the first third, then a burst to the
                  peak within a few seconds — run it with few operators (``--omni-operators 5``)
                  so the queue grows and ``queue wait`` shows the backlog draining.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape


def _env(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


class _Profile(LoadTestShape):
    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.peak = int(_env("OMNI_LOAD_VISITORS", 300))
        self.duration = _env("OMNI_LOAD_DURATION", 600)
        self.rate = _env("OMNI_LOAD_SPAWN_RATE", 10)

    def operators(self) -> int:
        return sum(getattr(u, "fixed_count", 0) for u in self.runner.user_classes)

    def visitors(self, t: float) -> int:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration:
            return None
        visitors = max(1, self.visitors(t))
        return self.operators() + visitors, max(self.rate, 1.0)


class SteadyShift(_Profile):
    def visitors(self, t: float) -> int:
        ramp = 0.1 * self.duration
        return math.ceil(self.peak * min(1.0, t / ramp if ramp else 1.0))


class MorningRamp(_Profile):
    def visitors(self, t: float) -> int:
        rise = 0.6 * self.duration
        share = 0.1 + 0.9 * min(1.0, t / rise if rise else 1.0)
        return math.ceil(self.peak * share)


class VisitorBurst(_Profile):
    def tick(self) -> tuple[int, float] | None:
        result = super().tick()
        if result is None:
            return None
        # the burst arrives as fast as locust can start users
        t = self.get_run_time()
        users, rate = result
        return users, (max(rate, self.peak / 5) if t >= self.duration / 3 else rate)

    def visitors(self, t: float) -> int:
        return math.ceil(self.peak * (0.1 if t < self.duration / 3 else 1.0))


PROFILES: dict[str, type[_Profile]] = {
    "steady": SteadyShift,
    "morning-ramp": MorningRamp,
    "burst": VisitorBurst,
}
