"""The supervisors' live view, ``/ws/supervisor`` (issue 14; docs/protocol.md §10).

Every test runs the real gateway, hub and actors under ``MockClock(autojump_threshold=0)``: a
board is pushed at most once a virtual second, and its figures follow the virtual day.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import jsonschema
import trio
import trio.testing

from omni.domain import protocol as p
from omni.domain.model import Role
from omni.domain.protocol import isoformat
from omni.gateway.server import Gateway
from tests.support import (
    TOK_ALICE,
    TOK_BRUNO,
    TOK_CARLA,
    Client,
    api_token,
    connect_memory,
    login,
    make_config,
    open_memory_gateway,
    start,
    with_items,
)

TOK_BOSS = "tok-boss-Lm2Nb5Vc8Xz1Qw4E"
TOK_ROOT = "tok-root-Pk9Oj6Ih3Ug7Yf2T"
TOK_ALICE_API = "tok-alice-api-Rd4Es8Wa1Zq5"


def config(**server: Any) -> Any:
    return with_items(
        make_config(**server),
        api_token("boss", TOK_BOSS, Role.SUPERVISOR),
        api_token("root", TOK_ROOT, Role.ADMIN),
        api_token("alice-api", TOK_ALICE_API, Role.OPERATOR, operator_id=1),
    )


@asynccontextmanager
async def board_gateway(epoch: datetime | None = None, **server: Any) -> AsyncIterator[Gateway]:
    async with open_memory_gateway(config(**server), epoch=epoch) as gw:
        yield gw


async def watch(client: Client, token: str = TOK_BOSS) -> dict[str, Any]:
    """Sign in; the first board."""
    await client.send("login", token=token)
    await client.expect("welcome")
    return await client.expect("board")


def group(board: dict[str, Any], group_id: int) -> dict[str, Any]:
    [found] = [g for g in board["groups"] if g["id"] == group_id]
    return found


def operator(board: dict[str, Any], operator_id: int) -> dict[str, Any]:
    [found] = [o for o in board["operators"] if o["id"] == operator_id]
    return found


async def board_where(client: Client, check: Any) -> dict[str, Any]:
    """The next board for which ``check(board)`` holds (boards before it are skipped)."""
    while not check(board := await client.expect("board")):
        pass
    return board


async def test_supervisors_and_admins_sign_in_others_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with board_gateway() as gw:
        async with connect_memory(gw, "/ws/supervisor") as boss:
            await boss.send("assign", conversation_id="c1", operator_id=1)
            await boss.expect("error", code="not_logged_in")
            await boss.send("login", token=TOK_BOSS)
            welcome = await boss.expect("welcome")
            assert welcome["supervisor"] == {"id": "boss", "name": "Boss", "role": "supervisor"}
            board = await boss.expect("board")
            assert board["day"] == "2026-11-25" and board["timezone"] == "UTC"
            assert board["day_start"] == "2026-11-25T00:00:00Z"
            assert board["interval_minutes"] == 15 and board["threshold_seconds"] == 20
            assert [g["id"] for g in board["groups"]] == [1, 2, 3]
            assert group(board, 1) == {
                "id": 1,
                "name": "Support",
                "waiting": 0,
                "oldest_waiting_since": None,
                "offered": 0,
                "answered": 0,
                "abandoned": 0,
                "service_level": None,
                "intervals": [None] * 49,  # 00:00 ... 12:00
            }
            assert operator(board, 2) == {
                "id": 2,
                "name": "Bruno",
                "groups": [2],
                "presence": "offline",
                "pause_reason": None,
                "held": 0,
                "capacity": 1,
                "busy": False,
            }
            await boss.send("login", token=TOK_BOSS)
            await boss.expect("error", code="already_logged_in")
        async with connect_memory(gw, "/ws/supervisor") as root:
            await root.send("login", token=TOK_ROOT)
            await root.expect("welcome", supervisor={"id": "root", "name": "Root", "role": "admin"})
            await root.expect("board")
        for token in (TOK_ALICE_API, TOK_ALICE, "no-such-token"):
            async with connect_memory(gw, "/ws/supervisor", client="10.0.0.9") as stranger:
                await stranger.send("login", token=token)
                await stranger.expect("error", code="invalid_login")
        # The failed sign-ins of /ws/operator and /ws/supervisor count together, towards
        # the same back-off.
        codes = []
        for path in ["/ws/operator", "/ws/supervisor"] * 5:
            async with connect_memory(gw, path, client="10.0.0.9") as stranger:
                await stranger.send("login", token="no-such-token")
                codes.append((await stranger.expect("error"))["code"])
        assert codes[-1] == "too_many_attempts" and codes[0] == "invalid_login"


async def test_the_board_follows_queue_assignment_and_abandonment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        board_gateway() as gw,
        connect_memory(gw, "/ws/supervisor") as boss,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as otto,
        connect_memory(gw, "/ws/operator") as carla,
    ):
        await watch(boss)
        await start(vera, name="Vera")
        board = await board_where(boss, lambda b: group(b, 1)["waiting"] == 1)
        assert group(board, 1)["oldest_waiting_since"] == "2026-11-25T12:00:00Z"
        assert group(board, 1)["offered"] == 1
        await trio.sleep(5)
        await login(carla, TOK_CARLA)
        offer = await carla.expect("offer")
        await carla.send("accept", conversation_id=offer["conversation_id"])
        board = await board_where(boss, lambda b: group(b, 1)["answered"] == 1)
        assert group(board, 1)["waiting"] == 0 and group(board, 1)["service_level"] == 1.0
        assert operator(board, 3) | {"groups": None} == {
            "id": 3,
            "name": "Carla",
            "groups": None,
            "presence": "available",
            "pause_reason": None,
            "held": 1,
            "capacity": 1,
            "busy": True,
        }
        await trio.sleep(60)
        arrival = isoformat(gw.hub.clock.now())
        await start(otto, name="Otto")  # Carla is busy: Otto waits
        board = await board_where(boss, lambda b: group(b, 1)["waiting"] == 1)
        assert group(board, 1)["oldest_waiting_since"] == arrival
        await otto.send("end")
        board = await board_where(boss, lambda b: group(b, 1)["abandoned"] == 1)
        assert group(board, 1)["waiting"] == 0 and group(board, 1)["oldest_waiting_since"] is None
        assert group(board, 1)["service_level"] == 0.5
        assert group(board, 1)["intervals"][-1] == 0.5
        # Chat messages change nothing the board shows: nothing is pushed for them.
        await boss.expect_nothing(5)
        await vera.send("message", client_id="v1", text="hello")
        await carla.until("message")
        await carla.send(
            "message", conversation_id=offer["conversation_id"], client_id="a1", text="hi"
        )
        await vera.until("message")
        await boss.expect_nothing(5)


async def test_the_series_has_a_service_level_per_15_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        board_gateway() as gw,
        connect_memory(gw, "/ws/supervisor") as boss,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as otto,
        connect_memory(gw, "/ws/operator") as carla,
    ):
        await login(carla, TOK_CARLA)
        await watch(boss)
        await start(vera)  # 12:00: answered at once
        offer = await carla.expect("offer")
        await carla.send("accept", conversation_id=offer["conversation_id"])
        await board_where(boss, lambda b: group(b, 1)["answered"] == 1)
        await trio.sleep(15 * 60)
        # The new interval shows at its start, with nothing counted yet.
        board = await boss.expect("board")
        assert board["at"] == "2026-11-25T12:15:00.001000Z"
        assert group(board, 1)["intervals"][48:] == [1.0, None]
        await start(otto)  # 12:15: Carla is busy; Otto leaves
        await otto.send("end")
        board = await board_where(boss, lambda b: group(b, 1)["abandoned"] == 1)
        assert group(board, 1)["intervals"][47:] == [None, 1.0, 0.0]
        assert group(board, 1)["service_level"] == 0.5


async def test_many_changes_in_a_second_make_one_board(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with board_gateway() as gw, connect_memory(gw, "/ws/supervisor") as boss:
        await watch(boss)
        await trio.sleep(10)
        visitors = []
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                client = await nursery.start(_visitor, gw)
                visitors.append(client)
            boards = []
            with trio.move_on_after(3):
                while True:
                    boards.append(await boss.expect("board"))
            nursery.cancel_scope.cancel()
        # The first change is pushed at once, the rest of that second together after it.
        assert len(boards) <= 2
        assert group(boards[-1], 1)["waiting"] == 6
        assert boards[0]["at"] == "2026-11-25T12:00:10Z"
        if len(boards) == 2:
            assert boards[1]["at"] == "2026-11-25T12:00:11Z"


async def _visitor(gw: Gateway, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with connect_memory(gw, "/ws/visitor") as client:
        await start(client)
        task_status.started(client)
        await trio.sleep_forever()


async def test_a_supervisor_assigns_and_transfers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        board_gateway() as gw,
        connect_memory(gw, "/ws/supervisor") as boss,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/operator") as bruno,
        connect_memory(gw, "/ws/operator") as carla,
    ):
        await watch(boss)
        await login(bruno, TOK_BRUNO, available=False)  # paused: offered nothing
        await login(carla, TOK_CARLA, available=False)
        started = await start(vera, service_id=27)  # group 2
        cid = started["conversation_id"]
        await board_where(boss, lambda b: group(b, 2)["waiting"] == 1)
        # Refusals, as for an operator's transfer.
        await boss.send("assign", conversation_id=cid, operator_id=99)
        await boss.expect("error", code="unknown_operator", conversation_id=cid)
        await boss.send("assign", conversation_id=cid, operator_id=1)  # Alice is not signed in
        await boss.expect("error", code="operator_unavailable", conversation_id=cid)
        await boss.send("transfer", conversation_id=cid, group_id=99)
        await boss.expect("error", code="unknown_group", conversation_id=cid)
        await boss.send("assign", conversation_id="nope", operator_id=2)
        await boss.expect("error", code="unknown_conversation", conversation_id="nope")
        # Take over: straight to Bruno, though paused.
        await boss.send("assign", conversation_id=cid, operator_id=2)
        await boss.expect("done", action="assign", conversation_id=cid)
        await vera.until("assigned")
        assigned = await bruno.until("assigned")
        assert assigned["operator"] == {"id": 2, "name": "Bruno"}
        board = await board_where(boss, lambda b: operator(b, 2)["held"] == 1)
        assert group(board, 2)["waiting"] == 0 and group(board, 2)["answered"] == 1
        assert operator(board, 2)["busy"] and operator(board, 2)["presence"] == "paused"
        await boss.send("assign", conversation_id=cid, operator_id=3)
        await boss.expect("error", code="invalid_state", conversation_id=cid)
        # A stuck conversation: Bruno leaves; the supervisor moves it to Carla.
        await bruno.close()
        await boss.send("transfer", conversation_id=cid, operator_id=3)
        await boss.expect("done", action="transfer", conversation_id=cid)
        transferred = await vera.until("transferred")
        assert transferred["to"] == {"kind": "operator", "id": 3, "name": "Carla"}
        await carla.until("assigned")
        # And to a group's queue.
        await boss.send("transfer", conversation_id=cid, group_id=1)
        await boss.expect("done", action="transfer", conversation_id=cid)
        while (transferred := await carla.until("transferred"))["to"]["kind"] != "group":
            pass  # the history Carla was sent holds the transfer to her
        assert transferred["to"] == {"kind": "group", "id": 1, "name": "Support"}
        board = await board_where(boss, lambda b: group(b, 1)["waiting"] == 1)
        assert operator(board, 3)["held"] == 0
        audit = await gw.hub.store.audit_entries(10)
        assert [(e.actor, e.action, e.key, e.after) for e in audit] == [
            (
                "token:boss",
                "transfer",
                cid,
                {"from": {"status": "active", "group_id": 2}, "group_id": 1},
            ),
            (
                "token:boss",
                "transfer",
                cid,
                {"from": {"status": "active", "group_id": 2}, "operator_id": 3},
            ),
            (
                "token:boss",
                "assign",
                cid,
                {"from": {"status": "queued", "group_id": 2}, "operator_id": 2},
            ),
        ]
        # Every frame the supervisor got is one the published schema admits.
        schema = p.json_schema()
        check = jsonschema.Draft202012Validator(
            {"$ref": "#/$defs/server_to_supervisor", "$defs": schema["$defs"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )
        assert {f["type"] for f in boss.received} == {"welcome", "board", "done", "error"}
        for frame in boss.received:
            assert check.is_valid(frame), frame


async def test_a_new_day_starts_with_nothing_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 23:59 in São Paulo.
    epoch = datetime(2026, 11, 26, 2, 59, tzinfo=UTC)
    async with (
        board_gateway(epoch, timezone="America/Sao_Paulo") as gw,
        connect_memory(gw, "/ws/supervisor") as boss,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        board = await watch(boss)
        assert (board["day"], board["day_start"]) == ("2026-11-25", "2026-11-25T03:00:00Z")
        assert len(group(board, 1)["intervals"]) == 96
        await start(vera)
        await vera.send("end")
        board = await board_where(boss, lambda b: group(b, 1)["abandoned"] == 1)
        await trio.sleep(120)
        board = await board_where(boss, lambda b: b["day"] == "2026-11-26")
        assert board["day_start"] == "2026-11-26T03:00:00Z"
        assert group(board, 1)["abandoned"] == group(board, 1)["offered"] == 0
        assert group(board, 1)["intervals"] == [None]
