"""The chatbot (issue 16, F15) and the group schedules behind it (F5), end to end: a visitor
talks to the bot over real websockets (TCP on 127.0.0.1) or in virtual time, is handed to a
group, and the operator sees what the bot collected."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from omni.clock import Clock
from omni.config import Config
from omni.domain.bot import PERSON, Bot
from omni.domain.configuration import ConfigInvalid, build_directory, item_of
from omni.domain.model import Service
from omni.domain.reports import report
from omni.domain.schedule import Schedule
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.support import (
    T0,
    TOK_ALICE,
    Client,
    connect_memory,
    connect_tcp,
    login,
    make_config,
    open_memory_gateway,
    start,
    with_items,
)

#: Service 28 runs this bot. At the tests' instant (Wednesday 12:00 UTC) group 1 is open and
#: group 3 is not: its link keeps weekday mornings (next opening Thursday 08:00 UTC).
TRIAGE: dict[str, Any] = {
    "id": "triage",
    "name": "Triage",
    "start": "hello",
    "inactivity": 120,
    "nodes": [
        {
            "kind": "message",
            "id": "hello",
            "text": "Hi! I am the shop's assistant.",
            "next": "menu",
        },
        {
            "kind": "menu",
            "id": "menu",
            "text": "What do you need?",
            "options": [
                {"id": "buy", "label": "Buy something", "next": "email"},
                {"id": "bill", "label": "A bill", "next": "billing"},
                {"id": "bye", "label": "Nothing, thanks", "next": "bye"},
            ],
        },
        {
            "kind": "ask",
            "id": "email",
            "text": "Your e-mail, please?",
            "field": "email",
            "input": "email",
            "retry": "That is not an e-mail address.",
            "next": "sales",
        },
        {"kind": "handoff", "id": "sales", "group": 1, "text": "Passing you to Sales."},
        {"kind": "handoff", "id": "billing", "group": 3},
        {"kind": "end", "id": "bye", "text": "Goodbye!"},
    ],
}

MORNINGS = {
    "id": "mornings",
    "timezone": "UTC",
    "weekly": {d: [["08:00", "12:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
}

SHOP = {
    "id": 28,
    "name": "Shop",
    "schedule": "always",
    "survey": "none",
    "closing_message": "Thanks for visiting.",
    "bot": "triage",
    "group_closed_message": "Billing is closed now.",
    "links": [{"group": 1}, {"group": 3, "schedule": "mornings"}],
}


def bot_config(bot: dict[str, Any] | None = None, shop: dict[str, Any] | None = None) -> Config:
    return with_items(
        make_config(),
        item_of("schedules", msgspec.convert(MORNINGS, Schedule)),
        item_of("bots", msgspec.convert(bot or TRIAGE, Bot)),
        item_of("services", msgspec.convert(shop or SHOP, Service)),
    )


def options(frame: dict[str, Any]) -> list[str]:
    return [o["id"] for o in frame.get("options", [])]


@asynccontextmanager
async def tcp_server(config: Config) -> AsyncIterator[RunningServer]:
    """A whole server on 127.0.0.1 whose clock starts at the tests' instant (real time)."""
    async with open_server(
        config,
        clock=Clock(T0),
        entropy=SeededEntropy(5),
        host="127.0.0.1",
        ws_port=0,
        http_port=0,
    ) as server:
        yield server


async def greeted(vera: Client) -> dict[str, Any]:
    """The bot's first two frames (the message, then the menu); returns the menu."""
    hello = await vera.expect("bot", text="Hi! I am the shop's assistant.", node="hello")
    assert "options" not in hello and "input" not in hello
    menu = await vera.expect("bot", node="menu", text="What do you need?")
    assert options(menu) == ["buy", "bill", "bye", PERSON]
    assert menu["options"][-1] == {"id": PERSON, "label": "Talk to a person"}
    assert menu["seq"] == hello["seq"] + 1
    return menu


async def test_a_visitor_goes_through_the_menu_gives_an_email_and_reaches_an_operator() -> None:
    """Over real websockets: a menu, a bad e-mail then a good one, the hand-off to Sales; the
    operator's offer and history carry what the bot collected."""
    async with (
        tcp_server(bot_config()) as server,
        connect_tcp(f"{server.ws_url}/ws/visitor") as vera,
        connect_tcp(f"{server.ws_url}/ws/operator") as alice,
    ):
        await login(alice, TOK_ALICE)
        started = await start(vera, service_id=28)
        cid = started["conversation_id"]
        assert started["service"]["bot"] is True  # the page shows the bot, not a queue
        assert server.hub.conversations[cid].status.value == "bot"
        menu = await greeted(vera)

        await vera.send("bot_reply", client_id="r1", option="buy")
        ack = await vera.expect("ack", client_id="r1")
        assert ack["seq"] == menu["seq"] + 1
        await vera.expect("bot", node="email", text="Your e-mail, please?", input="email")

        await vera.send("bot_reply", client_id="r2", text="vera at example")
        await vera.expect("ack", client_id="r2")
        retry = await vera.expect("bot", node="email", text="That is not an e-mail address.")
        assert retry["input"] == "email"

        await vera.send("bot_reply", client_id="r3", text="vera@example.com")
        await vera.expect("ack", client_id="r3")
        await vera.expect("bot", node="sales", text="Passing you to Sales.")
        await vera.expect("queued", position=1)

        offer = await alice.expect("offer")
        summary = offer["conversation"]
        assert summary["id"] == cid and summary["group_id"] == 1
        assert summary["visitor"]["email"] == "vera@example.com"
        assert summary["visitor"]["fields"] == {"email": "vera@example.com"}
        await alice.send("accept", conversation_id=cid)
        # The history first: what the bot said and what Vera answered, in seq order.
        history = [await alice.recv() for _ in range(8)]
        kinds = [(f["type"], f.get("node") or f.get("text")) for f in history]
        assert kinds == [
            ("bot", "hello"),
            ("bot", "menu"),
            ("bot_reply", "Buy something"),
            ("bot", "email"),
            ("bot_reply", "vera at example"),
            ("bot", "email"),
            ("bot_reply", "vera@example.com"),
            ("bot", "sales"),
        ]
        assert [f["seq"] for f in history] == list(range(1, 9))
        assigned = await alice.expect("assigned")
        assert assigned["seq"] == 9
        assert assigned["conversation"]["visitor"]["fields"] == {"email": "vera@example.com"}
        await vera.until("assigned")


async def test_a_hand_off_to_a_group_closed_by_its_schedule_says_so_and_goes_back() -> None:
    """Over real websockets."""
    async with (
        tcp_server(bot_config()) as server,
        connect_tcp(f"{server.ws_url}/ws/visitor") as vera,
    ):
        await start(vera, service_id=28)
        await greeted(vera)
        await vera.send("bot_reply", client_id="r1", option="bill")
        await vera.expect("ack", client_id="r1")
        closed = await vera.expect("bot", node="billing", text="Billing is closed now.")
        assert closed["opens_at"] == "2026-11-26T08:00:00Z"
        assert "options" not in closed
        # Back to the last question, to choose something else.
        again = await vera.expect("bot", node="menu")
        assert options(again) == ["buy", "bill", "bye", PERSON]
        await vera.send("bot_reply", client_id="r2", text="3")  # its number works too
        await vera.expect("ack", client_id="r2")
        await vera.expect("bot", node="bye", text="Goodbye!")
        await vera.expect("ended", by="bot")
        await vera.expect("closed", message="Thanks for visiting.")
        store = server.hub.store
        assert isinstance(store, MemoryStore)
        (conv,) = [c for c in store.conversations() if c.service_id == 28]
        assert conv.status.value == "closed" and conv.bot is not None
        assert (conv.bot.outcome, conv.bot.node, conv.bot.script) == ("ended", "bye", None)


async def test_a_closed_group_with_nothing_else_open_leads_to_out_of_hours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When no group of the service is open, the hand-off takes the out-of-hours path: the
    service's message, and the conversation waits in the folder for an operator."""
    shop = {
        **SHOP,
        "links": [{"group": 1, "schedule": "mornings"}, {"group": 3, "schedule": "mornings"}],
    }
    async with (
        open_memory_gateway(bot_config(shop=shop)) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        cid = (await start(vera, service_id=28))["conversation_id"]
        await greeted(vera)  # the bot talks though every group is closed
        await vera.send("bot_reply", client_id="r1", option=PERSON)
        await vera.expect("ack", client_id="r1")
        ooh = await vera.expect("out_of_hours")
        assert ooh["opens_at"] == "2026-11-26T08:00:00Z"
        assert gw.hub.conversations[cid].status.value == "out_of_hours"


async def test_talk_to_a_person_goes_to_the_first_open_group_and_a_message_answers_the_bot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway(bot_config()) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/operator") as alice,
    ):
        await login(alice, TOK_ALICE)
        cid = (await start(vera, service_id=28))["conversation_id"]
        await greeted(vera)
        # A plain message answers the bot too (a client that knows no bot_reply).
        await vera.send("message", client_id="m1", text="talk to a person")
        await vera.expect("ack", client_id="m1")
        await vera.expect("queued", position=1)
        offer = await alice.expect("offer")
        assert offer["conversation"]["id"] == cid and offer["conversation"]["group_id"] == 1


async def test_refused_replies_change_nothing_and_a_resend_gets_its_ack_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway(bot_config()) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await start(vera, service_id=28)
        menu = await greeted(vera)
        await vera.send("bot_reply", client_id="r1", option="nope")
        error = await vera.expect("error", code="invalid_reply", client_id="r1")
        assert "nope" in error["message"]
        await vera.send("bot_reply", client_id="r1")
        await vera.expect("error", code="invalid_reply", client_id="r1")
        await vera.send("bot_reply", client_id="r1", option="buy")
        first = await vera.expect("ack", client_id="r1")
        assert first["seq"] == menu["seq"] + 1  # nothing was stored for the refusals
        await vera.expect("bot", node="email")
        await vera.send("bot_reply", client_id="r1", option="buy")
        assert (await vera.expect("ack", client_id="r1"))["seq"] == first["seq"]
        await vera.expect_nothing()
        await vera.send("attachment", client_id="f1", upload_id="whatever")
        await vera.expect("error", code="invalid_state", client_id="f1")
        await vera.send("typing")
        await vera.expect("error", code="invalid_state")


async def test_a_resumed_bot_conversation_replays_exactly_what_was_missed() -> None:
    """Over real websockets: the connection drops, the visitor resumes on a new one."""
    async with tcp_server(bot_config()) as server:
        async with connect_tcp(f"{server.ws_url}/ws/visitor") as vera:
            started = await start(vera, service_id=28)
            menu = await greeted(vera)
            await vera.send("bot_reply", client_id="r1", option="buy")
            await vera.expect("ack", client_id="r1")
            # The connection drops before the next question arrives (not read).
        async with connect_tcp(f"{server.ws_url}/ws/visitor") as again:
            await again.send("resume", token=started["token"], last_seq=menu["seq"])
            resumed = await again.expect("resumed")
            assert resumed["status"] == "bot" and resumed["last_seq"] == menu["seq"] + 2
            reply = await again.expect("bot_reply", seq=menu["seq"] + 1, text="Buy something")
            assert reply["option"] == "buy"
            await again.expect("bot", seq=menu["seq"] + 2, node="email")
            await again.expect_quiet()
            # And it goes on from there.
            await again.send("bot_reply", client_id="r2", text="vera@example.com")
            assert (await again.expect("ack", client_id="r2"))["seq"] == menu["seq"] + 3
            await again.expect("bot", node="sales")


async def test_a_script_edited_live_applies_to_new_conversations_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(open_memory_gateway(bot_config()))
        old = await stack.enter_async_context(connect_memory(gw, "/ws/visitor"))
        await start(old, service_id=28)
        await greeted(old)
        edited = dict(TRIAGE)
        edited["nodes"] = [
            {**n, "text": "Hello again!"} if n["id"] == "hello" else n for n in TRIAGE["nodes"]
        ]
        edited["nodes"] = [
            n
            if n["id"] != "menu"
            else {**n, "options": [o for o in n["options"] if o["id"] != "bill"]}
            for n in edited["nodes"]
        ]
        edited["nodes"] = [n for n in edited["nodes"] if n["id"] != "billing"]
        directory = gw.hub.directory
        gw.hub.apply_directory(
            dataclasses.replace(
                directory, bots={**directory.bots, "triage": msgspec.convert(edited, Bot)}
            )
        )
        new = await stack.enter_async_context(connect_memory(gw, "/ws/visitor"))
        await start(new, service_id=28)
        await new.expect("bot", text="Hello again!")
        assert options(await new.expect("bot", node="menu")) == ["buy", "bye", PERSON]
        # The conversation under way keeps its script: "bill" is still an option there.
        await old.send("bot_reply", client_id="r1", option="bill")
        await old.expect("ack", client_id="r1")
        await old.expect("bot", node="billing", text="Billing is closed now.")
        await new.send("bot_reply", client_id="r1", option="bill")
        await new.expect("error", code="invalid_reply")


async def test_a_silent_visitor_drops_out_and_reports_count_it_by_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway(bot_config()) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
        connect_memory(gw, "/ws/visitor") as zoe,
        connect_memory(gw, "/ws/visitor") as yan,
        connect_memory(gw, "/ws/operator") as alice,
    ):
        await login(alice, TOK_ALICE)
        await start(vera, service_id=28)
        await greeted(vera)
        before = trio.current_time()
        await vera.expect("ended", by="bot_timeout", timeout=300)
        assert trio.current_time() - before == pytest.approx(120)
        await vera.expect("closed")
        # Zoe is handed to Sales; Yan leaves at the e-mail question.
        await start(zoe, service_id=28)
        await greeted(zoe)
        await zoe.send("bot_reply", client_id="r1", option=PERSON)
        await alice.expect("offer")
        await start(yan, service_id=28, name="Yan")
        await greeted(yan)
        await yan.send("bot_reply", client_id="r1", option="buy")
        await yan.expect("ack", client_id="r1")
        await yan.expect("bot", node="email")
        await yan.send("end")
        await yan.expect("ended", by="visitor")
        store = gw.hub.store
        assert isinstance(store, MemoryStore)
        figures = report(
            [c for c in store.conversations() if c.service_id == 28], threshold=20
        ).services[28]
        assert figures["bot"] == {
            "conversations": 3,
            "contained": 0,
            "containment": 0.0,
            "handoffs": {"1": 1},
            "dropoffs": {"email": 1, "menu": 1},
        }
        # Only the one handed off was offered to a queue.
        assert figures["offered"] == 1 and figures["abandoned"] == 0


async def test_a_bot_conversation_survives_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(open_memory_gateway(bot_config(), store=store))
        vera = await stack.enter_async_context(connect_memory(gw, "/ws/visitor"))
        started = await start(vera, service_id=28)
        menu = await greeted(vera)
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(open_memory_gateway(bot_config(), store=store))
        vera = await stack.enter_async_context(connect_memory(gw, "/ws/visitor"))
        await vera.send("resume", token=started["token"], last_seq=menu["seq"])
        await vera.expect("resumed", status="bot")
        await vera.send("bot_reply", client_id="r1", option="buy")
        await vera.expect("ack", client_id="r1")
        await vera.expect("bot", node="email")


def test_the_directory_refuses_a_bot_that_hands_off_to_a_group_the_service_does_not_link() -> None:
    shop = {**SHOP, "links": [{"group": 1}]}
    with pytest.raises(ConfigInvalid, match=r"bot triage, node 'billing': group 3 is not linked"):
        bot_config(shop=shop)
    with pytest.raises(ConfigInvalid, match=r"service 28: unknown bot 'nobody'"):
        bot_config(shop={**SHOP, "bot": "nobody"})
    bad = {**TRIAGE, "nodes": [*TRIAGE["nodes"], {"kind": "handoff", "id": "x", "group": 99}]}
    bad["nodes"][1] = {
        **bad["nodes"][1],
        "options": [*bad["nodes"][1]["options"], {"id": "x", "label": "X", "next": "x"}],
    }
    with pytest.raises(ConfigInvalid, match=r"node 'x': unknown group 99"):
        build_directory([*bot_config().items[:-2], item_of("bots", msgspec.convert(bad, Bot))])


def test_the_instant_of_the_tests() -> None:
    # The schedules above assume it: a Wednesday, noon UTC (group 3's mornings just closed).
    assert datetime(2026, 11, 25, 12, 0, tzinfo=UTC).weekday() == 2


async def test_the_transcript_shows_the_bot_and_what_it_collected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from zoneinfo import ZoneInfo

    from omni.domain import protocol as p
    from omni.domain.transcript import render

    async with (
        open_memory_gateway(bot_config()) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        cid = (await start(vera, service_id=28))["conversation_id"]
        await greeted(vera)
        await vera.send("bot_reply", client_id="r1", option="buy")
        await vera.until("bot")
        await vera.send("bot_reply", client_id="r2", text="vera@example.com")
        await vera.until("queued")
        store = gw.hub.store
        conv = await store.load_conversation(cid)
        assert conv is not None
        events = [p.decode_event(e.frame) for e in await store.events_after(cid, 0)]
        text = render(conv, gw.hub.directory.services[28], events, ZoneInfo("UTC")).body
    assert "Details you gave:\n    email: vera@example.com\n" in text
    assert "[2026-11-25 12:00] Shop: What do you need?\n" in text
    assert "[2026-11-25 12:00] Vera: Buy something\n" in text
    assert "Vera: vera@example.com\n" in text


ADMIN = "admin-bot-tests-Qw7Er4Ty1Ui8Op3As"


async def test_bots_are_edited_through_the_admin_api_audited_and_applied_live() -> None:
    import httpx

    from tests.support import api_token

    config = with_items(
        make_config(),
        api_token("root", ADMIN),
        item_of("schedules", msgspec.convert(MORNINGS, Schedule)),
    )
    async with (
        open_server(
            config, entropy=SeededEntropy(3), host="127.0.0.1", ws_port=0, http_port=0
        ) as server,
        httpx.AsyncClient(
            base_url=server.http_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
        ) as http,
    ):
        # A script with a loop that has no question is refused, naming the node.
        again = {
            "kind": "condition",
            "id": "again",
            "rules": [{"kind": "field", "field": "vip", "values": ["yes"], "next": "hello"}],
            "otherwise": "menu",
        }
        looping = {
            **TRIAGE,
            "nodes": [
                *({**n, "next": "again"} if n["id"] == "hello" else n for n in TRIAGE["nodes"]),
                again,
            ],
        }
        refused = await http.post("/api/v1/bots", json=looping)
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "loop without a question" in detail
        assert "node 'again'" in detail or "node 'hello'" in detail
        dangling = {**TRIAGE, "start": "nowhere"}
        refused = await http.post("/api/v1/bots", json=dangling)
        assert refused.status_code == 422 and "start" in refused.json()["detail"]

        created = await http.post("/api/v1/bots", json=TRIAGE)
        assert created.status_code == 201, created.text
        assert created.json() == msgspec.json.decode(
            msgspec.json.encode(msgspec.convert(TRIAGE, Bot))
        )
        assert (await http.get("/api/v1/bots/triage")).json() == created.json()
        # A service may use it only if it links the groups the script hands off to.
        unlinked = {**SHOP, "links": [{"group": 1}]}
        refused = await http.post("/api/v1/services", json=unlinked)
        assert refused.status_code == 422
        assert "node 'billing'" in refused.json()["detail"]
        assert (await http.post("/api/v1/services", json=SHOP)).status_code == 201

        async with connect_tcp(f"{server.ws_url}/ws/visitor") as vera:
            await start(vera, service_id=28)
            await greeted(vera)

        changed = {
            **TRIAGE,
            "nodes": [
                {**n, "text": "Welcome back!"} if n["id"] == "hello" else n for n in TRIAGE["nodes"]
            ],
        }
        assert (await http.put("/api/v1/bots/triage", json=changed)).status_code == 200
        async with connect_tcp(f"{server.ws_url}/ws/visitor") as zoe:
            await start(zoe, service_id=28)
            await zoe.expect("bot", text="Welcome back!")

        in_use = await http.delete("/api/v1/bots/triage")
        assert in_use.status_code == 409 and "triage" in in_use.json()["detail"]
        entries = (await http.get("/api/v1/audit", params={"limit": 3})).json()["items"]
        assert [(e["action"], e["kind"], e["key"]) for e in entries] == [
            ("update", "bots", "triage"),
            ("create", "services", "28"),
            ("create", "bots", "triage"),
        ]
        assert entries[0]["after"]["nodes"][0]["text"] == "Welcome back!"


def test_a_service_whose_bot_answers_is_open_to_the_pages_while_its_groups_are_closed() -> None:
    from omni.pages.public import service_list

    closed_groups = {
        **SHOP,
        "links": [{"group": 1, "schedule": "mornings"}, {"group": 3, "schedule": "mornings"}],
    }
    directory = bot_config(shop=closed_groups).directory
    assert directory.route(directory.services[28], T0) is None  # no group takes anyone now
    listed = {s.id: s.open for s in service_list(directory, T0).services}
    assert listed[28] is True  # the bot does
    # With the service's own schedule closed, the bot is not reachable either.
    closed = bot_config(shop={**closed_groups, "schedule": "never"}).directory
    assert {s.id: s.open for s in service_list(closed, T0).services}[28] is False
