"""Opening hours (F3): weekly intervals in a local time zone, holidays and special days.

Rules of this module:

* Pure computation: no I/O and no clock. Every question is asked about an instant the caller
  passes in, so results are deterministic and testable.
* A :class:`Schedule` is the configuration entity itself (the admin API's body, the TOML
  table, the stored JSON) and the object the rules ask: one frozen msgspec struct whose fields
  are the wire names. Decoding checks everything; an invalid schedule cannot be built.
* Opening hours are written in local wall-clock time of one IANA time zone
  (``Schedule.timezone``), with minute resolution. An :class:`Interval` is a half-open range
  ``[start, end)`` of local time, written ``["08:00", "12:00"]``; ``end`` may be ``24:00``.
  Intervals never span midnight: to stay open across midnight, end one day at 24:00 and start
  the next at 00:00.
* Which intervals apply on a local date: a special day's intervals if the date is a special
  day (this wins even over a holiday), else none if it is a holiday, else the weekly
  intervals of its weekday (a weekday without intervals is closed all day).
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
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from omni.domain.values import Key, Name, WallTime

__all__ = ["LOOKAHEAD", "WEEKDAYS", "Interval", "Schedule", "SpecialDay", "Week"]

MINUTES_PER_DAY = 24 * 60
#: How far ahead :meth:`Schedule.next_change` looks before answering ``None``.
LOOKAHEAD = timedelta(days=400)

#: The keys of ``weekly``, Monday first (``date.weekday()`` indexes this tuple).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
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


class Interval(msgspec.Struct, frozen=True, array_like=True):
    """A local wall-clock opening interval ``[start, end)``, written ``["08:00", "12:00"]``.

    ``00:00 <= start < end <= 24:00`` is checked on construction (texts are kept in the
    ``HH:MM`` form), so an ``Interval`` is never empty and never crosses midnight.
    ``str()`` gives ``"08:00-12:00"``.
    """

    start: WallTime
    end: WallTime

    def __post_init__(self) -> None:
        first = _parse_minute(self.start, what="start", allow_24=False)
        last = _parse_minute(self.end, what="end", allow_24=True)
        if first >= last:
            raise ValueError(
                f"invalid interval {self.start}-{self.end}: the start must be before the end "
                "(intervals cannot span midnight; split them at 24:00/00:00)"
            )
        # One spelling per time ("8:00" is kept as "08:00"), so equal intervals are equal.
        msgspec.structs.force_setattr(self, "start", _format_minute(first))
        msgspec.structs.force_setattr(self, "end", _format_minute(last))

    @classmethod
    def from_minutes(cls, start: int, end: int) -> Interval:
        """From minutes since local midnight, e.g. ``Interval.from_minutes(480, 720)``."""
        for name, value in (("start", start), ("end", end)):
            # bool is an int subclass; True as a minute is always a bug.
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Interval {name} must be whole minutes, got {value!r}")
        if not 0 <= start < end <= MINUTES_PER_DAY:
            raise ValueError(
                f"invalid interval start={start} end={end}: "
                f"need 0 <= start < end <= {MINUTES_PER_DAY} minutes"
            )
        return cls(_format_minute(start), _format_minute(end))

    @property
    def start_minute(self) -> int:
        return int(self.start[:2]) * 60 + int(self.start[3:])

    @property
    def end_minute(self) -> int:
        return int(self.end[:2]) * 60 + int(self.end[3:])

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def _describe(intervals: tuple[Interval, ...]) -> str:
    return ", ".join(str(interval) for interval in intervals) or "(none)"


def _check_order(where: str, intervals: tuple[Interval, ...]) -> None:
    for previous, current in pairwise(intervals):
        # Because start < end within each interval, this one test rejects both unsorted
        # and overlapping lists; equality (touching) is allowed and means "still open".
        if current.start_minute < previous.end_minute:
            raise ValueError(
                f"{where}: intervals must be sorted by start and must not overlap, "
                f"got {_describe(intervals)} ({previous} and {current} conflict)"
            )


class Week(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The opening intervals of each weekday; a day left out is closed all day."""

    mon: tuple[Interval, ...] = ()
    tue: tuple[Interval, ...] = ()
    wed: tuple[Interval, ...] = ()
    thu: tuple[Interval, ...] = ()
    fri: tuple[Interval, ...] = ()
    sat: tuple[Interval, ...] = ()
    sun: tuple[Interval, ...] = ()

    def __post_init__(self) -> None:
        for day in WEEKDAYS:
            _check_order(day, getattr(self, day))

    @classmethod
    def of(cls, days: Mapping[int, tuple[Interval, ...]]) -> Week:
        """From weekday numbers (0 = Monday .. 6 = Sunday) to intervals."""
        for weekday in days:
            if not isinstance(weekday, int) or isinstance(weekday, bool) or not 0 <= weekday <= 6:
                raise ValueError(f"weekdays are 0 (Monday) to 6, got {weekday!r}")
        return cls(**{WEEKDAYS[weekday]: tuple(spans) for weekday, spans in days.items()})

    def on(self, weekday: int) -> tuple[Interval, ...]:
        """The intervals of ``weekday`` (0 = Monday, as ``date.weekday()``)."""
        intervals: tuple[Interval, ...] = getattr(self, WEEKDAYS[weekday])
        return intervals


class SpecialDay(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A local date with hours of its own (none: closed); it wins over a holiday."""

    date: date
    intervals: tuple[Interval, ...] = ()

    def __post_init__(self) -> None:
        _check_order(f"special day {self.date.isoformat()}", self.intervals)


class Schedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    """Weekly opening hours in one IANA time zone, with holidays and special days (F3).

    Decoding (or construction) checks everything: an unknown zone or unsorted/overlapping
    intervals raise ``ValueError`` naming the day. A ``Schedule`` is an immutable, hashable
    value; derived look-ups are cached on first use.
    """

    id: Key
    timezone: Name
    weekly: Week = msgspec.field(default_factory=Week)
    #: Local dates closed all day.
    holidays: tuple[date, ...] = ()
    #: Local dates with hours of their own; a date listed twice takes its last entry.
    special_days: tuple[SpecialDay, ...] = ()

    def __post_init__(self) -> None:
        try:
            _ = self._zone  # resolve (and cache) the zone now, so a bad name fails here
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # ZoneInfoNotFoundError for unknown names, ValueError for malformed keys,
            # OSError for directories such as "America".
            raise ValueError(
                f"unknown time zone {self.timezone!r}: expected an IANA name such as "
                "'America/Sao_Paulo' or 'UTC'"
            ) from exc

    @classmethod
    def always_open(cls, id: str = "always", timezone: str = "UTC") -> Schedule:
        """A schedule open 00:00-24:00 every day; ``next_change`` always returns ``None``."""
        whole_day = (Interval("00:00", "24:00"),)
        return cls(id, timezone, Week.of(dict.fromkeys(range(7), whole_day)))

    @cached_property
    def _zone(self) -> ZoneInfo:
        if not isinstance(self.timezone, str) or not self.timezone:
            raise ValueError("empty")
        return ZoneInfo(self.timezone)

    @cached_property
    def _holidays(self) -> frozenset[date]:
        return frozenset(self.holidays)

    @cached_property
    def _special(self) -> dict[date, tuple[Interval, ...]]:
        return {day.date: day.intervals for day in self.special_days}

    # -- questions about local dates ------------------------------------------------------

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The opening intervals of a local date, after special days and holidays.

        Sorted, non-overlapping; empty when closed all day.
        """
        if not isinstance(day, date) or isinstance(day, datetime):
            # datetime is a date subclass but never equals a date: it would never match.
            raise TypeError(f"intervals_on() takes a datetime.date, got {day!r}")
        return self._intervals(day)

    def breaks_on(self, day: date) -> tuple[Interval, ...]:
        """The gaps between the intervals of a local date (e.g. a lunch break).

        Only gaps between two intervals count: not before the first interval, not after the
        last. Touching intervals leave no gap.
        """
        intervals = self.intervals_on(day)
        return tuple(
            Interval(previous.end, current.start)
            for previous, current in pairwise(intervals)
            if previous.end_minute < current.start_minute
        )

    # -- questions about instants ---------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        """Whether the schedule is open at the instant ``at`` (timezone-aware, any zone).

        True iff the wall time of ``at`` in ``self.timezone`` lies in ``[start, end)`` of an
        interval of its local date. Raises ``ValueError`` for a naive datetime.
        """
        # Through UTC: ``astimezone`` to an instant's own zone returns it unchanged, and an
        # aware datetime in the schedule's zone may name a wall time that does not exist (the
        # hour skipped when clocks go forward) — its instant is an hour later on the wall.
        local = _require_aware(at).astimezone(UTC).astimezone(self._zone)
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
        special = self._special.get(day)
        if special is not None:
            return special
        if day in self._holidays:
            return ()
        return self.weekly.on(day.weekday())

    def _open_at_wall(self, wall: datetime) -> bool:
        minute = wall.hour * 60 + wall.minute
        return any(iv.start_minute <= minute < iv.end_minute for iv in self._intervals(wall.date()))

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
                yield midnight + timedelta(minutes=interval.start_minute)
                yield midnight + timedelta(minutes=interval.end_minute)
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
