"""What the operator console needs of the server (issue 14): pause reasons (status, welcome,
reports), transfer targets, the live out-of-hours folder and the visitor panel's data. The real
gateway, hub and actors run under ``MockClock(autojump_threshold=0)`` over in-memory websockets
(the metric's label: tests/test_e2e_tcp.py, over real sockets)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import trio
import trio.testing

from admin_api.app import create_app
from omni.actors.configuration import Configuration
from omni.actors.pauses import PauseRecorder
from omni.clock import Clock
from omni.domain.model import DEFAULT_PAUSE_REASONS, Parameters, Role
from omni.domain.reports import Pause, paused_time
from omni.metrics import make_registry
from omni.store import StoreError
from omni.store.memory import MemoryStore
from tests.support import (
    TOK_ALICE,
    TOK_BRUNO,
    TOK_CARLA,
    api_token,
    connect_memory,
    login,
    make_config,
    open_memory_gateway,
    start,
    start_with,
    with_items,
    with_service,
)
from tests.test_identity import EPOCH, SECRET, signed

DEFAULT_REASONS = [{"id": r.id, "label": r.label} for r in DEFAULT_PAUSE_REASONS]

# -- pause reasons --------------------------------------------------------------------------------


async def test_a_pause_gives_a_reason_and_a_reconnect_keeps_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        async with connect_memory(gw, "/ws/operator") as alice:
            welcome = await login(alice, TOK_ALICE, available=False)
            assert welcome["operator"]["status"] == "paused"
            assert welcome["operator"]["reason"] is None  # a fresh sign-in gives none
            assert welcome["pause_reasons"] == DEFAULT_REASONS
            await alice.send("status", status="available")
            await alice.expect("status", status="available", reason=None)
            conversation_id = (await start(vera))["conversation_id"]
            await alice.expect("offer")
            await alice.send("accept", conversation_id=conversation_id)
            await alice.until("assigned")
            await alice.send("status", status="paused", reason="lunch")
            assert await alice.until("status") == {
                "type": "status",
                "status": "paused",
                "reason": "lunch",
            }
            assert gw.hub.roster.get(1).pause_reason == "lunch"
            # Without a reason: unspecified.
            await alice.send("status", status="paused")
            await alice.expect("status", status="paused", reason=None)
            await alice.send("status", status="paused", reason="training")
            await alice.expect("status", status="paused", reason="training")
        # Gone, she is offline; back within the grace period, paused for the same reason.
        assert gw.hub.roster.get(1).presence.value == "offline"
        assert gw.hub.roster.get(1).pause_reason is None
        await trio.sleep(10)
        async with connect_memory(gw, "/ws/operator") as alice:
            welcome = await login(alice, TOK_ALICE, available=False)
            assert welcome["operator"] == {
                "id": 1,
                "name": "Alice",
                "capacity": 2,
                "status": "paused",
                "reason": "training",
            }
            assert [c["id"] for c in welcome["conversations"]] == [conversation_id]


async def test_an_unknown_pause_reason_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as alice,
    ):
        await login(alice, TOK_ALICE)
        await alice.send("status", status="paused", reason="nap")
        error = await alice.expect("error")
        assert error["code"] == "unknown_pause_reason"
        await alice.send("status", status="available", reason="lunch")
        assert (await alice.expect("error"))["code"] == "invalid_frame"
        await alice.send("status", status="paused", reason="")
        assert (await alice.expect("error"))["code"] == "invalid_frame"
        # Nothing changed.
        state = gw.hub.roster.get(1)
        assert (state.presence.value, state.pause_reason) == ("available", None)


async def test_the_pause_reasons_are_the_parameters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admin = "admin-console-token-0123456789"
    cfg = with_items(make_config(), api_token("root", admin, Role.ADMIN))
    async with (
        open_memory_gateway(cfg) as gw,
        connect_memory(gw, "/ws/operator") as alice,
    ):
        hub = gw.hub
        app = create_app(
            hub, make_registry(hub), Configuration(hub, hub.store, cfg.items, hub.clock.now)
        )
        http = app.test_client()
        auth = {"Authorization": f"Bearer {admin}"}
        body = await (await http.get("/api/v1/parameters", headers=auth)).get_json()
        assert body["pause_reasons"] == DEFAULT_REASONS
        twice = [{"id": "x", "label": "X"}, {"id": "x", "label": "Y"}]
        r = await http.put(
            "/api/v1/parameters", headers=auth, json={**body, "pause_reasons": twice}
        )
        assert r.status_code == 422
        assert "used twice" in (await r.get_json())["detail"]
        many = [{"id": f"r{n}", "label": f"R{n}"} for n in range(21)]
        r = await http.put("/api/v1/parameters", headers=auth, json={**body, "pause_reasons": many})
        assert r.status_code == 422
        bad = [{"id": "a b", "label": "A"}]
        r = await http.put("/api/v1/parameters", headers=auth, json={**body, "pause_reasons": bad})
        assert r.status_code == 422
        mine = [{"id": "meeting", "label": "Reunião"}]
        r = await http.put("/api/v1/parameters", headers=auth, json={**body, "pause_reasons": mine})
        assert r.status_code == 200, await r.get_json()
        # Live: the next sign-in lists them, the next `status` checks against them.
        assert (await login(alice, TOK_ALICE))["pause_reasons"] == mine
        await alice.send("status", status="paused", reason="lunch")
        assert (await alice.expect("error"))["code"] == "unknown_pause_reason"
        await alice.send("status", status="paused", reason="meeting")
        await alice.expect("status", reason="meeting")


def test_pause_reasons_are_checked() -> None:
    with pytest.raises(msgspec.ValidationError, match="used twice"):
        msgspec.convert({"pause_reasons": [{"id": "a", "label": "A"}] * 2}, Parameters)
    with pytest.raises(msgspec.ValidationError, match="length"):
        msgspec.convert({"pause_reasons": [{"id": "a" * 65, "label": "A"}]}, Parameters)
    assert msgspec.convert({"pause_reasons": []}, Parameters).pause_reasons == ()


async def test_the_metric_counts_paused_operators_by_configured_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/operator") as bruno,
    ):
        await login(alice, TOK_ALICE, available=False)
        await login(bruno, TOK_BRUNO, available=False)
        await alice.send("status", status="paused", reason="lunch")
        await alice.until("status")
        await bruno.send("status", status="paused", reason="break")
        await bruno.until("status")
        # The list changes: Bruno's reason is gone, and counts as none given.
        hub = gw.hub
        lunch_only = msgspec.structs.replace(
            hub.directory.parameters, pause_reasons=DEFAULT_PAUSE_REASONS[:1]
        )
        hub.apply_directory(dataclasses.replace(hub.directory, parameters=lunch_only))
        text = generate_latest(make_registry(hub)).decode()
    samples = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "omni_operators"
        for s in family.samples
    }
    assert samples == {
        (("presence", "available"), ("reason", "")): 0,
        (("presence", "offline"), ("reason", "")): 1,
        (("presence", "paused"), ("reason", "")): 1,
        (("presence", "paused"), ("reason", "lunch")): 1,
    }


async def test_the_report_gives_paused_time_per_operator_and_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = "supervisor-console-token-0123"
    cfg = with_items(make_config(), api_token("boss", supervisor, Role.SUPERVISOR))
    async with open_memory_gateway(cfg) as gw:
        hub = gw.hub
        app = create_app(
            hub, make_registry(hub), Configuration(hub, hub.store, cfg.items, hub.clock.now)
        )
        t0 = hub.clock.now()
        async with connect_memory(gw, "/ws/operator") as alice:
            await login(alice, TOK_ALICE, available=False)  # paused, no reason: 5 s
            await trio.sleep(5)
            await alice.send("status", status="paused", reason="lunch")
            await alice.until("status")
            await trio.sleep(60)
            await alice.send("status", status="paused", reason="break")
            await alice.until("status")
            await trio.sleep(30)
            await alice.send("status", status="available")
            await alice.until("status")
            await trio.sleep(100)
            await alice.send("status", status="paused", reason="lunch")
            await alice.until("status")
            await trio.sleep(20)  # still paused when the report is asked for
            http = app.test_client()
            auth = {"Authorization": f"Bearer {supervisor}"}
            r = await http.get("/api/v1/reports", headers=auth)
            assert r.status_code == 200
            assert (await r.get_json())["operators"] == [
                {
                    "operator_id": 1,
                    "paused_seconds": 115.0,
                    "paused": [
                        {"reason": "break", "seconds": 30.0},
                        {"reason": "lunch", "seconds": 80.0},
                        {"reason": None, "seconds": 5.0},
                    ],
                }
            ]
            # Only what falls inside the period counts.
            start = (t0 + timedelta(seconds=35)).isoformat().replace("+00:00", "Z")
            end = (t0 + timedelta(seconds=80)).isoformat().replace("+00:00", "Z")
            r = await http.get(f"/api/v1/reports?from={start}&to={end}", headers=auth)
            assert (await r.get_json())["operators"] == [
                {
                    "operator_id": 1,
                    "paused_seconds": 45.0,
                    "paused": [
                        {"reason": "break", "seconds": 15.0},
                        {"reason": "lunch", "seconds": 30.0},
                    ],
                }
            ]


def test_paused_time_clips_pauses_to_the_period() -> None:
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    pauses = [
        Pause(1, "lunch", at(0), at(100)),
        Pause(2, None, at(5), at(50)),
        Pause(2, "break", at(50)),
    ]
    assert paused_time(pauses, at(20), at(60), now=at(70)) == {
        1: {"lunch": 40.0},
        2: {None: 30.0, "break": 10.0},
    }
    assert paused_time(pauses, at(200), at(300), now=at(250)) == {2: {"break": 50.0}}


async def test_paused_time_survives_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    supervisor = "supervisor-console-token-0123"
    cfg = with_items(make_config(), api_token("boss", supervisor, Role.SUPERVISOR))
    store = MemoryStore()
    async with open_memory_gateway(cfg, store=store) as gw:
        t0 = gw.hub.clock.now()
        async with connect_memory(gw, "/ws/operator") as alice:
            await login(alice, TOK_ALICE, available=False)  # paused, no reason: 5 s
            await trio.sleep(5)
            await alice.send("status", status="paused", reason="lunch")
            await alice.until("status")
            await trio.sleep(60)
            await alice.send("status", status="available")
            await alice.until("status")
            await trio.sleep(10)
            await alice.send("status", status="paused", reason="break")
            await alice.until("status")
            await trio.sleep(30)
        # The server stops while she is still signed in and paused: the pause ends there.
        stopped = gw.hub.clock.now()
    await trio.sleep(3600)  # the server is down for an hour
    async with open_memory_gateway(cfg, store=store, epoch=stopped + timedelta(hours=1)) as gw:
        hub = gw.hub
        app = create_app(
            hub, make_registry(hub), Configuration(hub, hub.store, cfg.items, hub.clock.now)
        )
        start = t0.isoformat().replace("+00:00", "Z")
        r = await app.test_client().get(
            f"/api/v1/reports?from={start}", headers={"Authorization": f"Bearer {supervisor}"}
        )
        assert r.status_code == 200
        assert (await r.get_json())["operators"] == [
            {
                "operator_id": 1,
                "paused_seconds": 95.0,
                "paused": [
                    {"reason": "break", "seconds": 30.0},
                    {"reason": "lunch", "seconds": 60.0},
                    {"reason": None, "seconds": 5.0},
                ],
            }
        ]


async def test_a_crash_leaves_pauses_ending_at_the_last_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    clock = Clock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    t0 = clock.now()
    recorder = PauseRecorder(store, clock, heartbeat=60)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        recorder.presence(1, True, "lunch", clock.now())
        await trio.sleep(150)  # heartbeats at 60 s and 120 s
        assert recorder.statistics()["written"] == 3
        nursery.cancel_scope.cancel()  # killed: the pause is never ended (no close())
    assert await store.pauses_between(t0, clock.now()) == [Pause(1, "lunch", t0)]
    # The next start-up (open_hub) ends it where it was last known to go on.
    async with open_memory_gateway(store=store, epoch=clock.now() + timedelta(minutes=5)):
        pass
    assert await store.pauses_between(t0, clock.now()) == [
        Pause(1, "lunch", t0, t0 + timedelta(seconds=120))
    ]


async def test_the_recorder_writes_each_change_once_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    clock = Clock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    t0 = clock.now()

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    recorder = PauseRecorder(store, clock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        # All at once, before the task runs: written in this order.
        recorder.presence(1, True, "lunch", at(0))
        recorder.presence(1, True, "lunch", at(10))  # the same pause goes on
        recorder.presence(2, True, None, at(5))
        recorder.presence(1, False, None, at(20))
        recorder.presence(1, False, None, at(25))  # not paused: nothing to end
        recorder.presence(2, True, "break", at(30))
        await recorder.flush()
        assert recorder.statistics() == {"open": 1, "pending": 0, "written": 4, "failures": 0}
        assert await store.pauses_between(at(0), at(100)) == [
            Pause(1, "lunch", at(0), at(20)),
            Pause(2, None, at(5), at(30)),
            Pause(2, "break", at(30)),
        ]
        nursery.cancel_scope.cancel()


async def test_a_failed_pause_write_is_tried_again_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = Clock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    t0 = clock.now()

    class Flaky(MemoryStore):
        failures = 2

        async def pause_started(self, operator_id: int, reason: str | None, at: datetime) -> None:
            if self.failures:
                self.failures -= 1
                raise StoreError("the database is away")
            await super().pause_started(operator_id, reason, at)

    store = Flaky()
    recorder = PauseRecorder(store, clock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        recorder.presence(1, True, "lunch", t0)
        recorder.presence(1, False, None, t0 + timedelta(seconds=30))
        await recorder.flush()
        assert recorder.statistics()["failures"] == 2
        assert await store.pauses_between(t0, clock.now() + timedelta(seconds=60)) == [
            Pause(1, "lunch", t0, t0 + timedelta(seconds=30))
        ]
        nursery.cancel_scope.cancel()


# -- transfer targets -----------------------------------------------------------------------------


async def test_targets_lists_what_a_transfer_would_accept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway() as gw,
        connect_memory(gw, "/ws/operator") as alice,  # groups 1, 2; capacity 2
        connect_memory(gw, "/ws/operator") as bruno,  # group 2; capacity 1
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as will,
    ):
        # Bruno is full: an offer counts against his capacity.
        await login(bruno, TOK_BRUNO)
        await start(will, 27, name="Will")
        await bruno.expect("offer")
        await login(alice, TOK_ALICE)
        conversation_id = (await start(vera))["conversation_id"]
        await alice.expect("offer")
        await alice.send("accept", conversation_id=conversation_id)
        await alice.until("assigned")
        async with connect_memory(gw, "/ws/operator") as carla:  # group 1; capacity 1
            await login(carla, TOK_CARLA, available=False)  # paused: still a target
            await alice.send("targets", conversation_id=conversation_id)
            assert await alice.until("targets") == {
                "type": "targets",
                "conversation_id": conversation_id,
                "groups": [{"id": 1, "name": "Support"}],  # service 25's links
                "operators": [{"id": 3, "name": "Carla", "free": 1}],  # not Alice, not Bruno
            }
            # What it lists, a transfer accepts.
            await bruno.send("targets", conversation_id=conversation_id)
            error = await bruno.expect("error")
            assert error["code"] == "not_your_conversation"
            assert error["conversation_id"] == conversation_id
        # Carla gone offline: no operator to transfer to.
        await trio.sleep(1)
        await alice.send("targets", conversation_id=conversation_id)
        assert (await alice.until("targets"))["operators"] == []
        await alice.send("targets", conversation_id="nope")
        assert (await alice.expect("error"))["code"] == "unknown_conversation"
        # Ended, it is no longer the operator's to transfer.
        await alice.send("end", conversation_id=conversation_id)
        await alice.until("ended")
        await alice.send("targets", conversation_id=conversation_id)
        assert (await alice.expect("error"))["code"] == "invalid_state"  # waits for the survey


async def test_targets_leaves_out_inactive_operators_and_lists_every_linked_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = with_service(
        make_config(), 25, lambda body: body.update(links=[{"group": 1}, {"group": 2}])
    )
    async with (
        open_memory_gateway(config) as gw,
        connect_memory(gw, "/ws/operator") as alice,
        connect_memory(gw, "/ws/operator") as carla,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        await login(carla, TOK_CARLA, available=False)
        conversation_id = (await start(vera))["conversation_id"]
        await alice.expect("offer")
        await alice.send("accept", conversation_id=conversation_id)
        await alice.until("assigned")
        # Carla made inactive: signed out at once, and no target.
        hub = gw.hub
        operators = dict(hub.directory.operators)
        operators[3] = msgspec.structs.replace(operators[3], active=False)
        hub.apply_directory(dataclasses.replace(hub.directory, operators=operators))
        await carla.until("error")
        await alice.send("targets", conversation_id=conversation_id)
        targets = await alice.until("targets")
        assert targets["groups"] == [{"id": 1, "name": "Support"}, {"id": 2, "name": "Billing"}]
        assert targets["operators"] == []


# -- the live out-of-hours folder -----------------------------------------------------------------


async def test_the_folder_changes_are_pushed_to_the_operators_in_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admin = "admin-console-token-0123456789"
    config = with_items(
        with_service(make_config(), 25, lambda body: body.update(schedule="never")),
        api_token("root", admin, Role.ADMIN),
    )
    async with (
        open_memory_gateway(config) as gw,
        connect_memory(gw, "/ws/operator") as alice,  # groups 1, 2: services 25, 27
        connect_memory(gw, "/ws/operator") as bruno,  # group 2: service 27
        connect_memory(gw, "/ws/operator") as carla,  # group 1: service 25
    ):
        hub = gw.hub
        app = create_app(
            hub, make_registry(hub), Configuration(hub, hub.store, config.items, hub.clock.now)
        )
        await login(alice, TOK_ALICE, available=False)
        await login(bruno, TOK_BRUNO, available=False)
        await login(carla, TOK_CARLA, available=False)
        ids = []
        for name in ("Olga", "Pia"):
            async with connect_memory(gw, "/ws/visitor") as visitor:
                started = await start(visitor, 25, name=name, phone="+55 11 5555-0100")
                await visitor.expect("out_of_hours")
                ids.append(started["conversation_id"])
        olga, pia = ids
        for console in (alice, carla):
            for conversation_id, name in ((olga, "Olga"), (pia, "Pia")):
                change = await console.expect("folder_changed")
                assert change["name"] == "out_of_hours"
                assert "removed" not in change
                added = change["added"]
                assert (added["id"], added["status"], added["service_id"]) == (
                    conversation_id,
                    "out_of_hours",
                    25,
                )
                assert added["visitor"] == {"name": name, "phone": "+55 11 5555-0100"}
        # Not in Bruno's scope (and not Fritz's service 26, in nobody's).
        async with connect_memory(gw, "/ws/visitor") as fritz:
            await start(fritz, 26, name="Fritz")
            await fritz.expect("out_of_hours")
        await bruno.expect_quiet()

        # Resumed on the console by Carla: everyone in scope sees it leave, Carla too.
        await carla.send("resume", conversation_id=olga)
        await carla.until("assigned")
        assert await carla.expect("folder_changed") == {
            "type": "folder_changed",
            "name": "out_of_hours",
            "removed": olga,
        }
        assert await alice.expect("folder_changed") == {
            "type": "folder_changed",
            "name": "out_of_hours",
            "removed": olga,
        }
        # Resumed through the API (an administrator directing Alice).
        r = await app.test_client().post(
            f"/api/v1/conversations/{pia}/resume",
            headers={"Authorization": f"Bearer {admin}"},
            json={"operator_id": 1},
        )
        assert r.status_code == 200, await r.get_json()
        assert (await alice.until("folder_changed"))["removed"] == pia
        assert (await carla.expect("folder_changed"))["removed"] == pia
        await alice.expect_quiet("folder_changed")
        await carla.expect_quiet("folder_changed")
        await bruno.expect_quiet()


# -- the visitor panel ----------------------------------------------------------------------------


async def test_the_summary_carries_the_visitor_panel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = with_service(make_config(), 27, lambda body: body.update(identity_secret=SECRET))
    async with (
        open_memory_gateway(config, epoch=EPOCH) as gw,
        connect_memory(gw, "/ws/operator") as bruno,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as will,
    ):
        token = signed({"name": "Vera Lopez", "email": "vera@example.com", "phone": "+55 11 1"})
        started = await start_with(
            vera, identity=token, visitor={"name": "x", "fields": {"order": "A-1"}}
        )
        await trio.sleep(4)
        await login(bruno, TOK_BRUNO)
        offer = await bruno.expect("offer")
        summary = offer["conversation"]
        assert summary["visitor"] == {
            "name": "Vera Lopez",
            "email": "vera@example.com",
            "phone": "+55 11 1",
            "fields": {"order": "A-1"},
            "verified": True,
        }
        assert (summary["service_id"], summary["ticket"]) == (27, started["ticket"])
        assert summary["waited"] == pytest.approx(4.0, abs=0.01)
        await trio.sleep(2)
        await bruno.send("accept", conversation_id=started["conversation_id"])
        assigned = await bruno.until("assigned")
        # Once answered, `waited` is the wait until the answer.
        assert assigned["conversation"]["waited"] == pytest.approx(6.0, abs=0.01)
        assert assigned["conversation"]["visitor"]["verified"] is True
        # A visitor who typed their details is not verified (absent means false).
        await bruno.send("end", conversation_id=started["conversation_id"])
        await bruno.until("closed")
        await start_with(will, visitor={"name": "Will", "email": "w@example.com"})
        offer = await bruno.until("offer")
        assert offer["conversation"]["visitor"] == {"name": "Will", "email": "w@example.com"}
        assert "verified" not in offer["conversation"]["visitor"]
