"""Report definitions (omni.domain.reports) on hand-made conversations with exact timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from omni.domain.conversation import Conversation, Status
from omni.domain.reports import report
from tests.support import make_conversation

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def conv(
    n: int,
    status: Status,
    *,
    answered: float | None = None,
    ended: float | None = None,
    group: int | None = 1,
    ooh: bool = False,
    service: int = 25,
) -> Conversation:
    return make_conversation(
        n,
        status,
        at=at(0),
        service_id=service,
        group_id=group,
        answered_at=at(answered) if answered is not None else None,
        ended_at=at(ended) if ended is not None else None,
        arrived_out_of_hours=ooh,
    )


def test_report_figures() -> None:
    result = report(
        [
            conv(1, Status.CLOSED, answered=10, ended=310),  # within 20 s
            conv(2, Status.CLOSED, answered=40, ended=140),  # too slow
            conv(3, Status.ACTIVE, answered=5),  # still going: no handle time yet
            conv(4, Status.ABANDONED, ended=60),
            conv(5, Status.OUT_OF_HOURS, group=None, ooh=True),
            # Resumed by an operator hours later (F4): still out of hours, not an answered offer.
            conv(6, Status.CLOSED, answered=7200, ended=7300, group=2, ooh=True),
            conv(7, Status.QUEUED, group=2, service=30),
        ],
        threshold=20,
    )
    assert result.total == {
        "offered": 5,
        "answered": 3,
        "abandoned": 1,
        "out_of_hours": 2,
        "service_level": 0.4,  # 2 of 5 offered answered within 20 s
        "asa_seconds": round((10 + 40 + 5) / 3, 3),
        "aht_seconds": 200.0,  # (300 + 100) / 2
    }
    assert result.services[30]["offered"] == 1 and result.services[30]["answered"] == 0
    assert result.groups[2] == {
        "offered": 1,
        "answered": 0,
        "abandoned": 0,
        "out_of_hours": 1,
        "service_level": 0.0,
        "asa_seconds": None,
        "aht_seconds": None,
    }
