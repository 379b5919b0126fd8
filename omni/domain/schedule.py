"""Opening hours of a queue: weekly intervals in a local time zone, holidays and special days.

Rules of this module:

* Pure computation. Standard library only, no I/O and no clock: every question is asked
  about an instant the caller passes in, so results are deterministic and testable.
* Opening hours are written in local wall-clock time of one IANA time zone
  (``Schedule.timezone``), with minute resolution. An :class:`Interval` is a half-open range
  ``[start, end)`` of minutes since local midnight; ``end`` may be 1440 (24:00). Intervals
  never span midnight: to stay open across midnight, end one day at 24:00 and start the
  next at 00:00.
* Which intervals apply on a local date: a special day's intervals if the date is a special
  day (this wins even over a holiday), else none if it is a holiday, else the weekly
  intervals of its weekday (a weekday missing from ``weekly`` is closed all day).
* The definition everything else follows: ``is_open(at)`` is true iff the local wall time
  of ``at`` in the schedule's zone falls inside one of the intervals of its local date.
  Consequences across daylight-saving changes follow from that definition and nothing else:
  wall times skipped by a spring-forward gap are never open, so an interval starting in a
  gap opens at the transition instant; wall times repeated by a fall-back are open both
  times, so an interval covering them lasts longer in real time.
* Callers must pass timezone-aware datetimes; naive ones are rejected with ``ValueError``
  because guessing their zone would silently shift opening hours.
* :meth:`Schedule.next_change` returns instants in UTC, which compare and serialise
  unambiguously (aware datetimes sharing a ``ZoneInfo`` compare by wall time, ignoring
  ``fold``).
* Schedules and intervals are immutable values; invalid ones cannot be constructed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Interval", "Schedule"]

MINUTES_PER_DAY = 24 * 60
#: How far ahead :meth:`Schedule.next_change` looks before answering ``None``.
LOOKAHEAD = timedelta(days=400)

_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)
# Keep look-ahead arithmetic clear of datetime.max so it cannot overflow; a day of margin
# covers the largest UTC offset.
_LATEST = datetime.max - 2 * _DAY


def _format_minute(minute: int) -> str:
    hours, minutes = divmod(minute, 60)
    return f"{hours:02d}:{minutes:02d}"


def _parse_minute(text: str, *, what: str, allow_24: bool) -> int:
    match = _TIME_RE.fullmatch(text) if isinstance(text, str) else None
    if match is not None:
        hours, minutes = int(match[1]), int(match[2])
        if hours <= 23 and minutes <= 59:
            return hours * 60 + minutes
        if allow_24 and hours == 24 and minutes == 0:
            return MINUTES_PER_DAY
    allowed = "00:00 to 24:00" if allow_24 else "00:00 to 23:59 (24:00 only as an end)"
    raise ValueError(f"invalid {what} time {text!r}: expected HH:MM from {allowed}")


@dataclass(frozen=True, slots=True)
class Interval:
    """A local wall-clock opening interval [start, end) in minutes since local midnight.

    ``0 <= start < end <= 1440`` (1440 = 24:00) is enforced on construction, so an
    ``Interval`` is never empty and never crosses midnight. ``str()`` gives ``"08:00-12:00"``.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            # bool is an int subclass; True as a minute is always a bug.
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Interval.{name} must be an int, got {value!r}")
        if not 0 <= self.start < self.end <= MINUTES_PER_DAY:
            raise ValueError(
                f"invalid interval start={self.start} end={self.end}: "
                f"need 0 <= start < end <= {MINUTES_PER_DAY} minutes"
            )

    @classmethod
    def parse(cls, start: str, end: str) -> Interval:
        """Build from ``"HH:MM"`` texts, e.g. ``Interval.parse("08:00", "12:00")``.

        ``"24:00"`` is accepted only as ``end``. Raises ``ValueError`` naming the bad text,
        or the interval, if ``start`` is not before ``end``.
        """
        start_minute = _parse_minute(start, what="start", allow_24=False)
        end_minute = _parse_minute(end, what="end", allow_24=True)
        if start_minute >= end_minute:
            raise ValueError(
                f"invalid interval {start}-{end}: the start must be before the end "
                "(intervals cannot span midnight; split them at 24:00/00:00)"
            )
        return cls(start_minute, end_minute)

    def __str__(self) -> str:
        return f"{_format_minute(self.start)}-{_format_minute(self.end)}"


def _describe(intervals: tuple[Interval, ...]) -> str:
    return ", ".join(str(interval) for interval in intervals) or "(none)"


def _checked_intervals(where: str, intervals: object) -> tuple[Interval, ...]:
    if not isinstance(intervals, tuple | list):
        raise TypeError(f"{where}: expected a tuple of Interval, got {intervals!r}")
    checked = tuple(intervals)
    for interval in checked:
        if not isinstance(interval, Interval):
            raise TypeError(f"{where}: expected Interval objects, got {interval!r}")
    for previous, current in pairwise(checked):
        # Because start < end within each interval, this one test rejects both unsorted
        # and overlapping lists; equality (touching) is allowed and means "still open".
        if current.start < previous.end:
            raise ValueError(
                f"{where}: intervals must be sorted by start and must not overlap, "
                f"got {_describe(checked)} ({previous} and {current} conflict)"
            )
    return checked


def _checked_date(where: str, value: object) -> date:
    # datetime is a date subclass but never equals a date, so as a key it would silently
    # never match.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise TypeError(f"{where} must be datetime.date values, got {value!r}")
    return value


@dataclass(frozen=True)
class Schedule:
    """Weekly opening hours in one IANA time zone, with holidays and special days.

    * ``weekly`` maps weekday (0=Monday .. 6=Sunday) to that day's intervals; a missing
      weekday is closed all day.
    * ``holidays`` are local dates closed all day.
    * ``special_days`` replace the weekly intervals on their local date (an empty tuple means
      closed) and win over ``holidays``.

    Construction validates everything (``ValueError`` for an unknown zone, a weekday outside
    0..6, or unsorted/overlapping intervals, naming the day; ``TypeError`` for values of
    the wrong type) and stores private copies of the mappings, so a ``Schedule`` is an
    immutable (do not mutate the ``Mapping`` attributes), hashable value.
    """

    timezone: str
    weekly: Mapping[int, tuple[Interval, ...]]
    holidays: frozenset[date] = frozenset()
    special_days: Mapping[date, tuple[Interval, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.timezone, str):
            raise TypeError(f"timezone must be an IANA zone name, got {self.timezone!r}")
        try:
            _ = self._zone  # resolve (and cache) the zone now, so a bad name fails here
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # ZoneInfoNotFoundError for unknown names, ValueError for malformed keys,
            # OSError for directories such as "America".
            raise ValueError(
                f"unknown time zone {self.timezone!r}: expected an IANA name such as "
                "'America/Sao_Paulo' or 'UTC'"
            ) from exc

        weekly: dict[int, tuple[Interval, ...]] = {}
        for weekday, intervals in self.weekly.items():
            if not isinstance(weekday, int) or isinstance(weekday, bool) or not 0 <= weekday <= 6:
                raise ValueError(f"weekly keys must be weekdays 0 (Monday) to 6, got {weekday!r}")
            weekly[weekday] = _checked_intervals(_WEEKDAY_NAMES[weekday], intervals)

        holidays = frozenset(_checked_date("holidays", day) for day in self.holidays)

        special_days: dict[date, tuple[Interval, ...]] = {}
        for day, intervals in self.special_days.items():
            _checked_date("special_days keys", day)
            special_days[day] = _checked_intervals(f"special day {day.isoformat()}", intervals)

        # Private copies: later changes to the caller's dicts cannot change the schedule (nor
        # its hash) under code that cached an answer. Plain dicts, typed Mapping, so the value
        # still pickles, deep-copies and goes through dataclasses.asdict().
        object.__setattr__(self, "weekly", weekly)
        object.__setattr__(self, "holidays", holidays)
        object.__setattr__(self, "special_days", special_days)

    def __hash__(self) -> int:
        return hash(
            (
                self.timezone,
                frozenset(self.weekly.items()),
                self.holidays,
                frozenset(self.special_days.items()),
            )
        )

    @classmethod
    def always_open(cls, timezone: str = "UTC") -> Schedule:
        """A schedule open 00:00-24:00 every day; ``next_change`` always returns ``None``."""
        whole_day = (Interval(0, MINUTES_PER_DAY),)
        return cls(timezone, {weekday: whole_day for weekday in range(7)})

    @cached_property
    def _zone(self) -> ZoneInfo:
        # cached_property writes the instance __dict__ directly, which a frozen dataclass
        # allows; it keeps the zone out of the fields (repr, eq, asdict).
        return ZoneInfo(self.timezone)

    # -- questions about local dates ------------------------------------------------------

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The opening intervals of a local date, after special days and holidays.

        Sorted, non-overlapping; empty when closed all day.
        """
        return self._intervals(_checked_date("intervals_on() day", day))

    def breaks_on(self, day: date) -> tuple[Interval, ...]:
        """The gaps between the intervals of a local date (e.g. a lunch break).

        Only gaps between two intervals count: not before the first interval, not after the
        last. Touching intervals leave no gap.
        """
        intervals = self.intervals_on(day)
        return tuple(
            Interval(previous.end, current.start)
            for previous, current in pairwise(intervals)
            if previous.end < current.start
        )

    # -- questions about instants ---------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        """Whether the schedule is open at the instant ``at`` (timezone-aware, any zone).

        True iff the wall time of ``at`` in ``self.timezone`` lies in ``[start, end)`` of an
        interval of its local date. Raises ``ValueError`` for a naive datetime.
        """
        local = _require_aware(at).astimezone(self._zone)
        return self._open_at_wall(local.replace(tzinfo=None))

    def next_change(self, at: datetime) -> datetime | None:
        """The first instant strictly after ``at`` where ``is_open`` differs from ``is_open(at)``.

        Returned as an aware datetime in UTC (whole seconds: boundaries are whole minutes of
        wall time and zone transitions whole seconds). ``None`` if nothing changes within 400
        days after ``at``. Consistent with :meth:`is_open` across daylight-saving changes.
        Raises ``ValueError`` for a naive datetime.
        """
        start = _require_aware(at).astimezone(UTC).replace(tzinfo=None)
        limit = min(start + LOOKAHEAD, _LATEST) if start < _LATEST else start
        state = self._open_at_utc(start)

        # Walk forward through stretches of constant UTC offset. Inside one stretch wall time
        # is UTC plus a constant, so openness can only change at interval boundaries, in
        # order; the other possible change points are the offset changes themselves.
        # Everything here is naive UTC to keep comparisons and arithmetic plain.
        low = start
        offset = self._offset_at(low)
        while low < limit:
            high = min(low + _DAY, limit)
            high_offset = self._offset_at(high)
            # Assumes at most one offset change per 24 hours (true of modern tzdata rules):
            # two changes within one window that cancel out would go unnoticed.
            end = high if high_offset == offset else self._find_transition(low, high, offset)
            wall = self._first_change_between(low + offset, end + offset, state)
            if wall is not None:
                return (wall - offset).replace(tzinfo=UTC)
            if self._open_at_utc(end) != state:
                return end.replace(tzinfo=UTC)
            low = end
            offset = high_offset if end == high else self._offset_at(end)
        return None

    # -- internals ------------------------------------------------------------------------

    def _intervals(self, day: date) -> tuple[Interval, ...]:
        special = self.special_days.get(day)
        if special is not None:
            return special
        if day in self.holidays:
            return ()
        return self.weekly.get(day.weekday(), ())

    def _open_at_wall(self, wall: datetime) -> bool:
        minute = wall.hour * 60 + wall.minute
        return any(iv.start <= minute < iv.end for iv in self._intervals(wall.date()))

    def _open_at_utc(self, utc: datetime) -> bool:
        return self._open_at_wall(utc + self._offset_at(utc))

    def _offset_at(self, utc: datetime) -> timedelta:
        local = self._zone.fromutc(utc.replace(tzinfo=self._zone))
        offset = local.utcoffset()
        assert offset is not None  # a ZoneInfo always has an offset for an aware datetime
        return offset

    def _find_transition(self, low: datetime, high: datetime, offset: timedelta) -> datetime:
        """The first whole second in (low, high] whose offset differs from ``offset``.

        Requires offset(low) == offset != offset(high). Zone transitions happen at whole
        seconds, so rounding low down and high up keeps that invariant.
        """
        low = low.replace(microsecond=0)
        if high.microsecond:
            high = high.replace(microsecond=0) + _SECOND
        while high - low > _SECOND:
            middle = low + timedelta(seconds=int((high - low) / _SECOND) // 2)
            if self._offset_at(middle) == offset:
                low = middle
            else:
                high = middle
        return high

    def _boundaries(self, first: date, last: date) -> Iterator[datetime]:
        """Interval boundaries as naive wall datetimes, ascending, for local dates first..last."""
        day = first
        while day <= last:
            midnight = datetime.combine(day, time())
            for interval in self._intervals(day):
                yield midnight + timedelta(minutes=interval.start)
                yield midnight + timedelta(minutes=interval.end)
            day += _DAY

    def _first_change_between(
        self, wall_low: datetime, wall_high: datetime, state: bool
    ) -> datetime | None:
        """First boundary wall time strictly inside (wall_low, wall_high) where openness != state.

        Openness is a step function of wall time that can only change at a boundary, so
        checking boundaries in order finds the first change.
        """
        for wall in self._boundaries(wall_low.date(), wall_high.date()):
            if wall >= wall_high:
                break
            if wall > wall_low and self._open_at_wall(wall) != state:
                return wall
        return None


def _require_aware(at: datetime) -> datetime:
    if not isinstance(at, datetime):
        raise TypeError(f"expected a datetime, got {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {at.isoformat()}")
    return at
