"""Tests for omni.domain.schedule: opening hours, holidays, special days and DST behaviour."""

from __future__ import annotations

import copy
import functools
import pickle
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.domain.model import Directory, Group, GroupLink, Service
from omni.domain.schedule import Interval, Schedule, SpecialDay, Week

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")


def iv(start: str, end: str) -> Interval:
    return Interval(start, end)


def sched(
    timezone: str,
    weekly: Mapping[int, tuple[Interval, ...]],
    holidays: Iterable[date] = (),
    special_days: Mapping[date, tuple[Interval, ...]] | None = None,
) -> Schedule:
    """A schedule from weekday numbers (0 = Monday) and dates, as the tests think of it."""
    return Schedule(
        id="s",
        timezone=timezone,
        weekly=Week.of(weekly),
        holidays=tuple(sorted(holidays)),
        special_days=tuple(SpecialDay(day, spans) for day, spans in (special_days or {}).items()),
    )


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def sp(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    """A São Paulo wall time (unambiguous: Brazil has had no DST since 2019)."""
    return datetime(year, month, day, hour, minute, second, us, tzinfo=SAO_PAULO)


WORKDAY = (iv("08:00", "12:00"), iv("13:00", "18:00"))


def office(**kwargs: object) -> Schedule:
    """Mon-Fri 08:00-12:00 and 13:00-18:00 in São Paulo (no DST since 2019)."""
    return sched("America/Sao_Paulo", {day: WORKDAY for day in range(5)}, **kwargs)  # type: ignore[arg-type]


# 2026-03-02 is a Monday; 2026-03-06 a Friday.
MONDAY = date(2026, 3, 2)


# -- Interval ---------------------------------------------------------------------------


def test_interval_parse_and_str() -> None:
    assert Interval("08:00", "12:00") == Interval.from_minutes(480, 720)
    assert Interval("00:00", "24:00") == Interval.from_minutes(0, 1440)
    assert Interval("8:00", "12:00") == Interval("08:00", "12:00")  # one spelling per time
    assert str(Interval.from_minutes(480, 720)) == "08:00-12:00"
    assert str(Interval.from_minutes(1380, 1440)) == "23:00-24:00"
    assert (Interval("08:30", "24:00").start_minute, Interval("08:30", "24:00").end_minute) == (
        510,
        1440,
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("8am", "12:00"),
        ("08:00", "noon"),
        ("24:00", "24:00"),  # 24:00 only as an end
        ("07:60", "08:00"),
        ("25:00", "26:00"),
        ("08:00", "24:01"),
        ("", "12:00"),
        ("12:00", "08:00"),  # reversed
        ("12:00", "12:00"),  # empty
    ],
)
def test_interval_parse_rejects_bad_text(start: str, end: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        Interval(start, end)
    # Decoded, the same texts are refused too (by the pattern or the rule).
    with pytest.raises(msgspec.ValidationError, match=r"invalid|regex"):
        msgspec.convert([start, end], Interval)


def test_interval_constructor_validates() -> None:
    with pytest.raises(ValueError):
        Interval.from_minutes(720, 480)
    with pytest.raises(ValueError):
        Interval.from_minutes(0, 1441)
    with pytest.raises(ValueError):
        Interval.from_minutes(-1, 10)
    with pytest.raises(TypeError):
        Interval.from_minutes(True, 10)


# -- São Paulo office with a lunch break -------------------------------------------------


def test_office_is_open_during_hours_and_closed_in_break() -> None:
    s = office()
    assert s.is_open(sp(2026, 3, 2, 9, 0))
    assert not s.is_open(sp(2026, 3, 2, 12, 30))
    assert not s.is_open(sp(2026, 3, 2, 12, 0))  # [start, end): 12:00 is already closed
    assert s.is_open(sp(2026, 3, 2, 11, 59, 59, 999999))
    assert s.is_open(sp(2026, 3, 2, 13, 0))
    assert not s.is_open(sp(2026, 3, 2, 18, 0))
    assert not s.is_open(sp(2026, 3, 2, 7, 59))
    assert not s.is_open(sp(2026, 3, 7, 10, 0))  # Saturday
    assert not s.is_open(sp(2026, 3, 8, 10, 0))  # Sunday


def test_office_is_open_for_any_representation_of_the_instant() -> None:
    s = office()
    local = sp(2026, 3, 2, 9, 0)
    assert s.is_open(local.astimezone(UTC))
    assert s.is_open(local.astimezone(ZoneInfo("Asia/Tokyo")))  # already Monday evening there


def test_office_intervals_and_breaks() -> None:
    s = office()
    assert s.intervals_on(MONDAY) == WORKDAY
    assert s.breaks_on(MONDAY) == (iv("12:00", "13:00"),)
    assert s.intervals_on(date(2026, 3, 7)) == ()
    assert s.breaks_on(date(2026, 3, 7)) == ()


def test_office_next_change() -> None:
    s = office()
    assert s.next_change(sp(2026, 3, 2, 11, 0)) == sp(2026, 3, 2, 12, 0)
    assert s.next_change(sp(2026, 3, 2, 12, 30)) == sp(2026, 3, 2, 13, 0)
    assert s.next_change(sp(2026, 3, 2, 13, 0)) == sp(2026, 3, 2, 18, 0)
    # Friday evening -> Monday morning.
    assert s.next_change(sp(2026, 3, 6, 19, 0)) == sp(2026, 3, 9, 8, 0)


def test_next_change_returns_utc() -> None:
    result = office().next_change(sp(2026, 3, 2, 11, 0))
    assert result is not None
    assert result.tzinfo is UTC
    assert result == utc(2026, 3, 2, 15, 0)


def test_next_change_is_strictly_after() -> None:
    s = office()
    # Exactly at a boundary the state already changed; the *next* change is the one after.
    assert s.next_change(sp(2026, 3, 2, 12, 0)) == sp(2026, 3, 2, 13, 0)
    assert s.next_change(sp(2026, 3, 2, 8, 0)) == sp(2026, 3, 2, 12, 0)


def test_holiday_closes_the_day_and_next_change_skips_it() -> None:
    tiradentes = date(2026, 4, 21)  # a Tuesday
    s = office(holidays=frozenset({tiradentes}))
    assert s.intervals_on(tiradentes) == ()
    assert s.breaks_on(tiradentes) == ()
    assert not s.is_open(sp(2026, 4, 21, 9, 0))
    assert s.next_change(sp(2026, 4, 20, 19, 0)) == sp(2026, 4, 22, 8, 0)


def test_special_day_overrides_weekly_hours() -> None:
    christmas_eve, christmas = date(2026, 12, 24), date(2026, 12, 25)  # Thursday, Friday
    s = office(
        holidays=frozenset({christmas}),
        special_days={christmas_eve: (iv("08:00", "12:00"),)},
    )
    assert s.intervals_on(christmas_eve) == (iv("08:00", "12:00"),)
    assert s.breaks_on(christmas_eve) == ()
    assert s.is_open(sp(2026, 12, 24, 11, 0))
    assert not s.is_open(sp(2026, 12, 24, 13, 0))
    # Short day ends at noon, Christmas is a holiday, then the weekend.
    assert s.next_change(sp(2026, 12, 24, 11, 0)) == sp(2026, 12, 24, 12, 0)
    assert s.next_change(sp(2026, 12, 24, 12, 0)) == sp(2026, 12, 28, 8, 0)


def test_special_day_wins_over_holiday() -> None:
    christmas = date(2026, 12, 25)
    s = office(
        holidays=frozenset({christmas}),
        special_days={christmas: (iv("10:00", "14:00"),)},
    )
    assert s.intervals_on(christmas) == (iv("10:00", "14:00"),)
    assert s.is_open(sp(2026, 12, 25, 11, 0))
    assert s.next_change(sp(2026, 12, 25, 9, 0)) == sp(2026, 12, 25, 10, 0)


def test_empty_special_day_closes_a_weekday() -> None:
    s = office(special_days={MONDAY: ()})
    assert not s.is_open(sp(2026, 3, 2, 9, 0))
    assert s.next_change(sp(2026, 3, 2, 9, 0)) == sp(2026, 3, 3, 8, 0)


def test_touching_intervals_are_continuously_open() -> None:
    s = sched("America/Sao_Paulo", {0: (iv("08:00", "12:00"), iv("12:00", "13:00"))})
    assert s.is_open(sp(2026, 3, 2, 12, 0))
    assert s.breaks_on(MONDAY) == ()
    assert s.next_change(sp(2026, 3, 2, 11, 0)) == sp(2026, 3, 2, 13, 0)


def test_open_across_midnight() -> None:
    s = sched("UTC", {4: (iv("20:00", "24:00"),), 5: (iv("00:00", "02:00"),)})
    friday_night = utc(2026, 3, 6, 21, 0)
    assert s.is_open(friday_night)
    assert s.is_open(utc(2026, 3, 7, 0, 0))
    assert s.next_change(friday_night) == utc(2026, 3, 7, 2, 0)
    assert s.next_change(utc(2026, 3, 6, 12, 0)) == utc(2026, 3, 6, 20, 0)


def test_naive_datetime_is_rejected() -> None:
    s = office()
    with pytest.raises(ValueError, match="timezone-aware"):
        s.is_open(datetime(2026, 3, 2, 9, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        s.next_change(datetime(2026, 3, 2, 9, 0))


def test_overlapping_intervals_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"mon: .*08:00-12:00, 11:00-13:00"):
        sched("UTC", {0: (iv("08:00", "12:00"), iv("11:00", "13:00"))})


def test_overlap_by_one_minute_is_rejected() -> None:
    with pytest.raises(ValueError, match="fri: "):
        sched("UTC", {4: (iv("08:00", "12:00"), iv("11:59", "13:00"))})


def test_unsorted_intervals_are_rejected() -> None:
    with pytest.raises(ValueError, match="wed: "):
        sched("UTC", {2: (iv("13:00", "18:00"), iv("08:00", "12:00"))})


def test_bad_special_day_intervals_name_the_date() -> None:
    with pytest.raises(ValueError, match="2026-12-24"):
        sched(
            "UTC",
            {},
            special_days={date(2026, 12, 24): (iv("08:00", "12:00"), iv("09:00", "10:00"))},
        )


@pytest.mark.parametrize("weekday", [-1, 7])
def test_bad_weekday_is_rejected(weekday: int) -> None:
    with pytest.raises(ValueError, match="weekday"):
        sched("UTC", {weekday: (iv("08:00", "12:00"),)})


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "America", "", "../etc/passwd", "utc"])
def test_unknown_timezone_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        sched(name, {})


def test_schedule_is_an_immutable_value() -> None:
    s = sched("America/Sao_Paulo", {0: WORKDAY})
    assert s == sched("America/Sao_Paulo", {0: WORKDAY})
    assert hash(s) == hash(sched("America/Sao_Paulo", {0: WORKDAY}))
    assert s != sched("America/Sao_Paulo", {0: WORKDAY}, holidays=frozenset({MONDAY}))
    assert s.is_open(sp(2026, 3, 2, 9, 0))  # the cached look-ups are not part of the value
    assert s == sched("America/Sao_Paulo", {0: WORKDAY})
    assert copy.deepcopy(s) == s
    assert pickle.loads(pickle.dumps(s)) == s
    as_dict = msgspec.structs.asdict(s)
    assert set(as_dict) == {"id", "timezone", "weekly", "holidays", "special_days"}
    assert msgspec.to_builtins(s.weekly) == {"mon": (["08:00", "12:00"], ["13:00", "18:00"])}
    with pytest.raises(AttributeError):
        s.timezone = "UTC"  # type: ignore[misc]


def test_schedule_decodes_from_its_json() -> None:
    body = {
        "id": "office",
        "timezone": "America/Sao_Paulo",
        "weekly": {"mon": [["08:00", "12:00"], ["13:00", "18:00"]]},
        "holidays": ["2026-04-21"],
        "special_days": [{"date": "2026-12-24", "intervals": [["08:00", "12:00"]]}],
    }
    s = msgspec.convert(body, Schedule)
    assert s.intervals_on(MONDAY) == WORKDAY
    assert s.intervals_on(date(2026, 12, 24)) == (iv("08:00", "12:00"),)
    assert s.intervals_on(date(2026, 4, 20)) == WORKDAY  # a Monday
    assert msgspec.json.decode(msgspec.json.encode(s)) == body
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `funday` - at `\$.weekly`"):
        msgspec.convert({**body, "weekly": {"funday": []}}, Schedule)
    with pytest.raises(msgspec.ValidationError, match=r"must not overlap.* - at `\$.weekly`"):
        msgspec.convert(
            {**body, "weekly": {"mon": [["08:00", "12:00"], ["11:00", "13:00"]]}}, Schedule
        )


def test_always_open_never_changes() -> None:
    for name in ("UTC", "America/New_York", "America/Santiago"):
        s = Schedule.always_open(timezone=name)
        for at in (utc(2026, 3, 8, 6, 30), utc(2026, 11, 1, 5, 30), utc(2026, 9, 6, 3, 59)):
            assert s.is_open(at)
            assert s.next_change(at) is None


def test_closed_schedule_never_changes() -> None:
    s = sched("Europe/Lisbon", {})
    assert not s.is_open(utc(2026, 3, 29, 1, 0))
    assert s.next_change(utc(2026, 3, 29, 1, 0)) is None


def test_next_change_looks_ahead_400_days() -> None:
    s = sched("UTC", {}, special_days={date(2027, 1, 1): (iv("09:00", "10:00"),)})
    assert s.next_change(utc(2026, 1, 1)) == utc(2027, 1, 1, 9, 0)
    assert s.next_change(utc(2025, 1, 1)) is None


# -- daylight saving time ------------------------------------------------------------------


NIGHT_SHIFT = sched("America/New_York", {day: (iv("01:00", "04:00"),) for day in range(7)})


def test_new_york_spring_forward_shortens_the_open_period() -> None:
    opening = datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK)
    assert opening == utc(2026, 3, 8, 6, 0)
    assert NIGHT_SHIFT.is_open(opening)
    closing = NIGHT_SHIFT.next_change(opening)
    assert closing == utc(2026, 3, 8, 8, 0)  # 04:00 EDT
    assert closing - opening == timedelta(hours=2)


def test_new_york_fall_back_lengthens_the_open_period() -> None:
    # 01:00 happens twice that night; fold=0 is the first (EDT). Inter-zone == is always
    # False for such ambiguous times (PEP 495), so compare in UTC.
    opening = datetime(2026, 11, 1, 1, 0, tzinfo=NEW_YORK).astimezone(UTC)
    assert opening == utc(2026, 11, 1, 5, 0)
    closing = NIGHT_SHIFT.next_change(opening)
    assert closing == utc(2026, 11, 1, 9, 0)  # 04:00 EST
    assert closing - opening == timedelta(hours=4)
    # The repeated hour is open both times.
    assert NIGHT_SHIFT.is_open(utc(2026, 11, 1, 5, 30))
    assert NIGHT_SHIFT.is_open(utc(2026, 11, 1, 6, 30))


def test_interval_starting_in_the_spring_forward_gap_opens_at_the_transition() -> None:
    s = sched("America/New_York", {}, special_days={date(2026, 3, 8): (iv("02:30", "05:00"),)})
    assert not s.is_open(utc(2026, 3, 8, 6, 59, 59))
    assert s.is_open(utc(2026, 3, 8, 7, 0))  # 03:00 EDT
    assert s.next_change(utc(2026, 3, 8, 6, 0)) == utc(2026, 3, 8, 7, 0)
    assert s.next_change(utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 8, 9, 0)  # 05:00 EDT


def test_interval_inside_the_fall_back_hour_is_open_twice() -> None:
    s = sched("America/New_York", {}, special_days={date(2026, 11, 1): (iv("01:30", "01:45"),)})
    changes = []
    at = utc(2026, 11, 1, 0, 0)
    for _ in range(4):
        nxt = s.next_change(at)
        assert nxt is not None
        changes.append(nxt)
        at = nxt
    assert changes == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 5, 45),
        utc(2026, 11, 1, 6, 30),
        utc(2026, 11, 1, 6, 45),
    ]
    assert s.next_change(at) is None


def test_sao_paulo_2018_midnight_gap() -> None:
    # 2018-11-04 00:00 -03 jumped to 01:00 -02: local midnight did not exist.
    overnight = sched("America/Sao_Paulo", {5: (iv("20:00", "24:00"),), 6: (iv("00:00", "02:00"),)})
    opening = datetime(2018, 11, 3, 20, 0, tzinfo=SAO_PAULO)
    assert opening == utc(2018, 11, 3, 23, 0)
    assert overnight.is_open(utc(2018, 11, 4, 3, 0))  # 01:00 -02, right after the jump
    assert overnight.next_change(opening) == utc(2018, 11, 4, 4, 0)  # 02:00 -02

    # An interval lying wholly inside the gap never opens; the next one is a week later.
    in_gap = sched("America/Sao_Paulo", {6: (iv("00:00", "01:00"),)})
    assert not in_gap.is_open(utc(2018, 11, 4, 3, 0))
    assert in_gap.next_change(utc(2018, 11, 3, 15, 0)) == utc(2018, 11, 11, 2, 0)


def test_santiago_midnight_transitions() -> None:
    # 2026-04-05 03:00 UTC: 24:00 -03 on Saturday falls back to 23:00 -04, so Saturday's
    # 23:00-24:00 happens twice.
    late = sched("America/Santiago", {5: (iv("23:00", "24:00"),)})
    opening = datetime(2026, 4, 4, 23, 0, tzinfo=SANTIAGO).astimezone(UTC)  # fold=0: -03
    assert opening == utc(2026, 4, 5, 2, 0)
    assert late.next_change(opening) == utc(2026, 4, 5, 4, 0)

    # 2026-09-06 04:00 UTC: 24:00 -04 on Saturday jumps to 01:00 -03 on Sunday, so an
    # interval starting at Sunday 00:00 opens at the transition.
    early = sched("America/Santiago", {6: (iv("00:00", "08:00"),)})
    assert not early.is_open(utc(2026, 9, 6, 3, 59, 59))
    assert early.next_change(utc(2026, 9, 6, 3, 0)) == utc(2026, 9, 6, 4, 0)
    assert early.next_change(utc(2026, 9, 6, 4, 0)) == utc(2026, 9, 6, 11, 0)  # 08:00 -03


def test_lord_howe_half_hour_shift() -> None:
    # 2026-10-04 02:00 +10:30 jumps to 02:30 +11 (15:30 UTC on the 3rd).
    s = sched("Australia/Lord_Howe", {6: (iv("02:00", "03:00"),)})
    opening = utc(2026, 10, 3, 15, 30)
    assert s.is_open(opening)
    assert s.next_change(utc(2026, 10, 3, 15, 0)) == opening
    assert s.next_change(opening) == utc(2026, 10, 3, 16, 0)  # 03:00 +11


# -- properties ------------------------------------------------------------------------


ZONES = [
    "America/Sao_Paulo",
    "America/New_York",
    "Europe/Lisbon",
    "Australia/Lord_Howe",
    "UTC",
    "Asia/Kolkata",
    "America/Santiago",
]
FIRST = datetime(2025, 1, 1)
LAST = datetime(2027, 12, 31)
# Boundaries near midnight and DST hours are where bugs hide, so draw them often.
INTERESTING_MINUTES = [0, 30, 60, 90, 120, 150, 180, 1380, 1410, 1439, 1440]


@functools.cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """UTC offset changes of a zone between FIRST and LAST, found by sampling and bisection."""
    zone = ZoneInfo(zone_name)

    def offset(t: datetime) -> timedelta | None:
        return t.astimezone(zone).utcoffset()

    found = []
    t = FIRST.replace(tzinfo=UTC)
    step = timedelta(hours=6)
    while t < LAST.replace(tzinfo=UTC):
        if offset(t) != offset(t + step):
            lo, hi = t, t + step
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == offset(lo):
                    lo = mid
                else:
                    hi = mid
            found.append(hi.replace(microsecond=0))
        t += step
    return tuple(found)


@st.composite
def day_intervals(draw: st.DrawFn) -> tuple[Interval, ...]:
    minute = st.one_of(st.integers(0, 1440), st.sampled_from(INTERESTING_MINUTES))
    bounds = sorted(draw(st.lists(minute, unique=True, max_size=8)))
    if len(bounds) % 2:
        bounds.pop()
    intervals = [
        Interval.from_minutes(a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True)
    ]
    if draw(st.booleans()) and intervals:
        # Split one interval into two touching ones: must behave exactly like the whole.
        i = draw(st.integers(0, len(intervals) - 1))
        whole = intervals[i]
        first, last = whole.start_minute, whole.end_minute
        if last - first >= 2:
            cut = draw(st.integers(first + 1, last - 1))
            intervals[i : i + 1] = [
                Interval.from_minutes(first, cut),
                Interval.from_minutes(cut, last),
            ]
    return tuple(intervals)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        # The same hours every day, so a DST transition day always has boundaries.
        daily = draw(day_intervals())
        weekly = {day: daily for day in range(7)}
    else:
        days = draw(st.lists(st.integers(0, 6), unique=True, max_size=7))
        weekly = {day: draw(day_intervals()) for day in days}
    some_dates = st.dates(FIRST.date(), LAST.date() + timedelta(days=400))
    holidays = draw(st.frozensets(some_dates, max_size=6))
    special = draw(st.dictionaries(some_dates, day_intervals(), max_size=3))
    return sched(zone, weekly, holidays, special)


@st.composite
def instants(draw: st.DrawFn, zone_name: str) -> datetime:
    """Aware instants in 2025-2027, biased toward DST transitions and whole local minutes."""
    kind = draw(st.sampled_from(["any", "transition", "transition", "local"]))
    found = transitions(zone_name)
    if kind == "transition" and found:
        base = draw(st.sampled_from(found))
        return base + timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)))
    naive = draw(st.datetimes(FIRST, LAST))
    if kind == "local":
        # A whole-minute local wall time, possibly in a gap or a repeated hour.
        local = naive.replace(second=0, microsecond=0, fold=draw(st.integers(0, 1)))
        return local.replace(tzinfo=ZoneInfo(zone_name))
    return naive.replace(tzinfo=UTC)


@st.composite
def schedule_and_instant(draw: st.DrawFn) -> tuple[Schedule, datetime]:
    schedule = draw(schedules())
    return schedule, draw(instants(schedule.timezone))


def assert_first_change(s: Schedule, at: datetime) -> None:
    """next_change(at) is after at, differs from at, and nothing differs in between."""
    state = s.is_open(at)
    t = s.next_change(at)
    if t is None:
        for k in range(1, 8):
            assert s.is_open(at + timedelta(days=400) * k / 7) == state
        return
    assert t.tzinfo is UTC
    assert t > at
    assert t - at <= timedelta(days=400)
    assert s.is_open(t) != state
    samples = [at + (t - at) * k / 7 for k in range(1, 7)]
    samples += [t - timedelta(seconds=1), t - timedelta(microseconds=1)]
    for sample in samples:
        if sample > at:
            assert s.is_open(sample) == state, (sample, t)
    # A coarse scan must not see a change before t.
    probe = at
    while probe < min(t, at + timedelta(days=2)):
        assert s.is_open(probe) == state, (probe, t)
        probe += timedelta(minutes=10)


@settings(max_examples=250, deadline=None)
@given(schedule_and_instant())
def test_next_change_is_the_first_change(case: tuple[Schedule, datetime]) -> None:
    assert_first_change(*case)


DST_ZONES = ["America/New_York", "Europe/Lisbon", "Australia/Lord_Howe", "America/Santiago"]
# Half hours around the night, where these zones change offset, plus noon and midnight.
DST_MINUTES = [0, 30, 60, 90, 120, 150, 180, 210, 240, 720, 1380, 1410, 1440]


@st.composite
def daily_hours_near_a_transition(draw: st.DrawFn) -> tuple[Schedule, datetime]:
    """Same hours every day, mostly at night, and an instant shortly before a DST change."""
    zone = draw(st.sampled_from(DST_ZONES))
    bounds = sorted(draw(st.lists(st.sampled_from(DST_MINUTES), unique=True, max_size=6)))
    if len(bounds) % 2:
        bounds.pop()
    daily = tuple(
        Interval.from_minutes(a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True)
    )
    schedule = sched(zone, {day: daily for day in range(7)})
    at = draw(st.sampled_from(transitions(zone)))
    return schedule, at + timedelta(seconds=draw(st.integers(-3 * 3600, 3600)))


@settings(max_examples=150, deadline=None)
@given(daily_hours_near_a_transition())
def test_next_change_is_the_first_change_around_dst(case: tuple[Schedule, datetime]) -> None:
    assert_first_change(*case)


@settings(max_examples=200, deadline=None)
@given(schedule_and_instant(), st.sampled_from(ZONES))
def test_answers_do_not_depend_on_the_representation_of_at(
    case: tuple[Schedule, datetime], other_zone: str
) -> None:
    s, at = case
    forms = [at, at.astimezone(UTC), at.astimezone(ZoneInfo(other_zone))]
    assert len({s.is_open(form) for form in forms}) == 1
    assert len({s.next_change(form) for form in forms}) == 1


@settings(max_examples=100, deadline=None)
@given(schedule_and_instant())
def test_consecutive_changes_alternate(case: tuple[Schedule, datetime]) -> None:
    s, at = case
    state = s.is_open(at)
    for _ in range(4):
        t = s.next_change(at)
        if t is None:
            break
        assert t > at
        state = not state
        assert s.is_open(t) == state
        at = t


def test_a_wall_time_the_clocks_skip_is_the_instant_an_hour_later() -> None:
    """2025-03-09 02:00 does not exist in New York (clocks go from 02:00 to 03:00): an aware
    datetime naming it is the instant of 03:00 EDT, outside a 02:00-02:01 interval — as
    next_change, which works in UTC, sees it (hypothesis found the disagreement)."""
    s = sched("America/New_York", {6: (iv("02:00", "02:01"),)})
    assert not s.is_open(datetime(2025, 3, 9, 2, 0, tzinfo=NEW_YORK))
    assert s.is_open(datetime(2025, 3, 16, 2, 0, 30, tzinfo=NEW_YORK))
    assert_first_change(s, datetime(2025, 3, 8, 12, 0, tzinfo=NEW_YORK))


# -- a service's next opening (Directory.next_opening) ------------------------------------


def directory_of(service_hours: Schedule | None, link_hours: Schedule | None) -> Directory:
    """One service (id 1) whose hours are ``service_hours`` and whose one group's link has
    ``link_hours`` (None: no schedule there)."""
    schedules = {}
    if service_hours is not None:
        schedules["hours"] = msgspec.structs.replace(service_hours, id="hours")
    if link_hours is not None:
        schedules["link"] = msgspec.structs.replace(link_hours, id="link")
    service = Service(
        id=1,
        name="S",
        schedule="hours" if service_hours is not None else None,
        links=(GroupLink(group=1, schedule="link" if link_hours is not None else None),),
    )
    return Directory({1: service}, {1: Group(1, "G")}, {}, schedules)


def test_next_opening_of_a_closed_service_is_its_schedules_next_open_instant() -> None:
    d = directory_of(office(), None)
    service = d.services[1]
    # Friday 18:30 in São Paulo: closed until Monday 08:00 (11:00 UTC).
    assert d.next_opening(service, sp(2026, 3, 6, 18, 30)) == utc(2026, 3, 9, 11)
    # In the lunch break: 13:00 local.
    assert d.next_opening(service, sp(2026, 3, 4, 12, 15)) == utc(2026, 3, 4, 16)
    # Open now: no next opening.
    assert d.next_opening(service, sp(2026, 3, 4, 9)) is None


def test_next_opening_needs_the_service_and_a_link_open_together() -> None:
    """The service's hours are the office's; its only group works afternoons (13:00-20:00):
    on Monday at 07:00 the service opens at 08:00, but nobody answers before 13:00."""
    afternoons = sched("America/Sao_Paulo", {day: (iv("13:00", "20:00"),) for day in range(7)})
    d = directory_of(office(), afternoons)
    assert d.next_opening(d.services[1], sp(2026, 3, 2, 7)) == utc(2026, 3, 2, 16)
    # Friday 18:00: the group still works, the service does not; Monday 13:00 both do.
    assert d.next_opening(d.services[1], sp(2026, 3, 6, 18)) == utc(2026, 3, 9, 16)


def test_a_service_that_never_opens_has_no_next_opening() -> None:
    closed = sched("UTC", {})
    d = directory_of(closed, None)
    assert d.next_opening(d.services[1], utc(2026, 3, 2)) is None
    # Hours that never meet: mornings for the service, evenings for its only group.
    mornings = sched("UTC", {day: (iv("08:00", "12:00"),) for day in range(7)})
    evenings = sched("UTC", {day: (iv("18:00", "22:00"),) for day in range(7)})
    d = directory_of(mornings, evenings)
    assert d.next_opening(d.services[1], utc(2026, 3, 2)) is None


@settings(max_examples=40, deadline=None)
@given(schedule_and_instant(), st.one_of(st.none(), schedules()))
def test_next_opening_is_the_first_instant_a_group_takes_conversations(
    case: tuple[Schedule, datetime], link_hours: Schedule | None
) -> None:
    service_hours, at = case
    d = directory_of(service_hours, link_hours)
    service = d.services[1]
    opening = d.next_opening(service, at)
    if d.route(service, at) is not None:
        assert opening is None
        return
    # Openness changes only where a schedule does: none of those before the answer is open.
    every = [s for s in (service_hours, link_hours) if s is not None]
    moment = at
    for _ in range(200):
        changes = [c for s in every if (c := s.next_change(moment)) is not None]
        if not changes or (opening is not None and min(changes) >= opening):
            break
        moment = min(changes)
        assert d.route(service, moment) is None, (moment, opening)
    if opening is not None:
        assert opening.tzinfo is UTC
        assert at < opening <= at + timedelta(days=400)
        assert d.route(service, opening) is not None
