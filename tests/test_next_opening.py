"""When a closed service takes conversations again (``Directory.next_opening``, the
``opens_at`` of the out-of-hours notice): the first instant at which routing gives it a group,
across breaks, holidays, several schedules and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from omni.config import load_config
from omni.domain.model import Directory, Group, GroupLink, Service
from omni.domain.schedule import LOOKAHEAD, Interval, Schedule, Week

EXAMPLE = load_config("examples/omni.toml").directory
SALES = EXAMPLE.services[30]  # business hours, lunch 12:00-13:00 (America/Sao_Paulo, UTC-3)
SUPPORT = EXAMPLE.services[25]  # 07:00-22:00 weekdays; L1 on business hours, else L2


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def directory(service_schedule: Schedule | None, *links: Schedule | None) -> Directory:
    """One service (id 1) with the given schedule and one link per schedule (groups 1, 2...)."""
    schedules = {s.id: s for s in (service_schedule, *links) if s is not None}
    service = Service(
        id=1,
        name="S",
        schedule=service_schedule.id if service_schedule else None,
        links=tuple(
            GroupLink(group=n, schedule=s.id if s else None) for n, s in enumerate(links, 1)
        ),
    )
    groups = {n: Group(id=n, name=f"G{n}") for n in range(1, len(links) + 1)}
    return Directory(services={1: service}, groups=groups, operators={}, schedules=schedules)


def weekly(id: str, zone: str, days: dict[int, list[tuple[str, str]]]) -> Schedule:
    return Schedule(
        id, zone, Week.of({d: tuple(Interval(a, b) for a, b in spans) for d, spans in days.items()})
    )


# -- the example configuration ---------------------------------------------------------------------


def test_sales_reopens_after_lunch() -> None:
    # Wednesday 12:30 in São Paulo: the lunch break; Sales opens again at 13:00 (16:00 UTC).
    at = utc(2026, 11, 25, 15, 30)
    assert EXAMPLE.route(SALES, at) is None
    assert EXAMPLE.next_opening(SALES, at) == utc(2026, 11, 25, 16, 0)


def test_sales_reopens_on_saturday_morning_and_after_a_holiday() -> None:
    # Friday 18:00 local: Saturday 09:00 (12:00 UTC).
    assert EXAMPLE.next_opening(SALES, utc(2026, 11, 27, 21, 0)) == utc(2026, 11, 28, 12, 0)
    # Saturday 13:00 local: Monday 08:00.
    assert EXAMPLE.next_opening(SALES, utc(2026, 11, 28, 16, 0)) == utc(2026, 11, 30, 11, 0)
    # Christmas Eve is a special day (08:00-12:00); Christmas (a Friday) a holiday: Saturday.
    assert EXAMPLE.next_opening(SALES, utc(2026, 12, 24, 15, 0)) == utc(2026, 12, 26, 12, 0)


def test_an_open_service_has_no_next_opening_and_a_closed_ones_is_in_utc() -> None:
    at = utc(2026, 11, 25, 13, 0, 0)
    assert EXAMPLE.next_opening(SALES, at) is None
    closed = utc(2026, 11, 25, 15, 30)
    opening = EXAMPLE.next_opening(SALES, closed.astimezone(ZoneInfo("Asia/Tokyo")))
    assert opening == utc(2026, 11, 25, 16, 0)
    assert opening is not None and opening.utcoffset() == timedelta(0)


def test_links_count_as_routing_does() -> None:
    """Support's service schedule is 07:00-22:00 and its last link has none: it opens when the
    service schedule does, whatever the first link's (business-hours) schedule says."""
    # Sunday 21:00 local (closed: Sundays end at 20:00) -> Monday 07:00 local.
    at = utc(2026, 11, 30, 0, 0)
    assert EXAMPLE.next_opening(SUPPORT, at) == utc(2026, 11, 30, 10, 0)


def test_only_the_links_schedules_gate_a_service_without_its_own() -> None:
    mornings = weekly("am", "UTC", {d: [("08:00", "12:00")] for d in range(7)})
    evenings = weekly("pm", "UTC", {d: [("18:00", "20:00")] for d in range(7)})
    d = directory(None, mornings, evenings)
    service = d.services[1]
    assert d.next_opening(service, utc(2026, 11, 25, 13, 0)) == utc(2026, 11, 25, 18, 0)
    assert d.route(service, utc(2026, 11, 25, 18, 0)) == 2
    assert d.next_opening(service, utc(2026, 11, 25, 20, 0)) == utc(2026, 11, 26, 8, 0)


def test_the_service_and_its_links_must_be_open_together() -> None:
    """The service opens on weekdays, its only group on weekends: never together."""
    weekdays = weekly("wd", "America/New_York", {d: [("09:00", "17:00")] for d in range(5)})
    weekends = weekly("we", "America/New_York", {d: [("00:00", "24:00")] for d in (5, 6)})
    d = directory(weekdays, weekends)
    assert d.next_opening(d.services[1], utc(2026, 11, 25, 12, 0)) is None
    # Overlapping only on Friday afternoons from 15:00 on.
    fridays = weekly("fr", "America/New_York", {4: [("15:00", "24:00")]})
    d = directory(weekdays, fridays)
    assert d.next_opening(d.services[1], utc(2026, 11, 23, 12, 0)) == utc(2026, 11, 27, 20, 0)


def test_never_open_is_null() -> None:
    never = Schedule("never", "America/Sao_Paulo")
    d = directory(never, None)
    assert d.next_opening(d.services[1], utc(2026, 11, 25, 12, 0)) is None
    d = directory(None, never)
    assert d.next_opening(d.services[1], utc(2026, 11, 25, 12, 0)) is None


def test_an_opening_beyond_the_look_ahead_is_null() -> None:
    from omni.domain.schedule import SpecialDay

    at = utc(2026, 1, 1)
    within = (at + LOOKAHEAD - timedelta(days=2)).date()
    beyond = (at + LOOKAHEAD + timedelta(days=2)).date()
    for day, expected in ((within, True), (beyond, False)):
        once = Schedule(
            "once", "UTC", special_days=(SpecialDay(day, (Interval("10:00", "11:00"),)),)
        )
        d = directory(once, None)
        opens = d.next_opening(d.services[1], at)
        assert (opens is not None) == expected
        if expected:
            assert opens == datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=10)


# -- daylight saving ------------------------------------------------------------------------------


def test_new_york_opens_at_the_new_offset_after_clocks_go_forward() -> None:
    """Friday 6 March 2026 after hours, EST (UTC-5); clocks go forward on Sunday 8 March: Monday
    09:00 is EDT (UTC-4), 13:00 UTC — not 14:00."""
    office = weekly("office", "America/New_York", {d: [("09:00", "17:00")] for d in range(5)})
    d = directory(office, None)
    assert d.next_opening(d.services[1], utc(2026, 3, 6, 23, 0)) == utc(2026, 3, 9, 13, 0)
    # And back in November: Monday 2 November 09:00 EST is 14:00 UTC.
    assert d.next_opening(d.services[1], utc(2026, 10, 30, 22, 0)) == utc(2026, 11, 2, 14, 0)


def test_an_opening_in_the_skipped_hour_is_the_transition() -> None:
    """Open Sundays from 02:30 in New York: on 8 March 2026 02:30 does not exist (02:00 EST
    becomes 03:00 EDT), so it opens at the transition, 07:00 UTC."""
    sunday = weekly("sun", "America/New_York", {6: [("02:30", "04:00")]})
    d = directory(sunday, None)
    assert d.next_opening(d.services[1], utc(2026, 3, 7, 12, 0)) == utc(2026, 3, 8, 7, 0)
    assert d.route(d.services[1], utc(2026, 3, 8, 7, 0)) == 1
    assert d.route(d.services[1], utc(2026, 3, 8, 6, 59, 59)) is None


def test_santiago_across_the_end_of_summer_time() -> None:
    """Chile leaves summer time (UTC-3) for UTC-4 on the first Sunday of April: 5 April 2026.
    The service is open weekdays 09:00-18:00 and its group has a lunch break: Friday evening
    before the change, it opens Monday 09:00 at UTC-4, 13:00 UTC."""
    office = weekly("office", "America/Santiago", {d: [("09:00", "18:00")] for d in range(5)})
    group = weekly(
        "group", "America/Santiago", {d: [("09:00", "13:00"), ("14:00", "18:00")] for d in range(5)}
    )
    d = directory(office, group)
    assert d.next_opening(d.services[1], utc(2026, 4, 3, 22, 0)) == utc(2026, 4, 6, 13, 0)
    # Monday's lunch, 13:30 local (17:30 UTC): 14:00 local, 18:00 UTC.
    assert d.next_opening(d.services[1], utc(2026, 4, 6, 17, 30)) == utc(2026, 4, 6, 18, 0)


# -- against routing itself -----------------------------------------------------------------------

ZONES = st.sampled_from(["UTC", "America/New_York", "America/Santiago", "Europe/London"])
SPANS = st.lists(
    st.tuples(st.integers(0, 47), st.integers(1, 16)).map(
        lambda s: (s[0] * 30, min(s[0] * 30 + s[1] * 30, 24 * 60))
    ),
    max_size=2,
)


@st.composite
def schedules(draw: st.DrawFn, id: str) -> Schedule | None:
    if draw(st.booleans()):
        return None
    days = {}
    for day in range(7):
        spans = sorted(draw(SPANS))
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                continue
            merged.append((start, end))
        if merged:
            days[day] = tuple(Interval.from_minutes(a, b) for a, b in merged)
    return Schedule(id, draw(ZONES), Week.of(days))


@settings(max_examples=60, deadline=None)
@given(
    schedules("a"),
    schedules("b"),
    schedules("c"),
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)).map(lambda t: t.replace(tzinfo=UTC)),
)
def test_it_is_the_first_instant_routing_gives_a_group(
    own: Schedule | None, first: Schedule | None, second: Schedule | None, at: datetime
) -> None:
    d = directory(own, first, second)
    service = d.services[1]
    opens = d.next_opening(service, at)
    if d.route(service, at) is not None:
        assert opens is None  # open now: no next opening to tell
        return
    if opens is None:
        # Nothing within the week after (checking 400 days would take too long).
        probe = at
        while probe < at + timedelta(days=8):
            assert d.route(service, probe) is None, probe
            probe += timedelta(minutes=15)
        return
    assert opens >= at and d.route(service, opens) is not None
    # Closed just before, and all the way from ``at`` (every 5 minutes: the schedules change
    # only on whole half hours of UTC in these zones).
    if opens > at:
        assert d.route(service, opens - timedelta(seconds=1)) is None
    probe = at
    while probe < min(opens, at + timedelta(days=8)):
        assert d.route(service, probe) is None, probe
        probe += timedelta(minutes=5)
