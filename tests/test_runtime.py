"""The supervised-actor runtime (``omni.actors.runtime``) on its own.

Every test runs under ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``):
timers, ask timeouts and restart windows cost no wall time, and anything that would hang
instead trips its ``trio.fail_after`` guard at once (virtual time jumps straight to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from omni.actors.runtime import (
    Actor,
    ActorCrashed,
    ActorRef,
    ActorStatistics,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    Supervisor,
    SupervisorStatistics,
    Timer,
    Timers,
    open_supervisor,
)

GUARD = 30.0  # virtual seconds: under the autojump clock a hang fails immediately


class Boom(Exception):
    """An unexpected error: it crashes the actor."""


class Refused(Exception):
    """An expected refusal: listed in ``expected_errors``."""


@dataclass
class World:
    """What outlives an incarnation: shared by every actor the factory builds."""

    built: int = 0
    started: int = 0
    seen: list[tuple[int, Any]] = field(default_factory=list)
    crashes: list[BaseException] = field(default_factory=list)
    rejected: list[tuple[Any, Exception]] = field(default_factory=list)
    ticks: list[tuple[Any, float]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    gate: trio.Event = field(default_factory=trio.Event)


class Worker(Actor[Any]):
    """A scriptable actor. Messages are plain values or ``(op, *args)`` tuples:

    * ``("boom",)`` raises :class:`Boom` (crash); ``("refuse",)`` raises :class:`Refused`;
    * ``("hold",)`` waits for ``world.gate``; ``("hold-then-boom",)`` waits, then crashes;
    * ``("sleep", s)`` sleeps ``s`` seconds and returns ``"slept"``;
    * ``("arm", s, msg)`` calls ``call_later(s, msg)`` and returns its scope;
    * ``("tick", tag)`` records the tag and the time (a timer's message);
    * ``("stop",)`` calls :meth:`Actor.stop`;
    * ``("forever", tag)`` sleeps forever, recording ``tag`` in ``world.cancelled`` on the way out;
    * anything else is recorded; the reply is this incarnation's running count.
    """

    expected_errors = (Refused,)

    def __init__(self, world: World) -> None:
        world.built += 1
        self.world = world
        self.incarnation = world.built
        self.count = 0

    async def started(self) -> None:
        self.world.started += 1

    async def handle(self, message: Any) -> Any:
        op = message[0] if isinstance(message, tuple) else None
        if op == "boom":
            raise Boom(f"boom in incarnation {self.incarnation}")
        if op == "refuse":
            raise Refused("no thanks")
        if op == "hold":
            await self.world.gate.wait()
        elif op == "hold-then-boom":
            await self.world.gate.wait()
            raise Boom("boom after hold")
        elif op == "sleep":
            await trio.sleep(message[1])
            return "slept"
        elif op == "arm":
            return self.call_later(message[1], message[2])
        elif op == "tick":
            self.world.ticks.append((message[1], trio.current_time()))
            return None
        elif op == "stop":
            self.stop()
        elif op == "forever":
            try:
                await trio.sleep_forever()
            finally:
                self.world.cancelled.append(message[1])
        self.count += 1
        self.world.seen.append((self.incarnation, message))
        return self.count

    def on_rejected(self, message: Any, error: Exception) -> None:
        self.world.rejected.append((message, error))

    def on_crash(self, error: BaseException) -> None:
        self.world.crashes.append(error)


def worker(world: World) -> Any:
    return lambda: Worker(world)


def messages(world: World) -> list[Any]:
    return [m for _, m in world.seen]


# --------------------------------------------------------------------------- send / ordering


async def test_send_delivers_in_order_one_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[int] = []
    state = {"busy": False, "overlaps": 0}
    all_seen = trio.Event()

    class Ordered(Actor[int]):
        async def handle(self, message: int) -> None:
            if state["busy"]:
                state["overlaps"] += 1
            state["busy"] = True
            try:
                # Yield in the middle of the handler: others get to run, but not this actor.
                await trio.lowlevel.checkpoint()
                await trio.sleep(0.01 * (message % 3))
                await trio.lowlevel.checkpoint()
                seen.append(message)
                if len(seen) == 40:
                    all_seen.set()
            finally:
                state["busy"] = False

    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("ordered", Ordered, mailbox_size=4)

            async def producer(start: int) -> None:
                for i in range(start, start + 20):
                    await ref.send(i)

            # Two producers: each one's messages must keep their relative order.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(producer, 0)
                nursery.start_soon(producer, 100)
            await all_seen.wait()

    assert state["overlaps"] == 0
    assert [m for m in seen if m < 100] == list(range(20))
    assert [m for m in seen if m >= 100] == list(range(100, 120))
    assert len(seen) == 40


async def test_single_producer_order_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=8)
            for i in range(50):
                await ref.send(i)
            assert await ref.ask("last") == 51
            assert messages(world) == [*range(50), "last"]


# --------------------------------------------------------------------------- backpressure


async def test_send_nowait_raises_mailbox_full_and_send_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=2)
            await ref.send(("hold",))
            await trio.testing.wait_all_tasks_blocked()  # the actor is inside handle(hold)
            ref.send_nowait("a")
            ref.send_nowait("b")
            with pytest.raises(MailboxFull):
                ref.send_nowait("c")
            assert ref.statistics().mailbox_used == 2

            sent = trio.Event()

            async def blocked_sender() -> None:
                await ref.send("c")
                sent.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked_sender)
                await trio.testing.wait_all_tasks_blocked()
                assert not sent.is_set()  # backpressure: waits for room
                world.gate.set()
                await sent.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert messages(world) == [("hold",), "a", "b", "c"]
            assert ref.statistics().mailbox_used == 0


# --------------------------------------------------------------------------- ask


async def test_ask_returns_the_handlers_value(autojump_clock: trio.testing.MockClock) -> None:
    class Doubler(Actor[int]):
        async def handle(self, message: int) -> int:
            await trio.sleep(1)
            return message * 2

    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("d", Doubler)
            assert await ref.ask(21) == 42
            results: list[tuple[int, int]] = []
            async with trio.open_nursery() as nursery:
                for i in range(5):

                    async def one(i: int = i) -> None:
                        results.append((i, await ref.ask(i, timeout=20)))

                    nursery.start_soon(one)
            assert sorted(results) == [(i, 2 * i) for i in range(5)]


async def test_ask_times_out_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            start = trio.current_time()
            with pytest.raises(AskTimeout) as info:
                await ref.ask(("sleep", 10), timeout=1.5)
            assert isinstance(info.value, TimeoutError)
            assert trio.current_time() - start == pytest.approx(1.5)
            # The slow handler still finishes; the actor keeps working afterwards.
            assert await ref.ask("next", timeout=20) == 1  # ("sleep", s) does not count
            assert trio.current_time() - start == pytest.approx(10)
            assert world.built == 1 and ref.statistics().restarts == 0


async def test_expected_error_is_reraised_to_the_asker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            assert await ref.ask("a") == 1
            with pytest.raises(Refused, match="no thanks"):
                await ref.ask(("refuse",))
            assert await ref.ask("b") == 2  # same incarnation, state kept
            assert world.built == 1 and world.started == 1
            assert world.crashes == [] and world.rejected == []
            assert ref.statistics().restarts == 0 and sup.statistics().restarts == 0


async def test_expected_error_on_send_goes_to_on_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            await ref.send("a")
            await ref.send(("refuse",))
            await ref.send("b")
            assert await ref.ask("c") == 3
            assert len(world.rejected) == 1
            message, error = world.rejected[0]
            assert message == ("refuse",)
            assert isinstance(error, Refused)
            assert messages(world) == ["a", "b", "c"]
            assert world.built == 1 and world.crashes == []
            assert ref.statistics().restarts == 0


# --------------------------------------------------------------------------- crash and restart


async def test_crash_restarts_a_new_incarnation_on_the_same_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=8)
            # Queued before the actor has even started.
            ref.send_nowait("before")
            ref.send_nowait(("hold",))
            await trio.testing.wait_all_tasks_blocked()  # holding: the next ones queue up
            crashed: list[BaseException] = []

            async def ask_boom() -> None:
                with pytest.raises(ActorCrashed) as info:
                    await ref.ask(("boom",))
                crashed.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_boom)
                await trio.testing.wait_all_tasks_blocked()
                await ref.send("after-1")  # behind the crashing message
                assert ref.statistics().mailbox_used == 2
                world.gate.set()
            assert len(crashed) == 1

            # The same ref still works, and reaches the new incarnation.
            await ref.send("after-2")
            assert await ref.ask("after-3") == 3  # fresh state: after-1, after-2, after-3
            assert world.seen == [
                (1, "before"),
                (1, ("hold",)),
                (2, "after-1"),
                (2, "after-2"),
                (2, "after-3"),
            ]
            assert world.built == 2  # the factory built a second incarnation
            assert world.started == 2  # and started() ran again
            assert len(world.crashes) == 1
            error = world.crashes[0]
            assert type(error) is Boom  # the original exception, not an ExceptionGroup
            assert not isinstance(error, BaseExceptionGroup)
            assert str(error) == "boom in incarnation 1"
            assert ref.statistics().restarts == 1
            assert sup.statistics().restarts == 1
            assert sup.statistics().given_up == 0
            assert not ref.stopped
            assert "w" in sup


async def test_crash_on_plain_send_restarts_too(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            await ref.send("a")
            await ref.send(("boom",))
            await ref.send("b")
            assert await ref.ask("c") == 2
            assert world.seen == [(1, "a"), (2, "b"), (2, "c")]
            assert [type(e) for e in world.crashes] == [Boom]
            assert ref.statistics().restarts == 1


async def test_crash_in_started_restarts(autojump_clock: trio.testing.MockClock) -> None:
    built: list[int] = []

    class FlakyStart(Actor[str]):
        def __init__(self) -> None:
            built.append(len(built) + 1)
            self.incarnation = len(built)

        async def started(self) -> None:
            if self.incarnation == 1:
                raise Boom("cannot load state")

        async def handle(self, message: str) -> int:
            return self.incarnation

    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("f", FlakyStart)
            assert await ref.ask("who") == 2
            assert ref.statistics().restarts == 1


async def test_one_for_one_siblings_are_untouched(autojump_clock: trio.testing.MockClock) -> None:
    wx, wy = World(), World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            x = sup.spawn("x", worker(wx))
            y = sup.spawn("y", worker(wy))
            for _ in range(3):
                await y.send("tick")
            assert await x.ask("a") == 1
            with pytest.raises(ActorCrashed):
                await x.ask(("boom",))
            assert await x.ask("b") == 1  # x restarted with fresh state
            assert await y.ask("tock") == 4  # y kept counting: never restarted
            assert wy.built == 1 and wy.started == 1 and wy.crashes == []
            assert y.statistics().restarts == 0
            assert x.statistics().restarts == 1
            assert sup.statistics() == SupervisorStatistics("t", children=2, restarts=1, given_up=0)


# --------------------------------------------------------------------------- restart budget


async def test_restart_budget_exhausted_gives_up_on_that_child_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world, sibling_world = World(), World()
    gave_up: list[tuple[str, BaseException]] = []
    with trio.fail_after(GUARD):
        async with open_supervisor(
            "t", max_restarts=2, window=60, on_give_up=lambda n, e: gave_up.append((n, e))
        ) as sup:
            ref = sup.spawn("bad", worker(world), mailbox_size=8)
            sibling = sup.spawn("good", worker(sibling_world))
            assert await sibling.ask("s1") == 1

            for _ in range(2):
                with pytest.raises(ActorCrashed):
                    await ref.ask(("boom",))
                await trio.sleep(1)  # quick: well inside the window
            assert ref.statistics().restarts == 2
            assert gave_up == []

            # Third crash while asks and sends are queued behind it.
            pending: list[BaseException | Any] = []

            async def ask(message: Any) -> None:
                try:
                    pending.append(await ref.ask(message))
                except (ActorCrashed, ActorStopped) as exc:
                    pending.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, ("hold-then-boom",))
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(ask, "queued-1")
                await trio.testing.wait_all_tasks_blocked()
                ref.send_nowait("queued-plain")
                nursery.start_soon(ask, "queued-2")
                await trio.testing.wait_all_tasks_blocked()
                assert ref.statistics().mailbox_used == 3
                world.gate.set()

            assert len(pending) == 3
            assert all(type(p) is ActorCrashed for p in pending), pending
            assert "queued-1" not in messages(world) and "queued-2" not in messages(world)
            assert "queued-plain" not in messages(world)

            assert len(gave_up) == 1
            name, error = gave_up[0]
            assert name == "bad"
            assert type(error) is Boom and str(error) == "boom after hold"
            assert ref.stopped
            assert "bad" not in sup
            with pytest.raises(ActorStopped):
                await ref.send("late")
            with pytest.raises(ActorStopped):
                ref.send_nowait("late")
            with pytest.raises(ActorStopped):
                await ref.ask("late")
            assert world.built == 3  # no fourth incarnation

            # The sibling never noticed.
            assert await sibling.ask("s2") == 2
            assert sibling.statistics().restarts == 0 and not sibling.stopped
            assert sup.statistics() == SupervisorStatistics("t", children=1, restarts=2, given_up=1)


async def test_crashes_spread_beyond_the_window_never_exhaust_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    gave_up: list[tuple[str, BaseException]] = []
    with trio.fail_after(GUARD + 10 * 61):
        async with open_supervisor(
            "t", max_restarts=2, window=60, on_give_up=lambda n, e: gave_up.append((n, e))
        ) as sup:
            ref = sup.spawn("w", worker(world))
            for i in range(8):
                with pytest.raises(ActorCrashed):
                    await ref.ask(("boom",))
                assert await ref.ask("ping") == 1
                assert ref.statistics().restarts == i + 1
                await trio.sleep(61)
            assert gave_up == []
            assert not ref.stopped
            assert sup.statistics() == SupervisorStatistics("t", children=1, restarts=8, given_up=0)


async def test_budget_counts_only_crashes_inside_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Crashes at t=0, 40, 70: at t=70 the first one has left the window (two inside), so no
    give-up; a fourth at t=80 makes three inside [20, 80] and exhausts max_restarts=2."""
    world = World()
    gave_up: list[str] = []
    with trio.fail_after(GUARD + 100):
        async with open_supervisor(
            "t", max_restarts=2, window=60, on_give_up=lambda n, e: gave_up.append(n)
        ) as sup:
            ref = sup.spawn("w", worker(world))
            start = trio.current_time()
            for at in (0, 40, 70):
                await trio.sleep(start + at - trio.current_time())
                with pytest.raises(ActorCrashed):
                    await ref.ask(("boom",))
            assert gave_up == [] and not ref.stopped
            await trio.sleep(start + 80 - trio.current_time())
            with pytest.raises(ActorCrashed):
                await ref.ask(("boom",))
            await trio.testing.wait_all_tasks_blocked()
            assert gave_up == ["w"] and ref.stopped
            assert sup.statistics().given_up == 1


# --------------------------------------------------------------------------- timers


async def test_call_later_delivers_after_the_delay(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            start = trio.current_time()
            timer = await ref.ask(("arm", 5, ("tick", "a")))
            assert isinstance(timer, Timer) and timer.deadline == pytest.approx(start + 5)
            await trio.sleep(4.9)
            assert world.ticks == []
            await trio.sleep(0.2)
            assert world.ticks == [("a", pytest.approx(start + 5))]


async def test_call_later_scope_cancels_the_timer(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            scope = await ref.ask(("arm", 5, ("tick", "cancelled")))
            kept = await ref.ask(("arm", 6, ("tick", "kept")))
            assert kept is not scope
            await trio.sleep(1)
            scope.cancel()
            await trio.sleep(20)
            assert [tag for tag, _ in world.ticks] == ["kept"]


async def test_timers_due_at_one_instant_fire_in_the_order_they_were_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Trio wakes tasks sleeping until the same instant in an order of its own (by memory
    address, different in every process); the runtime's timers fire in the order they were set
    (one actor's mailbox shows it: it takes them first in, first out), whichever supervisor of
    the shared queue set them, so a simulation replays the same run."""
    world = World()
    timers = Timers()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timers.run)
            first = Supervisor("first", nursery, timers=timers)
            second = Supervisor("second", nursery, timers=timers)
            ref = first.spawn("w", worker(world))
            other = second.spawn("other", worker(world))
            for n in range(8):
                await ref.ask(("arm", 5, ("tick", f"t{n}")))
            await other.ask(("arm", 4, ("tick", "earlier")))
            await trio.sleep(6)
            assert [tag for tag, _ in world.ticks] == ["earlier", *(f"t{n}" for n in range(8))]
            nursery.cancel_scope.cancel()


async def test_timers_of_a_crashed_incarnation_do_not_fire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            await ref.ask(("arm", 5, ("tick", "old")))
            with pytest.raises(ActorCrashed):
                await ref.ask(("boom",))
            await ref.ask(("arm", 7, ("tick", "new")))  # the new incarnation's own timer
            await trio.sleep(20)
            assert [tag for tag, _ in world.ticks] == ["new"]
            assert ref.statistics().restarts == 1


# --------------------------------------------------------------------------- stop


async def test_close_drains_the_mailbox_then_stops(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=8)
            await ref.send(("hold",))
            await trio.testing.wait_all_tasks_blocked()
            await ref.send("a")
            await ref.send("b")
            ref.close()
            with pytest.raises(ActorStopped):
                await ref.send("late")
            with pytest.raises(ActorStopped):
                ref.send_nowait("late")
            with pytest.raises(ActorStopped):
                await ref.ask("late")
            assert not ref.stopped  # still draining
            world.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert messages(world) == [("hold",), "a", "b"]
            assert ref.stopped
            assert "w" not in sup
            assert sup.statistics().children == 0
            assert world.crashes == [] and ref.statistics().restarts == 0
            assert ref.statistics().stopped


async def test_a_closed_actor_that_crashes_while_draining_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closed (its group moved to another node, say), it crashes on what it still had: it
    stops, without a restart — a new incarnation would only fail on its closed neighbours."""
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=8)
            await ref.send(("hold",))
            await trio.testing.wait_all_tasks_blocked()
            await ref.send(("boom",))
            await ref.send("after")
            ref.close()
            world.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert ref.stopped and "w" not in sup
            assert [type(e) for e in world.crashes] == [Boom]
            assert ref.statistics().restarts == 0
            assert sup.statistics().restarts == 0 and sup.statistics().given_up == 0
            assert "after" not in messages(world)


async def test_actor_stop_handles_what_was_already_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=8)
            # All queued before the actor runs: "after" is already in the mailbox at stop().
            ref.send_nowait("before")
            ref.send_nowait(("stop",))
            ref.send_nowait("after")
            await trio.testing.wait_all_tasks_blocked()
            assert messages(world) == ["before", ("stop",), "after"]
            assert ref.stopped
            with pytest.raises(ActorStopped):
                await ref.send("late")
            with pytest.raises(ActorStopped):
                ref.send_nowait("late")
            with pytest.raises(ActorStopped):
                await ref.ask("late")
            # The name is free again.
            again = sup.spawn("w", worker(world))
            assert await again.ask("new") == 1


async def test_stop_with_a_pending_timer_does_not_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    with trio.fail_after(GUARD + 300):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world))
            await ref.ask(("arm", 100, ("tick", "never")))
            ref.close()
            await trio.testing.wait_all_tasks_blocked()
            assert ref.stopped
            assert trio.current_time() < 100  # the timer did not keep the actor alive
            await trio.sleep(200)
            assert world.ticks == []


# --------------------------------------------------------------------------- statistics


async def test_statistics(autojump_clock: trio.testing.MockClock) -> None:
    world, other = World(), World()
    with trio.fail_after(GUARD):
        async with open_supervisor("stats") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=4)
            sup.spawn("o", worker(other))
            assert ref.statistics() == ActorStatistics(
                name="w", mailbox_used=0, mailbox_size=4, handled=0, restarts=0, stopped=False
            )
            assert sup.statistics() == SupervisorStatistics(
                "stats", children=2, restarts=0, given_up=0
            )

            await ref.send(("hold",))
            await trio.testing.wait_all_tasks_blocked()
            await ref.send("a")
            await ref.send("b")
            stats = ref.statistics()
            assert (stats.mailbox_used, stats.handled) == (2, 0)

            world.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            stats = ref.statistics()
            assert (stats.mailbox_used, stats.handled) == (0, 3)

            with pytest.raises(ActorCrashed):
                await ref.ask(("boom",))
            assert await ref.ask("c") == 1
            stats = ref.statistics()
            assert stats.restarts == 1
            assert stats.handled == 4  # the crashing message is not counted
            assert sup.statistics() == SupervisorStatistics(
                "stats", children=2, restarts=1, given_up=0
            )

            ref.close()
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().stopped
            assert sup.statistics().children == 1


# --------------------------------------------------------------------------- supervisor exit


async def test_leaving_open_supervisor_cancels_all_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    refs: list[ActorRef[Any]] = []
    start = trio.current_time()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            busy_1 = sup.spawn("busy-1", worker(world))
            busy_2 = sup.spawn("busy-2", worker(world))
            idle = sup.spawn("idle", worker(world))
            timed = sup.spawn("timed", worker(world))
            refs = [busy_1, busy_2, idle, timed]
            await busy_1.send(("forever", "busy-1"))
            await busy_2.send(("forever", "busy-2"))
            await timed.ask(("arm", 1000, ("tick", "never")))
            await trio.testing.wait_all_tasks_blocked()
            assert world.cancelled == []
    # The block returned promptly (no child kept it open) and every child is gone.
    assert trio.current_time() - start < 1
    assert sorted(world.cancelled) == ["busy-1", "busy-2"]
    assert all(ref.stopped for ref in refs)
    assert world.crashes == []  # cancellation is not a crash
    await trio.sleep(2000)
    assert world.ticks == []


async def test_queued_ask_fails_promptly_when_the_supervisor_exits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An asker outside the supervisor whose message is still queued when the supervisor exits
    must be answered at once (ActorCrashed or ActorStopped, as for the message being handled or
    for a give-up), not left waiting for its whole timeout on a mailbox nobody reads."""
    world = World()
    outcome: list[BaseException] = []
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as outside:
            async with open_supervisor("t") as sup:
                ref = sup.spawn("w", worker(world))
                await ref.send(("hold",))
                await trio.testing.wait_all_tasks_blocked()

                async def asker() -> None:
                    try:
                        await ref.ask("queued", timeout=10)
                    except Exception as exc:
                        outcome.append(exc)

                outside.start_soon(asker)  # an asker that outlives the supervisor
                await trio.testing.wait_all_tasks_blocked()
                assert ref.statistics().mailbox_used == 1
            exited = trio.current_time()
        answered_after = trio.current_time() - exited
    assert ref.stopped
    assert len(outcome) == 1
    assert isinstance(outcome[0], ActorCrashed | ActorStopped), outcome
    assert answered_after == 0


async def test_refs_refuse_messages_once_the_supervisor_has_exited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A ref whose actor was cancelled with its supervisor reports ``stopped``; it must then
    refuse messages with ActorStopped like any other stopped actor, not swallow them."""
    world = World()
    with trio.fail_after(GUARD):
        async with open_supervisor("t") as sup:
            ref = sup.spawn("w", worker(world), mailbox_size=4)
            assert await ref.ask("a") == 1
        assert ref.stopped
        with pytest.raises(ActorStopped):
            ref.send_nowait("lost")
        with pytest.raises(ActorStopped):
            await ref.send("lost")
        start = trio.current_time()
        with pytest.raises(ActorStopped):
            await ref.ask("lost", timeout=5)
        assert trio.current_time() == start
