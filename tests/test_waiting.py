"""What a visitor is told while they wait, or when nobody is there (issue 13), end to end in
virtual time: the estimated wait of every ``queued`` frame, learnt from the group's answers,
and the out-of-hours notice's ``opens_at``."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import trio

from omni.config import load_config
from omni.domain.configuration import item_of
from omni.domain.schedule import Interval, Schedule, Week
from tests.support import (
    TOK_CARLA,
    Client,
    connect_memory,
    login,
    make_config,
    open_memory_gateway,
    start,
    with_items,
    with_service,
)

#: How long Carla, the only operator of group 1 (capacity 1), keeps each conversation.
HANDLE = 60.0


async def queued(client: Client) -> dict[str, Any]:
    """The next ``queued`` frame, within five virtual minutes."""
    return await client.expect("queued", timeout=300)


async def test_the_estimate_is_the_pace_of_the_recent_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Six visitors wait from t=0; from t=60 Carla takes one a minute. Every visitor she answers
    waited exactly a minute per place they had to move, so once three places have been moved
    (v1's one, v2's two) the estimate is 60 s per place — null before, and 0 for a visitor an
    idle operator takes at once. A visitor told 240 s is answered 239 s later."""
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(open_memory_gateway())
        carla = await stack.enter_async_context(connect_memory(gw, "/ws/operator"))
        await login(carla, TOK_CARLA, available=False)
        visitors = [
            await stack.enter_async_context(connect_memory(gw, "/ws/visitor")) for _ in range(6)
        ]
        ids = []
        for n, visitor in enumerate(visitors, 1):
            ids.append((await start(visitor, name=f"V{n}"))["conversation_id"])
            # Nobody has been answered yet: unknown.
            assert await queued(visitor) == {
                "type": "queued",
                "conversation_id": ids[-1],
                "position": n,
                "estimated_wait": None,
            }

        async def operate() -> None:
            await carla.send("status", status="available")
            await carla.expect("status")
            while True:
                offer = await carla.expect("offer", timeout=3600)
                await carla.send("accept", conversation_id=offer["conversation_id"])
                await carla.until("assigned")
                await trio.sleep(HANDLE)
                await carla.send("end", conversation_id=offer["conversation_id"])
                await carla.until("ended")

        async with trio.open_nursery() as nursery:
            await trio.sleep(60)
            nursery.start_soon(operate)
            # t=60: V1 is taken; the others move up, still unknown (the answer follows the offer).
            for n, visitor in enumerate(visitors[1:], 1):
                assert (await queued(visitor))["position"] == n
            # t=120: V2 is taken; V1 had moved one place in 60 s: not yet enough to tell.
            for n, visitor in enumerate(visitors[2:], 1):
                frame = await queued(visitor)
                assert (frame["position"], frame["estimated_wait"]) == (n, None)
            # t=180: V3 is taken; V1 and V2 moved three places in 180 s: 60 s a place.
            for n, visitor in enumerate(visitors[3:], 1):
                frame = await queued(visitor)
                assert (frame["position"], frame["estimated_wait"]) == (n, 60 * n)
            assert trio.current_time() == 180

            # A visitor who resumes is told the position and the estimate as they stand.
            token = (visitors[5].received[0])["token"]
            await visitors[5].close()
            async with connect_memory(gw, "/ws/visitor") as again:
                await again.send("resume", token=token, last_seq=0)
                await again.expect("resumed", status="queued")
                assert await queued(again) == {
                    "type": "queued",
                    "conversation_id": ids[5],
                    "position": 3,
                    "estimated_wait": 180,
                }
                # A newcomer at t=181 has V4, V5 and V6 ahead: 4 places, 240 s.
                await trio.sleep(1)
                async with connect_memory(gw, "/ws/visitor") as late:
                    await start(late, name="Late")
                    frame = await queued(late)
                    assert (frame["position"], frame["estimated_wait"]) == (4, 240)
                    await late.expect("assigned", timeout=300)
                    # At 420: 239 s, as V4 had had Carla's attention for a second already.
                    assert trio.current_time() == 420
                    # Carla is idle once everyone is answered: the next visitor waits for nobody.
                    await late.until("ended", timeout=300)
                    await trio.sleep(HANDLE)
                    async with connect_memory(gw, "/ws/visitor") as next_one:
                        await start(next_one, name="Next")
                        frame = await queued(next_one)
                        assert (frame["position"], frame["estimated_wait"]) == (1, 0)
                        await next_one.expect("assigned")
            nursery.cancel_scope.cancel()


async def test_only_an_accept_from_the_queue_is_an_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The accept teaches the group the visitor waited in; a transfer to another group teaches
    neither (the conversation is answered again only when someone there accepts it)."""
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(carla, TOK_CARLA, available=False)
        await start(vera)
        await queued(vera)
        await trio.sleep(30)
        await carla.send("status", status="available")
        await carla.expect("status")
        offer = await carla.expect("offer")
        await carla.send("accept", conversation_id=offer["conversation_id"])
        await vera.expect("assigned")
        # One place in 30 s, learnt from the accept.
        assert [(a.ahead, a.waited) for a in gw.hub.estimators[1]] == [(1, 30.0)]
        # Transferred to group 2 and taken there by nobody: nothing more is learnt by group 1.
        await carla.send("transfer", conversation_id=offer["conversation_id"], group_id=2)
        await vera.until("transferred")
        assert (await queued(vera))["estimated_wait"] is None  # group 2 knows nothing yet
        assert len(gw.hub.estimators[1]) == 1 and len(gw.hub.estimators[2]) == 0


# -- out of hours: when it opens again ----------------------------------------------------------


async def test_out_of_hours_tells_when_the_service_opens_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sales (examples/omni.toml) during its São Paulo lunch break, 12:30 local (15:30 UTC):
    it opens at 13:00 local, 16:00 UTC."""
    example = load_config("examples/omni.toml")
    async with (
        open_memory_gateway(example, epoch=datetime(2026, 11, 25, 15, 30, tzinfo=UTC)) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await start(vera, service_id=30)
        closed = await vera.expect("out_of_hours")
        assert closed["opens_at"] == "2026-11-25T16:00:00Z"
        assert closed["message"].startswith("Sales is closed")
        # Stored as sent: a resume replays the same frame.
        token = vera.received[0]["token"]
        async with connect_memory(gw, "/ws/visitor") as again:
            await again.send("resume", token=token, last_seq=0)
            await again.expect("resumed")
            assert await again.expect("out_of_hours") == closed


async def test_a_service_that_never_opens_says_null(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_gateway() as gw, connect_memory(gw, "/ws/visitor") as vera:
        await start(vera, service_id=26)  # schedule "never": no opening hours at all
        closed = await vera.expect("out_of_hours")
        assert closed["opens_at"] is None and closed["message"] == "We are closed."


async def test_opens_at_across_a_daylight_saving_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A New York office, Monday to Friday 09:00-17:00, asked on Saturday 7 March 2026 (EST,
    UTC-5). The clocks go forward on Sunday: Monday 09:00 is EDT, 13:00 UTC (not 14:00)."""
    office = Schedule(
        "ny-office",
        "America/New_York",
        Week.of({day: (Interval("09:00", "17:00"),) for day in range(5)}),
    )
    config = with_items(make_config(), item_of("schedules", office))
    config = with_service(config, 26, lambda body: body.update(schedule="ny-office"))
    async with (
        open_memory_gateway(config, epoch=datetime(2026, 3, 7, 15, 0, tzinfo=UTC)) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await start(vera, service_id=26)
        assert (await vera.expect("out_of_hours"))["opens_at"] == "2026-03-09T13:00:00Z"
