"""One contract, two stores, for running more than one node (issue 18, docs/scale-out.md): the
node registry, leases with fencing epochs, outbox claims, notices, and configuration changes'
notices and versions.

Lifetimes run on the store's clock — PostgreSQL's ``now()``, or trio's clock for the memory
store — so these tests wait real time, in fractions of a second; every wait is bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.lowlevel

from omni.domain.conversation import Conversation, Status
from omni.store import (
    CONFIG_CHANNEL,
    ConfigChange,
    Fence,
    FencedOut,
    NodeNameInUse,
    Notice,
    OutboxEntry,
    RelayItem,
    Resync,
    StaleConfiguration,
    Store,
    StoredEvent,
    StoreError,
    Write,
    relay_channel,
)
from omni.store.notifications import Inbox
from tests.support import make_conversation

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
#: A lifetime that runs out during a test, and a wait long enough for it to have.
SHORT = 0.3
PAST_SHORT = 0.45
LONG = 60.0


def event(conv: Conversation, seq: int) -> StoredEvent:
    frame = f'{{"type":"message","conversation_id":"{conv.id}","seq":{seq}}}'
    return StoredEvent(conv.id, seq, "message", "both", frame)


# -- nodes ----------------------------------------------------------------------------------------


async def test_a_node_registers_beats_and_is_dead_once_its_heartbeat_is_old(store: Store) -> None:
    a = await store.register_node("a", expiry=SHORT)
    b = await store.register_node("b", expiry=SHORT)
    assert (a.name, a.incarnation, a.alive) == ("a", 1, True)
    assert [(n.name, n.alive) for n in await store.nodes(SHORT)] == [("a", True), ("b", True)]
    # b keeps beating, a stops.
    for _ in range(3):
        await trio.sleep(SHORT / 2)
        assert await store.node_heartbeat("b", b.incarnation)
    assert [(n.name, n.alive) for n in await store.nodes(SHORT)] == [("a", False), ("b", True)]
    # A longer expiry still counts a alive.
    assert all(n.alive for n in await store.nodes(LONG))


async def test_a_live_nodes_name_is_refused_and_a_dead_ones_is_taken_over(store: Store) -> None:
    first = await store.register_node("a", expiry=SHORT)
    with pytest.raises(NodeNameInUse):
        await store.register_node("a", expiry=SHORT)
    await trio.sleep(PAST_SHORT)
    second = await store.register_node("a", expiry=SHORT)
    assert second.incarnation == first.incarnation + 1
    # The dead start learns it is no longer the node; the new one beats.
    assert not await store.node_heartbeat("a", first.incarnation)
    assert await store.node_heartbeat("a", second.incarnation)
    # A leave by the old incarnation changes nothing.
    await store.leave_node("a", first.incarnation)
    assert [n.incarnation for n in await store.nodes(LONG)] == [second.incarnation]


async def test_a_node_that_leaves_gives_up_its_leases(store: Store) -> None:
    node = await store.register_node("a", expiry=LONG)
    lease = await store.acquire_lease("group:1", "a", LONG)
    assert lease is not None
    await store.leave_node("a", node.incarnation)
    assert await store.nodes(LONG) == []
    [released] = await store.leases()
    assert (released.owner, released.held, released.epoch) == (None, False, lease.epoch)
    # Free at once for another node, in a later epoch.
    taken = await store.acquire_lease("group:1", "b", LONG)
    assert taken is not None and taken.epoch == lease.epoch + 1


async def test_a_restarted_node_holds_nothing_its_dead_start_held(store: Store) -> None:
    await store.register_node("a", expiry=SHORT)
    assert await store.acquire_lease("group:1", "a", LONG) is not None
    await trio.sleep(PAST_SHORT)  # the node died: its heartbeat is old, its lease is not
    await store.register_node("a", expiry=SHORT)
    [lease] = await store.leases()
    assert lease.owner is None
    assert await store.acquire_lease("group:1", "b", LONG) is not None


# -- leases ---------------------------------------------------------------------------------------


async def test_a_lease_has_one_owner_until_it_runs_out(store: Store) -> None:
    lease = await store.acquire_lease("group:1", "a", SHORT)
    assert lease is not None
    assert (lease.resource, lease.owner, lease.epoch, lease.held) == ("group:1", "a", 1, True)
    assert 0 < lease.remaining <= SHORT
    assert lease.expires_at > lease.acquired_at
    # Held: nobody acquires it, its owner neither (an owner renews).
    assert await store.acquire_lease("group:1", "b", SHORT) is None
    assert await store.acquire_lease("group:1", "a", SHORT) is None
    await trio.sleep(PAST_SHORT)
    [expired] = await store.leases()
    assert (expired.owner, expired.held, expired.remaining) == ("a", False, 0.0)
    # Run out: the next owner gets a later epoch; the former one cannot renew.
    taken = await store.acquire_lease("group:1", "b", LONG)
    assert taken is not None and (taken.owner, taken.epoch) == ("b", 2)
    assert await store.renew_lease("group:1", "a", 1, LONG) is None


async def test_a_nodes_leases_are_renewed_in_one_call(store: Store) -> None:
    one = await store.acquire_lease("group:1", "a", SHORT)
    two = await store.acquire_lease("group:2", "a", SHORT)
    other = await store.acquire_lease("group:3", "b", SHORT)
    assert one is not None and two is not None and other is not None
    assert await store.renew_leases("a", [], LONG) == []
    renewed = await store.renew_leases(
        "a", [two.fence, one.fence, other.fence, Fence("group:4", 1)], LONG
    )
    assert [(x.resource, x.epoch) for x in renewed] == [("group:1", 1), ("group:2", 1)]
    assert all(x.remaining > SHORT for x in renewed)
    await trio.sleep(PAST_SHORT)
    # b's ran out: not renewed by anyone's call, its own neither.
    assert await store.renew_leases("b", [other.fence], LONG) == []
    assert [x.resource for x in await store.renew_leases("a", [one.fence], LONG)] == ["group:1"]


async def test_renewing_needs_the_owner_its_epoch_and_time_left(store: Store) -> None:
    lease = await store.acquire_lease("conversation:c1", "a", SHORT)
    assert lease is not None
    assert await store.renew_lease("conversation:c1", "b", lease.epoch, LONG) is None
    assert await store.renew_lease("conversation:c1", "a", lease.epoch + 1, LONG) is None
    assert await store.renew_lease("conversation:c2", "a", lease.epoch, LONG) is None
    await trio.sleep(SHORT / 2)
    renewed = await store.renew_lease("conversation:c1", "a", lease.epoch, SHORT)
    assert renewed is not None and renewed.epoch == lease.epoch
    assert renewed.expires_at > lease.expires_at
    await trio.sleep(PAST_SHORT)
    # Run out, even though nobody took it: a tenure that ended is over (acquire again).
    assert await store.renew_lease("conversation:c1", "a", lease.epoch, LONG) is None
    again = await store.acquire_lease("conversation:c1", "a", LONG)
    assert again is not None and again.epoch == lease.epoch + 1


async def test_a_released_lease_keeps_its_epoch(store: Store) -> None:
    lease = await store.acquire_lease("group:7", "a", LONG)
    assert lease is not None
    assert not await store.release_lease("group:7", "b", lease.epoch)
    assert not await store.release_lease("group:7", "a", lease.epoch + 1)
    assert await store.release_lease("group:7", "a", lease.epoch)
    assert not await store.release_lease("group:7", "a", lease.epoch)  # once
    [released] = await store.leases("group:")
    assert (released.owner, released.epoch, released.held) == (None, lease.epoch, False)
    taken = await store.acquire_lease("group:7", "b", LONG)
    assert taken is not None and taken.epoch == lease.epoch + 1


async def test_leases_are_listed_by_prefix(store: Store) -> None:
    for resource in ("group:2", "conversation:c1", "group:1"):
        assert await store.acquire_lease(resource, "a", LONG) is not None
    assert [x.resource for x in await store.leases("group:")] == ["group:1", "group:2"]
    assert [x.resource for x in await store.leases()] == ["conversation:c1", "group:1", "group:2"]


async def test_racing_acquisitions_make_one_owner(store: Store) -> None:
    won: list[str] = []

    async def race(name: str) -> None:
        if await store.acquire_lease("group:1", name, LONG) is not None:
            won.append(name)

    async with trio.open_nursery() as nursery:
        for n in range(12):
            nursery.start_soon(race, f"node-{n}")
    assert len(won) == 1
    [lease] = await store.leases()
    assert (lease.owner, lease.epoch) == (won[0], 1)


async def test_lifetimes_must_be_positive(store: Store) -> None:
    for seconds in (0.0, -1.0):
        with pytest.raises(ValueError):
            await store.acquire_lease("group:1", "a", seconds)


# -- fencing --------------------------------------------------------------------------------------


async def test_a_fenced_write_commits_only_while_its_lease_is_current(store: Store) -> None:
    conv = make_conversation(1, Status.QUEUED)
    lease = await store.acquire_lease("conversation:c1", "a", SHORT)
    assert lease is not None
    await store.write(Write(conversation=conv, events=[event(conv, 1)], fence=lease.fence))
    # Another node takes the conversation once the lease ran out: a's writes are refused.
    await trio.sleep(PAST_SHORT)
    taken = await store.acquire_lease("conversation:c1", "b", LONG)
    assert taken is not None
    conv.status = Status.ACTIVE
    with pytest.raises(FencedOut):
        await store.write(Write(conversation=conv, events=[event(conv, 2)], fence=lease.fence))
    loaded = await store.load_conversation("c1")
    assert loaded is not None and loaded.status is Status.QUEUED and loaded.last_seq == 1
    # The new owner writes.
    await store.write(Write(conversation=conv, events=[event(conv, 2)], fence=taken.fence))
    assert [e.seq for e in await store.events_after("c1", 0)] == [1, 2]


async def test_a_lease_that_ran_out_or_was_released_fences_its_writes(store: Store) -> None:
    conv = make_conversation(1)
    await store.write(Write(conversation=conv))
    lease = await store.acquire_lease("conversation:c1", "a", SHORT)
    assert lease is not None
    await trio.sleep(PAST_SHORT)  # nobody took it, but it ran out
    with pytest.raises(FencedOut):
        await store.write(Write(events=[event(conv, 1)], fence=lease.fence))
    again = await store.acquire_lease("conversation:c1", "a", LONG)
    assert again is not None
    assert await store.release_lease("conversation:c1", "a", again.epoch)
    with pytest.raises(FencedOut):
        await store.write(Write(events=[event(conv, 1)], fence=again.fence))
    # Never leased at all.
    with pytest.raises(FencedOut):
        await store.write(Write(events=[event(conv, 1)], fence=Fence("conversation:c9", 1)))
    assert await store.events_after("c1", 0) == []


async def test_a_fenced_out_write_does_not_fail_its_neighbours(store: Store) -> None:
    convs = [make_conversation(n) for n in range(1, 9)]
    leases = []
    for conv in convs:
        lease = await store.acquire_lease(f"conversation:{conv.id}", "a", LONG)
        assert lease is not None
        leases.append(lease)
        await store.write(Write(conversation=conv, fence=lease.fence))
    # c3's lease is gone.
    assert await store.release_lease("conversation:c3", "a", leases[2].epoch)
    outcomes: dict[str, str] = {}

    async def write(conv: Conversation, fence: Fence) -> None:
        try:
            await store.write(Write(events=[event(conv, 1)], fence=fence))
        except FencedOut:
            outcomes[conv.id] = "fenced"
        else:
            outcomes[conv.id] = "stored"

    async with trio.open_nursery() as nursery:  # together: one batch in PostgreSQL
        for conv, lease in zip(convs, leases, strict=True):
            nursery.start_soon(write, conv, lease.fence)
    assert outcomes == {c.id: "fenced" if c.id == "c3" else "stored" for c in convs}
    for conv in convs:
        stored = [e.seq for e in await store.events_after(conv.id, 0)]
        assert stored == ([] if conv.id == "c3" else [1])


# -- outbox claims --------------------------------------------------------------------------------


def webhook(conv: Conversation, sub: str, n: int) -> OutboxEntry:
    return OutboxEntry(
        "webhook", f"webhook:{sub}:{conv.id}:{n}", conv.id, {"n": n}, NOW, sub, f'{{"n":{n}}}'
    )


async def test_two_claimants_never_hold_the_same_item_and_order_holds(store: Store) -> None:
    a, b = make_conversation(1), make_conversation(2)
    await store.write(Write(conversation=a, outbox=[webhook(a, "crm", 1), webhook(a, "crm", 2)]))
    await store.write(Write(conversation=b, outbox=[webhook(b, "crm", 1)]))
    ids = {i.dedupe_key: i.id for i in await store.outbox_items()}
    a1, a2, b1 = ids["webhook:crm:c1:1"], ids["webhook:crm:c1:2"], ids["webhook:crm:c2:1"]
    first = await store.outbox_claim("node-a", NOW, 1, LONG)
    assert [i.id for i in first] == [a1]
    # node-b gets b1, not a1 (claimed) nor a2 (behind a1, which is still pending).
    assert [i.id for i in await store.outbox_claim("node-b", NOW, 10, LONG)] == [b1]
    assert await store.outbox_claim("node-b", NOW, 10, LONG) == []
    # Claimed items are still pending (the backlog, the API).
    assert await store.outbox_backlog() == {"webhook": 3}
    # a1 is sent: a2 is due, for whoever claims first.
    await store.outbox_sent(a1, NOW)
    assert [i.id for i in await store.outbox_claim("node-b", NOW, 10, LONG)] == [a2]


async def test_a_dead_claimants_claim_runs_out(store: Store) -> None:
    conv = make_conversation(1)
    await store.write(Write(conversation=conv, outbox=[webhook(conv, "crm", 1)]))
    [item] = await store.outbox_claim("node-a", NOW, 10, SHORT)
    assert await store.outbox_claim("node-b", NOW, 10, LONG) == []
    await trio.sleep(PAST_SHORT)  # node-a died mid-delivery
    [again] = await store.outbox_claim("node-b", NOW, 10, LONG)
    assert again.id == item.id
    # A retry ends the claim: due again later, for anyone.
    later = NOW + timedelta(seconds=5)
    await store.outbox_retry(item.id, later, "HTTP 503")
    assert await store.outbox_claim("node-a", NOW, 10, LONG) == []
    assert [i.id for i in await store.outbox_claim("node-a", later, 10, LONG)] == [item.id]


async def test_claims_of_a_node_that_leaves_are_free_at_once(store: Store) -> None:
    conv = make_conversation(1)
    await store.write(Write(conversation=conv, outbox=[webhook(conv, "crm", 1)]))
    node = await store.register_node("node-a", LONG)
    assert len(await store.outbox_claim("node-a", NOW, 10, LONG)) == 1
    await store.leave_node("node-a", node.incarnation)
    assert len(await store.outbox_claim("node-b", NOW, 10, LONG)) == 1


async def test_concurrent_workers_deliver_each_item_once_in_order(store: Store) -> None:
    """Two workers claim, "deliver" and record at once over many conversations: every item is
    delivered exactly once, and each conversation's deliveries in the order queued."""
    convs = [make_conversation(n) for n in range(1, 7)]
    for conv in convs:
        await store.write(
            Write(conversation=conv, outbox=[webhook(conv, "crm", k) for k in range(1, 6)])
        )
    delivered: list[tuple[str, int]] = []

    async def worker(name: str) -> None:
        idle = 0
        while idle < 3:
            items = await store.outbox_claim(name, NOW, 3, LONG)
            if not items:
                idle += 1
                await trio.sleep(0.02)
                continue
            idle = 0
            for item in items:
                assert item.conversation_id is not None
                delivered.append((item.conversation_id, item.payload["n"]))
                await trio.lowlevel.checkpoint()  # let the other worker in
                await store.outbox_sent(item.id, NOW)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "node-a")
            nursery.start_soon(worker, "node-b")
    assert sorted(delivered) == sorted((c.id, k) for c in convs for k in range(1, 6))
    for conv in convs:
        assert [k for c, k in delivered if c == conv.id] == [1, 2, 3, 4, 5]
    assert await store.outbox_backlog() == {}


# -- notices --------------------------------------------------------------------------------------


async def test_a_committed_writes_notices_arrive_and_a_failed_ones_never(store: Store) -> None:
    conv = make_conversation(1)
    async with store.listen(["omni_test"]) as notices:
        await store.write(
            Write(
                conversation=conv,
                events=[event(conv, 1)],
                notices=[Notice("omni_test", "conversation:c1:1")],
            )
        )
        with trio.fail_after(5):
            assert await notices.receive() == Notice("omni_test", "conversation:c1:1")
        # A write that fails (its event is not after #1) notifies nothing…
        with pytest.raises(StoreError):
            await store.write(
                Write(events=[event(conv, 1)], notices=[Notice("omni_test", "failed")])
            )
        # … nor one fenced out; a notice on another channel does not reach this listener.
        with pytest.raises(FencedOut):
            await store.write(
                Write(
                    events=[event(conv, 2)],
                    notices=[Notice("omni_test", "fenced")],
                    fence=Fence("conversation:c1", 1),
                )
            )
        await store.notify("omni_other", "elsewhere")
        await store.notify("omni_test", "after")
        with trio.fail_after(5):
            assert await notices.receive() == Notice("omni_test", "after")


async def test_relayed_items_are_stored_notified_and_taken_once_in_order(store: Store) -> None:
    """The relay between nodes (omni/gateway/relay.py): items for a node are stored and its
    channel notified (one notice per socket, the socket's id) at once; taking them removes them,
    by ``n``, only that socket's and direction's; what waits is listed; the rest is forgotten
    with its socket, or swept when old."""
    async with store.listen([relay_channel("b")]) as notices:
        await store.relay_send(
            "b",
            [
                RelayItem("s1", "up", 2, "frame", "second"),
                RelayItem("s1", "up", 1, "open", "{}"),
                RelayItem("s2", "up", 1, "open", "{}"),
            ],
        )
        with trio.fail_after(5):
            got = {(await notices.receive()), (await notices.receive())}
        assert got == {Notice(relay_channel("b"), "s1"), Notice(relay_channel("b"), "s2")}
    await store.relay_send("a", [RelayItem("s1", "down", 1, "frame", "back")])
    assert await store.relay_waiting("b") == ["s1", "s2"]
    taken = await store.relay_take("b", "s1", "up")
    assert [(i.n, i.kind, i.body) for i in taken] == [(1, "open", "{}"), (2, "frame", "second")]
    assert await store.relay_take("b", "s1", "up") == []
    assert await store.relay_waiting("b") == ["s2"]
    await store.relay_forget("s1")
    assert await store.relay_take("a", "s1", "down") == []
    await trio.sleep(0.3)
    assert await store.relay_sweep(0.2) == 1  # s2's open
    assert await store.relay_waiting("b") == []
    # A channel name has at most 63 bytes, whatever the node's name.
    assert len(relay_channel("n" * 63).encode()) <= 63


async def test_a_config_change_commits_a_notice_and_a_refused_one_none(store: Store) -> None:
    """Every stored configuration change notifies ``omni_config`` (the other nodes read the
    configuration again); a change the store refuses notifies nothing."""
    group = {"id": 1, "name": "Support"}
    async with store.listen([CONFIG_CHANNEL]) as notices:
        created = await store.change_config(ConfigChange("groups", "1", group, None, "a", NOW))
        with trio.fail_after(5):
            assert await notices.receive() == Notice(CONFIG_CHANNEL, f"groups:{created.id}")
        # Refused: made against an older version; not storable as JSON.
        with pytest.raises(StaleConfiguration):
            await store.change_config(
                ConfigChange("groups", "2", {"id": 2}, None, "a", NOW), created.id - 1
            )
        with pytest.raises(Exception):  # noqa: B017 - each store has its own error for this
            await store.change_config(ConfigChange("groups", "3", {"x": object()}, None, "a", NOW))
        deleted = await store.change_config(ConfigChange("groups", "1", None, group, "a", NOW))
        with trio.fail_after(5):
            assert await notices.receive() == Notice(CONFIG_CHANNEL, f"groups:{deleted.id}")


async def test_a_config_change_against_an_old_version_is_refused(store: Store) -> None:
    """The configuration's version is its last change's audit entry; a change that expects
    another is refused whole (another node changed the configuration since)."""
    assert await store.config_version() == 0
    first = await store.change_config(
        ConfigChange("groups", "1", {"id": 1, "name": "One"}, None, "a", NOW), 0
    )
    assert await store.config_version() == first.id
    # An action audited without a configuration change is no new version.
    await store.record_action(NOW, "boss", "assign", "conversations", "c1", {"operator_id": 1})
    assert await store.config_version() == first.id
    with pytest.raises(StaleConfiguration):
        await store.change_config(
            ConfigChange("groups", "2", {"id": 2, "name": "Two"}, None, "b", NOW), 0
        )
    assert [(i.kind, i.key) for i in await store.config_items()] == [("groups", "1")]
    assert [e.id for e in await store.audit_entries(10) if e.kind == "groups"] == [first.id]
    second = await store.change_config(
        ConfigChange("groups", "2", {"id": 2, "name": "Two"}, None, "b", NOW), first.id
    )
    assert await store.config_version() == second.id > first.id
    # Without an expected version (an import, the bootstrap): never refused.
    third = await store.change_config(ConfigChange("groups", "3", {"id": 3}, None, "c", NOW))
    assert await store.config_version() == third.id


def test_notices_are_ids_within_postgresqls_limits() -> None:
    Notice("omni", "x" * 7999)
    for channel, payload in (("omni", "x" * 8000), ("", "x"), ("c" * 64, "x"), ("omni", "\x00")):
        with pytest.raises(ValueError):
            Notice(channel, payload)


async def test_a_reader_that_falls_behind_gets_a_resync_instead_of_a_gap() -> None:
    inbox = Inbox(buffer=3)
    for n in range(3):
        inbox.put(Notice("omni", str(n)))
    inbox.put(Notice("omni", "3"))  # full: the unread ones go, a resync takes their place
    inbox.put(Notice("omni", "4"))
    assert await inbox.receive() == Resync("overflow")
    assert await inbox.receive() == Notice("omni", "4")
    stats = inbox.statistics()
    assert (stats.dropped, stats.resyncs, stats.delivered) == (3, 1, 1)
