"""Report definitions (omni.domain.reports) on hand-made conversations with exact timings, and
the one definition of the service level shared by the admin API's and the simulator's reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from admin_api.app import create_app
from omni.actors.configuration import Configuration
from omni.domain.conversation import Conversation, Status
from omni.domain.model import Role
from omni.domain.reports import report, service_level
from omni.metrics import make_registry
from simulator.engine import Trace
from simulator.report import build_report
from simulator.scenario import parse_scenario
from tests.support import (
    TOK_ALICE,
    api_token,
    connect_memory,
    login,
    make_config,
    make_conversation,
    open_memory_gateway,
    start,
    with_items,
)

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


#: The bot figures of a report where no conversation met a chatbot.
NO_BOT = {"conversations": 0, "contained": 0, "containment": None, "handoffs": {}, "dropoffs": {}}


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
        # The files sent, by service (Store.attachment_figures): none in service 30.
        files={25: (2, 1500)},
    )
    assert result.total == {
        "offered": 5,
        "answered": 3,
        "abandoned": 1,
        "out_of_hours": 2,
        # 2 answered within 20 s of 3 answered + 1 abandoned; the one still queued counts in
        # neither (÷ offered would say 2 of 5).
        "service_level": 0.5,
        "asa_seconds": round((10 + 40 + 5) / 3, 3),
        "aht_seconds": 200.0,  # (300 + 100) / 2
        "files_sent": 2,
        "file_bytes": 1500,
        "bot": NO_BOT,
    }
    assert result.services[30]["offered"] == 1 and result.services[30]["answered"] == 0
    assert (result.services[30]["files_sent"], result.services[30]["file_bytes"]) == (0, 0)
    assert (result.services[25]["files_sent"], result.services[25]["file_bytes"]) == (2, 1500)
    assert "files_sent" not in result.groups[2]  # by service, not by group
    assert result.groups[2] == {
        "offered": 1,
        "answered": 0,
        "abandoned": 0,
        "out_of_hours": 1,
        "service_level": None,  # its one offered conversation is still waiting
        "asa_seconds": None,
        "aht_seconds": None,
    }


def test_service_level_counts_answered_and_abandoned_only() -> None:
    assert service_level(answered_within=1, answered=2, abandoned=1) == pytest.approx(1 / 3)
    assert service_level(answered_within=0, answered=0, abandoned=4) == 0.0
    assert service_level(answered_within=3, answered=3, abandoned=0) == 1.0
    assert service_level(answered_within=0, answered=0, abandoned=0) is None
    for impossible in ((2, 1, 0), (-1, 0, 0), (0, 0, -1)):
        with pytest.raises(ValueError, match="impossible counts"):
            service_level(*impossible)


#: The story both reports are told, in seconds from its start, with a 20 s threshold: A is
#: answered after 5 s, B after 25 s, C leaves unanswered after 10 s, D is still waiting when the
#: figures are taken. One answered within 20 s / (2 answered + 1 abandoned) = 1/3; dividing by
#: the 4 offered would give 1/4.
STORY_SERVICE_LEVEL = 1 / 3


async def test_the_admin_api_report_leaves_visitors_still_waiting_out_of_the_service_level(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = "supervisor-report-token"
    cfg = with_items(make_config(), api_token("boss", supervisor, Role.SUPERVISOR))
    async with open_memory_gateway(cfg) as gw:
        hub = gw.hub
        app = create_app(
            hub, make_registry(hub), Configuration(hub, hub.store, cfg.items, hub.clock.now)
        )
        t0 = trio.current_time()

        async def at(seconds: float) -> None:
            await trio.sleep_until(t0 + seconds)

        async with (
            connect_memory(gw, "/ws/operator") as alice,  # capacity 2, the only one of group 1
            connect_memory(gw, "/ws/visitor") as a,
            connect_memory(gw, "/ws/visitor") as b,
            connect_memory(gw, "/ws/visitor") as c,
            connect_memory(gw, "/ws/visitor") as d,
        ):
            await login(alice, TOK_ALICE)
            first = (await start(a, 25, name="A"))["conversation_id"]
            await alice.expect("offer")
            await at(5)
            await alice.send("accept", conversation_id=first)
            await a.expect("assigned")
            second = (await start(b, 25, name="B"))["conversation_id"]
            await alice.until("offer")
            await at(30)
            await alice.send("accept", conversation_id=second)
            await b.expect("assigned")
            await start(c, 25, name="C")  # Alice is full: C and D wait
            await c.expect("queued")
            await at(40)
            await c.send("end")
            await c.expect("ended", by="visitor")
            await start(d, 25, name="D")
            await d.expect("queued")
            await at(45)

            r = await app.test_client().get(
                "/api/v1/reports", headers={"Authorization": f"Bearer {supervisor}"}
            )
            assert r.status_code == 200
            total = (await r.get_json())["total"]
    assert {k: total[k] for k in ("offered", "answered", "abandoned")} == {
        "offered": 4,
        "answered": 2,
        "abandoned": 1,
    }
    assert total["service_level"] == round(STORY_SERVICE_LEVEL, 4) == 0.3333


def _one_group_scenario() -> Any:
    always = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    return parse_scenario(
        {
            "name": "story",
            "start": "2026-11-23T09:00:00",
            "timezone": "UTC",
            "duration_hours": 1,
            "seed": 1,
            "schedules": [{"id": "always", "timezone": "UTC", "weekly": always}],
            "groups": [{"id": 1, "name": "G"}],
            "services": [{"id": 1, "name": "S", "schedule": "always", "links": [{"group": 1}]}],
            "operators": [
                {
                    "id": 1,
                    "groups": [1],
                    "capacity": 2,
                    "login": "00:00",
                    "logout": "00:00",
                    "handle_time": {"mean": 600},
                }
            ],
            "arrivals": [{"service": 1, "rate": 4}],
        }
    )


def test_the_simulator_report_leaves_visitors_still_waiting_out_of_the_service_level() -> None:
    """The same story as the engine records it (tests/test_simulator.py runs the engine)."""
    trace = Trace()
    trace.add(0, "login", operator=1, groups=[1])
    for visitor, arrived in ((1, 0), (2, 5), (3, 30), (4, 40)):
        trace.add(arrived, "start", visitor=visitor, service=1)
        trace.add(arrived, "queued", visitor=visitor, service=1, id=f"c{visitor}", group=1)
    for visitor, answered, wait in ((1, 5, 5.0), (2, 30, 25.0)):
        trace.add(
            answered,
            "assigned",
            visitor=visitor,
            service=1,
            id=f"c{visitor}",
            group=1,
            operator=1,
            wait=wait,
        )
    trace.add(40, "abandoned", visitor=3, service=1, id="c3", group=1, wait=10.0)
    trace.add(45, "end")

    total = build_report(_one_group_scenario(), trace, seed=1, threshold=20)["total"]
    assert {k: total[k] for k in ("offered", "answered", "abandoned", "waiting_at_end")} == {
        "offered": 4,
        "answered": 2,
        "abandoned": 1,
        "waiting_at_end": 1,
    }
    assert total["service_level"] == round(100 * STORY_SERVICE_LEVEL, 1) == 33.3
