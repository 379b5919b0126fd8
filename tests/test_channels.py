"""Messaging channels (issue 17), end to end: whole servers on 127.0.0.1, the operator over the
real ``/ws/operator`` websocket, the platforms' webhooks POSTed over real HTTP, and each
platform's API played by a stand-in HTTP server on 127.0.0.1 (``tests.webhook_receiver``,
reached through the SSRF guard's development allowance) that records the requests and fails
as scripted.

What must hold: a message a person writes reaches an operator; the operator's replies reach
the platform with its published path, headers and body, each once and in order even when the
platform fails the first attempts; a delivery the platform repeats makes one message, also
after the conversation closed; a request without the platform's signature is refused and
stores nothing; WhatsApp's subscription challenge; out of hours, the service's message; the
closing message carries the survey's link; the generic channel both ways, signed; a restart on
PostgreSQL loses no reply, sends none twice, and keeps the user's conversation and the
platform's ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import trio
from standardwebhooks.webhooks import Webhook as Signer

from omni.config import Config
from omni.domain.configuration import item_of
from omni.domain.model import Channel
from omni.server import open_server
from omni.store import Store
from omni.store.postgres import open_postgres_store
from tests.support import (
    TOK_ALICE,
    Client,
    api_token,
    connect_tcp,
    eventually,
    free_port,
    login,
    make_config,
    with_items,
    with_service,
)
from tests.webhook_receiver import open_receiver, signature_is_valid

ADMIN = "admin-secret-token-Rk6Lx1Vp9Nq"
LOCAL = ["127.0.0.1/32", "::1/128"]
FAST = {
    "allow_private": LOCAL,
    "retry_seconds": 0.05,
    "max_retry_seconds": 0.2,
    "jitter": 0.5,
    "read_timeout": 2,
    "connect_timeout": 2,
}
APP_SECRET = "whatsapp-app-secret-1234"
WA_TOKEN = "EAAG-whatsapp-access-token"
VERIFY = "verify-me-please-42"
TG_TOKEN = "123456:telegram-bot-token"
TG_SECRET = "telegram_secret_token_0123456789"
GENERIC_SECRET = "whsec_" + base64.b64encode(b"omni-channel-test-secret-32bytes").decode()


def whatsapp(base_url: str, service_id: int = 25) -> Channel:
    return Channel(
        id="wa",
        kind="whatsapp",
        service_id=service_id,
        base_url=base_url,
        phone_number_id="1098765",
        api_version="v21.0",
        token=WA_TOKEN,
        app_secret=APP_SECRET,
        verify_token=VERIFY,
    )


def telegram(base_url: str, service_id: int = 27) -> Channel:
    return Channel(
        id="tg",
        kind="telegram",
        service_id=service_id,
        base_url=base_url,
        token=TG_TOKEN,
        secret_token=TG_SECRET,
    )


def generic(reply_url: str) -> Channel:
    return Channel(
        id="app", kind="generic", service_id=27, reply_url=reply_url, secret=GENERIC_SECRET
    )


def channel_config(*channels: Channel, survey_link: bool = False, **webhooks: Any) -> Config:
    config = make_config(webhooks=FAST | webhooks)
    if survey_link:
        config = with_service(config, 25, lambda body: body.update(survey_link=True))
    return with_items(config, api_token("root", ADMIN), *(item_of("channels", c) for c in channels))


def wa_body(message_id: str, text: str, sender: str = "5511987654321", **extra: Any) -> bytes:
    message: dict[str, Any] = {"from": sender, "id": message_id, "timestamp": "1700000000"}
    message |= extra or {"type": "text", "text": {"body": text}}
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "1098765"},
                            "contacts": [{"profile": {"name": "Paula"}, "wa_id": sender}],
                            "messages": [message],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload).encode()


def wa_signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_wa(
    http: httpx.AsyncClient, body: bytes, signature: str | None = None
) -> httpx.Response:
    return await http.post(
        "/channels/wa/webhook",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature or wa_signature(body),
        },
    )


def tg_body(update_id: int, text: str, chat: int = 777001) -> bytes:
    return json.dumps(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id + 5000,
                "date": 1700000000,
                "chat": {"id": chat, "type": "private"},
                "from": {"id": chat, "is_bot": False, "first_name": "Tiago"},
                "text": text,
            },
        }
    ).encode()


async def post_tg(http: httpx.AsyncClient, body: bytes, secret: str = TG_SECRET) -> httpx.Response:
    return await http.post(
        "/channels/tg/webhook",
        content=body,
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret},
    )


async def stored_texts(store: Store, cid: str) -> list[tuple[str, str]]:
    events = await store.events_after(cid, 0)
    return [
        (frame["author"]["kind"], frame["text"])
        for frame in (json.loads(e.frame) for e in events)
        if frame["type"] == "message"
    ]


async def answer(alice: Client, text: str) -> str:
    """Alice takes the offered conversation and answers ``text``; its id."""
    offer = await alice.until("offer")
    cid: str = offer["conversation"]["id"]
    await alice.send("accept", conversation_id=cid)
    await alice.until("assigned")
    await alice.send("message", conversation_id=cid, client_id="a1", text=text)
    return cid


async def test_whatsapp_both_ways_once_in_order_through_failures() -> None:
    async with open_receiver(script=[500, 503]) as platform:
        base = f"http://127.0.0.1:{platform.port}"
        async with (
            open_server(channel_config(whatsapp(base)), host="127.0.0.1", ws_port=0) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            store = srv.hub.store
            await login(alice, TOK_ALICE)
            first = wa_body("wamid.A1", "Olá, preciso de ajuda")
            assert (await post_wa(http, first)).status_code == 200
            offer = await alice.until("offer")
            summary = offer["conversation"]
            assert summary["channel"] == {"kind": "whatsapp", "id": "wa"}
            assert summary["visitor"]["name"] == "Paula"
            assert summary["visitor"]["phone"] == "+5511987654321"
            cid = summary["id"]
            await alice.send("accept", conversation_id=cid)
            await alice.until("assigned")
            # The visitor's message is in the history the operator gets.
            assert ("visitor", "Olá, preciso de ajuda") in await stored_texts(store, cid)
            # The platform repeats its delivery: dropped.
            assert (await post_wa(http, first)).status_code == 200
            await alice.send("message", conversation_id=cid, client_id="a1", text="Um momento")
            await alice.send("message", conversation_id=cid, client_id="a2", text="Pronto!")
            # A second message of the visitor, an image with a caption.
            image = wa_body("wamid.A2", "", type="image", image={"id": "M1", "caption": "veja"})
            assert (await post_wa(http, image)).status_code == 200
            got = await alice.until("message")
            while got["author"]["kind"] != "visitor":
                got = await alice.until("message")
            assert got["text"] == "[image] veja"
            # The greeting and Alice's two replies, each delivered once, in order, after the
            # platform failed the first two attempts.
            await platform.wait_for(3)
            delivered = platform.delivered()
            assert [r.json["text"]["body"] for r in delivered] == [
                "Hi Paula, Alice here.",
                "Um momento",
                "Pronto!",
            ]
            assert [r.answer for r in platform.requests[:2]] == [500, 503]
            assert platform.requests[0].json == platform.requests[2].json  # the retried one
            for request in delivered:
                assert request.path == "/v21.0/1098765/messages"
                assert request.headers["authorization"] == f"Bearer {WA_TOKEN}"
                assert request.headers["content-type"] == "application/json"
                assert request.json["messaging_product"] == "whatsapp"
                assert request.json["to"] == "5511987654321"
                assert request.json["type"] == "text"
            texts = await stored_texts(store, cid)
            assert texts.count(("visitor", "Olá, preciso de ajuda")) == 1

            async def counted() -> bool:
                return srv.hub.metrics.channels["sent"] == 3

            await eventually(counted)
            # Alice ends it: the closing message goes out too.
            await alice.send("end", conversation_id=cid)
            await platform.wait_for(4)
            assert platform.delivered()[-1].json["text"]["body"].startswith("Bye!")
            # Repeated after the close: still dropped, no new conversation.
            assert (await post_wa(http, first)).status_code == 200
            assert await store.channel_conversation("wa", "5511987654321") is None
            assert len([c for c in srv.hub.conversations]) == 0


async def test_a_long_reply_reaches_whatsapp_in_parts_in_order_each_once() -> None:
    """An operator's 8000-character message goes to WhatsApp (4096 at most a message) as
    consecutive parts whose concatenation is the text, cut after a space; each part is its own
    outbox item, so the platform failing the second part's first attempt sends the first once."""
    text = " ".join(f"palavra{n:05d}" for n in range(800))[:8000]
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        async with (
            open_server(channel_config(whatsapp(base)), host="127.0.0.1", ws_port=0) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, wa_body("wamid.L1", "Oi"))).status_code == 200
            cid = await answer(alice, "Um momento")
            await platform.wait_for(2)
            platform.script = [200, 500]  # the first part goes, the second fails once
            await alice.send("message", conversation_id=cid, client_id="long", text=text)
            await platform.wait_for(2 + 2)
            bodies = [r.json["text"]["body"] for r in platform.delivered()[2:]]
            assert "".join(bodies) == text
            assert all(len(body) <= 4096 for body in bodies) and len(bodies) == 2
            assert bodies[0].endswith(" ")  # cut after a space, not inside a word
            assert [r.answer for r in platform.requests[2:]] == [200, 500, 204]
            items = [i for i in await srv.hub.store.outbox_items(cid) if i.kind == "channel"]
            assert [(i.payload.get("part"), i.payload.get("parts")) for i in items[2:]] == [
                (1, 2),
                (2, 2),
            ]
            assert len({i.payload["seq"] for i in items[2:]}) == 1


async def test_whatsapp_refuses_a_bad_signature_and_answers_the_challenge() -> None:
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        async with (
            open_server(channel_config(whatsapp(base)), host="127.0.0.1", ws_port=0) as srv,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            body = wa_body("wamid.X", "forged")
            forged = await post_wa(http, body, wa_signature(body, "not-the-app-secret"))
            assert forged.status_code == 401
            unsigned = await http.post("/channels/wa/webhook", content=body)
            assert unsigned.status_code == 401
            assert await srv.hub.store.channel_conversation("wa", "5511987654321") is None
            assert not await srv.hub.store.inbound_seen("wa", "wamid.X")
            assert srv.hub.conversations == {}
            challenge = {
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY,
                "hub.challenge": "1158201444",
            }
            ok = await http.get("/channels/wa/webhook", params=challenge)
            assert ok.status_code == 200 and ok.text == "1158201444"
            wrong = await http.get(
                "/channels/wa/webhook", params={**challenge, "hub.verify_token": "nope"}
            )
            assert wrong.status_code == 403
            assert (await http.post("/channels/nope/webhook", content=body)).status_code == 404


async def test_telegram_both_ways_dedupe_by_update_id_and_secret_token() -> None:
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        async with (
            open_server(channel_config(telegram(base)), host="127.0.0.1", ws_port=0) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            store = srv.hub.store
            refused = await post_tg(http, tg_body(10, "hi"), secret="wrong_secret_token_000000")
            assert refused.status_code == 401
            assert not await store.inbound_seen("tg", "10")
            await login(alice, TOK_ALICE)
            assert (await post_tg(http, tg_body(11, "Oi!"))).status_code == 200
            assert (await post_tg(http, tg_body(11, "Oi!"))).status_code == 200
            cid = await answer(alice, "Como posso ajudar?")
            summary = await srv.hub.entry(cid)
            assert summary.link.peer is None
            await platform.wait_for(2)
            assert [r.path for r in platform.delivered()] == [f"/bot{TG_TOKEN}/sendMessage"] * 2
            assert [r.json for r in platform.delivered()] == [
                {"chat_id": 777001, "text": "Hello! How can I help you?"},
                {"chat_id": 777001, "text": "Como posso ajudar?"},
            ]
            assert await stored_texts(store, cid) == [
                ("visitor", "Oi!"),
                ("operator", "Hello! How can I help you?"),
                ("operator", "Como posso ajudar?"),
            ]


async def test_out_of_hours_sends_the_services_message() -> None:
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        config = channel_config(telegram(base, service_id=26))
        async with (
            open_server(config, host="127.0.0.1", ws_port=0) as srv,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            assert (await post_tg(http, tg_body(1, "Alguém aí?"))).status_code == 200
            await platform.wait_for(1)
            assert platform.delivered()[0].json == {"chat_id": 777001, "text": "We are closed."}
            cid = await srv.hub.store.channel_conversation("tg", "777001")
            assert cid is not None
            conv = await srv.hub.store.load_conversation(cid)
            assert conv is not None and conv.status.value == "out_of_hours"
            # A later message joins the same conversation (left for an operator, F4).
            assert (await post_tg(http, tg_body(2, "Volto amanhã"))).status_code == 200
            assert await stored_texts(srv.hub.store, cid) == [
                ("visitor", "Alguém aí?"),
                ("visitor", "Volto amanhã"),
            ]


async def test_a_refused_message_tells_the_visitor_why_once() -> None:
    """Out of hours a conversation takes ``out_of_hours_messages``; the next is refused — and,
    on a channel, the visitor is told so by the channel, through the outbox after the replies
    before it, once per kind of refusal however many more are refused. The refused messages
    are still taken (a platform's repeat of one is dropped)."""
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        config = with_items(
            make_config(webhooks=FAST, limits={"out_of_hours_messages": 2}),
            api_token("root", ADMIN),
            item_of("channels", telegram(base, service_id=26)),
        )
        async with (
            open_server(config, host="127.0.0.1", ws_port=0) as srv,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            store = srv.hub.store
            for update, text in enumerate(["Um", "Dois", "Três", "Quatro"], 1):
                assert (await post_tg(http, tg_body(update, text))).status_code == 200
            assert (await post_tg(http, tg_body(3, "Três"))).status_code == 200  # a repeat
            cid = await store.channel_conversation("tg", "777001")
            assert cid is not None
            assert await stored_texts(store, cid) == [("visitor", "Um"), ("visitor", "Dois")]
            assert await store.inbound_seen("tg", "4")
            await platform.wait_for(2)
            limit = (
                "We have your messages, but this conversation takes at most 2 of them until "
                "someone answers. We will get back to you."
            )
            assert [r.json for r in platform.delivered()] == [
                {"chat_id": 777001, "text": "We are closed."},
                {"chat_id": 777001, "text": limit},
            ]
            # Refused again: nothing more is sent.
            assert (await post_tg(http, tg_body(5, "Cinco"))).status_code == 200
            notices = [i for i in await store.outbox_items(cid) if i.payload.get("type")]
            assert [(i.payload["type"], i.payload["id"]) for i in notices] == [
                ("notice", f"{cid}-message_limit")
            ]
            await trio.sleep(0.2)
            assert len(platform.requests) == 2
            assert srv.hub.metrics.channels["queued"] == 2


async def test_the_closing_message_carries_the_survey_link() -> None:
    async with open_receiver() as platform:
        base = f"http://127.0.0.1:{platform.port}"
        async with (
            open_server(
                channel_config(whatsapp(base), survey_link=True), host="127.0.0.1", ws_port=0
            ) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, wa_body("wamid.S1", "Oi"))).status_code == 200
            cid = await answer(alice, "Resolvido")
            await alice.send("end", conversation_id=cid)
            await platform.wait_for(3)
            closing = platform.delivered()[-1].json["text"]["body"]
            assert closing.startswith("Bye!")
            assert f"/survey/{cid}." in closing
            conv = await srv.hub.store.load_conversation(cid)
            assert conv is not None and conv.status.value == "closed" and conv.survey == "pending"
            # The link works: the survey page answers it.
            token = closing.split("/survey/")[1].split()[0]
            page = await http.get(f"/survey/{token}")
            assert page.status_code == 200


async def test_the_generic_channel_both_ways_signed() -> None:
    async with (
        open_receiver() as app,
        open_server(channel_config(generic(app.url)), host="127.0.0.1", ws_port=0) as srv,
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        httpx.AsyncClient(base_url=srv.http_url) as http,
    ):
        await login(alice, TOK_ALICE)
        body = json.dumps({"id": "m-1", "from": "user-9", "name": "Gil", "text": "Hello"})
        signed = Signer(GENERIC_SECRET).sign("m-1", datetime.now(UTC), body)
        headers = {
            "webhook-id": "m-1",
            "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
            "webhook-signature": signed,
            "Content-Type": "application/json",
        }
        bad = {**headers, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}
        assert (
            await http.post("/channels/app/webhook", content=body, headers=bad)
        ).status_code == 401
        assert srv.hub.conversations == {}
        ok = await http.post("/channels/app/webhook", content=body, headers=headers)
        assert ok.status_code == 200
        cid = await answer(alice, "Hi Gil")
        await app.wait_for(2)
        assert [r.json["text"] for r in app.delivered()] == [
            "Hello! How can I help you?",
            "Hi Gil",
        ]
        request = app.delivered()[1]
        assert signature_is_valid(GENERIC_SECRET, request)
        assert request.headers["webhook-id"] == f"{cid}-{request.json['seq']}"
        assert request.json == {
            "type": "message",
            "channel_id": "app",
            "to": "user-9",
            "text": "Hi Gil",
            "conversation_id": cid,
            "seq": request.json["seq"],
        }


async def test_channels_through_the_admin_api_secrets_write_only() -> None:
    async with (
        open_server(channel_config(), host="127.0.0.1", ws_port=0) as srv,
        httpx.AsyncClient(
            base_url=srv.http_url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as http,
    ):
        sent = {
            "id": "wa2",
            "kind": "whatsapp",
            "service_id": 25,
            "phone_number_id": "555",
            "token": WA_TOKEN,
            "app_secret": APP_SECRET,
            "verify_token": VERIFY,
        }
        created = await http.post("/api/v1/channels", json=sent)
        assert created.status_code == 201, created.text
        shown = (await http.get("/api/v1/channels/wa2")).json()
        assert shown["kind"] == "whatsapp" and "token" not in shown and "app_secret" not in shown
        assert srv.hub.directory.channels["wa2"].app_secret == APP_SECRET
        # A change without the secrets keeps them.
        changed = await http.put(
            "/api/v1/channels/wa2",
            json={k: v for k, v in sent.items() if k not in ("token", "app_secret", "verify_token")}
            | {"description": "x"},
        )
        assert changed.status_code == 200, changed.text
        assert srv.hub.directory.channels["wa2"].token == WA_TOKEN
        missing = await http.post(
            "/api/v1/channels", json={**sent, "id": "wa3", "app_secret": None}
        )
        assert missing.status_code == 422
        generic_one = await http.post(
            "/api/v1/channels",
            json={
                "id": "g",
                "kind": "generic",
                "service_id": 27,
                "reply_url": "https://example.com/x",
            },
        )
        # The reply URL is checked by the SSRF guard (example.com resolves, or not, here).
        assert generic_one.status_code in (201, 422)
        if generic_one.status_code == 201:
            assert generic_one.json()["secret"].startswith("whsec_")
        audit = (await http.get("/api/v1/audit")).json()
        assert any(e["kind"] == "channels" and e["key"] == "wa2" for e in audit["items"])


async def test_a_restart_on_postgresql_keeps_replies_conversations_and_duplicates(
    postgres_dsn: str,
) -> None:
    """A WhatsApp conversation is open and its replies wait for a platform that refuses every
    connection until the server has restarted on the same database: then each reply arrives
    once, in order; the user's next message joins the same conversation; a repeat of the
    message taken before the restart is dropped."""
    async with open_receiver() as platform:
        platform.refuse()  # down until after the restart
        config = channel_config(whatsapp(f"http://127.0.0.1:{platform.port}"))
        first = wa_body("wamid.R1", "Antes do reinício")
        async with (
            open_postgres_store(postgres_dsn) as store,
            open_server(config, store=store, host="127.0.0.1", ws_port=0) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, first)).status_code == 200
            cid = await answer(alice, "Vou verificar")
            await alice.until("ack")

            async def failing() -> bool:
                items = await store.outbox_deliveries("channel:wa", limit=100)
                return len(items) == 2 and items[-1].attempts >= 2

            await eventually(failing)
        assert platform.requests == []
        async with open_postgres_store(postgres_dsn) as store:
            pending = await store.outbox_deliveries("channel:wa", "pending", limit=100)
            assert [i.payload["text"] for i in reversed(pending)] == [
                "Hi Paula, Alice here.",
                "Vou verificar",
            ]
            await platform.listen()
            async with (
                open_server(config, store=store, host="127.0.0.1", ws_port=0) as srv,
                httpx.AsyncClient(base_url=srv.http_url) as http,
            ):
                await platform.wait_for(2)
                # The platform's repeat of the message taken before the restart: dropped.
                assert (await post_wa(http, first)).status_code == 200
                # The user's next message: into the same conversation.
                later = wa_body("wamid.R2", "Depois do reinício")
                assert (await post_wa(http, later)).status_code == 200
                assert await store.channel_conversation("wa", "5511987654321") == cid
                assert await stored_texts(store, cid) == [
                    ("visitor", "Antes do reinício"),
                    ("operator", "Hi Paula, Alice here."),
                    ("operator", "Vou verificar"),
                    ("visitor", "Depois do reinício"),
                ]

                async def settled() -> bool:
                    items = await store.outbox_deliveries("channel:wa", limit=100)
                    return all(i.status == "sent" for i in items)

                await eventually(settled)
                await trio.sleep(0.3)  # a second sending would have come by now (retries: 0.05 s)
                assert [r.json["text"]["body"] for r in platform.requests] == [
                    "Hi Paula, Alice here.",
                    "Vou verificar",
                ]
                assert srv.hub.metrics.channels["sent"] == 2


def scraped(text: str, name: str) -> dict[str, float]:
    """A metric's samples in a Prometheus exposition, by their ``outcome`` label."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.partition("} ")
            found[labels.split('outcome="')[1].rstrip('"')] = float(value)
    return found


async def test_replies_are_listed_parked_redelivered_and_counted() -> None:
    """A channel's replies through the webhooks' deliveries API (one mechanism): listed with
    every attempt, parked after max_attempts, put back one by one or all at once (audited),
    then delivered; /metrics counts them by outcome."""
    async with open_receiver(then=500) as platform:
        base = f"http://127.0.0.1:{platform.port}"
        async with (
            open_server(
                channel_config(whatsapp(base), max_attempts=2), host="127.0.0.1", ws_port=0
            ) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(
                base_url=srv.http_url, headers={"Authorization": f"Bearer {ADMIN}"}
            ) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, wa_body("wamid.D1", "Oi"))).status_code == 200
            cid = await answer(alice, "Segunda")

            async def listed(status: str) -> list[dict[str, Any]]:
                r = await http.get("/api/v1/channels/wa/deliveries", params={"status": status})
                assert r.status_code == 200, r.text
                items: list[dict[str, Any]] = r.json()["items"]
                return items

            async def both_parked() -> bool:
                return len(await listed("parked")) == 2

            await eventually(both_parked)
            second, greeting = await listed("parked")
            assert greeting["conversation_id"] == cid and greeting["type"] == "reply"
            assert greeting["attempts"] == 2 and greeting["last_error"].startswith("HTTP 500")
            assert [a["status_code"] for a in greeting["history"]] == [500, 500]
            seqs = [i.payload["seq"] for i in await srv.hub.store.outbox_items(cid)]
            assert [greeting["message_id"], second["message_id"]] == [f"{cid}-{n}" for n in seqs]
            metrics = (await http.get("/metrics")).text
            assert scraped(metrics, "omni_channel_replies_total") == {
                "queued": 2,
                "sent": 0,
                "retried": 2,
                "parked": 2,
            }
            assert 'omni_outbox_pending{kind="channel"}' in metrics

            platform.then = 204
            path = f"/api/v1/channels/wa/deliveries/{greeting['id']}/redeliver"
            again = await http.post(path)
            assert again.status_code == 202, again.text
            assert again.json()["status"] == "pending" and again.json()["attempts"] == 0
            await platform.wait_for(1)
            assert (await http.post(path)).status_code == 409  # delivered, not parked
            assert (await http.post("/api/v1/channels/nope/redeliver")).status_code == 404
            other = await http.post(f"/api/v1/webhooks/x/deliveries/{greeting['id']}/redeliver")
            assert other.status_code == 404
            everything = await http.post("/api/v1/channels/wa/redeliver")
            assert everything.json() == {"redelivered": [second["id"]]}
            await platform.wait_for(2)
            assert [r.json["text"]["body"] for r in platform.delivered()] == [
                "Hi Paula, Alice here.",
                "Segunda",
            ]
            delivered = await listed("delivered")
            assert [d["id"] for d in delivered] == [second["id"], greeting["id"]]
            assert [len(d["history"]) for d in delivered] == [3, 3]

            async def counted() -> bool:
                shown = scraped((await http.get("/metrics")).text, "omni_channel_replies_total")
                return shown == {"queued": 2, "sent": 2, "retried": 2, "parked": 2}

            await eventually(counted)
            audit = (await http.get("/api/v1/audit")).json()["items"]
            assert [
                (e["kind"], e["key"], e["after"]) for e in audit if e["action"] == "redeliver"
            ] == [
                ("channels", "wa", {"deliveries": [second["id"]]}),
                ("channels", "wa", {"deliveries": [greeting["id"]]}),
            ]


# -- media both ways -------------------------------------------------------------------------------

FILE_LIMIT = 64 * 1024
FILES = {
    "enabled": True,
    "max_bytes": FILE_LIMIT,
    "types": ["image/png", "image/jpeg", "application/pdf"],
}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + b"x" * 100


def png_with_comment() -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret location")
    out = io.BytesIO()
    Image.new("RGB", (12, 10), (200, 30, 30)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg_with_exif() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def media_config(*channels: Channel, public: bool = True) -> tuple[Config, int]:
    """Files on for both services, and (``public``) the server's ``public_url`` its own
    address; the HTTP port to serve on."""
    port = free_port()
    server: dict[str, Any] = {"webhooks": FAST, "http_port": port}
    if public:
        server["public_url"] = f"http://127.0.0.1:{port}"
    config = make_config(**server)
    for service_id in (25, 27):
        config = with_service(config, service_id, lambda body: body.update(attachments=FILES))
    items = (api_token("root", ADMIN), *(item_of("channels", c) for c in channels))
    return with_items(config, *items), port


def wa_media(platform: Any, media_id: str, content: bytes, kind: str) -> None:
    """The stand-in serves WhatsApp's media: the description, then the bytes."""
    url = f"http://127.0.0.1:{platform.port}/lookaside/{media_id}"
    description = {"url": url, "mime_type": kind, "sha256": "x", "file_size": len(content)}
    platform.files[f"/v21.0/{media_id}"] = ("application/json", json.dumps(description).encode())
    platform.files[f"/lookaside/{media_id}"] = (kind, content)


async def visitor_message(alice: Client) -> dict[str, Any]:
    got = await alice.until("message")
    while got["author"]["kind"] != "visitor":
        got = await alice.until("message")
    return got


async def test_a_whatsapp_image_reaches_the_operator_as_a_file_once() -> None:
    """The image is fetched with the bearer token (its description, then its bytes), kept
    re-encoded without its text chunk, and carried by the visitor's message (its caption as
    text); the operator downloads it. The platform repeating the delivery makes nothing more."""
    picture = png_with_comment()
    async with open_receiver() as platform:
        config, port = media_config(whatsapp(f"http://127.0.0.1:{platform.port}"))
        wa_media(platform, "M1", picture, "image/png")
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http_port=port) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, wa_body("wamid.M0", "Oi"))).status_code == 200
            cid = await answer(alice, "Olá")
            image = wa_body("wamid.M1", "", type="image", image={"id": "M1", "caption": "veja"})
            assert (await post_wa(http, image)).status_code == 200
            got = await visitor_message(alice)
            assert got["text"] == "veja"
            file = got["attachment"]
            assert file["type"] == "image/png"
            assert [r.path for r in platform.fetched] == ["/v21.0/M1", "/lookaside/M1"]
            assert all(r.headers["authorization"] == f"Bearer {WA_TOKEN}" for r in platform.fetched)
            download = await http.get(
                f"/api/v1/attachments/{file['id']}",
                headers={"Authorization": f"Bearer {TOK_ALICE}"},
            )
            assert download.status_code == 200
            assert download.content.startswith(b"\x89PNG") and download.content != picture
            from PIL import Image

            with Image.open(io.BytesIO(download.content)) as decoded:
                assert decoded.size == (12, 10) and "Comment" not in decoded.info
            # Repeated: no second message, no second file, not fetched again.
            assert (await post_wa(http, image)).status_code == 200
            store = srv.hub.store
            texts = await stored_texts(store, cid)
            assert texts.count(("visitor", "veja")) == 1
            assert (await store.attachment_usage(cid))[0] == 1
            assert len(platform.fetched) == 2


async def test_a_file_that_cannot_be_kept_is_named() -> None:
    """Too large (counted as it streams, whatever the platform declared) or of a type the
    service does not take, or gone from the platform: the message names the file."""
    async with open_receiver() as platform:
        config, port = media_config(whatsapp(f"http://127.0.0.1:{platform.port}"))
        wa_media(platform, "BIG", PDF + b"x" * FILE_LIMIT, "application/pdf")
        wa_media(platform, "TXT", b"just some words, no magic here\n" * 20, "text/plain")
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http_port=port) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, wa_body("wamid.N0", "Oi"))).status_code == 200
            cid = await answer(alice, "Olá")
            for message_id, media_id, name in [
                ("wamid.N1", "BIG", "big.pdf"),
                ("wamid.N2", "TXT", "notes.txt"),
                ("wamid.N3", "GONE", "gone.pdf"),
            ]:
                document = {"id": media_id, "filename": name}
                body = wa_body(message_id, "", type="document", document=document)
                assert (await post_wa(http, body)).status_code == 200
                got = await visitor_message(alice)
                assert got["text"] == f"[document: {name}]" and "attachment" not in got
            assert (await srv.hub.store.attachment_usage(cid))[0] == 0


async def test_a_telegram_document_reaches_the_operator_as_a_file() -> None:
    async with open_receiver() as platform:
        config, port = media_config(telegram(f"http://127.0.0.1:{platform.port}"))
        answer_ = {"ok": True, "result": {"file_id": "F1", "file_path": "documents/file_7.pdf"}}
        platform.files[f"/bot{TG_TOKEN}/getFile?file_id=F1"] = (
            "application/json",
            json.dumps(answer_).encode(),
        )
        platform.files[f"/file/bot{TG_TOKEN}/documents/file_7.pdf"] = ("application/pdf", PDF)
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http_port=port) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_tg(http, tg_body(40, "oi"))).status_code == 200
            await answer(alice, "Olá")
            update = json.loads(tg_body(41, ""))
            del update["message"]["text"]
            update["message"]["document"] = {
                "file_id": "F1",
                "file_unique_id": "U1",
                "file_name": "boleto.pdf",
                "mime_type": "application/pdf",
                "file_size": len(PDF),
            }
            assert (await post_tg(http, json.dumps(update).encode())).status_code == 200
            got = await visitor_message(alice)
            assert got["text"] == "boleto.pdf"
            assert got["attachment"]["name"] == "boleto.pdf"
            download = await http.get(
                f"/api/v1/attachments/{got['attachment']['id']}",
                headers={"Authorization": f"Bearer {TOK_ALICE}"},
            )
            assert download.content == PDF


async def test_an_operators_files_reach_whatsapp_as_document_and_image() -> None:
    """The platform gets a link on the public address that downloads the file, with no token."""
    async with open_receiver() as platform:
        config, port = media_config(whatsapp(f"http://127.0.0.1:{platform.port}"))
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http_port=port) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_wa(http, wa_body("wamid.O0", "Oi"))).status_code == 200
            cid = await answer(alice, "Olá")
            await platform.wait_for(2)
            for number, (name, content) in enumerate(
                [("relatorio.pdf", PDF), ("foto.jpg", jpeg_with_exif())], 1
            ):
                upload = await http.post(
                    f"/api/v1/conversations/{cid}/attachments",
                    params={"name": name},
                    content=content,
                    headers={"Authorization": f"Bearer {TOK_ALICE}"},
                )
                assert upload.status_code == 201, upload.text
                upload_id = upload.json()["upload_id"]
                await alice.send(
                    "attachment", conversation_id=cid, client_id=f"f{number}", upload_id=upload_id
                )
            await platform.wait_for(4)
            document, image = (r.json for r in platform.delivered()[2:])
            assert document["type"] == "document" and document["to"] == "5511987654321"
            assert document["document"]["filename"] == "relatorio.pdf"
            assert image["type"] == "image" and "filename" not in image["image"]
            async with httpx.AsyncClient() as anyone:
                link = document["document"]["link"]
                assert link.startswith(f"http://127.0.0.1:{port}/api/v1/attachments/")
                assert (await anyone.get(link)).content == PDF
                got = await anyone.get(image["image"]["link"])
                assert got.status_code == 200 and got.content.startswith(b"\xff\xd8")
                assert b"SecretCam" not in got.content


async def test_without_a_public_url_an_operators_file_goes_as_its_name() -> None:
    async with open_receiver() as platform:
        config, port = media_config(telegram(f"http://127.0.0.1:{platform.port}"), public=False)
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http_port=port) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            await login(alice, TOK_ALICE)
            assert (await post_tg(http, tg_body(50, "oi"))).status_code == 200
            cid = await answer(alice, "Olá")
            await platform.wait_for(2)
            upload = await http.post(
                f"/api/v1/conversations/{cid}/attachments",
                params={"name": "relatorio.pdf"},
                content=PDF,
                headers={"Authorization": f"Bearer {TOK_ALICE}"},
            )
            upload_id = upload.json()["upload_id"]
            await alice.send("attachment", conversation_id=cid, client_id="f1", upload_id=upload_id)
            await platform.wait_for(3)
            sent = platform.delivered()[2]
            assert sent.path == f"/bot{TG_TOKEN}/sendMessage"
            assert sent.json["text"] == "relatorio.pdf"
