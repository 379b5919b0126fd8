"""Wall-clock time derived from trio's clock (DESIGN §2, Time).

Rules: domain and actor code never read the system's wall clock. They ask a :class:`Clock`,
which adds the time elapsed on trio's clock to a fixed epoch. Under ``trio.testing.MockClock``
the whole server — timers and schedules alike — then runs in virtual time: the simulator can
start on "Monday 07:55 America/Sao_Paulo" and jump through a day in seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio


class Clock:
    """``now()`` is ``epoch`` plus the trio time elapsed since the clock was made.

    Make it inside ``trio.run``. Only the program's edge (the CLI) should pass the real current
    time as ``epoch``; tests and the simulator pass the instant they want to start at.
    """

    def __init__(self, epoch: datetime) -> None:
        if epoch.tzinfo is None:
            raise ValueError("the epoch must be timezone-aware")
        self.epoch = epoch.astimezone(UTC)
        self._base = trio.current_time()

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=trio.current_time() - self._base)

    def monotonic(self) -> float:
        """Seconds on trio's clock: for durations and ordering, never for dates."""
        return trio.current_time()
