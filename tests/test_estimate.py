"""The estimated wait (omni.domain.estimate): the pace learnt from recent answers, the display
rounding, and the invariants a page relies on — unknown without data, never shorter for a
later place, bounded memory, the same answers giving the same estimates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.domain.estimate import CAP, GRANULARITY, HORIZON, WaitEstimator, for_display, wait_for

#: (seconds since the previous answer, places the visitor had ahead, seconds they waited).
answers = st.lists(
    st.tuples(
        st.floats(0, 4000, allow_nan=False),
        st.integers(0, 30),
        st.floats(0, 20_000, allow_nan=False),
    ),
    max_size=80,
)


def fed(
    history: list[tuple[float, int, float]], **options: int | float
) -> tuple[WaitEstimator, float]:
    """An estimator fed ``history`` in time order; returns it and the time of the last answer."""
    estimator = WaitEstimator(**options)  # type: ignore[arg-type]
    now = 0.0
    for gap, ahead, waited in history:
        now += gap
        estimator.answered(now, ahead, waited)
    return estimator, now


# -- the pace -------------------------------------------------------------------------------------


def test_the_pace_is_the_waits_over_the_places_moved() -> None:
    estimator = WaitEstimator()
    estimator.answered(100.0, 1, 30.0)
    assert estimator.pace(100.0) is None  # one place moved: not enough to tell (3 are needed)
    estimator.answered(160.0, 2, 90.0)
    assert estimator.pace(160.0) == pytest.approx(40.0)
    estimator.answered(170.0, 1, 30.0)
    # (30 + 90 + 30) s over (1 + 2 + 1) places.
    assert estimator.pace(200.0) == pytest.approx(37.5)
    assert estimator.estimate(1, 200.0) == 40  # 37.5 s, to the nearest 5 s
    assert estimator.estimate(4, 200.0) == 150  # 150 s, to the nearest 30 s
    assert estimator.estimate(0, 200.0) == 0


def test_answers_of_visitors_nobody_was_ahead_of_teach_nothing() -> None:
    """An operator was free when they joined: their wait says nothing about the queue's pace."""
    estimator = WaitEstimator(minimum=1)
    for t in range(10):
        estimator.answered(float(t), 0, 0.0)
    assert len(estimator) == 0
    assert estimator.pace(10.0) is None
    assert estimator.estimate(3, 10.0) is None
    assert estimator.estimate(0, 10.0) == 0  # an operator is free: no data needed


def test_old_answers_stop_counting() -> None:
    estimator = WaitEstimator(minimum=1)
    estimator.answered(0.0, 1, 60.0)
    assert estimator.pace(HORIZON) == 60.0
    assert estimator.pace(HORIZON + 0.001) is None
    assert len(estimator) == 0  # and are forgotten


def test_only_the_most_recent_answers_are_kept() -> None:
    estimator = WaitEstimator(keep=3, minimum=1)
    for t, waited in enumerate([1000.0, 10.0, 20.0, 30.0]):
        estimator.answered(float(t), 1, waited)
    assert len(estimator) == 3
    assert estimator.pace(4.0) == 20.0  # the 1000 s wait is gone


def test_an_answer_reported_late_counts_as_of_the_last_one() -> None:
    estimator = WaitEstimator(minimum=1)
    estimator.answered(100.0, 1, 10.0)
    estimator.answered(50.0, 1, 20.0)  # out of order: taken as at 100
    assert estimator.pace(100.0 + HORIZON) == 15.0


def test_bad_options_are_refused() -> None:
    for options in ({"keep": 0}, {"minimum": 0}, {"horizon": 0.0}):
        with pytest.raises(ValueError):
            WaitEstimator(**options)  # type: ignore[arg-type]


# -- display --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, 0),
        (-5.0, 0),
        (float("nan"), 0),
        (2.4, 0),
        (2.5, 5),
        (37.5, 40),
        (57.4, 55),
        (58.0, 60),
        (74.9, 60),
        (75.0, 90),
        (599.0, 600),
        (629.0, 600),
        (630.0, 660),
        (3599.0, 3600),
        (3749.0, 3600),
        (3750.0, 3900),
        (CAP - 1.0, CAP),
        (CAP * 10.0, CAP),
        (float("inf"), CAP),
    ],
)
def test_estimates_are_rounded_for_display(seconds: float, shown: int) -> None:
    assert for_display(seconds) == shown


def test_each_step_limit_is_a_multiple_of_the_steps_around_it() -> None:
    """What keeps rounding monotone across a change of step."""
    steps = [step for _, step in GRANULARITY]
    for (limit, step), after in zip(GRANULARITY, [*steps[1:], steps[-1]], strict=True):
        assert limit % step == 0 and limit % after == 0


@given(st.floats(0, 2 * CAP, allow_nan=False), st.floats(0, 2 * CAP, allow_nan=False))
def test_display_never_reorders(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0 <= for_display(low) <= for_display(high) <= CAP


def test_wait_for_needs_a_pace_only_when_someone_is_ahead() -> None:
    assert wait_for(0, None) == 0
    assert wait_for(-2, 30.0) == 0
    assert wait_for(1, None) is None
    assert wait_for(3, 20.0) == 60


# -- invariants -----------------------------------------------------------------------------------


@settings(max_examples=300)
@given(answers, st.floats(0, 5000, allow_nan=False))
def test_monotone_in_the_places_ahead(
    history: list[tuple[float, int, float]], later: float
) -> None:
    estimator, now = fed(history)
    shown = [estimator.estimate(ahead, now + later) for ahead in range(0, 60)]
    assert shown[0] == 0
    if shown[1] is None:
        assert all(s is None for s in shown[1:])  # unknown for one place, unknown for all
    else:
        known = [s for s in shown if s is not None]
        assert len(known) == len(shown)
        assert known == sorted(known)
        assert all(0 <= s <= CAP for s in known)


@given(st.integers(1, 1000), st.floats(0, 1e6, allow_nan=False))
def test_unknown_without_answers(ahead: int, now: float) -> None:
    assert WaitEstimator().estimate(ahead, now) is None


@settings(max_examples=300)
@given(answers)
def test_unknown_until_enough_places_were_moved(history: list[tuple[float, int, float]]) -> None:
    estimator, now = fed(history, minimum=5, horizon=1e9)
    # Only answers with someone ahead are kept: the last ``keep`` of those.
    kept = [ahead for _, ahead, _ in history if ahead > 0][-estimator.keep :]
    assert (estimator.pace(now) is None) == (sum(kept) < 5)


@settings(max_examples=200)
@given(answers, st.integers(1, 25))
def test_memory_is_bounded(history: list[tuple[float, int, float]], keep: int) -> None:
    estimator, _ = fed(history, keep=keep)
    assert len(estimator) <= keep


@settings(max_examples=200)
@given(answers)
def test_the_same_answers_give_the_same_estimates(history: list[tuple[float, int, float]]) -> None:
    first, now = fed(history)
    second, _ = fed(history)
    assert [first.estimate(a, now) for a in range(20)] == [
        second.estimate(a, now) for a in range(20)
    ]


@settings(max_examples=200)
@given(st.integers(1, 40), st.floats(1, 600), st.integers(1, 30))
def test_a_steady_queue_is_estimated_at_its_pace(count: int, pace: float, ahead: int) -> None:
    """Visitors who each waited ``pace`` per place: the estimate is that pace times the places,
    as displayed."""
    estimator = WaitEstimator(minimum=1)
    for n in range(count):
        places = 1 + n % 7
        estimator.answered(float(n), places, places * pace)
    assert estimator.estimate(ahead, float(count)) == for_display(ahead * pace)
