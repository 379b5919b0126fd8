"""Estimated waits (F9): how long a visitor at a given place in a group's queue will wait,
learnt from the group's recent answers.

Rules of this module:

* Pure arithmetic on the times the caller passes (seconds on a monotonic clock): no clock of
  its own, no I/O. The same answers in the same order give the same estimates.
* The unit is the **place**. A visitor who joins a queue has ``ahead`` places to move before an
  operator can take them: their position (1 = next), less the slots the group's operators have
  free at that moment (those are offered at once), never below 0. When an operator accepts them
  after ``waited`` seconds, the group moved one place every ``waited / ahead`` seconds.
* The group's **pace** is the ratio ``Σ waited / Σ ahead`` over its recent answers: the last
  ``keep`` answers of visitors who had at least one place to move, none older than ``horizon``
  seconds. Answers of visitors who had nothing ahead (an operator was free) tell nothing about
  the pace and are not kept.
* The estimate for ``ahead`` places is ``ahead * pace``, rounded for display
  (:func:`for_display`) and at most :data:`CAP`; 0 when ``ahead`` is 0; None — unknown — until
  the recent answers have moved ``minimum`` places together (one visitor who waited behind two
  others is enough, or three who each waited for the next free operator).
* Memory is bounded: at most ``keep`` answers per group, whatever the traffic.
* An estimate never decreases as ``ahead`` grows.

Why a pace per place, measured on the waits themselves, rather than the mean interval between
answers: answers are spaced by the *arrivals* whenever nobody waits, so in a quiet hour the
interval between answers says minutes while a visitor is answered at once; and a visitor's
wait also depends on what the interval leaves out — visitors ahead who give up, offers that
lapse, operators who pause. Measured only where somebody waited, the pace is the queue's real
speed, the ``1 / (s·μ)`` of an M/M/s queue whose ``s`` operators are all busy (then both
measures agree). docs/protocol.md §4.3 and docs/simulator.md have the figures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

#: Answers kept per group (the most recent).
KEEP = 20
#: Seconds after which an answer no longer counts.
HORIZON = 60 * 60.0
#: Places the recent answers must have moved, together, for an estimate to be given.
MINIMUM = 3
#: The longest estimate given, in seconds: a longer one is shown as this.
CAP = 4 * 3600
#: (below this many seconds, round to the nearest multiple of this many): the display's steps.
#: Each limit is a multiple of the steps on both sides of it, so rounding never reorders.
GRANULARITY = ((60, 5), (600, 30), (3600, 60), (CAP, 300))


@dataclass(frozen=True, slots=True)
class Answer:
    """One answered visitor: when (monotonic seconds), how many places they had to move when
    they joined the queue (at least 1), and how long they waited for an operator."""

    at: float
    ahead: int
    waited: float


class WaitEstimator:
    """The estimated waits of one group's queue. Feed it every answer of a visitor who waited
    in that queue (:meth:`answered`); ask it when positions are reported (:meth:`pace`, then
    :func:`wait_for`, or :meth:`estimate`)."""

    __slots__ = ("_answers", "horizon", "keep", "minimum")

    def __init__(
        self, *, keep: int = KEEP, horizon: float = HORIZON, minimum: int = MINIMUM
    ) -> None:
        if keep < 1 or minimum < 1 or not horizon > 0:
            raise ValueError(
                f"need keep >= 1, minimum >= 1 and horizon > 0, got {keep=}, {minimum=}, {horizon=}"
            )
        self.keep = keep
        self.horizon = horizon
        self.minimum = minimum
        self._answers: deque[Answer] = deque(maxlen=keep)

    def __len__(self) -> int:
        return len(self._answers)

    def __iter__(self) -> Iterator[Answer]:
        """The answers kept, oldest first."""
        return iter(self._answers)

    def answered(self, at: float, ahead: int, waited: float) -> None:
        """An operator took a visitor at ``at`` who had ``ahead`` places to move when they
        joined the queue ``waited`` seconds before. Times go forward: an answer earlier than
        the last one recorded is taken as happening with it."""
        if ahead < 1:
            return  # an operator was free: nothing learnt about the pace
        if self._answers and at < self._answers[-1].at:
            at = self._answers[-1].at
        self._answers.append(Answer(at, ahead, max(waited, 0.0)))

    def pace(self, now: float) -> float | None:
        """Seconds per place, from the answers of the last ``horizon`` seconds; None until
        they have moved ``minimum`` places together."""
        oldest = now - self.horizon
        answers = self._answers
        while answers and answers[0].at < oldest:
            answers.popleft()  # no longer recent: it will never count again
        places = sum(a.ahead for a in answers)
        if places < self.minimum:
            return None
        return sum(a.waited for a in answers) / places

    def estimate(self, ahead: int, now: float) -> int | None:
        """The displayed wait, in seconds, for a visitor with ``ahead`` places to move."""
        return wait_for(ahead, self.pace(now) if ahead > 0 else None)


def wait_for(ahead: int, pace: float | None) -> int | None:
    """The displayed wait for ``ahead`` places at ``pace`` seconds per place: 0 when nothing
    is ahead (whatever the pace), None when the pace is unknown."""
    if ahead <= 0:
        return 0
    if pace is None:
        return None
    return for_display(ahead * pace)


def for_display(seconds: float) -> int:
    """``seconds`` rounded to the nearest step of :data:`GRANULARITY` (5 s under a minute, 30 s
    under ten, a minute under an hour, five minutes beyond), at most :data:`CAP`: an estimate
    is not more precise than that, and a page shows "about 2 minutes", not "127 seconds"."""
    if not seconds > 0:  # also NaN
        return 0
    if seconds >= CAP:
        return CAP
    for limit, step in GRANULARITY:
        if seconds < limit:
            return min(int((seconds + step / 2) // step) * step, CAP)
    return CAP  # pragma: no cover - the last limit is CAP
