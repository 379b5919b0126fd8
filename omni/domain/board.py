"""The supervisor's live view (issue 14): today's figures and the board (pure).

Rules:

* Today is the calendar day in the installation's time zone (``[server] timezone``). Its
  figures count the conversations *created* today, each in the group it was last in, with the
  reports' own rules (:class:`~omni.domain.reports.Tally`,
  :func:`~omni.domain.reports.service_level`): a board at 17:00 says what
  ``/api/v1/reports`` says for the period from the day's start to 17:00 (with the same threshold).
* Each 15-minute interval of the day (from the day's first instant: a day that changes clocks
  has 92 or 100) has its own service level, of the conversations created in it.
* :class:`Today` keeps, per conversation of the day, only the counts it adds to its group and
  interval. A change of a conversation takes its old counts away and adds its new ones: O(1)
  per change, nothing recounted per board. Conversations of another day are not kept.
* The clock is the caller's: everything takes ``now``; nothing here reads the time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import msgspec

from omni.domain import protocol as p
from omni.domain.model import Group, Operator
from omni.domain.reports import Outcome, Tally, service_level
from omni.domain.routing import Presence, Roster

#: The board's intervals.
INTERVAL = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Counts:
    """What one conversation adds to its group's figures (0 or 1 each)."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    answered_within: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.offered + other.offered,
            self.answered + other.answered,
            self.abandoned + other.abandoned,
            self.answered_within + other.answered_within,
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.offered - other.offered,
            self.answered - other.answered,
            self.abandoned - other.abandoned,
            self.answered_within - other.answered_within,
        )

    @property
    def service_level(self) -> float | None:
        level = service_level(self.answered_within, self.answered, self.abandoned)
        return None if level is None else round(level, 4)


NOTHING = Counts()


class Countable(Outcome, Protocol):
    """A conversation as today's figures read it."""

    @property
    def id(self) -> str: ...

    @property
    def group_id(self) -> int | None: ...


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The first instant of ``day`` in ``zone`` and of the day after, in UTC."""
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return start, end


class Today:
    """Today's figures per group, fed every change of a conversation (:meth:`count`)."""

    def __init__(self, zone: ZoneInfo, threshold: float, now: datetime) -> None:
        self.zone = zone
        self.threshold = threshold
        self._begin(now)

    def _begin(self, now: datetime) -> None:
        self.day = now.astimezone(self.zone).date()
        self.start, self.end = day_bounds(self.day, self.zone)
        #: conversation -> (group, interval, what it adds there).
        self._added: dict[str, tuple[int, int, Counts]] = {}
        self._groups: dict[int, Counts] = {}
        self._intervals: dict[tuple[int, int], Counts] = {}

    def roll(self, now: datetime) -> bool:
        """Begin a new day if ``now`` is past this one (then True: every figure is reset)."""
        if self.start <= now < self.end:
            return False
        self._begin(now)
        return True

    def interval(self, at: datetime) -> int:
        """The index of the interval of the day ``at`` falls in."""
        return int((at - self.start) / INTERVAL)

    def count(self, conv: Countable) -> bool:
        """Take the conversation as it is now; True if today's figures changed."""
        if not self.start <= conv.created_at < self.end or conv.group_id is None:
            return False
        tally = Tally()
        tally.add(conv, self.threshold)
        now = Counts(tally.offered, tally.answered, tally.abandoned, tally.answered_in_threshold)
        added = (conv.group_id, self.interval(conv.created_at), now)
        before = self._added.get(conv.id)
        if before == added:
            return False
        if before is not None:
            self._move(before[0], before[1], before[2], subtract=True)
        self._added[conv.id] = added
        self._move(*added)
        return True

    def _move(self, group_id: int, interval: int, counts: Counts, subtract: bool = False) -> None:
        key = (group_id, interval)
        if subtract:
            self._groups[group_id] -= counts
            self._intervals[key] -= counts
        else:
            self._groups[group_id] = self._groups.get(group_id, NOTHING) + counts
            self._intervals[key] = self._intervals.get(key, NOTHING) + counts

    def group(self, group_id: int) -> Counts:
        return self._groups.get(group_id, NOTHING)

    def series(self, group_id: int, now: datetime) -> tuple[float | None, ...]:
        """The service level of each interval from the day's start to the one of ``now``."""
        last = self.interval(min(max(now, self.start), self.end - timedelta(microseconds=1)))
        return tuple(
            self._intervals.get((group_id, i), NOTHING).service_level for i in range(last + 1)
        )


def board(
    today: Today,
    now: datetime,
    groups: Mapping[int, Group],
    waiting: Mapping[int, list[datetime]],
    operators: Iterable[Operator],
    roster: Roster,
    pause_reasons: Mapping[int, str] | None = None,
) -> p.Board:
    """The board at ``now``: ``waiting`` holds when each waiting conversation of a group began
    waiting; ``operators`` are the configured active ones, ``roster`` their presence and load;
    ``pause_reasons`` why the paused ones paused, where known."""
    reasons = pause_reasons or {}
    rows = []
    for group_id, group in sorted(groups.items()):
        counts, since = today.group(group_id), waiting.get(group_id, [])
        rows.append(
            p.GroupBoard(
                id=group_id,
                name=group.name,
                waiting=len(since),
                oldest_waiting_since=min(since) if since else None,
                offered=counts.offered,
                answered=counts.answered,
                abandoned=counts.abandoned,
                service_level=counts.service_level,
                intervals=today.series(group_id, now),
            )
        )
    people = []
    for operator in sorted(operators, key=lambda o: o.id):
        state = roster.get(operator.id) if operator.id in roster else None
        presence = state.presence if state is not None else Presence.OFFLINE
        held = len(state.load) if state is not None else 0
        people.append(
            p.OperatorBoard(
                id=operator.id,
                name=operator.name,
                groups=tuple(operator.groups),
                presence=presence.value,
                pause_reason=reasons.get(operator.id) if presence is Presence.PAUSED else None,
                held=held,
                capacity=operator.capacity,
                busy=presence is not Presence.OFFLINE and held >= operator.capacity,
            )
        )
    return p.Board(
        at=now,
        day=today.day,
        timezone=today.zone.key,
        day_start=today.start,
        interval_minutes=int(INTERVAL.total_seconds() // 60),
        threshold_seconds=today.threshold,
        groups=tuple(rows),
        operators=tuple(people),
    )


def merge(local: p.Board, parts: Iterable[tuple[Collection[int], p.Board]]) -> p.Board:
    """The board of several nodes (cluster mode) from ``local`` (this node's, every configured
    group and operator) and each other node's ``(groups it owns, its board)``: a group's row
    comes from the node that owns it, an operator's from a node where they are signed in;
    the rest stay as ``local`` has them (a group between owners waits for none here)."""
    groups = {row.id: row for row in local.groups}
    operators = {row.id: row for row in local.operators}
    for owned, board in parts:
        for row in board.groups:
            if row.id in owned and row.id in groups:
                groups[row.id] = row
        for person in board.operators:
            if person.presence != Presence.OFFLINE.value and person.id in operators:
                operators[person.id] = person
    return msgspec.structs.replace(
        local,
        groups=tuple(groups[g] for g in sorted(groups)),
        operators=tuple(operators[o] for o in sorted(operators)),
    )
