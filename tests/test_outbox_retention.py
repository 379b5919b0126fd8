"""The outbox's retention job (``[server.outbox] retention_days``): it runs in virtual time and
deletes only items sent or parked longer ago than the retention, with their attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import trio
import trio.testing

from omni.clock import Clock
from omni.domain.conversation import Status
from omni.outbox import Retention
from omni.settings import OutboxSettings
from omni.store import OutboxAttempt, Write
from omni.store.memory import MemoryStore
from tests.support import make_conversation

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = 86_400.0


def test_the_setting_is_validated() -> None:
    assert OutboxSettings().retention_days == 30
    assert msgspec.convert({"retention_days": 7}, OutboxSettings).retention_days == 7
    assert msgspec.convert({"retention_days": None}, OutboxSettings).retention_days is None
    for bad in ({"retention_days": 0}, {"retention_days": "30"}, {"sweep_seconds": 0}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, OutboxSettings)


async def test_the_job_deletes_only_what_is_past_the_retention(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    clock = Clock(T0)
    await store.write(Write(conversation=make_conversation(1, Status.CLOSED, at=T0)))
    for key in ("sent", "parked", "pending", "late"):
        assert await store.enqueue("email", key, "c1", {"to": "x@example.com"}, T0)
    ids = {i.dedupe_key: i.id for i in await store.outbox_items()}
    attempt = OutboxAttempt(T0, 0.5, None, "550")
    await store.outbox_sent(ids["sent"], T0, OutboxAttempt(T0, 0.5))
    await store.outbox_failed(ids["parked"], T0, "550", attempt)
    await store.outbox_retry(ids["pending"], T0 + timedelta(days=365), "421", attempt)
    retention = Retention(
        store, clock.now, OutboxSettings(retention_days=30, sweep_seconds=3600), batch=1
    )

    def left() -> set[str]:
        return {i.dedupe_key for i in store._outbox.values()}

    async with trio.open_nursery() as nursery:
        await nursery.start(retention.run)
        await trio.sleep(29 * DAY - 60)
        # Three weeks in, a last item is parked; nothing is old enough yet.
        await store.outbox_failed(ids["late"], clock.now(), "550", attempt)
        assert left() == {"sent", "parked", "pending", "late"}
        # The first sweep after day 30 takes the two finished then, one batch at a time.
        await trio.sleep(1 * DAY + 2 * 3600)
        assert left() == {"pending", "late"}
        assert retention.deleted == 2
        assert await store.outbox_attempts([ids["sent"], ids["parked"]]) == {}
        # The late one goes 30 days after it was parked (day 59), the pending one never.
        await trio.sleep(28 * DAY)
        assert left() == {"pending", "late"}
        await trio.sleep(1 * DAY + 2 * 3600)
        assert left() == {"pending"}
        assert await store.outbox_attempts([ids["pending"]]) == {ids["pending"]: [attempt]}
        await trio.sleep(400 * DAY)
        assert left() == {"pending"}
        nursery.cancel_scope.cancel()


async def test_a_failing_store_does_not_stop_the_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Failing(MemoryStore):
        calls = 0

        async def outbox_purge(self, before: datetime, limit: int) -> int:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("down")
            return await super().outbox_purge(before, limit)

    store = Failing()
    retention = Retention(store, Clock(T0).now, OutboxSettings(sweep_seconds=60))
    async with trio.open_nursery() as nursery:
        await nursery.start(retention.run)
        await trio.sleep(130)
        nursery.cancel_scope.cancel()
    assert store.calls == 3


async def test_no_retention_keeps_everything(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    retention = Retention(store, Clock(T0).now, OutboxSettings(retention_days=None))
    assert await retention.sweep() == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(retention.run)  # returns at once: nothing to do
        await trio.sleep(DAY)
